//! The process bench's malloc half (vmm/benches/process.rs): replays one
//! of the shared malloc/free traces (src/trace.rs; the argument is its
//! index in `trace::TRACES`) `trace::RUNS` times on this libc's malloc in
//! ring 3, which runs natively even where the kernel is emulated, timed
//! with the TSC. The host bench replays the same traces on glibc, each
//! in a fresh process as here. With trimming off (the warm trace) the
//! heap is pre-faulted between replays (`trace::prefault`), as there.
//!
//! Output, one line per replay, parsed by the bench:
//! `mallocbench: run=R trace=... (trace::Line) brk_grows=.. brk_trims=..
//! mmaps=.. munmaps=..`, bracketed by `mallocbench: tsc=T` lines whose
//! arrival times let the host check the guest's TSC rate.
#![no_std]
#![no_main]

use core::ptr::null_mut;
use ulib::malloc::{free, heap_end, heap_start, malloc, mallopt, stats, M_TRIM_THRESHOLD};
use ulib::trace::{self, rdtsc, Heap, Line, TRACES};
use ulib::{mmstat, println};

ulib::entry!(main);

/// This libc's malloc, with the kernel's fault counter.
struct Ours;

impl Heap for Ours {
    fn malloc(&mut self, n: usize) -> *mut u8 {
        malloc(n)
    }

    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: the caller's contract is free's.
        unsafe { free(p) }
    }

    fn faults(&mut self) -> u64 {
        mmstat().faults
    }

    fn heap_range(&mut self) -> (usize, usize) {
        (heap_start(), heap_end())
    }
}

fn main(arg: u64) -> i32 {
    let Some(spec) = TRACES.get(arg as usize) else {
        println!("mallocbench: no trace {}", arg);
        return 1;
    };
    mallopt(M_TRIM_THRESHOLD, spec.trim_threshold);
    println!("mallocbench: tsc={}", rdtsc());
    let cap = trace::capacity(spec);
    // The operations live in their own mapping (above the threshold),
    // written before any timing, as on the host.
    let buf = malloc(cap * 8) as *mut u64;
    if buf.is_null() {
        println!("mallocbench: no memory for the trace");
        return 1;
    }
    // SAFETY: `cap` u64s, 16-aligned, ours until freed below.
    let ops = unsafe { core::slice::from_raw_parts_mut(buf, cap) };
    let bounds = trace::generate(spec, ops);
    let mut slots = [null_mut::<u8>(); 4096];
    let mut ok = true;
    for run in 0..trace::RUNS {
        let s0 = stats();
        let r = trace::replay(&mut Ours, ops, bounds, &mut slots);
        let s1 = stats();
        ok &= r.ok;
        if spec.trim_threshold == usize::MAX {
            trace::prefault(&mut Ours);
        }
        println!(
            "mallocbench: run={} {} brk_grows={} brk_trims={} mmaps={} munmaps={}",
            run,
            Line(spec, &r),
            s1.brk_grows - s0.brk_grows,
            s1.brk_trims - s0.brk_trims,
            s1.mmaps - s0.mmaps,
            s1.munmaps - s0.munmaps
        );
    }
    // SAFETY: from malloc above.
    unsafe { free(buf as *mut u8) };
    println!("mallocbench: tsc={}", rdtsc());
    if ok {
        0
    } else {
        1
    }
}
