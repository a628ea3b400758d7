//! Walker, TLB-model and mapper costs, natively on the host.
//!
//! - `tlb_hit`: `Tlb::translate` served from a cached entry (target <= 5 ns);
//! - `walk_4level` / `walk_2m`: a full `translate` (target <= 40 ns), next to
//!   `raw_4_reads`, four dependent `PhysMem::read_u64` calls: the memory
//!   work a walk cannot avoid, its physical limit here;
//! - `map_unmap_4k`: map then unmap one 4 KiB page with mm-core's `Mapper`
//!   and with the `x86_64` crate's `OffsetPageTable`, both on a 4 MiB
//!   page-aligned buffer standing for physical memory, tables already
//!   present (steady state).
//!
//! Only the physical address is kept (`black_box`ed), as a CPU's
//! consumer would; a fault is an error path and not measured.
//!
//! Run: `cargo bench -p mm-core --bench walker`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mm_core::addr::{PageSize, PhysAddr, VirtAddr, PAGE_SIZE};
use mm_core::mem::{MemError, PhysMem, VecMem};
use mm_core::paging::{translate, Access, CpuContext, FrameAllocator, MapRequest, Mapper, PteFlags, SizeRequest, Tlb};
use std::time::Duration;

const MEM: usize = 4 << 20;

struct Bump(u64);

impl FrameAllocator for Bump {
    fn allocate_frame(&mut self) -> Option<PhysAddr> {
        let f = PhysAddr(self.0);
        self.0 += PAGE_SIZE;
        (self.0 <= MEM as u64).then_some(f)
    }
    fn deallocate_frame(&mut self, _frame: PhysAddr) {}
}

const RW: PteFlags = PteFlags(PteFlags::PRESENT.0 | PteFlags::RW.0);
const BASE: u64 = 0xffff_c900_0000_0000;

/// 64 4 KiB pages and one 2 MiB page mapped under a fresh root.
fn tables() -> (VecMem, Mapper, CpuContext) {
    let mut mem = VecMem::new(MEM);
    let mut frames = Bump(PAGE_SIZE);
    let m = Mapper::create(&mut mem, &mut frames, false, 46, false).unwrap();
    m.map(
        &mut mem,
        &mut frames,
        MapRequest {
            va: VirtAddr(BASE),
            pa: PhysAddr(0x10_0000),
            len: 64 * PAGE_SIZE,
            size: SizeRequest::Fixed(PageSize::Size4K),
            flags: RW,
        },
    )
    .unwrap()
    .ignore();
    m.map(
        &mut mem,
        &mut frames,
        MapRequest {
            va: VirtAddr(BASE + (1 << 30)),
            pa: PhysAddr(0x20_0000),
            len: 2 << 20,
            size: SizeRequest::Best,
            flags: RW,
        },
    )
    .unwrap()
    .ignore();
    let ctx = m.context();
    (mem, m, ctx)
}

fn bench_walk(c: &mut Criterion) {
    let (mut mem, _, ctx) = tables();
    let mut g = c.benchmark_group("walker");

    let mut tlb = Tlb::new();
    for i in 0..64 {
        tlb.translate(&mut mem, &ctx, VirtAddr(BASE + i * PAGE_SIZE), Access::Read).unwrap();
    }
    let mut i = 0u64;
    g.bench_function("tlb_hit", |b| {
        b.iter(|| {
            i = (i + 1) & 63;
            let va = VirtAddr(BASE + i * PAGE_SIZE + 0x10);
            black_box(tlb.translate(&mut mem, black_box(&ctx), va, Access::Read).map(|t| t.pa).ok())
        })
    });
    assert_eq!(tlb.stats().misses, 64, "every benchmarked lookup must hit");

    let mut i = 0u64;
    g.bench_function("walk_4level", |b| {
        b.iter(|| {
            i = (i + 1) & 63;
            let va = VirtAddr(BASE + i * PAGE_SIZE + 0x10);
            black_box(translate(&mem, black_box(&ctx), va, Access::Read).map(|t| t.pa).ok())
        })
    });
    g.bench_function("walk_2m", |b| {
        b.iter(|| {
            let va = VirtAddr(BASE + (1 << 30) + 0x1234);
            black_box(translate(&mem, black_box(&ctx), va, Access::Read).map(|t| t.pa).ok())
        })
    });
    // The same four entry reads with none of the rules.
    let root = ctx.root();
    let mut i = 0u64;
    g.bench_function("raw_4_reads", |b| {
        b.iter(|| {
            i = (i + 1) & 63;
            let va = BASE + i * PAGE_SIZE;
            let mut t = root.0;
            for shift in [39, 30, 21, 12] {
                let e = mem.read_u64(PhysAddr(t + 8 * ((va >> shift) & 511))).unwrap_or(0);
                t = e & 0x000f_ffff_ffff_f000;
            }
            black_box(t)
        })
    });
    g.finish();
}

/// Page-aligned host memory standing for guest-physical memory from 0.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; 4096]);

struct PageMem(Vec<Page>);

impl PageMem {
    fn new() -> Self {
        PageMem(vec![Page([0; 4096]); MEM / 4096])
    }
}

impl PhysMem for PageMem {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let (p, o) = ((pa.0 / 4096) as usize, (pa.0 % 4096) as usize);
        let src = self.0.get(p).and_then(|pg| pg.0.get(o..o + buf.len())).ok_or(MemError::OutOfRange(pa))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, pa: PhysAddr, buf: &[u8]) -> Result<(), MemError> {
        let (p, o) = ((pa.0 / 4096) as usize, (pa.0 % 4096) as usize);
        let dst = self.0.get_mut(p).and_then(|pg| pg.0.get_mut(o..o + buf.len())).ok_or(MemError::OutOfRange(pa))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    // Entry-sized accesses straight to the page, as the guest's
    // `KernelPhys` does them (one bounds check, no byte copy): the walks
    // and edits do nothing else.
    fn read_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        let (p, o) = ((pa.0 / 4096) as usize, (pa.0 % 4096) as usize);
        let b = self.0.get(p).and_then(|pg| pg.0.get(o..o + 8)).ok_or(MemError::OutOfRange(pa))?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| MemError::OutOfRange(pa))?))
    }
    fn write_u64(&mut self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        let (p, o) = ((pa.0 / 4096) as usize, (pa.0 % 4096) as usize);
        let b = self.0.get_mut(p).and_then(|pg| pg.0.get_mut(o..o + 8)).ok_or(MemError::OutOfRange(pa))?;
        b.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
}

struct XBump(u64);

// SAFETY: hands out each frame of the benchmark buffer at most once.
unsafe impl x86_64::structures::paging::FrameAllocator<x86_64::structures::paging::Size4KiB> for XBump {
    fn allocate_frame(
        &mut self,
    ) -> Option<x86_64::structures::paging::PhysFrame<x86_64::structures::paging::Size4KiB>> {
        let f = x86_64::PhysAddr::new(self.0);
        self.0 += 4096;
        (self.0 <= MEM as u64).then(|| x86_64::structures::paging::PhysFrame::containing_address(f))
    }
}

fn bench_map(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_unmap_4k");

    {
        let mut mem = PageMem::new();
        let mut frames = Bump(PAGE_SIZE);
        let m = Mapper::create(&mut mem, &mut frames, false, 46, false).unwrap();
        let va = VirtAddr(BASE);
        // Build the path once so the loop measures the leaf edits only.
        m.map(
            &mut mem,
            &mut frames,
            MapRequest { va, pa: PhysAddr(0x30_0000), len: PAGE_SIZE, size: SizeRequest::Best, flags: RW },
        )
        .unwrap()
        .ignore();
        m.unmap(&mut mem, &mut frames, va, PAGE_SIZE, false).unwrap().ignore();
        g.bench_function("mm_core_mapper", |b| {
            b.iter(|| {
                m.map(
                    &mut mem,
                    &mut frames,
                    MapRequest { va, pa: PhysAddr(0x30_0000), len: PAGE_SIZE, size: SizeRequest::Best, flags: RW },
                )
                .unwrap()
                .ignore();
                m.unmap(&mut mem, &mut frames, black_box(va), PAGE_SIZE, false).unwrap().ignore();
            })
        });
    }

    {
        use x86_64::structures::paging::{
            Mapper as _, OffsetPageTable, Page as XPage, PageTable, PageTableFlags, PhysFrame, Size4KiB,
        };
        let mut buf = PageMem::new();
        let base = buf.0.as_mut_ptr() as *mut u8;
        // SAFETY: the whole buffer is page-aligned, zeroed and used only
        // through `table` while it lives; page 1 is the root, frames from
        // page 2 on are handed out once by XBump; offset + PA stays inside
        // the buffer for every frame XBump returns.
        let mut table = unsafe {
            OffsetPageTable::new(&mut *(base.add(4096) as *mut PageTable), x86_64::VirtAddr::new(base as u64))
        };
        let mut frames = XBump(2 * 4096);
        let page: XPage<Size4KiB> = XPage::containing_address(x86_64::VirtAddr::new(BASE));
        let frame = PhysFrame::containing_address(x86_64::PhysAddr::new(0x30_0000));
        let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
        g.bench_function("x86_64_offset_page_table", |b| {
            b.iter(|| {
                // SAFETY: maps a frame no Rust object aliases; the mapping
                // is never dereferenced (these tables are not in use).
                unsafe { table.map_to(page, frame, flags, &mut frames) }.unwrap().ignore();
                table.unmap(black_box(page)).unwrap().1.ignore();
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_walk, bench_map
}
criterion_main!(benches);
