//! Kernel locks: a spinlock with a guard, self-deadlock detection and a
//! checked lock order; and `BootCell` for state the boot CPU sets up once.
//!
//! # Lock order
//!
//! Every [`SpinLock`] has a rank; a CPU may take a lock only while every
//! lock it already holds has a lower rank (outer locks first), as Linux
//! documents `mmap_lock -> page table lock -> zone lock` in mm/rmap.c and
//! lockdep checks it. From outermost to innermost:
//!
//! | rank | locks | Linux's counterpart |
//! |---|---|---|
//! | 1 [`rank::MM`] | each process's `mm_struct` (proc/sched.rs `MmRef`) | `mmap_lock` |
//! | 2 [`rank::SCHED`] | the scheduler (irq-safe: the timer takes it) | the run-queue lock |
//! | 3 [`rank::RECLAIM`] | reclaim's state (mm/swap): anon rmap, swap areas, swap cache, the writeback batch | `anon_vma->rwsem`, `swap_info->lock` |
//! | 4 [`rank::MISC`] | bookkeeping that may allocate: self-test run, process reports, access records, boot kernel-half copy; the virtio-blk driver's state (drivers/virtio/blk.rs: it allocates buffers, and swap-out will call it with no page-allocator lock held) | |
//! | 5 [`rank::VMAP`] | vmalloc's area allocator | `vmap_area_lock` |
//! | 6 [`rank::PAGES`] | buddy + pcp lists + slab + the LRU lists (irq-safe) | `zone->lock` (and the slab's `list_lock`) |
//! | 7 [`rank::DEFERRED`] | memory not yet given to the buddy allocator | `deferred_grow_zone`'s `pgdat_resize_lock` |
//! | 8 [`rank::KERNEL_PT`] | the kernel's page tables | `init_mm.page_table_lock` |
//! | 9 [`rank::STATS`] | counters (mm, vmalloc, process-mm globals): leaves, nothing nests in them | |
//! | 10 [`rank::DEVICE`] | device register windows (the IOAPIC's): leaves | |
//! | 11 [`rank::PCP`] | one CPU's page and object caches (mm/percpu.rs; irq-safe): its own fast paths, others only to drain | `pcp->lock`, `local_lock` |
//!
//! So a page fault holds its process's mm, then the page allocator, then
//! (growing the zones) the deferred memory and the kernel page tables; the
//! allocation slow path (mm/page_alloc.rs) runs under the page allocator.
//! Reclaim runs from inside an allocation only where the slow path has
//! dropped the page-allocator lock and the caller holds nothing but mm
//! locks ([`holds_only_below`]); allocations made while reclaim's own
//! state is held may dip into the reserves instead (Linux's
//! `PF_MEMALLOC`).
//!
//! Taking a lock out of order panics, naming both locks; taking a lock the
//! same CPU already holds panics naming it (with one CPU it would spin for
//! ever). `try_lock` is exempt from the order check (it cannot wait, so it
//! cannot deadlock) but still counts as held. Locks marked irq-safe are
//! always taken with interrupts masked (their flags restored on release),
//! so no caller can forget to: the kernel runs with interrupts off in ring
//! 0 today, and the timer interrupt from ring 3 takes the scheduler and
//! may allocate.

use crate::arch::percpu::{cpu_id, this_cpu, LOCK_COUNT_BITS, LOCK_RANKS};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

/// Lock ranks, outermost first (see the module documentation).
pub mod rank {
    /// A process's `mm_struct` (Linux's `mmap_lock`).
    pub const MM: u8 = 1;
    /// The scheduler.
    pub const SCHED: u8 = 2;
    /// Reclaim's state: the anon rmap, swap areas and swap cache
    /// (Linux's `anon_vma->rwsem` and `swap_info->lock`).
    pub const RECLAIM: u8 = 3;
    /// Bookkeeping tables that may allocate.
    pub const MISC: u8 = 4;
    /// vmalloc's area allocator.
    pub const VMAP: u8 = 5;
    /// The page allocator (buddy, pcp lists, slab): the zone lock.
    pub const PAGES: u8 = 6;
    /// Deferred memory.
    pub const DEFERRED: u8 = 7;
    /// The kernel's page tables.
    pub const KERNEL_PT: u8 = 8;
    /// Leaf counters.
    pub const STATS: u8 = 9;
    /// Device register windows (leaves).
    pub const DEVICE: u8 = 10;
    /// A CPU's own allocator caches (mm/percpu.rs): taken by that CPU on
    /// its fast paths, by another only to drain them; innermost, nothing
    /// is taken under it.
    pub const PCP: u8 = 11;
    /// Ranks for the lock self-tests only.
    pub const TEST_OUTER: u8 = 14;
    /// Ranks for the lock self-tests only.
    pub const TEST_INNER: u8 = 15;

    /// What each rank holds, for the messages.
    pub(super) const NAMES: [&str; 16] = [
        "(rank 0)",
        "an mm_struct",
        "the scheduler",
        "the reclaim state (rmap, swap)",
        "a bookkeeping table",
        "the vmalloc area allocator",
        "the page allocator",
        "the deferred memory",
        "the kernel page tables",
        "a counter lock",
        "a device register window",
        "a CPU's allocator caches",
        "(rank 12)",
        "(rank 13)",
        "a self-test outer lock",
        "a self-test inner lock",
    ];
}

/// Why a lock could not be taken without deadlocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockError {
    /// This CPU holds the lock already.
    SelfDeadlock {
        /// The lock.
        name: &'static str,
    },
    /// This CPU holds a lock of the same or a higher rank.
    Order {
        /// The lock asked for.
        name: &'static str,
        /// What the innermost rank held holds.
        held: &'static str,
    },
}

impl core::fmt::Display for LockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LockError::SelfDeadlock { name } => {
                write!(f, "deadlock: this CPU takes {} while already holding it", name)
            }
            LockError::Order { name, held } => {
                write!(f, "lock order violated: {} taken while holding {} (see the order in sync.rs)", name, held)
            }
        }
    }
}

/// A spinlock around kernel-global state, filled at init (`set`) or at
/// construction (`new_with`).
pub struct SpinLock<T> {
    /// 0: free; otherwise the holder's CPU number + 1.
    owner: AtomicU32,
    name: &'static str,
    rank: u8,
    irq_safe: bool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: `owner` serialises every access to `value` across CPUs and
// interrupt handlers (a second taker on the same CPU panics, on another it
// spins), and `T: Send` lets the value be used from whichever CPU holds it.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An empty lock of `rank`, for a value `set` at init.
    pub const fn new(name: &'static str, rank: u8) -> Self {
        SpinLock { owner: AtomicU32::new(0), name, rank, irq_safe: false, value: UnsafeCell::new(None) }
    }

    /// An empty lock that is also taken from interrupt context: every
    /// acquisition masks interrupts.
    pub const fn new_irqsafe(name: &'static str, rank: u8) -> Self {
        SpinLock { owner: AtomicU32::new(0), name, rank, irq_safe: true, value: UnsafeCell::new(None) }
    }

    /// An irq-safe lock holding `v` from the start.
    pub const fn new_irqsafe_with(name: &'static str, rank: u8, v: T) -> Self {
        SpinLock { owner: AtomicU32::new(0), name, rank, irq_safe: true, value: UnsafeCell::new(Some(v)) }
    }

    /// A lock holding `v` from the start.
    pub const fn new_with(name: &'static str, rank: u8, v: T) -> Self {
        SpinLock { owner: AtomicU32::new(0), name, rank, irq_safe: false, value: UnsafeCell::new(Some(v)) }
    }

    /// The lock's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Stores the value (at init; replaces any earlier one).
    pub fn set(&self, v: T) {
        let g = self.raw_lock();
        // SAFETY: the lock is held.
        unsafe { *self.value.get() = Some(v) };
        drop(g);
    }

    /// Takes the lock, spinning while another CPU holds it. Panics (naming
    /// the locks, at the caller's location) on a self-deadlock or an
    /// out-of-order acquisition, or if the value was never `set`.
    #[inline]
    #[track_caller]
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        match self.lock_checked() {
            Ok(g) => g,
            Err(e) => panic!("{}", e),
        }
    }

    /// Like `lock`, but reports a self-deadlock or an order violation
    /// instead of panicking (the self-tests show the checks work with it).
    #[inline]
    #[track_caller]
    pub fn lock_checked(&self) -> Result<SpinLockGuard<'_, T>, LockError> {
        let g = self.acquire()?;
        // SAFETY: the lock is held.
        if unsafe { (*self.value.get()).is_none() } {
            drop(g);
            uninitialised(self.name);
        }
        Ok(SpinLockGuard { raw: g, _value: core::marker::PhantomData })
    }

    /// Takes the lock if it is free; None if anyone (this CPU included)
    /// holds it, or it was never set. Fault handlers use this: they may
    /// have interrupted the holder.
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let flags = self.irq_off();
        if self.owner.compare_exchange(0, cpu_id() as u32 + 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.irq_on(flags);
            return None;
        }
        let raw = RawGuard { lock: self, flags };
        held_add(self.rank);
        // SAFETY: the lock is held.
        if unsafe { (*self.value.get()).is_none() } {
            return None;
        }
        Some(SpinLockGuard { raw, _value: core::marker::PhantomData })
    }

    /// Runs `f` on the value under the lock.
    #[inline]
    #[track_caller]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }

    /// Like `with`, but None when the lock is busy or empty.
    pub fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.try_lock().map(|mut g| f(&mut g))
    }

    /// Takes the lock without looking at the value.
    fn raw_lock(&self) -> RawGuard<'_, T> {
        match self.acquire() {
            Ok(g) => g,
            Err(e) => panic!("{}", e),
        }
    }

    #[inline]
    fn irq_off(&self) -> u64 {
        if self.irq_safe {
            crate::arch::irq_save()
        } else {
            0
        }
    }

    #[inline]
    fn irq_on(&self, flags: u64) {
        if self.irq_safe {
            crate::arch::irq_restore(flags);
        }
    }

    /// The uncontended, in-order case inline (a few instructions: the
    /// order check is one shift of the per-CPU word); everything else in
    /// `acquire_slow`.
    #[inline(always)]
    fn acquire(&self) -> Result<RawGuard<'_, T>, LockError> {
        let flags = self.irq_off();
        let cpu = this_cpu();
        let held = cpu.held_locks.get();
        let shift = self.rank as u32 % LOCK_RANKS as u32 * LOCK_COUNT_BITS;
        if held >> shift == 0
            && self.owner.compare_exchange(0, cpu_id() as u32 + 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            cpu.held_locks.set(held + (1 << shift));
            count_taken(cpu, self.rank);
            return Ok(RawGuard { lock: self, flags });
        }
        self.acquire_slow(flags)
    }

    /// A lock of this rank or above is held (this one: self-deadlock;
    /// another: out of order), or another CPU holds this one (spin).
    #[cold]
    #[inline(never)]
    fn acquire_slow(&self, flags: u64) -> Result<RawGuard<'_, T>, LockError> {
        let me = cpu_id() as u32 + 1;
        let held = this_cpu().held_locks.get();
        if held >> (self.rank as u32 % LOCK_RANKS as u32 * LOCK_COUNT_BITS) != 0 {
            self.irq_on(flags);
            if self.owner.load(Ordering::Relaxed) == me {
                return Err(LockError::SelfDeadlock { name: self.name });
            }
            return Err(LockError::Order { name: self.name, held: innermost(held) });
        }
        loop {
            match self.owner.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(o) if o == me => {
                    self.irq_on(flags);
                    return Err(LockError::SelfDeadlock { name: self.name });
                }
                Err(_) => {
                    // Another CPU holds it: wait with `pause` until it is
                    // free, reading only (no bus-locked retries).
                    while self.owner.load(Ordering::Relaxed) != 0 {
                        // The holder may be waiting for this CPU to flush
                        // its TLB (arch/tlb.rs): serve that while waiting.
                        crate::arch::tlb::poll();
                        core::hint::spin_loop();
                    }
                }
            }
        }
        held_add(self.rank);
        Ok(RawGuard { lock: self, flags })
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn uninitialised(name: &str) -> ! {
    panic!("{} used before it was initialised", name)
}

/// Records that this CPU took a lock of `rank` (a 4-bit count per rank:
/// at most 15 locks of one rank at once, which only `try_lock` on several
/// mm_structs could approach).
#[inline]
fn held_add(rank: u8) {
    let cpu = this_cpu();
    cpu.held_locks.set(cpu.held_locks.get() + (1 << (rank as u32 % LOCK_RANKS as u32 * LOCK_COUNT_BITS)));
    count_taken(cpu, rank);
}

/// Counts an acquisition of a lock of `rank` by this CPU (what the
/// per-CPU allocator bench reads: shared-lock acquisitions per operation).
#[inline(always)]
fn count_taken(cpu: &crate::arch::percpu::PerCpu, rank: u8) {
    let c = &cpu.locks_taken[rank as usize % LOCK_RANKS];
    c.set(c.get() + 1);
}

/// How many locks of `rank` this CPU has taken since boot.
pub fn locks_taken(rank: u8) -> u64 {
    this_cpu().locks_taken[rank as usize % LOCK_RANKS].get()
}

/// Records that this CPU released a lock of `rank`.
#[inline]
fn held_remove(rank: u8) {
    let cpu = this_cpu();
    cpu.held_locks.set(cpu.held_locks.get() - (1 << (rank as u32 % LOCK_RANKS as u32 * LOCK_COUNT_BITS)));
}

/// What the innermost rank in `held` (non-zero) holds.
fn innermost(held: u64) -> &'static str {
    let top = (63 - held.leading_zeros()) / LOCK_COUNT_BITS;
    rank::NAMES[top as usize % LOCK_RANKS]
}

/// Whether every lock this CPU holds ranks below `r` (so a lock of rank
/// `r` may be taken): direct reclaim runs only from allocations whose
/// callers hold nothing but mm locks.
pub fn holds_only_below(r: u8) -> bool {
    this_cpu().held_locks.get() >> (r as u32 * LOCK_COUNT_BITS) == 0
}

/// Whether this CPU holds a lock of rank `r`.
pub fn holds_rank(r: u8) -> bool {
    (this_cpu().held_locks.get() >> (r as u32 * LOCK_COUNT_BITS)) & ((1 << LOCK_COUNT_BITS) - 1) != 0
}

/// Panics unless this CPU holds no spinlock: called where a task may
/// sleep or be switched out (Linux's "scheduling while atomic").
pub fn assert_no_locks_held(what: &str) {
    let cpu = this_cpu();
    let held = cpu.held_locks.get();
    if held != 0 {
        panic!(
            "{} while holding {} ({} lock(s) in all)",
            what,
            innermost(held),
            crate::fmt::Dec(cpu.locks_held() as u64)
        );
    }
}

/// The lock held, without access to the value.
struct RawGuard<'a, T> {
    lock: &'a SpinLock<T>,
    flags: u64,
}

impl<T> Drop for RawGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        held_remove(self.lock.rank);
        self.lock.owner.store(0, Ordering::Release);
        self.lock.irq_on(self.flags);
    }
}

/// Access to a locked value; dropping it releases the lock (and restores
/// the interrupt flag of an irq-safe lock).
pub struct SpinLockGuard<'a, T> {
    raw: RawGuard<'a, T>,
    // Not Send: a guard is released on the CPU that took it.
    _value: core::marker::PhantomData<*mut T>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the lock is held and the value was checked present when
        // the guard was made; nothing takes it out while the lock is held.
        match unsafe { &*self.raw.lock.value.get() } {
            Some(v) => v,
            None => unreachable!(),
        }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; the guard is the only way to the value
        // while it lives, and `&mut self` makes this borrow unique.
        match unsafe { &mut *self.raw.lock.value.get() } {
            Some(v) => v,
            None => unreachable!(),
        }
    }
}

/// A static the boot CPU initialises and then owns.
pub struct BootCell<T>(UnsafeCell<T>);

// SAFETY: every `get_mut` caller documents why no other reference is live
// (boot-time init before the other CPUs start, or a per-CPU entry that
// only its own CPU touches with interrupts disabled).
unsafe impl<T> Sync for BootCell<T> {}

impl<T> BootCell<T> {
    /// Wraps a value.
    pub const fn new(v: T) -> Self {
        BootCell(UnsafeCell::new(v))
    }

    /// Exclusive access.
    ///
    /// # Safety
    /// No other reference to the value may be live.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut(&self) -> &mut T {
        // SAFETY: the caller guarantees exclusivity.
        unsafe { &mut *self.0.get() }
    }

    /// The value's address (for the CPU to load, as `lidt` does).
    pub fn as_ptr(&self) -> *const T {
        self.0.get()
    }
}
