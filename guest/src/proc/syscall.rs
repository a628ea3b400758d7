//! The system calls: one dispatcher for both ways in (the `syscall`
//! entry stub, and the #PF at LSTAR on hosts where `syscall` stays in
//! ring 3), Linux's numbers and register convention (rax = number; rdi,
//! rsi, rdx, r10, r8, r9; result in rax, -errno on failure). User memory
//! is reached through the process's own page tables in software
//! (`fault::pin_user_page`, the frame held while the kernel copies), so
//! a bad pointer is an EFAULT, never a kernel fault.

use super::abi::*;
/// `execve(path, argv, envp)`.
const SYS_EXECVE: u64 = 59;
/// `vfork()`.
const SYS_VFORK: u64 = 58;
/// `clone(flags, newsp, parent_tid, child_tid, tls)`.
const SYS_CLONE: u64 = 56;
/// `rt_sigreturn()`.
const SYS_RT_SIGRETURN: u64 = 15;
/// `sigaltstack(ss, old_ss)`.
const SYS_SIGALTSTACK: u64 = 131;
const CLONE_PARENT_SETTID: u64 = 0x0010_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x0020_0000;
const CLONE_CHILD_SETTID: u64 = 0x0100_0000;
/// Ignored by Linux since 2.6 (musl's pthread_create still passes it).
const CLONE_DETACHED: u64 = 0x0040_0000;
/// What this kernel shares or does not need to: the filesystem context
/// (one root and cwd for all), System V semaphore undo lists (none),
/// ptrace and untraced (no tracer).
const CLONE_SHAREABLE: u64 = 0x200 | 0x4_0000 | 0x2000 | 0x80_0000;
/// The clone flags this kernel takes (the exit signal in the low byte).
const CLONE_KNOWN: u64 = 0xff
    | sched::CLONE_VM
    | sched::CLONE_FILES
    | sched::CLONE_SIGHAND
    | sched::CLONE_VFORK
    | sched::CLONE_THREAD
    | sched::CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_CHILD_SETTID
    | CLONE_DETACHED
    | CLONE_SHAREABLE;
/// `clone3(args, size)`.
const SYS_CLONE3: u64 = 435;
/// SIGCHLD, a fork's exit signal.
const SIGCHLD: u64 = 17;
use super::fault::pin_user_page;
use super::mm::MmStruct;
use super::report;
use super::sched::{self, current_mm, Reaped};

const EPERM: i64 = 1;
use crate::arch::traps::TrapFrame;
use crate::arch::usermode::FpuState;
use crate::fmt::Dec;
use crate::mm::phys::{read_frame, write_frame};
use crate::sync::{rank, SpinLock};
use mm_core::addr::PAGE_SIZE;
use mm_core::descriptor::AccessRecord;

/// Copies `out.len()` bytes from user address `va`.
pub(super) fn copy_from_user(mm: &mut MmStruct, va: u64, out: &mut [u8]) -> Result<(), i64> {
    let mut done = 0;
    while done < out.len() {
        let a = va.checked_add(done as u64).ok_or(-EFAULT)?;
        // Held until the bytes are read (fault.rs PinnedPage).
        let page = pin_user_page(mm, a, false).map_err(|_| -EFAULT)?;
        let pa = page.pa;
        let n = ((PAGE_SIZE - (a & (PAGE_SIZE - 1))) as usize).min(out.len() - done);
        read_frame(pa & !(PAGE_SIZE - 1), (pa & (PAGE_SIZE - 1)) as usize, &mut out[done..done + n]);
        done += n;
    }
    Ok(())
}

/// Copies `data` to user address `va`.
pub(super) fn copy_to_user(mm: &mut MmStruct, va: u64, data: &[u8]) -> Result<(), i64> {
    let mut done = 0;
    while done < data.len() {
        let a = va.checked_add(done as u64).ok_or(-EFAULT)?;
        // Held until the bytes are written (fault.rs PinnedPage).
        let page = pin_user_page(mm, a, true).map_err(|_| -EFAULT)?;
        let pa = page.pa;
        let n = ((PAGE_SIZE - (a & (PAGE_SIZE - 1))) as usize).min(data.len() - done);
        write_frame(pa & !(PAGE_SIZE - 1), (pa & (PAGE_SIZE - 1)) as usize, &data[done..done + n]);
        done += n;
    }
    Ok(())
}

pub(super) fn with_mm<R>(f: impl FnOnce(&mut MmStruct) -> R) -> Option<R> {
    current_mm().map(|m| m.with(f))
}

/// Serves the system call in `frame` (whose rip/rflags already say where
/// user mode resumes).
pub fn dispatch(frame: &mut TrapFrame) {
    // Exited threads' kernel stacks go back as soon as they are off the
    // CPU (Linux's finish_task_switch drops them).
    sched::reap_dead_threads();
    let a = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9];
    let nr = frame.rax;
    let ret: i64 = match nr {
        // The calls that need the user registers themselves (signal.rs).
        SYS_RT_SIGRETURN => {
            frame.rax = super::signal::sys_rt_sigreturn(frame) as u64;
            return;
        }
        SYS_SIGALTSTACK => super::signal::sys_sigaltstack(a[0], a[1], frame.rsp),
        SYS_WRITE => super::linux::sys_write(a[0], a[1], a[2]),
        SYS_MMAP if a[3] & MAP_ANONYMOUS == 0 => super::linux::sys_mmap_file(a),
        SYS_MMAP => with_mm(|mm| mm.mmap(a[0], a[1], a[2], a[3]).map_or_else(|e| e, |v| v as i64)).unwrap_or(-EFAULT),
        SYS_MUNMAP => with_mm(|mm| mm.munmap(a[0], a[1]).map_or_else(|e| e, |_| 0)).unwrap_or(-EFAULT),
        SYS_MPROTECT => with_mm(|mm| mm.mprotect(a[0], a[1], a[2]).map_or_else(|e| e, |_| 0)).unwrap_or(-EFAULT),
        SYS_BRK => with_mm(|mm| mm.brk(a[0]) as i64).unwrap_or(-EFAULT),
        SYS_SCHED_YIELD => {
            super::thp::wake_khugepaged();
            sched::yield_now(false);
            0
        }
        // The process id is the thread group's.
        SYS_GETPID => sched::current_tgid() as i64,
        SYS_FORK => sys_clone(frame, SIGCHLD, 0, 0, 0, 0),
        // vfork as Linux's: the child borrows the address space and the
        // parent waits until it execs or exits.
        SYS_VFORK => sys_clone(frame, sched::CLONE_VM | sched::CLONE_VFORK | SIGCHLD, 0, 0, 0, 0),
        SYS_EXECVE => super::linux::sys_execve(frame, a[0], a[1], a[2]),
        // clone(flags, newsp, parent_tid, child_tid, tls) on x86-64.
        SYS_CLONE => sys_clone(frame, a[0], a[1], a[2], a[3], a[4]),
        SYS_CLONE3 => sys_clone3(frame, a[0], a[1]),
        // exit ends this thread; exit_group (linux.rs) the process.
        SYS_EXIT => sched::exit_thread((a[0] & 0xff) << 8),
        SYS_WAIT4 => sys_wait4(a[0] as i64, a[1], a[2], a[3]),
        SYS_MMSTAT => with_mm(|mm| {
            let st = sched::current_stat(mm);
            // SAFETY: MmStat is plain old data (repr(C), u64 fields only).
            let bytes = unsafe {
                core::slice::from_raw_parts(&st as *const MmStat as *const u8, core::mem::size_of::<MmStat>())
            };
            copy_to_user(mm, a[0], bytes).map_or_else(|e| e, |_| 0)
        })
        .unwrap_or(-EFAULT),
        SYS_REPORT => sys_report(a[0], a[1], a[2]),
        SYS_REPORTED => sys_reported(a[0], a[1]),
        SYS_CHECKPOINT => sys_checkpoint(a[0], a[1]),
        SYS_PROBE_FIXUP => sys_probe_fixup(a[0]),
        SYS_ACCESS_RECORDS => sys_access_records(a[0], a[1]),
        SYS_COMPACT => crate::mm::compaction::sys_compact(a[0], a[1]),
        SYS_THP => super::thp::sys_thp(a[0], a[1]),
        nr => super::linux::dispatch(nr, a).unwrap_or_else(|| super::linux::enosys(nr)),
    };
    frame.rax = ret as u64;
    // The calls that change VMAs: the host's copy follows (Linux numbers:
    // mremap 25, madvise 28, mlock/munlock/mlockall/munlockall 149-152).
    if matches!(nr, SYS_MMAP | SYS_MUNMAP | SYS_MPROTECT | SYS_BRK | SYS_EXECVE | SYS_THP | 25 | 28)
        || (149..=152).contains(&nr)
    {
        let _ = with_mm(|mm| mm.publish_vmas(false));
    }
    // A call a signal interrupted: restarted, or -EINTR for the handler.
    super::signal::syscall_restart(frame, nr);
}

/// `clone(flags, newsp, parent_tid, child_tid, tls)` (fork and vfork
/// too): a new process, or with CLONE_THREAD a new thread of the
/// caller's, sharing what the flags say (sched.rs `clone_current`). The
/// tids are stored (CLONE_PARENT_SETTID in the caller's memory,
/// CLONE_CHILD_SETTID in the child's) before the child can run; with
/// CLONE_VFORK the caller waits until the child execs or exits.
pub(super) fn sys_clone(frame: &TrapFrame, flags: u64, newsp: u64, ptid: u64, ctid: u64, tls: u64) -> i64 {
    use sched::{CLONE_SETTLS, CLONE_SIGHAND, CLONE_THREAD, CLONE_VFORK, CLONE_VM};
    // Linux's copy_process checks.
    if flags & !CLONE_KNOWN != 0
        || (flags & CLONE_THREAD != 0 && flags & CLONE_SIGHAND == 0)
        || (flags & CLONE_SIGHAND != 0 && flags & CLONE_VM == 0)
    {
        return -EINVAL;
    }
    if flags & CLONE_SETTLS != 0 && tls >= super::mm::TASK_SIZE {
        return -EPERM;
    }
    let Some(mm) = current_mm() else { return -EINVAL };
    let child_mm = if flags & CLONE_VM != 0 {
        mm.clone()
    } else {
        // The child's page tables are allocated where reclaim cannot run:
        // make room for them (and the task's stack) first.
        let tables = mm.with(|m| m.stat.pt_pages);
        crate::mm::vmscan::reclaim_for(tables + 16);
        let Some(copy) = mm.with(|m| m.dup_mmap()) else { return -ENOMEM };
        sched::new_mm_ref(copy)
    };
    let pid = sched::alloc_pid();
    let tid = (pid as u32).to_le_bytes();
    let mut stored = Ok(());
    if flags & CLONE_PARENT_SETTID != 0 {
        stored = mm.with(|m| copy_to_user(m, ptid, &tid));
    }
    if flags & CLONE_CHILD_SETTID != 0 && stored.is_ok() {
        stored = child_mm.with(|m| copy_to_user(m, ctid, &tid));
    }
    drop(mm);
    let fail = |e: i64, child_mm: sched::MmRef| {
        if flags & CLONE_VM == 0 {
            child_mm.with(|m| m.exit_mmap());
        }
        e
    };
    if let Err(e) = stored {
        return fail(e, child_mm);
    }
    let mut child_frame = *frame;
    child_frame.rax = 0;
    if newsp != 0 {
        child_frame.rsp = newsp;
    }
    // The live FPU/SSE registers are the parent's user state: the kernel
    // never touches them.
    let mut fpu = FpuState([0; 512]);
    fpu.save();
    let clear = if flags & CLONE_CHILD_CLEARTID != 0 { ctid } else { 0 };
    match sched::clone_current(pid, flags, child_mm.clone(), &child_frame, fpu, tls, clear) {
        Some(child) => {
            drop(child_mm);
            // The child's VMAs for the host now, not at its first mmap.
            if let Some(m) = sched::with_task(child, |t| t.mm.clone()).flatten() {
                m.with(|m| m.publish_vmas(false));
            }
            if flags & CLONE_VFORK != 0 {
                sched::wait_vfork_done(child);
            }
            child as i64
        }
        None => fail(-ENOMEM, child_mm),
    }
}

/// `clone3(args, size)`: `struct clone_args` { flags, pidfd, child_tid,
/// parent_tid, exit_signal, stack, stack_size, tls, ... } (glibc's
/// pthread_create tries it first); the stack is given by its base and
/// size. pidfds and set_tid are not offered (-EINVAL).
fn sys_clone3(frame: &TrapFrame, args: u64, size: u64) -> i64 {
    const CLONE_ARGS_SIZE_VER0: u64 = 64;
    const CLONE_PIDFD: u64 = 0x1000;
    if !(CLONE_ARGS_SIZE_VER0..=4096).contains(&size) {
        return -EINVAL;
    }
    let mut b = [0u8; 88];
    let n = (size as usize).min(b.len());
    if let Some(Err(e)) = with_mm(|mm| copy_from_user(mm, args, &mut b[..n])) {
        return e;
    }
    let f = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let (flags, child_tid, parent_tid, exit_signal, stack, stack_size, tls) =
        (f(0), f(2), f(3), f(4), f(5), f(6), f(7));
    // set_tid (8, 9) and cgroup (10) of the later versions: none.
    if flags & CLONE_PIDFD != 0 || flags & 0xff != 0 || exit_signal > 64 || (n > 64 && (f(8) != 0 || f(9) != 0)) {
        return -EINVAL;
    }
    if (stack == 0) != (stack_size == 0) {
        return -EINVAL;
    }
    let sp = if stack != 0 { stack.wrapping_add(stack_size) } else { 0 };
    sys_clone(frame, flags | exit_signal, sp, parent_tid, child_tid, tls)
}

/// `wait4(pid, status, options, rusage)`: the child's status and, when
/// asked, its fault counts (its own and its reaped children's, as Linux's).
/// pid -1 (or 0, or a negative group id: there are no process groups yet)
/// is any child; WNOHANG returns 0 while children live and none has exited.
fn sys_wait4(pid: i64, status_ptr: u64, options: u64, rusage: u64) -> i64 {
    const WNOHANG: u64 = 1;
    let pid = pid as i32 as i64;
    let pid = if pid <= 0 { -1 } else { pid };
    let reaped = if options & WNOHANG != 0 {
        match sched::reap(sched::current_tgid(), pid) {
            Reaped::NotYet => return 0,
            r => r,
        }
    } else {
        sched::wait_child(pid)
    };
    match reaped {
        Reaped::Interrupted => -super::signal::ERESTARTSYS,
        Reaped::Child(child, status, ru) => {
            // Linux's status is an `int`: four bytes, not eight (the
            // built-in programs' u64 reads the same, its upper half zero).
            if status_ptr != 0 {
                let st = (status as u32).to_le_bytes();
                if let Some(Err(e)) = with_mm(|mm| copy_to_user(mm, status_ptr, &st)) {
                    return e;
                }
            }
            if rusage != 0 {
                let r = super::linux::put_rusage(rusage, ru);
                if r < 0 {
                    return r;
                }
            }
            child as i64
        }
        _ => -ECHILD,
    }
}

/// Copies a report key (at most 48 bytes of UTF-8) from user memory.
fn report_key(key: u64, len: u64, buf: &mut [u8; 48]) -> Result<&str, i64> {
    if len > buf.len() as u64 {
        return Err(-EINVAL);
    }
    let n = len as usize;
    if let Some(Err(e)) = with_mm(|mm| copy_from_user(mm, key, &mut buf[..n])) {
        return Err(e);
    }
    core::str::from_utf8(&buf[..n]).map_err(|_| -EINVAL)
}

fn sys_reported(key: u64, len: u64) -> i64 {
    let mut buf = [0u8; 48];
    report_key(key, len, &mut buf).map_or_else(|e| e, |k| report::count(k) as i64)
}

fn sys_report(key: u64, len: u64, value: u64) -> i64 {
    let mut buf = [0u8; 48];
    let k = match report_key(key, len, &mut buf) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let (name, pid, _) = sched::current_info();
    crate::kprintln!("{}[{}]: {} = {}", name, Dec(pid), k, Dec(value));
    report::record(pid, k, value);
    0
}

/// Stops at the checkpoint the program names (1..=48 printable ASCII
/// bytes), outside any lock: the host reads the process table and every
/// address space meanwhile. A process-side sabotage armed for this
/// checkpoint then runs (proc/sabotage.rs).
fn sys_checkpoint(name: u64, len: u64) -> i64 {
    if len == 0 || len > CHECKPOINT_NAME_MAX {
        return -EINVAL;
    }
    let mut buf = [0u8; CHECKPOINT_NAME_MAX as usize];
    let n = len as usize;
    if let Some(Err(e)) = with_mm(|mm| copy_from_user(mm, name, &mut buf[..n])) {
        return e;
    }
    // Graphic ASCII only: the port protocol ends a name at NUL, and the
    // host prints names in its reports.
    if !buf[..n].iter().all(u8::is_ascii_graphic) {
        return -EINVAL;
    }
    let Ok(name) = core::str::from_utf8(&buf[..n]) else { return -EINVAL };
    crate::checkpoint::checkpoint(name);
    super::sabotage::after_checkpoint(name);
    0
}

/// Registers the calling process's probe fix-up (0: none); see
/// `SYS_PROBE_FIXUP`.
fn sys_probe_fixup(addr: u64) -> i64 {
    if addr >= super::mm::TASK_SIZE {
        return -EINVAL;
    }
    if sched::set_probe_fixup(addr) {
        0
    } else {
        -EINVAL
    }
}

/// Takes a program's ring-3 access records for the access-rights test:
/// each becomes an mm-core `AccessRecord` at CPL 3 under this process's
/// CR3 (its PGD), appended to the table the descriptor publishes.
fn sys_access_records(ptr: u64, count: u64) -> i64 {
    const SIZE: usize = core::mem::size_of::<UserAccessRecord>();
    if count == 0 || count > ACCESS_RECORDS_MAX {
        return -EINVAL;
    }
    let n = count as usize;
    let mut buf = alloc::vec![0u8; n * SIZE];
    let Some(r) = with_mm(|mm| copy_from_user(mm, ptr, &mut buf).map(|_| mm.pgd)) else { return -EFAULT };
    let cr3 = match r {
        Ok(pgd) => pgd,
        Err(e) => return e,
    };
    let mut recs = alloc::vec::Vec::with_capacity(n);
    for raw in buf.chunks_exact(SIZE) {
        let field = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or([0xff; 8]));
        let (va, access, faulted, error_code) = (field(0), field(1), field(2), field(3));
        if access > 2 || faulted > 1 || error_code > u32::MAX as u64 || (faulted == 0 && error_code != 0) {
            return -EINVAL;
        }
        recs.push(mm_core::descriptor::AccessRecord {
            va,
            cr3,
            access: access as u8,
            cpl: 3,
            faulted: faulted as u8,
            pad: 0,
            error_code: error_code as u32,
        });
    }
    match ACCESS_RECORDS.with(|sink| *sink) {
        Some(sink) => sink(&recs),
        None => -ENOENT,
    }
}

/// Takes a process's access records; returns what `SYS_ACCESS_RECORDS`
/// returns.
pub type AccessRecordSink = fn(&[AccessRecord]) -> i64;

/// Where `SYS_ACCESS_RECORDS` hands the records: registered by the
/// access-rights self-test, so the system-call path names no test code.
static ACCESS_RECORDS: SpinLock<Option<AccessRecordSink>> =
    SpinLock::new_with("the access-record sink", rank::STATS, None);

/// Registers (or, with None, removes) the access-record sink.
pub fn set_access_record_sink(sink: Option<AccessRecordSink>) {
    ACCESS_RECORDS.with(|s| *s = sink);
}
