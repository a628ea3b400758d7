//! munmap frees the page tables it no longer needs (Linux's
//! `free_pgtables`): a program maps, touches and unmaps 64 regions of
//! 64 KiB, each in its own 512 GiB (so each needs its own PUD, PMD and
//! page table), and reads its VmPTE (/proc/self/status) on the way: +768
//! kB with the regions mapped, back to where it started once they are
//! unmapped. Then the floor and the ceiling: a region whose neighbour
//! still uses its page table keeps it, and each later unmap frees exactly
//! the levels no mapping left can use (1, 2, then 3 tables); an mremap
//! move frees the tables of the old place; 64 MiB touched once per 2 MiB
//! free their 34 tables (more than one gather's worth). The same binary prints the
//! same lines on the host's Linux, whose VmPTE counts PTE, PMD and PUD
//! tables the same way. The host checks the guest at checkpoints after
//! the unmaps with `--verify=all` (no frame both free and mapped, every
//! table reachable owned `PageTable`, refcounts...) and sees the guest's
//! page-table pages return to their count before the maps.

mod common;

use common::{boot, compile, Scratch};
use std::process::Command;

const PROG: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define REGIONS 64
#define LEN (64 * 1024UL)
#define PGDIR (1UL << 39)
#define GIB (1UL << 30)
#define PMD (2UL << 20)

/* VmPTE in kB (read with open/read into a static buffer: stdio's buffer
 * could itself map memory between two readings). */
static long vmpte(void) {
    static char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY);
    long n = 0, r;
    while (fd >= 0 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
        n += r;
    close(fd);
    buf[n] = 0;
    char *p = strstr(buf, "VmPTE:");
    return p ? strtol(p + 6, 0, 10) : -1;
}

/* A checkpoint for the host (system call 503; ENOSYS on Linux). */
static void mark(const char *name) { syscall(503, name, strlen(name)); }

static char *map_at(unsigned long a) {
    char *p = mmap((void *)a, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != (char *)a) {
        printf("pgt: mmap at %#lx failed\n", a);
        exit(2);
    }
    p[0] = 1;
    p[LEN - 1] = 2;
    return p;
}

static void unmap(char *p) {
    if (munmap(p, LEN)) {
        printf("pgt: munmap %p failed\n", (void *)p);
        exit(2);
    }
}

int main(void) {
    /* Unbuffered: no stdio buffer is allocated (perhaps with a new page
     * table for the heap) between two readings. */
    setvbuf(stdout, 0, _IONBF, 0);
    long v0 = vmpte();
    mark("pgt-start");
    /* Region i in PGD entry i + 1, at a different GiB in each. */
    char *r[REGIONS];
    for (int i = 0; i < REGIONS; i++)
        r[i] = map_at((i + 1) * PGDIR + i * GIB);
    long v1 = vmpte();
    printf("pgt: %d regions mapped: %+ld kB\n", REGIONS, v1 - v0);
    mark("pgt-mapped");
    for (int i = 0; i < REGIONS; i++)
        unmap(r[i]);
    long v2 = vmpte();
    printf("pgt: %d regions unmapped: %+ld kB from the start\n", REGIONS, v2 - v0);
    mark("pgt-unmapped");

    /* Floor and ceiling. a and b share a page table, c only the PMD table
     * (another 2 MiB), d only the PUD table (another GiB). */
    unsigned long x = 70 * PGDIR + 5 * GIB + 7 * PMD;
    char *a = map_at(x), *b = map_at(x + 2 * LEN), *c = map_at(x + 4 * PMD), *d = map_at(x + 3 * GIB);
    b[1] = 42;
    long w = vmpte();
    printf("pgt: 4 neighbours mapped: %+ld kB\n", w - v2);
    unmap(a);
    long w1 = vmpte();
    printf("pgt: a unmapped, b shares its page table: %+ld kB, b reads %d\n", w1 - w, b[1]);
    unmap(b);
    long w2 = vmpte();
    printf("pgt: b unmapped, c shares the PMD table: %+ld kB\n", w2 - w1);
    unmap(c);
    long w3 = vmpte();
    printf("pgt: c unmapped, d shares the PUD table: %+ld kB\n", w3 - w2);
    unmap(d);
    long w4 = vmpte();
    printf("pgt: d unmapped: %+ld kB\n", w4 - w3);

    /* mremap moves the region 512 GiB away: the old place's tables go. */
    char *e = map_at(80 * PGDIR);
    long m0 = vmpte();
    char *f = mremap(e, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)(81 * PGDIR));
    long m1 = vmpte();
    printf("pgt: mremap moved 512 GiB away: %+ld kB, reads %d %d\n", m1 - m0, f[0], f[LEN - 1]);
    unmap(f);

    /* 64 MiB touched once per 2 MiB (no THP): 32 page tables, a PMD and a
     * PUD table, more than one gather holds before it flushes. */
    unsigned long big = 64UL << 20;
    long g0 = vmpte();
    char *g = mmap((void *)(90 * PGDIR), big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (g != (char *)(90 * PGDIR) || madvise(g, big, MADV_NOHUGEPAGE)) {
        printf("pgt: the 64 MiB mapping failed\n");
        return 2;
    }
    for (unsigned long o = 0; o < big; o += PMD)
        g[o] = 1;
    long b0 = vmpte();
    munmap(g, big);
    long b1 = vmpte();
    printf("pgt: 64 MiB touched: %+ld kB, unmapped: %+ld kB\n", b0 - g0, b1 - b0);
    long v3 = vmpte();
    printf("pgt: all unmapped: %+ld kB from the start\n", v3 - v0);
    mark("pgt-end");
    return 0;
}
"#;

/// What the program prints, on the guest and on Linux alike.
const EXPECTED: &[&str] = &[
    "pgt: 64 regions mapped: +768 kB",
    "pgt: 64 regions unmapped: +0 kB from the start",
    "pgt: 4 neighbours mapped: +24 kB",
    "pgt: a unmapped, b shares its page table: +0 kB, b reads 42",
    "pgt: b unmapped, c shares the PMD table: -4 kB",
    "pgt: c unmapped, d shares the PUD table: -8 kB",
    "pgt: d unmapped: -12 kB",
    "pgt: mremap moved 512 GiB away: +0 kB, reads 1 2",
    "pgt: 64 MiB touched: +136 kB, unmapped: -136 kB",
    "pgt: all unmapped: +0 kB from the start",
];

fn pgt_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("pgt: ")).collect()
}

/// The text of view `view` at checkpoint `cp`.
fn section<'a>(out: &'a str, cp: &str, view: &str) -> &'a str {
    let head = format!("--- checkpoint '{cp}': {view} ---");
    let start = out.find(&head).unwrap_or_else(|| panic!("no {view} at {cp}:\n{out}"));
    let rest = &out[start + head.len()..];
    &rest[..rest.find("--- checkpoint").unwrap_or(rest.len())]
}

/// The host's meminfo `PageTables` (kB) at `cp`: page-table pages as the
/// guest's page descriptors name them.
fn page_tables_kb(out: &str, cp: &str) -> u64 {
    let s = section(out, cp, "meminfo");
    let l = s.lines().find(|l| l.starts_with("PageTables:")).unwrap_or_else(|| panic!("{s}"));
    l.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{l}"))
}

/// The table pages the host's pt-owner check walked under every root at
/// `cp`.
fn walked_tables(out: &str, cp: &str) -> u64 {
    let s = section(out, cp, "verify");
    let l = s.lines().find_map(|l| l.strip_prefix("verify pt-owner: ok (")).unwrap_or_else(|| panic!("{s}"));
    l.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{l}"))
}

#[test]
fn munmap_frees_the_page_tables_no_mapping_left_can_use() {
    let dir = Scratch::new("pgtables");
    let prog = compile("gcc", PROG, &dir.0, "pgt", &["-static"]);
    let root = common::initrd_with_init(&dir.0, &prog);
    let r = boot(&[
        "--initrd",
        root.to_str().unwrap(),
        "--inspect-at",
        "pgt-start,pgt-mapped,pgt-unmapped,pgt-end",
        "--inspect",
        "meminfo",
        "--verify=all",
    ]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(!r.stdout.contains("VIOLATION"), "{}", r.all());
    assert_eq!(pgt_lines(&r.stdout), EXPECTED, "{}", r.all());
    // The host's checks after the unmaps: no table freed while linked
    // (freed-mapped, pt-owner), refcounts, isolation.
    for cp in ["pgt-unmapped", "pgt-end"] {
        let s = section(&r.stdout, cp, "verify");
        for check in ["freed-mapped", "pt-owner", "refcount", "isolation"] {
            assert!(s.contains(&format!("verify {check}: ok")), "{check} at {cp}: {s}");
        }
    }
    // The host's counts of page-table pages, from the guest's page
    // descriptors (meminfo) and from its own walk of every root
    // (pt-owner): 192 more with the regions mapped, none more once they
    // are gone.
    let start = page_tables_kb(&r.stdout, "pgt-start");
    let walked = walked_tables(&r.stdout, "pgt-start");
    assert_eq!(page_tables_kb(&r.stdout, "pgt-mapped"), start + 768, "{}", r.stdout);
    assert_eq!(walked_tables(&r.stdout, "pgt-mapped"), walked + 192, "{}", r.stdout);
    for cp in ["pgt-unmapped", "pgt-end"] {
        assert_eq!(page_tables_kb(&r.stdout, cp), start, "{cp}: {}", r.stdout);
        assert_eq!(walked_tables(&r.stdout, cp), walked, "{cp}: {}", r.stdout);
    }

    // Linux says the same (its VmPTE counts PTE, PMD and PUD tables),
    // where its THP mode leaves these 4 KiB faults to 4 KiB pages (with
    // `always`, the 64 MiB part would take PMD leaves and no PTE table).
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.contains("[always]") {
        eprintln!("host comparison skipped: the host's THP mode is always ({thp:?})");
    } else if cfg!(target_os = "linux") {
        let o = Command::new(&prog).output().expect("run the program on the host");
        assert!(o.status.success(), "{o:?}");
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(pgt_lines(&out), EXPECTED, "the host's Linux:\n{out}");
    }
}
