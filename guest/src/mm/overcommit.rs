//! The overcommit policy (Linux's mm/util.c `__vm_enough_memory` and
//! `vm_committed_as`): every accountable mapping (private writable or
//! shared anonymous memory, the brk heap; not MAP_NORESERVE outside mode 2)
//! is charged to `Committed_AS` when it is made and credited back when it
//! goes; the mode decides whether a charge may fail:
//!
//! - 0 (heuristic, the default): only a single request larger than RAM
//!   plus swap fails;
//! - 1 (always): nothing fails;
//! - 2 (never overcommit): a charge that would take `Committed_AS` past
//!   `CommitLimit` = RAM * overcommit_ratio / 100 + swap fails (ENOMEM).
//!
//! The settings have one setter each ([`set_overcommit_memory`],
//! [`set_overcommit_ratio`]), for the command line (`overcommit_memory=N`,
//! `overcommit_ratio=N`) and /proc/sys/vm alike.

use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// `vm.overcommit_memory` (0, 1 or 2).
static MODE: AtomicU64 = AtomicU64::new(0);
/// `vm.overcommit_ratio` (percent of RAM, mode 2).
static RATIO: AtomicU64 = AtomicU64::new(50);
/// `vm_committed_as`, in pages.
static COMMITTED: AtomicI64 = AtomicI64::new(0);

/// `OVERCOMMIT_GUESS`, `OVERCOMMIT_ALWAYS`, `OVERCOMMIT_NEVER`.
pub const OVERCOMMIT_NEVER: u64 = 2;

/// Sets `vm.overcommit_memory`; false (and nothing changes) unless 0..=2.
pub fn set_overcommit_memory(mode: u64) -> bool {
    if mode > OVERCOMMIT_NEVER {
        return false;
    }
    MODE.store(mode, Ordering::Relaxed);
    true
}

/// `vm.overcommit_memory`.
pub fn overcommit_memory() -> u64 {
    MODE.load(Ordering::Relaxed)
}

/// Sets `vm.overcommit_ratio` (percent; Linux takes any value).
pub fn set_overcommit_ratio(ratio: u64) {
    RATIO.store(ratio, Ordering::Relaxed);
}

/// `vm.overcommit_ratio`.
pub fn overcommit_ratio() -> u64 {
    RATIO.load(Ordering::Relaxed)
}

/// RAM the page allocator manages and swap slots, in pages.
fn ram_and_swap() -> (u64, u64) {
    let ram = super::PAGES.with(|p| p.buddy.counts().managed);
    (ram, super::swap::totals().total)
}

/// `CommitLimit` in pages (`vm_commit_limit`).
pub fn commit_limit() -> u64 {
    let (ram, swap) = ram_and_swap();
    ram * overcommit_ratio() / 100 + swap
}

/// `Committed_AS` in pages.
pub fn committed_as() -> u64 {
    COMMITTED.load(Ordering::Relaxed).max(0) as u64
}

/// Linux's `__vm_enough_memory`: charges `pages` to `Committed_AS` if the
/// policy allows it; false (nothing charged) if it does not.
pub fn vm_enough_memory(pages: u64) -> bool {
    let pages = pages as i64;
    let after = COMMITTED.fetch_add(pages, Ordering::Relaxed) + pages;
    let ok = match overcommit_memory() {
        1 => true,
        OVERCOMMIT_NEVER => after.max(0) as u64 <= commit_limit(),
        _ => {
            let (ram, swap) = ram_and_swap();
            pages as u64 <= ram + swap
        }
    };
    if !ok {
        COMMITTED.fetch_sub(pages, Ordering::Relaxed);
    }
    ok
}

/// `vm_unacct_memory`: credits `pages` back.
pub fn vm_unacct_memory(pages: u64) {
    COMMITTED.fetch_sub(pages as i64, Ordering::Relaxed);
}
