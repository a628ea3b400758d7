//! Transparent huge pages on a process's address space (Linux's
//! mm/huge_memory.c and mm/khugepaged.c, the page-table side; the mode,
//! the huge zero page, allocation and counters are mm/huge_memory.rs):
//! the huge anonymous fault, the huge zero page for read faults, write
//! faults on a huge PMD (reuse, or split and let the 4 KiB path copy, as
//! Linux's `do_huge_pmd_wp_page`), `split_huge_pmd`, fork and zap of PMD
//! leaves, `madvise(MADV_HUGEPAGE/NOHUGEPAGE)` and the collapse of
//! populated 4 KiB ranges (khugepaged's `collapse_huge_page`).

use super::fault::{user_pt, FaultError, PtFrames};
use super::mm::{get_page, leaf_flags, page_count, put_page, MmStruct, MM_GLOBALS};
use crate::arch::cpu;
use crate::mm::huge_memory::{self as hm, HPAGE_PMD_NR, HPAGE_PMD_SIZE};
use crate::mm::phys::{copy_page, direct_map};
use crate::mm::vmstat::{count, Event};
use crate::mm::{PageAlloc, PAGES};
use mm_core::addr::{Level, PageSize, PhysAddr, VirtAddr, PAGE_SHIFT, PAGE_SIZE};
use mm_core::paging::{LeafKinds, Pte, PteFlags, Slot};
use mm_core::vma::{VmFlags, Vma};

/// The frame bits of a 2 MiB leaf.
const HPAGE_MASK: u64 = mm_core::paging::entry::PTE_ADDR_MASK_MAX & !(HPAGE_PMD_SIZE - 1);

/// The 2 MiB leaf for a VMA with `flags`.
fn pmd_leaf(pa: u64, flags: VmFlags, writable: bool) -> Pte {
    let f = PteFlags(leaf_flags(flags, writable));
    Pte::leaf(PhysAddr(pa), f, PageSize::Size2M)
}

/// The fault path's hook (called after the access check): serves a fault
/// on a huge PMD or maps a new huge page when the range allows one.
/// `None`: the 4 KiB path takes it (no huge page here, or one was split
/// or cleared for it).
pub fn huge_fault(mm: &mut MmStruct, vma: &Vma, addr: u64, write: bool) -> Option<Result<(), FaultError>> {
    let mut phys = direct_map();
    let pt = user_pt(mm.pgd);
    if let Some((slot, e)) = pt.lookup(&phys, VirtAddr(addr)) {
        if slot.level() == Level::Pmd {
            return huge_pmd_fault(mm, vma, slot, e, addr, write);
        }
        // A page table is there: 4 KiB pages.
        return None;
    }
    let haddr = hm::huge_range(vma, addr)?;
    let (slot, e) = PAGES
        .with(|p| {
            let mut frames = PtFrames { p, count: &mut mm.stat.pt_pages };
            pt.alloc_slot(&mut phys, &mut frames, VirtAddr(haddr), Level::Pmd, true)
        })
        .ok()?;
    if e.0 != 0 {
        return None;
    }
    if !write {
        // Linux's huge zero page: a read of never-written memory maps one
        // shared zeroed 2 MiB page read-only.
        let Some(zpa) = hm::huge_zero_page() else {
            count(Event::ThpFaultFallback, 1);
            return None;
        };
        let _ = slot.write(&mut phys, pmd_leaf(zpa, vma.flags, false));
        mm.stat.zero_page_maps += 1;
        return Some(Ok(()));
    }
    if !do_huge_pmd_anonymous_page(mm, vma, slot, haddr) {
        return None;
    }
    Some(Ok(()))
}

/// Linux's `do_huge_pmd_anonymous_page` on the empty PMD `slot` for
/// `haddr`: a zeroed huge page mapped writable; false (and
/// `thp_fault_fallback`) when no order-9 block is free.
fn do_huge_pmd_anonymous_page(mm: &mut MmStruct, vma: &Vma, slot: Slot, haddr: u64) -> bool {
    let gfp = super::mempolicy::vma_gfp(vma, haddr, hm::HPAGE_PMD_ORDER, hm::GFP_TRANSHUGE_LIGHT);
    let Some(pa) = hm::alloc_huge_page(true, gfp) else {
        count(Event::ThpFaultFallback, 1);
        return false;
    };
    let writable = vma.flags.contains(VmFlags::WRITE);
    let leaf = pmd_leaf(pa, vma.flags, writable).with(PteFlags::DIRTY);
    if slot.write(&mut direct_map(), leaf).is_err() {
        PAGES.with(|p| free_huge(p, pa));
        return false;
    }
    for i in 0..HPAGE_PMD_NR {
        crate::mm::swap::new_anon_page(mm.id, vma, haddr + i * PAGE_SIZE, (pa >> PAGE_SHIFT) + i);
    }
    MM_GLOBALS.with(|g| g.user_frames_allocated += HPAGE_PMD_NR);
    mm.stat.anon_faults += 1;
    mm.stat.rss_pages += HPAGE_PMD_NR;
    hm::account_pmd(1);
    count(Event::ThpFaultAlloc, 1);
    true
}

/// Drops the reference a PMD mapping holds on each of the 512 frames.
fn free_huge(p: &mut PageAlloc, pa: u64) {
    let zero = MM_GLOBALS.with(|g| g.zero_pa);
    for i in 0..HPAGE_PMD_NR {
        put_page(p, zero, pa + i * PAGE_SIZE);
    }
}

/// A fault on a present huge PMD leaf `e` in `slot`.
fn huge_pmd_fault(
    mm: &mut MmStruct,
    vma: &Vma,
    slot: Slot,
    e: Pte,
    addr: u64,
    write: bool,
) -> Option<Result<(), FaultError>> {
    let haddr = addr & !(HPAGE_PMD_SIZE - 1);
    let pa = e.0 & HPAGE_MASK;
    let mut phys = direct_map();
    if write && !e.is_writable() {
        if hm::is_huge_zero(pa) {
            // A write to the huge zero page: a huge page of its own, or
            // 4 KiB pages (the PMD cleared: its contents were zeros).
            let _ = slot.write(&mut phys, Pte::NONE);
            cpu::invlpg(haddr);
            if hm::huge_range(vma, addr).is_some() && do_huge_pmd_anonymous_page(mm, vma, slot, haddr) {
                cpu::invlpg(haddr);
                return Some(Ok(()));
            }
            return None;
        }
        // Linux's do_huge_pmd_wp_page: reuse when this mapping holds the
        // only reference on every frame, else split and let do_wp_page
        // copy the 4 KiB page written.
        let sole = PAGES.with(|p| (0..HPAGE_PMD_NR).all(|i| page_count(p, pa + i * PAGE_SIZE) == 1));
        if sole {
            let _ = slot.write(&mut phys, e.with(PteFlags::RW).with(PteFlags::DIRTY));
            cpu::invlpg(haddr);
            mm.stat.cow_reuses += 1;
            return Some(Ok(()));
        }
        return match split_huge_pmd(mm, slot, haddr) {
            true => None,
            false => Some(Err(FaultError::Oom)),
        };
    }
    // Present and allowed: flags left stale by mprotect, or an old TLB
    // entry. Refresh the user and NX bits from the VMA.
    let keep = PteFlags::USER.0 | PteFlags::NX.0;
    let _ = slot.write(&mut phys, Pte((e.0 & !keep) | (leaf_flags(vma.flags, false) & keep)));
    cpu::invlpg(haddr);
    Some(Ok(()))
}

/// Linux's `__split_huge_pmd`: the huge leaf in `slot` becomes a page
/// table of 512 PTEs mapping the same frames with the same bits (no
/// reference changes: the PMD held one on each frame, now each PTE
/// does). The huge zero page is simply unmapped (it reads as zeros again
/// through the 4 KiB zero page). False if no page-table page was free.
pub fn split_huge_pmd(mm: &mut MmStruct, slot: Slot, haddr: u64) -> bool {
    let mut phys = direct_map();
    let Ok(e) = slot.read(&phys) else { return false };
    if hm::is_huge_zero(e.0 & HPAGE_MASK) {
        let _ = slot.write(&mut phys, Pte::NONE);
    } else {
        let r = PAGES.with(|p| {
            let mut frames = PtFrames { p, count: &mut mm.stat.pt_pages };
            user_pt(mm.pgd).split_huge_leaf(&mut phys, &mut frames, slot, VirtAddr(haddr), true)
        });
        if r.is_err() {
            return false;
        }
        hm::account_pmd(-1);
        count(Event::ThpSplitPmd, 1);
    }
    // One invlpg drops the whole 2 MiB entry.
    crate::arch::tlb::flush_range(mm.pgd, haddr, haddr + 4096);
    true
}

/// Splits the huge PMDs that `[start, end)` covers only in part (before
/// munmap, mprotect or madvise changes part of one), as Linux's
/// `vma_adjust_trans_huge`. False if a split found no memory.
pub fn split_huge_pmd_edges(mm: &mut MmStruct, start: u64, end: u64) -> bool {
    let mut ok = true;
    for a in [start, end] {
        if a.is_multiple_of(HPAGE_PMD_SIZE) {
            continue;
        }
        if let Some((slot, e)) = user_pt(mm.pgd).lookup(&direct_map(), VirtAddr(a)) {
            if slot.level() == Level::Pmd && e.is_present() {
                ok &= split_huge_pmd(mm, slot, a & !(HPAGE_PMD_SIZE - 1));
            }
        }
    }
    ok
}

/// The resident pages a huge PMD leaf `e` counts for (0 for the huge
/// zero page), what [`zap_huge_pmd`] will release.
pub fn huge_pmd_pages(e: Pte) -> u64 {
    if hm::is_huge_zero(e.0 & HPAGE_MASK) {
        0
    } else {
        HPAGE_PMD_NR
    }
}

/// zap's part for a huge leaf `e` (the caller cleared the slot and
/// flushed the TLB): the references and RSS it held. Pages unmapped (0
/// for the huge zero page).
pub fn zap_huge_pmd(p: &mut PageAlloc, e: Pte) -> u64 {
    let pa = e.0 & HPAGE_MASK;
    if hm::is_huge_zero(pa) {
        return 0;
    }
    free_huge(p, pa);
    hm::account_pmd(-1);
    HPAGE_PMD_NR
}

/// fork's part for a huge leaf (Linux's `copy_huge_pmd`): the child maps
/// the same frames through its own PMD, both write-protected if private
/// and writable, each frame gains a reference. `pslot` is the parent's
/// slot, `cslot` the child's (empty). Pages the child now maps.
pub fn copy_huge_pmd<M: mm_core::mem::PhysMem + ?Sized>(
    p: &mut PageAlloc,
    phys: &mut M,
    pslot: Slot,
    cslot: Slot,
    e: Pte,
    shared: bool,
) -> u64 {
    let mut e = e;
    if !shared && e.is_writable() {
        e = e.without(PteFlags::RW);
        let _ = pslot.write(phys, e);
    }
    let _ = cslot.write(phys, e);
    let pa = e.0 & HPAGE_MASK;
    if hm::is_huge_zero(pa) {
        return 0;
    }
    let zero = MM_GLOBALS.with(|g| g.zero_pa);
    for i in 0..HPAGE_PMD_NR {
        get_page(p, zero, pa + i * PAGE_SIZE);
    }
    hm::account_pmd(1);
    HPAGE_PMD_NR
}

/// `madvise(MADV_HUGEPAGE)` (14) and `madvise(MADV_NOHUGEPAGE)` (15) on
/// `[start, start + len)`: the VMAs' flags (split at the ends). 0 or
/// -errno (-ENOMEM when the range is not fully mapped, as Linux).
pub fn madvise(mm: &mut MmStruct, start: u64, len: u64, advice: u64) -> i64 {
    let Some(end) = start.checked_add(len.next_multiple_of(PAGE_SIZE)) else { return -super::abi::EINVAL };
    if !start.is_multiple_of(PAGE_SIZE) {
        return -super::abi::EINVAL;
    }
    let (set, clear) = match advice {
        14 => (VmFlags::HUGEPAGE, VmFlags::NOHUGEPAGE),
        15 => (VmFlags::NOHUGEPAGE, VmFlags::HUGEPAGE),
        _ => return -super::abi::EINVAL,
    };
    if end == start {
        return 0;
    }
    match mm.vmas.set_flags(start, end, VmFlags(set.0 | clear.0), set) {
        Ok(()) => 0,
        Err(_) => -12,
    }
}

/// khugepaged over `mm` (Linux's `khugepaged_scan_mm_slot`): every 2 MiB
/// range of an eligible VMA that passes `hpage_collapse_scan_pmd`'s
/// limits (see [`collapse_huge_page`]) is collapsed into a new huge page.
/// Returns the ranges collapsed.
pub fn khugepaged_scan_mm(mm: &mut MmStruct) -> u64 {
    let vmas: alloc::vec::Vec<Vma> =
        mm.vmas.iter().copied().filter(|v| v.kind == mm_core::vma::VmaKind::Anon && hm::vma_allows(v.flags)).collect();
    let mut collapsed = 0;
    for v in &vmas {
        let mut haddr = v.start.next_multiple_of(HPAGE_PMD_SIZE);
        while haddr + HPAGE_PMD_SIZE <= v.end {
            if collapse_huge_page(mm, v, haddr) {
                collapsed += 1;
            }
            haddr += HPAGE_PMD_SIZE;
        }
    }
    collapsed
}

/// What a PTE of a range to collapse holds.
#[derive(Clone, Copy)]
enum Old {
    /// Empty or the zero page: the huge page gets zeroes there.
    None,
    /// A private page this mapping alone references: copied, then freed.
    Exclusive(u64),
    /// A page another process maps too (after fork): copied, and this
    /// mapping's reference dropped.
    Shared(u64),
}

/// Linux's `hpage_collapse_scan_pmd` + `collapse_huge_page` for
/// `[haddr, haddr + 2 MiB)` of `vma`: the range collapses when it holds
/// at least one present writable page, at most `max_ptes_none` empty or
/// zero-page PTEs (filled with zeroes), at most `max_ptes_shared` pages
/// shared with another process (copied), no swapped-out PTE and no page
/// in the swap cache (its slot would go stale).
fn collapse_huge_page(mm: &mut MmStruct, vma: &Vma, haddr: u64) -> bool {
    let pt = user_pt(mm.pgd);
    let mut phys = direct_map();
    // The PMD must point to a page table (a huge leaf is done already).
    let Some((pte0, _)) = pt.lookup(&phys, VirtAddr(haddr)) else { return false };
    if pte0.level() != Level::Pte {
        return false;
    }
    let table = pte0.table();
    let zero = MM_GLOBALS.with(|g| g.zero_pa);
    let (max_none, max_shared) = (hm::max_ptes(hm::MaxPtes::None), hm::max_ptes(hm::MaxPtes::Shared));
    let mut old = [Old::None; HPAGE_PMD_NR as usize];
    let eligible = PAGES.with(|p| {
        let (mut none, mut shared, mut writable) = (0, 0, false);
        for (i, o) in old.iter_mut().enumerate() {
            let Ok(e) = Slot::new(table, i, Level::Pte).read(&phys) else { return false };
            let pa = e.0 & mm_core::paging::entry::PTE_ADDR_MASK_MAX;
            if e.0 == 0 || (e.is_present() && pa == zero) {
                none += 1;
                if none > max_none {
                    return false;
                }
                continue;
            }
            // A swap entry (max_ptes_swap is not modelled), or a page in
            // the swap cache.
            if !e.is_present() || p.ext.get((pa >> PAGE_SHIFT) as usize).is_none_or(|x| x.swap_entry().is_some()) {
                return false;
            }
            writable |= e.is_writable();
            *o = match page_count(p, pa) {
                1 => Old::Exclusive(pa),
                0 => return false,
                _ => {
                    shared += 1;
                    if shared > max_shared {
                        return false;
                    }
                    Old::Shared(pa)
                }
            };
        }
        // Linux's SCAN_PAGE_RO: nothing to gain for a read-only range
        // (and an all-empty range has no writable page either).
        writable
    });
    if !eligible {
        return false;
    }
    // On the node most of the old pages are on (Linux's
    // `hpage_collapse_find_target_node`: khugepaged has no task policy to
    // follow, and the pages' placement already followed the VMA's).
    let mut on_node = [0u32; 8];
    for o in &old {
        if let Old::Exclusive(pa) | Old::Shared(pa) = *o {
            on_node[usize::from(crate::mm::numa::node_of_pfn(pa >> PAGE_SHIFT) & 7)] += 1;
        }
    }
    let target = (0..8u8).max_by_key(|&n| (on_node[usize::from(n)], core::cmp::Reverse(n))).unwrap_or(0);
    let gfp = hm::GFP_TRANSHUGE_LIGHT;
    let gfp = crate::mm::GfpMask { gfp: gfp.gfp.on_nodes(target, gfp.gfp.nodemask), ..gfp };
    let Some(new) = hm::alloc_huge_page(false, gfp) else { return false };
    count(Event::ThpCollapseAlloc, 1);
    for (i, o) in old.iter().enumerate() {
        let dst = new + i as u64 * PAGE_SIZE;
        match *o {
            Old::None => crate::mm::phys::clear_page(dst),
            Old::Exclusive(pa) | Old::Shared(pa) => copy_page(dst, pa),
        }
    }
    // The PMD slot: the table's parent.
    let pmd = PAGES.with(|p| {
        let mut frames = PtFrames { p, count: &mut mm.stat.pt_pages };
        pt.alloc_slot(&mut phys, &mut frames, VirtAddr(haddr), Level::Pmd, true)
    });
    let writable = vma.flags.contains(VmFlags::WRITE);
    let flags = PteFlags(leaf_flags(vma.flags, writable)).union(PteFlags::DIRTY).union(PteFlags::ACCESSED);
    let done = pmd.is_ok_and(|(slot, _)| {
        PAGES.with(|p| {
            let mut frames = PtFrames { p, count: &mut mm.stat.pt_pages };
            pt.collapse_huge_table(&mut phys, &mut frames, slot, VirtAddr(haddr), PhysAddr(new), flags).is_ok()
        })
    });
    if !done {
        PAGES.with(|p| free_huge(p, new));
        return false;
    }
    crate::arch::tlb::flush_range(mm.pgd, 0, crate::arch::tlb::ALL);
    let mut present = 0;
    PAGES.with(|p| {
        for o in &old {
            if let Old::Exclusive(pa) | Old::Shared(pa) = *o {
                put_page(p, zero, pa);
                present += 1;
            }
        }
    });
    for i in 0..HPAGE_PMD_NR {
        crate::mm::swap::new_anon_page(mm.id, vma, haddr + i * PAGE_SIZE, (new >> PAGE_SHIFT) + i);
    }
    // The frames that were empty are new to the process.
    mm.stat.rss_pages += HPAGE_PMD_NR - present;
    MM_GLOBALS.with(|g| g.user_frames_allocated += HPAGE_PMD_NR);
    hm::account_pmd(1);
    true
}

/// AnonHugePages of one address space (PMD leaves of real huge pages), KiB.
pub fn anon_huge_kib(mm: &MmStruct) -> u64 {
    let mut n = 0;
    let _ = user_pt(mm.pgd).for_each_leaf(&mut direct_map(), 0..(1 << 47), LeafKinds::Present, |_, l| {
        if l.slot.level() == Level::Pmd && !hm::is_huge_zero(l.entry.0 & HPAGE_MASK) {
            n += 1;
        }
        true
    });
    n * (HPAGE_PMD_SIZE >> 10)
}

/// `SYS_THP(op, arg)`: op 0 returns the mode (0 never, 1 madvise, 2
/// always); 1 sets it to `arg` and returns the old one; 2 runs khugepaged
/// over the caller's address space now and returns the ranges collapsed;
/// 3 returns the caller's AnonHugePages in KiB; 4 returns khugepaged's
/// limit `arg` (0 max_ptes_none, 1 max_ptes_shared); 5 sets limit
/// `arg >> 32` to `arg & 0xffff_ffff` and returns the old value.
/// -EINVAL otherwise.
pub fn sys_thp(op: u64, arg: u64) -> i64 {
    match op {
        4 => hm::MaxPtes::from_u64(arg).map_or(-super::abi::EINVAL, |w| hm::max_ptes(w) as i64),
        5 => match hm::MaxPtes::from_u64(arg >> 32) {
            Some(w) => {
                let old = hm::max_ptes(w);
                if hm::set_max_ptes(w, arg & 0xffff_ffff) {
                    old as i64
                } else {
                    -super::abi::EINVAL
                }
            }
            None => -super::abi::EINVAL,
        },
        0 => hm::mode() as i64,
        1 => match hm::ThpMode::from_u64(arg) {
            Some(m) => hm::set_mode(m) as i64,
            None => -super::abi::EINVAL,
        },
        2 => super::syscall::with_mm(khugepaged_scan_mm).map_or(-super::abi::EINVAL, |n| n as i64),
        3 => super::syscall::with_mm(|mm| anon_huge_kib(mm)).map_or(-super::abi::EINVAL, |n| n as i64),
        _ => -super::abi::EINVAL,
    }
}

/// Pid of the khugepaged thread (0: not started).
static KHUGEPAGED_PID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Starts khugepaged (the `khugepaged` switch): a kernel thread that,
/// each time it runs, scans every process's eligible VMAs and collapses
/// what it can, then sleeps until a process yields (`sched_yield` wakes
/// it, as the allocator's slow path wakes kswapd; Linux's sleeps on a
/// timer, which this kernel's threads do not have). Off by default, so
/// runs and tests see only the collapses they ask for (`SYS_THP` op 2).
/// Its pid.
pub fn start_khugepaged() -> Option<u64> {
    super::sched::start_once(&KHUGEPAGED_PID, "khugepaged", khugepaged)
}

/// Wakes khugepaged if it runs (a process is yielding).
pub fn wake_khugepaged() {
    let pid = KHUGEPAGED_PID.load(core::sync::atomic::Ordering::Relaxed);
    if pid != 0 {
        super::sched::wake(pid);
    }
}

extern "C" fn khugepaged() -> ! {
    loop {
        for (_, mm) in super::sched::other_mms(0) {
            // A process whose mm is busy is scanned on a later pass.
            let _ = mm.try_with(khugepaged_scan_mm);
        }
        super::sched::sleep_current();
    }
}
