//! How a debugger (the gdb stub) drives a vCPU: on the vCPU's own thread.
//!
//! The vCPU parks when a debugger asks ([`Debugger::request_stop`], which
//! kicks it out of `KVM_RUN` with the event loop's signal) and serves the
//! debugger's session there ([`DebugSession::serve`]): the session reads
//! gdb's packets from its socket, reads and writes the parked vCPU's state,
//! and runs the guest on through [`GuestCpu::run`] (the same loop, which
//! serves checkpoints, `--inspect`/`--verify` and SIGUSR1 pauses itself)
//! until the next stop for the debugger: a debug exit, a crash, or a
//! requested stop. So a single step is: read the packet, `KVM_RUN`, write
//! the reply, on one thread with no hand-off (a design with the stub on its
//! own thread and a channel cost two thread wake-ups per step). Another
//! thread (the stub's) only watches the socket while the guest runs and
//! asks the vCPU to park when gdb sends something (Ctrl-C).

use super::{Crash, VcpuStop};
use kvm_bindings::kvm_debug_exit_arch;
use kvm_ioctls::VcpuFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use vmm_sys_util::eventfd::EventFd;

/// Why a vCPU stopped for the debugger (or, [`DebugStop::Ended`], for good).
#[derive(Debug, Clone, PartialEq)]
pub enum DebugStop {
    /// The debugger asked ([`Debugger::request_stop`]).
    Requested,
    /// A debug exit: single-step or breakpoint.
    Debug(kvm_debug_exit_arch),
    /// The guest crashed, or halted with nothing to wake it.
    Crash(Crash),
    /// The run is over.
    Ended(VcpuStop),
}

/// The parked vCPU as a debugger session sees it, with the other vCPUs of
/// the VM (each a gdb thread), all stopped while the session looks.
pub trait GuestCpu {
    /// The vCPU's index (0 is the boot CPU): the one whose thread serves
    /// the session.
    fn index(&self) -> usize;
    /// The vCPU's state (it is parked: nothing else holds the lock).
    fn vcpu(&self) -> MutexGuard<'_, VcpuFd>;
    /// Runs the guest (with whatever guest-debug state the session set on
    /// each vCPU) until the first stop for the debugger on any vCPU, every
    /// vCPU running; they are all stopped again when it returns
    /// (all-stop). Returns which vCPU stopped and why. After
    /// [`DebugStop::Ended`] the run is over: do not call it again.
    fn run(&mut self) -> (usize, DebugStop);
    /// Runs vCPU `index` alone until its next stop for the debugger (a
    /// single step of it), the others left stopped.
    fn run_alone(&mut self, index: usize) -> DebugStop;
    /// How many vCPUs the VM has.
    fn vcpu_count(&self) -> usize {
        1
    }
    /// vCPU `index`'s state (this one's or another's, parked like every
    /// vCPU while the session looks); None past the last.
    fn vcpu_of(&self, index: usize) -> Option<MutexGuard<'_, VcpuFd>> {
        (index == self.index()).then(|| self.vcpu())
    }
    /// Whether vCPU `index` was started (an application processor waits
    /// for the guest's start-up IPI until then; running it alone would
    /// wait for ever).
    fn started(&self, _index: usize) -> bool {
        true
    }
}

/// A debugger's session, served on the vCPU thread while it is parked.
pub trait DebugSession: Send {
    /// Serves the session from the stop `first` until the debugger leaves
    /// (`None`: the guest runs on without it) or ends the run (`Some`).
    fn serve(self: Box<Self>, first: DebugStop, cpu: &mut dyn GuestCpu) -> Option<VcpuStop>;
}

/// How often a vCPU held for a debugger (`--gdb-wait`) looks for it and
/// at the VMM's stop flag.
const POLL: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Shared {
    stop_requested: AtomicBool,
    /// Park before the first instruction and wait for a session.
    hold: AtomicBool,
    ended: AtomicBool,
    /// The vCPU thread while it runs the loop; the lock is held across a
    /// kick, so the thread cannot end (and its handle go stale) meanwhile.
    thread: Mutex<Option<libc::pthread_t>>,
    /// A session waiting for the vCPU to park.
    session: Mutex<Option<Box<dyn DebugSession>>>,
}

/// The vCPU's end, owned by its [`super::VcpuRunner`].
pub struct VcpuDebug {
    shared: Arc<Shared>,
    notify: EventFd,
}

/// The debugger's end (the stub's thread).
pub struct Debugger {
    shared: Arc<Shared>,
    notify: EventFd,
    index: usize,
}

/// A connected pair for vCPU `index`.
pub fn channel(index: usize) -> std::io::Result<(VcpuDebug, Debugger)> {
    let shared = Arc::new(Shared::default());
    let notify = EventFd::new(libc::EFD_NONBLOCK)?;
    let v = VcpuDebug { shared: shared.clone(), notify: notify.try_clone()? };
    Ok((v, Debugger { shared, notify, index }))
}

impl VcpuDebug {
    /// Called on the vCPU thread before it runs: where kicks go.
    pub fn register_thread(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *self.shared.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(me);
    }

    /// Takes the debugger's request to park, if there is one.
    pub fn take_stop_request(&self) -> bool {
        self.shared.stop_requested.swap(false, Ordering::SeqCst)
    }

    /// Parked on a request: serves the session waiting for the vCPU (after
    /// waiting for one while held for `--gdb-wait`). `Some` when the run is
    /// to end.
    pub fn park(&self, why: DebugStop, cpu: &mut dyn GuestCpu, stop: &AtomicBool) -> Option<VcpuStop> {
        let session = loop {
            if let Some(s) = self.shared.session.lock().unwrap_or_else(PoisonError::into_inner).take() {
                break s;
            }
            if !self.shared.hold.load(Ordering::SeqCst) {
                // A request with nothing to serve (the debugger left).
                return None;
            }
            if stop.load(Ordering::Acquire) {
                return Some(VcpuStop::Stopped);
            }
            std::thread::sleep(POLL);
        };
        self.shared.hold.store(false, Ordering::SeqCst);
        session.serve(why, cpu)
    }

    /// The run is over: the debugger's thread is told.
    pub fn ended(&self) {
        // No kicks from here on: this thread is about to end.
        *self.shared.thread.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.shared.ended.store(true, Ordering::SeqCst);
        let _ = self.notify.write(1);
    }
}

impl Debugger {
    /// The vCPU's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Readable once the vCPU's run ended (for epoll).
    pub fn notify(&self) -> &EventFd {
        &self.notify
    }

    /// Whether the vCPU's run is over.
    pub fn ended(&self) -> bool {
        self.shared.ended.load(Ordering::SeqCst)
    }

    /// Parks the vCPU before its first instruction until a session comes
    /// (`--gdb-wait`).
    pub fn hold_at_start(&self) {
        self.shared.hold.store(true, Ordering::SeqCst);
        self.shared.stop_requested.store(true, Ordering::SeqCst);
    }

    /// Hands a session to the vCPU, which serves it once it parks.
    pub fn start(&self, session: Box<dyn DebugSession>) {
        *self.shared.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(session);
        self.request_stop();
    }

    /// Asks the running vCPU to park (it stops with [`DebugStop::Requested`]
    /// unless another stop comes first).
    pub fn request_stop(&self) {
        self.shared.stop_requested.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// Drops a request the vCPU has not taken yet.
    pub fn clear_stop_request(&self) {
        self.shared.stop_requested.store(false, Ordering::SeqCst);
    }

    /// Whether a request is still pending (a kick landing between the
    /// loop's check and `KVM_RUN` is lost: kick again while it is).
    pub fn stop_requested(&self) -> bool {
        self.shared.stop_requested.load(Ordering::SeqCst)
    }

    /// Interrupts the vCPU thread's `KVM_RUN`.
    pub fn kick(&self) {
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
}
