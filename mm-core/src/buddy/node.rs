//! NUMA nodes in the page allocator (Linux's `pg_data_t` and zonelists):
//! which node each pfn belongs to, each CPU's node, and each node's
//! fallback order by distance. The allocator keeps one set of zones per
//! node (zone index `node * NR_ZONES + zone type`) and walks, for an
//! allocation, the preferred node's zonelist: its nodes nearest first,
//! each node's zones from the highest allowed down (Linux's node-ordered
//! zonelist).

use super::{BuddyError, ZoneType, MAX_CPUS, NR_ZONES, PAGEBLOCK_NR_PAGES};
use crate::numa::{Numa, MAX_MEM_RANGES, MAX_NODES};

/// Nodes the allocator keeps zones for (Linux's `MAX_NUMNODES`).
pub const MAX_NUMNODES: usize = MAX_NODES;
/// Zones over all nodes.
pub const MAX_NR_ZONES: usize = MAX_NUMNODES * NR_ZONES;
/// "No particular node": the allocating CPU's node (Linux's
/// `NUMA_NO_NODE`).
pub const NUMA_NO_NODE: u8 = 0xff;
/// A node mask allowing every node.
pub const NODEMASK_ALL: u8 = u8::MAX;

const _: () = assert!(MAX_NUMNODES <= 8, "node masks are a u8");

/// One zone of one node: the index `node * NR_ZONES + zone type` into
/// the allocator's zones. A bare [`ZoneType`] converts to node 0's zone
/// (the only node without NUMA), so the zone-keyed reports and
/// compaction take either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneId(usize);

impl ZoneId {
    /// Node `node`'s zone of type `z` (a node beyond [`MAX_NUMNODES`]
    /// names the last one).
    pub const fn new(node: u8, z: ZoneType) -> ZoneId {
        let n = if (node as usize) < MAX_NUMNODES { node as usize } else { MAX_NUMNODES - 1 };
        ZoneId(n * NR_ZONES + z as usize)
    }

    /// The zone with index `i` (`node * NR_ZONES + type`), if in range.
    pub const fn from_index(i: usize) -> Option<ZoneId> {
        if i < MAX_NR_ZONES {
            Some(ZoneId(i))
        } else {
            None
        }
    }

    /// Its index into the allocator's zones.
    pub const fn index(self) -> usize {
        self.0
    }

    /// Its node.
    pub const fn node(self) -> u8 {
        (self.0 / NR_ZONES) as u8
    }

    /// Its type.
    pub const fn kind(self) -> ZoneType {
        ZoneType::ALL[self.0 % NR_ZONES]
    }
}

impl From<ZoneType> for ZoneId {
    fn from(z: ZoneType) -> ZoneId {
        ZoneId::new(0, z)
    }
}

/// The node layout the allocator is built with: node ranges in pfns (from
/// the SRAT), each CPU's node, each node's fallback order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLayout {
    nr_nodes: usize,
    /// `(start_pfn, end_pfn, node)`, sorted by start, disjoint.
    ranges: [(u64, u64, u8); MAX_MEM_RANGES],
    nr_ranges: usize,
    cpu_node: [u8; MAX_CPUS],
    fallback: [[u8; MAX_NUMNODES]; MAX_NUMNODES],
}

impl Default for NodeLayout {
    fn default() -> Self {
        Self::single()
    }
}

impl NodeLayout {
    /// One node holding everything (no SRAT: Linux's "fake" node 0).
    pub const fn single() -> NodeLayout {
        NodeLayout {
            nr_nodes: 1,
            ranges: [(0, 0, 0); MAX_MEM_RANGES],
            nr_ranges: 0,
            cpu_node: [0; MAX_CPUS],
            fallback: [[0; MAX_NUMNODES]; MAX_NUMNODES],
        }
    }

    /// A layout of `nr_nodes` nodes: `ranges` are `(start_pfn, end_pfn,
    /// node)`, pageblock-aligned and disjoint; `cpu_node[c]` is CPU c's
    /// node; `distance(a, b)` orders each node's fallbacks (nearest
    /// first, ties by node number, as Linux's `find_next_best_node`).
    /// Memory outside every range belongs to node 0 (as Linux puts
    /// memory the SRAT misses on a node it has).
    pub fn new(
        nr_nodes: usize,
        ranges: &[(u64, u64, u8)],
        cpu_node: &[u8],
        distance: impl Fn(usize, usize) -> u8,
    ) -> Result<NodeLayout, BuddyError> {
        if nr_nodes == 0 || nr_nodes > MAX_NUMNODES {
            return Err(BuddyError::BadNode(nr_nodes as u64));
        }
        if ranges.len() > MAX_MEM_RANGES {
            return Err(BuddyError::Corrupt("more node ranges than MAX_MEM_RANGES"));
        }
        let mut l = NodeLayout { nr_nodes, ..NodeLayout::single() };
        for &(s, e, n) in ranges {
            if s >= e {
                return Err(BuddyError::BadRange { start: s, end: e });
            }
            if usize::from(n) >= nr_nodes {
                return Err(BuddyError::BadNode(u64::from(n)));
            }
            // A pageblock never spans two nodes (its migratetype is one
            // byte), nor does a buddy block.
            if s % PAGEBLOCK_NR_PAGES != 0 || e % PAGEBLOCK_NR_PAGES != 0 {
                return Err(BuddyError::BadRange { start: s, end: e });
            }
            l.ranges[l.nr_ranges] = (s, e, n);
            l.nr_ranges += 1;
        }
        let r = &mut l.ranges[..l.nr_ranges];
        r.sort_unstable_by_key(|x| x.0);
        if r.windows(2).any(|w| w[0].1 > w[1].0) {
            return Err(BuddyError::Corrupt("node ranges overlap"));
        }
        for (c, &n) in cpu_node.iter().enumerate().take(MAX_CPUS) {
            if usize::from(n) >= nr_nodes {
                return Err(BuddyError::BadNode(u64::from(n)));
            }
            l.cpu_node[c] = n;
        }
        for node in 0..nr_nodes {
            let out = &mut l.fallback[node];
            for (i, o) in out.iter_mut().enumerate().take(nr_nodes) {
                *o = i as u8;
            }
            let key = |x: u8| (x as usize != node, distance(node, x as usize), x);
            // Insertion sort: at most eight entries, no allocation.
            for i in 1..nr_nodes {
                let mut j = i;
                while j > 0 && key(out[j - 1]) > key(out[j]) {
                    out.swap(j - 1, j);
                    j -= 1;
                }
            }
        }
        Ok(l)
    }

    /// The layout an SRAT/SLIT describes (`cpu_node[c]`: CPU c's node, by
    /// CPU number). Ranges are rounded inwards to pageblocks; what that
    /// drops falls to node 0.
    pub fn from_numa(numa: &Numa, cpu_node: &[u8]) -> Result<NodeLayout, BuddyError> {
        let mut ranges = [(0u64, 0u64, 0u8); MAX_MEM_RANGES];
        let mut n = 0;
        for r in numa.mem_ranges() {
            let s = (r.base >> 12).div_ceil(PAGEBLOCK_NR_PAGES) * PAGEBLOCK_NR_PAGES;
            let e = (r.end() >> 12) / PAGEBLOCK_NR_PAGES * PAGEBLOCK_NR_PAGES;
            if s < e && n < MAX_MEM_RANGES {
                ranges[n] = (s, e, r.node);
                n += 1;
            }
        }
        NodeLayout::new(numa.nr_nodes.max(1), &ranges[..n], cpu_node, |a, b| numa.distance(a, b))
    }

    /// Number of nodes.
    pub fn nr_nodes(&self) -> usize {
        self.nr_nodes
    }

    /// The node of `pfn`.
    #[inline]
    pub fn node_of_pfn(&self, pfn: u64) -> u8 {
        self.ranges[..self.nr_ranges].iter().find(|r| pfn >= r.0 && pfn < r.1).map_or(0, |r| r.2)
    }

    /// The first pfn above `pfn` where the node may change (a range
    /// boundary), or `u64::MAX`.
    pub fn next_boundary(&self, pfn: u64) -> u64 {
        self.ranges[..self.nr_ranges].iter().flat_map(|r| [r.0, r.1]).filter(|&b| b > pfn).min().unwrap_or(u64::MAX)
    }

    /// CPU `cpu`'s node.
    #[inline]
    pub fn cpu_node(&self, cpu: usize) -> u8 {
        self.cpu_node.get(cpu).copied().unwrap_or(0)
    }

    /// Node `node`'s fallback order: itself, then by distance.
    pub fn fallback(&self, node: usize) -> &[u8] {
        &self.fallback[node.min(MAX_NUMNODES - 1)][..self.nr_nodes]
    }
}

/// Per-node allocation counters (Linux's `numastat`: `numa_hit`,
/// `numa_miss`, `numa_foreign`, `interleave_hit`, `local_node`,
/// `other_node`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NumaStat {
    /// Allocations that wanted this node and got it.
    pub numa_hit: u64,
    /// Allocations served here that wanted another node.
    pub numa_miss: u64,
    /// Allocations that wanted this node and got another.
    pub numa_foreign: u64,
    /// Interleaved allocations that got the node interleaving chose.
    pub interleave_hit: u64,
    /// Allocations served here for a CPU of this node.
    pub local_node: u64,
    /// Allocations served here for a CPU of another node.
    pub other_node: u64,
}

/// Which counters one allocation bumps (Linux's `zone_statistics`):
/// `preferred` is the node it wanted, `got` the node of the page,
/// `local` the allocating CPU's node, `interleave` whether an interleave
/// policy chose `preferred`; `stats` is indexed by node.
pub fn numa_account(preferred: u8, got: u8, local: u8, interleave: bool, stats: &mut [NumaStat]) {
    let n = stats.len();
    let (p, g) = (usize::from(preferred), usize::from(got));
    if g >= n {
        return;
    }
    if p == g || p >= n {
        stats[g].numa_hit += 1;
        if interleave && p == g {
            stats[g].interleave_hit += 1;
        }
    } else {
        stats[g].numa_miss += 1;
        stats[p].numa_foreign += 1;
    }
    if got == local {
        stats[g].local_node += 1;
    } else {
        stats[g].other_node += 1;
    }
}
