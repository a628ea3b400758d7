//! The page descriptor (Linux's `struct page`), one per physical frame, and
//! the intrusive list helpers threaded through it.
//!
//! Descriptors live in a caller-supplied slice (the guest's `vmemmap`), so
//! the buddy allocator needs no heap. An all-zero descriptor is a valid
//! "untouched" descriptor: memory fresh from the VMM is zero, so the guest
//! never has to initialise descriptors of memory it has not handed out yet
//! (Linux's deferred struct page init, taken to its limit).

/// "No entry" in the pfn-index links (`next`/`prev`, list heads).
pub const NIL: u32 = u32::MAX;

/// The head of a free block on a zone's `free_area` list (Linux's
/// `PageBuddy`); `order` is the block's order.
pub const PG_BUDDY: u16 = 1 << 0;
/// The head of an allocated block; `order` is the block's order.
pub const PG_HEAD: u16 = 1 << 1;
/// The head of a block sitting on a per-CPU (pcp) list.
pub const PG_PCP: u16 = 1 << 2;
/// The head page of a slab (`PageSlab`): the slab fields are live.
pub const PG_SLAB: u16 = 1 << 3;
/// A tail page of a slab: `next` holds the head's index (Linux's
/// `compound_head`), so `kfree` finds the slab from any address in it.
pub const PG_TAIL: u16 = 1 << 4;

/// Who owns an allocated block, for reports and the host's memory map.
/// The buddy and slab code set `Slab`/`KmallocLarge`; other owners are the
/// caller's to set with `BuddyAllocator::set_owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageOwner {
    /// Nobody in particular (the default for a fresh allocation).
    Unknown = 0,
    /// A slab of a `kmem_cache`.
    Slab = 1,
    /// A `kmalloc` request too large for the kmalloc caches.
    KmallocLarge = 2,
    /// A page-table page.
    PageTable = 3,
    /// Anonymous user memory.
    UserAnon = 4,
    /// Backing pages of a vmalloc area.
    Vmalloc = 5,
    /// Kernel image, firmware tables and other boot-time reservations.
    Reserved = 6,
    /// A page of the page cache (a file's data: the initramfs and tmpfs
    /// files, Linux's `folio->mapping` set); mapped into user space by
    /// file mappings, one reference for the cache plus one per PTE.
    PageCache = 7,
    /// A 2 MiB page of the hugetlb pool (an order-9 block): its refcount
    /// is the pool's one reference plus one per PMD leaf mapping it.
    HugeTlb = 8,
}

impl PageOwner {
    /// Decodes the stored byte; unknown values read as `Unknown` rather than
    /// failing, because the host reads these from guest memory.
    pub fn from_u8(v: u8) -> PageOwner {
        match v {
            1 => PageOwner::Slab,
            2 => PageOwner::KmallocLarge,
            3 => PageOwner::PageTable,
            4 => PageOwner::UserAnon,
            5 => PageOwner::Vmalloc,
            6 => PageOwner::Reserved,
            7 => PageOwner::PageCache,
            8 => PageOwner::HugeTlb,
            _ => PageOwner::Unknown,
        }
    }
}

/// A page descriptor. `#[repr(C)]` with fixed-width fields so the host can
/// read the guest's `vmemmap` with the same layout (32 bytes).
///
/// Only block heads carry meaning for the buddy allocator; tail pages of a
/// free or allocated block are never read (their contents may be stale).
/// The slab fields overlay what Linux's `struct slab` keeps in the page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Page {
    /// `PG_*` bits.
    pub flags: u16,
    /// Order of the block this page heads.
    pub order: u8,
    /// Zone index (`ZoneType as u8`) of a block head.
    pub zone: u8,
    /// References to an allocated block (1 after allocation).
    pub refcount: u32,
    /// Next descriptor index on whatever list the page is on (free_area,
    /// pcp, slab partial/full/free), or the head index for a `PG_TAIL`.
    pub next: u32,
    /// Previous descriptor index on a doubly-linked list.
    pub prev: u32,
    /// Slab: index of the owning `kmem_cache` plus one (0 = none).
    pub slab_cache: u16,
    /// Slab: objects handed out. Any other allocated page: its memory
    /// cgroup charge, 0 for none (`crate::memcg::tag`).
    pub inuse: u16,
    /// Slab: objects in the slab.
    pub objects: u16,
    /// `PageOwner` of an allocated block.
    pub owner: u8,
    /// Slab: CPU number plus one while the slab is a CPU's active slab
    /// (SLUB's "frozen"), 0 otherwise. Buddy (non-slab heads): the
    /// `MigrateType` of the free or pcp list a free block is on, or the one
    /// an allocated block was requested with.
    pub frozen: u8,
    /// Slab: physical address of the first free object not owned by a CPU
    /// freelist, or `slab::FP_END`.
    pub freelist: u64,
}

const _: () = assert!(core::mem::size_of::<Page>() == 32);

/// Pushes `idx` at the front of the doubly-linked list whose head is `head`.
pub(crate) fn list_add(map: &mut [Page], head: &mut u32, idx: u32) {
    let old = *head;
    map[idx as usize].next = old;
    map[idx as usize].prev = NIL;
    if old != NIL {
        map[old as usize].prev = idx;
    }
    *head = idx;
}

/// Unlinks `idx` from the doubly-linked list whose head is `head`.
pub(crate) fn list_del(map: &mut [Page], head: &mut u32, idx: u32) {
    let Page { next, prev, .. } = map[idx as usize];
    if prev != NIL {
        map[prev as usize].next = next;
    } else {
        *head = next;
    }
    if next != NIL {
        map[next as usize].prev = prev;
    }
    map[idx as usize].next = NIL;
    map[idx as usize].prev = NIL;
}
