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
        "touched,split,mprotected,forked,collapsed,zero,partial,mremapped",
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
    // mprotect of one 4 KiB page in the fourth huge page: that huge page
    // alone became 512 4 KiB leaves, the one page read-only (QEMU's
    // letters end with W or -), 30 PMD leaves left.
    let mp = out.lines().find(|l| l.starts_with("thptest: mprotect:")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(mp, "thptest: mprotect: status 0, AnonHugePages 61440 kB (was 63488), 0 bad pages");
    let ro = out.lines().find_map(|l| l.strip_prefix("thptest: read-only page at 0x")).unwrap();
    let ro = u64::from_str_radix(ro.trim(), 16).unwrap();
    let fourth = base + 3 * (2 << 20);
    assert_eq!(ro, fourth + 9 * 4096);
    let mprot_tlb = section(&r.stdout, "mprotected", "tlb");
    let mprot = user_leaves(mprot_tlb);
    let in_fourth: Vec<&(u64, bool)> = mprot.iter().filter(|l| (fourth..fourth + (2 << 20)).contains(&l.0)).collect();
    assert_eq!(in_fourth.len(), 512, "{in_fourth:x?}");
    assert!(in_fourth.iter().all(|l| !l.1));
    assert_eq!(mprot.iter().filter(|l| l.1).count(), 30);
    let writable: Vec<u64> = mprot_tlb
        .lines()
        .filter_map(|l| {
            let (va, rest) = l.split_once(": ")?;
            let va = u64::from_str_radix(va.trim(), 16).ok()?;
            let flags = rest.split_whitespace().nth(1)?;
            ((fourth..fourth + (2 << 20)).contains(&va) && !flags.ends_with('W')).then_some(va)
        })
        .collect();
    assert_eq!(writable, vec![ro], "the read-only 4 KiB leaves of the split huge page");
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
    // (63488 kB: the munmap and mprotect splits took two huge pages.)
    assert!(zl.ends_with("reads zero, AnonHugePages 63488 -> 63488 kB"), "{zl}");
    let z = u64::from_str_radix(zl["thptest: zero page at 0x".len()..].split(':').next().unwrap(), 16).unwrap();
    let zero_tlb = section(&r.stdout, "zero", "tlb");
    let zline = zero_tlb.lines().find(|l| l.starts_with(&format!("{z:016x}:"))).unwrap_or_else(|| panic!("{zero_tlb}"));
    let zflags = zline.split_whitespace().nth(2).unwrap();
    assert!(zflags.as_bytes()[2] == b'P' && zflags.ends_with('-'), "huge zero page leaf not large read-only: {zline}");
    assert!(out.contains("thptest: zero page written: AnonHugePages 65536 kB, data ok"), "{out}");
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
    // mremap: to a 2 MiB-aligned destination the two PMD leaves (a huge
    // page and the huge zero page) moved whole; to a misaligned one the
    // two huge pages were split and moved as 1024 4 KiB leaves; nothing
    // is left at the old addresses; the data followed.
    let mr = out.lines().find(|l| l.starts_with("thptest: mremap: ")).unwrap_or_else(|| panic!("{out}"));
    // "aligned 0xM -> 0xD (status ..." and "misaligned 0xM2 -> 0xD2 (...".
    let pair = |s: &str| -> (u64, u64) {
        let words: Vec<&str> = s[s.find("0x").unwrap()..].split_whitespace().collect();
        let hex = |w: &str| u64::from_str_radix(w.trim_start_matches("0x"), 16).unwrap();
        (hex(words[0]), hex(words[2]))
    };
    let (first, second) = mr.split_once("; misaligned ").unwrap_or_else(|| panic!("{mr}"));
    let ((m, d), (m2, d2)) = (pair(first), pair(second));
    assert!(mr.ends_with("kB; zero page read, 0 bad pages"), "{mr}");
    assert_eq!(d % (2 << 20), 0);
    assert_ne!(d2 % (2 << 20), 0);
    let moved = user_leaves(section(&r.stdout, "mremapped", "tlb"));
    let within = |lo: u64, len: u64| -> Vec<(u64, bool)> {
        moved.iter().copied().filter(|l| (lo..lo + len).contains(&l.0)).collect()
    };
    assert_eq!(within(d, 4 << 20), vec![(d, true), (d + (2 << 20), true)], "aligned destination");
    let mis = within(d2, 4 << 20);
    assert_eq!(mis.len(), 1024, "misaligned destination: {} leaves", mis.len());
    assert!(mis.iter().all(|l| !l.1), "a PMD leaf at a misaligned destination");
    assert_eq!(within(m, 4 << 20), vec![], "leaves left at the old aligned range");
    assert_eq!(within(m2, 4 << 20), vec![], "leaves left at the old misaligned range");
    // The moved huge zero page's leaf stays read-only.
    let mtlb = section(&r.stdout, "mremapped", "tlb");
    let zl = mtlb.lines().find(|l| l.starts_with(&format!("{:016x}:", d + (2 << 20)))).unwrap();
    assert!(zl.split_whitespace().nth(2).unwrap().ends_with('-'), "{zl}");
    assert!(out.contains("thptest: moved zero page written: AnonHugePages "), "{out}");
    assert!(out.contains("kB, data ok"), "{out}");
    // 32 for the touch, 1 for the write to the huge zero page, 3 for the
    // mremapped ranges and 1 for the write to the moved huge zero page.
    assert_eq!(vm("thp_fault_alloc"), 37);
    assert_eq!(vm("thp_zero_page_alloc"), 1);
    assert_eq!(vm("thp_collapse_alloc"), 2);
    // The munmap split, the mprotect split, the copy on write's split and
    // the misaligned mremap's two.
    assert_eq!(vm("thp_split_pmd"), 5);
    for cp in ["touched", "split", "mprotected", "forked", "collapsed", "zero", "partial", "mremapped"] {
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

/// The hex number after `key` in `line`.
fn hex_after(line: &str, key: &str) -> u64 {
    let rest = &line[line.find(key).unwrap_or_else(|| panic!("no {key:?} in {line}")) + key.len()..];
    let word = rest.trim_start_matches("0x").split([' ', ',', ')']).next().unwrap();
    u64::from_str_radix(word, 16).unwrap_or_else(|_| panic!("{key:?} in {line}"))
}

/// Where mmap and mremap put mappings without a hint (Linux 6.13's rule
/// in `__get_unmapped_area`: private anonymous, no hint, length a
/// multiple of 2 MiB: 2 MiB-aligned). thptest's `placement` step in a
/// fresh process: a plain 4 MiB mmap is aligned and, with THP always,
/// touching it page by page takes 2 faults and the host walks 2 PMD
/// leaves there; a 3 MiB mmap is not aligned (right below it, as the
/// plain top-down search puts it); a free misaligned hint is honoured;
/// an mremap (MREMAP_MAYMOVE) growing a THP-backed 2 MiB region to 4 MiB
/// moves it to an aligned place with its PMD leaf whole (the host sees
/// the leaf at the new address and nothing at the old one,
/// `thp_split_pmd` stays 0). With `never` the addresses are aligned too
/// (Linux does not look at the mode) and every page is 4 KiB.
#[test]
fn mmap_and_mremap_align_thp_sized_anonymous_mappings() {
    const HPAGE: u64 = 2 << 20;
    let r = run("always", "8,placement", "placed");
    let out = r.all();
    let line = out.lines().find(|l| l.starts_with("thptest: placement: 4 MiB at")).unwrap_or_else(|| panic!("{out}"));
    let (a, b) = (hex_after(line, "4 MiB at "), hex_after(line, "3 MiB at "));
    assert!(line.contains("(aligned), 2 faults, AnonHugePages +4096 kB; "), "{line}");
    assert!(line.ends_with("(not aligned)"), "{line}");
    assert_eq!(a % HPAGE, 0);
    assert_eq!(b + (3 << 20), a, "the 3 MiB mapping is not where the plain top-down search puts it");
    let hint = out.lines().find(|l| l.contains("4 MiB with hint")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(hex_after(hint, "hint "), hex_after(hint, " at "), "{hint}");
    let mr = out.lines().find(|l| l.contains("mremap 2 -> 4 MiB: ")).unwrap_or_else(|| panic!("{out}"));
    let (old, new) = (hex_after(mr, "4 MiB: "), hex_after(mr, " -> 0x"));
    assert!(mr.contains("(aligned)") && mr.contains(", 1 faults before, "), "{mr}");
    assert!(mr.ends_with(", 0 bad pages"), "{mr}");
    // "AnonHugePages X -> Y kB": the move split nothing.
    let huge = &mr[mr.find("AnonHugePages ").unwrap()..];
    assert_eq!(num_after(huge, "AnonHugePages "), num_after(huge, " -> "), "{mr}");
    assert!(num_after(huge, "AnonHugePages ") >= Some(6144), "{mr}");
    assert_ne!(old, new);
    assert_eq!(new % HPAGE, 0);
    let grown = out.lines().find(|l| l.contains("the grown half: ")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(num_after(grown, "half: "), Some(1), "{grown}");
    // The host's walk at `placed`: two PMD leaves for the 4 MiB mapping,
    // the moved PMD leaf at the new address, nothing at the old one.
    let leaves = user_leaves(section(&r.stdout, "placed", "tlb"));
    let within = |lo: u64, len: u64| -> Vec<(u64, bool)> {
        leaves.iter().copied().filter(|l| (lo..lo + len).contains(&l.0)).collect()
    };
    assert_eq!(within(a, 4 << 20), vec![(a, true), (a + HPAGE, true)]);
    assert_eq!(within(new, 4 << 20), vec![(new, true)], "the moved huge page (the grown half is not touched yet)");
    assert_eq!(within(old, HPAGE), vec![], "leaves left at the old address");
    let vm = |name: &str| common::counter_after(&out, "thptest: exit status", name);
    // 2 for the 4 MiB mapping, 1 for the region before the move, 1 for
    // its grown half; no split anywhere.
    assert_eq!(vm("thp_fault_alloc"), 4);
    assert_eq!(vm("thp_split_pmd"), 0);
    verified(&r.stdout, "placed");

    let r = run("never", "8,placement", "placed");
    let out = r.all();
    let line = out.lines().find(|l| l.starts_with("thptest: placement: 4 MiB at")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("(aligned), 2 faults, AnonHugePages +0 kB; "), "{line}");
    assert!(line.ends_with("(not aligned)"), "{line}");
    let mr = out.lines().find(|l| l.contains("mremap 2 -> 4 MiB: ")).unwrap_or_else(|| panic!("{out}"));
    assert!(mr.contains("(aligned)") && mr.ends_with(", 0 bad pages"), "{mr}");
    let leaves = user_leaves(section(&r.stdout, "placed", "tlb"));
    assert!(leaves.iter().all(|l| !l.1), "a PMD leaf with THP never");
    let vm = |name: &str| common::counter_after(&out, "thptest: exit status", name);
    assert_eq!(vm("thp_fault_alloc"), 0);
}

/// The placement rule through the Linux ABI (musl's mmap and mremap), in
/// words that do not depend on the addresses: a 4 MiB mapping is
/// 2 MiB-aligned, a 3 MiB one is not (it sits right below), a free hint
/// is taken as given, a 2 MiB region that cannot grow in place moves to
/// an aligned place when grown to 4 MiB (data intact), and to an
/// unaligned one when grown to 5 MiB. Where the host runs Linux 6.13 or
/// later (the rule's version), its run must print the same.
const PLACEMENT: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#define MIB (1024UL * 1024)
#define ALIGNED(p) ((unsigned long)(p) % (2 * MIB) == 0 ? "aligned" : "not aligned")
#define RW PROT_READ | PROT_WRITE
#define ANON MAP_PRIVATE | MAP_ANONYMOUS
int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char *a = mmap(NULL, 4 * MIB, RW, ANON, -1, 0);
    char *b = mmap(NULL, 3 * MIB, RW, ANON, -1, 0);
    if (a == MAP_FAILED || b == MAP_FAILED) { printf("mmap failed\n"); return 1; }
    printf("4 MiB: %s\n3 MiB: %s%s\n", ALIGNED(a), ALIGNED(b), b + 3 * MIB == a ? ", right below" : "");
    char *hint = (char *)(((unsigned long)b & ~(2 * MIB - 1)) - 8 * MIB + 0x10000);
    char *h = mmap(hint, 4 * MIB, RW, ANON, -1, 0);
    printf("hint: %s\n", h == hint ? "taken" : "NOT TAKEN");
    char *r = mmap(NULL, 2 * MIB, RW, ANON, -1, 0);
    if (r == MAP_FAILED) { printf("mmap failed\n"); return 1; }
    /* The next 2 MiB taken (or already so): the growth must move. */
    mmap(r + 2 * MIB, 4096, PROT_READ, ANON | MAP_FIXED_NOREPLACE, -1, 0);
    for (unsigned long i = 0; i < 2 * MIB; i += 4096) r[i] = (char)(i >> 12);
    char *d = mremap(r, 2 * MIB, 4 * MIB, MREMAP_MAYMOVE);
    if (d == MAP_FAILED) { printf("mremap failed\n"); return 1; }
    int bad = 0;
    for (unsigned long i = 0; i < 2 * MIB; i += 4096) bad += d[i] != (char)(i >> 12);
    printf("mremap 2 -> 4 MiB: %s, %s, %d bad pages\n", d == r ? "in place" : "moved", ALIGNED(d), bad);
    char *e = mremap(d, 4 * MIB, 5 * MIB, MREMAP_MAYMOVE);
    if (e == MAP_FAILED) { printf("mremap failed\n"); return 1; }
    printf("mremap 4 -> 5 MiB: %s, %s\n", e == d ? "in place" : "moved", ALIGNED(e));
    return 0;
}
"#;

/// The host's Linux is 6.13 or later.
fn host_has_the_rule() -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = rel.split(['.', '-']).map(|n| n.trim().parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 13)
}

#[test]
fn placement_through_the_linux_abi_matches_linux() {
    let want = "4 MiB: aligned\n3 MiB: not aligned, right below\nhint: taken\n\
                mremap 2 -> 4 MiB: moved, aligned, 0 bad pages\nmremap 4 -> 5 MiB: moved, not aligned\n";
    let dir = common::Scratch::new("thp-placement");
    let prog = common::compile("musl-gcc", PLACEMENT, &dir.0, "placement", &["-static"]);
    if host_has_the_rule() {
        let o = std::process::Command::new(&prog).output().expect("run the program on the host");
        assert_eq!(String::from_utf8_lossy(&o.stdout), want, "the host's Linux");
    }
    let root = common::initrd_with_init(&dir.0, &prog);
    let r = common::vmm(&["run", "--timeout", "600", "--mem", "64M", "--initrd", root.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains(want), "{}", r.all());
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
    let r = common::run_c_init("thp-smaps", SMAPS, &["--timeout", "600", "--mem", "64M", "--cmdline", "hugepages=2"]);
    common::assert_stdout_has(
        &r,
        &[
            "parent: thp Rss 4096 AnonHugePages 4096 Pss 4096 THPeligible 1; hugetlb Rss 0 Private_Hugetlb 2048 Shared_Hugetlb 0 KernelPageSize 2048",
            "child: thp Rss 4096 AnonHugePages 4096 Pss 2048 THPeligible 1; hugetlb Rss 0 Private_Hugetlb 0 Shared_Hugetlb 2048 KernelPageSize 2048",
        ],
    );
}

/// /sys/kernel/mm/transparent_hugepage as Linux has it, from a static C
/// program: `enabled` reads `always [madvise] never`, a write of a mode
/// (with or without a newline) changes it and the faults that follow
/// (AnonHugePages grows under `always`, not under `never`), a bad word is
/// EINVAL; khugepaged's `max_ptes_none` reads 511 and takes 0..=511
/// (512 and non-numbers EINVAL); `hpage_pmd_size` is 2097152 and
/// read-only (EACCES for writing); the directories list their entries.
const SYSFS: &str = r#"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#define THP "/sys/kernel/mm/transparent_hugepage/"
#define MIB (1024L * 1024)
static char buf[4096];
static const char *get(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { snprintf(buf, sizeof buf, "open error %d\n", errno); return buf; }
    long n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n < 0 ? 0 : n] = 0;
    return buf;
}
static int put(const char *path, const char *v) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -errno;
    long n = write(fd, v, strlen(v));
    int r = n < 0 ? -errno : (int)n;
    close(fd);
    return r;
}
static long anon_huge_kb(void) {
    const char *m = get("/proc/meminfo");
    const char *p = strstr(m, "AnonHugePages:");
    return p ? atol(p + 14) : -1;
}
/* Touches 2 MiB at a 2 MiB boundary of a fresh mapping. */
static void touch2m(void) {
    char *m = mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *a = (char *)(((unsigned long)m + 2 * MIB - 1) & ~(2 * MIB - 1));
    for (long i = 0; i < 2 * MIB; i += 4096) a[i] = 1;
}
int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("enabled: %s", get(THP "enabled"));
    long k0 = anon_huge_kb();
    printf("write always: %d\n", put(THP "enabled", "always\n"));
    printf("enabled: %s", get(THP "enabled"));
    touch2m();
    long k1 = anon_huge_kb();
    printf("write never: %d\n", put(THP "enabled", "never"));
    printf("enabled: %s", get(THP "enabled"));
    touch2m();
    long k2 = anon_huge_kb();
    printf("AnonHugePages: %ld -> %ld (always) -> %ld (never) kB\n", k0, k1, k2);
    printf("write sometimes: %d\n", put(THP "enabled", "sometimes"));
    printf("write empty: %d\n", put(THP "enabled", "\n"));
    printf("write madvise: %d\n", put(THP "enabled", "madvise"));
    printf("enabled: %s", get(THP "enabled"));
    printf("hpage_pmd_size: %s", get(THP "hpage_pmd_size"));
    printf("write hpage_pmd_size: %d\n", put(THP "hpage_pmd_size", "4096"));
    printf("max_ptes_none: %s", get(THP "khugepaged/max_ptes_none"));
    printf("write 100: %d\n", put(THP "khugepaged/max_ptes_none", "100\n"));
    printf("max_ptes_none: %s", get(THP "khugepaged/max_ptes_none"));
    printf("write 512: %d\n", put(THP "khugepaged/max_ptes_none", "512"));
    printf("write -1: %d\n", put(THP "khugepaged/max_ptes_none", "-1"));
    printf("write 12x: %d\n", put(THP "khugepaged/max_ptes_none", "12x"));
    printf("max_ptes_none: %s", get(THP "khugepaged/max_ptes_none"));
    printf("max_ptes_shared: %s", get(THP "khugepaged/max_ptes_shared"));
    printf("missing: %s", get(THP "defragment"));
    const char *dirs[] = {"/sys", "/sys/kernel/mm", THP, THP "khugepaged"};
    for (int d = 0; d < 4; d++) {
        DIR *dir = opendir(dirs[d]);
        printf("ls %s:", dirs[d]);
        struct dirent *e;
        while (dir && (e = readdir(dir)))
            if (e->d_name[0] != '.') printf(" %s", e->d_name);
        printf("\n");
        if (dir) closedir(dir);
    }
    return 0;
}
"#;

#[test]
fn sysfs_sets_the_thp_mode_as_linux() {
    let r = common::run_c_init("thp-sysfs", SYSFS, &["--timeout", "600", "--mem", "64M"]);
    let want = [
        "enabled: always [madvise] never\n",
        "write always: 7\nenabled: [always] madvise never\n",
        "write never: 5\nenabled: always madvise [never]\n",
        "AnonHugePages: 0 -> 2048 (always) -> 2048 (never) kB\n",
        "write sometimes: -22\nwrite empty: -22\nwrite madvise: 7\nenabled: always [madvise] never\n",
        "hpage_pmd_size: 2097152\nwrite hpage_pmd_size: -13\n",
        "max_ptes_none: 511\nwrite 100: 4\nmax_ptes_none: 100\n",
        "write 512: -22\nwrite -1: -22\nwrite 12x: -22\nmax_ptes_none: 100\n",
        "max_ptes_shared: 256\n",
        "missing: open error 2\n",
        "ls /sys: devices fs kernel\n",
        "ls /sys/kernel/mm: transparent_hugepage hugepages\n",
        "ls /sys/kernel/mm/transparent_hugepage/: enabled hpage_pmd_size khugepaged\n",
        "ls /sys/kernel/mm/transparent_hugepage/khugepaged: max_ptes_none max_ptes_shared\n",
    ];
    common::assert_stdout_has(&r, &want);
}

/// `madvise(MADV_FREE)` over transparent huge pages, from a static C
/// program under `transparent_hugepage=always`: a 4 MiB mapping (2 MiB
/// aligned by the placement rule) faulted as 2 THPs; MADV_FREE of its
/// middle 2 MiB covers each THP in part, so both are split as Linux
/// splits them (thp_split_pmd +2, AnonHugePages 4096 -> 0 kB) and the 512
/// pages advised become lazily freed (pglazyfree +512, smaps LazyFree
/// 2048 kB); writing 1 MiB of them again takes 256 back (LazyFree 1024
/// kB); every byte still reads as written (nothing was reclaimed).
const MADV_FREE_THP: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#define MIB (1024L * 1024)
static char buf[65536];
static long field(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    long n = f ? (long)fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    long sum = 0;
    for (char *p = strstr(buf, key); p; p = strstr(p + 1, key)) sum += atol(p + strlen(key));
    return sum;
}
int main(void) {
    char *m = mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long i = 0; i < 4 * MIB; i += 4096) m[i] = (char)(i / 4096) | 1;
    long split0 = field("/proc/vmstat", "thp_split_pmd "), lazy0 = field("/proc/vmstat", "pglazyfree ");
    printf("aligned %d, AnonHugePages %ld kB\n", ((unsigned long)m & (2 * MIB - 1)) == 0,
           field("/proc/meminfo", "AnonHugePages:"));
    int r = madvise(m + MIB, 2 * MIB, MADV_FREE);
    printf("madvise %d: thp_split_pmd +%ld, pglazyfree +%ld, AnonHugePages %ld kB, LazyFree %ld kB\n", r,
           field("/proc/vmstat", "thp_split_pmd ") - split0, field("/proc/vmstat", "pglazyfree ") - lazy0,
           field("/proc/meminfo", "AnonHugePages:"), field("/proc/self/smaps", "LazyFree:"));
    for (long i = MIB; i < 2 * MIB; i += 4096) m[i] = (char)(i / 4096) | 1;
    printf("rewritten: LazyFree %ld kB\n", field("/proc/self/smaps", "LazyFree:"));
    int bad = 0;
    for (long i = 0; i < 4 * MIB; i += 4096) bad += m[i] != ((char)(i / 4096) | 1);
    printf("bad %d\n", bad);
    return 0;
}
"#;

#[test]
fn madv_free_splits_transparent_huge_pages_and_marks_their_pages() {
    let r = common::run_c_init(
        "thp-madv-free",
        MADV_FREE_THP,
        &["--timeout", "600", "--mem", "64M", "--cmdline", "transparent_hugepage=always"],
    );
    common::assert_stdout_has(
        &r,
        &[
            "aligned 1, AnonHugePages 4096 kB\n",
            "madvise 0: thp_split_pmd +2, pglazyfree +512, AnonHugePages 0 kB, LazyFree 2048 kB\n",
            "rewritten: LazyFree 1024 kB\n",
            "bad 0\n",
        ],
    );
}
