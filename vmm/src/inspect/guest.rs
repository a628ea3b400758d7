//! Reading the guest's memory-manager state through the descriptor it
//! publishes (mm-core's `MmDescriptor`, the role of Linux's vmcoreinfo).
//!
//! This module owns the [`DescriptorSlot`] the port bus fills when the
//! guest announces the descriptor, the decoding of the descriptor and of
//! page descriptors from raw guest bytes, and [`GuestState`]: the
//! validated descriptor plus a snapshot of every non-zero page descriptor,
//! read through `vmemmap` with the kernel's own page tables (mm-core's
//! walker). Everything read from the guest is hostile: counts and
//! addresses are bounds-checked and a bad value becomes an error or a
//! noted problem, never a panic or an unbounded loop.
//!
//! Decoding is mm-core's (`descriptor::Wire`): field by field from
//! little-endian bytes rather than by reinterpreting memory, so no `unsafe`
//! is needed, and the same definition the guest lays out.

use super::GuestPhys;
use mm_core::addr::VirtAddr;
use mm_core::buddy::{Page, PageOwner, MAX_PAGE_ORDER, PG_BUDDY, PG_HEAD, PG_PCP, PG_SLAB};
use mm_core::buddy::{ZoneType, NR_ZONES};
use mm_core::descriptor::{
    AccessRecord, CacheDesc, MmDescriptor, ProcDesc, Wire, ACCESS_RECORD_SIZE, DESCRIPTOR_MAGIC, DESCRIPTOR_SIZE,
    DESCRIPTOR_VERSION, DESCRIPTOR_VERSION_MIN, MAX_CACHE_DESCS, MAX_PROC_DESCS, PAGE_DESC_SIZE, PROC_DESC_SIZE,
};
use mm_core::paging::{walk, CpuContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Most access records read (the guest's test records a few dozen).
pub const ACCESS_RECORDS_MAX: u32 = 1 << 16;
/// Bytes of one access record.
pub const ACCESS_RECORD_BYTES: u64 = ACCESS_RECORD_SIZE as u64;
/// Byte offset of an access record's `faulted` field (for tests that
/// tamper with a recorded outcome).
pub const ACCESS_RECORD_FAULTED_OFFSET: u64 = mm_core::descriptor::ACCESS_RECORD_FAULTED_OFFSET as u64;

/// Where the guest said its descriptor is: written by the port bus when
/// the guest writes `abi::port::DESCRIPTOR` (low half) and
/// `DESCRIPTOR_HIGH` (high half), read by
/// the inspector and the gdb stub. Zero means "not published".
#[derive(Debug, Clone, Default)]
pub struct DescriptorSlot(Arc<AtomicU64>);

impl DescriptorSlot {
    /// The published guest-physical address, if any.
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            pa => Some(pa),
        }
    }

    /// Records the address (0 withdraws it).
    pub fn set(&self, pa: u64) {
        self.0.store(pa, Ordering::Release);
    }
}

/// Why the guest's state cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestStateError {
    /// No descriptor yet.
    #[error("the guest has not published its memory-manager descriptor (on the descriptor ports) yet; it does so once its memory manager is up, so inspect at a later checkpoint such as 'ready'")]
    NotPublished,
    /// The address is not RAM.
    #[error("the guest published its descriptor at guest-physical {0:#x}, which is not guest RAM; the guest wrote a bad address to the descriptor ports")]
    Unreadable(u64),
    /// Header mismatch.
    #[error("the descriptor at guest-physical {pa:#x} is not one this VMM understands ({detail}); build the VMM and the guest from the same tree")]
    Invalid {
        /// Where.
        pa: u64,
        /// Which header field is off.
        detail: String,
    },
    /// A field points nowhere or is out of bounds.
    #[error("the guest's descriptor is unusable: {0}")]
    Field(String),
}

/// What a block of frames is, from its head descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// On a zone's free list (`PG_BUDDY`).
    Free,
    /// On a per-CPU list (`PG_PCP`): free, cached for one CPU.
    Pcp,
    /// Allocated (`PG_HEAD`), with its owner.
    Allocated(PageOwner),
    /// A slab (`PG_SLAB`).
    Slab {
        /// `CacheDesc::id + 1` (0 = none).
        cache: u16,
        /// Objects in use.
        inuse: u16,
        /// Objects in the slab.
        objects: u16,
    },
}

/// A buddy block: `2^order` frames from `pfn`, as its head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// First frame.
    pub pfn: u64,
    /// Size as a page order.
    pub order: u8,
    /// What it is.
    pub kind: BlockKind,
    /// The head's refcount.
    pub refcount: u32,
}

impl Block {
    /// One past the last frame.
    pub fn end_pfn(&self) -> u64 {
        self.pfn + (1u64 << self.order)
    }

    /// Free (on a buddy or pcp list).
    pub fn is_free(&self) -> bool {
        matches!(self.kind, BlockKind::Free | BlockKind::Pcp)
    }
}

/// The physical zones' names, by index (mm-core's `ZoneType`).
pub const ZONE_NAMES: [&str; NR_ZONES] = {
    let mut n = [""; NR_ZONES];
    let mut i = 0;
    while i < NR_ZONES {
        n[i] = ZoneType::ALL[i].name();
        i += 1;
    }
    n
};

/// The zone index of a frame.
pub fn zone_of(pfn: u64) -> usize {
    ZoneType::of_pfn(pfn) as usize
}

/// The guest's state at a checkpoint: its descriptor, validated, and the
/// page descriptors read through `vmemmap`.
pub struct GuestState<'m> {
    mem: &'m GuestMemoryMmap,
    /// Where the descriptor is.
    pub desc_pa: u64,
    /// The descriptor.
    pub desc: MmDescriptor,
    /// The kernel's translation context (`kernel_cr3` with `base`'s mode).
    pub kctx: CpuContext,
    /// Buddy blocks from the heads, ascending and non-overlapping (page
    /// descriptors themselves are not kept: [`GuestState::page`] reads
    /// one on demand).
    pub blocks: Vec<Block>,
    /// Oddities met while reading (unmapped vmemmap parts, bad orders...).
    pub problems: Vec<String>,
}

/// One past the highest guest-physical address of RAM.
pub fn ram_end(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().map(|r| r.start_addr().0 + r.len()).max().unwrap_or(0)
}

fn check_range(what: &str, pa: u64, len: u64, mem: &GuestMemoryMmap) -> Result<(), GuestStateError> {
    let end = pa.checked_add(len).ok_or_else(|| GuestStateError::Field(format!("{what} at {pa:#x} wraps")))?;
    if len > 0 && (mem.read_obj::<u8>(GuestAddress(pa)).is_err() || mem.read_obj::<u8>(GuestAddress(end - 1)).is_err())
    {
        return Err(GuestStateError::Field(format!(
            "{what} at guest-physical {pa:#x}-{:#x} is not guest RAM",
            end - 1
        )));
    }
    Ok(())
}

/// Most buddy blocks kept (24 bytes each, 24 MiB): a million block heads,
/// far above this guest's use (a 64 GiB guest's free memory is a few
/// thousand order-10 blocks); a garbage descriptor (or vmemmap) stops
/// here with a noted problem instead of costing the host memory in
/// proportion to `--mem`.
pub const BLOCKS_MAX: usize = 1 << 20;
/// How the problem noting that cap starts.
pub const PAGES_CAP_NOTE: &str = "stopped reading vmemmap after";
/// How the problem noting block heads no allocator writes starts.
pub const BAD_HEADS_NOTE: &str = "block heads have an order above";

impl<'m> GuestState<'m> {
    /// Why the page descriptors cannot be trusted, if they cannot: more
    /// non-zero descriptors than the cap (the rest was not read) or block
    /// heads with values no allocator writes (garbage). Checks over them
    /// could vouch for nothing, so they do not run.
    pub fn untrustworthy(&self) -> Option<String> {
        let p = self.problems.iter().find(|p| p.starts_with(PAGES_CAP_NOTE) || p.contains(BAD_HEADS_NOTE))?;
        Some(format!(
            "the guest's page descriptors are not trustworthy ({p}); the descriptor at guest-physical {:#x} claims {:#x} frames from vmemmap {:#x}",
            self.desc_pa, self.desc.nr_pfns, self.desc.vmemmap_va
        ))
    }

    /// Reads and validates the descriptor only (cheap): no page descriptors.
    /// `base` gives the paging mode (from the parked vCPU, or
    /// `CpuContext::kernel` when there is none); its CR3 is replaced by the
    /// guest's `kernel_cr3`.
    pub fn descriptor(
        mem: &'m GuestMemoryMmap,
        pa: Option<u64>,
        base: &CpuContext,
    ) -> Result<GuestState<'m>, GuestStateError> {
        let pa = pa.ok_or(GuestStateError::NotPublished)?;
        let mut buf = vec![0u8; DESCRIPTOR_SIZE];
        mem.read_slice(&mut buf, GuestAddress(pa)).map_err(|_| GuestStateError::Unreadable(pa))?;
        let invalid = |detail: String| GuestStateError::Invalid { pa, detail };
        let raw = MmDescriptor::decode(&buf);
        if raw.magic != DESCRIPTOR_MAGIC {
            return Err(invalid(format!("magic {:#x}, expected {DESCRIPTOR_MAGIC:#x}", raw.magic)));
        }
        // An older guest's (a snapshot taken by an older VMM): read as
        // this version with what it lacks empty, or refused by version.
        let desc = MmDescriptor::decode_versioned(&buf).map_err(|v| {
            invalid(format!(
                "version {v} with size {}: this VMM reads versions {DESCRIPTOR_VERSION_MIN} to {DESCRIPTOR_VERSION}; inspect it with the VMM that wrote it",
                raw.size
            ))
        })?;
        if desc.size as usize != DESCRIPTOR_SIZE || desc.page_desc_size as usize != PAGE_DESC_SIZE {
            return Err(invalid(format!(
                "descriptor size {} and page-descriptor size {}, expected {DESCRIPTOR_SIZE} and {PAGE_DESC_SIZE}",
                desc.size, desc.page_desc_size
            )));
        }
        if !desc.is_valid() {
            return Err(invalid(format!(
                "{} caches (at most {MAX_CACHE_DESCS}), {} access records of capacity {}",
                desc.nr_caches, desc.access_count, desc.access_capacity
            )));
        }
        let top_pfn = ram_end(mem) >> 12;
        if desc.nr_pfns > top_pfn {
            return Err(GuestStateError::Field(format!(
                "nr_pfns {:#x} is beyond guest RAM ({top_pfn:#x} frames)",
                desc.nr_pfns
            )));
        }
        if desc.vmemmap_va.checked_add(desc.nr_pfns * PAGE_DESC_SIZE as u64).is_none() {
            return Err(GuestStateError::Field(format!("vmemmap at {:#x} wraps around", desc.vmemmap_va)));
        }
        let kctx = CpuContext { cr3: desc.kernel_cr3, ..*base };
        check_range("kernel_cr3", kctx.root().0, 4096, mem)?;
        Ok(GuestState { mem, desc_pa: pa, desc, kctx, blocks: Vec::new(), problems: Vec::new() })
    }

    /// Reads the descriptor and every page descriptor.
    pub fn read(mem: &'m GuestMemoryMmap, pa: Option<u64>, base: &CpuContext) -> Result<Self, GuestStateError> {
        let mut s = Self::descriptor(mem, pa, base)?;
        s.read_pages();
        Ok(s)
    }

    /// The guest memory this state was read from.
    pub fn memory(&self) -> &'m GuestMemoryMmap {
        self.mem
    }

    /// Reads `vmemmap` in large chunks into [`GuestState::blocks`]: one
    /// walk per 2 MiB of the array (the guest maps it with 2 MiB pages
    /// where it can), all-zero descriptors (memory never handed to the
    /// buddy allocator) skipped, nothing kept per descriptor.
    fn read_pages(&mut self) {
        let mut blocks = BlockBuilder::default();
        self.read_descriptors(&mut blocks);
        self.blocks = blocks.finish(&mut self.problems);
    }

    fn read_descriptors(&mut self, blocks: &mut BlockBuilder) {
        const CHUNK: u64 = 2 << 20;
        let total = self.desc.nr_pfns * PAGE_DESC_SIZE as u64;
        let base = self.desc.vmemmap_va;
        let phys = GuestPhys(self.mem);
        let mut buf = vec![0u8; CHUNK as usize];
        let mut off = 0u64;
        let mut holes: Vec<(u64, u64)> = Vec::new();
        while off < total {
            let va = base + off;
            // The chunk ends at the next 2 MiB boundary, or at the end of
            // the array when that boundary is past the top of the address
            // space (a vmemmap the guest put in the last 2 MiB).
            let chunk_end = (va | (CHUNK - 1)).checked_add(1).map_or(total, |e| (e - base).min(total));
            let len = (chunk_end - off) as usize;
            let data = &mut buf[..len];
            data.fill(0);
            let mut mapped = true;
            match walk(&phys, &self.kctx, VirtAddr(va)) {
                Ok(t) if t.size.bytes() >= CHUNK => {
                    // One large page covers the whole chunk.
                    mapped = self.mem.read_slice(data, GuestAddress(t.pa.0)).is_ok();
                }
                Ok(_) => {
                    let mut done = 0usize;
                    while done < len {
                        let a = va + done as u64;
                        let n = ((4096 - (a & 0xfff)) as usize).min(len - done);
                        match walk(&phys, &self.kctx, VirtAddr(a)) {
                            Ok(t) if self.mem.read_slice(&mut data[done..done + n], GuestAddress(t.pa.0)).is_ok() => {}
                            _ => mapped = false,
                        }
                        done += n;
                    }
                }
                Err(_) => mapped = false,
            }
            if !mapped {
                let (s, e) = (off / PAGE_DESC_SIZE as u64, chunk_end.div_ceil(PAGE_DESC_SIZE as u64));
                match holes.last_mut() {
                    Some(h) if h.1 == s => h.1 = e,
                    _ => holes.push((s, e)),
                }
            }
            let first_pfn = off / PAGE_DESC_SIZE as u64;
            for (i, d) in data.chunks_exact(PAGE_DESC_SIZE).enumerate() {
                if d.iter().all(|&b| b == 0) {
                    continue;
                }
                if !blocks.feed(first_pfn + i as u64, &Page::decode(d)) {
                    self.problems.push(format!(
                        "{PAGES_CAP_NOTE} {BLOCKS_MAX} block heads (at pfn {:#x} of {:#x}); the rest was not read",
                        first_pfn + i as u64,
                        self.desc.nr_pfns
                    ));
                    return;
                }
            }
            off = chunk_end;
        }
        // Holes matter only where they hide descriptors of RAM.
        for (s, e) in holes {
            let ram: u64 = self
                .mem
                .iter()
                .map(|r| {
                    let (rs, re) = (r.start_addr().0 >> 12, (r.start_addr().0 + r.len()) >> 12);
                    e.min(re).saturating_sub(s.max(rs))
                })
                .sum();
            if ram > 0 {
                self.problems.push(format!(
                    "vmemmap does not map the descriptors of pfns {s:#x}-{:#x} ({ram} frames of RAM); they read as zero",
                    e - 1
                ));
            }
        }
    }

    /// The slab caches the descriptor lists.
    pub fn caches(&self) -> &[CacheDesc] {
        &self.desc.caches[..(self.desc.nr_caches as usize).min(MAX_CACHE_DESCS)]
    }

    /// The process table's live entries; `None` when the guest has none yet.
    pub fn procs(&self) -> Result<Option<Vec<ProcDesc>>, GuestStateError> {
        if self.desc.procs == 0 {
            return Ok(None);
        }
        let len = (MAX_PROC_DESCS * PROC_DESC_SIZE) as u64;
        check_range("the process table", self.desc.procs, len, self.mem)?;
        let mut buf = vec![0u8; len as usize];
        self.mem
            .read_slice(&mut buf, GuestAddress(self.desc.procs))
            .map_err(|_| GuestStateError::Field(format!("cannot read the process table at {:#x}", self.desc.procs)))?;
        Ok(Some(buf.chunks_exact(PROC_DESC_SIZE).map(ProcDesc::decode).filter(|p| p.pid != 0).collect()))
    }

    /// The access-rights test's records (empty when there are none).
    pub fn access_records(&self) -> Result<Vec<AccessRecord>, GuestStateError> {
        let n = self.desc.access_count;
        if n == 0 || self.desc.access_records == 0 {
            return Ok(Vec::new());
        }
        if n > ACCESS_RECORDS_MAX {
            return Err(GuestStateError::Field(format!("{n} access records (this VMM reads {ACCESS_RECORDS_MAX})")));
        }
        let len = n as u64 * ACCESS_RECORD_BYTES;
        check_range("the access records", self.desc.access_records, len, self.mem)?;
        let mut buf = vec![0u8; len as usize];
        self.mem.read_slice(&mut buf, GuestAddress(self.desc.access_records)).map_err(|_| {
            GuestStateError::Field(format!("cannot read the access records at {:#x}", self.desc.access_records))
        })?;
        Ok(buf.chunks_exact(ACCESS_RECORD_SIZE).map(AccessRecord::decode).collect())
    }

    /// The block holding `pfn`, if the buddy allocator manages it.
    pub fn block_of(&self, pfn: u64) -> Option<&Block> {
        let i = self.blocks.partition_point(|b| b.pfn <= pfn);
        self.blocks[..i].last().filter(|b| pfn < b.end_pfn())
    }

    /// The descriptor of `pfn`, read from the guest now (zero when it has
    /// none or vmemmap does not map it; a descriptor never straddles a
    /// page, as 4096 is a multiple of its size).
    pub fn page(&self, pfn: u64) -> Page {
        let mut d = [0u8; PAGE_DESC_SIZE];
        if pfn < self.desc.nr_pfns {
            let va = self.desc.vmemmap_va.wrapping_add(pfn * PAGE_DESC_SIZE as u64);
            if let Ok(t) = walk(&GuestPhys(self.mem), &self.kctx, VirtAddr(va)) {
                let _ = self.mem.read_slice(&mut d, GuestAddress(t.pa.0));
            }
        }
        Page::decode(&d)
    }
}

/// A [`GuestState`] read on first use: views and checks at one checkpoint
/// share one read of the page descriptors, and a checkpoint that needs
/// none reads nothing.
pub struct LazyGuest<'m> {
    mem: &'m GuestMemoryMmap,
    pa: Option<u64>,
    base: CpuContext,
    state: Option<Result<GuestState<'m>, GuestStateError>>,
}

impl<'m> LazyGuest<'m> {
    /// Nothing read yet.
    pub fn new(mem: &'m GuestMemoryMmap, pa: Option<u64>, base: CpuContext) -> Self {
        LazyGuest { mem, pa, base, state: None }
    }

    /// The state, read now if not yet.
    pub fn get(&mut self) -> Result<&GuestState<'m>, GuestStateError> {
        let (mem, pa, base) = (self.mem, self.pa, self.base);
        self.state.get_or_insert_with(|| GuestState::read(mem, pa, &base)).as_ref().map_err(Clone::clone)
    }
}

/// The blocks the head descriptors describe, built as the descriptors
/// stream by (ascending pfns). A head covers `2^order` frames;
/// descriptors inside a block are its tails (possibly stale from an
/// earlier life of the frames) and are skipped, as the buddy allocator
/// itself never reads them.
#[derive(Default)]
struct BlockBuilder {
    out: Vec<Block>,
    bad_orders: u64,
}

impl BlockBuilder {
    /// Takes the non-zero descriptor of `pfn`; false when it would start
    /// a block past [`BLOCKS_MAX`] (nothing more is taken).
    fn feed(&mut self, pfn: u64, p: &Page) -> bool {
        if self.out.last().is_some_and(|b| pfn < b.end_pfn()) {
            return true;
        }
        let kind = if p.flags & PG_BUDDY != 0 {
            BlockKind::Free
        } else if p.flags & PG_PCP != 0 {
            BlockKind::Pcp
        } else if p.flags & PG_SLAB != 0 {
            BlockKind::Slab { cache: p.slab_cache, inuse: p.inuse, objects: p.objects }
        } else if p.flags & PG_HEAD != 0 {
            BlockKind::Allocated(PageOwner::from_u8(p.owner))
        } else {
            return true;
        };
        if self.out.len() >= BLOCKS_MAX {
            return false;
        }
        let order = if p.order > MAX_PAGE_ORDER {
            self.bad_orders += 1;
            0
        } else {
            p.order
        };
        self.out.push(Block { pfn, order, kind, refcount: p.refcount });
        true
    }

    fn finish(self, problems: &mut Vec<String>) -> Vec<Block> {
        if self.bad_orders > 0 {
            problems.push(format!("{} {BAD_HEADS_NOTE} {MAX_PAGE_ORDER}; counted as single frames", self.bad_orders));
        }
        self.out
    }
}

/// The blocks the heads among `pages` (ascending) describe.
pub fn blocks_of(pages: &[(u64, Page)], problems: &mut Vec<String>) -> Vec<Block> {
    let mut b = BlockBuilder::default();
    for (pfn, p) in pages {
        if !b.feed(*pfn, p) {
            break;
        }
    }
    b.finish(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_tails_inside_a_block_are_skipped() {
        let head = |flags, order| Page { flags, order, ..Page::default() };
        let pages = vec![
            (0, head(PG_BUDDY, 2)),
            (2, head(PG_HEAD, 0)), // stale: inside the free order-2 block
            (4, head(PG_HEAD, 0)),
            (5, Page { flags: mm_core::buddy::PG_TAIL, next: 4, ..Page::default() }),
            (8, head(PG_PCP, 60)),
        ];
        let mut problems = vec![];
        let b = blocks_of(&pages, &mut problems);
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].pfn, b[0].end_pfn(), b[0].kind), (0, 4, BlockKind::Free));
        assert_eq!(b[1].kind, BlockKind::Allocated(PageOwner::Unknown));
        assert_eq!((b[2].pfn, b[2].order), (8, 0), "a hostile order is clamped");
        assert_eq!(problems.len(), 1);
        assert_eq!(zone_of(0xfff), 0);
        assert_eq!(zone_of(0x1000), 1);
        assert_eq!(zone_of(0x10_0000), 2);
    }

    /// Found by the `guest_state` fuzz target (reproducer in
    /// vmm/fuzz/corpus/guest_state/vmemmap-at-the-top): a vmemmap in the
    /// last 2 MiB of the address space overflowed the rounding of its
    /// first chunk's end (a panic in a debug build of the VMM).
    #[test]
    fn a_vmemmap_at_the_top_of_the_address_space_is_read() {
        use mm_core::descriptor::{MmDescriptor, Wire};
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 10)]).unwrap();
        let mut d = MmDescriptor::new();
        d.nr_pfns = 2;
        d.vmemmap_va = u64::MAX - 2 * PAGE_DESC_SIZE as u64;
        let mut b = vec![0u8; DESCRIPTOR_SIZE];
        d.encode(&mut b);
        mem.write_slice(&b, GuestAddress(0x1000)).unwrap();
        let gs = GuestState::read(&mem, Some(0x1000), &CpuContext::kernel(mm_core::addr::PhysAddr(0))).unwrap();
        assert!(gs.blocks.is_empty());
        assert!(!gs.problems.is_empty(), "the unmapped vmemmap is noted");
    }
}
