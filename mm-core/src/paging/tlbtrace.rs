//! The stale-TLB detector: the per-CPU event record the guest writes and
//! the host's replay of it over the TLB model's entries and invalidation
//! rules ([`crate::paging::tlb`]).
//!
//! This host's KVM applies every page-table write at once (shadow
//! paging), so a missing INVLPG never shows here; on hardware (and under
//! QEMU's TCG) the CPU keeps using the old translation. The guest records,
//! per CPU, every page-table change that needs a flush on hardware
//! ([`needs_flush`]), every flush (INVLPG, CR3 load, full flush), every
//! block freed to the page allocator and every return to user mode; the
//! host replays the records in their global order ([`Record::seq`]).
//!
//! ## What "would have used a stale translation" means here
//!
//! Hardware may cache any translation that is valid under the root a CPU
//! has loaded, at any time (speculative and prefetching walks included),
//! and keeps it until a flush drops it; capacity evictions are not
//! guaranteed. So after a change that needs a flush, every CPU that may
//! hold the old translation gets a *candidate*: CPUs whose CR3 is the
//! changed address space's root for a user address, every CPU that has
//! run for a kernel address (the kernel half is shared by all roots). The
//! candidate is the [`TlbEntry`] the old leaf gives; it is dropped by the
//! TLB model's own rules ([`TlbEntry::covers`] for INVLPG,
//! [`TlbEntry::dropped_by_cr3_write`] for a CR3 load, everything for a
//! full flush). The replay keeps candidates unbounded rather than in the
//! set-associative [`crate::paging::Tlb`], whose evictions a CPU does not
//! promise. A candidate is a *stale use* when:
//!
//! - **user mode resumes with it**: the CPU that made the change returns to
//!   ring 3 while it, or any other CPU, still holds a user-accessible
//!   candidate of it (the system call or fault that made the change is
//!   over: a downgrade, unmap or frame change whose flush never came);
//!   another CPU returning to ring 3 with it is no use yet, since the
//!   changer's shootdown may be in flight (an IPI pending there lands
//!   before the first user instruction, as Linux's flush is asynchronous
//!   until the changer's wait ends); and a CPU returning with a candidate
//!   whose frame it freed itself;
//! - **its frame is freed while it may be used**: a block covering the
//!   candidate's frame goes back to the page allocator while another CPU
//!   holds the candidate (it may be using it right now), or while any CPU
//!   holds it for a kernel address (the kernel may touch its own mapping
//!   at any time, from an interrupt too). A user candidate on the freeing
//!   CPU itself is not a use yet: that CPU is in the kernel, and the first
//!   rule catches it if it returns to user mode before flushing.
//!
//! A change the kernel flushes in a batch (Linux's `TTU_BATCH_FLUSH`:
//! reclaim's unmaps and migration's remaps, whose flush comes once per
//! batch) is recorded as [`FLAG_DEFERRED`]: its old frame stays allocated
//! with its contents until the batch's flush, and a dirty page's
//! write-out waits for that flush too, so a CPU may go on using the old
//! translation meanwhile, from user mode as well (reads see the same
//! data; a write through a dirty entry lands before the write-out). Such
//! a candidate is no stale use when user mode resumes with it; it is one
//! when its frame is freed while another CPU holds it, and, once its
//! frame was freed by the CPU holding it, at that CPU's next return to
//! user mode, as any other candidate.
//!
//! Not modelled: the kernel's own accesses to user addresses between a
//! change and its flush (`copy_to_user`), the paging-structure caches
//! (freeing an empty page table without a flush), A/D-bit clearing, and
//! PCID (absent on this platform: CR3 loads drop all non-global entries).
//!
//! ## Layout shared with the host
//!
//! One ring per CPU of [`TlbTraceDesc::capacity`] records of
//! [`RECORD_SIZE`] bytes at [`TlbTraceDesc::rings`]; the number of records
//! ever written by CPU `c` is the `c`-th u64 at
//! [`TlbTraceDesc::counters`], and the u64 after the last CPU's counts
//! records that could not be written at all (a CPU without a ring). Record
//! `i` lives in slot `i % capacity`: the guest never waits for the host,
//! so a ring the host does not read in time is overwritten, and the host
//! counts the records lost that way and never reports a clean replay of a
//! lossy record.

use crate::addr::{Level, PageSize, PhysAddr, VirtAddr};
use crate::paging::entry::{Pte, PteFlags};
use crate::paging::tlb::TlbEntry;
use alloc::vec::Vec;

/// A PteChange whose flush is batched (see the module documentation).
pub const FLAG_DEFERRED: u8 = 1;

/// CPUs the descriptor section has rings for.
pub const TRACE_MAX_CPUS: usize = 8;
/// Bytes of one record.
pub const RECORD_SIZE: usize = 64;
/// Default records per ring (512 KiB of records at 64 bytes each).
pub const DEFAULT_CAPACITY: u64 = 8192;

/// What a record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EventKind {
    /// A page-table entry changed in a way that needs a flush
    /// ([`needs_flush`]).
    PteChange = 1,
    /// INVLPG of `va`.
    Invlpg = 2,
    /// A CR3 load (`root` is the value written): drops non-global entries.
    Cr3Load = 3,
    /// A flush of everything, global entries included (CR4.PGE toggle).
    FlushAll = 4,
    /// A block of 2^`va` pages at pfn `root` freed to the page allocator.
    Free = 5,
    /// The CPU returns to user mode (`root` = its CR3).
    UserReturn = 6,
    /// The CPU's CR3 when it began recording (no flush).
    Cr3Snapshot = 7,
}

impl EventKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => EventKind::PteChange,
            2 => EventKind::Invlpg,
            3 => EventKind::Cr3Load,
            4 => EventKind::FlushAll,
            5 => EventKind::Free,
            6 => EventKind::UserReturn,
            7 => EventKind::Cr3Snapshot,
            _ => return None,
        })
    }
}

/// One record: eight little-endian u64 words.
///
/// | word | contents |
/// |---|---|
/// | 0 | `seq`: the global order of events (all CPUs) |
/// | 1 | kind (bits 0..8), cpu (8..16), level (16..24), site file length (24..32), site line (32..56), flags (56..64) |
/// | 2 | root (PteChange), CR3 (Cr3Load, Cr3Snapshot, UserReturn), pfn (Free) |
/// | 3 | va (PteChange, Invlpg, canonical), order (Free) |
/// | 4, 5 | old and new entry (PteChange) |
/// | 6 | kernel address of the site's file name (PteChange) |
/// | 7 | a code address in the kernel function that made the change |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Global order.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// The CPU that did it.
    pub cpu: u8,
    /// The changed entry's table level (0 = PTE .. 3 = PML4).
    pub level: u8,
    /// See the table above.
    pub root: u64,
    /// See the table above.
    pub va: u64,
    /// The entry before (PteChange).
    pub old: u64,
    /// The entry after (PteChange).
    pub new: u64,
    /// Kernel virtual address of the source file name of the change.
    pub site_file: u64,
    /// Its length in bytes.
    pub site_file_len: u8,
    /// The source line of the change (24 bits).
    pub site_line: u32,
    /// `FLAG_*` bits of a PteChange.
    pub flags: u8,
    /// A code address in the function that made the change (0 unknown).
    pub rip: u64,
}

impl Record {
    /// A record of `kind` with everything else zero.
    pub const fn new(kind: EventKind) -> Self {
        Record {
            seq: 0,
            kind,
            cpu: 0,
            level: 0,
            root: 0,
            va: 0,
            old: 0,
            new: 0,
            site_file: 0,
            site_file_len: 0,
            site_line: 0,
            flags: 0,
            rip: 0,
        }
    }

    /// The eight words the guest stores.
    pub const fn to_words(&self) -> [u64; 8] {
        [
            self.seq,
            self.kind as u64
                | (self.cpu as u64) << 8
                | (self.level as u64) << 16
                | (self.site_file_len as u64) << 24
                | ((self.site_line & 0xff_ffff) as u64) << 32
                | (self.flags as u64) << 56,
            self.root,
            self.va,
            self.old,
            self.new,
            self.site_file,
            self.rip,
        ]
    }

    /// Decodes the words; `None` for an unknown kind (a torn or hostile
    /// record).
    pub fn from_words(w: &[u64; 8]) -> Option<Self> {
        Some(Record {
            seq: w[0],
            kind: EventKind::from_u8(w[1] as u8)?,
            cpu: (w[1] >> 8) as u8,
            level: (w[1] >> 16) as u8,
            site_file_len: (w[1] >> 24) as u8,
            site_line: ((w[1] >> 32) & 0xff_ffff) as u32,
            flags: (w[1] >> 56) as u8,
            root: w[2],
            va: w[3],
            old: w[4],
            new: w[5],
            site_file: w[6],
            rip: w[7],
        })
    }

    /// Decodes a record from its [`RECORD_SIZE`] bytes.
    pub fn from_bytes(b: &[u8; RECORD_SIZE]) -> Option<Self> {
        let mut w = [0u64; 8];
        for (i, x) in w.iter_mut().enumerate() {
            let mut le = [0u8; 8];
            le.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *x = u64::from_le_bytes(le);
        }
        Self::from_words(&w)
    }
}

/// The descriptor's section for the rings (guest-physical addresses).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlbTraceDesc {
    /// 1 while the guest records (the `tlbtrace` switch).
    pub enabled: u32,
    /// Rings allocated (CPUs 0 .. nr_rings).
    pub nr_rings: u32,
    /// Records per ring (a power of two).
    pub capacity: u64,
    /// `[u64; TRACE_MAX_CPUS + 1]`: records ever written per CPU, then
    /// records that had no ring to go to.
    pub counters: u64,
    /// Each CPU's ring.
    pub rings: [u64; TRACE_MAX_CPUS],
}

/// The level of a table as the record stores it.
pub const fn level_code(level: Level) -> u8 {
    match level {
        Level::Pte => 0,
        Level::Pmd => 1,
        Level::Pud => 2,
        Level::P4d => 3,
        Level::Pgd => 4,
    }
}

fn level_of(code: u8) -> Option<Level> {
    Some(match code {
        0 => Level::Pte,
        1 => Level::Pmd,
        2 => Level::Pud,
        3 => Level::P4d,
        4 => Level::Pgd,
        _ => return None,
    })
}

/// Memory-type bits of a 4 KiB leaf (PAT is bit 12 in a huge leaf; the
/// comparison below uses the normalised flags).
const TYPE_BITS: u64 = PteFlags::PWT.0 | PteFlags::PCD.0 | PteFlags::PAT.0;

/// Whether replacing `old` by `new` in a `level` table needs a TLB flush
/// on hardware: a present leaf that goes away, maps another frame, loses
/// write, user or execute rights, or changes memory type; or a page
/// table replaced by a huge leaf (a collapse: its 4 KiB translations may
/// be cached). Not: filling an empty or swap entry, upgrades (a spurious
/// fault at worst, which drops the entry), a huge leaf split into a table
/// of the same translations, A/D changes, and page tables freed empty
/// (paging-structure caches are not modelled).
pub fn needs_flush(level: Level, old: Pte, new: Pte) -> bool {
    if !old.is_present() {
        return false;
    }
    let Some(size) = level.page_size() else { return false };
    if !old.is_leaf_at(level) {
        // A table: only a collapse onto a huge leaf drops translations
        // that may be cached.
        return new.is_present() && new.is_leaf_at(level);
    }
    if !new.is_present() || !new.is_leaf_at(level) {
        return !new.is_present();
    }
    let (of, nf) = (old.leaf_flags(level), new.leaf_flags(level));
    let lost = |f: PteFlags| of.contains(f) && !nf.contains(f);
    old.frame(size, 52) != new.frame(size, 52)
        || lost(PteFlags::RW)
        || lost(PteFlags::USER)
        || (!of.contains(PteFlags::NX) && nf.contains(PteFlags::NX))
        || (of.0 & TYPE_BITS) != (nf.0 & TYPE_BITS)
}

/// A translation a CPU may still hold after a change that needs a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// What the CPU may hold (from the old leaf; for a collapsed table, a
    /// 2 MiB-wide placeholder whose frame is unknown).
    pub entry: TlbEntry,
    /// The whole range of a collapsed table: an INVLPG drops one of its
    /// 512 pages only, so only a CR3 load or full flush drops it.
    pub range: bool,
    /// The change's flush is batched and its frame was not freed since:
    /// user mode may resume with it (module documentation).
    pub deferred: bool,
    /// The CPU holding it freed its frame (before its own flush): its
    /// return to user mode is a stale use, whoever made the change.
    pub freed: bool,
    /// The change.
    pub change: Record,
}

/// Why a candidate counts as used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseKind {
    /// The CPU returned to user mode with it.
    UserReturn,
    /// The CPU that made the change (`by_cpu`) returned to user mode while
    /// this CPU still held the old translation: the change's system call
    /// or fault was over with no shootdown of this CPU.
    ChangerReturned {
        /// The CPU that made the change.
        by_cpu: u8,
    },
    /// Its frame was freed (block at `pfn`, `1 << order` pages, by `cpu`).
    FrameFreed {
        /// First page of the block.
        pfn: u64,
        /// Its order.
        order: u8,
        /// The CPU that freed it.
        by_cpu: u8,
    },
}

/// One access that would have used a stale translation on hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleUse {
    /// The CPU holding the stale translation.
    pub cpu: u8,
    /// The first address of the stale entry (canonical).
    pub va: u64,
    /// The stale entry.
    pub candidate: Candidate,
    /// The use.
    pub kind: UseKind,
    /// `seq` of the event that used it.
    pub seq: u64,
}

/// Counts of what a replay went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records replayed.
    pub events: u64,
    /// Page-table changes that need a flush.
    pub pte_changes: u64,
    /// INVLPGs, CR3 loads and full flushes.
    pub flushes: u64,
    /// Blocks freed.
    pub frees: u64,
    /// Returns to user mode.
    pub user_returns: u64,
    /// Records that made no sense (unknown level, bad CPU): skipped.
    pub malformed: u64,
}

#[derive(Debug, Clone, Default)]
struct CpuState {
    online: bool,
    cr3: u64,
    pending: Vec<Candidate>,
}

/// The replay: per-CPU candidate sets fed records in `seq` order.
#[derive(Debug, Clone)]
pub struct Replay {
    cpus: Vec<CpuState>,
    stats: ReplayStats,
    uses: Vec<StaleUse>,
    maxphyaddr: u8,
    pge: bool,
}

const CR3_ADDR: u64 = 0x000f_ffff_ffff_f000;

impl Replay {
    /// An empty replay for `nr_cpus` CPUs (at most [`TRACE_MAX_CPUS`])
    /// with the guest's physical-address width and CR4.PGE.
    pub fn new(nr_cpus: usize, maxphyaddr: u8, pge: bool) -> Self {
        let n = nr_cpus.clamp(1, TRACE_MAX_CPUS);
        Replay {
            cpus: alloc::vec![CpuState::default(); n],
            stats: ReplayStats::default(),
            uses: Vec::new(),
            maxphyaddr,
            pge,
        }
    }

    /// What was replayed so far.
    pub fn stats(&self) -> ReplayStats {
        self.stats
    }

    /// The stale uses found so far, in the order they happened.
    pub fn uses(&self) -> &[StaleUse] {
        &self.uses
    }

    /// Candidates still held (changes not flushed yet) per CPU.
    pub fn pending(&self) -> impl Iterator<Item = (usize, &Candidate)> {
        self.cpus.iter().enumerate().flat_map(|(c, s)| s.pending.iter().map(move |p| (c, p)))
    }

    /// Replays one record (callers feed them in `seq` order).
    pub fn feed(&mut self, r: &Record) {
        self.stats.events += 1;
        let cpu = r.cpu as usize;
        if cpu >= self.cpus.len() {
            self.stats.malformed += 1;
            return;
        }
        self.cpus[cpu].online = true;
        match r.kind {
            EventKind::Cr3Snapshot => self.cpus[cpu].cr3 = r.root & CR3_ADDR,
            EventKind::Cr3Load => {
                self.stats.flushes += 1;
                let s = &mut self.cpus[cpu];
                s.cr3 = r.root & CR3_ADDR;
                // No PCIDs here: CR4.PCIDE is clear.
                s.pending.retain(|c| !c.entry.dropped_by_cr3_write(r.root, false));
            }
            EventKind::FlushAll => {
                self.stats.flushes += 1;
                self.cpus[cpu].pending.clear();
            }
            EventKind::Invlpg => {
                self.stats.flushes += 1;
                let va = VirtAddr(r.va);
                self.cpus[cpu].pending.retain(|c| c.range || !c.entry.covers(va));
            }
            EventKind::PteChange => self.change(r),
            EventKind::Free => self.free(r),
            EventKind::UserReturn => {
                self.stats.user_returns += 1;
                let mut used = Vec::new();
                for (holder, s) in self.cpus.iter_mut().enumerate() {
                    s.pending.retain(|c| {
                        // User-accessible translations only (without
                        // PCIDs, a non-global candidate on the returning
                        // CPU is of the root it resumes on: CR3 loads
                        // drop the others).
                        if !c.entry.flags.contains(PteFlags::USER) {
                            return true;
                        }
                        let mine = c.change.cpu == r.cpu && !c.deferred;
                        let kind = if holder == cpu && (mine || c.freed) {
                            // Its own change not flushed before the return,
                            // or a frame it freed itself.
                            UseKind::UserReturn
                        } else if holder != cpu && mine {
                            // The changer is done with its system call or
                            // fault, and never shot this CPU down.
                            UseKind::ChangerReturned { by_cpu: r.cpu }
                        } else {
                            // Another CPU's change whose shootdown may be in
                            // flight (it lands before the first user
                            // instruction, or the changer's own return or
                            // its free of the frame says it never came).
                            return true;
                        };
                        used.push((holder as u8, *c, kind));
                        false
                    });
                }
                for (holder, c, kind) in used {
                    self.uses.push(StaleUse { cpu: holder, va: c.entry.va(false).0, candidate: c, kind, seq: r.seq });
                }
            }
        }
    }

    fn change(&mut self, r: &Record) {
        let Some(level) = level_of(r.level) else {
            self.stats.malformed += 1;
            return;
        };
        let (old, new) = (Pte(r.old), Pte(r.new));
        if !needs_flush(level, old, new) {
            self.stats.malformed += 1;
            return;
        }
        self.stats.pte_changes += 1;
        let va = VirtAddr(r.va).canonicalize(false);
        let (entry, range) = match TlbEntry::from_leaf(old, level, va, 0, self.pge, self.maxphyaddr) {
            Some(e) => (e, false),
            None => {
                // A collapsed table: its 512 small translations, as one
                // placeholder over the range (frame unknown).
                let Some(size) = level.page_size() else { return };
                let mut flags = new.leaf_flags(level);
                if !self.pge {
                    flags = flags.difference(PteFlags::GLOBAL);
                }
                let vpn = (va.0 & ((1u64 << 57) - 1)) >> size.shift();
                (TlbEntry { vpn, pcid: 0, size, frame: PhysAddr(u64::MAX), flags }, true)
            }
        };
        let kernel = va.0 >> 63 == 1;
        let root = r.root & CR3_ADDR;
        let cand = Candidate { entry, range, deferred: r.flags & FLAG_DEFERRED != 0, freed: false, change: *r };
        for s in self.cpus.iter_mut().filter(|s| s.online) {
            // The kernel half is shared by every root: any CPU that runs
            // may hold it. A user address only under its own root.
            if kernel || entry.is_global() || s.cr3 == root {
                s.pending.push(cand);
            }
        }
    }

    fn free(&mut self, r: &Record) {
        self.stats.frees += 1;
        let order = r.va.min(40) as u32;
        let start = r.root.saturating_mul(4096);
        let end = start.saturating_add(4096u64 << order);
        for (cpu, s) in self.cpus.iter_mut().enumerate() {
            let mut used = Vec::new();
            s.pending.retain_mut(|c| {
                if c.range {
                    return true;
                }
                let fstart = c.entry.frame.0;
                let fend = fstart.saturating_add(c.entry.size.bytes());
                let overlaps = fstart < end && start < fend;
                let kernel = c.entry.va(false).0 >> 63 == 1;
                if overlaps && (cpu != r.cpu as usize || kernel) {
                    used.push(*c);
                    return false;
                }
                if overlaps {
                    // The freeing CPU's own: the frame is gone, so user
                    // mode may no longer resume with it.
                    c.deferred = false;
                    c.freed = true;
                }
                true
            });
            for c in used {
                self.uses.push(StaleUse {
                    cpu: cpu as u8,
                    va: c.entry.va(false).0,
                    candidate: c,
                    kind: UseKind::FrameFreed { pfn: r.root, order: r.va as u8, by_cpu: r.cpu },
                    seq: r.seq,
                });
            }
        }
    }
}

/// The size a candidate's entry covers, for reports.
pub fn candidate_size(c: &Candidate) -> PageSize {
    c.entry.size
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PteFlags::PRESENT.0;
    const RW: u64 = PteFlags::RW.0;
    const US: u64 = PteFlags::USER.0;
    const ROOT_A: u64 = 0x10_0000;
    const ROOT_B: u64 = 0x20_0000;
    const VA: u64 = 0x40_0000;

    fn rec(seq: u64, kind: EventKind, cpu: u8) -> Record {
        Record { seq, cpu, ..Record::new(kind) }
    }

    fn change(seq: u64, cpu: u8, root: u64, va: u64, old: u64, new: u64) -> Record {
        Record { root, va, old, new, level: 0, site_line: 77, ..rec(seq, EventKind::PteChange, cpu) }
    }

    fn replay(events: &[Record]) -> Replay {
        let mut r = Replay::new(2, 46, true);
        for e in events {
            r.feed(e);
        }
        r
    }

    #[test]
    fn records_round_trip() {
        let r = Record {
            seq: 9,
            kind: EventKind::PteChange,
            cpu: 3,
            level: 1,
            root: 0x1000,
            va: 0xffff_8880_0000_0000,
            old: 0x1234_0067,
            new: 0,
            site_file: 0xffff_ffff_8100_0000,
            site_file_len: 22,
            site_line: 4242,
            flags: FLAG_DEFERRED,
            rip: 0xffff_ffff_8020_0000,
        };
        assert_eq!(Record::from_words(&r.to_words()), Some(r));
        let mut w = r.to_words();
        w[1] &= !0xff;
        assert_eq!(Record::from_words(&w), None, "kind 0 is no record");
    }

    #[test]
    fn which_changes_need_a_flush() {
        let leaf = Pte(0x5000 | P | RW | US);
        assert!(needs_flush(Level::Pte, leaf, Pte::NONE), "unmap");
        assert!(needs_flush(Level::Pte, leaf, Pte(0x5000 | P | US)), "write-protect");
        assert!(needs_flush(Level::Pte, leaf, Pte(0x6000 | P | RW | US)), "frame change");
        assert!(needs_flush(Level::Pte, leaf, Pte(0x5000 | P | RW)), "user lost");
        assert!(!needs_flush(Level::Pte, Pte::NONE, leaf), "fill");
        assert!(!needs_flush(Level::Pte, Pte(0x5000 | P | US), leaf), "upgrade");
        assert!(!needs_flush(Level::Pte, leaf, Pte(leaf.0 | PteFlags::ACCESSED.0)), "A/D");
        assert!(!needs_flush(Level::Pte, Pte(0x1234 << 1), Pte::NONE), "a swap entry dropped");
        let table = Pte(0x7000 | P | RW | US);
        let huge = Pte(0x20_0000 | P | RW | US | PteFlags::PSE.0);
        assert!(needs_flush(Level::Pmd, table, huge), "collapse");
        assert!(!needs_flush(Level::Pmd, table, Pte::NONE), "an empty table freed");
        assert!(!needs_flush(Level::Pmd, huge, table), "split");
    }

    #[test]
    fn an_unflushed_unmap_is_used_by_the_return_to_user_mode() {
        let snap = Record { root: ROOT_A, ..rec(0, EventKind::Cr3Snapshot, 0) };
        let r = replay(&[
            snap,
            change(1, 0, ROOT_A, VA, 0x5000 | P | RW | US, 0),
            Record { root: ROOT_A, ..rec(2, EventKind::UserReturn, 0) },
        ]);
        assert_eq!(r.uses().len(), 1);
        let u = r.uses()[0];
        assert_eq!((u.cpu, u.va, u.kind), (0, VA, UseKind::UserReturn));
        assert_eq!(u.candidate.change.site_line, 77);
        assert_eq!(r.stats().pte_changes, 1);
    }

    #[test]
    fn invlpg_cr3_and_full_flushes_drop_the_candidate() {
        let snap = Record { root: ROOT_A, ..rec(0, EventKind::Cr3Snapshot, 0) };
        let ret = Record { root: ROOT_A, ..rec(9, EventKind::UserReturn, 0) };
        let unmap = change(1, 0, ROOT_A, VA, 0x5000 | P | RW | US, 0);
        for flush in [
            Record { va: VA + 0x123, ..rec(2, EventKind::Invlpg, 0) },
            Record { root: ROOT_A, ..rec(2, EventKind::Cr3Load, 0) },
            rec(2, EventKind::FlushAll, 0),
        ] {
            let r = replay(&[snap, unmap, flush, ret]);
            assert!(r.uses().is_empty(), "{flush:?}");
            assert_eq!(r.stats().flushes, 1);
        }
        // INVLPG of another page leaves it.
        let r = replay(&[snap, unmap, Record { va: VA + 0x1000, ..rec(2, EventKind::Invlpg, 0) }, ret]);
        assert_eq!(r.uses().len(), 1);
    }

    #[test]
    fn only_cpus_on_the_root_hold_user_candidates() {
        let r = replay(&[
            Record { root: ROOT_A, ..rec(0, EventKind::Cr3Snapshot, 0) },
            Record { root: ROOT_B, ..rec(1, EventKind::Cr3Snapshot, 1) },
            // CPU 0 unmaps a page of B's (reclaim): only CPU 1 may hold it.
            change(2, 0, ROOT_B, VA, 0x5000 | P | RW | US, 0),
            // CPU 0 frees the frame while CPU 1 may be using it.
            Record { root: 5, va: 0, ..rec(3, EventKind::Free, 0) },
            Record { root: ROOT_A, ..rec(4, EventKind::UserReturn, 0) },
        ]);
        assert_eq!(r.uses().len(), 1);
        assert_eq!(r.uses()[0].cpu, 1);
        assert_eq!(r.uses()[0].kind, UseKind::FrameFreed { pfn: 5, order: 0, by_cpu: 0 });
    }

    #[test]
    fn another_cpus_return_during_the_shootdown_is_no_use_the_changers_return_without_it_is() {
        let snaps = [
            Record { root: ROOT_A, ..rec(0, EventKind::Cr3Snapshot, 0) },
            Record { root: ROOT_A, ..rec(1, EventKind::Cr3Snapshot, 1) },
        ];
        let unmap = change(2, 0, ROOT_A, VA, 0x5000 | P | RW | US, 0);
        let ret1 = Record { root: ROOT_A, ..rec(3, EventKind::UserReturn, 1) };
        let invlpg0 = Record { va: VA, ..rec(4, EventKind::Invlpg, 0) };
        let invlpg1 = Record { va: VA, ..rec(5, EventKind::Invlpg, 1) };
        let ret0 = Record { root: ROOT_A, ..rec(6, EventKind::UserReturn, 0) };
        // CPU 1 goes back to user mode while CPU 0's request is on its way
        // (served right after): no use, the flush came before CPU 0 went on.
        let r = replay(&[snaps[0], snaps[1], unmap, ret1, invlpg0, invlpg1, ret0]);
        assert!(r.uses().is_empty(), "{:?}", r.uses());
        // The request never reaches CPU 1: CPU 0's return names it.
        let r = replay(&[snaps[0], snaps[1], unmap, ret1, invlpg0, ret0]);
        assert_eq!(r.uses().len(), 1, "{:?}", r.uses());
        let u = r.uses()[0];
        assert_eq!((u.cpu, u.va, u.kind, u.seq), (1, VA, UseKind::ChangerReturned { by_cpu: 0 }, 6));
        // CPU 1 freed the frame itself before its flush: its own return is
        // a use, whoever changed the entry.
        let free1 = Record { root: 5, va: 0, ..rec(4, EventKind::Free, 1) };
        let ret1_after = Record { root: ROOT_A, ..rec(5, EventKind::UserReturn, 1) };
        let r =
            replay(&[snaps[0], snaps[1], unmap, Record { va: VA, ..rec(3, EventKind::Invlpg, 0) }, free1, ret1_after]);
        assert_eq!(r.uses().len(), 1, "{:?}", r.uses());
        assert_eq!((r.uses()[0].cpu, r.uses()[0].kind), (1, UseKind::UserReturn));
    }

    #[test]
    fn the_freeing_cpu_may_free_before_its_own_flush_but_not_a_kernel_page() {
        let snap = Record { root: ROOT_A, ..rec(0, EventKind::Cr3Snapshot, 0) };
        let free = Record { root: 4, va: 2, ..rec(3, EventKind::Free, 0) };
        let user = change(1, 0, ROOT_A, VA, 0x5000 | P | RW | US, 0);
        let r = replay(&[snap, user, free, Record { va: VA, ..rec(4, EventKind::Invlpg, 0) }]);
        assert!(r.uses().is_empty());
        let kva = 0xffff_c900_0000_0000;
        let kernel = change(1, 0, ROOT_A, kva, 0x5000 | P | RW | PteFlags::GLOBAL.0, 0);
        let r = replay(&[snap, kernel, free]);
        assert_eq!(r.uses().len(), 1);
        assert_eq!(r.uses()[0].va, kva);
        // A kernel candidate is no user-mode use, and survives CR3 loads
        // when global.
        let r = replay(&[
            snap,
            kernel,
            Record { root: ROOT_B, ..rec(2, EventKind::Cr3Load, 0) },
            Record { root: ROOT_B, ..rec(3, EventKind::UserReturn, 0) },
        ]);
        assert!(r.uses().is_empty());
        assert_eq!(r.pending().count(), 1);
    }

    #[test]
    fn a_batched_unmap_may_be_used_until_its_frame_is_freed() {
        let snaps = [
            Record { root: ROOT_A, ..rec(0, EventKind::Cr3Snapshot, 0) },
            Record { root: ROOT_A, ..rec(1, EventKind::Cr3Snapshot, 1) },
        ];
        // CPU 0 (reclaim) unmaps pfn 5 of root A with its flush batched;
        // CPU 1 runs A's user code meanwhile.
        let unmap = Record { flags: FLAG_DEFERRED, ..change(2, 0, ROOT_A, VA, 0x5000 | P | RW | US, 0) };
        let ret1 = Record { root: ROOT_A, ..rec(3, EventKind::UserReturn, 1) };
        let full1 = rec(4, EventKind::FlushAll, 1);
        let inv0 = Record { va: VA, ..rec(5, EventKind::Invlpg, 0) };
        let free = Record { root: 5, va: 0, ..rec(6, EventKind::Free, 0) };
        // The batch's flush before the free: clean.
        let mut ev = snaps.to_vec();
        ev.extend([unmap, ret1, full1, inv0, free]);
        let r = replay(&ev);
        assert!(r.uses().is_empty(), "{:?}", r.uses());
        // No flush on CPU 1 before the free: a stale use by CPU 1.
        let mut ev = snaps.to_vec();
        ev.extend([unmap, ret1, inv0, free]);
        let r = replay(&ev);
        assert_eq!(r.uses().len(), 1);
        assert_eq!(r.uses()[0].cpu, 1);
        assert!(matches!(r.uses()[0].kind, UseKind::FrameFreed { pfn: 5, .. }));
        // The freeing CPU's own candidate: used by its next return.
        let ret0 = Record { root: ROOT_A, ..rec(7, EventKind::UserReturn, 0) };
        let mut ev = snaps.to_vec();
        ev.extend([unmap, full1, free, ret0]);
        let r = replay(&ev);
        assert_eq!(r.uses().len(), 1);
        assert_eq!((r.uses()[0].cpu, r.uses()[0].kind), (0, UseKind::UserReturn));
        // The same unmap not batched: CPU 1's return while the shootdown
        // may be on its way is no use, but CPU 0 going back to user mode
        // before CPU 1 flushed is.
        let mut ev = snaps.to_vec();
        ev.extend([Record { flags: 0, ..unmap }, ret1, full1, inv0, free]);
        assert!(replay(&ev).uses().is_empty());
        let ret0_early = Record { root: ROOT_A, ..rec(6, EventKind::UserReturn, 0) };
        let mut ev = snaps.to_vec();
        ev.extend([Record { flags: 0, ..unmap }, ret1, inv0, ret0_early]);
        let r = replay(&ev);
        assert_eq!(r.uses().len(), 1);
        assert_eq!((r.uses()[0].cpu, r.uses()[0].kind), (1, UseKind::ChangerReturned { by_cpu: 0 }));
    }

    #[test]
    fn a_collapse_is_dropped_by_a_full_flush_only() {
        let snap = Record { root: ROOT_A, ..rec(0, EventKind::Cr3Snapshot, 0) };
        let collapse = Record {
            level: 1,
            old: 0x7000 | P | RW | US,
            new: 0x20_0000 | P | RW | US | PteFlags::PSE.0,
            ..change(1, 0, ROOT_A, 0x20_0000, 0, 0)
        };
        let ret = Record { root: ROOT_A, ..rec(9, EventKind::UserReturn, 0) };
        let r = replay(&[snap, collapse, Record { va: 0x20_0000, ..rec(2, EventKind::Invlpg, 0) }, ret]);
        assert_eq!(r.uses().len(), 1);
        let r = replay(&[snap, collapse, Record { root: ROOT_A, ..rec(2, EventKind::Cr3Load, 0) }, ret]);
        assert!(r.uses().is_empty());
    }
}
