//! The descriptor this kernel publishes for the host (mm-core's
//! `MmDescriptor`, the role of Linux's vmcoreinfo): filled once the memory
//! manager is up, refreshed at every checkpoint, so the host can read page
//! descriptors, slab caches, processes and self-test tables itself. The
//! process table is also kept current between checkpoints
//! ([`update_procs`]).

use super::layout::{
    KernelImage, DIRECT_MAP_SIZE, KERNEL_MAP, PAGE_OFFSET, USER_END, VMALLOC_END, VMALLOC_START, VMEMMAP_SIZE,
    VMEMMAP_START,
};
use super::{DEFERRED, KERNEL_PT, PAGES, STATS};
use crate::arch::outl;
use crate::sync::{rank, BootCell, SpinLock};
use mm_core::abi::port;
use mm_core::descriptor::{
    CacheDesc, MmDescriptor, ProcDesc, VaRange, VmaDesc, VmaTableDesc, MAX_CACHE_DESCS, MAX_PROC_DESCS, MAX_VMA_DESCS,
};

static DESC: BootCell<MmDescriptor> = BootCell::new(MmDescriptor::new());
static PROCS: BootCell<[ProcDesc; MAX_PROC_DESCS]> = BootCell::new(
    [ProcDesc {
        pid: 0,
        ppid: 0,
        state: 0,
        exit_code: 0,
        cr3: 0,
        rss: 0,
        faults: 0,
        name: [0; 16],
        oom_score_adj: 0,
        memcg: 0,
    }; MAX_PROC_DESCS],
);

/// Every address space's VMAs, for the host (`--inspect vmas`, the web
/// view): entries `0..count` in use, grouped by nothing in particular
/// (the host picks an address space's by `cr3`).
struct VmaTable {
    entries: [VmaDesc; MAX_VMA_DESCS],
    header: VmaTableDesc,
}

const EMPTY_VMA: VmaDesc =
    VmaDesc { cr3: 0, start: 0, end: 0, pgoff: 0, flags: 0, kind: 0, attrs: 0, ino: 0, name: [0; 32] };

static VMAS: SpinLock<VmaTable> = SpinLock::new_with(
    "the published VMA table",
    rank::STATS,
    VmaTable {
        entries: [EMPTY_VMA; MAX_VMA_DESCS],
        header: VmaTableDesc {
            table: 0,
            capacity: MAX_VMA_DESCS as u32,
            count: 0,
            generation: 0,
            consistent: 1,
            dropped: 0,
            pad: 0,
        },
    },
);

/// Republishes every address space's VMAs: the process layer registers
/// it; [`refresh`] runs it at every checkpoint.
static VMA_FILLER: SpinLock<Option<fn()>> = SpinLock::new_with("the VMA-table filler", rank::STATS, None);

/// Registers what republishes every address space's VMAs at a refresh.
pub fn register_vma_filler(fill: fn()) {
    VMA_FILLER.with(|f| *f = Some(fill));
}

/// Replaces the published VMAs of the address space rooted at `cr3` with
/// `vmas` (none: it is gone). The descriptor says the table is
/// inconsistent while the entries change, so a host that stops the vCPU
/// in the middle knows not to trust them.
pub fn update_vmas(cr3: u64, vmas: &[VmaDesc]) {
    VMAS.with(|t| {
        with(|d| d.vmas.consistent = 0);
        let mut n = t.header.count as usize;
        // Drop this address space's old entries, keeping the others packed.
        let mut kept = 0;
        for i in 0..n {
            if t.entries[i].cr3 != cr3 {
                t.entries[kept] = t.entries[i];
                kept += 1;
            }
        }
        n = kept;
        for v in vmas {
            if n == MAX_VMA_DESCS {
                t.header.dropped = t.header.dropped.wrapping_add(1);
                continue;
            }
            t.entries[n] = VmaDesc { cr3, ..*v };
            n += 1;
        }
        for e in &mut t.entries[n..t.header.count.max(n as u32) as usize] {
            *e = EMPTY_VMA;
        }
        t.header.count = n as u32;
        t.header.generation = t.header.generation.wrapping_add(1);
        t.header.table = t.entries.as_ptr() as u64 - KERNEL_MAP;
        t.header.consistent = 1;
        let h = t.header;
        with(|d| d.vmas = h);
    });
}

/// Fills the process table: the process layer (proc/), which sits above
/// mm/, registers it at init. None until then (the table stays empty).
type ProcTableFiller = fn();

static PROC_TABLE: SpinLock<Option<ProcTableFiller>> =
    SpinLock::new_with("the process-table filler", rank::STATS, None);

/// Registers what fills the descriptor's process table at every refresh.
pub fn register_proc_table(fill: ProcTableFiller) {
    PROC_TABLE.with(|f| *f = Some(fill));
}

/// Serialises the writers of the descriptor and its process table
/// across CPUs (a leaf: nothing is taken inside it; a raw flag rather
/// than a ranked SpinLock because every lock rank may be held around it).
static DESC_BUSY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Runs `f` on the descriptor.
fn with<R>(f: impl FnOnce(&mut MmDescriptor) -> R) -> R {
    use core::sync::atomic::Ordering;
    let flags = crate::arch::irq_save();
    while DESC_BUSY.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        crate::arch::tlb::poll();
        core::hint::spin_loop();
    }
    // SAFETY: DESC_BUSY is held and interrupts are masked, so no other
    // CPU or handler has a reference, and none escapes this function.
    let r = f(unsafe { DESC.get_mut() });
    DESC_BUSY.store(false, Ordering::Release);
    crate::arch::irq_restore(flags);
    r
}

/// Fills the descriptor and tells the VMM where it is.
pub fn publish() {
    with(|d| {
        let image = KernelImage::get();
        let range = |(start, end)| VaRange { start, end };
        d.text_va = range(image.text);
        d.rodata_va = range(image.rodata);
        d.data_va = range(image.data);
        d.kernel_phys = range(image.phys());
        d.page_offset_va = PAGE_OFFSET;
        d.vmemmap_va = VMEMMAP_START;
        d.vmalloc_va = VaRange { start: VMALLOC_START, end: VMALLOC_END };
        d.direct_map_size = DIRECT_MAP_SIZE;
        d.vmemmap_size = VMEMMAP_SIZE;
        d.kernel_map_va = KERNEL_MAP;
        d.user_end_va = USER_END;
        d.kernel_cr3 = KERNEL_PT.with(|m| m.root().0);
        d.nr_pfns = PAGES.with(|p| p.buddy.mem_map().len() as u64);
    });
    refresh();
    // The VMA table's header, before any process exists.
    update_vmas(0, &[]);
    let pa = with(|d| d as *const MmDescriptor as u64) - KERNEL_MAP;
    outl(port::DESCRIPTOR, pa as u32);
    outl(port::DESCRIPTOR_HIGH, (pa >> 32) as u32);
}

/// Brings the changing fields up to date (before a checkpoint).
pub fn refresh() {
    let deferred = DEFERRED.try_with(|d| d.pages).unwrap_or(0);
    let (boot_tables, tables) = STATS.try_with(|s| (s.boot_table_pages, s.table_pages)).unwrap_or((0, 0));
    let mut caches = [CacheDesc::default(); MAX_CACHE_DESCS];
    let mut n = 0;
    let _ = PAGES.try_with(|p| {
        for (id, c) in p.slab.caches() {
            if n == MAX_CACHE_DESCS {
                break;
            }
            let name = c.name.as_bytes();
            let len = name.len().min(23);
            caches[n].name[..len].copy_from_slice(&name[..len]);
            caches[n].id = id.0 as u32;
            caches[n].object_size = c.object_size;
            caches[n].size = c.size;
            caches[n].order = c.order as u32;
            caches[n].objects_per_slab = c.objects_per_slab() as u32;
            caches[n].flags = c.flags.0;
            n += 1;
        }
    });
    // The process table, republished through `update_procs` (copied out
    // first: the filler takes the scheduler, which ranks outside the
    // registry's lock).
    if let Some(fill) = PROC_TABLE.try_with(|f| *f).flatten() {
        fill();
    }
    if let Some(fill) = VMA_FILLER.try_with(|f| *f).flatten() {
        fill();
    }
    let swap = super::swap::describe();
    let mut huge = mm_core::descriptor::HugeDesc::default();
    let _ = PAGES.try_with(|p| {
        let (types, base) = p.buddy.pageblock_types();
        huge.pageblocks_va = if types.is_empty() { 0 } else { types.as_ptr() as u64 };
        huge.pageblock_base_pfn = base;
        huge.nr_pageblocks = types.len() as u64;
        huge.pageblock_order = mm_core::buddy::PAGEBLOCK_ORDER as u64;
    });
    super::hugetlb::describe(&mut huge);
    with(|d| {
        d.deferred_pages = deferred;
        d.boot_table_pages = boot_tables;
        d.table_pages = tables;
        d.caches = caches;
        d.nr_caches = n as u32;
        d.vmstat = super::vmstat::snapshot();
        d.swap = swap;
        d.huge = huge;
        d.tlb = super::tlbtrace::describe();
        d.faults = super::faultlog::describe();
        // The kernel image lies below 1 GiB: the address fits.
        d.memcg_table = (&mm_core::memcg::TABLE as *const mm_core::memcg::MemcgTable as u64 - KERNEL_MAP) as u32;
    });
}

/// Edits the published process table in place, as the process layer does
/// whenever it changes (fork, exit, reap, sleep, a switch): plain memory
/// writes, no port exit, so the host's `ps` and `cr3 pid` are current at
/// any stop of the vCPU (gdb, SIGUSR1), not only after a checkpoint.
pub fn update_procs(f: impl FnOnce(&mut [ProcDesc])) {
    with(|d| {
        // SAFETY: inside `with` (DESC_BUSY held, interrupts masked); PROCS
        // is written only here, and no reference escapes.
        let procs = unsafe { PROCS.get_mut() };
        f(procs);
        let pa = procs.as_ptr() as u64 - KERNEL_MAP;
        d.procs = if procs.iter().any(|p| p.pid != 0) { pa } else { 0 };
    });
}

/// Points the host at the access-rights test's records.
pub fn set_access_records(pa: u64, count: u32, capacity: u32) {
    with(|d| {
        d.access_records = pa;
        d.access_count = count;
        d.access_capacity = capacity;
    });
}

/// Records which invariant the kernel broke on purpose.
pub fn set_sabotage(code: u32) {
    with(|d| d.sabotage = code);
}
