//! Signals (Linux's kernel/signal.c and arch/x86/kernel/signal.c, for one
//! thread per process): each task keeps its actions, blocked mask and
//! pending set; `kill`, `tgkill`, faults and a child's exit make a signal
//! pending; on every return to user mode ([`do_signal`]) the lowest
//! pending unblocked signal is taken and either runs its default action
//! (terminate, core -> terminate, ignore) or a handler, entered on
//! Linux's x86-64 `rt_sigframe` (return address = SA_RESTORER, ucontext
//! with the saved registers, mask and fxsave image, siginfo) built on the
//! user stack or the alternate signal stack; `rt_sigreturn` restores
//! from it. Layouts are Linux's uapi ones byte for byte, so glibc's and
//! musl's `sigaction`, `raise`, `abort` and `ucontext_t` work unchanged.
//!
//! Threads: the dispositions are the process's (a change reaches every
//! thread of the group), the mask and the thread queue each thread's
//! own; a signal for the process (`kill`) goes to the process queue of
//! one thread that does not block it (the leader first), and a fatal one
//! ends the whole group.
//!
//! Real-time signals (32..=64) are queued, as Linux's: each `sigqueue`,
//! `kill` or `tgkill` of one adds an entry with its own siginfo (SI_QUEUE's
//! `si_value` reaches an SA_SIGINFO handler), delivered oldest first, the
//! pending bit set while any is left; the entries count against the
//! target's RLIMIT_SIGPENDING (all processes together, as Linux counts
//! them per user and every process here is uid 0): past it
//! `rt_sigqueueinfo` and `tgkill` fail with EAGAIN and `kill` still makes
//! the signal pending, without its information (si_code SI_USER, pid 0).
//! Standard signals stay one pending instance each (a second merges).
//!
//! Limits, said plainly: pending standard signals do not count against
//! RLIMIT_SIGPENDING (Linux counts them too, but lets them past the
//! limit), the stop signals' default action is to ignore
//! (there is no job control), `kill` to a process group reaches only the
//! caller or the named pid, and a SIGCHLD set to SIG_IGN does not reap
//! children automatically.

use super::abi::{EFAULT, EINVAL, ESRCH};
use super::sched;
use super::syscall::{copy_from_user, copy_to_user, with_mm};
use crate::arch::gdt::{USER_CS, USER_DS};
use crate::arch::traps::TrapFrame;
use crate::arch::usermode::FpuState;
use crate::fmt::Dec;
use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

/// Signals 1..=64 (Linux's `_NSIG`).
pub const NSIG: u64 = 64;
/// SIGQUIT.
pub const SIGQUIT: u64 = 3;
/// SIGILL.
pub const SIGILL: u64 = 4;
/// SIGTRAP.
pub const SIGTRAP: u64 = 5;
/// SIGABRT.
pub const SIGABRT: u64 = 6;
/// SIGBUS.
pub const SIGBUS: u64 = 7;
/// SIGFPE.
pub const SIGFPE: u64 = 8;
/// SIGKILL.
pub const SIGKILL: u64 = 9;
/// SIGSEGV.
pub const SIGSEGV: u64 = 11;
/// SIGCHLD.
pub const SIGCHLD: u64 = 17;
/// SIGCONT.
pub const SIGCONT: u64 = 18;
/// SIGSTOP.
pub const SIGSTOP: u64 = 19;
const SIGTSTP: u64 = 20;
const SIGTTIN: u64 = 21;
const SIGTTOU: u64 = 22;
const SIGURG: u64 = 23;
const SIGXCPU: u64 = 24;
const SIGXFSZ: u64 = 25;
const SIGWINCH: u64 = 28;
const SIGSYS: u64 = 31;
/// The first real-time signal (the kernel's SIGRTMIN: glibc keeps 32
/// and 33 for itself and says 34, musl keeps up to 34).
pub const SIGRTMIN: u64 = 32;
/// `RLIMIT_SIGPENDING`: real-time signals queued at once.
pub const RLIMIT_SIGPENDING: usize = 11;

const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;

// sa_flags.
const SA_NOCLDSTOP: u64 = 1;
const SA_NOCLDWAIT: u64 = 2;
const SA_SIGINFO: u64 = 4;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTART: u64 = 0x1000_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
const SA_KNOWN: u64 =
    SA_NOCLDSTOP | SA_NOCLDWAIT | SA_SIGINFO | SA_RESTORER | SA_ONSTACK | SA_RESTART | SA_NODEFER | SA_RESETHAND;

// si_code values.
/// Sent by `kill`.
pub const SI_USER: i32 = 0;
/// Sent by the kernel.
pub const SI_KERNEL: i32 = 0x80;
/// Sent by `tkill`/`tgkill`.
const SI_TKILL: i32 = -6;
/// SIGSEGV: no mapping at the address.
pub const SEGV_MAPERR: i32 = 1;
/// SIGSEGV: a mapping forbids the access.
pub const SEGV_ACCERR: i32 = 2;
/// SIGBUS: the page could not be read.
pub const BUS_ADRERR: i32 = 2;
const ILL_ILLOPN: i32 = 2;
const FPE_INTDIV: i32 = 1;
const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;

// The restart codes a system call returns to say "interrupted by a
// signal" (never seen by user mode: Linux's include/linux/errno.h).
/// Restart if the handler has SA_RESTART (or no handler runs), else -EINTR.
pub const ERESTARTSYS: i64 = 512;
/// Restart unless a handler runs, then -EINTR (`pause`, `sigsuspend`).
pub const ERESTARTNOHAND: i64 = 514;
const EINTR: i64 = 4;
const ENOMEM: i64 = 12;
const EPERM: i64 = 1;
const EAGAIN: i64 = 11;

/// `SS_ONSTACK` / `SS_DISABLE` (sigaltstack's flags).
const SS_ONSTACK: u64 = 1;
const SS_DISABLE: u64 = 2;
/// `MINSIGSTKSZ` on x86-64.
const MINSIGSTKSZ: u64 = 2048;

/// Bytes of Linux's x86-64 `struct rt_sigframe` without the FPU image:
/// pretcode (8), `struct ucontext` (304), `siginfo_t` (128).
const FRAME_SIZE: u64 = 8 + UC_SIZE + 128;
/// `struct ucontext`: flags, link, stack_t (24), sigcontext (256), mask.
const UC_SIZE: u64 = 8 + 8 + 24 + 256 + 8;
/// Offset of `uc_mcontext` in the ucontext.
const UC_MCONTEXT: usize = 40;
/// Offset of `uc_sigmask`.
const UC_SIGMASK: usize = 296;
/// uc_flags: UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, as Linux sets them.
const UC_FLAGS: u64 = 2 | 4;
/// The flags `rt_sigreturn` takes from the saved RFLAGS (Linux's
/// FIX_EFLAGS: AC OF DF TF SF ZF AF PF CF RF).
const FIX_EFLAGS: u64 = 0x40000 | 0x800 | 0x400 | 0x100 | 0x80 | 0x40 | 0x10 | 0x4 | 0x1 | 0x10000;
/// One past the lower canonical half: a saved rip or rsp outside it
/// would make `iretq` fault in ring 0.
const USER_LIMIT: u64 = 1 << 47;

/// A signal's disposition (Linux's `struct k_sigaction`, the layout
/// `rt_sigaction` reads and writes: handler, flags, restorer, mask).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct SigAction {
    /// SIG_DFL (0), SIG_IGN (1) or the handler's address.
    pub handler: u64,
    /// `SA_*`.
    pub flags: u64,
    /// Where the handler returns (libc's `__restore_rt`: `rt_sigreturn`).
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// What `siginfo_t` says about one pending signal.
#[derive(Clone, Copy, Default, Debug)]
pub struct SigInfo {
    /// `si_code`.
    pub code: i32,
    /// The union's first words: si_addr for faults; si_pid | si_uid << 32
    /// then si_status for kill and SIGCHLD.
    pub fields: [u64; 2],
    /// For faults: the vector, error code and CR2 the sigcontext reports.
    pub trap: Option<(u64, u64, u64)>,
}

/// Real-time signals queued in all tasks (Linux's per-user
/// `ucounts` sigpending; every process here is uid 0).
static RT_QUEUED: AtomicU64 = AtomicU64::new(0);

/// One queued real-time signal (Linux's `struct sigqueue`), a link of
/// its task's queue, oldest first. Allocated by the sender before it
/// takes the scheduler's lock (nothing is allocated under it), through a
/// one-element vector so that a failed allocation is an error (EAGAIN),
/// not a kernel panic; counted in [`RT_QUEUED`] from its allocation to
/// its drop.
pub struct RtSig {
    /// The queue it is on: 0 the thread's, 1 the process's.
    q: u8,
    /// Its number.
    sig: u8,
    /// What the handler's siginfo says.
    info: SigInfo,
    /// The next younger entry.
    next: Option<RtNode>,
}

/// A boxed [`RtSig`].
type RtNode = Box<[RtSig; 1]>;

impl Drop for RtSig {
    fn drop(&mut self) {
        RT_QUEUED.fetch_sub(1, Ordering::Relaxed);
        // The rest of the chain iteratively (a recursive drop of a long
        // queue would run deep on the kernel stack).
        let mut next = self.next.take();
        while let Some(mut n) = next {
            next = n[0].next.take();
        }
    }
}

/// A new queue entry for `sig` if `limit` (the target's
/// RLIMIT_SIGPENDING) leaves room and the heap has it; None otherwise.
fn rt_alloc(q: usize, sig: u64, info: SigInfo, limit: u64) -> Option<RtNode> {
    if RT_QUEUED.fetch_add(1, Ordering::Relaxed) >= limit {
        RT_QUEUED.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    let mut v = alloc::vec::Vec::new();
    if v.try_reserve_exact(1).is_err() {
        RT_QUEUED.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    v.push(RtSig { q: q as u8, sig: sig as u8, info, next: None });
    // Length 1, so this cannot fail (nor reallocate: capacity 1).
    v.into_boxed_slice().try_into().ok()
}

/// Linux's default RLIMIT_SIGPENDING: half of `max_threads`, which is
/// the RAM over eight kernel stacks (`set_max_threads`, at least 20).
pub fn default_sigpending_limit(total_ram: u64) -> u64 {
    use super::kstack::THREAD_SIZE;
    (total_ram / (8 * THREAD_SIZE)).max(20) / 2
}

/// A task's signal state (Linux's `sighand_struct`, `blocked`,
/// `pending` and `sas_ss_*` together: one thread per process).
pub struct SigState {
    /// Dispositions of signals 1..=64 (index sig - 1).
    pub actions: [SigAction; NSIG as usize],
    /// Blocked signals (bit sig - 1).
    pub blocked: u64,
    /// Pending signals (bit sig - 1): [0] the thread's own (tkill,
    /// tgkill, faults), [1] the process's (kill, SIGCHLD), as Linux keeps
    /// `pending` and `signal->shared_pending` apart, so one signal sent
    /// both ways is delivered twice.
    pub pending: [u64; 2],
    /// The siginfo of each pending signal, per queue.
    pub info: [[SigInfo; NSIG as usize]; 2],
    /// The alternate signal stack: base, size (0: none).
    pub altstack: (u64, u64),
    /// The mask `rt_sigsuspend` replaced, restored once a handler was set
    /// up (Linux's `saved_sigmask`).
    pub saved_mask: Option<u64>,
    /// The queued real-time signals, both queues, oldest first.
    rt: Option<RtNode>,
}

impl Default for SigState {
    fn default() -> Self {
        SigState {
            actions: [SigAction::default(); NSIG as usize],
            blocked: 0,
            pending: [0; 2],
            info: [[SigInfo::default(); NSIG as usize]; 2],
            altstack: (0, 0),
            saved_mask: None,
            rt: None,
        }
    }
}

impl SigState {
    /// What fork and clone give the child, written into `dst` in place
    /// (no 8 KiB temporary on the kernel stack): the dispositions, mask
    /// and alternate stack, and nothing pending.
    pub fn fork_into(&self, dst: &mut SigState) {
        dst.actions = self.actions;
        dst.blocked = self.blocked;
        dst.altstack = self.altstack;
        dst.pending = [0; 2];
        dst.saved_mask = None;
        dst.rt = None;
    }

    /// execve: handlers go back to SIG_DFL (the code they pointed at is
    /// gone); ignored signals stay ignored; the mask and pending set stay;
    /// no alternate stack.
    pub fn exec(&mut self) {
        for a in self.actions.iter_mut() {
            let handler = if a.handler == SIG_IGN { SIG_IGN } else { SIG_DFL };
            *a = SigAction { handler, ..SigAction::default() };
        }
        self.altstack = (0, 0);
    }

    /// Sets the disposition of `sig`; setting SIG_IGN (or a default of
    /// ignore) discards what is pending (Linux's do_sigaction).
    fn set_action(&mut self, sig: u64, a: SigAction) {
        self.actions[(sig - 1) as usize] = a;
        if self.ignored(sig) || a.handler == SIG_IGN {
            self.discard(sig);
        }
    }

    fn action(&self, sig: u64) -> SigAction {
        self.actions[(sig - 1) as usize]
    }

    /// Whether `sig` would be thrown away on arrival (Linux's
    /// `sig_ignored`): ignored, explicitly or by default, and not blocked.
    fn ignored(&self, sig: u64) -> bool {
        if self.blocked & bit(sig) != 0 {
            return false;
        }
        match self.action(sig).handler {
            SIG_IGN => true,
            SIG_DFL => default_action(sig) == DefaultAction::Ignore,
            _ => false,
        }
    }

    /// Makes `sig` pending with `info` on queue `q` (0: the thread's,
    /// 1: the process's) unless it is ignored; true if it is now pending.
    pub fn queue(&mut self, q: usize, sig: u64, info: SigInfo) -> bool {
        self.queue_entry(q, sig, info, &mut None)
    }

    /// [`queue`](Self::queue) for a real-time signal with its entry
    /// `node` (taken from it if queued; none: the signal is pending
    /// without its information, as Linux's when the queue is full).
    pub fn queue_entry(&mut self, q: usize, sig: u64, info: SigInfo, node: &mut Option<RtNode>) -> bool {
        if !(1..=NSIG).contains(&sig) || (self.ignored(sig) && sig != SIGKILL) {
            return false;
        }
        if sig >= SIGRTMIN {
            match node.take() {
                Some(n) => {
                    let mut cur = &mut self.rt;
                    while let Some(e) = cur {
                        cur = &mut e[0].next;
                    }
                    *cur = Some(n);
                }
                None if self.pending[q] & bit(sig) == 0 => {
                    // What Linux's collect_signal reports for it.
                    self.info[q][(sig - 1) as usize] = SigInfo { code: SI_USER, fields: [0, 0], trap: None };
                }
                None => {}
            }
            self.pending[q] |= bit(sig);
            return true;
        }
        // One instance per signal and queue: a second arrival merges.
        if self.pending[q] & bit(sig) == 0 {
            self.info[q][(sig - 1) as usize] = info;
            self.pending[q] |= bit(sig);
        }
        true
    }

    /// The queue and number of the signal to deliver next (Linux's
    /// `dequeue_signal`: the thread's queue first, lowest number first).
    fn next(&self) -> Option<(usize, u64)> {
        (0..2).find_map(|q| {
            let ready = self.pending[q] & !self.blocked;
            (ready != 0).then(|| (q, u64::from(ready.trailing_zeros()) + 1))
        })
    }

    fn discard(&mut self, sig: u64) {
        self.pending[0] &= !bit(sig);
        self.pending[1] &= !bit(sig);
        while self.take_rt(None, sig).is_some() {}
    }

    /// Takes the oldest queued entry of `sig` (on queue `q`, or either).
    fn take_rt(&mut self, q: Option<usize>, sig: u64) -> Option<RtNode> {
        let mut cur = &mut self.rt;
        loop {
            match cur {
                None => return None,
                Some(e) if u64::from(e[0].sig) == sig && q.is_none_or(|q| usize::from(e[0].q) == q) => {
                    let mut e = cur.take()?;
                    *cur = e[0].next.take();
                    return Some(e);
                }
                Some(e) => cur = &mut e[0].next,
            }
        }
    }

    /// Whether an entry of `sig` is queued on queue `q`.
    fn rt_queued(&self, q: usize, sig: u64) -> bool {
        let mut cur = &self.rt;
        while let Some(e) = cur {
            if u64::from(e[0].sig) == sig && usize::from(e[0].q) == q {
                return true;
            }
            cur = &e[0].next;
        }
        false
    }

    /// Dequeues signal `sig` from queue `q` (Linux's `collect_signal`):
    /// its information, and the queue entry it came from (for the
    /// caller to drop outside the scheduler's lock). A real-time signal
    /// stays pending while more entries of it are queued.
    fn collect(&mut self, q: usize, sig: u64) -> (SigInfo, Option<RtNode>) {
        if sig >= SIGRTMIN {
            if let Some(e) = self.take_rt(Some(q), sig) {
                if !self.rt_queued(q, sig) {
                    self.pending[q] &= !bit(sig);
                }
                return (e[0].info, Some(e));
            }
        }
        self.pending[q] &= !bit(sig);
        (self.info[q][(sig - 1) as usize], None)
    }

    /// Whether a signal waits for delivery (Linux's `signal_pending`).
    pub fn deliverable(&self) -> bool {
        self.next().is_some()
    }
}

fn bit(sig: u64) -> u64 {
    1 << (sig - 1)
}

/// SIGKILL and SIGSTOP can be neither caught, ignored nor blocked.
const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

#[derive(Clone, Copy, PartialEq, Eq)]
enum DefaultAction {
    Terminate,
    Core,
    Ignore,
    Stop,
}

/// Linux's default actions (signal(7)).
fn default_action(sig: u64) -> DefaultAction {
    match sig {
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | SIGXCPU | SIGXFSZ | SIGSYS => {
            DefaultAction::Core
        }
        SIGCHLD | SIGCONT | SIGURG | SIGWINCH => DefaultAction::Ignore,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => DefaultAction::Stop,
        _ => DefaultAction::Terminate,
    }
}

fn user_u64s(addr: u64, out: &mut [u64]) -> Result<(), i64> {
    let mut b = alloc::vec![0u8; out.len() * 8];
    with_mm(|mm| copy_from_user(mm, addr, &mut b)).unwrap_or(Err(-EFAULT))?;
    for (o, c) in out.iter_mut().zip(b.chunks_exact(8)) {
        *o = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    }
    Ok(())
}

fn put_user_u64s(addr: u64, v: &[u64]) -> Result<(), i64> {
    let mut b = alloc::vec::Vec::with_capacity(v.len() * 8);
    v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    with_mm(|mm| copy_to_user(mm, addr, &b)).unwrap_or(Err(-EFAULT))
}

fn with_sig<R>(f: impl FnOnce(&mut SigState) -> R) -> Option<R> {
    sched::with_current(|t| f(&mut t.signal))
}

/// `rt_sigaction(sig, act, oact, sigsetsize)`.
pub fn sys_rt_sigaction(sig: u64, act: u64, oact: u64, size: u64) -> i64 {
    if size != 8 || !(1..=NSIG).contains(&sig) {
        return -EINVAL;
    }
    let new = if act != 0 {
        let mut w = [0u64; 4];
        if let Err(e) = user_u64s(act, &mut w) {
            return e;
        }
        if bit(sig) & UNBLOCKABLE != 0 {
            return -EINVAL;
        }
        Some(SigAction { handler: w[0], flags: w[1] & SA_KNOWN, restorer: w[2], mask: w[3] & !UNBLOCKABLE })
    } else {
        None
    };
    let Some(old) = with_sig(|s| {
        let old = s.action(sig);
        if let Some(a) = new {
            s.set_action(sig, a);
        }
        old
    }) else {
        return -EINVAL;
    };
    // The dispositions are the process's (CLONE_SIGHAND): every thread
    // gets the new one.
    if let Some(a) = new {
        sched::for_other_threads(|t| t.signal.set_action(sig, a));
    }
    if oact != 0 {
        if let Err(e) = put_user_u64s(oact, &[old.handler, old.flags, old.restorer, old.mask]) {
            return e;
        }
    }
    0
}

/// `rt_sigprocmask(how, set, oset, sigsetsize)`.
pub fn sys_rt_sigprocmask(how: u64, set: u64, oset: u64, size: u64) -> i64 {
    if size != 8 {
        return -EINVAL;
    }
    let new = if set != 0 {
        let mut w = [0u64];
        if let Err(e) = user_u64s(set, &mut w) {
            return e;
        }
        if how > 2 {
            return -EINVAL;
        }
        Some(w[0] & !UNBLOCKABLE)
    } else {
        None
    };
    let old = with_sig(|s| {
        let old = s.blocked;
        match (how, new) {
            (0, Some(m)) => s.blocked |= m,  // SIG_BLOCK
            (1, Some(m)) => s.blocked &= !m, // SIG_UNBLOCK
            (2, Some(m)) => s.blocked = m,   // SIG_SETMASK
            _ => {}
        }
        old
    })
    .unwrap_or(0);
    if oset != 0 {
        if let Err(e) = put_user_u64s(oset, &[old]) {
            return e;
        }
    }
    0
}

/// `rt_sigpending(set, sigsetsize)`: pending and blocked.
pub fn sys_rt_sigpending(set: u64, size: u64) -> i64 {
    if size > 8 {
        return -EINVAL;
    }
    let p = with_sig(|s| (s.pending[0] | s.pending[1]) & s.blocked).unwrap_or(0);
    put_user_u64s(set, &[p]).map_or_else(|e| e, |_| 0)
}

/// `sigaltstack(ss, old_ss)`: `stack_t` is { ss_sp, ss_flags (int), ss_size }.
pub fn sys_sigaltstack(ss: u64, old: u64, user_rsp: u64) -> i64 {
    let (base, size) = with_sig(|s| s.altstack).unwrap_or((0, 0));
    let on = size != 0 && user_rsp > base && user_rsp <= base + size;
    if old != 0 {
        let flags = if size == 0 {
            SS_DISABLE
        } else if on {
            SS_ONSTACK
        } else {
            0
        };
        if let Err(e) = put_user_u64s(old, &[base, flags, size]) {
            return e;
        }
    }
    if ss != 0 {
        let mut w = [0u64; 3];
        if let Err(e) = user_u64s(ss, &mut w) {
            return e;
        }
        if on {
            return -EPERM;
        }
        // SS_AUTODISARM (bit 31) aside, the mode is 0, SS_ONSTACK or
        // SS_DISABLE.
        let mode = w[1] & 0x7fff_ffff;
        let new = if mode == SS_DISABLE {
            (0, 0)
        } else if mode != 0 && mode != SS_ONSTACK {
            return -EINVAL;
        } else if w[2] < MINSIGSTKSZ {
            return -ENOMEM;
        } else {
            (w[0], w[2])
        };
        with_sig(|s| s.altstack = new);
    }
    0
}

/// Makes `sig` pending for task `pid` and wakes it if it sleeps. Returns
/// -ESRCH for no such live process, -EPERM for a kernel thread, -EAGAIN
/// for a real-time signal other than `kill`'s (SI_USER) that its
/// RLIMIT_SIGPENDING (or the heap) has no room for.
pub fn send_signal(pid: u64, q: usize, sig: u64, info: SigInfo) -> i64 {
    // A real-time signal's queue entry, allocated before the scheduler's
    // lock is taken, against the target's limit (Linux's
    // `__sigqueue_alloc` with `task_rlimit(t, RLIMIT_SIGPENDING)`).
    let mut node = None;
    if (SIGRTMIN..=NSIG).contains(&sig) {
        let limit =
            sched::with_task(pid, |t| t.mm.clone()).flatten().map_or(0, |m| m.with(|m| m.rlimits[RLIMIT_SIGPENDING].0));
        node = rt_alloc(q, sig, info, limit);
    }
    let r = match sched::signal_task(pid, |t| {
        if t.mm.is_none() {
            return Err(-EPERM);
        }
        if sig != 0 {
            if sig >= SIGRTMIN && node.is_none() && info.code != SI_USER {
                return Err(-EAGAIN);
            }
            t.signal.queue_entry(q, sig, info, &mut node);
        }
        Ok(sig != 0 && t.signal.deliverable())
    }) {
        Some(Ok(_)) => 0,
        Some(Err(e)) => e,
        None => -ESRCH,
    };
    // An entry not queued (ignored signal, no such task) is freed here,
    // outside the lock.
    drop(node);
    r
}

/// Reads the siginfo a `rt_sigqueueinfo` caller passes: `si_code` and
/// the union's first 16 bytes (si_pid, si_uid, si_value), which is
/// what this kernel's siginfo carries.
fn user_siginfo(uinfo: u64) -> Result<SigInfo, i64> {
    let mut w = [0u64; 4];
    user_u64s(uinfo, &mut w)?;
    Ok(SigInfo { code: (w[1] & 0xffff_ffff) as u32 as i32, fields: [w[2], w[3]], trap: None })
}

/// Linux's rule for a siginfo from user space: no pretending to be
/// `kill`, the kernel (si_code >= 0) or `tkill`, except to oneself.
fn may_forge(code: i32, to_self: bool) -> bool {
    to_self || (code < 0 && code != SI_TKILL)
}

/// `rt_sigqueueinfo(tgid, sig, uinfo)` (glibc's and musl's `sigqueue`,
/// si_code SI_QUEUE): `sig` with the caller's siginfo to process `tgid`.
pub fn sys_rt_sigqueueinfo(tgid: u64, sig: u64, uinfo: u64) -> i64 {
    let tgid = tgid as i32 as i64;
    let info = match user_siginfo(uinfo) {
        Ok(i) => i,
        Err(e) => return e,
    };
    if !may_forge(info.code, tgid as u64 == sched::current_tgid()) {
        return -EPERM;
    }
    if sig > NSIG {
        return -EINVAL;
    }
    if tgid <= 0 {
        return -ESRCH;
    }
    let Some(thread) = sched::group_target(tgid as u64, sig) else { return -ESRCH };
    send_signal(thread, 1, sig, info)
}

/// `rt_tgsigqueueinfo(tgid, tid, sig, uinfo)`: as `rt_sigqueueinfo`, to
/// thread `tid` of group `tgid`, on its own queue.
pub fn sys_rt_tgsigqueueinfo(tgid: u64, tid: u64, sig: u64, uinfo: u64) -> i64 {
    let (tgid, tid) = (tgid as i32 as i64, tid as i32 as i64);
    if tid <= 0 || tgid <= 0 {
        return -EINVAL;
    }
    let info = match user_siginfo(uinfo) {
        Ok(i) => i,
        Err(e) => return e,
    };
    if !may_forge(info.code, tid as u64 == sched::current_pid()) {
        return -EPERM;
    }
    if sig > NSIG {
        return -EINVAL;
    }
    if sched::with_task(tid as u64, |t| t.tgid) != Some(tgid as u64) {
        return -ESRCH;
    }
    send_signal(tid as u64, 0, sig, info)
}

/// `kill(pid, sig)`: `pid` > 0 names a process; 0 and -1 and a negative
/// group id reach only the caller (there are no process groups yet).
pub fn sys_kill(pid: u64, sig: u64) -> i64 {
    let pid = pid as i32 as i64;
    if sig > NSIG {
        return -EINVAL;
    }
    let me = sched::current_tgid();
    let target = match pid {
        p if p > 0 => p as u64,
        0 | -1 => me,
        p => (-p) as u64,
    };
    // To the process (thread group) `target` is in: on the process's
    // queue of the thread that takes it (Linux's complete_signal).
    let Some(thread) = sched::group_target(target, sig) else { return -ESRCH };
    send_signal(thread, 1, sig, SigInfo { code: SI_USER, fields: [me, 0], trap: None })
}

/// `tgkill(tgid, tid, sig)` and `tkill(tid, sig)` (`tgid` 0): to thread
/// `tid` (of group `tgid`), on its own queue.
pub fn sys_tgkill(tgid: u64, tid: u64, sig: u64) -> i64 {
    let (tgid, tid) = (tgid as i32 as i64, tid as i32 as i64);
    if tid <= 0 || tgid < 0 || sig > NSIG {
        return -EINVAL;
    }
    if tgid != 0 && sched::with_task(tid as u64, |t| t.tgid) != Some(tgid as u64) {
        return -ESRCH;
    }
    let me = sched::current_tgid();
    send_signal(tid as u64, 0, sig, SigInfo { code: SI_TKILL, fields: [me, 0], trap: None })
}

/// `rt_sigsuspend(mask, sigsetsize)`: waits with `mask` until a handler
/// is set up (returns -EINTR then) or a signal kills.
pub fn sys_rt_sigsuspend(mask: u64, size: u64) -> i64 {
    if size != 8 {
        return -EINVAL;
    }
    let mut w = [0u64];
    if let Err(e) = user_u64s(mask, &mut w) {
        return e;
    }
    with_sig(|s| {
        s.saved_mask = Some(s.blocked);
        s.blocked = w[0] & !UNBLOCKABLE;
    });
    sleep_until_signal();
    -ERESTARTNOHAND
}

/// `pause()`.
pub fn sys_pause() -> i64 {
    sleep_until_signal();
    -ERESTARTNOHAND
}

/// Sleeps until a deliverable signal is pending.
fn sleep_until_signal() {
    loop {
        sched::exit_if_killed();
        if !sched::sleep_unless(|t| t.signal.deliverable()) {
            return;
        }
    }
}

/// Whether the running task has a signal to take (for sleeping calls
/// deciding to return -ERESTARTSYS).
pub fn pending() -> bool {
    with_sig(|s| s.deliverable()).unwrap_or(false)
}

/// A system call that returned a restart code: restart it (rip back over
/// the 2-byte `syscall`, rax = its number again) unless a handler is
/// about to run, which then sees -EINTR (or the restart, with
/// SA_RESTART for -ERESTARTSYS).
pub fn syscall_restart(frame: &mut TrapFrame, nr: u64) {
    let code = -(frame.rax as i64);
    if code != ERESTARTSYS && code != ERESTARTNOHAND {
        return;
    }
    let handler = with_sig(|s| s.next().map(|(_, sig)| s.action(sig))).flatten();
    let restart = match handler {
        Some(a) if a.handler != SIG_DFL && a.handler != SIG_IGN => code == ERESTARTSYS && a.flags & SA_RESTART != 0,
        _ => true,
    };
    if restart {
        frame.rax = nr;
        frame.rip -= 2;
    } else {
        frame.rax = (-EINTR) as u64;
    }
}

/// A fault in user mode becomes `sig` for the process if it has a
/// handler for it that is not blocked (Linux's `force_sig_fault`); the
/// handler then runs on the way out. False if it has none: the caller
/// kills (blocked or ignored, a synchronous fault kills as Linux's
/// force_sig does by resetting the action).
pub fn force_sig_fault(frame: &TrapFrame, sig: u64, code: i32, addr: u64, cr2: u64) -> bool {
    with_sig(|s| {
        let a = s.action(sig);
        if a.handler == SIG_DFL || a.handler == SIG_IGN || s.blocked & bit(sig) != 0 {
            return false;
        }
        // The thread's queue, whatever was pending there before.
        s.pending[0] |= bit(sig);
        s.info[0][(sig - 1) as usize] =
            SigInfo { code, fields: [addr, 0], trap: Some((frame.vector, frame.error_code, cr2)) };
        true
    })
    .unwrap_or(false)
}

/// The signal and si_code a fatal user exception raises (Linux's trap
/// handlers): #DE SIGFPE, #DB/#BP SIGTRAP, #UD SIGILL, the rest SIGSEGV.
pub fn exception_signal(vector: u64) -> (u64, i32) {
    match vector {
        0 => (SIGFPE, FPE_INTDIV),
        16 | 19 => (SIGFPE, SI_KERNEL),
        1 | 3 => (SIGTRAP, SI_KERNEL),
        6 => (SIGILL, ILL_ILLOPN),
        _ => (SIGSEGV, SI_KERNEL),
    }
}

/// SIGCHLD's siginfo for a child `pid` that ended with wait `status`.
pub fn child_info(pid: u64, status: u64) -> SigInfo {
    let (code, st) = if status & 0x7f != 0 { (CLD_KILLED, status & 0x7f) } else { (CLD_EXITED, (status >> 8) & 0xff) };
    SigInfo { code, fields: [pid, st], trap: None }
}

/// Delivers what is pending on the way back to user mode (Linux's
/// `exit_to_user_mode_loop` around `arch_do_signal_or_restart`): default
/// actions, and a frame for each handler, each one on top of the last
/// (with the mask the previous handler runs with), so the last signal set
/// up runs first, as on Linux.
pub fn do_signal(frame: &mut TrapFrame) {
    loop {
        let Some((sig, action, info, entry)) = with_sig(|s| {
            let (q, sig) = s.next()?;
            let (info, entry) = s.collect(q, sig);
            Some((sig, s.action(sig), info, entry))
        })
        .flatten() else {
            // Nothing to deliver: a sigsuspend's mask goes back.
            with_sig(|s| {
                if let Some(m) = s.saved_mask.take() {
                    s.blocked = m;
                }
            });
            return;
        };
        // Freed outside the scheduler's lock.
        drop(entry);
        match action.handler {
            SIG_IGN => continue,
            SIG_DFL => match default_action(sig) {
                DefaultAction::Ignore | DefaultAction::Stop => continue,
                DefaultAction::Terminate | DefaultAction::Core => sched::do_exit(sig),
            },
            _ => {
                if let Err(why) = setup_rt_frame(frame, sig, action, info) {
                    // Linux's `force_sigsegv`: a frame that cannot be
                    // written kills with SIGSEGV.
                    let (name, pid, _) = sched::current_info();
                    crate::kprintln!(
                        "{}[{}]: cannot deliver signal {}: {}; killed by SIGSEGV",
                        name,
                        Dec(pid),
                        Dec(sig),
                        why
                    );
                    sched::do_exit(SIGSEGV)
                }
            }
        }
    }
}

/// The alternate stack's top if `action` asks for it and the task is not
/// already on it (`rsp` is the interrupted one).
fn altstack_top(action: &SigAction, rsp: u64) -> Option<u64> {
    let (base, size) = with_sig(|s| s.altstack).unwrap_or((0, 0));
    let on = rsp > base && rsp <= base + size;
    (action.flags & SA_ONSTACK != 0 && size != 0 && !on).then_some(base + size)
}

/// Builds the `rt_sigframe` and points `frame` at the handler.
fn setup_rt_frame(frame: &mut TrapFrame, sig: u64, action: SigAction, info: SigInfo) -> Result<(), &'static str> {
    if action.flags & SA_RESTORER == 0 {
        // x86-64 has no vDSO trampoline here, as Linux without one.
        return Err("no SA_RESTORER");
    }
    let (base, size) = with_sig(|s| s.altstack).unwrap_or((0, 0));
    let on_alt_before = size != 0 && frame.rsp > base && frame.rsp <= base + size;
    // Below the red zone of the interrupted code, or at the top of the
    // alternate stack; the FPU image 64-byte aligned above the frame.
    let sp = altstack_top(&action, frame.rsp).unwrap_or(frame.rsp.wrapping_sub(128));
    let fp_at = (sp.wrapping_sub(512)) & !63;
    let frame_at = ((fp_at.wrapping_sub(FRAME_SIZE)) & !15).wrapping_sub(8);
    if !(4096..USER_LIMIT).contains(&frame_at) {
        return Err("the stack pointer is outside user space");
    }
    let mut fpu = FpuState([0; 512]);
    fpu.save();
    let (blocked, alt) = with_sig(|s| (s.saved_mask.unwrap_or(s.blocked), s.altstack)).unwrap_or((0, (0, 0)));

    let mut f = [0u8; FRAME_SIZE as usize];
    let mut put = |at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(0, action.restorer);
    // struct ucontext at 8.
    let uc = 8;
    put(uc, UC_FLAGS);
    put(uc + 8, 0);
    put(uc + 16, alt.0);
    put(
        uc + 24,
        if alt.1 == 0 {
            SS_DISABLE
        } else if on_alt_before {
            SS_ONSTACK
        } else {
            0
        },
    );
    put(uc + 32, alt.1);
    let mc = uc + UC_MCONTEXT;
    let regs = [
        frame.r8,
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12,
        frame.r13,
        frame.r14,
        frame.r15,
        frame.rdi,
        frame.rsi,
        frame.rbp,
        frame.rbx,
        frame.rdx,
        frame.rax,
        frame.rcx,
        frame.rsp,
        frame.rip,
        frame.rflags,
    ];
    for (i, r) in regs.iter().enumerate() {
        put(mc + i * 8, *r);
    }
    // cs, gs, fs, ss (16 bits each).
    put(mc + 144, (frame.cs & 0xffff) | ((frame.ss & 0xffff) << 48));
    let (trapno, err, cr2) = info.trap.unwrap_or((0, 0, 0));
    put(mc + 152, err);
    put(mc + 160, trapno);
    put(mc + 168, blocked); // oldmask
    put(mc + 176, cr2);
    put(mc + 184, fp_at); // fpstate
    put(uc + UC_SIGMASK, blocked);
    // siginfo_t after the ucontext.
    let si = uc + UC_SIZE as usize;
    // si_signo, si_errno (0), si_code, then the union at 16.
    put(si, sig);
    put(si + 8, u64::from(info.code as u32));
    put(si + 16, info.fields[0]);
    put(si + 24, info.fields[1]);

    with_mm(|mm| copy_to_user(mm, frame_at, &f).and_then(|_| copy_to_user(mm, fp_at, &fpu.0)))
        .unwrap_or(Err(-EFAULT))
        .map_err(|_| "the signal frame cannot be written")?;

    // The handler starts with a clean FPU (Linux's fpu__clear_user_states).
    FpuState::initial().restore();
    frame.rdi = sig;
    frame.rsi = frame_at + 8 + UC_SIZE;
    frame.rdx = frame_at + 8;
    frame.rax = 0;
    frame.rsp = frame_at;
    frame.rip = action.handler;
    frame.rflags &= !(0x400 | 0x100 | 0x10000); // DF, TF, RF
    frame.cs = USER_CS as u64;
    frame.ss = USER_DS as u64;
    with_sig(|s| {
        s.saved_mask = None;
        s.blocked = blocked | (action.mask & !UNBLOCKABLE);
        if action.flags & SA_NODEFER == 0 {
            s.blocked |= bit(sig);
        }
        if action.flags & SA_RESETHAND != 0 {
            s.actions[(sig - 1) as usize] = SigAction::default();
        }
    });
    Ok(())
}

/// `rt_sigreturn()`: back to where the handler interrupted, from the
/// frame at rsp - 8 (the handler's `ret` popped pretcode). Returns the
/// restored rax, which the dispatcher puts back. A frame that cannot be
/// read, or that would resume outside user space, kills with SIGSEGV.
pub fn sys_rt_sigreturn(frame: &mut TrapFrame) -> i64 {
    let frame_at = frame.rsp.wrapping_sub(8);
    let mut f = [0u8; FRAME_SIZE as usize];
    let read = with_mm(|mm| copy_from_user(mm, frame_at, &mut f)).unwrap_or(Err(-EFAULT));
    let get = |at: usize| u64::from_le_bytes(f[at..at + 8].try_into().unwrap_or([0; 8]));
    let mc = 8 + UC_MCONTEXT;
    let (rip, rsp) = (get(mc + 128), get(mc + 120));
    if read.is_err() || rip >= USER_LIMIT || rsp >= USER_LIMIT {
        let (name, pid, _) = sched::current_info();
        crate::kprintln!("{}[{}]: bad frame in rt_sigreturn at {:#x}; killed by SIGSEGV", name, Dec(pid), frame_at);
        sched::do_exit(SIGSEGV);
    }
    let fp_at = get(mc + 184);
    if fp_at != 0 {
        let mut fpu = FpuState([0; 512]);
        if with_mm(|mm| copy_from_user(mm, fp_at, &mut fpu.0)).unwrap_or(Err(-EFAULT)).is_ok() {
            // MXCSR's reserved bits set would make fxrstor fault in ring
            // 0: keep only those this CPU's fxsave says it supports.
            let mut now = FpuState([0; 512]);
            now.save();
            let mask = match u32::from_le_bytes([now.0[28], now.0[29], now.0[30], now.0[31]]) {
                0 => 0xffbf,
                m => m,
            };
            let mxcsr = u32::from_le_bytes([fpu.0[24], fpu.0[25], fpu.0[26], fpu.0[27]]) & mask;
            fpu.0[24..28].copy_from_slice(&mxcsr.to_le_bytes());
            fpu.restore();
        }
    }
    frame.r8 = get(mc);
    frame.r9 = get(mc + 8);
    frame.r10 = get(mc + 16);
    frame.r11 = get(mc + 24);
    frame.r12 = get(mc + 32);
    frame.r13 = get(mc + 40);
    frame.r14 = get(mc + 48);
    frame.r15 = get(mc + 56);
    frame.rdi = get(mc + 64);
    frame.rsi = get(mc + 72);
    frame.rbp = get(mc + 80);
    frame.rbx = get(mc + 88);
    frame.rdx = get(mc + 96);
    frame.rax = get(mc + 104);
    frame.rcx = get(mc + 112);
    frame.rsp = rsp;
    frame.rip = rip;
    frame.rflags = (frame.rflags & !FIX_EFLAGS) | (get(mc + 136) & FIX_EFLAGS);
    frame.cs = USER_CS as u64;
    frame.ss = USER_DS as u64;
    // The mask before the handler (uc_stack is not restored: Linux's
    // restore_altstack cannot change it while on it, the usual case).
    let mask = get(8 + UC_SIGMASK) & !UNBLOCKABLE;
    with_sig(|s| s.blocked = mask);
    frame.rax as i64
}
