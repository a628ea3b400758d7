//! Stack growth: recursion 64 frames of 4 KiB deep, below the initial
//! stack VMA, grows the stack by faults; the count is reported.
#![no_std]
#![no_main]

use ulib::{mmstat, report};

ulib::entry!(main);

/// The lowest stack address the recursion reached.
static mut DEEPEST: u64 = u64::MAX;

#[inline(never)]
fn deep(n: u64) -> u64 {
    let mut buf = [0u8; 4000];
    // SAFETY: single-threaded; a plain store of an address.
    unsafe { DEEPEST = DEEPEST.min(buf.as_ptr() as u64) };
    buf[(n as usize * 7) % 4000] = n as u8;
    let buf = core::hint::black_box(buf);
    if n == 0 {
        buf[0] as u64
    } else {
        deep(n - 1) + buf[(n as usize * 7) % 4000] as u64
    }
}

fn main(_arg: u64) -> i32 {
    let s0 = mmstat();
    let sum = deep(64);
    let s1 = mmstat();
    report("stack_grows", s1.stack_grows - s0.stack_grows);
    // SAFETY: single-threaded read.
    let deepest = unsafe { DEEPEST };
    // The initial stack VMA is the top 16 KiB below 0x7fff_ffff_f000.
    report("stack_pages_below_vma", (0x7fff_ffff_f000 - 16 * 1024 - (deepest & !4095)) / 4096);
    report("stack_sum_ok", (sum == (1..=64u64).map(|n| n & 0xff).sum::<u64>()) as u64);
    0
}
