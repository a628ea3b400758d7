//! gdb against the real VMM running the real guest: `/usr/bin/gdb -batch`
//! sessions (breakpoints by name, backtrace, stepi, registers, memory at
//! kernel addresses, every monitor command, hbreak, refused watchpoints,
//! a breakpoint on an unmapped address) and raw-socket sessions (Ctrl-C,
//! malformed packets, disconnects). Every VMM runs with `--timeout` and
//! every gdb under a deadline, so no test can hang.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GDB: &str = "/usr/bin/gdb";
const GUEST_ELF: &str = env!("MMEMU_GUEST_ELF");

/// A VMM serving gdb, with its stdout and stderr collected as they arrive.
struct Vmm {
    child: Child,
    /// Where gdb connects (`HOST:PORT` or a socket path).
    target: String,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Vmm {
    /// `vmm run --timeout T --gdb ADDR` plus `args`; returns once it listens.
    fn start(timeout: &str, gdb: &str, args: &[&str]) -> Vmm {
        let mut child = Command::new(common::vmm_path())
            .args(["run", "--timeout", timeout, "--gdb", gdb])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmm");
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut out_pipe = child.stdout.take().unwrap();
        let out_sink = stdout.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out_sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while lines.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split([',', ';']).next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the VMM never said where gdb should connect");
        let target = addr.strip_prefix("tcp:").or_else(|| addr.strip_prefix("unix:")).unwrap_or(&addr).to_string();
        Vmm { child, target, stderr, stdout }
    }

    /// What the VMM printed on stdout so far (the guest's console and the
    /// `--inspect` views).
    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits for the VMM to end (at most `secs`); its exit status and stderr.
    fn finish(mut self, secs: u64) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the VMM did not end in {secs} s:\n{}", self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader thread drain the pipe.
        std::thread::sleep(Duration::from_millis(50));
        let err = self.stderr.lock().unwrap().clone();
        assert!(!err.contains("panicked"), "the VMM panicked:\n{err}");
        (status, err)
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `gdb -batch` on the guest ELF with `cmds` after `target remote`;
/// returns everything it printed.
fn gdb(target: &str, cmds: &[&str]) -> String {
    let mut cmd = Command::new(GDB);
    cmd.args(["-batch", "-nx", "-ex", "set pagination off", "-ex", &format!("target remote {target}")]);
    for c in cmds {
        cmd.args(["-ex", c]);
    }
    let mut child =
        cmd.arg(GUEST_ELF).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run gdb");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gdb did not finish in 40 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    format!("{}{}", out.join().unwrap(), err.join().unwrap())
}

fn has(out: &str, needle: &str) {
    assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
}

#[test]
fn break_by_name_backtrace_stepi_registers_and_memory() {
    let vmm = Vmm::start("30", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "exit=7"]);
    let out = gdb(
        &vmm.target,
        &[
            "break kmain",
            "continue",
            "bt",
            "info registers",
            "stepi",
            "x/4i $pc",
            "x/8gx $sp",
            "print/x $cr3",
            "print $rip == $pc",
            "info threads",
            "continue",
        ],
    );
    has(&out, "Breakpoint 1, ");
    has(&out, "kernel::kmain");
    has(&out, "#0  ");
    for reg in ["rax", "rsp", "rip", "eflags", "cs", "fs_base", "cr0", "cr3", "cr4", "efer"] {
        assert!(out.lines().any(|l| l.starts_with(reg)), "no {reg} in `info registers`:\n{out}");
    }
    has(&out, "[ PE ");
    // x/4i at the kernel's -2 GiB text.
    has(&out, "=> 0xffffffff8");
    has(&out, "0xffffffff8");
    has(&out, "$2 = true");
    has(&out, "vCPU 0");
    has(&out, "exited with code 07");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 7, "{err}");
}

#[test]
fn inspect_and_verify_run_at_every_checkpoint_while_gdb_is_attached() {
    // One run loop: the checkpoints 'boot' and 'ready' park the vCPU for
    // the views and checks while gdb is attached and has stopped and
    // stepped the guest.
    let vmm = Vmm::start(
        "60",
        "tcp:127.0.0.1:0",
        &["--gdb-wait", "--cmdline", "checkpoint=boot exit=0", "--inspect", "cpu,exits", "--verify"],
    );
    let out = gdb(&vmm.target, &["break kernel::cmdline::run_actions", "continue", "stepi", "continue"]);
    has(&out, "Breakpoint 1, kernel::cmdline::run_actions");
    has(&out, "exited normally");
    std::thread::sleep(Duration::from_millis(100));
    let stdout = vmm.stdout();
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 0, "{err}\n{stdout}");
    for cp in ["boot", "ready"] {
        has(&stdout, &format!("--- checkpoint '{cp}': cpu ---"));
        has(&stdout, &format!("--- checkpoint '{cp}': verify ---"));
    }
    // A debug exit per step and breakpoint, counted by the one loop.
    assert!(stdout.lines().any(|l| l.trim_start().ends_with(" debug")), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(!err.contains("reached no checkpoint"), "{err}");

    // And a violation found with gdb attached ends the run with status 3,
    // which gdb is told.
    let vmm =
        Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "break=freed-mapped exit=0", "--verify"]);
    let out = gdb(&vmm.target, &["continue"]);
    has(&out, "Program terminated with signal SIGKILL");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 3, "{err}");
    has(&err, "--verify failed at checkpoint 'sabotage'");
}

#[test]
fn backtrace_up_and_finish_from_inside_the_buddy_allocator() {
    // The kernel keeps its call-frame information (.eh_frame), so gdb
    // unwinds the real call chain instead of guessing from the stack.
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "exit=0"]);
    let out = gdb(
        &vmm.target,
        &[
            "break mm_core::buddy::BuddyAllocator::alloc_pages",
            "continue",
            "bt -frame-arguments none",
            "up",
            "info frame",
            "down",
            "finish",
            "delete",
            // `until` (the next line) and `advance` (to a location or
            // until the current frame returns) plant their breakpoints
            // at return addresses that the CFI gives.
            "until",
            "advance kernel::cmdline::run_actions",
            "info registers rip",
            "continue",
        ],
    );
    assert!(!out.contains("Cannot insert breakpoint") && !out.contains("Cannot access memory"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("rip ") && l.contains("0xffffffff8")), "{out}");
    has(&out, "Breakpoint 1, mm_core::buddy::BuddyAllocator::alloc_pages");
    let frames: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    let kmain = frames.iter().position(|l| l.contains("in kernel::kmain")).unwrap_or_else(|| panic!("{out}"));
    // Every frame above kmain is a named function: no `?? ()` guesses.
    assert!(frames[..kmain].iter().all(|l| !l.contains("?? ()")), "{out}");
    assert!(frames[kmain + 1].contains("_start"), "{out}");
    // `up` selects the caller, `finish` runs to it and prints the value.
    has(&out, "caller of frame at");
    has(&out, "Value returned is $1 = core::result::Result<u64, mm_core::buddy::BuddyError>::Ok(");
    has(&out, "exited normally");
    assert_eq!(vmm.finish(20).0, 0);
}

#[test]
fn backtrace_from_a_system_call_unwinds_into_the_user_program() {
    // The entry stubs carry CFI: from the dispatcher gdb walks through the
    // exception/system-call frame into the interrupted ring-3 code.
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "selftest=process"]);
    let out =
        gdb(&vmm.target, &["break kernel::proc::syscall::dispatch", "continue", "bt -frame-arguments none", "kill"]);
    has(&out, "Breakpoint 1, kernel::proc::syscall::dispatch");
    has(&out, "<signal handler called>");
    let user = out
        .lines()
        .skip_while(|l| !l.contains("<signal handler called>"))
        .nth(1)
        .unwrap_or_else(|| panic!("no frame below the entry:\n{out}"));
    // The next frame is the user program's (text at 0x400000).
    assert!(user.contains(" 0x00000000004"), "{user}\n{out}");
    has(&out, "[Inferior 1 (process 1) killed]");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 137, "{err}");
    has(&err, "killed the guest (exit status 137)");
}

#[test]
fn monitor_ps_is_live_at_a_stop_between_checkpoints() {
    // No checkpoint was asked for: the process table the host reads is the
    // one the guest keeps current as processes come, go and switch.
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "selftest=process"]);
    let out = gdb(
        &vmm.target,
        &["break kernel::proc::syscall::dispatch", "continue", "monitor ps", "monitor cr3 pid 1", "p/x $cr3", "kill"],
    );
    has(&out, "Breakpoint 1, kernel::proc::syscall::dispatch");
    assert!(!out.contains("no processes yet"), "{out}");
    // Stopped in process 1's system call: it is the running one, with the
    // CR3 the vCPU runs on.
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_else(|| panic!("no row for pid 1 in monitor ps:\n{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.get(2), Some(&"running"), "{row}\n{out}");
    let cr3 = out
        .lines()
        .find_map(|l| l.split("= ").nth(1).filter(|_| l.starts_with('$')))
        .unwrap_or_else(|| panic!("no $cr3 value:\n{out}"));
    let cr3 = u64::from_str_radix(cr3.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(u64::from_str_radix(cols[3].trim_start_matches("0x"), 16).unwrap(), cr3 & !0xfff, "{row}\n{out}");
    has(&out, "memory reads now walk process 1 (");
    has(&out, "[Inferior 1 (process 1) killed]");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 137, "{err}");
}

#[test]
fn a_halted_guest_is_a_stop_with_a_reason() {
    // `cli; hlt`: nothing can wake the vCPU. gdb sees a stop (SIGSTOP) with
    // the reason as console output, `stepi` and `continue` return, `kill`
    // ends the run with the documented status.
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "halt"]);
    let out = gdb(&vmm.target, &["continue", "stepi", "info registers rip", "continue", "kill"]);
    assert!(out.matches("Program received signal SIGSTOP").count() >= 3, "{out}");
    has(&out, "vmm: vCPU 0 halted with interrupts masked (cli; hlt)");
    has(&out, "kernel::arch::halt_forever");
    has(&out, "[Inferior 1 (process 1) killed]");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 137, "{err}");

    // Ctrl-C while a step waits on the halted vCPU: answered, not hung.
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "halt"]);
    let mut c = Raw::connect(&vmm.target);
    assert!(c.ask("?").unwrap().starts_with('T'));
    c.send("vCont;c");
    let (stop, console) = c.recv_stop().expect("a stop reply for the halt");
    // gdb numbers SIGSTOP 17.
    assert!(stop.starts_with("T11"), "SIGSTOP for the halt: {stop}");
    assert!(console.contains("halted with interrupts masked"), "{console}");
    c.send("vCont;s:1");
    c.send_raw(&[0x03]);
    let (stop, _) = c.recv_stop().expect("a stop reply after Ctrl-C during a step");
    assert!(stop.starts_with('T'), "{stop}");
    assert!(c.ask("g").is_some_and(|r| r.len() > 100), "registers after the stop");
    assert_eq!(c.ask("k"), None);
    assert_eq!(vmm.finish(20).0, 137);
}

#[test]
fn a_breakpoint_in_a_user_program_stops_there_and_steps_in_ring_3() {
    // Ring 3 runs natively here: the int3 enters the guest's own #BP
    // handler, where the stub's hidden breakpoint catches it and puts the
    // vCPU back on the user instruction. Then stepi (TF, caught on the #DB
    // entry) and continue to the end of the self-tests.
    let vmm = Vmm::start("90", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "selftest=process"]);
    let out = gdb(
        &vmm.target,
        &[
            "break kernel::proc::syscall::dispatch",
            "continue",
            // Where the system call returns to in the user program (the
            // frame's number in `bt` depends on the kernel's inlining).
            "break *(*frame).rip",
            "delete 1",
            "continue",
            "info registers rip cs",
            "stepi",
            "info registers rip cs",
            "continue",
        ],
    );
    let user_pc = out
        .lines()
        .find_map(|l| l.strip_prefix("Breakpoint 2 at "))
        .unwrap_or_else(|| panic!("no user breakpoint set:\n{out}"))
        .trim()
        .to_string();
    assert!(user_pc.starts_with("0x4"), "{user_pc}\n{out}");
    has(&out, &format!("Breakpoint 2, 0x{:016x} in ?? ()", u64::from_str_radix(&user_pc[2..], 16).unwrap()));
    let regs: Vec<&str> = out.lines().filter(|l| l.starts_with("rip ") || l.starts_with("cs ")).collect();
    assert_eq!(regs.len(), 4, "{out}");
    // Stopped on the user instruction, in ring 3 (CS 0x23) ...
    assert!(regs[0].contains(&user_pc) && regs[1].contains("0x23"), "{regs:?}");
    // ... and one user instruction later after stepi, still in ring 3.
    assert!(!regs[2].contains(&user_pc) && regs[2].contains("0x4") && regs[3].contains("0x23"), "{regs:?}");
    has(&out, "exited normally");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 0, "{err}");
    has(&err, "selftest results: ");
    has(&err, " 0 failed");
}

/// A user program built with this kernel (the kernel's build script
/// builds them under its OUT_DIR, next to GUEST_ELF), for gdb's
/// `add-symbol-file`.
fn user_elf(name: &str) -> std::path::PathBuf {
    let release = std::path::Path::new(GUEST_ELF).parent().unwrap();
    let mut found: Vec<(std::time::SystemTime, std::path::PathBuf)> = std::fs::read_dir(release.join("build"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("out/user-target/x86_64-unknown-linux-gnu/release").join(name))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("no {name} built next to {GUEST_ELF}")).1
}

#[test]
fn backtrace_finish_and_advance_in_a_user_program_with_its_symbols() {
    // mallocbench's `free`, a ring-3 function: with the program's symbols
    // added (its call-frame information stays in the file), `bt` lists
    // the true user callers down to _start, `finish` returns to the
    // caller and `advance` runs on to the function again.
    let elf = user_elf("mallocbench");
    let free = vmm::symbols::Symbols::from_elf(&std::fs::read(&elf).unwrap())
        .address_of("ulib::malloc::free")
        .expect("ulib::malloc::free in mallocbench");
    let vmm = Vmm::start("120", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "procbench=malloc"]);
    let out = gdb(
        &vmm.target,
        &[
            // In mallocbench's first system call: its address space is the
            // vCPU's, so its text can take the breakpoint.
            "break kernel::proc::syscall::dispatch",
            "continue",
            "delete",
            &format!("add-symbol-file {}", elf.display()),
            &format!("break *{free:#x}"),
            "continue",
            "bt",
            "finish",
            &format!("advance *{free:#x}"),
            "info registers rip cs",
            "kill",
        ],
    );
    has(&out, &format!("Breakpoint 2, 0x{free:016x} in ulib::malloc::free"));
    let frames: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    let at = |i: usize| frames.get(i).copied().unwrap_or_else(|| panic!("frame {i}:\n{out}"));
    assert!(at(0).contains("ulib::malloc::free"), "{out}");
    assert!(at(1).contains("in user_main"), "{out}");
    assert!(at(2).contains("in ulib_start"), "{out}");
    assert!(at(3).contains("in _start"), "{out}");
    // finish: back in the caller, at the frame-1 return address.
    let ret = at(1).split_whitespace().nth(1).unwrap();
    has(&out, &format!("{ret} in user_main ()"));
    // advance: on at the function again, in ring 3.
    assert!(out.matches(&format!("0x{free:016x} in ulib::malloc::free")).count() >= 3, "{out}");
    let regs: Vec<&str> = out.lines().filter(|l| l.starts_with("rip ") || l.starts_with("cs ")).collect();
    assert!(regs.len() == 2 && regs[0].contains(&format!("{free:#x}")) && regs[1].contains("0x23"), "{regs:?}\n{out}");
    has(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(vmm.finish(20).0, 137);
}

#[test]
fn a_user_breakpoint_and_its_backtrace_agree_with_qemus_gdbstub() {
    // The same gdb commands on the same kernel ELF against QEMU's gdbstub
    // (TCG, its own CPU and MMU): the same stop and the same user frames.
    if Command::new("qemu-system-x86_64").arg("--version").output().is_err() {
        eprintln!("skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        return;
    }
    let elf = user_elf("mallocbench");
    let free = vmm::symbols::Symbols::from_elf(&std::fs::read(&elf).unwrap())
        .address_of("ulib::malloc::free")
        .expect("ulib::malloc::free in mallocbench");
    let add = format!("add-symbol-file {}", elf.display());
    let brk = format!("break *{free:#x}");
    let cmds = [
        "break kernel::proc::syscall::dispatch",
        "continue",
        "delete",
        add.as_str(),
        brk.as_str(),
        "continue",
        "bt",
        "info registers rip cs",
        "kill",
    ];
    let frames =
        |out: &str| -> Vec<String> { out.lines().filter(|l| l.starts_with('#')).map(str::to_string).collect() };

    let vmm = Vmm::start("120", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "procbench=malloc"]);
    let ours = gdb(&vmm.target, &cmds);
    assert_eq!(vmm.finish(20).0, 137);

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-M", "microvm", "-accel", "tcg", "-cpu", "qemu64", "-m", "128M"])
        .args(["-nographic", "-no-reboot", "-nodefaults", "-serial", "null"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .args(["-kernel", GUEST_ELF, "-append", "procbench=malloc"])
        .args(["-gdb", &format!("tcp:127.0.0.1:{port}"), "-S"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run qemu");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "QEMU's gdbstub never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    // That probe connection was refused or closed at once; gdb is next.
    let theirs = gdb(&format!("127.0.0.1:{port}"), &cmds);
    let _ = qemu.kill();
    let _ = qemu.wait();

    let stop = format!("Breakpoint 2, 0x{free:016x} in ulib::malloc::free");
    has(&ours, &stop);
    has(&theirs, &stop);
    let (a, b) = (frames(&ours), frames(&theirs));
    assert!(a.len() >= 4, "{ours}");
    assert_eq!(a[..4], b[..4.min(b.len())], "our frames vs QEMU's:\n{ours}\n---\n{theirs}");
    for out in [&ours, &theirs] {
        let regs: Vec<&str> = out.lines().filter(|l| l.starts_with("rip ") || l.starts_with("cs ")).collect();
        assert!(regs.len() == 2 && regs[1].contains("0x23"), "{out}");
    }
}

#[test]
fn a_breakpoint_through_the_direct_map_alias_of_kernel_text_hits() {
    // kmain's bytes through the direct map (0xffff888000000000 + physical):
    // the int3 lands in the same frame, and the hit at the -2 GiB address
    // is matched by physical address instead of killing the guest.
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "exit=0"]);
    let out = gdb(
        &vmm.target,
        &[
            // Once the kernel's direct map is up.
            "break kernel::cmdline::run_actions",
            "continue",
            "set language c",
            "break *(0xffff888000000000 + ((unsigned long)&'kernel::exit::exit' - 0xffffffff80000000))",
            "continue",
            "info symbol $pc",
            "continue",
        ],
    );
    has(&out, "Breakpoint 2 at 0xffff8880");
    has(&out, "Program received signal SIGTRAP");
    has(&out, "kernel::exit::exit (code=0)");
    has(&out, "vmm: the breakpoint at 0xffff8880");
    has(&out, "exited normally");
    assert_eq!(vmm.finish(20).0, 0);
}

#[test]
fn call_of_a_kernel_function_returns() {
    // gdb puts the called function's return breakpoint on the stack, which
    // is no-execute: a debug register holds it (an int3 there would never
    // run: the fetch faults first).
    let elf = std::fs::read(GUEST_ELF).unwrap();
    let refresh = vmm::symbols::Symbols::from_elf(&elf).address_of("kernel::mm::descriptor::refresh").unwrap();
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "exit=0"]);
    let call = format!("call ((void (*)(void)){refresh:#x})()");
    let out = gdb(
        &vmm.target,
        &["break kernel::cmdline::run_actions", "continue", "set language c", &call, "info symbol $pc", "continue"],
    );
    assert!(!out.contains("exited while in a function called from GDB"), "{out}");
    // Back where it was, and the guest runs on to its end.
    has(&out, "kernel::cmdline::run_actions::h");
    has(&out, " + 23 in section .text");
    has(&out, "exited normally");
    assert_eq!(vmm.finish(20).0, 0);
}

#[test]
fn hardware_breakpoint_is_hit_and_stepped_over() {
    let vmm = Vmm::start("30", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "exit=3"]);
    let out = gdb(&vmm.target, &["hbreak kernel::cmdline::run_actions", "continue", "info registers rip", "continue"]);
    has(&out, "Hardware assisted breakpoint 1");
    has(&out, "Breakpoint 1, kernel::cmdline::run_actions");
    has(&out, "<kernel::cmdline::run_actions+");
    has(&out, "exited with code 03");
    assert_eq!(vmm.finish(20).0, 3);
}

#[test]
fn variables_and_memory_at_vmalloc_and_user_addresses() {
    // The guest vmallocs a page holding a known string and publishes its
    // address in a static; then it runs processes. gdb prints the static
    // (full debug info), reads the string through the vmalloc mapping,
    // and, stopped in a system call, reads the process's own text at its
    // user address through the process's CR3.
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "vmalloc_marker selftest=process"]);
    let out = gdb(
        &vmm.target,
        &[
            "break kernel::proc::syscall::dispatch",
            "continue",
            "print/x kernel::mm::vmalloc::MMEMU_VMALLOC_MARKER.v.value",
            "x/s kernel::mm::vmalloc::MMEMU_VMALLOC_MARKER.v.value",
            "print/x $cr3",
            "x/4xb 0x400000",
            "monitor pt 0x400000",
            "kill",
        ],
    );
    has(&out, "Breakpoint 1, kernel::proc::syscall::dispatch");
    has(&out, "= 0xffffc90000000000");
    has(&out, "0xffffc90000000000:\t\"mmemu vmalloc marker\"");
    // User text: readable through the process's tables, not an error.
    has(&out, "0x400000:\t0x");
    assert!(!out.contains("Cannot access memory at address 0x400000"), "{out}");
    has(&out, "USR");
    let _ = vmm.finish(20);
}

#[test]
fn watchpoints_are_refused_and_unmapped_breakpoints_fail_cleanly() {
    let vmm = Vmm::start("30", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "exit=0"]);
    let out = gdb(
        &vmm.target,
        &[
            "watch *(long *)0xffffffff80200000",
            "continue",
            "delete",
            "hbreak *0x400000",
            "continue",
            "delete",
            "break *0x1234567000",
            "continue",
            "delete",
            "stepi",
            "info registers rip",
        ],
    );
    has(&out, "Could not insert hardware watchpoint 1");
    has(&out, "Cannot insert breakpoint 3");
    has(&out, "Cannot access memory at address 0x1234567000");
    // The reasons reach gdb's user too (console output with the next stop).
    has(&out, "vmm: refused a watchpoint at 0xffffffff80200000: data watchpoints are not available");
    has(&out, "vmm: cannot set a breakpoint: 0x1234567000 is not mapped");
    if !vmm::kvm::host_has_hw_virt() {
        // Debug registers never fire in ring 3 where ring 0 is emulated.
        has(&out, "vmm: refused a hardware breakpoint at 0x400000: debug registers never fire in ring 3");
    }
    // The session survived both refusals.
    has(&out, "_start+1");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 0, "{err}");
    has(&err, "data watchpoints are not available");
    has(&err, "0x1234567000 is not mapped");
}

#[test]
fn every_monitor_command_answers() {
    let vmm = Vmm::start("30", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "exit=0"]);
    let out = gdb(
        &vmm.target,
        &[
            "break kernel::cmdline::run_actions",
            "continue",
            "monitor help",
            "monitor pt $pc",
            "monitor pt kmain+0x10",
            "monitor pt 0x1234567000",
            "monitor mem",
            "monitor regs",
            "monitor phys on",
            "x/2gx 0x200000",
            "monitor phys off",
            "x/2gx 0xffffffff80200000",
            "monitor cr3 0x9000",
            "monitor pt $pc",
            "monitor cr3",
            "monitor buddyinfo",
            "monitor slabinfo",
            "monitor meminfo",
            "monitor ps",
            "monitor cr3 pid 1",
            "monitor pt nosuchsymbol",
            "monitor frobnicate",
            // gdb's syntax: paths, spaced operators, several arguments,
            // every register.
            "monitor pt kernel::kmain",
            "monitor pt $pc + 8",
            "monitor pt 0x0 0x1000",
            "monitor pt $eflags",
            "monitor pt $cr8",
            "monitor pt $efer",
            "monitor pt $nosuchreg",
        ],
    );
    has(&out, "0x0000000000000000 through CR3");
    has(&out, "0x0000000000001000 through CR3");
    for reg in ["eflags", "cr8", "efer"] {
        assert!(!out.contains(&format!("unknown register '${reg}'")), "{out}");
    }
    has(&out, "unknown register '$nosuchreg'");
    assert!(!out.contains("no symbol 'kernel::kmain'"), "{out}");
    // `monitor help` shows examples.
    has(&out, "monitor pt kernel::kmain+0x10");
    has(&out, "pt ADDR");
    // The walk of the PC: four levels or a 2 MiB leaf, entry addresses and values.
    // Linux's names: the top level of 4-level paging is the PGD.
    has(&out, "PGD (PML4)[511] @ 0x");
    assert!(!out.contains("P4D ("), "{out}");
    has(&out, "PUD (PDPT)[510] @ 0x");
    has(&out, "=> physical 0x2");
    has(&out, "not present at PGD (PML4)");
    has(&out, "ranges (u = user, r, w, x)");
    has(&out, "ffffffff80");
    has(&out, "cr0 0x");
    has(&out, "guest-physical now");
    has(&out, "(set by `monitor cr3`)");
    has(&out, "walk the vCPU's own CR3");
    // The descriptor views, rendered as `--inspect` renders them.
    has(&out, "Node 0, zone      DMA");
    has(&out, "slabinfo - version: 2.1");
    has(&out, "kmalloc-64 ");
    has(&out, "MemTotal:");
    has(&out, "PageTables:");
    // Processes: a table or the plain statement that there is none; either
    // way `cr3 pid` answers in words.
    assert!(out.contains("no processes yet") || out.contains("  pid  ppid state"), "{out}");
    assert!(out.contains("no process 1") || out.contains("memory reads now walk process 1"), "{out}");
    has(&out, "no symbol 'nosuchsymbol'");
    has(&out, "unknown monitor command 'frobnicate'");
    // Physical 2 MiB is the kernel's first byte, seen at -2 GiB + 2 MiB.
    let words = |addr: &str| {
        out.lines().find(|l| l.starts_with(addr)).and_then(|l| l.split_once(':')).map(|(_, w)| w.trim().to_string())
    };
    assert_eq!(words("0x200000"), words("0xffffffff80200000"), "{out}");
    assert!(words("0x200000").is_some(), "{out}");
    assert_eq!(vmm.finish(20).0, 0);
}

#[test]
fn unix_socket_works_and_detach_lets_the_guest_run_on() {
    let dir = std::env::temp_dir().join(format!("mmemu-gdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("gdb.sock");
    let vmm = Vmm::start("30", &format!("unix:{}", sock.display()), &["--gdb-wait", "--cmdline", "exit=5"]);
    let out = gdb(&vmm.target, &["stepi", "info registers rip", "detach"]);
    has(&out, "_start+1");
    has(&out, "detached]");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 5, "{err}");
    has(&err, "detached; the guest runs on");
    assert!(!sock.exists(), "the socket file was left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A raw remote-protocol client.
struct Raw(TcpStream);

impl Raw {
    fn connect(target: &str) -> Raw {
        let s = TcpStream::connect(target).expect("connect to the stub");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(s)
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.0.write_all(bytes);
    }

    fn send(&mut self, body: &str) {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        self.send_raw(format!("${body}#{sum:02x}").as_bytes());
    }

    /// The next packet's body (acks skipped); None on EOF or timeout.
    fn recv(&mut self) -> Option<String> {
        let mut b = [0u8];
        loop {
            self.0.read_exact(&mut b).ok()?;
            if b[0] == b'$' {
                break;
            }
        }
        let mut body = Vec::new();
        loop {
            self.0.read_exact(&mut b).ok()?;
            if b[0] == b'#' {
                break;
            }
            body.push(b[0]);
        }
        let mut sum = [0u8; 2];
        self.0.read_exact(&mut sum).ok()?;
        let _ = self.0.write_all(b"+");
        Some(String::from_utf8_lossy(&body).into_owned())
    }

    /// The next stop reply, with the console output (`O` packets) that
    /// came before it, decoded.
    fn recv_stop(&mut self) -> Option<(String, String)> {
        let mut console = String::new();
        loop {
            let p = self.recv()?;
            match p.strip_prefix('O').filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit())) {
                Some(hex) => {
                    let bytes: Vec<u8> =
                        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
                    console.push_str(&String::from_utf8_lossy(&bytes));
                }
                None => return Some((p, console)),
            }
        }
    }

    fn ask(&mut self, body: &str) -> Option<String> {
        self.send(body);
        self.recv()
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

#[test]
fn ctrl_c_interrupts_a_running_guest() {
    let vmm = Vmm::start("30", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "hang"]);
    let mut c = Raw::connect(&vmm.target);
    assert!(c.ask("?").unwrap().starts_with('T'));
    c.send("vCont;c");
    std::thread::sleep(Duration::from_millis(500));
    c.send_raw(&[0x03]);
    let stop = c.recv().expect("a stop reply after Ctrl-C");
    assert!(stop.starts_with("T02"), "{stop}");
    // Stopped in the `hang` loop of run_actions.
    let regs = unrle(&c.ask("g").unwrap());
    let rip = u64::from_str_radix(&regs[256..272], 16).unwrap().swap_bytes();
    assert!(rip >= 0xffff_ffff_8000_0000, "rip {rip:#x}");
    // Twice: the watcher re-arms after a stop.
    c.send("vCont;c");
    std::thread::sleep(Duration::from_millis(200));
    c.send_raw(&[0x03]);
    assert!(c.recv().unwrap().starts_with("T02"));
    // A Ctrl-C in the same read as the resume packet (it waits in the
    // stub's buffer, not in the socket): answered, as QEMU does.
    let sum = "vCont;c".bytes().fold(0u8, |a, b| a.wrapping_add(b));
    c.send_raw(format!("$vCont;c#{sum:02x}\x03").as_bytes());
    assert!(c.recv().expect("a stop reply for a Ctrl-C sent with the resume").starts_with("T02"));
    // A Ctrl-C while stopped (one that crossed a stop reply) gets no
    // second stop reply, as with QEMU's gdbstub; the session goes on and
    // the next resume runs the guest.
    c.send_raw(&[0x03]);
    let regs = c.ask("g").unwrap();
    assert!(!regs.starts_with('T') && !regs.starts_with('S'), "a stop reply answered the register read: {regs}");
    c.send("vCont;c");
    std::thread::sleep(Duration::from_millis(200));
    c.send_raw(&[0x03]);
    assert!(c.recv().unwrap().starts_with("T02"));
    assert_eq!(c.ask("k"), None);
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 137, "{err}");
}

/// gdb reading commands from a pipe, as a user types them: each command
/// is sent once the output so far contains what the previous step waits
/// for. Unlike `-batch`, gdb runs its event loop between commands, so
/// `continue &` and `interrupt` work as in an interactive session.
fn gdb_interactive(target: &str, steps: &[(&str, &str)]) -> String {
    let mut child = Command::new(GDB)
        .args(["-nx", "-q", "-ex", "set pagination off", "-ex", "set confirm off"])
        .args(["-ex", &format!("target remote {target}"), GUEST_ELF])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gdb");
    let out = Arc::new(Mutex::new(String::new()));
    for pipe in [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
    {
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let mut stdin = child.stdin.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen = 0;
    for (cmd, wait_for) in steps {
        let _ = writeln!(stdin, "{cmd}");
        // Wait for the text after what earlier steps matched.
        loop {
            let now = out.lock().unwrap().clone();
            if let Some(i) = now[seen..].find(wait_for) {
                seen += i + wait_for.len();
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gdb never printed {wait_for:?} after {cmd:?}:\n{now}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = writeln!(stdin, "quit");
    drop(stdin);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gdb did not quit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    let s = out.lock().unwrap().clone();
    s
}

#[test]
fn gdb_interrupt_stops_the_guest_also_right_after_continue() {
    // `continue &` then `interrupt` at once: gdb sends `vCont;c` and the
    // Ctrl-C byte back to back (the stub may read both at once); then a
    // Ctrl-C after the guest ran a while; then one during a halt with
    // interrupts masked is a stop already (SIGSTOP), and gdb's
    // `interrupt` is not needed there: `continue` returns.
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "hang"]);
    let out = gdb_interactive(
        &vmm.target,
        &[
            ("continue &", "Continuing."),
            ("interrupt", "Program received signal SIGINT"),
            ("info registers rip", "rip "),
            ("continue &", "Continuing."),
            ("shell sleep 0.5", "(gdb)"),
            ("interrupt", "Program received signal SIGINT"),
            // Where depends on how far the guest got on a loaded host
            // (still booting, or in the `hang` loop): a kernel address.
            ("info registers rip", "rip "),
            ("kill", "killed]"),
        ],
    );
    assert_eq!(out.matches("Program received signal SIGINT").count(), 2, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("rip ") && l.contains("0xffffffff8")).count(), 2, "{out}");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 137, "{err}");

    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cmdline", "halt"]);
    let out = gdb_interactive(
        &vmm.target,
        &[
            ("continue &", "Program received signal SIGSTOP"),
            ("continue &", "Program received signal SIGSTOP"),
            ("stepi", "(gdb)"),
            ("info symbol $pc", "kernel::arch::halt_forever"),
            ("kill", "killed]"),
        ],
    );
    has(&out, "vmm: vCPU 0 halted with interrupts masked");
    assert_eq!(vmm.finish(20).0, 137);
}

#[test]
fn malformed_packets_and_disconnects_neither_panic_nor_hang() {
    let vmm = Vmm::start("5", "tcp:127.0.0.1:0", &["--cmdline", "hang"]);
    // Garbage of every kind; the stub may answer, refuse or drop the
    // session, but a new client must always be served.
    let abuse: &[&[u8]] = &[
        b"hello world",
        b"$#00",
        b"$qSupported#ff",
        b"$m,#00",
        b"$mffffffffffffffff,ffffffff#00",
        b"$Z0,1234567000,1#00",
        b"$vCont;x#00",
        b"$p99999#00",
        b"$G00#00",
        b"$M0,10:zz#00",
        b"-",
        b"$}}}}}}}}#00",
    ];
    let mut served = 0;
    for bytes in abuse {
        let mut c = Raw::connect(&vmm.target);
        c.send_raw(bytes);
        // Then a valid request, with its real checksum.
        if c.ask("?").is_some_and(|r| r.starts_with('T')) {
            served += 1;
        }
        // Hang up mid-session (and, every other time, mid-packet).
        if served % 2 == 0 {
            c.send_raw(b"$m ffffffff802");
        }
        drop(c);
    }
    // A huge packet, then valid requests with real checksums.
    let mut c = Raw::connect(&vmm.target);
    c.send_raw(&[b'$'; 1]);
    c.send_raw(&vec![b'A'; 1 << 16]);
    c.send_raw(b"#00");
    drop(c);
    let mut c = Raw::connect(&vmm.target);
    assert!(c.ask("?").unwrap().starts_with('T'));
    // Memory reads: a mapped kernel address, then an unmapped one.
    let m = c.ask("mffffffff80200000,8").unwrap();
    assert_eq!(unrle(&m).len(), 16, "{m}");
    assert!(c.ask("m1234567000,8").unwrap().starts_with('E'));
    assert!(c.ask("Z0,1234567000,1").unwrap().starts_with('E'));
    assert!(c.ask("Z2,ffffffff80200000,8").unwrap().starts_with('E'));
    drop(c);
    assert!(served >= abuse.len() / 2, "only {served} of {} abusive clients were served afterwards", abuse.len());
    // The guest ran on after the last disconnect, until --timeout.
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 124, "{err}");
}

/// The value gdb printed for `$N = 0x...` (history number `n`).
fn printed(out: &str, n: u32) -> u64 {
    let tag = format!("${n} = ");
    let line = out.lines().find(|l| l.starts_with(&tag)).unwrap_or_else(|| panic!("no {tag:?} in:\n{out}"));
    let v = line[tag.len()..].trim();
    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("{line:?} is no hex value"))
}

#[test]
fn two_vcpus_are_two_threads_each_stepped_alone() {
    // `--cpus 2`: the breakpoint in ap_main is hit on the application
    // processor only (the boot CPU waits for it to come online meanwhile),
    // so the stop names thread 2; `stepi` of thread 2 moves vCPU 1 alone.
    let vmm = Vmm::start("90", "tcp:127.0.0.1:0", &["--gdb-wait", "--cpus", "2", "--cmdline", "exit=7"]);
    let out = gdb(
        &vmm.target,
        &[
            "break ap_main",
            "continue",
            "info threads",
            "bt",
            "thread 1",
            "print/x $rip",
            "thread 2",
            "print/x $rip",
            "stepi",
            "print/x $rip",
            "stepi",
            "print/x $rip",
            "thread 1",
            "print/x $rip",
            // monitor commands follow the thread gdb last looked at (its
            // `Hg`), as QEMU's gdbstub does.
            "x/i $pc",
            "monitor regs",
            "thread 2",
            "x/i $pc",
            "monitor regs",
            "delete",
            "continue",
        ],
    );
    has(&out, "Thread 2 hit Breakpoint 1, ");
    has(&out, "ap_main");
    has(&out, "Thread 1.1 (vCPU 0, no process (kernel), kernel mode)");
    has(&out, "Thread 1.2 (vCPU 1, no process (kernel), kernel mode)");
    has(&out, "#0  ");
    let (v0_before, v1_before, v1_step1, v1_step2, v0_after) =
        (printed(&out, 1), printed(&out, 2), printed(&out, 3), printed(&out, 4), printed(&out, 5));
    assert_eq!(v0_before, v0_after, "vCPU 0 moved while vCPU 1 was stepped:\n{out}");
    assert_ne!(v1_before, v1_step1, "stepi did not move vCPU 1:\n{out}");
    assert_ne!(v1_step1, v1_step2, "the second stepi did not move vCPU 1:\n{out}");
    has(&out, "vCPU 0 (gdb thread 1)");
    has(&out, "vCPU 1 (gdb thread 2)");
    has(&out, "exited with code 07");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 7, "{err}");
}

#[test]
fn ctrl_c_and_steps_of_either_vcpu_with_two_vcpus_never_hang() {
    // `hang` on two vCPUs: vCPU 0 spins in run_actions, vCPU 1 sits in
    // the idle loop. Ctrl-C stops both; a step of either answers (one of
    // vCPU 1 may wait in `hlt` for an interrupt: then Ctrl-C ends it);
    // the stop names the stepped thread.
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cpus", "2", "--cmdline", "hang"]);
    let mut c = Raw::connect(&vmm.target);
    assert!(c.ask("?").unwrap().starts_with('T'));
    for _ in 0..2 {
        c.send("vCont;c");
        std::thread::sleep(Duration::from_millis(500));
        c.send_raw(&[0x03]);
        let (stop, _) = c.recv_stop().expect("a stop reply after Ctrl-C");
        assert!(stop.starts_with("T02"), "{stop}");
    }
    let threads = c.ask("qfThreadInfo").unwrap();
    assert!(threads.contains("01") && threads.contains("02"), "{threads}");
    for thread in ["1", "2", "1", "2"] {
        c.send(&format!("vCont;s:{thread}"));
        std::thread::sleep(Duration::from_millis(200));
        // Harmless if the step already ended (no second stop reply).
        c.send_raw(&[0x03]);
        let (stop, _) = c.recv_stop().expect("a stop reply for the step");
        assert!(stop.starts_with('T'), "{stop}");
        assert!(stop.contains(&format!(".0{thread};")) || stop.contains(&format!(":0{thread};")), "{stop}");
    }
    // The registers of both threads read after the steps.
    for t in ["p1.1", "p1.2"] {
        assert_eq!(c.ask(&format!("Hg{t}")).as_deref(), Some("OK"));
        // (Run-length encoded: a vCPU with many zero registers is short.)
        assert!(c.ask("g").is_some_and(|r| unrle(&r).len() > 100), "registers of {t}");
    }
    assert_eq!(c.ask("k"), None);
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 137, "{err}");
}

#[test]
fn info_threads_names_the_process_each_vcpu_runs() {
    // Stopped in a system call of the first self-test process, on
    // whichever vCPU ran it: that thread names the process (its CR3 is the
    // process's root), the other vCPU its own state.
    let vmm = Vmm::start("60", "tcp:127.0.0.1:0", &["--gdb-wait", "--cpus", "2", "--cmdline", "selftest=process"]);
    let out = gdb(
        &vmm.target,
        &["break kernel::proc::syscall::dispatch", "continue", "info threads", "monitor regs", "kill"],
    );
    has(&out, " hit Breakpoint 1, kernel::proc::syscall::dispatch");
    let current = out.lines().find(|l| l.starts_with('*')).unwrap_or_else(|| panic!("no current thread:\n{out}"));
    assert!(current.contains(", pid ") && current.contains(", kernel mode)"), "{current}\n{out}");
    // Both threads listed, each with its vCPU.
    has(&out, "(vCPU 0, ");
    has(&out, "(vCPU 1, ");
    has(&out, "[Inferior 1 (process 1) killed]");
    assert_eq!(vmm.finish(20).0, 137);
}

/// A child touches 300 pages, then it and its parent yield to each other
/// forever; gdb stops in the 200th yield: `monitor ps` shows the child's
/// resident pages and faults as of its last switch (the table was built
/// when the child was forked, with nothing resident yet).
const TOUCH_AND_YIELD: &str = r#"
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    if (fork() == 0) {
        char *m = mmap(0, 300 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (int i = 0; i < 300; i++)
            m[i * 4096] = 1;
    }
    for (;;)
        sched_yield();
}
"#;

#[test]
fn monitor_ps_counts_what_a_process_did_up_to_its_last_switch() {
    let dir = common::Scratch::new("gdb-ps-rss");
    let prog = common::compile("musl-gcc", TOUCH_AND_YIELD, &dir.0, "touchyield", &["-static"]);
    let root = common::initrd_with_init(&dir.0, &prog);
    let vmm = Vmm::start("90", "tcp:127.0.0.1:0", &["--gdb-wait", "--initrd", root.to_str().unwrap()]);
    let out =
        gdb(&vmm.target, &["break kernel::proc::sched::yield_now", "ignore 1 200", "continue", "monitor ps", "kill"]);
    has(&out, "Breakpoint 1, kernel::proc::sched::yield_now");
    let row = out
        .lines()
        .find(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 5 && w[0].parse::<u32>().is_ok_and(|pid| pid > 1) && w[1] == "1"
        })
        .unwrap_or_else(|| panic!("no row for init's child in monitor ps:\n{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    let rss: u64 = cols[4].parse().unwrap_or_else(|_| panic!("rss column: {row}\n{out}"));
    let faults: u64 = cols[5].parse().unwrap_or_else(|_| panic!("faults column: {row}\n{out}"));
    assert!(rss >= 300 && faults >= 300, "the child's 300 touched pages: {row}\n{out}");
    let (status, err) = vmm.finish(20);
    assert_eq!(status, 137, "{err}");
}
