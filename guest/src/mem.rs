//! The kernel's view of physical memory while it runs on the boot tables.

use mm_core::abi::layout::KERNEL_MAP;

/// A pointer to physical address `pa` (below `abi::boot::BOOT_MAPPED`)
/// through the kernel map (-2 GiB), where the boot page tables map
/// physical 0.
pub fn phys_to_virt(pa: u64) -> u64 {
    KERNEL_MAP + pa
}
