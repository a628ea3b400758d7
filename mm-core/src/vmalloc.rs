//! The vmalloc-area allocator (Linux's `mm/vmalloc.c`, `vmap_area`).
//!
//! This module owns the kernel's vmalloc window: it hands out virtual
//! ranges, each followed by an unmapped guard page, and takes them back,
//! merging free neighbours. It does not map pages; the caller backs an area
//! with frames and page-table entries.
//!
//! Free ranges live in a balanced search tree keyed by address whose nodes
//! carry the largest free size in their subtree (Linux's
//! `subtree_max_size`), so the lowest-address range that fits is found in
//! O(log n) by descending only into subtrees that can hold the request. The
//! tree is a treap over an arena of nodes (indices instead of pointers: no
//! `unsafe`); areas in use sit in a `BTreeMap` (this runs after the heap
//! exists).

use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::fmt::write_dec;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt::{self, Write};

const NIL: u32 = u32::MAX;

/// Why a vmalloc-area operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmallocError {
    /// The window bounds are not page-aligned or empty.
    BadWindow,
    /// Zero-sized request.
    ZeroSize,
    /// Alignment is not a power of two of at least a page.
    BadAlign(u64),
    /// No free range can hold the request.
    NoSpace,
    /// The address does not start an allocated area.
    NotFound(VirtAddr),
}

impl fmt::Display for VmallocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VmallocError::BadWindow => f.write_str("bad vmalloc window"),
            VmallocError::ZeroSize => f.write_str("zero-sized vmalloc area"),
            VmallocError::BadAlign(a) => write!(f, "bad alignment {a:#x}"),
            VmallocError::NoSpace => f.write_str("vmalloc space exhausted"),
            VmallocError::NotFound(a) => write!(f, "no vmalloc area at {:#x}", a.0),
        }
    }
}

#[cfg(any(test, feature = "std"))]
impl std::error::Error for VmallocError {}

/// An allocated area (Linux's `vmap_area` + `vm_struct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmapArea {
    /// First byte.
    pub start: VirtAddr,
    /// Usable bytes (page multiple).
    pub size: u64,
    /// Bytes of the reservation: `size` plus the guard page.
    pub reserved: u64,
    /// Who asked (Linux prints the caller's symbol).
    pub caller: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    start: u64,
    size: u64,
    /// Largest `size` in this node's subtree.
    subtree_max: u64,
    prio: u32,
    left: u32,
    right: u32,
}

/// The vmalloc-area allocator over `[start, end)`.
#[derive(Debug, Clone)]
pub struct VmapAllocator {
    start: u64,
    end: u64,
    nodes: Vec<Node>,
    free_slots: Vec<u32>,
    root: u32,
    busy: BTreeMap<u64, VmapArea>,
    rng: u64,
}

impl VmapAllocator {
    /// An allocator over the page-aligned window `[start, end)`, all free.
    pub fn new(start: VirtAddr, end: VirtAddr) -> Result<VmapAllocator, VmallocError> {
        if start.0 & (PAGE_SIZE - 1) != 0 || end.0 & (PAGE_SIZE - 1) != 0 || start.0 >= end.0 {
            return Err(VmallocError::BadWindow);
        }
        let mut v = VmapAllocator {
            start: start.0,
            end: end.0,
            nodes: Vec::new(),
            free_slots: Vec::new(),
            root: NIL,
            busy: BTreeMap::new(),
            rng: 0x2545_f491_4f6c_dd1d,
        };
        v.insert_free(start.0, end.0 - start.0);
        Ok(v)
    }

    /// Reserves `size` bytes (rounded up to pages) aligned to `align` (a
    /// power of two, at least a page), plus a guard page after them, at the
    /// lowest address that fits (Linux's `alloc_vmap_area`).
    pub fn alloc(&mut self, size: u64, align: u64, caller: &'static str) -> Result<VirtAddr, VmallocError> {
        if size == 0 {
            return Err(VmallocError::ZeroSize);
        }
        if !align.is_power_of_two() || align < PAGE_SIZE {
            return Err(VmallocError::BadAlign(align));
        }
        let size = size.checked_next_multiple_of(PAGE_SIZE).ok_or(VmallocError::NoSpace)?;
        let need = size.checked_add(PAGE_SIZE).ok_or(VmallocError::NoSpace)?;
        let (node, addr) = self.find_lowest_match(need, align).ok_or(VmallocError::NoSpace)?;
        let Node { start, size: free_size, .. } = self.nodes[node as usize];
        let tail = start + free_size - (addr + need);
        if addr == start && tail > 0 {
            // The common case: carve from the front. The range keeps its
            // place in the tree, so only the sizes on its path change.
            self.adjust_free(start, addr + need, tail);
        } else {
            self.remove_free(start);
            if addr > start {
                self.insert_free(start, addr - start);
            }
            if tail > 0 {
                self.insert_free(addr + need, tail);
            }
        }
        self.busy.insert(addr, VmapArea { start: VirtAddr(addr), size, reserved: need, caller });
        Ok(VirtAddr(addr))
    }

    /// Releases the area starting at `addr`, merging its reservation with
    /// free neighbours (Linux's `merge_or_add_vmap_area`).
    pub fn free(&mut self, addr: VirtAddr) -> Result<VmapArea, VmallocError> {
        let area = self.busy.remove(&addr.0).ok_or(VmallocError::NotFound(addr))?;
        let (start, size) = (addr.0, area.reserved);
        let prev = self.free_before(start).map(|i| self.nodes[i as usize]).filter(|p| p.start + p.size == start);
        let next = self.find_free(start + size).map(|i| self.nodes[i as usize]);
        // Growing a neighbour in place keeps the key order (free ranges
        // never overlap), so only one path's sizes need updating.
        match (prev, next) {
            (Some(p), Some(n)) => {
                self.remove_free(n.start);
                self.adjust_free(p.start, p.start, p.size + size + n.size);
            }
            (Some(p), None) => self.adjust_free(p.start, p.start, p.size + size),
            (None, Some(n)) => self.adjust_free(n.start, start, size + n.size),
            (None, None) => self.insert_free(start, size),
        }
        Ok(area)
    }

    /// The area containing `addr` (guard page included), like
    /// `find_vmap_area`.
    pub fn find(&self, addr: VirtAddr) -> Option<&VmapArea> {
        let (_, a) = self.busy.range(..=addr.0).next_back()?;
        (addr.0 < a.start.0 + a.reserved).then_some(a)
    }

    /// Areas in use, by address.
    pub fn areas(&self) -> impl Iterator<Item = &VmapArea> {
        self.busy.values()
    }

    /// Free ranges `(start, size)` by address.
    pub fn free_ranges(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut stack = Vec::new();
        let mut t = self.root;
        while t != NIL || !stack.is_empty() {
            while t != NIL {
                stack.push(t);
                t = self.nodes[t as usize].left;
            }
            if let Some(n) = stack.pop() {
                out.push((self.nodes[n as usize].start, self.nodes[n as usize].size));
                t = self.nodes[n as usize].right;
            }
        }
        out
    }

    /// Largest free range (the root's `subtree_max_size`).
    pub fn largest_free(&self) -> u64 {
        self.max_of(self.root)
    }

    /// /proc/vmallocinfo: `0xstart-0xend   size caller pages=N vmalloc`,
    /// the range and size including the guard page, as Linux prints them.
    pub fn vmallocinfo<W: Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        for a in self.busy.values() {
            write!(w, "{:#018x}-{:#018x} ", a.start.0, a.start.0 + a.reserved)?;
            write_dec(w, a.reserved, 7)?;
            w.write_char(' ')?;
            w.write_str(a.caller)?;
            w.write_str(" pages=")?;
            write_dec(w, a.size / PAGE_SIZE, 0)?;
            w.write_str(" vmalloc\n")?;
        }
        Ok(())
    }

    /// Checks the tree: in-order sorted, disjoint, not adjacent (merged),
    /// `subtree_max_size` exact, heap order on priorities; and that free
    /// and busy ranges tile the window.
    pub fn verify(&self) -> Result<(), &'static str> {
        self.verify_node(self.root)?;
        let mut pieces: Vec<(u64, u64, bool)> = self.free_ranges().into_iter().map(|(s, l)| (s, l, true)).collect();
        pieces.extend(self.busy.values().map(|a| (a.start.0, a.reserved, false)));
        pieces.sort_unstable();
        let mut at = self.start;
        let mut prev_free = false;
        for (s, l, free) in pieces {
            if s != at {
                return Err("free and busy ranges do not tile the window");
            }
            if free && prev_free {
                return Err("adjacent free ranges not merged");
            }
            prev_free = free;
            at = s + l;
        }
        if at != self.end {
            return Err("ranges do not reach the window's end");
        }
        Ok(())
    }

    fn verify_node(&self, t: u32) -> Result<u64, &'static str> {
        if t == NIL {
            return Ok(0);
        }
        let n = self.nodes[t as usize];
        let l = self.verify_node(n.left)?;
        let r = self.verify_node(n.right)?;
        if n.subtree_max != n.size.max(l).max(r) {
            return Err("subtree_max_size wrong");
        }
        for c in [n.left, n.right] {
            if c != NIL && self.nodes[c as usize].prio > n.prio {
                return Err("heap order");
            }
        }
        if n.left != NIL && self.nodes[n.left as usize].start >= n.start {
            return Err("key order");
        }
        if n.right != NIL && self.nodes[n.right as usize].start <= n.start {
            return Err("key order");
        }
        Ok(n.subtree_max)
    }

    // --- the augmented treap ---

    fn max_of(&self, t: u32) -> u64 {
        if t == NIL {
            0
        } else {
            self.nodes[t as usize].subtree_max
        }
    }

    fn update(&mut self, t: u32) {
        let n = self.nodes[t as usize];
        let m = n.size.max(self.max_of(n.left)).max(self.max_of(n.right));
        self.nodes[t as usize].subtree_max = m;
    }

    /// Linux's `find_vmap_lowest_match`: go left while the left subtree can
    /// hold the request, else take this node if it fits, else go right.
    /// `need + align - PAGE_SIZE` bytes fit whatever the alignment, so a
    /// subtree is only entered when it surely holds a fit: no backtracking.
    fn find_lowest_match(&self, need: u64, align: u64) -> Option<(u32, u64)> {
        let length = need.checked_add(align - PAGE_SIZE)?;
        let mut t = self.root;
        while t != NIL {
            let n = self.nodes[t as usize];
            if self.max_of(n.left) >= length {
                t = n.left;
                continue;
            }
            let addr = n.start.checked_next_multiple_of(align)?;
            if addr.checked_add(need).is_some_and(|e| e <= n.start + n.size) {
                return Some((t, addr));
            }
            if self.max_of(n.right) >= length {
                t = n.right;
                continue;
            }
            return None;
        }
        None
    }

    fn next_prio(&mut self) -> u32 {
        // xorshift64: deterministic, no std, no floating point.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 32) as u32
    }

    fn new_node(&mut self, start: u64, size: u64) -> u32 {
        let prio = self.next_prio();
        let n = Node { start, size, subtree_max: size, prio, left: NIL, right: NIL };
        if let Some(i) = self.free_slots.pop() {
            self.nodes[i as usize] = n;
            i
        } else {
            self.nodes.push(n);
            (self.nodes.len() - 1) as u32
        }
    }

    /// Splits `t` into keys `< key` and keys `>= key`.
    fn split(&mut self, t: u32, key: u64) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.nodes[t as usize].start < key {
            let (l, r) = self.split(self.nodes[t as usize].right, key);
            self.nodes[t as usize].right = l;
            self.update(t);
            (t, r)
        } else {
            let (l, r) = self.split(self.nodes[t as usize].left, key);
            self.nodes[t as usize].left = r;
            self.update(t);
            (l, t)
        }
    }

    /// Joins two treaps whose keys are all ordered `a < b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].prio > self.nodes[b as usize].prio {
            let r = self.merge(self.nodes[a as usize].right, b);
            self.nodes[a as usize].right = r;
            self.update(a);
            a
        } else {
            let l = self.merge(a, self.nodes[b as usize].left);
            self.nodes[b as usize].left = l;
            self.update(b);
            b
        }
    }

    fn insert_free(&mut self, start: u64, size: u64) {
        let n = self.new_node(start, size);
        let (l, r) = self.split(self.root, start);
        let l = self.merge(l, n);
        self.root = self.merge(l, r);
    }

    fn remove_free(&mut self, start: u64) {
        let (l, r) = self.split(self.root, start);
        let (m, r) = self.split(r, start + 1);
        if m != NIL {
            self.free_slots.push(m);
        }
        self.root = self.merge(l, r);
    }

    /// Changes the free range keyed `key` to `[start, start+size)`, which
    /// must keep its place in the key order, and refreshes
    /// `subtree_max_size` on the way back up.
    fn adjust_free(&mut self, key: u64, start: u64, size: u64) {
        self.root = self.adjust_in(self.root, key, start, size);
    }

    fn adjust_in(&mut self, t: u32, key: u64, start: u64, size: u64) -> u32 {
        if t == NIL {
            return t;
        }
        let n = self.nodes[t as usize];
        if key < n.start {
            let l = self.adjust_in(n.left, key, start, size);
            self.nodes[t as usize].left = l;
        } else if key > n.start {
            let r = self.adjust_in(n.right, key, start, size);
            self.nodes[t as usize].right = r;
        } else {
            self.nodes[t as usize].start = start;
            self.nodes[t as usize].size = size;
        }
        self.update(t);
        t
    }

    /// The free range with the greatest start below `addr`.
    fn free_before(&self, addr: u64) -> Option<u32> {
        let mut t = self.root;
        let mut best = None;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if n.start < addr {
                best = Some(t);
                t = n.right;
            } else {
                t = n.left;
            }
        }
        best
    }

    /// The free range starting exactly at `addr`.
    fn find_free(&self, addr: u64) -> Option<u32> {
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if n.start == addr {
                return Some(t);
            }
            t = if addr < n.start { n.left } else { n.right };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use proptest::prelude::*;

    const START: u64 = 0xffff_c900_0000_0000;

    fn window(pages: u64) -> VmapAllocator {
        VmapAllocator::new(VirtAddr(START), VirtAddr(START + pages * PAGE_SIZE)).unwrap()
    }

    #[test]
    fn guard_pages_and_first_fit() {
        let mut v = window(64);
        let a = v.alloc(1, PAGE_SIZE, "a").unwrap();
        let b = v.alloc(3 * PAGE_SIZE, PAGE_SIZE, "b").unwrap();
        assert_eq!(a.0, START);
        assert_eq!(b.0, START + 2 * PAGE_SIZE, "one guard page after a");
        assert_eq!(v.find(VirtAddr(START + PAGE_SIZE)).unwrap().caller, "a", "guard belongs to a");
        assert!(v.find(VirtAddr(START + 6 * PAGE_SIZE)).is_none());
        v.free(a).unwrap();
        // The hole left by a (2 pages) holds a 1-page area again: first fit.
        assert_eq!(v.alloc(PAGE_SIZE, PAGE_SIZE, "c").unwrap().0, START);
        assert_eq!(v.free(VirtAddr(START + 1)), Err(VmallocError::NotFound(VirtAddr(START + 1))));
        v.verify().unwrap();
    }

    #[test]
    fn alignment_and_errors() {
        let mut v = window(64);
        v.alloc(PAGE_SIZE, PAGE_SIZE, "x").unwrap();
        let a = v.alloc(PAGE_SIZE, 16 * PAGE_SIZE, "aligned").unwrap();
        assert_eq!(a.0 % (16 * PAGE_SIZE), 0);
        assert_eq!(a.0, START + 16 * PAGE_SIZE);
        // The gap before the aligned area stays free and usable.
        assert_eq!(v.alloc(PAGE_SIZE, PAGE_SIZE, "y").unwrap().0, START + 2 * PAGE_SIZE);
        assert_eq!(v.alloc(0, PAGE_SIZE, "z"), Err(VmallocError::ZeroSize));
        assert_eq!(v.alloc(1, 3 * PAGE_SIZE, "z"), Err(VmallocError::BadAlign(3 * PAGE_SIZE)));
        assert_eq!(v.alloc(1, 8, "z"), Err(VmallocError::BadAlign(8)));
        assert_eq!(v.alloc(64 * PAGE_SIZE, PAGE_SIZE, "z"), Err(VmallocError::NoSpace));
        assert_eq!(v.alloc(u64::MAX, PAGE_SIZE, "z"), Err(VmallocError::NoSpace));
        assert!(VmapAllocator::new(VirtAddr(1), VirtAddr(PAGE_SIZE)).is_err());
        v.verify().unwrap();
    }

    #[test]
    fn vmallocinfo_text() {
        let mut v = window(64);
        v.alloc(2 * PAGE_SIZE, PAGE_SIZE, "load_module").unwrap();
        let mut s = String::new();
        v.vmallocinfo(&mut s).unwrap();
        assert_eq!(s, "0xffffc90000000000-0xffffc90000003000   12288 load_module pages=2 vmalloc\n");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc { pages: u64, align_shift: u32 },
        Free { pick: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1..20u64, prop_oneof![4 => Just(0u32), 1 => 0..6u32])
                .prop_map(|(pages, align_shift)| Op::Alloc { pages, align_shift }),
            2 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn vmalloc_matches_model(ops in proptest::collection::vec(op(), 1..300)) {
            let pages = 512;
            let mut v = window(pages);
            // Model: busy reservations start -> pages (guard included).
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Alloc { pages: n, align_shift } => {
                        let align = PAGE_SIZE << align_shift;
                        let need = (n + 1) * PAGE_SIZE;
                        // Gaps in the model, lowest first.
                        let mut gaps = Vec::new();
                        let mut at = START;
                        for (&s, &l) in &model {
                            if s > at { gaps.push((at, s - at)); }
                            at = s + l;
                        }
                        if at < START + pages * PAGE_SIZE { gaps.push((at, START + pages * PAGE_SIZE - at)); }
                        match v.alloc(n * PAGE_SIZE, align, "t") {
                            Ok(a) => {
                                prop_assert_eq!(a.0 % align, 0);
                                let fits = gaps.iter().any(|&(s, l)| s <= a.0 && a.0 + need <= s + l);
                                prop_assert!(fits, "area not inside a free gap");
                                if align == PAGE_SIZE {
                                    let first = gaps.iter().find(|&&(_, l)| l >= need).unwrap().0;
                                    prop_assert_eq!(a.0, first, "first fit");
                                }
                                model.insert(a.0, need);
                            }
                            Err(e) => {
                                prop_assert_eq!(e, VmallocError::NoSpace);
                                let length = need + align - PAGE_SIZE;
                                prop_assert!(gaps.iter().all(|&(_, l)| l < length), "failed although a gap fits");
                            }
                        }
                    }
                    Op::Free { pick } => {
                        if model.is_empty() { continue; }
                        let (&s, &l) = model.iter().nth(pick % model.len()).unwrap();
                        let area = v.free(VirtAddr(s)).unwrap();
                        prop_assert_eq!(area.reserved, l);
                        model.remove(&s);
                    }
                }
                v.verify().unwrap();
                prop_assert_eq!(v.areas().count(), model.len());
            }
            for s in model.keys().copied().collect::<Vec<_>>() {
                v.free(VirtAddr(s)).unwrap();
            }
            prop_assert_eq!(v.free_ranges(), alloc::vec![(START, pages * PAGE_SIZE)]);
        }
    }
}
