//! Allocator benchmarks against peers measured in the same run:
//! - buddy order-0 alloc+free pairs (with and without pcp lists) and mixed
//!   orders, against `buddy_system_allocator::FrameAllocator`;
//! - slab kmalloc+kfree pairs, 8..4096 bytes, against glibc malloc/free
//!   and `talc`;
//! - vmalloc-area alloc+free with n live areas, against a linear-scan
//!   first-fit baseline, for several n (O(log n) against O(n));
//! - a fragmentation workload printing Linux's unusable-free-space index.
//!
//! Run: `cargo bench -p mm-core --bench alloc -- --warm-up-time 1 --measurement-time 2`

use criterion::{black_box, criterion_group, BenchmarkId, Criterion};
use mm_core::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use mm_core::buddy::{BuddyAllocator, Page, ZoneType, GFP_KERNEL, GFP_NOWMARK, MAX_PAGE_ORDER};
use mm_core::mem::{MemError, PhysMem, VecMem};
use mm_core::slab::{SlabAllocator, SlabFlags};
use mm_core::vmalloc::VmapAllocator;
use std::alloc::{GlobalAlloc, Layout};

/// 256 MiB of DMA32 frames for the page allocators.
const BUDDY_BASE: u64 = 4096;
const BUDDY_PAGES: u64 = 65536;

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn buddy_map() -> Vec<Page> {
    vec![Page::default(); (BUDDY_BASE + BUDDY_PAGES) as usize]
}

fn new_buddy(map: &mut [Page], pcp: bool) -> BuddyAllocator<'_> {
    let mut b = BuddyAllocator::new(map, 0, 1).unwrap();
    b.free_range(BUDDY_BASE, BUDDY_BASE + BUDDY_PAGES).unwrap();
    b.set_pcp_enabled(pcp);
    b
}

fn new_frame_allocator() -> buddy_system_allocator::FrameAllocator<11> {
    let mut f = buddy_system_allocator::FrameAllocator::<11>::new();
    f.add_frame(BUDDY_BASE as usize, (BUDDY_BASE + BUDDY_PAGES) as usize);
    f
}

fn bench_buddy(c: &mut Criterion) {
    let mut g = c.benchmark_group("buddy");
    for pcp in [true, false] {
        let mut map = buddy_map();
        let mut b = new_buddy(&mut map, pcp);
        let name = if pcp { "order0_pair/mm-core+pcp" } else { "order0_pair/mm-core-nopcp" };
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let p = b.alloc_pages(0, 0, GFP_KERNEL).unwrap();
                b.free_pages(0, black_box(p), 0).unwrap();
            })
        });
    }
    let mut f = new_frame_allocator();
    g.bench_function("order0_pair/buddy_system_allocator", |bench| {
        bench.iter(|| {
            let p = f.alloc(1).unwrap();
            f.dealloc(black_box(p), 1);
        })
    });

    // Mixed orders: 64 live blocks of random orders 0..=5, freed in random
    // order; the figure is per alloc+free pair.
    const BATCH: usize = 64;
    let mut rng = XorShift(0x1234_5678);
    let orders: Vec<u8> = (0..BATCH).map(|_| (rng.next() % 6) as u8).collect();
    let perm: Vec<usize> = {
        let mut v: Vec<usize> = (0..BATCH).collect();
        for i in (1..BATCH).rev() {
            v.swap(i, rng.next() as usize % (i + 1));
        }
        v
    };
    g.throughput(criterion::Throughput::Elements(BATCH as u64));
    for pcp in [true, false] {
        let mut map = buddy_map();
        let mut b = new_buddy(&mut map, pcp);
        let name = if pcp { "mixed_orders/mm-core+pcp" } else { "mixed_orders/mm-core-nopcp" };
        let mut live = vec![0u64; BATCH];
        g.bench_function(name, |bench| {
            bench.iter(|| {
                for (i, &o) in orders.iter().enumerate() {
                    live[i] = b.alloc_pages(0, o, GFP_KERNEL).unwrap();
                }
                for &i in &perm {
                    b.free_pages(0, live[i], orders[i]).unwrap();
                }
            })
        });
    }
    let mut f = new_frame_allocator();
    let mut live = vec![0usize; BATCH];
    g.bench_function("mixed_orders/buddy_system_allocator", |bench| {
        bench.iter(|| {
            for (i, &o) in orders.iter().enumerate() {
                live[i] = f.alloc(1 << o).unwrap();
            }
            for &i in &perm {
                f.dealloc(live[i], 1 << orders[i]);
            }
        })
    });
    g.finish();
}

/// Memory as the guest will implement `PhysMem` over its direct map: the
/// word accessors overridden to a single load or store (here a bounds-checked
/// slice access). `VecMem` goes through the generic byte-slice path.
struct DirectMem(Vec<u8>);

impl PhysMem for DirectMem {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let s = pa.0 as usize;
        buf.copy_from_slice(self.0.get(s..s + buf.len()).ok_or(MemError::OutOfRange(pa))?);
        Ok(())
    }
    fn write(&mut self, pa: PhysAddr, buf: &[u8]) -> Result<(), MemError> {
        let s = pa.0 as usize;
        self.0.get_mut(s..s + buf.len()).ok_or(MemError::OutOfRange(pa))?.copy_from_slice(buf);
        Ok(())
    }
    #[inline]
    fn read_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        let s = pa.0 as usize;
        let b: &[u8; 8] = self.0.get(s..s + 8).and_then(|b| b.try_into().ok()).ok_or(MemError::OutOfRange(pa))?;
        Ok(u64::from_le_bytes(*b))
    }
    #[inline]
    fn write_u64(&mut self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        let s = pa.0 as usize;
        self.0.get_mut(s..s + 8).ok_or(MemError::OutOfRange(pa))?.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
}

/// kmalloc+kfree pairs of `size` through `mem`, on a fresh 64 MiB node.
fn kmalloc_pairs<M: PhysMem>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mem: &mut M,
    sizes: &[u64],
) {
    let pages = 16384u64;
    let mut map = vec![Page::default(); pages as usize];
    let mut b = BuddyAllocator::new(&mut map, 0, 1).unwrap();
    b.free_range(1, pages).unwrap();
    let mut s = SlabAllocator::new(1);
    s.create_kmalloc_caches(SlabFlags::NONE).unwrap();
    for &size in sizes {
        // Keep a few live objects of the size so the slab is not trivially
        // empty, as in a running kernel.
        let keep: Vec<PhysAddr> = (0..32).map(|_| s.kmalloc(&mut b, mem, 0, size, GFP_KERNEL).unwrap()).collect();
        g.bench_with_input(BenchmarkId::new(name, size), &size, |bench, &size| {
            bench.iter(|| {
                let a = s.kmalloc(&mut b, mem, 0, black_box(size), GFP_KERNEL).unwrap();
                s.kfree(&mut b, mem, 0, black_box(a)).unwrap();
            })
        });
        for a in keep {
            s.kfree(&mut b, mem, 0, a).unwrap();
        }
    }
}

fn bench_slab(c: &mut Criterion) {
    let mut g = c.benchmark_group("kmalloc_pair");
    let sizes = [8u64, 64, 256, 1024, 4096];
    let bytes = (16384 * PAGE_SIZE) as usize;
    kmalloc_pairs(&mut g, "mm-core-DirectMem", &mut DirectMem(vec![0u8; bytes]), &sizes);
    kmalloc_pairs(&mut g, "mm-core-VecMem", &mut VecMem::new(bytes), &sizes);
    // A persistent talc heap of 64 MiB.
    let heap: &'static mut [u8] = Box::leak(vec![0u8; 64 << 20].into_boxed_slice());
    // SAFETY: the leaked buffer is never used by anything else and lives
    // for the rest of the process.
    let talc = talc::TalcCell::new(unsafe { talc::source::Claim::new(heap.as_mut_ptr(), heap.len()) });
    for size in sizes {
        g.bench_with_input(BenchmarkId::new("glibc", size), &size, |bench, &size| {
            bench.iter(|| {
                // SAFETY: malloc/free pair on the host's C allocator; the
                // pointer is freed exactly once.
                unsafe {
                    let p = libc::malloc(black_box(size as usize));
                    libc::free(black_box(p));
                }
            })
        });
        let layout = Layout::from_size_align(size as usize, 8).unwrap();
        g.bench_with_input(BenchmarkId::new("talc", size), &size, |bench, _| {
            bench.iter(|| {
                // SAFETY: the layout is non-zero; the block is freed once
                // with the layout it was allocated with.
                unsafe {
                    let p = talc.alloc(black_box(layout));
                    assert!(!p.is_null());
                    talc.dealloc(black_box(p), layout);
                }
            })
        });
    }
    g.finish();
}

/// The trivial baseline: free ranges in a sorted `Vec`, first fit by a
/// linear scan, free by binary search + insert with merging.
struct LinearVmap {
    free: Vec<(u64, u64)>,
}

impl LinearVmap {
    fn alloc(&mut self, size: u64) -> Option<u64> {
        let need = size + PAGE_SIZE;
        let i = self.free.iter().position(|&(_, l)| l >= need)?;
        let (s, l) = self.free[i];
        if l == need {
            self.free.remove(i);
        } else {
            self.free[i] = (s + need, l - need);
        }
        Some(s)
    }

    fn free(&mut self, start: u64, size: u64) {
        let mut s = start;
        let mut l = size + PAGE_SIZE;
        let i = self.free.partition_point(|&(fs, _)| fs < start);
        if i < self.free.len() && self.free[i].0 == s + l {
            l += self.free[i].1;
            self.free.remove(i);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == s {
            s = self.free[i - 1].0;
            l += self.free[i - 1].1;
            self.free[i - 1] = (s, l);
        } else {
            self.free.insert(i, (s, l));
        }
    }
}

fn bench_vmalloc(c: &mut Criterion) {
    let mut g = c.benchmark_group("vmalloc_pair");
    let start = 0xffff_c900_0000_0000u64;
    let end = start + (1 << 40);
    for n in [100u64, 1000, 10_000, 100_000] {
        // 2n one-page areas, every other one freed: n live areas and n
        // two-page holes in front of the big free tail. A 4-page request
        // fits no hole, so first fit has to get past all of them.
        let mut v = VmapAllocator::new(VirtAddr(start), VirtAddr(end)).unwrap();
        let areas: Vec<VirtAddr> = (0..2 * n).map(|_| v.alloc(PAGE_SIZE, PAGE_SIZE, "bench").unwrap()).collect();
        for a in areas.iter().step_by(2) {
            v.free(*a).unwrap();
        }
        g.bench_with_input(BenchmarkId::new("mm-core", n), &n, |bench, _| {
            bench.iter(|| {
                let a = v.alloc(black_box(4 * PAGE_SIZE), PAGE_SIZE, "bench").unwrap();
                v.free(a).unwrap();
            })
        });
        let mut lin = LinearVmap { free: vec![(start, end - start)] };
        let areas: Vec<u64> = (0..2 * n).map(|_| lin.alloc(PAGE_SIZE).unwrap()).collect();
        for a in areas.iter().step_by(2) {
            lin.free(*a, PAGE_SIZE);
        }
        assert_eq!(lin.free.len() as u64, n + 1);
        g.bench_with_input(BenchmarkId::new("linear-scan", n), &n, |bench, _| {
            bench.iter(|| {
                let a = lin.alloc(black_box(4 * PAGE_SIZE)).unwrap();
                lin.free(a, 4 * PAGE_SIZE);
            })
        });
    }
    g.finish();
}

/// Fixed-seed random alloc/free of mixed orders on 256 MiB; prints Linux's
/// unusable free space index per order as the workload goes on.
fn fragmentation_report() {
    let mut map = buddy_map();
    let mut b = new_buddy(&mut map, false);
    let mut rng = XorShift(0x00c0_ffee);
    let mut live: Vec<(u64, u8)> = Vec::new();
    println!("fragmentation workload: unusable free space index (thousandths) per order, ZONE_DMA32, 256 MiB");
    print!("{:>6} {:>7}", "step", "free%");
    for o in 0..=MAX_PAGE_ORDER {
        print!(" {:>5}", format!("o{o}"));
    }
    println!();
    for step in 0..=20 {
        if step > 0 {
            // Fill to ~75% with mostly small blocks, then free a random half.
            while b.counts().free > BUDDY_PAGES / 4 {
                let r = rng.next();
                let order = [0u8, 0, 0, 0, 1, 1, 2, 3, 4, 6][(r % 10) as usize];
                match b.alloc_pages(0, order, GFP_NOWMARK) {
                    Ok(p) => live.push((p, order)),
                    Err(_) => break,
                }
            }
            let mut i = 0;
            while i < live.len() {
                if rng.next() & 1 == 0 {
                    let (p, o) = live.swap_remove(i);
                    b.free_pages(0, p, o).unwrap();
                } else {
                    i += 1;
                }
            }
        }
        let free = b.counts().free * 100 / BUDDY_PAGES;
        print!("{step:>6} {free:>6}%");
        for o in 0..=MAX_PAGE_ORDER {
            print!(" {:>5}", b.unusable_free_index(ZoneType::Dma32, o));
        }
        println!();
    }
    let mut s = String::new();
    b.buddyinfo(&mut s).unwrap();
    println!("buddyinfo after the workload:\n{s}");
}

criterion_group!(benches, bench_buddy, bench_slab, bench_vmalloc);

fn main() {
    // Skip the report when cargo runs the bench binary as a test.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        fragmentation_report();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
