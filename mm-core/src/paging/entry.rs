//! Paging-structure entry formats (Intel SDM vol. 3, 4.5, tables 4-15 to
//! 4-20) for every level of 4-level and 5-level paging.
//!
//! One entry type, [`Pte`], serves every level, as the hardware format is
//! the same apart from bit 7 (PS in a PMD/PUD, PAT in a PTE) and bit 12
//! (PAT in a large-page entry, address bit elsewhere). What a bit means at
//! a level is answered here; whether a walk may use it is the walker's.

use crate::addr::{Level, PageSize, PhysAddr};
use core::fmt;

/// Flag bits of an entry: everything outside the address field.
///
/// Names follow Linux's `_PAGE_*`. In the mapper's and walker's
/// *normalised* flags (`Translation::flags`, `Mapping::flags`, mapper
/// input) bit 7 always means PAT and PS never appears: the page size is
/// carried separately, as Linux's `pgprot_4k_2_large` does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PteFlags(pub u64);

impl PteFlags {
    /// P: the entry maps a page or a table.
    pub const PRESENT: PteFlags = PteFlags(1 << 0);
    /// R/W: writes allowed (ANDed over all levels).
    pub const RW: PteFlags = PteFlags(1 << 1);
    /// U/S: user-mode accesses allowed (ANDed over all levels).
    pub const USER: PteFlags = PteFlags(1 << 2);
    /// Page-level write-through (PAT index bit 0).
    pub const PWT: PteFlags = PteFlags(1 << 3);
    /// Page-level cache disable (PAT index bit 1).
    pub const PCD: PteFlags = PteFlags(1 << 4);
    /// A: set by the CPU when the entry is used for a translation.
    pub const ACCESSED: PteFlags = PteFlags(1 << 5);
    /// D: set by the CPU on a write through a leaf entry.
    pub const DIRTY: PteFlags = PteFlags(1 << 6);
    /// PS: in a PMD or PUD, the entry maps a 2 MiB / 1 GiB page.
    /// Reserved in a PML4E/PML5E. The same bit as [`PteFlags::PAT`].
    pub const PSE: PteFlags = PteFlags(1 << 7);
    /// PAT index bit 2 in a 4 KiB PTE (and in normalised flags).
    pub const PAT: PteFlags = PteFlags(1 << 7);
    /// G: the translation survives a CR3 write (with CR4.PGE).
    pub const GLOBAL: PteFlags = PteFlags(1 << 8);
    /// Software-available bit 9.
    pub const SOFTW1: PteFlags = PteFlags(1 << 9);
    /// Software-available bit 10.
    pub const SOFTW2: PteFlags = PteFlags(1 << 10);
    /// Software-available bit 11.
    pub const SOFTW3: PteFlags = PteFlags(1 << 11);
    /// PAT index bit 2 in a 2 MiB / 1 GiB leaf (raw encoding only).
    pub const PAT_LARGE: PteFlags = PteFlags(1 << 12);
    /// Software-available bits 52..58.
    pub const SOFTW_HIGH: PteFlags = PteFlags(0x7f << 52);
    /// Protection key, bits 59..62 (leaf entries, with CR4.PKE).
    pub const PKEY_MASK: PteFlags = PteFlags(0xf << 59);
    /// XD/NX: instruction fetches not allowed (with EFER.NXE; reserved
    /// otherwise).
    pub const NX: PteFlags = PteFlags(1 << 63);

    /// Bits an entry holds outside any address field (0..11, 52..63).
    pub const ALL: PteFlags = PteFlags(0xfff0_0000_0000_0fff);

    /// No flags.
    #[inline]
    pub const fn empty() -> Self {
        PteFlags(0)
    }
    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// Whether every bit of `other` is set.
    #[inline]
    pub const fn contains(self, other: PteFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any bit of `other` is set.
    #[inline]
    pub const fn intersects(self, other: PteFlags) -> bool {
        self.0 & other.0 != 0
    }
    /// Union.
    #[inline]
    pub const fn union(self, other: PteFlags) -> Self {
        PteFlags(self.0 | other.0)
    }
    /// `self` without the bits of `other`.
    #[inline]
    pub const fn difference(self, other: PteFlags) -> Self {
        PteFlags(self.0 & !other.0)
    }
    /// The protection key field (0..15).
    #[inline]
    pub const fn pkey(self) -> u8 {
        ((self.0 >> 59) & 0xf) as u8
    }
    /// `self` with the protection key field set to `key & 0xf`.
    #[inline]
    pub const fn with_pkey(self, key: u8) -> Self {
        PteFlags((self.0 & !Self::PKEY_MASK.0) | (((key & 0xf) as u64) << 59))
    }
}

impl core::ops::BitOr for PteFlags {
    type Output = PteFlags;
    fn bitor(self, rhs: PteFlags) -> PteFlags {
        self.union(rhs)
    }
}

impl core::ops::BitOrAssign for PteFlags {
    fn bitor_assign(&mut self, rhs: PteFlags) {
        self.0 |= rhs.0;
    }
}

impl core::ops::BitAnd for PteFlags {
    type Output = PteFlags;
    fn bitand(self, rhs: PteFlags) -> PteFlags {
        PteFlags(self.0 & rhs.0)
    }
}

impl core::ops::Not for PteFlags {
    type Output = PteFlags;
    fn not(self) -> PteFlags {
        PteFlags(!self.0)
    }
}

impl fmt::Debug for PteFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PteFlags({:#x}: {})", self.0, self)
    }
}

/// Prints normalised flags as Linux's `ptdump` does (arch/x86/mm/dump_pagetables.c):
/// fixed columns `USR RW PWT PCD PSE/blank GLB NX`, with the unset ones as
/// blanks or `ro`/`x`, plus `PAT`, `pkeyN` and `SW` when set. Used for
/// normalised leaf flags; see [`Pte`]'s `Display` for raw entries.
impl fmt::Display for PteFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.contains(PteFlags::PRESENT) {
            return f.write_str("                          ");
        }
        f.write_str(if self.contains(PteFlags::USER) { "USR " } else { "    " })?;
        f.write_str(if self.contains(PteFlags::RW) { "RW " } else { "ro " })?;
        f.write_str(if self.contains(PteFlags::PWT) { "PWT " } else { "    " })?;
        f.write_str(if self.contains(PteFlags::PCD) { "PCD " } else { "    " })?;
        f.write_str(if self.contains(PteFlags::GLOBAL) { "GLB " } else { "    " })?;
        f.write_str(if self.contains(PteFlags::NX) { "NX" } else { "x " })?;
        if self.contains(PteFlags::PAT) {
            f.write_str(" PAT")?;
        }
        if self.contains(PteFlags::ACCESSED) {
            f.write_str(" A")?;
        }
        if self.contains(PteFlags::DIRTY) {
            f.write_str(" D")?;
        }
        if self.pkey() != 0 {
            write!(f, " pkey{:x}", self.pkey())?;
        }
        if self
            .intersects(PteFlags(PteFlags::SOFTW1.0 | PteFlags::SOFTW2.0 | PteFlags::SOFTW3.0 | PteFlags::SOFTW_HIGH.0))
        {
            f.write_str(" SW")?;
        }
        Ok(())
    }
}

/// Physical-address bits 12..51 of an entry (the widest the architecture
/// allows, MAXPHYADDR = 52).
pub const PTE_ADDR_MASK_MAX: u64 = 0x000f_ffff_ffff_f000;

/// Mask of the address bits a table pointer or 4 KiB leaf can hold with
/// `maxphyaddr` physical-address bits: bits 12..maxphyaddr-1.
#[inline]
pub const fn phys_addr_mask(maxphyaddr: u8) -> u64 {
    let m = if maxphyaddr > 52 { 52 } else { maxphyaddr };
    (((1u64 << m) - 1) & !0xfff) & PTE_ADDR_MASK_MAX
}

/// Address bits 12..51 that are reserved (must be 0) for `maxphyaddr`.
#[inline]
pub const fn reserved_addr_mask(maxphyaddr: u8) -> u64 {
    PTE_ADDR_MASK_MAX & !phys_addr_mask(maxphyaddr)
}

/// Low address bits of a large-page leaf that must be zero: 13..20 for a
/// 2 MiB page, 13..29 for a 1 GiB page (bit 12 is PAT).
#[inline]
pub const fn large_page_reserved_low(size: PageSize) -> u64 {
    match size {
        PageSize::Size4K => 0,
        PageSize::Size2M => 0x001f_e000,
        PageSize::Size1G => 0x3fff_e000,
    }
}

/// A paging-structure entry at any level (Linux's `pgd_t`/`p4d_t`/
/// `pud_t`/`pmd_t`/`pte_t`: one raw 64-bit format).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Pte(pub u64);

impl Pte {
    /// The all-zero (not present) entry.
    pub const NONE: Pte = Pte(0);

    /// An entry pointing to the next-level table at `table`.
    #[inline]
    pub const fn table(table: PhysAddr, flags: PteFlags) -> Pte {
        Pte((table.0 & PTE_ADDR_MASK_MAX) | (flags.0 & !PteFlags::PSE.0 & PteFlags::ALL.0))
    }

    /// A leaf entry mapping `size` at `pa` with normalised `flags`
    /// (bit 7 = PAT); sets PS and moves PAT to bit 12 for large pages.
    #[inline]
    pub const fn leaf(pa: PhysAddr, flags: PteFlags, size: PageSize) -> Pte {
        let f = flags.0 & PteFlags::ALL.0;
        match size {
            PageSize::Size4K => Pte((pa.0 & PTE_ADDR_MASK_MAX) | f),
            PageSize::Size2M | PageSize::Size1G => {
                let pat = if f & PteFlags::PAT.0 != 0 { PteFlags::PAT_LARGE.0 } else { 0 };
                let addr = pa.0 & PTE_ADDR_MASK_MAX & !(size.bytes() - 1);
                Pte(addr | (f & !PteFlags::PAT.0) | PteFlags::PSE.0 | pat)
            }
        }
    }

    /// The raw value.
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// P.
    #[inline]
    pub const fn is_present(self) -> bool {
        self.0 & PteFlags::PRESENT.0 != 0
    }
    /// R/W.
    #[inline]
    pub const fn is_writable(self) -> bool {
        self.0 & PteFlags::RW.0 != 0
    }
    /// U/S.
    #[inline]
    pub const fn is_user(self) -> bool {
        self.0 & PteFlags::USER.0 != 0
    }
    /// XD (bit 63), whatever EFER.NXE says.
    #[inline]
    pub const fn is_nx(self) -> bool {
        self.0 & PteFlags::NX.0 != 0
    }
    /// A.
    #[inline]
    pub const fn is_accessed(self) -> bool {
        self.0 & PteFlags::ACCESSED.0 != 0
    }
    /// D (meaningful in leaves only).
    #[inline]
    pub const fn is_dirty(self) -> bool {
        self.0 & PteFlags::DIRTY.0 != 0
    }
    /// G (meaningful in leaves only).
    #[inline]
    pub const fn is_global(self) -> bool {
        self.0 & PteFlags::GLOBAL.0 != 0
    }
    /// Bit 7 (PS above the PT, PAT in a PTE).
    #[inline]
    pub const fn bit7(self) -> bool {
        self.0 & PteFlags::PSE.0 != 0
    }

    /// Whether this entry, found at `level`, is a leaf (maps a page):
    /// always at the PT, with PS=1 at the PD or PDPT. Whether a PS=1 PDPTE
    /// is legal (1 GiB support) is a reserved-bit question, not this one.
    #[inline]
    pub const fn is_leaf_at(self, level: Level) -> bool {
        match level {
            Level::Pte => true,
            Level::Pmd | Level::Pud => self.bit7(),
            Level::P4d | Level::Pgd => false,
        }
    }

    /// Normalised flags of a leaf at `level`: PS removed and PAT reported
    /// at bit 7 whatever the page size.
    #[inline]
    pub const fn leaf_flags(self, level: Level) -> PteFlags {
        let f = self.0 & PteFlags::ALL.0;
        match level {
            Level::Pte => PteFlags(f),
            _ => {
                let pat = if self.0 & PteFlags::PAT_LARGE.0 != 0 { PteFlags::PAT.0 } else { 0 };
                PteFlags((f & !PteFlags::PSE.0) | pat)
            }
        }
    }

    /// Address of the next-level table (or 4 KiB frame) held in bits
    /// 12..maxphyaddr-1; higher bits, if set, are reserved-bit faults.
    #[inline]
    pub const fn addr(self, maxphyaddr: u8) -> PhysAddr {
        PhysAddr(self.0 & phys_addr_mask(maxphyaddr))
    }

    /// Base of the page a leaf of `size` maps (bit 12 excluded for large
    /// pages, where it is PAT).
    #[inline]
    pub const fn frame(self, size: PageSize, maxphyaddr: u8) -> PhysAddr {
        PhysAddr(self.0 & phys_addr_mask(maxphyaddr) & !(size.bytes() - 1))
    }

    /// The protection key (bits 59..62).
    #[inline]
    pub const fn pkey(self) -> u8 {
        ((self.0 >> 59) & 0xf) as u8
    }

    /// The entry with `flags` set.
    #[inline]
    pub const fn with(self, flags: PteFlags) -> Pte {
        Pte(self.0 | flags.0)
    }

    /// The entry with `flags` cleared.
    #[inline]
    pub const fn without(self, flags: PteFlags) -> Pte {
        Pte(self.0 & !flags.0)
    }
}

impl fmt::Debug for Pte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pte({:#018x})", self.0)
    }
}

/// Prints the raw value, the widest address and the raw flags as
/// `0x... -> 0x... P RW USR ... PS ...`, naming every set bit (the level
/// is unknown here, so bit 7 prints as `PS/PAT`).
impl fmt::Display for Pte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x} -> {:#x}", self.0, self.0 & PTE_ADDR_MASK_MAX)?;
        const NAMES: [(u64, &str); 13] = [
            (PteFlags::PRESENT.0, "P"),
            (PteFlags::RW.0, "RW"),
            (PteFlags::USER.0, "USR"),
            (PteFlags::PWT.0, "PWT"),
            (PteFlags::PCD.0, "PCD"),
            (PteFlags::ACCESSED.0, "A"),
            (PteFlags::DIRTY.0, "D"),
            (PteFlags::PSE.0, "PS/PAT"),
            (PteFlags::GLOBAL.0, "GLB"),
            (PteFlags::SOFTW1.0, "SW1"),
            (PteFlags::SOFTW2.0, "SW2"),
            (PteFlags::SOFTW3.0, "SW3"),
            (PteFlags::NX.0, "NX"),
        ];
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                write!(f, " {name}")?;
            }
        }
        if self.0 & PteFlags::SOFTW_HIGH.0 != 0 {
            write!(f, " SW[52:58]={:#x}", (self.0 >> 52) & 0x7f)?;
        }
        if self.pkey() != 0 {
            write!(f, " pkey{:x}", self.pkey())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn masks() {
        assert_eq!(phys_addr_mask(52), PTE_ADDR_MASK_MAX);
        assert_eq!(phys_addr_mask(36), 0x0000_000f_ffff_f000);
        assert_eq!(reserved_addr_mask(36), 0x000f_fff0_0000_0000);
        assert_eq!(reserved_addr_mask(52), 0);
        assert_eq!(phys_addr_mask(64), PTE_ADDR_MASK_MAX);
    }

    #[test]
    fn large_pat_moves_to_bit_12() {
        let flags = PteFlags::PRESENT | PteFlags::RW | PteFlags::PAT;
        let e = Pte::leaf(PhysAddr(0x4020_0000), flags, PageSize::Size2M);
        assert_eq!(e.0, 0x4020_0000 | 0x1000 | 0x80 | 0x3);
        assert!(e.is_leaf_at(Level::Pmd));
        assert_eq!(e.leaf_flags(Level::Pmd), flags);
        assert_eq!(e.frame(PageSize::Size2M, 52), PhysAddr(0x4020_0000));
        let e4 = Pte::leaf(PhysAddr(0x5000), flags, PageSize::Size4K);
        assert_eq!(e4.0, 0x5083);
        assert_eq!(e4.leaf_flags(Level::Pte), flags);
    }

    #[test]
    fn pkey_and_nx() {
        let f = PteFlags::PRESENT.with_pkey(0xb) | PteFlags::NX;
        assert_eq!(f.pkey(), 0xb);
        assert_eq!(Pte(f.0).pkey(), 0xb);
        assert!(Pte(f.0).is_nx());
    }

    #[test]
    fn display() {
        let f = PteFlags::PRESENT | PteFlags::RW | PteFlags::USER | PteFlags::NX;
        assert_eq!(format!("{f}"), "USR RW             NX");
        let g = PteFlags::PRESENT | PteFlags::GLOBAL;
        assert_eq!(format!("{g}"), "    ro         GLB x ");
        let e = Pte(0x8000_0000_0000_1067);
        assert_eq!(format!("{e}"), "0x8000000000001067 -> 0x1000 P RW USR A D NX");
    }
}
