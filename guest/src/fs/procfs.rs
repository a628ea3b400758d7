//! /proc as Linux has it, for the programs that read it: meminfo, vmstat,
//! buddyinfo, pagetypeinfo, PID/{maps,smaps,status,statm,stat,pagemap,
//! exe,cmdline,oom_score_adj}, self, and /proc/sys/vm. A text file's
//! contents are made when it is opened (a snapshot, as Linux's seq_file
//! makes them on the first read); pagemap is computed per read from the
//! page tables; writes to /proc/sys/vm apply a setting. The text
//! generators shared with the kernel's own console views live in
//! mm/procfs.rs.

use crate::fmt::Dec;
use crate::proc::mm::MmStruct;
use crate::proc::sched;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use mm_core::addr::{VirtAddr, PAGE_SHIFT, PAGE_SIZE};
use mm_core::buddy::PageOwner;
use mm_core::paging::swap::SwapEntry;
use mm_core::paging::LeafKinds;
use mm_core::vma::{VmFlags, VmaKind};

const ENOENT: i64 = 2;
const EINVAL: i64 = 22;
const EACCES: i64 = 13;
const ESRCH: i64 = 3;

/// An open /proc file.
#[derive(Debug)]
pub enum ProcFile {
    /// Text made at open.
    Text(Vec<u8>),
    /// PID/pagemap of the process with this pid.
    Pagemap(u64),
    /// A directory: its entries (name, `st_mode`).
    Dir(Vec<(String, u32)>),
    /// A /proc/sys/vm setting (index in [`SYSCTL_VM`]) and its text at open.
    Sysctl(usize, Vec<u8>),
    /// /proc/PID/oom_score_adj of the process with this pid, and its text
    /// at open (writable: [`oom_score_adj_write`]).
    OomScoreAdj(u64, Vec<u8>),
    /// /proc/PID/make-it-fail (fault injection's task filter, mm/
    /// fail_page_alloc.rs) of the process with this pid, and its text at
    /// open (writable: [`make_it_fail_write`]).
    MakeItFail(u64, Vec<u8>),
    /// A cgroup control file (cgroupfs.rs): group index, file index and
    /// its text at open (writable ones: `cgroupfs::write`).
    Cgroup(usize, usize, Vec<u8>),
    /// A /sys/kernel/mm/transparent_hugepage file (sysfs.rs): its index
    /// and its text at open (writable ones: `sysfs::write`).
    Sysfs(usize, Vec<u8>),
}

/// A /proc/sys/vm setting: its name, how to read it, how to write it
/// (None: read-only here). Transparent huge pages' mode is where Linux
/// keeps it, /sys/kernel/mm/transparent_hugepage/enabled (sysfs.rs).
pub struct Sysctl {
    /// The file name under /proc/sys/vm.
    pub name: &'static str,
    /// Its value.
    pub read: fn() -> u64,
    /// Applies a written value; None: the file is read-only.
    pub write: Option<fn(u64) -> Result<(), i64>>,
}

fn read_zero() -> u64 {
    0
}

/// The /proc/sys/vm files and the functions behind them.
pub const SYSCTL_VM: &[Sysctl] = &[
    Sysctl {
        name: "drop_caches",
        read: read_zero,
        write: Some(|v| {
            // 1: the page cache; 2: slab (shrinkers); 3: both. Only the
            // page cache has something to drop here.
            if !(1..=3).contains(&v) {
                return Err(-EINVAL);
            }
            let n = super::pagecache::drop_caches();
            crate::kprintln!("drop_caches: {} pages dropped", Dec(n));
            Ok(())
        }),
    },
    Sysctl {
        name: "compact_memory",
        read: read_zero,
        write: Some(|_| {
            crate::mm::compaction::compact_memory();
            Ok(())
        }),
    },
    Sysctl {
        name: "swappiness",
        read: || crate::mm::swap::SWAP.with(|s| s.swappiness as u64),
        write: Some(|v| {
            if v > mm_core::lru::MAX_SWAPPINESS as u64 {
                return Err(-EINVAL);
            }
            crate::mm::swap::set_swappiness(v as u32);
            Ok(())
        }),
    },
    Sysctl { name: "page-cluster", read: || 3, write: None },
    // Linux's /sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none
    // and max_ptes_shared (sysfs.rs serves those too; these names stay
    // for the programs that use them).
    Sysctl {
        name: "khugepaged_max_ptes_none",
        read: || crate::mm::huge_memory::max_ptes(crate::mm::huge_memory::MaxPtes::None),
        write: Some(|v| {
            if crate::mm::huge_memory::set_max_ptes(crate::mm::huge_memory::MaxPtes::None, v) {
                Ok(())
            } else {
                Err(-EINVAL)
            }
        }),
    },
    Sysctl {
        name: "khugepaged_max_ptes_shared",
        read: || crate::mm::huge_memory::max_ptes(crate::mm::huge_memory::MaxPtes::Shared),
        write: Some(|v| {
            if crate::mm::huge_memory::set_max_ptes(crate::mm::huge_memory::MaxPtes::Shared, v) {
                Ok(())
            } else {
                Err(-EINVAL)
            }
        }),
    },
    Sysctl {
        name: "min_free_kbytes",
        read: || crate::mm::PAGES.with(|p| p.buddy.min_free_kbytes()),
        write: Some(|v| {
            // An int, at least 0 (Linux's proc_dointvec_minmax); the
            // watermarks follow (setup_per_zone_wmarks).
            if v > i32::MAX as u64 {
                return Err(-EINVAL);
            }
            crate::mm::PAGES.with(|p| p.buddy.set_min_free_kbytes(v));
            Ok(())
        }),
    },
    Sysctl {
        name: "overcommit_memory",
        read: crate::mm::overcommit::overcommit_memory,
        write: Some(|v| if crate::mm::overcommit::set_overcommit_memory(v) { Ok(()) } else { Err(-EINVAL) }),
    },
    Sysctl {
        name: "overcommit_ratio",
        read: crate::mm::overcommit::overcommit_ratio,
        write: Some(|v| {
            crate::mm::overcommit::set_overcommit_ratio(v);
            Ok(())
        }),
    },
    Sysctl {
        name: "nr_hugepages",
        read: || crate::mm::hugetlb::sys_hugetlb(6, 0) as u64,
        write: Some(|v| {
            // Linux too takes the count and grows the pool as far as it
            // can; reading the file back says how far.
            crate::mm::hugetlb::set_max_huge_pages(crate::mm::hugetlb::default_size(), v);
            Ok(())
        }),
    },
    Sysctl {
        name: "nr_overcommit_hugepages",
        read: || crate::mm::hugetlb::counters()[4],
        write: Some(|v| {
            if crate::mm::hugetlb::set_overcommit(crate::mm::hugetlb::default_size(), v) {
                Ok(())
            } else {
                Err(-EINVAL)
            }
        }),
    },
];

/// A text buffer that never grows past the capacity it was given: what
/// the views that write under the page allocator's lock (buddyinfo,
/// pagetypeinfo, slabinfo) write into, since growing a `String` there
/// would take that lock again (the heap is its slab).
struct Bounded(String);

impl Bounded {
    fn new() -> Bounded {
        Bounded(String::with_capacity(32 * 1024))
    }
}

impl Write for Bounded {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if self.0.len() + s.len() > self.0.capacity() {
            return Err(core::fmt::Error);
        }
        self.0.push_str(s);
        Ok(())
    }
}

/// Writes `v` right-aligned in `width` columns (core's integer formatting
/// cannot run in ring 0: platform.md).
fn dec_pad(w: &mut String, v: u64, width: usize) {
    let mut s = crate::fmt::StackString::<24>::new();
    let _ = write!(s, "{}", Dec(v));
    for _ in s.as_str().len()..width {
        w.push(' ');
    }
    w.push_str(s.as_str());
}

/// `Name:` padded to 16 columns, the value in 8, " kB" (smaps, status).
fn kb_line(w: &mut String, name: &str, kb: u64) {
    w.push_str(name);
    w.push(':');
    for _ in name.len() + 1..16 {
        w.push(' ');
    }
    dec_pad(w, kb, 8);
    w.push_str(" kB\n");
}

/// Whether `pid` is a kernel thread (kswapd, kcompactd, khugepaged):
/// listed in /proc as on Linux, with no address space.
fn is_kthread(pid: u64) -> bool {
    sched::with_task(pid, |t| t.kthread).unwrap_or(false)
}

/// /proc/PID/`tail` of kernel thread `pid`, as Linux shows one: a name,
/// a state and ids, no memory (status without Vm lines, zeros in stat and
/// statm, empty maps and cmdline: what makes ps print `[kswapd0]`).
fn kthread_file(pid: u64, tail: &str) -> Result<Arc<ProcFile>, i64> {
    let Some((name, ppid, state, adj)) = sched::with_task(pid, |t| (t.name, t.parent, t.state, t.oom_score_adj)) else {
        return Err(-ENOENT);
    };
    let state = state_name(state);
    let mut text = String::new();
    match tail {
        "status" => {
            let _ = writeln!(text, "Name:\t{}\nState:\t{}", name, state);
            let _ = writeln!(text, "Tgid:\t{}\nPid:\t{}\nPPid:\t{}", Dec(pid), Dec(pid), Dec(ppid));
            text.push_str("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nThreads:\t1\n");
        }
        "stat" => {
            let s = state.as_bytes()[0] as char;
            let _ = writeln!(
                text,
                "{} ({}) {} {} 0 0 0 -1 2097216 0 0 0 0 0 0 0 0 20 0 1 0 0 0 0",
                Dec(pid),
                name,
                s,
                Dec(ppid)
            );
        }
        "statm" => text.push_str("0 0 0 0 0 0 0\n"),
        "comm" => {
            text.push_str(name);
            text.push('\n');
        }
        "oom_score_adj" => return Ok(oom_score_adj_file(pid, adj)),
        "make-it-fail" => {
            let v = sched::make_it_fail(pid, None).ok_or(-ENOENT)?;
            return Ok(Arc::new(ProcFile::MakeItFail(pid, if v { b"1\n".to_vec() } else { b"0\n".to_vec() })));
        }
        "maps" | "smaps" | "numa_maps" | "cmdline" | "pagemap" => {}
        _ => return Err(-ENOENT),
    }
    Ok(Arc::new(ProcFile::Text(text.into_bytes())))
}

/// status's `State:` text for a task state.
fn state_name(state: sched::State) -> &'static str {
    match state {
        sched::State::Runnable => "R (running)",
        sched::State::Waiting => "S (sleeping)",
        sched::State::Zombie(_) => "Z (zombie)",
    }
}

/// /proc/PID/oom_score_adj of task `pid`, whose value is `adj`: its text
/// at open, writable.
fn oom_score_adj_file(pid: u64, adj: i32) -> Arc<ProcFile> {
    let mut text = String::new();
    let _ = writeln!(text, "{}", crate::fmt::DecI64(adj.into()));
    Arc::new(ProcFile::OomScoreAdj(pid, text.into_bytes()))
}

/// The process `pid` names ("self": the caller): (pid, its mm).
pub(super) fn task_mm(pid: u64) -> Option<sched::MmRef> {
    // A thread group's: the leader's, or its threads' once it exited.
    sched::group_mm(pid)
}

/// What one VMA's pages add up to (smaps' fields, in pages; pss in
/// 1/4096 pages).
#[derive(Default)]
struct VmaUsage {
    rss: u64,
    pss_4k: u64,
    shared_clean: u64,
    shared_dirty: u64,
    private_clean: u64,
    private_dirty: u64,
    referenced: u64,
    anon: u64,
    swap: u64,
    /// Pages of transparent huge pages mapped by PMD leaves.
    anon_huge: u64,
    /// Pages of hugetlb pages, mapped once (private) or more (shared).
    hugetlb_private: u64,
    hugetlb_shared: u64,
    /// Clean anon pages MADV_FREE marked lazily freed (not swap-backed):
    /// reclaim may drop them.
    lazyfree: u64,
}

/// Pages a leaf of this size maps.
fn leaf_pages(size: mm_core::paging::PageSize) -> u64 {
    size.bytes() / PAGE_SIZE
}

/// smaps' and status's sums over `v`'s leaves (Linux's `smaps_pte_range`
/// and `smaps_pmd_entry`): a PMD leaf of a transparent huge page counts
/// its 512 pages in Rss and AnonHugePages, its sharing read from the
/// head frame's reference count; a hugetlb page counts in
/// Shared_/Private_Hugetlb only, not in Rss (as Linux's
/// `smaps_hugetlb_range`), its mappers being its references but the
/// pool's.
fn vma_usage(mm: &MmStruct, v: &mm_core::vma::Vma) -> VmaUsage {
    let (start, end) = (v.start, v.end);
    let hugetlb = v.flags.contains(VmFlags::HUGETLB);
    let mut u = VmaUsage::default();
    let zero = crate::proc::mm::MM_GLOBALS.with(|g| g.zero_pa);
    let mut leaves: Vec<(u64, bool, bool, u64)> = Vec::new();
    let _ = crate::proc::fault::user_pt(mm.pgd).for_each_leaf(
        &mut crate::mm::phys::direct_map(),
        start..end,
        LeafKinds::NonNone,
        |_, l| {
            if !l.entry.is_present() {
                u.swap += 1;
            } else {
                let pa = l.entry.0 & mm_core::paging::entry::PTE_ADDR_MASK_MAX;
                let f = l.entry.0;
                leaves.push((
                    pa,
                    f & mm_core::paging::PteFlags::DIRTY.0 != 0,
                    f & mm_core::paging::PteFlags::ACCESSED.0 != 0,
                    leaf_pages(l.size()),
                ));
            }
            true
        },
    );
    crate::mm::PAGES.with(|p| {
        for &(pa, dirty, accessed, n) in &leaves {
            if pa == zero || crate::mm::huge_memory::is_huge_zero(pa) {
                // The zero pages are not counted in Rss (Linux: vm_normal_page
                // returns NULL for them).
                continue;
            }
            let (refs, owner) = p.buddy.page(pa >> PAGE_SHIFT).map_or((1, 0), |pg| (pg.refcount.max(1), pg.owner));
            if hugetlb {
                // The pool holds one reference of its own.
                if refs > 2 {
                    u.hugetlb_shared += n;
                } else {
                    u.hugetlb_private += n;
                }
                continue;
            }
            u.rss += n;
            let cache = PageOwner::from_u8(owner) == PageOwner::PageCache;
            // Mappings: the references minus the cache's own.
            let maps = if cache { (refs - 1).max(1) } else { refs } as u64;
            u.pss_4k += n * 4096 / maps;
            if !cache {
                u.anon += n;
                if n > 1 {
                    u.anon_huge += n;
                }
                // Linux's smaps_account: an anon page neither dirty nor
                // swap-backed (MADV_FREE's mark, proc/mman.rs).
                use mm_core::lru::flags::{PG_LRU, PG_SWAPBACKED};
                let lazy = p.lru.folio_flags(pa >> PAGE_SHIFT).is_some_and(|f| f & (PG_LRU | PG_SWAPBACKED) == PG_LRU);
                if !dirty && lazy {
                    u.lazyfree += n;
                }
            }
            if accessed {
                u.referenced += n;
            }
            match (maps > 1, dirty) {
                (true, true) => u.shared_dirty += n,
                (true, false) => u.shared_clean += n,
                (false, true) => u.private_dirty += n,
                (false, false) => u.private_clean += n,
            }
        }
    });
    u
}

/// The name maps shows for a VMA.
fn vma_name(mm: &MmStruct, v: &mm_core::vma::Vma) -> String {
    match v.kind {
        VmaKind::File(ino) => super::inode(ino as usize).map_or(String::new(), |i| {
            if i.path.is_empty() {
                String::from("(deleted)")
            } else {
                i.path
            }
        }),
        // Only the initial stack (Linux's `vma_is_initial_stack`): a
        // MAP_GROWSDOWN mapping is nameless.
        VmaKind::Anon if v.flags.contains(VmFlags::GROWSDOWN) && v.end == crate::proc::mm::STACK_TOP => {
            String::from("[stack]")
        }
        VmaKind::Anon
            if v.start >= mm.start_brk && v.end <= mm.brk.next_multiple_of(PAGE_SIZE) && mm.brk > mm.start_brk =>
        {
            String::from("[heap]")
        }
        VmaKind::Anon => String::new(),
    }
}

/// One maps line (Linux's `show_map_vma`).
fn map_line(out: &mut String, mm: &MmStruct, v: &mm_core::vma::Vma) {
    let f = v.flags;
    let ch = |b: bool, c: char| if b { c } else { '-' };
    let _ = write!(
        out,
        "{:08x}-{:08x} {}{}{}{} {:08x} 00:{:02x} ",
        v.start,
        v.end,
        ch(f.contains(VmFlags::READ), 'r'),
        ch(f.contains(VmFlags::WRITE), 'w'),
        ch(f.contains(VmFlags::EXEC), 'x'),
        if f.contains(VmFlags::SHARED) { 's' } else { 'p' },
        if matches!(v.kind, VmaKind::File(_)) { v.pgoff << PAGE_SHIFT } else { 0 },
        if matches!(v.kind, VmaKind::File(_)) { 0x0f } else { 0 },
    );
    let ino = match v.kind {
        VmaKind::File(ino) => ino as u64 + 1,
        VmaKind::Anon => 0,
    };
    let mut s = crate::fmt::StackString::<24>::new();
    let _ = write!(s, "{}", Dec(ino));
    out.push_str(s.as_str());
    let name = vma_name(mm, v);
    if !name.is_empty() {
        // Linux pads the name to column 73 (25 + 6 * sizeof(void *) - 1).
        let line_start = out.rfind('\n').map_or(0, |i| i + 1);
        let col = out.len() - line_start;
        for _ in col..72 {
            out.push(' ');
        }
        out.push(' ');
        out.push_str(&name);
    }
    out.push('\n');
}

fn maps_text(mm: &mut MmStruct, smaps: bool) -> String {
    let mut out = String::new();
    let vmas: Vec<mm_core::vma::Vma> = mm.vmas.iter().copied().collect();
    for v in &vmas {
        map_line(&mut out, mm, v);
        if smaps {
            let u = vma_usage(mm, v);
            let page_kb =
                if v.flags.contains(VmFlags::HUGETLB) { crate::mm::hugetlb::HSize::of_vma(v).kb() } else { 4 };
            kb_line(&mut out, "Size", v.len() >> 10);
            kb_line(&mut out, "KernelPageSize", page_kb);
            kb_line(&mut out, "MMUPageSize", page_kb);
            kb_line(&mut out, "Rss", u.rss * 4);
            kb_line(&mut out, "Pss", u.pss_4k * 4 / 4096);
            kb_line(&mut out, "Shared_Clean", u.shared_clean * 4);
            kb_line(&mut out, "Shared_Dirty", u.shared_dirty * 4);
            kb_line(&mut out, "Private_Clean", u.private_clean * 4);
            kb_line(&mut out, "Private_Dirty", u.private_dirty * 4);
            kb_line(&mut out, "Referenced", u.referenced * 4);
            kb_line(&mut out, "Anonymous", u.anon * 4);
            kb_line(&mut out, "LazyFree", u.lazyfree * 4);
            kb_line(&mut out, "AnonHugePages", u.anon_huge * 4);
            kb_line(&mut out, "ShmemPmdMapped", 0);
            kb_line(&mut out, "FilePmdMapped", 0);
            kb_line(&mut out, "Shared_Hugetlb", u.hugetlb_shared * 4);
            kb_line(&mut out, "Private_Hugetlb", u.hugetlb_private * 4);
            kb_line(&mut out, "Swap", u.swap * 4);
            kb_line(&mut out, "SwapPss", u.swap * 4);
            kb_line(&mut out, "Locked", 0);
            // Linux's `thp_vma_allowable_order(.., PMD_ORDER)`: an
            // anonymous VMA the mode allows that holds an aligned 2 MiB.
            let eligible = v.kind == VmaKind::Anon
                && !v.flags.contains(VmFlags::HUGETLB)
                && crate::mm::huge_memory::vma_allows(v.flags)
                && v.start.next_multiple_of(2 << 20) + (2 << 20) <= v.end;
            out.push_str(if eligible { "THPeligible:    1\n" } else { "THPeligible:    0\n" });
            let _ = writeln!(
                out,
                "VmFlags: {}{}{}{}mr mw me {}{}",
                if v.flags.contains(VmFlags::READ) { "rd " } else { "" },
                if v.flags.contains(VmFlags::WRITE) { "wr " } else { "" },
                if v.flags.contains(VmFlags::EXEC) { "ex " } else { "" },
                if v.flags.contains(VmFlags::SHARED) { "sh " } else { "" },
                if v.flags.contains(VmFlags::SHARED) { "ms " } else { "" },
                if v.flags.contains(VmFlags::GROWSDOWN) { "gd ac" } else { "ac" },
            );
        }
    }
    out
}

fn status_text(pid: u64, mm: &mut MmStruct) -> String {
    mm.sync_reclaim_counters();
    let (name, ppid, state) =
        sched::with_task(pid, |t| (t.name, t.parent, t.state)).unwrap_or(("?", 0, sched::State::Runnable));
    let vm_size: u64 = mm.vmas.iter().map(|v| v.len()).sum();
    let stack: u64 = mm.vmas.iter().filter(|v| v.flags.contains(VmFlags::GROWSDOWN)).map(|v| v.len()).sum();
    let exe: u64 = mm.vmas.iter().filter(|v| v.flags.contains(VmFlags::EXEC)).map(|v| v.len()).sum();
    let data: u64 = mm
        .vmas
        .iter()
        .filter(|v| {
            v.flags.contains(VmFlags::WRITE)
                && !v.flags.contains(VmFlags::SHARED)
                && !v.flags.contains(VmFlags::GROWSDOWN)
        })
        .map(|v| v.len())
        .sum();
    let (mut file, mut anon) = (0u64, 0u64);
    for v in mm.vmas.iter().copied().collect::<Vec<_>>() {
        let u = vma_usage(mm, &v);
        anon += u.anon;
        file += u.rss - u.anon;
    }
    let mut out = String::new();
    let _ = writeln!(out, "Name:\t{}", name);
    let _ = writeln!(out, "State:\t{}", state_name(state));
    let tgid = sched::with_task(pid, |t| t.tgid).unwrap_or(pid);
    let _ = writeln!(out, "Tgid:\t{}\nPid:\t{}\nPPid:\t{}", Dec(tgid), Dec(pid), Dec(ppid));
    out.push_str("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n");
    kb_line(&mut out, "VmPeak", vm_size >> 10);
    kb_line(&mut out, "VmSize", vm_size >> 10);
    kb_line(&mut out, "VmLck", 0);
    kb_line(&mut out, "VmPin", 0);
    kb_line(&mut out, "VmHWM", mm.stat.rss_pages * 4);
    kb_line(&mut out, "VmRSS", mm.stat.rss_pages * 4);
    kb_line(&mut out, "RssAnon", anon * 4);
    kb_line(&mut out, "RssFile", file * 4);
    kb_line(&mut out, "RssShmem", 0);
    kb_line(&mut out, "VmData", data >> 10);
    kb_line(&mut out, "VmStk", stack >> 10);
    kb_line(&mut out, "VmExe", exe >> 10);
    kb_line(&mut out, "VmLib", 0);
    kb_line(&mut out, "VmPTE", mm.stat.pt_pages * 4);
    kb_line(&mut out, "VmSwap", mm.stat.swap_ents * 4);
    let _ = writeln!(out, "Threads:\t{}", Dec(sched::group_threads(pid).len() as u64));
    out
}

fn statm_text(mm: &mut MmStruct) -> String {
    mm.sync_reclaim_counters();
    let size: u64 = mm.vmas.iter().map(|v| v.len() >> PAGE_SHIFT).sum();
    let text: u64 = mm.vmas.iter().filter(|v| v.flags.contains(VmFlags::EXEC)).map(|v| v.len() >> PAGE_SHIFT).sum();
    let data: u64 = mm.vmas.iter().filter(|v| v.flags.contains(VmFlags::WRITE)).map(|v| v.len() >> PAGE_SHIFT).sum();
    let mut out = String::new();
    let _ = writeln!(out, "{} {} 0 {} 0 {} 0", Dec(size), Dec(mm.stat.rss_pages), Dec(text), Dec(data));
    out
}

/// Linux's pagemap entry bits.
pub mod pm {
    /// Present in RAM.
    pub const PRESENT: u64 = 1 << 63;
    /// Swapped out.
    pub const SWAP: u64 = 1 << 62;
    /// A file page or shared anonymous.
    pub const FILE: u64 = 1 << 61;
    /// Mapped exclusively (one mapping).
    pub const EXCLUSIVE: u64 = 1 << 56;
    /// Soft-dirty.
    pub const SOFT_DIRTY: u64 = 1 << 55;
    /// The PFN (or the swap type in bits 0-4 and offset from bit 5).
    pub const PFN_MASK: u64 = (1 << 55) - 1;
}

/// PID/pagemap entries for the pages from user address `va` (one u64
/// per page, `n` of them), Linux's `pagemap_pte_range`. Soft-dirty
/// follows the PTE's dirty bit (there is no clear_refs to reset it), as
/// Linux's is set on every page written since the process began.
pub fn pagemap_entries(pid: u64, va: u64, n: usize) -> Result<Vec<u64>, i64> {
    let mm = task_mm(pid).ok_or(-ENOENT)?;
    let mut out = alloc::vec![0u64; n];
    let end = va.saturating_add(n as u64 * PAGE_SIZE).min(1 << 47);
    if va >= end {
        return Ok(out);
    }
    let mut leaves: Vec<(u64, u64, u64)> = Vec::new();
    mm.with(|mm| {
        let _ = crate::proc::fault::user_pt(mm.pgd).for_each_leaf(
            &mut crate::mm::phys::direct_map(),
            va..end,
            LeafKinds::NonNone,
            |_, l| {
                leaves.push((l.va.0, l.entry.0, l.size().bytes()));
                true
            },
        );
        let shared: Vec<(u64, u64)> = mm
            .vmas
            .iter()
            .filter(|v| v.flags.contains(VmFlags::SHARED) || matches!(v.kind, VmaKind::File(_)))
            .map(|v| (v.start, v.end))
            .collect();
        crate::mm::PAGES.with(|p| {
            for &(lva, e, size) in &leaves {
                let pte = mm_core::paging::Pte(e);
                let in_shared = shared.iter().any(|&(a, b)| lva >= a && lva < b);
                if !pte.is_present() {
                    let i = (lva.wrapping_sub(va) >> PAGE_SHIFT) as usize;
                    let Some(slot) = out.get_mut(i) else { continue };
                    if let Some(se) = SwapEntry::from_pte(pte) {
                        let s = se.swp();
                        *slot = pm::SWAP | (((s.offset << 5) | (s.ty as u64 & 0x1f)) & pm::PFN_MASK);
                        if in_shared {
                            *slot |= pm::FILE;
                        }
                    }
                    continue;
                }
                // A huge leaf gives each of its 4 KiB pages in the window
                // its own frame (Linux's pagemap_pmd_range and
                // pagemap_hugetlb_range), the leaf perhaps starting before
                // `va`.
                let head = (e & mm_core::paging::entry::PTE_ADDR_MASK_MAX) >> PAGE_SHIFT;
                let (from, to) = (lva.max(va), (lva + size).min(end));
                let mut page_va = from;
                while page_va < to {
                    let pfn = head + ((page_va - lva) >> PAGE_SHIFT);
                    let i = ((page_va - va) >> PAGE_SHIFT) as usize;
                    page_va += PAGE_SIZE;
                    let Some(slot) = out.get_mut(i) else { continue };
                    // A hugetlb page's count lives on its blocks' heads
                    // and holds the pool's reference too.
                    let frame = p.buddy.page(pfn).filter(|pg| pg.refcount > 0).map(|pg| (pg.refcount, pg.owner));
                    let (refs, owner) =
                        frame.or_else(|| p.buddy.page(head).map(|pg| (pg.refcount, pg.owner))).unwrap_or((0, 0));
                    let owner = PageOwner::from_u8(owner);
                    let cache = owner == PageOwner::PageCache;
                    let mut v = pm::PRESENT | (pfn & pm::PFN_MASK);
                    if cache || in_shared {
                        v |= pm::FILE;
                    }
                    let maps = if cache || owner == PageOwner::HugeTlb { refs.saturating_sub(1) } else { refs };
                    if maps == 1 {
                        v |= pm::EXCLUSIVE;
                    }
                    if e & mm_core::paging::PteFlags::DIRTY.0 != 0 {
                        v |= pm::SOFT_DIRTY;
                    }
                    *slot = v;
                }
            }
        });
    });
    let _ = VirtAddr(0);
    Ok(out)
}

const DIR: u32 = super::S_IFDIR | 0o555;
const REG: u32 = super::S_IFREG | 0o444;
const LNK: u32 = super::S_IFLNK | 0o777;

/// The files of /proc/PID.
const PID_FILES: [(&str, u32); 12] = [
    ("maps", REG),
    ("numa_maps", REG),
    ("smaps", REG),
    ("pagemap", REG),
    ("status", REG),
    ("statm", REG),
    ("stat", REG),
    ("cmdline", REG),
    ("exe", LNK),
    ("oom_score_adj", super::S_IFREG | 0o644),
    ("make-it-fail", super::S_IFREG | 0o644),
    ("comm", REG),
];

/// The files of /proc itself.
const TOP_FILES: [&str; 10] = [
    "meminfo",
    "vmstat",
    "buddyinfo",
    "pagetypeinfo",
    "slabinfo",
    "vmallocinfo",
    "swaps",
    "interrupts",
    "zoneinfo",
    "numastat",
];

/// Splits a /proc path: (pid, the rest) for /proc/PID/... and
/// /proc/self/... (None for the top level's own files).
fn split_pid(rest: &str) -> Option<(u64, &str)> {
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    // self is the process (the thread group), as on Linux.
    let pid = if first == "self" { sched::current_tgid() } else { crate::fmt::parse_u64(first)? };
    // PID/task/TID/FILE is thread TID's FILE (TID in PID's group).
    if let Some(t) = tail.strip_prefix("task/") {
        let (tid, tail) = t.split_once('/').unwrap_or((t, ""));
        let tid = crate::fmt::parse_u64(tid)?;
        if !sched::group_threads(pid).contains(&tid) {
            return None;
        }
        return Some((tid, tail));
    }
    Some((pid, tail))
}

/// Whether `path` (normalised) lies under /proc.
pub fn is_proc(path: &str) -> bool {
    // The cgroup file system and /sys/kernel are served the same way
    // (cgroupfs.rs, sysfs.rs).
    path == "/proc" || path.starts_with("/proc/") || super::cgroupfs::is_cgroup(path) || super::sysfs::is_sysfs(path)
}

/// `st_mode` of /proc path `path`, or -ENOENT.
pub fn mode_of(path: &str) -> Result<u32, i64> {
    if super::cgroupfs::is_cgroup(path) {
        return super::cgroupfs::mode_of(path);
    }
    if super::sysfs::is_sysfs(path) {
        return super::sysfs::mode_of(path);
    }
    let rest = path.strip_prefix("/proc").unwrap_or("").trim_start_matches('/');
    if rest.is_empty() || rest == "sys" || rest == "sys/vm" {
        return Ok(DIR);
    }
    if TOP_FILES.contains(&rest) {
        return Ok(REG);
    }
    if let Some(name) = rest.strip_prefix("sys/vm/") {
        return match SYSCTL_VM.iter().find(|s| s.name == name) {
            Some(s) if s.write.is_some() => Ok(super::S_IFREG | 0o644),
            Some(_) => Ok(REG),
            None => Err(-ENOENT),
        };
    }
    let (pid, tail) = split_pid(rest).ok_or(-ENOENT)?;
    if task_mm(pid).is_none() && !is_kthread(pid) {
        return Err(-ENOENT);
    }
    if tail.is_empty() || tail == "task" {
        return Ok(DIR);
    }
    PID_FILES.iter().find(|(n, _)| *n == tail).map(|&(_, m)| m).ok_or(-ENOENT)
}

/// `readlink` of /proc/PID/exe (and /proc/self itself).
pub fn readlink(path: &str) -> Result<Vec<u8>, i64> {
    let rest = path.strip_prefix("/proc/").ok_or(-ENOENT)?;
    if rest == "self" {
        let mut s = String::new();
        let _ = write!(s, "{}", Dec(sched::current_tgid()));
        return Ok(s.into_bytes());
    }
    let (pid, tail) = split_pid(rest).ok_or(-ENOENT)?;
    if tail != "exe" {
        return Err(-EINVAL);
    }
    match sched::with_task(pid, |t| t.exe) {
        Some(exe) if !exe.is_empty() => Ok(exe.as_bytes().to_vec()),
        _ => Err(-ENOENT),
    }
}

/// Opens /proc path `path` (normalised) for reading (or writing, a
/// /proc/sys/vm file).
pub fn open(path: &str, write: bool) -> Result<Arc<ProcFile>, i64> {
    if super::cgroupfs::is_cgroup(path) {
        return super::cgroupfs::open(path, write);
    }
    if super::sysfs::is_sysfs(path) {
        return super::sysfs::open(path, write);
    }
    let mode = mode_of(path)?;
    let rest = path.strip_prefix("/proc").unwrap_or("").trim_start_matches('/');
    if write && mode & 0o200 == 0 {
        return Err(-EACCES);
    }
    if mode & super::S_IFMT == super::S_IFDIR {
        let mut e: Vec<(String, u32)> = Vec::new();
        match rest {
            "" => {
                e.extend(TOP_FILES.iter().map(|n| (String::from(*n), REG)));
                e.push((String::from("self"), LNK));
                e.push((String::from("sys"), DIR));
                for pid in sched::pids() {
                    let mut s = String::new();
                    let _ = write!(s, "{}", Dec(pid));
                    e.push((s, DIR));
                }
            }
            "sys" => e.push((String::from("vm"), DIR)),
            "sys/vm" => e.extend(SYSCTL_VM.iter().map(|s| (String::from(s.name), REG))),
            _ if rest.ends_with("/task") => {
                // PID/task: one directory per live thread.
                let (pid, _) = split_pid(rest).ok_or(-ENOENT)?;
                for tid in sched::group_threads(pid) {
                    let mut s = String::new();
                    let _ = write!(s, "{}", Dec(tid));
                    e.push((s, DIR));
                }
            }
            _ => {
                e.extend(PID_FILES.iter().map(|&(n, m)| (String::from(n), m)));
                if !rest.contains("/task/") {
                    e.push((String::from("task"), DIR));
                }
            }
        }
        return Ok(Arc::new(ProcFile::Dir(e)));
    }
    let mut text = String::new();
    match rest {
        "meminfo" => crate::mm::procfs::meminfo_to(&mut text),
        "swaps" => crate::mm::swap::swaps_to(&mut text),
        "interrupts" => {
            let _ = crate::arch::tlb::interrupts_to(&mut text);
        }
        "buddyinfo" => {
            let mut b = Bounded::new();
            crate::mm::procfs::buddyinfo_to(&mut b);
            text = b.0;
        }
        "vmstat" => {
            let (cached, shmem) = super::pagecache::counts();
            let _ = writeln!(text, "nr_file_pages {}\nnr_shmem {}", Dec(cached), Dec(shmem));
            for (name, v) in crate::mm::vmstat::NAMES.iter().zip(crate::mm::vmstat::snapshot()) {
                let _ = writeln!(text, "{} {}", name, Dec(v));
            }
            for (name, v) in crate::mm::vmstat::extra() {
                let _ = writeln!(text, "{} {}", name, Dec(v));
            }
            for (name, v) in crate::arch::tlb::vmstat() {
                let _ = writeln!(text, "{} {}", name, Dec(v));
            }
            // Linux's NUMA event counters, summed over the nodes.
            let numa = crate::mm::numa::numastat_total();
            for (name, v) in crate::mm::numa::NUMASTAT_NAMES.iter().zip(numa) {
                let _ = writeln!(text, "{} {}", name, Dec(v));
            }
        }
        "numastat" => crate::mm::numa::numastat_to(&mut text),
        "zoneinfo" => {
            let mut b = Bounded::new();
            crate::mm::procfs::zoneinfo_to(&mut b);
            text = b.0;
        }
        "pagetypeinfo" => {
            let mut b = Bounded::new();
            crate::mm::PAGES.with(|p| {
                let _ = p.buddy.pagetypeinfo_text(&mut b);
            });
            text = b.0;
        }
        "slabinfo" => {
            let mut b = Bounded::new();
            crate::mm::PAGES.with(|p| {
                let _ = p.slab.slabinfo(&p.buddy, &mut b);
            });
            text = b.0;
        }
        "vmallocinfo" => {
            let mut b = Bounded::new();
            crate::mm::vmalloc::VMAP.with(|v| {
                let _ = v.vmallocinfo(&mut b);
            });
            text = b.0;
        }
        _ => {
            if let Some(name) = rest.strip_prefix("sys/vm/") {
                let i = SYSCTL_VM.iter().position(|s| s.name == name).ok_or(-ENOENT)?;
                let _ = writeln!(text, "{}", Dec((SYSCTL_VM[i].read)()));
                return Ok(Arc::new(ProcFile::Sysctl(i, text.into_bytes())));
            }
            let (pid, tail) = split_pid(rest).ok_or(-ENOENT)?;
            if is_kthread(pid) {
                return kthread_file(pid, tail);
            }
            let mm = task_mm(pid).ok_or(-ENOENT)?;
            match tail {
                "maps" => text = mm.with(|m| maps_text(m, false)),
                "smaps" => text = mm.with(|m| maps_text(m, true)),
                "numa_maps" => text = mm.with(|m| crate::proc::mempolicy::numa_maps_text(pid, m, |v| vma_name(m, v))),
                "status" => text = mm.with(|m| status_text(pid, m)),
                "statm" => text = mm.with(statm_text),
                "pagemap" => return Ok(Arc::new(ProcFile::Pagemap(pid))),
                "cmdline" => {
                    let c = sched::with_task(pid, |t| t.cmdline.clone()).unwrap_or_default();
                    return Ok(Arc::new(ProcFile::Text(c)));
                }
                "comm" => {
                    text.push_str(sched::with_task(pid, |t| t.name).unwrap_or(""));
                    text.push('\n');
                }
                "stat" => {
                    let (name, ppid) = sched::with_task(pid, |t| (t.name, t.parent)).unwrap_or(("?", 0));
                    let (rss, vsize, minflt, majflt) = mm.with(|m| {
                        m.sync_reclaim_counters();
                        let vsize: u64 = m.vmas.iter().map(|v| v.len()).sum();
                        (m.stat.rss_pages, vsize, m.stat.faults.saturating_sub(m.stat.maj_faults), m.stat.maj_faults)
                    });
                    // Linux's fields 1-24 (pid comm state ppid pgrp session
                    // tty tpgid flags minflt cminflt majflt cmajflt utime
                    // stime cutime cstime priority nice threads itreal
                    // starttime vsize rss).
                    let _ = writeln!(
                        text,
                        "{} ({}) R {} {} {} 0 -1 0 {} 0 {} 0 0 0 0 0 20 0 {} 0 0 {} {}",
                        Dec(pid),
                        name,
                        Dec(ppid),
                        Dec(pid),
                        Dec(pid),
                        Dec(minflt),
                        Dec(majflt),
                        Dec(sched::group_threads(pid).len() as u64),
                        Dec(vsize),
                        Dec(rss)
                    );
                }
                "oom_score_adj" => return Ok(oom_score_adj_file(pid, sched::oom_score_adj(pid, None).unwrap_or(0))),
                "make-it-fail" => {
                    let v = sched::make_it_fail(pid, None).ok_or(-ENOENT)?;
                    return Ok(Arc::new(ProcFile::MakeItFail(pid, if v { b"1\n".to_vec() } else { b"0\n".to_vec() })));
                }
                _ => return Err(-ENOENT),
            }
        }
    }
    Ok(Arc::new(ProcFile::Text(text.into_bytes())))
}

/// A write to /proc/PID/oom_score_adj (Linux's `oom_score_adj_write`):
/// a decimal in -1000..=1000 (OOM_SCORE_ADJ_MIN..MAX), surrounding white
/// space allowed; -EINVAL otherwise, -ESRCH once the process is gone.
pub fn oom_score_adj_write(pid: u64, data: &[u8]) -> Result<(), i64> {
    let s = core::str::from_utf8(data).map_err(|_| -EINVAL)?.trim();
    let v = crate::fmt::parse_i64(s).filter(|v| (-1000..=1000).contains(v)).ok_or(-EINVAL)? as i32;
    sched::oom_score_adj(pid, Some(v)).map(|_| ()).ok_or(-ESRCH)
}

/// A write to /proc/PID/make-it-fail: 0 or 1 (Linux's `proc_fault_inject_write`
/// takes any integer and stores whether it is non-zero).
pub fn make_it_fail_write(pid: u64, data: &[u8]) -> Result<(), i64> {
    let s = core::str::from_utf8(data).map_err(|_| -EINVAL)?.trim();
    let v = crate::fmt::parse_i64(s).ok_or(-EINVAL)?;
    sched::make_it_fail(pid, Some(v != 0)).map(|_| ()).ok_or(-ESRCH)
}

/// A write to /proc/sys/vm file `i`: the number written, applied.
pub fn sysctl_write(i: usize, data: &[u8]) -> Result<(), i64> {
    let s = core::str::from_utf8(data).map_err(|_| -EINVAL)?.trim();
    let v = crate::fmt::parse_u64(s).ok_or(-EINVAL)?;
    match SYSCTL_VM.get(i).and_then(|s| s.write) {
        Some(w) => w(v),
        None => Err(-EACCES),
    }
}
