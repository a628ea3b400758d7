//! Fragmentation and compaction: touches two anonymous mappings A and B a
//! page each in turn, so their frames interleave in physical memory, until
//! no free block of order 9 (2 MiB) is left (or `arg` pages are touched);
//! every word of every A page is a function of its page and word number.
//! Then it unmaps B: half the frames come free, but every 2 MiB block
//! still holds A pages, so an order-9 allocation fails. It asks the kernel
//! to compact memory (`SYS_COMPACT`), checks that an order-9 allocation
//! now succeeds and that the order-9 unusable index fell, and reads every
//! A page back (the migrated ones included) counting the words that
//! differ. With bit 32 of the argument set, the compaction comes from
//! an order-9 allocation's slow path (direct compaction) instead of
//! compact_memory; with bit 33, kcompactd does it: an order-9 allocation
//! that may not compact fails and wakes it, and the program yields until
//! an order-9 block is free. Checkpoints `fragmented` (B unmapped) and `compacted` let the
//! host inspect and verify both moments.
//!
//! Exit status: 0 all held; 2 mmap failed; 3 an order-9 block was still
//! free after fragmenting (not enough pages to fragment memory); 4 no page
//! migrated (or, direct, the allocation failed); 5 order 9 still failed after compaction; 6 the unusable index
//! did not fall; 7 data changed; 8 (kcompactd) the allocation did not
//! fail or kcompactd was not woken; 9 (bit 34) the two transparent huge
//! pages mapped before fragmenting were not PMD-mapped and intact after
//! compaction (Linux's compaction skips THPs: `isolate_migratepages_block`
//! compacts compound pages only for allocations larger than they are).
#![no_std]
#![no_main]

use ulib::abi::*;
use ulib::{checkpoint, getpid, mmap, munmap, println, sched_yield, syscall3, vmstat, PAGE};

ulib::entry!(main);

/// What word `w` of A's page `p` holds.
fn pattern(p: u64, w: u64) -> u64 {
    (p << 20 | w) ^ 0x6672_6167_7465_7374
}

/// Bytes of the THP region (two huge pages).
const THP_BYTES: u64 = 4 << 20;

/// What word `i` of the THP region holds.
fn thp_pattern(i: u64) -> u64 {
    i ^ 0x7468_7020_7061_6765
}

/// Maps two 2 MiB-aligned huge pages (`MADV_HUGEPAGE`) and writes every
/// word; prints the AnonHugePages it got.
fn thp_region(prot: u64, flags: u64) -> Option<u64> {
    let m = mmap(0, THP_BYTES + (2 << 20), prot, flags);
    if m < 0 {
        return None;
    }
    let h = (m as u64).next_multiple_of(2 << 20);
    syscall3(28, h, THP_BYTES, 14);
    for i in 0..THP_BYTES / 8 {
        // SAFETY: inside the mapping, 2 MiB longer than the region.
        unsafe { ((h + i * 8) as *mut u64).write_volatile(thp_pattern(i)) };
    }
    println!("fragtest: THP region at {:#x}: AnonHugePages {} kB", h, syscall3(SYS_THP, 3, 0, 0));
    Some(h)
}

fn compact(op: u64) -> i64 {
    syscall3(SYS_COMPACT, op, 0, 0)
}

fn main(arg: u64) -> i32 {
    let pid = getpid();
    let half = ((arg & 0xffff_ffff) / 2).max(1);
    let prot = PROT_READ | PROT_WRITE;
    let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    // Bit 34: two transparent huge pages first (MADV_HUGEPAGE), every
    // word written; compaction must leave them mapped and intact.
    let thp = if arg & (1 << 34) != 0 {
        let Some(h) = thp_region(prot, flags) else { return 2 };
        Some(h)
    } else {
        None
    };
    let (a, b) = (mmap(0, half * PAGE, prot, flags), mmap(0, half * PAGE, prot, flags));
    if a < 0 || b < 0 {
        println!("fragtest[{}]: mmap of 2 x {} pages failed ({} {})", pid, half, a, b);
        return 2;
    }
    let (a, b) = (a as u64, b as u64);
    let mut n = 0;
    while n < half {
        for w in 0..PAGE / 8 {
            // SAFETY: inside A, `half` pages long.
            unsafe { ((a + n * PAGE + w * 8) as *mut u64).write_volatile(pattern(n, w)) };
        }
        // SAFETY: inside B, as long as A.
        unsafe { ((b + n * PAGE) as *mut u64).write_volatile(n) };
        n += 1;
        if n % 32 == 0 && compact(3) == 0 {
            break;
        }
    }
    munmap(b, half * PAGE);
    let free9 = compact(3);
    let ok_before = compact(1);
    let u_before = compact(2);
    println!(
        "fragtest[{}]: touched {} A + {} B pages, B unmapped; order-9 blocks free {}, order-9 allocation {}, unusable index {}",
        pid,
        n,
        n,
        free9,
        if ok_before == 1 { "succeeds" } else { "fails" },
        u_before
    );
    // A's pages, for the host's page checksums (`--inspect pagesums`).
    println!("fragtest[{}]: A at {:#x}, {} pages", pid, a, n);
    checkpoint("fragmented");
    // Bit 32 of the argument: let an order-9 allocation's slow path
    // compact (direct compaction) instead of asking for compact_memory.
    let direct = arg & (1 << 32) != 0;
    // Bit 33: kcompactd. An order-9 allocation that may not compact
    // fails and wakes it; yielding lets it run (it goes ahead of the
    // processes), until an order-9 block is free.
    let daemon = arg & (1 << 33) != 0;
    let migrated = if daemon {
        let wakes = |v: &[u64; VMSTAT_COUNT]| v[VMSTAT_NAMES.iter().position(|&n| n == "compact_daemon_wake").unwrap()];
        let scanned =
            |v: &[u64; VMSTAT_COUNT]| v[VMSTAT_NAMES.iter().position(|&n| n == "compact_migrate_scanned").unwrap()];
        let before = vmstat();
        let migrated_before = compact(6);
        let failed = compact(5);
        let mut yields = 0;
        while compact(1) != 1 && yields < 20 {
            sched_yield();
            yields += 1;
        }
        let after = vmstat();
        println!(
            "fragtest[{}]: kcompactd: the non-compacting order-9 allocation {}; compact_daemon_wake {} -> {}, compact_migrate_scanned {} -> {}, after {} yields",
            pid,
            if failed == 1 { "succeeded" } else { "failed" },
            wakes(&before),
            wakes(&after),
            scanned(&before),
            scanned(&after),
            yields
        );
        if failed == 1 || wakes(&after) <= wakes(&before) {
            return 8;
        }
        compact(6) - migrated_before
    } else {
        compact(if direct { 4 } else { 0 })
    };
    let ok_after = compact(1);
    let u_after = compact(2);
    let mut bad = 0u64;
    for p in 0..n {
        for w in 0..PAGE / 8 {
            // SAFETY: inside A.
            let v = unsafe { ((a + p * PAGE + w * 8) as *const u64).read_volatile() };
            bad += (v != pattern(p, w)) as u64;
        }
    }
    println!(
        "fragtest[{}]: compacted ({}): {} pages migrated, order-9 allocation {}, unusable index {} -> {}, {} A pages read back, {} bad words",
        pid,
        if daemon {
            "kcompactd, woken by a failed order-9 allocation"
        } else if direct {
            "direct, by an order-9 allocation"
        } else {
            "compact_memory"
        },
        migrated,
        if ok_after == 1 { "succeeds" } else { "fails" },
        u_before,
        u_after,
        n,
        bad
    );
    if let Some(h) = thp {
        let mut bad = 0u64;
        for i in 0..THP_BYTES / 8 {
            // SAFETY: inside the THP region.
            bad += (unsafe { ((h + i * 8) as *const u64).read_volatile() } != thp_pattern(i)) as u64;
        }
        let kb = syscall3(SYS_THP, 3, 0, 0);
        println!("fragtest[{}]: THP region at {:#x}: AnonHugePages {} kB, {} bad words", pid, h, kb, bad);
        if bad != 0 || kb != (THP_BYTES >> 10) as i64 {
            return 9;
        }
    }
    checkpoint("compacted");
    if ok_before != 0 {
        return 3;
    }
    if migrated <= 0 {
        return 4;
    }
    if ok_after != 1 {
        return 5;
    }
    if u_after >= u_before {
        return 6;
    }
    if bad != 0 {
        return 7;
    }
    0
}
