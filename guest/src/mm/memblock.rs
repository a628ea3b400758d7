//! memblock: the boot-time allocator (Linux's mm/memblock.c), alive from
//! the E820 map until the buddy allocator takes over. It knows which
//! physical ranges are RAM and which are reserved (the kernel image, the
//! first MiB with the boot data, and everything it hands out itself).

use crate::boot::MemmapEntry;

/// A physical range `[start, end)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

const MAX_REGIONS: usize = 64;

/// A sorted, non-overlapping set of ranges with a fixed capacity (no heap
/// exists yet).
#[derive(Clone, Copy)]
pub struct RangeSet {
    r: [Range; MAX_REGIONS],
    n: usize,
}

impl RangeSet {
    const fn new() -> Self {
        RangeSet { r: [Range { start: 0, end: 0 }; MAX_REGIONS], n: 0 }
    }

    /// The ranges, sorted.
    pub fn iter(&self) -> impl Iterator<Item = Range> + '_ {
        self.r[..self.n].iter().copied()
    }

    /// Adds `[start, end)`, merging with neighbours. In place: the
    /// emulated CPU pays for every byte moved.
    fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // First range that ends at or after `start` (touching merges).
        let i = self.r[..self.n].iter().position(|r| r.end >= start).unwrap_or(self.n);
        // Ranges i..j overlap or touch [start, end).
        let mut j = i;
        let (mut s, mut e) = (start, end);
        while j < self.n && self.r[j].start <= end {
            s = s.min(self.r[j].start);
            e = e.max(self.r[j].end);
            j += 1;
        }
        if j > i {
            // Replace i..j by one range.
            self.r[i] = Range { start: s, end: e };
            self.r.copy_within(j..self.n, i + 1);
            self.n -= j - i - 1;
        } else if self.n < MAX_REGIONS {
            self.r.copy_within(i..self.n, i + 1);
            self.r[i] = Range { start: s, end: e };
            self.n += 1;
        } else {
            panic!("memblock: more than 64 regions");
        }
    }

    fn overlaps(&self, start: u64, end: u64) -> Option<Range> {
        self.iter().find(|r| r.start < end && start < r.end)
    }
}

/// The boot allocator.
pub struct Memblock {
    /// RAM (E820 usable).
    pub memory: RangeSet,
    /// Not to be handed to the buddy allocator.
    pub reserved: RangeSet,
}

/// Bytes in a MiB.
const MIB: u64 = 1 << 20;

impl Memblock {
    /// RAM from the E820 map; the first MiB is reserved outright (BIOS
    /// data, the boot structures the VMM or firmware left there).
    pub fn from_e820(map: &[MemmapEntry]) -> Self {
        let mut m = Memblock { memory: RangeSet::new(), reserved: RangeSet::new() };
        for e in map.iter().filter(|e| e.kind == crate::boot::E820_RAM) {
            // Whole pages only.
            let start = (e.addr + 0xfff) & !0xfff;
            let end = (e.addr + e.size) & !0xfff;
            m.memory.add(start, end);
        }
        m.reserve(0, MIB);
        m
    }

    /// Marks `[start, end)` as not free.
    pub fn reserve(&mut self, start: u64, end: u64) {
        self.reserved.add(start & !0xfff, (end + 0xfff) & !0xfff);
    }

    /// Finds and reserves `size` bytes aligned to `align` below `limit`,
    /// lowest address first. Memory fresh from the machine is zero.
    pub fn alloc(&mut self, size: u64, align: u64, limit: u64) -> Option<u64> {
        let memory = self.memory;
        for m in memory.iter() {
            let mut start = (m.start + align - 1) & !(align - 1);
            while start + size <= m.end.min(limit) {
                match self.reserved.overlaps(start, start + size) {
                    None => {
                        self.reserve(start, start + size);
                        return Some(start);
                    }
                    Some(r) => start = (r.end + align - 1) & !(align - 1),
                }
            }
        }
        None
    }

    /// Calls `f` for every free range (RAM minus reserved), in order.
    pub fn for_each_free(&self, mut f: impl FnMut(u64, u64)) {
        for m in self.memory.iter() {
            let mut cur = m.start;
            for r in self.reserved.iter() {
                if r.end <= cur || r.start >= m.end {
                    continue;
                }
                if r.start > cur {
                    f(cur, r.start);
                }
                cur = cur.max(r.end);
            }
            if cur < m.end {
                f(cur, m.end);
            }
        }
    }

    /// Highest RAM address (exclusive).
    pub fn end_of_ram(&self) -> u64 {
        self.memory.iter().last().map_or(0, |r| r.end)
    }

    /// Total RAM.
    pub fn total(&self) -> u64 {
        self.memory.iter().map(|r| r.end - r.start).sum()
    }
}
