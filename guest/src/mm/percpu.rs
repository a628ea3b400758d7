//! Each CPU's own page and object caches, used without the page
//! allocator's lock (Linux's `per_cpu_pages` under `pcp_spin_lock`, and
//! SLUB's per-CPU object arrays): the guest glue over mm-core's
//! [`PcpCache`] (mm-core/src/buddy/pcp.rs has the algorithm and its
//! model tests).
//!
//! - Order-0 pages for ordinary requests (`GFP_KERNEL`, `GFP_USER`: any
//!   zone, normal watermarks) come from this CPU's list of their
//!   migratetype; a free of the last reference to an order-0 page goes to
//!   the freeing CPU's list, whichever CPU allocated it (Linux's
//!   `free_unref_page`). Only a refill (`batch` pages, Linux's
//!   `rmqueue_bulk`) or a hand-back past `high` (`free_pcppages_bulk`)
//!   takes [`PAGES`].
//! - kmalloc objects of the Rust heap come from this CPU's array for their
//!   size class; a kfree goes to the freeing CPU's array. The slab
//!   allocator sees batches of kmalloc/kfree under [`PAGES`], so objects
//!   in an array count as allocated in /proc/slabinfo (as SLAB's
//!   `array_cache` and SLUB's sheaves do).
//!
//! Each CPU's caches sit behind their own irq-safe lock of rank
//! [`rank::PCP`], innermost: the CPU takes it on its fast paths (an
//! uncontended compare-exchange on its own line, interrupts masked, as
//! Linux's `pcp->lock`), another CPU only to drain it ([`drain_all`],
//! Linux's `drain_all_pages`), so draining needs no IPI and cannot miss a
//! CPU sitting in `hlt`. Nothing is taken under it, so holding [`PAGES`]
//! and then a CPU's cache is in order, and the fast paths never wait for
//! [`PAGES`] while holding their cache.
//!
//! A cached page is `PG_PCP` in its descriptor (the host's views count it
//! as a pcp page); the fast paths write the descriptor of a page they own
//! (popped from their cache, or freed by its last holder) without the
//! lock, as Linux writes `struct page`.

use super::page_alloc::{self, GfpMask};
use super::{PageAlloc, PAGES};
use crate::arch::percpu::{cpu_id, MAX_CPUS};
use crate::fmt::Dec;
use crate::kprint;
use crate::sync::{rank, SpinLock};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use mm_core::addr::PhysAddr;
use mm_core::buddy::{
    numa_account, pcp_page_cacheable, pcp_page_put, pcp_page_take, BuddyError, NumaStat, Page, PageCounts, PcpCache,
    PcpStats, WmarkPolicy, ZoneType, MAX_NUMNODES, MIGRATE_TYPES, NUMA_NO_NODE,
};
use mm_core::slab::{kmalloc_index, KMALLOC_MAX_CACHE_SIZE, KMALLOC_SIZES};

/// Room in a CPU's page list of one migratetype.
const PAGE_SLOTS: usize = 24;
/// Pages moved per refill or hand-back (Linux's `pcp->batch`).
pub const PAGE_BATCH: usize = 8;
/// Hand back above this many (Linux's `pcp->high`).
pub const PAGE_HIGH: usize = 16;
/// Room in a CPU's object array of one kmalloc size.
const OBJ_SLOTS: usize = 32;
/// kmalloc size classes.
const NR_CLASSES: usize = KMALLOC_SIZES.len();

/// One CPU's caches and their counters.
pub struct CpuCaches {
    /// Order-0 pages by node and migratetype (`node * MIGRATE_TYPES +
    /// mt`): as Linux's pcp lists are per zone, hence per node, a page
    /// is cached on its own node's list, and a request for a node is
    /// served only from that node's list.
    pages: [PcpCache<PAGE_SLOTS>; MIGRATE_TYPES * MAX_NUMNODES],
    /// This CPU's share of the numastat counters, by node (summed over
    /// the CPUs when read, as Linux's per-CPU vm_numa_event counters).
    numa: [NumaStat; MAX_NUMNODES],
    /// Free kmalloc objects (physical addresses) by size class.
    objs: [PcpCache<OBJ_SLOTS>; NR_CLASSES],
}

/// Linux's SLAB limits for its per-CPU arrays, smaller for bigger
/// objects (so a CPU never sits on more than a few pages of one size).
const fn obj_limits(size: u32) -> (usize, usize) {
    if size <= 256 {
        (24, 12)
    } else if size <= 1024 {
        (12, 6)
    } else if size <= 4096 {
        (6, 3)
    } else {
        (4, 2)
    }
}

impl CpuCaches {
    const fn new() -> Self {
        let mut objs = [const { PcpCache::new(1, 1) }; NR_CLASSES];
        let mut i = 0;
        while i < NR_CLASSES {
            let (high, batch) = obj_limits(KMALLOC_SIZES[i]);
            objs[i] = PcpCache::new(high, batch);
            i += 1;
        }
        CpuCaches {
            pages: [const { PcpCache::new(PAGE_HIGH, PAGE_BATCH) }; MIGRATE_TYPES * MAX_NUMNODES],
            numa: [NumaStat {
                numa_hit: 0,
                numa_miss: 0,
                numa_foreign: 0,
                interleave_hit: 0,
                local_node: 0,
                other_node: 0,
            }; MAX_NUMNODES],
            objs,
        }
    }
}

/// The caches, by CPU.
static CACHES: [SpinLock<CpuCaches>; MAX_CPUS] =
    [const { SpinLock::new_irqsafe_with("a CPU's allocator caches", rank::PCP, CpuCaches::new()) }; MAX_CPUS];

/// With this set every request takes the locked paths as before the
/// caches existed (the bench's peer measurement).
static BYPASS: AtomicBool = AtomicBool::new(false);

/// The descriptor array (vmemmap), for the fast paths' descriptor writes.
static MEM_MAP: AtomicPtr<Page> = AtomicPtr::new(core::ptr::null_mut());
static MEM_MAP_LEN: AtomicUsize = AtomicUsize::new(0);

/// Records where the descriptors live (pfn 0 first), before the buddy
/// allocator takes the array.
pub fn init(mem_map: *mut Page, len: usize) {
    MEM_MAP_LEN.store(len, Ordering::Relaxed);
    MEM_MAP.store(mem_map, Ordering::Release);
}

/// Runs `f` on the descriptor of `pfn`, a page the calling CPU owns: one
/// it popped from its cache, or one whose last reference it drops.
fn with_page<R>(pfn: u64, f: impl FnOnce(&mut Page) -> R) -> Option<R> {
    let base = MEM_MAP.load(Ordering::Acquire);
    if base.is_null() || pfn >= MEM_MAP_LEN.load(Ordering::Relaxed) as u64 {
        return None;
    }
    // SAFETY: `base` is the vmemmap array of MEM_MAP_LEN descriptors
    // (init), mapped for good; pfn is inside it. The descriptor belongs to
    // the caller (module docs): no other CPU writes it meanwhile, and those
    // that read it under PAGES see either its old or its new state, both
    // consistent (a page being taken or put is never on a zone list).
    let p = unsafe { &mut *base.add(pfn as usize) };
    Some(f(p))
}

/// Whether a page request may use the per-CPU lists: any zone, normal
/// watermarks (the pages were taken above them when the list was
/// refilled), as Linux serves only such requests from `pcp` lists; and
/// its preferred node allowed by its node mask (the list used is the
/// preferred node's).
#[inline]
fn page_eligible(gfp: GfpMask) -> bool {
    gfp.gfp.zone == ZoneType::Normal
        && gfp.gfp.wmark == WmarkPolicy::Normal
        && (gfp.gfp.nid == NUMA_NO_NODE || gfp.gfp.nodemask & (1 << (gfp.gfp.nid & 7)) != 0)
        && !BYPASS.load(Ordering::Relaxed)
}

/// The node a request prefers on `cpu` (its own, or the CPU's).
#[inline]
pub fn preferred_node(gfp: GfpMask, cpu: usize) -> u8 {
    if gfp.gfp.nid == NUMA_NO_NODE {
        super::numa::cpu_node(cpu)
    } else {
        gfp.gfp.nid
    }
}

/// The list a request is served from on `cpu`.
#[inline]
fn list_of(gfp: GfpMask, cpu: usize) -> usize {
    usize::from(preferred_node(gfp, cpu)) % MAX_NUMNODES * MIGRATE_TYPES + gfp.gfp.migratetype as usize
}

/// The list a freed page of migratetype `mt` goes to: its node's.
#[inline]
fn list_of_page(pfn: u64, mt: usize) -> usize {
    usize::from(super::numa::node_of_pfn(pfn)) % MAX_NUMNODES * MIGRATE_TYPES + mt
}

/// Counts an allocation that got `pfn` in the numastat counters
/// (Linux's `zone_statistics`), on this CPU's share.
pub fn count_numa(gfp: GfpMask, pfn: u64) {
    let cpu = cpu_id();
    let (want, got, local) = (preferred_node(gfp, cpu), super::numa::node_of_pfn(pfn), super::numa::cpu_node(cpu));
    let il = gfp.allows(page_alloc::gfp::INTERLEAVE);
    CACHES[cpu].with(|c| numa_account(want, got, local, il, &mut c.numa));
}

/// The numastat counters of `node`, summed over the CPUs.
pub fn numa_stat(node: usize) -> NumaStat {
    let mut s = NumaStat::default();
    for c in CACHES.iter() {
        let n = c.with(|c| c.numa.get(node).copied().unwrap_or_default());
        s.numa_hit += n.numa_hit;
        s.numa_miss += n.numa_miss;
        s.numa_foreign += n.numa_foreign;
        s.interleave_hit += n.interleave_hit;
        s.local_node += n.local_node;
        s.other_node += n.other_node;
    }
    s
}

/// Linux's `rmqueue_pcplist` without the zone lock: an order-0 page from
/// this CPU's list, or None when it is empty (or the request may not use
/// it): then [`refill_page`] under the lock.
#[inline]
pub fn pop_page(gfp: GfpMask) -> Option<u64> {
    if !page_eligible(gfp) {
        return None;
    }
    let cpu = cpu_id();
    let pfn = CACHES[cpu].with(|c| c.pages[list_of(gfp, cpu)].pop())?;
    match with_page(pfn, pcp_page_take) {
        Some(true) => Some(pfn),
        _ => panic!("per-CPU page list: entry {:#x} is not a cached page", pfn),
    }
}

/// The page allocator held: an order-0 page from this CPU's list,
/// refilled with a batch from the buddy if empty. The request must be
/// [`page_eligible`]. The allocation slow path retries this.
pub fn refill_page(p: &mut PageAlloc, gfp: GfpMask) -> Result<u64, BuddyError> {
    let cpu = cpu_id();
    let node = preferred_node(gfp, cpu);
    let mut buf = [0u64; PAGE_BATCH];
    let pfn = CACHES[cpu].with(|c| {
        let cache = &mut c.pages[list_of(gfp, cpu)];
        if let Some(pfn) = cache.pop() {
            return Ok((pfn, true));
        }
        // The batch from the preferred node only (the list is that
        // node's); when it has none, one page down the whole zonelist
        // past the cache (Linux falls back zone by zone the same way).
        let local = gfp.gfp.on_nodes(node, 1 << (node & 7));
        let n = match p.buddy.rmqueue_pcp_batch(cpu, local, &mut buf[..cache.batch()]) {
            Ok(n) => n,
            Err(BuddyError::NoMemory) => return p.buddy.alloc_pages(cpu, 0, gfp.gfp).map(|pfn| (pfn, false)),
            Err(e) => return Err(e),
        };
        cache.note_refill();
        for &pfn in &buf[..n] {
            if let Err(back) = cache.fill(pfn) {
                p.buddy.free_pcp_pages(&[back])?;
            }
        }
        cache.pop().map(|pfn| (pfn, true)).ok_or(BuddyError::NoMemory)
    })?;
    let (pfn, cached) = pfn;
    if cached {
        p.buddy.take_pcp_page(pfn)?;
    }
    Ok(pfn)
}

/// Whether `page_alloc` should serve this order-0 request through the
/// per-CPU lists.
#[inline]
pub fn serves(order: u8, gfp: GfpMask) -> bool {
    order == 0 && page_eligible(gfp)
}

/// Linux's `free_unref_page` without the zone lock: if `pfn` is an
/// order-0 page whose last reference the caller drops, it goes to this
/// CPU's list (true); a batch goes back to the buddy if the list passed
/// `high`. False for anything else (a shared page, a double free, a
/// slab page): the caller takes the locked path, which decrements or
/// reports.
pub fn free_page(pfn: u64) -> bool {
    if BYPASS.load(Ordering::Relaxed) {
        return false;
    }
    let Some(Some(mt)) = with_page(pfn, |p| pcp_page_cacheable(p).inspect(|_| pcp_page_put(p))) else {
        return false;
    };
    let mut buf = [0u64; PAGE_BATCH];
    let n = CACHES[cpu_id()].with(|c| push_page(&mut c.pages[list_of_page(pfn, mt as usize)], pfn, &mut buf));
    if n > 0 {
        PAGES.with(|p| give_back_pages(p, &buf[..n]));
    }
    true
}

/// The page allocator held (e.g. `put_user_page`): as [`free_page`], the
/// batch handed back under the caller's hold; otherwise the buddy's own
/// free (refcount, double-free report).
pub fn free_page_locked(p: &mut PageAlloc, cpu: usize, pfn: u64) -> Result<(), BuddyError> {
    let mt = match p.buddy.page(pfn).and_then(pcp_page_cacheable) {
        Some(mt) if !BYPASS.load(Ordering::Relaxed) => mt,
        _ => return p.buddy.free_pages(cpu, pfn, 0),
    };
    p.buddy.put_pcp_page(pfn)?;
    let mut buf = [0u64; PAGE_BATCH];
    let n = CACHES[cpu_id()].with(|c| push_page(&mut c.pages[list_of_page(pfn, mt as usize)], pfn, &mut buf));
    give_back_pages(p, &buf[..n]);
    Ok(())
}

/// Caches `pfn` (already marked cached); the batch to hand back, if the
/// list passed `high`, is moved to `buf` and its length returned.
fn push_page(cache: &mut PcpCache<PAGE_SLOTS>, pfn: u64, buf: &mut [u64; PAGE_BATCH]) -> usize {
    match cache.push(pfn) {
        Ok(false) => 0,
        Ok(true) => cache.take_batch(buf),
        // Full (cannot happen with the push-then-hand-back protocol):
        // hand back this page with the batch rather than lose it.
        Err(pfn) => {
            let n = cache.take_batch(&mut buf[..PAGE_BATCH - 1]);
            buf[n] = pfn;
            n + 1
        }
    }
}

fn give_back_pages(p: &mut PageAlloc, pfns: &[u64]) {
    if let Err(e) = p.buddy.free_pcp_pages(pfns) {
        panic!("per-CPU page list hand-back: {}", e);
    }
}

/// The kmalloc size class of a heap request, if the per-CPU arrays serve
/// it (kmalloc-large and the bench's bypass do not).
#[inline]
fn obj_class(size: u64) -> Option<usize> {
    (size > 0 && size <= KMALLOC_MAX_CACHE_SIZE && !BYPASS.load(Ordering::Relaxed)).then(|| kmalloc_index(size))
}

/// kmalloc of `size` bytes from this CPU's array without any shared lock;
/// on a miss, one batch from the slab under [`PAGES`] (with the slow
/// path). None: not served here (use kmalloc directly).
pub fn kmalloc(size: u64, gfp: GfpMask) -> Option<Result<PhysAddr, mm_core::slab::SlabError>> {
    let class = obj_class(size)?;
    let cpu = cpu_id();
    if let Some(pa) = CACHES[cpu].with(|c| c.objs[class].pop()) {
        return Some(Ok(PhysAddr(pa)));
    }
    Some(page_alloc::alloc(0, gfp, |p| refill_objs(p, class, gfp)))
}

fn refill_objs(p: &mut PageAlloc, class: usize, gfp: GfpMask) -> Result<PhysAddr, mm_core::slab::SlabError> {
    let cpu = cpu_id();
    let size = KMALLOC_SIZES[class] as u64;
    CACHES[cpu].with(|c| {
        let cache = &mut c.objs[class];
        if let Some(pa) = cache.pop() {
            return Ok(PhysAddr(pa));
        }
        cache.note_refill();
        for i in 0..cache.batch() {
            match p.slab.kmalloc(&mut p.buddy, &mut p.phys, cpu, size, gfp.gfp) {
                Ok(pa) => {
                    if let Err(back) = cache.fill(pa.0) {
                        p.slab.kfree(&mut p.buddy, &mut p.phys, cpu, PhysAddr(back))?;
                    }
                }
                Err(e) if i == 0 => return Err(e),
                Err(_) => break,
            }
        }
        cache.pop().map(PhysAddr).ok_or(mm_core::slab::SlabError::Buddy(BuddyError::NoMemory))
    })
}

/// kfree of a heap object of `size` bytes into this CPU's array; a batch
/// goes back to the slab under [`PAGES`] past `high`. False: not served
/// here (kmalloc-large, bypass), the caller frees directly.
pub fn kfree(pa: PhysAddr, size: u64) -> bool {
    let Some(class) = obj_class(size) else {
        return false;
    };
    let mut buf = [0u64; OBJ_SLOTS];
    let n = CACHES[cpu_id()].with(|c| {
        let cache = &mut c.objs[class];
        if cache.contains(pa.0) {
            panic!("kfree({:#x}): double free (the object is on this CPU's free array)", pa.0);
        }
        match cache.push(pa.0) {
            Ok(false) => 0,
            Ok(true) => cache.take_batch(&mut buf),
            Err(back) => {
                let n = cache.take_batch(&mut buf[..OBJ_SLOTS - 1]);
                buf[n] = back;
                n + 1
            }
        }
    });
    if n > 0 {
        PAGES.with(|p| give_back_objs(p, &buf[..n]));
    }
    true
}

fn give_back_objs(p: &mut PageAlloc, objs: &[u64]) {
    let cpu = cpu_id();
    for &pa in objs {
        if let Err(e) = p.slab.kfree(&mut p.buddy, &mut p.phys, cpu, PhysAddr(pa)) {
            panic!("per-CPU object array hand-back of {:#x}: {}", pa, e);
        }
    }
}

/// Empties every CPU's caches into the slab and the buddy (Linux's
/// `drain_all_pages` and `flush_all` of the slab's CPU caches), the page
/// allocator held: afterwards page and object counts are exact. Reaches
/// other CPUs' caches through their locks (module docs). Returns the
/// entries handed back. Objects go first, so slabs they empty can then be
/// shrunk, and the buddy's own pcp lists are drained too.
pub fn drain_all_locked(p: &mut PageAlloc) -> u64 {
    let mut n = 0;
    for cache in CACHES.iter() {
        n += drain_one(p, cache);
    }
    p.buddy.drain_all_pages();
    n
}

fn drain_one(p: &mut PageAlloc, cache: &SpinLock<CpuCaches>) -> u64 {
    let mut buf = [0u64; OBJ_SLOTS];
    let mut total = 0u64;
    cache.with(|c| {
        for o in c.objs.iter_mut() {
            loop {
                let n = o.take_all(&mut buf);
                if n == 0 {
                    break;
                }
                give_back_objs(p, &buf[..n]);
                total += n as u64;
            }
        }
        for pg in c.pages.iter_mut() {
            loop {
                let n = pg.take_all(&mut buf);
                if n == 0 {
                    break;
                }
                give_back_pages(p, &buf[..n]);
                total += n as u64;
            }
        }
    });
    total
}

/// [`drain_all_locked`] taking [`PAGES`].
pub fn drain_all() -> u64 {
    PAGES.with(drain_all_locked)
}

/// The buddy allocator's page counts with the pages on every CPU's lists
/// counted as pcp pages (free for the user), not allocated: what
/// meminfo and the free-memory checks want. The page allocator held.
pub fn counts(p: &PageAlloc) -> PageCounts {
    let mut c = p.buddy.counts();
    let cached: u64 = CACHES.iter().map(|cc| cc.with(|cc| cc.pages.iter().map(|l| l.len() as u64).sum::<u64>())).sum();
    c.pcp += cached;
    c.allocated = c.allocated.saturating_sub(cached);
    c
}

/// Turns the per-CPU caches off (drained) or back on; the bench's peer.
pub fn set_bypass(on: bool) {
    if on {
        drain_all();
    }
    BYPASS.store(on, Ordering::Relaxed);
}

/// One CPU's figures: its page lists' and object arrays' counters, and
/// what they hold now.
#[derive(Clone, Copy, Default)]
pub struct CpuStats {
    /// Page lists, all migratetypes summed.
    pub pages: PcpStats,
    /// Pages held now.
    pub pages_held: u64,
    /// Object arrays, all sizes summed.
    pub objs: PcpStats,
    /// Objects held now.
    pub objs_held: u64,
}

fn add(a: &mut PcpStats, b: &PcpStats) {
    a.alloc_hit += b.alloc_hit;
    a.alloc_miss += b.alloc_miss;
    a.free += b.free;
    a.refills += b.refills;
    a.refilled += b.refilled;
    a.drains += b.drains;
    a.drained += b.drained;
}

/// CPU `cpu`'s figures (folded over its lists).
pub fn stats(cpu: usize) -> CpuStats {
    let mut s = CpuStats::default();
    CACHES[cpu % MAX_CPUS].with(|c| {
        for p in c.pages.iter() {
            add(&mut s.pages, &p.stats);
            s.pages_held += p.len() as u64;
        }
        for o in c.objs.iter() {
            add(&mut s.objs, &o.stats);
            s.objs_held += o.len() as u64;
        }
    });
    s
}

/// /proc/zoneinfo's `pagesets` and the slab's per-CPU counts, in small:
/// one line per online CPU with the allocations each served without the
/// lock, its refills and hand-backs, and what it holds.
pub fn print_pagesets() {
    let n = crate::arch::smp::nr_cpus().max(1);
    for cpu in 0..n {
        let s = stats(cpu);
        kprint!(
            "pagesets: cpu{} count {} high {} batch {} pcp_alloc {} pcp_free {} refills {} drains {}",
            Dec(cpu as u64),
            Dec(s.pages_held),
            Dec(PAGE_HIGH as u64),
            Dec(PAGE_BATCH as u64),
            Dec(s.pages.alloc_hit),
            Dec(s.pages.free),
            Dec(s.pages.refills),
            Dec(s.pages.drains)
        );
        crate::kprintln!(
            " | slab cpu{} alloc {} free {} refills {} flushes {} held {}",
            Dec(cpu as u64),
            Dec(s.objs.alloc_hit),
            Dec(s.objs.free),
            Dec(s.objs.refills),
            Dec(s.objs.drains),
            Dec(s.objs_held)
        );
    }
}

/// At power-off with several CPUs: each CPU's figures, then every cache
/// drained and the buddy allocator's invariants checked, so a run shows
/// that allocations were served on each CPU and that no page was lost
/// in the caches.
pub fn report_cpus() {
    if crate::arch::smp::nr_cpus() <= 1 {
        return;
    }
    print_pagesets();
    let (drained, verify, counts) = PAGES.with(|p| {
        let n = drain_all_locked(p);
        (n, p.buddy.verify(), p.buddy.counts())
    });
    crate::kprintln!(
        "pcp: drained {} cached entries from every CPU; buddy {}; managed {} = free {} + pcp {} + allocated {}",
        Dec(drained),
        match verify {
            Ok(()) => "consistent",
            Err(_) => "CORRUPT",
        },
        Dec(counts.managed),
        Dec(counts.free),
        Dec(counts.pcp),
        Dec(counts.allocated)
    );
    // Nothing may be left: a page still marked cached would be lost.
    let left: u64 = (0..MAX_CPUS).map(|c| stats(c).pages_held + stats(c).objs_held).sum();
    if left != 0 {
        crate::kprintln!("pcp: {} entries left on per-CPU lists after draining", Dec(left));
    }
}

/// `pcpbench`: shared-lock ([`PAGES`]) acquisitions per 1000 heap
/// kmalloc/kfree pairs (64 bytes) and per 1000 order-0 page allocations
/// and frees, with the per-CPU caches bypassed (every request on the
/// locked paths, as before they existed) and with them, measured in the
/// same run on every CPU at once: one pinned kernel thread per other CPU
/// runs the same loops beside this one, phase by phase, so the fast paths
/// are counted under real concurrency. Counts, not times (platform.md);
/// each CPU counts its own acquisitions.
pub fn bench() {
    let n = crate::arch::smp::nr_cpus().clamp(1, MAX_CPUS);
    let me = cpu_id();
    BENCH.leader.store(me, Ordering::Relaxed);
    BENCH.cpus.store(n, Ordering::Relaxed);
    for c in (0..n).filter(|&c| c != me) {
        let Some(pid) = crate::proc::sched::kthread_run("pcpbench", bench_thread) else {
            crate::kprintln!("pcpbench: no memory for the thread of cpu{}", Dec(c as u64));
            return;
        };
        BENCH.pid_cpu[c].store(pid as usize, Ordering::Relaxed);
        crate::proc::sched::set_affinity(pid, 1 << c);
    }
    bench_phases(true);
    for (m, mode) in ["bypassed (locked paths)", "per-CPU caches"].iter().enumerate() {
        for c in 0..n {
            let [kmalloc, pages, ok] = [0, 1, 2].map(|k| BENCH.figures[m][c][k].load(Ordering::Relaxed));
            crate::kprintln!(
                "pcpbench: {} CPUs, cpu{}, {}: page-allocator lock taken {} times per {} kmalloc/kfree pairs, {} times per {} order-0 alloc/free pairs (ok {})",
                Dec(n as u64),
                Dec(c as u64),
                mode,
                Dec(kmalloc as u64),
                Dec(BENCH_PAIRS),
                Dec(pages as u64),
                Dec(BENCH_PAIRS),
                if ok == 1 { "yes" } else { "no" }
            );
        }
    }
}

/// Pairs per loop of [`bench`].
const BENCH_PAIRS: u64 = 1000;

/// What [`bench`]'s CPUs share: who leads, how many run, a barrier, and
/// each CPU's figures per mode (kmalloc locks, page locks, ok).
struct Bench {
    leader: AtomicUsize,
    cpus: AtomicUsize,
    arrived: AtomicUsize,
    pid_cpu: [AtomicUsize; MAX_CPUS],
    figures: [[[AtomicUsize; 3]; MAX_CPUS]; 2],
}

static BENCH: Bench = Bench {
    leader: AtomicUsize::new(0),
    cpus: AtomicUsize::new(1),
    arrived: AtomicUsize::new(0),
    pid_cpu: [const { AtomicUsize::new(0) }; MAX_CPUS],
    figures: [const { [const { [const { AtomicUsize::new(0) }; 3] }; MAX_CPUS] }; 2],
};

/// Waits until every CPU of the bench has arrived `k` times in all
/// (serving TLB shootdowns meanwhile: interrupts are off in the kernel).
fn bench_barrier(k: usize) {
    let n = BENCH.cpus.load(Ordering::Relaxed);
    BENCH.arrived.fetch_add(1, Ordering::AcqRel);
    while BENCH.arrived.load(Ordering::Acquire) < n * k {
        crate::arch::tlb::poll();
        core::hint::spin_loop();
    }
}

/// A helper CPU's kernel thread: moves to its CPU, runs the phases, then
/// sleeps for good.
extern "C" fn bench_thread() -> ! {
    let me = crate::proc::sched::current_pid() as usize;
    // Until the starter has named this thread's CPU and the thread runs
    // there (its mask moves it at a yield).
    while (0..MAX_CPUS).find(|&c| BENCH.pid_cpu[c].load(Ordering::Relaxed) == me) != Some(cpu_id()) {
        crate::proc::sched::yield_now(false);
    }
    bench_phases(false);
    loop {
        crate::proc::sched::sleep_current();
    }
}

/// Both modes' loops on this CPU, in step with the others (the leader
/// switches the mode between barriers); figures into [`BENCH`].
fn bench_phases(leader: bool) {
    use alloc::boxed::Box;
    let pages_locks = || crate::sync::locks_taken(rank::PAGES);
    let cpu = cpu_id();
    for (m, bypass) in [true, false].into_iter().enumerate() {
        if leader {
            set_bypass(bypass);
        }
        bench_barrier(2 * m + 1);
        // Warm up: one batch in each cache, so the loops measure the
        // steady state, not the first refill.
        drop(core::hint::black_box(Box::new([0u64; 8])));
        if let Some(pfn) = super::alloc_pages(0, super::GFP_KERNEL) {
            let _ = super::free_pages(pfn, 0);
        }
        let before = pages_locks();
        let mut ok = true;
        for i in 0..BENCH_PAIRS {
            let b = core::hint::black_box(Box::new([i; 8]));
            ok &= b[7] == i;
            drop(b);
        }
        let kmalloc = pages_locks() - before;
        let before = pages_locks();
        for _ in 0..BENCH_PAIRS {
            match super::alloc_pages(0, super::GFP_KERNEL) {
                Some(pfn) => ok &= super::free_pages(pfn, 0).is_ok(),
                None => ok = false,
            }
        }
        let pages = pages_locks() - before;
        for (k, v) in [kmalloc as usize, pages as usize, ok as usize].into_iter().enumerate() {
            BENCH.figures[m][cpu][k].store(v, Ordering::Relaxed);
        }
        bench_barrier(2 * m + 2);
    }
    if leader {
        set_bypass(false);
    }
}
