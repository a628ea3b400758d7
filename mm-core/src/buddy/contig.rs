//! Contiguous ranges larger than the largest buddy block (Linux's
//! `alloc_contig_range` / `alloc_contig_pages`, mm/page_alloc.c), what
//! gigantic (1 GiB) hugetlb pages are made of: the buddy never merges
//! beyond order [`MAX_PAGE_ORDER`](super::MAX_PAGE_ORDER), so a range of
//! 2^18 pages is taken as the free blocks that tile it.
//!
//! Linux also migrates the movable pages it finds in the range; here the
//! range must already be wholly free in the buddy (the caller drains the
//! pcp lists first and may compact to empty one): a range with a page in
//! use is refused, nothing changed. The range comes back as
//! `nr_pages / 2^MAX_PAGE_ORDER` allocated blocks of the largest order,
//! one reference each, which [`free_pages`](super::BuddyAllocator::free_pages)
//! frees one by one.

use super::{BuddyAllocator, BuddyError, MigrateType, Watermark, MAX_PAGE_ORDER, PG_BUDDY};

/// Pages in the largest block.
const MAX_BLOCK: u64 = 1 << MAX_PAGE_ORDER;

impl BuddyAllocator<'_> {
    /// The zone index of `[start, start + nr_pages)` if the buddy holds all
    /// of it free (on its free lists, not on a pcp list) within one zone;
    /// the first pfn that is not, else. `start` and `nr_pages` must be
    /// multiples of the largest block.
    pub fn contig_range_free(&self, start: u64, nr_pages: u64) -> Result<usize, BuddyError> {
        let end = start.checked_add(nr_pages).ok_or(BuddyError::BadRange { start, end: u64::MAX })?;
        if nr_pages == 0 || !start.is_multiple_of(MAX_BLOCK) || !nr_pages.is_multiple_of(MAX_BLOCK) {
            return Err(BuddyError::BadRange { start, end });
        }
        let mut zone = None;
        let mut pfn = start;
        while pfn < end {
            // Free blocks are aligned to their order, at most the largest,
            // and `start` is aligned to that: each step lands on a head.
            let idx = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))?;
            let p = &self.mem_map[idx as usize];
            if p.flags != PG_BUDDY || *zone.get_or_insert(p.zone) != p.zone {
                return Err(BuddyError::NotIsolatable(pfn));
            }
            pfn += 1 << p.order;
        }
        Ok(zone.unwrap_or(0) as usize)
    }

    /// The lowest start, aligned to `align` pages (a power of two, at
    /// least the largest block), of a wholly free range of `nr_pages`
    /// (Linux's `alloc_contig_pages` scan, lowest zone first).
    pub fn find_contig_range(&self, nr_pages: u64, align: u64) -> Option<u64> {
        if !align.is_power_of_two() || align < MAX_BLOCK {
            return None;
        }
        let mut start = self.base_pfn.next_multiple_of(align);
        while start.checked_add(nr_pages)? <= self.end_pfn() {
            match self.contig_range_free(start, nr_pages) {
                Ok(_) => return Some(start),
                Err(_) => start += align,
            }
        }
        None
    }

    /// Takes the wholly free range `[start, start + nr_pages)` out of the
    /// buddy as allocated largest-order blocks, one reference each,
    /// migratetype movable (hugetlb pages are, in Linux). Refused, nothing
    /// changed, if any page of it is not free ([`contig_range_free`]), or
    /// if taking it would leave its zone below the min watermark.
    ///
    /// [`contig_range_free`]: Self::contig_range_free
    pub fn alloc_contig_range(&mut self, start: u64, nr_pages: u64) -> Result<(), BuddyError> {
        let z = self.contig_range_free(start, nr_pages)?;
        let zone = &self.zones[z];
        if !zone.watermark_ok(0, zone.watermark[Watermark::Min as usize] + nr_pages) {
            return Err(BuddyError::NoMemory);
        }
        let mut pfn = start;
        while pfn < start + nr_pages {
            let idx = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))?;
            let order = self.mem_map[idx as usize].order;
            self.del_from_free_list(z, idx, order);
            pfn += 1 << order;
        }
        for pfn in (start..start + nr_pages).step_by(MAX_BLOCK as usize) {
            let idx = self.idx(pfn).ok_or(BuddyError::OutOfRange(pfn))?;
            self.mark_allocated(idx, MAX_PAGE_ORDER, z, MigrateType::Movable);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BuddyAllocator, BuddyError, Page, ZoneType, GFP_KERNEL, MAX_PAGE_ORDER};
    use alloc::vec;

    const GIG: u64 = 1 << 18;

    /// A 3 GiB machine's zones (DMA, DMA32) with 4 KiB to spare at the
    /// bottom: the first 1 GiB-aligned free range is [1 GiB, 2 GiB).
    fn buddy(m: &mut [Page]) -> BuddyAllocator<'_> {
        let mut b = BuddyAllocator::new(m, 0, 1).unwrap();
        b.set_pcp_enabled(false);
        b.free_range(1, 3 * GIG).unwrap();
        b
    }

    #[test]
    fn a_gigantic_range_is_taken_and_given_back_whole() {
        let mut m = vec![Page::default(); 3 * GIG as usize];
        let mut b = buddy(&mut m);
        let free = b.counts().free;
        // [0, 1 GiB) misses pfn 0 (never freed) and straddles DMA/DMA32.
        assert_eq!(b.contig_range_free(0, GIG), Err(BuddyError::NotIsolatable(0)));
        let start = b.find_contig_range(GIG, GIG).unwrap();
        assert_eq!(start, GIG);
        b.alloc_contig_range(start, GIG).unwrap();
        b.verify().unwrap();
        assert_eq!(b.counts().free, free - GIG);
        for pfn in (start..start + GIG).step_by(1 << MAX_PAGE_ORDER) {
            let p = b.page(pfn).unwrap();
            assert_eq!((p.order, p.refcount), (MAX_PAGE_ORDER, 1), "block at {pfn:#x}");
        }
        // Taken: no longer free, and the next range is the one above.
        assert_eq!(b.contig_range_free(start, GIG), Err(BuddyError::NotIsolatable(start)));
        assert_eq!(b.find_contig_range(GIG, GIG), Some(2 * GIG));
        for pfn in (start..start + GIG).step_by(1 << MAX_PAGE_ORDER) {
            b.free_pages(0, pfn, MAX_PAGE_ORDER).unwrap();
        }
        b.verify().unwrap();
        assert_eq!(b.counts().free, free);
        assert_eq!(b.find_contig_range(GIG, GIG), Some(GIG));
    }

    #[test]
    fn a_range_with_one_page_in_use_is_refused_unchanged() {
        let mut m = vec![Page::default(); 3 * GIG as usize];
        let mut b = buddy(&mut m);
        // Allocate until a page lands inside [1 GiB, 2 GiB).
        let used = loop {
            let pfn = b.alloc_pages(0, MAX_PAGE_ORDER, GFP_KERNEL).unwrap();
            if (GIG..2 * GIG).contains(&pfn) {
                break pfn;
            }
        };
        let before = b.free_blocks(ZoneType::Dma32);
        assert_eq!(b.alloc_contig_range(GIG, GIG), Err(BuddyError::NotIsolatable(used)));
        assert_eq!(b.free_blocks(ZoneType::Dma32), before);
        b.verify().unwrap();
        // Bad shapes are errors, not panics.
        assert!(matches!(b.alloc_contig_range(GIG + 1, GIG), Err(BuddyError::BadRange { .. })));
        assert!(matches!(b.alloc_contig_range(GIG, 0), Err(BuddyError::BadRange { .. })));
        assert!(b.alloc_contig_range(!1023, GIG).is_err());
        assert_eq!(b.alloc_contig_range(3 * GIG, GIG), Err(BuddyError::OutOfRange(3 * GIG)));
        assert_eq!(b.find_contig_range(GIG, 3), None);
    }
}
