//! Memory cgroups (cgroup v2's memory controller, Linux's
//! mm/memcontrol.c): groups of processes whose user memory is charged,
//! limited and reclaimed together.
//!
//! - **Groups**: the root (index 0) and up to [`MAX_MEMCG`] - 1 others,
//!   made and removed through the cgroup file system (fs/cgroupfs.rs).
//!   Each task records its group (`Task::memcg`, inherited by fork); the
//!   scheduler publishes the running task's group per CPU ([`set_cpu_current`]),
//!   so a charge under the page allocator's lock reads it without a lock.
//! - **Charging** (mm-core's `memcg`): anonymous pages, page-cache pages
//!   and user page-table pages are charged to the running task's group
//!   when they are allocated ([`charge`]); the page descriptor records
//!   the group, and the page's last free uncharges it, whoever frees it.
//!   `memory.current` is the sum of those charges over the group's subtree.
//! - **Limits** ([`try_charge`], run by every user page fault before it
//!   allocates, with no lock but the mm's held): over `memory.high` the
//!   group reclaims its own pages (throttling the allocator); at
//!   `memory.max` it reclaims until there is room, and when reclaim
//!   cannot make room, a memcg OOM ([`oom_synchronize`], after the fault
//!   dropped its locks) kills a process inside the group.
//! - **LRU lists per group** (Linux's `mem_cgroup_lruvec`): a charged
//!   user page sits on its group's lruvec for its node (mm/mod.rs
//!   `PageAlloc::lruvec_id_of`), so memory.stat's list counts and
//!   pgscan/pgsteal come from the group's own lruvecs ([`lru_pages`],
//!   [`lru_stat`]).
//! - **Reclaim of a group** ([`reclaim_group`]): only the subtree's own
//!   lruvecs, node by node, with the same aging and scan balance as
//!   global reclaim (anon to swap when swap is on, clean page-cache pages
//!   dropped); global reclaim walks every group's lruvec on a node and
//!   skips whole lruvecs of groups under memory.min (or memory.low, until
//!   nothing else is left).

use super::PAGES;
use crate::arch::percpu::{cpu_id, MAX_CPUS};
use crate::sync::{rank, SpinLock};
use alloc::string::String;
use core::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use mm_core::addr::PAGE_SIZE;
use mm_core::lru::LruList;
pub use mm_core::memcg::{ChargeKind, MAX_MEMCG};

/// "No limit" (Linux's `PAGE_COUNTER_MAX`), in pages.
pub const PAGE_COUNTER_MAX: u64 = u64::MAX / PAGE_SIZE;

/// One group's identity (its limits and counters are atomics below).
pub struct Group {
    /// In use: made by mkdir (the root always).
    pub live: bool,
    /// Its path below the mount point ("" for the root, "/a/b").
    pub path: String,
    /// Its parent's index (the root's is 0).
    pub parent: usize,
}

impl Group {
    const EMPTY: Group = Group { live: false, path: String::new(), parent: 0 };
}

/// The groups, by index.
pub static GROUPS: SpinLock<[Group; MAX_MEMCG]> = SpinLock::new_with("the memory cgroups", rank::MISC, initial());

/// The groups at boot: the root alone.
const fn initial() -> [Group; MAX_MEMCG] {
    let mut a = [const { Group::EMPTY }; MAX_MEMCG];
    a[0].live = true;
    a
}

/// A limit file's value per group, in pages.
pub struct Limits(&'static [AtomicU64; MAX_MEMCG]);

impl Limits {
    /// Group `g`'s value.
    pub fn get(&self, g: usize) -> u64 {
        self.0.get(g).map_or(0, |a| a.load(Ordering::Relaxed))
    }
    /// Sets group `g`'s value.
    pub fn set(&self, g: usize, v: u64) {
        if let Some(a) = self.0.get(g) {
            a.store(v, Ordering::Relaxed);
        }
    }
}

/// memory.max (in the table the host reads: mm-core's `memcg::TABLE`).
pub static MAX: Limits = Limits(&mm_core::memcg::TABLE.max);
/// memory.high.
pub static HIGH: Limits = Limits(&HIGH_V);
/// memory.low.
pub static LOW: Limits = Limits(&LOW_V);
/// memory.min.
pub static MIN: Limits = Limits(&MIN_V);
static HIGH_V: [AtomicU64; MAX_MEMCG] = [const { AtomicU64::new(PAGE_COUNTER_MAX) }; MAX_MEMCG];
static LOW_V: [AtomicU64; MAX_MEMCG] = [const { AtomicU64::new(0) }; MAX_MEMCG];
static MIN_V: [AtomicU64; MAX_MEMCG] = [const { AtomicU64::new(0) }; MAX_MEMCG];

/// memory.events' counters, in the file's order.
#[derive(Clone, Copy)]
#[repr(usize)]
// `OomGroupKill` names a memory.events line that stays 0 here
// (memory.oom.group does not exist).
#[allow(dead_code)]
pub enum MemcgEvent {
    /// Global reclaim had to reclaim a group below its memory.low.
    Low,
    /// Went over memory.high and was throttled by reclaim.
    High,
    /// A charge hit memory.max and reclaimed.
    Max,
    /// Reclaim could not bring the group under memory.max.
    Oom,
    /// Processes the memcg OOM killer killed.
    OomKill,
    /// Group kills (memory.oom.group: none here).
    OomGroupKill,
}

/// memory.events' names, in [`MemcgEvent`]'s order.
pub const EVENT_NAMES: [&str; 6] = ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"];

/// memory.stat's event counters kept here.
#[derive(Clone, Copy)]
#[repr(usize)]
pub enum MemcgStat {
    /// User page faults of the group's tasks.
    Fault,
}

static EVENTS: [[AtomicU64; 6]; MAX_MEMCG] = [const { [const { AtomicU64::new(0) }; 6] }; MAX_MEMCG];
static STATS: [[AtomicU64; 1]; MAX_MEMCG] = [const { [const { AtomicU64::new(0) }; 1] }; MAX_MEMCG];

/// Each CPU's running task's group.
static CURRENT: [AtomicU16; MAX_CPUS] = [const { AtomicU16::new(0) }; MAX_CPUS];

/// Per CPU: a memcg OOM to run when the fault returns (group index + 1).
static OOM_PENDING: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// The scheduler switched `cpu` to a task of group `memcg`.
pub fn set_cpu_current(cpu: usize, memcg: u16) {
    if let Some(c) = CURRENT.get(cpu) {
        c.store(memcg, Ordering::Relaxed);
    }
}

/// The running task's group.
pub fn current() -> usize {
    CURRENT.get(cpu_id()).map_or(0, |c| c.load(Ordering::Relaxed) as usize)
}

/// Counts a memory.events event for `g` and, as Linux's
/// `memcg_memory_event`, for every ancestor.
pub fn event(g: usize, e: MemcgEvent) {
    for a in ancestors(g) {
        EVENTS[a][e as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Group `g`'s memory.events counter `i` (EVENT_NAMES' order).
pub fn event_count(g: usize, i: usize) -> u64 {
    EVENTS.get(g).and_then(|e| e.get(i)).map_or(0, |a| a.load(Ordering::Relaxed))
}

/// Adds `n` to a memory.stat counter of `g` (the root gets its own).
pub fn stat(g: usize, s: MemcgStat, n: u64) {
    if let Some(a) = STATS.get(g) {
        a[s as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// Group `g`'s memory.stat counter `i` over its subtree.
pub fn stat_count(g: usize, i: usize) -> u64 {
    subtree(g).filter_map(|d| STATS[d].get(i)).map(|a| a.load(Ordering::Relaxed)).sum()
}

/// A user page fault of the running task (memory.stat's pgfault).
pub fn count_fault() {
    stat(current(), MemcgStat::Fault, 1);
}

/// Charges the allocated page `pfn` to the running task's group as
/// `kind` (the caller holds the page allocator and set the owner).
pub fn charge(buddy: &mut mm_core::buddy::BuddyAllocator<'_>, pfn: u64, kind: ChargeKind) {
    let g = current();
    let _ = buddy.memcg_charge(pfn, g, kind);
    if g != 0 {
        note_peak(g);
    }
}

/// memory.peak per group, in pages: the highest memory.current seen
/// since the group was made (Linux's `page_counter.watermark`).
static PEAK: [AtomicU64; MAX_MEMCG] = [const { AtomicU64::new(0) }; MAX_MEMCG];

/// Raises the peak of `g` and its ancestors to their usage after a
/// charge. Runs under the page allocator's lock, so it reads the
/// parents from mm-core's lock-free table (the same as [`GROUPS`]'
/// parents, written at mkdir) instead of taking the groups' lock.
fn note_peak(g: usize) {
    let t = &mm_core::memcg::TABLE;
    let parent = |d: usize| t.parent[d].load(Ordering::Relaxed) as usize % MAX_MEMCG;
    // Each charged group adds its charges to every ancestor's usage
    // (as `subtree`: removed groups count with their old parent).
    let mut usage = [0u64; MAX_MEMCG];
    for d in 1..MAX_MEMCG {
        let c = mm_core::memcg::charged_total(d);
        if c == 0 {
            continue;
        }
        let mut a = d;
        for _ in 0..MAX_MEMCG {
            usage[a] += c;
            if a == 0 {
                break;
            }
            a = parent(a);
        }
    }
    let mut a = g % MAX_MEMCG;
    for _ in 0..MAX_MEMCG {
        if a == 0 {
            break;
        }
        PEAK[a].fetch_max(usage[a], Ordering::Relaxed);
        a = parent(a);
    }
}

/// memory.peak of `g`, in pages.
pub fn peak(g: usize) -> u64 {
    PEAK.get(g).map_or(0, |p| p.load(Ordering::Relaxed))
}

/// `g` and its ancestors up to the root, nearest first.
fn ancestors(g: usize) -> impl Iterator<Item = usize> {
    let parents: [u8; MAX_MEMCG] = GROUPS.with(|gs| core::array::from_fn(|i| gs[i].parent as u8));
    let mut cur = Some(g.min(MAX_MEMCG - 1));
    core::iter::from_fn(move || {
        let c = cur?;
        cur = (c != 0).then(|| parents[c] as usize);
        Some(c)
    })
}

/// Whether `d` is `g` or below it.
fn is_in(parents: &[u8; MAX_MEMCG], d: usize, g: usize) -> bool {
    let mut c = d;
    for _ in 0..MAX_MEMCG {
        if c == g {
            return true;
        }
        if c == 0 {
            return false;
        }
        c = parents[c] as usize;
    }
    false
}

/// The indexes in `g`'s subtree (removed groups still holding charges
/// count with their old parent, as Linux's offline memcgs).
fn subtree(g: usize) -> impl Iterator<Item = usize> {
    let mask = subtree_mask(g);
    (0..MAX_MEMCG).filter(move |i| mask & (1 << i) != 0)
}

/// `g`'s subtree as a bit mask of indexes.
pub fn subtree_mask(g: usize) -> u64 {
    GROUPS.with(|gs| {
        let parents: [u8; MAX_MEMCG] = core::array::from_fn(|i| gs[i].parent as u8);
        (0..MAX_MEMCG)
            .filter(|&d| gs[d].live || mm_core::memcg::charged_total(d) > 0)
            .filter(|&d| is_in(&parents, d, g))
            .fold(0u64, |m, d| m | 1 << d)
    })
}

/// memory.current of `g`, in pages: its subtree's charges.
pub fn usage(g: usize) -> u64 {
    subtree(g).map(mm_core::memcg::charged_total).sum()
}

/// Pages of `kind` charged in `g`'s subtree.
pub fn usage_of(g: usize, kind: ChargeKind) -> u64 {
    subtree(g).map(|d| mm_core::memcg::charged(d, kind)).sum()
}

/// Reclaims up to `target` pages from `g`'s subtree (Linux's
/// `try_to_free_mem_cgroup_pages`): the subtree's own lruvecs on each
/// node (mm/vmscan.rs `shrink_lruvecs` with `Target::Memcg`), at falling
/// priority as global reclaim, anon only when swap is on. No other
/// group's pages are looked at. Runs where reclaim may take its locks;
/// the pages freed.
pub fn reclaim_group(g: usize, target: u64) -> u64 {
    let mask = subtree_mask(g);
    let target = target.max(1);
    let mut freed = 0u64;
    // The nodes from the running CPU's, nearest first (the zonelist
    // order), as Linux's `shrink_zones` walks them.
    let nid = usize::from(super::numa::cpu_node(crate::arch::percpu::this_cpu().id));
    let mut order = [0u8; mm_core::numa::MAX_NODES];
    let n = PAGES.with(|p| {
        let f = p.buddy.node_layout().fallback(nid);
        let n = f.len().min(order.len());
        order[..n].copy_from_slice(&f[..n]);
        n
    });
    for &node in &order[..n] {
        if freed >= target {
            break;
        }
        let (_, f) = super::vmscan::shrink_lruvecs(usize::from(node), false, super::vmscan::Target::Memcg(mask), target - freed);
        freed += f;
    }
    freed
}

/// `g`'s subtree's LRU pages per list (`LruList::ALL` order) over every
/// node: memory.stat's active_anon, inactive_anon, ... from the group's
/// own lruvecs.
pub fn lru_pages(g: usize) -> [u64; 5] {
    let mask = subtree_mask(g);
    PAGES.with(|p| {
        let mut out = [0u64; 5];
        for v in p.lru.all_lists().iter().filter(|v| mask & (1 << mm_core::lru::lruvec_memcg(v.id())) != 0) {
            for (i, l) in LruList::ALL.iter().enumerate() {
                out[i] += v.nr(*l);
            }
        }
        out
    })
}

/// `g`'s subtree's reclaim counters, from its own lruvecs (scans by
/// global reclaim and by the group's own alike, as Linux's memory.stat).
pub fn lru_stat(g: usize) -> mm_core::lru::LruStats {
    let mask = subtree_mask(g);
    PAGES.with(|p| p.lru.stat_sum(|id| mask & (1 << mm_core::lru::lruvec_memcg(id)) != 0))
}

/// Which groups global reclaim must spare now (Linux's
/// `mem_cgroup_calculate_protection` with `mem_cgroup_below_min` and
/// `mem_cgroup_below_low`), as bit masks of group indexes: (below min,
/// below low). A group's effective protection is its own memory.min (or
/// low) capped by its parent's effective one (a child of the root takes
/// its own); it is protected while its usage (its subtree's) is at or
/// below that. Simplified from Linux: no proportional split of a
/// parent's protection among its children, and no partial protection
/// above it (Linux scans a group over its protection in proportion to
/// the excess; here it is then reclaimed like any other).
pub fn protection() -> (u64, u64) {
    let (parents, live): ([u8; MAX_MEMCG], u64) = GROUPS.with(|gs| {
        (
            core::array::from_fn(|i| gs[i].parent as u8),
            (0..MAX_MEMCG).filter(|&i| gs[i].live).fold(0u64, |m, i| m | 1 << i),
        )
    });
    // Effective protection: the minimum along the path to the root
    // (the root itself is never protected).
    let effective = |g: usize, lim: &Limits| {
        let mut e = u64::MAX;
        let mut c = g;
        for _ in 0..MAX_MEMCG {
            if c == 0 {
                break;
            }
            e = e.min(lim.get(c));
            c = parents[c] as usize;
        }
        if g == 0 {
            0
        } else {
            e
        }
    };
    let (mut min, mut low) = (0u64, 0u64);
    for g in (1..MAX_MEMCG).filter(|&g| live & (1 << g) != 0) {
        let (emin, elow) = (effective(g, &MIN), effective(g, &LOW));
        if emin == 0 && elow == 0 {
            continue;
        }
        let u = usage(g);
        if emin > 0 && u <= emin {
            min |= 1 << g;
        } else if elow > 0 && u <= elow {
            low |= 1 << g;
        }
    }
    (min, low)
}

/// Rounds of reclaim a charge tries at memory.max before the OOM
/// (Linux's `MAX_RECLAIM_RETRIES`).
const MAX_RECLAIM_RETRIES: u32 = 16;

/// The lowest group from `g` up whose usage plus `nr` passes `limit`,
/// with its excess.
fn over(g: usize, nr: u64, limit: &Limits) -> Option<(usize, u64)> {
    ancestors(g).filter(|&a| a != 0).find_map(|a| {
        let (u, l) = (usage(a) + nr, limit.get(a));
        (u > l).then_some((a, u - l))
    })
}

/// Linux's `try_charge` for `nr` pages about to be allocated by the
/// running task (a user page fault, holding its mm lock and nothing
/// else): throttles over memory.high by reclaiming the group's own
/// pages; at memory.max reclaims until the pages fit. False when reclaim
/// cannot make room: a memcg OOM is then pending for this CPU, which the
/// fault handler runs ([`oom_synchronize`]) once its locks are dropped.
pub fn try_charge(nr: u64) -> bool {
    let g = current();
    if g == 0 {
        return true;
    }
    if let Some((h, excess)) = over(g, nr, &HIGH) {
        event(h, MemcgEvent::High);
        // Linux's `reclaim_high`: back under high, at least a batch.
        reclaim_group(h, excess.max(mm_core::lru::SWAP_CLUSTER_MAX));
    }
    let mut retries = 0;
    while let Some((m, excess)) = over(g, nr, &MAX) {
        event(m, MemcgEvent::Max);
        if reclaim_group(m, excess.max(mm_core::lru::SWAP_CLUSTER_MAX)) == 0 {
            retries += 1;
            if retries >= MAX_RECLAIM_RETRIES {
                event(m, MemcgEvent::Oom);
                if let Some(p) = OOM_PENDING.get(cpu_id()) {
                    p.store(m + 1, Ordering::Relaxed);
                }
                return false;
            }
        }
    }
    true
}

/// [`try_charge`] for an allocation outside a page fault (a write()
/// into the page cache), with no lock held: as cgroup v2's
/// `try_charge_memcg`, a charge reclaim cannot satisfy runs the memcg
/// OOM killer at once and tries again; false (the caller fails with
/// -ENOMEM) when nothing in the group could be killed or the caller
/// itself is the victim (`task_is_dying`: it dies on its way out).
pub fn try_charge_nofault(nr: u64) -> bool {
    loop {
        if try_charge(nr) {
            return true;
        }
        // Each kill removes a process of the group; the killer returns
        // false once the caller itself was killed, so this ends.
        if oom_synchronize() != Some(true) {
            return false;
        }
    }
}

/// Linux's `mem_cgroup_oom_synchronize`: runs the memcg OOM a failed
/// [`try_charge`] left pending for this CPU (None: none pending, the
/// failure was global). True if a victim in the group was killed.
pub fn oom_synchronize() -> Option<bool> {
    let m = OOM_PENDING.get(cpu_id())?.swap(0, Ordering::Relaxed).checked_sub(1)?;
    Some(out_of_memory(m))
}

/// The memcg OOM killer on group `m`: kills the worst process inside
/// `m`'s subtree (`oom_kill::mem_cgroup_out_of_memory`).
pub fn out_of_memory(m: usize) -> bool {
    let path = path_of(m);
    let killed = super::oom_kill::mem_cgroup_out_of_memory(
        subtree_mask(m),
        if path.is_empty() { "/" } else { &path },
        usage(m),
        MAX.get(m),
    );
    if killed {
        event(m, MemcgEvent::OomKill);
    }
    killed
}

/// Group `g`'s path below the mount ("" for the root).
pub fn path_of(g: usize) -> String {
    GROUPS.with(|gs| gs.get(g).map_or(String::new(), |x| x.path.clone()))
}

/// Brings `g` under memory.max after a write lowered it (Linux's
/// `memory_max_write`): reclaims, and kills inside the group when
/// reclaim cannot. Runs from a system call, no lock held.
pub fn enforce_max(g: usize) {
    let mut retries = 0;
    loop {
        let (u, l) = (usage(g), MAX.get(g));
        if u <= l {
            return;
        }
        if reclaim_group(g, u - l) > 0 {
            continue;
        }
        retries += 1;
        if retries < MAX_RECLAIM_RETRIES {
            continue;
        }
        event(g, MemcgEvent::Oom);
        if !out_of_memory(g) {
            return;
        }
        retries = 0;
    }
}

/// Brings `g` toward memory.high after a write lowered it (one pass of
/// reclaim, as Linux's `memory_high_write`).
pub fn enforce_high(g: usize) {
    let (u, h) = (usage(g), HIGH.get(g));
    if u > h {
        reclaim_group(g, u - h);
    }
}

/// Makes a group `name` below `parent` (mkdir): its index.
pub fn create(parent: usize, path: String) -> Result<usize, i64> {
    let g = GROUPS.with(|gs| {
        // A free slot whose old charges are all gone.
        let i = (1..MAX_MEMCG).find(|&i| !gs[i].live && mm_core::memcg::charged_total(i) == 0)?;
        gs[i] = Group { live: true, path, parent };
        // The host's copy (`--verify memcg`).
        mm_core::memcg::TABLE.parent[i].store(parent as u64, Ordering::Relaxed);
        mm_core::memcg::TABLE.live[i].store(1, Ordering::Relaxed);
        Some(i)
    });
    let Some(g) = g else { return Err(11) }; // EAGAIN, as cgroup.max.descendants
    MAX.set(g, PAGE_COUNTER_MAX);
    HIGH.set(g, PAGE_COUNTER_MAX);
    LOW.set(g, 0);
    MIN.set(g, 0);
    for e in &EVENTS[g] {
        e.store(0, Ordering::Relaxed);
    }
    for s in &STATS[g] {
        s.store(0, Ordering::Relaxed);
    }
    // A new group's peak starts at its usage (0: a free slot has no
    // charges left).
    PEAK[g].store(usage(g), Ordering::Relaxed);
    Ok(g)
}

/// The group at `path` below the mount ("" the root).
pub fn lookup(path: &str) -> Option<usize> {
    GROUPS.with(|gs| (0..MAX_MEMCG).find(|&i| gs[i].live && gs[i].path == path))
}

/// The live child groups of `g`: (index, last path component).
pub fn children(g: usize) -> alloc::vec::Vec<(usize, String)> {
    GROUPS.with(|gs| {
        (1..MAX_MEMCG)
            .filter(|&i| gs[i].live && gs[i].parent == g)
            .map(|i| (i, String::from(&gs[i].path[gs[i].path.rfind('/').map_or(0, |k| k + 1)..])))
            .collect()
    })
}

/// Removes group `g` (rmdir): EBUSY for the root, a group with tasks or
/// children. Pages still charged to it (page cache outliving its
/// processes) stay counted in its parent's subtree until freed.
pub fn remove(g: usize, has_tasks: bool) -> Result<(), i64> {
    const EBUSY: i64 = 16;
    if g == 0 || has_tasks || !children(g).is_empty() {
        return Err(EBUSY);
    }
    GROUPS.with(|gs| gs[g].live = false);
    mm_core::memcg::TABLE.live[g].store(0, Ordering::Relaxed);
    Ok(())
}

/// Whether `g` names a live group.
pub fn live(g: usize) -> bool {
    GROUPS.with(|gs| gs.get(g).is_some_and(|x| x.live))
}
