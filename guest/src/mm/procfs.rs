//! /proc-like views the kernel prints on request: meminfo, zoneinfo,
//! buddyinfo, slabinfo, vmallocinfo and a dump of its page tables
//! (ptdump).

use super::{PAGES, STATS};
use crate::fmt::Dec;
use crate::kprintln;
use core::fmt::Write;
use mm_core::addr::PAGE_SIZE;
use mm_core::lru::LruList;

/// The console as a `fmt::Write`.
struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        crate::console::print(format_args!("{}", s));
        Ok(())
    }
}

/// /proc/meminfo (the lines this kernel can fill), on the console.
pub fn meminfo() {
    meminfo_to(&mut Console);
}

/// Kernel stacks of live tasks, in KiB (meminfo's KernelStack; the
/// scheduler counts them as it allocates and frees them).
pub static KERNEL_STACK_KB: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// `sysinfo(2)`'s memory figures, in bytes, from the counters
/// /proc/meminfo prints ([`meminfo_to`]): MemTotal, MemFree, Shmem,
/// Buffers (0: there is no block-device cache), SwapTotal, SwapFree.
pub fn sysinfo_bytes() -> [u64; 6] {
    let total = STATS.with(|s| s.total_ram);
    let c = PAGES.with(|p| super::percpu::counts(p));
    let sw = super::swap::totals();
    let (_, shmem) = crate::fs::pagecache::counts();
    [total, (c.free + c.pcp) * PAGE_SIZE, shmem * PAGE_SIZE, 0, sw.total * PAGE_SIZE, sw.free * PAGE_SIZE]
}

/// /proc/meminfo's text, written to `w` (the console, or a /proc file's
/// buffer: fs/procfs.rs).
pub fn meminfo_to(w: &mut dyn Write) {
    let st = STATS.with(|s| *s);
    let (c, slab_pages) = PAGES.with(|p| {
        let c = super::percpu::counts(p);
        let slab: u64 =
            p.slab.caches().filter_map(|(id, _)| p.slab.info(&p.buddy, id)).map(|i| i.num_slabs * i.pagesperslab).sum();
        (c, slab)
    });
    let (vm_used, vm_chunk) = super::vmalloc::VMAP.with(|v| (v.areas().map(|a| a.size).sum::<u64>(), v.largest_free()));
    let kb = |pages: u64| Dec(pages * PAGE_SIZE / 1024);
    let deferred = super::DEFERRED.with(|d| d.pages);
    // /proc/meminfo's own fields, in its order; AnonPages needs the owners the host reads from the page
    // descriptors (the VMM's meminfo view), so it is the host's alone.
    let _ = writeln!(w, "MemTotal:       {} kB", Dec(st.total_ram >> 10));
    let _ = writeln!(w, "MemFree:        {} kB", kb(c.free + c.pcp));
    let _ = writeln!(w, "MemAvailable:   {} kB", kb(c.free + c.pcp + deferred));
    let lru = PAGES.with(|p| LruList::ALL.map(|l| p.lru.total(l)));
    let sw = super::swap::totals();
    let _ = writeln!(w, "Buffers:        0 kB");
    let (cached, shmem) = crate::fs::pagecache::counts();
    let _ = writeln!(w, "Cached:         {} kB", kb(cached));
    let _ = writeln!(w, "SwapCached:     {} kB", kb(sw.cached));
    let _ =
        writeln!(w, "Active:         {} kB", kb(lru[LruList::ActiveAnon as usize] + lru[LruList::ActiveFile as usize]));
    let _ = writeln!(
        w,
        "Inactive:       {} kB",
        kb(lru[LruList::InactiveAnon as usize] + lru[LruList::InactiveFile as usize])
    );
    let _ = writeln!(w, "Active(anon):   {} kB", kb(lru[LruList::ActiveAnon as usize]));
    let _ = writeln!(w, "Inactive(anon): {} kB", kb(lru[LruList::InactiveAnon as usize]));
    let _ = writeln!(w, "Active(file):   {} kB", kb(lru[LruList::ActiveFile as usize]));
    let _ = writeln!(w, "Inactive(file): {} kB", kb(lru[LruList::InactiveFile as usize]));
    let _ = writeln!(w, "Unevictable:    {} kB", kb(lru[LruList::Unevictable as usize]));
    let _ = writeln!(w, "SwapTotal:      {} kB", kb(sw.total));
    let _ = writeln!(w, "SwapFree:       {} kB", kb(sw.free));
    let _ = writeln!(w, "Shmem:          {} kB", kb(shmem));
    let _ = writeln!(w, "Slab:           {} kB", kb(slab_pages));
    let _ = writeln!(w, "KernelStack:    {} kB", Dec(KERNEL_STACK_KB.load(core::sync::atomic::Ordering::Relaxed)));
    let _ = writeln!(w, "PageTables:     {} kB", kb(st.boot_table_pages + st.table_pages));
    let _ = writeln!(w, "CommitLimit:    {} kB", kb(super::overcommit::commit_limit()));
    let _ = writeln!(w, "Committed_AS:   {} kB", kb(super::overcommit::committed_as()));
    let _ =
        writeln!(w, "VmallocTotal:   {} kB", Dec((super::layout::VMALLOC_END - super::layout::VMALLOC_START) >> 10));
    let _ = writeln!(w, "AnonHugePages:  {} kB", Dec(super::huge_memory::anon_huge_kib()));
    super::hugetlb::meminfo(w);
    // This kernel's extras.
    let _ = writeln!(w, "MemManaged:     {} kB", kb(c.managed));
    let _ = writeln!(w, "Deferred:       {} kB", kb(deferred));
    let _ = writeln!(w, "Allocated:      {} kB", kb(c.allocated));
    let _ = writeln!(w, "Reserved:       {} kB", Dec(st.reserved_bytes >> 10));
    let _ = writeln!(w, "Vmemmap:        {} kB", Dec(st.vmemmap_bytes >> 10));
    let _ = writeln!(w, "VmallocAreas:   {} kB", Dec(vm_used >> 10));
    let _ = writeln!(w, "VmallocChunk:   {} kB", Dec(vm_chunk >> 10));
}

/// `free`'s table (procps: total, used, free, shared, buff/cache,
/// available; then the swap line), in kB.
pub fn free() {
    let st = STATS.with(|s| *s);
    let c = PAGES.with(|p| super::percpu::counts(p));
    let deferred = super::DEFERRED.with(|d| d.pages);
    let sw = super::swap::totals();
    let kb = |pages: u64| pages * PAGE_SIZE / 1024;
    let total = st.total_ram >> 10;
    let free = kb(c.free + c.pcp + deferred);
    kprintln!("               total        used        free      shared  buff/cache   available");
    kprintln!(
        "Mem:    {:>12} {:>11} {:>11} {:>11} {:>11} {:>11}",
        Dec(total),
        Dec(total.saturating_sub(free)),
        Dec(free),
        Dec(0),
        Dec(kb(sw.cached)),
        Dec(free)
    );
    kprintln!("Swap:   {:>12} {:>11} {:>11}", Dec(kb(sw.total)), Dec(kb(sw.total - sw.free)), Dec(kb(sw.free)));
}

/// Per zone, from the firmware's memory map at boot: (first RAM pfn, one
/// past the last, RAM pages): Linux's `zone_start_pfn`, `spanned_pages`
/// and `present_pages` (holes are spanned, not present).
static ZONE_SPANS: crate::sync::SpinLock<[(u64, u64, u64); mm_core::buddy::NR_ZONES]> =
    crate::sync::SpinLock::new_with("the zone spans", crate::sync::rank::STATS, [(0, 0, 0); mm_core::buddy::NR_ZONES]);

/// Records each zone's span and present pages from the RAM ranges (at
/// boot, before memblock goes).
pub fn record_zone_spans(memory: impl Iterator<Item = super::memblock::Range>) {
    let mut spans = [(u64::MAX, 0u64, 0u64); mm_core::buddy::NR_ZONES];
    for r in memory {
        let (mut pfn, end) = (r.start.div_ceil(PAGE_SIZE), r.end / PAGE_SIZE);
        while pfn < end {
            let z = mm_core::buddy::ZoneType::of_pfn(pfn);
            let zend = match z {
                mm_core::buddy::ZoneType::Dma => mm_core::buddy::zone::DMA_END_PFN,
                mm_core::buddy::ZoneType::Dma32 => mm_core::buddy::zone::DMA32_END_PFN,
                _ => u64::MAX,
            }
            .min(end);
            let s = &mut spans[z as usize];
            s.0 = s.0.min(pfn);
            s.1 = s.1.max(zend);
            s.2 += zend - pfn;
            pfn = zend;
        }
    }
    for s in spans.iter_mut().filter(|s| s.2 == 0) {
        *s = (0, 0, 0);
    }
    ZONE_SPANS.with(|z| *z = spans);
}

/// /proc/zoneinfo's text (Linux's `zoneinfo_show`), written to `w`, which
/// must not allocate (it is written under the page allocator's lock: a
/// bounded buffer). Per zone: free pages, the min/low/high watermarks
/// (`promo` is Linux's high + the gap, for memory tiering this kernel
/// lacks), spanned/present/managed, `protection` (this kernel keeps no
/// lowmem_reserve: zeros, which is what it enforces), the per-zone LRU and
/// free counts, the per-CPU pagesets, the start pfn; the first populated
/// zone also carries the node's stats.
pub fn zoneinfo_to(w: &mut dyn Write) {
    use mm_core::buddy::Watermark;
    let spans = ZONE_SPANS.with(|z| *z);
    let (cached, shmem) = crate::fs::pagecache::counts();
    PAGES.with(|p| {
        // Per zone and list, from the lists themselves (an lruvec per node
        // and memory cgroup, as Linux's; Linux counts these per zone too).
        let mut per_zone = [[0u64; 5]; mm_core::buddy::MAX_NR_ZONES];
        for id in 0..p.lru.nr_lruvecs() as u16 {
            let Some(v) = p.lru.lruvec_ref(id) else { continue };
            for (i, l) in LruList::ALL.iter().enumerate() {
                if v.nr(*l) == 0 {
                    continue;
                }
                for pfn in v.list(*l) {
                    per_zone[p.buddy.zone_index_of_pfn(pfn)][i] += 1;
                }
            }
        }
        let numa = p.buddy.nr_nodes() > 1;
        // The page cache's counts are not kept per node: node 0 shows them.
        let mut last_node = None;
        for (zi, z) in p.buddy.zones().iter().enumerate() {
            let _ = write!(w, "Node {}, zone ", Dec(u64::from(z.node)));
            pad(w, z.kind.name(), 8, true);
            let populated = z.populated();
            if populated && last_node != Some(z.node) {
                // The node's first populated zone carries its stats.
                last_node = Some(z.node);
                let node = node_lru(p, usize::from(z.node));
                let _ = write!(w, "\n  per-node stats");
                let names =
                    ["nr_inactive_anon", "nr_active_anon", "nr_inactive_file", "nr_active_file", "nr_unevictable"];
                for (n, v) in names.iter().zip(node.iter()) {
                    stat(w, n, *v);
                }
                stat(w, "nr_file_pages", if z.node == 0 { cached } else { 0 });
                stat(w, "nr_shmem", if z.node == 0 { shmem } else { 0 });
                // The node's reclaim (Linux keeps these per node in
                // /sys/devices/system/node/nodeN/vmstat).
                let st = node_stat(p, usize::from(z.node));
                stat(w, "pgscan_kswapd", st.pgscan_kswapd);
                stat(w, "pgscan_direct", st.pgscan_direct);
                stat(w, "pgsteal_kswapd", st.pgsteal_kswapd);
                stat(w, "pgsteal_direct", st.pgsteal_direct);
            }
            // With NUMA nodes a zone's span is the part of the type's
            // span in its node: what the buddy saw handed in (holes
            // inside it are counted present here).
            let (start, end, present) = if !numa {
                spans[zi]
            } else if populated {
                (z.start_pfn, z.end_pfn, z.end_pfn - z.start_pfn)
            } else {
                (0, 0, 0)
            };
            let m = z.watermark;
            let gap = m[Watermark::High as usize] - m[Watermark::Low as usize];
            let _ = write!(w, "\n  pages free     {}", Dec(z.nr_free));
            let _ = write!(w, "\n        boost    0");
            let _ = write!(w, "\n        min      {}", Dec(m[Watermark::Min as usize]));
            let _ = write!(w, "\n        low      {}", Dec(m[Watermark::Low as usize]));
            let _ = write!(w, "\n        high     {}", Dec(m[Watermark::High as usize]));
            let _ = write!(w, "\n        promo    {}", Dec(m[Watermark::High as usize] + gap));
            let _ = write!(w, "\n        spanned  {}", Dec(end - start));
            let _ = write!(w, "\n        present  {}", Dec(present));
            let _ = write!(w, "\n        managed  {}", Dec(z.managed_pages));
            let _ = write!(w, "\n        cma      0");
            let _ = write!(w, "\n        protection: (0");
            for _ in 1..mm_core::buddy::NR_ZONES {
                let _ = write!(w, ", 0");
            }
            let _ = write!(w, ")");
            if !populated {
                let _ = writeln!(w);
                continue;
            }
            let lz = per_zone[zi];
            stat(w, "nr_free_pages", z.nr_free);
            let names = [
                "nr_zone_inactive_anon",
                "nr_zone_active_anon",
                "nr_zone_inactive_file",
                "nr_zone_active_file",
                "nr_zone_unevictable",
            ];
            for (n, v) in names.iter().zip(lz.iter()) {
                stat(w, n, *v);
            }
            let _ = write!(w, "\n  pagesets");
            for (cpu, pcp) in z.pcp.iter().enumerate().take(p.buddy.nr_cpus()) {
                let _ = write!(w, "\n    cpu: {}", Dec(cpu as u64));
                let _ = write!(w, "\n              count: {}", Dec(pcp.count));
                let _ = write!(w, "\n              high:  {}", Dec(pcp.high));
                let _ = write!(w, "\n              batch: {}", Dec(pcp.batch));
            }
            let _ = write!(w, "\n  start_pfn:           {}", Dec(start));
            let _ = writeln!(w);
        }
    });
}

/// Node `node`'s LRU pages per list (`LruList::ALL` order), over its
/// memory cgroups' lruvecs (`node_page_state(NR_LRU_BASE + lru)`).
pub fn node_lru(p: &super::PageAlloc, node: usize) -> [u64; 5] {
    let mut out = [0u64; 5];
    for v in p.lru.all_lists().iter().filter(|v| mm_core::lru::lruvec_node(v.id()) == node) {
        for (i, l) in LruList::ALL.iter().enumerate() {
            out[i] += v.nr(*l);
        }
    }
    out
}

/// Node `node`'s reclaim counters over its lruvecs.
pub fn node_stat(p: &super::PageAlloc, node: usize) -> mm_core::lru::LruStats {
    p.lru.stat_sum(|id| mm_core::lru::lruvec_node(id) == node)
}

/// `s` padded with spaces to `width` (on the left if `right`), by hand:
/// core's width formatting uses SSE, which ring 0 cannot (platform.md).
fn pad(w: &mut dyn Write, s: &str, width: usize, right: bool) {
    let spaces = width.saturating_sub(s.len());
    if !right {
        let _ = w.write_str(s);
    }
    for _ in 0..spaces {
        let _ = w.write_str(" ");
    }
    if right {
        let _ = w.write_str(s);
    }
}

/// One `%-12s %lu` stat line of zoneinfo.
fn stat(w: &mut dyn Write, name: &str, v: u64) {
    let _ = w.write_str("\n      ");
    pad(w, name, 12, false);
    let _ = write!(w, " {}", Dec(v));
}

/// /proc/buddyinfo's text, written to `w`.
pub fn buddyinfo_to(w: &mut dyn Write) {
    PAGES.with(|p| {
        let _ = p.buddy.buddyinfo(w);
    });
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

/// Linux's section markers for x86-64 (`address_markers` in
/// arch/x86/mm/dump_pagetables.c), for the ranges this kernel has.
const MARKERS: [(u64, &str); 6] = [
    (0, "User Space"),
    (0xffff_8000_0000_0000, "Kernel Space"),
    (super::layout::PAGE_OFFSET, "Low Kernel Mapping"),
    (super::layout::VMALLOC_START, "vmalloc() Area"),
    (super::layout::VMEMMAP_START, "Vmemmap"),
    (0xffff_ffff_8000_0000, "High Kernel Mapping"),
];

/// One line of the dump: `[start, end)` with `flags` at `level`, or a hole
/// (`flags` None).
type Run = (u64, u64, Option<mm_core::paging::PteFlags>, &'static str);

/// Prints one range as Linux's ptdump does: `0xSTART-0xEND   SIZE FLAGS
/// level`, the size scaled to K/M/G/T while it stays whole.
fn ptdump_line(w: &mut dyn Write, (start, end, flags, level): Run) {
    let mut size = (end.wrapping_sub(start)) >> 10;
    let mut unit = 0;
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    while size != 0 && size.is_multiple_of(1024) && unit + 1 < UNITS.len() {
        size >>= 10;
        unit += 1;
    }
    // USR RW PWT PCD PSE GLB NX, each column fixed.
    let mut b = crate::fmt::StackString::<40>::new();
    let prot: &str = match flags {
        None => "                           ",
        Some(f) => {
            use mm_core::paging::PteFlags as F;
            let _ = b.write_str(if f.contains(F::USER) { "USR " } else { "    " });
            let _ = b.write_str(if f.contains(F::RW) { "RW " } else { "ro " });
            let _ = b.write_str(if f.contains(F::PWT) { "PWT " } else { "    " });
            let _ = b.write_str(if f.contains(F::PCD) { "PCD " } else { "    " });
            let _ = b.write_str(if level != "pte" { "PSE " } else { "    " });
            let _ = b.write_str(if f.contains(F::GLOBAL) { "GLB " } else { "    " });
            let _ = b.write_str(if f.contains(F::NX) { "NX " } else { "x  " });
            b.as_str()
        }
    };
    let _ = writeln!(
        w,
        "{:#018x}-{:#018x}   {}{} {}{}",
        start,
        end,
        crate::fmt::DecPad(size, 9),
        UNITS[unit],
        prot,
        level
    );
}

/// Prints a hole `[start, end)` (`end` 0: the top of the address space)
/// as Linux's walk meets it: pieces up to the next 2 MiB, 1 GiB and
/// 512 GiB boundaries at the PTE, PMD and PUD levels, whole PGD entries,
/// then the tail at the PUD, PMD and PTE levels.
fn ptdump_hole(w: &mut dyn Write, start: u64, end: u64) {
    const SPANS: [(u64, &str); 4] = [(1 << 12, "pte"), (1 << 21, "pmd"), (1 << 30, "pud"), (1 << 39, "pgd")];
    let last = end.wrapping_sub(1);
    let mut s = start;
    // Up: each level until `s` is aligned to the next.
    for i in 0..3 {
        let (next_span, lvl) = (SPANS[i + 1].0, SPANS[i].1);
        if s & (next_span - 1) == 0 {
            continue;
        }
        let boundary_last = s | (next_span - 1);
        if boundary_last > last {
            // Ends before the next boundary: the way down prints it.
            break;
        }
        ptdump_line(w, (s, boundary_last.wrapping_add(1), None, lvl));
        if boundary_last == last {
            return;
        }
        s = boundary_last + 1;
    }
    // Down: whole entries of each level while they fit.
    for i in (0..4).rev() {
        let (span, lvl) = SPANS[i];
        let whole = last.wrapping_sub(s).wrapping_add(1) & !(span - 1);
        // `whole` is 0 both when nothing fits and when everything up to the
        // top (2^64) does: tell them apart by the remaining length.
        let fits_all = last.wrapping_add(1) == 0 && s & (span - 1) == 0 && whole == 0 && last >= s;
        if whole == 0 && !fits_all {
            continue;
        }
        let piece_end = if fits_all { 0 } else { s.wrapping_add(whole) };
        ptdump_line(w, (s, piece_end, None, lvl));
        if piece_end == end {
            return;
        }
        s = piece_end;
    }
}

/// Prints a run, split at the section markers it crosses (each marker's
/// `---[ name ]---` line first).
fn ptdump_emit(w: &mut dyn Write, run: Run, next_marker: &mut usize) {
    let (mut start, end, flags, level) = run;
    // A hole across the non-canonical gap stops at the top of user space
    // and goes on from the bottom of the kernel half, as the PGD does.
    const USER_TOP: u64 = 1 << 47;
    const KERNEL_BOTTOM: u64 = 0xffff_8000_0000_0000;
    if start < USER_TOP && (end == 0 || end > USER_TOP) {
        ptdump_emit(w, (start, USER_TOP, flags, level), next_marker);
        if end != 0 && end <= KERNEL_BOTTOM {
            return;
        }
        start = KERNEL_BOTTOM;
    }
    loop {
        while *next_marker < MARKERS.len() && MARKERS[*next_marker].0 <= start {
            let _ = writeln!(w, "---[ {} ]---", MARKERS[*next_marker].1);
            *next_marker += 1;
        }
        // Ends at 0 mean "the top of the address space".
        let m = MARKERS.get(*next_marker).map(|m| m.0).filter(|&m| m > start && (end == 0 || m < end));
        match m {
            Some(m) => {
                match flags {
                    None => ptdump_hole(w, start, m),
                    Some(_) => ptdump_line(w, (start, m, flags, level)),
                }
                start = m;
            }
            None => {
                match flags {
                    None => ptdump_hole(w, start, end),
                    Some(_) => ptdump_line(w, (start, end, flags, level)),
                }
                return;
            }
        }
    }
}

/// The kernel page tables in the layout of Linux's
/// /sys/kernel/debug/page_tables/kernel (the `ptdump` switch prints it
/// on the console, under the page allocator so no table changes under
/// the walk).
pub fn ptdump() {
    let mapper = super::KERNEL_PT.with(|m| *m);
    PAGES.with(|p| ptdump_to(&mut Console, &mapper, &p.phys, None));
}

/// The page tables `mapper` names, read through `phys`, in the layout of
/// Linux's ptdump: section markers, one line per run of equal flags with
/// its size scaled (K/M/G/T) and its level last, and the holes between
/// mappings shown without flags. `until`: stop at that address (the top
/// of user space for /sys/kernel/debug/page_tables/current_user); None:
/// the whole address space.
pub fn ptdump_to<M: mm_core::mem::PhysMem + ?Sized>(
    w: &mut dyn Write,
    mapper: &mm_core::paging::Mapper,
    phys: &M,
    until: Option<u64>,
) {
    use mm_core::paging::{PageSize, PteFlags};
    let mut marker = 0usize;
    let mut cur: Option<(u64, u64, u64, PteFlags, PageSize)> = None;
    let mut covered = 0u64;
    let level = |size: PageSize| match size {
        PageSize::Size4K => "pte",
        PageSize::Size2M => "pmd",
        PageSize::Size1G => "pud",
    };
    let flush = |w: &mut dyn Write, c: (u64, u64, u64, PteFlags, PageSize), covered: &mut u64, marker: &mut usize| {
        // Canonical kernel addresses follow the user half: the hole
        // between starts at the end of the last run.
        if c.0 != *covered {
            ptdump_emit(w, (*covered, c.0, None, ""), marker);
        }
        ptdump_emit(w, (c.0, c.1, Some(c.3), level(c.4)), marker);
        *covered = c.1;
    };
    for m in mapper.mappings(phys).flatten() {
        if until.is_some_and(|u| m.va.0 >= u) {
            break;
        }
        // Accessed/dirty change as the CPU runs: leave them out, as
        // Linux's ptdump does, so ranges merge.
        let flags = m.flags.difference(PteFlags::ACCESSED.union(PteFlags::DIRTY));
        let (va, pa, size) = (m.va.0, m.pa.0, m.size);
        match &mut cur {
            Some(c) if c.1 == va && c.3 == flags && c.4 == size && c.2 + (c.1 - c.0) == pa => c.1 += size.bytes(),
            _ => {
                if let Some(c) = cur.take() {
                    flush(w, c, &mut covered, &mut marker);
                }
                cur = Some((va, va + size.bytes(), pa, flags, size));
            }
        }
    }
    if let Some(c) = cur {
        flush(w, c, &mut covered, &mut marker);
    }
    match until {
        Some(u) if covered < u => ptdump_emit(w, (covered, u, None, ""), &mut marker),
        Some(_) => {}
        None if covered != 0 => ptdump_emit(w, (covered, 0, None, ""), &mut marker),
        None => {}
    }
}
