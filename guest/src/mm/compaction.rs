//! Memory compaction in the guest (Linux's mm/compaction.c): mm-core's
//! two-scanner run ([`CompactControl`]) over each zone of each NUMA node
//! (a [`ZoneId`]: pages move only inside their zone, so inside their
//! node), with page migration by mm/migrate.rs. Triggered on demand (the `compact_memory`
//! switch and `SYS_COMPACT`, Linux's /proc/sys/vm/compact_memory) and from
//! the allocation slow path for order > 0 ([`direct_compact`]).
//!
//! Locks: a run takes reclaim's state ([`SWAP`]) and the page allocator
//! ([`PAGES`]) for one cluster of at most `COMPACT_CLUSTER_MAX` pages
//! (isolate, migrate, record), then drops both, so interrupts and other
//! work go on between clusters as Linux drops `zone->lock` between
//! `isolate_migratepages` and `migrate_pages`. The run's isolated free
//! targets stay allocated in the buddy between clusters, so nobody else
//! takes them.

use super::migrate::{GuestMigrator, MigrateStats};
use super::swap::SWAP;
use super::{PageAlloc, PAGES};
use crate::fmt::Dec;
use crate::kprintln;
use crate::mm::oom_kill::SDec;
use alloc::vec::Vec;
use mm_core::buddy::{Gfp, MigrateType, ZoneId, ZoneType, NR_ZONES, NUMA_NO_NODE, PAGEBLOCK_ORDER};
use mm_core::compaction::{compaction_suitable, CompactControl, CompactResult, CompactStats, COMPACT_CLUSTER_MAX};

/// Totals since boot (Linux's `compact_stall`, `compact_success`, ... in
/// /proc/vmstat).
#[derive(Clone, Copy, Default, Debug)]
pub struct CompactTotals {
    /// Runs (whole-zone and direct).
    pub runs: u64,
    /// Direct compactions from the allocation slow path
    /// (`compact_stall`).
    pub stalls: u64,
    /// Direct compactions after which the allocation's order was free
    /// (`compact_success`).
    pub success: u64,
    /// What the scanners and migrations did.
    pub scan: CompactStats,
    /// Migration's own counters.
    pub migrate: MigrateStats,
}

/// The totals.
pub static TOTALS: crate::sync::SpinLock<CompactTotals> = crate::sync::SpinLock::new_with(
    "the compaction counters",
    crate::sync::rank::STATS,
    CompactTotals {
        runs: 0,
        stalls: 0,
        success: 0,
        scan: CompactStats {
            migrate_scanned: 0,
            free_scanned: 0,
            isolated_migrate: 0,
            isolated_free: 0,
            migrated: 0,
            migrate_failed: 0,
            migrate_blocks: 0,
            free_blocks: 0,
        },
        migrate: MigrateStats { success: 0, fail: 0, isolate_refused: 0, ptes_moved: 0 },
    },
);

/// The populated zones of node `nid`, highest first.
pub fn node_zones(nid: u8) -> impl Iterator<Item = ZoneId> {
    let populated: [bool; NR_ZONES] =
        PAGES.with(|p| core::array::from_fn(|t| p.buddy.zone(ZoneId::new(nid, ZoneType::ALL[t])).populated()));
    ZoneType::ALL.into_iter().rev().filter(move |&t| populated[t as usize]).map(move |t| ZoneId::new(nid, t))
}

/// Linux's `compact_zone`, run in clusters (module documentation):
/// compacts zone `z` (of any node) for an allocation of `order` and `mt`
/// (stops as soon as one could succeed), or wholly (`order` None). None
/// if reclaim's state is not set up yet (early boot: nothing is movable
/// then).
pub fn compact_zone(z: ZoneId, order: Option<u8>, mt: MigrateType) -> Option<(CompactResult, CompactStats)> {
    SWAP.try_with(|_| ())?;
    if let Some(o) = order {
        let r = PAGES.with(|p| compaction_suitable(&p.buddy, z, o));
        if r != CompactResult::Success {
            return Some((r, CompactStats::default()));
        }
    }
    let mut cc = PAGES.with(|p| {
        super::percpu::drain_all_locked(p);
        CompactControl::new(&p.buddy, z, order, mt)
    });
    cc.reserve_buffers();
    let mut mstats = MigrateStats::default();
    // The cluster's buffers, allocated here: nothing may allocate with the
    // page allocator held (the heap needs it).
    let mut batch: Vec<u64> = Vec::with_capacity(COMPACT_CLUSTER_MAX);
    let mut isolated: Vec<(u64, u8, u16)> = Vec::with_capacity(COMPACT_CLUSTER_MAX);
    let result = loop {
        let step = SWAP.with(|s| {
            PAGES.with(|p| {
                let PageAlloc { buddy, lru, ext, .. } = p;
                let mut m =
                    GuestMigrator::new(s, lru, ext, core::mem::take(&mut batch), core::mem::take(&mut isolated));
                let r = cluster(buddy, &mut cc, &mut m);
                mstats.success += m.stats.success;
                mstats.fail += m.stats.fail;
                mstats.isolate_refused += m.stats.isolate_refused;
                mstats.ptes_moved += m.stats.ptes_moved;
                (batch, isolated) = m.into_buffers();
                r
            })
        });
        if let Some(r) = step {
            break r;
        }
    };
    PAGES.with(|p| {
        if let Err(e) = cc.release(&mut p.buddy) {
            kprintln!("compaction: releasing free pages: {}", e);
        }
    });
    use super::vmstat::{count, Event};
    count(Event::CompactMigrateScanned, cc.stats.migrate_scanned);
    count(Event::CompactFreeScanned, cc.stats.free_scanned);
    count(Event::CompactIsolated, cc.stats.isolated_migrate + cc.stats.isolated_free);
    TOTALS.with(|t| {
        t.runs += 1;
        t.scan += cc.stats;
        t.migrate.success += mstats.success;
        t.migrate.fail += mstats.fail;
        t.migrate.isolate_refused += mstats.isolate_refused;
        t.migrate.ptes_moved += mstats.ptes_moved;
    });
    Some((result, cc.stats))
}

/// One step of the run, everything held: `Some(result)` when it is over,
/// else isolates a cluster of movable pages and migrates each into a free
/// target (putting back what could not move).
fn cluster(
    buddy: &mut mm_core::buddy::BuddyAllocator<'static>,
    cc: &mut CompactControl,
    m: &mut GuestMigrator<'_>,
) -> Option<CompactResult> {
    if let Some(r) = cc.finished(buddy) {
        return Some(r);
    }
    let b: &mm_core::buddy::BuddyAllocator<'static> = buddy;
    if cc.isolate_migratepages(b, |pfn| m.isolate(b, pfn)) == 0 {
        return None;
    }
    let mut pages = core::mem::take(&mut m.batch);
    cc.take_migratepages_into(&mut pages);
    let mut i = 0;
    while i < pages.len() {
        let src = pages[i];
        i += 1;
        let Some(dst) = cc.alloc_target(buddy) else {
            // No targets left: the scanners met. Put the rest back.
            m.putback(src);
            pages[i..].iter().for_each(|&p| m.putback(p));
            break;
        };
        match m.migrate(src, dst) {
            // The old frames are freed after one TLB flush per batch.
            Ok(()) if m.moved_full() => m.complete(|s, d| migrated(buddy, cc, s, d)),
            Ok(()) => {}
            Err(_) => {
                cc.migrate_failed(dst);
                m.putback(src);
            }
        }
    }
    m.complete(|s, d| migrated(buddy, cc, s, d));
    pages.clear();
    m.batch = pages;
    None
}

/// A page moved from `src` to `dst`, its TLB flush done: the buddy gives
/// `dst` the references and frees `src`.
fn migrated(buddy: &mut mm_core::buddy::BuddyAllocator<'static>, cc: &mut CompactControl, src: u64, dst: u64) {
    if let Err(e) = cc.migrated(buddy, src, dst) {
        // The page's contents and mappings are at dst already; the buddy
        // refused the hand-over: say so loudly (the host's --verify will
        // show the refcounts).
        kprintln!("compaction: migrate_transfer({:#x} -> {:#x}): {}", src, dst, e);
    }
}

/// Linux's `compact_nodes` (/proc/sys/vm/compact_memory): compacts every
/// populated zone of every node wholly. Pages migrated.
pub fn compact_memory() -> u64 {
    (0..crate::mm::numa::nr_nodes() as u8).map(compact_node).sum()
}

/// Linux's `compact_node` (/sys/devices/system/node/nodeN/compact):
/// compacts node `nid`'s populated zones wholly. Pages migrated.
pub fn compact_node(nid: u8) -> u64 {
    let mut migrated = 0;
    for z in node_zones(nid) {
        if let Some((_, st)) = compact_zone(z, None, MigrateType::Movable) {
            migrated += st.migrated;
        }
    }
    migrated
}

/// The nodes a request walks, in its zonelist's order (Linux's
/// `for_each_zone_zonelist_nodemask`): its preferred node (the running
/// CPU's for `NUMA_NO_NODE`), then the others by distance, only those
/// its node mask allows.
fn zonelist_nodes(gfp: Gfp) -> alloc::vec::Vec<u8> {
    let nid = if gfp.nid == NUMA_NO_NODE {
        crate::mm::numa::cpu_node(crate::arch::percpu::this_cpu().id)
    } else {
        gfp.nid
    };
    PAGES.with(|p| {
        let l = p.buddy.node_layout();
        let order = l.fallback(usize::from(nid));
        let mut v: alloc::vec::Vec<u8> = order.iter().copied().filter(|&n| gfp.nodemask & (1 << (n & 7)) != 0).collect();
        if v.is_empty() && l.nr_nodes() <= 1 {
            v.push(0);
        }
        v
    })
}

/// Linux's `try_to_compact_pages` for the allocation slow path: compacts
/// the zones the request may use, highest first, for `order`; true if a
/// run made progress (migrated pages or found the order free).
pub fn direct_compact(order: u8, gfp: Gfp) -> bool {
    use super::kcompactd::{compaction_defer_reset, compaction_deferred, defer_compaction};
    use super::vmstat::{count, Event};
    let mut progress = false;
    TOTALS.with(|t| t.stalls += 1);
    count(Event::CompactStall, 1);
    let zones: alloc::vec::Vec<ZoneId> =
        zonelist_nodes(gfp).into_iter().flat_map(node_zones).filter(|z| z.kind() <= gfp.zone).collect();
    for z in zones {
        if compaction_deferred(z, order) {
            continue;
        }
        let Some((r, st)) = compact_zone(z, Some(order), gfp.migratetype) else { return false };
        if r == CompactResult::Success {
            TOTALS.with(|t| t.success += 1);
            count(Event::CompactSuccess, 1);
            compaction_defer_reset(z, order);
            return true;
        }
        if r == CompactResult::Complete {
            defer_compaction(z, order);
        }
        progress |= st.migrated > 0;
    }
    count(Event::CompactFail, 1);
    progress
}

/// Whether a block of `order` can be allocated now, without reclaim or
/// compaction (tries it and frees it at once).
pub fn try_order(order: u8) -> bool {
    let cpu = crate::arch::percpu::this_cpu().id;
    PAGES.with(|p| match p.buddy.alloc_pages(cpu, order, mm_core::buddy::GFP_HIGHUSER_MOVABLE) {
        Ok(pfn) => {
            crate::mm::tlbtrace::free(pfn, order);
            let _ = p.buddy.free_pages(cpu, pfn, order);
            true
        }
        Err(_) => false,
    })
}

/// Free blocks of `order` or larger, all zones of all nodes.
pub fn free_blocks_at_least(order: u8) -> u64 {
    (0..crate::mm::numa::nr_nodes() as u8).map(|n| node_free_blocks_at_least(n, order)).sum()
}

/// Free blocks of `order` or larger in node `nid`'s zones.
pub fn node_free_blocks_at_least(nid: u8, order: u8) -> u64 {
    PAGES.with(|p| {
        ZoneType::ALL
            .iter()
            .map(|&t| p.buddy.free_blocks(ZoneId::new(nid, t)).iter().skip(order as usize).sum::<u64>())
            .sum()
    })
}

/// The lowest unusable-free-space index (thousandths) for `order` over
/// the populated zones: 1000 when no zone can serve the order from its
/// free lists, lower as soon as one can (Linux's index is per zone; the
/// extfrag view prints every zone's). -1 if no zone is populated.
pub fn unusable_index(order: u8) -> i64 {
    PAGES.with(|p| {
        (0..p.buddy.nr_nodes() * NR_ZONES)
            .filter_map(ZoneId::from_index)
            .filter(|&z| p.buddy.zone(z).populated())
            .map(|z| p.buddy.unusable_free_index(z, order))
            .min()
            .unwrap_or(-1)
    })
}

/// An order-9 movable allocation through the whole slow path (direct
/// reclaim, then direct compaction; never the OOM killer), freed at once:
/// the pages compaction migrated meanwhile, or -ENOMEM if it failed.
pub fn alloc_order9_direct() -> i64 {
    use super::page_alloc::{gfp, GfpMask};
    let req = GfpMask {
        gfp: mm_core::buddy::GFP_HIGHUSER_MOVABLE,
        flags: gfp::KSWAPD_RECLAIM | gfp::DIRECT_RECLAIM | gfp::NORETRY,
    };
    let before = TOTALS.with(|t| t.scan.migrated);
    match super::page_alloc::alloc_pages(PAGEBLOCK_ORDER, req) {
        Ok(pfn) => {
            if let Err(e) = super::free_pages(pfn, PAGEBLOCK_ORDER) {
                kprintln!("compaction: freeing the order-9 test block: {}", e);
            }
            (TOTALS.with(|t| t.scan.migrated) - before) as i64
        }
        Err(_) => -crate::proc::abi::ENOMEM,
    }
}

/// An order-9 movable allocation that may not block (no direct reclaim
/// or compaction; Linux's `GFP_TRANSHUGE_LIGHT`-like request), freed at
/// once: 1 if it succeeded, 0 if it failed (the slow path then woke
/// kswapd and kcompactd for order 9).
pub fn alloc_order9_no_compact() -> i64 {
    use super::page_alloc::{gfp, GfpMask};
    let req = GfpMask { gfp: mm_core::buddy::GFP_HIGHUSER_MOVABLE, flags: gfp::KSWAPD_RECLAIM };
    match super::page_alloc::alloc_pages(PAGEBLOCK_ORDER, req) {
        Ok(pfn) => {
            if let Err(e) = super::free_pages(pfn, PAGEBLOCK_ORDER) {
                kprintln!("compaction: freeing the order-9 test block: {}", e);
            }
            1
        }
        Err(_) => 0,
    }
}

/// An order-9 movable allocation on node `nid` only (`__GFP_THISNODE`)
/// that may not block, freed at once: 1 if it succeeded, 0 if it failed
/// (the slow path then woke kswapd and that node's kcompactd), -EINVAL
/// for a node without memory.
pub fn alloc_order9_on_node(nid: u64) -> i64 {
    use super::page_alloc::{gfp, GfpMask};
    if nid >= crate::mm::numa::nr_nodes() as u64 {
        return -crate::proc::abi::EINVAL;
    }
    let n = nid as u8;
    let req = GfpMask { gfp: mm_core::buddy::GFP_HIGHUSER_MOVABLE.on_nodes(n, 1 << n), flags: gfp::KSWAPD_RECLAIM };
    match super::page_alloc::alloc_pages(PAGEBLOCK_ORDER, req) {
        Ok(pfn) => {
            if let Err(e) = super::free_pages(pfn, PAGEBLOCK_ORDER) {
                kprintln!("compaction: freeing the order-9 test block: {}", e);
            }
            1
        }
        Err(_) => 0,
    }
}

/// `SYS_COMPACT(op, arg)`: 0 compacts all memory (pages migrated); 1 tries an
/// order-9 allocation without reclaim or compaction (1 if it succeeded);
/// 2 the lowest unusable index of order 9 over the zones (thousandths); 3 the free blocks of
/// order 9 or more; 4 an order-9 allocation through the slow path, so by
/// direct compaction ([`alloc_order9_direct`]); 7 an order-9 allocation
/// on node `arg` only without compaction ([`alloc_order9_on_node`]); 8
/// the free blocks of order 9 or more on node `arg`; 9 compacts node
/// `arg` (pages migrated). A node beyond the last: -EINVAL.
pub fn sys_compact(op: u64, arg: u64) -> i64 {
    let nodes = crate::mm::numa::nr_nodes() as u64;
    match op {
        7 => alloc_order9_on_node(arg),
        8 | 9 if arg >= nodes => -crate::proc::abi::EINVAL,
        8 => node_free_blocks_at_least(arg as u8, PAGEBLOCK_ORDER) as i64,
        9 => compact_node(arg as u8) as i64,
        4 => alloc_order9_direct(),
        5 => alloc_order9_no_compact(),
        6 => TOTALS.with(|t| t.scan.migrated) as i64,
        0 => compact_memory() as i64,
        1 => try_order(PAGEBLOCK_ORDER) as i64,
        2 => unusable_index(PAGEBLOCK_ORDER),
        3 => free_blocks_at_least(PAGEBLOCK_ORDER) as i64,
        _ => -crate::proc::abi::EINVAL,
    }
}

/// The `compact_memory` switch: compacts all memory and prints what it
/// did, with the order-9 unusable index before and after.
pub fn compact_memory_verbose() {
    let before = unusable_index(PAGEBLOCK_ORDER);
    let free9 = free_blocks_at_least(PAGEBLOCK_ORDER);
    let migrated = compact_memory();
    let t = TOTALS.with(|t| *t);
    kprintln!(
        "compact_memory: {} pages migrated ({} failed, {} refused at isolation, {} PTEs moved); migrate_scanned {} free_scanned {}; order-9 blocks free {} -> {}; unusable index order 9: {} -> {}",
        Dec(migrated),
        Dec(t.migrate.fail),
        Dec(t.migrate.isolate_refused),
        Dec(t.migrate.ptes_moved),
        Dec(t.scan.migrate_scanned),
        Dec(t.scan.free_scanned),
        Dec(free9),
        Dec(free_blocks_at_least(PAGEBLOCK_ORDER)),
        SDec(before),
        SDec(unusable_index(PAGEBLOCK_ORDER))
    );
}

/// The console as a `fmt::Write` (written to with the page allocator
/// held: nothing here may allocate).
struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        crate::console::print(format_args!("{}", s));
        Ok(())
    }
}

/// /proc/pagetypeinfo.
pub fn pagetypeinfo() {
    PAGES.with(|p| {
        let _ = p.buddy.pagetypeinfo_text(&mut Console);
    });
}

/// /sys/kernel/debug/extfrag/{unusable_index,extfrag_index}.
pub fn extfrag() {
    PAGES.with(|p| {
        kprintln!("unusable_index:");
        let _ = p.buddy.unusable_index_text(&mut Console);
        kprintln!("extfrag_index:");
        let _ = p.buddy.extfrag_index_text(&mut Console);
    });
}
