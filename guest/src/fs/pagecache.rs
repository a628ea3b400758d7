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
//! Locking: the file table's lock (rank MISC) is never held across a page
//! allocation (which may reclaim, a lower rank) nor a user copy (which
//! may fault): callers copy through kernel buffers.

use super::FILES;
use crate::mm::phys::{clear_page, read_frame, write_frame};
use crate::mm::PAGES;
use mm_core::addr::{PAGE_SHIFT, PAGE_SIZE};
use mm_core::buddy::PageOwner;

/// Why a page could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheError {
    /// No such file.
    NoFile,
    /// The index lies beyond the end of the file (a mapping's SIGBUS).
    BeyondEof,
    /// No memory for the page.
    NoMemory,
}

/// The frame (physical address) of page `index` of file `ino`, read
/// into the cache if absent (Linux's `filemap_get_folio` +
/// `filemap_read_folio`). The cache keeps its reference; a caller that
/// maps the page takes its own.
pub fn find_or_create_page(ino: usize, index: u64) -> Result<u64, CacheError> {
    let found = FILES.with(|f| {
        let n = f.get(ino)?;
        Some((n.inode.size, n.inode.pa, n.inode.backing, n.pages.get(&index).copied()))
    });
    let (size, pa_backing, backing) = match found {
        None => return Err(CacheError::NoFile),
        Some((_, _, _, Some(pa))) => return Ok(pa),
        Some((size, pa, backing, None)) => (size, pa, backing),
    };
    if index.checked_mul(PAGE_SIZE).is_none_or(|off| off >= size.next_multiple_of(PAGE_SIZE)) {
        return Err(CacheError::BeyondEof);
    }
    let pa = new_page()?;
    let off = index * PAGE_SIZE;
    if off < backing {
        let n = (backing - off).min(PAGE_SIZE) as usize;
        // SAFETY: the archive's bytes, reserved for good and inside the
        // boot-time direct map (fs::init checked the bounds).
        let src = unsafe { core::slice::from_raw_parts(crate::mm::phys_to_virt(pa_backing + off) as *const u8, n) };
        write_frame(pa, 0, src);
    }
    // Inserted unless someone else did meanwhile.
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
        None => Ok(pa),
        Some(other) => {
            PAGES.with(|p| crate::mm::swap::put_user_page(p, pa >> PAGE_SHIFT));
            Ok(other)
        }
    }
}

/// A zeroed frame owned `PageCache`, allocated with no lock held (the
/// allocation may reclaim).
fn new_page() -> Result<u64, CacheError> {
    let pfn =
        crate::mm::page_alloc::alloc_pages(0, crate::mm::page_alloc::GFP_USER).map_err(|_| CacheError::NoMemory)?;
    PAGES.with(|p| {
        let _ = p.buddy.set_owner(pfn, PageOwner::PageCache);
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
            Some(pa) => Some(pa),
            None if backed => find_or_create_page(ino, index).ok(),
            None => None,
        };
        match pa {
            Some(pa) => read_frame(pa, in_page, &mut out[done..done + n]),
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
        FILES.with(|f| {
            if let Some(node) = f.get_mut(ino) {
                node.inode.size = node.inode.size.max(pos + n as u64);
                node.inode.dirty = true;
            }
        });
        match find_or_create_page(ino, index) {
            Ok(pa) => write_frame(pa, in_page, &data[done..done + n]),
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
    let dropped: alloc::vec::Vec<u64> = FILES.with(|f| {
        let Some(n) = f.get_mut(ino) else { return alloc::vec::Vec::new() };
        n.inode.size = size;
        n.inode.dirty = true;
        // The archive is no longer the file's contents past the new end.
        n.inode.backing = n.inode.backing.min(size);
        let keep = size.div_ceil(PAGE_SIZE);
        let gone = n.pages.split_off(&keep);
        if !size.is_multiple_of(PAGE_SIZE) {
            if let Some(&pa) = n.pages.get(&(size / PAGE_SIZE)) {
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
    put_pages(&dropped);
}

/// Drops the cache's reference on `pages`.
fn put_pages(pages: &[u64]) {
    if pages.is_empty() {
        return;
    }
    PAGES.with(|p| {
        for &pa in pages {
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
            .flat_map(|(ino, n)| n.pages.iter().map(move |(&i, &pa)| (ino, i, pa)))
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

/// Pages in the cache: (all, of which dirty files' alone: Linux's Shmem).
pub fn counts() -> (u64, u64) {
    FILES.with(|f| {
        f.iter().fold((0, 0), |(all, shmem), n| {
            let k = n.pages.len() as u64;
            (all + k, shmem + if n.inode.dirty { k } else { 0 })
        })
    })
}
