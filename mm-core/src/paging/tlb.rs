//! A TLB model: what a CPU may still use after the page tables changed.
//!
//! Entries are keyed by (PCID, virtual page) and held in fixed
//! set-associative banks, one per page size as in real cores, so a hit
//! touches no heap. The invalidation rules are the SDM's (4.10.4): INVLPG
//! drops the page (also global entries), a CR3 write drops non-global
//! entries (of the new PCID with CR4.PCIDE, unless bit 63 is set), a CR4.PGE
//! toggle drops everything, and a #PF drops the faulting page's entries.
//! [`Tlb::stale_entries`] compares every cached entry with a fresh walk,
//! which is how a missing flush is found on a host whose KVM (shadow
//! paging) never shows one.

use crate::addr::{Level, PageSize, PhysAddr, VirtAddr};
use crate::mem::PhysMem;
use crate::paging::entry::{Pte, PteFlags};
use crate::paging::mapper::TlbFlusher;
use crate::paging::walker::{
    check_access, translate_update_ad, walk, Access, CpuContext, Fault, PageFault, Perms, Translation, WalkTrace,
};
use alloc::vec::Vec;

/// Ways per set in every bank.
pub const TLB_WAYS: usize = 4;
/// Sets of the 4 KiB bank (64 x 4 = 256 entries).
pub const TLB_SETS_4K: usize = 64;
/// Sets of the 2 MiB bank (8 x 4 = 32 entries).
pub const TLB_SETS_2M: usize = 8;
/// Sets of the 1 GiB bank (1 x 4 = 4 entries).
pub const TLB_SETS_1G: usize = 1;

const INVALID: u64 = u64::MAX;

/// One cached translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbEntry {
    /// `va >> size.shift()` of the page (u64::MAX when the slot is empty).
    pub vpn: u64,
    /// The PCID the entry was filled under (0 without CR4.PCIDE).
    pub pcid: u16,
    /// Page size.
    pub size: PageSize,
    /// Base of the physical page.
    pub frame: PhysAddr,
    /// Effective normalised flags at fill time (as [`Translation::flags`]);
    /// GLOBAL only if CR4.PGE was set, DIRTY if the leaf was dirty or the
    /// filling access wrote.
    pub flags: PteFlags,
}

impl TlbEntry {
    const EMPTY: TlbEntry =
        TlbEntry { vpn: INVALID, pcid: 0, size: PageSize::Size4K, frame: PhysAddr(0), flags: PteFlags(0) };

    /// The first virtual address the entry covers (canonical form).
    pub fn va(&self, la57: bool) -> VirtAddr {
        VirtAddr(self.vpn << self.size.shift()).canonicalize(la57)
    }

    /// The entry is shared by all PCIDs and survives CR3 writes.
    #[inline]
    pub const fn is_global(&self) -> bool {
        self.flags.contains(PteFlags::GLOBAL)
    }

    /// Whether the entry translates `va` (any PCID): what INVLPG of `va`
    /// drops.
    #[inline]
    pub fn covers(&self, va: VirtAddr) -> bool {
        self.vpn != INVALID && self.vpn == (va.0 & ((1u64 << 57) - 1)) >> self.size.shift()
    }

    /// Whether a CR3 write of `new_cr3` (`pcide` = CR4.PCIDE) drops the
    /// entry (SDM 4.10.4.1): non-global entries, of the new PCID only with
    /// PCIDs, none with the no-flush bit.
    #[inline]
    pub fn dropped_by_cr3_write(&self, new_cr3: u64, pcide: bool) -> bool {
        if self.is_global() {
            return false;
        }
        !pcide || (new_cr3 & (1 << 63) == 0 && self.pcid == (new_cr3 & 0xfff) as u16)
    }

    /// The entry a leaf `pte` at `level` gives for `va` (flags normalised
    /// as a walk's, GLOBAL kept only with `pge`), or `None` if `pte` is not
    /// a present leaf there: what a CPU may hold for `va` while `pte` is
    /// in the tables (the stale-TLB replay's candidates).
    pub fn from_leaf(pte: Pte, level: Level, va: VirtAddr, pcid: u16, pge: bool, maxphyaddr: u8) -> Option<TlbEntry> {
        let size = level.page_size()?;
        if !pte.is_present() || !pte.is_leaf_at(level) {
            return None;
        }
        let mut flags = pte.leaf_flags(level);
        if !pge {
            flags = flags.difference(PteFlags::GLOBAL);
        }
        Some(TlbEntry {
            vpn: (va.0 & ((1u64 << 57) - 1)) >> size.shift(),
            pcid,
            size,
            frame: pte.frame(size, maxphyaddr),
            flags,
        })
    }

    #[inline]
    fn matches(&self, vpn: u64, pcid: u16) -> bool {
        self.vpn == vpn && (self.pcid == pcid || self.is_global())
    }
}

#[derive(Clone)]
struct Bank<const SETS: usize> {
    sets: [[TlbEntry; TLB_WAYS]; SETS],
    next: [u8; SETS],
}

impl<const SETS: usize> Bank<SETS> {
    const fn new() -> Self {
        Bank { sets: [[TlbEntry::EMPTY; TLB_WAYS]; SETS], next: [0; SETS] }
    }

    #[inline]
    fn set_of(vpn: u64) -> usize {
        (vpn as usize) & (SETS - 1)
    }

    #[inline(always)]
    fn lookup(&self, vpn: u64, pcid: u16) -> Option<&TlbEntry> {
        self.sets[Self::set_of(vpn)].iter().find(|e| e.matches(vpn, pcid))
    }

    fn insert(&mut self, e: TlbEntry) {
        let s = Self::set_of(e.vpn);
        let set = &mut self.sets[s];
        // Replace an entry for the same page first so a page never has two
        // entries of one size under one PCID.
        let way = set
            .iter()
            .position(|x| x.vpn == e.vpn && x.pcid == e.pcid)
            .or_else(|| set.iter().position(|x| x.vpn == INVALID))
            .unwrap_or_else(|| {
                let w = self.next[s] as usize % TLB_WAYS;
                self.next[s] = ((w + 1) % TLB_WAYS) as u8;
                w
            });
        set[way] = e;
    }

    fn retain(&mut self, mut keep: impl FnMut(&TlbEntry) -> bool) {
        for set in self.sets.iter_mut() {
            for e in set.iter_mut() {
                if e.vpn != INVALID && !keep(e) {
                    *e = TlbEntry::EMPTY;
                }
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &TlbEntry> {
        self.sets.iter().flatten().filter(|e| e.vpn != INVALID)
    }
}

/// Hit and miss counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlbStats {
    /// Translations served from a cached entry.
    pub hits: u64,
    /// Translations that walked the tables.
    pub misses: u64,
}

/// The result of a translation through the TLB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbTranslation {
    /// The physical address.
    pub pa: PhysAddr,
    /// The page size of the entry used.
    pub size: PageSize,
    /// Effective normalised flags of the entry used.
    pub flags: PteFlags,
    /// Whether a cached entry was used.
    pub hit: bool,
}

/// How a cached entry differs from what the tables say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StaleKind {
    /// The page is no longer mapped (or its walk now faults).
    Unmapped,
    /// The page maps another frame.
    FrameChanged,
    /// The page is now mapped with another page size.
    SizeChanged,
    /// The entry allows an access (write, user, fetch) the tables no
    /// longer allow: the dangerous kind.
    MorePermissive,
    /// The tables allow more than the entry: costs a spurious #PF only
    /// (Linux relies on this for permission upgrades).
    LessPermissive,
    /// D was cleared in memory while the entry says dirty: the next write
    /// will not set D again.
    DirtyCleared,
    /// Global bit, memory type (PWT/PCD/PAT) or protection key differ.
    AttributesChanged,
}

/// A cached entry that disagrees with the page tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// The cached entry.
    pub entry: TlbEntry,
    /// The walk of the entry's first address now.
    pub fresh: Result<Translation, Fault>,
    /// How they differ (the most serious difference).
    pub kind: StaleKind,
}

/// The TLB model.
#[derive(Clone)]
pub struct Tlb {
    b4k: Bank<TLB_SETS_4K>,
    b2m: Bank<TLB_SETS_2M>,
    b1g: Bank<TLB_SETS_1G>,
    stats: TlbStats,
}

impl Default for Tlb {
    fn default() -> Self {
        Self::new()
    }
}

/// The PCID under `ctx` (CR3 bits 0..11 with CR4.PCIDE, else 0).
#[inline]
pub const fn current_pcid(ctx: &CpuContext) -> u16 {
    if ctx.pcide {
        (ctx.cr3 & 0xfff) as u16
    } else {
        0
    }
}

const PERM_BITS: u64 = PteFlags::RW.0 | PteFlags::USER.0 | PteFlags::NX.0;
const ATTR_BITS: u64 = PteFlags::GLOBAL.0 | PteFlags::PWT.0 | PteFlags::PCD.0 | PteFlags::PAT.0 | PteFlags::PKEY_MASK.0;

impl Tlb {
    /// An empty TLB.
    pub const fn new() -> Self {
        Tlb { b4k: Bank::new(), b2m: Bank::new(), b1g: Bank::new(), stats: TlbStats { hits: 0, misses: 0 } }
    }

    /// Hit and miss counts so far.
    pub fn stats(&self) -> TlbStats {
        self.stats
    }

    /// The entry a translation of `va` under `ctx` would use, if any
    /// (4 KiB entries first, as a split TLB's lookup order is not
    /// architectural).
    #[inline]
    pub fn lookup(&self, ctx: &CpuContext, va: VirtAddr) -> Option<TlbEntry> {
        self.lookup_ref(ctx, va).copied()
    }

    #[inline(always)]
    fn lookup_ref(&self, ctx: &CpuContext, va: VirtAddr) -> Option<&TlbEntry> {
        let pcid = current_pcid(ctx);
        let v = va.0 & ((1u64 << 57) - 1);
        if let Some(e) = self.b4k.lookup(v >> 12, pcid) {
            return Some(e);
        }
        if let Some(e) = self.b2m.lookup(v >> 21, pcid) {
            return Some(e);
        }
        self.b1g.lookup(v >> 30, pcid)
    }

    /// Caches a completed translation made under `ctx` by `access`.
    pub fn fill(&mut self, ctx: &CpuContext, t: &Translation, access: Access) {
        let e = entry_for(ctx, t, access);
        match t.size {
            PageSize::Size4K => self.b4k.insert(e),
            PageSize::Size2M => self.b2m.insert(e),
            PageSize::Size1G => self.b1g.insert(e),
        }
    }

    /// Translates as a CPU with this TLB would: a hit is used without
    /// reading the tables (its permissions checked from the entry); a
    /// miss walks (setting A/D in memory as the CPU does) and fills. A write through an entry whose D is clear
    /// walks again, as the CPU must set D in memory. A fault drops the
    /// page's entries (SDM 4.10.4.1).
    #[inline]
    pub fn translate<M: PhysMem + ?Sized>(
        &mut self,
        mem: &mut M,
        ctx: &CpuContext,
        va: VirtAddr,
        access: Access,
    ) -> Result<TlbTranslation, Fault> {
        translate_cached(self, mem, ctx, va, access)
    }

    /// INVLPG: drops every entry covering `va`, global ones included.
    ///
    /// The SDM requires this for the current PCID and global entries and
    /// allows it for other PCIDs; the model drops all PCIDs' entries.
    /// Without CR4.PCIDE (the platform here) the two are the same.
    pub fn invlpg(&mut self, va: VirtAddr) {
        self.b4k.retain(|e| !e.covers(va));
        self.b2m.retain(|e| !e.covers(va));
        self.b1g.retain(|e| !e.covers(va));
    }

    /// A write of `new_cr3` to CR3 (`pcide` = CR4.PCIDE): without PCIDs
    /// drops all non-global entries; with PCIDs drops the non-global
    /// entries of the new PCID unless bit 63 (no-flush) is set.
    pub fn write_cr3(&mut self, new_cr3: u64, pcide: bool) {
        let keep = |e: &TlbEntry| !e.dropped_by_cr3_write(new_cr3, pcide);
        self.b4k.retain(keep);
        self.b2m.retain(keep);
        self.b1g.retain(keep);
    }

    /// Drops all non-global entries of every PCID.
    pub fn flush_non_global(&mut self) {
        self.b4k.retain(TlbEntry::is_global);
        self.b2m.retain(TlbEntry::is_global);
        self.b1g.retain(TlbEntry::is_global);
    }

    /// Drops everything (CR4.PGE toggle, CR4.PCIDE change).
    pub fn flush_all(&mut self) {
        self.b4k.retain(|_| false);
        self.b2m.retain(|_| false);
        self.b1g.retain(|_| false);
    }

    /// Every valid entry.
    pub fn entries(&self) -> impl Iterator<Item = &TlbEntry> {
        self.b4k.iter().chain(self.b2m.iter()).chain(self.b1g.iter())
    }

    /// Compares `e` with a fresh walk under `ctx`; `None` if they agree.
    pub fn compare<M: PhysMem + ?Sized>(mem: &M, ctx: &CpuContext, e: &TlbEntry) -> Option<Stale> {
        let fresh = walk(mem, ctx, e.va(ctx.la57));
        let kind = match &fresh {
            Err(_) => Some(StaleKind::Unmapped),
            Ok(t) if t.size != e.size => Some(StaleKind::SizeChanged),
            Ok(t) if t.frame() != e.frame => Some(StaleKind::FrameChanged),
            Ok(t) => {
                // Rights as "allowed" bits: RW, USER, and not-NX.
                let rights = |f: PteFlags| (f.0 ^ PteFlags::NX.0) & PERM_BITS;
                let (cached, now) = (rights(e.flags), rights(t.flags));
                let mut attrs_now = t.flags.0 & ATTR_BITS;
                if !ctx.pge {
                    attrs_now &= !PteFlags::GLOBAL.0;
                }
                if cached & !now != 0 {
                    Some(StaleKind::MorePermissive)
                } else if now & !cached != 0 {
                    Some(StaleKind::LessPermissive)
                } else if e.flags.contains(PteFlags::DIRTY) && !t.leaf.is_dirty() {
                    Some(StaleKind::DirtyCleared)
                } else if e.flags.0 & ATTR_BITS != attrs_now {
                    Some(StaleKind::AttributesChanged)
                } else {
                    None
                }
            }
        };
        kind.map(|kind| Stale { entry: *e, fresh, kind })
    }

    /// Every entry usable under `ctx` (its PCID, or global) that disagrees
    /// with the tables `ctx` points at.
    pub fn stale_entries<M: PhysMem + ?Sized>(&self, mem: &M, ctx: &CpuContext) -> Vec<Stale> {
        let pcid = current_pcid(ctx);
        self.entries().filter(|e| e.pcid == pcid || e.is_global()).filter_map(|e| Self::compare(mem, ctx, e)).collect()
    }
}

/// What [`translate_cached`] needs of a TLB organisation.
trait TlbCache {
    /// The entry to use (a replacement policy may note the use).
    fn find(&mut self, ctx: &CpuContext, va: VirtAddr) -> Option<TlbEntry>;
    fn insert(&mut self, ctx: &CpuContext, t: &Translation, access: Access);
    fn drop_page(&mut self, va: VirtAddr);
    fn stats_mut(&mut self) -> &mut TlbStats;
}

impl TlbCache for Tlb {
    #[inline(always)]
    fn find(&mut self, ctx: &CpuContext, va: VirtAddr) -> Option<TlbEntry> {
        self.lookup_ref(ctx, va).copied()
    }
    fn insert(&mut self, ctx: &CpuContext, t: &Translation, access: Access) {
        self.fill(ctx, t, access);
    }
    fn drop_page(&mut self, va: VirtAddr) {
        self.invlpg(va);
    }
    fn stats_mut(&mut self) -> &mut TlbStats {
        &mut self.stats
    }
}

/// The entry a translation fills (flags as the TLB keeps them).
fn entry_for(ctx: &CpuContext, t: &Translation, access: Access) -> TlbEntry {
    let mut flags = t.flags;
    if !ctx.pge {
        flags = flags.difference(PteFlags::GLOBAL);
    }
    if access.is_write() {
        flags |= PteFlags::DIRTY;
    }
    TlbEntry {
        vpn: (t.va.0 & ((1u64 << 57) - 1)) >> t.size.shift(),
        pcid: current_pcid(ctx),
        size: t.size,
        frame: t.frame(),
        flags,
    }
}

/// A translation through any TLB organisation: a hit is used without
/// reading the tables (permissions checked from the entry, a write
/// through a clean entry walks again to set D); a miss walks, setting
/// A/D, and fills; a fault drops the page's entries.
#[inline(always)]
fn translate_cached<C: TlbCache, M: PhysMem + ?Sized>(
    c: &mut C,
    mem: &mut M,
    ctx: &CpuContext,
    va: VirtAddr,
    access: Access,
) -> Result<TlbTranslation, Fault> {
    if !va.is_canonical(ctx.la57) {
        return Err(Fault::NonCanonical(va));
    }
    if let Some(e) = c.find(ctx, va) {
        if !access.is_write() || e.flags.contains(PteFlags::DIRTY) {
            c.stats_mut().hits += 1;
            return match check_access(ctx, access, Perms::from_flags(e.flags)) {
                Ok(()) => Ok(TlbTranslation {
                    pa: PhysAddr(e.frame.0 | va.offset_in(e.size)),
                    size: e.size,
                    flags: e.flags,
                    hit: true,
                }),
                Err((error_code, reason)) => {
                    c.drop_page(va);
                    Err(Fault::PageFault(PageFault {
                        va,
                        error_code,
                        level: e.size.leaf_level(),
                        reason,
                        trace: WalkTrace::EMPTY,
                    }))
                }
            };
        }
    }
    c.stats_mut().misses += 1;
    match translate_update_ad(mem, ctx, va, access) {
        Ok(t) => {
            c.insert(ctx, &t, access);
            Ok(TlbTranslation { pa: t.pa, size: t.size, flags: t.flags, hit: false })
        }
        Err(f) => {
            c.drop_page(va);
            Err(f)
        }
    }
}

/// Entries of Intel's Skylake second-level TLB (STLB), shared by 4 KiB
/// and 2 MiB pages.
pub const STLB_ENTRIES: usize = 1536;
/// Its associativity.
pub const STLB_WAYS: usize = 12;

/// A unified second-level TLB: one set-associative array shared by every
/// page size, sized at run time (e.g. like Skylake's STLB, 1536 entries in
/// 128 sets of 12), least recently used entry replaced. A 4 KiB page
/// indexes its set by its 4 KiB page number, a 2 MiB or 1 GiB page by its
/// own page number; a lookup probes each size's set. Used to count the
/// misses a workload would take with each page size; the invalidation
/// rules are [`Tlb`]'s.
#[derive(Clone)]
pub struct SharedTlb {
    sets: usize,
    ways: usize,
    entries: Vec<TlbEntry>,
    last_use: Vec<u64>,
    clock: u64,
    stats: TlbStats,
}

impl SharedTlb {
    /// A TLB of `entries` entries in sets of `ways`; `None` unless `ways`
    /// divides `entries` into a power-of-two number of sets.
    pub fn new(entries: usize, ways: usize) -> Option<SharedTlb> {
        if ways == 0 || !entries.is_multiple_of(ways) || !(entries / ways).is_power_of_two() {
            return None;
        }
        Some(SharedTlb {
            sets: entries / ways,
            ways,
            entries: alloc::vec![TlbEntry::EMPTY; entries],
            last_use: alloc::vec![0; entries],
            clock: 0,
            stats: TlbStats::default(),
        })
    }

    /// Sized like Skylake's STLB ([`STLB_ENTRIES`], [`STLB_WAYS`]).
    pub fn skylake_stlb() -> SharedTlb {
        // 1536 / 12 = 128 sets: always a valid geometry.
        SharedTlb::new(STLB_ENTRIES, STLB_WAYS).unwrap_or_else(|| unreachable!())
    }

    /// Entries it holds at most.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Hit and miss counts so far.
    pub fn stats(&self) -> TlbStats {
        self.stats
    }

    fn set_range(&self, vpn: u64) -> core::ops::Range<usize> {
        let s = (vpn as usize) & (self.sets - 1);
        s * self.ways..(s + 1) * self.ways
    }

    fn find_index(&self, ctx: &CpuContext, va: VirtAddr) -> Option<usize> {
        let pcid = current_pcid(ctx);
        let v = va.0 & ((1u64 << 57) - 1);
        [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G].into_iter().find_map(|size| {
            let vpn = v >> size.shift();
            self.set_range(vpn).find(|&i| {
                let e = &self.entries[i];
                e.size == size && e.matches(vpn, pcid)
            })
        })
    }

    /// The entry a translation of `va` under `ctx` would use, if any.
    pub fn lookup(&self, ctx: &CpuContext, va: VirtAddr) -> Option<TlbEntry> {
        self.find_index(ctx, va).map(|i| self.entries[i])
    }

    /// Caches a completed translation made under `ctx` by `access`.
    pub fn fill(&mut self, ctx: &CpuContext, t: &Translation, access: Access) {
        let e = entry_for(ctx, t, access);
        let range = self.set_range(e.vpn);
        let slot = range
            .clone()
            .find(|&i| {
                let x = &self.entries[i];
                x.vpn == e.vpn && x.size == e.size && x.pcid == e.pcid
            })
            .or_else(|| range.clone().find(|&i| self.entries[i].vpn == INVALID))
            .unwrap_or_else(|| range.clone().min_by_key(|&i| self.last_use[i]).unwrap_or(range.start));
        self.clock += 1;
        self.entries[slot] = e;
        self.last_use[slot] = self.clock;
    }

    /// Translates as a CPU with this TLB would (see [`Tlb::translate`]).
    pub fn translate<M: PhysMem + ?Sized>(
        &mut self,
        mem: &mut M,
        ctx: &CpuContext,
        va: VirtAddr,
        access: Access,
    ) -> Result<TlbTranslation, Fault> {
        translate_cached(self, mem, ctx, va, access)
    }

    fn retain(&mut self, mut keep: impl FnMut(&TlbEntry) -> bool) {
        for e in self.entries.iter_mut() {
            if e.vpn != INVALID && !keep(e) {
                *e = TlbEntry::EMPTY;
            }
        }
    }

    /// INVLPG: drops every entry covering `va`, global ones included.
    pub fn invlpg(&mut self, va: VirtAddr) {
        let v = va.0 & ((1u64 << 57) - 1);
        self.retain(|e| e.vpn != v >> e.size.shift());
    }

    /// Drops all non-global entries of every PCID.
    pub fn flush_non_global(&mut self) {
        self.retain(TlbEntry::is_global);
    }

    /// Drops everything.
    pub fn flush_all(&mut self) {
        self.retain(|_| false);
    }

    /// Every valid entry.
    pub fn entries(&self) -> impl Iterator<Item = &TlbEntry> {
        self.entries.iter().filter(|e| e.vpn != INVALID)
    }
}

impl TlbCache for SharedTlb {
    fn find(&mut self, ctx: &CpuContext, va: VirtAddr) -> Option<TlbEntry> {
        let i = self.find_index(ctx, va)?;
        self.clock += 1;
        self.last_use[i] = self.clock;
        Some(self.entries[i])
    }
    fn insert(&mut self, ctx: &CpuContext, t: &Translation, access: Access) {
        self.fill(ctx, t, access);
    }
    fn drop_page(&mut self, va: VirtAddr) {
        self.invlpg(va);
    }
    fn stats_mut(&mut self) -> &mut TlbStats {
        &mut self.stats
    }
}

impl TlbFlusher for SharedTlb {
    fn flush_page(&mut self, va: VirtAddr) {
        self.invlpg(va);
    }
    fn flush_all(&mut self) {
        SharedTlb::flush_all(self);
    }
}

/// On the host the TLB model is the flusher: a mapper's flush token then
/// does exactly what the guest's INVLPG would.
impl TlbFlusher for Tlb {
    fn flush_page(&mut self, va: VirtAddr) {
        self.invlpg(va);
    }
    fn flush_all(&mut self) {
        Tlb::flush_all(self);
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;
    use crate::addr::PAGE_SIZE;
    use crate::mem::VecMem;
    use crate::paging::{FrameAllocator, MapRequest, Mapper, SizeRequest};

    struct Bump(u64, u64);
    impl FrameAllocator for Bump {
        fn allocate_frame(&mut self) -> Option<PhysAddr> {
            let f = PhysAddr(self.0);
            self.0 += PAGE_SIZE;
            (self.0 <= self.1).then_some(f)
        }
        fn deallocate_frame(&mut self, _frame: PhysAddr) {}
    }

    const BASE: u64 = 0x4000_0000;
    const RW: PteFlags = PteFlags(PteFlags::PRESENT.0 | PteFlags::RW.0);

    /// 2048 4 KiB pages at BASE, one 2 MiB page at BASE + 1 GiB.
    fn tables() -> (VecMem, CpuContext) {
        let mut mem = VecMem::new(8 << 20);
        let mut frames = Bump(PAGE_SIZE, 2 << 20);
        let m = Mapper::create(&mut mem, &mut frames, false, 46, false).unwrap();
        let req = |va, len, size| MapRequest { va: VirtAddr(va), pa: PhysAddr(4 << 20), len, size, flags: RW };
        m.map(&mut mem, &mut frames, req(BASE, 2048 * PAGE_SIZE, SizeRequest::Fixed(PageSize::Size4K)))
            .unwrap()
            .ignore();
        m.map(&mut mem, &mut frames, req(BASE + (1 << 30), 2 << 20, SizeRequest::Best)).unwrap().ignore();
        let ctx = m.context();
        (mem, ctx)
    }

    fn pass(t: &mut SharedTlb, mem: &mut VecMem, ctx: &CpuContext, pages: u64) -> TlbStats {
        let before = t.stats();
        for i in 0..pages {
            t.translate(mem, ctx, VirtAddr(BASE + i * PAGE_SIZE), Access::Read).unwrap();
        }
        let after = t.stats();
        TlbStats { hits: after.hits - before.hits, misses: after.misses - before.misses }
    }

    #[test]
    fn geometry() {
        assert_eq!(SharedTlb::skylake_stlb().capacity(), 1536);
        assert!(SharedTlb::new(1000, 12).is_none());
        assert!(SharedTlb::new(1536, 0).is_none());
    }

    #[test]
    fn lru_sets_hold_exactly_their_ways() {
        let (mut mem, ctx) = tables();
        // 1536 consecutive pages fill each of the 128 sets with 12: a second
        // pass hits every time.
        let mut t = SharedTlb::skylake_stlb();
        assert_eq!(pass(&mut t, &mut mem, &ctx, 1536), TlbStats { hits: 0, misses: 1536 });
        assert_eq!(pass(&mut t, &mut mem, &ctx, 1536), TlbStats { hits: 1536, misses: 0 });
        // 2048 put 16 in each set: LRU evicts each page before its reuse.
        let mut t = SharedTlb::skylake_stlb();
        pass(&mut t, &mut mem, &ctx, 2048);
        assert_eq!(pass(&mut t, &mut mem, &ctx, 2048), TlbStats { hits: 0, misses: 2048 });
    }

    #[test]
    fn one_entry_covers_a_2m_page_and_invlpg_drops_it() {
        let (mut mem, ctx) = tables();
        let mut t = SharedTlb::skylake_stlb();
        for i in 0..512 {
            let r = t.translate(&mut mem, &ctx, VirtAddr(BASE + (1 << 30) + i * PAGE_SIZE), Access::Read).unwrap();
            assert_eq!(r.size, PageSize::Size2M);
            assert_eq!(r.pa.0, (4 << 20) + i * PAGE_SIZE);
        }
        assert_eq!(t.stats(), TlbStats { hits: 511, misses: 1 });
        assert_eq!(t.entries().count(), 1);
        t.invlpg(VirtAddr(BASE + (1 << 30) + 0x1234));
        assert_eq!(t.entries().count(), 0);
        // A 4 KiB entry whose page number equals the 2 MiB page's does not
        // answer for it.
        t.translate(&mut mem, &ctx, VirtAddr(BASE), Access::Read).unwrap();
        assert!(t.lookup(&ctx, VirtAddr(BASE + (1 << 30))).is_none());
    }
}
