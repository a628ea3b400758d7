//! Tasks' kernel stacks in the vmalloc window (Linux's `CONFIG_VMAP_STACK`,
//! kernel/fork.c `alloc_thread_stack_node`): 4 KiB pages mapped virtually
//! contiguous, with an unmapped guard page right below each stack, so an
//! overflow faults (a #PF that cannot be delivered on the exhausted stack
//! becomes a #DF on its IST stack, arch/traps.rs `handle_stack_overflow`)
//! instead of silently overwriting whatever lies below, as a block from
//! the buddy allocator in the direct map did.
//!
//! The guard page is not part of the stack's own area: every vmalloc area
//! reserves an unmapped guard page *after* itself (mm-core's
//! `VmapAllocator`), so the page below an area's start is always either
//! the previous area's guard, free (unmapped) window, or below the window
//! itself. Linux relies on the same property.
//!
//! Freed stacks are kept, still mapped, in a small per-CPU cache (Linux's
//! `cached_stacks`, two per CPU), so fork/exit churn does not map and
//! unmap eight pages (and flush every CPU's TLB) each time: page-table
//! edits are expensive in an emulated ring 0. Cached stacks count in
//! VmallocUsed and /proc/vmallocinfo, not in KernelStack (as Linux's
//! `account_kernel_stack`, which follows the task, not the area).

use crate::arch::percpu::{cpu_id, MAX_CPUS};
use crate::mm::vmalloc;
use core::sync::atomic::{AtomicU64, Ordering};
use mm_core::addr::{VirtAddr, PAGE_SIZE};

/// A task's kernel stack size (Linux's `THREAD_SIZE`): 32 KiB. Clone's
/// path builds a task's signal state, 8 KiB, on the stack below a system
/// call's frames; 16 KiB overflowed (silently, before the guard page).
pub const THREAD_SIZE: u64 = 32 << 10;

/// The caller name /proc/vmallocinfo shows for a kernel stack (Linux
/// prints the allocating function's symbol).
pub const CALLER: &str = "alloc_thread_stack_node";

/// Freed stacks each CPU keeps (Linux's `NR_CACHED_STACKS`).
const NR_CACHED_STACKS: usize = 2;

/// Each CPU's cached stacks (their base addresses; 0: an empty slot).
/// Atomics: a slot is taken with a swap, filled with a compare-exchange,
/// and [`drain_cache`] may empty other CPUs' slots.
static CACHED_STACKS: [[AtomicU64; NR_CACHED_STACKS]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; NR_CACHED_STACKS] }; MAX_CPUS];

/// Stacks served from the per-CPU cache, and mapped anew, since boot.
static CACHE_HITS: AtomicU64 = AtomicU64::new(0);
static CACHE_MISSES: AtomicU64 = AtomicU64::new(0);

/// A kernel stack for a new task: its lowest address (the stack grows
/// down from `base + THREAD_SIZE`), counted in meminfo's KernelStack.
/// None when there is no memory or vmalloc space.
pub fn alloc_thread_stack() -> Option<u64> {
    let cpu = cpu_id();
    let cached = CACHED_STACKS[cpu].iter().map(|s| s.swap(0, Ordering::Acquire)).find(|&b| b != 0);
    let base = match cached {
        Some(b) => {
            CACHE_HITS.fetch_add(1, Ordering::Relaxed);
            b
        }
        None => {
            CACHE_MISSES.fetch_add(1, Ordering::Relaxed);
            vmalloc::vmalloc(THREAD_SIZE, CALLER).ok()?.0
        }
    };
    // Not cleared on reuse (the direct-map stacks never were): a new
    // task's stack is laid out from its top by `prepare_stack`.
    crate::mm::procfs::KERNEL_STACK_KB.fetch_add(THREAD_SIZE >> 10, Ordering::Relaxed);
    Some(base)
}

/// Gives back a reaped task's kernel stack: into this CPU's cache if it
/// has room, else unmapped (every CPU's TLB flushed before the frames are
/// freed: vfree) and freed. No lock may be held (vfree takes the vmalloc
/// and page allocators' locks and waits for the other CPUs' flushes).
pub fn free_thread_stack(base: u64) {
    crate::mm::procfs::KERNEL_STACK_KB.fetch_sub(THREAD_SIZE >> 10, Ordering::Relaxed);
    let cpu = cpu_id();
    if CACHED_STACKS[cpu].iter().any(|s| s.compare_exchange(0, base, Ordering::Release, Ordering::Relaxed).is_ok()) {
        return;
    }
    if let Err(e) = vmalloc::vfree(VirtAddr(base)) {
        panic!("freeing the kernel stack at {:#x}: {}", base, e);
    }
}

/// Unmaps and frees every CPU's cached stacks (Linux frees a CPU's cache
/// when it goes offline; the self-tests' leak checks call this so that
/// only live tasks' stacks remain). Returns how many were freed.
pub fn drain_cache() -> u64 {
    let mut n = 0;
    for slot in CACHED_STACKS.iter().flatten() {
        let base = slot.swap(0, Ordering::Acquire);
        if base != 0 {
            if let Err(e) = vmalloc::vfree(VirtAddr(base)) {
                panic!("freeing the cached kernel stack at {:#x}: {}", base, e);
            }
            n += 1;
        }
    }
    n
}

/// (stacks served from the per-CPU caches, stacks mapped anew) since boot.
pub fn cache_stats() -> (u64, u64) {
    (CACHE_HITS.load(Ordering::Relaxed), CACHE_MISSES.load(Ordering::Relaxed))
}

/// The guard page of the stack whose lowest address is `base`.
pub fn guard_page(base: u64) -> core::ops::Range<u64> {
    base - PAGE_SIZE..base
}
