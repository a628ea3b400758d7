//! Swap under real memory pressure (issue 13): the real VMM with `--swap`
//! on a temp file, the real guest reclaiming anonymous pages to it through
//! its LRU lists, reverse map, swap cache and virtio-blk driver, and the
//! host checking at checkpoints taken under pressure what the guest's
//! page tables, swap map, swap cache and LRU lists say, down to the
//! contents of every slot in the swap file (`--verify swap,lru,refcount`).
//!
//! Sizes are small (a 12 MiB guest) because ring 0 is emulated here: each
//! swapped page costs milliseconds of guest kernel time.

mod common;
use common::*;

/// The guest's RAM in these tests, and the swaptest sizes beyond it.
const MEM: &str = "12M";
const MEM_BYTES: u64 = 12 << 20;

/// Boots a 12 MiB guest with swap (`swap_opts` after the path) running
/// `swaptest=ARG`, verifying at its checkpoints.
fn swaptest(swap: &TempFile, swap_opts: &str, arg: &str) -> Run {
    let r = vmm(&[
        "run",
        "--timeout",
        "900",
        "--mem",
        MEM,
        "--swap",
        &format!("{},size=32M{swap_opts}", swap.path()),
        "--cmdline",
        &format!("swaptest={arg}"),
        "--verify=swap,lru,refcount,cow-ro,isolation",
        "--inspect-at",
        "swapped,forked",
        "--inspect",
        "swaps,free,vmas",
    ]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("swaptest: exit status 0x0"), "{}", r.all());
    r
}

/// The number after `key ` in `line`.
fn field(line: &str, key: &str) -> u64 {
    let at = line.find(&format!("{key} ")).unwrap_or_else(|| panic!("{key} missing in {line}")) + key.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad {key} in {line}"))
}

/// The first line starting with `prefix`.
fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no '{prefix}' line:\n{out}"))
}

/// The guest's final vmstat counter `name` (printed after the program).
fn counter(out: &str, name: &str) -> u64 {
    counter_after(out, "swaptest: exit status", name)
}

/// The verify line of `check` at checkpoint `cp`, which must say ok.
fn verified<'a>(out: &'a str, cp: &str, check: &str) -> &'a str {
    let at = out.find(&format!("--- checkpoint '{cp}': verify ---")).unwrap_or_else(|| panic!("no {cp}:\n{out}"));
    let l = out[at..]
        .lines()
        .find(|l| l.starts_with(&format!("verify {check}: ")))
        .unwrap_or_else(|| panic!("no verify {check} at {cp}:\n{out}"));
    assert!(l.starts_with(&format!("verify {check}: ok (")), "{check} at {cp}: {l}\n{out}");
    l
}

/// (slots in use, slots read back) from a `verify swap` line, which must
/// say every slot read back matched.
fn swap_slots(l: &str) -> (u64, u64) {
    let in_use = l.split(" against ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok());
    let read: u64 = l
        .split("; ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{l}"));
    assert!(l.ends_with(&format!(", {read} matched)")), "every slot read back must match: {l}");
    (in_use.unwrap_or_else(|| panic!("{l}")), read)
}

#[test]
fn a_working_set_larger_than_ram_swaps_out_and_back_intact() {
    let swap = TempFile::absent("big");
    let pages = 3300u64;
    assert!(pages * 4096 > MEM_BYTES, "the working set must exceed RAM");
    // `yield`: the program lets kswapd run between pages, as a timer
    // tick would, so background and direct reclaim both take part.
    let r = swaptest(&swap, "", &format!("{pages},yield"));
    let out = &r.stdout;
    let l = line(out, "swaptest[");
    assert!(l.contains(&format!("{pages} pages written and read back, 0 bad words")), "{l}");
    let (pswpout, pswpin) = (counter(out, "pswpout"), counter(out, "pswpin"));
    assert!(pswpout >= 500 && pswpin >= 500, "pressure must swap both ways: out {pswpout}, in {pswpin}\n{out}");
    // The program's own reading of /proc/vmstat (ulib::vmstat) after its
    // pass: both already counting, and no more than the kernel's final.
    let seen = |k: &str| -> u64 {
        let w = l.split(&format!(" {k} ")).nth(1).unwrap_or_else(|| panic!("no {k} in {l}"));
        w.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    assert!((1..=pswpin).contains(&seen("pswpin")), "{l}");
    assert!((1..=pswpout).contains(&seen("pswpout")), "{l}");
    // The guest's counts against the device's: each swap-out one page
    // written, each swap-in one page read (readahead included).
    let all = r.all();
    let dev = line(&all, "vmm: virtio-blk:");
    let leading = |s: &str| -> u64 { s.trim().split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX) };
    assert_eq!(leading(&dev["vmm: virtio-blk:".len()..]), pswpin, "reads: {dev}");
    assert_eq!(dev.split(", ").nth(1).map(leading), Some(pswpout), "writes: {dev}");
    let sw = line(out, "swap: cache_hits");
    assert_eq!(field(sw, "checksum_errors"), 0, "{sw}");
    assert_eq!(field(sw, "write_errors"), 0, "{sw}");
    // Bulk swap-out is batched: at least 16 pages per device submission
    // (one queue notify, the one VM exit of a batch).
    let batches = field(sw, "write_batches");
    assert!(batches > 0 && pswpout / batches >= 16, "{pswpout} pages in {batches} batches: {sw}");
    // kswapd and direct reclaim both reclaimed; scanning found victims.
    assert!(counter(out, "pgsteal_kswapd") > 0 && counter(out, "kswapd_wake") > 0, "{out}");
    assert!(counter(out, "pgsteal_direct") > 0 && counter(out, "allocstall") > 0, "{out}");
    assert!(counter(out, "pgscan_direct") + counter(out, "pgscan_kswapd") >= pswpout, "{out}");
    // The kernel's count covers the program's (and any fault after its
    // report, on the way out).
    assert!(counter(out, "pgmajfault") >= field(l, "maj_faults"), "{out}");
    // At the checkpoint, under pressure: every swap PTE names a slot whose
    // count and cache bit agree, every slot in use holds what the guest
    // wrote (read from the file by the host), the LRU lists hold exactly
    // the user pages, refcounts count the swap cache.
    let v = verified(out, "swapped", "swap");
    let (in_use, read_back) = swap_slots(v);
    assert!(in_use >= 500, "{v}");
    assert_eq!(read_back, in_use, "every slot in use was read back: {v}");
    verified(out, "swapped", "lru");
    verified(out, "swapped", "refcount");
    // The host's swaps and free views agree with the slots in use.
    let swaps_at = out.find("--- checkpoint 'swapped': swaps ---").expect("swaps view");
    let dev_line = out[swaps_at..].lines().find(|l| l.starts_with("/dev/vda")).expect("the area");
    let used_kb: u64 = dev_line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(used_kb >= in_use * 4, "{dev_line} vs {v}");
    let free_at = out.find("--- checkpoint 'swapped': free ---").expect("free view");
    let swap_line = out[free_at..].lines().find(|l| l.starts_with("Swap:")).expect("free's swap line");
    assert_eq!(swap_line.split_whitespace().nth(2), Some(used_kb.to_string().as_str()), "{swap_line}");
    // The vmas view's Swap (swap PTEs found walking each VMA) is the
    // verifier's count of swap PTEs, 4 kB each.
    let ptes: u64 = v["verify swap: ok (".len()..].split(' ').next().and_then(|n| n.parse().ok()).expect("swap PTEs");
    let vmas_at = out.find("--- checkpoint 'swapped': vmas ---").expect("vmas view");
    let proc_line =
        out[vmas_at..].lines().find(|l| l.starts_with("pid ") && l.contains("(swaptest)")).expect("swaptest");
    assert!(proc_line.ends_with(&format!("Swap {} kB", ptes * 4)), "{proc_line} vs {v}");
}

#[test]
fn fork_under_pressure_shares_slots_and_cow_copies_only_written_pages() {
    let swap = TempFile::absent("fork");
    let (pages, stride) = (2900u64, 4u64);
    let r = swaptest(&swap, "", &format!("{pages},fork,{stride}"));
    let out = &r.stdout;
    // Right after fork, before either side touched anything: every slot is
    // named by both processes' swap PTEs (one slot, count 2).
    let v = verified(out, "forked", "swap");
    let ptes: u64 = v.split("ok (").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    let (in_use, read_back) = swap_slots(v);
    assert!(in_use > 0 && ptes == 2 * in_use, "each slot shared by parent and child: {v}");
    assert_eq!(read_back, in_use, "{v}");
    assert!(v.contains(" in 2 processes "), "{v}");
    verified(out, "forked", "refcount");
    verified(out, "forked", "cow-ro");
    verified(out, "forked", "lru");
    // The child wrote every stride-th page: exactly those were copied, and
    // both sides read their own data back intact.
    let child = out.lines().find(|l| l.contains("child read")).unwrap_or_else(|| panic!("{out}"));
    let written = pages.div_ceil(stride);
    assert!(child.contains(&format!("wrote {written}, 0 bad words; cow_copies {written} ")), "{child}");
    let parent = line(out, "swaptest[2]: child exited 0x0; parent re-read");
    assert!(parent.contains(&format!("re-read {pages} pages, 0 bad words")), "{parent}");
}

#[test]
fn failed_swap_writes_keep_pages_resident_and_lose_nothing() {
    let swap = TempFile::absent("fail");
    // The first 64 page writes fail (fault injection in the VMM's device).
    let r = swaptest(&swap, ",fail_writes=1-64", "3300");
    let out = &r.stdout;
    let l = line(out, "swaptest[");
    assert!(l.contains("3300 pages written and read back, 0 bad words"), "{l}");
    let sw = line(out, "swap: cache_hits");
    assert_eq!(field(sw, "write_errors"), 64, "the guest saw each failure: {sw}");
    assert_eq!(field(sw, "checksum_errors"), 0, "{sw}");
    let all = r.all();
    let dev = line(&all, "vmm: virtio-blk:");
    assert!(dev.contains(" 64 errors"), "{dev}");
    assert!(counter(out, "pswpout") >= 500, "swap-out went on after the failures: {out}");
    let v = verified(out, "swapped", "swap");
    let (in_use, read_back) = swap_slots(v);
    assert_eq!(read_back, in_use, "{v}");
    verified(out, "swapped", "refcount");
    verified(out, "swapped", "lru");
}

#[test]
fn swap_options_are_checked_before_boot() {
    let swap = TempFile::absent("opts");
    for bad in [",fail_writes=0-3", ",fail_writes=5-2", ",fail_writes=x", ",sizes=1M"] {
        let r = vmm(&["run", "--timeout", "60", "--swap", &format!("{}{bad}", swap.path())]);
        assert_eq!(r.status, 2, "{bad}: {}", r.all());
        assert!(r.stderr.contains("is not a swap option"), "{bad}: {}", r.all());
        assert!(!r.stdout.contains("booting"), "{bad}: nothing may boot: {}", r.all());
    }
}

#[test]
fn when_swap_is_full_the_oom_killer_runs_and_every_slot_comes_back() {
    let swap = TempFile::absent("full");
    // 13 MiB of data, 12 MiB of RAM and 2 MiB of swap: swap fills, reclaim
    // has nowhere to put anon pages, the OOM killer takes the program.
    let r = vmm(&[
        "run",
        "--timeout",
        "600",
        "--mem",
        MEM,
        "--swap",
        &format!("{},size=2M", swap.path()),
        "--cmdline",
        "swaptest=3300",
    ]);
    let out = &r.stdout;
    assert_eq!(r.status, 1, "the program was killed, so the switch fails: {}", r.all());
    assert!(out.contains("Out of memory: Killed process 2 (swaptest) total-vm:"), "{out}");
    // Linux's memory summary before the kill shows the full swap area.
    assert!(out.contains("Free swap  = 0kB") && out.contains("Total swap = 2044kB"), "{out}");
    assert!(out.contains("swaptest: exit status 0x9"), "killed by SIGKILL: {out}");
    assert_eq!(counter(out, "oom_kill"), 1, "{out}");
    // Its exit gave every slot back.
    let area = out.lines().rfind(|l| l.starts_with("/dev/vda")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(area.split_whitespace().nth(3), Some("0"), "no slot in use after the victim's exit: {area}");
}

/// `madvise(MADV_PAGEOUT)` and `MADV_COLD` from a static C program: 64
/// pages written with a pattern, a forked child holding 8 of them shared.
/// PAGEOUT writes exactly the 56 pages the process alone maps to swap
/// (pswpout +56, mincore says they left, smaps' Swap grows by 224 kB),
/// the 8 shared ones stay; the host's `--verify swap` checks every slot
/// against the pages' contents at the checkpoint taken right after; the
/// data reads back intact (pswpin). COLD keeps pages resident but moves
/// the active ones (refaulted workingset pages) to the inactive list, one
/// pgdeactivate each. Bad ranges fail as Linux's.
const PAGEOUT: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#ifndef MADV_COLD
#define MADV_COLD 20
#define MADV_PAGEOUT 21
#endif
#define N 64
static char text[16384];
static long field(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = 0;
    char *p = strstr(text, key);
    return p ? atol(p + strlen(key)) : -1;
}
static int resident(char *p, int n) {
    unsigned char v[N];
    if (mincore(p, n * 4096L, v)) return -1;
    int r = 0;
    for (int i = 0; i < n; i++) r += v[i] & 1;
    return r;
}
int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char *p = mmap(NULL, N * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long i = 0; i < N * 4096L; i += 8) *(long *)(p + i) = i * 0x9e3779b97f4a7c15L + 7;
    int pipefd[2];
    pipe(pipefd);
    pid_t child = fork();
    if (child == 0) {
        /* Shares the first 8 pages' frames (COW, unwritten) until told. */
        char c;
        read(pipefd[0], &c, 1);
        _exit(0);
    }
    /* The parent writes pages 8.. again: its own copies, mapped once. */
    for (long i = 8 * 4096L; i < N * 4096L; i += 8) *(long *)(p + i) = i * 0x9e3779b97f4a7c15L + 7;
    printf("resident before: %d of %d\n", resident(p, N), N);
    long out0 = field("/proc/vmstat", "pswpout "), swap0 = field("/proc/self/status", "VmSwap:");
    int r = madvise(p, N * 4096L, MADV_PAGEOUT);
    long out1 = field("/proc/vmstat", "pswpout "), swap1 = field("/proc/self/status", "VmSwap:");
    printf("pageout: ret %d, pswpout +%ld, VmSwap +%ld kB, resident after: %d (shared kept: %d)\n",
           r, out1 - out0, swap1 - swap0, resident(p, N), resident(p, 8));
    syscall(503, "paged-out", 9);
    long in0 = field("/proc/vmstat", "pswpin "), bad = 0;
    for (long i = 0; i < N * 4096L; i += 8) bad += *(long *)(p + i) != i * 0x9e3779b97f4a7c15L + 7;
    printf("read back: %ld bad words, pswpin +%ld, resident %d\n", bad, field("/proc/vmstat", "pswpin ") - in0, resident(p, N));
    write(pipefd[1], "x", 1);
    waitpid(child, NULL, 0);
    /* Refaulted pages of the workingset came back on the active list. */
    long act0 = field("/proc/meminfo", "Active(anon):"), deact0 = field("/proc/vmstat", "pgdeactivate ");
    int c = madvise(p, N * 4096L, MADV_COLD);
    long act1 = field("/proc/meminfo", "Active(anon):"), deact1 = field("/proc/vmstat", "pgdeactivate ");
    printf("cold: ret %d, resident %d, Active(anon) %s -> %ld kB, pgdeactivate +%ld pages %s\n", c, resident(p, N),
           act0 > 0 ? "some" : "none", act1, deact1 - deact0, (deact1 - deact0) * 4 == act0 ? "= the active ones" : "!= the active ones");
    printf("unaligned: %d, unmapped: %d\n", madvise(p + 1, 4096, MADV_PAGEOUT) == -1,
           (munmap(p + 32 * 4096L, 4096), madvise(p, N * 4096L, MADV_PAGEOUT) == -1));
    return bad != 0;
}
"#;

#[test]
fn madvise_pageout_swaps_exactly_the_pages_the_process_alone_maps() {
    let dir = Scratch::new("swap-pageout");
    let prog = compile("musl-gcc", PAGEOUT, &dir.0, "pageout", &["-static"]);
    let root = initrd_with_init(&dir.0, &prog);
    let swap = TempFile::absent("pageout-swap");
    let swap_arg = format!("{},size=4M", swap.path());
    let r = vmm(&[
        "run",
        "--timeout",
        "600",
        "--mem",
        "32M",
        "--initrd",
        root.to_str().unwrap(),
        "--swap",
        &swap_arg,
        "--inspect-at",
        "paged-out",
        "--verify=swap,lru,refcount",
    ]);
    let out = r.all();
    assert_eq!(r.status, 0, "{out}");
    for want in [
        "resident before: 64 of 64",
        "pageout: ret 0, pswpout +56, VmSwap +224 kB, resident after: 8 (shared kept: 8)",
        "read back: 0 bad words, pswpin +56, resident 64",
        "cold: ret 0, resident 64, Active(anon) some -> 0 kB, pgdeactivate +",
        "pages = the active ones",
        "unaligned: 1, unmapped: 1",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?}:\n{out}");
    }
    let v = verified(&r.stdout, "paged-out", "swap");
    assert!(v.contains("56"), "the 56 slots checked against their pages: {v}\n{out}");
    verified(&r.stdout, "paged-out", "lru");
    verified(&r.stdout, "paged-out", "refcount");
}

/// `madvise(MADV_FREE)`, Linux's lazy free, from a static C program with a
/// swap device attached: 64 written pages are marked (pglazyfree +64,
/// smaps' LazyFree 256 kB), the first 32 are written again (LazyFree 128
/// kB: dirty PTEs), then MADV_PAGEOUT reclaims the range: the 32 clean
/// ones are discarded (pglazyfreed +32, not resident) and none goes to
/// swap (pswpout +0: the written ones became swap-backed again and stay,
/// as Linux's `try_to_unmap_one` keeps a redirtied page); the discarded
/// half reads back zeros, the written half its new data. The host's
/// `--verify swap,lru,refcount` checks the lists and counts at a
/// checkpoint right after. Shared anonymous memory is EINVAL, as Linux.
const LAZYFREE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#define N 64
static char text[65536];
static long field(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = 0;
    char *p = strstr(text, key);
    return p ? atol(p + strlen(key)) : -1;
}
/* smaps' LazyFree summed over every mapping. */
static long lazyfree_kb(void) {
    field("/proc/self/smaps", "");
    long kb = 0;
    for (char *p = strstr(text, "LazyFree:"); p; p = strstr(p + 1, "LazyFree:")) kb += atol(p + 9);
    return kb;
}
static int resident(char *p, int n) {
    unsigned char v[N];
    if (mincore(p, n * 4096L, v)) return -1;
    int r = 0;
    for (int i = 0; i < n; i++) r += v[i] & 1;
    return r;
}
int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char *p = mmap(NULL, N * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long i = 0; i < N * 4096L; i += 8) *(long *)(p + i) = i * 0x9e3779b97f4a7c15L + 7;
    long lf0 = field("/proc/vmstat", "pglazyfree ");
    int r = madvise(p, N * 4096L, MADV_FREE);
    printf("free: ret %d, pglazyfree +%ld, LazyFree %ld kB, resident %d\n", r,
           field("/proc/vmstat", "pglazyfree ") - lf0, lazyfree_kb(), resident(p, N));
    for (long i = 0; i < N / 2 * 4096L; i += 8) *(long *)(p + i) = i * 3 + 1;
    printf("half written again: LazyFree %ld kB\n", lazyfree_kb());
    long out0 = field("/proc/vmstat", "pswpout "), freed0 = field("/proc/vmstat", "pglazyfreed ");
    int po = madvise(p, N * 4096L, MADV_PAGEOUT);
    printf("pageout: ret %d, pswpout +%ld, pglazyfreed +%ld, resident %d (written half %d)\n", po,
           field("/proc/vmstat", "pswpout ") - out0, field("/proc/vmstat", "pglazyfreed ") - freed0,
           resident(p, N), resident(p, N / 2));
    syscall(503, "lazy-freed", 10);
    long bad = 0, nonzero = 0;
    for (long i = 0; i < N / 2 * 4096L; i += 8) bad += *(long *)(p + i) != i * 3 + 1;
    for (long i = N / 2 * 4096L; i < N * 4096L; i += 8) nonzero += *(long *)(p + i) != 0;
    printf("read back: written half %ld bad words, discarded half %ld non-zero words\n", bad, nonzero);
    char *s = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    printf("shared anon: %d\n", madvise(s, 4096, MADV_FREE) == -1 ? -1 : 0);
    return bad != 0 || nonzero != 0;
}
"#;

#[test]
fn madvise_free_discards_clean_pages_and_keeps_the_ones_written_again() {
    let dir = Scratch::new("swap-lazyfree");
    let prog = compile("musl-gcc", LAZYFREE, &dir.0, "lazyfree", &["-static"]);
    let root = initrd_with_init(&dir.0, &prog);
    let swap = TempFile::absent("lazyfree-swap");
    let swap_arg = format!("{},size=4M", swap.path());
    let r = vmm(&[
        "run",
        "--timeout",
        "600",
        "--mem",
        "32M",
        "--initrd",
        root.to_str().unwrap(),
        "--swap",
        &swap_arg,
        "--inspect-at",
        "lazy-freed",
        "--verify=swap,lru,refcount",
    ]);
    let out = r.all();
    assert_eq!(r.status, 0, "{out}");
    for want in [
        "free: ret 0, pglazyfree +64, LazyFree 256 kB, resident 64",
        "half written again: LazyFree 128 kB",
        "pageout: ret 0, pswpout +0, pglazyfreed +32, resident 32 (written half 32)",
        "read back: written half 0 bad words, discarded half 0 non-zero words",
        "shared anon: -1",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?}:\n{out}");
    }
    verified(&r.stdout, "lazy-freed", "lru");
    verified(&r.stdout, "lazy-freed", "refcount");
    verified(&r.stdout, "lazy-freed", "swap");
}

/// `madvise(MADV_WILLNEED)` from a static C program with swap attached:
/// 64 pages paged out (MADV_PAGEOUT), then WILLNEED reads them back into
/// the swap cache (pswpin +64) without mapping them (mincore 0), so
/// touching them all costs no major fault (getrusage's ru_majflt +0), the
/// data intact; a control range paged out and touched without WILLNEED
/// costs major faults (one per readahead cluster). On a file mapping
/// WILLNEED reads the file's pages into the page cache (meminfo's Cached
/// +256 kB for a 64-page initrd file never read before; again: +0).
const WILLNEED: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#define N 64
static char text[16384];
static long field(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = 0;
    char *p = strstr(text, key);
    return p ? atol(p + strlen(key)) : -1;
}
static long majflt(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_majflt;
}
static int resident(char *p) {
    unsigned char v[N];
    if (mincore(p, N * 4096L, v)) return -1;
    int r = 0;
    for (int i = 0; i < N; i++) r += v[i] & 1;
    return r;
}
static char *paged_out(void) {
    char *p = mmap(NULL, N * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long i = 0; i < N * 4096L; i += 8) *(long *)(p + i) = i * 0x9e3779b97f4a7c15L + 7;
    if (madvise(p, N * 4096L, MADV_PAGEOUT) || resident(p) != 0) printf("pageout failed: resident %d\n", resident(p));
    return p;
}
static long touch(char *p) {
    long bad = 0;
    for (long i = 0; i < N * 4096L; i += 8) bad += *(long *)(p + i) != i * 0x9e3779b97f4a7c15L + 7;
    return bad;
}
int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char *c = paged_out();
    long m0 = majflt();
    long bad = touch(c);
    printf("control: major faults %s, %ld bad words\n", majflt() > m0 ? "some" : "none", bad);
    char *p = paged_out();
    long in0 = field("/proc/vmstat", "pswpin ");
    int r = madvise(p, N * 4096L, MADV_WILLNEED);
    printf("willneed: ret %d, pswpin +%ld, resident %d\n", r, field("/proc/vmstat", "pswpin ") - in0, resident(p));
    m0 = majflt();
    bad = touch(p);
    printf("touched: major faults +%ld, %ld bad words, resident %d\n", majflt() - m0, bad, resident(p));
    int fd = open("/data", O_RDONLY);
    char *f = mmap(NULL, N * 4096L, PROT_READ, MAP_SHARED, fd, 0);
    long c0 = field("/proc/meminfo", "Cached:");
    int fr = madvise(f, N * 4096L, MADV_WILLNEED);
    long c1 = field("/proc/meminfo", "Cached:");
    madvise(f, N * 4096L, MADV_WILLNEED);
    long c2 = field("/proc/meminfo", "Cached:");
    printf("file: ret %d, Cached +%ld kB, again +%ld kB, first byte %d\n", fr, c1 - c0, c2 - c1, f[0]);
    return bad != 0;
}
"#;

#[test]
fn madvise_willneed_reads_swapped_pages_back_so_touches_are_minor_faults() {
    let dir = Scratch::new("swap-willneed");
    let prog = compile("musl-gcc", WILLNEED, &dir.0, "willneed", &["-static"]);
    let root = initrd_with_init(&dir.0, &prog);
    std::fs::write(root.join("data"), vec![7u8; 64 * 4096]).unwrap();
    let swap = TempFile::absent("willneed-swap");
    let swap_arg = format!("{},size=4M", swap.path());
    let r = vmm(&["run", "--timeout", "600", "--mem", "32M", "--initrd", root.to_str().unwrap(), "--swap", &swap_arg]);
    let out = r.all();
    assert_eq!(r.status, 0, "{out}");
    for want in [
        "control: major faults some, 0 bad words",
        "willneed: ret 0, pswpin +64, resident 0",
        "touched: major faults +0, 0 bad words, resident 64",
        "file: ret 0, Cached +256 kB, again +0 kB, first byte 7",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?}:\n{out}");
    }
}
