//! Exception handling: the Rust side of the stubs in traps.S. A fault the
//! kernel expects (a probe of an address that may not be mapped) is fixed
//! up and execution resumes; anything else is an oops: vector, error code,
//! CR2, registers and the symbol at RIP, then the VMM is told.

use super::cpu::read_cr2;
use crate::{exit, kprintln};
use core::arch::global_asm;

global_asm!(include_str!("traps.S"), options(att_syntax));

/// Exit status the VMM sees after an oops.
pub const OOPS_EXIT_CODE: u32 = 102;

/// The registers traps.S saves, in stack order.
#[derive(Clone, Copy, Default)]
#[repr(C)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Exception names as Linux prints them.
const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "int3",
    "overflow",
    "bounds",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack segment",
    "general protection fault",
    "page fault",
    "reserved (15)",
    "x87 floating point",
    "alignment check",
    "machine check",
    "SIMD floating point",
    "virtualization",
    "control protection",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved (31)",
];

/// The name of exception `vector`, as Linux prints it.
pub fn exception_name(vector: u64) -> &'static str {
    NAMES.get(vector as usize).copied().unwrap_or("interrupt")
}

/// Vector of #PF.
pub const PAGE_FAULT: u64 = 14;

/// What a fault-tolerant access found.
#[repr(C)]
pub struct Probe {
    /// The value read (0 when it faulted).
    pub value: u64,
    /// 1 if the access faulted.
    pub faulted: u64,
}

extern "C" {
    fn probe_read_u64(addr: u64) -> Probe;
    fn probe_write_u64(addr: u64, value: u64) -> u64;
    static probe_read_insn: u8;
    static probe_read_fixup: u8;
    static probe_write_insn: u8;
    static probe_write_fixup: u8;
    static apic_probe_insn: u8;
    static apic_probe_fixup: u8;
}

/// The last fault a probe took (vector, error code, CR2), for tests that
/// check the CPU reported what the model predicts.
static LAST_PROBE_FAULT: crate::sync::BootCell<(u64, u64, u64)> = crate::sync::BootCell::new((0, 0, 0));

/// Reads a u64 at `addr`, surviving a fault: `Err((vector, error code,
/// CR2))` if the access faulted.
pub fn probe_read(addr: u64) -> Result<u64, (u64, u64, u64)> {
    // SAFETY: the probe routine turns a fault at its one load into a
    // return (see `fixup`); any address is acceptable.
    let p = unsafe { probe_read_u64(addr) };
    if p.faulted == 0 {
        Ok(p.value)
    } else {
        // SAFETY: written only by the trap handler, which has returned.
        Err(unsafe { *LAST_PROBE_FAULT.get() })
    }
}

/// Writes a u64 at `addr`, surviving a fault.
pub fn probe_write(addr: u64, value: u64) -> Result<(), (u64, u64, u64)> {
    // SAFETY: as `probe_read`; the caller chooses an address whose
    // contents it owns (or expects to fault).
    if unsafe { probe_write_u64(addr, value) } == 0 {
        Ok(())
    } else {
        // SAFETY: as in `probe_read`.
        Err(unsafe { *LAST_PROBE_FAULT.get() })
    }
}

/// Moves a faulting probe to its fix-up; true if `rip` was a probe.
fn fixup(frame: &mut TrapFrame, cr2: u64) -> bool {
    let addr = |s: &u8| s as *const u8 as u64;
    // SAFETY: only the addresses of the asm labels are taken.
    let (ri, rf, wi, wf) =
        unsafe { (addr(&probe_read_insn), addr(&probe_read_fixup), addr(&probe_write_insn), addr(&probe_write_fixup)) };
    // SAFETY: as above (arch/apic.rs's `wrmsr_safe`).
    let (ai, af) = unsafe { (addr(&apic_probe_insn), addr(&apic_probe_fixup)) };
    let target = if frame.rip == ri {
        rf
    } else if frame.rip == wi {
        wf
    } else if frame.rip == ai {
        af
    } else {
        return false;
    };
    // SAFETY: handler context, interrupts off: the only writer.
    unsafe { *LAST_PROBE_FAULT.get_mut() = (frame.vector, frame.error_code, cr2) };
    frame.rip = target;
    true
}

/// Called by traps.S for every exception.
#[no_mangle]
extern "C" fn trap_handler(frame: &mut TrapFrame) {
    let cr2 = if frame.vector == PAGE_FAULT { read_cr2() } else { 0 };
    // Interrupts, system calls and anything raised in ring 3 belong to
    // the process code (proc/): a user fault is never a kernel oops.
    if frame.vector >= 32 {
        crate::proc::interrupt(frame);
        return;
    }
    if frame.cs & 3 == 3 {
        crate::proc::user_exception(frame, cr2);
        return;
    }
    if frame.vector == PAGE_FAULT && crate::selftest::access::exec_fixup(frame, cr2) {
        return;
    }
    if (frame.vector == PAGE_FAULT || frame.vector == 13) && fixup(frame, cr2) {
        return;
    }
    if frame.vector == PAGE_FAULT {
        crate::mm::fault::kernel_page_fault(frame, cr2);
    }
    oops(frame, cr2, None)
}

/// Prints an oops and ends the run.
pub fn oops(frame: &TrapFrame, cr2: u64, what: Option<&str>) -> ! {
    let name = NAMES.get(frame.vector as usize).copied().unwrap_or("unknown");
    kprintln!("Oops: {} (vector {:#x}) error code {:#x}", name, frame.vector, frame.error_code);
    if let Some(w) = what {
        kprintln!("{}", w);
    }
    if frame.vector == PAGE_FAULT {
        use mm_core::abi::cpu::{PF_FETCH, PF_PRESENT, PF_RSVD, PF_USER, PF_WRITE};
        let has = |bit: u32| frame.error_code & u64::from(bit) != 0;
        kprintln!(
            "#PF: {} {} access in {} mode, {}{}",
            if has(PF_FETCH) {
                "instruction fetch"
            } else if has(PF_WRITE) {
                "write"
            } else {
                "read"
            },
            if has(PF_FETCH) { "" } else { "data" },
            if has(PF_USER) { "user" } else { "kernel" },
            if has(PF_PRESENT) { "protection violation" } else { "page not present" },
            if has(PF_RSVD) { ", reserved bit set" } else { "" },
        );
        kprintln!("CR2: {:#018x}", cr2);
    }
    kprintln!("RIP: {:04x}:{:#018x} {}", frame.cs, frame.rip, crate::symbols::Symbol(frame.rip));
    kprintln!("RSP: {:04x}:{:#018x} EFLAGS: {:#010x}", frame.ss, frame.rsp, frame.rflags);
    kprintln!("RAX: {:#018x} RBX: {:#018x} RCX: {:#018x}", frame.rax, frame.rbx, frame.rcx);
    kprintln!("RDX: {:#018x} RSI: {:#018x} RDI: {:#018x}", frame.rdx, frame.rsi, frame.rdi);
    kprintln!("RBP: {:#018x} R08: {:#018x} R09: {:#018x}", frame.rbp, frame.r8, frame.r9);
    kprintln!("R10: {:#018x} R11: {:#018x} R12: {:#018x}", frame.r10, frame.r11, frame.r12);
    kprintln!("R13: {:#018x} R14: {:#018x} R15: {:#018x}", frame.r13, frame.r14, frame.r15);
    kprintln!(
        "CR0: {:#018x} CR3: {:#018x} CR4: {:#018x}",
        super::cpu::read_cr0(),
        super::cpu::read_cr3(),
        super::cpu::read_cr4()
    );
    kprintln!("---[ end trace ]---");
    exit::exit(OOPS_EXIT_CODE)
}
