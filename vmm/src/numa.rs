//! The guest's NUMA topology (`vmm run --numa`): how many nodes, which
//! guest-physical memory and which vCPUs each holds, and the distances
//! between them. The VMM describes it to the guest in ACPI SRAT and SLIT
//! tables (boot/acpi.rs), as firmware does on a real NUMA machine, and
//! binds each node's memory to a host node where the host has several
//! ([`bind_to_host`]).
//!
//! Spec forms:
//! - `N`: N nodes, --mem split equally (in [`NODE_ALIGN`] units, the
//!   last node takes the rest) and the vCPUs split into consecutive
//!   blocks (more nodes than vCPUs leaves the last nodes without CPUs);
//! - `0=1G,1=1G[,cpus=0-1:2-3][,distance=10:20]`: each node's size (they
//!   must add up to --mem), its vCPUs (one `:`-separated list per node,
//!   each `A-B`, `A` or `A+B+...`, empty for a node without CPUs) and the
//!   distances (`LOCAL:REMOTE` for every pair, or the whole N x N matrix
//!   row by row, `:`-separated).

use crate::layout::{ram_ranges, MIB};
use crate::memory::{human, parse_size};
pub use mm_core::numa::MAX_NODES;

/// Node sizes are multiples of this (4 MiB, the guest's largest buddy
/// block): no free block straddles two nodes.
pub const NODE_ALIGN: u64 = 4 * MIB;
/// ACPI's distance from a node to itself.
pub const LOCAL_DISTANCE: u8 = 10;
/// The distance `--numa N` gives between two different nodes (Linux's
/// `REMOTE_DISTANCE`).
pub const REMOTE_DISTANCE: u8 = 20;

/// A `--numa` spec as written, before --mem and --cpus are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumaSpec {
    /// `N` equal nodes.
    Equal(u8),
    /// Explicit nodes.
    Explicit {
        /// Each node's memory, node 0 first.
        sizes: Vec<u64>,
        /// Each node's vCPUs (`cpus=`), or split as `Equal` does.
        cpus: Option<Vec<Vec<u8>>>,
        /// `distance=`: two values (local, remote) or N x N.
        distance: Option<Vec<u8>>,
    },
}

/// A node of the resolved topology.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// Bytes of RAM.
    pub size: u64,
    /// Its guest-physical ranges `(start, end)` (more than one where the
    /// node spans the PCI hole below 4 GiB).
    pub ranges: Vec<(u64, u64)>,
    /// Its vCPUs (= APIC IDs).
    pub cpus: Vec<u8>,
}

/// The resolved topology the VMM describes to the guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Topology {
    /// The nodes, node 0 first.
    pub nodes: Vec<Node>,
    /// `distance[a][b]`, SLIT's matrix.
    pub distance: Vec<Vec<u8>>,
}

/// What is wrong with a `--numa` spec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NumaError {
    /// Not parseable.
    #[error("--numa {spec}: {why}; write N (equal nodes) or 0=SIZE,1=SIZE[,cpus=0-1:2-3][,distance=10:20]")]
    Syntax {
        /// The spec.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// Zero nodes or too many.
    #[error("--numa: {0} nodes; the VMM describes 1 to {MAX_NODES}")]
    NodeCount(usize),
    /// The node sizes do not add up to --mem.
    #[error("--numa: the nodes hold {nodes} but --mem is {mem}; make the sizes add up to --mem")]
    SizeSum {
        /// Their sum.
        nodes: String,
        /// --mem.
        mem: String,
    },
    /// A node without memory.
    #[error("--numa: node {0} has no memory; every node needs at least {align} (memory-less nodes are not supported)", align = human(NODE_ALIGN))]
    EmptyNode(usize),
    /// A size that is not a multiple of [`NODE_ALIGN`].
    #[error("--numa: node {node}'s {size} is not a multiple of {align} (the guest's largest buddy block: no block may straddle two nodes)", align = human(NODE_ALIGN))]
    Unaligned {
        /// The node.
        node: usize,
        /// Its size.
        size: String,
    },
    /// `cpus=` names a vCPU that does not exist, twice, or misses one.
    #[error("--numa cpus=: {0}")]
    Cpus(String),
    /// `distance=` is wrong.
    #[error("--numa distance=: {0}")]
    Distance(String),
}

fn syntax(spec: &str, why: impl Into<String>) -> NumaError {
    NumaError::Syntax { spec: spec.to_string(), why: why.into() }
}

fn parse_cpu_list(spec: &str, s: &str) -> Result<Vec<u8>, NumaError> {
    let mut v = Vec::new();
    for part in s.split('+').filter(|p| !p.is_empty()) {
        let num =
            |t: &str| t.trim().parse::<u8>().map_err(|_| syntax(spec, format!("'{t}' in cpus= is not a vCPU number")));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(syntax(spec, format!("the vCPU range {part} runs backwards")));
                }
                v.extend(a..=b);
            }
            None => v.push(num(part)?),
        }
    }
    Ok(v)
}

/// Parses a `--numa` spec (the syntax; [`NumaSpec::resolve`] checks it
/// against --mem and --cpus).
pub fn parse(spec: &str) -> Result<NumaSpec, NumaError> {
    let s = spec.trim();
    if let Ok(n) = s.parse::<u64>() {
        if n == 0 || n > MAX_NODES as u64 {
            return Err(NumaError::NodeCount(n as usize));
        }
        return Ok(NumaSpec::Equal(n as u8));
    }
    let mut sizes: Vec<Option<u64>> = Vec::new();
    let (mut cpus, mut distance) = (None, None);
    for item in s.split(',') {
        let Some((k, v)) = item.split_once('=') else {
            return Err(syntax(spec, format!("'{item}' is not NODE=SIZE, cpus=... or distance=...")));
        };
        match k.trim() {
            "cpus" => cpus = Some(v.split(':').map(|l| parse_cpu_list(spec, l)).collect::<Result<Vec<_>, _>>()?),
            "distance" => {
                let d = v
                    .split(':')
                    .map(|t| {
                        t.trim()
                            .parse::<u8>()
                            .map_err(|_| NumaError::Distance(format!("'{t}' is not a distance (10 to 254)")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                distance = Some(d);
            }
            node => {
                let n: usize = node.parse().map_err(|_| syntax(spec, format!("'{node}' is not a node number")))?;
                if n >= MAX_NODES {
                    return Err(NumaError::NodeCount(n + 1));
                }
                let size = match v.trim() {
                    "0" => 0,
                    t => parse_size(t).map_err(|_| syntax(spec, format!("'{t}' is not a size (1G, 512M)")))?,
                };
                if sizes.len() <= n {
                    sizes.resize(n + 1, None);
                }
                if sizes[n].replace(size).is_some() {
                    return Err(syntax(spec, format!("node {n} is given twice")));
                }
            }
        }
    }
    if sizes.is_empty() {
        return Err(syntax(spec, "no node sizes"));
    }
    let sizes = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.ok_or_else(|| syntax(spec, format!("node {i} has no size (nodes are numbered 0, 1, ... without gaps)")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NumaSpec::Explicit { sizes, cpus, distance })
}

/// vCPUs split into `nodes` consecutive blocks: vCPU `c` goes to node
/// `c * nodes / cpus` (with fewer vCPUs than nodes, the last nodes have
/// none).
fn equal_cpus(nodes: usize, cpus: u8) -> Vec<Vec<u8>> {
    let c = usize::from(cpus);
    (0..nodes).map(|n| (0..cpus).filter(|&v| usize::from(v) * nodes / c == n).collect()).collect()
}

impl NumaSpec {
    /// Checks the spec against `mem` bytes of RAM and `cpus` vCPUs and
    /// lays the nodes out in guest-physical memory (node 0 lowest).
    pub fn resolve(&self, mem: u64, cpus: u8) -> Result<Topology, NumaError> {
        let (sizes, cpu_lists, distance) = match self {
            NumaSpec::Equal(n) => {
                let n = usize::from(*n);
                let each = mem / n as u64 / NODE_ALIGN * NODE_ALIGN;
                if each == 0 {
                    return Err(NumaError::EmptyNode(n - 1));
                }
                let mut sizes = vec![each; n];
                sizes[n - 1] = mem - each * (n as u64 - 1);
                (sizes, equal_cpus(n, cpus), None)
            }
            NumaSpec::Explicit { sizes, cpus: c, distance } => {
                let n = sizes.len();
                if n == 0 || n > MAX_NODES {
                    return Err(NumaError::NodeCount(n));
                }
                let lists = match c {
                    Some(l) => l.clone(),
                    None => equal_cpus(n, cpus),
                };
                (sizes.clone(), lists, distance.clone())
            }
        };
        let n = sizes.len();
        for (i, &s) in sizes.iter().enumerate() {
            if s == 0 {
                return Err(NumaError::EmptyNode(i));
            }
            // The last node may take an odd remainder (--mem itself need
            // not be a multiple of 4 MiB).
            if i + 1 < n && !s.is_multiple_of(NODE_ALIGN) {
                return Err(NumaError::Unaligned { node: i, size: human(s) });
            }
        }
        let total = sizes.iter().try_fold(0u64, |a, &s| a.checked_add(s));
        if total != Some(mem) {
            return Err(NumaError::SizeSum { nodes: total.map_or("more than 16 EiB".into(), human), mem: human(mem) });
        }
        if cpu_lists.len() != n {
            return Err(NumaError::Cpus(format!(
                "{} lists for {n} nodes; give one per node, ':'-separated (empty for a node without CPUs)",
                cpu_lists.len()
            )));
        }
        let mut owner = vec![None; usize::from(cpus)];
        for (node, list) in cpu_lists.iter().enumerate() {
            for &c in list {
                let Some(slot) = owner.get_mut(usize::from(c)) else {
                    return Err(NumaError::Cpus(format!(
                        "vCPU {c} does not exist (--cpus {cpus}: vCPUs 0 to {})",
                        cpus - 1
                    )));
                };
                if let Some(other) = slot.replace(node) {
                    return Err(NumaError::Cpus(format!("vCPU {c} is in node {other} and node {node}")));
                }
            }
        }
        if let Some(c) = owner.iter().position(Option::is_none) {
            return Err(NumaError::Cpus(format!("vCPU {c} is in no node; every vCPU belongs to one")));
        }
        let distance = resolve_distance(n, distance.as_deref())?;
        // Lay the sizes out over the RAM ranges in address order.
        let mut ram = ram_ranges(mem).into_iter().map(|(a, l)| (a.0, a.0 + l)).collect::<Vec<_>>().into_iter();
        let mut cur = ram.next();
        let mut nodes = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let mut left = size;
            let mut ranges = Vec::new();
            while left > 0 {
                let Some((start, end)) = cur else { break };
                let take = left.min(end - start);
                ranges.push((start, start + take));
                left -= take;
                cur = if start + take == end { ram.next() } else { Some((start + take, end)) };
            }
            nodes.push(Node { size, ranges, cpus: cpu_lists[i].clone() });
        }
        Ok(Topology { nodes, distance })
    }
}

fn resolve_distance(n: usize, d: Option<&[u8]>) -> Result<Vec<Vec<u8>>, NumaError> {
    let m: Vec<Vec<u8>> = match d {
        None => {
            (0..n).map(|a| (0..n).map(|b| if a == b { LOCAL_DISTANCE } else { REMOTE_DISTANCE }).collect()).collect()
        }
        Some(&[local, remote]) => {
            (0..n).map(|a| (0..n).map(|b| if a == b { local } else { remote }).collect()).collect()
        }
        Some(v) if v.len() == n * n => v.chunks(n).map(<[u8]>::to_vec).collect(),
        Some(v) => {
            return Err(NumaError::Distance(format!(
                "{} values for {n} nodes; give LOCAL:REMOTE or all {} of the matrix, row by row",
                v.len(),
                n * n
            )))
        }
    };
    for (a, row) in m.iter().enumerate() {
        for (b, &v) in row.iter().enumerate() {
            if a == b && v != LOCAL_DISTANCE {
                return Err(NumaError::Distance(format!(
                    "node {a} to itself is {v}; ACPI fixes a node's distance to itself at {LOCAL_DISTANCE}"
                )));
            }
            if a != b && !(LOCAL_DISTANCE + 1..=254).contains(&v) {
                return Err(NumaError::Distance(format!(
                    "node {a} to node {b} is {v}; a remote distance is 11 to 254 (more than the local {LOCAL_DISTANCE})"
                )));
            }
            if m[b][a] != v {
                return Err(NumaError::Distance(format!(
                    "node {a} to {b} is {v} but {b} to {a} is {}; the distances must be symmetric",
                    m[b][a]
                )));
            }
        }
    }
    Ok(m)
}

/// A node list as sysfs writes it (`0-3,8`, Linux's `%*pbl`); parts that
/// do not parse are skipped, a range names at most 1024 nodes.
pub fn parse_node_list(s: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let r = match part.split_once('-') {
            Some((a, b)) => a.parse::<u32>().ok().zip(b.parse::<u32>().ok()),
            None => part.parse::<u32>().ok().map(|a| (a, a)),
        };
        if let Some((a, b)) = r {
            v.extend(a..=b.min(a.saturating_add(1023)));
        }
    }
    v
}

/// The host's NUMA nodes that have memory and the file that said so
/// (/sys/devices/system/node/has_normal_memory, or `online`); one node
/// (node 0) when neither can be read.
pub fn host_nodes() -> (Vec<u32>, String) {
    for f in ["has_normal_memory", "online"] {
        let path = format!("/sys/devices/system/node/{f}");
        if let Ok(s) = std::fs::read_to_string(&path) {
            let v = parse_node_list(&s);
            if !v.is_empty() {
                return (v, path);
            }
        }
    }
    (vec![0], "no readable /sys/devices/system/node list: assumed".into())
}

/// `MPOL_BIND` (linux/mempolicy.h).
const MPOL_BIND: libc::c_long = 2;

/// Host nodes the VMM can name in its mbind mask.
pub const MAX_HOST_NODES: u32 = 1024;

/// One `mbind` the VMM makes: guest-physical `[start, end)` of guest node
/// `guest` bound to host node `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostBind {
    /// The guest node.
    pub guest: usize,
    /// The host node its memory goes to.
    pub host: u32,
    /// First guest-physical byte.
    pub start: u64,
    /// One past the last.
    pub end: u64,
}

/// Which host node each guest node's memory is bound to: guest node i to
/// the i-th host node with memory, round robin when the guest has more
/// nodes than the host. `Err` says why nothing is to be bound: a host
/// with one node (binding would change nothing), or a host node the
/// VMM's mask cannot name.
pub fn plan_host_binding(host: &[u32], source: &str, topo: &Topology) -> Result<Vec<HostBind>, String> {
    match host {
        [] => return Err(format!("no host NUMA node is listed ({source}): the guest's memory is not bound")),
        [only] => {
            return Err(format!(
                "the host has 1 NUMA node (node {only}, {source}): nothing to bind, the guest's {} nodes all use it",
                topo.nodes.len()
            ))
        }
        _ => {}
    }
    let mut plan = Vec::new();
    for (i, node) in topo.nodes.iter().enumerate() {
        let h = host[i % host.len()];
        if h >= MAX_HOST_NODES {
            return Err(format!(
                "host node {h} is beyond the {MAX_HOST_NODES} the VMM can name: the guest's memory is not bound"
            ));
        }
        plan.extend(node.ranges.iter().map(|&(start, end)| HostBind { guest: i, host: h, start, end }));
    }
    Ok(plan)
}

/// Binds each guest node's memory to a host node with `mbind(MPOL_BIND)`
/// as [`plan_host_binding`] maps them, where the host has more than one
/// node; returns what it did (or why it did nothing), one line for the
/// user. The memory is reserved lazily, so binding before the guest
/// touches it places every page it ever gets.
pub fn bind_to_host(mem: &crate::memory::GuestMem, topo: &Topology) -> String {
    use vm_memory::{GuestAddress, GuestMemoryBackend};
    let (host, source) = host_nodes();
    let plan = match plan_host_binding(&host, &source, topo) {
        Ok(p) => p,
        Err(why) => return why,
    };
    let mut bound: Vec<String> = Vec::new();
    let mut done_nodes = std::collections::BTreeSet::new();
    for b in &plan {
        let failed = |why: String| {
            let so_far = if bound.is_empty() {
                "nothing bound".to_string()
            } else {
                format!("bound so far: {}", bound.join(", "))
            };
            format!(
                "binding guest node {} to host node {} failed ({why}); {so_far}, the rest runs unbound",
                b.guest, b.host
            )
        };
        let (Ok(hva), Ok(last)) =
            (mem.get_host_address(GuestAddress(b.start)), mem.get_host_address(GuestAddress(b.end - 1)))
        else {
            return failed(format!("{:#x}..{:#x} has no host mapping", b.start, b.end));
        };
        // One host mapping must hold the range (the node ranges are split
        // at the PCI hole, where the guest's memory regions split).
        if last as usize - hva as usize != (b.end - b.start - 1) as usize {
            return failed(format!("{:#x}..{:#x} spans two host mappings", b.start, b.end));
        }
        let mut mask = [0u64; (MAX_HOST_NODES / 64) as usize];
        mask[b.host as usize / 64] |= 1 << (b.host % 64);
        // SAFETY: mbind only sets the policy of the VMM's own mapping
        // of guest RAM, [hva, hva + len), which lives as long as the VM
        // (checked above to be one mapping); the mask is a live array of
        // the length passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                hva as usize,
                (b.end - b.start) as usize,
                MPOL_BIND,
                mask.as_ptr(),
                MAX_HOST_NODES as libc::c_ulong,
                0 as libc::c_uint,
            )
        };
        if r != 0 {
            return failed(std::io::Error::last_os_error().to_string());
        }
        if done_nodes.insert(b.guest) {
            bound.push(format!("guest node {} -> host node {}", b.guest, b.host));
        }
    }
    format!("memory bound with mbind(MPOL_BIND) ({} host nodes, {source}): {}", host.len(), bound.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::GIB;

    #[test]
    fn equal_split() {
        let t = parse("2").unwrap().resolve(256 * MIB, 4).unwrap();
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.nodes[0].ranges, vec![(0, 128 * MIB)]);
        assert_eq!(t.nodes[1].ranges, vec![(128 * MIB, 256 * MIB)]);
        assert_eq!(t.nodes[0].cpus, vec![0, 1]);
        assert_eq!(t.nodes[1].cpus, vec![2, 3]);
        assert_eq!(t.distance, vec![vec![10, 20], vec![20, 10]]);
        // More nodes than CPUs: the last nodes have none.
        let t = parse("3").unwrap().resolve(100 * MIB, 1).unwrap();
        assert_eq!(t.nodes.iter().map(|n| n.cpus.len()).collect::<Vec<_>>(), vec![1, 0, 0]);
        assert_eq!(t.nodes.iter().map(|n| n.size).sum::<u64>(), 100 * MIB);
        assert_eq!(t.nodes[0].size, 32 * MIB);
    }

    #[test]
    fn explicit_spec_and_the_pci_hole() {
        let t = parse("0=2G,1=2G,cpus=0:1-3,distance=10:31").unwrap().resolve(4 * GIB, 4).unwrap();
        assert_eq!(t.nodes[0].ranges, vec![(0, 2 * GIB)]);
        assert_eq!(t.nodes[1].ranges, vec![(2 * GIB, 3 * GIB), (4 * GIB, 5 * GIB)]);
        assert_eq!(t.nodes[1].cpus, vec![1, 2, 3]);
        assert_eq!(t.distance[0][1], 31);
        let t = parse("0=64M,1=64M,distance=10:20:20:10").unwrap().resolve(128 * MIB, 1).unwrap();
        assert_eq!(t.distance, vec![vec![10, 20], vec![20, 10]]);
    }

    #[test]
    fn host_node_lists_parse_as_sysfs_writes_them() {
        assert_eq!(parse_node_list("0\n"), vec![0]);
        assert_eq!(parse_node_list("0-1,4"), vec![0, 1, 4]);
        assert_eq!(parse_node_list(""), Vec::<u32>::new());
        assert_eq!(parse_node_list("x,2"), vec![2]);
        assert_eq!(parse_node_list("5-3"), Vec::<u32>::new());
    }

    #[test]
    fn guest_nodes_map_to_host_nodes_round_robin() {
        let two = parse("2").unwrap().resolve(256 * MIB, 2).unwrap();
        // One host node: nothing to bind, and the message says why.
        let e = plan_host_binding(&[0], "/sys/devices/system/node/has_normal_memory", &two).unwrap_err();
        assert!(e.contains("the host has 1 NUMA node (node 0, /sys/devices/system/node/has_normal_memory)"), "{e}");
        assert!(e.contains("guest's 2 nodes all use it"), "{e}");
        assert!(plan_host_binding(&[], "x", &two).unwrap_err().contains("no host NUMA node"));
        // Two host nodes: one each.
        let p = plan_host_binding(&[0, 1], "x", &two).unwrap();
        assert_eq!(
            p,
            vec![
                HostBind { guest: 0, host: 0, start: 0, end: 128 * MIB },
                HostBind { guest: 1, host: 1, start: 128 * MIB, end: 256 * MIB }
            ]
        );
        // More guest nodes than host nodes (and sparse host numbers):
        // round robin.
        let three = parse("3").unwrap().resolve(96 * MIB, 1).unwrap();
        let hosts: Vec<u32> = plan_host_binding(&[0, 2], "x", &three).unwrap().iter().map(|b| b.host).collect();
        assert_eq!(hosts, vec![0, 2, 0]);
        // A node across the PCI hole: one mbind per range.
        let hole = parse("0=2G,1=2G").unwrap().resolve(4 * GIB, 1).unwrap();
        let p = plan_host_binding(&[1, 3], "x", &hole).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[1].guest, p[1].host, p[1].start, p[1].end), (1, 3, 2 * GIB, 3 * GIB));
        assert_eq!((p[2].guest, p[2].host, p[2].start, p[2].end), (1, 3, 4 * GIB, 5 * GIB));
        // A host node the mask cannot name.
        assert!(plan_host_binding(&[0, 5000], "x", &two).unwrap_err().contains("host node 5000 is beyond"));
    }

    #[test]
    fn bad_specs_say_why() {
        let e = |s: &str, mem: u64, cpus: u8| parse(s).and_then(|p| p.resolve(mem, cpus)).unwrap_err().to_string();
        assert!(e("0=1G,1=1G", 3 * GIB, 1).contains("the nodes hold 2 GiB but --mem is 3 GiB"));
        assert!(e("0=128M,1=0", 128 * MIB, 1).contains("node 1 has no memory"));
        assert!(e("0=64M,1=64M,distance=10:5", 128 * MIB, 1).contains("11 to 254"));
        assert!(e("0=64M,1=64M,distance=12:20", 128 * MIB, 1).contains("to itself"));
        assert!(e("0=64M,1=64M,distance=10:20:30:10", 128 * MIB, 1).contains("symmetric"));
        assert!(e("0=64M,1=64M,distance=10:20:30", 128 * MIB, 1).contains("3 values for 2 nodes"));
        assert!(e("0=64M,1=64M,cpus=0:0", 128 * MIB, 2).contains("vCPU 0 is in node 0 and node 1"));
        assert!(e("0=64M,1=64M,cpus=0:", 128 * MIB, 2).contains("vCPU 1 is in no node"));
        assert!(e("0=64M,1=64M,cpus=0:5", 128 * MIB, 2).contains("vCPU 5 does not exist"));
        assert!(e("0=64M,2=64M", 128 * MIB, 1).contains("node 1 has no size"));
        assert!(e("0=63M,1=65M", 128 * MIB, 1).contains("not a multiple of 4 MiB"));
        assert!(e("0", 128 * MIB, 1).contains("0 nodes"));
        assert!(e("9", 128 * MIB, 1).contains("9 nodes"));
        assert!(e("x", 128 * MIB, 1).contains("'x' is not NODE=SIZE"));
        assert!(e("0=1Q", 128 * MIB, 1).contains("not a size"));
        assert!(e("8", 16 * MIB, 1).contains("no memory"));
    }
}
