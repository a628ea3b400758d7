//! The machine interface the guest kernel, the firmware and the VMM share,
//! defined once: the I/O ports of the paravirtual devices, the boot
//! protocol (boot-path codes, the firmware hand-off block, the PVH
//! `hvm_start_info`, E820 kinds), the kernel's virtual memory layout, the
//! architectural control-register and #PF error-code bits, the process
//! states the descriptor reports, and the physical zone bounds.
//!
//! Every other place takes these names: Rust code through `mm_core::abi`,
//! the kernel's and the firmware's assembly as `const` operands of
//! `global_asm!`, the linker scripts through a fragment their build
//! scripts generate from this file. The firmware and the build scripts
//! compile this file on its own (`#[path]`), so it depends on nothing but
//! `core`: no other module of this crate, no allocation.
//!
//! The host learns the kernel's layout from the descriptor the guest
//! publishes (`descriptor::MmDescriptor`), never from [`layout`] directly:
//! [`layout`] is what the guest fills the descriptor with.

/// I/O ports. The paravirtual ones (0x500..0x520) are served by the VMM;
/// on a machine without them (QEMU) writes go nowhere and reads return
/// all ones.
pub mod port {
    /// COM1, a 16550 UART (8 registers from here): the console.
    pub const COM1: u16 = 0x3f8;
    /// Exit: a 32-bit write ends the VM with that status (QEMU's
    /// `isa-debug-exit` at the same port turns it into `(status << 1) | 1`).
    pub const EXIT: u16 = 0xf4;
    /// Symbol lookup (a paravirtual kallsyms): write an address's low 32
    /// bits here, then read `name+0xoff`, NUL-ended, byte by byte.
    pub const SYMBOL: u16 = 0x500;
    /// The address's high 32 bits; the write triggers the lookup.
    pub const SYMBOL_HIGH: u16 = SYMBOL + 4;
    /// Self-test results: one line of text per check, byte by byte.
    pub const RESULTS: u16 = 0x508;
    /// Named checkpoints: the name's bytes, then a NUL, which parks the
    /// vCPU while the host inspects.
    pub const CHECKPOINT: u16 = 0x510;
    /// The memory-manager descriptor's guest-physical address, low 32 bits.
    pub const DESCRIPTOR: u16 = 0x518;
    /// Its high 32 bits.
    pub const DESCRIPTOR_HIGH: u16 = DESCRIPTOR + 4;
    /// User programs' standard output: the bytes of an `out` (a `rep
    /// outsb` hands over up to a page in one exit) go to the VMM's stdout
    /// as they are (no `\r` added, unlike the console). A read returns
    /// [`USER_OUTPUT_PRESENT`], so the kernel can tell our VMM from a
    /// machine without the port (all ones) and fall back to COM1.
    pub const USER_STDOUT: u16 = 0x520;
    /// User programs' standard error, as [`USER_STDOUT`] (to the VMM's stderr).
    pub const USER_STDERR: u16 = 0x521;
    /// What a byte read from [`USER_STDOUT`] returns on our VMM.
    pub const USER_OUTPUT_PRESENT: u8 = 0x55;
}

/// How a kernel is started: what each boot path leaves where.
///
/// All three paths (the VMM's direct boot, our real-mode firmware, a PVH
/// loader such as QEMU) enter the kernel's 64-bit `_start` in long mode
/// with the first GiB of physical memory mapped both at 0 and at
/// [`layout::KERNEL_MAP`], `rdi` = the guest-physical address of an
/// [`HvmStartInfo`](boot::HvmStartInfo) and `rsi` = the boot-path code.
pub mod boot {
    /// Boot-path code in `rsi`: the VMM built long mode itself ('D').
    pub const PATH_DIRECT: u8 = b'D';
    /// Boot-path code: our firmware walked from the reset vector ('F').
    pub const PATH_FIRMWARE: u8 = b'F';
    /// Boot-path code: the kernel's own 32-bit PVH entry ('P').
    pub const PATH_PVH: u8 = b'P';

    /// Where the kernel image is loaded in physical memory (its linker
    /// script's load address; linked at `KERNEL_MAP + KERNEL_PHYS`).
    pub const KERNEL_PHYS: u64 = 0x20_0000;
    /// How much physical memory the boot page tables map (at 0 and at
    /// `KERNEL_MAP`): everything the kernel reads before its own tables
    /// (the image, the start info, the memory map, the command line) must
    /// lie below.
    pub const BOOT_MAPPED: u64 = 1 << 30;

    /// The 4-level boot page tables the VMM (direct boot) and the firmware
    /// build, one page each: PML4.
    pub const BOOT_PML4: u64 = 0x9000;
    /// PDPT of the identity map.
    pub const BOOT_PDPT_LOW: u64 = 0xa000;
    /// PDPT of the -2 GiB kernel map.
    pub const BOOT_PDPT_HIGH: u64 = 0xb000;
    /// The one PD (512 x 2 MiB) both PDPTs point to.
    pub const BOOT_PD: u64 = 0xc000;
    /// The firmware's extra PD mapping its own ROM (the 2 MiB below 4 GiB).
    pub const BOOT_PD_TOP: u64 = 0xd000;
    /// The GDT of the direct boot path (null, code 0x08, data 0x10).
    pub const BOOT_GDT: u64 = 0x1000;
    /// The firmware's stack top (grows down, below the boot tables).
    pub const FIRMWARE_STACK_TOP: u64 = 0x8000;

    /// The firmware hand-off block the VMM writes: `u64` magic, `u64`
    /// kernel entry, `u64` start-info address.
    pub const HANDOFF: u64 = 0x5000;
    /// "MMFW": the hand-off block is valid.
    pub const HANDOFF_MAGIC: u64 = 0x5746_4d4d;
    /// Offset of the kernel's 64-bit entry in the hand-off block.
    pub const HANDOFF_ENTRY: u64 = 8;
    /// Offset of the `hvm_start_info` address in the hand-off block.
    pub const HANDOFF_START_INFO: u64 = 16;

    /// The firmware ROM: 64 KiB ending at 4 GiB.
    pub const FIRMWARE_BASE: u64 = 0xffff_0000;
    /// Size of the firmware ROM.
    pub const FIRMWARE_SIZE: u64 = 64 << 10;
    /// Where every x86 CPU fetches its first instruction.
    pub const RESET_VECTOR: u64 = 0xffff_fff0;

    /// `hvm_start_info.magic` (Xen's `XEN_HVM_START_MAGIC_VALUE`).
    pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
    /// The `hvm_start_info` version this kernel and VMM use.
    pub const XEN_HVM_START_VERSION: u32 = 1;
    /// Xen's ELF note type naming the 32-bit PVH entry
    /// (`XEN_ELFNOTE_PHYS32_ENTRY`).
    pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

    /// The fixed part of Xen's `hvm_start_info` (version 1).
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct HvmStartInfo {
        /// [`XEN_HVM_START_MAGIC`].
        pub magic: u32,
        /// [`XEN_HVM_START_VERSION`].
        pub version: u32,
        /// `SIF_*` flags (none used).
        pub flags: u32,
        /// Modules (none used).
        pub nr_modules: u32,
        /// Module list (0).
        pub modlist_paddr: u64,
        /// The NUL-ended command line, or 0.
        pub cmdline_paddr: u64,
        /// ACPI RSDP (0: none).
        pub rsdp_paddr: u64,
        /// The memory map (`[HvmMemmapEntry; memmap_entries]`).
        pub memmap_paddr: u64,
        /// Entries in the memory map.
        pub memmap_entries: u32,
        /// Must be zero.
        pub reserved: u32,
    }

    /// One module of `HvmStartInfo::modlist_paddr` (Xen's
    /// `hvm_modlist_entry`): the VMM hands the initial RAM disk (a cpio
    /// "newc" archive, `vmm run --initrd`) over as module 0, page-aligned,
    /// in RAM below [`BOOT_MAPPED`] and below [`INITRD_MAX_END`], as QEMU
    /// does for a PVH kernel's `-initrd`.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct HvmModlistEntry {
        /// Guest-physical address of the module's first byte.
        pub paddr: u64,
        /// Its size in bytes.
        pub size: u64,
        /// Its NUL-ended command line, or 0.
        pub cmdline_paddr: u64,
        /// Must be zero.
        pub reserved: u64,
    }

    /// The initrd must end below this: the kernel reads it through the part
    /// of its direct map that exists from boot (RAM above is mapped on
    /// demand, and reserved memory never is).
    pub const INITRD_MAX_END: u64 = 256 << 20;

    /// One E820-style memory-map entry (`hvm_memmap_table_entry`).
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct HvmMemmapEntry {
        /// First physical address.
        pub addr: u64,
        /// Length in bytes.
        pub size: u64,
        /// E820 type (`E820_*`).
        pub kind: u32,
        /// Must be zero.
        pub reserved: u32,
    }

    /// Longest command line the kernel reads, NUL included.
    pub const CMDLINE_MAX: usize = 4096;

    /// Where the VMM writes the ACPI tables (RSDP first, then XSDT and
    /// MADT), in the BIOS area a legacy RSDP scan also covers; the memory
    /// map reports their bytes as [`E820_ACPI`], and `HvmStartInfo::rsdp_paddr`
    /// points here.
    pub const ACPI_TABLES: u64 = 0xe_0000;
    /// Room for the ACPI tables (up to the BIOS area at 0xf_0000).
    pub const ACPI_TABLES_MAX: u64 = 0x1_0000;

    /// E820: usable RAM.
    pub const E820_RAM: u32 = 1;
    /// E820: reserved.
    pub const E820_RESERVED: u32 = 2;
    /// E820: ACPI tables, reclaimable.
    pub const E820_ACPI: u32 = 3;
    /// E820: ACPI non-volatile storage.
    pub const E820_NVS: u32 = 4;
    /// E820: unusable (bad memory).
    pub const E820_UNUSABLE: u32 = 5;

    /// The name Linux prints for an E820 type.
    pub const fn e820_name(kind: u32) -> &'static str {
        match kind {
            E820_RAM => "usable",
            E820_RESERVED => "reserved",
            E820_ACPI => "ACPI data",
            E820_NVS => "ACPI NVS",
            E820_UNUSABLE => "unusable",
            _ => "unknown",
        }
    }
}

/// The kernel's virtual memory layout (Linux x86-64, 4-level paging).
pub mod layout {
    /// One past the last user address: the lower canonical half.
    pub const USER_END: u64 = 1 << 47;
    /// The first kernel address: the upper canonical half (between the
    /// two lies the non-canonical hole).
    pub const KERNEL_START: u64 = !(USER_END - 1);
    /// Start of the direct map of all physical memory (`page_offset_base`).
    pub const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
    /// Size reserved for the direct map (64 TiB, as Linux).
    pub const DIRECT_MAP_SIZE: u64 = 64 << 40;
    /// The vmalloc window (`VMALLOC_START` .. `VMALLOC_END`).
    pub const VMALLOC_START: u64 = 0xffff_c900_0000_0000;
    /// End of the vmalloc window (32 TiB).
    pub const VMALLOC_END: u64 = VMALLOC_START + (32 << 40);
    /// The page-descriptor array (`vmemmap`).
    pub const VMEMMAP_START: u64 = 0xffff_ea00_0000_0000;
    /// Size of the vmemmap region (1 TiB). Its first half holds the page
    /// descriptors (32 bytes a frame: 64 TiB of RAM), its third quarter
    /// the LRU links ([`LRUMAP_START`]) and its last the anon rmap and
    /// swap-cache fields ([`PAGE_EXT_START`]): the parts of Linux's
    /// `struct page` reclaim uses, one array each, indexed by pfn.
    pub const VMEMMAP_SIZE: u64 = 1 << 40;
    /// The LRU links, one `lru::LruNode` (12 bytes) per pfn.
    pub const LRUMAP_START: u64 = VMEMMAP_START + VMEMMAP_SIZE / 2;
    /// One `page_ext::PageExt` (16 bytes) per pfn.
    pub const PAGE_EXT_START: u64 = VMEMMAP_START + VMEMMAP_SIZE / 4 * 3;
    /// The kernel image (`__START_KERNEL_map`, -2 GiB): maps physical 0.
    pub const KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
}

/// Architectural bits of the control registers, EFER and RFLAGS, and of
/// the #PF error code (Intel SDM vol. 3, 2.5, 4.7).
pub mod cpu {
    /// CR0.PE: protected mode.
    pub const CR0_PE: u64 = 1 << 0;
    /// CR0.ET: extension type (hard-wired 1 on modern CPUs).
    pub const CR0_ET: u64 = 1 << 4;
    /// CR0.NE: native x87 error reporting.
    pub const CR0_NE: u64 = 1 << 5;
    /// CR0.WP: supervisor writes honour read-only pages.
    pub const CR0_WP: u64 = 1 << 16;
    /// CR0.PG: paging.
    pub const CR0_PG: u64 = 1 << 31;

    /// CR4.PAE: physical-address extension (required for long mode).
    pub const CR4_PAE: u64 = 1 << 5;
    /// CR4.PGE: global pages.
    pub const CR4_PGE: u64 = 1 << 7;
    /// CR4.OSFXSR: `fxsave`/`fxrstor` and SSE instructions enabled.
    pub const CR4_OSFXSR: u64 = 1 << 9;
    /// CR4.OSXMMEXCPT: unmasked SIMD floating-point exceptions raise #XM.
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
    /// CR4.LA57: 5-level paging.
    pub const CR4_LA57: u64 = 1 << 12;
    /// CR4.PCIDE: process-context identifiers.
    pub const CR4_PCIDE: u64 = 1 << 17;
    /// CR4.SMEP: no supervisor execution of user pages.
    pub const CR4_SMEP: u64 = 1 << 20;
    /// CR4.SMAP: no supervisor data access to user pages (unless RFLAGS.AC).
    pub const CR4_SMAP: u64 = 1 << 21;
    /// CR4.PKE: protection keys for user pages.
    pub const CR4_PKE: u64 = 1 << 22;

    /// The IA32_EFER MSR.
    pub const MSR_EFER: u32 = 0xc000_0080;
    /// EFER.SCE: `syscall`/`sysret` enabled.
    pub const EFER_SCE: u64 = 1 << 0;
    /// EFER.LME: long mode enabled (takes effect with CR0.PG).
    pub const EFER_LME: u64 = 1 << 8;
    /// EFER.LMA: long mode active.
    pub const EFER_LMA: u64 = 1 << 10;
    /// EFER.NXE: the XD bit of page-table entries is honoured.
    pub const EFER_NXE: u64 = 1 << 11;

    /// RFLAGS bit 1, always set.
    pub const RFLAGS_FIXED: u64 = 1 << 1;
    /// RFLAGS.IF: maskable interrupts enabled.
    pub const RFLAGS_IF: u64 = 1 << 9;
    /// RFLAGS.AC: alignment check / SMAP override.
    pub const RFLAGS_AC: u64 = 1 << 18;

    /// #PF error code P: 0 = non-present page, 1 = protection or
    /// reserved-bit violation.
    pub const PF_PRESENT: u32 = 1 << 0;
    /// #PF error code W/R: the access was a write.
    pub const PF_WRITE: u32 = 1 << 1;
    /// #PF error code U/S: the access was a user-mode access.
    pub const PF_USER: u32 = 1 << 2;
    /// #PF error code RSVD: a reserved bit was set in a paging entry.
    pub const PF_RSVD: u32 = 1 << 3;
    /// #PF error code I/D: instruction fetch (reported with EFER.NXE or
    /// CR4.SMEP).
    pub const PF_FETCH: u32 = 1 << 4;
    /// #PF error code PK: protection-key violation.
    pub const PF_PK: u32 = 1 << 5;
}

/// Process states as the descriptor's process table reports them
/// (`ProcDesc::state`).
pub mod proc {
    /// A free slot.
    pub const STATE_FREE: u32 = 0;
    /// On the run queue.
    pub const STATE_RUNNABLE: u32 = 1;
    /// On the CPU.
    pub const STATE_RUNNING: u32 = 2;
    /// Sleeping (in `wait4`).
    pub const STATE_SLEEPING: u32 = 3;
    /// Exited; its status waits for the parent.
    pub const STATE_ZOMBIE: u32 = 4;

    /// The name `ps` prints for a state.
    pub const fn state_name(state: u32) -> &'static str {
        match state {
            STATE_FREE => "free",
            STATE_RUNNABLE => "runnable",
            STATE_RUNNING => "running",
            STATE_SLEEPING => "sleeping",
            STATE_ZOMBIE => "zombie",
            _ => "?",
        }
    }
}

/// Physical memory zones, as Linux's x86-64: DMA below 16 MiB, DMA32
/// below 4 GiB, Normal above (`buddy::ZoneType` classifies frames with
/// these).
pub mod zone {
    /// One past the last byte of `ZONE_DMA`.
    pub const DMA_END: u64 = 16 << 20;
    /// One past the last byte of `ZONE_DMA32`.
    pub const DMA32_END: u64 = 4 << 30;
}

/// The virtio-mmio block device the VMM offers with `--swap` (swap's
/// device): where its register window sits in the guest-physical map and
/// which interrupt it raises. The VMM puts the same values on the kernel
/// command line as Linux's `virtio_mmio.device=4K@ADDR:IRQ`, which is how
/// the guest finds it; these constants are the VMM's choice and a guest
/// must not assume them.
pub mod virtio {
    /// Base of the register window: in the hole below 4 GiB where a PC has
    /// its PCI devices (no RAM there, whatever `--mem` is).
    pub const MMIO_BASE: u64 = 0xd000_0000;
    /// Size of the register window (one page, Linux's `4K`).
    pub const MMIO_SIZE: u64 = 0x1000;
    /// The GSI the device's interrupt goes to: an IOAPIC pin above the
    /// legacy 16, so the (uninitialised) 8259 PIC never sees it.
    pub const BLK_IRQ: u32 = 16;
    /// Most descriptors per virtqueue the device offers (QueueNumMax).
    pub const QUEUE_MAX: u16 = 256;
    /// A virtio-blk sector: the unit of request offsets, always 512 bytes.
    pub const SECTOR_SIZE: u64 = 512;
}

/// The IOAPIC KVM's in-kernel irqchip emulates, at the PC's address.
pub mod ioapic {
    /// Base of its two-register window (IOREGSEL, then IOWIN at +0x10).
    pub const BASE: u64 = 0xfec0_0000;
    /// Its pins (KVM's: 24).
    pub const PINS: u32 = 24;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_info_has_xens_layout() {
        // Xen's public/arch-x86/hvm/start_info.h: 56-byte header, 24-byte
        // memory-map entries.
        assert_eq!(core::mem::size_of::<boot::HvmStartInfo>(), 56);
        assert_eq!(core::mem::offset_of!(boot::HvmStartInfo, memmap_paddr), 40);
        assert_eq!(core::mem::size_of::<boot::HvmMemmapEntry>(), 24);
        assert_eq!(core::mem::size_of::<boot::HvmModlistEntry>(), 32);
    }

    #[test]
    fn layout_regions_are_disjoint_and_ordered() {
        use layout::*;
        let regions = [
            (PAGE_OFFSET, PAGE_OFFSET + DIRECT_MAP_SIZE),
            (VMALLOC_START, VMALLOC_END),
            (VMEMMAP_START, VMEMMAP_START + VMEMMAP_SIZE),
            (KERNEL_MAP, u64::MAX),
        ];
        assert!(USER_END < KERNEL_START && KERNEL_START <= regions[0].0);
        assert_eq!(KERNEL_START, 0xffff_8000_0000_0000);
        for w in regions.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:#x?}", w);
        }
        // The boot map covers the kernel image's load address.
        const { assert!(boot::KERNEL_PHYS < boot::BOOT_MAPPED) };
    }

    #[test]
    fn values_match_the_hardware_and_the_conventions() {
        // Restated from the manuals on purpose: a typo above fails here.
        assert_eq!(cpu::CR0_PG | cpu::CR0_PE, 0x8000_0001);
        assert_eq!(cpu::CR4_PAE, 0x20);
        assert_eq!(cpu::EFER_LME, 0x100);
        assert_eq!(cpu::PF_PRESENT | cpu::PF_USER | cpu::PF_FETCH, 0x15);
        assert_eq!(port::COM1, 0x3f8);
        assert_eq!(port::DESCRIPTOR_HIGH, 0x51c);
        assert_eq!(&boot::HANDOFF_MAGIC.to_le_bytes()[..4], b"MMFW");
        assert_eq!((zone::DMA_END, zone::DMA32_END), (0x100_0000, 0x1_0000_0000));
        assert_eq!(proc::state_name(proc::STATE_ZOMBIE), "zombie");
    }
}
