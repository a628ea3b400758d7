//! The hugetlb pools (Linux's mm/hugetlb.c): one per huge page size, its
//! `hstate` ([`HSize`]): 2 MiB pages, order-9 blocks set aside from the
//! buddy allocator, and, where the CPU reports 1 GiB pages (CPUID pdpe1gb),
//! gigantic 1 GiB pages taken as whole free ranges ([`alloc_gigantic`]).
//! Sizes are chosen as Linux's: `hugepagesz=` at boot names the pool the
//! next `hugepages=N` fills, `default_hugepagesz=` the one mmap uses
//! without a size; at run time [`set_max_huge_pages`] (/proc/sys/vm and
//! /sys/kernel/mm/hugepages/hugepages-<size>kB/nr_hugepages).
//! `mmap(MAP_HUGETLB)` takes Linux's reservations, and a fault maps a pool
//! page with one leaf: a PMD for 2 MiB, a PUD for 1 GiB.
//!
//! Accounting, as Documentation/admin-guide/mm/hugetlbpage.rst:
//! - `HugePages_Total` = pages in the pool (persistent plus surplus),
//!   `HugePages_Free` = pool pages no mapping uses, `HugePages_Rsvd` =
//!   free pages promised to mappings that have not faulted them yet,
//!   `HugePages_Surp` = pages above `nr_hugepages`, allocated on demand up
//!   to `nr_overcommit_hugepages` and given back to the buddy allocator
//!   when freed.
//! - mmap without `MAP_NORESERVE` reserves every huge page of the range
//!   (Rsvd rises), or fails with ENOMEM when `Free - Rsvd` (plus what
//!   overcommit may add) cannot cover it; a fault consumes the reservation
//!   of its page (Rsvd and Free fall); munmap and exit give back the
//!   reservations of pages never faulted.
//! - A `MAP_NORESERVE` mapping reserves nothing: a fault that finds no
//!   unreserved free page (and no room for a surplus page) gets SIGBUS.
//!
//! Mappings: private ones fault on demand. Shared ones are populated at
//! mmap (as this kernel's shared anonymous memory is: with no hugetlbfs
//! file behind the mapping, a page must exist before fork for both
//! processes to find it), so their reservations are consumed at once.
//! Fork: shared mappings are shared; private ones are shared read-only
//! until a write copies the huge page (Linux's `hugetlb_wp`). The child
//! gets no reservations (as Linux: `HPAGE_RESV_OWNER` stays with the
//! parent); a copy takes an unreserved free page, and when there is none
//! the writer gets SIGBUS (Linux would instead let the reservation owner
//! steal the page back from its children; not modelled).
//!
//! Page state: a 2 MiB pool page is an order-9 buddy block owned
//! `HugeTlb` whose refcount is the pool's one reference plus one per PMD
//! leaf mapping it (what the host's `--verify refcount` checks). A 1 GiB
//! page is 256 order-10 blocks owned `HugeTlb` (the buddy's largest; Linux
//! makes one compound folio of them), and each block carries the same
//! count, the pool's reference plus one per PUD leaf, so the host checks
//! every block as it checks a 2 MiB page. Never on an LRU list and never
//! migrated.
//!
//! Locks: [`HUGETLB`] (Linux's `hugetlb_lock`, rank MISC) ranks outside
//! the page allocator: pool changes take it first, then `PAGES`. Pool
//! pages are allocated with neither held (the allocation may compact).
//!
//! 1 GiB pages: the pool exists only where the CPU reports them (Linux's
//! x86 `gigantic_pages_init`); elsewhere `hugepagesz=1G` is refused with
//! the reason ([`hugepagesz`]) and `MAP_HUGE_1GB` is EINVAL. Like Linux
//! without CMA, a gigantic page needs a wholly free, 1 GiB-aligned range:
//! the pool drains the CPUs' page caches, hands over deferred memory and,
//! failing that, compacts once (Linux's `alloc_contig_range` would also
//! migrate the pages in the way).

use super::phys::direct_map;
use super::{PageAlloc, PAGES};
use crate::arch::cpu;
use crate::fmt::{Dec, DecPad};
use crate::kprintln;
use crate::proc::fault::FaultError;
use crate::sync::{rank, SpinLock};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use mm_core::addr::{VirtAddr, PAGE_SHIFT};
use mm_core::buddy::PageOwner;
use mm_core::paging::{FrameAllocator, LeafKinds, Level, Mapper, Pte, PteFlags, Slot};
use mm_core::rmap::MmId;
use mm_core::vma::{VmFlags, Vma};

/// The 2 MiB huge page's buddy order.
pub const HUGETLB_ORDER: u8 = mm_core::buddy::PAGEBLOCK_ORDER;
/// `MAP_HUGETLB` (Linux x86-64).
pub const MAP_HUGETLB: u64 = 0x4_0000;
/// `MAP_NORESERVE`.
pub const MAP_NORESERVE: u64 = 0x4000;
/// `MAP_HUGE_SHIFT`: a huge page size's log2 sits in flags bits 26..31.
const MAP_HUGE_SHIFT: u64 = 26;
/// The entry address bits.
const ADDR_MASK: u64 = mm_core::paging::entry::PTE_ADDR_MASK_MAX;

/// A huge page size (Linux's `struct hstate` is per size; these are its
/// indexes in [`HUGETLB`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HSize {
    /// 2 MiB pages, mapped by PMD leaves.
    Pmd = 0,
    /// 1 GiB pages, mapped by PUD leaves (CPUID pdpe1gb).
    Pud = 1,
}

/// Both sizes, smallest first.
pub const HSIZES: [HSize; 2] = [HSize::Pmd, HSize::Pud];

impl HSize {
    /// log2 of the page size.
    pub const fn shift(self) -> u64 {
        match self {
            HSize::Pmd => 21,
            HSize::Pud => 30,
        }
    }

    /// The page size in bytes.
    pub const fn size(self) -> u64 {
        1 << self.shift()
    }

    /// The page size in KiB (sysfs names the pool by it).
    pub const fn kb(self) -> u64 {
        self.size() >> 10
    }

    /// The table level of the leaf that maps a page.
    pub fn level(self) -> Level {
        match self {
            HSize::Pmd => Level::Pmd,
            HSize::Pud => Level::Pud,
        }
    }

    /// The buddy order of the blocks a page is made of.
    const fn block_order(self) -> u8 {
        match self {
            HSize::Pmd => HUGETLB_ORDER,
            HSize::Pud => mm_core::buddy::MAX_PAGE_ORDER,
        }
    }

    /// The pfns of the blocks of the page at `pfn`.
    fn blocks(self, pfn: u64) -> impl Iterator<Item = u64> {
        let step = 1u64 << self.block_order();
        (pfn..pfn + (self.size() >> PAGE_SHIFT)).step_by(step as usize)
    }

    /// The size of the pages of hugetlb VMA `v`.
    pub fn of_vma(v: &Vma) -> HSize {
        if v.flags.contains(VmFlags::HUGETLB_1G) {
            HSize::Pud
        } else {
            HSize::Pmd
        }
    }

    /// The size a `MAP_HUGE_*` log2 names, if this kernel has its pool.
    fn from_shift(shift: u64) -> Option<HSize> {
        match shift {
            21 => Some(HSize::Pmd),
            30 if gigantic_supported() => Some(HSize::Pud),
            _ => None,
        }
    }

    /// The size's name in messages ("2.00 MiB", as Linux's).
    fn name(self) -> &'static str {
        match self {
            HSize::Pmd => "2.00 MiB",
            HSize::Pud => "1.00 GiB",
        }
    }
}

/// Linux's `struct hstate` for one size, plus the reserve map of private
/// mappings.
pub struct HState {
    /// `nr_huge_pages`: pool pages, persistent and surplus.
    pub nr_huge_pages: u64,
    /// `free_huge_pages`.
    pub free_huge_pages: u64,
    /// `resv_huge_pages`.
    pub resv_huge_pages: u64,
    /// `surplus_huge_pages`.
    pub surplus_huge_pages: u64,
    /// `nr_overcommit_huge_pages` (/proc/sys/vm/nr_overcommit_hugepages).
    pub nr_overcommit_huge_pages: u64,
    /// Free pool pages (pfns), Linux's `hugepage_freelists`.
    free_list: Vec<u64>,
    /// Per address space, the huge pages (start addresses) reserved and
    /// not yet faulted (Linux's per-VMA `resv_map` of private mappings,
    /// kept by address, so VMA splits and merges need no bookkeeping).
    resv_map: BTreeMap<MmId, BTreeSet<u64>>,
    /// Faults that mapped a huge page.
    pub faults: u64,
    /// Private huge pages copied on write after fork.
    pub cow_copies: u64,
    /// Faults answered with SIGBUS (no page).
    pub sigbus: u64,
}

/// An empty pool.
const EMPTY: HState = HState {
    nr_huge_pages: 0,
    free_huge_pages: 0,
    resv_huge_pages: 0,
    surplus_huge_pages: 0,
    nr_overcommit_huge_pages: 0,
    free_list: Vec::new(),
    resv_map: BTreeMap::new(),
    faults: 0,
    cow_copies: 0,
    sigbus: 0,
};

/// The pools by [`HSize`], under one lock (Linux's `hugetlb_lock` also
/// covers every hstate).
pub static HUGETLB: SpinLock<[HState; 2]> = SpinLock::new_with("the hugetlb pools", rank::MISC, [EMPTY, EMPTY]);

/// The size mmap uses without `MAP_HUGE_*` (`default_hugepagesz=`), as an
/// [`HSize`] index.
static DEFAULT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The size the next `hugepages=N` fills (the last `hugepagesz=`).
static BOOT_SIZE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The default size.
pub fn default_size() -> HSize {
    HSIZES[DEFAULT.load(core::sync::atomic::Ordering::Relaxed)]
}

/// Whether this kernel has a 1 GiB pool: the CPU maps 1 GiB leaves.
pub fn gigantic_supported() -> bool {
    cpu_has_gbpages()
}

impl HState {
    /// Persistent pages (`persistent_huge_pages`): what nr_hugepages reads.
    pub fn persistent(&self) -> u64 {
        self.nr_huge_pages - self.surplus_huge_pages
    }

    /// Makes room in the free list for every pool page, so a page freed
    /// with the page allocator held ([`enqueue`](Self::enqueue), from an
    /// unmap) never makes the list allocate. Called without `PAGES`
    /// wherever the pool grows.
    fn room_for_all(&mut self) {
        let want = self.nr_huge_pages as usize;
        if self.free_list.capacity() < want {
            self.free_list.reserve(want - self.free_list.len());
        }
    }

    /// Takes a free page (`dequeue_hugetlb_folio`).
    fn dequeue(&mut self) -> Option<u64> {
        let pfn = self.free_list.pop()?;
        self.free_huge_pages -= 1;
        Some(pfn)
    }

    /// Puts a page whose last mapping went back on the free list
    /// (`free_huge_folio`); a surplus page goes back to the buddy
    /// allocator instead: the pfn to free then.
    fn enqueue(&mut self, pfn: u64) -> Option<u64> {
        if self.surplus_huge_pages > 0 {
            self.surplus_huge_pages -= 1;
            self.nr_huge_pages -= 1;
            return Some(pfn);
        }
        self.free_list.push(pfn);
        self.free_huge_pages += 1;
        None
    }
}

/// The counters of the default size's pool, for meminfo and the
/// descriptor: total, free, rsvd, surp, overcommit.
pub fn counters() -> [u64; 5] {
    size_counters(default_size())
}

/// The counters of pool `hs`: total, free, rsvd, surp, overcommit.
pub fn size_counters(hs: HSize) -> [u64; 5] {
    HUGETLB.with(|all| {
        let h = &all[hs as usize];
        [h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages, h.surplus_huge_pages, h.nr_overcommit_huge_pages]
    })
}

/// An order-9 block from the buddy allocator for the pool (Linux's
/// `alloc_buddy_hugetlb_folio`, `__GFP_RETRY_MAYFAIL`: reclaim and
/// compaction may run, the OOM killer may not), owned `HugeTlb` with the
/// pool's one reference. Called with no lock held.
fn alloc_pool_page(hs: HSize) -> Option<u64> {
    use super::page_alloc::{gfp, GfpMask};
    if hs == HSize::Pud {
        return alloc_gigantic();
    }
    let req = GfpMask {
        gfp: mm_core::buddy::GFP_HIGHUSER_MOVABLE,
        flags: gfp::KSWAPD_RECLAIM | gfp::DIRECT_RECLAIM | gfp::NORETRY,
    };
    let pfn = super::page_alloc::alloc_pages(HUGETLB_ORDER, req).ok()?;
    PAGES.with(|p| {
        let _ = p.buddy.set_owner(pfn, PageOwner::HugeTlb);
    });
    Some(pfn)
}

/// Pages in a gigantic page.
const GIGANTIC_PAGES: u64 = HSize::Pud.size() >> PAGE_SHIFT;

/// A 1 GiB page (Linux's `alloc_gigantic_folio` -> `alloc_contig_pages`
/// without CMA): the lowest 1 GiB-aligned range the buddy holds wholly
/// free, after the CPUs' page caches are drained and every deferred
/// chunk is handed over; failing that, after one compaction of all
/// memory (its migrate scanner empties the bottom of each zone). Its 256
/// blocks are owned `HugeTlb`, one reference each. Called with no lock
/// held.
fn alloc_gigantic() -> Option<u64> {
    let take = || {
        PAGES.with(|p| {
            while super::grow_locked(p).is_some() {}
            super::percpu::drain_all_locked(p);
            let start = p.buddy.find_contig_range(GIGANTIC_PAGES, GIGANTIC_PAGES)?;
            p.buddy.alloc_contig_range(start, GIGANTIC_PAGES).ok()?;
            for pfn in HSize::Pud.blocks(start) {
                let _ = p.buddy.set_owner(pfn, PageOwner::HugeTlb);
            }
            Some(start)
        })
    };
    take().or_else(|| {
        super::compaction::compact_memory();
        take()
    })
}

/// Gives a pool page back to the buddy allocator (`update_and_free_hugetlb_folio`).
fn free_pool_page(p: &mut PageAlloc, hs: HSize, pfn: u64) {
    let cpu = crate::arch::percpu::this_cpu().id;
    for b in hs.blocks(pfn) {
        let _ = p.buddy.set_owner(b, PageOwner::Unknown);
        crate::mm::tlbtrace::free(b, hs.block_order());
        if let Err(e) = p.buddy.free_pages(cpu, b, hs.block_order()) {
            kprintln!("hugetlb: freeing the pool page at pfn {:#x}: {}", b, e);
        }
    }
}

/// One more mapping of pool page `pfn`: a reference on each of its blocks.
fn get_huge_page(p: &mut PageAlloc, hs: HSize, pfn: u64) {
    for b in hs.blocks(pfn) {
        let _ = p.buddy.get_page(b);
    }
}

/// Linux's `set_max_huge_pages` (/proc/sys/vm/nr_hugepages): grows the
/// persistent pool to `count` pages (surplus pages become persistent
/// first) as far as the buddy allocator can, or shrinks it, freeing free
/// pages not reserved and turning the rest of the excess into surplus
/// pages (freed when their mappings go). Returns the persistent count
/// reached.
pub fn set_max_huge_pages(hs: HSize, count: u64) -> u64 {
    let i = hs as usize;
    // Surplus pages in use become persistent.
    HUGETLB.with(|all| {
        let h = &mut all[i];
        while h.surplus_huge_pages > 0 && count > h.persistent() {
            h.surplus_huge_pages -= 1;
        }
    });
    while HUGETLB.with(|all| all[i].persistent()) < count {
        let Some(pfn) = alloc_pool_page(hs) else { break };
        HUGETLB.with(|all| {
            let h = &mut all[i];
            h.nr_huge_pages += 1;
            h.free_list.push(pfn);
            h.free_huge_pages += 1;
            h.room_for_all();
        });
    }
    HUGETLB.with(|all| {
        let h = &mut all[i];
        // Never below what is in use or promised.
        let min_count = h.resv_huge_pages + h.nr_huge_pages - h.free_huge_pages;
        let target = count.max(min_count);
        PAGES.with(|p| {
            while target < h.persistent() && h.free_huge_pages > h.resv_huge_pages {
                let Some(pfn) = h.dequeue() else { break };
                h.nr_huge_pages -= 1;
                free_pool_page(p, hs, pfn);
            }
        });
        while count < h.persistent() {
            h.surplus_huge_pages += 1;
        }
        h.persistent()
    })
}

/// `nr_overcommit_hugepages` of pool `hs`: how many surplus pages may
/// exist. Gigantic pages cannot be surplus (Linux: `hstate_is_gigantic`
/// pages are never overcommitted), so that pool refuses any but 0.
pub fn set_overcommit(hs: HSize, n: u64) -> bool {
    if hs == HSize::Pud && n != 0 {
        return false;
    }
    HUGETLB.with(|all| all[hs as usize].nr_overcommit_huge_pages = n);
    true
}

/// Reserves the huge pages of `addrs` in pool `hs` for `mm` (Linux's
/// `hugetlb_reserve_pages` -> `hugetlb_acct_memory` ->
/// `gather_surplus_pages`): from the free pages not already promised,
/// else by allocating surplus pages within the overcommit limit. False
/// (nothing reserved) if it cannot.
fn reserve(hs: HSize, mm: MmId, addrs: core::ops::Range<u64>) -> bool {
    let i = hs as usize;
    let n = (addrs.end - addrs.start) >> hs.shift();
    loop {
        let need = HUGETLB.with(|all| {
            let h = &mut all[i];
            let avail = h.free_huge_pages - h.resv_huge_pages;
            if avail >= n {
                h.resv_huge_pages += n;
                let set = h.resv_map.entry(mm).or_default();
                for a in addrs.clone().step_by(hs.size() as usize) {
                    set.insert(a);
                }
                return Ok(());
            }
            let need = n - avail;
            if h.surplus_huge_pages + need > h.nr_overcommit_huge_pages {
                return Err(None);
            }
            Err(Some(need))
        });
        match need {
            Ok(()) => return true,
            Err(None) => return false,
            Err(Some(_)) => {
                // One surplus page at a time, the lock dropped around
                // the allocation; then look again.
                if alloc_surplus_page(hs, true).is_none() {
                    return false;
                }
            }
        }
    }
}

/// A new surplus page of pool `hs` (Linux's `alloc_surplus_hugetlb_folio`),
/// allocated with no lock held and counted only if the overcommit limit
/// still allows it once the lock is taken again (else given back: None).
/// `free`: the page joins the free list (a reservation wants it), else it
/// is the caller's to map.
fn alloc_surplus_page(hs: HSize, free: bool) -> Option<u64> {
    let pfn = alloc_pool_page(hs)?;
    let kept = HUGETLB.with(|all| {
        let h = &mut all[hs as usize];
        if h.surplus_huge_pages >= h.nr_overcommit_huge_pages {
            return false;
        }
        h.surplus_huge_pages += 1;
        h.nr_huge_pages += 1;
        if free {
            h.free_list.push(pfn);
            h.free_huge_pages += 1;
        }
        h.room_for_all();
        true
    });
    if !kept {
        PAGES.with(|p| free_pool_page(p, hs, pfn));
        return None;
    }
    Some(pfn)
}

/// Frees free surplus pages no reservation needs
/// (`return_unused_surplus_pages`), lock held.
fn return_unused_surplus(h: &mut HState, hs: HSize, p: &mut PageAlloc) {
    while h.surplus_huge_pages > 0 && h.free_huge_pages > h.resv_huge_pages {
        let Some(pfn) = h.dequeue() else { break };
        h.surplus_huge_pages -= 1;
        h.nr_huge_pages -= 1;
        free_pool_page(p, hs, pfn);
    }
}

/// Gives back `mm`'s reservations in `[start, end)` (unmap: pages never
/// faulted keep no promise; Linux's `hugetlb_vm_op_close`).
fn unreserve(h: &mut HState, mm: MmId, start: u64, end: u64) {
    if let Some(set) = h.resv_map.get_mut(&mm) {
        let gone: Vec<u64> = set.range(start..end).copied().collect();
        for a in &gone {
            set.remove(a);
        }
        h.resv_huge_pages -= gone.len() as u64;
        if set.is_empty() {
            h.resv_map.remove(&mm);
        }
    }
}

/// The pool a mmap's flags ask for (bits 26..31 hold the page size's
/// log2: `MAP_HUGE_2MB`, `MAP_HUGE_1GB`; none: the default size); None
/// (EINVAL, as Linux's `hstate_sizelog`) for a size with no pool here.
fn size_of_flags(flags: u64) -> Option<HSize> {
    match (flags >> MAP_HUGE_SHIFT) & 0x3f {
        0 => Some(default_size()),
        log => HSize::from_shift(log),
    }
}

/// `mmap(MAP_HUGETLB)` (the anonymous-mapping half of Linux's
/// `hugetlb_file_setup` + `hugetlbfs_file_mmap`): the length rounds up to
/// whole huge pages, the address is aligned to the page size; the range's
/// pages are reserved unless `MAP_NORESERVE` (ENOMEM if they cannot be);
/// a shared mapping is populated at once (module documentation).
pub fn mmap_hugetlb(
    mm: &mut crate::proc::mm::MmStruct,
    addr: u64,
    len: u64,
    prot: u64,
    flags: u64,
) -> Result<u64, i64> {
    use crate::proc::abi::{EINVAL, ENOMEM, MAP_FIXED, MAP_SHARED};
    let hs = size_of_flags(flags).ok_or(-EINVAL)?;
    let size = hs.size();
    let len = len.checked_add(size - 1).ok_or(-ENOMEM)? & !(size - 1);
    let shared = flags & MAP_SHARED != 0;
    let noreserve = flags & MAP_NORESERVE != 0 && !shared;
    let start = if flags & MAP_FIXED != 0 {
        if !addr.is_multiple_of(size) {
            return Err(-EINVAL);
        }
        mm.munmap(addr, len)?;
        addr
    } else {
        mm.unmapped_area_aligned(len, size).ok_or(-ENOMEM)?
    };
    if !noreserve && !reserve(hs, mm.id, start..start + len) {
        return Err(-ENOMEM);
    }
    let mut vflags = VmFlags(prot as u32) | VmFlags::HUGETLB;
    if hs == HSize::Pud {
        vflags = vflags | VmFlags::HUGETLB_1G;
    }
    if shared {
        vflags = vflags | VmFlags::SHARED;
    }
    if noreserve {
        vflags = vflags | VmFlags::NORESERVE;
    }
    if mm.vmas.insert(Vma::anon(start, start + len, vflags)).is_err() {
        HUGETLB.with(|all| {
            let h = &mut all[hs as usize];
            unreserve(h, mm.id, start, start + len);
            PAGES.with(|p| return_unused_surplus(h, hs, p));
        });
        return Err(-ENOMEM);
    }
    if shared {
        let vma = Vma::anon(start, start + len, vflags);
        for a in (start..start + len).step_by(size as usize) {
            if hugetlb_fault(mm, &vma, a, false).is_err() {
                let _ = mm.munmap(start, len);
                return Err(-ENOMEM);
            }
        }
    }
    Ok(start)
}

/// Whether an unmap of `[start, end)` may cut the hugetlb VMAs it meets
/// (only at their huge page boundaries, Linux's `hugetlb_vm_op_split`).
pub fn unmap_allowed(vmas: &mm_core::vma::VmaSet, start: u64, end: u64) -> bool {
    !vmas.iter().any(|v| {
        let cuts = |a: u64| !a.is_multiple_of(HSize::of_vma(v).size());
        v.flags.contains(VmFlags::HUGETLB)
            && v.start < end
            && v.end > start
            && ((start > v.start && cuts(start)) || (end < v.end && cuts(end)))
    })
}

/// The page-table pages' allocator of `mm` (counted in its `pt_pages`).
fn user_pt(pgd: u64) -> Mapper {
    super::paging::user_pt(pgd)
}

/// Unmaps the hugetlb VMA `v` of the address space (`pgd`, `id`):
/// every huge leaf is cleared, every CPU that may cache the range is
/// flushed, and only then does each page lose the leaf's reference (a
/// page whose last mapping goes returns to the pool, a surplus one to the
/// buddy allocator: another thread of the process must not still reach
/// it through its TLB, Linux's `__unmap_hugepage_range` with its
/// mmu_gather); the range's unused reservations are given back
/// (`hugetlb_vm_op_close`).
pub fn unmap_hugetlb_vma(pgd: u64, id: MmId, v: &Vma) {
    let hs = HSize::of_vma(v);
    let mut pages: Vec<u64> = Vec::new();
    let _ = user_pt(pgd).for_each_leaf(&mut direct_map(), v.start..v.end, LeafKinds::Present, |phys, l| {
        if l.slot.level() == hs.level() {
            let _ = l.slot.write(phys, Pte::NONE);
            pages.push((l.entry.0 & ADDR_MASK) >> PAGE_SHIFT);
        }
        true
    });
    if !pages.is_empty() {
        crate::arch::tlb::flush_range(pgd, v.start, v.end);
    }
    HUGETLB.with(|all| {
        let h = &mut all[hs as usize];
        PAGES.with(|p| {
            for &pfn in &pages {
                put_huge_page(h, hs, p, pfn);
            }
        });
        // The reserve map's nodes come from the heap, which takes the
        // page allocator: edited outside it.
        unreserve(h, id, v.start, v.end);
        PAGES.with(|p| return_unused_surplus(h, hs, p));
    });
}

/// Drops one mapping's reference to pool page `pfn`; at the pool's own
/// reference alone the page is free again.
fn put_huge_page(h: &mut HState, hs: HSize, p: &mut PageAlloc, pfn: u64) {
    let cpu = crate::arch::percpu::this_cpu().id;
    for b in hs.blocks(pfn) {
        // Free for the stale-TLB recorder when only the pool's reference
        // stays (the page can go to another mapping); a sharer's drop
        // is not.
        if p.buddy.page(b).is_some_and(|pg| pg.refcount == 2) {
            crate::mm::tlbtrace::free(b, hs.block_order());
        }
        if let Err(e) = p.buddy.free_pages(cpu, b, hs.block_order()) {
            kprintln!("hugetlb: dropping a mapping of pfn {:#x}: {}", b, e);
            return;
        }
    }
    if p.buddy.page(pfn).is_some_and(|pg| pg.refcount == 1) {
        if let Some(free) = h.enqueue(pfn) {
            free_pool_page(p, hs, free);
        }
    }
}

/// The leaf flags of a huge page of a VMA with `flags` (PS is bit 7 in a
/// PMD and a PUD alike).
fn huge_leaf(pa: u64, flags: VmFlags, writable: bool) -> Pte {
    Pte(pa | crate::proc::mm::leaf_flags(flags, writable) | PteFlags::PSE.0)
}

/// The table frames under the entry-table at `table` (of `level`) if
/// it maps nothing (only empty lower tables, as munmap leaves them), the
/// table itself included; None if anything is mapped or swapped there.
fn empty_tables(phys: &super::phys::KernelPhys, table: u64, level: Level, out: &mut Vec<u64>) -> Option<()> {
    for i in 0..512 {
        let e = Slot::new(mm_core::addr::PhysAddr(table), i, level).read(phys).ok()?;
        if e.0 == 0 {
            continue;
        }
        let lower = level.next_lower()?;
        if !e.is_present() || e.is_leaf_at(level) {
            return None;
        }
        empty_tables(phys, e.0 & ADDR_MASK, lower, out)?;
    }
    out.push(table);
    Some(())
}

/// The slot at `hs`'s leaf level for `haddr` in `mm`'s tables, creating
/// the upper tables. Tables left there by earlier 4 KiB mappings (munmap
/// keeps tables) are freed if empty, as Linux's `free_pgtables` would
/// have.
fn huge_slot(mm: &mut crate::proc::mm::MmStruct, hs: HSize, haddr: u64) -> Result<(Slot, Pte), FaultError> {
    let mut phys = direct_map();
    let level = hs.level();
    PAGES.with(|p| {
        let mut frames = crate::proc::fault::PtFrames { p, count: &mut mm.stat.pt_pages };
        let (slot, e) = user_pt(mm.pgd)
            .alloc_slot(&mut phys, &mut frames, VirtAddr(haddr), level, true)
            .map_err(|_| FaultError::Oom)?;
        if e.is_present() && !e.is_leaf_at(level) {
            let mut tables = Vec::new();
            let lower = level.next_lower().ok_or(FaultError::MapErr)?;
            if empty_tables(&phys, e.0 & ADDR_MASK, lower, &mut tables).is_none() {
                return Err(FaultError::MapErr);
            }
            slot.write(&mut phys, Pte::NONE).map_err(|_| FaultError::Oom)?;
            // A CPU of this mm may hold the unlinked entries in its
            // paging-structure caches: flushed before the tables are
            // reused (as munmap's free_pgtables does).
            crate::arch::tlb::flush_freed_tables(mm.pgd);
            for t in tables {
                frames.deallocate_frame(mm_core::addr::PhysAddr(t));
            }
            return Ok((slot, Pte::NONE));
        }
        Ok((slot, e))
    })
}

/// A free page of pool `hs` for a fault of `mm` at `haddr`: its
/// reservation if it has one (`Rsvd` falls), else an unreserved free
/// page, else a new surplus page within the overcommit limit; None:
/// SIGBUS (Linux's `alloc_hugetlb_folio` failing with -ENOSPC).
fn alloc_huge_page(hs: HSize, mm: MmId, haddr: Option<u64>) -> Option<u64> {
    let i = hs as usize;
    let got = HUGETLB.with(|all| {
        let h = &mut all[i];
        let reserved = haddr.is_some_and(|a| h.resv_map.get_mut(&mm).is_some_and(|s| s.remove(&a)));
        if reserved {
            h.resv_huge_pages -= 1;
            return Ok(h.dequeue());
        }
        if h.free_huge_pages > h.resv_huge_pages {
            return Ok(h.dequeue());
        }
        Err(h.surplus_huge_pages < h.nr_overcommit_huge_pages)
    });
    match got {
        Ok(pfn) => pfn,
        Err(false) => None,
        Err(true) => alloc_surplus_page(hs, false),
    }
}

/// Zeroes or copies a whole huge page of size `hs`.
fn fill_huge_page(hs: HSize, dst: u64, src: Option<u64>) {
    for i in 0..hs.size() >> PAGE_SHIFT {
        match src {
            Some(s) => super::phys::copy_page(dst + (i << PAGE_SHIFT), s + (i << PAGE_SHIFT)),
            None => super::phys::clear_page(dst + (i << PAGE_SHIFT)),
        }
    }
}

/// Counts a SIGBUS of pool `hs`.
fn sigbus(hs: HSize) -> FaultError {
    HUGETLB.with(|all| all[hs as usize].sigbus += 1);
    FaultError::SigBus
}

/// Linux's `hugetlb_fault` for a fault at `addr` in hugetlb VMA `vma`:
/// a missing page is taken from the pool (`hugetlb_no_page`), zeroed and
/// mapped by one leaf (PMD or PUD by the VMA's page size); a write to a
/// read-only private page shared since fork is copied unless this is its
/// last mapping (`hugetlb_wp`). `FaultError::SigBus` when the pool has no
/// page.
pub fn hugetlb_fault(mm: &mut crate::proc::mm::MmStruct, vma: &Vma, addr: u64, write: bool) -> Result<(), FaultError> {
    let hs = HSize::of_vma(vma);
    let haddr = addr & !(hs.size() - 1);
    let (slot, e) = huge_slot(mm, hs, haddr)?;
    let mut phys = direct_map();
    if e.is_present() {
        let pa = e.0 & ADDR_MASK;
        if !write || e.is_writable() {
            // Stale flags after mprotect, or a TLB older than the entry.
            let keep = PteFlags::USER.0 | PteFlags::NX.0;
            let _ = slot.write(&mut phys, Pte((e.0 & !keep) | (huge_leaf(pa, vma.flags, false).0 & keep)));
            cpu::invlpg(haddr);
            return Ok(());
        }
        // hugetlb_wp: reuse when no one else maps it (pool + this one).
        let pfn = pa >> PAGE_SHIFT;
        if PAGES.with(|p| p.buddy.page(pfn).map_or(0, |pg| pg.refcount)) == 2 {
            let _ = slot.write(&mut phys, Pte(e.0 | PteFlags::RW.0));
            cpu::invlpg(haddr);
            return Ok(());
        }
        let Some(new) = alloc_huge_page(hs, mm.id, None) else {
            return Err(sigbus(hs));
        };
        let new_pa = new << PAGE_SHIFT;
        fill_huge_page(hs, new_pa, Some(pa));
        PAGES.with(|p| get_huge_page(p, hs, new));
        let _ = slot.write(&mut phys, huge_leaf(new_pa, vma.flags, true));
        // Every CPU running a thread of this mm drops the old page's
        // translation before its reference goes (Linux's
        // huge_ptep_clear_flush): a thread still reading the old page
        // would miss this thread's writes to the copy.
        crate::arch::tlb::flush_range(mm.pgd, haddr, haddr + hs.size());
        HUGETLB.with(|all| {
            let h = &mut all[hs as usize];
            h.cow_copies += 1;
            PAGES.with(|p| put_huge_page(h, hs, p, pfn));
        });
        return Ok(());
    }
    let Some(pfn) = alloc_huge_page(hs, mm.id, Some(haddr)) else {
        return Err(sigbus(hs));
    };
    let pa = pfn << PAGE_SHIFT;
    fill_huge_page(hs, pa, None);
    PAGES.with(|p| get_huge_page(p, hs, pfn));
    let writable = vma.flags.contains(VmFlags::WRITE);
    let _ = slot.write(&mut phys, huge_leaf(pa, vma.flags, writable));
    HUGETLB.with(|all| all[hs as usize].faults += 1);
    Ok(())
}

/// Fork's copy of hugetlb VMA `v` (Linux's `copy_hugetlb_page_range`):
/// the child's huge leaves name the parent's pages (one more reference
/// each); private writable ones become read-only in both, so the first
/// write copies. The caller holds the page allocator and flushes the
/// parent's TLB. False if a table could not be allocated.
pub fn copy_hugetlb_range(p: &mut PageAlloc, parent_pgd: u64, child_pgd: u64, child_pt: &mut u64, v: &Vma) -> bool {
    let shared = v.flags.contains(VmFlags::SHARED);
    let hs = HSize::of_vma(v);
    let mut ok = true;
    let cpt = user_pt(child_pgd);
    let _ = user_pt(parent_pgd).for_each_leaf(&mut direct_map(), v.start..v.end, LeafKinds::Present, |phys, l| {
        if l.slot.level() != hs.level() {
            return true;
        }
        let mut frames = crate::proc::fault::PtFrames { p: &mut *p, count: &mut *child_pt };
        let Ok((cslot, _)) = cpt.alloc_slot(phys, &mut frames, l.va, hs.level(), true) else {
            ok = false;
            return false;
        };
        let mut e = l.entry;
        if !shared && e.is_writable() {
            e = e.without(PteFlags::RW);
            let _ = l.slot.write(phys, e);
        }
        get_huge_page(p, hs, (e.0 & ADDR_MASK) >> PAGE_SHIFT);
        let _ = cslot.write(phys, e);
        true
    });
    ok
}

/// Whether the last `hugepagesz=` named a size this kernel has (Linux's
/// `parsed_valid_hugepagesz`): a `hugepages=` after a refused one is
/// ignored, as Linux does, rather than filling another pool.
static PARSED_VALID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// `hugepages=N` at boot: fills the pool the last `hugepagesz=` named
/// (the default size before any; Linux's `hugetlb_hstate_alloc_pages`)
/// and says how far it got.
pub fn boot_hugepages(n: u64) {
    use core::sync::atomic::Ordering::Relaxed;
    if !PARSED_VALID.swap(true, Relaxed) {
        kprintln!("HugeTLB: hugepages={} does not follow a valid hugepagesz, ignoring", Dec(n));
        return;
    }
    let hs = HSIZES[BOOT_SIZE.load(Relaxed)];
    let got = set_max_huge_pages(hs, n);
    if got < n {
        kprintln!(
            "HugeTLB: allocating {} of page size {} failed.  Only allocated {} hugepages.",
            Dec(n),
            hs.name(),
            Dec(got)
        );
    } else {
        kprintln!("HugeTLB: registered {} page size, pre-allocated {} pages", hs.name(), Dec(got));
    }
}

/// Whether the CPU reports 1 GiB pages (CPUID 0x80000001 EDX bit 26,
/// `pdpe1gb`).
pub fn cpu_has_gbpages() -> bool {
    let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    max >= 0x8000_0001 && core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0
}

/// `hugepagesz=SIZE` (`default` false) or `default_hugepagesz=SIZE` at
/// boot: 2M, or 1G where the CPU reports 1 GiB pages; 1G elsewhere is
/// refused saying why (the CPU's pdpe1gb bit, measured here). False for
/// a size it does not know.
pub fn hugepagesz(v: &str, default: bool) -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    let hs = match v {
        "2M" | "2m" => HSize::Pmd,
        "1G" | "1g" if gigantic_supported() => HSize::Pud,
        "1G" | "1g" => {
            kprintln!(
                "HugeTLB: hugepagesz=1G refused: the CPU does not report 1 GiB pages (CPUID 0x80000001 EDX bit 26, pdpe1gb, clear). Using 2 MiB pages."
            );
            PARSED_VALID.store(false, Relaxed);
            return true;
        }
        _ => {
            PARSED_VALID.store(false, Relaxed);
            kprintln!("HugeTLB: hugepagesz={}: unsupported page size (2M, or 1G where the CPU has pdpe1gb)", v);
            return false;
        }
    };
    BOOT_SIZE.store(hs as usize, Relaxed);
    PARSED_VALID.store(true, Relaxed);
    if default {
        DEFAULT.store(hs as usize, Relaxed);
        kprintln!("HugeTLB: default_hugepagesz={}: {} pages by default", v, hs.name());
    } else {
        kprintln!("HugeTLB: hugepagesz={}: {} pages", v, hs.name());
    }
    true
}

/// The pool's controls by number (once a private system call; now
/// /proc/sys/vm/nr_hugepages and nr_overcommit_hugepages and meminfo's
/// HugePages_ lines serve programs), on the default size's pool: 0 sets
/// nr_hugepages (returns the persistent pages now), 1
/// nr_overcommit_hugepages, 2..=5 Total, Free, Rsvd, Surp, 6
/// nr_hugepages.
pub fn sys_hugetlb(op: u64, value: u64) -> i64 {
    let hs = default_size();
    match op {
        0 => set_max_huge_pages(hs, value) as i64,
        1 if set_overcommit(hs, value) => value as i64,
        2..=5 => size_counters(hs)[(op - 2) as usize] as i64,
        6 => HUGETLB.with(|all| all[hs as usize].persistent()) as i64,
        _ => -crate::proc::abi::EINVAL,
    }
}

/// meminfo's hugetlb lines (Linux's `hugetlb_report_meminfo`), to `w`:
/// the default size's pool, and `Hugetlb` over every pool.
pub fn meminfo(w: &mut dyn core::fmt::Write) {
    let [total, free, rsvd, surp, _] = counters();
    let all_kb: u64 = HSIZES.iter().map(|&hs| size_counters(hs)[0] * hs.kb()).sum();
    let _ = writeln!(w, "HugePages_Total: {}", Dec(total));
    let _ = writeln!(w, "HugePages_Free:  {}", Dec(free));
    let _ = writeln!(w, "HugePages_Rsvd:  {}", Dec(rsvd));
    let _ = writeln!(w, "HugePages_Surp:  {}", Dec(surp));
    let _ = writeln!(w, "Hugepagesize:   {} kB", DecPad(default_size().kb(), 8));
    let _ = writeln!(w, "Hugetlb:        {} kB", DecPad(all_kb, 8));
}

/// The descriptor's pool counters (the default size's).
pub fn describe(d: &mut mm_core::descriptor::HugeDesc) {
    let hs = default_size();
    if let Some([total, free, rsvd, surp, over]) = HUGETLB.try_with(|all| {
        let h = &all[hs as usize];
        [h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages, h.surplus_huge_pages, h.nr_overcommit_huge_pages]
    }) {
        d.hugepages_total = total;
        d.hugepages_free = free;
        d.hugepages_rsvd = rsvd;
        d.hugepages_surp = surp;
        d.nr_overcommit = over;
    }
    d.hugepage_size_kb = hs.kb();
}
