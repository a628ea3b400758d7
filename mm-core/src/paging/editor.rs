//! The page-table editor's slot API: the one place that walks and edits
//! tables entry by entry, for the kernel's and every process's mappings
//! in the guest and for every view and check on the host.
//!
//! - [`Slot`]: where an entry lives (table, index, level), read and
//!   written through [`PhysMem`];
//! - [`Mapper::lookup`]: the slot that maps an address (a 4 KiB PTE slot,
//!   present or not, or a huge leaf's), Linux's `pte_offset_map` walk;
//! - [`Mapper::alloc_slot`]: the same, creating missing tables on the way
//!   (`pte_alloc`/`pmd_alloc`);
//! - [`Mapper::for_each_leaf`]: every leaf in a range, skipping absent
//!   tables at every level, huge leaves included, and with
//!   [`LeafKinds::NonNone`] the non-present non-zero PTEs too (swap
//!   entries, see [`crate::paging::swap`]); the visitor may rewrite the
//!   slot it is given (zap, write-protect for fork, harvest accessed bits);
//! - [`Mapper::free_pgd_range`]: free the tables an unmapped range used
//!   that no mapping left can use (Linux's `free_pgd_range` with its
//!   `floor`/`ceiling`), once the leaves are gone; [`Mapper::free_tables`]
//!   the tables lying wholly inside a range (exit);
//! - [`tables`]: every table page under a root, each subtree skippable,
//!   for checks on hostile tables.
//!
//! All of them run on one range cursor ([`Cursor`]), which
//! [`crate::paging::mapper::mappings`] uses too. The editor trusts the
//! tables it edits (it built them): it checks no reserved bits, so a walk
//! for a fault costs four reads. The host's readers on guest-controlled
//! tables are [`crate::paging::walker`] and
//! [`crate::paging::mapper::mappings`], which do check, and [`tables`],
//! which bounds its reads.

use crate::addr::{Level, PageSize, PhysAddr, VirtAddr, PTRS_PER_TABLE};
use crate::mem::PhysMem;
use crate::paging::entry::{Pte, PteFlags};
use crate::paging::mapper::{alloc_table, FrameAllocator, MapError, Mapper, MappingError, TABLE_FLAGS};
use crate::paging::walker::CpuContext;
use core::ops::Range;

/// Where an entry lives: a table, an index in it, and the table's level;
/// and, when the editor found it by walking, the root it walked from and an
/// address the entry maps, so a replaced entry can be reported as the TLB
/// sees it (see [`PteWrite`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    table: PhysAddr,
    index: u16,
    level: Level,
    root: PhysAddr,
    va: u64,
}

/// [`Slot::va`] of a slot made with [`Slot::new`]: no address known.
pub const SLOT_VA_UNKNOWN: u64 = u64::MAX;

/// A page-table entry the editor replaced, as [`PhysMem::pte_written`]
/// hears of it: what a stale-TLB recorder needs (the root of the address
/// space, an address the entry maps, its level, old and new entries) and
/// the source location of the edit (`#[track_caller]` through
/// [`Slot::write`] and the mapper's unmap and protect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PteWrite {
    /// The root the slot was reached from (0 when unknown).
    pub root: PhysAddr,
    /// An address the entry maps ([`SLOT_VA_UNKNOWN`] when unknown),
    /// possibly raw (see [`Slot::va`]).
    pub va: u64,
    /// The level of the table holding the entry.
    pub level: Level,
    /// The entry before.
    pub old: Pte,
    /// The entry after.
    pub new: Pte,
    /// Where in the kernel's source the edit was asked for.
    pub site: &'static core::panic::Location<'static>,
}

impl Slot {
    /// Entry `index` (taken mod 512) of the `level` table at `table`.
    #[inline(always)]
    pub const fn new(table: PhysAddr, index: usize, level: Level) -> Self {
        Slot { table, index: (index % PTRS_PER_TABLE) as u16, level, root: PhysAddr(0), va: SLOT_VA_UNKNOWN }
    }

    /// Entry `index` (mod 512) of the `level` table at `table`, reached
    /// from `root` and mapping `va` (for [`PteWrite`]).
    #[inline(always)]
    pub const fn walked(table: PhysAddr, index: usize, level: Level, root: PhysAddr, va: u64) -> Self {
        Slot { table, index: (index % PTRS_PER_TABLE) as u16, level, root, va }
    }

    /// Another entry of the same table (index mod 512), with the root and
    /// the address it maps carried over.
    #[inline(always)]
    pub const fn sibling(&self, index: usize) -> Self {
        let index = index % PTRS_PER_TABLE;
        let va = if self.va == SLOT_VA_UNKNOWN {
            SLOT_VA_UNKNOWN
        } else {
            let span = 1u64 << self.level.shift();
            let base = (self.va & !(span - 1)).wrapping_sub((self.index as u64) << self.level.shift());
            base.wrapping_add((index as u64) << self.level.shift())
        };
        Slot { table: self.table, index: index as u16, level: self.level, root: self.root, va }
    }

    /// The root the slot was reached from (0 for [`Slot::new`]).
    #[inline]
    pub const fn root(&self) -> PhysAddr {
        self.root
    }

    /// An address the entry maps ([`SLOT_VA_UNKNOWN`] for [`Slot::new`]);
    /// slots from the editor's range walks carry it raw (sign extension
    /// stripped): canonicalize it with the paging mode.
    #[inline]
    pub const fn va(&self) -> u64 {
        self.va
    }

    /// The table holding the entry.
    #[inline]
    pub const fn table(&self) -> PhysAddr {
        self.table
    }

    /// The entry's index in its table.
    #[inline]
    pub const fn index(&self) -> usize {
        self.index as usize
    }

    /// The level of the table holding the entry.
    #[inline]
    pub const fn level(&self) -> Level {
        self.level
    }

    /// The physical address of the entry.
    #[inline(always)]
    pub const fn entry_pa(&self) -> PhysAddr {
        PhysAddr(self.table.0 + 8 * self.index as u64)
    }

    /// The size of the page a leaf in this slot maps (`None` above the
    /// PDPT, where there are no leaves).
    #[inline]
    pub const fn page_size(&self) -> Option<PageSize> {
        self.level.page_size()
    }

    /// Reads the entry.
    #[inline(always)]
    pub fn read<M: PhysMem + ?Sized>(&self, mem: &M) -> Result<Pte, MapError> {
        mem.read_u64(self.entry_pa()).map(Pte).map_err(|_| MapError::TableOutsideMemory(self.table))
    }

    /// Replaces the entry. A present entry replaced needs a TLB flush,
    /// which is the caller's (it knows whether the tables are live). When
    /// the memory traces page-table edits ([`PhysMem::traces_ptes`]), the
    /// old entry is read first and the change reported with the caller's
    /// source location.
    #[inline(always)]
    #[track_caller]
    pub fn write<M: PhysMem + ?Sized>(&self, mem: &mut M, e: Pte) -> Result<(), MapError> {
        if mem.traces_ptes() {
            let old = self.read(mem)?;
            mem.write_u64(self.entry_pa(), e.0).map_err(|_| MapError::TableOutsideMemory(self.table))?;
            if old != e {
                mem.pte_written(&PteWrite {
                    root: self.root,
                    va: self.va,
                    level: self.level,
                    old,
                    new: e,
                    site: core::panic::Location::caller(),
                });
            }
            return Ok(());
        }
        mem.write_u64(self.entry_pa(), e.0).map_err(|_| MapError::TableOutsideMemory(self.table))
    }
}

/// Which leaf-position entries [`Mapper::for_each_leaf`] visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKinds {
    /// Present leaves at every level (4 KiB, 2 MiB, 1 GiB).
    Present,
    /// Present leaves, and non-present but non-zero PTEs (swap entries).
    NonNone,
}

/// One leaf (or, with [`LeafKinds::NonNone`], swap entry) found by
/// [`Mapper::for_each_leaf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// The first address the entry maps (canonical).
    pub va: VirtAddr,
    /// Where the entry is.
    pub slot: Slot,
    /// The entry as read.
    pub entry: Pte,
}

impl Leaf {
    /// The size of the page (4 KiB for a swap entry).
    #[inline]
    pub fn size(&self) -> PageSize {
        self.slot.page_size().unwrap_or(PageSize::Size4K)
    }
}

/// A table found by [`tables`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRef {
    /// The table's level (the root's is `ctx.root_level()`).
    pub level: Level,
    /// Its physical address.
    pub table: PhysAddr,
    /// The first address it maps (canonical).
    pub va: VirtAddr,
}

/// One frame of the cursor's stack: a table being scanned.
#[derive(Clone, Copy)]
struct Frame {
    table: PhysAddr,
    next: u16,
    end: u16,
    level: Level,
    /// Raw (sign-extension stripped) address of entry 0.
    base: u64,
    /// R/W, U/S ANDed and XD ORed over the entries above this table.
    writable: bool,
    user: bool,
    nx: bool,
}

impl Frame {
    /// A table at `level` whose entry 0 maps raw address `base`, not yet
    /// scanned.
    const fn table(table: PhysAddr, level: Level, base: u64) -> Self {
        Frame { table, next: 0, end: 0, level, base, writable: true, user: true, nx: false }
    }
}

/// A non-zero entry the cursor read.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub slot: Slot,
    pub entry: Pte,
    /// Raw address of the first byte the entry covers.
    pub raw: u64,
    /// The rights of the levels above the entry (see [`Frame`]).
    pub writable: bool,
    pub user: bool,
    pub nx: bool,
}

/// What [`Cursor::next`] found.
pub(crate) enum Step {
    /// A non-zero entry in range.
    Entry(Entry),
    /// The table at `table` could not be read; the rest of it is skipped.
    Unreadable { level: Level, table: PhysAddr, raw: u64 },
    /// The read budget ran out; the walk is over.
    BudgetExhausted,
}

/// A depth-first walk over the entries of the tables under a root that
/// cover a range of addresses, in address order, with a fixed stack (no
/// heap, no recursion) and an optional bound on the entries read: hostile
/// tables (loops, shared subtrees) can cost time, never a hang the caller
/// did not allow. It yields every non-zero entry; the caller decides
/// which tables to enter ([`Cursor::descend`]). It holds no borrow of the
/// memory, so the caller may edit entries between steps. With `BUDGETED`
/// false (the editor, on tables it built) the reads are not counted:
/// skipping a zero entry is then a compare, a read and a test.
pub(crate) struct Cursor<const BUDGETED: bool> {
    root: PhysAddr,
    stack: [Frame; 5],
    depth: usize,
    first: u64,
    last: u64,
    mask: u64,
    budget: u64,
}

/// The raw (sign-extension stripped) inclusive bounds of `range` for a
/// paging mode: `None` if the range is empty, not canonical or crosses
/// from one half to the other.
pub(crate) fn raw_bounds(range: &Range<u64>, la57: bool) -> Option<(u64, u64)> {
    if range.end <= range.start {
        return None;
    }
    let last = range.end - 1;
    let canon = |a: u64| VirtAddr(a).is_canonical(la57);
    if !canon(range.start) || !canon(last) || (range.start >> 63) != (last >> 63) {
        return None;
    }
    let mask = raw_mask(la57);
    Some((range.start & mask, last & mask))
}

#[inline]
const fn raw_mask(la57: bool) -> u64 {
    if la57 {
        (1 << 57) - 1
    } else {
        (1 << 48) - 1
    }
}

/// Entries `[lo, hi)` of a table at `shift` whose entry 0 covers `base`
/// that overlap `[first, last]`.
#[inline]
fn index_bounds(base: u64, shift: u32, first: u64, last: u64) -> (u16, u16) {
    let lo = if first > base { ((first - base) >> shift).min(PTRS_PER_TABLE as u64) } else { 0 };
    let span_last = base.saturating_add((PTRS_PER_TABLE as u64) << shift).saturating_sub(1);
    let hi = if last < span_last { ((last.saturating_sub(base)) >> shift) + 1 } else { PTRS_PER_TABLE as u64 };
    (lo as u16, hi.min(PTRS_PER_TABLE as u64) as u16)
}

impl<const BUDGETED: bool> Cursor<BUDGETED> {
    /// A walk of the `root_level` table at `root` over the raw addresses
    /// `[first, last]`.
    pub(crate) fn new(root: PhysAddr, la57: bool, first: u64, last: u64) -> Self {
        let level = Level::root(la57);
        let (next, end) = index_bounds(0, level.shift(), first, last);
        let f = Frame { table: root, next, end, level, base: 0, writable: true, user: true, nx: false };
        Cursor { root, stack: [f; 5], depth: 1, first, last, mask: raw_mask(la57), budget: u64::MAX }
    }

    /// A walk of everything under `ctx`'s root.
    pub(crate) fn whole(ctx: &CpuContext) -> Self {
        Cursor::new(ctx.root(), ctx.la57, 0, raw_mask(ctx.la57))
    }

    /// Stops after `entries` more entry reads.
    pub(crate) fn set_budget(&mut self, entries: u64) {
        self.budget = entries;
    }

    /// The canonical form of a raw address.
    #[inline]
    pub(crate) fn canonical(&self, raw: u64) -> VirtAddr {
        VirtAddr(raw).canonicalize(self.mask != raw_mask(false))
    }

    /// The next non-zero entry in range.
    #[inline(always)]
    pub(crate) fn next<M: PhysMem + ?Sized>(&mut self, mem: &M) -> Option<Step> {
        loop {
            let f = self.stack.get_mut(self.depth.checked_sub(1)?)?;
            // The entries of one table in a tight loop: most are zero.
            let (table, level) = (f.table, f.level);
            if !BUDGETED {
                // The editor's walks: the rest of the table checked once
                // and scanned by the memory in one tight loop.
                if f.next < f.end {
                    let from = PhysAddr(table.0 + 8 * f.next as u64);
                    // The next entry alone first: where the entries are
                    // dense (a fork copying PTEs) a scan set up per entry
                    // would cost more than it saves.
                    let found = match mem.read_u64(from) {
                        Ok(0) => mem
                            .find_nonzero_u64(PhysAddr(from.0 + 8), (f.end - f.next - 1) as usize)
                            .map(|r| r.map(|(i, v)| (i + 1, v))),
                        Ok(v) => Ok(Some((0, v))),
                        Err(e) => Err(e),
                    };
                    match found {
                        Ok(Some((i, v))) => {
                            let index = f.next + i as u16;
                            f.next = index + 1;
                            let raw = f.base + ((index as u64) << level.shift());
                            let slot = Slot::walked(table, index as usize, level, self.root, raw);
                            let (writable, user, nx) = (f.writable, f.user, f.nx);
                            return Some(Step::Entry(Entry { slot, entry: Pte(v), raw, writable, user, nx }));
                        }
                        Ok(None) => {}
                        Err(_) => {
                            let raw = f.base + ((f.next as u64) << level.shift());
                            f.next = f.end;
                            return Some(Step::Unreadable { level, table, raw });
                        }
                    }
                }
                self.depth -= 1;
                continue;
            }
            let end = table.0 + 8 * f.end as u64;
            let mut pa = table.0 + 8 * f.next as u64;
            while pa < end {
                if BUDGETED {
                    if self.budget == 0 {
                        self.depth = 0;
                        return Some(Step::BudgetExhausted);
                    }
                    self.budget -= 1;
                }
                let r = mem.read_u64(PhysAddr(pa));
                pa += 8;
                let v = match r {
                    Ok(0) => continue,
                    Ok(v) => v,
                    Err(_) => {
                        let raw = f.base + (((pa - 8 - table.0) / 8) << level.shift());
                        f.next = f.end;
                        return Some(Step::Unreadable { level, table, raw });
                    }
                };
                let index = ((pa - 8 - table.0) / 8) as u16;
                f.next = index + 1;
                let raw = f.base + ((index as u64) << level.shift());
                let slot = Slot::walked(table, index as usize, level, self.root, raw);
                let (writable, user, nx) = (f.writable, f.user, f.nx);
                return Some(Step::Entry(Entry { slot, entry: Pte(v), raw, writable, user, nx }));
            }
            self.depth -= 1;
        }
    }

    /// Enters the table at `table` that entry `e` (just returned by
    /// [`Cursor::next`]) points to; its entries come next. A no-op at the
    /// PT level.
    #[inline(always)]
    pub(crate) fn descend(&mut self, e: &Entry, table: PhysAddr) {
        let Some(level) = e.slot.level.next_lower() else { return };
        let Some(slot) = self.stack.get_mut(self.depth) else { return };
        let (next, end) = index_bounds(e.raw, level.shift(), self.first, self.last);
        *slot = Frame {
            table,
            next,
            end,
            level,
            base: e.raw,
            writable: e.writable && e.entry.is_writable(),
            user: e.user && e.entry.is_user(),
            nx: e.nx || e.entry.is_nx(),
        };
        self.depth += 1;
    }
}

impl Mapper {
    /// The same paging mode on another root (a process's PGD).
    #[inline(always)]
    pub const fn with_root(&self, root: PhysAddr) -> Self {
        Mapper::new(root, self.la57, self.maxphyaddr, self.gbpages)
    }

    /// The slot mapping `va` and its entry: a present huge leaf's slot
    /// (PMD or PUD level), else the PTE slot, present or not; `None` when
    /// a table on the way is absent (or cannot be read). Four reads, no
    /// reserved-bit checks: for tables this editor built.
    #[inline(always)]
    pub fn lookup<M: PhysMem + ?Sized>(&self, mem: &M, va: VirtAddr) -> Option<(Slot, Pte)> {
        let mut table = self.root;
        let mut level = Level::root(self.la57);
        loop {
            let slot = Slot::walked(table, va.table_index(level), level, self.root, va.0);
            let e = Pte(mem.read_u64(slot.entry_pa()).ok()?);
            if level == Level::Pte || (e.is_present() && e.is_leaf_at(level)) {
                return Some((slot, e));
            }
            if !e.is_present() {
                return None;
            }
            table = e.addr(self.maxphyaddr);
            level = level.next_lower()?;
        }
    }

    /// The slot for `va` at `level` (`Level::Pte` for a 4 KiB page,
    /// `Level::Pmd` for a 2 MiB one) and its entry, creating the missing
    /// tables above it from `frames` (zeroed; entries as Linux's
    /// `_KERNPG_TABLE`, plus U/S with `user`: the leaves decide the
    /// rights). Tables that exist are used as they are (a walk for a fault
    /// must stay short): the rights a leaf gets are ANDed with theirs, so a
    /// user leaf needs tables made with `user`. Fails with
    /// [`MapError::ParentIsHugePage`] when a huge leaf covers `va` above
    /// `level`.
    #[inline(always)]
    pub fn alloc_slot<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        va: VirtAddr,
        level: Level,
        user: bool,
    ) -> Result<(Slot, Pte), MapError> {
        let tf = if user { TABLE_FLAGS.union(PteFlags::USER) } else { TABLE_FLAGS };
        let mut table = self.root;
        let mut cur = Level::root(self.la57);
        loop {
            let slot = Slot::walked(table, va.table_index(cur), cur, self.root, va.0);
            let e = slot.read(mem)?;
            if cur == level {
                return Ok((slot, e));
            }
            table = if !e.is_present() {
                let t = alloc_table(mem, frames)?;
                slot.write(mem, Pte::table(t, tf))?;
                t
            } else if e.is_leaf_at(cur) {
                return Err(MapError::ParentIsHugePage { va, level: cur });
            } else {
                e.addr(self.maxphyaddr)
            };
            cur = cur.next_lower().ok_or(MapError::BadRange)?;
        }
    }

    /// Calls `f` for every leaf of `kinds` mapping addresses in `range`,
    /// in address order, skipping absent tables at every level; `f` may
    /// rewrite the entry through the slot it is given (not the tables
    /// above it). Stops early when `f` returns false: `Ok(false)`. A huge
    /// leaf is visited if it overlaps the range at all (its `va` is its
    /// start). `BadRange` for a range that is not canonical or crosses
    /// halves; nothing for an empty one.
    #[inline]
    pub fn for_each_leaf<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        range: Range<u64>,
        kinds: LeafKinds,
        f: impl FnMut(&mut M, Leaf) -> bool,
    ) -> Result<bool, MapError> {
        self.leaves::<false, M>(mem, range, kinds, u64::MAX, f)
    }

    /// [`Self::for_each_leaf`] reading at most `budget` entries (empty ones
    /// included): what a walker of untrusted tables (the host's views of
    /// a guest) uses, so that an alias tree of empty tables cannot keep it
    /// reading for hours. `BudgetExhausted` when it ran out.
    #[inline]
    pub fn for_each_leaf_within<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        range: Range<u64>,
        kinds: LeafKinds,
        budget: u64,
        f: impl FnMut(&mut M, Leaf) -> bool,
    ) -> Result<bool, MapError> {
        self.leaves::<true, M>(mem, range, kinds, budget, f)
    }

    /// The walk of [`Self::for_each_leaf`] (`B` false: the editor's fast
    /// scan, no budget) and [`Self::for_each_leaf_within`] (`B` true:
    /// every entry read counted).
    #[inline(always)]
    fn leaves<const B: bool, M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        range: Range<u64>,
        kinds: LeafKinds,
        budget: u64,
        mut f: impl FnMut(&mut M, Leaf) -> bool,
    ) -> Result<bool, MapError> {
        if range.end <= range.start {
            return Ok(true);
        }
        let (first, last) = raw_bounds(&range, self.la57).ok_or(MapError::BadRange)?;
        let mut c = Cursor::<B>::new(self.root, self.la57, first, last);
        c.set_budget(budget);
        while let Some(step) = c.next(&*mem) {
            let e = match step {
                Step::Entry(e) => e,
                Step::Unreadable { table, .. } => return Err(MapError::TableOutsideMemory(table)),
                Step::BudgetExhausted => return Err(MapError::BudgetExhausted(budget)),
            };
            let level = e.slot.level;
            if e.entry.is_present() {
                if !e.entry.is_leaf_at(level) {
                    c.descend(&e, e.entry.addr(self.maxphyaddr));
                    continue;
                }
            } else if kinds == LeafKinds::Present || level != Level::Pte {
                continue;
            }
            if !f(mem, Leaf { va: c.canonical(e.raw), slot: e.slot, entry: e.entry }) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Frees every table (below the root) that maps only addresses inside
    /// `range`, clearing the entries that pointed to them; returns how many
    /// were freed. The leaves in `range` must be gone already: page tables
    /// (the PT level) are freed without being read, as Linux's
    /// `free_pte_range` does. Tables that also map addresses outside
    /// `range` stay. Exit's teardown: [`Self::free_pgd_range`] with the
    /// range as its own bounds.
    pub fn free_tables<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        range: Range<u64>,
    ) -> Result<u64, MapError> {
        self.free_pgd_range(mem, frames, range.clone(), range)
    }

    /// Linux's `free_pgd_range(addr, end, floor, ceiling)` after an unmap:
    /// frees every table (below the root) that maps some address of
    /// `range` (what was unmapped) and only addresses inside `bounds`
    /// (`floor..ceiling`: from the end of the mapping below the gap to the
    /// start of the one above it, so no mapping left can use the table),
    /// clearing the entries that pointed to them; returns how many were
    /// freed. The rule is Linux's rounding of `floor`/`ceiling` to
    /// `PMD_SIZE`, `PUD_SIZE` and `PGDIR_SIZE` at each level: a 2 MiB
    /// page table goes if its 2 MiB lies inside `bounds`, a PMD table if
    /// its 1 GiB does, and so on. A freed table's whole subtree goes with
    /// it (Linux assumes it empty; here a table an earlier unmap left in
    /// the gap is not leaked). The root and anything outside `bounds`
    /// (the kernel half, for user bounds) are never touched; every leaf
    /// inside `bounds` must be gone already (page tables are freed
    /// without being read). `BadRange` if either range is not canonical
    /// or crosses halves; nothing for an empty one.
    pub fn free_pgd_range<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        range: Range<u64>,
        bounds: Range<u64>,
    ) -> Result<u64, MapError> {
        if range.end <= range.start || bounds.end <= bounds.start {
            return Ok(0);
        }
        let walk = raw_bounds(&range, self.la57).ok_or(MapError::BadRange)?;
        let keep = raw_bounds(&bounds, self.la57).ok_or(MapError::BadRange)?;
        self.free_below(mem, frames, Frame::table(self.root, Level::root(self.la57), 0), walk, keep)
    }

    /// Frees the tables below `t` (a table at `t.level` whose entry 0 maps
    /// raw address `t.base`) that map some address of the raw range
    /// `[first, last]` and lie wholly in the raw range `[lo, hi]`.
    fn free_below<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        t: Frame,
        (first, last): (u64, u64),
        (lo, hi): (u64, u64),
    ) -> Result<u64, MapError> {
        let (table, level, base) = (t.table, t.level, t.base);
        let Some(lower) = level.next_lower() else { return Ok(0) };
        let shift = level.shift();
        let (from, to) = index_bounds(base, shift, first, last);
        let mut freed = 0;
        let mut next = from;
        while next < to {
            // Most entries are empty: the memory skips them in one scan.
            let found = mem.find_nonzero_u64(PhysAddr(table.0 + 8 * next as u64), (to - next) as usize);
            let Some((i, v)) = found.map_err(|_| MapError::TableOutsideMemory(table))? else { break };
            let idx = next + i as u16;
            next = idx + 1;
            let e = Pte(v);
            if !e.is_present() || e.is_leaf_at(level) {
                continue;
            }
            let cbase = base + ((idx as u64) << shift);
            let clast = cbase + ((1u64 << shift) - 1);
            let slot = Slot::walked(table, idx as usize, level, self.root, cbase);
            let child = e.addr(self.maxphyaddr);
            let whole = lo <= cbase && clast <= hi;
            if lower != Level::Pte {
                // A table that goes takes everything under it; one that
                // stays is searched for the tables below it that go.
                let walk = if whole { (cbase, clast) } else { (first, last) };
                freed += self.free_below(mem, frames, Frame::table(child, lower, cbase), walk, (lo, hi))?;
            }
            if whole {
                slot.write(mem, Pte::NONE)?;
                frames.deallocate_frame(child);
                freed += 1;
            }
        }
        Ok(freed)
    }
}

/// Iterator over the table pages under `ctx`'s root that map addresses
/// in `range` (all of them with `None`), root first, parents before
/// children; page tables (PT level) are listed but not read. Call
/// [`Tables::skip_children`] right after a table to not enter it (a
/// table seen before, under another root or through a loop). Present
/// entries are followed whatever their reserved bits: this lists what
/// the tables point at, not what the CPU would use.
pub fn tables<'m, M: PhysMem + ?Sized>(mem: &'m M, ctx: &CpuContext, range: Option<Range<u64>>) -> Tables<'m, M> {
    let (first, last) = match range {
        None => (0, raw_mask(ctx.la57)),
        // An invalid range lists the root only.
        Some(r) => raw_bounds(&r, ctx.la57).unwrap_or((1, 0)),
    };
    let cursor = Cursor::<true>::new(ctx.root(), ctx.la57, first, last);
    let root = TableRef { level: ctx.root_level(), table: ctx.root(), va: VirtAddr(0) };
    Tables { mem, cursor, maxphyaddr: ctx.maxphyaddr, root: Some(root), at_root: false, pending: None }
}

/// See [`tables`].
pub struct Tables<'m, M: PhysMem + ?Sized> {
    mem: &'m M,
    cursor: Cursor<true>,
    maxphyaddr: u8,
    root: Option<TableRef>,
    /// The root was the last table returned.
    at_root: bool,
    pending: Option<Entry>,
}

impl<M: PhysMem + ?Sized> Tables<'_, M> {
    /// Stops (with [`MappingError::BudgetExhausted`]) after `entries`
    /// entry reads.
    pub fn budget(mut self, entries: u64) -> Self {
        self.cursor.set_budget(entries);
        self
    }

    /// Does not enter the table just returned.
    pub fn skip_children(&mut self) {
        if self.at_root {
            // The root itself: skipping it ends the walk.
            self.cursor.depth = 0;
        }
        self.pending = None;
    }
}

impl<M: PhysMem + ?Sized> Iterator for Tables<'_, M> {
    type Item = Result<TableRef, MappingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(r) = self.root.take() {
            self.at_root = true;
            return Some(Ok(r));
        }
        self.at_root = false;
        if let Some(p) = self.pending.take() {
            self.cursor.descend(&p, p.entry.addr(self.maxphyaddr));
        }
        while let Some(step) = self.cursor.next(self.mem) {
            match step {
                Step::Entry(e) => {
                    let level = e.slot.level;
                    let Some(lower) = level.next_lower() else { continue };
                    if !e.entry.is_present() || e.entry.is_leaf_at(level) {
                        continue;
                    }
                    // A PT's entries are all leaves: list it, do not read it.
                    if lower != Level::Pte {
                        self.pending = Some(e);
                    }
                    let va = self.cursor.canonical(e.raw);
                    return Some(Ok(TableRef { level: lower, table: e.entry.addr(self.maxphyaddr), va }));
                }
                Step::Unreadable { level, table, raw } => {
                    let va = self.cursor.canonical(raw);
                    return Some(Err(MappingError::TableOutsideMemory { level, table, va }));
                }
                Step::BudgetExhausted => return Some(Err(MappingError::BudgetExhausted)),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PAGE_SIZE;
    use crate::mem::VecMem;
    use alloc::vec::Vec;

    const G: u64 = 1 << 30;
    /// What one PGD entry maps (512 GiB).
    const P: u64 = 1 << 39;
    const M: u64 = 2 << 20;
    const TOP: u64 = 1 << 47;
    const KERNEL_VA: u64 = 0xffff_8880_0000_0000;

    struct Frames(Vec<PhysAddr>);

    impl FrameAllocator for Frames {
        fn allocate_frame(&mut self) -> Option<PhysAddr> {
            self.0.pop()
        }
        fn deallocate_frame(&mut self, frame: PhysAddr) {
            assert!(!self.0.contains(&frame), "double free of {frame}");
            self.0.push(frame);
        }
    }

    struct World {
        mem: VecMem,
        frames: Frames,
        pt: Mapper,
    }

    impl World {
        /// A root with one kernel-half page mapped (its three tables must
        /// outlive every user-half free).
        fn new() -> Self {
            let mut mem = VecMem::new(1 << 20);
            let mut frames = Frames((1..256).rev().map(|i| PhysAddr(i * PAGE_SIZE)).collect());
            let pt = Mapper::create(&mut mem, &mut frames, false, 46, false).unwrap();
            let mut w = World { mem, frames, pt };
            w.map(KERNEL_VA);
            w
        }

        fn map(&mut self, va: u64) {
            let (slot, _) =
                self.pt.alloc_slot(&mut self.mem, &mut self.frames, VirtAddr(va), Level::Pte, true).unwrap();
            slot.write(&mut self.mem, Pte::leaf(PhysAddr(0x8_0000), PteFlags::PRESENT, PageSize::Size4K)).unwrap();
        }

        /// munmap of the page at `va` with the gap `bounds` around it:
        /// the leaf cleared, then the tables freed; how many.
        fn unmap(&mut self, va: u64, bounds: Range<u64>) -> u64 {
            let (slot, _) = self.pt.lookup(&self.mem, VirtAddr(va)).unwrap();
            slot.write(&mut self.mem, Pte::NONE).unwrap();
            let before = self.frames.0.len();
            let n = self.pt.free_pgd_range(&mut self.mem, &mut self.frames, va..va + PAGE_SIZE, bounds).unwrap();
            assert_eq!(self.frames.0.len() - before, n as usize);
            n
        }

        /// The tables under the root, the root included.
        fn tables(&self) -> usize {
            tables(&self.mem, &self.pt.context(), None).inspect(|t| assert!(t.is_ok())).count()
        }

        fn kernel_page_intact(&self) {
            let (slot, e) = self.pt.lookup(&self.mem, VirtAddr(KERNEL_VA)).unwrap();
            assert_eq!(slot.level(), Level::Pte);
            assert!(e.is_present());
        }
    }

    /// Each level keeps its table while a neighbour inside the table's
    /// span is still mapped, and frees it once none is (Linux's floor and
    /// ceiling rounded to PMD_SIZE, PUD_SIZE, PGDIR_SIZE).
    #[test]
    fn a_table_goes_when_no_neighbour_can_use_it() {
        let mut w = World::new();
        let a = 3 * P + 5 * G + 7 * M + 0x1000;
        let b = a + 0x10000; // the same page table
        let c = 3 * P + 5 * G + 9 * M; // the same PMD table
        let d = 3 * P + 8 * G; // the same PUD table
        let e = 6 * P; // its own PUD table
        for va in [a, b, c, d, e] {
            w.map(va);
        }
        // Root; kernel PUD, PMD, PT; PUD(3P), PMD(5G), PT(a,b), PT(c),
        // PMD(8G), PT(d); PUD(6P), PMD, PT.
        assert_eq!(w.tables(), 1 + 3 + 6 + 3);
        // b still uses a's page table: the ceiling (b) lies inside it.
        assert_eq!(w.unmap(a, 0..b), 0);
        // The page table goes; c keeps the PMD table.
        assert_eq!(w.unmap(b, 0..c), 1);
        // The page table and the PMD table; d keeps the PUD table.
        assert_eq!(w.unmap(c, 0..d), 2);
        // Page table, PMD table, PUD table.
        assert_eq!(w.unmap(d, 0..e), 3);
        assert_eq!(w.tables(), 1 + 3 + 3);
        // A floor: the page below e keeps the three tables.
        w.map(e + 0x3000);
        assert_eq!(w.unmap(e + 0x3000, e + PAGE_SIZE..TOP), 0);
        assert_eq!(w.unmap(e, 0..TOP), 3);
        assert_eq!(w.tables(), 1 + 3, "the root and the kernel's tables are left");
        w.kernel_page_intact();
    }

    /// A table that goes takes its whole subtree, also the tables an
    /// earlier unmap had to leave in what is now part of the gap; the
    /// kernel half is never touched, and bounds that cross into it are
    /// refused.
    #[test]
    fn a_freed_table_takes_its_subtree_and_the_kernel_half_stays() {
        let mut w = World::new();
        let q = 9 * P + 2 * G;
        let r = 9 * P + 7 * G;
        w.map(q);
        w.map(r);
        // A neighbour (gone since) kept q's tables: they stay, empty.
        assert_eq!(w.unmap(q, 0..q + 2 * PAGE_SIZE), 0);
        // Unmapping r alone frees q's tables with the PUD table above.
        assert_eq!(w.unmap(r, 0..TOP), 5);
        assert_eq!(w.tables(), 1 + 3);
        let Frames(free) = &w.frames;
        assert_eq!(free.len(), 255 - 4, "no table leaked");
        // The user half whole: the kernel half's tables stay.
        assert_eq!(w.pt.free_pgd_range(&mut w.mem, &mut w.frames, 0..TOP, 0..TOP), Ok(0));
        w.kernel_page_intact();
        // Bounds reaching into the kernel half: refused, nothing freed.
        let bad = w.pt.free_pgd_range(&mut w.mem, &mut w.frames, 0..PAGE_SIZE, 0..KERNEL_VA + PAGE_SIZE);
        assert_eq!(bad, Err(MapError::BadRange));
        assert_eq!(w.pt.free_pgd_range(&mut w.mem, &mut w.frames, 0..PAGE_SIZE, 5..5), Ok(0));
        w.kernel_page_intact();
        assert_eq!(w.tables(), 1 + 3);
    }
}
