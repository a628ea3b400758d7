//! The `syscall` instruction's kernel side: the MSRs (EFER.SCE, STAR,
//! LSTAR, SFMASK) set up as on hardware, and the LSTAR entry stub, which
//! switches to the running process's kernel stack and builds the same
//! `TrapFrame` an exception does (vector `SYSCALL_VECTOR`), so one Rust
//! dispatcher (proc/syscall.rs) serves both ways in.
//!
//! On hosts where `syscall` does not reach ring 0 (platform.md: it jumps
//! to LSTAR but stays in ring 3) the fetch at LSTAR faults instead, with
//! CR2 == LSTAR and error 0x15; proc/ recognises that fault and serves
//! the call from the #PF frame. The user binary is the same both ways.

use super::cpu::{rdmsr, wrmsr, EFER_SCE, MSR_EFER};
use super::gdt::KERNEL_CS;
use core::arch::global_asm;

/// STAR: the selectors `syscall`/`sysret` load.
const MSR_STAR: u32 = 0xc000_0081;
/// LSTAR: the 64-bit `syscall` entry point.
const MSR_LSTAR: u32 = 0xc000_0082;
/// SFMASK: RFLAGS bits `syscall` clears.
const MSR_SFMASK: u32 = 0xc000_0084;

/// The `vector` a system call's `TrapFrame` carries (beyond the IDT's 256,
/// so it can never be mistaken for a real vector).
pub const SYSCALL_VECTOR: u64 = 0x100;

// The user stack pointer is parked in this CPU's area (GS, arch/percpu.rs)
// while the stub switches stacks (interrupts are masked by SFMASK, so
// nothing can run in between). The frame layout is traps.S's TrapFrame.
global_asm!(
    r#"
.pushsection .text
.globl syscall_entry
syscall_entry:
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa %rsp, 0
    .cfi_register %rip, %rcx
    mov %rsp, %gs:{USER_RSP}
    mov %gs:{KERNEL_RSP}, %rsp
    // For this one instruction the user RSP is only in the per-CPU area, which
    // CFI cannot name: say the caller is unknown rather than lie.
    .cfi_undefined %rip
    push $0x1b
    // From here the frame is traps.S's (CFA past the SS slot).
    .cfi_def_cfa %rsp, 8
    push %gs:{USER_RSP}
    .cfi_adjust_cfa_offset 8
    .cfi_offset %rsp, -16
    .cfi_register %rip, %rcx
    push %r11
    .cfi_adjust_cfa_offset 8
    push $0x23
    .cfi_adjust_cfa_offset 8
    push %rcx
    .cfi_adjust_cfa_offset 8
    .cfi_offset %rip, -40
    push $0
    .cfi_adjust_cfa_offset 8
    push $0x100
    .cfi_adjust_cfa_offset 8
    jmp trap_common
    .cfi_endproc
.popsection
"#,
    USER_RSP = const super::percpu::PERCPU_USER_RSP,
    KERNEL_RSP = const super::percpu::PERCPU_KERNEL_RSP,
    options(att_syntax)
);

extern "C" {
    fn syscall_entry();
}

/// The address `syscall` jumps to (LSTAR).
pub fn entry_address() -> u64 {
    syscall_entry as *const () as u64
}

/// Enables `syscall` and points it at the entry stub.
pub fn init() {
    // SAFETY: the selectors match the GDT (kernel CS 0x08, SS 0x10; sysret
    // takes user SS = 0x10 + 8 and CS = 0x10 + 16, i.e. 0x1b and 0x23), the
    // entry stub is kernel text, and SFMASK clears IF/TF/DF/AC/NT so the
    // stub starts with interrupts off.
    unsafe {
        wrmsr(MSR_STAR, (0x10u64 << 48) | ((KERNEL_CS as u64) << 32));
        wrmsr(MSR_LSTAR, entry_address());
        wrmsr(MSR_SFMASK, 0x4_4700);
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
    }
}

/// The stack the entry stub switches to: the running process's kernel
/// stack top (the same value as TSS.RSP0).
pub fn set_kernel_stack(top: u64) {
    // The stub reads this CPU's slot only on a `syscall` from this CPU,
    // which cannot happen while the kernel runs here.
    super::percpu::this_cpu().kernel_rsp.store(top, core::sync::atomic::Ordering::Relaxed)
}
