use super::zone::{DMA32_END_PFN, DMA_END_PFN};
use super::*;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

fn map(n: usize) -> Vec<Page> {
    vec![Page::default(); n]
}

#[test]
fn free_range_uses_largest_aligned_blocks() {
    let mut m = map(4096);
    let mut b = BuddyAllocator::new(&mut m, 0, 1).unwrap();
    // 3..2051: 1+4+8+...; tail blocks decreasing.
    b.free_range(3, 2051).unwrap();
    b.verify().unwrap();
    let blocks = b.free_blocks(ZoneType::Dma);
    // 3(o0) 4(o2) 8(o3) 16(o4) 32(o5) 64(o6) 128(o7) 256(o8) 512(o9) 1024(o10:1024..2048) 2048(o1) 2050(o0)
    assert_eq!(blocks, [2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert_eq!(b.counts().managed, 2048);
    assert_eq!(b.counts().free, 2048);
    // Descriptors inside blocks are untouched.
    assert_eq!(*b.page(1025).unwrap(), Page::default());
}

#[test]
fn free_range_rejects_bad_input() {
    let mut m = map(64);
    let mut b = BuddyAllocator::new(&mut m, 16, 1).unwrap();
    assert_eq!(b.free_range(20, 20), Err(BuddyError::BadRange { start: 20, end: 20 }));
    assert_eq!(b.free_range(0, 20), Err(BuddyError::OutOfRange(0)));
    assert_eq!(b.free_range(16, 81), Err(BuddyError::OutOfRange(80)));
    b.free_range(16, 80).unwrap();
    assert_eq!(b.free_range(16, 32), Err(BuddyError::AlreadyManaged(16)));
    assert!(BuddyAllocator::new(&mut map(1), 0, 0).is_err());
    assert!(BuddyAllocator::new(&mut map(1), 0, MAX_CPUS + 1).is_err());
}

#[test]
fn split_and_merge_back() {
    let mut m = map(1024);
    let mut b = BuddyAllocator::new(&mut m, 0, 1).unwrap();
    b.set_pcp_enabled(false);
    b.set_min_free_kbytes(0);
    b.free_range(0, 1024).unwrap();
    let before = b.free_blocks(ZoneType::Dma);
    let p = b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
    assert_eq!(p, 0);
    assert_eq!(b.free_blocks(ZoneType::Dma), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    let q = b.alloc_pages(0, 3, GFP_KERNEL).unwrap();
    assert_eq!(q, 8);
    b.verify().unwrap();
    b.free_pages(0, p, 0).unwrap();
    b.free_pages(0, q, 3).unwrap();
    b.verify().unwrap();
    assert_eq!(b.free_blocks(ZoneType::Dma), before);
}

#[test]
fn bad_frees_are_errors() {
    let mut m = map(1024);
    let mut b = BuddyAllocator::new(&mut m, 0, 2).unwrap();
    b.set_min_free_kbytes(0);
    b.free_range(0, 1024).unwrap();
    let p = b.alloc_pages(0, 2, GFP_KERNEL).unwrap();
    assert_eq!(b.free_pages(0, p + 1, 2), Err(BuddyError::NotAllocated(p + 1)));
    assert_eq!(b.free_pages(0, p, 1), Err(BuddyError::OrderMismatch { pfn: p, allocated: 2, freed: 1 }));
    assert_eq!(b.free_pages(0, 5000, 0), Err(BuddyError::OutOfRange(5000)));
    assert_eq!(b.free_pages(7, p, 2), Err(BuddyError::BadCpu(7)));
    b.free_pages(1, p, 2).unwrap();
    // On the pcp list now, then in the buddy after a drain: both detected.
    assert_eq!(b.free_pages(0, p, 2), Err(BuddyError::DoubleFree(p)));
    b.drain_all_pages();
    assert_eq!(b.free_pages(0, p, 2), Err(BuddyError::DoubleFree(p)));
    assert_eq!(b.alloc_pages(0, 11, GFP_KERNEL), Err(BuddyError::BadOrder(11)));
    b.verify().unwrap();
}

#[test]
fn refcount_delays_free() {
    let mut m = map(1024);
    let mut b = BuddyAllocator::new(&mut m, 0, 1).unwrap();
    b.set_min_free_kbytes(0);
    b.free_range(0, 1024).unwrap();
    let p = b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
    assert_eq!(b.get_page(p), Ok(2));
    b.free_pages(0, p, 0).unwrap();
    assert_eq!(b.page(p).unwrap().flags, PG_HEAD);
    b.free_pages(0, p, 0).unwrap();
    assert_eq!(b.page(p).unwrap().flags, PG_PCP);
}

#[test]
fn zonelist_fallback_and_zone_limits() {
    // 8 MiB of DMA (pfn 2048..4096) and 8 MiB of DMA32 (4096..6144).
    let mut m = map(6144);
    let mut b = BuddyAllocator::new(&mut m, 0, 1).unwrap();
    b.set_min_free_kbytes(0);
    b.set_pcp_enabled(false);
    b.free_range(2048, 6144).unwrap();
    assert_eq!(b.zone(ZoneType::Dma).managed_pages, 2048);
    assert_eq!(b.zone(ZoneType::Dma32).managed_pages, 2048);
    let p = b.alloc_pages(0, 10, GFP_KERNEL).unwrap();
    assert!(p >= DMA_END_PFN, "Normal request served by DMA32 first");
    let d = b.alloc_pages(0, 10, GFP_DMA).unwrap();
    assert!(d < DMA_END_PFN);
    let q = b.alloc_pages(0, 10, GFP_KERNEL).unwrap();
    assert!(q >= DMA_END_PFN);
    // DMA32 is empty now: falls back to DMA.
    let r = b.alloc_pages(0, 10, GFP_DMA32).unwrap();
    assert!(r < DMA_END_PFN);
    assert_eq!(b.alloc_pages(0, 0, GFP_KERNEL), Err(BuddyError::NoMemory));
}

#[test]
fn normal_zone_above_4g() {
    let base = DMA32_END_PFN - 1024;
    let mut m = map(2048);
    let mut b = BuddyAllocator::new(&mut m, base, 1).unwrap();
    b.set_min_free_kbytes(0);
    b.free_range(base, base + 2048).unwrap();
    assert_eq!(b.zone(ZoneType::Normal).managed_pages, 1024);
    assert_eq!(b.zone(ZoneType::Dma32).managed_pages, 1024);
    let p = b.alloc_pages(0, 10, GFP_KERNEL).unwrap();
    assert_eq!(p, DMA32_END_PFN);
    let q = b.alloc_pages(0, 10, GFP_DMA32).unwrap();
    assert_eq!(q, base);
}

#[test]
fn watermarks_like_linux() {
    // 64 MiB in DMA32: lowmem 65536 KiB -> sqrt(65536*16) = 1024 KiB -> 256 pages.
    let mut m = map(DMA_END_PFN as usize + 16384);
    let mut b = BuddyAllocator::new(&mut m, 0, 1).unwrap();
    b.free_range(DMA_END_PFN, DMA_END_PFN + 16384).unwrap();
    let z = b.zone(ZoneType::Dma32);
    assert_eq!(z.watermark, [256, 320, 384]);
    // Allocating down to the min watermark fails for GFP_KERNEL, not for
    // GFP_ATOMIC, and GFP_NOWMARK can empty the zone.
    b.set_pcp_enabled(false);
    let mut n = 0;
    while b.alloc_pages(0, 0, GFP_KERNEL).is_ok() {
        n += 1;
    }
    assert_eq!(n, 16384 - 256);
    assert!(b.zone(ZoneType::Dma32).kswapd_wakeups > 0);
    assert_eq!(b.below_low_watermark(), Some(ZoneType::Dma32));
    let mut atomic = 0;
    while b.alloc_pages(0, 0, GFP_ATOMIC).is_ok() {
        atomic += 1;
    }
    assert_eq!(atomic, 128);
    let mut rest = 0;
    while b.alloc_pages(0, 0, GFP_NOWMARK).is_ok() {
        rest += 1;
    }
    assert_eq!(rest, 128);
}

#[test]
fn pcp_batches_and_drains() {
    let mut m = map(DMA_END_PFN as usize + 16384);
    let mut b = BuddyAllocator::new(&mut m, 0, 2).unwrap();
    b.free_range(DMA_END_PFN, DMA_END_PFN + 16384).unwrap();
    let batch = b.zone(ZoneType::Dma32).pcp[0].batch;
    assert_eq!(batch, 3);
    let p = b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
    assert_eq!(b.zone(ZoneType::Dma32).pcp[0].count, batch - 1);
    b.free_pages(1, p, 0).unwrap();
    assert_eq!(b.zone(ZoneType::Dma32).pcp[1].count, 1);
    b.verify().unwrap();
    // Freeing many pages on one CPU keeps its list below `high`.
    let pages: Vec<u64> = (0..100).map(|_| b.alloc_pages(0, 0, GFP_KERNEL).unwrap()).collect();
    for p in pages {
        b.free_pages(0, p, 0).unwrap();
        assert!(b.zone(ZoneType::Dma32).pcp[0].count < b.zone(ZoneType::Dma32).pcp[0].high);
    }
    b.verify().unwrap();
    b.drain_all_pages();
    assert_eq!(b.counts().pcp, 0);
    assert_eq!(b.free_blocks(ZoneType::Dma32)[10], 16);
}

#[test]
fn reports() {
    let mut m = map(8192);
    let mut b = BuddyAllocator::new(&mut m, 0, 1).unwrap();
    b.free_range(1, 8192).unwrap();
    let mut s = String::new();
    b.buddyinfo(&mut s).unwrap();
    assert_eq!(
        s,
        "Node 0, zone      DMA      1      1      1      1      1      1      1      1      1      1      3\n\
         Node 0, zone    DMA32      0      0      0      0      0      0      0      0      0      0      4\n"
    );
    // All free memory is in order-10 blocks apart from 1023 pages in DMA.
    assert_eq!(b.unusable_free_index(ZoneType::Dma32, 10), 0);
    assert_eq!(b.unusable_free_index(ZoneType::Dma, 10), 1023 * 1000 / 4095);
    assert_eq!(b.fragmentation_index(ZoneType::Dma, 3), -1000);
    let mut t = String::new();
    b.unusable_index_text(&mut t).unwrap();
    assert!(t.starts_with("Node 0, zone      DMA 0.000 0.000"), "{t}");
    assert!(
        t.ends_with(
            " 0.249\nNode 0, zone    DMA32 0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000 0.000\n"
        ),
        "{t}"
    );
}

#[test]
fn fragmentation_index_matches_linux_formula() {
    // 8 free order-0 blocks, request order 3: fails, index = 1000 - (1000 + 8*1000/8)/8 = 750.
    let info = ContigPageInfo { free_pages: 8, free_blocks_total: 8, free_blocks_suitable: 0 };
    assert_eq!(info.fragmentation_index(3), 750);
    assert_eq!(info.unusable_free_index(3), 1000);
    let none = ContigPageInfo::default();
    assert_eq!(none.fragmentation_index(3), 0);
    assert_eq!(none.unusable_free_index(3), 1000);
}

/// One step of the model-based test.
#[derive(Debug, Clone)]
enum Op {
    Alloc { cpu: usize, order: u8, zone: u8, wmark: u8 },
    Free { pick: usize, cpu: usize },
    BadFree { pick: usize, offset: u64 },
    Drain { cpu: usize },
    TogglePcp,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..2usize, prop_oneof![4 => 0..4u8, 1 => 0..11u8], 0..3u8, 0..3u8)
            .prop_map(|(cpu, order, zone, wmark)| Op::Alloc { cpu, order, zone, wmark }),
        4 => (any::<usize>(), 0..2usize).prop_map(|(pick, cpu)| Op::Free { pick, cpu }),
        1 => (any::<usize>(), 0..8u64).prop_map(|(pick, offset)| Op::BadFree { pick, offset }),
        1 => (0..2usize).prop_map(|cpu| Op::Drain { cpu }),
        1 => Just(Op::TogglePcp),
    ]
}

/// Checks the allocator against the model: allocated blocks disjoint,
/// aligned, not overlapping free or pcp blocks; counts add up.
fn check(b: &BuddyAllocator, model: &BTreeMap<u64, u8>) {
    b.verify().unwrap();
    let c = b.counts();
    let allocated: u64 = model.values().map(|o| 1u64 << o).sum();
    assert_eq!(c.allocated, allocated, "free + pcp + allocated = managed");
    let mut owner = vec![0u8; b.mem_map().len()];
    let mut mark = |pfn: u64, order: u8, tag: u8| {
        for p in pfn..pfn + (1 << order) {
            let i = (p - b.base_pfn()) as usize;
            assert_eq!(owner[i], 0, "pfn {p:#x} in two blocks");
            owner[i] = tag;
        }
    };
    for (&pfn, &order) in model {
        assert_eq!(pfn % (1 << order), 0);
        mark(pfn, order, 1);
    }
    for (i, p) in b.mem_map().iter().enumerate() {
        if p.flags & (PG_BUDDY | PG_PCP) != 0 {
            mark(b.base_pfn() + i as u64, p.order, 2);
        }
    }
}

fn run_model(ops: &[Op]) {
    // Part DMA32, part Normal, with an unaligned start and a hole.
    let base = DMA32_END_PFN - 2048;
    let mut m = map(4096);
    let mut b = BuddyAllocator::new(&mut m, base, 2).unwrap();
    b.free_range(base + 3, base + 1500).unwrap();
    b.free_range(base + 1600, base + 4096).unwrap();
    b.drain_all_pages();
    let initial: Vec<_> = ZoneType::ALL.iter().map(|&z| b.free_blocks(z)).collect();
    let mut model: BTreeMap<u64, u8> = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Alloc { cpu, order, zone, wmark } => {
                let gfp = Gfp {
                    zone: ZoneType::ALL[zone as usize],
                    wmark: [WmarkPolicy::Normal, WmarkPolicy::Atomic, WmarkPolicy::NoWatermarks][wmark as usize],
                    ..GFP_KERNEL
                };
                match b.alloc_pages(cpu, order, gfp) {
                    Ok(pfn) => {
                        assert!(ZoneType::of_pfn(pfn) <= gfp.zone);
                        assert!(model.insert(pfn, order).is_none());
                    }
                    Err(e) => {
                        assert_eq!(e, BuddyError::NoMemory);
                        if gfp.wmark == WmarkPolicy::NoWatermarks {
                            // Only when nothing suitable is free anywhere allowed.
                            for z in &b.zones()[..=gfp.zone as usize] {
                                assert!(z.free_area[order as usize..].iter().all(|a| a.nr_free == 0));
                            }
                        }
                    }
                }
            }
            Op::Free { pick, cpu } => {
                if model.is_empty() {
                    continue;
                }
                let (&pfn, &order) = model.iter().nth(pick % model.len()).unwrap();
                b.free_pages(cpu, pfn, order).unwrap();
                model.remove(&pfn);
            }
            Op::BadFree { pick, offset } => {
                let pfn = base + (pick as u64 % 4096);
                let order = (offset % 4) as u8;
                let allocated = model.get(&pfn) == Some(&order);
                if !allocated {
                    assert!(b.free_pages(0, pfn, order).is_err());
                }
            }
            Op::Drain { cpu } => b.drain_pages(cpu).unwrap(),
            Op::TogglePcp => {
                let on = b.zone(ZoneType::Normal).pcp[0].high > 0 && !b.pcp_enabled;
                b.set_pcp_enabled(on);
            }
        }
        check(&b, &model);
    }
    for (&pfn, &order) in &model {
        b.free_pages(0, pfn, order).unwrap();
    }
    b.drain_all_pages();
    check(&b, &BTreeMap::new());
    let after: Vec<_> = ZoneType::ALL.iter().map(|&z| b.free_blocks(z)).collect();
    assert_eq!(initial, after, "fully merged after everything is freed");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn buddy_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        run_model(&ops);
    }
}
