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
}
