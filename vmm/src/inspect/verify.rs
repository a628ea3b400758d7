//! `--verify`: cross-checks at a checkpoint. Every translation the views
//! made (plus a sample of each root's mappings) is compared with
//! `KVM_TRANSLATE` (GPA and validity only: KVM's permission flags are
//! constants, platform.md); W^X over every mapping; kernel text neither
//! writable nor user-accessible. Invariants that need the guest's
//! memory-manager descriptor are in [`super::invariants`].

use super::spec::Check;
use super::views::{for_each_leaf, Listing, MemRange, Observed, RangeMerger, TlbEntry, VIOLATIONS_MAX};
use super::GuestPhys;
use crate::kvm::Vcpu;
use kvm_bindings::kvm_sregs;
use mm_core::addr::VirtAddr;
use mm_core::mem::PhysMem;
use mm_core::paging::walker::walk_trace;
use mm_core::paging::{walk, CpuContext, Fault, PteFlags};
use serde::Serialize;
use std::fmt::Write as _;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// At most this many mapping samples per root are cross-checked (each
/// `KVM_TRANSLATE` costs ~7 us here).
pub const KVM_SAMPLE_MAX: usize = 4096;
/// Kernel text larger than this (the whole kernel window) is a bad symbol
/// table, not text.
const TEXT_MAX: u64 = 1 << 30;

/// Something that translates like the vCPU does (`KVM_TRANSLATE`).
pub trait GvaTranslator {
    /// The GPA `gva` maps to under root `cr3`, or `None` when invalid.
    fn translate(&mut self, cr3: u64, gva: u64) -> Result<Option<u64>, String>;
}

/// `KVM_TRANSLATE` on a parked vCPU. Roots other than the vCPU's own are
/// translated by loading them into CR3 for the call; the original special
/// registers are put back by [`KvmTranslator::restore`] or on drop.
///
/// KVM's walker sets the accessed bit in every entry it uses, as the CPU
/// would; with [`KvmTranslator::preserving_accessed`] those bits are put
/// back as they were, so verifying does not change what the views show
/// next (KVM's dirty log still records the table pages it wrote).
pub struct KvmTranslator<'a> {
    vcpu: &'a dyn Vcpu,
    original: kvm_sregs,
    loaded: u64,
    preserve: Option<(&'a GuestMemoryMmap, CpuContext)>,
}

impl<'a> KvmTranslator<'a> {
    /// Reads the vCPU's special registers to restore them later.
    pub fn new(vcpu: &'a dyn Vcpu) -> Result<Self, String> {
        let original = vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
        Ok(KvmTranslator { vcpu, loaded: original.cr3, original, preserve: None })
    }

    /// Undoes KVM's accessed-bit updates in `mem`'s tables (walked with
    /// `ctx`'s paging mode).
    pub fn preserving_accessed(mut self, mem: &'a GuestMemoryMmap, ctx: CpuContext) -> Self {
        self.preserve = Some((mem, ctx));
        self
    }

    /// Puts the vCPU's own CR3 back if another was loaded.
    pub fn restore(&mut self) -> Result<(), String> {
        if self.loaded != self.original.cr3 {
            self.vcpu
                .set_sregs(&self.original)
                .map_err(|e| format!("KVM_SET_SREGS failed restoring the vCPU's CR3: {e}; the guest cannot go on"))?;
            self.loaded = self.original.cr3;
        }
        Ok(())
    }
}

impl Drop for KvmTranslator<'_> {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

impl GvaTranslator for KvmTranslator<'_> {
    fn translate(&mut self, cr3: u64, gva: u64) -> Result<Option<u64>, String> {
        if cr3 != self.loaded {
            let s = kvm_sregs { cr3, ..self.original };
            self.vcpu.set_sregs(&s).map_err(|e| format!("KVM_SET_SREGS with CR3 {cr3:#x} failed: {e}"))?;
            self.loaded = cr3;
        }
        let before = self.preserve.map(|(mem, ctx)| {
            let (trace, _) = walk_trace(&GuestPhys(mem), &CpuContext { cr3, ..ctx }, VirtAddr(gva));
            (mem, trace)
        });
        let t = self.vcpu.translate_gva(gva).map_err(|e| format!("KVM_TRANSLATE of {gva:#x} failed: {e}"))?;
        if let Some((mem, trace)) = before {
            for st in trace.steps() {
                let Ok(now) = mem.read_obj::<u64>(GuestAddress(st.entry_pa.0)) else { continue };
                // Only an A bit KVM just set is undone; nothing else runs
                // while the vCPU is parked.
                if now == st.entry.0 | PteFlags::ACCESSED.0 && now != st.entry.0 {
                    let _ = mem.write_obj(st.entry.0, GuestAddress(st.entry_pa.0));
                }
            }
        }
        Ok((t.valid != 0).then_some(t.physical_address))
    }
}

/// The outcome of one check: passed only when it ran to the end over
/// everything it was asked to examine and found no violation. A check that
/// could not run (no descriptor, paging off, no symbols) or could not
/// complete (a `--budget` ran out) has `errors` and does not pass. A check
/// with nothing to examine at this checkpoint (no access-rights records
/// yet, no processes) is not applicable: it neither passes nor fails, and
/// says why.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Which check.
    pub check: Check,
    /// "ok", "violation", "error" (could not run or complete) or
    /// "not-applicable" (nothing to examine here; `detail` says why).
    pub status: &'static str,
    /// Completed with no violation.
    pub passed: bool,
    /// What was examined ("1042 translations agree"): counts only what the
    /// check actually looked at.
    pub detail: String,
    /// Each violation, in words (at most [`VIOLATIONS_MAX`] kept).
    pub violations: Vec<String>,
    /// Violations found beyond those kept.
    pub violations_omitted: u64,
    /// Why the check could not run or complete.
    pub errors: Vec<String>,
}

impl CheckResult {
    /// A completed check: passed when there is no violation.
    pub fn new(check: Check, detail: String, mut violations: Vec<String>) -> Self {
        let omitted = violations.len().saturating_sub(VIOLATIONS_MAX) as u64;
        violations.truncate(VIOLATIONS_MAX);
        let mut r = CheckResult {
            check,
            status: "ok",
            passed: true,
            detail,
            violations,
            violations_omitted: omitted,
            errors: Vec::new(),
        };
        r.settle();
        r
    }

    /// A check with nothing to examine at this checkpoint, and why: not a
    /// pass (it vouches for nothing) and not a failure.
    pub fn not_applicable(check: Check, why: String) -> Self {
        CheckResult {
            check,
            status: NOT_APPLICABLE,
            passed: false,
            detail: why,
            violations: Vec::new(),
            violations_omitted: 0,
            errors: Vec::new(),
        }
    }

    /// Whether the check had something to examine.
    pub fn applicable(&self) -> bool {
        self.status != NOT_APPLICABLE
    }

    /// Whether the check failed: a violation, or it could not run or
    /// complete.
    pub fn failed(&self) -> bool {
        !self.violations.is_empty() || !self.errors.is_empty()
    }

    /// A check that could not run at all, and why.
    pub fn could_not_run(check: Check, reason: String) -> Self {
        CheckResult::new(check, "not run".into(), Vec::new()).with_errors(vec![reason])
    }

    /// Adds reasons why the check did not complete (none: unchanged).
    pub fn with_errors(mut self, errors: impl IntoIterator<Item = String>) -> Self {
        self.errors.extend(errors);
        self.settle();
        self
    }

    fn settle(&mut self) {
        self.passed = self.violations.is_empty() && self.errors.is_empty();
        self.status = if !self.violations.is_empty() {
            "violation"
        } else if !self.errors.is_empty() {
            "error"
        } else if self.status == NOT_APPLICABLE {
            NOT_APPLICABLE
        } else {
            "ok"
        };
    }

    /// Whether a violation was found (as opposed to an incomplete check).
    pub fn violated(&self) -> bool {
        !self.violations.is_empty()
    }

    /// The first violation or, failing that, the first error.
    pub fn first_reason(&self) -> &str {
        self.violations.first().or(self.errors.first()).map(String::as_str).unwrap_or("")
    }

    /// One line, plus one per violation (at most 8 listed) and per error.
    pub fn render(&self) -> String {
        let word = match self.status {
            "ok" => "ok",
            "violation" => "VIOLATION",
            NOT_APPLICABLE => "not applicable",
            _ => "ERROR",
        };
        let mut s = format!("verify {}: {word} ({})\n", self.check, self.detail);
        for v in self.violations.iter().take(8) {
            let _ = writeln!(s, "  {v}");
        }
        let more = (self.violations.len().saturating_sub(8)) as u64 + self.violations_omitted;
        if more > 0 {
            let _ = writeln!(s, "  ... and {more} more");
        }
        for e in &self.errors {
            let _ = writeln!(s, "  could not complete: {e}");
        }
        s
    }
}

/// The status of a check with nothing to examine.
pub const NOT_APPLICABLE: &str = "not-applicable";

/// One result for check `c` from its results per root (same order as
/// `roots`); violations and errors name their root when there are several.
pub fn combine(c: Check, roots: &[u64], per_root: Vec<CheckResult>) -> Option<CheckResult> {
    if per_root.len() <= 1 {
        return per_root.into_iter().next();
    }
    let mut detail = Vec::new();
    let mut violations = Vec::new();
    let mut errors = Vec::new();
    let mut omitted = 0;
    for (cr3, r) in roots.iter().zip(per_root) {
        detail.push(format!("CR3 {cr3:#x}: {}", r.detail));
        violations.extend(r.violations.into_iter().map(|v| format!("CR3 {cr3:#x}: {v}")));
        errors.extend(r.errors.into_iter().map(|v| format!("CR3 {cr3:#x}: {v}")));
        omitted += r.violations_omitted;
    }
    let mut r = CheckResult::new(c, detail.join("; "), violations).with_errors(errors);
    r.violations_omitted += omitted;
    Some(r)
}

/// Records the walker's answer for `va` under `ctx` for the cross-check.
pub fn observe<M: PhysMem + ?Sized>(mem: &M, ctx: &CpuContext, va: u64, log: &mut Vec<Observed>) {
    match walk(mem, ctx, VirtAddr(va)) {
        Ok(t) => log.push(Observed { cr3: ctx.cr3, va, gpa: Some(t.pa.0) }),
        Err(Fault::NonCanonical(_)) => {}
        Err(_) => log.push(Observed { cr3: ctx.cr3, va, gpa: None }),
    }
}

/// A bounded sample of one root's mappings for the `kvm` cross-check, fed
/// as the leaves stream by: the first byte, last byte and first address
/// past each of the first `info mem` ranges, and leaves spread evenly over
/// the whole listing (every `stride`-th, the stride doubling whenever the
/// sample fills), [`KVM_SAMPLE_MAX`] addresses in all.
#[derive(Debug, Default)]
pub struct Sampler {
    edges: Vec<u64>,
    leaves: Vec<u64>,
    stride: u64,
    seen: u64,
    merger: RangeMerger,
}

impl Sampler {
    /// Takes one leaf.
    pub fn feed(&mut self, e: &TlbEntry) {
        if let Some(r) = self.merger.feed(e) {
            self.edge(&r);
        }
        let stride = self.stride.max(1);
        if self.seen.is_multiple_of(stride) {
            self.leaves.push(e.va.wrapping_add(e.size / 2));
            if self.leaves.len() >= KVM_SAMPLE_MAX / 2 {
                // Keep every other one: the survivors are 2*stride apart.
                let mut i = 0;
                self.leaves.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride = stride * 2;
            }
        }
        self.seen += 1;
    }

    fn edge(&mut self, r: &MemRange) {
        if self.edges.len() + 3 <= KVM_SAMPLE_MAX / 2 {
            self.edges.extend([r.start, (r.end.wrapping_sub(1) & !0xfff) | 0xff8, r.end]);
        }
    }

    /// Walks every sampled address into `log`.
    pub fn observe<M: PhysMem + ?Sized>(mut self, mem: &M, ctx: &CpuContext, log: &mut Vec<Observed>) {
        if let Some(r) = self.merger.finish() {
            self.edge(&r);
        }
        for va in self.edges.into_iter().chain(self.leaves) {
            observe(mem, ctx, va, log);
        }
    }
}

/// Samples `ctx`'s mappings (reading at most `budget` entries) into `log`.
pub fn sample<M: PhysMem + ?Sized>(mem: &M, ctx: &CpuContext, budget: u64, log: &mut Vec<Observed>) -> Listing {
    let mut s = Sampler::default();
    let l = for_each_leaf(mem, ctx, budget, |e| s.feed(e));
    s.observe(mem, ctx, log);
    l
}

/// Compares every observed translation with the translator. A translator
/// that fails is an error (the check could not run), not a disagreement.
pub fn kvm_cross_check(log: &[Observed], tr: &mut dyn GvaTranslator) -> CheckResult {
    let mut violations = Vec::new();
    let mut errors = Vec::new();
    let mut n = 0;
    for o in log {
        match tr.translate(o.cr3, o.va) {
            Ok(kvm) => {
                n += 1;
                if kvm != o.gpa {
                    let show = |g: Option<u64>| g.map_or("not mapped".to_string(), |a| format!("GPA {a:#x}"));
                    violations.push(format!(
                        "GVA {:#x} under CR3 {:#x}: the walker says {}, KVM_TRANSLATE says {}",
                        o.va,
                        o.cr3,
                        show(o.gpa),
                        show(kvm)
                    ));
                }
            }
            Err(e) => {
                if errors.len() < 4 {
                    errors.push(e);
                }
            }
        }
    }
    let disagree = violations.len();
    CheckResult::new(
        Check::Kvm,
        format!("{n} translations compared with KVM_TRANSLATE, {disagree} disagree"),
        violations,
    )
    .with_errors(errors)
}

/// W^X over a stream of leaves: no leaf both writable and executable.
#[derive(Debug, Default)]
pub struct WxCheck {
    ranges: Vec<(u64, u64, u64)>,
    omitted: u64,
    pages: u64,
}

impl WxCheck {
    /// Takes one leaf.
    pub fn feed(&mut self, e: &TlbEntry) {
        if !e.perms.writable || e.perms.nx {
            return;
        }
        self.pages += 1;
        let full = self.ranges.len() >= VIOLATIONS_MAX;
        match self.ranges.last_mut() {
            Some(r) if r.1 == e.va => {
                r.1 = e.va.wrapping_add(e.size);
                r.2 += 1;
            }
            _ if full => self.omitted += 1,
            _ => self.ranges.push((e.va, e.va.wrapping_add(e.size), 1)),
        }
    }

    /// The result over `listing` (what was streamed through [`WxCheck::feed`]).
    pub fn finish(self, listing: &Listing, nxe: bool) -> CheckResult {
        let hint = if nxe { "" } else { "; EFER.NXE is off, so nothing can be no-execute" };
        let violations = self
            .ranges
            .iter()
            .map(|(s, e, n)| format!("{s:#018x}-{:#018x}: {n} pages writable and executable{hint}", e.wrapping_sub(1)))
            .collect();
        let mut r = CheckResult::new(
            Check::Wx,
            format!("{} leaves checked, {} writable+executable", listing.count, self.pages),
            violations,
        )
        .with_errors(listing.incomplete());
        r.violations_omitted += self.omitted;
        r
    }
}

/// W^X over every leaf of `ctx`'s root, reading at most `budget` entries.
pub fn wx<M: PhysMem + ?Sized>(mem: &M, ctx: &CpuContext, budget: u64) -> CheckResult {
    let mut w = WxCheck::default();
    let l = for_each_leaf(mem, ctx, budget, |e| w.feed(e));
    w.finish(&l, ctx.nxe)
}

/// Kernel text `[start, end)` (virtual) is not writable (`ro`) or not
/// user-accessible (`!ro`), page by page through the walker.
pub fn text<M: PhysMem + ?Sized>(
    mem: &M,
    ctx: &CpuContext,
    range: Option<(u64, u64)>,
    check: Check,
    log: &mut Vec<Observed>,
) -> CheckResult {
    let Some((start, end)) = range else {
        return CheckResult::could_not_run(
            check,
            "the kernel has no __text_start/__text_end symbols, so its text cannot be found; build it with them (see guest/kernel.ld)".into(),
        );
    };
    if end.wrapping_sub(start) > TEXT_MAX {
        return CheckResult::could_not_run(
            check,
            format!("the kernel's text symbols span {start:#x}-{end:#x}, more than the 1 GiB kernel window; the ELF's symbols are wrong"),
        );
    }
    let mut bad: Vec<(u64, u64)> = Vec::new();
    let mut unmapped = 0;
    let mut va = start & !0xfff;
    let mut pages = 0;
    while va < end {
        pages += 1;
        match walk(mem, ctx, VirtAddr(va)) {
            Ok(t) => {
                if pages <= KVM_SAMPLE_MAX {
                    log.push(Observed { cr3: ctx.cr3, va, gpa: Some(t.pa.0) });
                }
                let perms = super::views::PermsReport::from_flags(t.flags);
                let violates = if check == Check::TextRo { perms.writable } else { perms.user };
                if violates {
                    match bad.last_mut() {
                        Some(b) if b.1 == va => b.1 = va + 4096,
                        _ => bad.push((va, va + 4096)),
                    }
                }
            }
            Err(_) => unmapped += 1,
        }
        va += 4096;
    }
    let what = if check == Check::TextRo { "writable" } else { "user-accessible" };
    let violations = bad.iter().map(|(s, e)| format!("kernel text {s:#x}-{:#x} is {what}", e - 1)).collect::<Vec<_>>();
    CheckResult::new(
        check,
        format!("{pages} text pages {start:#x}-{:#x} checked, {unmapped} unmapped", end.saturating_sub(1)),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_core::addr::PhysAddr;

    /// A fake KVM that agrees with the walker except at one address.
    struct Fake<'m>(&'m GuestMemoryMmap, u64);
    impl GvaTranslator for Fake<'_> {
        fn translate(&mut self, cr3: u64, gva: u64) -> Result<Option<u64>, String> {
            let ctx = CpuContext::kernel(PhysAddr(cr3));
            let r = walk(&GuestPhys(self.0), &ctx, VirtAddr(gva)).ok().map(|t| t.pa.0);
            Ok(if gva == self.1 { r.map(|a| a + 0x1000) } else { r })
        }
    }

    fn mem() -> GuestMemoryMmap {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let w = |a: u64, v: u64| m.write_obj(v, GuestAddress(a)).unwrap();
        // -2 GiB: a 2 MiB RW+X page (W^X violation) and, via a PT, a
        // read-only text page and a user page.
        w(0x1000 + 511 * 8, 0x2000 | 7);
        w(0x2000 + 510 * 8, 0x3000 | 7);
        w(0x3000, 0x83);
        w(0x3000 + 8, 0x4000 | 7);
        w(0x4000, 0x5000 | 1);
        w(0x4000 + 8, 0x6000 | 5 | (1 << 63));
        m
    }

    const BUDGET: u64 = super::super::views::DEFAULT_BUDGET;

    #[test]
    fn cross_check_names_the_disagreement() {
        let m = mem();
        let ctx = CpuContext::kernel(PhysAddr(0x1000));
        let mut log = vec![];
        let l = sample(&GuestPhys(&m), &ctx, BUDGET, &mut log);
        assert_eq!(l.count, 3);
        assert!(log.iter().any(|o| o.gpa.is_none()), "samples include unmapped addresses");
        assert!(kvm_cross_check(&log, &mut Fake(&m, 1)).passed);
        let bad = kvm_cross_check(&log, &mut Fake(&m, 0xffff_ffff_8000_0000));
        assert!(!bad.passed && bad.violated());
        assert!(bad.violations[0].contains("KVM_TRANSLATE says GPA 0x1000"), "{:?}", bad.violations);
    }

    #[test]
    fn the_sample_stays_bounded_and_spread() {
        let mut s = Sampler::default();
        for i in 0..1_000_000u64 {
            let perms = crate::inspect::views::PermsReport::from_flags(mm_core::paging::PteFlags::PRESENT);
            s.feed(&TlbEntry { va: i << 12, pa: 0, size: 4096, perms, leaf: 1 });
        }
        assert!(s.leaves.len() < KVM_SAMPLE_MAX / 2);
        assert!(*s.leaves.last().unwrap() > 900_000 << 12, "the sample reaches the end");
    }

    #[test]
    fn wx_and_text_checks() {
        let m = mem();
        let ctx = CpuContext::kernel(PhysAddr(0x1000));
        let r = wx(&GuestPhys(&m), &ctx, BUDGET);
        assert!(!r.passed);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].starts_with("0xffffffff80000000-0xffffffff801fffff"), "{:?}", r.violations);
        let text_range = Some((0xffff_ffff_8020_0000, 0xffff_ffff_8020_1000));
        let mut log = vec![];
        assert!(text(&GuestPhys(&m), &ctx, text_range, Check::TextRo, &mut log).passed);
        assert!(text(&GuestPhys(&m), &ctx, text_range, Check::TextUser, &mut log).passed);
        let user_page = Some((0xffff_ffff_8020_1000, 0xffff_ffff_8020_2000));
        let r = text(&GuestPhys(&m), &ctx, user_page, Check::TextUser, &mut log);
        assert!(!r.passed && r.violations[0].contains("user-accessible"), "{r:?}");
        let r = text(&GuestPhys(&m), &ctx, None, Check::TextRo, &mut log);
        assert!(!r.passed && r.status == "error", "no symbols: not run, not passed: {r:?}");
        assert!(r.render().starts_with("verify text-ro: ERROR"), "{}", r.render());
    }

    /// The false pass of issue 12: many harmless leaves, then one W+X
    /// page. The check sees it, or fails as incomplete when the budget is
    /// too small to reach it; it never says ok.
    #[test]
    fn a_wx_page_past_many_leaves_is_found_or_the_check_fails() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let w = |a: u64, v: u64| m.write_obj(v, GuestAddress(a)).unwrap();
        // Every PGD entry but the last -> one PUD whose every entry -> one
        // PMD whose every entry -> one PT of read-only NX pages; the last
        // PGD entry maps one W+X page.
        for i in 0..511u64 {
            w(0x1000 + 8 * i, 0x2000 | 7);
        }
        for i in 0..512u64 {
            w(0x2000 + 8 * i, 0x3000 | 7);
            w(0x3000 + 8 * i, 0x4000 | 7);
            w(0x4000 + 8 * i, 0x8000 | 5 | 1 << 63);
        }
        w(0x1000 + 511 * 8, 0x5000 | 3);
        w(0x5000, 0x6000 | 3);
        w(0x6000, 0x7000 | 3);
        w(0x7000, 0x9000 | 3);
        let ctx = CpuContext::kernel(PhysAddr(0x1000));
        let r = wx(&GuestPhys(&m), &ctx, 1 << 18);
        assert!(!r.passed && r.status == "error", "{r:?}");
        assert!(r.errors[0].contains("raise --budget"), "{r:?}");
        assert!(!r.detail.contains(&format!("{}", 511u64 << 27)), "counts only what it examined: {}", r.detail);
    }
}
