//! `--inspect numa`: the guest's NUMA topology as the host reads it from
//! guest memory, independently of the guest: the ACPI SRAT and SLIT (and
//! the MADT, for CPU numbers) through mm-core's readers, as the guest
//! read them at boot, and each node's free pages from the buddy
//! allocator's descriptors. Rendered as `numactl --hardware`, the same
//! lines as the guest's `numa` switch prints, so the two can be compared.

use super::guest::{BlockKind, GuestState};
use mm_core::abi::boot::ACPI_TABLES;
use serde::Serialize;
use std::fmt::Write as _;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// One node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Node number (the guest's: proximity domains in SRAT order).
    pub node: usize,
    /// Its ACPI proximity domain.
    pub pxm: u32,
    /// Its memory ranges `[start, end)`.
    pub ranges: Vec<(u64, u64)>,
    /// Its CPUs (the guest's CPU numbers: MADT order).
    pub cpus: Vec<usize>,
    /// Bytes of RAM the SRAT gives it.
    pub size_bytes: u64,
    /// Pages on the buddy free lists in its ranges (none before the
    /// guest's allocator is up).
    pub free_pages: Option<u64>,
    /// Pages on the per-CPU lists in its ranges.
    pub pcp_pages: Option<u64>,
}

/// The view.
#[derive(Debug, Clone, Serialize)]
pub struct NumaReport {
    /// The nodes; empty if the guest has no SRAT.
    pub nodes: Vec<NodeView>,
    /// `distance[a][b]`.
    pub distance: Vec<Vec<u8>>,
    /// Whether the distances came from a valid SLIT.
    pub slit_used: bool,
    /// Frames of the buddy allocator that lie in no node's range (should
    /// be none).
    pub frames_outside_nodes: u64,
}

/// The SRAT's memory ranges `[start, end, node)` as the VMM wrote them
/// into guest memory; empty without an SRAT (no `--numa`) or where the
/// tables no longer read as valid (the `numa` view says why then).
pub fn srat_ranges(mem: &GuestMemoryMmap) -> Vec<(u64, u64, u8)> {
    let mut read = |pa: u64, buf: &mut [u8]| mem.read_slice(buf, GuestAddress(pa)).is_ok();
    match mm_core::numa::read_numa(ACPI_TABLES, &mut read) {
        Ok(Some(t)) => t.mem_ranges().iter().map(|r| (r.base, r.end(), r.node)).collect(),
        _ => Vec::new(),
    }
}

/// Reads the view from guest memory; `gs` adds the free pages.
pub fn numa(mem: &GuestMemoryMmap, gs: Option<&GuestState<'_>>) -> Result<NumaReport, String> {
    let mut read = |pa: u64, buf: &mut [u8]| mem.read_slice(buf, GuestAddress(pa)).is_ok();
    let Some(t) =
        mm_core::numa::read_numa(ACPI_TABLES, &mut read).map_err(|e| format!("the guest's ACPI tables: {e}"))?
    else {
        return Ok(NumaReport { nodes: vec![], distance: vec![], slit_used: false, frames_outside_nodes: 0 });
    };
    let madt = mm_core::acpi::read_madt(ACPI_TABLES, &mut read).ok();
    let n = t.nr_nodes;
    let mut nodes: Vec<NodeView> = (0..n)
        .map(|node| NodeView {
            node,
            pxm: t.pxm[node],
            ranges: t.mem_ranges().iter().filter(|r| usize::from(r.node) == node).map(|r| (r.base, r.end())).collect(),
            cpus: madt.as_ref().map_or(vec![], |m| {
                m.ids()
                    .iter()
                    .enumerate()
                    .filter(|(_, &apic)| t.node_of_cpu(apic) == Some(node as u8))
                    .map(|(i, _)| i)
                    .collect()
            }),
            size_bytes: t.node_bytes(node as u8),
            free_pages: gs.map(|_| 0),
            pcp_pages: gs.map(|_| 0),
        })
        .collect();
    let mut outside = 0;
    if let Some(gs) = gs {
        for b in &gs.blocks {
            // Nodes are 4 MiB aligned, so a block lies in one node.
            let Some(node) = t.node_of(b.pfn << 12) else {
                outside += 1u64 << b.order;
                continue;
            };
            let v = &mut nodes[usize::from(node)];
            match b.kind {
                BlockKind::Free => *v.free_pages.get_or_insert(0) += 1 << b.order,
                BlockKind::Pcp => *v.pcp_pages.get_or_insert(0) += 1 << b.order,
                _ => {}
            }
        }
    }
    let distance = (0..n).map(|a| (0..n).map(|b| t.distance(a, b)).collect()).collect();
    Ok(NumaReport { nodes, distance, slit_used: t.slit_used, frames_outside_nodes: outside })
}

impl NumaReport {
    /// `numactl --hardware`'s lines, then each node's ranges.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.nodes.is_empty() {
            s.push_str("No NUMA available on this system (the guest's ACPI tables have no SRAT)\n");
            return s;
        }
        let n = self.nodes.len();
        let _ = writeln!(s, "available: {n} nodes (0-{})", n - 1);
        for v in &self.nodes {
            let cpus: String = v.cpus.iter().map(|c| format!(" {c}")).collect();
            let _ = writeln!(s, "node {} cpus:{cpus}", v.node);
            let _ = writeln!(s, "node {} size: {} MB", v.node, v.size_bytes >> 20);
            match v.free_pages {
                Some(f) => {
                    let _ = writeln!(
                        s,
                        "node {} free: {} MB (buddy free lists; {} pages on per-CPU lists)",
                        v.node,
                        f >> 8,
                        v.pcp_pages.unwrap_or(0)
                    );
                }
                None => {
                    let _ = writeln!(s, "node {} free: ? (the guest's allocator is not up)", v.node);
                }
            }
        }
        s.push_str("node distances:\nnode");
        for b in 0..n {
            let _ = write!(s, "{b:>4}");
        }
        s.push('\n');
        for (a, row) in self.distance.iter().enumerate() {
            let _ = write!(s, "{a:>3}:");
            for d in row {
                let _ = write!(s, "{d:>4}");
            }
            s.push('\n');
        }
        for v in &self.nodes {
            let ranges: Vec<String> =
                v.ranges.iter().map(|(a, b)| format!("[mem {a:#010x}-{:#010x}]", b - 1)).collect();
            let _ = writeln!(s, "node {} PXM {}: {}", v.node, v.pxm, ranges.join(" "));
        }
        if !self.slit_used {
            s.push_str("(no usable SLIT: distances are the defaults, 10 local and 20 remote)\n");
        }
        if self.frames_outside_nodes > 0 {
            let _ = writeln!(s, "{} frames of the buddy allocator lie in no node's range", self.frames_outside_nodes);
        }
        s
    }
}

/// What `--verify numa` examines, gathered from the guest: each buddy
/// block (head pfn, order, the zone index its descriptor names, free or
/// not) and each user frame mapped in a VMA with an `MPOL_BIND` policy.
#[derive(Debug, Default)]
pub struct NumaFacts {
    /// `(pfn, order, zone index, free)`.
    pub blocks: Vec<(u64, u8, u8, bool)>,
    /// `(pfn, allowed node mask, pid, virtual address)`.
    pub bound: Vec<(u64, u8, u32, u64)>,
}

/// The check itself (separate from the reading, so it can be tested on
/// made-up facts): `node_of` is the SRAT's node of a pfn (None: outside
/// every range, which the allocator puts on node 0). Returns the
/// violations and the free and used pages per node as the SRAT ranges
/// count them.
pub fn numa_violations(node_of: &dyn Fn(u64) -> Option<u8>, facts: &NumaFacts) -> (Vec<String>, Vec<(u64, u64)>) {
    let mut v = Vec::new();
    let mut counts: Vec<(u64, u64)> = Vec::new();
    for &(pfn, order, zone, free) in &facts.blocks {
        let want = node_of(pfn).unwrap_or(0);
        let got = zone / mm_core::buddy::NR_ZONES as u8;
        if usize::from(want) >= counts.len() {
            counts.resize(usize::from(want) + 1, (0, 0));
        }
        let c = &mut counts[usize::from(want)];
        if free {
            c.0 += 1 << order;
        } else {
            c.1 += 1 << order;
        }
        if got != want {
            v.push(format!(
                "block {:#x} (order {order}, {}) lies in node {want}'s SRAT range but its descriptor puts it in node {got}'s zone {zone}: node {got}'s counts hold it",
                pfn << 12,
                if free { "free" } else { "allocated" }
            ));
        }
        // A block must not straddle two nodes.
        let last = node_of(pfn + (1 << order) - 1).unwrap_or(0);
        if last != want {
            v.push(format!("block {:#x} (order {order}) spans nodes {want} and {last}", pfn << 12));
        }
    }
    for &(pfn, mask, pid, va) in &facts.bound {
        let node = node_of(pfn).unwrap_or(0);
        if mask & (1 << node) == 0 {
            v.push(format!(
                "pid {pid}'s page at {va:#x} (frame {:#x}) is on node {node}, outside its VMA's MPOL_BIND nodes {mask:#b}",
                pfn << 12
            ));
        }
    }
    (v, counts)
}

/// `--verify numa` (see [`super::spec::Check::Numa`]).
pub fn verify(
    mem: &GuestMemoryMmap,
    gs: &GuestState<'_>,
    um: &super::invariants::UserMaps,
    roots: &[super::invariants::Root],
) -> super::verify::CheckResult {
    use super::spec::Check;
    use super::verify::CheckResult;
    let mut read = |pa: u64, buf: &mut [u8]| mem.read_slice(buf, GuestAddress(pa)).is_ok();
    let t = match mm_core::numa::read_numa(ACPI_TABLES, &mut read) {
        Ok(Some(t)) => t,
        Ok(None) => return CheckResult::not_applicable(Check::Numa, "the guest has no SRAT (one node)".into()),
        Err(e) => return CheckResult::could_not_run(Check::Numa, format!("the guest's ACPI tables: {e}")),
    };
    let mut facts = NumaFacts::default();
    for b in &gs.blocks {
        let free = match b.kind {
            BlockKind::Free | BlockKind::Pcp => true,
            BlockKind::Allocated(_) | BlockKind::Slab { .. } => false,
        };
        facts.blocks.push((b.pfn, b.order, gs.page(b.pfn).zone, free));
    }
    let vmas = match super::vmas::table(gs) {
        Ok(v) => v.unwrap_or_default(),
        Err(e) => return CheckResult::could_not_run(Check::Numa, format!("the guest's VMA table: {e}")),
    };
    let mut bound_vmas = 0;
    for v in &vmas {
        let mode = (v.attrs >> mm_core::descriptor::VMA_POLICY_MODE_SHIFT) & 0xf;
        if i64::from(mode) == mm_core::mempolicy::MPOL_BIND {
            bound_vmas += 1;
        }
    }
    for (&pfn, leaves) in &um.frames {
        for l in leaves {
            let Some(cr3) = roots.iter().find(|r| r.pid == Some(l.pid)).map(|r| r.cr3) else { continue };
            let Some(v) = vmas.iter().find(|v| v.cr3 == cr3 && v.start <= l.va && l.va < v.end) else { continue };
            let mode = (v.attrs >> mm_core::descriptor::VMA_POLICY_MODE_SHIFT) & 0xf;
            if i64::from(mode) == mm_core::mempolicy::MPOL_BIND {
                let mask = (v.attrs >> mm_core::descriptor::VMA_POLICY_NODES_SHIFT) as u8;
                facts.bound.push((pfn, mask, l.pid, l.va));
            }
        }
    }
    let (violations, counts) = numa_violations(&|pfn| t.node_of(pfn << 12), &facts);
    let per_node: Vec<String> =
        counts.iter().enumerate().map(|(n, (f, u))| format!("node {n}: {f} free, {u} used")).collect();
    let detail = format!(
        "{} blocks against {} SRAT ranges ({}); {} frames in {bound_vmas} MPOL_BIND VMAs",
        facts.blocks.len(),
        t.mem_ranges().len(),
        per_node.join(", "),
        facts.bound.len()
    );
    CheckResult::new(Check::Numa, detail, violations).with_errors(um.problems.iter().cloned())
}

#[cfg(test)]
mod verify_tests {
    use super::*;

    /// Two nodes of 1024 frames.
    fn node_of(pfn: u64) -> Option<u8> {
        (pfn < 2048).then_some((pfn / 1024) as u8)
    }

    #[test]
    fn agreeing_facts_pass_and_count_per_node() {
        let facts = NumaFacts {
            blocks: vec![(0, 9, 1, true), (512, 9, 1, false), (1024, 10, 4, true)],
            bound: vec![(1030, 0b10, 1, 0x1000)],
        };
        let (v, counts) = numa_violations(&node_of, &facts);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(counts, vec![(512, 512), (1024, 0)]);
    }

    #[test]
    fn a_block_in_the_wrong_nodes_zone_fails() {
        // Sabotage: a node-1 block whose descriptor names node 0's zone.
        let facts = NumaFacts { blocks: vec![(1024, 0, 2, true)], bound: vec![] };
        let (v, _) = numa_violations(&node_of, &facts);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("node 1's SRAT range but its descriptor puts it in node 0's zone 2"), "{v:?}");
        // A block across the boundary.
        let facts = NumaFacts { blocks: vec![(0, 11, 1, false)], bound: vec![] };
        assert!(numa_violations(&node_of, &facts).0.iter().any(|s| s.contains("spans nodes 0 and 1")));
    }

    #[test]
    fn a_bound_page_outside_its_nodes_fails() {
        let facts = NumaFacts { blocks: vec![], bound: vec![(5, 0b10, 7, 0x2000_0000)] };
        let (v, _) = numa_violations(&node_of, &facts);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("pid 7's page at 0x20000000 (frame 0x5000) is on node 0, outside"), "{v:?}");
    }
}
