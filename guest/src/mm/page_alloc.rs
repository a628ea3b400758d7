//! The one way the kernel asks for memory: a fast path (one try of the
//! buddy or slab allocator) and, when it fails for lack of pages, one slow
//! path, as Linux's `__alloc_pages` -> `__alloc_pages_slowpath`
//! (mm/page_alloc.c). Every allocator (`alloc_pages`, kmalloc and the Rust
//! heap, vmalloc's pages, page-table pages, user frames) comes through
//! here, so reclaim, compaction and the OOM killer (issue 13) hook in at one
//! place.
//!
//! The slow path, in Linux's order:
//! 1. deferred memory: hand the zones the next chunk of not yet
//!    initialised RAM and retry, until none is left (Linux does this in
//!    `get_page_from_freelist` via `_deferred_grow_zone`);
//!    then the per-CPU lists drained into the buddy and one retry (the
//!    watermark checks count only the buddy's free pages; Linux drains
//!    with `drain_all_pages` when an allocation still fails);
//! 2. wake kswapd ([`wake_kswapd`], if the request allows it);
//! 3. direct reclaim ([`direct_reclaim`]), then direct compaction for
//!    order > 0 ([`direct_compact`]), retrying while either makes progress
//!    (at most [`MAX_RECLAIM_RETRIES`] rounds without a success), if the
//!    request may block and its caller holds no page-allocator lock;
//! 4. the OOM killer ([`out_of_memory`]) unless the request says
//!    `NORETRY`, retrying if it freed something;
//! 5. give up: the caller sees its allocator's own error.
//!
//! Step 2 wakes kswapd (mm/vmscan.rs), step 3 reclaims what the
//! shrinkers give back and swaps anon pages out, direct compaction is
//! mm/compaction.rs, step 4 is mm/oom_kill.rs. Steps 3-4 run without the page allocator lock ([`super::PAGES`]): reclaim must
//! take mm locks, which rank outside it (sync.rs), so the slow path takes
//! the lock only around each retry and each deferred chunk, as Linux holds
//! `zone->lock` only inside `rmqueue`. Callers that hold the lock across
//! the request ([`alloc_locked`]: page-table pages in the middle of a
//! mapping edit, user frames in the fault path, vmalloc's pages) cannot
//! block, like Linux's atomic context: for them the slow path stops after
//! the deferred memory and wakes kswapd only. Issue 13 has to move those
//! allocations out from under the lock (allocate first, then lock and
//! map, as Linux's `pte_alloc` and `do_anonymous_page` do) before they can
//! reclaim.

use super::{grow_locked, percpu, PageAlloc, PAGES};
use crate::arch::percpu::this_cpu;
use core::sync::atomic::{AtomicU64, Ordering};
use mm_core::buddy::{BuddyError, Gfp, PAGE_ALLOC_COSTLY_ORDER};
use mm_core::slab::SlabError;

/// What a request lets the slow path do (Linux's `__GFP_*` action bits).
pub mod gfp {
    /// May wake the background reclaimer (`__GFP_KSWAPD_RECLAIM`).
    pub const KSWAPD_RECLAIM: u32 = 1 << 0;
    /// May reclaim and compact itself, i.e. block (`__GFP_DIRECT_RECLAIM`).
    pub const DIRECT_RECLAIM: u32 = 1 << 1;
    /// Give up after one round of reclaim, never call the OOM killer
    /// (`__GFP_NORETRY`).
    pub const NORETRY: u32 = 1 << 2;
    /// Retry reclaim as usual but never call the OOM killer
    /// (`__GFP_RETRY_MAYFAIL`): the user fault path, which calls the
    /// killer itself once it has dropped its locks.
    pub const RETRY_MAYFAIL: u32 = 1 << 3;
    /// An interleave policy chose the preferred node (numastat's
    /// `interleave_hit` counts when it is served there).
    pub const INTERLEAVE: u32 = 1 << 4;
}

/// An allocation request: mm-core's part (zone and watermark policy, what
/// the buddy allocator reads) and the slow path's (`gfp` bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GfpMask {
    /// Zone and watermark policy.
    pub gfp: Gfp,
    /// `gfp::*` bits.
    pub flags: u32,
}

impl GfpMask {
    /// Whether `bit` (a `gfp::*` constant) is set.
    pub fn allows(self, bit: u32) -> bool {
        self.flags & bit != 0
    }
}

/// Ordinary kernel allocations: may reclaim (`GFP_KERNEL`).
pub const GFP_KERNEL: GfpMask =
    GfpMask { gfp: mm_core::buddy::GFP_KERNEL, flags: gfp::KSWAPD_RECLAIM | gfp::DIRECT_RECLAIM };
/// A user page for the fault path (`GFP_HIGHUSER_MOVABLE`): may reclaim,
/// never OOM-kills from inside (see [`gfp::RETRY_MAYFAIL`]).
/// Movable: compaction may migrate it (mm/migrate.rs).
pub const GFP_USER: GfpMask =
    GfpMask { gfp: mm_core::buddy::GFP_HIGHUSER_MOVABLE, flags: GFP_KERNEL.flags | gfp::RETRY_MAYFAIL };
/// An allocation made while reclaim's state is held (Linux's
/// `PF_MEMALLOC`): no reclaim, below the watermarks if need be.
pub const GFP_MEMALLOC: GfpMask = GfpMask { gfp: mm_core::buddy::GFP_NOWMARK, flags: 0 };
/// Below 4 GiB.
pub const GFP_DMA32: GfpMask = GfpMask { gfp: mm_core::buddy::GFP_DMA32, ..GFP_KERNEL };
/// Below 16 MiB.
pub const GFP_DMA: GfpMask = GfpMask { gfp: mm_core::buddy::GFP_DMA, ..GFP_KERNEL };

/// Rounds of reclaim without a successful allocation before the slow
/// path moves on to the OOM killer (Linux's `MAX_RECLAIM_RETRIES`).
pub const MAX_RECLAIM_RETRIES: u32 = 16;

/// An allocator error the slow path can tell apart: only a lack of free
/// pages is worth reclaiming for; a bad order or a bad size is not.
pub trait AllocError {
    /// True if the allocation failed because no zone had the pages.
    fn is_no_memory(&self) -> bool;
}

impl AllocError for BuddyError {
    fn is_no_memory(&self) -> bool {
        matches!(self, BuddyError::NoMemory)
    }
}

impl AllocError for SlabError {
    fn is_no_memory(&self) -> bool {
        matches!(self, SlabError::Buddy(BuddyError::NoMemory))
    }
}

/// What the slow path has done since boot (`/proc/vmstat`'s allocstall and
/// friends, for meminfo and the self-tests).
pub struct SlowpathStats {
    /// Entries into the slow path.
    pub entered: AtomicU64,
    /// Deferred chunks handed to the zones.
    pub deferred_grows: AtomicU64,
    /// Pages those chunks held.
    pub deferred_pages: AtomicU64,
    /// Requests that failed after the whole slow path.
    pub failures: AtomicU64,
}

/// The slow path's counters.
pub static SLOWPATH: SlowpathStats = SlowpathStats {
    entered: AtomicU64::new(0),
    deferred_grows: AtomicU64::new(0),
    deferred_pages: AtomicU64::new(0),
    failures: AtomicU64::new(0),
};

/// How the slow path reaches the page allocator: through the caller's
/// held lock, or by taking [`PAGES`] for each step.
trait PageAccess {
    /// Runs `f` on the page allocator.
    fn pages<R>(&mut self, f: impl FnOnce(&mut PageAlloc) -> R) -> R;
    /// Whether the caller holds the page allocator across the request (so
    /// nothing that blocks or takes outer locks may run).
    fn holds_lock(&self) -> bool;
}

/// The caller holds the page allocator.
struct Held<'a>(&'a mut PageAlloc);

impl PageAccess for Held<'_> {
    fn pages<R>(&mut self, f: impl FnOnce(&mut PageAlloc) -> R) -> R {
        f(self.0)
    }
    fn holds_lock(&self) -> bool {
        true
    }
}

/// The caller holds no page-allocator lock: each step takes it.
struct Unlocked;

impl PageAccess for Unlocked {
    fn pages<R>(&mut self, f: impl FnOnce(&mut PageAlloc) -> R) -> R {
        PAGES.with(f)
    }
    fn holds_lock(&self) -> bool {
        false
    }
}

/// Runs `attempt` (one try of an allocator, e.g. `buddy.alloc_pages` or
/// `slab.kmalloc`, for `2^order` pages' worth) with the page allocator
/// held by the caller: the fast path, then the slow path, without the
/// steps that may block, if it failed for lack of pages.
#[inline]
pub fn alloc_locked<T, E: AllocError>(
    p: &mut PageAlloc,
    order: u8,
    gfp: GfpMask,
    mut attempt: impl FnMut(&mut PageAlloc) -> Result<T, E>,
) -> Result<T, E> {
    match attempt(p) {
        Ok(v) => Ok(v),
        Err(e) if !e.is_no_memory() => Err(e),
        Err(e) => slowpath(&mut Held(p), order, gfp, e, &mut attempt),
    }
}

/// `alloc_locked` for a caller that does not hold the page allocator: the
/// fast path under the lock, the slow path (all of it) with the lock
/// dropped between steps.
#[inline]
pub fn alloc<T, E: AllocError>(
    order: u8,
    gfp: GfpMask,
    mut attempt: impl FnMut(&mut PageAlloc) -> Result<T, E>,
) -> Result<T, E> {
    match PAGES.with(&mut attempt) {
        Ok(v) => Ok(v),
        Err(e) if !e.is_no_memory() => Err(e),
        Err(e) => slowpath(&mut Unlocked, order, gfp, e, &mut attempt),
    }
}

/// `2^order` pages from the buddy allocator, the page allocator held;
/// returns the first pfn.
#[inline]
pub fn alloc_pages_locked(p: &mut PageAlloc, order: u8, gfp: GfpMask) -> Result<u64, BuddyError> {
    let r = alloc_pages_locked_inner(p, order, gfp);
    if let Ok(pfn) = r {
        percpu::count_numa(gfp, pfn);
    }
    r
}

#[inline]
fn alloc_pages_locked_inner(p: &mut PageAlloc, order: u8, gfp: GfpMask) -> Result<u64, BuddyError> {
    // Linux's prepare_alloc_pages: an injected failure comes back at once.
    if super::fail_page_alloc::should_fail_alloc_page(order, gfp) {
        return Err(BuddyError::NoMemory);
    }
    if percpu::serves(order, gfp) {
        if let Some(pfn) = percpu::pop_page(gfp) {
            return Ok(pfn);
        }
        let r = alloc_locked(p, 0, gfp, |p| percpu::refill_page(p, gfp));
        wake_below_low(p, gfp);
        return r;
    }
    let cpu = this_cpu().id;
    let r = alloc_locked(p, order, gfp, |p| p.buddy.alloc_pages(cpu, order, gfp.gfp));
    wake_below_low(p, gfp);
    r
}

/// mm-core's fast path tries the low watermark and then min in one call,
/// so an allocation between the two succeeds without entering the slow
/// path; Linux wakes kswapd there (the low-watermark pass failed). This
/// does it after the fact: a zone at or below low wakes kswapd (a few
/// compares; the wake is one atomic).
#[inline]
fn wake_below_low(p: &PageAlloc, gfp: GfpMask) {
    if gfp.allows(gfp::KSWAPD_RECLAIM) && p.buddy.below_low_watermark().is_some() {
        super::vmscan::wakeup_kswapds_below_low(p, gfp.gfp.nodemask);
    }
}

/// `2^order` pages from the buddy allocator; returns the first pfn.
/// Counted in the numastat counters (Linux's `zone_statistics`).
#[inline]
pub fn alloc_pages(order: u8, gfp: GfpMask) -> Result<u64, BuddyError> {
    let r = alloc_pages_inner(order, gfp);
    if let Ok(pfn) = r {
        percpu::count_numa(gfp, pfn);
    }
    r
}

#[inline]
fn alloc_pages_inner(order: u8, gfp: GfpMask) -> Result<u64, BuddyError> {
    if super::fail_page_alloc::should_fail_alloc_page(order, gfp) {
        return Err(BuddyError::NoMemory);
    }
    if percpu::serves(order, gfp) {
        // This CPU's list, no shared lock; a refill takes the lock once
        // per batch (and runs the slow path if the zones are short).
        if let Some(pfn) = percpu::pop_page(gfp) {
            return Ok(pfn);
        }
        return alloc(0, gfp, |p| {
            let r = percpu::refill_page(p, gfp);
            wake_below_low(p, gfp);
            r
        });
    }
    let cpu = this_cpu().id;
    alloc(order, gfp, |p| {
        let r = p.buddy.alloc_pages(cpu, order, gfp.gfp);
        wake_below_low(p, gfp);
        r
    })
}

/// One retry of the slow path: `Some` ends it (served, or failed for a
/// reason other than memory), a no-memory failure becomes `err` and the
/// slow path goes on.
fn settle<T, E: AllocError>(r: Result<T, E>, err: &mut E) -> Option<Result<T, E>> {
    match r {
        Ok(v) => Some(Ok(v)),
        Err(e) if !e.is_no_memory() => Some(Err(e)),
        Err(e) => {
            *err = e;
            None
        }
    }
}

/// Gives every CPU's cached pages and objects back (Linux's
/// `drain_all_pages`) and, if any came back, retries under the same lock
/// hold; None if the caches held nothing.
fn drain_and_retry<T, E: AllocError>(
    a: &mut impl PageAccess,
    attempt: &mut impl FnMut(&mut PageAlloc) -> Result<T, E>,
) -> Option<Result<T, E>> {
    a.pages(|p| (percpu::drain_all_locked(p) > 0).then(|| attempt(p)))
}

/// Linux's `__alloc_pages_slowpath`: `err` is the fast path's failure.
#[inline(never)]
fn slowpath<T, E: AllocError>(
    a: &mut impl PageAccess,
    order: u8,
    gfp: GfpMask,
    mut err: E,
    attempt: &mut impl FnMut(&mut PageAlloc) -> Result<T, E>,
) -> Result<T, E> {
    SLOWPATH.entered.fetch_add(1, Ordering::Relaxed);
    // 1. Deferred memory (Linux: `_deferred_grow_zone` inside
    //    `get_page_from_freelist`): cheap, and no reclaim may run while
    //    untouched RAM is still waiting to be handed over. Chunk and
    //    retry under one lock hold, so the chunk cannot go elsewhere first.
    while let Some((pages, r)) = a.pages(|p| grow_locked(p).map(|pages| (pages, attempt(p)))) {
        SLOWPATH.deferred_grows.fetch_add(1, Ordering::Relaxed);
        SLOWPATH.deferred_pages.fetch_add(pages, Ordering::Relaxed);
        if let Some(done) = settle(r, &mut err) {
            return done;
        }
    }
    // 1b. Pages and objects parked on CPUs' own caches: a few dozen
    //    pages per CPU, worth a retry before reclaiming. Only for requests
    //    that may reclaim directly, as Linux's `drain_all_pages` in
    //    `__alloc_pages_direct_reclaim`: a request that may only wake
    //    kswapd/kcompactd fails here and wakes them (a drain would hide
    //    fragmentation from kcompactd: tests/hugetlb.rs). Costly orders
    //    try direct compaction first, as Linux's slow path does, and drain
    //    only when it did not help (step 3): the few pages a drain merges
    //    must not stand in for compaction (tests/compaction.rs).
    let mut drained = false;
    if gfp.allows(gfp::DIRECT_RECLAIM) && order <= PAGE_ALLOC_COSTLY_ORDER {
        drained = true;
        if let Some(done) = drain_and_retry(a, attempt).and_then(|r| settle(r, &mut err)) {
            return done;
        }
    }
    // 2. Background reclaim: waking a thread never blocks.
    if gfp.allows(gfp::KSWAPD_RECLAIM) {
        wake_kswapd(order, gfp);
    }
    // 3. Direct reclaim and compaction, for requests that may block and
    //    callers that do not hold the page allocator.
    if gfp.allows(gfp::DIRECT_RECLAIM) && !a.holds_lock() && crate::sync::holds_only_below(crate::sync::rank::RECLAIM) {
        let mut retries = 0;
        loop {
            let reclaimed = direct_reclaim(order, gfp);
            if reclaimed > 0 {
                if let Some(done) = settle(a.pages(&mut *attempt), &mut err) {
                    return done;
                }
            }
            let compacted = order > 0 && direct_compact(order, gfp);
            if compacted {
                if let Some(done) = settle(a.pages(&mut *attempt), &mut err) {
                    return done;
                }
            }
            // A costly order's drain, once reclaim and compaction did not
            // serve it (Linux: `drain_all_pages` when direct reclaim's
            // retry failed).
            if !drained {
                drained = true;
                if let Some(done) = drain_and_retry(a, attempt).and_then(|r| settle(r, &mut err)) {
                    return done;
                }
            }
            if gfp.allows(gfp::NORETRY) {
                break;
            }
            if gfp.allows(gfp::RETRY_MAYFAIL) {
                // A pass may only have aged young pages: a few more
                // before giving up; never the OOM killer from here.
                retries += 1;
                if retries < MAX_RECLAIM_RETRIES && (reclaimed > 0 || compacted || retries < 4) {
                    continue;
                }
                break;
            }
            retries += 1;
            if (reclaimed > 0 || compacted) && retries < MAX_RECLAIM_RETRIES {
                continue;
            }
            // 4. Reclaim has stopped helping: kill something.
            if out_of_memory(order, gfp) {
                retries = 0;
                if let Some(done) = settle(a.pages(&mut *attempt), &mut err) {
                    return done;
                }
                continue;
            }
            break;
        }
    }
    // 5. Nothing helped.
    SLOWPATH.failures.fetch_add(1, Ordering::Relaxed);
    Err(err)
}

/// Wakes kswapd (Linux's `wake_all_kswapds`), which reclaims in the
/// background until the zones are above their high watermarks
/// (mm/vmscan.rs). Lock-free, so it may run under the page allocator:
/// the scheduler picks the wake up at its next switch.
fn wake_kswapd(order: u8, gfp: GfpMask) {
    // Each node the request may use (`wake_all_kswapds` over its
    // zonelist); a balanced node's kswapd finds nothing to do.
    let nr = super::numa::nr_nodes();
    for nid in (0..nr).filter(|&n| gfp.gfp.nodemask & (1 << n) != 0) {
        super::vmscan::wakeup_kswapd(nid);
    }
    // A high-order request that failed: background compaction too
    // (Linux's kswapd hands costly orders to `wakeup_kcompactd`), on
    // the nodes the request may use.
    super::kcompactd::wakeup_kcompactd(order, gfp.gfp.nodemask);
}

/// Reclaims pages synchronously for this request (Linux's
/// `__alloc_pages_direct_reclaim` -> `try_to_free_pages`, mm/vmscan.rs),
/// called with no lock of the slow path's held (the caller may hold outer
/// ones, e.g. its mm); returns the pages freed. What can be reclaimed
/// today is what the shrinkers give back (empty slabs): anonymous pages
/// wait for swap (`vmscan::shrink_lruvec`).
fn direct_reclaim(_order: u8, gfp: GfpMask) -> u64 {
    let nid = match gfp.gfp.nid {
        mm_core::buddy::NUMA_NO_NODE => super::numa::cpu_node(this_cpu().id),
        n => n,
    };
    super::vmscan::try_to_free_pages_on(usize::from(nid), gfp.gfp.nodemask)
}

/// Moves movable pages together so a free block of `order` forms (Linux's
/// `__alloc_pages_direct_compact`, mm/compaction.rs); true if it made
/// progress (pages migrated, or a block of the order is free now).
fn direct_compact(order: u8, gfp: GfpMask) -> bool {
    super::compaction::direct_compact(order, gfp.gfp)
}

/// Linux's `__alloc_pages_may_oom` -> `out_of_memory` (mm/oom_kill.rs):
/// kills the process with the highest badness and reaps its memory; true
/// if memory was freed (or the caller itself is the victim). The user
/// page-fault path, which allocates under the page-allocator lock and so
/// never gets here, calls the killer itself (`pagefault_out_of_memory`).
fn out_of_memory(order: u8, gfp: GfpMask) -> bool {
    super::oom_kill::out_of_memory(order, gfp.flags, gfp.gfp.nodemask)
}
