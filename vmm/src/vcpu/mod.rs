//! Running a vCPU: the VMM's one `KVM_RUN` loop ([`VcpuRunner`]) and what
//! each exit means.
//!
//! Every way the guest is observed is a client of this loop, never a loop
//! of its own: the park hooks ([`ParkHook`]: `--inspect`/`--verify` at
//! checkpoints and at a SIGUSR1 pause) run here with the vCPU parked in
//! the exit, and a debugger (the gdb stub) is served on this thread while
//! the vCPU is parked ([`debug`]): its session runs the guest on through
//! this same loop. So checkpoints, pauses and `--verify` work the same
//! with gdb attached.
//!
//! Everything outside the loop reaches the vCPU's state through the small
//! [`Vcpu`] trait ([`crate::kvm`]); the loop alone calls `KVM_RUN`. The
//! vCPU sits in a [`SharedVcpu`] (a mutex the loop holds only while it is
//! inside `KVM_RUN` or handling an exit), so other threads (the crash
//! report, the gdb bench) read registers while the vCPU is not running.
//!
//! [`handle_exit`] is a free function over the exit alone, so unit tests
//! feed it exits without a VM (as Firecracker's vCPU tests do).

pub mod cpuid;
pub mod debug;
pub mod report;
pub mod world;

use crate::devices::{PortAction, PortBus};
pub use crate::inspect::checkpoint::{ParkHook, ParkVerdict};
use crate::inspect::exits::ExitReason;
use crate::inspect::{pause, GuestLink};
pub use crate::kvm::Vcpu;
use kvm_bindings::kvm_debug_exit_arch;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use world::{CpuState, World};

/// The device bus every vCPU's port-I/O and MMIO exits go to.
pub type SharedBus = Arc<Mutex<PortBus>>;

/// The park hooks every vCPU runs (one at a time, with the world stopped).
pub type SharedHooks = Arc<Mutex<Vec<Box<dyn ParkHook>>>>;

/// A vCPU shared between its run loop and the threads that look at it
/// while it is parked (the gdb stub).
pub type SharedVcpu = Arc<Mutex<VcpuFd>>;

/// Locks a shared vCPU. A panic on another thread holding the lock leaves
/// the vCPU's state as KVM has it, so the lock is taken anyway.
pub fn lock(vcpu: &SharedVcpu) -> MutexGuard<'_, VcpuFd> {
    vcpu.lock().unwrap_or_else(PoisonError::into_inner)
}

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
#[derive(Debug, PartialEq)]
pub enum ExitAction {
    /// Run again.
    Continue,
    /// The guest asked to end with this status.
    Exit(u32),
    /// The guest reached a named checkpoint: park and run the hooks.
    Checkpoint(String),
    /// A debug exit (single-step, breakpoint): the debugger's.
    Debug(kvm_debug_exit_arch),
    /// The guest cannot go on (unless a debugger says otherwise).
    Crash(Crash),
}

/// Decides what an exit means; counts it and records a published
/// descriptor in `link`.
pub fn handle_exit(exit: VcpuExit, bus: &mut PortBus, link: &GuestLink) -> ExitAction {
    handle_exit_on(0, exit, bus, link)
}

/// [`handle_exit`] for an exit of vCPU `vcpu` (counted as that vCPU's).
pub fn handle_exit_on(vcpu: usize, exit: VcpuExit, bus: &mut PortBus, link: &GuestLink) -> ExitAction {
    link.exits.record_on(vcpu, ExitReason::of(&exit));
    match exit {
        VcpuExit::IoOut(port, data) => match bus.write(port, data) {
            PortAction::Continue => ExitAction::Continue,
            PortAction::Exit(code) => ExitAction::Exit(code),
            PortAction::Checkpoint(name) => ExitAction::Checkpoint(name),
            PortAction::Descriptor(pa) => {
                link.descriptor.set(pa);
                ExitAction::Continue
            }
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
        VcpuExit::Debug(d) => ExitAction::Debug(d),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuStop {
    /// The guest wrote its exit status.
    Exit(u32),
    /// The guest died.
    Crash(Crash),
    /// The host asked it to stop (timeout, signal, a `--verify` violation).
    Stopped,
    /// The debugger killed it (gdb's `kill`).
    Killed,
}

/// One vCPU's run loop with what it owns: the port bus, the link to
/// inspection, the park hooks and the debugger's end.
pub struct VcpuRunner {
    core: Core,
    debugger: Option<debug::VcpuDebug>,
}

/// The loop's state apart from the debugger.
struct Core {
    index: usize,
    vcpu: SharedVcpu,
    bus: SharedBus,
    link: GuestLink,
    hooks: SharedHooks,
    stop: Arc<AtomicBool>,
    world: Arc<World>,
    /// Every vCPU of the VM (this one included), for a debugger's look at
    /// the others while the world is stopped.
    others: Vec<SharedVcpu>,
    /// A `KVM_RUN` failure inside a debugger's session, returned once the
    /// session is over.
    failed: Option<kvm_ioctls::Error>,
    /// The profiler's samples (`--profile`), taken on this thread.
    sampler: Option<Arc<crate::profile::sampler::Sampler>>,
}

/// What a stretch of running ended with.
enum Step {
    /// A stop for the debugger.
    Park(debug::DebugStop),
    /// The run is over.
    End(VcpuStop),
}

impl VcpuRunner {
    /// A runner for vCPU `index`. `link` receives the exit counts and the
    /// descriptor the guest publishes; `stop` ends the loop (the setter
    /// then kicks the vCPU thread out of `KVM_RUN` with the event loop's
    /// signal).
    pub fn new(index: usize, vcpu: SharedVcpu, bus: PortBus, link: GuestLink, stop: Arc<AtomicBool>) -> Self {
        let world = Arc::new(World::new(1));
        Self::in_world(index, vcpu, Arc::new(Mutex::new(bus)), Arc::default(), world, link, stop)
    }

    /// A runner for vCPU `index` of a VM with several: the device bus, the
    /// park hooks and the `world` (stop the world, see [`world`]) are the
    /// ones every vCPU's runner shares.
    pub fn in_world(
        index: usize,
        vcpu: SharedVcpu,
        bus: SharedBus,
        hooks: SharedHooks,
        world: Arc<World>,
        link: GuestLink,
        stop: Arc<AtomicBool>,
    ) -> Self {
        VcpuRunner {
            core: Core { index, vcpu, bus, link, hooks, stop, world, others: Vec::new(), failed: None, sampler: None },
            debugger: None,
        }
    }

    /// Every vCPU of the VM, by index: what a debugger served on this
    /// vCPU's thread shows as its other threads.
    pub fn set_all_vcpus(&mut self, all: Vec<SharedVcpu>) {
        self.core.others = all;
    }

    /// The vCPU's index (0 is the boot CPU).
    pub fn index(&self) -> usize {
        self.core.index
    }

    /// Adds what runs while the vCPU is parked at a checkpoint or a pause.
    pub fn add_park_hook(&mut self, hook: Box<dyn ParkHook>) {
        self.core.hooks.lock().unwrap_or_else(PoisonError::into_inner).push(hook);
    }

    /// Takes the profiler's samples of this vCPU (`--profile`).
    pub fn set_sampler(&mut self, sampler: Arc<crate::profile::sampler::Sampler>) {
        self.core.sampler = Some(sampler);
    }

    /// Connects a debugger (see [`debug::channel`]).
    pub fn set_debugger(&mut self, d: debug::VcpuDebug) {
        self.debugger = Some(d);
    }

    /// The port bus (the self-test results it collected).
    pub fn bus(&self) -> MutexGuard<'_, PortBus> {
        self.core.bus.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the vCPU until the guest exits or dies, a hook or the debugger
    /// ends the run, or `stop` is set. Call it on the vCPU's own thread.
    pub fn run(&mut self) -> Result<VcpuStop, kvm_ioctls::Error> {
        let index = self.core.index;
        if index == 0 {
            // SIGUSR1 kicks the boot CPU, which then stops the world.
            pause::register_vcpu_thread();
        }
        self.core.world.register_thread(index);
        crate::eventloop::set_kick_target(lock(&self.core.vcpu).get_kvm_run());
        if let Some(d) = &self.debugger {
            d.register_thread();
        }
        let end = self.run_loop();
        crate::eventloop::clear_kick_target();
        if let Some(d) = &self.debugger {
            d.ended();
        }
        let own = matches!(end, Ok(VcpuStop::Exit(_) | VcpuStop::Crash(_) | VcpuStop::Killed) | Err(_));
        if own {
            // The guest's exit or a crash on this vCPU ends every vCPU.
            self.core.stop.store(true, Ordering::Release);
        }
        if self.core.world.ended(index, own) {
            // The last vCPU to end tells the hooks the run is over.
            for h in self.core.hooks.lock().unwrap_or_else(PoisonError::into_inner).iter_mut() {
                h.run_ended();
            }
        } else if own {
            self.core.world.kick_others(index);
        }
        end
    }

    fn run_loop(&mut self) -> Result<VcpuStop, kvm_ioctls::Error> {
        loop {
            // Without a session debug exits are dropped (left over from a
            // detached one) and crashes end the run.
            match self.core.run(self.debugger.as_ref(), Mode::Free)? {
                Step::End(s) => return Ok(s),
                Step::Park(why) => {
                    let Some(d) = &self.debugger else { continue };
                    let stop = self.core.stop.clone();
                    // All-stop: every other vCPU parks while the debugger
                    // looks (and while it steps this one).
                    let held = Some(self.core.world.stop(self.core.index, &stop));
                    // The others' debug exits and crashes are this
                    // session's stops from now on.
                    self.core.world.set_session(Some(self.core.index));
                    let mut parked = Parked { core: &mut self.core, debug: d, held };
                    let end = d.park(why, &mut parked, &stop);
                    parked.core.world.set_session(None);
                    drop(parked);
                    if let Some(e) = self.core.failed.take() {
                        return Err(e);
                    }
                    if let Some(end) = end {
                        return Ok(end);
                    }
                }
            }
        }
    }
}

/// The parked vCPU a debugger's session drives.
struct Parked<'a> {
    core: &'a mut Core,
    debug: &'a debug::VcpuDebug,
    /// The other vCPUs, stopped while the session looks.
    held: Option<world::StoppedWorld>,
}

impl Parked<'_> {
    fn run_here(&mut self, mode: Mode) -> debug::DebugStop {
        if self.core.failed.is_some() {
            return debug::DebugStop::Ended(VcpuStop::Stopped);
        }
        match self.core.run(Some(self.debug), mode) {
            Ok(Step::Park(s)) => s,
            Ok(Step::End(e)) => debug::DebugStop::Ended(e),
            Err(e) => {
                self.core.failed = Some(e);
                debug::DebugStop::Ended(VcpuStop::Stopped)
            }
        }
    }
}

impl debug::GuestCpu for Parked<'_> {
    fn index(&self) -> usize {
        self.core.index
    }

    fn vcpu(&self) -> MutexGuard<'_, VcpuFd> {
        lock(&self.core.vcpu)
    }

    fn run(&mut self) -> (usize, debug::DebugStop) {
        let me = self.core.index;
        // A stop another vCPU saw during the last run, not reported yet
        // (this vCPU's own stop was): it is the next one, without running.
        if self.held.is_some() {
            if let Some(p) = self.core.world.take_pending() {
                return p;
            }
        }
        // Every vCPU runs; all stop again with this one.
        self.held = None;
        let s = self.run_here(Mode::Session { all: true });
        if matches!(s, debug::DebugStop::Ended(_)) {
            return (me, s);
        }
        self.held = Some(self.core.world.stop(me, &self.core.stop));
        if s == debug::DebugStop::Requested {
            // Kicked by another vCPU's stop (or by gdb: its bytes come
            // after a breakpoint hit in the same instant).
            if let Some(p) = self.core.world.take_pending() {
                return p;
            }
        }
        (me, s)
    }

    fn run_alone(&mut self, index: usize) -> debug::DebugStop {
        if self.held.is_none() {
            self.held = Some(self.core.world.stop(self.core.index, &self.core.stop));
        }
        if index == self.core.index {
            return self.run_here(Mode::Session { all: false });
        }
        // Another vCPU runs on its own thread while this one waits; gdb's
        // Ctrl-C (a stop request to this vCPU) ends it.
        let debug = self.debug;
        self.core.world.run_job(index, &self.core.stop, &mut || debug.take_stop_request())
    }

    fn vcpu_count(&self) -> usize {
        self.core.world.len()
    }

    fn vcpu_of(&self, index: usize) -> Option<MutexGuard<'_, VcpuFd>> {
        if index == self.core.index {
            return Some(lock(&self.core.vcpu));
        }
        self.core.others.get(index).map(lock)
    }

    fn started(&self, index: usize) -> bool {
        // KVM's own view: the world's record is updated only at some exits.
        self.vcpu_of(index).is_some_and(|v| cpu_state(&v) != CpuState::WaitingForSipi)
    }
}

/// How [`Core::run`] treats stops for the debugger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No session on this thread: debug exits go to the hooks and crashes
    /// end the run, unless another vCPU serves a session (then they are
    /// its stops).
    Free,
    /// The session's own vCPU, run by it; `all`: every vCPU runs (a
    /// stop another one posts ends the run).
    Session { all: bool },
    /// Run alone for the session's vCPU (a step of this one).
    Job,
}

impl Core {
    /// Runs until a stop for the debugger or the end of the run; with
    /// `session`, every debug exit and crash is the debugger's.
    fn run(&mut self, debug: Option<&debug::VcpuDebug>, mode: Mode) -> Result<Step, kvm_ioctls::Error> {
        use debug::DebugStop;
        let session = mode != Mode::Free;
        loop {
            if mode == Mode::Job {
                if self.world.job_cancelled() {
                    return Ok(Step::Park(DebugStop::Requested));
                }
            } else if self.world.park_requested() {
                if let Some(end) = self.park()? {
                    return Ok(end);
                }
            }
            if mode == (Mode::Session { all: true }) && self.world.has_pending() {
                return Ok(Step::Park(DebugStop::Requested));
            }
            if self.stop.load(Ordering::Acquire) {
                return Ok(Step::End(VcpuStop::Stopped));
            }
            if pause::take() && self.park_hooks(pause::PAUSE_CHECKPOINT) == ParkVerdict::Stop {
                return Ok(Step::End(VcpuStop::Stopped));
            }
            if pause::take_poke() && self.poke_hooks() == ParkVerdict::Stop {
                return Ok(Step::End(VcpuStop::Stopped));
            }
            if debug.is_some_and(debug::VcpuDebug::take_stop_request) {
                return Ok(Step::Park(DebugStop::Requested));
            }
            if let Some(s) = &self.sampler {
                s.sample_if_due(self.index, &*lock(&self.vcpu));
            }
            match self.enter()? {
                ExitAction::Continue => {}
                ExitAction::Exit(code) => return Ok(Step::End(VcpuStop::Exit(code))),
                ExitAction::Checkpoint(name) => {
                    if self.park_hooks(&name) == ParkVerdict::Stop {
                        return Ok(Step::End(VcpuStop::Stopped));
                    }
                }
                ExitAction::Debug(d) => {
                    if session {
                        return Ok(Step::Park(DebugStop::Debug(d)));
                    }
                    if self.for_session(DebugStop::Debug(d))? {
                        continue;
                    }
                    // Outside a session: a hook's own steps (--count-insns).
                    let vcpu = lock(&self.vcpu);
                    for hook in self.hooks.lock().unwrap_or_else(PoisonError::into_inner).iter_mut() {
                        if hook.debug_exit(&*vcpu) {
                            break;
                        }
                    }
                }
                // A debugger's kick out of a halted vCPU is its request,
                // not a new halt.
                ExitAction::Crash(Crash::Halted) if debug.is_some_and(debug::VcpuDebug::take_stop_request) => {
                    return Ok(Step::Park(DebugStop::Requested));
                }
                ExitAction::Crash(c) if !session && self.world.session().is_some() => {
                    if let Some(end) = self.hand_to_session(DebugStop::Crash(c))? {
                        return Ok(end);
                    }
                }
                ExitAction::Crash(c) => {
                    // A debugger sees the crash as a stop and decides: look
                    // at the state, end the run, or run on (its own int3 on
                    // hosts that emulate ring 0 ends KVM_RUN as an
                    // emulation failure; a halted vCPU may be woken).
                    return Ok(if session { Step::Park(DebugStop::Crash(c)) } else { Step::End(VcpuStop::Crash(c)) });
                }
            }
        }
    }

    /// Parks while another vCPU has the world stopped, running the jobs
    /// its debugger session hands this vCPU; `Some` when the run ended in
    /// one.
    fn park(&mut self) -> Result<Option<Step>, kvm_ioctls::Error> {
        while self.world.park(self.index, &self.stop) == world::Woken::Job {
            if let Some(end) = self.job()? {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    /// Runs this vCPU alone for the session's vCPU and reports the stop.
    fn job(&mut self) -> Result<Option<Step>, kvm_ioctls::Error> {
        match self.run(None, Mode::Job) {
            Ok(Step::Park(s)) => {
                self.world.job_done(s);
                Ok(None)
            }
            Ok(Step::End(e)) => {
                self.world.job_done(debug::DebugStop::Ended(e.clone()));
                Ok(Some(Step::End(e)))
            }
            Err(e) => {
                self.world.job_done(debug::DebugStop::Ended(VcpuStop::Stopped));
                Err(e)
            }
        }
    }

    /// A debug exit outside a session: another vCPU's session's stop
    /// (true, handed over), or a hook's (false).
    fn for_session(&mut self, why: debug::DebugStop) -> Result<bool, kvm_ioctls::Error> {
        if self.world.session().is_none() {
            return Ok(false);
        }
        // The run ending meanwhile is seen at the top of the loop.
        let _ = self.hand_to_session(why)?;
        Ok(true)
    }

    /// Hands a stop to the vCPU serving the debugger's session and waits,
    /// without running, until it has stopped the world and taken it
    /// (serving the steps it asks of this vCPU meanwhile).
    fn hand_to_session(&mut self, why: debug::DebugStop) -> Result<Option<Step>, kvm_ioctls::Error> {
        self.world.post_debug_stop(self.index, why);
        while self.world.wait_while_pending(self.index, &self.stop) == Some(world::Woken::Job) {
            if let Some(end) = self.job()? {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    /// Enters the guest once and says what the exit means.
    fn enter(&mut self) -> Result<ExitAction, kvm_ioctls::Error> {
        let mut vcpu = lock(&self.vcpu);
        let action = match vcpu.run() {
            Ok(VcpuExit::InternalError) => {
                self.link.exits.record_on(self.index, ExitReason::InternalError);
                Ok(ExitAction::Crash(internal_error(&mut vcpu)))
            }
            Ok(exit) => {
                self.world.set_cpu_state(self.index, CpuState::Running);
                let mut bus = self.bus.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(handle_exit_on(self.index, exit, &mut bus, &self.link))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.link.exits.record_on(self.index, ExitReason::Interrupted);
                let state = cpu_state(&vcpu);
                self.world.set_cpu_state(self.index, state);
                // One vCPU halted for good is only the end when no other
                // can run again (an AP parked with `cli; hlt` is normal).
                let dead = state == CpuState::HaltedForGood && self.world.all_dead();
                Ok(if dead { ExitAction::Crash(Crash::Halted) } else { ExitAction::Continue })
            }
            Err(e) => Err(e),
        };
        // A kick sets immediate_exit (so one landing just before KVM_RUN is
        // not lost); it is spent now. One landing after this is seen by
        // the flag checks before the next KVM_RUN.
        vcpu.set_kvm_immediate_exit(0);
        action
    }

    /// Runs the park hooks' [`ParkHook::poke`] with the vCPU parked.
    fn poke_hooks(&mut self) -> ParkVerdict {
        // The hooks are fixed before the run: empty stays empty.
        if self.hooks.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
            return ParkVerdict::Resume;
        }
        // (The world first, the hooks' lock after: a vCPU waiting for
        // that lock could not park.)
        let world = self.world.stop(self.index, &self.stop);
        if !world.is_stopped() {
            return ParkVerdict::Stop;
        }
        let mut hooks = self.hooks.lock().unwrap_or_else(PoisonError::into_inner);
        self.link.vcpus.set_current(self.index);
        let vcpu = lock(&self.vcpu);
        for hook in hooks.iter_mut() {
            if hook.poke(&*vcpu) == ParkVerdict::Stop {
                return ParkVerdict::Stop;
            }
        }
        ParkVerdict::Resume
    }

    /// Runs the park hooks at checkpoint `name` with the vCPU parked.
    fn park_hooks(&mut self, name: &str) -> ParkVerdict {
        // The hooks are fixed before the run: empty stays empty.
        if self.hooks.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
            return ParkVerdict::Resume;
        }
        // Every other vCPU parked first: the hooks see one consistent state.
        // (The world first, the hooks' lock after: a vCPU waiting for
        // that lock could not park.)
        let world = self.world.stop(self.index, &self.stop);
        if !world.is_stopped() {
            return ParkVerdict::Stop;
        }
        let mut hooks = self.hooks.lock().unwrap_or_else(PoisonError::into_inner);
        self.link.vcpus.set_current(self.index);
        let vcpu = lock(&self.vcpu);
        for hook in hooks.iter_mut() {
            if hook.checkpoint(name, &*vcpu) == ParkVerdict::Stop {
                return ParkVerdict::Stop;
            }
        }
        ParkVerdict::Resume
    }
}

/// What the (interrupted) vCPU is doing. Halted for good: it sits in
/// `hlt` with interrupts masked; with the interrupt controllers in KVM that
/// never ends in an exit, and nothing but an NMI (which this VMM never
/// sends) or an INIT from another vCPU could wake it.
fn cpu_state(vcpu: &VcpuFd) -> CpuState {
    match vcpu.get_mp_state().map(|s| s.mp_state) {
        Ok(kvm_bindings::KVM_MP_STATE_HALTED)
            if vcpu.get_regs().is_ok_and(|r| r.rflags & mm_core::abi::cpu::RFLAGS_IF == 0) =>
        {
            CpuState::HaltedForGood
        }
        Ok(kvm_bindings::KVM_MP_STATE_UNINITIALIZED | kvm_bindings::KVM_MP_STATE_INIT_RECEIVED) => {
            CpuState::WaitingForSipi
        }
        _ => CpuState::Running,
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
    use crate::devices::{serial::SerialConsole, CHECKPOINT_PORT, DESCRIPTOR_PORT, DESCRIPTOR_PORT_HIGH, EXIT_PORT};

    fn bus() -> PortBus {
        PortBus::new(Arc::new(Mutex::new(SerialConsole::captured().0)), Arc::default())
    }

    #[test]
    fn exits_map_to_actions() {
        let mut b = bus();
        let l = GuestLink::default();
        assert_eq!(handle_exit(VcpuExit::IoOut(EXIT_PORT, &[3, 0, 0, 0]), &mut b, &l), ExitAction::Exit(3));
        assert_eq!(handle_exit(VcpuExit::IoOut(0x3f8, b"x"), &mut b, &l), ExitAction::Continue);
        assert_eq!(handle_exit(VcpuExit::Shutdown, &mut b, &l), ExitAction::Crash(Crash::Shutdown));
        assert_eq!(handle_exit(VcpuExit::Hlt, &mut b, &l), ExitAction::Crash(Crash::Halted));
        assert_eq!(
            handle_exit(VcpuExit::FailEntry(7, 0), &mut b, &l),
            ExitAction::Crash(Crash::FailEntry { reason: 7 })
        );
        let mut d = [0u8; 4];
        assert_eq!(handle_exit(VcpuExit::MmioRead(0xfee0_0000, &mut d), &mut b, &l), ExitAction::Continue);
        assert_eq!(d, [0xff; 4]);
        assert!(matches!(handle_exit(VcpuExit::Unknown, &mut b, &l), ExitAction::Crash(Crash::Unexpected(_))));
        assert_eq!(handle_exit(VcpuExit::IoOut(CHECKPOINT_PORT, b"c"), &mut b, &l), ExitAction::Continue);
        assert_eq!(handle_exit(VcpuExit::IoOut(CHECKPOINT_PORT, &[0]), &mut b, &l), ExitAction::Checkpoint("c".into()));
        handle_exit(VcpuExit::IoOut(DESCRIPTOR_PORT, &0x5000u32.to_le_bytes()), &mut b, &l);
        handle_exit(VcpuExit::IoOut(DESCRIPTOR_PORT_HIGH, &0u32.to_le_bytes()), &mut b, &l);
        assert_eq!(l.descriptor.get(), Some(0x5000), "the runner's link holds the published descriptor");
        assert_eq!(l.exits.take().values().sum::<u64>(), 11, "every exit counted");
    }
}
