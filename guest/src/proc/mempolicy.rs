//! NUMA memory policies (Linux's mm/mempolicy.c): set_mempolicy (238),
//! get_mempolicy (239) and mbind (237) with Linux's numbers, checks and
//! errno (mm-core's `mempolicy` has the rules), the policy a user page
//! fault allocates under (the VMA's, else the task's; interleave by the
//! page's offset in its VMA as Linux's `interleave_nid`), and
//! /proc/PID/numa_maps.
//!
//! Allocations made on a task's behalf follow its policy as Linux's
//! `alloc_pages` does: page-cache and tmpfs pages, its page-table pages
//! and its exec'd segments ([`task_gfp`]: the task's policy, interleave
//! by the task's cursor `il_prev`), COW copies, swap-ins and THP
//! ([`vma_gfp`]: the VMA's policy, else the task's). The task's policy
//! is read from a per-CPU copy the scheduler keeps ([`set_cpu_current`]),
//! since these run under the page allocator, inside the scheduler's lock
//! rank.

use super::mm::MmStruct;
use super::sched;
use super::syscall::{copy_from_user, copy_to_user, with_mm};
use crate::arch::percpu::MAX_CPUS;
use crate::kprintln;
use crate::mm::page_alloc::{gfp, GfpMask, GFP_USER};
use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use mm_core::addr::PAGE_SIZE;
use mm_core::mempolicy::{
    interleave_index, read_nodemask, sanitize_mode, MemPolicy, Mode, EFAULT, EINVAL, EIO, MPOL_DEFAULT, MPOL_F_ADDR,
    MPOL_F_MEMS_ALLOWED, MPOL_F_NODE, MPOL_MF_MOVE, MPOL_MF_MOVE_ALL, MPOL_MF_STRICT,
};
use mm_core::vma::Vma;

/// The nodes with memory (Linux's `node_states[N_MEMORY]`).
fn present() -> u8 {
    crate::mm::numa::nodes_with_memory()
}

/// Linux's `nr_node_ids`: one past the highest node number.
fn nr_node_ids() -> u64 {
    crate::mm::numa::nr_nodes() as u64
}

/// Reads the user's node mask (`get_nodes`).
fn read_mask(mm: &mut MmStruct, nmask: u64, maxnode: u64) -> Result<u64, i64> {
    read_nodemask(nmask == 0, maxnode, &mut |i| {
        let mut b = [0u8; 8];
        copy_from_user(mm, nmask.checked_add(8 * i as u64)?, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    })
}

/// `set_mempolicy(mode, nmask, maxnode)`.
pub fn sys_set_mempolicy(mode: u64, nmask: u64, maxnode: u64) -> i64 {
    match set_mempolicy(mode as i32 as i64, nmask, maxnode) {
        Ok(()) => 0,
        Err(e) => -e,
    }
}

fn set_mempolicy(mode: i64, nmask: u64, maxnode: u64) -> Result<(), i64> {
    sanitize_mode(mode)?;
    let user = with_mm(|mm| read_mask(mm, nmask, maxnode)).unwrap_or(Err(EFAULT))?;
    let pol = MemPolicy::from_user(mode, user, present())?;
    sched::with_current(|t| {
        t.mempolicy = pol;
        // A new interleave starts after its last node, so the next is
        // its first (Linux resets il_prev to MAX_NUMNODES - 1).
        t.il_prev = 7;
    });
    set_cpu_current(crate::arch::percpu::cpu_id(), pol, 7);
    Ok(())
}

/// Each CPU's running task's policy and interleave cursor, packed
/// ([`pack`]): what [`task_gfp`] reads without the scheduler's lock.
static CPU_POLICY: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// mode number | nodes << 8 | flags << 16 | il_prev << 32.
fn pack(pol: MemPolicy, il_prev: u8) -> u64 {
    pol.mode.number() as u64 | u64::from(pol.nodes) << 8 | u64::from(pol.flags) << 16 | u64::from(il_prev) << 32
}

fn unpack(w: u64) -> (MemPolicy, u8) {
    let mode = match (w & 0xff) as i64 {
        mm_core::mempolicy::MPOL_PREFERRED => Mode::Preferred,
        mm_core::mempolicy::MPOL_BIND => Mode::Bind,
        mm_core::mempolicy::MPOL_INTERLEAVE => Mode::Interleave,
        mm_core::mempolicy::MPOL_LOCAL => Mode::Local,
        _ => Mode::Default,
    };
    (MemPolicy { mode, nodes: (w >> 8) as u8, flags: (w >> 16) as u16 }, (w >> 32) as u8)
}

/// The scheduler switching `cpu` to a task with policy `pol` and cursor
/// `il_prev` (the default for the idle task and kernel threads).
pub fn set_cpu_current(cpu: usize, pol: MemPolicy, il_prev: u8) {
    if let Some(c) = CPU_POLICY.get(cpu) {
        c.store(pack(pol, il_prev), Ordering::Relaxed);
    }
}

/// The interleave cursor task allocations on `cpu` advanced, for the
/// scheduler to keep in the task it switches away from.
pub fn cpu_il_prev(cpu: usize) -> u8 {
    CPU_POLICY.get(cpu).map_or(0, |c| unpack(c.load(Ordering::Relaxed)).1)
}

/// The request a kernel allocation on the running task's behalf makes
/// (Linux's `alloc_pages` with `get_task_policy(current)`): `base`
/// narrowed to the task's policy. Interleave takes the node after the
/// task's last one (`interleave_nodes`, advancing `il_prev`). Lock-free:
/// callers may hold the page allocator. One node: `base`.
pub fn task_gfp(base: GfpMask) -> GfpMask {
    if crate::mm::numa::nr_nodes() <= 1 {
        return base;
    }
    let cpu = crate::arch::percpu::cpu_id();
    let Some(slot) = CPU_POLICY.get(cpu) else { return base };
    let (pol, il_prev) = unpack(slot.load(Ordering::Relaxed));
    let local = crate::mm::numa::cpu_node(cpu);
    if pol.mode == Mode::Interleave {
        let next = mm_core::mempolicy::next_node_in(il_prev, pol.nodes);
        slot.store(pack(pol, next), Ordering::Relaxed);
        let (g, _) = pol.apply(base.gfp, 0, local);
        return GfpMask { gfp: g.on_nodes(next, g.nodemask), flags: base.flags | gfp::INTERLEAVE };
    }
    let (g, _) = pol.apply(base.gfp, 0, local);
    GfpMask { gfp: g, flags: base.flags }
}

/// `mbind(start, len, mode, nmask, maxnode, flags)`.
pub fn sys_mbind(start: u64, len: u64, mode: u64, nmask: u64, maxnode: u64, flags: u64) -> i64 {
    match mbind(start, len, mode as i32 as i64, nmask, maxnode, flags) {
        Ok(()) => 0,
        Err(e) => -e,
    }
}

fn mbind(start: u64, len: u64, mode: i64, nmask: u64, maxnode: u64, mut flags: u64) -> Result<(), i64> {
    let (m, _) = sanitize_mode(mode)?;
    let user = with_mm(|mm| read_mask(mm, nmask, maxnode)).unwrap_or(Err(EFAULT))?;
    // do_mbind's checks, in its order.
    if flags & !(MPOL_MF_STRICT | MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) != 0 {
        return Err(EINVAL);
    }
    if start & (PAGE_SIZE - 1) != 0 {
        return Err(EINVAL);
    }
    if m == MPOL_DEFAULT {
        flags &= !MPOL_MF_STRICT;
    }
    let len = len.checked_add(PAGE_SIZE - 1).ok_or(EINVAL)? & !(PAGE_SIZE - 1);
    let end = start.checked_add(len).ok_or(EINVAL)?;
    if end == start {
        return Ok(());
    }
    let pol = MemPolicy::from_user(mode, user, present())?;
    with_mm(|mm| {
        // The range must be mapped without holes (EFAULT, as
        // queue_pages_range without MPOL_MF_DISCONTIG_OK).
        let mut at = start;
        while at < end {
            let v = mm.vmas.find(at).copied().ok_or(EFAULT)?;
            at = v.end;
        }
        // MPOL_MF_STRICT without MPOL_MF_MOVE: pages already placed must
        // follow the policy (with MOVE they are moved below instead).
        let moving = flags & (MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) != 0;
        if !moving && flags & MPOL_MF_STRICT != 0 && matches!(pol.mode, Mode::Bind | Mode::Preferred | Mode::Interleave)
        {
            let bad = frames_in(mm, start, end).iter().any(|&(_, pa)| {
                let node = crate::mm::numa::node_of_pfn(pa >> 12);
                match pol.mode {
                    Mode::Bind => pol.nodes & (1 << node) == 0,
                    _ => false,
                }
            });
            if bad {
                return Err(EIO);
            }
        }
        mm.vmas.set_policy(start, end, pol).map_err(|_| EFAULT)?;
        Ok(())
    })
    .unwrap_or(Err(EFAULT))?;
    if flags & (MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) != 0
        && matches!(pol.mode, Mode::Bind | Mode::Preferred | Mode::Interleave)
    {
        // Linux's do_mbind: the policy is set, the misplaced pages are
        // migrated, and STRICT reports the ones that could not move.
        let failed = move_misplaced(start, end, pol.nodes, flags & MPOL_MF_MOVE_ALL != 0);
        if failed > 0 && flags & MPOL_MF_STRICT != 0 {
            return Err(EIO);
        }
    }
    Ok(())
}

/// MPOL_MF_MOVE (Linux's `migrate_pages` from `do_mbind`): the pages
/// mapped in `[start, end)` on a node outside `nodes` move to a frame the
/// range's new policy allocates (`alloc_migration_target_by_mpol`: the
/// page fault's choice), on an allowed node, through the compaction
/// migrator (isolate, copy, every PTE rewritten through the reverse map).
/// Pages that cannot move (pinned, not on the LRU, no room on an allowed
/// node) stay where they are, and so do pages other processes map too
/// unless `move_all` (MPOL_MF_MOVE_ALL; Linux's
/// `folio_likely_mapped_shared` check). A transparent huge page with a
/// misplaced frame is split first and its pages move one by one (Linux
/// moves it whole when it can, else splits). Returns how many did not
/// move.
fn move_misplaced(start: u64, end: u64, nodes: u8, move_all: bool) -> u64 {
    let misplaced = |pa: u64| nodes & (1 << crate::mm::numa::node_of_pfn(pa >> 12)) == 0;
    // Each misplaced page with the request its VMA's new policy makes,
    // gathered (and the buffers allocated) before reclaim's state and the
    // page allocator are taken: nothing may allocate under them.
    let todo: alloc::vec::Vec<(u64, mm_core::buddy::Gfp)> = with_mm(|mm| {
        split_huge_in(mm, start, end, &misplaced);
        frames_in(mm, start, end)
            .into_iter()
            .filter(|&(_, pa)| misplaced(pa))
            .filter_map(|(va, pa)| {
                let vma = mm.vmas.find(va).copied()?;
                Some((pa >> 12, user_gfp(&vma, va).gfp))
            })
            .collect()
    })
    .unwrap_or_default();
    migrate_frames(&todo, |pfn| !misplaced(pfn << 12), move_all)
}

/// Splits the transparent huge PMDs in `[start, end)` of `mm` that map a
/// frame `split(pa)` picks (their pages are to move one by one).
fn split_huge_in(mm: &mut MmStruct, start: u64, end: u64, split: &dyn Fn(u64) -> bool) {
    let mut huge = alloc::vec::Vec::new();
    let _ = super::fault::user_pt(mm.pgd).for_each_leaf(
        &mut crate::mm::phys::direct_map(),
        start..end,
        mm_core::paging::LeafKinds::NonNone,
        |_, l| {
            let pa = l.entry.0 & mm_core::paging::entry::PTE_ADDR_MASK_MAX;
            if l.entry.is_present()
                && l.size().bytes() > PAGE_SIZE
                && !crate::mm::huge_memory::is_huge_zero(pa)
                && split(pa)
            {
                huge.push(l.va.0);
            }
            true
        },
    );
    for haddr in huge {
        // hugetlb pages are not transparent: they stay whole (and count
        // as not moved).
        if mm.vmas.find(haddr).is_some_and(|v| v.flags.contains(mm_core::vma::VmFlags::HUGETLB)) {
            continue;
        }
        let Some((slot, _)) =
            super::fault::user_pt(mm.pgd).lookup(&crate::mm::phys::direct_map(), mm_core::addr::VirtAddr(haddr))
        else {
            continue;
        };
        super::thp::split_huge_pmd(mm, slot, haddr);
    }
}

/// Migrates each `(pfn, request)` of `todo` to a frame the request
/// allocates, if `dst_ok` accepts the frame's pfn (else the page stays:
/// no room where it may go); pages other processes map too move only
/// with `move_all`. Returns how many did not move. Called with no lock
/// held (the migration takes reclaim's state and the page allocator).
fn migrate_frames(todo: &[(u64, mm_core::buddy::Gfp)], dst_ok: impl Fn(u64) -> bool, move_all: bool) -> u64 {
    use crate::mm::migrate::GuestMigrator;
    use crate::mm::swap::SWAP;
    use crate::mm::{PageAlloc, PAGES};
    if todo.is_empty() {
        return 0;
    }
    if SWAP.try_with(|_| ()).is_none() {
        // Reclaim's state is not up (early boot): nothing is movable.
        return todo.len() as u64;
    }
    let isolated = alloc::vec::Vec::with_capacity(todo.len());
    let cpu = crate::arch::percpu::this_cpu().id;
    let (failed, stats, buffers) = SWAP.with(|s| {
        PAGES.with(|p| {
            let PageAlloc { buddy, lru, ext, .. } = p;
            let mut m = GuestMigrator::new(s, lru, ext, alloc::vec::Vec::new(), isolated);
            let mut failed = 0u64;
            for &(src, gfp) in todo {
                if !move_all && m.mapcount(src).unwrap_or(0) > 1 {
                    failed += 1;
                    continue;
                }
                if !m.isolate(buddy, src) {
                    failed += 1;
                    continue;
                }
                let dst = match buddy.alloc_pages(cpu, 0, gfp) {
                    Ok(d) if dst_ok(d) => d,
                    other => {
                        // No room on an allowed node (a preferred
                        // policy fell back to another): the page stays.
                        if let Ok(d) = other {
                            let _ = buddy.free_pages(cpu, d, 0);
                        }
                        m.putback(src);
                        failed += 1;
                        continue;
                    }
                };
                match m.migrate(src, dst) {
                    // The old frames are freed after one TLB flush per
                    // batch (mm/migrate.rs).
                    Ok(()) if m.moved_full() => m.complete(|s, d| transfer(buddy, s, d)),
                    Ok(()) => {}
                    Err(_) => {
                        let _ = buddy.free_pages(cpu, dst, 0);
                        m.putback(src);
                        failed += 1;
                    }
                }
            }
            m.complete(|s, d| transfer(buddy, s, d));
            let stats = m.stats;
            // The buffers are freed after the locks are dropped: a large
            // one goes back to the page allocator held here.
            (failed, stats, m.into_buffers())
        })
    });
    drop(buffers);
    crate::mm::compaction::TOTALS.with(|t| {
        t.migrate.success += stats.success;
        t.migrate.fail += stats.fail;
        t.migrate.isolate_refused += stats.isolate_refused;
        t.migrate.ptes_moved += stats.ptes_moved;
    });
    failed
}

/// A page moved from `src` to `dst`, its TLB flush done: `dst` takes the
/// references and `src` is freed.
fn transfer(buddy: &mut mm_core::buddy::BuddyAllocator<'static>, src: u64, dst: u64) {
    if let Err(e) = buddy.migrate_transfer(src, dst) {
        // Contents and mappings are at dst already: say so loudly (the
        // host's --verify shows the refcounts).
        kprintln!("migrate: migrate_transfer({:#x} -> {:#x}): {}", src, dst, e);
    }
}

/// `migrate_pages(pid, maxnode, old_nodes, new_nodes)` (256): moves the
/// pages of process `pid` (0: the caller) that lie on the nodes of
/// `old_nodes` to those of `new_nodes`, node by node as Linux's
/// `do_migrate_pages` maps them (`node_remap`: the i-th old node's pages
/// go to the i-th new node, modulo their number). Returns how many pages
/// could not be moved, or Linux's errno: EFAULT for an unreadable mask,
/// EINVAL for bits beyond the ABI's 64 nodes or no new node with memory,
/// ESRCH for no such process, EINVAL for one without an address space.
/// The caller is root (`CAP_SYS_NICE`): pages other processes map too
/// move as well (MPOL_MF_MOVE_ALL), their PTEs rewritten with the rest.
/// Pages that cannot move (page cache, pinned, hugetlb, no room on the
/// destination) count as not moved.
pub fn sys_migrate_pages(pid: u64, maxnode: u64, old_nodes: u64, new_nodes: u64) -> i64 {
    match migrate_pages(pid as i32 as i64, maxnode, old_nodes, new_nodes) {
        Ok(n) => n as i64,
        Err(e) => -e,
    }
}

fn migrate_pages(pid: i64, maxnode: u64, old_nodes: u64, new_nodes: u64) -> Result<u64, i64> {
    let (old, new) =
        with_mm(|mm| Ok::<_, i64>((read_mask(mm, old_nodes, maxnode)?, read_mask(mm, new_nodes, maxnode)?)))
            .unwrap_or(Err(EFAULT))?;
    if pid < 0 {
        return Err(mm_core::mempolicy::ESRCH);
    }
    let target = if pid == 0 {
        sched::current_mm().ok_or(EINVAL)
    } else {
        sched::with_task(pid as u64, |t| t.mm.clone()).ok_or(mm_core::mempolicy::ESRCH)?.ok_or(EINVAL)
    }?;
    // The nodes the caller may use (its cpuset's: every node with memory).
    let present = present();
    let new = (new & u64::from(present)) as u8;
    if new == 0 {
        return Err(EINVAL);
    }
    let old = (old & 0xff) as u8;
    let mut failed = 0;
    for (s, d) in mm_core::mempolicy::migrate_pairs(old, new) {
        let on_s = |pa: u64| crate::mm::numa::node_of_pfn(pa >> 12) == s;
        // Linux's `migrate_to_node`: every page of the mm on `s`, to `d`
        // only (`__GFP_THISNODE`).
        let todo: alloc::vec::Vec<(u64, mm_core::buddy::Gfp)> = target.with(|mm| {
            let ranges: alloc::vec::Vec<(u64, u64)> = mm.vmas.iter().map(|v| (v.start, v.end)).collect();
            let mut todo = alloc::vec::Vec::new();
            for (start, end) in ranges {
                split_huge_in(mm, start, end, &on_s);
                for (_, pa) in frames_in(mm, start, end).into_iter().filter(|&(_, pa)| on_s(pa)) {
                    todo.push((pa >> 12, GFP_USER.gfp.on_nodes(d, 1 << d)));
                }
            }
            todo
        });
        failed += migrate_frames(&todo, |pfn| crate::mm::numa::node_of_pfn(pfn) == d, true);
    }
    Ok(failed)
}

/// The present, non-zero frames mapped in `[start, end)`: (address, pa).
fn frames_in(mm: &MmStruct, start: u64, end: u64) -> alloc::vec::Vec<(u64, u64)> {
    let zero = super::mm::MM_GLOBALS.with(|g| g.zero_pa);
    let mut out = alloc::vec::Vec::new();
    let _ = super::fault::user_pt(mm.pgd).for_each_leaf(
        &mut crate::mm::phys::direct_map(),
        start..end,
        mm_core::paging::LeafKinds::NonNone,
        |_, l| {
            if l.entry.is_present() {
                let pa = l.entry.0 & mm_core::paging::entry::PTE_ADDR_MASK_MAX;
                if pa != zero && !crate::mm::huge_memory::is_huge_zero(pa) {
                    let pages = l.size().bytes() / PAGE_SIZE;
                    for i in 0..pages {
                        out.push((l.va.0 + i * PAGE_SIZE, pa + i * PAGE_SIZE));
                    }
                }
            }
            true
        },
    );
    out
}

/// `get_mempolicy(mode, nmask, maxnode, addr, flags)`.
pub fn sys_get_mempolicy(mode: u64, nmask: u64, maxnode: u64, addr: u64, flags: u64) -> i64 {
    match get_mempolicy(mode, nmask, maxnode, addr, flags) {
        Ok(()) => 0,
        Err(e) => -e,
    }
}

fn get_mempolicy(umode: u64, nmask: u64, maxnode: u64, addr: u64, flags: u64) -> Result<(), i64> {
    if nmask != 0 && maxnode < nr_node_ids() {
        return Err(EINVAL);
    }
    if flags & !(MPOL_F_NODE | MPOL_F_ADDR | MPOL_F_MEMS_ALLOWED) != 0 {
        return Err(EINVAL);
    }
    let task_pol = sched::with_current(|t| t.mempolicy).unwrap_or_default();
    let il_prev = cpu_il_prev(crate::arch::percpu::cpu_id());
    let (mode, nodes): (i64, u8) = if flags & MPOL_F_MEMS_ALLOWED != 0 {
        if flags & (MPOL_F_NODE | MPOL_F_ADDR) != 0 {
            return Err(EINVAL);
        }
        (0, present())
    } else {
        let pol = if flags & MPOL_F_ADDR != 0 {
            // The VMA's own policy (default if it has none), as Linux's
            // __get_vma_policy.
            with_mm(|mm| mm.vmas.find(addr).map(|v| v.policy)).flatten().ok_or(EFAULT)?
        } else {
            if addr != 0 {
                return Err(EINVAL);
            }
            task_pol
        };
        let mode = if flags & MPOL_F_NODE != 0 {
            if flags & MPOL_F_ADDR != 0 {
                // The node of the page at addr, faulted in if need be.
                let pa = with_mm(|mm| super::fault::user_page(mm, addr, false).map_err(|_| EFAULT))
                    .unwrap_or(Err(EFAULT))?;
                i64::from(crate::mm::numa::node_of_pfn(pa >> 12))
            } else if pol.mode == Mode::Interleave {
                // The node the next task-interleaved allocation takes.
                i64::from(mm_core::mempolicy::next_node_in(il_prev, pol.nodes))
            } else {
                return Err(EINVAL);
            }
        } else {
            pol.user_mode()
        };
        (mode, pol.user_nodes())
    };
    with_mm(|mm| {
        if umode != 0 {
            copy_to_user(mm, umode, &(mode as i32).to_le_bytes()).map_err(|_| EFAULT)?;
        }
        if nmask != 0 {
            // copy_nodes_to_user: ALIGN(maxnode - 1, 64) bits, our node
            // word first and the rest cleared; more than a page: EINVAL.
            let words = maxnode.saturating_sub(1).div_ceil(64);
            if words * 8 > PAGE_SIZE {
                return Err(EINVAL);
            }
            for i in 0..words {
                let w = if i == 0 { u64::from(nodes) } else { 0 };
                let at = nmask.checked_add(8 * i).ok_or(EFAULT)?;
                copy_to_user(mm, at, &w.to_le_bytes()).map_err(|_| EFAULT)?;
            }
        }
        Ok(())
    })
    .unwrap_or(Err(EFAULT))
}

/// The request a user page for `va` in `vma` is allocated with: the
/// VMA's policy, else the task's (Linux's `get_vma_policy`), applied as
/// `alloc_pages_mpol` does. One node: plain `GFP_USER`.
pub fn user_gfp(vma: &Vma, va: u64) -> GfpMask {
    vma_gfp(vma, va, 0, GFP_USER)
}

/// [`user_gfp`] for `2^order` pages at `va` with `base` (THP's
/// `GFP_TRANSHUGE_LIGHT`, swap-in's): Linux's `vma_alloc_folio`, whose
/// interleave index counts in units of the order.
pub fn vma_gfp(vma: &Vma, va: u64, order: u8, base: GfpMask) -> GfpMask {
    if crate::mm::numa::nr_nodes() <= 1 {
        return base;
    }
    let pol = if vma.policy.is_default() { current_policy() } else { vma.policy };
    let local = crate::mm::numa::cpu_node(crate::arch::percpu::cpu_id());
    let ilx = interleave_index(vma.start, vma.pgoff, va) >> order;
    let (g, il) = pol.apply(base.gfp, ilx, local);
    GfpMask { gfp: g, flags: base.flags | if il { gfp::INTERLEAVE } else { 0 } }
}

/// The running task's own policy, from the scheduler's per-CPU copy.
fn current_policy() -> MemPolicy {
    CPU_POLICY.get(crate::arch::percpu::cpu_id()).map_or(MemPolicy::DEFAULT, |c| unpack(c.load(Ordering::Relaxed)).0)
}

/// The nodes a user page fault at `va` of the running process could
/// allocate from (its policy's node mask; all nodes without a VMA there):
/// what the OOM killer the fault ends in is constrained to.
pub fn fault_nodemask(va: u64) -> u8 {
    sched::current_mm()
        .and_then(|m| m.with(|mm| mm.vmas.find(va).map(|v| user_gfp(v, va).gfp.nodemask)))
        .unwrap_or(mm_core::buddy::NODEMASK_ALL)
}

/// /proc/PID/numa_maps (Linux's `show_numa_map`): per VMA its start,
/// policy (the VMA's, else the task's), `file=`/`heap`/`stack`, then for
/// mapped pages `anon=`, `dirty=`, `mapped=` (when neither), `N<node>=`
/// and `kernelpagesize_kB=`.
pub fn numa_maps_text(pid: u64, mm: &MmStruct, name: impl Fn(&Vma) -> String) -> String {
    let task_pol = sched::with_task(pid, |t| t.mempolicy).unwrap_or_default();
    let mut out = String::new();
    for v in mm.vmas.iter() {
        let pol = if v.policy.is_default() { task_pol } else { v.policy };
        let _ = write!(out, "{:08x} ", v.start);
        let _ = mm_core::mempolicy::policy_str(&pol, &mut out);
        let n = name(v);
        match n.as_str() {
            "" => {}
            "[heap]" => out.push_str(" heap"),
            "[stack]" => out.push_str(" stack"),
            path => {
                let _ = write!(out, " file={}", path);
            }
        }
        if v.flags.contains(mm_core::vma::VmFlags::HUGETLB) {
            out.push_str(" huge");
        }
        let mut node = [0u64; 8];
        let (mut pages, mut anon, mut dirty) = (0u64, 0u64, 0u64);
        let zero = super::mm::MM_GLOBALS.with(|g| g.zero_pa);
        let mut leaves: alloc::vec::Vec<(u64, bool, u64)> = alloc::vec::Vec::new();
        let _ = super::fault::user_pt(mm.pgd).for_each_leaf(
            &mut crate::mm::phys::direct_map(),
            v.start..v.end,
            mm_core::paging::LeafKinds::NonNone,
            |_, l| {
                if l.entry.is_present() {
                    let pa = l.entry.0 & mm_core::paging::entry::PTE_ADDR_MASK_MAX;
                    let d = l.entry.0 & mm_core::paging::PteFlags::DIRTY.0 != 0;
                    leaves.push((pa, d, l.size().bytes() / PAGE_SIZE));
                }
                true
            },
        );
        crate::mm::PAGES.with(|p| {
            for &(pa, d, n) in &leaves {
                // The zero pages are not counted (vm_normal_page).
                if pa == zero || crate::mm::huge_memory::is_huge_zero(pa) {
                    continue;
                }
                pages += n;
                let owner = p.buddy.page(pa >> 12).map_or(0, |pg| pg.owner);
                if mm_core::buddy::PageOwner::from_u8(owner) != mm_core::buddy::PageOwner::PageCache {
                    anon += n;
                }
                if d {
                    dirty += n;
                }
                node[usize::from(crate::mm::numa::node_of_pfn(pa >> 12)) % 8] += n;
            }
        });
        if pages > 0 {
            if anon > 0 {
                let _ = write!(out, " anon={}", crate::fmt::Dec(anon));
            }
            if dirty > 0 {
                let _ = write!(out, " dirty={}", crate::fmt::Dec(dirty));
            }
            if pages != anon && pages != dirty {
                let _ = write!(out, " mapped={}", crate::fmt::Dec(pages));
            }
            for (i, &c) in node.iter().enumerate() {
                if c > 0 {
                    let _ = write!(out, " N{}={}", crate::fmt::Dec(i as u64), crate::fmt::Dec(c));
                }
            }
            let kb = if v.flags.contains(mm_core::vma::VmFlags::HUGETLB) {
                crate::mm::hugetlb::HSize::of_vma(v).kb()
            } else {
                4
            };
            let _ = write!(out, " kernelpagesize_kB={}", crate::fmt::Dec(kb));
        }
        out.push('\n');
    }
    out
}
