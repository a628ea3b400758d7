//! 1 GiB hugetlb pages (`MAP_HUGETLB | MAP_HUGE_1GB`), run with a 1 GiB
//! pool of one page (`hugepagesz=1G hugepages=1`) on a CPU that reports
//! pdpe1gb, against Documentation/admin-guide/mm/hugetlbpage.rst:
//! 1. the pool's sysfs directory reads nr/free/resv/surplus 1/1/0/0;
//! 2. mmap of 1 GiB reserves the page (resv 1) at a 1 GiB-aligned address;
//! 3. writes at 4 KiB steps of every 2 MiB fault it in with one fault
//!    (free 0, resv 0); /proc/self/pagemap shows one physically contiguous,
//!    1 GiB-aligned page, smaps a 1048576 kB KernelPageSize, and the
//!    kernel's walk (/sys/kernel/debug/page_tables/current_user) one
//!    `1G ... pud` line;
//! 4. a second 1 GiB mmap cannot be reserved: ENOMEM;
//! 5. a forked child reads the parent's data through the shared leaf, and
//!    its write, with no free page to copy to, gets SIGBUS;
//! 6. munmap gives the page back (free 1);
//! 7. the pool shrinks to 0 and grows back to 1 at run time (the page is
//!    found again as a whole free 1 GiB range), meminfo's Hugetlb counting
//!    it; a gigantic pool takes no overcommit (EINVAL).
//!
//! On a CPU without pdpe1gb the pool does not exist: the directory is
//! absent and `MAP_HUGE_1GB` is EINVAL (exit 0 after checking that).
//! Exit status: 0 all held; 10 + step when a step was wrong.
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{exit, fork, getpid, mmap, munmap, pagemap, println, proc_field, wait, write_number, PM_PFN_MASK};

ulib::entry!(main);

/// 1 GiB.
const GIG: u64 = 1 << 30;
/// `MAP_HUGE_1GB`: log2 of the page size in flags bits 26..31.
const MAP_HUGE_1GB: u64 = 30 << 26;
/// The pool's sysfs directory.
const DIR: &str = "/sys/kernel/mm/hugepages/hugepages-1048576kB/";

/// `DIR` + `file`, NUL-terminated.
fn path<'a>(file: &str, out: &'a mut [u8; 96]) -> &'a [u8] {
    let n = DIR.len() + file.len();
    out[..DIR.len()].copy_from_slice(DIR.as_bytes());
    out[DIR.len()..n].copy_from_slice(file.as_bytes());
    out[n] = 0;
    &out[..=n]
}

/// The pool's (nr, free, resv, surplus) from sysfs, printed after `what`.
fn pool(what: &str) -> [i64; 4] {
    let mut buf = [0u8; 96];
    let mut f = |file: &str| proc_field(path(file, &mut buf), b"").map_or(-1, |n| n as i64);
    let v = [f("nr_hugepages"), f("free_hugepages"), f("resv_hugepages"), f("surplus_hugepages")];
    println!(
        "gigatest[{}]: {}: nr_hugepages {} free_hugepages {} resv_hugepages {} surplus_hugepages {}",
        getpid(),
        what,
        v[0],
        v[1],
        v[2],
        v[3]
    );
    v
}

fn expect(step: i32, got: [i64; 4], want: [i64; 4]) {
    if got != want {
        println!("gigatest[{}]: step {}: want nr/free/resv/surplus {:?}, got {:?}", getpid(), step, want, got);
        exit(10 + step);
    }
}

/// The word written at offset `off` of the page.
fn pattern(off: u64) -> u64 {
    off ^ 0x6769_6761_6e74_6963
}

/// The offsets written: 4 KiB apart at the start of every 2 MiB, and the
/// page's last word (1,024 words).
fn offsets() -> impl Iterator<Item = u64> {
    (0..GIG / (2 << 20)).flat_map(|i| [i * (2 << 20), i * (2 << 20) + 4096]).chain([GIG - 8])
}

/// Words at [`offsets`] of `base` that differ from [`pattern`].
fn check(base: u64) -> u64 {
    // SAFETY: every offset lies inside the 1 GiB mapping at `base`.
    offsets().filter(|&o| unsafe { ((base + o) as *const u64).read_volatile() } != pattern(o)).count() as u64
}

/// Writes `pattern` at every offset (the first write faults the page in).
fn fill(base: u64) {
    for o in offsets() {
        // SAFETY: as in `check`.
        unsafe { ((base + o) as *mut u64).write_volatile(pattern(o)) };
    }
}

fn main(_arg: u64) -> i32 {
    let prot = PROT_READ | PROT_WRITE;
    let giga = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_1GB;
    let mut buf = [0u8; 96];
    if proc_field(path("nr_hugepages", &mut buf), b"").is_none() {
        let r = mmap(0, GIG, prot, giga);
        println!("gigatest[{}]: no 1 GiB pool ({} absent); MAP_HUGE_1GB mmap: {}", getpid(), DIR, r);
        return if r == -EINVAL { 0 } else { 20 };
    }
    // 1. The pool as boot left it.
    expect(1, pool("start"), [1, 1, 0, 0]);
    // 2. Reservation at mmap.
    let a = mmap(0, GIG, prot, giga);
    if a < 0 || !(a as u64).is_multiple_of(GIG) {
        println!("gigatest: mmap of 1 GiB: {:#x}", a);
        return 12;
    }
    let a = a as u64;
    expect(2, pool("mapped 1 GiB"), [1, 1, 1, 0]);
    // 3. The fault, and what maps it.
    fill(a);
    expect(3, pool("wrote it"), [1, 0, 0, 0]);
    // The host walks the PUD leaf here (tests/hugetlb.rs, on hardware KVM).
    ulib::checkpoint("giga-faulted");
    let mut e = [0u64; 1];
    let mut base_pfn = None;
    let mut scattered = 0u64;
    for o in offsets() {
        if pagemap(a + o, &mut e) != 1 || e[0] >> 63 == 0 {
            scattered += 1;
            continue;
        }
        let pfn = e[0] & PM_PFN_MASK;
        let base = *base_pfn.get_or_insert(pfn - (o >> 12));
        scattered += (pfn != base + (o >> 12)) as u64;
    }
    let pa = base_pfn.unwrap_or(1) << 12;
    let page_kb = proc_smaps_field(a, b"KernelPageSize:");
    let private = proc_smaps_field(a, b"Private_Hugetlb:");
    println!(
        "gigatest[{}]: 1 GiB page at {:#x} -> pa {:#x}, {} of {} sampled pages off the contiguous frame, KernelPageSize {} kB, Private_Hugetlb {} kB",
        getpid(),
        a,
        pa,
        scattered,
        offsets().count(),
        page_kb,
        private
    );
    // The kernel's own walk of this process's tables (Linux's
    // /sys/kernel/debug/page_tables/current_user): one PUD leaf.
    let mut leaf = false;
    let mut range = [0u8; 37];
    range[..18].copy_from_slice(&hex18(a));
    range[18] = b'-';
    range[19..].copy_from_slice(&hex18(a + GIG));
    ulib::for_each_line(b"/sys/kernel/debug/page_tables/current_user\0", |l| {
        if l.ends_with(b" pud") && l.starts_with(&range) {
            if let Ok(t) = core::str::from_utf8(l) {
                println!("gigatest[{}]: current_user: {}", getpid(), t);
            }
            leaf = true;
        }
    });
    if scattered != 0 || !pa.is_multiple_of(GIG) || page_kb != 1 << 20 || private != 1 << 20 || check(a) != 0 || !leaf {
        return 13;
    }
    // 4. Nothing left to reserve.
    let r = mmap(0, GIG, prot, giga);
    println!("gigatest[{}]: a second 1 GiB mmap: {}", getpid(), r);
    if r != -ENOMEM {
        return 14;
    }
    // 5. Fork: the child reads the shared page; its write needs a copy.
    let pid = fork();
    if pid == 0 {
        let bad = check(a);
        println!("gigatest[{}]: child read {} bad words; writing", getpid(), bad);
        if bad != 0 {
            exit(1);
        }
        // SAFETY: inside the mapping.
        unsafe { (a as *mut u64).write_volatile(1) };
        exit(2);
    }
    let (_, st) = wait(pid);
    println!("gigatest[{}]: child status {:#x} (SIGBUS is {:#x}); parent's words bad: {}", getpid(), st, SIGBUS, check(a));
    if st != SIGBUS || check(a) != 0 {
        return 15;
    }
    // 6. munmap.
    munmap(a, GIG);
    expect(6, pool("unmapped"), [1, 1, 0, 0]);
    // 7. Run-time resize, meminfo, no overcommit.
    let mut buf = [0u8; 96];
    write_number(path("nr_hugepages", &mut buf), 0);
    let hugetlb_empty = proc_field(b"/proc/meminfo\0", b"Hugetlb:").unwrap_or(u64::MAX);
    expect(7, pool("nr_hugepages 0"), [0, 0, 0, 0]);
    write_number(path("nr_hugepages", &mut buf), 1);
    let hugetlb_one = proc_field(b"/proc/meminfo\0", b"Hugetlb:").unwrap_or(0);
    expect(7, pool("nr_hugepages 1 again"), [1, 1, 0, 0]);
    let over = write_number(path("nr_overcommit_hugepages", &mut buf), 1);
    println!(
        "gigatest[{}]: meminfo Hugetlb {} kB -> {} kB; nr_overcommit_hugepages=1: {}",
        getpid(),
        hugetlb_empty,
        hugetlb_one,
        over
    );
    if hugetlb_one != hugetlb_empty + (1 << 20) || over != -EINVAL {
        return 17;
    }
    0
}

/// `v` as ptdump prints addresses: `0x` and 16 hex digits.
fn hex18(v: u64) -> [u8; 18] {
    let mut out = [b'0'; 18];
    out[1] = b'x';
    for i in 0..16 {
        out[17 - i] = b"0123456789abcdef"[((v >> (i * 4)) & 0xf) as usize];
    }
    out
}

/// The number after `key` in the /proc/self/smaps block of the mapping
/// that starts at `start` (0 if absent).
fn proc_smaps_field(start: u64, key: &[u8]) -> u64 {
    // The block's first line starts "<start in hex>-".
    let mut head = [0u8; 17];
    let mut n = 0;
    for shift in (0..16).rev() {
        let d = (start >> (shift * 4)) & 0xf;
        if d != 0 || n > 0 || shift == 0 {
            head[n] = b"0123456789abcdef"[d as usize];
            n += 1;
        }
    }
    head[n] = b'-';
    let head = &head[..=n];
    let mut inside = false;
    let mut v = 0;
    ulib::for_each_line(b"/proc/self/smaps\0", |l| {
        let first_word = l.split(|&b| b == b' ').next().unwrap_or(&[]);
        if first_word.contains(&b'-') && first_word.iter().all(|b| b.is_ascii_hexdigit() || *b == b'-') {
            inside = l.starts_with(head);
        } else if inside {
            if let Some(rest) = l.strip_prefix(key) {
                let d = rest.trim_ascii_start();
                let end = d.iter().position(|b| !b.is_ascii_digit()).unwrap_or(d.len());
                v = ulib::parse_u64(&d[..end]).unwrap_or(0);
            }
        }
    });
    v
}
