//! One virtual address, different frames: maps a page at a fixed address,
//! writes the argument there and reports the frame; then yields a while
//! (so a sibling program does the same while this one is alive) and
//! checks its value survived.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{mmap, report, sched_yield, virt_to_phys, PAGE};

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
    for _ in 0..10 {
        sched_yield();
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
