//! The stale-TLB recorder (`tlbtrace` switch): per CPU, a ring of the
//! events the host's `--verify tlb` replays (mm-core's
//! `paging::tlbtrace`, which defines what is recorded and what counts as
//! a stale use). This host's KVM applies page-table writes at once, so a
//! missing flush never shows here; the record shows it.
//!
//! Recorded: every page-table change that needs a flush on hardware
//! (through [`KernelPhys`](super::phys::KernelPhys)'s `pte_written`, which
//! the page-table editor calls for every entry it replaces: no edit site
//! can escape it), every INVLPG, CR3 load and full flush (arch/cpu.rs),
//! every block freed to the page allocator, and every return to user
//! mode (arch/traps.rs) that follows another event. Each record costs a
//! few dozen instructions; nothing is recorded without the switch.
//!
//! `tlbtrace` records into rings of `paging::tlbtrace::DEFAULT_CAPACITY`
//! records per CPU; `tlbtrace=N` sets N (a power of two). The host reads
//! the rings at checkpoints; a ring it did not read in time is
//! overwritten, and the host then reports the records lost.
//!
//! `noflush=WHAT` drops one flush, to prove the detector finds it:
//! `munmap` (the INVLPG after munmap's zap, proc/mm.rs), `mprotect` (the
//! flush after mprotect's write-protect, proc/mman.rs), `cow` (the INVLPG
//! after the copy-on-write break's PTE replacement, proc/fault.rs),
//! `reclaim` (the INVLPG after reclaim unmaps a page of the running
//! address space for swap, mm/swap.rs).

use crate::arch::percpu::{cpu_id, MAX_CPUS};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use mm_core::addr::VirtAddr;
use mm_core::paging::editor::{PteWrite, SLOT_VA_UNKNOWN};
use mm_core::paging::tlbtrace::{
    level_code, needs_flush, EventKind, Record, TlbTraceDesc, DEFAULT_CAPACITY, FLAG_DEFERRED, RECORD_SIZE,
    TRACE_MAX_CPUS,
};

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The global order of events.
static SEQ: AtomicU64 = AtomicU64::new(0);
/// Records ever written per CPU, then records with no ring to go to.
static COUNTERS: [AtomicU64; TRACE_MAX_CPUS + 1] = [const { AtomicU64::new(0) }; TRACE_MAX_CPUS + 1];
/// Each CPU's ring (direct-map address, 0 none).
static RINGS: [AtomicU64; TRACE_MAX_CPUS] = [const { AtomicU64::new(0) }; TRACE_MAX_CPUS];
/// Whether the CPU has recorded its CR3 snapshot.
static STARTED: [AtomicBool; TRACE_MAX_CPUS] = [const { AtomicBool::new(false) }; TRACE_MAX_CPUS];
/// `SEQ` after the CPU's last recorded return to user mode: a return with
/// no event since needs no record (nothing can have gone stale).
static LAST_RETURN: [AtomicU64; TRACE_MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; TRACE_MAX_CPUS];
/// Set while the CPU makes changes whose flush is batched
/// ([`deferred`]).
static DEFERRING: [AtomicBool; TRACE_MAX_CPUS] = [const { AtomicBool::new(false) }; TRACE_MAX_CPUS];
static CAPACITY: AtomicU64 = AtomicU64::new(0);
static NR_RINGS: AtomicU64 = AtomicU64::new(0);

/// The flush `noflush=` drops (one of the `NOFLUSH_*` codes, 0 none).
static NOFLUSH: AtomicU8 = AtomicU8::new(0);
/// `noflush=munmap`.
pub const NOFLUSH_MUNMAP: u8 = 1;
/// `noflush=mprotect`.
pub const NOFLUSH_MPROTECT: u8 = 2;
/// `noflush=cow`.
pub const NOFLUSH_COW: u8 = 3;
/// `noflush=reclaim`.
pub const NOFLUSH_RECLAIM: u8 = 4;
const NOFLUSH_NAMES: [(&str, u8); 4] =
    [("munmap", NOFLUSH_MUNMAP), ("mprotect", NOFLUSH_MPROTECT), ("cow", NOFLUSH_COW), ("reclaim", NOFLUSH_RECLAIM)];

/// Whether `noflush=` asked to drop the flush `which` (a sabotage for
/// the detector's tests; callers skip their flush when true).
#[inline(always)]
pub fn drop_flush(which: u8) -> bool {
    NOFLUSH.load(Ordering::Relaxed) == which
}

/// Whether the recorder runs.
#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Reads `tlbtrace[=N]` and `noflush=WHAT` from the command line and, with
/// `tlbtrace`, allocates a ring per CPU and starts recording. Called once
/// the page allocator is up, before any process runs.
pub fn init(cmdline: &str) {
    let words = || cmdline.split(' ').take_while(|w| *w != "--");
    if let Some(what) = words().find_map(|w| w.strip_prefix("noflush=")) {
        match NOFLUSH_NAMES.iter().find(|(n, _)| *n == what) {
            Some(&(_, code)) => {
                NOFLUSH.store(code, Ordering::Relaxed);
                crate::kprintln!("tlbtrace: dropping the {} flush on purpose (noflush=)", what);
            }
            None => crate::kprintln!("tlbtrace: unknown noflush={}; known: munmap, mprotect, cow, reclaim", what),
        }
    }
    match words().find_map(|w| w.strip_prefix("tlbbatch=")) {
        Some("off") => {
            crate::arch::tlb::set_batching(false);
            crate::kprintln!("tlb: reclaim and migration flush each PTE at once (tlbbatch=off)");
        }
        Some("on") | None => {}
        Some(v) => crate::kprintln!("tlb: unknown tlbbatch={}; known: on, off", v),
    }
    let Some(arg) = words().find_map(|w| w.strip_prefix("tlbtrace").filter(|r| r.is_empty() || r.starts_with('=')))
    else {
        return;
    };
    let capacity = match arg.strip_prefix('=').map(crate::fmt::parse_u64) {
        None => DEFAULT_CAPACITY,
        Some(Some(n)) if n.is_power_of_two() && (64..=1 << 20).contains(&n) => n,
        Some(_) => {
            crate::kprintln!("tlbtrace: {}: N must be a power of two in 64..1048576; recording off", arg);
            return;
        }
    };
    let bytes = capacity * RECORD_SIZE as u64;
    let order = (bytes.next_power_of_two().trailing_zeros() as u64).saturating_sub(12) as u8;
    let cpus = MAX_CPUS.min(TRACE_MAX_CPUS);
    let mut n = 0;
    for ring in RINGS.iter().take(cpus) {
        let Some(pfn) = super::alloc_pages(order, super::page_alloc::GFP_KERNEL) else {
            crate::kprintln!("tlbtrace: no memory for a ring of {} KiB", crate::fmt::Dec(bytes >> 10));
            break;
        };
        ring.store(super::phys_to_virt(pfn << 12), Ordering::Relaxed);
        n += 1;
    }
    if n == 0 {
        return;
    }
    CAPACITY.store(capacity, Ordering::Relaxed);
    NR_RINGS.store(n, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Release);
    crate::kprintln!(
        "tlbtrace: recording page-table changes and flushes, {} CPU rings of {} records",
        crate::fmt::Dec(n),
        crate::fmt::Dec(capacity)
    );
}

/// The descriptor's section.
pub fn describe() -> TlbTraceDesc {
    let mut d = TlbTraceDesc {
        enabled: enabled() as u32,
        nr_rings: NR_RINGS.load(Ordering::Relaxed) as u32,
        capacity: CAPACITY.load(Ordering::Relaxed),
        counters: COUNTERS.as_ptr() as u64 - super::layout::KERNEL_MAP,
        rings: [0; TRACE_MAX_CPUS],
    };
    for (pa, ring) in d.rings.iter_mut().zip(RINGS.iter()) {
        let va = ring.load(Ordering::Relaxed);
        *pa = if va == 0 { 0 } else { super::virt_to_phys(va) };
    }
    d
}

/// Appends `r` to this CPU's ring (its seq and cpu filled in here).
#[inline(never)]
fn record(mut r: Record) {
    let cpu = cpu_id();
    let flags = crate::arch::irq_save();
    let ring = RINGS.get(cpu).map_or(0, |x| x.load(Ordering::Relaxed));
    if ring == 0 {
        // A CPU without a ring: the host must know the record is partial.
        COUNTERS[TRACE_MAX_CPUS].fetch_add(1, Ordering::Relaxed);
        crate::arch::irq_restore(flags);
        return;
    }
    let cap = CAPACITY.load(Ordering::Relaxed);
    if !STARTED[cpu].swap(true, Ordering::Relaxed) {
        let mut s = Record::new(EventKind::Cr3Snapshot);
        s.root = crate::arch::cpu::read_cr3();
        push(cpu, ring, cap, s);
    }
    r.cpu = cpu as u8;
    push(cpu, ring, cap, r);
    crate::arch::irq_restore(flags);
}

#[inline(always)]
fn push(cpu: usize, ring: u64, cap: u64, mut r: Record) {
    r.seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let i = COUNTERS[cpu].load(Ordering::Relaxed);
    let at = ring + (i & (cap - 1)) * RECORD_SIZE as u64;
    for (k, w) in r.to_words().iter().enumerate() {
        // SAFETY: `at` is a record slot inside this CPU's ring (allocated
        // in `init`, never freed); only this CPU writes it, with
        // interrupts off.
        unsafe { core::ptr::write_volatile((at + 8 * k as u64) as *mut u64, *w) };
    }
    // The record before the count: the host reads the count first.
    COUNTERS[cpu].store(i + 1, Ordering::Release);
}

/// The page-table editor replaced an entry (called by `KernelPhys`).
#[inline(always)]
pub fn pte_written(w: &PteWrite) {
    if needs_flush(w.level, w.old, w.new) {
        let rip: u64;
        // SAFETY: reads the instruction pointer; inlined, it lands in the
        // function that made the change (the symbol the host prints).
        unsafe { core::arch::asm!("lea {}, [rip]", out(reg) rip, options(nomem, nostack, preserves_flags)) };
        record_change(w, rip);
    }
}

#[inline(never)]
fn record_change(w: &PteWrite, rip: u64) {
    let mut r = Record::new(EventKind::PteChange);
    r.root = w.root.0;
    r.va = if w.va == SLOT_VA_UNKNOWN { w.va } else { VirtAddr(w.va).canonicalize(false).0 };
    r.level = level_code(w.level);
    r.old = w.old.0;
    r.new = w.new.0;
    let file = w.site.file();
    r.site_file = file.as_ptr() as u64;
    r.site_file_len = file.len().min(255) as u8;
    r.site_line = w.site.line();
    r.rip = rip;
    if DEFERRING.get(cpu_id()).is_some_and(|d| d.load(Ordering::Relaxed)) {
        r.flags = FLAG_DEFERRED;
    }
    record(r);
}

/// Runs `f`, whose page-table changes are flushed later in a batch
/// (arch/tlb.rs `TlbBatch`: reclaim's unmaps, migration's remaps): they
/// are recorded with `FLAG_DEFERRED`, which the host's replay reads as
/// "user mode may go on using the old translation until the batch's
/// flush, but the frame must not be freed before it".
#[inline(always)]
pub fn deferred<R>(f: impl FnOnce() -> R) -> R {
    let cpu = cpu_id();
    let on = enabled() && cpu < TRACE_MAX_CPUS;
    if on {
        DEFERRING[cpu].store(true, Ordering::Relaxed);
    }
    let r = f();
    if on {
        DEFERRING[cpu].store(false, Ordering::Relaxed);
    }
    r
}

/// INVLPG of `va` (arch/cpu.rs).
#[inline(always)]
pub fn invlpg(va: u64) {
    if enabled() {
        let mut r = Record::new(EventKind::Invlpg);
        r.va = va;
        record(r);
    }
}

/// A CR3 load of `cr3` (arch/cpu.rs).
#[inline(always)]
pub fn cr3_load(cr3: u64) {
    if enabled() {
        let mut r = Record::new(EventKind::Cr3Load);
        r.root = cr3;
        record(r);
    }
}

/// A flush of everything, global entries included (arch/cpu.rs).
#[inline(always)]
pub fn flush_all() {
    if enabled() {
        record(Record::new(EventKind::FlushAll));
    }
}

/// 2^`order` pages at `pfn` go back to the page allocator.
#[inline(always)]
pub fn free(pfn: u64, order: u8) {
    if enabled() {
        let mut r = Record::new(EventKind::Free);
        r.root = pfn;
        r.va = order as u64;
        record(r);
    }
}

/// The CPU is about to return to user mode (arch/traps.rs): recorded only
/// when some event happened since this CPU's last recorded return.
#[inline(always)]
pub fn user_return() {
    if !enabled() {
        return;
    }
    let cpu = cpu_id();
    let Some(last) = LAST_RETURN.get(cpu) else { return };
    if SEQ.load(Ordering::Relaxed) == last.load(Ordering::Relaxed) {
        return;
    }
    let mut r = Record::new(EventKind::UserReturn);
    r.root = crate::arch::cpu::read_cr3();
    record(r);
    last.store(SEQ.load(Ordering::Relaxed), Ordering::Relaxed);
}
