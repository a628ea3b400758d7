//! Getting the vCPU to the kernel: the boot information every path shares
//! (PVH `hvm_start_info`, E820 map, command line), and the two ways in.
//!
//! * `direct` ([`direct`]): the VMM writes boot page tables and a GDT and
//!   puts the vCPU straight into long mode at the ELF entry, as Firecracker
//!   does;
//! * `firmware` ([`firmware`]): the vCPU starts at the reset vector in real
//!   mode and our firmware walks to long mode itself.

pub mod acpi;
pub mod direct;
pub mod firmware;
pub mod initrd;
pub mod kernel;

use crate::layout::{self, E820Entry};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use mm_core::abi::boot::{HvmMemmapEntry, HvmStartInfo, XEN_HVM_START_MAGIC, XEN_HVM_START_VERSION};
use mm_core::abi::layout::KERNEL_MAP;
use mm_core::paging::PteFlags;

// linux-loader's bindings and mm-core's ABI describe the same structures.
const _: () = assert!(std::mem::size_of::<hvm_start_info>() == std::mem::size_of::<HvmStartInfo>());
const _: () = assert!(std::mem::size_of::<hvm_memmap_table_entry>() == std::mem::size_of::<HvmMemmapEntry>());
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// How the vCPU reaches the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BootMode {
    /// The VMM builds long mode and enters the kernel's 64-bit ELF entry.
    Direct,
    /// Real-mode firmware at the reset vector does it, as on a PC.
    Firmware,
}

/// Errors preparing the boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Command line too long.
    #[error("the kernel command line is {len} bytes; at most {max} fit", max = layout::CMDLINE_MAX - 1)]
    CmdlineTooLong {
        /// Its length.
        len: usize,
    },
    /// Command line with a NUL.
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    /// Too many E820 entries.
    #[error("the memory map has {0} entries, more than the boot area holds")]
    MemmapTooLong(usize),
    /// Writing boot data failed.
    #[error("writing boot data at guest-physical {addr:#x} failed (is the guest's RAM large enough?)")]
    Write {
        /// Where.
        addr: u64,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The initial RAM disk.
    #[error(transparent)]
    Initrd(#[from] initrd::InitrdError),
    /// The ACPI tables do not fit their area.
    #[error("the ACPI tables take {0} bytes, more than their area holds; this is a VMM bug")]
    AcpiTooBig(usize),
    /// The firmware image is unusable.
    #[error("the firmware image is unusable: {0}")]
    Firmware(String),
}

/// Writes a value into guest memory, mapping the error.
pub(crate) fn write_obj<T: vm_memory::ByteValued>(mem: &GuestMemoryMmap, addr: u64, v: T) -> Result<(), BootError> {
    mem.write_obj(v, GuestAddress(addr)).map_err(|source| BootError::Write { addr, source })
}

/// Writes bytes into guest memory, mapping the error.
pub(crate) fn write_bytes(mem: &GuestMemoryMmap, addr: u64, b: &[u8]) -> Result<(), BootError> {
    mem.write_slice(b, GuestAddress(addr)).map_err(|source| BootError::Write { addr, source })
}

/// Writes the PVH `hvm_start_info`, its memory map and the command line;
/// `rsdp` is the ACPI RSDP's address (0: none).
pub fn write_start_info(mem: &GuestMemoryMmap, e820: &[E820Entry], cmdline: &str, rsdp: u64) -> Result<(), BootError> {
    if cmdline.len() >= layout::CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong { len: cmdline.len() });
    }
    if cmdline.contains('\0') {
        return Err(BootError::CmdlineNul);
    }
    if e820.len() > layout::MEMMAP_MAX_ENTRIES {
        return Err(BootError::MemmapTooLong(e820.len()));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    write_bytes(mem, layout::CMDLINE, &bytes)?;
    for (i, e) in e820.iter().enumerate() {
        let entry = hvm_memmap_table_entry { addr: e.addr, size: e.size, type_: e.kind, reserved: 0 };
        write_obj(mem, layout::MEMMAP + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64, entry)?;
    }
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: XEN_HVM_START_VERSION,
        cmdline_paddr: layout::CMDLINE,
        rsdp_paddr: rsdp,
        memmap_paddr: layout::MEMMAP,
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    write_obj(mem, layout::START_INFO, info)
}

/// Writes the boot page tables: the first GiB identity-mapped and mapped
/// again at -2 GiB (where the kernel is linked), with 2 MiB pages.
pub fn write_boot_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    const P_RW: u64 = PteFlags::PRESENT.0 | PteFlags::RW.0;
    const PS: u64 = PteFlags::PSE.0;
    // Table slots of the kernel map: the PML4 entry and the PDPT entry of
    // KERNEL_MAP (511 and 510: -2 GiB).
    let slot = |shift: u32| ((KERNEL_MAP >> shift) & 511) * 8;
    for i in 0..(layout::BOOT_MAPPED >> 21) {
        write_obj(mem, layout::BOOT_PD + i * 8, (i << 21) | P_RW | PS)?;
    }
    write_obj(mem, layout::BOOT_PDPT_LOW, layout::BOOT_PD | P_RW)?;
    write_obj(mem, layout::BOOT_PDPT_HIGH + slot(30), layout::BOOT_PD | P_RW)?;
    write_obj(mem, layout::BOOT_PML4, layout::BOOT_PDPT_LOW | P_RW)?;
    write_obj(mem, layout::BOOT_PML4 + slot(39), layout::BOOT_PDPT_HIGH | P_RW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
    }

    #[test]
    fn start_info_round_trips() {
        let m = mem();
        let map = layout::e820_map(256 << 20, false);
        write_start_info(&m, &map, "selftest exit=3", 0xe_0000).unwrap();
        let info: hvm_start_info = m.read_obj(GuestAddress(layout::START_INFO)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.rsdp_paddr, 0xe_0000);
        assert_eq!(info.memmap_entries as usize, map.len());
        let e: hvm_memmap_table_entry = m.read_obj(GuestAddress(layout::MEMMAP + 24)).unwrap();
        assert_eq!((e.addr, e.size, e.type_), (map[1].addr, map[1].size, map[1].kind));
        let mut s = [0u8; 16];
        m.read_slice(&mut s, GuestAddress(layout::CMDLINE)).unwrap();
        assert_eq!(&s, b"selftest exit=3\0");
    }

    #[test]
    fn long_or_nul_command_lines_are_refused() {
        let m = mem();
        let map = layout::e820_map(256 << 20, false);
        assert!(matches!(write_start_info(&m, &map, &"x".repeat(5000), 0), Err(BootError::CmdlineTooLong { .. })));
        assert!(matches!(write_start_info(&m, &map, "a\0b", 0), Err(BootError::CmdlineNul)));
    }
}
