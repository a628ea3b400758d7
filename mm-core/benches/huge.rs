//! Huge pages and compaction, host-independent counts (no times), each
//! figure beside a peer measured in the same run:
//!
//! - (a) translations missed by a TLB sized like a real second-level TLB
//!   (`SharedTlb::skylake_stlb`: 1536 entries, 12 ways) for a uniform
//!   random walk over 256 MiB mapped with 4 KiB pages, then with 2 MiB
//!   pages (real page tables, walked by mm-core's MMU on every miss); the
//!   first-level model (`Tlb`: 256 + 32 entries) beside it;
//! - (b) compaction: order-9 requests on a fragmented 64 MiB zone (seeded
//!   mixed workload, 1 in 50 allocations unmovable, 0.5 % of pages pinned),
//!   each served by `compact_zone` then an order-9 allocation: success
//!   rate, pages migrated per order-9 block obtained, beside the oracle
//!   (the fewest migrations that could have freed as many pageblocks) and
//!   the blocks available without compaction;
//! - (c) grouping by mobility: pageblocks holding both movable and
//!   unmovable pages after mixed workloads on 256 MiB (a steady mix, and a
//!   mix shifting towards unmovable with memory 70 % and 95 % full), with
//!   grouping (`BuddyAllocator::with_mobility`) and without (`new`).
//!
//! Run: `cargo bench -p mm-core --bench huge`

use mm_core::addr::{PageSize, PhysAddr, VirtAddr, PAGE_SIZE};
use mm_core::buddy::{
    pageblock_storage_len, BuddyAllocator, MigrateType, Page, ZoneType, GFP_HIGHUSER_MOVABLE, PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
};
use mm_core::compaction::sim::{oracle_migrations, run_workload, BoostStats, SimMemory, Workload, XorShift};
use mm_core::compaction::{compact_zone, CompactResult, CompactStats};
use mm_core::mem::VecMem;
use mm_core::paging::tlb::TlbStats;
use mm_core::paging::{Access, CpuContext, FrameAllocator, MapRequest, Mapper, PteFlags, SharedTlb, SizeRequest, Tlb};

const REGION: u64 = 256 << 20;
const VA: u64 = 0x7f00_0000_0000;

struct Bump(u64, u64);
impl FrameAllocator for Bump {
    fn allocate_frame(&mut self) -> Option<PhysAddr> {
        let f = PhysAddr(self.0);
        self.0 += PAGE_SIZE;
        (self.0 <= self.1).then_some(f)
    }
    fn deallocate_frame(&mut self, _frame: PhysAddr) {}
}

/// 256 MiB at `VA` mapped with pages of `size` (a 1 GiB page covers it
/// and more), the tables in a 2 MiB buffer standing for physical memory
/// (the data frames need no backing: only the tables are read).
fn region(size: PageSize) -> (VecMem, CpuContext) {
    let mut mem = VecMem::new(2 << 20);
    let mut frames = Bump(PAGE_SIZE, 2 << 20);
    let gb = size == PageSize::Size1G;
    let m = Mapper::create(&mut mem, &mut frames, false, 46, gb).expect("root table");
    let flags = PteFlags(PteFlags::PRESENT.0 | PteFlags::RW.0 | PteFlags::USER.0);
    let len = REGION.next_multiple_of(size.bytes());
    let req = MapRequest { va: VirtAddr(VA), pa: PhysAddr(1 << 30), len, size: SizeRequest::Fixed(size), flags };
    m.map(&mut mem, &mut frames, req).expect("map the region").ignore();
    let ctx = m.context();
    (mem, ctx)
}

fn tlb_walk(accesses: u64) {
    println!("(a) random walk over 256 MiB, {accesses} accesses (uniform, seeded), misses = page walks");
    println!("| TLB model | 4 KiB pages: misses | miss rate | 2 MiB pages: misses | miss rate | ratio | 1 GiB page: misses |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, run: &mut dyn FnMut(&mut VecMem, &CpuContext, &[u64]) -> TlbStats| {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let addrs: Vec<u64> = (0..accesses).map(|_| VA + ((rng.next_u64() % REGION) & !7)).collect();
        let mut res = [TlbStats::default(); 3];
        for (i, size) in [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G].into_iter().enumerate() {
            let (mut mem, ctx) = region(size);
            res[i] = run(&mut mem, &ctx, &addrs);
            assert_eq!(res[i].hits + res[i].misses, accesses);
        }
        let rate = |s: TlbStats| s.misses as f64 * 100.0 / accesses as f64;
        println!(
            "| {name} | {} | {:.2} % | {} | {:.4} % | {:.1}x | {} |",
            res[0].misses,
            rate(res[0]),
            res[1].misses,
            rate(res[1]),
            res[0].misses as f64 / res[1].misses.max(1) as f64,
            res[2].misses
        );
    };
    row("second level, 1536 entries 12-way (Skylake STLB)", &mut |mem, ctx, addrs| {
        let mut t = SharedTlb::skylake_stlb();
        for &a in addrs {
            t.translate(mem, ctx, VirtAddr(a), Access::Read).expect("mapped");
        }
        t.stats()
    });
    row("first level, 64x4 (4 KiB) + 8x4 (2 MiB) + 1x4 (1 GiB)", &mut |mem, ctx, addrs| {
        let mut t = Tlb::new();
        for &a in addrs {
            t.translate(mem, ctx, VirtAddr(a), Access::Read).expect("mapped");
        }
        t.stats()
    });
    let pages4k = REGION / PAGE_SIZE;
    println!(
        "peer (analytic, uniform access): 4 KiB miss rate >= 1 - 1536/{pages4k} = {:.2} %; 2 MiB: {} pages fit in 1536 entries, only the {} first touches miss; 1 GiB: one page, one first touch",
        (1.0 - 1536.0 / pages4k as f64) * 100.0,
        REGION >> 21,
        REGION >> 21
    );
    println!();
}

/// 64 MiB of DMA32 for the compaction runs, 256 MiB for grouping.
const START: u64 = 4096;

fn buddy<'a>(m: &'a mut [Page], pb: &'a mut [u8], pages: u64, grouping: bool) -> BuddyAllocator<'a> {
    let mut b = if grouping {
        BuddyAllocator::with_mobility(m, pb, 0, 1).expect("storage sized by pageblock_storage_len")
    } else {
        BuddyAllocator::new(m, 0, 1).expect("one cpu")
    };
    b.free_range(START, START + pages).expect("free range");
    b
}

fn storage(pages: u64) -> (Vec<Page>, Vec<u8>) {
    let n = (START + pages) as usize;
    (vec![Page::default(); n], vec![0u8; pageblock_storage_len(0, n)])
}

fn compaction(trials: u64, requests: u64) {
    let head = |pinned: u64| if pinned == 0 { "none".to_string() } else { format!("{:.1} %", pinned as f64 / 10.0) };
    const PAGES: u64 = 16384;
    println!(
        "(b) compaction: {trials} seeded fragmented 64 MiB zones (fill 97 %, churn 50 %, then 60 % of movable pages freed; 1 in 50 allocations unmovable), {requests} order-9 requests each, each served by compact_zone then alloc_pages(order 9)"
    );
    println!("| allocator | pinned | order-9 free before | requests | served | success rate | pages migrated | migrated per block | oracle per block | scanned per block |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (grouping, pinned_permille) in [(true, 0), (false, 0), (true, 5), (false, 5)] {
        let (mut served, mut before, mut oracle) = (0u64, 0u64, 0u64);
        let mut total = CompactStats::default();
        for seed in 0..trials {
            let (mut m, mut pb) = storage(PAGES);
            let mut b = buddy(&mut m, &mut pb, PAGES, grouping);
            let mut sim = SimMemory::default();
            let w = Workload {
                seed: seed * 7919 + 1,
                unmovable_one_in: 50,
                churn_unmovable_one_in: 50,
                fill_percent: 97,
                churn_percent: 50,
                free_percent: 60,
                pinned_permille,
                boost: false,
            };
            run_workload(&mut b, &mut sim, &w, PAGES);
            b.drain_all_pages();
            before += (PAGEBLOCK_ORDER as usize..11).map(|o| b.free_blocks(ZoneType::Dma32)[o] << (o - 9)).sum::<u64>();
            let state_blocks = |b: &BuddyAllocator, n| oracle_migrations(b, START, START + PAGES, n);
            let mut got = 0;
            let mut oracle_state = None;
            for _ in 0..requests {
                // The oracle sees the state before this trial's first
                // compaction and frees as many blocks as compaction got.
                if oracle_state.is_none() {
                    oracle_state = Some(
                        (1..=requests as usize).map(|n| state_blocks(&b, n).unwrap_or(u64::MAX)).collect::<Vec<_>>(),
                    );
                }
                let out = compact_zone(&mut b, ZoneType::Dma32, Some(PAGEBLOCK_ORDER), MigrateType::Movable, &mut sim)
                    .expect("buddy consistent");
                total += out.stats;
                let ok = matches!(out.result, CompactResult::Success | CompactResult::NotNeeded)
                    && b.alloc_pages(0, PAGEBLOCK_ORDER, GFP_HIGHUSER_MOVABLE).is_ok();
                if ok {
                    got += 1;
                }
            }
            sim.check_contents().expect("every migrated page's data intact");
            b.verify().expect("buddy consistent");
            if got > 0 {
                oracle += oracle_state.as_ref().map_or(0, |o| o[got - 1]);
            }
            served += got as u64;
        }
        let migrated = total.migrated;
        let scanned = total.migrate_scanned + total.free_scanned;
        let req = trials * requests;
        let per = |x: u64| if served > 0 { format!("{:.1}", x as f64 / served as f64) } else { "-".into() };
        println!(
            "| {} | {} | {before} | {req} | {served} | {:.1} % | {migrated} | {} | {} | {} |",
            if grouping { "grouping by mobility" } else { "no grouping" },
            head(pinned_permille),
            served as f64 * 100.0 / req as f64,
            per(migrated),
            per(oracle),
            per(scanned),
        );
    }
    println!("(oracle: the fewest migrations that empty as many pageblocks, chosen knowing every pageblock's contents; a pinned page counts as movable there)");
    println!();
}

fn grouping(seeds: u64) {
    const PAGES: u64 = 65536;
    println!(
        "(c) grouping: 256 MiB ({} pageblocks) of order-0 pages, {seeds} seeds per workload: fill, then churn 300 % of the zone (free a random page, allocate another), pcp lists on; mixed = pageblocks holding both movable and unmovable pages",
        PAGES / PAGEBLOCK_NR_PAGES
    );
    println!("| workload | allocator | mixed pageblocks (sum) | per seed | blocks with unmovable pages | fallbacks | pageblocks claimed | boost wakeups | reclaimed | migrated | mixed / no grouping |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let workloads = [
        ("steady mix: fill 95 %, 1 in 5 unmovable throughout", 95, 5, 5),
        ("shifting mix: fill 70 %, 1 in 10 unmovable, churn 1 in 4", 70, 10, 4),
        ("shifting mix, nearly full: fill 95 %, 1 in 10, churn 1 in 4", 95, 10, 4),
    ];
    // (name, grouping, watermark boosting with kswapd and kcompactd)
    let allocators = [
        ("no grouping", false, false),
        ("grouping by mobility", true, false),
        ("grouping + watermark boost (kswapd reclaim, kcompactd)", true, true),
    ];
    for (name, fill, one_in, churn_one_in) in workloads {
        let mut none = 0u64;
        for (alloc_name, grouping, boost) in allocators {
            let (mut mixed, mut unmov_blocks, mut fallbacks, mut claimed) = (0u64, 0u64, 0u64, 0u64);
            let mut bs = BoostStats::default();
            for seed in 0..seeds {
                let (mut m, mut pb) = storage(PAGES);
                let mut b = buddy(&mut m, &mut pb, PAGES, grouping);
                let mut sim = SimMemory::default();
                let w = Workload {
                    seed: seed * 104_729 + 3,
                    unmovable_one_in: one_in,
                    churn_unmovable_one_in: churn_one_in,
                    fill_percent: fill,
                    churn_percent: 300,
                    free_percent: 0,
                    pinned_permille: 0,
                    boost,
                };
                let s = run_workload(&mut b, &mut sim, &w, PAGES);
                b.verify().expect("buddy consistent");
                sim.check_contents().expect("every migrated page's data intact");
                bs.wakeups += s.wakeups;
                bs.reclaimed += s.reclaimed;
                bs.migrated += s.migrated;
                mixed += b.mixed_pageblocks(ZoneType::Dma32);
                let mut pfn = START;
                while pfn < START + PAGES {
                    unmov_blocks += u64::from(b.pageblock_usage(pfn)[MigrateType::Unmovable as usize] > 0);
                    pfn += PAGEBLOCK_NR_PAGES;
                }
                fallbacks += b.mobility_stats().fallbacks;
                claimed += b.mobility_stats().pageblocks_claimed;
            }
            let ratio = if grouping {
                format!("{:.3}", mixed as f64 / none.max(1) as f64)
            } else {
                none = mixed;
                String::new()
            };
            println!(
                "| {name} | {alloc_name} | {mixed} | {:.1} | {unmov_blocks} | {fallbacks} | {claimed} | {} | {} | {} | {ratio} |",
                mixed as f64 / seeds as f64,
                bs.wakeups,
                bs.reclaimed,
                bs.migrated,
            );
        }
    }
    println!("(target: grouping leaves at most 0.1 as many mixed pageblocks as no grouping; reclaimed pages are allocated again by the workload's next steps, so memory stays as full)");
    println!();
}

fn main() {
    // `cargo bench -p mm-core --bench huge -- grouping` runs (c) alone.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |part: &str| only.is_empty() || only.iter().any(|a| a == part);
    if run("tlb") {
        tlb_walk(1_000_000);
    }
    if run("compaction") {
        compaction(20, 8);
    }
    if run("grouping") {
        grouping(6);
    }
}
