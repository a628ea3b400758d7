//! The ACPI tables the guest learns its CPUs from (as Linux does): an
//! RSDP (revision 2), an XSDT and a MADT with one Processor Local APIC per
//! vCPU and KVM's in-kernel I/O APIC, built with rust-vmm's `acpi_tables`
//! and written at [`ACPI_TABLES`]. No FADT: the guest reads only the MADT
//! (and has no ACPI power management to describe).

use super::{write_bytes, BootError};
use acpi_tables::madt::{EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT};
use acpi_tables::{rsdp::Rsdp, xsdt::XSDT, Aml};
pub use mm_core::abi::boot::{ACPI_TABLES, ACPI_TABLES_MAX};
use vm_memory::GuestMemoryMmap;

/// The local APICs' physical address (every vCPU's, KVM's default).
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// The I/O APIC's ID in the MADT (QEMU's choice for KVM's in-kernel one).
pub const IOAPIC_ID: u8 = 0;
/// OEM ID in every table.
const OEM_ID: [u8; 6] = *b"MMEMU ";
/// OEM table ID in every table.
const OEM_TABLE_ID: [u8; 8] = *b"MMEMUVMM";
/// Where the XSDT goes, after the RSDP (16-byte aligned as tables prefer).
const XSDT_OFFSET: u64 = 0x40;

/// The tables' bytes for `cpus` vCPUs (APIC ID = vCPU index), to be
/// written at `base`: RSDP, then XSDT, then MADT.
pub fn build(base: u64, cpus: u8) -> Vec<u8> {
    let mut madt = MADT::new(OEM_ID, OEM_TABLE_ID, 1, LocalInterruptController::Address(LAPIC_ADDR));
    for id in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(IOAPIC_ID, mm_core::abi::ioapic::BASE as u32, 0));
    let mut madt_bytes = Vec::new();
    madt.to_aml_bytes(&mut madt_bytes);

    // The XSDT's one entry: the MADT, right after the XSDT (36 + 8 bytes),
    // rounded up to 16.
    let madt_offset = XSDT_OFFSET + 0x40;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, 1);
    xsdt.add_entry(base + madt_offset);
    let mut xsdt_bytes = Vec::new();
    xsdt.to_aml_bytes(&mut xsdt_bytes);

    let mut out = Vec::new();
    Rsdp::new(OEM_ID, base + XSDT_OFFSET).to_aml_bytes(&mut out);
    out.resize(XSDT_OFFSET as usize, 0);
    out.extend_from_slice(&xsdt_bytes);
    out.resize(madt_offset as usize, 0);
    out.extend_from_slice(&madt_bytes);
    out
}

/// Writes the tables for `cpus` vCPUs at [`ACPI_TABLES`]; returns their
/// length (for the memory map).
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<u64, BootError> {
    let bytes = build(ACPI_TABLES, cpus);
    // 8 vCPUs take well under a page; the bound keeps the tables out of
    // the BIOS area whatever changes.
    if bytes.len() as u64 > ACPI_TABLES_MAX {
        return Err(BootError::AcpiTooBig(bytes.len()));
    }
    write_bytes(mem, ACPI_TABLES, &bytes)?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse_back() {
        for n in 1..=8u8 {
            let bytes = build(ACPI_TABLES, n);
            let t = mm_core::acpi::read_madt(ACPI_TABLES, &mut |pa, buf| {
                let Some(off) = pa.checked_sub(ACPI_TABLES) else { return false };
                match bytes.get(off as usize..off as usize + buf.len()) {
                    Some(s) => {
                        buf.copy_from_slice(s);
                        true
                    }
                    None => false,
                }
            })
            .unwrap();
            assert_eq!(t.ids(), (0..u32::from(n)).collect::<Vec<_>>());
            assert_eq!(t.lapic_addr, u64::from(LAPIC_ADDR));
            assert_eq!(t.ioapic, Some((IOAPIC_ID, 0xfec0_0000, 0)));
        }
    }
}
