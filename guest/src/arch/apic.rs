//! The local APIC: a periodic timer for the scheduler's preemption tick,
//! and the end-of-interrupt write. In x2APIC mode (registers as MSRs)
//! when CPUID says the CPU has one (leaf 1, ECX bit 21: KVM's in-kernel
//! APIC does), else in xAPIC mode through the MMIO page at
//! IA32_APIC_BASE, mapped uncached in the vmalloc window (QEMU's TCG has
//! no x2APIC and ignores x2APIC MSR writes without a #GP, so probing by
//! writing cannot tell). A timer whose count does not move is no timer:
//! the caller is told, so nothing waits for a tick that never comes.
//!
//! Each CPU has its own local APIC at the same address: `enable` and the
//! timer run on every CPU (arch/smp.rs), and IPIs (the other CPUs' start-up
//! INIT-SIPI-SIPI, reschedule and TLB-shootdown interrupts) go through the
//! interrupt command register.

use super::cpu::{rdmsr, wrmsr};
use super::idt::{SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::kprintln;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
/// Register numbers: the x2APIC MSR is 0x800 + (xAPIC offset >> 4).
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3e0;
const LVT_MASKED: u64 = 1 << 16;
const LVT_PERIODIC: u64 = 1 << 17;
/// Divide configuration "divide by 1".
const DIVIDE_BY_1: u64 = 0b1011;

/// How the APIC's registers are reached once the timer was started: 0 for
/// x2APIC MSRs, else the virtual address of the xAPIC page.
static XAPIC_VA: AtomicU64 = AtomicU64::new(0);

/// The CPUs whose timer was started (bit n: CPU n).
static TIMER_ON: AtomicU64 = AtomicU64::new(0);

/// CPUID leaf 1, ECX bit 21.
fn has_x2apic() -> bool {
    // cpuid is unprivileged and always present in long mode.
    let r = core::arch::x86_64::__cpuid(1);
    r.ecx & (1 << 21) != 0
}

/// Writes APIC register `reg` (an xAPIC offset).
fn write_reg(reg: u32, v: u64) {
    match XAPIC_VA.load(Ordering::Relaxed) {
        // SAFETY: an architectural x2APIC MSR; the caller checked the APIC
        // exists (start_timer probed it).
        0 => unsafe { wrmsr(0x800 + (reg >> 4), v) },
        // SAFETY: the xAPIC page is mapped uncached at `va` for good, and
        // `reg` is a register offset inside it.
        va => unsafe { core::ptr::write_volatile((va + reg as u64) as *mut u32, v as u32) },
    }
}

/// Reads APIC register `reg`.
fn read_reg(reg: u32) -> u64 {
    match XAPIC_VA.load(Ordering::Relaxed) {
        0 => rdmsr(0x800 + (reg >> 4)),
        // SAFETY: as write_reg.
        va => unsafe { core::ptr::read_volatile((va + reg as u64) as *const u32) as u64 },
    }
}

/// The CPUs on which [`enable`] found and switched on the local APIC
/// (bit n: CPU n).
static APIC_ON: AtomicU64 = AtomicU64::new(0);
/// Whether the boot CPU found no local APIC at all.
static NO_APIC: AtomicBool = AtomicBool::new(false);

/// This CPU's bit in the per-CPU masks.
fn my_bit() -> u64 {
    1 << crate::arch::percpu::cpu_id()
}

/// Switches the local APIC on (software-enabled, spurious vector set), so
/// it accepts interrupts: the timer's and the IOAPIC's (device
/// interrupts). x2APIC mode when CPUID has it, else the xAPIC page. False,
/// with the reason on the console, if there is no local APIC (a VMM that
/// created no in-kernel irqchip). Idempotent: the timer and the drivers
/// both call it.
pub fn enable() -> bool {
    if APIC_ON.load(Ordering::Relaxed) & my_bit() != 0 {
        return true;
    }
    if NO_APIC.load(Ordering::Relaxed) {
        return false;
    }
    let base = rdmsr(IA32_APIC_BASE);
    if has_x2apic() {
        XAPIC_VA.store(0, Ordering::Relaxed);
        // SAFETY: architectural x2APIC MSRs; a #GP on the first register
        // write is caught (no APIC).
        unsafe {
            wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
            if wrmsr_safe(0x800 + (REG_SVR >> 4), 0x100 | SPURIOUS_VECTOR as u64) != 0 {
                kprintln!("apic: no local APIC (x2APIC registers fault)");
                NO_APIC.store(true, Ordering::Relaxed);
                return false;
            }
        }
    } else {
        let pa = base & 0x000f_ffff_ffff_f000;
        // SAFETY: enabling the APIC in xAPIC mode (x2APIC bit clear).
        if unsafe { wrmsr_safe(IA32_APIC_BASE, (base | APIC_BASE_ENABLE) & !APIC_BASE_X2APIC) } != 0 {
            kprintln!("apic: no local APIC (IA32_APIC_BASE faults)");
            NO_APIC.store(true, Ordering::Relaxed);
            return false;
        }
        // Every CPU's APIC answers at the same address: the boot CPU maps
        // the page once, the others reuse the mapping.
        if XAPIC_VA.load(Ordering::Relaxed) == 0 {
            let Ok(va) = crate::mm::vmalloc::ioremap(pa, 4096, "ioremap: local APIC").map(|va| va.0) else {
                kprintln!("apic: cannot map the xAPIC page at {:#x}", pa);
                return false;
            };
            XAPIC_VA.store(va, Ordering::Relaxed);
            kprintln!("apic: no x2APIC (CPUID), using the xAPIC page at {:#x}", pa);
        }
        write_reg(REG_SVR, 0x100 | SPURIOUS_VECTOR as u64);
    }
    APIC_ON.fetch_or(my_bit(), Ordering::Relaxed);
    true
}

/// Starts the timer: an interrupt on `TIMER_VECTOR` every `ticks` APIC
/// bus cycles (1 ns each under KVM and QEMU). False, with the reason on
/// the console, if there is no local APIC (a VMM that created no
/// in-kernel irqchip) or its timer does not count.
pub fn start_timer(ticks: u32) -> bool {
    if !enable() {
        kprintln!("apic: no timer");
        return false;
    }
    write_reg(REG_TIMER_DIVIDE, DIVIDE_BY_1);
    write_reg(REG_LVT_TIMER, TIMER_VECTOR as u64 | LVT_PERIODIC);
    write_reg(REG_TIMER_INITIAL, ticks as u64);
    // A timer that does not count never interrupts (QEMU ignores x2APIC
    // writes it does not implement; a broken APIC reads all ones): look
    // twice, some thousands of instructions apart.
    let first = read_reg(REG_TIMER_CURRENT);
    let mut later = first;
    for _ in 0..200_000 {
        core::hint::spin_loop();
        later = read_reg(REG_TIMER_CURRENT);
        if later != first {
            break;
        }
    }
    if later == first || first == 0xffff_ffff {
        kprintln!("apic: the local APIC timer does not count (current count stays {:#x}): no timer, cooperative scheduling only", first);
        write_reg(REG_LVT_TIMER, TIMER_VECTOR as u64 | LVT_MASKED);
        write_reg(REG_TIMER_INITIAL, 0);
        return false;
    }
    TIMER_ON.fetch_or(my_bit(), Ordering::Relaxed);
    true
}

/// Whether this CPU's timer runs.
pub fn timer_on() -> bool {
    TIMER_ON.load(Ordering::Relaxed) & my_bit() != 0
}

/// Stops and masks this CPU's timer (if it runs).
pub fn stop_timer() {
    if TIMER_ON.fetch_and(!my_bit(), Ordering::Relaxed) & my_bit() == 0 {
        return;
    }
    // Masking only stops interrupts.
    write_reg(REG_LVT_TIMER, TIMER_VECTOR as u64 | LVT_MASKED);
    write_reg(REG_TIMER_INITIAL, 0);
}

/// Signals the end of the interrupt being handled.
pub fn eoi() {
    // Writing 0 to the EOI register only retires the interrupt.
    write_reg(REG_EOI, 0);
}

/// Interrupt command register (xAPIC: low half at 0x300, destination in
/// the high half at 0x310; x2APIC: one 64-bit MSR, 0x830).
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
/// ICR delivery modes and flags (Intel SDM vol. 3, 11.6.1).
const ICR_INIT: u64 = 0b101 << 8;
const ICR_STARTUP: u64 = 0b110 << 8;
const ICR_LEVEL_ASSERT: u64 = 1 << 14;
const ICR_PENDING: u64 = 1 << 12;

/// Writes the ICR: `low` (vector, delivery mode, flags) to APIC `dest`.
fn write_icr(dest: u32, low: u64) {
    if XAPIC_VA.load(Ordering::Relaxed) == 0 {
        // SAFETY: the x2APIC ICR; the caller enabled the APIC.
        unsafe { wrmsr(0x830, (dest as u64) << 32 | low) }
        return;
    }
    write_reg(REG_ICR_HIGH, (dest as u64) << 24);
    write_reg(REG_ICR_LOW, low);
    // The xAPIC accepts the next command once this one is sent.
    for _ in 0..100_000 {
        if read_reg(REG_ICR_LOW) & ICR_PENDING == 0 {
            break;
        }
        core::hint::spin_loop();
    }
}

/// This CPU's local APIC id.
pub fn id() -> u32 {
    if XAPIC_VA.load(Ordering::Relaxed) == 0 {
        rdmsr(0x802) as u32
    } else {
        (read_reg(0x20) >> 24) as u32
    }
}

/// Sends a fixed interrupt on `vector` to the CPU whose APIC id is `dest`.
pub fn send_ipi(dest: u32, vector: u8) {
    write_icr(dest, vector as u64 | ICR_LEVEL_ASSERT);
}

/// INIT to `dest` (the first step of starting an application processor).
pub fn send_init(dest: u32) {
    write_icr(dest, ICR_INIT | ICR_LEVEL_ASSERT);
}

/// STARTUP to `dest`: it starts in real mode at physical `page << 12`.
pub fn send_startup(dest: u32, page: u8) {
    write_icr(dest, ICR_STARTUP | ICR_LEVEL_ASSERT | page as u64);
}
