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

use crate::addr::{PageSize, PhysAddr, VirtAddr};
use crate::mem::PhysMem;
use crate::paging::entry::PteFlags;
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
        let mut flags = t.flags;
        if !ctx.pge {
            flags = flags.difference(PteFlags::GLOBAL);
        }
        if access.is_write() {
            flags |= PteFlags::DIRTY;
        }
        let e = TlbEntry {
            vpn: (t.va.0 & ((1u64 << 57) - 1)) >> t.size.shift(),
            pcid: current_pcid(ctx),
            size: t.size,
            frame: t.frame(),
            flags,
        };
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
        if !va.is_canonical(ctx.la57) {
            return Err(Fault::NonCanonical(va));
        }
        if let Some(&TlbEntry { frame, size, flags, .. }) = self.lookup_ref(ctx, va) {
            let e = TlbEntry { vpn: 0, pcid: 0, frame, size, flags };
            if !access.is_write() || e.flags.contains(PteFlags::DIRTY) {
                self.stats.hits += 1;
                return match check_access(ctx, access, Perms::from_flags(e.flags)) {
                    Ok(()) => Ok(TlbTranslation {
                        pa: PhysAddr(e.frame.0 | va.offset_in(e.size)),
                        size: e.size,
                        flags: e.flags,
                        hit: true,
                    }),
                    Err((error_code, reason)) => {
                        self.invlpg(va);
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
        self.stats.misses += 1;
        match translate_update_ad(mem, ctx, va, access) {
            Ok(t) => {
                self.fill(ctx, &t, access);
                Ok(TlbTranslation { pa: t.pa, size: t.size, flags: t.flags, hit: false })
            }
            Err(f) => {
                self.invlpg(va);
                Err(f)
            }
        }
    }

    /// INVLPG: drops every entry covering `va`, global ones included.
    ///
    /// The SDM requires this for the current PCID and global entries and
    /// allows it for other PCIDs; the model drops all PCIDs' entries.
    /// Without CR4.PCIDE (the platform here) the two are the same.
    pub fn invlpg(&mut self, va: VirtAddr) {
        let v = va.0 & ((1u64 << 57) - 1);
        self.b4k.retain(|e| e.vpn != v >> 12);
        self.b2m.retain(|e| e.vpn != v >> 21);
        self.b1g.retain(|e| e.vpn != v >> 30);
    }

    /// A write of `new_cr3` to CR3 (`pcide` = CR4.PCIDE): without PCIDs
    /// drops all non-global entries; with PCIDs drops the non-global
    /// entries of the new PCID unless bit 63 (no-flush) is set.
    pub fn write_cr3(&mut self, new_cr3: u64, pcide: bool) {
        if !pcide {
            self.flush_non_global();
        } else if new_cr3 & (1 << 63) == 0 {
            let pcid = (new_cr3 & 0xfff) as u16;
            let keep = |e: &TlbEntry| e.is_global() || e.pcid != pcid;
            self.b4k.retain(keep);
            self.b2m.retain(keep);
            self.b1g.retain(keep);
        }
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
