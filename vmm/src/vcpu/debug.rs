//! The channel between a vCPU's run loop and a debugger on another thread
//! (the gdb stub), after Firecracker's vCPU: the vCPU parks (a paused
//! state in its own loop, the lock on the vCPU released) and tells the
//! debugger why ([`DebugStop`]); while it is parked the debugger reads and
//! writes its state through [`crate::kvm::Vcpu`], then tells it what to do
//! ([`DebugCommand`]). A debugger asks a running vCPU to park with
//! [`Debugger::request_stop`], which kicks it out of `KVM_RUN` with the
//! event loop's signal.
//!
//! The vCPU parks for the debugger when asked, and, while a debugger is
//! attached, at every debug exit and every crash (the debugger decides
//! whether a crash ends the run). Checkpoints and pauses are not the
//! debugger's: the run loop serves them itself, attached or not.

use super::{lock, Crash, SharedVcpu, VcpuStop};
use kvm_bindings::kvm_debug_exit_arch;
use kvm_ioctls::VcpuFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use vmm_sys_util::eventfd::EventFd;

/// Why a vCPU parked for the debugger (or, [`DebugStop::Ended`], stopped
/// for good).
#[derive(Debug, Clone, PartialEq)]
pub enum DebugStop {
    /// The debugger asked ([`Debugger::request_stop`]).
    Requested,
    /// A debug exit: single-step or breakpoint.
    Debug(kvm_debug_exit_arch),
    /// The guest crashed, or halted with nothing to wake it.
    Crash(Crash),
    /// The run is over (the vCPU waits for nothing).
    Ended(VcpuStop),
}

/// What a parked vCPU is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebugCommand {
    /// Run on (with whatever guest-debug state the debugger set).
    Resume,
    /// Run on without the debugger: no more parking at debug exits or
    /// crashes.
    Detach,
    /// End the run this way.
    End(VcpuStop),
}

/// How often a parked vCPU looks at the VMM's stop flag, and how often a
/// debugger waiting for a stop kicks the vCPU again (a kick landing
/// between the loop's check and `KVM_RUN` is lost).
const POLL: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Shared {
    attached: AtomicBool,
    stop_requested: AtomicBool,
    ended: AtomicBool,
    /// The vCPU thread while it runs the loop; the lock is held across a
    /// kick, so the thread cannot end (and its handle go stale) meanwhile.
    thread: Mutex<Option<libc::pthread_t>>,
}

/// The vCPU's end of the channel, owned by its [`super::VcpuRunner`].
pub struct VcpuDebug {
    shared: Arc<Shared>,
    stops: Sender<DebugStop>,
    notify: EventFd,
    commands: Receiver<DebugCommand>,
}

/// The debugger's end.
pub struct Debugger {
    shared: Arc<Shared>,
    stops: Receiver<DebugStop>,
    notify: EventFd,
    commands: Sender<DebugCommand>,
    vcpu: SharedVcpu,
    index: usize,
}

/// A connected pair for vCPU `index`.
pub fn channel(vcpu: SharedVcpu, index: usize) -> std::io::Result<(VcpuDebug, Debugger)> {
    let shared = Arc::new(Shared::default());
    let notify = EventFd::new(libc::EFD_NONBLOCK)?;
    let (stop_tx, stop_rx) = mpsc::channel();
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let v = VcpuDebug { shared: shared.clone(), stops: stop_tx, notify: notify.try_clone()?, commands: cmd_rx };
    let d = Debugger { shared, stops: stop_rx, notify, commands: cmd_tx, vcpu, index };
    Ok((v, d))
}

impl VcpuDebug {
    /// Called on the vCPU thread before it runs: where kicks go.
    pub fn register_thread(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *self.shared.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(me);
    }

    /// Whether a debugger is attached.
    pub fn attached(&self) -> bool {
        self.shared.attached.load(Ordering::SeqCst)
    }

    /// Whether the debugger asked the vCPU to park.
    pub fn stop_requested(&self) -> bool {
        self.shared.stop_requested.load(Ordering::SeqCst)
    }

    /// Parks: tells the debugger why and waits for its command (or for the
    /// VMM's `stop`). `Some` when the run is to end.
    pub fn park(&self, why: DebugStop, stop: &AtomicBool) -> Option<VcpuStop> {
        // Any stop answers a pending request.
        self.shared.stop_requested.store(false, Ordering::SeqCst);
        if self.stops.send(why).is_err() {
            // The debugger is gone: run on without it.
            self.shared.attached.store(false, Ordering::SeqCst);
            return None;
        }
        let _ = self.notify.write(1);
        loop {
            match self.commands.recv_timeout(POLL) {
                Ok(DebugCommand::Resume) => return None,
                Ok(DebugCommand::Detach) => {
                    self.shared.attached.store(false, Ordering::SeqCst);
                    return None;
                }
                Ok(DebugCommand::End(s)) => return Some(s),
                Err(RecvTimeoutError::Timeout) => {
                    if stop.load(Ordering::Acquire) {
                        return Some(VcpuStop::Stopped);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.shared.attached.store(false, Ordering::SeqCst);
                    return None;
                }
            }
        }
    }

    /// The run is over: an attached debugger is told how.
    pub fn ended(&self, end: Option<&VcpuStop>) {
        // No kicks from here on: this thread is about to end.
        *self.shared.thread.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.shared.ended.store(true, Ordering::SeqCst);
        if self.attached() {
            let _ = self.stops.send(DebugStop::Ended(end.cloned().unwrap_or(VcpuStop::Stopped)));
        }
        let _ = self.notify.write(1);
    }
}

impl Debugger {
    /// The vCPU's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The vCPU's state. Only while it is parked: a running vCPU holds the
    /// lock inside `KVM_RUN`.
    pub fn vcpu(&self) -> MutexGuard<'_, VcpuFd> {
        lock(&self.vcpu)
    }

    /// Readable when the vCPU sent a stop or ended (for epoll);
    /// [`Debugger::try_stop`] takes it. The channel is the truth: a reader
    /// may drain it at any time.
    pub fn notify(&self) -> &EventFd {
        &self.notify
    }

    /// Whether the vCPU's run is over.
    pub fn ended(&self) -> bool {
        self.shared.ended.load(Ordering::SeqCst)
    }

    /// Parks the vCPU before its first instruction (`--gdb-wait`).
    pub fn hold_at_start(&self) {
        self.shared.stop_requested.store(true, Ordering::SeqCst);
    }

    /// Asks the running vCPU to park: it will send [`DebugStop::Requested`]
    /// (or whatever stop came first).
    pub fn request_stop(&self) {
        self.shared.stop_requested.store(true, Ordering::SeqCst);
        self.kick();
    }

    fn kick(&self) {
        let thread = self.shared.thread.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = *thread {
            // SAFETY: `t` is the vCPU thread's own handle, stored by it, and
            // it stays live while the lock is held: the thread clears it
            // (under the lock) before it leaves the run loop. The signal's
            // handler (the event loop's kick) only interrupts `KVM_RUN`.
            unsafe {
                libc::pthread_kill(t, vmm_sys_util::signal::SIGRTMIN());
            }
        }
    }

    /// A stop the vCPU sent, if any (never blocks).
    pub fn try_stop(&self) -> Option<DebugStop> {
        let _ = self.notify.read();
        let s = self.stops.try_recv().ok()?;
        self.shared.stop_requested.store(false, Ordering::SeqCst);
        Some(s)
    }

    /// Waits for the vCPU's next stop, kicking it again while a requested
    /// stop is pending; `None` when the run ended without telling (the
    /// debugger was not attached) or `cancel` says so.
    pub fn wait_stop(&self, cancel: &dyn Fn() -> bool) -> Option<DebugStop> {
        loop {
            match self.stops.recv_timeout(POLL) {
                Ok(s) => {
                    let _ = self.notify.read();
                    self.shared.stop_requested.store(false, Ordering::SeqCst);
                    return Some(s);
                }
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.ended() {
                // The last word may have been sent just before `ended`.
                return self.stops.try_recv().ok();
            }
            if cancel() {
                return None;
            }
            if self.shared.stop_requested.load(Ordering::SeqCst) {
                self.kick();
            }
        }
    }

    /// Attaches: parks the vCPU and returns its stop (`None` if the run
    /// ended first or `cancel` said so).
    pub fn attach(&self, cancel: &dyn Fn() -> bool) -> Option<DebugStop> {
        self.shared.attached.store(true, Ordering::SeqCst);
        self.request_stop();
        self.wait_stop(cancel)
    }

    /// Resumes the parked vCPU.
    pub fn resume(&self) {
        let _ = self.commands.send(DebugCommand::Resume);
    }

    /// Resumes the parked vCPU without the debugger.
    pub fn detach(&self) {
        self.shared.attached.store(false, Ordering::SeqCst);
        let _ = self.commands.send(DebugCommand::Detach);
    }

    /// Ends the run of the parked vCPU.
    pub fn end(&self, how: VcpuStop) {
        let _ = self.commands.send(DebugCommand::End(how));
    }
}
