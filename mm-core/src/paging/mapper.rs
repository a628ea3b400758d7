//! Page-table editing: map, unmap and protect ranges, and iterate over the
//! mappings of a root.
//!
//! Every change returns a [`MapperFlush`] token that must be flushed
//! through a [`TlbFlusher`] (INVLPG in the guest, the TLB model on the
//! host) or explicitly ignored, so a forgotten flush is a compile-time
//! warning. Table pages come from a [`FrameAllocator`].
//!
//! Intermediate entries are made as Linux's `_PAGE_TABLE`/`_KERNPG_TABLE`
//! (P, RW, A, D, plus USR when a user page lies below): permissions live in
//! the leaves, so the effective flags of a mapping made here equal its
//! leaf's. The mapper assumes the tables it edits form a tree, as the ones
//! it builds do; on hostile tables it returns errors and never panics, but
//! what it edits is then unspecified. [`mappings`] is safe on any tables.

use crate::addr::{Level, PageSize, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::mem::PhysMem;
use crate::paging::editor::{Cursor, Step};
use crate::paging::entry::{phys_addr_mask, reserved_addr_mask};
use crate::paging::entry::{Pte, PteFlags};
use crate::paging::walker::{reserved_bit, reserved_bit_masked, CpuContext, ReservedBit};
use core::fmt;

/// Source of zeroed-or-not page frames for page tables (the mapper zeroes
/// them itself unless [`FrameAllocator::zeroes_frames`] says they come
/// zeroed).
pub trait FrameAllocator {
    /// A free 4 KiB frame, or `None` when memory is exhausted.
    fn allocate_frame(&mut self) -> Option<PhysAddr>;
    /// Whether every frame [`FrameAllocator::allocate_frame`] returns is
    /// already all zeros, so the mapper need not zero it again (the
    /// guest's page-table allocator clears pages as it hands them out).
    fn zeroes_frames(&self) -> bool {
        false
    }
    /// Returns a frame obtained from [`FrameAllocator::allocate_frame`].
    fn deallocate_frame(&mut self, frame: PhysAddr);
}

/// Whatever invalidates TLB entries: INVLPG and a full flush in the guest,
/// [`crate::paging::Tlb`] on the host.
pub trait TlbFlusher {
    /// Invalidates the translations of the page containing `va` (INVLPG).
    fn flush_page(&mut self, va: VirtAddr);
    /// Invalidates every translation, global ones included (CR4.PGE
    /// toggle).
    fn flush_all(&mut self);
}

/// Past this many pages a flush token flushes everything (Linux's
/// `tlb_single_page_flush_ceiling`).
pub const FLUSH_CEILING: u64 = 33;

/// The TLB work a page-table change leaves to do.
#[must_use = "the TLB may still hold the old translation: call .flush() or .ignore()"]
#[derive(Debug, PartialEq, Eq)]
pub struct MapperFlush {
    start: VirtAddr,
    pages: u64,
    step: PageSize,
}

impl MapperFlush {
    pub(crate) fn new(start: VirtAddr, pages: u64, step: PageSize) -> Self {
        MapperFlush { start, pages, step }
    }

    /// The first page to flush and how many pages of which size.
    pub fn range(&self) -> (VirtAddr, u64, PageSize) {
        (self.start, self.pages, self.step)
    }

    /// Invalidates the changed pages: one `flush_page` per page, or one
    /// `flush_all` past [`FLUSH_CEILING`] pages.
    pub fn flush<F: TlbFlusher + ?Sized>(self, flusher: &mut F) {
        if self.pages > FLUSH_CEILING {
            flusher.flush_all();
            return;
        }
        for i in 0..self.pages {
            let va = self.start.0.wrapping_add(i << self.step.shift());
            flusher.flush_page(VirtAddr(va));
        }
    }

    /// Drops the token without flushing: for tables not yet in use by any
    /// CPU, or when the caller flushes by other means.
    pub fn ignore(self) {}
}

/// One [`Mapper::map`] request: `[va, va + len)` to `[pa, pa + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    /// First virtual address.
    pub va: VirtAddr,
    /// The physical address `va` maps to.
    pub pa: PhysAddr,
    /// Bytes to map.
    pub len: u64,
    /// Which page sizes to use.
    pub size: SizeRequest,
    /// Leaf flags (normalised; PRESENT is added).
    pub flags: PteFlags,
}

/// How the mapper picks page sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRequest {
    /// Every page has this size (addresses and length must be aligned).
    Fixed(PageSize),
    /// The largest size that fits at each point: 1 GiB (if supported) or
    /// 2 MiB where virtual and physical addresses are aligned and no table
    /// is already in the way, else 4 KiB.
    Best,
}

/// Why a mapper operation failed. Nothing was changed, except that a
/// failed `map` may leave empty tables behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// An address or the length is not aligned to the page size.
    NotAligned(u64),
    /// The range is empty, wraps, or leaves the canonical half it starts in.
    BadRange,
    /// The physical range does not fit in MAXPHYADDR bits.
    PhysAddrTooWide(PhysAddr),
    /// 1 GiB pages were requested but the mapper was told they are not
    /// supported.
    Unsupported1G,
    /// Something is mapped at `va` already (or a table is where a large
    /// leaf was requested).
    AlreadyMapped {
        /// The first address found mapped.
        va: VirtAddr,
        /// The level of the entry in the way.
        level: Level,
    },
    /// Nothing is mapped at `va`.
    NotMapped(VirtAddr),
    /// A 4 KiB or 2 MiB operation at `va` lies inside a larger page mapped
    /// at `level`.
    ParentIsHugePage {
        /// The address.
        va: VirtAddr,
        /// The level of the large leaf.
        level: Level,
    },
    /// The range covers only part of the large page at `va`.
    PartialHugePage {
        /// Start of the large page.
        va: VirtAddr,
        /// Its size.
        size: PageSize,
    },
    /// An entry has reserved bits set.
    ReservedBits {
        /// The address being walked.
        va: VirtAddr,
        /// The level of the entry.
        level: Level,
        /// Which bits.
        reason: ReservedBit,
    },
    /// The frame allocator is out of memory.
    FrameAllocationFailed,
    /// A table lies (partly) outside physical memory.
    TableOutsideMemory(PhysAddr),
    /// A walk read its budget of entries (tables that loop or share
    /// subtrees beyond any real kernel's): it stopped there.
    BudgetExhausted(u64),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::NotAligned(a) => write!(f, "{a:#x} is not aligned to the page size"),
            MapError::BadRange => f.write_str("empty, wrapping or non-canonical range"),
            MapError::PhysAddrTooWide(pa) => write!(f, "{:#x} exceeds MAXPHYADDR", pa.0),
            MapError::Unsupported1G => f.write_str("1 GiB pages are not supported"),
            MapError::AlreadyMapped { va, level } => {
                write!(f, "{:#x} is already mapped ({level} entry present)", va.0)
            }
            MapError::NotMapped(va) => write!(f, "{:#x} is not mapped", va.0),
            MapError::ParentIsHugePage { va, level } => {
                write!(f, "{:#x} lies in a huge page mapped at {level}", va.0)
            }
            MapError::PartialHugePage { va, size } => {
                write!(f, "range covers part of the {size} page at {:#x}", va.0)
            }
            MapError::ReservedBits { va, level, reason } => {
                write!(f, "reserved bits ({reason:?}) in {level} entry for {:#x}", va.0)
            }
            MapError::FrameAllocationFailed => f.write_str("page-table frame allocation failed"),
            MapError::TableOutsideMemory(pa) => {
                write!(f, "table at PA {:#x} is outside memory", pa.0)
            }
            MapError::BudgetExhausted(n) => {
                write!(
                    f,
                    "stopped after reading {n} entries: the tables loop or share subtrees; the rest was not examined"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MapError {}

/// Intermediate entry flags (Linux's `_KERNPG_TABLE`).
pub(crate) const TABLE_FLAGS: PteFlags =
    PteFlags(PteFlags::PRESENT.0 | PteFlags::RW.0 | PteFlags::ACCESSED.0 | PteFlags::DIRTY.0);

/// Bits a protect keeps from the old leaf: the CPU owns them.
const HW_OWNED: PteFlags = PteFlags(PteFlags::ACCESSED.0 | PteFlags::DIRTY.0);

/// One leaf found by [`mappings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First virtual address of the page (canonical).
    pub va: VirtAddr,
    /// Base of the physical page.
    pub pa: PhysAddr,
    /// Page size.
    pub size: PageSize,
    /// Effective normalised flags (RW, USER ANDed and NX ORed over the
    /// levels, as the walker reports them).
    pub flags: PteFlags,
    /// The leaf entry.
    pub leaf: Pte,
}

/// A problem [`mappings`] found and stepped over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingError {
    /// The table at `table` (reached for addresses from `va`) cannot be
    /// read; its subtree is skipped.
    TableOutsideMemory {
        /// Level of the table.
        level: Level,
        /// Its base.
        table: PhysAddr,
        /// The first address it would map.
        va: VirtAddr,
    },
    /// A present entry with reserved bits: any access through it faults.
    Reserved {
        /// First address the entry covers.
        va: VirtAddr,
        /// Its level.
        level: Level,
        /// The entry.
        entry: Pte,
        /// Which bits.
        reason: ReservedBit,
    },
    /// The read budget set with [`Mappings::budget`] ran out; iteration
    /// ends.
    BudgetExhausted,
}

/// Iterator over the leaves under a root, in address order, on the
/// editor's range cursor, with an optional bound on the entries read, so
/// hostile tables (loops, shared subtrees) can cost time but never a hang
/// the caller did not allow. Entries with reserved bits are reported and
/// not followed, as the walker would fault on them.
pub struct Mappings<'m, M: PhysMem + ?Sized> {
    mem: &'m M,
    ctx: CpuContext,
    cursor: Cursor<true>,
}

/// Every leaf reachable from `ctx`'s CR3, with the reserved-bit rules of
/// `ctx` (the same the walker applies).
pub fn mappings<'m, M: PhysMem + ?Sized>(mem: &'m M, ctx: &CpuContext) -> Mappings<'m, M> {
    Mappings { mem, ctx: *ctx, cursor: Cursor::<true>::whole(ctx) }
}

impl<M: PhysMem + ?Sized> Mappings<'_, M> {
    /// Stops (with [`MappingError::BudgetExhausted`]) after `entries`
    /// entry reads.
    pub fn budget(mut self, entries: u64) -> Self {
        self.cursor.set_budget(entries);
        self
    }
}

impl<M: PhysMem + ?Sized> Iterator for Mappings<'_, M> {
    type Item = Result<Mapping, MappingError>;

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(step) = self.cursor.next(self.mem) {
            let f = match step {
                Step::Entry(f) => f,
                Step::Unreadable { level, table, raw } => {
                    let va = self.cursor.canonical(raw);
                    return Some(Err(MappingError::TableOutsideMemory { level, table, va }));
                }
                Step::BudgetExhausted => return Some(Err(MappingError::BudgetExhausted)),
            };
            let (e, level) = (f.entry, f.slot.level());
            if !e.is_present() {
                continue;
            }
            let va = self.cursor.canonical(f.raw);
            if let Some(reason) = reserved_bit(e, level, &self.ctx) {
                return Some(Err(MappingError::Reserved { va, level, entry: e, reason }));
            }
            if !e.is_leaf_at(level) {
                self.cursor.descend(&f, e.addr(self.ctx.maxphyaddr));
                continue;
            }
            let Some(size) = level.page_size() else {
                continue;
            };
            let mut flags =
                e.leaf_flags(level).difference(PteFlags(PteFlags::RW.0 | PteFlags::USER.0 | PteFlags::NX.0));
            if f.writable && e.is_writable() {
                flags |= PteFlags::RW;
            }
            if f.user && e.is_user() {
                flags |= PteFlags::USER;
            }
            if (f.nx || e.is_nx()) && self.ctx.nxe {
                flags |= PteFlags::NX;
            }
            return Some(Ok(Mapping { va, pa: e.frame(size, self.ctx.maxphyaddr), size, flags, leaf: e }));
        }
        None
    }
}

/// A page-table hierarchy being edited: its root and paging mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapper {
    pub(crate) root: PhysAddr,
    pub(crate) la57: bool,
    pub(crate) maxphyaddr: u8,
    pub(crate) gbpages: bool,
}

/// Where a leaf for an address sits.
#[derive(Clone, Copy)]
struct LeafSlot {
    entry_pa: PhysAddr,
    entry: Pte,
    level: Level,
    size: PageSize,
    /// The address looked up.
    va: VirtAddr,
}

impl Mapper {
    /// Edits the hierarchy rooted at `root` (a PML4, or a PML5 with
    /// `la57`) on a CPU with `maxphyaddr` address bits and, with
    /// `gbpages`, 1 GiB pages.
    pub const fn new(root: PhysAddr, la57: bool, maxphyaddr: u8, gbpages: bool) -> Self {
        Mapper { root, la57, maxphyaddr, gbpages }
    }

    /// The hierarchy `ctx`'s CR3 points at, in `ctx`'s paging mode.
    pub const fn from_context(ctx: &CpuContext) -> Self {
        Mapper::new(ctx.root(), ctx.la57, ctx.maxphyaddr, ctx.gbpages)
    }

    /// Allocates and zeroes a new root table.
    pub fn create<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        mem: &mut M,
        frames: &mut A,
        la57: bool,
        maxphyaddr: u8,
        gbpages: bool,
    ) -> Result<Self, MapError> {
        let root = alloc_table(mem, frames)?;
        Ok(Mapper::new(root, la57, maxphyaddr, gbpages))
    }

    /// The root table.
    pub const fn root(&self) -> PhysAddr {
        self.root
    }

    /// A kernel-mode context (Linux's defaults, see
    /// [`CpuContext::kernel`]) on this hierarchy and paging mode.
    pub const fn context(&self) -> CpuContext {
        let mut c = CpuContext::kernel(self.root);
        c.la57 = self.la57;
        c.maxphyaddr = self.maxphyaddr;
        c.gbpages = self.gbpages;
        c
    }

    /// Every leaf under the root (see [`mappings`]).
    pub fn mappings<'m, M: PhysMem + ?Sized>(&self, mem: &'m M) -> Mappings<'m, M> {
        mappings(mem, &self.context())
    }

    #[inline]
    fn check_range(&self, va: VirtAddr, len: u64, align: u64) -> Result<u64, MapError> {
        if len == 0 {
            return Err(MapError::BadRange);
        }
        for a in [va.0, len] {
            if a & (align - 1) != 0 {
                return Err(MapError::NotAligned(a));
            }
        }
        let last = va.0.checked_add(len - 1).ok_or(MapError::BadRange)?;
        let canon = |a: u64| VirtAddr(a).is_canonical(self.la57);
        // Canonical start and end in the same half means every address in
        // between is canonical.
        if !canon(va.0) || !canon(last) || (va.0 >> 63) != (last >> 63) {
            return Err(MapError::BadRange);
        }
        Ok(last)
    }

    fn read(mem: &(impl PhysMem + ?Sized), pa: PhysAddr) -> Result<Pte, MapError> {
        mem.read_u64(pa).map(Pte).map_err(|_| MapError::TableOutsideMemory(PhysAddr(pa.0 & !0xfff)))
    }

    fn write(mem: &mut (impl PhysMem + ?Sized), pa: PhysAddr, e: Pte) -> Result<(), MapError> {
        mem.write_u64(pa, e.0).map_err(|_| MapError::TableOutsideMemory(PhysAddr(pa.0 & !0xfff)))
    }

    /// Replaces a leaf the mapper found, reporting the change to a memory
    /// that traces page-table edits ([`PhysMem::pte_written`]).
    #[inline(always)]
    fn write_leaf(
        &self,
        mem: &mut (impl PhysMem + ?Sized),
        slot: &LeafSlot,
        new: Pte,
        site: &'static core::panic::Location<'static>,
    ) -> Result<(), MapError> {
        Self::write(mem, slot.entry_pa, new)?;
        if mem.traces_ptes() && slot.entry != new {
            mem.pte_written(&crate::paging::editor::PteWrite {
                root: self.root,
                va: slot.va.0,
                level: slot.level,
                old: slot.entry,
                new,
                site,
            });
        }
        Ok(())
    }

    fn ctx(&self) -> CpuContext {
        self.context()
    }

    /// Maps `[va, va + len)` to `[pa, pa + len)` with normalised `flags`
    /// (PRESENT is added; bit 7 means PAT). On failure nothing stays
    /// mapped, though tables allocated on the way may remain (empty).
    pub fn map<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        req: MapRequest,
    ) -> Result<MapperFlush, MapError> {
        let MapRequest { va, pa, len, size, flags } = req;
        let align = match size {
            SizeRequest::Fixed(PageSize::Size1G) if !self.gbpages => return Err(MapError::Unsupported1G),
            SizeRequest::Fixed(s) => s.bytes(),
            SizeRequest::Best => PAGE_SIZE,
        };
        self.check_range(va, len, align)?;
        if pa.0 & (align - 1) != 0 {
            return Err(MapError::NotAligned(pa.0));
        }
        let pa_last = pa.0.checked_add(len - 1).ok_or(MapError::BadRange)?;
        if !PhysAddr(pa_last).fits(self.maxphyaddr) {
            return Err(MapError::PhysAddrTooWide(PhysAddr(pa_last)));
        }
        let flags = flags.union(PteFlags::PRESENT);
        if len == PAGE_SIZE && matches!(size, SizeRequest::Best | SizeRequest::Fixed(PageSize::Size4K)) {
            return self.map_4k(mem, frames, va, pa, flags);
        }
        let mut done = 0u64;
        let mut min = PageSize::Size1G;
        while done < len {
            let cur_va = VirtAddr(va.0 + done);
            let cur_pa = PhysAddr(pa.0 + done);
            let rest = MapRequest { va: cur_va, pa: cur_pa, len: len - done, size, flags };
            match self.map_one(mem, frames, rest) {
                Ok((s, n)) => {
                    done += s.bytes() * n;
                    min = min.min(s);
                }
                Err(e) => {
                    if done > 0 {
                        // Only leaves this call wrote lie in [va, va+done).
                        let _ = self.unmap(mem, frames, va, done, false).map(MapperFlush::ignore);
                    }
                    return Err(e);
                }
            }
        }
        let pages = len >> min.shift();
        Ok(MapperFlush::new(va, pages, min))
    }

    /// `map` of one 4 KiB page (checked by the caller), the fault-sized
    /// case: the same walk as `map_one` makes for it, without the choice
    /// of sizes and the run of consecutive leaves.
    #[inline]
    fn map_4k<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        va: VirtAddr,
        pa: PhysAddr,
        flags: PteFlags,
    ) -> Result<MapperFlush, MapError> {
        let ctx = self.ctx();
        let (rsvd, amask) = (reserved_addr_mask(self.maxphyaddr), phys_addr_mask(self.maxphyaddr));
        let user = flags.contains(PteFlags::USER);
        let mut table = self.root;
        let mut level = Level::root(self.la57);
        loop {
            let entry_pa = PhysAddr(table.0 + 8 * va.table_index(level) as u64);
            let e = Self::read(mem, entry_pa)?;
            if e.is_present() {
                if let Some(reason) = reserved_bit_masked(e, level, &ctx, rsvd) {
                    return Err(MapError::ReservedBits { va, level, reason });
                }
            }
            let Some(lower) = level.next_lower() else {
                if e.is_present() {
                    return Err(MapError::AlreadyMapped { va, level });
                }
                Self::write(mem, entry_pa, Pte::leaf(pa, flags, PageSize::Size4K))?;
                return Ok(MapperFlush::new(va, 1, PageSize::Size4K));
            };
            table = if !e.is_present() {
                let t = alloc_table(mem, frames)?;
                let tf = if user { TABLE_FLAGS.union(PteFlags::USER) } else { TABLE_FLAGS };
                Self::write(mem, entry_pa, Pte::table(t, tf))?;
                t
            } else if e.is_leaf_at(level) {
                return Err(MapError::ParentIsHugePage { va, level });
            } else {
                if user && !e.is_user() {
                    Self::write(mem, entry_pa, e.with(PteFlags::USER))?;
                }
                PhysAddr(e.0 & amask)
            };
            level = lower;
        }
    }

    /// Maps the first run of `rest` (`rest.len` is what remains of the
    /// request): one leaf, or consecutive leaves of one table.
    fn map_one<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        rest: MapRequest,
    ) -> Result<(PageSize, u64), MapError> {
        let MapRequest { va, pa, len: remaining, size: req, flags } = rest;
        let ctx = self.ctx();
        let (rsvd, amask) = (reserved_addr_mask(self.maxphyaddr), phys_addr_mask(self.maxphyaddr));
        let mut table = self.root;
        let mut level = Level::root(self.la57);
        // Whether `table` was allocated by this call (so all its entries
        // are empty).
        let mut fresh = false;
        let fits = |s: PageSize| match req {
            SizeRequest::Fixed(r) => r == s,
            SizeRequest::Best => {
                (s != PageSize::Size1G || self.gbpages)
                    && va.is_aligned(s.bytes())
                    && pa.is_aligned(s.bytes())
                    && remaining >= s.bytes()
            }
        };
        let last_level = match req {
            SizeRequest::Fixed(r) => r.leaf_level(),
            SizeRequest::Best => Level::Pte,
        };
        loop {
            let entry_pa = PhysAddr(table.0 + 8 * va.table_index(level) as u64);
            let e = Self::read(mem, entry_pa)?;
            if let (false, Some(s)) = (e.is_present(), level.page_size()) {
                if fits(s) {
                    Self::write(mem, entry_pa, Pte::leaf(pa, flags, s))?;
                    // Consecutive leaves of the same size in this table need
                    // no new walk (the loop of Linux's phys_pmd_init): this
                    // makes mapping all of RAM cost a store per page.
                    // Alignment carries over, as the step is the page size.
                    // The raw entry steps by the page size: the address
                    // field is aligned to it, so nothing carries into flags.
                    let first = Pte::leaf(pa, flags, s).0;
                    let step = s.bytes();
                    let mut n = 1u64;
                    let mut idx = va.table_index(level) + 1;
                    while idx < 512 && remaining - n * step >= step {
                        let next_pa = PhysAddr(table.0 + 8 * idx as u64);
                        // A table this call created is known to be empty.
                        if !fresh && Self::read(mem, next_pa)?.is_present() {
                            break;
                        }
                        Self::write(mem, next_pa, Pte(first + n * step))?;
                        n += 1;
                        idx += 1;
                    }
                    return Ok((s, n));
                }
            }
            if e.is_present() {
                if let Some(reason) = reserved_bit_masked(e, level, &ctx, rsvd) {
                    return Err(MapError::ReservedBits { va, level, reason });
                }
            }
            if level == last_level {
                return Err(MapError::AlreadyMapped { va, level });
            }
            fresh = !e.is_present();
            let next = if !e.is_present() {
                let t = alloc_table(mem, frames)?;
                let mut tf = TABLE_FLAGS;
                if flags.contains(PteFlags::USER) {
                    tf |= PteFlags::USER;
                }
                Self::write(mem, entry_pa, Pte::table(t, tf))?;
                t
            } else if e.is_leaf_at(level) {
                return Err(MapError::ParentIsHugePage { va, level });
            } else {
                if flags.contains(PteFlags::USER) && !e.is_user() {
                    Self::write(mem, entry_pa, e.with(PteFlags::USER))?;
                }
                PhysAddr(e.0 & amask)
            };
            table = next;
            level = match level.next_lower() {
                Some(l) => l,
                None => return Err(MapError::AlreadyMapped { va, level }),
            };
        }
    }

    /// Makes sure the tables leading to `va` exist down to `level` and
    /// returns the physical address of the `level` table covering `va`
    /// (Linux's `pud_alloc`/`pmd_alloc` walk). Kernels use it to create
    /// the kernel half's upper tables once, so that every address space
    /// can share them by copying root entries.
    pub fn populate<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        va: VirtAddr,
        level: Level,
    ) -> Result<PhysAddr, MapError> {
        if !va.is_canonical(self.la57) {
            return Err(MapError::BadRange);
        }
        self.alloc_slot(mem, frames, va, level, false).map(|(slot, _)| slot.table())
    }

    /// Finds the leaf mapping `va`.
    #[inline(always)]
    fn find_leaf<M: PhysMem + ?Sized>(&self, mem: &M, va: VirtAddr) -> Result<LeafSlot, MapError> {
        let ctx = self.ctx();
        let (rsvd, amask) = (reserved_addr_mask(self.maxphyaddr), phys_addr_mask(self.maxphyaddr));
        let mut table = self.root;
        let mut level = Level::root(self.la57);
        loop {
            let entry_pa = PhysAddr(table.0 + 8 * va.table_index(level) as u64);
            let e = Self::read(mem, entry_pa)?;
            if !e.is_present() {
                return Err(MapError::NotMapped(va));
            }
            if let Some(reason) = reserved_bit_masked(e, level, &ctx, rsvd) {
                return Err(MapError::ReservedBits { va, level, reason });
            }
            if e.is_leaf_at(level) {
                let size = level.page_size().ok_or(MapError::NotMapped(va))?;
                return Ok(LeafSlot { entry_pa, entry: e, level, size, va });
            }
            table = PhysAddr(e.0 & amask);
            level = level.next_lower().ok_or(MapError::NotMapped(va))?;
        }
    }

    /// Visits the leaves covering `[va, va+len)`, which must all be mapped
    /// and whole; the visitor gets each leaf.
    fn for_each_whole_leaf<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        va: VirtAddr,
        len: u64,
        mut f: impl FnMut(&mut M, &LeafSlot) -> Result<(), MapError>,
    ) -> Result<PageSize, MapError> {
        let last = self.check_range(va, len, PAGE_SIZE)?;
        let mut cur = va.0;
        let mut min = PageSize::Size1G;
        loop {
            let slot = self.find_leaf(&*mem, VirtAddr(cur))?;
            let start = cur & !(slot.size.bytes() - 1);
            let end = start + (slot.size.bytes() - 1);
            if start != cur || end > last {
                return Err(MapError::PartialHugePage { va: VirtAddr(start), size: slot.size });
            }
            f(mem, &slot)?;
            min = min.min(slot.size);
            if end >= last {
                return Ok(min);
            }
            cur = end + 1;
        }
    }

    /// Unmaps `[va, va + len)`: every page in it must be mapped, and large
    /// pages covered whole (no splitting). With `free_tables`, tables left
    /// empty are returned to `frames` (the flush token's INVLPGs also drop
    /// the paging-structure caches that referenced them).
    #[track_caller]
    pub fn unmap<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        va: VirtAddr,
        len: u64,
        free_tables: bool,
    ) -> Result<MapperFlush, MapError> {
        let site = core::panic::Location::caller();
        self.check_range(va, len, PAGE_SIZE)?;
        // A range that is one leaf (the common case: a page) is checked
        // and edited in one walk.
        let first = self.find_leaf(&*mem, va)?;
        if first.size.bytes() == len {
            if va.0 & (len - 1) != 0 {
                return Err(MapError::PartialHugePage { va: VirtAddr(va.0 & !(len - 1)), size: first.size });
            }
            self.zap(mem, frames, &first, free_tables, site)?;
            return Ok(MapperFlush::new(va, 1, first.size));
        }
        // Check first, so a failure changes nothing.
        let min = self.for_each_whole_leaf(mem, va, len, |_, _| Ok(()))?;
        self.for_each_whole_leaf(mem, va, len, |mem, slot| self.zap(mem, frames, slot, free_tables, site))?;
        Ok(MapperFlush::new(va, len >> min.shift(), min))
    }

    /// Clears a leaf and, with `free_tables`, the tables it leaves empty.
    #[inline(always)]
    fn zap<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        slot: &LeafSlot,
        free_tables: bool,
        site: &'static core::panic::Location<'static>,
    ) -> Result<(), MapError> {
        self.write_leaf(mem, slot, Pte::NONE, site)?;
        if free_tables {
            self.free_empty(mem, frames, slot)?;
        }
        Ok(())
    }

    /// The entry addresses from the root down to (excluding) `slot`'s
    /// leaf: walked again rather than carried in every `LeafSlot`, since
    /// only freeing tables and granting USER need them.
    fn parents<M: PhysMem + ?Sized>(&self, mem: &M, slot: &LeafSlot) -> Result<([PhysAddr; 5], usize), MapError> {
        let mut parents = [PhysAddr(0); 5];
        let mut n = 0;
        let mut table = self.root;
        let mut level = Level::root(self.la57);
        while level != slot.level {
            let entry_pa = PhysAddr(table.0 + 8 * slot.va.table_index(level) as u64);
            if let Some(p) = parents.get_mut(n) {
                *p = entry_pa;
                n += 1;
            }
            table = Self::read(mem, entry_pa)?.addr(self.maxphyaddr);
            level = level.next_lower().ok_or(MapError::NotMapped(slot.va))?;
        }
        Ok((parents, n))
    }

    fn free_empty<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
        &self,
        mem: &mut M,
        frames: &mut A,
        slot: &LeafSlot,
    ) -> Result<(), MapError> {
        let (parents, n) = self.parents(&*mem, slot)?;
        let mut child = PhysAddr(slot.entry_pa.0 & !0xfff);
        for &parent in parents[..n].iter().rev() {
            if child == self.root || !table_is_empty(&*mem, child)? {
                break;
            }
            Self::write(mem, parent, Pte::NONE)?;
            frames.deallocate_frame(child);
            child = PhysAddr(parent.0 & !0xfff);
        }
        Ok(())
    }

    /// Sets the flags of every leaf in `[va, va + len)` to normalised
    /// `flags` (PRESENT added), keeping frames, sizes and the A/D bits the
    /// CPU owns. Every page must be mapped and large pages covered whole.
    #[track_caller]
    pub fn protect<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        va: VirtAddr,
        len: u64,
        flags: PteFlags,
    ) -> Result<MapperFlush, MapError> {
        let site = core::panic::Location::caller();
        self.for_each_whole_leaf(mem, va, len, |_, _| Ok(()))?;
        let flags = flags.union(PteFlags::PRESENT).difference(HW_OWNED);
        let maxphy = self.maxphyaddr;
        let min = self.for_each_whole_leaf(mem, va, len, |mem, slot| {
            let old = slot.entry.leaf_flags(slot.level);
            let new = Pte::leaf(slot.entry.frame(slot.size, maxphy), flags.union(old & HW_OWNED), slot.size);
            self.write_leaf(mem, slot, new, site)?;
            // Make sure the path down grants USER if the leaf now does.
            if flags.contains(PteFlags::USER) {
                let (parents, n) = self.parents(&*mem, slot)?;
                for &p in &parents[..n] {
                    let e = Self::read(&*mem, p)?;
                    if !e.is_user() {
                        Self::write(mem, p, e.with(PteFlags::USER))?;
                    }
                }
            }
            Ok(())
        })?;
        Ok(MapperFlush::new(va, len >> min.shift(), min))
    }
}

pub(crate) fn alloc_table<M: PhysMem + ?Sized, A: FrameAllocator + ?Sized>(
    mem: &mut M,
    frames: &mut A,
) -> Result<PhysAddr, MapError> {
    let t = frames.allocate_frame().ok_or(MapError::FrameAllocationFailed)?;
    if frames.zeroes_frames() {
        return Ok(t);
    }
    if mem.write(t, &[0u8; PAGE_SIZE as usize]).is_err() {
        frames.deallocate_frame(t);
        return Err(MapError::TableOutsideMemory(t));
    }
    Ok(t)
}

#[inline(never)] // its page-sized buffer stays out of the callers' frames
fn table_is_empty<M: PhysMem + ?Sized>(mem: &M, table: PhysAddr) -> Result<bool, MapError> {
    let mut buf = [0u8; PAGE_SIZE as usize];
    mem.read(table, &mut buf).map_err(|_| MapError::TableOutsideMemory(table))?;
    Ok(buf.iter().all(|&b| b == 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMem;
    use crate::paging::tlb::Tlb;
    use crate::paging::walker::{translate, Access, FaultReason};
    use alloc::vec::Vec;

    /// Hands out frames from a bump pointer and records frees.
    pub(crate) struct Bump {
        pub next: u64,
        pub end: u64,
        pub freed: Vec<PhysAddr>,
    }

    impl FrameAllocator for Bump {
        fn allocate_frame(&mut self) -> Option<PhysAddr> {
            if let Some(f) = self.freed.pop() {
                return Some(f);
            }
            if self.next >= self.end {
                return None;
            }
            let f = PhysAddr(self.next);
            self.next += PAGE_SIZE;
            Some(f)
        }
        fn deallocate_frame(&mut self, frame: PhysAddr) {
            self.freed.push(frame);
        }
    }

    fn setup() -> (VecMem, Bump, Mapper) {
        let mut mem = VecMem::new(4 << 20);
        let mut frames = Bump { next: 0x1000, end: 0x10_0000, freed: Vec::new() };
        let m = Mapper::create(&mut mem, &mut frames, false, 46, true).unwrap();
        (mem, frames, m)
    }

    const RW: PteFlags = PteFlags(PteFlags::PRESENT.0 | PteFlags::RW.0);
    const URW: PteFlags = PteFlags(RW.0 | PteFlags::USER.0);

    #[test]
    fn map_translate_unmap() {
        let (mut mem, mut fr, m) = setup();
        let va = VirtAddr(0x7fff_0000_0000);
        m.map(
            &mut mem,
            &mut fr,
            MapRequest { va, pa: PhysAddr(0x20_0000), len: 0x3000, size: SizeRequest::Best, flags: URW },
        )
        .unwrap()
        .ignore();
        let ctx = m.context().user();
        let t = translate(&mem, &ctx, VirtAddr(va.0 + 0x2010), Access::Write).unwrap();
        assert_eq!(t.pa, PhysAddr(0x20_2010));
        assert_eq!(t.size, PageSize::Size4K);
        assert_eq!(
            m.map(
                &mut mem,
                &mut fr,
                MapRequest {
                    va: VirtAddr(va.0 + 0x1000),
                    pa: PhysAddr(0),
                    len: 0x1000,
                    size: SizeRequest::Best,
                    flags: RW
                }
            ),
            Err(MapError::AlreadyMapped { va: VirtAddr(va.0 + 0x1000), level: Level::Pte })
        );
        let tables_before = fr.next;
        m.unmap(&mut mem, &mut fr, va, 0x3000, true).unwrap().ignore();
        assert_eq!(fr.freed.len(), 3, "PT, PD and PDPT freed, root kept");
        assert_eq!(fr.next, tables_before);
        assert_eq!(m.mappings(&mem).count(), 0);
        assert_eq!(m.unmap(&mut mem, &mut fr, va, 0x1000, false), Err(MapError::NotMapped(va)));
    }

    #[test]
    fn best_sizes_and_huge_errors() {
        let (mut mem, mut fr, m) = setup();
        let va = VirtAddr(0xffff_8880_0000_0000);
        // 1G + 2M + 4K where aligned.
        let len = (1 << 30) + (2 << 20) + 0x1000;
        m.map(&mut mem, &mut fr, MapRequest { va, pa: PhysAddr(0x4000_0000), len, size: SizeRequest::Best, flags: RW })
            .unwrap()
            .ignore();
        let sizes: Vec<_> = m.mappings(&mem).map(|r| r.unwrap().size).collect();
        assert_eq!(sizes, [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K]);
        assert_eq!(
            m.map(
                &mut mem,
                &mut fr,
                MapRequest {
                    va: VirtAddr(va.0 + 0x1000),
                    pa: PhysAddr(0),
                    len: 0x1000,
                    size: SizeRequest::Best,
                    flags: RW
                }
            ),
            Err(MapError::ParentIsHugePage { va: VirtAddr(va.0 + 0x1000), level: Level::Pud })
        );
        assert_eq!(
            m.unmap(&mut mem, &mut fr, va, 0x1000, false),
            Err(MapError::PartialHugePage { va, size: PageSize::Size1G })
        );
        // protect a whole 2M page, then check the walker sees it.
        let two = VirtAddr(va.0 + (1 << 30));
        m.protect(&mut mem, two, 2 << 20, PteFlags::PRESENT | PteFlags::NX).unwrap().ignore();
        let e = translate(&mem, &m.context(), two, Access::Execute).unwrap_err();
        assert_eq!(e.page_fault().unwrap().reason, FaultReason::ExecuteDisabled);
        assert_eq!(
            m.map(
                &mut mem,
                &mut fr,
                MapRequest { va, pa: PhysAddr(0), len: 0x1000, size: SizeRequest::Fixed(PageSize::Size2M), flags: RW }
            ),
            Err(MapError::NotAligned(0x1000))
        );
    }

    #[test]
    fn allocation_failure_rolls_back() {
        let (mut mem, _, m) = setup();
        let mut fr = Bump {
            next: 0x2000,
            end: 0x5000, // room for PDPT, PD, PT: one 2M region only
            freed: Vec::new(),
        };
        let va = VirtAddr(0x1f_f000);
        let r = m.map(
            &mut mem,
            &mut fr,
            MapRequest { va, pa: PhysAddr(0x1000), len: 0x2000, size: SizeRequest::Best, flags: RW },
        );
        assert_eq!(r, Err(MapError::FrameAllocationFailed));
        assert_eq!(m.mappings(&mem).filter(|r| r.is_ok()).count(), 0);
    }

    #[test]
    fn populate_creates_tables_once_and_map_reuses_them() {
        let (mut mem, mut frames, m) = setup();
        let va = VirtAddr(0xffff_c900_0000_0000);
        let pmd = m.populate(&mut mem, &mut frames, va, Level::Pmd).unwrap();
        assert_eq!(m.populate(&mut mem, &mut frames, va, Level::Pmd).unwrap(), pmd, "idempotent");
        m.map(
            &mut mem,
            &mut frames,
            MapRequest {
                va,
                pa: PhysAddr(0x20_0000),
                len: 0x20_0000,
                size: SizeRequest::Fixed(PageSize::Size2M),
                flags: PteFlags::RW,
            },
        )
        .unwrap()
        .ignore();
        // The leaf went into the populated table.
        assert!(Pte(mem.read_u64(pmd).unwrap()).is_present());
        assert!(m.populate(&mut mem, &mut frames, va, Level::Pte).is_err(), "a 2 MiB leaf is in the way");
    }

    #[test]
    fn flush_token_drives_tlb() {
        let (mut mem, mut fr, m) = setup();
        let ctx = m.context();
        let mut tlb = Tlb::new();
        let va = VirtAddr(0x40_0000);
        m.map(
            &mut mem,
            &mut fr,
            MapRequest { va, pa: PhysAddr(0x30_0000), len: 0x1000, size: SizeRequest::Best, flags: RW },
        )
        .unwrap()
        .flush(&mut tlb);
        tlb.translate(&mut mem, &ctx, va, Access::Read).unwrap();
        let tok = m.unmap(&mut mem, &mut fr, va, 0x1000, false).unwrap();
        assert_eq!(tok.range(), (va, 1, PageSize::Size4K));
        assert_eq!(tlb.stale_entries(&mem, &ctx).len(), 1);
        tok.flush(&mut tlb);
        assert!(tlb.stale_entries(&mem, &ctx).is_empty());
        assert!(tlb.translate(&mut mem, &ctx, va, Access::Read).is_err());
    }

    #[test]
    fn mappings_on_hostile_tables() {
        let mut mem = VecMem::new(0x3000);
        // Root entry 0 points to itself; entry 1 points outside memory;
        // entry 2 has PS (reserved at the root).
        mem.write_u64(PhysAddr(0x1000), 0x1000 | 3).unwrap();
        mem.write_u64(PhysAddr(0x1008), 0x10_0000 | 3).unwrap();
        mem.write_u64(PhysAddr(0x1010), 0x2000 | 0x83).unwrap();
        let ctx = CpuContext::kernel(PhysAddr(0x1000));
        let items: Vec<_> = mappings(&mem, &ctx).budget(1000).collect();
        assert!(items.iter().any(|r| matches!(r, Ok(m) if m.va == VirtAddr(0) && m.pa == PhysAddr(0x1000))));
        assert!(items.iter().any(|r| matches!(r, Err(MappingError::TableOutsideMemory { .. }))));
        assert!(items.iter().any(|r| matches!(r, Err(MappingError::Reserved { .. }))));
        assert_eq!(items.last(), Some(&Err(MappingError::BudgetExhausted)));
    }

    #[test]
    fn an_alias_tree_of_empty_tables_stops_at_the_read_budget() {
        use crate::paging::editor::LeafKinds;
        // Every PML4, PDPT and PD entry points to the next table down, the
        // PT is all zeros: 2^36 empty entries to read, and no leaf.
        let mut mem = VecMem::new(0x5000);
        for (table, next) in [(0x1000u64, 0x2000u64), (0x2000, 0x3000), (0x3000, 0x4000)] {
            for i in 0..512 {
                mem.write_u64(PhysAddr(table + 8 * i), next | 7).unwrap();
            }
        }
        let pt = Mapper::new(PhysAddr(0x1000), false, 52, false);
        let mut leaves = 0;
        let r = pt.for_each_leaf_within(&mut mem, 0..1 << 47, LeafKinds::NonNone, 100_000, |_, _| {
            leaves += 1;
            true
        });
        assert_eq!(r, Err(MapError::BudgetExhausted(100_000)));
        assert_eq!(leaves, 0);
        assert!(alloc::format!("{}", r.unwrap_err()).contains("stopped after reading 100000 entries"));
    }
}
