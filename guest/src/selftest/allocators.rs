//! Self-tests of the allocators on real memory: buddy, slab/kmalloc, the
//! Rust heap, vmalloc, and the slab debugging that catches misuse.

use super::check;
use crate::arch::percpu::this_cpu;
use crate::detail;
use crate::mm::{self, vmalloc, GFP_DMA, GFP_DMA32, GFP_KERNEL, PAGES};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use mm::page_alloc::{self, SLOWPATH};
use mm_core::addr::{PhysAddr, PAGE_SHIFT, PAGE_SIZE};
use mm_core::buddy::{BuddyError, ZoneType, MAX_PAGE_ORDER};
use mm_core::slab::{SlabError, SlabFlags, KMALLOC_SIZES};

/// Returns cached pages (empty slabs, per-CPU lists) to the buddy
/// allocator, so page counts compare like for like.
fn settle() {
    PAGES.with(|p| {
        mm::percpu::drain_all_locked(p);
        let _ = p.slab.shrink_all(&mut p.buddy, &mut p.phys);
    });
}

/// Free pages, every CPU's cached pages given back first (they count
/// as allocated until then).
fn free_pages_now() -> u64 {
    PAGES.with(|p| {
        mm::percpu::drain_all_locked(p);
        let c = p.buddy.counts();
        c.free + c.pcp
    })
}

/// Every order allocated and freed, zones honoured, everything merged back.
pub fn buddy() {
    let grown_before = SLOWPATH.deferred_pages.load(Ordering::Relaxed);
    let before = free_pages_now();
    let mut ok = true;
    let mut blocks = [(0u64, 0u8); (MAX_PAGE_ORDER as usize + 1) * 2];
    let mut n = 0;
    for order in 0..=MAX_PAGE_ORDER {
        for _ in 0..2 {
            match mm::alloc_pages(order, GFP_KERNEL) {
                Some(pfn) => {
                    ok &= pfn % (1 << order) == 0;
                    // Touch the first and last page: the memory is real.
                    let first = mm::phys_to_virt(pfn << PAGE_SHIFT) as *mut u64;
                    let last = mm::phys_to_virt(((pfn + (1 << order) - 1) << PAGE_SHIFT) + 8) as *mut u64;
                    // SAFETY: the block was just allocated and is direct-mapped.
                    unsafe {
                        first.write_volatile(pfn);
                        last.write_volatile(!pfn);
                        ok &= first.read_volatile() == pfn && last.read_volatile() == !pfn;
                    }
                    blocks[n] = (pfn, order);
                    n += 1;
                }
                None => ok = false,
            }
        }
    }
    check(
        "buddy",
        "alloc_every_order",
        ok && n == blocks.len(),
        &detail!("{} blocks of orders 0..=10, aligned and writable", crate::fmt::Dec(n as u64)),
    );
    let mut freed_ok = true;
    for &(pfn, order) in blocks[..n].iter().rev() {
        freed_ok &= mm::free_pages(pfn, order).is_ok();
    }
    mm::percpu::drain_all();
    let after = free_pages_now();
    // With deferred memory (large RAM), the slow path may have handed the
    // zones a chunk during the allocations: those pages are free now too.
    let grown = SLOWPATH.deferred_pages.load(Ordering::Relaxed) - grown_before;
    check(
        "buddy",
        "free_merges_back",
        freed_ok && after == before + grown && PAGES.with(|p| p.buddy.verify().is_ok()),
        &detail!(
            "free pages {} before, {} after ({} handed over from deferred memory meanwhile), buddy invariants hold",
            crate::fmt::Dec(before),
            crate::fmt::Dec(after),
            crate::fmt::Dec(grown)
        ),
    );
    slowpath();

    let dma = mm::alloc_pages(0, GFP_DMA);
    let dma32 = mm::alloc_pages(0, GFP_DMA32);
    let in_zone = |pfn: Option<u64>, z: ZoneType| pfn.is_some_and(|p| ZoneType::of_pfn(p) as u8 <= z as u8);
    check(
        "buddy",
        "zones",
        in_zone(dma, ZoneType::Dma) && in_zone(dma32, ZoneType::Dma32),
        "GFP_DMA below 16 MiB, GFP_DMA32 below 4 GiB",
    );
    for p in [dma, dma32].into_iter().flatten() {
        let _ = mm::free_pages(p, 0);
    }
    let double = mm::alloc_pages(0, GFP_KERNEL).map(|p| {
        let _ = mm::free_pages(p, 0);
        mm::percpu::drain_all();
        mm::free_pages(p, 0).is_err()
    });
    check("buddy", "double_free_detected", double == Some(true), "freeing a free page is refused");
}

/// The allocation slow path: entered only for a lack of pages, and then
/// either it hands over deferred memory and the retry succeeds, or (none
/// left) its hooks report no progress and the request fails after one
/// try: nothing pretends to reclaim.
fn slowpath() {
    let entered = SLOWPATH.entered.load(Ordering::Relaxed);
    let mut tries = 0;
    let r: Result<(), BuddyError> = page_alloc::alloc(0, mm::GFP_KERNEL, |_| {
        tries += 1;
        Err(BuddyError::BadOrder(99))
    });
    check(
        "buddy",
        "slowpath_only_for_lack_of_memory",
        r == Err(BuddyError::BadOrder(99)) && tries == 1 && SLOWPATH.entered.load(Ordering::Relaxed) == entered,
        "an allocator error other than no-memory returns at once, without the slow path",
    );

    // Fails once for lack of memory, succeeds on any retry.
    let deferred = mm::DEFERRED.with(|d| d.pages);
    let (grows, fails) = (SLOWPATH.deferred_grows.load(Ordering::Relaxed), SLOWPATH.failures.load(Ordering::Relaxed));
    let mut tries = 0;
    let r: Result<(), BuddyError> = page_alloc::alloc(0, mm::GFP_KERNEL, |_| {
        tries += 1;
        if tries == 1 {
            Err(BuddyError::NoMemory)
        } else {
            Ok(())
        }
    });
    let grew = SLOWPATH.deferred_grows.load(Ordering::Relaxed) - grows;
    let failed = SLOWPATH.failures.load(Ordering::Relaxed) - fails;
    let entered_once = SLOWPATH.entered.load(Ordering::Relaxed) == entered + 1;
    let ok = entered_once
        && if deferred > 0 {
            r.is_ok() && tries == 2 && grew == 1 && failed == 0
        } else {
            r == Err(BuddyError::NoMemory) && tries == 1 && grew == 0 && failed == 1
        };
    check(
        "buddy",
        "slowpath_grows_or_fails",
        ok,
        &detail!(
            "{}K deferred: {} tries, {} chunk(s) handed over, {} failure(s); reclaim, compaction and OOM hooks made no progress",
            crate::fmt::Dec(deferred * 4),
            crate::fmt::Dec(tries),
            crate::fmt::Dec(grew),
            crate::fmt::Dec(failed)
        ),
    );
}

/// kmalloc churn across every kmalloc size, and large kmallocs.
pub fn slab() {
    // The bookkeeping vector is itself on the heap: allocate it first so
    // that the before/after page counts see only the churn.
    let mut objs: Vec<(PhysAddr, u32)> = Vec::with_capacity(64);
    let before = free_pages_now();
    let mut ok = true;
    for &size in KMALLOC_SIZES.iter() {
        for round in 0..3u64 {
            let r =
                PAGES.with(|p| p.slab.kmalloc(&mut p.buddy, &mut p.phys, this_cpu().id, size as u64, GFP_KERNEL.gfp));
            match r {
                Ok(pa) => {
                    let v = mm::phys_to_virt(pa.0) as *mut u8;
                    // SAFETY: a fresh object of `size` bytes.
                    unsafe {
                        core::ptr::write_bytes(v, round as u8, size as usize);
                        ok &= v.add(size as usize - 1).read_volatile() == round as u8;
                    }
                    objs.push((pa, size));
                }
                Err(_) => ok = false,
            }
        }
    }
    let distinct = {
        let mut a: Vec<u64> = objs.iter().map(|o| o.0 .0).collect();
        a.sort_unstable();
        a.windows(2).all(|w| w[0] != w[1])
    };
    let n = objs.len() as u64;
    let mut freed = true;
    for (pa, _) in objs.drain(..) {
        freed &= PAGES.with(|p| p.slab.kfree(&mut p.buddy, &mut p.phys, this_cpu().id, pa)).is_ok();
    }
    check(
        "slab",
        "kmalloc_every_size",
        ok && distinct && freed,
        &detail!("{} objects of 8..8192 bytes, distinct, written, freed", crate::fmt::Dec(n)),
    );

    let large = PAGES.with(|p| p.slab.kmalloc(&mut p.buddy, &mut p.phys, this_cpu().id, 64 * 1024, GFP_KERNEL.gfp));
    let large_ok = large.is_ok_and(|pa| pa.0 % PAGE_SIZE == 0)
        && large.is_ok_and(|pa| PAGES.with(|p| p.slab.kfree(&mut p.buddy, &mut p.phys, this_cpu().id, pa)).is_ok());
    check("slab", "kmalloc_large", large_ok, "64 KiB from the buddy allocator");

    PAGES.with(|p| {
        mm::percpu::drain_all_locked(p);
        let _ = p.slab.shrink_all(&mut p.buddy, &mut p.phys);
    });
    let after = free_pages_now();
    check(
        "slab",
        "no_leak",
        after == before,
        &detail!("free pages {} before, {} after shrinking", crate::fmt::Dec(before), crate::fmt::Dec(after)),
    );
}

/// The Rust heap: Box, Vec, BTreeMap over kmalloc.
pub fn heap() {
    let b = Box::new(0x1234_5678u64);
    let mut v: Vec<u64> = Vec::new();
    for i in 0..2000 {
        v.push(i * 3);
    }
    let mut m = BTreeMap::new();
    for i in 0..200u64 {
        m.insert(i * 7 % 200, i);
    }
    for i in 0..100u64 {
        m.remove(&i);
    }
    let ok = *b == 0x1234_5678 && v.len() == 2000 && v[1999] == 5997 && m.len() == 100 && m.keys().next() == Some(&100);
    check("heap", "box_vec_btreemap", ok, "Box, a 2000-element Vec (grows through kmalloc-large), BTreeMap");
}

/// Large vmallocs, written end to end, then freed with their TLB flushes.
pub fn vmalloc() {
    // Warm up: the first use creates the window's page tables (kept, as in
    // Linux) and the area tree's nodes; the leak check looks past those.
    if let Ok(va) = vmalloc::vmalloc(1 << 20, "selftest-warmup") {
        let _ = vmalloc::vfree(va);
    }
    let mut areas = Vec::with_capacity(4);
    settle();
    let before = free_pages_now();
    let flush_before = vmalloc::STATS.with(|s| s.invlpg + s.full_flushes);
    let sizes = [4096u64, 64 * 1024, 1 << 20];
    let mut ok = true;
    for &size in &sizes {
        match vmalloc::vmalloc(size, "selftest") {
            Ok(va) => {
                let p = va.0 as *mut u64;
                for i in (0..size / 8).step_by(512) {
                    // SAFETY: inside the area just mapped.
                    unsafe { p.add(i as usize).write_volatile(i) };
                }
                for i in (0..size / 8).step_by(512) {
                    // SAFETY: as above.
                    ok &= unsafe { p.add(i as usize).read_volatile() } == i;
                }
                areas.push(va);
            }
            Err(_) => ok = false,
        }
    }
    let disjoint = areas.windows(2).all(|w| w[0].0 < w[1].0);
    check(
        "vmalloc",
        "large_areas",
        ok && areas.len() == sizes.len() && disjoint,
        "4 KiB, 64 KiB and 1 MiB areas, every page written and read back",
    );
    let mut freed = true;
    for va in areas {
        freed &= vmalloc::vfree(va).is_ok();
    }
    let flushes = vmalloc::STATS.with(|s| s.invlpg + s.full_flushes) - flush_before;
    settle();
    let after = free_pages_now();
    check(
        "vmalloc",
        "vfree_flushes_and_frees",
        freed && flushes > 0,
        &detail!("{} TLB flushes for 3 vfrees", crate::fmt::Dec(flushes)),
    );
    check(
        "vmalloc",
        "frames_returned",
        before == after,
        &detail!("free pages {} before, {} after", crate::fmt::Dec(before), crate::fmt::Dec(after)),
    );
}

/// Slab debugging: poisoning catches a use-after-free, red zones an
/// overflow, and a double free is refused.
pub fn debug() {
    let id = PAGES.with(|p| p.slab.kmem_cache_create("selftest-debug", 64, 8, SlabFlags::DEBUG));
    let Ok(id) = id else {
        check("debug", "cache_create", false, "kmem_cache_create with slub_debug=FZP failed");
        return;
    };
    let alloc =
        || PAGES.with(|p| p.slab.kmem_cache_alloc(&mut p.buddy, &mut p.phys, this_cpu().id, id, GFP_KERNEL.gfp));
    let free = |pa| PAGES.with(|p| p.slab.kmem_cache_free(&mut p.buddy, &mut p.phys, this_cpu().id, id, pa));

    // Use after free: write into a freed object, then allocate again.
    let uaf = alloc().and_then(|pa| {
        free(pa)?;
        // SAFETY: deliberately writes a freed object (it stays mapped in
        // the direct map); the poison check must notice.
        unsafe { (mm::phys_to_virt(pa.0) as *mut u8).add(8).write_volatile(0x41) };
        let mut caught = false;
        for _ in 0..64 {
            if let Err(SlabError::Poison { .. }) = alloc() {
                caught = true;
                break;
            }
        }
        Ok(caught)
    });
    check(
        "debug",
        "poison_catches_use_after_free",
        uaf == Ok(true),
        "a write to a freed object is reported when the slab hands it out",
    );

    let overflow = alloc().map(|pa| {
        // SAFETY: deliberately writes one byte past a 64-byte object, into
        // its red zone.
        unsafe { (mm::phys_to_virt(pa.0) as *mut u8).add(64).write_volatile(0x42) };
        matches!(free(pa), Err(SlabError::RedZone { .. }))
    });
    check("debug", "redzone_catches_overflow", overflow == Ok(true), "a write past the object is reported on free");

    let double = alloc().map(|pa| free(pa).is_ok() && matches!(free(pa), Err(SlabError::DoubleFree(_))));
    check("debug", "double_free_detected", double == Ok(true), "kfree of a free object is refused");
}
