//! /sys/devices/system/node (each NUMA node's meminfo, numastat,
//! distance and cpulist, and the online/possible node lists, as Linux's
//! drivers/base/node.c) and
//! /sys/kernel/mm/transparent_hugepage, the transparent huge pages'
//! run-time settings as Linux's mm/huge_memory.c and mm/khugepaged.c
//! expose them in sysfs:
//!
//! - `enabled` reads `always [madvise] never` (the mode in brackets);
//!   writing `always`, `madvise` or `never` (a trailing newline allowed,
//!   as `sysfs_streq`) sets it, anything else is EINVAL;
//! - `hpage_pmd_size` reads the PMD page size in bytes (2097152);
//! - `khugepaged/max_ptes_none` and `khugepaged/max_ptes_shared` read and
//!   set khugepaged's limits (Linux's `kstrtoul(buf, 10, ..)`, then
//!   EINVAL above `HPAGE_PMD_NR - 1`).
//!
//! And /sys/kernel/mm/hugepages/hugepages-<size>kB, one directory per
//! hugetlb pool (mm/hugetlb_sysfs.c): `nr_hugepages` and
//! `nr_overcommit_hugepages` read and set the pool, `free_hugepages`,
//! `resv_hugepages` and `surplus_hugepages` read its counters; the 1 GiB
//! pool's directory exists only where the CPU reports 1 GiB pages, as in
//! Linux.
//!
//! And /sys/kernel/debug/page_tables (Linux's CONFIG_PTDUMP_DEBUGFS,
//! arch/x86/mm/debug_pagetables.c): `kernel` dumps the kernel's page
//! tables and `current_user` the reading process's user half, in
//! Linux's ptdump layout (mm/procfs.rs's `ptdump_to`, the `ptdump`
//! switch's walk): what a program can read of its own translations from
//! inside the guest, huge leaves shown at their level (pmd, pud).
//!
//! And /sys/kernel/debug/fail_page_alloc, fault injection's attributes
//! (mm/fail_page_alloc.rs), read and written with Linux's names.
//!
//! Linux's `defrag`, `shmem_enabled` and khugepaged's `pages_to_scan`,
//! `scan_sleep_millisecs` are not here: this kernel's faults never
//! reclaim or compact for a huge page, there is no shmem THP, and its
//! khugepaged scans every process whenever it is woken (see proc/thp.rs).
//! Files are served as /proc's are (procfs.rs's `ProcFile`): text made
//! at open, writes applied as they come.

use super::procfs::ProcFile;
use crate::fmt::Dec;
use crate::mm::huge_memory::{self as hm, MaxPtes, ThpMode, HPAGE_PMD_SIZE};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;

const ENOENT: i64 = 2;
const EACCES: i64 = 13;
const EINVAL: i64 = 22;

const DIR: u32 = super::S_IFDIR | 0o755;
const RO: u32 = super::S_IFREG | 0o444;
const RW: u32 = super::S_IFREG | 0o644;

/// The THP directory.
const THP: &str = "/sys/kernel/mm/transparent_hugepage";

/// The files, by path below /sys/kernel/mm, with their modes.
pub const FILES: [(&str, u32); 14] = [
    ("transparent_hugepage/enabled", RW),
    ("transparent_hugepage/hpage_pmd_size", RO),
    ("transparent_hugepage/khugepaged/max_ptes_none", RW),
    ("transparent_hugepage/khugepaged/max_ptes_shared", RW),
    ("hugepages/hugepages-2048kB/nr_hugepages", RW),
    ("hugepages/hugepages-2048kB/nr_overcommit_hugepages", RW),
    ("hugepages/hugepages-2048kB/free_hugepages", RO),
    ("hugepages/hugepages-2048kB/resv_hugepages", RO),
    ("hugepages/hugepages-2048kB/surplus_hugepages", RO),
    ("hugepages/hugepages-1048576kB/nr_hugepages", RW),
    ("hugepages/hugepages-1048576kB/nr_overcommit_hugepages", RW),
    ("hugepages/hugepages-1048576kB/free_hugepages", RO),
    ("hugepages/hugepages-1048576kB/resv_hugepages", RO),
    ("hugepages/hugepages-1048576kB/surplus_hugepages", RO),
];

/// /sys/kernel/mm, which [`FILES`] are relative to.
const MM: &str = "/sys/kernel/mm";

/// A pool's files, in [`FILES`]'s order.
const POOL_FILES: [&str; 5] =
    ["nr_hugepages", "nr_overcommit_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages"];

/// The directories and what each holds.
const DIRS: [(&str, &[&str]); 10] = [
    ("/sys/kernel", &["mm", "debug"]),
    ("/sys/kernel/debug", &["page_tables", "fail_page_alloc"]),
    (FAIL_DIR, &crate::mm::fail_page_alloc::FILES),
    ("/sys/kernel/debug/page_tables", &PTDUMP_FILES),
    ("/sys/kernel/mm", &["transparent_hugepage", "hugepages"]),
    (THP, &["enabled", "hpage_pmd_size", "khugepaged"]),
    ("/sys/kernel/mm/transparent_hugepage/khugepaged", &["max_ptes_none", "max_ptes_shared"]),
    ("/sys/kernel/mm/hugepages", &["hugepages-2048kB", "hugepages-1048576kB"]),
    ("/sys/kernel/mm/hugepages/hugepages-2048kB", &POOL_FILES),
    ("/sys/kernel/mm/hugepages/hugepages-1048576kB", &POOL_FILES),
];

/// Fault injection's debugfs directory (mm/fail_page_alloc.rs).
const FAIL_DIR: &str = "/sys/kernel/debug/fail_page_alloc";

/// The index of fault-injection file `path` among the [`ProcFile::Sysfs`]
/// indices (after [`FILES`]'s).
fn fail_file(path: &str) -> Option<usize> {
    let name = path.strip_prefix(FAIL_DIR)?.strip_prefix('/')?;
    crate::mm::fail_page_alloc::FILES.iter().position(|f| *f == name).map(|k| FILES.len() + k)
}

/// The files of /sys/kernel/debug/page_tables.
const PTDUMP_FILES: [&str; 2] = ["current_user", "kernel"];

/// The page-table dump `path` names, made now; None: not one.
fn ptdump(path: &str) -> Option<String> {
    let name = path.strip_prefix("/sys/kernel/debug/page_tables/")?;
    let phys = crate::mm::phys::direct_map();
    let mut text = String::new();
    match name {
        "current_user" => {
            // The reader's own tables, under its mm lock; the user half
            // only (the kernel half is `kernel`'s).
            let mm = super::procfs::task_mm(crate::proc::sched::current_pid())?;
            mm.with(|mm| {
                // The walker checks reserved bits (the editor does not):
                // a PUD leaf is legal where the CPU has 1 GiB pages.
                let gb = crate::mm::hugetlb::gigantic_supported();
                let mapper = mm_core::paging::Mapper::new(mm_core::addr::PhysAddr(mm.pgd), false, 52, gb);
                crate::mm::procfs::ptdump_to(&mut text, &mapper, &phys, Some(1 << 47));
            });
        }
        "kernel" => {
            // Read without the page allocator's lock (the text is built
            // on the heap, which takes it): kernel tables are only ever
            // added to, so a racing change shows as old or new, never as
            // a freed table.
            let mapper = crate::mm::KERNEL_PT.with(|m| *m);
            crate::mm::procfs::ptdump_to(&mut text, &mapper, &phys, None);
        }
        _ => return None,
    }
    Some(text)
}

/// The hugetlb pool a path below /sys/kernel/mm/hugepages names (the
/// path whole, or relative to /sys/kernel/mm as in [`FILES`]), and
/// whether this kernel has it (the 1 GiB one only with pdpe1gb).
fn pool_of(path: &str) -> Option<(crate::mm::hugetlb::HSize, bool)> {
    use crate::mm::hugetlb::{gigantic_supported, HSize};
    let rel = path.strip_prefix(MM).map_or(path, |r| r.trim_start_matches('/'));
    let rest = rel.strip_prefix("hugepages/hugepages-")?;
    if rest.starts_with("2048kB") {
        Some((HSize::Pmd, true))
    } else if rest.starts_with("1048576kB") {
        Some((HSize::Pud, gigantic_supported()))
    } else {
        None
    }
}

/// Whether `path` (a [`DIRS`] or [`FILES`] entry) exists on this machine.
fn present(path: &str) -> bool {
    pool_of(path).is_none_or(|(_, has)| has)
}

/// Whether `path` (normalised) is in this part of /sys.
pub fn is_sysfs(path: &str) -> bool {
    path == "/sys/kernel"
        || path.starts_with("/sys/kernel/")
        || path == "/sys/devices"
        || path.starts_with("/sys/devices/")
}

/// The NUMA nodes' directory (Linux's drivers/base/node.c).
const NODES: &str = "/sys/devices/system/node";

/// The node-list files of the nodes' directory (each reads the list of
/// every node).
const NODE_LISTS: [&str; 5] = ["online", "possible", "has_memory", "has_normal_memory", "has_cpu"];

/// The files of each nodeN directory.
const NODE_FILES: [&str; 4] = ["cpulist", "distance", "meminfo", "numastat"];

/// What `path` is below /sys/devices: a directory's entries, or a file's
/// text made now. None: no such path.
fn devices(path: &str) -> Option<Result<Vec<(String, u32)>, String>> {
    use crate::mm::numa;
    let n = numa::nr_nodes();
    let list = |names: &[&str], mode: u32| names.iter().map(|s| (String::from(*s), mode)).collect::<Vec<_>>();
    match path {
        "/sys/devices" => return Some(Ok(list(&["system"], DIR))),
        "/sys/devices/system" => return Some(Ok(list(&["node"], DIR))),
        NODES => {
            let mut e = list(&NODE_LISTS, RO);
            for node in 0..n {
                let mut name = String::new();
                let _ = write!(name, "node{}", Dec(node as u64));
                e.push((name, DIR));
            }
            return Some(Ok(e));
        }
        _ => {}
    }
    let rel = path.strip_prefix(NODES)?.strip_prefix('/')?;
    let mut text = String::new();
    if NODE_LISTS.contains(&rel) {
        // A node list: "0" or "0-N".
        if n > 1 {
            let _ = writeln!(text, "0-{}", Dec(n as u64 - 1));
        } else {
            text.push_str("0\n");
        }
        return Some(Err(text));
    }
    let (dir, file) = rel.split_once('/').unwrap_or((rel, ""));
    let node = crate::fmt::parse_u64(dir.strip_prefix("node")?).map(|v| v as usize).filter(|&v| v < n)?;
    match file {
        "" => Some(Ok(list(&NODE_FILES, RO))),
        "meminfo" => {
            numa::node_meminfo_to(node, &mut text);
            Some(Err(text))
        }
        "numastat" => {
            for (name, v) in numa::NUMASTAT_NAMES.iter().zip(numa::numastat(node)) {
                let _ = writeln!(text, "{} {}", name, Dec(v));
            }
            Some(Err(text))
        }
        "distance" => {
            let t = numa::topology();
            for other in 0..n {
                if other > 0 {
                    text.push(' ');
                }
                let d = t.map_or(10, |t| u64::from(t.distance(node, other)));
                let _ = write!(text, "{}", Dec(d));
            }
            text.push('\n');
            Some(Err(text))
        }
        "cpulist" => {
            let cpus = crate::arch::smp::nr_cpus();
            let mine: Vec<usize> = (0..cpus).filter(|&c| usize::from(numa::cpu_node(c)) == node).collect();
            // Linux's bitmap list: runs as "a-b", separated by commas.
            let mut i = 0;
            while i < mine.len() {
                let mut j = i;
                while j + 1 < mine.len() && mine[j + 1] == mine[j] + 1 {
                    j += 1;
                }
                if !text.is_empty() {
                    text.push(',');
                }
                let _ = write!(text, "{}", Dec(mine[i] as u64));
                if j > i {
                    let _ = write!(text, "-{}", Dec(mine[j] as u64));
                }
                i = j + 1;
            }
            text.push('\n');
            Some(Err(text))
        }
        _ => None,
    }
}

/// The index in [`FILES`] of `path`.
fn file(path: &str) -> Option<usize> {
    let rel = path.strip_prefix(MM)?.strip_prefix('/')?;
    FILES.iter().position(|(n, _)| *n == rel).filter(|_| present(path))
}

/// `st_mode` of `path`, or -ENOENT.
pub fn mode_of(path: &str) -> Result<u32, i64> {
    if path.strip_prefix("/sys/kernel/debug/page_tables/").is_some_and(|n| PTDUMP_FILES.contains(&n)) {
        // Linux's debugfs files are root's alone (0400).
        return Ok(super::S_IFREG | 0o400);
    }
    if fail_file(path).is_some() {
        // Fault attributes: root's, read and write (0600).
        return Ok(super::S_IFREG | 0o600);
    }
    if let Some(d) = devices(path) {
        return Ok(if d.is_ok() { DIR } else { RO });
    }
    if DIRS.iter().any(|(d, _)| *d == path) && present(path) {
        return Ok(DIR);
    }
    file(path).map(|i| FILES[i].1).ok_or(-ENOENT)
}

/// Opens `path` (for writing if `write`): a directory's entries or a
/// file's text, made now.
pub fn open(path: &str, write: bool) -> Result<Arc<ProcFile>, i64> {
    match devices(path) {
        Some(_) if write => return Err(-EACCES),
        Some(Ok(entries)) => return Ok(Arc::new(ProcFile::Dir(entries))),
        Some(Err(text)) => return Ok(Arc::new(ProcFile::Text(text.into_bytes()))),
        None => {}
    }
    if path.starts_with("/sys/kernel/debug/page_tables/") {
        if write {
            return Err(-EACCES);
        }
        return ptdump(path).map(|t| Arc::new(ProcFile::Text(t.into_bytes()))).ok_or(-ENOENT);
    }
    if let Some((_, names)) = DIRS.iter().find(|(d, _)| *d == path && present(path)) {
        let e: Vec<(String, u32)> = names
            .iter()
            .filter_map(|n| {
                let mut full = String::from(path);
                full.push('/');
                full.push_str(n);
                Some((String::from(*n), mode_of(&full).ok()?))
            })
            .collect();
        return Ok(Arc::new(ProcFile::Dir(e)));
    }
    if let Some(i) = fail_file(path) {
        return Ok(Arc::new(ProcFile::Sysfs(i, text(i).into_bytes())));
    }
    let i = file(path).ok_or(-ENOENT)?;
    if write && FILES[i].1 & 0o200 == 0 {
        return Err(-EACCES);
    }
    Ok(Arc::new(ProcFile::Sysfs(i, text(i).into_bytes())))
}

/// File `i`, as read now.
fn text(i: usize) -> String {
    if let Some(k) = i.checked_sub(FILES.len()) {
        return crate::mm::fail_page_alloc::read(k);
    }
    let mut s = String::new();
    let path = FILES[i].0;
    if let Some((hs, _)) = pool_of(path) {
        let [total, free, rsvd, surp, over] = crate::mm::hugetlb::size_counters(hs);
        let v = match path.rsplit('/').next() {
            Some("nr_hugepages") => total - surp,
            Some("nr_overcommit_hugepages") => over,
            Some("free_hugepages") => free,
            Some("resv_hugepages") => rsvd,
            _ => surp,
        };
        let _ = writeln!(s, "{}", Dec(v));
        return s;
    }
    match path.strip_prefix("transparent_hugepage/").unwrap_or(path) {
        "enabled" => {
            let mode = hm::mode();
            for (m, name) in [(ThpMode::Always, "always"), (ThpMode::Madvise, "madvise"), (ThpMode::Never, "never")] {
                if !s.is_empty() {
                    s.push(' ');
                }
                if m == mode {
                    let _ = write!(s, "[{}]", name);
                } else {
                    s.push_str(name);
                }
            }
            s.push('\n');
        }
        "hpage_pmd_size" => {
            let _ = writeln!(s, "{}", Dec(HPAGE_PMD_SIZE));
        }
        "khugepaged/max_ptes_none" => {
            let _ = writeln!(s, "{}", Dec(hm::max_ptes(MaxPtes::None)));
        }
        "khugepaged/max_ptes_shared" => {
            let _ = writeln!(s, "{}", Dec(hm::max_ptes(MaxPtes::Shared)));
        }
        _ => {}
    }
    s
}

/// Linux's `kstrtoul(s, 10, ..)`: decimal digits, an optional leading
/// `+`, one trailing newline at most.
fn kstrtoul10(s: &str) -> Result<u64, i64> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(-EINVAL);
    }
    s.bytes().try_fold(0u64, |v, b| v.checked_mul(10)?.checked_add(u64::from(b - b'0'))).ok_or(-EINVAL)
}

/// A write of `data` to file `i`.
pub fn write(i: usize, data: &[u8]) -> Result<(), i64> {
    let s = core::str::from_utf8(data).map_err(|_| -EINVAL)?;
    if let Some(k) = i.checked_sub(FILES.len()) {
        return crate::mm::fail_page_alloc::write(k, s);
    }
    let path = FILES.get(i).map_or("", |f| f.0);
    if let Some((hs, true)) = pool_of(path) {
        let v = kstrtoul10(s)?;
        return match path.rsplit('/').next() {
            // Linux grows the pool as far as it can; reading back says how far.
            Some("nr_hugepages") => {
                crate::mm::hugetlb::set_max_huge_pages(hs, v);
                Ok(())
            }
            Some("nr_overcommit_hugepages") if crate::mm::hugetlb::set_overcommit(hs, v) => Ok(()),
            Some("nr_overcommit_hugepages") => Err(-EINVAL),
            _ => Err(-EACCES),
        };
    }
    match path.strip_prefix("transparent_hugepage/") {
        Some("enabled") => {
            // `sysfs_streq`: equal but for one trailing newline.
            let word = s.strip_suffix('\n').unwrap_or(s);
            hm::set_mode(ThpMode::parse(word).ok_or(-EINVAL)?);
            Ok(())
        }
        Some(f @ ("khugepaged/max_ptes_none" | "khugepaged/max_ptes_shared")) => {
            let which = if f.ends_with("none") { MaxPtes::None } else { MaxPtes::Shared };
            let v = kstrtoul10(s)?;
            if hm::set_max_ptes(which, v) {
                Ok(())
            } else {
                Err(-EINVAL)
            }
        }
        _ => Err(-EACCES),
    }
}
