//! The `--verify` checks that need the guest's descriptor:
//!
//! - `freed-mapped`: no frame both inside a free buddy block (free lists
//!   or per-CPU lists) and mapped by a kernel mapping other than the direct
//!   map (vmalloc area, kernel image...) or by a user mapping;
//! - `pt-owner`: every page-table page reachable from `kernel_cr3` and each
//!   process's CR3 is either a boot-time table (memblock memory the buddy
//!   allocator never managed: no block head covers it) or an allocated
//!   block owned `PageTable`;
//! - `access`: the guest's access-rights records (what the CPU did) against
//!   mm-core's `translate` (what the model predicts), fault and error code.

use super::guest::{Block, BlockKind, GuestState, DIRECT_MAP_SIZE};
use super::spec::Check;
use super::verify::CheckResult;
use super::views::MappingsReport;
use super::GuestPhys;
use mm_core::addr::VirtAddr;
use mm_core::descriptor::AccessRecord;
use mm_core::mem::PhysMem;
use mm_core::paging::{translate, Access, CpuContext, Fault};
use std::collections::HashSet;

/// User space ends here (4-level paging).
pub const USER_END: u64 = 1 << 47;
/// Most page-table pages `pt-owner` visits per run (far above any real
/// tree; hostile trees stop here).
pub const TABLE_BUDGET: usize = 1 << 20;

/// A root to check and how much of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    /// The CR3 value.
    pub cr3: u64,
    /// Whose ("kernel", "pid 3", "vCPU").
    pub whose: &'static str,
    /// The process id, if a process's.
    pub pid: Option<u32>,
    /// Only the user half (the kernel half is the kernel's, checked once).
    pub user_only: bool,
}

fn region(gs: &GuestState<'_>, va: u64) -> &'static str {
    let d = &gs.desc;
    if va < USER_END {
        "user space"
    } else if (d.vmalloc_va.start..d.vmalloc_va.end).contains(&va) {
        "the vmalloc area"
    } else if va >= 0xffff_ffff_8000_0000 {
        "the kernel image"
    } else if va >= d.vmemmap_va && va < d.vmemmap_va.saturating_add(1 << 40) {
        "vmemmap"
    } else {
        "a kernel mapping"
    }
}

fn root_name(r: &Root) -> String {
    match r.pid {
        Some(p) => format!("pid {p}'s CR3 {:#x}", r.cr3),
        None => format!("the {} CR3 {:#x}", r.whose, r.cr3),
    }
}

fn free_desc(b: &Block) -> String {
    let list = if b.kind == BlockKind::Pcp { "a per-CPU list" } else { "the free lists" };
    format!("order-{} block at pfn {:#x} on {list}", b.order, b.pfn)
}

/// `freed-mapped` over `maps` (one [`MappingsReport`] per root, same order).
pub fn freed_mapped(gs: &GuestState<'_>, roots: &[Root], maps: &[&MappingsReport]) -> CheckResult {
    let direct = gs.desc.page_offset_va..gs.desc.page_offset_va.saturating_add(DIRECT_MAP_SIZE);
    let mut violations = Vec::new();
    let mut leaves = 0u64;
    let free_pages: u64 = gs.blocks.iter().filter(|b| b.is_free()).map(|b| 1u64 << b.order).sum();
    for (r, m) in roots.iter().zip(maps) {
        for e in &m.entries {
            if direct.contains(&e.va) || (r.user_only && e.va >= USER_END) {
                continue;
            }
            leaves += 1;
            let (first, n) = (e.pa >> 12, (e.size >> 12).max(1));
            for pfn in first..first + n {
                let Some(b) = gs.block_of(pfn).filter(|b| b.is_free()) else { continue };
                let va = e.va + ((pfn - first) << 12);
                violations.push(format!(
                    "frame {pfn:#x} is free ({}) but {} maps it at {va:#x} ({}): a use-after-free waiting to happen",
                    free_desc(b),
                    root_name(r),
                    region(gs, va)
                ));
            }
        }
    }
    CheckResult::new(
        Check::FreedMapped,
        format!("{leaves} non-direct-map leaves under {} roots against {free_pages} free frames", roots.len()),
        violations,
    )
}

/// Every table page under `cr3` (PML4, PDPTs, PDs, PTs), each subtree
/// once; tables outside RAM are reported, not followed.
pub fn table_pages<M: PhysMem + ?Sized>(
    mem: &M,
    ctx: &CpuContext,
    user_only: bool,
    seen: &mut HashSet<u64>,
    out: &mut Vec<(u64, &'static str)>,
    problems: &mut Vec<String>,
) {
    let mask = mm_core::paging::entry::phys_addr_mask(ctx.maxphyaddr);
    let mut stack = vec![(ctx.root().0, 4u8)];
    const NAMES: [&str; 5] = ["", "PT", "PD", "PDPT", "PML4"];
    while let Some((table, level)) = stack.pop() {
        if !seen.insert(table) {
            continue;
        }
        if seen.len() > TABLE_BUDGET {
            problems.push(format!("stopped after {TABLE_BUDGET} table pages: the tables loop or are absurdly large"));
            return;
        }
        out.push((table, NAMES[level as usize]));
        if level == 1 {
            continue;
        }
        let mut buf = [0u8; 4096];
        if mem.read(mm_core::addr::PhysAddr(table), &mut buf).is_err() {
            problems.push(format!("{} at {table:#x} is outside guest RAM", NAMES[level as usize]));
            continue;
        }
        let entries = if level == 4 && user_only { 256 } else { 512 };
        for i in 0..entries {
            let e = u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            let present = e & 1 != 0;
            let leaf = level < 4 && e & (1 << 7) != 0;
            if present && !leaf {
                stack.push((e & mask & !0xfff, level - 1));
            }
        }
    }
}

/// `pt-owner` for the tables under `roots`.
pub fn pt_owner(gs: &GuestState<'_>, base: &CpuContext, roots: &[Root]) -> CheckResult {
    let phys = GuestPhys(gs.memory());
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    let mut tables = Vec::new();
    let mut violations = Vec::new();
    let (mut boot, mut owned) = (0u64, 0u64);
    for r in roots {
        let start = tables.len();
        table_pages(&phys, &CpuContext { cr3: r.cr3, ..*base }, r.user_only, &mut seen, &mut tables, &mut problems);
        for &(pa, level) in &tables[start..] {
            let pfn = pa >> 12;
            match gs.block_of(pfn) {
                None if pfn < gs.desc.nr_pfns => boot += 1,
                None => violations.push(format!(
                    "{level} page {pa:#x} under {} has no page descriptor (pfn beyond nr_pfns {:#x})",
                    root_name(r),
                    gs.desc.nr_pfns
                )),
                Some(b) => match b.kind {
                    BlockKind::Allocated(mm_core::buddy::PageOwner::PageTable) => owned += 1,
                    BlockKind::Free | BlockKind::Pcp => violations.push(format!(
                        "{level} page {pa:#x} under {} is free memory ({}): the table was freed while still in use",
                        root_name(r),
                        free_desc(b)
                    )),
                    BlockKind::Slab { cache, .. } => violations.push(format!(
                        "{level} page {pa:#x} under {} is a slab page (cache id {}), not a page table",
                        root_name(r),
                        cache as i32 - 1
                    )),
                    BlockKind::Allocated(o) => violations.push(format!(
                        "{level} page {pa:#x} under {} is allocated with owner {o:?}, not PageTable",
                        root_name(r)
                    )),
                },
            }
        }
    }
    violations.extend(problems);
    CheckResult::new(
        Check::PtOwner,
        format!(
            "{} table pages under {} roots: {boot} boot-time (never buddy-managed; the guest counts {}), {owned} owned PageTable (the guest counts {})",
            tables.len(),
            roots.len(),
            gs.desc.boot_table_pages,
            gs.desc.table_pages
        ),
        violations,
    )
}

/// What the model predicts for one record: `Ok(None)` no fault,
/// `Ok(Some(error code))` a #PF, `Err` anything else (#GP, tables outside
/// RAM, a record the model cannot read).
pub fn predict<M: PhysMem + ?Sized>(mem: &M, base: &CpuContext, r: &AccessRecord) -> Result<Option<u32>, String> {
    let access = match r.access {
        0 => Access::Read,
        1 => Access::Write,
        2 => Access::Execute,
        a => return Err(format!("unknown access kind {a}")),
    };
    if r.cpl != 0 && r.cpl != 3 {
        return Err(format!("CPL {} is neither 0 nor 3", r.cpl));
    }
    let ctx = CpuContext { cr3: r.cr3, cpl: r.cpl, ..*base };
    match translate(mem, &ctx, VirtAddr(r.va), access) {
        Ok(_) => Ok(None),
        Err(Fault::PageFault(pf)) => Ok(Some(pf.error_code.0)),
        Err(f) => Err(f.to_string()),
    }
}

fn access_name(a: u8) -> &'static str {
    match a {
        0 => "read",
        1 => "write",
        2 => "fetch",
        _ => "access",
    }
}

/// `access`: every record against [`predict`].
pub fn access<M: PhysMem + ?Sized>(mem: &M, base: &CpuContext, records: &[AccessRecord]) -> CheckResult {
    if records.is_empty() {
        return CheckResult::new(
            Check::Access,
            "no access-rights records at this checkpoint (the guest publishes them at 'access-test-done', with selftest=access)".into(),
            vec![],
        );
    }
    let show = |e: Option<u32>| match e {
        None => "no fault".to_string(),
        Some(c) => format!("#PF {}", mm_core::paging::PfErrorCode(c)),
    };
    let mut violations = Vec::new();
    let mut faults = 0;
    for (i, r) in records.iter().enumerate() {
        let cpu = (r.faulted != 0).then_some(r.error_code);
        faults += cpu.is_some() as u32;
        let what =
            format!("record {i}: {} of {:#x} at CPL {} under CR3 {:#x}", access_name(r.access), r.va, r.cpl, r.cr3);
        match predict(mem, base, r) {
            Ok(model) if model == cpu => {}
            Ok(model) => {
                violations.push(format!("{what}: the CPU gave {}, the model predicts {}", show(cpu), show(model)))
            }
            Err(e) => violations.push(format!("{what}: the CPU gave {}, the model cannot predict it: {e}", show(cpu))),
        }
    }
    CheckResult::new(
        Check::Access,
        format!("{} recorded accesses ({faults} faulted) compared with the software MMU", records.len()),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_core::addr::PhysAddr;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000; 0x40_0000 maps
    /// a read-only supervisor page, 0x40_1000 a user rw nx page, 0x40_2000
    /// nothing.
    fn mem() -> GuestMemoryMmap {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let w = |a: u64, v: u64| m.write_obj(v, GuestAddress(a)).unwrap();
        w(0x1000, 0x2000 | 7);
        w(0x2000, 0x3000 | 7);
        w(0x3000 + 2 * 8, 0x4000 | 7);
        w(0x4000, 0x8000 | 1);
        w(0x4000 + 8, 0x9000 | 7 | 1 << 63);
        m
    }

    fn rec(va: u64, access: u8, faulted: bool, error_code: u32) -> AccessRecord {
        AccessRecord { va, cr3: 0x1000, access, cpl: 0, faulted: faulted as u8, pad: 0, error_code }
    }

    #[test]
    fn access_records_agreeing_pass_and_a_flipped_one_is_named() {
        let m = mem();
        let base = CpuContext::kernel(PhysAddr(0x1000));
        let good = vec![
            rec(0x40_0008, 0, false, 0),
            rec(0x40_0008, 1, true, 0x3),
            rec(0x40_0000, 2, false, 0),
            rec(0x40_1000, 2, true, 0x11),
            rec(0x40_2008, 0, true, 0x0),
            rec(0x40_2008, 1, true, 0x2),
        ];
        let r = access(&GuestPhys(&m), &base, &good);
        assert!(r.passed, "{r:?}");
        let mut bad = good.clone();
        bad[1].faulted = 0;
        let r = access(&GuestPhys(&m), &base, &bad);
        assert!(!r.passed);
        assert_eq!(r.violations.len(), 1);
        assert!(r.violations[0].starts_with("record 1: write of 0x400008"), "{:?}", r.violations);
        assert!(
            r.violations[0].contains("the CPU gave no fault, the model predicts #PF 0x3 [P W]"),
            "{:?}",
            r.violations
        );
        bad[1] = rec(0x40_0008, 1, true, 0x7);
        assert!(!access(&GuestPhys(&m), &base, &bad).passed, "a wrong error code is a disagreement");
        bad[1].access = 9;
        assert!(access(&GuestPhys(&m), &base, &bad).violations[0].contains("unknown access kind 9"));
        assert!(access(&GuestPhys(&m), &base, &[]).passed, "no records: nothing to disagree with");
    }

    #[test]
    fn table_pages_are_listed_once_and_loops_end() {
        let m = mem();
        let ctx = CpuContext::kernel(PhysAddr(0x1000));
        let (mut seen, mut out, mut problems) = (HashSet::new(), vec![], vec![]);
        table_pages(&GuestPhys(&m), &ctx, false, &mut seen, &mut out, &mut problems);
        let pas: Vec<u64> = out.iter().map(|t| t.0).collect();
        assert_eq!(pas, vec![0x1000, 0x2000, 0x3000, 0x4000]);
        // A self-loop and an entry outside RAM.
        m.write_obj(0x1000u64 | 3, GuestAddress(0x1008)).unwrap();
        m.write_obj(0x7_0000_0000u64 | 3, GuestAddress(0x1010)).unwrap();
        let (mut seen, mut out, mut problems) = (HashSet::new(), vec![], vec![]);
        table_pages(&GuestPhys(&m), &ctx, false, &mut seen, &mut out, &mut problems);
        assert_eq!(out.len(), 5, "{out:?}");
        assert!(problems[0].contains("outside guest RAM"), "{problems:?}");
    }
}
