//! The VMA set of an address space (the `mm_struct`'s tree of
//! `vm_area_struct`s, Linux's `mm/mmap.c` and `mm/mprotect.c`).
//!
//! This module owns the bookkeeping of which user ranges are mapped and
//! with what permissions: insertion (rejecting overlap), `find_vma`,
//! splitting, merging of compatible neighbours, `munmap`-style unmapping
//! with trimming and splitting, and `mprotect`-style flag changes. It does
//! not touch page tables: `munmap` returns the removed pieces so the caller
//! can tear down their pages. The set is kept merged: after every public
//! operation no two adjacent VMAs could be one.

use crate::addr::PAGE_SIZE;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// VMA flags (Linux's `VM_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VmFlags(pub u32);

impl VmFlags {
    /// Readable (`VM_READ`).
    pub const READ: VmFlags = VmFlags(0x1);
    /// Writable (`VM_WRITE`).
    pub const WRITE: VmFlags = VmFlags(0x2);
    /// Executable (`VM_EXEC`).
    pub const EXEC: VmFlags = VmFlags(0x4);
    /// Shared mapping (`VM_SHARED`): writes are not copied on write.
    pub const SHARED: VmFlags = VmFlags(0x8);
    /// A stack that grows down on faults below it (`VM_GROWSDOWN`).
    pub const GROWSDOWN: VmFlags = VmFlags(0x100);
    /// Locked in memory (`VM_LOCKED`).
    pub const LOCKED: VmFlags = VmFlags(0x2000);
    /// Backed by a hugetlb pool's pages, 2 MiB ones mapped by PMD leaves
    /// unless [`HUGETLB_1G`](Self::HUGETLB_1G) (`VM_HUGETLB`): never merged with ordinary memory, unmapped only in
    /// whole huge pages.
    pub const HUGETLB: VmFlags = VmFlags(0x0040_0000);
    /// With [`HUGETLB`](Self::HUGETLB): the pages are 1 GiB, mapped by PUD
    /// leaves (Linux keeps the size in the hugetlbfs file's hstate).
    pub const HUGETLB_1G: VmFlags = VmFlags(0x0100_0000);
    /// Made without a hugetlb reservation (`VM_NORESERVE`, `MAP_NORESERVE`):
    /// a fault that finds the pool empty gets SIGBUS.
    pub const NORESERVE: VmFlags = VmFlags(0x0020_0000);
    /// `madvise(MADV_HUGEPAGE)`: transparent huge pages wanted even in
    /// `madvise` mode (`VM_HUGEPAGE`).
    pub const HUGEPAGE: VmFlags = VmFlags(0x2000_0000);
    /// `madvise(MADV_NOHUGEPAGE)`: never transparent huge pages
    /// (`VM_NOHUGEPAGE`).
    pub const NOHUGEPAGE: VmFlags = VmFlags(0x4000_0000);
    /// The protection bits `mprotect` changes.
    pub const PROT_MASK: VmFlags = VmFlags(0x7);

    /// Whether every bit of `o` is set.
    pub fn contains(self, o: VmFlags) -> bool {
        self.0 & o.0 == o.0
    }
}

impl core::ops::BitOr for VmFlags {
    type Output = VmFlags;
    fn bitor(self, o: VmFlags) -> VmFlags {
        VmFlags(self.0 | o.0)
    }
}

/// What backs a VMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmaKind {
    /// Anonymous memory (zero-filled on first touch).
    Anon,
    /// A file (or file-like object) by id; `Vma::pgoff` is the page offset
    /// of `start` in it.
    File(u32),
}

/// A virtual memory area `[start, end)` (Linux's `vm_area_struct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vma {
    /// First byte (page-aligned).
    pub start: u64,
    /// One past the last byte (page-aligned).
    pub end: u64,
    /// Permissions and behaviour.
    pub flags: VmFlags,
    /// Backing.
    pub kind: VmaKind,
    /// Page offset of `start` in the backing file (`vm_pgoff`); for anon
    /// VMAs, kept as Linux does so split halves stay consistent.
    pub pgoff: u64,
    /// The VMA's NUMA memory policy (`vm_policy`, set by mbind; default:
    /// the task's).
    pub policy: crate::mempolicy::MemPolicy,
}

impl Vma {
    /// An anonymous VMA.
    pub fn anon(start: u64, end: u64, flags: VmFlags) -> Vma {
        Vma {
            start,
            end,
            flags,
            kind: VmaKind::Anon,
            pgoff: start / PAGE_SIZE,
            policy: crate::mempolicy::MemPolicy::DEFAULT,
        }
    }

    /// Bytes covered.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the VMA covers nothing (never true for a VMA in a set).
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Linux's `is_mergeable_vma` + `can_vma_merge_after`: `self` directly
    /// followed by `next` could be one VMA.
    pub fn can_merge_with_next(&self, next: &Vma) -> bool {
        self.end == next.start
            && self.flags == next.flags
            && self.kind == next.kind
            && self.policy == next.policy
            && self.pgoff + self.len() / PAGE_SIZE == next.pgoff
    }

    /// The part of `self` inside `[start, end)` with the page offset moved.
    fn slice(&self, start: u64, end: u64) -> Vma {
        Vma { start, end, pgoff: self.pgoff + (start - self.start) / PAGE_SIZE, ..*self }
    }
}

/// Why a VMA operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmaError {
    /// Bounds not page-aligned, empty or reversed.
    BadRange {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// The new VMA overlaps an existing one (`mmap` without `MAP_FIXED`
    /// would pick another address; here it is the caller's job).
    Overlap(u64),
    /// Part of the range is not mapped (`mprotect`'s `ENOMEM`).
    Unmapped(u64),
}

impl fmt::Display for VmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VmaError::BadRange { start, end } => write!(f, "bad range {start:#x}-{end:#x}"),
            VmaError::Overlap(a) => write!(f, "overlaps the vma at {a:#x}"),
            VmaError::Unmapped(a) => write!(f, "{a:#x} is not mapped"),
        }
    }
}

#[cfg(any(test, feature = "std"))]
impl std::error::Error for VmaError {}

fn check_range(start: u64, end: u64) -> Result<(), VmaError> {
    if start & (PAGE_SIZE - 1) != 0 || end & (PAGE_SIZE - 1) != 0 || start >= end {
        return Err(VmaError::BadRange { start, end });
    }
    Ok(())
}

/// The VMAs of one address space, keyed by start.
#[derive(Debug, Clone, Default)]
pub struct VmaSet {
    map: BTreeMap<u64, Vma>,
    /// Bumped by every changing operation (see [`VmaSet::generation`]).
    gen: u64,
}

impl VmaSet {
    /// An empty address space.
    pub fn new() -> VmaSet {
        VmaSet::default()
    }

    /// A counter every changing operation bumps (insert, split, munmap,
    /// mprotect, set_flags; failed calls may bump it too): whoever mirrors
    /// the set elsewhere (the guest's descriptor for the host) compares it
    /// with the value it last copied instead of comparing the VMAs.
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// Number of VMAs (`map_count`).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// VMAs by address.
    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.map.values()
    }

    /// Linux's `find_vma`: the VMA containing `addr`, or else the first one
    /// above it.
    pub fn find_vma(&self, addr: u64) -> Option<&Vma> {
        if let Some((_, v)) = self.map.range(..=addr).next_back() {
            if v.end > addr {
                return Some(v);
            }
        }
        self.map.range(addr..).next().map(|(_, v)| v)
    }

    /// The VMA containing `addr` (what a page fault needs).
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.find_vma(addr).filter(|v| v.contains(addr))
    }

    /// Linux's `find_vma_intersection`: the first VMA overlapping
    /// `[start, end)`.
    pub fn find_intersection(&self, start: u64, end: u64) -> Option<&Vma> {
        self.find_vma(start).filter(|v| v.start < end)
    }

    /// Inserts `vma` (rejecting any overlap) and merges it with compatible
    /// neighbours, as `mmap_region` does. Returns the resulting VMA.
    pub fn insert(&mut self, vma: Vma) -> Result<Vma, VmaError> {
        self.gen = self.gen.wrapping_add(1);
        check_range(vma.start, vma.end)?;
        if let Some(v) = self.find_intersection(vma.start, vma.end) {
            return Err(VmaError::Overlap(v.start));
        }
        self.map.insert(vma.start, vma);
        Ok(self.merge_around(vma.start))
    }

    /// Linux's `split_vma`: cuts the VMA containing `addr` in two at `addr`.
    /// Does nothing if `addr` is a VMA boundary or unmapped. The halves are
    /// compatible, so callers re-merge (the public range operations do).
    pub fn split(&mut self, addr: u64) -> Result<(), VmaError> {
        self.gen = self.gen.wrapping_add(1);
        if addr & (PAGE_SIZE - 1) != 0 {
            return Err(VmaError::BadRange { start: addr, end: addr });
        }
        let Some(&v) = self.find(addr) else { return Ok(()) };
        if v.start == addr {
            return Ok(());
        }
        self.map.insert(v.start, v.slice(v.start, addr));
        self.map.insert(addr, v.slice(addr, v.end));
        Ok(())
    }

    /// Merges the VMA starting at `start` with its neighbours where
    /// compatible (`vma_merge`); returns the merged VMA.
    fn merge_around(&mut self, start: u64) -> Vma {
        let mut cur = self.map[&start];
        if let Some((_, &prev)) = self.map.range(..start).next_back() {
            if prev.can_merge_with_next(&cur) {
                self.map.remove(&cur.start);
                cur = Vma { end: cur.end, ..prev };
                self.map.insert(cur.start, cur);
            }
        }
        if let Some((_, &next)) = self.map.range(cur.end..).next() {
            if cur.can_merge_with_next(&next) {
                self.map.remove(&next.start);
                cur.end = next.end;
                self.map.insert(cur.start, cur);
            }
        }
        cur
    }

    /// `munmap`: removes `[start, end)`, trimming VMAs that stick out and
    /// splitting one that covers the range's middle. Returns the removed
    /// pieces (for tearing down their pages). Holes are fine, as in Linux.
    pub fn munmap(&mut self, start: u64, end: u64) -> Result<Vec<Vma>, VmaError> {
        self.gen = self.gen.wrapping_add(1);
        check_range(start, end)?;
        self.split(start)?;
        self.split(end)?;
        let keys: Vec<u64> = self.map.range(start..end).map(|(&k, _)| k).collect();
        let removed = keys.iter().filter_map(|k| self.map.remove(k)).collect();
        // The splits left compatible pieces only where nothing was removed.
        if let Some((&k, _)) = self.map.range(..start).next_back() {
            self.merge_around(k);
        }
        Ok(removed)
    }

    /// The gap an unmapped `[start, end)` lies in, as Linux's
    /// `free_pgtables` bounds it: `floor` is the end of the last VMA below
    /// (0 if none: `FIRST_USER_ADDRESS`), `ceiling` the start of the first
    /// one above (`None` if none: the page tables' ceiling is the
    /// caller's). Page tables wholly inside `floor..ceiling` can go.
    /// `None` if a VMA still overlaps the range.
    pub fn gap(&self, start: u64, end: u64) -> Option<(u64, Option<u64>)> {
        if self.find_intersection(start, end).is_some() {
            return None;
        }
        let floor = self.map.range(..start).next_back().map_or(0, |(_, v)| v.end);
        let ceiling = self.map.range(end..).next().map(|(_, v)| v.start);
        Some((floor, ceiling))
    }

    /// `mprotect`: sets the protection bits (`VmFlags::PROT_MASK`) of
    /// `[start, end)` to those of `prot`, splitting at the edges and merging
    /// afterwards. Fails, changing nothing, if part of the range is unmapped.
    pub fn mprotect(&mut self, start: u64, end: u64, prot: VmFlags) -> Result<(), VmaError> {
        self.set_flags(start, end, VmFlags::PROT_MASK, prot)
    }

    /// Sets the bits `mask` of the flags of every VMA in `[start, end)` to
    /// those of `value`, splitting at the ends and merging afterwards
    /// (`mprotect_fixup`, `madvise_update_vma`). The range must be fully
    /// mapped; a failed call changes nothing.
    pub fn set_flags(&mut self, start: u64, end: u64, mask: VmFlags, value: VmFlags) -> Result<(), VmaError> {
        self.update_range(start, end, |v| v.flags = VmFlags((v.flags.0 & !mask.0) | (value.0 & mask.0)))
    }

    /// Sets the memory policy of every VMA in `[start, end)` (Linux's
    /// `mbind_range`: splits at the ends, merges afterwards). The range
    /// must be fully mapped; a failed call changes nothing.
    pub fn set_policy(&mut self, start: u64, end: u64, policy: crate::mempolicy::MemPolicy) -> Result<(), VmaError> {
        self.update_range(start, end, |v| v.policy = policy)
    }

    /// Applies `f` to every VMA of `[start, end)`, split at the ends, and
    /// merges afterwards.
    fn update_range(&mut self, start: u64, end: u64, f: impl Fn(&mut Vma)) -> Result<(), VmaError> {
        self.gen = self.gen.wrapping_add(1);
        check_range(start, end)?;
        let mut at = start;
        // Check coverage first so a failed call changes nothing.
        while at < end {
            let v = self.find(at).ok_or(VmaError::Unmapped(at))?;
            at = v.end;
        }
        self.split(start)?;
        self.split(end)?;
        let keys: Vec<u64> = self.map.range(start..end).map(|(&k, _)| k).collect();
        for k in &keys {
            if let Some(v) = self.map.get_mut(k) {
                f(v);
            }
        }
        for k in keys.iter().rev() {
            if self.map.contains_key(k) {
                self.merge_around(*k);
            }
        }
        if let Some(v) = self.find(end).copied() {
            self.merge_around(v.start);
        }
        Ok(())
    }

    /// Checks the invariants: page-aligned, non-empty, sorted, disjoint,
    /// keyed by start, and merged.
    pub fn verify(&self) -> Result<(), &'static str> {
        let mut prev: Option<&Vma> = None;
        for (&k, v) in &self.map {
            if k != v.start || check_range(v.start, v.end).is_err() {
                return Err("bad vma bounds");
            }
            if let Some(p) = prev {
                if p.end > v.start {
                    return Err("vmas overlap");
                }
                if p.can_merge_with_next(v) {
                    return Err("mergeable neighbours left unmerged");
                }
            }
            prev = Some(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    const P: u64 = PAGE_SIZE;
    const RW: VmFlags = VmFlags(0x3);
    const R: VmFlags = VmFlags::READ;

    #[test]
    fn gap_is_bounded_by_the_neighbours() {
        let mut s = VmaSet::new();
        s.insert(Vma::anon(10 * P, 20 * P, RW)).unwrap();
        s.insert(Vma::anon(40 * P, 50 * P, R)).unwrap();
        s.insert(Vma::anon(60 * P, 70 * P, RW)).unwrap();
        s.munmap(40 * P, 50 * P).unwrap();
        assert_eq!(s.gap(40 * P, 50 * P), Some((20 * P, Some(60 * P))));
        assert_eq!(s.gap(0, 5 * P), Some((0, Some(10 * P))));
        assert_eq!(s.gap(80 * P, 90 * P), Some((70 * P, None)));
        assert_eq!(s.gap(15 * P, 30 * P), None, "a VMA overlaps");
        s.munmap(15 * P, 20 * P).unwrap();
        assert_eq!(s.gap(15 * P, 20 * P), Some((15 * P, Some(60 * P))));
    }

    fn spans(s: &VmaSet) -> Vec<(u64, u64, u32)> {
        s.iter().map(|v| (v.start / P, v.end / P, v.flags.0)).collect()
    }

    #[test]
    fn every_change_bumps_the_generation() {
        let mut s = VmaSet::new();
        let mut last = s.generation();
        let mut changed = |s: &VmaSet| {
            let g = s.generation();
            let moved = g != last;
            last = g;
            moved
        };
        s.insert(Vma::anon(10 * P, 20 * P, RW)).unwrap();
        assert!(changed(&s), "insert");
        s.mprotect(12 * P, 14 * P, R).unwrap();
        assert!(changed(&s), "mprotect");
        s.set_flags(10 * P, 11 * P, VmFlags::HUGEPAGE, VmFlags::HUGEPAGE).unwrap();
        assert!(changed(&s), "set_flags");
        s.munmap(15 * P, 16 * P).unwrap();
        assert!(changed(&s), "munmap");
        s.split(17 * P).unwrap();
        assert!(changed(&s), "split");
        let _ = s.find(12 * P);
        let _ = s.iter().count();
        assert!(!changed(&s), "lookups change nothing");
    }

    #[test]
    fn insert_merges_and_rejects_overlap() {
        let mut s = VmaSet::new();
        s.insert(Vma::anon(10 * P, 20 * P, RW)).unwrap();
        s.insert(Vma::anon(30 * P, 40 * P, RW)).unwrap();
        assert_eq!(s.insert(Vma::anon(15 * P, 25 * P, RW)), Err(VmaError::Overlap(10 * P)));
        assert_eq!(s.insert(Vma::anon(5 * P, 31 * P, RW)), Err(VmaError::Overlap(10 * P)));
        assert!(s.insert(Vma::anon(1, 2 * P, RW)).is_err());
        let m = s.insert(Vma::anon(20 * P, 30 * P, RW)).unwrap();
        assert_eq!((m.start, m.end), (10 * P, 40 * P));
        assert_eq!(s.len(), 1);
        // Different flags or file offsets do not merge.
        s.insert(Vma::anon(40 * P, 41 * P, R)).unwrap();
        s.insert(Vma {
            start: 41 * P,
            end: 42 * P,
            flags: R,
            kind: VmaKind::File(1),
            pgoff: 0,
            policy: Default::default(),
        })
        .unwrap();
        s.insert(Vma {
            start: 42 * P,
            end: 43 * P,
            flags: R,
            kind: VmaKind::File(1),
            pgoff: 5,
            policy: Default::default(),
        })
        .unwrap();
        s.insert(Vma {
            start: 43 * P,
            end: 44 * P,
            flags: R,
            kind: VmaKind::File(1),
            pgoff: 6,
            policy: Default::default(),
        })
        .unwrap();
        assert_eq!(spans(&s), vec![(10, 40, 3), (40, 41, 1), (41, 42, 1), (42, 44, 1)]);
        s.verify().unwrap();
    }

    #[test]
    fn find_vma_like_linux() {
        let mut s = VmaSet::new();
        s.insert(Vma::anon(10 * P, 20 * P, RW)).unwrap();
        s.insert(Vma::anon(30 * P, 40 * P, R)).unwrap();
        assert_eq!(s.find_vma(0).unwrap().start, 10 * P);
        assert_eq!(s.find_vma(15 * P).unwrap().start, 10 * P);
        assert_eq!(s.find_vma(20 * P).unwrap().start, 30 * P);
        assert!(s.find_vma(40 * P).is_none());
        assert!(s.find(25 * P).is_none());
        assert_eq!(s.find_intersection(19 * P, 31 * P).unwrap().start, 10 * P);
        assert!(s.find_intersection(20 * P, 30 * P).is_none());
    }

    #[test]
    fn munmap_trims_and_splits() {
        let mut s = VmaSet::new();
        s.insert(Vma::anon(10 * P, 40 * P, RW)).unwrap();
        let removed = s.munmap(20 * P, 25 * P).unwrap();
        assert_eq!(removed, vec![Vma::anon(20 * P, 25 * P, RW)]);
        assert_eq!(spans(&s), vec![(10, 20, 3), (25, 40, 3)]);
        let removed = s.munmap(5 * P, 12 * P).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(spans(&s), vec![(12, 20, 3), (25, 40, 3)]);
        let removed = s.munmap(15 * P, 30 * P).unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(spans(&s), vec![(12, 15, 3), (30, 40, 3)]);
        assert_eq!(s.munmap(0, 100 * P).unwrap().len(), 2);
        assert!(s.is_empty());
        assert!(s.munmap(0, 0).is_err());
    }

    #[test]
    fn mprotect_splits_and_merges_back() {
        let mut s = VmaSet::new();
        s.insert(Vma::anon(10 * P, 40 * P, RW)).unwrap();
        s.mprotect(20 * P, 25 * P, R).unwrap();
        assert_eq!(spans(&s), vec![(10, 20, 3), (20, 25, 1), (25, 40, 3)]);
        s.mprotect(20 * P, 25 * P, RW).unwrap();
        assert_eq!(spans(&s), vec![(10, 40, 3)]);
        assert_eq!(s.mprotect(35 * P, 45 * P, R), Err(VmaError::Unmapped(40 * P)));
        assert_eq!(spans(&s), vec![(10, 40, 3)], "failed mprotect changes nothing");
        s.mprotect(10 * P, 40 * P, VmFlags::READ | VmFlags::EXEC).unwrap();
        assert_eq!(spans(&s), vec![(10, 40, 5)]);
        s.verify().unwrap();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Map { start: u64, len: u64, prot: u32 },
        Unmap { start: u64, len: u64 },
        Protect { start: u64, len: u64, prot: u32 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..64u64, 1..16u64, 1..4u32).prop_map(|(start, len, prot)| Op::Map { start, len, prot }),
            (0..64u64, 1..16u64).prop_map(|(start, len)| Op::Unmap { start, len }),
            (0..64u64, 1..16u64, 1..4u32).prop_map(|(start, len, prot)| Op::Protect { start, len, prot }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn vma_set_matches_page_model(ops in proptest::collection::vec(op(), 1..80)) {
            // Model: the protection of every page, or none.
            let mut model = [None::<u32>; 80];
            let mut s = VmaSet::new();
            for op in ops {
                match op {
                    Op::Map { start, len, prot } => {
                        let r = s.insert(Vma::anon(start * P, (start + len) * P, VmFlags(prot)));
                        let free = (start..start + len).all(|p| model[p as usize].is_none());
                        prop_assert_eq!(r.is_ok(), free);
                        if free {
                            for p in start..start + len { model[p as usize] = Some(prot); }
                        }
                    }
                    Op::Unmap { start, len } => {
                        let removed = s.munmap(start * P, (start + len) * P).unwrap();
                        let pages: u64 = removed.iter().map(|v| v.len() / P).sum();
                        let mapped = (start..start + len).filter(|&p| model[p as usize].is_some()).count() as u64;
                        prop_assert_eq!(pages, mapped);
                        for p in start..start + len { model[p as usize] = None; }
                    }
                    Op::Protect { start, len, prot } => {
                        let r = s.mprotect(start * P, (start + len) * P, VmFlags(prot));
                        let mapped = (start..start + len).all(|p| model[p as usize].is_some());
                        prop_assert_eq!(r.is_ok(), mapped);
                        if mapped {
                            for p in start..start + len { model[p as usize] = Some(prot); }
                        }
                    }
                }
                s.verify().unwrap();
                for (p, m) in model.iter().enumerate() {
                    let got = s.find(p as u64 * P).map(|v| v.flags.0);
                    prop_assert_eq!(got, *m, "page {}", p);
                }
            }
        }
    }
}
