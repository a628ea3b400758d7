//! Kernel-mode page faults: name what was hit (a vmalloc guard page, an
//! unmapped part of the vmalloc window, the NULL page...) and oops. A
//! kernel fault is never retried blindly, so an unexpected one cannot loop.

use super::layout::{region_name, VMALLOC_END, VMALLOC_START};
use crate::arch::traps::{oops, TrapFrame};
use crate::fmt::{Dec, StackString};
use core::fmt::Write;

/// Handles a #PF the kernel did not expect: oopses with the region named.
pub fn kernel_page_fault(frame: &TrapFrame, cr2: u64) {
    // Below the running task's kernel stack, with the stack pointer still
    // above it (the #PF could be delivered): an overflow all the same.
    if let Some((pid, base)) = crate::arch::traps::stack_guard_hit(cr2) {
        crate::arch::traps::stack_overflow_from_page_fault(frame, cr2, pid, base)
    }
    let mut msg = StackString::<256>::new();
    if (VMALLOC_START..VMALLOC_END).contains(&cr2) {
        match super::vmalloc::area_near(cr2) {
            Some(a) if cr2 >= a.start.0 + a.size => {
                let _ = write!(
                    msg,
                    "BUG: vmalloc guard page hit at {:#x}: {} bytes past the end of the {}-byte area at {:#x} (allocated by {})",
                    cr2,
                    Dec(cr2 - (a.start.0 + a.size)),
                    Dec(a.size),
                    a.start.0,
                    a.caller
                );
            }
            Some(a) => {
                let _ = write!(
                    msg,
                    "BUG: unmapped page at {:#x} inside the vmalloc area at {:#x} ({})",
                    cr2, a.start.0, a.caller
                );
            }
            None => {
                let _ = write!(msg, "BUG: unable to handle page fault for address {:#x} in the vmalloc window, outside every vmalloc area", cr2);
            }
        }
    } else {
        let _ = write!(msg, "BUG: unable to handle page fault for address {:#x} in {}", cr2, region_name(cr2));
    }
    oops(frame, cr2, Some(msg.as_str()))
}

/// Describes what a fault at `addr` would hit, for self-tests that catch
/// faults with a probe and want to check the kernel's explanation.
pub fn describe(addr: u64, out: &mut impl Write) {
    if (VMALLOC_START..VMALLOC_END).contains(&addr) {
        if let Some(a) = super::vmalloc::area_near(addr) {
            if addr >= a.start.0 + a.size {
                let _ = write!(out, "vmalloc guard page of the area at {:#x}", a.start.0);
                return;
            }
        }
    }
    let _ = out.write_str(region_name(addr));
}
