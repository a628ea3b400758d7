//! Transparent huge pages (issue 14): touches `arg & 0xffff` MiB of a
//! 2 MiB-aligned anonymous region, one word per 4 KiB page, and reports
//! the faults taken and its AnonHugePages (checkpoint `touched`). With
//! huge pages enabled (`transparent_hugepage=always`) it then:
//! - unmaps one 4 KiB page inside the second huge page: exactly that huge
//!   page is split, every other page keeps its data (checkpoint `split`);
//! - forks: the child writes into a page of the third huge page (a copy
//!   on write of a write-protected PMD) and checks it sees its write and
//!   the parent's data elsewhere; the parent checks its page kept the old
//!   data (checkpoint `forked`, while the child waits at `child`);
//! - maps 2 MiB with `MADV_NOHUGEPAGE`, fills its 512 pages one fault
//!   each, marks it `MADV_HUGEPAGE` and asks khugepaged to collapse it
//!   (`SYS_THP` op 2; with bit 16 of the argument it yields until the
//!   khugepaged thread did it): one range collapsed, the data intact
//!   (checkpoint `collapsed`).
//!
//! - reads a fresh 2 MiB range: the huge zero page, read-only (checkpoint
//!   `zero`); a write then gets a huge page of its own;
//! - writes 64 of the 512 pages of a range: khugepaged with
//!   `max_ptes_none` 0 (`SYS_THP` op 5) leaves it, with the default 511
//!   collapses it, the 448 holes reading zero (checkpoint `partial`).
//!
//! - mprotects one 4 KiB page of the fourth huge page read-only: exactly
//!   that huge page is split (checkpoint `mprotected`, after `split`);
//! - mremaps (MREMAP_MAYMOVE | MREMAP_FIXED) a 4 MiB THP-backed range to a
//!   2 MiB-aligned destination (the PMD leaves move whole, the huge zero
//!   page's too) and another to a misaligned one (split, 4 KiB PTEs
//!   moved), data intact (checkpoint `mremapped`).
//!
//! Prints `thptest: faults N for M MiB, AnonHugePages K kB` and the
//! figures of each step. Exit status: 0 all held; 2 mmap failed; 3 data
//! wrong after the touch; 4 the split went wrong; 5 fork/COW went wrong;
//! 6 the collapse went wrong; 7 the huge zero page went wrong; 8 the
//! partial collapse went wrong; 9 the mprotect split went wrong; 10 the
//! mremap went wrong; 11 the placement of THP-sized mappings went wrong.
//!
//! With bit 17 of the argument it runs only [`placement`], the kernel's
//! choice of addresses for mappings and moves without a hint (Linux
//! 6.13's THP alignment rule), and exits.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{
    checkpoint, exit, fork, getpid, mmap, mmstat, mprotect, munmap, println, sched_yield, syscall3, wait, PAGE,
};

ulib::entry!(main);

const HPAGE: u64 = 2 << 20;
/// What the child writes over the parent's data.
const CHILD_WORD: u64 = 0x0063_6869_6c64;

fn pattern(va: u64) -> u64 {
    va ^ 0x7468_7074_6573_7400
}

fn thp(op: u64, arg: u64) -> i64 {
    syscall3(SYS_THP, op, arg, 0)
}

fn madvise(addr: u64, len: u64, advice: u64) -> i64 {
    syscall3(28, addr, len, advice)
}

fn read(va: u64) -> u64 {
    // SAFETY: inside a mapping this program made.
    unsafe { (va as *const u64).read_volatile() }
}

fn write(va: u64, v: u64) {
    // SAFETY: inside a mapping this program made.
    unsafe { (va as *mut u64).write_volatile(v) }
}

/// An anonymous read-write mapping of `len` bytes starting on a 2 MiB
/// boundary (over-allocated, the ends unmapped).
fn map_aligned(len: u64) -> Option<u64> {
    let raw = mmap(0, len + HPAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    if raw < 0 {
        return None;
    }
    let raw = raw as u64;
    let start = raw.next_multiple_of(HPAGE);
    if start > raw {
        munmap(raw, start - raw);
    }
    let end = raw + len + HPAGE;
    if end > start + len {
        munmap(start + len, end - start - len);
    }
    Some(start)
}

/// Pages in `[start, start + len)` (first word of each, page `skip`
/// excepted) that do not hold their pattern.
fn bad_pages(start: u64, len: u64, skip: Option<u64>) -> u64 {
    (0..len / PAGE).map(|i| start + i * PAGE).filter(|&va| Some(va) != skip && read(va) != pattern(va)).count() as u64
}

fn main(arg: u64) -> i32 {
    if arg & (1 << 17) != 0 {
        return placement();
    }
    let pid = getpid();
    let mib = (arg & 0xffff).max(8);
    let len = mib << 20;
    let Some(a) = map_aligned(len) else {
        println!("thptest[{}]: mmap of {} MiB failed", pid, mib);
        return 2;
    };
    println!("thptest: region at {:#x}, {} MiB", a, mib);
    let before = mmstat().faults;
    let mut va = a;
    while va < a + len {
        write(va, pattern(va));
        va += PAGE;
    }
    let faults = mmstat().faults - before;
    let huge_kb = thp(3, 0);
    println!("thptest: faults {} for {} MiB, AnonHugePages {} kB, mode {}", faults, mib, huge_kb, thp(0, 0));
    checkpoint("touched");
    let bad = bad_pages(a, len, None);
    if bad != 0 {
        println!("thptest: {} pages lost their data after the touch", bad);
        return 3;
    }
    if thp(0, 0) != 2 {
        return 0;
    }

    // Split: one 4 KiB page inside the second huge page.
    let hole = a + HPAGE + 5 * PAGE;
    munmap(hole, PAGE);
    let after_split = thp(3, 0);
    let bad = bad_pages(a, len, Some(hole));
    println!("thptest: split: AnonHugePages {} kB (was {}), {} bad pages", after_split, huge_kb, bad);
    checkpoint("split");
    if bad != 0 || after_split != huge_kb - 2048 {
        return 4;
    }

    // mprotect of one 4 KiB page inside the fourth huge page: exactly
    // that huge page is split (Linux's `vma_adjust_trans_huge`), the page
    // becomes read-only, every page keeps its data.
    let ro = a + 3 * HPAGE + 9 * PAGE;
    let r = mprotect(ro, PAGE, PROT_READ);
    let after_mprotect = thp(3, 0);
    let bad = bad_pages(a, len, Some(hole));
    println!(
        "thptest: mprotect: status {}, AnonHugePages {} kB (was {}), {} bad pages",
        r, after_mprotect, after_split, bad
    );
    println!("thptest: read-only page at {:#x}", ro);
    checkpoint("mprotected");
    if r != 0 || bad != 0 || after_mprotect != after_split - 2048 {
        return 9;
    }

    // Fork and copy on write of a huge page.
    let target = a + 2 * HPAGE + 7 * PAGE;
    let child = fork();
    if child == 0 {
        checkpoint("child");
        write(target, CHILD_WORD);
        let ok = read(target) == CHILD_WORD && bad_pages(a, len, Some(hole)) == 1;
        exit(if ok { 0 } else { 1 });
    }
    if child < 0 {
        return 5;
    }
    checkpoint("forked");
    let (_, status) = wait(child);
    let parent_ok = read(target) == pattern(target) && bad_pages(a, len, Some(hole)) == 0;
    println!("thptest: fork: child status {}, parent data {}", status, if parent_ok { "intact" } else { "CHANGED" });
    if status != 0 || !parent_ok {
        return 5;
    }

    // khugepaged: 512 small pages collapsed into one huge page.
    let Some(c) = map_aligned(HPAGE) else { return 2 };
    madvise(c, HPAGE, MADV_NOHUGEPAGE);
    let before = mmstat().faults;
    let mut va = c;
    while va < c + HPAGE {
        write(va, pattern(va));
        va += PAGE;
    }
    let small_faults = mmstat().faults - before;
    let huge_before = thp(3, 0);
    madvise(c, HPAGE, MADV_HUGEPAGE);
    // Bit 16: leave the collapse to the khugepaged thread (yield until
    // it ran), else ask for it now.
    let collapsed = if arg & (1 << 16) != 0 {
        let mut yields = 0;
        while thp(3, 0) < huge_before + 2048 && yields < 1000 {
            sched_yield();
            yields += 1;
        }
        println!("thptest: khugepaged collapsed the range after {} yields", yields);
        (thp(3, 0) >= huge_before + 2048) as i64
    } else {
        thp(2, 0)
    };
    let huge_after = thp(3, 0);
    let bad = bad_pages(c, HPAGE, None);
    println!(
        "thptest: collapse: {} faults to fill, {} ranges collapsed, AnonHugePages {} -> {} kB, {} bad pages",
        small_faults, collapsed, huge_before, huge_after, bad
    );
    println!("thptest: collapsed range at {:#x}", c);
    checkpoint("collapsed");
    if collapsed < 1 || huge_after < huge_before + 2048 || bad != 0 {
        return 6;
    }

    // The huge zero page: a read of a fresh 2 MiB range maps it (no
    // memory of its own: AnonHugePages unchanged); a write then gets a
    // huge page of its own.
    let Some(z) = map_aligned(HPAGE) else { return 2 };
    let before = thp(3, 0);
    let zeros = (0..HPAGE / PAGE).all(|i| read(z + i * PAGE + 8) == 0);
    let after_read = thp(3, 0);
    println!(
        "thptest: zero page at {:#x}: reads {}, AnonHugePages {} -> {} kB",
        z,
        if zeros { "zero" } else { "NOT ZERO" },
        before,
        after_read
    );
    checkpoint("zero");
    write(z + 8, 42);
    let after_write = thp(3, 0);
    let ok = read(z + 8) == 42 && (1..HPAGE / PAGE).all(|i| read(z + i * PAGE + 8) == 0);
    println!("thptest: zero page written: AnonHugePages {} kB, data {}", after_write, if ok { "ok" } else { "WRONG" });
    if !zeros || after_read != before || after_write != before + 2048 || !ok {
        return 7;
    }

    // A partially populated range: 64 of its 512 pages written. With
    // khugepaged's max_ptes_none at 0 it is left alone; at Linux's
    // default 511 it collapses, the holes reading zero.
    let Some(h) = map_aligned(HPAGE) else { return 2 };
    madvise(h, HPAGE, MADV_NOHUGEPAGE);
    let written = |va: u64| ((va - h) / PAGE).is_multiple_of(8);
    let mut va = h;
    while va < h + HPAGE {
        if written(va) {
            write(va, pattern(va));
        }
        va += PAGE;
    }
    madvise(h, HPAGE, MADV_HUGEPAGE);
    let default_none = thp(4, 0);
    thp(5, 0);
    let strict = thp(2, 0);
    thp(5, default_none as u64);
    let huge_before = thp(3, 0);
    let relaxed = thp(2, 0);
    let huge_after = thp(3, 0);
    let mut bad = 0;
    let mut va = h;
    while va < h + HPAGE {
        let want = if written(va) { pattern(va) } else { 0 };
        bad += (read(va) != want) as u64;
        va += PAGE;
    }
    println!(
        "thptest: partial: 64 of 512 pages, max_ptes_none 0: {} collapsed; max_ptes_none {}: {} collapsed, AnonHugePages {} -> {} kB, {} bad pages",
        strict, default_none, relaxed, huge_before, huge_after, bad
    );
    println!("thptest: partial range at {:#x}", h);
    checkpoint("partial");
    if strict != 0 || relaxed < 1 || huge_after < huge_before + 2048 || bad != 0 {
        return 8;
    }
    mremap_huge()
}

/// `mremap(old, old_len, new_len, flags, new_addr)`.
fn mremap(old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> i64 {
    ulib::syscall6(25, [old, old_len, new_len, flags, new_addr, 0])
}

/// Pages of `[at, at + len)` whose first word is not `pattern` of the
/// address it had at `from` (a moved range).
fn bad_moved(at: u64, from: u64, len: u64) -> u64 {
    (0..len / PAGE).filter(|i| read(at + i * PAGE) != pattern(from + i * PAGE)).count() as u64
}

/// mremap (MREMAP_MAYMOVE | MREMAP_FIXED) of two 4 MiB THP-backed ranges
/// (checkpoint `mremapped`): to a 2 MiB-aligned destination the PMD
/// leaves move whole (a huge page and the huge zero page, which a read
/// mapped), to a misaligned one the huge pages are split and their 4 KiB
/// PTEs move; the data follows, nothing is left at the old addresses.
/// Exit status 10 if anything went wrong.
fn mremap_huge() -> i32 {
    const MAYMOVE_FIXED: u64 = 1 | 2;
    let Some(m) = map_aligned(2 * HPAGE) else { return 2 };
    let mut va = m;
    while va < m + HPAGE {
        write(va, pattern(va));
        va += PAGE;
    }
    // The second huge page only read: the huge zero page.
    let zeros = (0..HPAGE / PAGE).all(|i| read(m + HPAGE + i * PAGE) == 0);
    let Some(d) = map_aligned(2 * HPAGE) else { return 2 };
    let huge_before = thp(3, 0);
    let r1 = mremap(m, 2 * HPAGE, 2 * HPAGE, MAYMOVE_FIXED, d);
    let huge_aligned = thp(3, 0);
    let mut bad = bad_moved(d, m, HPAGE);
    bad += (0..HPAGE / PAGE).filter(|i| read(d + HPAGE + i * PAGE) != 0).count() as u64;

    // Misaligned: 1 MiB past a 2 MiB boundary.
    let Some(m2) = map_aligned(2 * HPAGE) else { return 2 };
    let mut va = m2;
    while va < m2 + 2 * HPAGE {
        write(va, pattern(va));
        va += PAGE;
    }
    let Some(w) = map_aligned(3 * HPAGE) else { return 2 };
    let d2 = w + HPAGE / 2;
    let huge_before_misaligned = thp(3, 0);
    let r2 = mremap(m2, 2 * HPAGE, 2 * HPAGE, MAYMOVE_FIXED, d2);
    munmap(w, d2 - w);
    munmap(d2 + 2 * HPAGE, w + 3 * HPAGE - d2 - 2 * HPAGE);
    let huge_misaligned = thp(3, 0);
    bad += bad_moved(d2, m2, 2 * HPAGE);
    println!(
        "thptest: mremap: aligned {:#x} -> {:#x} (status {:#x}), AnonHugePages {} -> {} kB; misaligned {:#x} -> {:#x} (status {:#x}), AnonHugePages {} -> {} kB; zero page {}, {} bad pages",
        m,
        d,
        r1,
        huge_before,
        huge_aligned,
        m2,
        d2,
        r2,
        huge_before_misaligned,
        huge_misaligned,
        if zeros { "read" } else { "NOT ZERO" },
        bad
    );
    checkpoint("mremapped");
    // A write to the moved huge zero page gets a huge page of its own.
    write(d + HPAGE + 8, 42);
    let written = thp(3, 0);
    let zero_ok = read(d + HPAGE + 8) == 42 && (1..HPAGE / PAGE).all(|i| read(d + HPAGE + i * PAGE) == 0);
    println!(
        "thptest: moved zero page written: AnonHugePages {} kB, data {}",
        written,
        if zero_ok { "ok" } else { "WRONG" }
    );
    let ok = r1 == d as i64
        && r2 == d2 as i64
        && zeros
        && bad == 0
        && huge_aligned == huge_before
        && huge_misaligned == huge_before_misaligned - 4096
        && written == huge_misaligned + 2048
        && zero_ok
        && bad_moved(d, m, HPAGE) == 0
        && bad_moved(d2, m2, 2 * HPAGE) == 0;
    if ok {
        0
    } else {
        10
    }
}

/// `MAP_FIXED_NOREPLACE`: at `addr` exactly, EEXIST if taken.
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// Linux's EEXIST.
const EEXIST: i64 = 17;

/// Writes the pattern into `[start, start + len)`, one word every
/// `stride` bytes; the faults that took.
fn fill(start: u64, len: u64, stride: u64) -> u64 {
    let before = mmstat().faults;
    let mut va = start;
    while va < start + len {
        write(va, pattern(va));
        va += stride;
    }
    mmstat().faults - before
}

/// Where the kernel puts mappings and moves without an address hint
/// (Linux 6.13's `__get_unmapped_area`: private anonymous memory whose
/// length is a multiple of 2 MiB starts on a 2 MiB boundary, whatever the
/// THP mode), in a fresh process (this runs first, so the top-down
/// placement is known):
/// - a plain 4 MiB mmap starts 2 MiB-aligned; touched page by page with
///   THP always it takes 2 faults (two PMD leaves);
/// - a 3 MiB mmap (not a multiple of 2 MiB) is not aligned: it sits
///   right below the 4 MiB one, as the top-down search puts it;
/// - a free, misaligned hint for 4 MiB is honoured as given;
/// - a THP-backed 2 MiB region that cannot grow in place, mremapped
///   (MREMAP_MAYMOVE) to 4 MiB, moves to a 2 MiB-aligned place: its PMD
///   leaf moves whole (AnonHugePages unchanged, no split) with its data,
///   and the new half takes one more huge fault.
///
/// Checkpoint `placed` after the move. Exit status 0, or 11 if anything
/// went wrong.
fn placement() -> i32 {
    let always = thp(0, 0) == 2;
    // Every page with THP always (the fault count proves the huge
    // faults), one per 2 MiB otherwise (4 KiB faults are slow here).
    let stride = if always { PAGE } else { HPAGE };
    let rw = PROT_READ | PROT_WRITE;
    let anon = MAP_PRIVATE | MAP_ANONYMOUS;
    let a = mmap(0, 2 * HPAGE, rw, anon);
    let huge0 = thp(3, 0);
    let a_faults = if a > 0 { fill(a as u64, 2 * HPAGE, stride) } else { 0 };
    let a_huge = thp(3, 0) - huge0;
    let b = mmap(0, 3 << 20, rw, anon);
    println!(
        "thptest: placement: 4 MiB at {:#x} ({}), {} faults, AnonHugePages +{} kB; 3 MiB at {:#x} ({})",
        a,
        if a % HPAGE as i64 == 0 { "aligned" } else { "NOT ALIGNED" },
        a_faults,
        a_huge,
        b,
        if b % HPAGE as i64 == 0 { "ALIGNED" } else { "not aligned" }
    );
    if a <= 0 || b <= 0 {
        return 2;
    }
    let (a, b) = (a as u64, b as u64);
    // A free hint 64 KiB past a 2 MiB boundary, well below both.
    let hint = (b & !(HPAGE - 1)) - 4 * HPAGE + 0x1_0000;
    let h = mmap(hint, 2 * HPAGE, rw, anon);
    println!("thptest: placement: 4 MiB with hint {:#x} at {:#x}", hint, h);

    // mremap: a THP-backed 2 MiB region with its next 2 MiB taken.
    let r = mmap(0, HPAGE, rw, anon);
    if r <= 0 {
        return 2;
    }
    let r = r as u64;
    let guard = mmap(r + HPAGE, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE);
    let r_faults = fill(r, HPAGE, stride);
    let huge_before = thp(3, 0);
    let d = mremap(r, HPAGE, 2 * HPAGE, 1, 0);
    let huge_moved = thp(3, 0);
    let bad = if d > 0 {
        (0..HPAGE / stride).filter(|i| read(d as u64 + i * stride) != pattern(r + i * stride)).count()
    } else {
        0
    };
    println!(
        "thptest: placement: mremap 2 -> 4 MiB: {:#x} -> {:#x} ({}), guard {}, {} faults before, AnonHugePages {} -> {} kB, {} bad pages",
        r,
        d,
        if d % HPAGE as i64 == 0 { "aligned" } else { "NOT ALIGNED" },
        if guard == (r + HPAGE) as i64 { "placed" } else if guard == -EEXIST { "taken" } else { "FAILED" },
        r_faults,
        huge_before,
        huge_moved,
        bad
    );
    checkpoint("placed");
    if d <= 0 {
        return 11;
    }
    let d = d as u64;
    let grown_faults = fill(d + HPAGE, HPAGE, stride);
    let huge_grown = thp(3, 0);
    println!("thptest: placement: the grown half: {} faults, AnonHugePages {} kB", grown_faults, huge_grown);
    let mut ok = a.is_multiple_of(HPAGE)
        && !b.is_multiple_of(HPAGE)
        && b + (3 << 20) == a
        && h == hint as i64
        && (guard == (r + HPAGE) as i64 || guard == -EEXIST)
        && d != r
        && d.is_multiple_of(HPAGE)
        && bad == 0;
    if always {
        ok &= a_faults == 2
            && a_huge == 4096
            && r_faults == 1
            && huge_moved == huge_before
            && grown_faults == 1
            && huge_grown == huge_moved + 2048;
    }
    if ok {
        0
    } else {
        11
    }
}
