//! A self-checking workload over the buddy, slab and vmalloc allocators
//! together, driven by raw bytes: the fuzz target (`fuzz/fuzz_targets/
//! alloc.rs`) feeds it libFuzzer's input, a property test feeds it random
//! bytes on every `cargo test`, and the guest may run it as a self-test.
//!
//! Every step is checked against a reference model (maps of what is
//! allocated) and the allocators' own invariants: blocks and objects never
//! handed out twice or overlapping, every frame accounted for (free + pcp +
//! allocated = managed), bad frees rejected, vmalloc areas disjoint with
//! their guard pages, and at the end everything merges back to the
//! initial buddyinfo.

use super::{SlabAllocator, SlabFlags, KMALLOC_MAX_CACHE_SIZE};
use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::buddy::{BuddyAllocator, Gfp, Page, WmarkPolicy, ZoneType, NR_ORDERS};
use crate::mem::{PhysMem, VecMem};
use crate::vmalloc::VmapAllocator;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// Pages of memory the workload runs on (4 MiB).
const PAGES: u64 = 1024;
/// Operations decoded from one input at most.
const MAX_OPS: usize = 2000;
const NR_CPUS: usize = 2;
const VMALLOC_START: u64 = crate::abi::layout::VMALLOC_START;
const VMALLOC_PAGES: u64 = 4096;

/// What a run did, for the caller's curiosity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Operations executed.
    pub ops: usize,
    /// Allocations that succeeded (pages, objects, areas).
    pub allocs: usize,
    /// Bad frees attempted (all rejected, or the run fails).
    pub bad_frees: usize,
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
}

fn fail<T>(what: String) -> Result<T, String> {
    Err(what)
}

/// One step of the workload. `cpu` picks the CPU (modulo the harness's
/// two); `arg` is the step's parameter, read as each variant says. The
/// fuzz target builds these with `arbitrary`; [`run`] decodes them from
/// raw bytes, three per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum Op {
    /// `alloc_pages`: order `arg % 11`, watermark policy `(arg >> 8) % 3`.
    AllocPages { cpu: u8, arg: u16 },
    /// `free_pages` of the live block `arg` (modulo their number).
    FreePages { cpu: u8, arg: u16 },
    /// `kmalloc` of `1 + arg % 20000` bytes.
    Kmalloc { cpu: u8, arg: u16 },
    /// `kfree` of the live object `arg`.
    Kfree { cpu: u8, arg: u16 },
    /// `vmalloc` of `1 + arg % 32` pages aligned to `4 KiB << ((arg >> 8) % 5)`.
    Vmalloc { cpu: u8, arg: u16 },
    /// `vfree` of the live area `arg`.
    Vfree { cpu: u8, arg: u16 },
    /// A free of something not live (see `bad_free`), which must fail.
    BadFree { cpu: u8, arg: u16 },
    /// `arg % 3`: drain the pcp lists, flush the CPU's slab, shrink all.
    Drain { cpu: u8, arg: u16 },
}

/// Decodes `data` into alloc/free operations and runs them, checking after
/// every step. The first byte picks the slab debug flags. Returns the
/// first violated invariant as an error.
pub fn run(data: &[u8]) -> Result<Summary, String> {
    let mut input = Bytes(data);
    let mode = input.u8().unwrap_or(0);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        let Some(code) = input.u8() else { break };
        let arg = input.u16().unwrap_or(0);
        let cpu = code >> 4;
        ops.push(match code % 8 {
            0 => Op::AllocPages { cpu, arg },
            1 => Op::FreePages { cpu, arg },
            2 => Op::Kmalloc { cpu, arg },
            3 => Op::Kfree { cpu, arg },
            4 => Op::Vmalloc { cpu, arg },
            5 => Op::Vfree { cpu, arg },
            6 => Op::BadFree { cpu, arg },
            _ => Op::Drain { cpu, arg },
        });
    }
    run_ops(mode, &ops)
}

/// The fuzz target's body: `data` read with `arbitrary` as a mode byte
/// and a sequence of [`Op`]s, then [`run_ops`]. Input `arbitrary` cannot
/// read is an empty run.
#[cfg(any(test, feature = "arbitrary"))]
pub fn run_arbitrary(data: &[u8]) -> Result<Summary, String> {
    let mut u = arbitrary::Unstructured::new(data);
    let Ok(mode) = u.arbitrary::<u8>() else { return Ok(Summary::default()) };
    let ops: Vec<Op> = match u.arbitrary_iter::<Op>() {
        Ok(it) => it.map_while(Result::ok).take(MAX_OPS).collect(),
        Err(_) => Vec::new(),
    };
    run_ops(mode, &ops)
}

/// Runs `ops` (at most [`MAX_OPS`] of them) on fresh allocators, checking
/// every step against the model; `mode % 4` picks the slab debug flags
/// (none, none, red zones, full debug).
pub fn run_ops(mode: u8, ops: &[Op]) -> Result<Summary, String> {
    let flags = match mode % 4 {
        0 | 1 => SlabFlags::NONE,
        2 => SlabFlags::RED_ZONE,
        _ => SlabFlags::DEBUG,
    };
    let mut map = vec![Page::default(); PAGES as usize];
    let mut mem = VecMem::new((PAGES * PAGE_SIZE) as usize);
    let mut buddy = BuddyAllocator::new(&mut map, 0, NR_CPUS).map_err(|e| format!("{e}"))?;
    buddy.free_range(1, PAGES).map_err(|e| format!("{e}"))?;
    buddy.drain_all_pages();
    let initial: Vec<[u64; NR_ORDERS]> = ZoneType::ALL.iter().map(|&z| buddy.free_blocks(z)).collect();
    let mut slab = SlabAllocator::new(NR_CPUS);
    slab.create_kmalloc_caches(flags).map_err(|e| format!("{e}"))?;
    let mut vmap = VmapAllocator::new(VirtAddr(VMALLOC_START), VirtAddr(VMALLOC_START + VMALLOC_PAGES * PAGE_SIZE))
        .map_err(|e| format!("{e}"))?;

    let mut pages: BTreeMap<u64, u8> = BTreeMap::new(); // pfn -> order
    let mut objects: BTreeMap<u64, u64> = BTreeMap::new(); // addr -> size
    let mut areas: BTreeMap<u64, u64> = BTreeMap::new(); // start -> reserved
    let mut sum = Summary::default();

    for &op in ops.iter().take(MAX_OPS) {
        let (Op::AllocPages { cpu, arg }
        | Op::FreePages { cpu, arg }
        | Op::Kmalloc { cpu, arg }
        | Op::Kfree { cpu, arg }
        | Op::Vmalloc { cpu, arg }
        | Op::Vfree { cpu, arg }
        | Op::BadFree { cpu, arg }
        | Op::Drain { cpu, arg }) = op;
        let cpu = cpu as usize % NR_CPUS;
        sum.ops += 1;
        match op {
            Op::AllocPages { .. } => {
                let order = (arg % 11) as u8;
                let wmark =
                    [WmarkPolicy::Normal, WmarkPolicy::Atomic, WmarkPolicy::NoWatermarks][(arg >> 8) as usize % 3];
                let gfp = Gfp { zone: ZoneType::Normal, wmark, ..crate::buddy::GFP_KERNEL };
                if let Ok(pfn) = buddy.alloc_pages(cpu, order, gfp) {
                    if pfn % (1 << order) != 0 {
                        return fail(format!("block {pfn:#x} misaligned for order {order:#x}"));
                    }
                    check_disjoint(&pages, pfn, 1 << order, |o| 1u64 << o)?;
                    pages.insert(pfn, order);
                    sum.allocs += 1;
                }
            }
            Op::FreePages { .. } => {
                if let Some((&pfn, &order)) = nth(&pages, arg) {
                    buddy.free_pages(cpu, pfn, order).map_err(|e| format!("free of a live block: {e}"))?;
                    pages.remove(&pfn);
                }
            }
            Op::Kmalloc { .. } => {
                let size = 1 + (arg as u64 % 20_000);
                if let Ok(a) = slab.kmalloc(&mut buddy, &mut mem, cpu, size, crate::buddy::GFP_KERNEL) {
                    check_disjoint(&objects, a.0, size, |s| s)?;
                    // Stamp the object so a double hand-out shows as a
                    // clobbered stamp when it is freed.
                    mem.write_u64(a, stamp(a.0)).map_err(|e| format!("{e}"))?;
                    objects.insert(a.0, size);
                    sum.allocs += 1;
                }
            }
            Op::Kfree { .. } => {
                if let Some((&a, _)) = nth(&objects, arg) {
                    if mem.read_u64(PhysAddr(a)).map_err(|e| format!("{e}"))? != stamp(a) {
                        return fail(format!("object {a:#x} was overwritten while allocated"));
                    }
                    slab.kfree(&mut buddy, &mut mem, cpu, PhysAddr(a))
                        .map_err(|e| format!("kfree of a live object: {e}"))?;
                    objects.remove(&a);
                }
            }
            Op::Vmalloc { .. } => {
                let n = 1 + (arg as u64 % 32);
                let align = PAGE_SIZE << ((arg >> 8) % 5);
                if let Ok(v) = vmap.alloc(n * PAGE_SIZE, align, "harness") {
                    if v.0 % align != 0 {
                        return fail(format!("area {:#x} misaligned", v.0));
                    }
                    check_disjoint(&areas, v.0, (n + 1) * PAGE_SIZE, |s| s)?;
                    areas.insert(v.0, (n + 1) * PAGE_SIZE);
                    sum.allocs += 1;
                }
            }
            Op::Vfree { .. } => {
                if let Some((&a, &r)) = nth(&areas, arg) {
                    let area = vmap.free(VirtAddr(a)).map_err(|e| format!("vfree of a live area: {e}"))?;
                    if area.reserved != r {
                        return fail(format!("area {a:#x} had {:#x} bytes, expected {r:#x}", area.reserved));
                    }
                    areas.remove(&a);
                }
            }
            Op::BadFree { .. } => {
                sum.bad_frees += 1;
                let world = World {
                    buddy: &mut buddy,
                    slab: &mut slab,
                    mem: &mut mem,
                    vmap: &mut vmap,
                    pages: &pages,
                    objects: &objects,
                };
                bad_free(world, flags, cpu, arg)?;
            }
            Op::Drain { .. } => match arg % 3 {
                0 => buddy.drain_pages(cpu).map_err(|e| format!("{e}"))?,
                1 => slab.flush_cpu(&mut buddy, &mut mem, cpu).map_err(|e| format!("{e}"))?,
                _ => slab.shrink_all(&mut buddy, &mut mem).map_err(|e| format!("{e}"))?,
            },
        }
        check(&buddy, &slab, &vmap, &pages, &objects, &areas)?;
    }

    for (&pfn, &order) in &pages {
        buddy.free_pages(0, pfn, order).map_err(|e| format!("final free: {e}"))?;
    }
    for &a in objects.keys() {
        slab.kfree(&mut buddy, &mut mem, 0, PhysAddr(a)).map_err(|e| format!("final kfree: {e}"))?;
    }
    for &a in areas.keys() {
        vmap.free(VirtAddr(a)).map_err(|e| format!("final vfree: {e}"))?;
    }
    slab.shrink_all(&mut buddy, &mut mem).map_err(|e| format!("{e}"))?;
    buddy.drain_all_pages();
    check(&buddy, &slab, &vmap, &BTreeMap::new(), &BTreeMap::new(), &BTreeMap::new())?;
    let after: Vec<[u64; NR_ORDERS]> = ZoneType::ALL.iter().map(|&z| buddy.free_blocks(z)).collect();
    if after != initial {
        return fail(format!("not merged back after freeing everything: {after:?} != {initial:?}"));
    }
    if vmap.free_ranges() != [(VMALLOC_START, VMALLOC_PAGES * PAGE_SIZE)] {
        return fail(String::from("vmalloc window not one free range at the end"));
    }
    Ok(sum)
}

fn stamp(addr: u64) -> u64 {
    addr.rotate_left(17) ^ 0x5eed_f00d_dead_beef
}

fn nth<V>(m: &BTreeMap<u64, V>, arg: u16) -> Option<(&u64, &V)> {
    if m.is_empty() {
        return None;
    }
    m.iter().nth(arg as usize % m.len())
}

/// `[start, start+len)` overlaps nothing in `m` (whose values give lengths
/// through `len_of`).
fn check_disjoint<V: Copy>(
    m: &BTreeMap<u64, V>,
    start: u64,
    len: u64,
    len_of: impl Fn(V) -> u64,
) -> Result<(), String> {
    if let Some((&s, &v)) = m.range(..=start).next_back() {
        if s + len_of(v) > start {
            return fail(format!("{start:#x} handed out while {s:#x} is live"));
        }
    }
    if let Some((&s, _)) = m.range(start..).next() {
        if start + len > s {
            return fail(format!("{start:#x}+{len:#x} overlaps live {s:#x}"));
        }
    }
    Ok(())
}

/// The allocators under test and what the harness knows is live.
struct World<'w, 'b> {
    buddy: &'w mut BuddyAllocator<'b>,
    slab: &'w mut SlabAllocator,
    mem: &'w mut VecMem,
    vmap: &'w mut VmapAllocator,
    /// Live buddy blocks: pfn -> order.
    pages: &'w BTreeMap<u64, u8>,
    /// Live slab objects: address -> size.
    objects: &'w BTreeMap<u64, u64>,
}

/// Frees something that is not live (chosen by `arg`) and fails if an
/// allocator accepts it.
fn bad_free(w: World<'_, '_>, flags: SlabFlags, cpu: usize, arg: u16) -> Result<(), String> {
    let World { buddy, slab, mem, vmap, pages, objects } = w;
    match arg % 4 {
        0 => {
            // A pfn that is not a live block head (or with the wrong order).
            let pfn = (arg as u64 >> 2) % (PAGES + 16);
            let order = ((arg >> 12) % 4) as u8;
            let live_large = objects.get(&(pfn * PAGE_SIZE)).is_some_and(|&s| s > KMALLOC_MAX_CACHE_SIZE);
            if pages.get(&pfn) != Some(&order) && !live_large && buddy.free_pages(cpu, pfn, order).is_ok() {
                return fail(format!("free_pages accepted pfn {pfn:#x} order {order:#x}"));
            }
        }
        1 => {
            // An interior pointer of a live object.
            if let Some((&a, &size)) = nth(objects, arg >> 2) {
                let delta = 1 + (arg as u64 >> 8) % size.max(2);
                if delta < size && slab.kfree(buddy, mem, cpu, PhysAddr(a + delta)).is_ok() {
                    return fail(format!("kfree accepted interior pointer {:#x}", a + delta));
                }
            }
        }
        2 => {
            // Any address: with red zones every non-object is detectable.
            if flags.contains(SlabFlags::RED_ZONE) {
                let a = ((arg as u64) * 8 * 61) % (PAGES * PAGE_SIZE + 4096);
                if !objects.contains_key(&a) && slab.kfree(buddy, mem, cpu, PhysAddr(a)).is_ok() {
                    return fail(format!("kfree accepted {a:#x}"));
                }
            }
        }
        _ => {
            let a = VMALLOC_START + (arg as u64) * PAGE_SIZE / 4;
            let live = vmap.areas().any(|x| x.start.0 == a);
            if !live && vmap.free(VirtAddr(a)).is_ok() {
                return fail(format!("vfree accepted {a:#x}"));
            }
        }
    }
    Ok(())
}

fn check(
    buddy: &BuddyAllocator,
    slab: &SlabAllocator,
    vmap: &VmapAllocator,
    pages: &BTreeMap<u64, u8>,
    objects: &BTreeMap<u64, u64>,
    areas: &BTreeMap<u64, u64>,
) -> Result<(), String> {
    buddy.verify().map_err(|e| format!("{e}"))?;
    vmap.verify().map_err(String::from)?;
    let slab_pages: u64 = slab.caches().map(|(_, c)| c.nr_pages).sum();
    let large: u64 = objects
        .values()
        .filter(|&&s| s > KMALLOC_MAX_CACHE_SIZE)
        .map(|&s| s.div_ceil(PAGE_SIZE).next_power_of_two())
        .sum();
    let direct: u64 = pages.values().map(|&o| 1u64 << o).sum();
    let c = buddy.counts();
    if c.allocated != slab_pages + large + direct {
        return fail(format!(
            "frames unaccounted: allocated {:#x} != slab {slab_pages:#x} + large {large:#x} + pages {direct:#x}",
            c.allocated
        ));
    }
    let small = objects.values().filter(|&&s| s <= KMALLOC_MAX_CACHE_SIZE).count() as u64;
    let active: u64 = slab.caches().filter_map(|(id, _)| slab.info(buddy, id)).map(|i| i.active_objs).sum();
    if active != small {
        return fail(format!("slab reports {active:#x} objects in use, model {small:#x}"));
    }
    if vmap.areas().count() != areas.len() {
        return fail(String::from("vmalloc area count differs from the model"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_tiny_inputs() {
        assert_eq!(run(&[]).unwrap().ops, 0);
        run(&[3, 2, 0x10, 0, 3, 0, 0]).unwrap();
        // kmalloc(101), alloc_pages(order 0), vmalloc(4 pages), then a bad
        // free and the frees of all three.
        let s = run(&[0, 2, 100, 0, 0, 0, 0, 4, 3, 0, 6, 1, 0, 3, 0, 0, 1, 0, 0, 5, 0, 0]).unwrap();
        assert_eq!((s.ops, s.allocs, s.bad_frees), (7, 3, 1));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// The fuzz target's logic, run by CI on random inputs.
        #[test]
        fn fuzz_alloc_logic(data in proptest::collection::vec(any::<u8>(), 0..1200)) {
            if let Err(e) = run(&data) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
