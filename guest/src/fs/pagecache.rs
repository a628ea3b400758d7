//! The page cache (Linux's `address_space` + `filemap.c`): every regular
//! file's data live in pages indexed by file offset / 4096, shared by
//! `read`, `write` and every mapping of the file. An initramfs file's
//! page is filled from the archive the first time something needs it
//! (Linux's `filemap_read_folio`); a file created or written at run time
//! has no other copy (tmpfs: Linux's Shmem).
//!
//! References: the cache holds one on each of its pages; every PTE that
//! maps one holds another (mm.rs `get_page`/`put_page`, as for anon
//! pages), so a page dropped from the cache (truncate, unlink,
//! drop_caches) stays alive while mapped. Pages are owned `PageCache` in
//! their descriptors, so the host tells them from anonymous memory.
//!
//! Reclaim, as Linux's: a page of a file never written (its data still in
//! the archive) is on the file LRU and reclaim drops it when nothing maps
//! it (a later access reads it in again); a page of a file written at run
//! time (tmpfs: Linux's shmem) is swap-backed, on the anon LRU: with swap
//! on, reclaim writes an unmapped one to a slot and the cache's index
//! keeps the swap entry ([`SWAPPED`], Linux's xarray value entry), read
//! back on the next access ([`find_or_create_page`]: read(), write(), a
//! mapping's fault); without swap it stays. Reclaim decides under the page
//! allocator's lock, which ranks inside this one, so the cache's index is
//! changed after (mm/swap.rs `flush_writeback`), checked still the same.
//! Mapped pages are not reclaimed (there is no file rmap to unmap them
//! with).
//!
//! Locking: the file table's lock (rank MISC) is never held across a page
//! allocation (which may reclaim, a lower rank) nor a user copy (which
//! may fault): callers copy through kernel buffers.

use super::FILES;
use crate::mm::phys::{clear_page, read_frame, write_frame};
use crate::mm::PAGES;
use mm_core::addr::{PAGE_SHIFT, PAGE_SIZE};
use mm_core::buddy::PageOwner;
use mm_core::lru::LruList;

/// A cache index's value for a page in swap: this bit, and the slot's
/// offset in swap area 0 (a page's value is its physical address, which
/// never has it).
pub const SWAPPED: u64 = 1 << 63;

/// The swap entry a cache value holds, if the page is in swap.
pub fn swapped(v: u64) -> Option<mm_core::swap::SwpEntry> {
    (v & SWAPPED != 0).then_some(mm_core::swap::SwpEntry { ty: 0, offset: v & !SWAPPED })
}

/// Why a page could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheError {
    /// No such file.
    NoFile,
    /// The index lies beyond the end of the file (a mapping's SIGBUS).
    BeyondEof,
    /// No memory for the page.
    NoMemory,
    /// The swap device failed to read it back (a mapping's SIGBUS, EIO).
    Io,
}

/// The frame (physical address) of page `index` of file `ino`, read
/// into the cache if absent (Linux's `filemap_get_folio` +
/// `filemap_read_folio`). The cache keeps its reference; a caller that
/// maps the page takes its own.
pub fn find_or_create_page(ino: usize, index: u64) -> Result<u64, CacheError> {
    for _ in 0..4 {
        let found = FILES.with(|f| {
            let n = f.get(ino)?;
            Some((n.inode.size, n.inode.pa, n.inode.backing, n.inode.dirty, n.pages.get(&index).copied()))
        });
        let (size, pa_backing, backing, dirty) = match found {
            None => return Err(CacheError::NoFile),
            Some((.., Some(v))) => match swapped(v) {
                None => return Ok(v),
                // Swapped out: read back (None: the index changed
                // meanwhile, look again).
                Some(e) => match crate::mm::swap::shmem_swapin(ino, index, e) {
                    Ok(Some(pa)) => return Ok(pa),
                    Ok(None) => continue,
                    Err(crate::mm::swap::SwapinError::NoMemory) => return Err(CacheError::NoMemory),
                    Err(_) => return Err(CacheError::Io),
                },
            },
            Some((size, pa, backing, dirty, None)) => (size, pa, backing, dirty),
        };
        if index.checked_mul(PAGE_SIZE).is_none_or(|off| off >= size.next_multiple_of(PAGE_SIZE)) {
            return Err(CacheError::BeyondEof);
        }
        let pa = new_page(ino, index, dirty)?;
        let off = index * PAGE_SIZE;
        if off < backing {
            let n = (backing - off).min(PAGE_SIZE) as usize;
            // SAFETY: the archive's bytes, reserved for good and inside the
            // boot-time direct map (fs::init checked the bounds).
            let src = unsafe { core::slice::from_raw_parts(crate::mm::phys_to_virt(pa_backing + off) as *const u8, n) };
            write_frame(pa, 0, src);
        }
        // Inserted unless someone else did meanwhile. The index may need
        // a node, allocated under the file table's lock where reclaim
        // cannot run (Linux preloads the xarray's nodes for the same
        // reason): reclaim first if memory is short.
        crate::mm::vmscan::reclaim_for(2);
        let other = FILES.with(|f| {
            let n = f.get_mut(ino)?;
            match n.pages.get(&index) {
                Some(&other) => Some(other),
                None => {
                    n.pages.insert(index, pa);
                    None
                }
            }
        });
        match other {
            None => return Ok(pa),
            Some(_) => {
                PAGES.with(|p| crate::mm::swap::put_user_page(p, pa >> PAGE_SHIFT));
                continue;
            }
        }
    }
    Err(CacheError::NoMemory)
}

/// A zeroed frame owned `PageCache` for page `index` of file `ino`,
/// allocated with no lock held (the allocation may reclaim), recorded
/// in its page_ext and on the LRU: the anon lists if the file is
/// swap-backed (`shmem`: written at run time), the file lists otherwise
/// (Linux's `filemap_add_folio` + `folio_add_lru`).
fn new_page(ino: usize, index: u64, shmem: bool) -> Result<u64, CacheError> {
    // Under the task's policy, as Linux's `filemap_alloc_folio` and
    // `shmem_alloc_folio` (no shared tmpfs policies here).
    let gfp = crate::proc::mempolicy::task_gfp(crate::mm::page_alloc::GFP_USER);
    let pfn = crate::mm::page_alloc::alloc_pages(0, gfp).map_err(|_| CacheError::NoMemory)?;
    PAGES.with(|p| {
        let _ = p.buddy.set_owner(pfn, PageOwner::PageCache);
        crate::mm::memcg::charge(&mut p.buddy, pfn, crate::mm::memcg::ChargeKind::File);
        if let Some(x) = p.ext.get_mut(pfn as usize) {
            x.set_file(ino as u32, index);
        }
        let _ = p.lru_add(pfn, shmem);
    });
    let pa = pfn << PAGE_SHIFT;
    clear_page(pa);
    Ok(pa)
}

/// Reads file `ino` from byte `off` into `out` through the cache (a page
/// not cached yet is read in; a hole of a run-time file reads as zeros
/// without allocating). Bytes read (short at the end of the file).
pub fn read(ino: usize, off: u64, out: &mut [u8]) -> usize {
    let Some(size) = FILES.with(|f| f.get(ino).map(|n| n.inode.size)) else { return 0 };
    if off >= size {
        return 0;
    }
    let len = ((size - off) as usize).min(out.len());
    let mut done = 0usize;
    while done < len {
        let pos = off + done as u64;
        let (index, in_page) = (pos / PAGE_SIZE, (pos % PAGE_SIZE) as usize);
        let n = (PAGE_SIZE as usize - in_page).min(len - done);
        let (cached, backed) = FILES.with(|f| {
            f.get(ino).map_or((None, false), |n| (n.pages.get(&index).copied(), index * PAGE_SIZE < n.inode.backing))
        });
        let pa = match cached {
            Some(v) if swapped(v).is_none() => Some(v),
            // Swapped out, or in the archive: read in.
            Some(_) => find_or_create_page(ino, index).ok(),
            None if backed => find_or_create_page(ino, index).ok(),
            None => None,
        };
        match pa {
            Some(pa) => {
                read_frame(pa, in_page, &mut out[done..done + n]);
                mark_accessed(pa);
            }
            None => out[done..done + n].fill(0),
        }
        done += n;
    }
    len
}

/// Writes `data` to file `ino` at byte `off` through the cache (pages
/// allocated as needed; the file grows). Bytes written (short when memory
/// ran out), or the error if none could be.
pub fn write(ino: usize, off: u64, data: &[u8]) -> Result<usize, CacheError> {
    let mut done = 0usize;
    while done < data.len() {
        let pos = off + done as u64;
        let (index, in_page) = (pos / PAGE_SIZE, (pos % PAGE_SIZE) as usize);
        let n = (PAGE_SIZE as usize - in_page).min(data.len() - done);
        // The page must lie inside the file for find_or_create_page: grow
        // first (what the write makes of it).
        let moved = FILES.with(|f| match f.get_mut(ino) {
            Some(node) => {
                node.inode.size = node.inode.size.max(pos + n as u64);
                set_dirty(node)
            }
            None => alloc::vec::Vec::new(),
        });
        to_anon_lru(&moved);
        // A page the write adds is charged to the writer's memory cgroup:
        // its limits are checked first, as a fault's are (reclaim, then
        // the memcg OOM; -ENOMEM if the charge still cannot be made).
        let absent =
            FILES.with(|f| f.get(ino).is_some_and(|n| n.pages.get(&index).is_none_or(|&v| swapped(v).is_some())));
        let charged = !absent || crate::mm::memcg::try_charge_nofault(1);
        match if charged { find_or_create_page(ino, index) } else { Err(CacheError::NoMemory) } {
            Ok(pa) => {
                write_frame(pa, in_page, &data[done..done + n]);
                mark_accessed(pa);
            }
            Err(e) => {
                // Undo the growth this chunk did not fill.
                FILES.with(|f| {
                    if let Some(node) = f.get_mut(ino) {
                        node.inode.size = node.inode.size.min(pos).max(off);
                    }
                });
                return if done > 0 { Ok(done) } else { Err(e) };
            }
        }
        done += n;
    }
    Ok(done)
}

/// Sets file `ino`'s size (Linux's `truncate_setsize`): pages wholly
/// beyond the new end leave the cache (mapped ones live on in their
/// mappings), the tail of the last page is zeroed so a later growth
/// reads zeros.
pub fn truncate(ino: usize, size: u64) {
    let mut moved = alloc::vec::Vec::new();
    let dropped: alloc::vec::Vec<u64> = FILES.with(|f| {
        let Some(n) = f.get_mut(ino) else { return alloc::vec::Vec::new() };
        n.inode.size = size;
        moved = set_dirty(n);
        // The archive is no longer the file's contents past the new end.
        n.inode.backing = n.inode.backing.min(size);
        let keep = size.div_ceil(PAGE_SIZE);
        let gone = n.pages.split_off(&keep);
        if !size.is_multiple_of(PAGE_SIZE) {
            if let Some(&pa) = n.pages.get(&(size / PAGE_SIZE)).filter(|&&v| swapped(v).is_none()) {
                let at = (size % PAGE_SIZE) as usize;
                let zeros = [0u8; 256];
                let mut i = at;
                while i < PAGE_SIZE as usize {
                    let k = (PAGE_SIZE as usize - i).min(zeros.len());
                    write_frame(pa, i, &zeros[..k]);
                    i += k;
                }
            }
        }
        gone.into_values().collect()
    });
    to_anon_lru(&moved);
    put_pages(&dropped);
}

/// Marks file `n` written (its pages are the only copy from now on:
/// swap-backed, as Linux's shmem); the pages to move from the file LRU to
/// the anon LRU if it was not ([`to_anon_lru`], outside the file lock).
fn set_dirty(n: &mut super::Node) -> alloc::vec::Vec<u64> {
    if core::mem::replace(&mut n.inode.dirty, true) {
        return alloc::vec::Vec::new();
    }
    n.pages.values().copied().filter(|&v| swapped(v).is_none()).collect()
}

/// Moves cache pages of a file just written onto the anon LRU.
fn to_anon_lru(pages: &[u64]) {
    if pages.is_empty() {
        return;
    }
    PAGES.with(|p| {
        for &pa in pages {
            let pfn = pa >> PAGE_SHIFT;
            let file = |l| matches!(l, LruList::InactiveFile | LruList::ActiveFile);
            if p.lru.folio_lru(pfn).is_some_and(file) && p.lru.folio_del_lru(pfn).is_ok() {
                let _ = p.lru_add(pfn, true);
            }
        }
    });
}

/// Linux's `folio_mark_accessed` for a cache page read or written
/// through the file: the second access moves it to the active list.
fn mark_accessed(pa: u64) {
    PAGES.with(|p| {
        let _ = p.lru.mark_page_accessed(pa >> PAGE_SHIFT);
    });
}

/// Drops the cache's reference on `pages` (index values: a swapped-out
/// page's slot is freed, Linux's `shmem_free_swap`).
fn put_pages(pages: &[u64]) {
    if pages.is_empty() {
        return;
    }
    let slots: alloc::vec::Vec<mm_core::swap::SwpEntry> = pages.iter().filter_map(|&v| swapped(v)).collect();
    if !slots.is_empty() {
        crate::mm::swap::shmem_free_swap(&slots);
    }
    PAGES.with(|p| {
        for &pa in pages.iter().filter(|&&v| swapped(v).is_none()) {
            crate::mm::swap::put_user_page(p, pa >> PAGE_SHIFT);
        }
    });
}

/// Empties file `ino`'s cache (unlink): its data go (mapped pages live on
/// in their mappings; descriptors still open read an empty file, unlike
/// Linux, where the data outlive the last close).
pub fn evict_inode(ino: usize) {
    let pages: alloc::vec::Vec<u64> = FILES.with(|f| match f.get_mut(ino) {
        Some(n) => {
            n.inode.size = 0;
            n.inode.backing = 0;
            core::mem::take(&mut n.pages).into_values().collect()
        }
        None => alloc::vec::Vec::new(),
    });
    put_pages(&pages);
}

/// `echo 1 > /proc/sys/vm/drop_caches` (Linux's `drop_pagecache_sb`):
/// the clean pages, those of files never written whose data the archive
/// still holds, that nothing maps (refcount 1: the cache's own) leave the
/// cache. Pages dropped.
pub fn drop_caches() -> u64 {
    // Three steps, as no allocation may happen under the page allocator's
    // lock (the heap is its slab): the candidates, then which of them
    // nothing maps, then out of the cache.
    let candidates: alloc::vec::Vec<(usize, u64, u64)> = FILES.with(|f| {
        f.iter()
            .enumerate()
            .filter(|(_, n)| !n.inode.dirty)
            .flat_map(|(ino, n)| {
                n.pages.iter().filter(|(_, &v)| swapped(v).is_none()).map(move |(&i, &pa)| (ino, i, pa))
            })
            .collect()
    });
    let mut unmapped = alloc::vec![false; candidates.len()];
    PAGES.with(|p| {
        for (u, &(_, _, pa)) in unmapped.iter_mut().zip(&candidates) {
            *u = p.buddy.page(pa >> PAGE_SHIFT).is_some_and(|pg| pg.refcount == 1);
        }
    });
    let mut dropped = alloc::vec::Vec::new();
    FILES.with(|f| {
        for (&(ino, index, pa), _) in candidates.iter().zip(&unmapped).filter(|(_, &u)| u) {
            // Still the same page of a still clean file (nothing ran
            // between the steps: ring 0 is not preempted).
            if let Some(n) = f.get_mut(ino).filter(|n| !n.inode.dirty) {
                if n.pages.get(&index) == Some(&pa) {
                    n.pages.remove(&index);
                    dropped.push(pa);
                }
            }
        }
    });
    put_pages(&dropped);
    dropped.len() as u64
}

/// Pages in the cache, resident: (all, of which dirty files' alone:
/// Linux's Shmem; their pages in swap count in neither, as Linux's).
pub fn counts() -> (u64, u64) {
    FILES.with(|f| {
        f.iter().fold((0, 0), |(all, shmem), n| {
            let k = n.pages.values().filter(|&&v| swapped(v).is_none()).count() as u64;
            (all + k, shmem + if n.inode.dirty { k } else { 0 })
        })
    })
}

/// Reclaim's end for a clean page it chose (mm/swap.rs, called with the
/// reclaim state held and the page allocator not): page `index` of file
/// `ino` at `pa` leaves the cache if the index still holds it, the file is
/// still clean and nothing took a reference meanwhile (Linux's
/// `__remove_mapping` under the mapping's lock); true if it did, and the
/// caller frees it.
pub fn reclaim_remove(ino: usize, index: u64, pa: u64) -> bool {
    FILES.with(|f| {
        let Some(n) = f.get_mut(ino).filter(|n| !n.inode.dirty) else { return false };
        if n.pages.get(&index) != Some(&pa) {
            return false;
        }
        if !PAGES.with(|p| p.buddy.page(pa >> PAGE_SHIFT).is_some_and(|pg| pg.refcount == 1)) {
            return false;
        }
        n.pages.remove(&index);
        true
    })
}

/// Reclaim's end for a swap-backed page it wrote to slot `e` (as
/// [`reclaim_remove`]): the index holds the swap entry instead of `pa` if
/// it still held `pa` and the file is still the page's; true if so (the
/// caller drops the cache's reference on the page).
pub fn reclaim_swapped(ino: usize, index: u64, pa: u64, e: mm_core::swap::SwpEntry) -> bool {
    FILES.with(|f| {
        let Some(n) = f.get_mut(ino) else { return false };
        match n.pages.get_mut(&index) {
            Some(v) if *v == pa && n.inode.dirty => {
                *v = SWAPPED | e.offset;
                true
            }
            _ => false,
        }
    })
}

/// Swap-in's end (mm/swap.rs `shmem_swapin`): the index of page `index`
/// of file `ino` holds `pa` instead of slot `e`, if it still held `e`.
pub fn swapin_done(ino: usize, index: u64, e: mm_core::swap::SwpEntry, pa: u64) -> bool {
    FILES.with(|f| match f.get_mut(ino).and_then(|n| n.pages.get_mut(&index)) {
        Some(v) if *v == SWAPPED | e.offset => {
            *v = pa;
            true
        }
        _ => false,
    })
}

/// Whether page `index` of file `ino` is still in slot `e`.
pub fn still_swapped(ino: usize, index: u64, e: mm_core::swap::SwpEntry) -> bool {
    FILES.with(|f| f.get(ino).and_then(|n| n.pages.get(&index)).is_some_and(|&v| v == SWAPPED | e.offset))
}
