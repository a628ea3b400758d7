//! The kernel's own GDT and TSS: flat segments (base 0, no limit checks in
//! long mode, as Linux's gdt_page) and the interrupt stacks (IST) that
//! exceptions which must never run on a broken stack switch to. One of
//! each per CPU, as Linux's per-CPU `gdt_page` and `cpu_tss_rw`: the TSS
//! holds the CPU's own RSP0 and IST stacks, and a loaded TSS is marked
//! busy in the GDT that holds it.

use super::percpu::{cpu_id, MAX_CPUS};
use crate::sync::BootCell;
use core::arch::asm;
use core::mem::size_of;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector (RPL 3), in the order `sysret` expects.
pub const USER_DS: u16 = 0x18 | 3;
/// User code selector (RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
/// The TSS selector.
pub const TSS_SEL: u16 = 0x28;

/// IST slots (1-based, as the IDT encodes them).
pub const IST_DOUBLE_FAULT: u8 = 1;
/// NMI stack.
pub const IST_NMI: u8 = 2;
/// Machine-check stack.
pub const IST_MCE: u8 = 3;
/// Debug-exception stack.
pub const IST_DEBUG: u8 = 4;

const IST_STACK_SIZE: usize = 16 * 1024;

/// The 64-bit TSS (Intel SDM vol. 3, 8.7).
#[repr(C, packed(4))]
pub struct Tss {
    reserved0: u32,
    /// Stacks for privilege-level changes (RSP0 is used by user->kernel).
    pub rsp: [u64; 3],
    reserved1: u64,
    /// Interrupt stack table.
    pub ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct IstStacks([[u8; IST_STACK_SIZE]; 4]);

const TSS_INIT: Tss = Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: size_of::<Tss>() as u16,
};
static TSS: [BootCell<Tss>; MAX_CPUS] = [const { BootCell::new(TSS_INIT) }; MAX_CPUS];
// In a section the boot code does not clear: a stack needs no zeroing, and
// clearing 64 KiB costs the emulated CPU tens of milliseconds.
#[link_section = ".bss.stack"]
static IST_STACKS: [BootCell<IstStacks>; MAX_CPUS] =
    [const { BootCell::new(IstStacks([[0; IST_STACK_SIZE]; 4])) }; MAX_CPUS];
static GDT: [BootCell<[u64; 7]>; MAX_CPUS] = [const { BootCell::new([0; 7]) }; MAX_CPUS];

/// Sets this CPU's TSS.RSP0, the stack it switches to when an interrupt
/// or exception arrives from ring 3 (the running process's kernel stack).
pub fn set_kernel_stack(top: u64) {
    // SAFETY: each CPU writes only its own TSS, with interrupts off (the
    // kernel runs so): the CPU reads RSP0 only on a ring 3 -> 0
    // transition, never during this write.
    let tss = unsafe { TSS[cpu_id()].get_mut() };
    // A copy, then a store: the field of the packed TSS cannot be borrowed.
    let mut rsp = tss.rsp;
    rsp[0] = top;
    tss.rsp = rsp;
}

/// The top of this CPU's IST stack `slot` (1-based, as [`IST_DOUBLE_FAULT`]).
pub fn ist_top(slot: u8) -> u64 {
    let tss = TSS[cpu_id()].as_ptr();
    // SAFETY: a read of this CPU's own TSS, a static that lives forever;
    // only this CPU writes it (with interrupts off, as the kernel runs),
    // and the IST entries are set once by `init`. Unaligned: the TSS is
    // packed.
    let ist = unsafe { core::ptr::addr_of!((*tss).ist).read_unaligned() };
    ist[usize::from(slot.saturating_sub(1)).min(6)]
}

/// Builds and loads this CPU's GDT and TSS, reloads every segment
/// register (keeping the GS base, which is the per-CPU area's).
pub fn init() {
    let cpu = cpu_id();
    // SAFETY: runs once on each CPU (the boot CPU in kmain, the others in
    // their start-up path) before it enables interrupts, on its own
    // entries only, so nothing else observes them while they are written.
    let (gdt, tss, stacks) = unsafe { (GDT[cpu].get_mut(), TSS[cpu].get_mut(), IST_STACKS[cpu].get_mut()) };
    for (i, stack) in stacks.0.iter().enumerate() {
        tss.ist[i] = stack.as_ptr() as u64 + IST_STACK_SIZE as u64;
    }
    let tss_base = tss as *const Tss as u64;
    let tss_limit = size_of::<Tss>() as u64 - 1;
    gdt[0] = 0;
    gdt[1] = 0x00af_9a00_0000_ffff; // kernel code: L, P, DPL 0
    gdt[2] = 0x00cf_9200_0000_ffff; // kernel data
    gdt[3] = 0x00cf_f200_0000_ffff; // user data: DPL 3
    gdt[4] = 0x00af_fa00_0000_ffff; // user code: L, DPL 3
                                    // 64-bit available TSS (type 9), a 16-byte descriptor.
    gdt[5] = (tss_limit & 0xffff)
        | (tss_base & 0xff_ffff) << 16
        | 0x89 << 40
        | ((tss_limit >> 16) & 0xf) << 48
        | ((tss_base >> 24) & 0xff) << 56;
    gdt[6] = tss_base >> 32;

    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer { limit: (size_of::<[u64; 7]>() - 1) as u16, base: gdt.as_ptr() as u64 };
    // SAFETY: the GDT keeps the selectors the kernel runs on (0x08 code,
    // 0x10 data) at the same indices with the same flat meaning, so the
    // reload changes nothing for running code; the TSS descriptor points
    // at a static TSS.
    unsafe {
        asm!(
            "lgdt [{ptr}]",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            ds = in(reg) KERNEL_DS as u64,
            cs = in(reg) KERNEL_CS as u64,
            tss = in(reg) TSS_SEL as u64,
            tmp = out(reg) _,
        );
    }
}
