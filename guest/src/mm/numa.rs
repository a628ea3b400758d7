//! The NUMA topology the firmware describes (ACPI SRAT and SLIT, read at
//! boot with mm-core's `numa::read_numa`, as Linux's `acpi_numa_init`):
//! which physical memory and which CPUs each node holds, the distances,
//! and each node's fallback order (Linux's zonelist order, by distance).
//!
//! The page allocator keeps zones per node (mm-core's buddy with a
//! [`NodeLayout`] from these tables, Linux's `pg_data_t`): an allocation
//! walks its preferred node's zonelist (the running CPU's node unless a
//! memory policy says otherwise), nearest nodes first. This module
//! reports it (boot lines as Linux's, `numa` on the command line and in
//! the shell: a `numactl --hardware` view with each node's size and free
//! memory, each node's meminfo and numastat).

use crate::fmt::{Dec, DecPad};
use crate::kprintln;
use crate::sync::BootCell;
use mm_core::buddy::NodeLayout;
use mm_core::numa::{Numa, MAX_NODES};

/// The topology, set once by [`init`] on the boot CPU before any other
/// CPU runs, read-only afterwards.
static TOPOLOGY: BootCell<Option<Numa>> = BootCell::new(None);
/// Each CPU's node (by CPU number), set by [`init`].
static CPU_NODE: BootCell<[u8; crate::arch::percpu::MAX_CPUS]> = BootCell::new([0; crate::arch::percpu::MAX_CPUS]);

/// The page allocator's node layout (node of each pfn), set by
/// [`layout`] before the allocator takes memory, read-only afterwards:
/// the per-CPU page lists find a freed page's node here without a lock.
static LAYOUT: BootCell<NodeLayout> = BootCell::new(NodeLayout::single());

/// The node layout for the page allocator (one node without an SRAT),
/// recorded for [`node_of_pfn`]. Called once by mm::init on the boot CPU.
pub fn layout(nr_cpus: usize) -> NodeLayout {
    let Some(t) = topology() else { return NodeLayout::single() };
    let mut cpus = [0u8; crate::arch::percpu::MAX_CPUS];
    for (c, n) in cpus.iter_mut().enumerate().take(nr_cpus) {
        *n = cpu_node(c);
    }
    let l = match NodeLayout::from_numa(t, &cpus[..nr_cpus.min(cpus.len())]) {
        Ok(l) => l,
        Err(e) => {
            kprintln!("NUMA: the SRAT's nodes cannot be used ({}): one node", e);
            NodeLayout::single()
        }
    };
    // SAFETY: the boot CPU alone runs (mm::init), no reference from
    // `node_of_pfn` exists yet.
    unsafe { *LAYOUT.get_mut() = l };
    l
}

/// The page allocator's node of `pfn`.
#[inline]
pub fn node_of_pfn(pfn: u64) -> u8 {
    // SAFETY: as in `topology`: written once before the other CPUs start.
    unsafe { (*LAYOUT.as_ptr()).node_of_pfn(pfn) }
}

/// Nodes the page allocator has.
pub fn nr_nodes() -> usize {
    // SAFETY: as in `node_of_pfn`.
    unsafe { (*LAYOUT.as_ptr()).nr_nodes() }
}

/// The nodes with memory (Linux's `node_states[N_MEMORY]`), a bit each.
pub fn nodes_with_memory() -> u8 {
    let n = nr_nodes().min(8);
    super::PAGES.with(|p| (0..n).filter(|&i| p.buddy.node_counts(i).managed > 0).fold(0u8, |m, i| m | 1 << i))
}

/// The topology, if the firmware described one.
pub fn topology() -> Option<&'static Numa> {
    // SAFETY: written once by `init` before the other CPUs start and
    // never again; every later access is a shared read.
    unsafe { (*TOPOLOGY.as_ptr()).as_ref() }
}

/// CPU `cpu`'s node.
pub fn cpu_node(cpu: usize) -> u8 {
    // SAFETY: as in `topology`.
    unsafe { (*CPU_NODE.as_ptr()).get(cpu).copied().unwrap_or(0) }
}

/// Records the topology the boot parameters carry and prints it as
/// Linux does at boot. Called once on the boot CPU, before the others
/// start.
pub fn init(numa: Option<&Numa>, cpus: Option<&mm_core::acpi::CpuTopology>) {
    let Some(numa) = numa else { return };
    // SAFETY: the boot CPU alone runs (the others are started later), and
    // no reference from `topology` or `cpu_node` exists yet.
    unsafe {
        *TOPOLOGY.get_mut() = Some(*numa);
        let map = CPU_NODE.get_mut();
        if let Some(c) = cpus {
            for (i, &apic) in c.ids().iter().enumerate().take(map.len()) {
                map[i] = numa.node_of_cpu(apic).unwrap_or(0);
            }
        }
    }
    for r in numa.mem_ranges() {
        kprintln!(
            "ACPI: SRAT: Node {} PXM {} [mem {:#010x}-{:#010x}]",
            Dec(u64::from(r.node)),
            Dec(u64::from(numa.pxm[usize::from(r.node)])),
            r.base,
            r.end() - 1
        );
    }
    for &(apic, node) in numa.cpu_nodes() {
        kprintln!(
            "SRAT: PXM {} -> APIC {:#04x} -> Node {}",
            Dec(u64::from(numa.pxm[usize::from(node)])),
            apic,
            Dec(u64::from(node))
        );
    }
    if !numa.slit_used {
        kprintln!("NUMA: no usable SLIT: distances 10 local, 20 remote");
    }
    if numa.dropped > 0 {
        kprintln!("NUMA: {} SRAT entries beyond this kernel's limits ignored", Dec(u64::from(numa.dropped)));
    }
    for node in 0..numa.nr_nodes {
        let mut order = [0u8; MAX_NODES];
        let n = numa.fallback_order(node, &mut order);
        let mut line = crate::fmt::StackString::<96>::new();
        for &o in &order[..n] {
            let _ = core::fmt::Write::write_fmt(&mut line, format_args!(" {}", Dec(u64::from(o))));
        }
        kprintln!("NUMA: node {} fallback order:{}", Dec(node as u64), line.as_str());
    }
}

/// Free pages per node: on the free lists of the node's zones (the pcp
/// lists are not counted, as Linux's NR_FREE_PAGES does not) and in
/// deferred memory not handed to the buddy allocator yet (free RAM all
/// the same).
fn free_per_node() -> [u64; MAX_NODES] {
    let mut free = [0u64; MAX_NODES];
    super::PAGES.with(|p| {
        for (n, f) in free.iter_mut().enumerate().take(p.buddy.nr_nodes()) {
            *f = p.buddy.node_counts(n).free;
        }
    });
    super::DEFERRED.with(|d| {
        for &(s, e) in d.ranges.iter().take(d.n).skip(d.next) {
            // Per page: deferred ranges may cross a node boundary.
            // Chunks are counted a MAX_ORDER block (4 MiB) at a time,
            // nodes being aligned to that.
            let mut pfn = s;
            while pfn < e {
                let step = (1024 - (pfn & 1023)).min(e - pfn);
                free[usize::from(node_of_pfn(pfn)) % MAX_NODES] += step;
                pfn += step;
            }
        }
    });
    free
}

/// `numactl --hardware`: the nodes, their CPUs, size and free memory,
/// the distance matrix; then each node's meminfo
/// (/sys/devices/system/node/nodeN/meminfo).
pub fn hardware() {
    let Some(t) = topology() else {
        kprintln!("No NUMA available on this system (the firmware has no SRAT)");
        return;
    };
    let n = t.nr_nodes;
    let free = free_per_node();
    kprintln!("available: {} nodes (0-{})", Dec(n as u64), Dec(n as u64 - 1));
    let nr_cpus = crate::arch::percpu::MAX_CPUS.min(super::PAGES.with(|p| p.buddy.nr_cpus()));
    for (node, &node_free) in free.iter().enumerate().take(n) {
        let mut cpus = crate::fmt::StackString::<64>::new();
        for c in 0..nr_cpus {
            if usize::from(cpu_node(c)) == node {
                let _ = core::fmt::Write::write_fmt(&mut cpus, format_args!(" {}", Dec(c as u64)));
            }
        }
        kprintln!("node {} cpus:{}", Dec(node as u64), cpus.as_str());
        kprintln!("node {} size: {} MB", Dec(node as u64), Dec(t.node_bytes(node as u8) >> 20));
        kprintln!("node {} free: {} MB", Dec(node as u64), Dec(node_free >> 8));
    }
    kprintln!("node distances:");
    let mut head = crate::fmt::StackString::<64>::new();
    for b in 0..n {
        let _ = core::fmt::Write::write_fmt(&mut head, format_args!("{}", DecPad(b as u64, 4)));
    }
    kprintln!("node{}", head.as_str());
    for a in 0..n {
        let mut row = crate::fmt::StackString::<64>::new();
        for b in 0..n {
            let _ = core::fmt::Write::write_fmt(&mut row, format_args!("{}", DecPad(u64::from(t.distance(a, b)), 4)));
        }
        kprintln!("{}:{}", DecPad(a as u64, 3), row.as_str());
    }
    for node in 0..n {
        let mut text = alloc::string::String::new();
        node_meminfo_to(node, &mut text);
        for l in text.lines() {
            kprintln!("{}", l);
        }
    }
    let mut text = alloc::string::String::new();
    numastat_to(&mut text);
    for l in text.lines() {
        kprintln!("{}", l);
    }
}

/// Node `node`'s meminfo (/sys/devices/system/node/nodeN/meminfo, as
/// Linux's `node_read_meminfo`): MemTotal is the RAM the SRAT gives the
/// node (Linux's counts the pages the buddy allocator manages, without
/// what the kernel reserved at boot; here those count as used), then the
/// node's own LRU lists (its lruvecs, every memory cgroup's).
pub fn node_meminfo_to(node: usize, out: &mut alloc::string::String) {
    use core::fmt::Write;
    let Some(t) = topology() else { return };
    let free = free_per_node().get(node).copied().unwrap_or(0);
    let (total, f) = (t.node_bytes(node as u8) >> 10, free * 4);
    let lru = super::PAGES.with(|p| super::procfs::node_lru(p, node));
    let nd = Dec(node as u64);
    for (name, kb) in [
        ("MemTotal:", total),
        ("MemFree:", f),
        ("MemUsed:", total.saturating_sub(f)),
        ("Active:", (lru[1] + lru[3]) * 4),
        ("Inactive:", (lru[0] + lru[2]) * 4),
        ("Active(anon):", lru[1] * 4),
        ("Inactive(anon):", lru[0] * 4),
        ("Active(file):", lru[3] * 4),
        ("Inactive(file):", lru[2] * 4),
        ("Unevictable:", lru[4] * 4),
    ] {
        // Linux's "Node %d %-16s%8lu kB" (no core padding in ring 0).
        let _ = write!(out, "Node {} {}", nd, name);
        for _ in name.len()..16 {
            out.push(' ');
        }
        let _ = writeln!(out, "{} kB", DecPad(kb, 8));
    }
}

/// The numastat counters' names, in Linux's order.
pub const NUMASTAT_NAMES: [&str; 6] =
    ["numa_hit", "numa_miss", "numa_foreign", "interleave_hit", "local_node", "other_node"];

/// Node `node`'s numastat counters in [`NUMASTAT_NAMES`]' order.
pub fn numastat(node: usize) -> [u64; 6] {
    let s = super::percpu::numa_stat(node);
    [s.numa_hit, s.numa_miss, s.numa_foreign, s.interleave_hit, s.local_node, s.other_node]
}

/// The counters summed over the nodes (/proc/vmstat's numa_* lines).
pub fn numastat_total() -> [u64; 6] {
    let mut t = [0u64; 6];
    for n in 0..nr_nodes() {
        for (a, b) in t.iter_mut().zip(numastat(n)) {
            *a += b;
        }
    }
    t
}

/// /proc/numastat: the `numastat` tool's table (a column per node, a
/// row per counter, in pages; each node's own counters are also in
/// /sys/devices/system/node/nodeN/numastat).
pub fn numastat_to(out: &mut alloc::string::String) {
    use core::fmt::Write;
    let n = nr_nodes();
    // No core padding: it cannot run in ring 0 here.
    out.push_str("                ");
    for node in 0..n {
        let mut name = crate::fmt::StackString::<16>::new();
        let _ = write!(name, "node{}", Dec(node as u64));
        for _ in name.as_str().len()..16 {
            out.push(' ');
        }
        out.push_str(name.as_str());
    }
    out.push('\n');
    let stats: alloc::vec::Vec<[u64; 6]> = (0..n).map(numastat).collect();
    for (i, name) in NUMASTAT_NAMES.iter().enumerate() {
        out.push_str(name);
        for _ in name.len()..16 {
            out.push(' ');
        }
        for s in &stats {
            let _ = write!(out, "{}", DecPad(s[i], 16));
        }
        out.push('\n');
    }
}
