//! The slab allocator, SLUB-style (Linux's `mm/slub.c`).
//!
//! This module owns kernel objects smaller than a page or a few: caches of
//! equally sized objects (`kmem_cache`) carved out of buddy blocks (slabs),
//! the kmalloc caches from 8 bytes to 8 KiB, and `kmalloc_large` for bigger
//! requests straight from the buddy allocator.
//!
//! Like SLUB, a free object holds the pointer to the next free object in
//! its own memory, reached through [`PhysMem`] (the guest implements it
//! over its direct map with plain loads and stores); the slab's state lives
//! in its head page descriptor (`slab_cache`, `inuse`, `objects`,
//! `freelist`), so `kfree` finds the cache from the address alone. Each CPU
//! has an active ("frozen") slab whose freelist it pops and pushes without
//! touching any list. No heap is used: the allocator can be the heap.

mod cache;
mod debug;
pub mod harness;
#[cfg(test)]
mod tests;

pub use cache::{CpuSlab, KmemCache, SlabList, SLUB_MAX_ORDER};

use crate::addr::{PhysAddr, PAGE_SHIFT, PAGE_SIZE};
use crate::buddy::{BuddyAllocator, BuddyError, Gfp, PageOwner, PG_HEAD, PG_SLAB, PG_TAIL};
use crate::fmt::{write_dec, write_padded};
use crate::mem::{MemError, PhysMem};
use core::fmt::{self, Write};

/// End of a freelist (physical address 0 can hold an object).
pub const FP_END: u64 = u64::MAX;
/// Caches an allocator can hold.
pub const MAX_CACHES: usize = 32;
/// Object sizes of the kmalloc caches (Linux's `kmalloc_info`).
pub const KMALLOC_SIZES: [u32; 13] = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];
/// Names of the kmalloc caches, as in /proc/slabinfo.
pub const KMALLOC_NAMES: [&str; 13] = [
    "kmalloc-8",
    "kmalloc-16",
    "kmalloc-32",
    "kmalloc-64",
    "kmalloc-96",
    "kmalloc-128",
    "kmalloc-192",
    "kmalloc-256",
    "kmalloc-512",
    "kmalloc-1k",
    "kmalloc-2k",
    "kmalloc-4k",
    "kmalloc-8k",
];
/// Largest size served by a kmalloc cache; larger requests go to the
/// buddy allocator.
pub const KMALLOC_MAX_CACHE_SIZE: u64 = 8192;

/// Byte of a free object (Linux's `POISON_FREE`).
pub const POISON_FREE: u8 = 0x6b;
/// Byte of a freshly allocated object (`POISON_INUSE`).
pub const POISON_INUSE: u8 = 0x5a;
/// Last byte of a free object (`POISON_END`).
pub const POISON_END: u8 = 0xa5;
/// Red zone of a free object (`SLUB_RED_INACTIVE`).
pub const SLUB_RED_INACTIVE: u8 = 0xbb;
/// Red zone of an allocated object (`SLUB_RED_ACTIVE`).
pub const SLUB_RED_ACTIVE: u8 = 0xcc;

/// Debug features of a cache (Linux's `SLAB_*` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlabFlags(pub u32);

impl SlabFlags {
    /// No debugging: the fast path is a pop and a push.
    pub const NONE: SlabFlags = SlabFlags(0);
    /// Poison objects (`SLAB_POISON`): catches writes after free.
    pub const POISON: SlabFlags = SlabFlags(1);
    /// Red zone after each object (`SLAB_RED_ZONE`): catches overflows and,
    /// in O(1), double frees.
    pub const RED_ZONE: SlabFlags = SlabFlags(2);
    /// Walk the freelists on free (`SLAB_CONSISTENCY_CHECKS`): catches any
    /// double free, in O(objects per slab).
    pub const CONSISTENCY_CHECKS: SlabFlags = SlabFlags(4);
    /// Everything (`slub_debug=FZP`).
    pub const DEBUG: SlabFlags = SlabFlags(7);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: SlabFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any debug feature is on (moves the free pointer out of the
    /// object and takes the checked path).
    pub fn debug(self) -> bool {
        self.0 != 0
    }
}

impl core::ops::BitOr for SlabFlags {
    type Output = SlabFlags;
    fn bitor(self, o: SlabFlags) -> SlabFlags {
        SlabFlags(self.0 | o.0)
    }
}

/// A cache's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheId(pub u16);

/// Why a slab operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlabError {
    /// The page allocator failed (out of memory, bad cpu...).
    Buddy(BuddyError),
    /// Object memory could not be read or written.
    Mem(MemError),
    /// Zero-sized request.
    ZeroSize,
    /// Object or request too large.
    TooLarge(u64),
    /// Alignment not a power of two up to a page.
    BadAlign(u32),
    /// No such cache.
    BadCache(CacheId),
    /// All `MAX_CACHES` slots are in use.
    TooManyCaches,
    /// The cache still has objects allocated.
    CacheBusy(CacheId),
    /// The address is not the start of an object of a slab or of a large
    /// kmalloc block.
    InvalidFree(PhysAddr),
    /// `kmem_cache_free` with an object of another cache.
    WrongCache {
        /// The object.
        addr: PhysAddr,
        /// The cache the object belongs to.
        owner: CacheId,
    },
    /// The object is already free.
    DoubleFree(PhysAddr),
    /// The red zone after the object was overwritten (buffer overflow).
    RedZone {
        /// The object.
        addr: PhysAddr,
        /// Offset of the first bad byte from the object's start.
        offset: u64,
    },
    /// A free object was written to (use after free).
    Poison {
        /// The object.
        addr: PhysAddr,
        /// Offset of the first bad byte.
        offset: u64,
    },
    /// A free pointer points outside its slab.
    CorruptFreelist(PhysAddr),
}

impl From<BuddyError> for SlabError {
    fn from(e: BuddyError) -> Self {
        SlabError::Buddy(e)
    }
}

impl From<MemError> for SlabError {
    fn from(e: MemError) -> Self {
        SlabError::Mem(e)
    }
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Numbers in hex: decimal integer Display is unusable in the guest.
        match *self {
            SlabError::Buddy(e) => write!(f, "page allocator: {e}"),
            SlabError::Mem(e) => write!(f, "object memory: {e}"),
            SlabError::ZeroSize => f.write_str("zero-sized allocation"),
            SlabError::TooLarge(n) => write!(f, "size {n:#x} too large"),
            SlabError::BadAlign(a) => write!(f, "bad alignment {a:#x}"),
            SlabError::BadCache(c) => write!(f, "no cache {:#x}", c.0),
            SlabError::TooManyCaches => f.write_str("too many caches"),
            SlabError::CacheBusy(c) => write!(f, "cache {:#x} still has objects", c.0),
            SlabError::InvalidFree(a) => write!(f, "free of {:#x}: not an allocated object", a.0),
            SlabError::WrongCache { addr, owner } => {
                write!(f, "object {:#x} belongs to cache {:#x}", addr.0, owner.0)
            }
            SlabError::DoubleFree(a) => write!(f, "double free of object {:#x}", a.0),
            SlabError::RedZone { addr, offset } => {
                write!(f, "red zone of object {:#x} overwritten at +{offset:#x}", addr.0)
            }
            SlabError::Poison { addr, offset } => {
                write!(f, "free object {:#x} written to at +{offset:#x} (use after free)", addr.0)
            }
            SlabError::CorruptFreelist(a) => write!(f, "freelist corrupt at {:#x}", a.0),
        }
    }
}

#[cfg(any(test, feature = "std"))]
impl std::error::Error for SlabError {}

/// One /proc/slabinfo line's figures, plus the overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabInfo {
    /// Cache name.
    pub name: &'static str,
    /// Objects allocated.
    pub active_objs: u64,
    /// Objects in all slabs.
    pub num_objs: u64,
    /// Stride per object, metadata included (what Linux prints).
    pub objsize: u32,
    /// Objects per slab.
    pub objperslab: u64,
    /// Pages per slab.
    pub pagesperslab: u64,
    /// Slabs with an object in use.
    pub active_slabs: u64,
    /// Slabs.
    pub num_slabs: u64,
    /// Bytes of the cache's slabs that hold no user data: metadata, padding
    /// and the leftover at each slab's end.
    pub overhead: u64,
}

/// Linux's `size_index`: kmalloc cache index for sizes 1..=192, by
/// (size - 1) / 8, so 96 and 192 get their own caches.
const SIZE_INDEX: [u8; 24] = [0, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6];

/// The kmalloc cache index for `size` (1..=8192): the position in
/// [`KMALLOC_SIZES`] of the cache `kmalloc(size)` uses.
pub fn kmalloc_index(size: u64) -> usize {
    if size <= 192 {
        SIZE_INDEX[(size as usize - 1) / 8] as usize
    } else {
        // 256 -> 7 ... 8192 -> 12: ceil(log2(size)) - 1.
        (64 - (size - 1).leading_zeros()) as usize - 1
    }
}

/// The slab allocator: its caches and the kmalloc caches.
pub struct SlabAllocator {
    caches: [Option<KmemCache>; MAX_CACHES],
    kmalloc: [Option<CacheId>; KMALLOC_SIZES.len()],
    nr_cpus: usize,
}

impl SlabAllocator {
    /// An allocator with no caches, sizing slabs for `nr_cpus` CPUs.
    pub fn new(nr_cpus: usize) -> SlabAllocator {
        SlabAllocator { caches: [const { None }; MAX_CACHES], kmalloc: [None; KMALLOC_SIZES.len()], nr_cpus }
    }

    /// Creates the kmalloc caches (Linux's `create_kmalloc_caches`), all
    /// with `flags`.
    pub fn create_kmalloc_caches(&mut self, flags: SlabFlags) -> Result<(), SlabError> {
        for (i, (&size, &name)) in KMALLOC_SIZES.iter().zip(KMALLOC_NAMES.iter()).enumerate() {
            if self.kmalloc[i].is_none() {
                // Power-of-two caches are naturally aligned, as Linux
                // guarantees for kmalloc.
                let align = if size.is_power_of_two() { size.min(PAGE_SIZE as u32) } else { 8 };
                self.kmalloc[i] = Some(self.kmem_cache_create(name, size, align, flags)?);
            }
        }
        Ok(())
    }

    /// `kmem_cache_create`.
    pub fn kmem_cache_create(
        &mut self,
        name: &'static str,
        size: u32,
        align: u32,
        flags: SlabFlags,
    ) -> Result<CacheId, SlabError> {
        let slot = self.caches.iter().position(Option::is_none).ok_or(SlabError::TooManyCaches)?;
        let id = slot as u16;
        self.caches[slot] = Some(KmemCache::new(id, name, size, align, flags, self.nr_cpus)?);
        Ok(CacheId(id))
    }

    /// `kmem_cache_destroy`: fails while objects are allocated.
    pub fn kmem_cache_destroy<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        id: CacheId,
    ) -> Result<(), SlabError> {
        let c = self.cache_mut(id)?;
        c.shrink(buddy, mem)?;
        if c.nr_slabs > 0 {
            return Err(SlabError::CacheBusy(id));
        }
        self.caches[id.0 as usize] = None;
        if let Some(k) = self.kmalloc.iter_mut().find(|k| **k == Some(id)) {
            *k = None;
        }
        Ok(())
    }

    /// A cache.
    pub fn cache(&self, id: CacheId) -> Option<&KmemCache> {
        self.caches.get(id.0 as usize)?.as_ref()
    }

    fn cache_mut(&mut self, id: CacheId) -> Result<&mut KmemCache, SlabError> {
        self.caches.get_mut(id.0 as usize).and_then(Option::as_mut).ok_or(SlabError::BadCache(id))
    }

    /// Live caches with their ids.
    pub fn caches(&self) -> impl Iterator<Item = (CacheId, &KmemCache)> {
        self.caches.iter().enumerate().filter_map(|(i, c)| Some((CacheId(i as u16), c.as_ref()?)))
    }

    /// The kmalloc cache serving `size`, if any.
    pub fn kmalloc_cache(&self, size: u64) -> Option<CacheId> {
        if size == 0 || size > KMALLOC_MAX_CACHE_SIZE {
            return None;
        }
        self.kmalloc[kmalloc_index(size)]
    }

    /// `kmem_cache_alloc` on `cpu`.
    #[inline]
    pub fn kmem_cache_alloc<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        cpu: usize,
        id: CacheId,
        gfp: Gfp,
    ) -> Result<PhysAddr, SlabError> {
        self.cache_mut(id)?.alloc(buddy, mem, cpu, gfp)
    }

    /// `kmem_cache_free` on `cpu`: the object must belong to `id`.
    pub fn kmem_cache_free<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        cpu: usize,
        id: CacheId,
        addr: PhysAddr,
    ) -> Result<(), SlabError> {
        let (owner, idx) = Self::slab_of(buddy, addr)?.ok_or(SlabError::InvalidFree(addr))?;
        if owner != id {
            return Err(SlabError::WrongCache { addr, owner });
        }
        self.cache_mut(id)?.free(buddy, mem, cpu, idx, addr.0)
    }

    /// The cache and head descriptor index of the slab holding `addr`
    /// (Linux's `virt_to_slab` + `slab->slab_cache`); `None` if the page is
    /// not a slab.
    fn slab_of(buddy: &BuddyAllocator, addr: PhysAddr) -> Result<Option<(CacheId, u32)>, SlabError> {
        let pfn = addr.0 >> PAGE_SHIFT;
        let idx = buddy.idx(pfn).ok_or(SlabError::InvalidFree(addr))?;
        let map = buddy.mem_map();
        let p = &map[idx as usize];
        let head = if p.flags & PG_TAIL != 0 { p.next } else { idx };
        let h = map.get(head as usize).ok_or(SlabError::InvalidFree(addr))?;
        if h.flags & PG_SLAB == 0 || h.slab_cache == 0 {
            return Ok(None);
        }
        Ok(Some((CacheId(h.slab_cache - 1), head)))
    }

    /// `kmalloc`: the smallest kmalloc cache that fits, or whole pages from
    /// the buddy allocator above `KMALLOC_MAX_CACHE_SIZE`.
    #[inline]
    pub fn kmalloc<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        cpu: usize,
        size: u64,
        gfp: Gfp,
    ) -> Result<PhysAddr, SlabError> {
        if size == 0 {
            return Err(SlabError::ZeroSize);
        }
        if size > KMALLOC_MAX_CACHE_SIZE {
            return Self::kmalloc_large(buddy, cpu, size, gfp);
        }
        let id = self.kmalloc[kmalloc_index(size)].ok_or(SlabError::BadCache(CacheId(u16::MAX)))?;
        self.kmem_cache_alloc(buddy, mem, cpu, id, gfp)
    }

    /// `kmalloc_large`: a buddy block marked as such so `kfree` knows it.
    pub fn kmalloc_large(buddy: &mut BuddyAllocator, cpu: usize, size: u64, gfp: Gfp) -> Result<PhysAddr, SlabError> {
        if size > PAGE_SIZE << crate::buddy::MAX_PAGE_ORDER {
            return Err(SlabError::TooLarge(size));
        }
        let order = cache::get_order(size);
        let pfn = buddy.alloc_pages(cpu, order, gfp)?;
        buddy.set_owner(pfn, PageOwner::KmallocLarge)?;
        Ok(PhysAddr(pfn << PAGE_SHIFT))
    }

    /// `kfree`: finds the cache from the page descriptor.
    #[inline]
    pub fn kfree<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        cpu: usize,
        addr: PhysAddr,
    ) -> Result<(), SlabError> {
        match Self::slab_of(buddy, addr)? {
            Some((id, idx)) => self.cache_mut(id)?.free(buddy, mem, cpu, idx, addr.0),
            None => {
                let pfn = addr.0 >> PAGE_SHIFT;
                let p = buddy.page(pfn).ok_or(SlabError::InvalidFree(addr))?;
                if addr.0 & (PAGE_SIZE - 1) != 0
                    || p.flags & PG_HEAD == 0
                    || PageOwner::from_u8(p.owner) != PageOwner::KmallocLarge
                {
                    // A free page or one page of a freed block: say which.
                    if buddy.free_block_containing(pfn).is_some() {
                        return Err(SlabError::DoubleFree(addr));
                    }
                    return Err(SlabError::InvalidFree(addr));
                }
                let order = p.order;
                Ok(buddy.free_pages(cpu, pfn, order)?)
            }
        }
    }

    /// Usable size of an allocated object (`ksize`).
    pub fn ksize(&self, buddy: &BuddyAllocator, addr: PhysAddr) -> Result<u64, SlabError> {
        match Self::slab_of(buddy, addr)? {
            Some((id, _)) => Ok(self.cache(id).ok_or(SlabError::BadCache(id))?.object_size as u64),
            None => {
                let p = buddy.page(addr.0 >> PAGE_SHIFT).ok_or(SlabError::InvalidFree(addr))?;
                if p.flags & PG_HEAD == 0 || PageOwner::from_u8(p.owner) != PageOwner::KmallocLarge {
                    return Err(SlabError::InvalidFree(addr));
                }
                Ok(PAGE_SIZE << p.order)
            }
        }
    }

    /// Gives a CPU's active slabs back to the lists (SLUB's `flush_slab`,
    /// done when a CPU goes offline).
    pub fn flush_cpu<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        cpu: usize,
    ) -> Result<(), SlabError> {
        for c in self.caches.iter_mut().flatten() {
            c.flush_cpu_slab(buddy, mem, cpu)?;
        }
        Ok(())
    }

    /// `kmem_cache_shrink` on every cache: empty slabs go back to the buddy.
    pub fn shrink_all<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
    ) -> Result<(), SlabError> {
        for c in self.caches.iter_mut().flatten() {
            c.shrink(buddy, mem)?;
        }
        Ok(())
    }

    /// The figures of one cache.
    pub fn info(&self, buddy: &BuddyAllocator, id: CacheId) -> Option<SlabInfo> {
        let c = self.cache(id)?;
        let (active_objs, active_slabs) = c.count_active(buddy);
        let pages = 1u64 << c.order;
        Some(SlabInfo {
            name: c.name,
            active_objs,
            num_objs: c.total_objects,
            objsize: c.size,
            objperslab: c.objects_per_slab(),
            pagesperslab: pages,
            active_slabs,
            num_slabs: c.nr_slabs,
            overhead: (c.nr_pages << PAGE_SHIFT) - c.total_objects * c.object_size as u64,
        })
    }

    /// /proc/slabinfo (version 2.1, as SLUB prints it: tunables all 0).
    pub fn slabinfo<W: Write + ?Sized>(&self, buddy: &BuddyAllocator, w: &mut W) -> fmt::Result {
        w.write_str("slabinfo - version: 2.1\n")?;
        w.write_str(
            "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n",
        )?;
        for (id, _) in self.caches() {
            let Some(i) = self.info(buddy, id) else {
                continue;
            };
            write_padded(w, i.name, 17, true)?;
            for (v, width) in
                [(i.active_objs, 6), (i.num_objs, 6), (i.objsize as u64, 6), (i.objperslab, 4), (i.pagesperslab, 4)]
            {
                w.write_char(' ')?;
                write_dec(w, v, width)?;
            }
            w.write_str(" : tunables")?;
            for _ in 0..3 {
                w.write_char(' ')?;
                write_dec(w, 0, 4)?;
            }
            w.write_str(" : slabdata")?;
            for v in [i.active_slabs, i.num_slabs, 0] {
                w.write_char(' ')?;
                write_dec(w, v, 6)?;
            }
            w.write_char('\n')?;
        }
        Ok(())
    }
}
