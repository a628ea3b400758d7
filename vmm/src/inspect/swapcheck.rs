//! `--verify swap` and `--verify lru`: the guest's swap and LRU state,
//! checked from outside. The guest publishes where its arrays live (the
//! descriptor's swap section); the host reads them through the kernel's
//! page tables, walks every process's user half for swap PTEs with
//! mm-core's page-table editor, and reads the swap file itself, so a page
//! the guest believes it wrote is checked against what the disk holds.

use super::guest::{BlockKind, GuestState};
use super::invariants::{Root, UserMaps};
use super::spec::Check;
use super::verify::CheckResult;
use super::GuestPhys;
use mm_core::addr::{PhysAddr, VirtAddr};
use mm_core::buddy::PageOwner;
use mm_core::lru::{flags::PG_LRU, LruList};
use mm_core::paging::swap::SwapEntry;
use mm_core::paging::{walk, CpuContext, LeafKinds, Mapper};
use mm_core::swap::{page_checksum, verify_swap_map, SWAP_HAS_CACHE, SWAP_MAP_BAD};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Leaves (present or swapped) one process walk may visit: a hostile
/// guest's alias tree stops here, reported.
const LEAF_BUDGET: u64 = 1 << 22;
/// Bytes of an `LruNode` and a `PageExt` in the guest's arrays.
const LRU_NODE: u64 = 12;
const PAGE_EXT: u64 = 16;

/// Reads the guest kernel's virtual memory through its page tables, one
/// translation per page.
pub(crate) struct Kva<'a> {
    phys: GuestPhys<'a>,
    ctx: CpuContext,
    pages: HashMap<u64, Option<u64>>,
}

impl<'a> Kva<'a> {
    pub(crate) fn new(gs: &GuestState<'a>) -> Self {
        Kva { phys: GuestPhys(gs.memory()), ctx: gs.kctx, pages: HashMap::new() }
    }

    /// The physical address of kernel address `va`, if mapped.
    fn pa(&mut self, va: u64) -> Option<u64> {
        let page = va & !0xfff;
        let (phys, ctx) = (&self.phys, &self.ctx);
        let base = *self.pages.entry(page).or_insert_with(|| walk(phys, ctx, VirtAddr(page)).ok().map(|t| t.pa.0));
        base.map(|b| b + (va & 0xfff))
    }

    /// `buf.len()` bytes at `va`, page by page.
    pub(crate) fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), String> {
        let mut done = 0;
        while done < buf.len() {
            let at = va + done as u64;
            let n = (0x1000 - (at & 0xfff) as usize).min(buf.len() - done);
            let pa = self.pa(at).ok_or_else(|| format!("kernel address {at:#x} is not mapped"))?;
            mm_core::mem::PhysMem::read(&self.phys, PhysAddr(pa), &mut buf[done..done + n])
                .map_err(|e| format!("kernel address {at:#x}: {e}"))?;
            done += n;
        }
        Ok(())
    }

    fn array(&mut self, va: u64, len: u64, what: &str) -> Result<Vec<u8>, String> {
        // The arrays are sized by the guest's own slot count: bound it by
        // what a swap area of the guest's RAM size could need at most.
        let len = usize::try_from(len).map_err(|_| format!("{what}: size {len:#x} is absurd"))?;
        if len > 1 << 30 {
            return Err(format!("{what}: {len:#x} bytes is more than any swap area needs: the descriptor is corrupt"));
        }
        let mut v = vec![0u8; len];
        self.read(va, &mut v).map_err(|e| format!("{what}: {e}"))?;
        Ok(v)
    }
}

/// What the swap-cache and page_ext arrays say about the pages in the swap
/// cache: pfn -> slot.
pub struct SwapCache {
    /// Cached pages by pfn, with their slot.
    pub by_pfn: BTreeMap<u64, u64>,
}

/// Reads the guest's swap-cache array (empty when swap is off).
pub fn swap_cache(gs: &GuestState<'_>) -> Result<SwapCache, String> {
    let d = gs.desc.swap;
    let mut by_pfn = BTreeMap::new();
    if d.nr_slots == 0 {
        return Ok(SwapCache { by_pfn });
    }
    let mut k = Kva::new(gs);
    let cache = k.array(d.cache_va, d.nr_slots * 4, "the swap-cache array")?;
    for (slot, c) in cache.chunks_exact(4).enumerate() {
        let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if v != 0 {
            by_pfn.insert(v as u64 - 1, slot as u64);
        }
    }
    Ok(SwapCache { by_pfn })
}

/// The swap PTEs of every process, by slot offset (area 0), and those
/// naming another area or malformed.
struct SwapPtes {
    by_slot: BTreeMap<u64, u32>,
    total: u64,
    bad: Vec<String>,
    problems: Vec<String>,
}

fn swap_ptes(gs: &GuestState<'_>, roots: &[Root]) -> SwapPtes {
    let mut out = SwapPtes { by_slot: BTreeMap::new(), total: 0, bad: Vec::new(), problems: Vec::new() };
    let mut phys = GuestPhys(gs.memory());
    for r in roots {
        let Some(pid) = r.pid else { continue };
        let mut budget = LEAF_BUDGET;
        let pt = Mapper::new(PhysAddr(r.cr3), false, 52, false);
        let res = pt.for_each_leaf_within(
            &mut phys,
            0..gs.desc.user_end_va,
            LeafKinds::NonNone,
            super::views::DEFAULT_BUDGET,
            |_, l| {
                if budget == 0 {
                    return false;
                }
                budget -= 1;
                if l.entry.is_present() {
                    return true;
                }
                out.total += 1;
                match SwapEntry::from_pte(l.entry) {
                    Some(e) if e.ty() == 0 => *out.by_slot.entry(e.offset()).or_default() += 1,
                    Some(e) => out.bad.push(format!(
                        "pid {pid} at {:#x}: swap entry names area {} (the guest has one, area 0)",
                        l.va.0,
                        e.ty()
                    )),
                    None => out
                        .bad
                        .push(format!("pid {pid} at {:#x}: non-present PTE {:#x} is no swap entry", l.va.0, l.entry.0)),
                }
                true
            },
        );
        if budget == 0 {
            out.problems
                .push(format!("pid {pid}'s user half has more than {LEAF_BUDGET} entries: not all were examined"));
        }
        if let Err(e) = res {
            out.problems.push(format!("pid {pid}'s tables at {:#x} could not be walked: {e}", r.cr3));
        }
    }
    out
}

/// `--verify swap` (see [`Check::Swap`]).
pub fn swap(gs: &GuestState<'_>, roots: &[Root], swap_file: Option<&Path>) -> CheckResult {
    let d = gs.desc.swap;
    if d.consistent == 0 {
        return CheckResult::could_not_run(
            Check::Swap,
            "the guest was changing its swap state when the checkpoint was taken (reclaim or a fault held it)".into(),
        );
    }
    let ptes = swap_ptes(gs, roots);
    let mut violations = ptes.bad.clone();
    let processes = roots.iter().filter(|r| r.pid.is_some()).count();
    if d.nr_slots == 0 {
        if ptes.total > 0 {
            violations.push(format!("swap is off but {} swap PTEs exist", ptes.total));
        } else if violations.is_empty() && ptes.problems.is_empty() {
            return CheckResult::not_applicable(
                Check::Swap,
                format!(
                    "swap is off (no --swap device) and none of {processes} processes' user halves holds a swap PTE"
                ),
            );
        }
        let detail = format!("swap is off; {processes} processes' user halves walked, {} swap PTEs", ptes.total);
        return CheckResult::new(Check::Swap, detail, violations).with_errors(ptes.problems);
    }
    let mut k = Kva::new(gs);
    let arrays = swap_map(gs).and_then(|map| Ok((map, k.array(d.sums_va, d.nr_slots * 8, "the per-slot checksums")?)));
    let (map, sums) = match arrays {
        Ok(a) => a,
        Err(e) => return CheckResult::could_not_run(Check::Swap, e),
    };
    let sums: Vec<u64> = sums.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
    let cache = match swap_cache(gs) {
        Ok(c) => c,
        Err(e) => return CheckResult::could_not_run(Check::Swap, e),
    };
    let cached: BTreeSet<u64> = cache.by_pfn.values().copied().collect();
    // A tmpfs page in swap: its file's index holds one count of the slot,
    // as a swap PTE does.
    let mut users = ptes.by_slot.clone();
    let mut file_slots = 0u64;
    if d.file_refs_va != 0 {
        match k.array(d.file_refs_va, d.nr_slots.div_ceil(8), "the per-slot tmpfs references") {
            Ok(refs) => {
                for o in (0..d.nr_slots).filter(|&o| refs[(o / 8) as usize] & (1 << (o % 8)) != 0) {
                    *users.entry(o).or_default() += 1;
                    file_slots += 1;
                }
            }
            Err(e) => return CheckResult::could_not_run(Check::Swap, e),
        }
    }
    if let Err(e) = verify_swap_map(0, &map, &users, &cached) {
        violations.push(e.to_string());
    }
    // The swap cache against the page_ext back-pointers and the owners.
    for (&pfn, &slot) in &cache.by_pfn {
        let mut ext = [0u8; PAGE_EXT as usize];
        match k.read(d.page_ext_va + pfn * PAGE_EXT, &mut ext) {
            Ok(()) => {
                let swap = u64::from_le_bytes(ext[8..16].try_into().unwrap_or([0; 8]));
                if swap != slot + 1 {
                    violations.push(format!(
                        "slot {slot:#x}'s swap-cache page {:#x} records slot {:#x} in its page_ext",
                        pfn << 12,
                        swap.wrapping_sub(1)
                    ));
                }
            }
            Err(e) => violations.push(format!("the page_ext of cached page {:#x} is unreadable: {e}", pfn << 12)),
        }
        match gs.block_of(pfn).map(|b| b.kind) {
            Some(BlockKind::Allocated(PageOwner::UserAnon)) => {}
            other => violations.push(format!(
                "slot {slot:#x}'s swap-cache page {:#x} is not an allocated user page ({other:?})",
                pfn << 12
            )),
        }
    }
    // The slots in use, read back from the file.
    // Slots swap PTEs name (a count; bad slots are never in use).
    let in_use: Vec<u64> = (1..map.len() as u64)
        .filter(|&o| map[o as usize] != SWAP_MAP_BAD && map[o as usize] & !SWAP_HAS_CACHE != 0)
        .collect();
    let mut errors = ptes.problems;
    let (mut read_back, mut matched) = (0u64, 0u64);
    match swap_file {
        None => errors.push("the swap file is not known to the inspector: the slots' contents were not read".into()),
        Some(path) => match std::fs::File::open(path) {
            Err(e) => errors.push(format!("cannot open the swap file {}: {e}", path.display())),
            Ok(mut f) => {
                let mut page = vec![0u8; 4096];
                for &o in &in_use {
                    let want = sums.get(o as usize).copied().unwrap_or(0);
                    if want == 0 {
                        if !cached.contains(&o) {
                            violations.push(format!(
                                "slot {o:#x} is in use by swap PTEs but the guest never recorded writing it (its page would be lost)"
                            ));
                        }
                        continue;
                    }
                    if let Err(e) = f.seek(SeekFrom::Start(o * 4096)).and_then(|_| f.read_exact(&mut page)) {
                        errors.push(format!("reading slot {o:#x} of {}: {e}", path.display()));
                        break;
                    }
                    let words: Vec<u64> =
                        page.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
                    let got = page_checksum(&words);
                    read_back += 1;
                    matched += (got == want) as u64;
                    if got != want {
                        violations.push(format!(
                            "slot {o:#x} of the swap file has checksum {got:#x}, but the guest wrote {want:#x} there: the page is lost"
                        ));
                    }
                }
            }
        },
    }
    let detail = format!(
        "{} swap PTEs in {processes} processes and {file_slots} tmpfs pages against {} slots in use of {} ({} in the swap cache); {read_back} slots read back from the swap file, {matched} matched",
        ptes.total,
        in_use.len(),
        map.len().saturating_sub(1),
        cached.len()
    );
    CheckResult::new(Check::Swap, detail, violations).with_errors(errors)
}

/// What is wrong with page `pfn` of node `node`, charged to memory
/// cgroup `charged` (0: the root or none), being on lruvec `id`: it must
/// be its node's lruvec for its group (`mm_core::lru::lruvec_id`), or
/// that node's reclaim, or that group's, never sees it.
fn lruvec_mismatch(pfn: u64, id: u16, node: usize, charged: usize) -> Vec<String> {
    let (vnode, vmemcg) = (mm_core::lru::lruvec_node(id), mm_core::lru::lruvec_memcg(id));
    let mut v = Vec::new();
    if vnode != node {
        v.push(format!(
            "page {:#x} of node {node} is on node {vnode}'s LRU lists (lruvec {id}): its node's reclaim can never see it",
            pfn << 12
        ));
    }
    if vmemcg != charged {
        v.push(format!(
            "page {:#x} charged to memory cgroup {charged} is on cgroup {vmemcg}'s lruvec {id}: the group's reclaim can never see it",
            pfn << 12
        ));
    }
    v
}

/// `--verify lru` (see [`Check::Lru`]).
///
/// `nodes` are the SRAT's memory ranges (`[start, end)` bytes and node;
/// empty without NUMA: one node): each page must be on an lruvec of its
/// own node (`mm_core::lru::lruvec_id`), and of the memory cgroup its
/// descriptor charges it to.
pub fn lru(gs: &GuestState<'_>, um: &UserMaps, nodes: &[(u64, u64, u8)]) -> CheckResult {
    let d = gs.desc.swap;
    if d.consistent == 0 {
        return CheckResult::could_not_run(
            Check::Lru,
            "the guest was changing its LRU lists when the checkpoint was taken (reclaim held them)".into(),
        );
    }
    let mut k = Kva::new(gs);
    let mut violations = Vec::new();
    let mut errors = um.problems.clone();
    let mut counts = [0u64; 5];
    // Pages per node (by the lruvec they are on).
    let mut per_node = BTreeMap::<usize, u64>::new();
    let node_of = |pfn: u64| {
        let pa = pfn << 12;
        nodes.iter().find(|r| pa >= r.0 && pa < r.1).map_or(0, |r| usize::from(r.2))
    };
    let mut on_lru = BTreeSet::new();
    // Stream the link array, a page of nodes at a time; pfns without RAM
    // have no array page (unmapped), and no nodes.
    let nr = gs.desc.nr_pfns;
    let per_page = 4096 / LRU_NODE;
    let mut buf = vec![0u8; (per_page * LRU_NODE) as usize];
    let mut pfn = 0;
    while pfn < nr {
        let n = per_page.min(nr - pfn);
        let bytes = &mut buf[..(n * LRU_NODE) as usize];
        if k.read(d.lru_va + pfn * LRU_NODE, bytes).is_err() {
            pfn += n;
            continue;
        }
        for (i, node) in bytes.chunks_exact(LRU_NODE as usize).enumerate() {
            let (flags, tag) = (node[8], node[9]);
            if flags & PG_LRU == 0 {
                continue;
            }
            let p = pfn + i as u64;
            let id = u16::from_le_bytes([node[10], node[11]]);
            *per_node.entry(mm_core::lru::lruvec_node(id)).or_default() += 1;
            let charged = mm_core::memcg::tag(&gs.page(p)).map_or(0, |(g, _)| g);
            violations.extend(lruvec_mismatch(p, id, node_of(p), charged));
            match LruList::from_u8(tag).and_then(|l| LruList::ALL.iter().position(|&x| x == l)) {
                Some(ix) => counts[ix] += 1,
                None => violations.push(format!("page {:#x} is on LRU list {tag}, which does not exist", p << 12)),
            }
            on_lru.insert(p);
            match gs.block_of(p).map(|b| (b.kind, b.refcount)) {
                Some((BlockKind::Allocated(PageOwner::UserAnon | PageOwner::PageCache), rc)) if rc > 0 => {}
                other => violations.push(format!(
                    "page {:#x} is on an LRU list but is not an allocated user page ({other:?}): reclaim would free what it does not own",
                    p << 12
                )),
            }
        }
        pfn += n;
    }
    for (i, l) in LruList::ALL.iter().enumerate() {
        if counts[i] != d.lru_nr[i] {
            violations.push(format!(
                "the {l:?} list counts {} pages but {} pages are tagged with it",
                d.lru_nr[i], counts[i]
            ));
        }
    }
    let cache = match swap_cache(gs) {
        Ok(c) => c,
        Err(e) => {
            errors.push(e);
            SwapCache { by_pfn: BTreeMap::new() }
        }
    };
    let (mut private, mut shared) = (0u64, 0u64);
    for (&pfn, mappers) in &um.frames {
        if !matches!(gs.block_of(pfn).map(|b| b.kind), Some(BlockKind::Allocated(PageOwner::UserAnon))) {
            continue;
        }
        if mappers.iter().any(|m| m.shared) {
            // MAP_SHARED anon pages stay off the LRU (no shmem to swap
            // them through).
            shared += 1;
            continue;
        }
        private += 1;
        if !on_lru.contains(&pfn) {
            violations.push(format!(
                "user page {:#x} mapped by pid {} at {:#x} is on no LRU list: reclaim can never see it",
                pfn << 12,
                mappers[0].pid,
                mappers[0].va
            ));
        }
    }
    for &pfn in cache.by_pfn.keys() {
        if !on_lru.contains(&pfn) {
            violations.push(format!("swap-cache page {:#x} is on no LRU list", pfn << 12));
        }
    }
    // Every page of the page cache is on a list (the file lists, or the
    // anon lists for tmpfs's swap-backed pages): reclaim must see it.
    let mut cache_pages = 0u64;
    for b in gs.blocks.iter().filter(|b| b.kind == BlockKind::Allocated(PageOwner::PageCache)) {
        for pfn in b.pfn..b.end_pfn() {
            cache_pages += 1;
            if !on_lru.contains(&pfn) {
                violations.push(format!(
                    "page-cache page {:#x} is on no LRU list: reclaim can never drop or swap it",
                    pfn << 12
                ));
            }
        }
    }
    if on_lru.is_empty()
        && private == 0
        && cache.by_pfn.is_empty()
        && cache_pages == 0
        && violations.is_empty()
        && errors.is_empty()
    {
        return CheckResult::not_applicable(
            Check::Lru,
            "no user pages: the LRU lists are empty and nothing maps a user page".into(),
        );
    }
    let names = ["inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable"];
    let lists: Vec<String> = names.iter().zip(counts.iter()).map(|(n, c)| format!("{n} {c}")).collect();
    let nodes_text: Vec<String> = per_node.iter().map(|(n, c)| format!("node {n} {c}")).collect();
    let detail = format!(
        "{} pages on the lists ({}; {}, each on its own node's and memory cgroup's lruvec); {private} private mapped user pages, {} swap-cache pages and {cache_pages} page-cache pages checked against them, {shared} MAP_SHARED pages off the LRU by design",
        on_lru.len(),
        lists.join(", "),
        nodes_text.join(", "),
        cache.by_pfn.len()
    );
    CheckResult::new(Check::Lru, detail, violations).with_errors(errors)
}

/// The `swaps` view: Linux's /proc/swaps for the guest's one area.
#[derive(Debug, Serialize)]
pub struct SwapsReport {
    /// The areas (the guest has at most one).
    pub areas: Vec<SwapArea>,
}

/// One swap area.
#[derive(Debug, Serialize)]
pub struct SwapArea {
    /// Its device.
    pub filename: &'static str,
    /// "partition" (a whole disk, as the guest uses it).
    pub kind: &'static str,
    /// Usable size in kB (slot 0, the header, excluded).
    pub size_kb: u64,
    /// kB in use (slots with a count or in the swap cache).
    pub used_kb: u64,
    /// Its priority.
    pub priority: i32,
}

/// Slots allocated in `map` (a count or the swap cache: Linux's
/// `inuse_pages`), the header and bad slots not counted.
fn slots_used(map: &[u16]) -> u64 {
    map.iter().skip(1).filter(|&&m| m != 0 && m != SWAP_MAP_BAD).count() as u64
}

/// The guest's swap map (empty when swap is off).
fn swap_map(gs: &GuestState<'_>) -> Result<Vec<u16>, String> {
    let d = gs.desc.swap;
    if d.nr_slots == 0 {
        return Ok(Vec::new());
    }
    let raw = Kva::new(gs).array(d.swap_map_va, d.nr_slots * 2, "the swap map")?;
    Ok(raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
}

/// Builds the `swaps` view from the guest's swap map.
pub fn swaps(gs: &GuestState<'_>) -> Result<SwapsReport, String> {
    let map = swap_map(gs)?;
    let mut areas = Vec::new();
    if !map.is_empty() {
        let used = slots_used(&map);
        areas.push(SwapArea {
            filename: "/dev/vda",
            kind: "partition",
            size_kb: (map.len() as u64 - 1) * 4,
            used_kb: used * 4,
            priority: -2,
        });
    }
    Ok(SwapsReport { areas })
}

impl SwapsReport {
    /// /proc/swaps' layout.
    pub fn render(&self) -> String {
        let mut s = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
        for a in &self.areas {
            let _ = writeln!(s, "{:<40}{}\t{}\t\t{}\t\t{}", a.filename, a.kind, a.size_kb, a.used_kb, a.priority);
        }
        s
    }
}

/// The `free` view: free(1)'s two lines, in kB.
#[derive(Debug, Serialize)]
pub struct FreeReport {
    /// Memory the page allocator manages (and deferred RAM).
    pub mem_total_kb: u64,
    /// Allocated.
    pub mem_used_kb: u64,
    /// Free (buddy and per-CPU lists, and RAM not yet handed over).
    pub mem_free_kb: u64,
    /// The swap cache (free's buff/cache column: no page cache here).
    pub buff_cache_kb: u64,
    /// Swap size.
    pub swap_total_kb: u64,
    /// Swap in use.
    pub swap_used_kb: u64,
    /// Swap free.
    pub swap_free_kb: u64,
}

/// Builds the `free` view from the page descriptors and the swap map.
pub fn free(gs: &GuestState<'_>) -> Result<FreeReport, String> {
    let (mut total, mut free) = (gs.desc.deferred_pages, gs.desc.deferred_pages);
    for b in &gs.blocks {
        let n = b.end_pfn() - b.pfn;
        total += n;
        if b.is_free() {
            free += n;
        }
    }
    let map = swap_map(gs)?;
    let slots = map.len().saturating_sub(1) as u64;
    let used = slots_used(&map);
    let cached = swap_cache(gs)?.by_pfn.len() as u64;
    Ok(FreeReport {
        mem_total_kb: total * 4,
        mem_used_kb: (total - free) * 4,
        mem_free_kb: free * 4,
        buff_cache_kb: cached * 4,
        swap_total_kb: slots * 4,
        swap_used_kb: used * 4,
        swap_free_kb: (slots - used) * 4,
    })
}

impl FreeReport {
    /// free(1)'s layout.
    pub fn render(&self) -> String {
        let mut s = String::from("               total        used        free      shared  buff/cache   available\n");
        let _ = writeln!(
            s,
            "Mem:    {:>12} {:>11} {:>11} {:>11} {:>11} {:>11}",
            self.mem_total_kb, self.mem_used_kb, self.mem_free_kb, 0, self.buff_cache_kb, self.mem_free_kb
        );
        let _ = writeln!(s, "Swap:   {:>12} {:>11} {:>11}", self.swap_total_kb, self.swap_used_kb, self.swap_free_kb);
        s
    }
}

#[cfg(test)]
mod lruvec_tests {
    use super::lruvec_mismatch;
    use mm_core::lru::lruvec_id;

    /// A page on its own node's lruvec for its group passes; another
    /// node's, another group's, or both, are reported.
    #[test]
    fn pages_must_be_on_their_node_and_groups_lruvec() {
        assert!(lruvec_mismatch(0x5000, lruvec_id(1, 3), 1, 3).is_empty());
        assert!(lruvec_mismatch(0x5000, lruvec_id(0, 0), 0, 0).is_empty());
        let v = lruvec_mismatch(0x5000, lruvec_id(0, 3), 1, 3);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("of node 1 is on node 0's LRU lists"), "{v:?}");
        let v = lruvec_mismatch(0x5000, lruvec_id(1, 0), 1, 3);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("charged to memory cgroup 3 is on cgroup 0's"), "{v:?}");
        assert_eq!(lruvec_mismatch(0x5000, lruvec_id(0, 2), 1, 3).len(), 2);
    }
}
