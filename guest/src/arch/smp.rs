//! Starting the other CPUs (Linux's arch/x86/kernel/smpboot.c and
//! realmode/rm/trampoline_64.S, in small).
//!
//! The boot CPU learns the CPUs from the ACPI MADT (mm-core's parser, on
//! the RSDP the loader handed over), copies a real-mode trampoline to
//! `TRAMPOLINE` below 1 MiB, and starts each application processor with
//! INIT-SIPI-SIPI through its local APIC. The AP wakes in real mode at
//! the trampoline, enters protected mode, then long mode on a small page
//! table that maps the trampoline 1:1 and the kernel's upper half, jumps
//! to `ap_start64` in kernel text, loads the kernel's own CR3, its GS base
//! (its per-CPU area) and stack, and calls [`ap_main`]: its own GDT/TSS,
//! the shared IDT, `syscall`, its local APIC and timer, then the
//! scheduler's idle loop.
//!
//! The first MiB is reserved from the allocators (mm/memblock.rs), so the
//! trampoline and its page tables never collide with allocated memory.

use super::percpu::{cpu, MAX_CPUS};
use super::{apic, cpu as cr, gdt, idt, syscall};
use crate::fmt::Dec;
use crate::kprintln;
use crate::mm::phys_to_virt;
use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering};
use mm_core::acpi::CpuTopology;

/// Where the trampoline runs (the STARTUP IPI's vector is its page).
pub const TRAMPOLINE: u64 = 0x8000;
/// The trampoline's page tables: PML4, PDPT, PD (the first 2 MiB 1:1).
const TR_PML4: u64 = 0x1_0000;
const TR_PDPT: u64 = 0x1_1000;
const TR_PD: u64 = 0x1_2000;

/// Byte offsets of the trampoline's parameter block (`tr_params`), filled
/// by the boot CPU before each start.
const P_PML4: u64 = 0;
const P_EFER: u64 = 8;
const P_ENTRY: u64 = 16;
const P_KCR3: u64 = 24;
const P_CR4: u64 = 32;
const P_CR0: u64 = 40;
const P_STACK: u64 = 48;
const P_GS: u64 = 56;
const P_CPU: u64 = 64;

// The trampoline: assembled into .rodata (it is never run where it is
// linked) and copied to TRAMPOLINE, so every address in it is TRAMPOLINE
// plus a label's offset from `trampoline_start`.
global_asm!(
    r#"
.pushsection .rodata
.balign 16
.globl trampoline_start, trampoline_end, tr_params
.code16
trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (tr_gdt_desc - trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, ${TR} + (tr_pm32 - trampoline_start)
.code32
tr_pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $({TR} + (tr_params - trampoline_start)), %ebx
    mov %cr4, %eax
    or ${CR4_PAE}, %eax
    mov %eax, %cr4
    mov {P_PML4}(%ebx), %eax
    mov %eax, %cr3
    mov ${MSR_EFER}, %ecx
    mov {P_EFER}(%ebx), %eax
    mov {P_EFER_HI}(%ebx), %edx
    wrmsr
    mov %cr0, %eax
    or ${CR0_PG_PE}, %eax
    mov %eax, %cr0
    ljmp $0x18, ${TR} + (tr_lm64 - trampoline_start)
.code64
tr_lm64:
    mov $({TR} + (tr_params - trampoline_start)), %ebx
    mov {P_ENTRY}(%rbx), %rax
    jmp *%rax
.balign 8
tr_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
    .quad 0x00af9a000000ffff    /* 0x18: 64-bit code */
tr_gdt_end:
tr_gdt_desc:
    .word tr_gdt_end - tr_gdt - 1
    .long {TR} + (tr_gdt - trampoline_start)
.balign 8
tr_params:
    .skip 72
trampoline_end:
.popsection

/* ap_start64: kernel text, entered from the trampoline in long mode on
 * the trampoline's page tables, %rbx = the parameter block (1:1). Reads
 * every parameter before CR3 moves to the kernel's tables (which do not
 * map the trampoline 1:1). */
.pushsection .text
.globl ap_start64
ap_start64:
    mov {P_CR4}(%rbx), %rax
    mov %rax, %cr4
    mov {P_STACK}(%rbx), %rsp
    mov {P_GS}(%rbx), %r12
    mov {P_CPU}(%rbx), %r13
    mov {P_CR0}(%rbx), %r14
    mov {P_KCR3}(%rbx), %rax
    mov %rax, %cr3
    mov %r14, %cr0
    mov ${MSR_GS_BASE}, %ecx
    mov %r12, %rax
    mov %r12, %rdx
    shr $32, %rdx
    wrmsr
    mov %r13, %rdi
    and $-16, %rsp
    xor %ebp, %ebp
    call ap_main
1:
    cli
    hlt
    jmp 1b
.popsection
"#,
    TR = const TRAMPOLINE,
    CR4_PAE = const mm_core::abi::cpu::CR4_PAE,
    CR0_PG_PE = const mm_core::abi::cpu::CR0_PG | mm_core::abi::cpu::CR0_PE,
    MSR_EFER = const mm_core::abi::cpu::MSR_EFER,
    MSR_GS_BASE = const cr::MSR_GS_BASE,
    P_PML4 = const P_PML4,
    P_EFER = const P_EFER,
    P_EFER_HI = const P_EFER + 4,
    P_ENTRY = const P_ENTRY,
    P_KCR3 = const P_KCR3,
    P_CR4 = const P_CR4,
    P_CR0 = const P_CR0,
    P_STACK = const P_STACK,
    P_GS = const P_GS,
    P_CPU = const P_CPU,
    options(att_syntax)
);

extern "C" {
    static trampoline_start: u8;
    static trampoline_end: u8;
    static tr_params: u8;
    fn ap_start64();
}

/// CPUs running kernel code (the boot CPU counts).
static NR_CPUS: AtomicUsize = AtomicUsize::new(1);

/// The number of CPUs brought up.
pub fn nr_cpus() -> usize {
    NR_CPUS.load(Ordering::Acquire)
}

/// Order of an application processor's boot stack (16 KiB, as a task's).
const AP_STACK_ORDER: u8 = 2;

/// Spins (each a `pause` and an atomic load, some ten instructions) the
/// boot CPU waits for an AP after each STARTUP: about a second of this
/// host's emulated ring 0, far more than KVM needs.
const WAIT_SPINS: u32 = 400_000;

/// Writes `v` at physical `pa` (the first MiB: in the direct map, reserved
/// from every allocator).
fn poke(pa: u64, v: u64) {
    // SAFETY: `pa` lies in the trampoline's page or its page tables below
    // 1 MiB, which memblock reserved for the kernel's own use and which no
    // CPU runs on while the boot CPU writes it (APs start one at a time).
    unsafe { core::ptr::write_volatile(phys_to_virt(pa) as *mut u64, v) }
}

/// Copies the trampoline and builds its page tables: the first 2 MiB 1:1
/// (one large page) and the kernel's upper half (its PML4 entries).
fn install_trampoline(kernel_root: u64) -> u64 {
    // SAFETY: linker symbols of the trampoline's bytes in .rodata.
    let (start, end) = unsafe { (&trampoline_start as *const u8, &trampoline_end as *const u8) };
    let len = end as usize - start as usize;
    assert!(len <= 4096, "the SMP trampoline outgrew its page");
    // SAFETY: the source is `len` bytes of .rodata; the destination is the
    // reserved trampoline page in the direct map (see `poke`).
    unsafe { core::ptr::copy_nonoverlapping(start, phys_to_virt(TRAMPOLINE) as *mut u8, len) };
    for i in 0..512 {
        poke(TR_PML4 + i * 8, 0);
        poke(TR_PDPT + i * 8, 0);
        poke(TR_PD + i * 8, 0);
    }
    const P_RW: u64 = 0x3;
    const PS: u64 = 0x80;
    poke(TR_PML4, TR_PDPT | P_RW);
    poke(TR_PDPT, TR_PD | P_RW);
    poke(TR_PD, PS | P_RW);
    for i in 256..512u64 {
        // SAFETY: the kernel root is a live page table in the direct map;
        // its upper half changes only by adding entries, never while the
        // boot CPU starts others.
        let e = unsafe { core::ptr::read_volatile((phys_to_virt(kernel_root) + i * 8) as *const u64) };
        poke(TR_PML4 + i * 8, e);
    }
    // SAFETY: as above: the parameter block's offset inside the trampoline.
    let params_off = unsafe { &tr_params as *const u8 as u64 } - start as u64;
    TRAMPOLINE + params_off
}

/// Starts every CPU the MADT lists (at most `maxcpus` in all, the
/// command line's `maxcpus=`), one at a time. Returns the number online.
pub fn boot_secondary_cpus(topo: Option<&CpuTopology>, maxcpus: usize) -> usize {
    let Some(topo) = topo else { return 1 };
    kprintln!("ACPI: MADT lists {} CPU(s), local APIC at {:#x}", Dec(topo.count as u64), topo.lapic_addr);
    if topo.count <= 1 || maxcpus <= 1 {
        return 1;
    }
    if !apic::enable() {
        kprintln!("smp: no local APIC: one CPU");
        return 1;
    }
    let bsp_apic = apic::id();
    cpu(0).apic_id.store(bsp_apic, Ordering::Relaxed);
    let kernel_root = crate::mm::KERNEL_PT.with(|m| m.root().0);
    let params = install_trampoline(kernel_root);
    let mut next = 1;
    for &apic_id in topo.apic_ids[..topo.count.min(MAX_CPUS)].iter() {
        if apic_id == bsp_apic {
            continue;
        }
        if next >= maxcpus.min(MAX_CPUS) {
            break;
        }
        let Some(stack_pfn) = crate::mm::alloc_pages(AP_STACK_ORDER, crate::mm::GFP_KERNEL) else {
            kprintln!("smp: no memory for CPU {}'s stack", Dec(next as u64));
            break;
        };
        let area = cpu(next);
        area.apic_id.store(apic_id, Ordering::Relaxed);
        poke(params + P_PML4, TR_PML4);
        // EFER.LMA (bit 10) is the CPU's report, not a setting.
        poke(params + P_EFER, cr::rdmsr(cr::MSR_EFER) & !(1 << 10));
        poke(params + P_ENTRY, ap_start64 as *const () as u64);
        poke(params + P_KCR3, kernel_root);
        poke(params + P_CR4, cr::read_cr4());
        poke(params + P_CR0, cr::read_cr0());
        poke(params + P_STACK, phys_to_virt(stack_pfn << 12) + (4096 << AP_STACK_ORDER));
        poke(params + P_GS, area as *const _ as u64);
        poke(params + P_CPU, next as u64);
        // INIT, then STARTUP twice as the MP specification asks (the
        // second only if the first did not take).
        apic::send_init(apic_id);
        let mut up = false;
        for _ in 0..2 {
            apic::send_startup(apic_id, (TRAMPOLINE >> 12) as u8);
            if wait_online(next) {
                up = true;
                break;
            }
        }
        if !up {
            kprintln!("smp: CPU {} (APIC id {}) did not come up", Dec(next as u64), Dec(apic_id as u64));
            let _ = crate::mm::free_pages(stack_pfn, AP_STACK_ORDER);
            break;
        }
        next += 1;
        NR_CPUS.store(next, Ordering::Release);
    }
    let nodes = crate::mm::numa::nr_nodes() as u64;
    kprintln!("smp: Brought up {} node{}, {} CPUs", Dec(nodes), if nodes == 1 { "" } else { "s" }, Dec(next as u64));
    next
}

/// Waits for CPU `n` to say it runs.
fn wait_online(n: usize) -> bool {
    for _ in 0..WAIT_SPINS {
        if cpu(n).online.load(Ordering::Acquire) {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// An application processor's first Rust code: on its boot stack, GS at
/// its area, the kernel's page tables, interrupts off.
#[no_mangle]
extern "C" fn ap_main(n: u64) -> ! {
    gdt::init();
    idt::load();
    syscall::init();
    apic::enable();
    kprintln!("smpboot: CPU {} is up (APIC id {})", Dec(n), Dec(apic::id() as u64));
    cpu(n as usize).online.store(true, Ordering::Release);
    crate::proc::sched::idle_loop()
}

/// A stop of the other CPUs is in force (a checkpoint: the host reads
/// memory while no CPU is inside a kernel update; Linux's
/// `stop_machine`, in small).
static STOP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// CPUs parked by the stop.
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// Parks the other CPUs at points where they hold no lock (user mode,
/// the idle loop) until [`resume_others`]. False (nothing stopped) on one
/// CPU, or if this CPU holds a lock (another CPU could be spinning on it
/// and never park). A CPU that stays in kernel code longer than the wait
/// is left running; the host stops every vCPU anyway, so its views are
/// one instant, perhaps with that CPU's update half done.
pub fn stop_others() -> bool {
    if nr_cpus() <= 1 || super::percpu::this_cpu().locks_held() != 0 {
        return false;
    }
    while STOP.compare_exchange_weak(false, true, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        // Another CPU stops the world: be stopped first.
        park_if_stopped();
    }
    while PARKED.load(Ordering::Acquire) != 0 {
        super::tlb::poll();
        core::hint::spin_loop();
    }
    let me = super::percpu::cpu_id();
    let others = nr_cpus() - 1;
    for c in (0..nr_cpus()).filter(|&c| c != me) {
        apic::send_ipi(cpu(c).apic_id.load(Ordering::Relaxed), idt::RESCHED_VECTOR);
    }
    for _ in 0..WAIT_SPINS * 4 {
        if PARKED.load(Ordering::Acquire) >= others {
            break;
        }
        super::tlb::poll();
        core::hint::spin_loop();
    }
    true
}

/// Lets the CPUs [`stop_others`] parked go on, and waits until they have.
pub fn resume_others() {
    STOP.store(false, Ordering::Release);
    while PARKED.load(Ordering::Acquire) != 0 {
        super::tlb::poll();
        core::hint::spin_loop();
    }
}

/// Parks this CPU while a stop is in force, if it holds no lock (called
/// from the reschedule IPI's handler and the idle loop).
pub fn park_if_stopped() {
    if !STOP.load(Ordering::Acquire) || super::percpu::this_cpu().locks_held() != 0 {
        return;
    }
    PARKED.fetch_add(1, Ordering::AcqRel);
    while STOP.load(Ordering::Acquire) {
        super::tlb::poll();
        core::hint::spin_loop();
    }
    PARKED.fetch_sub(1, Ordering::AcqRel);
}
