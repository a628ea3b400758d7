//! The cgroup v2 file system at /sys/fs/cgroup, with the memory
//! controller's files (mm/memcg.rs holds the groups): the root directory
//! is the root group; `mkdir NAME` there (or in a group) makes a child
//! group, `rmdir` removes an empty one. A group's directory has
//! cgroup.procs (read: its processes; write a pid: move that process
//! there), cgroup.controllers, cgroup.subtree_control, memory.current,
//! memory.min/low/high/max (bytes or "max", K/M/G suffixes as Linux's
//! `memparse`), memory.stat and memory.events. Errors are Linux's: EINVAL
//! for a malformed value, ESRCH for an unknown pid, EBUSY for rmdir of a
//! group with processes or children, ENOENT, EEXIST, EACCES for writing a
//! read-only file. Opened files are served as /proc's are (procfs.rs's
//! `ProcFile`): text made at open, writes applied as they come.

use super::procfs::ProcFile;
use crate::fmt::Dec;
use crate::mm::memcg::{self, ChargeKind, MemcgEvent, MAX_MEMCG, PAGE_COUNTER_MAX};
use crate::proc::sched;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use mm_core::addr::PAGE_SIZE;

const ENOENT: i64 = 2;
const ESRCH: i64 = 3;
const EACCES: i64 = 13;
const EEXIST: i64 = 17;
const ENOTDIR: i64 = 20;
const ENODEV: i64 = 19;
const EINVAL: i64 = 22;
const EPERM: i64 = 1;

/// The mount point.
pub const MOUNT: &str = "/sys/fs/cgroup";

const DIR: u32 = super::S_IFDIR | 0o755;
const RO: u32 = super::S_IFREG | 0o444;
const RW: u32 = super::S_IFREG | 0o644;

/// A control file: name, mode, whether the root group has it (Linux's
/// `CFTYPE_NOT_ON_ROOT` files are the limits, current and events).
struct CgFile {
    name: &'static str,
    mode: u32,
    on_root: bool,
}

const FILES: [CgFile; 11] = [
    CgFile { name: "cgroup.procs", mode: RW, on_root: true },
    CgFile { name: "cgroup.controllers", mode: RO, on_root: true },
    CgFile { name: "cgroup.subtree_control", mode: RW, on_root: true },
    CgFile { name: "memory.current", mode: RO, on_root: false },
    CgFile { name: "memory.peak", mode: RO, on_root: false },
    CgFile { name: "memory.min", mode: RW, on_root: false },
    CgFile { name: "memory.low", mode: RW, on_root: false },
    CgFile { name: "memory.high", mode: RW, on_root: false },
    CgFile { name: "memory.max", mode: RW, on_root: false },
    CgFile { name: "memory.stat", mode: RO, on_root: true },
    CgFile { name: "memory.events", mode: RO, on_root: false },
];

/// Groups whose cgroup.subtree_control enables the memory controller
/// (a bit per index; the root's is on, as a systemd host has it).
static SUBTREE_MEMORY: AtomicU64 = AtomicU64::new(1);

/// Whether `path` (normalised) is in this file system (/sys and /sys/fs
/// included: they hold nothing but the mount point).
pub fn is_cgroup(path: &str) -> bool {
    path == "/sys" || path == "/sys/fs" || path == MOUNT || path.starts_with("/sys/fs/cgroup/")
}

/// What `path` names: a group directory, a group's file (index into
/// FILES), or one of /sys, /sys/fs (with the directories they hold).
enum Node {
    Upper(&'static [&'static str]),
    Group(usize),
    File(usize, usize),
}

/// The path below the mount ("" for the root group), if under it.
fn rel(path: &str) -> Option<&str> {
    if path == MOUNT {
        return Some("");
    }
    path.strip_prefix(MOUNT).filter(|r| r.starts_with('/'))
}

fn resolve(path: &str) -> Result<Node, i64> {
    match path {
        // /sys/kernel is sysfs.rs's.
        "/sys" => return Ok(Node::Upper(&["devices", "fs", "kernel"])),
        "/sys/fs" => return Ok(Node::Upper(&["cgroup"])),
        _ => {}
    }
    let r = rel(path).ok_or(-ENOENT)?;
    if let Some(g) = memcg::lookup(r) {
        return Ok(Node::Group(g));
    }
    let (dir, name) = r.rsplit_once('/').ok_or(-ENOENT)?;
    let g = memcg::lookup(dir).ok_or(-ENOENT)?;
    FILES.iter().position(|f| f.name == name && (g != 0 || f.on_root)).map(|i| Node::File(g, i)).ok_or(-ENOENT)
}

/// `st_mode` of `path`, or -ENOENT.
pub fn mode_of(path: &str) -> Result<u32, i64> {
    Ok(match resolve(path)? {
        Node::Upper(_) | Node::Group(_) => DIR,
        Node::File(_, i) => FILES[i].mode,
    })
}

/// Opens `path` (for writing if `write`): a directory's entries or a
/// file's text, made now.
pub fn open(path: &str, write: bool) -> Result<Arc<ProcFile>, i64> {
    match resolve(path)? {
        Node::Upper(children) => {
            Ok(Arc::new(ProcFile::Dir(children.iter().map(|c| (String::from(*c), DIR)).collect())))
        }
        Node::Group(g) => {
            let mut e: Vec<(String, u32)> =
                FILES.iter().filter(|f| g != 0 || f.on_root).map(|f| (String::from(f.name), f.mode)).collect();
            e.extend(memcg::children(g).into_iter().map(|(_, name)| (name, DIR)));
            Ok(Arc::new(ProcFile::Dir(e)))
        }
        Node::File(g, i) => {
            if write && FILES[i].mode & 0o200 == 0 {
                return Err(-EACCES);
            }
            Ok(Arc::new(ProcFile::Cgroup(g, i, text(g, i).into_bytes())))
        }
    }
}

/// A limit in pages as Linux prints it: "max" or bytes.
fn limit_text(s: &mut String, pages: u64) {
    if pages >= PAGE_COUNTER_MAX {
        s.push_str("max\n");
    } else {
        let _ = writeln!(s, "{}", Dec(pages * PAGE_SIZE));
    }
}

/// File `i` of group `g`, as read now.
fn text(g: usize, i: usize) -> String {
    let mut s = String::new();
    match FILES[i].name {
        "cgroup.procs" => {
            for pid in sched::memcg_procs(g as u16) {
                let _ = writeln!(s, "{}", Dec(pid));
            }
        }
        "cgroup.controllers" => s.push_str("memory\n"),
        "cgroup.subtree_control" if SUBTREE_MEMORY.load(Ordering::Relaxed) & (1 << g) != 0 => s.push_str("memory\n"),
        "memory.current" => {
            let _ = writeln!(s, "{}", Dec(memcg::usage(g) * PAGE_SIZE));
        }
        "memory.peak" => {
            let _ = writeln!(s, "{}", Dec(memcg::peak(g) * PAGE_SIZE));
        }
        "memory.min" => limit_text(&mut s, memcg::MIN.get(g)),
        "memory.low" => limit_text(&mut s, memcg::LOW.get(g)),
        "memory.high" => limit_text(&mut s, memcg::HIGH.get(g)),
        "memory.max" => limit_text(&mut s, memcg::MAX.get(g)),
        "memory.stat" => {
            for (name, kind) in
                [("anon", ChargeKind::Anon), ("file", ChargeKind::File), ("pagetables", ChargeKind::PageTable)]
            {
                let _ = writeln!(s, "{} {}", name, Dec(memcg::usage_of(g, kind) * PAGE_SIZE));
            }
            // The group's own lruvecs: its LRU pages, and every scan of
            // them (its own reclaim, which is direct, and global reclaim's,
            // kswapd's or direct), as Linux's memory.stat.
            let lru = memcg::lru_pages(g);
            for (name, i) in [
                ("inactive_anon", 0),
                ("active_anon", 1),
                ("inactive_file", 2),
                ("active_file", 3),
                ("unevictable", 4),
            ] {
                let _ = writeln!(s, "{} {}", name, Dec(lru[i] * PAGE_SIZE));
            }
            let st = memcg::lru_stat(g);
            for (name, v) in [
                ("pgscan", st.pgscan()),
                ("pgsteal", st.pgsteal()),
                ("pgscan_kswapd", st.pgscan_kswapd),
                ("pgscan_direct", st.pgscan_direct),
                ("pgsteal_kswapd", st.pgsteal_kswapd),
                ("pgsteal_direct", st.pgsteal_direct),
                ("pgfault", memcg::stat_count(g, memcg::MemcgStat::Fault as usize)),
            ] {
                let _ = writeln!(s, "{} {}", name, Dec(v));
            }
        }
        "memory.events" => {
            for (k, name) in memcg::EVENT_NAMES.iter().enumerate() {
                let _ = writeln!(s, "{} {}", name, Dec(memcg::event_count(g, k)));
            }
        }
        _ => {}
    }
    s
}

/// Linux's `simple_strtoull(s, &end, 0)`: "0x" and a hex digit: hex;
/// a leading 0: octal; else decimal. The value (saturating) and the rest.
fn strtoull(s: &str) -> (u64, &str) {
    let b = s.as_bytes();
    let (radix, skip) = if b.len() > 2 && b[0] == b'0' && (b[1] | 0x20) == b'x' && b[2].is_ascii_hexdigit() {
        (16, 2)
    } else if b.first() == Some(&b'0') {
        (8, 0)
    } else {
        (10, 0)
    };
    let mut v: u64 = 0;
    let mut i = skip;
    while i < b.len() {
        let Some(d) = (b[i] as char).to_digit(radix) else { break };
        v = v.saturating_mul(radix as u64).saturating_add(d as u64);
        i += 1;
    }
    (v, &s[i..])
}

/// Linux's `memparse`: a number with an optional K/M/G/T/P/E suffix
/// (either case); the bytes and the rest.
fn memparse(s: &str) -> (u64, &str) {
    let (v, rest) = strtoull(s);
    let shift = match rest.as_bytes().first().map(|c| c | 0x20) {
        Some(b'k') => 10,
        Some(b'm') => 20,
        Some(b'g') => 30,
        Some(b't') => 40,
        Some(b'p') => 50,
        Some(b'e') => 60,
        _ => return (v, rest),
    };
    (v.checked_shl(shift).filter(|x| x >> shift == v).unwrap_or(u64::MAX), &rest[1..])
}

/// Linux's `page_counter_memparse`: "max" or bytes (rounded down to
/// pages), anything left over is EINVAL.
fn page_counter_memparse(s: &str) -> Result<u64, i64> {
    if s == "max" {
        return Ok(PAGE_COUNTER_MAX);
    }
    let (bytes, rest) = memparse(s);
    if !rest.is_empty() {
        return Err(-EINVAL);
    }
    Ok((bytes / PAGE_SIZE).min(PAGE_COUNTER_MAX))
}

/// Linux's `kstrtoint(s, 0, ..)`: an optionally signed integer in base
/// 0, nothing after it but one newline.
fn kstrtoint(s: &str) -> Result<i64, i64> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() {
        return Err(-EINVAL);
    }
    let (v, rest) = strtoull(digits);
    if !rest.is_empty() || v > i32::MAX as u64 + neg as u64 {
        return Err(-EINVAL);
    }
    Ok(if neg { -(v as i64) } else { v as i64 })
}

/// A write of `data` to file `i` of group `g`.
pub fn write(g: usize, i: usize, data: &[u8]) -> Result<(), i64> {
    if !memcg::live(g) {
        return Err(-ENODEV);
    }
    let s = core::str::from_utf8(data).map_err(|_| -EINVAL)?;
    // kernfs handlers see the buffer `strstrip`ped.
    let v = s.trim_matches(|c: char| c.is_ascii_whitespace());
    match FILES[i].name {
        "cgroup.procs" => {
            let pid = kstrtoint(v)?;
            if pid < 0 || !sched::set_memcg(pid as u64, g as u16) {
                return Err(-ESRCH);
            }
            Ok(())
        }
        "cgroup.subtree_control" => {
            for tok in v.split_ascii_whitespace() {
                match tok {
                    "+memory" => SUBTREE_MEMORY.fetch_or(1 << g, Ordering::Relaxed),
                    "-memory" => SUBTREE_MEMORY.fetch_and(!(1 << g), Ordering::Relaxed),
                    _ => return Err(-EINVAL),
                };
            }
            Ok(())
        }
        "memory.min" => page_counter_memparse(v).map(|p| memcg::MIN.set(g, p)),
        "memory.low" => page_counter_memparse(v).map(|p| memcg::LOW.set(g, p)),
        "memory.high" => {
            let p = page_counter_memparse(v)?;
            memcg::HIGH.set(g, p);
            memcg::enforce_high(g);
            Ok(())
        }
        "memory.max" => {
            let p = page_counter_memparse(v)?;
            memcg::MAX.set(g, p);
            if memcg::usage(g) > p {
                memcg::event(g, MemcgEvent::Max);
                memcg::enforce_max(g);
            }
            Ok(())
        }
        _ => Err(-EACCES),
    }
}

/// `mkdir` of `path` (normalised) in this file system.
pub fn mkdir(path: &str) -> Result<(), i64> {
    match resolve(path) {
        Ok(_) => return Err(-EEXIST),
        Err(e) if e != -ENOENT => return Err(e),
        Err(_) => {}
    }
    let r = rel(path).ok_or(-EPERM)?;
    let (dir, name) = r.rsplit_once('/').ok_or(-ENOENT)?;
    let parent = memcg::lookup(dir).ok_or(-ENOENT)?;
    // Linux refuses names with a newline, and "." / ".." never get here.
    if name.is_empty() || name.contains('\n') {
        return Err(-EINVAL);
    }
    memcg::create(parent, String::from(r)).map(|_| ()).map_err(|e| -e)
}

/// `rmdir` of `path` (normalised) in this file system.
pub fn rmdir(path: &str) -> Result<(), i64> {
    match resolve(path)? {
        Node::Upper(_) => Err(-EPERM),
        Node::File(..) => Err(-ENOTDIR),
        Node::Group(g) => memcg::remove(g, !sched::memcg_procs(g as u16).is_empty()).map_err(|e| -e),
    }
}

const _: () = assert!(MAX_MEMCG <= 64, "SUBTREE_MEMORY is a 64-bit mask");
