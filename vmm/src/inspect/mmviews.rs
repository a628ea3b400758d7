//! The guest-state views read through the descriptor, /proc style:
//! `buddyinfo` (free blocks per zone and order, counted from the
//! `PG_BUDDY` heads; per-CPU lists apart), `slabinfo` (per cache, from the
//! descriptor's cache list and the slab pages' descriptors), `extfrag`
//! (the unusable-free-space and fragmentation indexes per order, from the
//! same free-block counts), `meminfo`
//! (where every frame went, by owner) and `ps` (the process table). Each
//! is a serialisable report plus a rendering in the guest's own format, so
//! the two can be compared line by line. The gdb stub's `monitor`
//! commands print the same renderings.

use super::guest::{zone_of, BlockKind, GuestState, ZONE_NAMES};
use crate::layout;
use mm_core::buddy::{ContigPageInfo, MigrateType, PageOwner, MIGRATE_TYPES, NR_ORDERS, PAGEBLOCK_ORDER};
use mm_core::buddy::{MAX_NUMNODES, NR_ZONES};
use serde::Serialize;
use std::fmt::Write as _;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The zone key of the block at `pfn`: its NUMA node (the zone index its
/// head's descriptor names, divided by the zones per node; bounded, so a
/// corrupt descriptor cannot index out of range: `--verify numa` checks
/// it against the SRAT) and its type (by the frame's address), as one
/// index `node * NR_ZONES + type` into a report's zones.
fn zone_key(gs: &GuestState<'_>, pfn: u64) -> usize {
    let node = (usize::from(gs.page(pfn).zone) / NR_ZONES).min(MAX_NUMNODES - 1);
    node * NR_ZONES + zone_of(pfn)
}

/// One zone's free blocks.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneFree {
    /// Its NUMA node (0 without NUMA).
    pub node: u8,
    /// "DMA", "DMA32", "Normal".
    pub zone: &'static str,
    /// Free blocks per order on the zone's free lists.
    pub free: [u64; NR_ORDERS],
    /// Blocks per order on per-CPU lists.
    pub pcp: [u64; NR_ORDERS],
    /// Frames the buddy allocator manages in the zone (free or not).
    pub managed_pages: u64,
}

/// The `buddyinfo` view.
#[derive(Debug, Clone, Serialize)]
pub struct BuddyinfoReport {
    /// Populated zones.
    pub zones: Vec<ZoneFree>,
    /// Oddities met reading the descriptors.
    pub problems: Vec<String>,
}

/// Counts free blocks per zone and order.
pub fn buddyinfo(gs: &GuestState<'_>) -> BuddyinfoReport {
    let mut zones: Vec<ZoneFree> = (0..MAX_NUMNODES * NR_ZONES)
        .map(|i| ZoneFree {
            node: (i / NR_ZONES) as u8,
            zone: ZONE_NAMES[i % NR_ZONES],
            free: [0; NR_ORDERS],
            pcp: [0; NR_ORDERS],
            managed_pages: 0,
        })
        .collect();
    for b in &gs.blocks {
        let z = &mut zones[zone_key(gs, b.pfn)];
        z.managed_pages += 1 << b.order;
        let o = b.order as usize;
        match b.kind {
            BlockKind::Free => z.free[o] += 1,
            BlockKind::Pcp => z.pcp[o] += 1,
            _ => {}
        }
    }
    zones.retain(|z| z.managed_pages > 0);
    BuddyinfoReport { zones, problems: gs.problems.clone() }
}

impl BuddyinfoReport {
    /// /proc/buddyinfo, then the per-CPU lists the same way.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for z in &self.zones {
            let _ = write!(s, "Node {}, zone {:>8}", z.node, z.zone);
            for n in z.free {
                let _ = write!(s, " {n:>6}");
            }
            s.push('\n');
        }
        for z in self.zones.iter().filter(|z| z.pcp.iter().any(|&n| n > 0)) {
            let _ = write!(s, "pcp    zone {:>8}", z.zone);
            if z.node > 0 {
                let _ = write!(s, " (node {})", z.node);
            }
            for n in z.pcp {
                let _ = write!(s, " {n:>6}");
            }
            s.push_str("  (per-CPU lists, free but not on the free lists above)\n");
        }
        for p in &self.problems {
            let _ = writeln!(s, "problem: {p}");
        }
        s
    }
}

/// One zone's indexes in the `extfrag` view, in thousandths.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneFrag {
    /// Its NUMA node (0 without NUMA).
    pub node: u8,
    /// "DMA", "DMA32", "Normal".
    pub zone: &'static str,
    /// Linux's `unusable_free_index` per order: the share of free memory
    /// (buddy lists only) too small for the order.
    pub unusable: [i64; NR_ORDERS],
    /// Linux's `__fragmentation_index` per order: -1000 when the order can
    /// be served; otherwise towards 0 a failure would be for lack of
    /// memory, towards 1000 for fragmentation.
    pub fragmentation: [i64; NR_ORDERS],
}

/// The `extfrag` view (debugfs `extfrag/unusable_index` and
/// `extfrag/extfrag_index`), computed from the free blocks the host counts
/// in the descriptors, with mm-core's formulas (the guest's own).
#[derive(Debug, Clone, Serialize)]
pub struct ExtfragReport {
    /// Populated zones.
    pub zones: Vec<ZoneFrag>,
    /// Oddities met reading the descriptors.
    pub problems: Vec<String>,
}

/// The indexes of every populated zone.
pub fn extfrag(gs: &GuestState<'_>) -> ExtfragReport {
    let b = buddyinfo(gs);
    let zones = b
        .zones
        .iter()
        .map(|z| {
            let mut unusable = [0; NR_ORDERS];
            let mut fragmentation = [0; NR_ORDERS];
            for order in 0..NR_ORDERS {
                // Linux's `fill_contig_page_info` over the counted blocks.
                let mut info = ContigPageInfo::default();
                for (o, &n) in z.free.iter().enumerate() {
                    info.free_blocks_total += n;
                    info.free_pages += n << o;
                    if o >= order {
                        info.free_blocks_suitable += n << (o - order);
                    }
                }
                unusable[order] = info.unusable_free_index(order as u8);
                fragmentation[order] = info.fragmentation_index(order as u8);
            }
            ZoneFrag { node: z.node, zone: z.zone, unusable, fragmentation }
        })
        .collect();
    ExtfragReport { zones, problems: b.problems }
}

/// Thousandths as Linux prints the indexes (`0.530`, `-1.000`).
fn milli(v: i64) -> String {
    format!("{}{}.{:03}", if v < 0 { "-" } else { "" }, v.unsigned_abs() / 1000, v.unsigned_abs() % 1000)
}

impl ExtfragReport {
    /// The two debugfs files, one after the other, in the guest's format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (title, unusable) in [("unusable_index:", true), ("extfrag_index:", false)] {
            let _ = writeln!(s, "{title}");
            for z in &self.zones {
                let _ = write!(s, "Node {}, zone {:>8}", z.node, z.zone);
                for v in if unusable { z.unusable } else { z.fragmentation } {
                    let _ = write!(s, " {}", milli(v));
                }
                s.push('\n');
            }
        }
        for p in &self.problems {
            let _ = writeln!(s, "problem: {p}");
        }
        s
    }
}

/// The pageblock migratetype array the guest publishes (descriptor
/// version 5, `HugeDesc`): one `MigrateType as u8` per pageblock, and the
/// pfn the first one starts at. Empty when the guest does not group by
/// mobility.
pub fn pageblock_types(gs: &GuestState<'_>) -> Result<(Vec<u8>, u64), String> {
    let h = &gs.desc.huge;
    if h.pageblocks_va == 0 || h.nr_pageblocks == 0 {
        return Ok((Vec::new(), 0));
    }
    // One byte per 2 MiB of the descriptor array's range, at most.
    let most = (gs.desc.nr_pfns >> PAGEBLOCK_ORDER) + 1;
    if h.nr_pageblocks > most || h.pageblock_order != PAGEBLOCK_ORDER as u64 {
        return Err(format!(
            "the descriptor's pageblock array ({} blocks of order {}) does not fit its {} frames: the descriptor is corrupt",
            h.nr_pageblocks, h.pageblock_order, gs.desc.nr_pfns
        ));
    }
    let mut v = vec![0u8; h.nr_pageblocks as usize];
    super::swapcheck::Kva::new(gs).read(h.pageblocks_va, &mut v).map_err(|e| format!("the pageblock array: {e}"))?;
    Ok((v, h.pageblock_base_pfn))
}

/// One zone of the `pagetypeinfo` view.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneTypes {
    /// Its NUMA node (0 without NUMA).
    pub node: u8,
    /// "DMA", "DMA32", "Normal".
    pub zone: &'static str,
    /// Free blocks per migratetype (unmovable, movable, reclaimable) and
    /// order, by the list each free block is on (its head's descriptor).
    pub free: [[u64; NR_ORDERS]; MIGRATE_TYPES],
    /// Pageblocks per migratetype (from the pageblock array).
    pub pageblocks: [u64; MIGRATE_TYPES],
}

/// The `pagetypeinfo` view (/proc/pagetypeinfo), from the page
/// descriptors and the pageblock array the guest publishes.
#[derive(Debug, Clone, Serialize)]
pub struct PagetypeinfoReport {
    /// Populated zones.
    pub zones: Vec<ZoneTypes>,
    /// Oddities met reading the descriptors.
    pub problems: Vec<String>,
}

/// Counts free blocks per migratetype and pageblocks per type.
pub fn pagetypeinfo(gs: &GuestState<'_>) -> Result<PagetypeinfoReport, String> {
    let (types, base) = pageblock_types(gs)?;
    if types.is_empty() {
        return Err("the guest publishes no pageblock array (it does not group pages by mobility)".into());
    }
    let mut zones: Vec<ZoneTypes> = (0..MAX_NUMNODES * NR_ZONES)
        .map(|i| ZoneTypes {
            node: (i / NR_ZONES) as u8,
            zone: ZONE_NAMES[i % NR_ZONES],
            free: [[0; NR_ORDERS]; MIGRATE_TYPES],
            pageblocks: [0; MIGRATE_TYPES],
        })
        .collect();
    // Each zone's span: its first to its last managed frame (as the
    // guest's `zone->start_pfn`/`end_pfn`); every pageblock it touches
    // counts, reserved frames and all, as Linux's pagetypeinfo does.
    let mut span = [(u64::MAX, 0u64); MAX_NUMNODES * NR_ZONES];
    for b in &gs.blocks {
        let z = zone_key(gs, b.pfn);
        span[z] = (span[z].0.min(b.pfn), span[z].1.max(b.end_pfn()));
        if b.kind == BlockKind::Free {
            let mt = (gs.page(b.pfn).frozen as usize).min(MIGRATE_TYPES - 1);
            zones[z].free[mt][b.order as usize] += 1;
        }
    }
    for (z, &(start, end)) in span.iter().enumerate() {
        let mut pfn = start & !((1u64 << PAGEBLOCK_ORDER) - 1);
        while pfn < end {
            if let Some(&t) = pfn.checked_sub(base).and_then(|i| types.get((i >> PAGEBLOCK_ORDER) as usize)) {
                zones[z].pageblocks[MigrateType::from_u8(t) as usize] += 1;
            }
            pfn += 1 << PAGEBLOCK_ORDER;
        }
    }
    let zones = zones.into_iter().zip(span).filter(|(_, (s, _))| *s != u64::MAX).map(|(z, _)| z).collect();
    Ok(PagetypeinfoReport { zones, problems: gs.problems.clone() })
}

impl PagetypeinfoReport {
    /// /proc/pagetypeinfo in the guest's (Linux's) layout.
    pub fn render(&self) -> String {
        let mut s =
            String::from("Page block order: 9\nPages per block:  512\n\nFree pages count per migrate type at order ");
        for o in 0..NR_ORDERS {
            let _ = write!(s, "{o:>6}");
        }
        s.push_str(" \n");
        for z in &self.zones {
            for mt in MigrateType::ALL {
                let _ = write!(s, "Node {:>4}, zone {:>8}, type {:>12}", z.node, z.zone, mt.name());
                for n in z.free[mt as usize] {
                    let _ = write!(s, " {n:>6}");
                }
                s.push_str(" \n");
            }
        }
        s.push_str("\nNumber of blocks type    ");
        for mt in MigrateType::ALL {
            let _ = write!(s, " {:>12}", mt.name());
        }
        s.push('\n');
        for z in &self.zones {
            let _ = write!(s, "Node {}, zone {:>8}    ", z.node, z.zone);
            for n in z.pageblocks {
                let _ = write!(s, " {n:>12}");
            }
            s.push('\n');
        }
        for p in &self.problems {
            let _ = writeln!(s, "problem: {p}");
        }
        s
    }
}

/// One cache of the `slabinfo` view.
#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    /// Cache name.
    pub name: String,
    /// Objects in use.
    pub active_objs: u64,
    /// Objects in all slabs.
    pub num_objs: u64,
    /// Bytes per object with metadata (what Linux prints as objsize).
    pub objsize: u32,
    /// Bytes the user asked for.
    pub object_size: u32,
    /// Objects per slab.
    pub objperslab: u32,
    /// Pages per slab.
    pub pagesperslab: u64,
    /// Slabs with an object in use.
    pub active_slabs: u64,
    /// Slabs.
    pub num_slabs: u64,
    /// Pages in slabs.
    pub pages: u64,
}

/// The `slabinfo` view.
#[derive(Debug, Clone, Serialize)]
pub struct SlabinfoReport {
    /// Caches in the guest's order.
    pub caches: Vec<CacheReport>,
    /// Slab pages whose cache the descriptor does not list.
    pub orphan_slabs: u64,
}

/// Per cache from the descriptor's list and the slab heads.
pub fn slabinfo(gs: &GuestState<'_>) -> SlabinfoReport {
    let mut caches: Vec<CacheReport> = gs
        .caches()
        .iter()
        .map(|c| CacheReport {
            name: crate::devices::results::escape(c.name()),
            active_objs: 0,
            num_objs: 0,
            objsize: c.size,
            object_size: c.object_size,
            objperslab: c.objects_per_slab,
            pagesperslab: 1u64 << c.order.min(63),
            active_slabs: 0,
            num_slabs: 0,
            pages: 0,
        })
        .collect();
    let mut orphan_slabs = 0;
    for b in &gs.blocks {
        let BlockKind::Slab { cache, inuse, objects } = b.kind else { continue };
        let idx = gs.caches().iter().position(|c| cache != 0 && c.id == (cache - 1) as u32);
        let Some(r) = idx.map(|i| &mut caches[i]) else {
            orphan_slabs += 1;
            continue;
        };
        r.active_objs += inuse as u64;
        r.num_objs += objects as u64;
        r.active_slabs += (inuse > 0) as u64;
        r.num_slabs += 1;
        r.pages += 1 << b.order;
    }
    SlabinfoReport { caches, orphan_slabs }
}

impl SlabinfoReport {
    /// /proc/slabinfo version 2.1, as the guest (and SLUB) prints it.
    pub fn render(&self) -> String {
        let mut s = String::from("slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n");
        for c in &self.caches {
            let _ = writeln!(
                s,
                "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
                c.name,
                c.active_objs,
                c.num_objs,
                c.objsize,
                c.objperslab,
                c.pagesperslab,
                0,
                0,
                0,
                c.active_slabs,
                c.num_slabs,
                0
            );
        }
        if self.orphan_slabs > 0 {
            let _ = writeln!(s, "problem: {} slabs belong to no cache the descriptor lists", self.orphan_slabs);
        }
        s
    }
}

/// The `meminfo` view: frames by where they went, in KiB.
#[derive(Debug, Clone, Serialize)]
pub struct MeminfoReport {
    /// Usable RAM (the E820 map's RAM entries).
    pub mem_total_kb: u64,
    /// Free: on the free lists and the per-CPU lists.
    pub mem_free_kb: u64,
    /// /proc/meminfo's MemAvailable: free plus deferred (memory an
    /// allocation can get without reclaim; nothing here is reclaimable).
    pub mem_available_kb: u64,
    /// /proc/meminfo's VmallocTotal: the vmalloc window's size.
    pub vmalloc_total_kb: u64,
    /// Of which on per-CPU lists.
    pub pcp_kb: u64,
    /// Handed to the buddy allocator.
    pub managed_kb: u64,
    /// Not yet handed to the buddy allocator (deferred page init).
    pub deferred_kb: u64,
    /// Allocated (managed - free).
    pub allocated_kb: u64,
    /// In slabs.
    pub slab_kb: u64,
    /// Page tables: boot-time (memblock) plus allocated ones owned `PageTable`.
    pub page_tables_kb: u64,
    /// Boot-time page tables (the descriptor's count).
    pub boot_page_tables_kb: u64,
    /// Backing vmalloc areas.
    pub vmalloc_kb: u64,
    /// Anonymous user memory.
    pub user_anon_kb: u64,
    /// The page cache (blocks owned `PageCache`).
    pub page_cache_kb: u64,
    /// /proc/meminfo's Hugetlb: blocks owned `HugeTlb` (the pool), from
    /// the page descriptors.
    pub hugetlb_kb: u64,
    /// HugePages_Total, as the guest's pool counts it (descriptor).
    pub hugepages_total: u64,
    /// HugePages_Free.
    pub hugepages_free: u64,
    /// HugePages_Rsvd.
    pub hugepages_rsvd: u64,
    /// HugePages_Surp.
    pub hugepages_surp: u64,
    /// Hugepagesize: the default pool's page size (`default_hugepagesz=`).
    pub hugepagesize_kb: u64,
    /// kmalloc requests too large for a cache.
    pub kmalloc_large_kb: u64,
    /// Allocated and owned `Reserved`.
    pub reserved_owned_kb: u64,
    /// Allocated with no owner recorded.
    pub other_kb: u64,
    /// RAM never handed to the buddy allocator and not deferred: kernel
    /// image, first MiB, boot tables, vmemmap (memblock's reservations).
    pub unmanaged_kb: u64,
    /// The guest's own count of allocated page-table pages, for comparison.
    pub descriptor_table_pages: u64,
}

/// Usable RAM as the E820 map reports it for this guest's memory, in
/// whole pages.
pub fn e820_total(mem: &GuestMemoryMmap) -> u64 {
    let ram: u64 = mem.iter().filter(|r| r.start_addr().0 != layout::FIRMWARE_BASE).map(|r| r.len()).sum();
    // Whole pages only, as the guest's memblock counts them.
    layout::e820_map(ram, false)
        .iter()
        .filter(|e| e.kind == layout::E820_RAM)
        .map(|e| ((e.addr + e.size) & !0xfff).saturating_sub((e.addr + 0xfff) & !0xfff))
        .sum()
}

/// Adds up the blocks by owner.
pub fn meminfo(gs: &GuestState<'_>) -> MeminfoReport {
    // Saturating: the descriptor's own counts (deferred and boot-table
    // pages) are whatever the guest wrote.
    let kb = |pages: u64| pages.saturating_mul(4);
    let (mut managed, mut free, mut pcp, mut slab, mut pt, mut vm, mut user, mut large, mut res, mut other, mut cache) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut hugetlb = 0u64;
    for b in &gs.blocks {
        let n = 1u64 << b.order;
        managed += n;
        match b.kind {
            BlockKind::Free => free += n,
            BlockKind::Pcp => pcp += n,
            BlockKind::Slab { .. } => slab += n,
            BlockKind::Allocated(o) => match o {
                PageOwner::PageTable => pt += n,
                PageOwner::Vmalloc => vm += n,
                PageOwner::UserAnon => user += n,
                PageOwner::HugeTlb => hugetlb += n,
                PageOwner::KmallocLarge => large += n,
                PageOwner::Reserved => res += n,
                PageOwner::Slab => slab += n,
                PageOwner::Unknown => other += n,
                PageOwner::PageCache => cache += n,
            },
        }
    }
    let total = e820_total(gs.memory());
    let deferred = gs.desc.deferred_pages;
    let boot_tables = gs.desc.boot_table_pages;
    MeminfoReport {
        mem_total_kb: total >> 10,
        mem_free_kb: kb(free + pcp),
        mem_available_kb: kb((free + pcp).saturating_add(deferred)),
        vmalloc_total_kb: gs.desc.vmalloc_va.end.saturating_sub(gs.desc.vmalloc_va.start) >> 10,
        pcp_kb: kb(pcp),
        managed_kb: kb(managed),
        deferred_kb: kb(deferred),
        allocated_kb: kb(managed - free - pcp),
        slab_kb: kb(slab),
        page_tables_kb: kb(pt.saturating_add(boot_tables)),
        boot_page_tables_kb: kb(boot_tables),
        vmalloc_kb: kb(vm),
        user_anon_kb: kb(user),
        page_cache_kb: kb(cache),
        hugetlb_kb: kb(hugetlb),
        hugepages_total: gs.desc.huge.hugepages_total,
        hugepages_free: gs.desc.huge.hugepages_free,
        hugepages_rsvd: gs.desc.huge.hugepages_rsvd,
        hugepages_surp: gs.desc.huge.hugepages_surp,
        // A guest that never published its pool size has only 2 MiB pages.
        hugepagesize_kb: match gs.desc.huge.hugepage_size_kb {
            0 => 2048,
            kb => kb,
        },
        kmalloc_large_kb: kb(large),
        reserved_owned_kb: kb(res),
        other_kb: kb(other),
        unmanaged_kb: (total >> 10).saturating_sub(kb(managed.saturating_add(deferred))),
        descriptor_table_pages: gs.desc.table_pages,
    }
}

impl MeminfoReport {
    /// /proc/meminfo's own fields first, in its order and with its names
    /// (the ones this kernel has: no page cache), then
    /// this kernel's extras. The guest's `meminfo` prints the same lines
    /// from its own counters, so the two can be compared line by line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut line = |name: &str, v: u64| {
            let _ = writeln!(s, "{:<16}{v:>8} kB", format!("{name}:"));
        };
        for (name, v) in [
            ("MemTotal", self.mem_total_kb),
            ("MemFree", self.mem_free_kb),
            ("MemAvailable", self.mem_available_kb),
            ("Buffers", 0),
            ("Cached", self.page_cache_kb),
            ("AnonPages", self.user_anon_kb),
            ("Slab", self.slab_kb),
            ("PageTables", self.page_tables_kb),
            ("VmallocTotal", self.vmalloc_total_kb),
        ] {
            line(name, v);
        }
        for (name, v) in [
            ("HugePages_Total", self.hugepages_total),
            ("HugePages_Free", self.hugepages_free),
            ("HugePages_Rsvd", self.hugepages_rsvd),
            ("HugePages_Surp", self.hugepages_surp),
        ] {
            let _ = writeln!(s, "{:<16}{v:>8}", format!("{name}:"));
        }
        let _ =
            writeln!(s, "Hugepagesize:   {:>8} kB\nHugetlb:        {:>8} kB", self.hugepagesize_kb, self.hugetlb_kb);
        let mut line = |name: &str, v: u64| {
            let _ = writeln!(s, "{:<16}{v:>8} kB", format!("{name}:"));
        };
        for (name, v) in [
            ("MemManaged", self.managed_kb),
            ("Deferred", self.deferred_kb),
            ("Allocated", self.allocated_kb),
            ("PcpFree", self.pcp_kb),
            ("BootPageTables", self.boot_page_tables_kb),
            ("VmallocPages", self.vmalloc_kb),
            ("KmallocLarge", self.kmalloc_large_kb),
            ("ReservedOwned", self.reserved_owned_kb),
            ("OtherKernel", self.other_kb),
            ("Unmanaged", self.unmanaged_kb),
        ] {
            line(name, v);
        }
        s
    }
}

/// One process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcRow {
    /// Process id.
    pub pid: u32,
    /// Parent.
    pub ppid: u32,
    /// State in words.
    pub state: &'static str,
    /// Exit status (zombies).
    pub exit_code: u32,
    /// Address-space root.
    #[serde(serialize_with = "super::views::hex")]
    pub cr3: u64,
    /// Resident pages.
    pub rss: u64,
    /// Page faults.
    pub faults: u64,
    /// The OOM killer's adjustment (-1000..=1000).
    pub oom_score_adj: i32,
    /// Name.
    pub name: String,
}

/// The `ps` view.
#[derive(Debug, Clone, Serialize)]
pub struct PsReport {
    /// Whether the guest publishes a process table at all.
    pub table: bool,
    /// Live entries.
    pub procs: Vec<ProcRow>,
}

/// The process table.
pub fn ps(gs: &GuestState<'_>) -> Result<PsReport, String> {
    let Some(procs) = gs.procs().map_err(|e| e.to_string())? else {
        return Ok(PsReport { table: false, procs: vec![] });
    };
    let procs = procs
        .iter()
        .map(|p| {
            let n = p.name.iter().position(|&b| b == 0).unwrap_or(p.name.len());
            ProcRow {
                pid: p.pid,
                ppid: p.ppid,
                state: mm_core::abi::proc::state_name(p.state),
                exit_code: p.exit_code,
                cr3: p.cr3,
                rss: p.rss,
                faults: p.faults,
                oom_score_adj: p.oom_score_adj,
                // Guest text: escaped before it can reach a terminal.
                name: crate::devices::results::escape(&String::from_utf8_lossy(&p.name[..n])),
            }
        })
        .collect();
    Ok(PsReport { table: true, procs })
}

impl PsReport {
    /// One line per process.
    pub fn render(&self) -> String {
        if !self.table {
            return "no processes yet: the guest publishes no process table (it has not started any process)\n".into();
        }
        let mut s = format!(
            "{:>5} {:>5} {:<9} {:>18} {:>6} {:>7} {:>13}  name\n",
            "pid", "ppid", "state", "cr3", "rss", "faults", "oom_score_adj"
        );
        for p in &self.procs {
            let _ = writeln!(
                s,
                "{:>5} {:>5} {:<9} {:>#18x} {:>6} {:>7} {:>13}  {}{}",
                p.pid,
                p.ppid,
                p.state,
                p.cr3,
                p.rss,
                p.faults,
                p.oom_score_adj,
                p.name,
                if p.state == "zombie" { format!(" (exit {})", p.exit_code) } else { String::new() }
            );
        }
        if self.procs.is_empty() {
            s.push_str("(the process table is empty)\n");
        }
        s
    }
}

/// The `vmstat` view: the guest's event counters (/proc/vmstat), as its
/// descriptor carries them at this checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct VmstatReport {
    /// In /proc/vmstat's order.
    pub counters: Vec<VmCounter>,
}

/// One counter.
#[derive(Debug, Clone, Serialize)]
pub struct VmCounter {
    /// Linux's name.
    pub name: &'static str,
    /// Events since boot.
    pub value: u64,
}

/// The counters.
pub fn vmstat(gs: &GuestState<'_>) -> VmstatReport {
    let names = mm_core::descriptor::VM_EVENT_NAMES;
    let counters = names.iter().zip(gs.desc.vmstat.iter()).map(|(&name, &value)| VmCounter { name, value }).collect();
    VmstatReport { counters }
}

impl VmstatReport {
    /// /proc/vmstat style: `name value` lines.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.counters {
            let _ = writeln!(s, "{} {}", c.name, c.value);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_core::descriptor::{MmDescriptor, Wire, DESCRIPTOR_SIZE, PAGE_DESC_SIZE};
    use vm_memory::{Bytes, GuestAddress};

    /// Found by the `guest_state` fuzz target (reproducer in
    /// vmm/fuzz/corpus/guest_state/meminfo-deferred-overflow): a
    /// descriptor claiming 2^62 or more deferred (or boot-table) pages
    /// overflowed meminfo's page-to-KiB product, a panic in a debug build
    /// of the VMM on what the guest wrote.
    #[test]
    fn meminfo_survives_huge_counts_in_the_descriptor() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 10)]).unwrap();
        let mut d = MmDescriptor::new();
        d.size = DESCRIPTOR_SIZE as u32;
        d.page_desc_size = PAGE_DESC_SIZE as u32;
        d.deferred_pages = u64::MAX / 3;
        d.boot_table_pages = u64::MAX;
        let mut b = vec![0u8; DESCRIPTOR_SIZE];
        d.encode(&mut b);
        mem.write_slice(&b, GuestAddress(0x1000)).unwrap();
        let gs = GuestState::read(&mem, Some(0x1000), &mm_core::paging::CpuContext::kernel(mm_core::addr::PhysAddr(0)))
            .unwrap();
        let m = meminfo(&gs);
        assert_eq!((m.mem_available_kb, m.page_tables_kb), (u64::MAX, u64::MAX));
        assert!(m.render().contains("MemAvailable"));
    }
}
