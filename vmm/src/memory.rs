//! Guest RAM: parsing the size a user asks for, checking it against the
//! host, reserving it (vm-memory, lazily backed) and registering it with
//! KVM as memslots.

use crate::layout::{self, GIB, KIB, MIB};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use std::sync::Arc;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Guest memory shared by the vCPU thread and host-side inspection.
pub type GuestMem = Arc<GuestMemoryMmap>;

/// Errors about guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size did not parse.
    #[error("'{0}' is not a memory size: write a number with an optional K, M, G or T suffix (binary units), e.g. 256M or 4G")]
    BadSize(String),
    /// Below the minimum.
    #[error("{0} of RAM is too small: the guest needs at least {min} MiB", min = layout::MIN_RAM / MIB)]
    TooSmall(String),
    /// More than the host's physical address width allows.
    #[error("{size} of RAM needs guest-physical addresses up to {top:#x}, beyond what this host's CPU can address ({bits}-bit physical addresses, so at most {max}); ask for less with --mem")]
    BeyondHostAddressWidth {
        /// Requested size, as the user wrote it.
        size: String,
        /// Top guest-physical address needed.
        top: u64,
        /// Host physical address bits.
        bits: u32,
        /// Human form of the limit.
        max: String,
    },
    /// The host refused to reserve the address space.
    #[error("the host refused to reserve {size} of address space for guest RAM (try a smaller --mem, or check `ulimit -v` and vm.overcommit_memory)")]
    Reserve {
        /// Requested size.
        size: String,
        /// What vm-memory said.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// KVM refused a memslot.
    #[error("KVM refused memory slot {slot} ({size} at guest-physical {base:#x}); ask for less with --mem")]
    Memslot {
        /// Slot number.
        slot: u32,
        /// Base address.
        base: u64,
        /// Human size.
        size: String,
        /// The ioctl error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Parses "256M", "4G", "1536MiB", "65536" (bytes) into bytes.
pub fn parse_size(s: &str) -> Result<u64, MemoryError> {
    let bad = || MemoryError::BadSize(s.to_string());
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => KIB,
                'M' => MIB,
                'G' => GIB,
                'T' => 1 << 40,
                'P' => 1 << 50,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    n.checked_mul(mult).filter(|&v| v > 0).ok_or_else(bad)
}

/// A size in the largest binary unit that divides it ("256 MiB").
pub fn human(bytes: u64) -> String {
    for (unit, name) in [(1u64 << 50, "PiB"), (1 << 40, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

/// The host CPU's physical address width (CPUID 0x80000008), which bounds
/// guest-physical addresses under hardware virtualisation.
pub fn host_phys_bits() -> u32 {
    let max_ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max_ext < 0x8000_0008 {
        return 36;
    }
    let bits = std::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff;
    bits.clamp(32, 52)
}

/// Checks a requested RAM size against the minimum and the host's limits.
pub fn check_size(ram: u64) -> Result<(), MemoryError> {
    if ram < layout::MIN_RAM {
        return Err(MemoryError::TooSmall(human(ram)));
    }
    let bits = host_phys_bits();
    let top = layout::top_of_ram(ram);
    if bits < 64 && top > 1u64 << bits {
        return Err(MemoryError::BeyondHostAddressWidth { size: human(ram), top, bits, max: human(1u64 << bits) });
    }
    Ok(())
}

/// Reserves guest RAM (plus the firmware ROM region when asked) without
/// touching it: the host backs pages only when the guest uses them.
pub fn create(ram: u64, with_firmware: bool) -> Result<GuestMem, MemoryError> {
    check_size(ram)?;
    let mut ranges: Vec<(GuestAddress, usize)> =
        layout::ram_ranges(ram).into_iter().map(|(a, s)| (a, s as usize)).collect();
    if with_firmware {
        ranges.push((GuestAddress(layout::FIRMWARE_BASE), layout::FIRMWARE_SIZE as usize));
    }
    let mem =
        GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Reserve { size: human(ram), source })?;
    Ok(Arc::new(mem))
}

/// Registers every region of `mem` with KVM, one memslot each.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    register_with_dirty_log(vm, mem, false)
}

/// [`register`], with KVM's dirty logging (`KVM_MEM_LOG_DIRTY_PAGES`) on
/// every slot when `dirty_log` is set (the `dirty` inspection view).
pub fn register_with_dirty_log(vm: &VmFd, mem: &GuestMemoryMmap, dirty_log: bool) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let host =
            mem.get_host_address(region.start_addr()).expect("a region's own start address is inside guest memory");
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: if dirty_log { kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the host range belongs to `mem`, which outlives the VM
        // (both are owned by `Vm`, the memory dropped after the VM fd), and
        // the slots do not overlap (distinct regions of one GuestMemoryMmap).
        unsafe { vm.set_user_memory_region(r) }.map_err(|source| MemoryError::Memslot {
            slot: slot as u32,
            base: r.guest_phys_addr,
            size: human(r.memory_size),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("256M").unwrap(), 256 * MIB);
        assert_eq!(parse_size("4G").unwrap(), 4 * GIB);
        assert_eq!(parse_size("1536MiB").unwrap(), 1536 * MIB);
        assert_eq!(parse_size("64k").unwrap(), 64 * KIB);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "M", "12X", "-1G", "1.5G", "0", "99999999999999999999T", "16EiB"] {
            assert!(parse_size(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn limits_are_checked() {
        assert!(matches!(check_size(MIB), Err(MemoryError::TooSmall(_))));
        assert!(matches!(check_size(1 << 60), Err(MemoryError::BeyondHostAddressWidth { .. })));
        assert!(check_size(256 * MIB).is_ok());
        assert_eq!(human(3 * GIB), "3 GiB");
        assert_eq!(human(1536 * MIB), "1536 MiB");
    }
}
