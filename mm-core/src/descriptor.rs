//! The descriptor the guest kernel publishes at boot (the role of Linux's
//! vmcoreinfo): where its page descriptors, slab caches, process table and
//! self-test tables live, so the host reads guest state without guessing.
//! One definition, used by the guest to fill it and by the host to read it.
//!
//! The kernel writes the descriptor's guest-physical address to
//! [`DESCRIPTOR_PORT`] (low 32 bits) and `DESCRIPTOR_PORT + 4` (high 32
//! bits) once its memory manager is up. Every address inside is
//! guest-physical unless its name ends in `_va`. Structures are
//! `#[repr(C)]` with fixed-width fields; the host must check `magic`,
//! `version` and the sizes before trusting anything else, and must treat
//! every value as hostile (bounds-check counts and addresses).
//!
//! ## What the host may assume about user page tables
//!
//! The host sees page tables and page descriptors, not VMAs, so the guest
//! marks what it could not otherwise tell apart:
//!
//! - [`PTE_MAP_SHARED`] (bit 9, `PteFlags::SOFTW1`, ignored by the CPU) is
//!   set on every user leaf of a `MAP_SHARED` mapping and on no other
//!   user leaf. Such a frame may be writable in several processes at
//!   once; a frame mapped by more than one private (unmarked) leaf is
//!   copy-on-write shared and must be read-only in every mapper.
//! - A user frame's page descriptor has owner `UserAnon`, and its
//!   refcount is the number of user leaves mapping it across every live
//!   process (the kernel keeps no other references to user frames).
//! - The shared zero page is the exception, as Linux's `ZERO_PAGE`
//!   (`PG_reserved`, never refcounted on map): its owner is `Reserved`,
//!   `get_page`/`put_page` skip it, so its refcount stays 1 (the kernel's
//!   own, from boot) however many read-only leaves map it. A user leaf
//!   may map a `Reserved` frame only read-only.

/// The I/O port the descriptor address is written to.
pub const DESCRIPTOR_PORT: u16 = 0x518;
/// "MMEMUDSC", little-endian.
pub const DESCRIPTOR_MAGIC: u64 = u64::from_le_bytes(*b"MMEMUDSC");
/// Layout version; bumped on any incompatible change.
pub const DESCRIPTOR_VERSION: u32 = 1;
/// Slab caches the descriptor can list.
pub const MAX_CACHE_DESCS: usize = 32;
/// Processes the process table can list.
pub const MAX_PROC_DESCS: usize = 64;
/// The software-available PTE bit the guest sets on the user leaves of
/// `MAP_SHARED` mappings (see the module documentation).
pub const PTE_MAP_SHARED: crate::paging::PteFlags = crate::paging::PteFlags::SOFTW1;

/// A virtual range `[start, end)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VaRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// One slab cache (the fixed facts /proc/slabinfo needs beside what the
/// slab pages' descriptors say).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheDesc {
    /// NUL-padded name.
    pub name: [u8; 24],
    /// The cache's index (`Page::slab_cache - 1` of its slab pages).
    pub id: u32,
    /// Bytes the user asked for.
    pub object_size: u32,
    /// Bytes per object with metadata.
    pub size: u32,
    /// Slab size as a page order.
    pub order: u32,
    /// Objects in one slab.
    pub objects_per_slab: u32,
    /// `SlabFlags` bits.
    pub flags: u32,
}

impl CacheDesc {
    /// The name as text (up to the first NUL).
    pub fn name(&self) -> &str {
        let n = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        core::str::from_utf8(&self.name[..n]).unwrap_or("?")
    }
}

/// One process (filled by the process code; all zero before it exists).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcDesc {
    /// Process id (0 = free slot).
    pub pid: u32,
    /// Parent's pid.
    pub ppid: u32,
    /// 0 free, 1 runnable, 2 running, 3 sleeping, 4 zombie.
    pub state: u32,
    /// Exit status once a zombie.
    pub exit_code: u32,
    /// Root of its address space (CR3 value).
    pub cr3: u64,
    /// Resident pages.
    pub rss: u64,
    /// Page faults taken.
    pub faults: u64,
    /// NUL-padded name.
    pub name: [u8; 16],
}

/// What one probed access did, recorded by the guest's access-rights test
/// (the spirit of kvm-unit-tests' x86 access test): the host predicts the
/// same access with the software MMU and compares.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessRecord {
    /// The linear address accessed.
    pub va: u64,
    /// CR3 the access ran under.
    pub cr3: u64,
    /// 0 read, 1 write, 2 instruction fetch.
    pub access: u8,
    /// Privilege level of the access (0 or 3).
    pub cpl: u8,
    /// 1 if the CPU raised #PF.
    pub faulted: u8,
    /// Reserved.
    pub pad: u8,
    /// The #PF error code (0 when it did not fault).
    pub error_code: u32,
}

/// The descriptor.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MmDescriptor {
    /// [`DESCRIPTOR_MAGIC`].
    pub magic: u64,
    /// [`DESCRIPTOR_VERSION`].
    pub version: u32,
    /// `size_of::<MmDescriptor>()`, for the host's sanity check.
    pub size: u32,
    /// `size_of::<buddy::Page>()` (32).
    pub page_desc_size: u32,
    /// Number of valid entries in `caches`.
    pub nr_caches: u32,
    /// The direct map's base (`PAGE_OFFSET`).
    pub page_offset_va: u64,
    /// The page descriptor array's virtual base (`vmemmap`).
    pub vmemmap_va: u64,
    /// Descriptors in the array (pfn 0 .. nr_pfns).
    pub nr_pfns: u64,
    /// The kernel's own page-table root.
    pub kernel_cr3: u64,
    /// The vmalloc window.
    pub vmalloc_va: VaRange,
    /// Kernel text, rodata, and data+bss.
    pub text_va: VaRange,
    /// Kernel read-only data.
    pub rodata_va: VaRange,
    /// Kernel data and bss.
    pub data_va: VaRange,
    /// Where the kernel image lies in physical memory.
    pub kernel_phys: VaRange,
    /// RAM pages not yet handed to the buddy allocator (deferred init).
    pub deferred_pages: u64,
    /// Page-table pages of the kernel's boot-time tables (from memblock).
    pub boot_table_pages: u64,
    /// Page-table pages allocated since boot and not freed.
    pub table_pages: u64,
    /// Process table (`[ProcDesc; MAX_PROC_DESCS]`), or 0.
    pub procs: u64,
    /// Access-rights test records (`[AccessRecord; access_count]`), or 0.
    pub access_records: u64,
    /// Records written so far.
    pub access_count: u32,
    /// Capacity of the record array.
    pub access_capacity: u32,
    /// Deliberately broken invariant, for the host's `--verify` tests
    /// (0 none; see the guest's `break=` switch).
    pub sabotage: u32,
    /// Reserved.
    pub pad: u32,
    /// The slab caches.
    pub caches: [CacheDesc; MAX_CACHE_DESCS],
}

impl MmDescriptor {
    /// An empty descriptor with magic, version and sizes filled in.
    pub const fn new() -> Self {
        const EMPTY_CACHE: CacheDesc =
            CacheDesc { name: [0; 24], id: 0, object_size: 0, size: 0, order: 0, objects_per_slab: 0, flags: 0 };
        const NO_RANGE: VaRange = VaRange { start: 0, end: 0 };
        MmDescriptor {
            magic: DESCRIPTOR_MAGIC,
            version: DESCRIPTOR_VERSION,
            size: core::mem::size_of::<MmDescriptor>() as u32,
            page_desc_size: core::mem::size_of::<crate::buddy::Page>() as u32,
            nr_caches: 0,
            page_offset_va: 0,
            vmemmap_va: 0,
            nr_pfns: 0,
            kernel_cr3: 0,
            vmalloc_va: NO_RANGE,
            text_va: NO_RANGE,
            rodata_va: NO_RANGE,
            data_va: NO_RANGE,
            kernel_phys: NO_RANGE,
            deferred_pages: 0,
            boot_table_pages: 0,
            table_pages: 0,
            procs: 0,
            access_records: 0,
            access_count: 0,
            access_capacity: 0,
            sabotage: 0,
            pad: 0,
            caches: [EMPTY_CACHE; MAX_CACHE_DESCS],
        }
    }

    /// Whether the header says this is a descriptor this code understands.
    pub fn is_valid(&self) -> bool {
        self.magic == DESCRIPTOR_MAGIC
            && self.version == DESCRIPTOR_VERSION
            && self.size as usize == core::mem::size_of::<MmDescriptor>()
            && self.page_desc_size as usize == core::mem::size_of::<crate::buddy::Page>()
            && self.nr_caches as usize <= MAX_CACHE_DESCS
            && self.access_count <= self.access_capacity
    }
}

impl Default for MmDescriptor {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable() {
        // The host reads these from guest memory: sizes are part of the ABI.
        assert_eq!(core::mem::size_of::<CacheDesc>(), 48);
        assert_eq!(core::mem::size_of::<ProcDesc>(), 56);
        assert_eq!(core::mem::size_of::<AccessRecord>(), 24);
        let d = MmDescriptor::new();
        assert!(d.is_valid());
        let mut bad = d;
        bad.nr_caches = 99;
        assert!(!bad.is_valid());
    }

    #[test]
    fn cache_names_stop_at_nul() {
        let mut c = CacheDesc::default();
        c.name[..10].copy_from_slice(b"kmalloc-96");
        assert_eq!(c.name(), "kmalloc-96");
    }
}
