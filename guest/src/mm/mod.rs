//! The kernel's memory manager, Linux's design at small scale:
//! E820 -> memblock -> own page tables -> buddy (zones, pcp) -> slab and
//! kmalloc (the Rust heap) -> vmalloc. The algorithms are mm-core's; this
//! module is the glue that runs them on real (virtual) hardware.

pub mod bench;
pub mod compaction;
pub mod descriptor;
pub mod fault;
pub mod fail_page_alloc;
pub mod faultlog;
pub mod heap;
pub mod huge_memory;
pub mod hugetlb;
pub mod kcompactd;
pub mod layout;
pub mod memblock;
pub mod memcg;
pub mod migrate;
pub mod numa;
pub mod oom_kill;
pub mod overcommit;
pub mod page_alloc;
pub mod paging;
pub mod percpu;
pub mod phys;
pub mod procfs;
pub mod sabotage;
pub mod swap;
pub mod tlbtrace;
pub mod vmalloc;
pub mod vmscan;
pub mod vmstat;

use crate::arch::percpu::this_cpu;
use crate::boot::BootParams;
use crate::fmt::Dec;
use crate::kprintln;
use crate::sync::{rank, SpinLock};
use layout::PAGE_OFFSET;
use memblock::Memblock;
use mm_core::addr::{PhysAddr, PAGE_SHIFT, PAGE_SIZE};
use mm_core::buddy::{BuddyAllocator, PageOwner};
use mm_core::lru::{LruError, LruNode, LruSet, Shadow};
use mm_core::page_ext::PageExt;
use mm_core::paging::{FrameAllocator, Mapper};
use mm_core::slab::{SlabAllocator, SlabFlags};
pub use page_alloc::{GfpMask, GFP_DMA, GFP_DMA32, GFP_KERNEL};
use phys::KernelPhys;

/// The page allocators: buddy (with its zones and pcp lists) and slab.
pub struct PageAlloc {
    /// Linux's zoned buddy allocator.
    pub buddy: BuddyAllocator<'static>,
    /// SLUB with the kmalloc caches.
    pub slab: SlabAllocator,
    /// Physical memory through the direct map.
    pub phys: KernelPhys,
    /// The LRU lists of user pages: an lruvec per (NUMA node, memory
    /// cgroup), as Linux's `mem_cgroup_lruvec`, all over the one
    /// vmemmap-side link array (ids: `mm_core::lru::lruvec_id`). Under
    /// this lock because freeing a user page takes it off its list.
    pub lru: LruSet<&'static mut [LruNode]>,
    /// Per-pfn anon rmap and swap-cache fields (Linux's `page->mapping`,
    /// `page->index`, `folio->swap`).
    pub ext: &'static mut [PageExt],
}

impl PageAlloc {
    /// The lruvec a user page at `pfn` belongs on (Linux's
    /// `folio_lruvec`: `mem_cgroup_lruvec(folio_memcg, folio_nid)`): its
    /// node's, for the group it is charged to (the root's when it is not).
    pub fn lruvec_id_of(&self, pfn: u64) -> u16 {
        let node = self.buddy.node_of_pfn(pfn) as usize;
        let memcg = self.buddy.page(pfn).and_then(mm_core::memcg::tag).map_or(0, |(m, _)| m);
        mm_core::lru::lruvec_id(node, memcg)
    }

    /// `folio_add_lru`: a new user page joins its lruvec's inactive list.
    pub fn lru_add(&mut self, pfn: u64, anon: bool) -> Result<(), LruError> {
        let id = self.lruvec_id_of(pfn);
        self.lru.folio_add_lru(id, pfn, anon)
    }

    /// A page read back in joins its lruvec, judged as a refault there
    /// (`Lruvec::folio_add_lru_refault`); whether it was activated.
    pub fn lru_add_refault(&mut self, pfn: u64, anon: bool, shadow: Shadow, swap_on: bool) -> Result<bool, LruError> {
        let id = self.lruvec_id_of(pfn);
        self.lru.folio_add_lru_refault(id, pfn, anon, shadow, swap_on)
    }
}

/// Boot-time facts for meminfo and the benchmarks.
#[derive(Clone, Copy, Default)]
pub struct MmStats {
    /// RAM from the E820 map.
    pub total_ram: u64,
    /// Page-table pages of the kernel's own tables at boot.
    pub boot_table_pages: u64,
    /// RAM backing vmemmap.
    pub vmemmap_bytes: u64,
    /// Bytes reserved by memblock (kernel image, first MiB, tables, vmemmap).
    pub reserved_bytes: u64,
    /// Page-table pages allocated from the buddy allocator since boot and
    /// not freed (vmalloc's tables, later processes').
    pub table_pages: u64,
}

/// The page allocators.
pub static PAGES: SpinLock<PageAlloc> = SpinLock::new_irqsafe("the page allocator", rank::PAGES);
/// The kernel's page tables.
pub static KERNEL_PT: SpinLock<Mapper> = SpinLock::new_irqsafe("the kernel page tables", rank::KERNEL_PT);
/// Boot-time figures.
pub static STATS: SpinLock<MmStats> = SpinLock::new_irqsafe("the mm statistics", rank::STATS);

/// Brings up memory management from the E820 map.
pub fn init(params: &BootParams) {
    let mut memblock = Memblock::from_e820(params.memmap());
    let (kstart, kend) = layout::KernelImage::get().phys();
    memblock.reserve(kstart, kend);
    // The initrd stays where the loader put it: its files are read there
    // (fs/), never copied.
    if let Some((start, end)) = params.initrd() {
        memblock.reserve(start, end);
    }
    let total_ram = memblock.total();
    procfs::record_zone_spans(memblock.memory.iter());

    // RAM above DEFER_ABOVE, in whole 2 MiB pages, is initialised (and
    // direct-mapped) on demand.
    let mut lazy = [(0u64, 0u64); 64];
    let mut nl = 0;
    for r in memblock.memory.iter() {
        let lo = (r.start.max(DEFER_ABOVE) + HUGE - 1) & !(HUGE - 1);
        let hi = r.end & !(HUGE - 1);
        if lo < hi && nl < lazy.len() {
            lazy[nl] = (lo, hi);
            nl += 1;
        }
    }
    let lazy = &lazy[..nl];
    let tables = match paging::init(&mut memblock, lazy) {
        Ok(t) => t,
        Err(e) => panic!("cannot build the kernel page tables: {}", e),
    };
    let end_of_ram = memblock.end_of_ram();
    // SAFETY: the direct map now covers all RAM at PAGE_OFFSET.
    let phys = unsafe { KernelPhys::new(PAGE_OFFSET, end_of_ram) };
    phys::set_direct_map_end(end_of_ram);

    // Pageblock migratetypes (Linux's `pageblock_flags`, one byte per
    // 2 MiB here): from memblock like vmemmap's arrays, below the deferred
    // part so the direct map reaches it now. The buddy allocator groups
    // pages by mobility, so user pages (movable) and kernel ones
    // (unmovable) fill separate pageblocks and compaction can empty the
    // movable ones.
    let nr_pfns = tables.mem_map.len();
    let pb_len = mm_core::buddy::pageblock_storage_len(0, nr_pfns);
    let pb_bytes = (pb_len as u64 + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    let Some(pb_pa) = memblock.alloc(pb_bytes.max(PAGE_SIZE), PAGE_SIZE, DEFER_ABOVE) else {
        panic!("cannot reserve {} bytes for the pageblock migratetypes", Dec(pb_bytes));
    };
    // SAFETY: memblock just reserved these bytes (never given to the buddy
    // allocator), below DEFER_ABOVE, so inside the direct map built above;
    // nothing else refers to them.
    let pageblocks = unsafe { core::slice::from_raw_parts_mut(phys_to_virt(pb_pa) as *mut u8, pb_len) };
    // Per-CPU page lists and slabs for every CPU the firmware lists (Linux's
    // possible CPUs), before the others are started.
    let nr_cpus = params.cpus().map_or(1, |t| t.count).clamp(1, crate::arch::percpu::MAX_CPUS);
    // The fast paths of mm/percpu.rs write cached pages' descriptors.
    percpu::init(tables.mem_map.as_mut_ptr(), tables.mem_map.len());
    let mut buddy = match BuddyAllocator::with_mobility(tables.mem_map, pageblocks, 0, nr_cpus) {
        Ok(b) => b,
        Err(e) => panic!("cannot create the buddy allocator: {}", e),
    };
    // Each CPU's page lists live outside the allocator (mm/percpu.rs), so
    // that its fast paths take no shared lock; the zone's own pcp lists,
    // reachable only under the lock, stay off.
    buddy.set_pcp_enabled(false);
    // A set of zones per NUMA node (pg_data_t), before any memory goes in.
    if let Err(e) = buddy.set_node_layout(numa::layout(nr_cpus)) {
        panic!("cannot split the buddy allocator into nodes: {}", e);
    }
    let mut reserved_bytes = 0;
    for r in memblock.reserved.iter() {
        reserved_bytes += r.end.min(end_of_ram).saturating_sub(r.start);
    }
    // Deferred page init (Linux's CONFIG_DEFERRED_STRUCT_PAGE_INIT): only
    // the first BOOT_INIT_PAGES go to the buddy allocator now; the rest is
    // handed over a chunk at a time when an allocation finds the zones
    // empty (`deferred_grow_zone`), so boot cost does not grow with RAM.
    let mut deferred = Deferred { ranges: [(0, 0); 64], n: 0, next: 0, pages: 0, mapped_to: 0 };
    let mut freed = 0;
    memblock.for_each_free(|start, end| {
        // Split the free range at the lazy parts: outside them now,
        // inside them later.
        let mut cur = start;
        while cur < end {
            let inside = lazy.iter().find(|&&(ls, le)| cur >= ls && cur < le).copied();
            let next = match inside {
                Some((_, le)) => le.min(end),
                None => lazy.iter().map(|&(ls, _)| ls).filter(|&ls| ls > cur).min().unwrap_or(end).min(end),
            };
            let (s, e) = (cur >> PAGE_SHIFT, next >> PAGE_SHIFT);
            if s < e {
                if inside.is_some() {
                    if deferred.n < deferred.ranges.len() {
                        deferred.ranges[deferred.n] = (s, e);
                        deferred.n += 1;
                        deferred.pages += e - s;
                    }
                } else {
                    if let Err(err) = buddy.free_range(s, e) {
                        panic!("memblock_free_all: {}", err);
                    }
                    freed += e - s;
                }
            }
            cur = next;
        }
    });
    DEFERRED.set(deferred);
    let mut slab = SlabAllocator::new(nr_cpus);
    if let Err(e) = slab.create_kmalloc_caches(SlabFlags::default()) {
        panic!("cannot create the kmalloc caches: {}", e);
    }
    let lru = match LruSet::with_storage(tables.lru_map, 0) {
        Ok(l) => l,
        Err(e) => panic!("cannot create the LRU lists: {}", e),
    };
    PAGES.set(PageAlloc { buddy, slab, phys, lru, ext: tables.page_ext });
    KERNEL_PT.set(tables.mapper);
    STATS.set(MmStats {
        total_ram,
        boot_table_pages: tables.table_pages,
        vmemmap_bytes: tables.vmemmap_bytes,
        reserved_bytes,
        table_pages: 0,
    });
    vmalloc::init();
    // The lruvecs themselves, now that the heap works (its allocations
    // take the page allocator's lock, so not under it): one per node and
    // memory cgroup, before any user page exists.
    let nr_vecs = PAGES.with(|p| p.buddy.nr_nodes()) * mm_core::memcg::MAX_MEMCG;
    let vecs = match LruSet::<&'static mut [LruNode]>::fresh_lruvecs(nr_vecs) {
        Ok(v) => v,
        Err(e) => panic!("cannot create the lruvecs: {}", e),
    };
    if let Err(e) = PAGES.with(|p| p.lru.set_lruvecs(vecs)) {
        panic!("cannot install the lruvecs: {}", e);
    }
    descriptor::publish();
    let deferred_pages = DEFERRED.with(|d| d.pages);
    kprintln!(
        "Memory: {}K/{}K available ({}K deferred, {}K reserved: kernel, first MiB, {} page-table pages, {}K vmemmap)",
        Dec(freed * 4),
        Dec(total_ram >> 10),
        Dec(deferred_pages * 4),
        Dec(reserved_bytes >> 10),
        Dec(tables.table_pages),
        Dec(tables.vmemmap_bytes >> 10),
    );
}

/// RAM below this is initialised at boot; above it, on demand.
pub const DEFER_ABOVE: u64 = 256 << 20;
/// A 2 MiB page.
const HUGE: u64 = 2 << 20;
/// Pages handed over per deferred step (1 GiB).
const DEFERRED_CHUNK_PAGES: u64 = (1 << 30) >> PAGE_SHIFT;

/// Free memory not yet given to the buddy allocator.
pub struct Deferred {
    ranges: [(u64, u64); 64],
    n: usize,
    next: usize,
    /// Pages still deferred.
    pub pages: u64,
    /// The direct map covers deferred RAM up to here.
    mapped_to: u64,
}

/// The deferred free ranges.
pub static DEFERRED: SpinLock<Deferred> = SpinLock::new_irqsafe("the deferred memory", rank::DEFERRED);

/// Hands the next deferred chunk to `p`'s buddy allocator (Linux's
/// `deferred_grow_zone`): the pages handed over, None when nothing is
/// left. Only the allocation slow path (page_alloc.rs) calls it.
fn grow_locked(p: &mut PageAlloc) -> Option<u64> {
    DEFERRED.with(|d| {
        while d.next < d.n {
            let (s, e) = d.ranges[d.next];
            if s >= e {
                d.next += 1;
                continue;
            }
            let chunk_end = e.min(s + DEFERRED_CHUNK_PAGES);
            // Direct-map the chunk first (whole 2 MiB pages; the ranges lie
            // inside 2 MiB-aligned lazy parts).
            let map_start = ((s << PAGE_SHIFT) & !(HUGE - 1)).max(d.mapped_to);
            let map_end = ((chunk_end << PAGE_SHIFT) + HUGE - 1) & !(HUGE - 1);
            if map_start < map_end {
                let mapper = KERNEL_PT.with(|m| *m);
                if let Err(err) = paging::map_deferred(&mapper, &mut p.phys, map_start, map_end) {
                    panic!("deferred_grow_zone: direct map: {}", err);
                }
                d.mapped_to = map_end;
            }
            if let Err(err) = p.buddy.free_range(s, chunk_end) {
                panic!("deferred_grow_zone: {}", err);
            }
            d.ranges[d.next].0 = chunk_end;
            d.pages -= chunk_end - s;
            return Some(chunk_end - s);
        }
        None
    })
}

/// The kernel-virtual address of physical `pa` (direct map).
pub fn phys_to_virt(pa: u64) -> u64 {
    PAGE_OFFSET + pa
}

/// The physical address of a direct-map address.
pub fn virt_to_phys(va: u64) -> u64 {
    va - PAGE_OFFSET
}

/// Page-table pages from the buddy allocator, marked as such.
pub struct BuddyFrames<'a>(pub &'a mut PageAlloc);

impl BuddyFrames<'_> {
    /// A cleared page-table page allocated with `gfp` (a process's tables
    /// follow its NUMA policy: proc/fault.rs's `PtFrames`).
    pub fn allocate_frame_with(&mut self, gfp: GfpMask) -> Option<PhysAddr> {
        let pfn = page_alloc::alloc_pages_locked(self.0, 0, gfp).ok()?;
        let _ = self.0.buddy.set_owner(pfn, PageOwner::PageTable);
        memcg::charge(&mut self.0.buddy, pfn, memcg::ChargeKind::PageTable);
        STATS.with(|s| s.table_pages += 1);
        let pa = pfn << PAGE_SHIFT;
        // SAFETY: a page just allocated, reached through the direct map.
        unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u64, 0, (PAGE_SIZE / 8) as usize) };
        Some(PhysAddr(pa))
    }
}

impl FrameAllocator for BuddyFrames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysAddr> {
        self.allocate_frame_with(GFP_KERNEL)
    }

    /// Cleared above: the mapper need not clear them again.
    fn zeroes_frames(&self) -> bool {
        true
    }

    fn deallocate_frame(&mut self, frame: PhysAddr) {
        STATS.with(|s| s.table_pages -= 1);
        crate::mm::tlbtrace::free(frame.0 >> PAGE_SHIFT, 0);
        if let Err(e) = self.0.buddy.free_pages(this_cpu().id, frame.0 >> PAGE_SHIFT, 0) {
            panic!("freeing a page-table page: {}", e);
        }
    }
}

/// Allocates 2^order pages; returns the pfn.
pub fn alloc_pages(order: u8, gfp: GfpMask) -> Option<u64> {
    page_alloc::alloc_pages(order, gfp).ok()
}

/// Frees 2^order pages at `pfn`.
pub fn free_pages(pfn: u64, order: u8) -> Result<(), mm_core::buddy::BuddyError> {
    crate::mm::tlbtrace::free(pfn, order);
    if order == 0 && percpu::free_page(pfn) {
        return Ok(());
    }
    PAGES.with(|p| p.buddy.free_pages(this_cpu().id, pfn, order))
}
