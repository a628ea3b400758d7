//! The user programs' small libc: the entry point, system-call wrappers,
//! console output, the C memory primitives and a malloc (malloc.rs);
//! trace.rs is the process bench's malloc trace, shared with the host.
//! Freestanding (no_std): the programs are static ELF executables the
//! kernel loads into ring 3.
#![no_std]

pub mod abi;
pub mod malloc;
pub mod trace;

use abi::*;
use core::arch::{asm, global_asm};

// The kernel enters as Linux's exec does (the x86-64 psABI's process
// entry): rsp at argc, then argv, envp and the auxiliary vector; rsp is
// 16-byte aligned and nothing else is promised. `ulib_start` takes that
// stack pointer; `call` leaves rsp = 8 mod 16 as the ABI wants.
global_asm!(
    ".pushsection .text._start, \"ax\"",
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call ulib_start",
    "ud2",
    ".popsection",
);

extern "Rust" {
    fn user_main(arg: u64) -> i32;
}

/// The initial stack's argc, argv and envp, kept by `ulib_start`.
static ARGC: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
static ARGV: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

#[no_mangle]
extern "C" fn ulib_start(sp: *const u64) -> ! {
    use core::sync::atomic::Ordering::Relaxed;
    // SAFETY: the kernel's initial stack starts with argc and the argv
    // pointers (create_elf_tables in guest/src/proc/exec.rs, as Linux's).
    let argc = unsafe { sp.read() } as usize;
    ARGC.store(argc, Relaxed);
    // SAFETY: argv follows argc on the initial stack.
    ARGV.store(unsafe { sp.add(1) } as usize, Relaxed);
    // The built-in programs' one argument: argv[1], a decimal or 0x-hex
    // number (the kernel's `proc::spawn` writes it), 0 without one.
    let arg = arg(1).and_then(parse_u64).unwrap_or(0);
    // SAFETY: every program defines `user_main` through `entry!`.
    let code = unsafe { user_main(arg) };
    exit(code)
}

/// The number of arguments (argc).
pub fn argc() -> usize {
    ARGC.load(core::sync::atomic::Ordering::Relaxed)
}

/// Argument `i` (argv[i]) without its NUL; None past argc.
pub fn arg(i: usize) -> Option<&'static [u8]> {
    use core::sync::atomic::Ordering::Relaxed;
    if i >= argc() {
        return None;
    }
    let argv = ARGV.load(Relaxed) as *const *const u8;
    // SAFETY: i < argc, so argv[i] is a pointer the kernel wrote to a
    // NUL-terminated string on the initial stack, which lives as long as
    // the program.
    unsafe { Some(cstr(argv.add(i).read())) }
}

/// The environment (envp): the NULL-terminated array after argv's NULL.
pub fn envp() -> *const *const u8 {
    let argv = ARGV.load(core::sync::atomic::Ordering::Relaxed) as *const *const u8;
    // SAFETY: argv has argc entries and a NULL; envp starts right after.
    unsafe { argv.add(argc() + 1) }
}

/// The bytes of a NUL-terminated string.
///
/// # Safety
/// `p` points to a NUL-terminated string that lives forever.
pub unsafe fn cstr(p: *const u8) -> &'static [u8] {
    let mut n = 0;
    // SAFETY: the caller promises a NUL within the string's memory.
    // Volatile: LLVM would turn a plain loop into a call to strlen, which
    // this freestanding library does not have.
    while unsafe { p.add(n).read_volatile() } != 0 {
        n += 1;
    }
    // SAFETY: the n bytes before the NUL are the string.
    unsafe { core::slice::from_raw_parts(p, n) }
}

/// A decimal or 0x-prefixed hexadecimal number.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix)? as u64;
        v = v.checked_mul(radix as u64)?.checked_add(d)?;
    }
    Some(v)
}

/// Names the program's main function: `fn(arg: u64) -> i32`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        fn user_main(arg: u64) -> i32 {
            $main(arg)
        }
    };
}

/// Raw system call with up to six arguments (Linux's x86-64 convention:
/// `syscall` clobbers rcx and r11).
#[inline(always)]
pub fn syscall6(nr: u64, a: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: the kernel validates every argument; memory the call writes
    // is named by the pointers the caller passed.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as i64 => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

/// System call with up to three arguments.
#[inline(always)]
pub fn syscall3(nr: u64, a: u64, b: u64, c: u64) -> i64 {
    syscall6(nr, [a, b, c, 0, 0, 0])
}

/// Ends the process (Linux's `exit_group`: every thread).
pub fn exit(code: i32) -> ! {
    syscall3(SYS_EXIT_GROUP, code as u64, 0, 0);
    loop {
        core::hint::spin_loop();
    }
}

/// `write(fd, buf, len)`: fds 0-2 are the terminal (the VMM's stdout
/// and stderr), as for any Linux program.
pub fn write(fd: u64, buf: &[u8]) -> i64 {
    syscall3(SYS_WRITE, fd, buf.as_ptr() as u64, buf.len() as u64)
}

/// The process id.
pub fn getpid() -> u64 {
    syscall3(SYS_GETPID, 0, 0, 0) as u64
}

/// `fork()`: the child's pid in the parent, 0 in the child.
pub fn fork() -> i64 {
    syscall3(SYS_FORK, 0, 0, 0)
}

/// Waits for a child (`pid` -1: any); returns (pid, wait status).
pub fn wait(pid: i64) -> (i64, u64) {
    let mut status = 0u64;
    let r = syscall6(SYS_WAIT4, [pid as u64, &mut status as *mut u64 as u64, 0, 0, 0, 0]);
    (r, status)
}

/// Gives the CPU to the next runnable process.
pub fn sched_yield() {
    syscall3(SYS_SCHED_YIELD, 0, 0, 0);
}

/// `mmap`; returns the address or a negative errno.
pub fn mmap(addr: u64, len: u64, prot: u64, flags: u64) -> i64 {
    syscall6(SYS_MMAP, [addr, len, prot, flags, u64::MAX, 0])
}

/// `munmap`.
pub fn munmap(addr: u64, len: u64) -> i64 {
    syscall3(SYS_MUNMAP, addr, len, 0)
}

/// `madvise`.
pub fn madvise(addr: u64, len: u64, advice: u64) -> i64 {
    syscall3(SYS_MADVISE, addr, len, advice)
}

/// `mprotect`.
pub fn mprotect(addr: u64, len: u64, prot: u64) -> i64 {
    syscall3(SYS_MPROTECT, addr, len, prot)
}

/// `brk`: the new break (or the current one when `addr` is 0 or refused).
pub fn brk(addr: u64) -> u64 {
    syscall3(SYS_BRK, addr, 0, 0) as u64
}

/// The process's memory counters.
pub fn mmstat() -> MmStat {
    let mut s = MmStat::default();
    syscall3(SYS_MMSTAT, &mut s as *mut MmStat as u64, 0, 0);
    s
}

/// Hands a named figure to the kernel's self-test.
pub fn report(key: &str, value: u64) {
    syscall3(SYS_REPORT, key.as_ptr() as u64, key.len() as u64, value);
}

/// How many figures have been reported under `key` so far (by any
/// process).
pub fn reported(key: &str) -> u64 {
    syscall3(SYS_REPORTED, key.as_ptr() as u64, key.len() as u64, 0) as u64
}

/// The physical address mapped at `addr` (0 if none), from
/// /proc/self/pagemap as Linux gives it to root: bit 63 present, bits
/// 0-54 the page frame number.
pub fn virt_to_phys(addr: u64) -> u64 {
    let mut e = [0u64; 1];
    if pagemap(addr, &mut e) != 1 || e[0] >> 63 == 0 {
        return 0;
    }
    ((e[0] & PM_PFN_MASK) << 12) | (addr & (PAGE - 1))
}

/// Bits 0-54 of a pagemap entry: the page frame number.
pub const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// /proc/self/pagemap's entries for the pages from `addr` on, one per
/// element of `out` (Linux's layout); how many were read, or -errno.
pub fn pagemap(addr: u64, out: &mut [u64]) -> i64 {
    let fd = open(b"/proc/self/pagemap\0", O_RDONLY);
    if fd < 0 {
        return fd;
    }
    let off = (addr / PAGE) * 8;
    let r = syscall6(SYS_PREAD64, [fd as u64, out.as_mut_ptr() as u64, out.len() as u64 * 8, off, 0, 0]);
    close(fd);
    if r < 0 {
        r
    } else {
        r / 8
    }
}

/// `openat(AT_FDCWD, path, flags | O_CLOEXEC)`; `path` ends with a NUL.
pub fn open(path: &[u8], flags: u64) -> i64 {
    debug_assert!(path.last() == Some(&0));
    syscall6(SYS_OPENAT, [AT_FDCWD, path.as_ptr() as u64, flags | O_CLOEXEC, 0, 0, 0])
}

/// `close(fd)`.
pub fn close(fd: i64) -> i64 {
    syscall3(SYS_CLOSE, fd as u64, 0, 0)
}

/// `read(fd, buf, len)`.
pub fn read(fd: i64, buf: &mut [u8]) -> i64 {
    syscall3(SYS_READ, fd as u64, buf.as_mut_ptr() as u64, buf.len() as u64)
}

/// Small text in a fixed buffer (paths, numbers) without the heap, so
/// the helpers below change no program's memory use.
struct Small {
    b: [u8; 48],
    n: usize,
}

impl Small {
    fn new() -> Self {
        Small { b: [0; 48], n: 0 }
    }
    fn bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

impl core::fmt::Write for Small {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.n.checked_add(s.len()).filter(|&e| e <= self.b.len()).ok_or(core::fmt::Error)?;
        self.b[self.n..end].copy_from_slice(s.as_bytes());
        self.n = end;
        Ok(())
    }
}

/// Stops at the named checkpoint: the host inspects and verifies the
/// guest (every process's address space) while this process waits in the
/// kernel. 0, or a negative errno for a bad name.
pub fn checkpoint(name: &str) -> i64 {
    syscall3(SYS_CHECKPOINT, name.as_ptr() as u64, name.len() as u64, 0)
}

/// Reads (`set` None) or sets process `pid`'s (0: own) oom_score_adj
/// through /proc/PID/oom_score_adj, as Linux's tools do; the value
/// before, or -errno (-ESRCH: no such process, -EINVAL: out of range).
pub fn oom_score_adj(pid: u64, set: Option<i64>) -> i64 {
    use core::fmt::Write as _;
    let mut path = Small::new();
    let _ = if pid == 0 {
        write!(path, "/proc/self/oom_score_adj\0")
    } else {
        write!(path, "/proc/{}/oom_score_adj\0", pid)
    };
    let fd = open(path.bytes(), O_RDONLY);
    if fd < 0 {
        return if fd == -ENOENT { -ESRCH } else { fd };
    }
    let mut b = [0u8; 16];
    let n = read(fd, &mut b);
    close(fd);
    let text = &b[..n.max(0) as usize];
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let old = match text.strip_prefix(b"-") {
        Some(d) => parse_u64(d).map(|v| -(v as i64)),
        None => parse_u64(text).map(|v| v as i64),
    };
    let Some(old) = old else { return -EINVAL };
    if let Some(v) = set {
        let fd = open(path.bytes(), O_WRONLY);
        if fd < 0 {
            return if fd == -ENOENT { -ESRCH } else { fd };
        }
        let mut num = Small::new();
        let _ = writeln!(num, "{}", v);
        let r = write(fd as u64, num.bytes());
        close(fd);
        if r < 0 {
            return r;
        }
    }
    old
}

/// Calls `f` with each line (without its newline) of the file at `path`
/// (NUL-terminated), read in small pieces through a stack buffer, so a
/// program under memory pressure (memhog waiting for the OOM killer)
/// touches no new memory for it. -errno if it cannot be opened.
pub fn for_each_line(path: &[u8], mut f: impl FnMut(&[u8])) -> i64 {
    let fd = open(path, O_RDONLY);
    if fd < 0 {
        return fd;
    }
    let mut buf = [0u8; 256];
    let mut have = 0usize;
    loop {
        let n = read(fd, &mut buf[have..]);
        if n <= 0 {
            break;
        }
        have += n as usize;
        let mut start = 0;
        while let Some(nl) = buf[start..have].iter().position(|&b| b == b'\n') {
            f(&buf[start..start + nl]);
            start += nl + 1;
        }
        buf.copy_within(start..have, 0);
        have -= start;
        // A line longer than the buffer (no /proc file has one): dropped.
        if have == buf.len() {
            have = 0;
        }
    }
    close(fd);
    0
}

/// The number after `key` (`key` ends with its separator: "MemFree:")
/// on a line of the file at `path` (NUL-terminated); None if absent.
pub fn proc_field(path: &[u8], key: &[u8]) -> Option<u64> {
    let mut v = None;
    for_each_line(path, |l| {
        if let Some(rest) = l.strip_prefix(key) {
            let digits = rest.trim_ascii_start();
            let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
            v = parse_u64(&digits[..end]);
        }
    });
    v
}

/// Writes the number `v` to the file at `path` (NUL-terminated), as
/// `echo V > PATH` does (a /proc/sys knob); 0 or -errno.
pub fn write_number(path: &[u8], v: u64) -> i64 {
    use core::fmt::Write as _;
    let fd = open(path, O_WRONLY);
    if fd < 0 {
        return fd;
    }
    let mut num = Small::new();
    let _ = writeln!(num, "{}", v);
    let r = write(fd as u64, num.bytes());
    close(fd);
    r.min(0)
}

/// The kernel's event counters from /proc/vmstat, in `VMSTAT_NAMES`
/// order (0 for a name the file does not have).
pub fn vmstat() -> [u64; VMSTAT_COUNT] {
    let mut v = [0u64; VMSTAT_COUNT];
    for_each_line(b"/proc/vmstat\0", |line| {
        if let Some(sp) = line.iter().position(|&b| b == b' ') {
            let (name, value) = (&line[..sp], &line[sp + 1..]);
            if let Some(i) = VMSTAT_NAMES.iter().position(|n| n.as_bytes() == name) {
                v[i] = parse_u64(value).unwrap_or(0);
            }
        }
    });
    v
}

/// Console output for `print!`.
pub struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        write(1, s.as_bytes());
        Ok(())
    }
}

/// Formats to the console (one `write` per piece; ring 3 may use core's
/// formatting freely, it runs natively).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::Console, format_args!($($arg)*));
        $crate::write(1, b"\n");
    }};
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("user panic: {}", info);
    exit(101)
}

// The precompiled core was built with unwinding and refers to these.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    exit(102)
}

/// # Safety
/// C's memcpy contract.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// C's memmove contract.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: a forward copy is correct when dst does not start inside src.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: backwards copy with the direction flag set, restored after.
    unsafe {
        asm!(
            "std", "rep movsb", "cld",
            inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
            options(nostack)
        )
    };
    dst
}

/// # Safety
/// C's memset contract.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8, options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// C's memcmp contract.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, within both ranges.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// C's bcmp contract.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Page size.
pub const PAGE: u64 = 4096;
