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

/// Exit counts shared by the run loop (which adds) and the inspector
/// (which takes them at checkpoints).
#[derive(Debug, Clone, Default)]
pub struct ExitCounter(Arc<Mutex<BTreeMap<ExitReason, u64>>>);

impl ExitCounter {
    /// Counts one exit.
    pub fn record(&self, r: ExitReason) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(r).or_insert(0) += 1;
        }
    }

    /// The counts so far, reset to zero.
    pub fn take(&self) -> BTreeMap<ExitReason, u64> {
        self.0.lock().map(|mut m| std::mem::take(&mut *m)).unwrap_or_default()
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
}

impl ExitsReport {
    /// From counts taken at a checkpoint.
    pub fn new(since: String, counts: &BTreeMap<ExitReason, u64>) -> Self {
        let mut exits: Vec<ExitLine> =
            counts.iter().map(|(r, &count)| ExitLine { reason: *r, what: r.describe(), count }).collect();
        exits.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
        ExitsReport { since, total: counts.values().sum(), exits }
    }

    /// A table.
    pub fn render(&self) -> String {
        let mut s = format!("VM exits since {}: {}\n", self.since, self.total);
        for e in &self.exits {
            let _ = writeln!(s, "  {:>10}  {}", e.count, e.what);
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
    }
}
