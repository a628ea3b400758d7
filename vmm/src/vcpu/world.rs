//! Stop the world: what every vCPU thread of one VM shares so that one of
//! them can park all the others before the park hooks run (a checkpoint,
//! a SIGUSR1 pause, a web-view poke, a snapshot), and then resume them
//! all. The views and `--verify` thus see one consistent guest state, as
//! Linux's `stop_machine` gives its callers.
//!
//! The protocol: the vCPU that wants the world stopped becomes its
//! *leader* ([`World::stop`]), raises the request flag and kicks every
//! other vCPU thread out of `KVM_RUN` (the event loop's signal, whose
//! handler also sets the thread's `kvm_run.immediate_exit`, so a kick that
//! lands just before `KVM_RUN` is not lost). Each of them sees the flag
//! before its next `KVM_RUN` and parks ([`World::park`]) until the leader's
//! [`StoppedWorld`] guard is dropped. Two vCPUs that want to lead at once
//! take turns: the second parks as a follower first. A vCPU whose run is
//! over counts as parked for good ([`World::ended`]).
//!
//! It also keeps what each vCPU was last seen doing ([`CpuState`]): a
//! vCPU halted with interrupts masked is dead only when every other one
//! is dead too or still waits for its start-up IPI.

use super::debug::DebugStop;
use super::VcpuStop;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How often a leader kicks the vCPUs it is still waiting for.
const KICK_PERIOD: Duration = Duration::from_millis(2);

/// What a vCPU was last seen doing (between two `KVM_RUN`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CpuState {
    /// Running guest code (or halted with interrupts enabled: a timer
    /// or an IPI wakes it).
    Running = 0,
    /// Waiting for INIT/SIPI (an application processor the guest has not
    /// started).
    WaitingForSipi = 1,
    /// `hlt` with interrupts masked: only an NMI or INIT could wake it.
    HaltedForGood = 2,
    /// Its run is over.
    Ended = 3,
}

impl CpuState {
    fn from_u8(v: u8) -> CpuState {
        match v {
            0 => CpuState::Running,
            1 => CpuState::WaitingForSipi,
            2 => CpuState::HaltedForGood,
            _ => CpuState::Ended,
        }
    }
}

#[derive(Default)]
struct State {
    /// The vCPU that has the world stopped (or is stopping it).
    leader: Option<usize>,
    /// vCPUs parked for the leader (in this generation).
    parked: usize,
    /// vCPUs whose run is over.
    ended: usize,
    /// Bumped when a leader resumes the world.
    generation: u64,
    /// The first vCPU whose run ended for a reason of its own (the guest's
    /// exit, a crash), not because the VMM stopped it.
    first_end: Option<usize>,
    /// A parked vCPU the leader asked to run alone (a debugger's step of
    /// it), not yet taken.
    job: Option<usize>,
    /// The vCPU running the leader's job (it counts as stopped for the
    /// leader: its own `stop` calls nest).
    running_job: Option<usize>,
    /// How the job ended.
    job_result: Option<DebugStop>,
    /// A stop for the debugger seen by a vCPU other than the one serving
    /// the session, not yet reported.
    pending: Option<(usize, DebugStop)>,
}

/// Why [`World::park`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The leader resumed the world (or there was none).
    Resumed,
    /// The leader asks this vCPU to run alone until its next stop for the
    /// debugger ([`World::run_job`]); report with [`World::job_done`].
    Job,
}

/// No vCPU serves a debugger's session.
const NO_SESSION: usize = usize::MAX;

/// What the vCPU threads of one VM share.
pub struct World {
    n: usize,
    state: Mutex<State>,
    cv: Condvar,
    requested: AtomicBool,
    /// Each vCPU's thread while it runs; the lock is held across a kick so
    /// a thread cannot end (and its id go stale) meanwhile.
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
    cpu_state: Vec<AtomicU8>,
    /// The vCPU serving a debugger's session ([`NO_SESSION`] if none):
    /// the others then hand their debug exits and crashes to it.
    session: AtomicUsize,
    /// `State::pending` is set (a plain load before each `KVM_RUN`).
    has_pending: AtomicBool,
    /// The leader wants the job's run to end (gdb's Ctrl-C).
    cancel_job: AtomicBool,
}

impl World {
    /// A world of `n` vCPUs: vCPU 0 running, the others waiting for their
    /// start-up IPI (as KVM creates application processors).
    pub fn new(n: usize) -> World {
        let n = n.max(1);
        World {
            n,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            requested: AtomicBool::new(false),
            threads: Mutex::new(vec![None; n]),
            cpu_state: (0..n)
                .map(|i| AtomicU8::new(if i == 0 { CpuState::Running } else { CpuState::WaitingForSipi } as u8))
                .collect(),
            session: AtomicUsize::new(NO_SESSION),
            has_pending: AtomicBool::new(false),
            cancel_job: AtomicBool::new(false),
        }
    }

    /// How many vCPUs.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: a world has at least one vCPU.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called on vCPU `index`'s thread before it runs: where kicks go.
    pub fn register_thread(&self, index: usize) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        if let Some(t) = self.threads.lock().unwrap_or_else(PoisonError::into_inner).get_mut(index) {
            *t = Some(me);
        }
    }

    /// Interrupts vCPU `index`'s `KVM_RUN` (nothing if its thread is gone).
    pub fn kick(&self, index: usize) {
        let threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(Some(t)) = threads.get(index) {
            // SAFETY: `t` is the vCPU thread's own id, stored by it; it stays
            // live while the lock is held (the thread clears it under the
            // lock before it ends). The signal's handler only interrupts
            // `KVM_RUN`.
            unsafe {
                libc::pthread_kill(*t, vmm_sys_util::signal::SIGRTMIN());
            }
        }
    }

    /// Kicks every vCPU but `except`.
    pub fn kick_others(&self, except: usize) {
        for i in (0..self.n).filter(|&i| i != except) {
            self.kick(i);
        }
    }

    /// Whether a leader wants the world stopped (checked by every vCPU
    /// before `KVM_RUN`; a plain load).
    pub fn park_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Parks vCPU `index` while another vCPU has the world stopped;
    /// returns at once if none has. `stop` (the VMM ending the run) also
    /// ends the wait.
    /// A leader may hand the parked vCPU a job ([`Woken::Job`]): it runs
    /// alone then, and parks again with [`World::park`] after
    /// [`World::job_done`].
    pub fn park(&self, index: usize, stop: &AtomicBool) -> Woken {
        let mut s = self.lock();
        if s.leader.is_none() || s.leader == Some(index) {
            return Woken::Resumed;
        }
        let woken;
        (s, woken) = self.wait_for_resume(s, stop, Some(index));
        drop(s);
        woken
    }

    /// Parks as a follower until the current leader resumes the world, or
    /// hands this vCPU (`job_for`, when it can take one) a job.
    fn wait_for_resume<'a>(
        &'a self,
        mut s: MutexGuard<'a, State>,
        stop: &AtomicBool,
        job_for: Option<usize>,
    ) -> (MutexGuard<'a, State>, Woken) {
        let generation = s.generation;
        s.parked += 1;
        self.cv.notify_all();
        while s.generation == generation && s.leader.is_some() && !stop.load(Ordering::Acquire) {
            if s.job.is_some() && s.job == job_for {
                // Running, not parked, until the job is done.
                s.job = None;
                s.running_job = job_for;
                s.parked -= 1;
                return (s, Woken::Job);
            }
            s = self.cv.wait_timeout(s, Duration::from_millis(50)).unwrap_or_else(PoisonError::into_inner).0;
        }
        // A resume released every follower and zeroed the count (so the
        // next leader never counts one that has not woken up yet as parked).
        if s.generation == generation {
            s.parked -= 1;
        }
        (s, Woken::Resumed)
    }

    /// The leader runs parked vCPU `index` alone (on its own thread: only
    /// that thread may enter `KVM_RUN` for it without KVM moving the vCPU
    /// between tasks) until its next stop for the debugger. `cancel` is
    /// asked while it runs: true ends the run early
    /// ([`DebugStop::Requested`]).
    pub fn run_job(&self, index: usize, stop: &AtomicBool, cancel: &mut dyn FnMut() -> bool) -> DebugStop {
        let mut s = self.lock();
        if self.cpu_state(index) == CpuState::Ended {
            return DebugStop::Ended(VcpuStop::Stopped);
        }
        self.cancel_job.store(false, Ordering::Release);
        s.job = Some(index);
        s.job_result = None;
        self.cv.notify_all();
        loop {
            if let Some(r) = s.job_result.take() {
                return r;
            }
            let untaken = s.job == Some(index);
            if untaken && (stop.load(Ordering::Acquire) || self.cpu_state(index) == CpuState::Ended) {
                s.job = None;
                return DebugStop::Ended(VcpuStop::Stopped);
            }
            if cancel() {
                self.cancel_job.store(true, Ordering::Release);
                drop(s);
                self.kick(index);
                s = self.lock();
            }
            s = self.cv.wait_timeout(s, Duration::from_millis(1)).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Whether the leader wants the running job to end.
    pub fn job_cancelled(&self) -> bool {
        self.cancel_job.load(Ordering::Acquire)
    }

    /// The job's vCPU reports how its run ended.
    pub fn job_done(&self, result: DebugStop) {
        let mut s = self.lock();
        s.running_job = None;
        s.job_result = Some(result);
        self.cv.notify_all();
    }

    /// vCPU `index` serves a debugger's session from now on (`None`: no
    /// longer); a stop still pending is dropped with the session.
    pub fn set_session(&self, index: Option<usize>) {
        self.session.store(index.unwrap_or(NO_SESSION), Ordering::Release);
        if index.is_none() {
            self.lock().pending = None;
            self.has_pending.store(false, Ordering::Release);
        }
    }

    /// The vCPU serving a debugger's session, if any.
    pub fn session(&self) -> Option<usize> {
        let i = self.session.load(Ordering::Acquire);
        (i != NO_SESSION).then_some(i)
    }

    /// vCPU `index` stopped for the debugger while every vCPU ran: the
    /// stop is kept for the session's vCPU, which is kicked to stop the
    /// world and report it. Only the first such stop is kept; a later one
    /// (a breakpoint another vCPU hit meanwhile) recurs when that vCPU
    /// runs again, since its RIP stays on the breakpoint.
    pub fn post_debug_stop(&self, index: usize, why: DebugStop) {
        let mut s = self.lock();
        if s.pending.is_none() {
            s.pending = Some((index, why));
            self.has_pending.store(true, Ordering::Release);
        }
        drop(s);
        if let Some(session) = self.session() {
            self.kick(session);
        }
    }

    /// Whether a stop for the debugger is pending (a plain load).
    pub fn has_pending(&self) -> bool {
        self.has_pending.load(Ordering::Acquire)
    }

    /// Takes the pending stop for the debugger.
    pub fn take_pending(&self) -> Option<(usize, DebugStop)> {
        let mut s = self.lock();
        self.has_pending.store(false, Ordering::Release);
        s.pending.take()
    }

    /// Waits (without running) while a stop for the debugger is pending,
    /// parking for the leader when it stops the world; `None` after that,
    /// or `Some` when the leader handed this vCPU a job (run it, report
    /// it, and call this again).
    pub fn wait_while_pending(&self, index: usize, stop: &AtomicBool) -> Option<Woken> {
        while self.has_pending() && self.session().is_some() && !stop.load(Ordering::Acquire) {
            if self.park_requested() {
                if self.park(index, stop) == Woken::Job {
                    return Some(Woken::Job);
                }
                continue;
            }
            let s = self.lock();
            if s.leader.is_none() && s.pending.is_some() {
                drop(self.cv.wait_timeout(s, KICK_PERIOD).unwrap_or_else(PoisonError::into_inner));
            }
        }
        None
    }

    /// Stops the world for vCPU `index`: every other vCPU parked (or
    /// ended) when this returns, until the guard is dropped. If another
    /// vCPU leads already, parks for it first and then takes its turn.
    /// `stop` (the VMM ending the run) ends the waits.
    pub fn stop(self: &Arc<Self>, index: usize, stop: &AtomicBool) -> StoppedWorld {
        let mut s = self.lock();
        loop {
            match s.leader {
                None => break,
                // Already stopped by this vCPU (a checkpoint during a
                // debugger's single-step), or by the leader for this
                // vCPU's job: the outer guard resumes.
                Some(l) if l == index || s.running_job == Some(index) => {
                    return StoppedWorld { world: self.clone(), stopped: true, owns: false };
                }
                Some(_) => {
                    if stop.load(Ordering::Acquire) {
                        // The run is ending: no world to stop.
                        return StoppedWorld { world: self.clone(), stopped: false, owns: false };
                    }
                    // (No job comes to a vCPU that is not parked for good.)
                    (s, _) = self.wait_for_resume(s, stop, None);
                }
            }
        }
        s.leader = Some(index);
        self.requested.store(true, Ordering::Release);
        while s.parked + s.ended < self.n - 1 && !stop.load(Ordering::Acquire) {
            drop(s);
            self.kick_others(index);
            s = self.lock();
            if s.parked + s.ended >= self.n - 1 {
                break;
            }
            s = self.cv.wait_timeout(s, KICK_PERIOD).unwrap_or_else(PoisonError::into_inner).0;
        }
        StoppedWorld { world: self.clone(), stopped: true, owns: true }
    }

    fn resume(&self) {
        let mut s = self.lock();
        s.leader = None;
        s.generation += 1;
        s.parked = 0;
        self.requested.store(false, Ordering::Release);
        self.cv.notify_all();
    }

    /// vCPU `index`'s run is over (`own_reason`: the guest's exit or a
    /// crash, not a stop by the VMM). True for the last vCPU to end.
    pub fn ended(&self, index: usize, own_reason: bool) -> bool {
        if let Some(t) = self.threads.lock().unwrap_or_else(PoisonError::into_inner).get_mut(index) {
            *t = None;
        }
        self.set_cpu_state(index, CpuState::Ended);
        let mut s = self.lock();
        s.ended += 1;
        if own_reason && s.first_end.is_none() {
            s.first_end = Some(index);
        }
        self.cv.notify_all();
        s.ended == self.n
    }

    /// The first vCPU whose run ended for a reason of its own.
    pub fn first_end(&self) -> Option<usize> {
        self.lock().first_end
    }

    /// Records what vCPU `index` is doing.
    pub fn set_cpu_state(&self, index: usize, st: CpuState) {
        if let Some(a) = self.cpu_state.get(index) {
            a.store(st as u8, Ordering::Release);
        }
    }

    /// What vCPU `index` was last seen doing.
    pub fn cpu_state(&self, index: usize) -> CpuState {
        self.cpu_state.get(index).map_or(CpuState::Ended, |a| CpuState::from_u8(a.load(Ordering::Acquire)))
    }

    /// True when no vCPU can run guest code again: each is halted with
    /// interrupts masked, waiting for a start-up IPI nobody can send, or
    /// over. (At least one must be halted: a world of vCPUs all waiting
    /// for a SIPI is not dead, it is starting.)
    pub fn all_dead(&self) -> bool {
        let states: Vec<CpuState> = (0..self.n).map(|i| self.cpu_state(i)).collect();
        states.contains(&CpuState::HaltedForGood) && !states.contains(&CpuState::Running)
    }
}

/// The world stopped by one vCPU; dropping it resumes every vCPU (unless
/// an outer guard of the same vCPU holds the world).
pub struct StoppedWorld {
    world: Arc<World>,
    stopped: bool,
    owns: bool,
}

impl StoppedWorld {
    /// False when the world could not be stopped because the run is
    /// ending (the hooks must not run then).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
}

impl Drop for StoppedWorld {
    fn drop(&mut self) {
        if self.owns {
            self.world.resume();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_leader_waits_for_every_other_vcpu_to_park() {
        let w = Arc::new(World::new(4));
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 1..4 {
            let (w, stop, running, done) = (w.clone(), stop.clone(), running.clone(), done.clone());
            threads.push(std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    if w.park_requested() {
                        assert_eq!(w.park(i, &stop), Woken::Resumed);
                    }
                    running.fetch_add(1, Ordering::AcqRel);
                    std::thread::yield_now();
                }
                w.ended(i, false);
            }));
        }
        for _ in 0..20 {
            let g = w.stop(0, &stop);
            assert!(g.is_stopped());
            // Nested: the inner guard leaves the world stopped.
            drop(w.stop(0, &stop));
            assert!(w.park_requested());
            // Nobody runs while the world is stopped.
            let before = running.load(Ordering::Acquire);
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(running.load(Ordering::Acquire), before, "a vCPU ran while parked");
            drop(g);
        }
        done.store(true, Ordering::Release);
        for t in threads {
            t.join().unwrap();
        }
        assert!(w.ended(0, true));
        assert_eq!(w.first_end(), Some(0));
    }

    #[test]
    fn dead_only_when_no_vcpu_can_run() {
        let w = World::new(3);
        assert!(!w.all_dead(), "APs waiting for SIPI, BSP running");
        w.set_cpu_state(0, CpuState::HaltedForGood);
        assert!(w.all_dead(), "BSP halted for good, APs never started");
        w.set_cpu_state(1, CpuState::Running);
        assert!(!w.all_dead());
        w.set_cpu_state(1, CpuState::Ended);
        assert!(w.all_dead());
    }
}
