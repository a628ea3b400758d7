//! Per-CPU state, reached through one accessor: [`this_cpu`].
//!
//! Linux keeps each CPU's variables in a per-CPU area found through the GS
//! base. This kernel runs on one CPU, so [`cpu_id`] is 0 and the area is
//! one entry of [`CPUS`]; every per-CPU access goes through `this_cpu()`,
//! so bringing up a second CPU changes these two functions (point GS at
//! `CPUS[n]` with `wrgsbase`/`swapgs`, which work in ring 0 here, see
//! platform.md, and read the id from there), not their callers.
//!
//! What lives here: the CPU's id (the buddy allocator's per-CPU lists and
//! the slab's per-CPU slabs are indexed by it), the spinlock bookkeeping
//! (which lock ranks this CPU holds, for the self-deadlock and lock-order
//! checks in sync.rs), and the last fault a fix-up table entry caught.

use core::cell::Cell;

/// CPUs the per-CPU areas are sized for.
pub const MAX_CPUS: usize = 1;

/// Lock ranks the bookkeeping tracks (sync.rs's `rank` constants are below).
pub const LOCK_RANKS: usize = 16;
/// Bits per rank in `held_locks`: a count of up to 15 locks of one rank.
pub const LOCK_COUNT_BITS: u32 = 4;

/// One CPU's area.
pub struct PerCpu {
    /// This CPU's number (0 ..< MAX_CPUS).
    pub id: usize,
    /// The spinlocks this CPU holds: for each rank r, a 4-bit count at
    /// bit 4r, so "holds any lock of rank r or above" is one shift.
    pub(crate) held_locks: Cell<u64>,
    /// (vector, error code, CR2) of the last fault a fix-up entry caught.
    pub last_fixup_fault: Cell<(u64, u64, u64)>,
}

// SAFETY: each CPU touches only its own entry (`this_cpu`); on that CPU an
// exception handler may interrupt an update, but every handler that takes
// a lock releases it before returning, so the counts it changes are back
// as they were when the interrupted code resumes.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    const fn new(id: usize) -> Self {
        PerCpu { id, held_locks: Cell::new(0), last_fixup_fault: Cell::new((0, 0, 0)) }
    }

    /// How many spinlocks this CPU holds (Linux's preempt count, in part).
    pub fn locks_held(&self) -> u32 {
        let h = self.held_locks.get();
        (0..LOCK_RANKS as u32).map(|r| (h >> (r * LOCK_COUNT_BITS) & 0xf) as u32).sum()
    }
}

/// The per-CPU areas.
static CPUS: [PerCpu; MAX_CPUS] = [PerCpu::new(0)];

/// The number of the CPU running this code. The one place SMP changes.
#[inline(always)]
pub fn cpu_id() -> usize {
    0
}

/// This CPU's area.
#[inline(always)]
pub fn this_cpu() -> &'static PerCpu {
    &CPUS[cpu_id()]
}
