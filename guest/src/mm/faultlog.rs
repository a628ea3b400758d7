//! The fault log: a ring of the last [`CAPACITY`] user page faults (address,
//! process, kind, result) that the host's live web view reads at its stops
//! (the descriptor's `faults` section, mm-core's `FaultRecord`). Always on:
//! a record is a handful of stores at the end of a fault that already
//! walked the tables. A ring the host did not read in time is overwritten;
//! the host counts what it missed.
//!
//! Several CPUs may fault at once: each claims its record number from one
//! atomic count, writes the record, and writes its `seq` word last, so the
//! host skips a slot whose `seq` is not the number it expects.

use core::sync::atomic::{AtomicU64, Ordering};
use mm_core::descriptor::{FaultLogDesc, FaultRecord, FAULT_RECORD_SIZE};

/// Slots in the ring (a power of two).
const CAPACITY: usize = 512;
/// Words per record.
const WORDS: usize = FAULT_RECORD_SIZE / 8;

/// Records ever written (record `n` lies in slot `n % CAPACITY`).
static HEAD: AtomicU64 = AtomicU64::new(0);
/// The ring, in the kernel image (fixed at boot, nothing to allocate).
static RING: [[AtomicU64; WORDS]; CAPACITY] = [const { [const { AtomicU64::new(0) }; WORDS] }; CAPACITY];

/// The descriptor's section.
pub fn describe() -> FaultLogDesc {
    FaultLogDesc {
        ring: RING.as_ptr() as u64 - super::layout::KERNEL_MAP,
        head: &HEAD as *const AtomicU64 as u64 - super::layout::KERNEL_MAP,
        capacity: CAPACITY as u32,
        record_size: FAULT_RECORD_SIZE as u32,
    }
}

/// Appends a fault at `addr` of address space `cr3` with #PF error code
/// `err`, of kind `kind` (`fault_kind`), that ended with `result`
/// (`fault_result`).
#[inline(never)]
pub fn record(addr: u64, cr3: u64, err: u64, kind: u8, result: u8) {
    let n = HEAD.fetch_add(1, Ordering::AcqRel);
    let r = FaultRecord {
        seq: n + 1,
        addr,
        cr3,
        pid: crate::proc::sched::current_pid() as u32,
        error: err as u16,
        kind,
        result,
    };
    let w = r.to_words();
    let slot = &RING[n as usize & (CAPACITY - 1)];
    // The slot goes stale first, so a host reading mid-write skips it.
    slot[0].store(0, Ordering::Release);
    for (cell, &x) in slot.iter().zip(w.iter()).skip(1) {
        cell.store(x, Ordering::Relaxed);
    }
    slot[0].store(w[0], Ordering::Release);
}
