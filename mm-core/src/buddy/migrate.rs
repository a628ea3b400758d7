//! Grouping pages by mobility (Linux's migratetypes, `mm/page_alloc.c`):
//! pageblock tags, the fallback order and pageblock stealing
//! (`__rmqueue_fallback`, `find_suitable_fallback`,
//! `steal_suitable_fallback`, `move_freepages_block`), /proc/pagetypeinfo,
//! and the buddy-side primitives compaction needs (isolating free pages,
//! handing a migrated page's identity to its new frame).
//!
//! Why: unmovable kernel allocations scattered over memory make every
//! pageblock impossible to empty. Keeping them in their own pageblocks
//! leaves the movable ones to compaction, which can then assemble 2 MiB
//! blocks for huge pages.

use super::page::{Page, NIL, PG_BUDDY, PG_HEAD, PG_PCP, PG_SLAB};
use super::{BuddyAllocator, BuddyError, Watermark, ZoneId, MAX_PAGE_ORDER, NR_ORDERS};
use crate::fmt::{write_dec, write_padded};
use core::fmt::{self, Write};

/// Order of a pageblock (Linux's `pageblock_order` on x86-64: a 2 MiB
/// huge page).
pub const PAGEBLOCK_ORDER: u8 = 9;
/// Pages per pageblock.
pub const PAGEBLOCK_NR_PAGES: u64 = 1 << PAGEBLOCK_ORDER;

/// Migratetypes with free lists (Linux's `MIGRATE_PCPTYPES`; HIGHATOMIC,
/// CMA and ISOLATE are not modelled).
pub const MIGRATE_TYPES: usize = 3;

/// How an allocation can be moved (Linux's `enum migratetype`, same
/// numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MigrateType {
    /// Kernel memory that stays where it is (page tables, kernel stacks,
    /// most slabs).
    Unmovable = 0,
    /// Memory whose frame can change under it (user anonymous and page
    /// cache pages, through the reverse map).
    Movable = 1,
    /// Memory a shrinker can free (reclaimable slab caches).
    Reclaimable = 2,
}

impl MigrateType {
    /// All types, in list order.
    pub const ALL: [MigrateType; MIGRATE_TYPES] =
        [MigrateType::Unmovable, MigrateType::Movable, MigrateType::Reclaimable];

    /// Decodes a stored byte; unknown values (e.g. a slab's CPU number in
    /// the shared descriptor byte) read as unmovable.
    pub const fn from_u8(v: u8) -> MigrateType {
        match v {
            1 => MigrateType::Movable,
            2 => MigrateType::Reclaimable,
            _ => MigrateType::Unmovable,
        }
    }

    /// Linux's name (`migratetype_names`, as in /proc/pagetypeinfo).
    pub const fn name(self) -> &'static str {
        match self {
            MigrateType::Unmovable => "Unmovable",
            MigrateType::Movable => "Movable",
            MigrateType::Reclaimable => "Reclaimable",
        }
    }

    /// Linux's `fallbacks[]`: the other types' lists an allocation may
    /// steal from, in order of preference.
    pub const fn fallbacks(self) -> [MigrateType; 2] {
        match self {
            MigrateType::Unmovable => [MigrateType::Reclaimable, MigrateType::Movable],
            MigrateType::Movable => [MigrateType::Reclaimable, MigrateType::Unmovable],
            MigrateType::Reclaimable => [MigrateType::Unmovable, MigrateType::Movable],
        }
    }
}

/// Bytes of pageblock storage [`BuddyAllocator::with_mobility`] needs for a
/// descriptor array of `nr_pages` starting at `base_pfn` (one byte per
/// pageblock it touches).
pub const fn pageblock_storage_len(base_pfn: u64, nr_pages: usize) -> usize {
    if nr_pages == 0 {
        return 0;
    }
    let first = base_pfn >> PAGEBLOCK_ORDER;
    let last = (base_pfn + nr_pages as u64 - 1) >> PAGEBLOCK_ORDER;
    (last - first + 1) as usize
}

/// Counters of the mobility-grouping machinery (Linux's
/// `mm_page_alloc_extfrag` events and friends).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MobilityStats {
    /// Allocations that took a block from another migratetype's list
    /// (`__rmqueue_fallback` successes).
    pub fallbacks: u64,
    /// Of those, the ones that claimed the whole pageblock (its type
    /// changed to the allocation's).
    pub pageblocks_claimed: u64,
    /// Free pages moved between lists by `move_freepages_block`.
    pub pages_moved: u64,
}

/// What a pfn that starts a block is, from the buddy's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// The head of a free block on the migratetype's list.
    Free {
        /// Order of the block.
        order: u8,
        /// List it is on.
        list: MigrateType,
    },
    /// The head of a block on a pcp list.
    Pcp {
        /// Order of the block.
        order: u8,
    },
    /// The head of an allocated block.
    Allocated {
        /// Order of the block.
        order: u8,
        /// The migratetype it was requested with (unmovable for slabs).
        mt: MigrateType,
        /// Whether it is a slab.
        slab: bool,
    },
    /// Not a block head the buddy manages (memory never handed in, or a
    /// tail of some block).
    Other,
}

/// /proc/pagetypeinfo for one zone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageTypeInfo {
    /// Free blocks per migratetype and order (`free[mt][order]`).
    pub free: [[u64; NR_ORDERS]; MIGRATE_TYPES],
    /// Pageblocks per migratetype (pageblocks overlapping the zone's span).
    pub pageblocks: [u64; MIGRATE_TYPES],
}

/// The migratetype an allocated block was requested with (slabs read as
/// unmovable: their descriptor byte belongs to the slab allocator).
pub(crate) fn alloc_migratetype(p: &Page) -> MigrateType {
    if p.flags & PG_SLAB != 0 {
        MigrateType::Unmovable
    } else {
        MigrateType::from_u8(p.frozen)
    }
}

impl BuddyAllocator<'_> {
    /// The list type an allocation of `mt` uses: itself when grouping, the
    /// one shared list otherwise (Linux's `gfp_migratetype` with
    /// `page_group_by_mobility_disabled`).
    #[inline]
    pub(crate) fn effective_mt(&self, mt: MigrateType) -> MigrateType {
        if self.mobility {
            mt
        } else {
            MigrateType::Unmovable
        }
    }

    /// The migratetype of the pageblock holding `pfn`
    /// (`get_pageblock_migratetype`); unmovable when not grouping or when
    /// `pfn` is outside the descriptor array.
    pub fn pageblock_migratetype(&self, pfn: u64) -> MigrateType {
        let i = (pfn >> PAGEBLOCK_ORDER).wrapping_sub(self.pb_base) as usize;
        match self.pageblocks.get(i) {
            Some(&b) if self.mobility => MigrateType::from_u8(b),
            _ => MigrateType::Unmovable,
        }
    }

    /// The pageblock migratetype array (one `MigrateType as u8` per
    /// pageblock, Linux's `pageblock_flags`) and the pfn its first byte's
    /// pageblock starts at; empty when not grouping by mobility. What the
    /// guest publishes for the host's pagetypeinfo and physmap.
    pub fn pageblock_types(&self) -> (&[u8], u64) {
        if self.mobility {
            (self.pageblocks, self.pb_base << PAGEBLOCK_ORDER)
        } else {
            (&[], 0)
        }
    }

    /// Tags the pageblock holding `pfn` (`set_pageblock_migratetype`).
    /// Free blocks in it stay on their lists: use
    /// [`move_freepages_block`](Self::move_freepages_block) to move them.
    pub(crate) fn set_pageblock_migratetype(&mut self, pfn: u64, mt: MigrateType) {
        let i = (pfn >> PAGEBLOCK_ORDER).wrapping_sub(self.pb_base) as usize;
        if let Some(b) = self.pageblocks.get_mut(i) {
            *b = mt as u8;
        }
    }

    /// Grouping counters so far.
    pub fn mobility_stats(&self) -> MobilityStats {
        self.mobility_stats
    }

    /// What the descriptor of `pfn` says, taking `pfn` as a possible block
    /// head (see [`BlockState`]).
    pub fn block_at(&self, pfn: u64) -> BlockState {
        let Some(p) = self.page(pfn) else {
            return BlockState::Other;
        };
        if p.flags == PG_BUDDY {
            BlockState::Free { order: p.order, list: MigrateType::from_u8(p.frozen) }
        } else if p.flags == PG_PCP {
            BlockState::Pcp { order: p.order }
        } else if p.flags & PG_HEAD != 0 {
            BlockState::Allocated { order: p.order, mt: alloc_migratetype(p), slab: p.flags & PG_SLAB != 0 }
        } else {
            BlockState::Other
        }
    }

    /// The first block head at or after the start of the pageblock holding
    /// `pfn`: the pageblock's own start, unless an order-10 block covers
    /// it from the pageblock before, whose head is returned.
    pub(crate) fn first_head_of_pageblock(&self, pfn: u64) -> u64 {
        let start = pfn & !(PAGEBLOCK_NR_PAGES - 1);
        if PAGEBLOCK_ORDER < MAX_PAGE_ORDER {
            let big = start & !((1u64 << MAX_PAGE_ORDER) - 1);
            if big != start {
                let covering = match self.block_at(big) {
                    BlockState::Free { order, .. } | BlockState::Allocated { order, .. } => order == MAX_PAGE_ORDER,
                    _ => false,
                };
                if covering {
                    return big;
                }
            }
        }
        start
    }

    /// Calls `f(head_pfn, state)` for every block overlapping the
    /// pageblock holding `pfn`, in address order; unmanaged pfns are
    /// reported one by one as `Other`.
    pub fn for_each_block_in_pageblock(&self, pfn: u64, mut f: impl FnMut(u64, BlockState)) {
        let end = (pfn & !(PAGEBLOCK_NR_PAGES - 1)) + PAGEBLOCK_NR_PAGES;
        let mut cur = self.first_head_of_pageblock(pfn);
        while cur < end {
            let st = self.block_at(cur);
            f(cur, st);
            cur += match st {
                BlockState::Free { order, .. } | BlockState::Pcp { order } | BlockState::Allocated { order, .. } => {
                    1 << order
                }
                BlockState::Other => 1,
            };
        }
    }

    /// Allocated pages per requested migratetype in the pageblock holding
    /// `pfn` (pages of blocks larger than a pageblock count in full).
    pub fn pageblock_usage(&self, pfn: u64) -> [u64; MIGRATE_TYPES] {
        let mut used = [0; MIGRATE_TYPES];
        self.for_each_block_in_pageblock(pfn, |_, st| {
            if let BlockState::Allocated { order, mt, .. } = st {
                used[mt as usize] += 1 << order.min(PAGEBLOCK_ORDER);
            }
        });
        used
    }

    /// Pageblocks of zone `z` holding allocations of more than one
    /// migratetype (what grouping by mobility keeps rare).
    pub fn mixed_pageblocks(&self, z: impl Into<ZoneId>) -> u64 {
        let zone = self.zone(z);
        if !zone.populated() {
            return 0;
        }
        let mut n = 0;
        let mut pfn = zone.start_pfn & !(PAGEBLOCK_NR_PAGES - 1);
        while pfn < zone.end_pfn {
            if self.pageblock_usage(pfn).iter().filter(|&&u| u > 0).count() > 1 {
                n += 1;
            }
            pfn += PAGEBLOCK_NR_PAGES;
        }
        n
    }

    /// Linux's `find_suitable_fallback`: the first type in `mt`'s fallback
    /// order with a free block of `order` in zone `z`, and whether the
    /// allocation may steal the whole pageblock (`can_steal_fallback`).
    /// With `only_stealable`, only a type it may steal from.
    pub fn find_suitable_fallback(
        &self,
        z: impl Into<ZoneId>,
        order: u8,
        mt: MigrateType,
        only_stealable: bool,
    ) -> Option<(MigrateType, bool)> {
        self.find_suitable_fallback_in(z.into().index(), order, mt, only_stealable)
    }

    /// [`find_suitable_fallback`](Self::find_suitable_fallback) in zone
    /// index `z` (`node * NR_ZONES + zone type`).
    pub(crate) fn find_suitable_fallback_in(
        &self,
        z: usize,
        order: u8,
        mt: MigrateType,
        only_stealable: bool,
    ) -> Option<(MigrateType, bool)> {
        let area = &self.zones[z].free_area[order as usize];
        if area.nr_free == 0 {
            return None;
        }
        let can_steal = can_steal_fallback(order, mt);
        for fb in mt.fallbacks() {
            if area.free_list[fb as usize] == NIL {
                continue;
            }
            if !only_stealable || can_steal {
                return Some((fb, can_steal));
            }
        }
        None
    }

    /// Linux's `__rmqueue_fallback`: takes the largest free block of
    /// another type (approximating "the pageblock with the most free
    /// pages") and moves it, and maybe its whole pageblock, to `start`'s
    /// lists. For a movable request that may not steal the block, the
    /// smallest suitable block instead, so it fragments least. Returns
    /// whether anything was moved (then `__rmqueue_smallest` is retried).
    pub(crate) fn rmqueue_fallback(&mut self, z: usize, order: u8, start: MigrateType) -> bool {
        let mut found = None;
        for cur in (order..=MAX_PAGE_ORDER).rev() {
            if let Some((fb, can_steal)) = self.find_suitable_fallback_in(z, cur, start, false) {
                if !can_steal && start == MigrateType::Movable && cur > order {
                    // find_smallest
                    found = (order..=MAX_PAGE_ORDER)
                        .find_map(|o| self.find_suitable_fallback_in(z, o, start, false).map(|(fb, cs)| (o, fb, cs)));
                } else {
                    found = Some((cur, fb, can_steal));
                }
                break;
            }
        }
        let Some((cur, fb, can_steal)) = found else {
            return false;
        };
        let idx = self.zones[z].free_area[cur as usize].free_list[fb as usize];
        self.mobility_stats.fallbacks += 1;
        self.steal_suitable_fallback(z, idx, start, can_steal);
        true
    }

    /// Linux's `steal_suitable_fallback`: a block of a whole pageblock or
    /// more changes type outright; a smaller one, when stealing is allowed,
    /// brings every free page of its pageblock along
    /// (`move_freepages_block`), and the pageblock itself when at least
    /// half of it is free or already holds compatible allocations.
    /// Otherwise only the block moves to `start`'s list.
    fn steal_suitable_fallback(&mut self, z: usize, idx: u32, start: MigrateType, whole_block: bool) {
        let pfn = self.pfn_of(idx);
        let order = self.mem_map[idx as usize].order;
        let old = self.pageblock_migratetype(pfn);
        if order >= PAGEBLOCK_ORDER {
            // change_pageblock_range, then the single-page move: the re-add
            // tags every pageblock of the block.
            self.mobility_stats.pageblocks_claimed += 1 << (order - PAGEBLOCK_ORDER);
            self.move_to_free_list(z, idx, order, start);
            return;
        }
        // Boost the watermarks so that reclaim and compaction make room
        // before the next fallback has to mix another pageblock (the
        // caller learns of it through take_boosted_zone and wakes kswapd).
        self.boost_watermark(z);
        if whole_block {
            if let Some((free, movable)) = self.move_freepages_block(pfn, start) {
                let alike = if start == MigrateType::Movable {
                    movable
                } else if old == MigrateType::Movable {
                    PAGEBLOCK_NR_PAGES - (free + movable)
                } else {
                    0
                };
                if free + alike >= PAGEBLOCK_NR_PAGES / 2 {
                    self.set_pageblock_migratetype(pfn, start);
                    self.mobility_stats.pageblocks_claimed += 1;
                }
                return;
            }
        }
        self.move_to_free_list(z, idx, order, start);
    }

    fn move_to_free_list(&mut self, z: usize, idx: u32, order: u8, mt: MigrateType) {
        self.del_from_free_list(z, idx, order);
        self.add_to_free_list(z, idx, order, mt);
    }

    /// Linux's `move_freepages_block`: moves every free block of the
    /// pageblock holding `pfn` to `mt`'s lists. Returns the free pages
    /// moved and the allocated pages that are movable, or `None` when the
    /// pageblock is not wholly inside one zone (nothing moved then).
    pub fn move_freepages_block(&mut self, pfn: u64, mt: MigrateType) -> Option<(u64, u64)> {
        let start = pfn & !(PAGEBLOCK_NR_PAGES - 1);
        let end = start + PAGEBLOCK_NR_PAGES;
        let z = self.zone_index_of_pfn(start);
        let zone = &self.zones[z];
        if start < zone.start_pfn || end > zone.end_pfn || self.zone_index_of_pfn(end - 1) != z {
            return None;
        }
        // Moving a free block between lists changes no block boundaries,
        // so one walk can move as it goes.
        let (mut moved, mut movable) = (0, 0);
        let mut cur = self.first_head_of_pageblock(start);
        while cur < end {
            let st = self.block_at(cur);
            cur += match st {
                BlockState::Free { order, .. } => {
                    if order < PAGEBLOCK_ORDER {
                        if let Some(idx) = self.idx(cur) {
                            self.move_to_free_list(z, idx, order, mt);
                            moved += 1u64 << order;
                        }
                    }
                    1 << order
                }
                BlockState::Allocated { order, mt: amt, slab } => {
                    if amt == MigrateType::Movable && !slab {
                        movable += 1u64 << order;
                    }
                    1 << order
                }
                BlockState::Pcp { order } => 1 << order,
                BlockState::Other => 1,
            };
        }
        self.mobility_stats.pages_moved += moved;
        Some((moved, movable))
    }

    /// /proc/pagetypeinfo numbers for zone `z`.
    pub fn pagetypeinfo(&self, z: impl Into<ZoneId>) -> PageTypeInfo {
        let zone = self.zone(z);
        let mut info = PageTypeInfo::default();
        for (o, area) in zone.free_area.iter().enumerate() {
            for m in 0..MIGRATE_TYPES {
                info.free[m][o] = area.nr_free_mt[m];
            }
        }
        if zone.populated() {
            let mut pfn = zone.start_pfn & !(PAGEBLOCK_NR_PAGES - 1);
            while pfn < zone.end_pfn {
                info.pageblocks[self.pageblock_migratetype(pfn) as usize] += 1;
                pfn += PAGEBLOCK_NR_PAGES;
            }
        }
        info
    }

    /// /proc/pagetypeinfo in Linux's layout (our three migratetypes).
    pub fn pagetypeinfo_text<W: Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        w.write_str("Page block order: 9\nPages per block:  512\n\n")?;
        w.write_str("Free pages count per migrate type at order ")?;
        for o in 0..NR_ORDERS {
            write_dec(w, o as u64, 6)?;
        }
        w.write_str(" \n")?;
        let zones = self.zones().iter().filter(|z| z.populated());
        for zone in zones.clone() {
            let info = self.pagetypeinfo(ZoneId::new(zone.node, zone.kind));
            for mt in MigrateType::ALL {
                w.write_str("Node ")?;
                write_dec(w, u64::from(zone.node), 4)?;
                w.write_str(", zone ")?;
                write_padded(w, zone.kind.name(), 8, false)?;
                w.write_str(", type ")?;
                write_padded(w, mt.name(), 12, false)?;
                for o in 0..NR_ORDERS {
                    w.write_char(' ')?;
                    write_dec(w, info.free[mt as usize][o], 6)?;
                }
                w.write_str(" \n")?;
            }
        }
        w.write_str("\nNumber of blocks type    ")?;
        for mt in MigrateType::ALL {
            w.write_char(' ')?;
            write_padded(w, mt.name(), 12, false)?;
        }
        w.write_char('\n')?;
        for zone in zones {
            let info = self.pagetypeinfo(ZoneId::new(zone.node, zone.kind));
            w.write_str("Node ")?;
            write_dec(w, u64::from(zone.node), 0)?;
            w.write_str(", zone ")?;
            write_padded(w, zone.kind.name(), 8, false)?;
            w.write_str("    ")?;
            for n in info.pageblocks {
                w.write_char(' ')?;
                write_dec(w, n, 12)?;
            }
            w.write_char('\n')?;
        }
        Ok(())
    }

    /// Compaction's free scanner step (`__isolate_free_page` then
    /// `split_map_pages`): takes the free block headed by `pfn` off its
    /// list and turns it into `2^order` allocated order-0 pages (movable,
    /// one reference each), returning the order. Refuses (nothing changes)
    /// when `pfn` heads no free block, or when taking it would leave the
    /// zone at or below min watermark + the block, as Linux does so that
    /// compaction does not eat the reserves.
    pub fn isolate_free_block(&mut self, pfn: u64) -> Result<u8, BuddyError> {
        let idx = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))?;
        let p = self.mem_map[idx as usize];
        if p.flags != PG_BUDDY {
            return Err(BuddyError::NotIsolatable(pfn));
        }
        let z = p.zone as usize;
        let order = p.order;
        let zone = &self.zones[z];
        let mark = zone.watermark[Watermark::Min as usize] + (1u64 << order);
        if !zone.watermark_ok(0, mark) {
            return Err(BuddyError::NotIsolatable(pfn));
        }
        self.del_from_free_list(z, idx, order);
        for i in 0..1u32 << order {
            self.mark_allocated(idx + i, 0, z, MigrateType::Movable);
        }
        Ok(order)
    }

    /// Hands an allocated order-0 page's identity to `dst` after its
    /// contents and mappings were moved there (the buddy's part of
    /// `migrate_folio`): `dst` (an allocated order-0 page, e.g. from
    /// [`isolate_free_block`](Self::isolate_free_block)) takes over the
    /// reference count, owner and migratetype of `src`, and `src` goes
    /// back to the buddy (merged, not via a pcp list, so compaction sees
    /// the hole at once).
    pub fn migrate_transfer(&mut self, src: u64, dst: u64) -> Result<(), BuddyError> {
        let si = self.idx(src).ok_or(BuddyError::OutOfRange(src))?;
        let di = self.idx(dst).ok_or(BuddyError::OutOfRange(dst))?;
        let (s, d) = (self.mem_map[si as usize], self.mem_map[di as usize]);
        for (pfn, p) in [(src, s), (dst, d)] {
            if p.flags != PG_HEAD || p.order != 0 {
                return Err(BuddyError::NotIsolatable(pfn));
            }
        }
        if si == di {
            return Err(BuddyError::NotIsolatable(dst));
        }
        let dp = &mut self.mem_map[di as usize];
        dp.refcount = s.refcount;
        dp.owner = s.owner;
        dp.frozen = s.frozen;
        // The memcg charge moves with the contents (Linux's
        // `mem_cgroup_migrate`): the count stays, the tag changes frame.
        dp.inuse = s.inuse;
        let sp = &mut self.mem_map[si as usize];
        sp.refcount = 0;
        sp.inuse = 0;
        self.free_one_page(si, 0, s.zone as usize);
        Ok(())
    }

    /// Gives back an order-0 page compaction isolated but did not use
    /// (`release_freepages`): straight to the buddy, merged.
    pub fn release_isolated_page(&mut self, pfn: u64) -> Result<(), BuddyError> {
        let idx = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))?;
        let p = self.mem_map[idx as usize];
        if p.flags != PG_HEAD || p.order != 0 || p.refcount != 1 {
            return Err(BuddyError::NotIsolatable(pfn));
        }
        self.mem_map[idx as usize].refcount = 0;
        self.free_one_page(idx, 0, p.zone as usize);
        Ok(())
    }
}

/// Linux's `can_steal_fallback`: large requests, and any unmovable or
/// reclaimable one, may take over the pageblock they fall back into.
pub fn can_steal_fallback(order: u8, start: MigrateType) -> bool {
    order >= PAGEBLOCK_ORDER / 2 || start != MigrateType::Movable
}
