//! The VMM's event loop (event-manager): host stdin into the guest's UART,
//! the vCPU thread's completion, and the `--timeout` timer.
//!
//! Each vCPU runs on its own thread, blocked in `KVM_RUN`. To stop them the
//! loop sets a flag and kicks the threads with a signal until they are
//! gone: a signal makes `KVM_RUN` return EINTR, and its handler also sets
//! the thread's `kvm_run.immediate_exit`, so a kick landing between the
//! flag check and the next `KVM_RUN` makes that `KVM_RUN` return at once.
//! When one vCPU's run ends (the guest's exit, a crash) every other one is
//! stopped the same way, application processors blocked waiting for a
//! start-up IPI included.

use crate::devices::serial::{restore_terminal, InputAction, InputQueue, RawTerminal, SerialConsole, INPUT_BACKLOG};
use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};
use vmm_sys_util::timerfd::TimerFd;

/// Errors of the loop itself.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// epoll.
    #[error("epoll failed")]
    Epoll(#[from] event_manager::Error),
    /// eventfd, timerfd, signals, threads.
    #[error("cannot set up {what}")]
    Setup {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    /// The vCPU thread finished by itself.
    VcpuDone,
    /// The timeout fired and the vCPU was stopped.
    TimedOut(Duration),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    VcpuDone,
    TimedOut,
}

/// Host stdin -> the UART's receive FIFO, through a queue that holds what
/// the FIFO cannot take yet (flushed by the loop as the guest reads).
struct StdinInput {
    serial: Arc<Mutex<SerialConsole>>,
    queue: Rc<std::cell::RefCell<InputQueue>>,
}

impl MutEventSubscriber for StdinInput {
    fn init(&mut self, ops: &mut EventOps) {
        // A regular file cannot be polled: its whole contents are the
        // input then (a script in a file), queued now; /dev/null gives none.
        if ops.add(Events::new(&std::io::stdin(), EventSet::IN)).is_err() {
            let mut all = Vec::new();
            let _ = std::io::stdin().lock().take(INPUT_BACKLOG as u64).read_to_end(&mut all);
            self.queue.borrow_mut().push(&all, false);
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        // At least std's stdin buffer (8 KiB): a read that size goes
        // straight to the descriptor, so no input is left in that buffer
        // where epoll cannot see it.
        let mut buf = vec![0u8; 16 << 10];
        let n = if events.event_set().contains(EventSet::IN) {
            std::io::stdin().lock().read(&mut buf).unwrap_or(0)
        } else {
            0
        };
        if n == 0 {
            // EOF, hang-up or error: stop watching stdin.
            let _ = ops.remove(events);
            return;
        }
        let mut q = self.queue.borrow_mut();
        if q.push(&buf[..n], RawTerminal::active()) == InputAction::Quit {
            // QEMU's Ctrl-A x: the terminal back first, then out.
            restore_terminal();
            eprintln!("\r\nvmm: Ctrl-A x: quitting");
            std::process::exit(0);
        }
        if let Ok(mut s) = self.serial.lock() {
            q.flush(&mut s);
        }
    }
}

/// The vCPUs' completion and the timeout.
struct Lifecycle {
    done: EventFd,
    timer: Option<TimerFd>,
    state: Rc<Cell<State>>,
}

const DONE: u32 = 1;
const TIMER: u32 = 2;

impl MutEventSubscriber for Lifecycle {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::with_data(&self.done, DONE, EventSet::IN));
        if let Some(t) = &self.timer {
            let _ = ops.add(Events::with_data(t, TIMER, EventSet::IN));
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            DONE => {
                let _ = self.done.read();
                if self.state.get() == State::Running {
                    self.state.set(State::VcpuDone);
                }
            }
            TIMER => {
                if let Some(t) = &mut self.timer {
                    let _ = t.wait();
                }
                if self.state.get() == State::Running {
                    self.state.set(State::TimedOut);
                }
            }
            _ => {}
        }
    }
}

/// How often the loop kicks the vCPUs out of KVM_RUN to look for a guest
/// that halted for good.
const WATCHDOG_PERIOD: Duration = Duration::from_secs(1);

thread_local! {
    /// This vCPU thread's `kvm_run` area, where a kick sets
    /// `immediate_exit` (null on other threads).
    static KICK_TARGET: std::cell::Cell<*mut kvm_bindings::kvm_run> =
        const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// Makes kicks of the calling (vCPU) thread also set `immediate_exit` in
/// `run`, its vCPU's `kvm_run` area, which must stay mapped until
/// [`clear_kick_target`] (the runner holds its vCPU for the whole run).
pub fn set_kick_target(run: &mut kvm_bindings::kvm_run) {
    let p: *mut kvm_bindings::kvm_run = run;
    KICK_TARGET.with(|t| t.set(p));
}

/// Stops kicks of the calling thread from touching its `kvm_run` area.
pub fn clear_kick_target() {
    KICK_TARGET.with(|t| t.set(std::ptr::null_mut()));
}

extern "C" fn kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A const-initialised thread-local without a destructor: reading it is
    // async-signal-safe (no lazy initialisation, no allocation).
    let _ = KICK_TARGET.try_with(|t| {
        let p = t.get();
        if !p.is_null() {
            // SAFETY: `p` is this thread's vCPU's kvm_run mapping, set by
            // `set_kick_target` and valid until `clear_kick_target` (the
            // mapping lives as long as the VcpuFd, which the runner holds).
            // KVM reads immediate_exit on entry to KVM_RUN; a volatile
            // byte store is what the kernel ABI expects here.
            unsafe { std::ptr::addr_of_mut!((*p).immediate_exit).write_volatile(1) };
        }
    });
}

fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// One vCPU thread's work: it gets an eventfd to signal when it is done.
pub type VcpuBody<T> = Box<dyn FnOnce(EventFd) -> T + Send + 'static>;

/// Runs each of `bodies` (one per vCPU) on a new thread named `vcpuN` and
/// serves events until one finishes or `timeout` expires; then `stop` is
/// set and every thread still running is kicked out of `KVM_RUN` until it
/// is gone. Returns why the loop ended and each thread's result, by index
/// (None if it panicked).
pub fn run<T: Send + 'static>(
    serial: Arc<Mutex<SerialConsole>>,
    timeout: Option<Duration>,
    stop: Arc<AtomicBool>,
    bodies: Vec<VcpuBody<T>>,
) -> Result<(LoopEnd, Vec<Option<T>>), LoopError> {
    static HANDLER: Once = Once::new();
    let mut handler_result = Ok(());
    HANDLER.call_once(|| handler_result = register_signal_handler(kick_signal(), kick));
    handler_result.map_err(|e| LoopError::Setup {
        what: "the vCPU kick signal",
        source: std::io::Error::from_raw_os_error(e.errno()),
    })?;

    let done = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| LoopError::Setup { what: "an eventfd", source })?;
    let timer = match timeout {
        Some(d) => {
            let mut t = TimerFd::new().map_err(|e| LoopError::Setup { what: "a timerfd", source: e.into() })?;
            t.reset(d, None).map_err(|e| LoopError::Setup { what: "a timerfd", source: e.into() })?;
            Some(t)
        }
        None => None,
    };
    let mut handles = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let done_for_thread = done.try_clone().map_err(|source| LoopError::Setup { what: "an eventfd", source })?;
        let spawned = std::thread::Builder::new().name(format!("vcpu{i}")).spawn(move || body(done_for_thread));
        match spawned {
            Ok(h) => handles.push(h),
            Err(source) => {
                // The threads already started must not outlive the error.
                stop_threads(&stop, &handles);
                return Err(LoopError::Setup { what: "a vCPU thread", source });
            }
        }
    }

    let state = Rc::new(Cell::new(State::Running));
    let mut em: EventManager<Box<dyn MutEventSubscriber>> = EventManager::new()?;
    let queue = Rc::new(std::cell::RefCell::new(InputQueue::default()));
    em.add_subscriber(Box::new(StdinInput { serial: serial.clone(), queue: queue.clone() }));
    em.add_subscriber(Box::new(Lifecycle { done, timer, state: state.clone() }));
    // A vCPU halted with interrupts masked never leaves KVM_RUN once KVM
    // runs the interrupt controllers in the kernel: kick them now and then
    // so the run loops can look (`vcpu::run` reports such a guest as dead).
    let mut last_kick = std::time::Instant::now();
    while state.get() == State::Running && !handles.iter().any(|h| h.is_finished()) {
        // Input waiting for room in the FIFO: look again soon.
        let waiting = queue.borrow().has_pending();
        em.run_with_timeout(if waiting { 5 } else { 200 })?;
        if waiting {
            if let Ok(mut s) = serial.lock() {
                queue.borrow_mut().flush(&mut s);
            }
        }
        if last_kick.elapsed() >= WATCHDOG_PERIOD {
            for h in &handles {
                let _ = h.kill(kick_signal());
            }
            last_kick = std::time::Instant::now();
        }
    }
    let end =
        if state.get() == State::TimedOut { LoopEnd::TimedOut(timeout.unwrap_or_default()) } else { LoopEnd::VcpuDone };
    // One vCPU's end (or the timeout) ends them all.
    stop_threads(&stop, &handles);
    Ok((end, handles.into_iter().map(|h| h.join().ok()).collect()))
}

/// Sets `stop` and kicks every thread until all are finished.
fn stop_threads<T>(stop: &AtomicBool, handles: &[std::thread::JoinHandle<T>]) {
    stop.store(true, Ordering::Release);
    while !handles.iter().all(|h| h.is_finished()) {
        for h in handles.iter().filter(|h| !h.is_finished()) {
            let _ = h.kill(kick_signal());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
