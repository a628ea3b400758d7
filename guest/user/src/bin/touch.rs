//! Demand paging: touches N pages of a fresh anonymous mapping (N is the
//! argument, 64 by default) and reports how many faults that took (the
//! kernel's self-test expects exactly N); then reads never-written pages
//! (the shared zero page), writes them, and unmaps everything. It stops
//! at checkpoint `zero-page-mapped` while the zero page is mapped 16
//! times, for the host's refcount and cow-ro checks.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{checkpoint, mmap, mmstat, munmap, report, PAGE};

ulib::entry!(main);

fn main(arg: u64) -> i32 {
    let n = if arg == 0 { 64 } else { arg };
    let a = mmap(0, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    if a < 0 {
        return 1;
    }
    let a = a as u64;
    let s0 = mmstat();
    for i in 0..n {
        // SAFETY: inside the mapping just made.
        unsafe { ((a + i * PAGE) as *mut u8).write_volatile(1) };
    }
    let s1 = mmstat();
    report("touch_faults", s1.faults - s0.faults);
    report("touch_anon_faults", s1.anon_faults - s0.anon_faults);
    report("touch_rss", s1.rss_pages - s0.rss_pages);

    let z = 16;
    let b = mmap(0, z * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) as u64;
    let mut sum = 0u64;
    for i in 0..z {
        // SAFETY: inside the mapping.
        sum += unsafe { ((b + i * PAGE) as *const u8).read_volatile() } as u64;
    }
    let s2 = mmstat();
    checkpoint("zero-page-mapped");
    for i in 0..z {
        // SAFETY: inside the mapping.
        unsafe { ((b + i * PAGE) as *mut u8).write_volatile(2) };
    }
    let s3 = mmstat();
    for i in 0..n {
        // SAFETY: inside the first mapping, already resident.
        unsafe { ((a + i * PAGE + 8) as *mut u8).write_volatile(3) };
    }
    let s4 = mmstat();
    report("zero_read_sum", sum);
    report("zero_page_maps", s2.zero_page_maps - s1.zero_page_maps);
    report("zero_write_faults", s3.faults - s2.faults);
    report("retouch_faults", s4.faults - s3.faults);
    munmap(a, n * PAGE);
    munmap(b, z * PAGE);
    let s5 = mmstat();
    report("munmap_rss_freed", s4.rss_pages - s5.rss_pages);
    0
}
