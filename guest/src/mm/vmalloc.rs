//! vmalloc: virtually contiguous kernel memory from scattered frames, in
//! the vmalloc window, each area followed by an unmapped guard page
//! (Linux's mm/vmalloc.c). The area allocator is mm-core's; this module
//! maps and unmaps the frames, and flushes the TLB when it unmaps.

use super::layout::{VMALLOC_END, VMALLOC_START};
use super::{page_alloc, BuddyFrames, GFP_KERNEL, KERNEL_PT, PAGES};
use crate::arch::percpu::this_cpu;
use crate::sync::{rank, SpinLock};
use mm_core::addr::{PhysAddr, VirtAddr, PAGE_SHIFT, PAGE_SIZE};
use mm_core::buddy::PageOwner;
use mm_core::paging::{walk, FrameAllocator, MapRequest, PageSize, PteFlags, SizeRequest, TlbFlusher};
use mm_core::vmalloc::{VmapAllocator, VmapArea};

/// The vmalloc area allocator.
pub static VMAP: SpinLock<VmapAllocator> = SpinLock::new("the vmalloc area allocator", rank::VMAP);

/// Counters for the benchmarks and self-tests.
#[derive(Clone, Copy, Default)]
pub struct VmallocStats {
    /// `invlpg`s issued by vfree.
    pub invlpg: u64,
    /// Full TLB flushes issued by vfree.
    pub full_flushes: u64,
    /// Areas freed.
    pub vfrees: u64,
}

/// vmalloc's TLB-flush counters.
pub static STATS: SpinLock<VmallocStats> = SpinLock::new("the vmalloc statistics", rank::STATS);

/// RAM pages `vmalloc` has mapped and not yet freed (meminfo's
/// VmallocUsed, Linux's `vmalloc_nr_pages`: ioremap's device windows are
/// not RAM and do not count).
pub static NR_PAGES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Page-table pages mapping the vmalloc window: added as areas first
/// reach a part of the window and kept for good (every address space
/// shares them, as Linux's), so leak checks discount them.
pub static TABLE_PAGES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The page allocator's page-table frames, counted in [`TABLE_PAGES`].
struct WindowTables<'a>(BuddyFrames<'a>);

impl FrameAllocator for WindowTables<'_> {
    fn allocate_frame(&mut self) -> Option<PhysAddr> {
        let f = self.0.allocate_frame()?;
        TABLE_PAGES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        Some(f)
    }
    fn zeroes_frames(&self) -> bool {
        self.0.zeroes_frames()
    }
    fn deallocate_frame(&mut self, frame: PhysAddr) {
        TABLE_PAGES.fetch_sub(1, core::sync::atomic::Ordering::Relaxed);
        self.0.deallocate_frame(frame)
    }
}

/// Sets up the vmalloc window.
pub fn init() {
    match VmapAllocator::new(VirtAddr(VMALLOC_START), VirtAddr(VMALLOC_END)) {
        Ok(v) => VMAP.set(v),
        Err(e) => panic!("vmalloc window: {}", e),
    }
    STATS.set(VmallocStats::default());
}

/// Every CPU's TLB (kernel mappings are everyone's), counted.
struct Invlpg;

impl TlbFlusher for Invlpg {
    fn flush_page(&mut self, va: VirtAddr) {
        crate::arch::tlb::flush_range(crate::arch::tlb::KERNEL, va.0, va.0 + 4096);
        STATS.with(|s| s.invlpg += 1);
    }

    fn flush_all(&mut self) {
        crate::arch::tlb::flush_range(crate::arch::tlb::KERNEL, 0, crate::arch::tlb::ALL);
        STATS.with(|s| s.full_flushes += 1);
    }
}

/// Why vmalloc failed.
#[derive(Debug)]
pub enum VmallocFailure {
    /// No room in the window.
    Area(mm_core::vmalloc::VmallocError),
    /// Out of pages.
    NoMemory,
    /// Page-table trouble.
    Map(mm_core::paging::MapError),
}

/// Allocates `size` bytes of virtually contiguous memory.
pub fn vmalloc(size: u64, caller: &'static str) -> Result<VirtAddr, VmallocFailure> {
    let va = VMAP.with(|v| v.alloc(size, PAGE_SIZE, caller)).map_err(VmallocFailure::Area)?;
    let pages = size.div_ceil(PAGE_SIZE);
    for i in 0..pages {
        // Outside the page allocator's lock, with the whole slow path
        // (reclaim, compaction, the OOM killer) behind it, as Linux's
        // vmalloc allocates with GFP_KERNEL: under that lock a short zone
        // would fail at once, and a fork needs a kernel stack.
        let Ok(pfn) = page_alloc::alloc_pages(0, GFP_KERNEL) else {
            let _ = unmap_and_free(va, i);
            let _ = VMAP.with(|v| v.free(va));
            return Err(VmallocFailure::NoMemory);
        };
        let r = PAGES.with(|p| {
            let _ = p.buddy.set_owner(pfn, PageOwner::Vmalloc);
            let mapper = KERNEL_PT.with(|m| *m);
            let flush = mapper
                .map(
                    &mut p.phys.clone(),
                    &mut WindowTables(BuddyFrames(p)),
                    MapRequest {
                        va: VirtAddr(va.0 + i * PAGE_SIZE),
                        pa: PhysAddr(pfn << PAGE_SHIFT),
                        len: PAGE_SIZE,
                        size: SizeRequest::Fixed(PageSize::Size4K),
                        flags: PteFlags::RW.union(PteFlags::NX).union(PteFlags::GLOBAL),
                    },
                )
                .map_err(VmallocFailure::Map)?;
            // Not-present to present needs no invalidation on x86.
            flush.ignore();
            NR_PAGES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            Ok(())
        });
        if let Err(e) = r {
            // Undo what was mapped so far, and the page not mapped.
            let _ = super::free_pages(pfn, 0);
            let _ = unmap_and_free(va, i);
            let _ = VMAP.with(|v| v.free(va));
            return Err(e);
        }
    }
    Ok(va)
}

/// Maps `size` bytes of device registers at physical `pa` (page-aligned)
/// uncached (PCD|PWT) into the vmalloc window, as Linux's `ioremap`: the
/// drivers' MMIO windows (virtio-mmio, the IOAPIC), which lie outside RAM
/// and so outside the direct map. The frames are not RAM: nothing is
/// allocated or freed for them.
pub fn ioremap(pa: u64, size: u64, caller: &'static str) -> Result<VirtAddr, VmallocFailure> {
    let size = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let va = VMAP.with(|v| v.alloc(size, PAGE_SIZE, caller)).map_err(VmallocFailure::Area)?;
    let r = PAGES.with(|p| {
        let mapper = KERNEL_PT.with(|m| *m);
        mapper
            .map(
                &mut p.phys.clone(),
                &mut WindowTables(BuddyFrames(p)),
                MapRequest {
                    va,
                    pa: PhysAddr(pa & !(PAGE_SIZE - 1)),
                    len: size,
                    size: SizeRequest::Fixed(PageSize::Size4K),
                    flags: PteFlags::RW
                        .union(PteFlags::NX)
                        .union(PteFlags::GLOBAL)
                        .union(PteFlags::PCD)
                        .union(PteFlags::PWT),
                },
            )
            // Not-present to present needs no invalidation on x86.
            .map(|flush| flush.ignore())
    });
    match r {
        Ok(()) => Ok(va),
        Err(e) => {
            let _ = VMAP.with(|v| v.free(va));
            Err(VmallocFailure::Map(e))
        }
    }
}

/// Unmaps `pages` pages at `va`, flushes them and frees their frames.
fn unmap_and_free(va: VirtAddr, pages: u64) -> Result<(), mm_core::paging::MapError> {
    PAGES.with(|p| {
        let mapper = KERNEL_PT.with(|m| *m);
        let mut phys = p.phys;
        let mut frames = [0u64; 64];
        let mut done = 0;
        while done < pages {
            let n = (pages - done).min(frames.len() as u64);
            for (k, f) in frames.iter_mut().enumerate().take(n as usize) {
                let a = VirtAddr(va.0 + (done + k as u64) * PAGE_SIZE);
                *f = walk(&phys, &mapper.context(), a).map(|t| t.pa.0 >> PAGE_SHIFT).unwrap_or(u64::MAX);
            }
            let flush = mapper.unmap(
                &mut phys,
                &mut WindowTables(BuddyFrames(p)),
                VirtAddr(va.0 + done * PAGE_SIZE),
                n * PAGE_SIZE,
                // Kernel page tables stay (as Linux's vmalloc leaves them):
                // every address space shares them.
                false,
            )?;
            // The frames may be reused the moment they are freed: the TLB
            // must forget them first.
            flush.flush(&mut Invlpg);
            for &pfn in &frames[..n as usize] {
                if pfn != u64::MAX {
                    crate::mm::tlbtrace::free(pfn, 0);
                    NR_PAGES.fetch_sub(1, core::sync::atomic::Ordering::Relaxed);
                    if let Err(e) = p.buddy.free_pages(this_cpu().id, pfn, 0) {
                        panic!("vfree: freeing pfn {:#x}: {}", pfn, e);
                    }
                }
            }
            done += n;
        }
        Ok(())
    })
}

/// Frees a vmalloc area.
pub fn vfree(va: VirtAddr) -> Result<(), VmallocFailure> {
    let area =
        VMAP.with(|v| v.find(va).copied()).ok_or(VmallocFailure::Area(mm_core::vmalloc::VmallocError::NotFound(va)))?;
    unmap_and_free(area.start, area.size / PAGE_SIZE).map_err(VmallocFailure::Map)?;
    VMAP.with(|v| v.free(va)).map_err(VmallocFailure::Area)?;
    STATS.with(|s| s.vfrees += 1);
    Ok(())
}

/// The area containing `addr`, or whose guard page contains it (for the
/// fault handler; `None` if the allocator is busy or nothing matches).
pub fn area_near(addr: u64) -> Option<VmapArea> {
    VMAP.try_with(|v| v.areas().find(|a| addr >= a.start.0 && addr < a.start.0 + a.reserved).copied()).flatten()
}

impl core::fmt::Display for VmallocFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmallocFailure::Area(e) => write!(f, "no vmalloc area: {}", e),
            VmallocFailure::NoMemory => f.write_str("out of pages"),
            VmallocFailure::Map(e) => write!(f, "mapping failed: {}", e),
        }
    }
}

/// The address of the marker area `vmalloc_marker` creates (0 until then):
/// a known vmalloc address for debuggers and tests, e.g. in gdb
/// `x/s kernel::mm::vmalloc::MMEMU_VMALLOC_MARKER.v.value`.
#[no_mangle]
pub static MMEMU_VMALLOC_MARKER: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Text the marker area starts with.
pub const MARKER_TEXT: &[u8] = b"mmemu vmalloc marker\0";

/// Allocates one vmalloc page holding `MARKER_TEXT` and publishes its
/// address in `MMEMU_VMALLOC_MARKER`.
pub fn create_marker() -> Result<VirtAddr, VmallocFailure> {
    let va = vmalloc(PAGE_SIZE, "vmalloc_marker")?;
    // SAFETY: the page was just mapped RW for us.
    unsafe { core::ptr::copy_nonoverlapping(MARKER_TEXT.as_ptr(), va.0 as *mut u8, MARKER_TEXT.len()) };
    MMEMU_VMALLOC_MARKER.store(va.0, core::sync::atomic::Ordering::Release);
    Ok(va)
}
