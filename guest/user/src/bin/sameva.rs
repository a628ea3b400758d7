//! One virtual address, different frames: maps a page at a fixed address,
//! writes the argument there and reports the frame; then yields until its
//! siblings (the argument's bits 32.. say how many instances run side by
//! side) have reported theirs, so every frame is reported while all the
//! instances are alive, and checks its value survived.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{mmap, report, reported, sched_yield, virt_to_phys, PAGE};

ulib::entry!(main);

/// The address both instances map.
const ADDR: u64 = 0x2000_0000;

fn main(arg: u64) -> i32 {
    if mmap(ADDR, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) != ADDR as i64 {
        return 1;
    }
    // SAFETY: the page just mapped.
    unsafe { (ADDR as *mut u64).write_volatile(arg) };
    report("sameva_phys", virt_to_phys(ADDR));
    // Waiting on the reports, not for a number of yields: the timer's
    // preemptions reorder the run queue, and an instance that ran its
    // yields out before a sibling mapped would free a frame the sibling
    // may then be given.
    let siblings = arg >> 32;
    let mut spins = 0u64;
    while spins < 10 || reported("sameva_phys") < siblings {
        sched_yield();
        spins += 1;
        if spins > 1_000_000 {
            return 2;
        }
    }
    // SAFETY: as above.
    let v = unsafe { (ADDR as *const u64).read_volatile() };
    report("sameva_kept", (v == arg) as u64);
    if v == arg {
        0
    } else {
        1
    }
}
