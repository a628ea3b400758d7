//! Per-CPU state, reached through one accessor: [`this_cpu`].
//!
//! As Linux, each CPU finds its own area through the GS base: the boot
//! CPU's is set in entry.S before any Rust code runs, each other CPU's by
//! its start-up path (arch/smp.rs) before it takes a lock. The kernel
//! never lets user code change GS (`arch_prctl(ARCH_SET_GS)` is refused),
//! so no entry path needs `swapgs`: GS points at this CPU's area in ring 0
//! and ring 3 alike, and the `syscall` stub finds its stacks there.
//!
//! What lives here: the CPU's id (the buddy allocator's per-CPU lists and
//! the slab's per-CPU slabs are indexed by it), the `syscall` stub's stack
//! slots, the spinlock bookkeeping (which lock ranks this CPU holds, for
//! the self-deadlock and lock-order checks in sync.rs), and the last fault
//! a fix-up table entry caught.

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

/// CPUs the per-CPU areas are sized for (mm-core's buddy allocator and
/// slab take the same bound).
pub const MAX_CPUS: usize = mm_core::buddy::MAX_CPUS;

/// Lock ranks the bookkeeping tracks (sync.rs's `rank` constants are below).
pub const LOCK_RANKS: usize = 16;
/// Bits per rank in `held_locks`: a count of up to 15 locks of one rank.
pub const LOCK_COUNT_BITS: u32 = 4;

/// Byte offsets the assembly uses (`%gs:OFFSET`); checked against the
/// struct below at compile time.
pub const PERCPU_ID: usize = 0;
/// `syscall` entry: the running task's kernel stack top.
pub const PERCPU_KERNEL_RSP: usize = 8;
/// `syscall` entry: the user stack pointer, parked while the stub switches.
pub const PERCPU_USER_RSP: usize = 16;

/// One CPU's area.
#[repr(C, align(64))]
pub struct PerCpu {
    /// This CPU's number (0 ..< MAX_CPUS).
    pub id: usize,
    /// The `syscall` stub's kernel stack (TSS.RSP0's twin).
    pub kernel_rsp: AtomicU64,
    /// The `syscall` stub's scratch slot for the user RSP.
    pub user_rsp: AtomicU64,
    /// The local APIC id (the MADT's, as IPIs address it).
    pub apic_id: AtomicU32,
    /// Set by the CPU itself once it runs kernel code (arch/smp.rs).
    pub online: AtomicBool,
    /// The spinlocks this CPU holds: for each rank r, a 4-bit count at
    /// bit 4r, so "holds any lock of rank r or above" is one shift.
    pub(crate) held_locks: Cell<u64>,
    /// Locks taken by this CPU since boot, per rank (sync.rs counts; the
    /// allocator bench reads the page allocator's).
    pub(crate) locks_taken: [Cell<u64>; LOCK_RANKS],
    /// (vector, error code, CR2) of the last fault a fix-up entry caught.
    pub last_fixup_fault: Cell<(u64, u64, u64)>,
    /// The task this CPU switched away from last (the scheduler's
    /// `finish_task_switch` marks it off the CPU).
    pub prev_task: Cell<u64>,
    /// The running task's pid and the lowest address of its kernel stack
    /// (0, 0: the idle task or boot context, on a boot stack), set at each
    /// switch: the double-fault handler finds the stack whose guard page
    /// was hit here, with no lock (arch/traps.rs).
    pub task_stack: Cell<(u64, u64)>,
}

const _: () = {
    assert!(core::mem::offset_of!(PerCpu, id) == PERCPU_ID);
    assert!(core::mem::offset_of!(PerCpu, kernel_rsp) == PERCPU_KERNEL_RSP);
    assert!(core::mem::offset_of!(PerCpu, user_rsp) == PERCPU_USER_RSP);
};

// SAFETY: the `Cell` fields are touched only by the CPU owning the area
// (`this_cpu`); on that CPU an exception handler may interrupt an update,
// but every handler that takes a lock releases it before returning, so the
// counts it changes are back as they were when the interrupted code
// resumes. Fields other CPUs read are atomics.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    const fn new(id: usize) -> Self {
        PerCpu {
            id,
            kernel_rsp: AtomicU64::new(0),
            user_rsp: AtomicU64::new(0),
            apic_id: AtomicU32::new(id as u32),
            online: AtomicBool::new(id == 0),
            held_locks: Cell::new(0),
            locks_taken: [const { Cell::new(0) }; LOCK_RANKS],
            last_fixup_fault: Cell::new((0, 0, 0)),
            prev_task: Cell::new(0),
            task_stack: Cell::new((0, 0)),
        }
    }

    /// How many spinlocks this CPU holds (Linux's preempt count, in part).
    pub fn locks_held(&self) -> u32 {
        let h = self.held_locks.get();
        (0..LOCK_RANKS as u32).map(|r| (h >> (r * LOCK_COUNT_BITS) & 0xf) as u32).sum()
    }
}

/// The per-CPU areas; entry.S points the boot CPU's GS base at the first.
#[no_mangle]
static PERCPU_AREAS: [PerCpu; MAX_CPUS] = [
    PerCpu::new(0),
    PerCpu::new(1),
    PerCpu::new(2),
    PerCpu::new(3),
    PerCpu::new(4),
    PerCpu::new(5),
    PerCpu::new(6),
    PerCpu::new(7),
];

/// The number of the CPU running this code (read through GS).
#[inline(always)]
pub fn cpu_id() -> usize {
    let id: usize;
    // SAFETY: GS points at this CPU's area from the first instruction of
    // kernel code on (entry.S, arch/smp.rs) and user code cannot move it;
    // the load reads the area's `id`, which never changes.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) id, off = const PERCPU_ID, options(nostack, readonly, preserves_flags))
    };
    id
}

/// This CPU's area.
#[inline(always)]
pub fn this_cpu() -> &'static PerCpu {
    &PERCPU_AREAS[cpu_id() % MAX_CPUS]
}

/// CPU `n`'s area (for the CPU starting it, and for IPIs).
pub fn cpu(n: usize) -> &'static PerCpu {
    &PERCPU_AREAS[n % MAX_CPUS]
}
