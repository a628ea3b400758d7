//! One `kmem_cache`: layout of its objects, its per-CPU active slabs and
//! its partial, full and free slab lists (Linux's `mm/slub.c`).

use super::debug;
use super::{SlabError, SlabFlags, FP_END};
use crate::addr::{PhysAddr, PAGE_SHIFT, PAGE_SIZE};
use crate::buddy::page::{list_add, list_del};
use crate::buddy::{BuddyAllocator, Gfp, PageOwner, MAX_CPUS, MAX_PAGE_ORDER, NIL, PG_HEAD, PG_SLAB, PG_TAIL};
use crate::mem::PhysMem;

/// Largest order SLUB picks for a slab unless one object needs more
/// (`slub_max_order` = `PAGE_ALLOC_COSTLY_ORDER`).
pub const SLUB_MAX_ORDER: u8 = 3;

/// A CPU's active slab (Linux's `kmem_cache_cpu`): the fast path pops and
/// pushes `freelist` without touching any list.
#[derive(Debug, Clone, Copy)]
pub struct CpuSlab {
    /// Descriptor index of the frozen slab, or `NIL`.
    pub slab: u32,
    /// First free object owned by this CPU, or `FP_END`.
    pub freelist: u64,
    /// Physical range of the slab's objects, to bound-check free pointers
    /// read from memory before following them.
    pub base: u64,
    /// End of the object area.
    pub end: u64,
}

impl CpuSlab {
    const EMPTY: CpuSlab = CpuSlab { slab: NIL, freelist: FP_END, base: 0, end: 0 };
}

/// A slab list head with its length.
#[derive(Debug, Clone, Copy)]
pub struct SlabList {
    /// First slab's descriptor index, or `NIL`.
    pub head: u32,
    /// Slabs on the list.
    pub nr: u64,
}

impl SlabList {
    const EMPTY: SlabList = SlabList { head: NIL, nr: 0 };
}

/// A cache of equally sized objects (Linux's `struct kmem_cache`).
#[derive(Debug, Clone)]
pub struct KmemCache {
    /// Name shown in slabinfo.
    pub name: &'static str,
    /// Bytes the user asked for per object.
    pub object_size: u32,
    /// Stride between objects, metadata included.
    pub size: u32,
    /// Object alignment.
    pub align: u32,
    /// Offset of the free pointer in a free object.
    pub offset: u32,
    /// Preferred slab order (SLUB's `oo`).
    pub order: u8,
    /// Fallback order when the preferred one cannot be had (SLUB's `min`).
    pub min_order: u8,
    /// Debug features.
    pub flags: SlabFlags,
    /// Empty slabs kept on the free list before going back to the buddy.
    pub min_partial: u64,
    /// Per-CPU active slabs.
    pub cpu_slab: [CpuSlab; MAX_CPUS],
    /// Slabs with some objects free.
    pub partial: SlabList,
    /// Slabs with every object in use.
    pub full: SlabList,
    /// Empty slabs kept for reuse.
    pub free: SlabList,
    /// Slabs owned by the cache.
    pub nr_slabs: u64,
    /// Objects in those slabs.
    pub total_objects: u64,
    /// Pages in those slabs.
    pub nr_pages: u64,
    /// `ceil(2^64 / size)`: object index by multiplication (Linux's
    /// `reciprocal_value`), as kfree must validate pointers on every call.
    recip: u128,
    id: u16,
}

/// Objects of `size` fitting in a slab of `order`.
fn order_objects(order: u8, size: u32) -> u64 {
    (PAGE_SIZE << order) / size as u64
}

/// Smallest order whose block holds `bytes`.
pub(crate) fn get_order(bytes: u64) -> u8 {
    let pages = bytes.div_ceil(PAGE_SIZE).max(1);
    (64 - (pages - 1).leading_zeros()) as u8
}

/// SLUB's `calc_slab_order`: the smallest order from `min_order` that
/// wastes at most 1/`fract_leftover` of the slab.
fn calc_slab_order(size: u32, min_order: u8, max_order: u8, fract_leftover: u64) -> u8 {
    let mut order = min_order;
    while order <= max_order {
        let slab_size = PAGE_SIZE << order;
        if slab_size % size as u64 <= slab_size / fract_leftover {
            break;
        }
        order += 1;
    }
    order
}

/// SLUB's `calculate_order`: enough objects per slab for the CPU count,
/// with little waste, preferring small orders.
pub(crate) fn calculate_order(size: u32, nr_cpus: usize) -> u8 {
    let fls = usize::BITS - nr_cpus.leading_zeros();
    let mut min_objects = 4 * (fls as u64 + 1);
    let max_objects = order_objects(SLUB_MAX_ORDER, size);
    min_objects = min_objects.min(max_objects);
    while min_objects > 1 {
        let start = get_order(min_objects * size as u64);
        let mut fraction = 16;
        while fraction >= 4 {
            let order = calc_slab_order(size, start, SLUB_MAX_ORDER, fraction);
            if order <= SLUB_MAX_ORDER {
                return order;
            }
            fraction /= 2;
        }
        min_objects -= 1;
    }
    // One object per slab: as small as the object allows.
    let order = calc_slab_order(size, get_order(size as u64), SLUB_MAX_ORDER, 1);
    if order <= SLUB_MAX_ORDER {
        order
    } else {
        get_order(size as u64)
    }
}

impl KmemCache {
    /// Lays out a cache (Linux's `calculate_sizes`). With poisoning or red
    /// zones the free pointer moves behind the object so the object's bytes
    /// can hold the poison; otherwise it sits in the middle of the object,
    /// where small overflows are less likely to hit it (as Linux since 5.7).
    pub(crate) fn new(
        id: u16,
        name: &'static str,
        object_size: u32,
        align: u32,
        flags: SlabFlags,
        nr_cpus: usize,
    ) -> Result<KmemCache, SlabError> {
        if object_size == 0 {
            return Err(SlabError::ZeroSize);
        }
        let align = align.max(8);
        if !align.is_power_of_two() || align as u64 > PAGE_SIZE {
            return Err(SlabError::BadAlign(align));
        }
        if object_size as u64 > PAGE_SIZE << MAX_PAGE_ORDER {
            return Err(SlabError::TooLarge(object_size as u64));
        }
        let word_end = object_size.next_multiple_of(8);
        let (offset, size) = if flags.debug() {
            let rz = if flags.contains(SlabFlags::RED_ZONE) { 8 } else { 0 };
            let offset = word_end + rz;
            (offset, offset + 8)
        } else {
            ((object_size / 2) & !7, word_end)
        };
        let size = size.next_multiple_of(align);
        if size as u64 > PAGE_SIZE << MAX_PAGE_ORDER {
            return Err(SlabError::TooLarge(size as u64));
        }
        let order = calculate_order(size, nr_cpus);
        let min_order = get_order(size as u64);
        let min_partial = ((31 - size.leading_zeros()) as u64 / 2).clamp(5, 10);
        Ok(KmemCache {
            name,
            object_size,
            size,
            align,
            offset,
            order,
            min_order,
            flags,
            min_partial,
            cpu_slab: [CpuSlab::EMPTY; MAX_CPUS],
            partial: SlabList::EMPTY,
            full: SlabList::EMPTY,
            free: SlabList::EMPTY,
            nr_slabs: 0,
            total_objects: 0,
            nr_pages: 0,
            recip: (1u128 << 64).div_ceil(size as u128),
            id,
        })
    }

    /// Objects in a slab of the preferred order.
    pub fn objects_per_slab(&self) -> u64 {
        order_objects(self.order, self.size)
    }

    /// Index of `obj` in the slab at `base`, if it is an object's start.
    fn obj_index(&self, base: u64, objects: u16, obj: u64) -> Option<u64> {
        let off = obj.checked_sub(base)?;
        if off >= objects as u64 * self.size as u64 {
            return None;
        }
        let idx = ((off as u128 * self.recip) >> 64) as u64;
        (idx * self.size as u64 == off).then_some(idx)
    }

    #[inline]
    fn get_freepointer<M: PhysMem + ?Sized>(&self, mem: &M, obj: u64) -> Result<u64, SlabError> {
        Ok(mem.read_u64(PhysAddr(obj + self.offset as u64))?)
    }

    #[inline]
    fn set_freepointer<M: PhysMem + ?Sized>(&self, mem: &mut M, obj: u64, fp: u64) -> Result<(), SlabError> {
        Ok(mem.write_u64(PhysAddr(obj + self.offset as u64), fp)?)
    }

    /// `slab_alloc`: the CPU freelist fast path, else `___slab_alloc`.
    pub(crate) fn alloc<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        cpu: usize,
        gfp: Gfp,
    ) -> Result<PhysAddr, SlabError> {
        if cpu >= buddy.nr_cpus() {
            return Err(SlabError::Buddy(crate::buddy::BuddyError::BadCpu(cpu)));
        }
        loop {
            let c = self.cpu_slab[cpu];
            let obj = c.freelist;
            if obj != FP_END {
                let next = self.get_freepointer(mem, obj)?;
                if next != FP_END && (next < c.base || next >= c.end) {
                    return Err(SlabError::CorruptFreelist(PhysAddr(obj)));
                }
                self.cpu_slab[cpu].freelist = next;
                buddy.mem_map_mut()[c.slab as usize].inuse += 1;
                if self.flags.debug() {
                    debug::on_alloc(self, mem, obj)?;
                }
                return Ok(PhysAddr(obj));
            }
            self.refill_cpu_slab(buddy, mem, cpu, gfp)?;
        }
    }

    /// The slow path: take remote frees of the active slab, or retire it
    /// (to the full list) and freeze another from the partial list, the
    /// free list or the buddy allocator.
    fn refill_cpu_slab<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        cpu: usize,
        gfp: Gfp,
    ) -> Result<(), SlabError> {
        let cur = self.cpu_slab[cpu].slab;
        if cur != NIL {
            let map = buddy.mem_map_mut();
            let p = &mut map[cur as usize];
            if p.freelist != FP_END {
                self.cpu_slab[cpu].freelist = p.freelist;
                p.freelist = FP_END;
                return Ok(());
            }
            // Every object is in use: unfreeze onto the full list.
            p.frozen = 0;
            list_add(map, &mut self.full.head, cur);
            self.full.nr += 1;
            self.cpu_slab[cpu] = CpuSlab::EMPTY;
        }
        let idx = if self.partial.head != NIL {
            let idx = self.partial.head;
            list_del(buddy.mem_map_mut(), &mut self.partial.head, idx);
            self.partial.nr -= 1;
            idx
        } else if self.free.head != NIL {
            let idx = self.free.head;
            list_del(buddy.mem_map_mut(), &mut self.free.head, idx);
            self.free.nr -= 1;
            idx
        } else {
            self.new_slab(buddy, mem, cpu, gfp)?
        };
        let base = buddy.pfn_of(idx) << PAGE_SHIFT;
        let p = &mut buddy.mem_map_mut()[idx as usize];
        p.frozen = cpu as u8 + 1;
        self.cpu_slab[cpu] =
            CpuSlab { slab: idx, freelist: p.freelist, base, end: base + p.objects as u64 * self.size as u64 };
        p.freelist = FP_END;
        Ok(())
    }

    /// `allocate_slab`: a buddy block at the preferred order (or the
    /// minimum one), its descriptors marked, its free objects chained.
    fn new_slab<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        cpu: usize,
        gfp: Gfp,
    ) -> Result<u32, SlabError> {
        let (pfn, order) = match buddy.alloc_pages(cpu, self.order, gfp) {
            Ok(pfn) => (pfn, self.order),
            Err(_) if self.min_order < self.order => (buddy.alloc_pages(cpu, self.min_order, gfp)?, self.min_order),
            Err(e) => return Err(e.into()),
        };
        let objects = order_objects(order, self.size).min(u16::MAX as u64) as u16;
        let base = pfn << PAGE_SHIFT;
        if let Err(e) = self.init_objects(mem, base, objects) {
            // The memory is unusable: hand it back rather than leak it.
            let _ = buddy.free_pages(cpu, pfn, order);
            return Err(e);
        }
        let idx = buddy.idx(pfn).ok_or(SlabError::Buddy(crate::buddy::BuddyError::OutOfRange(pfn)))?;
        let map = buddy.mem_map_mut();
        let head = &mut map[idx as usize];
        head.flags = PG_HEAD | PG_SLAB;
        head.owner = PageOwner::Slab as u8;
        head.slab_cache = self.id + 1;
        head.inuse = 0;
        head.objects = objects;
        head.frozen = 0;
        head.freelist = base;
        // compound_head for the tails, so kfree of any object finds the slab.
        for t in 1..(1u32 << order) {
            let tail = &mut map[(idx + t) as usize];
            tail.flags = PG_TAIL;
            tail.next = idx;
        }
        self.nr_slabs += 1;
        self.total_objects += objects as u64;
        self.nr_pages += 1 << order;
        Ok(idx)
    }

    fn init_objects<M: PhysMem + ?Sized>(&self, mem: &mut M, base: u64, objects: u16) -> Result<(), SlabError> {
        for i in 0..objects as u64 {
            let obj = base + i * self.size as u64;
            if self.flags.debug() {
                debug::init_free_object(self, mem, obj)?;
            }
            let next = if i + 1 < objects as u64 { obj + self.size as u64 } else { FP_END };
            self.set_freepointer(mem, obj, next)?;
        }
        Ok(())
    }

    /// `slab_free` for an object of the slab headed by descriptor `idx`.
    /// Every check happens before anything changes, so a rejected free
    /// leaves the cache as it was.
    pub(crate) fn free<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        cpu: usize,
        idx: u32,
        obj: u64,
    ) -> Result<(), SlabError> {
        if cpu >= buddy.nr_cpus() {
            return Err(SlabError::Buddy(crate::buddy::BuddyError::BadCpu(cpu)));
        }
        let base = buddy.pfn_of(idx) << PAGE_SHIFT;
        let p = buddy.mem_map()[idx as usize];
        if self.obj_index(base, p.objects, obj).is_none() {
            return Err(SlabError::InvalidFree(PhysAddr(obj)));
        }
        let local = p.frozen as usize == cpu + 1;
        let owner_cpu = (p.frozen as usize).checked_sub(1);
        let head = if local { self.cpu_slab[cpu].freelist } else { p.freelist };
        if p.inuse == 0 || obj == head {
            return Err(SlabError::DoubleFree(PhysAddr(obj)));
        }
        if self.flags.debug() {
            if self.flags.contains(SlabFlags::CONSISTENCY_CHECKS) {
                let cpu_list = owner_cpu.map_or(FP_END, |c| self.cpu_slab[c].freelist);
                for list in [p.freelist, cpu_list] {
                    if self.on_freelist(mem, list, obj, p.objects)? {
                        return Err(SlabError::DoubleFree(PhysAddr(obj)));
                    }
                }
            }
            debug::on_free(self, mem, obj)?;
        }
        self.set_freepointer(mem, obj, head)?;
        let map = buddy.mem_map_mut();
        if local {
            self.cpu_slab[cpu].freelist = obj;
            map[idx as usize].inuse -= 1;
            return Ok(());
        }
        let was_full = p.frozen == 0 && p.inuse == p.objects;
        let page = &mut map[idx as usize];
        page.freelist = obj;
        page.inuse -= 1;
        let inuse = page.inuse;
        if p.frozen != 0 {
            // Another CPU's active slab: it picks the object up when its
            // own freelist runs dry.
            return Ok(());
        }
        if was_full {
            list_del(map, &mut self.full.head, idx);
            self.full.nr -= 1;
        } else if inuse == 0 {
            list_del(map, &mut self.partial.head, idx);
            self.partial.nr -= 1;
        }
        if inuse == 0 {
            self.add_empty(buddy, cpu, idx)?;
        } else if was_full {
            list_add(map, &mut self.partial.head, idx);
            self.partial.nr += 1;
        }
        Ok(())
    }

    /// Whether `obj` is on the freelist starting at `list` (SLUB's
    /// `on_freelist`), walking at most `objects` entries.
    fn on_freelist<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        mut list: u64,
        obj: u64,
        objects: u16,
    ) -> Result<bool, SlabError> {
        let mut n = 0;
        while list != FP_END {
            if list == obj {
                return Ok(true);
            }
            n += 1;
            if n > objects {
                return Err(SlabError::CorruptFreelist(PhysAddr(list)));
            }
            list = self.get_freepointer(mem, list)?;
        }
        Ok(false)
    }

    /// An empty slab goes to the free list, or back to the buddy once
    /// `min_partial` are kept.
    fn add_empty(&mut self, buddy: &mut BuddyAllocator, cpu: usize, idx: u32) -> Result<(), SlabError> {
        if self.free.nr < self.min_partial {
            list_add(buddy.mem_map_mut(), &mut self.free.head, idx);
            self.free.nr += 1;
            Ok(())
        } else {
            self.discard_slab(buddy, cpu, idx)
        }
    }

    /// Returns a slab's pages to the buddy allocator, clearing the slab
    /// marks first (the buddy refuses to free a page still marked slab).
    fn discard_slab(&mut self, buddy: &mut BuddyAllocator, cpu: usize, idx: u32) -> Result<(), SlabError> {
        let pfn = buddy.pfn_of(idx);
        let map = buddy.mem_map_mut();
        let order = map[idx as usize].order;
        let objects = map[idx as usize].objects;
        for t in 1..(1u32 << order) {
            map[(idx + t) as usize].flags = 0;
        }
        let p = &mut map[idx as usize];
        p.flags &= !PG_SLAB;
        p.slab_cache = 0;
        p.objects = 0;
        p.inuse = 0;
        p.freelist = 0;
        self.nr_slabs -= 1;
        self.total_objects -= objects as u64;
        self.nr_pages -= 1 << order;
        Ok(buddy.free_pages(cpu, pfn, order)?)
    }

    /// `deactivate_slab`: gives a CPU's active slab back to the lists, its
    /// CPU freelist merged into the slab's.
    pub(crate) fn flush_cpu_slab<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
        cpu: usize,
    ) -> Result<(), SlabError> {
        let c = self.cpu_slab[cpu];
        if c.slab == NIL {
            return Ok(());
        }
        let idx = c.slab;
        let p = buddy.mem_map()[idx as usize];
        if c.freelist != FP_END {
            let mut tail = c.freelist;
            let mut n = 0;
            loop {
                let next = self.get_freepointer(mem, tail)?;
                if next == FP_END {
                    break;
                }
                n += 1;
                if n > p.objects {
                    return Err(SlabError::CorruptFreelist(PhysAddr(tail)));
                }
                tail = next;
            }
            self.set_freepointer(mem, tail, p.freelist)?;
        }
        self.cpu_slab[cpu] = CpuSlab::EMPTY;
        let map = buddy.mem_map_mut();
        let page = &mut map[idx as usize];
        if c.freelist != FP_END {
            page.freelist = c.freelist;
        }
        page.frozen = 0;
        let (inuse, objects) = (page.inuse, page.objects);
        if inuse == 0 {
            self.add_empty(buddy, cpu, idx)
        } else if inuse == objects {
            list_add(map, &mut self.full.head, idx);
            self.full.nr += 1;
            Ok(())
        } else {
            list_add(map, &mut self.partial.head, idx);
            self.partial.nr += 1;
            Ok(())
        }
    }

    /// `kmem_cache_shrink`: flushes the CPU slabs and returns every empty
    /// slab to the buddy.
    pub(crate) fn shrink<M: PhysMem + ?Sized>(
        &mut self,
        buddy: &mut BuddyAllocator,
        mem: &mut M,
    ) -> Result<(), SlabError> {
        for cpu in 0..buddy.nr_cpus() {
            self.flush_cpu_slab(buddy, mem, cpu)?;
        }
        while self.free.head != NIL {
            let idx = self.free.head;
            list_del(buddy.mem_map_mut(), &mut self.free.head, idx);
            self.free.nr -= 1;
            self.discard_slab(buddy, 0, idx)?;
        }
        Ok(())
    }

    /// Sums `inuse` over the cache's slabs: (active objects, slabs with at
    /// least one object in use). Walks the lists, bounded by `nr_slabs`.
    pub(crate) fn count_active(&self, buddy: &BuddyAllocator) -> (u64, u64) {
        let map = buddy.mem_map();
        let mut objs = 0;
        let mut slabs = 0;
        let mut count = |idx: u32| {
            let p = map.get(idx as usize).map_or(0, |p| p.inuse as u64);
            objs += p;
            slabs += u64::from(p > 0);
        };
        for c in &self.cpu_slab {
            if c.slab != NIL {
                count(c.slab);
            }
        }
        for list in [&self.partial, &self.full] {
            let mut idx = list.head;
            let mut n = 0;
            while idx != NIL && n <= self.nr_slabs {
                count(idx);
                idx = map.get(idx as usize).map_or(NIL, |p| p.next);
                n += 1;
            }
        }
        (objs, slabs)
    }
}
