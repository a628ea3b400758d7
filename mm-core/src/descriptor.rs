//! The descriptor the guest kernel publishes at boot (the role of Linux's
//! vmcoreinfo): where its page descriptors, slab caches, process table and
//! self-test tables live, so the host reads guest state without guessing.
//! One definition, used by the guest to fill it and by the host to read it.
//!
//! The kernel writes the descriptor's guest-physical address to
//! [`crate::abi::port::DESCRIPTOR`] (low 32 bits) and
//! [`crate::abi::port::DESCRIPTOR_HIGH`] (high 32 bits) once its memory
//! manager is up. The host reads the kernel's virtual layout from here,
//! never from [`crate::abi::layout`] itself. Every address inside is
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
//!
//! ## Encoding
//!
//! The guest writes these structures as they lie in its memory; the host
//! decodes them from bytes with [`Wire::decode`], field by field from
//! little-endian, so no `unsafe` reinterpretation is needed and a short or
//! hostile buffer yields zeros, never a panic. [`Wire::encode`] is the
//! inverse (tests and fakes that play the guest). The unit tests pin both
//! to the `#[repr(C)]` layouts with `offset_of!`.

use crate::buddy::Page;
pub use crate::paging::tlbtrace::TlbTraceDesc;
use crate::paging::tlbtrace::TRACE_MAX_CPUS;
/// "MMEMUDSC", little-endian.
pub const DESCRIPTOR_MAGIC: u64 = u64::from_le_bytes(*b"MMEMUDSC");
/// Layout version; bumped on any incompatible change. Version 7 appends
/// the fault log ([`FaultLogDesc`]) to version 6 and changes nothing
/// before it: a version 6 descriptor is version 7's first
/// [`DESCRIPTOR_SIZE_V6`] bytes ([`MmDescriptor::decode_versioned`]).
pub const DESCRIPTOR_VERSION: u32 = 7;
/// The oldest version [`MmDescriptor::decode_versioned`] reads (older
/// ones differ before the end: refused).
pub const DESCRIPTOR_VERSION_MIN: u32 = 6;
/// Slab caches the descriptor can list.
pub const MAX_CACHE_DESCS: usize = 32;
/// Processes the process table can list.
pub const MAX_PROC_DESCS: usize = 64;
/// VMAs the VMA table can hold, all processes together (a process's
/// VMAs that do not fit are counted in [`VmaTableDesc::dropped`]).
pub const MAX_VMA_DESCS: usize = 512;
/// The guest's vmstat event counters the descriptor carries, by name in
/// this order (Linux's /proc/vmstat names; the swap and LRU ones stay 0
/// until the guest swaps).
pub const VM_EVENT_NAMES: [&str; NR_VM_EVENTS] = [
    "pgfault",
    "pgmajfault",
    "pswpin",
    "pswpout",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgactivate",
    "pgdeactivate",
    "workingset_refault",
    "oom_kill",
    "allocstall",
    "kswapd_wake",
    "pageoutrun",
    "slabs_scanned",
    "compact_migrate_scanned",
    "compact_free_scanned",
    "compact_isolated",
    "compact_stall",
    "compact_fail",
    "compact_success",
    "compact_daemon_wake",
    "thp_fault_alloc",
    "thp_fault_fallback",
    "thp_split_pmd",
    "thp_collapse_alloc",
    "thp_zero_page_alloc",
];
/// How many vmstat counters the descriptor carries.
pub const NR_VM_EVENTS: usize = 28;
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
    /// `abi::proc::STATE_*` (0 free, 1 runnable, 2 running, 3 sleeping,
    /// 4 zombie).
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
    /// The OOM killer's adjustment, -1000..=1000.
    pub oom_score_adj: i32,
    /// Its memory cgroup's index (`crate::memcg`; 0 the root).
    pub memcg: u32,
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

/// What backs a published VMA, and what Linux's maps would name it.
pub mod vma_kind {
    /// Anonymous memory (no name).
    pub const ANON: u32 = 0;
    /// A file mapping ([`super::VmaDesc::name`] is the file's path).
    pub const FILE: u32 = 1;
    /// The stack (`VM_GROWSDOWN`, `[stack]`).
    pub const STACK: u32 = 2;
    /// The brk heap (`[heap]`).
    pub const HEAP: u32 = 3;
    /// The hugetlb pool's 2 MiB pages (`VM_HUGETLB`).
    pub const HUGETLB: u32 = 4;
    /// Names as the host prints them, by kind.
    pub const NAMES: [&str; 5] = ["anon", "file", "stack", "heap", "hugetlb"];
}

/// [`VmaDesc::attrs`]: transparent huge pages may back this VMA in the
/// current THP mode (Linux's smaps `THPeligible: 1`).
pub const VMA_THP_ELIGIBLE: u32 = 1;
/// [`VmaDesc::attrs`]: the VMA's own NUMA policy mode (Linux's
/// `MPOL_*` number; 0, default, when mbind set none) in bits 8..11.
pub const VMA_POLICY_MODE_SHIFT: u32 = 8;
/// [`VmaDesc::attrs`]: the VMA's policy's node mask in bits 16..23.
pub const VMA_POLICY_NODES_SHIFT: u32 = 16;

/// One VMA of one address space (Linux's `vm_area_struct` as
/// /proc/PID/maps shows it), in the descriptor's VMA table (version 6).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmaDesc {
    /// The address space's root (its processes' `ProcDesc::cr3`); 0 marks
    /// a free entry.
    pub cr3: u64,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Page offset of `start` in the file (`vm_pgoff`).
    pub pgoff: u64,
    /// `VmFlags` bits (`VM_READ` 1, `VM_WRITE` 2, `VM_EXEC` 4,
    /// `VM_SHARED` 8, `VM_GROWSDOWN` 0x100, ...).
    pub flags: u32,
    /// A [`vma_kind`] value.
    pub kind: u32,
    /// [`VMA_THP_ELIGIBLE`] and reserved bits.
    pub attrs: u32,
    /// The file's inode number (kind FILE), else 0.
    pub ino: u32,
    /// NUL-padded file path (its last 31 bytes if longer), kind FILE.
    pub name: [u8; 32],
}

impl VmaDesc {
    /// The name as text (up to the first NUL).
    pub fn name(&self) -> &str {
        let n = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        core::str::from_utf8(&self.name[..n]).unwrap_or("?")
    }
}

/// Where the VMA table lies and whether it can be trusted now. The guest
/// rewrites an address space's entries whenever its VMA set changes (after
/// the system calls that change VMAs, a stack that grew, fork, exit) and
/// every address space's at each checkpoint.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmaTableDesc {
    /// Guest-physical address of `[VmaDesc; capacity]`, or 0.
    pub table: u64,
    /// Entries in the array ([`MAX_VMA_DESCS`]).
    pub capacity: u32,
    /// Entries in use (the first `count`; the rest are zero).
    pub count: u32,
    /// Bumped by every rewrite.
    pub generation: u32,
    /// 0 while a rewrite is under way (the host found the vCPU in the
    /// middle of one: the entries may be half-written), else 1.
    pub consistent: u32,
    /// VMAs left out since boot because the table was full.
    pub dropped: u32,
    /// Reserved.
    pub pad: u32,
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
    /// Bytes reserved for the direct map from `page_offset_va`.
    pub direct_map_size: u64,
    /// Bytes reserved for the page-descriptor array from `vmemmap_va`.
    pub vmemmap_size: u64,
    /// Where the kernel map (`__START_KERNEL_map`, -2 GiB) begins: the
    /// image and everything above it.
    pub kernel_map_va: u64,
    /// One past the last user address.
    pub user_end_va: u64,
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
    /// Guest-physical address of the memory cgroups' `memcg::MemcgTable`
    /// (a static of the kernel image, below 4 GiB), 0 for none.
    pub memcg_table: u32,
    /// The slab caches.
    pub caches: [CacheDesc; MAX_CACHE_DESCS],
    /// The vmstat event counters, in [`VM_EVENT_NAMES`]' order.
    pub vmstat: [u64; NR_VM_EVENTS],
    /// Swap and the LRU lists, for `--verify swap,lru`.
    pub swap: SwapDesc,
    /// Pageblock migration types and the hugetlb pool (version 5).
    pub huge: HugeDesc,
    /// The stale-TLB detector's per-CPU event rings (version 6; see
    /// [`crate::paging::tlbtrace`]).
    pub tlb: TlbTraceDesc,
    /// Every address space's VMAs (version 6).
    pub vmas: VmaTableDesc,
    /// The ring of recent user page faults (version 7).
    pub faults: FaultLogDesc,
}

/// Where the guest's ring of recent user page faults lies (version 7):
/// the guest appends a [`FaultRecord`] per fault, overwriting the oldest
/// once `capacity` are written; the host reads it at its stops. Fixed at
/// boot (a static array in the kernel image).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultLogDesc {
    /// Guest-physical address of `[FaultRecord; capacity]`, or 0 (no log).
    pub ring: u64,
    /// Guest-physical address of the `u64` count of records ever written
    /// (record `n` lies in slot `n % capacity`).
    pub head: u64,
    /// Slots in the ring (a power of two).
    pub capacity: u32,
    /// [`FAULT_RECORD_SIZE`], for the host's sanity check.
    pub record_size: u32,
}

/// One user page fault, as the fault handler finished it. The guest
/// writes `seq` last: a slot whose `seq` is not the record number the
/// host expects plus one is being written or was overwritten, and is
/// skipped.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultRecord {
    /// The record's number plus one (0: never written).
    pub seq: u64,
    /// The faulting address (CR2).
    pub addr: u64,
    /// The faulting address space's page-table root.
    pub cr3: u64,
    /// The faulting task's pid.
    pub pid: u32,
    /// The #PF error code's low bits (present, write, user, ..., fetch).
    pub error: u16,
    /// What the fault was: a [`fault_kind`] code.
    pub kind: u8,
    /// How it ended: a [`fault_result`] code.
    pub result: u8,
}

/// [`FaultRecord::kind`] codes, named by [`fault_kind::NAMES`].
pub mod fault_kind {
    /// Refused before any page was touched (no VMA, or the VMA forbids
    /// the access).
    pub const NONE: u8 = 0;
    /// A private anonymous page allocated on first touch.
    pub const ANON: u8 = 1;
    /// A read of never-written private memory: the shared zero page.
    pub const ZERO: u8 = 2;
    /// A write to a read-only page of a writable private mapping
    /// (copy-on-write: copied, or reused when it is the last user).
    pub const COW: u8 = 3;
    /// A file mapping's page from the page cache.
    pub const FILE: u8 = 4;
    /// A page read back from swap (or found in the swap cache).
    pub const SWAP_IN: u8 = 5;
    /// A huge page (transparent, or hugetlb).
    pub const HUGE: u8 = 6;
    /// Present and allowed: stale flags or a stale TLB entry refreshed.
    pub const SPURIOUS: u8 = 7;
    /// The names, by code.
    pub const NAMES: [&str; 8] = ["none", "anon", "zero", "cow", "file", "swap-in", "huge", "spurious"];
}

/// [`FaultRecord::result`] codes, named by [`fault_result::NAMES`].
pub mod fault_result {
    /// Served: the access is retried and succeeds.
    pub const OK: u8 = 0;
    /// No VMA covers the address (SIGSEGV, `SEGV_MAPERR`).
    pub const MAPERR: u8 = 1;
    /// The VMA forbids the access (SIGSEGV, `SEGV_ACCERR`).
    pub const ACCERR: u8 = 2;
    /// No memory (the OOM path).
    pub const OOM: u8 = 3;
    /// The page could not be read back (SIGBUS).
    pub const IO: u8 = 4;
    /// No huge page for a hugetlb fault (SIGBUS).
    pub const SIGBUS: u8 = 5;
    /// The names, by code.
    pub const NAMES: [&str; 6] = ["ok", "segv-maperr", "segv-accerr", "oom", "sigbus-io", "sigbus-hugetlb"];
}

/// Bytes of one [`FaultRecord`].
pub const FAULT_RECORD_SIZE: usize = core::mem::size_of::<FaultRecord>();

impl FaultRecord {
    /// The kind's name ("?" for a code this host does not know).
    pub fn kind_name(&self) -> &'static str {
        fault_kind::NAMES.get(self.kind as usize).copied().unwrap_or("?")
    }
    /// The result's name ("?" for a code this host does not know).
    pub fn result_name(&self) -> &'static str {
        fault_result::NAMES.get(self.result as usize).copied().unwrap_or("?")
    }
    /// The record as four words (how the guest stores it, `seq` first).
    pub fn to_words(&self) -> [u64; 4] {
        [
            self.seq,
            self.addr,
            self.cr3,
            self.pid as u64 | (self.error as u64) << 32 | (self.kind as u64) << 48 | (self.result as u64) << 56,
        ]
    }
}

/// Grouping by mobility and the hugetlb pool, refreshed at every
/// checkpoint: the pageblock migratetype array (Linux's
/// `pageblock_flags`) for `--inspect pagetypeinfo` and the physmap
/// picture, and the pool's counters (/proc/meminfo's `HugePages_*`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HugeDesc {
    /// Kernel virtual address of the pageblock array: one byte per
    /// pageblock (`buddy::MigrateType as u8`), 0 when not grouping.
    pub pageblocks_va: u64,
    /// The pfn of the array's first pageblock's first page.
    pub pageblock_base_pfn: u64,
    /// Bytes (pageblocks) in the array.
    pub nr_pageblocks: u64,
    /// Pageblock order (9: 2 MiB).
    pub pageblock_order: u64,
    /// `HugePages_Total`: pages in the pool (persistent and surplus).
    pub hugepages_total: u64,
    /// `HugePages_Free`: pool pages no mapping uses.
    pub hugepages_free: u64,
    /// `HugePages_Rsvd`: free pages promised to mappings not yet faulted.
    pub hugepages_rsvd: u64,
    /// `HugePages_Surp`: pages above `nr_hugepages` (overcommit).
    pub hugepages_surp: u64,
    /// `nr_overcommit_hugepages`.
    pub nr_overcommit: u64,
    /// `Hugepagesize` in kB (2048).
    pub hugepage_size_kb: u64,
}

/// Names of the [`HugeDesc`] pool counters, as /proc/meminfo prints them.
pub const HUGETLB_NAMES: [&str; 4] = ["HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp"];

/// Where the guest keeps its swap and LRU state (kernel virtual addresses
/// of arrays the host reads through the guest's page tables), refreshed
/// at every checkpoint.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwapDesc {
    /// Slots of swap area 0 (0: swap is off).
    pub nr_slots: u64,
    /// Its `swap_map` (`u16` per slot: count | `SWAP_HAS_CACHE`).
    pub swap_map_va: u64,
    /// Per slot: `page_checksum` of what was last written (`u64`, 0 never).
    pub sums_va: u64,
    /// Per slot: the swap-cache page's pfn plus one (`u32`, 0 none).
    pub cache_va: u64,
    /// The LRU link array (`lru::LruNode` per pfn).
    pub lru_va: u64,
    /// The page_ext array (`page_ext::PageExt` per pfn).
    pub page_ext_va: u64,
    /// Pages on each LRU list (`LruList` order).
    pub lru_nr: [u64; 5],
    /// `vm.swappiness`.
    pub swappiness: u32,
    /// 1 while the arrays are consistent (no reclaim or fault was in the
    /// middle of changing them when the descriptor was refreshed).
    pub consistent: u32,
    /// A bit per slot (slot `o`: byte `o / 8`, bit `o % 8`), set if a
    /// tmpfs file's page is in the slot (the file's index holds one count
    /// of it, as a swap PTE would).
    pub file_refs_va: u64,
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
            size: DESCRIPTOR_SIZE as u32,
            page_desc_size: PAGE_DESC_SIZE as u32,
            nr_caches: 0,
            page_offset_va: 0,
            vmemmap_va: 0,
            nr_pfns: 0,
            kernel_cr3: 0,
            vmalloc_va: NO_RANGE,
            direct_map_size: 0,
            vmemmap_size: 0,
            kernel_map_va: 0,
            user_end_va: 0,
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
            memcg_table: 0,
            caches: [EMPTY_CACHE; MAX_CACHE_DESCS],
            vmstat: [0; NR_VM_EVENTS],
            swap: SwapDesc {
                nr_slots: 0,
                swap_map_va: 0,
                sums_va: 0,
                cache_va: 0,
                lru_va: 0,
                page_ext_va: 0,
                lru_nr: [0; 5],
                swappiness: 0,
                consistent: 0,
                file_refs_va: 0,
            },
            huge: HugeDesc {
                pageblocks_va: 0,
                pageblock_base_pfn: 0,
                nr_pageblocks: 0,
                pageblock_order: 0,
                hugepages_total: 0,
                hugepages_free: 0,
                hugepages_rsvd: 0,
                hugepages_surp: 0,
                nr_overcommit: 0,
                hugepage_size_kb: 0,
            },
            tlb: TlbTraceDesc { enabled: 0, nr_rings: 0, capacity: 0, counters: 0, rings: [0; TRACE_MAX_CPUS] },
            vmas: VmaTableDesc { table: 0, capacity: 0, count: 0, generation: 0, consistent: 0, dropped: 0, pad: 0 },
            faults: FaultLogDesc { ring: 0, head: 0, capacity: 0, record_size: 0 },
        }
    }

    /// Decodes a descriptor of any version this code reads
    /// ([`DESCRIPTOR_VERSION_MIN`] ..= [`DESCRIPTOR_VERSION`]) and brings
    /// it to the current layout: an older one gets the sections it lacks
    /// empty (a version 6 descriptor has no fault log), and its `version`
    /// and `size` read as this version's. `Err` names the version when it
    /// is not one of those, or when its `size` is not that version's.
    pub fn decode_versioned(b: &[u8]) -> Result<Self, u32> {
        let mut d = Self::decode(b);
        let want = match d.version {
            DESCRIPTOR_VERSION => DESCRIPTOR_SIZE,
            6 => DESCRIPTOR_SIZE_V6,
            v => return Err(v),
        };
        if d.size as usize != want {
            return Err(d.version);
        }
        if d.version != DESCRIPTOR_VERSION {
            // What lay after the old descriptor is not its.
            d.faults = FaultLogDesc::default();
            d.version = DESCRIPTOR_VERSION;
            d.size = DESCRIPTOR_SIZE as u32;
        }
        Ok(d)
    }

    /// Whether the header says this is a descriptor this code understands.
    pub fn is_valid(&self) -> bool {
        self.magic == DESCRIPTOR_MAGIC
            && self.version == DESCRIPTOR_VERSION
            && self.size as usize == DESCRIPTOR_SIZE
            && self.page_desc_size as usize == PAGE_DESC_SIZE
            && self.nr_caches as usize <= MAX_CACHE_DESCS
            && self.access_count <= self.access_capacity
    }
}

impl Default for MmDescriptor {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes of the descriptor.
pub const DESCRIPTOR_SIZE: usize = core::mem::size_of::<MmDescriptor>();
/// Bytes of a version 6 descriptor: this one up to the fault log.
pub const DESCRIPTOR_SIZE_V6: usize = core::mem::offset_of!(MmDescriptor, faults);
/// Bytes of one page descriptor (`buddy::Page`), the `vmemmap` stride.
pub const PAGE_DESC_SIZE: usize = core::mem::size_of::<Page>();
/// Bytes of one process-table entry.
pub const PROC_DESC_SIZE: usize = core::mem::size_of::<ProcDesc>();
/// Bytes of one VMA-table entry.
pub const VMA_DESC_SIZE: usize = core::mem::size_of::<VmaDesc>();
/// Bytes of one access record.
pub const ACCESS_RECORD_SIZE: usize = core::mem::size_of::<AccessRecord>();
/// Byte offset of an access record's `faulted` field (for tests that
/// tamper with a recorded outcome).
pub const ACCESS_RECORD_FAULTED_OFFSET: usize = core::mem::offset_of!(AccessRecord, faulted);

/// Reads little-endian fields in order; a read past the end gives zero
/// (callers check lengths; this only keeps hostile input from panicking).
pub struct Reader<'b> {
    b: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    /// A reader at the start of `b`.
    pub fn new(b: &'b [u8]) -> Self {
        Reader { b, at: 0 }
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut v = [0u8; N];
        if let Some(s) = self.at.checked_add(N).and_then(|end| self.b.get(self.at..end)) {
            v.copy_from_slice(s);
        }
        self.at = self.at.saturating_add(N);
        v
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
}

/// Writes little-endian fields in order; bytes past the end of the buffer
/// are dropped (an encoder never panics either).
pub struct Writer<'b> {
    b: &'b mut [u8],
    at: usize,
}

impl<'b> Writer<'b> {
    /// A writer at the start of `b`.
    pub fn new(b: &'b mut [u8]) -> Self {
        Writer { b, at: 0 }
    }
    fn bytes(&mut self, v: &[u8]) {
        for (i, &x) in v.iter().enumerate() {
            if let Some(d) = self.b.get_mut(self.at + i) {
                *d = x;
            }
        }
        self.at += v.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// A structure of the guest/host interface, with its byte encoding
/// (identical to its `#[repr(C)]` layout on x86-64).
pub trait Wire: Sized {
    /// Encoded size in bytes (`size_of::<Self>()`).
    const SIZE: usize;
    /// Reads the fields in layout order (padding included).
    fn read_from(r: &mut Reader<'_>) -> Self;
    /// Writes the fields in layout order (padding included).
    fn write_to(&self, w: &mut Writer<'_>);

    /// Decodes from the first [`Wire::SIZE`] bytes of `b` (missing bytes
    /// read as zero).
    fn decode(b: &[u8]) -> Self {
        Self::read_from(&mut Reader::new(b))
    }

    /// Encodes into the first [`Wire::SIZE`] bytes of `out`.
    fn encode(&self, out: &mut [u8]) {
        self.write_to(&mut Writer::new(out));
    }
}

impl Wire for SwapDesc {
    const SIZE: usize = core::mem::size_of::<SwapDesc>();
    fn read_from(r: &mut Reader<'_>) -> Self {
        let mut d = SwapDesc {
            nr_slots: r.u64(),
            swap_map_va: r.u64(),
            sums_va: r.u64(),
            cache_va: r.u64(),
            lru_va: r.u64(),
            page_ext_va: r.u64(),
            ..SwapDesc::default()
        };
        for n in d.lru_nr.iter_mut() {
            *n = r.u64();
        }
        d.swappiness = r.u32();
        d.consistent = r.u32();
        d.file_refs_va = r.u64();
        d
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        for x in [self.nr_slots, self.swap_map_va, self.sums_va, self.cache_va, self.lru_va, self.page_ext_va] {
            w.u64(x);
        }
        for &n in &self.lru_nr {
            w.u64(n);
        }
        w.u32(self.swappiness);
        w.u32(self.consistent);
        w.u64(self.file_refs_va);
    }
}

impl Wire for VaRange {
    const SIZE: usize = 16;
    fn read_from(r: &mut Reader<'_>) -> Self {
        VaRange { start: r.u64(), end: r.u64() }
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        w.u64(self.start);
        w.u64(self.end);
    }
}

impl Wire for CacheDesc {
    const SIZE: usize = core::mem::size_of::<CacheDesc>();
    fn read_from(r: &mut Reader<'_>) -> Self {
        CacheDesc {
            name: r.bytes(),
            id: r.u32(),
            object_size: r.u32(),
            size: r.u32(),
            order: r.u32(),
            objects_per_slab: r.u32(),
            flags: r.u32(),
        }
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        w.bytes(&self.name);
        for x in [self.id, self.object_size, self.size, self.order, self.objects_per_slab, self.flags] {
            w.u32(x);
        }
    }
}

impl Wire for ProcDesc {
    const SIZE: usize = PROC_DESC_SIZE;
    fn read_from(r: &mut Reader<'_>) -> Self {
        ProcDesc {
            pid: r.u32(),
            ppid: r.u32(),
            state: r.u32(),
            exit_code: r.u32(),
            cr3: r.u64(),
            rss: r.u64(),
            faults: r.u64(),
            name: r.bytes(),
            oom_score_adj: r.u32() as i32,
            memcg: r.u32(),
        }
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        for x in [self.pid, self.ppid, self.state, self.exit_code] {
            w.u32(x);
        }
        for x in [self.cr3, self.rss, self.faults] {
            w.u64(x);
        }
        w.bytes(&self.name);
        w.u32(self.oom_score_adj as u32);
        w.u32(self.memcg);
    }
}

impl Wire for AccessRecord {
    const SIZE: usize = ACCESS_RECORD_SIZE;
    fn read_from(r: &mut Reader<'_>) -> Self {
        AccessRecord {
            va: r.u64(),
            cr3: r.u64(),
            access: r.u8(),
            cpl: r.u8(),
            faulted: r.u8(),
            pad: r.u8(),
            error_code: r.u32(),
        }
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        w.u64(self.va);
        w.u64(self.cr3);
        for x in [self.access, self.cpl, self.faulted, self.pad] {
            w.u8(x);
        }
        w.u32(self.error_code);
    }
}

impl Wire for Page {
    const SIZE: usize = PAGE_DESC_SIZE;
    fn read_from(r: &mut Reader<'_>) -> Self {
        Page {
            flags: r.u16(),
            order: r.u8(),
            zone: r.u8(),
            refcount: r.u32(),
            next: r.u32(),
            prev: r.u32(),
            slab_cache: r.u16(),
            inuse: r.u16(),
            objects: r.u16(),
            owner: r.u8(),
            frozen: r.u8(),
            freelist: r.u64(),
        }
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        w.u16(self.flags);
        w.u8(self.order);
        w.u8(self.zone);
        for x in [self.refcount, self.next, self.prev] {
            w.u32(x);
        }
        for x in [self.slab_cache, self.inuse, self.objects] {
            w.u16(x);
        }
        w.u8(self.owner);
        w.u8(self.frozen);
        w.u64(self.freelist);
    }
}

impl Wire for MmDescriptor {
    const SIZE: usize = DESCRIPTOR_SIZE;
    fn read_from(r: &mut Reader<'_>) -> Self {
        let mut d = MmDescriptor::new();
        d.magic = r.u64();
        d.version = r.u32();
        d.size = r.u32();
        d.page_desc_size = r.u32();
        d.nr_caches = r.u32();
        d.page_offset_va = r.u64();
        d.vmemmap_va = r.u64();
        d.nr_pfns = r.u64();
        d.kernel_cr3 = r.u64();
        d.vmalloc_va = VaRange::read_from(r);
        d.direct_map_size = r.u64();
        d.vmemmap_size = r.u64();
        d.kernel_map_va = r.u64();
        d.user_end_va = r.u64();
        d.text_va = VaRange::read_from(r);
        d.rodata_va = VaRange::read_from(r);
        d.data_va = VaRange::read_from(r);
        d.kernel_phys = VaRange::read_from(r);
        d.deferred_pages = r.u64();
        d.boot_table_pages = r.u64();
        d.table_pages = r.u64();
        d.procs = r.u64();
        d.access_records = r.u64();
        d.access_count = r.u32();
        d.access_capacity = r.u32();
        d.sabotage = r.u32();
        d.memcg_table = r.u32();
        for c in d.caches.iter_mut() {
            *c = CacheDesc::read_from(r);
        }
        for v in d.vmstat.iter_mut() {
            *v = r.u64();
        }
        d.swap = SwapDesc::read_from(r);
        d.huge = HugeDesc::read_from(r);
        d.tlb = TlbTraceDesc::read_from(r);
        d.vmas = VmaTableDesc::read_from(r);
        d.faults = FaultLogDesc::read_from(r);
        d
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        w.u64(self.magic);
        for x in [self.version, self.size, self.page_desc_size, self.nr_caches] {
            w.u32(x);
        }
        for x in [self.page_offset_va, self.vmemmap_va, self.nr_pfns, self.kernel_cr3] {
            w.u64(x);
        }
        self.vmalloc_va.write_to(w);
        for x in [self.direct_map_size, self.vmemmap_size, self.kernel_map_va, self.user_end_va] {
            w.u64(x);
        }
        for r in [self.text_va, self.rodata_va, self.data_va, self.kernel_phys] {
            r.write_to(w);
        }
        for x in [self.deferred_pages, self.boot_table_pages, self.table_pages, self.procs, self.access_records] {
            w.u64(x);
        }
        for x in [self.access_count, self.access_capacity, self.sabotage, self.memcg_table] {
            w.u32(x);
        }
        for c in &self.caches {
            c.write_to(w);
        }
        for &v in &self.vmstat {
            w.u64(v);
        }
        self.swap.write_to(w);
        self.huge.write_to(w);
        self.tlb.write_to(w);
        self.vmas.write_to(w);
        self.faults.write_to(w);
    }
}

impl Wire for FaultLogDesc {
    const SIZE: usize = core::mem::size_of::<FaultLogDesc>();
    fn read_from(r: &mut Reader<'_>) -> Self {
        FaultLogDesc { ring: r.u64(), head: r.u64(), capacity: r.u32(), record_size: r.u32() }
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        w.u64(self.ring);
        w.u64(self.head);
        w.u32(self.capacity);
        w.u32(self.record_size);
    }
}

impl Wire for FaultRecord {
    const SIZE: usize = FAULT_RECORD_SIZE;
    fn read_from(r: &mut Reader<'_>) -> Self {
        FaultRecord {
            seq: r.u64(),
            addr: r.u64(),
            cr3: r.u64(),
            pid: r.u32(),
            error: r.u16(),
            kind: r.u8(),
            result: r.u8(),
        }
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        for x in [self.seq, self.addr, self.cr3] {
            w.u64(x);
        }
        w.u32(self.pid);
        w.u16(self.error);
        w.u8(self.kind);
        w.u8(self.result);
    }
}

impl Wire for TlbTraceDesc {
    const SIZE: usize = core::mem::size_of::<TlbTraceDesc>();
    fn read_from(r: &mut Reader<'_>) -> Self {
        let mut d = TlbTraceDesc {
            enabled: r.u32(),
            nr_rings: r.u32(),
            capacity: r.u64(),
            counters: r.u64(),
            rings: [0; TRACE_MAX_CPUS],
        };
        for x in d.rings.iter_mut() {
            *x = r.u64();
        }
        d
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        w.u32(self.enabled);
        w.u32(self.nr_rings);
        w.u64(self.capacity);
        w.u64(self.counters);
        for &x in &self.rings {
            w.u64(x);
        }
    }
}

impl Wire for VmaTableDesc {
    const SIZE: usize = core::mem::size_of::<VmaTableDesc>();
    fn read_from(r: &mut Reader<'_>) -> Self {
        VmaTableDesc {
            table: r.u64(),
            capacity: r.u32(),
            count: r.u32(),
            generation: r.u32(),
            consistent: r.u32(),
            dropped: r.u32(),
            pad: r.u32(),
        }
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        w.u64(self.table);
        for x in [self.capacity, self.count, self.generation, self.consistent, self.dropped, self.pad] {
            w.u32(x);
        }
    }
}

impl Wire for VmaDesc {
    const SIZE: usize = VMA_DESC_SIZE;
    fn read_from(r: &mut Reader<'_>) -> Self {
        VmaDesc {
            cr3: r.u64(),
            start: r.u64(),
            end: r.u64(),
            pgoff: r.u64(),
            flags: r.u32(),
            kind: r.u32(),
            attrs: r.u32(),
            ino: r.u32(),
            name: r.bytes(),
        }
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        for x in [self.cr3, self.start, self.end, self.pgoff] {
            w.u64(x);
        }
        for x in [self.flags, self.kind, self.attrs, self.ino] {
            w.u32(x);
        }
        w.bytes(&self.name);
    }
}

impl HugeDesc {
    fn fields(&self) -> [u64; 10] {
        [
            self.pageblocks_va,
            self.pageblock_base_pfn,
            self.nr_pageblocks,
            self.pageblock_order,
            self.hugepages_total,
            self.hugepages_free,
            self.hugepages_rsvd,
            self.hugepages_surp,
            self.nr_overcommit,
            self.hugepage_size_kb,
        ]
    }
}

impl Wire for HugeDesc {
    const SIZE: usize = core::mem::size_of::<HugeDesc>();
    fn read_from(r: &mut Reader<'_>) -> Self {
        HugeDesc {
            pageblocks_va: r.u64(),
            pageblock_base_pfn: r.u64(),
            nr_pageblocks: r.u64(),
            pageblock_order: r.u64(),
            hugepages_total: r.u64(),
            hugepages_free: r.u64(),
            hugepages_rsvd: r.u64(),
            hugepages_surp: r.u64(),
            nr_overcommit: r.u64(),
            hugepage_size_kb: r.u64(),
        }
    }
    fn write_to(&self, w: &mut Writer<'_>) {
        for x in self.fields() {
            w.u64(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable() {
        // The host reads these from guest memory: sizes are part of the ABI.
        assert_eq!(core::mem::size_of::<CacheDesc>(), 48);
        assert_eq!(core::mem::size_of::<ProcDesc>(), 64);
        assert_eq!(core::mem::size_of::<AccessRecord>(), 24);
        assert_eq!(core::mem::size_of::<VmaDesc>(), 80);
        assert_eq!(core::mem::size_of::<VmaTableDesc>(), 32);
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

    /// Every field at its `#[repr(C)]` offset: encode a value whose
    /// fields are all distinct and check the bytes where the compiler
    /// puts each field.
    #[test]
    fn encoding_follows_the_repr_c_layout() {
        use core::mem::offset_of;
        let mut d = MmDescriptor::new();
        d.nr_caches = 3;
        d.page_offset_va = 0x1111;
        d.vmemmap_va = 0x2222;
        d.nr_pfns = 0x3333;
        d.kernel_cr3 = 0x4444;
        d.vmalloc_va = VaRange { start: 0x5555, end: 0x6666 };
        d.direct_map_size = 0x7777;
        d.vmemmap_size = 0x8888;
        d.kernel_map_va = 0x9999;
        d.user_end_va = 0xaaaa;
        d.text_va = VaRange { start: 0xbbbb, end: 0xcccc };
        d.kernel_phys = VaRange { start: 0xdddd, end: 0xeeee };
        d.table_pages = 0x1_2345;
        d.procs = 0x2_3456;
        d.access_records = 0x3_4567;
        d.access_count = 5;
        d.access_capacity = 9;
        d.sabotage = 7;
        d.vmstat[11] = 0x0b;
        d.caches[31].object_size = 99;
        d.caches[2].name[..4].copy_from_slice(b"slab");
        let mut b = [0u8; DESCRIPTOR_SIZE];
        d.encode(&mut b);
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(u64_at(offset_of!(MmDescriptor, magic)), DESCRIPTOR_MAGIC);
        assert_eq!(u32_at(offset_of!(MmDescriptor, size)) as usize, DESCRIPTOR_SIZE);
        assert_eq!(u32_at(offset_of!(MmDescriptor, nr_caches)), 3);
        assert_eq!(u64_at(offset_of!(MmDescriptor, kernel_cr3)), 0x4444);
        assert_eq!(u64_at(offset_of!(MmDescriptor, vmalloc_va) + 8), 0x6666);
        assert_eq!(u64_at(offset_of!(MmDescriptor, direct_map_size)), 0x7777);
        assert_eq!(u64_at(offset_of!(MmDescriptor, user_end_va)), 0xaaaa);
        assert_eq!(u64_at(offset_of!(MmDescriptor, text_va)), 0xbbbb);
        assert_eq!(u64_at(offset_of!(MmDescriptor, kernel_phys) + 8), 0xeeee);
        assert_eq!(u64_at(offset_of!(MmDescriptor, procs)), 0x2_3456);
        assert_eq!(u64_at(offset_of!(MmDescriptor, access_records)), 0x3_4567);
        assert_eq!(u32_at(offset_of!(MmDescriptor, access_capacity)), 9);
        assert_eq!(u32_at(offset_of!(MmDescriptor, sabotage)), 7);
        let cache = |i: usize| offset_of!(MmDescriptor, caches) + i * CacheDesc::SIZE;
        assert_eq!(&b[cache(2)..cache(2) + 4], b"slab");
        assert_eq!(u32_at(cache(31) + offset_of!(CacheDesc, object_size)), 99);
        assert_eq!(cache(MAX_CACHE_DESCS), offset_of!(MmDescriptor, vmstat), "the vmstat counters follow the caches");
        assert_eq!(u64_at(offset_of!(MmDescriptor, vmstat) + 11 * 8), 0x0b);
        assert_eq!(
            offset_of!(MmDescriptor, vmstat) + NR_VM_EVENTS * 8,
            offset_of!(MmDescriptor, swap),
            "the swap section follows the counters"
        );
        assert_eq!(offset_of!(MmDescriptor, swap) + SwapDesc::SIZE, offset_of!(MmDescriptor, huge));
        assert_eq!(offset_of!(MmDescriptor, huge) + HugeDesc::SIZE, offset_of!(MmDescriptor, tlb));
        assert_eq!(offset_of!(MmDescriptor, tlb) + TlbTraceDesc::SIZE, offset_of!(MmDescriptor, vmas));
        assert_eq!(offset_of!(MmDescriptor, vmas) + VmaTableDesc::SIZE, offset_of!(MmDescriptor, faults));
        assert_eq!(offset_of!(MmDescriptor, faults) + FaultLogDesc::SIZE, DESCRIPTOR_SIZE, "the fault log is last");
        let mut td = TlbTraceDesc { enabled: 1, nr_rings: 2, capacity: 64, counters: 0xc0, ..TlbTraceDesc::default() };
        td.rings[7] = 0x7777_0000;
        let mut tb = [0u8; TlbTraceDesc::SIZE];
        td.encode(&mut tb);
        assert_eq!(tb[offset_of!(TlbTraceDesc, counters)..][..8], 0xc0u64.to_le_bytes());
        assert_eq!(tb[offset_of!(TlbTraceDesc, rings) + 56..][..8], 0x7777_0000u64.to_le_bytes());
        assert_eq!(TlbTraceDesc::decode(&tb), td);
        assert_eq!(DESCRIPTOR_SIZE_V6, offset_of!(MmDescriptor, vmas) + VmaTableDesc::SIZE, "version 6 ended there");
        let hd = HugeDesc { nr_pageblocks: 7, hugepages_rsvd: 3, hugepage_size_kb: 2048, ..HugeDesc::default() };
        let mut hb = [0u8; HugeDesc::SIZE];
        hd.encode(&mut hb);
        assert_eq!(hb[offset_of!(HugeDesc, hugepages_rsvd)..][..8], 3u64.to_le_bytes());
        assert_eq!(HugeDesc::decode(&hb), hd);
        let mut sd = SwapDesc { nr_slots: 5, cache_va: 0xcac4e, swappiness: 60, consistent: 1, ..SwapDesc::default() };
        sd.lru_nr[4] = 9;
        let mut sb = [0u8; SwapDesc::SIZE];
        sd.encode(&mut sb);
        assert_eq!(sb[offset_of!(SwapDesc, cache_va)..][..8], 0xcac4e_u64.to_le_bytes());
        assert_eq!(sb[offset_of!(SwapDesc, lru_nr) + 32..][..8], 9u64.to_le_bytes());
        assert_eq!(sb[offset_of!(SwapDesc, consistent)..][..4], 1u32.to_le_bytes());
        assert_eq!(SwapDesc::decode(&sb), sd);

        let p = Page {
            flags: 3,
            order: 2,
            zone: 1,
            refcount: 4,
            slab_cache: 6,
            owner: 5,
            freelist: 0xdead,
            ..Page::default()
        };
        let mut pb = [0u8; PAGE_DESC_SIZE];
        p.encode(&mut pb);
        assert_eq!(pb[offset_of!(Page, owner)], 5);
        assert_eq!(u16::from_le_bytes([pb[offset_of!(Page, slab_cache)], pb[offset_of!(Page, slab_cache) + 1]]), 6);
        assert_eq!(pb[offset_of!(Page, freelist)..][..8], 0xdead_u64.to_le_bytes());

        let r = AccessRecord { va: 1, cr3: 2, access: 1, cpl: 3, faulted: 1, pad: 0, error_code: 0x15 };
        let mut rb = [0u8; ACCESS_RECORD_SIZE];
        r.encode(&mut rb);
        assert_eq!(rb[ACCESS_RECORD_FAULTED_OFFSET], 1);
        assert_eq!(rb[offset_of!(AccessRecord, error_code)], 0x15);
        let pr = ProcDesc { pid: 1, name: *b"init\0\0\0\0\0\0\0\0\0\0\0\0", oom_score_adj: -17, ..ProcDesc::default() };
        let mut prb = [0u8; PROC_DESC_SIZE];
        pr.encode(&mut prb);
        assert_eq!(&prb[offset_of!(ProcDesc, name)..][..4], b"init");
        assert_eq!(prb[offset_of!(ProcDesc, oom_score_adj)..][..4], (-17i32).to_le_bytes());
        assert_eq!(ProcDesc::decode(&prb).oom_score_adj, -17);
    }

    #[test]
    fn encode_decode_round_trips() {
        let mut d = MmDescriptor::new();
        d.nr_pfns = 0x1234;
        d.sabotage = 7;
        d.kernel_map_va = 0xffff_ffff_8000_0000;
        d.caches[31].object_size = 99;
        d.caches[0].name[..10].copy_from_slice(b"kmalloc-96");
        d.text_va = VaRange { start: 1, end: 2 };
        d.access_count = 3;
        d.access_capacity = 4;
        d.vmstat[NR_VM_EVENTS - 1] = 42;
        let mut b = [0u8; DESCRIPTOR_SIZE];
        d.encode(&mut b);
        let back = MmDescriptor::decode(&b);
        assert_eq!(back.vmstat[NR_VM_EVENTS - 1], 42);
        let mut again = [0u8; DESCRIPTOR_SIZE];
        back.encode(&mut again);
        assert_eq!(again, b, "decode then encode gives the same bytes");
        assert!(back.is_valid());
        assert_eq!((back.nr_pfns, back.sabotage, back.kernel_map_va), (0x1234, 7, 0xffff_ffff_8000_0000));
        assert_eq!((back.caches[31].object_size, back.caches[0].name()), (99, "kmalloc-96"));
        assert_eq!(back.text_va, VaRange { start: 1, end: 2 });

        let p = Page { flags: 3, order: 2, owner: 5, freelist: 0xdead, inuse: 4, next: 9, prev: 8, ..Page::default() };
        let mut pb = [0u8; PAGE_DESC_SIZE];
        p.encode(&mut pb);
        assert_eq!(Page::decode(&pb), p);
        let r = AccessRecord {
            va: 0xffff_8880_0000_1000,
            cr3: 0x9000,
            access: 2,
            cpl: 3,
            faulted: 1,
            pad: 0,
            error_code: 0x15,
        };
        let mut rb = [0u8; ACCESS_RECORD_SIZE];
        r.encode(&mut rb);
        assert_eq!(AccessRecord::decode(&rb), r);
        let pr = ProcDesc {
            pid: 3,
            ppid: 1,
            state: 4,
            exit_code: 9,
            cr3: 0x5000,
            rss: 7,
            faults: 8,
            name: [b'x'; 16],
            oom_score_adj: 1000,
            memcg: 0,
        };
        let mut prb = [0u8; PROC_DESC_SIZE];
        pr.encode(&mut prb);
        assert_eq!(ProcDesc::decode(&prb), pr);

        let mut v = VmaDesc {
            cr3: 0x7000,
            start: 0x40_0000,
            end: 0x40_3000,
            pgoff: 2,
            flags: 5,
            kind: vma_kind::FILE,
            attrs: VMA_THP_ELIGIBLE,
            ino: 4,
            name: [0; 32],
        };
        v.name[..9].copy_from_slice(b"/bin/cat\0");
        let mut vb = [0u8; VMA_DESC_SIZE];
        v.encode(&mut vb);
        assert_eq!(VmaDesc::decode(&vb), v);
        assert_eq!(v.name(), "/bin/cat");
        use core::mem::offset_of;
        assert_eq!(vb[offset_of!(VmaDesc, kind)..][..4], vma_kind::FILE.to_le_bytes());
        assert_eq!(&vb[offset_of!(VmaDesc, name)..][..8], b"/bin/cat");
        let mut back = d;
        back.vmas =
            VmaTableDesc { table: 0x9000, capacity: 512, count: 3, generation: 7, consistent: 1, dropped: 2, pad: 0 };
        let mut b2 = [0u8; DESCRIPTOR_SIZE];
        back.encode(&mut b2);
        assert_eq!(MmDescriptor::decode(&b2).vmas, back.vmas);
        assert_eq!(
            b2[offset_of!(MmDescriptor, vmas) + offset_of!(VmaTableDesc, generation)..][..4],
            7u32.to_le_bytes()
        );
    }

    /// The guest's four words (`to_words`) are the record's wire bytes,
    /// and a version 6 descriptor (version 7's prefix) is read with no
    /// fault log while other versions and sizes are refused.
    #[test]
    fn fault_records_and_older_descriptors() {
        assert_eq!(FAULT_RECORD_SIZE, 32);
        assert_eq!(FaultLogDesc::SIZE, 24);
        let r = FaultRecord {
            seq: 5,
            addr: 0x40_2000,
            cr3: 0x9000,
            pid: 7,
            error: 0x7,
            kind: fault_kind::COW,
            result: fault_result::OK,
        };
        let mut b = [0u8; FAULT_RECORD_SIZE];
        r.encode(&mut b);
        let words: [u8; 32] = {
            let mut w = [0u8; 32];
            for (i, x) in r.to_words().iter().enumerate() {
                w[8 * i..8 * i + 8].copy_from_slice(&x.to_le_bytes());
            }
            w
        };
        assert_eq!(b, words);
        assert_eq!(FaultRecord::decode(&b), r);
        assert_eq!((r.kind_name(), r.result_name()), ("cow", "ok"));
        assert_eq!(FaultRecord { kind: 200, result: 200, ..r }.kind_name(), "?");

        let mut d = MmDescriptor::new();
        d.faults = FaultLogDesc { ring: 0x1000, head: 0x2000, capacity: 512, record_size: 32 };
        d.nr_pfns = 77;
        let mut b = [0u8; DESCRIPTOR_SIZE];
        d.encode(&mut b);
        assert_eq!(MmDescriptor::decode_versioned(&b).unwrap().faults, d.faults);
        // The same bytes as version 6 wrote them: its size, and whatever
        // followed it in memory.
        let mut v6 = b;
        v6[8..12].copy_from_slice(&6u32.to_le_bytes());
        v6[12..16].copy_from_slice(&(DESCRIPTOR_SIZE_V6 as u32).to_le_bytes());
        let old = MmDescriptor::decode_versioned(&v6).unwrap();
        assert_eq!((old.faults, old.nr_pfns, old.version), (FaultLogDesc::default(), 77, DESCRIPTOR_VERSION));
        assert!(old.is_valid());
        let mut v5 = v6;
        v5[8..12].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(MmDescriptor::decode_versioned(&v5).unwrap_err(), 5);
        let mut bad = b;
        bad[12..16].copy_from_slice(&(DESCRIPTOR_SIZE_V6 as u32).to_le_bytes());
        assert_eq!(MmDescriptor::decode_versioned(&bad).unwrap_err(), 7, "version 7 with version 6's size");
    }

    #[test]
    fn short_or_hostile_buffers_decode_without_panicking() {
        assert_eq!(Page::decode(&[1]), Page::default(), "a field cut short reads as zero");
        let d = MmDescriptor::decode(&[0xff; 10]);
        assert!(!d.is_valid());
        let mut tiny = [0u8; 3];
        MmDescriptor::new().encode(&mut tiny);
        assert_eq!(tiny, DESCRIPTOR_MAGIC.to_le_bytes()[..3], "an encoder drops what does not fit");
    }
}
