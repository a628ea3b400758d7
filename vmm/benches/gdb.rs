//! What the gdb stub adds to a single step: the round trip of one
//! `vCont;s` packet through the stub (client -> socket -> gdbstub -> KVM
//! single-step exit -> stop reply -> client), driven with raw remote-protocol
//! packets as gdb sends them, beside the floor: the raw
//! `KVM_GUESTDBG_SINGLESTEP` exit in a `KVM_RUN` loop on the same guest
//! from the same first instruction, measured in this same run.
//! Target: the stub adds at most 2x.
//!
//! `cargo bench -p vmm --bench gdb` (add `-- --steps N --runs R`, and
//! `--base PATH` to measure another build's stub beside this one).

use clap::Parser;
use kvm_bindings::{kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP};
use kvm_ioctls::VcpuExit;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vmm::cli::{Cli, Command as VmmCommand};
use vmm::devices::serial::SerialConsole;
use vmm::vm::Vm;

/// Per-step time of `steps` raw single-steps from the guest's entry.
fn raw_steps(steps: u32) -> Duration {
    let Cli { command: VmmCommand::Run(args) } = Cli::parse_from(["vmm", "run", "--cmdline", "hang"]);
    let vm = Vm::new(&args.config(), SerialConsole::captured().0).expect("build the VM");
    let shared = vm.vcpu(0).expect("vCPU 0").clone();
    let mut vcpu = vmm::vcpu::lock(&shared);
    let dbg = kvm_guest_debug { control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, ..Default::default() };
    vcpu.set_guest_debug(&dbg).expect("KVM_SET_GUEST_DEBUG");
    let start = Instant::now();
    let mut done = 0;
    while done < steps {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::Debug(_) => done += 1,
            // The port access completes on the next KVM_RUN, then the step
            // trap comes: what the stub does too.
            VcpuExit::IoOut(..) | VcpuExit::IoIn(..) => {}
            other => panic!("raw single-step: unexpected exit {other:?}"),
        }
    }
    start.elapsed() / steps
}

/// A raw remote-protocol client.
struct Client {
    s: UnixStream,
    ack: bool,
    buf: Vec<u8>,
}

impl Client {
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
            let mut chunk = [0u8; 512];
            let n = self.s.read(&mut chunk).expect("read from the stub");
            assert!(n > 0, "the stub hung up");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Per-step time of `steps` `vCont;s` round trips through the stub of a
/// `vmm run --gdb-wait` child process.
fn stub_steps(steps: u32, ack: bool, vmm: &str) -> Duration {
    let dir = std::env::temp_dir().join(format!("mmemu-gdb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("gdb.sock");
    let mut child = Command::new(vmm)
        .args(["run", "--timeout", "120", "--cmdline", "hang", "--gdb-wait", "--gdb"])
        .arg(format!("unix:{}", sock.display()))
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
    let s = UnixStream::connect(&sock).expect("connect to the stub");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c = Client { s, ack: true, buf: Vec::new() };
    if !ack {
        c.send("QStartNoAckMode");
        assert_eq!(c.recv(), "OK");
        c.ack = false;
    }
    c.send("?");
    c.recv();
    let start = Instant::now();
    for _ in 0..steps {
        c.send("vCont;s:1");
        let reply = c.recv();
        assert!(reply.starts_with(['T', 'S']), "{reply}");
    }
    let per = start.elapsed() / steps;
    c.send("k");
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    per
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let steps = arg("--steps", 2000);
    let runs = arg("--runs", 5).max(1);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let this = env!("CARGO_BIN_EXE_vmm");
    // `--base PATH`: another build of the VMM (e.g. an earlier commit),
    // measured in the same runs, interleaved, for a before/after.
    let args: Vec<String> = std::env::args().collect();
    let base = args.iter().position(|a| a == "--base").and_then(|i| args.get(i + 1)).cloned();
    let (mut raws, mut no_acks, mut acks, mut bases) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        raws.push(raw_steps(steps));
        no_acks.push(stub_steps(steps, false, this));
        acks.push(stub_steps(steps, true, this));
        if let Some(b) = &base {
            bases.push(stub_steps(steps, false, b));
        }
    }
    let (raw, no_ack, ack) = (median(raws), median(no_acks), median(acks));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("single-step round trip, {steps} steps from the guest's first instruction, median of {runs} runs");
    println!("host: {cpu}");
    // Thread and process wake-ups dominate the stub's figure on a busy
    // host: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("load average: {} on {cores} CPUs", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("| path | per step (us) | x raw |");
    println!("|---|---:|---:|");
    println!("| raw KVM_GUESTDBG_SINGLESTEP exit (KVM_RUN loop, in process) | {:.2} | 1.00 |", us(raw));
    let row = |name: &str, d: Duration| println!("| {name} | {:.2} | {:.2} |", us(d), us(d) / us(raw));
    row("gdb stub: `vCont;s:1` -> stop reply, Unix socket, no-ack mode (as gdb)", no_ack);
    row("gdb stub: `vCont;s:1` -> stop reply, Unix socket, ack mode", ack);
    if let Some(b) = &base {
        row(&format!("gdb stub of `{b}` (--base), no-ack mode"), median(bases));
    }
    let verdict = if us(no_ack) <= 2.0 * us(raw) { "met" } else { "NOT met" };
    println!("target (stub adds at most 2x, no-ack mode): {verdict}");
}
