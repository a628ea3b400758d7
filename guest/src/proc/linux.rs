//! The Linux x86-64 system calls static glibc and musl programs make
//! (beyond the few the built-in programs share, in syscall.rs): files of
//! the initramfs and the terminal, the thread pointer, identity, limits,
//! time and randomness. Numbers and structure layouts are Linux's
//! (arch/x86/entry/syscalls/syscall_64.tbl, include/uapi). A call this
//! kernel does not have returns -ENOSYS and is logged once by name.

use super::abi::{EFAULT, EINVAL, ENOENT, ENOMEM, ENOSYS};
use super::sched;
use super::syscall::{copy_from_user, copy_to_user, with_mm};
use crate::arch::{inb, outb};
use crate::fs::file::{File, FileKind, NR_OPEN};
use crate::fs::{self, pipe, procfs, S_IFDIR, S_IFLNK, S_IFMT};
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use mm_core::abi::port::{USER_OUTPUT_PRESENT, USER_STDERR, USER_STDOUT};

const EPERM: i64 = 1;
const EBADF: i64 = 9;
const EEXIST: i64 = 17;
const ENOTDIR: i64 = 20;
const EISDIR: i64 = 21;
const EMFILE: i64 = 24;
const ENOTTY: i64 = 25;
const ESPIPE: i64 = 29;
const ERANGE: i64 = 34;

/// `AT_FDCWD`: a path relative to the working directory.
const AT_FDCWD: i64 = -100;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_EMPTY_PATH: u64 = 0x1000;
const O_ACCMODE: u64 = 3;
const O_CREAT: u64 = 0o100;
const O_EXCL: u64 = 0o200;
const O_TRUNC: u64 = 0o1000;
const O_APPEND: u64 = 0o2000;
const O_NONBLOCK: u64 = 0o4000;
const AT_REMOVEDIR: u64 = 0x200;
const O_DIRECTORY: u64 = 0o200000;
const O_CLOEXEC: u64 = 0o2000000;
const S_IFCHR: u32 = 0o020_000;

/// Longest path accepted (Linux's PATH_MAX).
const PATH_MAX: usize = 4096;
/// Most bytes one read or write moves (Linux caps at 2 GiB - 4 KiB; this
/// kernel copies through a kernel buffer in chunks of this size).
const CHUNK: usize = 4096;

/// Calls already logged as missing (one bit per number below 512).
static LOGGED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// -ENOSYS for call `nr`, logged the first time (Linux's
/// "sys_ni_syscall" made visible).
pub fn enosys(nr: u64) -> i64 {
    let first = match LOGGED.get((nr / 64) as usize) {
        Some(w) => w.fetch_or(1 << (nr % 64), Ordering::Relaxed) & (1 << (nr % 64)) == 0,
        None => true,
    };
    if first {
        let (name, pid, _) = sched::current_info();
        match super::sysnames::NAMES.get(nr as usize).filter(|s| !s.is_empty()) {
            Some(s) => {
                crate::kprintln!(
                    "{}[{}]: system call {} ({}) not implemented: -ENOSYS",
                    name,
                    crate::fmt::Dec(pid),
                    s,
                    crate::fmt::Dec(nr)
                )
            }
            None => crate::kprintln!(
                "{}[{}]: system call {} not implemented: -ENOSYS",
                name,
                crate::fmt::Dec(pid),
                crate::fmt::Dec(nr)
            ),
        }
    }
    -ENOSYS
}

/// Serves Linux call `nr` with arguments `a`; None if it is not one of
/// these.
pub fn dispatch(nr: u64, a: [u64; 6]) -> Option<i64> {
    Some(match nr {
        0 => sys_read(a[0], a[1], a[2]),
        1 => sys_write(a[0], a[1], a[2]),
        2 => sys_openat(AT_FDCWD as u64, a[0], a[1], a[2]),
        3 => sys_close(a[0]),
        4 => sys_fstatat(AT_FDCWD as u64, a[0], a[1], 0),
        5 => sys_fstat(a[0], a[1]),
        6 => sys_fstatat(AT_FDCWD as u64, a[0], a[1], AT_SYMLINK_NOFOLLOW),
        8 => sys_lseek(a[0], a[1] as i64, a[2]),
        16 => sys_ioctl(a[0], a[1], a[2]),
        19 => sys_readv(a[0], a[1], a[2]),
        20 => sys_writev(a[0], a[1], a[2]),
        21 => sys_faccessat(AT_FDCWD as u64, a[0], a[1]),
        28 => sys_madvise(a[0], a[1], a[2]),
        32 => sys_dup(a[0]),
        33 => sys_dup3(a[0], a[1], 0, true),
        63 => sys_uname(a[0]),
        72 => sys_fcntl(a[0], a[1], a[2]),
        79 => sys_getcwd(a[0], a[1]),
        80 => sys_chdir(a[0]),
        81 => sys_fchdir(a[0]),
        35 => sys_nanosleep(a[0], a[1]),
        230 => sys_clock_nanosleep(a[0], a[1], a[2], a[3]),
        99 => sys_sysinfo(a[0]),
        89 => sys_readlinkat(AT_FDCWD as u64, a[0], a[1], a[2]),
        96 => sys_gettimeofday(a[0]),
        102 | 104 | 107 | 108 => 0, // getuid, getgid, geteuid, getegid: root
        110 => sched::with_current(|t| t.parent as i64).unwrap_or(0),
        186 => sched::current_pid() as i64, // gettid: the task's own id
        // getpgrp, getpgid: each process is its own group (no job control).
        111 | 121 => sched::current_tgid() as i64,
        202 => super::futex::sys_futex(a[0], a[1], a[2], a[3], a[4], a[5]),
        158 => sys_arch_prctl(a[0], a[1]),
        201 => sys_time(a[0]),
        217 => sys_getdents64(a[0], a[1], a[2]),
        218 => {
            sched::with_current(|t| t.clear_child_tid = a[0]);
            sched::current_pid() as i64
        }
        228 => sys_clock_gettime(a[0], a[1]),
        229 => sys_clock_getres(a[1]),
        231 => sched::do_exit((a[0] & 0xff) << 8),
        257 => sys_openat(a[0], a[1], a[2], a[3]),
        262 => sys_fstatat(a[0], a[1], a[2], a[3]),
        267 => sys_readlinkat(a[0], a[1], a[2], a[3]),
        269 | 439 => sys_faccessat(a[0], a[1], a[2]),
        // set_robust_list(head, len): kept per task (struct
        // robust_list_head is 24 bytes), walked at its exit (futex.rs).
        273 => {
            if a[1] != 24 {
                return Some(-EINVAL);
            }
            sched::with_current(|t| t.robust_list = (a[0], a[1]));
            0
        }
        // get_robust_list(tid, head_ptr, len_ptr): tid 0 is the caller
        // (musl asks it to learn that robust mutexes work).
        274 => {
            let list = if a[0] == 0 {
                sched::with_current(|t| t.robust_list)
            } else {
                sched::with_task(a[0], |t| t.robust_list)
            };
            let Some((head, len)) = list else { return Some(-3) }; // ESRCH
            let len = if head == 0 { 24 } else { len };
            with_mm(|mm| {
                copy_to_user(mm, a[1], &head.to_le_bytes()).and_then(|_| copy_to_user(mm, a[2], &len.to_le_bytes()))
            })
            .unwrap_or(Err(-EFAULT))
            .map_or_else(|e| e, |_| 0)
        }
        292 => sys_dup3(a[0], a[1], a[2], false),
        98 => sys_getrusage(a[0], a[1]),
        318 => sys_getrandom(a[0], a[1]),
        203 => sys_sched_setaffinity(a[0], a[1], a[2]),
        204 => sys_sched_getaffinity(a[0], a[1], a[2]),
        309 => sys_getcpu(a[0], a[1]),
        // ---- files, pipes, tmpfs (fs/: the procfs branch) ----
        17 => sys_pread(a[0], a[1], a[2], a[3]),
        18 => sys_pwrite(a[0], a[1], a[2], a[3]),
        22 => sys_pipe2(a[0], 0),
        293 => sys_pipe2(a[0], a[1]),
        74 | 75 => get_file(a[0]).map_or_else(|e| e, |_| 0), // fsync, fdatasync: nothing is volatile
        76 => sys_truncate(a[0], a[1]),
        77 => sys_ftruncate(a[0], a[1]),
        83 => sys_mkdirat(AT_FDCWD as u64, a[0], a[1]),
        258 => sys_mkdirat(a[0], a[1], a[2]),
        84 => sys_unlinkat(AT_FDCWD as u64, a[0], AT_REMOVEDIR),
        85 => sys_openat(AT_FDCWD as u64, a[0], O_CREAT | O_TRUNC | 1, a[1]), // creat
        87 => sys_unlinkat(AT_FDCWD as u64, a[0], 0),
        263 => sys_unlinkat(a[0], a[1], a[2]),
        // Signals (signal.rs).
        13 => super::signal::sys_rt_sigaction(a[0], a[1], a[2], a[3]),
        14 => super::signal::sys_rt_sigprocmask(a[0], a[1], a[2], a[3]),
        34 => super::signal::sys_pause(),
        62 => super::signal::sys_kill(a[0], a[1]),
        127 => super::signal::sys_rt_sigpending(a[0], a[1]),
        129 => super::signal::sys_rt_sigqueueinfo(a[0], a[1], a[2]),
        130 => super::signal::sys_rt_sigsuspend(a[0], a[1]),
        200 => super::signal::sys_tgkill(0, a[0], a[1]),
        234 => super::signal::sys_tgkill(a[0], a[1], a[2]),
        297 => super::signal::sys_rt_tgsigqueueinfo(a[0], a[1], a[2], a[3]),
        // Address space and limits (mman.rs).
        25 => super::mman::sys_mremap(a),
        26 => super::mman::sys_msync(a[0], a[1], a[2]),
        27 => super::mman::sys_mincore(a[0], a[1], a[2]),
        97 => super::mman::sys_prlimit(0, a[0], 0, a[1]),
        160 => super::mman::sys_prlimit(0, a[0], a[1], 0),
        302 => super::mman::sys_prlimit(a[0], a[1], a[2], a[3]),
        332 => sys_statx(a[0], a[1], a[2], a[4]),
        // NUMA memory policies (mempolicy.rs).
        237 => super::mempolicy::sys_mbind(a[0], a[1], a[2], a[3], a[4], a[5]),
        256 => super::mempolicy::sys_migrate_pages(a[0], a[1], a[2], a[3]),
        238 => super::mempolicy::sys_set_mempolicy(a[0], a[1], a[2]),
        239 => super::mempolicy::sys_get_mempolicy(a[0], a[1], a[2], a[3], a[4]),
        _ => return None,
    })
}

// ---- files --------------------------------------------------------------

/// Runs `f` on the running task's descriptor table (shared with its
/// CLONE_FILES siblings); None without one (a built-in program). The
/// scheduler's lock is not held meanwhile; a file `f` takes out must be
/// dropped after it returns.
fn with_fdt<R>(f: impl FnOnce(&mut Vec<Option<File>>) -> R) -> Option<R> {
    let table = sched::with_current(|t| t.files.clone()).flatten()?;
    Some(table.with(f))
}

fn get_file(fd: u64) -> Result<File, i64> {
    with_fdt(|t| t.get(fd as usize).cloned().flatten()).flatten().ok_or(-EBADF)
}

/// Moves the offset of `fd`'s open file description (shared with every
/// descriptor and process that has it).
fn set_pos(fd: u64, pos: u64) {
    if let Ok(f) = get_file(fd) {
        f.pos.set(pos);
    }
}

/// Installs `file` at the lowest free descriptor >= `min`.
fn install(file: File, min: usize) -> i64 {
    with_fdt(|t| {
        let fd = (min..NR_OPEN).find(|&i| t.get(i).is_none_or(|f| f.is_none()))?;
        if t.len() <= fd {
            t.resize(fd + 1, None);
        }
        t[fd] = Some(file);
        Some(fd as i64)
    })
    .flatten()
    .unwrap_or(-EMFILE)
}

/// A NUL-ended string from user memory (at most PATH_MAX bytes).
fn user_path(ptr: u64) -> Result<String, i64> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while out.len() < PATH_MAX {
        // Page by page: the string may end just before an unmapped page.
        let room = (4096 - ((ptr + out.len() as u64) & 4095)) as usize;
        let n = room.min(buf.len());
        with_mm(|mm| copy_from_user(mm, ptr + out.len() as u64, &mut buf[..n])).unwrap_or(Err(-EFAULT))?;
        match buf[..n].iter().position(|&b| b == 0) {
            Some(z) => {
                out.extend_from_slice(&buf[..z]);
                return String::from_utf8(out).map_err(|_| -ENOENT);
            }
            None => out.extend_from_slice(&buf[..n]),
        }
    }
    Err(-36) // ENAMETOOLONG
}

/// The running task's working directory (absolute, normalized; "/" for
/// a task without one).
fn cwd() -> String {
    sched::with_current(|t| t.cwd.clone()).map_or_else(|| String::from("/"), |c| c.with(|p| p.clone()))
}

/// The absolute path `path` names relative to `dirfd` (Linux's
/// `path_init`: an absolute path from the root, AT_FDCWD from the working
/// directory, else from the directory open at `dirfd`).
fn resolve(dirfd: u64, path: &str) -> Result<String, i64> {
    if path.is_empty() {
        return Err(-ENOENT);
    }
    if path.starts_with('/') {
        return Ok(fs::normalize(path));
    }
    // dirfd is a C int: AT_FDCWD arrives as 0xffffff9c in a 64-bit register.
    if dirfd as i32 as i64 == AT_FDCWD {
        return Ok(fs::normalize(&alloc::format!("{}/{}", cwd(), path)));
    }
    match get_file(dirfd)?.kind {
        FileKind::Initrd(ino) => {
            let dir = fs::inode(ino).ok_or(-EBADF)?;
            if !dir.is_dir() {
                return Err(-ENOTDIR);
            }
            Ok(fs::normalize(&alloc::format!("{}/{}", dir.path, path)))
        }
        _ => Err(-ENOTDIR),
    }
}

fn sys_openat(dirfd: u64, path: u64, flags: u64, mode: u64) -> i64 {
    let path = match user_path(path).and_then(|p| resolve(dirfd, &p)) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let file = |kind| File::new(kind, flags as u32, flags & O_CLOEXEC != 0);
    if procfs::is_proc(&path) {
        return match procfs::open(&path, flags & O_ACCMODE != 0) {
            Ok(pf) => install(file(FileKind::Proc(pf)), 0),
            Err(e) => e,
        };
    }
    let found = if path == "/dev/tty" || path == "/dev/console" {
        Some(FileKind::Terminal(false))
    } else {
        fs::lookup(&path).map(|(ino, _)| FileKind::Initrd(ino))
    };
    let existed = found.is_some();
    let kind = match found {
        Some(k) => k,
        None if flags & O_CREAT != 0 => match fs::tmpfs::create(&path, mode as u32) {
            Ok(ino) => FileKind::Initrd(ino),
            Err(e) => return -e,
        },
        None => return -ENOENT,
    };
    if let FileKind::Initrd(ino) = kind {
        let inode = fs::inode(ino).unwrap_or_else(|| unreachable!());
        if existed && flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL {
            return -EEXIST;
        }
        if flags & O_DIRECTORY != 0 && !inode.is_dir() {
            return -ENOTDIR;
        }
        if inode.is_dir() && (flags & O_ACCMODE != 0 || flags & O_TRUNC != 0) {
            return -EISDIR;
        }
        if flags & O_TRUNC != 0 && flags & O_ACCMODE != 0 {
            if let Err(e) = fs::tmpfs::truncate(ino, 0) {
                return -e;
            }
        }
    }
    install(file(kind), 0)
}

/// Takes descriptor `fd` out of the table; the file is dropped by the
/// caller, after the scheduler's lock (a pipe end's last close wakes the
/// other end's sleepers, which takes that lock).
fn take_fd(fd: u64) -> Option<File> {
    with_fdt(|t| t.get_mut(fd as usize).and_then(Option::take)).flatten()
}

fn sys_close(fd: u64) -> i64 {
    match take_fd(fd) {
        Some(f) => {
            drop(f);
            0
        }
        None => -EBADF,
    }
}

fn sys_dup(fd: u64) -> i64 {
    match get_file(fd) {
        Ok(f) => install(File { cloexec: false, ..f }, 0),
        Err(e) => e,
    }
}

fn sys_dup3(old: u64, new: u64, flags: u64, dup2: bool) -> i64 {
    let f = match get_file(old) {
        Ok(f) => f,
        Err(e) => return e,
    };
    if old == new {
        return if dup2 { new as i64 } else { -EINVAL };
    }
    if new as usize >= NR_OPEN || flags & !O_CLOEXEC != 0 {
        return if dup2 { -EBADF } else { -EINVAL };
    }
    let old_file = with_fdt(|t| {
        if t.len() <= new as usize {
            t.resize(new as usize + 1, None);
        }
        t[new as usize].replace(File { cloexec: flags & O_CLOEXEC != 0, ..f })
    });
    drop(old_file);
    new as i64
}

fn sys_fcntl(fd: u64, cmd: u64, arg: u64) -> i64 {
    let f = match get_file(fd) {
        Ok(f) => f,
        Err(e) => return e,
    };
    match cmd {
        0 => install(File { cloexec: false, ..f }, arg as usize), // F_DUPFD
        1030 => install(File { cloexec: true, ..f }, arg as usize), // F_DUPFD_CLOEXEC
        1 => f.cloexec as i64,                                    // F_GETFD
        2 => {
            with_fdt(|t| {
                if let Some(Some(f)) = t.get_mut(fd as usize) {
                    f.cloexec = arg & 1 != 0;
                }
            });
            0
        }
        3 => f.flags as i64, // F_GETFL
        4 => {
            // F_SETFL: O_APPEND and O_NONBLOCK can change.
            let keep = !(O_APPEND | O_NONBLOCK) as u32;
            with_fdt(|t| {
                if let Some(Some(f)) = t.get_mut(fd as usize) {
                    f.flags = (f.flags & keep) | (arg as u32 & !keep);
                }
            });
            0
        }
        _ => -EINVAL,
    }
}

fn sys_lseek(fd: u64, off: i64, whence: u64) -> i64 {
    let f = match get_file(fd) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let size = match &f.kind {
        FileKind::Initrd(ino) => fs::inode(*ino).map_or(0, |i| i.size) as i64,
        FileKind::Proc(pf) => match &**pf {
            procfs::ProcFile::Text(t)
            | procfs::ProcFile::Sysctl(_, t)
            | procfs::ProcFile::OomScoreAdj(_, t)
            | procfs::ProcFile::MakeItFail(_, t)
            | procfs::ProcFile::Cgroup(_, _, t)
            | procfs::ProcFile::Sysfs(_, t) => t.len() as i64,
            procfs::ProcFile::Dir(e) => e.len() as i64,
            // Offsets are addresses / 4096 * 8: any may be sought.
            procfs::ProcFile::Pagemap(_) => 0,
        },
        _ => return -ESPIPE,
    };
    let base = match whence {
        0 => 0,
        1 => f.pos.get() as i64,
        2 => size,
        _ => return -EINVAL,
    };
    let Some(pos) = base.checked_add(off).filter(|&p| p >= 0) else { return -EINVAL };
    set_pos(fd, pos as u64);
    pos
}

/// Whether the VMM's user-output ports exist (our VMM: yes; QEMU: no,
/// then user output goes to COM1).
fn user_ports() -> bool {
    static PRESENT: AtomicU8 = AtomicU8::new(0);
    match PRESENT.load(Ordering::Relaxed) {
        0 => {
            let yes = inb(USER_STDOUT) == USER_OUTPUT_PRESENT;
            PRESENT.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
        v => v == 1,
    }
}

/// Hands `bytes` to the VMM's stdout (or stderr if `err`): one `rep
/// outsb` moves the whole buffer in as few exits as the CPU allows.
fn terminal_write(err: bool, bytes: &[u8]) {
    if !user_ports() {
        for &b in bytes {
            outb(mm_core::abi::port::COM1, b);
        }
        return;
    }
    let port = if err { USER_STDERR } else { USER_STDOUT };
    // SAFETY: `rep outsb` reads `bytes.len()` bytes from `bytes` (rsi)
    // and writes them to the port; DF is clear in the kernel (the entry
    // paths clear it, as the C ABI requires).
    unsafe {
        core::arch::asm!(
            "rep outsb",
            in("dx") port,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(nostack, preserves_flags, readonly)
        )
    }
}

/// Writes `len` bytes at user `buf` to `fd`; bytes written.
fn write_fd(fd: u64, buf: u64, len: u64) -> i64 {
    write_at(fd, buf, len, None)
}

/// `write` (at the file's position, `at` None) or `pwrite64` (at `at`).
fn write_at(fd: u64, buf: u64, len: u64, at: Option<u64>) -> i64 {
    let f = match get_file(fd) {
        Ok(f) => f,
        Err(e) => return e,
    };
    if f.flags as u64 & O_ACCMODE == 0 && !matches!(f.kind, FileKind::Terminal(_) | FileKind::Pipe(_)) {
        return -EBADF;
    }
    let mut chunk = alloc::vec![0u8; (len as usize).min(CHUNK)];
    let mut done = 0u64;
    // A regular file's position: the end with O_APPEND.
    let mut pos = at.unwrap_or(f.pos.get());
    if let (FileKind::Initrd(ino), None) = (&f.kind, at) {
        if f.flags as u64 & O_APPEND != 0 {
            pos = fs::inode(*ino).map_or(0, |i| i.size);
        }
    }
    while done < len {
        let n = ((len - done) as usize).min(CHUNK);
        if let Err(e) = with_mm(|mm| copy_from_user(mm, buf + done, &mut chunk[..n])).unwrap_or(Err(-EFAULT)) {
            return if done > 0 { done as i64 } else { e };
        }
        let wrote = match &f.kind {
            FileKind::Terminal(err) => {
                terminal_write(*err, &chunk[..n]);
                Ok(n)
            }
            FileKind::Initrd(ino) => {
                if fs::inode(*ino).is_some_and(|i| i.is_dir()) {
                    Err(-EISDIR)
                } else {
                    fs::pagecache::write(*ino, pos + done, &chunk[..n]).map_err(|_| -ENOMEM)
                }
            }
            FileKind::Pipe(end) if end.write => pipe::write(end, &chunk[..n], f.flags as u64 & O_NONBLOCK != 0),
            FileKind::Pipe(_) => Err(-EBADF),
            FileKind::Proc(pf) => match &**pf {
                procfs::ProcFile::Sysctl(i, _) => procfs::sysctl_write(*i, &chunk[..n]).map(|_| n),
                procfs::ProcFile::OomScoreAdj(pid, _) => procfs::oom_score_adj_write(*pid, &chunk[..n]).map(|_| n),
                procfs::ProcFile::MakeItFail(pid, _) => procfs::make_it_fail_write(*pid, &chunk[..n]).map(|_| n),
                procfs::ProcFile::Cgroup(g, i, _) => fs::cgroupfs::write(*g, *i, &chunk[..n]).map(|_| n),
                procfs::ProcFile::Sysfs(i, _) => fs::sysfs::write(*i, &chunk[..n]).map(|_| n),
                _ => Err(-EINVAL),
            },
        };
        match wrote {
            Ok(w) => done += w as u64,
            Err(e) => return if done > 0 { done as i64 } else { e },
        }
    }
    if let (FileKind::Initrd(_), None) = (&f.kind, at) {
        set_pos(fd, pos + done);
    }
    done as i64
}

/// `write`: every program's, built-in or from the initramfs (fds 0-2 on
/// the terminal).
pub fn sys_write(fd: u64, buf: u64, len: u64) -> i64 {
    write_fd(fd, buf, len)
}

/// Reads up to `len` bytes of `fd` to user `buf`.
fn sys_read(fd: u64, buf: u64, len: u64) -> i64 {
    read_at(fd, buf, len, None)
}

/// `read` (at the file's position, `at` None) or `pread64` (at `at`).
fn read_at(fd: u64, buf: u64, len: u64, at: Option<u64>) -> i64 {
    let f = match get_file(fd) {
        Ok(f) => f,
        Err(e) => return e,
    };
    if f.flags as u64 & O_ACCMODE == 1 {
        return -EBADF; // O_WRONLY
    }
    let pos = at.unwrap_or(f.pos.get());
    if let FileKind::Initrd(ino) = &f.kind {
        return read_file(fd, *ino, buf, len, pos, at.is_none());
    }
    let n = (len as usize).min(CHUNK);
    let data: Vec<u8> = match &f.kind {
        FileKind::Terminal(_) => {
            // A line at most, blocking for the first byte (the console is
            // polled: there is no receive interrupt yet).
            let mut line = Vec::new();
            while line.len() < n {
                let b = crate::console::serial::read_byte();
                line.push(b);
                if b == b'\n' {
                    break;
                }
            }
            line
        }
        FileKind::Initrd(_) => return -EBADF, // read_file's
        FileKind::Pipe(end) if !end.write => match pipe::read(end, n, f.flags as u64 & O_NONBLOCK != 0) {
            Ok(d) => d,
            Err(e) => return e,
        },
        FileKind::Pipe(_) => return -EBADF,
        FileKind::Proc(pf) => match &**pf {
            procfs::ProcFile::Text(t)
            | procfs::ProcFile::Sysctl(_, t)
            | procfs::ProcFile::OomScoreAdj(_, t)
            | procfs::ProcFile::MakeItFail(_, t)
            | procfs::ProcFile::Cgroup(_, _, t)
            | procfs::ProcFile::Sysfs(_, t) => {
                let start = (pos as usize).min(t.len());
                t[start..(start + n).min(t.len())].to_vec()
            }
            procfs::ProcFile::Dir(_) => return -EISDIR,
            procfs::ProcFile::Pagemap(pid) => {
                // Whole entries only, as Linux (-EINVAL otherwise).
                if !pos.is_multiple_of(8) || !n.is_multiple_of(8) {
                    return -EINVAL;
                }
                match procfs::pagemap_entries(*pid, (pos / 8) << 12, n / 8) {
                    Ok(v) => v.iter().flat_map(|e| e.to_le_bytes()).collect(),
                    Err(e) => return e,
                }
            }
        },
    };
    match with_mm(|mm| copy_to_user(mm, buf, &data)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => {
            if at.is_none() && !matches!(f.kind, FileKind::Terminal(_) | FileKind::Pipe(_)) {
                set_pos(fd, pos + data.len() as u64);
            }
            data.len() as i64
        }
        Err(e) => e,
    }
}

/// A regular file's read of `len` bytes at `pos` into `buf`: the whole
/// request up to the end of the file, as Linux's `filemap_read` (a
/// program may take one `read` of a file's size as the file), a chunk at
/// a time through the page cache; the bytes read, or -errno if none
/// were. `advance`: move the file's position (read, not pread).
fn read_file(fd: u64, ino: usize, buf: u64, len: u64, pos: u64, advance: bool) -> i64 {
    let Some(inode) = fs::inode(ino) else { return -EBADF };
    if inode.is_dir() {
        return -EISDIR;
    }
    let mut chunk = alloc::vec![0u8; (len as usize).min(CHUNK)];
    let mut done = 0u64;
    while done < len {
        let want = ((len - done) as usize).min(CHUNK);
        let got = fs::pagecache::read(ino, pos + done, &mut chunk[..want]);
        if got == 0 {
            break;
        }
        if let Err(e) = with_mm(|mm| copy_to_user(mm, buf + done, &chunk[..got])).unwrap_or(Err(-EFAULT)) {
            if done == 0 {
                return e;
            }
            break;
        }
        done += got as u64;
        if got < want {
            break;
        }
    }
    if advance {
        set_pos(fd, pos + done);
    }
    done as i64
}

fn sys_pread(fd: u64, buf: u64, len: u64, off: u64) -> i64 {
    match get_file(fd).map(|f| f.kind) {
        Ok(FileKind::Initrd(_) | FileKind::Proc(_)) => read_at(fd, buf, len, Some(off)),
        Ok(_) => -ESPIPE,
        Err(e) => e,
    }
}

fn sys_pwrite(fd: u64, buf: u64, len: u64, off: u64) -> i64 {
    match get_file(fd).map(|f| f.kind) {
        Ok(FileKind::Initrd(_)) => write_at(fd, buf, len, Some(off)),
        Ok(_) => -ESPIPE,
        Err(e) => e,
    }
}

/// `pipe2`: two descriptors, the read end first.
fn sys_pipe2(fds: u64, flags: u64) -> i64 {
    if flags & !(O_CLOEXEC | O_NONBLOCK | 0o40000) != 0 {
        return -EINVAL;
    }
    let (r, w) = pipe::new_pipe();
    let cloexec = flags & O_CLOEXEC != 0;
    let fl = (flags & O_NONBLOCK) as u32;
    let rfd = install(File::new(FileKind::Pipe(r), fl, cloexec), 0);
    if rfd < 0 {
        return rfd;
    }
    let wfd = install(File::new(FileKind::Pipe(w), fl | 1, cloexec), 0);
    if wfd < 0 {
        drop(take_fd(rfd as u64));
        return wfd;
    }
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&(rfd as u32).to_le_bytes());
    b[4..].copy_from_slice(&(wfd as u32).to_le_bytes());
    match with_mm(|mm| copy_to_user(mm, fds, &b)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => 0,
        Err(e) => {
            drop(take_fd(rfd as u64));
            drop(take_fd(wfd as u64));
            e
        }
    }
}

fn sys_truncate(path: u64, len: u64) -> i64 {
    let abs = match user_path(path).and_then(|p| resolve(AT_FDCWD as u64, &p)) {
        Ok(p) => p,
        Err(e) => return e,
    };
    match fs::lookup(&abs) {
        Some((ino, _)) => fs::tmpfs::truncate(ino, len).map_or_else(|e| -e, |_| 0),
        None => -ENOENT,
    }
}

fn sys_ftruncate(fd: u64, len: u64) -> i64 {
    match get_file(fd) {
        Ok(File { kind: FileKind::Initrd(ino), flags, .. }) if flags as u64 & O_ACCMODE != 0 => {
            fs::tmpfs::truncate(ino, len).map_or_else(|e| -e, |_| 0)
        }
        Ok(_) => -EINVAL,
        Err(e) => e,
    }
}

fn sys_mkdirat(dirfd: u64, path: u64, mode: u64) -> i64 {
    match user_path(path).and_then(|p| resolve(dirfd, &p)) {
        Ok(abs) if fs::cgroupfs::is_cgroup(&abs) => fs::cgroupfs::mkdir(&abs).map_or_else(|e| e, |_| 0),
        Ok(abs) => fs::tmpfs::mkdir(&abs, mode as u32).map_or_else(|e| -e, |_| 0),
        Err(e) => e,
    }
}

fn sys_unlinkat(dirfd: u64, path: u64, flags: u64) -> i64 {
    match user_path(path).and_then(|p| resolve(dirfd, &p)) {
        Ok(abs) if fs::cgroupfs::is_cgroup(&abs) && flags & AT_REMOVEDIR != 0 => {
            fs::cgroupfs::rmdir(&abs).map_or_else(|e| e, |_| 0)
        }
        Ok(abs) if procfs::is_proc(&abs) => -EPERM,
        Ok(abs) => fs::tmpfs::unlink(&abs, flags & AT_REMOVEDIR != 0).map_or_else(|e| -e, |_| 0),
        Err(e) => e,
    }
}

/// The `struct iovec`s at `iov`.
fn iovecs(iov: u64, count: u64) -> Result<Vec<(u64, u64)>, i64> {
    if count > 1024 {
        return Err(-EINVAL);
    }
    let mut raw = alloc::vec![0u8; count as usize * 16];
    with_mm(|mm| copy_from_user(mm, iov, &mut raw)).unwrap_or(Err(-EFAULT))?;
    Ok(raw
        .chunks_exact(16)
        .map(|c| {
            let w = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().unwrap_or([0; 8]));
            (w(0), w(8))
        })
        .collect())
}

fn sys_writev(fd: u64, iov: u64, count: u64) -> i64 {
    let v = match iovecs(iov, count) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let mut total = 0i64;
    for (base, len) in v.into_iter().filter(|&(_, l)| l != 0) {
        let r = sys_write(fd, base, len);
        if r < 0 {
            return if total > 0 { total } else { r };
        }
        total += r;
    }
    total
}

fn sys_readv(fd: u64, iov: u64, count: u64) -> i64 {
    let v = match iovecs(iov, count) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let mut total = 0i64;
    for (base, len) in v.into_iter().filter(|&(_, l)| l != 0) {
        let r = sys_read(fd, base, len);
        if r < 0 {
            return if total > 0 { total } else { r };
        }
        total += r;
        if (r as u64) < len {
            break;
        }
    }
    total
}

/// Whether the console is a terminal (`tty` on the command line: the
/// VMM's `--shell` on a terminal). Then the terminal descriptors answer
/// TCGETS and TIOCGWINSZ as a tty does, so programs line-buffer and see
/// a screen size; otherwise they answer as a pipe (-ENOTTY), which is what
/// the VMM's stdout then usually is.
/// Which of the VMM's streams are terminals (the `tty` switch): bit 0
/// its stdin, bit 1 its stdout, bit 2 its stderr.
static CONSOLE_TTY: AtomicU8 = AtomicU8::new(0);

/// The VMM's streams in `mask` are terminals (`tty=MASK`; `tty` alone:
/// all three, the VMM's --shell on a terminal).
pub fn set_console_tty(mask: u8) {
    CONSOLE_TTY.store(mask & 7, Ordering::Relaxed);
}

/// Whether console descriptor `fd` (its file's `err` flag: the VMM's
/// stderr) is a terminal as Linux would say: the VMM's stream behind it
/// is one (fd 0 reads the VMM's stdin, other console descriptors write
/// its stdout, or its stderr).
fn console_is_tty(fd: u64, err: bool) -> bool {
    let bit = if err {
        4
    } else if fd == 0 {
        1
    } else {
        2
    };
    CONSOLE_TTY.load(Ordering::Relaxed) & bit != 0
}

fn sys_ioctl(fd: u64, cmd: u64, arg: u64) -> i64 {
    const TCGETS: u64 = 0x5401;
    const TCSETS: u64 = 0x5402;
    const TCSETSF: u64 = 0x5404;
    const TIOCGPGRP: u64 = 0x540f;
    const TIOCGWINSZ: u64 = 0x5413;
    const FIONREAD: u64 = 0x541b;
    let f = match get_file(fd) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let put = |bytes: &[u8]| match with_mm(|mm| copy_to_user(mm, arg, bytes)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => 0,
        Err(e) => e,
    };
    match (&f.kind, cmd) {
        (FileKind::Pipe(end), FIONREAD) => put(&(pipe::pending(end) as u32).to_le_bytes()),
        (FileKind::Terminal(err), _) if !console_is_tty(fd, *err) => -ENOTTY,
        (FileKind::Terminal(_), TCGETS) => {
            // Linux's default termios for a console (struct termios of
            // the kernel ABI, 36 bytes): ICRNL|IXON, OPOST|ONLCR,
            // B38400|CS8|CREAD|HUPCL, ISIG|ICANON|ECHO|ECHOE|ECHOK|ECHOCTL|
            // ECHOKE|IEXTEN; c_cc INTR QUIT ERASE KILL EOF TIME MIN.
            let mut t = [0u8; 36];
            t[0..4].copy_from_slice(&0x500u32.to_le_bytes());
            t[4..8].copy_from_slice(&5u32.to_le_bytes());
            t[8..12].copy_from_slice(&0x4bfu32.to_le_bytes());
            t[12..16].copy_from_slice(&0x8a3bu32.to_le_bytes());
            t[17..24].copy_from_slice(&[3, 0x1c, 0x7f, 0x15, 4, 0, 1]);
            put(&t)
        }
        // The settings are the VMM's terminal's business: accepted.
        (FileKind::Terminal(_), TCSETS..=TCSETSF) => 0,
        (FileKind::Terminal(_), TIOCGWINSZ) => {
            let mut w = [0u8; 8];
            w[0..2].copy_from_slice(&24u16.to_le_bytes());
            w[2..4].copy_from_slice(&80u16.to_le_bytes());
            put(&w)
        }
        (FileKind::Terminal(_), TIOCGPGRP) => put(&(sched::current_pid() as u32).to_le_bytes()),
        _ => -ENOTTY,
    }
}

/// Linux's `struct stat` (x86-64, 144 bytes) for a file.
fn stat_bytes(ino: u64, mode: u32, size: u64, rdev: u64) -> [u8; 144] {
    let mut s = [0u8; 144];
    let mut put = |at: usize, v: u64, n: usize| s[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
    put(0, 0x0f, 8); // st_dev: the initramfs's (an arbitrary minor)
    put(8, ino, 8);
    put(16, if mode & S_IFMT == S_IFDIR { 2 } else { 1 }, 8);
    put(24, mode as u64, 4);
    put(40, rdev, 8);
    put(48, size, 8);
    put(56, 4096, 8);
    put(64, size.div_ceil(512), 8);
    s
}

fn stat_of(kind: FileKind) -> [u8; 144] {
    match kind {
        // Pipes: FIFO type, the bytes waiting as the size.
        FileKind::Pipe(end) => stat_bytes(end.id() & 0xffff_ffff, 0o010_600, pipe::pending(&end) as u64, 0),
        FileKind::Proc(pf) => {
            let (mode, size) = match &*pf {
                procfs::ProcFile::Dir(_) => (S_IFDIR | 0o555, 0),
                procfs::ProcFile::Sysctl(..)
                | procfs::ProcFile::OomScoreAdj(..)
                | procfs::ProcFile::MakeItFail(..)
                | procfs::ProcFile::Cgroup(..)
                | procfs::ProcFile::Sysfs(..) => (fs::S_IFREG | 0o644, 0),
                // /proc files report size 0, as Linux's do.
                _ => (fs::S_IFREG | 0o444, 0),
            };
            stat_bytes(0x1000, mode, size, 0)
        }
        // ttyS0: character device 4:64.
        FileKind::Terminal(_) => stat_bytes(3, S_IFCHR | 0o620, 0, (4 << 8) | 64),
        FileKind::Initrd(ino) => {
            let i = fs::inode(ino);
            stat_bytes(ino as u64 + 1, i.as_ref().map_or(0, |i| i.mode), i.map_or(0, |i| i.size), 0)
        }
    }
}

fn put_stat(buf: u64, st: &[u8; 144]) -> i64 {
    match with_mm(|mm| copy_to_user(mm, buf, st)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fn sys_fstat(fd: u64, buf: u64) -> i64 {
    match get_file(fd) {
        Ok(f) => put_stat(buf, &stat_of(f.kind)),
        Err(e) => e,
    }
}

fn sys_fstatat(dirfd: u64, path: u64, buf: u64, flags: u64) -> i64 {
    let p = match user_path(path) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if p.is_empty() {
        return if flags & AT_EMPTY_PATH != 0 { sys_fstat(dirfd, buf) } else { -ENOENT };
    }
    let abs = match resolve(dirfd, &p) {
        Ok(a) => a,
        Err(e) => return e,
    };
    if abs == "/dev/tty" || abs == "/dev/console" {
        return put_stat(buf, &stat_of(FileKind::Terminal(false)));
    }
    if procfs::is_proc(&abs) {
        return match proc_stat(&abs, flags & AT_SYMLINK_NOFOLLOW != 0) {
            Ok(st) => put_stat(buf, &st),
            Err(e) => e,
        };
    }
    let found = if flags & AT_SYMLINK_NOFOLLOW != 0 { fs::lookup_nofollow(&abs) } else { fs::lookup(&abs) };
    match found {
        Some((ino, _)) => put_stat(buf, &stat_of(FileKind::Initrd(ino))),
        None => -ENOENT,
    }
}

/// `statx(dirfd, path, flags, mask, buf)`: `struct statx` (256 bytes)
/// from the same facts as `struct stat`, every basic field filled
/// (STATX_BASIC_STATS) whatever the mask asks.
fn sys_statx(dirfd: u64, path: u64, flags: u64, buf: u64) -> i64 {
    let p = match user_path(path) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let kind = if p.is_empty() {
        if flags & AT_EMPTY_PATH == 0 {
            return -ENOENT;
        }
        match get_file(dirfd) {
            Ok(f) => f.kind,
            Err(e) => return e,
        }
    } else {
        let abs = match resolve(dirfd, &p) {
            Ok(a) => a,
            Err(e) => return e,
        };
        if abs == "/dev/tty" || abs == "/dev/console" {
            FileKind::Terminal(false)
        } else if procfs::is_proc(&abs) {
            match proc_stat(&abs, flags & AT_SYMLINK_NOFOLLOW != 0) {
                Ok(st) => return put_statx(buf, &st),
                Err(e) => return e,
            }
        } else {
            let found = if flags & AT_SYMLINK_NOFOLLOW != 0 { fs::lookup_nofollow(&abs) } else { fs::lookup(&abs) };
            match found {
                Some((ino, _)) => FileKind::Initrd(ino),
                None => return -ENOENT,
            }
        }
    };
    put_statx(buf, &stat_of(kind))
}

/// The stat of /proc (and /sys, cgroup) path `abs`: /proc/self is the
/// link to the caller's /proc/PID, itself with `nofollow` (lstat; `ls -F`
/// shows `self@`), that directory otherwise.
fn proc_stat(abs: &str, nofollow: bool) -> Result<[u8; 144], i64> {
    if abs == "/proc/self" && nofollow {
        return Ok(stat_bytes(0x1000, S_IFLNK | 0o777, 0, 0));
    }
    procfs::mode_of(abs).map(|m| stat_bytes(0x1000, m, 0, 0))
}

/// Writes `st` (a struct stat) to `buf` as a struct statx.
fn put_statx(buf: u64, st: &[u8; 144]) -> i64 {
    const STATX_BASIC_STATS: u64 = 0x7ff;
    let field = |at: usize| u64::from_le_bytes(st[at..at + 8].try_into().unwrap_or([0; 8]));
    let mut x = [0u8; 256];
    let mut put = |at: usize, v: u64, n: usize| x[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
    put(0, STATX_BASIC_STATS, 4); // stx_mask
    put(4, field(56), 4); // stx_blksize
    put(16, field(16), 4); // stx_nlink
    put(28, field(24) & 0xffff, 2); // stx_mode
    put(32, field(8), 8); // stx_ino
    put(40, field(48), 8); // stx_size
    put(48, field(64), 8); // stx_blocks
    let (rdev, dev) = (field(40), field(0));
    put(128, rdev >> 8, 4); // stx_rdev_major
    put(132, rdev & 0xff, 4);
    put(136, dev >> 8, 4); // stx_dev_major
    put(140, dev & 0xff, 4);
    match with_mm(|mm| copy_to_user(mm, buf, &x)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fn sys_faccessat(dirfd: u64, path: u64, mode: u64) -> i64 {
    let abs = match user_path(path).and_then(|p| resolve(dirfd, &p)) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let _ = mode;
    if procfs::is_proc(&abs) {
        return procfs::mode_of(&abs).map_or_else(|e| e, |_| 0);
    }
    match fs::lookup(&abs) {
        Some(_) => 0,
        None => -ENOENT,
    }
}

fn sys_getdents64(fd: u64, buf: u64, len: u64) -> i64 {
    let f = match get_file(fd) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let entries = match &f.kind {
        FileKind::Initrd(ino) => {
            let Some(dir) = fs::inode(*ino).filter(|d| d.is_dir()) else { return -ENOTDIR };
            let mut entries = alloc::vec![(*ino, String::from("."), S_IFDIR), (0, String::from(".."), S_IFDIR)];
            entries.extend(fs::dir_entries(&dir.path));
            entries
        }
        FileKind::Proc(pf) => match &**pf {
            procfs::ProcFile::Dir(e) => {
                let mut entries = alloc::vec![(0x0fff, String::from("."), S_IFDIR), (0, String::from(".."), S_IFDIR)];
                entries.extend(e.iter().enumerate().map(|(i, (n, m))| (0x1000 + i, n.clone(), *m)));
                entries
            }
            _ => return -ENOTDIR,
        },
        _ => return -ENOTDIR,
    };
    let mut out = Vec::new();
    let mut pos = f.pos.get() as usize;
    while let Some((eino, name, mode)) = entries.get(pos) {
        let reclen = (19 + name.len() + 1).next_multiple_of(8);
        if out.len() + reclen > len as usize {
            break;
        }
        let dtype: u8 = match mode & S_IFMT {
            S_IFDIR => 4,
            S_IFLNK => 10,
            _ => 8,
        };
        out.extend_from_slice(&(*eino as u64 + 1).to_le_bytes());
        out.extend_from_slice(&(pos as u64 + 1).to_le_bytes());
        out.extend_from_slice(&(reclen as u16).to_le_bytes());
        out.push(dtype);
        out.extend_from_slice(name.as_bytes());
        out.resize(out.len() + reclen - 19 - name.len(), 0);
        pos += 1;
    }
    if out.is_empty() && pos < entries.len() {
        return -EINVAL; // the buffer cannot hold the next entry
    }
    match with_mm(|mm| copy_to_user(mm, buf, &out)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => {
            set_pos(fd, pos as u64);
            out.len() as i64
        }
        Err(e) => e,
    }
}

fn sys_readlinkat(dirfd: u64, path: u64, buf: u64, len: u64) -> i64 {
    let abs = match user_path(path).and_then(|p| resolve(dirfd, &p)) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let target: Vec<u8> = if procfs::is_proc(&abs) {
        match procfs::readlink(&abs) {
            Ok(t) => t,
            Err(e) => return e,
        }
    } else {
        match fs::lookup_nofollow(&abs) {
            Some((_, i)) if i.mode & S_IFMT == S_IFLNK => i.data().to_vec(),
            Some(_) => return -EINVAL,
            None => return -ENOENT,
        }
    };
    let n = target.len().min(len as usize);
    match with_mm(|mm| copy_to_user(mm, buf, &target[..n])).unwrap_or(Err(-EFAULT)) {
        Ok(()) => n as i64,
        Err(e) => e,
    }
}

/// `getcwd(buf, size)`: the working directory, NUL-terminated; its
/// length with the NUL, -ERANGE if it does not fit.
fn sys_getcwd(buf: u64, len: u64) -> i64 {
    let mut path = cwd().into_bytes();
    path.push(0);
    if (len as usize) < path.len() {
        return -ERANGE;
    }
    match with_mm(|mm| copy_to_user(mm, buf, &path)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => path.len() as i64,
        Err(e) => e,
    }
}

/// Makes the absolute path `abs` the working directory if it names a
/// directory (following symbolic links, as Linux's `chdir`).
fn set_cwd(abs: String) -> i64 {
    let abs = if procfs::is_proc(&abs) {
        match procfs::mode_of(&abs) {
            Ok(m) if m & S_IFMT == S_IFDIR => abs,
            Ok(_) => return -ENOTDIR,
            Err(e) => return e,
        }
    } else {
        match fs::lookup(&abs) {
            // The path the lookup reached (symbolic links followed).
            Some((_, i)) if i.is_dir() => i.path.clone(),
            Some(_) => return -ENOTDIR,
            None => return -ENOENT,
        }
    };
    match sched::with_current(|t| t.cwd.clone()) {
        Some(c) => {
            c.with(|p| *p = abs);
            0
        }
        None => -EFAULT,
    }
}

/// `chdir(path)`: -ENOENT if nothing is there, -ENOTDIR if it is not a
/// directory.
fn sys_chdir(path: u64) -> i64 {
    match user_path(path).and_then(|p| resolve(AT_FDCWD as u64, &p)) {
        Ok(abs) => set_cwd(abs),
        Err(e) => e,
    }
}

/// `fchdir(fd)`: the directory open at `fd` becomes the working
/// directory (-ENOTDIR for any other file).
fn sys_fchdir(fd: u64) -> i64 {
    match get_file(fd) {
        Ok(File { kind: FileKind::Initrd(ino), .. }) => match fs::inode(ino) {
            Some(i) if i.is_dir() => set_cwd(i.path.clone()),
            Some(_) => -ENOTDIR,
            None => -EBADF,
        },
        Ok(_) => -ENOTDIR,
        Err(e) => e,
    }
}

/// A NULL-ended array of string pointers (argv, envp), at most 1024.
fn user_strings(ptr: u64) -> Result<Vec<String>, i64> {
    let mut out = Vec::new();
    if ptr == 0 {
        return Ok(out);
    }
    loop {
        if out.len() >= 1024 {
            return Err(-7); // E2BIG
        }
        let mut p = [0u8; 8];
        with_mm(|mm| copy_from_user(mm, ptr + out.len() as u64 * 8, &mut p)).unwrap_or(Err(-EFAULT))?;
        let s = u64::from_le_bytes(p);
        if s == 0 {
            return Ok(out);
        }
        out.push(user_path(s)?);
    }
}

/// `execve`: a program of the initramfs replaces the caller's.
pub fn sys_execve(frame: &mut crate::arch::traps::TrapFrame, path: u64, argv: u64, envp: u64) -> i64 {
    let (path, argv, envp) = match (user_path(path), user_strings(argv), user_strings(envp)) {
        (Ok(p), Ok(a), Ok(e)) => (p, a, e),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    // A relative path names a file from the working directory (which
    // the new program keeps).
    let path = match resolve(AT_FDCWD as u64, &path) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let envp: Vec<&str> = envp.iter().map(String::as_str).collect();
    super::exec::execve(frame, &path, &argv, &envp)
}

// ---- memory -------------------------------------------------------------

/// `mmap` of a file: a file VMA over the page cache (MAP_SHARED: the
/// cache's pages themselves, writes are the file's; MAP_PRIVATE: the
/// cache's pages read-only, copied on the first write). Pages come on
/// first touch (proc/fault.rs `filemap_fault`). A shared writable mapping
/// needs a descriptor open for writing (-EACCES), as in Linux.
pub fn sys_mmap_file(a: [u64; 6]) -> i64 {
    use super::abi::MAP_SHARED;
    const PROT_WRITE: u64 = 2;
    let [addr, len, prot, flags, fd, off] = a;
    let f = match get_file(fd) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let FileKind::Initrd(ino) = f.kind else { return -19 }; // ENODEV
    if fs::inode(ino).is_none_or(|i| i.mode & S_IFMT != fs::S_IFREG) {
        return -19;
    }
    if !off.is_multiple_of(4096) || len == 0 {
        return -EINVAL;
    }
    if f.flags as u64 & O_ACCMODE == 1 {
        return -13; // EACCES: a write-only descriptor cannot be mapped
    }
    let shared = flags & MAP_SHARED != 0;
    if shared && prot & PROT_WRITE != 0 && f.flags as u64 & O_ACCMODE != 2 {
        return -13; // EACCES
    }
    if shared && f.flags as u64 & O_ACCMODE == 2 {
        // Its pages may now be written behind the cache's back: they are
        // the only copy (drop_caches keeps them).
        fs::mark_dirty(ino);
    }
    with_mm(|mm| mm.mmap_file(addr, len, prot, flags, ino as u32, off / 4096))
        .unwrap_or(Err(-EFAULT))
        .map_or_else(|e| e, |v| v as i64)
}

fn sys_madvise(addr: u64, len: u64, advice: u64) -> i64 {
    const MADV_DONTNEED: u64 = 4;
    match advice {
        // NORMAL, RANDOM, SEQUENTIAL, and the fork hints: advice this
        // kernel takes without acting on it.
        0..=2 | 16..=19 => 0,
        // MADV_WILLNEED (proc/mman.rs).
        3 => super::mman::sys_madvise_willneed(addr, len),
        // MADV_FREE (proc/mman.rs).
        8 => super::mman::sys_madvise_free(addr, len),
        // MADV_COLD, MADV_PAGEOUT (proc/mman.rs).
        20 | 21 => super::mman::sys_madvise_cold_or_pageout(addr, len, advice == 21),
        // MADV_HUGEPAGE, MADV_NOHUGEPAGE (proc/thp.rs).
        14 | 15 => with_mm(|mm| super::thp::madvise(mm, addr, len, advice)).unwrap_or(-EFAULT),
        MADV_DONTNEED => with_mm(|mm| mm.madvise_dontneed(addr, len).map_or_else(|e| e, |_| 0)).unwrap_or(-EFAULT),
        _ => -EINVAL,
    }
}

// ---- identity, limits, time, randomness ---------------------------------

fn sys_uname(buf: u64) -> i64 {
    let mut u = [0u8; 6 * 65];
    for (i, s) in ["Linux", "mmemu", "6.1.0-mmemu", "#1 mmemu", "x86_64", "(none)"].iter().enumerate() {
        u[i * 65..i * 65 + s.len()].copy_from_slice(s.as_bytes());
    }
    match with_mm(|mm| copy_to_user(mm, buf, &u)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fn sys_arch_prctl(code: u64, addr: u64) -> i64 {
    const ARCH_SET_FS: u64 = 0x1002;
    const ARCH_GET_FS: u64 = 0x1003;
    match code {
        ARCH_SET_FS => {
            // Linux refuses a base outside user space (a non-canonical one
            // would make the kernel's wrmsr fault on hardware).
            if addr >= super::mm::TASK_SIZE {
                return -EPERM;
            }
            sched::with_current(|t| t.fs_base = addr);
            sched::set_fs_base(addr);
            0
        }
        ARCH_GET_FS => {
            let v = sched::with_current(|t| t.fs_base).unwrap_or(0);
            match with_mm(|mm| copy_to_user(mm, addr, &v.to_le_bytes())).unwrap_or(Err(-EFAULT)) {
                Ok(()) => 0,
                Err(e) => e,
            }
        }
        _ => -EINVAL,
    }
}

/// `getrusage`: the page-fault counts (minor, major) of the caller
/// (`RUSAGE_SELF`, across its execves) or of its reaped children
/// (`RUSAGE_CHILDREN`); times and the rest are zero (not measured).
fn sys_getrusage(who: u64, buf: u64) -> i64 {
    const RUSAGE_SELF: i32 = 0;
    const RUSAGE_CHILDREN: i32 = -1;
    let (own, children) = sched::current_rusage();
    // An `int`: only the low 32 bits of the register are the argument.
    match who as u32 as i32 {
        RUSAGE_SELF => put_rusage(buf, own),
        RUSAGE_CHILDREN => put_rusage(buf, children),
        _ => -EINVAL,
    }
}

/// Writes Linux's `struct rusage` (144 bytes) with the fault counts.
pub fn put_rusage(buf: u64, ru: sched::Rusage) -> i64 {
    let mut r = [0u64; 18];
    r[8] = ru.minflt; // ru_minflt
    r[9] = ru.majflt; // ru_majflt
    put_u64s(buf, &r)
}

/// Nanoseconds since boot, from the time-stamp counter at the rate CPUID
/// leaf 0x16 gives (2 GHz if it gives none: then only roughly seconds).
pub(super) fn now_ns() -> u64 {
    static MHZ: AtomicU64 = AtomicU64::new(0);
    static BASE: AtomicU64 = AtomicU64::new(0);
    // SAFETY: rdtsc reads the counter into edx:eax.
    let tsc = unsafe {
        let (lo, hi): (u32, u32);
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack));
        (hi as u64) << 32 | lo as u64
    };
    let mut mhz = MHZ.load(Ordering::Relaxed);
    if mhz == 0 {
        // An absent leaf returns zeros or the highest leaf's values,
        // filtered here.
        let r = core::arch::x86_64::__cpuid(0x16);
        mhz = if (100..10_000).contains(&r.eax) { r.eax as u64 } else { 2000 };
        MHZ.store(mhz, Ordering::Relaxed);
        BASE.store(tsc, Ordering::Relaxed);
    }
    tsc.saturating_sub(BASE.load(Ordering::Relaxed)) * 1000 / mhz
}

fn put_u64s(addr: u64, v: &[u64]) -> i64 {
    let mut b = Vec::with_capacity(v.len() * 8);
    v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    match with_mm(|mm| copy_to_user(mm, addr, &b)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// Whether `clock` is a real-time clock (CLOCK_REALTIME 0,
/// REALTIME_COARSE 5, REALTIME_ALARM 8, TAI 11: TAI's offset from UTC is
/// 0 until someone sets it, as on Linux).
fn is_realtime(clock: u64) -> bool {
    matches!(clock, 0 | 5 | 8 | 11)
}

/// CLOCK_REALTIME in ns: the boot clock plus the host's wall-clock offset
/// (arch/kvmclock.rs).
pub(super) fn realtime_ns() -> u64 {
    let now = now_ns();
    now + crate::arch::kvmclock::realtime_offset(now)
}

/// CLOCK_REALTIME minus the boot clock ([`now_ns`]), in ns.
pub(super) fn realtime_offset() -> u64 {
    crate::arch::kvmclock::realtime_offset(now_ns())
}

/// `clock_gettime`: the monotonic clocks count from boot, the real-time
/// ones from the epoch, as the host's wall clock (arch/kvmclock.rs).
fn sys_clock_gettime(clock: u64, ts: u64) -> i64 {
    if clock > 11 {
        return -EINVAL;
    }
    let ns = if is_realtime(clock) { realtime_ns() } else { now_ns() };
    put_u64s(ts, &[ns / 1_000_000_000, ns % 1_000_000_000])
}

const EINTR: i64 = 4;
const EOPNOTSUPP: i64 = 95;
/// `clock_nanosleep`'s flag: `req` is an absolute time on the clock.
const TIMER_ABSTIME: u64 = 1;

/// A `struct timespec` from user memory as ns; -EINVAL unless
/// 0 <= tv_nsec < 1e9 and tv_sec >= 0 (Linux's `timespec64_valid`).
fn user_timespec(addr: u64) -> Result<u64, i64> {
    let mut b = [0u8; 16];
    with_mm(|mm| copy_from_user(mm, addr, &mut b)).unwrap_or(Err(-EFAULT))?;
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
    let nsec = i64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8]));
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(-EINVAL);
    }
    Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(nsec as u64))
}

/// Sleeps until `now_ns() >= deadline` (Linux's `do_nanosleep`): the task
/// blocks and the timer tick wakes it, so other tasks run meanwhile; a
/// signal to take ends the sleep early: -EINTR with the time left.
fn sleep_until(deadline: u64) -> Result<(), (i64, u64)> {
    // The tick is what wakes a sleeper: start it if nothing has (`vmm
    // run` boots without the preemption tick). Without a local APIC
    // there is none: the task then yields the CPU until the deadline.
    let tick = crate::arch::apic::timer_on() || super::start_timer();
    loop {
        let now = now_ns();
        if now >= deadline {
            return Ok(());
        }
        if sched::current_killed() || super::signal::pending() {
            return Err((-EINTR, deadline - now));
        }
        if tick {
            sched::sleep_timeout(deadline, |t| t.killed || t.signal.deliverable());
        } else {
            sched::yield_now(false);
        }
    }
}

/// The result of an interrupted sleep: `e`, after writing the time left
/// `ns` to `rem` (if not NULL) as a timespec.
fn interrupted(e: i64, rem: u64, ns: u64) -> i64 {
    if rem == 0 {
        return e;
    }
    match put_u64s(rem, &[ns / 1_000_000_000, ns % 1_000_000_000]) {
        0 => e,
        r => r,
    }
}

/// `nanosleep(req, rem)`: sleeps `req`; interrupted by a signal, -EINTR
/// with the time left in `rem`.
fn sys_nanosleep(req: u64, rem: u64) -> i64 {
    let ns = match user_timespec(req) {
        Ok(ns) => ns,
        Err(e) => return e,
    };
    match sleep_until(now_ns().saturating_add(ns)) {
        Ok(()) => 0,
        Err((e, left)) => interrupted(e, rem, left),
    }
}

/// `clock_nanosleep(clock, flags, req, rem)`: CLOCK_REALTIME (0),
/// CLOCK_MONOTONIC (1), CLOCK_BOOTTIME (7) and CLOCK_TAI (11), all one
/// clock here (see `sys_clock_gettime`); `req` relative, or absolute with
/// TIMER_ABSTIME (then `rem` is not written, as Linux's).
fn sys_clock_nanosleep(clock: u64, flags: u64, req: u64, rem: u64) -> i64 {
    match clock {
        0 | 1 | 7 | 11 => {}
        // The CPU-time and raw/coarse clocks have no sleep in Linux.
        2..=6 => return -EOPNOTSUPP,
        _ => return -EINVAL,
    }
    let ns = match user_timespec(req) {
        Ok(ns) => ns,
        Err(e) => return e,
    };
    let abs = flags & TIMER_ABSTIME != 0;
    let deadline = match abs {
        // An absolute real time, on the boot clock sleep_until counts.
        true if is_realtime(clock) => ns.saturating_sub(realtime_offset()),
        true => ns,
        false => now_ns().saturating_add(ns),
    };
    match sleep_until(deadline) {
        Ok(()) => 0,
        Err((e, _)) if abs => e,
        Err((e, left)) => interrupted(e, rem, left),
    }
}

/// `sysinfo(info)`: Linux's `struct sysinfo` (112 bytes) with the uptime
/// in seconds (rounded up, as Linux's), the memory figures /proc/meminfo
/// prints in bytes (mem_unit 1), and the tasks alive. The load averages
/// stay 0: this kernel keeps none.
fn sys_sysinfo(info: u64) -> i64 {
    let ns = now_ns();
    let uptime = ns / 1_000_000_000 + u64::from(!ns.is_multiple_of(1_000_000_000));
    let [total, free, shared, buffers, swap_total, swap_free] = crate::mm::procfs::sysinfo_bytes();
    let mut b = [0u8; 112];
    let fields = [(0, uptime), (32, total), (40, free), (48, shared), (56, buffers), (64, swap_total), (72, swap_free)];
    for (off, v) in fields {
        b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    let procs = sched::nr_threads().min(u16::MAX as u64) as u16;
    b[80..82].copy_from_slice(&procs.to_le_bytes());
    b[104..108].copy_from_slice(&1u32.to_le_bytes()); // mem_unit
    match with_mm(|mm| copy_to_user(mm, info, &b)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fn sys_clock_getres(ts: u64) -> i64 {
    if ts == 0 {
        return 0;
    }
    put_u64s(ts, &[0, 1])
}

fn sys_gettimeofday(tv: u64) -> i64 {
    if tv == 0 {
        return 0;
    }
    let ns = realtime_ns();
    put_u64s(tv, &[ns / 1_000_000_000, ns % 1_000_000_000 / 1000])
}

fn sys_time(t: u64) -> i64 {
    let s = realtime_ns() / 1_000_000_000;
    if t != 0 {
        let r = put_u64s(t, &[s]);
        if r < 0 {
            return r;
        }
    }
    s as i64
}

/// ESRCH: no such process.
const ESRCH: i64 = 3;

/// `sched_setaffinity(pid, len, mask)`: the task (0: the caller) may run
/// only on the CPUs in the mask (the first 64 CPUs' bits are read).
fn sys_sched_setaffinity(pid: u64, len: u64, mask: u64) -> i64 {
    if len < 8 {
        return -EINVAL;
    }
    let mut b = [0u8; 8];
    if let Err(e) = with_mm(|mm| copy_from_user(mm, mask, &mut b)).unwrap_or(Err(-EFAULT)) {
        return e;
    }
    let tid = if pid == 0 { 0 } else { pid };
    if sched::affinity(tid).is_none() {
        return -ESRCH;
    }
    if sched::set_affinity(tid, u64::from_le_bytes(b)) {
        0
    } else {
        -EINVAL
    }
}

/// `sched_getaffinity(pid, len, mask)`: the CPUs the task may run on;
/// returns the mask's size in bytes, as Linux (8 for up to 64 CPUs).
fn sys_sched_getaffinity(pid: u64, len: u64, mask: u64) -> i64 {
    if len < 8 || !len.is_multiple_of(8) {
        return -EINVAL;
    }
    let Some(m) = sched::affinity(pid) else { return -ESRCH };
    match with_mm(|mm| copy_to_user(mm, mask, &m.to_le_bytes())).unwrap_or(Err(-EFAULT)) {
        Ok(()) => 8,
        Err(e) => e,
    }
}

/// getcpu(cpu, node, tcache): the CPU the caller runs on (node 0).
fn sys_getcpu(cpu: u64, node: u64) -> i64 {
    let c = (crate::arch::percpu::cpu_id() as u32).to_le_bytes();
    for (ptr, v) in [(cpu, c), (node, [0u8; 4])] {
        if ptr != 0 {
            if let Err(e) = with_mm(|mm| copy_to_user(mm, ptr, &v)).unwrap_or(Err(-EFAULT)) {
                return e;
            }
        }
    }
    0
}

fn sys_getrandom(buf: u64, len: u64) -> i64 {
    let n = (len as usize).min(CHUNK);
    let mut b = alloc::vec![0u8; n];
    for c in b.chunks_mut(8) {
        let r = super::exec::random_u64().to_le_bytes();
        c.copy_from_slice(&r[..c.len()]);
    }
    match with_mm(|mm| copy_to_user(mm, buf, &b)).unwrap_or(Err(-EFAULT)) {
        Ok(()) => n as i64,
        Err(e) => e,
    }
}
