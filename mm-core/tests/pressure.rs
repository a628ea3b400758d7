//! rmap, lru and swap together through their public API, as the guest's
//! memory manager will use them: a small machine (few frames, a small swap
//! area) with processes that fault, write, fork, unmap and exit while
//! direct reclaim swaps pages out (`try_to_unmap` writing swap PTEs with
//! `swap_duplicate`) and faults swap them back in (the swap cache,
//! `swapcache_prepare`, `swap_free`, shared slots mapped through the root
//! anon_vma). After every step: every value any process reads is the last
//! one it wrote (nothing lost), each slot's count equals its swap PTEs and
//! `SWAP_HAS_CACHE` equals swap-cache membership (`--verify swap`), every
//! user page is on exactly one LRU list and no free one is (`--verify
//! lru`), and each page's rmap walk finds exactly its PTEs.

use mm_core::addr::PAGE_SIZE;
use mm_core::lru::{LruList, Lruvec, ReclaimOps, ReclaimOutcome, Referenced, ScanControl, Shadow, MAX_RECLAIM_RETRIES};
use mm_core::rmap::{AnonMapping, AnonRmap, MmId, RmapPageTables};
use mm_core::swap::{verify_swap_map, SwapAreas, SwpEntry, SWAP_HAS_CACHE};
use mm_core::vma::{VmFlags, Vma, VmaSet};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const P: u64 = PAGE_SIZE;
const FRAMES: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pte {
    Page { pfn: u64, young: bool },
    Swap(SwpEntry),
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    mapping: AnonMapping,
    data: u64,
    /// In the swap cache under this slot.
    swap: Option<SwpEntry>,
}

/// Everything reclaim touches besides the lists.
struct Mem {
    rmap: AnonRmap,
    swap: SwapAreas,
    pt: BTreeMap<(MmId, u64), Pte>,
    frames: Vec<Option<Frame>>,
    free: Vec<u64>,
    swap_cache: BTreeMap<SwpEntry, u64>,
    device: BTreeMap<SwpEntry, u64>,
    shadows: BTreeMap<SwpEntry, Shadow>,
    swapouts: u64,
}

struct Young<'a>(&'a mut BTreeMap<(MmId, u64), Pte>);

impl RmapPageTables for Young<'_> {
    fn referenced_one(&mut self, mm: MmId, va: u64, pfn: u64) -> Option<bool> {
        match self.0.get_mut(&(mm, va)) {
            Some(Pte::Page { pfn: p, young }) if *p == pfn => Some(std::mem::replace(young, false)),
            _ => None,
        }
    }
    fn unmap_one(&mut self, _: MmId, _: u64, _: u64) -> bool {
        unreachable!("the referenced walk unmaps nothing")
    }
}

/// `try_to_unmap_one` for swap-out: the PTE becomes the swap entry, which
/// takes a reference.
struct ToSwap<'a> {
    pt: &'a mut BTreeMap<(MmId, u64), Pte>,
    swap: &'a mut SwapAreas,
    entry: SwpEntry,
}

impl RmapPageTables for ToSwap<'_> {
    fn referenced_one(&mut self, _: MmId, _: u64, _: u64) -> Option<bool> {
        unreachable!("unmapping harvests nothing")
    }
    fn unmap_one(&mut self, mm: MmId, va: u64, pfn: u64) -> bool {
        match self.pt.get(&(mm, va)) {
            Some(Pte::Page { pfn: p, .. }) if *p == pfn => {
                self.swap.swap_duplicate(self.entry).expect("allocated slot");
                self.pt.insert((mm, va), Pte::Swap(self.entry));
                true
            }
            _ => false,
        }
    }
}

impl ReclaimOps for Mem {
    fn folio_referenced(&mut self, pfn: u64) -> Referenced {
        let f = self.frames[pfn as usize].expect("reclaim scans only user pages");
        let r = self.rmap.folio_referenced(f.mapping, pfn, &mut Young(&mut self.pt));
        Referenced { ptes: r.referenced, ..Referenced::default() }
    }

    fn reclaim_folio(&mut self, pfn: u64, anon: bool, shadow: Shadow, _: bool) -> ReclaimOutcome {
        assert!(anon);
        let mut f = self.frames[pfn as usize].expect("user page");
        // add_to_swap.
        let e = match f.swap {
            Some(e) => e,
            None => match self.swap.get_swap_page() {
                Ok(e) => e,
                Err(_) => return ReclaimOutcome::Activate,
            },
        };
        f.swap = Some(e);
        self.swap_cache.insert(e, pfn);
        self.rmap.try_to_unmap(f.mapping, pfn, &mut ToSwap { pt: &mut self.pt, swap: &mut self.swap, entry: e });
        // pageout, then __remove_mapping: the shadow takes the page's place.
        self.device.insert(e, f.data);
        self.swapouts += 1;
        self.swap_cache.remove(&e);
        self.shadows.insert(e, shadow);
        if self.swap.swapcache_free(e).expect("cached") == 0 {
            // Mapped nowhere any more: the slot is free again.
            self.shadows.remove(&e);
            self.device.remove(&e);
        }
        self.frames[pfn as usize] = None;
        self.free.push(pfn);
        ReclaimOutcome::Freed { io: true }
    }
}

struct World {
    mem: Mem,
    lru: Lruvec,
    vmas: BTreeMap<MmId, VmaSet>,
    model: BTreeMap<(MmId, u64), u64>,
    next_mm: MmId,
    next_value: u64,
}

impl World {
    fn new() -> World {
        let mut swap = SwapAreas::new();
        swap.swapon(40, &[], 0).unwrap();
        let mut vmas = BTreeMap::new();
        vmas.insert(0, VmaSet::new());
        World {
            mem: Mem {
                rmap: AnonRmap::new(),
                swap,
                pt: BTreeMap::new(),
                frames: vec![None; FRAMES as usize],
                free: (0..FRAMES).rev().collect(),
                swap_cache: BTreeMap::new(),
                device: BTreeMap::new(),
                shadows: BTreeMap::new(),
                swapouts: 0,
            },
            lru: Lruvec::new(0, FRAMES as usize).unwrap(),
            vmas,
            model: BTreeMap::new(),
            next_mm: 1,
            next_value: 1,
        }
    }

    fn mapcount(&self, pfn: u64) -> usize {
        self.mem.pt.values().filter(|&&p| matches!(p, Pte::Page { pfn: q, .. } if q == pfn)).count()
    }

    /// A free frame, reclaiming if there is none (`__alloc_pages_slowpath`
    /// with direct reclaim, retried as `should_reclaim_retry` does: one
    /// pass over young shared pages may only age them); `None` when
    /// reclaim made no progress `MAX_RECLAIM_RETRIES` times (OOM).
    fn alloc_frame(&mut self) -> Option<u64> {
        let mut retries = 0;
        while self.mem.free.is_empty() && retries < MAX_RECLAIM_RETRIES {
            let mut sc = ScanControl::new(4, 60, self.mem.swap.nr_swap_pages() > 0, false);
            if self.lru.try_to_free_pages(&mut sc, &mut self.mem) == 0 {
                retries += 1;
            }
        }
        self.mem.free.pop()
    }

    /// Frees a page no PTE maps any more.
    fn free_page(&mut self, pfn: u64) {
        let f = self.mem.frames[pfn as usize].take().unwrap();
        self.lru.folio_del_lru(pfn).unwrap();
        if let Some(e) = f.swap {
            self.mem.swap_cache.remove(&e);
            if self.mem.swap.swapcache_free(e).unwrap() == 0 {
                self.mem.device.remove(&e);
                self.mem.shadows.remove(&e);
            }
        }
        self.mem.free.push(pfn);
    }

    /// Drops one swap PTE's reference (zap, or the PTE replaced at
    /// swap-in); frees the cache page's slot if only the cache holds it.
    fn put_swap(&mut self, e: SwpEntry) {
        let left = self.mem.swap.swap_free(e).unwrap();
        if left == SWAP_HAS_CACHE {
            // free_swap_and_cache: the cached page stays mapped where it is.
            let pfn = self.mem.swap_cache.remove(&e).unwrap();
            self.mem.frames[pfn as usize].as_mut().unwrap().swap = None;
            self.mem.swap.swapcache_free(e).unwrap();
        }
        if left == 0 {
            self.mem.device.remove(&e);
            self.mem.shadows.remove(&e);
        }
    }

    fn zap(&mut self, mm: MmId, va: u64) {
        match self.mem.pt.remove(&(mm, va)) {
            Some(Pte::Page { pfn, .. }) if self.mapcount(pfn) == 0 => self.free_page(pfn),
            Some(Pte::Swap(e)) => self.put_swap(e),
            _ => {}
        }
        self.model.remove(&(mm, va));
    }

    fn read(&self, mm: MmId, va: u64) -> Option<u64> {
        match self.mem.pt.get(&(mm, va))? {
            Pte::Page { pfn, .. } => Some(self.mem.frames[*pfn as usize].unwrap().data),
            Pte::Swap(e) => match self.mem.swap_cache.get(e) {
                Some(&pfn) => Some(self.mem.frames[pfn as usize].unwrap().data),
                None => Some(self.mem.device[e]),
            },
        }
    }

    /// A user access: anonymous fault, swap-in (`do_swap_page`), COW
    /// (`do_wp_page`) or a plain hit that sets the accessed bit. Returns
    /// false on OOM (nothing changed).
    fn touch(&mut self, mm: MmId, va: u64, write: bool) -> bool {
        let Some(&vma) = self.vmas[&mm].find(va) else { return true };
        let pte = self.mem.pt.get(&(mm, va)).copied();
        // Swap-in first (then a write goes through the COW check below).
        if let Some(Pte::Swap(e)) = pte {
            let pfn = match self.mem.swap_cache.get(&e) {
                Some(&pfn) => pfn,
                None => {
                    let Some(pfn) = self.alloc_frame() else { return false };
                    // Reclaim may have freed the slot's last other user;
                    // our PTE still holds it.
                    self.mem.swap.swapcache_prepare(e).unwrap();
                    let exclusive = self.mem.swap.swap_count(e).unwrap() == 1;
                    let mapping = self.mem.rmap.folio_add_new_anon_rmap(mm, &vma, va, exclusive).unwrap();
                    let data = self.mem.device[&e];
                    self.mem.frames[pfn as usize] = Some(Frame { mapping, data, swap: Some(e) });
                    self.mem.swap_cache.insert(e, pfn);
                    match self.mem.shadows.remove(&e) {
                        Some(s) => {
                            self.lru.folio_add_lru_refault(pfn, true, s, true).unwrap();
                        }
                        None => self.lru.folio_add_lru(pfn, true).unwrap(),
                    }
                    pfn
                }
            };
            self.mem.pt.insert((mm, va), Pte::Page { pfn, young: true });
            self.put_swap(e);
        }
        match self.mem.pt.get(&(mm, va)).copied() {
            None => {
                let Some(pfn) = self.alloc_frame() else { return false };
                let mapping = self.mem.rmap.folio_add_new_anon_rmap(mm, &vma, va, true).unwrap();
                self.mem.frames[pfn as usize] = Some(Frame { mapping, data: 0, swap: None });
                self.lru.folio_add_lru(pfn, true).unwrap();
                self.mem.pt.insert((mm, va), Pte::Page { pfn, young: true });
                self.model.insert((mm, va), 0);
            }
            Some(Pte::Page { pfn, .. }) => {
                self.mem.pt.insert((mm, va), Pte::Page { pfn, young: true });
                let f = self.mem.frames[pfn as usize].unwrap();
                let swap_shared = f.swap.is_some_and(|e| self.mem.swap.swap_count(e).unwrap() > 0);
                if write && (self.mapcount(pfn) > 1 || swap_shared) {
                    let Some(new) = self.alloc_frame() else { return false };
                    // Reclaim may have swapped the old page out meanwhile:
                    // copy whatever this PTE now reaches.
                    let data = self.read(mm, va).unwrap();
                    match self.mem.pt.get(&(mm, va)).copied() {
                        Some(Pte::Page { pfn: old, .. }) => {
                            self.mem.pt.remove(&(mm, va));
                            if self.mapcount(old) == 0 {
                                self.free_page(old);
                            }
                        }
                        Some(Pte::Swap(e)) => {
                            self.mem.pt.remove(&(mm, va));
                            self.put_swap(e);
                        }
                        None => unreachable!(),
                    }
                    let mapping = self.mem.rmap.folio_add_new_anon_rmap(mm, &vma, va, true).unwrap();
                    self.mem.frames[new as usize] = Some(Frame { mapping, data, swap: None });
                    self.lru.folio_add_lru(new, true).unwrap();
                    self.mem.pt.insert((mm, va), Pte::Page { pfn: new, young: true });
                }
            }
            Some(Pte::Swap(_)) => unreachable!("swapped in above"),
        }
        if write {
            let v = self.next_value;
            self.next_value += 1;
            match self.mem.pt[&(mm, va)] {
                Pte::Page { pfn, .. } => self.mem.frames[pfn as usize].as_mut().unwrap().data = v,
                Pte::Swap(_) => unreachable!(),
            }
            self.model.insert((mm, va), v);
        }
        true
    }

    fn fork(&mut self, mm: MmId) {
        let child = self.next_mm;
        self.next_mm += 1;
        self.vmas.insert(child, self.vmas[&mm].clone());
        let ptes: Vec<(u64, Pte)> = self.mem.pt.range((mm, 0)..(mm + 1, 0)).map(|(&(_, va), &p)| (va, p)).collect();
        for (va, p) in ptes {
            // copy_pte_range: swap PTEs take a slot reference.
            if let Pte::Swap(e) = p {
                self.mem.swap.swap_duplicate(e).unwrap();
            }
            self.mem.pt.insert((child, va), p);
            self.model.insert((child, va), self.model[&(mm, va)]);
        }
        self.mem.rmap.anon_vma_fork(mm, child).unwrap();
    }

    fn munmap(&mut self, mm: MmId, s: u64, e: u64) {
        self.vmas.get_mut(&mm).unwrap().munmap(s, e).unwrap();
        let vas: Vec<u64> = self.mem.pt.range((mm, s)..(mm, e)).map(|(&(_, va), _)| va).collect();
        for va in vas {
            self.zap(mm, va);
        }
        self.mem.rmap.unlink_anon_vmas(mm, s, e);
    }

    fn exit(&mut self, mm: MmId) {
        self.munmap(mm, 0, 1 << 40);
        self.vmas.remove(&mm);
        self.mem.rmap.exit_mmap(mm);
    }

    fn check(&self) -> Result<(), TestCaseError> {
        // Nothing lost.
        for (&(mm, va), &v) in &self.model {
            prop_assert_eq!(self.read(mm, va), Some(v), "mm {} va {:#x}", mm, va);
        }
        prop_assert_eq!(self.model.len(), self.mem.pt.len());
        // --verify swap: counts equal swap PTEs, HAS_CACHE equals the swap cache.
        let mut refs: BTreeMap<SwpEntry, u16> = BTreeMap::new();
        for p in self.mem.pt.values() {
            if let Pte::Swap(e) = p {
                *refs.entry(*e).or_default() += 1;
            }
        }
        let mut used = refs.clone();
        for &e in self.mem.swap_cache.keys() {
            used.entry(e).or_default();
        }
        for (&e, &n) in &used {
            let cache = if self.mem.swap_cache.contains_key(&e) { SWAP_HAS_CACHE } else { 0 };
            prop_assert_eq!(self.mem.swap.usage(e), Ok(n | cache), "slot {:?}", e);
        }
        prop_assert_eq!(self.mem.swap.nr_swap_pages(), self.mem.swap.total_swap_pages() - used.len() as u64);
        self.mem.swap.verify().unwrap();
        // The same through the checker the host's --verify swap will use.
        let ptes: BTreeMap<u64, u32> = refs.iter().map(|(e, &n)| (e.offset, n as u32)).collect();
        let cached: BTreeSet<u64> = self.mem.swap_cache.keys().map(|e| e.offset).collect();
        prop_assert_eq!(verify_swap_map(0, self.mem.swap.area(0).unwrap().swap_map(), &ptes, &cached), Ok(()));
        // --verify lru: every user page on one evictable list, free ones on none.
        self.lru.verify().unwrap();
        for pfn in 0..FRAMES {
            let on = self.lru.folio_lru(pfn);
            match self.mem.frames[pfn as usize] {
                Some(_) => prop_assert!(matches!(on, Some(LruList::InactiveAnon | LruList::ActiveAnon))),
                None => prop_assert_eq!(on, None),
            }
        }
        prop_assert_eq!(self.lru.nr_evictable(), self.mem.frames.iter().flatten().count() as u64);
        // rmap: each page's walk finds exactly its PTEs.
        for (pfn, f) in self.mem.frames.iter().enumerate() {
            let Some(f) = f else { continue };
            let pfn = pfn as u64;
            let brute: Vec<(MmId, u64)> = self
                .mem
                .pt
                .iter()
                .filter(|(_, &p)| matches!(p, Pte::Page { pfn: q, .. } if q == pfn))
                .map(|(&k, _)| k)
                .collect();
            let mut found = Vec::new();
            self.mem.rmap.rmap_walk(f.mapping, |mm, va| {
                if matches!(self.mem.pt.get(&(mm, va)), Some(Pte::Page { pfn: q, .. }) if *q == pfn) {
                    found.push((mm, va));
                }
                true
            });
            prop_assert_eq!(found, brute, "pfn {}", pfn);
        }
        self.mem.rmap.verify().unwrap();
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Mmap { mm: usize, start: u64, len: u64 },
    Touch { mm: usize, page: u64, write: bool },
    Fork { mm: usize },
    Munmap { mm: usize, start: u64, len: u64 },
    Exit { mm: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<usize>(), 0..24u64, 1..8u64).prop_map(|(mm, start, len)| Op::Mmap { mm, start, len }),
        12 => (any::<usize>(), 0..32u64, any::<bool>()).prop_map(|(mm, page, write)| Op::Touch { mm, page, write }),
        1 => any::<usize>().prop_map(|mm| Op::Fork { mm }),
        1 => (any::<usize>(), 0..30u64, 1..4u64).prop_map(|(mm, start, len)| Op::Munmap { mm, start, len }),
        1 => any::<usize>().prop_map(|mm| Op::Exit { mm }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]
    #[test]
    fn reclaim_swap_and_rmap_lose_nothing(ops in proptest::collection::vec(op(), 1..200)) {
        let mut w = World::new();
        for op in ops {
            let pick = |w: &World, i: usize| w.vmas.keys().nth(i % w.vmas.len().max(1)).copied();
            match op {
                Op::Mmap { mm, start, len } => {
                    let Some(mm) = pick(&w, mm) else { continue };
                    let _ = w.vmas.get_mut(&mm).unwrap().insert(Vma::anon(start * P, (start + len) * P, VmFlags(3)));
                }
                Op::Touch { mm, page, write } => {
                    let Some(mm) = pick(&w, mm) else { continue };
                    w.touch(mm, page * P, write);
                }
                Op::Fork { mm } => {
                    let Some(mm) = pick(&w, mm) else { continue };
                    if w.vmas.len() < 5 {
                        w.fork(mm);
                    }
                }
                Op::Munmap { mm, start, len } => {
                    let Some(mm) = pick(&w, mm) else { continue };
                    w.munmap(mm, start * P, (start + len) * P);
                }
                Op::Exit { mm } => {
                    let Some(mm) = pick(&w, mm) else { continue };
                    w.exit(mm);
                }
            }
            w.check()?;
        }
        let mms: Vec<MmId> = w.vmas.keys().copied().collect();
        for mm in mms {
            w.exit(mm);
        }
        w.check()?;
        prop_assert_eq!(w.mem.free.len() as u64, FRAMES, "every frame back");
        prop_assert_eq!(w.mem.swap.nr_swap_pages(), w.mem.swap.total_swap_pages(), "every slot back");
        prop_assert_eq!(w.mem.rmap.nr_anon_vmas(), 0);
    }
}

/// The property above must actually swap: a fixed run over more memory
/// than frames swaps out and back in, with a fork sharing swapped pages.
#[test]
fn a_fixed_run_swaps_and_shares_slots() {
    let mut w = World::new();
    w.vmas.get_mut(&0).unwrap().insert(Vma::anon(0, 32 * P, VmFlags(3))).unwrap();
    for p in 0..24 {
        assert!(w.touch(0, p * P, true));
    }
    assert!(w.mem.swapouts >= 8, "24 pages in 16 frames");
    w.fork(0);
    let shared = w.mem.swap.areas().next().map(|(_, a)| a.inuse_pages()).unwrap();
    assert!(shared > 0);
    // Both processes read everything back, page by page, the child first:
    // its swap-ins of slots the parent still names must go to the root
    // anon_vma, or the parent's mapping of the page from the swap cache
    // right after would be invisible to the rmap.
    for p in 0..24 {
        for mm in [1, 0] {
            let ok = w.touch(mm, p * P, false);
            if !ok {
                eprintln!(
                    "OOM at p {p} mm {mm}: lists {:?} swap free {}",
                    LruList::ALL.map(|l| w.lru.nr(l)),
                    w.mem.swap.nr_swap_pages()
                );
            }
            assert!(ok);
            w.check().unwrap();
        }
    }
    // Writes in the child copy only what they write.
    for p in 0..4 {
        assert!(w.touch(1, p * P, true));
    }
    w.check().unwrap();
    assert!(w.lru.stat().pgsteal_direct > 0 && w.lru.stat().pgscan_direct >= w.lru.stat().pgsteal_direct);
    assert!(w.lru.stat().workingset_refault[0] > 0);
}
