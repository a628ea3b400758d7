//! Fast user-space mutexes (Linux's kernel/futex): `futex(2)` with
//! FUTEX_WAIT, FUTEX_WAKE, FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET,
//! FUTEX_REQUEUE and FUTEX_CMP_REQUEUE (FUTEX_PRIVATE_FLAG and
//! FUTEX_CLOCK_REALTIME accepted), what glibc's and musl's mutexes,
//! condition variables and pthread_join use, and the wake at a thread's
//! exit for CLONE_CHILD_CLEARTID.
//!
//! A futex is named by its address space and user address (Linux's
//! private key, used here for shared futexes too: a futex in a MAP_SHARED
//! mapping does not reach another process). Waiters sit in one fixed
//! table (each task waits on at most one futex, so it never fills before
//! the task table would), under the address space's lock as the "hash
//! bucket" lock: the waiter compares `*uaddr` with the expected value and
//! queues itself under it, and a waker takes it before looking at the
//! queue, so a wake that follows the store to `*uaddr` cannot pass a
//! waiter between its compare and its sleep. Wakers take waiters off the
//! table; a woken waiter finding itself gone knows it was woken (others
//! are spurious and it sleeps again). Timeouts: an expired one returns
//! -ETIMEDOUT at once; a later one is waited for by yielding the CPU until
//! the deadline (there is no timer wheel).

use super::abi::{EFAULT, EINVAL, ENOMEM, ENOSYS};
use super::sched::{self, MmRef};
use super::syscall::copy_from_user;
use crate::sync::{rank, SpinLock};
use alloc::sync::Arc;

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;
/// A waiter's bitset that every wake matches.
pub const BITSET_MATCH_ANY: u32 = u32::MAX;
const ETIMEDOUT: i64 = 110;
const EAGAIN: i64 = 11;
const EINTR: i64 = 4;

/// Most tasks waiting at once.
const MAX_WAITERS: usize = 256;

/// One task waiting on a futex.
#[derive(Clone, Copy)]
struct Waiter {
    /// The waiting task.
    pid: u64,
    /// Its address space (the Arc's address: live while the task waits).
    mm: usize,
    /// The futex's user address.
    uaddr: u64,
    /// FUTEX_WAIT_BITSET's mask (every bit for FUTEX_WAIT).
    bitset: u32,
}

/// The waiters, in arrival order per futex (a wake takes the oldest
/// first, as Linux's priority list does for equal priorities).
struct Queue {
    slots: [Option<Waiter>; MAX_WAITERS],
    /// Arrival stamps of the slots (the order wakes follow).
    order: [u64; MAX_WAITERS],
    next: u64,
}

static QUEUE: SpinLock<Queue> = SpinLock::new_with(
    "the futex queue",
    rank::MISC,
    Queue { slots: [None; MAX_WAITERS], order: [0; MAX_WAITERS], next: 0 },
);

impl Queue {
    fn push(&mut self, w: Waiter) -> bool {
        let Some(i) = self.slots.iter().position(Option::is_none) else { return false };
        self.slots[i] = Some(w);
        self.next += 1;
        self.order[i] = self.next;
        true
    }

    /// Whether task `pid` still waits.
    fn queued(&self, pid: u64) -> bool {
        self.slots.iter().flatten().any(|w| w.pid == pid)
    }

    /// Takes task `pid` off; false if it was not queued (a waker took it).
    fn remove(&mut self, pid: u64) -> bool {
        match self.slots.iter().position(|w| w.is_some_and(|w| w.pid == pid)) {
            Some(i) => {
                self.slots[i] = None;
                true
            }
            None => false,
        }
    }

    /// The oldest waiter on (mm, uaddr) whose bitset meets `bitset`.
    fn oldest(&self, mm: usize, uaddr: u64, bitset: u32) -> Option<usize> {
        (0..MAX_WAITERS)
            .filter(|&i| self.slots[i].is_some_and(|w| w.mm == mm && w.uaddr == uaddr && w.bitset & bitset != 0))
            .min_by_key(|&i| self.order[i])
    }
}

fn key(mm: &MmRef) -> usize {
    Arc::as_ptr(mm) as usize
}

/// Reads the u32 at `uaddr` (faulting it in: the caller holds the mm).
fn read_u32(m: &mut super::mm::MmStruct, uaddr: u64) -> Result<u32, i64> {
    let mut b = [0u8; 4];
    copy_from_user(m, uaddr, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Wakes the tasks `pids` (outside every lock but the caller's none).
fn wake_all(pids: &[u64]) {
    for &p in pids {
        sched::wake(p);
    }
}

/// Most waiters taken off per lock hold (their pids wait on the kernel
/// stack until they are woken, after the locks).
const BATCH: usize = 16;

/// Takes up to `n` waiters of (mm, uaddr) matching `bitset` off the
/// queue, into `out`; how many.
fn take_waiters(q: &mut Queue, mm: usize, uaddr: u64, bitset: u32, n: u64, out: &mut [u64; BATCH]) -> usize {
    let mut k = 0;
    while (k as u64) < n && k < BATCH {
        let Some(i) = q.oldest(mm, uaddr, bitset) else { break };
        if let Some(w) = q.slots[i].take() {
            out[k] = w.pid;
            k += 1;
        }
    }
    k
}

/// Wakes up to `n` waiters of futex `uaddr` in `mm` whose bitset meets
/// `bitset`; how many it woke.
pub fn wake(mm: &MmRef, uaddr: u64, n: u64, bitset: u32) -> i64 {
    let k = key(mm);
    let mut total = 0u64;
    while total < n {
        let mut pids = [0u64; BATCH];
        // The mm lock is the bucket lock (see the module documentation).
        let woken = mm.with(|_| QUEUE.with(|q| take_waiters(q, k, uaddr, bitset, n - total, &mut pids)));
        wake_all(&pids[..woken]);
        total += woken as u64;
        if woken < BATCH {
            break;
        }
    }
    total as i64
}

/// FUTEX_WAIT(_BITSET): sleeps while `*uaddr == val` until woken, a
/// signal (-ERESTARTSYS without a timeout, -EINTR with one), or the
/// absolute `deadline` in ns (-ETIMEDOUT); -EAGAIN if the value differs.
fn wait(uaddr: u64, val: u32, bitset: u32, deadline: Option<u64>) -> i64 {
    if bitset == 0 {
        return -EINVAL;
    }
    let Some(mm) = sched::current_mm() else { return -EFAULT };
    let me = sched::current_pid();
    let k = key(&mm);
    let queued = mm.with(|m| {
        if read_u32(m, uaddr)? != val {
            return Err(-EAGAIN);
        }
        if deadline.is_some_and(|d| super::linux::now_ns() >= d) {
            return Err(-ETIMEDOUT);
        }
        if QUEUE.with(|q| q.push(Waiter { pid: me, mm: k, uaddr, bitset })) {
            Ok(())
        } else {
            Err(-ENOMEM)
        }
    });
    if let Err(e) = queued {
        return e;
    }
    drop(mm);
    loop {
        match deadline {
            None => sched::sleep_current(),
            Some(_) => sched::yield_now(false),
        }
        if !QUEUE.with(|q| q.queued(me)) {
            return 0;
        }
        let why = if sched::current_killed() || super::signal::pending() {
            Some(if deadline.is_some() { -EINTR } else { -super::signal::ERESTARTSYS })
        } else if deadline.is_some_and(|d| super::linux::now_ns() >= d) {
            Some(-ETIMEDOUT)
        } else {
            None
        };
        if let Some(e) = why {
            // Unless a waker took it off meanwhile: then it was woken.
            return if QUEUE.with(|q| q.remove(me)) { e } else { 0 };
        }
    }
}

/// FUTEX_(CMP_)REQUEUE: wakes up to `n_wake` waiters of `uaddr` and moves
/// up to `n_requeue` more to `uaddr2` (CMP: only if `*uaddr == cmp`, else
/// -EAGAIN); how many were woken and moved.
fn requeue(uaddr: u64, n_wake: u64, n_requeue: u64, uaddr2: u64, cmp: Option<u32>) -> i64 {
    let Some(mm) = sched::current_mm() else { return -EFAULT };
    let k = key(&mm);
    let mut pids = [0u64; BATCH];
    let r = mm.with(|m| {
        if let Some(c) = cmp {
            if read_u32(m, uaddr)? != c {
                return Err(-EAGAIN);
            }
        }
        Ok(QUEUE.with(|q| take_waiters(q, k, uaddr, BITSET_MATCH_ANY, n_wake, &mut pids)))
    });
    let first = match r {
        Ok(n) => n,
        Err(e) => return e,
    };
    wake_all(&pids[..first]);
    // More to wake than one batch: the rest in batches (no longer atomic
    // with the compare, which only guards against a changed futex word).
    let mut woken = first as u64;
    if first == BATCH && woken < n_wake {
        woken += wake(&mm, uaddr, n_wake - woken, BITSET_MATCH_ANY) as u64;
    }
    let moved = mm.with(|_| {
        QUEUE.with(|q| {
            let mut moved = 0u64;
            while moved < n_requeue {
                let Some(i) = q.oldest(k, uaddr, BITSET_MATCH_ANY) else { break };
                // A fresh stamp: it queues behind uaddr2's waiters.
                q.next += 1;
                q.order[i] = q.next;
                if let Some(w) = q.slots[i].as_mut() {
                    w.uaddr = uaddr2;
                }
                moved += 1;
            }
            moved
        })
    });
    (woken + moved) as i64
}

/// A `struct timespec` from user memory, in ns (-EINVAL if malformed).
fn timespec_ns(ptr: u64) -> Result<u64, i64> {
    let mut b = [0u8; 16];
    super::syscall::with_mm(|m| copy_from_user(m, ptr, &mut b)).unwrap_or(Err(-EFAULT))?;
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
    let nsec = i64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8]));
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(-EINVAL);
    }
    Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(nsec as u64))
}

/// `futex(uaddr, op, val, timeout/val2, uaddr2, val3)`.
pub fn sys_futex(uaddr: u64, op: u64, val: u64, timeout: u64, uaddr2: u64, val3: u64) -> i64 {
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    // FUTEX_CLOCK_REALTIME only means something to the bitset wait.
    if op & FUTEX_CLOCK_REALTIME != 0 && cmd != FUTEX_WAIT_BITSET {
        return -ENOSYS;
    }
    if uaddr & 3 != 0 {
        return -EINVAL;
    }
    let (val, val3) = (val as u32, val3 as u32);
    match cmd {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let deadline = if timeout == 0 {
                None
            } else {
                match timespec_ns(timeout) {
                    // FUTEX_WAIT's timeout is relative; the bitset wait's
                    // absolute, on CLOCK_REALTIME with FUTEX_CLOCK_REALTIME
                    // (turned into the boot clock the waits count on).
                    Ok(ns) if cmd == FUTEX_WAIT => Some(super::linux::now_ns().saturating_add(ns)),
                    Ok(ns) if op & FUTEX_CLOCK_REALTIME != 0 => {
                        Some(ns.saturating_sub(super::linux::realtime_offset()))
                    }
                    Ok(ns) => Some(ns),
                    Err(e) => return e,
                }
            };
            let bitset = if cmd == FUTEX_WAIT { BITSET_MATCH_ANY } else { val3 };
            wait(uaddr, val, bitset, deadline)
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => {
            let bitset = if cmd == FUTEX_WAKE { BITSET_MATCH_ANY } else { val3 };
            if bitset == 0 {
                return -EINVAL;
            }
            match sched::current_mm() {
                Some(mm) => wake(&mm, uaddr, u64::from(val), bitset),
                None => -EFAULT,
            }
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            if uaddr2 & 3 != 0 {
                return -EINVAL;
            }
            // val2 travels in the timeout argument's register.
            let n_requeue = u64::from(timeout as u32);
            let cmp = (cmd == FUTEX_CMP_REQUEUE).then_some(val3);
            requeue(uaddr, u64::from(val), n_requeue, uaddr2, cmp)
        }
        // FUTEX_WAKE_OP, the PI and requeue-PI operations.
        _ => -ENOSYS,
    }
}

/// The futex word's bit saying a waiter sleeps on it (`FUTEX_WAITERS`).
const FUTEX_WAITERS: u32 = 0x8000_0000;
/// The bit the kernel sets when the owner died (`FUTEX_OWNER_DIED`).
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
/// The owner's tid in the word (`FUTEX_TID_MASK`).
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// Most robust-list entries walked, against a list that loops
/// (`ROBUST_LIST_LIMIT`).
const ROBUST_LIST_LIMIT: u32 = 2048;

/// Linux's `exit_robust_list`: at the exit of thread `tid`, walks the
/// robust list whose `struct robust_list_head` (next, futex_offset,
/// list_op_pending: 24 bytes) is at user address `head` in `mm`, and for
/// each lock entry (and the pending one) whose futex word names `tid` as
/// owner, sets FUTEX_OWNER_DIED (keeping FUTEX_WAITERS) and wakes one
/// waiter, so a robust mutex's next locker gets EOWNERDEAD. Bit 0 of an
/// entry pointer marks a PI futex (the word is marked, no wake: PI
/// futexes are not served here anyway). A fault ends the walk; at most
/// [`ROBUST_LIST_LIMIT`] entries.
pub fn exit_robust_list(mm: &MmRef, head: u64, tid: u32) {
    let read_u64 = |a: u64| -> Option<u64> {
        let mut b = [0u8; 8];
        mm.with(|m| copy_from_user(m, a, &mut b)).ok()?;
        Some(u64::from_le_bytes(b))
    };
    let (Some(first), Some(offset), Some(pending)) = (read_u64(head), read_u64(head + 8), read_u64(head + 16)) else {
        return;
    };
    let (pending, pending_pi) = (pending & !1, pending & 1 != 0);
    let (mut entry, mut pi) = (first & !1, first & 1 != 0);
    let mut limit = ROBUST_LIST_LIMIT;
    while entry != head {
        // The next entry is read before this one's lock is released (its
        // owner may free the node once woken).
        let next = read_u64(entry);
        if entry != pending {
            handle_futex_death(mm, entry.wrapping_add(offset), tid, pi, false);
        }
        let Some(next) = next else { return };
        (entry, pi) = (next & !1, next & 1 != 0);
        limit -= 1;
        if limit == 0 {
            break;
        }
    }
    if pending != 0 {
        handle_futex_death(mm, pending.wrapping_add(offset), tid, pending_pi, true);
    }
}

/// Linux's `handle_futex_death` for the word at `uaddr`: if `tid` owns
/// it, OWNER_DIED is set with a compare-and-exchange (retried if the
/// word changed) and one waiter woken if FUTEX_WAITERS was set; for the
/// pending entry whose word is still 0 (the thread died between taking
/// the lock and recording it), one waiter is woken anyway.
fn handle_futex_death(mm: &MmRef, uaddr: u64, tid: u32, pi: bool, pending: bool) {
    if uaddr & 3 != 0 {
        return;
    }
    for _ in 0..16 {
        let Ok(uval) = mm.with(|m| read_u32(m, uaddr)) else { return };
        if pending && !pi && uval == 0 {
            wake(mm, uaddr, 1, BITSET_MATCH_ANY);
            return;
        }
        if uval & FUTEX_TID_MASK != tid {
            return;
        }
        let mval = (uval & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
        match cmpxchg_user_u32(mm, uaddr, uval, mval) {
            Some(true) => {
                if !pi && uval & FUTEX_WAITERS != 0 {
                    wake(mm, uaddr, 1, BITSET_MATCH_ANY);
                }
                return;
            }
            Some(false) => continue,
            None => return,
        }
    }
}

/// Atomically replaces the user u32 at `uaddr` (4-byte aligned) with
/// `new` if it holds `old` (Linux's `futex_atomic_cmpxchg_inatomic`):
/// the page is faulted in for writing, then the exchange is done on its
/// frame through the direct map under the reclaim state's lock, after
/// checking that the PTE still maps it writable (reclaim, which edits
/// PTEs under that lock, cannot take it meanwhile). Some(whether it
/// was exchanged), None on a fault.
fn cmpxchg_user_u32(mm: &MmRef, uaddr: u64, old: u32, new: u32) -> Option<bool> {
    use mm_core::addr::VirtAddr;
    mm.with(|m| {
        for _ in 0..3 {
            super::fault::user_page(m, uaddr, true).ok()?;
            let done = crate::mm::swap::SWAP.with(|_| {
                let (slot, pte) =
                    super::fault::user_pt(m.pgd).lookup(&crate::mm::phys::direct_map(), VirtAddr(uaddr))?;
                if !(pte.is_present() && pte.is_user() && pte.is_writable()) {
                    return None;
                }
                let size = slot.page_size().map_or(4096, |z| z.bytes());
                let pa = (pte.0 & mm_core::paging::entry::PTE_ADDR_MASK_MAX & !(size - 1)) | (uaddr & (size - 1));
                // SAFETY: `pa` is a user frame mapped writable (checked
                // under the lock reclaim takes to unmap it), inside the
                // direct map; the address is 4-byte aligned (the caller
                // checked), so an atomic u32 view of it is sound.
                let word = unsafe { &*(crate::mm::phys_to_virt(pa) as *const core::sync::atomic::AtomicU32) };
                Some(
                    word.compare_exchange(
                        old,
                        new,
                        core::sync::atomic::Ordering::SeqCst,
                        core::sync::atomic::Ordering::SeqCst,
                    )
                    .is_ok(),
                )
            });
            if done.is_some() {
                return done;
            }
        }
        None
    })
}
