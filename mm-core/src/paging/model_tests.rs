//! Model-based property tests: random map/unmap/protect sequences checked
//! after every step against a naive per-page model, through the walker and
//! through the mapping iterator, and the TLB model checked against the same
//! model with and without the flushes the mapper asks for.

use crate::addr::{PageSize, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::mem::VecMem;
use crate::paging::mapper::{FrameAllocator, MapError, MapRequest, Mapper, SizeRequest};
use crate::paging::tlb::Tlb;
use crate::paging::walker::{translate, walk, Access, FaultReason};
use crate::paging::PteFlags;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use proptest::prelude::*;

/// Pages per region: two 2 MiB blocks, so operations collide often.
const REGION_PAGES: u64 = 1024;
/// One user region and one in Linux's direct map.
const REGIONS: [u64; 2] = [0x0000_7f00_0000_0000, 0xffff_8880_0000_0000];

struct Frames {
    free: Vec<PhysAddr>,
}

impl FrameAllocator for Frames {
    fn allocate_frame(&mut self) -> Option<PhysAddr> {
        self.free.pop()
    }
    fn deallocate_frame(&mut self, frame: PhysAddr) {
        assert!(!self.free.contains(&frame), "double free of {frame}");
        self.free.push(frame);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Map { region: usize, page: u64, npages: u64, pa_page: u64, size: u8, flags: u8 },
    Unmap { region: usize, page: u64, npages: u64, free: bool },
    Protect { region: usize, page: u64, npages: u64, flags: u8 },
    Touch { region: usize, page: u64, write: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..REGION_PAGES, 1..8u64, 0..4096u64, 0..8u8, any::<u8>()).prop_map(
            |(region, page, npages, pa_page, size, flags)| Op::Map { region, page, npages, pa_page, size, flags }
        ),
        2 => (0..2usize, 0..REGION_PAGES, 1..8u64, any::<bool>())
            .prop_map(|(region, page, npages, free)| Op::Unmap { region, page, npages, free }),
        2 => (0..2usize, 0..REGION_PAGES, 1..8u64, any::<u8>())
            .prop_map(|(region, page, npages, flags)| Op::Protect { region, page, npages, flags }),
        3 => (0..2usize, 0..REGION_PAGES, any::<bool>())
            .prop_map(|(region, page, write)| Op::Touch { region, page, write }),
    ]
}

fn flags_of(sel: u8) -> PteFlags {
    let mut f = PteFlags::PRESENT;
    for (bit, flag) in [
        (1, PteFlags::RW),
        (2, PteFlags::USER),
        (4, PteFlags::NX),
        (8, PteFlags::GLOBAL),
        (16, PteFlags::PWT),
        (32, PteFlags::PAT),
    ] {
        if sel & bit != 0 {
            f |= flag;
        }
    }
    f
}

/// Per 4 KiB page: (physical page, flags, size of the leaf).
type Model = BTreeMap<u64, (u64, PteFlags, PageSize)>;

const CMP_MASK: PteFlags = PteFlags(!(PteFlags::ACCESSED.0 | PteFlags::DIRTY.0));

struct World {
    mem: VecMem,
    frames: Frames,
    mapper: Mapper,
    model: Model,
    tlb: Tlb,
    flush: bool,
}

impl World {
    fn new(flush: bool) -> Self {
        let mut mem = VecMem::new(2 << 20);
        let mut frames = Frames { free: (1..512).rev().map(|i| PhysAddr(i * PAGE_SIZE)).collect() };
        let mapper = Mapper::create(&mut mem, &mut frames, false, 46, false).unwrap();
        World { mem, frames, mapper, model: Model::new(), tlb: Tlb::new(), flush }
    }

    /// Whether `[start, start+n)` (page numbers) covers whole leaves only,
    /// all mapped.
    fn whole_and_mapped(&self, start: u64, n: u64) -> bool {
        (start..start + n).all(|p| match self.model.get(&p) {
            None => false,
            Some((_, _, s)) => {
                let per = s.bytes() / PAGE_SIZE;
                let base = p & !(per - 1);
                base >= start && base + per <= start + n
            }
        })
    }

    /// A start page: often an existing mapping (where unmap, protect and
    /// stale entries happen), else anywhere in the region. Returns the
    /// page number and how many pages remain in its region.
    fn pick(&self, region: usize, page: u64) -> (u64, u64) {
        let base = REGIONS[region] >> 12;
        let mut vpn = base + page;
        if page & 3 != 0 && !self.model.is_empty() {
            let i = (page as usize / 4) % self.model.len();
            vpn = *self.model.keys().nth(i).unwrap();
        }
        let region_end = REGIONS
            .iter()
            .map(|r| r >> 12)
            .find(|&b| vpn >= b && vpn < b + REGION_PAGES)
            .map_or(vpn + 1, |b| b + REGION_PAGES);
        (vpn, region_end - vpn)
    }

    fn apply(&mut self, op: &Op) {
        let ctx = self.mapper.context();
        match *op {
            Op::Map { region, page, npages, pa_page, size, flags } => {
                let (req, page, npages, pa_page) = match size {
                    0 => (SizeRequest::Fixed(PageSize::Size2M), page & !511, 512, pa_page & !511),
                    // Best on a 2M-aligned pair so large pages happen.
                    1 => (SizeRequest::Best, page & !511, 512 + npages, pa_page & !511),
                    2..=4 => (SizeRequest::Fixed(PageSize::Size4K), page, npages, pa_page),
                    _ => (SizeRequest::Best, page, npages, pa_page),
                };
                let npages = npages.min(REGION_PAGES - page);
                let vpn0 = (REGIONS[region] >> 12) + page;
                let flags = flags_of(flags);
                let any_mapped = (vpn0..vpn0 + npages).any(|p| self.model.contains_key(&p));
                let r = self.mapper.map(
                    &mut self.mem,
                    &mut self.frames,
                    MapRequest {
                        va: VirtAddr(vpn0 << 12),
                        pa: PhysAddr(pa_page << 12),
                        len: npages << 12,
                        size: req,
                        flags,
                    },
                );
                match r {
                    Ok(tok) => {
                        assert!(!any_mapped, "map over a mapped page succeeded");
                        if self.flush {
                            tok.flush(&mut self.tlb);
                        } else {
                            tok.ignore();
                        }
                        // Learn the sizes chosen from the tables.
                        for i in 0..npages {
                            let t = walk(&self.mem, &ctx, VirtAddr((vpn0 + i) << 12)).unwrap();
                            self.model.insert(vpn0 + i, (pa_page + i, flags, t.size));
                        }
                    }
                    Err(MapError::AlreadyMapped { .. }) | Err(MapError::ParentIsHugePage { .. }) => {
                        // An empty table left by an earlier unmap can be in
                        // the way of a fixed 2M leaf.
                        assert!(
                            any_mapped || req == SizeRequest::Fixed(PageSize::Size2M),
                            "map over unmapped range failed: {r:?}"
                        );
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            Op::Unmap { region, page, npages, free } => {
                let (vpn0, left) = self.pick(region, page);
                let npages = npages.min(left);
                let expect = self.whole_and_mapped(vpn0, npages);
                let r = self.mapper.unmap(&mut self.mem, &mut self.frames, VirtAddr(vpn0 << 12), npages << 12, free);
                assert_eq!(r.is_ok(), expect, "{r:?}");
                if let Ok(tok) = r {
                    if self.flush {
                        tok.flush(&mut self.tlb);
                    } else {
                        tok.ignore();
                    }
                    for p in vpn0..vpn0 + npages {
                        self.model.remove(&p);
                    }
                }
            }
            Op::Protect { region, page, npages, flags } => {
                let (vpn0, left) = self.pick(region, page);
                let npages = npages.min(left);
                let expect = self.whole_and_mapped(vpn0, npages);
                let flags = flags_of(flags);
                let r = self.mapper.protect(&mut self.mem, VirtAddr(vpn0 << 12), npages << 12, flags);
                assert_eq!(r.is_ok(), expect, "{r:?}");
                if let Ok(tok) = r {
                    if self.flush {
                        tok.flush(&mut self.tlb);
                    } else {
                        tok.ignore();
                    }
                    for p in vpn0..vpn0 + npages {
                        if let Some(e) = self.model.get_mut(&p) {
                            e.1 = flags;
                        }
                    }
                }
            }
            Op::Touch { region, page, write } => {
                // Mostly touch mapped pages: those are what a TLB caches.
                let keys: Vec<u64> = self.model.keys().copied().collect();
                for k in 0..8 {
                    let vpn = if page % 4 != 0 && !keys.is_empty() {
                        keys[(page as usize / 4 + k * 7) % keys.len()]
                    } else {
                        (REGIONS[region] >> 12) + page
                    };
                    let write = write && k % 2 == 0;
                    let access = if write { Access::Write } else { Access::Read };
                    let r = self.tlb.translate(&mut self.mem, &ctx, VirtAddr(vpn << 12), access);
                    if self.flush {
                        // With every flush done, the TLB answers as the model.
                        match (self.model.get(&vpn), r) {
                            (Some((pa, f, _)), Ok(t)) => {
                                assert_eq!(t.pa, PhysAddr(pa << 12));
                                assert!(!write || f.contains(PteFlags::RW));
                            }
                            (Some((_, f, _)), Err(e)) => {
                                let pf = e.page_fault().unwrap();
                                assert!(write && !f.contains(PteFlags::RW), "{e}");
                                assert_eq!(pf.reason, FaultReason::ReadOnly);
                            }
                            (None, r) => assert!(r.is_err()),
                        }
                    }
                }
            }
        }
    }

    fn check(&self) {
        let ctx = self.mapper.context();
        // Walker agrees with the model on every mapped page.
        for (&vpn, &(pa, flags, size)) in &self.model {
            let va = VirtAddr(vpn << 12).canonicalize(false);
            let t = translate(&self.mem, &ctx, va, Access::Read).unwrap();
            assert_eq!(t.pa, PhysAddr(pa << 12), "at {va}");
            assert_eq!(t.size, size);
            assert_eq!(t.flags & CMP_MASK, flags, "at {va}");
        }
        // The iterator yields exactly the model.
        let mut seen = Model::new();
        for m in self.mapper.mappings(&self.mem) {
            let m = m.unwrap();
            let vpn0 = (m.va.0 >> 12) & 0xf_ffff_ffff_ffff;
            for i in 0..m.size.bytes() / PAGE_SIZE {
                seen.insert(vpn0 + i, (m.pa.0 / PAGE_SIZE + i, m.flags & CMP_MASK, m.size));
            }
        }
        assert_eq!(seen, self.model);
        // The TLB: no stale entry when every flush was done; otherwise the
        // detector flags exactly the entries that disagree with the model.
        let stale: Vec<u64> = self.tlb.stale_entries(&self.mem, &ctx).iter().map(|s| s.entry.va(false).0).collect();
        if self.flush {
            assert!(stale.is_empty(), "stale after flushes: {stale:x?}");
        } else {
            for e in self.tlb.entries() {
                let vpn = (e.va(false).0 >> 12) & 0xf_ffff_ffff_ffff;
                let agrees = self.model.get(&vpn).is_some_and(|&(pa, f, s)| {
                    s == e.size
                        && PhysAddr(pa << 12) == e.frame
                        && (f.0 & !PteFlags::GLOBAL.0) == (e.flags & CMP_MASK).0 & !PteFlags::GLOBAL.0
                        && (f.contains(PteFlags::GLOBAL) == e.is_global())
                });
                // D cached but clear in memory is stale too (the next write
                // would not set it).
                let dirty_ok = !e.flags.contains(PteFlags::DIRTY)
                    || walk(&self.mem, &ctx, e.va(false)).is_ok_and(|t| t.leaf.is_dirty());
                let agrees = agrees && dirty_ok;
                assert_eq!(stale.contains(&e.va(false).0), !agrees, "entry {e:x?}");
            }
        }
    }
}

fn run(ops: &[Op], flush: bool) {
    let mut w = World::new(flush);
    for op in ops {
        w.apply(op);
        w.check();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn mapper_matches_model_with_flushes(ops in proptest::collection::vec(op(), 1..50)) {
        run(&ops, true);
    }

    #[test]
    fn stale_detector_matches_model_without_flushes(ops in proptest::collection::vec(op(), 1..50)) {
        run(&ops, false);
    }
}
