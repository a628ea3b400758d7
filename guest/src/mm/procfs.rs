//! /proc-like views the kernel prints on request: meminfo, buddyinfo,
//! slabinfo, vmallocinfo and a dump of its page tables (ptdump).

use super::{PAGES, STATS};
use crate::fmt::Dec;
use crate::kprintln;
use core::fmt::Write;
use mm_core::addr::PAGE_SIZE;

/// The console as a `fmt::Write`.
struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        crate::console::print(format_args!("{}", s));
        Ok(())
    }
}

/// /proc/meminfo (the lines this kernel can fill).
pub fn meminfo() {
    let st = STATS.with(|s| *s);
    let (c, slab_pages) = PAGES.with(|p| {
        let c = p.buddy.counts();
        let slab: u64 =
            p.slab.caches().filter_map(|(id, _)| p.slab.info(&p.buddy, id)).map(|i| i.num_slabs * i.pagesperslab).sum();
        (c, slab)
    });
    let (vm_used, vm_chunk) = super::vmalloc::VMAP.with(|v| (v.areas().map(|a| a.size).sum::<u64>(), v.largest_free()));
    let kb = |pages: u64| Dec(pages * PAGE_SIZE / 1024);
    kprintln!("MemTotal:       {} kB", Dec(st.total_ram >> 10));
    kprintln!("MemFree:        {} kB", kb(c.free + c.pcp));
    kprintln!("MemManaged:     {} kB", kb(c.managed));
    kprintln!("Deferred:       {} kB", kb(super::DEFERRED.with(|d| d.pages)));
    kprintln!("Allocated:      {} kB", kb(c.allocated));
    kprintln!("Slab:           {} kB", kb(slab_pages));
    kprintln!("PageTables:     {} kB", kb(st.boot_table_pages + st.table_pages));
    kprintln!("Reserved:       {} kB", Dec(st.reserved_bytes >> 10));
    kprintln!("Vmemmap:        {} kB", Dec(st.vmemmap_bytes >> 10));
    kprintln!("VmallocUsed:    {} kB", Dec(vm_used >> 10));
    kprintln!("VmallocChunk:   {} kB", Dec(vm_chunk >> 10));
}

/// /proc/buddyinfo.
pub fn buddyinfo() {
    PAGES.with(|p| {
        let _ = p.buddy.buddyinfo(&mut Console);
    });
}

/// /proc/slabinfo.
pub fn slabinfo() {
    PAGES.with(|p| {
        let _ = p.slab.slabinfo(&p.buddy, &mut Console);
    });
}

/// /proc/vmallocinfo.
pub fn vmallocinfo() {
    super::vmalloc::VMAP.with(|v| {
        let _ = v.vmallocinfo(&mut Console);
    });
}

/// The kernel page tables, merged into ranges with their flags (as
/// Linux's /sys/kernel/debug/page_tables/kernel).
pub fn ptdump() {
    let mapper = super::KERNEL_PT.with(|m| *m);
    PAGES.with(|p| {
        let mut cur: Option<(u64, u64, u64, mm_core::paging::PteFlags, mm_core::paging::PageSize)> = None;
        let print =
            |(start, end, pa, flags, size): (u64, u64, u64, mm_core::paging::PteFlags, mm_core::paging::PageSize)| {
                kprintln!(
                    "{:#018x}-{:#018x} {}K {} -> {:#x} {}",
                    start,
                    end,
                    Dec((end - start) >> 10),
                    match size {
                        mm_core::paging::PageSize::Size4K => "pte",
                        mm_core::paging::PageSize::Size2M => "pmd",
                        mm_core::paging::PageSize::Size1G => "pud",
                    },
                    pa,
                    flags
                );
            };
        for m in mapper.mappings(&p.phys).flatten() {
            // Accessed/dirty change as the CPU runs: leave them out, as
            // Linux's ptdump does, so ranges merge.
            let flags = m.flags.difference(mm_core::paging::PteFlags::ACCESSED.union(mm_core::paging::PteFlags::DIRTY));
            let (va, pa, size) = (m.va.0, m.pa.0, m.size);
            match &mut cur {
                Some(c) if c.1 == va && c.3 == flags && c.4 == size && c.2 + (c.1 - c.0) == pa => c.1 += size.bytes(),
                _ => {
                    if let Some(c) = cur.take() {
                        print(c);
                    }
                    cur = Some((va, va + size.bytes(), pa, flags, size));
                }
            }
        }
        if let Some(c) = cur {
            print(c);
        }
    });
}
