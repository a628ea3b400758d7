//! Page reclaim, as Linux's mm/vmscan.c: the LRU lists of user pages
//! ([`shrink_lruvec`]: anonymous pages go to swap, mm/swap.rs) and the
//! shrinkers (caches that give memory back on request, the slab
//! allocator's empty slabs first).
//!
//! Two reclaimers share [`shrink_node`]: direct reclaim, run by an
//! allocation in the slow path (page_alloc.rs) on the nodes it may use,
//! and kswapd, a kernel thread per node ("kswapd0", "kswapd1", ...:
//! proc/sched.rs runs them) woken when a zone of its node falls under its
//! low watermark and reclaiming that node until every zone of it is
//! above high. A node's pages are on its own lruvecs, one per memory
//! cgroup (mm-core's `LruSet`): [`shrink_lruvecs`] walks them all for
//! global reclaim (skipping protected groups) and only a group's own for
//! memcg reclaim (mm/memcg.rs).
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
use core::sync::atomic::{AtomicU8, Ordering};
use mm_core::buddy::Watermark;
use mm_core::lru::{LruList, ScanControl, DEF_PRIORITY, SWAP_CLUSTER_MAX};

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

/// Which lruvecs of a node a reclaim pass scans.
#[derive(Clone, Copy)]
pub enum Target {
    /// Global reclaim (`shrink_node_memcgs` under the root): every memory
    /// cgroup's lruvec on the node, honouring memory.min and memory.low.
    Global,
    /// A group's own reclaim (`try_to_free_mem_cgroup_pages`): the
    /// lruvecs of the groups in this subtree mask only, unprotected.
    Memcg(u64),
}

/// Linux's `shrink_node_memcgs` with `shrink_lruvec` on each lruvec of
/// node `nid` that `target` names (mm-core's `Lruvec::shrink_lruvec` with
/// the guest's rmap and swap as its `ReclaimOps`), pass by pass at
/// falling priority until `nr_to_reclaim` pages are freed
/// (`do_try_to_free_pages`); each writeback batch's swap-outs are written
/// in one device submission before more is scanned. Returns (scanned,
/// reclaimed). Anon pages (tmpfs pages among them) go to swap, clean
/// page-cache pages nothing maps are dropped; without swap only the
/// latter are reclaimed, and it runs only where reclaim may take its
/// locks: from an allocation whose caller holds nothing but mm locks (not
/// from inside reclaim itself).
pub fn shrink_lruvecs(nid: usize, kswapd: bool, target: Target, nr_to_reclaim: u64) -> (u64, u64) {
    if !crate::sync::holds_only_below(rank::RECLAIM) {
        return (0, 0);
    }
    // kswapd leaves the work to a reclaimer already at it; direct reclaim
    // waits for it (another CPU's kswapd holds the swap state for a whole
    // pass: failing here would count as no progress, and a few such
    // failures in a row would call the OOM killer while swap has room).
    let mut guard = if kswapd {
        let Some(g) = SWAP.try_lock() else { return (0, 0) };
        g
    } else {
        SWAP.lock()
    };
    let s = &mut *guard;
    let mask = match target {
        Target::Global => u64::MAX,
        Target::Memcg(m) => m,
    };
    let ids = |m: usize| mm_core::lru::lruvec_id(nid, m);
    // Anon pages need swap; clean page-cache pages (the file lists) are
    // reclaimed without it.
    let may_swap = swap::swap_on(s);
    let file_pages = PAGES.with(|p| {
        (0..memcg::MAX_MEMCG)
            .filter(|&m| mask & (1 << m) != 0)
            .filter_map(|m| p.lru.lists(ids(m)))
            .map(|v| v.nr(LruList::InactiveFile) + v.nr(LruList::ActiveFile))
            .sum::<u64>()
    });
    if !may_swap && file_pages == 0 {
        return (0, 0);
    }
    let swappiness = s.swappiness;
    let (mut scanned, mut freed, mut queued, mut written) = (0, 0, 0, 0);
    let mut priority = DEF_PRIORITY;
    // Memory cgroup protection, as of this call (memory.min, memory.low);
    // a group's own reclaim ignores it (Linux's protection applies below
    // the reclaim target only, which here is the group itself).
    let (below_min, below_low) = match target {
        Target::Global => memcg::protection(),
        Target::Memcg(_) => (0, 0),
    };
    let (mut low_reclaim, mut low_skipped, mut low_hit) = (false, false, 0u64);
    'passes: loop {
        for m in (0..memcg::MAX_MEMCG).filter(|&m| mask & (1 << m) != 0) {
            let id = ids(m);
            let bit = 1u64 << m;
            // `mem_cgroup_calculate_protection`: a protected group's
            // lruvec is skipped whole.
            if below_min & bit != 0 {
                continue;
            }
            if below_low & bit != 0 {
                if !low_reclaim {
                    low_skipped |= PAGES.with(|p| p.lru.lists(id).is_some_and(|v| v.nr_evictable() > 0));
                    continue;
                }
                low_hit |= bit;
            }
            // Scan for what the writeback batch still has room for; write
            // it when full, so each device submission carries a whole
            // batch.
            let room = (swap::WB_MAX as u64).saturating_sub(s.queued()).max(1);
            let mut sc = ScanControl::new(room.min(nr_to_reclaim.saturating_sub(freed).max(1)), swappiness, may_swap, kswapd);
            sc.priority = priority;
            let before_queued = s.queued() + s.drops_queued();
            let moved = PAGES.with(|p| {
                let super::PageAlloc { buddy, lru, ext, .. } = p;
                let Ok(mut v) = lru.lruvec(id) else { return None };
                if v.lists().nr_evictable() == 0 {
                    return None;
                }
                let before = *v.stat();
                v.shrink_lruvec(&mut sc, &mut swap::Reclaimer { s: &mut *s, buddy, ext });
                Some((v.stat().pgactivate - before.pgactivate, v.stat().pgdeactivate - before.pgdeactivate))
            });
            let Some((act, deact)) = moved else { continue };
            vmstat::count(Event::PgActivate, act);
            vmstat::count(Event::PgDeactivate, deact);
            scanned += sc.nr_scanned;
            freed += sc.nr_reclaimed;
            queued += s.queued() + s.drops_queued() - before_queued;
            if s.queued() >= swap::WB_MAX as u64 || s.drops_queued() >= swap::WB_MAX as u64 {
                written += swap::flush_writeback(s);
            }
            // A group's reclaim stops once it has enough (Linux's
            // `shrink_node_memcgs` goes on through the others only for
            // global reclaim, to keep their pressure even).
            if matches!(target, Target::Memcg(_)) && freed >= nr_to_reclaim {
                break 'passes;
            }
        }
        if freed >= nr_to_reclaim {
            break;
        }
        if priority == 0 {
            // Linux's `do_try_to_free_pages`: nothing enough came from
            // the unprotected groups, so memory.low gives way (a second
            // pass with `memcg_low_reclaim`); memory.min never does.
            if low_skipped && !low_reclaim {
                low_reclaim = true;
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
        if low_hit & (1 << g) != 0 {
            memcg::event(g, memcg::MemcgEvent::Low);
        }
    }
    written += swap::flush_writeback(s);
    // Pages whose write failed stayed resident, and clean pages someone
    // took meanwhile stayed cached: not reclaimed.
    let reclaimed = freed - (queued - written);
    (scanned, reclaimed)
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

/// Linux's `shrink_node` on node `nid`: every memory cgroup's lruvec on
/// it, then the shrinkers; the pages reclaimed. Counts pgscan/pgsteal
/// (LRU pages only, as Linux does).
pub fn shrink_node(nid: usize, kswapd: bool) -> u64 {
    let (scanned, stolen) = shrink_lruvecs(nid, kswapd, Target::Global, SWAP_CLUSTER_MAX);
    let (scan, steal) =
        if kswapd { (Event::PgScanKswapd, Event::PgStealKswapd) } else { (Event::PgScanDirect, Event::PgStealDirect) };
    vmstat::count(scan, scanned);
    vmstat::count(steal, stolen);
    stolen + shrink_slab()
}

/// Whether a populated zone of node `nid` has `free` at or below `mark`.
fn node_below(p: &super::PageAlloc, nid: usize, mark: Watermark) -> bool {
    p.buddy.node_zones(nid).iter().any(|z| z.managed_pages > 0 && z.nr_free <= z.watermark[mark as usize])
}

/// Direct reclaim for an allocation (`try_to_free_pages` ->
/// `shrink_zones`): the nodes the request may use (`nodemask`, a bit per
/// node; all with `u8::MAX`) in the order of `nid`'s zonelist; only
/// those whose zones are under their high watermark when there are such
/// (a node with room is left alone, as Linux's `shrink_zones` skips
/// balanced zones' nodes), else all of them (the request failed for
/// another reason, a high order). Node after node until a batch is
/// freed. The pages freed.
pub fn try_to_free_pages_on(nid: usize, nodemask: u8) -> u64 {
    vmstat::count(Event::AllocStall, 1);
    let (order, n) = PAGES.with(|p| {
        let mut out = [0u8; mm_core::numa::MAX_NODES];
        let mut n = 0;
        let nr = p.buddy.nr_nodes();
        let fallback = p.buddy.node_layout().fallback(nid.min(nr.saturating_sub(1)));
        let allowed = |node: u8| nodemask & (1 << node) != 0 && usize::from(node) < nr;
        let any_short = fallback.iter().any(|&node| allowed(node) && node_below(p, usize::from(node), Watermark::High));
        for &node in fallback {
            if allowed(node) && (!any_short || node_below(p, usize::from(node), Watermark::High)) && n < out.len() {
                out[n] = node;
                n += 1;
            }
        }
        (out, n)
    });
    let mut freed = 0;
    for &node in &order[..n] {
        freed += shrink_node(usize::from(node), false);
        if freed >= SWAP_CLUSTER_MAX {
            break;
        }
    }
    freed
}

/// Direct reclaim on behalf of the running CPU's node, any node allowed.
pub fn try_to_free_pages() -> u64 {
    let nid = super::numa::cpu_node(crate::arch::percpu::this_cpu().id);
    try_to_free_pages_on(usize::from(nid), u8::MAX)
}

/// Set by [`wakeup_kswapd`], taken by the scheduler: a bit per node
/// whose kswapd has a wake pending.
pub static KSWAPD_WAKE_PENDING: AtomicU8 = AtomicU8::new(0);

/// Linux's `wakeup_kswapd`: asks node `nid`'s kswapd to run. Lock-free
/// (see the module documentation); a wake while one is pending counts
/// once.
pub fn wakeup_kswapd(nid: usize) {
    let bit = 1u8 << (nid % mm_core::numa::MAX_NODES);
    if KSWAPD_WAKE_PENDING.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
        vmstat::count(Event::KswapdWake, 1);
    }
}

/// Wakes the kswapd of every node with a populated zone at or below its
/// low watermark among `nodemask`'s (the allocator's fast path after the
/// fact; Linux's `wake_all_kswapds` over the request's zonelist).
pub fn wakeup_kswapds_below_low(p: &super::PageAlloc, nodemask: u8) {
    for nid in 0..p.buddy.nr_nodes() {
        if nodemask & (1 << nid) != 0 && node_below(p, nid, Watermark::Low) {
            wakeup_kswapd(nid);
        }
    }
}

/// One run of node `nid`'s kswapd (Linux's `balance_pgdat`): reclaim the
/// node until every zone of it is above its high watermark, or until a
/// round frees nothing (what exists to reclaim is gone: Linux counts that
/// as a kswapd failure and leaves the rest to direct reclaim and the OOM
/// killer). The pages reclaimed.
pub fn balance_pgdat(nid: usize) -> u64 {
    vmstat::count(Event::PageOutRun, 1);
    let mut total = 0;
    while PAGES.with(|p| node_below(p, nid, Watermark::High)) {
        let n = shrink_node(nid, true);
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
