//! Memory cgroups (issue 18, cgroup v2's memory controller): static C
//! programs (musl-gcc, built at test time) drive /sys/fs/cgroup in the
//! real guest: a process in a 16 MiB group touching 24 MiB is reclaimed
//! (to swap) at the limit while a process outside keeps every page; with
//! no swap the memcg OOM kills inside the group only, with Linux's
//! message; every control file rejects bad input with Linux's errno; the
//! charge goes back to 0 when the group's processes exit.
//!
//! Guest memory is small (128 MiB, groups of 8-16 MiB): ring 0 is
//! emulated here and every swapped page costs milliseconds.

mod common;
use common::*;

/// Helpers every program shares.
const PRELUDE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CG "/sys/fs/cgroup"

/* Writes s to path: 0 or -errno (of the open or of the write). */
static int put(const char *path, const char *s) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -errno;
    int r = write(fd, s, strlen(s)) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* The file's text into buf ("" on error). */
static char *get_into(const char *path, char *buf, int len) {
    buf[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return buf;
    int n = read(fd, buf, len - 1);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
    return buf;
}

static long num(const char *path) {
    char b[64];
    return atol(get_into(path, b, sizeof b));
}

/* The value of "k N" in a flat-keyed file (memory.stat, memory.events). */
static long key(const char *path, const char *k) {
    char t[4096], *p = get_into(path, t, sizeof t);
    size_t n = strlen(k);
    while (p && *p) {
        if (!strncmp(p, k, n) && p[n] == ' ') return atol(p + n + 1);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

static void join(const char *g) {
    char path[128], pid[32];
    snprintf(path, sizeof path, CG "/%s/cgroup.procs", g);
    snprintf(pid, sizeof pid, "%d", getpid());
    int r = put(path, pid);
    if (r) { printf("join %s: %d\n", g, r); exit(1); }
}

static int resident(char *p, long pages) {
    unsigned char v[1];
    int r = 0;
    for (long i = 0; i < pages; i++)
        if (mincore(p + i * 4096, 4096, v) == 0) r += v[0] & 1;
    return r;
}

/* Touches `pages` pages, sampling group g's memory.current every 64,
 * then reads them all back; prints the peak. */
static int hog(const char *g, long pages) {
    char cur[128];
    snprintf(cur, sizeof cur, CG "/%s/memory.current", g);
    char *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    long peak = 0;
    for (long i = 0; i < pages; i++) {
        *(long *)(p + i * 4096) = i * 7 + 1;
        if (i % 64 == 0) {
            long c = num(cur);
            if (c > peak) peak = c;
        }
    }
    /* The host checks the charges here (`--verify memcg`). */
    syscall(503, "memcg-full", 10);
    char pk[128];
    snprintf(pk, sizeof pk, CG "/%s/memory.peak", g);
    long pf = num(pk), now = num(cur);
    printf("full: peak %ld current %ld\n", pf, now);
    char st[128];
    snprintf(st, sizeof st, CG "/%s/memory.stat", g);
    printf("full lru: lru_anon %ld anon %ld\n", key(st, "inactive_anon") + key(st, "active_anon"), key(st, "anon"));
    long bad = 0;
    for (long i = 0; i < pages; i++)
        if (*(long *)(p + i * 4096) != i * 7 + 1) bad++;
    printf("hog: %ld pages, peak current %ld, bad %ld\n", pages, peak, bad);
    return bad != 0;
}

/* A process outside any group holding `n` pages until `done` is
 * readable; reports whether they all stayed resident and intact. */
static pid_t outsider(long n, int ready, int done) {
    pid_t out = fork();
    if (out == 0) {
        char *p = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        memset(p, 0x77, n * 4096);
        write(ready, "r", 1);
        char x;
        read(done, &x, 1);
        int res = resident(p, n);
        long bad = 0;
        for (long i = 0; i < n * 4096; i++) bad += p[i] != 0x77;
        printf("outside: resident %d of %ld, bad %ld\n", res, n, bad);
        _exit(0);
    }
    return out;
}

static void report(const char *g) {
    char stat[128], ev[128], cur[128], procs[128], b[256];
    snprintf(stat, sizeof stat, CG "/%s/memory.stat", g);
    snprintf(ev, sizeof ev, CG "/%s/memory.events", g);
    snprintf(cur, sizeof cur, CG "/%s/memory.current", g);
    snprintf(procs, sizeof procs, CG "/%s/cgroup.procs", g);
    printf("stat pgscan %ld pgsteal %ld anon %ld pagetables %ld pgfault %ld lru %ld\n", key(stat, "pgscan"),
           key(stat, "pgsteal"), key(stat, "anon"), key(stat, "pagetables"), key(stat, "pgfault"),
           key(stat, "inactive_anon") + key(stat, "active_anon") + key(stat, "inactive_file") +
               key(stat, "active_file") + key(stat, "unevictable"));
    printf("events high %ld max %ld oom %ld oom_kill %ld\n", key(ev, "high"), key(ev, "max"), key(ev, "oom"),
           key(ev, "oom_kill"));
    printf("after exit: current %ld\n", num(cur));
    char pk[128];
    snprintf(pk, sizeof pk, CG "/%s/memory.peak", g);
    printf("after exit: peak %ld\n", num(pk));
    printf("after exit: procs '%s'\n", get_into(procs, b, sizeof b));
}
"#;

/// A 16 MiB group whose process touches 24 MiB (with swap), beside a
/// 4 MiB process outside it.
const LIMIT: &str = r#"
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char b[64];
    printf("mkdir: %d\n", mkdir(CG "/g", 0755) ? -errno : 0);
    printf("max: %d\n", put(CG "/g/memory.max", "16M"));
    printf("read max: %s", get_into(CG "/g/memory.max", b, sizeof b));
    int ready[2], done[2];
    pipe(ready);
    pipe(done);
    pid_t out = outsider(1024, ready[1], done[0]);
    char x;
    read(ready[0], &x, 1);
    pid_t in = fork();
    if (in == 0) {
        join("g");
        char procs[64];
        printf("procs: '%s'\n", get_into(CG "/g/cgroup.procs", procs, sizeof procs));
        printf("self: %d\n", getpid());
        _exit(hog("g", 6144));
    }
    int st;
    waitpid(in, &st, 0);
    printf("in: exited %d status %d\n", WIFEXITED(st), WEXITSTATUS(st));
    write(done[1], "d", 1);
    waitpid(out, &st, 0);
    syscall(503, "memcg-exited", 12);
    report("g");
    printf("rmdir: %d\n", rmdir(CG "/g") ? -errno : 0);
    return 0;
}
"#;

/// No swap: an 8 MiB group whose process touches 16 MiB, beside a
/// process outside it.
const OOM: &str = r#"
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("mkdir: %d\n", mkdir(CG "/g", 0755) ? -errno : 0);
    printf("max: %d\n", put(CG "/g/memory.max", "8M"));
    int ready[2], done[2];
    pipe(ready);
    pipe(done);
    pid_t out = outsider(1024, ready[1], done[0]);
    char x;
    read(ready[0], &x, 1);
    pid_t in = fork();
    if (in == 0) {
        join("g");
        _exit(hog("g", 4096));
    }
    printf("hog pid %d\n", in);
    int st;
    waitpid(in, &st, 0);
    printf("in: signaled %d signal %d\n", WIFSIGNALED(st), WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    write(done[1], "d", 1);
    waitpid(out, &st, 0);
    printf("out: exited %d status %d\n", WIFEXITED(st), WEXITSTATUS(st));
    report("g");
    printf("rmdir: %d\n", rmdir(CG "/g") ? -errno : 0);
    return 0;
}
"#;

/// Bad input to every control file, and the directory operations.
const ERRORS: &str = r#"
static void lim(const char *f) {
    char p[128], b[64];
    snprintf(p, sizeof p, CG "/e/%s", f);
    int r1 = put(p, "abc");
    int r2 = put(p, "16Mx");
    int r3 = put(p, "-1");
    int r4 = put(p, "1.5G");
    int r5 = put(p, "12 M");
    printf("%s bad: %d %d %d %d %d\n", f, r1, r2, r3, r4, r5);
    int a = put(p, "1G");
    printf("%s 1G: %d %s", f, a, get_into(p, b, sizeof b));
    a = put(p, "0x100000");
    printf("%s 0x100000: %d %s", f, a, get_into(p, b, sizeof b));
    a = put(p, "8k\n");
    printf("%s 8k: %d %s", f, a, get_into(p, b, sizeof b));
    a = put(p, "5000");
    printf("%s 5000: %d %s", f, a, get_into(p, b, sizeof b));
    a = put(p, " max\n");
    printf("%s max: %d %s", f, a, get_into(p, b, sizeof b));
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char b[256];
    printf("mkdir e: %d\n", mkdir(CG "/e", 0755) ? -errno : 0);
    printf("mkdir e again: %d\n", mkdir(CG "/e", 0755) ? -errno : 0);
    printf("mkdir in missing: %d\n", mkdir(CG "/nope/x", 0755) ? -errno : 0);
    printf("mkdir over a file: %d\n", mkdir(CG "/e/memory.max", 0755) ? -errno : 0);
    printf("defaults: max %s", get_into(CG "/e/memory.max", b, sizeof b));
    printf("defaults: high %s", get_into(CG "/e/memory.high", b, sizeof b));
    printf("defaults: low %s", get_into(CG "/e/memory.low", b, sizeof b));
    printf("defaults: current %s", get_into(CG "/e/memory.current", b, sizeof b));
    lim("memory.max");
    lim("memory.high");
    lim("memory.low");
    lim("memory.min");
    /* One call per statement: C leaves the order of arguments open. */
    int p1 = put(CG "/e/cgroup.procs", "abc");
    int p2 = put(CG "/e/cgroup.procs", "\n");
    int p3 = put(CG "/e/cgroup.procs", "99999");
    int p4 = put(CG "/e/cgroup.procs", "-5");
    printf("procs bad: %d %d %d %d\n", p1, p2, p3, p4);
    p1 = put(CG "/e/memory.current", "1");
    p2 = put(CG "/e/memory.stat", "1");
    p3 = put(CG "/e/memory.events", "1");
    printf("read-only: current %d stat %d events %d\n", p1, p2, p3);
    p1 = put(CG "/e/cgroup.subtree_control", "+cpu");
    p2 = put(CG "/e/cgroup.subtree_control", "+memory");
    printf("subtree: +cpu %d +memory %d read %s", p1, p2, get_into(CG "/e/cgroup.subtree_control", b, sizeof b));
    p1 = put(CG "/e/memory.nope", "1");
    p2 = put(CG "/memory.max", "1");
    printf("missing file: %d root max: %d\n", p1, p2);
    /* A process in e, and its fork child: both listed, e busy. */
    int go[2], back[2];
    pipe(go);
    pipe(back);
    pid_t c = fork();
    if (c == 0) {
        join("e");
        pid_t gc = fork();
        if (gc == 0) {
            char x;
            read(go[0], &x, 1);
            _exit(0);
        }
        write(back[1], "j", 1);
        waitpid(gc, NULL, 0);
        _exit(0);
    }
    char x;
    read(back[0], &x, 1);
    printf("procs text: %s", get_into(CG "/e/cgroup.procs", b, sizeof b));
    printf("rmdir busy: %d\n", rmdir(CG "/e") ? -errno : 0);
    write(go[1], "gg", 2);
    waitpid(c, NULL, 0);
    printf("mkdir e/sub: %d\n", mkdir(CG "/e/sub", 0755) ? -errno : 0);
    printf("rmdir with child: %d\n", rmdir(CG "/e") ? -errno : 0);
    printf("rmdir root: %d\n", rmdir(CG) ? -errno : 0);
    printf("rmdir file: %d\n", rmdir(CG "/e/memory.max") ? -errno : 0);
    printf("rmdir missing: %d\n", rmdir(CG "/nope") ? -errno : 0);
    p1 = rmdir(CG "/e/sub") ? -errno : 0;
    p2 = rmdir(CG "/e") ? -errno : 0;
    printf("rmdir sub: %d, e: %d\n", p1, p2);
    printf("after rmdir: %d\n", open(CG "/e/memory.max", O_RDONLY) < 0 ? -errno : 0);
    return 0;
}
"#;

/// Global memory pressure (swap on) beside three holders of 1024 pages
/// each: one in a group whose memory.min covers it, one in a group whose
/// memory.low covers it, one in the root. The pressure comes from a hog
/// in a group with memory.min "max" (so its own pages are never
/// reclaimed) touching all free memory and 6 MiB more: global reclaim
/// takes the root's pages first, then, having nothing else, breaks
/// memory.low (the `low` event), and never touches memory.min.
const PROTECT: &str = r#"
/* A child in group g (root if NULL) holding n pages until `done`;
 * reports how many stayed resident and intact. */
static pid_t holder(const char *g, long n, int ready, int done) {
    pid_t c = fork();
    if (c == 0) {
        if (g) join(g);
        char *p = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        memset(p, 0x5a, n * 4096);
        write(ready, "r", 1);
        char x;
        read(done, &x, 1);
        int res = resident(p, n);
        long bad = 0;
        for (long i = 0; i < n * 4096; i++) bad += p[i] != 0x5a;
        printf("holder %s: resident %d of %ld, bad %ld\n", g ? g : "root", res, n, bad);
        _exit(0);
    }
    return c;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    mkdir(CG "/min", 0755);
    mkdir(CG "/low", 0755);
    mkdir(CG "/hog", 0755);
    printf("set: %d %d %d\n", put(CG "/min/memory.min", "16M"), put(CG "/low/memory.low", "16M"),
           put(CG "/hog/memory.min", "max"));
    int ready[2], done[2];
    pipe(ready);
    pipe(done);
    pid_t h[3];
    h[0] = holder("min", 1024, ready[1], done[0]);
    h[1] = holder("low", 1024, ready[1], done[0]);
    h[2] = holder(NULL, 1024, ready[1], done[0]);
    char x;
    for (int i = 0; i < 3; i++) read(ready[0], &x, 1);
    pid_t hog = fork();
    if (hog == 0) {
        join("hog");
        long free_kb = 0;
        char t[4096], *m = strstr(get_into("/proc/meminfo", t, sizeof t), "MemFree:");
        if (m) free_kb = atol(m + 8);
        long pages = free_kb / 4 + 1536;
        char *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) _exit(2);
        for (long i = 0; i < pages; i++) p[i * 4096] = 1;
        printf("hog: %ld pages (free was %ld kB)\n", pages, free_kb);
        _exit(0);
    }
    int st;
    waitpid(hog, &st, 0);
    printf("hog: exited %d status %d\n", WIFEXITED(st), WEXITSTATUS(st));
    write(done[1], "ddd", 3);
    for (int i = 0; i < 3; i++) waitpid(h[i], NULL, 0);
    printf("low events min %ld\n", key(CG "/min/memory.events", "low"));
    printf("low events low %ld\n", key(CG "/low/memory.events", "low"));
    printf("low events hog %ld\n", key(CG "/hog/memory.events", "low"));
    return 0;
}
"#;

#[test]
fn memory_min_and_low_protect_a_group_from_global_reclaim() {
    let swap = TempFile::absent("memcg-protect-swap");
    let swap_arg = format!("{},size=64M", swap.path());
    let r = run_mem("memcg-protect", PROTECT, "40M", &["--swap", &swap_arg]);
    let out = &r.stdout;
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(out.contains("set: 0 0 0"), "{}", r.all());
    assert!(out.contains("hog: exited 1 status 0"), "{}", r.all());
    // memory.min: every page stayed; memory.low: broken (the root's
    // pages were not enough), counted as `low`; the root's holder lost
    // pages. All read back intact (from swap where reclaimed).
    assert!(out.contains("holder min: resident 1024 of 1024, bad 0"), "{out}");
    let low = field(out, "holder low:", "resident");
    let root = field(out, "holder root:", "resident");
    assert!(root < 1024, "the unprotected holder kept all its pages:\n{out}");
    assert!(low < 1024, "memory.low was never broken (root kept {root}):\n{out}");
    assert_eq!(field(out, "holder low:", "bad"), 0, "{out}");
    assert_eq!(field(out, "holder root:", "bad"), 0, "{out}");
    assert!(field(out, "low events low", "events low") >= 1, "{out}");
    assert_eq!(field(out, "low events min", "events min"), 0, "{out}");
    assert_eq!(field(out, "low events hog", "events hog"), 0, "{out}");
}

/// No swap: a process in a 4 MiB group writes an 8 MiB tmpfs file.
/// As Linux's, each page the write adds is charged first (the group
/// reclaims, then the memcg OOM kills the writer, the group's only
/// process); memory.current never passes max by more than a batch, and
/// the file's pages stay charged until it is removed.
const WRITE: &str = r#"
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    mkdir("/tmp", 0755);
    printf("mkdir: %d\n", mkdir(CG "/w", 0755) ? -errno : 0);
    printf("max: %d\n", put(CG "/w/memory.max", "4M"));
    pid_t c = fork();
    if (c == 0) {
        join("w");
        int fd = open("/tmp/memcg-big", O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) _exit(3);
        static char buf[65536];
        memset(buf, 0x3c, sizeof buf);
        long peak = 0, total = 0;
        for (int i = 0; i < 128; i++) {
            long w = write(fd, buf, sizeof buf);
            long cur = num(CG "/w/memory.current");
            if (cur > peak) peak = cur;
            printf("write %d: %ld (errno %d) peak %ld\n", i, w, w < 0 ? errno : 0, peak);
            if (w <= 0) break;
            total += w;
        }
        printf("writer: wrote %ld\n", total);
        _exit(0);
    }
    int st;
    waitpid(c, &st, 0);
    printf("writer: signaled %d signal %d\n", WIFSIGNALED(st), WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    char ev[] = CG "/w/memory.events";
    printf("events max %ld oom %ld oom_kill %ld\n", key(ev, "max"), key(ev, "oom"), key(ev, "oom_kill"));
    printf("file current %ld\n", num(CG "/w/memory.current"));
    struct stat sb;
    stat("/tmp/memcg-big", &sb);
    printf("file size %ld\n", (long)sb.st_size);
    unlink("/tmp/memcg-big");
    printf("unlinked current %ld\n", num(CG "/w/memory.current"));
    printf("rmdir: %d\n", rmdir(CG "/w") ? -errno : 0);
    return 0;
}
"#;

#[test]
fn page_cache_writes_are_held_to_memory_max() {
    let r = run("memcg-write", WRITE, &[]);
    let out = &r.stdout;
    assert_eq!(r.status, 0, "{}", r.all());
    for want in ["mkdir: 0", "max: 0", "writer: signaled 1 signal 9", "unlinked current 0", "rmdir: 0"] {
        assert!(out.contains(want), "missing {want:?}:\n{}", r.all());
    }
    // Never above max by more than one reclaim batch (32 pages), at any
    // write; and the writer got near the limit before it was killed.
    let max = 4 << 20;
    let peak = out.lines().filter(|l| l.starts_with("write ")).map(|l| field(l, "write", "peak")).max().unwrap_or(0);
    assert!(peak <= max + 32 * 4096, "memory.current peaked at {peak}:\n{out}");
    assert!(peak >= max - (1 << 20), "the writer never came near max ({peak}):\n{out}");
    // Killed inside the group with Linux's message, the write never
    // finished; the file keeps what was charged.
    assert!(!out.contains("writer: wrote"), "{out}");
    let all = r.all();
    assert!(all.contains("Memory cgroup out of memory: Killed process"), "{all}");
    assert!(!all.contains("Out of memory: Killed"), "{all}");
    assert_eq!(field(out, "events", "oom_kill"), 1, "{out}");
    assert!(field(out, "events", "max") >= 1, "{out}");
    let size = field(out, "file size", "size");
    assert!(size > 0 && size <= max + 32 * 4096, "file size {size}:\n{out}");
    assert!(field(out, "file current", "current") >= size, "{out}");
}

/// Builds `body` with the prelude as /init and boots it with `args`.
fn run(name: &str, body: &str, args: &[&str]) -> Run {
    run_mem(name, body, "128M", args)
}

/// [`run`] in a guest of `mem`.
fn run_mem(name: &str, body: &str, mem: &str, args: &[&str]) -> Run {
    let dir = Scratch::new(name);
    let prog = compile("musl-gcc", &format!("{PRELUDE}{body}"), &dir.0, name, &["-static"]);
    let root = initrd_with_init(&dir.0, &prog);
    let mut a = vec!["run", "--timeout", "900", "--mem", mem, "--initrd", root.to_str().unwrap()];
    a.extend_from_slice(args);
    vmm(&a)
}

/// The number after `key ` in the first line starting with `prefix`.
fn field(out: &str, prefix: &str, key: &str) -> i64 {
    let l = out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no '{prefix}' line:\n{out}"));
    let at = l.find(&format!("{key} ")).unwrap_or_else(|| panic!("{key} missing in {l}")) + key.len() + 1;
    l[at..]
        .split(|c: char| c != '-' && !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad {key} in {l}"))
}

#[test]
fn a_group_at_its_limit_reclaims_its_own_pages_to_swap() {
    let swap = TempFile::absent("memcg-swap");
    let swap_arg = format!("{},size=64M", swap.path());
    let r = run(
        "memcg-limit",
        LIMIT,
        &["--swap", &swap_arg, "--verify=memcg,lru,refcount", "--inspect-at", "memcg-full,memcg-exited"],
    );
    let out = &r.stdout;
    assert_eq!(r.status, 0, "{}", r.all());
    for want in ["mkdir: 0", "max: 0", "read max: 16777216", "in: exited 1 status 0", "rmdir: 0"] {
        assert!(out.contains(want), "missing {want:?}:\n{}", r.all());
    }
    // The child joined: cgroup.procs lists exactly it.
    let me = field(out, "self:", "self:");
    assert!(out.contains(&format!("procs: '{me}\n'")), "{out}");
    // 24 MiB touched and read back intact, never far above 16 MiB: at
    // most one reclaim batch (32 pages) over, and it did get near max.
    let max = 16 << 20;
    let peak = field(out, "hog:", "peak current");
    assert_eq!(field(out, "hog:", "bad"), 0, "{out}");
    assert!(peak <= max + 32 * 4096, "memory.current peaked at {peak} over max {max}:\n{out}");
    assert!(peak >= max - (1 << 20), "the group never came near its limit ({peak}):\n{out}");
    // memory.peak: at least what memory.current is and was seen to be,
    // at most one reclaim batch over max, and kept after the group's
    // pages are freed.
    let (peak_file, now) = (field(out, "full:", "peak"), field(out, "full:", "current"));
    assert!(peak_file >= now && peak_file >= peak, "memory.peak {peak_file}, current {now}, sampled {peak}:\n{out}");
    assert!(peak_file <= max + 32 * 4096, "memory.peak {peak_file} over max {max} by more than a batch:\n{out}");
    // Kept after exit; reading the data back may have raised it a little
    // (swap readahead charges its extra pages without a limit check),
    // never by more than a batch over max.
    let peak_after = field(out, "after exit: peak", "peak");
    assert!(peak_after >= peak_file && peak_after <= max + 32 * 4096, "memory.peak after exit {peak_after}:\n{out}");
    // The process outside kept every page, untouched.
    assert!(out.contains("outside: resident 1024 of 1024, bad 0"), "{out}");
    // The group's own reclaim did the work: at least the 8 MiB beyond the
    // limit stolen (to swap: the device saw the writes), max events
    // counted, no OOM.
    let (scan, steal) = (field(out, "stat", "pgscan"), field(out, "stat", "pgsteal"));
    assert!(steal >= 2048 && scan >= steal, "pgscan {scan} pgsteal {steal}:\n{out}");
    assert!(field(out, "stat", "pgfault") >= 6144, "{out}");
    assert!(field(out, "events", "max") > 0, "{out}");
    assert_eq!(field(out, "events", "oom"), 0, "{out}");
    assert_eq!(field(out, "events", "oom_kill"), 0, "{out}");
    let all = r.all();
    let dev = all.lines().find(|l| l.starts_with("vmm: virtio-blk:")).unwrap_or_else(|| panic!("{all}"));
    let writes: u64 = dev.split(", ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(writes >= 2048, "swap writes {writes}: {dev}");
    // Every page the group's processes had is uncharged at exit.
    assert_eq!(field(out, "after exit: current", "current"), 0, "{out}");
    assert!(out.contains("after exit: procs ''"), "{out}");
    assert_eq!(field(out, "stat", "anon"), 0, "{out}");
    assert_eq!(field(out, "stat", "pagetables"), 0, "{out}");
    // memory.stat's list counts come from the group's own lruvecs: with
    // the group full its anon pages are on them (none of another group's,
    // so never more than its anon charge), and they are empty after exit.
    let (lru_anon, anon) = (field(out, "full lru:", "lru_anon"), field(out, "full lru:", "anon"));
    assert!(lru_anon > 0 && lru_anon <= anon && lru_anon * 2 >= anon, "lru_anon {lru_anon} anon {anon}:\n{out}");
    assert_eq!(field(out, "stat", "lru"), 0, "{out}");
    // The host's count of the tags agrees with the guest's charges at
    // both checkpoints (the group full, then empty), none over max.
    for cp in ["memcg-full", "memcg-exited"] {
        let at = out.find(&format!("--- checkpoint '{cp}': verify ---")).unwrap_or_else(|| panic!("no {cp}:\n{out}"));
        let l = out[at..].lines().find(|l| l.starts_with("verify memcg: ")).unwrap_or_else(|| panic!("{out}"));
        assert!(l.starts_with("verify memcg: ok ("), "{cp}: {l}\n{out}");
        assert!(l.contains("(1 below the root)"), "{cp}: {l}");
    }
}

/// `--verify memcg` fails when a charge and the page tags disagree
/// (`break=memcg` counts a page no descriptor is tagged with).
#[test]
fn verify_memcg_catches_a_charge_without_a_page() {
    let r = boot(&["--cmdline", "break=memcg exit=0", "--verify=memcg"]);
    assert_eq!(r.status, 3, "{}", r.all());
    assert!(r.stdout.contains("verify memcg: VIOLATION"), "{}", r.all());
    assert!(r.all().contains("group 0 counts"), "{}", r.all());
}

#[test]
fn without_swap_the_memcg_oom_kills_inside_the_group_only() {
    let r = run("memcg-oom", OOM, &[]);
    let out = &r.stdout;
    assert_eq!(r.status, 0, "{}", r.all());
    let hog = field(out, "hog pid", "pid");
    // The hog died of SIGKILL, never finishing; the outsider finished
    // with its pages intact; init (the parent) went on.
    assert!(out.contains("in: signaled 1 signal 9"), "{}", r.all());
    assert!(!out.contains("hog: "), "{out}");
    assert!(out.contains("outside: resident 1024 of 1024, bad 0"), "{out}");
    assert!(out.contains("out: exited 1 status 0"), "{out}");
    // Linux's messages, naming the group and the victim.
    // The kernel's log is the VMM's stderr.
    let all = r.all();
    assert!(all.contains("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/g,task_memcg=/g,task=init,"), "{all}");
    let line = all
        .lines()
        .find(|l| l.starts_with("Memory cgroup out of memory: Killed process"))
        .unwrap_or_else(|| panic!("no memcg OOM message:\n{all}"));
    assert!(line.starts_with(&format!("Memory cgroup out of memory: Killed process {hog} (init) total-vm:")), "{line}");
    for part in ["kB, anon-rss:", "kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:", "kB oom_score_adj:0"] {
        assert!(line.contains(part), "{line}");
    }
    // One kill, no global OOM.
    assert_eq!(all.matches("Killed process").count(), 1, "{all}");
    assert!(!all.contains("Out of memory: Killed"), "{all}");
    assert!(field(out, "events", "oom") >= 1, "{out}");
    assert_eq!(field(out, "events", "oom_kill"), 1, "{out}");
    assert!(field(out, "events", "max") >= 1, "{out}");
    assert_eq!(field(out, "after exit: current", "current"), 0, "{out}");
    assert!(out.contains("rmdir: 0"), "{out}");
}

#[test]
fn control_files_reject_bad_input_with_linux_errnos() {
    let r = run("memcg-errors", ERRORS, &[]);
    let out = &r.stdout;
    assert_eq!(r.status, 0, "{}", r.all());
    let mut want = vec![
        "mkdir e: 0".to_string(),
        "mkdir e again: -17".into(),
        "mkdir in missing: -2".into(),
        "mkdir over a file: -17".into(),
        "defaults: max max".into(),
        "defaults: high max".into(),
        "defaults: low 0".into(),
        "defaults: current 0".into(),
        "procs bad: -22 -22 -3 -3".into(),
        "read-only: current -13 stat -13 events -13".into(),
        "subtree: +cpu -22 +memory 0 read memory".into(),
        "missing file: -2 root max: -2".into(),
        "rmdir busy: -16".into(),
        "mkdir e/sub: 0".into(),
        "rmdir with child: -16".into(),
        "rmdir root: -16".into(),
        "rmdir file: -20".into(),
        "rmdir missing: -2".into(),
        "rmdir sub: 0, e: 0".into(),
        "after rmdir: -2".into(),
    ];
    for f in ["memory.max", "memory.high", "memory.low", "memory.min"] {
        want.push(format!("{f} bad: -22 -22 -22 -22 -22"));
        want.push(format!("{f} 1G: 0 1073741824"));
        want.push(format!("{f} 0x100000: 0 1048576"));
        want.push(format!("{f} 8k: 0 8192"));
        // Bytes round down to whole pages, as Linux's page counters.
        want.push(format!("{f} 5000: 0 4096"));
        want.push(format!("{f} max: 0 max"));
    }
    for w in &want {
        assert!(out.contains(w.as_str()), "missing {w:?}:\n{}", r.all());
    }
    // The process and the child it forked after joining are both in e.
    let procs = out.lines().find(|l| l.starts_with("procs text:")).unwrap_or_else(|| panic!("{out}"));
    let at = out.find("procs text:").unwrap();
    let lines: Vec<&str> = out[at + "procs text: ".len()..].lines().take(2).collect();
    assert!(lines.iter().all(|l| l.trim().parse::<u32>().is_ok()), "two pids expected after {procs}:\n{out}");
}
