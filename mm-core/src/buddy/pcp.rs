//! Per-CPU caches used without the zone lock (Linux's `per_cpu_pages`
//! as `free_unref_page`/`rmqueue_pcplist` use them under `pcp_spin_lock`,
//! and SLUB's per-CPU object arrays, the "sheaves").
//!
//! The zone's own pcp lists ([`PerCpuPages`](super::PerCpuPages)) live in
//! the allocator and so are only reachable under its lock. A kernel with
//! several CPUs keeps each CPU's cache outside it instead: a
//! [`PcpCache`] per CPU, which that CPU alone pops and pushes (with
//! interrupts off), and which goes back to the allocator only in batches:
//! - alloc: [`PcpCache::pop`]; when empty, the caller takes the zone lock
//!   once, asks [`BuddyAllocator::rmqueue_pcp_batch`] for
//!   [`PcpCache::batch`] pages and [`fill`](PcpCache::fill)s them in;
//! - free: [`PcpCache::push`]; once the count passes
//!   [`high`](PcpCache::high) the caller takes [`PcpCache::take_batch`]
//!   (the coldest entries) and hands them back under the lock
//!   ([`BuddyAllocator::free_pcp_pages`]);
//! - drain ([`PcpCache::take_all`]) where exact counts are needed (Linux's
//!   `drain_all_pages`).
//!
//! A page in a per-CPU cache is free for the user and `PG_PCP` in its
//! descriptor, as on a zone pcp list, but on no list the allocator walks:
//! its `prev` is [`PCP_DETACHED`]. Turning a cached page into an
//! allocated one and back ([`pcp_page_take`], [`pcp_page_put`]) touches
//! only that page's descriptor, which no other CPU writes meanwhile: the
//! page belongs to the cache's CPU (or, on a free, to the caller holding
//! its only reference). That is Linux's rule for `struct page` too.
//!
//! The same [`PcpCache`] keeps a CPU's free slab objects (by address): the
//! slab allocator only sees batches of `kmalloc`/`kfree` under its lock.

use super::page::{Page, PageOwner, NIL, PG_HEAD, PG_PCP};
use super::{BuddyAllocator, BuddyError, Gfp, MigrateType, MAX_NR_ZONES};

/// `Page::prev` of a page cached in a [`PcpCache`] (on no zone list).
pub const PCP_DETACHED: u32 = NIL - 1;

/// What a per-CPU cache has done (Linux's per-CPU `vm_event_states` for
/// pcp, and SLUB's `CPU_*` stat items).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcpStats {
    /// Allocations served from the cache (no zone lock).
    pub alloc_hit: u64,
    /// Allocations that found it empty (refilled under the lock).
    pub alloc_miss: u64,
    /// Frees kept in the cache (no zone lock).
    pub free: u64,
    /// Refills (each one lock acquisition).
    pub refills: u64,
    /// Entries refills brought in.
    pub refilled: u64,
    /// Batches handed back because the cache passed `high`, or drains.
    pub drains: u64,
    /// Entries handed back.
    pub drained: u64,
}

/// A bounded LIFO cache of up to `N` entries (pfns or object addresses)
/// with Linux's `high` and `batch`: what one CPU keeps for itself.
#[derive(Debug, Clone)]
pub struct PcpCache<const N: usize> {
    items: [u64; N],
    count: usize,
    high: usize,
    batch: usize,
    /// What the cache has done.
    pub stats: PcpStats,
}

impl<const N: usize> PcpCache<N> {
    /// An empty cache handing back `batch` entries when it holds more than
    /// `high`; `high` is capped at `N - 1` (room for the push that passes
    /// it), `batch` to 1..=`high`.
    pub const fn new(high: usize, batch: usize) -> Self {
        let high = if high >= N { N.saturating_sub(1) } else { high };
        let batch = if batch > high { high } else { batch };
        let batch = if batch == 0 { 1 } else { batch };
        PcpCache {
            items: [0; N],
            count: 0,
            high,
            batch,
            stats: PcpStats { alloc_hit: 0, alloc_miss: 0, free: 0, refills: 0, refilled: 0, drains: 0, drained: 0 },
        }
    }

    /// Entries cached.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Hand back above this many.
    pub fn high(&self) -> usize {
        self.high
    }

    /// Entries moved to or from the backing allocator at a time.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The cached entries, coldest first.
    pub fn entries(&self) -> &[u64] {
        &self.items[..self.count]
    }

    /// Whether `v` is cached (a double free the cache can see).
    pub fn contains(&self, v: u64) -> bool {
        self.items[..self.count].contains(&v)
    }

    /// The hottest entry (last freed), or None: then the caller refills.
    #[inline]
    pub fn pop(&mut self) -> Option<u64> {
        if self.count == 0 {
            self.stats.alloc_miss += 1;
            return None;
        }
        self.count -= 1;
        self.stats.alloc_hit += 1;
        Some(self.items[self.count])
    }

    /// Caches a freed entry; true when the cache now holds more than
    /// `high` and the caller should hand back [`take_batch`](Self::take_batch).
    /// Never fails: `high < N`, and every push past `high` is followed by
    /// a `take_batch` (the caller's protocol), so there is always room; a
    /// caller that broke it gets `Err(v)` back instead of a lost entry.
    #[inline]
    pub fn push(&mut self, v: u64) -> Result<bool, u64> {
        if self.count >= N {
            return Err(v);
        }
        self.items[self.count] = v;
        self.count += 1;
        self.stats.free += 1;
        Ok(self.count > self.high)
    }

    /// Adds an entry a refill brought in; `Err(v)` when full (the caller
    /// hands it back).
    pub fn fill(&mut self, v: u64) -> Result<(), u64> {
        if self.count >= N {
            return Err(v);
        }
        self.items[self.count] = v;
        self.count += 1;
        self.stats.refilled += 1;
        Ok(())
    }

    /// Counts one refill (one lock acquisition by the caller).
    pub fn note_refill(&mut self) {
        self.stats.refills += 1;
    }

    /// Moves the `batch` coldest entries (or all, if fewer) to `out`
    /// (Linux's `free_pcppages_bulk` frees from the list's tail, the pages
    /// freed longest ago); returns how many.
    pub fn take_batch(&mut self, out: &mut [u64]) -> usize {
        self.take(self.batch.min(out.len()), out)
    }

    /// Moves up to `out.len()` entries, coldest first, to `out` (a drain:
    /// call until it returns 0).
    pub fn take_all(&mut self, out: &mut [u64]) -> usize {
        self.take(out.len(), out)
    }

    fn take(&mut self, n: usize, out: &mut [u64]) -> usize {
        let n = n.min(self.count);
        if n == 0 {
            return 0;
        }
        out[..n].copy_from_slice(&self.items[..n]);
        self.items.copy_within(n..self.count, 0);
        self.count -= n;
        self.stats.drains += 1;
        self.stats.drained += n as u64;
        n
    }
}

/// Turns a page cached by [`BuddyAllocator::rmqueue_pcp_batch`] into an
/// allocated order-0 block with one reference (what `mark_allocated` does
/// for a zone pcp page). False, and nothing changed, if the descriptor is
/// not a cached page's: the cache's entry was bad.
#[inline]
pub fn pcp_page_take(p: &mut Page) -> bool {
    if p.flags != PG_PCP || p.prev != PCP_DETACHED || p.order != 0 {
        return false;
    }
    p.flags = PG_HEAD;
    p.refcount = 1;
    p.owner = PageOwner::Unknown as u8;
    p.inuse = 0;
    p.next = NIL;
    p.prev = NIL;
    true
}

/// The migratetype list a freed page goes to, if it may go to a per-CPU
/// cache at all: an allocated order-0 block (not a slab) whose last
/// reference the caller drops. Anything else (a shared page, a double
/// free, a slab page) is for the locked path, which decrements or reports.
#[inline]
pub fn pcp_page_cacheable(p: &Page) -> Option<MigrateType> {
    (p.flags == PG_HEAD && p.order == 0 && p.refcount == 1 && (p.zone as usize) < MAX_NR_ZONES)
        .then(|| MigrateType::from_u8(p.frozen))
}

/// Marks a freed page (one [`pcp_page_cacheable`] accepted) as cached:
/// `PG_PCP`, no references, on no zone list. The migratetype it was
/// allocated with stays in `frozen`, as for a zone pcp page.
#[inline]
pub fn pcp_page_put(p: &mut Page) {
    // The last reference: the memcg charge goes with it.
    crate::memcg::uncharge_page(p);
    p.flags = PG_PCP;
    p.refcount = 0;
    p.next = NIL;
    p.prev = PCP_DETACHED;
}

impl BuddyAllocator<'_> {
    /// Linux's `rmqueue_bulk`: up to `out.len()` order-0 pages of `gfp`
    /// (its zonelist, watermarks and migratetype), each marked cached
    /// (`PG_PCP`, on no list) for a per-CPU cache; returns how many. Fails
    /// with the allocator's error only if not even one page could be had.
    pub fn rmqueue_pcp_batch(&mut self, cpu: usize, gfp: Gfp, out: &mut [u64]) -> Result<usize, BuddyError> {
        let mut n = 0;
        while n < out.len() {
            match self.alloc_pages(cpu, 0, gfp) {
                Ok(pfn) => {
                    let i = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))? as usize;
                    pcp_page_put(&mut self.mem_map_mut()[i]);
                    out[n] = pfn;
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    /// Gives pages a per-CPU cache held back to the buddy, merged (Linux's
    /// `free_pcppages_bulk`). Each must be a cached page (`PG_PCP`, on no
    /// zone list); the first that is not is reported, the rest untouched.
    pub fn free_pcp_pages(&mut self, pfns: &[u64]) -> Result<(), BuddyError> {
        for &pfn in pfns {
            let i = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))?;
            let p = &mut self.mem_map_mut()[i as usize];
            if p.flags != PG_PCP || p.prev != PCP_DETACHED || p.order != 0 {
                return Err(BuddyError::Corrupt("a per-CPU cache entry is not a cached page"));
            }
            let z = p.zone as usize;
            if z >= MAX_NR_ZONES {
                return Err(BuddyError::Corrupt("zone index in a block head"));
            }
            p.flags = PG_HEAD;
            p.prev = NIL;
            self.free_one_page(i, 0, z);
        }
        Ok(())
    }

    /// [`pcp_page_take`] on `pfn`'s descriptor, the allocator held.
    pub fn take_pcp_page(&mut self, pfn: u64) -> Result<(), BuddyError> {
        let i = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))? as usize;
        if !pcp_page_take(&mut self.mem_map_mut()[i]) {
            return Err(BuddyError::Corrupt("a per-CPU cache entry is not a cached page"));
        }
        Ok(())
    }

    /// [`pcp_page_put`] on `pfn`'s descriptor, the allocator held: the
    /// page must be [`pcp_page_cacheable`] (else the buddy's own
    /// [`free_pages`](Self::free_pages) is the way, and this refuses).
    pub fn put_pcp_page(&mut self, pfn: u64) -> Result<(), BuddyError> {
        let i = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))? as usize;
        let p = &mut self.mem_map_mut()[i];
        if pcp_page_cacheable(p).is_none() {
            return Err(BuddyError::NotAllocated(pfn));
        }
        pcp_page_put(p);
        Ok(())
    }

    /// Whether `pfn` heads a page held in a per-CPU cache.
    pub fn is_pcp_cached(&self, pfn: u64) -> bool {
        self.page(pfn).is_some_and(|p| p.flags == PG_PCP && p.prev == PCP_DETACHED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buddy::{ZoneType, GFP_HIGHUSER_MOVABLE, GFP_KERNEL};
    use alloc::collections::VecDeque;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum CacheOp {
        Push(u64),
        Pop,
        TakeBatch,
        TakeAll,
    }

    fn cache_op() -> impl Strategy<Value = CacheOp> {
        prop_oneof![
            4 => (0u64..1000).prop_map(CacheOp::Push),
            3 => Just(CacheOp::Pop),
            1 => Just(CacheOp::TakeBatch),
            1 => Just(CacheOp::TakeAll),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        /// The cache against a deque (back = hot end): LIFO pops, batches
        /// from the cold end, the `high` signal, never more than `N`.
        #[test]
        fn cache_matches_model(ops in proptest::collection::vec(cache_op(), 1..300), high in 1usize..20, batch in 1usize..20) {
            let mut c: PcpCache<16> = PcpCache::new(high, batch);
            let mut m: VecDeque<u64> = VecDeque::new();
            prop_assert!(c.high() < 16 && c.batch() >= 1 && c.batch() <= c.high().max(1));
            let mut out = [0u64; 16];
            for op in ops {
                match op {
                    CacheOp::Push(v) => {
                        if m.len() > c.high() {
                            // The protocol: hand back before the next push.
                            let n = c.take_batch(&mut out);
                            let want: Vec<u64> = m.drain(..n.min(m.len())).collect();
                            prop_assert_eq!(&out[..n], &want[..]);
                        }
                        let over = c.push(v);
                        m.push_back(v);
                        prop_assert_eq!(over, Ok(m.len() > c.high()));
                    }
                    CacheOp::Pop => prop_assert_eq!(c.pop(), m.pop_back()),
                    CacheOp::TakeBatch => {
                        let len = m.len();
                        let n = c.take_batch(&mut out);
                        prop_assert_eq!(n, c.batch().min(len));
                        let want: Vec<u64> = m.drain(..n).collect();
                        prop_assert_eq!(&out[..n], &want[..]);
                    }
                    CacheOp::TakeAll => {
                        let mut got = Vec::new();
                        loop {
                            let n = c.take_all(&mut out[..5]);
                            if n == 0 { break; }
                            got.extend_from_slice(&out[..n]);
                        }
                        let want: Vec<u64> = m.drain(..).collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(c.len(), m.len());
                // Full at most: `high` is capped at N - 1, so the push that
                // passes it still fits (the hand-back follows it).
                prop_assert!(c.len() <= 16);
                prop_assert_eq!(c.entries(), &m.iter().copied().collect::<Vec<_>>()[..]);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc {
            cpu: usize,
            movable: bool,
        },
        /// Frees the held page at this index (mod the count) on `cpu`,
        /// which need not be the CPU that allocated it.
        Free {
            cpu: usize,
            which: usize,
        },
        Drain {
            cpu: usize,
        },
    }

    fn op(cpus: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..cpus, any::<bool>()).prop_map(|(cpu, movable)| Op::Alloc { cpu, movable }),
            4 => (0..cpus, any::<usize>()).prop_map(|(cpu, which)| Op::Free { cpu, which }),
            1 => (0..cpus).prop_map(|cpu| Op::Drain { cpu }),
        ]
    }

    const CPUS: usize = 4;
    type Cache = PcpCache<8>;

    /// The guest's protocol on the host: per-CPU caches (one per CPU and
    /// migratetype) over a buddy allocator, refilled and drained in
    /// batches. Checks after every step: no page handed out twice, every
    /// cached page is `PG_PCP` and detached, the buddy's invariants hold,
    /// and allocated = held + cached; at the end, draining every cache
    /// and freeing every page gives all memory back merged.
    fn run(ops: &[Op], mobility: bool) {
        let mut m = vec![Page::default(); 8192];
        let mut pb = vec![0u8; 16];
        let mut b = if mobility {
            BuddyAllocator::with_mobility(&mut m, &mut pb, 0, CPUS).unwrap()
        } else {
            BuddyAllocator::new(&mut m, 0, CPUS).unwrap()
        };
        b.set_pcp_enabled(false);
        b.set_min_free_kbytes(0);
        // 1 MiB of DMA32: small enough that the caches run it dry.
        let base = crate::buddy::zone::DMA_END_PFN;
        b.free_range(base, base + 256).unwrap();
        let managed = b.counts().managed;
        let mut caches: Vec<[Cache; 3]> = (0..CPUS).map(|_| core::array::from_fn(|_| Cache::new(6, 3))).collect();
        let mut held: Vec<u64> = Vec::new();
        let mut buf = [0u64; 8];
        for op in ops {
            match *op {
                Op::Alloc { cpu, movable } => {
                    let gfp = if movable { GFP_HIGHUSER_MOVABLE } else { GFP_KERNEL };
                    let c = &mut caches[cpu][gfp.migratetype as usize];
                    let pfn = match c.pop() {
                        Some(p) => Some(p),
                        None => match b.rmqueue_pcp_batch(cpu, gfp, &mut buf[..c.batch()]) {
                            Ok(n) => {
                                c.note_refill();
                                for &p in &buf[..n] {
                                    c.fill(p).unwrap();
                                }
                                c.pop()
                            }
                            Err(e) => {
                                assert_eq!(e, BuddyError::NoMemory);
                                None
                            }
                        },
                    };
                    if let Some(pfn) = pfn {
                        let i = (pfn - b.base_pfn()) as usize;
                        assert!(pcp_page_take(&mut b.mem_map_mut()[i]), "cache entry {pfn:#x} not cached");
                        assert!(!held.contains(&pfn), "pfn {pfn:#x} handed out twice");
                        assert_eq!(b.page(pfn).unwrap().flags, PG_HEAD);
                        assert_eq!(crate::buddy::migrate::alloc_migratetype(b.page(pfn).unwrap()), gfp.migratetype);
                        held.push(pfn);
                    }
                }
                Op::Free { cpu, which } => {
                    if held.is_empty() {
                        continue;
                    }
                    let pfn = held.swap_remove(which % held.len());
                    let i = (pfn - b.base_pfn()) as usize;
                    let mt = pcp_page_cacheable(&b.mem_map()[i]).expect("a held page is cacheable");
                    pcp_page_put(&mut b.mem_map_mut()[i]);
                    // A second free of the same page is refused by the
                    // locked path (the page is PG_PCP now).
                    assert_eq!(b.free_pages(cpu, pfn, 0), Err(BuddyError::DoubleFree(pfn)));
                    assert!(pcp_page_cacheable(&b.mem_map()[i]).is_none());
                    let c = &mut caches[cpu][mt as usize];
                    if c.push(pfn).unwrap() {
                        let n = c.take_batch(&mut buf);
                        b.free_pcp_pages(&buf[..n]).unwrap();
                    }
                }
                Op::Drain { cpu } => {
                    for c in caches[cpu].iter_mut() {
                        loop {
                            let n = c.take_all(&mut buf);
                            if n == 0 {
                                break;
                            }
                            b.free_pcp_pages(&buf[..n]).unwrap();
                        }
                    }
                }
            }
            b.verify().unwrap();
            let cached: usize = caches.iter().flatten().map(|c| c.len()).sum();
            for c in caches.iter().flatten() {
                for &p in c.entries() {
                    assert!(b.is_pcp_cached(p), "cached pfn {p:#x} not PG_PCP");
                    assert!(!held.contains(&p), "pfn {p:#x} both held and cached");
                }
            }
            let counts = b.counts();
            assert_eq!(counts.allocated, (held.len() + cached) as u64);
            assert_eq!(counts.free + counts.allocated, managed);
        }
        for c in caches.iter_mut().flatten() {
            loop {
                let n = c.take_all(&mut buf);
                if n == 0 {
                    break;
                }
                b.free_pcp_pages(&buf[..n]).unwrap();
            }
        }
        assert_eq!(b.counts().allocated, held.len() as u64);
        for pfn in held.drain(..) {
            b.free_pages(0, pfn, 0).unwrap();
        }
        b.verify().unwrap();
        assert_eq!(b.counts().free, managed);
        // Everything merged back into 1 MiB-aligned... order-8 blocks.
        assert_eq!(b.free_blocks(ZoneType::Dma32)[8], 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn per_cpu_caches_over_the_buddy_match_model(ops in proptest::collection::vec(op(CPUS), 1..400)) {
            run(&ops, false);
        }

        #[test]
        fn per_cpu_caches_with_mobility_match_model(ops in proptest::collection::vec(op(CPUS), 1..400)) {
            run(&ops, true);
        }
    }

    #[test]
    fn free_pcp_pages_refuses_a_page_not_cached() {
        let mut m = vec![Page::default(); 64];
        let mut b = BuddyAllocator::new(&mut m, 0, 1).unwrap();
        b.set_pcp_enabled(false);
        b.set_min_free_kbytes(0);
        b.free_range(0, 64).unwrap();
        let pfn = b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
        assert!(b.free_pcp_pages(&[pfn]).is_err());
        assert!(b.free_pcp_pages(&[63]).is_err());
        let mut p = *b.page(pfn).unwrap();
        assert!(!pcp_page_take(&mut p));
    }
}
