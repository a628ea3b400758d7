//! The kernel's own page tables, built with mm-core's mapper (Linux's
//! `init_mem_mapping` + `mark_rodata_ro`): the direct map of RAM at
//! `PAGE_OFFSET` (2 MiB pages where aligned), the kernel image at -2 GiB
//! with W^X (text RX, rodata R, data and bss RW+NX), and `vmemmap` for the
//! page descriptors. Then CR3 switches to them and the boot tables, with
//! their identity map, are gone.
//!
//! RAM whose page init is deferred (see `mm::Deferred`) is direct-mapped
//! when the buddy allocator takes it: on hosts where ring 0 is emulated,
//! writing the PMD entries for all of a large guest's RAM is most of its
//! boot time. The PMD tables for it are created here, so that mapping it
//! later needs no allocation, and every kernel-half PGD entry exists from
//! boot on, so address spaces can share the kernel half by copying them.

use super::layout::{KERNEL_MAP, PAGE_OFFSET, VMALLOC_END, VMALLOC_START, VMEMMAP_START};
use super::memblock::Memblock;
use super::phys::KernelPhys;
use crate::arch::cpu;
use mm_core::abi::layout::{LRUMAP_START, PAGE_EXT_START};
use mm_core::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use mm_core::buddy::Page;
use mm_core::lru::LruNode;
use mm_core::page_ext::PageExt;
use mm_core::paging::{FrameAllocator, Level, MapError, MapRequest, Mapper, PageSize, PteFlags, SizeRequest};

/// The boot page tables map the first GiB at -2 GiB: page-table pages
/// built before the switch must lie there.
const BOOT_WINDOW: u64 = mm_core::abi::boot::BOOT_MAPPED;

/// Page-table frames from memblock during boot.
struct MemblockFrames<'a> {
    memblock: &'a mut Memblock,
    count: u64,
}

impl FrameAllocator for MemblockFrames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysAddr> {
        // mm-core's mapper zeroes every table it allocates.
        // Below DEFER_ABOVE: the direct map covers that from boot, and the
        // kernel reaches its tables through the direct map later.
        let pa = self.memblock.alloc(PAGE_SIZE, PAGE_SIZE, super::DEFER_ABOVE)?;
        self.count += 1;
        Some(PhysAddr(pa))
    }

    fn deallocate_frame(&mut self, _frame: PhysAddr) {
        // Boot tables are never freed (a failed map leaks a page at most).
    }
}

/// What `init` built.
pub struct KernelTables {
    /// The mapper over the kernel's root table.
    pub mapper: Mapper,
    /// The page descriptors, one per pfn from 0 to the end of RAM.
    pub mem_map: &'static mut [Page],
    /// The LRU links, one per pfn.
    pub lru_map: &'static mut [LruNode],
    /// The anon rmap and swap-cache fields, one per pfn.
    pub page_ext: &'static mut [PageExt],
    /// Page-table pages used.
    pub table_pages: u64,
    /// Bytes of RAM backing `vmemmap` (descriptors, LRU links, page_ext).
    pub vmemmap_bytes: u64,
}

/// CPUID's physical-address width.
pub fn maxphyaddr() -> u8 {
    let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max >= 0x8000_0008 {
        (core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff) as u8
    } else {
        36
    }
}

/// Builds the kernel page tables, switches CR3 to them and turns on NX,
/// write protection for the kernel, global pages and SMEP.
pub fn init(memblock: &mut Memblock, lazy: &[(u64, u64)]) -> Result<KernelTables, MapError> {
    // NX bits in the new tables need EFER.NXE before CR3 points at them.
    // SAFETY: setting NXE only gives meaning to bit 63, which the boot
    // tables do not use.
    unsafe { cpu::wrmsr(cpu::MSR_EFER, cpu::rdmsr(cpu::MSR_EFER) | cpu::EFER_NXE) };

    // SAFETY: the boot tables map physical [0, 1 GiB) at KERNEL_MAP.
    let mut boot_phys = unsafe { KernelPhys::new(KERNEL_MAP, BOOT_WINDOW) };
    let maxphy = maxphyaddr();
    let mut frames = MemblockFrames { memblock, count: 0 };
    let mapper = Mapper::create(&mut boot_phys, &mut frames, false, maxphy, false)?;
    let g = PteFlags::GLOBAL;

    // The direct map: all RAM (whole pages), plus the first MiB.
    let end_of_ram = frames.memblock.end_of_ram();
    let mut ram = [(0u64, 0u64); 64];
    let mut n = 0;
    for r in frames.memblock.memory.iter() {
        ram[n] = (r.start, r.end);
        n += 1;
    }
    // The first MiB whole (BIOS area and boot data included, as Linux
    // maps it), then every RAM range above it, less the lazily mapped parts.
    let mut direct = [(0u64, 0u64); 128];
    direct[0] = (0, 1 << 20);
    let mut nd = 1;
    for &(start, end) in &ram[..n] {
        let mut cur = start.max(1 << 20);
        for &(ls, le) in lazy {
            if ls >= end || le <= cur {
                continue;
            }
            if ls > cur && nd < direct.len() {
                direct[nd] = (cur, ls);
                nd += 1;
            }
            cur = cur.max(le);
        }
        if cur < end && nd < direct.len() {
            direct[nd] = (cur, end);
            nd += 1;
        }
    }
    for &(start, end) in &direct[..nd] {
        let flush = mapper.map(
            &mut boot_phys,
            &mut frames,
            MapRequest {
                va: VirtAddr(PAGE_OFFSET + start),
                pa: PhysAddr(start),
                len: end - start,
                size: SizeRequest::Best,
                flags: PteFlags::RW.union(PteFlags::NX).union(g),
            },
        )?;
        // New mappings of not-present addresses need no flush on x86, and
        // these tables are not live yet anyway.
        flush.ignore();
    }

    // PMD tables for the lazily mapped RAM, one per GiB.
    for &(ls, le) in lazy {
        let mut gib = ls & !((1 << 30) - 1);
        while gib < le {
            mapper.populate(&mut boot_phys, &mut frames, VirtAddr(PAGE_OFFSET + gib), Level::Pmd)?;
            gib += 1 << 30;
        }
    }
    // The vmalloc window's PUD tables (Linux's preallocate_vmalloc_pages):
    // afterwards no kernel-half PGD entry ever changes.
    let mut va = VMALLOC_START;
    while va < VMALLOC_END {
        mapper.populate(&mut boot_phys, &mut frames, VirtAddr(va), Level::Pud)?;
        va += 1 << 39;
    }

    // The kernel image, W^X, 4 KiB pages.
    let image = super::layout::KernelImage::get();
    for ((start, stop), flags) in [
        (image.text, g),
        (image.rodata, g.union(PteFlags::NX)),
        (image.data, g.union(PteFlags::NX).union(PteFlags::RW)),
    ] {
        let flush = mapper.map(
            &mut boot_phys,
            &mut frames,
            MapRequest {
                va: VirtAddr(start),
                pa: PhysAddr(start - KERNEL_MAP),
                len: stop - start,
                size: SizeRequest::Fixed(PageSize::Size4K),
                flags,
            },
        )?;
        flush.ignore();
    }

    // vmemmap: descriptors for every pfn that has RAM, backed by memory
    // from memblock (zero, so every descriptor starts "untouched"); and
    // beside it, the same way, the LRU links and the page_ext array
    // (zero is "on no list", "no anon mapping"), the parts of Linux's
    // `struct page` reclaim uses.
    let mut vmemmap_bytes = 0;
    let arrays = [
        (VMEMMAP_START, core::mem::size_of::<Page>() as u64),
        (LRUMAP_START, core::mem::size_of::<LruNode>() as u64),
        (PAGE_EXT_START, core::mem::size_of::<PageExt>() as u64),
    ];
    for (base, desc) in arrays {
        // The descriptor ranges of the RAM ranges, page-rounded and
        // merged, so neighbouring RAM ranges share 2 MiB pages.
        let mut spans = [(0u64, 0u64); 64];
        let mut ns = 0;
        for &(start, end) in &ram[..n] {
            let vstart = (base + start / PAGE_SIZE * desc) & !(PAGE_SIZE - 1);
            let vend = (base + end / PAGE_SIZE * desc + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
            if ns > 0 && vstart <= spans[ns - 1].1 {
                spans[ns - 1].1 = spans[ns - 1].1.max(vend);
            } else {
                spans[ns] = (vstart, vend);
                ns += 1;
            }
        }
        for &(vstart, vend) in &spans[..ns] {
            let len = vend - vstart;
            let align = 2 << 20;
            let big = len >= align && vstart % align == 0;
            let pa = frames
                .memblock
                .alloc(len, if big { align } else { PAGE_SIZE }, u64::MAX)
                .ok_or(MapError::FrameAllocationFailed)?;
            let flush = mapper.map(
                &mut boot_phys,
                &mut frames,
                MapRequest {
                    va: VirtAddr(vstart),
                    pa: PhysAddr(pa),
                    len,
                    size: SizeRequest::Best,
                    flags: PteFlags::RW.union(PteFlags::NX).union(g),
                },
            )?;
            flush.ignore();
            vmemmap_bytes += len;
        }
    }

    let table_pages = frames.count + 1;
    // SAFETY: the new tables map the running kernel (text, data, stack,
    // all at the same -2 GiB addresses) exactly as the boot tables did,
    // with narrower rights; nothing refers to the identity map any more.
    unsafe {
        cpu::write_cr3(mapper.root().0);
        cpu::write_cr0(cpu::read_cr0() | cpu::CR0_WP);
        // Only what the CPU has: setting an unsupported CR4 bit is a #GP.
        let mut cr4 = cpu::read_cr4();
        if cpu::has_pge() {
            cr4 |= cpu::CR4_PGE;
        }
        if cpu::has_smep() {
            cr4 |= cpu::CR4_SMEP;
        }
        cpu::write_cr4(cr4);
    }
    let nr_pfns = (end_of_ram / PAGE_SIZE) as usize;
    // SAFETY: vmemmap maps zeroed RAM for the descriptors of every pfn that
    // has RAM; descriptors of holes are never touched (the buddy allocator
    // only reads descriptors of memory it was given).
    let mem_map = unsafe { core::slice::from_raw_parts_mut(VMEMMAP_START as *mut Page, nr_pfns) };
    // SAFETY: as for mem_map: zeroed RAM for every pfn with RAM, mapped
    // above; LRU and page_ext entries of holes are never touched (only
    // user pages, which the buddy allocator hands out, get entries).
    let lru_map = unsafe { core::slice::from_raw_parts_mut(LRUMAP_START as *mut LruNode, nr_pfns) };
    // SAFETY: as for lru_map.
    let page_ext = unsafe { core::slice::from_raw_parts_mut(PAGE_EXT_START as *mut PageExt, nr_pfns) };
    Ok(KernelTables { mapper, mem_map, lru_map, page_ext, table_pages, vmemmap_bytes })
}

/// Direct-maps `[start, end)` (2 MiB aligned) into PMD tables `init`
/// created, so no allocation is needed (the caller is the page allocator).
pub fn map_deferred(mapper: &Mapper, phys: &mut KernelPhys, start: u64, end: u64) -> Result<(), MapError> {
    struct NoFrames;
    impl FrameAllocator for NoFrames {
        fn allocate_frame(&mut self) -> Option<PhysAddr> {
            None
        }
        fn deallocate_frame(&mut self, _: PhysAddr) {}
    }
    let flush = mapper.map(
        phys,
        &mut NoFrames,
        MapRequest {
            va: VirtAddr(PAGE_OFFSET + start),
            pa: PhysAddr(start),
            len: end - start,
            size: SizeRequest::Fixed(PageSize::Size2M),
            flags: PteFlags::RW.union(PteFlags::NX).union(PteFlags::GLOBAL),
        },
    )?;
    // Not-present to present: nothing to invalidate.
    flush.ignore();
    Ok(())
}

/// A process's page tables as mm-core's editor sees them: the hierarchy
/// at `pgd`, 4-level (the fault path, fork, reclaim and migration all
/// edit them through this). The editor only masks entry addresses with
/// the physical-address width (it checks no reserved bits on tables it
/// built), so the widest one serves without asking CPUID, which would be
/// a VM exit on every fault.
pub fn user_pt(pgd: u64) -> Mapper {
    Mapper::new(PhysAddr(pgd), false, 52, false)
}
