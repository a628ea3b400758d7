//! The interactive console (`vmm run --shell`): the guest's built-in
//! ring-3 shell (guest/user/src/bin/sh.rs, a Linux program) driven
//! through a pipe (a script) and through a pseudo-terminal (the VMM puts
//! it in raw mode while attached and restores it on exit, by `exit` and
//! by the Ctrl-A x escape). The shell lists and cats files, shows /proc
//! through procps-style views (checked against the /proc files
//! themselves), and runs a program of the initramfs (built now with gcc
//! -static and musl-gcc -static) with arguments.

mod common;

use common::{vmm_path, vmm_with_input, Scratch, TempFile};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HELLO: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    printf("hello from %s with %d args:", argv[0], argc - 1);
    for (int i = 1; i < argc; i++) printf(" [%s]", argv[i]);
    printf("\n");
    struct winsize w = {0};
    int t = isatty(1) && ioctl(1, TIOCGWINSZ, &w) == 0;
    printf("stdout a terminal %d, %d columns\n", t, t ? w.ws_col : 0);
    char cmd[64] = {0};
    int fd = open("/proc/self/cmdline", O_RDONLY);
    int n = read(fd, cmd, sizeof cmd - 1);
    for (int i = 0; i < n; i++) if (!cmd[i]) cmd[i] = ' ';
    printf("cmdline [%s]\n", cmd);
    return 3;
}
"#;

/// A root with /bin/hello-gcc, /bin/hello-musl and /etc/motd.
fn root(name: &str) -> Scratch {
    let dir = Scratch::new(&format!("console-{name}"));
    let root = dir.0.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/motd"), "the message of the day\n").unwrap();
    let c = dir.0.join("hello.c");
    std::fs::write(&c, HELLO).unwrap();
    for (cc, out) in [("gcc", "hello-gcc"), ("musl-gcc", "hello-musl")] {
        let o = Command::new(cc)
            .args(["-O2", "-static", "-o"])
            .arg(root.join("bin").join(out))
            .arg(&c)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cc} ({e}): apt-get install gcc musl-tools (as .ci/run does)"));
        assert!(o.status.success(), "{cc}: {}", String::from_utf8_lossy(&o.stderr));
    }
    dir
}

fn root_path(d: &Scratch) -> PathBuf {
    d.0.join("root")
}

/// The output of the command `cmd` in a piped session: from its echoed
/// line `# cmd` to the next prompt that echoes one of `script`'s lines
/// (a bare `\n# ` is no end: /proc/slabinfo has a `# name` header).
fn section<'a>(out: &'a str, script: &str, cmd: &str) -> &'a str {
    let start = out.find(&format!("# {cmd}\n")).unwrap_or_else(|| panic!("no `{cmd}` in:\n{out}"));
    let body = &out[start + cmd.len() + 3..];
    let end = script.lines().filter_map(|l| body.find(&format!("\n# {l}\n")).map(|i| i + 1)).min();
    &body[..end.unwrap_or(body.len())]
}

/// The number after `key:` in a meminfo-style text.
fn kb(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

/// Whitespace-separated numbers of a line after its first `skip` words.
fn nums(line: &str, skip: usize) -> Vec<u64> {
    line.split_whitespace().skip(skip).filter_map(|w| w.parse().ok()).collect()
}

#[test]
fn the_ring3_shell_shows_proc_views_from_a_pipe() {
    // No initrd: the built-in shell runs on its own (/proc is there).
    let script = "cat /proc/meminfo\nfree\nfree -m\ncat /proc/self/status\ncat /proc/self/maps\npmap self\nps\ntop\n\
                  vmstat\ncat /proc/slabinfo\nslabtop\ncat /proc/buddyinfo\nbuddyinfo\nfrobnicate now\nfree -x\n\
                  pmap 999999\ncat /nonexistent\nexit\n";
    let run = vmm_with_input(&["run", "--timeout", "240", "--shell"], Some(script));
    assert_eq!(run.status, 0, "`exit` powers off with status 0: {}", run.all());
    let out = &run.stdout;

    // free: procps's columns from /proc/meminfo.
    let meminfo = section(out, script, "cat /proc/meminfo");
    let total = kb(meminfo, "MemTotal");
    assert!(total > 0, "{meminfo}");
    let free = section(out, script, "free");
    assert!(
        free.starts_with("               total        used        free      shared  buff/cache   available\n"),
        "{free}"
    );
    let mem = nums(free.lines().find(|l| l.starts_with("Mem:")).unwrap(), 1);
    assert_eq!(mem[0], total, "free's total is MemTotal: {free}\n{meminfo}");
    assert_eq!(mem[0], mem[1] + mem[2] + mem[4], "total = used + free + buff/cache: {free}");
    let swap = nums(free.lines().find(|l| l.starts_with("Swap:")).unwrap(), 1);
    assert_eq!(swap[0], kb(meminfo, "SwapTotal"), "{free}");
    let free_m = nums(section(out, script, "free -m").lines().find(|l| l.starts_with("Mem:")).unwrap(), 1);
    assert_eq!(free_m[0], total >> 10, "free -m in MiB");

    // The shell is a ring-3 process: its own /proc/self, pmap of itself
    // (user addresses, its text at 0x400000), and its line in ps.
    let status = section(out, script, "cat /proc/self/status");
    assert!(status.contains("Name:\tsh\n"), "{status}");
    let pid = kb(status, "Pid");
    assert_eq!(kb(status, "PPid"), 0, "a child of the kernel, as init: {status}");
    let maps = section(out, script, "cat /proc/self/maps");
    let pmap = section(out, script, "pmap self");
    assert!(pmap.starts_with(&format!("{pid}:   sh\n")), "{pmap}");
    let mut sum = 0;
    let map_lines: Vec<&str> = maps.lines().collect();
    let pmap_lines: Vec<&str> = pmap.lines().skip(1).filter(|l| !l.starts_with(" total")).collect();
    assert_eq!(map_lines.len(), pmap_lines.len(), "one pmap line per VMA:\n{maps}\n{pmap}");
    for (m, p) in map_lines.iter().zip(&pmap_lines) {
        let (range, perms) = m.split_once(' ').unwrap();
        let (s, e) = range.split_once('-').unwrap();
        let (s, e) = (u64::from_str_radix(s, 16).unwrap(), u64::from_str_radix(e, 16).unwrap());
        assert!(e <= 0x8000_0000_0000, "a user address: {m}");
        let w: Vec<&str> = p.split_whitespace().collect();
        assert_eq!(u64::from_str_radix(w[0], 16).unwrap(), s, "{p} vs {m}");
        assert_eq!(w[1], format!("{}K", (e - s) >> 10), "{p} vs {m}");
        assert_eq!(&w[2][..3], &perms[..3], "{p} vs {m}");
        sum += (e - s) >> 10;
    }
    assert!(pmap_lines[0].starts_with("0000000000400000") && pmap_lines[0].contains(" r-x-- "), "{pmap}");
    assert!(pmap.contains(&format!(" total {sum:>16}K\n")), "{pmap}");
    let ps = section(out, script, "ps");
    assert!(ps.starts_with("    PID    PPID STAT    VSZ   RSS COMMAND\n"), "{ps}");
    let me = ps.lines().find(|l| l.split_whitespace().next() == Some(&pid.to_string())).expect("the shell in ps");
    let w: Vec<&str> = me.split_whitespace().collect();
    assert_eq!((w[1], w[2], w[5]), ("0", "R", "sh"), "{ps}");
    assert_eq!(w[3].parse::<u64>().unwrap(), kb(status, "VmSize"), "{ps}\n{status}");

    // top: the same tasks, the memory summary in MiB of MemTotal.
    let top = section(out, script, "top");
    let tasks = nums(top.lines().find(|l| l.starts_with("Tasks:")).unwrap(), 1);
    assert_eq!(tasks[0] as usize, ps.lines().count() - 1, "{top}\n{ps}");
    let mib = format!("{}.{}", total / 1024, (total % 1024) * 10 / 1024);
    assert!(top.contains(&format!("MiB Mem : {mib:>8} total")), "{top}");
    assert!(top.lines().any(|l| l.split_whitespace().next() == Some(&pid.to_string()) && l.ends_with(" sh")), "{top}");

    // vmstat: procps's header; no swap configured, so swpd is 0.
    let vm = section(out, script, "vmstat");
    let lines: Vec<&str> = vm.lines().collect();
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["r", "b", "swpd", "free", "buff", "cache", "si", "so"]
    );
    let v = nums(lines[2], 0);
    assert_eq!((v[0], v[2]), (1, kb(meminfo, "SwapTotal") - kb(meminfo, "SwapFree")), "the shell runs: {vm}");

    // slabtop: every cache of /proc/slabinfo, its object size in K.
    let slabinfo = section(out, script, "cat /proc/slabinfo");
    let slabtop = section(out, script, "slabtop");
    assert!(slabtop.contains(" Active / Total Objects (% used)    : "), "{slabtop}");
    let caches: Vec<Vec<&str>> = slabinfo
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("slabinfo"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(!caches.is_empty(), "{slabinfo}");
    let rows: Vec<&str> = slabtop.lines().skip_while(|l| !l.starts_with("  OBJS")).skip(1).collect();
    assert_eq!(rows.len(), caches.len(), "{slabtop}\n{slabinfo}");
    for c in &caches {
        let row = rows.iter().find(|r| r.split_whitespace().last() == Some(c[0])).expect(c[0]);
        let size: f64 = c[3].parse().unwrap();
        assert!(row.contains(&format!(" {:.2}K ", size / 1024.0)), "{row} vs {c:?}");
    }

    // buddyinfo: the zones of /proc/buddyinfo, each summed right.
    let bi = section(out, script, "cat /proc/buddyinfo");
    let view = section(out, script, "buddyinfo");
    let zones: Vec<&str> = bi.lines().map(|l| l.split_whitespace().nth(3).unwrap()).collect();
    let rows: Vec<&str> = view.lines().skip(1).collect();
    assert_eq!(rows.len(), zones.len(), "{view}\n{bi}");
    for (row, zone) in rows.iter().zip(&zones) {
        assert_eq!(row.split_whitespace().nth(3), Some(*zone), "{row}");
        let (counts, sum) = row.split_once("  = ").unwrap();
        let want: u64 = nums(counts, 4).iter().enumerate().map(|(o, n)| n * (4 << o)).sum();
        assert_eq!(sum, format!("{want} kB"), "{row}");
    }

    // Bad input gets a clear error and the shell goes on.
    assert!(section(out, script, "frobnicate now").starts_with("frobnicate: command not found"), "{out}");
    assert!(section(out, script, "free -x").starts_with("free: unknown option '-x'"), "{out}");
    assert!(section(out, script, "pmap 999999").starts_with("pmap: 999999: no such process"), "{out}");
    assert!(
        section(out, script, "cat /nonexistent").starts_with("cat: /nonexistent: No such file or directory"),
        "{out}"
    );
}

#[test]
fn the_shell_runs_a_script_from_a_pipe() {
    let dir = root("pipe");
    let r = root_path(&dir);
    let script = "ls /bin\ncat /etc/motd\nhello-gcc one two\nhello-musl x\ncat /proc/meminfo\nnosuch\nexit 5\n";
    let run = vmm_with_input(&["run", "--timeout", "240", "--shell", "--initrd", r.to_str().unwrap()], Some(script));
    assert_eq!(run.status, 5, "{}", run.all());
    let out = &run.stdout;
    for want in [
        "# ls /bin",
        "hello-gcc*",
        "hello-musl*",
        "# cat /etc/motd\nthe message of the day",
        "hello from hello-gcc with 2 args: [one] [two]\nstdout a terminal 0, 0 columns\ncmdline [hello-gcc one two ]",
        "[hello-gcc exited with status 3]",
        "hello from hello-musl with 1 args: [x]",
        "MemTotal:",
        "Cached:",
        "nosuch: command not found",
        "# exit 5",
    ] {
        assert!(out.contains(want), "missing {want:?}: {}", run.all());
    }
}

/// Kernel threads are in /proc as on Linux: ps lists kswapd (started by
/// swap) as `[kswapd0]` with no memory, its status has no Vm lines.
#[test]
fn ps_lists_kernel_threads_in_brackets_as_procps() {
    let swap = TempFile::new("ps-swap", &vec![0u8; 4 << 20]);
    let script = "ps\ncat /proc/1/status\ncat /proc/1/cmdline\ncat /proc/1/maps\nexit\n";
    let run = vmm_with_input(&["run", "--timeout", "240", "--shell", "--swap", swap.path()], Some(script));
    assert_eq!(run.status, 0, "{}", run.all());
    let out = &run.stdout;
    let ps = section(out, script, "ps");
    let k = ps.lines().find(|l| l.ends_with(" [kswapd0]")).unwrap_or_else(|| panic!("{ps}"));
    // PID PPID STAT VSZ RSS: no address space.
    assert_eq!(nums(k, 0)[2..], [0, 0], "{k}");
    assert!(ps.lines().any(|l| l.ends_with(" sh")), "{ps}");
    let status = section(out, script, "cat /proc/1/status");
    assert!(status.contains("Name:\tkswapd0\n") && !status.contains("VmSize"), "{status}");
    // An empty cmdline and no mappings: each prompt follows the last.
    assert!(out.contains("# cat /proc/1/cmdline\n# cat /proc/1/maps\n# exit\n"), "{out}");
}

/// A pseudo-terminal pair (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut m, mut s) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the pointed-to ints; the
    // name, termios and winsize pointers may be null.
    let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
}

/// The terminal's local flags.
fn lflags(fd: &OwnedFd) -> libc::tcflag_t {
    // SAFETY: termios is plain data; tcgetattr fills it for a valid fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

/// The shell on a pseudo-terminal: what it printed, the terminal's local
/// flags while attached, the VMM's exit status and the flags after.
fn on_pty(r: &Path, keys: &[&[u8]]) -> (String, libc::tcflag_t, i32, libc::tcflag_t) {
    let (master, slave) = openpty();
    let before = lflags(&slave);
    assert!(before & libc::ICANON != 0 && before & libc::ECHO != 0, "a fresh pty is canonical with echo");
    let mut child = Command::new(vmm_path())
        .args(["run", "--timeout", "240", "--shell", "--initrd", r.to_str().unwrap()])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()))
        .spawn()
        .expect("spawn vmm");
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let mut writer = std::fs::File::from(master);
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |seen: &mut String, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(240);
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => panic!("no {what:?} on the terminal; so far:\n{seen}"),
            }
        }
    };
    wait_for(&mut seen, "# ");
    let during = lflags(&slave);
    for (i, k) in keys.iter().enumerate() {
        let prompts = seen.matches("# ").count();
        writer.write_all(k).unwrap();
        if i + 1 < keys.len() {
            // The next prompt: the command has finished.
            let deadline = Instant::now() + Duration::from_secs(240);
            while seen.matches("# ").count() <= prompts {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                    Err(_) => panic!("no prompt after {k:?}; so far:\n{seen}"),
                }
            }
        }
    }
    let status = child.wait().expect("wait for vmm").code().unwrap_or(-1);
    while let Ok(b) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push_str(&String::from_utf8_lossy(&b));
    }
    (seen.replace('\r', ""), during, status, lflags(&slave))
}

#[test]
fn the_shell_on_a_terminal_runs_a_program_and_restores_the_terminal() {
    let dir = root("pty");
    let r = root_path(&dir);
    // Typed as a user would: CR for Enter, a typo erased with Backspace.
    let (out, during, status, after) =
        on_pty(&r, &[b"cat /etc/motdd\x7f\r", b"hello-musl a b\r", b"hello-gcc\r", b"exit\r"]);
    assert_eq!(status, 0, "{out}");
    assert!(during & (libc::ICANON | libc::ECHO) == 0, "raw while attached: lflag {during:#x}\n{out}");
    assert!(after & libc::ICANON != 0 && after & libc::ECHO != 0, "restored after exit: lflag {after:#x}\n{out}");
    for want in [
        "the message of the day",
        "hello from hello-musl with 2 args: [a] [b]\nstdout a terminal 1, 80 columns\ncmdline [hello-musl a b ]",
        "hello from hello-gcc with 0 args:\nstdout a terminal 1, 80 columns",
        "[hello-gcc exited with status 3]",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    // Backspace erased the typo: the file was found.
    assert!(!out.contains("No such file"), "{out}");
}

#[test]
fn ctrl_a_x_quits_and_restores_the_terminal() {
    let dir = root("escape");
    let r = root_path(&dir);
    let (out, during, status, after) = on_pty(&r, &[b"ls /etc\r", b"\x01x"]);
    assert!(during & libc::ICANON == 0, "{out}");
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("motd") && out.contains("Ctrl-A x: quitting"), "{out}");
    assert!(after & libc::ICANON != 0 && after & libc::ECHO != 0, "restored after Ctrl-A x: lflag {after:#x}\n{out}");
}

/// The former in-kernel shell stays reachable (`kshell` on the command
/// line) for the view without a /proc file: numactl's node table.
#[test]
fn the_in_kernel_monitor_is_kshell() {
    let run = vmm_with_input(&["run", "--timeout", "240", "--cmdline", "kshell"], Some("numactl\nexit 4\n"));
    assert_eq!(run.status, 4, "{}", run.all());
    assert!(run.stdout.contains("mmemu shell: `help` lists the commands"), "{}", run.all());
    assert!(run.stdout.contains("# numactl\nNo NUMA available on this system"), "{}", run.all());
    assert!(!run.stdout.contains("mmemu sh (ring 3"), "not the ring-3 shell: {}", run.all());
}

/// A program's fds 0, 1 and 2 answer TCGETS (isatty, tcgetattr) and
/// TIOCGWINSZ as on Linux: as a terminal exactly where the VMM's own
/// stream behind the descriptor is one (`tty=MASK` on the kernel command
/// line), -ENOTTY where it is a pipe or /dev/null. Run twice: all pipes
/// (what the host's run through pipes says too), and stdout on a
/// pseudo-terminal (fd 1 a terminal, 80x24; fds 0 and 2 not).
const ISATTY: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>
int main(void) {
    char out[256];
    int n = 0;
    for (int fd = 0; fd < 3; fd++) {
        struct termios t;
        int r = tcgetattr(fd, &t);
        n += snprintf(out + n, sizeof out - n, "fd %d: isatty %d tcgetattr %s; ", fd, isatty(fd),
                      r == 0 ? "ok" : errno == ENOTTY ? "ENOTTY" : "other");
    }
    struct winsize w;
    if (ioctl(1, TIOCGWINSZ, &w) == 0) n += snprintf(out + n, sizeof out - n, "winsize %dx%d", w.ws_col, w.ws_row);
    else n += snprintf(out + n, sizeof out - n, "winsize %s", errno == ENOTTY ? "ENOTTY" : "other");
    /* write(2), unbuffered: stdio would probe the terminal itself. */
    out[n++] = '\n';
    write(1, out, n);
    return 0;
}
"#;

#[test]
fn console_descriptors_are_terminals_exactly_where_the_vmms_streams_are() {
    let dir = Scratch::new("console-isatty");
    let prog = common::compile("musl-gcc", ISATTY, &dir.0, "isatty", &["-static"]);
    let piped = "fd 0: isatty 0 tcgetattr ENOTTY; fd 1: isatty 0 tcgetattr ENOTTY; fd 2: isatty 0 tcgetattr ENOTTY; winsize ENOTTY\n";
    let host = Command::new(&prog).stdin(Stdio::null()).output().expect("run on the host");
    assert_eq!(String::from_utf8_lossy(&host.stdout), piped, "the host's run through pipes");
    let run = Command::new(vmm_path())
        .args(["run", "--timeout", "240", "--", prog.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .expect("run vmm");
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(String::from_utf8_lossy(&run.stdout), piped, "{}", String::from_utf8_lossy(&run.stderr));
    // Stdout on a pseudo-terminal.
    let (master, slave) = openpty();
    let mut child = Command::new(vmm_path())
        .args(["run", "--timeout", "240", "--", prog.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm");
    let mut reader = std::fs::File::from(master);
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let status = child.wait().expect("wait for vmm").code();
    let mut seen = String::new();
    while let Ok(b) = rx.recv_timeout(Duration::from_millis(500)) {
        seen.push_str(&String::from_utf8_lossy(&b));
    }
    let mut err = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert_eq!(status, Some(0), "{seen}{err}");
    assert!(
        seen.contains("fd 0: isatty 0 tcgetattr ENOTTY; fd 1: isatty 1 tcgetattr ok; fd 2: isatty 0 tcgetattr ENOTTY; winsize 80x24"),
        "{seen}\n{err}"
    );
}

#[test]
fn echo_redirects_to_files_and_tunables() {
    // `echo ... > FILE` sets a tunable the way people do by hand, and
    // writes or appends to a file; a tunable's error is printed.
    let script = "cat /sys/kernel/mm/transparent_hugepage/enabled\n\
                  echo never > /sys/kernel/mm/transparent_hugepage/enabled\n\
                  cat /sys/kernel/mm/transparent_hugepage/enabled\n\
                  echo sometimes >/sys/kernel/mm/transparent_hugepage/enabled\n\
                  echo one two > /etc/notes\necho three >>/etc/notes\ncat /etc/notes\n\
                  echo again > /etc/notes\ncat /etc/notes\necho x > /nodir/y\necho 1 >\nexit\n";
    let dir = root("echo");
    let r = root_path(&dir);
    let run = vmm_with_input(&["run", "--timeout", "240", "--shell", "--initrd", r.to_str().unwrap()], Some(script));
    assert_eq!(run.status, 0, "{}", run.all());
    let out = &run.stdout;
    assert_eq!(section(out, script, "cat /sys/kernel/mm/transparent_hugepage/enabled"), "always [madvise] never\n");
    let after = out.split("# echo never > /sys/kernel/mm/transparent_hugepage/enabled\n").nth(1).unwrap_or("");
    assert!(after.starts_with("# cat /sys/kernel/mm/transparent_hugepage/enabled\nalways madvise [never]\n"), "{out}");
    assert_eq!(
        section(out, script, "echo sometimes >/sys/kernel/mm/transparent_hugepage/enabled"),
        "sh: /sys/kernel/mm/transparent_hugepage/enabled: Invalid argument\n"
    );
    let cats: Vec<&str> = out.split("# cat /etc/notes\n").skip(1).map(|b| b.split("# ").next().unwrap_or("")).collect();
    assert_eq!(cats, ["one two\nthree\n", "again\n"], "appended, then truncated: {out}");
    assert_eq!(section(out, script, "echo x > /nodir/y"), "sh: /nodir/y: No such file or directory\n");
    assert_eq!(section(out, script, "echo 1 >"), "echo: usage: echo WORDS [> FILE | >> FILE]\n");
}
