//! The guest's implementation of mm-core's raw-memory seam: physical
//! memory reached through a linear window (the -2 GiB kernel map while
//! the boot tables are live, the direct map afterwards).

use mm_core::addr::PhysAddr;
use mm_core::mem::{MemError, PhysMem};

/// Physical memory seen through `base + pa`, for `pa < limit`.
#[derive(Clone, Copy)]
pub struct KernelPhys {
    base: u64,
    limit: u64,
}

impl KernelPhys {
    /// Physical memory through a window at `base` covering `[0, limit)`.
    ///
    /// # Safety
    /// `[base, base + limit)` must map physical `[0, limit)` read-write for
    /// as long as the value is used.
    pub const unsafe fn new(base: u64, limit: u64) -> Self {
        KernelPhys { base, limit }
    }

    /// `check(pa, 8)` in one comparison where the walks of the page-table
    /// editor read entry after entry: `limit - 8` is the same for all of
    /// them, so the compiler computes it once.
    #[inline(always)]
    fn check_u64(&self, pa: PhysAddr) -> Result<*mut u8, MemError> {
        if self.limit < 8 || pa.0 > self.limit - 8 {
            return Err(MemError::OutOfRange(pa));
        }
        Ok((self.base + pa.0) as *mut u8)
    }

    fn check(&self, pa: PhysAddr, len: usize) -> Result<*mut u8, MemError> {
        match pa.0.checked_add(len as u64) {
            Some(end) if end <= self.limit => Ok((self.base + pa.0) as *mut u8),
            _ => Err(MemError::OutOfRange(pa)),
        }
    }
}

impl PhysMem for KernelPhys {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let p = self.check(pa, buf.len())?;
        // SAFETY: `check` kept the range inside the window `new` vouched for.
        unsafe { core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write(&mut self, pa: PhysAddr, buf: &[u8]) -> Result<(), MemError> {
        let p = self.check(pa, buf.len())?;
        // SAFETY: as in `read`.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) };
        Ok(())
    }

    fn read_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        let p = self.check_u64(pa)?;
        // SAFETY: as in `read`; page-table entries and free pointers are
        // 8-byte aligned, and an unaligned read is legal on x86 anyway.
        Ok(unsafe { core::ptr::read_volatile(p as *const u64) })
    }

    fn write_u64(&mut self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        let p = self.check_u64(pa)?;
        // SAFETY: as in `read_u64`.
        unsafe { core::ptr::write_volatile(p as *mut u64, v) };
        Ok(())
    }

    /// The stale-TLB recorder hears of every entry the editor replaces
    /// while it runs (mm/tlbtrace.rs).
    #[inline(always)]
    fn traces_ptes(&self) -> bool {
        super::tlbtrace::enabled()
    }

    #[inline(always)]
    fn pte_written(&mut self, w: &mm_core::paging::editor::PteWrite) {
        super::tlbtrace::pte_written(w);
    }

    /// One bounds check for the whole range, then a scan over it: what
    /// the page-table editor's walks spend their time in (fork, exit).
    fn find_nonzero_u64(&self, pa: PhysAddr, count: usize) -> Result<Option<(usize, u64)>, MemError> {
        let len = count.checked_mul(8).ok_or(MemError::OutOfRange(pa))?;
        let p = self.check(pa, len)? as *const u64;
        // Volatile, as `read_u64`: the tables are live memory the CPU also
        // writes (accessed and dirty bits). Only called with `i < count`.
        let at = |i: usize| {
            // SAFETY: `check` kept `[pa, pa + 8 * count)` inside the window
            // `new` vouched for and `i < count`; entries are 8-byte aligned
            // (an unaligned read is legal on x86 anyway).
            unsafe { core::ptr::read_volatile(p.add(i)) }
        };
        let mut i = 0;
        // Eight entries ORed per test: an empty table costs a quarter of
        // the instructions of one test per entry (ring 0 is emulated here,
        // every instruction counts).
        while i + 8 <= count {
            if at(i) | at(i + 1) | at(i + 2) | at(i + 3) | at(i + 4) | at(i + 5) | at(i + 6) | at(i + 7) != 0 {
                break;
            }
            i += 8;
        }
        while i < count {
            let v = at(i);
            if v != 0 {
                return Ok(Some((i, v)));
            }
            i += 1;
        }
        Ok(None)
    }
}

/// The end of RAM the direct map covers, set once it maps all of it.
static DIRECT_MAP_END: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records that the direct map covers physical `[0, end)` from now on.
pub fn set_direct_map_end(end: u64) {
    DIRECT_MAP_END.store(end, core::sync::atomic::Ordering::Relaxed);
}

/// Physical memory through the direct map (what the page-table editor
/// reads and writes process tables through); empty before
/// [`set_direct_map_end`].
pub fn direct_map() -> KernelPhys {
    // SAFETY: `set_direct_map_end` is called once the direct map covers
    // `[0, end)` at PAGE_OFFSET, and it is never unmapped.
    unsafe { KernelPhys::new(super::layout::PAGE_OFFSET, DIRECT_MAP_END.load(core::sync::atomic::Ordering::Relaxed)) }
}

/// Fills frame `pa` with zeros (through the direct map).
pub fn clear_page(pa: u64) {
    // SAFETY: a frame the caller owns (just allocated), reached through
    // the direct map.
    unsafe { core::ptr::write_bytes(super::phys_to_virt(pa) as *mut u64, 0, 512) }
}

/// Copies frame `src` to frame `dst`.
pub fn copy_page(dst: u64, src: u64) {
    // SAFETY: two distinct frames (a fresh one and a mapped one), through
    // the direct map.
    unsafe {
        core::ptr::copy_nonoverlapping(
            super::phys_to_virt(src) as *const u64,
            super::phys_to_virt(dst) as *mut u64,
            512,
        )
    }
}

/// Copies `bytes` into frame `pa` at `offset`.
pub fn write_frame(pa: u64, offset: usize, bytes: &[u8]) {
    assert!(offset + bytes.len() <= 4096, "write past a frame");
    // SAFETY: checked to stay inside the frame, reached through the direct map.
    unsafe {
        core::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (super::phys_to_virt(pa) + offset as u64) as *mut u8,
            bytes.len(),
        )
    }
}

/// Copies bytes out of frame `pa` at `offset`.
pub fn read_frame(pa: u64, offset: usize, out: &mut [u8]) {
    assert!(offset + out.len() <= 4096, "read past a frame");
    // SAFETY: as `write_frame`.
    unsafe {
        core::ptr::copy_nonoverlapping(
            (super::phys_to_virt(pa) + offset as u64) as *const u8,
            out.as_mut_ptr(),
            out.len(),
        )
    }
}

/// mm-core's [`page_checksum`](mm_core::swap::page_checksum) of frame
/// `pa`: what swap-out records for a slot and swap-in checks.
pub fn frame_checksum(pa: u64) -> u64 {
    // SAFETY: one whole frame, through the direct map, only read.
    let words = unsafe { core::slice::from_raw_parts(super::phys_to_virt(pa) as *const u64, 512) };
    mm_core::swap::page_checksum(words)
}
