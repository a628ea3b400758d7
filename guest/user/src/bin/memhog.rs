//! Memory pressure: allocates and touches anonymous memory, one page at a
//! time, each page stamped with its number, until it has `pages` pages
//! (or, with `pages` 0, until the OOM killer kills it). A bounded hog
//! then waits (yielding) until the OOM killer has killed someone, reads
//! every page back (a stamp that changed means memory was lost under
//! pressure) and exits 0.
//!
//! The argument: bits 0..31 `pages` (0: unbounded); bit 44 set: first set
//! the process's own oom_score_adj to bits 32..43 minus 1000 (so 0..2000
//! encodes -1000..1000). The kernel's `oom` switch (cmdline.rs) starts
//! several of these.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{getpid, mmap, oom_score_adj, println, sched_yield, vmstat, PAGE};

ulib::entry!(main);

/// Address space one mapping covers; an unbounded hog maps more as it
/// goes (the pages are faulted in one by one, so only touched ones cost).
const CHUNK: u64 = 16 << 20;
/// Most chunks (256 MiB in all, far beyond any guest the test boots).
const MAX_CHUNKS: usize = 16;
/// Yields a bounded hog waits for an OOM kill before it gives up waiting.
const MAX_WAIT_YIELDS: u64 = 200_000;

fn main(arg: u64) -> i32 {
    let pages = arg & 0xffff_ffff;
    let pid = getpid();
    if arg & (1 << 44) != 0 {
        let adj = ((arg >> 32) & 0xfff) as i64 - 1000;
        if oom_score_adj(0, Some(adj)) < 0 {
            println!("memhog[{}]: oom_score_adj {} refused", pid, adj);
            return 2;
        }
    }
    let mut chunks = [0u64; MAX_CHUNKS];
    let mut touched = 0u64;
    while pages == 0 || touched < pages {
        let (c, off) = ((touched * PAGE / CHUNK) as usize, touched * PAGE % CHUNK);
        if c >= MAX_CHUNKS {
            println!("memhog[{}]: {} pages touched and never killed", pid, touched);
            return 3;
        }
        if off == 0 {
            let a = mmap(0, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
            if a < 0 {
                println!("memhog[{}]: mmap failed ({})", pid, a);
                return 4;
            }
            chunks[c] = a as u64;
        }
        // SAFETY: inside the mapping made for this chunk.
        unsafe { ((chunks[c] + off) as *mut u64).write_volatile(touched ^ 0x6d656d686f67) };
        touched += 1;
    }
    println!("memhog[{}]: {} pages touched, waiting for the OOM killer", pid, touched);
    let mut waited = 0;
    while vmstat()[VMSTAT_OOM_KILL] == 0 && waited < MAX_WAIT_YIELDS {
        sched_yield();
        waited += 1;
    }
    for i in 0..touched {
        let (c, off) = ((i * PAGE / CHUNK) as usize, i * PAGE % CHUNK);
        // SAFETY: every page below `touched` was mapped and written above.
        let v = unsafe { ((chunks[c] + off) as *const u64).read_volatile() };
        if v != i ^ 0x6d656d686f67 {
            println!("memhog[{}]: page {} lost its stamp", pid, i);
            return 5;
        }
    }
    println!("memhog[{}]: {} pages verified, done", pid, touched);
    0
}
