//! Fault injection for the page allocator (Linux's `fail_page_alloc`,
//! mm/fail_page_alloc.c over lib/fault-inject.c,
//! Documentation/fault-injection/fault-injection.rst): makes chosen
//! `alloc_pages` requests fail as if memory had run out, so the paths
//! that handle a failed allocation (a page table that cannot be had in
//! the middle of mremap, a user page for a fault, a kernel stack at
//! fork) run on purpose instead of only under real exhaustion.
//!
//! Set at boot with `fail_page_alloc=<interval>,<probability>,<space>,<times>`
//! or at run time in /sys/kernel/debug/fail_page_alloc/ (`probability`
//! in percent, `interval`, `times` (-1: no limit), `space` (bytes that
//! pass before failures start), `verbose`, `task-filter`,
//! `ignore-gfp-wait`, `ignore-gfp-highmem`, `min-order`), with
//! /proc/PID/make-it-fail choosing the tasks when `task-filter` is Y,
//! all with Linux's names, defaults and order of checks
//! ([`should_fail_alloc_page`]).
//!
//! What it does not cover, as in Linux: slab (kmalloc and the kernel's
//! own heap) allocations, which are Linux's separate `failslab`; this
//! kernel's heap users cannot take a failure (the Rust allocation API
//! aborts), so only the page allocator's callers, which all handle
//! `Err`, are failed.

use super::page_alloc::{gfp, GfpMask};
use crate::fmt::{parse_i64, Dec, DecI64};
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Linux's `struct fault_attr` plus fail_page_alloc's own switches.
pub struct FaultAttr {
    /// Percent of the eligible calls that fail (0: none).
    pub probability: AtomicU64,
    /// Only every interval-th eligible call may fail.
    pub interval: AtomicU64,
    /// Failures left (-1: no limit; 0: no more).
    pub times: AtomicI64,
    /// Bytes of requests let through before any may fail.
    pub space: AtomicI64,
    /// 0 silent, 1 one line per failure, 2 that line with the caller.
    pub verbose: AtomicU64,
    /// Fail only tasks whose /proc/PID/make-it-fail is 1.
    pub task_filter: AtomicBool,
    /// Leave requests that may reclaim (block) alone.
    pub ignore_gfp_wait: AtomicBool,
    /// Leave user (highmem, movable) pages alone.
    pub ignore_gfp_highmem: AtomicBool,
    /// Leave requests below this order alone.
    pub min_order: AtomicU64,
    /// Eligible calls seen (the interval's counter).
    count: AtomicU64,
    /// Failures injected since boot (a counter of ours).
    pub injected: AtomicU64,
}

/// The page allocator's attributes, with Linux's defaults: probability 0
/// (off), interval 1, times 1, space 0, verbose 2, task-filter N,
/// ignore-gfp-wait Y, ignore-gfp-highmem Y, min-order 1.
pub static FAIL_PAGE_ALLOC: FaultAttr = FaultAttr {
    probability: AtomicU64::new(0),
    interval: AtomicU64::new(1),
    times: AtomicI64::new(1),
    space: AtomicI64::new(0),
    verbose: AtomicU64::new(2),
    task_filter: AtomicBool::new(false),
    ignore_gfp_wait: AtomicBool::new(true),
    ignore_gfp_highmem: AtomicBool::new(true),
    min_order: AtomicU64::new(1),
    count: AtomicU64::new(0),
    injected: AtomicU64::new(0),
};

/// Reads `fail_page_alloc=<interval>,<probability>,<space>,<times>` from
/// the command line (Linux's `setup_fault_attr`); a malformed value is
/// reported and ignored.
pub fn init(cmdline: &str) {
    let words = cmdline.split_whitespace().take_while(|w| *w != "--");
    let Some(v) = words.filter_map(|w| w.strip_prefix("fail_page_alloc=")).last() else { return };
    let f: alloc::vec::Vec<&str> = v.split(',').collect();
    let parsed = (f.len() == 4).then(|| {
        let interval = crate::fmt::parse_u64(f[0])?;
        let probability = crate::fmt::parse_u64(f[1]).filter(|&p| p <= 100)?;
        let space = parse_i64(f[2])?;
        let times = parse_i64(f[3])?;
        Some((interval, probability, space, times))
    });
    match parsed.flatten() {
        Some((interval, probability, space, times)) => {
            let a = &FAIL_PAGE_ALLOC;
            a.interval.store(interval.max(1), Ordering::Relaxed);
            a.probability.store(probability, Ordering::Relaxed);
            a.space.store(space, Ordering::Relaxed);
            a.times.store(times, Ordering::Relaxed);
            crate::kprintln!(
                "fail_page_alloc: interval {}, probability {}%, space {}, times {}",
                Dec(interval),
                Dec(probability),
                DecI64(space),
                DecI64(times)
            );
        }
        None => crate::kprintln!(
            "fail_page_alloc: '{}' is not <interval>,<probability>,<space>,<times> (probability 0..100): ignored",
            v
        ),
    }
}

/// Linux's `should_fail_alloc_page`: whether this request for `2^order`
/// pages is to fail. Cheap when injection is off (one load).
#[inline]
pub fn should_fail_alloc_page(order: u8, gfp_mask: GfpMask) -> bool {
    let a = &FAIL_PAGE_ALLOC;
    if a.probability.load(Ordering::Relaxed) == 0 {
        return false;
    }
    if u64::from(order) < a.min_order.load(Ordering::Relaxed) {
        return false;
    }
    // User pages are Linux's GFP_HIGHUSER(_MOVABLE): highmem there.
    let highmem = gfp_mask.gfp.migratetype == mm_core::buddy::MigrateType::Movable;
    if a.ignore_gfp_highmem.load(Ordering::Relaxed) && highmem {
        return false;
    }
    if a.ignore_gfp_wait.load(Ordering::Relaxed) && gfp_mask.allows(gfp::DIRECT_RECLAIM) {
        return false;
    }
    should_fail(a, 4096u64 << order, order)
}

/// Linux's `should_fail_ex`, in its order: probability, the task filter,
/// times, space, interval, the dice.
fn should_fail(a: &FaultAttr, size: u64, order: u8) -> bool {
    let probability = a.probability.load(Ordering::Relaxed);
    if probability == 0 {
        return false;
    }
    if a.task_filter.load(Ordering::Relaxed) && !crate::proc::sched::current_make_it_fail() {
        return false;
    }
    if a.times.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let space = a.space.load(Ordering::Relaxed);
    if space > size as i64 {
        a.space.fetch_sub(size as i64, Ordering::Relaxed);
        return false;
    }
    let interval = a.interval.load(Ordering::Relaxed);
    if interval > 1 {
        let n = a.count.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(interval) {
            return false;
        }
    }
    if probability <= crate::proc::exec::random_u64() % 100 {
        return false;
    }
    // Linux's atomic_dec_not_zero, -1 staying unlimited.
    let _ = a.times.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| (t > 0).then(|| t - 1));
    a.injected.fetch_add(1, Ordering::Relaxed);
    match a.verbose.load(Ordering::Relaxed) {
        0 => {}
        v => {
            crate::kprintln!(
                "FAULT_INJECTION: forcing a failure.\nname fail_page_alloc, interval {}, probability {}, space {}, times {}",
                Dec(interval),
                Dec(probability),
                DecI64(a.space.load(Ordering::Relaxed)),
                DecI64(a.times.load(Ordering::Relaxed))
            );
            if v > 1 {
                let pid = crate::proc::sched::current_pid();
                crate::kprintln!("  order {} for pid {} on CPU {}", Dec(u64::from(order)), Dec(pid), Dec(crate::arch::percpu::cpu_id() as u64));
            }
        }
    }
    true
}

/// The files of /sys/kernel/debug/fail_page_alloc, Linux's names.
pub const FILES: [&str; 9] = [
    "probability",
    "interval",
    "times",
    "space",
    "verbose",
    "task-filter",
    "ignore-gfp-wait",
    "ignore-gfp-highmem",
    "min-order",
];

/// File `i`'s text.
pub fn read(i: usize) -> alloc::string::String {
    use core::fmt::Write;
    let a = &FAIL_PAGE_ALLOC;
    let yn = |b: &AtomicBool| if b.load(Ordering::Relaxed) { "Y" } else { "N" };
    let mut s = alloc::string::String::new();
    let _ = match FILES.get(i).copied() {
        Some("probability") => writeln!(s, "{}", Dec(a.probability.load(Ordering::Relaxed))),
        Some("interval") => writeln!(s, "{}", Dec(a.interval.load(Ordering::Relaxed))),
        Some("times") => writeln!(s, "{}", DecI64(a.times.load(Ordering::Relaxed))),
        Some("space") => writeln!(s, "{}", DecI64(a.space.load(Ordering::Relaxed))),
        Some("verbose") => writeln!(s, "{}", Dec(a.verbose.load(Ordering::Relaxed))),
        Some("task-filter") => writeln!(s, "{}", yn(&a.task_filter)),
        Some("ignore-gfp-wait") => writeln!(s, "{}", yn(&a.ignore_gfp_wait)),
        Some("ignore-gfp-highmem") => writeln!(s, "{}", yn(&a.ignore_gfp_highmem)),
        Some("min-order") => writeln!(s, "{}", Dec(a.min_order.load(Ordering::Relaxed))),
        _ => Ok(()),
    };
    s
}

/// A write to file `i` (debugfs's `kstrtobool` for the Y/N files, a
/// number for the rest; probability above 100 is EINVAL as in Linux).
pub fn write(i: usize, text: &str) -> Result<(), i64> {
    const EINVAL: i64 = 22;
    let a = &FAIL_PAGE_ALLOC;
    let t = text.trim();
    let num = || crate::fmt::parse_u64(t).ok_or(-EINVAL);
    let boolean = || match t.as_bytes().first() {
        Some(b'Y' | b'y' | b'1') => Ok(true),
        Some(b'N' | b'n' | b'0') => Ok(false),
        _ => Err(-EINVAL),
    };
    match FILES.get(i).copied() {
        Some("probability") => a.probability.store(num().and_then(|p| if p <= 100 { Ok(p) } else { Err(-EINVAL) })?, Ordering::Relaxed),
        Some("interval") => a.interval.store(num()?.max(1), Ordering::Relaxed),
        Some("times") => a.times.store(parse_i64(t).ok_or(-EINVAL)?, Ordering::Relaxed),
        Some("space") => a.space.store(parse_i64(t).ok_or(-EINVAL)?, Ordering::Relaxed),
        Some("verbose") => a.verbose.store(num()?, Ordering::Relaxed),
        Some("task-filter") => a.task_filter.store(boolean()?, Ordering::Relaxed),
        Some("ignore-gfp-wait") => a.ignore_gfp_wait.store(boolean()?, Ordering::Relaxed),
        Some("ignore-gfp-highmem") => a.ignore_gfp_highmem.store(boolean()?, Ordering::Relaxed),
        Some("min-order") => a.min_order.store(num()?, Ordering::Relaxed),
        _ => return Err(-EINVAL),
    }
    Ok(())
}
