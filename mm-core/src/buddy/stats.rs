//! Buddy reports: /proc/buddyinfo and the fragmentation indices of Linux's
//! `mm/vmstat.c` (`unusable_free_index`, `__fragmentation_index`), printed
//! with our own decimal code (see `crate::fmt`).

use super::{BuddyAllocator, Zone, ZoneId, MAX_PAGE_ORDER, NR_ORDERS};
use crate::fmt::{write_dec, write_milli, write_padded};
use core::fmt::{self, Write};

/// Linux's `struct contig_page_info` for one zone and order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContigPageInfo {
    /// Free pages in the zone (buddy lists only).
    pub free_pages: u64,
    /// Free blocks of any order.
    pub free_blocks_total: u64,
    /// Free blocks of the requested order that the free lists could yield.
    pub free_blocks_suitable: u64,
}

impl ContigPageInfo {
    /// Linux's `fill_contig_page_info`.
    pub fn of(zone: &Zone, order: u8) -> ContigPageInfo {
        let mut info = ContigPageInfo::default();
        for (o, area) in zone.free_area.iter().enumerate() {
            info.free_blocks_total += area.nr_free;
            info.free_pages += area.nr_free << o;
            if o >= order as usize {
                info.free_blocks_suitable += area.nr_free << (o - order as usize);
            }
        }
        info
    }

    /// Linux's `unusable_free_index`, in thousandths: the share of free
    /// memory that cannot serve an allocation of `order` (1000 when nothing
    /// is free).
    pub fn unusable_free_index(&self, order: u8) -> i64 {
        if self.free_pages == 0 {
            return 1000;
        }
        let usable = self.free_blocks_suitable << order;
        ((self.free_pages - usable.min(self.free_pages)) * 1000 / self.free_pages) as i64
    }

    /// Linux's `__fragmentation_index`, in thousandths: -1000 when the
    /// request would succeed; otherwise towards 0 a failure is for lack of
    /// memory, towards 1000 for fragmentation.
    pub fn fragmentation_index(&self, order: u8) -> i64 {
        if order > MAX_PAGE_ORDER || self.free_blocks_total == 0 {
            return 0;
        }
        if self.free_blocks_suitable > 0 {
            return -1000;
        }
        let requested = 1u64 << order;
        1000 - ((1000 + self.free_pages * 1000 / requested) / self.free_blocks_total) as i64
    }
}

impl BuddyAllocator<'_> {
    /// Calls `f(pfn, order)` for every free block on the zones' free
    /// lists (not the per-CPU lists), e.g. to count free memory per NUMA
    /// node. A list longer than the memory map (a corrupt one) is cut
    /// there, so this always ends.
    pub fn for_each_free_block(&self, mut f: impl FnMut(u64, u8)) {
        let limit = self.mem_map().len();
        for z in self.zones() {
            for (o, area) in z.free_area.iter().enumerate() {
                for &head in &area.free_list {
                    let (mut i, mut seen) = (head, 0);
                    while i != super::NIL && (i as usize) < limit && seen <= limit {
                        f(self.base_pfn() + u64::from(i), o as u8);
                        i = self.mem_map()[i as usize].next;
                        seen += 1;
                    }
                }
            }
        }
    }

    /// Free blocks per order of a zone (one line of /proc/buddyinfo).
    pub fn free_blocks(&self, z: impl Into<ZoneId> + Copy) -> [u64; NR_ORDERS] {
        let mut out = [0; NR_ORDERS];
        for (o, a) in self.zone(z).free_area.iter().enumerate() {
            out[o] = a.nr_free;
        }
        out
    }

    /// /proc/buddyinfo: a line per populated zone, free block counts per
    /// order (`Node 0, zone   Normal      1      0 ...`).
    pub fn buddyinfo<W: Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        for z in self.zones().iter().filter(|z| z.populated()) {
            w.write_str("Node ")?;
            write_dec(w, u64::from(z.node), 0)?;
            w.write_str(", zone ")?;
            write_padded(w, z.kind.name(), 8, false)?;
            for a in &z.free_area {
                w.write_char(' ')?;
                write_dec(w, a.nr_free, 6)?;
            }
            w.write_char('\n')?;
        }
        Ok(())
    }

    /// Unusable free space index of a zone for `order`, in thousandths.
    pub fn unusable_free_index(&self, z: impl Into<ZoneId> + Copy, order: u8) -> i64 {
        ContigPageInfo::of(self.zone(z), order).unusable_free_index(order)
    }

    /// Fragmentation index of a zone for `order`, in thousandths.
    pub fn fragmentation_index(&self, z: impl Into<ZoneId> + Copy, order: u8) -> i64 {
        ContigPageInfo::of(self.zone(z), order).fragmentation_index(order)
    }

    /// The unusable free space index of zone `z` for every order, in
    /// thousandths (one line of debugfs `extfrag/unusable_index`).
    pub fn unusable_indexes(&self, z: impl Into<ZoneId> + Copy) -> [i64; NR_ORDERS] {
        core::array::from_fn(|o| self.unusable_free_index(z, o as u8))
    }

    /// The fragmentation index of zone `z` for every order, in thousandths
    /// (one line of debugfs `extfrag/extfrag_index`).
    pub fn fragmentation_indexes(&self, z: impl Into<ZoneId> + Copy) -> [i64; NR_ORDERS] {
        core::array::from_fn(|o| self.fragmentation_index(z, o as u8))
    }

    /// debugfs `extfrag/extfrag_index`: per populated zone, the
    /// fragmentation index for every order as Linux's `%2d.%03d`
    /// (`-1.000` where the allocation would succeed).
    pub fn extfrag_index_text<W: Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        for z in self.zones().iter().filter(|z| z.populated()) {
            w.write_str("Node ")?;
            write_dec(w, u64::from(z.node), 0)?;
            w.write_str(", zone ")?;
            write_padded(w, z.kind.name(), 8, false)?;
            for o in 0..=MAX_PAGE_ORDER {
                let i = ContigPageInfo::of(z, o).fragmentation_index(o);
                // The only negative value is -1000; others are 0..1000.
                w.write_str(if i < 0 { " " } else { "  " })?;
                write_milli(w, i)?;
            }
            w.write_char('\n')?;
        }
        Ok(())
    }

    /// debugfs `extfrag/unusable_index`: per populated zone, the index for
    /// every order as `0.xxx`.
    pub fn unusable_index_text<W: Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        self.index_text(w, ContigPageInfo::unusable_free_index)
    }

    fn index_text<W: Write + ?Sized>(&self, w: &mut W, f: fn(&ContigPageInfo, u8) -> i64) -> fmt::Result {
        for z in self.zones().iter().filter(|z| z.populated()) {
            w.write_str("Node ")?;
            write_dec(w, u64::from(z.node), 0)?;
            w.write_str(", zone ")?;
            write_padded(w, z.kind.name(), 8, false)?;
            for o in 0..=MAX_PAGE_ORDER {
                w.write_char(' ')?;
                write_milli(w, f(&ContigPageInfo::of(z, o), o))?;
            }
            w.write_char('\n')?;
        }
        Ok(())
    }
}
