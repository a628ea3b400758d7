//! Reverse mapping of anonymous pages (Linux's `mm/rmap.c`, the
//! `anon_vma` scheme): from a frame to every (address space, virtual
//! address) whose PTE may map it, across `fork`, so reclaim can unmap a page
//! everywhere ([`AnonRmap::try_to_unmap`]) and harvest its accessed bits
//! ([`AnonRmap::folio_referenced`]).
//!
//! How Linux does it, and how this module follows:
//!
//! - An anonymous page records `page->mapping` (its `anon_vma`) and
//!   `page->index` (its linear page index, `vma->vm_pgoff` plus the page's
//!   distance from `vm_start`): [`AnonMapping`], returned by
//!   [`AnonRmap::folio_add_new_anon_rmap`] when the page is first mapped
//!   (anonymous fault, COW copy, swap-in without a cached page). The caller
//!   keeps it with the page (the page descriptor, or beside it).
//! - Each anon VMA that has had a page faulted in owns an `anon_vma`
//!   (`anon_vma_prepare`) and is linked, through `anon_vma_chain`s, to its
//!   own and to every ancestor's: `fork` (`anon_vma_fork`) links the
//!   child's copy of a VMA to all the anon_vmas the parent's VMA is linked
//!   to, plus a new one of the child's own, where the child's COW copies go.
//! - The rmap walk (`rmap_walk_anon`) of a page visits every VMA linked to
//!   the page's `anon_vma` and computes the page's address in each
//!   (`vma_address`: `vm_start + (index - vm_pgoff) * PAGE_SIZE`) if it
//!   falls inside. Those are candidates: the caller's page-table side
//!   (`page_vma_mapped_walk`) checks whether the PTE there really maps the
//!   page (a COW may have replaced it in that process).
//!
//! mm-core's [`VmaSet`](crate::vma::VmaSet) is a plain map of `Copy`
//! VMAs with no identity to hang chains on, and it splits and merges VMAs
//! freely. So this module keeps its own view of the anon ranges of each
//! address space ([`MmId`]): an "anon range" plays the part of a VMA with
//! `anon_vma` set, created on the first fault in a gap, split when `munmap`
//! cuts through it, copied by `fork`, dropped by `munmap` and exit. The
//! caller mirrors those calls: `munmap` -> [`AnonRmap::unlink_anon_vmas`],
//! `fork` -> [`AnonRmap::anon_vma_fork`], `exit_mmap` ->
//! [`AnonRmap::exit_mmap`], `mremap`'s move -> [`AnonRmap::move_range`]
//! (the moved VMA keeps its `vm_pgoff`, so its pages' indexes stay valid).
//! `mprotect` and VMA merges need no call: a range is not a VMA's bounds,
//! only where that VMA's pages may be.
//!
//! An anon_vma lives while a range links it or a page pins it
//! ([`AnonRmap::anon_vma_get`]: the swap cache holding a swapped-out
//! page's mapping, as Linux's `folio_get_anon_vma`). A page whose anon_vma
//! is gone has no mappings and its walk visits nothing.

use crate::addr::PAGE_SIZE;
use crate::vma::{Vma, VmaKind};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;

/// An address space, named by the caller (a pid or mm index).
pub type MmId = u32;

/// An `anon_vma`, by id (never reused while the rmap lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AnonVmaId(pub u32);

/// What an anonymous page records for the rmap: `page->mapping` (the
/// anon_vma) and `page->index` (the linear page index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnonMapping {
    /// `page->mapping`.
    pub anon_vma: AnonVmaId,
    /// `page->index`.
    pub index: u64,
}

/// Why an rmap operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmapError {
    /// The VMA is file-backed: file pages are found through their file's
    /// mapping, not an anon_vma.
    NotAnon(u64),
    /// The address is outside the VMA given.
    NotInVma(u64),
    /// `anon_vma_fork` into an address space that already has anon ranges.
    ChildNotEmpty(MmId),
    /// `anon_vma_put` of an anon_vma that is not pinned.
    NotPinned(AnonVmaId),
    /// Out of anon_vma ids.
    TooManyAnonVmas,
}

impl fmt::Display for RmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RmapError::NotAnon(a) => write!(f, "the vma at {a:#x} is not anonymous"),
            RmapError::NotInVma(a) => write!(f, "{a:#x} is outside the vma"),
            RmapError::ChildNotEmpty(m) => write!(f, "mm {m:#x} already has anon ranges: fork needs a fresh mm"),
            RmapError::NotPinned(a) => write!(f, "anon_vma {:#x} is not pinned", a.0),
            RmapError::TooManyAnonVmas => f.write_str("out of anon_vma ids"),
        }
    }
}

#[cfg(any(test, feature = "std"))]
impl std::error::Error for RmapError {}

/// An `anon_vma`: the anon ranges linked to it (its `rb_root` of
/// `anon_vma_chain`s) and pins.
#[derive(Debug, Clone, Default)]
struct AnonVma {
    /// (address space, range start) of every range linked to it.
    users: BTreeSet<(MmId, u64)>,
    /// External references (`anon_vma_get`).
    pins: u32,
}

/// An anon range of an address space: where pages of one `anon_vma` (and
/// its ancestors' pages shared by fork) may be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AnonRange {
    end: u64,
    /// Linear page index of the range's start (`vm_pgoff`).
    pgoff: u64,
    /// Its own anon_vma (`vma->anon_vma`), where new pages go.
    own: AnonVmaId,
    /// Every anon_vma it is linked to (`vma->anon_vma_chain`): the
    /// ancestors' and its own.
    chain: Vec<AnonVmaId>,
}

/// The page-table side of an rmap walk (`page_vma_mapped_walk` and the
/// PTE operations reclaim does at each place a page is mapped).
pub trait RmapPageTables {
    /// `folio_referenced_one`: if `mm`'s PTE at `va` maps `pfn`, returns
    /// whether its accessed bit was set, clearing it (and flushing the TLB
    /// entry); `None` if the PTE does not map the page.
    fn referenced_one(&mut self, mm: MmId, va: u64, pfn: u64) -> Option<bool>;

    /// `try_to_unmap_one`: if `mm`'s PTE at `va` maps `pfn`, replaces it
    /// (with a swap entry, or none) and returns true; false if the PTE does
    /// not map the page.
    fn unmap_one(&mut self, mm: MmId, va: u64, pfn: u64) -> bool;
}

/// What [`AnonRmap::folio_referenced`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolioReferenced {
    /// PTEs mapping the page whose accessed bit was set (now cleared).
    pub referenced: u32,
    /// PTEs mapping the page (`folio_mapcount` as seen by the walk).
    pub mapped: u32,
}

/// The reverse map of anonymous memory for all address spaces.
#[derive(Debug, Clone, Default)]
pub struct AnonRmap {
    anon_vmas: BTreeMap<AnonVmaId, AnonVma>,
    next_id: u32,
    mms: BTreeMap<MmId, BTreeMap<u64, AnonRange>>,
}

impl AnonRmap {
    /// An empty rmap.
    pub fn new() -> AnonRmap {
        AnonRmap::default()
    }

    /// Live anon_vmas (for leak checks and views).
    pub fn nr_anon_vmas(&self) -> usize {
        self.anon_vmas.len()
    }

    /// Whether an anon_vma is alive.
    pub fn anon_vma_alive(&self, id: AnonVmaId) -> bool {
        self.anon_vmas.contains_key(&id)
    }

    /// `anon_vma_alloc`.
    fn alloc(&mut self) -> Result<AnonVmaId, RmapError> {
        let id = AnonVmaId(self.next_id);
        self.next_id = self.next_id.checked_add(1).ok_or(RmapError::TooManyAnonVmas)?;
        self.anon_vmas.insert(id, AnonVma::default());
        Ok(id)
    }

    /// Frees an anon_vma that nothing links or pins.
    fn maybe_free(&mut self, id: AnonVmaId) {
        if self.anon_vmas.get(&id).is_some_and(|a| a.users.is_empty() && a.pins == 0) {
            self.anon_vmas.remove(&id);
        }
    }

    /// Inserts a range and links it into each anon_vma of its chain
    /// (`anon_vma_chain_link`).
    fn link(&mut self, mm: MmId, start: u64, r: AnonRange) {
        for id in &r.chain {
            if let Some(a) = self.anon_vmas.get_mut(id) {
                a.users.insert((mm, start));
            }
        }
        self.mms.entry(mm).or_default().insert(start, r);
    }

    /// Removes a range and unlinks it (`unlink_anon_vmas`), freeing
    /// anon_vmas left unused.
    fn unlink(&mut self, mm: MmId, start: u64) {
        let Some(r) = self.mms.get_mut(&mm).and_then(|m| m.remove(&start)) else { return };
        for id in r.chain {
            if let Some(a) = self.anon_vmas.get_mut(&id) {
                a.users.remove(&(mm, start));
            }
            self.maybe_free(id);
        }
    }

    /// Cuts the range of `mm` containing `addr` in two at `addr`
    /// (`__split_vma`'s `anon_vma_clone`).
    fn split(&mut self, mm: MmId, addr: u64) {
        let Some(ranges) = self.mms.get(&mm) else { return };
        let Some((&start, r)) = ranges.range(..addr).next_back() else { return };
        if r.end <= addr {
            return;
        }
        let mut lo = r.clone();
        let hi = AnonRange { pgoff: r.pgoff + (addr - start) / PAGE_SIZE, ..r.clone() };
        lo.end = addr;
        self.mms.get_mut(&mm).map(|m| m.insert(start, lo));
        self.link(mm, addr, hi);
    }

    /// `anon_vma_prepare`: the anon_vma new pages at `addr` in `vma` of
    /// `mm` belong to; creates an anon range over the gap around `addr`
    /// (within the VMA) if there is none.
    pub fn anon_vma_prepare(&mut self, mm: MmId, vma: &Vma, addr: u64) -> Result<AnonVmaId, RmapError> {
        if !matches!(vma.kind, VmaKind::Anon) {
            return Err(RmapError::NotAnon(vma.start));
        }
        if !vma.contains(addr) {
            return Err(RmapError::NotInVma(addr));
        }
        let ranges = self.mms.entry(mm).or_default();
        let prev = ranges.range(..=addr).next_back().map(|(&s, r)| (s, r.end, r.own));
        if let Some((_, end, own)) = prev {
            if end > addr {
                return Ok(own);
            }
        }
        let g0 = prev.map_or(vma.start, |(_, end, _)| end.max(vma.start));
        let g1 = ranges.range(addr..).next().map_or(vma.end, |(&s, _)| s.min(vma.end));
        let id = self.alloc()?;
        let pgoff = vma.pgoff + (g0 - vma.start) / PAGE_SIZE;
        self.link(mm, g0, AnonRange { end: g1, pgoff, own: id, chain: alloc::vec![id] });
        Ok(id)
    }

    /// `folio_add_new_anon_rmap`: the mapping to record in a page newly
    /// mapped at `addr` of `mm` (anonymous fault, COW copy, swap-in of a
    /// page not in the swap cache). An `exclusive` page (only this PTE will
    /// map it: a fault, a COW copy, a swap-in whose slot nobody else
    /// references) goes to the range's own anon_vma; a shared one (a
    /// swap-in whose slot other swap PTEs still name, so other processes of
    /// the fork tree will map it from the swap cache) to the root anon_vma,
    /// which every range of the fork tree is linked to (`__folio_set_anon`:
    /// "we must use the _oldest_ possible anon_vma").
    pub fn folio_add_new_anon_rmap(
        &mut self,
        mm: MmId,
        vma: &Vma,
        addr: u64,
        exclusive: bool,
    ) -> Result<AnonMapping, RmapError> {
        let own = self.anon_vma_prepare(mm, vma, addr)?;
        let anon_vma = if exclusive {
            own
        } else {
            // The range holding `addr` exists now; its chain starts at the root.
            self.mms
                .get(&mm)
                .and_then(|m| m.range(..=addr).next_back())
                .and_then(|(_, r)| r.chain.first().copied())
                .unwrap_or(own)
        };
        Ok(AnonMapping { anon_vma, index: vma.pgoff + (addr - vma.start) / PAGE_SIZE })
    }

    /// `anon_vma_fork` for every VMA of `parent`, as `dup_mmap` does:
    /// `child` (a new address space) gets each anon range, linked to all the
    /// parent range's anon_vmas plus a new one of its own.
    pub fn anon_vma_fork(&mut self, parent: MmId, child: MmId) -> Result<(), RmapError> {
        if self.mms.get(&child).is_some_and(|m| !m.is_empty()) {
            return Err(RmapError::ChildNotEmpty(child));
        }
        let ranges: Vec<(u64, AnonRange)> =
            self.mms.get(&parent).map(|m| m.iter().map(|(&s, r)| (s, r.clone())).collect()).unwrap_or_default();
        for (start, r) in ranges {
            let own = self.alloc()?;
            let mut chain = r.chain;
            chain.push(own);
            self.link(child, start, AnonRange { end: r.end, pgoff: r.pgoff, own, chain });
        }
        Ok(())
    }

    /// `unlink_anon_vmas` for `munmap(start, end)` of `mm`: drops the anon
    /// ranges there (cutting those that stick out), freeing anon_vmas no
    /// longer linked.
    pub fn unlink_anon_vmas(&mut self, mm: MmId, start: u64, end: u64) {
        if start >= end {
            return;
        }
        self.split(mm, start);
        self.split(mm, end);
        let starts: Vec<u64> =
            self.mms.get(&mm).map(|m| m.range(start..end).map(|(&s, _)| s).collect()).unwrap_or_default();
        for s in starts {
            self.unlink(mm, s);
        }
    }

    /// `mremap`'s move (`move_vma` -> `copy_vma` + `anon_vma_clone`): the
    /// anon ranges of `mm` in `[start, end)` move to `new_start` keeping
    /// their page offset and anon_vma chain, so every page already
    /// mapped there (which keeps its `index`) is found at its new address.
    /// The destination must hold no range (the caller unmapped it).
    pub fn move_range(&mut self, mm: MmId, start: u64, end: u64, new_start: u64) {
        if start >= end {
            return;
        }
        self.split(mm, start);
        self.split(mm, end);
        let moved: Vec<(u64, AnonRange)> =
            self.mms.get(&mm).map(|m| m.range(start..end).map(|(&s, r)| (s, r.clone())).collect()).unwrap_or_default();
        for (s, r) in moved {
            // Take it out of its anon_vmas' user sets without freeing them
            // (the range comes straight back, linked to the same ones).
            for id in &r.chain {
                if let Some(a) = self.anon_vmas.get_mut(id) {
                    a.users.remove(&(mm, s));
                }
            }
            self.mms.get_mut(&mm).map(|m| m.remove(&s));
            let to = new_start + (s - start);
            self.link(mm, to, AnonRange { end: to + (r.end - s), ..r });
        }
    }

    /// `exit_mmap`: drops every anon range of `mm`.
    pub fn exit_mmap(&mut self, mm: MmId) {
        let starts: Vec<u64> = self.mms.get(&mm).map(|m| m.keys().copied().collect()).unwrap_or_default();
        for s in starts {
            self.unlink(mm, s);
        }
        self.mms.remove(&mm);
    }

    /// `folio_get_anon_vma`: keeps an anon_vma alive without a range (the
    /// swap cache holding a page whose mappings are all swap entries).
    pub fn anon_vma_get(&mut self, id: AnonVmaId) -> bool {
        match self.anon_vmas.get_mut(&id) {
            Some(a) => {
                a.pins += 1;
                true
            }
            None => false,
        }
    }

    /// `put_anon_vma`: drops a pin, freeing the anon_vma if nothing else
    /// holds it.
    pub fn anon_vma_put(&mut self, id: AnonVmaId) -> Result<(), RmapError> {
        let a = self.anon_vmas.get_mut(&id).ok_or(RmapError::NotPinned(id))?;
        if a.pins == 0 {
            return Err(RmapError::NotPinned(id));
        }
        a.pins -= 1;
        self.maybe_free(id);
        Ok(())
    }

    /// `rmap_walk_anon`: calls `f(mm, address)` for every place the page
    /// may be mapped (each linked range whose span holds its index, at
    /// `vma_address`), in (mm, address) order, until `f` returns false.
    pub fn rmap_walk(&self, page: AnonMapping, mut f: impl FnMut(MmId, u64) -> bool) {
        let Some(a) = self.anon_vmas.get(&page.anon_vma) else { return };
        for &(mm, start) in &a.users {
            let Some(r) = self.mms.get(&mm).and_then(|m| m.get(&start)) else { continue };
            let pages = (r.end - start) / PAGE_SIZE;
            if page.index < r.pgoff || page.index - r.pgoff >= pages {
                continue;
            }
            if !f(mm, start + (page.index - r.pgoff) * PAGE_SIZE) {
                return;
            }
        }
    }

    /// `try_to_unmap`: unmaps the page at `pfn` everywhere it is mapped,
    /// through `pt`. Returns how many PTEs were unmapped.
    pub fn try_to_unmap<P: RmapPageTables + ?Sized>(&self, page: AnonMapping, pfn: u64, pt: &mut P) -> u32 {
        let mut n = 0;
        self.rmap_walk(page, |mm, va| {
            n += pt.unmap_one(mm, va, pfn) as u32;
            true
        });
        n
    }

    /// `folio_referenced`: counts the PTEs mapping the page and those of
    /// them whose accessed bit was set, clearing the bits (the aging
    /// input of [`crate::lru::ReclaimOps::folio_referenced`]).
    pub fn folio_referenced<P: RmapPageTables + ?Sized>(
        &self,
        page: AnonMapping,
        pfn: u64,
        pt: &mut P,
    ) -> FolioReferenced {
        let mut r = FolioReferenced::default();
        self.rmap_walk(page, |mm, va| {
            if let Some(young) = pt.referenced_one(mm, va, pfn) {
                r.mapped += 1;
                r.referenced += young as u32;
            }
            true
        });
        r
    }

    /// Checks the structure: ranges disjoint and non-empty, every range
    /// linked into each anon_vma of its chain (its own last) and nothing
    /// else linked, no anon_vma alive without links or pins.
    pub fn verify(&self) -> Result<(), &'static str> {
        let mut links = 0usize;
        for (&mm, ranges) in &self.mms {
            let mut prev_end = 0;
            for (&s, r) in ranges {
                if s >= r.end || s < prev_end || s % PAGE_SIZE != 0 || r.end % PAGE_SIZE != 0 {
                    return Err("anon ranges overlap or are malformed");
                }
                prev_end = r.end;
                if r.chain.last() != Some(&r.own) {
                    return Err("a range's own anon_vma is not last in its chain");
                }
                for id in &r.chain {
                    let a = self.anon_vmas.get(id).ok_or("a chain names a freed anon_vma")?;
                    if !a.users.contains(&(mm, s)) {
                        return Err("a range is missing from its anon_vma");
                    }
                    links += 1;
                }
            }
        }
        let mut total = 0;
        for a in self.anon_vmas.values() {
            if a.users.is_empty() && a.pins == 0 {
                return Err("an unused anon_vma was not freed");
            }
            total += a.users.len();
        }
        if total != links {
            return Err("an anon_vma links a range that does not name it");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
