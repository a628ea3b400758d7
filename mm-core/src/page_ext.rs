//! The per-frame fields of user memory that reclaim needs, beyond the
//! buddy allocator's page descriptor (Linux keeps them in `struct page`:
//! `mapping`/`index` for the reverse map, `private` for the swap entry of
//! a page in the swap cache). A page of the page cache records its file
//! and index instead of an anon mapping (Linux's `mapping` points at the
//! file's `address_space` there; [`FILE_BIT`] tells the two apart as
//! `PAGE_MAPPING_ANON` does). The guest keeps one [`PageExt`] per pfn in
//! an array at `abi::layout::PAGE_EXT_START`; the host reads it to verify
//! the swap cache. All zero means "no anon mapping, not in the swap
//! cache", so the array needs no initialisation in fresh memory.

use crate::rmap::{AnonMapping, AnonVmaId};
use crate::swap::SwpEntry;

/// Bits of [`PageExt::mapping`] holding the page index.
const INDEX_BITS: u32 = 36;

/// [`PageExt::mapping`]'s mark of a page-cache page (file, index).
pub const FILE_BIT: u64 = 1 << 63;
/// Bits of a file page's inode number.
const INO_BITS: u32 = 63 - INDEX_BITS;

/// A frame's anon rmap record and swap-cache entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PageExt {
    /// `(anon_vma + 1) << 36 | index`, 0 for none (`page->mapping`,
    /// `page->index`; anon indexes are user addresses over the page size,
    /// 35 bits).
    pub mapping: u64,
    /// The swap entry's slot as `ty << 56 | offset` plus one, 0 when the
    /// page is not in the swap cache (`folio->swap`).
    pub swap: u64,
}

const _: () = assert!(core::mem::size_of::<PageExt>() == 16);

impl PageExt {
    /// Nothing recorded.
    pub const EMPTY: PageExt = PageExt { mapping: 0, swap: 0 };

    /// The anon mapping, if one is recorded.
    pub fn anon(&self) -> Option<AnonMapping> {
        if self.mapping == 0 || self.mapping & FILE_BIT != 0 {
            return None;
        }
        let id = (self.mapping >> INDEX_BITS) - 1;
        Some(AnonMapping { anon_vma: AnonVmaId(id as u32), index: self.mapping & ((1 << INDEX_BITS) - 1) })
    }

    /// Records `m` (false if it does not fit the packing).
    pub fn set_anon(&mut self, m: AnonMapping) -> bool {
        if m.index >> INDEX_BITS != 0 || (m.anon_vma.0 as u64) >= (1 << INO_BITS) - 1 {
            return false;
        }
        self.mapping = ((m.anon_vma.0 as u64 + 1) << INDEX_BITS) | m.index;
        true
    }

    /// The page-cache page's (inode number, page index), if it is one.
    pub fn file(&self) -> Option<(u32, u64)> {
        (self.mapping & FILE_BIT != 0)
            .then_some((((self.mapping & !FILE_BIT) >> INDEX_BITS) as u32, self.mapping & ((1 << INDEX_BITS) - 1)))
    }

    /// Records a page-cache page of file `ino` at page `index` (false if
    /// it does not fit the packing).
    pub fn set_file(&mut self, ino: u32, index: u64) -> bool {
        if index >> INDEX_BITS != 0 || (ino as u64) >> INO_BITS != 0 {
            return false;
        }
        self.mapping = FILE_BIT | ((ino as u64) << INDEX_BITS) | index;
        true
    }

    /// The swap-cache entry, if the page is in the swap cache.
    pub fn swap_entry(&self) -> Option<SwpEntry> {
        let v = self.swap.checked_sub(1)?;
        Some(SwpEntry { ty: (v >> 56) as u8, offset: v & ((1 << 56) - 1) })
    }

    /// Sets or clears the swap-cache entry.
    pub fn set_swap_entry(&mut self, e: Option<SwpEntry>) {
        self.swap = e.map_or(0, |e| (((e.ty as u64) << 56) | e.offset) + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_zero_is_empty() {
        let mut p = PageExt::EMPTY;
        assert_eq!(p.anon(), None);
        assert_eq!(p.swap_entry(), None);
        let m = AnonMapping { anon_vma: AnonVmaId(0), index: (1 << 35) - 1 };
        assert!(p.set_anon(m));
        assert_eq!(p.anon(), Some(m));
        let e = SwpEntry { ty: 3, offset: 12345 };
        p.set_swap_entry(Some(e));
        assert_eq!(p.swap_entry(), Some(e));
        p.set_swap_entry(Some(SwpEntry { ty: 0, offset: 0 }));
        assert_eq!(p.swap_entry(), Some(SwpEntry { ty: 0, offset: 0 }));
        p.set_swap_entry(None);
        assert_eq!(p.swap, 0);
        assert!(!p.set_anon(AnonMapping { anon_vma: AnonVmaId(1), index: 1 << 36 }));
    }

    #[test]
    fn a_file_page_is_not_an_anon_page() {
        let mut p = PageExt::EMPTY;
        assert_eq!(p.file(), None);
        assert!(p.set_file((1 << 27) - 1, (1 << 36) - 1));
        assert_eq!(p.file(), Some(((1 << 27) - 1, (1 << 36) - 1)));
        assert_eq!(p.anon(), None);
        assert!(p.set_file(0, 0));
        assert_eq!(p.file(), Some((0, 0)));
        assert_eq!(p.anon(), None);
        assert!(!p.set_file(1 << 27, 0));
        assert!(!p.set_file(0, 1 << 36));
        assert!(p.set_anon(AnonMapping { anon_vma: AnonVmaId(5), index: 9 }));
        assert_eq!(p.file(), None);
        assert!(!p.set_anon(AnonMapping { anon_vma: AnonVmaId((1 << 27) - 1), index: 0 }));
    }
}
