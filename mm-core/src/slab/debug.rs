//! SLUB debugging: poisoning and red zones (Linux's `init_object`,
//! `check_object`). Free objects hold `POISON_FREE` bytes ending in
//! `POISON_END`, live ones `POISON_INUSE`; the red zone after each object
//! reads `SLUB_RED_ACTIVE` while it is allocated and `SLUB_RED_INACTIVE`
//! while it is free, which also makes a double free an O(1) check.

use super::cache::KmemCache;
use super::{SlabError, SlabFlags};
use super::{POISON_END, POISON_FREE, POISON_INUSE, SLUB_RED_ACTIVE, SLUB_RED_INACTIVE};
use crate::addr::PhysAddr;
use crate::mem::PhysMem;

const CHUNK: usize = 64;

fn fill<M: PhysMem + ?Sized>(mem: &mut M, start: u64, len: u64, byte: u8) -> Result<(), SlabError> {
    let buf = [byte; CHUNK];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(CHUNK as u64) as usize;
        mem.write(PhysAddr(start + off), &buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// Offset of the first byte of `[start, start+len)` that is not `byte`.
fn first_mismatch<M: PhysMem + ?Sized>(mem: &M, start: u64, len: u64, byte: u8) -> Result<Option<u64>, SlabError> {
    let mut buf = [0u8; CHUNK];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(CHUNK as u64) as usize;
        mem.read(PhysAddr(start + off), &mut buf[..n])?;
        if let Some(i) = buf[..n].iter().position(|&b| b != byte) {
            return Ok(Some(off + i as u64));
        }
        off += n as u64;
    }
    Ok(None)
}

fn red_zone(s: &KmemCache) -> Option<(u64, u64)> {
    s.flags.contains(SlabFlags::RED_ZONE).then(|| (s.object_size as u64, (s.offset - s.object_size) as u64))
}

fn poison_free<M: PhysMem + ?Sized>(s: &KmemCache, mem: &mut M, obj: u64) -> Result<(), SlabError> {
    let len = s.object_size as u64;
    fill(mem, obj, len - 1, POISON_FREE)?;
    fill(mem, obj + len - 1, 1, POISON_END)
}

/// Sets up a never-used object: poisoned and red zone inactive.
pub(crate) fn init_free_object<M: PhysMem + ?Sized>(s: &KmemCache, mem: &mut M, obj: u64) -> Result<(), SlabError> {
    if s.flags.contains(SlabFlags::POISON) {
        poison_free(s, mem, obj)?;
    }
    if let Some((off, len)) = red_zone(s) {
        fill(mem, obj + off, len, SLUB_RED_INACTIVE)?;
    }
    Ok(())
}

/// Checks an object just taken off a freelist and marks it live. A
/// mismatch means something wrote to it while it was free.
pub(crate) fn on_alloc<M: PhysMem + ?Sized>(s: &KmemCache, mem: &mut M, obj: u64) -> Result<(), SlabError> {
    if s.flags.contains(SlabFlags::POISON) {
        let len = s.object_size as u64;
        let bad = match first_mismatch(mem, obj, len - 1, POISON_FREE)? {
            Some(i) => Some(i),
            None => first_mismatch(mem, obj + len - 1, 1, POISON_END)?.map(|_| len - 1),
        };
        if let Some(offset) = bad {
            return Err(SlabError::Poison { addr: PhysAddr(obj), offset });
        }
    }
    if let Some((off, len)) = red_zone(s) {
        if let Some(i) = first_mismatch(mem, obj + off, len, SLUB_RED_INACTIVE)? {
            return Err(SlabError::RedZone { addr: PhysAddr(obj), offset: off + i });
        }
        fill(mem, obj + off, len, SLUB_RED_ACTIVE)?;
    }
    if s.flags.contains(SlabFlags::POISON) {
        fill(mem, obj, s.object_size as u64, POISON_INUSE)?;
    }
    Ok(())
}

/// Checks an object being freed (red zone intact: no overflow; red zone
/// not already inactive: no double free) and poisons it.
pub(crate) fn on_free<M: PhysMem + ?Sized>(s: &KmemCache, mem: &mut M, obj: u64) -> Result<(), SlabError> {
    if let Some((off, len)) = red_zone(s) {
        if first_mismatch(mem, obj + off, len, SLUB_RED_INACTIVE)?.is_none() {
            return Err(SlabError::DoubleFree(PhysAddr(obj)));
        }
        if let Some(i) = first_mismatch(mem, obj + off, len, SLUB_RED_ACTIVE)? {
            return Err(SlabError::RedZone { addr: PhysAddr(obj), offset: off + i });
        }
        fill(mem, obj + off, len, SLUB_RED_INACTIVE)?;
    }
    if s.flags.contains(SlabFlags::POISON) {
        poison_free(s, mem, obj)?;
    }
    Ok(())
}
