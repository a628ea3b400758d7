//! Firmware boot: the ROM built from firmware/ is mapped at the top of the
//! 32-bit address space, the vCPU is left in its reset state (real mode,
//! CS.base 0xffff0000, IP 0xfff0) and the firmware does the rest. The VMM
//! only leaves a handoff block saying where the kernel's entry is.

use super::{write_bytes, write_obj, BootError};
use crate::layout;
use mm_core::abi::boot::{HANDOFF_ENTRY, HANDOFF_START_INFO, RESET_VECTOR};
use object::read::elf::ProgramHeader;
use vm_memory::GuestMemoryMmap;

/// Copies the firmware ELF's loadable segments into the ROM region.
pub fn load_rom(mem: &GuestMemoryMmap, elf: &[u8]) -> Result<(), BootError> {
    let file = object::read::elf::ElfFile64::<object::Endianness>::parse(elf)
        .map_err(|e| BootError::Firmware(format!("not an ELF64 file: {e}")))?;
    let endian = file.endian();
    let rom = layout::FIRMWARE_BASE..layout::FIRMWARE_BASE + layout::FIRMWARE_SIZE;
    let mut has_reset_vector = false;
    for ph in file.elf_program_headers() {
        if ph.p_type(endian) != object::elf::PT_LOAD {
            continue;
        }
        let start = ph.p_paddr(endian);
        let end = start + ph.p_memsz(endian);
        if start < rom.start || end > rom.end {
            return Err(BootError::Firmware(format!(
                "segment {start:#x}-{end:#x} lies outside the ROM {:#x}-{:#x}",
                rom.start, rom.end
            )));
        }
        let data =
            ph.data(endian, elf).map_err(|_| BootError::Firmware("a segment's data lies outside the file".into()))?;
        write_bytes(mem, start, data)?;
        has_reset_vector |= start <= RESET_VECTOR && end >= rom.end;
    }
    if !has_reset_vector {
        return Err(BootError::Firmware(format!("nothing at the reset vector {RESET_VECTOR:#x}")));
    }
    Ok(())
}

/// Leaves the firmware the kernel's 64-bit entry and the start_info address.
pub fn write_handoff(mem: &GuestMemoryMmap, kernel_entry: u64) -> Result<(), BootError> {
    write_obj(mem, layout::HANDOFF, layout::HANDOFF_MAGIC)?;
    write_obj(mem, layout::HANDOFF + HANDOFF_ENTRY, kernel_entry)?;
    write_obj(mem, layout::HANDOFF + HANDOFF_START_INFO, layout::START_INFO)
}
