//! Kernel-mode page faults: name what was hit, never retry blindly.

use super::layout::region_name;
use crate::arch::traps::{oops, TrapFrame};

/// Handles a #PF the kernel did not expect. Returns only if the fault was
/// resolved; otherwise oopses with the region named.
pub fn kernel_page_fault(frame: &TrapFrame, cr2: u64) {
    let mut msg = crate::fmt::StackString::<160>::new();
    let _ = core::fmt::write(
        &mut msg,
        format_args!("BUG: unable to handle page fault for address {:#x} in {}", cr2, region_name(cr2)),
    );
    oops(frame, cr2, Some(msg.as_str()))
}
