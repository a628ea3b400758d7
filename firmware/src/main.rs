//! The real-mode firmware: the whole program is `reset.S`, the path an x86
//! CPU takes from its reset vector to 64-bit long mode. Rust only packages
//! it (one toolchain, one assembler) into an ELF the VMM maps as ROM.
#![no_std]
#![no_main]

// The one definition of the boot protocol, shared with the kernel and the
// VMM (mm-core's abi module, compiled on its own: the firmware needs
// nothing else of mm-core).
#[path = "../../mm-core/src/abi.rs"]
#[allow(dead_code)]
mod abi;

core::arch::global_asm!(
    include_str!("reset.S"),
    FIRMWARE_BASE = const abi::boot::FIRMWARE_BASE,
    HANDOFF = const abi::boot::HANDOFF,
    HANDOFF_MAGIC = const abi::boot::HANDOFF_MAGIC,
    HANDOFF_ENTRY = const abi::boot::HANDOFF_ENTRY,
    HANDOFF_START_INFO = const abi::boot::HANDOFF_START_INFO,
    BOOT_PML4 = const abi::boot::BOOT_PML4,
    BOOT_PDPT_LOW = const abi::boot::BOOT_PDPT_LOW,
    BOOT_PDPT_HIGH = const abi::boot::BOOT_PDPT_HIGH,
    BOOT_PD = const abi::boot::BOOT_PD,
    BOOT_PD_TOP = const abi::boot::BOOT_PD_TOP,
    FIRMWARE_STACK_TOP = const abi::boot::FIRMWARE_STACK_TOP,
    COM1 = const abi::port::COM1,
    EXIT = const abi::port::EXIT,
    PATH_FIRMWARE = const abi::boot::PATH_FIRMWARE,
    CR0_PE = const abi::cpu::CR0_PE,
    CR0_PG = const abi::cpu::CR0_PG,
    CR4_PAE = const abi::cpu::CR4_PAE,
    MSR_EFER = const abi::cpu::MSR_EFER,
    EFER_LME = const abi::cpu::EFER_LME,
    KERNEL_MAP = const abi::layout::KERNEL_MAP,
    options(att_syntax)
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
