//! The OOM killer, as Linux's mm/oom_kill.c: when reclaim cannot free
//! memory, score every killable process with `oom_badness` (resident
//! pages + swap entries + page-table pages, moved by `oom_score_adj` in
//! thousandths of all memory), print the memory summary and the task
//! table (`dump_header`), kill the highest and reap its memory at once
//! (the `oom_reaper`'s job: here all user memory is anonymous, so reaping
//! frees all of it).
//!
//! The process layer sits above mm/, so it registers the two things the
//! killer needs from it ([`OomOps`]): a snapshot of the candidates and the
//! kill itself. Nothing here allocates: the killer runs when allocations
//! fail (candidates go into a fixed array on the stack).

use super::vmstat::{self, Event};
use super::{PAGES, STATS};
use crate::fmt::Dec;
use crate::kprintln;
use crate::sync::{rank, SpinLock};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mm_core::addr::PAGE_SIZE;
use mm_core::mempolicy;

/// `oom_score_adj` that exempts a process (`OOM_SCORE_ADJ_MIN`).
pub const OOM_SCORE_ADJ_MIN: i32 = -1000;
/// Most processes one OOM invocation looks at (the candidates live on
/// the kernel stack, 16 KiB, of whoever ran out of memory: 2 KiB here;
/// processes beyond the first 32 by pid are not considered).
pub const MAX_CANDIDATES: usize = 32;

/// What the killer knows of one process (Linux reads these from the
/// task's mm: `get_mm_rss`, `MM_SWAPENTS`, `mm_pgtables_bytes`,
/// `total_vm`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Candidate {
    /// Process id.
    pub pid: u64,
    /// Program name.
    pub name: &'static str,
    /// Resident anonymous pages.
    pub rss: u64,
    /// Swap entries in its page tables (0 until swap exists).
    pub swapents: u64,
    /// Page-table pages of its user half (the PGD included).
    pub pgtables: u64,
    /// Pages its VMAs cover.
    pub total_vm: u64,
    /// Its adjustment, -1000..=1000.
    pub oom_score_adj: i32,
    /// Its memory cgroup's index (mm/memcg.rs).
    pub memcg: u16,
    /// Its own NUMA memory policy (a policy-constrained OOM spares tasks
    /// bound to other nodes).
    pub mempolicy: mm_core::mempolicy::MemPolicy,
}

/// What a kill achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reap {
    /// The victim's memory was freed now: its anon RSS before.
    Reaped,
    /// The victim is the running process, whose address space is in use:
    /// it is marked and dies on its way back to user mode.
    Deferred,
    /// Its address space was busy (locked): it dies when it next runs.
    Busy,
    /// No such process (it exited meanwhile).
    Gone,
}

/// The process layer's half of the killer.
#[derive(Clone, Copy)]
pub struct OomOps {
    /// Fills `out` with the killable processes (live, with an address
    /// space, not already killed); returns how many.
    pub candidates: fn(out: &mut [Candidate]) -> usize,
    /// Kills `pid` (SIGKILL) and reaps its memory if it can.
    pub kill: fn(pid: u64) -> Reap,
    /// The running process's pid, name, and whether it was killed
    /// already (for "invoked oom-killer", and to kill no one else while
    /// the caller itself is dying).
    pub current: fn() -> (u64, &'static str, bool),
}

static OPS: SpinLock<Option<OomOps>> = SpinLock::new_with("the OOM killer's hooks", rank::STATS, None);

/// Registers the process layer's half (proc::init).
pub fn register(ops: OomOps) {
    OPS.with(|o| *o = Some(ops));
}

/// Set while the killer runs: an allocation failing inside it must not
/// re-enter it.
static IN_OOM: AtomicBool = AtomicBool::new(false);
/// OOM invocations, killed or not.
pub static INVOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Linux's `oom_badness`: None for a process that must not be killed
/// (`oom_score_adj` -1000), else its points. `totalpages` is RAM plus
/// swap, in pages: an adjustment of N moves the score by N thousandths
/// of it, so 1000 outranks any process and -999 protects nearly all.
pub fn oom_badness(c: &Candidate, totalpages: u64) -> Option<i64> {
    if c.oom_score_adj <= OOM_SCORE_ADJ_MIN {
        return None;
    }
    let points = (c.rss + c.swapents + c.pgtables) as i64;
    let adj = c.oom_score_adj as i64 * (totalpages / 1000) as i64;
    Some(points + adj)
}

/// The highest-scoring candidate (Linux's `select_bad_process`: a later
/// task with equal points wins, as there).
pub fn select_bad_process(cands: &[Candidate], totalpages: u64) -> Option<(usize, i64)> {
    let mut chosen: Option<(usize, i64)> = None;
    for (i, c) in cands.iter().enumerate() {
        let Some(points) = oom_badness(c, totalpages) else { continue };
        if chosen.is_none_or(|(_, best)| points >= best) {
            chosen = Some((i, points));
        }
    }
    chosen
}

/// A signed decimal without core's integer formatting (platform.md).
pub struct SDec(pub i64);

impl core::fmt::Display for SDec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 < 0 {
            f.write_str("-")?;
        }
        core::fmt::Display::fmt(&Dec(self.0.unsigned_abs()), f)
    }
}

fn kb(pages: u64) -> Dec {
    Dec(pages * PAGE_SIZE / 1024)
}

/// Linux's `out_of_memory` for an allocation of `2^order` pages with
/// `gfp_flags` (page_alloc's `gfp::*` bits): true if a victim's memory
/// was freed (or the victim is the caller, who dies on its way out), so
/// the allocation is worth retrying. Called with no page-allocator lock
/// held (the lock order puts the scheduler and mm locks outside it).
///
/// `nodemask` is the nodes the failed request could use (its `Gfp`'s:
/// [`NODEMASK_ALL`] unless a bind policy narrowed it): when it leaves
/// out a node with memory the OOM is `CONSTRAINT_MEMORY_POLICY`, as
/// Linux's `constrained_alloc`, and only tasks not bound elsewhere are
/// candidates (`oom_cpuset_eligible`).
pub fn out_of_memory(order: u8, gfp_flags: u32, nodemask: u8) -> bool {
    let Some(ops) = OPS.with(|o| *o) else { return false };
    if IN_OOM.swap(true, Ordering::Acquire) {
        return false;
    }
    INVOCATIONS.fetch_add(1, Ordering::Relaxed);
    let present = super::numa::nodes_with_memory();
    let scope = if mempolicy::oom_policy_constrained(nodemask, present) {
        Scope::MemoryPolicy(nodemask & present)
    } else {
        Scope::Global(nodemask)
    };
    let r = oom_kill_one(&ops, order, gfp_flags, scope);
    IN_OOM.store(false, Ordering::Release);
    r
}

/// Where the OOM happened (Linux's `oom_constraint` with what each
/// needs).
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// `CONSTRAINT_NONE`: the request's node mask (all nodes, or a
    /// bind covering every node with memory).
    Global(u8),
    /// `CONSTRAINT_MEMORY_POLICY`: a bind policy's nodes ran out.
    MemoryPolicy(u8),
    /// `CONSTRAINT_MEMCG`: a memory cgroup at its limit.
    Memcg(&'a MemcgOom<'a>),
}

/// A memcg OOM's group: its subtree (a mask of group indexes), path,
/// usage and limit in pages.
struct MemcgOom<'a> {
    mask: u64,
    path: &'a str,
    usage: u64,
    limit: u64,
}

/// Linux's `mem_cgroup_out_of_memory`: the group at `path` (its subtree
/// `mask`) could not be brought under its limit by reclaim; the worst
/// process inside it is killed ("Memory cgroup out of memory: Killed
/// process ..."), no one outside. True if a victim was killed.
pub fn mem_cgroup_out_of_memory(mask: u64, path: &str, usage: u64, limit: u64) -> bool {
    let Some(ops) = OPS.with(|o| *o) else { return false };
    if IN_OOM.swap(true, Ordering::Acquire) {
        return false;
    }
    INVOCATIONS.fetch_add(1, Ordering::Relaxed);
    let m = MemcgOom { mask, path, usage, limit };
    let r = oom_kill_one(
        &ops,
        0,
        super::page_alloc::gfp::KSWAPD_RECLAIM | super::page_alloc::gfp::DIRECT_RECLAIM,
        Scope::Memcg(&m),
    );
    IN_OOM.store(false, Ordering::Release);
    r
}

/// Linux's `pagefault_out_of_memory`: a user page fault could not get a
/// frame (it allocates under the page-allocator lock, where the slow path
/// cannot kill), so the fault handler calls the killer itself, with no
/// lock held, and retries the fault. True if something was killed.
/// `nodemask`: the nodes the fault's policy allowed (the request's, as
/// the page allocator would have passed it on).
pub fn pagefault_out_of_memory(nodemask: u8) -> bool {
    out_of_memory(0, super::page_alloc::gfp::KSWAPD_RECLAIM | super::page_alloc::gfp::DIRECT_RECLAIM, nodemask)
}

/// A node mask as the report prints it (`%*pbl`).
struct NodeList(u8);

impl core::fmt::Display for NodeList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        mempolicy::write_nodelist(self.0, f)
    }
}

fn oom_kill_one(ops: &OomOps, order: u8, gfp_flags: u32, scope: Scope) -> bool {
    let mut cands = [Candidate::default(); MAX_CANDIDATES];
    let mut n = (ops.candidates)(&mut cands);
    let keep = |c: &Candidate| match scope {
        // Only the group's processes (Linux's `mem_cgroup_scan_tasks`).
        Scope::Memcg(m) => m.mask & (1 << (c.memcg as u64 % 64)) != 0,
        // Not tasks bound to other nodes: killing them frees nothing
        // the request could use (Linux's `oom_cpuset_eligible`; they
        // are not listed either).
        Scope::MemoryPolicy(mask) => mempolicy::in_oom_domain(&c.mempolicy, mask),
        Scope::Global(_) => true,
    };
    let mut k = 0;
    for i in 0..n {
        if keep(&cands[i]) {
            cands[k] = cands[i];
            k += 1;
        }
    }
    n = k;
    let memcg = match scope {
        Scope::Memcg(m) => Some(m),
        _ => None,
    };
    let cands = &cands[..n];
    let (cur_pid, cur_name, cur_killed) = (ops.current)();
    if cur_killed {
        // The caller is a victim on its way out (Linux's
        // `task_will_free_mem(current)` shortcut, and the slow path's
        // "OOM victims get no more"): its own exit frees memory, so no
        // one else dies for this allocation, which fails.
        return false;
    }
    let cur_adj = cands.iter().find(|c| c.pid == cur_pid).map_or(0, |c| c.oom_score_adj);
    // totalpages: RAM (managed pages) plus swap, as Linux's
    // `totalram_pages() + total_swap_pages`; under a policy, only the
    // policy's nodes' memory (`node_present_pages` of each).
    let (counts, ram) = PAGES.with(|p| {
        let c = p.buddy.counts();
        let ram = match scope {
            Scope::MemoryPolicy(mask) => (0..super::numa::nr_nodes().min(8))
                .filter(|&i| mask & (1 << i) != 0)
                .map(|i| p.buddy.node_counts(i).managed)
                .sum(),
            _ => c.managed,
        };
        (c, ram)
    });
    let totalpages = (ram + super::swap::totals().total).max(1);
    // dump_header
    kprintln!(
        "{} invoked oom-killer: gfp_mask={:#x}, order={}, oom_score_adj={}",
        cur_name,
        gfp_flags,
        Dec(order as u64),
        SDec(cur_adj as i64)
    );
    match memcg {
        Some(m) => {
            // mem_cgroup_print_oom_meminfo
            kprintln!(
                "memory: usage {}kB, limit {}kB, failcnt 0",
                kb(m.usage),
                if m.limit >= super::memcg::PAGE_COUNTER_MAX { Dec(u64::MAX / 1024) } else { kb(m.limit) }
            );
            kprintln!("Memory cgroup stats for {}:", m.path);
        }
        None => show_mem(cands, counts),
    }
    kprintln!("Tasks state (memory values in pages):");
    kprintln!("[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name");
    for c in cands {
        kprintln!(
            "[{}] 0 {} {} {} {} 0 0 {} {} {} {}",
            Dec(c.pid),
            Dec(c.pid),
            Dec(c.total_vm),
            Dec(c.rss),
            Dec(c.rss),
            Dec(c.pgtables * PAGE_SIZE),
            Dec(c.swapents),
            SDec(c.oom_score_adj as i64),
            c.name
        );
    }
    let Some((i, _points)) = select_bad_process(cands, totalpages) else {
        // Linux panics here ("Out of memory and no killable processes");
        // this kernel fails the allocation and keeps running.
        kprintln!("Out of memory and no killable processes...");
        return false;
    };
    let v = cands[i];
    let task_memcg = super::memcg::path_of(v.memcg as usize);
    let task_memcg = if task_memcg.is_empty() { "/" } else { &task_memcg };
    // dump_oom_victim: the request's node mask ("(null)" when it had
    // none), the cpuset's nodes (every node with memory: there are no
    // cpusets here), then the memcg context.
    let mems = NodeList(super::numa::nodes_with_memory());
    match scope {
        Scope::Memcg(m) => kprintln!(
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed={},oom_memcg={},task_memcg={},task={},pid={},uid=0",
            mems,
            m.path,
            task_memcg,
            v.name,
            Dec(v.pid)
        ),
        Scope::MemoryPolicy(mask) => kprintln!(
            "oom-kill:constraint=CONSTRAINT_MEMORY_POLICY,nodemask={},cpuset=/,mems_allowed={},global_oom,task_memcg={},task={},pid={},uid=0",
            NodeList(mask),
            mems,
            task_memcg,
            v.name,
            Dec(v.pid)
        ),
        Scope::Global(mask) if mask != mm_core::buddy::NODEMASK_ALL => kprintln!(
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask={},cpuset=/,mems_allowed={},global_oom,task_memcg={},task={},pid={},uid=0",
            NodeList(mask),
            mems,
            task_memcg,
            v.name,
            Dec(v.pid)
        ),
        Scope::Global(_) => kprintln!(
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed={},global_oom,task_memcg={},task={},pid={},uid=0",
            mems,
            task_memcg,
            v.name,
            Dec(v.pid)
        ),
    }
    let r = (ops.kill)(v.pid);
    if r == Reap::Gone {
        return false;
    }
    vmstat::count(Event::OomKill, 1);
    kprintln!(
        "{}: Killed process {} ({}) total-vm:{}kB, anon-rss:{}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:{}kB oom_score_adj:{}",
        if memcg.is_some() { "Memory cgroup out of memory" } else { "Out of memory" },
        Dec(v.pid),
        v.name,
        kb(v.total_vm),
        kb(v.rss),
        kb(v.pgtables),
        SDec(v.oom_score_adj as i64)
    );
    match r {
        Reap::Reaped => {
            kprintln!(
                "oom_reaper: reaped process {} ({}), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
                Dec(v.pid),
                v.name
            );
            true
        }
        // The caller itself: it dies before it runs user code again.
        Reap::Deferred => true,
        Reap::Busy | Reap::Gone => {
            kprintln!("oom_reaper: unable to reap pid:{} ({})", Dec(v.pid), v.name);
            false
        }
    }
}

/// Linux's `show_mem` / `show_free_areas`, the lines this kernel can fill
/// (the anon counts from the LRU lists, the swap lines from the swap area).
fn show_mem(cands: &[Candidate], c: mm_core::buddy::PageCounts) {
    use mm_core::lru::LruList;
    let st = STATS.with(|s| *s);
    let (slab, active, inactive) = PAGES.with(|p| {
        let slab =
            p.slab.caches().filter_map(|(id, _)| p.slab.info(&p.buddy, id)).map(|i| i.num_slabs * i.pagesperslab).sum();
        (slab, p.lru.total(LruList::ActiveAnon), p.lru.total(LruList::InactiveAnon))
    });
    let user_pt: u64 = cands.iter().map(|c| c.pgtables).sum();
    let sw = super::swap::totals();
    kprintln!("Mem-Info:");
    kprintln!("active_anon:{} inactive_anon:{} isolated_anon:0", Dec(active), Dec(inactive));
    kprintln!(" active_file:0 inactive_file:0 isolated_file:0");
    kprintln!(" unevictable:0 dirty:0 writeback:0");
    kprintln!(" slab_reclaimable:0 slab_unreclaimable:{}", Dec(slab));
    kprintln!(" mapped:0 shmem:0 pagetables:{}", Dec(st.boot_table_pages + st.table_pages + user_pt));
    kprintln!(" free:{} free_pcp:{} free_cma:0", Dec(c.free + c.pcp), Dec(c.pcp));
    kprintln!("0 total pagecache pages");
    kprintln!("{} pages in swap cache", Dec(sw.cached));
    kprintln!("Free swap  = {}kB", Dec(sw.free * (PAGE_SIZE / 1024)));
    kprintln!("Total swap = {}kB", Dec(sw.total * (PAGE_SIZE / 1024)));
    kprintln!("{} pages RAM", Dec(st.total_ram / PAGE_SIZE));
    kprintln!("{} pages reserved", Dec(st.reserved_bytes / PAGE_SIZE));
}
