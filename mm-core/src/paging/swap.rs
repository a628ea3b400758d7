//! Swap entries in non-present PTEs, in Linux's x86-64 layout
//! (arch/x86/include/asm/pgtable_64.h, `__swp_entry`):
//!
//! ```text
//! | 63..59 | 58..9             | 8 | 7 | 6 | 5 | 4 | 3 | 2 | 1 | 0 |
//! | TYPE   | ~OFFSET (inverted)| 0 | 0 | X | X | X | E | F | SD| 0 |
//! ```
//!
//! P (bit 0) is clear, so the CPU never uses the entry; bit 8 (G, Linux's
//! `_PAGE_PROTNONE` for non-present entries) and bit 7 stay clear; A and D
//! (5, 6) are avoided because of an erratum that can set them on
//! non-present entries. The offset is stored inverted so that a
//! non-present entry's "address" bits point above any real RAM (the L1TF
//! mitigation). Bits 1..3 carry flags: soft-dirty, uffd-wp and
//! `PG_anon_exclusive` (E). A swap PTE is any PTE that is neither none
//! (zero) nor present. [`crate::swap`] keeps the areas and slot counts
//! and names a slot by the decoded [`crate::swap::SwpEntry`]; this is its
//! encoding in a page table.

use crate::paging::entry::Pte;

/// Bits of the swap type (`SWP_TYPE_BITS`): up to 32 swap areas.
pub const SWP_TYPE_BITS: u32 = 5;
/// The offset's lowest bit in the entry (`SWP_OFFSET_FIRST_BIT`: above
/// `_PAGE_BIT_PROTNONE`, the G bit).
pub const SWP_OFFSET_FIRST_BIT: u32 = 9;
/// `SWP_OFFSET_SHIFT`.
const SWP_OFFSET_SHIFT: u32 = SWP_OFFSET_FIRST_BIT + SWP_TYPE_BITS;
/// Bits of the offset: 50, so 4 KiB slots up to 4 PiB per area.
pub const SWP_OFFSET_BITS: u32 = 64 - SWP_OFFSET_SHIFT;
/// `_PAGE_SWP_SOFT_DIRTY` (R/W's bit).
pub const SWP_SOFT_DIRTY: u64 = 1 << 1;
/// `_PAGE_SWP_UFFD_WP` (U/S's bit).
pub const SWP_UFFD_WP: u64 = 1 << 2;
/// `_PAGE_SWP_EXCLUSIVE` (PWT's bit): the page was exclusive to this
/// mapping when swapped out (`PG_anon_exclusive`).
pub const SWP_EXCLUSIVE: u64 = 1 << 3;
/// The flag bits a swap PTE may carry beside type and offset.
pub const SWP_FLAGS: u64 = SWP_SOFT_DIRTY | SWP_UFFD_WP | SWP_EXCLUSIVE;

/// A swap entry (Linux's `swp_entry_t`): which swap area and which slot
/// in it hold a page that is not in memory. Its value is the PTE's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SwapEntry(u64);

impl SwapEntry {
    /// The entry for slot `offset` of swap area `ty` (`__swp_entry`);
    /// `None` if `ty` or `offset` does not fit.
    pub const fn new(ty: u8, offset: u64) -> Option<Self> {
        if ty as u32 >= 1 << SWP_TYPE_BITS || offset >> SWP_OFFSET_BITS != 0 {
            return None;
        }
        let v = (!offset << SWP_OFFSET_SHIFT >> SWP_TYPE_BITS) | ((ty as u64) << (64 - SWP_TYPE_BITS));
        // Type 0 with the last offset would be the none PTE.
        if v == 0 {
            return None;
        }
        Some(SwapEntry(v))
    }

    /// The swap area (`__swp_type`).
    pub const fn ty(self) -> u8 {
        (self.0 >> (64 - SWP_TYPE_BITS)) as u8
    }

    /// The slot in the area (`__swp_offset`).
    pub const fn offset(self) -> u64 {
        !self.0 << SWP_TYPE_BITS >> SWP_OFFSET_SHIFT
    }

    /// The PTE encoding of a decoded entry of [`crate::swap`]'s swap
    /// areas; `None` if it does not fit.
    pub const fn from_swp(e: crate::swap::SwpEntry) -> Option<Self> {
        SwapEntry::new(e.ty, e.offset)
    }

    /// The decoded entry, as [`crate::swap`]'s swap areas take it.
    pub const fn swp(self) -> crate::swap::SwpEntry {
        crate::swap::SwpEntry::new(self.ty(), self.offset())
    }

    /// The swap entry a PTE holds (`pte_to_swp_entry`), with its flag bits
    /// (see [`SwapEntry::pte_flags`]) dropped; `None` for a present or
    /// none PTE, or one with bits no swap PTE has (P, bits 4..8), or with
    /// flag bits alone (the entry they leave, all zero, is the none
    /// encoding [`SwapEntry::new`] never makes).
    pub const fn from_pte(pte: Pte) -> Option<Self> {
        if pte.0 & !SWP_FLAGS == 0 || pte.0 & 0x1f1 != 0 {
            return None;
        }
        Some(SwapEntry(pte.0 & !SWP_FLAGS))
    }

    /// The flag bits (soft-dirty, uffd-wp, exclusive) of a swap PTE.
    pub const fn pte_flags(pte: Pte) -> u64 {
        pte.0 & SWP_FLAGS
    }

    /// The PTE holding this entry with `flags` (a subset of
    /// [`SWP_FLAGS`]) (`swp_entry_to_pte`).
    pub const fn to_pte(self, flags: u64) -> Pte {
        Pte(self.0 | (flags & SWP_FLAGS))
    }
}

/// Whether a PTE holds a swap entry (`is_swap_pte`: neither none nor
/// present).
pub const fn is_swap_pte(pte: Pte) -> bool {
    pte.0 != 0 && !pte.is_present()
}

#[cfg(test)]
mod tests {
    /// Found by the `walker` fuzz target (reproducer in
    /// mm-core/fuzz/corpus/walker/flags-only-swap-pte): a non-present PTE
    /// with only swap flag bits (soft-dirty here) decoded as the entry of
    /// type 0 and the last offset, an entry no swap area hands out and
    /// `SwapEntry::new` refuses.
    #[test]
    fn flag_bits_alone_are_no_swap_entry() {
        for flags in [SWP_SOFT_DIRTY, SWP_UFFD_WP, SWP_EXCLUSIVE, SWP_FLAGS] {
            assert_eq!(SwapEntry::from_pte(Pte(flags)), None, "{flags:#x}");
        }
        let e = SwapEntry::new(0, 5).unwrap();
        assert_eq!(SwapEntry::from_pte(e.to_pte(SWP_SOFT_DIRTY)), Some(e));
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_matches_linux() {
        // Type 1, offset 0: every offset bit set (inverted), type in 59..63.
        let e = SwapEntry::new(1, 0).unwrap();
        assert_eq!(e.to_pte(0).0, (1u64 << 59) | (((1u64 << 50) - 1) << 9));
        assert_eq!((e.ty(), e.offset()), (1, 0));
        // Offset 5: its bits appear inverted from bit 9.
        let e = SwapEntry::new(0, 5).unwrap();
        assert_eq!(e.to_pte(0).0 >> 9 & 0x7, !5u64 & 0x7);
        assert!(!e.to_pte(0).is_present());
        assert!(is_swap_pte(e.to_pte(0)));
        assert!(!is_swap_pte(Pte(0)) && !is_swap_pte(Pte(0x1003)));
        // The CPU-visible bits stay clear: P, A, D, PS, G.
        assert_eq!(e.to_pte(SWP_FLAGS).0 & 0x1f1, 0);
        assert_eq!(SwapEntry::new(32, 0), None);
        assert_eq!(SwapEntry::new(0, 1 << 50), None);
        assert_eq!(SwapEntry::new(0, (1 << 50) - 1), None, "would be the none PTE");
        assert_eq!(SwapEntry::from_pte(Pte(0x1003)), None, "a present PTE is no swap entry");
    }

    proptest! {
        #[test]
        fn round_trip(ty in 0u8..32, offset in 0u64..(1 << 50), flags in 0u64..16) {
            prop_assume!(ty != 0 || offset != (1 << 50) - 1);
            let e = SwapEntry::new(ty, offset).unwrap();
            let pte = e.to_pte(flags);
            prop_assert!(is_swap_pte(pte));
            prop_assert_eq!(SwapEntry::from_pte(pte), Some(e));
            prop_assert_eq!(SwapEntry::pte_flags(pte), flags & SWP_FLAGS);
            prop_assert_eq!((e.ty(), e.offset()), (ty, offset));
            prop_assert_eq!(SwapEntry::from_swp(e.swp()), Some(e));
        }
    }
}
