//! The user half of a process's page tables, edited directly through the
//! direct map: lookups and allocating walks to a PTE, a range walk that
//! skips absent upper levels, and freeing the tables at exit. The kernel
//! half (PGD entries 256..511) is shared with the kernel's own root and is
//! never edited here. mm-core's `Mapper` does the same job generically;
//! this is the hot path of every fault, kept small for ring-0 emulation.

use crate::mm::{phys_to_virt, BuddyFrames, PageAlloc};
use mm_core::paging::FrameAllocator;

/// The frame address bits of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Present.
pub const P: u64 = 1;
/// Writable.
pub const RW: u64 = 1 << 1;
/// User-accessible.
pub const US: u64 = 1 << 2;
/// No-execute.
pub const NX: u64 = 1 << 63;
/// Software bit 9 on the leaves of `MAP_SHARED` mappings, for the host's
/// checks (mm-core's `descriptor::PTE_MAP_SHARED`): without VMAs it could
/// not tell a shared writable frame from a broken copy-on-write.
pub const SHARED: u64 = mm_core::descriptor::PTE_MAP_SHARED.0;
/// First kernel-half PGD index.
pub const KERNEL_PGD_FIRST: usize = 256;

/// A PTE's location: its table and index.
#[derive(Clone, Copy)]
pub struct Slot {
    table: u64,
    idx: usize,
}

/// Reads entry `idx` of the table at physical `table`.
pub fn get(table: u64, idx: usize) -> u64 {
    // SAFETY: `table` is a page-table page (allocated by this module or
    // the kernel's), reached through the direct map; idx < 512.
    unsafe { ((phys_to_virt(table) + 8 * (idx as u64 & 511)) as *const u64).read_volatile() }
}

/// Writes entry `idx` of the table at physical `table`.
pub fn set(table: u64, idx: usize, v: u64) {
    // SAFETY: as `get`; the tables written are the user half of a
    // process's own hierarchy.
    unsafe { ((phys_to_virt(table) + 8 * (idx as u64 & 511)) as *mut u64).write_volatile(v) }
}

impl Slot {
    /// The entry.
    pub fn read(self) -> u64 {
        get(self.table, self.idx)
    }

    /// Replaces the entry.
    pub fn write(self, v: u64) {
        set(self.table, self.idx, v)
    }

    /// The physical address of the table holding the entry.
    pub fn table(self) -> u64 {
        self.table
    }
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 511) as usize
}

/// The PTE slot for `va`, if its page table exists.
pub fn lookup(pgd: u64, va: u64) -> Option<Slot> {
    let mut table = pgd;
    for level in (1..4).rev() {
        let e = get(table, index(va, level));
        if e & P == 0 {
            return None;
        }
        table = e & ADDR_MASK;
    }
    Some(Slot { table, idx: index(va, 0) })
}

/// The PTE slot for `va`, allocating missing tables (counted in
/// `*tables`). Upper entries are user-writable: the leaf decides.
pub fn alloc(p: &mut PageAlloc, tables: &mut u64, pgd: u64, va: u64) -> Option<Slot> {
    let mut table = pgd;
    for level in (1..4).rev() {
        let i = index(va, level);
        let e = get(table, i);
        table = if e & P == 0 {
            let t = BuddyFrames(p).allocate_frame()?.0;
            *tables += 1;
            set(table, i, t | P | RW | US);
            t
        } else {
            e & ADDR_MASK
        };
    }
    Some(Slot { table, idx: index(va, 0) })
}

/// Calls `f(va, slot, pte)` for every present PTE in `[start, end)` of the
/// user half, skipping absent tables at every level.
pub fn for_each_present(pgd: u64, start: u64, end: u64, f: &mut dyn FnMut(u64, Slot, u64)) {
    walk_level(pgd, 3, 0, start, end, f)
}

fn walk_level(table: u64, level: u32, base: u64, start: u64, end: u64, f: &mut dyn FnMut(u64, Slot, u64)) {
    let shift = 12 + 9 * level;
    let first = (start.max(base) - base) >> shift;
    let limit = if level == 3 { KERNEL_PGD_FIRST as u64 } else { 512 };
    for idx in first..limit {
        let va = base + (idx << shift);
        if va >= end {
            break;
        }
        let e = get(table, idx as usize);
        if e & P == 0 {
            continue;
        }
        if level == 0 {
            f(va, Slot { table, idx: idx as usize }, e);
        } else {
            walk_level(e & ADDR_MASK, level - 1, va, start, end, f);
        }
    }
}

/// Frees every user-half table below `pgd` (the leaves must already be
/// gone) and clears their PGD entries; returns how many were freed.
pub fn free_user_tables(p: &mut PageAlloc, pgd: u64) -> u64 {
    fn free_level(p: &mut PageAlloc, table: u64, level: u32) -> u64 {
        let mut n = 0;
        if level > 0 {
            for i in 0..512 {
                let e = get(table, i);
                if e & P != 0 {
                    n += free_level(p, e & ADDR_MASK, level - 1);
                }
            }
        }
        BuddyFrames(p).deallocate_frame(mm_core::addr::PhysAddr(table));
        n + 1
    }
    let mut n = 0;
    for i in 0..KERNEL_PGD_FIRST {
        let e = get(pgd, i);
        if e & P != 0 {
            n += free_level(p, e & ADDR_MASK, 2);
            set(pgd, i, 0);
        }
    }
    n
}

/// Fills a frame with zeros.
pub fn clear_page(pa: u64) {
    // SAFETY: a frame the caller just allocated, through the direct map.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u64, 0, 512) }
}

/// Copies a frame.
pub fn copy_page(dst: u64, src: u64) {
    // SAFETY: two distinct frames (a fresh one and a mapped one), through
    // the direct map.
    unsafe { core::ptr::copy_nonoverlapping(phys_to_virt(src) as *const u64, phys_to_virt(dst) as *mut u64, 512) }
}

/// Copies bytes into a frame at `offset`.
pub fn write_frame(pa: u64, offset: usize, bytes: &[u8]) {
    assert!(offset + bytes.len() <= 4096, "write past a frame");
    // SAFETY: checked to stay inside the frame, reached through the direct map.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), (phys_to_virt(pa) + offset as u64) as *mut u8, bytes.len())
    }
}

/// Copies bytes out of a frame at `offset`.
pub fn read_frame(pa: u64, offset: usize, out: &mut [u8]) {
    assert!(offset + out.len() <= 4096, "read past a frame");
    // SAFETY: as `write_frame`.
    unsafe {
        core::ptr::copy_nonoverlapping((phys_to_virt(pa) + offset as u64) as *const u8, out.as_mut_ptr(), out.len())
    }
}
