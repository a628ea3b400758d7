//! Event counters, as Linux's /proc/vmstat (`vm_event_item`): what the
//! fault path, the allocation slow path, reclaim and the OOM killer have
//! done since boot. The swap and LRU counters are here with their Linux
//! names but stay zero until swap and the LRU lists are wired into the
//! guest (issue 13's swap half).

use crate::arch::percpu::{cpu_id, MAX_CPUS};
use crate::fmt::Dec;
use crate::kprintln;
use core::sync::atomic::{AtomicU64, Ordering};

/// One counter per event, in /proc/vmstat's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
// The swap and LRU events have no producer until swap lands.
#[allow(dead_code)]
pub enum Event {
    /// Page faults handled (user mode).
    PgFault,
    /// Faults that needed I/O (swap-in): zero until swap exists.
    PgMajFault,
    /// Pages swapped in.
    PswpIn,
    /// Pages swapped out.
    PswpOut,
    /// Pages kswapd scanned on the LRU lists.
    PgScanKswapd,
    /// Pages direct reclaim scanned.
    PgScanDirect,
    /// Pages kswapd reclaimed (slab pages the shrinkers gave back count).
    PgStealKswapd,
    /// Pages direct reclaim reclaimed.
    PgStealDirect,
    /// Pages moved to an active list.
    PgActivate,
    /// Pages moved to an inactive list.
    PgDeactivate,
    /// Refaults of recently evicted pages.
    WorkingsetRefault,
    /// Processes the OOM killer killed.
    OomKill,
    /// Entries into direct reclaim.
    AllocStall,
    /// Times kswapd was woken (Linux counts this per node in
    /// `kswapd_*`/`pageoutrun`; one figure here).
    KswapdWake,
    /// kswapd balancing runs (Linux's `pageoutrun`).
    PageOutRun,
    /// Objects the shrinkers freed.
    SlabsScanned,
    /// Pages compaction's migrate scanner looked at.
    CompactMigrateScanned,
    /// Pages compaction's free scanner looked at.
    CompactFreeScanned,
    /// Pages compaction isolated (to migrate, and as free targets).
    CompactIsolated,
    /// Direct compactions from the allocation slow path.
    CompactStall,
    /// Direct compactions after which the allocation still failed.
    CompactFail,
    /// Direct compactions after which the order was free.
    CompactSuccess,
    /// Times kcompactd was woken (mm/kcompactd.rs).
    CompactDaemonWake,
    /// Huge pages a fault mapped (mm/huge_memory.rs).
    ThpFaultAlloc,
    /// Faults that wanted a huge page and fell back to 4 KiB ones.
    ThpFaultFallback,
    /// PMD mappings split into page tables.
    ThpSplitPmd,
    /// Huge pages khugepaged allocated to collapse a range into.
    ThpCollapseAlloc,
    /// Huge zero pages allocated.
    ThpZeroPageAlloc,
}

/// How many events there are.
pub const NR_EVENTS: usize = mm_core::descriptor::NR_VM_EVENTS;

/// The names /proc/vmstat prints, by [`Event`]: the descriptor's list
/// (the host reads the counters from there, in this order).
pub const NAMES: [&str; NR_EVENTS] = mm_core::descriptor::VM_EVENT_NAMES;

/// One CPU's counters, on lines of their own (no CPU writes another's).
#[repr(align(64))]
struct CpuEvents([AtomicU64; NR_EVENTS]);

/// The counters, per CPU (Linux's `vm_event_states`): a CPU counts into
/// its own row without a bus-locked instruction; readers fold the rows.
static EVENTS: [CpuEvents; MAX_CPUS] = [const { CpuEvents([const { AtomicU64::new(0) }; NR_EVENTS]) }; MAX_CPUS];

/// Counts `n` occurrences of `e` on this CPU (Linux's `count_vm_events`,
/// a `this_cpu_add`): an add to this CPU's own counter, whose line no
/// other CPU writes, so it never bounces between CPUs (atomic only so an
/// interrupt counting the same event on this CPU cannot lose an update).
#[inline]
pub fn count(e: Event, n: u64) {
    EVENTS[cpu_id() % MAX_CPUS].0[e as usize].fetch_add(n, Ordering::Relaxed);
}

/// Every counter folded over the CPUs (Linux's `all_vm_events`), in
/// [`NAMES`]' order.
pub fn snapshot() -> [u64; NR_EVENTS] {
    let mut out = [0u64; NR_EVENTS];
    for cpu in EVENTS.iter() {
        for (o, e) in out.iter_mut().zip(cpu.0.iter()) {
            *o = o.wrapping_add(e.load(Ordering::Relaxed));
        }
    }
    out
}

/// Pages MADV_FREE marked lazily freed (`pglazyfree`). Kept beside
/// [`EVENTS`] rather than in it: the host's descriptor carries a fixed
/// list of counters, and these are the guest's /proc/vmstat's only.
pub static PGLAZYFREE: AtomicU64 = AtomicU64::new(0);
/// Lazily freed pages reclaim discarded without writing them anywhere
/// (`pglazyfreed`).
pub static PGLAZYFREED: AtomicU64 = AtomicU64::new(0);

/// The /proc/vmstat counters kept outside [`EVENTS`], (name, value).
pub fn extra() -> [(&'static str, u64); 2] {
    [("pglazyfree", PGLAZYFREE.load(Ordering::Relaxed)), ("pglazyfreed", PGLAZYFREED.load(Ordering::Relaxed))]
}

/// Prints /proc/vmstat's lines (`name value`).
pub fn print() {
    for (name, v) in NAMES.iter().zip(snapshot()) {
        kprintln!("{} {}", name, Dec(v));
    }
    for (name, v) in extra() {
        kprintln!("{} {}", name, Dec(v));
    }
    for (name, v) in crate::arch::tlb::vmstat() {
        kprintln!("{} {}", name, Dec(v));
    }
}
