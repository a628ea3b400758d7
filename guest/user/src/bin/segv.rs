//! Segfaults kill only the offender: the parent forks children that exit
//! normally and children that write through NULL, write a page made
//! read-only with mprotect, and jump into a non-executable page; it waits
//! for all of them and checks each one's fate.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{exit, fork, mmap, mprotect, report, sched_yield, wait, PAGE};

ulib::entry!(main);

fn child(kind: u64) -> ! {
    match kind {
        0 => {
            for _ in 0..3 {
                sched_yield();
            }
            exit(3)
        }
        1 => {
            // SAFETY: deliberately invalid: nothing is mapped at 8.
            unsafe { core::ptr::without_provenance_mut::<u64>(8).write_volatile(1) };
            exit(0)
        }
        2 => {
            let a = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) as u64;
            // SAFETY: a fresh page of ours.
            unsafe { (a as *mut u64).write_volatile(1) };
            mprotect(a, PAGE, PROT_READ);
            // SAFETY: deliberately invalid: the page is read-only now.
            unsafe { (a as *mut u64).write_volatile(2) };
            exit(0)
        }
        3 => {
            let a = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) as u64;
            // SAFETY: writes `ret` into our page, then deliberately jumps
            // there: the page is not executable, so the fetch faults.
            unsafe {
                (a as *mut u8).write_volatile(0xc3);
                let f: extern "C" fn() = core::mem::transmute(a as usize);
                f();
            }
            exit(0)
        }
        _ => {
            for _ in 0..5 {
                sched_yield();
            }
            exit(5)
        }
    }
}

fn main(_arg: u64) -> i32 {
    let kinds = 5u64;
    let mut pids = [0i64; 5];
    for k in 0..kinds {
        let pid = fork();
        if pid == 0 {
            child(k);
        }
        pids[k as usize] = pid;
    }
    let expect = [3 << 8, SIGSEGV, SIGSEGV, SIGSEGV, 5 << 8];
    let (mut killed, mut exited, mut ok) = (0, 0, true);
    for k in 0..kinds as usize {
        let (pid, status) = wait(pids[k]);
        ok &= pid == pids[k] && status == expect[k];
        if status == SIGSEGV {
            killed += 1;
        } else if status & 0xff == 0 {
            exited += 1;
        }
    }
    report("segv_killed", killed);
    report("segv_exited", exited);
    report("segv_statuses_ok", ok as u64);
    if ok {
        0
    } else {
        1
    }
}
