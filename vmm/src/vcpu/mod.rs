//! Running the vCPU: the `KVM_RUN` loop and what each exit means.
//!
//! [`handle_exit`] is a free function over the exit alone, so unit tests
//! feed it exits without a VM (as Firecracker's vCPU tests do).

pub mod report;

use crate::devices::{PortAction, PortBus};
pub use crate::inspect::checkpoint::{ParkHook, ParkVerdict};
use crate::inspect::exits::ExitReason;
use crate::inspect::pause;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why the guest stopped running for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crash {
    /// KVM_EXIT_SHUTDOWN: a triple fault (or the guest asked for shutdown).
    Shutdown,
    /// KVM_EXIT_INTERNAL_ERROR with its suberror and data words.
    Internal {
        /// KVM_INTERNAL_ERROR_* code.
        suberror: u32,
        /// Extra data KVM gave.
        data: Vec<u64>,
    },
    /// KVM_EXIT_FAIL_ENTRY: the hardware refused the guest state.
    FailEntry {
        /// Hardware reason.
        reason: u64,
    },
    /// `hlt` with nothing that could wake the vCPU.
    Halted,
    /// An exit this VMM does not handle.
    Unexpected(String),
}

/// What the loop does after an exit.
#[derive(Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Run again.
    Continue,
    /// The guest asked to end with this status.
    Exit(u32),
    /// The guest cannot go on.
    Crash(Crash),
}

/// Decides what an exit means.
pub fn handle_exit(exit: VcpuExit, bus: &mut PortBus) -> ExitAction {
    bus.link().exits.record(ExitReason::of(&exit));
    match exit {
        VcpuExit::IoOut(port, data) => match bus.write(port, data) {
            PortAction::Continue => ExitAction::Continue,
            PortAction::Exit(code) => ExitAction::Exit(code),
        },
        VcpuExit::IoIn(port, data) => {
            bus.read(port, data);
            ExitAction::Continue
        }
        // The MMIO devices (virtio); elsewhere nothing is mapped: reads
        // see all-ones, writes vanish.
        VcpuExit::MmioRead(addr, data) => {
            if !bus.mmio.read(addr, data) {
                data.fill(0xff);
            }
            ExitAction::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            bus.mmio.write(addr, data);
            ExitAction::Continue
        }
        VcpuExit::Shutdown => ExitAction::Crash(Crash::Shutdown),
        // Without an interrupt controller no interrupt can ever arrive.
        VcpuExit::Hlt => ExitAction::Crash(Crash::Halted),
        VcpuExit::InternalError => ExitAction::Crash(Crash::Internal { suberror: 0, data: vec![] }),
        VcpuExit::FailEntry(reason, _) => ExitAction::Crash(Crash::FailEntry { reason }),
        VcpuExit::Intr => ExitAction::Continue,
        other => ExitAction::Crash(Crash::Unexpected(format!("{other:?}"))),
    }
}

/// How the run loop ended.
#[derive(Debug)]
pub enum VcpuStop {
    /// The guest wrote its exit status.
    Exit(u32),
    /// The guest died.
    Crash(Crash),
    /// The host asked it to stop (timeout, signal).
    Stopped,
}

/// Runs the vCPU until the guest exits or dies, or `stop` is set (the
/// caller then kicks the thread with a signal so `KVM_RUN` returns).
pub fn run(vcpu: &mut VcpuFd, bus: &mut PortBus, stop: &AtomicBool) -> Result<VcpuStop, kvm_ioctls::Error> {
    pause::register_vcpu_thread();
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(VcpuStop::Stopped);
        }
        if pause::take() && service_pause(vcpu, bus) == ParkVerdict::Stop {
            return Ok(VcpuStop::Stopped);
        }
        let action = match vcpu.run() {
            Ok(exit) => handle_exit(exit, bus),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                bus.link().exits.record(ExitReason::Interrupted);
                if halted_for_good(vcpu) {
                    return Ok(VcpuStop::Crash(Crash::Halted));
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        match action {
            ExitAction::Continue => {
                if service_checkpoint(vcpu, bus) == ParkVerdict::Stop {
                    return Ok(VcpuStop::Stopped);
                }
            }
            ExitAction::Exit(code) => return Ok(VcpuStop::Exit(code)),
            ExitAction::Crash(Crash::Internal { .. }) => return Ok(VcpuStop::Crash(internal_error(vcpu))),
            ExitAction::Crash(c) => return Ok(VcpuStop::Crash(c)),
        }
    }
}

/// True when the vCPU sits in `hlt` with interrupts masked: with the
/// interrupt controllers in KVM that never ends in an exit, and nothing but
/// an NMI (which this VMM never sends) could wake it.
fn halted_for_good(vcpu: &VcpuFd) -> bool {
    let halted = vcpu.get_mp_state().is_ok_and(|s| s.mp_state == kvm_bindings::KVM_MP_STATE_HALTED);
    halted && vcpu.get_regs().is_ok_and(|r| r.rflags & mm_core::abi::cpu::RFLAGS_IF == 0)
}

/// Serves the checkpoint the last exit completed, if any: runs the bus's
/// [`ParkHook`] with the vCPU still parked in that port write, before the
/// next `KVM_RUN`. Any run loop (this one, the gdb stub's) calls it after
/// an exit that continues; without a checkpoint or a hook it does nothing.
pub fn service_checkpoint(vcpu: &mut VcpuFd, bus: &mut PortBus) -> ParkVerdict {
    let Some(name) = bus.take_checkpoint() else {
        return ParkVerdict::Resume;
    };
    match bus.park_hook() {
        Some(hook) => hook.checkpoint(&name, vcpu),
        None => ParkVerdict::Resume,
    }
}

/// Serves a user's pause request (SIGUSR1, [`pause`]) as an ad-hoc
/// checkpoint named [`pause::PAUSE_CHECKPOINT`].
pub fn service_pause(vcpu: &mut VcpuFd, bus: &mut PortBus) -> ParkVerdict {
    match bus.park_hook() {
        Some(hook) => hook.checkpoint(pause::PAUSE_CHECKPOINT, vcpu),
        None => ParkVerdict::Resume,
    }
}

/// The details of the `KVM_EXIT_INTERNAL_ERROR` the vCPU just returned
/// (call it right after that exit, before the next `KVM_RUN`).
pub fn internal_error(vcpu: &mut VcpuFd) -> Crash {
    let run = vcpu.get_kvm_run();
    if run.exit_reason != kvm_bindings::KVM_EXIT_INTERNAL_ERROR {
        return Crash::Internal { suberror: 0, data: vec![] };
    }
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR (checked above), so
    // the `internal` member of the union is the one KVM filled.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    Crash::Internal { suberror: internal.suberror, data: internal.data[..n].to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{serial::SerialConsole, EXIT_PORT};
    use std::sync::{Arc, Mutex};

    fn bus() -> PortBus {
        PortBus::new(Arc::new(Mutex::new(SerialConsole::captured().0)), Arc::default())
    }

    #[test]
    fn exits_map_to_actions() {
        let mut b = bus();
        assert_eq!(handle_exit(VcpuExit::IoOut(EXIT_PORT, &[3, 0, 0, 0]), &mut b), ExitAction::Exit(3));
        assert_eq!(handle_exit(VcpuExit::IoOut(0x3f8, b"x"), &mut b), ExitAction::Continue);
        assert_eq!(handle_exit(VcpuExit::Shutdown, &mut b), ExitAction::Crash(Crash::Shutdown));
        assert_eq!(handle_exit(VcpuExit::Hlt, &mut b), ExitAction::Crash(Crash::Halted));
        assert_eq!(handle_exit(VcpuExit::FailEntry(7, 0), &mut b), ExitAction::Crash(Crash::FailEntry { reason: 7 }));
        let mut d = [0u8; 4];
        assert_eq!(handle_exit(VcpuExit::MmioRead(0xfee0_0000, &mut d), &mut b), ExitAction::Continue);
        assert_eq!(d, [0xff; 4]);
        assert!(matches!(handle_exit(VcpuExit::Unknown, &mut b), ExitAction::Crash(Crash::Unexpected(_))));
    }
}
