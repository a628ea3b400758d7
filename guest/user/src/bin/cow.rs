//! fork with copy-on-write: the parent fills P pages (the argument, 64 by
//! default) and forks; the child writes a quarter of them and reports the
//! copies that took; after the child exits, the parent's writes reuse its
//! frames (it is their last user) instead of copying.
//!
//! A MAP_SHARED page rides along: writable in both processes after the
//! fork, the child's write is seen by the parent. The parent stops at
//! checkpoint `cow-shared` right after the fork (every private page then
//! shared copy-on-write, the shared page writable in both), and the child
//! at `cow-child-wrote` after its writes (its written pages private
//! copies, the rest still shared), for the host's `--verify`.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{checkpoint, exit, fork, mmap, mmstat, report, wait, PAGE};

ulib::entry!(main);

fn slot(a: u64, i: u64) -> *mut u64 {
    (a + i * PAGE) as *mut u64
}

fn main(arg: u64) -> i32 {
    let p = if arg == 0 { 64 } else { arg };
    let w = p / 4;
    let a = mmap(0, p * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) as u64;
    for i in 0..p {
        // SAFETY: inside the mapping.
        unsafe { slot(a, i).write_volatile(i) };
    }
    let shared = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) as u64;
    // SAFETY: the shared page just mapped.
    unsafe { (shared as *mut u64).write_volatile(1) };
    let pid = fork();
    if pid == 0 {
        let s0 = mmstat();
        for i in 0..w {
            // SAFETY: inside the (inherited) mapping.
            unsafe { slot(a, i).write_volatile(1000 + i) };
        }
        let s1 = mmstat();
        let mut ok = true;
        for i in 0..p {
            // SAFETY: as above.
            let v = unsafe { slot(a, i).read_volatile() };
            ok &= v == if i < w { 1000 + i } else { i };
        }
        checkpoint("cow-child-wrote");
        // SAFETY: the shared page, mapped in both processes.
        unsafe { (shared as *mut u64).write_volatile(2) };
        report("child_cow_copies", s1.cow_copies - s0.cow_copies);
        report("child_write_faults", s1.faults - s0.faults);
        report("child_fork_copied_pages", s1.fork_copied_pages);
        report("child_fork_pt_pages", s1.fork_pt_pages);
        exit(if ok { 0 } else { 1 });
    }
    checkpoint("cow-shared");
    let (_, status) = wait(pid);
    // SAFETY: the shared page; the child wrote 2 there before exiting.
    let mut ok = status == 0 && unsafe { (shared as *const u64).read_volatile() } == 2;
    for i in 0..p {
        // SAFETY: inside the mapping.
        ok &= unsafe { slot(a, i).read_volatile() } == i;
    }
    let s0 = mmstat();
    for i in 0..p {
        // SAFETY: inside the mapping.
        unsafe { slot(a, i).write_volatile(2 * i) };
    }
    let s1 = mmstat();
    report("parent_cow_reuses", s1.cow_reuses - s0.cow_reuses);
    report("parent_cow_copies", s1.cow_copies - s0.cow_copies);
    report("parent_sees_own_data", ok as u64);
    if ok {
        0
    } else {
        1
    }
}
