use super::*;
use crate::buddy::{Page, ZoneType, GFP_KERNEL, NR_ORDERS};
use crate::mem::VecMem;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

const PAGES: usize = 2048; // 8 MiB

fn setup(map: &mut [Page], cpus: usize) -> BuddyAllocator<'_> {
    let mut b = BuddyAllocator::new(map, 0, cpus).unwrap();
    b.set_min_free_kbytes(0);
    b.free_range(1, PAGES as u64).unwrap();
    b
}

fn blocks(b: &BuddyAllocator) -> [u64; NR_ORDERS] {
    b.free_blocks(ZoneType::Dma)
}

#[test]
fn orders_like_slub() {
    let s = |size, cpus| cache::calculate_order(size, cpus);
    assert_eq!(s(8, 1), 0);
    assert_eq!(s(96, 1), 0);
    assert_eq!(s(4096, 1), 3);
    assert_eq!(s(8192, 1), 3);
    assert_eq!(s(2048, 2), 3);
    assert_eq!(s(32768, 1), 3);
    assert_eq!(s(100_000, 1), 5);
    assert_eq!(kmalloc_index(1), 0);
    assert_eq!(kmalloc_index(8), 0);
    assert_eq!(kmalloc_index(9), 1);
    assert_eq!(kmalloc_index(65), 4);
    assert_eq!(kmalloc_index(96), 4);
    assert_eq!(kmalloc_index(97), 5);
    assert_eq!(kmalloc_index(129), 6);
    assert_eq!(kmalloc_index(193), 7);
    assert_eq!(kmalloc_index(257), 8);
    assert_eq!(kmalloc_index(4097), 12);
    assert_eq!(kmalloc_index(8192), 12);
}

#[test]
fn kmalloc_sizes_alignment_and_reuse() {
    let mut map = vec![Page::default(); PAGES];
    let mut mem = VecMem::new(PAGES * 4096);
    let mut b = setup(&mut map, 1);
    let initial = blocks(&b);
    let mut s = SlabAllocator::new(1);
    s.create_kmalloc_caches(SlabFlags::NONE).unwrap();
    let mut got = Vec::new();
    let mut prev = 0;
    for &size in &KMALLOC_SIZES {
        for req in [prev + 1, size] {
            let a = s.kmalloc(&mut b, &mut mem, 0, req as u64, GFP_KERNEL).unwrap();
            if size.is_power_of_two() {
                assert_eq!(a.0 % size as u64, 0, "kmalloc-{size} naturally aligned");
            }
            assert_eq!(s.ksize(&b, a).unwrap(), size as u64);
            got.push(a);
        }
        prev = size;
    }
    let big = s.kmalloc(&mut b, &mut mem, 0, 8193, GFP_KERNEL).unwrap();
    assert_eq!(s.ksize(&b, big).unwrap(), 16384);
    assert_eq!(b.page(big.0 >> 12).unwrap().owner, PageOwner::KmallocLarge as u8);
    for a in got {
        s.kfree(&mut b, &mut mem, 0, a).unwrap();
    }
    s.kfree(&mut b, &mut mem, 0, big).unwrap();
    assert_eq!(s.kfree(&mut b, &mut mem, 0, big), Err(SlabError::DoubleFree(big)));
    // Same-size reuse comes from the CPU freelist: LIFO.
    let x = s.kmalloc(&mut b, &mut mem, 0, 32, GFP_KERNEL).unwrap();
    s.kfree(&mut b, &mut mem, 0, x).unwrap();
    assert_eq!(s.kmalloc(&mut b, &mut mem, 0, 32, GFP_KERNEL).unwrap(), x);
    s.kfree(&mut b, &mut mem, 0, x).unwrap();
    s.shrink_all(&mut b, &mut mem).unwrap();
    b.drain_all_pages();
    b.verify().unwrap();
    assert_eq!(blocks(&b), initial);
    assert_eq!(s.kmalloc(&mut b, &mut mem, 0, 0, GFP_KERNEL), Err(SlabError::ZeroSize));
}

#[test]
fn bad_frees_are_typed_errors() {
    let mut map = vec![Page::default(); PAGES];
    let mut mem = VecMem::new(PAGES * 4096);
    let mut b = setup(&mut map, 1);
    let mut s = SlabAllocator::new(1);
    s.create_kmalloc_caches(SlabFlags::NONE).unwrap();
    let a = s.kmalloc(&mut b, &mut mem, 0, 64, GFP_KERNEL).unwrap();
    assert_eq!(s.kfree(&mut b, &mut mem, 0, PhysAddr(a.0 + 8)), Err(SlabError::InvalidFree(PhysAddr(a.0 + 8))));
    s.kfree(&mut b, &mut mem, 0, a).unwrap();
    // The naive double free: the object heads the freelist.
    assert_eq!(s.kfree(&mut b, &mut mem, 0, a), Err(SlabError::DoubleFree(a)));
    // Memory never allocated, outside memory, a page in use but not a slab.
    assert!(s.kfree(&mut b, &mut mem, 0, PhysAddr(0x1000 * 1500)).is_err());
    assert!(s.kfree(&mut b, &mut mem, 0, PhysAddr(1 << 40)).is_err());
    let pfn = b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
    assert_eq!(s.kfree(&mut b, &mut mem, 0, PhysAddr(pfn << 12)), Err(SlabError::InvalidFree(PhysAddr(pfn << 12))));
    // kmem_cache_free with the wrong cache.
    let c = s.kmem_cache_create("thing", 40, 8, SlabFlags::NONE).unwrap();
    let t = s.kmem_cache_alloc(&mut b, &mut mem, 0, c, GFP_KERNEL).unwrap();
    let k8 = s.kmalloc_cache(8).unwrap();
    assert_eq!(s.kmem_cache_free(&mut b, &mut mem, 0, k8, t), Err(SlabError::WrongCache { addr: t, owner: c }));
    assert_eq!(s.kmem_cache_destroy(&mut b, &mut mem, c), Err(SlabError::CacheBusy(c)));
    s.kmem_cache_free(&mut b, &mut mem, 0, c, t).unwrap();
    s.kmem_cache_destroy(&mut b, &mut mem, c).unwrap();
    assert!(s.cache(c).is_none());
    // Free pointer overwritten by a use after free: caught before following it.
    let u = s.kmalloc(&mut b, &mut mem, 0, 64, GFP_KERNEL).unwrap();
    let v = s.kmalloc(&mut b, &mut mem, 0, 64, GFP_KERNEL).unwrap();
    s.kfree(&mut b, &mut mem, 0, v).unwrap();
    s.kfree(&mut b, &mut mem, 0, u).unwrap();
    let off = s.cache(s.kmalloc_cache(64).unwrap()).unwrap().offset as u64;
    mem.write_u64(PhysAddr(u.0 + off), 0xdead_0000).unwrap();
    assert_eq!(s.kmalloc(&mut b, &mut mem, 0, 64, GFP_KERNEL), Err(SlabError::CorruptFreelist(u)));
}

#[test]
fn debug_catches_overflow_use_after_free_and_double_free() {
    let mut map = vec![Page::default(); PAGES];
    let mut mem = VecMem::new(PAGES * 4096);
    let mut b = setup(&mut map, 1);
    let mut s = SlabAllocator::new(1);
    let c = s.kmem_cache_create("dbg", 20, 8, SlabFlags::DEBUG).unwrap();
    let cache = s.cache(c).unwrap();
    assert_eq!((cache.offset, cache.size), (32, 40));
    let a = s.kmem_cache_alloc(&mut b, &mut mem, 0, c, GFP_KERNEL).unwrap();
    let mut obj = [0u8; 40];
    mem.read(a, &mut obj).unwrap();
    assert_eq!(&obj[..20], &[POISON_INUSE; 20]);
    assert_eq!(&obj[20..32], &[SLUB_RED_ACTIVE; 12]);
    // Overflow by one byte: caught on free.
    mem.write(PhysAddr(a.0 + 20), &[0]).unwrap();
    assert_eq!(s.kmem_cache_free(&mut b, &mut mem, 0, c, a), Err(SlabError::RedZone { addr: a, offset: 20 }));
    mem.write(PhysAddr(a.0 + 20), &[SLUB_RED_ACTIVE]).unwrap();
    let a2 = s.kmem_cache_alloc(&mut b, &mut mem, 0, c, GFP_KERNEL).unwrap();
    s.kmem_cache_free(&mut b, &mut mem, 0, c, a).unwrap();
    mem.read(a, &mut obj).unwrap();
    assert_eq!(&obj[..19], &[POISON_FREE; 19]);
    assert_eq!(obj[19], POISON_END);
    // Double free of an object not at the freelist head.
    s.kmem_cache_free(&mut b, &mut mem, 0, c, a2).unwrap();
    assert_eq!(s.kmem_cache_free(&mut b, &mut mem, 0, c, a), Err(SlabError::DoubleFree(a)));
    // Use after free: caught when the object is handed out again.
    mem.write(PhysAddr(a2.0 + 3), &[1]).unwrap();
    assert_eq!(s.kmem_cache_alloc(&mut b, &mut mem, 0, c, GFP_KERNEL), Err(SlabError::Poison { addr: a2, offset: 3 }));
    assert_eq!(s.kmem_cache_alloc(&mut b, &mut mem, 0, c, GFP_KERNEL), Ok(a));
}

#[test]
fn consistency_checks_catch_any_double_free() {
    let mut map = vec![Page::default(); PAGES];
    let mut mem = VecMem::new(PAGES * 4096);
    let mut b = setup(&mut map, 2);
    let mut s = SlabAllocator::new(2);
    let c = s.kmem_cache_create("cc", 64, 8, SlabFlags::CONSISTENCY_CHECKS).unwrap();
    let objs: Vec<_> = (0..5).map(|_| s.kmem_cache_alloc(&mut b, &mut mem, 0, c, GFP_KERNEL).unwrap()).collect();
    s.kmem_cache_free(&mut b, &mut mem, 0, c, objs[1]).unwrap();
    s.kmem_cache_free(&mut b, &mut mem, 0, c, objs[2]).unwrap();
    assert_eq!(s.kmem_cache_free(&mut b, &mut mem, 0, c, objs[1]), Err(SlabError::DoubleFree(objs[1])));
    // Remote free (CPU 1 frees into CPU 0's active slab), then again.
    s.kmem_cache_free(&mut b, &mut mem, 1, c, objs[3]).unwrap();
    assert_eq!(s.kmem_cache_free(&mut b, &mut mem, 1, c, objs[3]), Err(SlabError::DoubleFree(objs[3])));
    assert_eq!(s.kmem_cache_free(&mut b, &mut mem, 0, c, objs[3]), Err(SlabError::DoubleFree(objs[3])));
}

#[test]
fn slabs_move_between_lists_and_back_to_buddy() {
    let mut map = vec![Page::default(); PAGES];
    let mut mem = VecMem::new(PAGES * 4096);
    let mut b = setup(&mut map, 2);
    let initial = blocks(&b);
    let mut s = SlabAllocator::new(2);
    let c = s.kmem_cache_create("c512", 512, 8, SlabFlags::NONE).unwrap();
    let per = s.cache(c).unwrap().objects_per_slab() as usize;
    let objs: Vec<_> =
        (0..per * 3).map(|i| s.kmem_cache_alloc(&mut b, &mut mem, i % 2, c, GFP_KERNEL).unwrap()).collect();
    let cache = s.cache(c).unwrap();
    assert_eq!(cache.nr_slabs, 4, "two full active slabs... and the rest");
    let info = s.info(&b, c).unwrap();
    assert_eq!(info.active_objs, per as u64 * 3);
    // Free from the other CPU: full slabs go partial, then free.
    for (i, &o) in objs.iter().enumerate() {
        s.kmem_cache_free(&mut b, &mut mem, (i + 1) % 2, c, o).unwrap();
    }
    let info = s.info(&b, c).unwrap();
    assert_eq!(info.active_objs, 0);
    assert_eq!(info.active_slabs, 0);
    s.shrink_all(&mut b, &mut mem).unwrap();
    assert_eq!(s.cache(c).unwrap().nr_slabs, 0);
    b.drain_all_pages();
    assert_eq!(blocks(&b), initial);
}

#[test]
fn slabinfo_text() {
    let mut map = vec![Page::default(); PAGES];
    let mut mem = VecMem::new(PAGES * 4096);
    let mut b = setup(&mut map, 1);
    let mut s = SlabAllocator::new(1);
    s.create_kmalloc_caches(SlabFlags::NONE).unwrap();
    for _ in 0..3 {
        s.kmalloc(&mut b, &mut mem, 0, 8000, GFP_KERNEL).unwrap();
    }
    let mut t = String::new();
    s.slabinfo(&b, &mut t).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "slabinfo - version: 2.1");
    assert_eq!(lines.len(), 2 + 13);
    assert_eq!(
        lines[14],
        "kmalloc-8k             3      4   8192    4    8 : tunables    0    0    0 : slabdata      1      1      0"
    );
    assert!(lines[2].starts_with("kmalloc-8              0      0      8  512    1 :"), "{}", lines[2]);
    let i = s.info(&b, s.kmalloc_cache(8192).unwrap()).unwrap();
    assert_eq!(i.overhead, 4 * 8192 - 4 * 8192);
}

/// One step of the model-based test.
#[derive(Debug, Clone)]
enum Op {
    Alloc { size: u64, cpu: usize },
    Free { pick: usize, cpu: usize },
    BadFree { pick: usize, delta: u64 },
    Flush { cpu: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop_oneof![8 => 1..=512u64, 2 => 513..=8192u64, 1 => 8193..40_000u64], 0..2usize)
            .prop_map(|(size, cpu)| Op::Alloc { size, cpu }),
        5 => (any::<usize>(), 0..2usize).prop_map(|(pick, cpu)| Op::Free { pick, cpu }),
        1 => (any::<usize>(), 0..16u64).prop_map(|(pick, delta)| Op::BadFree { pick, delta }),
        1 => (0..2usize).prop_map(|cpu| Op::Flush { cpu }),
    ]
}

fn tag(addr: u64) -> u64 {
    addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

fn run_model(ops: &[Op], flags: SlabFlags) {
    let mut map = vec![Page::default(); PAGES];
    let mut mem = VecMem::new(PAGES * 4096);
    let mut b = setup(&mut map, 2);
    let initial = blocks(&b);
    let mut s = SlabAllocator::new(2);
    s.create_kmalloc_caches(flags).unwrap();
    // addr -> requested size; every live object carries its tag at both ends.
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    let mut freed: Vec<u64> = Vec::new();
    for op in ops {
        match *op {
            Op::Alloc { size, cpu } => match s.kmalloc(&mut b, &mut mem, cpu, size, GFP_KERNEL) {
                Ok(a) => {
                    if let Some((&prev, &psize)) = live.range(..=a.0).next_back() {
                        assert!(prev + psize <= a.0, "object {a:?} overlaps {prev:#x}");
                    }
                    if let Some((&next, _)) = live.range(a.0..).next() {
                        assert!(a.0 + size <= next, "object {a:?} overlaps {next:#x}");
                    }
                    assert!(s.ksize(&b, a).unwrap() >= size);
                    mem.write_u64(a, tag(a.0)).unwrap_or(());
                    if size >= 16 {
                        mem.write_u64(PhysAddr(a.0 + size - 8), tag(a.0)).unwrap();
                    }
                    live.insert(a.0, size);
                    freed.retain(|&f| f != a.0);
                }
                Err(e) => assert_eq!(e, SlabError::Buddy(BuddyError::NoMemory)),
            },
            Op::Free { pick, cpu } => {
                if live.is_empty() {
                    continue;
                }
                let (&a, &size) = live.iter().nth(pick % live.len()).unwrap();
                assert_eq!(mem.read_u64(PhysAddr(a)).unwrap(), tag(a), "object contents intact");
                if size >= 16 {
                    assert_eq!(mem.read_u64(PhysAddr(a + size - 8)).unwrap(), tag(a));
                }
                s.kfree(&mut b, &mut mem, cpu, PhysAddr(a)).unwrap();
                live.remove(&a);
                freed.push(a);
            }
            Op::BadFree { pick, delta } => {
                // An interior pointer of a live object, or (with red zones,
                // which make it detectable) a second free.
                if delta > 0 && !live.is_empty() {
                    let (&a, &size) = live.iter().nth(pick % live.len()).unwrap();
                    if delta < size {
                        assert!(s.kfree(&mut b, &mut mem, 0, PhysAddr(a + delta)).is_err());
                    }
                } else if flags.contains(SlabFlags::RED_ZONE) && !freed.is_empty() {
                    let a = freed[pick % freed.len()];
                    if !live.contains_key(&a) {
                        assert!(s.kfree(&mut b, &mut mem, 0, PhysAddr(a)).is_err());
                    }
                }
            }
            Op::Flush { cpu } => s.flush_cpu(&mut b, &mut mem, cpu).unwrap(),
        }
        b.verify().unwrap();
        let small = live.values().filter(|&&sz| sz <= KMALLOC_MAX_CACHE_SIZE).count() as u64;
        let active: u64 = s.caches().map(|(id, _)| s.info(&b, id).unwrap().active_objs).sum();
        assert_eq!(active, small, "slab objects in use match the model");
        let pages: u64 = s.caches().map(|(_, c)| c.nr_pages).sum();
        let large: u64 = live
            .values()
            .filter(|&&sz| sz > KMALLOC_MAX_CACHE_SIZE)
            .map(|&sz| sz.div_ceil(4096).next_power_of_two())
            .sum();
        assert_eq!(b.counts().allocated, pages + large, "every frame accounted for");
    }
    let addrs: Vec<u64> = live.keys().copied().collect();
    for a in addrs {
        s.kfree(&mut b, &mut mem, 0, PhysAddr(a)).unwrap();
    }
    s.shrink_all(&mut b, &mut mem).unwrap();
    b.drain_all_pages();
    b.verify().unwrap();
    assert_eq!(blocks(&b), initial, "all slabs back in the buddy, merged");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn slab_matches_model(ops in proptest::collection::vec(op(), 1..250)) {
        run_model(&ops, SlabFlags::NONE);
    }

    #[test]
    fn debug_slab_matches_model(ops in proptest::collection::vec(op(), 1..150)) {
        run_model(&ops, SlabFlags::DEBUG);
    }
}
