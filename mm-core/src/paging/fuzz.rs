//! Hostile-table exercise shared by the cargo-fuzz target and the property
//! test CI runs: arbitrary bytes become physical memory, CR3, an address
//! and a CPU context, and every paging entry point runs over them.
//!
//! It panics only when paging code breaks one of its own promises (a panic
//! inside, or the mapping iterator disagreeing with the walker), which is
//! what a fuzzer reports.

use crate::addr::{Level, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::mem::{PhysMem, VecMem};
use crate::paging::mapper::{mappings, FrameAllocator, MapRequest, Mapper, SizeRequest};
use crate::paging::tlb::Tlb;
use crate::paging::walker::{translate, translate_update_ad, walk, walk_trace, Access, CpuContext, CpuVendor};
use crate::paging::PteFlags;

/// Memory size the exercise uses: four tables' worth, small enough that
/// random entries often point back into it.
pub const FUZZ_MEM: usize = 4 * PAGE_SIZE as usize;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let n = self.0.len().min(8);
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(b)
    }
}

struct Frames(u64);

impl FrameAllocator for Frames {
    fn allocate_frame(&mut self) -> Option<PhysAddr> {
        // Hands out frames inside and past the end of memory, so the
        // mapper meets both.
        let f = PhysAddr((self.0 % (FUZZ_MEM as u64 + 2 * PAGE_SIZE)) & !0xfff);
        self.0 = self.0.wrapping_add(PAGE_SIZE);
        Some(f)
    }
    fn deallocate_frame(&mut self, _frame: PhysAddr) {}
}

/// Runs the walker, the A/D-updating walker, the trace, the mapping
/// iterator, the TLB model and the mapper on tables built from `data`.
pub fn exercise(data: &[u8]) {
    let mut input = Bytes(data);
    let regs = input.u64();
    let va = VirtAddr(input.u64());
    let cr3 = input.u64() % (FUZZ_MEM as u64 + PAGE_SIZE);
    let pkru = input.u64() as u32;
    let ctx = CpuContext {
        cr3,
        wp: regs & 1 != 0,
        pge: regs & 2 != 0,
        pcide: regs & 4 != 0,
        smep: regs & 8 != 0,
        smap: regs & 16 != 0,
        pke: regs & 32 != 0,
        la57: regs & 64 != 0,
        nxe: regs & 128 != 0,
        ac: regs & 256 != 0,
        cpl: if regs & 512 != 0 { 3 } else { 0 },
        maxphyaddr: 32 + ((regs >> 10) % 21) as u8,
        pkru,
        gbpages: regs & (1 << 16) != 0,
        vendor: if regs & (1 << 17) != 0 { CpuVendor::Amd } else { CpuVendor::Intel },
    };
    let mut mem = VecMem::new(FUZZ_MEM);
    // Entries: raw words, many steered to point inside memory.
    let mut pa = 0u64;
    while pa < FUZZ_MEM as u64 && !input.0.is_empty() {
        let mut w = input.u64();
        if w & (1 << 62) == 0 {
            w = (w & !0x000f_ffff_ffff_f000) | (w & 0x3000);
        }
        let _ = mem.write_u64(PhysAddr(pa), w);
        // Sparse: skip ahead by a data-chosen stride.
        pa += 8 * (1 + (w >> 56) % 64);
    }

    for access in [Access::Read, Access::Write, Access::Execute, Access::ImplicitRead, Access::ImplicitWrite] {
        let t = translate(&mem, &ctx, va, access);
        if let Ok(t) = &t {
            assert_eq!(walk(&mem, &ctx, va).map(|w| w.pa), Ok(t.pa));
        }
        let mut m2 = mem.clone();
        let t2 = translate_update_ad(&mut m2, &ctx, va, access);
        assert_eq!(t.is_ok(), t2.is_ok());
    }
    let _ = walk_trace(&mem, &ctx, va);

    let mut tlb = Tlb::new();
    for access in [Access::Read, Access::Write, Access::Read] {
        let _ = tlb.translate(&mut mem, &ctx, va, access);
    }
    let _ = tlb.stale_entries(&mem, &ctx);

    for m in mappings(&mem, &ctx).budget(4096).flatten() {
        // The iterator and the walker read the same entries for m.va.
        let w = walk(&mem, &ctx, m.va).expect("iterator yielded a mapping the walker rejects");
        assert_eq!((w.pa, w.size, w.flags), (m.pa, m.size, m.flags));
    }

    let mapper = Mapper::from_context(&ctx);
    let mut frames = Frames(input.u64());
    let flags = PteFlags(input.u64() & PteFlags::ALL.0);
    let len = PAGE_SIZE * (1 + input.u64() % 4);
    let page = va.align_down(PAGE_SIZE);
    let size = [
        SizeRequest::Best,
        SizeRequest::Fixed(crate::addr::PageSize::Size4K),
        SizeRequest::Fixed(crate::addr::PageSize::Size2M),
    ][(regs >> 20) as usize % 3];
    let _ = mapper
        .map(&mut mem, &mut frames, MapRequest { va: page, pa: PhysAddr(pa & !0xfff), len, size, flags })
        .map(|f| f.ignore());
    let _ = mapper.protect(&mut mem, page, len, flags).map(|f| f.ignore());
    let _ = mapper.unmap(&mut mem, &mut frames, page, len, regs & (1 << 24) != 0).map(|f| f.ignore());
    let _ = mappings(&mem, &ctx).budget(4096).count();

    // The slot API: lookups and allocating walks stop after five reads;
    // the table lister is bounded by its budget.
    let _ = mapper.lookup(&mem, va);
    let level = [Level::Pte, Level::Pmd, Level::Pud][(regs >> 26) as usize % 3];
    if let Ok((slot, _)) = mapper.alloc_slot(&mut mem, &mut frames, page, level, regs & (1 << 25) != 0) {
        let _ = slot.read(&mem);
    }
    let _ = crate::paging::editor::tables(&mem, &ctx, None).budget(4096).count();
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn hostile_tables_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            super::exercise(&data);
        }
    }

    #[test]
    fn empty_and_short_inputs() {
        super::exercise(&[]);
        super::exercise(&[0xff; 7]);
        super::exercise(&[0x55; 4096]);
    }
}
