//! kcompactd (Linux's mm/compaction.c `kcompactd`): background compaction
//! woken when a high-order allocation fails, as kswapd is woken for
//! reclaim. The allocation slow path calls [`wakeup_kcompactd`] with the
//! order (lock-free: it may hold the page allocator); the scheduler makes
//! the kernel thread runnable at its next switch (proc/sched.rs, as for
//! kswapd), and [`kcompactd_do_work`] compacts every zone for that order
//! until a block of it can be allocated (`compact_zone` stops there) or
//! the zone's compaction is deferred.
//!
//! Deferral, as Linux's `defer_compaction` / `compaction_deferred`: a run
//! that fails for an order doubles the number of later requests for that
//! order or more that are skipped (`compact_defer_shift`, at most
//! [`COMPACT_MAX_DEFER_SHIFT`]: 64 skips); a success resets it.
//!
//! Counters (/proc/vmstat): `compact_daemon_wake` per wake that found the
//! thread idle; the scanners' `compact_migrate_scanned`,
//! `compact_free_scanned` and `compact_isolated` come from every run
//! (mm/compaction.rs).

use super::compaction::compact_zone;
use super::vmstat::{self, Event};
use super::PAGES;
use crate::sync::{rank, SpinLock};
use core::sync::atomic::{AtomicU8, Ordering};
use mm_core::buddy::{MigrateType, ZoneType, NR_ZONES};
use mm_core::compaction::CompactResult;

/// Linux's `COMPACT_MAX_DEFER_SHIFT`.
pub const COMPACT_MAX_DEFER_SHIFT: u32 = 6;

/// The order kcompactd is asked to compact for, plus one (0: no wake
/// pending): set by [`wakeup_kcompactd`], taken by the thread.
pub static KCOMPACTD_ORDER: AtomicU8 = AtomicU8::new(0);

/// Per-zone deferral state (Linux's `zone->compact_considered`,
/// `compact_defer_shift`, `compact_order_failed`).
#[derive(Clone, Copy, Debug)]
pub struct Defer {
    /// Requests skipped since the last failure.
    pub considered: u32,
    /// log2 of the requests to skip after a failure.
    pub defer_shift: u32,
    /// Orders at or above this are deferred.
    pub order_failed: u8,
}

/// Deferral per zone.
pub static DEFER: SpinLock<[Defer; NR_ZONES]> = SpinLock::new_with(
    "the compaction deferral state",
    rank::STATS,
    [Defer { considered: 0, defer_shift: 0, order_failed: u8::MAX }; NR_ZONES],
);

/// Linux's `wakeup_kcompactd`: asks the thread to compact for `order`
/// (the largest pending order wins). Lock-free; a wake while one is
/// pending counts once in `compact_daemon_wake`.
pub fn wakeup_kcompactd(order: u8) {
    if order == 0 {
        return;
    }
    let prev = KCOMPACTD_ORDER.fetch_max(order + 1, Ordering::AcqRel);
    if prev == 0 {
        vmstat::count(Event::CompactDaemonWake, 1);
    }
}

/// Whether a wake is pending (the scheduler's check).
pub fn wake_pending() -> bool {
    KCOMPACTD_ORDER.load(Ordering::Acquire) != 0
}

/// Linux's `compaction_deferred`: true if compaction of `z` for `order`
/// should be skipped this time (and counts the skip).
pub fn compaction_deferred(z: ZoneType, order: u8) -> bool {
    DEFER.with(|d| {
        let d = &mut d[z as usize];
        if order < d.order_failed {
            return false;
        }
        d.considered = d.considered.saturating_add(1);
        if d.considered >= 1 << d.defer_shift {
            d.considered = 1 << d.defer_shift;
            return false;
        }
        true
    })
}

/// Linux's `defer_compaction`: a run for `order` failed.
pub fn defer_compaction(z: ZoneType, order: u8) {
    DEFER.with(|d| {
        let d = &mut d[z as usize];
        d.considered = 0;
        d.defer_shift = (d.defer_shift + 1).min(COMPACT_MAX_DEFER_SHIFT);
        d.order_failed = d.order_failed.min(order);
    });
}

/// Linux's `compaction_defer_reset` after a run that served `order`.
pub fn compaction_defer_reset(z: ZoneType, order: u8) {
    DEFER.with(|d| {
        let d = &mut d[z as usize];
        d.considered = 0;
        d.defer_shift = 0;
        if order >= d.order_failed {
            d.order_failed = order + 1;
        }
    });
}

/// One kcompactd run (Linux's `kcompactd_do_work`): takes the pending
/// order and compacts each populated zone for it, highest first, unless
/// its compaction is deferred or the order is already available there.
/// Returns the pages migrated.
pub fn kcompactd_do_work() -> u64 {
    let o = KCOMPACTD_ORDER.swap(0, Ordering::AcqRel);
    if o == 0 {
        return 0;
    }
    let order = o - 1;
    let mut migrated = 0;
    for z in ZoneType::ALL.iter().rev().copied() {
        if !PAGES.with(|p| p.buddy.zone(z).populated()) || compaction_deferred(z, order) {
            continue;
        }
        let Some((r, st)) = compact_zone(z, Some(order), MigrateType::Movable) else { return migrated };
        migrated += st.migrated;
        match r {
            CompactResult::Success | CompactResult::NotNeeded => compaction_defer_reset(z, order),
            CompactResult::Complete => defer_compaction(z, order),
            CompactResult::Skipped | CompactResult::NotSuitableZone => {}
        }
    }
    migrated
}
