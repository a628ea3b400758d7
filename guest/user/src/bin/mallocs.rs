//! The libc's malloc: small requests come from the brk heap, requests at
//! or above the 128 KiB threshold get their own mmap (munmapped on free),
//! and freeing the top of the heap shrinks brk; then a churn of mixed
//! sizes with contents checked.
#![no_std]
#![no_main]

use ulib::malloc::{free, malloc, stats, MMAP_THRESHOLD};
use ulib::{brk, mmstat, report};

ulib::entry!(main);

fn main(_arg: u64) -> i32 {
    let brk0 = brk(0);
    let s0 = stats();
    let small = malloc(100);
    let brk1 = brk(0);
    let s1 = stats();
    report(
        "small_from_brk",
        (brk1 > brk0 && (small as u64) >= brk0 && (small as u64) < brk1 && s1.mmaps == s0.mmaps) as u64,
    );

    let big = malloc(MMAP_THRESHOLD + 4096);
    let s2 = stats();
    let outside_heap = (big as u64) < brk0 || (big as u64) >= brk(0);
    report("big_from_mmap", (s2.mmaps == s1.mmaps + 1 && outside_heap && brk(0) == brk1) as u64);
    // SAFETY: `big` came from malloc.
    unsafe { free(big) };
    report("big_freed_with_munmap", (stats().munmaps == s2.munmaps + 1) as u64);

    let (x, y) = (malloc(100 * 1024), malloc(100 * 1024));
    // SAFETY: both blocks are 100 KiB long.
    unsafe {
        core::ptr::write_bytes(x, 0x5a, 100 * 1024);
        core::ptr::write_bytes(y, 0xa5, 100 * 1024);
    }
    let (brk_high, rss_high) = (brk(0), mmstat().rss_pages);
    // SAFETY: both came from malloc; y is the top chunk's neighbour.
    unsafe {
        free(y);
        free(x);
    }
    let (brk_low, rss_low) = (brk(0), mmstat().rss_pages);
    report("trim_brk_shrunk_bytes", brk_high - brk_low);
    report("trim_rss_freed_pages", rss_high.saturating_sub(rss_low));

    // Mixed sizes, freed out of order, every block's contents checked.
    let mut blocks = [(core::ptr::null_mut::<u8>(), 0usize); 64];
    let mut seed = 12345u64;
    let mut ok = true;
    for round in 0..2000usize {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let i = (seed >> 33) as usize % blocks.len();
        let (p, n) = blocks[i];
        if !p.is_null() {
            // SAFETY: `p` holds `n` bytes written below.
            unsafe {
                ok &= *p == (n as u8) && *p.add(n - 1) == (n as u8);
                free(p);
            }
        }
        let n = match (seed >> 20) % 8 {
            0..=4 => 16 + (seed >> 40) as usize % 500,
            5 | 6 => 512 + (seed >> 40) as usize % 8000,
            _ => 8192 + (seed >> 40) as usize % 60000,
        } + round % 3;
        let p = malloc(n);
        ok &= !p.is_null();
        // SAFETY: a fresh block of n bytes.
        unsafe { core::ptr::write_bytes(p, n as u8, n) };
        blocks[i] = (p, n);
    }
    for &(p, _) in &blocks {
        // SAFETY: from malloc.
        unsafe { free(p) };
    }
    report("churn_ok", ok as u64);
    0
}
