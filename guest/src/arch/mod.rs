//! x86-64 glue: the boot entry (entry.S), port I/O and the few privileged
//! instructions the kernel needs. All inline assembly lives here.

pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod kvmclock;
pub mod percpu;
pub mod smp;
pub mod syscall;
pub mod tlb;
pub mod traps;
pub mod usermode;

use core::arch::{asm, global_asm};
use mm_core::abi;

// The entry's constants come from mm-core's ABI, the one definition the
// VMM and the firmware use too.
global_asm!(
    include_str!("entry.S"),
    KERNEL_MAP = const abi::layout::KERNEL_MAP,
    XEN_ELFNOTE_PHYS32_ENTRY = const abi::boot::XEN_ELFNOTE_PHYS32_ENTRY,
    PATH_PVH = const abi::boot::PATH_PVH,
    COM1 = const abi::port::COM1,
    CR0_PG_PE = const abi::cpu::CR0_PG | abi::cpu::CR0_PE,
    CR4_PAE = const abi::cpu::CR4_PAE,
    CR4_SSE = const abi::cpu::CR4_OSFXSR | abi::cpu::CR4_OSXMMEXCPT,
    MSR_EFER = const abi::cpu::MSR_EFER,
    EFER_LME = const abi::cpu::EFER_LME,
    MSR_GS_BASE = const cpu::MSR_GS_BASE,
    options(att_syntax)
);

/// Installs the kernel's own GDT, TSS and IDT (replacing the boot GDT and
/// the empty IDT the kernel was entered with).
pub fn init_cpu() {
    gdt::init();
    idt::init();
    syscall::init();
}

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects; the ports the kernel uses
    // (COM1, the VMM's exit port) are owned by it.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) }
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for `outb`; reading COM1's registers has no side effect
    // beyond the UART's own state.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Masks interrupts, returning the previous RFLAGS for `irq_restore`.
pub fn irq_save() -> u64 {
    let flags: u64;
    // SAFETY: reads RFLAGS and clears IF; no memory is touched.
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) flags, options(nomem)) }
    flags
}

/// Whether interrupts are enabled on this CPU.
pub fn irqs_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS; no memory is touched.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags)) }
    flags & abi::cpu::RFLAGS_IF != 0
}

/// Restores the interrupt flag saved by `irq_save`.
pub fn irq_restore(flags: u64) {
    if flags & abi::cpu::RFLAGS_IF != 0 {
        // SAFETY: interrupts were enabled before the matching `irq_save`.
        unsafe { asm!("sti", options(nomem, nostack)) }
    }
}

/// Stops the CPU for good.
#[inline(never)]
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Makes the CPU triple-fault: an empty IDT turns the next exception into
/// #DF and then a shutdown. Used to exercise the VMM's crash report.
#[inline(never)]
pub fn triple_fault() -> ! {
    let null_idt = [0u16; 5];
    // SAFETY: deliberately destroys the machine: with an IDT of limit 0 the
    // read of an unmapped address faults, the fault cannot be delivered
    // (#GP, then #DF) and the CPU shuts down. Nothing runs after it.
    unsafe {
        asm!(
            "lidt [{idt}]",
            "mov rax, [{bad}]",
            idt = in(reg) null_idt.as_ptr(),
            bad = in(reg) 0x4000_0000_0000u64,
            out("rax") _,
            options(nostack)
        );
    }
    halt_forever()
}

/// Executes one SSE arithmetic instruction (`xorps xmm0, xmm0`). On hardware
/// KVM it just runs; on hosts whose ring 0 goes through KVM's instruction
/// emulator the VM dies with an emulation failure, which the VMM reports.
#[inline(never)]
pub fn sse_probe() {
    // SAFETY: clobbers only xmm0, which the kernel never uses (it is built
    // without SSE); CR4.OSFXSR is set in entry.S so the instruction is legal.
    unsafe { asm!(".byte 0x0f, 0x57, 0xc0", options(nomem, nostack)) }
}
