//! "A user can pause a running guest": SIGUSR1 to the VMM parks the vCPU
//! at its next exit (kicking it out of `KVM_RUN` if it is inside) and runs
//! the `--inspect` views and `--verify` checks as an ad-hoc checkpoint
//! named [`PAUSE_CHECKPOINT`], then resumes the guest.
//!
//! The handler only stores flags and sends the vCPU thread the event
//! loop's kick signal with `pthread_kill`, both async-signal-safe; the
//! run loop notices the request before its next `KVM_RUN`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;

/// The name the views and checks show for a pause.
pub const PAUSE_CHECKPOINT: &str = "pause";

static REQUESTED: AtomicBool = AtomicBool::new(false);
static POKED: AtomicBool = AtomicBool::new(false);
static VCPU_THREAD: AtomicU64 = AtomicU64::new(0);
static VCPU_THREAD_SET: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    REQUESTED.store(true, Ordering::Release);
    kick_vcpu();
}

/// Sends the vCPU thread the kick signal (async-signal-safe).
fn kick_vcpu() {
    if VCPU_THREAD_SET.load(Ordering::Acquire) {
        let t = VCPU_THREAD.load(Ordering::Acquire) as libc::pthread_t;
        // SAFETY: pthread_self() and pthread_kill() are async-signal-safe;
        // `t` was stored by the vCPU thread, which outlives the handler's
        // use (a dead thread id makes pthread_kill fail harmlessly with
        // ESRCH on glibc).
        unsafe {
            if libc::pthread_self() != t {
                libc::pthread_kill(t, libc::SIGRTMIN());
            }
        }
    }
}

/// Installs the SIGUSR1 handler (once per process).
pub fn install() -> Result<(), std::io::Error> {
    static ONCE: Once = Once::new();
    let mut r = Ok(());
    ONCE.call_once(|| {
        r = vmm_sys_util::signal::register_signal_handler(libc::SIGUSR1, on_sigusr1)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    r
}

/// Called on the vCPU thread: where the handler sends its kick.
pub fn register_vcpu_thread() {
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    VCPU_THREAD.store(me as u64, Ordering::Release);
    VCPU_THREAD_SET.store(true, Ordering::Release);
}

/// Takes a pending pause request.
pub fn take() -> bool {
    REQUESTED.swap(false, Ordering::AcqRel)
}

/// Asks for a pause as SIGUSR1 would (tests, other host threads).
pub fn request() {
    REQUESTED.store(true, Ordering::Release);
}

/// Asks the run loop to call the park hooks' [`poke`](super::checkpoint::ParkHook::poke)
/// with the vCPU parked, soon (the vCPU is kicked out of `KVM_RUN`): how
/// another host thread (the web view) gets a consistent look at guest
/// memory between checkpoints. Unlike a pause it is no checkpoint: the
/// `--inspect` views do not run.
pub fn poke() {
    POKED.store(true, Ordering::Release);
    kick_vcpu();
}

/// Takes a pending poke.
pub fn take_poke() -> bool {
    // A plain load first: the common case (nothing pending) stays a read.
    POKED.load(Ordering::Acquire) && POKED.swap(false, Ordering::AcqRel)
}
