//! The first-stage views over any root: the per-level walk of one address
//! (crash's `vtop`), every leaf (QEMU's `info tlb`) and merged ranges
//! (QEMU's `info mem`). The walking itself is mm-core's (`walk_trace`,
//! `mappings`).
//!
//! Listings stream: [`for_each_leaf`] hands each leaf to a consumer and
//! keeps only a summary, so a guest whose tables map billions of pages
//! (an alias tree of four pages does) costs the host time bounded by the
//! read budget (`--budget`), never memory. A listing the budget cut short
//! says so ([`Listing::complete`]), and whatever consumes it (a view, a
//! check) must say so too.
//!
//! Levels are named as Linux names them (PGD, P4D, PUD, PMD, PTE; under
//! 4-level paging the root is the PGD and P4D is folded), with the SDM's
//! structure name alongside where it helps.

use mm_core::addr::{Level, PhysAddr, VirtAddr};
use mm_core::mem::PhysMem;
use mm_core::paging::entry::Pte;
use mm_core::paging::mapper::{mappings, MappingError};
use mm_core::paging::swap::SwapEntry;
use mm_core::paging::walker::walk_trace;
use mm_core::paging::{CpuContext, Fault, FaultReason, PteFlags};
use serde::{Serialize, Serializer};
use std::fmt::Write as _;
use std::io::{self, Write};

/// Entry reads one listing of one root may spend unless `--budget` says
/// otherwise: 16 Mi entries, above any real kernel's tables (64 GiB of
/// 4 KiB pages is 16 Mi leaves). Hostile tables (loops, shared subtrees)
/// stop there, and whatever was being checked fails as incomplete.
pub const DEFAULT_BUDGET: u64 = 1 << 24;
/// At most this many problems are kept per listing (the rest are counted).
pub const PROBLEMS_MAX: usize = 32;
/// At most this many violations are kept per check (the rest are counted).
pub const VIOLATIONS_MAX: usize = 256;

/// Serialises a 64-bit quantity as a `"0x..."` string: JSON numbers lose
/// bits above 2^53 in jq and JavaScript (a PTE with NX set would).
pub fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// [`hex`] for an optional value (`null` when absent).
pub fn hex_opt<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => hex(v, s),
        None => s.serialize_none(),
    }
}

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

/// Linux's name of a level under `ctx`'s paging mode: the root is the PGD
/// (under 4-level paging Linux folds the P4D into it).
pub fn level_name(l: Level, ctx: &CpuContext) -> &'static str {
    if l == ctx.root_level() {
        "PGD"
    } else {
        l.linux_name()
    }
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
}

/// One entry the walk read.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Linux's level name ("PGD", "PUD", "PMD", "PTE").
    pub level: &'static str,
    /// The SDM's structure name ("PML4", "PDPT", "PD", "PT").
    pub sdm_level: &'static str,
    /// Index in the table.
    pub index: u16,
    /// Guest-physical address of the entry.
    #[serde(serialize_with = "hex")]
    pub entry_addr: u64,
    /// The entry's value.
    #[serde(serialize_with = "hex")]
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
        #[serde(serialize_with = "hex")]
        gpa: u64,
        /// Base of the page.
        #[serde(serialize_with = "hex")]
        frame: u64,
        /// Page size in bytes.
        #[serde(serialize_with = "hex")]
        page_size: u64,
        /// Level of the leaf (Linux's name).
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
        /// A not-present PTE holding a swap entry (Linux's x86 encoding):
        /// where the page went.
        #[serde(skip_serializing_if = "Option::is_none")]
        swapped: Option<SwappedReport>,
    },
    /// The address is not canonical: #GP, nothing walked.
    NonCanonical,
    /// A table lies outside guest RAM.
    TableOutsideMemory {
        /// Level of the unreadable table.
        level: &'static str,
        /// Its base.
        #[serde(serialize_with = "hex")]
        table: u64,
        /// The entry that could not be read.
        #[serde(serialize_with = "hex")]
        entry_addr: u64,
    },
}

/// A swap entry found in a not-present PTE.
#[derive(Debug, Clone, Serialize)]
pub struct SwappedReport {
    /// The swap area (`swp_type`).
    #[serde(rename = "type")]
    pub ty: u8,
    /// The slot in it (`swp_offset`).
    #[serde(serialize_with = "hex")]
    pub offset: u64,
}

/// The `walk` view.
#[derive(Debug, Clone, Serialize)]
pub struct WalkReport {
    /// The address walked.
    #[serde(serialize_with = "hex")]
    pub va: u64,
    /// What the user called it (symbol, register), if not a number.
    pub label: Option<String>,
    /// The root walked.
    #[serde(serialize_with = "hex")]
    pub cr3: u64,
    /// Entries read, root first.
    pub steps: Vec<StepReport>,
    /// How it ended.
    pub outcome: WalkOutcome,
    /// Anything odd: a table used twice in one walk (a loop or a recursive
    /// mapping).
    pub notes: Vec<String>,
    /// The page descriptor of the frame (crash's `vtop` ends with it), when
    /// the guest publishes its descriptor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<PageReport>,
}

/// A frame's page descriptor (`struct page`), as the walk view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PageReport {
    /// The frame number.
    #[serde(serialize_with = "hex")]
    pub pfn: u64,
    /// Where its descriptor lives (vmemmap).
    #[serde(serialize_with = "hex")]
    pub desc_va: u64,
    /// The flags word.
    pub flags: u16,
    /// Flag names (buddy, head, slab, pcp...).
    pub flag_names: Vec<&'static str>,
    /// Buddy order (of a head).
    pub order: u8,
    /// Reference count.
    pub refcount: u32,
    /// Owner recorded by the allocator.
    pub owner: String,
}

fn step_report(s: &mm_core::paging::walker::WalkStep, ctx: &CpuContext) -> StepReport {
    StepReport {
        level: level_name(s.level, ctx),
        sdm_level: s.level.sdm_name(),
        index: s.index,
        entry_addr: s.entry_pa.0,
        entry: s.entry.0,
        decoded: s.entry.to_string(),
    }
}

/// The entries above a table that could not be read: mm-core's walker
/// reports no trace then, but the user needs to see which entry pointed
/// there. Reads the upper levels again, stopping at `bad_table`.
fn upper_steps<M: PhysMem + ?Sized>(mem: &M, ctx: &CpuContext, va: u64, bad_table: u64) -> Vec<StepReport> {
    let mut steps = Vec::new();
    let mut table = ctx.root().0;
    let mut level = ctx.root_level();
    while table != bad_table {
        let index = ((va >> level.shift()) & 0x1ff) as u16;
        let entry_pa = table + 8 * index as u64;
        let Ok(e) = mem.read_u64(PhysAddr(entry_pa)).map(Pte) else { break };
        steps.push(StepReport {
            level: level_name(level, ctx),
            sdm_level: level.sdm_name(),
            index,
            entry_addr: entry_pa,
            entry: e.0,
            decoded: e.to_string(),
        });
        let Some(lower) = level.next_lower() else { break };
        if !e.is_present() || e.is_leaf_at(level) {
            break;
        }
        table = e.addr(ctx.maxphyaddr).0;
        level = lower;
    }
    steps
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
    let mut steps: Vec<StepReport> = trace.steps().map(|s| step_report(&s, ctx)).collect();
    let outcome = match result {
        Ok(t) => {
            log.push(Observed { cr3: ctx.cr3, va, gpa: Some(t.pa.0) });
            WalkOutcome::Mapped {
                gpa: t.pa.0,
                frame: t.frame().0,
                page_size: t.size.bytes(),
                leaf_level: level_name(t.size.leaf_level(), ctx),
                perms: PermsReport::from_flags(t.flags),
                flags: t.flags.to_string().trim_end().to_string(),
            }
        }
        Err(Fault::NonCanonical(_)) => WalkOutcome::NonCanonical,
        Err(Fault::PageFault(pf)) => {
            log.push(Observed { cr3: ctx.cr3, va, gpa: None });
            // A non-zero not-present PTE is a swap entry (the only kind of
            // non-present entry the guest writes).
            let swapped = trace
                .steps()
                .last()
                .filter(|st| matches!(pf.reason, FaultReason::NotPresent) && st.level == Level::Pte)
                .and_then(|st| SwapEntry::from_pte(st.entry))
                .map(|e| SwappedReport { ty: e.ty(), offset: e.offset() });
            WalkOutcome::PageFault {
                level: level_name(pf.level, ctx),
                reason: pf.reason.to_string(),
                reserved: matches!(pf.reason, FaultReason::Reserved(_)),
                swapped,
            }
        }
        Err(Fault::TableOutsideMemory { level, table, entry_pa }) => {
            log.push(Observed { cr3: ctx.cr3, va, gpa: None });
            steps = upper_steps(mem, ctx, va, table.0);
            WalkOutcome::TableOutsideMemory { level: level_name(level, ctx), table: table.0, entry_addr: entry_pa.0 }
        }
    };
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
    WalkReport { va, label, cr3: ctx.cr3, steps, outcome, notes, page: None }
}

fn size_name(bytes: u64) -> String {
    crate::memory::human(bytes)
}

impl WalkReport {
    /// The table a person reads, crash's `vtop` style: the address, each
    /// level's entry, the page, and the frame's page descriptor.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let label = self.label.as_ref().map(|l| format!(" ({l})")).unwrap_or_default();
        let _ = writeln!(s, "walk of {:#018x}{label}, CR3 {:#x}", self.va, self.cr3);
        for st in &self.steps {
            let _ = writeln!(
                s,
                "  {:<4}[{:3}] @ {:#011x}: {}   ({})",
                st.level, st.index, st.entry_addr, st.decoded, st.sdm_level
            );
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
            WalkOutcome::PageFault { level, reason, swapped, .. } => {
                let _ = writeln!(s, "  => stops at the {level}: {reason} (any access takes #PF)");
                if let Some(sw) = swapped {
                    let _ = writeln!(
                        s,
                        "  => swapped: type {} offset {:#x} (the page is in swap slot {:#x}; a fault reads it back)",
                        sw.ty, sw.offset, sw.offset
                    );
                }
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
                    "  => stops: the {level} table at GPA {table:#x} is outside guest RAM (entry at {entry_addr:#x}); the tables point at nothing"
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        if let Some(p) = &self.page {
            let _ = writeln!(s, "\n        PAGE          PHYSICAL      FLAGS  ORDER  REFCOUNT  OWNER");
            let _ = writeln!(
                s,
                "  {:016x}  {:012x}  {:>5x}  {:>5}  {:>8}  {}  [{}]",
                p.desc_va,
                p.pfn << 12,
                p.flags,
                p.order,
                p.refcount,
                p.owner,
                p.flag_names.join(" ")
            );
        }
        s
    }
}

/// One leaf of the `tlb` view.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TlbEntry {
    /// First virtual address.
    #[serde(serialize_with = "hex")]
    pub va: u64,
    /// Base physical address.
    #[serde(serialize_with = "hex")]
    pub pa: u64,
    /// Page size in bytes.
    #[serde(serialize_with = "hex")]
    pub size: u64,
    /// Effective permissions.
    pub perms: PermsReport,
    /// The leaf entry.
    #[serde(serialize_with = "hex")]
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
        #[serde(serialize_with = "hex")]
        table: u64,
        /// First address it would map.
        #[serde(serialize_with = "hex")]
        va: u64,
    },
    /// A present entry with reserved bits.
    Reserved {
        /// First address it covers.
        #[serde(serialize_with = "hex")]
        va: u64,
        /// Level.
        level: &'static str,
        /// The entry.
        #[serde(serialize_with = "hex")]
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
    /// In words.
    pub fn render(&self) -> String {
        match self {
            MappingProblem::TableOutsideMemory { level, table, va } => {
                format!("{level} table at GPA {table:#x} (for addresses from {va:#x}) is outside guest RAM; skipped")
            }
            MappingProblem::Reserved { va, level, entry, reason } => {
                format!("{level} entry {entry:#x} for {va:#x} has a reserved bit ({reason}); any access faults; skipped")
            }
            MappingProblem::BudgetExhausted { reads } => format!(
                "stopped after reading {reads} entries (--budget {reads}): the tables loop or share subtrees beyond any real kernel's; the listing is incomplete"
            ),
        }
    }
}

/// What one pass over a root's leaves examined. The leaves themselves went
/// to the consumer; only counts and the first problems are kept.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The root (written by the view before the leaves, so not again).
    #[serde(skip)]
    pub cr3: u64,
    /// Leaves examined.
    pub count: u64,
    /// Bytes they map.
    #[serde(serialize_with = "hex")]
    pub mapped_bytes: u64,
    /// Whether every entry under the root was read (false: the budget ran
    /// out and anything after the last leaf was not examined).
    pub complete: bool,
    /// Skipped subtrees, the first [`PROBLEMS_MAX`].
    pub problems: Vec<MappingProblem>,
    /// Problems met beyond those listed.
    pub problems_omitted: u64,
}

impl Listing {
    /// Why a check over this listing could not complete, if it could not.
    pub fn incomplete(&self) -> Option<String> {
        let reads = self.problems.iter().find_map(|p| match p {
            MappingProblem::BudgetExhausted { reads } => Some(*reads),
            _ => None,
        });
        (!self.complete).then(|| {
            format!(
                "the listing of CR3 {:#x} stopped after {} entry reads (--budget) and {} leaves: the rest was not examined; raise --budget to examine it all",
                self.cr3,
                reads.unwrap_or(0),
                self.count
            )
        })
    }

    fn render_problems(&self, out: &mut dyn Write) -> io::Result<()> {
        for p in &self.problems {
            writeln!(out, "  problem: {}", p.render())?;
        }
        if self.problems_omitted > 0 {
            writeln!(out, "  ... and {} more problems", self.problems_omitted)?;
        }
        Ok(())
    }
}

/// Hands every leaf under `ctx`'s root to `f`, in address order, reading
/// at most `budget` entries; returns what was examined.
pub fn for_each_leaf<M: PhysMem + ?Sized>(
    mem: &M,
    ctx: &CpuContext,
    budget: u64,
    mut f: impl FnMut(&TlbEntry),
) -> Listing {
    let mut l =
        Listing { cr3: ctx.cr3, count: 0, mapped_bytes: 0, complete: true, problems: vec![], problems_omitted: 0 };
    let problem = |l: &mut Listing, p: MappingProblem| {
        if l.problems.len() < PROBLEMS_MAX {
            l.problems.push(p);
        } else {
            l.problems_omitted += 1;
        }
    };
    for m in mappings(mem, ctx).budget(budget) {
        match m {
            Ok(m) => {
                l.count += 1;
                l.mapped_bytes = l.mapped_bytes.saturating_add(m.size.bytes());
                f(&TlbEntry {
                    va: m.va.0,
                    pa: m.pa.0,
                    size: m.size.bytes(),
                    perms: PermsReport::from_flags(m.flags),
                    leaf: m.leaf.0,
                });
            }
            Err(MappingError::TableOutsideMemory { level, table, va }) => problem(
                &mut l,
                MappingProblem::TableOutsideMemory { level: level_name(level, ctx), table: table.0, va: va.0 },
            ),
            Err(MappingError::Reserved { va, level, entry, reason }) => problem(
                &mut l,
                MappingProblem::Reserved {
                    va: va.0,
                    level: level_name(level, ctx),
                    entry: entry.0,
                    reason: format!("{reason:?}"),
                },
            ),
            Err(MappingError::BudgetExhausted) => {
                l.complete = false;
                // Always kept: it is what makes the listing incomplete.
                l.problems.push(MappingProblem::BudgetExhausted { reads: budget });
            }
        }
    }
    l
}

/// How a streamed view is written: lines for people, or one JSON object
/// on one line for machines.
#[derive(Debug, Clone, Copy)]
pub enum Format<'a> {
    /// Text.
    Text,
    /// `{"checkpoint":NAME,"view":VIEW,"data":{...}}` on one line.
    Json {
        /// The checkpoint's name.
        checkpoint: &'a str,
    },
}

/// Writes `{"checkpoint":..,"view":..,"data":{` + `fields` (already JSON
/// `"key":value` pairs, no trailing comma).
fn json_open(out: &mut dyn Write, checkpoint: &str, view: &str, fields: &str) -> io::Result<()> {
    let cp = serde_json::to_string(checkpoint).unwrap_or_else(|_| "\"?\"".into());
    write!(out, "{{\"checkpoint\":{cp},\"view\":\"{view}\",\"data\":{{{fields}")
}

/// Closes what [`json_open`] opened with the fields of `tail` (an object).
fn json_close<T: Serialize>(out: &mut dyn Write, tail: &T) -> io::Result<()> {
    let t = serde_json::to_string(tail).map_err(io::Error::other)?;
    let inner = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or("");
    if inner.is_empty() {
        writeln!(out, "}}}}")
    } else {
        writeln!(out, ",{inner}}}}}")
    }
}

/// QEMU's `info tlb` flag letters for a leaf entry: NX, global, large
/// page, dirty, accessed, cache-disable, write-through, user, writable.
pub fn qemu_tlb_flags(leaf: u64) -> String {
    let bit = |n: u32, c: char| if leaf & (1 << n) != 0 { c } else { '-' };
    [
        bit(63, 'X'),
        bit(8, 'G'),
        bit(7, 'P'),
        bit(6, 'D'),
        bit(5, 'A'),
        bit(4, 'C'),
        bit(3, 'T'),
        bit(2, 'U'),
        bit(1, 'W'),
    ]
    .iter()
    .collect()
}

/// The `tlb` view, streamed: one line per leaf as QEMU's `info tlb` prints
/// them (`VA: PA FLAGS`, the flags of the leaf entry itself), then a
/// summary; or one JSON object whose `entries` array is written as the
/// leaves come.
pub fn tlb_view<M: PhysMem + ?Sized>(
    mem: &M,
    ctx: &CpuContext,
    budget: u64,
    format: Format<'_>,
    out: &mut dyn Write,
) -> io::Result<Listing> {
    let mut err = None;
    let mut first = true;
    let mut put = |r: io::Result<()>| {
        if let Err(e) = r {
            err.get_or_insert(e);
        }
    };
    let listing = match format {
        Format::Text => {
            put(writeln!(out, "info tlb, CR3 {:#x}:", ctx.cr3));
            let l = for_each_leaf(mem, ctx, budget, |e| {
                put(writeln!(out, "{:016x}: {:016x} {}", e.va, e.pa, qemu_tlb_flags(e.leaf)))
            });
            put(writeln!(
                out,
                "  {} leaves mapping {}{}",
                l.count,
                crate::memory::human(l.mapped_bytes).replace("bytes", "B"),
                if l.complete { "" } else { " (incomplete: the budget ran out)" }
            ));
            put(l.render_problems(out));
            l
        }
        Format::Json { checkpoint } => {
            put(json_open(out, checkpoint, "tlb", &format!("\"cr3\":\"{:#x}\",\"entries\":[", ctx.cr3)));
            let l = for_each_leaf(mem, ctx, budget, |e| {
                if !first {
                    put(out.write_all(b","));
                }
                first = false;
                put(serde_json::to_writer(&mut *out, e).map_err(io::Error::other));
            });
            put(out.write_all(b"]"));
            put(json_close(out, &l));
            l
        }
    };
    match err {
        Some(e) => Err(e),
        None => Ok(listing),
    }
}

fn size_bit(size: u64) -> u8 {
    match size {
        0x1000 => 1,
        0x20_0000 => 2,
        _ => 4,
    }
}

fn size_names(bits: u8) -> Vec<&'static str> {
    [(1, "4K"), (2, "2M"), (4, "1G")].iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect()
}

/// One merged range of the `mem` view.
#[derive(Debug, Clone, Serialize)]
pub struct MemRange {
    /// First address.
    #[serde(serialize_with = "hex")]
    pub start: u64,
    /// One past the last address.
    #[serde(serialize_with = "hex")]
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
    /// Page sizes used ("4K", "2M", "1G").
    pub page_sizes: Vec<&'static str>,
    #[serde(skip)]
    sizes: u8,
}

impl MemRange {
    /// QEMU's `info mem` line (`start-end size urw`) with ours after it:
    /// executable or not, global, leaves, page sizes, A/D counts.
    pub fn render(&self) -> String {
        format!(
            "{:016x}-{:016x} {:016x} {}r{}  {} {} pages:{} ({}) accessed:{} dirty:{}",
            self.start,
            self.end,
            self.end.wrapping_sub(self.start),
            if self.user { 'u' } else { '-' },
            if self.writable { 'w' } else { '-' },
            if self.nx { "nx" } else { "x " },
            if self.global { "G" } else { "-" },
            self.pages,
            size_names(self.sizes).join("+"),
            self.accessed,
            self.dirty
        )
    }
}

/// Merges leaves into `info mem` ranges as they stream by, handing each
/// range to the caller when it closes.
#[derive(Debug, Default)]
pub struct RangeMerger {
    open: Option<MemRange>,
    /// Ranges closed so far.
    pub closed: u64,
}

impl RangeMerger {
    /// Adds a leaf; returns the range it closed, if any.
    pub fn feed(&mut self, e: &TlbEntry) -> Option<MemRange> {
        let p = &e.perms;
        let end = e.va.wrapping_add(e.size);
        if let Some(last) = self.open.as_mut() {
            if last.end == e.va
                && (last.writable, last.user, last.nx, last.global) == (p.writable, p.user, p.nx, p.global)
            {
                last.end = end;
                last.pages += 1;
                last.accessed += p.accessed as u64;
                last.dirty += p.dirty as u64;
                last.sizes |= size_bit(e.size);
                last.page_sizes = size_names(last.sizes);
                return None;
            }
        }
        let r = MemRange {
            start: e.va,
            end,
            writable: p.writable,
            user: p.user,
            nx: p.nx,
            global: p.global,
            pages: 1,
            accessed: p.accessed as u64,
            dirty: p.dirty as u64,
            page_sizes: size_names(size_bit(e.size)),
            sizes: size_bit(e.size),
        };
        let closed = self.open.replace(r);
        self.closed += closed.is_some() as u64;
        closed
    }

    /// The last range, once the leaves are done.
    pub fn finish(&mut self) -> Option<MemRange> {
        let r = self.open.take();
        self.closed += r.is_some() as u64;
        r
    }
}

/// The `mem` view, streamed: ranges of equal permissions as QEMU's `info
/// mem` prints them, each written as soon as it closes.
pub fn mem_view<M: PhysMem + ?Sized>(
    mem: &M,
    ctx: &CpuContext,
    budget: u64,
    format: Format<'_>,
    out: &mut dyn Write,
) -> io::Result<Listing> {
    let mut err = None;
    let mut put = |r: io::Result<()>| {
        if let Err(e) = r {
            err.get_or_insert(e);
        }
    };
    let mut merger = RangeMerger::default();
    let json = matches!(format, Format::Json { .. });
    match format {
        Format::Text => put(writeln!(out, "info mem, CR3 {:#x}:", ctx.cr3)),
        Format::Json { checkpoint } => {
            put(json_open(out, checkpoint, "mem", &format!("\"cr3\":\"{:#x}\",\"ranges\":[", ctx.cr3)))
        }
    }
    let emit = |r: MemRange, n: u64, out: &mut dyn Write| -> io::Result<()> {
        if json {
            if n > 1 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, &r).map_err(io::Error::other)
        } else {
            writeln!(out, "{}", r.render())
        }
    };
    let l = for_each_leaf(mem, ctx, budget, |e| {
        if let Some(r) = merger.feed(e) {
            put(emit(r, merger.closed, out));
        }
    });
    if let Some(r) = merger.finish() {
        put(emit(r, merger.closed, out));
    }
    if json {
        #[derive(Serialize)]
        struct Tail<'a> {
            ranges_count: u64,
            #[serde(flatten)]
            listing: &'a Listing,
        }
        put(out.write_all(b"]"));
        put(json_close(out, &Tail { ranges_count: merger.closed, listing: &l }));
    } else {
        put(writeln!(
            out,
            "  {} ranges, {} leaves{}",
            merger.closed,
            l.count,
            if l.complete { "" } else { " (incomplete: the budget ran out)" }
        ));
        put(l.render_problems(out));
    }
    match err {
        Some(e) => Err(e),
        None => Ok(l),
    }
}

/// The `cpu` view: the registers translation depends on.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// RIP.
    #[serde(serialize_with = "hex")]
    pub rip: u64,
    /// Its symbol, if any.
    pub rip_symbol: String,
    /// RSP.
    #[serde(serialize_with = "hex")]
    pub rsp: u64,
    /// CR0.
    #[serde(serialize_with = "hex")]
    pub cr0: u64,
    /// CR3.
    #[serde(serialize_with = "hex")]
    pub cr3: u64,
    /// CR4.
    #[serde(serialize_with = "hex")]
    pub cr4: u64,
    /// EFER.
    #[serde(serialize_with = "hex")]
    pub efer: u64,
    /// Current privilege level.
    pub cpl: u8,
    /// "4-level paging", "5-level paging" or "no paging".
    pub paging: &'static str,
    /// With several vCPUs: the one at the checkpoint (the registers
    /// above are its own) and every vCPU's state (empty with one vCPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<usize>,
    /// Every vCPU, with several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vcpus: Vec<VcpuLine>,
}

/// One vCPU in the `cpu` view of a VM with several.
#[derive(Debug, Clone, Serialize)]
pub struct VcpuLine {
    /// Its index (= APIC ID).
    pub vcpu: usize,
    /// "running", "halted", "waiting for SIPI"... (KVM's MP state).
    pub state: &'static str,
    /// RIP.
    #[serde(serialize_with = "hex")]
    pub rip: u64,
    /// Its symbol, if any.
    pub rip_symbol: String,
    /// RSP.
    #[serde(serialize_with = "hex")]
    pub rsp: u64,
    /// CR3.
    #[serde(serialize_with = "hex")]
    pub cr3: u64,
    /// Current privilege level.
    pub cpl: u8,
    /// Paging on.
    pub paging: bool,
}

/// KVM's MP state in words.
pub fn mp_state_name(s: u32) -> &'static str {
    match s {
        kvm_bindings::KVM_MP_STATE_RUNNABLE => "running",
        kvm_bindings::KVM_MP_STATE_HALTED => "halted",
        kvm_bindings::KVM_MP_STATE_UNINITIALIZED | kvm_bindings::KVM_MP_STATE_INIT_RECEIVED => "waiting for SIPI",
        kvm_bindings::KVM_MP_STATE_SIPI_RECEIVED => "starting (SIPI received)",
        _ => "other",
    }
}

impl CpuReport {
    /// One line (and one per vCPU with several).
    pub fn render(&self) -> String {
        let mut s = format!(
            "cpu: RIP {:#x} ({}) RSP {:#x} CPL {} CR0 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x} ({})\n",
            self.rip, self.rip_symbol, self.rsp, self.cpl, self.cr0, self.cr3, self.cr4, self.efer, self.paging
        );
        if let Some(at) = self.vcpu {
            s.push_str(&format!("  (vCPU {at} reached the checkpoint; the others are stopped)\n"));
        }
        for v in &self.vcpus {
            s.push_str(&format!(
                "  vCPU {}: {:<16} RIP {:#x}{} RSP {:#x} CPL {} CR3 {:#x}{}\n",
                v.vcpu,
                v.state,
                v.rip,
                if v.rip_symbol.is_empty() { String::new() } else { format!(" ({})", v.rip_symbol) },
                v.rsp,
                v.cpl,
                v.cr3,
                if v.paging { "" } else { " (paging off)" }
            ));
        }
        s
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

    fn text(f: impl FnOnce(&mut Vec<u8>) -> io::Result<Listing>) -> (String, Listing) {
        let mut v = Vec::new();
        let l = f(&mut v).unwrap();
        (String::from_utf8(v).unwrap(), l)
    }

    #[test]
    fn walk_reports_every_level_and_the_page() {
        let (m, ctx) = mem();
        let mut log = vec![];
        let r = walk_view(&GuestPhys(&m), &ctx, 0xffff_ffff_8020_0123, Some("_start".into()), &mut log);
        assert_eq!(r.steps.len(), 3);
        assert_eq!((r.steps[0].level, r.steps[0].sdm_level), ("PGD", "PML4"));
        assert_eq!(r.steps[2].level, "PMD");
        assert_eq!(r.steps[0].entry_addr, 0x1ff8);
        assert!(matches!(r.outcome, WalkOutcome::Mapped { gpa: 0x20_0123, page_size: 0x20_0000, .. }));
        assert_eq!(log, vec![Observed { cr3: 0x1000, va: 0xffff_ffff_8020_0123, gpa: Some(0x20_0123) }]);
        let text = r.render();
        assert!(text.contains("2 MiB page at GPA 0x200000 (leaf in the PMD)"), "{text}");
        assert!(text.contains("supervisor read-write executable"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["outcome"]["result"], "mapped");
        assert_eq!(json["va"], "0xffffffff80200123", "64-bit values are hex strings");
    }

    #[test]
    fn walk_stops_clearly_and_shows_the_levels_above_a_table_outside_ram() {
        let (m, ctx) = mem();
        let mut log = vec![];
        let r = walk_view(&GuestPhys(&m), &ctx, 0xffff_8000_0000_0000, None, &mut log);
        assert!(matches!(r.outcome, WalkOutcome::PageFault { level: "PGD", .. }), "{r:?}");
        let r = walk_view(&GuestPhys(&m), &ctx, 0x0000_8000_0000_0000, None, &mut log);
        assert!(matches!(r.outcome, WalkOutcome::NonCanonical));
        assert_eq!(log.len(), 1, "non-canonical walks are not cross-checked");
        let far = with_cr3(&ctx, Some(0x1_0000_0000));
        let r = walk_view(&GuestPhys(&m), &far, 0, None, &mut log);
        assert!(matches!(r.outcome, WalkOutcome::TableOutsideMemory { level: "PGD", .. }), "{r:?}");
        // The PMD points outside RAM: the PGD and PUD entries are shown.
        m.write_obj(0x7_0000_0000u64 | 3, GuestAddress(0x7000 + 8)).unwrap();
        let r = walk_view(&GuestPhys(&m), &ctx, 0x4020_0000, None, &mut log);
        assert!(matches!(r.outcome, WalkOutcome::TableOutsideMemory { level: "PTE", .. }), "{r:?}");
        let levels: Vec<&str> = r.steps.iter().map(|s| s.level).collect();
        assert_eq!(levels, ["PGD", "PUD", "PMD"], "{}", r.render());
        assert_eq!(r.steps[2].entry, 0x7_0000_0003);
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
    fn tlb_and_mem_stream_as_qemu_prints_them() {
        let (m, ctx) = mem();
        let (t, l) = text(|o| tlb_view(&GuestPhys(&m), &ctx, DEFAULT_BUDGET, Format::Text, o));
        assert_eq!((l.count, l.complete), (3, true));
        assert!(t.contains("0000000040000000: 0000000000009000 X------U-"), "{t}");
        assert!(t.contains("ffffffff80200000: 0000000000200000 --PDA---W"), "{t}");
        let (t, _) = text(|o| mem_view(&GuestPhys(&m), &ctx, DEFAULT_BUDGET, Format::Text, o));
        assert!(t.contains("0000000040000000-0000000040001000 0000000000001000 ur-  nx"), "{t}");
        assert!(
            t.contains("ffffffff80000000-ffffffff80400000 0000000000400000 -rw  x  - pages:2 (2M) accessed:1 dirty:1"),
            "{t}"
        );
        assert!(t.contains("  2 ranges, 3 leaves"), "{t}");
        let (j, _) = text(|o| mem_view(&GuestPhys(&m), &ctx, DEFAULT_BUDGET, Format::Json { checkpoint: "x" }, o));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["data"]["ranges"][1]["start"], "0xffffffff80000000", "{j}");
        assert_eq!(v["data"]["ranges_count"], 2, "{j}");
        let (j, _) = text(|o| tlb_view(&GuestPhys(&m), &ctx, DEFAULT_BUDGET, Format::Json { checkpoint: "x" }, o));
        assert_eq!(j.lines().count(), 1, "one object, one line");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["data"]["entries"][0]["leaf"], "0x8000000000009005", "bit 63 survives: {j}");
        assert_eq!(v["data"]["count"], 3);
        assert_eq!(v["data"]["complete"], true);
    }

    #[test]
    fn looping_tables_exhaust_the_budget_and_say_so() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        for i in 0..512u64 {
            m.write_obj(0x1000u64 | 3, GuestAddress(0x1000 + 8 * i)).unwrap();
        }
        let ctx = CpuContext::kernel(PhysAddr(0x1000));
        let l = for_each_leaf(&GuestPhys(&m), &ctx, 1 << 16, |_| {});
        assert!(!l.complete);
        assert!(matches!(l.problems.last(), Some(MappingProblem::BudgetExhausted { reads: 65536 })), "{l:?}");
        assert!(l.incomplete().unwrap().contains("raise --budget"), "{l:?}");
        let (t, _) = text(|o| mem_view(&GuestPhys(&m), &ctx, 1 << 16, Format::Text, o));
        assert!(t.contains("1 ranges") && t.contains("incomplete"), "{t}");
    }
}
