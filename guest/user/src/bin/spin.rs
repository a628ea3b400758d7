//! Preemption: parent and child spin without ever entering the kernel,
//! sharing a MAP_SHARED page; the parent sees the child's counter move,
//! which only the timer interrupt can allow (one CPU).
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{exit, fork, mmap, mmstat, report, wait, PAGE};

ulib::entry!(main);

/// Gives up after this many spins (seconds of native execution), so a
/// kernel without preemption fails the check instead of hanging.
const LIMIT: u64 = 3_000_000_000;

fn main(_arg: u64) -> i32 {
    let a = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) as u64;
    let stop = a as *mut u64;
    let counter = (a + 8) as *mut u64;
    let pid = fork();
    if pid == 0 {
        let mut n = 0;
        // SAFETY: the shared page, mapped in both processes.
        while unsafe { stop.read_volatile() } == 0 && n < LIMIT {
            n += 1;
            // SAFETY: as above.
            unsafe { counter.write_volatile(n) };
        }
        report("child_preemptions", mmstat().preemptions);
        exit(0);
    }
    let mut spins = 0;
    // SAFETY: as above.
    while unsafe { counter.read_volatile() } < 1000 && spins < LIMIT {
        spins += 1;
        core::hint::spin_loop();
    }
    // SAFETY: as above.
    let seen = unsafe { counter.read_volatile() };
    // SAFETY: as above.
    unsafe { stop.write_volatile(1) };
    wait(pid);
    report("parent_saw_child_run", (seen >= 1000) as u64);
    report("parent_preemptions", mmstat().preemptions);
    0
}
