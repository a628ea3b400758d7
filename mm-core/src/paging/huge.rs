//! Splitting a 2 MiB leaf into a page table of 4 KiB leaves and collapsing
//! a page table back into a 2 MiB leaf: the page-table half of Linux's
//! `__split_huge_pmd_locked` and of khugepaged's `collapse_huge_page`
//! (the guest's transparent huge pages use both; the pages themselves and
//! their references are the caller's).

use crate::addr::{Level, PageSize, PhysAddr, VirtAddr, PAGE_SIZE, PTRS_PER_TABLE};
use crate::mem::PhysMem;
use crate::paging::editor::Slot;
use crate::paging::entry::{Pte, PteFlags};
use crate::paging::mapper::{alloc_table, FrameAllocator, MapError, Mapper, MapperFlush, TABLE_FLAGS};

impl Mapper {
    /// Replaces the present 2 MiB leaf in `slot` (a PMD-level slot that
    /// maps `va`'s 2 MiB region) by a page table from `frames` whose 512
    /// leaves map the same frames with the same rights, accessed and dirty
    /// bits (PAT moved from bit 12 to bit 7): every translation stays as it
    /// was, only its page size changes. The new table's entry gets U/S with
    /// `user`, like [`Mapper::alloc_slot`]'s. The token flushes the old
    /// 2 MiB translation (one INVLPG drops it).
    #[track_caller]
    pub fn split_huge_leaf<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        slot: Slot,
        va: VirtAddr,
        user: bool,
    ) -> Result<MapperFlush, MapError> {
        let e = slot.read(mem)?;
        if slot.level() != Level::Pmd || !e.is_present() || !e.is_leaf_at(Level::Pmd) {
            return Err(MapError::NotMapped(va));
        }
        let base = e.frame(PageSize::Size2M, self.maxphyaddr);
        let flags = e.leaf_flags(Level::Pmd);
        let table = alloc_table(mem, frames)?;
        for i in 0..PTRS_PER_TABLE {
            let leaf = Pte::leaf(PhysAddr(base.0 + i as u64 * PAGE_SIZE), flags, PageSize::Size4K);
            if let Err(err) = Slot::new(table, i, Level::Pte).write(mem, leaf) {
                frames.deallocate_frame(table);
                return Err(err);
            }
        }
        let tf = if user { TABLE_FLAGS.union(PteFlags::USER) } else { TABLE_FLAGS };
        slot.write(mem, Pte::table(table, tf))?;
        let start = VirtAddr(va.0 & !(PageSize::Size2M.bytes() - 1));
        Ok(MapperFlush::new(start, 1, PageSize::Size2M))
    }

    /// Replaces the page table `slot` (a PMD-level slot) points to by a
    /// 2 MiB leaf mapping `pa` with `flags` (normalised, PRESENT added),
    /// and returns the table to `frames`. The tables above stay as they
    /// are: they must grant what `flags` needs (user tables, for a user
    /// leaf). The caller has copied the data
    /// and owns the old pages. The token flushes all 512 old translations
    /// (a full flush past the ceiling, which also drops the
    /// paging-structure caches that held the freed table).
    #[track_caller]
    pub fn collapse_huge_table<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        slot: Slot,
        va: VirtAddr,
        pa: PhysAddr,
        flags: PteFlags,
    ) -> Result<MapperFlush, MapError> {
        let e = slot.read(mem)?;
        if slot.level() != Level::Pmd || !e.is_present() || e.is_leaf_at(Level::Pmd) {
            return Err(MapError::NotMapped(va));
        }
        if pa.0 & (PageSize::Size2M.bytes() - 1) != 0 {
            return Err(MapError::NotAligned(pa.0));
        }
        let table = e.addr(self.maxphyaddr);
        slot.write(mem, Pte::leaf(pa, flags.union(PteFlags::PRESENT), PageSize::Size2M))?;
        frames.deallocate_frame(table);
        let start = VirtAddr(va.0 & !(PageSize::Size2M.bytes() - 1));
        Ok(MapperFlush::new(start, PTRS_PER_TABLE as u64, PageSize::Size4K))
    }
}
