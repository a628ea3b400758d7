//! Named checkpoints: the kernel stops at a point of interest and the VMM,
//! with the vCPU parked in that port write, inspects and verifies guest
//! memory before letting it go on. On a machine without the port (QEMU)
//! the writes go nowhere and the kernel simply continues.

use crate::arch::outb;

// The VMM's checkpoint port: the name's bytes, then a NUL.
use mm_core::abi::port::CHECKPOINT as CHECKPOINT_PORT;

/// Stops at checkpoint `name` until the host resumes the vCPU. With
/// several CPUs the others are parked first, outside any kernel update
/// (arch/smp.rs), so the host sees settled state; one checkpoint at a
/// time, so the name's bytes never interleave on the port.
pub fn checkpoint(name: &str) {
    let stopped = crate::arch::smp::stop_others();
    // The host reads the descriptor while the vCPU is parked here.
    crate::mm::descriptor::refresh();
    for b in name.bytes().filter(|&b| b != 0) {
        outb(CHECKPOINT_PORT, b);
    }
    outb(CHECKPOINT_PORT, 0);
    if stopped {
        crate::arch::smp::resume_others();
    }
}
