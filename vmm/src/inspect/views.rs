//! The first-stage views over any root: the per-level walk of one address
//! (crash's `vtop`), every leaf (QEMU's `info tlb`) and merged ranges
//! (QEMU's `info mem`). Each view is a serialisable report plus a human
//! rendering; the walking itself is mm-core's (`walk_trace`, `mappings`).

use mm_core::addr::{Level, VirtAddr};
use mm_core::mem::PhysMem;
use mm_core::paging::mapper::{mappings, MappingError};
use mm_core::paging::walker::walk_trace;
use mm_core::paging::{CpuContext, Fault, FaultReason, PteFlags};
use serde::Serialize;
use std::fmt::Write as _;

/// Entry reads one `tlb`/`mem` view may spend: 16 GiB of 4 KiB mappings.
/// Past it the tables loop or share subtrees beyond any real kernel's.
pub const MAPPING_READ_BUDGET: u64 = 1 << 22;
/// At most this many leaves are listed by `tlb` (the count stays exact).
pub const TLB_LIST_MAX: usize = 1 << 20;

/// A translation one of the views made, kept for `--verify`'s cross-check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The CR3 walked.
    pub cr3: u64,
    /// The address.
    pub va: u64,
    /// What the walker said: the GPA, or `None` for any fault. Non-canonical
    /// addresses are not recorded (KVM_TRANSLATE does not model #GP).
    pub gpa: Option<u64>,
}

/// The structure name of a level in this paging mode ("PML4", "PT").
pub fn level_name(l: Level) -> &'static str {
    l.sdm_name()
}

/// Effective permissions in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PermsReport {
    /// Writable (R/W=1 at every level).
    pub writable: bool,
    /// User-accessible (U/S=1 at every level).
    pub user: bool,
    /// Not executable (XD at some level, with EFER.NXE).
    pub nx: bool,
    /// Global (leaf G bit).
    pub global: bool,
    /// Accessed (leaf A bit).
    pub accessed: bool,
    /// Dirty (leaf D bit).
    pub dirty: bool,
}

impl PermsReport {
    /// From walker-normalised flags.
    pub fn from_flags(f: PteFlags) -> Self {
        PermsReport {
            writable: f.contains(PteFlags::RW),
            user: f.contains(PteFlags::USER),
            nx: f.contains(PteFlags::NX),
            global: f.contains(PteFlags::GLOBAL),
            accessed: f.contains(PteFlags::ACCESSED),
            dirty: f.contains(PteFlags::DIRTY),
        }
    }

    /// `info mem` style: `urw-` plus G/A/D letters.
    pub fn short(&self) -> String {
        format!(
            "{}r{}{} {}{}{}",
            if self.user { 'u' } else { '-' },
            if self.writable { 'w' } else { '-' },
            if self.nx { '-' } else { 'x' },
            if self.global { 'G' } else { '-' },
            if self.accessed { 'A' } else { '-' },
            if self.dirty { 'D' } else { '-' },
        )
    }
}

/// One entry the walk read.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Structure name ("PML4", "PDPT", "PD", "PT").
    pub level: &'static str,
    /// Index in the table.
    pub index: u16,
    /// Guest-physical address of the entry.
    pub entry_addr: u64,
    /// The entry's value.
    pub entry: u64,
    /// The entry decoded (address and flag names).
    pub decoded: String,
}

/// How a walk ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum WalkOutcome {
    /// A page maps the address.
    Mapped {
        /// The guest-physical address.
        gpa: u64,
        /// Base of the page.
        frame: u64,
        /// Page size in bytes.
        page_size: u64,
        /// Level of the leaf.
        leaf_level: &'static str,
        /// Effective permissions over all levels.
        perms: PermsReport,
        /// Normalised effective flags, ptdump style.
        flags: String,
    },
    /// A #PF any access would take.
    PageFault {
        /// Level where the walk stopped.
        level: &'static str,
        /// Why ("not present", "reserved bit set (...)").
        reason: String,
        /// Whether it is a reserved-bit fault.
        reserved: bool,
    },
    /// The address is not canonical: #GP, nothing walked.
    NonCanonical,
    /// A table lies outside guest RAM.
    TableOutsideMemory {
        /// Level of the unreadable table.
        level: &'static str,
        /// Its base.
        table: u64,
        /// The entry that could not be read.
        entry_addr: u64,
    },
}

/// The `walk` view.
#[derive(Debug, Clone, Serialize)]
pub struct WalkReport {
    /// The address walked.
    pub va: u64,
    /// What the user called it (symbol, register), if not a number.
    pub label: Option<String>,
    /// The root walked.
    pub cr3: u64,
    /// Entries read, root first.
    pub steps: Vec<StepReport>,
    /// How it ended.
    pub outcome: WalkOutcome,
    /// Anything odd: a table used twice in one walk (a loop or a recursive
    /// mapping).
    pub notes: Vec<String>,
}

/// Walks `va` under `ctx` and records the translation in `log`.
pub fn walk_view<M: PhysMem + ?Sized>(
    mem: &M,
    ctx: &CpuContext,
    va: u64,
    label: Option<String>,
    log: &mut Vec<Observed>,
) -> WalkReport {
    let (trace, result) = walk_trace(mem, ctx, VirtAddr(va));
    let steps: Vec<StepReport> = trace
        .steps()
        .map(|s| StepReport {
            level: level_name(s.level),
            index: s.index,
            entry_addr: s.entry_pa.0,
            entry: s.entry.0,
            decoded: s.entry.to_string(),
        })
        .collect();
    let mut notes = Vec::new();
    let tables: Vec<u64> = steps.iter().map(|s| s.entry_addr & !0xfff).collect();
    for (i, t) in tables.iter().enumerate() {
        if let Some(j) = tables[..i].iter().position(|u| u == t) {
            notes.push(format!(
                "the table at {t:#x} is used as {} and again as {}: the tables loop (or map themselves recursively)",
                steps[j].level, steps[i].level
            ));
        }
    }
    let outcome = match result {
        Ok(t) => {
            log.push(Observed { cr3: ctx.cr3, va, gpa: Some(t.pa.0) });
            WalkOutcome::Mapped {
                gpa: t.pa.0,
                frame: t.frame().0,
                page_size: t.size.bytes(),
                leaf_level: level_name(t.size.leaf_level()),
                perms: PermsReport::from_flags(t.flags),
                flags: t.flags.to_string().trim_end().to_string(),
            }
        }
        Err(Fault::NonCanonical(_)) => WalkOutcome::NonCanonical,
        Err(Fault::PageFault(pf)) => {
            log.push(Observed { cr3: ctx.cr3, va, gpa: None });
            WalkOutcome::PageFault {
                level: level_name(pf.level),
                reason: pf.reason.to_string(),
                reserved: matches!(pf.reason, FaultReason::Reserved(_)),
            }
        }
        Err(Fault::TableOutsideMemory { level, table, entry_pa }) => {
            log.push(Observed { cr3: ctx.cr3, va, gpa: None });
            WalkOutcome::TableOutsideMemory { level: level_name(level), table: table.0, entry_addr: entry_pa.0 }
        }
    };
    WalkReport { va, label, cr3: ctx.cr3, steps, outcome, notes }
}

fn size_name(bytes: u64) -> String {
    crate::memory::human(bytes)
}

impl WalkReport {
    /// The table a person reads.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let label = self.label.as_ref().map(|l| format!(" ({l})")).unwrap_or_default();
        let _ = writeln!(s, "walk of {:#018x}{label}, CR3 {:#x}", self.va, self.cr3);
        for st in &self.steps {
            let _ = writeln!(s, "  {:<4}[{:3}] @ {:#011x}: {}", st.level, st.index, st.entry_addr, st.decoded);
        }
        match &self.outcome {
            WalkOutcome::Mapped { gpa, frame, page_size, leaf_level, perms, flags } => {
                let _ = writeln!(
                    s,
                    "  => {} page at GPA {frame:#x} (leaf in the {leaf_level}); address -> GPA {gpa:#x}",
                    size_name(*page_size)
                );
                let _ = writeln!(
                    s,
                    "  effective: {} {} {}  [{flags}]",
                    if perms.user { "user" } else { "supervisor" },
                    if perms.writable { "read-write" } else { "read-only" },
                    if perms.nx { "no-execute" } else { "executable" },
                );
            }
            WalkOutcome::PageFault { level, reason, .. } => {
                let _ = writeln!(s, "  => stops at the {level}: {reason} (any access takes #PF)");
            }
            WalkOutcome::NonCanonical => {
                let _ = writeln!(
                    s,
                    "  => not canonical: bits 63..47 must all equal bit 47; any access takes #GP and nothing is walked"
                );
            }
            WalkOutcome::TableOutsideMemory { level, table, entry_addr } => {
                let _ = writeln!(
                    s,
                    "  => stops: the {level} at GPA {table:#x} is outside guest RAM (entry at {entry_addr:#x}); the tables point at nothing"
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }
}

/// One leaf of the `tlb` view.
#[derive(Debug, Clone, Serialize)]
pub struct TlbEntry {
    /// First virtual address.
    pub va: u64,
    /// Base physical address.
    pub pa: u64,
    /// Page size in bytes.
    pub size: u64,
    /// Effective permissions.
    pub perms: PermsReport,
    /// The leaf entry.
    pub leaf: u64,
}

/// A problem found while listing mappings (the subtree was skipped).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum MappingProblem {
    /// A table outside RAM.
    TableOutsideMemory {
        /// Level.
        level: &'static str,
        /// Table base.
        table: u64,
        /// First address it would map.
        va: u64,
    },
    /// A present entry with reserved bits.
    Reserved {
        /// First address it covers.
        va: u64,
        /// Level.
        level: &'static str,
        /// The entry.
        entry: u64,
        /// Which bits.
        reason: String,
    },
    /// The read budget ran out: the listing is incomplete.
    BudgetExhausted {
        /// Entries read.
        reads: u64,
    },
}

impl MappingProblem {
    fn render(&self) -> String {
        match self {
            MappingProblem::TableOutsideMemory { level, table, va } => {
                format!("{level} at GPA {table:#x} (for addresses from {va:#x}) is outside guest RAM; skipped")
            }
            MappingProblem::Reserved { va, level, entry, reason } => {
                format!("{level} entry {entry:#x} for {va:#x} has a reserved bit ({reason}); any access faults; skipped")
            }
            MappingProblem::BudgetExhausted { reads } => format!(
                "stopped after reading {reads} entries: the tables loop or share subtrees beyond any real kernel's; the list is incomplete"
            ),
        }
    }
}

/// All leaves of one root, and the problems met.
#[derive(Debug, Clone, Serialize)]
pub struct MappingsReport {
    /// The root.
    pub cr3: u64,
    /// Number of leaves (exact, even when `entries` is truncated).
    pub count: u64,
    /// Bytes mapped.
    pub mapped_bytes: u64,
    /// The leaves in address order (at most [`TLB_LIST_MAX`]).
    pub entries: Vec<TlbEntry>,
    /// Whether `entries` was cut at [`TLB_LIST_MAX`].
    pub truncated: bool,
    /// Skipped subtrees.
    pub problems: Vec<MappingProblem>,
    /// The leaves merged as `info mem` shows them (complete even when
    /// `entries` is truncated).
    #[serde(skip)]
    merged: Vec<MemRange>,
}

/// Lists every leaf under `ctx`'s root (bounded by [`MAPPING_READ_BUDGET`]).
pub fn collect_mappings<M: PhysMem + ?Sized>(mem: &M, ctx: &CpuContext) -> MappingsReport {
    let mut r = MappingsReport {
        cr3: ctx.cr3,
        count: 0,
        mapped_bytes: 0,
        entries: Vec::new(),
        truncated: false,
        problems: vec![],
        merged: vec![],
    };
    for m in mappings(mem, ctx).budget(MAPPING_READ_BUDGET) {
        match m {
            Ok(m) => {
                r.count += 1;
                r.mapped_bytes = r.mapped_bytes.saturating_add(m.size.bytes());
                let e = TlbEntry {
                    va: m.va.0,
                    pa: m.pa.0,
                    size: m.size.bytes(),
                    perms: PermsReport::from_flags(m.flags),
                    leaf: m.leaf.0,
                };
                merge_into(&mut r.merged, &e);
                if r.entries.len() < TLB_LIST_MAX {
                    r.entries.push(e);
                } else {
                    r.truncated = true;
                }
            }
            Err(MappingError::TableOutsideMemory { level, table, va }) => r
                .problems
                .push(MappingProblem::TableOutsideMemory { level: level_name(level), table: table.0, va: va.0 }),
            Err(MappingError::Reserved { va, level, entry, reason }) => r.problems.push(MappingProblem::Reserved {
                va: va.0,
                level: level_name(level),
                entry: entry.0,
                reason: format!("{reason:?}"),
            }),
            Err(MappingError::BudgetExhausted) => {
                r.problems.push(MappingProblem::BudgetExhausted { reads: MAPPING_READ_BUDGET })
            }
        }
    }
    r
}

impl MappingsReport {
    /// `info tlb`: one line per leaf.
    pub fn render_tlb(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "info tlb, CR3 {:#x}: {} leaves mapping {}",
            self.cr3,
            self.count,
            crate::memory::human(self.mapped_bytes).replace("bytes", "B")
        );
        let _ = writeln!(s, "  {:<18}  {:<14}  {:>7}  perms", "virtual", "physical", "size");
        for e in &self.entries {
            let _ = writeln!(s, "  {:016x}: {:014x}  {:>7}  {}", e.va, e.pa, short_size(e.size), e.perms.short());
        }
        if self.truncated {
            let _ = writeln!(s, "  ... list cut after {TLB_LIST_MAX} leaves");
        }
        for p in &self.problems {
            let _ = writeln!(s, "  problem: {}", p.render());
        }
        s
    }

    /// `info mem`: the leaves merged into ranges.
    pub fn ranges(&self) -> MemReport {
        MemReport { cr3: self.cr3, ranges: self.merged.clone(), problems: self.problems.clone() }
    }
}

fn short_size(b: u64) -> &'static str {
    match b {
        0x1000 => "4K",
        0x20_0000 => "2M",
        0x4000_0000 => "1G",
        _ => "?",
    }
}

/// One merged range of the `mem` view.
#[derive(Debug, Clone, Serialize)]
pub struct MemRange {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Writable.
    pub writable: bool,
    /// User-accessible.
    pub user: bool,
    /// Not executable.
    pub nx: bool,
    /// Global.
    pub global: bool,
    /// Leaves in the range.
    pub pages: u64,
    /// Of which accessed.
    pub accessed: u64,
    /// Of which dirty.
    pub dirty: u64,
    /// Page sizes used (bytes).
    pub page_sizes: Vec<u64>,
}

/// The `mem` view.
#[derive(Debug, Clone, Serialize)]
pub struct MemReport {
    /// The root.
    pub cr3: u64,
    /// Ranges in address order.
    pub ranges: Vec<MemRange>,
    /// Problems met while listing.
    pub problems: Vec<MappingProblem>,
}

fn merge_into(ranges: &mut Vec<MemRange>, e: &TlbEntry) {
    let p = &e.perms;
    let end = e.va.wrapping_add(e.size);
    if let Some(last) = ranges.last_mut() {
        if last.end == e.va && (last.writable, last.user, last.nx, last.global) == (p.writable, p.user, p.nx, p.global)
        {
            last.end = end;
            last.pages += 1;
            last.accessed += p.accessed as u64;
            last.dirty += p.dirty as u64;
            if !last.page_sizes.contains(&e.size) {
                last.page_sizes.push(e.size);
            }
            return;
        }
    }
    ranges.push(MemRange {
        start: e.va,
        end,
        writable: p.writable,
        user: p.user,
        nx: p.nx,
        global: p.global,
        pages: 1,
        accessed: p.accessed as u64,
        dirty: p.dirty as u64,
        page_sizes: vec![e.size],
    });
}

impl MemReport {
    /// `info mem`: `start-end size perms`, with A/D counts.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "info mem, CR3 {:#x}: {} ranges", self.cr3, self.ranges.len());
        for r in &self.ranges {
            let sizes: Vec<&str> = r.page_sizes.iter().map(|&b| short_size(b)).collect();
            let _ = writeln!(
                s,
                "  {:016x}-{:016x} {:016x} {}r{}{} {} pages:{} ({}) accessed:{} dirty:{}",
                r.start,
                r.end,
                r.end.wrapping_sub(r.start),
                if r.user { 'u' } else { '-' },
                if r.writable { 'w' } else { '-' },
                if r.nx { '-' } else { 'x' },
                if r.global { "G" } else { "-" },
                r.pages,
                sizes.join("+"),
                r.accessed,
                r.dirty
            );
        }
        for p in &self.problems {
            let _ = writeln!(s, "  problem: {}", p.render());
        }
        s
    }
}

/// The table pages reachable from `ctx`'s root: the root, plus the tables
/// each leaf's walk passes through (one walk per 2 MiB of address space,
/// since the tables above a leaf are shared by its 2 MiB neighbours).
/// Subtrees without any leaf are not found.
pub fn table_pages<M: PhysMem + ?Sized>(mem: &M, ctx: &CpuContext, leaves: &MappingsReport) -> Vec<u64> {
    let mut pages = vec![ctx.root().0];
    let mut last_region = None;
    for e in &leaves.entries {
        let region = e.va >> 21;
        if last_region == Some(region) {
            continue;
        }
        last_region = Some(region);
        let (trace, _) = walk_trace(mem, ctx, VirtAddr(e.va));
        pages.extend(trace.steps().map(|s| s.entry_pa.0 & !0xfff));
    }
    pages.sort_unstable();
    pages.dedup();
    pages
}

/// The `cpu` view: the registers translation depends on.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// RIP.
    pub rip: u64,
    /// Its symbol, if any.
    pub rip_symbol: String,
    /// RSP.
    pub rsp: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// Current privilege level.
    pub cpl: u8,
    /// "4-level paging", "5-level paging" or "no paging".
    pub paging: &'static str,
}

impl CpuReport {
    /// One line.
    pub fn render(&self) -> String {
        format!(
            "cpu: RIP {:#x} ({}) RSP {:#x} CPL {} CR0 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x} ({})\n",
            self.rip, self.rip_symbol, self.rsp, self.cpl, self.cr0, self.cr3, self.cr4, self.efer, self.paging
        )
    }
}

/// A context for `cr3` with everything else as in `base`.
pub fn with_cr3(base: &CpuContext, cr3: Option<u64>) -> CpuContext {
    match cr3 {
        Some(c) => CpuContext { cr3: c, ..*base },
        None => *base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::GuestPhys;
    use mm_core::addr::PhysAddr;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// Boot-table-like layout: PML4 0x1000, PDPT 0x2000 at -2 GiB, PD 0x3000
    /// with 2 MiB pages, plus one 4 KiB page at 0x4000_0000 via PT 0x5000.
    fn mem() -> (GuestMemoryMmap, CpuContext) {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let w = |a: u64, v: u64| m.write_obj(v, GuestAddress(a)).unwrap();
        w(0x1000 + 511 * 8, 0x2000 | 3);
        w(0x2000 + 510 * 8, 0x3000 | 3);
        w(0x3000, 0x83);
        w(0x3000 + 8, 0x20_0000 | 0x83 | 0x60);
        w(0x1000, 0x6000 | 7);
        w(0x6000 + 8, 0x7000 | 7);
        w(0x7000, 0x5000 | 7);
        w(0x5000, 0x9000 | 5 | (1 << 63));
        (m, CpuContext::kernel(PhysAddr(0x1000)))
    }

    #[test]
    fn walk_reports_every_level_and_the_page() {
        let (m, ctx) = mem();
        let mut log = vec![];
        let r = walk_view(&GuestPhys(&m), &ctx, 0xffff_ffff_8020_0123, Some("_start".into()), &mut log);
        assert_eq!(r.steps.len(), 3);
        assert_eq!(r.steps[0].level, "PML4");
        assert_eq!(r.steps[0].entry_addr, 0x1ff8);
        assert!(matches!(r.outcome, WalkOutcome::Mapped { gpa: 0x20_0123, page_size: 0x20_0000, .. }));
        assert_eq!(log, vec![Observed { cr3: 0x1000, va: 0xffff_ffff_8020_0123, gpa: Some(0x20_0123) }]);
        let text = r.render();
        assert!(text.contains("2 MiB page at GPA 0x200000"), "{text}");
        assert!(text.contains("supervisor read-write executable"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["outcome"]["result"], "mapped");
    }

    #[test]
    fn walk_stops_clearly() {
        let (m, ctx) = mem();
        let mut log = vec![];
        let r = walk_view(&GuestPhys(&m), &ctx, 0xffff_8000_0000_0000, None, &mut log);
        assert!(matches!(r.outcome, WalkOutcome::PageFault { level: "PML4", .. }), "{r:?}");
        let r = walk_view(&GuestPhys(&m), &ctx, 0x0000_8000_0000_0000, None, &mut log);
        assert!(matches!(r.outcome, WalkOutcome::NonCanonical));
        assert_eq!(log.len(), 1, "non-canonical walks are not cross-checked");
        let far = with_cr3(&ctx, Some(0x1_0000_0000));
        let r = walk_view(&GuestPhys(&m), &far, 0, None, &mut log);
        assert!(matches!(r.outcome, WalkOutcome::TableOutsideMemory { level: "PML4", .. }), "{r:?}");
    }

    #[test]
    fn a_self_referencing_table_is_named_a_loop() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        m.write_obj(0x1000u64 | 3, GuestAddress(0x1000)).unwrap();
        let r = walk_view(&GuestPhys(&m), &CpuContext::kernel(PhysAddr(0x1000)), 0x10, None, &mut vec![]);
        assert!(matches!(r.outcome, WalkOutcome::Mapped { gpa: 0x1010, .. }));
        assert!(r.notes.iter().any(|n| n.contains("loop")), "{r:?}");
    }

    #[test]
    fn tlb_and_mem_list_and_merge() {
        let (m, ctx) = mem();
        let r = collect_mappings(&GuestPhys(&m), &ctx);
        assert_eq!(r.count, 3);
        assert_eq!(r.entries[0].va, 0x4000_0000);
        assert!(r.entries[0].perms.user && r.entries[0].perms.nx && !r.entries[0].perms.writable);
        let mem = r.ranges();
        assert_eq!(mem.ranges.len(), 2);
        assert_eq!((mem.ranges[1].start, mem.ranges[1].end), (0xffff_ffff_8000_0000, 0xffff_ffff_8040_0000));
        assert_eq!((mem.ranges[1].accessed, mem.ranges[1].dirty), (1, 1));
        assert!(mem.render().contains("ffffffff80000000-ffffffff80400000 0000000000400000 -rwx"), "{}", mem.render());
        assert!(r.render_tlb().contains("ffffffff80200000: 00000000200000       2M"), "{}", r.render_tlb());
        let tables = table_pages(&GuestPhys(&m), &ctx, &r);
        assert_eq!(tables, vec![0x1000, 0x2000, 0x3000, 0x5000, 0x6000, 0x7000]);
    }

    #[test]
    fn looping_tables_exhaust_the_budget_not_the_host() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        for i in 0..512u64 {
            m.write_obj(0x1000u64 | 3, GuestAddress(0x1000 + 8 * i)).unwrap();
        }
        let r = collect_mappings(&GuestPhys(&m), &CpuContext::kernel(PhysAddr(0x1000)));
        assert!(matches!(r.problems.last(), Some(MappingProblem::BudgetExhausted { .. })), "{:?}", r.problems);
        let mem = r.ranges();
        assert_eq!(mem.ranges.len(), 1, "one contiguous rw range");
    }
}
