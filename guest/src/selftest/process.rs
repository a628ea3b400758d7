//! Self-tests of processes: the user programs (guest/user/) run in ring 3
//! and report what they measured (`SYS_REPORT`); these checks hold them
//! to the claims: demand paging faults exactly once per touched
//! page, fork copies exactly the written pages, a segfaulting child dies
//! alone, one virtual address maps different frames in two processes,
//! malloc takes brk or mmap by size and trims brk, the stack grows, the
//! timer preempts, and nothing leaks once every process has exited.

use super::check;
use crate::detail;
use crate::fmt::Dec;
use crate::mm::PAGES;
use crate::proc::{self, abi::SIGSEGV, report};

/// Allocated pages with every cache (per-CPU slabs, empty slabs, per-CPU
/// page lists) given back first.
fn allocated_pages() -> u64 {
    PAGES.with(|p| {
        crate::mm::percpu::drain_all_locked(p);
        for cpu in 0..p.buddy.nr_cpus() {
            let _ = p.slab.flush_cpu(&mut p.buddy, &mut p.phys, cpu);
        }
        let _ = p.slab.shrink_all(&mut p.buddy, &mut p.phys);
        p.buddy.drain_all_pages();
        p.buddy.counts().allocated
    })
}

fn rep(key: &str) -> u64 {
    report::get(key).unwrap_or(u64::MAX)
}

/// Runs `name`; true if it exited with status 0.
fn run_ok(name: &str, arg: u64) -> (bool, u64) {
    report::clear();
    let status = proc::run(name, arg);
    (status == Some(0), status.unwrap_or(u64::MAX))
}

/// The `process` group.
pub fn process() {
    let timer = proc::start_timer();
    // After the timer: the first start may map the xAPIC page for good
    // (page tables and the area's bookkeeping), which is no leak.
    // So do the first kernel stacks' vmalloc bookkeeping (the area
    // allocator's arena and tree nodes) and the window's page tables:
    // a few stacks mapped and unmapped first.
    let warm: alloc::vec::Vec<u64> = (0..8).filter_map(|_| proc::kstack::alloc_thread_stack()).collect();
    for b in warm {
        proc::kstack::free_thread_stack(b);
    }
    proc::kstack::drain_cache();
    let (hits0, misses0) = proc::kstack::cache_stats();
    let base = allocated_pages();
    let window_tables = crate::mm::vmalloc::TABLE_PAGES.load(core::sync::atomic::Ordering::Relaxed);
    if !timer {
        crate::kprintln!("selftest: process: no local APIC (the VMM created no in-kernel irqchip): no timer, cooperative scheduling only");
    }

    let n = 64;
    let (ok, st) = run_ok("touch", n);
    let (faults, anon, rss) = (rep("touch_faults"), rep("touch_anon_faults"), rep("touch_rss"));
    check(
        "process",
        "touch_n_pages_faults_n_times",
        ok && faults == n && anon == n && rss == n,
        &detail!(
            "{} pages touched: {} faults, {} anonymous pages, RSS +{} (exit status {:#x})",
            Dec(n),
            Dec(faults),
            Dec(anon),
            Dec(rss),
            st
        ),
    );
    let (zmaps, zwrites, sum, retouch) =
        (rep("zero_page_maps"), rep("zero_write_faults"), rep("zero_read_sum"), rep("retouch_faults"));
    check(
        "process",
        "zero_page_then_copy_on_write",
        zmaps == 16 && zwrites == 16 && sum == 0 && retouch == 0,
        &detail!("16 reads of never-written pages mapped the zero page {} times (sum {}), 16 writes then faulted {} times; rewriting resident pages: {} faults", Dec(zmaps), Dec(sum), Dec(zwrites), Dec(retouch)),
    );
    let freed = rep("munmap_rss_freed");
    check(
        "process",
        "munmap_frees_pages",
        freed == n + 16,
        &detail!("munmap dropped RSS by {} pages (expected {})", Dec(freed), Dec(n + 16)),
    );

    let (ok, st) = run_ok("cow", n);
    let (copies, wfaults, copied, pts) = (
        rep("child_cow_copies"),
        rep("child_write_faults"),
        rep("child_fork_copied_pages"),
        rep("child_fork_pt_pages"),
    );
    let (reuses, pcopies, own) = (rep("parent_cow_reuses"), rep("parent_cow_copies"), rep("parent_sees_own_data"));
    check(
        "process",
        "fork_copies_exactly_written_pages",
        ok && copies == n / 4 && wfaults == n / 4 && copied == 0 && own == 1,
        &detail!("fork of {} touched pages copied {} data pages ({} page-table pages); child wrote {}: {} copies in {} faults (status {:#x})", Dec(n), Dec(copied), Dec(pts), Dec(n / 4), Dec(copies), Dec(wfaults), st),
    );
    check(
        "process",
        "cow_reuses_last_user_frame",
        reuses == n && pcopies == 0,
        &detail!(
            "after the child exited the parent's {} writes reused {} frames and copied {}",
            Dec(n),
            Dec(reuses),
            Dec(pcopies)
        ),
    );

    let (ok, st) = run_ok("segv", 0);
    let (killed, exited, statuses) = (rep("segv_killed"), rep("segv_exited"), rep("segv_statuses_ok"));
    check(
        "process",
        "segfault_kills_only_the_child",
        ok && killed == 3 && exited == 2 && statuses == 1,
        &detail!("{} children killed by signal {} (NULL write, mprotect'd write, NX fetch), {} siblings exited normally, parent status {:#x}", Dec(killed), Dec(SIGSEGV), Dec(exited), st),
    );

    // Six instances spawned together: all alive at once (each waits after
    // mapping until all six reported), each must get its own frame at the
    // same address.
    report::clear();
    // Pinned to this CPU, as on a uniprocessor: with other CPUs idle the
    // first ones would otherwise finish before the last start.
    let pids: alloc::vec::Vec<_> = proc::sched::with_spawn_affinity(1 << crate::arch::percpu::cpu_id(), || {
        (1..=6u64).map(|i| proc::spawn("sameva", (6 << 32) | (0x1111 * i))).collect()
    });
    // Six address spaces exist now: the host can list and walk them.
    crate::checkpoint::checkpoint("processes-alive");
    let statuses: alloc::vec::Vec<_> =
        pids.iter().map(|p| p.as_ref().ok().and_then(|&p| proc::sched::kernel_wait(p))).collect();
    let phys = report::all("sameva_phys");
    let kept = report::all("sameva_kept");
    let mut frames: alloc::vec::Vec<u64> = phys.iter().map(|p| p.1).collect();
    frames.sort_unstable();
    frames.dedup();
    let distinct = phys.len() == 6 && frames.len() == 6 && !frames.contains(&0);
    check(
        "process",
        "same_va_different_frames",
        distinct && kept.iter().filter(|k| k.1 == 1).count() == 6 && statuses.iter().all(|s| *s == Some(0)),
        &detail!(
            "0x20000000 in 6 live processes: {} distinct frames (mm-core walk of each CR3), e.g. {:#x} and {:#x}; each kept its value",
            Dec(frames.len() as u64),
            phys.first().map_or(0, |p| p.1),
            phys.get(1).map_or(0, |p| p.1)
        ),
    );
    // The test's own heap objects must not count in the leak check.
    drop((pids, statuses, phys, kept, frames));

    let (ok, st) = run_ok("mallocs", 0);
    check(
        "process",
        "malloc_small_uses_brk",
        ok && rep("small_from_brk") == 1,
        &detail!("malloc(100) grew brk, no mmap (status {:#x})", st),
    );
    check(
        "process",
        "malloc_large_uses_mmap",
        rep("big_from_mmap") == 1 && rep("big_freed_with_munmap") == 1,
        "malloc(132 KiB) took its own mmap, free() munmapped it",
    );
    let (shrunk, rss_freed) = (rep("trim_brk_shrunk_bytes"), rep("trim_rss_freed_pages"));
    check(
        "process",
        "free_heap_top_shrinks_brk",
        (100 * 1024..u64::MAX).contains(&shrunk) && rss_freed >= 25,
        &detail!("freeing the top 100 KiB block (top chunk past the 128 KiB trim threshold) lowered brk by {} bytes and gave {} resident pages back", Dec(shrunk), Dec(rss_freed)),
    );
    check("process", "malloc_churn", rep("churn_ok") == 1, "2000 mixed-size malloc/free with contents checked");

    let (ok, _) = run_ok("stack", 0);
    let (grows, depth) = (rep("stack_grows"), rep("stack_pages_below_vma"));
    check(
        "process",
        "stack_grows_down",
        ok && rep("stack_sum_ok") == 1 && depth >= 60 && depth != u64::MAX && (1..=depth + 2).contains(&grows),
        &detail!("recursion reached {} pages below the 16 KiB stack VMA (plus its callees' frames): the VMA grew in {} faults", Dec(depth), Dec(grows)),
    );

    // Without a timer the spinners could only give up after seconds: the
    // check runs where there is an APIC, and says so where there is not.
    if timer {
        let (ok, _) = run_ok("spin", 0);
        let (saw, pp, cp) = (rep("parent_saw_child_run"), rep("parent_preemptions"), rep("child_preemptions"));
        check(
            "process",
            "timer_preempts_round_robin",
            ok && saw == 1 && pp != u64::MAX && pp + cp > 0,
            &detail!("two processes spinning in ring 3 without system calls both ran: preempted {} (parent) and {} (child) times", Dec(pp), Dec(cp)),
        );
    } else {
        crate::kprintln!("selftest: process/timer_preempts_round_robin: NOT RUN (no local APIC)");
    }

    proc::stop_timer();
    let (max_alive, ticks, switches) = proc::sched::SCHED.with(|s| (s.max_alive, s.ticks, s.switches));
    check(
        "process",
        "several_processes_alive",
        max_alive >= 6,
        &detail!(
            "up to {} processes alive at once; {} timer ticks, {} context switches",
            Dec(max_alive),
            Dec(ticks),
            Dec(switches)
        ),
    );

    let (hits, misses) = proc::kstack::cache_stats();
    let (hits, misses) = (hits - hits0, misses - misses0);
    check(
        "process",
        "freed_kernel_stacks_reused",
        hits > 0 && hits + misses >= 10,
        &detail!(
            "{} new tasks' kernel stacks came from the per-CPU caches of freed ones, {} were mapped anew",
            Dec(hits),
            Dec(misses)
        ),
    );

    report::clear();
    proc::sched::shrink_idle();
    let sizes = proc::sched::sizes();
    // The freed kernel stacks the CPUs keep mapped for the next fork go
    // back too; the vmalloc window's page tables the stacks needed stay
    // (as Linux's), and are no leak.
    let cached = proc::kstack::drain_cache();
    let window_tables = crate::mm::vmalloc::TABLE_PAGES.load(core::sync::atomic::Ordering::Relaxed) - window_tables;
    let after = allocated_pages() - window_tables;
    check(
        "process",
        "no_frames_leak",
        after == base,
        &detail!(
            "allocated pages before the programs {}, after all exited {} (not counting {} vmalloc-window page tables, after freeing {} cached kernel stacks; tasks left: {}; scheduler tasks/runq/woken/masks {} {} {} {})",
            Dec(base),
            Dec(after),
            Dec(window_tables),
            Dec(cached),
            Dec(proc::sched::pids().len() as u64 + proc::sched::zombies() as u64),
            Dec(sizes[0]),
            Dec(sizes[1]),
            Dec(sizes[2]),
            Dec(sizes[3])
        ),
    );
    let added = proc::kernel_half_added();
    check(
        "process",
        "kernel_pgd_half_fixed_at_boot",
        added.is_empty(),
        &detail!("kernel-half PGD entries created after boot: {:?}", added.as_slice()),
    );
}
