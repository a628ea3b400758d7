//! The process bench's fork half (vmm/benches/process.rs): touches the
//! argument's MiB (1 by default) of anonymous memory, then times `fork()`
//! with the TSC in ring 3 around the system call. The kernel's part runs
//! through KVM's instruction emulator on hosts without hardware ring 0
//! (platform.md), so the time is quoted beside a null system call
//! (`getpid`) timed the same way in the same process.
//!
//! Output, parsed by the bench: the child prints
//! `forkbench: child mib=M fork_copied_pages=.. fork_pt_pages=..
//! rss_pages=..` (the kernel's counts of what fork copied), then the
//! parent `forkbench: parent mib=M pages=.. touch_cycles=.. touch_faults=..
//! parent_pt_pages=.. fork_cycles=.. null_syscall_cycles=.. child_status=..`.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::trace::rdtsc;
use ulib::{exit, fork, getpid, mmap, mmstat, println, wait, PAGE};

ulib::entry!(main);

/// Median cycles of a `getpid` round trip.
fn null_syscall_cycles() -> u64 {
    let mut t = [0u64; 51];
    for x in t.iter_mut() {
        let t0 = rdtsc();
        getpid();
        *x = rdtsc() - t0;
    }
    t.sort_unstable();
    t[t.len() / 2]
}

fn main(arg: u64) -> i32 {
    let mib = if arg == 0 { 1 } else { arg };
    let pages = mib * 256;
    let null = null_syscall_cycles();
    let a = mmap(0, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    if a < 0 {
        println!("forkbench: mmap of {} MiB failed: {}", mib, a);
        return 1;
    }
    let s0 = mmstat();
    let t0 = rdtsc();
    for i in 0..pages {
        // SAFETY: inside the mapping just made.
        unsafe { ((a as u64 + i * PAGE) as *mut u64).write_volatile(i) };
    }
    let touch = rdtsc() - t0;
    let s1 = mmstat();

    let t0 = rdtsc();
    let pid = fork();
    let fork_cycles = rdtsc() - t0;
    if pid == 0 {
        let s = mmstat();
        println!(
            "forkbench: child mib={} fork_copied_pages={} fork_pt_pages={} rss_pages={}",
            mib, s.fork_copied_pages, s.fork_pt_pages, s.rss_pages
        );
        exit(0);
    }
    if pid < 0 {
        println!("forkbench: fork failed: {}", pid);
        return 1;
    }
    let (_, status) = wait(pid);
    println!(
        "forkbench: parent mib={} pages={} touch_cycles={} touch_faults={} parent_pt_pages={} fork_cycles={} null_syscall_cycles={} child_status={}",
        mib,
        pages,
        touch,
        s1.faults - s0.faults,
        s1.pt_pages,
        fork_cycles,
        null,
        status
    );
    0
}
