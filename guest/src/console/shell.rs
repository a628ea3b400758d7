//! The interactive console shell (`shell` on the command line, `vmm run
//! --shell`): a line editor on the serial console and a few commands for
//! looking at the system — ls, cat (files and /proc), free, meminfo,
//! vmstat, buddyinfo, ps — and for running the initramfs's programs by
//! name with arguments (started as children of the kernel, waited for,
//! their exit status reported). It runs in the kernel, between programs,
//! like a boot monitor; the programs run in ring 3 as /init would.

use crate::fmt::Dec;
use crate::fs;
use crate::proc::sched;
use crate::{kprint, kprintln};
use alloc::string::String;
use alloc::vec::Vec;

/// Longest command line.
const LINE_MAX: usize = 256;

/// Reads a line with echo and editing: Backspace/Delete erase a
/// character, Ctrl-U the line, Ctrl-C abandons it; Enter (CR or LF; a
/// CR LF pair counts once) ends it. None on Ctrl-D at an empty line.
fn read_line(prev_cr: &mut bool) -> Option<String> {
    let mut line = Vec::new();
    loop {
        let b = crate::console::serial::read_byte();
        if b == b'\n' && *prev_cr {
            *prev_cr = false;
            continue;
        }
        *prev_cr = b == b'\r';
        match b {
            b'\r' | b'\n' => {
                kprintln!();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            0x04 if line.is_empty() => {
                kprintln!();
                return None;
            }
            0x7f | 0x08 if line.pop().is_some() => kprint!("\x08 \x08"),
            0x15 => {
                for _ in 0..line.len() {
                    kprint!("\x08 \x08");
                }
                line.clear();
            }
            0x03 => {
                kprintln!("^C");
                line.clear();
                kprint!("# ");
            }
            0x20..=0x7e if line.len() < LINE_MAX => {
                line.push(b);
                kprint!("{}", b as char);
            }
            _ => {}
        }
    }
}

/// Prints bytes that may not be UTF-8 (a file's contents).
fn put_bytes(b: &[u8]) {
    for chunk in b.utf8_chunks() {
        kprint!("{}", chunk.valid());
        if !chunk.invalid().is_empty() {
            kprint!("?");
        }
    }
}

fn cat(path: &str) {
    let abs = fs::normalize(path);
    if fs::procfs::is_proc(&abs) {
        match fs::procfs::open(&abs, false).as_deref() {
            Ok(fs::procfs::ProcFile::Text(t))
            | Ok(fs::procfs::ProcFile::Sysctl(_, t))
            | Ok(fs::procfs::ProcFile::OomScoreAdj(_, t))
            | Ok(fs::procfs::ProcFile::MakeItFail(_, t)) => put_bytes(t),
            Ok(_) => kprintln!("cat: {}: not a text file", path),
            Err(_) => kprintln!("cat: {}: No such file or directory", path),
        }
        return;
    }
    let Some((ino, inode)) = fs::lookup(&abs) else {
        kprintln!("cat: {}: No such file or directory", path);
        return;
    };
    if inode.is_dir() {
        kprintln!("cat: {}: Is a directory", path);
        return;
    }
    let mut buf = alloc::vec![0u8; 4096];
    let mut off = 0u64;
    loop {
        let n = fs::pagecache::read(ino, off, &mut buf);
        if n == 0 {
            break;
        }
        put_bytes(&buf[..n]);
        off += n as u64;
    }
}

fn ls(path: &str) {
    let abs = fs::normalize(path);
    let entries: Vec<(String, u32)> = if fs::procfs::is_proc(&abs) {
        match fs::procfs::open(&abs, false).as_deref() {
            Ok(fs::procfs::ProcFile::Dir(e)) => e.clone(),
            _ => {
                kprintln!("ls: {}: not a directory", path);
                return;
            }
        }
    } else {
        match fs::lookup(&abs) {
            Some((_, i)) if i.is_dir() => fs::dir_entries(&abs).into_iter().map(|(_, n, m)| (n, m)).collect(),
            Some(_) => alloc::vec![(String::from(path), fs::S_IFREG)],
            None => {
                kprintln!("ls: {}: No such file or directory", path);
                return;
            }
        }
    };
    for (name, mode) in entries {
        let mark = match mode & fs::S_IFMT {
            fs::S_IFDIR => "/",
            fs::S_IFLNK => "@",
            _ if mode & 0o111 != 0 => "*",
            _ => "",
        };
        kprintln!("{}{}", name, mark);
    }
}

fn ps() {
    kprintln!("  PID  PPID S NAME");
    for pid in sched::pids() {
        if let Some((name, ppid, st)) = sched::with_task(pid, |t| (t.name, t.parent, t.state)) {
            let s = match st {
                sched::State::Runnable => "R",
                sched::State::Waiting => "S",
                sched::State::Zombie(_) => "Z",
            };
            kprintln!("{} {} {} {}", Dec(pid), Dec(ppid), s, name);
        }
    }
}

/// Runs the initramfs program `words[0]` (a path, or a name looked up in
/// /, /bin and /sbin) with `words` as its argv and waits for it.
fn run_program(words: &[&str]) {
    let name = words[0];
    let path = if name.contains('/') {
        Some(fs::normalize(name))
    } else {
        ["/", "/bin/", "/sbin/"]
            .iter()
            .map(|d| alloc::format!("{}{}", d, name))
            .find(|p| fs::lookup(p).is_some_and(|(_, i)| !i.is_dir()))
    };
    let Some(path) = path.filter(|p| fs::lookup(p).is_some()) else {
        kprintln!("{}: command not found (`help` lists the commands)", name);
        return;
    };
    let envp = ["HOME=/", "TERM=linux", "PATH=/sbin:/bin:/usr/sbin:/usr/bin"];
    let pid = match crate::proc::exec::spawn(&path, words, &envp) {
        Ok(pid) => pid,
        Err(e) => {
            kprintln!("{}: cannot run: {}", name, e);
            return;
        }
    };
    match sched::kernel_wait(pid) {
        Some(st) if st & 0x7f == 0 => {
            let code = (st >> 8) & 0xff;
            if code != 0 {
                kprintln!("[{} exited with status {}]", name, Dec(code));
            }
        }
        Some(st) => kprintln!("[{} killed by signal {}]", name, Dec(st & 0x7f)),
        None => kprintln!("[{}: lost]", name),
    }
}

fn help() {
    kprintln!("commands: ls [DIR], cat FILE, free, meminfo, vmstat, buddyinfo, ps, echo WORDS,");
    kprintln!("          drop_caches, help, exit [N] (or poweroff, Ctrl-D);");
    kprintln!("          anything else runs the initramfs program of that name (/, /bin, /sbin) with its arguments");
}

/// Runs the shell until `exit`; the status to power off with.
pub fn run() -> u32 {
    kprintln!("mmemu shell: `help` lists the commands; `exit` powers off");
    let mut prev_cr = false;
    loop {
        kprint!("# ");
        let Some(line) = read_line(&mut prev_cr) else { return 0 };
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&cmd) = words.first() else { continue };
        match cmd {
            "exit" | "poweroff" => {
                return words.get(1).and_then(|w| crate::fmt::parse_u64(w)).map_or(0, |n| (n & 0xff) as u32);
            }
            "help" => help(),
            "ls" => ls(words.get(1).copied().unwrap_or("/")),
            "cat" if words.len() > 1 => words[1..].iter().for_each(|p| cat(p)),
            "free" => crate::mm::procfs::free(),
            "meminfo" => crate::mm::procfs::meminfo(),
            "vmstat" => cat("/proc/vmstat"),
            "buddyinfo" => crate::mm::procfs::buddyinfo(),
            "numactl" => crate::mm::numa::hardware(),
            "ps" => ps(),
            "drop_caches" => kprintln!("{} pages dropped", Dec(fs::pagecache::drop_caches())),
            "echo" => kprintln!("{}", words[1..].join(" ")),
            _ => run_program(&words),
        }
    }
}
