//! Pause points: what the host does while the vCPU is parked at a named
//! checkpoint. Defines the [`ParkHook`] seam (the vCPU run loop owns the
//! hooks and calls them at every checkpoint and SIGUSR1 pause, with or
//! without gdb attached) and the [`Inspector`], the hook behind `vmm run
//! --inspect/--verify`: it reads the vCPU's registers through the
//! [`Vcpu`] trait, shows the views, runs the checks, and stops the run on
//! a violation.

use super::dirty::dirty_view;
use super::exits::ExitsReport;
use super::guest::{GuestState, LazyGuest};
use super::invariants::{self, Root};
use super::mmviews;
use super::pause::PAUSE_CHECKPOINT;
use super::physmap::{file_stem, to_png, FrameClass, PhysMap, PhysmapReport};
use super::spec::{AddrSpec, Check, InspectConfig, ViewSpec};
use super::stage2::{slots, stage2};
use super::swapcheck;
use super::verify::{self, CheckResult, KvmTranslator, Sampler, WxCheck};
use super::views::{self, for_each_leaf, walk_view, CpuReport, Format, Observed};
use super::{address_mode, AddressMode, GuestLink, GuestPhys};
use crate::kvm::Vcpu;
use crate::memory::GuestMem;
use crate::symbols::Symbols;
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VmFd;
use mm_core::addr::{PhysAddr, VirtAddr};
use mm_core::paging::{walk, CpuContext};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress};

/// What the run loop does after a hook ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkVerdict {
    /// Run the guest on.
    Resume,
    /// End the run (the hook keeps the reason; the run loop ends as
    /// stopped).
    Stop,
}

/// Host work done while the vCPU is parked in a checkpoint's port write.
pub trait ParkHook: Send {
    /// Called once per checkpoint, before the next `KVM_RUN`; the vCPU's
    /// registers and guest memory hold still meanwhile.
    fn checkpoint(&mut self, name: &str, vcpu: &dyn Vcpu) -> ParkVerdict;

    /// Called with the vCPU parked between checkpoints when a host thread
    /// asked for it ([`super::pause::poke`]): the web view's controls and
    /// its look at guest memory while the guest runs. Not a checkpoint:
    /// nothing by default.
    fn poke(&mut self, _vcpu: &dyn Vcpu) -> ParkVerdict {
        ParkVerdict::Resume
    }

    /// Where the hook leaves why it stopped a run, for the VM to report
    /// after the vCPU thread ends (an [`Inspector`]'s; none by default).
    fn outcome(&self) -> Option<Arc<Mutex<InspectOutcome>>> {
        None
    }

    /// A debug exit (single-step, hardware breakpoint) outside a gdb
    /// session: true when the hook asked for it (the instruction counter).
    fn debug_exit(&mut self, _vcpu: &dyn Vcpu) -> bool {
        false
    }

    /// The run is over (the vCPU will not run again).
    fn run_ended(&mut self) {}
}

/// Why inspection stopped a run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InspectError {
    /// `--verify` found violations.
    #[error(
        "--verify failed at checkpoint '{checkpoint}': {summary}; rerun with --inspect to see the tables involved"
    )]
    Violation {
        /// Where.
        checkpoint: String,
        /// Each failed check with its first violation.
        summary: String,
        /// The failed checks.
        checks: Vec<Check>,
    },
    /// Some checks could not run or complete (no descriptor, paging off,
    /// a `--budget` ran out), and none found a violation.
    #[error("--verify could not complete at checkpoint '{checkpoint}': {summary}")]
    Incomplete {
        /// Where.
        checkpoint: String,
        /// Each incomplete check with its first reason.
        summary: String,
        /// The incomplete checks.
        checks: Vec<Check>,
    },
    /// Checks named in `--verify=CHECK,...` were not applicable at any
    /// checkpoint of the run: they examined nothing.
    #[error("--verify examined nothing for these checks in the whole run: {summary}")]
    NothingExamined {
        /// Each such check with why it had nothing to examine.
        summary: String,
        /// The checks.
        checks: Vec<Check>,
    },
    /// What the user asked for cannot be done on this guest (a `@CR3` that
    /// is not a page table in guest RAM).
    #[error("at checkpoint '{checkpoint}': {detail}")]
    Usage {
        /// Where.
        checkpoint: String,
        /// What is wrong with the request.
        detail: String,
    },
    /// The vCPU's state could not be read or restored.
    #[error("cannot inspect at checkpoint '{checkpoint}': {detail}; this is a VMM or KVM problem, not the guest's")]
    Vcpu {
        /// Where.
        checkpoint: String,
        /// What failed.
        detail: String,
    },
}

/// The vCPU's state at a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Parked {
    /// General registers.
    pub regs: kvm_regs,
    /// Special registers.
    pub sregs: kvm_sregs,
    /// The translation context (None with paging off).
    pub ctx: Option<CpuContext>,
}

/// Reads the parked vCPU's registers.
pub fn parked(vcpu: &dyn Vcpu) -> Result<Parked, String> {
    let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS failed: {e}"))?;
    let sregs = vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
    let ctx = match address_mode(&regs, &sregs) {
        AddressMode::Paged(c) => Some(c),
        AddressMode::Unpaged => None,
    };
    Ok(Parked { regs, sregs, ctx })
}

/// What an [`Inspector`] leaves for the VM to read after the run.
#[derive(Debug, Default)]
pub struct InspectOutcome {
    /// Why it stopped the run, if it did.
    pub error: Option<InspectError>,
    /// Checkpoints the guest reached.
    pub checkpoints: u64,
    /// Their names (at most [`SEEN_MAX`] distinct ones kept).
    pub seen: BTreeSet<String>,
    /// Each check `--verify` ran: `None` once it had something to examine,
    /// else why it had nothing (at every checkpoint so far).
    pub applied: BTreeMap<Check, Option<String>>,
    /// The checks were named one by one (not `--verify` or `all`).
    pub named_checks: bool,
}

impl InspectOutcome {
    fn note_checks(&mut self, results: &[CheckResult]) {
        for r in results {
            let e = self.applied.entry(r.check).or_insert_with(|| Some(r.detail.clone()));
            if r.applicable() {
                *e = None;
            }
        }
    }

    /// At the end of the run: the checks that had nothing to examine at
    /// any checkpoint. Checks named one by one that never examined
    /// anything make the run fail ([`InspectError::NothingExamined`]):
    /// the user asked for a check that checked nothing. Under `--verify`
    /// (every check) they are notes.
    pub fn finish(&self) -> Result<Vec<String>, InspectError> {
        let idle: Vec<String> =
            self.applied.iter().filter_map(|(c, why)| why.as_ref().map(|w| format!("[{c}] {w}"))).collect();
        if idle.is_empty() {
            return Ok(vec![]);
        }
        let checks = self.applied.iter().filter(|(_, w)| w.is_some()).map(|(c, _)| *c).collect();
        if self.named_checks {
            return Err(InspectError::NothingExamined { summary: idle.join("; "), checks });
        }
        Ok(vec![format!(
            "note: --verify: not applicable at any checkpoint of this run, so not checked: {}",
            idle.join("; ")
        )])
    }
}

/// Distinct checkpoint names remembered for the end-of-run check that
/// every `--inspect-at` name was reached (a guest can make up any number).
pub const SEEN_MAX: usize = 1024;

/// The hook behind `--inspect` and `--verify`.
pub struct Inspector {
    // The VM fd before the memory it maps (drop order).
    vm: Option<Arc<VmFd>>,
    mem: GuestMem,
    symbols: Arc<Symbols>,
    cfg: InspectConfig,
    out: Box<dyn Write + Send>,
    last_dirty: Option<String>,
    outcome: Arc<Mutex<InspectOutcome>>,
    link: GuestLink,
    last_checkpoint: Option<String>,
    exits: Option<ExitsReport>,
    /// Inspecting a saved state, not a live VM: why the views and checks
    /// that need KVM or the host's mappings cannot run.
    offline: Option<String>,
    /// `--verify tlb`'s replay, carried from checkpoint to checkpoint.
    tlb: super::tlbcheck::TlbState,
}

#[derive(Serialize)]
struct JsonLine<'a, T: Serialize> {
    checkpoint: &'a str,
    view: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One view's result: JSON data and human text, or an error in words.
type ViewOut = Result<(serde_json::Value, String), String>;

fn out_of<T: Serialize>(v: &T, text: String) -> ViewOut {
    serde_json::to_value(v).map(|j| (j, text)).map_err(|e| format!("cannot serialise the view: {e}"))
}

impl Inspector {
    /// With several vCPUs: the one at the checkpoint and a line for each
    /// (the one at the checkpoint from `p`: its thread holds its lock).
    fn vcpu_lines(&self, p: &Parked) -> (Option<usize>, Vec<views::VcpuLine>) {
        let set = &self.link.vcpus;
        if set.len() < 2 {
            return (None, Vec::new());
        }
        let current = set.current();
        let line = |vcpu: usize, state: &'static str, r: &kvm_regs, s: &kvm_sregs| views::VcpuLine {
            vcpu,
            state,
            rip: r.rip,
            // Real mode (an AP not started yet) has no kernel symbols.
            rip_symbol: if s.cr0 & mm_core::abi::cpu::CR0_PG != 0 {
                self.symbols.describe(r.rip)
            } else {
                String::new()
            },
            rsp: r.rsp,
            cr3: s.cr3,
            cpl: (s.cs.selector & 3) as u8,
            paging: s.cr0 & mm_core::abi::cpu::CR0_PG != 0,
        };
        let lines = set
            .states()
            .into_iter()
            .filter_map(|(i, st)| match st {
                Some((r, s, mp)) => Some(line(i, views::mp_state_name(mp), &r, &s)),
                None if i == current => Some(line(i, "at the checkpoint", &p.regs, &p.sregs)),
                None => None,
            })
            .collect();
        (Some(current), lines)
    }

    /// An inspector writing to `out`. `vm` is needed for the `dirty` view
    /// only.
    pub fn new(
        cfg: InspectConfig,
        mem: GuestMem,
        vm: Option<Arc<VmFd>>,
        symbols: Arc<Symbols>,
        out: Box<dyn Write + Send>,
    ) -> Self {
        let named_checks = cfg.verify.as_ref().is_some_and(|v| !Check::ALL.iter().all(|c| v.contains(c)));
        let outcome = InspectOutcome { named_checks, ..Default::default() };
        Inspector {
            vm,
            mem,
            symbols,
            cfg,
            out,
            last_dirty: None,
            outcome: Arc::new(Mutex::new(outcome)),
            link: GuestLink::default(),
            last_checkpoint: None,
            exits: None,
            offline: None,
            tlb: Default::default(),
        }
    }

    /// Inspects a saved state (a snapshot file) rather than a live VM:
    /// `dirty`, `exits` and `stage2` are refused and the `kvm` check is not
    /// applicable, each saying `why` (there is no KVM or host mapping).
    pub fn offline(mut self, why: &str) -> Self {
        self.offline = Some(why.to_string());
        self
    }

    /// Shares `link` with the run loop and port bus (the guest's descriptor
    /// address, the exit counts): without it the descriptor views say the
    /// guest published nothing and `exits` sees no exits.
    pub fn with_link(mut self, link: GuestLink) -> Self {
        self.link = link;
        self
    }

    /// What this inspector shares with the vCPU side.
    pub fn link(&self) -> &GuestLink {
        &self.link
    }

    /// The translation mode the descriptor's `kernel_cr3` is walked with:
    /// the parked vCPU's, or Linux's long-mode defaults with paging off.
    fn guest_base(p: &Parked) -> CpuContext {
        p.ctx.unwrap_or(CpuContext {
            maxphyaddr: crate::memory::host_phys_bits() as u8,
            vendor: super::cpu_vendor(),
            ..CpuContext::kernel(PhysAddr(0))
        })
    }

    /// The roots the descriptor checks cover: the kernel's whole tree, the
    /// user half of each process's and of the vCPU's own CR3.
    fn roots(gs: &GuestState<'_>, vcpu_cr3: Option<u64>) -> Result<Vec<Root>, String> {
        let kernel = gs.desc.kernel_cr3;
        let mut roots = vec![Root { cr3: kernel, whose: "kernel", pid: None, user_only: false }];
        for pr in gs.procs().map_err(|e| e.to_string())?.unwrap_or_default() {
            // A live process whose CR3 is no table in RAM: the table is
            // garbage, and checks over it would judge garbage.
            let root = pr.cr3 & 0x000f_ffff_ffff_f000;
            let mem = gs.memory();
            if pr.cr3 != 0
                && (mem.read_obj::<u64>(GuestAddress(root)).is_err()
                    || mem.read_obj::<u64>(GuestAddress(root + 4088)).is_err())
            {
                return Err(format!(
                    "pid {}'s CR3 {:#x} is not a table in guest RAM, so the table is not trustworthy",
                    pr.pid, pr.cr3
                ));
            }
            if pr.cr3 != 0 && !roots.iter().any(|r| r.cr3 == pr.cr3) {
                roots.push(Root { cr3: pr.cr3, whose: "process", pid: Some(pr.pid), user_only: true });
            }
        }
        if let Some(c) = vcpu_cr3.filter(|c| !roots.iter().any(|r| r.cr3 == *c)) {
            roots.push(Root { cr3: c, whose: "vCPU's", pid: None, user_only: true });
        }
        Ok(roots)
    }

    fn guest_view(&mut self, spec: &ViewSpec, gs: &mut LazyGuest<'_>) -> ViewOut {
        if let ViewSpec::Exits = spec {
            let r = self.exits.clone().ok_or("no exit counts: the inspector saw no checkpoint")?;
            let t = r.render();
            return out_of(&r, t);
        }
        let gs = gs.get().map_err(|e| e.to_string())?;
        match spec {
            ViewSpec::Buddyinfo => {
                let r = mmviews::buddyinfo(gs);
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Extfrag => {
                let r = mmviews::extfrag(gs);
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Pagetypeinfo => {
                let r = mmviews::pagetypeinfo(gs)?;
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Slabinfo => {
                let r = mmviews::slabinfo(gs);
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Meminfo => {
                let r = mmviews::meminfo(gs);
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Ps => {
                let r = mmviews::ps(gs)?;
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Vmstat => {
                let r = mmviews::vmstat(gs);
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Swaps => {
                let r = swapcheck::swaps(gs)?;
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Free => {
                let r = swapcheck::free(gs)?;
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Vmas { pid } => {
                let r = super::vmas::vmas(gs, *pid)?;
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Pagesums { pid } => {
                let r = super::pagesums::pagesums(gs, *pid)?;
                let t = r.render();
                out_of(&r, t)
            }
            _ => Err("not a guest-state view".into()),
        }
    }

    fn resolve(&self, a: &AddrSpec, p: &Parked) -> Result<(u64, Option<String>), String> {
        match a {
            AddrSpec::Num(n) => {
                let d = self.symbols.describe(*n);
                Ok((*n, (d != "?").then_some(d)))
            }
            AddrSpec::Rip => Ok((p.regs.rip, Some(format!("rip, {}", self.symbols.describe(p.regs.rip))))),
            AddrSpec::Rsp => Ok((p.regs.rsp, Some("rsp".into()))),
            AddrSpec::Symbol(s, off) => match self.symbols.address_of(s) {
                Some(base) => Ok((base.wrapping_add(*off), Some(a.to_string()))),
                None => Err(format!("the kernel has no symbol '{s}'; give the address as a number")),
            },
        }
    }

    /// Virtual `[start, end)` of a kernel section from its linker symbols.
    fn section(&self, start: &str, end: &str) -> Option<(u64, u64)> {
        let s = self.symbols.address_of(start)?;
        let e = self.symbols.address_of(end)?;
        (e > s).then_some((s, e))
    }

    /// Guest-physical ranges of the kernel's sections, through `ctx`.
    fn kernel_phys(&self, ctx: &CpuContext) -> Vec<(u64, u64, FrameClass)> {
        let mut v = Vec::new();
        for (a, b, class) in [
            ("__text_start", "__text_end", FrameClass::KernelText),
            ("__rodata_start", "__rodata_end", FrameClass::KernelRodata),
            ("__data_start", "__data_end", FrameClass::KernelData),
        ] {
            // A section larger than the kernel window is a bad symbol table.
            let Some((s, e)) = self.section(a, b).filter(|(s, e)| e - s <= 1 << 30) else { continue };
            let mut va = s & !0xfff;
            while va < e {
                if let Ok(t) = walk(&GuestPhys(&self.mem), ctx, VirtAddr(va)) {
                    let pa = t.pa.0 & !0xfff;
                    v.push((pa, pa + 4096, class));
                }
                va += 4096;
            }
        }
        v
    }

    fn view(
        &mut self,
        name: &str,
        spec: &ViewSpec,
        p: &Parked,
        log: &mut Vec<Observed>,
        gs: &mut LazyGuest<'_>,
    ) -> ViewOut {
        if let (Some(why), ViewSpec::Dirty | ViewSpec::Exits | ViewSpec::Stage2 { .. }) = (&self.offline, spec) {
            return Err(format!("{} needs the live VM: {why}", spec.name()));
        }
        if matches!(
            spec,
            ViewSpec::Buddyinfo
                | ViewSpec::Extfrag
                | ViewSpec::Pagetypeinfo
                | ViewSpec::Slabinfo
                | ViewSpec::Meminfo
                | ViewSpec::Ps
                | ViewSpec::Vmstat
                | ViewSpec::Swaps
                | ViewSpec::Free
                | ViewSpec::Vmas { .. }
                | ViewSpec::Pagesums { .. }
                | ViewSpec::Exits
        ) {
            return self.guest_view(spec, gs);
        }
        if let ViewSpec::Numa = spec {
            // From the ACPI tables in guest memory; the free pages too once
            // the guest's allocator is up.
            let r = super::numa::numa(&self.mem, gs.get().ok())?;
            let t = r.render();
            return out_of(&r, t);
        }
        if let ViewSpec::Dirty = spec {
            let vm = self.vm.as_ref().ok_or("this inspector has no VM handle for the dirty log")?;
            // The dirty log was last cleared at the last checkpoint that
            // showed it, or at the first checkpoint the inspector saw (the
            // log starts empty there only if nothing read it before).
            let since = self.last_dirty.replace(name.to_string());
            let since = since.map_or("the start of the run".to_string(), |n| format!("checkpoint '{n}'"));
            let r = dirty_view(vm, &slots(&self.mem), &since)?;
            let marks: Vec<(u64, u64, FrameClass)> = match p.ctx {
                Some(ctx) => {
                    let mut k = self.kernel_phys(&ctx);
                    let (mut seen, mut tables, mut problems) = (Default::default(), Vec::new(), Vec::new());
                    invariants::table_pages(&GuestPhys(&self.mem), &ctx, false, &mut seen, &mut tables, &mut problems);
                    k.extend(tables.into_iter().map(|(t, _)| (t, t + 4096, FrameClass::PageTable)));
                    k
                }
                None => vec![],
            };
            let text = r.render(|s, e| {
                let mut what: Vec<&str> = marks.iter().filter(|m| m.0 < e && s < m.1).map(|m| m.2.label()).collect();
                what.sort_unstable();
                what.dedup();
                what.join(", ")
            });
            return out_of(&r, text);
        }
        let Some(vctx) = p.ctx else {
            return Err("paging is off at this checkpoint: there are no page tables to show".into());
        };
        match spec {
            ViewSpec::Cpu => {
                let (vcpu, vcpus) = self.vcpu_lines(p);
                let r = CpuReport {
                    rip: p.regs.rip,
                    rip_symbol: self.symbols.describe(p.regs.rip),
                    rsp: p.regs.rsp,
                    cr0: p.sregs.cr0,
                    cr3: p.sregs.cr3,
                    cr4: p.sregs.cr4,
                    efer: p.sregs.efer,
                    cpl: (p.sregs.cs.selector & 3) as u8,
                    paging: if vctx.la57 { "5-level paging" } else { "4-level paging" },
                    vcpu,
                    vcpus,
                };
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Walk { addr, cr3 } => {
                let (va, label) = self.resolve(addr, p)?;
                let mut r = walk_view(&GuestPhys(&self.mem), &views::with_cr3(&vctx, *cr3), va, label, log);
                if let (views::WalkOutcome::Mapped { frame, .. }, Ok(g)) = (&r.outcome, gs.get()) {
                    r.page = page_report(g, *frame >> 12);
                }
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Stage2 { addr, cr3 } => {
                let (va, label) = self.resolve(addr, p)?;
                let w = walk_view(&GuestPhys(&self.mem), &views::with_cr3(&vctx, *cr3), va, label, log);
                let r = stage2(&self.mem, &w);
                let t = r.render();
                out_of(&r, t)
            }
            ViewSpec::Physmap { dir } => {
                // Owners from the descriptor where the guest publishes one;
                // the host's own layers alone otherwise.
                let owners = gs.get().ok();
                let r = self.physmap(name, &vctx, dir.clone(), owners)?;
                let t = r.render();
                out_of(&r, t)
            }
            _ => Err("unreachable".into()),
        }
    }

    fn physmap(
        &self,
        name: &str,
        ctx: &CpuContext,
        dir: Option<PathBuf>,
        owners: Option<&GuestState<'_>>,
    ) -> Result<PhysmapReport, String> {
        let map = self.paint_physmap(ctx, owners)?;
        let dir = dir.unwrap_or_else(|| PathBuf::from("."));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let svg = dir.join(format!("{}.svg", file_stem(name)));
        let title = format!("mmemu guest-physical memory at checkpoint '{name}', CR3 {:#x}", ctx.cr3);
        std::fs::write(&svg, map.svg(&title)).map_err(|e| format!("cannot write {}: {e}", svg.display()))?;
        let (png, png_note) = match to_png(&svg) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        };
        Ok(PhysmapReport { svg, png, png_note, frames: map.counts(), nodes: map.node_counts() })
    }

    /// Classifies every guest frame as the `physmap` view paints it.
    fn paint_physmap(&self, ctx: &CpuContext, owners: Option<&GuestState<'_>>) -> Result<PhysMap, String> {
        let mut map = PhysMap::new(&slots(&self.mem));
        map.set_nodes(super::numa::srat_ranges(&self.mem));
        // A large page painted once is painted: an alias tree of 1 GiB
        // leaves would otherwise cost 262144 frames per leaf. The set holds
        // at most one entry per large frame of RAM.
        let ram_end = super::guest::ram_end(&self.mem);
        let mut large_done = std::collections::HashSet::new();
        let listing = for_each_leaf(&GuestPhys(&self.mem), ctx, self.cfg.budget(), |e| {
            if e.size > 4096 && (e.pa >= ram_end || !large_done.insert(e.pa)) {
                return;
            }
            map.paint(e.pa, e.pa.saturating_add(e.size), FrameClass::Mapped)
        });
        if let Some(why) = listing.incomplete() {
            return Err(format!("cannot draw the map: {why}"));
        }
        if let Some(gs) = owners {
            // Pageblock migratetypes as a band (grouping by mobility).
            match mmviews::pageblock_types(gs) {
                Ok((types, base)) => map.set_pageblocks(types, base),
                Err(e) => return Err(format!("cannot draw the map: {e}")),
            }
        }
        if let Some(gs) = owners {
            // Below Untouched: RAM no block covers and nobody touched is
            // deferred, not reserved.
            map.paint(0, gs.desc.nr_pfns << 12, FrameClass::Reserved);
        }
        map.paint_untouched()?;
        for b in owners.map(|g| g.blocks.as_slice()).unwrap_or_default() {
            use super::guest::BlockKind;
            use mm_core::buddy::PageOwner;
            let class = match b.kind {
                BlockKind::Free => FrameClass::free(b.order),
                BlockKind::Pcp => FrameClass::FreePcp,
                BlockKind::Slab { .. } | BlockKind::Allocated(PageOwner::Slab) => FrameClass::Slab,
                BlockKind::Allocated(PageOwner::PageTable) => FrameClass::PageTable,
                BlockKind::Allocated(PageOwner::Vmalloc) => FrameClass::Vmalloc,
                BlockKind::Allocated(PageOwner::UserAnon) => FrameClass::UserAnon,
                BlockKind::Allocated(PageOwner::PageCache) => FrameClass::PageCache,
                BlockKind::Allocated(PageOwner::HugeTlb) => FrameClass::HugeTlb,
                BlockKind::Allocated(PageOwner::KmallocLarge) => FrameClass::KmallocLarge,
                BlockKind::Allocated(PageOwner::Reserved) => FrameClass::Reserved,
                BlockKind::Allocated(PageOwner::Unknown) => FrameClass::Allocated,
            };
            map.paint(b.pfn << 12, b.end_pfn() << 12, class);
        }
        if let Some(gs) = owners {
            // Transparent huge pages: anonymous frames a process maps
            // with a PMD leaf (the buddy sees 512 order-0 pages).
            let roots = Self::roots(gs, Some(ctx.cr3)).map_err(|e| format!("cannot draw the map: {e}"))?;
            for pa in invariants::user_huge_leaves(&GuestPhys(&self.mem), ctx, &roots) {
                use super::guest::BlockKind;
                use mm_core::buddy::PageOwner;
                if gs.block_of(pa >> 12).map(|b| b.kind) == Some(BlockKind::Allocated(PageOwner::UserAnon)) {
                    map.paint(pa, pa + (2 << 20), FrameClass::Thp);
                }
            }
            // Swap-cache pages over their owner (user anonymous).
            let cache = swapcheck::swap_cache(gs).map_err(|e| format!("cannot draw the map: {e}"))?;
            for pfn in cache.by_pfn.keys() {
                map.paint(pfn << 12, (pfn + 1) << 12, FrameClass::SwapCache);
            }
        }
        for (s, e, c) in self.kernel_phys(ctx) {
            map.paint(s, e, c);
        }
        // Every table under CR3, empty ones included (the guest pre-creates
        // direct-map tables for deferred RAM before anything is mapped).
        let (mut seen, mut tables, mut problems) = (Default::default(), Vec::new(), Vec::new());
        invariants::table_pages(&GuestPhys(&self.mem), ctx, false, &mut seen, &mut tables, &mut problems);
        for (t, _) in tables {
            map.paint(t, t + 4096, FrameClass::PageTable);
        }
        Ok(map)
    }

    /// One view's `--json` data at the parked vCPU, by the same code as
    /// `--inspect VIEW` (the web view's API). The streamed `tlb` and `mem`
    /// and the file-writing `physmap` are not served here: see
    /// [`Inspector::physmap_frames`].
    pub fn view_data(&mut self, name: &str, spec: &ViewSpec, vcpu: &dyn Vcpu) -> Result<serde_json::Value, String> {
        if matches!(spec, ViewSpec::Tlb { .. } | ViewSpec::Mem { .. } | ViewSpec::Physmap { .. }) {
            return Err(format!("the {} view is not served as data", spec.name()));
        }
        let p = parked(vcpu)?;
        let mem = self.mem.clone();
        let mut gs = LazyGuest::new(&mem, self.link.descriptor.get(), Self::guest_base(&p));
        self.view(name, spec, &p, &mut Vec::new(), &mut gs).map(|(j, _)| j)
    }

    /// The parked guest's frames classified as the `physmap` view paints
    /// them (under the vCPU's CR3), without writing the picture.
    pub fn physmap_frames(&self, vcpu: &dyn Vcpu) -> Result<PhysMap, String> {
        let p = parked(vcpu)?;
        let ctx = p.ctx.ok_or("paging is off: there are no page tables to classify frames by")?;
        let mem = self.mem.clone();
        let mut gs = LazyGuest::new(&mem, self.link.descriptor.get(), Self::guest_base(&p));
        self.paint_physmap(&ctx, gs.get().ok())
    }

    /// The translation context the descriptor is read with at this stop
    /// (the vCPU's, or long mode's defaults with paging off).
    pub fn guest_context(vcpu: &dyn Vcpu) -> Result<(Parked, CpuContext), String> {
        let p = parked(vcpu)?;
        let base = Self::guest_base(&p);
        Ok((p, base))
    }

    fn verify(
        &mut self,
        checks: &[Check],
        p: &Parked,
        vcpu: &dyn Vcpu,
        view_roots: &[u64],
        log: &mut Vec<Observed>,
        gs: &mut LazyGuest<'_>,
    ) -> Result<Vec<CheckResult>, String> {
        let Some(ctx) = p.ctx else {
            let why = "paging is off at this checkpoint: there are no page tables to check";
            return Ok(checks.iter().map(|&c| CheckResult::could_not_run(c, why.into())).collect());
        };
        let budget = self.cfg.budget();
        let mem = self.mem.clone();
        let phys = GuestPhys(&mem);
        let mut results = Vec::new();
        let mut guest_results = Vec::new();
        // One walk of the processes' user halves for refcount, cow-ro, isolation.
        let mut user_maps: Option<invariants::UserMaps> = None;
        for &c in checks.iter().filter(|c| Check::DESCRIPTOR.contains(c)) {
            let gs = match gs.get() {
                Ok(g) => g,
                Err(e) => {
                    guest_results.push(CheckResult::could_not_run(
                        c,
                        format!("it reads the guest's memory-manager descriptor: {e}"),
                    ));
                    continue;
                }
            };
            if let Some(why) = gs.untrustworthy() {
                guest_results.push(CheckResult::could_not_run(c, why));
                continue;
            }
            let roots = match Self::roots(gs, Some(ctx.cr3)) {
                Ok(r) => r,
                Err(e) => {
                    guest_results
                        .push(CheckResult::could_not_run(c, format!("the guest's process table cannot be used: {e}")));
                    continue;
                }
            };
            guest_results.push(match c {
                Check::FreedMapped => invariants::freed_mapped(gs, &roots, &ctx, budget),
                Check::PtOwner => invariants::pt_owner(gs, &ctx, &roots),
                Check::Refcount | Check::CowRo | Check::Isolation | Check::Lru | Check::Memcg => {
                    let um = user_maps.get_or_insert_with(|| invariants::user_maps(&phys, &ctx, &roots));
                    match c {
                        Check::Refcount => match swapcheck::swap_cache(gs) {
                            Ok(cache) => invariants::refcount(gs, um, &cache.by_pfn),
                            Err(e) => CheckResult::could_not_run(c, format!("the swap cache is unreadable: {e}")),
                        },
                        Check::CowRo => invariants::cow_ro(gs, um),
                        Check::Lru => swapcheck::lru(gs, um, &super::numa::srat_ranges(&mem)),
                        Check::Memcg => super::memcgcheck::check(gs, um),
                        _ => invariants::isolation(gs, um),
                    }
                }
                Check::Swap => swapcheck::swap(gs, &roots, self.cfg.swap_file.as_deref()),
                Check::Tlb => super::tlbcheck::check(&mut self.tlb, &mem, gs, &ctx, &self.symbols),
                Check::Numa => {
                    let um = user_maps.get_or_insert_with(|| invariants::user_maps(&phys, &ctx, &roots));
                    super::numa::verify(&mem, gs, um, &roots)
                }
                _ => match gs.access_records() {
                    Ok(recs) => invariants::access(&phys, &ctx, &recs),
                    Err(e) => CheckResult::could_not_run(c, format!("the access records are unreadable: {e}")),
                },
            });
        }
        let text = self.section("__text_start", "__text_end");
        // The vCPU's root, and every root a view listed (`mem@CR3`).
        let mut roots: Vec<u64> = view_roots.to_vec();
        roots.push(ctx.cr3);
        roots.sort_unstable();
        roots.dedup();
        let (want_wx, want_kvm) = (checks.contains(&Check::Wx), checks.contains(&Check::Kvm));
        let mut wx_per_root = Vec::new();
        let mut kvm_incomplete = Vec::new();
        // One streamed pass per root feeds both W^X and the KVM sample.
        if want_wx || want_kvm {
            for &cr3 in &roots {
                let rctx = CpuContext { cr3, ..ctx };
                let (mut wx, mut sampler) = (WxCheck::default(), Sampler::default());
                let listing = for_each_leaf(&phys, &rctx, budget, |e| {
                    if want_wx {
                        wx.feed(e);
                    }
                    if want_kvm {
                        sampler.feed(e);
                    }
                });
                if want_kvm {
                    sampler.observe(&phys, &rctx, log);
                    kvm_incomplete.extend(listing.incomplete());
                }
                wx_per_root.push(wx.finish(&listing, ctx.nxe));
            }
        }
        for &c in checks {
            let per_root = match c {
                Check::Wx => std::mem::take(&mut wx_per_root),
                Check::TextRo | Check::TextUser => {
                    roots.iter().map(|&cr3| verify::text(&phys, &CpuContext { cr3, ..ctx }, text, c, log)).collect()
                }
                _ => continue,
            };
            if let Some(r) = verify::combine(c, &roots, per_root) {
                results.push(r);
            }
        }
        if let (true, Some(why)) = (want_kvm, &self.offline) {
            results.insert(0, CheckResult::not_applicable(Check::Kvm, format!("it asks KVM to translate: {why}")));
        } else if want_kvm {
            let mut tr = KvmTranslator::new(vcpu)?.preserving_accessed(&self.mem, ctx);
            let r = verify::kvm_cross_check(log, &mut tr).with_errors(kvm_incomplete);
            tr.restore()?;
            results.insert(0, r);
        }
        results.extend(guest_results);
        Ok(results)
    }

    fn emit(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// A root the user named with `@CR3` must be a table in guest RAM: one
    /// that is not is the user's mistake, not the guest's.
    fn check_user_roots(&self, p: &Parked) -> Result<(), String> {
        let Some(ctx) = p.ctx else { return Ok(()) };
        for cr3 in self.cfg.user_roots() {
            let root = CpuContext { cr3, ..ctx }.root();
            if crate::inspect::stage2::slot_of(&self.mem, root.0).is_none_or(|sl| root.0 + 4096 > sl.gpa + sl.size) {
                return Err(format!(
                    "the root {cr3:#x} given with @CR3 is not in guest RAM (the table would be at {:#x}); give the CR3 of a live address space (the ps view lists them)",
                    root.0
                ));
            }
        }
        Ok(())
    }

    /// The `tlb` and `mem` views, written as they stream.
    fn streamed_view(&mut self, name: &str, spec: &ViewSpec, p: &Parked) -> Result<(), String> {
        let cr3 = match spec {
            ViewSpec::Tlb { cr3 } | ViewSpec::Mem { cr3 } => *cr3,
            _ => return Err("not a streamed view".into()),
        };
        let vctx = p.ctx.ok_or("paging is off at this checkpoint: there are no page tables to show")?;
        let ctx = views::with_cr3(&vctx, cr3);
        let format = if self.cfg.json { Format::Json { checkpoint: name } } else { Format::Text };
        if !self.cfg.json {
            let _ = writeln!(self.out, "--- checkpoint '{name}': {} ---", spec.name());
        }
        let mem = self.mem.clone();
        let budget = self.cfg.budget();
        let r = match spec {
            ViewSpec::Tlb { .. } => views::tlb_view(&GuestPhys(&mem), &ctx, budget, format, &mut self.out),
            _ => views::mem_view(&GuestPhys(&mem), &ctx, budget, format, &mut self.out),
        };
        let _ = self.out.flush();
        // A closed output is not the guest's problem: the run goes on.
        let _ = r;
        Ok(())
    }

    /// Shows the views and runs the checks at checkpoint `name`. Returns
    /// the verification results (empty without `--verify`).
    pub fn inspect(&mut self, name: &str, vcpu: &dyn Vcpu) -> Result<Vec<CheckResult>, InspectError> {
        let fail = |detail: String| InspectError::Vcpu { checkpoint: name.to_string(), detail };
        let p = parked(vcpu).map_err(fail)?;
        self.check_user_roots(&p).map_err(|detail| InspectError::Usage { checkpoint: name.to_string(), detail })?;
        let mut log = Vec::new();
        let mem = self.mem.clone();
        let mut gs = LazyGuest::new(&mem, self.link.descriptor.get(), Self::guest_base(&p));
        let mut view_roots = Vec::new();
        for spec in self.cfg.views.clone() {
            let r = match &spec {
                ViewSpec::Tlb { cr3 } | ViewSpec::Mem { cr3 } => {
                    view_roots.push(cr3.or(p.ctx.map(|c| c.cr3)).unwrap_or(0));
                    match self.streamed_view(name, &spec, &p) {
                        Ok(()) => continue,
                        Err(e) => Err(e),
                    }
                }
                _ => self.view(name, &spec, &p, &mut log, &mut gs),
            };
            let text = if self.cfg.json {
                let (data, error) = match r {
                    Ok((j, _)) => (Some(j), None),
                    Err(e) => (None, Some(e)),
                };
                let line = JsonLine { checkpoint: name, view: spec.name(), data, error };
                serde_json::to_string(&line).unwrap_or_default() + "\n"
            } else {
                match r {
                    Ok((_, t)) => format!("--- checkpoint '{name}': {} ---\n{t}", spec.name()),
                    Err(e) => format!("--- checkpoint '{name}': {} ---\nerror: {e}\n", spec.name()),
                }
            };
            self.emit(&text);
        }
        let Some(checks) = self.cfg.verify.clone() else {
            return Ok(vec![]);
        };
        let results = self.verify(&checks, &p, vcpu, &view_roots, &mut log, &mut gs).map_err(fail)?;
        let text = if self.cfg.json {
            let data = VerifyData::of(&results);
            let line = JsonLine { checkpoint: name, view: "verify", data: Some(&data), error: None };
            serde_json::to_string(&line).unwrap_or_default() + "\n"
        } else {
            let mut t = format!("--- checkpoint '{name}': verify ---\n");
            for r in &results {
                t.push_str(&r.render());
            }
            t
        };
        self.emit(&text);
        Ok(results)
    }
}

/// The `verify` view's JSON data: the checkpoint's verdict over its
/// checks. `status` is "violation" when a check found one, else "error"
/// when one could not run or complete, else "not-applicable" when no
/// check had anything to examine, else "ok"; `passed` is `status ==
/// "ok"`: no check failed and at least one vouches for what it examined.
/// `not_applicable` names the checks that examined nothing here.
#[derive(Serialize)]
struct VerifyData<'a> {
    status: &'static str,
    passed: bool,
    not_applicable: Vec<Check>,
    checks: &'a [CheckResult],
}

impl<'a> VerifyData<'a> {
    fn of(results: &'a [CheckResult]) -> Self {
        let status = if results.iter().any(|r| r.violated()) {
            "violation"
        } else if results.iter().any(|r| r.failed()) {
            "error"
        } else if results.iter().all(|r| !r.applicable()) {
            verify::NOT_APPLICABLE
        } else {
            "ok"
        };
        let not_applicable = results.iter().filter(|r| !r.applicable()).map(|r| r.check).collect();
        VerifyData { status, passed: status == "ok", not_applicable, checks: results }
    }
}

/// The page descriptor of `pfn` for the walk view, when the guest's
/// descriptor covers it.
fn page_report(gs: &GuestState<'_>, pfn: u64) -> Option<views::PageReport> {
    use mm_core::buddy::{PageOwner, PG_BUDDY, PG_HEAD, PG_PCP, PG_SLAB, PG_TAIL};
    if pfn >= gs.desc.nr_pfns {
        return None;
    }
    let p = gs.page(pfn);
    let names = [(PG_BUDDY, "buddy"), (PG_HEAD, "head"), (PG_TAIL, "tail"), (PG_SLAB, "slab"), (PG_PCP, "pcp")];
    Some(views::PageReport {
        pfn,
        desc_va: gs.desc.vmemmap_va.wrapping_add(pfn * mm_core::descriptor::PAGE_DESC_SIZE as u64),
        flags: p.flags,
        flag_names: names.iter().filter(|(b, _)| p.flags & b != 0).map(|(_, n)| *n).collect(),
        order: p.order,
        refcount: p.refcount,
        owner: if p.flags == 0 && p.refcount == 0 && p.owner == 0 {
            // An all-zero descriptor: a frame the buddy allocator never
            // managed (memblock: the kernel image, boot tables) or deferred.
            "none (never buddy-managed)".into()
        } else {
            format!("{:?}", PageOwner::from_u8(p.owner))
        },
    })
}

impl ParkHook for Inspector {
    fn outcome(&self) -> Option<Arc<Mutex<InspectOutcome>>> {
        Some(self.outcome.clone())
    }

    fn checkpoint(&mut self, name: &str, vcpu: &dyn Vcpu) -> ParkVerdict {
        let raw = name;
        // The guest chose the name: escaped before it reaches a terminal.
        let shown = crate::devices::results::escape(raw);
        let name = shown.as_str();
        if let Ok(mut o) = self.outcome.lock() {
            o.checkpoints += 1;
            if o.seen.len() < SEEN_MAX {
                o.seen.insert(raw.to_string());
            }
        }
        // Exits are taken at every checkpoint, inspected or not, so each
        // figure covers exactly the run since the checkpoint before.
        let since = self.last_checkpoint.replace(name.to_string());
        let since = since.map_or("the start of the run".to_string(), |n| format!("checkpoint '{n}'"));
        self.exits = Some(ExitsReport::by_vcpu(since, &self.link.exits.take_per_vcpu(), self.link.vcpus.len()));
        // A user's pause always shows the views: it has no name to select.
        if !self.cfg.applies_at(raw) && raw != PAUSE_CHECKPOINT {
            // The dirty log is drained at every checkpoint, as the exit
            // counts are, so `dirty` always means "since the checkpoint
            // before" (reading the bitmap costs ~1 us per slot).
            if let (true, Some(vm)) = (self.cfg.wants_dirty_log(), self.vm.as_ref()) {
                let _ = dirty_view(vm, &slots(&self.mem), "");
                self.last_dirty = Some(name.to_string());
            }
            return ParkVerdict::Resume;
        }
        let err = match self.inspect(name, vcpu) {
            Ok(results) => {
                if let Ok(mut o) = self.outcome.lock() {
                    o.note_checks(&results);
                }
                let failed: Vec<&CheckResult> = results.iter().filter(|r| r.failed()).collect();
                if failed.is_empty() {
                    return ParkVerdict::Resume;
                }
                // A violation outranks an incomplete check: the run fails
                // for what was found, and the summary names both.
                let violated = failed.iter().any(|r| r.violated());
                let summary = failed
                    .iter()
                    .map(|r| {
                        let n = r.violations.len() as u64 + r.violations_omitted + r.errors.len() as u64;
                        let more = if n > 1 { format!(" (and {} more)", n - 1) } else { String::new() };
                        let what = if r.violated() { "" } else { "could not complete: " };
                        format!("[{}] {what}{}{more}", r.check, r.first_reason())
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                let (checkpoint, checks) = (name.to_string(), failed.iter().map(|r| r.check).collect());
                if violated {
                    InspectError::Violation { checkpoint, summary, checks }
                } else {
                    InspectError::Incomplete { checkpoint, summary, checks }
                }
            }
            Err(e) => e,
        };
        if let Ok(mut o) = self.outcome.lock() {
            o.error = Some(err);
        }
        ParkVerdict::Stop
    }
}
