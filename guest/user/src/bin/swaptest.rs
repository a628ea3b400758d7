//! Swap under pressure: writes a working set of `pages` pages (larger than
//! the guest's RAM when the test wants swapping), every word of every page
//! a function of its page and word number, then reads it all back and
//! counts the words that differ (a page lost or corrupted on its way to
//! the swap device and back). With the fork bit, it then forks: the child
//! reads everything (swapped pages shared by both come back from the same
//! slot), writes one page in every `stride`, and exits; the parent checks
//! that its own data did not change (copy-on-write copied exactly the
//! child's written pages) and prints both sides' counters.
//!
//! The argument: bits 0..31 `pages`; bit 32 fork; bit 33 yield the CPU
//! every 16 pages written (so kswapd, a kernel thread, gets to run: the
//! kernel does not preempt); bits 40..47 the child's write stride (0: 4). Checkpoints `swapped` (after the write pass) and
//! `forked` (child created, nothing touched yet) let the host verify the
//! swap state at those moments.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{checkpoint, fork, getpid, mmap, mmstat, println, sched_yield, vmstat, wait, PAGE};

ulib::entry!(main);

/// What word `w` of page `p` holds (generation `g` after a write).
fn pattern(p: u64, w: u64, g: u64) -> u64 {
    (p << 20 | w) ^ 0x5377_6170_7465_7374 ^ g.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Words of `base`'s page `p` that differ from generation `g`.
fn check(base: u64, p: u64, g: u64) -> u64 {
    let mut bad = 0;
    for w in 0..PAGE / 8 {
        // SAFETY: inside the mapping, which the caller made `pages` long.
        let v = unsafe { ((base + p * PAGE + w * 8) as *const u64).read_volatile() };
        bad += (v != pattern(p, w, g)) as u64;
    }
    bad
}

fn fill(base: u64, p: u64, g: u64) {
    for w in 0..PAGE / 8 {
        // SAFETY: as in `check`.
        unsafe { ((base + p * PAGE + w * 8) as *mut u64).write_volatile(pattern(p, w, g)) };
    }
}

fn main(arg: u64) -> i32 {
    let pages = arg & 0xffff_ffff;
    let do_fork = arg & (1 << 32) != 0;
    let yields = arg & (1 << 33) != 0;
    let stride = match (arg >> 40) & 0xff {
        0 => 4,
        s => s,
    };
    let pid = getpid();
    let base = mmap(0, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
    if base < 0 {
        println!("swaptest[{}]: mmap of {} pages failed ({})", pid, pages, base);
        return 2;
    }
    let base = base as u64;
    for p in 0..pages {
        fill(base, p, 0);
        if yields && p % 16 == 15 {
            sched_yield();
        }
    }
    // Read back newest first: the pages still resident come first, so
    // only what did not fit is read from swap (a forward pass over a
    // working set larger than memory misses on every page under LRU).
    let mut bad = 0;
    for p in (0..pages).rev() {
        bad += check(base, p, 0);
    }
    let st = mmstat();
    let vm = vmstat();
    let counter = |name: &str| VMSTAT_NAMES.iter().position(|&n| n == name).map_or(0, |i| vm[i]);
    println!(
        "swaptest[{}]: {} pages written and read back, {} bad words; maj_faults {} swap_ents {} rss {} pswpin {} pswpout {}",
        pid, pages, bad, st.maj_faults, st.swap_ents, st.rss_pages, counter("pswpin"), counter("pswpout")
    );
    checkpoint("swapped");
    if bad != 0 {
        return 3;
    }
    if !do_fork {
        return 0;
    }
    let child = fork();
    if child < 0 {
        println!("swaptest[{}]: fork failed ({})", pid, child);
        return 4;
    }
    if child == 0 {
        let me = getpid();
        let mut bad = 0;
        for p in (0..pages).rev() {
            bad += check(base, p, 0);
        }
        let mut written = 0;
        for p in (0..pages).step_by(stride as usize) {
            fill(base, p, 1);
            written += 1;
        }
        for p in 0..pages {
            bad += check(base, p, (p % stride == 0) as u64);
        }
        let st = mmstat();
        println!(
            "swaptest[{}]: child read {} pages, wrote {}, {} bad words; cow_copies {} maj_faults {} swapin_cached {}",
            me, pages, written, bad, st.cow_copies, st.maj_faults, st.swapin_cached
        );
        return if bad == 0 { 0 } else { 5 };
    }
    checkpoint("forked");
    let (_, status) = wait(child);
    // Read back newest first: the pages still resident come first, so
    // only what did not fit is read from swap (a forward pass over a
    // working set larger than memory misses on every page under LRU).
    let mut bad = 0;
    for p in (0..pages).rev() {
        bad += check(base, p, 0);
    }
    let st = mmstat();
    println!(
        "swaptest[{}]: child exited {:#x}; parent re-read {} pages, {} bad words; maj_faults {} swapin_cached {}",
        pid, status, pages, bad, st.maj_faults, st.swapin_cached
    );
    if bad != 0 || status != 0 {
        return 6;
    }
    0
}
