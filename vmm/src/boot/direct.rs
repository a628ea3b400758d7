//! Direct boot: the VMM puts the vCPU in 64-bit long mode itself (flat
//! segments, paging on with the boot tables) and starts it at the kernel's
//! ELF entry with `rdi` = hvm_start_info, `rsi` = 'D'.

use super::{write_boot_page_tables, write_obj, BootError};
use crate::layout;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use mm_core::abi::boot::PATH_DIRECT;
use mm_core::abi::cpu::{CR0_ET, CR0_NE, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, RFLAGS_FIXED};
use vm_memory::GuestMemoryMmap;

/// Flat 64-bit code segment descriptor (selector 0x08).
pub const GDT_CODE64: u64 = 0x00af_9a00_0000_ffff;
/// Flat data segment descriptor (selector 0x10).
pub const GDT_DATA: u64 = 0x00cf_9200_0000_ffff;

/// Writes the GDT and boot page tables into guest memory.
pub fn write_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    write_obj(mem, layout::BOOT_GDT, 0u64)?;
    write_obj(mem, layout::BOOT_GDT + 8, GDT_CODE64)?;
    write_obj(mem, layout::BOOT_GDT + 16, GDT_DATA)?;
    write_boot_page_tables(mem)
}

fn segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: if code { 0 } else { 1 },
        s: 1,
        l: if code { 1 } else { 0 },
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Long-mode special registers on top of what KVM reported.
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    sregs.cs = segment(0x08, true);
    let data = segment(0x10, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = layout::BOOT_GDT;
    sregs.gdt.limit = 3 * 8 - 1;
    // No IDT yet: the kernel installs its own; an exception before that
    // triple-faults and the VMM reports it.
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr3 = layout::BOOT_PML4;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// General registers at the kernel entry.
pub fn entry_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rdi: layout::START_INFO,
        rsi: u64::from(PATH_DIRECT),
        rsp: layout::BOOT_PML4, // a scratch stack below the tables until the kernel sets its own
        rflags: RFLAGS_FIXED,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_state_is_consistent() {
        let s = long_mode_sregs(kvm_sregs::default());
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.cs.db, 0, "a 64-bit code segment must have D=0");
        assert_ne!(s.efer & EFER_LMA, 0);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_ne!(s.cr0 & CR0_PG, 0);
        let r = entry_regs(0xffff_ffff_8020_0000);
        assert_eq!(r.rsi, 0x44);
    }
}
