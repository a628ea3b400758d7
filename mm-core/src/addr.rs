//! Address types, page sizes and paging levels: how a linear address splits
//! into table indices and how physical addresses are aligned.
//!
//! The types are plain `u64` wrappers with public fields so host code can
//! build them from raw register values; the helpers never panic (alignment
//! arguments that are not powers of two are the caller's bug and give
//! unspecified but non-panicking results).

use core::fmt;

/// A guest-physical address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(pub u64);

/// A guest-virtual (linear) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct VirtAddr(pub u64);

/// Size of a base page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Entries in one paging structure (every level, 4-level and 5-level).
pub const PTRS_PER_TABLE: usize = 512;

#[inline]
const fn align_down_u64(v: u64, align: u64) -> u64 {
    v & !align.wrapping_sub(1)
}

#[inline]
const fn align_up_u64(v: u64, align: u64) -> Option<u64> {
    let mask = align.wrapping_sub(1);
    match v.checked_add(mask) {
        Some(x) => Some(x & !mask),
        None => None,
    }
}

macro_rules! common_addr_impl {
    ($t:ident) => {
        impl $t {
            /// The raw value.
            #[inline]
            pub const fn as_u64(self) -> u64 {
                self.0
            }
            /// Rounds down to a multiple of `align` (a power of two).
            #[inline]
            pub const fn align_down(self, align: u64) -> Self {
                $t(align_down_u64(self.0, align))
            }
            /// Rounds up to a multiple of `align` (a power of two); `None`
            /// when that would wrap past `u64::MAX`.
            #[inline]
            pub const fn align_up(self, align: u64) -> Option<Self> {
                match align_up_u64(self.0, align) {
                    Some(v) => Some($t(v)),
                    None => None,
                }
            }
            /// Whether the address is a multiple of `align` (a power of two).
            #[inline]
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & align.wrapping_sub(1) == 0
            }
            /// Offset inside its 4 KiB page.
            #[inline]
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }
            /// Offset inside a page of `size`.
            #[inline]
            pub const fn offset_in(self, size: PageSize) -> u64 {
                self.0 & (size.bytes() - 1)
            }
            /// `self + n`, `None` on overflow.
            #[inline]
            pub const fn checked_add(self, n: u64) -> Option<Self> {
                match self.0.checked_add(n) {
                    Some(v) => Some($t(v)),
                    None => None,
                }
            }
        }

        impl fmt::LowerHex for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#018x}", self.0)
            }
        }
    };
}

common_addr_impl!(PhysAddr);
common_addr_impl!(VirtAddr);

impl PhysAddr {
    /// Page frame number (`pa >> PAGE_SHIFT`), Linux's `PHYS_PFN`.
    #[inline]
    pub const fn pfn(self) -> u64 {
        self.0 >> PAGE_SHIFT
    }

    /// Whether the address fits in `maxphyaddr` bits (CPUID.80000008H:EAX[7:0]).
    #[inline]
    pub const fn fits(self, maxphyaddr: u8) -> bool {
        maxphyaddr >= 64 || self.0 >> maxphyaddr == 0
    }
}

impl VirtAddr {
    /// Whether the address is canonical for 4-level paging: bits 63..47
    /// all equal. A non-canonical access is a #GP (or #SS), not a #PF.
    #[inline]
    pub const fn is_canonical_48(self) -> bool {
        ((self.0 as i64) << 16 >> 16) as u64 == self.0
    }

    /// Whether the address is canonical for 5-level paging: bits 63..56
    /// all equal.
    #[inline]
    pub const fn is_canonical_57(self) -> bool {
        ((self.0 as i64) << 7 >> 7) as u64 == self.0
    }

    /// Canonical check for the paging mode in force (`la57` = CR4.LA57).
    #[inline]
    pub const fn is_canonical(self, la57: bool) -> bool {
        if la57 {
            self.is_canonical_57()
        } else {
            self.is_canonical_48()
        }
    }

    /// Sign-extends from bit 47 (or bit 56 with `la57`): the canonical
    /// form of an address built from table indices.
    #[inline]
    pub const fn canonicalize(self, la57: bool) -> Self {
        let s = if la57 { 7 } else { 16 };
        VirtAddr(((self.0 as i64) << s >> s) as u64)
    }

    /// Index into the paging structure of `level` (9 bits of the address).
    #[inline]
    pub const fn table_index(self, level: Level) -> usize {
        ((self.0 >> level.shift()) & 0x1ff) as usize
    }

    /// Virtual page number (`va >> PAGE_SHIFT`).
    #[inline]
    pub const fn vpn(self) -> u64 {
        self.0 >> PAGE_SHIFT
    }
}

/// Sizes of a page mapped by a leaf entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB, mapped by a PTE.
    Size4K,
    /// 2 MiB, mapped by a PMD (PDE) with PS=1.
    Size2M,
    /// 1 GiB, mapped by a PUD (PDPTE) with PS=1; needs
    /// CPUID.80000001H:EDX.Page1GB.
    Size1G,
}

impl PageSize {
    /// log2 of the size.
    #[inline]
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size1G => 30,
        }
    }

    /// The size in bytes.
    #[inline]
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// The level whose entry maps a page of this size.
    #[inline]
    pub const fn leaf_level(self) -> Level {
        match self {
            PageSize::Size4K => Level::Pte,
            PageSize::Size2M => Level::Pmd,
            PageSize::Size1G => Level::Pud,
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageSize::Size4K => "4K",
            PageSize::Size2M => "2M",
            PageSize::Size1G => "1G",
        })
    }
}

/// A level of the paging hierarchy, with Linux's names.
///
/// Numbered as the SDM does (PT = 1 ... PML5 = 5). Under 4-level paging
/// Linux folds the p4d into the pgd, so the root table it calls `pgd` is
/// the PML4, which is [`Level::P4d`] here: a level is named after the
/// structure it is, not after its position from the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Page table (PT); its entries map 4 KiB pages.
    Pte = 1,
    /// Page directory (PD); entries map a PT or a 2 MiB page.
    Pmd = 2,
    /// Page-directory-pointer table (PDPT); entries map a PD or a 1 GiB page.
    Pud = 3,
    /// PML4; entries map a PDPT. The root under 4-level paging.
    P4d = 4,
    /// PML5; entries map a PML4. The root under 5-level paging (LA57).
    Pgd = 5,
}

impl Level {
    /// The root level for the paging mode (`la57` = CR4.LA57).
    #[inline]
    pub const fn root(la57: bool) -> Level {
        if la57 {
            Level::Pgd
        } else {
            Level::P4d
        }
    }

    /// The level number as in the SDM (1 = PT ... 5 = PML5).
    #[inline]
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// Bit position of the lowest address bit this level indexes.
    #[inline]
    pub const fn shift(self) -> u32 {
        12 + 9 * (self as u32 - 1)
    }

    /// The next level towards the leaves, `None` below the PT.
    #[inline]
    pub const fn next_lower(self) -> Option<Level> {
        match self {
            Level::Pgd => Some(Level::P4d),
            Level::P4d => Some(Level::Pud),
            Level::Pud => Some(Level::Pmd),
            Level::Pmd => Some(Level::Pte),
            Level::Pte => None,
        }
    }

    /// The page size a leaf entry at this level maps; `None` for levels
    /// that can only point to tables.
    #[inline]
    pub const fn page_size(self) -> Option<PageSize> {
        match self {
            Level::Pte => Some(PageSize::Size4K),
            Level::Pmd => Some(PageSize::Size2M),
            Level::Pud => Some(PageSize::Size1G),
            Level::P4d | Level::Pgd => None,
        }
    }

    /// Linux's name of the level ("PGD", "P4D", "PUD", "PMD", "PTE").
    pub const fn linux_name(self) -> &'static str {
        match self {
            Level::Pgd => "PGD",
            Level::P4d => "P4D",
            Level::Pud => "PUD",
            Level::Pmd => "PMD",
            Level::Pte => "PTE",
        }
    }

    /// The SDM's name of the structure ("PML5", "PML4", "PDPT", "PD", "PT").
    pub const fn sdm_name(self) -> &'static str {
        match self {
            Level::Pgd => "PML5",
            Level::P4d => "PML4",
            Level::Pud => "PDPT",
            Level::Pmd => "PD",
            Level::Pte => "PT",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.linux_name(), self.sdm_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align() {
        assert_eq!(PhysAddr(0x1234).align_down(PAGE_SIZE), PhysAddr(0x1000));
        assert_eq!(PhysAddr(0x1234).align_up(PAGE_SIZE), Some(PhysAddr(0x2000)));
        assert_eq!(PhysAddr(0x2000).align_up(PAGE_SIZE), Some(PhysAddr(0x2000)));
        assert_eq!(VirtAddr(u64::MAX).align_up(PAGE_SIZE), None);
        assert!(VirtAddr(0x20_0000).is_aligned(PageSize::Size2M.bytes()));
        assert_eq!(VirtAddr(0x20_1234).offset_in(PageSize::Size2M), 0x1234);
        assert_eq!(VirtAddr(0x1234).page_offset(), 0x234);
    }

    #[test]
    fn canonical() {
        assert!(VirtAddr(0x0000_7fff_ffff_ffff).is_canonical_48());
        assert!(!VirtAddr(0x0000_8000_0000_0000).is_canonical_48());
        assert!(VirtAddr(0xffff_8000_0000_0000).is_canonical_48());
        assert!(!VirtAddr(0xfff7_8000_0000_0000).is_canonical_48());
        assert!(VirtAddr(0x0000_8000_0000_0000).is_canonical_57());
        assert!(VirtAddr(0x00ff_ffff_ffff_ffff).is_canonical_57());
        assert!(!VirtAddr(0x0100_0000_0000_0000).is_canonical_57());
        assert!(VirtAddr(0xff00_0000_0000_0000).is_canonical_57());
        assert_eq!(VirtAddr(0x0000_8000_0000_0000).canonicalize(false), VirtAddr(0xffff_8000_0000_0000));
    }

    #[test]
    fn indices() {
        // Linux's direct map base: pgd index 273 under 4-level paging.
        let va = VirtAddr(0xffff_8880_0000_0000);
        assert_eq!(va.table_index(Level::P4d), 273);
        let va = VirtAddr(0xffff_ffff_8000_0000 + 0x4_0000 + 0x3000 + 0x12);
        assert_eq!(va.table_index(Level::P4d), 511);
        assert_eq!(va.table_index(Level::Pud), 510);
        assert_eq!(va.table_index(Level::Pmd), 0);
        assert_eq!(va.table_index(Level::Pte), 0x43);
        assert_eq!(Level::Pgd.shift(), 48);
        assert_eq!(Level::Pud.page_size(), Some(PageSize::Size1G));
        assert_eq!(PageSize::Size2M.bytes(), 2 << 20);
        assert_eq!(PageSize::Size1G.leaf_level(), Level::Pud);
        assert_eq!(Level::root(true), Level::Pgd);
    }
}
