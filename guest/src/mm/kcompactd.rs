//! kcompactd (Linux's mm/compaction.c `kcompactd`): background compaction
//! woken when a high-order allocation fails, as kswapd is woken for
//! reclaim. The allocation slow path calls [`wakeup_kcompactd`] with the
//! order and the request's nodes (lock-free: it may hold the page
//! allocator); the scheduler makes the kernel thread runnable at its next
//! switch (proc/sched.rs, as for kswapd), and [`kcompactd_do_work`]
//! compacts each woken node's zones for that order until a block of it
//! can be allocated (`compact_zone` stops there) or the zone's compaction
//! is deferred. Linux runs a kcompactd per node; one thread does every
//! node's work here, each node with its own pending order and each zone
//! with its own deferral.
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

use super::compaction::{compact_zone, node_zones};
use super::vmstat::{self, Event};
use crate::sync::{rank, SpinLock};
use core::sync::atomic::{AtomicU8, Ordering};
use mm_core::buddy::{MigrateType, ZoneId, MAX_NR_ZONES, MAX_NUMNODES};
use mm_core::compaction::CompactResult;

/// Linux's `COMPACT_MAX_DEFER_SHIFT`.
pub const COMPACT_MAX_DEFER_SHIFT: u32 = 6;

/// Per node, the order kcompactd is asked to compact for, plus one (0:
/// no wake pending): set by [`wakeup_kcompactd`], taken by the thread
/// (Linux's `pgdat->kcompactd_max_order`, one kcompactd per node).
pub static KCOMPACTD_ORDER: [AtomicU8; MAX_NUMNODES] = [const { AtomicU8::new(0) }; MAX_NUMNODES];

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

/// Deferral per zone of every node (by [`ZoneId`] index).
pub static DEFER: SpinLock<[Defer; MAX_NR_ZONES]> = SpinLock::new_with(
    "the compaction deferral state",
    rank::STATS,
    [Defer { considered: 0, defer_shift: 0, order_failed: u8::MAX }; MAX_NR_ZONES],
);

/// Linux's `wakeup_kcompactd` for each node in `nodes` (a failed request's
/// node mask): asks its kcompactd to compact for `order` (the largest
/// pending order wins). Lock-free; a wake while one is pending counts
/// once in `compact_daemon_wake`.
pub fn wakeup_kcompactd(order: u8, nodes: u8) {
    if order == 0 {
        return;
    }
    let n = super::numa::nr_nodes().min(MAX_NUMNODES);
    for (nid, slot) in KCOMPACTD_ORDER.iter().enumerate().take(n) {
        if nodes & (1 << nid) == 0 {
            continue;
        }
        let prev = slot.fetch_max(order + 1, Ordering::AcqRel);
        if prev == 0 {
            vmstat::count(Event::CompactDaemonWake, 1);
        }
    }
}

/// Whether a wake is pending on any node (the scheduler's check).
pub fn wake_pending() -> bool {
    KCOMPACTD_ORDER.iter().any(|o| o.load(Ordering::Acquire) != 0)
}

/// Linux's `compaction_deferred`: true if compaction of `z` for `order`
/// should be skipped this time (and counts the skip).
pub fn compaction_deferred(z: ZoneId, order: u8) -> bool {
    DEFER.with(|d| {
        let d = &mut d[z.index()];
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
pub fn defer_compaction(z: ZoneId, order: u8) {
    DEFER.with(|d| {
        let d = &mut d[z.index()];
        d.considered = 0;
        d.defer_shift = (d.defer_shift + 1).min(COMPACT_MAX_DEFER_SHIFT);
        d.order_failed = d.order_failed.min(order);
    });
}

/// Linux's `compaction_defer_reset` after a run that served `order`.
pub fn compaction_defer_reset(z: ZoneId, order: u8) {
    DEFER.with(|d| {
        let d = &mut d[z.index()];
        d.considered = 0;
        d.defer_shift = 0;
        if order >= d.order_failed {
            d.order_failed = order + 1;
        }
    });
}

/// One kcompactd pass (Linux's `kcompactd_do_work`, for every node with a
/// wake pending, as each node's kcompactd would): takes the node's
/// pending order and compacts each of its populated zones for it, highest
/// first, unless its compaction is deferred or the order is already
/// available there. One thread serves every node here. Returns the pages
/// migrated.
pub fn kcompactd_do_work() -> u64 {
    let mut migrated = 0;
    for (nid, slot) in KCOMPACTD_ORDER.iter().enumerate().take(super::numa::nr_nodes().min(MAX_NUMNODES)) {
        let o = slot.swap(0, Ordering::AcqRel);
        if o == 0 {
            continue;
        }
        let order = o - 1;
        for z in node_zones(nid as u8) {
            if compaction_deferred(z, order) {
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
    }
    migrated
}
