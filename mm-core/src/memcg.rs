//! Memory-cgroup charges (Linux's `page->memcg_data` and the page
//! counters of `struct mem_cgroup`), the part shared by the page
//! allocator, which uncharges a page when its last reference goes, and
//! the guest's memory controller, which charges it.
//!
//! A charged page records its group and what it was charged as in the
//! page descriptor's `inuse` field, which only slab pages use otherwise
//! (Linux keeps `memcg_data` in the same `struct page` union): see
//! [`tag`]. The counts are atomics, so charging and uncharging need no
//! lock beyond the page allocator's, which every caller already holds,
//! and the controller reads them lock-free.

use crate::buddy::{Page, PG_SLAB};
use core::sync::atomic::{AtomicU64, Ordering};

/// Most memory cgroups at once, the root (index 0) included.
pub const MAX_MEMCG: usize = 64;

/// What a page was charged as (memory.stat's `anon`, `file`,
/// `pagetables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChargeKind {
    /// Anonymous user memory (swap cache included).
    Anon = 0,
    /// A page of the page cache.
    File = 1,
    /// A user page-table page.
    PageTable = 2,
}

/// The kinds a charge can have.
pub const NR_CHARGE_KINDS: usize = 3;

impl ChargeKind {
    /// All kinds, by index.
    pub const ALL: [ChargeKind; NR_CHARGE_KINDS] = [ChargeKind::Anon, ChargeKind::File, ChargeKind::PageTable];
}

/// The counters and limits of every group, in one `repr(C)` table the
/// guest publishes (its physical address is the descriptor's
/// `memcg_table`) for the host's `--verify memcg`: little-endian `u64`s,
/// [`MemcgSnapshot::decode`] reads them.
#[repr(C)]
pub struct MemcgTable {
    /// Pages charged, by group index and kind.
    pub charged: [[AtomicU64; NR_CHARGE_KINDS]; MAX_MEMCG],
    /// memory.max in pages (`u64::MAX / 4096`: no limit).
    pub max: [AtomicU64; MAX_MEMCG],
    /// The parent's index (the root's: 0).
    pub parent: [AtomicU64; MAX_MEMCG],
    /// 1 for a live group (the root always).
    pub live: [AtomicU64; MAX_MEMCG],
}

/// Bytes of [`MemcgTable`].
pub const TABLE_SIZE: usize = core::mem::size_of::<MemcgTable>();
const _: () = assert!(TABLE_SIZE == MAX_MEMCG * 8 * (NR_CHARGE_KINDS + 3));

/// The table (one per kernel).
pub static TABLE: MemcgTable = MemcgTable {
    charged: [const { [const { AtomicU64::new(0) }; NR_CHARGE_KINDS] }; MAX_MEMCG],
    max: [const { AtomicU64::new(u64::MAX / 4096) }; MAX_MEMCG],
    parent: [const { AtomicU64::new(0) }; MAX_MEMCG],
    live: {
        let mut l = [const { AtomicU64::new(0) }; MAX_MEMCG];
        l[0] = AtomicU64::new(1);
        l
    },
};
use TABLE as T;

/// A copy of a [`MemcgTable`] read from guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcgSnapshot {
    /// Pages charged, by group and kind.
    pub charged: [[u64; NR_CHARGE_KINDS]; MAX_MEMCG],
    /// memory.max in pages.
    pub max: [u64; MAX_MEMCG],
    /// Parent indexes.
    pub parent: [u64; MAX_MEMCG],
    /// Live flags.
    pub live: [u64; MAX_MEMCG],
}

impl MemcgSnapshot {
    /// Decodes [`TABLE_SIZE`] bytes (None if fewer).
    pub fn decode(b: &[u8]) -> Option<MemcgSnapshot> {
        if b.len() < TABLE_SIZE {
            return None;
        }
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let k = NR_CHARGE_KINDS;
        let base = MAX_MEMCG * k;
        Some(MemcgSnapshot {
            charged: core::array::from_fn(|g| core::array::from_fn(|c| w(g * k + c))),
            max: core::array::from_fn(|g| w(base + g)),
            parent: core::array::from_fn(|g| w(base + MAX_MEMCG + g)),
            live: core::array::from_fn(|g| w(base + 2 * MAX_MEMCG + g)),
        })
    }

    /// Whether `d` is `g` or below it.
    pub fn is_in(&self, d: usize, g: usize) -> bool {
        let mut c = d;
        for _ in 0..MAX_MEMCG {
            if c == g {
                return true;
            }
            if c == 0 {
                return false;
            }
            c = self.parent[c] as usize % MAX_MEMCG;
        }
        false
    }
}

/// The tag `page.inuse` holds for a page of group `memcg` charged as
/// `kind`: `(memcg + 1) | kind << 8`; 0 is "not charged".
pub fn tag_of(memcg: usize, kind: ChargeKind) -> u16 {
    (memcg as u16 + 1) | ((kind as u16) << 8)
}

/// The (group, kind) a page's descriptor records, if it is charged. Slab
/// pages use the field for their object count and are never charged.
pub fn tag(p: &Page) -> Option<(usize, ChargeKind)> {
    if p.flags & PG_SLAB != 0 || p.inuse == 0 {
        return None;
    }
    let memcg = (p.inuse & 0xff) as usize;
    let kind = *ChargeKind::ALL.get((p.inuse >> 8) as usize)?;
    (1..=MAX_MEMCG).contains(&memcg).then_some((memcg - 1, kind))
}

/// Charges the allocated page `p` (order 0, or a block counted as
/// `2^order` pages) to `memcg` as `kind`; a page charged already is
/// uncharged from its old group first, so a page is counted once.
pub fn charge_page(p: &mut Page, memcg: usize, kind: ChargeKind) {
    if memcg >= MAX_MEMCG || p.flags & PG_SLAB != 0 {
        return;
    }
    uncharge_page(p);
    p.inuse = tag_of(memcg, kind);
    T.charged[memcg][kind as usize].fetch_add(1 << p.order, Ordering::Relaxed);
}

/// Drops `p`'s charge, if it has one (its last reference is going, or it
/// is charged anew); the tag is cleared.
pub fn uncharge_page(p: &mut Page) {
    if let Some((memcg, kind)) = tag(p) {
        let c = &T.charged[memcg][kind as usize];
        let n = 1u64 << p.order;
        // Saturating: a count never wraps, whatever a corrupt tag says.
        let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
        p.inuse = 0;
    }
}

/// Pages charged to `memcg` as `kind` (0 for an index out of range).
pub fn charged(memcg: usize, kind: ChargeKind) -> u64 {
    T.charged.get(memcg).map_or(0, |c| c[kind as usize].load(Ordering::Relaxed))
}

/// Pages charged to `memcg`, all kinds.
pub fn charged_total(memcg: usize) -> u64 {
    ChargeKind::ALL.iter().map(|&k| charged(memcg, k)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buddy::PG_HEAD;

    #[test]
    fn charge_and_uncharge_are_exact_and_idempotent() {
        let mut p = Page { flags: PG_HEAD, ..Page::default() };
        let g = MAX_MEMCG - 1;
        let before = charged(g, ChargeKind::File);
        charge_page(&mut p, g, ChargeKind::File);
        assert_eq!(tag(&p), Some((g, ChargeKind::File)));
        assert_eq!(charged(g, ChargeKind::File), before + 1);
        // Charged again (e.g. to another kind): counted once.
        charge_page(&mut p, g, ChargeKind::File);
        assert_eq!(charged(g, ChargeKind::File), before + 1);
        uncharge_page(&mut p);
        uncharge_page(&mut p);
        assert_eq!(charged(g, ChargeKind::File), before);
        assert_eq!(tag(&p), None);
        // Slab pages are never charged.
        let mut s = Page { flags: PG_HEAD | PG_SLAB, inuse: 3, ..Page::default() };
        assert_eq!(tag(&s), None);
        charge_page(&mut s, g, ChargeKind::Anon);
        assert_eq!(s.inuse, 3);
    }
}
