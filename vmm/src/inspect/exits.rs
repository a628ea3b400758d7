//! The `exits` view: VM exits by reason (I/O port with its number, MMIO,
//! HLT, debug, signal...) since the previous checkpoint. The run loops
//! count every exit into an [`ExitCounter`] (a mutex per exit costs tens of
//! nanoseconds against an exit's microseconds); the inspector takes the
//! counts at every checkpoint, inspected or not, so each figure covers
//! exactly the stretch of guest execution between two checkpoints.

use kvm_ioctls::VcpuExit;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Why the vCPU left `KVM_RUN`, at the grain the view reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "reason", content = "port", rename_all = "kebab-case")]
pub enum ExitReason {
    /// `out` to a port.
    IoOut(u16),
    /// `in` from a port.
    IoIn(u16),
    /// A read of unbacked guest-physical memory.
    MmioRead,
    /// A write to unbacked guest-physical memory.
    MmioWrite,
    /// `hlt`.
    Hlt,
    /// A debug exit (single-step, breakpoint).
    Debug,
    /// KVM_EXIT_INTR, or `KVM_RUN` interrupted by a signal (a kick).
    Interrupted,
    /// Shutdown (triple fault).
    Shutdown,
    /// KVM internal error (emulation failure).
    InternalError,
    /// Anything else.
    Other,
}

impl ExitReason {
    /// The reason of an exit.
    pub fn of(exit: &VcpuExit<'_>) -> Self {
        match exit {
            VcpuExit::IoOut(p, _) => ExitReason::IoOut(*p),
            VcpuExit::IoIn(p, _) => ExitReason::IoIn(*p),
            VcpuExit::MmioRead(..) => ExitReason::MmioRead,
            VcpuExit::MmioWrite(..) => ExitReason::MmioWrite,
            VcpuExit::Hlt => ExitReason::Hlt,
            VcpuExit::Debug(_) => ExitReason::Debug,
            VcpuExit::Intr => ExitReason::Interrupted,
            VcpuExit::Shutdown => ExitReason::Shutdown,
            VcpuExit::InternalError => ExitReason::InternalError,
            _ => ExitReason::Other,
        }
    }

    /// In words, with the port's name where the VMM knows it.
    pub fn describe(&self) -> String {
        let port_name = |p: u16| match p {
            crate::devices::CHECKPOINT_PORT => " (checkpoint)",
            crate::devices::EXIT_PORT => " (exit)",
            crate::devices::RESULTS_PORT => " (self-test results)",
            crate::devices::DESCRIPTOR_PORT | crate::devices::DESCRIPTOR_PORT_HIGH => " (descriptor)",
            p if p == crate::devices::SYMBOL_PORT || p == crate::devices::SYMBOL_PORT + 4 => " (symbols)",
            p if (crate::devices::COM1..crate::devices::COM1 + 8).contains(&p) => " (COM1)",
            _ => "",
        };
        match self {
            ExitReason::IoOut(p) => format!("I/O out port {p:#x}{}", port_name(*p)),
            ExitReason::IoIn(p) => format!("I/O in port {p:#x}{}", port_name(*p)),
            ExitReason::MmioRead => "MMIO read".into(),
            ExitReason::MmioWrite => "MMIO write".into(),
            ExitReason::Hlt => "HLT".into(),
            ExitReason::Debug => "debug".into(),
            ExitReason::Interrupted => "interrupted (signal)".into(),
            ExitReason::Shutdown => "shutdown".into(),
            ExitReason::InternalError => "internal error".into(),
            ExitReason::Other => "other".into(),
        }
    }
}

/// Exit counts shared by the run loops (which add, each for its vCPU) and
/// the inspector (which takes them at checkpoints).
#[derive(Debug, Clone, Default)]
pub struct ExitCounter(Arc<Mutex<Vec<BTreeMap<ExitReason, u64>>>>);

impl ExitCounter {
    /// Counts one exit of vCPU 0.
    pub fn record(&self, r: ExitReason) {
        self.record_on(0, r);
    }

    /// Counts one exit of vCPU `vcpu`.
    pub fn record_on(&self, vcpu: usize, r: ExitReason) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() <= vcpu {
                m.resize_with(vcpu + 1, BTreeMap::new);
            }
            *m[vcpu].entry(r).or_insert(0) += 1;
        }
    }

    /// The counts so far of every vCPU together, reset to zero.
    pub fn take(&self) -> BTreeMap<ExitReason, u64> {
        let mut total = BTreeMap::new();
        for m in self.take_per_vcpu() {
            for (r, n) in m {
                *total.entry(r).or_insert(0) += n;
            }
        }
        total
    }

    /// The counts so far by vCPU index, reset to zero.
    pub fn take_per_vcpu(&self) -> Vec<BTreeMap<ExitReason, u64>> {
        self.0.lock().map(|mut m| m.iter_mut().map(std::mem::take).collect()).unwrap_or_default()
    }
}

/// One line of the view.
#[derive(Debug, Clone, Serialize)]
pub struct ExitLine {
    /// The reason.
    #[serde(flatten)]
    pub reason: ExitReason,
    /// In words.
    pub what: String,
    /// Exits.
    pub count: u64,
}

/// The `exits` view.
#[derive(Debug, Clone, Serialize)]
pub struct ExitsReport {
    /// "checkpoint 'x'" or "the start of the run".
    pub since: String,
    /// All exits.
    pub total: u64,
    /// By reason, most frequent first.
    pub exits: Vec<ExitLine>,
    /// With several vCPUs: each one's exits (none with one vCPU).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_vcpu: Vec<VcpuExits>,
}

/// One vCPU's share of the `exits` view.
#[derive(Debug, Clone, Serialize)]
pub struct VcpuExits {
    /// The vCPU's index.
    pub vcpu: usize,
    /// Its exits.
    pub total: u64,
    /// By reason, most frequent first.
    pub exits: Vec<ExitLine>,
}

fn lines(counts: &BTreeMap<ExitReason, u64>) -> Vec<ExitLine> {
    let mut exits: Vec<ExitLine> =
        counts.iter().map(|(r, &count)| ExitLine { reason: *r, what: r.describe(), count }).collect();
    exits.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    exits
}

impl ExitsReport {
    /// From counts taken at a checkpoint.
    pub fn new(since: String, counts: &BTreeMap<ExitReason, u64>) -> Self {
        ExitsReport { since, total: counts.values().sum(), exits: lines(counts), per_vcpu: Vec::new() }
    }

    /// From the per-vCPU counts taken at a checkpoint of a VM with `vcpus`
    /// vCPUs: the totals, and each vCPU's share when there are several.
    pub fn by_vcpu(since: String, per: &[BTreeMap<ExitReason, u64>], vcpus: usize) -> Self {
        let mut total = BTreeMap::new();
        for m in per {
            for (r, n) in m {
                *total.entry(*r).or_insert(0) += n;
            }
        }
        let mut r = Self::new(since, &total);
        if vcpus > 1 {
            let empty = BTreeMap::new();
            r.per_vcpu = (0..vcpus)
                .map(|i| {
                    let m = per.get(i).unwrap_or(&empty);
                    VcpuExits { vcpu: i, total: m.values().sum(), exits: lines(m) }
                })
                .collect();
        }
        r
    }

    /// A table.
    pub fn render(&self) -> String {
        let mut s = format!("VM exits since {}: {}\n", self.since, self.total);
        for e in &self.exits {
            let _ = writeln!(s, "  {:>10}  {}", e.count, e.what);
        }
        for v in &self.per_vcpu {
            let _ = writeln!(s, "  vCPU {}: {}", v.vcpu, v.total);
            for e in &v.exits {
                let _ = writeln!(s, "    {:>10}  {}", e.count, e.what);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_taken_and_reset() {
        let c = ExitCounter::default();
        for _ in 0..3 {
            c.record(ExitReason::of(&VcpuExit::IoOut(0x510, &[0])));
        }
        c.record(ExitReason::of(&VcpuExit::Hlt));
        let r = ExitsReport::new("the start of the run".into(), &c.take());
        assert_eq!(r.total, 4);
        assert_eq!(r.exits[0].what, "I/O out port 0x510 (checkpoint)");
        assert_eq!(r.exits[0].count, 3);
        assert!(r.render().contains("         1  HLT"), "{}", r.render());
        assert!(c.take().is_empty());
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["exits"][0]["reason"], "io-out");
        assert_eq!(j["exits"][0]["port"], 0x510);
        assert!(j.get("per_vcpu").is_none(), "one vCPU: no per-vCPU part");
    }

    #[test]
    fn exits_split_by_vcpu() {
        let c = ExitCounter::default();
        c.record_on(0, ExitReason::of(&VcpuExit::Hlt));
        c.record_on(2, ExitReason::of(&VcpuExit::IoOut(0x3f8, b"x")));
        c.record_on(2, ExitReason::of(&VcpuExit::IoOut(0x3f8, b"x")));
        let r = ExitsReport::by_vcpu("the start of the run".into(), &c.take_per_vcpu(), 3);
        assert_eq!(r.total, 3);
        assert_eq!(r.per_vcpu.iter().map(|v| v.total).collect::<Vec<_>>(), [1, 0, 2]);
        assert!(r.render().contains("  vCPU 2: 2\n"), "{}", r.render());
        assert!(c.take().is_empty());
    }
}
