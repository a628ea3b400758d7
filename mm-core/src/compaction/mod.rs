//! Memory compaction (Linux's `mm/compaction.c`): moves movable pages out
//! of the low end of a zone into free pages at the high end, so the free
//! memory left behind merges into large blocks (2 MiB pages for THP and
//! hugetlb).
//!
//! Two scanners walk the zone pageblock by pageblock: the migrate scanner
//! up from the zone's start, isolating in-use movable pages
//! (`isolate_migratepages`), and the free scanner down from the zone's end,
//! isolating free pages of movable pageblocks as migration targets
//! (`isolate_freepages`). A run ends when they meet or, for a request of an
//! order, as soon as a suitable free block exists (`compact_finished`).
//!
//! Moving a page (unmap through the reverse map, copy, remap) belongs to
//! the caller: [`Migrator`]. The buddy only hands the page's identity to
//! its new frame and frees the old one. [`CompactControl`] exposes the run
//! as steps that each need the allocator only briefly, so a kernel can drop
//! its zone lock around the migrations (which take mm locks that rank
//! outside it); [`compact_zone`] drives the steps for callers that can hold
//! everything at once.

use crate::buddy::{
    BlockState, BuddyAllocator, BuddyError, MigrateType, Watermark, ZoneId, NR_ORDERS, PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER, PAGE_ALLOC_COSTLY_ORDER,
};
use alloc::vec::Vec;

pub mod sim;

/// Pages isolated by one migrate-scanner step (Linux's
/// `COMPACT_CLUSTER_MAX`).
pub const COMPACT_CLUSTER_MAX: usize = 32;

/// Linux's `sysctl_extfrag_threshold` default: a costly request whose zone
/// has a fragmentation index at or below this fails for lack of memory,
/// not fragmentation, so compaction would not help.
pub const EXTFRAG_THRESHOLD: i64 = 500;

/// Why a page could not be migrated (the source stays where it was, mapped
/// and intact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateFail {
    /// Extra references or a pin: try again later (`-EAGAIN`).
    Busy,
    /// The page cannot move at all (`-EBUSY`/`-ENOSYS`).
    Unmovable,
}

/// The caller's side of page migration (Linux's `isolate_lru_page`,
/// `migrate_pages` callbacks and `putback_movable_pages`).
pub trait Migrator {
    /// Isolates the allocated order-0 page at `pfn` for migration if it
    /// is movable now (mapped anonymous memory found through the reverse
    /// map, not pinned): takes it off the LRU so nobody else moves or frees
    /// it. False leaves it alone.
    fn isolate(&mut self, pfn: u64) -> bool;

    /// Moves the isolated page `src` to the free frame `dst`: unmaps every
    /// mapping through the reverse map, copies the contents, remaps them to
    /// `dst` (with the TLB flushes that needs). On `Err` everything must be
    /// as before. On `Ok` `dst` has taken `src`'s place (on the LRU too);
    /// the buddy then frees `src`.
    fn migrate(&mut self, src: u64, dst: u64) -> Result<(), MigrateFail>;

    /// Gives back an isolated page that was not migrated (to the LRU).
    fn putback(&mut self, pfn: u64);
}

/// How a compaction run ended, or why it did not run (Linux's `enum
/// compact_result`, the values this model produces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactResult {
    /// The request can already be served: compaction is not needed.
    NotNeeded,
    /// Too little free memory for compaction to find migration targets
    /// (`COMPACT_SKIPPED`): reclaim first.
    Skipped,
    /// The fragmentation index says a failure would be for lack of memory
    /// (`COMPACT_NOT_SUITABLE_ZONE`).
    NotSuitableZone,
    /// A free block of the requested order (of a usable migratetype)
    /// exists now (`COMPACT_SUCCESS`).
    Success,
    /// The scanners met (`COMPACT_COMPLETE`): the whole zone was compacted.
    Complete,
}

/// What a run did (Linux's `compact_*` and `pgmigrate_*` vmstat events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Pages the migrate scanner looked at (`compact_migrate_scanned`).
    pub migrate_scanned: u64,
    /// Pages the free scanner looked at (`compact_free_scanned`).
    pub free_scanned: u64,
    /// Pages isolated by the migrate scanner.
    pub isolated_migrate: u64,
    /// Free pages isolated as targets.
    pub isolated_free: u64,
    /// Pages migrated (`pgmigrate_success`).
    pub migrated: u64,
    /// Migrations that failed (`pgmigrate_fail`).
    pub migrate_failed: u64,
    /// Pageblocks the migrate scanner went through.
    pub migrate_blocks: u64,
    /// Pageblocks the free scanner went through.
    pub free_blocks: u64,
}

impl core::ops::AddAssign for CompactStats {
    fn add_assign(&mut self, o: CompactStats) {
        self.migrate_scanned += o.migrate_scanned;
        self.free_scanned += o.free_scanned;
        self.isolated_migrate += o.isolated_migrate;
        self.isolated_free += o.isolated_free;
        self.migrated += o.migrated;
        self.migrate_failed += o.migrate_failed;
        self.migrate_blocks += o.migrate_blocks;
        self.free_blocks += o.free_blocks;
    }
}

/// Linux's `compaction_suitable` (with `compaction_suit_allocation_order`'s
/// first check): whether compacting zone `z` for an allocation of `order`
/// is worth it. `NotNeeded` when the low watermark is met for the order
/// already; `Skipped` when the zone lacks the order-0 free pages (above
/// the min watermark for cheap orders, low for costly ones, plus
/// `compact_gap` = 2 << order) that migration targets need;
/// `NotSuitableZone` when, for a costly order, the fragmentation index is
/// in `0..=EXTFRAG_THRESHOLD`; else `Success` (go ahead, Linux's
/// `COMPACT_CONTINUE`).
pub fn compaction_suitable(buddy: &BuddyAllocator, z: impl Into<ZoneId>, order: u8) -> CompactResult {
    let z = z.into();
    let zone = buddy.zone(z);
    if !zone.populated() {
        return CompactResult::Skipped;
    }
    if zone.watermark_ok(order, zone.watermark[Watermark::Low as usize]) {
        return CompactResult::NotNeeded;
    }
    let base = if order > PAGE_ALLOC_COSTLY_ORDER {
        zone.watermark[Watermark::Low as usize]
    } else {
        zone.watermark[Watermark::Min as usize]
    };
    if !zone.watermark_ok(0, base + (2u64 << order)) {
        return CompactResult::Skipped;
    }
    if order > PAGE_ALLOC_COSTLY_ORDER {
        let fi = buddy.fragmentation_index(z, order);
        if (0..=EXTFRAG_THRESHOLD).contains(&fi) {
            return CompactResult::NotSuitableZone;
        }
    }
    CompactResult::Success
}

/// One compaction run over one zone (Linux's `struct compact_control`),
/// driven step by step.
#[derive(Debug)]
pub struct CompactControl {
    zone: ZoneId,
    order: Option<u8>,
    migratetype: MigrateType,
    zone_start: u64,
    zone_end: u64,
    /// Next pfn the migrate scanner looks at.
    migrate_pfn: u64,
    /// Start of the pageblock the free scanner looks at next (it moves
    /// down); `None` once it went below the zone.
    free_pfn: Option<u64>,
    /// Isolated free order-0 pages (targets), taken from the end.
    freepages: Vec<u64>,
    /// Isolated movable pages not yet migrated.
    migratepages: Vec<u64>,
    /// What the run did so far.
    pub stats: CompactStats,
}

impl CompactControl {
    /// A run over zone `z`: for an allocation of `order` with `migratetype`
    /// (stops as soon as one could succeed), or with `order` `None` for the
    /// whole zone (Linux's order -1: `/proc/sys/vm/compact_memory`).
    pub fn new(
        buddy: &BuddyAllocator,
        z: impl Into<ZoneId>,
        order: Option<u8>,
        migratetype: MigrateType,
    ) -> CompactControl {
        let z = z.into();
        let zone = buddy.zone(z);
        let (start, end) = if zone.populated() { (zone.start_pfn, zone.end_pfn) } else { (0, 0) };
        CompactControl {
            zone: z,
            order,
            migratetype,
            zone_start: start,
            zone_end: end,
            migrate_pfn: start,
            free_pfn: end.checked_sub(1).map(|last| last & !(PAGEBLOCK_NR_PAGES - 1)),
            freepages: Vec::new(),
            migratepages: Vec::new(),
            stats: CompactStats::default(),
        }
    }

    /// Where the migrate scanner is (next pfn it looks at).
    pub fn migrate_pfn(&self) -> u64 {
        self.migrate_pfn
    }

    /// Where the free scanner is (start of the next pageblock it looks at,
    /// `None` once it left the zone).
    pub fn free_pfn(&self) -> Option<u64> {
        self.free_pfn
    }

    /// Linux's `compact_scanners_met`: the free scanner reached the
    /// migrate scanner's pageblock.
    pub fn scanners_met(&self) -> bool {
        match self.free_pfn {
            None => true,
            Some(f) => f >> PAGEBLOCK_ORDER <= self.migrate_pfn >> PAGEBLOCK_ORDER,
        }
    }

    /// Linux's `__compact_finished`: `Some(Complete)` when the scanners
    /// met; for a run with an order, `Some(Success)` when a free block of
    /// that order or more is on the request's own lists, or on a list it
    /// may steal from as a whole (for a non-movable request, only at a
    /// pageblock boundary of the migrate scanner, so the block being
    /// emptied is finished first); `None` to go on.
    pub fn finished(&self, buddy: &BuddyAllocator) -> Option<CompactResult> {
        if self.scanners_met() {
            return Some(CompactResult::Complete);
        }
        let order = self.order?;
        let mt = if buddy.groups_by_mobility() { self.migratetype } else { MigrateType::Unmovable };
        let zone = buddy.zone(self.zone);
        for o in order as usize..NR_ORDERS {
            if zone.free_area[o].nr_free_mt[mt as usize] > 0 {
                return Some(CompactResult::Success);
            }
            if buddy.groups_by_mobility() && buddy.find_suitable_fallback(self.zone, o as u8, mt, true).is_some() {
                if mt == MigrateType::Movable || self.migrate_pfn & (PAGEBLOCK_NR_PAGES - 1) == 0 {
                    return Some(CompactResult::Success);
                }
                break;
            }
        }
        None
    }

    /// Linux's `isolate_migratepages`: scans on from the migrate scanner's
    /// position, to the end of its pageblock at most, isolating (through
    /// `isolate`) allocated order-0 non-slab pages, up to
    /// `COMPACT_CLUSTER_MAX`. Every call advances the scanner. Returns the
    /// pages isolated by this call ([`migratepages`](Self::migratepages)).
    pub fn isolate_migratepages(&mut self, buddy: &BuddyAllocator, mut isolate: impl FnMut(u64) -> bool) -> usize {
        if self.scanners_met() {
            return 0;
        }
        let block_start = self.migrate_pfn & !(PAGEBLOCK_NR_PAGES - 1);
        let block_end = (block_start + PAGEBLOCK_NR_PAGES).min(self.zone_end);
        let mut pfn = if self.migrate_pfn == block_start {
            self.stats.migrate_blocks += 1;
            buddy.first_head_of_pageblock(block_start)
        } else {
            self.migrate_pfn
        };
        let mut n = 0;
        while pfn < block_end && n < COMPACT_CLUSTER_MAX {
            let st = if pfn < self.zone_start { BlockState::Other } else { buddy.block_at(pfn) };
            let step = match st {
                BlockState::Allocated { order: 0, slab: false, .. } => {
                    if isolate(pfn) {
                        self.migratepages.push(pfn);
                        n += 1;
                    }
                    1
                }
                BlockState::Allocated { order, .. } | BlockState::Free { order, .. } | BlockState::Pcp { order } => {
                    1u64 << order
                }
                BlockState::Other => 1,
            };
            self.stats.migrate_scanned += step.min(block_end - pfn);
            pfn += step;
        }
        self.migrate_pfn = if pfn >= block_end { block_end.max(pfn) } else { pfn };
        self.stats.isolated_migrate += n as u64;
        n
    }

    /// The isolated pages waiting for migration.
    pub fn migratepages(&self) -> &[u64] {
        &self.migratepages
    }

    /// Takes the isolated pages out for migration (each must end in
    /// [`migrated`](Self::migrated) or the caller's putback).
    pub fn take_migratepages(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.migratepages)
    }

    /// Gives the run's buffers room for the most a step holds (one
    /// pageblock's free pages, one cluster), so that a kernel which drives
    /// the steps with its page allocator locked, and whose heap needs that
    /// lock, never allocates inside them. Call it without the lock.
    pub fn reserve_buffers(&mut self) {
        self.freepages.reserve(PAGEBLOCK_NR_PAGES as usize);
        self.migratepages.reserve(COMPACT_CLUSTER_MAX);
    }

    /// Like [`take_migratepages`](Self::take_migratepages), but appends
    /// them to `out` and keeps this run's buffer, so neither side
    /// allocates or frees when `out` has room (for a kernel whose heap
    /// needs the lock it holds).
    pub fn take_migratepages_into(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.migratepages);
    }

    /// Linux's `isolate_freepages`: scans pageblocks down from the free
    /// scanner's position, above the migrate scanner's pageblock, that are
    /// suitable targets (movable, or any when not grouping by mobility),
    /// isolating their free blocks smaller than a pageblock (a wholly free
    /// pageblock is what compaction is after), until some are isolated.
    fn isolate_freepages(&mut self, buddy: &mut BuddyAllocator) {
        let low = (self.migrate_pfn & !(PAGEBLOCK_NR_PAGES - 1)) + PAGEBLOCK_NR_PAGES;
        while self.freepages.is_empty() {
            let Some(block) = self.free_pfn.filter(|&f| f >= low) else {
                return;
            };
            self.free_pfn = block.checked_sub(PAGEBLOCK_NR_PAGES).filter(|&f| f + PAGEBLOCK_NR_PAGES > self.zone_start);
            self.stats.free_blocks += 1;
            let suitable = !buddy.groups_by_mobility() || buddy.pageblock_migratetype(block) == MigrateType::Movable;
            if !suitable {
                continue;
            }
            let end = (block + PAGEBLOCK_NR_PAGES).min(self.zone_end);
            let mut pfn = buddy.first_head_of_pageblock(block);
            while pfn < end {
                let st = if pfn < self.zone_start { BlockState::Other } else { buddy.block_at(pfn) };
                let step = match st {
                    BlockState::Free { order, .. } if order < PAGEBLOCK_ORDER => {
                        if buddy.isolate_free_block(pfn).is_ok() {
                            self.freepages.extend(pfn..pfn + (1 << order));
                            self.stats.isolated_free += 1 << order;
                        }
                        1u64 << order
                    }
                    BlockState::Allocated { order, .. }
                    | BlockState::Free { order, .. }
                    | BlockState::Pcp { order } => 1u64 << order,
                    BlockState::Other => 1,
                };
                self.stats.free_scanned += step.min(end - pfn);
                pfn += step;
            }
        }
    }

    /// Linux's `compaction_alloc`: a free target page, isolating more
    /// with the free scanner when none is left; `None` when the free
    /// scanner met the migrate scanner.
    pub fn alloc_target(&mut self, buddy: &mut BuddyAllocator) -> Option<u64> {
        if self.freepages.is_empty() {
            self.isolate_freepages(buddy);
        }
        self.freepages.pop()
    }

    /// Records the migration of `src` to `dst` (both order-0, `dst` from
    /// [`alloc_target`](Self::alloc_target)): `dst` takes over the page's
    /// references, owner and migratetype, `src` is freed.
    pub fn migrated(&mut self, buddy: &mut BuddyAllocator, src: u64, dst: u64) -> Result<(), BuddyError> {
        buddy.migrate_transfer(src, dst)?;
        self.stats.migrated += 1;
        Ok(())
    }

    /// Records a failed migration: the target `dst` goes back to the
    /// isolated free pages (the caller puts `src` back).
    pub fn migrate_failed(&mut self, dst: u64) {
        self.freepages.push(dst);
        self.stats.migrate_failed += 1;
    }

    /// Ends the run: the free pages isolated but not used go back to the
    /// buddy (`release_freepages`). Pages still in
    /// [`migratepages`](Self::migratepages) are the caller's to put back.
    pub fn release(&mut self, buddy: &mut BuddyAllocator) -> Result<(), BuddyError> {
        while let Some(pfn) = self.freepages.pop() {
            buddy.release_isolated_page(pfn)?;
        }
        Ok(())
    }
}

/// The outcome of [`compact_zone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactOutcome {
    /// How the run ended.
    pub result: CompactResult,
    /// What it did.
    pub stats: CompactStats,
}

/// Linux's `compact_zone`: compacts zone `z` for an allocation of `order`
/// and `migratetype` (`Some`, checked with [`compaction_suitable`] first),
/// or wholly (`None`), migrating pages through `m`. The pcp lists are
/// drained first so their pages can merge. Errors are the buddy's
/// consistency errors, not "could not compact" (that is the result).
pub fn compact_zone<M: Migrator + ?Sized>(
    buddy: &mut BuddyAllocator,
    z: impl Into<ZoneId>,
    order: Option<u8>,
    migratetype: MigrateType,
    m: &mut M,
) -> Result<CompactOutcome, BuddyError> {
    let z = z.into();
    if let Some(o) = order {
        let r = compaction_suitable(buddy, z, o);
        if r != CompactResult::Success {
            return Ok(CompactOutcome { result: r, stats: CompactStats::default() });
        }
    }
    buddy.drain_all_pages();
    let mut cc = CompactControl::new(buddy, z, order, migratetype);
    let result = loop {
        if let Some(r) = cc.finished(buddy) {
            break r;
        }
        if cc.isolate_migratepages(buddy, |pfn| m.isolate(pfn)) == 0 {
            continue;
        }
        let mut pages = cc.take_migratepages().into_iter();
        while let Some(src) = pages.next() {
            let Some(dst) = cc.alloc_target(buddy) else {
                // No targets left: the scanners met. Put the rest back.
                m.putback(src);
                pages.by_ref().for_each(|p| m.putback(p));
                break;
            };
            match m.migrate(src, dst) {
                Ok(()) => cc.migrated(buddy, src, dst)?,
                Err(_) => {
                    cc.migrate_failed(dst);
                    m.putback(src);
                }
            }
        }
    };
    cc.release(buddy)?;
    Ok(CompactOutcome { result, stats: cc.stats })
}
