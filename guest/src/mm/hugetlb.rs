//! The hugetlb pool (Linux's mm/hugetlb.c, 2 MiB pages only): a pool of
//! order-9 blocks set aside from the buddy allocator (`hugepages=N` at
//! boot, [`set_max_huge_pages`] at run time, the one place the future
//! /proc/sys/vm/nr_hugepages writes), `mmap(MAP_HUGETLB)` with Linux's
//! reservations, and faults that map a pool page with one PMD leaf.
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
//! Page state: a pool page is an order-9 buddy block owned `HugeTlb`
//! whose refcount is the pool's one reference plus one per PMD leaf
//! mapping it (what the host's `--verify refcount` checks). It is never
//! on an LRU list and never migrated.
//!
//! Locks: [`HUGETLB`] (Linux's `hugetlb_lock`, rank MISC) ranks outside
//! the page allocator: pool changes take it first, then `PAGES`. Pool
//! pages are allocated with neither held (the allocation may compact).
//!
//! 1 GiB pages (`hugepagesz=1G`): refused at boot, with the reason
//! ([`hugepagesz`]).

use super::phys::direct_map;
use super::{PageAlloc, PAGES};
use crate::arch::cpu;
use crate::fmt::Dec;
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

/// log2 of the huge page size.
pub const HPAGE_SHIFT: u64 = 21;
/// The huge page size (2 MiB).
pub const HPAGE_SIZE: u64 = 1 << HPAGE_SHIFT;
/// The huge page's buddy order.
pub const HUGETLB_ORDER: u8 = mm_core::buddy::PAGEBLOCK_ORDER;
/// `MAP_HUGETLB` (Linux x86-64).
pub const MAP_HUGETLB: u64 = 0x4_0000;
/// `MAP_NORESERVE`.
pub const MAP_NORESERVE: u64 = 0x4000;
/// `MAP_HUGE_SHIFT`: a huge page size's log2 sits in flags bits 26..31.
const MAP_HUGE_SHIFT: u64 = 26;
/// The entry address bits.
const ADDR_MASK: u64 = mm_core::paging::entry::PTE_ADDR_MASK_MAX;

/// Linux's `struct hstate` for the one (2 MiB) size, plus the reserve
/// map of private mappings.
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

/// The pool.
pub static HUGETLB: SpinLock<HState> = SpinLock::new_with(
    "the hugetlb pool",
    rank::MISC,
    HState {
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
    },
);

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

/// The counters for meminfo and the descriptor: total, free, rsvd, surp,
/// overcommit.
pub fn counters() -> [u64; 5] {
    HUGETLB.with(|h| {
        [h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages, h.surplus_huge_pages, h.nr_overcommit_huge_pages]
    })
}

/// An order-9 block from the buddy allocator for the pool (Linux's
/// `alloc_buddy_hugetlb_folio`, `__GFP_RETRY_MAYFAIL`: reclaim and
/// compaction may run, the OOM killer may not), owned `HugeTlb` with the
/// pool's one reference. Called with no lock held.
fn alloc_pool_page() -> Option<u64> {
    use super::page_alloc::{gfp, GfpMask};
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

/// Gives a pool page back to the buddy allocator (`update_and_free_hugetlb_folio`).
fn free_pool_page(p: &mut PageAlloc, pfn: u64) {
    let _ = p.buddy.set_owner(pfn, PageOwner::Unknown);
    crate::mm::tlbtrace::free(pfn, HUGETLB_ORDER);
    if let Err(e) = p.buddy.free_pages(crate::arch::percpu::this_cpu().id, pfn, HUGETLB_ORDER) {
        kprintln!("hugetlb: freeing the pool page at pfn {:#x}: {}", pfn, e);
    }
}

/// Linux's `set_max_huge_pages` (/proc/sys/vm/nr_hugepages): grows the
/// persistent pool to `count` pages (surplus pages become persistent
/// first) as far as the buddy allocator can, or shrinks it, freeing free
/// pages not reserved and turning the rest of the excess into surplus
/// pages (freed when their mappings go). Returns the persistent count
/// reached.
pub fn set_max_huge_pages(count: u64) -> u64 {
    // Surplus pages in use become persistent.
    HUGETLB.with(|h| {
        while h.surplus_huge_pages > 0 && count > h.persistent() {
            h.surplus_huge_pages -= 1;
        }
    });
    while HUGETLB.with(|h| h.persistent()) < count {
        let Some(pfn) = alloc_pool_page() else { break };
        HUGETLB.with(|h| {
            h.nr_huge_pages += 1;
            h.free_list.push(pfn);
            h.free_huge_pages += 1;
            h.room_for_all();
        });
    }
    HUGETLB.with(|h| {
        // Never below what is in use or promised.
        let min_count = h.resv_huge_pages + h.nr_huge_pages - h.free_huge_pages;
        let target = count.max(min_count);
        PAGES.with(|p| {
            while target < h.persistent() && h.free_huge_pages > h.resv_huge_pages {
                let Some(pfn) = h.dequeue() else { break };
                h.nr_huge_pages -= 1;
                free_pool_page(p, pfn);
            }
        });
        while count < h.persistent() {
            h.surplus_huge_pages += 1;
        }
        h.persistent()
    })
}

/// `nr_overcommit_hugepages`: how many surplus pages may exist.
pub fn set_overcommit(n: u64) {
    HUGETLB.with(|h| h.nr_overcommit_huge_pages = n);
}

/// Reserves `n` huge pages for `mm` at `addrs` (Linux's
/// `hugetlb_reserve_pages` -> `hugetlb_acct_memory` ->
/// `gather_surplus_pages`): from the free pages not already promised,
/// else by allocating surplus pages within the overcommit limit. False
/// (nothing reserved) if it cannot.
fn reserve(mm: MmId, addrs: core::ops::Range<u64>) -> bool {
    let n = (addrs.end - addrs.start) >> HPAGE_SHIFT;
    loop {
        let need = HUGETLB.with(|h| {
            let avail = h.free_huge_pages - h.resv_huge_pages;
            if avail >= n {
                h.resv_huge_pages += n;
                let set = h.resv_map.entry(mm).or_default();
                for a in addrs.clone().step_by(HPAGE_SIZE as usize) {
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
                let Some(pfn) = alloc_pool_page() else { return false };
                let kept = HUGETLB.with(|h| {
                    if h.surplus_huge_pages < h.nr_overcommit_huge_pages {
                        h.surplus_huge_pages += 1;
                        h.nr_huge_pages += 1;
                        h.free_list.push(pfn);
                        h.free_huge_pages += 1;
                        h.room_for_all();
                        true
                    } else {
                        false
                    }
                });
                if !kept {
                    PAGES.with(|p| free_pool_page(p, pfn));
                    return false;
                }
            }
        }
    }
}

/// Frees free surplus pages no reservation needs
/// (`return_unused_surplus_pages`), lock held.
fn return_unused_surplus(h: &mut HState, p: &mut PageAlloc) {
    while h.surplus_huge_pages > 0 && h.free_huge_pages > h.resv_huge_pages {
        let Some(pfn) = h.dequeue() else { break };
        h.surplus_huge_pages -= 1;
        h.nr_huge_pages -= 1;
        free_pool_page(p, pfn);
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

/// What a huge page size in mmap's flags (bits 26..31, `MAP_HUGE_2MB`,
/// `MAP_HUGE_1GB`) asks for: Ok for the default or 2 MiB, EINVAL else
/// (no 1 GiB pool: see [`hugepagesz`]).
fn size_ok(flags: u64) -> bool {
    matches!((flags >> MAP_HUGE_SHIFT) & 0x3f, 0 | 21)
}

/// `mmap(MAP_HUGETLB)` (the anonymous-mapping half of Linux's
/// `hugetlb_file_setup` + `hugetlbfs_file_mmap`): the length rounds up to
/// whole huge pages, the address is 2 MiB aligned; the range's pages are
/// reserved unless `MAP_NORESERVE` (ENOMEM if they cannot be); a shared
/// mapping is populated at once (module documentation).
pub fn mmap_hugetlb(
    mm: &mut crate::proc::mm::MmStruct,
    addr: u64,
    len: u64,
    prot: u64,
    flags: u64,
) -> Result<u64, i64> {
    use crate::proc::abi::{EINVAL, ENOMEM, MAP_FIXED, MAP_SHARED};
    if !size_ok(flags) {
        return Err(-EINVAL);
    }
    let len = len.checked_add(HPAGE_SIZE - 1).ok_or(-ENOMEM)? & !(HPAGE_SIZE - 1);
    let shared = flags & MAP_SHARED != 0;
    let noreserve = flags & MAP_NORESERVE != 0 && !shared;
    let start = if flags & MAP_FIXED != 0 {
        if !addr.is_multiple_of(HPAGE_SIZE) {
            return Err(-EINVAL);
        }
        mm.munmap(addr, len)?;
        addr
    } else {
        mm.unmapped_area_aligned(len, HPAGE_SIZE).ok_or(-ENOMEM)?
    };
    if !noreserve && !reserve(mm.id, start..start + len) {
        return Err(-ENOMEM);
    }
    let mut vflags = VmFlags(prot as u32) | VmFlags::HUGETLB;
    if shared {
        vflags = vflags | VmFlags::SHARED;
    }
    if noreserve {
        vflags = vflags | VmFlags::NORESERVE;
    }
    if mm.vmas.insert(Vma::anon(start, start + len, vflags)).is_err() {
        HUGETLB.with(|h| {
            unreserve(h, mm.id, start, start + len);
            PAGES.with(|p| return_unused_surplus(h, p));
        });
        return Err(-ENOMEM);
    }
    if shared {
        let vma = Vma::anon(start, start + len, vflags);
        for a in (start..start + len).step_by(HPAGE_SIZE as usize) {
            if hugetlb_fault(mm, &vma, a, false).is_err() {
                let _ = mm.munmap(start, len);
                return Err(-ENOMEM);
            }
        }
    }
    Ok(start)
}

/// Whether an unmap of `[start, end)` may cut the hugetlb VMAs it meets
/// (only at huge page boundaries, Linux's `hugetlb_vm_op_split`).
pub fn unmap_allowed(vmas: &mm_core::vma::VmaSet, start: u64, end: u64) -> bool {
    let cuts = |a: u64| !a.is_multiple_of(HPAGE_SIZE);
    !vmas.iter().any(|v| {
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
/// every PMD leaf loses its reference (a page whose last mapping goes
/// returns to the pool, a surplus one to the buddy allocator) and the
/// range's unused reservations are given back (Linux's
/// `__unmap_hugepage_range` + `hugetlb_vm_op_close`). Allocates nothing.
pub fn unmap_hugetlb_vma(pgd: u64, id: MmId, v: &Vma) {
    let current = cpu::read_cr3() & ADDR_MASK == pgd;
    HUGETLB.with(|h| {
        PAGES.with(|p| {
            let _ = user_pt(pgd).for_each_leaf(&mut direct_map(), v.start..v.end, LeafKinds::Present, |phys, l| {
                if l.slot.level() != Level::Pmd {
                    return true;
                }
                let _ = l.slot.write(phys, Pte::NONE);
                if current {
                    cpu::invlpg(l.va.0);
                }
                put_huge_page(h, p, (l.entry.0 & ADDR_MASK) >> PAGE_SHIFT);
                true
            });
        });
        // The reserve map's nodes come from the heap, which takes the
        // page allocator: edited outside it.
        unreserve(h, id, v.start, v.end);
        PAGES.with(|p| return_unused_surplus(h, p));
    });
}

/// Drops one mapping's reference to pool page `pfn`; at the pool's own
/// reference alone the page is free again.
fn put_huge_page(h: &mut HState, p: &mut PageAlloc, pfn: u64) {
    crate::mm::tlbtrace::free(pfn, HUGETLB_ORDER);
    let cpu = crate::arch::percpu::this_cpu().id;
    if let Err(e) = p.buddy.free_pages(cpu, pfn, HUGETLB_ORDER) {
        kprintln!("hugetlb: dropping a mapping of pfn {:#x}: {}", pfn, e);
        return;
    }
    if p.buddy.page(pfn).is_some_and(|pg| pg.refcount == 1) {
        if let Some(free) = h.enqueue(pfn) {
            free_pool_page(p, free);
        }
    }
}

/// The PMD-leaf flags of a huge page of a VMA with `flags`.
fn huge_leaf(pa: u64, flags: VmFlags, writable: bool) -> Pte {
    Pte(pa | crate::proc::mm::leaf_flags(flags, writable) | PteFlags::PSE.0)
}

/// The PMD slot of `haddr` in `mm`'s tables, creating the upper tables.
/// A page table left there by earlier 4 KiB mappings (munmap keeps
/// tables) is freed if empty, as Linux's `free_pgtables` would have.
fn pmd_slot(mm: &mut crate::proc::mm::MmStruct, haddr: u64) -> Result<(Slot, Pte), FaultError> {
    let mut phys = direct_map();
    PAGES.with(|p| {
        let mut frames = crate::proc::fault::PtFrames { p, count: &mut mm.stat.pt_pages };
        let (slot, e) = user_pt(mm.pgd)
            .alloc_slot(&mut phys, &mut frames, VirtAddr(haddr), Level::Pmd, true)
            .map_err(|_| FaultError::Oom)?;
        if e.is_present() && !e.is_leaf_at(Level::Pmd) {
            let table = e.0 & ADDR_MASK;
            let empty = (0..512)
                .all(|i| Slot::new(mm_core::addr::PhysAddr(table), i, Level::Pte).read(&phys).is_ok_and(|x| x.0 == 0));
            if !empty {
                return Err(FaultError::MapErr);
            }
            slot.write(&mut phys, Pte::NONE).map_err(|_| FaultError::Oom)?;
            frames.deallocate_frame(mm_core::addr::PhysAddr(table));
            return Ok((slot, Pte::NONE));
        }
        Ok((slot, e))
    })
}

/// A free page for a fault of `mm` at `haddr`: its reservation if it has
/// one (`Rsvd` falls), else an unreserved free page, else a new surplus
/// page within the overcommit limit; None: SIGBUS (Linux's
/// `alloc_hugetlb_folio` failing with -ENOSPC).
fn alloc_huge_page(mm: MmId, haddr: Option<u64>) -> Option<u64> {
    let got = HUGETLB.with(|h| {
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
        Err(true) => {
            let pfn = alloc_pool_page()?;
            let kept = HUGETLB.with(|h| {
                if h.surplus_huge_pages < h.nr_overcommit_huge_pages {
                    h.surplus_huge_pages += 1;
                    h.nr_huge_pages += 1;
                    h.room_for_all();
                    true
                } else {
                    false
                }
            });
            if kept {
                Some(pfn)
            } else {
                PAGES.with(|p| free_pool_page(p, pfn));
                None
            }
        }
    }
}

/// Zeroes or copies a whole huge page.
fn fill_huge_page(dst: u64, src: Option<u64>) {
    for i in 0..512u64 {
        match src {
            Some(s) => super::phys::copy_page(dst + (i << PAGE_SHIFT), s + (i << PAGE_SHIFT)),
            None => super::phys::clear_page(dst + (i << PAGE_SHIFT)),
        }
    }
}

/// Linux's `hugetlb_fault` for a fault at `addr` in hugetlb VMA `vma`:
/// a missing page is taken from the pool (`hugetlb_no_page`), zeroed and
/// mapped by one PMD leaf; a write to a read-only private page shared
/// since fork is copied unless this is its last mapping
/// (`hugetlb_wp`). `FaultError::SigBus` when the pool has no page.
pub fn hugetlb_fault(mm: &mut crate::proc::mm::MmStruct, vma: &Vma, addr: u64, write: bool) -> Result<(), FaultError> {
    let haddr = addr & !(HPAGE_SIZE - 1);
    let (slot, e) = pmd_slot(mm, haddr)?;
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
        let Some(new) = alloc_huge_page(mm.id, None) else {
            HUGETLB.with(|h| h.sigbus += 1);
            return Err(FaultError::SigBus);
        };
        let new_pa = new << PAGE_SHIFT;
        fill_huge_page(new_pa, Some(pa));
        PAGES.with(|p| {
            let _ = p.buddy.get_page(new);
        });
        let _ = slot.write(&mut phys, huge_leaf(new_pa, vma.flags, true));
        cpu::invlpg(haddr);
        HUGETLB.with(|h| {
            h.cow_copies += 1;
            PAGES.with(|p| put_huge_page(h, p, pfn));
        });
        return Ok(());
    }
    let Some(pfn) = alloc_huge_page(mm.id, Some(haddr)) else {
        HUGETLB.with(|h| h.sigbus += 1);
        return Err(FaultError::SigBus);
    };
    let pa = pfn << PAGE_SHIFT;
    fill_huge_page(pa, None);
    PAGES.with(|p| {
        let _ = p.buddy.get_page(pfn);
    });
    let writable = vma.flags.contains(VmFlags::WRITE);
    let _ = slot.write(&mut phys, huge_leaf(pa, vma.flags, writable));
    HUGETLB.with(|h| h.faults += 1);
    Ok(())
}

/// Fork's copy of hugetlb VMA `v` (Linux's `copy_hugetlb_page_range`):
/// the child's PMD leaves name the parent's pages (one more reference
/// each); private writable ones become read-only in both, so the first
/// write copies. The caller holds the page allocator and flushes the
/// parent's TLB. False if a table could not be allocated.
pub fn copy_hugetlb_range(p: &mut PageAlloc, parent_pgd: u64, child_pgd: u64, child_pt: &mut u64, v: &Vma) -> bool {
    let shared = v.flags.contains(VmFlags::SHARED);
    let mut ok = true;
    let cpt = user_pt(child_pgd);
    let _ = user_pt(parent_pgd).for_each_leaf(&mut direct_map(), v.start..v.end, LeafKinds::Present, |phys, l| {
        if l.slot.level() != Level::Pmd {
            return true;
        }
        let mut frames = crate::proc::fault::PtFrames { p: &mut *p, count: &mut *child_pt };
        let Ok((cslot, _)) = cpt.alloc_slot(phys, &mut frames, l.va, Level::Pmd, true) else {
            ok = false;
            return false;
        };
        let mut e = l.entry;
        if !shared && e.is_writable() {
            e = e.without(PteFlags::RW);
            let _ = l.slot.write(phys, e);
        }
        let _ = p.buddy.get_page((e.0 & ADDR_MASK) >> PAGE_SHIFT);
        let _ = cslot.write(phys, e);
        true
    });
    ok
}

/// `hugepages=N` at boot: fills the pool (Linux's
/// `hugetlb_hstate_alloc_pages`) and says how far it got.
pub fn boot_hugepages(n: u64) {
    let got = set_max_huge_pages(n);
    if got < n {
        kprintln!(
            "HugeTLB: allocating {} of page size 2.00 MiB failed.  Only allocated {} hugepages.",
            Dec(n),
            Dec(got)
        );
    } else {
        kprintln!("HugeTLB: registered 2.00 MiB page size, pre-allocated {} pages", Dec(got));
    }
}

/// Whether the CPU reports 1 GiB pages (CPUID 0x80000001 EDX bit 26,
/// `pdpe1gb`).
pub fn cpu_has_gbpages() -> bool {
    let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    max >= 0x8000_0001 && core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0
}

/// `hugepagesz=SIZE` at boot: 2M is this pool's size; 1G is refused,
/// saying why (the CPU's pdpe1gb bit, measured here, and this kernel's
/// limits). False for a size it does not know.
pub fn hugepagesz(v: &str) -> bool {
    match v {
        "2M" | "2m" => {
            kprintln!("HugeTLB: hugepagesz=2M: the default size, 2.00 MiB pages");
            true
        }
        "1G" | "1g" => {
            if cpu_has_gbpages() {
                kprintln!(
                    "HugeTLB: hugepagesz=1G refused: the CPU reports pdpe1gb (CPUID 0x80000001 EDX bit 26 set), but this kernel maps hugetlb pages with PMD leaves only and its buddy allocator cannot hand out a 1 GiB block (largest order 10, no alloc_contig_range); under an emulated MMU (kvm_pvm) 1 GiB leaves also fault with a reserved-bit #PF. Using 2 MiB pages."
                );
            } else {
                kprintln!(
                    "HugeTLB: hugepagesz=1G refused: the CPU does not report 1 GiB pages (CPUID 0x80000001 EDX bit 26, pdpe1gb, clear). Using 2 MiB pages."
                );
            }
            true
        }
        _ => {
            kprintln!("HugeTLB: hugepagesz={}: unsupported page size (2M; 1G is refused)", v);
            false
        }
    }
}

/// The pool's controls by number (once a private system call; now
/// /proc/sys/vm/nr_hugepages and nr_overcommit_hugepages and meminfo's
/// HugePages_ lines serve programs): 0 sets nr_hugepages (returns the
/// persistent pages now), 1 nr_overcommit_hugepages, 2..=5 Total, Free,
/// Rsvd, Surp, 6 nr_hugepages.
pub fn sys_hugetlb(op: u64, value: u64) -> i64 {
    match op {
        0 => set_max_huge_pages(value) as i64,
        1 => {
            set_overcommit(value);
            value as i64
        }
        2..=5 => counters()[(op - 2) as usize] as i64,
        6 => HUGETLB.with(|h| h.persistent()) as i64,
        _ => -crate::proc::abi::EINVAL,
    }
}

/// meminfo's hugetlb lines (Linux's `hugetlb_report_meminfo`), to `w`.
pub fn meminfo(w: &mut dyn core::fmt::Write) {
    let [total, free, rsvd, surp, _] = counters();
    let _ = writeln!(w, "HugePages_Total: {}", Dec(total));
    let _ = writeln!(w, "HugePages_Free:  {}", Dec(free));
    let _ = writeln!(w, "HugePages_Rsvd:  {}", Dec(rsvd));
    let _ = writeln!(w, "HugePages_Surp:  {}", Dec(surp));
    let _ = writeln!(w, "Hugepagesize:       2048 kB");
    let _ = writeln!(w, "Hugetlb:        {} kB", Dec(total * (HPAGE_SIZE >> 10)));
}

/// The descriptor's pool counters.
pub fn describe(d: &mut mm_core::descriptor::HugeDesc) {
    if let Some([total, free, rsvd, surp, over]) = HUGETLB.try_with(|h| {
        [h.nr_huge_pages, h.free_huge_pages, h.resv_huge_pages, h.surplus_huge_pages, h.nr_overcommit_huge_pages]
    }) {
        d.hugepages_total = total;
        d.hugepages_free = free;
        d.hugepages_rsvd = rsvd;
        d.hugepages_surp = surp;
        d.nr_overcommit = over;
    }
    d.hugepage_size_kb = HPAGE_SIZE >> 10;
}
