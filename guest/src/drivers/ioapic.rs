//! The IOAPIC (KVM's in-kernel one, at the PC's address): one redirection
//! entry per device interrupt line, pointing the line at an IDT vector on
//! the boot CPU. Register access is indirect: the index to IOREGSEL, then
//! the value through IOWIN.

use crate::sync::{rank, SpinLock};
use mm_core::abi::ioapic::{BASE, PINS};

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_VERSION: u32 = 0x01;
const REG_REDIRECTION: u32 = 0x10;
const RTE_MASKED: u32 = 1 << 16;

/// The IOAPIC's mapped registers (virtual address), once found.
static IOAPIC: SpinLock<u64> = SpinLock::new("the IOAPIC", rank::DEVICE);

fn read(base: u64, reg: u32) -> u32 {
    // SAFETY: `base` is the IOAPIC's uncached mapping (ioremap); the two
    // registers are 32-bit and side-effect free apart from the selection.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, reg);
        core::ptr::read_volatile((base + IOWIN) as *const u32)
    }
}

fn write(base: u64, reg: u32, value: u32) {
    // SAFETY: as `read`; writes go to the register just selected.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, reg);
        core::ptr::write_volatile((base + IOWIN) as *mut u32, value);
    }
}

/// Maps the IOAPIC and checks it answers; false when there is none (a VMM
/// without an in-kernel irqchip: its registers read as all-ones).
fn find() -> Option<u64> {
    if let Some(b) = IOAPIC.try_with(|b| *b) {
        return Some(b);
    }
    let base = crate::mm::vmalloc::ioremap(BASE, 0x1000, "ioapic").ok()?.0;
    let version = read(base, REG_VERSION);
    if version == u32::MAX {
        return None;
    }
    IOAPIC.set(base);
    Some(base)
}

/// Routes IOAPIC pin `pin` (a GSI) to `vector` on APIC 0: edge-triggered,
/// active high, fixed delivery, unmasked. False if there is no IOAPIC or
/// no such pin.
pub fn route(pin: u32, vector: u8) -> bool {
    let Some(base) = find() else {
        return false;
    };
    let pins = ((read(base, REG_VERSION) >> 16) & 0xff) + 1;
    if pin >= pins.min(PINS) {
        return false;
    }
    let reg = REG_REDIRECTION + 2 * pin;
    // Masked while the destination changes, then unmasked with the vector.
    write(base, reg, RTE_MASKED);
    write(base, reg + 1, 0);
    write(base, reg, vector as u32);
    true
}
