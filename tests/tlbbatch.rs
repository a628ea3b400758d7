//! Batched TLB flushes for reclaim (Linux's `TTU_BATCH_FLUSH`,
//! arch/tlb.rs `TlbBatch`): reclaim unmaps a batch of pages, records
//! which CPUs may cache their PTEs, and flushes them once before any page
//! of the batch is written or freed. The program (tests/tlbbatch.c) has
//! reader threads of its own address space spinning in user mode on the
//! other CPUs, so every unmap has shootdown targets, and prints what
//! /proc/vmstat's `tlb_batch_reclaim_*` counters moved by; `--verify tlb`
//! replays the record at the checkpoint after the swap-out (0 stale uses),
//! and the data reads back intact.

mod common;
use common::{compile, initrd_with_init, vmm, Run, Scratch, TempFile};

/// The counters of the program's `tlbbatch:` line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    pages: u64,
    pswpout: u64,
    ptes: u64,
    flushes: u64,
    remote: u64,
    ipis: u64,
}

/// The number after `key ` (and an optional `+`) in `line`.
fn field(line: &str, key: &str) -> u64 {
    let at = line.find(&format!(" {key} ")).unwrap_or_else(|| panic!("{key} missing in {line}")) + key.len() + 2;
    line[at..].trim_start_matches('+').split_whitespace().next().and_then(|n| n.parse().ok()).unwrap()
}

fn counts(r: &Run) -> Counts {
    let l = r.stdout.lines().find(|l| l.starts_with("tlbbatch: ")).unwrap_or_else(|| panic!("{}", r.all()));
    Counts {
        pages: field(l, "pages"),
        pswpout: field(l, "pswpout"),
        ptes: field(l, "ptes"),
        flushes: field(l, "flushes"),
        remote: field(l, "remote"),
        ipis: field(l, "ipis"),
    }
}

/// Runs the program on `cpus` vCPUs (a reader thread on each but CPU 0)
/// with `mem` of RAM, 16 MiB of swap, `--verify tlb` at the checkpoint
/// after the swap-out, the guest words `words` and the program's `args`.
fn run(cpus: u32, mem: &str, words: &str, args: &str) -> Run {
    let dir = Scratch::new("tlbbatch");
    let prog = compile("musl-gcc", include_str!("tlbbatch.c"), &dir.0, "tlbbatch", &["-static", "-lpthread"]);
    let root = initrd_with_init(&dir.0, &prog);
    let swap = TempFile::absent("tlbbatch-swap");
    vmm(&[
        "run",
        "--timeout",
        "900",
        "--cpus",
        &cpus.to_string(),
        "--mem",
        mem,
        "--swap",
        &format!("{},size=16M", swap.path()),
        "--initrd",
        root.to_str().unwrap(),
        "--verify",
        "tlb",
        "--inspect-at",
        "reclaimed",
        &format!("--cmdline={words} -- {} {args}", cpus - 1),
    ])
}

/// The run exited 0, read every word back, and the replay found no
/// stale use.
fn assert_clean(r: &Run) {
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("read back: 0 bad words"), "{}", r.all());
    let v = r.stdout.lines().find(|l| l.starts_with("verify tlb: ")).unwrap_or_else(|| panic!("{}", r.all()));
    assert!(v.starts_with("verify tlb: ok (") && v.contains(" 0 stale ("), "{v}\n{}", r.all());
}

/// MADV_PAGEOUT of 128 written pages on 4 CPUs: reclaim takes them in
/// batches of 32 (`SWAP_CLUSTER_MAX`), so 4 flushes, each one request to
/// each of the 3 other CPUs running the mm: 4 remote flushes and 12 IPIs
/// for 128 pages. With `tlbbatch=off` (one flush per PTE, as before) the
/// same run costs 128 and 384.
#[test]
fn reclaim_flushes_once_per_batch_of_32_pages_not_once_per_page() {
    let r = run(4, "32M", "", "pageout 128");
    assert_clean(&r);
    let c = counts(&r);
    assert_eq!(c, Counts { pages: 128, pswpout: 128, ptes: 128, flushes: 4, remote: 4, ipis: 12 }, "{}", r.all());

    let r = run(4, "32M", "tlbbatch=off", "pageout 128");
    assert_clean(&r);
    assert!(r.stderr.contains("reclaim and migration flush each PTE at once (tlbbatch=off)"), "{}", r.all());
    let c = counts(&r);
    assert_eq!(c, Counts { pages: 128, pswpout: 128, ptes: 128, flushes: 128, remote: 128, ipis: 384 }, "{}", r.all());
}

/// Real memory pressure on 2 CPUs: the program writes 256 pages more than
/// the guest has free, so direct reclaim and kswapd swap pages out while
/// the reader thread runs the mm on CPU 1. Every remote flush request is
/// one batch's (one IPI to CPU 1), many pages each; the accessed-bit
/// harvest of the scans joins the batches too (`ptes` counts both). 0
/// stale uses, every word back.
#[test]
fn reclaim_under_pressure_on_two_cpus_batches_its_flushes_with_no_stale_use() {
    let r = run(2, "16M", "", "pressure 256");
    assert_clean(&r);
    let c = counts(&r);
    assert!(c.pswpout >= 256, "{c:?}\n{}", r.all());
    assert!(c.remote >= 1 && c.ipis == c.remote, "one IPI (to CPU 1) per request: {c:?}");
    // Batches of up to 32 pages: far fewer requests than pages (one per
    // page before batching, and one per harvested accessed bit).
    assert!(c.remote * 8 <= c.pswpout, "{c:?}");
    assert!(c.flushes * 8 <= c.ptes, "{c:?}");
}

/// `noflush=reclaim` drops reclaim's batch flush: the detector names the
/// unmap (`PtEdit::unmap_one`, mm/swap.rs) and the reader's CPU, which
/// may still translate to the frames CPU 0 freed.
#[test]
fn a_dropped_reclaim_flush_is_named_with_the_cpu_that_kept_the_translation() {
    let r = run(2, "32M", "noflush=reclaim", "pageout 64");
    assert_eq!(r.status, 3, "{}", r.all());
    let v: Vec<&str> = r.stdout.lines().filter(|l| l.contains(" may still translate ")).collect();
    assert!(!v.is_empty(), "{}", r.all());
    for l in &v {
        assert!(l.contains("unmap_one") && l.contains("mm/swap.rs"), "{l}");
        assert!(l.contains("CPU 0 freed pfn") && l.contains("while CPU 1 may still translate"), "{l}");
    }
}

/// The `tlbbatch-migrate:` line's counters: PTE changes batched, batch
/// flushes, remote requests.
fn migrate_counts(r: &Run) -> (u64, u64, u64) {
    let l = r.stdout.lines().find(|l| l.starts_with("tlbbatch-migrate: ")).unwrap_or_else(|| panic!("{}", r.all()));
    (field(l, "ptes"), field(l, "flushes"), field(l, "remote"))
}

/// Compaction (/proc/sys/vm/compact_memory) of 256 pages scattered among
/// freed holes and shared read-only with a forked child (clean PTEs in
/// two address spaces): the remaps of the pages a cluster moves wait for
/// one flush, which comes before the old frames are freed (the detector
/// replays those frees: 0 stale), and the data reads back. With
/// `tlbbatch=off` every remap the running address space sees is flushed
/// on its own (the child's, on no CPU, need none). One CPU, so the
/// counts are exact (the write-protect flushes migration makes at once
/// before copying a writable page would add requests to other CPUs).
#[test]
fn migration_flushes_clean_remaps_once_per_batch() {
    let r = run(1, "32M", "", "compact 256");
    assert_clean(&r);
    let (ptes, flushes, _) = migrate_counts(&r);
    assert!(ptes >= 4 && flushes >= 1, "pages moved: {}", r.all());
    // Two PTEs per page (parent and child), up to 32 pages per batch.
    assert!(flushes * 4 <= ptes, "{ptes} {flushes}");

    let r = run(1, "32M", "tlbbatch=off", "compact 256");
    assert_clean(&r);
    let (ptes, flushes, _) = migrate_counts(&r);
    assert!(ptes >= 4 && flushes * 2 >= ptes, "one flush per parent PTE: {ptes} {flushes}");
}
