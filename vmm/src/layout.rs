//! The guest-physical memory map the VMM builds, and the E820 table that
//! describes it to the guest.
//!
//! ```text
//! 0x0000_1000  GDT for the direct boot path
//! 0x0000_5000  firmware handoff block (magic, kernel entry, start_info)
//! 0x0000_5800  PVH module list (the initrd's entry)
//! 0x0000_6000  PVH hvm_start_info; its memory map at 0x6100
//! 0x0000_7000  kernel command line (up to 4 KiB with the NUL)
//! 0x0000_9000  boot page tables: PML4, PDPT (low), PDPT (-2 GiB), PD
//! 0x000e_0000  ACPI tables: RSDP, XSDT, MADT (E820 "ACPI data")
//! 0x0010_0000  kernel image (the ELF's physical addresses, 2 MiB upwards)
//! ...          the initrd, from the next 2 MiB boundary after the kernel
//! ...          RAM up to min(size, 3 GiB)
//! 0xc000_0000  hole (where PCI devices would live on a PC)
//! 0xffff_0000  firmware ROM, 64 KiB, ending at the reset vector
//! 1 << 32      the rest of RAM, if the guest has more than 3 GiB
//! ```
//!
//! What the firmware and the kernel also rely on (the hand-off block, the
//! boot page tables, the ROM, E820 kinds) is mm-core's ABI, re-exported
//! here; the rest is this VMM's own choice.

pub use mm_core::abi::boot::{
    BOOT_GDT, BOOT_MAPPED, BOOT_PD, BOOT_PDPT_HIGH, BOOT_PDPT_LOW, BOOT_PML4, CMDLINE_MAX, E820_ACPI, E820_RAM,
    E820_RESERVED, FIRMWARE_BASE, FIRMWARE_SIZE, HANDOFF, HANDOFF_MAGIC,
};
use vm_memory::GuestAddress;

/// One KiB, MiB and GiB.
pub const KIB: u64 = 1 << 10;
/// One MiB.
pub const MIB: u64 = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;

/// PVH module list (one `hvm_modlist_entry`: the initrd).
pub const MODLIST: u64 = 0x5800;
/// PVH `hvm_start_info`.
pub const START_INFO: u64 = 0x6000;
/// PVH memory map table.
pub const MEMMAP: u64 = 0x6100;
/// Room for memory-map entries before the command line.
pub const MEMMAP_MAX_ENTRIES: usize = ((CMDLINE - MEMMAP) / 24) as usize;
/// Kernel command line.
pub const CMDLINE: u64 = 0x7000;
/// Lowest physical address a kernel segment may use.
pub const KERNEL_MIN: u64 = MIB;
/// Low RAM stops here at most; the rest goes above 4 GiB.
pub const LOW_RAM_MAX: u64 = 3 * GIB;
/// Where high RAM starts.
pub const HIGH_RAM_START: u64 = 4 * GIB;
/// Three pages Intel's KVM needs for real mode (KVM_SET_TSS_ADDR), below
/// the ROM.
pub const KVM_TSS: u64 = 0xfffb_d000;
/// Smallest RAM the VMM accepts.
pub const MIN_RAM: u64 = 4 * MIB;

/// One E820-style entry, as the PVH memory map carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// E820 type.
    pub kind: u32,
}

/// The RAM ranges backing `ram` bytes of guest memory.
pub fn ram_ranges(ram: u64) -> Vec<(GuestAddress, u64)> {
    let low = ram.min(LOW_RAM_MAX);
    let mut v = vec![(GuestAddress(0), low)];
    if ram > low {
        v.push((GuestAddress(HIGH_RAM_START), ram - low));
    }
    v
}

/// The highest guest-physical address (exclusive) that `ram` bytes need.
pub fn top_of_ram(ram: u64) -> u64 {
    match ram_ranges(ram).last() {
        Some((base, size)) => base.0 + size,
        None => 0,
    }
}

/// The E820 map for `ram` bytes of RAM, as a PC BIOS would report it: the
/// low 640 KiB, the BIOS area reserved, RAM from 1 MiB, the ROM reserved,
/// RAM above 4 GiB.
pub fn e820_map(ram: u64, with_firmware: bool) -> Vec<E820Entry> {
    let low = ram.min(LOW_RAM_MAX);
    let mut v = vec![
        E820Entry { addr: 0, size: 0x9_fc00, kind: E820_RAM },
        E820Entry { addr: 0x9_fc00, size: 0x400, kind: E820_RESERVED },
        E820Entry { addr: 0xf_0000, size: 0x1_0000, kind: E820_RESERVED },
    ];
    if low > MIB {
        v.push(E820Entry { addr: MIB, size: low - MIB, kind: E820_RAM });
    }
    if with_firmware {
        v.push(E820Entry { addr: FIRMWARE_BASE, size: FIRMWARE_SIZE, kind: E820_RESERVED });
    }
    if ram > low {
        v.push(E820Entry { addr: HIGH_RAM_START, size: ram - low, kind: E820_RAM });
    }
    v
}

/// Adds `e` to `map`, kept in address order (the entries must not
/// overlap: the caller places `e` in a gap).
pub fn e820_insert(map: &mut Vec<E820Entry>, e: E820Entry) {
    let at = map.iter().position(|x| x.addr > e.addr).unwrap_or(map.len());
    map.insert(at, e);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_range_and_no_high_ram() {
        assert_eq!(ram_ranges(256 * MIB), vec![(GuestAddress(0), 256 * MIB)]);
        let map = e820_map(256 * MIB, false);
        assert_eq!(map.iter().filter(|e| e.kind == E820_RAM).map(|e| e.size).sum::<u64>(), 0x9_fc00 + 255 * MIB);
    }

    #[test]
    fn big_guest_splits_around_the_hole() {
        let r = ram_ranges(16 * GIB);
        assert_eq!(r, vec![(GuestAddress(0), 3 * GIB), (GuestAddress(4 * GIB), 13 * GIB)]);
        assert_eq!(top_of_ram(16 * GIB), 17 * GIB);
        let map = e820_map(16 * GIB, true);
        assert!(map.iter().any(|e| e.addr == 4 * GIB && e.size == 13 * GIB && e.kind == E820_RAM));
        // Entries never overlap.
        let mut sorted = map.clone();
        sorted.sort_by_key(|e| e.addr);
        for w in sorted.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr);
        }
    }

    #[test]
    fn acpi_entry_goes_in_its_gap() {
        let mut map = e820_map(256 * MIB, false);
        e820_insert(&mut map, E820Entry { addr: 0xe_0000, size: 0x100, kind: E820_ACPI });
        for w in map.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr, "{map:?}");
        }
        assert_eq!(map.iter().filter(|e| e.kind == E820_ACPI).count(), 1);
    }

    #[test]
    fn memmap_fits_before_the_command_line() {
        const { assert!(MEMMAP_MAX_ENTRIES >= 8) };
    }
}
