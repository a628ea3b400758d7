use super::*;
use alloc::collections::BTreeMap;
use proptest::prelude::*;

fn e(offset: u64) -> SwpEntry {
    SwpEntry::new(0, offset)
}

#[test]
fn slot_lifecycle_like_linux() {
    let mut s = SwapAreas::new();
    assert_eq!(s.get_swap_page(), Err(SwapError::NoSpace), "no swap before swapon");
    let ty = s.swapon(1024, &[5], 0).unwrap();
    assert_eq!(ty, 0);
    // 1024 slots minus the header and one bad slot.
    assert_eq!((s.total_swap_pages(), s.nr_swap_pages()), (1022, 1022));
    // Swap-out: slot allocated into the swap cache, two PTEs take counts.
    let a = s.get_swap_page().unwrap();
    assert_eq!(a, e(SWAPFILE_CLUSTER), "cluster 0 holds the header: the first whole free cluster is used");
    assert_eq!(s.usage(a), Ok(SWAP_HAS_CACHE));
    s.swap_duplicate(a).unwrap();
    s.swap_duplicate(a).unwrap();
    assert_eq!(s.swap_count(a), Ok(2));
    // Writeback done, page leaves the swap cache.
    assert_eq!(s.swapcache_free(a), Ok(2));
    assert_eq!(s.nr_swap_pages(), 1021);
    // Swap-in by one process: cache claimed, a second claim is refused.
    s.swapcache_prepare(a).unwrap();
    assert_eq!(s.swapcache_prepare(a), Err(SwapError::AlreadyCached(a)));
    assert_eq!(s.swap_free(a), Ok(1 | SWAP_HAS_CACHE));
    assert_eq!(s.swap_free(a), Ok(SWAP_HAS_CACHE), "only the swap cache holds it: free_swap_and_cache");
    assert_eq!(s.swapcache_free(a), Ok(0));
    assert_eq!(s.nr_swap_pages(), 1022);
    // Bad entries are errors.
    assert_eq!(s.swap_free(a), Err(SwapError::Unused(a)));
    assert_eq!(s.swap_duplicate(a), Err(SwapError::Unused(a)));
    assert_eq!(s.swapcache_prepare(a), Err(SwapError::Unused(a)));
    assert_eq!(s.swapcache_free(a), Err(SwapError::Unused(a)));
    assert_eq!(s.swap_free(e(0)), Err(SwapError::BadOffset(e(0))));
    assert_eq!(s.swap_free(e(1024)), Err(SwapError::BadOffset(e(1024))));
    assert_eq!(s.swap_free(e(5)), Err(SwapError::BadSlot(e(5))));
    assert_eq!(s.swap_free(SwpEntry::new(3, 1)), Err(SwapError::BadType(3)));
    let b = s.get_swap_page().unwrap();
    s.swap_duplicate(b).unwrap();
    assert_eq!(s.swapcache_free(b), Ok(1));
    assert_eq!(s.swapcache_free(b), Err(SwapError::NotCached(b)));
    assert_eq!(s.swapoff(0), Err(SwapError::Busy(0)));
    s.swap_free(b).unwrap();
    s.verify().unwrap();
    s.swapoff(0).unwrap();
    assert_eq!((s.total_swap_pages(), s.nr_swap_pages()), (0, 0));
    assert_eq!(s.swapon(1, &[], 0), Err(SwapError::TooSmall(1)));
}

#[test]
fn batches_get_consecutive_slots_from_clusters() {
    let mut s = SwapAreas::new();
    s.swapon(4 * SWAPFILE_CLUSTER, &[], 0).unwrap();
    let mut v = Vec::new();
    assert_eq!(s.get_swap_pages(16, &mut v), 16);
    // Cluster 0 is not free (header), so the first batch fills cluster 1.
    let offs: Vec<u64> = v.iter().map(|e| e.offset).collect();
    assert_eq!(offs, (SWAPFILE_CLUSTER..SWAPFILE_CLUSTER + 16).collect::<Vec<_>>());
    // Freeing a slot in the middle does not scatter the next batch.
    s.swapcache_free(v[3]).unwrap();
    v.clear();
    s.get_swap_pages(16, &mut v);
    assert_eq!(v[0].offset, SWAPFILE_CLUSTER + 16);
    assert!(v.windows(2).all(|w| w[1].offset == w[0].offset + 1));
    s.verify().unwrap();
}

#[test]
fn falls_back_to_scanning_and_fills_up() {
    let mut s = SwapAreas::new();
    s.swapon(SWAPFILE_CLUSTER + 10, &[], 0).unwrap();
    let total = s.total_swap_pages();
    let mut v = Vec::new();
    assert_eq!(s.get_swap_pages(total as usize + 5, &mut v), total as usize);
    assert_eq!(s.nr_swap_pages(), 0);
    assert_eq!(s.get_swap_page(), Err(SwapError::NoSpace));
    let mut offs: Vec<u64> = v.iter().map(|e| e.offset).collect();
    offs.sort_unstable();
    offs.dedup();
    assert_eq!(offs.len() as u64, total, "no slot handed out twice");
    s.swapcache_free(v[7]).unwrap();
    assert_eq!(s.get_swap_page(), Ok(v[7]));
    s.verify().unwrap();
}

#[test]
fn priorities_pick_the_higher_area_first() {
    let mut s = SwapAreas::new();
    let lo = s.swapon(300, &[], -2).unwrap();
    let hi = s.swapon(300, &[], 5).unwrap();
    assert_eq!(s.get_swap_page().unwrap().ty, hi);
    let mut v = Vec::new();
    s.get_swap_pages(400, &mut v);
    assert!(v.iter().any(|e| e.ty == lo), "spills into the lower-priority area when the higher is full");
    assert_eq!(s.nr_swap_pages(), 598 - 401);
    s.verify().unwrap();
}

#[test]
fn verify_swap_map_names_each_disagreement() {
    use alloc::collections::BTreeSet;
    let mut s = SwapAreas::new();
    s.swapon(300, &[7], 0).unwrap();
    let a = s.get_swap_page().unwrap();
    s.swap_duplicate(a).unwrap();
    s.swap_duplicate(a).unwrap();
    let b = s.get_swap_page().unwrap();
    s.swap_duplicate(b).unwrap();
    s.swapcache_free(b).unwrap();
    let map = s.area(0).unwrap().swap_map();
    let ptes = BTreeMap::from([(a.offset, 2), (b.offset, 1)]);
    let cached = BTreeSet::from([a.offset]);
    assert_eq!(verify_swap_map(0, map, &ptes, &cached), Ok(()));
    let bad = BTreeMap::from([(a.offset, 1), (b.offset, 1)]);
    assert_eq!(verify_swap_map(0, map, &bad, &cached), Err(SwapMapError::CountMismatch { entry: a, map: 2, ptes: 1 }));
    assert_eq!(
        verify_swap_map(0, map, &ptes, &BTreeSet::new()),
        Err(SwapMapError::CacheMismatch { entry: a, map: true, cached: false })
    );
    let stray = BTreeMap::from([(a.offset, 2), (b.offset, 1), (7, 1)]);
    assert_eq!(verify_swap_map(0, map, &stray, &cached), Err(SwapMapError::Unallocated(e(7))));
    let none = BTreeMap::from([(b.offset, 1)]);
    assert!(verify_swap_map(0, map, &none, &BTreeSet::new()).is_err());
    assert_eq!(
        verify_swap_map(0, map, &BTreeMap::from([(a.offset, 2)]), &cached),
        Err(SwapMapError::CountMismatch { entry: b, map: 1, ptes: 0 })
    );
}

#[test]
fn count_overflow_is_an_error() {
    let mut s = SwapAreas::new();
    s.swapon(16, &[], 0).unwrap();
    let a = s.get_swap_page().unwrap();
    for _ in 0..SWAP_MAP_MAX {
        s.swap_duplicate(a).unwrap();
    }
    assert_eq!(s.swap_duplicate(a), Err(SwapError::CountOverflow(a)));
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    Dup(usize),
    Free(usize),
    CacheFree(usize),
    Prepare(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..40usize).prop_map(Op::Alloc),
        2 => any::<usize>().prop_map(Op::Dup),
        3 => any::<usize>().prop_map(Op::Free),
        3 => any::<usize>().prop_map(Op::CacheFree),
        1 => any::<usize>().prop_map(Op::Prepare),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    /// Against a model of (count, cached) per slot: every result, the free
    /// counts, and that no allocated slot is handed out again.
    #[test]
    fn swap_map_matches_model(slots in 2u64..700, bad in proptest::collection::vec(1u64..700, 0..8),
                              ops in proptest::collection::vec(op(), 1..150)) {
        let mut s = SwapAreas::new();
        let bad: Vec<u64> = bad.into_iter().filter(|&b| b < slots).collect();
        let usable = (1..slots).filter(|o| !bad.contains(o)).count() as u64;
        let r = s.swapon(slots, &bad, 0);
        if usable == 0 {
            prop_assert!(r.is_err());
            return Ok(());
        }
        r.unwrap();
        let mut model: BTreeMap<u64, (u16, bool)> = BTreeMap::new();
        // Ops name slots by index into the model's (or all) offsets so they hit live ones.
        let pick = |model: &BTreeMap<u64, (u16, bool)>, i: usize| -> u64 {
            if model.is_empty() || i.is_multiple_of(5) { (i as u64) % slots } else { *model.keys().nth(i % model.len()).unwrap() }
        };
        for op in ops {
            match op {
                Op::Alloc(n) => {
                    let mut v = Vec::new();
                    let got = s.get_swap_pages(n, &mut v);
                    let free = usable - model.len() as u64;
                    prop_assert_eq!(got as u64, (n as u64).min(free));
                    for x in v {
                        prop_assert!(x.offset != 0 && !bad.contains(&x.offset) && x.offset < slots);
                        prop_assert!(model.insert(x.offset, (0, true)).is_none(), "slot {} handed out twice", x.offset);
                    }
                }
                Op::Dup(i) => {
                    let o = pick(&model, i);
                    let r = s.swap_duplicate(e(o));
                    match model.get_mut(&o) {
                        Some(m) => { prop_assert_eq!(r, Ok(())); m.0 += 1; }
                        None => prop_assert!(r.is_err()),
                    }
                }
                Op::Free(i) => {
                    let o = pick(&model, i);
                    let r = s.swap_free(e(o));
                    match model.get(&o).copied() {
                        Some((c, cached)) if c > 0 => {
                            let left = (c - 1) | if cached { SWAP_HAS_CACHE } else { 0 };
                            prop_assert_eq!(r, Ok(left));
                            if left == 0 { model.remove(&o); } else { model.insert(o, (c - 1, cached)); }
                        }
                        _ => prop_assert!(r.is_err()),
                    }
                }
                Op::CacheFree(i) => {
                    let o = pick(&model, i);
                    let r = s.swapcache_free(e(o));
                    match model.get(&o).copied() {
                        Some((c, true)) => {
                            prop_assert_eq!(r, Ok(c));
                            if c == 0 { model.remove(&o); } else { model.insert(o, (c, false)); }
                        }
                        _ => prop_assert!(r.is_err()),
                    }
                }
                Op::Prepare(i) => {
                    let o = pick(&model, i);
                    let r = s.swapcache_prepare(e(o));
                    match model.get(&o).copied() {
                        Some((c, false)) => { prop_assert_eq!(r, Ok(())); model.insert(o, (c, true)); }
                        _ => prop_assert!(r.is_err()),
                    }
                }
            }
            s.verify().unwrap();
            prop_assert_eq!(s.nr_swap_pages(), usable - model.len() as u64);
            prop_assert_eq!(s.total_swap_pages(), usable);
            for (&o, &(c, cached)) in &model {
                prop_assert_eq!(s.usage(e(o)), Ok(c | if cached { SWAP_HAS_CACHE } else { 0 }));
            }
        }
    }
}
