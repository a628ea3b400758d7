//! LRU lists and page reclaim's aging (Linux's `mm/vmscan.c`, `mm/swap.c`
//! and `mm/workingset.c`, the classic two-list LRU without MGLRU).
//!
//! A [`Lruvec`] holds the pages of one zone (or node) that user memory
//! uses, on five lists (`enum lru_list`): inactive and active anon,
//! inactive and active file, and unevictable (mlocked). The lists are
//! intrusive, doubly linked by pfn through [`LruNode`]s in caller-supplied
//! storage (one node per frame, like the `lru` field of `struct page`), so
//! nothing is allocated per page. Heads are the most recently added pages,
//! tails the oldest; reclaim scans from the tail.
//!
//! The aging is Linux's second chance:
//!
//! - new pages go to the head of the inactive list (`folio_add_lru`); a
//!   page whose refault is recent enough goes to the active list instead
//!   (workingset detection, below);
//! - [`Lruvec::mark_page_accessed`] (`folio_mark_accessed`): an access seen
//!   by the kernel sets `PG_referenced`; a second one activates;
//! - [`Lruvec::shrink_inactive_list`] takes pages from the inactive tail and
//!   asks the caller, through [`ReclaimOps::folio_referenced`], how many
//!   PTEs mapping the page had their accessed bit set (clearing them: that
//!   is the page-table editor's and the rmap's work, not this module's).
//!   `folio_check_references` then decides: referenced PTEs and an earlier
//!   `PG_referenced` (or several PTEs) activate; referenced PTEs alone set
//!   `PG_referenced` and keep the page for another trip round the inactive
//!   list; no references reclaim it through [`ReclaimOps::reclaim_folio`]
//!   (unmap with `try_to_unmap`, write to swap, free);
//! - [`Lruvec::shrink_active_list`] moves pages from the active tail to the
//!   inactive head, clearing their accessed bits (only executable file
//!   pages that were referenced stay active), so a page that is still used
//!   comes back before it reaches the inactive tail;
//! - [`Lruvec::inactive_is_low`]: the active list is aged only while the
//!   inactive list is small against it (`inactive * inactive_ratio <
//!   active`, `inactive_ratio = sqrt(10 * GiB)` or 1 below a GiB);
//! - [`Lruvec::get_scan_count`] splits each round's scan between anon and
//!   file by `swappiness` (0..=200: the relative I/O cost of swapping
//!   against dropping file cache; 0 scans anon only when file is nearly
//!   gone), weighted by the recent cost of each type (refaults and
//!   rotations, `lru_note_cost`); [`Lruvec::shrink_lruvec`] scans the lists
//!   in batches of `SWAP_CLUSTER_MAX` by those targets and
//!   [`Lruvec::try_to_free_pages`] raises the pressure by lowering the
//!   priority from `DEF_PRIORITY` (scan `size >> priority` pages per list)
//!   to 0, as `do_try_to_free_pages` does.
//!
//! Workingset detection (`mm/workingset.c`): the lruvec counts evictions
//! and activations (`nonresident_age`). An evicted page leaves a
//! [`Shadow`] with that count where its contents went (the swap cache or
//! page cache slot: the caller stores it); when the page faults back in,
//! the refault distance (the count now minus the count then) is how much
//! the lists turned over while it was out. If that distance fits in the
//! workingset (active lists, plus the other type's lists when it can be
//! reclaimed), the page would have stayed resident with that much more
//! memory, so it starts active ([`Lruvec::folio_add_lru_refault`]).
//!
//! Several lruvecs can share one link array ([`LruSet`]: the guest keeps
//! one per NUMA node and memory cgroup, Linux's `mem_cgroup_lruvec`): the
//! list state ([`LruLists`]) is kept apart from the per-pfn links, each
//! link records the lruvec whose list it is on, and an [`Lruvec`] is then
//! a view of one set of lists over the shared links (`Lruvec<&mut [LruNode],
//! &mut LruLists>`), refusing pages another lruvec holds.
//!
//! A shadow records the lruvec the page was evicted from, so
//! [`LruSet::folio_add_lru_refault`] judges a refault on that lruvec's
//! clock (Linux packs the memcg id and node for the same reason).
//!
//! Simplifications, against Linux: no MGLRU; folios are single pages; `file_is_tiny` is the caller's to
//! decide (it needs the watermarks); `cache_trim_mode` and the
//! dirty/writeback throttling of `shrink_folio_list` are left out.

pub mod sim;
#[cfg(test)]
mod tests;

use alloc::vec;
use alloc::vec::Vec;
use core::borrow::{Borrow, BorrowMut};
use core::fmt;

/// "No entry" in the node links.
pub const NIL: u32 = u32::MAX;
/// Pages reclaim handles per batch (`SWAP_CLUSTER_MAX`).
pub const SWAP_CLUSTER_MAX: u64 = 32;
/// The first (lowest-pressure) priority (`DEF_PRIORITY`): scan
/// `size >> 12` pages of each list.
pub const DEF_PRIORITY: u32 = 12;
/// Passes of reclaim without progress before the allocator gives up and
/// calls the OOM killer (`MAX_RECLAIM_RETRIES`, `should_reclaim_retry`):
/// one pass can end having only aged young pages (activated, then
/// deactivated with their accessed bits cleared), which the next frees.
pub const MAX_RECLAIM_RETRIES: u32 = 16;
/// Highest `vm.swappiness`.
pub const MAX_SWAPPINESS: u32 = 200;

/// Page flags the LRU keeps (its part of Linux's `page->flags`).
pub mod flags {
    /// `PG_referenced`: the kernel saw an access since the last aging.
    pub const PG_REFERENCED: u8 = 1 << 0;
    /// `PG_active`: on an active list.
    pub const PG_ACTIVE: u8 = 1 << 1;
    /// `PG_swapbacked`: anon (reclaimed to swap), not file.
    pub const PG_SWAPBACKED: u8 = 1 << 2;
    /// `PG_workingset`: was active before being deactivated (restores on
    /// refault count as such).
    pub const PG_WORKINGSET: u8 = 1 << 3;
    /// `PG_unevictable`: on the unevictable list (mlocked).
    pub const PG_UNEVICTABLE: u8 = 1 << 4;
    /// `PG_lru`: on an LRU list (clear while isolated or off the LRU).
    pub const PG_LRU: u8 = 1 << 5;
}
use flags::*;

/// The lists (Linux's `enum lru_list`, same order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum LruList {
    /// `LRU_INACTIVE_ANON`.
    InactiveAnon = 0,
    /// `LRU_ACTIVE_ANON`.
    ActiveAnon = 1,
    /// `LRU_INACTIVE_FILE`.
    InactiveFile = 2,
    /// `LRU_ACTIVE_FILE`.
    ActiveFile = 3,
    /// `LRU_UNEVICTABLE`.
    Unevictable = 4,
}

/// Number of lists (`NR_LRU_LISTS`).
pub const NR_LRU_LISTS: usize = 5;

impl LruList {
    /// All lists, in `enum lru_list` order.
    pub const ALL: [LruList; NR_LRU_LISTS] =
        [LruList::InactiveAnon, LruList::ActiveAnon, LruList::InactiveFile, LruList::ActiveFile, LruList::Unevictable];
    /// The evictable lists (`for_each_evictable_lru`).
    pub const EVICTABLE: [LruList; 4] =
        [LruList::InactiveAnon, LruList::ActiveAnon, LruList::InactiveFile, LruList::ActiveFile];

    /// The inactive list of a type (`LRU_INACTIVE_ANON + LRU_FILE * file`).
    pub const fn inactive(file: bool) -> LruList {
        if file {
            LruList::InactiveFile
        } else {
            LruList::InactiveAnon
        }
    }

    /// The active list of a type.
    pub const fn active(file: bool) -> LruList {
        if file {
            LruList::ActiveFile
        } else {
            LruList::ActiveAnon
        }
    }

    /// `is_active_lru`.
    pub const fn is_active(self) -> bool {
        matches!(self, LruList::ActiveAnon | LruList::ActiveFile)
    }

    /// `is_file_lru`.
    pub const fn is_file(self) -> bool {
        matches!(self, LruList::InactiveFile | LruList::ActiveFile)
    }

    /// The name `/proc/meminfo` gives its page count.
    pub const fn name(self) -> &'static str {
        match self {
            LruList::InactiveAnon => "Inactive(anon)",
            LruList::ActiveAnon => "Active(anon)",
            LruList::InactiveFile => "Inactive(file)",
            LruList::ActiveFile => "Active(file)",
            LruList::Unevictable => "Unevictable",
        }
    }

    /// The list a stored tag names (`LruList as u8`).
    pub fn from_u8(v: u8) -> Option<LruList> {
        LruList::ALL.get(v as usize).copied()
    }
}

/// A page's LRU links and flags (the `lru` list_head and LRU bits of
/// `struct page`). Storage holds one per frame, all [`LruNode::EMPTY`] at
/// first. `EMPTY` is all zero bytes (the links are stored plus one, 0
/// meaning none), so storage in memory fresh from the VMM needs no
/// initialisation, as the guest's vmemmap does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct LruNode {
    /// Next node index plus one (0: none); see [`LruNode::next`].
    next1: u32,
    /// Previous node index plus one (0: none).
    prev1: u32,
    /// `flags::PG_*` bits.
    pub flags: u8,
    /// The list it is on (`LruList as u8`), meaningful with `PG_LRU`.
    lru: u8,
    /// The lruvec whose list it is on ([`LruLists::id`]), meaningful with
    /// `PG_LRU` (Linux finds it from the folio's memcg and node; recorded
    /// here so a page stays findable whatever happens to its charge, and
    /// so the host can check it against the page's node and group).
    vec: u16,
}

impl LruNode {
    /// A page on no list.
    pub const EMPTY: LruNode = LruNode { next1: 0, prev1: 0, flags: 0, lru: 0, vec: 0 };

    /// The next node's index, or [`NIL`].
    #[inline]
    fn next(&self) -> u32 {
        self.next1.wrapping_sub(1)
    }

    /// The previous node's index, or [`NIL`].
    #[inline]
    fn prev(&self) -> u32 {
        self.prev1.wrapping_sub(1)
    }

    #[inline]
    fn set_next(&mut self, i: u32) {
        self.next1 = i.wrapping_add(1);
    }

    #[inline]
    fn set_prev(&mut self, i: u32) {
        self.prev1 = i.wrapping_add(1);
    }

    /// The list tag (`LruList as u8`), meaningful with `PG_LRU` (the host's
    /// `--verify lru` reads it from guest memory).
    pub fn lru_tag(&self) -> u8 {
        self.lru
    }

    /// The lruvec id (bytes 10..12 of the node, little-endian), meaningful
    /// with `PG_LRU`.
    pub fn lruvec_id(&self) -> u16 {
        self.vec
    }
}

const _: () = assert!(core::mem::size_of::<LruNode>() == 12);

impl Default for LruNode {
    fn default() -> Self {
        LruNode::EMPTY
    }
}

/// Why an LRU operation failed (caller bugs reported, not panicked on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LruError {
    /// The pfn has no node in this lruvec's storage.
    OutOfRange(u64),
    /// `folio_add_lru` of a page already on a list or isolated.
    AlreadyOnLru(u64),
    /// The page is not on an LRU list.
    NotOnLru(u64),
    /// The storage has too many nodes for `u32` links.
    TooLarge(usize),
    /// The page is on another lruvec's lists.
    OtherLruvec(u64),
    /// No lruvec has this id.
    NoLruvec(u16),
    /// The set's lruvecs may only be replaced while no page is on them.
    NotEmpty,
}

impl fmt::Display for LruError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LruError::OutOfRange(p) => write!(f, "pfn {p:#x} is outside this lruvec"),
            LruError::AlreadyOnLru(p) => write!(f, "pfn {p:#x} is already on an LRU list"),
            LruError::NotOnLru(p) => write!(f, "pfn {p:#x} is not on an LRU list"),
            LruError::TooLarge(n) => write!(f, "{n:#x} nodes are too many for an lruvec"),
            LruError::OtherLruvec(p) => write!(f, "pfn {p:#x} is on another lruvec"),
            LruError::NoLruvec(id) => write!(f, "no lruvec {id:#x}"),
            LruError::NotEmpty => write!(f, "lruvecs replaced while pages are on them"),
        }
    }
}

#[cfg(any(test, feature = "std"))]
impl std::error::Error for LruError {}

/// What `folio_referenced` found for a page: the young PTEs mapping it
/// (cleared while counting) and the `VM_*` flags of the VMAs they are in
/// that matter to reclaim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Referenced {
    /// PTEs with the accessed bit set.
    pub ptes: u32,
    /// A mapping VMA is `VM_EXEC` (file pages of programs get activated).
    pub vm_exec: bool,
    /// A mapping VMA is `VM_LOCKED` (the page belongs on the unevictable
    /// list).
    pub vm_locked: bool,
}

/// What became of a page reclaim tried to free (the ends of
/// `shrink_folio_list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReclaimOutcome {
    /// Unmapped everywhere and freed (or handed to writeback and then
    /// freed); `io` says whether it cost a write (swap-out, dirty file).
    /// The page is off the LRU: the caller must not `folio_del_lru` it.
    Freed {
        /// A write was needed.
        io: bool,
    },
    /// Could not be freed now (busy, I/O error, writeback pending): back
    /// to the inactive list (`keep_locked`).
    Keep,
    /// Should not be reclaimed (no swap space, mapped in a way that can't
    /// be unmapped): activate (`activate_locked`).
    Activate,
    /// A lazily freed page (MADV_FREE) that was written again since: it
    /// is swap-backed again and goes to the active anon list (Linux's
    /// `try_to_unmap_one` sets `PG_swapbacked` and reclaim activates it).
    Redirtied,
}

/// The caller's side of reclaim: page tables, rmap, swap and the page
/// allocator, which the list logic does not know.
pub trait ReclaimOps {
    /// `folio_referenced`: walk the page's rmap, count the PTEs mapping it
    /// whose accessed bit is set and clear them (flushing the TLB entry).
    fn folio_referenced(&mut self, pfn: u64) -> Referenced;

    /// Try to free the page (`shrink_folio_list`'s work after the
    /// reference check): for anon, `add_to_swap` then `try_to_unmap` then
    /// `pageout`; for file, unmap and drop if clean. `shadow` is the
    /// workingset entry to leave in its swap or page-cache slot if it is
    /// freed. `clean_only` (`FOLIOREF_RECLAIM_CLEAN`): a referenced file
    /// page may be dropped if clean but not written back.
    fn reclaim_folio(&mut self, pfn: u64, anon: bool, shadow: Shadow, clean_only: bool) -> ReclaimOutcome;

    /// Whether this reclaim must leave the page alone (for a caller whose
    /// lruvec mixes pages it may and may not reclaim: the page goes back
    /// to the head of its list unscanned, so the scan moves on; with an
    /// lruvec per memory cgroup, Linux's and the guest's, a protected
    /// group's whole lruvec is skipped instead).
    fn protected(&mut self, _pfn: u64) -> bool {
        false
    }
}

/// A workingset shadow entry (`pack_shadow`): the eviction count, the
/// lruvec the page was evicted from (Linux packs the memcg id and node),
/// and whether the page was part of the workingset (`PG_workingset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shadow(pub u64);

/// Bits of the eviction counter kept in a shadow.
const EVICTION_BITS: u32 = 47;
const EVICTION_MASK: u64 = (1 << EVICTION_BITS) - 1;
/// Where the lruvec id sits (above the workingset bit).
const SHADOW_ID_SHIFT: u32 = 1;
/// Where the eviction count sits (above the lruvec id).
const SHADOW_EVICTION_SHIFT: u32 = 17;

impl Shadow {
    /// A shadow of lruvec 0 (the tests' lone lruvecs).
    #[cfg(test)]
    fn pack(eviction: u64, workingset: bool) -> Shadow {
        Shadow::pack_in(eviction, workingset, 0)
    }
    fn pack_in(eviction: u64, workingset: bool, id: u16) -> Shadow {
        Shadow(
            ((eviction & EVICTION_MASK) << SHADOW_EVICTION_SHIFT)
                | (u64::from(id) << SHADOW_ID_SHIFT)
                | workingset as u64,
        )
    }
    /// The eviction count it recorded.
    pub fn eviction(self) -> u64 {
        (self.0 >> SHADOW_EVICTION_SHIFT) & EVICTION_MASK
    }
    /// The id of the lruvec the page was evicted from.
    pub fn lruvec_id(self) -> u16 {
        (self.0 >> SHADOW_ID_SHIFT) as u16
    }
    /// Whether the page was in the workingset when evicted.
    pub fn workingset(self) -> bool {
        self.0 & 1 != 0
    }
}

/// Event counters (`/proc/vmstat`'s names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LruStats {
    /// Pages scanned on inactive lists by kswapd (`pgscan_kswapd`).
    pub pgscan_kswapd: u64,
    /// ... by direct reclaim (`pgscan_direct`).
    pub pgscan_direct: u64,
    /// Pages reclaimed by kswapd (`pgsteal_kswapd`).
    pub pgsteal_kswapd: u64,
    /// ... by direct reclaim (`pgsteal_direct`).
    pub pgsteal_direct: u64,
    /// Pages moved to an active list (`pgactivate`).
    pub pgactivate: u64,
    /// Pages moved from an active to an inactive list (`pgdeactivate`).
    pub pgdeactivate: u64,
    /// Pages rotated back onto the same list by reclaim (`pgrotated`,
    /// kept and rotated active pages).
    pub pgrotated: u64,
    /// Refaults seen, anon and file (`workingset_refault_anon/_file`).
    pub workingset_refault: [u64; 2],
    /// Refaults activated (`workingset_activate_anon/_file`).
    pub workingset_activate: [u64; 2],
    /// Activated refaults that had been in the workingset
    /// (`workingset_restore_anon/_file`).
    pub workingset_restore: [u64; 2],
    /// Pages culled to the unevictable list (`unevictable_pgs_culled`).
    pub unevictable_pgs_culled: u64,
    /// Pages MADV_FREE marked lazily freed (`pglazyfree`).
    pub pglazyfree: u64,
}

impl LruStats {
    /// `pgscan` (kswapd + direct).
    pub fn pgscan(&self) -> u64 {
        self.pgscan_kswapd + self.pgscan_direct
    }
    /// `pgsteal` (kswapd + direct).
    pub fn pgsteal(&self) -> u64 {
        self.pgsteal_kswapd + self.pgsteal_direct
    }
}

/// One reclaim invocation's parameters and results (`struct scan_control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanControl {
    /// Pages to free before stopping (`nr_to_reclaim`).
    pub nr_to_reclaim: u64,
    /// Scan `size >> priority` pages per list per round (`priority`).
    pub priority: u32,
    /// `vm.swappiness`, 0..=200.
    pub swappiness: u32,
    /// Anon pages may be reclaimed: swap is on and has free slots
    /// (`may_swap && can_reclaim_anon_pages`).
    pub may_swap: bool,
    /// The file lists plus free memory are below the high watermarks
    /// (`file_is_tiny`): reclaim anon only.
    pub file_is_tiny: bool,
    /// kswapd (counts `*_kswapd`) or direct reclaim (`*_direct`).
    pub kswapd: bool,
    /// Pages scanned on inactive lists so far (`nr_scanned`).
    pub nr_scanned: u64,
    /// Pages freed so far (`nr_reclaimed`).
    pub nr_reclaimed: u64,
}

impl ScanControl {
    /// A request for `nr_to_reclaim` pages at `DEF_PRIORITY`.
    pub fn new(nr_to_reclaim: u64, swappiness: u32, may_swap: bool, kswapd: bool) -> ScanControl {
        ScanControl {
            nr_to_reclaim,
            priority: DEF_PRIORITY,
            swappiness: swappiness.min(MAX_SWAPPINESS),
            may_swap,
            file_is_tiny: false,
            kswapd,
            nr_scanned: 0,
            nr_reclaimed: 0,
        }
    }
}

/// `int_sqrt` (lib/math/int_sqrt.c: bit by bit, no floating point, which
/// the guest's ring 0 cannot use).
fn int_sqrt(mut x: u64) -> u64 {
    if x < 2 {
        return x;
    }
    let mut m = 1u64 << ((63 - x.leading_zeros()) & !1);
    let mut y = 0;
    while m != 0 {
        let b = y + m;
        y >>= 1;
        if x >= b {
            x -= b;
            y += m;
        }
        m >>= 2;
    }
    y
}

/// Pages isolated from a list for one scan batch.
struct Batch {
    idx: [u32; SWAP_CLUSTER_MAX as usize],
    len: usize,
}

impl Batch {
    fn as_slice(&self) -> &[u32] {
        &self.idx[..self.len]
    }
}

/// The lists of one lruvec without the per-page links (Linux's `struct
/// lruvec` proper): heads, tails, counts, the aging state and the event
/// counters. The links live in a per-pfn [`LruNode`] array that several
/// lruvecs can share, as `struct page`'s `lru` field is shared by every
/// lruvec of the system: a node records which lruvec's lists it is on
/// (its `id`), so an operation on a page finds its lruvec as Linux's
/// `folio_lruvec` does, and no page can be on two lruvecs at once.
#[derive(Debug, Clone)]
pub struct LruLists {
    /// Which lruvec this is in its [`LruSet`] (stored in the nodes of its
    /// pages).
    id: u16,
    head: [u32; NR_LRU_LISTS],
    tail: [u32; NR_LRU_LISTS],
    nr: [u64; NR_LRU_LISTS],
    /// Recent reclaim cost of anon and file (`anon_cost`, `file_cost`).
    cost: [u64; 2],
    /// Evictions and activations so far (`nonresident_age`).
    nonresident_age: u64,
    /// Refault counts at the last reclaim (`refaults[]`), to see whether
    /// the workingset is moving.
    refaults_snapshot: [u64; 2],
    /// The event counters.
    pub stat: LruStats,
}

impl LruLists {
    /// Empty lists for lruvec `id`.
    pub const fn new(id: u16) -> LruLists {
        LruLists {
            id,
            head: [NIL; NR_LRU_LISTS],
            tail: [NIL; NR_LRU_LISTS],
            nr: [0; NR_LRU_LISTS],
            cost: [0; 2],
            nonresident_age: 0,
            refaults_snapshot: [0; 2],
            stat: LruStats {
                pgscan_kswapd: 0,
                pgscan_direct: 0,
                pgsteal_kswapd: 0,
                pgsteal_direct: 0,
                pgactivate: 0,
                pgdeactivate: 0,
                pgrotated: 0,
                workingset_refault: [0; 2],
                workingset_activate: [0; 2],
                workingset_restore: [0; 2],
                unevictable_pgs_culled: 0,
                pglazyfree: 0,
            },
        }
    }

    /// The lruvec's id (what its pages' nodes record).
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Pages on a list.
    pub fn nr(&self, lru: LruList) -> u64 {
        self.nr[lru as usize]
    }

    /// Pages on the evictable lists.
    pub fn nr_evictable(&self) -> u64 {
        LruList::EVICTABLE.iter().map(|&l| self.nr(l)).sum()
    }
}

/// The LRU lists of a node (Linux's `struct lruvec`) over node storage `S`
/// (a `Vec<LruNode>` or a slice; node `i` is pfn `base_pfn + i`) and list
/// state `L`: its own [`LruLists`] (a lone lruvec), or borrowed ones
/// (`&mut LruLists`: one lruvec of an [`LruSet`], over the set's shared
/// storage; `&LruLists` with `&[LruNode]` for reading).
pub struct Lruvec<S = Vec<LruNode>, L = LruLists> {
    nodes: S,
    base_pfn: u64,
    lists: L,
}

impl Lruvec<Vec<LruNode>> {
    /// An lruvec for `nr_pages` frames from `base_pfn`, with its own
    /// storage.
    pub fn new(base_pfn: u64, nr_pages: usize) -> Result<Self, LruError> {
        Lruvec::with_storage(vec![LruNode::EMPTY; nr_pages], base_pfn)
    }
}

impl<S: AsRef<[LruNode]>> Lruvec<S> {
    /// An lruvec (id 0) over caller storage whose nodes must all be
    /// [`LruNode::EMPTY`].
    pub fn with_storage(nodes: S, base_pfn: u64) -> Result<Self, LruError> {
        check_len(nodes.as_ref().len())?;
        Ok(Lruvec { nodes, base_pfn, lists: LruLists::new(0) })
    }
}

/// Storage of `n` nodes fits `u32` links.
fn check_len(n: usize) -> Result<(), LruError> {
    if n >= (NIL - 1) as usize {
        return Err(LruError::TooLarge(n));
    }
    Ok(())
}

impl<S: AsRef<[LruNode]>, L: Borrow<LruLists>> Lruvec<S, L> {
    fn l(&self) -> &LruLists {
        self.lists.borrow()
    }

    /// This lruvec's id.
    pub fn id(&self) -> u16 {
        self.l().id
    }

    /// The list state (counts and event counters).
    pub fn lists(&self) -> &LruLists {
        self.l()
    }

    /// The event counters.
    pub fn stat(&self) -> &LruStats {
        &self.l().stat
    }

    fn idx(&self, pfn: u64) -> Result<u32, LruError> {
        let i = pfn.checked_sub(self.base_pfn).ok_or(LruError::OutOfRange(pfn))?;
        if i >= self.nodes.as_ref().len() as u64 {
            return Err(LruError::OutOfRange(pfn));
        }
        Ok(i as u32)
    }

    fn pfn(&self, idx: u32) -> u64 {
        self.base_pfn + idx as u64
    }

    fn node(&self, i: u32) -> &LruNode {
        &self.nodes.as_ref()[i as usize]
    }

    /// Pages on a list (`lruvec_page_state(NR_LRU_BASE + lru)`).
    pub fn nr(&self, lru: LruList) -> u64 {
        self.l().nr[lru as usize]
    }

    /// Pages on the evictable lists.
    pub fn nr_evictable(&self) -> u64 {
        LruList::EVICTABLE.iter().map(|&l| self.nr(l)).sum()
    }

    /// The list a page is on, if any.
    pub fn folio_lru(&self, pfn: u64) -> Option<LruList> {
        let n = self.node(self.idx(pfn).ok()?);
        if n.flags & PG_LRU == 0 || n.vec != self.l().id {
            return None;
        }
        LruList::from_u8(n.lru)
    }

    /// A page's LRU flags (`PG_*` of [`flags`]).
    pub fn folio_flags(&self, pfn: u64) -> Option<u8> {
        Some(self.node(self.idx(pfn).ok()?).flags)
    }

    /// The pages of a list, head (newest) to tail (oldest).
    pub fn list(&self, lru: LruList) -> impl Iterator<Item = u64> + '_ {
        let mut cur = self.l().head[lru as usize];
        core::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let i = cur;
            cur = self.node(i).next();
            Some(self.pfn(i))
        })
    }

    /// The eviction/activation clock (`nonresident_age`).
    pub fn nonresident_age(&self) -> u64 {
        self.l().nonresident_age
    }

    /// Recent reclaim cost of anon and file (`anon_cost`, `file_cost`).
    pub fn cost(&self) -> [u64; 2] {
        self.l().cost
    }

    /// The list a page with these flags belongs on (`folio_lru_list`).
    fn lru_of(flags: u8) -> LruList {
        if flags & PG_UNEVICTABLE != 0 {
            LruList::Unevictable
        } else {
            let file = flags & PG_SWAPBACKED == 0;
            if flags & PG_ACTIVE != 0 {
                LruList::active(file)
            } else {
                LruList::inactive(file)
            }
        }
    }

    /// `inactive_is_low`: whether the inactive list of this type is small
    /// against the active one (`inactive * inactive_ratio < active`), so
    /// the active list should be aged.
    pub fn inactive_is_low(&self, inactive_lru: LruList) -> bool {
        let file = inactive_lru.is_file();
        let inactive = self.nr(LruList::inactive(file));
        let active = self.nr(LruList::active(file));
        // GiB of this type's pages (4 KiB pages: >> 18).
        let gb = (inactive + active) >> 18;
        let inactive_ratio = if gb > 0 { int_sqrt(10 * gb) } else { 1 };
        inactive * inactive_ratio < active
    }

    /// `get_scan_count`: how many pages of each evictable list to scan in
    /// this round, `[inactive anon, active anon, inactive file, active
    /// file]`: `size >> priority`, split between anon and file by
    /// swappiness weighted against each type's recent cost (`SCAN_FRACT`),
    /// or all one type when the other cannot or should not be reclaimed.
    pub fn get_scan_count(&self, sc: &ScanControl) -> [u64; 4] {
        enum Balance {
            Equal,
            Fract,
            File,
            Anon,
        }
        let swappiness = sc.swappiness.min(MAX_SWAPPINESS) as u64;
        let balance = if !sc.may_swap {
            Balance::File
        } else if sc.priority == 0 && swappiness > 0 {
            // Near OOM: scan everything equally.
            Balance::Equal
        } else if sc.file_is_tiny {
            Balance::Anon
        } else {
            Balance::Fract
        };
        // anon_cost and file_cost, each counted against the sum (Linux's
        // arithmetic: a type's own cost weighs double).
        let total = self.l().cost[0] + self.l().cost[1];
        let anon_cost = total + self.l().cost[0];
        let file_cost = total + self.l().cost[1];
        let total = anon_cost + file_cost;
        let ap = swappiness * (total + 1) / (anon_cost + 1);
        let fp = (MAX_SWAPPINESS as u64 - swappiness) * (total + 1) / (file_cost + 1);
        let denominator = ap + fp;
        let mut nr = [0u64; 4];
        for (k, &lru) in LruList::EVICTABLE.iter().enumerate() {
            let file = lru.is_file();
            let scan = self.nr(lru) >> sc.priority.min(63);
            nr[k] = match balance {
                Balance::Equal => scan,
                Balance::Fract => {
                    let frac = if file { fp } else { ap };
                    // DIV64_U64_ROUND_UP, as for global reclaim.
                    if denominator == 0 {
                        0
                    } else {
                        (scan * frac).div_ceil(denominator)
                    }
                }
                Balance::File => scan * file as u64,
                Balance::Anon => scan * !file as u64,
            };
        }
        nr
    }

    /// Checks the lists: links consistent both ways, counts right, every
    /// page with `PG_LRU` on exactly the list its flags name.
    pub fn verify(&self) -> Result<(), &'static str> {
        let nodes = self.nodes.as_ref();
        let mut seen = 0u64;
        for lru in LruList::ALL {
            let l = lru as usize;
            let mut prev = NIL;
            let mut cur = self.l().head[l];
            let mut n = 0u64;
            while cur != NIL {
                let node = nodes.get(cur as usize).ok_or("link out of range")?;
                if node.prev() != prev {
                    return Err("prev link broken");
                }
                if node.flags & PG_LRU == 0 || node.lru != lru as u8 {
                    return Err("page on a list without PG_LRU or with another list's tag");
                }
                if node.vec != self.l().id {
                    return Err("page on a list of another lruvec than its node names");
                }
                if Self::lru_of(node.flags) != lru {
                    return Err("page on a list its flags do not name");
                }
                n += 1;
                if n > nodes.len() as u64 {
                    return Err("list loops");
                }
                prev = cur;
                cur = node.next();
            }
            if self.l().tail[l] != prev {
                return Err("tail broken");
            }
            if n != self.l().nr[l] {
                return Err("list count wrong");
            }
            seen += n;
        }
        let id = self.l().id;
        let flagged = nodes.iter().filter(|n| n.flags & PG_LRU != 0 && n.vec == id).count() as u64;
        if flagged != seen {
            return Err("PG_LRU pages missing from the lists");
        }
        Ok(())
    }

    /// The index of `pfn`, failing if the page is on another lruvec's
    /// lists (an isolated page, off every list, is anyone's).
    fn own_idx(&self, pfn: u64) -> Result<u32, LruError> {
        let i = self.idx(pfn)?;
        let n = self.node(i);
        if n.flags & PG_LRU != 0 && n.vec != self.l().id {
            return Err(LruError::OtherLruvec(pfn));
        }
        Ok(i)
    }
}

impl<S: AsRef<[LruNode]> + AsMut<[LruNode]>, L: BorrowMut<LruLists>> Lruvec<S, L> {
    fn lm(&mut self) -> &mut LruLists {
        self.lists.borrow_mut()
    }

    fn node_mut(&mut self, i: u32) -> &mut LruNode {
        &mut self.nodes.as_mut()[i as usize]
    }

    /// Links `i` at the head of `lru` and sets `PG_LRU`.
    fn add_head(&mut self, i: u32, lru: LruList) {
        let l = lru as usize;
        let old = self.lm().head[l];
        let id = self.l().id;
        {
            let n = self.node_mut(i);
            n.vec = id;
            n.set_next(old);
            n.set_prev(NIL);
            n.lru = lru as u8;
            n.flags |= PG_LRU;
        }
        if old != NIL {
            self.node_mut(old).set_prev(i);
        } else {
            self.lm().tail[l] = i;
        }
        self.lm().head[l] = i;
        self.lm().nr[l] += 1;
    }

    /// Unlinks `i` from its list and clears `PG_LRU` (isolation).
    fn unlink(&mut self, i: u32) {
        let node = *self.node(i);
        let (next, prev, l) = (node.next(), node.prev(), node.lru as usize);
        if prev != NIL {
            self.node_mut(prev).set_next(next);
        } else {
            self.lm().head[l] = next;
        }
        if next != NIL {
            self.node_mut(next).set_prev(prev);
        } else {
            self.lm().tail[l] = prev;
        }
        let n = self.node_mut(i);
        n.set_next(NIL);
        n.set_prev(NIL);
        n.flags &= !PG_LRU;
        self.lm().nr[l] -= 1;
    }

    /// Puts an isolated page back on the list its flags name
    /// (`folio_putback_lru` / `move_folios_to_lru`).
    fn putback(&mut self, i: u32) {
        let lru = Self::lru_of(self.node(i).flags);
        self.add_head(i, lru);
    }

    /// `folio_add_lru` (`lru_cache_add_inactive_or_unevictable`): a new
    /// user page, anon (swap-backed) or file, joins the inactive list.
    pub fn folio_add_lru(&mut self, pfn: u64, anon: bool) -> Result<(), LruError> {
        let i = self.own_idx(pfn)?;
        if self.node(i).flags & PG_LRU != 0 {
            return Err(LruError::AlreadyOnLru(pfn));
        }
        self.node_mut(i).flags = if anon { PG_SWAPBACKED } else { 0 };
        self.putback(i);
        Ok(())
    }

    /// A page read back in after eviction joins the LRU; `shadow` is what
    /// its eviction left. Runs `workingset_refault` first, so a recent
    /// refault starts on the active list. `swap_on` says whether anon can
    /// be reclaimed (its lists count towards the workingset then). Returns
    /// whether it was activated.
    pub fn folio_add_lru_refault(
        &mut self,
        pfn: u64,
        anon: bool,
        shadow: Shadow,
        swap_on: bool,
    ) -> Result<bool, LruError> {
        let i = self.own_idx(pfn)?;
        if self.node(i).flags & PG_LRU != 0 {
            return Err(LruError::AlreadyOnLru(pfn));
        }
        let (activate, restore) = self.workingset_refault(shadow, !anon, swap_on);
        self.add_judged(i, anon, activate, restore);
        Ok(activate)
    }

    /// A page whose refault another lruvec judged (the one it was evicted
    /// from, [`LruSet::folio_add_lru_refault`]) joins this one, active or
    /// not as judged.
    fn folio_add_lru_judged(&mut self, pfn: u64, anon: bool, activate: bool, restore: bool) -> Result<(), LruError> {
        let i = self.own_idx(pfn)?;
        if self.node(i).flags & PG_LRU != 0 {
            return Err(LruError::AlreadyOnLru(pfn));
        }
        self.add_judged(i, anon, activate, restore);
        Ok(())
    }

    fn add_judged(&mut self, i: u32, anon: bool, activate: bool, restore: bool) {
        let mut f = if anon { PG_SWAPBACKED } else { 0 };
        if activate {
            f |= PG_ACTIVE;
            if restore {
                f |= PG_WORKINGSET;
            }
        }
        self.node_mut(i).flags = f;
        self.putback(i);
    }

    /// `folio_del_lru` (`lruvec_del_folio` before the page is freed):
    /// takes the page off its list and clears its LRU state.
    pub fn folio_del_lru(&mut self, pfn: u64) -> Result<(), LruError> {
        let i = self.own_idx(pfn)?;
        if self.node(i).flags & PG_LRU == 0 {
            return Err(LruError::NotOnLru(pfn));
        }
        self.unlink(i);
        *self.node_mut(i) = LruNode::EMPTY;
        Ok(())
    }

    /// `folio_mark_accessed`: first access sets `PG_referenced`, a second
    /// one activates an inactive page (`folio_activate`), clearing it.
    pub fn mark_page_accessed(&mut self, pfn: u64) -> Result<(), LruError> {
        let i = self.own_idx(pfn)?;
        let f = self.node(i).flags;
        if f & PG_LRU == 0 {
            return Err(LruError::NotOnLru(pfn));
        }
        if f & PG_REFERENCED == 0 {
            self.node_mut(i).flags |= PG_REFERENCED;
        } else if f & (PG_UNEVICTABLE | PG_ACTIVE) == 0 {
            self.unlink(i);
            self.node_mut(i).flags = (f | PG_ACTIVE) & !PG_REFERENCED;
            self.putback(i);
            self.lm().stat.pgactivate += 1;
            // workingset_activation.
            self.lm().nonresident_age += 1;
        }
        Ok(())
    }

    /// `mlock`: the page goes to the unevictable list.
    pub fn folio_mlock(&mut self, pfn: u64) -> Result<(), LruError> {
        let i = self.own_idx(pfn)?;
        if self.node(i).flags & PG_LRU == 0 {
            return Err(LruError::NotOnLru(pfn));
        }
        self.unlink(i);
        self.node_mut(i).flags |= PG_UNEVICTABLE;
        self.node_mut(i).flags &= !PG_ACTIVE;
        self.putback(i);
        Ok(())
    }

    /// `munlock`: an unevictable page goes back to the inactive list.
    pub fn folio_munlock(&mut self, pfn: u64) -> Result<(), LruError> {
        let i = self.own_idx(pfn)?;
        if self.node(i).flags & PG_LRU == 0 {
            return Err(LruError::NotOnLru(pfn));
        }
        if self.node(i).flags & PG_UNEVICTABLE != 0 {
            self.unlink(i);
            self.node_mut(i).flags &= !PG_UNEVICTABLE;
            self.putback(i);
        }
        Ok(())
    }

    /// `folio_deactivate` (MADV_COLD's `lru_deactivate_fn`): an evictable
    /// page that is active or referenced goes to the head of its inactive
    /// list with both cleared, so reclaim takes it before the pages that
    /// were merely not used lately. Returns whether it moved.
    pub fn folio_deactivate(&mut self, pfn: u64) -> Result<bool, LruError> {
        let i = self.own_idx(pfn)?;
        let f = self.node(i).flags;
        if f & PG_LRU == 0 {
            return Err(LruError::NotOnLru(pfn));
        }
        if f & PG_UNEVICTABLE != 0 || f & (PG_ACTIVE | PG_REFERENCED) == 0 {
            return Ok(false);
        }
        self.unlink(i);
        self.node_mut(i).flags &= !(PG_ACTIVE | PG_REFERENCED);
        self.putback(i);
        if f & PG_ACTIVE != 0 {
            self.lm().stat.pgdeactivate += 1;
        }
        Ok(true)
    }

    /// `reclaim_pages` (MADV_PAGEOUT's `reclaim_folio_list` with
    /// `ignore_references`): each page of `pfns` that is on an evictable
    /// list is isolated and offered to `ops.reclaim_folio` at once,
    /// whatever its accessed bits and list say (the caller asked for it to
    /// go); a page ops keeps goes back on its inactive list, one it
    /// activates on its active list. Pages off the LRU (isolated by
    /// someone else, or not user pages) and unevictable ones are skipped.
    /// No pgscan/pgsteal: those count scans of the lists, as Linux's.
    /// Returns the pages freed.
    pub fn reclaim_pages<O: ReclaimOps + ?Sized>(&mut self, pfns: &[u64], ops: &mut O) -> u64 {
        let (mut reclaimed, mut nr_io) = ([0u64; 2], [0u64; 2]);
        for &pfn in pfns {
            let Ok(i) = self.own_idx(pfn) else { continue };
            let f = self.node(i).flags;
            if f & PG_LRU == 0 || f & PG_UNEVICTABLE != 0 {
                continue;
            }
            self.unlink(i);
            // `folio_clear_active` before `shrink_folio_list`: a page that
            // survives goes back inactive.
            self.node_mut(i).flags &= !(PG_ACTIVE | PG_REFERENCED);
            let file = f & PG_SWAPBACKED == 0;
            let shadow = Shadow::pack_in(self.l().nonresident_age, f & PG_WORKINGSET != 0, self.l().id);
            match ops.reclaim_folio(pfn, !file, shadow, false) {
                ReclaimOutcome::Freed { io } => {
                    self.lm().nonresident_age += 1;
                    *self.node_mut(i) = LruNode::EMPTY;
                    reclaimed[file as usize] += 1;
                    nr_io[file as usize] += io as u64;
                }
                ReclaimOutcome::Keep => self.putback(i),
                ReclaimOutcome::Activate => self.activate(i),
                ReclaimOutcome::Redirtied => self.redirtied(i),
            }
        }
        for file in [false, true] {
            if reclaimed[file as usize] > 0 {
                self.lru_note_cost(file, nr_io[file as usize], 0);
            }
        }
        reclaimed[0] + reclaimed[1]
    }

    /// `isolate_lru_folios`: up to `nr` (at most [`SWAP_CLUSTER_MAX`])
    /// pages from the tail of `lru`. A fixed batch, not a heap vector: the
    /// guest reclaims under its page-allocator lock, where allocating
    /// would recurse into that lock.
    fn isolate_lru_folios(&mut self, nr: u64, lru: LruList) -> Batch {
        let mut out = Batch { idx: [0; SWAP_CLUSTER_MAX as usize], len: 0 };
        while (out.len as u64) < nr.min(SWAP_CLUSTER_MAX) {
            let t = self.lm().tail[lru as usize];
            if t == NIL {
                break;
            }
            self.unlink(t);
            out.idx[out.len] = t;
            out.len += 1;
        }
        out
    }

    /// `lru_note_cost`: reclaim of a type cost `nr_io` writes and
    /// `nr_rotated` rotations; the costs decay by half once they pass a
    /// quarter of the LRU size, so they follow recent behaviour.
    fn lru_note_cost(&mut self, file: bool, nr_io: u64, nr_rotated: u64) {
        self.lm().cost[file as usize] += nr_io * SWAP_CLUSTER_MAX + nr_rotated;
        let lrusize = self.nr_evictable();
        if self.lm().cost[0] + self.lm().cost[1] > lrusize / 4 {
            self.lm().cost[0] /= 2;
            self.lm().cost[1] /= 2;
        }
    }

    /// `shrink_active_list`: moves up to `nr_to_scan` pages from the tail
    /// of an active list to the inactive head, clearing their PTEs'
    /// accessed bits; referenced executable file pages stay active.
    pub fn shrink_active_list<O: ReclaimOps + ?Sized>(&mut self, nr_to_scan: u64, lru: LruList, ops: &mut O) {
        let file = lru.is_file();
        let hold = self.isolate_lru_folios(nr_to_scan, lru);
        let mut nr_rotated = 0;
        for &i in hold.as_slice() {
            let pfn = self.pfn(i);
            if ops.protected(pfn) {
                self.putback(i);
                continue;
            }
            let r = ops.folio_referenced(pfn);
            let n = self.node_mut(i);
            if r.vm_locked {
                n.flags = (n.flags | PG_UNEVICTABLE) & !PG_ACTIVE;
                self.lm().stat.unevictable_pgs_culled += 1;
            } else if r.ptes > 0 && r.vm_exec && file {
                nr_rotated += 1;
                self.lm().stat.pgrotated += 1;
            } else {
                n.flags = (n.flags & !PG_ACTIVE) | PG_WORKINGSET;
                self.lm().stat.pgdeactivate += 1;
            }
            self.putback(i);
        }
        self.lru_note_cost(file, 0, nr_rotated);
    }

    /// `shrink_inactive_list` with `shrink_folio_list`'s reference check:
    /// scans up to `nr_to_scan` pages from the tail of an inactive list,
    /// reclaiming the unreferenced ones through `ops`. Returns the number
    /// freed.
    pub fn shrink_inactive_list<O: ReclaimOps + ?Sized>(
        &mut self,
        nr_to_scan: u64,
        lru: LruList,
        sc: &mut ScanControl,
        ops: &mut O,
    ) -> u64 {
        let file = lru.is_file();
        let isolated = self.isolate_lru_folios(nr_to_scan, lru);
        // Protected groups' pages are not scanned (see
        // `ReclaimOps::protected`): back to the list head.
        let mut hold = Batch { idx: [0; SWAP_CLUSTER_MAX as usize], len: 0 };
        for &i in isolated.as_slice() {
            if ops.protected(self.pfn(i)) {
                self.putback(i);
            } else {
                hold.idx[hold.len] = i;
                hold.len += 1;
            }
        }
        let scanned = hold.len as u64;
        if sc.kswapd {
            self.lm().stat.pgscan_kswapd += scanned;
        } else {
            self.lm().stat.pgscan_direct += scanned;
        }
        sc.nr_scanned += scanned;
        let (mut reclaimed, mut nr_io) = (0, 0);
        for &i in hold.as_slice() {
            let pfn = self.pfn(i);
            // folio_check_references.
            let r = ops.folio_referenced(pfn);
            let f = self.node(i).flags;
            let referenced_folio = f & PG_REFERENCED != 0;
            self.node_mut(i).flags &= !PG_REFERENCED;
            if r.vm_locked {
                self.node_mut(i).flags |= PG_UNEVICTABLE;
                self.lm().stat.unevictable_pgs_culled += 1;
                self.putback(i);
                continue;
            }
            if r.ptes > 0 {
                self.node_mut(i).flags |= PG_REFERENCED;
                if referenced_folio || r.ptes > 1 || (r.vm_exec && file) {
                    self.activate(i);
                } else {
                    self.putback(i);
                }
                continue;
            }
            let clean_only = referenced_folio && file;
            let shadow = Shadow::pack_in(self.l().nonresident_age, f & PG_WORKINGSET != 0, self.l().id);
            match ops.reclaim_folio(pfn, f & PG_SWAPBACKED != 0, shadow, clean_only) {
                ReclaimOutcome::Freed { io } => {
                    // workingset_eviction ages the clock.
                    self.lm().nonresident_age += 1;
                    *self.node_mut(i) = LruNode::EMPTY;
                    reclaimed += 1;
                    nr_io += io as u64;
                }
                ReclaimOutcome::Keep => self.putback(i),
                ReclaimOutcome::Activate => self.activate(i),
                ReclaimOutcome::Redirtied => self.redirtied(i),
            }
        }
        if sc.kswapd {
            self.lm().stat.pgsteal_kswapd += reclaimed;
        } else {
            self.lm().stat.pgsteal_direct += reclaimed;
        }
        sc.nr_reclaimed += reclaimed;
        self.lru_note_cost(file, nr_io, scanned - reclaimed);
        reclaimed
    }

    /// `activate_locked`: an isolated page goes to its active list.
    fn activate(&mut self, i: u32) {
        self.node_mut(i).flags |= PG_ACTIVE;
        self.lm().stat.pgactivate += 1;
        self.putback(i);
    }

    /// A lazily freed page written again: swap-backed again, activated
    /// (onto the active anon list).
    fn redirtied(&mut self, i: u32) {
        self.node_mut(i).flags |= PG_SWAPBACKED;
        self.activate(i);
    }

    /// `folio_mark_lazyfree` (MADV_FREE's `lru_lazyfree_fn`): an anon page
    /// on an evictable list loses `PG_swapbacked` and goes to the head of
    /// the inactive file list with its active and referenced bits clear,
    /// so reclaim frees it without swap unless it is written again (the
    /// caller cleared its PTEs' dirty bits). Returns whether it moved
    /// (false for a page off the LRU, unevictable, or already not
    /// swap-backed); counts `pglazyfree`.
    pub fn folio_mark_lazyfree(&mut self, pfn: u64) -> Result<bool, LruError> {
        let i = self.own_idx(pfn)?;
        let f = self.node(i).flags;
        if f & PG_LRU == 0 {
            return Err(LruError::NotOnLru(pfn));
        }
        if f & PG_UNEVICTABLE != 0 || f & PG_SWAPBACKED == 0 {
            return Ok(false);
        }
        self.unlink(i);
        self.node_mut(i).flags &= !(PG_ACTIVE | PG_REFERENCED | PG_SWAPBACKED);
        self.putback(i);
        self.lm().stat.pglazyfree += 1;
        Ok(true)
    }

    /// `shrink_lruvec`: one round at `sc.priority`: scans the lists in
    /// batches of `SWAP_CLUSTER_MAX` by `get_scan_count`'s targets, ageing
    /// active lists whose inactive partner is low or refaulting
    /// (`may_deactivate`). Once `nr_to_reclaim` is met the remaining scan
    /// is cut back so anon and file stay in their target proportion
    /// (except for direct reclaim at `DEF_PRIORITY`, which finishes its
    /// batch). Then ages the active anon list once more if its inactive
    /// list is still low.
    pub fn shrink_lruvec<O: ReclaimOps + ?Sized>(&mut self, sc: &mut ScanControl, ops: &mut O) {
        // prepare_scan_count: deactivate a type whose inactive list is low
        // or whose workingset is refaulting.
        let mut may_deactivate = [false; 2];
        for (file, slot) in may_deactivate.iter_mut().enumerate() {
            let file_b = file == 1;
            *slot = self.lm().stat.workingset_activate[file] != self.lm().refaults_snapshot[file]
                || self.inactive_is_low(LruList::inactive(file_b));
        }
        let targets = self.get_scan_count(sc);
        let mut nr = targets;
        let start = sc.nr_reclaimed;
        // Direct reclaim at DEF_PRIORITY scans its whole batch (kswapd is
        // not keeping up: do the work at once); otherwise, once the target
        // is met, the scan is cut back proportionally, once.
        let mut scan_adjusted = !sc.kswapd && sc.priority == DEF_PRIORITY;
        // Active anon (index 1) is scanned alongside but does not keep the
        // loop going.
        while nr[0] > 0 || nr[2] > 0 || nr[3] > 0 {
            for (k, &lru) in LruList::EVICTABLE.iter().enumerate() {
                if nr[k] == 0 {
                    continue;
                }
                let n = nr[k].min(SWAP_CLUSTER_MAX);
                nr[k] -= n;
                if lru.is_active() {
                    if may_deactivate[lru.is_file() as usize] {
                        self.shrink_active_list(n, lru, ops);
                    }
                } else {
                    self.shrink_inactive_list(n, lru, sc, ops);
                }
            }
            if sc.nr_reclaimed - start < sc.nr_to_reclaim || scan_adjusted {
                continue;
            }
            // Target met: stop scanning the type with less scan left, and
            // scan the other only as far as its share of the original
            // targets says (it is vindictive to attack the larger once the
            // smaller is done).
            let nr_anon = nr[0] + nr[1];
            let nr_file = nr[2] + nr[3];
            if nr_anon == 0 || nr_file == 0 {
                break;
            }
            let (stop, other, percentage) = if nr_file > nr_anon {
                (0, 2, nr_anon * 100 / (targets[0] + targets[1] + 1))
            } else {
                (2, 0, nr_file * 100 / (targets[2] + targets[3] + 1))
            };
            nr[stop] = 0;
            nr[stop + 1] = 0;
            for k in [other, other + 1] {
                let scanned = targets[k] - nr[k];
                nr[k] = targets[k] * (100 - percentage) / 100;
                nr[k] -= nr[k].min(scanned);
            }
            scan_adjusted = true;
        }
        if sc.may_swap && self.inactive_is_low(LruList::InactiveAnon) {
            self.shrink_active_list(SWAP_CLUSTER_MAX, LruList::ActiveAnon, ops);
        }
        self.lm().refaults_snapshot = self.lm().stat.workingset_activate;
    }

    /// `do_try_to_free_pages` on this lruvec: `shrink_lruvec` at falling
    /// priorities (`DEF_PRIORITY` down to 0) until `nr_to_reclaim` pages
    /// are freed. Returns the number freed; 0 is no progress, which the
    /// allocator retries up to [`MAX_RECLAIM_RETRIES`] times before the OOM
    /// killer (a pass over young pages may only have aged them).
    pub fn try_to_free_pages<O: ReclaimOps + ?Sized>(&mut self, sc: &mut ScanControl, ops: &mut O) -> u64 {
        let start = sc.nr_reclaimed;
        loop {
            self.shrink_lruvec(sc, ops);
            if sc.nr_reclaimed - start >= sc.nr_to_reclaim || sc.priority == 0 {
                break;
            }
            sc.priority -= 1;
        }
        sc.nr_reclaimed - start
    }

    /// `workingset_refault` (`workingset_test_recent`): counts the
    /// refault, and says whether the page should start active (its refault
    /// distance fits in the workingset) and whether it is a workingset
    /// restore. Charges the refault to the type's reclaim cost.
    pub fn workingset_refault(&mut self, shadow: Shadow, file: bool, swap_on: bool) -> (bool, bool) {
        let t = file as usize;
        self.lm().stat.workingset_refault[t] += 1;
        // lru_note_cost_refault: one page of I/O.
        self.lru_note_cost(file, 1, 0);
        let refault_distance = self.lm().nonresident_age.wrapping_sub(shadow.eviction()) & EVICTION_MASK;
        let mut workingset_size = self.nr(LruList::ActiveFile);
        if !file {
            workingset_size += self.nr(LruList::InactiveFile);
        }
        if swap_on {
            workingset_size += self.nr(LruList::ActiveAnon);
            if file {
                workingset_size += self.nr(LruList::InactiveAnon);
            }
        }
        if refault_distance > workingset_size {
            return (false, false);
        }
        self.lm().nonresident_age += 1;
        self.lm().stat.workingset_activate[t] += 1;
        let restore = shadow.workingset();
        if restore {
            self.lm().stat.workingset_restore[t] += 1;
        }
        (true, restore)
    }
}

/// The id of the lruvec of memory cgroup `memcg` on NUMA node `node` in
/// an [`LruSet`] laid out node by node (Linux's `mem_cgroup_lruvec`:
/// `memcg->nodeinfo[nid]->lruvec`). The guest and the host's `--verify
/// lru` share this layout.
pub const fn lruvec_id(node: usize, memcg: usize) -> u16 {
    (node * crate::memcg::MAX_MEMCG + memcg % crate::memcg::MAX_MEMCG) as u16
}

/// The node an [`lruvec_id`] names.
pub const fn lruvec_node(id: u16) -> usize {
    id as usize / crate::memcg::MAX_MEMCG
}

/// The memory cgroup an [`lruvec_id`] names.
pub const fn lruvec_memcg(id: u16) -> usize {
    id as usize % crate::memcg::MAX_MEMCG
}

/// Several lruvecs over one per-pfn link array (the system's lruvecs,
/// one per memory cgroup and node, over `struct page`'s `lru` fields).
/// Lruvec `i` has id `i`; each page's node records the lruvec it is on,
/// so the per-page operations here find it themselves, and a new page
/// goes on the lruvec its caller names (from its node and charge).
pub struct LruSet<S = Vec<LruNode>> {
    nodes: S,
    base_pfn: u64,
    vecs: Vec<LruLists>,
}

impl LruSet<Vec<LruNode>> {
    /// A set of `nr_vecs` lruvecs over own storage for `nr_pages` frames
    /// from `base_pfn`.
    pub fn new(base_pfn: u64, nr_pages: usize, nr_vecs: usize) -> Result<Self, LruError> {
        let mut s = LruSet::with_storage(vec![LruNode::EMPTY; nr_pages], base_pfn)?;
        s.set_lruvecs(LruSet::<Vec<LruNode>>::fresh_lruvecs(nr_vecs)?)?;
        Ok(s)
    }
}

impl<S: AsRef<[LruNode]>> LruSet<S> {
    /// A set over caller storage whose nodes must all be
    /// [`LruNode::EMPTY`], with no lruvecs yet ([`LruSet::set_lruvecs`]
    /// installs them: a caller whose allocator is not up yet, as the
    /// guest's at boot, makes the set first and the lists later).
    pub fn with_storage(nodes: S, base_pfn: u64) -> Result<Self, LruError> {
        check_len(nodes.as_ref().len())?;
        Ok(LruSet { nodes, base_pfn, vecs: Vec::new() })
    }

    /// `n` empty lruvecs with ids `0..n`, for [`LruSet::set_lruvecs`].
    pub fn fresh_lruvecs(n: usize) -> Result<Vec<LruLists>, LruError> {
        if n > u16::MAX as usize + 1 {
            return Err(LruError::NoLruvec(u16::MAX));
        }
        Ok((0..n).map(|i| LruLists::new(i as u16)).collect())
    }

    /// Number of lruvecs.
    pub fn nr_lruvecs(&self) -> usize {
        self.vecs.len()
    }

    /// Lruvec `id`'s lists (counts, event counters).
    pub fn lists(&self, id: u16) -> Option<&LruLists> {
        self.vecs.get(id as usize)
    }

    /// All lruvecs' lists, by id.
    pub fn all_lists(&self) -> &[LruLists] {
        &self.vecs
    }

    /// Lruvec `id`, to read.
    pub fn lruvec_ref(&self, id: u16) -> Option<Lruvec<&[LruNode], &LruLists>> {
        let lists = self.vecs.get(id as usize)?;
        Some(Lruvec { nodes: self.nodes.as_ref(), base_pfn: self.base_pfn, lists })
    }

    fn node_of(&self, pfn: u64) -> Option<&LruNode> {
        let i = pfn.checked_sub(self.base_pfn)?;
        self.nodes.as_ref().get(usize::try_from(i).ok()?)
    }

    /// The lruvec `pfn` is on (None while off the lists or isolated).
    pub fn owner(&self, pfn: u64) -> Option<u16> {
        let n = self.node_of(pfn)?;
        (n.flags & PG_LRU != 0).then_some(n.vec)
    }

    /// The list a page is on, if any.
    pub fn folio_lru(&self, pfn: u64) -> Option<LruList> {
        let n = self.node_of(pfn)?;
        if n.flags & PG_LRU == 0 {
            return None;
        }
        LruList::from_u8(n.lru)
    }

    /// A page's LRU flags (`PG_*` of [`flags`]).
    pub fn folio_flags(&self, pfn: u64) -> Option<u8> {
        Some(self.node_of(pfn)?.flags)
    }

    /// Pages on `lru` over all lruvecs (`global_node_page_state`).
    pub fn total(&self, lru: LruList) -> u64 {
        self.vecs.iter().map(|v| v.nr(lru)).sum()
    }

    /// Event counters summed over the lruvecs `pick` selects by id.
    pub fn stat_sum(&self, mut pick: impl FnMut(u16) -> bool) -> LruStats {
        let mut t = LruStats::default();
        for v in self.vecs.iter().filter(|v| pick(v.id)) {
            let s = &v.stat;
            t.pgscan_kswapd += s.pgscan_kswapd;
            t.pgscan_direct += s.pgscan_direct;
            t.pgsteal_kswapd += s.pgsteal_kswapd;
            t.pgsteal_direct += s.pgsteal_direct;
            t.pgactivate += s.pgactivate;
            t.pgdeactivate += s.pgdeactivate;
            t.pgrotated += s.pgrotated;
            for k in 0..2 {
                t.workingset_refault[k] += s.workingset_refault[k];
                t.workingset_activate[k] += s.workingset_activate[k];
                t.workingset_restore[k] += s.workingset_restore[k];
            }
            t.unevictable_pgs_culled += s.unevictable_pgs_culled;
            t.pglazyfree += s.pglazyfree;
        }
        t
    }

    /// Checks every lruvec ([`Lruvec::verify`]) and that every page with
    /// `PG_LRU` names an lruvec of the set.
    pub fn verify(&self) -> Result<(), &'static str> {
        let mut seen = 0u64;
        for id in 0..self.vecs.len() {
            let v = self.lruvec_ref(id as u16).ok_or("lruvec missing")?;
            v.verify()?;
            seen += LruList::ALL.iter().map(|&l| v.nr(l)).sum::<u64>();
        }
        let flagged = self.nodes.as_ref().iter().filter(|n| n.flags & PG_LRU != 0).count() as u64;
        if flagged != seen {
            return Err("PG_LRU pages on no lruvec of the set");
        }
        Ok(())
    }
}

impl<S: AsRef<[LruNode]> + AsMut<[LruNode]>> LruSet<S> {
    /// Installs the lruvecs (ids `0..n` in order, from
    /// [`LruSet::fresh_lruvecs`]); only while no page is on a list.
    pub fn set_lruvecs(&mut self, vecs: Vec<LruLists>) -> Result<(), LruError> {
        if let Some((i, v)) = vecs.iter().enumerate().find(|(i, v)| v.id as usize != *i) {
            return Err(LruError::NoLruvec(v.id.min(i as u16)));
        }
        if self.vecs.iter().any(|v| LruList::ALL.iter().any(|&l| v.nr(l) > 0)) {
            return Err(LruError::NotEmpty);
        }
        self.vecs = vecs;
        Ok(())
    }

    /// Lruvec `id`, to change (`mem_cgroup_lruvec`).
    pub fn lruvec(&mut self, id: u16) -> Result<Lruvec<&mut [LruNode], &mut LruLists>, LruError> {
        let lists = self.vecs.get_mut(id as usize).ok_or(LruError::NoLruvec(id))?;
        Ok(Lruvec { nodes: self.nodes.as_mut(), base_pfn: self.base_pfn, lists })
    }

    /// The lruvec a page is on (`folio_lruvec`); `NotOnLru` while it is
    /// off the lists.
    pub fn page_lruvec(&mut self, pfn: u64) -> Result<Lruvec<&mut [LruNode], &mut LruLists>, LruError> {
        if self.node_of(pfn).is_none() {
            return Err(LruError::OutOfRange(pfn));
        }
        let id = self.owner(pfn).ok_or(LruError::NotOnLru(pfn))?;
        self.lruvec(id)
    }

    /// `folio_add_lru` onto lruvec `id`.
    pub fn folio_add_lru(&mut self, id: u16, pfn: u64, anon: bool) -> Result<(), LruError> {
        self.lruvec(id)?.folio_add_lru(pfn, anon)
    }

    /// A page read back in after eviction joins lruvec `id`; the refault
    /// is judged (`workingset_refault`) by the lruvec its shadow names,
    /// whose clock the eviction count is on (Linux's `workingset_refault`
    /// finds the eviction memcg and node in the shadow), or by `id` when
    /// the shadow names none of the set. Returns whether it was activated.
    pub fn folio_add_lru_refault(
        &mut self,
        id: u16,
        pfn: u64,
        anon: bool,
        shadow: Shadow,
        swap_on: bool,
    ) -> Result<bool, LruError> {
        // Refuse before the refault is counted anywhere.
        let i = self.lruvec(id)?.own_idx(pfn)?;
        if self.nodes.as_ref()[i as usize].flags & PG_LRU != 0 {
            return Err(LruError::AlreadyOnLru(pfn));
        }
        let judge = if (shadow.lruvec_id() as usize) < self.vecs.len() { shadow.lruvec_id() } else { id };
        let (activate, restore) = self.lruvec(judge)?.workingset_refault(shadow, !anon, swap_on);
        self.lruvec(id)?.folio_add_lru_judged(pfn, anon, activate, restore)?;
        Ok(activate)
    }

    /// [`Lruvec::folio_del_lru`] on the page's lruvec.
    pub fn folio_del_lru(&mut self, pfn: u64) -> Result<(), LruError> {
        self.page_lruvec(pfn)?.folio_del_lru(pfn)
    }

    /// [`Lruvec::mark_page_accessed`] on the page's lruvec.
    pub fn mark_page_accessed(&mut self, pfn: u64) -> Result<(), LruError> {
        self.page_lruvec(pfn)?.mark_page_accessed(pfn)
    }

    /// [`Lruvec::folio_mlock`] on the page's lruvec.
    pub fn folio_mlock(&mut self, pfn: u64) -> Result<(), LruError> {
        self.page_lruvec(pfn)?.folio_mlock(pfn)
    }

    /// [`Lruvec::folio_munlock`] on the page's lruvec.
    pub fn folio_munlock(&mut self, pfn: u64) -> Result<(), LruError> {
        self.page_lruvec(pfn)?.folio_munlock(pfn)
    }

    /// [`Lruvec::folio_deactivate`] on the page's lruvec.
    pub fn folio_deactivate(&mut self, pfn: u64) -> Result<bool, LruError> {
        self.page_lruvec(pfn)?.folio_deactivate(pfn)
    }

    /// [`Lruvec::folio_mark_lazyfree`] on the page's lruvec.
    pub fn folio_mark_lazyfree(&mut self, pfn: u64) -> Result<bool, LruError> {
        self.page_lruvec(pfn)?.folio_mark_lazyfree(pfn)
    }

    /// [`Lruvec::reclaim_pages`] with each page on its own lruvec (pages
    /// off the lists are skipped); the pages freed.
    pub fn reclaim_pages<O: ReclaimOps + ?Sized>(&mut self, pfns: &[u64], ops: &mut O) -> u64 {
        let mut freed = 0;
        for &pfn in pfns {
            if let Ok(mut v) = self.page_lruvec(pfn) {
                freed += v.reclaim_pages(&[pfn], ops);
            }
        }
        freed
    }
}
