//! Control registers, MSRs and TLB instructions.

use core::arch::asm;

pub use mm_core::abi::cpu::{CR0_WP, CR4_PGE, CR4_SMEP, EFER_NXE, EFER_SCE, MSR_EFER};

/// IA32_GS_BASE: the per-CPU area's address (arch/percpu.rs).
pub const MSR_GS_BASE: u32 = 0xc000_0101;

macro_rules! cr_accessors {
    ($read:ident, $write:ident, $reg:literal) => {
        /// Reads the control register.
        pub fn $read() -> u64 {
            let v: u64;
            // SAFETY: reading a control register has no side effects.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) }
            v
        }

        /// Writes the control register.
        ///
        /// # Safety
        /// The new value must keep the kernel's own code, stack and data
        /// mapped and executable as before.
        pub unsafe fn $write(v: u64) {
            // SAFETY: the caller keeps the machine state consistent.
            unsafe { asm!(concat!("mov ", $reg, ", {}"), in(reg) v, options(nostack, preserves_flags)) }
        }
    };
}

cr_accessors!(read_cr0, write_cr0, "cr0");
cr_accessors!(read_cr3, write_cr3_raw, "cr3");
cr_accessors!(read_cr4, write_cr4_raw, "cr4");

/// Loads CR3 (switching address space, or flushing this CPU's non-global
/// translations): records the root for TLB shootdowns (arch/tlb.rs) and
/// the load for the stale-TLB detector (mm/tlbtrace.rs).
///
/// # Safety
/// The new root must keep the kernel's own code, stack and data mapped
/// and executable as before.
pub unsafe fn write_cr3(v: u64) {
    super::tlb::note_cr3(v);
    // Recorded where the shootdowns start to see the new root (not after
    // the write): a CPU leaving a root stops getting its flushes at
    // note_cr3, and under an emulated MMU the write itself can take long
    // enough for another CPU to change, flush and free meanwhile; the
    // leaving CPU uses no user translation of the old root in between.
    crate::mm::tlbtrace::cr3_load(v);
    // SAFETY: the caller vouches for the root.
    unsafe { write_cr3_raw(v) };
}

/// Writes CR4; toggling PGE flushes every TLB entry, global ones too
/// (recorded for the stale-TLB detector).
///
/// # Safety
/// As [`write_cr3_raw`]: the machine state must stay consistent.
pub unsafe fn write_cr4(v: u64) {
    let pge_toggled = (read_cr4() ^ v) & CR4_PGE != 0;
    // SAFETY: the caller vouches for the value.
    unsafe { write_cr4_raw(v) };
    if pge_toggled {
        crate::mm::tlbtrace::flush_all();
    }
}

/// CR2: the linear address of the last page fault.
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Reads an MSR.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only architectural MSRs the kernel knows exist are read.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (hi as u64) << 32 | lo as u64
}

/// Writes an MSR.
///
/// # Safety
/// The value must be valid for the MSR and keep the machine consistent.
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack, preserves_flags))
    }
}

/// Drops this CPU's TLB entry for one page (the instruction only).
pub fn invlpg_local(va: u64) {
    // SAFETY: invalidating a TLB entry never breaks memory safety: the next
    // access walks the (current) tables again.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
    crate::mm::tlbtrace::invlpg(va);
}

/// Flushes this CPU's non-global TLB entries by reloading CR3.
pub fn flush_tlb_local() {
    // SAFETY: rewriting CR3 with its own value changes no mapping.
    unsafe { write_cr3(read_cr3()) }
}

/// Flushes this CPU's TLB, global entries included (toggling CR4.PGE).
pub fn flush_tlb_global() {
    let cr4 = read_cr4();
    if cr4 & CR4_PGE == 0 {
        flush_tlb_local();
        return;
    }
    // SAFETY: clearing and restoring PGE only flushes the TLB.
    unsafe {
        write_cr4(cr4 & !CR4_PGE);
        write_cr4(cr4);
    }
}

/// Drops the translation of one page of the running address space on
/// every CPU that may cache it (a shootdown when other CPUs run it).
pub fn invlpg(va: u64) {
    super::tlb::flush_range(super::tlb::current_root(), va, va + 4096);
}

/// CPUID.1:EDX.PGE.
pub fn has_pge() -> bool {
    core::arch::x86_64::__cpuid(1).edx & (1 << 13) != 0
}

/// CPUID.(EAX=7,ECX=0):EBX.SMEP.
pub fn has_smep() -> bool {
    core::arch::x86_64::__cpuid(0).eax >= 7 && core::arch::x86_64::__cpuid_count(7, 0).ebx & (1 << 7) != 0
}

/// The CPU's TLB as mm-core's flush target: a mapping change's flush token
/// is spent on it.
pub struct Invlpg;

impl mm_core::paging::TlbFlusher for Invlpg {
    fn flush_page(&mut self, va: mm_core::addr::VirtAddr) {
        invlpg(va.0);
    }

    /// Global entries too (the token's flush past the ceiling covers
    /// kernel mappings as well): a CR3 reload would keep them.
    fn flush_all(&mut self) {
        super::tlb::flush_range(super::tlb::KERNEL, 0, super::tlb::ALL);
    }
}
