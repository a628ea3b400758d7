//! The process-side `break=WHAT` switches (the kernel-side ones are in
//! mm/sabotage.rs, which hands these names here): each runs the `cow`
//! program, and when its parent stops at the `cow-shared` checkpoint
//! (right after fork, every private page shared copy-on-write) the kernel
//! breaks one invariant of the address spaces, stops at the `sabotage`
//! checkpoint for the host's `--verify`, then repairs the damage so a run
//! without `--verify` goes on as if nothing happened.
//!
//! `cow-writable`  one copy-on-write-shared page of the parent is made
//!                 writable (the child would see the parent's writes)
//! `cross-map`     a private frame of another live process (a `sameva`
//!                 started for the purpose) is mapped into the parent,
//!                 without a reference (process isolation broken)
//! `refcount`      a user frame of the parent gains a reference no
//!                 mapping accounts for (a leak once both exit)
//! `pt-owner`      a page-table page of the parent loses its `PageTable`
//!                 owner in its page descriptor

use super::fault::{pte_alloc, user_pt};
use super::mm::{get_page, page_count, put_page, MmStruct, MM_GLOBALS};
use super::sched;
use crate::arch::cpu;
use crate::fmt::Dec;
use crate::kprintln;
use crate::mm::phys::direct_map;
use crate::mm::PAGES;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use mm_core::addr::PAGE_SHIFT;
use mm_core::buddy::PageOwner;
use mm_core::paging::entry::PTE_ADDR_MASK_MAX as ADDR_MASK;
use mm_core::paging::{LeafKinds, Pte, PteFlags, Slot};
use mm_core::vma::VmFlags;

/// The sabotage waiting for `cow-shared` (0: none), as its descriptor
/// code. An atomic rather than a `SpinLock`: it is read from the system-call
/// path while the mm and page allocator cells may be held.
static ARMED: AtomicU8 = AtomicU8::new(0);
/// Whether the armed sabotage broke something and stopped at `sabotage`.
static FIRED: AtomicBool = AtomicBool::new(false);

/// Where `cross-map` maps the other process's frame in the parent: far
/// from `cow`'s image (low) and its mmap area (top-down from near the
/// stack), and checked to be unmapped first.
const CROSS_MAP_VA: u64 = 0x5ab0_0000;

/// The sabotages this module knows, with their descriptor codes (the
/// kernel-side ones use 1 and 2).
const KINDS: [(&str, u8); 4] = [("cow-writable", 3), ("cross-map", 4), ("refcount", 5), ("pt-owner", 6)];

/// The names, for error messages.
pub const NAMES: &str = "cow-writable, cross-map, refcount, pt-owner";

/// Runs sabotage `what`: `None` if the name is not one of [`KINDS`];
/// otherwise whether it fired and `cow` still exited with status 0.
pub fn run(what: &str) -> Option<bool> {
    let code = KINDS.iter().find(|(n, _)| *n == what)?.1;
    ARMED.store(code, Ordering::Relaxed);
    FIRED.store(false, Ordering::Relaxed);
    // The victim runs first (it is first on the run queue), maps its page
    // and yields: it is alive, with private frames, when `cow` forks.
    let victim = if what == "cross-map" { super::spawn("sameva", 0x5ab0).ok() } else { None };
    let status = super::run("cow", 8);
    if let Some(pid) = victim {
        let _ = sched::kernel_wait(pid);
    }
    ARMED.store(0, Ordering::Relaxed);
    // Leave nothing behind for switches that follow (the process
    // self-test's leak check counts from an idle kernel).
    super::report::clear();
    sched::shrink_idle();
    let fired = FIRED.load(Ordering::Relaxed);
    if !fired {
        kprintln!("sabotage: {} did not fire at 'cow-shared'", what);
    }
    Some(fired && status == Some(0))
}

/// Called after every `SYS_CHECKPOINT`: at `cow-shared`, with a sabotage
/// armed, breaks it, stops at `sabotage`, and repairs it.
pub fn after_checkpoint(name: &str) {
    if name != "cow-shared" {
        return;
    }
    let code = ARMED.swap(0, Ordering::Relaxed);
    if code == 0 {
        return;
    }
    let Some(mm) = sched::current_mm() else { return };
    let undo = match code {
        3 => mm.with(cow_writable),
        4 => cross_map(&mm),
        5 => mm.with(refcount),
        _ => mm.with(pt_owner),
    };
    let Some(undo) = undo else {
        kprintln!("sabotage: nothing to break in this address space");
        return;
    };
    FIRED.store(true, Ordering::Relaxed);
    crate::mm::descriptor::set_sabotage(code as u32);
    crate::checkpoint::checkpoint("sabotage");
    crate::mm::descriptor::set_sabotage(0);
    repair(undo);
}

/// What to put back after the `sabotage` checkpoint.
#[derive(Clone, Copy)]
enum Undo {
    /// Clear RW again in this PTE.
    ReadOnly(Slot, u64),
    /// Clear this PTE.
    Unmap(Slot, u64),
    /// Drop the extra reference on this frame.
    Put(u64),
    /// Give this table page its owner back.
    Owner(u64),
}

fn repair(undo: Undo) {
    match undo {
        Undo::ReadOnly(slot, va) => {
            let mut phys = direct_map();
            if let Ok(e) = slot.read(&phys) {
                let _ = slot.write(&mut phys, e.without(PteFlags::RW));
            }
            cpu::invlpg(va);
        }
        Undo::Unmap(slot, va) => {
            let _ = slot.write(&mut direct_map(), Pte::NONE);
            cpu::invlpg(va);
        }
        Undo::Put(pa) => PAGES.with(|p| put_page(p, MM_GLOBALS.with(|g| g.zero_pa), pa)),
        Undo::Owner(pfn) => {
            let _ = PAGES.with(|p| p.buddy.set_owner(pfn, PageOwner::PageTable));
        }
    }
}

/// The first present leaf of a private writable VMA whose frame is shared
/// (refcount > 1, not the zero page): (va, slot, pte).
fn shared_private_leaf(mm: &MmStruct) -> Option<(u64, Slot, u64)> {
    let zero = MM_GLOBALS.with(|g| g.zero_pa);
    let mut found = None;
    for v in mm.vmas.iter().filter(|v| v.flags.contains(VmFlags::WRITE) && !v.flags.contains(VmFlags::SHARED)) {
        PAGES.with(|p| {
            let _ = user_pt(mm.pgd).for_each_leaf(&mut direct_map(), v.start..v.end, LeafKinds::Present, |_, l| {
                let pa = l.entry.0 & ADDR_MASK;
                if pa != zero && page_count(p, pa) > 1 {
                    found = Some((l.va.0, l.slot, l.entry.0));
                    return false;
                }
                true
            });
        });
        if found.is_some() {
            break;
        }
    }
    found
}

fn cow_writable(mm: &mut MmStruct) -> Option<Undo> {
    let (va, slot, pte) = shared_private_leaf(mm)?;
    slot.write(&mut direct_map(), Pte(pte | PteFlags::RW.0)).ok()?;
    cpu::invlpg(va);
    kprintln!("sabotage: {:#x} (frame {:#x}) is writable while shared copy-on-write", va, pte & ADDR_MASK);
    Some(Undo::ReadOnly(slot, va))
}

fn refcount(mm: &mut MmStruct) -> Option<Undo> {
    let (va, _, pte) = shared_private_leaf(mm)?;
    let pa = pte & ADDR_MASK;
    PAGES.with(|p| get_page(p, MM_GLOBALS.with(|g| g.zero_pa), pa));
    let n = PAGES.with(|p| page_count(p, pa));
    kprintln!("sabotage: frame {:#x} (at {:#x}) has refcount {} with one mapping fewer", pa, va, Dec(n as u64));
    Some(Undo::Put(pa))
}

fn pt_owner(mm: &mut MmStruct) -> Option<Undo> {
    let (va, slot, _) = shared_private_leaf(mm)?;
    let pfn = slot.table().0 >> PAGE_SHIFT;
    let was = PAGES.with(|p| p.buddy.page(pfn).map(|pg| pg.owner));
    if was != Some(PageOwner::PageTable as u8) {
        return None;
    }
    PAGES.with(|p| p.buddy.set_owner(pfn, PageOwner::Unknown)).ok()?;
    kprintln!("sabotage: the page table mapping {:#x} (pfn {:#x}) is no longer owned PageTable", va, pfn);
    Some(Undo::Owner(pfn))
}

fn cross_map(mm: &sched::MmRef) -> Option<Undo> {
    let me = sched::current_pid();
    let zero = MM_GLOBALS.with(|g| g.zero_pa);
    // Any other live process's private frame (refcount 1, not shared, not
    // the zero page, whose count stays 1 however many map it).
    let (pid, pa) = sched::other_mms(me).into_iter().find_map(|(pid, other)| {
        let pgd = other.try_with(|o| o.pgd)?;
        let mut found = None;
        PAGES.with(|p| {
            let shared = mm_core::descriptor::PTE_MAP_SHARED.0;
            let range = 0..super::mm::TASK_SIZE;
            let _ = user_pt(pgd).for_each_leaf(&mut direct_map(), range, LeafKinds::Present, |_, l| {
                let pa = l.entry.0 & ADDR_MASK;
                if pa != zero && l.entry.0 & shared == 0 && page_count(p, pa) == 1 {
                    found = Some(pa);
                    return false;
                }
                true
            });
        });
        found.map(|pa| (pid, pa))
    })?;
    mm.with(|m| {
        if m.vmas.find_intersection(CROSS_MAP_VA, CROSS_MAP_VA + 4096).is_some() {
            return None;
        }
        let mut phys = direct_map();
        let (slot, e) = PAGES.with(|p| pte_alloc(p, &mut phys, m, CROSS_MAP_VA))?;
        if e.is_present() {
            return None;
        }
        // Read-only: isolation, not copy-on-write, is what this breaks.
        let flags = PteFlags::PRESENT.union(PteFlags::USER).union(PteFlags::NX);
        slot.write(&mut phys, Pte(pa | flags.0)).ok()?;
        cpu::invlpg(CROSS_MAP_VA);
        kprintln!(
            "sabotage: pid {}'s private frame {:#x} is mapped at {:#x} in pid {}",
            Dec(pid),
            pa,
            CROSS_MAP_VA,
            Dec(me)
        );
        Some(Undo::Unmap(slot, CROSS_MAP_VA))
    })
}
