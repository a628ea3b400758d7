//! The swap slot allocator (Linux's `mm/swapfile.c`).
//!
//! A swap area (`swap_info_struct`) is an array of page-sized slots on a
//! device; slot 0 holds the swap header, as in Linux, and is never handed
//! out. Each slot has a use count in the area's `swap_map`, as Linux keeps
//! it:
//!
//! - the low bits count the references to the slot: one per swap PTE (and
//!   per shmem/swap-cache user outside page tables), raised by
//!   [`SwapAreas::swap_duplicate`] when `fork` copies a swap PTE or when
//!   `try_to_unmap` writes one, dropped by [`SwapAreas::swap_free`] when a
//!   PTE is zapped or the page is swapped back in;
//! - [`SWAP_HAS_CACHE`] says the slot's page sits in the swap cache (a
//!   frame holds its contents); it is set by allocation
//!   ([`SwapAreas::get_swap_page`], for swap-out) or by
//!   [`SwapAreas::swapcache_prepare`] (for swap-in) and cleared by
//!   [`SwapAreas::swapcache_free`] (Linux's `put_swap_folio`) when the page
//!   leaves the swap cache;
//! - a slot is free when both are gone (count 0 and no cache), and
//!   [`SWAP_MAP_BAD`] marks slots that must never be used.
//!
//! Linux's map is a byte per slot with continuation pages past 62
//! references (`add_swap_count_continuation`); this one is a `u16` per
//! slot, so the count goes to [`SWAP_MAP_MAX`] without continuations.
//!
//! Allocation follows Linux's cluster allocator
//! (`scan_swap_map_try_ssd_cluster`): the area is cut into clusters of
//! [`SWAPFILE_CLUSTER`] slots; free clusters sit on a free list; the
//! allocator fills its current cluster front to back, so a batch of
//! swap-outs gets consecutive slots (one device request for many pages),
//! and takes a new free cluster when the current one is full. Only when no
//! cluster is wholly free does it fall back to scanning for any free slot
//! (`scan_swap_map_slots`). Areas have priorities; allocation tries the
//! highest first (`swap_avail_heads`).
//!
//! The swap *entry* (area type and slot offset) is written into
//! non-present PTEs by the paging code; this module speaks of it as the
//! plain pair [`SwpEntry`].

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Swap areas a system may have (`MAX_SWAPFILES` with 5 type bits).
pub const MAX_SWAPFILES: usize = 32;
/// Slots per cluster (`SWAPFILE_CLUSTER`, one PMD's worth of pages).
pub const SWAPFILE_CLUSTER: u64 = 256;
/// The flag in a `swap_map` entry: the slot's page is in the swap cache.
pub const SWAP_HAS_CACHE: u16 = 0x8000;
/// A `swap_map` value marking a bad slot.
pub const SWAP_MAP_BAD: u16 = 0x7fff;
/// Highest reference count of a slot.
pub const SWAP_MAP_MAX: u16 = 0x7ffe;
/// Mask of the count bits.
const COUNT_MASK: u16 = 0x7fff;

/// The checksum of a page's contents (its 512 little-endian words, FNV-1a
/// word by word, never 0): the guest records it for each slot it writes
/// and checks it at swap-in; the host recomputes it from the swap file
/// (`--verify swap`), so a page lost or corrupted on the way is caught
/// from outside the guest.
pub fn page_checksum(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &w in words {
        h = (h ^ w).wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// A swap entry (Linux's `swp_entry_t`, decoded): swap area `ty`, slot
/// `offset` in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SwpEntry {
    /// The swap area (`swp_type`).
    pub ty: u8,
    /// The slot in the area (`swp_offset`).
    pub offset: u64,
}

impl SwpEntry {
    /// The entry for slot `offset` of area `ty`.
    pub const fn new(ty: u8, offset: u64) -> SwpEntry {
        SwpEntry { ty, offset }
    }
}

/// Why a swap operation failed. Bad entries are reported, never panicked
/// on: they come from page tables, which a bug or a hostile guest can
/// corrupt (Linux prints "Bad swap file entry" / "Unused swap offset").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapError {
    /// No swap area with this type is on (`swap_info[type]` empty).
    BadType(u8),
    /// The offset is 0 (the header) or past the area's end.
    BadOffset(SwpEntry),
    /// The slot is free (an "unused swap offset").
    Unused(SwpEntry),
    /// The slot is marked bad.
    BadSlot(SwpEntry),
    /// The count would pass `SWAP_MAP_MAX`.
    CountOverflow(SwpEntry),
    /// `swapcache_prepare`: the page is already in the swap cache
    /// (Linux's `-EEXIST`: someone else is swapping it in).
    AlreadyCached(SwpEntry),
    /// `swapcache_free` on a slot whose page is not in the swap cache.
    NotCached(SwpEntry),
    /// No free slot in any area.
    NoSpace,
    /// `swapon`: all `MAX_SWAPFILES` types are in use, or the area has no
    /// usable slot (fewer than 2 slots: one is the header).
    TooSmall(u64),
    /// `swapon`: no free type left.
    TooManyAreas,
    /// `swapoff` of an area with slots still in use.
    Busy(u8),
}

impl fmt::Display for SwapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex only: decimal integer formatting is unusable in the guest.
        match *self {
            SwapError::BadType(t) => write!(f, "bad swap file entry: no swap area of type {t:#x}"),
            SwapError::BadOffset(e) => write!(f, "bad swap offset {:#x} in area {:#x}", e.offset, e.ty),
            SwapError::Unused(e) => write!(f, "unused swap offset {:#x} in area {:#x}", e.offset, e.ty),
            SwapError::BadSlot(e) => write!(f, "swap offset {:#x} in area {:#x} is a bad slot", e.offset, e.ty),
            SwapError::CountOverflow(e) => write!(f, "swap count overflow at {:#x} in area {:#x}", e.offset, e.ty),
            SwapError::AlreadyCached(e) => {
                write!(f, "swap offset {:#x} in area {:#x} is already in the swap cache", e.offset, e.ty)
            }
            SwapError::NotCached(e) => {
                write!(f, "swap offset {:#x} in area {:#x} is not in the swap cache", e.offset, e.ty)
            }
            SwapError::NoSpace => f.write_str("no free swap slot"),
            SwapError::TooSmall(n) => write!(f, "a swap area of {n:#x} slots has no usable slot"),
            SwapError::TooManyAreas => f.write_str("every swap type is in use"),
            SwapError::Busy(t) => write!(f, "swap area {t:#x} still has slots in use"),
        }
    }
}

#[cfg(any(test, feature = "std"))]
impl std::error::Error for SwapError {}

/// One swap area (Linux's `swap_info_struct`).
#[derive(Debug, Clone)]
pub struct SwapInfo {
    /// Per-slot usage: count | `SWAP_HAS_CACHE`, or `SWAP_MAP_BAD`.
    swap_map: Vec<u16>,
    /// Used (non-free) slots per cluster, bad and header slots included.
    cluster_used: Vec<u16>,
    /// Clusters with no used slot, in the order they became free.
    free_clusters: VecDeque<u32>,
    /// Whether each cluster is on `free_clusters`.
    cluster_on_free: Vec<bool>,
    /// The cluster being filled and the next offset to try in it
    /// (`percpu_cluster`; one here, the allocator is not per-CPU).
    cur: Option<(u32, u64)>,
    /// Next offset for the fallback scan (`cluster_next`).
    scan_next: u64,
    /// Usable slots (`pages`: neither header nor bad).
    pages: u64,
    /// Slots in use (`inuse_pages`).
    inuse_pages: u64,
    /// Allocation priority (`prio`); higher is used first.
    pub prio: i16,
}

impl SwapInfo {
    /// An area of `nr_slots` slots (slot 0 the header) with the given bad
    /// slots, as `swapon` sets it up from the header's bad-block list.
    fn new(nr_slots: u64, bad: &[u64], prio: i16) -> Result<SwapInfo, SwapError> {
        let n = usize::try_from(nr_slots).map_err(|_| SwapError::TooSmall(nr_slots))?;
        let mut swap_map = vec![0u16; n];
        if n < 2 {
            return Err(SwapError::TooSmall(nr_slots));
        }
        swap_map[0] = SWAP_MAP_BAD;
        for &b in bad {
            if let Some(s) = swap_map.get_mut(b as usize) {
                *s = SWAP_MAP_BAD;
            }
        }
        let nr_clusters = n.div_ceil(SWAPFILE_CLUSTER as usize);
        let mut cluster_used = vec![0u16; nr_clusters];
        for (i, &m) in swap_map.iter().enumerate() {
            if m != 0 {
                cluster_used[i / SWAPFILE_CLUSTER as usize] += 1;
            }
        }
        let pages = swap_map.iter().filter(|&&m| m == 0).count() as u64;
        if pages == 0 {
            return Err(SwapError::TooSmall(nr_slots));
        }
        let mut si = SwapInfo {
            swap_map,
            cluster_used,
            free_clusters: VecDeque::new(),
            cluster_on_free: vec![false; nr_clusters],
            cur: None,
            scan_next: 1,
            pages,
            inuse_pages: 0,
            prio,
        };
        // A short last cluster is never "free" (it cannot give a whole
        // cluster of consecutive slots); the scan still uses it.
        for c in 0..nr_clusters {
            if si.cluster_used[c] == 0 && si.cluster_len(c as u32) == SWAPFILE_CLUSTER {
                si.free_clusters.push_back(c as u32);
                si.cluster_on_free[c] = true;
            }
        }
        Ok(si)
    }

    fn cluster_len(&self, c: u32) -> u64 {
        let start = c as u64 * SWAPFILE_CLUSTER;
        (self.swap_map.len() as u64 - start).min(SWAPFILE_CLUSTER)
    }

    /// Slots in the area, the header and bad slots included (`max`).
    pub fn max(&self) -> u64 {
        self.swap_map.len() as u64
    }

    /// Usable slots (`pages`).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Slots in use (`inuse_pages`).
    pub fn inuse_pages(&self) -> u64 {
        self.inuse_pages
    }

    /// The raw `swap_map` entry of a slot (for views and checks).
    pub fn map(&self, offset: u64) -> Option<u16> {
        self.swap_map.get(offset as usize).copied()
    }

    /// Marks a free slot used with `usage`, keeping cluster counts.
    fn take(&mut self, off: u64, usage: u16) {
        debug_assert_eq!(self.swap_map[off as usize], 0);
        self.swap_map[off as usize] = usage;
        self.inuse_pages += 1;
        let c = (off / SWAPFILE_CLUSTER) as usize;
        self.cluster_used[c] += 1;
        if self.cluster_on_free[c] {
            // Taken by the fallback scan or as the new current cluster.
            self.cluster_on_free[c] = false;
            self.free_clusters.retain(|&x| x as usize != c);
        }
    }

    /// Returns a slot to the free pool (`swap_entry_free` + `free_cluster`).
    fn release(&mut self, off: u64) {
        self.swap_map[off as usize] = 0;
        self.inuse_pages -= 1;
        let c = (off / SWAPFILE_CLUSTER) as u32;
        self.cluster_used[c as usize] -= 1;
        let is_cur = matches!(self.cur, Some((cc, _)) if cc == c);
        if self.cluster_used[c as usize] == 0 && !is_cur && self.cluster_len(c) == SWAPFILE_CLUSTER {
            self.free_clusters.push_back(c);
            self.cluster_on_free[c as usize] = true;
        }
    }

    /// One slot from the current cluster, or a new free cluster
    /// (`scan_swap_map_try_ssd_cluster`).
    fn alloc_cluster_slot(&mut self, usage: u16) -> Option<u64> {
        loop {
            if let Some((c, next)) = self.cur {
                let end = c as u64 * SWAPFILE_CLUSTER + self.cluster_len(c);
                let mut off = next;
                while off < end {
                    if self.swap_map[off as usize] == 0 {
                        self.take(off, usage);
                        self.cur = Some((c, off + 1));
                        return Some(off);
                    }
                    off += 1;
                }
                // Done with it: if everything in it was freed meanwhile,
                // it goes back on the free list.
                self.cur = None;
                if self.cluster_used[c as usize] == 0 && self.cluster_len(c) == SWAPFILE_CLUSTER {
                    self.free_clusters.push_back(c);
                    self.cluster_on_free[c as usize] = true;
                }
            }
            let c = self.free_clusters.pop_front()?;
            self.cluster_on_free[c as usize] = false;
            self.cur = Some((c, c as u64 * SWAPFILE_CLUSTER));
        }
    }

    /// Any free slot, scanning from `scan_next` (`scan_swap_map_slots`'
    /// fallback when no cluster is free).
    fn alloc_scan_slot(&mut self, usage: u16) -> Option<u64> {
        let n = self.swap_map.len() as u64;
        // Not `clamp`: its min > max panic formats integers (the guest cannot).
        let start = self.scan_next.max(1).min(n - 1);
        let mut off = start;
        loop {
            if self.swap_map[off as usize] == 0 {
                self.take(off, usage);
                self.scan_next = if off + 1 >= n { 1 } else { off + 1 };
                return Some(off);
            }
            off = if off + 1 >= n { 1 } else { off + 1 };
            if off == start {
                return None;
            }
        }
    }

    fn alloc_slot(&mut self, usage: u16) -> Option<u64> {
        if self.inuse_pages == self.pages {
            return None;
        }
        self.alloc_cluster_slot(usage).or_else(|| self.alloc_scan_slot(usage))
    }
}

/// The swap areas of a system (`swap_info[]`) with the free-slot counts
/// `free` and `/proc/meminfo` show.
#[derive(Debug, Clone, Default)]
pub struct SwapAreas {
    areas: Vec<Option<SwapInfo>>,
    /// `nr_swap_pages`: free slots over all areas.
    nr_swap_pages: u64,
    /// `total_swap_pages`: usable slots over all areas.
    total_swap_pages: u64,
}

impl SwapAreas {
    /// No swap (as Linux before any `swapon`).
    pub fn new() -> SwapAreas {
        SwapAreas::default()
    }

    /// `swapon`: adds an area of `nr_slots` page slots (slot 0 the header)
    /// with bad slots `bad` and priority `prio`; returns its type.
    pub fn swapon(&mut self, nr_slots: u64, bad: &[u64], prio: i16) -> Result<u8, SwapError> {
        let si = SwapInfo::new(nr_slots, bad, prio)?;
        let ty = match self.areas.iter().position(Option::is_none) {
            Some(t) => t,
            None if self.areas.len() < MAX_SWAPFILES => {
                self.areas.push(None);
                self.areas.len() - 1
            }
            None => return Err(SwapError::TooManyAreas),
        };
        self.nr_swap_pages += si.pages;
        self.total_swap_pages += si.pages;
        self.areas[ty] = Some(si);
        Ok(ty as u8)
    }

    /// `swapoff`: removes an area none of whose slots is in use (Linux
    /// first swaps every page back in, `try_to_unuse`; that is the
    /// caller's, through the page tables).
    pub fn swapoff(&mut self, ty: u8) -> Result<(), SwapError> {
        let si = self.area(ty)?;
        if si.inuse_pages != 0 {
            return Err(SwapError::Busy(ty));
        }
        let pages = si.pages;
        self.areas[ty as usize] = None;
        self.nr_swap_pages -= pages;
        self.total_swap_pages -= pages;
        Ok(())
    }

    /// The area of type `ty`.
    pub fn area(&self, ty: u8) -> Result<&SwapInfo, SwapError> {
        self.areas.get(ty as usize).and_then(Option::as_ref).ok_or(SwapError::BadType(ty))
    }

    fn area_mut(&mut self, ty: u8) -> Result<&mut SwapInfo, SwapError> {
        self.areas.get_mut(ty as usize).and_then(Option::as_mut).ok_or(SwapError::BadType(ty))
    }

    /// The areas that are on, by type.
    pub fn areas(&self) -> impl Iterator<Item = (u8, &SwapInfo)> {
        self.areas.iter().enumerate().filter_map(|(t, a)| a.as_ref().map(|a| (t as u8, a)))
    }

    /// Free slots (`nr_swap_pages`, `SwapFree` in pages).
    pub fn nr_swap_pages(&self) -> u64 {
        self.nr_swap_pages
    }

    /// Usable slots (`total_swap_pages`, `SwapTotal` in pages).
    pub fn total_swap_pages(&self) -> u64 {
        self.total_swap_pages
    }

    /// The area's map entry for `e`, checked (`_swap_info_get`).
    fn slot(&mut self, e: SwpEntry) -> Result<(&mut SwapInfo, usize), SwapError> {
        let si = self.area_mut(e.ty)?;
        if e.offset == 0 || e.offset >= si.max() {
            return Err(SwapError::BadOffset(e));
        }
        if si.swap_map[e.offset as usize] == SWAP_MAP_BAD {
            return Err(SwapError::BadSlot(e));
        }
        Ok((si, e.offset as usize))
    }

    /// `get_swap_page` (`folio_alloc_swap`): a free slot from the
    /// highest-priority area with room, marked `SWAP_HAS_CACHE` (the page
    /// being swapped out goes into the swap cache; its PTEs take counts
    /// with [`swap_duplicate`](Self::swap_duplicate) as they are unmapped).
    pub fn get_swap_page(&mut self) -> Result<SwpEntry, SwapError> {
        // Highest priority first; equal priorities in type order. No
        // allocation: the guest calls this under its page-allocator lock.
        let mut tried = 0u64;
        loop {
            let mut best: Option<(u8, i16)> = None;
            for (t, a) in self.areas() {
                if tried & (1 << t) == 0 && a.inuse_pages < a.pages && best.is_none_or(|(_, p)| a.prio > p) {
                    best = Some((t, a.prio));
                }
            }
            let Some((ty, _)) = best else { break };
            tried |= 1 << ty;
            let si = self.area_mut(ty)?;
            if let Some(offset) = si.alloc_slot(SWAP_HAS_CACHE) {
                self.nr_swap_pages -= 1;
                return Ok(SwpEntry { ty, offset });
            }
        }
        Err(SwapError::NoSpace)
    }

    /// `get_swap_pages`: up to `n` slots for a batch of swap-outs, pushed to
    /// `out`; consecutive while the current cluster lasts, so the batch
    /// becomes few device requests. Returns how many were allocated.
    pub fn get_swap_pages(&mut self, n: usize, out: &mut Vec<SwpEntry>) -> usize {
        let mut got = 0;
        while got < n {
            match self.get_swap_page() {
                Ok(e) => {
                    out.push(e);
                    got += 1;
                }
                Err(_) => break,
            }
        }
        got
    }

    /// `swap_duplicate`: one more reference to an allocated slot (a swap
    /// PTE copied by `fork`, or written by `try_to_unmap`).
    pub fn swap_duplicate(&mut self, e: SwpEntry) -> Result<(), SwapError> {
        let (si, off) = self.slot(e)?;
        let m = si.swap_map[off];
        if m == 0 {
            return Err(SwapError::Unused(e));
        }
        if m & COUNT_MASK >= SWAP_MAP_MAX {
            return Err(SwapError::CountOverflow(e));
        }
        si.swap_map[off] = m + 1;
        Ok(())
    }

    /// `swapcache_prepare`: the swap-in path claims the slot's swap-cache
    /// place before reading the page (`SWAP_HAS_CACHE` set); fails with
    /// `AlreadyCached` if another swap-in got there first, `Unused` if the
    /// slot was freed meanwhile.
    pub fn swapcache_prepare(&mut self, e: SwpEntry) -> Result<(), SwapError> {
        let (si, off) = self.slot(e)?;
        let m = si.swap_map[off];
        if m & SWAP_HAS_CACHE != 0 {
            return Err(SwapError::AlreadyCached(e));
        }
        if m == 0 {
            return Err(SwapError::Unused(e));
        }
        si.swap_map[off] = m | SWAP_HAS_CACHE;
        Ok(())
    }

    /// Frees the slot if nothing refers to it any more.
    fn put(&mut self, e: SwpEntry, new: u16) -> Result<u16, SwapError> {
        let (si, off) = self.slot(e)?;
        if new == 0 {
            si.release(off as u64);
            self.nr_swap_pages += 1;
        } else {
            si.swap_map[off] = new;
        }
        Ok(new)
    }

    /// `swap_free`: drops one reference (a swap PTE zapped, or replaced by
    /// the page at swap-in). Returns the slot's remaining usage (count |
    /// `SWAP_HAS_CACHE`); 0 means the slot is free again. A usage of
    /// exactly `SWAP_HAS_CACHE` means only the swap cache holds it: the
    /// caller may drop the cached page (`free_swap_and_cache`).
    pub fn swap_free(&mut self, e: SwpEntry) -> Result<u16, SwapError> {
        let (si, off) = self.slot(e)?;
        let m = si.swap_map[off];
        if m & COUNT_MASK == 0 {
            return Err(SwapError::Unused(e));
        }
        self.put(e, m - 1)
    }

    /// `swapcache_free` (`put_swap_folio`): the page left the swap cache.
    /// Returns the remaining usage (the count; 0 means the slot is free).
    pub fn swapcache_free(&mut self, e: SwpEntry) -> Result<u16, SwapError> {
        let (si, off) = self.slot(e)?;
        let m = si.swap_map[off];
        if m & SWAP_HAS_CACHE == 0 {
            return Err(if m == 0 { SwapError::Unused(e) } else { SwapError::NotCached(e) });
        }
        self.put(e, m & !SWAP_HAS_CACHE)
    }

    /// `swap_swapcount`: references to the slot, the swap cache not
    /// counted.
    pub fn swap_count(&self, e: SwpEntry) -> Result<u16, SwapError> {
        Ok(self.usage(e)? & COUNT_MASK)
    }

    /// The slot's whole usage (count | `SWAP_HAS_CACHE`), checked.
    pub fn usage(&self, e: SwpEntry) -> Result<u16, SwapError> {
        let si = self.area(e.ty)?;
        match si.map(e.offset) {
            None => Err(SwapError::BadOffset(e)),
            Some(_) if e.offset == 0 => Err(SwapError::BadOffset(e)),
            Some(SWAP_MAP_BAD) => Err(SwapError::BadSlot(e)),
            Some(m) => Ok(m),
        }
    }

    /// Checks the counters against the maps (for tests and `--verify`).
    pub fn verify(&self) -> Result<(), &'static str> {
        let (mut free, mut total) = (0, 0);
        for (_, si) in self.areas() {
            let used = si.swap_map.iter().filter(|&&m| m != 0 && m != SWAP_MAP_BAD).count() as u64;
            if used != si.inuse_pages {
                return Err("inuse_pages disagrees with swap_map");
            }
            for (c, &n) in si.cluster_used.iter().enumerate() {
                let s = c * SWAPFILE_CLUSTER as usize;
                let e = (s + SWAPFILE_CLUSTER as usize).min(si.swap_map.len());
                if si.swap_map[s..e].iter().filter(|&&m| m != 0).count() != n as usize {
                    return Err("cluster use count disagrees with swap_map");
                }
                if si.cluster_on_free[c] != si.free_clusters.contains(&(c as u32)) {
                    return Err("cluster free flag disagrees with the free list");
                }
                if si.cluster_on_free[c] && n != 0 {
                    return Err("a used cluster is on the free list");
                }
            }
            free += si.pages - si.inuse_pages;
            total += si.pages;
        }
        if free != self.nr_swap_pages || total != self.total_swap_pages {
            return Err("nr_swap_pages/total_swap_pages disagree with the areas");
        }
        Ok(())
    }
}

/// A disagreement between a swap map and the references to it that
/// [`verify_swap_map`] found (what `--verify swap` reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapMapError {
    /// A swap PTE or swap-cache entry names a slot outside the map, the
    /// header, a bad slot, or a free slot.
    Unallocated(SwpEntry),
    /// The slot's count is not the number of swap PTEs naming it.
    CountMismatch {
        /// The slot.
        entry: SwpEntry,
        /// The count in the map.
        map: u16,
        /// Swap PTEs naming it.
        ptes: u32,
    },
    /// `SWAP_HAS_CACHE` disagrees with the swap cache.
    CacheMismatch {
        /// The slot.
        entry: SwpEntry,
        /// Whether the map says cached.
        map: bool,
        /// Whether the swap cache holds it.
        cached: bool,
    },
}

impl fmt::Display for SwapMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SwapMapError::Unallocated(e) => {
                write!(f, "swap entry (type {:#x}, offset {:#x}) names no allocated slot", e.ty, e.offset)
            }
            SwapMapError::CountMismatch { entry: e, map, ptes } => write!(
                f,
                "slot (type {:#x}, offset {:#x}) has count {map:#x} but {ptes:#x} swap PTEs name it",
                e.ty, e.offset
            ),
            SwapMapError::CacheMismatch { entry: e, map, cached } => write!(
                f,
                "slot (type {:#x}, offset {:#x}): SWAP_HAS_CACHE is {map} but the swap cache {} it",
                e.ty,
                e.offset,
                if cached { "holds" } else { "does not hold" }
            ),
        }
    }
}

/// Checks one area's `swap_map` (as read from wherever it lives: the
/// host reads the guest's) against the references found by walking page
/// tables and the swap cache: each swap PTE names an allocated slot, each
/// slot's count equals its swap PTEs, `SWAP_HAS_CACHE` is set exactly for
/// cached slots (so no slot is in use without a reference). `ptes` maps
/// slot offsets of area `ty` to the number of swap PTEs naming them;
/// `cached` lists the offsets in the swap cache.
pub fn verify_swap_map(
    ty: u8,
    swap_map: &[u16],
    ptes: &alloc::collections::BTreeMap<u64, u32>,
    cached: &alloc::collections::BTreeSet<u64>,
) -> Result<(), SwapMapError> {
    let e = |offset| SwpEntry { ty, offset };
    let allocated = |off: u64| off != 0 && swap_map.get(off as usize).is_some_and(|&m| m != 0 && m != SWAP_MAP_BAD);
    for &off in ptes.keys().chain(cached.iter()) {
        if !allocated(off) {
            return Err(SwapMapError::Unallocated(e(off)));
        }
    }
    for (off, &m) in swap_map.iter().enumerate().skip(1) {
        if m == 0 || m == SWAP_MAP_BAD {
            continue;
        }
        let off = off as u64;
        let n = ptes.get(&off).copied().unwrap_or(0);
        let is_cached = cached.contains(&off);
        if (m & COUNT_MASK) as u32 != n {
            return Err(SwapMapError::CountMismatch { entry: e(off), map: m & COUNT_MASK, ptes: n });
        }
        if (m & SWAP_HAS_CACHE != 0) != is_cached {
            return Err(SwapMapError::CacheMismatch { entry: e(off), map: m & SWAP_HAS_CACHE != 0, cached: is_cached });
        }
    }
    Ok(())
}

impl SwapInfo {
    /// The whole `swap_map` (for views and [`verify_swap_map`]).
    pub fn swap_map(&self) -> &[u16] {
        &self.swap_map
    }
}

#[cfg(test)]
mod tests;
