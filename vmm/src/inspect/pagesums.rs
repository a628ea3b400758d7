//! The `pagesums` view: for every resident user page of a process, its
//! virtual address, its frame and the checksum of its 4 KiB of contents
//! (mm-core's [`page_checksum`], the one the guest keeps for swap slots
//! and `--verify swap` recomputes), read from guest memory through a walk
//! of the process's page tables with mm-core's [`Mapper::for_each_leaf`].
//!
//! Taken at two checkpoints, it shows from outside the guest that a page
//! kept its contents while its frame changed: compaction and migration
//! move pages to new frames, and `tests/compaction.rs` compares the two
//! lists (every page's checksum equal, some frames different). A 2 MiB
//! leaf counts as its 512 pages, each with its own frame and checksum;
//! swapped-out pages are not resident and are only counted.

use super::guest::GuestState;
use super::views::hex;
use super::GuestPhys;
use mm_core::addr::{PhysAddr, PAGE_SHIFT, PAGE_SIZE};
use mm_core::paging::swap::SwapEntry;
use mm_core::paging::{LeafKinds, Mapper};
use mm_core::swap::page_checksum;
use serde::Serialize;
use std::fmt::Write as _;
use vm_memory::{Bytes, GuestAddress};

/// Pages the report lists at most over all processes (1 GiB of 4 KiB
/// pages read and summed; the walk stops there and says so).
const PAGE_BUDGET: u64 = 1 << 18;

/// One resident page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PageSum {
    /// Its user virtual address.
    #[serde(serialize_with = "hex")]
    pub va: u64,
    /// The frame mapping it.
    #[serde(serialize_with = "hex")]
    pub pfn: u64,
    /// [`page_checksum`] of its contents (0: the frame is not in guest RAM).
    #[serde(serialize_with = "hex")]
    pub sum: u64,
}

/// One address space's pages.
#[derive(Debug, Clone, Serialize)]
pub struct ProcPages {
    /// Process id (the first of the threads sharing the address space).
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// Its address space's root.
    #[serde(serialize_with = "hex")]
    pub cr3: u64,
    /// Resident pages by address.
    pub pages: Vec<PageSum>,
    /// Swapped-out pages (swap entries in its page tables).
    pub swapped: u64,
    /// Why the list may be short (the walk failed or hit its budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The `pagesums` view.
#[derive(Debug, Clone, Serialize)]
pub struct PageSumsReport {
    /// Per address space, by pid.
    pub procs: Vec<ProcPages>,
}

/// Lists `cr3`'s resident user pages with their checksums.
fn walk_process(gs: &GuestState<'_>, cr3: u64, p: &mut ProcPages, budget: &mut u64) {
    let mem = gs.memory();
    let mut phys = GuestPhys(mem);
    let pt = Mapper::new(PhysAddr(cr3 & 0x000f_ffff_ffff_f000), false, 52, false);
    let mut buf = vec![0u8; PAGE_SIZE as usize];
    let mut words = vec![0u64; (PAGE_SIZE / 8) as usize];
    let (pages, swapped) = (&mut p.pages, &mut p.swapped);
    let res =
        pt.for_each_leaf_within(&mut phys, 0..1 << 47, LeafKinds::NonNone, super::views::DEFAULT_BUDGET, |_, l| {
            if !l.entry.is_present() {
                *swapped += SwapEntry::from_pte(l.entry).is_some() as u64;
                return true;
            }
            let base = l.entry.frame(l.size(), 52).0;
            for i in 0..l.size().bytes() / PAGE_SIZE {
                if *budget == 0 {
                    return false;
                }
                *budget -= 1;
                let pa = base + i * PAGE_SIZE;
                let sum = match mem.read_slice(&mut buf, GuestAddress(pa)) {
                    Ok(()) => {
                        for (w, b) in words.iter_mut().zip(buf.chunks_exact(8)) {
                            *w = u64::from_le_bytes(b.try_into().unwrap_or_default());
                        }
                        page_checksum(&words)
                    }
                    Err(_) => 0,
                };
                pages.push(PageSum { va: l.va.0 + i * PAGE_SIZE, pfn: pa >> PAGE_SHIFT, sum });
            }
            true
        });
    if *budget == 0 {
        p.problem = Some(format!("more than {PAGE_BUDGET} pages in all: the rest is not listed"));
    } else if let Err(e) = res {
        p.problem = Some(format!("the page tables at {cr3:#x} could not be walked: {e}"));
    }
}

/// The `pagesums` view, for every process with an address space or only
/// `pid`.
pub fn pagesums(gs: &GuestState<'_>, pid: Option<u32>) -> Result<PageSumsReport, String> {
    let procs = gs.procs().map_err(|e| e.to_string())?.unwrap_or_default();
    if let Some(p) = pid {
        if !procs.iter().any(|pr| pr.pid == p) {
            let pids: Vec<String> = procs.iter().map(|p| p.pid.to_string()).collect();
            return Err(format!("no process {p} in the guest (pids: {})", pids.join(", ")));
        }
    }
    let mut report = PageSumsReport { procs: Vec::new() };
    let mut seen = Vec::new();
    // One budget for every process: the report's size and the guest
    // memory read stay bounded however many processes a guest claims.
    let mut budget = PAGE_BUDGET;
    for pr in procs.iter().filter(|pr| pid.is_none_or(|p| p == pr.pid)) {
        // Kernel threads and zombies have no address space of their own;
        // threads share one: list it once.
        if pr.cr3 == 0 || pr.cr3 == gs.kctx.cr3 || seen.contains(&pr.cr3) {
            continue;
        }
        seen.push(pr.cr3);
        let n = pr.name.iter().position(|&b| b == 0).unwrap_or(pr.name.len());
        let mut p = ProcPages {
            pid: pr.pid,
            name: crate::devices::results::escape(&String::from_utf8_lossy(&pr.name[..n])),
            cr3: pr.cr3,
            pages: Vec::new(),
            swapped: 0,
            problem: None,
        };
        walk_process(gs, pr.cr3, &mut p, &mut budget);
        report.procs.push(p);
    }
    Ok(report)
}

impl PageSumsReport {
    /// One line per page under a line per process.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.procs.is_empty() {
            s.push_str("no process has an address space\n");
        }
        for p in &self.procs {
            let _ = writeln!(
                s,
                "pid {} ({}) cr3 {:#x}: {} resident pages, {} swapped out{}",
                p.pid,
                p.name,
                p.cr3,
                p.pages.len(),
                p.swapped,
                p.problem.as_ref().map_or(String::new(), |e| format!(" ({e})"))
            );
            let _ = writeln!(s, "  {:<16} {:>10} {:>18}", "va", "pfn", "checksum");
            for g in &p.pages {
                let _ = writeln!(s, "  {:016x} {:>#10x} {:>#18x}", g.va, g.pfn, g.sum);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_each_page() {
        let r = PageSumsReport {
            procs: vec![ProcPages {
                pid: 2,
                name: "fragtest".into(),
                cr3: 0x1000,
                pages: vec![PageSum { va: 0x40_0000, pfn: 0x123, sum: 0xabc }],
                swapped: 1,
                problem: None,
            }],
        };
        let t = r.render();
        assert!(t.starts_with("pid 2 (fragtest) cr3 0x1000: 1 resident pages, 1 swapped out\n"), "{t}");
        assert!(t.contains("  0000000000400000      0x123              0xabc\n"), "{t}");
    }
}
