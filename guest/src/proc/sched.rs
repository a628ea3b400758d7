//! Tasks and the scheduler: a task table, round-robin run queues per CPU,
//! preemption on the local APIC timer (only ring 3 is ever preempted:
//! the kernel runs with interrupts off), and the life cycle of a process:
//! spawn (exec of an embedded program), fork, exit (the mm goes at once,
//! the kernel stack when the parent reaps), wait.
//!
//! The boot context (kmain and the self-tests) is task 0, the boot CPU's
//! idle task: it runs when no process is runnable, and waits for
//! processes by scheduling them. Every other CPU has its own idle task,
//! the loop its start-up path ends in ([`idle_loop`]).
//!
//! # SMP
//!
//! Each CPU has its own run queue, its own `current` and idle context
//! (Linux's `struct rq`). Placement and balancing are Linux's in small:
//! a new or woken task goes to the least-loaded CPU its mask allows
//! (load: queued tasks plus one if the CPU is busy; ties go to the CPU it
//! last ran on), a CPU with nothing of its own steals from the busiest
//! queue before it idles (newidle balancing), an idle CPU looks again at
//! every interrupt (the tick among them), and at each tick a CPU whose
//! load is two or more below another's pulls one task (periodic
//! balancing). A task whose mask loses its CPU moves at once: queued, to
//! an allowed queue; running, through the reschedule IPI
//! ([`migrate_if_disallowed`]) or at once if it is the caller.
//!
//! Locking: the queues live under the scheduler's one irq-safe lock
//! (rank SCHED), with the task table. Linux gives each run queue its own
//! lock and double-locks two in a fixed order to migrate; here a task's
//! state, wake and pid lookups all go through the shared task table
//! anyway, so per-queue locks would still need that lock around every
//! wake: one lock keeps migration, stealing and wakes atomic with no
//! ordering rule to get wrong, at the cost of contention that this
//! kernel's few CPUs (and its emulated ring 0) do not feel.
//!
//! A task being switched out is marked in its CPU's `switching` slot
//! until the switch has saved its stack (`finish_task_switch`, run by
//! whatever the CPU resumes, and by a new task's first entry in
//! `schedule_tail`); no other CPU picks it, and no parent reaps it, until
//! then (Linux's `on_cpu`). A wake that lands while its target is still
//! running (between its last check and its sleep, possible once another
//! CPU is the waker) is remembered in `woken`, and the sleep returns at
//! once (Linux sets the task's state before checking instead: the same
//! guarantee, no lost wake-ups). Idle CPUs wait in `hlt` with interrupts
//! open and are woken by a reschedule IPI when work is queued for them.
//!
//! Lazy TLB: a kernel thread and an idle task keep the root the CPU has
//! loaded (see `schedule`); `tlb::leave_root`, called by exit_mmap before
//! the page tables go, moves every CPU still holding a dying root to the
//! kernel's (Linux's lazy-TLB shootdown in place of `mm_count` pins).

use super::abi::MmStat;
use super::mm::MmStruct;
use crate::arch::gdt::{USER_CS, USER_DS};
use crate::arch::percpu::{cpu_id, MAX_CPUS};
use crate::arch::traps::TrapFrame;
use crate::arch::usermode::{context_switch, prepare_stack, FpuState};
use crate::arch::{cpu, gdt, syscall};
use crate::fmt::Dec;
use crate::mm::KERNEL_PT;
use crate::sync::{rank, SpinLock};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use mm_core::addr::PAGE_SHIFT;

/// A kernel stack for a new task (its lowest address), from the vmalloc
/// window with a guard page below (kstack.rs), counted in meminfo's
/// KernelStack.
fn alloc_kstack() -> Option<u64> {
    super::kstack::alloc_thread_stack()
}

/// Frees a reaped task's kernel stack (no lock held: it may unmap).
fn free_kstack(base: u64) {
    super::kstack::free_thread_stack(base)
}

/// An address space shared by reference (the task and, while it runs a
/// system call, the kernel code serving it). The threads of a process
/// (and a CLONE_VM child) share one: its users (Linux's `mm_users`) are
/// the tasks whose `mm` points at it, and the last one to exit or exec
/// tears it down.
pub type MmRef = Arc<SpinLock<MmStruct>>;

/// A descriptor table shared by reference (CLONE_FILES). Taken with no
/// scheduler lock held, and a file is dropped only after it is released
/// (a pipe end's last close wakes sleepers). Its lock ranks RECLAIM, just
/// outside the pipes' (MISC): copying a pipe's descriptor counts the new
/// end under the pipe's lock. (An allocation under it, a table growing,
/// is served from the reserves as inside reclaim, never by reclaiming.)
pub type FilesRef = Arc<SpinLock<alloc::vec::Vec<Option<crate::fs::file::File>>>>;

/// A new descriptor table holding `v`.
pub fn new_files(v: alloc::vec::Vec<Option<crate::fs::file::File>>) -> FilesRef {
    Arc::new(SpinLock::new_with("a descriptor table", rank::RECLAIM, v))
}

/// Wraps a new address space for its first task.
pub fn new_mm_ref(mm: MmStruct) -> MmRef {
    Arc::new(SpinLock::new_with("an mm_struct", rank::MM, mm))
}

/// Where a task is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    /// On the run queue or running.
    Runnable,
    /// Sleeping in `wait4`.
    Waiting,
    /// Exited; the status waits for the parent.
    Zombie(u64),
}

/// A process (Linux's `task_struct`, the parts this kernel needs).
pub struct Task {
    /// Process id.
    pub pid: u64,
    /// Parent's pid (0: the kernel).
    pub parent: u64,
    /// The program's name.
    pub name: &'static str,
    /// Life-cycle state.
    pub state: State,
    /// Kernel stack: its lowest address (kstack.rs; `THREAD_SIZE` bytes
    /// above an unmapped guard page).
    kstack: u64,
    /// The CPU whose queue holds it, or that last ran it.
    cpu: usize,
    /// A kernel thread (kthread_run): it never has user memory, and
    /// runs on whatever root the CPU has loaded (lazy TLB).
    pub kthread: bool,
    /// The PGD CR3 gets when the task runs (the kernel root once exited).
    pgd: u64,
    /// Kernel stack pointer while parked.
    rsp: u64,
    /// FPU/SSE registers while not running.
    fpu: Box<FpuState>,
    /// The address space (None once exited).
    pub mm: Option<MmRef>,
    /// Times the timer preempted this task.
    pub preemptions: u64,
    /// Where an unresolvable ring-3 #PF or #GP resumes (`SYS_PROBE_FIXUP`),
    /// 0 for none: the fault then kills as usual. Not inherited by fork,
    /// so a child never resumes at a fix-up it did not register.
    pub probe_fixup: u64,
    /// The OOM killer's adjustment, -1000..=1000 (Linux's
    /// `signal->oom_score_adj`, inherited by fork).
    pub oom_score_adj: i32,
    /// /proc/PID/make-it-fail: fault injection's task filter picks this
    /// task (mm/fail_page_alloc.rs; Linux's `make_it_fail`, inherited by
    /// fork and clone).
    pub make_it_fail: bool,
    /// The task's NUMA memory policy (set_mempolicy; Linux's
    /// `task->mempolicy`, inherited by fork and clone).
    pub mempolicy: mm_core::mempolicy::MemPolicy,
    /// The last node a task-interleave allocation used (Linux's
    /// `il_prev`).
    pub il_prev: u8,
    /// Its memory cgroup's index (mm/memcg.rs; 0 the root): inherited by
    /// fork, moved by a write to cgroup.procs.
    pub memcg: u16,
    /// Killed (SIGKILL, by the OOM killer): the task dies the next time
    /// it would return to user mode.
    pub killed: bool,
    /// The user FS base (`arch_prctl(ARCH_SET_FS)`: the thread pointer
    /// of glibc and musl), loaded into IA32_FS_BASE when the task runs.
    pub fs_base: u64,
    /// Open files by descriptor (None for the built-in programs, whose
    /// fds 1 and 2 are the kernel console, and once exited): shared by
    /// the tasks cloned with CLONE_FILES (Linux's `files_struct`).
    pub files: Option<FilesRef>,
    /// `set_tid_address`'s (and CLONE_CHILD_CLEARTID's) pointer: at exit
    /// the task stores 0 there and wakes one futex waiter (pthread_join).
    pub clear_child_tid: u64,
    /// Thread-group id (Linux's `tgid`): the pid of the group leader;
    /// `getpid` returns it, `gettid` the task's own pid.
    pub tgid: u64,
    /// `set_robust_list`'s head and length, kept per task and walked at
    /// its exit (futex.rs `exit_robust_list`).
    pub robust_list: (u64, u64),
    /// On a group leader: the group's exit status once `exit_group` or a
    /// fatal signal ended the group (Linux's `signal->group_exit_code`).
    pub group_exit: Option<u64>,
    /// The parent suspended in vfork/CLONE_VFORK until this task execs or
    /// exits (0: none; Linux's `vfork_done`).
    pub vfork_parent: u64,
    /// The executable's path (/proc/self/exe), "" for built-in programs.
    pub exe: &'static str,
    /// Faults of the address spaces this task left (execve) or lost (exit,
    /// the OOM reaper): Linux counts faults per task, and `getrusage` and
    /// `wait4` report them across an execve.
    pub ru_self: Rusage,
    /// The reaped children's totals (their own and their reaped
    /// children's), for `getrusage(RUSAGE_CHILDREN)`.
    pub ru_children: Rusage,
    /// Its argument strings, each NUL-terminated (/proc/PID/cmdline).
    pub cmdline: alloc::vec::Vec<u8>,
    /// Signal dispositions, mask, pending set (proc/signal.rs).
    pub signal: Box<super::signal::SigState>,
    /// The working directory (Linux's `fs_struct`'s pwd, an absolute
    /// normalized path): shared by the tasks cloned with CLONE_FS, copied
    /// by fork, kept by execve.
    pub cwd: CwdRef,
    /// While sleeping in [`sleep_timeout`]: the boot-relative ns at which
    /// the tick wakes it (0: no timed sleep).
    wake_at: u64,
}

/// A working directory shared by reference (CLONE_FS). Its lock ranks
/// MISC: taken with no scheduler lock held.
pub type CwdRef = Arc<SpinLock<alloc::string::String>>;

/// A new working directory `path` for a task.
pub fn new_cwd(path: &str) -> CwdRef {
    Arc::new(SpinLock::new_with("a working directory", rank::MISC, alloc::string::String::from(path)))
}

/// The page-fault part of Linux's `struct rusage` (the rest is not
/// measured).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Rusage {
    /// Faults served without I/O (`ru_minflt`).
    pub minflt: u64,
    /// Faults that read from swap (`ru_majflt`).
    pub majflt: u64,
}

impl Rusage {
    /// An address space's counts.
    pub fn of(st: &super::abi::MmStat) -> Rusage {
        Rusage { minflt: st.faults.saturating_sub(st.maj_faults), majflt: st.maj_faults }
    }

    /// The sum of both.
    pub fn plus(self, o: Rusage) -> Rusage {
        Rusage { minflt: self.minflt + o.minflt, majflt: self.majflt + o.majflt }
    }
}

/// Adds the counts of an address space the task `pid` (its process) no
/// longer has.
fn retire_faults(pid: u64, ru: Rusage) {
    SCHED.with(|s| {
        // The process's totals are its group leader's.
        let tgid = s.tasks.get(&pid).map_or(pid, |t| t.tgid);
        if let Some(t) = s.tasks.get_mut(&tgid) {
            t.ru_self = t.ru_self.plus(ru);
        }
    });
}

/// The running task's fault counts: its current address space's and those
/// it left (`getrusage(RUSAGE_SELF)`), and its reaped children's
/// (`RUSAGE_CHILDREN`).
pub fn current_rusage() -> (Rusage, Rusage) {
    let now = current_mm().map(|mm| mm.with(|m| Rusage::of(&m.stat))).unwrap_or_default();
    // The process's: the group leader keeps the totals.
    let tgid = current_tgid();
    with_task(tgid, |t| (t.ru_self.plus(now), t.ru_children)).unwrap_or_default()
}

impl Task {
    fn kstack_top(&self) -> u64 {
        self.kstack + super::kstack::THREAD_SIZE
    }
}

/// The scheduler's state.
pub struct Sched {
    tasks: BTreeMap<u64, Box<Task>>,
    /// Each CPU's run queue (Linux's `struct rq`, its CFS part reduced to
    /// round robin): the runnable tasks waiting for that CPU.
    runq: [VecDeque<u64>; MAX_CPUS],
    /// The task each CPU runs (0: its idle task).
    current: [u64; MAX_CPUS],
    /// The task each CPU is switching away from, until its stack is saved.
    switching: [u64; MAX_CPUS],
    /// Tasks woken while they were still running (see the module doc):
    /// a vector with room reserved at boot, so a wake (the OOM killer's
    /// among them) never allocates.
    woken: alloc::vec::Vec<u64>,
    /// CPU masks of tasks that may not run everywhere (Linux's
    /// `cpus_mask`, set by `sched_setaffinity`; inherited by fork).
    affinity: BTreeMap<u64, u64>,
    /// The mask tasks the kernel itself starts get (0: every CPU).
    spawn_affinity: u64,
    next_pid: u64,
    idle_rsp: [u64; MAX_CPUS],
    // Boxed as a task's FPU state is: the self-tests' leak check counts
    // slab pages, and these belong with the tasks' 512-byte objects.
    #[allow(clippy::vec_box)]
    idle_fpu: alloc::vec::Vec<Box<FpuState>>,
    /// Context switches per CPU.
    pub switches_on: [u64; MAX_CPUS],
    /// Switches to a task (not to idle) per CPU: where the work ran.
    pub tasks_run_on: [u64; MAX_CPUS],
    /// Tasks each CPU took from another CPU's queue (idle stealing and
    /// the tick's balancing; Linux's `lb_gained`).
    pub pulled_on: [u64; MAX_CPUS],
    /// Tasks placed on each CPU's queue (new, woken, requeued).
    pub queued_on: [u64; MAX_CPUS],
    /// Longest each CPU's run queue got.
    pub max_queue_on: [u64; MAX_CPUS],
    /// Most processes alive at once (a self-test figure).
    pub max_alive: u64,
    /// Timer interrupts taken.
    pub ticks: u64,
    /// Context switches.
    pub switches: u64,
    /// No timed sleeper's deadline ([`sleep_timeout`]) is earlier than
    /// this (u64::MAX: none sleeps): the tick looks at the tasks only
    /// once it is reached.
    next_wake: u64,
}

impl Sched {
    /// The task this CPU runs (0: its idle task).
    fn cur(&self) -> u64 {
        self.current[cpu_id()]
    }

    /// Whether `pid` runs on some CPU or is being switched out of one.
    fn on_cpu(&self, pid: u64) -> bool {
        pid != 0 && (self.current.contains(&pid) || self.switching.contains(&pid))
    }

    /// The CPUs `pid` may run on (its mask within the online CPUs).
    fn allowed(&self, pid: u64) -> u64 {
        let online = online_mask();
        match self.affinity.get(&pid) {
            Some(m) if m & online != 0 => m & online,
            _ => online,
        }
    }

    /// Whether `pid` may run on CPU `c`.
    fn allowed_on(&self, pid: u64, c: usize) -> bool {
        self.allowed(pid) & (1 << c) != 0
    }

    /// Whether `pid` may run on this CPU.
    fn allowed_here(&self, pid: u64) -> bool {
        self.allowed_on(pid, cpu_id())
    }

    /// Whether CPU `c` could take task `p` from a queue now: allowed
    /// there, and its stack saved (a task woken while it was still being
    /// switched out waits until that switch finishes), unless `p` is what
    /// `c` runs (a yield with nothing else to run picks it again).
    fn pickable(&self, p: u64, c: usize) -> bool {
        (p == self.current[c] || !self.on_cpu(p)) && self.allowed_on(p, c)
    }

    /// CPU `c`'s load: its queued tasks, plus one if it is busy (it runs
    /// a task, or it is not waiting in idle: the boot CPU's idle context
    /// runs the kernel's own code, the self-tests, until it waits).
    fn load(&self, c: usize) -> usize {
        use core::sync::atomic::Ordering;
        let busy = self.current[c] != 0 || IDLE_CPUS.load(Ordering::Relaxed) & (1 << c) == 0;
        self.runq[c].len() + busy as usize
    }

    /// Where `pid` should wait to run (Linux's `select_task_rq`): the
    /// least-loaded CPU it may run on; on a tie the CPU it last ran on
    /// (its cache, and a task still being switched out there is picked
    /// as soon as that switch ends), then this CPU, then the lowest.
    fn select_cpu(&self, pid: u64) -> usize {
        let mask = self.allowed(pid);
        let me = cpu_id();
        let last = self.tasks.get(&pid).map_or(me, |t| t.cpu);
        let rank = |c: usize| (self.load(c), c != last, c != me, c);
        (0..MAX_CPUS).filter(|&c| mask & (1 << c) != 0).min_by_key(|&c| rank(c)).unwrap_or(me)
    }

    /// Puts `pid` on CPU `c`'s queue; a CPU other than this one is sent
    /// the reschedule IPI if it waits in idle.
    fn enqueue_on(&mut self, c: usize, pid: u64, front: bool) {
        if front {
            self.runq[c].push_front(pid);
        } else {
            self.runq[c].push_back(pid);
        }
        if let Some(t) = self.tasks.get_mut(&pid) {
            t.cpu = c;
        }
        self.queued_on[c] += 1;
        self.max_queue_on[c] = self.max_queue_on[c].max(self.runq[c].len() as u64);
        kick_idle_cpu(c);
    }

    /// Queues `pid` on the CPU [`Sched::select_cpu`] chooses.
    fn enqueue(&mut self, pid: u64, front: bool) {
        let c = self.select_cpu(pid);
        self.enqueue_on(c, pid, front);
    }

    /// Takes `pid` off whichever queue holds it; the CPU's index.
    fn dequeue(&mut self, pid: u64) -> Option<usize> {
        for c in 0..MAX_CPUS {
            if let Some(i) = self.runq[c].iter().position(|&p| p == pid) {
                self.runq[c].remove(i);
                return Some(c);
            }
        }
        None
    }

    /// The queue (not this CPU's) a task could be taken from for this
    /// CPU: the most loaded one with a task this CPU may run, and the
    /// task's position there (the last such: the most recently queued,
    /// whose cache is coldest). None if no queue has one.
    fn steal_candidate(&self) -> Option<(usize, usize)> {
        let me = cpu_id();
        (0..MAX_CPUS)
            .filter(|&c| c != me && !self.runq[c].is_empty())
            .filter_map(|c| Some((c, self.runq[c].iter().rposition(|&p| self.pickable(p, me))?)))
            .max_by_key(|&(c, _)| self.load(c))
    }

    /// Takes the task at `i` of CPU `from`'s queue for this CPU.
    fn pull(&mut self, from: usize, i: usize) -> Option<u64> {
        let me = cpu_id();
        let p = self.runq[from].remove(i)?;
        if let Some(t) = self.tasks.get_mut(&p) {
            t.cpu = me;
        }
        self.pulled_on[me] += 1;
        Some(p)
    }

    /// Takes this CPU's next task: the first on its own queue it can run;
    /// with none, one stolen from the busiest other queue (Linux's
    /// newidle balancing). A task woken while it was still being switched
    /// out stays queued until its switch finishes.
    fn pick_next(&mut self) -> Option<u64> {
        let me = cpu_id();
        if let Some(i) = self.runq[me].iter().position(|&p| self.pickable(p, me)) {
            return self.runq[me].remove(i);
        }
        let (from, i) = self.steal_candidate()?;
        self.pull(from, i)
    }

    /// Whether a queued task could run here now (on this CPU's queue or
    /// stolen from another's).
    fn has_runnable(&self) -> bool {
        let me = cpu_id();
        self.runq[me].iter().any(|&p| p != self.current[me] && self.pickable(p, me)) || self.steal_candidate().is_some()
    }

    /// Whether any task is queued, runs, or is being switched out,
    /// anywhere: while one is, a wake may still come.
    fn anything_active(&self) -> bool {
        self.runq.iter().any(|q| !q.is_empty())
            || self.current.iter().any(|&p| p != 0)
            || self.switching.iter().any(|&p| p != 0)
            // A timed sleeper: the tick wakes it.
            || self.tasks.values().any(|t| t.wake_at != 0 && t.state == State::Waiting)
    }

    /// The tick's balancing (Linux's periodic `load_balance`, one task
    /// at a time): if another CPU's load exceeds this one's by two or
    /// more, this CPU takes one of its queued tasks.
    fn balance_tick(&mut self) {
        let me = cpu_id();
        if let Some((from, i)) = self.steal_candidate() {
            if self.load(from) >= self.load(me) + 2 {
                if let Some(p) = self.pull(from, i) {
                    self.runq[me].push_back(p);
                }
            }
        }
    }

    /// Makes `pid` runnable if it sleeps; if it still runs (about to
    /// sleep), remembers the wake so the sleep returns at once.
    fn wake_locked(&mut self, pid: u64) {
        let Some(t) = self.tasks.get_mut(&pid) else { return };
        match t.state {
            State::Waiting => {
                t.state = State::Runnable;
                self.enqueue(pid, false);
                publish_states(self, None);
            }
            State::Runnable => {
                if !self.woken.contains(&pid) {
                    self.woken.push(pid);
                }
            }
            State::Zombie(_) => {}
        }
    }

    /// Puts the running task to sleep unless a wake is pending for it;
    /// true if it must call `schedule`.
    fn prepare_sleep(&mut self) -> bool {
        let cur = self.cur();
        if let Some(i) = self.woken.iter().position(|&p| p == cur) {
            self.woken.swap_remove(i);
            return false;
        }
        match self.tasks.get_mut(&cur) {
            Some(t) => {
                t.state = State::Waiting;
                publish_states(self, None);
                true
            }
            None => false,
        }
    }
}

/// The online CPUs as a mask.
fn online_mask() -> u64 {
    // (No `clamp`: core's is unusable in ring 0 here, see guest_code.)
    let n = crate::arch::smp::nr_cpus().min(MAX_CPUS);
    if n == 0 {
        1
    } else if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Room for pending wakes reserved at boot (more tasks than this woken
/// at once while running would allocate).
const WOKEN_RESERVE: usize = 128;

/// CPUs waiting in `hlt` for work (bit n: CPU n).
static IDLE_CPUS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Sends the reschedule IPI to CPU `c`.
fn resched_cpu(c: usize) {
    use core::sync::atomic::Ordering;
    let apic_id = crate::arch::percpu::cpu(c).apic_id.load(Ordering::Relaxed);
    crate::arch::apic::send_ipi(apic_id, crate::arch::idt::RESCHED_VECTOR);
}

/// Sends the reschedule IPI to the CPU (other than this one) running
/// `pid`, so it passes through the kernel's return-to-user checks.
fn kick_cpu_running(s: &Sched, pid: u64) {
    let me = cpu_id();
    if let Some(c) = (0..MAX_CPUS).find(|&c| c != me && s.current[c] == pid) {
        resched_cpu(c);
    }
}

/// Sends the reschedule IPI to CPU `c` if it is not this one and waits
/// in idle (a busy CPU finds its queue when it next schedules).
fn kick_idle_cpu(c: usize) {
    use core::sync::atomic::Ordering;
    if c != cpu_id() && IDLE_CPUS.load(Ordering::Acquire) & (1 << c) != 0 {
        resched_cpu(c);
    }
}

/// Waits with interrupts open until an interrupt arrives (a reschedule
/// IPI, the timer, a device), marked idle so wakers send the IPI. The
/// caller found nothing to run with interrupts off; an IPI sent since is
/// pending and ends the `hlt` at once (`sti` opens interrupts only after
/// the next instruction).
fn idle_wait() {
    use core::sync::atomic::Ordering;
    let bit = 1 << cpu_id();
    IDLE_CPUS.fetch_or(bit, Ordering::AcqRel);
    // Re-check after announcing: a task queued before the announcement
    // sent no IPI.
    if !SCHED.with(|s| s.has_runnable()) {
        // SAFETY: opens interrupts for the `hlt` only; the handlers that
        // can run (timer, IPIs, devices) take no lock this CPU holds (it
        // holds none here).
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) }
    }
    IDLE_CPUS.fetch_and(!bit, Ordering::AcqRel);
}

/// The idle task of a CPU other than the boot CPU: runs whatever is
/// queued, else waits for work. Never returns.
pub fn idle_loop() -> ! {
    loop {
        crate::sync::assert_no_locks_held("the idle loop");
        crate::arch::smp::park_if_stopped();
        crate::arch::tlb::poll();
        sync_timer();
        if SCHED.with(|s| {
            wake_pending_kthreads(s);
            s.has_runnable()
        }) {
            schedule();
        } else {
            idle_wait();
        }
    }
}

/// Whether CPUs should run the preemption tick (the boot CPU's choice:
/// `start_timer`), which the other CPUs follow when idle.
pub static TIMER_WANTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Starts or stops this CPU's tick to match the boot CPU's.
fn sync_timer() {
    let wanted = TIMER_WANTED.load(core::sync::atomic::Ordering::Relaxed);
    if wanted && !crate::arch::apic::timer_on() {
        super::start_timer_here();
    } else if !wanted && crate::arch::apic::timer_on() {
        crate::arch::apic::stop_timer();
    }
}

/// Prints each online CPU's context switches (Linux's
/// /proc/schedstat, in small), when there is more than one CPU.
pub fn report_cpus() {
    let n = crate::arch::smp::nr_cpus();
    if n <= 1 {
        return;
    }
    let (sw, run, pulled, queued, maxq, now) = SCHED.with(|s| {
        let mut now = [0u64; MAX_CPUS];
        for (n, q) in now.iter_mut().zip(s.runq.iter()) {
            *n = q.len() as u64;
        }
        (s.switches_on, s.tasks_run_on, s.pulled_on, s.queued_on, s.max_queue_on, now)
    });
    let line = |what: &str, v: &[u64; MAX_CPUS]| {
        crate::kprint!("sched: {} per CPU:", what);
        for (c, v) in v.iter().enumerate().take(n) {
            crate::kprint!(" cpu{}={}", Dec(c as u64), Dec(*v));
        }
        crate::kprintln!("");
    };
    line("context switches", &sw);
    line("tasks run", &run);
    line("tasks queued", &queued);
    line("tasks pulled", &pulled);
    line("longest run queue", &maxq);
    line("run queue length", &now);
    let t = &crate::arch::tlb::STATS;
    use core::sync::atomic::Ordering::Relaxed;
    crate::kprint!(
        "tlb: {} remote shootdowns, {} IPIs sent; requests served per CPU:",
        Dec(t.remote_flushes.load(Relaxed)),
        Dec(t.ipis_sent.load(Relaxed))
    );
    for (c, v) in t.received.iter().enumerate().take(n) {
        crate::kprint!(" cpu{}={}", Dec(c as u64), Dec(v.load(Relaxed)));
    }
    crate::kprintln!("");
    crate::kprintln!(
        "tlb: lazy TLB: {} switches to a kernel thread or idle kept a user root, {} returns to it without a CR3 load, {} CPUs made to leave a root before its tables were freed",
        Dec(t.lazy_kept.load(Relaxed)),
        Dec(t.lazy_resumed.load(Relaxed)),
        Dec(t.lazy_left.load(Relaxed))
    );
}

/// The scheduler.
pub static SCHED: SpinLock<Sched> = SpinLock::new_irqsafe("the scheduler", rank::SCHED);

/// Sets up the (empty) task table.
pub fn init() {
    crate::arch::tlb::set_kernel_root(KERNEL_PT.with(|m| m.root().0));
    SCHED.set(Sched {
        tasks: BTreeMap::new(),
        runq: [const { VecDeque::new() }; MAX_CPUS],
        current: [0; MAX_CPUS],
        switching: [0; MAX_CPUS],
        woken: alloc::vec::Vec::with_capacity(WOKEN_RESERVE),
        affinity: BTreeMap::new(),
        spawn_affinity: 0,
        next_pid: 1,
        idle_rsp: [0; MAX_CPUS],
        // One per CPU the firmware lists (the page allocator's count), each
        // its own allocation as a task's is.
        idle_fpu: (0..crate::mm::PAGES.with(|p| p.buddy.nr_cpus()).clamp(1, MAX_CPUS))
            .map(|_| Box::new(FpuState::initial()))
            .collect(),
        switches_on: [0; MAX_CPUS],
        tasks_run_on: [0; MAX_CPUS],
        pulled_on: [0; MAX_CPUS],
        queued_on: [0; MAX_CPUS],
        max_queue_on: [0; MAX_CPUS],
        max_alive: 0,
        ticks: 0,
        switches: 0,
        next_wake: u64::MAX,
    });
}

/// The running task's pid (0: the kernel's idle task).
pub fn current_pid() -> u64 {
    SCHED.with(|s| s.cur())
}

/// The running process's address space.
pub fn current_mm() -> Option<MmRef> {
    SCHED.with(|s| s.tasks.get(&s.cur()).and_then(|t| t.mm.clone()))
}

/// The address spaces of every live process but `pid`, by pid.
pub fn other_mms(pid: u64) -> alloc::vec::Vec<(u64, MmRef)> {
    // Each address space once (threads share one), none of `pid`'s.
    let mine = with_task(pid, |t| t.mm.clone()).flatten();
    let all: alloc::vec::Vec<(u64, MmRef)> = SCHED
        .with(|s| s.tasks.values().filter(|t| t.pid != pid).filter_map(|t| Some((t.pid, t.mm.clone()?))).collect());
    let mut out: alloc::vec::Vec<(u64, MmRef)> = alloc::vec::Vec::new();
    for (p, m) in all {
        if !mine.as_ref().is_some_and(|x| Arc::ptr_eq(x, &m)) && !out.iter().any(|(_, o)| Arc::ptr_eq(o, &m)) {
            out.push((p, m));
        }
    }
    out
}

/// The running task's probe fix-up address (0: none).
pub fn probe_fixup() -> u64 {
    SCHED.with(|s| s.tasks.get(&s.cur()).map_or(0, |t| t.probe_fixup))
}

/// Sets the running task's probe fix-up address (0: none); false for the
/// idle task, which has no user mode.
pub fn set_probe_fixup(addr: u64) -> bool {
    SCHED.with(|s| {
        let cur = s.cur();
        s.tasks.get_mut(&cur).map(|t| t.probe_fixup = addr).is_some()
    })
}

/// The running task's name, pid and preemption count.
pub fn current_info() -> (&'static str, u64, u64) {
    SCHED.with(|s| s.tasks.get(&s.cur()).map_or(("idle", 0, 0), |t| (t.name, t.pid, t.preemptions)))
}

/// Gives the CPU to the next runnable task (or to idle). The caller has
/// already put the current task back on the run queue if it stays
/// runnable.
pub fn schedule() {
    struct Switch {
        prev_rsp: *mut u64,
        prev_fpu: *mut FpuState,
        next_rsp: u64,
        next_fpu: *const FpuState,
        /// The root to load; 0: keep the loaded one (lazy TLB).
        cr3: u64,
        kstack: u64,
        /// The next task's pid and stack base (0, 0: idle), for the
        /// per-CPU record the double-fault handler reads.
        next_stack: (u64, u64),
        fs_base: u64,
        /// The task switched from ran lazily (a kernel thread or idle).
        prev_lazy: bool,
        kroot: u64,
    }
    // A task switched out while holding a spinlock would leave it held
    // for whoever runs next (Linux's "scheduling while atomic").
    crate::sync::assert_no_locks_held("schedule()");
    let kroot = KERNEL_PT.with(|m| m.root().0);
    let me = cpu_id();
    let sw = SCHED.with(|s| {
        wake_pending_kthreads(s);
        let next = s.pick_next().unwrap_or(0);
        if next == s.current[me] {
            return None;
        }
        let prev = s.current[me];
        // The interleave cursor task allocations advanced on this CPU
        // goes back to its task (mempolicy.rs keeps a per-CPU copy).
        if let Some(t) = s.tasks.get_mut(&prev) {
            t.il_prev = super::mempolicy::cpu_il_prev(me);
        }
        s.current[me] = next;
        CURRENT_MAKE_IT_FAIL[me]
            .store(s.tasks.get(&next).is_some_and(|t| t.make_it_fail), core::sync::atomic::Ordering::Relaxed);
        s.switching[me] = prev;
        s.switches += 1;
        s.switches_on[me] += 1;
        if next != 0 {
            s.tasks_run_on[me] += 1;
        }
        publish_states(s, Some(prev));
        let (next_rsp, next_fpu, cr3, kstack, fs_base) = match s.tasks.get(&next) {
            // A kernel thread (no PGD of its own) and the idle task use
            // only the kernel half, the same in every PGD: they keep the
            // root loaded (Linux's lazy TLB), saving two CR3 loads and
            // the TLB refill when the CPU goes back to the same process.
            // That root stays this CPU's in tlb.rs's LOADED_CR3, so its
            // shootdowns still reach the CPU; and before the root is
            // freed, `tlb::leave_root` (from exit_mmap) makes every CPU
            // still holding it load the kernel root.
            // A process that lost its address space (the OOM reaper's
            // victim, on its way out) gets the kernel root, as before:
            // it must not reach another process's user half.
            Some(t) => {
                crate::mm::memcg::set_cpu_current(me, t.memcg);
                super::mempolicy::set_cpu_current(me, t.mempolicy, t.il_prev);
                let cr3 = match (t.pgd, t.kthread) {
                    (0, true) => 0,
                    (0, false) => kroot,
                    (pgd, _) => pgd,
                };
                (t.rsp, &*t.fpu as *const FpuState, cr3, t.kstack_top(), t.fs_base)
            }
            None => {
                crate::mm::memcg::set_cpu_current(me, 0);
                super::mempolicy::set_cpu_current(me, mm_core::mempolicy::MemPolicy::DEFAULT, 0);
                (s.idle_rsp[me], &*s.idle_fpu[me] as *const FpuState, 0, 0, 0)
            }
        };
        let prev_lazy = s.tasks.get(&prev).is_none_or(|t| t.kthread);
        let (prev_rsp, prev_fpu) = match s.tasks.get_mut(&prev) {
            Some(t) => (&mut t.rsp as *mut u64, &mut *t.fpu as *mut FpuState),
            None => (&mut s.idle_rsp[me] as *mut u64, &mut *s.idle_fpu[me] as *mut FpuState),
        };
        let next_stack = s.tasks.get(&next).map_or((0, 0), |t| (t.pid, t.kstack));
        Some(Switch { prev_rsp, prev_fpu, next_rsp, next_fpu, cr3, kstack, next_stack, fs_base, prev_lazy, kroot })
    });
    let Some(sw) = sw else { return };
    // SAFETY: the pointers are into boxed task state (or the scheduler's
    // own per-CPU idle state), which outlives the switch: a task is freed
    // only when reaped, and a task being switched from or to is never
    // reaped (`switching` and `current` keep it, see `reap`), nor picked
    // by another CPU before its stack is saved (`pick_next`). The
    // next stack was parked by `switch_to` or laid out by `prepare_stack`;
    // CR3 is the next task's PGD, whose kernel half maps every kernel
    // stack.
    unsafe {
        (*sw.prev_fpu).save();
        (*sw.next_fpu).restore();
        crate::arch::percpu::this_cpu().task_stack.set(sw.next_stack);
        if sw.kstack != 0 {
            gdt::set_kernel_stack(sw.kstack);
            syscall::set_kernel_stack(sw.kstack);
        }
        let loaded = cpu::read_cr3() & !0xfff;
        if sw.cr3 != 0 && loaded != sw.cr3 {
            cpu::write_cr3(sw.cr3);
        } else if sw.cr3 != 0 && sw.prev_lazy {
            crate::arch::tlb::STATS.lazy_resumed.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        } else if sw.cr3 == 0 && loaded != sw.kroot {
            crate::arch::tlb::STATS.lazy_kept.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
        set_fs_base(sw.fs_base);
        context_switch(sw.prev_rsp, sw.next_rsp);
    }
    finish_task_switch();
}

/// After a switch, on the CPU that made it (in whatever it resumed): the
/// task switched away from has its stack saved, so other CPUs may pick it
/// and its parent may reap it (woken if it waits for that).
fn finish_task_switch() {
    let me = cpu_id();
    SCHED.with(|s| {
        let prev = core::mem::replace(&mut s.switching[me], 0);
        if let Some(State::Zombie(_)) = s.tasks.get(&prev).map(|t| t.state) {
            let parent = s.tasks.get(&prev).map_or(0, |t| t.parent);
            // Any thread of the parent may wait for it (see exit_thread).
            wake_group(s, parent);
            // The kernel (parent 0) has no task to wake: the boot CPU
            // waiting in kernel_wait looks again when interrupted.
            if parent == 0 {
                kick_idle_cpu(0);
            }
        } else if let Some(c) = (0..MAX_CPUS).find(|&c| prev != 0 && s.runq[c].contains(&prev)) {
            // Queued elsewhere while its stack was being saved: that CPU
            // may take it now.
            kick_idle_cpu(c);
        }
    });
}

/// A new task's first code, before it enters its entry point
/// (usermode.rs's `ret_to_user`): the switch that started it finishes.
#[no_mangle]
extern "C" fn schedule_tail() {
    finish_task_switch();
}

/// IA32_FS_BASE.
const MSR_FS_BASE: u32 = 0xc000_0100;
/// What each CPU's IA32_FS_BASE holds (the kernel itself never uses FS),
/// so a switch between tasks that both have none costs no `wrmsr`.
static FS_BASE_NOW: [core::sync::atomic::AtomicU64; MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; MAX_CPUS];

/// Loads the user FS base (kept until the next switch).
pub fn set_fs_base(v: u64) {
    use core::sync::atomic::Ordering;
    if FS_BASE_NOW[cpu_id()].swap(v, Ordering::Relaxed) != v {
        // SAFETY: the kernel never uses FS; the values come from
        // arch_prctl, which takes user addresses only (below TASK_SIZE,
        // so canonical: the wrmsr cannot #GP), or 0.
        unsafe { cpu::wrmsr(MSR_FS_BASE, v) }
    }
}

/// Runs `f` on the running task (None for the idle task).
pub fn with_current<R>(f: impl FnOnce(&mut Task) -> R) -> Option<R> {
    SCHED.with(|s| {
        let cur = s.cur();
        s.tasks.get_mut(&cur).map(|t| f(t))
    })
}

/// execve's switch of address space: the running task gets `mm` (CR3
/// moves to it at once), its new name and executable, no thread pointer,
/// and its close-on-exec files closed; a parent waiting in vfork goes on.
/// The old address space and whether the caller was its last user (then
/// the caller tears it down: a CLONE_VM child's exec leaves its parent's
/// alone). None for the idle task.
pub fn replace_mm(mut mm: MmStruct, name: &'static str, exe: &'static str) -> Option<(MmRef, bool)> {
    // The resource limits outlive the image (they are the process's).
    if let Some(limits) = current_mm().map(|m| m.with(|old| old.rlimits)) {
        mm.rlimits = limits;
    }
    // futex_exec_release: the old image's robust locks are released as
    // at an exit, and the new image starts with no list.
    let robust = SCHED.with(|s| {
        let cur = s.cur();
        s.tasks.get_mut(&cur).map(|t| (core::mem::take(&mut t.robust_list).0, t.pid))
    });
    if let (Some((head, tid)), Some(old)) = (robust, current_mm()) {
        if head != 0 {
            super::futex::exit_robust_list(&old, head, tid as u32);
        }
    }
    let pgd = mm.pgd;
    let cell = new_mm_ref(mm);
    let ru = current_mm().map(|m| m.with(|m| Rusage::of(&m.stat))).unwrap_or_default();
    let (old, files) = SCHED.with(|s| {
        let cur = s.cur();
        let t = s.tasks.get_mut(&cur)?;
        let old = t.mm.replace(cell);
        t.pgd = pgd;
        t.name = name;
        t.exe = exe;
        t.fs_base = 0;
        t.signal.exec();
        let (tgid, files) = (t.tgid, t.files.clone());
        let vfork_parent = core::mem::take(&mut t.vfork_parent);
        if vfork_parent != 0 {
            s.wake_locked(vfork_parent);
        }
        let last = old.as_ref().is_some_and(|m| !mm_in_use(s, m, cur));
        if last {
            // Linux counts faults per task across an execve.
            if let Some(l) = s.tasks.get_mut(&tgid) {
                l.ru_self = l.ru_self.plus(ru);
            }
        }
        publish(s);
        Some((old.map(|o| (o, last)), files))
    })?;
    // Closed after the scheduler's lock, and dropped after the table's:
    // a pipe end's last close wakes sleepers.
    let mut closed = alloc::vec::Vec::new();
    if let Some(files) = files {
        files.with(|v| {
            for f in v.iter_mut() {
                if f.as_ref().is_some_and(|f| f.cloexec) {
                    closed.push(f.take());
                }
            }
        });
    }
    drop(closed);
    // SAFETY: the new PGD's kernel half is the kernel root's, like every
    // process's, so the kernel (and this stack) stays mapped.
    unsafe { cpu::write_cr3(pgd) };
    old
}

/// Task `pid`'s name for a fatal report (the double-fault handler): only
/// if the scheduler's lock is free within a short spin, since the fault
/// may have struck with this CPU holding it.
pub fn task_name_nolock(pid: u64) -> Option<&'static str> {
    for _ in 0..1000 {
        if let Some(r) = SCHED.try_with(|s| s.tasks.get(&pid).map(|t| t.name)) {
            return r;
        }
        core::hint::spin_loop();
    }
    None
}

/// Runs `f` on task `pid`.
pub fn with_task<R>(pid: u64, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
    SCHED.with(|s| s.tasks.get_mut(&pid).map(|t| f(t)))
}

/// Runs `f` on live task `pid` (not a zombie) for a signal sent to it;
/// if `f` says the signal is deliverable, a sleeping task wakes (it
/// finds the signal when it runs). None for no such task.
pub fn signal_task<R>(pid: u64, f: impl FnOnce(&mut Task) -> Result<bool, R>) -> Option<Result<bool, R>> {
    SCHED.with(|s| {
        let t = s.tasks.get_mut(&pid).filter(|t| !matches!(t.state, State::Zombie(_)))?;
        let r = f(t);
        if matches!(r, Ok(true)) && t.mm.is_some() {
            s.wake_locked(pid);
            // A task running on another CPU sees the signal on its way
            // back to user mode: the IPI makes that soon.
            kick_cpu_running(s, pid);
        }
        Some(r)
    })
}

/// Puts the running task to sleep unless `ready(task)` holds; true if it
/// slept (and something woke it).
pub fn sleep_unless(ready: impl FnOnce(&Task) -> bool) -> bool {
    let slept = SCHED.with(|s| {
        let cur = s.cur();
        let t = s.tasks.get_mut(&cur)?;
        if ready(t) {
            return None;
        }
        s.prepare_sleep().then_some(())
    });
    if slept.is_some() {
        schedule();
    }
    slept.is_some()
}

/// Puts the running task to sleep until the boot-relative time
/// `deadline` (ns, [`super::linux::now_ns`]'s clock) unless `ready(task)`
/// holds; a [`wake`] (a signal) ends it earlier. The timer tick wakes it
/// ([`wake_timed`]): the caller has made sure the tick runs. True if it
/// slept; the caller checks the time and its wake condition again.
pub fn sleep_timeout(deadline: u64, ready: impl FnOnce(&Task) -> bool) -> bool {
    let slept = SCHED.with(|s| {
        let cur = s.cur();
        let t = s.tasks.get_mut(&cur)?;
        if ready(t) {
            return None;
        }
        t.wake_at = deadline.max(1);
        s.next_wake = s.next_wake.min(deadline);
        if s.prepare_sleep() {
            Some(())
        } else {
            if let Some(t) = s.tasks.get_mut(&cur) {
                t.wake_at = 0;
            }
            None
        }
    });
    if slept.is_some() {
        schedule();
        SCHED.with(|s| {
            let cur = s.cur();
            if let Some(t) = s.tasks.get_mut(&cur) {
                t.wake_at = 0;
            }
        });
    }
    slept.is_some()
}

/// The tick's part of timed sleeps (Linux's hrtimer expiry, at tick
/// granularity here): wakes the tasks in [`sleep_timeout`] whose deadline
/// is `now` or earlier. Called from the timer interrupt with the
/// scheduler's lock held; allocates nothing beyond what a wake does.
pub fn wake_timed(s: &mut Sched, now: u64) {
    if now < s.next_wake {
        return;
    }
    let mut due = [0u64; 16];
    loop {
        let (mut n, mut next) = (0, u64::MAX);
        for t in s.tasks.values_mut() {
            if t.wake_at == 0 || t.state != State::Waiting {
                continue;
            }
            if t.wake_at <= now && n < due.len() {
                t.wake_at = 0;
                due[n] = t.pid;
                n += 1;
            } else {
                next = next.min(t.wake_at);
            }
        }
        s.next_wake = next;
        for &pid in &due[..n] {
            s.wake_locked(pid);
        }
        if n < due.len() {
            return;
        }
    }
}

/// Pid of each node's kswapd once started (0: not running).
static KSWAPD_PID: [core::sync::atomic::AtomicU64; mm_core::numa::MAX_NODES] =
    [const { core::sync::atomic::AtomicU64::new(0) }; mm_core::numa::MAX_NODES];

/// kswapd threads' names, by node.
const KSWAPD_NAMES: [&str; mm_core::numa::MAX_NODES] =
    ["kswapd0", "kswapd1", "kswapd2", "kswapd3", "kswapd4", "kswapd5", "kswapd6", "kswapd7"];

/// kswapd's entry for each node (a kernel thread takes no argument).
const KSWAPD_ENTRY: [extern "C" fn() -> !; mm_core::numa::MAX_NODES] = [
    kswapd::<0>,
    kswapd::<1>,
    kswapd::<2>,
    kswapd::<3>,
    kswapd::<4>,
    kswapd::<5>,
    kswapd::<6>,
    kswapd::<7>,
];

/// Lock-free wakes (mm/vmscan.rs `KSWAPD_WAKE_PENDING`, set where the
/// scheduler lock may not be taken) become runnable kernel threads here.
fn wake_pending_kthreads(s: &mut Sched) {
    use core::sync::atomic::Ordering;
    let kc = KCOMPACTD_PID.load(Ordering::Relaxed);
    if kc != 0 && crate::mm::kcompactd::wake_pending() {
        if let Some(t) = s.tasks.get_mut(&kc) {
            if t.state == State::Waiting {
                t.state = State::Runnable;
                s.enqueue(kc, true);
                publish_states(s, None);
            }
        }
    }
    let pending = crate::mm::vmscan::KSWAPD_WAKE_PENDING.load(Ordering::Acquire);
    if pending == 0 {
        return;
    }
    for (nid, slot) in KSWAPD_PID.iter().enumerate() {
        let pid = slot.load(Ordering::Relaxed);
        if pid == 0 || pending & (1 << nid) == 0 {
            continue;
        }
        if let Some(t) = s.tasks.get_mut(&pid) {
            if t.state == State::Waiting {
                t.state = State::Runnable;
                // Ahead of the processes: reclaim is what they wait for.
                s.enqueue(pid, true);
                publish_states(s, None);
            }
        }
    }
}

/// Starts a kernel thread (Linux's `kthread_run`): a task with no address
/// space that runs `entry` in ring 0, interrupts off, on its own kernel
/// stack, under the kernel's page tables. It joins the run queue; its pid.
pub fn kthread_run(name: &'static str, entry: extern "C" fn() -> !) -> Option<u64> {
    let kstack = alloc_kstack()?;
    let mut task = blank_task(name, 0, kstack, 0, FpuState::initial());
    // Never a candidate (no mm), and never killed.
    task.oom_score_adj = crate::mm::oom_kill::OOM_SCORE_ADJ_MIN;
    task.kthread = true;
    // The first switch returns through the exception return path
    // (`iretq`), here to ring 0: the thread starts with rsp at the top of
    // its stack (the frame is consumed by then), as after a call.
    let frame = TrapFrame {
        rip: entry as usize as u64,
        cs: gdt::KERNEL_CS as u64,
        rflags: mm_core::abi::cpu::RFLAGS_FIXED,
        rsp: task.kstack_top() - 8,
        ss: gdt::KERNEL_DS as u64,
        ..TrapFrame::default()
    };
    task.rsp = prepare_stack(task.kstack_top(), &frame);
    Some(SCHED.with(|s| {
        let pid = s.next_pid;
        s.next_pid += 1;
        task.pid = pid;
        task.tgid = pid;
        s.tasks.insert(pid, task);
        s.enqueue(pid, false);
        publish(s);
        pid
    }))
}

/// A task with nothing of its own yet but a kernel stack, a PGD and FPU
/// state; not in the table.
fn blank_task(name: &'static str, parent: u64, kstack: u64, pgd: u64, fpu: FpuState) -> Box<Task> {
    Box::new(Task {
        pid: 0,
        parent,
        name,
        state: State::Runnable,
        kstack,
        cpu: cpu_id(),
        kthread: false,
        pgd,
        rsp: 0,
        fpu: Box::new(fpu),
        mm: None,
        preemptions: 0,
        probe_fixup: 0,
        oom_score_adj: 0,
        make_it_fail: false,
        mempolicy: mm_core::mempolicy::MemPolicy::DEFAULT,
        il_prev: 0,
        memcg: 0,
        killed: false,
        fs_base: 0,
        files: None,
        clear_child_tid: 0,
        tgid: 0,
        robust_list: (0, 0),
        group_exit: None,
        vfork_parent: 0,
        exe: "",
        ru_self: Rusage::default(),
        ru_children: Rusage::default(),
        cmdline: alloc::vec::Vec::new(),
        signal: Box::default(),
        cwd: new_cwd("/"),
        wake_at: 0,
    })
}

/// Starts kswapd if it is not running (the OOM scenario does; processes
/// and the self-tests run without it, so their task tables and leak
/// checks see only processes). Its pid.
pub fn start_kswapd() -> Option<u64> {
    // One per node (Linux's `kswapd_run` for each pg_data_t).
    let mut first = None;
    for nid in 0..crate::mm::numa::nr_nodes().min(mm_core::numa::MAX_NODES) {
        let pid = start_once(&KSWAPD_PID[nid], KSWAPD_NAMES[nid], KSWAPD_ENTRY[nid])?;
        first.get_or_insert(pid);
    }
    first
}

/// Starts the kernel thread `name` unless `pid` says it runs; its pid.
pub fn start_once(pid: &core::sync::atomic::AtomicU64, name: &'static str, entry: extern "C" fn() -> !) -> Option<u64> {
    use core::sync::atomic::Ordering;
    match pid.load(Ordering::Relaxed) {
        0 => {
            let new = kthread_run(name, entry)?;
            pid.store(new, Ordering::Relaxed);
            Some(new)
        }
        running => Some(running),
    }
}

/// Node `NID`'s kswapd (Linux's `kswapd`): balance the node's zones,
/// then sleep until the allocator wakes it again.
extern "C" fn kswapd<const NID: usize>() -> ! {
    use core::sync::atomic::Ordering;
    let bit = 1u8 << NID;
    loop {
        crate::mm::vmscan::KSWAPD_WAKE_PENDING.fetch_and(!bit, Ordering::AcqRel);
        crate::mm::vmscan::balance_pgdat(NID);
        // Sleep unless a wake arrived during the run (it is re-checked
        // under the lock, so none is lost).
        SCHED.with(|s| {
            let me = s.cur();
            let pending = crate::mm::vmscan::KSWAPD_WAKE_PENDING.load(Ordering::Acquire) & bit != 0;
            if let Some(t) = s.tasks.get_mut(&me) {
                if pending {
                    s.enqueue(me, false);
                } else {
                    t.state = State::Waiting;
                }
            }
        });
        schedule();
    }
}

/// Pid of kcompactd once started (0: not running).
static KCOMPACTD_PID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Starts kcompactd if it is not running (the `kcompactd` switch; off
/// by default, as kswapd is without swap, so other runs' task tables hold
/// only their processes). Its pid.
pub fn start_kcompactd() -> Option<u64> {
    start_once(&KCOMPACTD_PID, "kcompactd0", kcompactd)
}

/// kcompactd's body (Linux's `kcompactd`): compact for the order it was
/// woken for, then sleep until the slow path wakes it again.
extern "C" fn kcompactd() -> ! {
    loop {
        crate::mm::kcompactd::kcompactd_do_work();
        SCHED.with(|s| {
            let me = s.cur();
            let pending = crate::mm::kcompactd::wake_pending();
            if let Some(t) = s.tasks.get_mut(&me) {
                if pending {
                    s.enqueue(me, false);
                } else {
                    t.state = State::Waiting;
                }
            }
        });
        schedule();
    }
}

/// Puts the running process at the back of the run queue and schedules
/// (`sched_yield`, and the timer's preemption).
pub fn yield_now(preempted: bool) {
    SCHED.with(|s| {
        let cur = s.cur();
        if preempted {
            s.balance_tick();
        }
        if let Some(t) = s.tasks.get_mut(&cur) {
            if preempted {
                t.preemptions += 1;
            }
            if s.allowed_here(cur) {
                s.enqueue_on(cpu_id(), cur, false);
            } else {
                // Its mask no longer has this CPU (sched_setaffinity):
                // it migrates to one it has.
                s.enqueue(cur, false);
            }
        }
    });
    schedule();
}

/// Creates a task around `mm` that enters ring 3 with `frame`'s
/// registers, a new process of its own; `setup` fills in the rest (its
/// files, exe, cmdline) before it joins the run queue, since on SMP
/// another CPU may run it at once. Returns its pid.
pub fn create_task_with(
    name: &'static str,
    parent: u64,
    mm: MmStruct,
    frame: &TrapFrame,
    fpu: FpuState,
    setup: impl FnOnce(&mut Task),
) -> Option<u64> {
    let pgd = mm.pgd;
    let kstack = alloc_kstack()?;
    let mut task = blank_task(name, parent, kstack, pgd, fpu);
    task.rsp = prepare_stack(task.kstack_top(), frame);
    task.mm = Some(new_mm_ref(mm));
    setup(&mut task);
    let pid = alloc_pid();
    Some(SCHED.with(|s| {
        task.pid = pid;
        task.tgid = pid;
        task.oom_score_adj = s.tasks.get(&parent).map_or(0, |p| p.oom_score_adj);
        task.make_it_fail = s.tasks.get(&parent).is_some_and(|p| p.make_it_fail);
        task.mempolicy = s.tasks.get(&parent).map_or(mm_core::mempolicy::MemPolicy::DEFAULT, |p| p.mempolicy);
        task.memcg = s.tasks.get(&parent).map_or(0, |p| p.memcg);
        let mask = if parent == 0 { s.spawn_affinity } else { s.affinity.get(&parent).copied().unwrap_or(0) };
        if mask != 0 {
            s.affinity.insert(pid, mask);
        }
        insert_runnable(s, task);
        pid
    }))
}

/// Takes the next pid (before the task exists: clone stores the new
/// tid in user memory before the child can run).
pub fn alloc_pid() -> u64 {
    SCHED.with(|s| {
        let pid = s.next_pid;
        s.next_pid += 1;
        pid
    })
}

/// Puts a complete new task in the table and on the run queue.
fn insert_runnable(s: &mut Sched, task: Box<Task>) {
    let pid = task.pid;
    s.tasks.insert(pid, task);
    s.enqueue(pid, false);
    publish(s);
    let alive = s.tasks.values().filter(|t| !matches!(t.state, State::Zombie(_))).count() as u64;
    s.max_alive = s.max_alive.max(alive);
}

// The clone flags the scheduler acts on (Linux's include/uapi/linux/sched.h).
/// Share the address space.
pub const CLONE_VM: u64 = 0x100;
/// Share the working directory (Linux's `fs_struct`).
pub const CLONE_FS: u64 = 0x200;
/// Share the descriptor table.
pub const CLONE_FILES: u64 = 0x400;
/// Share the signal dispositions.
pub const CLONE_SIGHAND: u64 = 0x800;
/// Suspend the parent until the child execs or exits.
pub const CLONE_VFORK: u64 = 0x4000;
/// Same thread group as the caller.
pub const CLONE_THREAD: u64 = 0x10000;
/// Set the child's thread pointer.
pub const CLONE_SETTLS: u64 = 0x80000;

/// What `clone` makes of the running task: a new task with pid `pid`
/// (from [`alloc_pid`]) entering ring 3 with `frame` and `fpu`, over `mm`
/// (the caller's own with CLONE_VM, a copy otherwise); with CLONE_THREAD
/// in the caller's thread group (and with its parent), otherwise a child
/// process of the caller's group; the descriptor table shared
/// (CLONE_FILES) or copied; `tls` the thread pointer with CLONE_SETTLS;
/// `clear_tid` CLONE_CHILD_CLEARTID's pointer (0: none). The task joins
/// the run queue complete (nothing is set after it can run). None for
/// no memory (or no running task).
pub fn clone_current(
    pid: u64,
    flags: u64,
    mm: MmRef,
    frame: &TrapFrame,
    fpu: FpuState,
    tls: u64,
    clear_tid: u64,
) -> Option<u64> {
    let files = with_current(|t| t.files.clone()).flatten();
    let files = match files {
        Some(f) if flags & CLONE_FILES == 0 => {
            // A copy that shares the open file descriptions (offsets), as
            // fork's dup_fd. Built outside the scheduler's lock.
            let v = f.with(|v| v.clone());
            Some(new_files(v))
        }
        f => f,
    };
    // The working directory: shared with CLONE_FS, else a copy (fork's
    // copy_fs_struct). Read outside the scheduler's lock (its lock ranks
    // after the scheduler's).
    let cwd = with_current(|t| t.cwd.clone());
    let cwd = match cwd {
        Some(c) if flags & CLONE_FS != 0 => c,
        Some(c) => new_cwd(&c.with(|p| p.clone())),
        None => new_cwd("/"),
    };
    let pgd = mm.with(|m| m.pgd);
    let kstack = alloc_kstack()?;
    let mut task = blank_task("", 0, kstack, pgd, fpu);
    task.rsp = prepare_stack(task.kstack_top(), frame);
    task.mm = Some(mm);
    task.files = files;
    task.cwd = cwd;
    task.pid = pid;
    task.clear_child_tid = clear_tid;
    let ok = SCHED.with(|s| {
        let cur = s.cur();
        // No caller (cannot happen: clone runs in a task): the stack goes
        // back below, outside the lock.
        let Some(me) = s.tasks.get(&cur) else { return Err(task) };
        task.name = me.name;
        task.exe = me.exe;
        task.cmdline = me.cmdline.clone();
        me.signal.fork_into(&mut task.signal);
        task.oom_score_adj = me.oom_score_adj;
        task.make_it_fail = me.make_it_fail;
        task.mempolicy = me.mempolicy;
        task.memcg = me.memcg;
        task.fs_base = if flags & CLONE_SETTLS != 0 { tls } else { me.fs_base };
        if flags & CLONE_THREAD != 0 {
            task.tgid = me.tgid;
            task.parent = me.parent;
        } else {
            task.tgid = pid;
            task.parent = me.tgid;
        }
        if flags & CLONE_VFORK != 0 {
            task.vfork_parent = cur;
        }
        insert_runnable(s, task);
        Ok(())
    });
    match ok {
        Ok(()) => Some(pid),
        Err(task) => {
            free_kstack(task.kstack);
            None
        }
    }
}

/// vfork's wait (Linux's `wait_for_vfork_done`): the parent sleeps until
/// child `pid` execs or exits (it clears its `vfork_parent` then), or the
/// parent is killed.
pub fn wait_vfork_done(pid: u64) {
    loop {
        exit_if_killed();
        let waiting = SCHED.with(|s| {
            let me = s.cur();
            s.tasks.get(&pid).is_some_and(|t| t.vfork_parent == me && !matches!(t.state, State::Zombie(_)))
        });
        if !waiting {
            return;
        }
        sleep_current();
    }
}

/// The running task's thread-group id (getpid; 0 for the idle task).
pub fn current_tgid() -> u64 {
    SCHED.with(|s| s.tasks.get(&s.cur()).map_or(0, |t| t.tgid))
}

/// Whether another task of group `tgid` than `except` is alive.
fn group_alive(s: &Sched, tgid: u64, except: u64) -> bool {
    s.tasks.values().any(|t| t.tgid == tgid && t.pid != except && !matches!(t.state, State::Zombie(_)))
}

/// Whether a task other than `except` uses address space `mm`.
fn mm_in_use(s: &Sched, mm: &MmRef, except: u64) -> bool {
    s.tasks.values().any(|t| t.pid != except && t.mm.as_ref().is_some_and(|m| Arc::ptr_eq(m, mm)))
}

/// The threads of the group `pid` belongs to, live ones only (for
/// /proc/PID/task and the Threads: line).
pub fn group_threads(pid: u64) -> alloc::vec::Vec<u64> {
    SCHED.with(|s| {
        let Some(tgid) = s.tasks.get(&pid).map(|t| t.tgid) else { return alloc::vec::Vec::new() };
        s.tasks.values().filter(|t| t.tgid == tgid && !matches!(t.state, State::Zombie(_))).map(|t| t.pid).collect()
    })
}

/// The address space of the process `pid` (a thread group: its leader's,
/// or a live thread's once the leader has exited).
pub fn group_mm(pid: u64) -> Option<MmRef> {
    SCHED.with(|s| {
        let t = s.tasks.get(&pid)?;
        if let Some(m) = &t.mm {
            return Some(m.clone());
        }
        let tgid = t.tgid;
        s.tasks.values().filter(|t| t.tgid == tgid).find_map(|t| t.mm.clone())
    })
}

/// The thread of `pid`'s group that a signal `sig` for the process goes
/// to (Linux's `complete_signal`): the leader if it is alive and does
/// not block it, else the first live thread that does not, else any live
/// thread. None for no such live process.
pub fn group_target(pid: u64, sig: u64) -> Option<u64> {
    SCHED.with(|s| {
        let tgid = s.tasks.get(&pid)?.tgid;
        let bit = if (1..=64).contains(&sig) { 1u64 << (sig - 1) } else { 0 };
        let live = |t: &Task| t.tgid == tgid && !matches!(t.state, State::Zombie(_));
        let open = |t: &Task| t.signal.blocked & bit == 0;
        let leader = s.tasks.get(&tgid).filter(|t| live(t) && open(t)).map(|t| t.pid);
        leader
            .or_else(|| s.tasks.values().find(|t| live(t) && open(t)).map(|t| t.pid))
            .or_else(|| s.tasks.values().find(|t| live(t)).map(|t| t.pid))
    })
}

/// Runs `f` on every other task of the running task's thread group
/// (CLONE_SIGHAND's shared dispositions).
pub fn for_other_threads(mut f: impl FnMut(&mut Task)) {
    SCHED.with(|s| {
        let cur = s.cur();
        let Some(tgid) = s.tasks.get(&cur).map(|t| t.tgid) else { return };
        for t in s.tasks.values_mut().filter(|t| t.tgid == tgid && t.pid != cur) {
            f(t);
        }
    })
}

/// Kills every other live thread of the running task's group (they die
/// the next time they would return to user mode; sleeping ones wake).
/// With `status`, the group is exiting with it (exit_group, a fatal
/// signal): the leader keeps it for wait4.
fn kill_other_threads(status: Option<u64>) {
    SCHED.with(|s| {
        let cur = s.cur();
        let Some(tgid) = s.tasks.get(&cur).map(|t| t.tgid) else { return };
        if let (Some(st), Some(l)) = (status, s.tasks.get_mut(&tgid)) {
            if l.group_exit.is_none() {
                l.group_exit = Some(st);
            }
        }
        let victims: alloc::vec::Vec<u64> = s
            .tasks
            .values()
            .filter(|t| t.tgid == tgid && t.pid != cur && !matches!(t.state, State::Zombie(_)))
            .map(|t| t.pid)
            .collect();
        for &p in &victims {
            if let Some(t) = s.tasks.get_mut(&p) {
                t.killed = true;
            }
            // Sleepers wake; one running on another CPU is sent there
            // through the kernel's return-to-user checks.
            s.wake_locked(p);
            kick_cpu_running(s, p);
        }
        publish_states(s, None);
    })
}

/// execve's `de_thread`: every other thread of the caller's group is
/// killed and gone before the new image starts (the caller keeps its
/// own tid).
pub fn de_thread() {
    kill_other_threads(None);
    while SCHED.with(|s| {
        let cur = s.cur();
        s.tasks.get(&cur).is_some_and(|t| group_alive(s, t.tgid, cur))
    }) {
        yield_now(false);
    }
    reap_dead_threads();
}

/// Threads exited and not yet freed (a hint: [`reap_dead_threads`]
/// looks only when it is not 0).
static DEAD_THREADS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Frees the exited threads (group members other than the leader, which
/// no parent reaps: Linux's `release_task` of an autoreaped thread) that
/// are off the CPU: each one's kernel stack and task.
pub fn reap_dead_threads() {
    use core::sync::atomic::Ordering;
    // Cheap enough for every system call's entry: most find none.
    if DEAD_THREADS.load(Ordering::Relaxed) == 0 {
        return;
    }
    loop {
        let dead = SCHED.with(|s| {
            // Off every CPU: a thread still being switched out keeps its
            // stack until its switch finishes.
            let pid = s
                .tasks
                .values()
                .find(|t| t.pid != t.tgid && !s.on_cpu(t.pid) && matches!(t.state, State::Zombie(_)))
                .map(|t| t.pid)?;
            let t = s.tasks.remove(&pid);
            s.woken.retain(|&p| p != pid);
            s.affinity.remove(&pid);
            publish(s);
            t
        });
        let Some(t) = dead else { return };
        DEAD_THREADS.fetch_sub(1, Ordering::Relaxed);
        free_kstack(t.kstack);
        drop(t);
    }
}

/// The frame a new program starts from.
pub fn initial_frame(entry: u64, stack_top: u64, arg: u64) -> TrapFrame {
    TrapFrame {
        rip: entry,
        cs: USER_CS as u64,
        rflags: mm_core::abi::cpu::RFLAGS_IF | mm_core::abi::cpu::RFLAGS_FIXED,
        rsp: stack_top,
        ss: USER_DS as u64,
        rdi: arg,
        ..TrapFrame::default()
    }
}

/// Linux's `do_group_exit`: every thread of the running task's group
/// dies (the others the next time they would return to user mode) and
/// the group's exit status is `status`; then this thread exits
/// ([`exit_thread`]). exit_group, a fatal signal or fault, and the
/// built-in programs' exit come here.
pub fn do_exit(status: u64) -> ! {
    kill_other_threads(Some(status));
    exit_thread(status)
}

/// Linux's `do_exit` for one thread (SYS_exit): CLONE_CHILD_CLEARTID's
/// store of 0 and futex wake; the address space goes if this was its
/// last user (CR3 moves to the kernel's root first); the descriptor table
/// is dropped. A thread other than the leader is freed by the next
/// [`reap_dead_threads`]; the last thread of the group makes the leader
/// a zombie with the group's status, for its parent to reap, and hands
/// the group's children to the kernel. The CPU moves on.
pub fn exit_thread(status: u64) -> ! {
    let kroot = KERNEL_PT.with(|m| m.root().0);
    let (ctid, mm, robust, tid) = SCHED
        .with(|s| {
            let cur = s.cur();
            s.tasks.get_mut(&cur).map(|t| {
                (core::mem::take(&mut t.clear_child_tid), t.mm.clone(), core::mem::take(&mut t.robust_list).0, t.pid)
            })
        })
        .unwrap_or_else(|| panic!("do_exit from the idle task"));
    if let (true, Some(mm)) = (robust != 0, mm.as_ref()) {
        // Robust mutexes it still holds (futex_cleanup, before the tid).
        super::futex::exit_robust_list(mm, robust, tid as u32);
    }
    if let (true, Some(mm)) = (ctid != 0, mm.as_ref()) {
        // pthread_join waits for this (glibc on the tid, musl on
        // detach_state): a fault here is ignored, as Linux's.
        let _ = mm.with(|m| super::syscall::copy_to_user(m, ctid, &0u32.to_le_bytes()));
        super::futex::wake(mm, ctid, 1, super::futex::BITSET_MATCH_ANY);
    }
    // The counts of the address space, retired into the group leader's
    // totals below if no one else uses it any more.
    let ru = mm.as_ref().map(|m| m.with(|m| Rusage::of(&m.stat))).unwrap_or_default();
    drop(mm);
    let mut files = None;
    let (mm, last, group_end, linux, name, tgid) = SCHED.with(|s| {
        let cur = s.cur();
        let Some(t) = s.tasks.get_mut(&cur) else { panic!("do_exit from the idle task") };
        t.state = State::Zombie(status);
        t.pgd = 0;
        if t.pid != t.tgid {
            DEAD_THREADS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
        // Its descriptors close now (a pipe's reader sees EOF when the
        // last writer exits), after the lock: closing wakes.
        files = t.files.take();
        let mm = t.mm.take();
        let (tgid, name, linux) = (t.tgid, t.name, !t.exe.is_empty());
        let vfork_parent = core::mem::take(&mut t.vfork_parent);
        if vfork_parent != 0 {
            s.wake_locked(vfork_parent);
        }
        let last = mm.as_ref().is_some_and(|m| !mm_in_use(s, m, cur));
        if last {
            if let Some(l) = s.tasks.get_mut(&tgid) {
                l.ru_self = l.ru_self.plus(ru);
            }
        }
        let mut group_end = None;
        if !group_alive(s, tgid, cur) {
            // The group is gone: its leader becomes the zombie its parent
            // reaps, with the group's status (exit_group's; else the
            // leader's own if it exited first; else this thread's).
            let leader = s.tasks.get_mut(&tgid).map(|l| {
                let own = match l.state {
                    State::Zombie(c) if l.pid != cur => c,
                    _ => status,
                };
                let st = l.group_exit.unwrap_or(own);
                l.state = State::Zombie(st);
                (l.parent, st)
            });
            if let Some((parent, st)) = leader {
                group_end = Some(st);
                if let Some(p) = s.tasks.get_mut(&parent) {
                    // SIGCHLD (dropped unless the parent catches it).
                    p.signal.queue(1, super::signal::SIGCHLD, super::signal::child_info(tgid, st));
                }
                // Any thread of the parent may be the one in wait4, and
                // it may still run on another CPU between its reap that
                // found nothing and its sleep: every live thread gets
                // the wake (one still running finds it in `woken` when
                // it sleeps; a spurious one looks again). Waking only
                // the sleeping ones lost this wake on 2 CPUs: a thread
                // in waitpid slept forever with its child a zombie.
                wake_group(s, parent);
            }
            for t in s.tasks.values_mut() {
                if t.parent == tgid {
                    t.parent = 0;
                }
            }
        }
        publish(s);
        (mm, last, group_end, linux, name, tgid)
    });
    drop(files);
    // SAFETY: the kernel root maps the kernel exactly as every process's
    // PGD does (their kernel halves are copies of it).
    unsafe { cpu::write_cr3(kroot) };
    if let Some(mm) = mm {
        if last {
            mm.with(|m| {
                // A Linux program's fault counters go to the log as it exits.
                if linux {
                    super::exec::report_exit(name, tgid, group_end.unwrap_or(status), &m.stat);
                }
                m.exit_mmap()
            });
        }
        // Dropped here, not at the end of the scope: schedule() never
        // returns to a zombie.
        drop(mm);
    }
    reap_dead_threads();
    schedule();
    panic!("a zombie was scheduled");
}

/// Wakes the group leader `tgid` and every live thread of its group.
fn wake_group(s: &mut Sched, tgid: u64) {
    s.wake_locked(tgid);
    let mut from = 0;
    while let Some(w) = s
        .tasks
        .range(from..)
        .map(|(_, t)| t)
        .find(|t| t.tgid == tgid && !t.killed && !matches!(t.state, State::Zombie(_)))
        .map(|t| t.pid)
    {
        s.wake_locked(w);
        from = w + 1;
    }
}

/// What a wait found.
pub enum Reaped {
    /// A child exited: its pid, wait status, and its fault counts (its
    /// own and its reaped children's, as wait4's rusage has them).
    Child(u64, u64, Rusage),
    /// Children exist but none has exited.
    NotYet,
    /// No child matches.
    NoChild,
    /// A signal arrived while waiting (wait4 returns -ERESTARTSYS).
    Interrupted,
}

/// The signal a killed task's wait status carries.
const SIGKILL: u64 = 9;

/// Whether the running task was killed (and is on its way out).
pub fn current_killed() -> bool {
    SCHED.with(|s| s.tasks.get(&s.cur()).is_some_and(|t| t.killed))
}

/// Dies now if the running task was killed (called on every way back to
/// user mode and in wait loops: Linux's `fatal_signal_pending` check).
pub fn exit_if_killed() {
    // Whoever killed it killed the rest of the group too (exit_group,
    // SIGKILL, the OOM killer, execve's de_thread): only this thread goes.
    let status = SCHED.with(|s| {
        let t = s.tasks.get(&s.cur()).filter(|t| t.killed)?;
        Some(s.tasks.get(&t.tgid).and_then(|l| l.group_exit).unwrap_or(SIGKILL))
    });
    if let Some(st) = status {
        exit_thread(st);
    }
}

/// Per CPU: whether the task it runs has make-it-fail set (kept at each
/// switch, read without the scheduler's lock: the page allocator asks
/// with its own lock held, which ranks inside the scheduler's).
static CURRENT_MAKE_IT_FAIL: [core::sync::atomic::AtomicBool; MAX_CPUS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; MAX_CPUS];

/// Whether the running task has /proc/PID/make-it-fail set.
pub fn current_make_it_fail() -> bool {
    CURRENT_MAKE_IT_FAIL[cpu_id() % MAX_CPUS].load(core::sync::atomic::Ordering::Relaxed)
}

/// Reads, and with `set` writes, the per-task setting `field` of live
/// task `pid` (0: the caller) behind a /proc/PID file: the value before,
/// or None for no such live task; `written` runs after a write.
fn task_setting<T: Copy>(
    pid: u64,
    set: Option<T>,
    field: impl Fn(&mut Task) -> &mut T,
    written: impl FnOnce(&Sched, u64, T),
) -> Option<T> {
    SCHED.with(|s| {
        let pid = if pid == 0 { s.cur() } else { pid };
        let t = s.tasks.get_mut(&pid).filter(|t| !matches!(t.state, State::Zombie(_)))?;
        let old = *field(t);
        if let Some(v) = set {
            *field(t) = v;
            written(s, pid, v);
        }
        Some(old)
    })
}

/// Task `pid`'s make-it-fail (0: the caller), set to `set` if given;
/// None for no such live task.
pub fn make_it_fail(pid: u64, set: Option<bool>) -> Option<bool> {
    task_setting(
        pid,
        set,
        |t| &mut t.make_it_fail,
        |s, pid, v| {
            for (c, &cur) in s.current.iter().enumerate() {
                if cur == pid {
                    CURRENT_MAKE_IT_FAIL[c].store(v, core::sync::atomic::Ordering::Relaxed);
                }
            }
        },
    )
}

/// Reads or sets (`set`) process `pid`'s (0: the caller's) oom_score_adj
/// (/proc/PID/oom_score_adj): the value before, or None for no such
/// live process.
pub fn oom_score_adj(pid: u64, set: Option<i32>) -> Option<i32> {
    task_setting(pid, set, |t| &mut t.oom_score_adj, |s, _, _| publish(s))
}

/// Moves process `pid` (0: the caller), all its threads, to memory
/// cgroup `memcg` (a write to cgroup.procs); a CPU running one of them
/// charges the new group from now on. False: no such live process.
pub fn set_memcg(pid: u64, memcg: u16) -> bool {
    SCHED.with(|s| {
        let pid = if pid == 0 { s.cur() } else { pid };
        let Some(tgid) = s.tasks.get(&pid).filter(|t| !matches!(t.state, State::Zombie(_))).map(|t| t.tgid) else {
            return false;
        };
        for t in s.tasks.values_mut().filter(|t| t.tgid == tgid) {
            t.memcg = memcg;
        }
        for cpu in 0..MAX_CPUS {
            if s.tasks.get(&s.current[cpu]).is_some_and(|t| t.tgid == tgid) {
                crate::mm::memcg::set_cpu_current(cpu, memcg);
            }
        }
        true
    })
}

/// The live processes (thread-group ids, ascending) in memory cgroup
/// `memcg` (cgroup.procs).
pub fn memcg_procs(memcg: u16) -> alloc::vec::Vec<u64> {
    SCHED.with(|s| {
        let mut v: alloc::vec::Vec<u64> = s
            .tasks
            .values()
            .filter(|t| t.memcg == memcg && !t.kthread && !matches!(t.state, State::Zombie(_)))
            .map(|t| t.tgid)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// The OOM killer's candidates (mm/oom_kill.rs `OomOps::candidates`):
/// live processes with an address space that are not already killed.
/// An address space whose lock is held (the caller's own, when a system
/// call's allocation reached the killer) cannot be read and is skipped.
pub fn oom_candidates(out: &mut [crate::mm::oom_kill::Candidate]) -> usize {
    // The mm locks rank outside the scheduler's: collect the references
    // first, read them after.
    // (pid, name, oom_score_adj, memcg, mempolicy, mm)
    type Ref = Option<(u64, &'static str, i32, u16, mm_core::mempolicy::MemPolicy, MmRef)>;
    let mut refs: [Ref; crate::mm::oom_kill::MAX_CANDIDATES] = [const { None }; crate::mm::oom_kill::MAX_CANDIDATES];
    SCHED.with(|s| {
        let live = s.tasks.values().filter(|t| !t.killed && !matches!(t.state, State::Zombie(_)));
        for (slot, t) in refs.iter_mut().zip(live.filter_map(|t| Some((t, t.mm.clone()?)))) {
            *slot = Some((t.0.pid, t.0.name, t.0.oom_score_adj, t.0.memcg, t.0.mempolicy, t.1));
        }
    });
    let mut n = 0;
    for (pid, name, adj, memcg, mempolicy, mm) in refs.into_iter().flatten() {
        let Some(c) = mm.try_with(|m| crate::mm::oom_kill::Candidate {
            pid,
            name,
            rss: {
                m.sync_reclaim_counters();
                m.stat.rss_pages
            },
            swapents: m.stat.swap_ents,
            pgtables: m.stat.pt_pages,
            total_vm: m.vmas.iter().map(|v| (v.end - v.start) >> PAGE_SHIFT).sum(),
            oom_score_adj: adj,
            memcg,
            mempolicy,
        }) else {
            continue;
        };
        if n < out.len() {
            out[n] = c;
            n += 1;
        }
    }
    n
}

/// Kills `pid` for the OOM killer and, unless it is the running task,
/// reaps its address space at once (the `oom_reaper`): the task keeps
/// only its kernel stack and, woken if it slept, dies as soon as it runs.
pub fn oom_kill(pid: u64) -> crate::mm::oom_kill::Reap {
    use crate::mm::oom_kill::Reap;
    let taken = SCHED.with(|s| {
        let cur = s.cur();
        let t = s.tasks.get(&pid).filter(|t| !matches!(t.state, State::Zombie(_)))?;
        // Every task using the victim's address space dies with it (its
        // threads, a CLONE_VM child), as Linux's oom_kill_process.
        let victim_mm = t.mm.clone();
        let shares = |t: &Task| {
            t.pid == pid || victim_mm.as_ref().is_some_and(|v| t.mm.as_ref().is_some_and(|m| Arc::ptr_eq(m, v)))
        };
        let victims: alloc::vec::Vec<u64> =
            s.tasks.values().filter(|t| shares(t) && !matches!(t.state, State::Zombie(_))).map(|t| t.pid).collect();
        let running = victims.iter().any(|&p| p == cur || s.on_cpu(p));
        for p in &victims {
            if let Some(t) = s.tasks.get_mut(p) {
                t.killed = true;
            }
        }
        if running {
            // Running here or on another CPU: they die on their way back
            // to user mode (the IPI brings another CPU there soon).
            for &p in &victims {
                kick_cpu_running(s, p);
            }
            return Some(None);
        }
        // Parked tasks hold no locks (schedule() asserts it) and run on
        // the kernel root from now on: their page tables are about to go.
        let mut mm = None;
        let mut pgd = 0;
        while let Some(p) = s.tasks.values().find(|t| t.killed && t.mm.is_some() && shares(t)).map(|t| t.pid) {
            let Some(t) = s.tasks.get_mut(&p) else { break };
            mm = t.mm.take().or(mm);
            pgd = core::mem::replace(&mut t.pgd, 0);
            s.wake_locked(p);
        }
        s.wake_locked(pid);
        // The host must not walk the root about to be freed.
        publish(s);
        Some(Some((mm, pgd)))
    });
    match taken {
        None => Reap::Gone,
        Some(None) => Reap::Deferred,
        Some(Some((None, _))) => Reap::Gone,
        Some(Some((Some(mm), pgd))) => {
            if let Some(ru) = mm.try_with(|m| {
                let ru = Rusage::of(&m.stat);
                m.exit_mmap();
                ru
            }) {
                retire_faults(pid, ru);
                drop(mm);
                Reap::Reaped
            } else {
                // Someone holds it: give it back (to the victim; its
                // threads die without one); the task frees it in do_exit
                // when it runs.
                SCHED.with(|s| {
                    if let Some(t) = s.tasks.get_mut(&pid) {
                        t.mm = Some(mm);
                        t.pgd = pgd;
                    }
                    publish(s);
                });
                Reap::Busy
            }
        }
    }
}

/// Reaps an exited child of `parent` (`pid` -1: any), freeing its task.
pub fn reap(parent: u64, pid: i64) -> Reaped {
    let found = SCHED.with(|s| {
        let mut any = false;
        let mut zombie = None;
        // Thread-group leaders only (a thread is no child of anyone's),
        // zombies once their whole group is gone.
        for t in s.tasks.values() {
            if t.parent == parent && t.pid == t.tgid && (pid < 0 || t.pid == pid as u64) {
                any = true;
                // A zombie still being switched out of its CPU keeps its
                // stack until the switch finishes (which wakes us).
                if let State::Zombie(st) = t.state {
                    if !s.on_cpu(t.pid) && !group_alive(s, t.tgid, t.pid) {
                        zombie = Some((t.pid, st));
                        break;
                    }
                }
            }
        }
        match zombie {
            Some((zpid, st)) => {
                let t = s.tasks.remove(&zpid);
                s.woken.retain(|&p| p != zpid);
                s.dequeue(zpid);
                s.affinity.remove(&zpid);
                if let (Some(t), Some(p)) = (t.as_ref(), s.tasks.get_mut(&parent)) {
                    p.ru_children = p.ru_children.plus(t.ru_self).plus(t.ru_children);
                }
                publish(s);
                Ok(t.map(|t| (t, st)))
            }
            None if any => Err(true),
            None => Err(false),
        }
    });
    // The group's other threads, all dead, go with it.
    reap_dead_threads();
    match found {
        Ok(Some((task, status))) => {
            free_kstack(task.kstack);
            let (pid, ru) = (task.pid, task.ru_self.plus(task.ru_children));
            drop(task);
            Reaped::Child(pid, status, ru)
        }
        Ok(None) | Err(false) => Reaped::NoChild,
        Err(true) => Reaped::NotYet,
    }
}

/// Puts the running task to sleep until [`wake`] (a pipe's wait queue,
/// fs/pipe.rs). The caller has registered it where the waker looks and
/// holds no lock; a wake that arrives between that and this sleep (from
/// another CPU) makes the sleep return at once. A spurious wake (a child's
/// exit wakes a sleeping parent) is possible: callers check again.
pub fn sleep_current() {
    if SCHED.with(|s| s.prepare_sleep()) {
        schedule();
    }
}

/// Makes task `pid` runnable if it sleeps (Linux's `wake_up_process`),
/// at the back of the queue: a pipe's waiter, or a kernel thread parked
/// by [`sleep_current`] (khugepaged).
pub fn wake(pid: u64) {
    SCHED.with(|s| s.wake_locked(pid));
}

/// Runs `f` (which starts processes) with every task the kernel starts
/// in it confined to the CPUs in `mask` (their children inherit it): the
/// self-tests that need several processes alive at once pin them to one
/// CPU, as on a uniprocessor.
pub fn with_spawn_affinity<R>(mask: u64, f: impl FnOnce() -> R) -> R {
    SCHED.with(|s| s.spawn_affinity = mask);
    let r = f();
    SCHED.with(|s| s.spawn_affinity = 0);
    r
}

/// Sets task `pid`'s CPU mask (`sched_setaffinity`; 0 pid: the running
/// task). False for no such task or a mask naming no online CPU.
pub fn set_affinity(pid: u64, mask: u64) -> bool {
    let online = (1u64 << crate::arch::smp::nr_cpus()) - 1;
    if mask & online == 0 {
        return false;
    }
    let moved = SCHED.with(|s| {
        let pid = if pid == 0 { s.cur() } else { pid };
        if !s.tasks.contains_key(&pid) {
            return None;
        }
        if mask & online == online {
            s.affinity.remove(&pid);
        } else {
            s.affinity.insert(pid, mask & online);
        }
        // Linux's `__set_cpus_allowed_ptr`: a queued task moves to a CPU
        // of its new mask; one running elsewhere outside it is told to
        // go (the IPI brings it to `migrate_if_disallowed`).
        let moving = s.tasks.get(&pid).map_or(0, |t| t.cpu);
        if !s.allowed_on(pid, moving) && s.dequeue(pid).is_some() {
            s.enqueue(pid, false);
        }
        if pid != s.cur() && !s.allowed_on(pid, moving) {
            kick_cpu_running(s, pid);
        }
        Some(pid == s.cur() && !s.allowed_here(pid))
    });
    match moved {
        None => false,
        Some(leave) => {
            // The running task left its own mask: it moves at once.
            if leave {
                yield_now(false);
            }
            true
        }
    }
}

/// Moves the running task to a CPU its mask allows if this CPU is no
/// longer one of them (on the way back to user mode after the reschedule
/// IPI `set_affinity` sends: Linux's migration through the stopper).
pub fn migrate_if_disallowed() {
    if SCHED.with(|s| {
        let cur = s.cur();
        cur != 0 && !s.allowed_here(cur)
    }) {
        yield_now(false);
    }
}

/// Task `pid`'s CPU mask (0 pid: the running task), None for no such task.
pub fn affinity(pid: u64) -> Option<u64> {
    let online = (1u64 << crate::arch::smp::nr_cpus()) - 1;
    SCHED.with(|s| {
        let pid = if pid == 0 { s.cur() } else { pid };
        s.tasks.contains_key(&pid).then(|| s.affinity.get(&pid).copied().unwrap_or(online) & online)
    })
}

/// The scheduler's container sizes (tasks, run queue, pending wakes,
/// CPU masks), for the leak check's report.
pub fn sizes() -> [u64; 4] {
    SCHED.with(|s| {
        [
            s.tasks.len() as u64,
            s.runq.iter().map(|q| q.len() as u64).sum(),
            s.woken.len() as u64,
            s.affinity.len() as u64,
        ]
    })
}

/// How many zombies wait to be reaped.
pub fn zombies() -> usize {
    SCHED.with(|s| s.tasks.values().filter(|t| matches!(t.state, State::Zombie(_))).count())
}

/// The pids of every task alive (not zombies), for /proc.
pub fn pids() -> alloc::vec::Vec<u64> {
    // One per process: the thread-group leaders of live groups (a leader
    // that exited before its threads still names the process).
    SCHED.with(|s| {
        s.tasks
            .values()
            .filter(|t| t.pid == t.tgid && (!matches!(t.state, State::Zombie(_)) || group_alive(s, t.tgid, t.pid)))
            .map(|t| t.pid)
            .collect()
    })
}

/// Tasks alive (Linux's `nr_threads`, sysinfo's `procs`): every task
/// not yet exited, kernel threads included.
pub fn nr_threads() -> u64 {
    SCHED.with(|s| s.tasks.values().filter(|t| !matches!(t.state, State::Zombie(_))).count() as u64)
}

/// `wait4` for the running process: blocks until a child exits.
pub fn wait_child(pid: i64) -> Reaped {
    loop {
        match reap(current_tgid(), pid) {
            Reaped::NotYet => {
                exit_if_killed();
                if super::signal::pending() {
                    return Reaped::Interrupted;
                }
                sleep_current();
            }
            r => return r,
        }
    }
}

/// The kernel (idle task) waits for its child `pid`, running processes
/// until it exits. None if it cannot (no such child, or nothing left to
/// run while it is still alive).
///
/// The kernel is no task: a child's exit on another CPU has nothing to
/// wake here (its `wake_locked(0)` finds no task) and no `woken` entry to
/// leave. So "stuck" is decided from one look at a quiet system (nothing
/// queued on any CPU, running, or being switched out), followed by one
/// more reap: a child whose exit finished between the reap that said "not
/// yet" and that look is reaped now. (Deciding from the look alone was
/// the transient seen on 4 CPUs: the child became a reapable zombie just
/// after the reap, and the look found everything quiet. Also seen: a
/// task queued for another CPU only, by its mask, whose idle CPU had not
/// yet taken it, counted as nothing to run.)
pub fn kernel_wait(pid: u64) -> Option<u64> {
    loop {
        match reap(0, pid as i64) {
            Reaped::Child(_, status, _) => return Some(status),
            Reaped::NoChild | Reaped::Interrupted => return None,
            Reaped::NotYet => {
                let (runnable, active) = SCHED.with(|s| {
                    wake_pending_kthreads(s);
                    (s.has_runnable(), s.anything_active())
                });
                if runnable {
                    schedule();
                } else if active {
                    // Other CPUs run (or are about to take) the
                    // processes: wait for news.
                    idle_wait();
                } else {
                    // Everything was quiet at that look, so no exit is
                    // in flight any more: the child is reapable now or
                    // sleeps with nothing left to wake it.
                    return match reap(0, pid as i64) {
                        Reaped::Child(_, status, _) => Some(status),
                        _ => {
                            dump_stuck();
                            None
                        }
                    };
                }
            }
        }
    }
}

/// Prints every task's state when the kernel finds its child stuck
/// (asleep with nothing left to wake it): what a lost wake-up looks like.
fn dump_stuck() {
    SCHED.with(|s| {
        for t in s.tasks.values() {
            let st = match t.state {
                State::Runnable => "runnable",
                State::Waiting => "sleeping",
                State::Zombie(_) => "zombie",
            };
            crate::kprintln!(
                "sched: stuck: pid {} tgid {} parent {} {} ({}) cpu {}",
                Dec(t.pid),
                Dec(t.tgid),
                Dec(t.parent),
                st,
                t.name,
                Dec(t.cpu as u64)
            );
        }
    });
}

/// Gives back the run queue's buffer once nothing runs (so a leak check
/// sees only what processes themselves hold).
pub fn shrink_idle() {
    // An emptied BTreeMap keeps its root node: replace it too.
    let old = SCHED.with(|s| {
        if s.runq.iter().all(|q| q.is_empty()) && s.tasks.is_empty() {
            Some((core::mem::take(&mut s.runq), core::mem::take(&mut s.tasks), core::mem::take(&mut s.affinity)))
        } else {
            None
        }
    });
    drop(old);
}

/// The running process's counters, with the scheduler's part filled in.
pub fn current_stat(mm: &mut MmStruct) -> MmStat {
    mm.sync_reclaim_counters();
    let (_, _, preemptions) = current_info();
    MmStat { preemptions, ..mm.stat }
}

/// Fills the descriptor's process table (mm-core's `ProcDesc`) from the
/// task table, for the host's `ps` and per-process checks, when the
/// descriptor is refreshed (at checkpoints); empty slots stay zero.
pub fn fill_descs() {
    // Every change republishes the table already; this refresh brings the
    // counters (RSS, faults) up to date, unless the caller holds the
    // scheduler (then the table stays as last published).
    if crate::sync::holds_only_below(rank::SCHED) {
        SCHED.with(|s| publish(s));
    }
}

/// Republishes the whole process table (a task came or went): the host
/// reads it at any stop, not only at checkpoints.
fn publish(s: &Sched) {
    crate::mm::descriptor::update_procs(|out| fill(s, out));
}

/// Republishes only the states (a switch, a sleep): cheaper than
/// [`publish`] on the scheduler's hot path. `left`: the task a switch
/// took off its CPU, whose rss and fault counts (and its threads', the
/// same address space) are refreshed in the same pass when its mm's lock
/// is free, so a host stop (gdb's `monitor ps`, SIGUSR1) sees what a
/// process did up to its last switch rather than what it had when the
/// table was last rebuilt.
fn publish_states(s: &Sched, left: Option<u64>) {
    let mm = left.and_then(|pid| s.tasks.get(&pid)).and_then(|t| t.mm.as_ref());
    let counters = mm.and_then(|mm| mm.try_with(|m| (m.stat.rss_pages, m.stat.faults)).map(|c| (mm, c)));
    crate::mm::descriptor::update_procs(|out| {
        for slot in out.iter_mut().filter(|p| p.pid != 0) {
            if let Some(t) = s.tasks.get(&u64::from(slot.pid)) {
                (slot.state, slot.exit_code) = state_of(s, t);
                if let Some((mm, (rss, faults))) = counters {
                    if t.mm.as_ref().is_some_and(|m| Arc::ptr_eq(m, mm)) {
                        (slot.rss, slot.faults) = (rss, faults);
                    }
                }
            }
        }
    });
}

/// A task's state and exit code as the descriptor has them.
fn state_of(s: &Sched, t: &Task) -> (u32, u32) {
    use mm_core::abi::proc::{STATE_RUNNABLE, STATE_RUNNING, STATE_SLEEPING, STATE_ZOMBIE};
    match t.state {
        _ if s.on_cpu(t.pid) => (STATE_RUNNING, 0),
        State::Runnable => (STATE_RUNNABLE, 0),
        State::Waiting => (STATE_SLEEPING, 0),
        State::Zombie(c) => (STATE_ZOMBIE, c as u32),
    }
}

fn fill(s: &Sched, out: &mut [mm_core::descriptor::ProcDesc]) {
    let old = |pid: u64| out.iter().find(|p| u64::from(p.pid) == pid).map_or((0, 0), |p| (p.rss, p.faults));
    // The counters of the slots being replaced, for address spaces whose
    // lock the caller holds (kept from the last fill rather than zeroed).
    let mut kept = [(0u64, 0u64); mm_core::descriptor::MAX_PROC_DESCS];
    for (k, t) in kept.iter_mut().zip(s.tasks.values()) {
        *k = old(t.pid);
    }
    out.fill(mm_core::descriptor::ProcDesc::default());
    for ((slot, t), k) in out.iter_mut().zip(s.tasks.values()).zip(kept) {
        let (state, code) = state_of(s, t);
        let (rss, faults) =
            t.mm.as_ref().and_then(|m| m.try_with(|mm| (mm.stat.rss_pages, mm.stat.faults))).unwrap_or(k);
        let mut name = [0u8; 16];
        let n = t.name.len().min(15);
        name[..n].copy_from_slice(&t.name.as_bytes()[..n]);
        *slot = mm_core::descriptor::ProcDesc {
            pid: t.pid as u32,
            ppid: t.parent as u32,
            state,
            exit_code: code,
            cr3: t.pgd,
            rss,
            faults,
            name,
            oom_score_adj: t.oom_score_adj,
            memcg: t.memcg as u32,
        };
    }
}
