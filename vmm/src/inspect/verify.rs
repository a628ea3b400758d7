//! `--verify`: cross-checks at a checkpoint. Every translation the views
//! made (plus a sample of each root's mappings) is compared with
//! `KVM_TRANSLATE` (GPA and validity only: KVM's permission flags are
//! constants, platform.md); W^X over every mapping; kernel text neither
//! writable nor user-accessible. Invariants that need the guest's
//! memory-manager descriptor are in [`super::invariants`].

use super::spec::Check;
use super::views::{MappingsReport, Observed};
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

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Which check.
    pub check: Check,
    /// No violation.
    pub passed: bool,
    /// What was checked ("1042 translations agree").
    pub detail: String,
    /// Each violation, in words.
    pub violations: Vec<String>,
}

impl CheckResult {
    /// A result: passed when there is no violation.
    pub fn new(check: Check, detail: String, violations: Vec<String>) -> Self {
        CheckResult { check, passed: violations.is_empty(), detail, violations }
    }

    /// One line, plus one per violation (at most 8 listed).
    pub fn render(&self) -> String {
        let mut s =
            format!("verify {}: {} ({})\n", self.check, if self.passed { "ok" } else { "VIOLATION" }, self.detail);
        for v in self.violations.iter().take(8) {
            let _ = writeln!(s, "  {v}");
        }
        if self.violations.len() > 8 {
            let _ = writeln!(s, "  ... and {} more", self.violations.len() - 8);
        }
        s
    }
}

/// One result for check `c` from its results per root (same order as
/// `roots`); violations name their root when there are several.
pub fn combine(c: Check, roots: &[u64], per_root: Vec<CheckResult>) -> Option<CheckResult> {
    if per_root.len() <= 1 {
        return per_root.into_iter().next();
    }
    let mut detail = Vec::new();
    let mut violations = Vec::new();
    for (cr3, r) in roots.iter().zip(per_root) {
        detail.push(format!("CR3 {cr3:#x}: {}", r.detail));
        violations.extend(r.violations.into_iter().map(|v| format!("CR3 {cr3:#x}: {v}")));
    }
    Some(CheckResult::new(c, detail.join("; "), violations))
}

/// Records the walker's answer for `va` under `ctx` for the cross-check.
pub fn observe<M: PhysMem + ?Sized>(mem: &M, ctx: &CpuContext, va: u64, log: &mut Vec<Observed>) {
    match walk(mem, ctx, VirtAddr(va)) {
        Ok(t) => log.push(Observed { cr3: ctx.cr3, va, gpa: Some(t.pa.0) }),
        Err(Fault::NonCanonical(_)) => {}
        Err(_) => log.push(Observed { cr3: ctx.cr3, va, gpa: None }),
    }
}

/// Adds a sample of `m`'s mappings to `log`: the first byte of each range
/// of `info mem`, the last byte, the first address past it (normally
/// unmapped), and evenly spaced leaves, [`KVM_SAMPLE_MAX`] in all at most.
pub fn sample<M: PhysMem + ?Sized>(mem: &M, ctx: &CpuContext, m: &MappingsReport, log: &mut Vec<Observed>) {
    let mut vas = Vec::new();
    for r in m.ranges().ranges {
        vas.extend([r.start, (r.end.wrapping_sub(1) & !0xfff) | 0xff8, r.end]);
    }
    let stride = (m.entries.len() / (KVM_SAMPLE_MAX / 2).max(1)).max(1);
    vas.extend(m.entries.iter().step_by(stride).map(|e| e.va + e.size / 2));
    vas.truncate(KVM_SAMPLE_MAX);
    for va in vas {
        observe(mem, ctx, va, log);
    }
}

/// Compares every observed translation with the translator.
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
            Err(e) => errors.push(e),
        }
    }
    violations.extend(errors.into_iter().take(1));
    CheckResult::new(
        Check::Kvm,
        format!("{n} translations compared with KVM_TRANSLATE, {} disagree", violations.len()),
        violations,
    )
}

/// W^X: no leaf both writable and executable.
pub fn wx(m: &MappingsReport, nxe: bool) -> CheckResult {
    let mut ranges: Vec<(u64, u64, u64)> = Vec::new();
    let mut pages = 0u64;
    for e in m.entries.iter().filter(|e| e.perms.writable && !e.perms.nx) {
        pages += 1;
        match ranges.last_mut() {
            Some(r) if r.1 == e.va => {
                r.1 = e.va.wrapping_add(e.size);
                r.2 += 1;
            }
            _ => ranges.push((e.va, e.va.wrapping_add(e.size), 1)),
        }
    }
    let hint = if nxe { "" } else { "; EFER.NXE is off, so nothing can be no-execute" };
    let violations = ranges
        .iter()
        .map(|(s, e, n)| format!("{s:#018x}-{:#018x}: {n} pages writable and executable{hint}", e.wrapping_sub(1)))
        .collect();
    CheckResult::new(Check::Wx, format!("{} leaves checked, {pages} writable+executable", m.count), violations)
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
        return CheckResult::new(
            check,
            "skipped: the kernel has no __text_start/__text_end symbols".into(),
            Vec::new(),
        );
    };
    let mut bad: Vec<(u64, u64)> = Vec::new();
    let mut unmapped = 0;
    let mut va = start & !0xfff;
    let mut pages = 0;
    while va < end {
        pages += 1;
        match walk(mem, ctx, VirtAddr(va)) {
            Ok(t) => {
                log.push(Observed { cr3: ctx.cr3, va, gpa: Some(t.pa.0) });
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
    use crate::inspect::views::collect_mappings;
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

    #[test]
    fn cross_check_names_the_disagreement() {
        let m = mem();
        let ctx = CpuContext::kernel(PhysAddr(0x1000));
        let maps = collect_mappings(&GuestPhys(&m), &ctx);
        let mut log = vec![];
        sample(&GuestPhys(&m), &ctx, &maps, &mut log);
        assert!(log.iter().any(|o| o.gpa.is_none()), "samples include unmapped addresses");
        assert!(kvm_cross_check(&log, &mut Fake(&m, 1)).passed);
        let bad = kvm_cross_check(&log, &mut Fake(&m, 0xffff_ffff_8000_0000));
        assert!(!bad.passed);
        assert!(bad.violations[0].contains("KVM_TRANSLATE says GPA 0x1000"), "{:?}", bad.violations);
    }

    #[test]
    fn wx_and_text_checks() {
        let m = mem();
        let ctx = CpuContext::kernel(PhysAddr(0x1000));
        let maps = collect_mappings(&GuestPhys(&m), &ctx);
        let r = wx(&maps, true);
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
        assert!(text(&GuestPhys(&m), &ctx, None, Check::TextRo, &mut log).passed, "skipped without symbols");
    }
}
