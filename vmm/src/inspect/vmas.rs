//! The `vmas` view: every process's VMAs as /proc/PID/maps lists them,
//! with the resident and swapped-out pages of each (smaps' `Rss` and
//! `Swap`), from the VMA table the guest publishes in its descriptor
//! (version 6) and a walk of the process's page tables over each VMA with
//! mm-core's [`Mapper::for_each_leaf`].
//!
//! What counts: a present leaf is resident (a 2 MiB leaf counts the 4 KiB
//! pages it maps inside the VMA); the shared zero page (its descriptor's
//! owner is `Reserved`) is left out of `rss`, as Linux's smaps does, and
//! counted in `zero`; a non-present, non-zero PTE that decodes as a swap
//! entry counts in `swap`.

use super::guest::GuestState;
use super::views::hex;
use super::GuestPhys;
use mm_core::addr::{PhysAddr, PAGE_SHIFT};
use mm_core::buddy::PageOwner;
use mm_core::descriptor::{vma_kind, VmaDesc, Wire, MAX_VMA_DESCS, VMA_DESC_SIZE, VMA_THP_ELIGIBLE};
use mm_core::paging::swap::SwapEntry;
use mm_core::paging::{LeafKinds, Mapper};
use serde::Serialize;
use std::fmt::Write as _;
use vm_memory::{Bytes, GuestAddress};

/// Leaf entries one VMA's walk reads at most (a 1 TiB anonymous mapping
/// fully populated would be 2^28; the walk stops and says so).
const LEAF_BUDGET: u64 = 1 << 22;

/// One VMA.
#[derive(Debug, Clone, Serialize)]
pub struct VmaRow {
    /// First byte.
    #[serde(serialize_with = "hex")]
    pub start: u64,
    /// One past the last byte.
    #[serde(serialize_with = "hex")]
    pub end: u64,
    /// `rwxp` / `rwxs` as maps prints them.
    pub perms: String,
    /// The `VmFlags` bits.
    #[serde(serialize_with = "hex")]
    pub flags: u64,
    /// File offset in bytes (file mappings), as maps' third column.
    #[serde(serialize_with = "hex")]
    pub offset: u64,
    /// anon, file, stack, heap or hugetlb.
    pub kind: &'static str,
    /// The file's path, `[heap]`, `[stack]`, or empty.
    pub name: String,
    /// Transparent huge pages may back it in the current THP mode.
    pub thp_eligible: bool,
    /// Size in KiB.
    pub size_kb: u64,
    /// Resident KiB (the zero page left out).
    pub rss_kb: u64,
    /// KiB mapped by 2 MiB leaves (smaps' `AnonHugePages` /
    /// `Private_Hugetlb`).
    pub huge_kb: u64,
    /// KiB swapped out.
    pub swap_kb: u64,
    /// Pages mapping the shared zero page.
    pub zero_pages: u64,
    /// Why the counts may be short (the walk failed or hit its budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One process's VMAs.
#[derive(Debug, Clone, Serialize)]
pub struct ProcVmas {
    /// Process id.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// Its address space's root.
    #[serde(serialize_with = "hex")]
    pub cr3: u64,
    /// The VMAs by address.
    pub vmas: Vec<VmaRow>,
    /// Sum of the VMAs' `rss_kb`.
    pub rss_kb: u64,
    /// Sum of the VMAs' `swap_kb`.
    pub swap_kb: u64,
}

/// The `vmas` view.
#[derive(Debug, Clone, Serialize)]
pub struct VmasReport {
    /// Whether the guest publishes a VMA table.
    pub published: bool,
    /// False when the vCPU stopped while the guest was rewriting the table
    /// (the entries may be half-written).
    pub consistent: bool,
    /// The table's rewrite count.
    pub generation: u32,
    /// VMAs the guest left out since boot (the table was full).
    pub dropped: u32,
    /// Per process (zombies and kernel threads have no VMAs and are left
    /// out), by pid.
    pub procs: Vec<ProcVmas>,
}

/// Reads the descriptor's VMA table: its live entries.
pub fn table(gs: &GuestState<'_>) -> Result<Option<Vec<VmaDesc>>, String> {
    let t = gs.desc.vmas;
    if t.table == 0 {
        return Ok(None);
    }
    let count = t.count as usize;
    if count > MAX_VMA_DESCS || t.capacity as usize > MAX_VMA_DESCS || count > t.capacity as usize {
        return Err(format!(
            "the VMA table says {count} entries of {} (this VMM reads at most {MAX_VMA_DESCS}): the descriptor is corrupt",
            t.capacity
        ));
    }
    let mut buf = vec![0u8; count * VMA_DESC_SIZE];
    gs.memory()
        .read_slice(&mut buf, GuestAddress(t.table))
        .map_err(|_| format!("cannot read the VMA table at {:#x} ({count} entries): not in guest RAM", t.table))?;
    Ok(Some(buf.chunks_exact(VMA_DESC_SIZE).map(VmaDesc::decode).filter(|v| v.cr3 != 0).collect()))
}

/// What maps shows in its name column.
fn name_of(v: &VmaDesc) -> String {
    let n = match v.kind {
        vma_kind::STACK => "[stack]".to_string(),
        vma_kind::HEAP => "[heap]".to_string(),
        _ => v.name().to_string(),
    };
    // Guest text: escaped before it can reach a terminal.
    crate::devices::results::escape(&n)
}

fn perms(flags: u32) -> String {
    let ch = |bit: u32, c: char| if flags & bit != 0 { c } else { '-' };
    [ch(1, 'r'), ch(2, 'w'), ch(4, 'x'), if flags & 8 != 0 { 's' } else { 'p' }].iter().collect()
}

/// Walks `cr3`'s tables over one VMA and fills in its counts.
fn count(gs: &GuestState<'_>, cr3: u64, v: &VmaDesc, row: &mut VmaRow) {
    let mut phys = GuestPhys(gs.memory());
    let pt = Mapper::new(PhysAddr(cr3 & 0x000f_ffff_ffff_f000), false, 52, false);
    let (mut rss, mut huge, mut swap, mut zero, mut budget) = (0u64, 0u64, 0u64, 0u64, LEAF_BUDGET);
    let res =
        pt.for_each_leaf_within(&mut phys, v.start..v.end, LeafKinds::NonNone, super::views::DEFAULT_BUDGET, |_, l| {
            if budget == 0 {
                return false;
            }
            budget -= 1;
            if !l.entry.is_present() {
                if SwapEntry::from_pte(l.entry).is_some() {
                    swap += 1;
                }
                return true;
            }
            let size = l.size().bytes();
            // The part of the leaf inside the VMA (a huge leaf may stick out
            // of a VMA that was split or trimmed).
            let lo = l.va.0.max(v.start);
            let hi = l.va.0.saturating_add(size).min(v.end);
            let pages = hi.saturating_sub(lo) >> PAGE_SHIFT;
            let pa = l.entry.frame(l.size(), 52).0;
            if size == 4096 && gs.page(pa >> PAGE_SHIFT).owner == PageOwner::Reserved as u8 {
                zero += 1;
                return true;
            }
            rss += pages;
            if size > 4096 {
                huge += pages;
            }
            true
        });
    row.rss_kb = rss * 4;
    row.huge_kb = huge * 4;
    row.swap_kb = swap * 4;
    row.zero_pages = zero;
    if budget == 0 {
        row.problem = Some(format!("more than {LEAF_BUDGET} entries: the rest was not counted"));
    } else if let Err(e) = res {
        row.problem = Some(format!("the page tables at {cr3:#x} could not be walked: {e}"));
    }
}

/// The `vmas` view, for every process or only `pid`.
pub fn vmas(gs: &GuestState<'_>, pid: Option<u32>) -> Result<VmasReport, String> {
    let t = gs.desc.vmas;
    let procs = gs.procs().map_err(|e| e.to_string())?.unwrap_or_default();
    if let Some(p) = pid {
        if !procs.iter().any(|pr| pr.pid == p) {
            let pids: Vec<String> = procs.iter().map(|p| p.pid.to_string()).collect();
            return Err(format!("no process {p} in the guest (pids: {})", pids.join(", ")));
        }
    }
    let mut report = VmasReport {
        published: t.table != 0,
        consistent: t.consistent != 0,
        generation: t.generation,
        dropped: t.dropped,
        procs: Vec::new(),
    };
    let Some(entries) = table(gs)? else { return Ok(report) };
    for pr in procs.iter().filter(|pr| pid.is_none_or(|p| p == pr.pid)) {
        let mut mine: Vec<&VmaDesc> = entries.iter().filter(|v| pr.cr3 != 0 && v.cr3 == pr.cr3).collect();
        mine.sort_by_key(|v| v.start);
        if mine.is_empty() && pid.is_none() {
            continue;
        }
        let n = pr.name.iter().position(|&b| b == 0).unwrap_or(pr.name.len());
        let mut p = ProcVmas {
            pid: pr.pid,
            name: crate::devices::results::escape(&String::from_utf8_lossy(&pr.name[..n])),
            cr3: pr.cr3,
            vmas: Vec::new(),
            rss_kb: 0,
            swap_kb: 0,
        };
        for v in mine {
            let mut row = VmaRow {
                start: v.start,
                end: v.end,
                perms: perms(v.flags),
                flags: u64::from(v.flags),
                offset: if v.kind == vma_kind::FILE { v.pgoff << PAGE_SHIFT } else { 0 },
                kind: vma_kind::NAMES.get(v.kind as usize).copied().unwrap_or("?"),
                name: name_of(v),
                thp_eligible: v.attrs & VMA_THP_ELIGIBLE != 0,
                size_kb: v.end.saturating_sub(v.start) >> 10,
                rss_kb: 0,
                huge_kb: 0,
                swap_kb: 0,
                zero_pages: 0,
                problem: None,
            };
            count(gs, pr.cr3, v, &mut row);
            p.rss_kb += row.rss_kb;
            p.swap_kb += row.swap_kb;
            p.vmas.push(row);
        }
        report.procs.push(p);
    }
    Ok(report)
}

impl VmasReport {
    /// maps-style lines per process, with Size, Rss, Swap and THP columns.
    pub fn render(&self) -> String {
        if !self.published {
            return "no VMA table: the guest publishes none yet (its memory manager is not up, or it predates descriptor version 6)\n".into();
        }
        let mut s = String::new();
        if !self.consistent {
            s.push_str(
                "warning: the vCPU stopped while the guest was rewriting its VMA table; entries may be half-written\n",
            );
        }
        if self.dropped > 0 {
            let _ = writeln!(s, "warning: the guest's VMA table overflowed: {} VMAs were left out", self.dropped);
        }
        if self.procs.is_empty() {
            s.push_str("no process has VMAs\n");
        }
        for p in &self.procs {
            let _ = writeln!(
                s,
                "pid {} ({}) cr3 {:#x}: {} VMAs, Rss {} kB, Swap {} kB",
                p.pid,
                p.name,
                p.cr3,
                p.vmas.len(),
                p.rss_kb,
                p.swap_kb
            );
            let _ = writeln!(
                s,
                "  {:<33} {:<4} {:>8} {:<7} {:>9} {:>9} {:>9} {:>3}  name",
                "range", "perm", "offset", "kind", "Size kB", "Rss kB", "Swap kB", "THP"
            );
            for v in &p.vmas {
                let _ = writeln!(
                    s,
                    "  {:016x}-{:016x} {:<4} {:>8x} {:<7} {:>9} {:>9} {:>9} {:>3}  {}{}",
                    v.start,
                    v.end,
                    v.perms,
                    v.offset,
                    v.kind,
                    v.size_kb,
                    v.rss_kb,
                    v.swap_kb,
                    if v.thp_eligible { "yes" } else { "-" },
                    v.name,
                    v.problem.as_ref().map_or(String::new(), |p| format!("  ({p})"))
                );
            }
        }
        s
    }
}
