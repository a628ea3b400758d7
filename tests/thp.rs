//! Transparent huge pages on the real guest (issue 14): the thptest
//! program (guest/user/src/bin/thptest.rs) touches a 2 MiB-aligned
//! anonymous region one word per 4 KiB page. With
//! `transparent_hugepage=always` 64 MiB take 32 faults and the host's walk
//! of the process (the `tlb` view at the `touched` checkpoint) finds 32
//! PMD leaves there; then munmap of one 4 KiB page splits exactly that
//! huge page (the rest keeps its data), fork + a write copies correctly,
//! and khugepaged collapses a populated range (the host sees a 2 MiB leaf
//! at its address afterwards). With `never` every page is its own fault
//! and 4 KiB leaf. `--verify=all` passes at every checkpoint.

mod common;

/// The number after `key` in `line` (up to the next space or comma).
fn num_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split([' ', ',']).next()?.parse().ok()
}

/// The text of view `view` at checkpoint `cp`.
fn section<'a>(out: &'a str, cp: &str, view: &str) -> &'a str {
    let head = format!("--- checkpoint '{cp}': {view} ---");
    let start = out.find(&head).unwrap_or_else(|| panic!("no {view} at {cp}:\n{out}"));
    let rest = &out[start + head.len()..];
    &rest[..rest.find("--- checkpoint").unwrap_or(rest.len())]
}

/// The user leaves of a `tlb` view: (virtual address, large page).
fn user_leaves(tlb: &str) -> Vec<(u64, bool)> {
    tlb.lines()
        .filter_map(|l| {
            let (va, rest) = l.split_once(": ")?;
            let va = u64::from_str_radix(va.trim(), 16).ok()?;
            let flags = rest.split_whitespace().nth(1)?;
            // QEMU's letters XGPDACTUW: the third is the large-page bit.
            (va < 1 << 47).then(|| (va, flags.as_bytes().get(2) == Some(&b'P')))
        })
        .collect()
}

/// Every check `--verify=all` ran at `cp` passed or did not apply.
fn verified(out: &str, cp: &str) {
    let s = section(out, cp, "verify");
    for check in ["refcount", "cow-ro", "isolation", "lru", "freed-mapped", "wx", "kvm", "pt-owner"] {
        assert!(s.contains(&format!("verify {check}: ok")), "{check} at {cp}: {s}");
    }
}

fn run(mode: &str, mib: &str, checkpoints: &str) -> common::Run {
    run_views(mode, mib, checkpoints, "tlb")
}

fn run_views(mode: &str, mib: &str, checkpoints: &str, views: &str) -> common::Run {
    let cmdline = format!("transparent_hugepage={mode} thptest={mib} exit=0");
    let r = common::vmm(&[
        "run",
        "--timeout",
        "600",
        "--mem",
        "160M",
        "--cmdline",
        &cmdline,
        "--inspect-at",
        checkpoints,
        "--inspect",
        views,
        "--verify=all",
    ]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(!r.stdout.contains("VIOLATION"), "{}", r.all());
    assert!(r.all().contains("thptest: exit status 0x0"), "{}", r.all());
    r
}

#[test]
fn thp_always_maps_pmd_leaves_splits_copies_and_collapses() {
    let dir = common::Scratch::new("thp-physmap");
    let r = run_views(
        "always",
        "64",
        "touched,split,forked,collapsed,zero,partial",
        &format!("tlb,physmap:{}", dir.0.display()),
    );
    let out = r.all();
    // The physical map marks the huge pages' frames: 32 then 31 PMD
    // leaves of 512 frames.
    let thp_frames = |cp: &str| {
        let s = section(&r.stdout, cp, "physmap");
        let l = s.lines().find(|l| l.contains("transparent huge pages")).unwrap_or_else(|| panic!("{s}"));
        l.split_whitespace().rev().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or_else(|| panic!("{l}"))
    };
    assert_eq!(thp_frames("touched"), 32 * 512);
    assert_eq!(thp_frames("split"), 31 * 512);
    let line = out.lines().find(|l| l.starts_with("thptest: faults")).unwrap_or_else(|| panic!("{out}"));
    // 64 MiB, 2 MiB per fault.
    assert_eq!(num_after(line, "faults "), Some(32), "{line}");
    assert_eq!(num_after(line, "AnonHugePages "), Some(65536), "{line}");
    // The host's walk: 32 PMD leaves for the region, nothing else large.
    let touched = user_leaves(section(&r.stdout, "touched", "tlb"));
    let huge: Vec<u64> = touched.iter().filter(|l| l.1).map(|l| l.0).collect();
    assert_eq!(huge.len(), 32, "{huge:x?}");
    assert!(huge.iter().all(|va| va % (2 << 20) == 0));
    let base = huge[0];
    assert!(huge.windows(2).all(|w| w[1] == w[0] + (2 << 20)), "{huge:x?}");
    // The split: the second huge page became 511 4 KiB leaves (the hole
    // unmapped), the other 31 stayed PMD leaves.
    let split = user_leaves(section(&r.stdout, "split", "tlb"));
    let second = base + (2 << 20);
    let in_second: Vec<&(u64, bool)> = split.iter().filter(|l| (second..second + (2 << 20)).contains(&l.0)).collect();
    assert_eq!(in_second.len(), 511, "{in_second:x?}");
    assert!(in_second.iter().all(|l| !l.1));
    assert!(!in_second.iter().any(|l| l.0 == second + 5 * 4096), "the unmapped page is still mapped");
    assert_eq!(split.iter().filter(|l| l.1).count(), 31);
    assert!(out.contains("thptest: split: AnonHugePages 63488 kB (was 65536), 0 bad pages"), "{out}");
    // Fork + write: the child saw its write, the parent kept its data.
    assert!(out.contains("thptest: fork: child status 0, parent data intact"), "{out}");
    // khugepaged: 512 faults to fill the range, then one collapse, and the
    // host finds a 2 MiB leaf at the range afterwards.
    let coll = out.lines().find(|l| l.starts_with("thptest: collapse:")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(num_after(coll, "collapse: "), Some(512), "{coll}");
    assert_eq!(num_after(coll, "faults to fill, "), Some(1), "{coll}");
    assert!(coll.ends_with(", 0 bad pages"), "{coll}");
    let at = out.lines().find_map(|l| l.strip_prefix("thptest: collapsed range at 0x")).unwrap();
    let at = u64::from_str_radix(at.trim(), 16).unwrap();
    let after = user_leaves(section(&r.stdout, "collapsed", "tlb"));
    assert!(after.contains(&(at, true)), "no PMD leaf at {at:#x}");
    assert!(!after.iter().any(|l| l.0 > at && l.0 < at + (2 << 20)), "4 KiB leaves left in the collapsed range");
    // The counters, as Linux names them.
    let vm = |name: &str| common::counter_after(&out, "thptest: exit status", name);
    // The huge zero page: mapped read-only by a read (the host sees a
    // read-only PMD leaf), then a write's own huge page.
    let zl = out.lines().find(|l| l.starts_with("thptest: zero page at 0x")).unwrap_or_else(|| panic!("{out}"));
    assert!(zl.ends_with("reads zero, AnonHugePages 65536 -> 65536 kB"), "{zl}");
    let z = u64::from_str_radix(zl["thptest: zero page at 0x".len()..].split(':').next().unwrap(), 16).unwrap();
    let zero_tlb = section(&r.stdout, "zero", "tlb");
    let zline = zero_tlb.lines().find(|l| l.starts_with(&format!("{z:016x}:"))).unwrap_or_else(|| panic!("{zero_tlb}"));
    let zflags = zline.split_whitespace().nth(2).unwrap();
    assert!(zflags.as_bytes()[2] == b'P' && zflags.ends_with('-'), "huge zero page leaf not large read-only: {zline}");
    assert!(out.contains("thptest: zero page written: AnonHugePages 67584 kB, data ok"), "{out}");
    // khugepaged's max_ptes_none: a range with 448 of 512 PTEs empty is
    // left alone at 0 and collapsed at Linux's default 511, its holes
    // zero-filled; the host sees the PMD leaf.
    let part = out.lines().find(|l| l.starts_with("thptest: partial: ")).unwrap_or_else(|| panic!("{out}"));
    assert!(part.contains("max_ptes_none 0: 0 collapsed; max_ptes_none 511: 1 collapsed"), "{part}");
    assert!(part.ends_with(", 0 bad pages"), "{part}");
    let at = out.lines().find_map(|l| l.strip_prefix("thptest: partial range at 0x")).unwrap();
    let at = u64::from_str_radix(at.trim(), 16).unwrap();
    let leaves = user_leaves(section(&r.stdout, "partial", "tlb"));
    assert!(leaves.contains(&(at, true)), "no PMD leaf at {at:#x}");
    // 32 for the touch, 1 for the write to the huge zero page.
    assert_eq!(vm("thp_fault_alloc"), 33);
    assert_eq!(vm("thp_zero_page_alloc"), 1);
    assert_eq!(vm("thp_collapse_alloc"), 2);
    // The munmap split and the copy on write's split.
    assert_eq!(vm("thp_split_pmd"), 2);
    for cp in ["touched", "split", "forked", "collapsed", "zero", "partial"] {
        verified(&r.stdout, cp);
    }
}

/// The region's base from thptest's output.
fn region(out: &str) -> u64 {
    let at = out.lines().find_map(|l| l.strip_prefix("thptest: region at 0x")).unwrap_or_else(|| panic!("{out}"));
    u64::from_str_radix(at.split(',').next().unwrap(), 16).unwrap()
}

/// With `never`, one fault and one 4 KiB leaf per page. 16 MiB (4,096
/// faults) rather than 64: each 4 KiB fault is emulated ring-0 work here
/// (64 MiB took 4 minutes on a loaded 2-core machine; README's results
/// give that figure).
#[test]
fn thp_never_maps_4k_leaves() {
    let r = run("never", "16", "touched");
    let out = r.all();
    let line = out.lines().find(|l| l.starts_with("thptest: faults")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(num_after(line, "faults "), Some(4096), "{line}");
    assert_eq!(num_after(line, "AnonHugePages "), Some(0), "{line}");
    let base = region(&out);
    let leaves = user_leaves(section(&r.stdout, "touched", "tlb"));
    let inside: Vec<&(u64, bool)> = leaves.iter().filter(|l| (base..base + (16 << 20)).contains(&l.0)).collect();
    assert_eq!(inside.len(), 4096);
    assert!(inside.iter().all(|l| !l.1), "a large leaf with THP never");
    let vm = |name: &str| common::counter_after(&out, "thptest: exit status", name);
    assert_eq!(vm("thp_fault_alloc"), 0);
    verified(&r.stdout, "touched");
}

/// Reclaim never swaps a PMD-mapped page as one small page: with THP
/// always, swaptest writes more than RAM; the huge pages its faults got
/// are split before swap-out (thp_split_pmd counts them), every
/// word reads back, and the host's swap, LRU and refcount checks pass.
#[test]
fn reclaim_splits_huge_pages_before_swap_out() {
    let img = common::TempFile::absent("thp-swap.img");
    let swap = format!("{},size=32M", img.path());
    let r = common::vmm(&[
        "run",
        "--timeout",
        "600",
        "--mem",
        "12M",
        "--swap",
        &swap,
        "--cmdline",
        "transparent_hugepage=always swaptest=3300,yield",
        "--inspect-at",
        "swapped",
        "--verify=swap,lru,refcount,isolation,cow-ro",
    ]);
    assert_eq!(r.status, 0, "{}", r.all());
    let out = r.all();
    assert!(out.contains("3300 pages written and read back, 0 bad words"), "{out}");
    assert!(!out.contains("VIOLATION"), "{out}");
    let s = section(&r.stdout, "swapped", "verify");
    for check in ["swap", "lru", "refcount", "isolation", "cow-ro"] {
        assert!(s.contains(&format!("verify {check}: ok")), "{check}: {s}");
    }
    let vm = |name: &str| common::counter_after(&out, "swaptest: exit status", name);
    assert!(vm("thp_fault_alloc") >= 1, "no huge page was mapped: the test proves nothing\n{out}");
    // swaptest unmaps nothing partially and forks not here: only reclaim splits.
    assert!(vm("thp_split_pmd") >= 1, "{out}");
    assert!(vm("pswpout") > 0);
}

/// The khugepaged thread (the `khugepaged` switch) collapses the range on
/// its own once the process yields; the host sees the PMD leaf.
#[test]
fn khugepaged_thread_collapses_when_the_process_yields() {
    let r = run("always khugepaged", "8,wait", "collapsed");
    let out = r.all();
    assert!(out.contains("thptest: khugepaged collapsed the range after "), "{out}");
    let coll = out.lines().find(|l| l.starts_with("thptest: collapse:")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(num_after(coll, "faults to fill, "), Some(1), "{coll}");
    assert!(coll.ends_with(", 0 bad pages"), "{coll}");
    let at = out.lines().find_map(|l| l.strip_prefix("thptest: collapsed range at 0x")).unwrap();
    let at = u64::from_str_radix(at.trim(), 16).unwrap();
    assert!(user_leaves(section(&r.stdout, "collapsed", "tlb")).contains(&(at, true)), "no PMD leaf at {at:#x}");
    let vm = |name: &str| common::counter_after(&out, "thptest: exit status", name);
    assert!(vm("thp_collapse_alloc") >= 1);
    verified(&r.stdout, "collapsed");
}

/// /proc/PID/smaps of huge mappings, read by a static C program in the
/// guest: a 4 MiB `MADV_HUGEPAGE` range touched page by page is two
/// transparent huge pages (Rss and AnonHugePages 4096 kB, THPeligible 1);
/// a `MAP_HUGETLB` page counts in Private_Hugetlb, not in Rss, with
/// KernelPageSize 2048 kB, as Linux's smaps; after fork the child sees
/// both shared (its THP Pss halves, Shared_Hugetlb 2048 kB).
const SMAPS: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#define MIB (1024L * 1024)
static char text[65536];
/* Field `key` of the smaps entry whose range starts at `start`. */
static long smaps(unsigned long start, const char *key) {
    FILE *f = fopen("/proc/self/smaps", "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = 0;
    char head[32];
    snprintf(head, sizeof head, "%08lx-", start);
    char *p = strstr(text, head);
    if (!p) return -1;
    char *next = strstr(p + 1, "VmFlags:");
    char *q = strstr(p, key);
    return q && (!next || q < next) ? atol(q + strlen(key)) : -2;
}
static void show(const char *who, unsigned long thp, unsigned long huge) {
    printf("%s: thp Rss %ld AnonHugePages %ld Pss %ld THPeligible %ld; hugetlb Rss %ld Private_Hugetlb %ld Shared_Hugetlb %ld KernelPageSize %ld\n",
           who, smaps(thp, "\nRss:"), smaps(thp, "\nAnonHugePages:"), smaps(thp, "\nPss:"), smaps(thp, "\nTHPeligible:"),
           smaps(huge, "\nRss:"), smaps(huge, "\nPrivate_Hugetlb:"), smaps(huge, "\nShared_Hugetlb:"), smaps(huge, "\nKernelPageSize:"));
}
int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char *m = mmap(NULL, 8 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *a = (char *)(((unsigned long)m + 2 * MIB - 1) & ~(2 * MIB - 1));
    if (madvise(a, 4 * MIB, MADV_HUGEPAGE)) { printf("madvise failed\n"); return 1; }
    for (long i = 0; i < 4 * MIB; i += 4096) a[i] = 1;
    char *h = mmap(NULL, 2 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (h == MAP_FAILED) { printf("MAP_HUGETLB failed\n"); return 1; }
    h[0] = 1;
    show("parent", (unsigned long)a, (unsigned long)h);
    pid_t c = fork();
    if (c == 0) {
        show("child", (unsigned long)a, (unsigned long)h);
        _exit(0);
    }
    waitpid(c, NULL, 0);
    return 0;
}
"#;

#[test]
fn smaps_counts_huge_pages_as_linux() {
    let dir = common::Scratch::new("thp-smaps");
    let prog = common::compile("musl-gcc", SMAPS, &dir.0, "smaps", &["-static"]);
    let root = common::initrd_with_init(&dir.0, &prog);
    let r = common::vmm(&[
        "run",
        "--timeout",
        "600",
        "--mem",
        "64M",
        "--initrd",
        root.to_str().unwrap(),
        "--cmdline",
        "hugepages=2",
    ]);
    let out = r.all();
    assert_eq!(r.status, 0, "{out}");
    for want in [
        "parent: thp Rss 4096 AnonHugePages 4096 Pss 4096 THPeligible 1; hugetlb Rss 0 Private_Hugetlb 2048 Shared_Hugetlb 0 KernelPageSize 2048",
        "child: thp Rss 4096 AnonHugePages 4096 Pss 2048 THPeligible 1; hugetlb Rss 0 Private_Hugetlb 0 Shared_Hugetlb 2048 KernelPageSize 2048",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?}:\n{out}");
    }
}
