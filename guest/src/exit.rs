//! Leaving the VM: the VMM's exit port turns a value into its exit status.

use crate::arch;

/// The VMM's exit port (QEMU's isa-debug-exit uses the same port).
pub use mm_core::abi::port::EXIT as EXIT_PORT;

/// Ends the VM with exit status `code`.
pub fn exit(code: u32) -> ! {
    arch::outl(EXIT_PORT, code);
    // Only reached on a machine without the exit device.
    arch::halt_forever()
}
