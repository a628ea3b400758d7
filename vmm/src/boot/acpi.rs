//! The ACPI tables the guest learns its CPUs from (as Linux does): an
//! RSDP (revision 2), an XSDT and a MADT with one Processor Local APIC per
//! vCPU and KVM's in-kernel I/O APIC, built with rust-vmm's `acpi_tables`
//! and written at [`ACPI_TABLES`]; with `--numa`, an SRAT (which memory
//! and which CPUs each node holds) and a SLIT (the distances) too. No FADT: the guest reads only the MADT
//! (and has no ACPI power management to describe).

use super::{write_bytes, BootError};
use crate::numa::Topology;
use acpi_tables::madt::{EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT};
use acpi_tables::slit::SLIT;
use acpi_tables::srat::{MemoryAffinity, SRAT};
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

/// Appends `table` at the next 16-byte boundary of `out`; returns where
/// it starts, relative to `out`.
fn place(out: &mut Vec<u8>, table: &[u8]) -> u64 {
    out.resize(out.len().next_multiple_of(16), 0);
    let at = out.len() as u64;
    out.extend_from_slice(table);
    at
}

/// The SRAT for `numa`: one Memory Affinity structure per node range
/// (built by `acpi_tables`) and one Processor Local APIC Affinity
/// structure per vCPU. `acpi_tables` 0.2 builds no APIC affinity
/// structures (it knows RISC-V's RINTC only), so they are appended to its
/// bytes here and the length and checksum fixed up after.
fn srat(numa: &Topology) -> Vec<u8> {
    let mut srat = SRAT::new(OEM_ID, OEM_TABLE_ID, 1);
    for (node, n) in numa.nodes.iter().enumerate() {
        for &(start, end) in &n.ranges {
            srat.add_memory_affinity(MemoryAffinity::new(node as u32, start, end - start).enabled());
        }
    }
    let mut bytes = Vec::new();
    srat.to_aml_bytes(&mut bytes);
    for (node, n) in numa.nodes.iter().enumerate() {
        for &cpu in &n.cpus {
            // Processor Local APIC/SAPIC Affinity (ACPI 6.5, 5.2.16.1):
            // type 0, length 16, proximity domain bits 7:0, APIC ID,
            // flags (1: enabled), local SAPIC EID, proximity domain bits
            // 31:8, clock domain.
            let pxm = (node as u32).to_le_bytes();
            bytes.extend_from_slice(&[0, 16, pxm[0], cpu, 1, 0, 0, 0, 0, pxm[1], pxm[2], pxm[3], 0, 0, 0, 0]);
        }
    }
    let len = bytes.len() as u32;
    bytes[4..8].copy_from_slice(&len.to_le_bytes());
    bytes[9] = 0;
    bytes[9] = 0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)));
    bytes
}

/// The SLIT for `numa`: its distance matrix (symmetric: `acpi_tables`
/// sets both directions at once, and `--numa` refuses asymmetric ones).
fn slit(numa: &Topology) -> Vec<u8> {
    let n = numa.nodes.len();
    let mut slit = SLIT::new(OEM_ID, OEM_TABLE_ID, 1, n as u32);
    for a in 0..n {
        for b in a..n {
            slit.set_distance(a, b, numa.distance[a][b]);
        }
    }
    let mut bytes = Vec::new();
    slit.to_aml_bytes(&mut bytes);
    bytes
}

/// The tables' bytes for `cpus` vCPUs (APIC ID = vCPU index), to be
/// written at `base`: RSDP, then XSDT, then MADT, and with `numa` an SRAT
/// and a SLIT after it.
pub fn build(base: u64, cpus: u8, numa: Option<&Topology>) -> Vec<u8> {
    let mut madt = MADT::new(OEM_ID, OEM_TABLE_ID, 1, LocalInterruptController::Address(LAPIC_ADDR));
    for id in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(IOAPIC_ID, mm_core::abi::ioapic::BASE as u32, 0));
    let mut madt_bytes = Vec::new();
    madt.to_aml_bytes(&mut madt_bytes);
    let mut tables = vec![madt_bytes];
    if let Some(numa) = numa {
        tables.push(srat(numa));
        tables.push(slit(numa));
    }

    // The tables after the XSDT (36 bytes + 8 per entry), each on a
    // 16-byte boundary.
    let xsdt_len = 36 + 8 * tables.len();
    let mut body = vec![0u8; (XSDT_OFFSET as usize + xsdt_len).next_multiple_of(16)];
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, 1);
    for t in &tables {
        xsdt.add_entry(base + place(&mut body, t));
    }
    let mut xsdt_bytes = Vec::new();
    xsdt.to_aml_bytes(&mut xsdt_bytes);

    let mut rsdp = Vec::new();
    Rsdp::new(OEM_ID, base + XSDT_OFFSET).to_aml_bytes(&mut rsdp);
    body[..rsdp.len()].copy_from_slice(&rsdp);
    body[XSDT_OFFSET as usize..XSDT_OFFSET as usize + xsdt_bytes.len()].copy_from_slice(&xsdt_bytes);
    body
}

/// Writes the tables for `cpus` vCPUs (and `numa`'s nodes) at
/// [`ACPI_TABLES`]; returns their length (for the memory map).
pub fn write(mem: &GuestMemoryMmap, cpus: u8, numa: Option<&Topology>) -> Result<u64, BootError> {
    let bytes = build(ACPI_TABLES, cpus, numa);
    // 8 vCPUs and 8 nodes take well under a page; the bound keeps the
    // tables out of the BIOS area whatever changes.
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
            let bytes = build(ACPI_TABLES, n, None);
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

    fn reader(bytes: &[u8]) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
        move |pa, buf| {
            let Some(off) = pa.checked_sub(ACPI_TABLES) else { return false };
            match bytes.get(off as usize..off as usize + buf.len()) {
                Some(s) => {
                    buf.copy_from_slice(s);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn numa_tables_parse_back() {
        use crate::layout::{GIB, MIB};
        let topo = crate::numa::parse("0=2G,1=1G,2=1G,cpus=0-1:2:,distance=10:20:30:20:10:25:30:25:10")
            .unwrap()
            .resolve(4 * GIB, 3)
            .unwrap();
        let bytes = build(ACPI_TABLES, 3, Some(&topo));
        // The MADT still reads as before.
        let t = mm_core::acpi::read_madt(ACPI_TABLES, &mut reader(&bytes)).unwrap();
        assert_eq!(t.ids(), &[0, 1, 2]);
        let n = mm_core::numa::read_numa(ACPI_TABLES, &mut reader(&bytes)).unwrap().unwrap();
        assert_eq!(n.nr_nodes, 3);
        assert!(n.slit_used);
        let ranges: Vec<_> = n.mem_ranges().iter().map(|r| (r.node, r.base, r.end())).collect();
        // Node 2 spans the PCI hole: two ranges.
        assert_eq!(ranges, vec![(0, 0, 2 * GIB), (1, 2 * GIB, 3 * GIB), (2, 4 * GIB, 5 * GIB)], "{ranges:x?}");
        assert_eq!(n.cpu_nodes(), &[(0, 0), (1, 0), (2, 1)]);
        for a in 0..3 {
            for b in 0..3 {
                assert_eq!(n.distance(a, b), topo.distance[a][b]);
            }
        }
        assert_eq!(n.node_bytes(0), 2 * GIB);
        // Eight nodes over eight CPUs fit the reserved area.
        let topo = crate::numa::parse("8").unwrap().resolve(256 * MIB, 8).unwrap();
        assert!((build(ACPI_TABLES, 8, Some(&topo)).len() as u64) < ACPI_TABLES_MAX);
    }
}
