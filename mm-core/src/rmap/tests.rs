use super::*;
use crate::vma::{VmFlags, VmaSet};
use proptest::prelude::*;

const P: u64 = PAGE_SIZE;
const RW: VmFlags = VmFlags(0x3);

/// Page tables reduced to (mm, address) -> (pfn, accessed bit).
#[derive(Default, Clone)]
struct Pts(BTreeMap<(MmId, u64), (u64, bool)>);

impl RmapPageTables for Pts {
    fn referenced_one(&mut self, mm: MmId, va: u64, pfn: u64) -> Option<bool> {
        match self.0.get_mut(&(mm, va)) {
            Some((p, young)) if *p == pfn => Some(core::mem::replace(young, false)),
            _ => None,
        }
    }
    fn unmap_one(&mut self, mm: MmId, va: u64, pfn: u64) -> bool {
        if self.0.get(&(mm, va)).is_some_and(|&(p, _)| p == pfn) {
            self.0.remove(&(mm, va));
            true
        } else {
            false
        }
    }
}

fn walk(r: &AnonRmap, m: AnonMapping) -> Vec<(MmId, u64)> {
    let mut v = Vec::new();
    r.rmap_walk(m, |mm, va| {
        v.push((mm, va));
        true
    });
    v
}

#[test]
fn fork_shares_and_cow_separates() {
    let mut r = AnonRmap::new();
    let vma = Vma::anon(16 * P, 32 * P, RW);
    let a = r.folio_add_new_anon_rmap(1, &vma, 20 * P, true).unwrap();
    assert_eq!(a.index, 20);
    // Same VMA, another page: same anon_vma.
    assert_eq!(r.folio_add_new_anon_rmap(1, &vma, 17 * P, true).unwrap().anon_vma, a.anon_vma);
    r.anon_vma_fork(1, 2).unwrap();
    assert_eq!(walk(&r, a), [(1, 20 * P), (2, 20 * P)], "the parent's page is found in the child");
    // The child's COW copy goes to the child's own anon_vma: not in the parent.
    let c = r.folio_add_new_anon_rmap(2, &vma, 20 * P, true).unwrap();
    assert_ne!(c.anon_vma, a.anon_vma);
    assert_eq!(walk(&r, c), [(2, 20 * P)]);
    // Grandchild sees both generations.
    r.anon_vma_fork(2, 3).unwrap();
    assert_eq!(walk(&r, a), [(1, 20 * P), (2, 20 * P), (3, 20 * P)]);
    assert_eq!(walk(&r, c), [(2, 20 * P), (3, 20 * P)]);
    // A page swapped in by the grandchild from a slot the others still
    // name goes to the root: every process of the tree is a candidate.
    let s = r.folio_add_new_anon_rmap(3, &vma, 21 * P, false).unwrap();
    assert_eq!(s.anon_vma, a.anon_vma, "the root is the first anon_vma");
    assert_eq!(walk(&r, s), [(1, 21 * P), (2, 21 * P), (3, 21 * P)]);
    assert_eq!(r.anon_vma_fork(1, 3), Err(RmapError::ChildNotEmpty(3)));
    // munmap in the child cuts its range; the rest still finds the page.
    r.unlink_anon_vmas(2, 18 * P, 22 * P);
    assert_eq!(walk(&r, a), [(1, 20 * P), (3, 20 * P)]);
    let b = AnonMapping { index: 24, ..a };
    assert_eq!(walk(&r, b), [(1, 24 * P), (2, 24 * P), (3, 24 * P)], "split halves stay linked");
    r.verify().unwrap();
    // Everything gone: every anon_vma freed.
    for mm in 1..=3 {
        r.exit_mmap(mm);
    }
    assert_eq!(r.nr_anon_vmas(), 0);
    assert!(walk(&r, a).is_empty());
    r.verify().unwrap();
}

#[test]
fn try_to_unmap_and_folio_referenced_check_the_ptes() {
    let mut r = AnonRmap::new();
    let vma = Vma::anon(0, 8 * P, RW);
    let a = r.folio_add_new_anon_rmap(7, &vma, 3 * P, true).unwrap();
    r.anon_vma_fork(7, 8).unwrap();
    r.anon_vma_fork(7, 9).unwrap();
    let mut pt = Pts::default();
    pt.0.insert((7, 3 * P), (100, true));
    pt.0.insert((8, 3 * P), (100, false));
    // 9 wrote to it: its PTE maps a copy.
    pt.0.insert((9, 3 * P), (101, true));
    assert_eq!(r.folio_referenced(a, 100, &mut pt), FolioReferenced { referenced: 1, mapped: 2 });
    assert_eq!(r.folio_referenced(a, 100, &mut pt), FolioReferenced { referenced: 0, mapped: 2 }, "bits cleared");
    assert_eq!(r.try_to_unmap(a, 100, &mut pt), 2);
    assert_eq!(pt.0.keys().copied().collect::<Vec<_>>(), [(9, 3 * P)], "the copy is untouched");
}

#[test]
fn gaps_vmas_and_pins() {
    let mut r = AnonRmap::new();
    let file = Vma { kind: crate::vma::VmaKind::File(1), ..Vma::anon(0, P, RW) };
    assert_eq!(r.anon_vma_prepare(1, &file, 0), Err(RmapError::NotAnon(0)));
    let vma = Vma::anon(0, 8 * P, RW);
    assert_eq!(r.anon_vma_prepare(1, &vma, 8 * P), Err(RmapError::NotInVma(8 * P)));
    let a = r.anon_vma_prepare(1, &vma, 5 * P).unwrap();
    // munmap a hole, then the VMA is mapped again and faulted in the hole:
    // a new range fills exactly the gap.
    r.unlink_anon_vmas(1, 2 * P, 4 * P);
    let b = r.anon_vma_prepare(1, &vma, 3 * P).unwrap();
    assert_ne!(a, b);
    assert_eq!(r.anon_vma_prepare(1, &vma, 2 * P), Ok(b));
    assert_eq!(r.anon_vma_prepare(1, &vma, 4 * P), Ok(a));
    assert_eq!(r.anon_vma_prepare(1, &vma, P), Ok(a));
    // A pin keeps an anon_vma alive past exit (swap cache), then frees it.
    assert!(r.anon_vma_get(b));
    r.exit_mmap(1);
    assert!(r.anon_vma_alive(b) && !r.anon_vma_alive(a));
    r.verify().unwrap();
    r.anon_vma_put(b).unwrap();
    assert!(!r.anon_vma_alive(b));
    assert_eq!(r.anon_vma_put(b), Err(RmapError::NotPinned(b)));
    r.verify().unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Mmap { mm: usize, start: u64, len: u64 },
    Touch { mm: usize, page: u64, write: bool },
    Fork { mm: usize },
    Munmap { mm: usize, start: u64, len: u64 },
    Exit { mm: usize },
    Reclaim { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<usize>(), 0..40u64, 1..10u64).prop_map(|(mm, start, len)| Op::Mmap { mm, start, len }),
        6 => (any::<usize>(), 0..48u64, any::<bool>()).prop_map(|(mm, page, write)| Op::Touch { mm, page, write }),
        1 => any::<usize>().prop_map(|mm| Op::Fork { mm }),
        2 => (any::<usize>(), 0..44u64, 1..6u64).prop_map(|(mm, start, len)| Op::Munmap { mm, start, len }),
        1 => any::<usize>().prop_map(|mm| Op::Exit { mm }),
        1 => any::<usize>().prop_map(|pick| Op::Reclaim { pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    /// Random mmap/fault/COW/fork/munmap/exit/reclaim over several address
    /// spaces: for every page, the rmap walk filtered by the PTE check finds
    /// exactly the places a brute-force scan of all page tables finds;
    /// try_to_unmap removes every mapping; nothing leaks at the end.
    #[test]
    fn rmap_walk_equals_brute_force(ops in proptest::collection::vec(op(), 1..120)) {
        let mut r = AnonRmap::new();
        let mut vmas: BTreeMap<MmId, VmaSet> = BTreeMap::new();
        let mut pt = Pts::default();
        let mut pages: BTreeMap<u64, AnonMapping> = BTreeMap::new();
        let mut next_pfn = 0u64;
        let mut next_mm: MmId = 1;
        vmas.insert(0, VmaSet::new());
        let pick_mm = |vmas: &BTreeMap<MmId, VmaSet>, i: usize| vmas.keys().nth(i % vmas.len().max(1)).copied();
        for op in ops {
            match op {
                Op::Mmap { mm, start, len } => {
                    let Some(mm) = pick_mm(&vmas, mm) else { continue };
                    let _ = vmas.get_mut(&mm).unwrap().insert(Vma::anon(start * P, (start + len) * P, RW));
                }
                Op::Touch { mm, page, write } => {
                    let Some(mm) = pick_mm(&vmas, mm) else { continue };
                    let va = page * P;
                    let Some(&vma) = vmas[&mm].find(va) else { continue };
                    let cur = pt.0.get(&(mm, va)).map(|&(p, _)| p);
                    let shared = cur.is_some_and(|p| pt.0.values().filter(|&&(q, _)| q == p).count() > 1);
                    match cur {
                        // Anonymous fault, or COW break of a shared page.
                        None => {}
                        Some(_) if write && shared => {}
                        Some(p) => { pt.0.insert((mm, va), (p, true)); continue; }
                    }
                    let m = r.folio_add_new_anon_rmap(mm, &vma, va, true).unwrap();
                    prop_assert_eq!(m.index, page);
                    pages.insert(next_pfn, m);
                    pt.0.insert((mm, va), (next_pfn, true));
                    next_pfn += 1;
                }
                Op::Fork { mm } => {
                    let Some(mm) = pick_mm(&vmas, mm) else { continue };
                    if vmas.len() >= 6 { continue; }
                    let child = next_mm;
                    next_mm += 1;
                    vmas.insert(child, vmas[&mm].clone());
                    let copied: Vec<_> = pt.0.iter().filter(|(&(m, _), _)| m == mm).map(|(&(_, va), &v)| (va, v)).collect();
                    for (va, v) in copied { pt.0.insert((child, va), v); }
                    r.anon_vma_fork(mm, child).unwrap();
                }
                Op::Munmap { mm, start, len } => {
                    let Some(mm) = pick_mm(&vmas, mm) else { continue };
                    let (s, e) = (start * P, (start + len) * P);
                    vmas.get_mut(&mm).unwrap().munmap(s, e).unwrap();
                    pt.0.retain(|&(m, va), _| m != mm || va < s || va >= e);
                    r.unlink_anon_vmas(mm, s, e);
                }
                Op::Exit { mm } => {
                    let Some(mm) = pick_mm(&vmas, mm) else { continue };
                    vmas.remove(&mm);
                    pt.0.retain(|&(m, _), _| m != mm);
                    r.exit_mmap(mm);
                }
                Op::Reclaim { pick } => {
                    let live: Vec<u64> = pages.keys().copied().filter(|p| pt.0.values().any(|&(q, _)| q == *p)).collect();
                    if live.is_empty() { continue; }
                    let pfn = live[pick % live.len()];
                    let mapped = pt.0.values().filter(|&&(q, _)| q == pfn).count() as u32;
                    prop_assert_eq!(r.try_to_unmap(pages[&pfn], pfn, &mut pt), mapped);
                    prop_assert!(pt.0.values().all(|&(q, _)| q != pfn), "still mapped after try_to_unmap");
                }
            }
            r.verify().unwrap();
            // Pages no PTE maps any more are freed.
            pages.retain(|&p, _| pt.0.values().any(|&(q, _)| q == p));
            for (&pfn, &m) in &pages {
                let brute: Vec<(MmId, u64)> = pt.0.iter().filter(|(_, &(q, _))| q == pfn).map(|(&k, _)| k).collect();
                let mut found = Vec::new();
                r.rmap_walk(m, |mm, va| {
                    if pt.0.get(&(mm, va)).is_some_and(|&(q, _)| q == pfn) { found.push((mm, va)); }
                    true
                });
                prop_assert_eq!(&found, &brute, "pfn {}", pfn);
                let young = brute.iter().filter(|k| pt.0[k].1).count() as u32;
                let mut pt2 = pt.clone();
                let fr = r.folio_referenced(m, pfn, &mut pt2);
                prop_assert_eq!(fr, FolioReferenced { referenced: young, mapped: brute.len() as u32 });
                prop_assert!(brute.iter().all(|k| !pt2.0[k].1), "accessed bits cleared");
            }
        }
        let mms: Vec<MmId> = vmas.keys().copied().collect();
        for mm in mms { r.exit_mmap(mm); }
        prop_assert_eq!(r.nr_anon_vmas(), 0, "anon_vmas leaked");
        r.verify().unwrap();
    }
}

#[test]
fn mremap_moves_ranges_and_the_walk_finds_pages_at_their_new_address() {
    let mut r = AnonRmap::new();
    let vma = Vma::anon(16 * P, 32 * P, RW);
    let a = r.folio_add_new_anon_rmap(1, &vma, 20 * P, true).unwrap();
    let b = r.folio_add_new_anon_rmap(1, &vma, 30 * P, true).unwrap();
    r.anon_vma_fork(1, 2).unwrap();
    // The child moves [18, 24) to 100: page 20 (index 20) is at 102 there;
    // page 30 stays; the parent is untouched.
    r.move_range(2, 18 * P, 24 * P, 100 * P);
    assert_eq!(walk(&r, a), [(1, 20 * P), (2, 102 * P)]);
    assert_eq!(walk(&r, b), [(1, 30 * P), (2, 30 * P)]);
    // A new page faulted in the moved VMA (which kept vm_pgoff 18) gets
    // the index its old place had, and is found where it is.
    let moved =
        Vma { start: 100 * P, end: 106 * P, flags: RW, kind: VmaKind::Anon, pgoff: 18, policy: Default::default() };
    let c = r.folio_add_new_anon_rmap(2, &moved, 101 * P, true).unwrap();
    assert_eq!(c.index, 19);
    assert_eq!(walk(&r, c), [(2, 101 * P)]);
    r.verify().unwrap();
    // Unmapping the moved range frees what only it linked.
    r.unlink_anon_vmas(2, 100 * P, 106 * P);
    assert_eq!(walk(&r, a), [(1, 20 * P)]);
    r.verify().unwrap();
}
