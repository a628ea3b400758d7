//! The built-in shell (`vmm run --shell`): a ring-3 program that speaks
//! only Linux's system-call ABI (read, write, open, getdents64,
//! newfstatat, fork, execve, wait4, sysinfo, exit_group), reads a line at
//! a time from fd 0 (echoing and editing it itself: the console has no
//! line discipline), and shows the views people know the way the procps
//! tools compute them, from the same /proc files: free, vmstat, slabtop,
//! ps, top (one snapshot), pmap PID, buddyinfo; plus cat, ls, echo,
//! meminfo, drop_caches, help, exit [N] (echo with `> FILE` or `>> FILE`
//! writes the line to FILE). Any other word runs the
//! initramfs program of that name (a path, or a name in /, /bin, /sbin)
//! with fork + execve + wait4.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;
use ulib::{entry, syscall3, syscall6, write};

entry!(main);

// Linux x86-64 system-call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
const SYS_READ: u64 = 0;
const SYS_CLOSE: u64 = 3;
const SYS_EXECVE: u64 = 59;
const SYS_SYSINFO: u64 = 99;
const SYS_GETDENTS64: u64 = 217;
const SYS_OPENAT: u64 = 257;
const SYS_NEWFSTATAT: u64 = 262;
const AT_FDCWD: u64 = -100i64 as u64;
const O_RDONLY: u64 = 0;
const O_WRONLY: u64 = 1;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const O_APPEND: u64 = 0o2000;
const O_DIRECTORY: u64 = 0o200000;
const O_CLOEXEC: u64 = 0o2000000;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
/// Longest command line.
const LINE_MAX: usize = 256;

/// The environment programs run with: the shell's own.
fn envp() -> *const *const u8 {
    ulib::envp()
}

/// Output, buffered per command so a view leaves in few writes (each
/// write is a trip through the kernel).
struct Out(String);

impl Out {
    fn flush(&mut self) {
        let mut b = self.0.as_bytes();
        while !b.is_empty() {
            let n = write(1, b);
            if n <= 0 {
                break;
            }
            b = &b[n as usize..];
        }
        self.0.clear();
    }
}

impl core::fmt::Write for Out {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.push_str(s);
        if self.0.len() >= 4096 {
            self.flush();
        }
        Ok(())
    }
}

/// Linux's message for errno `e` (strerror), for the ones a shell meets.
fn strerror(e: i64) -> &'static str {
    match -e {
        1 => "Operation not permitted",
        2 => "No such file or directory",
        8 => "Exec format error",
        9 => "Bad file descriptor",
        12 => "Cannot allocate memory",
        13 => "Permission denied",
        14 => "Bad address",
        17 => "File exists",
        20 => "Not a directory",
        21 => "Is a directory",
        22 => "Invalid argument",
        36 => "File name too long",
        38 => "Function not implemented",
        _ => "Unknown error",
    }
}

/// A NUL-terminated copy of `s`.
fn c(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

fn open(path: &str, flags: u64) -> i64 {
    let p = c(path);
    // rw-r--r-- for a file O_CREAT makes.
    syscall6(SYS_OPENAT, [AT_FDCWD, p.as_ptr() as u64, flags | O_CLOEXEC, 0o644, 0, 0])
}

fn close(fd: i64) {
    syscall3(SYS_CLOSE, fd as u64, 0, 0);
}

/// The whole contents of `path` (read until EOF, as cat does), or -errno.
fn read_file(path: &str) -> Result<Vec<u8>, i64> {
    let fd = open(path, O_RDONLY);
    if fd < 0 {
        return Err(fd);
    }
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = syscall3(SYS_READ, fd as u64, buf.as_mut_ptr() as u64, buf.len() as u64);
        if n < 0 {
            close(fd);
            return Err(n);
        }
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n as usize]);
    }
    close(fd);
    Ok(data)
}

/// `path`'s text, or a message on `out` naming `who` and None.
fn read_text(out: &mut Out, who: &str, path: &str) -> Option<String> {
    match read_file(path) {
        Ok(d) => Some(String::from_utf8_lossy(&d).into_owned()),
        Err(e) => {
            let _ = writeln!(out, "{}: {}: {}", who, path, strerror(e));
            None
        }
    }
}

/// `newfstatat`'s st_mode of `path`, or -errno.
fn stat_mode(path: &str, flags: u64) -> Result<u32, i64> {
    let p = c(path);
    // struct stat is 144 bytes on x86-64; st_mode is the u32 at 24.
    let mut st = [0u64; 18];
    let r = syscall6(SYS_NEWFSTATAT, [AT_FDCWD, p.as_ptr() as u64, st.as_mut_ptr() as u64, flags, 0, 0]);
    if r < 0 {
        Err(r)
    } else {
        Ok(st[3] as u32)
    }
}

/// The entries of directory `path` (names, without . and ..), sorted, or
/// -errno: getdents64's `struct linux_dirent64` records.
fn list_dir(path: &str) -> Result<Vec<String>, i64> {
    let fd = open(path, O_RDONLY | O_DIRECTORY);
    if fd < 0 {
        return Err(fd);
    }
    let mut names = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = syscall3(SYS_GETDENTS64, fd as u64, buf.as_mut_ptr() as u64, buf.len() as u64);
        if n < 0 {
            close(fd);
            return Err(n);
        }
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 <= n as usize {
            // d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
            let reclen = u16::from_le_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name = &buf[off + 19..(off + reclen).min(n as usize)];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if name != b"." && name != b".." {
                names.push(String::from_utf8_lossy(name).into_owned());
            }
            off += reclen;
        }
    }
    close(fd);
    names.sort();
    Ok(names)
}

/// `path/name` without doubling the slash.
fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{}{}", dir, name)
    } else {
        format!("{}/{}", dir, name)
    }
}

fn ls(out: &mut Out, path: &str) {
    let names = match list_dir(path) {
        Ok(n) => n,
        // A file names itself, as ls does.
        Err(-20) => {
            let _ = writeln!(out, "{}", path);
            return;
        }
        Err(e) => {
            let _ = writeln!(out, "ls: cannot access '{}': {}", path, strerror(e));
            return;
        }
    };
    for name in names {
        // ls -F's marks: / directory, @ symlink, * executable.
        let mark = match stat_mode(&join(path, &name), AT_SYMLINK_NOFOLLOW) {
            Ok(m) if m & S_IFMT == S_IFDIR => "/",
            Ok(m) if m & S_IFMT == S_IFLNK => "@",
            Ok(m) if m & 0o111 != 0 => "*",
            _ => "",
        };
        let _ = writeln!(out, "{}{}", name, mark);
    }
}

fn cat(out: &mut Out, path: &str) {
    match read_file(path) {
        Ok(d) => {
            out.flush();
            write(1, &d);
        }
        Err(e) => {
            let _ = writeln!(out, "cat: {}: {}", path, strerror(e));
        }
    }
}

/// `Key: value ...` lines (meminfo, PID/status): the first number after
/// the key.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `Key: text` of a PID/status line.
fn field_str<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// /proc/meminfo's figures as procps's free and top compute them (KiB).
struct Mem {
    total: u64,
    free: u64,
    used: u64,
    shared: u64,
    buff_cache: u64,
    available: u64,
    swap_total: u64,
    swap_free: u64,
}

fn mem(out: &mut Out, who: &str) -> Option<Mem> {
    let m = read_text(out, who, "/proc/meminfo")?;
    let g = |k: &str| field(&m, k).unwrap_or(0);
    let total = g("MemTotal");
    let free = g("MemFree");
    let buff_cache = g("Buffers") + g("Cached") + g("SReclaimable");
    // procps: used = total - free - buffers - cache (never negative);
    // available falls back to free where the kernel has no MemAvailable.
    let used = total.saturating_sub(free + buff_cache);
    let available = field(&m, "MemAvailable").unwrap_or(free);
    Some(Mem {
        total,
        free,
        used,
        shared: g("Shmem"),
        buff_cache,
        available,
        swap_total: g("SwapTotal"),
        swap_free: g("SwapFree"),
    })
}

/// free [-k|-m]: procps's free from /proc/meminfo.
fn free(out: &mut Out, args: &[&str]) {
    let shift = match args.first().copied() {
        None | Some("-k") => 0,
        Some("-m") => 10,
        Some(o) => {
            let _ = writeln!(out, "free: unknown option '{}' (-k KiB, -m MiB)", o);
            return;
        }
    };
    let Some(m) = mem(out, "free") else { return };
    let _ = writeln!(out, "               total        used        free      shared  buff/cache   available");
    let _ = writeln!(
        out,
        "Mem:    {:>12} {:>11} {:>11} {:>11} {:>11} {:>11}",
        m.total >> shift,
        m.used >> shift,
        m.free >> shift,
        m.shared >> shift,
        m.buff_cache >> shift,
        m.available >> shift
    );
    let _ = writeln!(
        out,
        "Swap:   {:>12} {:>11} {:>11}",
        m.swap_total >> shift,
        (m.swap_total - m.swap_free.min(m.swap_total)) >> shift,
        m.swap_free >> shift
    );
}

/// `sysinfo(2)`: (uptime in seconds, the three loads, procs).
fn sysinfo() -> (u64, [u64; 3], u64) {
    // struct sysinfo: uptime (long), loads[3] (unsigned long), totalram,
    // freeram, sharedram, bufferram, totalswap, freeswap (unsigned long),
    // procs (u16), ... 112 bytes on x86-64.
    let mut si = [0u64; 14];
    if syscall3(SYS_SYSINFO, si.as_mut_ptr() as u64, 0, 0) < 0 {
        return (0, [0; 3], 0);
    }
    (si[0], [si[1], si[2], si[3]], si[10] & 0xffff)
}

/// One process as /proc/PID/status and cmdline show it.
struct Proc {
    pid: u64,
    ppid: u64,
    name: String,
    state: char,
    vsz: u64,
    rss: u64,
    shr: u64,
    swap: u64,
}

/// Every process whose /proc/PID/status can be read, by pid; kernel
/// threads (an empty cmdline) named in brackets as procps does.
fn procs() -> Vec<Proc> {
    let mut v = Vec::new();
    for name in list_dir("/proc").unwrap_or_default() {
        let Ok(pid) = name.parse::<u64>() else { continue };
        let Ok(st) = read_file(&format!("/proc/{}/status", pid)) else { continue };
        let st = String::from_utf8_lossy(&st);
        let comm = field_str(&st, "Name").unwrap_or("?");
        let kthread = read_file(&format!("/proc/{}/cmdline", pid)).is_ok_and(|c| c.is_empty());
        v.push(Proc {
            pid,
            ppid: field(&st, "PPid").unwrap_or(0),
            name: if kthread { format!("[{}]", comm) } else { String::from(comm) },
            state: field_str(&st, "State").and_then(|s| s.chars().next()).unwrap_or('?'),
            vsz: field(&st, "VmSize").unwrap_or(0),
            rss: field(&st, "VmRSS").unwrap_or(0),
            shr: field(&st, "RssFile").unwrap_or(0) + field(&st, "RssShmem").unwrap_or(0),
            swap: field(&st, "VmSwap").unwrap_or(0),
        });
    }
    v.sort_by_key(|p| p.pid);
    v
}

/// ps: `ps -eo pid,ppid,stat,vsz,rss,comm` from /proc/PID/status.
fn ps(out: &mut Out) {
    let _ = writeln!(out, "    PID    PPID STAT    VSZ   RSS COMMAND");
    for p in procs() {
        let _ = writeln!(out, "{:>7} {:>7} {:<4} {:>6} {:>5} {}", p.pid, p.ppid, p.state, p.vsz, p.rss, p.name);
    }
}

/// top, one snapshot (`top -b -n 1`): the summary from sysinfo and
/// /proc/meminfo, the tasks from /proc/PID/status, biggest RES first.
/// No %CPU or TIME+ columns: the kernel does not account CPU time.
fn top(out: &mut Out) {
    let (up, loads, _) = sysinfo();
    let Some(m) = mem(out, "top") else { return };
    let mut ps = procs();
    let load = |l: u64| {
        // SI_LOAD_SHIFT: 16 fraction bits; two decimals.
        let hundredths = (l * 100 + (1 << 15)) >> 16;
        format!("{}.{:02}", hundredths / 100, hundredths % 100)
    };
    let _ = writeln!(
        out,
        "top - up {}:{:02},  load average: {}, {}, {}",
        up / 3600,
        (up / 60) % 60,
        load(loads[0]),
        load(loads[1]),
        load(loads[2])
    );
    let count = |c: char| ps.iter().filter(|p| p.state == c).count();
    let _ = writeln!(
        out,
        "Tasks: {:>3} total, {:>3} running, {:>3} sleeping, {:>3} stopped, {:>3} zombie",
        ps.len(),
        count('R'),
        count('S') + count('D'),
        count('T'),
        count('Z')
    );
    let mib = |k: u64| format!("{}.{}", k / 1024, (k % 1024) * 10 / 1024);
    let _ = writeln!(
        out,
        "MiB Mem : {:>8} total, {:>8} free, {:>8} used, {:>8} buff/cache",
        mib(m.total),
        mib(m.free),
        mib(m.used),
        mib(m.buff_cache)
    );
    let _ = writeln!(
        out,
        "MiB Swap: {:>8} total, {:>8} free, {:>8} used. {:>8} avail Mem",
        mib(m.swap_total),
        mib(m.swap_free),
        mib(m.swap_total.saturating_sub(m.swap_free)),
        mib(m.available)
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "    PID USER      PR  NI    VIRT    RES    SHR   SWAP S  %MEM COMMAND");
    ps.sort_by(|a, b| b.rss.cmp(&a.rss).then(a.pid.cmp(&b.pid)));
    for p in ps {
        let permille = (p.rss * 1000).checked_div(m.total).unwrap_or(0);
        let _ = writeln!(
            out,
            "{:>7} root      20   0 {:>7} {:>6} {:>6} {:>6} {} {:>3}.{} {}",
            p.pid,
            p.vsz,
            p.rss,
            p.shr,
            p.swap,
            p.state,
            permille / 10,
            permille % 10,
            p.name
        );
    }
}

/// pmap PID: procps's pmap from /proc/PID/maps and cmdline.
fn pmap(out: &mut Out, args: &[&str]) {
    let Some(pid) = args.first().and_then(|a| if *a == "self" { Some(ulib::getpid()) } else { a.parse().ok() }) else {
        let _ = writeln!(out, "pmap: usage: pmap PID");
        return;
    };
    let maps = match read_file(&format!("/proc/{}/maps", pid)) {
        Ok(m) => String::from_utf8_lossy(&m).into_owned(),
        Err(_) => {
            let _ = writeln!(out, "pmap: {}: no such process (or no address space)", pid);
            return;
        }
    };
    let mut cmd = read_file(&format!("/proc/{}/cmdline", pid)).unwrap_or_default();
    while cmd.last() == Some(&0) {
        cmd.pop();
    }
    cmd.iter_mut().filter(|b| **b == 0).for_each(|b| *b = b' ');
    let _ = writeln!(out, "{}:   {}", pid, String::from_utf8_lossy(&cmd));
    let mut total = 0u64;
    for l in maps.lines() {
        // start-end perms offset dev inode [path]
        let mut w = l.split_whitespace();
        let (Some(range), Some(perms)) = (w.next(), w.next()) else { continue };
        let path = w.nth(3).unwrap_or("");
        let Some((s, e)) = range.split_once('-') else { continue };
        let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) else { continue };
        let p = perms.as_bytes();
        let mode: String = [p[0], p[1], p[2], if p.get(3) == Some(&b's') { b's' } else { b'-' }, b'-']
            .iter()
            .map(|&b| b as char)
            .collect();
        let name = match path {
            "" => String::from("  [ anon ]"),
            "[stack]" => String::from("  [ stack ]"),
            p if p.starts_with('[') => format!("  [ {} ]", p.trim_matches(|c| c == '[' || c == ']')),
            p => String::from(p.rsplit('/').next().unwrap_or(p)),
        };
        let _ = writeln!(out, "{:016x} {:>6}K {} {}", s, (e - s) >> 10, mode, name);
        total += (e - s) >> 10;
    }
    let _ = writeln!(out, " total {:>16}K", total);
}

/// buddyinfo: /proc/buddyinfo with a header of block sizes and each
/// zone's free memory (the sum of its blocks).
fn buddyinfo(out: &mut Out) {
    let Some(t) = read_text(out, "buddyinfo", "/proc/buddyinfo") else { return };
    let _ = writeln!(out, "Free blocks per order (order n: 4 KiB << n); the last column sums them:");
    for l in t.lines() {
        // "Node 0, zone   Normal  c0 c1 ... c10"
        let counts: Vec<u64> = l.split_whitespace().skip(4).filter_map(|w| w.parse().ok()).collect();
        let kib: u64 = counts.iter().enumerate().map(|(o, &n)| n * (4 << o)).sum();
        let _ = writeln!(out, "{}  = {} kB", l, kib);
    }
}

/// vmstat: procps's first line (memory now, swap rates averaged since
/// boot) from /proc/meminfo, /proc/vmstat and sysinfo's uptime. Only
/// the columns whose sources exist: no /proc/stat, so no io, system or
/// cpu groups.
fn vmstat(out: &mut Out) {
    let Some(m) = read_text(out, "vmstat", "/proc/meminfo") else { return };
    let Some(v) = read_text(out, "vmstat", "/proc/vmstat") else { return };
    let g = |k: &str| field(&m, k).unwrap_or(0);
    let ev =
        |k: &str| v.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix(' ')?.trim().parse::<u64>().ok()).unwrap_or(0);
    let (up, _, _) = sysinfo();
    let up = up.max(1);
    let ps = procs();
    let r = ps.iter().filter(|p| p.state == 'R').count();
    let b = ps.iter().filter(|p| p.state == 'D').count();
    let _ = writeln!(out, "procs -----------memory---------- ---swap--");
    let _ = writeln!(out, " r  b   swpd   free   buff  cache   si   so");
    let _ = writeln!(
        out,
        "{:>2} {:>2} {:>6} {:>6} {:>6} {:>6} {:>4} {:>4}",
        r,
        b,
        g("SwapTotal").saturating_sub(g("SwapFree")),
        g("MemFree"),
        g("Buffers"),
        g("Cached") + g("SReclaimable"),
        ev("pswpin") * 4 / up,
        ev("pswpout") * 4 / up
    );
}

/// One /proc/slabinfo (version 2.1) cache.
struct Slab {
    name: String,
    active: u64,
    objs: u64,
    size: u64,
    per_slab: u64,
    pages_per_slab: u64,
    active_slabs: u64,
    slabs: u64,
}

/// slabtop, one snapshot (`slabtop -o`): the summary and the caches by
/// object count, from /proc/slabinfo.
fn slabtop(out: &mut Out) {
    let Some(t) = read_text(out, "slabtop", "/proc/slabinfo") else { return };
    let mut caches = Vec::new();
    for l in t.lines().filter(|l| !l.starts_with('#') && !l.starts_with("slabinfo")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        // name active_objs num_objs objsize objperslab pagesperslab :
        // tunables a b c : slabdata active_slabs num_slabs sharedavail
        let n = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let Some(sd) = w.iter().position(|s| *s == "slabdata") else { continue };
        caches.push(Slab {
            name: String::from(w[0]),
            active: n(1),
            objs: n(2),
            size: n(3),
            per_slab: n(4),
            pages_per_slab: n(5),
            active_slabs: n(sd + 1),
            slabs: n(sd + 2),
        });
    }
    let sum = |f: fn(&Slab) -> u64| caches.iter().map(f).sum::<u64>();
    let (active, objs) = (sum(|c| c.active), sum(|c| c.objs));
    let (aslabs, slabs) = (sum(|c| c.active_slabs), sum(|c| c.slabs));
    let used_caches = caches.iter().filter(|c| c.active > 0).count();
    let (asize, tsize) = (sum(|c| c.active * c.size), sum(|c| c.objs * c.size));
    let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 * 100.0 / b as f64 };
    let k = |b: u64| b as f64 / 1024.0;
    let _ = writeln!(out, " Active / Total Objects (% used)    : {} / {} ({:.1}%)", active, objs, pct(active, objs));
    let _ = writeln!(out, " Active / Total Slabs (% used)      : {} / {} ({:.1}%)", aslabs, slabs, pct(aslabs, slabs));
    let _ = writeln!(
        out,
        " Active / Total Caches (% used)     : {} / {} ({:.1}%)",
        used_caches,
        caches.len(),
        pct(used_caches as u64, caches.len() as u64)
    );
    let _ = writeln!(
        out,
        " Active / Total Size (% used)       : {:.2}K / {:.2}K ({:.1}%)",
        k(asize),
        k(tsize),
        pct(asize, tsize)
    );
    let sizes = caches.iter().map(|c| c.size);
    let (min, max) = (sizes.clone().min().unwrap_or(0), sizes.max().unwrap_or(0));
    let avg = if objs == 0 { 0.0 } else { tsize as f64 / objs as f64 };
    let _ =
        writeln!(out, " Minimum / Average / Maximum Object : {:.2}K / {:.2}K / {:.2}K", k(min), avg / 1024.0, k(max));
    let _ = writeln!(out);
    let _ = writeln!(out, "  OBJS ACTIVE  USE OBJ SIZE  SLABS OBJ/SLAB CACHE SIZE NAME");
    caches.sort_by(|a, b| b.objs.cmp(&a.objs).then(a.name.cmp(&b.name)));
    for c in caches {
        let _ = writeln!(
            out,
            "{:>6} {:>6} {:>3.0}% {:>7.2}K {:>6} {:>8} {:>9}K {}",
            c.objs,
            c.active,
            pct(c.active, c.objs),
            k(c.size),
            c.slabs,
            c.per_slab,
            c.slabs * c.pages_per_slab * 4,
            c.name
        );
    }
}

/// drop_caches: `echo 3 > /proc/sys/vm/drop_caches`, and what it freed
/// (MemFree before and after).
fn drop_caches(out: &mut Out) {
    let before = mem(out, "drop_caches").map_or(0, |m| m.free);
    let fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    let r = if fd < 0 { fd } else { write(fd as u64, b"3\n") };
    if fd >= 0 {
        close(fd);
    }
    if r < 0 {
        let _ = writeln!(out, "drop_caches: /proc/sys/vm/drop_caches: {}", strerror(r));
        return;
    }
    let after = mem(out, "drop_caches").map_or(0, |m| m.free);
    let _ = writeln!(out, "MemFree: {} kB -> {} kB", before, after);
}

/// `echo WORDS`, or with `> FILE` / `>> FILE` (also written `>FILE`,
/// `>>FILE`) the line goes to FILE, truncated or appended to, as a shell
/// redirection does: how tunables are set by hand, e.g. `echo 1 >
/// /proc/sys/vm/compact_memory` or `echo never >
/// /sys/kernel/mm/transparent_hugepage/enabled`. The file's write error
/// (EINVAL for a bad value, EACCES for a read-only file) is printed.
fn echo(out: &mut Out, args: &[&str]) {
    let Some(at) = args.iter().position(|a| a.starts_with('>')) else {
        let _ = writeln!(out, "{}", args.join(" "));
        return;
    };
    let op = args[at];
    let append = op.starts_with(">>");
    let inline = op.trim_start_matches('>');
    let (target, rest) = if inline.is_empty() { (args.get(at + 1).copied(), at + 2) } else { (Some(inline), at + 1) };
    let Some(target) = target.filter(|_| rest == args.len()) else {
        let _ = writeln!(out, "echo: usage: echo WORDS [> FILE | >> FILE]");
        return;
    };
    let mut line = args[..at].join(" ");
    line.push('\n');
    let flags = O_WRONLY | O_CREAT | if append { O_APPEND } else { O_TRUNC };
    let fd = open(target, flags);
    let r = if fd < 0 { fd } else { write(fd as u64, line.as_bytes()) };
    if fd >= 0 {
        close(fd);
    }
    if r < 0 {
        let _ = writeln!(out, "sh: {}: {}", target, strerror(r));
    }
}

/// Runs the initramfs program `words[0]` (a path, or a name looked up in
/// /, /bin and /sbin) with `words` as its argv: fork, execve, wait4.
fn run_program(out: &mut Out, words: &[&str]) {
    let name = words[0];
    let path = if name.contains('/') {
        Some(String::from(name))
    } else {
        ["/", "/bin/", "/sbin/"]
            .iter()
            .map(|d| format!("{}{}", d, name))
            .find(|p| stat_mode(p, 0).is_ok_and(|m| m & S_IFMT != S_IFDIR))
    };
    let Some(path) = path.filter(|p| stat_mode(p, 0).is_ok()) else {
        let _ = writeln!(out, "{}: command not found (`help` lists the commands)", name);
        return;
    };
    out.flush();
    let cpath = c(&path);
    let cargs: Vec<Vec<u8>> = words.iter().map(|w| c(w)).collect();
    let mut argv: Vec<*const u8> = cargs.iter().map(|a| a.as_ptr()).collect();
    argv.push(core::ptr::null());
    let pid = ulib::fork();
    if pid < 0 {
        let _ = writeln!(out, "{}: fork: {}", name, strerror(pid));
        return;
    }
    if pid == 0 {
        let e = syscall3(SYS_EXECVE, cpath.as_ptr() as u64, argv.as_ptr() as u64, envp() as u64);
        let mut o = Out(String::new());
        let _ = writeln!(o, "{}: cannot run: {}", name, strerror(e));
        o.flush();
        ulib::exit(127);
    }
    let (r, st) = ulib::wait(pid);
    if r < 0 {
        let _ = writeln!(out, "[{}: wait4: {}]", name, strerror(r));
    } else if st & 0x7f == 0 {
        let code = (st >> 8) & 0xff;
        if code != 0 {
            let _ = writeln!(out, "[{} exited with status {}]", name, code);
        }
    } else {
        let _ = writeln!(out, "[{} killed by signal {}]", name, st & 0x7f);
    }
}

fn help(out: &mut Out) {
    let _ = writeln!(
        out,
        "commands: free [-m], vmstat, slabtop, ps, top, pmap PID, buddyinfo, meminfo,\n\
         \x20         cat FILE..., ls [DIR], echo WORDS [> FILE], drop_caches, help, exit [N] (or Ctrl-D);\n\
         \x20         anything else runs the initramfs program of that name (a path, or /, /bin, /sbin)\n\
         \x20         with its arguments. The views read /proc as procps does."
    );
}

/// Reads one byte of fd 0; None at end of input or on an error.
fn getc() -> Option<u8> {
    let mut b = 0u8;
    match syscall3(SYS_READ, 0, &mut b as *mut u8 as u64, 1) {
        1 => Some(b),
        _ => None,
    }
}

/// Reads a line with echo and editing: Backspace/Delete erase a
/// character, Ctrl-U the line, Ctrl-C abandons it; Enter (CR or LF; a
/// CR LF pair counts once) ends it. None on Ctrl-D at an empty line or
/// at the end of input.
fn read_line(prev_cr: &mut bool) -> Option<String> {
    let mut line: Vec<u8> = Vec::new();
    loop {
        let b = getc()?;
        if b == b'\n' && *prev_cr {
            *prev_cr = false;
            continue;
        }
        *prev_cr = b == b'\r';
        match b {
            b'\r' | b'\n' => {
                write(1, b"\n");
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            0x04 if line.is_empty() => {
                write(1, b"\n");
                return None;
            }
            0x7f | 0x08 if line.pop().is_some() => {
                write(1, b"\x08 \x08");
            }
            0x15 => {
                for _ in 0..line.len() {
                    write(1, b"\x08 \x08");
                }
                line.clear();
            }
            0x03 => {
                write(1, b"^C\n# ");
                line.clear();
            }
            0x20..=0x7e if line.len() < LINE_MAX => {
                line.push(b);
                write(1, &[b]);
            }
            _ => {}
        }
    }
}

fn main(_arg: u64) -> i32 {
    let mut out = Out(String::new());
    let _ = writeln!(out, "mmemu sh (ring 3, pid {}): `help` lists the commands; `exit` powers off", ulib::getpid());
    out.flush();
    let mut prev_cr = false;
    loop {
        write(1, b"# ");
        let Some(line) = read_line(&mut prev_cr) else { return 0 };
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&cmd) = words.first() else { continue };
        let args = &words[1..];
        match cmd {
            "exit" | "poweroff" => {
                let code = match args.first() {
                    None => 0,
                    Some(a) => match a.parse::<u32>() {
                        Ok(n) => (n & 0xff) as i32,
                        Err(_) => {
                            let _ = writeln!(out, "exit: {}: numeric argument required", a);
                            out.flush();
                            continue;
                        }
                    },
                };
                return code;
            }
            "help" => help(&mut out),
            "ls" if args.is_empty() => ls(&mut out, "/"),
            "ls" => args.iter().for_each(|p| ls(&mut out, p)),
            "cat" if args.is_empty() => {
                let _ = writeln!(out, "cat: usage: cat FILE...");
            }
            "cat" => args.iter().for_each(|p| cat(&mut out, p)),
            "free" => free(&mut out, args),
            "meminfo" => cat(&mut out, "/proc/meminfo"),
            "vmstat" => vmstat(&mut out),
            "slabtop" => slabtop(&mut out),
            "buddyinfo" => buddyinfo(&mut out),
            "ps" => ps(&mut out),
            "top" => top(&mut out),
            "pmap" => pmap(&mut out, args),
            "drop_caches" => drop_caches(&mut out),
            "echo" => echo(&mut out, args),
            _ => run_program(&mut out, &words),
        }
        out.flush();
    }
}
