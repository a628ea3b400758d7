//! Swap and the anon reverse map (Linux's mm/swapfile.c, mm/swap_state.c,
//! mm/page_io.c and the rmap glue of mm/memory.c): the swap area on the
//! virtio-blk disk (`swapon` at boot when the VMM attached one), the swap
//! cache, swap-out for reclaim ([`pageout`] and the writeback batch) and
//! swap-in for the fault path ([`swapin`]).
//!
//! State and locks: [`SWAP`] (rank `RECLAIM`) holds mm-core's `AnonRmap`
//! and `SwapAreas`, the address spaces reclaim may edit (their PGDs), and
//! per slot the swap-cache page, the workingset shadow and the checksum of
//! what was written. The LRU lists and the per-pfn `PageExt` live under
//! the page allocator ([`super::PAGES`]), because freeing a user page must
//! take it off its list; `SWAP` ranks outside it, so swap-side work takes
//! `SWAP` first. Device I/O (the driver's lock ranks between the two) runs
//! with `SWAP` held and `PAGES` dropped.
//!
//! Reference counts, as Linux's: every PTE mapping a page holds one, the
//! swap cache holds one; every swap PTE holds one count of its slot and the
//! swap cache holds `SWAP_HAS_CACHE`. A page is reclaimable when its
//! references are exactly its mappings (plus the cache's): an extra one is
//! a pin (a fault in progress), and the page is kept.
//!
//! Pages in the swap cache are never written to: a swapped-in page stays
//! cached only while other swap PTEs still name its slot, and it is mapped
//! read-only meanwhile (a write copies, as after fork). So reclaiming a
//! cached page needs no I/O: its slot already holds its contents.

use super::phys::{direct_map, frame_checksum};
use super::vmstat::{self, Event};
use super::PAGES;
use crate::drivers::virtio::blk;
use crate::sync::{rank, SpinLock};
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use mm_core::addr::{VirtAddr, PAGE_SHIFT};
use mm_core::lru::{ReclaimOutcome, Shadow};
use mm_core::paging::swap::SwapEntry;
use mm_core::paging::{Pte, PteFlags};
use mm_core::rmap::{AnonMapping, AnonRmap, MmId, RmapPageTables};
use mm_core::swap::{SwapAreas, SwpEntry};
use mm_core::vma::Vma;

/// Pages written per device batch (one queue notify each): reclaim's
/// `SWAP_CLUSTER_MAX`.
pub const WB_MAX: usize = 32;
/// The entry address bits of a PTE.
const ADDR_MASK: u64 = mm_core::paging::entry::PTE_ADDR_MASK_MAX;

/// What reclaim needs of an address space: where its tables are, and the
/// counters reclaim changes without its mm lock (Linux's per-mm
/// `MM_SWAPENTS`/`MM_ANONPAGES` are atomics for the same reason).
#[derive(Clone, Copy, Debug, Default)]
pub struct MmEntry {
    /// Physical address of its PGD.
    pub pgd: u64,
    /// Swap PTEs in its tables.
    pub swapents: u64,
    /// Resident pages reclaim took since the owner last looked
    /// ([`take_rss_out`]).
    pub rss_out: u64,
    /// Page tables reclaim added by splitting huge PMDs since the owner
    /// last looked (mm/huge_memory.rs `take_split_tables`).
    pub pt_pages_in: u64,
}

/// What [`flush_writeback`] does with a queued page, after the batch's
/// TLB flush.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WbKind {
    /// Write it to its slot, then free it.
    Write,
    /// Its slot holds its contents already: free it (`drop_clean` of a
    /// page reclaim unmapped, waiting for the flush).
    Clean,
    /// A lazily freed page (MADV_FREE) unmapped: drop its last reference.
    Lazy,
}

/// A page on its way to the disk (or, unmapped, to the allocator: every
/// page whose PTEs reclaim changed waits here for the batch's flush).
#[derive(Clone, Copy)]
struct Writeback {
    pfn: u64,
    kind: WbKind,
    e: SwpEntry,
    shadow: Shadow,
    /// A tmpfs page's file and index (shmem's `shmem_writepage`): once
    /// written, the cache's index takes the slot.
    file: Option<(u32, u64)>,
}

/// Swap counters beyond vmstat's.
#[derive(Clone, Copy, Default, Debug)]
pub struct SwapStats {
    /// Swap-ins served from the swap cache (no I/O).
    pub cache_hits: u64,
    /// Device writes that failed (the page stayed resident).
    pub write_errors: u64,
    /// Device reads that failed (the fault got SIGBUS).
    pub read_errors: u64,
    /// Swap-ins whose contents did not match what was written.
    pub checksum_errors: u64,
    /// Write batches submitted.
    pub write_batches: u64,
    /// Pages reclaimed from the swap cache without a write.
    pub clean_reclaims: u64,
}

/// Reclaim's state (see the module documentation).
pub struct SwapState {
    /// The swap areas and their slot maps.
    pub areas: SwapAreas,
    /// The anon reverse map.
    pub rmap: AnonRmap,
    /// Address spaces by id.
    pub mms: BTreeMap<MmId, MmEntry>,
    next_mm: MmId,
    /// Per slot of area 0: its swap-cache page's pfn plus one (0: none).
    pub cache: Vec<u32>,
    /// Per slot: the workingset shadow its page left.
    pub shadow: Vec<u64>,
    /// Per slot: the checksum of what was last written there (0: never).
    pub sums: Vec<u64>,
    wb: [Option<Writeback>; WB_MAX],
    wb_len: usize,
    /// The TLB flushes reclaim's PTE changes wait for (Linux's
    /// `tlb_ubc`): flushed once per writeback batch, before its pages are
    /// written or freed ([`flush_writeback`]).
    pub tlb: crate::arch::tlb::TlbBatch,
    /// Counters.
    pub stat: SwapStats,
    /// `vm.swappiness`.
    pub swappiness: u32,
    /// Per slot, a bit (slot `o`: byte `o / 8`, bit `o % 8`): set if a
    /// tmpfs file's page is in it (the cache's index names the slot and
    /// holds one count of it), for the host's check.
    pub file_refs: Vec<u8>,
    /// Clean page-cache pages reclaim chose, (pfn, file, index): they
    /// leave the cache in [`flush_writeback`], which may take the file
    /// table's lock.
    drops: Vec<(u64, u32, u64)>,
}

/// The reclaim state.
pub static SWAP: SpinLock<SwapState> = SpinLock::new("the reclaim state", rank::RECLAIM);

/// Sets up the state at boot, and turns swap on if the VMM attached a
/// block device (`swapon /dev/vda`): one area over the whole disk, slot 0
/// the header, as `mkswap` lays it out.
pub fn init() {
    let mut s = SwapState {
        areas: SwapAreas::new(),
        rmap: AnonRmap::new(),
        mms: BTreeMap::new(),
        next_mm: 1,
        cache: Vec::new(),
        shadow: Vec::new(),
        sums: Vec::new(),
        wb: [None; WB_MAX],
        wb_len: 0,
        tlb: crate::arch::tlb::TlbBatch::new(crate::arch::tlb::BatchKind::Reclaim),
        stat: SwapStats::default(),
        swappiness: 60,
        file_refs: Vec::new(),
        // Filled under the page allocator's lock, which no allocation may
        // happen under: the room is made now, and never exceeded.
        drops: Vec::with_capacity(WB_MAX),
    };
    let mut start_kswapd = false;
    if blk::present() {
        match blk::capacity() {
            Ok(sectors) => {
                let slots = sectors / blk::SECTORS_PER_PAGE;
                match s.areas.swapon(slots, &[], -2) {
                    Ok(_) => {
                        s.cache = vec![0; slots as usize];
                        s.shadow = vec![0; slots as usize];
                        s.sums = vec![0; slots as usize];
                        s.file_refs = vec![0; slots.div_ceil(8) as usize];
                        let kb = (slots - 1) * 4;
                        start_kswapd = true;
                        crate::kprintln!(
                            "Adding {}k swap on /dev/vda.  Priority:-2 extents:1 across:{}k",
                            crate::fmt::Dec(kb),
                            crate::fmt::Dec(kb)
                        );
                    }
                    Err(e) => crate::kprintln!("swapon: /dev/vda: {}", e),
                }
            }
            Err(e) => crate::kprintln!("swapon: /dev/vda: {}", e),
        }
    }
    SWAP.set(s);
    // Background reclaim matters once pages can be reclaimed.
    if start_kswapd && crate::proc::sched::start_kswapd().is_none() {
        crate::kprintln!("swapon: cannot start kswapd");
    }
}

/// Whether anon pages can be reclaimed (a swap area with free slots).
pub fn swap_on(s: &SwapState) -> bool {
    s.areas.nr_swap_pages() > 0
}

/// Registers an address space with reclaim; its id.
pub fn register_mm(pgd: u64) -> MmId {
    SWAP.with(|s| {
        let id = s.next_mm;
        s.next_mm += 1;
        s.mms.insert(id, MmEntry { pgd, ..MmEntry::default() });
        id
    })
}

/// Resident pages reclaim took from `mm` since the last call, and its swap
/// PTEs now (the owner folds them into its counters under its lock).
pub fn take_rss_out(mm: MmId) -> (u64, u64) {
    SWAP.with(|s| match s.mms.get_mut(&mm) {
        Some(m) => (core::mem::take(&mut m.rss_out), m.swapents),
        None => (0, 0),
    })
}

/// `mm`'s PTE slot at `va` if it is a present 4 KiB leaf mapping `pfn`
/// (`page_vma_mapped_walk` at one address): the slot, the PTE, the PGD.
/// The rmap only says where a page may be mapped; this says whether it is.
pub fn pte_mapping(
    mms: &BTreeMap<MmId, MmEntry>,
    mm: MmId,
    va: u64,
    pfn: u64,
) -> Option<(mm_core::paging::Slot, Pte, u64)> {
    let pgd = mms.get(&mm)?.pgd;
    let (slot, pte) = super::paging::user_pt(pgd).lookup(&direct_map(), VirtAddr(va))?;
    (pte.is_present() && pte.0 & ADDR_MASK == pfn << PAGE_SHIFT && slot.level() == mm_core::paging::Level::Pte)
        .then_some((slot, pte, pgd))
}

impl SwapState {
    /// The pfn of `e`'s swap-cache page.
    pub fn cache_lookup(&self, e: SwpEntry) -> Option<u64> {
        if e.ty != 0 {
            return None;
        }
        let v = *self.cache.get(e.offset as usize)?;
        (v != 0).then(|| v as u64 - 1)
    }

    fn set_cache(&mut self, e: SwpEntry, pfn: Option<u64>) {
        if let Some(c) = self.cache.get_mut(e.offset as usize) {
            *c = pfn.map_or(0, |p| p as u32 + 1);
        }
    }

    /// `free_swap_and_cache` for one swap PTE going away (zap, or replaced
    /// by its page at swap-in): drops its count; when only the swap cache
    /// still holds the slot, the cached page leaves the cache (its
    /// reference dropped: freed if nothing maps it). `p` is the page
    /// allocator, held by the caller.
    pub fn free_swap_and_cache(&mut self, p: &mut super::PageAlloc, e: SwpEntry) {
        let Ok(left) = self.areas.swap_free(e) else {
            crate::kprintln!("swap_free: bad swap entry type {:#x} offset {:#x}", e.ty, e.offset);
            return;
        };
        if left == mm_core::swap::SWAP_HAS_CACHE {
            if let Some(pfn) = self.cache_lookup(e) {
                self.delete_from_swap_cache(p, e, pfn);
            }
        }
    }

    /// Takes `pfn` out of the swap cache for `e` and drops the cache's
    /// reference.
    fn delete_from_swap_cache(&mut self, p: &mut super::PageAlloc, e: SwpEntry, pfn: u64) {
        let _ = self.areas.swapcache_free(e);
        self.set_cache(e, None);
        if let Some(x) = p.ext.get_mut(pfn as usize) {
            x.set_swap_entry(None);
        }
        put_user_page(p, pfn);
    }

    /// PTEs mapping `pfn` (an anon page with rmap record `m`), counted
    /// through the rmap walk without changing them (`folio_mapcount`).
    pub fn mapcount(&self, m: AnonMapping, pfn: u64) -> u32 {
        let mut n = 0;
        self.rmap.rmap_walk(m, |mm, va| {
            n += pte_mapping(&self.mms, mm, va, pfn).is_some() as u32;
            true
        });
        n
    }

    /// Pages queued for writeback.
    pub fn queued(&self) -> u64 {
        self.wb_len as u64
    }

    /// Marks slot `e` held (or not) by a tmpfs file's index.
    fn set_file_ref(&mut self, e: SwpEntry, on: bool) {
        if let Some(b) = self.file_refs.get_mut((e.offset / 8) as usize) {
            let bit = 1u8 << (e.offset % 8);
            *b = if on { *b | bit } else { *b & !bit };
        }
    }

    /// Clean page-cache pages waiting to leave the cache.
    pub fn drops_queued(&self) -> u64 {
        self.drops.len() as u64
    }

    /// Forgets an address space (`exit_mmap`): its anon ranges and entry.
    pub fn unregister_mm(&mut self, mm: MmId) {
        self.rmap.exit_mmap(mm);
        self.mms.remove(&mm);
    }
}

/// Drops a reference to a user page; at the last one the page leaves its
/// LRU list, its page_ext is cleared and it goes back to the buddy
/// allocator (Linux's `folio_put` -> `__folio_put` -> `lru_cache_del`).
pub fn put_user_page(p: &mut super::PageAlloc, pfn: u64) {
    if p.buddy.page(pfn).is_some_and(|pg| pg.refcount == 1) {
        let _ = p.lru.folio_del_lru(pfn);
        if let Some(x) = p.ext.get_mut(pfn as usize) {
            *x = mm_core::page_ext::PageExt::EMPTY;
        }
        crate::mm::tlbtrace::free(pfn, 0);
    }
    // The last reference: to this CPU's page list (mm/percpu.rs).
    if let Err(e) = super::percpu::free_page_locked(p, crate::arch::percpu::this_cpu().id, pfn) {
        panic!("put_page(pfn {:#x}): {}", pfn, e);
    }
}

/// Drops one reference to `pfn`, the page itself going back to the buddy
/// allocator at the last. Only that last drop is a free for the stale-TLB
/// recorder: a frame another mapping still holds may stay in a CPU's TLB
/// until that mapping's own flush (a sharer's COW break on another CPU,
/// between its PTE write and its shootdown, is no stale use).
fn put_ref(buddy: &mut mm_core::buddy::BuddyAllocator<'static>, pfn: u64) {
    if buddy.page(pfn).is_some_and(|pg| pg.refcount == 1) {
        crate::mm::tlbtrace::free(pfn, 0);
    }
    let _ = buddy.free_pages(crate::arch::percpu::this_cpu().id, pfn, 0);
}

/// A new anon page at `va` of `mm` (first fault or COW copy): records its
/// reverse mapping and puts it on the inactive anon list
/// (`folio_add_new_anon_rmap` + `folio_add_lru_vma`).
pub fn new_anon_page(mm: MmId, vma: &Vma, va: u64, pfn: u64) {
    SWAP.with(|s| {
        let m = s.rmap.folio_add_new_anon_rmap(mm, vma, va, true);
        PAGES.with(|p| add_anon(p, pfn, m.ok(), None));
    })
}

/// Records `m` for `pfn` and adds it to the LRU (as a refault if `shadow`).
fn add_anon(p: &mut super::PageAlloc, pfn: u64, m: Option<AnonMapping>, shadow: Option<(Shadow, bool)>) {
    if let (Some(m), Some(x)) = (m, p.ext.get_mut(pfn as usize)) {
        x.set_anon(m);
    }
    let r = match shadow {
        Some((sh, on)) => {
            // A refault counts once, whatever the lruvec.
            vmstat::count(Event::WorkingsetRefault, 1);
            let r = p.lru_add_refault(pfn, true, sh, on);
            if r == Ok(true) {
                vmstat::count(Event::PgActivate, 1);
            }
            r.map(|_| ())
        }
        None => p.lru_add(pfn, true),
    };
    if let Err(e) = r {
        crate::kprintln!("lru: {}", e);
    }
}

/// Why a swap-in failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapinError {
    /// The PTE's entry names no allocated slot.
    BadEntry,
    /// No memory for the page.
    NoMemory,
    /// The device failed the read (Linux: SIGBUS).
    Io,
}

/// What [`swapin`] mapped.
pub struct Swapin {
    /// The page's physical address.
    pub pa: u64,
    /// Whether it may be mapped writable (no other swap PTE shares it).
    pub exclusive: bool,
    /// Whether it needed I/O (a major fault).
    pub major: bool,
}

/// Slots read ahead of a swap-in fault (Linux's `vm.page-cluster` 3: 8
/// pages, the faulting one included): pages evicted together were given
/// neighbouring slots, and are usually wanted together again.
pub const PAGE_CLUSTER: u64 = 8;

/// Linux's `do_swap_page` minus the PTE write: the page for swap entry
/// `e` of `mm` at `va` in `vma`, from the swap cache or read from the disk
/// (with the slots after it, into the swap cache: `swap_cluster_readahead`);
/// `e`'s count is dropped (the caller replaces the swap PTE by the page,
/// holding a reference for it). `still_there` re-checks the PTE after the
/// allocation, which may have reclaimed (if it changed, the fault is
/// retried by the CPU: Linux's `pte_same` check).
pub fn swapin(
    mm: MmId,
    vma: &Vma,
    va: u64,
    e: SwpEntry,
    still_there: impl Fn() -> bool,
) -> Result<Option<Swapin>, SwapinError> {
    // 1. The swap cache.
    let hit = SWAP.with(|s| {
        s.areas.usage(e).map_err(|_| SwapinError::BadEntry)?;
        Ok(s.cache_lookup(e))
    })?;
    let (pfn, major) = match hit {
        Some(pfn) => (pfn, false),
        // The VMA's policy, else the task's (Linux's `swapin_readahead`
        // with `get_vma_policy`).
        None => match read_in(e, crate::proc::mempolicy::user_gfp(vma, va), &still_there)? {
            Some(pfn) => (pfn, true),
            None => return Ok(None),
        },
    };
    let pa = pfn << PAGE_SHIFT;
    let exclusive = SWAP.with(|s| {
        let swap_on = swap_on(s);
        if !major {
            s.stat.cache_hits += 1;
        }
        // Others still name the slot: the page goes into (or stays in) the
        // swap cache, so they map this same page; it is shared, so its
        // rmap goes to the root anon_vma.
        let others = s.areas.swap_count(e).unwrap_or(1) > 1;
        let shadow = Shadow(s.shadow.get(e.offset as usize).copied().unwrap_or(0));
        let unrecorded = PAGES.with(|p| p.ext.get(pfn as usize).is_none_or(|x| x.anon().is_none()));
        let m = if unrecorded { s.rmap.folio_add_new_anon_rmap(mm, vma, va, !others).ok() } else { None };
        if let Some(me) = s.mms.get_mut(&mm) {
            me.swapents = me.swapents.saturating_sub(1);
        }
        PAGES.with(|p| {
            if let (Some(m), Some(x)) = (m, p.ext.get_mut(pfn as usize)) {
                x.set_anon(m);
            }
            if major {
                if others && s.areas.swapcache_prepare(e).is_ok() {
                    s.cache[e.offset as usize] = pfn as u32 + 1;
                    p.ext[pfn as usize].set_swap_entry(Some(e));
                    let _ = p.buddy.get_page(pfn);
                }
                add_anon(p, pfn, None, Some((shadow, swap_on)));
            } else {
                // The new mapping's reference (the cache keeps its own).
                let _ = p.buddy.get_page(pfn);
            }
            s.free_swap_and_cache(p, e);
            p.buddy.page(pfn).is_some_and(|pg| pg.refcount == 1)
        })
    });
    if major {
        vmstat::count(Event::PgMajFault, 1);
    }
    Ok(Some(Swapin { pa, exclusive, major }))
}

/// Reads slot `e` into a new page, and the allocated, uncached slots after
/// it (up to [`PAGE_CLUSTER`] in all) into pages that join the swap cache
/// and the LRU unmapped, all in one device submission. The page for `e`
/// (not cached: the caller decides), or None if the PTE changed while
/// allocating.
fn read_in(e: SwpEntry, gfp: super::GfpMask, still_there: &impl Fn() -> bool) -> Result<Option<u64>, SwapinError> {
    let pfn = super::page_alloc::alloc_pages(0, gfp).map_err(|_| SwapinError::NoMemory)?;
    if !still_there() {
        PAGES.with(|p| put_user_page(p, pfn));
        return Ok(None);
    }
    // Claim the neighbours' cache places (so nothing else reads them in),
    // then their pages: best effort, no reclaim for readahead.
    let mut ra: Vec<(SwpEntry, u64)> = Vec::new();
    let claimed: Vec<SwpEntry> = SWAP.with(|s| {
        let end = (e.offset + PAGE_CLUSTER).min(s.cache.len() as u64);
        (e.offset + 1..end)
            .map(|o| SwpEntry { ty: e.ty, offset: o })
            .filter(|&n| s.areas.swap_count(n).is_ok_and(|c| c > 0) && s.areas.swapcache_prepare(n).is_ok())
            .collect()
    });
    // On the policy's nodes too.
    let ra_gfp = super::GfpMask {
        gfp: super::GFP_KERNEL.gfp.on_nodes(gfp.gfp.nid, gfp.gfp.nodemask),
        flags: super::page_alloc::gfp::KSWAPD_RECLAIM,
    };
    let mut unclaim = Vec::new();
    for n in claimed {
        match super::page_alloc::alloc_pages(0, ra_gfp) {
            Ok(p) if unclaim.is_empty() => ra.push((n, p)),
            Ok(p) => {
                PAGES.with(|pa| put_user_page(pa, p));
                unclaim.push(n);
            }
            Err(_) => unclaim.push(n),
        }
    }
    let pages: Vec<u64> = core::iter::once(pfn).chain(ra.iter().map(|&(_, p)| p)).map(|p| p << PAGE_SHIFT).collect();
    let slots: Vec<SwpEntry> = core::iter::once(e).chain(ra.iter().map(|&(n, _)| n)).collect();
    let status = slot_io(false, &slots, &pages);
    let sums: Vec<u64> = pages
        .iter()
        .zip(status.iter())
        .map(|(&pa, &st)| if st == blk::S_OK { frame_checksum(pa) } else { 0 })
        .collect();
    SWAP.with(|s| {
        check_sums(s, &slots, &status, &sums);
        PAGES.with(|p| {
            for n in &unclaim {
                let _ = s.areas.swapcache_free(*n);
            }
            add_read_ahead(s, p, &ra, &status[1..]);
            if status[0] != blk::S_OK {
                s.stat.read_errors += 1;
                put_user_page(p, pfn);
            } else {
                let _ = p.buddy.set_owner(pfn, mm_core::buddy::PageOwner::UserAnon);
                super::memcg::charge(&mut p.buddy, pfn, super::memcg::ChargeKind::Anon);
            }
        });
    });
    vmstat::count(Event::PswpIn, status.iter().filter(|&&st| st == blk::S_OK).count() as u64);
    if status[0] != blk::S_OK {
        return Err(SwapinError::Io);
    }
    Ok(Some(pfn))
}

/// Compares each slot read (`status` OK) with the checksum of what was
/// written there, counting and logging a mismatch.
fn check_sums(s: &mut SwapState, slots: &[SwpEntry], status: &[u8], sums: &[u64]) {
    for (i, n) in slots.iter().enumerate() {
        let want = s.sums.get(n.offset as usize).copied().unwrap_or(0);
        if status[i] == blk::S_OK && want != 0 && want != sums[i] {
            s.stat.checksum_errors += 1;
            crate::kprintln!(
                "swap: slot {:#x} read back with checksum {:#x}, {:#x} was written",
                n.offset,
                sums[i],
                want
            );
        }
    }
}

/// Puts pages read ahead (slot, pfn; the slots claimed with
/// `swapcache_prepare`) into the swap cache and on the LRU, unmapped;
/// a failed read (`status`) gives the page and the claim back, and a
/// slot no PTE names any more (it went while we read) drops its page.
fn add_read_ahead(s: &mut SwapState, p: &mut super::PageAlloc, ra: &[(SwpEntry, u64)], status: &[u8]) {
    let swap_on = swap_on(s);
    for (i, &(n, rpfn)) in ra.iter().enumerate() {
        if status[i] != blk::S_OK {
            s.stat.read_errors += 1;
            let _ = s.areas.swapcache_free(n);
            put_user_page(p, rpfn);
            continue;
        }
        let _ = p.buddy.set_owner(rpfn, mm_core::buddy::PageOwner::UserAnon);
        super::memcg::charge(&mut p.buddy, rpfn, super::memcg::ChargeKind::Anon);
        s.set_cache(n, Some(rpfn));
        p.ext[rpfn as usize].set_swap_entry(Some(n));
        let shadow = Shadow(s.shadow.get(n.offset as usize).copied().unwrap_or(0));
        add_anon(p, rpfn, None, Some((shadow, swap_on)));
        // A PTE may have gone while we read: then nobody wants it.
        if s.areas.swap_count(n).unwrap_or(0) == 0 {
            s.delete_from_swap_cache(p, n, rpfn);
        }
    }
}

/// MADV_WILLNEED's swap-in (Linux's `swapin_walk_pmd_entry` with
/// `read_swap_cache_async`): the slots `entries` names that are not in
/// the swap cache yet are read into it, in device batches of
/// [`WB_MAX`], without being mapped: the faults that later touch them
/// find them there (minor faults, `swapin_cached`). Best effort: a page
/// that cannot be allocated or read is skipped. Returns the pages read.
pub fn swapin_willneed(entries: &[SwpEntry]) -> u64 {
    let mut read = 0;
    for chunk in entries.chunks(WB_MAX) {
        let claimed: Vec<SwpEntry> = SWAP.with(|s| {
            chunk
                .iter()
                .copied()
                .filter(|&n| {
                    n.ty == 0
                        && (n.offset as usize) < s.cache.len()
                        && s.areas.swap_count(n).is_ok_and(|c| c > 0)
                        && s.areas.swapcache_prepare(n).is_ok()
                })
                .collect()
        });
        let mut ra: Vec<(SwpEntry, u64)> = Vec::new();
        let mut unclaim = Vec::new();
        for n in claimed {
            match super::page_alloc::alloc_pages(0, crate::proc::mempolicy::task_gfp(super::page_alloc::GFP_USER)) {
                Ok(p) => ra.push((n, p)),
                Err(_) => unclaim.push(n),
            }
        }
        if ra.is_empty() && unclaim.is_empty() {
            continue;
        }
        let pages: Vec<u64> = ra.iter().map(|&(_, p)| p << PAGE_SHIFT).collect();
        let slots: Vec<SwpEntry> = ra.iter().map(|&(n, _)| n).collect();
        let status = if slots.is_empty() { Vec::new() } else { slot_io(false, &slots, &pages) };
        let sums: Vec<u64> = pages
            .iter()
            .zip(status.iter())
            .map(|(&pa, &st)| if st == blk::S_OK { frame_checksum(pa) } else { 0 })
            .collect();
        let ok = status.iter().filter(|&&st| st == blk::S_OK).count() as u64;
        SWAP.with(|s| {
            check_sums(s, &slots, &status, &sums);
            PAGES.with(|p| {
                for n in &unclaim {
                    let _ = s.areas.swapcache_free(*n);
                }
                add_read_ahead(s, p, &ra, &status);
            })
        });
        vmstat::count(Event::PswpIn, ok);
        read += ok;
    }
    read
}

/// The page-table side of reclaim's rmap walks: `mm`'s PTE at `va`, if it
/// maps `pfn`.
struct PtEdit<'a> {
    mms: &'a mut BTreeMap<MmId, MmEntry>,
    /// The flushes the changes wait for.
    tlb: &'a mut crate::arch::tlb::TlbBatch,
    /// The entry to leave in unmapped PTEs.
    entry: Option<SwpEntry>,
}

impl PtEdit<'_> {
    fn slot(&self, mm: MmId, va: u64, pfn: u64) -> Option<(mm_core::paging::Slot, Pte, u64)> {
        pte_mapping(self.mms, mm, va, pfn)
    }
}

impl RmapPageTables for PtEdit<'_> {
    fn referenced_one(&mut self, mm: MmId, va: u64, pfn: u64) -> Option<bool> {
        let (slot, pte, pgd) = self.slot(mm, va, pfn)?;
        let young = pte.0 & PteFlags::ACCESSED.0 != 0;
        if young {
            let _ = slot.write(&mut direct_map(), Pte(pte.0 & !PteFlags::ACCESSED.0));
            // Flushed with the batch (Linux's x86 does not flush for this
            // at all: a stale entry only delays the next accessed bit).
            self.tlb.add(pgd, va, false);
        }
        Some(young)
    }

    fn unmap_one(&mut self, mm: MmId, va: u64, pfn: u64) -> bool {
        let Some((slot, pte, pgd)) = self.slot(mm, va, pfn) else { return false };
        let Some(e) = self.entry.and_then(SwapEntry::from_swp) else { return false };
        // Keep the PTE's soft bits Linux keeps (none of ours matter), and
        // the user's rights are the VMA's again at swap-in. The flush
        // waits for the batch's (TTU_BATCH_FLUSH): the page is written
        // and freed only after it (`flush_writeback`); `noflush=reclaim`
        // (mm/tlbtrace.rs) drops it.
        if crate::mm::tlbtrace::deferred(|| slot.write(&mut direct_map(), e.to_pte(0))).is_err() {
            return false;
        }
        self.tlb.add(pgd, va, pte_dirty(pte));
        if let Some(m) = self.mms.get_mut(&mm) {
            m.swapents += 1;
            m.rss_out += 1;
        }
        true
    }
}

/// Whether a CPU may write the page through a cached copy of `pte`
/// without touching the PTE: writable and dirty (a clean entry must set
/// the dirty bit first, which walks the changed tables and faults).
fn pte_dirty(pte: Pte) -> bool {
    pte.0 & (PteFlags::RW.0 | PteFlags::DIRTY.0) == PteFlags::RW.0 | PteFlags::DIRTY.0
}

/// Reclaim's `ReclaimOps` for the guest: the lruvec is borrowed from the
/// page allocator beside this, which holds the rest of it.
pub struct Reclaimer<'a> {
    /// The reclaim state (held).
    pub s: &'a mut SwapState,
    /// The buddy allocator (of the held page allocator).
    pub buddy: &'a mut mm_core::buddy::BuddyAllocator<'static>,
    /// The page_ext array.
    pub ext: &'a mut [mm_core::page_ext::PageExt],
}

impl Reclaimer<'_> {
    /// Frees `pfn`, never mapped and in the swap cache for `e` whose
    /// slot holds its contents: no write needed (`__remove_mapping` of a
    /// clean page). No PTE changed, so no flush to wait for.
    fn drop_clean(&mut self, pfn: u64, e: SwpEntry, shadow: Shadow) -> ReclaimOutcome {
        self.s.stat.clean_reclaims += 1;
        evict(self.s, self.buddy, self.ext, pfn, e, shadow);
        ReclaimOutcome::Freed { io: false }
    }

    /// Queues `pfn` for [`flush_writeback`], which frees it (`kind`
    /// `Clean`, `Lazy`) or writes then frees it (`Write`) after the
    /// batch's TLB flush. The caller made room.
    fn queue(&mut self, pfn: u64, kind: WbKind, e: SwpEntry, shadow: Shadow, file: Option<(u32, u64)>) {
        self.s.wb[self.s.wb_len] = Some(Writeback { pfn, kind, e, shadow, file });
        self.s.wb_len += 1;
    }
}

impl Reclaimer<'_> {
    /// `shrink_folio_list` for a page of the page cache, unmapped
    /// (folio_referenced kept mapped ones): a clean file's page is
    /// dropped (queued: [`flush_writeback`] takes it out of the cache); a
    /// tmpfs page (swap-backed, `anon`) goes to the swap cache and is
    /// written (`shmem_writepage`), then its index takes the slot.
    fn reclaim_cache_page(&mut self, pfn: u64, anon: bool, ino: u32, index: u64, shadow: Shadow) -> ReclaimOutcome {
        let cached = self.ext.get(pfn as usize).and_then(|x| x.swap_entry());
        let refs = self.buddy.page(pfn).map_or(0, |pg| pg.refcount);
        if refs != 1 + cached.is_some() as u32 {
            return ReclaimOutcome::Activate;
        }
        if !anon {
            if self.s.drops.len() >= WB_MAX {
                return ReclaimOutcome::Keep;
            }
            self.s.drops.push((pfn, ino, index));
            return ReclaimOutcome::Freed { io: false };
        }
        if cached.is_none() && !swap_on(self.s) {
            return ReclaimOutcome::Activate;
        }
        if self.s.wb_len == WB_MAX {
            return ReclaimOutcome::Keep;
        }
        let e = match cached {
            Some(e) => e,
            None => match self.s.areas.get_swap_page() {
                Ok(e) if (e.offset as usize) < self.s.cache.len() && e.ty == 0 => e,
                Ok(e) => {
                    let _ = self.s.areas.swapcache_free(e);
                    return ReclaimOutcome::Activate;
                }
                Err(_) => return ReclaimOutcome::Activate,
            },
        };
        if cached.is_none() {
            self.s.set_cache(e, Some(pfn));
            self.ext[pfn as usize].set_swap_entry(Some(e));
            let _ = self.buddy.get_page(pfn);
        }
        self.queue(pfn, WbKind::Write, e, shadow, Some((ino, index)));
        ReclaimOutcome::Freed { io: true }
    }
}

impl Reclaimer<'_> {
    /// `try_to_unmap_one` for a lazily freed anon page (MADV_FREE,
    /// proc/mman.rs): if no PTE mapping it was written since (dirty bit
    /// clear) and nothing pins it, every PTE is cleared (not made a swap
    /// entry: the next touch faults in a zero page) and the page is freed
    /// with no I/O (`pglazyfreed`). A dirty PTE, or one that turns dirty
    /// while it is being cleared, makes it swap-backed again
    /// ([`ReclaimOutcome::Redirtied`]), its data kept.
    fn reclaim_lazyfree(&mut self, pfn: u64, m: AnonMapping) -> ReclaimOutcome {
        if self.ext[pfn as usize].swap_entry().is_some() {
            // MADV_FREE skips swap-cache pages; one that got there since
            // is an ordinary anon page again.
            return ReclaimOutcome::Redirtied;
        }
        let mapped = self.s.mapcount(m, pfn);
        let refs = self.buddy.page(pfn).map_or(0, |pg| pg.refcount);
        if refs != mapped || mapped == 0 {
            return ReclaimOutcome::Keep; // pinned (a fault in progress)
        }
        // The freed page waits in the writeback batch for the flush.
        if self.s.wb_len == WB_MAX {
            return ReclaimOutcome::Keep;
        }
        let mut pt = LazyUnmap { mms: &mut self.s.mms, tlb: &mut self.s.tlb, dirty: false };
        let n = self.s.rmap.try_to_unmap(m, pfn, &mut pt);
        let dirty = pt.dirty;
        // The references of the PTEs cleared; the last one frees the page
        // unless a dirty PTE still maps it, after the batch's flush.
        let freed = !dirty && n == mapped;
        if freed {
            self.ext[pfn as usize] = mm_core::page_ext::PageExt::EMPTY;
        }
        for _ in 0..n - freed as u32 {
            put_ref(self.buddy, pfn);
        }
        if !freed {
            return ReclaimOutcome::Redirtied;
        }
        self.queue(pfn, WbKind::Lazy, SwpEntry { ty: 0, offset: 0 }, Shadow(0), None);
        super::vmstat::PGLAZYFREED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        ReclaimOutcome::Freed { io: false }
    }
}

/// The rmap walk's page-table side for a lazily freed page: clears each
/// clean PTE mapping it; stops at a dirty one.
struct LazyUnmap<'a> {
    mms: &'a mut BTreeMap<MmId, MmEntry>,
    /// The flushes the changes wait for.
    tlb: &'a mut crate::arch::tlb::TlbBatch,
    /// A PTE was dirty (written since MADV_FREE).
    dirty: bool,
}

impl RmapPageTables for LazyUnmap<'_> {
    fn referenced_one(&mut self, _mm: MmId, _va: u64, _pfn: u64) -> Option<bool> {
        None
    }

    fn unmap_one(&mut self, mm: MmId, va: u64, pfn: u64) -> bool {
        if self.dirty {
            return false;
        }
        let Some((slot, pte, pgd)) = pte_mapping(self.mms, mm, va, pfn) else { return false };
        if pte.0 & PteFlags::DIRTY.0 != 0 || !pte_clear_if(&slot, pte) {
            self.dirty = true;
            return false;
        }
        // Clean: no CPU can write the page through a cached copy (it must
        // set the dirty bit, walking the cleared PTE), so the flush waits
        // for the batch's, before the page is freed.
        self.tlb.add(pgd, va, false);
        if let Some(m) = self.mms.get_mut(&mm) {
            m.rss_out += 1;
        }
        true
    }
}

/// Clears `bits` (the dirty and accessed bits) in the PTE in `slot` with
/// a locked compare-and-exchange loop, so a bit a CPU sets meanwhile is
/// not lost to a plain read-modify-write (Linux's
/// `ptep_get_and_clear_full` then `set_pte_at`). The caller flushes the
/// TLB entry.
pub fn pte_clear_bits(slot: &mm_core::paging::Slot, bits: u64) {
    let va = super::layout::PAGE_OFFSET + slot.entry_pa().0;
    // SAFETY: as in `pte_clear_if`: an aligned page-table word in the
    // direct map, written elsewhere only with 8-byte stores.
    let word = unsafe { &*(va as *const core::sync::atomic::AtomicU64) };
    let _ = word.fetch_and(!bits, core::sync::atomic::Ordering::SeqCst);
}

/// Clears the PTE in `slot` if it still holds `old`, in one locked
/// compare-and-exchange (Linux's `ptep_get_and_clear` then the dirty
/// check): a CPU that sets the dirty bit meanwhile, writing through a
/// stale TLB entry on another CPU, makes it fail rather than lose the
/// write. False if the entry changed.
fn pte_clear_if(slot: &mm_core::paging::Slot, old: Pte) -> bool {
    let va = super::layout::PAGE_OFFSET + slot.entry_pa().0;
    // SAFETY: page-table pages lie in the direct map (PAGE_OFFSET, never
    // unmapped), an entry is 8-byte aligned, and PTEs are written only
    // with 8-byte stores, so an atomic view of the word is sound.
    let word = unsafe { &*(va as *const core::sync::atomic::AtomicU64) };
    word.compare_exchange(old.0, 0, core::sync::atomic::Ordering::SeqCst, core::sync::atomic::Ordering::SeqCst).is_ok()
}

impl mm_core::lru::ReclaimOps for Reclaimer<'_> {
    fn folio_referenced(&mut self, pfn: u64) -> mm_core::lru::Referenced {
        if self.ext.get(pfn as usize).and_then(|x| x.file()).is_some() {
            // A page-cache page: without a file rmap its mappings cannot
            // be walked; a reference beyond the cache's (and the swap
            // cache's) is a mapping or a pin, counted as one referenced PTE
            // (reclaim keeps it). Accesses through read()/write() mark it
            // on the LRU itself (pagecache.rs `mark_accessed`).
            let cached = self.ext[pfn as usize].swap_entry().is_some() as u32;
            let refs = self.buddy.page(pfn).map_or(0, |pg| pg.refcount);
            return mm_core::lru::Referenced { ptes: (refs > 1 + cached) as u32, ..Default::default() };
        }
        let Some(m) = self.ext.get(pfn as usize).and_then(|x| x.anon()) else {
            // No rmap record: read ahead into the swap cache and never
            // mapped (reclaimable at no cost), or unknown (kept).
            let cached = self.ext.get(pfn as usize).is_some_and(|x| x.swap_entry().is_some());
            return mm_core::lru::Referenced { ptes: (!cached) as u32, ..Default::default() };
        };
        let mut pt = PtEdit { mms: &mut self.s.mms, tlb: &mut self.s.tlb, entry: None };
        let r = self.s.rmap.folio_referenced(m, pfn, &mut pt);
        mm_core::lru::Referenced { ptes: r.referenced, ..Default::default() }
    }

    fn reclaim_folio(&mut self, pfn: u64, anon: bool, shadow: Shadow, _clean_only: bool) -> ReclaimOutcome {
        if let Some((ino, index)) = self.ext.get(pfn as usize).and_then(|x| x.file()) {
            return self.reclaim_cache_page(pfn, anon, ino, index, shadow);
        }
        if !anon {
            // Not swap-backed but with an anon rmap record: MADV_FREE's
            // lazily freed page.
            return match self.ext.get(pfn as usize).and_then(|x| x.anon()) {
                Some(m) => self.reclaim_lazyfree(pfn, m),
                None => ReclaimOutcome::Activate,
            };
        }
        let cached = self.ext.get(pfn as usize).and_then(|x| x.swap_entry());
        let Some(m) = self.ext.get(pfn as usize).and_then(|x| x.anon()) else {
            // Read ahead, never mapped: only the swap cache holds it.
            return match cached {
                Some(e) if self.buddy.page(pfn).is_some_and(|pg| pg.refcount == 1) => self.drop_clean(pfn, e, shadow),
                _ => ReclaimOutcome::Activate,
            };
        };
        if cached.is_none() && !swap_on(self.s) {
            return ReclaimOutcome::Activate;
        }
        // Room in the writeback batch for a page that may need writing.
        if self.s.wb_len == WB_MAX {
            return ReclaimOutcome::Keep;
        }
        // A frame of a PMD-mapped huge page: split the PMD first, so the
        // walks below see 4 KiB PTEs (mm/huge_memory.rs).
        super::huge_memory::split_pmd_mappings(self.s, self.buddy, m, pfn);
        // Pinned (a fault in progress holds a reference)? Keep it.
        let mapped = self.s.mapcount(m, pfn);
        let refs = self.buddy.page(pfn).map_or(0, |pg| pg.refcount);
        if refs != mapped + cached.is_some() as u32 {
            return ReclaimOutcome::Keep;
        }
        // add_to_swap: a slot, and the page enters the swap cache.
        let e = match cached {
            Some(e) => e,
            None => match self.s.areas.get_swap_page() {
                Ok(e) if (e.offset as usize) < self.s.cache.len() && e.ty == 0 => e,
                Ok(e) => {
                    let _ = self.s.areas.swapcache_free(e);
                    return ReclaimOutcome::Activate;
                }
                Err(_) => return ReclaimOutcome::Activate,
            },
        };
        if cached.is_none() {
            self.s.set_cache(e, Some(pfn));
            self.ext[pfn as usize].set_swap_entry(Some(e));
            let _ = self.buddy.get_page(pfn);
        }
        // try_to_unmap: every PTE becomes the swap entry (one slot count
        // each) and drops its page reference.
        let mut pt = PtEdit { mms: &mut self.s.mms, tlb: &mut self.s.tlb, entry: Some(e) };
        let n = self.s.rmap.try_to_unmap(m, pfn, &mut pt);
        for _ in 0..n {
            let _ = self.s.areas.swap_duplicate(e);
            put_ref(self.buddy, pfn);
        }
        if self.buddy.page(pfn).map_or(0, |pg| pg.refcount) != 1 {
            // Still mapped somewhere the walk did not reach: leave it in
            // the swap cache, resident; faults on the entries find it.
            return ReclaimOutcome::Keep;
        }
        // Clean if the slot holds its contents already (module docs); a
        // page whose write failed is in the cache unwritten: write again.
        let written = cached.is_some_and(|e| self.s.sums.get(e.offset as usize).is_some_and(|&x| x != 0));
        if written {
            // Freed by `flush_writeback` after the batch's flush.
            self.s.stat.clean_reclaims += 1;
            self.queue(pfn, WbKind::Clean, e, shadow, None);
            return ReclaimOutcome::Freed { io: false };
        }
        // pageout: queued; written and freed by `flush_writeback`.
        self.queue(pfn, WbKind::Write, e, shadow, None);
        ReclaimOutcome::Freed { io: true }
    }
}

/// The end of a page's eviction: unmapped, its contents in slot `e`, it
/// leaves the swap cache (its workingset shadow stays in the slot) and
/// goes back to the buddy allocator (Linux's `__remove_mapping`).
fn evict(
    s: &mut SwapState,
    buddy: &mut mm_core::buddy::BuddyAllocator<'static>,
    ext: &mut [mm_core::page_ext::PageExt],
    pfn: u64,
    e: SwpEntry,
    shadow: Shadow,
) {
    if let Some(sh) = s.shadow.get_mut(e.offset as usize) {
        *sh = shadow.0;
    }
    let _ = s.areas.swapcache_free(e);
    crate::mm::tlbtrace::free(pfn, 0);
    s.set_cache(e, None);
    ext[pfn as usize] = mm_core::page_ext::PageExt::EMPTY;
    let _ = buddy.free_pages(crate::arch::percpu::this_cpu().id, pfn, 0);
}

/// Reads or writes page `pages[i]` (a physical address) at slot
/// `slots[i]`, all in one device submission; each request's status
/// (`blk::S_OK`, the device's error, or 0xff if the device failed before
/// answering it).
fn slot_io(write: bool, slots: &[SwpEntry], pages: &[u64]) -> Vec<u8> {
    let reqs: Vec<blk::Request<'_>> = slots
        .iter()
        .zip(pages)
        .map(|(n, pa)| blk::Request {
            write,
            sector: n.offset * blk::SECTORS_PER_PAGE,
            pages: core::slice::from_ref(pa),
        })
        .collect();
    let mut status = vec![0xffu8; reqs.len()];
    let _ = blk::submit(&reqs, &mut status);
    status
}

/// Writes the batch reclaim queued (one device submission: the driver
/// notifies once per queue-full) and frees the pages written and the
/// unmapped clean ones; a page whose
/// write failed stays in the swap cache, resident and back on the active
/// list, so nothing is lost (its PTEs are swap entries; a fault finds it
/// in the cache). Called with `SWAP` held and `PAGES` not. Pages freed.
///
/// The TLB flush of the batch's PTE changes comes first (Linux's
/// `try_to_unmap_flush_dirty` before `pageout`, `try_to_unmap_flush`
/// before the frees): a CPU may still write a dirty page through its TLB
/// until then, and no frame may be reused while a CPU may translate to
/// it. Every pass of reclaim ends here, so no change stays unflushed
/// once `SWAP` is released.
pub fn flush_writeback(s: &mut SwapState) -> u64 {
    let n = core::mem::take(&mut s.wb_len);
    let batch: Vec<Writeback> = s.wb[..n].iter_mut().filter_map(Option::take).collect();
    s.tlb.flush_dirty();
    let dropped = finish_drops(s);
    let (batch, rest): (Vec<Writeback>, Vec<Writeback>) = batch.into_iter().partition(|w| w.kind == WbKind::Write);
    let freed_clean = free_unmapped(s, &rest);
    if batch.is_empty() {
        s.tlb.flush();
        return dropped + freed_clean;
    }
    let pages: Vec<u64> = batch.iter().map(|w| w.pfn << PAGE_SHIFT).collect();
    for (w, &pa) in batch.iter().zip(&pages) {
        if let Some(x) = s.sums.get_mut(w.e.offset as usize) {
            *x = frame_checksum(pa);
        }
    }
    let slots: Vec<SwpEntry> = batch.iter().map(|w| w.e).collect();
    let status = slot_io(true, &slots, &pages);
    s.stat.write_batches += 1;
    // Before the frees (a no-op after `flush_dirty` flushed).
    s.tlb.flush();
    // A tmpfs page written: its file's index takes the slot (one count of
    // it) if it still holds the page; else it stays resident, out of the
    // swap cache. Decided before the page allocator is taken (the file
    // table's lock ranks outside it).
    let swapped: Vec<bool> = batch
        .iter()
        .zip(status.iter())
        .map(|(w, &st)| match w.file {
            Some((ino, index)) if st == blk::S_OK => {
                crate::fs::pagecache::reclaim_swapped(ino as usize, index, w.pfn << PAGE_SHIFT, w.e)
            }
            _ => false,
        })
        .collect();
    let mut freed = 0;
    PAGES.with(|p| {
        for ((w, &st), &swapped) in batch.iter().zip(status.iter()).zip(swapped.iter()) {
            if st == blk::S_OK && w.file.is_some() && !swapped {
                // The file changed meanwhile: keep the page, as it was
                // (unless the swap cache held its last reference).
                s.delete_from_swap_cache(p, w.e, w.pfn);
                if p.buddy.page(w.pfn).is_some_and(|pg| pg.refcount > 0) {
                    let _ = p.lru_add(w.pfn, true);
                }
                continue;
            }
            if st == blk::S_OK {
                if w.file.is_some() {
                    let _ = s.areas.swap_duplicate(w.e);
                    s.set_file_ref(w.e, true);
                    // The page cache's reference (evict drops the swap
                    // cache's).
                    let _ = p.buddy.free_pages(crate::arch::percpu::this_cpu().id, w.pfn, 0);
                }
                evict(s, &mut p.buddy, p.ext, w.pfn, w.e, w.shadow);
                freed += 1;
            } else {
                s.stat.write_errors += 1;
                if let Some(x) = s.sums.get_mut(w.e.offset as usize) {
                    *x = 0;
                }
                let _ = p.lru_add(w.pfn, true);
                let _ = p.lru.mark_page_accessed(w.pfn);
                let _ = p.lru.mark_page_accessed(w.pfn);
            }
        }
    });
    vmstat::count(Event::PswpOut, freed);
    freed + dropped + freed_clean
}

/// Frees the queued pages that need no write (`Clean`, `Lazy`), after the
/// batch's TLB flush. Pages freed.
fn free_unmapped(s: &mut SwapState, queued: &[Writeback]) -> u64 {
    if queued.is_empty() {
        return 0;
    }
    s.tlb.flush();
    PAGES.with(|p| {
        for w in queued {
            match w.kind {
                WbKind::Clean => evict(s, &mut p.buddy, p.ext, w.pfn, w.e, w.shadow),
                // The last reference (reclaim_lazyfree dropped the rest).
                _ => put_ref(&mut p.buddy, w.pfn),
            }
        }
    });
    queued.len() as u64
}

/// The clean page-cache pages reclaim chose leave the cache and are freed
/// if still unused (pagecache.rs `reclaim_remove`); the others go back to
/// the LRU. With `SWAP` held and `PAGES` not. Pages freed.
fn finish_drops(s: &mut SwapState) -> u64 {
    let drops = core::mem::take(&mut s.drops);
    let mut freed = 0;
    for &(pfn, ino, index) in &drops {
        let gone = crate::fs::pagecache::reclaim_remove(ino as usize, index, pfn << PAGE_SHIFT);
        PAGES.with(|p| {
            if gone {
                put_user_page(p, pfn);
            } else {
                let _ = p.lru_add(pfn, false);
            }
        });
        freed += gone as u64;
    }
    s.drops = drops;
    s.drops.clear();
    freed
}

/// Frees the slots of tmpfs pages in swap whose file let go of them
/// (truncate, unlink: Linux's `shmem_free_swap`).
pub fn shmem_free_swap(slots: &[SwpEntry]) {
    SWAP.with(|s| {
        PAGES.with(|p| {
            for &e in slots {
                s.set_file_ref(e, false);
                s.free_swap_and_cache(p, e);
            }
        })
    })
}

/// Reads tmpfs page `index` of file `ino` back from slot `e` (Linux's
/// `shmem_swapin_folio`): from the swap cache if readahead brought it
/// in, else from the device into a new page; the page joins the page
/// cache (owned `PageCache`, on the anon LRU as a refault) and the slot is
/// freed. Ok(None) if the file's index no longer names `e` (look again).
pub fn shmem_swapin(ino: usize, index: u64, e: SwpEntry) -> Result<Option<u64>, SwapinError> {
    let gfp = crate::proc::mempolicy::task_gfp(super::page_alloc::GFP_USER);
    let pfn = super::page_alloc::alloc_pages(0, gfp).map_err(|_| SwapinError::NoMemory)?;
    let give_back = |pfn: u64| PAGES.with(|p| put_user_page(p, pfn));
    let got = SWAP.with(|s| {
        if !crate::fs::pagecache::still_swapped(ino, index, e) {
            return Ok(None);
        }
        s.areas.usage(e).map_err(|_| SwapinError::BadEntry)?;
        let (page, read) = match s.cache_lookup(e) {
            Some(c) => {
                s.stat.cache_hits += 1;
                (c, false)
            }
            None => {
                let status = slot_io(false, &[e], &[pfn << PAGE_SHIFT]);
                if status[0] != blk::S_OK {
                    s.stat.read_errors += 1;
                    return Err(SwapinError::Io);
                }
                let want = s.sums.get(e.offset as usize).copied().unwrap_or(0);
                let got = frame_checksum(pfn << PAGE_SHIFT);
                if want != 0 && want != got {
                    s.stat.checksum_errors += 1;
                    crate::kprintln!(
                        "swap: slot {:#x} read back with checksum {:#x}, {:#x} was written",
                        e.offset,
                        got,
                        want
                    );
                }
                (pfn, true)
            }
        };
        let swap_on = swap_on(s);
        let shadow = Shadow(s.shadow.get(e.offset as usize).copied().unwrap_or(0));
        if !crate::fs::pagecache::swapin_done(ino, index, e, page << PAGE_SHIFT) {
            return Ok(None);
        }
        PAGES.with(|p| {
            let _ = p.buddy.set_owner(page, mm_core::buddy::PageOwner::PageCache);
            super::memcg::charge(&mut p.buddy, page, super::memcg::ChargeKind::File);
            if read {
                // The file's index holds the new page's one reference.
                add_anon(p, page, None, Some((shadow, swap_on)));
            } else {
                // Readahead's page: the swap cache's reference becomes the
                // page cache's; it is on the anon LRU already.
                let _ = s.areas.swapcache_free(e);
                s.set_cache(e, None);
            }
            if let Some(x) = p.ext.get_mut(page as usize) {
                *x = mm_core::page_ext::PageExt::EMPTY;
                x.set_file(ino as u32, index);
            }
        });
        // The file's count of the slot.
        let _ = s.areas.swap_free(e);
        s.set_file_ref(e, false);
        Ok(Some((page, read)))
    });
    match got {
        Ok(Some((page, read))) => {
            if !read {
                give_back(pfn);
            } else {
                vmstat::count(Event::PswpIn, 1);
            }
            Ok(Some(page << PAGE_SHIFT))
        }
        Ok(None) => {
            give_back(pfn);
            Ok(None)
        }
        Err(err) => {
            give_back(pfn);
            Err(err)
        }
    }
}

/// `fork`'s part: the child's anon ranges link the parent's anon_vmas.
pub fn fork_mm(parent: MmId, child: MmId) {
    SWAP.with(|s| {
        if let Err(e) = s.rmap.anon_vma_fork(parent, child) {
            crate::kprintln!("anon_vma_fork: {}", e);
        }
    })
}

/// Swap totals in pages, for meminfo and free.
#[derive(Clone, Copy, Default)]
pub struct Totals {
    /// Slots usable for pages (`SwapTotal`).
    pub total: u64,
    /// Slots free (`SwapFree`).
    pub free: u64,
    /// Pages in the swap cache (`SwapCached`).
    pub cached: u64,
}

/// The swap totals.
pub fn totals() -> Totals {
    SWAP.try_with(|s| Totals {
        total: s.areas.total_swap_pages(),
        free: s.areas.nr_swap_pages(),
        cached: s.cache.iter().filter(|&&c| c != 0).count() as u64,
    })
    .unwrap_or_default()
}

/// Sets `vm.swappiness` (0..=200).
pub fn set_swappiness(v: u32) {
    SWAP.with(|s| s.swappiness = v.min(mm_core::lru::MAX_SWAPPINESS));
}

/// /proc/swaps, and this kernel's swap counters.
pub fn print_swaps() {
    let Some((stat, blk_stats)) = SWAP.try_with(|s| (s.stat, blk::stats())) else {
        return;
    };
    let mut text = alloc::string::String::new();
    swaps_to(&mut text);
    for line in text.lines() {
        crate::kprintln!("{}", line);
    }
    crate::kprintln!(
        "swap: cache_hits {} clean_reclaims {} write_batches {} write_errors {} read_errors {} checksum_errors {} device_requests {} device_notifies {}",
        crate::fmt::Dec(stat.cache_hits),
        crate::fmt::Dec(stat.clean_reclaims),
        crate::fmt::Dec(stat.write_batches),
        crate::fmt::Dec(stat.write_errors),
        crate::fmt::Dec(stat.read_errors),
        crate::fmt::Dec(stat.checksum_errors),
        crate::fmt::Dec(blk_stats.requests),
        crate::fmt::Dec(blk_stats.notifies)
    );
}

/// /proc/swaps (Linux's `swap_show`): a header, then each swap area's
/// size and use in KiB and its priority, to `w`.
pub fn swaps_to(w: &mut dyn core::fmt::Write) {
    let Some(areas) = SWAP.try_with(|s| {
        s.areas.areas().map(|(_, a)| (a.pages(), a.inuse_pages(), a.prio)).collect::<Vec<(u64, u64, i16)>>()
    }) else {
        return;
    };
    let _ = writeln!(w, "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority");
    for (pages, inuse, prio) in areas {
        let _ = writeln!(
            w,
            "/dev/vda                                partition\t{}\t\t{}\t\t{}",
            crate::fmt::Dec(pages * 4),
            crate::fmt::Dec(inuse * 4),
            crate::mm::oom_kill::SDec(prio as i64)
        );
    }
}

/// The descriptor's swap section: where the host finds the swap map, the
/// per-slot records, the LRU links and the page_ext array. Marked
/// inconsistent if reclaim's state or the page allocator is held (the
/// refresh interrupted a change).
pub fn describe() -> mm_core::descriptor::SwapDesc {
    use mm_core::abi::layout::{LRUMAP_START, PAGE_EXT_START};
    let mut d =
        mm_core::descriptor::SwapDesc { lru_va: LRUMAP_START, page_ext_va: PAGE_EXT_START, ..Default::default() };
    let got = SWAP.try_with(|s| {
        d.swappiness = s.swappiness;
        if let Ok(a) = s.areas.area(0) {
            d.nr_slots = a.swap_map().len() as u64;
            d.swap_map_va = a.swap_map().as_ptr() as u64;
            d.sums_va = s.sums.as_ptr() as u64;
            d.cache_va = s.cache.as_ptr() as u64;
            d.file_refs_va = s.file_refs.as_ptr() as u64;
        }
        PAGES
            .try_with(|p| {
                for (i, l) in mm_core::lru::LruList::ALL.iter().enumerate() {
                    d.lru_nr[i] = p.lru.total(*l);
                }
            })
            .is_some()
            && s.wb_len == 0
            && s.drops.is_empty()
    });
    d.consistent = got.unwrap_or(false) as u32;
    d
}
