//! The interactive console (`vmm run --shell`): the guest's shell driven
//! through a pipe (a script) and through a pseudo-terminal (the VMM puts
//! it in raw mode while attached and restores it on exit, by `exit` and
//! by the Ctrl-A x escape). The shell lists and cats files, shows /proc,
//! and runs a program of the initramfs (built now with gcc -static and
//! musl-gcc -static) with arguments.

mod common;

use common::{vmm_path, vmm_with_input, Scratch};
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
