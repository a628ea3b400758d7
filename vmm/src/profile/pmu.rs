//! The host's PMU, read through perf, for `--count-insns`: retired
//! instructions of one vCPU's guest mode, split by the guest's privilege
//! level.
//!
//! Single-stepping sees ring 0 only (ring 3 runs natively where KVM's
//! trap flag goes to the guest), so the stepping counter reports ring 3
//! as stretches. Where the host has a hardware PMU, perf counts what the
//! stepping cannot: a counter opened on the vCPU's thread with
//! `exclude_host` counts only while that thread is in guest mode, and the
//! counter's user/kernel filters then apply to the *guest's* CPL, so
//! `exclude_host + exclude_kernel` is the guest's ring-3 instruction
//! count, exactly. Hosts without one (this project's build machines: no
//! `arch_perfmon`, no `cpu` event source) refuse the counter; the window
//! says why and keeps its stretch count.

use perf_event::events::Hardware;
use perf_event::{Builder, Counter};
use std::io;

/// What could not be counted, and why.
#[derive(Debug, thiserror::Error)]
pub enum PmuError {
    /// perf has no hardware instruction counter here.
    #[error("this host has no hardware PMU for perf (perf_event_open of the instructions counter: {0}); ring 3 is counted as stretches only")]
    NoPmu(io::Error),
    /// perf refused for another reason (permissions, limits).
    #[error("perf refused the guest instruction counters ({0}); check /proc/sys/kernel/perf_event_paranoid (2 or lower lets a process count its own threads)")]
    Refused(io::Error),
    /// Reading or starting the counters failed.
    #[error("the guest instruction counters failed: {0}")]
    Io(io::Error),
}

/// Retired-instruction counters of the calling thread's guest mode: one
/// for guest ring 3, one for guest ring 0.
pub struct GuestInsns {
    user: Counter,
    kernel: Counter,
}

/// The counts a window read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GuestInsnCounts {
    /// Instructions the guest retired at CPL 3.
    pub ring3: u64,
    /// Instructions the guest retired at CPL 0 (interrupts and idle
    /// included, unlike the stepped count).
    pub ring0: u64,
}

fn counter(exclude_user: bool, exclude_kernel: bool) -> Result<Counter, PmuError> {
    Builder::new(Hardware::INSTRUCTIONS)
        .observe_self()
        .any_cpu()
        .exclude_host(true)
        .exclude_hv(true)
        .exclude_user(exclude_user)
        .exclude_kernel(exclude_kernel)
        .build()
        .map_err(|e| match e.raw_os_error() {
            // No such event (no PMU), or one the PMU cannot filter so.
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => PmuError::NoPmu(e),
            _ => PmuError::Refused(e),
        })
}

impl GuestInsns {
    /// Opens and starts the counters on the calling thread, which must be
    /// the vCPU's own (perf follows the thread, not the vCPU).
    pub fn start() -> Result<GuestInsns, PmuError> {
        let mut user = counter(false, true)?;
        let mut kernel = counter(true, false)?;
        user.enable().map_err(PmuError::Io)?;
        kernel.enable().map_err(PmuError::Io)?;
        Ok(GuestInsns { user, kernel })
    }

    /// Stops the counters and reads them.
    pub fn stop(mut self) -> Result<GuestInsnCounts, PmuError> {
        self.user.disable().map_err(PmuError::Io)?;
        self.kernel.disable().map_err(PmuError::Io)?;
        Ok(GuestInsnCounts {
            ring3: self.user.read().map_err(PmuError::Io)?,
            ring0: self.kernel.read().map_err(PmuError::Io)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Either the counters work (a host with a PMU: this thread ran no
    /// guest, so both read 0) or they fail with a reason that names the
    /// PMU or perf's settings; never a silent zero with an error hidden.
    #[test]
    fn counters_start_or_say_why() {
        match GuestInsns::start() {
            Ok(c) => {
                let n = c.stop().expect("read the counters");
                assert_eq!(n, GuestInsnCounts { ring3: 0, ring0: 0 }, "no guest ran on this thread");
            }
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains("PMU") || m.contains("perf_event_paranoid"), "{m}");
                // A host whose perf lists no `cpu` event source (this
                // project's machines) has no hardware counter to give.
                if !std::path::Path::new("/sys/bus/event_source/devices/cpu").exists() {
                    assert!(matches!(e, PmuError::NoPmu(_)), "{m}");
                }
            }
        }
    }
}
