//! The raw-memory seam: how mm-core reads and writes "physical" memory.
//!
//! The guest implements [`PhysMem`] over its direct map, the host over the
//! guest's RAM (vm-memory), tests over a plain buffer ([`VecMem`]). A walker
//! fed a hostile page table only ever sees [`MemError`], never a panic.

use crate::addr::PhysAddr;
use alloc::vec;
use alloc::vec::Vec;

/// Why a physical access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// The address (or part of the access) is not backed by memory.
    OutOfRange(PhysAddr),
}

impl core::fmt::Display for MemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MemError::OutOfRange(pa) => write!(f, "physical address {:#x} is outside memory", pa.0),
        }
    }
}

/// Byte-addressed physical memory.
pub trait PhysMem {
    /// Reads `buf.len()` bytes starting at `pa`.
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemError>;
    /// Writes `buf` starting at `pa`.
    fn write(&mut self, pa: PhysAddr, buf: &[u8]) -> Result<(), MemError>;

    /// Reads a little-endian u64 (page-table entries, free pointers).
    fn read_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u64.
    fn write_u64(&mut self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        self.write(pa, &v.to_le_bytes())
    }

    /// Whether the page-table editor should report the entries it replaces
    /// through [`PhysMem::pte_written`] (it then reads each entry before
    /// writing it). False by default: the host and tests pay nothing.
    #[inline(always)]
    fn traces_ptes(&self) -> bool {
        false
    }

    /// The page-table editor replaced a page-table entry (only called when
    /// [`PhysMem::traces_ptes`] says so, and only when the entry changed):
    /// the guest's stale-TLB recorder hooks in here, so no edit made
    /// through [`crate::paging::Slot::write`] or the mapper's unmap and
    /// protect can escape it.
    #[inline(always)]
    fn pte_written(&mut self, _w: &crate::paging::editor::PteWrite) {}

    /// The first non-zero little-endian u64 among the `count` ones from
    /// `pa` on (a page table's entries: most are zero), as its index and
    /// value; `Ok(None)` when they are all zero. Fails if any of the range
    /// is outside memory, even past the entry found, so a whole table is
    /// checked once. This default reads entry by entry; an implementation
    /// that can check the range once and scan it in a tight loop (the
    /// guest's direct map) should.
    fn find_nonzero_u64(&self, pa: PhysAddr, count: usize) -> Result<Option<(usize, u64)>, MemError> {
        let bytes = (count as u64).checked_mul(8).ok_or(MemError::OutOfRange(pa))?;
        let last = pa.0.checked_add(bytes).ok_or(MemError::OutOfRange(pa))?;
        if count > 0 {
            // The range's last entry first: the whole range is in memory.
            self.read_u64(PhysAddr(last - 8))?;
        }
        for i in 0..count {
            let v = self.read_u64(PhysAddr(pa.0 + 8 * i as u64))?;
            if v != 0 {
                return Ok(Some((i, v)));
            }
        }
        Ok(None)
    }
}

/// Physical memory backed by a heap buffer starting at physical address 0:
/// for tests, benchmarks and fuzzing on the host.
#[derive(Clone)]
pub struct VecMem {
    bytes: Vec<u8>,
}

impl VecMem {
    /// `size` bytes of zeroed memory.
    pub fn new(size: usize) -> Self {
        VecMem { bytes: vec![0; size] }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn range(&self, pa: PhysAddr, len: usize) -> Result<core::ops::Range<usize>, MemError> {
        let start = usize::try_from(pa.0).map_err(|_| MemError::OutOfRange(pa))?;
        let end = start.checked_add(len).ok_or(MemError::OutOfRange(pa))?;
        if end > self.bytes.len() {
            return Err(MemError::OutOfRange(pa));
        }
        Ok(start..end)
    }
}

impl PhysMem for VecMem {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.range(pa, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }

    fn write(&mut self, pa: PhysAddr, buf: &[u8]) -> Result<(), MemError> {
        let r = self.range(pa, buf.len())?;
        self.bytes[r].copy_from_slice(buf);
        Ok(())
    }

    fn find_nonzero_u64(&self, pa: PhysAddr, count: usize) -> Result<Option<(usize, u64)>, MemError> {
        let len = count.checked_mul(8).ok_or(MemError::OutOfRange(pa))?;
        let r = self.range(pa, len)?;
        Ok(self.bytes[r].chunks_exact(8).enumerate().find_map(|(i, c)| {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            (v != 0).then_some((i, v))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory that only has the default `find_nonzero_u64`.
    struct Plain(VecMem);

    impl PhysMem for Plain {
        fn read(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
            self.0.read(pa, buf)
        }
        fn write(&mut self, pa: PhysAddr, buf: &[u8]) -> Result<(), MemError> {
            self.0.write(pa, buf)
        }
    }

    #[test]
    fn find_nonzero_u64_default_and_vecmem_agree() {
        let mut m = VecMem::new(3 * 4096);
        m.write_u64(PhysAddr(4096 + 8 * 7), 0x1234).unwrap();
        m.write_u64(PhysAddr(4096 + 8 * 300), 5).unwrap();
        let plain = Plain(m.clone());
        for mem in [&m as &dyn PhysMem, &plain] {
            assert_eq!(mem.find_nonzero_u64(PhysAddr(4096), 512), Ok(Some((7, 0x1234))));
            assert_eq!(mem.find_nonzero_u64(PhysAddr(4096 + 64), 504), Ok(Some((292, 5))));
            assert_eq!(mem.find_nonzero_u64(PhysAddr(4096 + 8 * 301), 211), Ok(None));
            assert_eq!(mem.find_nonzero_u64(PhysAddr(0), 512), Ok(None));
            assert_eq!(mem.find_nonzero_u64(PhysAddr(0), 0), Ok(None));
            // Any part outside memory fails, even after a non-zero entry.
            assert!(mem.find_nonzero_u64(PhysAddr(4096 + 8 * 7), 1024).is_err());
            assert!(mem.find_nonzero_u64(PhysAddr(2 * 4096 + 8), 512).is_err());
            assert!(mem.find_nonzero_u64(PhysAddr(u64::MAX - 7), 2).is_err());
        }
    }
}
