//! The real-mode firmware: the whole program is `reset.S`, the path an x86
//! CPU takes from its reset vector to 64-bit long mode. Rust only packages
//! it (one toolchain, one assembler) into an ELF the VMM maps as ROM.
#![no_std]
#![no_main]

core::arch::global_asm!(include_str!("reset.S"), options(att_syntax));

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
