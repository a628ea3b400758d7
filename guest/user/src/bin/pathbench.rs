//! Path-length windows for `vmm run --count-insns` (issue 17): checkpoint
//! pairs around one memory-manager operation each, and nothing else, so
//! the ring-0 instructions between them are that operation's (plus the
//! two checkpoints' system calls, measured alone by the empty pair).
//!
//! - `pb-empty-begin..pb-empty-end`: two checkpoints back to back;
//! - `pb-touch-begin..pb-touch-end`: the first write to each of 16 pages of
//!   a fresh private anonymous mapping (16 anonymous first-touch faults);
//! - `pb-munmap-begin..pb-munmap-end`: munmap of those 16 resident pages;
//! - `pb-fork0-begin..pb-fork0-end` and `pb-fork1-begin..pb-fork1-end`:
//!   fork of this process as it is, then again with 1 MiB more touched
//!   (the difference is fork's cost per MiB); the child exits at once and
//!   the parent reaches the end checkpoint before it waits;
//! - `pb-cow-begin..pb-cow-end`: the parent's first write to each of 16
//!   resident private pages it shares with a forked child (16 copy-on-write
//!   faults that copy: the child still maps every page). The child says
//!   it is up through a shared page (the parent yields until it has),
//!   then yields until the parent's flag in that page says the window is
//!   over, and exits. The parent does not yield inside the window, so the
//!   child runs there only if the timer preempts the parent in ring 3;
//! - `pb-pageout-begin..pb-pageout-end`: `madvise(MADV_PAGEOUT)` of 16
//!   resident pages this process alone maps (16 swap-outs, written in one
//!   device request; without `--swap` nothing is written and the window
//!   holds only the walk).
//!
//! Run by the kernel's `pathbench` switch.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{checkpoint, exit, fork, madvise, mmap, munmap, sched_yield, wait, PAGE};

ulib::entry!(main);

/// Pages of the first-touch and munmap windows.
const TOUCH: u64 = 16;
/// Pages of the fork window's extra MiB.
const MIB_PAGES: u64 = 256;

fn touch(a: u64, pages: u64) {
    for i in 0..pages {
        // SAFETY: inside a mapping of at least `pages` pages the caller made.
        unsafe { ((a + i * PAGE) as *mut u64).write_volatile(i + 1) };
    }
}

/// Forks between checkpoints `begin` and `end`; the child exits at once.
fn fork_window(begin: &str, end: &str) -> bool {
    checkpoint(begin);
    let pid = fork();
    if pid == 0 {
        exit(0);
    }
    checkpoint(end);
    pid > 0 && wait(pid).0 == pid
}

fn main(_arg: u64) -> i32 {
    checkpoint("pb-empty-begin");
    checkpoint("pb-empty-end");

    let a = mmap(0, TOUCH * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    if a < 0 {
        return 1;
    }
    let a = a as u64;
    checkpoint("pb-touch-begin");
    touch(a, TOUCH);
    checkpoint("pb-touch-end");
    checkpoint("pb-munmap-begin");
    let r = munmap(a, TOUCH * PAGE);
    checkpoint("pb-munmap-end");
    if r != 0 {
        return 2;
    }

    if !fork_window("pb-fork0-begin", "pb-fork0-end") {
        return 3;
    }
    let m = mmap(0, MIB_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    if m < 0 {
        return 4;
    }
    touch(m as u64, MIB_PAGES);
    if !fork_window("pb-fork1-begin", "pb-fork1-end") {
        return 5;
    }
    let r = cow_window();
    if r != 0 {
        return r;
    }
    let p = mmap(0, TOUCH * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    if p < 0 {
        return 6;
    }
    touch(p as u64, TOUCH);
    checkpoint("pb-pageout-begin");
    let r = madvise(p as u64, TOUCH * PAGE, MADV_PAGEOUT);
    checkpoint("pb-pageout-end");
    if r != 0 {
        return 7;
    }
    0
}

/// The copy-on-write window (see the module's doc).
fn cow_window() -> i32 {
    let c = mmap(0, TOUCH * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    let flags = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    if c < 0 || flags < 0 {
        return 8;
    }
    let c = c as u64;
    // Word 0: the child is up; word 1: the parent's window is over.
    let (up, done) = (flags as *mut u64, (flags as u64 + 8) as *mut u64);
    touch(c, TOUCH);
    let pid = fork();
    if pid == 0 {
        // SAFETY: the shared page both processes map.
        unsafe { up.write_volatile(1) };
        // SAFETY: as above.
        while unsafe { done.read_volatile() } == 0 {
            sched_yield();
        }
        exit(0);
    }
    if pid < 0 {
        return 9;
    }
    // SAFETY: as above.
    while unsafe { up.read_volatile() } == 0 {
        sched_yield();
    }
    checkpoint("pb-cow-begin");
    touch(c, TOUCH);
    checkpoint("pb-cow-end");
    // SAFETY: as above.
    unsafe { done.write_volatile(1) };
    if wait(pid).0 != pid {
        return 10;
    }
    0
}
