//! The IDT: a gate for each of the 32 exception vectors and for the two
//! interrupt vectors the kernel uses (APIC timer, spurious), pointing at
//! the stubs in traps.S. #DF, NMI, #MC and #DB switch to their own IST stacks
//! (they can strike when the current stack is unusable); the others run on
//! the interrupted kernel stack as in Linux, because an IST stack is reused
//! from its top on every entry and a nested fault of the same vector (a #PF
//! inside the #PF handler) would overwrite the outer frame.

use super::gdt::{IST_DEBUG, IST_DOUBLE_FAULT, IST_MCE, IST_NMI, KERNEL_CS};
use crate::sync::BootCell;
use core::arch::asm;
use core::mem::size_of;

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const EMPTY: Gate =
    Gate { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, reserved: 0 };
/// Present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
const INTERRUPT_GATE: u8 = 0x8e;

static IDT: BootCell<[Gate; 256]> = BootCell::new([EMPTY; 256]);

extern "C" {
    static trap_table: [u64; 32];
    static irq_table: [u64; 5];
}

/// The local APIC timer's vector (the first after the exceptions).
pub const TIMER_VECTOR: u8 = 32;
/// The local APIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// The virtio block device's interrupt (its IOAPIC pin is routed here).
pub const VIRTIO_VECTOR: u8 = 48;
/// The reschedule IPI (Linux's RESCHEDULE_VECTOR): wakes an idle CPU.
pub const RESCHED_VECTOR: u8 = 0xf0;
/// The TLB-shootdown IPI (Linux's CALL_FUNCTION_VECTOR serving
/// `flush_tlb_func`).
pub const FLUSH_VECTOR: u8 = 0xf1;

/// Which IST stack a vector uses (0 = none).
fn ist_for(vector: usize) -> u8 {
    match vector {
        1 => IST_DEBUG,
        2 => IST_NMI,
        8 => IST_DOUBLE_FAULT,
        18 => IST_MCE,
        _ => 0,
    }
}

/// Fills and loads the IDT.
pub fn init() {
    // SAFETY: boot CPU, interrupts off: no one else reads the IDT yet
    // (the other CPUs only load it, with `load`, once it is built).
    let idt = unsafe { IDT.get_mut() };
    // SAFETY: `trap_table` is an initialised read-only table in traps.S.
    let stubs = unsafe { &trap_table };
    for (vector, &handler) in stubs.iter().enumerate() {
        idt[vector] = Gate {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist: ist_for(vector),
            type_attr: INTERRUPT_GATE,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
    // SAFETY: `irq_table` is an initialised read-only table in traps.S.
    let irqs = unsafe { &irq_table };
    for (vector, &handler) in
        [TIMER_VECTOR, SPURIOUS_VECTOR, VIRTIO_VECTOR, RESCHED_VECTOR, FLUSH_VECTOR].into_iter().zip(irqs.iter())
    {
        idt[vector as usize] = Gate {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist: 0,
            type_attr: INTERRUPT_GATE,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer { limit: (size_of::<[Gate; 256]>() - 1) as u16, base: idt.as_ptr() as u64 };
    // SAFETY: the IDT is a static that lives forever and every present
    // gate points at a stub in traps.S.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(nostack, readonly)) }
}

/// Loads the IDT the boot CPU built on this CPU (every CPU shares it, as
/// Linux's `idt_table`).
pub fn load() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer { limit: (size_of::<[Gate; 256]>() - 1) as u16, base: IDT.as_ptr() as u64 };
    // SAFETY: the boot CPU filled the IDT before starting this CPU and
    // never changes it again; every present gate points at a stub in
    // traps.S.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(nostack, readonly)) }
}
