//! The `--verify` checks that need the guest's descriptor:
//!
//! - `freed-mapped`: no frame both inside a free buddy block (free lists
//!   or per-CPU lists) and mapped by a kernel mapping other than the direct
//!   map (vmalloc area, kernel image...) or by a user mapping;
//! - `pt-owner`: every page-table page reachable from `kernel_cr3` and each
//!   process's CR3 is either a boot-time table (memblock memory the buddy
//!   allocator never managed: no block head covers it) or an allocated
//!   block owned `PageTable`;
//! - `access`: the guest's access-rights records (what the CPU did) against
//!   mm-core's `translate` (what the model predicts), fault and error code;
//! - `refcount`, `cow-ro`, `isolation`: over [`UserMaps`], every leaf of
//!   every live process's user half (the process table's CR3s, walked with
//!   mm-core's `mappings`), with the rules mm-core's descriptor module
//!   documents: a user frame (owner `UserAnon`) has one reference per user
//!   PTE mapping it; the shared zero page (owner `Reserved`, Linux's
//!   `PG_reserved` `ZERO_PAGE`) is never counted and keeps refcount 1;
//!   PTEs of `MAP_SHARED` mappings carry `PTE_MAP_SHARED` (bit 9), the only
//!   way the host, which cannot see VMAs, tells sharing that may be
//!   writable from copy-on-write sharing that must not be.

use super::guest::{Block, BlockKind, GuestState};
use super::spec::Check;
use super::verify::CheckResult;
use super::views::for_each_leaf;
use super::GuestPhys;
use mm_core::addr::{PageSize, VirtAddr};
use mm_core::buddy::PageOwner;
use mm_core::descriptor::{AccessRecord, PTE_MAP_SHARED};
use mm_core::mem::PhysMem;
use mm_core::paging::mapper::{mappings, MappingError};
use mm_core::paging::tables;
use mm_core::paging::{translate, Access, CpuContext, Fault, PteFlags};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// User space ends here: the lower canonical half of 4-level paging, an
/// architectural bound (the guest's layout comes from its descriptor).
pub const USER_END: u64 = mm_core::abi::layout::USER_END;
/// Most page-table pages `pt-owner` visits per run (far above any real
/// tree; hostile trees stop here).
pub const TABLE_BUDGET: usize = 1 << 18;

/// A root to check and how much of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    /// The CR3 value.
    pub cr3: u64,
    /// Whose ("kernel", "pid 3", "vCPU").
    pub whose: &'static str,
    /// The process id, if a process's.
    pub pid: Option<u32>,
    /// Only the user half (the kernel half is the kernel's, checked once).
    pub user_only: bool,
}

fn region(gs: &GuestState<'_>, va: u64) -> &'static str {
    let d = &gs.desc;
    if va < d.user_end_va {
        "user space"
    } else if (d.vmalloc_va.start..d.vmalloc_va.end).contains(&va) {
        "the vmalloc area"
    } else if d.kernel_map_va != 0 && va >= d.kernel_map_va {
        "the kernel image"
    } else if va >= d.vmemmap_va && va < d.vmemmap_va.saturating_add(d.vmemmap_size) {
        "vmemmap"
    } else {
        "a kernel mapping"
    }
}

fn root_name(r: &Root) -> String {
    match r.pid {
        Some(p) => format!("pid {p}'s CR3 {:#x}", r.cr3),
        None => format!("the {} CR3 {:#x}", r.whose, r.cr3),
    }
}

fn free_desc(b: &Block) -> String {
    let list = if b.kind == BlockKind::Pcp { "a per-CPU list" } else { "the free lists" };
    format!("order-{} block at pfn {:#x} on {list}", b.order, b.pfn)
}

/// `freed-mapped` over the leaves of `roots` (walked in `base`'s paging
/// mode, at most `budget` entry reads per root), streamed.
pub fn freed_mapped(gs: &GuestState<'_>, roots: &[Root], base: &CpuContext, budget: u64) -> CheckResult {
    let direct = gs.desc.page_offset_va..gs.desc.page_offset_va.saturating_add(gs.desc.direct_map_size);
    let mut violations = Vec::new();
    let mut found = 0u64;
    let mut errors = Vec::new();
    let mut leaves = 0u64;
    let free_pages: u64 = gs.blocks.iter().filter(|b| b.is_free()).map(|b| 1u64 << b.order).sum();
    let phys = GuestPhys(gs.memory());
    for r in roots {
        let listing = for_each_leaf(&phys, &CpuContext { cr3: r.cr3, ..*base }, budget, |e| {
            if direct.contains(&e.va) || (r.user_only && e.va >= USER_END) {
                return;
            }
            leaves += 1;
            let (first, end) = (e.pa >> 12, (e.pa >> 12) + (e.size >> 12).max(1));
            // The blocks overlapping [first, end), not frame by frame: a
            // hostile 1 GiB leaf costs its blocks, not 262144 lookups.
            let mut i = gs.blocks.partition_point(|b| b.end_pfn() <= first);
            while let Some(b) = gs.blocks.get(i).filter(|b| b.pfn < end) {
                i += 1;
                if !b.is_free() {
                    continue;
                }
                found += 1;
                if violations.len() >= super::views::VIOLATIONS_MAX {
                    continue;
                }
                let pfn = b.pfn.max(first);
                let va = e.va + ((pfn - first) << 12);
                violations.push(format!(
                    "frame {pfn:#x} is free ({}) but {} maps it at {va:#x} ({}): a use-after-free waiting to happen",
                    free_desc(b),
                    root_name(r),
                    region(gs, va)
                ));
            }
        });
        errors.extend(listing.incomplete());
    }
    let mut res = CheckResult::new(
        Check::FreedMapped,
        format!("{leaves} non-direct-map leaves under {} roots against {free_pages} free frames", roots.len()),
        violations,
    )
    .with_errors(errors);
    res.violations_omitted += found.saturating_sub(res.violations.len() as u64 + res.violations_omitted);
    res
}

/// Every table page under `cr3` (PML4, PDPTs, PDs, PTs), each subtree
/// once (mm-core's table lister, skipping tables seen under an earlier
/// root or through a loop); tables outside RAM are reported, not followed.
pub fn table_pages<M: PhysMem + ?Sized>(
    mem: &M,
    ctx: &CpuContext,
    user_only: bool,
    seen: &mut HashSet<u64>,
    out: &mut Vec<(u64, &'static str)>,
    problems: &mut Vec<String>,
) {
    let range = user_only.then_some(0..USER_END);
    let mut it = tables(mem, ctx, range);
    while let Some(t) = it.next() {
        let t = match t {
            Ok(t) => t,
            Err(MappingError::TableOutsideMemory { level, table, .. }) => {
                if problems.len() < super::views::PROBLEMS_MAX {
                    problems.push(format!("{} at {:#x} is outside guest RAM", level.sdm_name(), table.0));
                }
                continue;
            }
            Err(e) => {
                problems.push(format!("listing the tables under CR3 {:#x}: {e:?}", ctx.cr3));
                return;
            }
        };
        if !seen.insert(t.table.0) {
            it.skip_children();
            continue;
        }
        if seen.len() > TABLE_BUDGET {
            problems.push(format!("stopped after {TABLE_BUDGET} table pages: the tables loop or are absurdly large"));
            return;
        }
        out.push((t.table.0, t.level.sdm_name()));
    }
}

/// `pt-owner` for the tables under `roots`.
pub fn pt_owner(gs: &GuestState<'_>, base: &CpuContext, roots: &[Root]) -> CheckResult {
    let phys = GuestPhys(gs.memory());
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    let mut tables = Vec::new();
    let mut violations = Vec::new();
    let (mut boot, mut owned) = (0u64, 0u64);
    for r in roots {
        let start = tables.len();
        table_pages(&phys, &CpuContext { cr3: r.cr3, ..*base }, r.user_only, &mut seen, &mut tables, &mut problems);
        for &(pa, level) in &tables[start..] {
            let pfn = pa >> 12;
            match gs.block_of(pfn) {
                None if pfn < gs.desc.nr_pfns => boot += 1,
                None => violations.push(format!(
                    "{level} page {pa:#x} under {} has no page descriptor (pfn beyond nr_pfns {:#x})",
                    root_name(r),
                    gs.desc.nr_pfns
                )),
                Some(b) => match b.kind {
                    BlockKind::Allocated(mm_core::buddy::PageOwner::PageTable) => owned += 1,
                    BlockKind::Free | BlockKind::Pcp => violations.push(format!(
                        "{level} page {pa:#x} under {} is free memory ({}): the table was freed while still in use",
                        root_name(r),
                        free_desc(b)
                    )),
                    BlockKind::Slab { cache, .. } => violations.push(format!(
                        "{level} page {pa:#x} under {} is a slab page (cache id {}), not a page table",
                        root_name(r),
                        cache as i32 - 1
                    )),
                    BlockKind::Allocated(o) => violations.push(format!(
                        "{level} page {pa:#x} under {} is allocated with owner {o:?}, not PageTable",
                        root_name(r)
                    )),
                },
            }
        }
    }
    // Tables outside RAM are the guest's fault (a violation); the budget
    // running out means the check did not look at everything (an error).
    let (incomplete, outside): (Vec<String>, Vec<String>) =
        problems.into_iter().partition(|p| p.starts_with("stopped"));
    violations.extend(outside);
    CheckResult::new(
        Check::PtOwner,
        format!(
            "{} table pages under {} roots: {boot} boot-time (never buddy-managed; the guest counts {}), {owned} owned PageTable (the guest counts {})",
            tables.len(),
            roots.len(),
            gs.desc.boot_table_pages,
            gs.desc.table_pages
        ),
        violations,
    )
    .with_errors(incomplete)
}

/// Most user leaves (4 KiB frames, large pages counted frame by frame)
/// [`user_maps`] collects per checkpoint: far above any real guest here;
/// a hostile one stops there with a noted problem.
pub const USER_FRAME_BUDGET: u64 = 1 << 19;

/// One user PTE mapping a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLeaf {
    /// Whose address space.
    pub pid: u32,
    /// The virtual address of the 4 KiB page.
    pub va: u64,
    /// Writable through every level.
    pub writable: bool,
    /// The leaf carries `PTE_MAP_SHARED` (a MAP_SHARED mapping).
    pub shared: bool,
}

impl UserLeaf {
    fn describe(&self) -> String {
        let rw = if self.writable { "rw" } else { "ro" };
        let sh = if self.shared { ", MAP_SHARED" } else { "" };
        format!("pid {} at {:#x} ({rw}{sh})", self.pid, self.va)
    }
}

/// Every frame the live processes' user halves map, with its mappers.
#[derive(Debug, Default)]
pub struct UserMaps {
    /// Mappers by pfn.
    pub frames: BTreeMap<u64, Vec<UserLeaf>>,
    /// Process address spaces walked.
    pub processes: usize,
    /// User leaves seen (4 KiB frames).
    pub leaves: u64,
    /// Subtrees that could not be read, budgets that ran out.
    pub problems: Vec<String>,
}

impl UserMaps {
    fn mappers(&self, pfn: u64) -> &[UserLeaf] {
        self.frames.get(&pfn).map_or(&[], Vec::as_slice)
    }
}

fn list(leaves: &[UserLeaf]) -> String {
    let mut v: Vec<String> = leaves.iter().take(4).map(UserLeaf::describe).collect();
    if leaves.len() > 4 {
        v.push(format!("{} more", leaves.len() - 4));
    }
    v.join(", ")
}

/// Walks the user half of every process root in `roots` (those with a
/// pid; the kernel's and a vCPU-only root are not processes) with
/// mm-core's `mappings`, in the paging mode of `base`.
pub fn user_maps<M: PhysMem + ?Sized>(mem: &M, base: &CpuContext, roots: &[Root]) -> UserMaps {
    let mut um = UserMaps::default();
    let mut budget = USER_FRAME_BUDGET;
    for r in roots {
        let Some(pid) = r.pid else { continue };
        um.processes += 1;
        let ctx = CpuContext { cr3: r.cr3, ..*base };
        for m in mappings(mem, &ctx).budget(super::views::DEFAULT_BUDGET) {
            let m = match m {
                Ok(m) if m.va.0 >= USER_END => break,
                Ok(m) => m,
                Err(MappingError::TableOutsideMemory { va, .. }) if va.0 >= USER_END => break,
                Err(MappingError::Reserved { va, .. }) if va.0 >= USER_END => break,
                Err(e) => {
                    let what = match e {
                        MappingError::TableOutsideMemory { level, table, va } => format!(
                            "the level-{} table at {:#x} (for addresses from {:#x}) is outside guest RAM",
                            level as u8, table.0, va.0
                        ),
                        MappingError::Reserved { va, entry, .. } => {
                            format!("the entry {:#x} for {:#x} has reserved bits set", entry.0, va.0)
                        }
                        MappingError::BudgetExhausted => {
                            "the walk read too many entries (the tables loop or share subtrees)".to_string()
                        }
                    };
                    um.problems.push(format!("pid {pid}'s CR3 {:#x}: {what}; its user half is incomplete", r.cr3));
                    continue;
                }
            };
            let writable = m.flags.contains(PteFlags::RW);
            let shared = m.leaf.0 & PTE_MAP_SHARED.0 != 0;
            let pages = (m.size.bytes() >> 12).max(1);
            for i in 0..pages {
                if budget == 0 {
                    um.problems.push(format!(
                        "stopped after {USER_FRAME_BUDGET} user frames (2 GiB; the host's memory for the per-frame map is bounded there): the rest of the user halves was not examined"
                    ));
                    return um;
                }
                budget -= 1;
                um.leaves += 1;
                let leaf = UserLeaf { pid, va: m.va.0 + (i << 12), writable, shared };
                um.frames.entry((m.pa.0 >> 12) + i).or_default().push(leaf);
            }
        }
    }
    um
}

/// The physical addresses of the 2 MiB leaves in the user half of every
/// process root in `roots` (each address once): where transparent huge
/// pages and hugetlb pages are mapped. A subtree that cannot be read is
/// skipped (the checks report it).
pub fn user_huge_leaves<M: PhysMem + ?Sized>(mem: &M, base: &CpuContext, roots: &[Root]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for r in roots.iter().filter(|r| r.pid.is_some()) {
        let ctx = CpuContext { cr3: r.cr3, ..*base };
        for m in mappings(mem, &ctx).budget(super::views::DEFAULT_BUDGET) {
            match m {
                Ok(m) if m.va.0 >= USER_END => break,
                Ok(m) if m.size == PageSize::Size2M => {
                    out.insert(m.pa.0);
                }
                Ok(_) => {}
                Err(MappingError::TableOutsideMemory { va, .. } | MappingError::Reserved { va, .. })
                    if va.0 < USER_END => {}
                Err(_) => break,
            }
        }
    }
    out
}

fn owner_of(gs: &GuestState<'_>, pfn: u64) -> Option<BlockKind> {
    gs.block_of(pfn).map(|b| b.kind)
}

fn is_zero_page(gs: &GuestState<'_>, pfn: u64) -> bool {
    owner_of(gs, pfn) == Some(BlockKind::Allocated(PageOwner::Reserved))
}

fn user_detail(um: &UserMaps, what: &str) -> String {
    format!("{} frames under {} user leaves of {} processes: {what}", um.frames.len(), um.leaves, um.processes)
}

/// `refcount`: every `UserAnon` block's refcount equals the user PTEs
/// mapping its frames, plus one for a page in the swap cache
/// (`swap_cached`: pfn -> slot); the zero page (owner `Reserved`) keeps exactly the
/// kernel's one reference however many map it; a page-cache page holds
/// its mappers' references plus at most the cache's and the swap
/// cache's; a mapped frame the buddy allocator calls free has refcount 0,
/// which no mapper allows.
pub fn refcount(gs: &GuestState<'_>, um: &UserMaps, swap_cached: &BTreeMap<u64, u64>) -> CheckResult {
    let mut violations = Vec::new();
    let mut user_frames = 0u64;
    let mut huge_pages = 0u64;
    let mut cache_pages = 0u64;
    let mut zero_maps = 0usize;
    for b in &gs.blocks {
        match b.kind {
            BlockKind::Allocated(PageOwner::UserAnon) => {
                user_frames += 1;
                let mappers: Vec<UserLeaf> =
                    (b.pfn..b.end_pfn()).flat_map(|pfn| um.mappers(pfn).iter().copied()).collect();
                let cached = (b.pfn..b.end_pfn()).filter(|p| swap_cached.contains_key(p)).count();
                if b.refcount as usize != mappers.len() + cached {
                    let hint = if (b.refcount as usize) > mappers.len() {
                        "a reference no mapping accounts for: the frame leaks when its mappers exit"
                    } else {
                        "a mapping holding no reference: the frame will be freed while still mapped"
                    };
                    let whom = if mappers.is_empty() { "none".to_string() } else { list(&mappers) };
                    let cache = if cached > 0 { " and the swap cache holds it" } else { "" };
                    violations.push(format!(
                        "user frame at {:#x} has refcount {} but {} user PTEs map it ({whom}){cache}: {hint}",
                        b.pfn << 12,
                        b.refcount,
                        mappers.len()
                    ));
                }
            }
            BlockKind::Allocated(PageOwner::HugeTlb) => {
                // A hugetlb page: one reference for the pool, one per huge
                // leaf; a leaf maps every frame of the block, so every
                // frame has as many mappers as the head. A 1 GiB page is
                // 256 order-10 blocks, each counted so (mm/hugetlb.rs).
                huge_pages += 1;
                let leaves = um.mappers(b.pfn).len();
                if b.refcount as usize != 1 + leaves {
                    violations.push(format!(
                        "hugetlb page at {:#x} has refcount {} but {} huge leaves map it (want the pool's 1 + {}): {}",
                        b.pfn << 12,
                        b.refcount,
                        leaves,
                        leaves,
                        if (b.refcount as usize) > 1 + leaves {
                            "a reference no mapping accounts for: the page never returns to the pool"
                        } else {
                            "a mapping holding no reference: the page can go back to the pool while mapped"
                        }
                    ));
                }
                if let Some(pfn) = (b.pfn..b.end_pfn()).find(|&p| um.mappers(p).len() != leaves) {
                    violations.push(format!(
                        "hugetlb page at {:#x}: frame {:#x} has {} mappers but the head has {}: a leaf maps part of the huge page",
                        b.pfn << 12,
                        pfn << 12,
                        um.mappers(pfn).len(),
                        leaves
                    ));
                }
            }
            BlockKind::Allocated(PageOwner::PageCache) => {
                // A page-cache page: one reference per PTE mapping it, one
                // for the cache while its file's index holds it (none once
                // truncate or drop_caches took it out while mapped), one
                // for the swap cache while it is there.
                cache_pages += 1;
                let mappers = um.mappers(b.pfn);
                let cached = swap_cached.contains_key(&b.pfn) as usize;
                let rc = b.refcount as usize;
                if rc < mappers.len().max(1) || rc > mappers.len() + 1 + cached {
                    let whom = if mappers.is_empty() { "none".to_string() } else { list(mappers) };
                    violations.push(format!(
                        "page-cache page at {:#x} has refcount {} but {} user PTEs map it ({whom}): {}",
                        b.pfn << 12,
                        b.refcount,
                        mappers.len(),
                        if rc > mappers.len() {
                            "more than its mappings and the cache's own: the page leaks when it leaves the cache"
                        } else {
                            "a mapping holding no reference: the page can be freed while mapped"
                        }
                    ));
                }
            }
            BlockKind::Allocated(PageOwner::Reserved) => {
                let mappers = um.mappers(b.pfn);
                zero_maps += mappers.len();
                if !mappers.is_empty() && b.refcount != 1 {
                    violations.push(format!(
                        "the zero page at {:#x} has refcount {}: it is never counted on map and keeps the kernel's one reference ({} user PTEs map it)",
                        b.pfn << 12,
                        b.refcount,
                        mappers.len()
                    ));
                }
            }
            BlockKind::Free | BlockKind::Pcp => {
                let mappers = um.mappers(b.pfn);
                if !mappers.is_empty() {
                    violations.push(format!(
                        "frame at {:#x} is free (refcount 0) but {} user PTEs map it ({})",
                        b.pfn << 12,
                        mappers.len(),
                        list(mappers)
                    ));
                }
            }
            _ => {}
        }
    }
    if user_frames == 0 && huge_pages == 0 && cache_pages == 0 && um.processes == 0 && um.problems.is_empty() {
        return CheckResult::not_applicable(Check::Refcount, format!("{NO_PROCESSES}, and no frame is owned UserAnon"));
    }
    let what = format!(
        "{user_frames} user frames' refcounts against their mappers, {cache_pages} page-cache pages' against their mappers and the cache, {huge_pages} hugetlb blocks' against their huge leaves; the zero page is mapped {zero_maps} times and counted 0 times"
    );
    CheckResult::new(Check::Refcount, user_detail(um, &what), violations).with_errors(um.problems.iter().cloned())
}

/// `cow-ro`: a frame with more than one user mapper, any of them private
/// (no `PTE_MAP_SHARED`), is copy-on-write shared: no private mapper may
/// write it. The zero page is read-only in every mapper.
pub fn cow_ro(gs: &GuestState<'_>, um: &UserMaps) -> CheckResult {
    if um.processes == 0 && um.problems.is_empty() {
        return CheckResult::not_applicable(Check::CowRo, NO_PROCESSES.into());
    }
    let mut violations = Vec::new();
    let (mut cow, mut shared) = (0u64, 0u64);
    for (&pfn, leaves) in &um.frames {
        if is_zero_page(gs, pfn) {
            for l in leaves.iter().filter(|l| l.writable) {
                violations.push(format!(
                    "{} maps the zero page at {:#x} writable: a write would change every process's zeros",
                    l.describe(),
                    pfn << 12
                ));
            }
            continue;
        }
        if leaves.len() < 2 {
            continue;
        }
        if leaves.iter().all(|l| l.shared) {
            shared += 1;
            continue;
        }
        cow += 1;
        for l in leaves.iter().filter(|l| l.writable && !l.shared) {
            violations.push(format!(
                "frame at {:#x} is shared copy-on-write by {} mappings ({}) but {} can write it: the others would see its writes",
                pfn << 12,
                leaves.len(),
                list(leaves),
                l.describe()
            ));
        }
    }
    let what = format!("{cow} frames shared copy-on-write, {shared} MAP_SHARED frames");
    CheckResult::new(Check::CowRo, user_detail(um, &what), violations).with_errors(um.problems.iter().cloned())
}

/// `isolation`: a private frame (refcount 1, no `PTE_MAP_SHARED`, not the
/// zero page) is reachable from one process only; a MAP_SHARED frame is
/// not also mapped privately; and user PTEs map only user frames (or the
/// zero page), never kernel memory.
pub fn isolation(gs: &GuestState<'_>, um: &UserMaps) -> CheckResult {
    if um.processes == 0 && um.problems.is_empty() {
        return CheckResult::not_applicable(Check::Isolation, NO_PROCESSES.into());
    }
    let mut violations = Vec::new();
    let mut private = 0u64;
    for (&pfn, leaves) in &um.frames {
        let kind = owner_of(gs, pfn);
        match kind {
            Some(BlockKind::Allocated(PageOwner::UserAnon | PageOwner::Reserved | PageOwner::HugeTlb)) => {}
            // A file's page is legitimately mapped by many processes, shared
            // and privately (read-only until a write copies it), as in Linux.
            Some(BlockKind::Allocated(PageOwner::PageCache)) => continue,
            // A freed frame still mapped is freed-mapped's and refcount's.
            Some(BlockKind::Free | BlockKind::Pcp) => continue,
            other => {
                let what = match other {
                    None => "not a buddy-managed frame (boot memory or the kernel image)".to_string(),
                    Some(BlockKind::Slab { .. }) => "a slab page".to_string(),
                    Some(BlockKind::Allocated(o)) => format!("kernel memory owned {o:?}"),
                    Some(_) => "kernel memory".to_string(),
                };
                violations.push(format!(
                    "frame at {:#x} is {what}, yet user PTEs map it ({})",
                    pfn << 12,
                    list(leaves)
                ));
                continue;
            }
        }
        if is_zero_page(gs, pfn) {
            continue;
        }
        let mut pids: Vec<u32> = leaves.iter().map(|l| l.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        if pids.len() < 2 {
            private += 1;
            continue;
        }
        let any_shared = leaves.iter().any(|l| l.shared);
        if any_shared && leaves.iter().any(|l| !l.shared) {
            violations.push(format!(
                "frame at {:#x} is MAP_SHARED in some processes and privately mapped in others ({})",
                pfn << 12,
                list(leaves)
            ));
            continue;
        }
        // A hugetlb page's refcount also holds the pool's reference.
        let block = gs.block_of(pfn);
        let pool = block.is_some_and(|b| b.kind == BlockKind::Allocated(PageOwner::HugeTlb)) as u32;
        let refcount = block.map_or(0, |b| b.refcount - pool.min(b.refcount));
        if !any_shared && refcount == 1 {
            let owner = leaves[0];
            for l in leaves.iter().filter(|l| l.pid != owner.pid) {
                violations.push(format!(
                    "pid {}'s private frame at {:#x} (refcount 1, mapped at {:#x}) is reachable through pid {}'s CR3 at {:#x}",
                    owner.pid,
                    pfn << 12,
                    owner.va,
                    l.pid,
                    l.va
                ));
            }
        }
    }
    let what = format!("{private} frames private to one process");
    CheckResult::new(Check::Isolation, user_detail(um, &what), violations).with_errors(um.problems.iter().cloned())
}

/// What the model predicts for one record: `Ok(None)` no fault,
/// `Ok(Some(error code))` a #PF, `Err` anything else (#GP, tables outside
/// RAM, a record the model cannot read).
pub fn predict<M: PhysMem + ?Sized>(mem: &M, base: &CpuContext, r: &AccessRecord) -> Result<Option<u32>, String> {
    let access = match r.access {
        0 => Access::Read,
        1 => Access::Write,
        2 => Access::Execute,
        a => return Err(format!("unknown access kind {a}")),
    };
    if r.cpl != 0 && r.cpl != 3 {
        return Err(format!("CPL {} is neither 0 nor 3", r.cpl));
    }
    let ctx = CpuContext { cr3: r.cr3, cpl: r.cpl, ..*base };
    match translate(mem, &ctx, VirtAddr(r.va), access) {
        Ok(_) => Ok(None),
        Err(Fault::PageFault(pf)) => Ok(Some(pf.error_code.0)),
        Err(f) => Err(f.to_string()),
    }
}

fn access_name(a: u8) -> &'static str {
    match a {
        0 => "read",
        1 => "write",
        2 => "fetch",
        _ => "access",
    }
}

/// Why `access` has nothing to examine.
pub const NO_ACCESS_RECORDS: &str =
    "no access-rights records (the guest publishes them at 'access-test-done', with selftest=access)";
/// Why `cow-ro` and `isolation` have nothing to examine.
pub const NO_PROCESSES: &str = "no user processes: nothing maps user frames";

/// `access`: every record against [`predict`].
pub fn access<M: PhysMem + ?Sized>(mem: &M, base: &CpuContext, records: &[AccessRecord]) -> CheckResult {
    if records.is_empty() {
        return CheckResult::not_applicable(Check::Access, NO_ACCESS_RECORDS.into());
    }
    let show = |e: Option<u32>| match e {
        None => "no fault".to_string(),
        Some(c) => format!("#PF {}", mm_core::paging::PfErrorCode(c)),
    };
    let mut violations = Vec::new();
    let mut faults = 0;
    for (i, r) in records.iter().enumerate() {
        let cpu = (r.faulted != 0).then_some(r.error_code);
        faults += cpu.is_some() as u32;
        let what =
            format!("record {i}: {} of {:#x} at CPL {} under CR3 {:#x}", access_name(r.access), r.va, r.cpl, r.cr3);
        match predict(mem, base, r) {
            Ok(model) if model == cpu => {}
            Ok(model) => {
                violations.push(format!("{what}: the CPU gave {}, the model predicts {}", show(cpu), show(model)))
            }
            Err(e) => violations.push(format!("{what}: the CPU gave {}, the model cannot predict it: {e}", show(cpu))),
        }
    }
    CheckResult::new(
        Check::Access,
        format!(
            "{} recorded accesses ({faults} faulted; {} at CPL 0, {} at CPL 3) compared with the software MMU",
            records.len(),
            records.iter().filter(|r| r.cpl == 0).count(),
            records.iter().filter(|r| r.cpl == 3).count()
        ),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_core::addr::PhysAddr;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000; 0x40_0000 maps
    /// a read-only supervisor page, 0x40_1000 a user rw nx page, 0x40_2000
    /// nothing.
    fn mem() -> GuestMemoryMmap {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let w = |a: u64, v: u64| m.write_obj(v, GuestAddress(a)).unwrap();
        w(0x1000, 0x2000 | 7);
        w(0x2000, 0x3000 | 7);
        w(0x3000 + 2 * 8, 0x4000 | 7);
        w(0x4000, 0x8000 | 1);
        w(0x4000 + 8, 0x9000 | 7 | 1 << 63);
        m
    }

    fn rec(va: u64, access: u8, faulted: bool, error_code: u32) -> AccessRecord {
        AccessRecord { va, cr3: 0x1000, access, cpl: 0, faulted: faulted as u8, pad: 0, error_code }
    }

    #[test]
    fn access_records_agreeing_pass_and_a_flipped_one_is_named() {
        let m = mem();
        let base = CpuContext::kernel(PhysAddr(0x1000));
        let good = vec![
            rec(0x40_0008, 0, false, 0),
            rec(0x40_0008, 1, true, 0x3),
            rec(0x40_0000, 2, false, 0),
            rec(0x40_1000, 2, true, 0x11),
            rec(0x40_2008, 0, true, 0x0),
            rec(0x40_2008, 1, true, 0x2),
        ];
        let r = access(&GuestPhys(&m), &base, &good);
        assert!(r.passed, "{r:?}");
        let mut bad = good.clone();
        bad[1].faulted = 0;
        let r = access(&GuestPhys(&m), &base, &bad);
        assert!(!r.passed);
        assert_eq!(r.violations.len(), 1);
        assert!(r.violations[0].starts_with("record 1: write of 0x400008"), "{:?}", r.violations);
        assert!(
            r.violations[0].contains("the CPU gave no fault, the model predicts #PF 0x3 [P W]"),
            "{:?}",
            r.violations
        );
        bad[1] = rec(0x40_0008, 1, true, 0x7);
        assert!(!access(&GuestPhys(&m), &base, &bad).passed, "a wrong error code is a disagreement");
        bad[1].access = 9;
        assert!(access(&GuestPhys(&m), &base, &bad).violations[0].contains("unknown access kind 9"));
        let none = access(&GuestPhys(&m), &base, &[]);
        assert!(!none.passed && !none.failed() && !none.applicable(), "no records: not applicable, {none:?}");
        assert!(none.render().starts_with("verify access: not applicable (no access-rights records"), "{none:?}");
    }

    /// The vendor's reserved bit: with bit 8 set in the PML4E, an AMD CPU
    /// faults (0x9) and an Intel one does not; the check agrees with the
    /// CPU only when the model is told the right vendor.
    #[test]
    fn pml4_bit8_records_follow_the_vendor() {
        let m = mem();
        m.write_obj(0x2000u64 | 7 | 0x100, GuestAddress(0x1000)).unwrap();
        let amd_cpu = [rec(0x40_0008, 0, true, 0x9), rec(0x40_0008, 2, true, 0x19)];
        let intel_cpu = [rec(0x40_0008, 0, false, 0), rec(0x40_0000, 2, false, 0)];
        let intel = CpuContext::kernel(PhysAddr(0x1000));
        let amd = intel.with_vendor(mm_core::paging::CpuVendor::Amd);
        assert!(access(&GuestPhys(&m), &amd, &amd_cpu).passed);
        assert!(access(&GuestPhys(&m), &intel, &intel_cpu).passed);
        let r = access(&GuestPhys(&m), &intel, &amd_cpu);
        assert_eq!(r.violations.len(), 2, "{r:?}");
        assert!(r.violations[0].contains("the CPU gave #PF 0x9 [P RSVD], the model predicts no fault"), "{r:?}");
        assert!(!access(&GuestPhys(&m), &amd, &intel_cpu).passed);
    }

    /// Two processes (CR3 0x1000 and 0x5000), each PML4 -> PDPT -> PD ->
    /// PT for 0..2 MiB; the descriptor at 0x8000. Frames: 0x10 shared
    /// copy-on-write (refcount 2), 0x11 MAP_SHARED and writable in both,
    /// 0x12 the zero page (Reserved), 0x13 private to A, 0x14 private to B,
    /// 0x20 a page-table page.
    fn two_processes() -> GuestMemoryMmap {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let w = |a: u64, v: u64| m.write_obj(v, GuestAddress(a)).unwrap();
        for (pml4, pdpt, pd, pt) in [(0x1000, 0x2000, 0x3000, 0x4000), (0x5000, 0x6000, 0x7000, 0x9000)] {
            w(pml4, pdpt | 7);
            w(pdpt, pd | 7);
            w(pd, pt | 7);
        }
        let (ro, rw, sh) = (0x5u64, 0x7u64, PTE_MAP_SHARED.0);
        for pt in [0x4000, 0x9000] {
            w(pt + 0x10 * 8, 0x10000 | ro);
            w(pt + 0x11 * 8, 0x11000 | rw | sh);
            w(pt + 0x12 * 8, 0x12000 | ro);
        }
        w(0x4000 + 0x13 * 8, 0x13000 | rw);
        w(0x9000 + 0x14 * 8, 0x14000 | rw);
        let mut d = mm_core::descriptor::MmDescriptor::new();
        d.nr_pfns = 256;
        d.kernel_cr3 = 0x1000;
        let mut b = [0u8; mm_core::descriptor::DESCRIPTOR_SIZE];
        mm_core::descriptor::Wire::encode(&d, &mut b);
        m.write_slice(&b, GuestAddress(0x8000)).unwrap();
        m
    }

    fn state(m: &GuestMemoryMmap) -> GuestState<'_> {
        let mut gs = GuestState::descriptor(m, Some(0x8000), &CpuContext::kernel(PhysAddr(0))).unwrap();
        let block = |pfn, owner, refcount| Block { pfn, order: 0, kind: BlockKind::Allocated(owner), refcount };
        gs.blocks = vec![
            block(0x10, PageOwner::UserAnon, 2),
            block(0x11, PageOwner::UserAnon, 2),
            block(0x12, PageOwner::Reserved, 1),
            block(0x13, PageOwner::UserAnon, 1),
            block(0x14, PageOwner::UserAnon, 1),
            block(0x20, PageOwner::PageTable, 1),
        ];
        gs
    }

    const ROOTS: [Root; 3] = [
        Root { cr3: 0x1000, whose: "kernel", pid: None, user_only: false },
        Root { cr3: 0x1000, whose: "process", pid: Some(1), user_only: true },
        Root { cr3: 0x5000, whose: "process", pid: Some(2), user_only: true },
    ];

    fn run_all(m: &GuestMemoryMmap, gs: &GuestState<'_>) -> [CheckResult; 3] {
        let um = user_maps(&GuestPhys(m), &CpuContext::kernel(PhysAddr(0)), &ROOTS);
        [refcount(gs, &um, &BTreeMap::new()), cow_ro(gs, &um), isolation(gs, &um)]
    }

    #[test]
    fn refcount_cow_and_isolation_pass_on_consistent_processes() {
        let m = two_processes();
        let gs = state(&m);
        let um = user_maps(&GuestPhys(&m), &CpuContext::kernel(PhysAddr(0)), &ROOTS);
        assert_eq!((um.processes, um.leaves, um.frames.len()), (2, 8, 5), "{um:?}");
        assert_eq!(um.frames[&0x11].iter().filter(|l| l.shared && l.writable).count(), 2);
        for r in run_all(&m, &gs) {
            assert!(r.passed, "{r:?}");
        }
        assert!(cow_ro(&gs, &um).detail.contains("1 frames shared copy-on-write, 1 MAP_SHARED"));
        assert!(refcount(&gs, &um, &BTreeMap::new()).detail.contains("the zero page is mapped 2 times"));
    }

    #[test]
    fn each_broken_invariant_is_named() {
        let m = two_processes();
        let w = |a: u64, v: u64| m.write_obj(v, GuestAddress(a)).unwrap();
        // A copy-on-write page made writable in B.
        w(0x9000 + 0x10 * 8, 0x10000 | 7);
        let [rc, cow, iso] = run_all(&m, &state(&m));
        assert!(rc.passed && iso.passed, "{rc:?} {iso:?}");
        assert!(!cow.passed && cow.violations[0].contains("but pid 2 at 0x10000 (rw) can write it"), "{cow:?}");
        w(0x9000 + 0x10 * 8, 0x10000 | 5);
        // A reference no mapping accounts for.
        let mut gs = state(&m);
        gs.blocks[3].refcount = 2;
        let [rc, cow, iso] = run_all(&m, &gs);
        assert!(cow.passed && iso.passed);
        assert!(rc.violations[0].starts_with("user frame at 0x13000 has refcount 2 but 1 user PTEs map it"), "{rc:?}");
        // A's private frame mapped into B (no reference taken).
        w(0x9000 + 0x15 * 8, 0x13000 | 5);
        let [rc, _, iso] = run_all(&m, &state(&m));
        assert!(!rc.passed, "{rc:?}");
        assert!(
            iso.violations[0].contains("pid 1's private frame at 0x13000 (refcount 1, mapped at 0x13000) is reachable through pid 2's CR3 at 0x15000"),
            "{iso:?}"
        );
        w(0x9000 + 0x15 * 8, 0);
        // The zero page writable; a shared frame mapped privately; a
        // page-table page in user space.
        w(0x9000 + 0x12 * 8, 0x12000 | 7);
        w(0x9000 + 0x11 * 8, 0x11000 | 5);
        w(0x9000 + 0x16 * 8, 0x20000 | 5);
        let [_, cow, iso] = run_all(&m, &state(&m));
        assert!(cow.violations[0].contains("maps the zero page at 0x12000 writable"), "{cow:?}");
        assert!(
            iso.violations.iter().any(|v| v.contains("MAP_SHARED in some processes and privately mapped")),
            "{iso:?}"
        );
        assert!(iso.violations.iter().any(|v| v.contains("kernel memory owned PageTable")), "{iso:?}");
    }

    /// A hugetlb page (an order-9 block owned `HugeTlb`) mapped by one PMD
    /// leaf: refcount 2 (pool + leaf) passes; a refcount missing the pool's
    /// reference, and a leaf covering only part of the block, are named.
    #[test]
    fn hugetlb_pages_count_the_pool_and_one_per_pmd_leaf() {
        let m = two_processes();
        let mut gs = state(&m);
        gs.blocks = vec![Block { pfn: 0x200, order: 9, kind: BlockKind::Allocated(PageOwner::HugeTlb), refcount: 2 }];
        let mut um = UserMaps { processes: 1, ..UserMaps::default() };
        for i in 0..512 {
            let leaf = UserLeaf { pid: 1, va: 0x4000_0000 + (i << 12), writable: true, shared: false };
            um.frames.entry(0x200 + i).or_default().push(leaf);
            um.leaves += 1;
        }
        let ok = refcount(&gs, &um, &BTreeMap::new());
        assert!(ok.passed && ok.detail.contains("1 hugetlb blocks' against their huge leaves"), "{ok:?}");
        assert!(isolation(&gs, &um).passed);
        gs.blocks[0].refcount = 1;
        let bad = refcount(&gs, &um, &BTreeMap::new());
        assert!(
            bad.violations[0].starts_with("hugetlb page at 0x200000 has refcount 1 but 1 huge leaves map it"),
            "{bad:?}"
        );
        gs.blocks[0].refcount = 2;
        um.frames.remove(&0x3ff);
        let part = refcount(&gs, &um, &BTreeMap::new());
        assert!(part.violations[0].contains("frame 0x3ff000 has 0 mappers but the head has 1"), "{part:?}");
    }

    /// A 1 GiB hugetlb page (256 order-10 blocks owned `HugeTlb`, each
    /// counting the pool and every PUD leaf) mapped by one PUD leaf:
    /// passes; one block short of the leaf's reference is named.
    #[test]
    fn gigantic_hugetlb_pages_count_each_block() {
        let m = two_processes();
        let mut gs = state(&m);
        let base = 0x40000u64;
        gs.blocks = (0..256)
            .map(|i| Block {
                pfn: base + i * 1024,
                order: 10,
                kind: BlockKind::Allocated(PageOwner::HugeTlb),
                refcount: 2,
            })
            .collect();
        let mut um = UserMaps { processes: 1, ..UserMaps::default() };
        for i in 0..1u64 << 18 {
            let leaf = UserLeaf { pid: 1, va: 0x40_0000_0000 + (i << 12), writable: true, shared: false };
            um.frames.entry(base + i).or_default().push(leaf);
            um.leaves += 1;
        }
        let ok = refcount(&gs, &um, &BTreeMap::new());
        assert!(ok.passed && ok.detail.contains("256 hugetlb blocks' against their huge leaves"), "{ok:?}");
        gs.blocks[7].refcount = 1;
        let bad = refcount(&gs, &um, &BTreeMap::new());
        assert_eq!(bad.violations.len(), 1, "{bad:?}");
        assert!(
            bad.violations[0].starts_with("hugetlb page at 0x41c00000 has refcount 1 but 1 huge leaves"),
            "{bad:?}"
        );
    }

    #[test]
    fn unreadable_user_tables_are_problems_not_panics() {
        let m = two_processes();
        m.write_obj(0x7_0000_0000u64 | 7, GuestAddress(0x5000 + 8)).unwrap();
        let um = user_maps(&GuestPhys(&m), &CpuContext::kernel(PhysAddr(0)), &ROOTS);
        assert!(um.problems.iter().any(|p| p.contains("outside guest RAM")), "{:?}", um.problems);
        assert!(!refcount(&state(&m), &um, &BTreeMap::new()).passed, "an incomplete walk cannot vouch for refcounts");
    }

    #[test]
    fn table_pages_are_listed_once_and_loops_end() {
        let m = mem();
        let ctx = CpuContext::kernel(PhysAddr(0x1000));
        let (mut seen, mut out, mut problems) = (HashSet::new(), vec![], vec![]);
        table_pages(&GuestPhys(&m), &ctx, false, &mut seen, &mut out, &mut problems);
        let pas: Vec<u64> = out.iter().map(|t| t.0).collect();
        assert_eq!(pas, vec![0x1000, 0x2000, 0x3000, 0x4000]);
        // A self-loop and an entry outside RAM.
        m.write_obj(0x1000u64 | 3, GuestAddress(0x1008)).unwrap();
        m.write_obj(0x7_0000_0000u64 | 3, GuestAddress(0x1010)).unwrap();
        let (mut seen, mut out, mut problems) = (HashSet::new(), vec![], vec![]);
        table_pages(&GuestPhys(&m), &ctx, false, &mut seen, &mut out, &mut problems);
        assert_eq!(out.len(), 5, "{out:?}");
        assert!(problems[0].contains("outside guest RAM"), "{problems:?}");
    }
}
