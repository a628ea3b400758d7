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
