//! A malloc in the spirit of glibc's ptmalloc, for one thread:
//! - chunks with boundary tags (`prev_size`, `size | PREV_INUSE`) so a
//!   freed chunk coalesces with free neighbours;
//! - fast bins: LIFO lists of exact small sizes (<= 512 bytes) that are
//!   never coalesced, as ptmalloc's fastbins/tcache;
//! - size-class bins (one per power of two) searched first-fit for the
//!   rest, splitting the remainder;
//! - the top chunk at the end of the brk heap, grown with `brk` and
//!   trimmed with `brk` when it exceeds the trim threshold (tunable with
//!   `mallopt(M_TRIM_THRESHOLD)`);
//! - requests at or above `MMAP_THRESHOLD` (128 KiB, M_MMAP_THRESHOLD)
//!   get their own `mmap`, given back with `munmap` on free.

use crate::abi::*;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::null_mut;

/// Requests this large get their own mapping (M_MMAP_THRESHOLD).
pub const MMAP_THRESHOLD: usize = 128 * 1024;
/// By default, a top chunk larger than this is given back with `brk`
/// (M_TRIM_THRESHOLD; see `mallopt`).
pub const TRIM_THRESHOLD: usize = 128 * 1024;
/// Extra room asked for whenever the heap grows (M_TOP_PAD).
const TOP_PAD: usize = 64 * 1024;
const HDR: usize = 16;
const MIN_CHUNK: usize = 32;
const FAST_MAX: usize = 512;
const NFAST: usize = FAST_MAX / 16 + 1;
const NBINS: usize = 64;
const PREV_INUSE: usize = 1;
const IS_MMAPPED: usize = 2;
const FLAGS: usize = 7;

/// `mallopt` parameter: the trim threshold (glibc's value).
pub const M_TRIM_THRESHOLD: i32 = -1;

/// Counters the tests read.
#[derive(Clone, Copy, Default, Debug)]
pub struct MallocStats {
    /// `brk` calls that grew the heap.
    pub brk_grows: u64,
    /// `brk` calls that trimmed the heap.
    pub brk_trims: u64,
    /// Chunks served by their own `mmap`.
    pub mmaps: u64,
    /// `munmap`s of such chunks.
    pub munmaps: u64,
}

struct Arena {
    heap_start: usize,
    top: usize,
    heap_end: usize,
    fast: [usize; NFAST],
    bins: [usize; NBINS],
    trim_threshold: usize,
    stats: MallocStats,
}

/// The allocator (one arena; the programs are single-threaded).
pub struct Malloc(UnsafeCell<Arena>);

// SAFETY: user processes here have one thread.
unsafe impl Sync for Malloc {}

#[global_allocator]
static MALLOC: Malloc = Malloc(UnsafeCell::new(Arena {
    heap_start: 0,
    top: 0,
    heap_end: 0,
    fast: [0; NFAST],
    bins: [0; NBINS],
    trim_threshold: TRIM_THRESHOLD,
    stats: MallocStats { brk_grows: 0, brk_trims: 0, mmaps: 0, munmaps: 0 },
}));

// Chunk field access: a chunk is [prev_size][size][payload...].
unsafe fn rd(a: usize) -> usize {
    // SAFETY: the caller names a field of a chunk inside the heap.
    unsafe { (a as *const usize).read() }
}
unsafe fn wr(a: usize, v: usize) {
    // SAFETY: as `rd`.
    unsafe { (a as *mut usize).write(v) }
}
unsafe fn size_of_chunk(c: usize) -> usize {
    // SAFETY: `c` is a chunk.
    unsafe { rd(c + 8) & !FLAGS }
}
unsafe fn set_head(c: usize, v: usize) {
    // SAFETY: `c` is a chunk.
    unsafe { wr(c + 8, v) }
}
unsafe fn head(c: usize) -> usize {
    // SAFETY: `c` is a chunk.
    unsafe { rd(c + 8) }
}

fn bin_index(size: usize) -> usize {
    (usize::BITS - 1 - size.leading_zeros()) as usize
}

impl Arena {
    unsafe fn unlink(&mut self, c: usize) {
        // SAFETY: `c` is a free chunk on a bin list (fd at +16, bk at +24).
        unsafe {
            let (fd, bk) = (rd(c + 16), rd(c + 24));
            if bk == 0 {
                self.bins[bin_index(size_of_chunk(c))] = fd;
            } else {
                wr(bk + 16, fd);
            }
            if fd != 0 {
                wr(fd + 24, bk);
            }
        }
    }

    /// Puts free chunk `c` of `size` on its bin, with its footer and the
    /// next chunk's PREV_INUSE cleared.
    unsafe fn bin_insert(&mut self, c: usize, size: usize) {
        // SAFETY: `c..c+size` is a free chunk inside the heap, below top.
        unsafe {
            set_head(c, size | (head(c) & PREV_INUSE));
            wr(c + size, size);
            set_head(c + size, head(c + size) & !PREV_INUSE);
            let i = bin_index(size);
            let first = self.bins[i];
            wr(c + 16, first);
            wr(c + 24, 0);
            if first != 0 {
                wr(first + 24, c);
            }
            self.bins[i] = c;
        }
    }

    unsafe fn grow(&mut self, need: usize) -> bool {
        if self.heap_start == 0 {
            let b = crate::brk(0) as usize;
            let start = (b + 15) & !15;
            self.heap_start = start;
            self.top = start;
            self.heap_end = b;
        }
        let want = (self.top + need + MIN_CHUNK + TOP_PAD + 4095) & !4095;
        if crate::brk(want as u64) as usize != want {
            return false;
        }
        self.heap_end = want;
        self.stats.brk_grows += 1;
        // SAFETY: the top chunk spans [top, heap_end), now mapped; the
        // first chunk has no predecessor, so it counts as in use.
        unsafe {
            let pi = if self.top == self.heap_start { PREV_INUSE } else { head(self.top) & PREV_INUSE };
            set_head(self.top, (self.heap_end - self.top) | pi);
        }
        true
    }

    unsafe fn malloc(&mut self, n: usize) -> *mut u8 {
        if n >= MMAP_THRESHOLD {
            let len = (n + HDR + 4095) & !4095;
            let a = crate::mmap(0, len as u64, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
            if a < 0 {
                return null_mut();
            }
            self.stats.mmaps += 1;
            // SAFETY: a fresh mapping of `len` bytes.
            unsafe { set_head(a as usize, len | IS_MMAPPED) };
            return (a as usize + HDR) as *mut u8;
        }
        let req = ((n + HDR + 15) & !15).max(MIN_CHUNK);
        // SAFETY: every chunk touched below lies in the heap this arena owns.
        unsafe {
            if req <= FAST_MAX && self.fast[req / 16] != 0 {
                let c = self.fast[req / 16];
                self.fast[req / 16] = rd(c + 16);
                return (c + HDR) as *mut u8;
            }
            for i in bin_index(req)..NBINS {
                let mut c = self.bins[i];
                while c != 0 {
                    let size = size_of_chunk(c);
                    if size >= req {
                        self.unlink(c);
                        let rest = size - req;
                        if rest >= MIN_CHUNK {
                            set_head(c, req | (head(c) & PREV_INUSE));
                            set_head(c + req, PREV_INUSE);
                            self.bin_insert(c + req, rest);
                        } else {
                            set_head(c + size, head(c + size) | PREV_INUSE);
                        }
                        return (c + HDR) as *mut u8;
                    }
                    c = rd(c + 16);
                }
            }
            if (self.heap_start == 0 || self.heap_end - self.top < req + MIN_CHUNK) && !self.grow(req) {
                return null_mut();
            }
            let c = self.top;
            let top_size = self.heap_end - self.top;
            set_head(c, req | (head(c) & PREV_INUSE));
            self.top = c + req;
            set_head(self.top, (top_size - req) | PREV_INUSE);
            (c + HDR) as *mut u8
        }
    }

    unsafe fn free(&mut self, p: *mut u8) {
        if p.is_null() {
            return;
        }
        let mut c = p as usize - HDR;
        // SAFETY: `p` came from `malloc`, so `c` is one of our chunks.
        unsafe {
            let h = head(c);
            if h & IS_MMAPPED != 0 {
                crate::munmap(c as u64, (h & !FLAGS) as u64);
                self.stats.munmaps += 1;
                return;
            }
            let mut size = h & !FLAGS;
            if size <= FAST_MAX {
                wr(c + 16, self.fast[size / 16]);
                self.fast[size / 16] = c;
                return;
            }
            if h & PREV_INUSE == 0 {
                let prev = c - rd(c);
                self.unlink(prev);
                size += size_of_chunk(prev);
                c = prev;
            }
            let next = c + size;
            if next == self.top {
                self.top = c;
                set_head(c, (self.heap_end - c) | (head(c) & PREV_INUSE));
                self.trim();
                return;
            }
            let next_size = size_of_chunk(next);
            if head(next + next_size) & PREV_INUSE == 0 {
                self.unlink(next);
                size += next_size;
            }
            self.bin_insert(c, size);
        }
    }

    /// Gives the top chunk back to the kernel beyond `TOP_PAD` (glibc's
    /// `systrim(mp_.top_pad)`): keeping the pad stops a heap that breathes
    /// around its top from calling brk and re-faulting the same pages on
    /// every cycle.
    unsafe fn trim(&mut self) {
        if self.heap_end - self.top < self.trim_threshold {
            return;
        }
        let new_end = (self.top + MIN_CHUNK + TOP_PAD + 4095) & !4095;
        if new_end >= self.heap_end {
            return;
        }
        if (crate::brk(new_end as u64) as usize) == new_end {
            self.heap_end = new_end;
            self.stats.brk_trims += 1;
            // SAFETY: the top chunk now spans [top, new_end).
            unsafe { set_head(self.top, (new_end - self.top) | (head(self.top) & PREV_INUSE)) };
        }
    }
}

/// `malloc(n)`.
pub fn malloc(n: usize) -> *mut u8 {
    // SAFETY: single-threaded; no reference to the arena outlives the call.
    unsafe { (*MALLOC.0.get()).malloc(n) }
}

/// `free(p)`.
///
/// # Safety
/// `p` is null or came from `malloc` and was not freed yet.
pub unsafe fn free(p: *mut u8) {
    // SAFETY: as `malloc`; the caller vouches for `p`.
    unsafe { (*MALLOC.0.get()).free(p) }
}

/// Tunes the allocator as C's `mallopt`; only `M_TRIM_THRESHOLD` (bytes;
/// `usize::MAX` never trims) is supported. True if `param` was known.
pub fn mallopt(param: i32, value: usize) -> bool {
    if param != M_TRIM_THRESHOLD {
        return false;
    }
    // SAFETY: as `malloc`.
    unsafe { (*MALLOC.0.get()).trim_threshold = value };
    true
}

/// The allocator's counters.
pub fn stats() -> MallocStats {
    // SAFETY: as `malloc`.
    unsafe { (*MALLOC.0.get()).stats }
}

/// Where the heap starts (0 before the first small malloc).
pub fn heap_start() -> usize {
    // SAFETY: as `malloc`.
    unsafe { (*MALLOC.0.get()).heap_start }
}

/// The heap's current end (what the allocator believes the break is).
pub fn heap_end() -> usize {
    // SAFETY: as `malloc`.
    unsafe { (*MALLOC.0.get()).heap_end }
}

// SAFETY: chunks are 16-byte aligned; larger alignments are refused.
unsafe impl GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > 16 {
            return null_mut();
        }
        malloc(layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc`.
        unsafe { free(ptr) }
    }
}
