//! The rest of the address-space system calls (Linux's mm/mremap.c,
//! mm/mincore.c, mm/msync.c, the rlimit side of kernel/sys.c and
//! mm/mmap.c's `may_expand_vm`) and the overcommit charge of a mapping
//! (the policy itself is mm/overcommit.rs).
//!
//! - `mremap` shrinks in place, grows in place when the range after the
//!   mapping is free, and otherwise (MREMAP_MAYMOVE, or MREMAP_FIXED to a
//!   given address) moves it: the page-table entries move, the pages do
//!   not (no copy, no fault afterwards; swap entries move too), and the
//!   reverse map follows (mm-core's `AnonRmap::move_range`).
//! - `mincore` reports resident pages from the page tables.
//! - `msync` checks its range and flags and succeeds: anonymous and
//!   private memory has nothing to write back, and file pages live in the
//!   page cache of in-memory file systems (no device behind them).
//! - RLIMIT_AS caps the address space (mmap, brk, mremap, stack growth:
//!   ENOMEM, or SIGSEGV for the stack), RLIMIT_STACK the stack's growth.

use super::abi::{EFAULT, EINVAL, ENOMEM, MAP_ANONYMOUS, MAP_HUGETLB, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED};
use super::fault::{user_pt, PtFrames};
use super::mm::{Errno, MmStruct, TASK_SIZE};
use super::syscall::{copy_from_user, copy_to_user, with_mm};
use crate::mm::huge_memory::HPAGE_PMD_SIZE;
use crate::mm::overcommit::{vm_enough_memory, vm_unacct_memory, OVERCOMMIT_NEVER};
use crate::mm::phys::direct_map;
use crate::mm::swap::SWAP;
use crate::mm::PAGES;
use alloc::vec::Vec;
use mm_core::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use mm_core::paging::{LeafKinds, Level, Pte};
use mm_core::vma::{VmFlags, Vma};

/// Linux's `VM_ACCOUNT`: the VMA is charged to Committed_AS.
pub const VM_ACCOUNT: VmFlags = VmFlags(0x0010_0000);
/// Number of resource limits (`RLIM_NLIMITS`).
pub const RLIM_NLIMITS: usize = 16;
/// `RLIMIT_STACK`.
pub const RLIMIT_STACK: usize = 3;
/// `RLIMIT_NOFILE`.
const RLIMIT_NOFILE: usize = 7;
/// `RLIMIT_AS`.
pub const RLIMIT_AS: usize = 9;
/// `RLIM_INFINITY`.
const RLIM_INFINITY: u64 = u64::MAX;
const EPERM: i64 = 1;
const ESRCH: i64 = 3;

/// The limits a process starts with (Linux's INIT_RLIMITS: an 8 MiB
/// stack, the descriptor table's size, RLIMIT_SIGPENDING from the RAM as
/// `fork_init` sets it, the rest unlimited).
pub fn default_rlimits() -> [(u64, u64); RLIM_NLIMITS] {
    let mut r = [(RLIM_INFINITY, RLIM_INFINITY); RLIM_NLIMITS];
    r[RLIMIT_STACK] = (super::mm::STACK_LIMIT, RLIM_INFINITY);
    let nofile = crate::fs::file::NR_OPEN as u64;
    r[RLIMIT_NOFILE] = (nofile, nofile);
    let ram = crate::mm::STATS.with(|s| s.total_ram);
    let sigpending = super::signal::default_sigpending_limit(ram);
    r[super::signal::RLIMIT_SIGPENDING] = (sigpending, sigpending);
    r
}

/// Whether an anonymous mapping with these flags is charged (Linux's
/// `accountable_mapping` for anonymous memory): shared memory, or
/// private writable memory, unless MAP_NORESERVE outside mode 2. Hugetlb
/// mappings are not: the pool's reservations account for them (Linux
/// exempts hugetlbfs files too).
pub fn accountable(flags: u64, prot: u64) -> bool {
    if flags & MAP_HUGETLB != 0 {
        return false;
    }
    if flags & MAP_NORESERVE != 0 && crate::mm::overcommit::overcommit_memory() != OVERCOMMIT_NEVER {
        return false;
    }
    flags & MAP_ANONYMOUS != 0 && (flags & MAP_SHARED != 0 || (flags & MAP_PRIVATE != 0 && prot & 2 != 0))
}

fn accounted_pages<'a>(vmas: impl Iterator<Item = &'a Vma>) -> u64 {
    vmas.filter(|v| v.flags.contains(VM_ACCOUNT)).map(|v| v.len() / PAGE_SIZE).sum()
}

/// Charges the accounted VMAs of `vmas` (fork's copy); false if the
/// policy refuses.
pub fn account<'a>(vmas: impl Iterator<Item = &'a Vma>) -> bool {
    vm_enough_memory(accounted_pages(vmas))
}

/// Credits back the accounted VMAs of `vmas` (unmapped or exited).
pub fn unaccount<'a>(vmas: impl Iterator<Item = &'a Vma>) {
    vm_unacct_memory(accounted_pages(vmas));
}

impl MmStruct {
    /// Bytes of `[start, end)` that are mapped.
    pub fn mapped_bytes(&self, start: u64, end: u64) -> u64 {
        self.vmas.iter().filter(|v| v.end > start && v.start < end).map(|v| v.end.min(end) - v.start.max(start)).sum()
    }

    /// Linux's `may_expand_vm`: -ENOMEM if `bytes` more address space
    /// would pass RLIMIT_AS.
    pub fn may_expand_vm(&self, bytes: u64) -> Result<(), Errno> {
        let total: u64 = self.vmas.iter().map(|v| v.len()).sum();
        if total.saturating_add(bytes) > self.rlimits[RLIMIT_AS].0 {
            return Err(-ENOMEM);
        }
        Ok(())
    }

    /// Moves the page-table entries of `[old, old + len)` to `new`
    /// (Linux's `move_page_tables`): present pages and swap entries alike,
    /// without touching the pages. The destination has no entries.
    ///
    /// A transparent huge page's PMD leaf (the huge zero page's too) moves
    /// whole when it lies wholly inside the range and its destination is
    /// 2 MiB-aligned with an empty PMD there (Linux's `move_huge_pmd`);
    /// otherwise it is split first (`split_huge_pmd`) and its 512 PTEs
    /// move one by one, as Linux does when the extent is not a whole PMD.
    fn move_page_tables(&mut self, old: u64, new: u64, len: u64) -> Result<(), Errno> {
        let end = old + len;
        let mut phys = direct_map();
        // The huge leaves the range meets, and which of them move whole.
        let mut huge: Vec<u64> = Vec::new();
        let _ = user_pt(self.pgd).for_each_leaf(&mut phys, old..end, LeafKinds::Present, |_, l| {
            if l.slot.level() == Level::Pmd {
                huge.push(l.va.0);
            }
            true
        });
        for &h in &huge {
            let inside = h >= old && h + HPAGE_PMD_SIZE <= end;
            let to = new.wrapping_add(h.wrapping_sub(old));
            if !(inside && to.is_multiple_of(HPAGE_PMD_SIZE) && self.empty_pmd_at(to)?) {
                let Some((slot, _)) = user_pt(self.pgd).lookup(&phys, VirtAddr(h)) else { continue };
                if slot.level() == Level::Pmd && !super::thp::split_huge_pmd(self, slot, h) {
                    return Err(-ENOMEM);
                }
            }
        }
        // Every leaf left in the range now lies wholly inside it.
        let mut moved: Vec<(u64, Pte, Level)> = Vec::new();
        let _ = user_pt(self.pgd).for_each_leaf(&mut phys, old..end, LeafKinds::NonNone, |phys, l| {
            moved.push((l.va.0, l.entry, l.slot.level()));
            let _ = l.slot.write(phys, Pte::NONE);
            true
        });
        crate::arch::tlb::flush_range(self.pgd, 0, crate::arch::tlb::ALL);
        // A leaf below `old` cannot be here (the huge ones sticking out
        // were split above); were one here, it would stay put.
        let dest = |va: u64| if va < old { va } else { new + (va - old) };
        let placed = PAGES.with(|p| {
            for (i, &(va, e, level)) in moved.iter().enumerate() {
                let mut frames = PtFrames { p: &mut *p, count: &mut self.stat.pt_pages };
                match user_pt(self.pgd).alloc_slot(&mut phys, &mut frames, VirtAddr(dest(va)), level, true) {
                    Ok((slot, _)) => {
                        let _ = slot.write(&mut phys, e);
                    }
                    Err(_) => return i,
                }
            }
            moved.len()
        });
        if placed == moved.len() {
            return Ok(());
        }
        // No memory for a table: everything goes back where it was, as
        // Linux moves the moved part back. The old tables still exist, so
        // this needs no memory.
        for &(va, _, _) in &moved[..placed] {
            if let Some((slot, _)) = user_pt(self.pgd).lookup(&phys, VirtAddr(dest(va))) {
                let _ = slot.write(&mut phys, Pte::NONE);
            }
        }
        crate::arch::tlb::flush_range(self.pgd, 0, crate::arch::tlb::ALL);
        PAGES.with(|p| {
            for &(va, e, level) in &moved {
                let mut frames = PtFrames { p: &mut *p, count: &mut self.stat.pt_pages };
                if let Ok((slot, _)) = user_pt(self.pgd).alloc_slot(&mut phys, &mut frames, VirtAddr(va), level, true) {
                    let _ = slot.write(&mut phys, e);
                }
            }
        });
        Err(-ENOMEM)
    }

    /// Whether the PMD slot for `va` (2 MiB-aligned, in an unmapped range)
    /// can take a huge leaf: empty, the tables above it made if missing.
    /// A page table left there (munmap keeps one a neighbouring VMA can
    /// still use) must be empty, as the range is unmapped: it is freed. -ENOMEM if a table above was missing
    /// and no page was free.
    fn empty_pmd_at(&mut self, va: u64) -> Result<bool, Errno> {
        let mut phys = direct_map();
        let pt = user_pt(self.pgd);
        let (slot, e) = PAGES
            .with(|p| {
                let mut frames = PtFrames { p, count: &mut self.stat.pt_pages };
                pt.alloc_slot(&mut phys, &mut frames, VirtAddr(va), Level::Pmd, true)
            })
            .map_err(|_| -ENOMEM)?;
        if e.0 == 0 {
            return Ok(true);
        }
        if !e.is_present() || e.is_leaf_at(Level::Pmd) {
            return Ok(false);
        }
        let table = PhysAddr(e.0 & mm_core::paging::entry::PTE_ADDR_MASK_MAX);
        if mm_core::mem::PhysMem::find_nonzero_u64(&phys, table, 512).map_or(true, |f| f.is_some()) {
            return Ok(false);
        }
        let _ = slot.write(&mut phys, Pte::NONE);
        crate::arch::tlb::flush_range(self.pgd, va, va + HPAGE_PMD_SIZE);
        PAGES.with(|p| {
            let mut frames = PtFrames { p, count: &mut self.stat.pt_pages };
            mm_core::paging::FrameAllocator::deallocate_frame(&mut frames, table);
        });
        Ok(true)
    }

    /// Linux's `move_vma`: `[old, old + old_len)` of `vma` becomes
    /// `[new, new + new_len)` (the caller made room there); the pages
    /// keep their offsets, so the VMA keeps its `vm_pgoff`.
    fn move_vma(&mut self, vma: Vma, old: u64, old_len: u64, new: u64, new_len: u64) -> Result<u64, Errno> {
        let pgoff = vma.pgoff + (old - vma.start) / PAGE_SIZE;
        let moved = Vma { start: new, end: new + new_len, pgoff, ..vma };
        self.vmas.insert(moved).map_err(|_| -ENOMEM)?;
        if let Err(e) = self.move_page_tables(old, new, old_len) {
            // Entries that could not move went back; undo the new VMA.
            let _ = self.vmas.munmap(new, new + new_len);
            return Err(e);
        }
        SWAP.with(|s| s.rmap.move_range(self.id, old, old + old_len, new));
        // The old range is empty now: drop its VMA without a charge
        // change (the charge moved with it), and the page tables it used
        // that no VMA left can use.
        let _ = self.vmas.munmap(old, old + old_len);
        self.free_unused_tables(old, old + old_len);
        if vma.flags.contains(VmFlags::SHARED) {
            self.populate_shared(new + old_len, new + new_len, vma.flags)?;
        }
        Ok(new)
    }

    /// A shared anonymous mapping's new pages exist at once (see `mmap`).
    fn populate_shared(&mut self, start: u64, end: u64, flags: VmFlags) -> Result<(), Errno> {
        for va in (start..end).step_by(PAGE_SIZE as usize) {
            super::fault::do_anonymous_page(self, va, flags).map_err(|_| -ENOMEM)?;
        }
        Ok(())
    }

    /// `mremap(old, old_len, new_len, flags, new_addr)`.
    pub fn mremap(&mut self, old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> Result<u64, Errno> {
        const MREMAP_MAYMOVE: u64 = 1;
        const MREMAP_FIXED: u64 = 2;
        let page_up = |a: u64| a.checked_add(PAGE_SIZE - 1).map(|a| a & !(PAGE_SIZE - 1));
        if !old.is_multiple_of(PAGE_SIZE)
            || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED) != 0
            || (flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0)
        {
            return Err(-EINVAL);
        }
        let (Some(old_len), Some(new_len)) = (page_up(old_len), page_up(new_len)) else { return Err(-EINVAL) };
        // old_len 0 (a second mapping of shared memory) is not supported.
        if new_len == 0 || old_len == 0 || old.checked_add(old_len).is_none_or(|e| e > TASK_SIZE) {
            return Err(-EINVAL);
        }
        // The whole old range must lie in one VMA (Linux's vma_to_resize).
        let vma = *self.vmas.find(old).ok_or(-EFAULT)?;
        if vma.flags.contains(VmFlags::HUGETLB) {
            return self.mremap_hugetlb(old, old_len, new_len, flags);
        }
        if old + old_len > vma.end {
            return Err(-EFAULT);
        }
        let charge = |grow: u64| -> Result<(), Errno> {
            if vma.flags.contains(VM_ACCOUNT) && !vm_enough_memory(grow / PAGE_SIZE) {
                return Err(-ENOMEM);
            }
            Ok(())
        };
        let uncharge = |grow: u64| {
            if vma.flags.contains(VM_ACCOUNT) {
                vm_unacct_memory(grow / PAGE_SIZE);
            }
        };
        if flags & MREMAP_FIXED != 0 {
            let end = new_addr.checked_add(new_len).ok_or(-EINVAL)?;
            if !new_addr.is_multiple_of(PAGE_SIZE) || new_addr < 0x10000 || end > TASK_SIZE {
                return Err(-EINVAL);
            }
            if new_addr < old + old_len && old < end {
                return Err(-EINVAL); // overlapping ranges
            }
            let grow = new_len.saturating_sub(old_len);
            self.may_expand_vm(grow.saturating_sub(self.mapped_bytes(new_addr, end)))?;
            charge(grow)?;
            if let Err(e) = self.munmap(new_addr, new_len) {
                uncharge(grow);
                return Err(e);
            }
            let mut moving = old_len;
            if old_len > new_len {
                self.munmap(old + new_len, old_len - new_len)?;
                moving = new_len;
            }
            return self.move_vma(vma, old, moving, new_addr, new_len).inspect_err(|_| uncharge(grow));
        }
        if new_len <= old_len {
            if new_len < old_len {
                self.munmap(old + new_len, old_len - new_len)?;
            }
            return Ok(old);
        }
        let grow = new_len - old_len;
        self.may_expand_vm(grow)?;
        let tail = old + old_len;
        let in_place = tail == vma.end
            && tail.checked_add(grow).is_some_and(|e| e <= TASK_SIZE)
            && self.vmas.find_intersection(tail, tail + grow).is_none();
        if in_place {
            charge(grow)?;
            let more = Vma { start: tail, end: tail + grow, pgoff: vma.pgoff + (tail - vma.start) / PAGE_SIZE, ..vma };
            if self.vmas.insert(more).is_err() {
                uncharge(grow);
                return Err(-ENOMEM);
            }
            if vma.flags.contains(VmFlags::SHARED) {
                self.populate_shared(tail, tail + grow, vma.flags)?;
            }
            return Ok(old);
        }
        if flags & MREMAP_MAYMOVE == 0 {
            return Err(-ENOMEM);
        }
        // Linux's mremap asks `get_unmapped_area` with no hint, so an
        // anonymous private mapping whose new length is a multiple of 2 MiB
        // moves to a 2 MiB-aligned place and its PMD leaves move whole
        // (`move_page_tables`) instead of being split.
        let new = self.get_unmapped_area(new_len, vma.flags, vma.kind == mm_core::vma::VmaKind::Anon).ok_or(-ENOMEM)?;
        charge(grow)?;
        self.move_vma(vma, old, old_len, new, new_len).inspect_err(|_| uncharge(grow))
    }

    /// mremap of a hugetlb mapping, as Linux before 5.16 (`vma_to_resize`
    /// refused `is_vm_hugetlb_page` with -EINVAL): a shrink is a munmap of
    /// the tail (whole huge pages, else -EINVAL, as munmap), the same
    /// length without MREMAP_FIXED is a no-op, and every move or growth
    /// is -EINVAL. Linux 5.16 on also moves (and shrinks) a hugetlb
    /// mapping when both addresses are 2 MiB-aligned, still refusing
    /// growth (`align_hugetlb`: its reservation map cannot be split):
    /// moving a pool page's PMD and its reservation is not modelled.
    fn mremap_hugetlb(&mut self, old: u64, old_len: u64, new_len: u64, flags: u64) -> Result<u64, Errno> {
        const MREMAP_FIXED: u64 = 2;
        if flags & MREMAP_FIXED != 0 || new_len > old_len {
            return Err(-EINVAL);
        }
        if new_len < old_len {
            self.munmap(old + new_len, old_len - new_len)?;
        }
        Ok(old)
    }

    /// The checks DONTNEED, COLD and PAGEOUT share (Linux's
    /// `madvise_walk_vmas` with `can_madv_lru_vma`): `start` page-aligned
    /// (-EINVAL), the end rounded up and in user space (-ENOMEM), no
    /// locked or hugetlb VMA in the range, nor one `also_refused` names
    /// (-EINVAL). The end and the VMAs the range meets.
    fn madvise_lru_range(
        &self,
        start: u64,
        len: u64,
        also_refused: impl Fn(&Vma) -> bool,
    ) -> Result<(u64, Vec<Vma>), Errno> {
        if !start.is_multiple_of(PAGE_SIZE) {
            return Err(-EINVAL);
        }
        let end = start.checked_add(len).and_then(|e| e.checked_add(PAGE_SIZE - 1)).ok_or(-EINVAL)? & !(PAGE_SIZE - 1);
        if end > TASK_SIZE {
            return Err(-ENOMEM);
        }
        let vmas: Vec<Vma> = self.vmas.iter().filter(|v| v.end > start && v.start < end).copied().collect();
        if vmas.iter().any(|v| v.flags.0 & (VmFlags::LOCKED.0 | VmFlags::HUGETLB.0) != 0 || also_refused(v)) {
            return Err(-EINVAL);
        }
        Ok((end, vmas))
    }

    /// `madvise(MADV_DONTNEED)` on `[start, start + len)` (Linux's
    /// `zap_page_range_single` over each VMA it meets): the pages and swap
    /// entries go, the VMAs stay as they are (flags, file, offset, reverse
    /// map), so the next touch faults afresh: zeros for private anonymous
    /// memory, the file's page-cache page again for a file mapping (a
    /// private copy written earlier is dropped). Huge pages the range
    /// covers in part are split first. -EINVAL on locked or hugetlb VMAs,
    /// and on shared anonymous ones (Linux keeps their pages in shmem;
    /// this kernel has no shmem object to find them again), -ENOMEM where
    /// part of the range is unmapped (after acting on the rest).
    pub fn madvise_dontneed(&mut self, start: u64, len: u64) -> Result<(), Errno> {
        // Shared anonymous pages could not be found again (no shmem here).
        let (end, vmas) = self.madvise_lru_range(start, len, |v| {
            v.flags.contains(VmFlags::SHARED) && v.kind == mm_core::vma::VmaKind::Anon
        })?;
        if !super::thp::split_huge_pmd_edges(self, start, end) {
            return Err(-ENOMEM);
        }
        SWAP.with(|s| {
            PAGES.with(|p| {
                for v in &vmas {
                    self.zap(s, p, v.start.max(start), v.end.min(end));
                }
            })
        });
        if self.mapped_bytes(start, end) != end - start {
            return Err(-ENOMEM);
        }
        Ok(())
    }

    /// `madvise(MADV_COLD)` (20) and `madvise(MADV_PAGEOUT)` (21) on
    /// `[start, start + len)` (Linux's `madvise_cold_or_pageout_pte_range`):
    /// the resident 4 KiB pages this process alone maps are deactivated
    /// (COLD: reclaim takes them first) or reclaimed at once (PAGEOUT:
    /// anon pages written to swap, clean file pages dropped; nothing
    /// happens to anon pages without swap, as Linux). Pages another
    /// process maps too (after fork) are left alone, as Linux's
    /// `folio_maybe_mapped_shared` check does; so are transparent huge
    /// pages (Linux splits one the range covers only in part: not built
    /// here). -EINVAL on locked or hugetlb VMAs, -ENOMEM where part of the
    /// range is unmapped (after acting on the rest). Returns the pages
    /// reclaimed (PAGEOUT) or deactivated (COLD).
    pub fn madvise_cold_or_pageout(&mut self, start: u64, len: u64, pageout: bool) -> Result<u64, Errno> {
        let (end, vmas) = self.madvise_lru_range(start, len, |_| false)?;
        let zero = super::mm::zero_pa();
        // The leaves first, with no lock held (the vector allocates: never
        // under the page allocator's lock), then the sharing check under
        // it.
        let mut pfns = Vec::new();
        for v in &vmas {
            let range = v.start.max(start)..v.end.min(end);
            let _ = user_pt(self.pgd).for_each_leaf(&mut direct_map(), range, LeafKinds::Present, |_, l| {
                let pa = l.entry.0 & mm_core::paging::entry::PTE_ADDR_MASK_MAX;
                if l.slot.level() == Level::Pte && pa != zero {
                    pfns.push(pa / PAGE_SIZE);
                }
                true
            });
        }
        PAGES.with(|p| {
            pfns.retain(|&pfn| {
                let cached = p.ext.get(pfn as usize).is_some_and(|x| x.swap_entry().is_some() || x.file().is_some());
                super::mm::page_count(p, pfn * PAGE_SIZE) == 1 + cached as u32
            })
        });
        let done = if pageout {
            crate::mm::vmscan::reclaim_pages(&pfns)
        } else {
            let (moved, deactivated) = PAGES.with(|p| {
                let before = p.lru.stat_sum(|_| true).pgdeactivate;
                let moved = pfns.iter().filter(|&&pfn| p.lru.folio_deactivate(pfn) == Ok(true)).count() as u64;
                (moved, p.lru.stat_sum(|_| true).pgdeactivate - before)
            });
            crate::mm::vmstat::count(crate::mm::vmstat::Event::PgDeactivate, deactivated);
            moved
        };
        if self.mapped_bytes(start, end) != end - start {
            return Err(-ENOMEM);
        }
        Ok(done)
    }

    /// `madvise(MADV_FREE)` (8) on `[start, start + len)` (Linux's
    /// `madvise_free_pte_range`): the private anonymous pages this
    /// process alone maps become lazily freed: their PTEs' dirty and
    /// accessed bits are cleared and the page leaves its anon list for the
    /// inactive file list without `PG_swapbacked` (mm-core's
    /// `folio_mark_lazyfree`, `pglazyfree`), so reclaim frees it without
    /// swap unless it is written again (mm/swap.rs `reclaim_lazyfree`:
    /// the next read then sees zeros). Swap entries in the range are freed
    /// at once (as DONTNEED: the data was not wanted). Pages in the swap
    /// cache, shared pages (after fork) and the zero page are left as they
    /// are. A transparent huge page in the range is split first
    /// (`split_huge_pmd`, counted in thp_split_pmd) and its 512 pages
    /// marked like any others, so reclaim can drop them without swap;
    /// Linux splits a THP the range covers in part, and keeps one it
    /// covers whole as a lazily freed folio (reclaim here sees only 4 KiB
    /// lazily freed pages, as it swaps out only split ones). The huge
    /// zero page is unmapped (reads stay zeros). -EINVAL on VMAs
    /// that are not private anonymous memory, locked or hugetlb; -ENOMEM
    /// where part of the range is unmapped (after acting on the rest).
    /// Returns the pages marked.
    pub fn madvise_free(&mut self, start: u64, len: u64) -> Result<u64, Errno> {
        let (end, vmas) = self.madvise_lru_range(start, len, |v| {
            v.kind != mm_core::vma::VmaKind::Anon || v.flags.contains(VmFlags::SHARED)
        })?;
        // Huge leaves first: split into page tables of 4 KiB PTEs.
        let mut huge: Vec<u64> = Vec::new();
        for v in &vmas {
            let range = v.start.max(start)..v.end.min(end);
            let _ = user_pt(self.pgd).for_each_leaf(&mut direct_map(), range, LeafKinds::Present, |_, l| {
                if l.slot.level() == Level::Pmd {
                    huge.push(l.va.0 & !(HPAGE_PMD_SIZE - 1));
                }
                true
            });
        }
        for &h in &huge {
            if let Some((slot, e)) = user_pt(self.pgd).lookup(&direct_map(), VirtAddr(h)) {
                if slot.level() == Level::Pmd && e.is_present() && !super::thp::split_huge_pmd(self, slot, h) {
                    return Err(-ENOMEM);
                }
            }
        }
        let zero = super::mm::zero_pa();
        // The leaves first with no lock held (the vectors allocate); then
        // each is checked again and edited under the reclaim state's lock,
        // which reclaim's own PTE edits hold.
        let (mut pages, mut swapped) = (Vec::new(), Vec::new());
        for v in &vmas {
            let range = v.start.max(start)..v.end.min(end);
            let _ = user_pt(self.pgd).for_each_leaf(&mut direct_map(), range, LeafKinds::NonNone, |_, l| {
                if !l.entry.is_present() {
                    swapped.push(l.va.0);
                } else if l.slot.level() == Level::Pte {
                    let pa = l.entry.0 & mm_core::paging::entry::PTE_ADDR_MASK_MAX;
                    if pa != zero {
                        pages.push((l.va.0, pa / PAGE_SIZE));
                    }
                }
                true
            });
        }
        let id = self.id;
        let marked = SWAP.with(|s| {
            PAGES.with(|p| {
                for &va in &swapped {
                    let still_swap = user_pt(self.pgd)
                        .lookup(&direct_map(), VirtAddr(va))
                        .is_some_and(|(_, e)| !e.is_present() && e.0 != 0);
                    if still_swap {
                        self.zap(s, p, va, va + PAGE_SIZE);
                    }
                }
                let mut marked = 0;
                for &(va, pfn) in &pages {
                    let Some((slot, _, pgd)) = crate::mm::swap::pte_mapping(&s.mms, id, va, pfn) else { continue };
                    let x = p.ext.get(pfn as usize).copied().unwrap_or_default();
                    if x.anon().is_none() || x.swap_entry().is_some() || super::mm::page_count(p, pfn * PAGE_SIZE) != 1
                    {
                        continue;
                    }
                    crate::mm::swap::pte_clear_bits(
                        &slot,
                        mm_core::paging::PteFlags::DIRTY.0 | mm_core::paging::PteFlags::ACCESSED.0,
                    );
                    crate::arch::tlb::flush_range(pgd, va, va + PAGE_SIZE);
                    if p.lru.folio_mark_lazyfree(pfn) == Ok(true) {
                        marked += 1;
                    }
                }
                marked
            })
        });
        crate::mm::vmstat::PGLAZYFREE.fetch_add(marked, core::sync::atomic::Ordering::Relaxed);
        if self.mapped_bytes(start, end) != end - start {
            return Err(-ENOMEM);
        }
        Ok(marked)
    }

    /// `madvise(MADV_WILLNEED)` (3) on `[start, start + len)` (Linux's
    /// `madvise_willneed`): anonymous memory's swap entries in the range
    /// are read into the swap cache (`swapin_walk_pmd_entry`; mm/swap.rs
    /// `swapin_willneed`), so the touches that follow are minor faults;
    /// a file mapping's pages are read into the page cache (the
    /// `vfs_fadvise(POSIX_FADV_WILLNEED)` readahead; pages past the end of
    /// the file are not). Nothing is mapped. -EINVAL for an unaligned
    /// `start`, -ENOMEM where part of the range is unmapped (after acting
    /// on the rest). Returns the pages read in.
    pub fn madvise_willneed(&mut self, start: u64, len: u64) -> Result<u64, Errno> {
        let (end, vmas) = self.madvise_lru_range(start, len, |_| false).or_else(|e| {
            // Unlike the LRU advice, WILLNEED takes locked and hugetlb
            // VMAs (there is nothing to read for the latter).
            if e == -EINVAL && start.is_multiple_of(PAGE_SIZE) {
                let end = start.saturating_add(len).next_multiple_of(PAGE_SIZE);
                Ok((end, self.vmas.iter().filter(|v| v.end > start && v.start < end).copied().collect()))
            } else {
                Err(e)
            }
        })?;
        let mut entries = Vec::new();
        let mut read = 0;
        for v in &vmas {
            let (from, to) = (v.start.max(start), v.end.min(end));
            match v.kind {
                mm_core::vma::VmaKind::File(ino) => {
                    let first = v.pgoff + (from - v.start) / PAGE_SIZE;
                    for index in first..first + (to - from) / PAGE_SIZE {
                        match crate::fs::pagecache::find_or_create_page(ino as usize, index) {
                            Ok(_) => read += 1,
                            Err(_) => break, // past the end, or out of memory
                        }
                    }
                }
                _ if v.flags.contains(VmFlags::HUGETLB) => {}
                _ => {
                    let _ = user_pt(self.pgd).for_each_leaf(&mut direct_map(), from..to, LeafKinds::NonNone, |_, l| {
                        if !l.entry.is_present() {
                            if let Some(e) = mm_core::paging::swap::SwapEntry::from_pte(l.entry) {
                                entries.push(e.swp());
                            }
                        }
                        true
                    });
                }
            }
        }
        read += crate::mm::swap::swapin_willneed(&entries);
        if self.mapped_bytes(start, end) != end - start {
            return Err(-ENOMEM);
        }
        Ok(read)
    }

    /// `mincore`: one byte per page of `[start, start + len)`, 1 if
    /// resident; -ENOMEM if part of it is unmapped.
    pub fn mincore(&mut self, start: u64, len: u64) -> Result<Vec<u8>, Errno> {
        if !start.is_multiple_of(PAGE_SIZE) {
            return Err(-EINVAL);
        }
        let end = start.checked_add(len).and_then(|e| e.checked_add(PAGE_SIZE - 1)).ok_or(-ENOMEM)? & !(PAGE_SIZE - 1);
        if end > TASK_SIZE || self.mapped_bytes(start, end) != end - start {
            return Err(-ENOMEM);
        }
        let mut out = alloc::vec![0u8; ((end - start) / PAGE_SIZE) as usize];
        let _ = user_pt(self.pgd).for_each_leaf(&mut direct_map(), start..end, LeafKinds::Present, |_, l| {
            out[((l.va.0 - start) / PAGE_SIZE) as usize] = 1;
            true
        });
        Ok(out)
    }
}

fn errno_or<T>(r: Option<Result<T, Errno>>, ok: impl FnOnce(T) -> i64) -> i64 {
    match r {
        Some(Ok(v)) => ok(v),
        Some(Err(e)) => e,
        None => -EFAULT,
    }
}

/// `mremap(old, old_len, new_len, flags, new_addr)`.
pub fn sys_mremap(a: [u64; 6]) -> i64 {
    errno_or(with_mm(|mm| mm.mremap(a[0], a[1], a[2], a[3], a[4])), |v| v as i64)
}

/// `madvise(addr, len, MADV_COLD | MADV_PAGEOUT)`: 0 or -errno.
pub fn sys_madvise_cold_or_pageout(addr: u64, len: u64, pageout: bool) -> i64 {
    errno_or(with_mm(|mm| mm.madvise_cold_or_pageout(addr, len, pageout)), |_| 0)
}

/// `madvise(addr, len, MADV_FREE)`: 0 or -errno.
pub fn sys_madvise_free(addr: u64, len: u64) -> i64 {
    errno_or(with_mm(|mm| mm.madvise_free(addr, len)), |_| 0)
}

/// `madvise(addr, len, MADV_WILLNEED)`: 0 or -errno.
pub fn sys_madvise_willneed(addr: u64, len: u64) -> i64 {
    errno_or(with_mm(|mm| mm.madvise_willneed(addr, len)), |_| 0)
}

/// `mincore(addr, len, vec)`.
pub fn sys_mincore(addr: u64, len: u64, vec: u64) -> i64 {
    errno_or(with_mm(|mm| mm.mincore(addr, len).and_then(|v| copy_to_user(mm, vec, &v))), |_| 0)
}

/// `msync(addr, len, flags)`: MS_ASYNC 1, MS_INVALIDATE 2, MS_SYNC 4
/// (not ASYNC and SYNC together); -ENOMEM for an unmapped range.
pub fn sys_msync(addr: u64, len: u64, flags: u64) -> i64 {
    if !addr.is_multiple_of(PAGE_SIZE) || flags & !7 != 0 || flags & 5 == 5 {
        return -EINVAL;
    }
    errno_or(
        with_mm(|mm| {
            let end = addr.saturating_add(len).next_multiple_of(PAGE_SIZE);
            if mm.mapped_bytes(addr, end) != end - addr {
                return Err(-ENOMEM);
            }
            Ok(())
        }),
        |_| 0,
    )
}

/// `prlimit64(pid, resource, new, old)`, `getrlimit` and `setrlimit`
/// (`struct rlimit`: soft, hard). Only the caller's own limits (pid 0
/// or its pid). RLIMIT_AS and RLIMIT_STACK are enforced (mman.rs,
/// fault.rs); the others are kept and reported.
pub fn sys_prlimit(pid: u64, resource: u64, new: u64, old: u64) -> i64 {
    let r = resource as usize;
    if r >= RLIM_NLIMITS {
        return -EINVAL;
    }
    if pid != 0 && pid != super::sched::current_pid() {
        return -ESRCH;
    }
    let set = if new != 0 {
        let mut b = [0u8; 16];
        if let Err(e) = with_mm(|mm| copy_from_user(mm, new, &mut b)).unwrap_or(Err(-EFAULT)) {
            return e;
        }
        let cur = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
        let max = u64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8]));
        if cur > max {
            return -EINVAL;
        }
        if r == RLIMIT_NOFILE && max > crate::fs::file::NR_OPEN as u64 {
            return -EPERM; // above the descriptor table's size (nr_open)
        }
        Some((cur, max))
    } else {
        None
    };
    errno_or(
        with_mm(|mm| {
            let was = mm.rlimits[r];
            if let Some(v) = set {
                mm.rlimits[r] = v;
            }
            if old != 0 {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&was.0.to_le_bytes());
                b[8..].copy_from_slice(&was.1.to_le_bytes());
                copy_to_user(mm, old, &b)?;
            }
            Ok(())
        }),
        |_| 0,
    )
}
