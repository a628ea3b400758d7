//! The ring-3 half of the access-rights test (`selftest=access`, in the
//! spirit of kvm-unit-tests' x86 access test): maps pages with every
//! protection user space can ask for, reads, writes and executes each one
//! in ring 3 through a fault-tolerant probe (`SYS_PROBE_FIXUP`), hands the
//! outcomes to the kernel (`SYS_ACCESS_RECORDS`) and stops at the
//! `access-test-done` checkpoint while its pages are still mapped, so the
//! host predicts every access with the software MMU from these very
//! tables. It also reports the plainest outcomes for the kernel's own
//! checks.
//!
//! Every page is made resident before it is probed (written while
//! writable, then mprotect'ed; or read once to map the zero page), except
//! the ones whose point is to be absent: a fault the kernel would resolve
//! (demand paging, copy-on-write) is invisible to the probe and would
//! change the tables after the access, so no access here may be one.
#![no_std]
#![no_main]

use core::arch::global_asm;
use ulib::abi::*;
use ulib::{checkpoint, mmap, mprotect, report, syscall3, PAGE};

ulib::entry!(main);

// access3_probe(out, kind, addr, value) -> 0 if the access completed, 1 if
// it faulted (out = [vector, error code, CR2], as the kernel passed them
// at the fix-up). rbx keeps the stack pointer and r12 the out pointer
// across the fault: the kernel resumes at the fix-up with every register
// but rip, rax, rcx and rdx as they were at the fault, and an exec probe
// faults inside the `call` (or, for a non-canonical target, before it
// pushed), so the stack depth there is not known statically.
global_asm!(
    ".pushsection .text.access3_probe, \"ax\"",
    ".globl access3_probe, access3_fixup",
    "access3_probe:",
    "push rbx",
    "push r12",
    "mov rbx, rsp",
    "mov r12, rdi",
    "cmp rsi, 1",
    "je 2f",
    "ja 3f",
    "mov rax, [rdx]",
    "jmp 4f",
    "2:",
    "mov [rdx], rcx",
    "jmp 4f",
    "3:",
    "call rdx",
    "4:",
    "xor eax, eax",
    "pop r12",
    "pop rbx",
    "ret",
    "access3_fixup:",
    "mov rsp, rbx",
    "mov [r12], rax",
    "mov [r12 + 8], rdx",
    "mov [r12 + 16], rcx",
    "mov eax, 1",
    "pop r12",
    "pop rbx",
    "ret",
    ".popsection",
);

extern "C" {
    fn access3_probe(out: *mut [u64; 3], kind: u64, addr: u64, value: u64) -> u64;
    static access3_fixup: u8;
}

/// How a probed page is prepared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// Written (`ret` at offset 0, a marker at 8) while writable, then
    /// given `prot`: resident, this process's own frame.
    Resident(u64),
    /// Mapped `PROT_READ` and read once: the shared zero page, read-only.
    ZeroPage,
    /// Mapped `PROT_NONE` and never touched: no PTE at all.
    Untouched,
    /// A fixed address no VMA covers (the NULL page).
    Fixed(u64),
}

/// The cases, by name. `PROT_WRITE | PROT_EXEC` is left out although
/// mmap takes it: the page would be writable and executable at the
/// checkpoint, which `--verify`'s W^X invariant rightly rejects.
const CASES: [(&str, Setup); 10] = [
    ("none", Setup::Resident(0)),
    ("r", Setup::Resident(PROT_READ)),
    ("w", Setup::Resident(PROT_WRITE)),
    ("rw", Setup::Resident(PROT_READ | PROT_WRITE)),
    ("x", Setup::Resident(PROT_EXEC)),
    ("rx", Setup::Resident(PROT_READ | PROT_EXEC)),
    ("zero_page", Setup::ZeroPage),
    ("untouched_none", Setup::Untouched),
    ("unmapped", Setup::Fixed(0x1000)),
    // The kernel's direct map: present, supervisor-only.
    ("kernel", Setup::Fixed(0xffff_8880_0010_0000)),
];

/// Not canonical: every access raises #GP, which the host's records (#PF
/// outcomes only) cannot express; checked here and reported.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

/// What one probe saw.
#[derive(Clone, Copy)]
struct Outcome {
    /// None: no fault; Some((vector, error code, CR2)).
    fault: Option<(u64, u64, u64)>,
}

fn probe(kind: u64, addr: u64, value: u64) -> Outcome {
    let mut out = [0u64; 3];
    // SAFETY: the fix-up is registered, so a fault in the probe resumes
    // at `access3_fixup`, which restores the stack; an exec target is a
    // page starting with `ret` when it is executable at all; a write
    // stores the value already there (or hits a page that faults).
    let faulted = unsafe { access3_probe(&mut out, kind, addr, value) };
    Outcome { fault: (faulted != 0).then_some((out[0], out[1], out[2])) }
}

/// The page of each case, or None if it could not be set up.
fn prepare(setup: Setup) -> Option<u64> {
    let anon = MAP_PRIVATE | MAP_ANONYMOUS;
    match setup {
        Setup::Resident(prot) => {
            let a = mmap(0, PAGE, PROT_READ | PROT_WRITE, anon);
            if a < 0 {
                return None;
            }
            let a = a as u64;
            // SAFETY: a fresh read-write page of ours.
            unsafe {
                (a as *mut u8).write_volatile(0xc3);
                ((a + 8) as *mut u64).write_volatile(0x5a5a_0000 + prot);
            }
            (mprotect(a, PAGE, prot) == 0).then_some(a)
        }
        Setup::ZeroPage => {
            let a = mmap(0, PAGE, PROT_READ, anon);
            if a < 0 {
                return None;
            }
            // SAFETY: a readable page of ours; the read maps the zero page.
            unsafe { ((a as u64 + 8) as *const u64).read_volatile() };
            Some(a as u64)
        }
        Setup::Untouched => {
            let a = mmap(0, PAGE, 0, anon);
            (a >= 0).then_some(a as u64)
        }
        Setup::Fixed(a) => Some(a),
    }
}

fn main(_arg: u64) -> i32 {
    let mut pages = [0u64; CASES.len()];
    for (i, (_, setup)) in CASES.iter().enumerate() {
        match prepare(*setup) {
            Some(a) => pages[i] = a,
            None => return 1,
        }
    }
    // SAFETY: only the label's address is taken.
    let fixup = unsafe { &access3_fixup as *const u8 as u64 };
    if syscall3(SYS_PROBE_FIXUP, fixup, 0, 0) != 0 {
        return 2;
    }
    let mut records = [UserAccessRecord::default(); CASES.len() * 3];
    let mut outcomes = [[Outcome { fault: None }; 3]; CASES.len()];
    // Faults that were not the #PF at the accessed address they should be.
    let mut unexpected = 0;
    for (i, &page) in pages.iter().enumerate() {
        for kind in 0..3u64 {
            // Reads and writes at offset 8 (the marker), fetches at the
            // `ret` at offset 0. A write stores the marker the page holds.
            let va = if kind == 2 { page } else { page + 8 };
            let marker = match CASES[i].1 {
                Setup::Resident(prot) => 0x5a5a_0000 + prot,
                _ => 0,
            };
            let o = probe(kind, va, marker);
            outcomes[i][kind as usize] = o;
            let (faulted, error_code) = match o.fault {
                None => (0, 0),
                Some((VECTOR_PF, err, cr2)) => {
                    unexpected += (cr2 != va) as u64;
                    (1, err)
                }
                Some(_) => {
                    unexpected += 1;
                    (1, u64::MAX)
                }
            };
            records[i * 3 + kind as usize] = UserAccessRecord { va, access: kind, faulted, error_code };
        }
    }
    let mut gp = 0;
    for kind in 0..3u64 {
        let va = if kind == 2 { NON_CANONICAL } else { NON_CANONICAL + 8 };
        gp += matches!(probe(kind, va, 0).fault, Some((VECTOR_GP, 0, 0))) as u64;
    }
    syscall3(SYS_PROBE_FIXUP, 0, 0, 0);

    // A record the host cannot compare (not a #PF) is kept back; the
    // `unexpected` report fails the kernel's check instead.
    let mut handed = [UserAccessRecord::default(); CASES.len() * 3];
    let mut n = 0;
    for r in records.iter().filter(|r| r.error_code <= u32::MAX as u64) {
        handed[n] = *r;
        n += 1;
    }
    let taken = syscall3(SYS_ACCESS_RECORDS, handed.as_ptr() as u64, n as u64, 0);

    let code = |case: usize, kind: usize| match outcomes[case][kind].fault {
        Some((VECTOR_PF, err, _)) => err,
        Some(_) => 0x1_0000,
        None => 0xffff,
    };
    report("records", taken.max(0) as u64);
    report("unexpected", unexpected);
    report("noncanonical_gp", gp);
    report("r_write_err", code(1, 1));
    report("rw_write_err", code(3, 1));
    report("kernel_read_err", code(9, 0));
    report("rw_fetch_err", code(3, 2));
    report("rx_fetch_err", code(5, 2));
    report("unmapped_read_err", code(8, 0));

    // The host compares the kernel's and these records here, with every
    // page above still mapped as it was probed.
    if checkpoint("access-test-done") != 0 {
        return 3;
    }
    0
}
