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
fn split_page_frees_pages_one_by_one_and_merges_back() {
    let mut m = map(2048);
    let mut b = BuddyAllocator::new(&mut m, 0, 1).unwrap();
    b.set_min_free_kbytes(0);
    b.free_range(0, 2048).unwrap();
    let before = b.free_blocks(ZoneType::Dma);
    let p = b.alloc_pages(0, 9, GFP_KERNEL).unwrap();
    b.set_owner(p, PageOwner::UserAnon).unwrap();
    assert_eq!(b.split_page(p + 1), Err(BuddyError::NotAllocated(p + 1)));
    b.split_page(p).unwrap();
    b.verify().unwrap();
    for i in 0..512 {
        let pg = b.page(p + i).unwrap();
        assert_eq!((pg.flags, pg.order, pg.refcount, pg.owner), (PG_HEAD, 0, 1, PageOwner::UserAnon as u8));
    }
    // A page with two references survives one free; the others go at once.
    assert_eq!(b.get_page(p + 7), Ok(2));
    for i in 0..512 {
        b.free_pages(0, p + i, 0).unwrap();
    }
    assert_eq!(b.page(p + 7).unwrap().refcount, 1);
    b.free_pages(0, p + 7, 0).unwrap();
    b.drain_all_pages();
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
    Alloc { cpu: usize, order: u8, zone: u8, wmark: u8, mt: u8 },
    Free { pick: usize, cpu: usize },
    BadFree { pick: usize, offset: u64 },
    Drain { cpu: usize },
    TogglePcp,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..2usize, prop_oneof![4 => 0..4u8, 1 => 0..11u8], 0..3u8, 0..3u8, 0..3u8)
            .prop_map(|(cpu, order, zone, wmark, mt)| Op::Alloc { cpu, order, zone, wmark, mt }),
        4 => (any::<usize>(), 0..2usize).prop_map(|(pick, cpu)| Op::Free { pick, cpu }),
        1 => (any::<usize>(), 0..8u64).prop_map(|(pick, offset)| Op::BadFree { pick, offset }),
        1 => (0..2usize).prop_map(|cpu| Op::Drain { cpu }),
        1 => Just(Op::TogglePcp),
    ]
}

/// Checks the allocator against the model: allocated blocks disjoint,
/// aligned, not overlapping free or pcp blocks (so no page is on two
/// lists); counts add up, per migratetype too.
fn check(b: &BuddyAllocator, model: &BTreeMap<u64, (u8, MigrateType)>) {
    b.verify().unwrap();
    let c = b.counts();
    let allocated: u64 = model.values().map(|&(o, _)| 1u64 << o).sum();
    assert_eq!(c.allocated, allocated, "free + pcp + allocated = managed");
    let mut owner = vec![0u8; b.mem_map().len()];
    let mut mark = |pfn: u64, order: u8, tag: u8| {
        for p in pfn..pfn + (1 << order) {
            let i = (p - b.base_pfn()) as usize;
            assert_eq!(owner[i], 0, "pfn {p:#x} in two blocks");
            owner[i] = tag;
        }
    };
    for (&pfn, &(order, mt)) in model {
        assert_eq!(pfn % (1 << order), 0);
        mark(pfn, order, 1);
        assert_eq!(b.block_at(pfn), BlockState::Allocated { order, mt, slab: false });
    }
    // Every free head the descriptors show, counted per (zone, order, list
    // type): must match the free-list counters (verify() walked the lists
    // and matched them against the same counters).
    let mut per_type = [[[0u64; NR_ORDERS]; MIGRATE_TYPES]; NR_ZONES];
    for (i, p) in b.mem_map().iter().enumerate() {
        if p.flags & (PG_BUDDY | PG_PCP) != 0 {
            mark(b.base_pfn() + i as u64, p.order, 2);
        }
        if p.flags == PG_BUDDY {
            per_type[p.zone as usize][p.frozen as usize][p.order as usize] += 1;
        }
    }
    for z in ZoneType::ALL {
        let info = b.pagetypeinfo(z);
        assert_eq!(info.free, per_type[z as usize], "pagetypeinfo free counts of {z:?}");
        let zone = b.zone(z);
        if zone.populated() {
            let span = zone.end_pfn.div_ceil(PAGEBLOCK_NR_PAGES) - zone.start_pfn / PAGEBLOCK_NR_PAGES;
            assert_eq!(info.pageblocks.iter().sum::<u64>(), span);
        }
        if !b.groups_by_mobility() {
            assert_eq!(info.pageblocks[0], info.pageblocks.iter().sum::<u64>());
        }
    }
}

fn run_model(ops: &[Op], mobility: bool) {
    // Part DMA32, part Normal, with an unaligned start and a hole.
    let base = DMA32_END_PFN - 2048;
    let mut m = map(4096);
    let mut pb = vec![0u8; pageblock_storage_len(base, 4096)];
    let mut b = if mobility {
        BuddyAllocator::with_mobility(&mut m, &mut pb, base, 2).unwrap()
    } else {
        BuddyAllocator::new(&mut m, base, 2).unwrap()
    };
    b.free_range(base + 3, base + 1500).unwrap();
    b.free_range(base + 1600, base + 4096).unwrap();
    b.drain_all_pages();
    let initial: Vec<_> = ZoneType::ALL.iter().map(|&z| b.free_blocks(z)).collect();
    let mut model: BTreeMap<u64, (u8, MigrateType)> = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Alloc { cpu, order, zone, wmark, mt } => {
                let mt = MigrateType::ALL[mt as usize];
                let gfp = Gfp {
                    zone: ZoneType::ALL[zone as usize],
                    wmark: [WmarkPolicy::Normal, WmarkPolicy::Atomic, WmarkPolicy::NoWatermarks][wmark as usize],
                    migratetype: mt,
                    ..GFP_KERNEL
                };
                match b.alloc_pages(cpu, order, gfp) {
                    Ok(pfn) => {
                        assert!(ZoneType::of_pfn(pfn) <= gfp.zone);
                        assert!(model.insert(pfn, (order, mt)).is_none());
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
                let (&pfn, &(order, _)) = model.iter().nth(pick % model.len()).unwrap();
                b.free_pages(cpu, pfn, order).unwrap();
                model.remove(&pfn);
            }
            Op::BadFree { pick, offset } => {
                let pfn = base + (pick as u64 % 4096);
                let order = (offset % 4) as u8;
                let allocated = model.get(&pfn).is_some_and(|&(o, _)| o == order);
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
    for (&pfn, &(order, _)) in &model {
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
        run_model(&ops, false);
    }

    #[test]
    fn buddy_with_mobility_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        run_model(&ops, true);
    }
}

/// 8 pageblocks of DMA32 (pfn 4096..8192), grouping by mobility, no pcp
/// lists and no reserves, so every allocation goes through the buddy.
fn mobility_setup<'a>(m: &'a mut [Page], pb: &'a mut [u8]) -> BuddyAllocator<'a> {
    let mut b = BuddyAllocator::with_mobility(m, pb, 0, 1).unwrap();
    b.set_pcp_enabled(false);
    b.set_min_free_kbytes(0);
    b.free_range(DMA_END_PFN, DMA_END_PFN + 4096).unwrap();
    b
}

#[test]
fn with_mobility_rejects_short_storage() {
    let mut m = map(4096);
    let mut pb = vec![0u8; 7];
    assert_eq!(
        BuddyAllocator::with_mobility(&mut m, &mut pb, 0, 1).err(),
        Some(BuddyError::PageblockStorage { need: 8, got: 7 })
    );
    assert_eq!(pageblock_storage_len(511, 2), 2);
    assert_eq!(pageblock_storage_len(512, 512), 1);
}

#[test]
fn unmovable_steals_a_whole_block_and_clusters_there() {
    let (mut m, mut pb) = (map(8192), vec![0u8; 16]);
    let mut b = mobility_setup(&mut m, &mut pb);
    assert_eq!(b.pagetypeinfo(ZoneType::Dma32).pageblocks, [0, 8, 0]);
    let first = b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
    // The largest movable block (order 10) changed type outright: two
    // pageblocks claimed by one fallback.
    assert_eq!(b.pagetypeinfo(ZoneType::Dma32).pageblocks, [2, 6, 0]);
    assert_eq!(b.mobility_stats(), MobilityStats { fallbacks: 1, pageblocks_claimed: 2, pages_moved: 0 });
    let base = first & !1023;
    for _ in 0..100 {
        let p = b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
        assert_eq!(p & !1023, base, "unmovable allocations cluster in the claimed blocks");
    }
    assert_eq!(b.mobility_stats().fallbacks, 1);
    let mv = b.alloc_pages(0, 0, GFP_HIGHUSER_MOVABLE).unwrap();
    assert_ne!(mv & !1023, base);
    assert_eq!(b.pageblock_migratetype(mv), MigrateType::Movable);
    assert_eq!(b.mixed_pageblocks(ZoneType::Dma32), 0);
    b.verify().unwrap();
    let mut t = String::new();
    b.pagetypeinfo_text(&mut t).unwrap();
    assert!(t.contains("Node 0, zone    DMA32                2            6            0\n"), "{t}");
    assert!(t.contains("Node    0, zone    DMA32, type    Unmovable      1      1      0      1"), "{t}");
}

/// Fills every page with order-0 allocations of `mt`, then frees the pfns
/// in `free`.
fn fill_then_free(b: &mut BuddyAllocator, mt: MigrateType, free: impl Iterator<Item = u64>) {
    while b.alloc_pages(0, 0, GFP_KERNEL.with_migratetype(mt)).is_ok() {}
    for pfn in free {
        b.free_pages(0, pfn, 0).unwrap();
    }
}

#[test]
fn small_steal_claims_the_pageblock_only_when_half_free() {
    let pb0 = DMA_END_PFN;
    // 300 free pages of 512 in a movable pageblock: claimed.
    let (mut m, mut pb) = (map(8192), vec![0u8; 16]);
    let mut b = mobility_setup(&mut m, &mut pb);
    fill_then_free(&mut b, MigrateType::Movable, pb0..pb0 + 300);
    let p = b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
    assert!((pb0..pb0 + 300).contains(&p));
    assert_eq!(b.pageblock_migratetype(pb0), MigrateType::Unmovable);
    assert_eq!(b.mobility_stats(), MobilityStats { fallbacks: 1, pageblocks_claimed: 1, pages_moved: 300 });
    b.verify().unwrap();
    // 100 free: the free pages move to the unmovable lists, the pageblock
    // stays movable (212 + 300 movable pages in use would not fit).
    let (mut m, mut pb) = (map(8192), vec![0u8; 16]);
    let mut b = mobility_setup(&mut m, &mut pb);
    fill_then_free(&mut b, MigrateType::Movable, pb0..pb0 + 100);
    b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
    assert_eq!(b.pageblock_migratetype(pb0), MigrateType::Movable);
    assert_eq!(b.mobility_stats(), MobilityStats { fallbacks: 1, pageblocks_claimed: 0, pages_moved: 100 });
    let info = b.pagetypeinfo(ZoneType::Dma32);
    let on = |mt: MigrateType| info.free[mt as usize].iter().enumerate().map(|(o, n)| n << o).sum::<u64>();
    assert_eq!((on(MigrateType::Unmovable), on(MigrateType::Movable)), (99, 0));
    b.verify().unwrap();
    // Freeing a page puts it on its pageblock's list (movable), not on the
    // list its free neighbours were moved to: the counts say so.
    b.free_pages(0, pb0 + 200, 0).unwrap();
    assert_eq!(b.pagetypeinfo(ZoneType::Dma32).free[MigrateType::Movable as usize][0], 1);
    b.verify().unwrap();
}

#[test]
fn movable_fallback_takes_the_smallest_block_it_cannot_steal() {
    let pb2 = DMA_END_PFN + 2 * PAGEBLOCK_NR_PAGES;
    let single = DMA_END_PFN + 3 * PAGEBLOCK_NR_PAGES + 77;
    let (mut m, mut pb) = (map(8192), vec![0u8; 16]);
    let mut b = mobility_setup(&mut m, &mut pb);
    fill_then_free(&mut b, MigrateType::Unmovable, (pb2..pb2 + 8).chain([single]));
    assert_eq!(b.pagetypeinfo(ZoneType::Dma32).pageblocks, [8, 0, 0]);
    // Filling took the four order-10 blocks, one fallback each.
    assert_eq!(b.mobility_stats(), MobilityStats { fallbacks: 4, pageblocks_claimed: 8, pages_moved: 0 });
    // Largest unmovable block: order 3, too small for a movable request to
    // steal (order < pageblock_order / 2), so the order-0 one is split.
    assert_eq!(b.alloc_pages(0, 0, GFP_HIGHUSER_MOVABLE), Ok(single));
    assert_eq!(b.pagetypeinfo(ZoneType::Dma32).pageblocks, [8, 0, 0]);
    // The next one has only the order-3 block left: stolen as one block.
    assert_eq!(b.alloc_pages(0, 0, GFP_HIGHUSER_MOVABLE), Ok(pb2));
    assert_eq!(b.mobility_stats(), MobilityStats { fallbacks: 6, pageblocks_claimed: 8, pages_moved: 0 });
    assert_eq!(b.mixed_pageblocks(ZoneType::Dma32), 2);
    b.verify().unwrap();
}

#[test]
fn fragmentation_indexes_by_hand() {
    let mut m = map(8192);
    let mut b = BuddyAllocator::new(&mut m, 0, 1).unwrap();
    b.set_pcp_enabled(false);
    b.set_min_free_kbytes(0);
    b.free_range(DMA_END_PFN, DMA_END_PFN + 4096).unwrap();
    while b.alloc_pages(0, 0, GFP_KERNEL).is_ok() {}
    // Free: four lone pages and one order-2 block: 8 pages in 5 blocks.
    let p = DMA_END_PFN;
    for pfn in [p, p + 2, p + 4, p + 6, p + 8, p + 9, p + 10, p + 11] {
        b.free_pages(0, pfn, 0).unwrap();
    }
    assert_eq!(b.free_blocks(ZoneType::Dma32), [4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    // unusable(o) = (free - suitable_blocks << o) * 1000 / free:
    // o0: 0; o1: suitable 2 (the order-2 block) -> (8-4)/8 = 500;
    // o2: suitable 1 -> (8-4)/8 = 500; o3+: nothing suitable -> 1000.
    let u = b.unusable_indexes(ZoneType::Dma32);
    assert_eq!(u, [0, 500, 500, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000]);
    // fragmentation(o) = -1000 while a block fits, else
    // 1000 - (1000 + free*1000/2^o) / blocks: o3: 1000 - 2000/5 = 600;
    // o4: 1000 - 1500/5 = 700; o5: 1000 - 1250/5 = 750; o10: 1000 -
    // (1000 + 7)/5 = 799.
    let f = b.fragmentation_indexes(ZoneType::Dma32);
    assert_eq!(f[..6], [-1000, -1000, -1000, 600, 700, 750]);
    assert_eq!(f[10], 799);
    let mut t = String::new();
    b.extfrag_index_text(&mut t).unwrap();
    assert!(t.starts_with("Node 0, zone    DMA32 -1.000 -1.000 -1.000  0.600  0.700  0.750"), "{t}");
    assert!(t.ends_with("  0.799\n"), "{t}");
}

#[test]
fn fallback_into_a_mixed_pageblock_boosts_the_watermarks() {
    let pb0 = DMA_END_PFN;
    let (mut m, mut pb) = (map(8192), vec![0u8; 16]);
    let mut b = mobility_setup(&mut m, &mut pb);
    b.set_watermark_boost_factor(15_000);
    // A fallback that claims whole pageblocks mixes nothing: no boost.
    let first = b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
    assert_eq!(b.take_boosted_zone(), None);
    assert_eq!(b.zone(ZoneType::Dma32).watermark_boost, 0);
    b.free_pages(0, first, 0).unwrap();

    let (mut m, mut pb) = (map(8192), vec![0u8; 16]);
    let mut b = mobility_setup(&mut m, &mut pb);
    b.set_watermark_boost_factor(15_000);
    fill_then_free(&mut b, MigrateType::Movable, pb0..pb0 + 100);
    // 100 free pages in a full movable pageblock: the unmovable request
    // mixes it (not claimed) and boosts the zone by a pageblock (the high
    // watermark is 8 pages here, so the cap is the pageblock).
    b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
    assert_eq!(b.pageblock_migratetype(pb0), MigrateType::Movable);
    assert_eq!(b.zone(ZoneType::Dma32).watermark_boost, PAGEBLOCK_NR_PAGES);
    assert_eq!(b.zone(ZoneType::Dma32).wmark(Watermark::Low), b.zone(ZoneType::Dma32).watermark[1] + 512);
    assert_eq!(b.take_boosted_zone(), Some(ZoneType::Dma32));
    assert_eq!(b.take_boosted_zone(), None, "kswapd is told once");
    assert_eq!(b.below_low_watermark(), Some(ZoneType::Dma32));
    // 99 free pages are below the boosted min: a normal request waits for
    // kswapd, a high-priority order-0 one ignores the boost at min.
    assert_eq!(b.alloc_pages(0, 0, GFP_KERNEL), Err(BuddyError::NoMemory));
    let atomic = b.alloc_pages(0, 0, GFP_ATOMIC).unwrap();
    // kswapd reclaimed the boost: it is taken off, allocations go on.
    b.clear_watermark_boost(ZoneType::Dma32, PAGEBLOCK_NR_PAGES);
    assert_eq!(b.zone(ZoneType::Dma32).watermark_boost, 0);
    b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
    b.free_pages(0, atomic, 0).unwrap();
    b.verify().unwrap();
    // Turning boosting off drops a pending boost.
    b.set_watermark_boost_factor(0);
    assert_eq!(b.take_boosted_zone(), None);
}

/// Two nodes of 8 MiB each over pfns 0..4096 (node 1 from 2048), CPU 0
/// on node 0 and CPU 1 on node 1, distance 10/20.
fn two_nodes(m: &mut [Page]) -> BuddyAllocator<'_> {
    let mut b = BuddyAllocator::new(m, 0, 2).unwrap();
    let l = NodeLayout::new(2, &[(0, 2048, 0), (2048, 4096, 1)], &[0, 1], |a, c| if a == c { 10 } else { 20 }).unwrap();
    b.set_node_layout(l).unwrap();
    b
}

#[test]
fn node_layout_rejects_bad_input() {
    let d = |_: usize, _: usize| 20u8;
    assert_eq!(NodeLayout::new(0, &[], &[], d), Err(BuddyError::BadNode(0)));
    assert_eq!(NodeLayout::new(MAX_NUMNODES + 1, &[], &[], d), Err(BuddyError::BadNode(MAX_NUMNODES as u64 + 1)));
    assert_eq!(NodeLayout::new(2, &[(0, 512, 2)], &[], d), Err(BuddyError::BadNode(2)));
    // Not pageblock-aligned.
    assert!(NodeLayout::new(2, &[(0, 500, 0)], &[], d).is_err());
    assert!(NodeLayout::new(2, &[(0, 1024, 0), (512, 2048, 1)], &[], d).is_err());
    assert_eq!(NodeLayout::new(2, &[], &[0, 3], d), Err(BuddyError::BadNode(3)));
    // Set once memory is in: refused.
    let mut m = map(4096);
    let mut b = BuddyAllocator::new(&mut m, 0, 1).unwrap();
    b.free_range(0, 1024).unwrap();
    assert_eq!(b.set_node_layout(NodeLayout::single()), Err(BuddyError::LayoutAfterMemory));
}

#[test]
fn fallback_order_by_distance() {
    // Node 0 is nearer to 2 than to 1; ties by number.
    let dist = [[10u8, 30, 20, 30], [30, 10, 30, 20], [20, 30, 10, 30], [30, 20, 30, 10]];
    let l = NodeLayout::new(4, &[], &[], |a, c| dist[a][c]).unwrap();
    assert_eq!(l.fallback(0), &[0, 2, 1, 3]);
    assert_eq!(l.fallback(1), &[1, 3, 0, 2]);
    assert_eq!(l.fallback(3), &[3, 1, 0, 2]);
}

#[test]
fn each_node_has_its_own_zones() {
    let mut m = map(4096);
    let mut b = two_nodes(&mut m);
    // One call over both nodes: split at the boundary.
    b.free_range(0, 4096).unwrap();
    b.verify().unwrap();
    assert_eq!(b.nr_nodes(), 2);
    assert_eq!(b.node_counts(0).managed, 2048);
    assert_eq!(b.node_counts(1).managed, 2048);
    assert_eq!(b.node_zones(1)[ZoneType::Dma as usize].node, 1);
    assert_eq!(b.node_counts(2), PageCounts::default());
    // No free block crosses into the other node.
    b.for_each_free_block(|pfn, order| {
        assert_eq!(b.node_of_pfn(pfn), b.node_of_pfn(pfn + (1 << order) - 1));
    });
}

#[test]
fn zone_ids_name_each_nodes_zones_in_the_reports() {
    let mut m = map(4096);
    let mut b = two_nodes(&mut m);
    b.free_range(0, 4096).unwrap();
    let z1 = ZoneId::new(1, ZoneType::Dma);
    assert_eq!((z1.node(), z1.kind(), z1.index()), (1, ZoneType::Dma, NR_ZONES));
    assert_eq!(ZoneId::from(ZoneType::Dma), ZoneId::new(0, ZoneType::Dma));
    assert_eq!(b.zone(z1).node, 1);
    assert_eq!(b.zone(z1).managed_pages, 2048);
    // Take node 1's pages: its free counts change, node 0's do not.
    let before0 = b.free_blocks(ZoneType::Dma);
    let p = b.alloc_pages(0, 3, GFP_KERNEL.on_nodes(1, 1 << 1)).unwrap();
    assert_eq!(b.node_of_pfn(p), 1);
    assert_eq!(b.free_blocks(ZoneType::Dma), before0);
    assert_ne!(b.free_blocks(z1), before0);
    let mut text = String::new();
    b.pagetypeinfo_text(&mut text).unwrap();
    assert!(text.contains("Node    0, zone      DMA, type"), "{text}");
    assert!(text.contains("Node    1, zone      DMA, type"), "{text}");
    assert!(text.contains("\nNode 1, zone      DMA "), "{text}");
    b.free_pages(0, p, 3).unwrap();
}

#[test]
fn local_node_first_then_fallback_by_distance() {
    let mut m = map(4096);
    let mut b = two_nodes(&mut m);
    b.set_pcp_enabled(false);
    b.free_range(0, 4096).unwrap();
    // CPU 1 allocates on node 1, CPU 0 on node 0.
    let p1 = b.alloc_pages(1, 0, GFP_KERNEL).unwrap();
    assert_eq!(b.node_of_pfn(p1), 1);
    let p0 = b.alloc_pages(0, 3, GFP_KERNEL).unwrap();
    assert_eq!(b.node_of_pfn(p0), 0);
    // An explicit node overrides the CPU's.
    let p = b.alloc_pages(0, 0, GFP_KERNEL.on_nodes(1, NODEMASK_ALL)).unwrap();
    assert_eq!(b.node_of_pfn(p), 1);
    // Exhaust node 1 (watermarks ignored): CPU 1 then falls back to node 0.
    let mut got = Vec::new();
    while let Ok(pfn) = b.alloc_pages(1, 0, GFP_NOWMARK.on_nodes(NUMA_NO_NODE, 0b10)) {
        got.push(pfn);
    }
    assert_eq!(b.node_counts(1).free, 0);
    let q = b.alloc_pages(1, 0, GFP_KERNEL).unwrap();
    assert_eq!(b.node_of_pfn(q), 0);
    // A node mask of node 1 only now fails rather than leave it.
    assert_eq!(b.alloc_pages(0, 0, GFP_NOWMARK.on_nodes(1, 0b10)), Err(BuddyError::NoMemory));
    // A node that does not exist is an error, not a panic.
    assert_eq!(b.alloc_pages(0, 0, GFP_KERNEL.on_nodes(5, NODEMASK_ALL)), Err(BuddyError::BadNode(5)));
    for pfn in got {
        b.free_pages(1, pfn, 0).unwrap();
    }
    b.verify().unwrap();
}

#[test]
fn per_cpu_lists_are_per_node() {
    let mut m = map(4096);
    let mut b = two_nodes(&mut m);
    b.free_range(0, 4096).unwrap();
    // CPU 0 frees a node-1 page: it goes to node 1's zone pcp list, so a
    // node-0 allocation on CPU 0 never gets it.
    let p1 = b.alloc_pages(0, 0, GFP_KERNEL.on_nodes(1, 0b10)).unwrap();
    b.free_pages(0, p1, 0).unwrap();
    for _ in 0..64 {
        let p = b.alloc_pages(0, 0, GFP_KERNEL.on_nodes(0, 0b01)).unwrap();
        assert_eq!(b.node_of_pfn(p), 0);
    }
    b.verify().unwrap();
}

#[test]
fn numa_account_as_zone_statistics() {
    let mut s = [NumaStat::default(); 2];
    // Local hit.
    numa_account(0, 0, 0, false, &mut s);
    // Wanted 0, got 1, on a CPU of node 0: miss on 1, foreign on 0, other_node on 1.
    numa_account(0, 1, 0, false, &mut s);
    // Interleave chose 1 and got it, CPU on node 0.
    numa_account(1, 1, 0, true, &mut s);
    assert_eq!(s[0], NumaStat { numa_hit: 1, numa_foreign: 1, local_node: 1, ..Default::default() });
    assert_eq!(s[1], NumaStat { numa_hit: 1, numa_miss: 1, interleave_hit: 1, other_node: 2, ..Default::default() });
}

proptest! {
    /// Random allocations and frees on two nodes with random preferred
    /// nodes and masks: every page lies in an allowed node, the preferred
    /// one while it has free pages above the watermark, and the books
    /// balance per node.
    #[test]
    fn per_node_allocations_respect_masks(ops in proptest::collection::vec((0usize..2, 0u8..3, 0u8..3, 1u8..4, any::<bool>()), 1..300)) {
        let mut m = map(4096);
        let mut b = two_nodes(&mut m);
        b.free_range(0, 4096).unwrap();
        let mut held: Vec<(u64, u8)> = Vec::new();
        for (cpu, order, nid, mask, free) in ops {
            if free && !held.is_empty() {
                let (pfn, o) = held.swap_remove(held.len() / 2);
                b.free_pages(cpu, pfn, o).unwrap();
                continue;
            }
            let nid = if nid == 2 { NUMA_NO_NODE } else { nid };
            let gfp = GFP_NOWMARK.on_nodes(nid, mask);
            let pref = if nid == NUMA_NO_NODE { cpu as u8 } else { nid };
            let pref_has = b.node_zones(pref as usize).iter().any(|z| z.free_area[order as usize..].iter().any(|a| a.nr_free > 0));
            match b.alloc_pages(cpu, order, gfp) {
                Ok(pfn) => {
                    let node = b.node_of_pfn(pfn);
                    prop_assert!(mask & (1 << node) != 0, "pfn {pfn} node {node} mask {mask}");
                    if pref_has && mask & (1 << pref) != 0 {
                        prop_assert_eq!(node, pref);
                    }
                    prop_assert_eq!(node, b.node_of_pfn(pfn + (1 << order) - 1));
                    held.push((pfn, order));
                }
                Err(e) => prop_assert_eq!(e, BuddyError::NoMemory),
            }
        }
        b.verify().unwrap();
        for n in 0..2 {
            let c = b.node_counts(n);
            let mine: u64 = held.iter().filter(|h| b.node_of_pfn(h.0) as usize == n).map(|h| 1u64 << h.1).sum();
            prop_assert_eq!(c.allocated, mine);
        }
    }
}
