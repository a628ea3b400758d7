//! TLB shootdown (Linux's arch/x86/mm/tlb.c, in small): a page-table
//! change is flushed on every CPU that may cache the old translation,
//! and the changer waits for their acknowledgement before going on (so
//! before any freed page can be reused).
//!
//! Which CPUs: without PCID a CPU caches the non-global translations of
//! the one root its CR3 holds, so the CPUs to flush for a root are those
//! whose CR3 holds it now ([`note_cr3`] keeps that per CPU: Linux's
//! `mm_cpumask` with lazy TLB reduced to its effect). Kernel mappings
//! (vmalloc, global pages) are flushed everywhere.
//!
//! How: a range of up to [`FLUSH_CEILING`] pages is flushed page by page
//! with `invlpg`, a larger one by reloading CR3 (Linux's
//! `tlb_single_page_flush_ceiling`). Remote CPUs get the request in their
//! mailbox and a `FLUSH_VECTOR` IPI; the kernel runs with interrupts off,
//! so a CPU in kernel code serves its mailbox wherever it waits (lock
//! spins, the idle loop, its own shootdowns) and the IPI reaches it in
//! user mode or `hlt`. One shootdown runs at a time.

use super::percpu::{cpu, cpu_id, MAX_CPUS};
use super::{apic, cpu as cr, idt};
use core::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

/// Pages above which a range flush reloads CR3 instead (Linux's default
/// `tlb_single_page_flush_ceiling`).
pub const FLUSH_CEILING: u64 = 33;
/// The root that stands for "every address space" (kernel mappings).
pub const KERNEL: u64 = u64::MAX;
/// A range end meaning "everything".
pub const ALL: u64 = u64::MAX;
/// A range start meaning "leave the root": a CPU whose CR3 holds it
/// loads the kernel root instead (see [`leave_root`]).
const LEAVE: u64 = u64::MAX - 1;
/// A range start meaning "a list of pages": the request's root is the
/// address of `end` page addresses to flush one by one ([`TlbBatch`]).
const LIST: u64 = u64::MAX - 2;

/// The kernel's root (set once at boot), what [`leave_root`] loads.
static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);

/// Records the kernel's root for [`leave_root`].
pub fn set_kernel_root(root: u64) {
    KERNEL_ROOT.store(root & !0xfff, Ordering::Relaxed);
}

/// The root each CPU's CR3 holds.
static LOADED_CR3: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// One request to one CPU.
struct Mailbox {
    pending: AtomicBool,
    root: AtomicU64,
    start: AtomicU64,
    end: AtomicU64,
}

static MAILBOX: [Mailbox; MAX_CPUS] = [const {
    Mailbox {
        pending: AtomicBool::new(false),
        root: AtomicU64::new(0),
        start: AtomicU64::new(0),
        end: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Held while one CPU's shootdown is in flight.
static BUSY: AtomicBool = AtomicBool::new(false);

/// Counters (the SMP bench and `/proc/vmstat`'s nr_tlb_* lines).
pub struct TlbStats {
    /// Shootdowns that had remote CPUs to flush (Linux's
    /// `nr_tlb_remote_flush`).
    pub remote_flushes: AtomicU64,
    /// IPIs sent for them.
    pub ipis_sent: AtomicU64,
    /// Requests served by each CPU (`nr_tlb_remote_flush_received`).
    pub received: [AtomicU64; MAX_CPUS],
    /// Local flushes of one page (`nr_tlb_local_flush_one`).
    pub local_one: AtomicU64,
    /// Local full flushes (`nr_tlb_local_flush_all`).
    pub local_all: AtomicU64,
    /// Switches to a kernel thread or the idle task that kept the user
    /// root loaded (lazy TLB: no CR3 load).
    pub lazy_kept: AtomicU64,
    /// Switches back to a process whose root the CPU still held lazily:
    /// the CR3 load (and TLB refill) saved.
    pub lazy_resumed: AtomicU64,
    /// CPUs made to leave a root they held lazily before its tables were
    /// freed ([`leave_root`], Linux's lazy-TLB shootdown at exit).
    pub lazy_left: AtomicU64,
}

/// The counters.
pub static STATS: TlbStats = TlbStats {
    remote_flushes: AtomicU64::new(0),
    ipis_sent: AtomicU64::new(0),
    received: [const { AtomicU64::new(0) }; MAX_CPUS],
    local_one: AtomicU64::new(0),
    local_all: AtomicU64::new(0),
    lazy_kept: AtomicU64::new(0),
    lazy_resumed: AtomicU64::new(0),
    lazy_left: AtomicU64::new(0),
};

/// Records that this CPU's CR3 now holds `root` (called by every CR3
/// load, before it: a shootdown that misses the new value ran before the
/// load, whose walk then sees the changed tables).
pub fn note_cr3(root: u64) {
    LOADED_CR3[cpu_id()].store(root & !0xfff, Ordering::SeqCst);
}

/// Flushes `[start, end)` of address space `root` on this CPU.
fn flush_local(root: u64, start: u64, end: u64) {
    if start == LIST {
        // SAFETY: a LIST request's root is the address of `end` u64s on
        // the requesting CPU's stack (`TlbBatch::flush`), which serves it
        // itself or waits for this CPU's acknowledgement before that
        // frame goes away.
        let vas = unsafe { core::slice::from_raw_parts(root as *const u64, end as usize) };
        STATS.local_one.fetch_add(end, Ordering::Relaxed);
        for &va in vas {
            cr::invlpg_local(va);
        }
        return;
    }
    if start == LEAVE {
        let kroot = KERNEL_ROOT.load(Ordering::Relaxed);
        if root != KERNEL && LOADED_CR3[cpu_id()].load(Ordering::Relaxed) == root && kroot != 0 {
            STATS.local_all.fetch_add(1, Ordering::Relaxed);
            STATS.lazy_left.fetch_add(1, Ordering::Relaxed);
            // SAFETY: only a kernel thread or an idle task keeps a root
            // whose address space has no user left (lazy TLB), and they
            // use the kernel half only, the same in the kernel root.
            unsafe { cr::write_cr3(kroot) };
        }
        return;
    }
    let pages = if end == ALL { u64::MAX } else { end.saturating_sub(start).div_ceil(4096) };
    if pages > FLUSH_CEILING {
        STATS.local_all.fetch_add(1, Ordering::Relaxed);
        if root == KERNEL {
            cr::flush_tlb_global();
        } else {
            cr::flush_tlb_local();
        }
    } else {
        STATS.local_one.fetch_add(pages, Ordering::Relaxed);
        let mut va = start & !0xfff;
        while va < end {
            cr::invlpg_local(va);
            va += 4096;
        }
    }
}

/// Serves this CPU's mailbox if a request waits there. Cheap (one load)
/// when none does; called wherever kernel code waits.
#[inline]
pub fn poll() {
    let mb = &MAILBOX[cpu_id()];
    if mb.pending.load(Ordering::Acquire) {
        flush_local(mb.root.load(Ordering::Relaxed), mb.start.load(Ordering::Relaxed), mb.end.load(Ordering::Relaxed));
        STATS.received[cpu_id()].fetch_add(1, Ordering::Relaxed);
        mb.pending.store(false, Ordering::Release);
    }
}

/// The `FLUSH_VECTOR` IPI's handler.
pub fn flush_ipi() {
    poll();
}

/// Flushes `[start, end)` (`end` = [`ALL`]: everything) of address space
/// `root` ([`KERNEL`]: kernel mappings, every address space) on every CPU
/// that may cache it, and returns once all have done so.
pub fn flush_range(root: u64, start: u64, end: u64) {
    let root = if root == KERNEL { KERNEL } else { root & !0xfff };
    if root == KERNEL || LOADED_CR3[cpu_id()].load(Ordering::Relaxed) == root {
        flush_local(root, start, end);
    }
    flush_remote(root, start, end);
}

/// Flushes every translation of address space `root`, with the
/// paging-structure caches, on every CPU whose CR3 holds it, and returns
/// once all have: what must come between unlinking page tables from
/// `root` and freeing them (Linux's flush with `freed_tables`). A CPU
/// caches the upper entries it walked through and may walk on from them,
/// speculatively too, into a table that was unlinked; a CR3 load is the
/// flush both vendors guarantee to drop those caches (INVLPG's reach over
/// them differs), so this reloads CR3 whatever the range.
///
/// Linux's x86 has to send this one to the CPUs in lazy-TLB mode as well,
/// which its other flushes skip. Here every flush of a root reaches them
/// already: a CPU that switched to a kernel thread or its idle task kept
/// the root in CR3 without a CR3 load (proc/sched.rs), so [`note_cr3`]'s
/// record still names the root and [`flush_remote`] targets that CPU.
pub fn flush_freed_tables(root: u64) {
    flush_range(root, 0, ALL);
}

/// Makes every CPU whose CR3 still holds `root` load the kernel root, and
/// returns once they have: called before an address space's page tables
/// are freed. With lazy TLB (proc/sched.rs) a kernel thread or idle task
/// keeps the last process's root loaded after that process left the CPU,
/// and such a CPU must not keep a freed (soon reused) PGD in CR3 (Linux's
/// lazy-TLB shootdown at exit, `CONFIG_MMU_LAZY_TLB_SHOOTDOWN`).
pub fn leave_root(root: u64) {
    let root = root & !0xfff;
    flush_local(root, LEAVE, ALL);
    flush_remote(root, LEAVE, ALL);
}

/// The remote part of [`flush_range`]: the other CPUs whose CR3 holds
/// `root` (every other CPU for [`KERNEL`]) serve the request; returns once
/// all have.
fn flush_remote(root: u64, start: u64, end: u64) {
    if super::smp::nr_cpus() <= 1 {
        return;
    }
    send_requests(cpus_holding(root) & !(1 << cpu_id()), root, start, end);
}

/// The online CPUs (this one included) whose CR3 holds `root` (every
/// online CPU for [`KERNEL`]), as a mask. Call after the page-table
/// writes: the fence orders them before the reads of the CPUs' CR3s (a
/// CPU that loads the root after this missed it walks the new tables).
fn cpus_holding(root: u64) -> u64 {
    fence(Ordering::SeqCst);
    let me = cpu_id();
    (0..MAX_CPUS)
        .filter(|&c| c == me || cpu(c).online.load(Ordering::Acquire))
        .filter(|&c| root == KERNEL || LOADED_CR3[c].load(Ordering::SeqCst) == root)
        .fold(0, |m, c| m | 1 << c)
}

/// Sends the request to every CPU of `targets` (not this one) and
/// returns once all have served it; the IPIs sent.
fn send_requests(targets: u64, root: u64, start: u64, end: u64) -> u64 {
    if targets == 0 {
        return 0;
    }
    while BUSY.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        // Whoever holds it may be waiting for us.
        poll();
        core::hint::spin_loop();
    }
    STATS.remote_flushes.fetch_add(1, Ordering::Relaxed);
    for c in (0..MAX_CPUS).filter(|c| targets & (1 << c) != 0) {
        let mb = &MAILBOX[c];
        mb.root.store(root, Ordering::Relaxed);
        mb.start.store(start, Ordering::Relaxed);
        mb.end.store(end, Ordering::Relaxed);
        mb.pending.store(true, Ordering::Release);
        apic::send_ipi(cpu(c).apic_id.load(Ordering::Relaxed), idt::FLUSH_VECTOR);
        STATS.ipis_sent.fetch_add(1, Ordering::Relaxed);
    }
    while (0..MAX_CPUS).any(|c| targets & (1 << c) != 0 && MAILBOX[c].pending.load(Ordering::Acquire)) {
        poll();
        core::hint::spin_loop();
    }
    BUSY.store(false, Ordering::Release);
    targets.count_ones() as u64
}

/// Whether reclaim and migration batch their flushes (`tlbbatch=off` on
/// the command line: one flush per PTE, as before batching, for
/// comparison).
static BATCHING: AtomicBool = AtomicBool::new(true);

/// Turns batching on or off (`tlbbatch=off`).
pub fn set_batching(on: bool) {
    BATCHING.store(on, Ordering::Relaxed);
}

/// Whether reclaim and migration batch their flushes.
pub fn batching() -> bool {
    BATCHING.load(Ordering::Relaxed)
}

/// Who batches flushes (which counters a [`TlbBatch`] feeds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchKind {
    /// Reclaim's unmaps and accessed-bit harvest (mm/swap.rs).
    Reclaim = 0,
    /// Migration's remaps (mm/migrate.rs).
    Migrate = 1,
}

/// Counters of one [`BatchKind`] (/proc/vmstat's `tlb_batch_*` lines).
pub struct BatchStats {
    /// PTE changes whose flush went into a batch.
    pub ptes: AtomicU64,
    /// Batch flushes that had a CPU to flush (this one or others).
    pub flushes: AtomicU64,
    /// Of those, the ones that asked other CPUs (shootdown requests, as
    /// Linux's `nr_tlb_remote_flush` counts them).
    pub remote: AtomicU64,
    /// IPIs sent for them.
    pub ipis: AtomicU64,
    /// Target CPUs flushed whole (a CR3 reload) rather than page by page.
    pub full: AtomicU64,
}

/// The counters, by [`BatchKind`].
pub static BATCH_STATS: [BatchStats; 2] = [const {
    BatchStats {
        ptes: AtomicU64::new(0),
        flushes: AtomicU64::new(0),
        remote: AtomicU64::new(0),
        ipis: AtomicU64::new(0),
        full: AtomicU64::new(0),
    }
}; 2];

/// Pending TLB flushes of PTEs that were changed without one (Linux's
/// `tlbflush_unmap_batch` with x86's `arch_tlbbatch`): reclaim's unmaps
/// and migration's remaps record here which CPUs may cache the old
/// translations (those whose CR3 held the changed root, as
/// [`flush_range`] computes them) and which pages; [`TlbBatch::flush`]
/// then flushes them all at once, one request per CPU: page by page when
/// one root and at most [`FLUSH_CEILING`] pages are pending, else the
/// whole TLB (Linux's `arch_tlbbatch_flush` always flushes whole; the
/// ceiling is its `tlb_single_page_flush_ceiling` for ranges).
///
/// The owner must flush before any page of the batch is freed or its
/// frame reused ([`TlbBatch::flush`], Linux's `try_to_unmap_flush`), and
/// before a page whose PTE was dirty is written out
/// ([`TlbBatch::flush_dirty`]): until then another CPU may still write it
/// through its TLB.
pub struct TlbBatch {
    kind: BatchKind,
    /// CPUs that may cache a changed translation.
    cpus: u64,
    /// The changed root while only one is (0: none yet).
    root: u64,
    /// More than one root changed: flush whole.
    roots_many: bool,
    /// Pages changed (all of `root` while `roots_many` is false).
    vas: [u64; FLUSH_CEILING as usize],
    /// PTE changes pending; above [`FLUSH_CEILING`], `vas` is not kept.
    nr: usize,
    /// A changed PTE was dirty (Linux's `tlb_ubc->writable`).
    dirty: bool,
}

impl TlbBatch {
    /// An empty batch feeding `kind`'s counters.
    pub const fn new(kind: BatchKind) -> Self {
        TlbBatch { kind, cpus: 0, root: 0, roots_many: false, vas: [0; FLUSH_CEILING as usize], nr: 0, dirty: false }
    }

    /// Records that the PTE of `va` in address space `root` changed
    /// without a flush (Linux's `set_tlb_ubc_flush_pending`); `dirty`:
    /// the old entry was writable and dirty, so a CPU may write the page
    /// through its TLB until the flush. Call after the PTE write. With
    /// batching off (`tlbbatch=off`) the flush happens here and now.
    pub fn add(&mut self, root: u64, va: u64, dirty: bool) {
        let root = root & !0xfff;
        BATCH_STATS[self.kind as usize].ptes.fetch_add(1, Ordering::Relaxed);
        self.cpus |= cpus_holding(root);
        if self.nr == 0 {
            self.root = root;
        } else if self.root != root {
            self.roots_many = true;
        }
        if let Some(v) = self.vas.get_mut(self.nr) {
            *v = va & !0xfff;
        }
        self.nr += 1;
        self.dirty |= dirty;
        if !batching() {
            self.flush();
        }
    }

    /// Flushes what is pending if a dirty PTE is among it (Linux's
    /// `try_to_unmap_flush_dirty`): before a page of the batch is written
    /// out.
    pub fn flush_dirty(&mut self) {
        if self.dirty {
            self.flush();
        }
    }

    /// Flushes everything pending on every CPU that may cache it and
    /// returns once all have (Linux's `try_to_unmap_flush`): before any
    /// page of the batch is freed. `noflush=reclaim` drops a reclaim
    /// batch's flush, for the stale-TLB detector's test.
    pub fn flush(&mut self) {
        if self.nr == 0 {
            return;
        }
        let (cpus, nr, whole) = (self.cpus, self.nr, self.roots_many || self.nr > FLUSH_CEILING as usize);
        let vas = self.vas;
        (self.cpus, self.root, self.roots_many, self.nr, self.dirty) = (0, 0, false, 0, false);
        if cpus == 0
            || (self.kind == BatchKind::Reclaim
                && crate::mm::tlbtrace::drop_flush(crate::mm::tlbtrace::NOFLUSH_RECLAIM))
        {
            return;
        }
        let st = &BATCH_STATS[self.kind as usize];
        st.flushes.fetch_add(1, Ordering::Relaxed);
        let me = cpu_id();
        let list = &vas[..nr.min(vas.len())];
        // This CPU serves the same request the others get.
        let (root, start, end) = if whole { (0, 0, ALL) } else { (list.as_ptr() as u64, LIST, list.len() as u64) };
        if cpus & (1 << me) != 0 {
            flush_local(root, start, end);
        }
        let others = cpus & !(1 << me);
        if whole {
            st.full.fetch_add(cpus.count_ones() as u64, Ordering::Relaxed);
        }
        if others != 0 && super::smp::nr_cpus() > 1 {
            let ipis = send_requests(others, root, start, end);
            st.remote.fetch_add(1, Ordering::Relaxed);
            st.ipis.fetch_add(ipis, Ordering::Relaxed);
        }
    }
}

impl Drop for TlbBatch {
    fn drop(&mut self) {
        // Never leave a change unflushed (an owner that returned early).
        self.flush();
    }
}

/// The root this CPU's CR3 holds.
pub fn current_root() -> u64 {
    cr::read_cr3() & !0xfff
}

/// /proc/interrupts in Linux's layout, for the interrupts this kernel
/// counts per CPU: the shootdown requests each CPU served (Linux's `TLB`
/// row). One column per CPU brought up.
pub fn interrupts_to(out: &mut impl core::fmt::Write) -> core::fmt::Result {
    use crate::fmt::{Dec, DecPad};
    let n = super::smp::nr_cpus().max(1);
    out.write_str("     ")?;
    for c in 0..n {
        let digits = if c < 10 { 1 } else { 2 };
        for _ in 0..(8 - digits) {
            out.write_char(' ')?;
        }
        write!(out, "CPU{}", Dec(c as u64))?;
    }
    out.write_str("\nTLB: ")?;
    for c in 0..n {
        write!(out, "{}", DecPad(STATS.received[c].load(Ordering::Relaxed), 10))?;
        out.write_char(' ')?;
    }
    out.write_str("  TLB shootdowns\n")
}

/// Linux's TLB lines of /proc/vmstat (`CONFIG_DEBUG_TLBFLUSH`'s names),
/// then the batches' own (not Linux's): per reclaim and migration, the
/// PTE changes batched, the batch flushes, those that asked other CPUs,
/// the IPIs they sent and the CPUs flushed whole.
pub fn vmstat() -> [(&'static str, u64); 14] {
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (rc, mg) = (&BATCH_STATS[BatchKind::Reclaim as usize], &BATCH_STATS[BatchKind::Migrate as usize]);
    [
        ("nr_tlb_remote_flush", r(&STATS.remote_flushes)),
        ("nr_tlb_remote_flush_received", STATS.received.iter().map(r).sum()),
        ("nr_tlb_local_flush_all", r(&STATS.local_all)),
        ("nr_tlb_local_flush_one", r(&STATS.local_one)),
        ("tlb_batch_reclaim_ptes", r(&rc.ptes)),
        ("tlb_batch_reclaim_flushes", r(&rc.flushes)),
        ("tlb_batch_reclaim_remote", r(&rc.remote)),
        ("tlb_batch_reclaim_ipis", r(&rc.ipis)),
        ("tlb_batch_reclaim_full", r(&rc.full)),
        ("tlb_batch_migrate_ptes", r(&mg.ptes)),
        ("tlb_batch_migrate_flushes", r(&mg.flushes)),
        ("tlb_batch_migrate_remote", r(&mg.remote)),
        ("tlb_batch_migrate_ipis", r(&mg.ipis)),
        ("tlb_batch_migrate_full", r(&mg.full)),
    ]
}
