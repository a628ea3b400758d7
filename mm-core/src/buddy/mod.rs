//! The buddy page allocator (Linux's `mm/page_alloc.c`).
//!
//! This module owns physical page frames: zones with free lists per order
//! (`free_area`), block splitting on allocation (`expand`), merging on free
//! (`__free_one_page`, buddy = pfn ^ (1 << order)), per-CPU page lists for
//! small orders, watermarks and the zonelist fallback, and the reports
//! (buddyinfo, fragmentation indices, pagetypeinfo).
//!
//! Grouping by mobility (Linux's migratetypes, see [`migrate`]): with
//! pageblock storage given ([`BuddyAllocator::with_mobility`]) every
//! pageblock (order 9) is tagged unmovable, movable or reclaimable, the
//! free lists are per (order, migratetype), an allocation asks for its
//! type in [`Gfp::migratetype`] and falls back to other types' blocks as
//! Linux's `__rmqueue_fallback` does, stealing whole pageblocks when it
//! can. Without it ([`BuddyAllocator::new`]) there is one list per order,
//! as before.
//!
//! It is intrusive and heap-free so the guest can use it before any heap
//! exists: page descriptors live in the caller's `&mut [Page]` (the
//! vmemmap) and every list is threaded through them by index. Boot cost is
//! proportional to the number of blocks handed in, not pages: only block
//! heads are ever written by `free_range`, and a tail descriptor is first
//! written when a split makes it a head.

pub mod contig;
pub mod migrate;
pub mod node;
pub mod page;
pub mod pcp;
mod stats;
pub mod zone;

pub use migrate::{
    pageblock_storage_len, BlockState, MigrateType, MobilityStats, PageTypeInfo, MIGRATE_TYPES, PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
};
pub use node::{numa_account, NodeLayout, NumaStat, ZoneId, MAX_NR_ZONES, MAX_NUMNODES, NODEMASK_ALL, NUMA_NO_NODE};
pub use page::{Page, PageOwner, NIL, PG_BUDDY, PG_HEAD, PG_PCP, PG_SLAB, PG_TAIL};
pub use pcp::{pcp_page_cacheable, pcp_page_put, pcp_page_take, PcpCache, PcpStats, PCP_DETACHED};
pub use stats::ContigPageInfo;
pub use zone::{FreeArea, PerCpuPages, Watermark, Zone, ZoneType, NR_ZONES};

use page::{list_add, list_del};

/// Number of orders (Linux's `NR_PAGE_ORDERS`, the old `MAX_ORDER` = 11).
pub const NR_ORDERS: usize = 11;
/// Largest order (Linux's `MAX_PAGE_ORDER`): 4 MiB blocks.
pub const MAX_PAGE_ORDER: u8 = 10;
/// Orders above this are "costly" (Linux's `PAGE_ALLOC_COSTLY_ORDER`);
/// orders up to it are cached on per-CPU lists.
pub const PAGE_ALLOC_COSTLY_ORDER: u8 = 3;
/// Orders that have a pcp list.
pub const PCP_ORDERS: usize = PAGE_ALLOC_COSTLY_ORDER as usize + 1;
/// CPUs the allocator keeps pcp lists for.
pub const MAX_CPUS: usize = 8;

/// Why a buddy operation failed. Bad input from callers is reported here,
/// never by panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuddyError {
    /// No zone allowed by the request had a free block above its watermark.
    NoMemory,
    /// Order above `MAX_PAGE_ORDER`.
    BadOrder(u8),
    /// CPU number not below the `nr_cpus` given at creation.
    BadCpu(usize),
    /// More CPUs requested than `MAX_CPUS`, or none.
    BadCpuCount(usize),
    /// The pfn (or range) is not covered by the page descriptor array.
    OutOfRange(u64),
    /// The range is empty or reversed.
    BadRange {
        /// First pfn.
        start: u64,
        /// One past the last pfn.
        end: u64,
    },
    /// The pfn is already free memory handed to the allocator (free_range
    /// over managed memory).
    AlreadyManaged(u64),
    /// The block is already free (on a free list or a pcp list).
    DoubleFree(u64),
    /// The pfn is not the head of an allocated block.
    NotAllocated(u64),
    /// Freed with another order than it was allocated with.
    OrderMismatch {
        /// The block's head.
        pfn: u64,
        /// Order it was allocated with.
        allocated: u8,
        /// Order passed to the free.
        freed: u8,
    },
    /// The block is a slab: it must go back through the slab allocator.
    SlabPage(u64),
    /// A consistency check found the allocator's state corrupt.
    Corrupt(&'static str),
    /// The pageblock storage given to `with_mobility` is too short.
    PageblockStorage {
        /// Bytes needed (`pageblock_storage_len`).
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// The block at the pfn cannot be isolated or migrated (not free, not
    /// an order-0 allocated page, or below the watermark).
    NotIsolatable(u64),
    /// A node number (or node count) the allocator does not have.
    BadNode(u64),
    /// The node layout was set after memory was handed in.
    LayoutAfterMemory,
}

impl core::fmt::Display for BuddyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Numbers in hex: decimal integer Display is unusable in the guest.
        match *self {
            BuddyError::NoMemory => f.write_str("out of memory"),
            BuddyError::BadOrder(o) => write!(f, "order {o:#x} above MAX_PAGE_ORDER"),
            BuddyError::BadCpu(c) => write!(f, "cpu {c:#x} out of range"),
            BuddyError::BadCpuCount(c) => write!(f, "bad cpu count {c:#x}"),
            BuddyError::OutOfRange(p) => write!(f, "pfn {p:#x} has no page descriptor"),
            BuddyError::BadRange { start, end } => write!(f, "bad pfn range {start:#x}-{end:#x}"),
            BuddyError::AlreadyManaged(p) => write!(f, "pfn {p:#x} is already managed"),
            BuddyError::DoubleFree(p) => write!(f, "double free of pfn {p:#x}"),
            BuddyError::NotAllocated(p) => write!(f, "pfn {p:#x} is not an allocated block head"),
            BuddyError::OrderMismatch { pfn, allocated, freed } => {
                write!(f, "pfn {pfn:#x} allocated with order {allocated:#x}, freed with {freed:#x}")
            }
            BuddyError::SlabPage(p) => write!(f, "pfn {p:#x} is a slab page"),
            BuddyError::Corrupt(what) => write!(f, "buddy state corrupt: {what}"),
            BuddyError::PageblockStorage { need, got } => {
                write!(f, "pageblock storage of {got:#x} bytes, {need:#x} needed (pageblock_storage_len)")
            }
            BuddyError::NotIsolatable(p) => write!(f, "pfn {p:#x} cannot be isolated"),
            BuddyError::BadNode(n) => write!(f, "node {n:#x} out of range"),
            BuddyError::LayoutAfterMemory => f.write_str("the node layout must be set before memory is handed in"),
        }
    }
}

#[cfg(any(test, feature = "std"))]
impl std::error::Error for BuddyError {}

/// How hard an allocation may dig into the reserves (Linux's `ALLOC_WMARK_*`
/// and `ALLOC_HIGH` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WmarkPolicy {
    /// Fail below the min watermark (`GFP_KERNEL`).
    Normal,
    /// May go down to half the min watermark (`GFP_ATOMIC`'s `ALLOC_HIGH`).
    Atomic,
    /// Ignores watermarks (`ALLOC_NO_WATERMARKS`, for the reclaimer itself).
    NoWatermarks,
}

/// An allocation request's constraints (the part of Linux's gfp_t that the
/// page allocator reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gfp {
    /// Highest zone the memory may come from; lower zones are fallbacks.
    pub zone: ZoneType,
    /// Watermark policy.
    pub wmark: WmarkPolicy,
    /// Mobility of the allocation (`gfp_migratetype`: `__GFP_MOVABLE`,
    /// `__GFP_RECLAIMABLE`, or neither). Only steers placement when the
    /// allocator groups by mobility; recorded in the block either way.
    pub migratetype: MigrateType,
    /// The node the allocation prefers ([`NUMA_NO_NODE`]: the allocating
    /// CPU's node): its zonelist is walked, nearest nodes first.
    pub nid: u8,
    /// Nodes the allocation may come from (bit per node; Linux's
    /// `nodemask`, e.g. MPOL_BIND's): the zonelist skips the others.
    pub nodemask: u8,
}

impl Gfp {
    /// The same request with another mobility (`| __GFP_MOVABLE` etc.).
    pub const fn with_migratetype(self, migratetype: MigrateType) -> Gfp {
        Gfp { migratetype, ..self }
    }

    /// The same request preferring node `nid`, from the nodes in
    /// `nodemask` only.
    pub const fn on_nodes(self, nid: u8, nodemask: u8) -> Gfp {
        Gfp { nid, nodemask, ..self }
    }
}

/// Ordinary kernel allocation: any zone, fails below min; unmovable.
pub const GFP_KERNEL: Gfp = Gfp {
    zone: ZoneType::Normal,
    wmark: WmarkPolicy::Normal,
    migratetype: MigrateType::Unmovable,
    nid: NUMA_NO_NODE,
    nodemask: NODEMASK_ALL,
};
/// Atomic allocation: may use half of the min reserve.
pub const GFP_ATOMIC: Gfp = Gfp { wmark: WmarkPolicy::Atomic, ..GFP_KERNEL };
/// Below 4 GiB.
pub const GFP_DMA32: Gfp = Gfp { zone: ZoneType::Dma32, ..GFP_KERNEL };
/// Below 16 MiB.
pub const GFP_DMA: Gfp = Gfp { zone: ZoneType::Dma, ..GFP_KERNEL };
/// Ignores watermarks (`__GFP_MEMALLOC`).
pub const GFP_NOWMARK: Gfp = Gfp { wmark: WmarkPolicy::NoWatermarks, ..GFP_KERNEL };
/// User memory the kernel can migrate (anonymous pages:
/// `GFP_HIGHUSER_MOVABLE`).
pub const GFP_HIGHUSER_MOVABLE: Gfp = Gfp { migratetype: MigrateType::Movable, ..GFP_KERNEL };
/// Kernel memory a shrinker can free (`GFP_KERNEL | __GFP_RECLAIMABLE`,
/// e.g. reclaimable slab caches).
pub const GFP_KERNEL_RECLAIMABLE: Gfp = Gfp { migratetype: MigrateType::Reclaimable, ..GFP_KERNEL };

/// Per-zone page counts that must add up (used by tests and the host's
/// consistency checks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageCounts {
    /// Pages handed to the allocator.
    pub managed: u64,
    /// Pages on free lists.
    pub free: u64,
    /// Pages on pcp lists.
    pub pcp: u64,
    /// Pages handed out (managed - free - pcp).
    pub allocated: u64,
}

/// The buddy allocator over the machine's memory: a set of zones per
/// NUMA node (Linux's `pg_data_t`s), one node unless
/// [`set_node_layout`](BuddyAllocator::set_node_layout) says otherwise.
pub struct BuddyAllocator<'a> {
    mem_map: &'a mut [Page],
    base_pfn: u64,
    /// Zone `node * NR_ZONES + zone type`.
    zones: [Zone; MAX_NR_ZONES],
    nodes: NodeLayout,
    nr_cpus: usize,
    pcp_enabled: bool,
    min_free_kbytes: Option<u64>,
    /// `vm.watermark_boost_factor` in units of 1/10000 of the high
    /// watermark (0: boosting off).
    watermark_boost_factor: u64,
    /// One byte per pageblock (`MigrateType as u8`), from
    /// `pb_base`; empty when not grouping by mobility.
    pageblocks: &'a mut [u8],
    /// First pageblock number (`pfn >> PAGEBLOCK_ORDER`) `pageblocks` covers.
    pb_base: u64,
    /// Group by mobility (pageblock storage was given).
    mobility: bool,
    mobility_stats: MobilityStats,
}

impl<'a> BuddyAllocator<'a> {
    /// An allocator with no memory yet. `mem_map[i]` describes pfn
    /// `base_pfn + i`; descriptors of memory not yet given to
    /// [`free_range`](Self::free_range) must be zero (`Page::default()`),
    /// which memory fresh from the VMM already is.
    pub fn new(mem_map: &'a mut [Page], base_pfn: u64, nr_cpus: usize) -> Result<Self, BuddyError> {
        if nr_cpus == 0 || nr_cpus > MAX_CPUS {
            return Err(BuddyError::BadCpuCount(nr_cpus));
        }
        if mem_map.len() >= NIL as usize {
            return Err(BuddyError::OutOfRange(base_pfn + mem_map.len() as u64));
        }
        Ok(BuddyAllocator {
            mem_map,
            base_pfn,
            zones: core::array::from_fn(|i| Zone::new(ZoneType::ALL[i % NR_ZONES], (i / NR_ZONES) as u8)),
            nodes: NodeLayout::single(),
            nr_cpus,
            pcp_enabled: true,
            min_free_kbytes: None,
            watermark_boost_factor: 0,
            pageblocks: &mut [],
            pb_base: base_pfn >> PAGEBLOCK_ORDER,
            mobility: false,
            mobility_stats: MobilityStats::default(),
        })
    }

    /// An allocator that groups pages by mobility (Linux's default,
    /// `page_group_by_mobility_disabled` false): `pageblock_types` holds one
    /// byte per pageblock of the descriptor array's range and must be at
    /// least [`pageblock_storage_len`]`(base_pfn, mem_map.len())` long. Its
    /// contents are ignored: pageblocks are tagged movable when
    /// [`free_range`](Self::free_range) hands their memory in, as Linux's
    /// `memmap_init` does.
    pub fn with_mobility(
        mem_map: &'a mut [Page],
        pageblock_types: &'a mut [u8],
        base_pfn: u64,
        nr_cpus: usize,
    ) -> Result<Self, BuddyError> {
        let need = pageblock_storage_len(base_pfn, mem_map.len());
        if pageblock_types.len() < need {
            return Err(BuddyError::PageblockStorage { need, got: pageblock_types.len() });
        }
        let mut b = Self::new(mem_map, base_pfn, nr_cpus)?;
        b.pageblocks = pageblock_types;
        b.mobility = true;
        Ok(b)
    }

    /// Splits memory into NUMA nodes (Linux's `free_area_init` per node):
    /// each node gets its own zones. Only before any memory is handed in
    /// ([`free_range`](Self::free_range)); the layout's CPUs must be below
    /// `nr_cpus`' limit (others are ignored).
    pub fn set_node_layout(&mut self, layout: NodeLayout) -> Result<(), BuddyError> {
        if self.zones.iter().any(|z| z.managed_pages > 0) {
            return Err(BuddyError::LayoutAfterMemory);
        }
        self.nodes = layout;
        Ok(())
    }

    /// The node layout.
    pub fn node_layout(&self) -> &NodeLayout {
        &self.nodes
    }

    /// Number of nodes.
    pub fn nr_nodes(&self) -> usize {
        self.nodes.nr_nodes()
    }

    /// The node of `pfn` (Linux's `page_to_nid`, by range).
    #[inline]
    pub fn node_of_pfn(&self, pfn: u64) -> u8 {
        self.nodes.node_of_pfn(pfn)
    }

    /// The zone index (`node * NR_ZONES + zone type`) `pfn` belongs to.
    #[inline]
    pub fn zone_index_of_pfn(&self, pfn: u64) -> usize {
        usize::from(self.nodes.node_of_pfn(pfn)) * NR_ZONES + ZoneType::of_pfn(pfn) as usize
    }

    /// Node `nid`'s zones, lowest first (Linux's `pgdat->node_zones`).
    pub fn node_zones(&self, nid: usize) -> &[Zone] {
        let n = nid.min(MAX_NUMNODES - 1);
        &self.zones[n * NR_ZONES..(n + 1) * NR_ZONES]
    }

    /// Page counts of node `nid`'s zones.
    pub fn node_counts(&self, nid: usize) -> PageCounts {
        let mut c = PageCounts::default();
        if nid >= self.nr_nodes() {
            return c;
        }
        for z in self.node_zones(nid) {
            c.managed += z.managed_pages;
            c.free += z.nr_free;
            c.pcp += z.pcp_pages();
        }
        c.allocated = c.managed - c.free - c.pcp;
        c
    }

    /// Whether pages are grouped by mobility.
    pub fn groups_by_mobility(&self) -> bool {
        self.mobility
    }

    /// Turns the per-CPU lists on or off (off drains them first). With them
    /// off every order goes straight to the buddy, as with Linux's
    /// `percpu_pagelist_high_fraction` forcing no caching.
    pub fn set_pcp_enabled(&mut self, on: bool) {
        if !on {
            self.drain_all_pages();
        }
        self.pcp_enabled = on;
    }

    /// Overrides `vm.min_free_kbytes` (otherwise computed as Linux does:
    /// sqrt(lowmem_kbytes * 16), clamped to [128, 262144]) and recomputes
    /// the watermarks.
    pub fn set_min_free_kbytes(&mut self, kbytes: u64) {
        self.min_free_kbytes = Some(kbytes);
        self.setup_per_zone_wmarks();
    }

    /// Sets `vm.watermark_boost_factor` (Linux's default is 15000: a
    /// boost of up to 150 % of the high watermark; 0 turns boosting off,
    /// which is this allocator's default because a boost must be
    /// reclaimed away by its owner's kswapd, see
    /// [`take_boosted_zone`](Self::take_boosted_zone)). With it, a
    /// fallback that mixes migratetypes in a pageblock raises the zone's
    /// watermarks by a pageblock (`boost_watermark`), so that reclaim and
    /// compaction make room for the next fallbacks to claim whole
    /// pageblocks.
    pub fn set_watermark_boost_factor(&mut self, factor: u64) {
        self.watermark_boost_factor = factor;
        if factor == 0 {
            for z in self.zones.iter_mut() {
                z.watermark_boost = 0;
                z.boosted = false;
            }
        }
    }

    /// The zone whose watermark a fallback boosted since the last call,
    /// clearing its flag (Linux's `rmqueue` test of
    /// `ZONE_BOOSTED_WATERMARK`, after which it wakes kswapd). The caller's
    /// kswapd then reclaims the zone's
    /// [`watermark_boost`](Zone::watermark_boost) pages, calls
    /// [`clear_watermark_boost`](Self::clear_watermark_boost) and wakes
    /// kcompactd for a pageblock, as Linux's `balance_pgdat` does.
    pub fn take_boosted_zone(&mut self) -> Option<ZoneType> {
        // Per zone type: the caller reclaims and clears by type (on every
        // node, see clear_watermark_boost).
        let z = self.zones.iter_mut().find(|z| z.boosted)?;
        z.boosted = false;
        Some(z.kind)
    }

    /// Takes `pages` (what the reclaim pass was started for) off the
    /// watermark boost of zone type `z` on every node (boosts added
    /// meanwhile stay).
    pub fn clear_watermark_boost(&mut self, z: ZoneType, pages: u64) {
        for zone in self.zones.iter_mut().filter(|zone| zone.kind == z) {
            zone.watermark_boost -= pages.min(zone.watermark_boost);
        }
    }

    /// Linux's `boost_watermark`: raises zone `z`'s watermarks by a
    /// pageblock, up to `watermark_boost_factor` of the high watermark
    /// (at least a pageblock); not in zones under four pageblocks, where
    /// the boost would run them out of memory. Returns whether it boosted.
    pub(crate) fn boost_watermark(&mut self, z: usize) -> bool {
        let zone = &mut self.zones[z];
        if self.watermark_boost_factor == 0 || PAGEBLOCK_NR_PAGES * 4 > zone.managed_pages {
            return false;
        }
        let max_boost = zone.watermark[Watermark::High as usize] * self.watermark_boost_factor / 10_000;
        if max_boost == 0 {
            return false;
        }
        let max_boost = max_boost.max(PAGEBLOCK_NR_PAGES);
        zone.watermark_boost = (zone.watermark_boost + PAGEBLOCK_NR_PAGES).min(max_boost);
        zone.boosted = true;
        true
    }

    /// `vm.min_free_kbytes` in force: the value set, or the one computed
    /// from the managed memory as Linux's `calculate_min_free_kbytes`.
    pub fn min_free_kbytes(&self) -> u64 {
        self.min_free_kbytes.unwrap_or_else(|| {
            let total: u64 = self.zones.iter().map(|z| z.managed_pages).sum();
            zone::int_sqrt(total * 4 * 16).clamp(128, 262_144)
        })
    }

    /// The zones of every node (node 0's first, each node's lowest
    /// first; empty ones have no managed pages).
    pub fn zones(&self) -> &[Zone] {
        &self.zones[..self.nr_nodes() * NR_ZONES]
    }

    /// One zone: of node 0 (the only node without NUMA) for a bare
    /// [`ZoneType`], of any node for a [`ZoneId`].
    pub fn zone(&self, z: impl Into<ZoneId>) -> &Zone {
        &self.zones[z.into().index()]
    }

    /// First pfn the descriptor array covers.
    pub fn base_pfn(&self) -> u64 {
        self.base_pfn
    }

    /// One past the last pfn the descriptor array covers.
    pub fn end_pfn(&self) -> u64 {
        self.base_pfn + self.mem_map.len() as u64
    }

    /// CPUs with pcp lists.
    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// The descriptor of `pfn`.
    pub fn page(&self, pfn: u64) -> Option<&Page> {
        self.idx(pfn).map(|i| &self.mem_map[i as usize])
    }

    /// The whole descriptor array (for reports and the host's checks).
    pub fn mem_map(&self) -> &[Page] {
        self.mem_map
    }

    pub(crate) fn mem_map_mut(&mut self) -> &mut [Page] {
        self.mem_map
    }

    /// Records who owns an allocated block (for reports).
    pub fn set_owner(&mut self, pfn: u64, owner: PageOwner) -> Result<(), BuddyError> {
        let i = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))? as usize;
        if self.mem_map[i].flags & PG_HEAD == 0 {
            return Err(BuddyError::NotAllocated(pfn));
        }
        self.mem_map[i].owner = owner as u8;
        // A page that stops being user memory (the zero page, made from a
        // user frame and then `Reserved`) stops being charged.
        if !matches!(owner, PageOwner::UserAnon | PageOwner::PageCache | PageOwner::PageTable) {
            crate::memcg::uncharge_page(&mut self.mem_map[i]);
        }
        Ok(())
    }

    /// Charges the allocated block at `pfn` to memory cgroup `memcg` as
    /// `kind` (`crate::memcg::charge_page`); its last free uncharges it.
    pub fn memcg_charge(&mut self, pfn: u64, memcg: usize, kind: crate::memcg::ChargeKind) -> Result<(), BuddyError> {
        let i = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))? as usize;
        if self.mem_map[i].flags & PG_HEAD == 0 {
            return Err(BuddyError::NotAllocated(pfn));
        }
        crate::memcg::charge_page(&mut self.mem_map[i], memcg, kind);
        Ok(())
    }

    /// Takes another reference on an allocated block (`get_page`).
    pub fn get_page(&mut self, pfn: u64) -> Result<u32, BuddyError> {
        let i = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))? as usize;
        let p = &mut self.mem_map[i];
        if p.flags & PG_HEAD == 0 {
            return Err(BuddyError::NotAllocated(pfn));
        }
        p.refcount = p.refcount.saturating_add(1);
        Ok(p.refcount)
    }

    /// Linux's `split_page`: turns the allocated order-`n` block at `pfn`
    /// into `2^n` allocated order-0 pages, each with the block's refcount,
    /// owner and migratetype, so each can be referenced and freed on its own
    /// (and merge back in the buddy when all are free). The guest's
    /// transparent huge pages are allocated this way: a PMD mapping holds
    /// one reference on each of its 512 frames.
    pub fn split_page(&mut self, pfn: u64) -> Result<(), BuddyError> {
        let i = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))? as usize;
        let head = self.mem_map[i];
        if head.flags != PG_HEAD {
            return Err(BuddyError::NotAllocated(pfn));
        }
        let n = 1usize << head.order;
        if i + n > self.mem_map.len() {
            return Err(BuddyError::Corrupt("block beyond the descriptor array"));
        }
        for p in &mut self.mem_map[i..i + n] {
            *p = Page { order: 0, ..head };
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn idx(&self, pfn: u64) -> Option<u32> {
        let i = pfn.checked_sub(self.base_pfn)?;
        if i < self.mem_map.len() as u64 {
            Some(i as u32)
        } else {
            None
        }
    }

    #[inline]
    pub(crate) fn pfn_of(&self, idx: u32) -> u64 {
        self.base_pfn + idx as u64
    }

    /// Page counts summed over the zones.
    pub fn counts(&self) -> PageCounts {
        let mut c = PageCounts::default();
        for z in &self.zones {
            c.managed += z.managed_pages;
            c.free += z.nr_free;
            c.pcp += z.pcp_pages();
        }
        c.allocated = c.managed - c.free - c.pcp;
        c
    }

    /// Hands the frames `[start_pfn, end_pfn)` to the allocator (Linux's
    /// `memblock_free_all` -> `__free_pages_core`), in the largest naturally
    /// aligned blocks, so the cost is O(blocks), not O(pages). Only block
    /// head descriptors are written.
    pub fn free_range(&mut self, start_pfn: u64, end_pfn: u64) -> Result<(), BuddyError> {
        if start_pfn >= end_pfn {
            return Err(BuddyError::BadRange { start: start_pfn, end: end_pfn });
        }
        if self.idx(start_pfn).is_none() {
            return Err(BuddyError::OutOfRange(start_pfn));
        }
        if self.idx(end_pfn - 1).is_none() {
            return Err(BuddyError::OutOfRange(end_pfn - 1));
        }
        // Check the block heads first so a rejected call changes nothing.
        self.for_each_block(start_pfn, end_pfn, |s, pfn, _| {
            let p = &s.mem_map[s.idx(pfn).unwrap_or(0) as usize];
            if p.flags & (PG_BUDDY | PG_HEAD | PG_PCP) != 0 {
                Err(BuddyError::AlreadyManaged(pfn))
            } else {
                Ok(())
            }
        })?;
        if self.mobility {
            // memmap_init: every pageblock starts movable.
            let mut pb = start_pfn >> PAGEBLOCK_ORDER;
            while pb <= (end_pfn - 1) >> PAGEBLOCK_ORDER {
                self.set_pageblock_migratetype(pb << PAGEBLOCK_ORDER, MigrateType::Movable);
                pb += 1;
            }
        }
        self.for_each_block(start_pfn, end_pfn, |s, pfn, order| {
            let z = s.zone_index_of_pfn(pfn);
            let zone = &mut s.zones[z];
            zone.managed_pages += 1 << order;
            zone.start_pfn = zone.start_pfn.min(pfn);
            zone.end_pfn = zone.end_pfn.max(pfn + (1 << order));
            let i = s.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))?;
            s.mem_map[i as usize] = Page::default();
            s.free_one_page(i, order, z);
            Ok(())
        })?;
        self.setup_per_zone_wmarks();
        Ok(())
    }

    /// Calls `f(self, pfn, order)` for each maximal aligned block of the
    /// range; zone boundaries are aligned to `MAX_PAGE_ORDER` so a block
    /// never straddles two zones, and blocks stop at node boundaries.
    fn for_each_block(
        &mut self,
        start: u64,
        end: u64,
        mut f: impl FnMut(&mut Self, u64, u8) -> Result<(), BuddyError>,
    ) -> Result<(), BuddyError> {
        let mut pfn = start;
        while pfn < end {
            let piece_end = end.min(self.nodes.next_boundary(pfn));
            let align = if pfn == 0 { MAX_PAGE_ORDER as u32 } else { pfn.trailing_zeros() };
            let fit = 63 - (piece_end - pfn).leading_zeros();
            let order = align.min(fit).min(MAX_PAGE_ORDER as u32) as u8;
            f(self, pfn, order)?;
            pfn += 1 << order;
        }
        Ok(())
    }

    /// Linux's `__setup_per_zone_wmarks`, plus the pcp high/batch that
    /// depend on the zone size.
    fn setup_per_zone_wmarks(&mut self) {
        let total: u64 = self.zones.iter().map(|z| z.managed_pages).sum();
        if total == 0 {
            return;
        }
        let min_free_kbytes = self.min_free_kbytes();
        let pages_min = min_free_kbytes >> 2;
        for z in self.zones.iter_mut() {
            let managed = z.managed_pages;
            let tmp = pages_min * managed / total;
            // watermark_scale_factor = 10 (0.1% of the zone).
            let gap = (tmp >> 2).max(managed * 10 / 10_000);
            z.watermark = [tmp, tmp + gap, tmp + 2 * gap];
            let batch = Zone::batchsize(managed);
            for p in z.pcp.iter_mut() {
                p.batch = batch;
                p.high = 6 * batch;
            }
        }
    }

    /// The zonelist `gfp` walks from `cpu`: the preferred node's fallback
    /// order (nearest first) filtered by the node mask, each node's zones
    /// from `gfp.zone` down (Normal -> DMA32 -> DMA). Fills `out` with
    /// zone indexes, returns how many.
    pub fn zonelist(&self, cpu: usize, gfp: Gfp, out: &mut [usize; MAX_NR_ZONES]) -> Result<usize, BuddyError> {
        let nid = if gfp.nid == NUMA_NO_NODE { self.nodes.cpu_node(cpu) } else { gfp.nid };
        if usize::from(nid) >= self.nr_nodes() {
            return Err(BuddyError::BadNode(u64::from(nid)));
        }
        let mut n = 0;
        for &node in self.nodes.fallback(usize::from(nid)) {
            if gfp.nodemask & (1 << node) == 0 {
                continue;
            }
            for z in (0..=gfp.zone as usize).rev() {
                out[n] = usize::from(node) * NR_ZONES + z;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Allocates a block of `2^order` pages on `cpu`, walking the zonelist
    /// ([`zonelist`](Self::zonelist)): the preferred node's zones from
    /// `gfp.zone` down, then the other allowed nodes' by distance.
    /// Returns the head pfn.
    pub fn alloc_pages(&mut self, cpu: usize, order: u8, gfp: Gfp) -> Result<u64, BuddyError> {
        if order > MAX_PAGE_ORDER {
            return Err(BuddyError::BadOrder(order));
        }
        if cpu >= self.nr_cpus {
            return Err(BuddyError::BadCpu(cpu));
        }
        let mut list = [0usize; MAX_NR_ZONES];
        let nz = self.zonelist(cpu, gfp, &mut list)?;
        let list = &list[..nz];
        // First pass at the low watermark, as get_page_from_freelist with
        // ALLOC_WMARK_LOW; on failure wake reclaim and retry at min.
        let mt = gfp.migratetype;
        if gfp.wmark != WmarkPolicy::NoWatermarks {
            for &z in list {
                let mark = self.zones[z].wmark(Watermark::Low);
                if self.zones[z].managed_pages > 0 && self.zones[z].watermark_ok(order, mark) {
                    if let Some(pfn) = self.rmqueue(z, cpu, order, mt) {
                        return Ok(pfn);
                    }
                }
            }
            for &z in list {
                if self.zones[z].managed_pages > 0 {
                    self.zones[z].kswapd_wakeups += 1;
                }
            }
        }
        for &z in list {
            let min = self.zones[z].wmark(Watermark::Min);
            let mark = match gfp.wmark {
                WmarkPolicy::Normal => Some(min),
                // zone_watermark_fast: high-priority order-0 requests
                // ignore the boost at min (kswapd is woken at low).
                WmarkPolicy::Atomic if order == 0 => {
                    let min = self.zones[z].watermark[Watermark::Min as usize];
                    Some(min - min / 2)
                }
                WmarkPolicy::Atomic => Some(min - min / 2),
                WmarkPolicy::NoWatermarks => None,
            };
            if mark.is_none_or(|m| self.zones[z].watermark_ok(order, m)) {
                if let Some(pfn) = self.rmqueue(z, cpu, order, mt) {
                    return Ok(pfn);
                }
            }
        }
        Err(BuddyError::NoMemory)
    }

    /// Linux's `rmqueue`: small orders from the pcp list, the rest from the
    /// buddy. Marks the block allocated, recording the requested
    /// migratetype in it (whatever list served it).
    fn rmqueue(&mut self, z: usize, cpu: usize, order: u8, mt: MigrateType) -> Option<u64> {
        let list_mt = self.effective_mt(mt);
        let idx = if self.pcp_enabled && order <= PAGE_ALLOC_COSTLY_ORDER {
            self.rmqueue_pcplist(z, cpu, order, list_mt)?
        } else {
            self.rmqueue_buddy(z, order, list_mt)?
        };
        self.mark_allocated(idx, order, z, mt);
        Some(self.pfn_of(idx))
    }

    pub(crate) fn mark_allocated(&mut self, idx: u32, order: u8, z: usize, mt: MigrateType) {
        let p = &mut self.mem_map[idx as usize];
        p.flags = PG_HEAD;
        p.order = order;
        p.zone = z as u8;
        p.refcount = 1;
        p.owner = PageOwner::Unknown as u8;
        // No memcg charge yet (a slab's leftover object count is not one).
        p.inuse = 0;
        p.frozen = mt as u8;
        p.next = NIL;
        p.prev = NIL;
    }

    fn rmqueue_pcplist(&mut self, z: usize, cpu: usize, order: u8, mt: MigrateType) -> Option<u32> {
        let (o, m) = (order as usize, mt as usize);
        if self.zones[z].pcp[cpu].lists[o][m] == NIL {
            // Refill in bulk (rmqueue_bulk): one trip to the buddy serves
            // several allocations.
            let batch = (self.zones[z].pcp[cpu].batch >> order).max(2);
            for _ in 0..batch {
                let Some(idx) = self.rmqueue_buddy(z, order, mt) else {
                    break;
                };
                self.pcp_push(z, cpu, idx, order, mt);
            }
        }
        let pcp = &mut self.zones[z].pcp[cpu];
        let idx = pcp.lists[o][m];
        if idx == NIL {
            return None;
        }
        pcp.lists[o][m] = self.mem_map[idx as usize].next;
        pcp.count -= 1 << order;
        Some(idx)
    }

    fn pcp_push(&mut self, z: usize, cpu: usize, idx: u32, order: u8, mt: MigrateType) {
        let pcp = &mut self.zones[z].pcp[cpu];
        let p = &mut self.mem_map[idx as usize];
        p.flags = PG_PCP;
        p.order = order;
        p.zone = z as u8;
        p.frozen = mt as u8;
        p.next = pcp.lists[order as usize][mt as usize];
        pcp.lists[order as usize][mt as usize] = idx;
        pcp.count += 1 << order;
    }

    /// Linux's `__rmqueue`: the smallest block on the migratetype's own
    /// lists, else steal from another type (`__rmqueue_fallback`) and
    /// retry.
    fn rmqueue_buddy(&mut self, z: usize, order: u8, mt: MigrateType) -> Option<u32> {
        loop {
            if let Some(idx) = self.rmqueue_smallest(z, order, mt) {
                return Some(idx);
            }
            if !self.mobility || !self.rmqueue_fallback(z, order, mt) {
                return None;
            }
        }
    }

    /// Linux's `__rmqueue_smallest`: the smallest free block of at least
    /// `order` on `mt`'s lists, split down with `expand`.
    fn rmqueue_smallest(&mut self, z: usize, order: u8, mt: MigrateType) -> Option<u32> {
        for cur in order..=MAX_PAGE_ORDER {
            let head = self.zones[z].free_area[cur as usize].free_list[mt as usize];
            if head == NIL {
                continue;
            }
            self.del_from_free_list(z, head, cur);
            self.expand(z, head, order, cur, mt);
            return Some(head);
        }
        None
    }

    /// Linux's `expand`: gives the upper halves back to the free lists (of
    /// `mt`, the list the block came from) until the block at `idx` is of
    /// order `low`. Each upper half's head is the first write its
    /// descriptor sees since the block was freed.
    pub(crate) fn expand(&mut self, z: usize, idx: u32, low: u8, mut high: u8, mt: MigrateType) {
        while high > low {
            high -= 1;
            let buddy = idx + (1 << high);
            self.add_to_free_list(z, buddy, high, mt);
        }
    }

    /// Puts a free block on `mt`'s list of its order. A block of a whole
    /// pageblock or more makes its pageblocks `mt` (Linux's "take ownership
    /// for orders >= pageblock_order"), so a pageblock's type and the list
    /// holding it as a whole never disagree.
    pub(crate) fn add_to_free_list(&mut self, z: usize, idx: u32, order: u8, mt: MigrateType) {
        let p = &mut self.mem_map[idx as usize];
        p.flags = PG_BUDDY;
        p.order = order;
        p.zone = z as u8;
        p.refcount = 0;
        p.frozen = mt as u8;
        let zone = &mut self.zones[z];
        let area = &mut zone.free_area[order as usize];
        list_add(self.mem_map, &mut area.free_list[mt as usize], idx);
        area.nr_free += 1;
        area.nr_free_mt[mt as usize] += 1;
        zone.nr_free += 1 << order;
        if self.mobility && order >= PAGEBLOCK_ORDER {
            let pfn = self.pfn_of(idx);
            for pb in 0..1u64 << (order - PAGEBLOCK_ORDER) {
                self.set_pageblock_migratetype(pfn + (pb << PAGEBLOCK_ORDER), mt);
            }
        }
    }

    /// Takes a free block head off the list it is on (its `frozen` byte
    /// names the list's migratetype).
    pub(crate) fn del_from_free_list(&mut self, z: usize, idx: u32, order: u8) {
        let mt = MigrateType::from_u8(self.mem_map[idx as usize].frozen) as usize;
        let zone = &mut self.zones[z];
        let area = &mut zone.free_area[order as usize];
        list_del(self.mem_map, &mut area.free_list[mt], idx);
        area.nr_free -= 1;
        area.nr_free_mt[mt] -= 1;
        zone.nr_free -= 1 << order;
        self.mem_map[idx as usize].flags = 0;
    }

    /// Linux's `__free_one_page`: merges with free buddies as far as they go
    /// and puts the result on the free list of the pageblock's migratetype.
    pub(crate) fn free_one_page(&mut self, mut idx: u32, mut order: u8, z: usize) {
        self.mem_map[idx as usize].flags = 0;
        let mt = self.pageblock_migratetype(self.pfn_of(idx));
        while order < MAX_PAGE_ORDER {
            let pfn = self.pfn_of(idx);
            let buddy_pfn = pfn ^ (1 << order);
            let Some(bidx) = self.idx(buddy_pfn) else {
                break;
            };
            let b = &self.mem_map[bidx as usize];
            // page_is_buddy: a free block head of the same order and zone.
            if b.flags != PG_BUDDY || b.order != order || b.zone as usize != z {
                break;
            }
            self.del_from_free_list(z, bidx, order);
            idx = idx.min(bidx);
            order += 1;
        }
        self.add_to_free_list(z, idx, order, mt);
    }

    /// The head pfn of the free (buddy or pcp) block containing `pfn`, if
    /// any: a free block's head is `pfn` aligned down to some order, so
    /// there are only `NR_ORDERS` candidates to look at.
    pub fn free_block_containing(&self, pfn: u64) -> Option<u64> {
        (0..=MAX_PAGE_ORDER).find_map(|o| {
            let head = pfn & !((1u64 << o) - 1);
            let p = self.page(head)?;
            let free = p.flags & (PG_BUDDY | PG_PCP) != 0 && p.order >= o;
            free.then_some(head)
        })
    }

    /// Drops the allocation's reference on the block at `pfn` (Linux's
    /// `__free_pages`); when it was the last one, the block goes to the
    /// pcp list (small orders) or back to the buddy, merged.
    ///
    /// Double frees, frees of tail pages, of foreign pfns and with the wrong
    /// order are reported, not undefined behaviour.
    pub fn free_pages(&mut self, cpu: usize, pfn: u64, order: u8) -> Result<(), BuddyError> {
        if cpu >= self.nr_cpus {
            return Err(BuddyError::BadCpu(cpu));
        }
        let idx = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))?;
        let p = &mut self.mem_map[idx as usize];
        if p.flags & (PG_BUDDY | PG_PCP) != 0 {
            return Err(BuddyError::DoubleFree(pfn));
        }
        if p.flags & PG_HEAD == 0 {
            if self.free_block_containing(pfn).is_some() {
                return Err(BuddyError::DoubleFree(pfn));
            }
            return Err(BuddyError::NotAllocated(pfn));
        }
        if p.flags & PG_SLAB != 0 {
            return Err(BuddyError::SlabPage(pfn));
        }
        if p.order != order {
            return Err(BuddyError::OrderMismatch { pfn, allocated: p.order, freed: order });
        }
        if p.refcount > 1 {
            p.refcount -= 1;
            return Ok(());
        }
        p.refcount = 0;
        // The last reference: the memcg charge goes with it.
        crate::memcg::uncharge_page(p);
        let z = p.zone as usize;
        if z >= MAX_NR_ZONES {
            return Err(BuddyError::Corrupt("zone index in a block head"));
        }
        if self.pcp_enabled && order <= PAGE_ALLOC_COSTLY_ORDER {
            // free_unref_page: the pcp list of the pageblock's type now.
            let mt = self.pageblock_migratetype(pfn);
            self.pcp_push(z, cpu, idx, order, mt);
            let pcp = &self.zones[z].pcp[cpu];
            if pcp.count >= pcp.high {
                let batch = pcp.batch;
                self.free_pcppages_bulk(z, cpu, batch);
            }
        } else {
            self.free_one_page(idx, order, z);
        }
        Ok(())
    }

    /// Linux's `free_pcppages_bulk`: returns at least `pages` pages (or all)
    /// from a CPU's lists to the buddy, going round the lists (order by
    /// order, each migratetype). A block goes to the list of its
    /// pageblock's type at drain time.
    fn free_pcppages_bulk(&mut self, z: usize, cpu: usize, pages: u64) {
        const NR_LISTS: usize = PCP_ORDERS * MIGRATE_TYPES;
        let mut freed = 0;
        let mut l = 0;
        let mut empty_rounds = 0;
        while freed < pages && self.zones[z].pcp[cpu].count > 0 && empty_rounds < NR_LISTS {
            let (o, m) = (l / MIGRATE_TYPES, l % MIGRATE_TYPES);
            let idx = self.zones[z].pcp[cpu].lists[o][m];
            if idx == NIL {
                empty_rounds += 1;
            } else {
                empty_rounds = 0;
                let pcp = &mut self.zones[z].pcp[cpu];
                pcp.lists[o][m] = self.mem_map[idx as usize].next;
                pcp.count -= 1 << o;
                freed += 1 << o;
                self.free_one_page(idx, o as u8, z);
            }
            l = (l + 1) % NR_LISTS;
        }
    }

    /// Empties one CPU's pcp lists into the buddy (Linux's `drain_pages`).
    pub fn drain_pages(&mut self, cpu: usize) -> Result<(), BuddyError> {
        if cpu >= self.nr_cpus {
            return Err(BuddyError::BadCpu(cpu));
        }
        for z in 0..MAX_NR_ZONES {
            self.free_pcppages_bulk(z, cpu, u64::MAX);
        }
        Ok(())
    }

    /// Empties every CPU's pcp lists (Linux's `drain_all_pages`), e.g.
    /// before reporting fragmentation or when an allocation fails.
    pub fn drain_all_pages(&mut self) {
        for z in 0..MAX_NR_ZONES {
            for cpu in 0..self.nr_cpus {
                self.free_pcppages_bulk(z, cpu, u64::MAX);
            }
        }
    }

    /// Whether any zone is below its low watermark: the hook where a
    /// reclaimer (kswapd) would be woken.
    pub fn below_low_watermark(&self) -> Option<ZoneType> {
        self.zones.iter().find(|z| z.populated() && z.nr_free <= z.wmark(Watermark::Low)).map(|z| z.kind)
    }

    /// Walks every free list and pcp list and checks the invariants: heads
    /// flagged and aligned to their order, inside their zone, blocks
    /// disjoint, counts matching, no two free buddies left unmerged. Bounded
    /// by the descriptor count, so a corrupt (cyclic) list ends in an error.
    pub fn verify(&self) -> Result<(), BuddyError> {
        let limit = self.mem_map.len() as u64 + 1;
        for (z, zone) in self.zones.iter().enumerate() {
            let mut free = 0u64;
            for (o, area) in zone.free_area.iter().enumerate() {
                let mut n = 0u64;
                for (m, &list) in area.free_list.iter().enumerate() {
                    let mut n_mt = 0u64;
                    let mut prev = NIL;
                    let mut idx = list;
                    while idx != NIL {
                        let p = self.mem_map.get(idx as usize).ok_or(BuddyError::Corrupt("free list index"))?;
                        n_mt += 1;
                        if n_mt > limit {
                            return Err(BuddyError::Corrupt("free list cycle"));
                        }
                        if p.flags != PG_BUDDY || p.order as usize != o || p.zone as usize != z || p.prev != prev {
                            return Err(BuddyError::Corrupt("free block head"));
                        }
                        if p.frozen as usize != m || (!self.mobility && m != MigrateType::Unmovable as usize) {
                            return Err(BuddyError::Corrupt("free block on another migratetype's list"));
                        }
                        if self.mobility && o >= PAGEBLOCK_ORDER as usize {
                            let pfn = self.pfn_of(idx);
                            for pb in 0..1u64 << (o - PAGEBLOCK_ORDER as usize) {
                                if self.pageblock_migratetype(pfn + (pb << PAGEBLOCK_ORDER)) as usize != m {
                                    return Err(BuddyError::Corrupt(
                                        "whole free pageblock of another type than its list",
                                    ));
                                }
                            }
                        }
                        let pfn = self.pfn_of(idx);
                        if pfn & ((1 << o) - 1) != 0 {
                            return Err(BuddyError::Corrupt("free block misaligned"));
                        }
                        if self.zone_index_of_pfn(pfn) != z
                            || self.zone_index_of_pfn(pfn + (1 << o) - 1) != z
                            || self.idx(pfn + (1 << o) - 1).is_none()
                        {
                            return Err(BuddyError::Corrupt("free block outside its zone"));
                        }
                        if o < MAX_PAGE_ORDER as usize {
                            if let Some(b) = self.page(pfn ^ (1 << o)) {
                                if b.flags == PG_BUDDY && b.order as usize == o && b.zone as usize == z {
                                    return Err(BuddyError::Corrupt("free buddies not merged"));
                                }
                            }
                        }
                        prev = idx;
                        idx = p.next;
                    }
                    if n_mt != area.nr_free_mt[m] {
                        return Err(BuddyError::Corrupt("nr_free of a migratetype's free list"));
                    }
                    n += n_mt;
                }
                if n != area.nr_free {
                    return Err(BuddyError::Corrupt("nr_free of a free area"));
                }
                free += n << o;
            }
            if free != zone.nr_free {
                return Err(BuddyError::Corrupt("zone nr_free"));
            }
            for pcp in &zone.pcp {
                let mut pages = 0u64;
                for (l, &head) in pcp.lists.iter().flatten().enumerate() {
                    let (o, m) = (l / MIGRATE_TYPES, l % MIGRATE_TYPES);
                    let mut idx = head;
                    let mut n = 0;
                    while idx != NIL {
                        let p = self.mem_map.get(idx as usize).ok_or(BuddyError::Corrupt("pcp index"))?;
                        n += 1;
                        if n > limit {
                            return Err(BuddyError::Corrupt("pcp list cycle"));
                        }
                        if p.flags != PG_PCP || p.order as usize != o || p.zone as usize != z || p.frozen as usize != m
                        {
                            return Err(BuddyError::Corrupt("pcp block head"));
                        }
                        pages += 1 << o;
                        idx = p.next;
                    }
                }
                if pages != pcp.count {
                    return Err(BuddyError::Corrupt("pcp count"));
                }
            }
            if zone.nr_free + zone.pcp_pages() > zone.managed_pages {
                return Err(BuddyError::Corrupt("more free than managed"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
