//! Zones (DMA, DMA32, Normal), their free areas, per-CPU page lists and
//! watermarks, as in Linux's `struct zone`.

use super::migrate::MIGRATE_TYPES;
use super::page::NIL;
use super::{MAX_CPUS, NR_ORDERS, PCP_ORDERS};

/// Physical zones, in zonelist fallback order from the bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum ZoneType {
    /// Below 16 MiB (ISA DMA).
    Dma = 0,
    /// Below 4 GiB (32-bit DMA).
    Dma32 = 1,
    /// Everything else.
    Normal = 2,
}

/// Number of zones.
pub const NR_ZONES: usize = 3;

/// First pfn above `ZONE_DMA` (16 MiB).
pub const DMA_END_PFN: u64 = crate::abi::zone::DMA_END >> 12;
/// First pfn above `ZONE_DMA32` (4 GiB).
pub const DMA32_END_PFN: u64 = crate::abi::zone::DMA32_END >> 12;

impl ZoneType {
    /// All zones, lowest first.
    pub const ALL: [ZoneType; NR_ZONES] = [ZoneType::Dma, ZoneType::Dma32, ZoneType::Normal];

    /// The zone a pfn belongs to.
    pub fn of_pfn(pfn: u64) -> ZoneType {
        if pfn < DMA_END_PFN {
            ZoneType::Dma
        } else if pfn < DMA32_END_PFN {
            ZoneType::Dma32
        } else {
            ZoneType::Normal
        }
    }

    /// Linux's name for the zone (as in /proc/buddyinfo).
    pub const fn name(self) -> &'static str {
        match self {
            ZoneType::Dma => "DMA",
            ZoneType::Dma32 => "DMA32",
            ZoneType::Normal => "Normal",
        }
    }
}

/// One order's free lists, one per migratetype (Linux's `struct
/// free_area`). Without grouping by mobility only the unmovable list is
/// used.
#[derive(Debug, Clone, Copy)]
pub struct FreeArea {
    /// Descriptor index of the first free block of each migratetype's list
    /// (`MigrateType as usize`), or `NIL`.
    pub free_list: [u32; MIGRATE_TYPES],
    /// Free blocks of this order, all lists.
    pub nr_free: u64,
    /// Free blocks of this order on each migratetype's list.
    pub nr_free_mt: [u64; MIGRATE_TYPES],
}

/// A CPU's cache of free pages for one zone (Linux's `per_cpu_pages`).
/// Pages on it are free for the user but allocated from the buddy's point
/// of view: they are neither in `free_area` nor in `Zone::nr_free`.
#[derive(Debug, Clone, Copy)]
pub struct PerCpuPages {
    /// Pages (not blocks) on all the lists.
    pub count: u64,
    /// Drain to the buddy when `count` reaches this.
    pub high: u64,
    /// Pages moved to or from the buddy at a time.
    pub batch: u64,
    /// Singly-linked LIFO lists of block heads, one per order
    /// `0..PCP_ORDERS` and migratetype (`lists[order][mt]`).
    pub lists: [[u32; MIGRATE_TYPES]; PCP_ORDERS],
}

/// Watermark levels (Linux's `enum zone_watermarks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// Below this, only atomic or memalloc allocations succeed.
    Min = 0,
    /// Below this, reclaim (kswapd) should be woken.
    Low = 1,
    /// Reclaim stops here.
    High = 2,
}

/// A memory zone.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Which zone.
    pub kind: ZoneType,
    /// The node it belongs to (Linux's `zone_to_nid`).
    pub node: u8,
    /// Lowest pfn given to the zone so far (`u64::MAX` if none).
    pub start_pfn: u64,
    /// One past the highest pfn given to the zone so far (0 if none).
    pub end_pfn: u64,
    /// Pages handed to the allocator (`zone_managed_pages`).
    pub managed_pages: u64,
    /// Pages on the free lists (`NR_FREE_PAGES`).
    pub nr_free: u64,
    /// Free lists per order.
    pub free_area: [FreeArea; NR_ORDERS],
    /// `[min, low, high]` in pages.
    pub watermark: [u64; 3],
    /// Per-CPU page lists.
    pub pcp: [PerCpuPages; MAX_CPUS],
    /// Times an allocation found the zone below its low watermark (the hook
    /// where Linux wakes kswapd).
    pub kswapd_wakeups: u64,
    /// Pages added to every watermark after fallbacks that mixed
    /// migratetypes in a pageblock (Linux's `zone->watermark_boost`): the
    /// reclaim kswapd owes before the boost is cleared.
    pub watermark_boost: u64,
    /// A fallback boosted the watermark and kswapd has not been told yet
    /// (Linux's `ZONE_BOOSTED_WATERMARK` flag).
    pub boosted: bool,
}

impl Zone {
    pub(crate) const fn new(kind: ZoneType, node: u8) -> Zone {
        Zone {
            kind,
            node,
            start_pfn: u64::MAX,
            end_pfn: 0,
            managed_pages: 0,
            nr_free: 0,
            free_area: [FreeArea { free_list: [NIL; MIGRATE_TYPES], nr_free: 0, nr_free_mt: [0; MIGRATE_TYPES] };
                NR_ORDERS],
            watermark: [0; 3],
            pcp: [PerCpuPages { count: 0, high: 0, batch: 1, lists: [[NIL; MIGRATE_TYPES]; PCP_ORDERS] }; MAX_CPUS],
            kswapd_wakeups: 0,
            watermark_boost: 0,
            boosted: false,
        }
    }

    /// Whether any memory was given to the zone (Linux's `populated_zone`).
    pub fn populated(&self) -> bool {
        self.managed_pages > 0
    }

    /// A watermark with the boost added (Linux's `wmark_pages`).
    pub fn wmark(&self, w: Watermark) -> u64 {
        self.watermark[w as usize] + self.watermark_boost
    }

    /// Pages on all CPUs' pcp lists.
    pub fn pcp_pages(&self) -> u64 {
        self.pcp.iter().map(|p| p.count).sum()
    }

    /// Linux's `__zone_watermark_ok`: would an allocation of `order` leave
    /// more than `mark` free pages, and is a large enough block free?
    pub fn watermark_ok(&self, order: u8, mark: u64) -> bool {
        let free = self.nr_free as i128 - ((1i128 << order) - 1);
        if free <= mark as i128 {
            return false;
        }
        if order == 0 {
            return true;
        }
        self.free_area[order as usize..].iter().any(|a| a.nr_free > 0)
    }

    /// Linux's `zone_batchsize`: about a quarter of a 1024th of the zone,
    /// capped at 1 MiB, rounded to 2^n - 1 to spread cache colours.
    pub(crate) fn batchsize(managed: u64) -> u64 {
        let mut batch = (managed >> 10).min((1 << 20) / 4096);
        batch /= 4;
        if batch < 1 {
            batch = 1;
        }
        let b = batch + batch / 2;
        // rounddown_pow_of_two(b) - 1, at least 1.
        let pow = 1u64 << (63 - b.leading_zeros());
        (pow - 1).max(1)
    }
}

/// Integer square root (Linux's `int_sqrt`), without floating point: the
/// guest cannot execute SSE arithmetic.
pub(crate) fn int_sqrt(mut x: u64) -> u64 {
    if x < 2 {
        return x;
    }
    // Linux's digit-by-digit int_sqrt.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_sqrt_is_floor_sqrt() {
        for x in [0u64, 1, 2, 3, 4, 15, 16, 17, 65536, 1 << 40, u64::MAX] {
            let r = int_sqrt(x);
            assert!(r.checked_mul(r).is_some_and(|sq| sq <= x), "{x}");
            assert!((r + 1).checked_mul(r + 1).is_none_or(|sq| sq > x), "{x}");
        }
    }

    #[test]
    fn batchsize_like_linux() {
        // 4 GiB zone: managed >> 10 = 1024 -> cap 256 -> /4 = 64 -> 96 -> 64 - 1.
        assert_eq!(Zone::batchsize(1 << 20), 63);
        assert_eq!(Zone::batchsize(1024), 1);
        assert_eq!(Zone::batchsize(0), 1);
    }
}
