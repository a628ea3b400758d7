//! The machine side of processes: the kernel-stack switch between tasks
//! (Linux's `__switch_to_asm`), the first return to ring 3 of a new task
//! (through `iretq` from a prepared `TrapFrame`), and the FPU/SSE state
//! each process keeps (ring 3 code uses SSE; the kernel never does).

use super::traps::TrapFrame;
use core::arch::{asm, global_asm};
use core::mem::size_of;

global_asm!(
    r#"
.pushsection .text
/* switch_to(prev_rsp_slot, next_rsp): saves the callee-saved registers on
 * the current kernel stack, parks its pointer, and resumes the task whose
 * stack is next_rsp where it parked (or at ret_to_user for a new one). */
.globl switch_to
switch_to:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, (%rdi)
    mov %rsi, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret

/* A new task's first run: the switch that started it finishes
 * (proc/sched.rs schedule_tail, Linux's ret_from_fork), then its stack
 * holds a TrapFrame (traps.S order), which the exception return path
 * restores. The frame's start is 16-byte aligned, so the call keeps the
 * ABI's stack alignment. */
.globl ret_to_user
ret_to_user:
    call schedule_tail
    jmp trap_return
.popsection
"#,
    options(att_syntax)
);

extern "C" {
    fn switch_to(prev_rsp: *mut u64, next_rsp: u64);
    fn ret_to_user();
}

/// Callee-saved registers `switch_to` keeps on a parked stack.
const SWITCH_WORDS: u64 = 6;

/// Lays out a new task's kernel stack (top at `top`, 16-byte aligned) so
/// that `switch_to` to the returned stack pointer enters ring 3 with the
/// registers of `frame`.
pub fn prepare_stack(top: u64, frame: &TrapFrame) -> u64 {
    let frame_at = top - size_of::<TrapFrame>() as u64;
    let ret_at = frame_at - 8;
    let rsp = ret_at - 8 * SWITCH_WORDS;
    // SAFETY: the caller hands over the whole stack below `top`, which is
    // mapped kernel memory no one else uses; the writes stay above
    // `top - 256`.
    unsafe {
        (frame_at as *mut TrapFrame).write(*frame);
        (ret_at as *mut u64).write(ret_to_user as *const () as u64);
        core::ptr::write_bytes(rsp as *mut u64, 0, SWITCH_WORDS as usize);
    }
    rsp
}

/// Parks the running task (its stack pointer goes to `*prev_rsp`) and
/// resumes the one whose parked stack pointer is `next_rsp`.
///
/// # Safety
/// `next_rsp` must come from `prepare_stack` or an earlier park of a task
/// that is not running, its kernel stack must still be allocated, and
/// the address space (CR3) must map that stack (every kernel stack is in
/// the shared kernel half).
pub unsafe fn context_switch(prev_rsp: *mut u64, next_rsp: u64) {
    // SAFETY: the caller's contract; switch_to saves and restores every
    // register the C ABI asks a callee to keep.
    unsafe { switch_to(prev_rsp, next_rsp) }
}

/// A process's x87/SSE register image (`fxsave` format).
#[derive(Clone)]
#[repr(C, align(16))]
pub struct FpuState(pub [u8; 512]);

impl FpuState {
    /// The state after `fninit` with SSE exceptions masked (MXCSR 0x1f80).
    pub fn initial() -> FpuState {
        let mut s = FpuState([0; 512]);
        // x87 control word 0x37f (all exceptions masked), as fninit leaves it.
        s.0[0] = 0x7f;
        s.0[1] = 0x03;
        // MXCSR at byte 24: 0x1f80; MXCSR_MASK at 28 is ignored by fxrstor.
        s.0[24] = 0x80;
        s.0[25] = 0x1f;
        s
    }

    /// Saves the live FPU/SSE registers here.
    pub fn save(&mut self) {
        // SAFETY: a 512-byte, 16-byte aligned buffer, as fxsave needs.
        unsafe { asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack, preserves_flags)) }
    }

    /// Loads the FPU/SSE registers from here.
    pub fn restore(&self) {
        // SAFETY: as `save`; the image came from `save` or `initial`
        // (reserved MXCSR bits clear).
        unsafe { asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack, preserves_flags, readonly)) }
    }
}
