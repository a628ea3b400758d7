//! Page reclaim, as Linux's mm/vmscan.c: the LRU lists of user pages
//! ([`shrink_lruvec`]: anonymous pages go to swap, mm/swap.rs) and the
//! shrinkers (caches that give memory back on request, the slab
//! allocator's empty slabs first).
//!
//! Two reclaimers share [`shrink_node`]: direct reclaim, run by an
//! allocation in the slow path (page_alloc.rs), and kswapd, a kernel
//! thread (proc/sched.rs runs it) woken when a zone falls under its low
//! watermark and reclaiming until every zone is above high.
//!
//! Waking kswapd must never take a lock: the slow path wakes it even when
//! its caller holds the page allocator, which ranks inside the scheduler
//! lock. So a wake sets [`KSWAPD_WAKE_PENDING`] and the scheduler, which
//! looks at it on every switch, makes the thread runnable.

use super::memcg;
use super::swap::{self, SWAP};
use super::vmstat::{self, Event};
use super::PAGES;
use crate::sync::{rank, SpinLock};
use core::sync::atomic::{AtomicBool, Ordering};
use mm_core::buddy::Watermark;
use mm_core::lru::{ReclaimOps, ScanControl, DEF_PRIORITY, SWAP_CLUSTER_MAX};

/// A cache that can give memory back (Linux's `struct shrinker`).
pub struct Shrinker {
    /// Its name, for reports.
    pub name: &'static str,
    /// Objects it could free now (`count_objects`); 0 skips it.
    pub count_objects: fn() -> u64,
    /// Frees up to `nr_to_scan` objects; returns the pages that went
    /// back to the page allocator (`scan_objects`, whose freed pages
    /// Linux adds through `reclaim_state`).
    pub scan_objects: fn(nr_to_scan: u64) -> u64,
}

/// Most shrinkers.
const MAX_SHRINKERS: usize = 8;

static SHRINKERS: SpinLock<[Option<&'static Shrinker>; MAX_SHRINKERS]> =
    SpinLock::new_with("the shrinker list", rank::STATS, [None; MAX_SHRINKERS]);

/// Registers a shrinker (`register_shrinker`); false if the list is full.
pub fn register_shrinker(s: &'static Shrinker) -> bool {
    SHRINKERS.with(|l| match l.iter_mut().find(|x| x.is_none()) {
        Some(slot) => {
            *slot = Some(s);
            true
        }
        None => false,
    })
}

/// The slab allocator's shrinker: every cache's empty slabs go back to
/// the buddy allocator (`kmem_cache_shrink` on all caches). It counts in
/// pages: the slabs it holds.
pub static SLAB_SHRINKER: Shrinker = Shrinker {
    name: "slab",
    count_objects: || {
        PAGES.with(|p| {
            p.slab
                .caches()
                .filter_map(|(id, _)| p.slab.info(&p.buddy, id))
                // Whole slabs' worth of free objects: at most that many
                // slabs can be empty.
                .map(|i| (i.num_objs - i.active_objs) / i.objperslab.max(1) * i.pagesperslab)
                .sum()
        })
    },
    scan_objects: |_| {
        PAGES.with(|p| {
            let before = p.buddy.counts();
            let cpu = crate::arch::percpu::this_cpu().id;
            let _ = p.slab.flush_cpu(&mut p.buddy, &mut p.phys, cpu);
            let _ = p.slab.shrink_all(&mut p.buddy, &mut p.phys);
            let after = p.buddy.counts();
            (after.free + after.pcp).saturating_sub(before.free + before.pcp)
        })
    },
};

/// Registers the built-in shrinkers (at boot).
pub fn init() {
    if !register_shrinker(&SLAB_SHRINKER) {
        crate::kprintln!("vmscan: no room for the {} shrinker", SLAB_SHRINKER.name);
    }
}

/// Linux's `shrink_slab`: asks every shrinker for what it holds and has
/// it free that much; the pages freed.
pub fn shrink_slab() -> u64 {
    let list = SHRINKERS.with(|l| *l);
    let mut freed = 0;
    for s in list.iter().flatten() {
        let n = (s.count_objects)();
        if n == 0 {
            continue;
        }
        vmstat::count(Event::SlabsScanned, n);
        freed += (s.scan_objects)(n);
    }
    freed
}

/// Linux's `shrink_lruvec` on the node's lists (mm-core's
/// `Lruvec::shrink_lruvec` with the guest's rmap and swap as its
/// `ReclaimOps`), batch by batch: each batch's swap-outs are written in
/// one device submission before the next batch is scanned, at falling
/// priority until a batch's worth is freed (`do_try_to_free_pages`).
/// Returns (scanned, reclaimed). Anon pages (tmpfs pages among them) go
/// to swap, clean page-cache pages nothing maps are dropped; without swap
/// only the latter are reclaimed, and it runs only
/// where reclaim may take its locks: from an allocation whose caller
/// holds nothing but mm locks (not from inside reclaim itself).
pub fn shrink_lruvec(kswapd: bool) -> (u64, u64) {
    if !crate::sync::holds_only_below(rank::RECLAIM) {
        return (0, 0);
    }
    let Some(mut guard) = SWAP.try_lock() else { return (0, 0) };
    let s = &mut *guard;
    // Anon pages need swap; clean page-cache pages (the file lists) are
    // reclaimed without it.
    let may_swap = swap::swap_on(s);
    let file_pages =
        PAGES.with(|p| p.lru.nr(mm_core::lru::LruList::InactiveFile) + p.lru.nr(mm_core::lru::LruList::ActiveFile));
    if !may_swap && file_pages == 0 {
        return (0, 0);
    }
    let swappiness = s.swappiness;
    let (mut scanned, mut freed, mut queued, mut written) = (0, 0, 0, 0);
    let mut priority = DEF_PRIORITY;
    // Memory cgroup protection, as of this call (memory.min, memory.low).
    let (below_min, below_low) = memcg::protection();
    let mut prot = Protection { below_min, below_low, low_reclaim: false, low_skipped: false, low_hit: 0 };
    loop {
        // Scan for what the writeback batch still has room for; write it
        // when full, so each device submission carries a whole batch.
        let room = (swap::WB_MAX as u64).saturating_sub(s.queued()).max(1);
        let mut sc = ScanControl::new(room, swappiness, may_swap, kswapd);
        sc.priority = priority;
        let before_queued = s.queued() + s.drops_queued();
        let (act, deact) = PAGES.with(|p| {
            let before = p.lru.stat;
            let super::PageAlloc { buddy, lru, ext, .. } = p;
            let mut ops = Protected { r: swap::Reclaimer { s: &mut *s, buddy, ext }, p: &mut prot };
            lru.shrink_lruvec(&mut sc, &mut ops);
            (p.lru.stat.pgactivate - before.pgactivate, p.lru.stat.pgdeactivate - before.pgdeactivate)
        });
        vmstat::count(Event::PgActivate, act);
        vmstat::count(Event::PgDeactivate, deact);
        scanned += sc.nr_scanned;
        freed += sc.nr_reclaimed;
        queued += s.queued() + s.drops_queued() - before_queued;
        if s.queued() >= swap::WB_MAX as u64 || s.drops_queued() >= swap::WB_MAX as u64 {
            written += swap::flush_writeback(s);
        }
        if freed >= SWAP_CLUSTER_MAX {
            break;
        }
        if priority == 0 {
            // Linux's `do_try_to_free_pages`: nothing enough came from
            // the unprotected groups, so memory.low gives way (a second
            // pass with `memcg_low_reclaim`); memory.min never does.
            if prot.low_skipped && !prot.low_reclaim {
                prot.low_reclaim = true;
                priority = DEF_PRIORITY;
                continue;
            }
            break;
        }
        priority -= 1;
    }
    // `memcg_memory_event(MEMCG_LOW)` for each group the second pass
    // reclaimed below its memory.low.
    for g in 0..memcg::MAX_MEMCG {
        if prot.low_hit & (1 << g) != 0 {
            memcg::event(g, memcg::MemcgEvent::Low);
        }
    }
    written += swap::flush_writeback(s);
    // Pages whose write failed stayed resident, and clean pages someone
    // took meanwhile stayed cached: not reclaimed.
    let reclaimed = freed - (queued - written);
    (scanned, reclaimed)
}

/// Global reclaim's view of memory cgroup protection (the
/// `scan_control` fields `memcg_low_reclaim` and `memcg_low_skipped`).
struct Protection {
    /// Groups at or under their effective memory.min: never reclaimed.
    below_min: u64,
    /// Groups at or under their effective memory.low: skipped unless
    /// `low_reclaim`.
    below_low: u64,
    /// The second pass: memory.low no longer protects.
    low_reclaim: bool,
    /// A page was skipped for memory.low (a second pass may help).
    low_skipped: bool,
    /// Groups below memory.low the second pass scanned (their `low`
    /// events).
    low_hit: u64,
}

/// The guest's reclaim operations with memory cgroup protection.
struct Protected<'a, 'b> {
    r: swap::Reclaimer<'b>,
    p: &'a mut Protection,
}

impl ReclaimOps for Protected<'_, '_> {
    fn folio_referenced(&mut self, pfn: u64) -> mm_core::lru::Referenced {
        self.r.folio_referenced(pfn)
    }

    fn reclaim_folio(
        &mut self,
        pfn: u64,
        anon: bool,
        shadow: mm_core::lru::Shadow,
        clean_only: bool,
    ) -> mm_core::lru::ReclaimOutcome {
        self.r.reclaim_folio(pfn, anon, shadow, clean_only)
    }

    fn protected(&mut self, pfn: u64) -> bool {
        let Some((m, _)) = self.r.buddy.page(pfn).and_then(mm_core::memcg::tag) else { return false };
        let bit = 1u64.checked_shl(m as u32).unwrap_or(0);
        if self.p.below_min & bit != 0 {
            return true;
        }
        if self.p.below_low & bit != 0 {
            if self.p.low_reclaim {
                self.p.low_hit |= bit;
                return false;
            }
            self.p.low_skipped = true;
            return true;
        }
        false
    }
}

/// MADV_PAGEOUT's reclaim (Linux's `reclaim_pages`): the pages `pfns`
/// names are reclaimed at once, whatever their lists and accessed bits
/// say (anon ones to swap, clean page-cache pages dropped), in writeback
/// batches as [`shrink_lruvec`] writes them. The caller picked pages its
/// own process alone maps. Returns the pages freed (written, or dropped);
/// 0 where reclaim may not take its locks.
pub fn reclaim_pages(pfns: &[u64]) -> u64 {
    if !crate::sync::holds_only_below(rank::RECLAIM) {
        return 0;
    }
    let mut guard = SWAP.lock();
    let s = &mut *guard;
    let (mut freed, mut queued, mut written) = (0, 0, 0);
    let mut rest = pfns;
    while !rest.is_empty() {
        let room = (swap::WB_MAX as u64).saturating_sub(s.queued().max(s.drops_queued())).max(1) as usize;
        let (chunk, next) = rest.split_at(room.min(rest.len()));
        let before = s.queued() + s.drops_queued();
        freed += PAGES.with(|p| {
            let super::PageAlloc { buddy, lru, ext, .. } = p;
            lru.reclaim_pages(chunk, &mut swap::Reclaimer { s: &mut *s, buddy, ext })
        });
        queued += s.queued() + s.drops_queued() - before;
        if s.queued() >= swap::WB_MAX as u64 || s.drops_queued() >= swap::WB_MAX as u64 {
            written += swap::flush_writeback(s);
        }
        rest = next;
    }
    written += swap::flush_writeback(s);
    freed - (queued - written)
}

/// Linux's `shrink_node`: the LRU lists, then the shrinkers; the pages
/// reclaimed. Counts pgscan/pgsteal (LRU pages only, as Linux does).
pub fn shrink_node(kswapd: bool) -> u64 {
    let (scanned, stolen) = shrink_lruvec(kswapd);
    let (scan, steal) =
        if kswapd { (Event::PgScanKswapd, Event::PgStealKswapd) } else { (Event::PgScanDirect, Event::PgStealDirect) };
    vmstat::count(scan, scanned);
    vmstat::count(steal, stolen);
    stolen + shrink_slab()
}

/// Direct reclaim for an allocation (`try_to_free_pages`): the pages
/// freed. The caller holds no page-allocator lock.
pub fn try_to_free_pages() -> u64 {
    vmstat::count(Event::AllocStall, 1);
    shrink_node(false)
}

/// Set by [`wakeup_kswapd`], taken by the scheduler.
pub static KSWAPD_WAKE_PENDING: AtomicBool = AtomicBool::new(false);

/// Linux's `wakeup_kswapd`: asks kswapd to run. Lock-free (see the
/// module documentation); a wake while one is pending counts once.
pub fn wakeup_kswapd() {
    if !KSWAPD_WAKE_PENDING.swap(true, Ordering::AcqRel) {
        vmstat::count(Event::KswapdWake, 1);
    }
}

/// Whether a populated zone has `free` at or below its `mark`.
fn any_zone_below(p: &super::PageAlloc, mark: Watermark) -> bool {
    p.buddy.zones().iter().any(|z| z.managed_pages > 0 && z.nr_free <= z.watermark[mark as usize])
}

/// One kswapd run (Linux's `balance_pgdat`): reclaim until every zone is
/// above its high watermark, or until a round frees nothing (what exists
/// to reclaim is gone: Linux counts that as a kswapd failure and leaves
/// the rest to direct reclaim and the OOM killer). The pages reclaimed.
pub fn balance_pgdat() -> u64 {
    vmstat::count(Event::PageOutRun, 1);
    let mut total = 0;
    while PAGES.with(|p| any_zone_below(p, Watermark::High)) {
        let n = shrink_node(true);
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}

/// Reclaims until `pages` pages are free above the zones' high watermarks
/// (or reclaim stops making progress), for a caller about to allocate
/// them where it cannot reclaim (fork's page tables are allocated under
/// the page allocator's lock, as Linux's are under the page-table lock
/// once `pte_alloc` has preallocated). Runs with no lock held.
pub fn reclaim_for(pages: u64) {
    for _ in 0..64 {
        let short = PAGES.with(|p| {
            let c = super::percpu::counts(p);
            let high: u64 = p.buddy.zones().iter().map(|z| z.watermark[Watermark::High as usize]).sum();
            c.free + c.pcp < high + pages
        });
        if !short || try_to_free_pages() == 0 {
            return;
        }
    }
}
