//! The reclaim-quality reference: a fixed-seed page-access trace, exact
//! LRU's and Belady's OPT fault counts for it at a frame count, and the
//! same trace run through [`Lruvec`]'s reclaim natively.
//!
//! The guest replays the same trace from ring 3 ([`TraceIter`]: integer
//! only, no heap, over a [`zipf_table`] in a static array), counts its
//! major faults and the
//! host compares them with [`exact_lru`] and [`opt`] here. The native run
//! ([`lruvec_sim`]) shows what the list logic achieves before any guest is
//! involved: every access to a resident page sets its PTE's accessed bit,
//! a fault on a full memory runs direct reclaim (`try_to_free_pages` for
//! `SWAP_CLUSTER_MAX` pages), evicted pages leave a workingset shadow that
//! their refault hands back.
//!
//! The trace is a zipfian hot set (rank `r` drawn with weight `1/(r+1)`)
//! interrupted every `scan_period` accesses by a sequential scan over a
//! region larger than memory (a backup, a `grep -r`): exact LRU lets each
//! scan flush the hot set; a scan-resistant policy keeps it.

use super::{
    LruStats, Lruvec, ReclaimOps, ReclaimOutcome, Referenced, ScanControl, Shadow, MAX_RECLAIM_RETRIES,
    SWAP_CLUSTER_MAX,
};
use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

/// The trace's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceSpec {
    /// Seed of the xorshift generator.
    pub seed: u64,
    /// Accesses in the trace.
    pub len: usize,
    /// Pages the zipfian part draws from (page ids `0..zipf_pages`, id =
    /// popularity rank).
    pub zipf_pages: u32,
    /// Pages each scan touches once, in order (ids after the zipf pages;
    /// the same region every time).
    pub scan_pages: u32,
    /// Zipfian accesses between scans (0: no scans).
    pub scan_period: usize,
}

impl TraceSpec {
    /// The bench's trace: 4096 zipfian pages, a 3072-page scan after every
    /// 20000 accesses, 200000 accesses.
    pub const DEFAULT: TraceSpec = TraceSpec {
        seed: 0x5eed_cafe_f00d_d00d,
        len: 200_000,
        zipf_pages: 4096,
        scan_pages: 3072,
        scan_period: 20_000,
    };
}

/// A generated trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Page ids in access order.
    pub accesses: Vec<u32>,
    /// Positions just after each scan (where scan resistance is measured).
    pub scan_ends: Vec<usize>,
    /// Distinct page ids (`zipf_pages + scan_pages`).
    pub nr_pages: u32,
}

/// The xorshift64 generator the trace uses (integer only).
#[derive(Debug, Clone)]
pub struct XorShift64(pub u64);

impl XorShift64 {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Fills `out` with the zipfian table for `out.len()` ranks: cumulative
/// weights `2^32 / (r + 1)` (integer only, so a program without floating
/// point, or without a heap, can build it in a static array).
pub fn zipf_table(out: &mut [u64]) {
    let mut acc = 0u64;
    for (r, c) in out.iter_mut().enumerate() {
        acc += (1u64 << 32) / (r as u64 + 1);
        *c = acc;
    }
}

/// A rank drawn from a [`zipf_table`] with `rng`.
pub fn zipf_sample(table: &[u64], rng: &mut XorShift64) -> u32 {
    let total = table.last().copied().unwrap_or(1).max(1);
    let x = rng.next_u64() % total;
    table.partition_point(|&c| c <= x) as u32
}

/// The trace of a [`TraceSpec`] as a stream: page ids one at a time, over
/// a caller-held zipf table of `spec.zipf_pages` entries (no allocation:
/// what a ring-3 replayer uses).
#[derive(Debug, Clone)]
pub struct TraceIter<'a> {
    spec: TraceSpec,
    table: &'a [u64],
    rng: XorShift64,
    emitted: usize,
    since_scan: usize,
    /// Position in the current scan, while one is running.
    scan_at: Option<u32>,
}

impl<'a> TraceIter<'a> {
    /// The stream for `spec`; `table` must come from [`zipf_table`] with
    /// `spec.zipf_pages` entries.
    pub fn new(mut spec: TraceSpec, table: &'a [u64]) -> TraceIter<'a> {
        if spec.scan_pages == 0 {
            spec.scan_period = 0;
        }
        TraceIter { spec, table, rng: XorShift64(spec.seed | 1), emitted: 0, since_scan: 0, scan_at: None }
    }

    /// Whether the access just returned ended a scan.
    pub fn scan_just_ended(&self) -> bool {
        self.scan_at.is_none() && self.since_scan == 0 && self.emitted > 0 && self.spec.scan_period > 0
    }
}

impl Iterator for TraceIter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.emitted >= self.spec.len {
            return None;
        }
        self.emitted += 1;
        if self.scan_at.is_none() && self.spec.scan_period > 0 && self.since_scan == self.spec.scan_period {
            self.scan_at = Some(0);
        }
        if let Some(i) = self.scan_at {
            let page = self.spec.zipf_pages + i;
            if i + 1 >= self.spec.scan_pages {
                self.scan_at = None;
                self.since_scan = 0;
            } else {
                self.scan_at = Some(i + 1);
            }
            return Some(page);
        }
        self.since_scan += 1;
        Some(zipf_sample(self.table, &mut self.rng))
    }
}

/// Generates the trace of `spec` (the same every time for a spec, and the
/// same as [`TraceIter`] streams).
pub fn generate(spec: &TraceSpec) -> Trace {
    let mut table = vec![0u64; spec.zipf_pages.max(1) as usize];
    zipf_table(&mut table);
    let mut it = TraceIter::new(*spec, &table);
    let mut accesses = Vec::with_capacity(spec.len);
    let mut scan_ends = Vec::new();
    while let Some(p) = it.next() {
        accesses.push(p);
        if it.scan_just_ended() {
            scan_ends.push(accesses.len());
        }
    }
    Trace { accesses, scan_ends, nr_pages: spec.zipf_pages + spec.scan_pages }
}

/// A policy's result on a trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Accesses replayed (the whole trace unless reclaim gave up).
    pub accesses: u64,
    /// Page faults (cold misses included).
    pub faults: u64,
    /// Summed over the scans: the pages of the hot set resident just after
    /// the scan.
    pub hot_resident_after_scans: u64,
    /// Summed over the scans: the hot set's size (the maximum of the
    /// above).
    pub hot_checked: u64,
}

impl Outcome {
    fn check_hot(&mut self, hot: u32, resident: impl Fn(u32) -> bool) {
        self.hot_resident_after_scans += (0..hot).filter(|&p| resident(p)).count() as u64;
        self.hot_checked += hot as u64;
    }
}

/// Exact LRU with `frames` frames: faults, and how much of the hot set
/// (pages `0..hot`) survives each scan.
pub fn exact_lru(trace: &Trace, frames: usize, hot: u32) -> Outcome {
    let mut out = Outcome::default();
    let mut last: Vec<Option<u64>> = vec![None; trace.nr_pages as usize];
    let mut order: BTreeSet<(u64, u32)> = BTreeSet::new();
    let mut ends = trace.scan_ends.iter().peekable();
    for (t, &p) in trace.accesses.iter().enumerate() {
        if let Some(old) = last[p as usize] {
            order.remove(&(old, p));
        } else {
            out.faults += 1;
            if order.len() >= frames {
                if let Some((_, victim)) = order.pop_first() {
                    last[victim as usize] = None;
                }
            }
        }
        order.insert((t as u64, p));
        last[p as usize] = Some(t as u64);
        if ends.peek() == Some(&&(t + 1)) {
            ends.next();
            out.check_hot(hot, |p| last[p as usize].is_some());
        }
    }
    out.accesses = trace.accesses.len() as u64;
    out
}

/// Belady's OPT (evict the page used furthest in the future) with
/// `frames` frames: the fewest faults any policy can have.
pub fn opt(trace: &Trace, frames: usize, hot: u32) -> Outcome {
    let n = trace.accesses.len();
    let never = u64::MAX;
    // next_use[i]: where accesses[i]'s page is used next.
    let mut next_use = vec![never; n];
    let mut seen = vec![never; trace.nr_pages as usize];
    for i in (0..n).rev() {
        let p = trace.accesses[i] as usize;
        next_use[i] = seen[p];
        seen[p] = i as u64;
    }
    let mut out = Outcome::default();
    let mut key: Vec<Option<u64>> = vec![None; trace.nr_pages as usize];
    let mut resident: BTreeSet<(u64, u32)> = BTreeSet::new();
    let mut ends = trace.scan_ends.iter().peekable();
    for (t, &p) in trace.accesses.iter().enumerate() {
        if let Some(k) = key[p as usize] {
            resident.remove(&(k, p));
        } else {
            out.faults += 1;
            if resident.len() >= frames {
                if let Some((_, victim)) = resident.pop_last() {
                    key[victim as usize] = None;
                }
            }
        }
        // Ties among never-used-again pages broken by page id: any is optimal.
        resident.insert((next_use[t], p));
        key[p as usize] = Some(next_use[t]);
        if ends.peek() == Some(&&(t + 1)) {
            ends.next();
            out.check_hot(hot, |p| key[p as usize].is_some());
        }
    }
    out.accesses = trace.accesses.len() as u64;
    out
}

/// The simulated memory under [`lruvec_sim`]: page tables reduced to a
/// page -> frame map with an accessed bit per frame.
struct SimMem {
    frame_of: Vec<Option<u32>>,
    page_of: Vec<u32>,
    young: Vec<bool>,
    shadow: Vec<Option<Shadow>>,
    free: Vec<u32>,
}

impl ReclaimOps for SimMem {
    fn folio_referenced(&mut self, pfn: u64) -> Referenced {
        let y = core::mem::replace(&mut self.young[pfn as usize], false);
        Referenced { ptes: y as u32, ..Referenced::default() }
    }

    fn reclaim_folio(&mut self, pfn: u64, _anon: bool, shadow: Shadow, _clean_only: bool) -> ReclaimOutcome {
        // try_to_unmap, swap-out, free; the shadow goes in the swap slot.
        let page = self.page_of[pfn as usize] as usize;
        self.frame_of[page] = None;
        self.shadow[page] = Some(shadow);
        self.free.push(pfn as u32);
        ReclaimOutcome::Freed { io: true }
    }
}

/// The trace through [`Lruvec`] with `frames` frames of anon memory and
/// swap: each fault on full memory runs direct reclaim for `batch` pages
/// (Linux: `SWAP_CLUSTER_MAX`). Returns the outcome and the counters.
pub fn lruvec_sim(trace: &Trace, frames: usize, hot: u32, swappiness: u32, batch: u64) -> (Outcome, LruStats) {
    let mut lru = match Lruvec::new(0, frames) {
        Ok(l) => l,
        Err(_) => return (Outcome::default(), LruStats::default()),
    };
    let pages = trace.nr_pages as usize;
    let mut mem = SimMem {
        frame_of: vec![None; pages],
        page_of: vec![0; frames],
        young: vec![false; frames],
        shadow: vec![None; pages],
        free: (0..frames as u32).rev().collect(),
    };
    let mut out = Outcome::default();
    let mut ends = trace.scan_ends.iter().peekable();
    for (t, &p) in trace.accesses.iter().enumerate() {
        if let Some(f) = mem.frame_of[p as usize] {
            // The CPU sets the accessed bit.
            mem.young[f as usize] = true;
        } else {
            out.faults += 1;
            // The allocator's slow path: direct reclaim, retried while it
            // makes no progress (`should_reclaim_retry`).
            let mut retries = 0;
            while mem.free.is_empty() && retries < MAX_RECLAIM_RETRIES {
                let mut sc = ScanControl::new(batch.max(1), swappiness, true, false);
                if lru.try_to_free_pages(&mut sc, &mut mem) == 0 {
                    retries += 1;
                }
            }
            let Some(f) = mem.free.pop() else { break };
            mem.frame_of[p as usize] = Some(f);
            mem.page_of[f as usize] = p;
            mem.young[f as usize] = true;
            let added = match mem.shadow[p as usize].take() {
                Some(s) => lru.folio_add_lru_refault(f as u64, true, s, true).map(|_| ()),
                None => lru.folio_add_lru(f as u64, true),
            };
            if added.is_err() {
                break;
            }
        }
        out.accesses += 1;
        if ends.peek() == Some(&&(t + 1)) {
            ends.next();
            out.check_hot(hot, |p| mem.frame_of[p as usize].is_some());
        }
    }
    (out, *lru.stat())
}

/// [`lruvec_sim`] with Linux's batch (`SWAP_CLUSTER_MAX`).
pub fn lruvec_default(trace: &Trace, frames: usize, hot: u32, swappiness: u32) -> (Outcome, LruStats) {
    lruvec_sim(trace, frames, hot, swappiness, SWAP_CLUSTER_MAX)
}
