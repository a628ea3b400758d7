//! Starting a Linux program from the initramfs (Linux's
//! `load_elf_binary` + `create_elf_tables`): a static ELF, ET_EXEC at its
//! addresses or a static PIE (ET_DYN) at [`ET_DYN_BASE`], and the initial
//! stack the x86-64 psABI and Linux define: argc, argv, envp, then the
//! auxiliary vector, with the strings and AT_RANDOM's bytes above them.

use super::elf::{Elf, PHENT};
use super::mm::{MmStruct, STACK_TOP};
use super::sched;
use crate::arch::usermode::FpuState;
use crate::fs;
use crate::fs::file::File;
use alloc::string::String;
use alloc::vec::Vec;

/// Where a static PIE is loaded (Linux's `ELF_ET_DYN_BASE` without
/// randomisation: 2/3 of TASK_SIZE, page-aligned).
pub const ET_DYN_BASE: u64 = 0x5555_5555_4000;

// The auxiliary vector's keys (Linux's include/uapi/linux/auxvec.h).
const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_HWCAP2: u64 = 26;
const AT_EXECFN: u64 = 31;

/// 64 random bits from `rdrand` (it works in ring 0 here, platform.md),
/// falling back to the time-stamp counter if the CPU gives none or has
/// no `rdrand` at all (CPUID.1:ECX bit 30; QEMU's `qemu64` model has
/// none, and the instruction raises #UD there).
pub(crate) fn random_u64() -> u64 {
    let has_rdrand = core::arch::x86_64::__cpuid(1).ecx & (1 << 30) != 0;
    for _ in 0..if has_rdrand { 10 } else { 0 } {
        let (v, ok): (u64, u8);
        // SAFETY: rdrand only writes the named registers and the flags.
        unsafe {
            core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack))
        };
        if ok != 0 {
            return v;
        }
    }
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads the counter into edx:eax.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    // splitmix64 over a state the counter keeps stirring: calls close in
    // time still give unrelated values (not cryptographic; AT_RANDOM and
    // getrandom only need them to differ).
    static STATE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    let tsc = (hi as u64) << 32 | lo as u64;
    let mut z = STATE
        .fetch_add(tsc | 1, core::sync::atomic::Ordering::Relaxed)
        .wrapping_add(tsc | 1)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// AT_HWCAP: CPUID leaf 1's EDX, as Linux reports it on x86.
fn hwcap() -> u64 {
    let r = core::arch::x86_64::__cpuid(1);
    r.edx as u64
}

/// Lays out the initial stack below `top` in `mm`; the stack pointer
/// (16-byte aligned, at argc).
fn create_elf_tables(
    mm: &mut MmStruct,
    top: u64,
    argv: &[&str],
    envp: &[&str],
    execfn: &str,
    aux: &[(u64, u64)],
) -> Result<u64, &'static str> {
    // The strings, from the top down: execfn, the environment, argv,
    // the platform name, AT_RANDOM's 16 bytes.
    let mut strings: Vec<u8> = Vec::new();
    let mut place = |s: &[u8], nul: bool| -> u64 {
        let len = s.len() as u64 + nul as u64;
        let at = top - strings.len() as u64 - len;
        let mut bytes: Vec<u8> = s.to_vec();
        if nul {
            bytes.push(0);
        }
        // Prepend: the buffer is kept in address order at the end.
        bytes.extend_from_slice(&strings);
        strings = bytes;
        at
    };
    let execfn_at = place(execfn.as_bytes(), true);
    let env_at: Vec<u64> = envp.iter().rev().map(|s| place(s.as_bytes(), true)).collect();
    let arg_at: Vec<u64> = argv.iter().rev().map(|s| place(s.as_bytes(), true)).collect();
    let platform_at = place(b"x86_64", true);
    let mut rnd = [0u8; 16];
    rnd[..8].copy_from_slice(&random_u64().to_le_bytes());
    rnd[8..].copy_from_slice(&random_u64().to_le_bytes());
    let random_at = place(&rnd, false);
    let strings_at = random_at;

    let mut auxv: Vec<(u64, u64)> = aux.to_vec();
    auxv.push((AT_RANDOM, random_at));
    auxv.push((AT_EXECFN, execfn_at));
    auxv.push((AT_PLATFORM, platform_at));
    auxv.push((AT_NULL, 0));
    let words = 1 + argv.len() + 1 + envp.len() + 1 + 2 * auxv.len();
    let sp = (strings_at - words as u64 * 8) & !15;
    let mut table: Vec<u8> = Vec::with_capacity((strings_at - sp) as usize);
    let mut push = |v: u64| table.extend_from_slice(&v.to_le_bytes());
    push(argv.len() as u64);
    arg_at.iter().rev().for_each(|&a| push(a));
    push(0);
    env_at.iter().rev().for_each(|&a| push(a));
    push(0);
    for (k, v) in auxv {
        push(k);
        push(v);
    }
    table.resize((strings_at - sp) as usize, 0);
    table.extend_from_slice(&strings);
    super::syscall::copy_to_user(mm, sp, &table).map_err(|_| "no memory for the initial stack")?;
    Ok(sp)
}

/// The auxiliary vector's entries before AT_RANDOM, AT_EXECFN and
/// AT_PLATFORM (which `create_elf_tables` adds): Linux's order.
fn auxv(phdr: Option<u64>, phnum: u64, entry: u64) -> Vec<(u64, u64)> {
    let mut aux = alloc::vec![(AT_HWCAP, hwcap()), (AT_PAGESZ, 4096), (AT_CLKTCK, 100)];
    // A built-in program's headers lie in no segment: no AT_PHDR then
    // (it has no TLS or interpreter to look for).
    if let Some(phdr) = phdr {
        aux.push((AT_PHDR, phdr));
    }
    aux.extend_from_slice(&[
        (AT_PHENT, PHENT),
        (AT_PHNUM, phnum),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, entry),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_SECURE, 0),
        (AT_HWCAP2, 0),
    ]);
    aux
}

/// The environment every program the kernel starts gets (init's, as
/// Linux's `envp_init`, with a PATH).
pub const ENVP: [&str; 3] = ["HOME=/", "TERM=linux", "PATH=/sbin:/bin:/usr/sbin:/usr/bin"];

/// The initial stack of built-in program `image` (already loaded into
/// `mm`, starting at `entry`) run as `argv`: Linux's, as for a program
/// exec'd from the initramfs. Its stack pointer.
pub fn builtin_stack(mm: &mut MmStruct, image: &[u8], entry: u64, argv: &[&str]) -> Result<u64, &'static str> {
    let elf = Elf::parse(image)?;
    let aux = auxv(elf.phdr_vaddr_biased(0), elf.phnum, entry);
    create_elf_tables(mm, STACK_TOP, argv, &ENVP, argv.first().copied().unwrap_or(""), &aux)
}

/// Standard input, output and error on the terminal (the console), as
/// every program the kernel starts gets them.
pub fn terminal_files() -> sched::FilesRef {
    sched::new_files(alloc::vec![Some(File::terminal(false)), Some(File::terminal(false)), Some(File::terminal(true))])
}

/// A program loaded into a new address space, ready to run.
pub struct Loaded {
    /// The address space.
    pub mm: MmStruct,
    /// Where it starts.
    pub entry: u64,
    /// Its initial stack pointer (at argc).
    pub sp: u64,
    /// Its absolute path (AT_EXECFN, /proc/self/exe).
    pub execfn: String,
    /// Its name (the path's last part).
    pub name: &'static str,
}

/// Why a program cannot be loaded, as an errno and a message.
pub type ExecError = (i64, &'static str);

/// Loads the initramfs program `path` with `argv` and `envp` into a new
/// address space (Linux's `bprm_execve` up to `start_thread`).
pub fn prepare(path: &str, argv: &[&str], envp: &[&str]) -> Result<Loaded, ExecError> {
    const ENOENT: i64 = 2;
    const ENOEXEC: i64 = 8;
    const ENOMEM: i64 = 12;
    const EACCES: i64 = 13;
    let (ino, inode) = fs::lookup(path).ok_or((-ENOENT, "no such file in the initramfs"))?;
    if inode.mode & fs::S_IFMT != fs::S_IFREG {
        return Err((-EACCES, "not a regular file"));
    }
    let noexec = |e: &'static str| (-ENOEXEC, e);
    // The headers, read through the page cache as Linux's `bprm->buf`
    // (the first page; more if the program headers lie beyond it); the
    // segments are mapped from the cache, not read here.
    let size = inode.size;
    let mut hdr = alloc::vec![0u8; size.min(4096) as usize];
    let n = fs::pagecache::read(ino, 0, &mut hdr);
    hdr.truncate(n);
    let past = noexec("the program headers lie past the end of the file");
    let ph_end = Elf::parse(&hdr).map_err(noexec)?.ph_end().ok_or(past)?;
    if ph_end > hdr.len() as u64 {
        if ph_end > size || ph_end > 1 << 16 {
            return Err(past);
        }
        hdr = alloc::vec![0u8; ph_end as usize];
        let n = fs::pagecache::read(ino, 0, &mut hdr);
        hdr.truncate(n);
    }
    let elf = Elf::parse(&hdr).map_err(noexec)?;
    if elf.is_dynamic() {
        return Err(noexec("dynamically linked (needs an ELF interpreter); only static executables run here"));
    }
    let bias = if elf.etype == 3 { ET_DYN_BASE } else { 0 };
    elf.check_loads(bias, super::mm::TASK_SIZE, size).map_err(noexec)?;
    let phdr = elf.phdr_vaddr_biased(bias).ok_or(noexec("the program headers are not in a loaded segment"))?;
    let mut mm = MmStruct::new().ok_or((-ENOMEM, "out of memory"))?;
    let entry = match mm.load_elf_file(&elf, ino, bias) {
        Ok(e) => e,
        Err(e) => {
            mm.exit_mmap();
            return Err(noexec(e));
        }
    };
    let aux = auxv(Some(phdr), elf.phnum, entry);
    let execfn = fs::normalize(path);
    let sp = match create_elf_tables(&mut mm, STACK_TOP, argv, envp, &execfn, &aux) {
        Ok(sp) => sp,
        Err(e) => {
            mm.exit_mmap();
            return Err((-ENOMEM, e));
        }
    };
    let name: &'static str = match execfn.rsplit('/').next() {
        Some("init") | None => "init",
        Some(n) => String::leak(String::from(n)),
    };
    // The new image's VMAs for the host, before it runs.
    mm.publish_vmas(false);
    Ok(Loaded { mm, entry, sp, execfn, name })
}

/// /proc/PID/cmdline's bytes: each argument NUL-terminated.
pub fn cmdline_bytes(argv: &[&str]) -> Vec<u8> {
    argv.iter().flat_map(|a| a.bytes().chain(core::iter::once(0))).collect()
}

/// Starts the initramfs program `path` with `argv` and `envp` as a child
/// of the kernel, with fds 0, 1 and 2 on the terminal. Its pid.
pub fn spawn(path: &str, argv: &[&str], envp: &[&str]) -> Result<u64, &'static str> {
    let Loaded { mm, entry, sp, execfn, name } = prepare(path, argv, envp).map_err(|(_, e)| e)?;
    let frame = sched::initial_frame(entry, sp, 0);
    let exe: &'static str = String::leak(execfn);
    let cmdline = cmdline_bytes(argv);
    sched::create_task_with(name, 0, mm, &frame, FpuState::initial(), |t| {
        t.files = Some(terminal_files());
        t.exe = exe;
        t.cmdline = cmdline;
    })
    .ok_or("out of memory")
}

/// Runs the initramfs's init (`rdinit=PATH` on the command line, default
/// /init) with the command line's words after `--` as its arguments, and
/// waits for it. The exit status for the VMM: init's own, or 128 + the
/// signal that killed it; 127 if it could not start.
pub fn run_init(cmdline: &str) -> u32 {
    let path = cmdline.split(' ').find_map(|w| w.strip_prefix("rdinit=")).unwrap_or("/init");
    let args = init_args(cmdline);
    let mut argv: Vec<&str> = alloc::vec![path];
    argv.extend(args.iter().map(String::as_str));
    let pid = match spawn(path, &argv, &ENVP) {
        Ok(pid) => pid,
        Err(e) => {
            crate::kprintln!("Failed to execute {}: {}", path, e);
            return 127;
        }
    };
    match sched::kernel_wait(pid) {
        Some(st) if st & 0x7f == 0 => ((st >> 8) & 0xff) as u32,
        Some(st) => {
            crate::kprintln!("init: killed by signal {}", crate::fmt::Dec(st & 0x7f));
            128 + (st & 0x7f) as u32
        }
        None => {
            crate::kprintln!("init: could not be waited for");
            127
        }
    }
}

/// The words after `--` on the command line (Linux hands them to init),
/// with double quotes grouping words that contain spaces.
fn init_args(cmdline: &str) -> Vec<String> {
    let Some(i) = cmdline.split(' ').position(|w| w == "--") else { return Vec::new() };
    let rest: Vec<&str> = cmdline.split(' ').skip(i + 1).collect();
    let rest = rest.join(" ");
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in rest.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(core::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The exit line of a Linux program (the kernel log): its wait status
/// and its page faults as getrusage(2) counts them (minor: served from
/// memory; major: waited for a swap-in), with the memory it held.
pub fn report_exit(name: &str, pid: u64, status: u64, st: &super::abi::MmStat) {
    use crate::fmt::Dec;
    crate::kprintln!(
        "{}[{}]: exit status {} signal {}: page faults {} minor, {} major (zero-page maps {}, cow copies {}); rss {} pages, page tables {} pages",
        name,
        Dec(pid),
        Dec((status >> 8) & 0xff),
        Dec(status & 0x7f),
        Dec(st.faults.saturating_sub(st.maj_faults)),
        Dec(st.maj_faults),
        Dec(st.zero_page_maps),
        Dec(st.cow_copies),
        Dec(st.rss_pages),
        Dec(st.pt_pages)
    );
}

/// `execve(path, argv, envp)`: the calling process runs `path` from now
/// on, in a new address space (the old one is torn down), with the
/// registers of a new program, a fresh FPU state, no thread pointer and
/// its close-on-exec descriptors closed. On failure the caller goes on
/// unchanged and gets the errno.
pub fn execve(frame: &mut crate::arch::traps::TrapFrame, path: &str, argv: &[&str], envp: &[&str]) -> i64 {
    let loaded = match prepare(path, argv, envp) {
        Ok(l) => l,
        Err((errno, _)) => return errno,
    };
    let Loaded { mm, entry, sp, execfn, name } = loaded;
    let exe: &'static str = String::leak(execfn);
    // The point of no return: the other threads go (Linux's de_thread).
    sched::de_thread();
    let Some((old, last)) = sched::replace_mm(mm, name, exe) else { return -14 };
    let cmdline = cmdline_bytes(argv);
    sched::with_current(|t| t.cmdline = cmdline);
    if last {
        old.with(|m| m.exit_mmap());
    }
    drop(old);
    sched::set_fs_base(0);
    FpuState::initial().restore();
    *frame = sched::initial_frame(entry, sp, 0);
    0
}
