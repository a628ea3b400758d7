//! What the gdb stub costs a debugging session, beside its peers measured
//! in this same run:
//!
//! - single-step round trip: one `vCont;s:1` packet through the stub
//!   (client -> socket -> gdbstub -> KVM single-step exit -> stop reply ->
//!   client), driven with raw remote-protocol packets as gdb sends them;
//! - breakpoint hit round trip (`vCont;c` -> stop reply) at a kernel
//!   address (the `hang` loop, emulated ring 0 here) and at a user address
//!   (`ulib::malloc::free` of the `mallocbench` program, ring 3, native
//!   here: caught on the guest's #BP handler entry and rewound);
//! - the floors: the raw `KVM_GUESTDBG_SINGLESTEP` exit and the raw
//!   breakpoint round trip (step off with the debug register out, run to
//!   the DR0 hit) in an in-process `KVM_RUN` loop, and a ping-pong of the
//!   same packets between two processes over the same kind of socket (what
//!   any debugger on a socket pays);
//! - QEMU's gdbstub (`-gdb tcp::PORT -S`, TCG) on the same kernel ELF, the
//!   same command lines and addresses, when qemu-system-x86_64 is
//!   installed.
//!
//! - with `--cpus 2` (issue 16), in one VMM stopped in the application
//!   processor's `ap_main`: a single step of vCPU 1 (`vCont;s:2`: run
//!   alone on its own thread for the session, a hand-off each way) beside
//!   a single step of vCPU 0 (`vCont;s:1`: on the session's own thread),
//!   interleaved.
//!
//! Targets (issue 11): a step through the stub at most 2x the raw step; a
//! user breakpoint at most 3x a kernel one.
//!
//! `cargo bench -p vmm --bench gdb` (add `-- --steps N --hits N --runs R`,
//! and `--base PATH` to measure another build's stub beside this one;
//! `--smp-only` for the two-vCPU rows alone, `--smp-steps N` steps per
//! vCPU and run, 300 by default: the AP's start-up code is that long).

use clap::Parser;
use kvm_bindings::{kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP};
use kvm_ioctls::VcpuExit;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vmm::cli::{Cli, Command as VmmCommand};
use vmm::devices::serial::SerialConsole;
use vmm::vm::Vm;

const GUEST_ELF: &str = env!("MMEMU_GUEST_ELF");
/// The user function the user-breakpoint rows stop at, in `mallocbench`
/// (called once per `free` of the trace, thousands of times per run).
const USER_FN: &str = "ulib::malloc::free";

/// A raw in-process vCPU of a fresh VM running `cmdline`.
fn raw_vm(cmdline: &str) -> Vm {
    let Cli { command: VmmCommand::Run(args) } = Cli::parse_from(["vmm", "run", "--cmdline", cmdline]) else {
        unreachable!("parsed a `run` command line")
    };
    Vm::new(&args.config(), SerialConsole::captured().0).expect("build the VM")
}

/// Port and MMIO exits answered as the VMM's loop answers them (the
/// guest boots through them to its loop).
struct Devices {
    bus: vmm::devices::PortBus,
    link: vmm::inspect::GuestLink,
}

impl Devices {
    fn new() -> Devices {
        let serial = std::sync::Arc::new(std::sync::Mutex::new(SerialConsole::captured().0));
        Devices { bus: vmm::devices::PortBus::new(serial, Default::default()), link: Default::default() }
    }

    /// `KVM_RUN` until a debug exit.
    fn run_to_debug(&mut self, vcpu: &mut kvm_ioctls::VcpuFd) {
        loop {
            match vcpu.run().expect("KVM_RUN") {
                VcpuExit::Debug(_) => return,
                exit => match vmm::vcpu::handle_exit(exit, &mut self.bus, &self.link) {
                    vmm::vcpu::ExitAction::Continue | vmm::vcpu::ExitAction::Checkpoint(_) => {}
                    other => panic!("raw loop: unexpected exit {other:?}"),
                },
            }
        }
    }
}

/// Per-step times of `steps` raw single-steps from the guest's entry.
fn raw_steps(steps: u32) -> Vec<Duration> {
    let vm = raw_vm("hang");
    let mut vcpu = vmm::vcpu::lock(vm.vcpu(0).expect("vCPU 0"));
    let dbg = kvm_guest_debug { control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, ..Default::default() };
    vcpu.set_guest_debug(&dbg).expect("KVM_SET_GUEST_DEBUG");
    let mut dev = Devices::new();
    (0..steps)
        .map(|_| {
            let t = Instant::now();
            dev.run_to_debug(&mut vcpu);
            t.elapsed()
        })
        .collect()
}

/// Per-hit times of the raw breakpoint round trip at `addr` (a ring-0
/// loop): the least a stub does per `continue` from a breakpoint, here
/// with a debug register: step off with it out, then run to the next hit.
fn raw_bp_hits(addr: u64, hits: u32) -> Vec<Duration> {
    let vm = raw_vm("hang");
    let mut vcpu = vmm::vcpu::lock(vm.vcpu(0).expect("vCPU 0"));
    let mut bp = kvm_guest_debug { control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, ..Default::default() };
    bp.arch.debugreg[0] = addr;
    // DR7: L0, execute, length 1.
    bp.arch.debugreg[7] = 1;
    let step = kvm_guest_debug { control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, ..Default::default() };
    // Boot to the loop (all of it in emulated ring 0: a few seconds here).
    vcpu.set_guest_debug(&bp).expect("KVM_SET_GUEST_DEBUG");
    let mut dev = Devices::new();
    dev.run_to_debug(&mut vcpu);
    (0..hits)
        .map(|_| {
            let t = Instant::now();
            vcpu.set_guest_debug(&step).expect("KVM_SET_GUEST_DEBUG");
            dev.run_to_debug(&mut vcpu);
            vcpu.set_guest_debug(&bp).expect("KVM_SET_GUEST_DEBUG");
            dev.run_to_debug(&mut vcpu);
            t.elapsed()
        })
        .collect()
}

/// A stream to a stub: TCP or Unix.
trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// A raw remote-protocol client.
struct Client {
    s: Box<dyn Io>,
    ack: bool,
    buf: Vec<u8>,
}

impl Client {
    fn new(s: Box<dyn Io>) -> Client {
        Client { s, ack: true, buf: Vec::new() }
    }

    fn send(&mut self, body: &str) {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        self.s.write_all(format!("${body}#{sum:02x}").as_bytes()).unwrap();
    }

    fn recv(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'#').filter(|&e| self.buf.len() >= e + 3) {
                let start = self.buf.iter().position(|&b| b == b'$').expect("a packet");
                let body = String::from_utf8_lossy(&self.buf[start + 1..end]).into_owned();
                self.buf.drain(..end + 3);
                if self.ack {
                    self.s.write_all(b"+").unwrap();
                }
                return body;
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).expect("read from the stub");
            assert!(n > 0, "the stub hung up");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next stop reply (console output skipped).
    fn recv_stop(&mut self) -> String {
        loop {
            let p = self.recv();
            if !(p.starts_with('O') && p.len() > 1) {
                return p;
            }
        }
    }

    fn ask(&mut self, body: &str) -> String {
        self.send(body);
        self.recv()
    }

    /// Asks for no-ack mode, as gdb does; false when the stub does not
    /// know it (QEMU 7.2 answers it as an unknown packet).
    fn no_ack(&mut self) -> bool {
        self.send("QStartNoAckMode");
        let ok = self.recv() == "OK";
        self.ack = !ok;
        ok
    }

    /// " no-ack" or " ack mode", after asking for no-ack mode.
    fn mode(&mut self) -> &'static str {
        if self.no_ack() {
            "no-ack"
        } else {
            "ack mode (no no-ack mode)"
        }
    }

    /// RIP from a `g` reply (after the 16 general registers).
    fn rip(&mut self) -> u64 {
        let regs = unrle(&self.ask("g"));
        u64::from_str_radix(&regs[256..272], 16).expect("rip in the g reply").swap_bytes()
    }

    /// Runs the guest for `ms`, then Ctrl-C: where it was.
    fn interrupt_after(&mut self, ms: u64) -> u64 {
        self.send("vCont;c");
        std::thread::sleep(Duration::from_millis(ms));
        self.s.write_all(&[0x03]).unwrap();
        let stop = self.recv_stop();
        assert!(stop.starts_with("T02") || stop.starts_with("S02"), "Ctrl-C: {stop}");
        self.rip()
    }

    /// Per-step times of `n` `vCont;s:1` round trips.
    fn steps(&mut self, n: u32) -> Vec<Duration> {
        (0..n).map(|_| self.step_thread(1)).collect()
    }

    /// One `vCont;s:THREAD` round trip; the stop names that thread.
    fn step_thread(&mut self, thread: usize) -> Duration {
        let t = Instant::now();
        self.send(&format!("vCont;s:{thread:x}"));
        let reply = self.recv_stop();
        let d = t.elapsed();
        assert!(reply.starts_with(['T', 'S']), "{reply}");
        assert!(!reply.starts_with('T') || reply.contains(&format!("{thread:02x};")), "{reply}");
        d
    }

    /// Per-hit times of `n` `vCont;c` round trips to the breakpoint at
    /// `addr` (the guest stopped on it; it stays planted).
    fn hits(&mut self, addr: u64, n: u32) -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                self.send("vCont;c");
                let reply = self.recv_stop();
                let d = t.elapsed();
                assert!(reply.starts_with("T05"), "a breakpoint stop: {reply}");
                assert_eq!(self.rip(), addr, "stopped at the breakpoint");
                d
            })
            .collect()
    }

    fn set_bp(&mut self, addr: u64) {
        assert_eq!(self.ask(&format!("Z0,{addr:x},1")), "OK", "breakpoint at {addr:#x}");
    }

    fn clear_bp(&mut self, addr: u64) {
        assert_eq!(self.ask(&format!("z0,{addr:x},1")), "OK");
    }
}

/// Expands the protocol's run-length encoding (`X*N`: N - 29 more X).
fn unrle(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'*' && i + 1 < b.len() {
            let last = out.chars().last().unwrap_or('0');
            for _ in 0..(b[i + 1] - 29) {
                out.push(last);
            }
            i += 2;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// A debuggee process and a client connected to its stub.
struct Session {
    child: Child,
    c: Client,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.c.s.write_all(b"$k#6b");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmemu-gdb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `vmm run --gdb-wait` with `cmdline`, over a Unix socket or TCP.
fn stub(vmm: &str, cmdline: &str, tcp: bool) -> Session {
    stub_with(vmm, cmdline, tcp, &[])
}

/// [`stub`] with more `vmm run` arguments.
fn stub_with(vmm: &str, cmdline: &str, tcp: bool, extra: &[&str]) -> Session {
    let sock = temp_dir().join("gdb.sock");
    let port = free_port();
    let addr = if tcp { format!("tcp:127.0.0.1:{port}") } else { format!("unix:{}", sock.display()) };
    let mut child = Command::new(vmm)
        .args(["run", "--timeout", "300", "--cmdline", cmdline, "--gdb-wait", "--gdb", &addr])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "vmm ended before listening");
    }
    // Keep draining its stderr so the VMM never blocks on the pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let s: Box<dyn Io> = if tcp {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the stub");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Box::new(s)
    } else {
        let s = UnixStream::connect(&sock).expect("connect to the stub");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Box::new(s)
    };
    let mut c = Client::new(s);
    c.ask("?");
    Session { child, c }
}

/// QEMU (TCG) with its gdbstub waiting before the first instruction, on
/// the same kernel ELF; None when QEMU is not installed.
fn qemu(cmdline: &str) -> Option<Session> {
    let port = free_port();
    let child = Command::new("qemu-system-x86_64")
        .args(["-M", "microvm", "-accel", "tcg", "-cpu", "qemu64", "-m", "128M"])
        .args(["-nographic", "-no-reboot", "-nodefaults", "-serial", "null"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .args(["-kernel", GUEST_ELF, "-append", cmdline])
        .args(["-gdb", &format!("tcp:127.0.0.1:{port}"), "-S"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("QEMU's gdbstub never listened: {e}"),
        }
    };
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut c = Client::new(Box::new(s));
    c.ask("?");
    Some(Session { child, c })
}

/// The mallocbench program built with this kernel (its symbols give the
/// user breakpoint's address).
fn user_elf(name: &str) -> PathBuf {
    // GUEST_ELF is .../kernel-target/<triple>/release/kernel; the user
    // programs are built by the kernel's build script under its OUT_DIR.
    let release = Path::new(GUEST_ELF).parent().unwrap();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(release.join("build"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("out/user-target/x86_64-unknown-linux-gnu/release").join(name))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("no {name} built next to {GUEST_ELF}")).1
}

/// Echoes every chunk back (the other end of the ping-pong floor).
fn echo(path: &str) {
    let l = UnixListener::bind(path).unwrap();
    let (mut s, _) = l.accept().unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => s.write_all(&b[..n]).unwrap(),
        }
    }
}

/// Per-round-trip times of `n` ping-pongs with a process that echoes:
/// a `vCont;s:1`-sized packet there and a stop-reply-sized one back.
fn ping_pong(n: u32) -> Vec<Duration> {
    let path = temp_dir().join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--echo", path.to_str().unwrap()])
        .spawn()
        .expect("spawn the echo process");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("echo process: {e}"),
        }
    };
    let msg = b"$vCont;s:1#xx";
    let mut back = [0u8; 64];
    let times = (0..n)
        .map(|_| {
            let t = Instant::now();
            s.write_all(msg).unwrap();
            let mut got = 0;
            while got < msg.len() {
                got += s.read(&mut back[got..]).unwrap();
            }
            t.elapsed()
        })
        .collect();
    drop(s);
    let _ = child.wait();
    times
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One measurement's samples over all runs.
#[derive(Default)]
struct Row {
    name: String,
    samples: Vec<Duration>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--echo") {
        echo(&args[i + 1]);
        return;
    }
    let steps = arg("--steps", 2000);
    let smp_steps = arg("--smp-steps", 300);
    let smp_only = args.iter().any(|a| a == "--smp-only");
    let hits = arg("--hits", 300);
    let runs = arg("--runs", 3).max(1);
    let this = env!("CARGO_BIN_EXE_vmm");
    // `--base PATH`: another build of the VMM (e.g. an earlier commit),
    // measured in the same runs, interleaved, for a before/after.
    let base = args.iter().position(|a| a == "--base").and_then(|i| args.get(i + 1)).cloned();

    let symbols = vmm::symbols::Symbols::from_elf(&std::fs::read(GUEST_ELF).unwrap());
    let ap_main = symbols.address_of("ap_main").expect("ap_main");
    let smp_rows = |add: &mut dyn FnMut(&str, Vec<Duration>)| {
        // Both vCPUs stopped where the AP starts (the boot CPU waits for
        // it in its start-up loop); steps of each, interleaved.
        let mut s = stub_with(this, "hang", false, &["--cpus", "2"]);
        assert!(s.c.no_ack());
        s.c.set_bp(ap_main);
        s.c.send("vCont;c");
        let stop = s.c.recv_stop();
        assert!(stop.contains("02;"), "ap_main is hit on vCPU 1: {stop}");
        s.c.clear_bp(ap_main);
        let (mut v0, mut v1) = (Vec::new(), Vec::new());
        for _ in 0..smp_steps {
            v0.push(s.c.step_thread(1));
            v1.push(s.c.step_thread(2));
        }
        add("stub, --cpus 2: single step of vCPU 0 (vCont;s:1, the session's own thread), Unix, no-ack", v0);
        add("stub, --cpus 2: single step of vCPU 1 (vCont;s:2, run on its thread), Unix, no-ack", v1);
    };
    let dispatch = symbols.address_of("kernel::proc::syscall::dispatch").expect("kernel::proc::syscall::dispatch");
    let user_bp = vmm::symbols::Symbols::from_elf(&std::fs::read(user_elf("mallocbench")).unwrap())
        .address_of(USER_FN)
        .expect("ulib::malloc::free in mallocbench");
    // The kernel breakpoint: where the `hang` loop spins (the same ELF
    // and command line under QEMU).
    let kernel_bp = if smp_only {
        0
    } else {
        // Stopped in the loop itself (not in an interrupt handler or
        // still booting on a slow host).
        let mut s = stub(this, "hang", false);
        let in_loop = |pc: u64| symbols.lookup(pc).is_some_and(|(name, _)| name.contains("run_actions"));
        std::iter::repeat_with(|| s.c.interrupt_after(300)).take(50).find(|&pc| in_loop(pc)).expect("the hang loop")
    };

    let have_qemu = Command::new("qemu-system-x86_64").arg("--version").output().is_ok();
    let mut rows: Vec<Row> = Vec::new();
    // Progress on a terminal (a stuck phase is then visible); nothing
    // when stderr is piped.
    let bar = vmm::progress::Steps::new("gdb bench runs", runs as u64);
    let mut add = |name: &str, samples: Vec<Duration>| {
        bar.set_message(format!("gdb bench: {name}: done"));
        match rows.iter_mut().find(|r| r.name == name) {
            Some(r) => r.samples.extend(samples),
            None => rows.push(Row { name: name.into(), samples }),
        }
    };
    for _ in 0..runs {
        bar.inc();
        add("raw KVM_GUESTDBG_SINGLESTEP exit (in-process KVM_RUN loop)", raw_steps(steps));
        smp_rows(&mut add);
        if smp_only {
            continue;
        }
        add(
            "raw breakpoint round trip, kernel (in-process: step off, run to the DR0 hit)",
            raw_bp_hits(kernel_bp, hits),
        );
        add("ping-pong of a packet with another process, Unix socket (the socket's floor)", ping_pong(steps));

        let mut s = stub(this, "hang", false);
        assert!(s.c.no_ack());
        add("stub: single step, Unix socket, no-ack (as gdb)", s.c.steps(steps));
        drop(s);
        let mut s = stub(this, "hang", false);
        add("stub: single step, Unix socket, ack mode", s.c.steps(steps));
        drop(s);
        if let Some(b) = &base {
            let mut s = stub(b, "hang", false);
            assert!(s.c.no_ack());
            add(&format!("stub of `{b}` (--base): single step, Unix socket, no-ack"), s.c.steps(steps));
        }
        let mut s = stub(this, "hang", true);
        assert!(s.c.no_ack());
        add("stub: single step, TCP, no-ack", s.c.steps(steps));
        s.c.set_bp(kernel_bp);
        s.c.hits(kernel_bp, 1);
        add("stub: kernel breakpoint hit (continue -> stop), TCP, no-ack", s.c.hits(kernel_bp, hits));
        drop(s);

        // The user breakpoint: stop in mallocbench's first system call, so
        // its address space is the vCPU's, then break in its `free`.
        let mut s = stub(this, "procbench=malloc", true);
        assert!(s.c.no_ack());
        s.c.set_bp(dispatch);
        s.c.hits(dispatch, 1);
        s.c.clear_bp(dispatch);
        s.c.set_bp(user_bp);
        s.c.hits(user_bp, 1);
        add("stub: user (ring-3) breakpoint hit (continue -> stop), TCP, no-ack", s.c.hits(user_bp, hits));
        drop(s);

        if have_qemu {
            if let Some(mut q) = qemu("hang") {
                let mode = q.c.mode();
                // Past the firmware-less PVH entry into the kernel's loop.
                q.c.set_bp(kernel_bp);
                q.c.hits(kernel_bp, 1);
                add(&format!("QEMU TCG gdbstub: single step (kernel), TCP, {mode}"), q.c.steps(steps));
                q.c.hits(kernel_bp, 1);
                add(&format!("QEMU TCG gdbstub: kernel breakpoint hit, TCP, {mode}"), q.c.hits(kernel_bp, hits));
            }
            if let Some(mut q) = qemu("procbench=malloc") {
                let mode = q.c.mode();
                q.c.set_bp(user_bp);
                q.c.hits(user_bp, 1);
                add(&format!("QEMU TCG gdbstub: user (ring-3) breakpoint hit, TCP, {mode}"), q.c.hits(user_bp, hits));
            }
        }
    }
    bar.finish();
    let _ = std::fs::remove_dir_all(temp_dir());

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    if smp_only {
        println!(
            "gdb round trips, --cpus 2 only: {smp_steps} steps per vCPU per run, {runs} runs, median of all samples"
        );
    } else {
        println!(
            "gdb round trips: {steps} steps and {hits} breakpoint hits per run, {runs} runs, median of all samples \
             (kernel breakpoint {kernel_bp:#x} in the `hang` loop, user breakpoint {user_bp:#x} {USER_FN} in \
             mallocbench; --cpus 2: {smp_steps} steps per vCPU)"
        );
    }
    println!("host: {cpu}, KVM: {}", if vmm::kvm::host_has_hw_virt() { "hardware" } else { "ring 0 emulated" });
    // Thread and process wake-ups dominate the stub's figures on a busy
    // host: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("load average: {} on {cores} CPUs", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    if !have_qemu {
        println!("(qemu-system-x86_64 is not installed: no QEMU rows)");
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let med = |name: &str| rows.iter().find(|r| r.name.starts_with(name)).map(|r| us(median(r.samples.clone())));
    let raw = med("raw KVM_GUESTDBG_SINGLESTEP").unwrap_or(f64::NAN);
    println!("| path | median (us) | p90 (us) | x raw step |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        let mut v = r.samples.clone();
        v.sort();
        let p90 = v[v.len() * 9 / 10];
        let m = us(median(v));
        println!("| {} | {m:.1} | {:.1} | {:.2} |", r.name, us(p90), m / raw);
    }
    let step = med("stub: single step, Unix socket, no-ack").unwrap_or(f64::NAN);
    let kbp = med("stub: kernel breakpoint").unwrap_or(f64::NAN);
    let ubp = med("stub: user").unwrap_or(f64::NAN);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let v0 = med("stub, --cpus 2: single step of vCPU 0").unwrap_or(f64::NAN);
    let v1 = med("stub, --cpus 2: single step of vCPU 1").unwrap_or(f64::NAN);
    println!("vCPU 1's step costs {:.2}x vCPU 0's in the same VMM (the hand-off to its thread and back)", v1 / v0);
    if !smp_only {
        println!("target: stub step at most 2x the raw step: {:.2}x, {}", step / raw, verdict(step <= 2.0 * raw));
        println!("target: user breakpoint at most 3x a kernel one: {:.2}x, {}", ubp / kbp, verdict(ubp <= 3.0 * kbp));
    }
}
