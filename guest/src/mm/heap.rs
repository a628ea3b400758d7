//! The Rust heap (`alloc::{Box, Vec, BTreeMap}`) on kmalloc: small
//! objects from the kmalloc slab caches, large ones straight from the
//! buddy allocator, as Linux's kmalloc does.

use super::{phys_to_virt, virt_to_phys, PAGES};
use crate::arch::percpu::this_cpu;
use core::alloc::{GlobalAlloc, Layout};
use mm_core::addr::PhysAddr;

/// The kernel's global allocator.
pub struct KernelHeap;

/// kmalloc aligns power-of-two sizes naturally; a stricter alignment is
/// met by asking for a size that is a multiple of it.
fn kmalloc_size(layout: Layout) -> u64 {
    let size = layout.size().max(1) as u64;
    let align = layout.align() as u64;
    if align <= 8 {
        size
    } else {
        size.next_power_of_two().max(align)
    }
}

// SAFETY: memory comes from kmalloc, which never hands out a live object
// twice (mm-core's slab is tested for it), at the alignment `kmalloc_size`
// arranges; dealloc returns exactly what alloc gave.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = kmalloc_size(layout);
        // Order only sizes the request for the slow path's hooks; the slab
        // picks its own slab order.
        // Inside reclaim (its state held), no recursion into reclaim: the
        // reserves instead, as Linux's PF_MEMALLOC.
        // Under a lock reclaim cannot run beside (the file table's, whose
        // index grows under it), as Linux's atomic allocations: no
        // reclaim, part of the reserve below the min watermark.
        let gfp = if crate::sync::holds_rank(crate::sync::rank::RECLAIM) {
            super::page_alloc::GFP_MEMALLOC
        } else if !crate::sync::holds_only_below(crate::sync::rank::RECLAIM) {
            super::GfpMask { gfp: mm_core::buddy::GFP_ATOMIC, flags: super::page_alloc::gfp::KSWAPD_RECLAIM }
        } else {
            super::GFP_KERNEL
        };
        // This CPU's object array first: no shared lock.
        if let Some(r) = super::percpu::kmalloc(size, gfp) {
            return match r {
                Ok(pa) => phys_to_virt(pa.0) as *mut u8,
                Err(_) => core::ptr::null_mut(),
            };
        }
        let cpu = this_cpu().id;
        let r = super::page_alloc::alloc(0, gfp, |p| p.slab.kmalloc(&mut p.buddy, &mut p.phys, cpu, size, gfp.gfp));
        match r {
            Ok(pa) => phys_to_virt(pa.0) as *mut u8,
            Err(_) => {
                // The panic that follows cannot format its message in ring
                // 0 (platform.md): say here what failed.
                crate::kprintln!("kmalloc: {:#x} bytes failed (locks held {:#x})", size, this_cpu().held_locks.get());
                core::ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let pa = PhysAddr(virt_to_phys(ptr as u64));
        // The layout names the size class `alloc` used: back to this
        // CPU's array for it, whichever CPU allocated the object.
        if super::percpu::kfree(pa, kmalloc_size(layout)) {
            return;
        }
        if let Err(e) = PAGES.with(|p| p.slab.kfree(&mut p.buddy, &mut p.phys, this_cpu().id, pa)) {
            panic!("kfree({:#x}): {}", ptr as u64, e);
        }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap;
