//! User-mode page faults (Linux's `do_user_addr_fault` ->
//! `handle_mm_fault`): find the VMA (growing the stack when the fault is
//! just below a `VM_GROWSDOWN` one), check the access against its
//! permissions, then `do_anonymous_page` for a first touch (a read of
//! never-written private memory maps the shared zero page) or
//! `do_wp_page` for a write to a read-only PTE of a writable VMA (reuse
//! when this is the frame's last user, copy otherwise). A fault no VMA
//! allows is a segfault: the caller kills the process.

use super::mm::{get_page, leaf_flags, page_count, put_page, MmStruct, MM_GLOBALS, STACK_GUARD_GAP};
use crate::arch::cpu;
use crate::mm::phys::{clear_page, copy_page, direct_map, KernelPhys};
use crate::mm::{BuddyFrames, PageAlloc, PAGES};
use mm_core::abi::cpu as abi;
use mm_core::addr::{PhysAddr, VirtAddr, PAGE_SIZE, PTRS_PER_TABLE};
use mm_core::descriptor::fault_kind;
use mm_core::paging::swap::SwapEntry;
use mm_core::paging::{FrameAllocator, Level, Pte, PteFlags, Slot};
use mm_core::vma::{VmFlags, Vma};

/// #PF error-code bits (mm-core's ABI), as the trap frame carries them.
const PF_PROT: u64 = abi::PF_PRESENT as u64;
const PF_WRITE: u64 = abi::PF_WRITE as u64;
const PF_USER: u64 = abi::PF_USER as u64;
const PF_INSTR: u64 = abi::PF_FETCH as u64;
/// The address bits of an entry (a frame's physical address).
const ADDR_MASK: u64 = mm_core::paging::entry::PTE_ADDR_MASK_MAX;

pub use crate::mm::paging::user_pt;

/// Page-table pages for a process's tables: from the buddy allocator
/// (owner `PageTable`), counted in the process's `pt_pages`.
pub struct PtFrames<'a> {
    /// The page allocator.
    pub p: &'a mut PageAlloc,
    /// The counter to keep.
    pub count: &'a mut u64,
}

impl FrameAllocator for PtFrames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysAddr> {
        // On the task's behalf: its policy's nodes (Linux's
        // `pte_alloc_one` -> `alloc_pages`).
        let f = BuddyFrames(self.p).allocate_frame_with(super::mempolicy::task_gfp(crate::mm::GFP_KERNEL))?;
        *self.count += 1;
        Some(f)
    }
    fn zeroes_frames(&self) -> bool {
        true
    }
    fn deallocate_frame(&mut self, frame: PhysAddr) {
        *self.count -= 1;
        BuddyFrames(self.p).deallocate_frame(frame);
    }
}

/// The PTE slot for user address `va` in `mm`, allocating missing tables
/// (user-accessible: the leaf decides the rights).
#[inline(always)]
pub fn pte_alloc(p: &mut PageAlloc, phys: &mut KernelPhys, mm: &mut MmStruct, va: u64) -> Option<(Slot, Pte)> {
    let mut frames = PtFrames { p, count: &mut mm.stat.pt_pages };
    user_pt(mm.pgd).alloc_slot(phys, &mut frames, VirtAddr(va), Level::Pte, true).ok()
}

/// Why a fault could not be served (`SEGV_MAPERR` / `SEGV_ACCERR`, or no
/// memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// No VMA covers the address.
    MapErr,
    /// A VMA covers it but forbids the access.
    AccErr,
    /// Out of memory.
    Oom,
    /// The page could not be read back from swap (Linux's SIGBUS).
    Io,
    /// A hugetlb fault found no huge page (Linux's `VM_FAULT_SIGBUS`).
    SigBus,
}

/// Linux's `expand_stack`: a fault below a growing stack VMA, within the
/// stack limit and not closer than the guard gap to the mapping below,
/// extends the VMA down to the faulting page.
fn expand_stack(mm: &mut MmStruct, addr: u64) -> Option<Vma> {
    let above = *mm.vmas.find_vma(addr)?;
    if !above.flags.contains(VmFlags::GROWSDOWN) {
        return None;
    }
    let new_start = addr & !(PAGE_SIZE - 1);
    let top = above.end;
    // RLIMIT_STACK and RLIMIT_AS (Linux's acct_stack_growth): beyond
    // them the fault is a SIGSEGV.
    if top - new_start > mm.rlimits[super::mman::RLIMIT_STACK].0 || mm.may_expand_vm(above.start - new_start).is_err() {
        return None;
    }
    if let Some(below) = mm.vmas.iter().take_while(|v| v.start < new_start).last() {
        if below.end + STACK_GUARD_GAP > new_start {
            return None;
        }
    }
    mm.vmas.insert(Vma::anon(new_start, above.start, above.flags)).ok()?;
    mm.stat.stack_grows += 1;
    mm.publish_vmas(false);
    mm.vmas.find(addr).copied()
}

/// Serves a user page fault at `addr` with #PF error code `err`, and
/// records it in the fault log (mm/faultlog.rs) with its kind and result.
pub fn handle_mm_fault(mm: &mut MmStruct, addr: u64, err: u64) -> Result<(), FaultError> {
    use mm_core::descriptor::fault_result as res;
    let mut kind = fault_kind::NONE;
    let r = serve_fault(mm, addr, err, &mut kind);
    let result = match r {
        Ok(()) => res::OK,
        Err(FaultError::MapErr) => res::MAPERR,
        Err(FaultError::AccErr) => res::ACCERR,
        Err(FaultError::Oom) => res::OOM,
        Err(FaultError::Io) => res::IO,
        Err(FaultError::SigBus) => res::SIGBUS,
    };
    crate::mm::faultlog::record(addr, mm.pgd, err, kind, result);
    r
}

/// [`handle_mm_fault`]'s work; `kind` says which path served it.
fn serve_fault(mm: &mut MmStruct, addr: u64, err: u64, kind: &mut u8) -> Result<(), FaultError> {
    let vma = match mm.vmas.find(addr) {
        Some(v) => *v,
        None => expand_stack(mm, addr).ok_or(FaultError::MapErr)?,
    };
    let write = err & PF_WRITE != 0;
    let allowed = if err & PF_INSTR != 0 {
        vma.flags.contains(VmFlags::EXEC)
    } else if write {
        vma.flags.contains(VmFlags::WRITE)
    } else {
        vma.flags.0 & VmFlags::PROT_MASK.0 != 0
    };
    if !allowed {
        return Err(FaultError::AccErr);
    }
    mm.stat.faults += 1;
    if vma.flags.contains(VmFlags::HUGETLB) {
        *kind = fault_kind::HUGE;
        return crate::mm::hugetlb::hugetlb_fault(mm, &vma, addr, write);
    }
    // The memory cgroup's limits (mm/memcg.rs), before anything is
    // allocated: over high it reclaims the group's pages; at max it
    // reclaims until a page fits, or leaves a memcg OOM pending, which the
    // fault handler runs once the mm lock is dropped.
    if !crate::mm::memcg::try_charge(1) {
        return Err(FaultError::Oom);
    }
    // Transparent huge pages first (proc/thp.rs): a huge PMD here, or a
    // new huge page where the range allows one.
    if let Some(r) = super::thp::huge_fault(mm, &vma, addr, write) {
        *kind = fault_kind::HUGE;
        return r;
    }
    // Linux's `__handle_mm_fault`: the tables down to the PTE first
    // (allocated on the way), then `handle_pte_fault` on its slot. Pages
    // are allocated with no lock but the mm's held (the allocation may
    // reclaim, even from this address space), and the PTE is checked
    // again before it is written (`pte_same`): if reclaim changed it, the
    // CPU simply faults again.
    let va = addr & !(PAGE_SIZE - 1);
    let mut phys = direct_map();
    let (slot, pte) = PAGES.with(|p| pte_alloc(p, &mut phys, mm, va)).ok_or(FaultError::Oom)?;
    if pte.0 == 0 {
        if let mm_core::vma::VmaKind::File(ino) = vma.kind {
            *kind = fault_kind::FILE;
            return filemap_fault(mm, &vma, slot, va, write, ino as usize);
        }
        if !write && !vma.flags.contains(VmFlags::SHARED) {
            let zero = MM_GLOBALS.with(|g| g.zero_pa);
            slot.write(&mut phys, Pte(zero | leaf_flags(vma.flags, false))).map_err(|_| FaultError::Oom)?;
            mm.stat.zero_page_maps += 1;
            *kind = fault_kind::ZERO;
            return Ok(());
        }
        *kind = fault_kind::ANON;
        return anonymous_page(mm, &vma, slot, va);
    }
    if !pte.is_present() {
        *kind = fault_kind::SWAP_IN;
        return do_swap_page(mm, &vma, slot, pte, va, write);
    }
    if write && !pte.is_writable() {
        *kind = fault_kind::COW;
        return do_wp_page(mm, &vma, slot, addr, pte.0);
    }
    *kind = fault_kind::SPURIOUS;
    // Present and allowed: a PTE left stale by mprotect (the user bit)
    // or a TLB entry older than the PTE. Refresh the flags from the VMA.
    let keep = PteFlags::USER.0 | PteFlags::NX.0;
    PAGES.with(|_| {
        if pte_same(slot, pte) {
            let _ = slot.write(&mut phys, Pte((pte.0 & !keep) | (leaf_flags(vma.flags, false) & keep)));
        }
    });
    cpu::invlpg(addr);
    Ok(())
}

/// Linux's `filemap_fault` + `finish_fault` for a file VMA's empty PTE:
/// the page cache's page of the file at the VMA's offset (read in if
/// absent) is mapped, writable for a writable `MAP_SHARED` mapping (its
/// writes are the file's), read-only for a private one; a private write
/// then copies it (`do_cow_fault`, here through `do_wp_page`). A page
/// wholly beyond the end of the file is SIGBUS, as in Linux.
fn filemap_fault(mm: &mut MmStruct, vma: &Vma, slot: Slot, va: u64, write: bool, ino: usize) -> Result<(), FaultError> {
    use crate::fs::pagecache::{find_or_create_page, CacheError};
    let index = vma.pgoff + (va - vma.start) / PAGE_SIZE;
    let pa = find_or_create_page(ino, index).map_err(|e| match e {
        CacheError::NoMemory => FaultError::Oom,
        CacheError::BeyondEof | CacheError::NoFile | CacheError::Io => FaultError::Io,
    })?;
    let shared = vma.flags.contains(VmFlags::SHARED);
    let writable = shared && vma.flags.contains(VmFlags::WRITE);
    let mut flags = leaf_flags(vma.flags, writable);
    if writable && write {
        flags |= PteFlags::DIRTY.0;
    }
    let zero = MM_GLOBALS.with(|g| g.zero_pa);
    PAGES.with(|p| get_page(p, zero, pa));
    if !pte_same(slot, Pte::NONE) || slot.write(&mut direct_map(), Pte(pa | flags)).is_err() {
        PAGES.with(|p| put_page(p, zero, pa));
        return Ok(());
    }
    mm.stat.rss_pages += 1;
    if write && !shared {
        return do_wp_page(mm, vma, slot, va, pa | flags);
    }
    if !write {
        fault_around(mm, vma, slot, va, ino, leaf_flags(vma.flags, writable));
    }
    Ok(())
}

/// Pages Linux's `do_fault_around` maps around a read fault on a file
/// (`fault_around_bytes`, 64 KiB by default).
const FAULT_AROUND_PAGES: u64 = 16;

/// Linux's `do_fault_around` (`filemap_map_pages`): after a read fault on
/// a file mapping, the empty PTEs of the aligned 64 KiB window around it,
/// inside the VMA, the same page table and the file, map their pages of
/// the cache as the faulting one was (so a sequential reader takes one
/// fault per 16 pages, as on Linux). Linux maps only pages already cached
/// and up to date, the readahead its first fault started having brought
/// them in; here the initramfs is in memory, so the cache is filled for
/// the window directly. Opportunistic: it stops at the end of the file or
/// when memory is short, and no fault is counted for it.
fn fault_around(mm: &mut MmStruct, vma: &Vma, slot: Slot, va: u64, ino: usize, flags: u64) {
    use crate::fs::pagecache::find_or_create_page;
    let window = FAULT_AROUND_PAGES * PAGE_SIZE;
    let table = va & !(PTRS_PER_TABLE as u64 * PAGE_SIZE - 1);
    let start = (va & !(window - 1)).max(vma.start).max(table);
    let end = (start + window).min(vma.end).min(table + PTRS_PER_TABLE as u64 * PAGE_SIZE);
    let zero = MM_GLOBALS.with(|g| g.zero_pa);
    let mut phys = direct_map();
    for addr in (start..end).step_by(PAGE_SIZE as usize) {
        if addr == va {
            continue;
        }
        let s = Slot::new(slot.table(), ((addr - table) / PAGE_SIZE) as usize, slot.level());
        if !pte_same(s, Pte::NONE) {
            continue;
        }
        let Ok(pa) = find_or_create_page(ino, vma.pgoff + (addr - vma.start) / PAGE_SIZE) else { break };
        PAGES.with(|p| get_page(p, zero, pa));
        if !pte_same(s, Pte::NONE) || s.write(&mut phys, Pte(pa | flags)).is_err() {
            PAGES.with(|p| put_page(p, zero, pa));
            continue;
        }
        mm.stat.rss_pages += 1;
        mm.stat.fault_around_maps += 1;
    }
}

/// Whether `slot` still holds `pte` (Linux's `pte_same`, after an
/// allocation that may have reclaimed).
fn pte_same(slot: Slot, pte: Pte) -> bool {
    slot.read(&direct_map()).is_ok_and(|now| now == pte)
}

/// Linux's `do_anonymous_page` for `addr` outside the fault path (a
/// `MAP_SHARED` mapping populated at mmap): a zeroed frame, writable if the
/// VMA is. Shared pages stay off the LRU (without shmem they cannot be
/// swapped: nothing would find the page by offset again).
pub fn do_anonymous_page(mm: &mut MmStruct, addr: u64, flags: VmFlags) -> Result<(), FaultError> {
    let va = addr & !(PAGE_SIZE - 1);
    let mut phys = direct_map();
    let (slot, _) = PAGES.with(|p| pte_alloc(p, &mut phys, mm, va)).ok_or(FaultError::Oom)?;
    let vma = mm.vmas.find(va).copied().unwrap_or(Vma::anon(va, va + PAGE_SIZE, flags));
    anonymous_page(mm, &vma, slot, va)
}

/// A user frame for `va` in `vma` for the fault path, allocated with no
/// lock held (it may reclaim) under the VMA's or the task's NUMA policy;
/// physical address.
fn alloc_user_page(vma: &Vma, va: u64) -> Result<u64, FaultError> {
    let gfp = super::mempolicy::user_gfp(vma, va);
    let pfn = crate::mm::page_alloc::alloc_pages(0, gfp).map_err(|_| FaultError::Oom)?;
    PAGES.with(|p| {
        let _ = p.buddy.set_owner(pfn, mm_core::buddy::PageOwner::UserAnon);
        crate::mm::memcg::charge(&mut p.buddy, pfn, crate::mm::memcg::ChargeKind::Anon);
    });
    MM_GLOBALS.with(|g| g.user_frames_allocated += 1);
    Ok(pfn << mm_core::addr::PAGE_SHIFT)
}

/// `do_anonymous_page` on the PTE slot `slot` (empty) for `va`.
fn anonymous_page(mm: &mut MmStruct, vma: &Vma, slot: Slot, va: u64) -> Result<(), FaultError> {
    let pa = alloc_user_page(vma, va)?;
    clear_page(pa);
    let flags = leaf_flags(vma.flags, vma.flags.contains(VmFlags::WRITE));
    let zero = MM_GLOBALS.with(|g| g.zero_pa);
    if !pte_same(slot, Pte::NONE) || slot.write(&mut direct_map(), Pte(pa | flags)).is_err() {
        PAGES.with(|p| put_page(p, zero, pa));
        return Ok(());
    }
    mm.stat.anon_faults += 1;
    mm.stat.rss_pages += 1;
    if !vma.flags.contains(VmFlags::SHARED) {
        crate::mm::swap::new_anon_page(mm.id, vma, va, pa >> mm_core::addr::PAGE_SHIFT);
    }
    Ok(())
}

/// Linux's `do_swap_page`: the PTE holds a swap entry; the page comes from
/// the swap cache or the disk (mm/swap.rs), and replaces the entry,
/// writable only if no other swap PTE still names the slot (otherwise a
/// write copies, as after fork).
fn do_swap_page(mm: &mut MmStruct, vma: &Vma, slot: Slot, pte: Pte, va: u64, write: bool) -> Result<(), FaultError> {
    let Some(e) = SwapEntry::from_pte(pte) else {
        crate::kprintln!("do_swap_page: bad swap PTE {:#x} at {:#x}", pte.0, va);
        return Err(FaultError::MapErr);
    };
    let got = match crate::mm::swap::swapin(mm.id, vma, va, e.swp(), || pte_same(slot, pte)) {
        Ok(Some(g)) => g,
        Ok(None) => return Ok(()),
        Err(crate::mm::swap::SwapinError::NoMemory) => return Err(FaultError::Oom),
        Err(_) => return Err(FaultError::Io),
    };
    let writable = got.exclusive && vma.flags.contains(VmFlags::WRITE);
    let mut flags = leaf_flags(vma.flags, writable);
    if writable && write {
        flags |= PteFlags::DIRTY.0;
    }
    let _ = slot.write(&mut direct_map(), Pte(got.pa | flags));
    cpu::invlpg(va);
    mm.stat.rss_pages += 1;
    mm.stat.swap_ents = mm.stat.swap_ents.saturating_sub(1);
    if got.major {
        mm.stat.maj_faults += 1;
    } else {
        mm.stat.swapin_cached += 1;
    }
    Ok(())
}

/// Linux's `do_wp_page`: a write to a present read-only page of a
/// writable VMA (`pte` in `slot`). The zero page is replaced by a zeroed
/// frame; a frame whose only user is this mapping is made writable in
/// place (reuse); otherwise it is copied and this mapping's reference
/// dropped. The old frame is pinned across the allocation, so reclaim
/// leaves it alone.
fn do_wp_page(mm: &mut MmStruct, vma: &Vma, slot: Slot, addr: u64, pte: u64) -> Result<(), FaultError> {
    let zero = MM_GLOBALS.with(|g| g.zero_pa);
    let old = pte & ADDR_MASK;
    let mut phys = direct_map();
    // The check of the PTE and what follows from it happen under the page
    // allocator's lock, which reclaim and migration hold while they
    // rewrite PTEs they reach through the reverse map (the role of
    // Linux's page-table lock): an unmap between the check and the write
    // would otherwise be overwritten with a frame reclaim then frees.
    let reuse = PAGES.with(|p| {
        if !pte_same(slot, Pte(pte)) {
            return Some(false);
        }
        if old != zero && page_count(p, old) == 1 {
            return Some(slot.write(&mut phys, Pte(pte | PteFlags::RW.0)).is_ok());
        }
        // The pin, taken while the PTE still maps the frame: reclaim and
        // migration leave a page with references beyond its mappings.
        get_page(p, zero, old);
        None
    });
    match reuse {
        Some(true) => {
            cpu::invlpg(addr & !(PAGE_SIZE - 1));
            mm.stat.cow_reuses += 1;
            return Ok(());
        }
        // Changed meanwhile (reclaimed, migrated): the access faults again.
        Some(false) => return Ok(()),
        None => {}
    }
    let new = match alloc_user_page(vma, addr & !(PAGE_SIZE - 1)) {
        Ok(n) => n,
        Err(e) => {
            PAGES.with(|p| put_page(p, zero, old));
            return Err(e);
        }
    };
    if old == zero {
        clear_page(new);
    } else {
        copy_page(new, old);
    }
    let va = addr & !(PAGE_SIZE - 1);
    let installed = PAGES.with(|p| {
        if pte_same(slot, Pte(pte)) && slot.write(&mut phys, Pte(new | leaf_flags(vma.flags, true))).is_ok() {
            return true;
        }
        put_page(p, zero, new);
        put_page(p, zero, old);
        false
    });
    if !installed {
        return Ok(());
    }
    // Linux's ptep_clear_flush order: every CPU running this mm drops the
    // old translation (cpu::invlpg shoots down the mm's other CPUs and
    // waits for them) before the old frame can be freed; another sharer
    // may have unmapped it meanwhile, so these puts can be the last.
    if !crate::mm::tlbtrace::drop_flush(crate::mm::tlbtrace::NOFLUSH_COW) {
        cpu::invlpg(va);
    }
    // The pin and this mapping's reference.
    PAGES.with(|p| {
        put_page(p, zero, old);
        put_page(p, zero, old);
    });
    mm.stat.cow_copies += 1;
    if old == zero {
        mm.stat.rss_pages += 1;
    }
    // A private file mapping's copy is anonymous memory: the anon rmap
    // knows it by address, as for the copies exec makes of a program's
    // segments.
    let anon = Vma::anon(vma.start, vma.end, vma.flags);
    crate::mm::swap::new_anon_page(mm.id, &anon, va, new >> mm_core::addr::PAGE_SHIFT);
    Ok(())
}

/// The frame behind user address `addr` for a kernel access on the
/// process's behalf (Linux's `get_user_pages`): faults it in as a user
/// access would, honouring the VMA's permissions. Physical address of the
/// byte.
pub fn user_page(mm: &mut MmStruct, addr: u64, write: bool) -> Result<u64, FaultError> {
    // No reference: these callers fault pages in or look at the address
    // only; they do not touch the frame afterwards.
    get_user_page(mm, addr, write, false).map(|p| p.pa)
}

/// A user frame the kernel reads or writes through the direct map on a
/// process's behalf, held with a reference (Linux's `get_user_pages`
/// with `FOLL_GET`) until the guard drops. The reference is taken under
/// the page allocator's lock while the PTE still maps the frame, and
/// reclaim and migration leave alone a page with references beyond its
/// mappings: without it, reclaim on another CPU could unmap and free the
/// frame (or migration copy it away) while the kernel still writes into
/// it, the write landing in a page someone else may own by then.
pub struct PinnedPage {
    /// Physical address of the byte asked for.
    pub pa: u64,
    /// The order-0 frame holding the reference (none for the zero pages
    /// and hugetlb pages, which neither reclaim nor migration takes; the
    /// caller's mm lock keeps their mapping).
    pfn: Option<u64>,
}

impl Drop for PinnedPage {
    fn drop(&mut self) {
        if let Some(pfn) = self.pfn {
            PAGES.with(|p| crate::mm::swap::put_user_page(p, pfn));
        }
    }
}

/// [`user_page`] with the frame held (see [`PinnedPage`]).
pub fn pin_user_page(mm: &mut MmStruct, addr: u64, write: bool) -> Result<PinnedPage, FaultError> {
    get_user_page(mm, addr, write, true)
}

/// The byte's frame, faulted in as a user access would be, with a
/// reference if `pin` (and the frame takes one).
fn get_user_page(mm: &mut MmStruct, addr: u64, write: bool, pin: bool) -> Result<PinnedPage, FaultError> {
    let zero = MM_GLOBALS.with(|g| g.zero_pa);
    for _ in 0..3 {
        let got = PAGES.with(|p| {
            let (pte, size) = user_pt(mm.pgd)
                .lookup(&direct_map(), VirtAddr(addr))
                .map_or((Pte::NONE, PAGE_SIZE), |(s, e)| (e, s.page_size().map_or(PAGE_SIZE, |z| z.bytes())));
            if !(pte.is_present() && pte.is_user() && (!write || pte.is_writable())) {
                return Err(pte);
            }
            let pa = (pte.0 & ADDR_MASK & !(size - 1)) | (addr & (size - 1));
            let pfn = pa >> mm_core::addr::PAGE_SHIFT;
            let order0 = pin && pa & !(PAGE_SIZE - 1) != zero && p.buddy.page(pfn).is_some_and(|pg| pg.order == 0);
            let pinned = (order0 && p.buddy.get_page(pfn).is_ok()).then_some(pfn);
            Ok(PinnedPage { pa, pfn: pinned })
        });
        let pte = match got {
            Ok(page) => return Ok(page),
            Err(pte) => pte,
        };
        let err = PF_USER | if write { PF_WRITE } else { 0 } | if pte.is_present() { PF_PROT } else { 0 };
        handle_mm_fault(mm, addr, err)?;
    }
    Err(FaultError::AccErr)
}
