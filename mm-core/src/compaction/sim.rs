//! A simulated zone for compaction's model tests and benches: a seeded
//! mixed movable/unmovable workload on a real [`BuddyAllocator`], a model
//! of page contents and mappings (virtual page -> pfn, with its reverse
//! map), and a [`Migrator`] over that model that moves contents and
//! mappings as the kernel's unmap/copy/remap would.

use super::{MigrateFail, Migrator};
use crate::buddy::{BuddyAllocator, MigrateType, GFP_HIGHUSER_MOVABLE, GFP_KERNEL};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

/// A xorshift64 generator: deterministic from its seed, no floating point.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The model of memory contents and mappings.
#[derive(Debug, Clone, Default)]
pub struct SimMemory {
    /// What each in-use movable frame holds.
    pub contents: BTreeMap<u64, u64>,
    /// Virtual page -> frame (the page tables).
    pub map: BTreeMap<u64, u64>,
    /// Frame -> virtual page (the reverse map).
    pub rmap: BTreeMap<u64, u64>,
    /// What each virtual page must hold (written once, never changed).
    pub expected: BTreeMap<u64, u64>,
    /// Frames whose migration fails (pinned, e.g. under DMA).
    pub pinned: BTreeSet<u64>,
    /// Frames isolated for migration right now.
    pub isolated: BTreeSet<u64>,
    /// Unmovable kernel allocations (never migrated).
    pub unmovable: Vec<u64>,
    /// Every migration done, (from, to).
    pub moves: Vec<(u64, u64)>,
    next_vpage: u64,
}

impl SimMemory {
    /// Maps a new virtual page on the movable frame `pfn` with fresh
    /// contents.
    pub fn add_movable(&mut self, pfn: u64, rng: &mut XorShift) {
        let v = self.next_vpage;
        self.next_vpage += 1;
        let data = rng.next_u64();
        self.contents.insert(pfn, data);
        self.map.insert(v, pfn);
        self.rmap.insert(pfn, v);
        self.expected.insert(v, data);
    }

    /// Unmaps the virtual page on `pfn` (munmap), returning whether it was
    /// one.
    pub fn remove_movable(&mut self, pfn: u64) -> bool {
        let Some(v) = self.rmap.remove(&pfn) else {
            return false;
        };
        self.map.remove(&v);
        self.expected.remove(&v);
        self.contents.remove(&pfn);
        self.pinned.remove(&pfn);
        true
    }

    /// Every virtual page holds what was written to it, through a mapping
    /// whose reverse map agrees: the first page that does not, if any.
    pub fn check_contents(&self) -> Result<(), u64> {
        for (&v, &pfn) in &self.map {
            if self.contents.get(&pfn) != self.expected.get(&v) || self.rmap.get(&pfn) != Some(&v) {
                return Err(v);
            }
        }
        if self.rmap.len() != self.map.len() || self.contents.len() != self.map.len() {
            return Err(u64::MAX);
        }
        Ok(())
    }
}

impl Migrator for SimMemory {
    fn isolate(&mut self, pfn: u64) -> bool {
        if self.rmap.contains_key(&pfn) && !self.isolated.contains(&pfn) {
            self.isolated.insert(pfn);
            true
        } else {
            false
        }
    }

    fn migrate(&mut self, src: u64, dst: u64) -> Result<(), MigrateFail> {
        if !self.isolated.contains(&src) {
            return Err(MigrateFail::Unmovable);
        }
        if self.pinned.contains(&src) {
            return Err(MigrateFail::Busy);
        }
        // The target must be a frame nobody uses.
        assert!(!self.contents.contains_key(&dst) && !self.rmap.contains_key(&dst), "target {dst:#x} in use");
        // Unmap, copy, remap.
        let v = self.rmap.remove(&src).ok_or(MigrateFail::Unmovable)?;
        let data = self.contents.remove(&src).ok_or(MigrateFail::Unmovable)?;
        self.contents.insert(dst, data);
        self.rmap.insert(dst, v);
        self.map.insert(v, dst);
        self.isolated.remove(&src);
        self.moves.push((src, dst));
        Ok(())
    }

    fn putback(&mut self, pfn: u64) {
        self.isolated.remove(&pfn);
    }
}

/// A mixed workload's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Seed of the generator.
    pub seed: u64,
    /// One allocation in this many is unmovable while filling (0: none).
    pub unmovable_one_in: u64,
    /// The same while churning (a workload whose mix shifts).
    pub churn_unmovable_one_in: u64,
    /// Fill the zone to this share of its pages, in percent.
    pub fill_percent: u64,
    /// Free-one, allocate-one steps after filling, as a share of the
    /// zone's pages in percent.
    pub churn_percent: u64,
    /// Finally free this share of the movable pages, in percent, at
    /// random (the holes that fragment free memory).
    pub free_percent: u64,
    /// Frames pinned (migration fails), per thousand movable pages.
    pub pinned_permille: u64,
    /// Boost the watermarks on fallbacks (Linux's default
    /// `watermark_boost_factor` 15000) and run a kswapd and kcompactd the
    /// way Linux's `balance_pgdat` does when the allocator reports a
    /// boosted zone: reclaim the boost's worth of movable pages (the
    /// workload's page cache, allocated again by its next steps), clear the
    /// boost, compact the zone for a pageblock.
    pub boost: bool,
}

/// What the kswapd/kcompactd of a [`Workload`] with `boost` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoostStats {
    /// kswapd wakeups for a boosted zone.
    pub wakeups: u64,
    /// Movable pages reclaimed for boosts.
    pub reclaimed: u64,
    /// Pages kcompactd migrated.
    pub migrated: u64,
}

/// Runs `w` on `buddy` (order-0 allocations on CPU 0), recording movable
/// pages and their contents in `sim`. Allocations that fail end the fill
/// phase early. Returns what the boost's kswapd and kcompactd did.
pub fn run_workload(buddy: &mut BuddyAllocator, sim: &mut SimMemory, w: &Workload, zone_pages: u64) -> BoostStats {
    let mut rng = XorShift(w.seed | 1);
    let mut live: Vec<u64> = Vec::new();
    let mut boost = BoostStats::default();
    if w.boost {
        buddy.set_watermark_boost_factor(15_000);
    }
    let mut alloc =
        |buddy: &mut BuddyAllocator, sim: &mut SimMemory, rng: &mut XorShift, live: &mut Vec<u64>, one_in: u64| {
            let unmovable = one_in > 0 && rng.below(one_in) == 0;
            let gfp = if unmovable { GFP_KERNEL } else { GFP_HIGHUSER_MOVABLE };
            let Ok(pfn) = buddy.alloc_pages(0, 0, gfp) else {
                return false;
            };
            if unmovable {
                sim.unmovable.push(pfn);
            } else {
                sim.add_movable(pfn, rng);
                if rng.below(1000) < w.pinned_permille {
                    sim.pinned.insert(pfn);
                }
            }
            live.push(pfn);
            if let Some(z) = buddy.take_boosted_zone() {
                kswapd_boost(buddy, sim, rng, live, z, &mut boost);
            }
            true
        };
    let target = zone_pages * w.fill_percent / 100;
    while (live.len() as u64) < target {
        if !alloc(buddy, sim, &mut rng, &mut live, w.unmovable_one_in) {
            break;
        }
    }
    for _ in 0..zone_pages * w.churn_percent / 100 {
        if live.is_empty() {
            break;
        }
        // Pages reclaimed for a boost are the workload's page cache: its
        // next steps allocate them again before freeing anything.
        if live.len() as u64 >= target {
            let i = rng.below(live.len() as u64) as usize;
            let pfn = live.swap_remove(i);
            free_one(buddy, sim, pfn);
        }
        alloc(buddy, sim, &mut rng, &mut live, w.churn_unmovable_one_in);
    }
    let movable: Vec<u64> = sim.rmap.keys().copied().collect();
    for pfn in movable {
        if rng.below(100) < w.free_percent {
            free_one(buddy, sim, pfn);
        }
    }
    boost
}

/// Linux's `balance_pgdat` for a boosted zone: reclaims the boost's worth
/// of movable pages (random ones: the model has no LRU order), takes the
/// boost off, and wakes kcompactd for a pageblock (`compact_zone` at
/// order 9 until a pageblock is free or the scanners meet).
fn kswapd_boost(
    buddy: &mut BuddyAllocator,
    sim: &mut SimMemory,
    rng: &mut XorShift,
    live: &mut Vec<u64>,
    z: crate::buddy::ZoneType,
    stats: &mut BoostStats,
) {
    stats.wakeups += 1;
    let boost = buddy.zone(z).watermark_boost;
    let mut reclaimed = 0;
    let mut tries = 0;
    while reclaimed < boost && tries < 8 * boost && !live.is_empty() {
        tries += 1;
        let i = rng.below(live.len() as u64) as usize;
        let pfn = live[i];
        if !sim.rmap.contains_key(&pfn) || sim.pinned.contains(&pfn) {
            continue;
        }
        live.swap_remove(i);
        free_one(buddy, sim, pfn);
        reclaimed += 1;
    }
    stats.reclaimed += reclaimed;
    buddy.clear_watermark_boost(z, boost);
    let moves = sim.moves.len();
    // Consistency errors would show in the caller's verify().
    let _ = super::compact_zone(buddy, z, Some(crate::buddy::PAGEBLOCK_ORDER), MigrateType::Movable, sim);
    // Compaction moved movable pages: follow them in `live`, in the order
    // they moved (a freed source may have become a later target).
    if sim.moves.len() > moves {
        let mut at: BTreeMap<u64, usize> = live.iter().enumerate().map(|(i, &p)| (p, i)).collect();
        for &(from, to) in &sim.moves[moves..] {
            if let Some(i) = at.remove(&from) {
                live[i] = to;
                at.insert(to, i);
            }
        }
    }
    stats.migrated += (sim.moves.len() - moves) as u64;
}

fn free_one(buddy: &mut BuddyAllocator, sim: &mut SimMemory, pfn: u64) {
    if !sim.remove_movable(pfn) {
        if let Some(i) = sim.unmovable.iter().position(|&p| p == pfn) {
            sim.unmovable.swap_remove(i);
        }
    }
    // The model and the allocator agree on what is allocated, so this
    // cannot fail; a failure is a bug the caller's checks will report.
    let _ = buddy.free_pages(0, pfn, 0);
}

/// The allocated pages per migratetype of every pageblock of `[start,
/// end)`, as `(pfn, usage)`.
pub fn pageblock_usages(buddy: &BuddyAllocator, start: u64, end: u64) -> Vec<(u64, [u64; 3])> {
    let mut out = Vec::new();
    let mut pfn = start & !(crate::buddy::PAGEBLOCK_NR_PAGES - 1);
    while pfn < end {
        out.push((pfn, buddy.pageblock_usage(pfn)));
        pfn += crate::buddy::PAGEBLOCK_NR_PAGES;
    }
    out
}

/// Fewest migrations that could free `blocks` pageblocks of `[start, end)`
/// (the emptiest pageblocks holding only movable pages): the oracle
/// compaction's migrations per block are compared with.
pub fn oracle_migrations(buddy: &BuddyAllocator, start: u64, end: u64, blocks: usize) -> Option<u64> {
    let mut costs: Vec<u64> = pageblock_usages(buddy, start, end)
        .into_iter()
        .filter(|(_, u)| u[MigrateType::Unmovable as usize] == 0 && u[MigrateType::Reclaimable as usize] == 0)
        .map(|(_, u)| u[MigrateType::Movable as usize])
        .collect();
    if costs.len() < blocks {
        return None;
    }
    costs.sort_unstable();
    Some(costs[..blocks].iter().sum())
}
