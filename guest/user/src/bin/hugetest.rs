//! hugetlb accounting, as Documentation/admin-guide/mm/hugetlbpage.rst
//! states it, run against a pool of at least 4 huge pages (`hugepages=4`):
//! 1. mmap of 3 huge pages (MAP_PRIVATE|MAP_HUGETLB) reserves them:
//!    Rsvd 3, Free unchanged (checkpoint `huge-mapped`);
//! 2. writing 2 of them faults them in: Free and Rsvd fall by 2
//!    (checkpoint `huge-faulted`: the host sees two PMD leaves);
//! 3. a 2-page mmap the pool cannot reserve fails with ENOMEM;
//! 4. fork: the child reads the parent's data, writes its own copy
//!    (copy on write takes a free page), the parent's stays (checkpoint
//!    `huge-forked`: both map the pages read-only);
//! 5. a child maps 2 pages with MAP_NORESERVE (no reservation), writes the
//!    first (takes the last unreserved page) and the second: SIGBUS;
//! 6. munmap gives back the faulted pages and the unused reservation:
//!    Free and Rsvd as at the start (checkpoint `huge-unmapped`);
//! 7. overcommit: with nr_overcommit_hugepages 1, mapping one page more
//!    than the pool holds succeeds with a surplus page (Surp 1), freed at
//!    munmap; the pool resizes at run time (nr_hugepages 6, then back).
//!
//! Each state is read from /proc/meminfo and printed as its lines
//! (`HugePages_Total: N` ...); the pool is set through /proc/sys/vm.
//! Exit status: 0 all held; 10 + step when a step's figures were wrong.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{checkpoint, exit, fork, getpid, mmap, munmap, println, proc_field, wait, write_number};

ulib::entry!(main);

const HPAGE: u64 = 2 << 20;

/// Sets /proc/sys/vm/nr_hugepages (the pool grows as far as the buddy
/// allocator can, or shrinks) and reads it back: the persistent pages now.
fn set_nr_hugepages(v: u64) -> i64 {
    write_number(b"/proc/sys/vm/nr_hugepages\0", v);
    proc_field(b"/proc/sys/vm/nr_hugepages\0", b"").map_or(-1, |n| n as i64)
}

/// Sets /proc/sys/vm/nr_overcommit_hugepages.
fn set_nr_overcommit_hugepages(v: u64) {
    write_number(b"/proc/sys/vm/nr_overcommit_hugepages\0", v);
}

/// (Total, Free, Rsvd, Surp) from /proc/meminfo's HugePages_ lines,
/// printed as meminfo's lines after `what`.
fn meminfo(what: &str) -> [i64; 4] {
    let f = |k: &[u8]| proc_field(b"/proc/meminfo\0", k).map_or(-1, |n| n as i64);
    let v = [f(b"HugePages_Total:"), f(b"HugePages_Free:"), f(b"HugePages_Rsvd:"), f(b"HugePages_Surp:")];
    println!(
        "hugetest[{}]: {}: HugePages_Total: {} HugePages_Free: {} HugePages_Rsvd: {} HugePages_Surp: {}",
        getpid(),
        what,
        v[0],
        v[1],
        v[2],
        v[3]
    );
    v
}

fn pattern(page: u64, off: u64) -> u64 {
    (page << 32 | off) ^ 0x6875_6765_7465_7374
}

/// Writes a word every 4 KiB of huge page `i` at `base`.
fn fill(base: u64, i: u64, salt: u64) {
    let mut off = 0;
    while off < HPAGE {
        // SAFETY: inside a mapping of at least i + 1 huge pages.
        unsafe { ((base + i * HPAGE + off) as *mut u64).write_volatile(pattern(i, off) ^ salt) };
        off += 4096;
    }
}

/// Words that differ from what `fill` wrote.
fn check(base: u64, i: u64, salt: u64) -> u64 {
    let mut bad = 0;
    let mut off = 0;
    while off < HPAGE {
        // SAFETY: as in `fill`.
        let v = unsafe { ((base + i * HPAGE + off) as *const u64).read_volatile() };
        bad += (v != pattern(i, off) ^ salt) as u64;
        off += 4096;
    }
    bad
}

fn expect(step: i32, got: [i64; 4], want: [i64; 4]) {
    if got != want {
        println!("hugetest[{}]: step {}: want Total/Free/Rsvd/Surp {:?}, got {:?}", getpid(), step, want, got);
        exit(10 + step);
    }
}

fn main(_arg: u64) -> i32 {
    let prot = PROT_READ | PROT_WRITE;
    let huge = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
    let s = meminfo("start");
    let (total, free) = (s[0], s[1]);
    if total < 4 || free != total || s[2] != 0 {
        println!("hugetest: want a pool of at least 4 free huge pages (hugepages=4)");
        return 2;
    }
    // 1. Reservation at mmap.
    let a = mmap(0, 3 * HPAGE, prot, huge);
    if a < 0 || !(a as u64).is_multiple_of(HPAGE) {
        println!("hugetest: mmap of 3 huge pages: {}", a);
        return 11;
    }
    let a = a as u64;
    expect(1, meminfo("mapped 3 (MAP_HUGETLB)"), [total, free, 3, 0]);
    checkpoint("huge-mapped");
    // 2. Faults consume reservations.
    fill(a, 0, 0);
    fill(a, 1, 0);
    expect(2, meminfo("wrote 2 of them"), [total, free - 2, 1, 0]);
    println!("hugetest[{}]: huge pages at {:#x} and {:#x}", getpid(), a, a + HPAGE);
    checkpoint("huge-faulted");
    // 3. What the pool cannot reserve: ENOMEM at mmap.
    let want = free - 2 - 1 + 1;
    let r = mmap(0, want as u64 * HPAGE, prot, huge);
    println!("hugetest[{}]: mmap of {} more huge pages: {}", getpid(), want, r);
    if r != -ENOMEM {
        return 13;
    }
    expect(3, meminfo("after the refused mmap"), [total, free - 2, 1, 0]);
    // 4. Fork: shared until written; the child's write copies.
    let pid = fork();
    if pid == 0 {
        checkpoint("huge-forked");
        let bad = check(a, 0, 0) + check(a, 1, 0);
        fill(a, 0, 0xc41d);
        let copied = meminfo("child wrote page 0 (copy on write)");
        let mine = check(a, 0, 0xc41d);
        println!("hugetest[{}]: child read {} bad words, its copy {} bad words", getpid(), bad, mine);
        exit(if bad == 0 && mine == 0 && copied[1] == free - 3 { 0 } else { 1 });
    }
    let (_, st) = wait(pid);
    let bad = check(a, 0, 0) + check(a, 1, 0);
    println!("hugetest[{}]: child status {:#x}; parent's pages: {} bad words", getpid(), st, bad);
    if st != 0 || bad != 0 {
        return 14;
    }
    expect(4, meminfo("child exited"), [total, free - 2, 1, 0]);
    // 5. MAP_NORESERVE: SIGBUS when no unreserved page is left.
    let pid = fork();
    if pid == 0 {
        let n = mmap(0, 2 * HPAGE, prot, huge | MAP_NORESERVE);
        meminfo("child mapped 2 with MAP_NORESERVE");
        if n < 0 {
            exit(3);
        }
        let spare = free - 2 - 1;
        for i in 0..spare as u64 {
            fill(n as u64, i, 1);
        }
        meminfo("child wrote the unreserved pages; writing one more");
        fill(n as u64, spare as u64, 1);
        exit(4);
    }
    let (_, st) = wait(pid);
    println!("hugetest[{}]: MAP_NORESERVE child status {:#x} (SIGBUS is {:#x})", getpid(), st, SIGBUS);
    if st != SIGBUS {
        return 15;
    }
    expect(5, meminfo("MAP_NORESERVE child killed"), [total, free - 2, 1, 0]);
    // 6. munmap: pages and the unused reservation go back.
    munmap(a, 3 * HPAGE);
    expect(6, meminfo("unmapped"), [total, free, 0, 0]);
    checkpoint("huge-unmapped");
    // 7. Surplus pages (overcommit) and a run-time resize.
    set_nr_overcommit_hugepages(1);
    let b = mmap(0, (total as u64 + 1) * HPAGE, prot, huge);
    if b < 0 {
        println!("hugetest: mmap of {} pages with overcommit 1: {}", total + 1, b);
        return 17;
    }
    expect(7, meminfo("mapped one page more than the pool, overcommit 1"), [total + 1, total + 1, total + 1, 1]);
    munmap(b as u64, (total as u64 + 1) * HPAGE);
    expect(7, meminfo("unmapped the overcommitted mapping"), [total, total, 0, 0]);
    set_nr_overcommit_hugepages(0);
    let grown = set_nr_hugepages(total as u64 + 2);
    meminfo("nr_hugepages raised by 2");
    let back = set_nr_hugepages(total as u64);
    expect(8, meminfo("nr_hugepages back"), [total, total, 0, 0]);
    println!("hugetest[{}]: resize: nr_hugepages {} -> {} -> {}", getpid(), total, grown, back);
    if grown != total + 2 || back != total {
        return 18;
    }
    0
}
