//! Exception handling: the Rust side of the stubs in traps.S. A fault the
//! kernel expects (a probe of an address that may not be mapped) has an
//! entry in the exception table (`__ex_table`, as Linux's) and resumes at
//! its fix-up; anything else is an oops: vector, error code, CR2,
//! registers and the symbol at RIP, then the VMM is told.

use super::cpu::read_cr2;
use super::percpu::this_cpu;
use crate::fmt::Dec;
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
/// Vector of #GP.
pub const GENERAL_PROTECTION: u64 = 13;
/// Vector of #DF.
pub const DOUBLE_FAULT: u64 = 8;

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
}

/// Reads a u64 at `addr`, surviving a fault: `Err((vector, error code,
/// CR2))` if the access faulted.
pub fn probe_read(addr: u64) -> Result<u64, (u64, u64, u64)> {
    // SAFETY: the probe routine's one load has an exception-table entry
    // (traps.S), so a fault there becomes a return; any address will do.
    let p = unsafe { probe_read_u64(addr) };
    if p.faulted == 0 {
        Ok(p.value)
    } else {
        Err(last_fixup_fault())
    }
}

/// Writes a u64 at `addr`, surviving a fault.
pub fn probe_write(addr: u64, value: u64) -> Result<(), (u64, u64, u64)> {
    // SAFETY: as `probe_read`; the caller chooses an address whose
    // contents it owns (or expects to fault).
    if unsafe { probe_write_u64(addr, value) } == 0 {
        Ok(())
    } else {
        Err(last_fixup_fault())
    }
}

/// (vector, error code, CR2) of the last fault an exception-table entry
/// caught on this CPU.
pub fn last_fixup_fault() -> (u64, u64, u64) {
    this_cpu().last_fixup_fault.get()
}

/// One entry of the exception table (Linux's `struct
/// exception_table_entry`, arch/x86/include/asm/extable.h): code that may
/// fault says where to resume instead. Assembly emits entries into the
/// `__ex_table` section, which kernel.ld gathers between
/// `__start___ex_table` and `__stop___ex_table`:
///
/// ```text
/// .pushsection __ex_table, "a"
/// .balign 8
/// .quad faulting_insn, fixup, 0   /* kind: EX_TYPE_* below */
/// .popsection
/// ```
///
/// Absolute addresses rather than Linux's 32-bit relative ones: the kernel
/// is linked static at -2 GiB, and the table is small.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExTableEntry {
    /// The instruction that may fault (for `EX_TYPE_CALL_FETCH`: the
    /// return address of the `call` whose target may not be fetchable).
    pub insn: u64,
    /// Where execution resumes.
    pub fixup: u64,
    /// `EX_TYPE_*`.
    pub kind: u64,
}

/// A #PF or #GP at `insn` resumes at `fixup` (Linux's `EX_TYPE_DEFAULT`).
pub const EX_TYPE_FAULT: u64 = 0;
/// An instruction-fetch #PF at the target of a `call` whose return
/// address is `insn`: the call is unwound (its return address popped) and
/// execution resumes at `fixup`. Linux has no such kind; the access-rights
/// test's execute probe needs it, because the faulting address is
/// whatever it called.
pub const EX_TYPE_CALL_FETCH: u64 = 1;

extern "C" {
    static __start___ex_table: ExTableEntry;
    static __stop___ex_table: ExTableEntry;
}

/// The exception table, as linked.
pub fn exception_table() -> &'static [ExTableEntry] {
    // SAFETY: kernel.ld places the `__ex_table` input sections, which hold
    // nothing but 24-byte, 8-aligned entries, between the two symbols; the
    // table is read-only data that lives as long as the kernel.
    unsafe {
        let start = core::ptr::addr_of!(__start___ex_table);
        let stop = core::ptr::addr_of!(__stop___ex_table);
        let n = (stop as usize - start as usize) / core::mem::size_of::<ExTableEntry>();
        core::slice::from_raw_parts(start, n)
    }
}

/// The entry of `kind` for `insn` (Linux's `search_exception_tables`; a
/// linear search: the table has a handful of entries, where Linux sorts
/// its thousands at build time and bisects).
pub fn search_exception_table(insn: u64, kind: u64) -> Option<&'static ExTableEntry> {
    exception_table().iter().find(|e| e.insn == insn && e.kind == kind)
}

/// Linux's `fixup_exception`: if the faulting code has an exception-table
/// entry, moves it to its fix-up, records the fault for the code there and
/// returns true.
fn fixup_exception(frame: &mut TrapFrame, cr2: u64) -> bool {
    let fault = (frame.vector, frame.error_code, cr2);
    if let Some(e) = search_exception_table(frame.rip, EX_TYPE_FAULT) {
        this_cpu().last_fixup_fault.set(fault);
        frame.rip = e.fixup;
        return true;
    }
    // A fetch fault at a called address: the return address `call` pushed
    // is on top of the stack (read with a probe, in case it is not mapped).
    if frame.vector == PAGE_FAULT && frame.error_code & u64::from(mm_core::abi::cpu::PF_FETCH) != 0 && frame.rip == cr2
    {
        if let Ok(ret) = probe_read(frame.rsp) {
            if let Some(e) = search_exception_table(ret, EX_TYPE_CALL_FETCH) {
                this_cpu().last_fixup_fault.set(fault);
                frame.rsp += 8;
                frame.rip = e.fixup;
                return true;
            }
        }
    }
    false
}

/// Called by traps.S for every exception.
#[no_mangle]
extern "C" fn trap_handler(frame: &mut TrapFrame) {
    dispatch(frame);
    // Back to ring 3 (this task's frame, after any switch away and back):
    // the stale-TLB detector checks what the CPU may still hold.
    if frame.cs & 3 == 3 {
        crate::mm::tlbtrace::user_return();
    }
}

/// The handler proper: returns when the interrupted code may resume.
fn dispatch(frame: &mut TrapFrame) {
    let cr2 = if frame.vector == PAGE_FAULT || frame.vector == DOUBLE_FAULT { read_cr2() } else { 0 };
    // Interrupts, system calls and anything raised in ring 3 belong to
    // the process code (proc/): a user fault is never a kernel oops.
    if frame.vector >= 32 {
        crate::proc::interrupt(frame);
        return;
    }
    // Never a user's fault, and never survivable (Linux's
    // exc_double_fault): whatever the frame's CS says.
    if frame.vector == DOUBLE_FAULT {
        double_fault(frame, cr2)
    }
    if frame.cs & 3 == 3 {
        crate::proc::user_exception(frame, cr2);
        return;
    }
    if (frame.vector == PAGE_FAULT || frame.vector == GENERAL_PROTECTION) && fixup_exception(frame, cr2) {
        return;
    }
    if frame.vector == PAGE_FAULT {
        crate::mm::fault::kernel_page_fault(frame, cr2);
    }
    oops(frame, cr2, None)
}

/// The running task's kernel stack if `addr` lies in its guard page (the
/// unmapped page right below it, proc/kstack.rs): (pid, stack base).
/// Read from the per-CPU record the scheduler keeps, with no lock, as a
/// double fault may strike anywhere.
pub fn stack_guard_hit(addr: u64) -> Option<(u64, u64)> {
    let (pid, base) = this_cpu().task_stack.get();
    (base != 0 && crate::proc::kstack::guard_page(base).contains(&addr)).then_some((pid, base))
}

/// #DF (on its own IST stack). A kernel access into the running task's
/// stack guard page raises a #PF that the CPU cannot deliver (it would
/// push the exception frame onto the same unmapped page): that #PF
/// becomes this #DF, with CR2 holding the address in the guard page.
/// Linux's `exc_double_fault` checks CR2 against the task's stack; so
/// does this, and then the saved RSP (a fault taken with the stack
/// pointer already in the guard page, CR2 elsewhere).
fn double_fault(frame: &TrapFrame, cr2: u64) -> ! {
    if let Some((pid, base)) = stack_guard_hit(cr2) {
        handle_stack_overflow(frame, cr2, pid, base)
    }
    if let Some((pid, base)) = stack_guard_hit(frame.rsp) {
        handle_stack_overflow(frame, frame.rsp, pid, base)
    }
    oops(frame, cr2, None)
}

/// Linux's `handle_stack_overflow`: says which stack overflowed, where,
/// and whose it was, then oopses (the run ends with [`OOPS_EXIT_CODE`]).
fn handle_stack_overflow(frame: &TrapFrame, addr: u64, pid: u64, base: u64) -> ! {
    let top = base + crate::proc::kstack::THREAD_SIZE;
    kprintln!("BUG: stack guard page was hit at {:#x} (stack is {:#x}-{:#x})", addr, base, top);
    let comm = crate::proc::sched::task_name_nolock(pid).unwrap_or("?");
    kprintln!("CPU: {} PID: {} Comm: {}", Dec(this_cpu().id as u64), Dec(pid), comm);
    oops(frame, addr, Some("kernel stack overflow"))
}

/// [`handle_stack_overflow`] from a #PF handler that is still on the
/// overflowing stack (the #PF could be delivered: the stack pointer was
/// above the guard page, the access below it): it moves to this CPU's #DF
/// stack first, as Linux's `page_fault_oops` does, since the report would
/// overflow again where it stands.
pub fn stack_overflow_from_page_fault(frame: &TrapFrame, addr: u64, pid: u64, base: u64) -> ! {
    extern "C" fn on_ist(frame: &TrapFrame, addr: u64, pid: u64, base: u64) -> ! {
        handle_stack_overflow(frame, addr, pid, base)
    }
    let top = super::gdt::ist_top(super::gdt::IST_DOUBLE_FAULT);
    // SAFETY: the #DF IST stack is this CPU's and unused (no #DF is being
    // handled: the current one would run on it, not here); `on_ist` never
    // returns, so nothing on the abandoned stack is needed but `frame`,
    // which stays mapped where it is. RSP is 16-aligned before the call.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "and rsp, -16",
            "call {f}",
            "ud2",
            top = in(reg) top,
            f = sym on_ist,
            in("rdi") frame as *const TrapFrame,
            in("rsi") addr,
            in("rdx") pid,
            in("rcx") base,
            options(noreturn)
        )
    }
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
    } else if frame.vector == DOUBLE_FAULT {
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
