//! Page migration for compaction (Linux's mm/migrate.c for anonymous
//! pages): isolate a movable page from the LRU, copy it to a new frame,
//! point every PTE that maps it at the new frame through the anon reverse
//! map, and hand its LRU place, rmap record and swap-cache slot over.
//!
//! Locks: the caller holds reclaim's state ([`super::swap::SWAP`], rank
//! RECLAIM: the rmap and the address spaces' PGDs) and the page allocator
//! ([`super::PAGES`]: buddy, LRU, page_ext), in that order, across one
//! isolate-and-migrate cluster, as reclaim does for its edits of other
//! address spaces' tables. The kernel is not preemptible while a spinlock
//! is held, so no PTE changes under the walk; the fault path re-checks its
//! PTE after allocating (`pte_same`), so a fault racing with a migration
//! just faults again.
//!
//! Which pages move (Linux's `isolate_movable_page` /
//! `folio_isolate_lru` + `migrate_folio_unmap`'s reference check): anon
//! pages with an rmap record, on the LRU, whose references are exactly
//! their PTE mappings (+1 in the swap cache). An extra reference is a pin
//! (a copy-on-write copy or a kernel access in progress): such pages stay.

use super::phys::{copy_page, direct_map};
use super::swap::SwapState;
use alloc::vec::Vec;
use mm_core::addr::PAGE_SHIFT;
use mm_core::buddy::BuddyAllocator;
use mm_core::compaction::MigrateFail;
use mm_core::lru::flags::{PG_ACTIVE, PG_REFERENCED, PG_SWAPBACKED, PG_UNEVICTABLE};
use mm_core::lru::{LruNode, LruSet};
use mm_core::page_ext::PageExt;
use mm_core::paging::{Pte, PteFlags};

/// A PTE that was writable before a migration took the right away for
/// the copy (bit 11, ignored by the CPU; set only while the migration
/// holds the page allocator's lock, so no one else sees it).
const MIGRATION_WP: PteFlags = PteFlags::SOFTW3;

/// Pages migrated whose old frames wait for one TLB flush before they
/// are freed (Linux's `migrate_pages_batch` flushes once per batch).
pub const MIGRATE_BATCH: usize = 32;

/// The entry address bits of a PTE.
const ADDR_MASK: u64 = mm_core::paging::entry::PTE_ADDR_MASK_MAX;

/// Migration counters since boot (Linux's `pgmigrate_success`/`_fail`).
#[derive(Clone, Copy, Default, Debug)]
pub struct MigrateStats {
    /// Pages moved.
    pub success: u64,
    /// Pages that could not be moved (put back).
    pub fail: u64,
    /// Pages refused at isolation (pinned, unmapped, off the LRU).
    pub isolate_refused: u64,
    /// PTEs rewritten.
    pub ptes_moved: u64,
}

/// One cluster's migration context: the held reclaim state and the parts
/// of the held page allocator migration edits (the buddy allocator stays
/// with the compaction run, which hands targets out and records moves).
pub struct GuestMigrator<'a> {
    /// Reclaim's state: the rmap, the PGDs, the swap cache.
    pub s: &'a mut SwapState,
    /// The LRU lists.
    pub lru: &'a mut LruSet<&'static mut [LruNode]>,
    /// The per-pfn rmap and swap-cache fields.
    pub ext: &'a mut [PageExt],
    /// Isolated pages, the LRU flags they had and the lruvec they were on
    /// (restored on putback, or carried to the new frame: same memory
    /// cgroup, the new frame's node). Its room is the caller's: nothing here
    /// may allocate with the page allocator held.
    isolated: Vec<(u64, u8, u16)>,
    /// The caller's buffer for one cluster's pages (compaction.rs).
    pub batch: Vec<u64>,
    /// What this context did.
    pub stats: MigrateStats,
    /// The flushes the remapped PTEs wait for.
    tlb: crate::arch::tlb::TlbBatch,
    /// Pages moved (src, dst) whose old frame waits for `tlb`'s flush.
    moved: [(u64, u64); MIGRATE_BATCH],
    nr_moved: usize,
}

impl<'a> GuestMigrator<'a> {
    /// A context over the held state, with buffers (empty, with room for
    /// a cluster) allocated before the locks were taken.
    pub fn new(
        s: &'a mut SwapState,
        lru: &'a mut LruSet<&'static mut [LruNode]>,
        ext: &'a mut [PageExt],
        batch: Vec<u64>,
        isolated: Vec<(u64, u8, u16)>,
    ) -> GuestMigrator<'a> {
        GuestMigrator {
            s,
            lru,
            ext,
            isolated,
            batch,
            stats: MigrateStats::default(),
            tlb: crate::arch::tlb::TlbBatch::new(crate::arch::tlb::BatchKind::Migrate),
            moved: [(0, 0); MIGRATE_BATCH],
            nr_moved: 0,
        }
    }

    /// The buffers back, for the next cluster. The caller has
    /// [`complete`](Self::complete)d every migration.
    pub fn into_buffers(self) -> (Vec<u64>, Vec<(u64, u8, u16)>) {
        debug_assert_eq!(self.nr_moved, 0, "migrations not completed");
        (self.batch, self.isolated)
    }

    /// Whether [`complete`](Self::complete) must run before the next
    /// [`migrate`](Self::migrate).
    pub fn moved_full(&self) -> bool {
        self.nr_moved == MIGRATE_BATCH
    }

    /// Ends the pending migrations: one TLB flush for all their remapped
    /// PTEs (Linux's `try_to_unmap_flush` in `migrate_pages_batch`), then
    /// each old frame goes to `transfer(src, dst)` (the buddy's
    /// `migrate_transfer`, which gives `dst` the references and frees
    /// `src`). No old frame is freed before the flush.
    pub fn complete(&mut self, mut transfer: impl FnMut(u64, u64)) {
        self.tlb.flush();
        for &(src, dst) in &self.moved[..self.nr_moved] {
            crate::mm::tlbtrace::free(src, 0);
            transfer(src, dst);
        }
        self.nr_moved = 0;
    }

    /// PTEs mapping `pfn`, found through its rmap record.
    pub(crate) fn mapcount(&self, pfn: u64) -> Option<u32> {
        let m = self.ext.get(pfn as usize)?.anon()?;
        Some(self.s.mapcount(m, pfn))
    }

    /// Linux's `folio_isolate_lru` with `migrate_folio_unmap`'s reference
    /// check: isolates `pfn` if it is a mapped anon page on the LRU whose
    /// references are its mappings (+1 for the swap cache). `buddy` gives
    /// the reference count.
    pub fn isolate(&mut self, buddy: &BuddyAllocator<'static>, pfn: u64) -> bool {
        let ok = (|| {
            let flags = self.lru.folio_flags(pfn)?;
            self.lru.folio_lru(pfn)?;
            let cached = self.ext.get(pfn as usize)?.swap_entry().is_some() as u32;
            let mapped = self.mapcount(pfn)?;
            let refs = buddy.page(pfn)?.refcount;
            (mapped > 0 && refs == mapped + cached).then_some(flags)
        })();
        let owner = self.lru.owner(pfn);
        match (ok, owner) {
            (Some(flags), Some(id)) if self.lru.folio_del_lru(pfn).is_ok() => {
                self.isolated.push((pfn, flags, id));
                true
            }
            _ => {
                self.stats.isolate_refused += 1;
                false
            }
        }
    }

    /// The LRU flags `pfn` had when isolated and its memory cgroup's
    /// lruvec id (forgotten now).
    fn take_flags(&mut self, pfn: u64) -> (u8, u16) {
        match self.isolated.iter().position(|&(p, _, _)| p == pfn) {
            Some(i) => {
                let (_, f, id) = self.isolated.swap_remove(i);
                (f, id)
            }
            None => (0, 0),
        }
    }

    /// Puts `pfn` on the LRU list its flags name (`folio_putback_lru`):
    /// at the head, as Linux puts back both isolated and migrated folios.
    /// `was` is the lruvec the page (or its source) was on: the page goes
    /// to the same memory cgroup's lruvec on its own node.
    fn lru_add(&mut self, pfn: u64, flags: u8, was: u16) {
        let node = super::numa::node_of_pfn(pfn) as usize;
        let id = mm_core::lru::lruvec_id(node, mm_core::lru::lruvec_memcg(was));
        if self.lru.folio_add_lru(id, pfn, true).is_err() {
            return;
        }
        if flags & PG_UNEVICTABLE != 0 {
            let _ = self.lru.folio_mlock(pfn);
        } else if flags & PG_ACTIVE != 0 {
            let _ = self.lru.mark_page_accessed(pfn);
            let _ = self.lru.mark_page_accessed(pfn);
        } else if flags & PG_REFERENCED != 0 {
            let _ = self.lru.mark_page_accessed(pfn);
        }
        if flags & (PG_SWAPBACKED | PG_UNEVICTABLE) == 0 {
            // MADV_FREE's lazily freed page stays lazy (the PTEs keep
            // their bits, so a dirty one still saves it from reclaim).
            let _ = self.lru.folio_mark_lazyfree(pfn);
        }
    }

    /// Linux's `migrate_folio` + `remove_migration_ptes` for an isolated
    /// page: copies `src` to `dst` (a free frame compaction isolated),
    /// rewrites every PTE mapping `src` to map `dst` with the same bits,
    /// and moves the rmap record, swap-cache slot and LRU place to `dst`.
    /// On `Err` nothing changed. On `Ok` the page joins the pending batch
    /// (the caller checks [`moved_full`](Self::moved_full) before the
    /// next): [`complete`](Self::complete) flushes the TLBs once and then
    /// hands `src` over to be freed.
    ///
    /// Writable PTEs are write-protected and flushed at once before the
    /// copy (a write to `src` after it would be lost); every remap then
    /// waits for the batch's one flush, since a CPU holding the old
    /// translation can only read `src`, which holds the same data until
    /// it is freed after the flush.
    pub fn migrate(&mut self, src: u64, dst: u64) -> Result<(), MigrateFail> {
        if self.moved_full() {
            self.stats.fail += 1;
            return Err(MigrateFail::Unmovable);
        }
        let Some(m) = self.ext.get(src as usize).and_then(|x| x.anon()) else {
            self.stats.fail += 1;
            return Err(MigrateFail::Unmovable);
        };
        if dst as usize >= self.ext.len() {
            self.stats.fail += 1;
            return Err(MigrateFail::Unmovable);
        }
        let mms = &self.s.mms;
        // No write may land in `src` once it is copied: Linux replaces the
        // PTEs with migration entries first; here they lose their write
        // right (marked, to get it back) and every CPU drops the old
        // translation before the copy. A thread that writes meanwhile
        // faults, waits for this lock in do_wp_page, finds its PTE changed
        // and writes again, into `dst`. Readers go on reading `src`, whose
        // contents `dst` gets.
        self.s.rmap.rmap_walk(m, |mm, va| {
            if let Some((slot, pte, pgd)) = super::swap::pte_mapping(mms, mm, va, src) {
                if pte.is_writable() {
                    let wp = Pte((pte.0 & !PteFlags::RW.0) | MIGRATION_WP.0);
                    if slot.write(&mut direct_map(), wp).is_ok() {
                        crate::arch::tlb::flush_range(pgd, va, va + 4096);
                    }
                }
            }
            true
        });
        copy_page(dst << PAGE_SHIFT, src << PAGE_SHIFT);
        let mut moved = 0;
        // The remaps wait for the batch's flush: what a CPU may still hold
        // is a read-only translation of `src`, which keeps the same data
        // until it is freed after that flush.
        let tlb = &mut self.tlb;
        self.s.rmap.rmap_walk(m, |mm, va| {
            if let Some((slot, pte, pgd)) = super::swap::pte_mapping(mms, mm, va, src) {
                let mut bits = pte.0 & !ADDR_MASK;
                if bits & MIGRATION_WP.0 != 0 {
                    bits = (bits & !MIGRATION_WP.0) | PteFlags::RW.0;
                }
                let new = Pte(bits | dst << PAGE_SHIFT);
                if crate::mm::tlbtrace::deferred(|| slot.write(&mut direct_map(), new)).is_ok() {
                    moved += 1;
                    tlb.add(pgd, va, false);
                }
            }
            true
        });
        self.stats.ptes_moved += moved;
        // The page's identity moves: rmap record and swap-cache slot.
        self.ext[dst as usize] = self.ext[src as usize];
        self.ext[src as usize] = PageExt::EMPTY;
        if let Some(e) = self.ext[dst as usize].swap_entry() {
            if e.ty == 0 {
                if let Some(c) = self.s.cache.get_mut(e.offset as usize) {
                    *c = dst as u32 + 1;
                }
            }
        }
        let (flags, was) = self.take_flags(src);
        self.lru_add(dst, flags, was);
        self.stats.success += 1;
        self.moved[self.nr_moved] = (src, dst);
        self.nr_moved += 1;
        Ok(())
    }

    /// Gives back an isolated page that was not migrated.
    pub fn putback(&mut self, pfn: u64) {
        let (flags, was) = self.take_flags(pfn);
        self.lru_add(pfn, flags, was);
    }
}
