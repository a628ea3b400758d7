//! `mmbench` on the kernel command line: in-guest figures for the memory
//! manager, as counts rather than times (time measured in ring 0 on hosts
//! whose ring 0 is emulated measures the emulator, platform.md). The VMM
//! counts the VM exits between the checkpoints around each fast path.

use super::{page_alloc, vmalloc, GFP_KERNEL, PAGES, STATS};
use crate::arch::percpu::this_cpu;
use crate::checkpoint::checkpoint;
use crate::fmt::Dec;
use crate::kprintln;

/// Allocator operations per fast-path run.
const PAIRS: u64 = 1000;

/// Runs the measurements and prints one `mmbench:` line per figure.
pub fn run() {
    // Warm the caches so the measured loops stay on the fast paths.
    let cpu = this_cpu().id;
    let warm = PAGES.with(|p| p.slab.kmalloc(&mut p.buddy, &mut p.phys, cpu, 64, GFP_KERNEL.gfp));
    if let Ok(pa) = warm {
        let _ = PAGES.with(|p| p.slab.kfree(&mut p.buddy, &mut p.phys, cpu, pa));
    }
    checkpoint("mmbench-kmalloc-begin");
    let mut ok = true;
    for _ in 0..PAIRS {
        // Through the allocation entry the heap uses (fast path, slow
        // path only on failure).
        let r = PAGES.with(|p| {
            let cpu = this_cpu().id;
            let pa = page_alloc::alloc_locked(p, 0, GFP_KERNEL, |p| {
                p.slab.kmalloc(&mut p.buddy, &mut p.phys, cpu, 64, GFP_KERNEL.gfp)
            })?;
            p.slab.kfree(&mut p.buddy, &mut p.phys, cpu, pa)
        });
        ok &= r.is_ok();
    }
    checkpoint("mmbench-kmalloc-end");
    kprintln!("mmbench: kmalloc-64 pairs {} ok {}", Dec(PAIRS), if ok { "yes" } else { "no" });

    checkpoint("mmbench-pages-begin");
    for _ in 0..PAIRS {
        if let Some(pfn) = super::alloc_pages(0, GFP_KERNEL) {
            let _ = super::free_pages(pfn, 0);
        }
    }
    checkpoint("mmbench-pages-end");
    kprintln!("mmbench: order-0 page pairs {}", Dec(PAIRS));

    // TLB flushes per vfree, for areas of 1, 16 and 64 pages.
    for pages in [1u64, 16, 64] {
        let before = vmalloc::STATS.with(|s| (s.invlpg, s.full_flushes));
        let n = 8;
        for _ in 0..n {
            if let Ok(va) = vmalloc::vmalloc(pages * 4096, "mmbench") {
                let _ = vmalloc::vfree(va);
            }
        }
        let after = vmalloc::STATS.with(|s| (s.invlpg, s.full_flushes));
        kprintln!(
            "mmbench: vfree of {} pages: {} invlpg and {} full flushes per vfree",
            Dec(pages),
            Dec((after.0 - before.0) / n),
            Dec((after.1 - before.1) / n)
        );
    }

    // Page-table pages per GiB mapped with 4 KiB pages (vmalloc), from the
    // distinct tables an 8 MiB area's walks go through (a GiB would take
    // minutes of emulated ring 0).
    let size = 8u64 << 20;
    if let Ok(va) = vmalloc::vmalloc(size, "mmbench-8M") {
        let ctx = super::KERNEL_PT.with(|m| m.context());
        let mut tables = [0u64; 16];
        let mut n = 0;
        let mut pte_tables = 0u64;
        let mut a = va.0;
        while a < va.0 + size {
            if let Ok(t) = PAGES.with(|p| mm_core::paging::walk(&p.phys, &ctx, mm_core::addr::VirtAddr(a))) {
                for step in t
                    .trace
                    .steps()
                    .filter(|st| st.level == mm_core::paging::Level::Pte || st.level == mm_core::paging::Level::Pmd)
                {
                    let table = step.entry_pa.0 & !0xfff;
                    if !tables[..n].contains(&table) && n < tables.len() {
                        tables[n] = table;
                        n += 1;
                        pte_tables += (step.level == mm_core::paging::Level::Pte) as u64;
                    }
                }
            }
            a += 4096 * 512;
        }
        let _ = vmalloc::vfree(va);
        kprintln!(
            "mmbench: page-table pages per GiB of 4 KiB mappings: {} PTE tables (+1 PMD table per GiB); measured {} PTE and {} PMD tables for 8 MiB",
            Dec(pte_tables * ((1 << 30) / size)),
            Dec(pte_tables),
            Dec(n as u64 - pte_tables)
        );
    }
    let (boot_tables, ram) = STATS.with(|s| (s.boot_table_pages, s.total_ram));
    kprintln!("mmbench: kernel page-table pages at boot: {} for {} MiB of RAM", Dec(boot_tables), Dec(ram >> 20));
}
