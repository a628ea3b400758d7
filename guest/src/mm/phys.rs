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
        let p = self.check(pa, 8)?;
        // SAFETY: as in `read`; page-table entries and free pointers are
        // 8-byte aligned, and an unaligned read is legal on x86 anyway.
        Ok(unsafe { core::ptr::read_volatile(p as *const u64) })
    }

    fn write_u64(&mut self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        let p = self.check(pa, 8)?;
        // SAFETY: as in `read_u64`.
        unsafe { core::ptr::write_volatile(p as *mut u64, v) };
        Ok(())
    }
}
