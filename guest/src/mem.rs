//! The kernel's view of physical memory while it runs on the boot tables.

/// Where the boot page tables map physical 0 (the kernel map, -2 GiB);
/// covers the first GiB of RAM.
pub const KERNEL_MAP_BASE: u64 = 0xffff_ffff_8000_0000;

/// A pointer to physical address `pa` (below 1 GiB) through the kernel map.
pub fn phys_to_virt(pa: u64) -> u64 {
    KERNEL_MAP_BASE + pa
}
