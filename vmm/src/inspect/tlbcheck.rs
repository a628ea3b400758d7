//! `--verify tlb`: the stale-TLB detector's host half. At each checkpoint
//! it drains the guest's per-CPU event rings (found through the
//! descriptor's `tlb` section), replays the new records in their global
//! order with mm-core's [`Replay`] (the TLB model's entries and
//! invalidation rules; see `mm_core::paging::tlbtrace` for what counts as
//! a stale use), and names each stale use: the address, the CPU, the
//! page-table change and the kernel function (symbolised from the
//! kernel's symbols) and source line that made it without a flush.
//!
//! The replay state lives across checkpoints. A ring that wrapped before
//! the host read it has lost records: the check then says how many and
//! fails as incomplete, never "ok".

use super::guest::GuestState;
use super::verify::CheckResult;
use super::{read_linear, AddressMode};
use crate::inspect::spec::Check;
use crate::symbols::Symbols;
use mm_core::paging::tlbtrace::{Record, Replay, StaleUse, UseKind, RECORD_SIZE, TRACE_MAX_CPUS};
use mm_core::paging::{CpuContext, Pte, PteFlags};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Records read per checkpoint at most (a hostile capacity cannot make the
/// host allocate without bound): 16 rings of 1 Mi records.
const MAX_RECORDS: u64 = 16 << 20;

/// What the host keeps between checkpoints.
#[derive(Default)]
pub struct TlbState {
    replay: Option<Replay>,
    /// Records consumed per ring.
    consumed: [u64; TRACE_MAX_CPUS],
    /// Records read but not yet replayed (a lower `seq` is still missing).
    waiting: Vec<Record>,
    /// The next `seq` to replay.
    next_seq: u64,
    /// Records lost (overwritten before the host read them), per CPU.
    lost: [u64; TRACE_MAX_CPUS],
    /// Records the guest could not write (a CPU without a ring).
    unrecorded: u64,
    /// Stale uses already reported.
    reported: usize,
}

fn u64_at(mem: &GuestMemoryMmap, pa: u64) -> Result<u64, String> {
    mem.read_obj::<u64>(GuestAddress(pa)).map_err(|_| format!("guest-physical {pa:#x} is outside RAM"))
}

/// Runs the check at one checkpoint.
pub fn check(
    st: &mut TlbState,
    mem: &GuestMemoryMmap,
    gs: &GuestState<'_>,
    ctx: &CpuContext,
    symbols: &Symbols,
) -> CheckResult {
    let d = gs.desc.tlb;
    if d.enabled == 0 {
        return CheckResult::not_applicable(
            Check::Tlb,
            "the guest records no page-table changes: put `tlbtrace` on its command line (`--verify tlb` alone adds it)"
                .into(),
        );
    }
    match drain(st, mem, &d) {
        Ok(()) => {}
        Err(e) => {
            return CheckResult::could_not_run(Check::Tlb, format!("the guest's TLB event rings are unreadable: {e}"))
        }
    }
    let replay = st.replay.get_or_insert_with(|| Replay::new(d.nr_rings as usize, ctx.maxphyaddr, ctx.pge));
    let lossy = st.lost.iter().any(|&l| l > 0) || st.unrecorded > 0;
    // Replay in global order; a gap is a record still being written by a
    // running CPU: wait for it. Once records are lost the replay stops
    // where it was: what follows a lost flush would be guesswork (stale
    // uses that are not, or none where there are), and the check says it
    // is incomplete instead.
    if lossy {
        st.waiting.clear();
    }
    st.waiting.sort_unstable_by_key(|r| r.seq);
    let mut fed = 0;
    for r in &st.waiting {
        if r.seq < st.next_seq {
            fed += 1;
            continue;
        }
        if r.seq != st.next_seq {
            break;
        }
        replay.feed(r);
        st.next_seq = r.seq + 1;
        fed += 1;
    }
    st.waiting.drain(..fed);
    let stats = replay.stats();
    let uses = &replay.uses()[st.reported.min(replay.uses().len())..];
    let violations: Vec<String> = uses.iter().map(|u| describe(u, mem, ctx, symbols)).collect();
    st.reported = replay.uses().len();
    let total_uses = replay.uses().len();
    let held = replay.pending().count();
    let mut detail = format!(
        "{} PTE changes, {} flushes replayed, {} stale ({} frees, {} returns to user mode; {} translations not flushed yet)",
        stats.pte_changes, stats.flushes, total_uses, stats.frees, stats.user_returns, held
    );
    if !st.waiting.is_empty() {
        detail.push_str(&format!("; {} records wait for an earlier one still being written", st.waiting.len()));
    }
    let mut errors = Vec::new();
    for (cpu, &l) in st.lost.iter().enumerate().filter(|(_, l)| **l > 0) {
        errors.push(format!(
            "CPU {cpu}'s ring lost {l} records (overwritten before a checkpoint read them): the replay stopped there, so the figures above cover only what came before; give the guest bigger rings (tlbtrace=N on its command line) or more checkpoints"
        ));
    }
    if st.unrecorded > 0 {
        errors.push(format!(
            "{} events happened on CPUs without a ring and were not recorded: the replay is incomplete",
            st.unrecorded
        ));
    }
    CheckResult::new(Check::Tlb, detail, violations).with_errors(errors)
}

/// Reads every ring's new records into `st.waiting`.
fn drain(st: &mut TlbState, mem: &GuestMemoryMmap, d: &mm_core::descriptor::TlbTraceDesc) -> Result<(), String> {
    let cap = d.capacity;
    if !cap.is_power_of_two() || cap > 1 << 20 {
        return Err(format!("the ring capacity {cap} is not a power of two up to 1048576"));
    }
    let rings = (d.nr_rings as usize).min(TRACE_MAX_CPUS);
    st.unrecorded = u64_at(mem, d.counters + 8 * TRACE_MAX_CPUS as u64)?;
    let mut budget = MAX_RECORDS;
    for cpu in 0..rings {
        let ring = d.rings[cpu];
        let head = u64_at(mem, d.counters + 8 * cpu as u64)?;
        let done = st.consumed[cpu];
        if head < done {
            return Err(format!("CPU {cpu}'s record count went back from {done} to {head}"));
        }
        let from = done.max(head.saturating_sub(cap));
        st.lost[cpu] += from - done;
        let mut buf = [0u8; RECORD_SIZE];
        for i in from..head {
            if budget == 0 {
                return Err(format!("more than {MAX_RECORDS} new records"));
            }
            budget -= 1;
            let at = ring + (i & (cap - 1)) * RECORD_SIZE as u64;
            mem.read_slice(&mut buf, GuestAddress(at))
                .map_err(|_| format!("CPU {cpu}'s ring at {at:#x} is outside RAM"))?;
            match Record::from_bytes(&buf) {
                Some(r) => st.waiting.push(r),
                None => st.lost[cpu] += 1,
            }
        }
        // A CPU still running may have overwritten what was just read.
        let after = u64_at(mem, d.counters + 8 * cpu as u64)?;
        let overwritten = after.saturating_sub(cap).saturating_sub(from).min(head - from);
        if overwritten > 0 {
            st.lost[cpu] += overwritten;
        }
        st.consumed[cpu] = head;
    }
    Ok(())
}

/// An entry in words: raw, then its rights.
fn rights(e: Pte) -> String {
    if !e.is_present() {
        return format!("{:#x} (not present)", e.0);
    }
    let f = PteFlags(e.0);
    let mut s = format!("{:#x} (", e.0);
    s.push_str(if f.contains(PteFlags::RW) { "writable" } else { "read-only" });
    if f.contains(PteFlags::USER) {
        s.push_str(", user");
    }
    if f.contains(PteFlags::NX) {
        s.push_str(", no-exec");
    }
    s.push(')');
    s
}

/// A stale use in words: what, where, which change and who made it.
pub fn describe(u: &StaleUse, mem: &GuestMemoryMmap, ctx: &CpuContext, symbols: &Symbols) -> String {
    let c = &u.candidate.change;
    let what = match u.kind {
        UseKind::UserReturn => {
            format!("CPU {} returned to user mode holding a stale translation of {:#x}", u.cpu, u.va)
        }
        UseKind::ChangerReturned { by_cpu } => format!(
            "CPU {by_cpu} returned to user mode after its change while CPU {} still held a stale translation of {:#x}",
            u.cpu, u.va
        ),
        UseKind::FrameFreed { pfn, order, by_cpu } => format!(
            "CPU {by_cpu} freed pfn {pfn:#x} (order {order}) while CPU {} may still translate {:#x} to it",
            u.cpu, u.va
        ),
    };
    let func = if c.rip == 0 { "an unknown function".to_string() } else { symbols.describe(c.rip) };
    let mut file = vec![0u8; c.site_file_len as usize];
    let site = if c.site_file != 0 && read_linear(mem, &AddressMode::Paged(*ctx), c.site_file, &mut file) == file.len()
    {
        format!("{}:{}", String::from_utf8_lossy(&file), c.site_line)
    } else {
        format!("line {}", c.site_line)
    };
    let kind = if u.candidate.range {
        "replaced the page table by a huge page".to_string()
    } else {
        format!("changed the level-{} entry from {} to {}", c.level + 1, rights(Pte(c.old)), rights(Pte(c.new)))
    };
    format!(
        "{what}: {func} ({site}) {kind} (address {:#x}, root {:#x}, on CPU {}) and no flush on CPU {} removed it",
        c.va, c.root, c.cpu, u.cpu
    )
}
