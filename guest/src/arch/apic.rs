//! The local APIC in x2APIC mode (registers as MSRs, so no MMIO mapping
//! is needed): a periodic timer for the scheduler's preemption tick, and
//! the end-of-interrupt write. platform.md: the x2APIC timer and the
//! in-kernel irqchip work on our hosts.

use super::cpu::{rdmsr, wrmsr};
use super::idt::{SPURIOUS_VECTOR, TIMER_VECTOR};
use core::arch::global_asm;

// wrmsr_safe(msr, value) -> 0, or 1 if the wrmsr raised #GP: the #GP
// handler moves a fault at apic_probe_insn to apic_probe_fixup through the
// exception table (arch/traps.rs `ExTableEntry`). A VMM without an in-kernel irqchip has no local APIC,
// and then every x2APIC register access is a #GP.
global_asm!(
    r#"
.pushsection .text
.globl wrmsr_safe, apic_probe_insn, apic_probe_fixup
wrmsr_safe:
    mov %edi, %ecx
    mov %esi, %eax
    shr $32, %rsi
    mov %esi, %edx
apic_probe_insn:
    wrmsr
    xor %eax, %eax
    ret
apic_probe_fixup:
    mov $1, %eax
    ret
.pushsection __ex_table, "a"
.balign 8
.quad apic_probe_insn, apic_probe_fixup, 0
.popsection
.popsection
"#,
    options(att_syntax)
);

extern "C" {
    fn wrmsr_safe(msr: u32, value: u64) -> u64;
}

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_LVT_TIMER: u32 = 0x832;
const X2APIC_TIMER_INITIAL: u32 = 0x838;
const X2APIC_TIMER_DIVIDE: u32 = 0x83e;
const LVT_MASKED: u64 = 1 << 16;
const LVT_PERIODIC: u64 = 1 << 17;
/// Divide configuration "divide by 1".
const DIVIDE_BY_1: u64 = 0b1011;

/// Starts the timer: an interrupt on `TIMER_VECTOR` every `ticks` APIC
/// bus cycles (1 ns each under KVM). False if there is no local APIC (a
/// VMM that created no in-kernel irqchip).
pub fn start_timer(ticks: u32) -> bool {
    if !enable() {
        return false;
    }
    // SAFETY: architectural x2APIC MSRs (the APIC is on: `enable`), and
    // the timer vector has an IDT gate.
    unsafe {
        wrmsr(X2APIC_TIMER_DIVIDE, DIVIDE_BY_1);
        wrmsr(X2APIC_LVT_TIMER, TIMER_VECTOR as u64 | LVT_PERIODIC);
        wrmsr(X2APIC_TIMER_INITIAL, ticks as u64);
    }
    TIMER_ON.store(true, core::sync::atomic::Ordering::Relaxed);
    true
}

/// Switches the local APIC on in x2APIC mode (software-enabled, spurious
/// vector set), so it accepts interrupts: the timer's and the IOAPIC's
/// (device interrupts). False if there is no local APIC.
pub fn enable() -> bool {
    // SAFETY: architectural x2APIC MSRs; a #GP on the first register
    // write is caught (no APIC), and the spurious vector has an IDT gate.
    unsafe {
        wrmsr(IA32_APIC_BASE, rdmsr(IA32_APIC_BASE) | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
        wrmsr_safe(X2APIC_SVR, 0x100 | SPURIOUS_VECTOR as u64) == 0
    }
}

/// Whether the timer was started (and so an APIC exists).
static TIMER_ON: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Stops and masks the timer (if it runs).
pub fn stop_timer() {
    if !TIMER_ON.swap(false, core::sync::atomic::Ordering::Relaxed) {
        return;
    }
    // SAFETY: as `start_timer`; masking only stops interrupts.
    unsafe {
        wrmsr(X2APIC_LVT_TIMER, TIMER_VECTOR as u64 | LVT_MASKED);
        wrmsr(X2APIC_TIMER_INITIAL, 0);
    }
}

/// Signals the end of the interrupt being handled.
pub fn eoi() {
    // SAFETY: writing 0 to the EOI register only retires the interrupt.
    unsafe { wrmsr(X2APIC_EOI, 0) }
}
