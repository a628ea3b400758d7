//! The NUMA topology the firmware describes (ACPI SRAT and SLIT, read at
//! boot with mm-core's `numa::read_numa`, as Linux's `acpi_numa_init`):
//! which physical memory and which CPUs each node holds, the distances,
//! and each node's fallback order (Linux's zonelist order, by distance).
//!
//! What this kernel does with it today: it reports it (boot lines as
//! Linux's, `numa` on the command line and in the shell: a
//! `numactl --hardware` view with each node's size and free memory, and
//! each node's meminfo). The page allocator is still one set of zones
//! over all of memory: allocations do not prefer the local node yet (no
//! pg_data_t per node), so there are no numastat counters to report.

use crate::fmt::Dec;
use crate::kprintln;
use crate::sync::BootCell;
use mm_core::numa::{Numa, MAX_NODES};

/// The topology, set once by [`init`] on the boot CPU before any other
/// CPU runs, read-only afterwards.
static TOPOLOGY: BootCell<Option<Numa>> = BootCell::new(None);
/// Each CPU's node (by CPU number), set by [`init`].
static CPU_NODE: BootCell<[u8; crate::arch::percpu::MAX_CPUS]> = BootCell::new([0; crate::arch::percpu::MAX_CPUS]);

/// The topology, if the firmware described one.
pub fn topology() -> Option<&'static Numa> {
    // SAFETY: written once by `init` before the other CPUs start and
    // never again; every later access is a shared read.
    unsafe { (*TOPOLOGY.as_ptr()).as_ref() }
}

/// The node of physical address `pa` (0 without an SRAT, or for memory
/// no SRAT range holds).
pub fn node_of(pa: u64) -> u8 {
    topology().and_then(|t| t.node_of(pa)).unwrap_or(0)
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

/// Free pages per node: on the buddy free lists (the pcp lists are not
/// counted, as Linux's NR_FREE_PAGES does not) and in deferred memory not
/// handed to the buddy allocator yet (free RAM all the same).
fn free_per_node() -> [u64; MAX_NODES] {
    let mut free = [0u64; MAX_NODES];
    super::PAGES.with(|p| {
        p.buddy.for_each_free_block(|pfn, order| {
            free[usize::from(node_of(pfn << 12)) % MAX_NODES] += 1 << order;
        });
    });
    super::DEFERRED.with(|d| {
        for &(s, e) in d.ranges.iter().take(d.n).skip(d.next) {
            // Per page: deferred ranges may cross a node boundary.
            // Chunks are counted a MAX_ORDER block (4 MiB) at a time,
            // nodes being aligned to that.
            let mut pfn = s;
            while pfn < e {
                let step = (1024 - (pfn & 1023)).min(e - pfn);
                free[usize::from(node_of(pfn << 12)) % MAX_NODES] += step;
                pfn += step;
            }
        }
    });
    free
}

/// Right-aligns a number in `width` columns (core's padding cannot run
/// in ring 0 here).
fn pad(width: usize, v: u64) -> crate::fmt::StackString<24> {
    let mut digits = crate::fmt::StackString::<24>::new();
    let _ = core::fmt::Write::write_fmt(&mut digits, format_args!("{}", Dec(v)));
    let mut out = crate::fmt::StackString::<24>::new();
    for _ in digits.as_str().len()..width {
        let _ = core::fmt::Write::write_str(&mut out, " ");
    }
    let _ = core::fmt::Write::write_str(&mut out, digits.as_str());
    out
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
        let _ = core::fmt::Write::write_str(&mut head, pad(4, b as u64).as_str());
    }
    kprintln!("node{}", head.as_str());
    for a in 0..n {
        let mut row = crate::fmt::StackString::<64>::new();
        for b in 0..n {
            let _ = core::fmt::Write::write_str(&mut row, pad(4, u64::from(t.distance(a, b))).as_str());
        }
        kprintln!("{}:{}", pad(3, a as u64).as_str(), row.as_str());
    }
    // Each node's meminfo: MemTotal is the RAM the SRAT gives the node
    // (Linux's counts the pages the buddy allocator manages, without
    // what the kernel reserved at boot; here those count as used).
    for (node, &node_free) in free.iter().enumerate().take(n) {
        let (total, f) = (t.node_bytes(node as u8) >> 10, node_free * 4);
        kprintln!("Node {} MemTotal:  {} kB", Dec(node as u64), pad(12, total).as_str());
        kprintln!("Node {} MemFree:   {} kB", Dec(node as u64), pad(12, f).as_str());
        kprintln!("Node {} MemUsed:   {} kB", Dec(node as u64), pad(12, total.saturating_sub(f)).as_str());
    }
}
