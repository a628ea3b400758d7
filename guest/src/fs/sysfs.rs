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

/// The files, by path below [`THP`], with their modes.
pub const FILES: [(&str, u32); 4] =
    [("enabled", RW), ("hpage_pmd_size", RO), ("khugepaged/max_ptes_none", RW), ("khugepaged/max_ptes_shared", RW)];

/// The directories and what each holds.
const DIRS: [(&str, &[&str]); 4] = [
    ("/sys/kernel", &["mm"]),
    ("/sys/kernel/mm", &["transparent_hugepage"]),
    (THP, &["enabled", "hpage_pmd_size", "khugepaged"]),
    ("/sys/kernel/mm/transparent_hugepage/khugepaged", &["max_ptes_none", "max_ptes_shared"]),
];

/// Whether `path` (normalised) is in this part of /sys.
pub fn is_sysfs(path: &str) -> bool {
    path == "/sys/kernel" || path.starts_with("/sys/kernel/")
}

/// The index in [`FILES`] of `path`.
fn file(path: &str) -> Option<usize> {
    let rel = path.strip_prefix(THP)?.strip_prefix('/')?;
    FILES.iter().position(|(n, _)| *n == rel)
}

/// `st_mode` of `path`, or -ENOENT.
pub fn mode_of(path: &str) -> Result<u32, i64> {
    if DIRS.iter().any(|(d, _)| *d == path) {
        return Ok(DIR);
    }
    file(path).map(|i| FILES[i].1).ok_or(-ENOENT)
}

/// Opens `path` (for writing if `write`): a directory's entries or a
/// file's text, made now.
pub fn open(path: &str, write: bool) -> Result<Arc<ProcFile>, i64> {
    if let Some((_, names)) = DIRS.iter().find(|(d, _)| *d == path) {
        let e: Vec<(String, u32)> = names
            .iter()
            .map(|n| {
                let mut full = String::from(path);
                full.push('/');
                full.push_str(n);
                (String::from(*n), mode_of(&full).unwrap_or(DIR))
            })
            .collect();
        return Ok(Arc::new(ProcFile::Dir(e)));
    }
    let i = file(path).ok_or(-ENOENT)?;
    if write && FILES[i].1 & 0o200 == 0 {
        return Err(-EACCES);
    }
    Ok(Arc::new(ProcFile::Sysfs(i, text(i).into_bytes())))
}

/// File `i`, as read now.
fn text(i: usize) -> String {
    let mut s = String::new();
    match FILES[i].0 {
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
    match FILES.get(i).map(|f| f.0) {
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
