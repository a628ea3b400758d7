//! Transparent huge pages for anonymous memory (Linux's mm/huge_memory.c
//! and mm/khugepaged.c), the parts that need no process: the mode
//! (`transparent_hugepage=always|madvise|never` at boot; at run time
//! /sys/kernel/mm/transparent_hugepage/enabled, fs/sysfs.rs, or `SYS_THP`),
//! the eligibility of a VMA, the huge zero page, huge page allocation and
//! the counters (AnonHugePages, `thp_*` in vmstat). The page-table work on
//! a process's address space is in proc/thp.rs.
//!
//! A transparent huge page is an order-9 block split at allocation into
//! 512 order-0 pages (the buddy's `split_page`): a PMD leaf holds one
//! reference on each of its 512 frames, so splitting the PMD into a page
//! table changes no count, each frame sits on the LRU and in the rmap on
//! its own (Linux keeps the head page only; here reclaim and migration
//! see a PMD-mapped frame as unmapped-but-referenced and leave it alone,
//! and see the frames as ordinary pages once the PMD is split), and the
//! host's `--verify refcount` counts a 2 MiB user leaf as 512 frames
//! mapped once each.

use super::page_alloc::{alloc_pages, GfpMask};
use super::phys::clear_page;
use super::vmstat::{count, Event};
use super::PAGES;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use mm_core::addr::{PAGE_SHIFT, PAGE_SIZE};
use mm_core::buddy::PageOwner;
use mm_core::vma::{VmFlags, Vma};

/// Bytes of a PMD-mapped page.
pub const HPAGE_PMD_SIZE: u64 = 2 << 20;
/// Its order.
pub const HPAGE_PMD_ORDER: u8 = 9;
/// Its 4 KiB pages.
pub const HPAGE_PMD_NR: u64 = 1 << HPAGE_PMD_ORDER;

/// `/sys/kernel/mm/transparent_hugepage/enabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ThpMode {
    /// No huge pages.
    Never = 0,
    /// Only in VMAs marked `MADV_HUGEPAGE`.
    Madvise = 1,
    /// In every eligible anonymous VMA not marked `MADV_NOHUGEPAGE`.
    Always = 2,
}

impl ThpMode {
    /// From `SYS_THP`'s number or the boot switch's word.
    pub fn from_u64(v: u64) -> Option<ThpMode> {
        match v {
            0 => Some(ThpMode::Never),
            1 => Some(ThpMode::Madvise),
            2 => Some(ThpMode::Always),
            _ => None,
        }
    }

    /// `always`, `madvise` or `never`.
    pub fn parse(s: &str) -> Option<ThpMode> {
        match s {
            "never" => Some(ThpMode::Never),
            "madvise" => Some(ThpMode::Madvise),
            "always" => Some(ThpMode::Always),
            _ => None,
        }
    }
}

/// The mode (default `madvise`, as many distributions ship Linux).
static MODE: AtomicU8 = AtomicU8::new(ThpMode::Madvise as u8);
/// PMD mappings of anonymous huge pages, all processes (AnonHugePages).
static ANON_HUGE_PMDS: AtomicU64 = AtomicU64::new(0);
/// Physical address of the huge zero page; 0 until the first read fault
/// that wants it.
static HUGE_ZERO_PA: AtomicU64 = AtomicU64::new(0);

/// The mode now.
pub fn mode() -> ThpMode {
    ThpMode::from_u64(MODE.load(Ordering::Relaxed) as u64).unwrap_or(ThpMode::Never)
}

/// khugepaged's limits (Linux's
/// /sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none and
/// max_ptes_shared, fs/sysfs.rs; also /proc/sys/vm/khugepaged_max_ptes_*
/// and `SYS_THP` op 4/5), Linux's defaults. Linux's max_ptes_swap
/// (swap in up to 64 PTEs before collapsing) is not modelled: a range
/// with a swapped-out PTE is not collapsed.
static MAX_PTES: [AtomicU64; 2] = [AtomicU64::new(HPAGE_PMD_NR - 1), AtomicU64::new(HPAGE_PMD_NR / 2)];

/// Which khugepaged limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxPtes {
    /// Empty (or zero-page) PTEs a collapse may fill with zeroes (511).
    None = 0,
    /// PTEs of pages shared with another process (after fork) a collapse
    /// may copy (256).
    Shared = 1,
}

impl MaxPtes {
    /// From `SYS_THP`'s number.
    pub fn from_u64(v: u64) -> Option<MaxPtes> {
        match v {
            0 => Some(MaxPtes::None),
            1 => Some(MaxPtes::Shared),
            _ => None,
        }
    }
}

/// A khugepaged limit now.
pub fn max_ptes(which: MaxPtes) -> u64 {
    MAX_PTES[which as usize].load(Ordering::Relaxed)
}

/// Sets a khugepaged limit (0..=511, as Linux's store refuses more);
/// false if out of range.
pub fn set_max_ptes(which: MaxPtes, v: u64) -> bool {
    if v > HPAGE_PMD_NR - 1 {
        return false;
    }
    MAX_PTES[which as usize].store(v, Ordering::Relaxed);
    true
}

/// Sets the mode; returns the old one.
pub fn set_mode(m: ThpMode) -> ThpMode {
    ThpMode::from_u64(MODE.swap(m as u8, Ordering::Relaxed) as u64).unwrap_or(ThpMode::Never)
}

/// Whether `vma` may have huge pages in the current mode (Linux's
/// `thp_vma_allowable_order` for anonymous VMAs): private, not a stack,
/// not `MADV_NOHUGEPAGE`; `always`, or `madvise` with `MADV_HUGEPAGE`.
pub fn vma_allows(flags: VmFlags) -> bool {
    if flags.contains(VmFlags::SHARED) || flags.contains(VmFlags::GROWSDOWN) || flags.contains(VmFlags::NOHUGEPAGE) {
        return false;
    }
    match mode() {
        ThpMode::Always => true,
        ThpMode::Madvise => flags.contains(VmFlags::HUGEPAGE),
        ThpMode::Never => false,
    }
}

/// Whether a new mapping of `len` bytes placed without an address hint
/// gets a 2 MiB-aligned start, so its huge pages can be PMD-mapped from
/// the first fault (and an mremap that moves it keeps its PMD leaves
/// whole). Linux's rule in `__get_unmapped_area` (mm/mmap.c) from 6.13
/// on, unchanged in mainline since: efa7df3e3bb5 (6.7, "align larger
/// anonymous mappings on THP boundaries") aligned every private anonymous
/// mapping of at least PMD_SIZE; d4148aeab412 (6.12, "limit THP alignment
/// of anonymous mappings to PMD-aligned sizes") narrowed it to lengths
/// that are a multiple of PMD_SIZE (odd sizes such as 4632 kB merged into
/// one THP-backed area before and got fragmented by the alignment), and
/// 249608ee4713 (6.13, "respect mmap hint address when aligning for
/// THP") to mappings without a hint (the caller checks that: `addr == 0`).
/// File mappings and shared anonymous ones (shmem's own
/// `get_unmapped_area`, which aligns only with shmem THP on, off by
/// default) are not aligned; hugetlb has its own path (mm/hugetlb.rs).
/// As in Linux the mode is not consulted (`IS_ENABLED(CONFIG_TRANSPARENT_HUGEPAGE)`
/// only: an aligned mapping costs nothing, and `madvise(MADV_HUGEPAGE)`
/// or a later `always` finds it ready), nor is `VM_GROWSDOWN` or
/// `MAP_STACK`.
pub fn aligns_unmapped_area(len: u64, flags: VmFlags, anon: bool) -> bool {
    anon && !flags.contains(VmFlags::SHARED)
        && !flags.contains(VmFlags::HUGETLB)
        && len != 0
        && len.is_multiple_of(HPAGE_PMD_SIZE)
}

/// The 2 MiB-aligned start of `addr`'s huge page if that page lies inside
/// `vma` and the VMA may have huge pages.
/// Anonymous VMAs only: file mappings take their pages from the page
/// cache (no THP for files here).
pub fn huge_range(vma: &Vma, addr: u64) -> Option<u64> {
    let haddr = addr & !(HPAGE_PMD_SIZE - 1);
    let anon = vma.kind == mm_core::vma::VmaKind::Anon;
    (anon && vma_allows(vma.flags) && haddr >= vma.start && haddr + HPAGE_PMD_SIZE <= vma.end).then_some(haddr)
}

/// Linux's `GFP_TRANSHUGE_LIGHT`: movable, no reclaim and no waking of
/// kswapd (THP's default defrag: a fault that finds no free order-9 block
/// falls back to 4 KiB pages rather than stall).
pub const GFP_TRANSHUGE_LIGHT: GfpMask = GfpMask { gfp: mm_core::buddy::GFP_HIGHUSER_MOVABLE, flags: 0 };

/// A huge page for user memory: an order-9 block, `zeroed` or not, split
/// into 512 order-0 pages owned `UserAnon` with one reference each.
/// Physical address, or `None` when no order-9 block is free. `gfp`:
/// [`GFP_TRANSHUGE_LIGHT`] on the nodes of the VMA's policy.
pub fn alloc_huge_page(zeroed: bool, gfp: GfpMask) -> Option<u64> {
    let pfn = alloc_pages(HPAGE_PMD_ORDER, gfp).ok()?;
    PAGES.with(|p| {
        let _ = p.buddy.set_owner(pfn, PageOwner::UserAnon);
        if let Err(e) = p.buddy.split_page(pfn) {
            panic!("split_page({:#x}): {}", pfn, e);
        }
        for i in 0..HPAGE_PMD_NR {
            super::memcg::charge(&mut p.buddy, pfn + i, super::memcg::ChargeKind::Anon);
        }
    });
    let pa = pfn << PAGE_SHIFT;
    if zeroed {
        for i in 0..HPAGE_PMD_NR {
            clear_page(pa + i * PAGE_SIZE);
        }
    }
    Some(pa)
}

/// The huge zero page (one shared, zeroed, read-only 2 MiB page, owner
/// `Reserved` like the 4 KiB zero page, never freed), allocated on first
/// use; `None` if no order-9 block is free then.
pub fn huge_zero_page() -> Option<u64> {
    let pa = HUGE_ZERO_PA.load(Ordering::Acquire);
    if pa != 0 {
        return Some(pa);
    }
    let pfn = alloc_pages(HPAGE_PMD_ORDER, GFP_TRANSHUGE_LIGHT).ok()?;
    PAGES.with(|p| {
        let _ = p.buddy.set_owner(pfn, PageOwner::Reserved);
    });
    let pa = pfn << PAGE_SHIFT;
    for i in 0..HPAGE_PMD_NR {
        clear_page(pa + i * PAGE_SIZE);
    }
    HUGE_ZERO_PA.store(pa, Ordering::Release);
    count(Event::ThpZeroPageAlloc, 1);
    Some(pa)
}

/// Whether `pa` is the huge zero page's base.
pub fn is_huge_zero(pa: u64) -> bool {
    pa != 0 && HUGE_ZERO_PA.load(Ordering::Relaxed) == pa
}

/// A PMD mapping of an anonymous huge page appeared (+1) or went (-1).
pub fn account_pmd(delta: i64) {
    if delta >= 0 {
        ANON_HUGE_PMDS.fetch_add(delta as u64, Ordering::Relaxed);
    } else {
        ANON_HUGE_PMDS.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}

/// meminfo's AnonHugePages, in KiB.
pub fn anon_huge_kib() -> u64 {
    ANON_HUGE_PMDS.load(Ordering::Relaxed) * (HPAGE_PMD_SIZE >> 10)
}

/// Page-table pages for a split reclaim makes: from the buddy allocator
/// reclaim holds, below the watermarks (reclaim's own allocations dip
/// into the reserves, as Linux's `PF_MEMALLOC`), owner `PageTable`.
struct ReclaimTables<'a> {
    buddy: &'a mut mm_core::buddy::BuddyAllocator<'static>,
    count: u64,
}

impl mm_core::paging::FrameAllocator for ReclaimTables<'_> {
    fn allocate_frame(&mut self) -> Option<mm_core::addr::PhysAddr> {
        let cpu = crate::arch::percpu::this_cpu().id;
        let pfn = self.buddy.alloc_pages(cpu, 0, super::page_alloc::GFP_MEMALLOC.gfp).ok()?;
        let _ = self.buddy.set_owner(pfn, PageOwner::PageTable);
        self.count += 1;
        Some(mm_core::addr::PhysAddr(pfn << PAGE_SHIFT))
    }
    fn deallocate_frame(&mut self, frame: mm_core::addr::PhysAddr) {
        self.count -= 1;
        crate::mm::tlbtrace::free(frame.0 >> PAGE_SHIFT, 0);
        let _ = self.buddy.free_pages(crate::arch::percpu::this_cpu().id, frame.0 >> PAGE_SHIFT, 0);
    }
}

/// Before reclaim unmaps `pfn` (an anon page whose rmap record is `m`):
/// splits every PMD leaf mapping it (Linux splits a large folio before
/// `try_to_unmap` swaps it out), so reclaim's walks find 4 KiB PTEs and
/// never unmap a PMD-mapped page as if it were one small page. Called
/// with the reclaim state and the buddy allocator held. Returns the PMDs
/// split.
pub fn split_pmd_mappings(
    s: &mut super::swap::SwapState,
    buddy: &mut mm_core::buddy::BuddyAllocator<'static>,
    m: mm_core::rmap::AnonMapping,
    pfn: u64,
) -> u64 {
    use mm_core::addr::{Level, VirtAddr};
    let phys = super::phys::direct_map();
    let pa = pfn << PAGE_SHIFT;
    // No heap here: the page allocator is held (a kmalloc would take it
    // again). More mappers than this are split on a later pass.
    const MAX: usize = 16;
    let mut found: [Option<(mm_core::rmap::MmId, u64, mm_core::paging::Slot, u64)>; MAX] = [None; MAX];
    let mut n = 0;
    let mms = &s.mms;
    s.rmap.rmap_walk(m, |mm, va| {
        let Some(pgd) = mms.get(&mm).map(|e| e.pgd) else { return true };
        if let Some((slot, e)) = super::paging::user_pt(pgd).lookup(&phys, VirtAddr(va)) {
            let base = e.0 & mm_core::paging::entry::PTE_ADDR_MASK_MAX & !(HPAGE_PMD_SIZE - 1);
            if slot.level() == Level::Pmd && e.is_present() && (base..base + HPAGE_PMD_SIZE).contains(&pa) {
                found[n] = Some((mm, pgd, slot, va & !(HPAGE_PMD_SIZE - 1)));
                n += 1;
            }
        }
        n < MAX
    });
    let mut split = 0;
    for (mm, pgd, slot, haddr) in found.into_iter().flatten() {
        let mut frames = ReclaimTables { buddy: &mut *buddy, count: 0 };
        let mut phys = super::phys::direct_map();
        let r = super::paging::user_pt(pgd).split_huge_leaf(&mut phys, &mut frames, slot, VirtAddr(haddr), true);
        let tables = frames.count;
        if r.is_err() {
            continue;
        }
        // Every CPU that has this mm loaded may cache the 2 MiB entry (a
        // thread of it elsewhere, not only this CPU): shoot it down there
        // too before the 4 KiB entries are reclaimed one by one.
        crate::arch::tlb::flush_range(pgd, haddr, haddr + 4096);
        if let Some(e) = s.mms.get_mut(&mm) {
            e.pt_pages_in += tables;
        }
        account_pmd(-1);
        count(Event::ThpSplitPmd, 1);
        split += 1;
    }
    split
}

/// Page tables reclaim's splits added to `mm` since the last call (the
/// owner folds them into its count, as it does reclaim's RSS changes).
pub fn take_split_tables(mm: mm_core::rmap::MmId) -> u64 {
    super::swap::SWAP.with(|s| s.mms.get_mut(&mm).map_or(0, |e| core::mem::take(&mut e.pt_pages_in)))
}
