//! Fault injection for the page allocator (Linux's `fail_page_alloc`,
//! guest/src/mm/fail_page_alloc.rs) from a static C program: the debugfs
//! attributes read Linux's defaults, a probability over 100 is EINVAL;
//! with the program's own /proc/self/make-it-fail and the task filter,
//! `times` 1 and probability 100, the next page the kernel allocates for
//! it, the first page table of an mremap destination 4 TiB away, fails:
//! mremap returns ENOMEM and leaves the old mapping as it was, data
//! intact, nothing at the destination (move_page_tables' rollback), times
//! reads 0; the same mremap then succeeds. The kernel logs Linux's
//! `FAULT_INJECTION: forcing a failure.` line. A boot parameter sets the
//! attributes; a malformed one is refused with the reason.

mod common;

const PROG: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FI "/sys/kernel/debug/fail_page_alloc/"
#define LEN (16 * 4096UL)

static char buf[128];
static const char *get(const char *path) {
    int fd = open(path, O_RDONLY);
    long n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0) close(fd);
    buf[n < 0 ? 0 : n] = 0;
    char *nl = strchr(buf, '\n');
    if (nl) *nl = 0;
    return fd < 0 ? "(none)" : buf;
}
static int put(const char *path, const char *v) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -errno;
    long n = write(fd, v, strlen(v));
    int r = n < 0 ? -errno : 0;
    close(fd);
    return r;
}
/* Whether [p, p + LEN) is in /proc/self/maps as one mapping. */
static int mapped(unsigned long p) {
    char line[256];
    FILE *f = fopen("/proc/self/maps", "r");
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s <= p && p + LEN <= e) found = 1;
    }
    if (f) fclose(f);
    return found;
}
static int intact(unsigned char *m) {
    for (unsigned long i = 0; i < LEN; i += 4096)
        if (m[i] != (unsigned char)(i / 4096 + 7)) return 0;
    return 1;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *names[] = {"probability", "interval", "times", "space", "verbose", "task-filter",
                           "ignore-gfp-wait", "ignore-gfp-highmem", "min-order"};
    printf("defaults:");
    for (int i = 0; i < 9; i++) {
        char path[96];
        snprintf(path, sizeof path, FI "%s", names[i]);
        printf(" %s=%s", names[i], get(path));
    }
    printf("\nmake-it-fail: %s\n", get("/proc/self/make-it-fail"));
    printf("probability 101: %d\n", put(FI "probability", "101"));
    unsigned char *a = mmap(0, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (unsigned long i = 0; i < LEN; i += 4096) a[i] = (unsigned char)(i / 4096 + 7);
    /* A destination 4 TiB away: mremap needs new PUD, PMD and PTE tables there. */
    unsigned long b = ((unsigned long)a - (4UL << 40)) & ~((1UL << 39) - 1);
    int r = put("/proc/self/make-it-fail", "1");
    r |= put(FI "task-filter", "Y");
    r |= put(FI "ignore-gfp-wait", "N");
    r |= put(FI "min-order", "0");
    r |= put(FI "verbose", "1");
    r |= put(FI "times", "1");
    r |= put(FI "probability", "100");
    void *m = mremap(a, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)b);
    int err = m == MAP_FAILED ? errno : 0;
    put(FI "probability", "0");
    printf("knobs set: %d; mremap under injection: %s (errno %d), times now %s\n", r,
           m == MAP_FAILED ? "failed" : "moved", err, get(FI "times"));
    printf("after the failure: old range mapped %d, data intact %d, new range mapped %d\n", mapped((unsigned long)a),
           intact(a), mapped(b));
    m = mremap(a, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)b);
    printf("mremap again: %s; new range mapped %d, data intact %d, old range mapped %d\n",
           m == MAP_FAILED ? "failed" : "moved", mapped(b), m == MAP_FAILED ? 0 : intact(m), mapped((unsigned long)a));
    return 0;
}
"#;

#[test]
fn an_injected_page_table_failure_makes_mremap_fail_and_roll_back() {
    let r = common::run_c_init("fail-page-alloc", PROG, &["--timeout", "300", "--mem", "64M"]);
    common::assert_stdout_has(
        &r,
        &[
            "defaults: probability=0 interval=1 times=1 space=0 verbose=2 task-filter=N ignore-gfp-wait=Y ignore-gfp-highmem=Y min-order=1\n",
            "make-it-fail: 0\n",
            "probability 101: -22\n",
            "knobs set: 0; mremap under injection: failed (errno 12), times now 0\n",
            "after the failure: old range mapped 1, data intact 1, new range mapped 0\n",
            "mremap again: moved; new range mapped 1, data intact 1, old range mapped 0\n",
        ],
    );
    // The kernel's log (stderr when a program of the user's is /init).
    assert!(r.stderr.contains("FAULT_INJECTION: forcing a failure."), "{}", r.all());
    assert!(r.stderr.contains("name fail_page_alloc, interval 1, probability 100, space 0, times 0"), "{}", r.all());
    assert_eq!(r.stderr.matches("FAULT_INJECTION").count(), 1, "one failure injected: {}", r.all());
}

#[test]
fn the_boot_parameter_sets_the_attributes_or_says_why_not() {
    let r = common::boot(&["--cmdline", "fail_page_alloc=3,0,4096,-1"]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("fail_page_alloc: interval 3, probability 0%, space 4096, times -1\n"), "{}", r.all());
    let r = common::boot(&["--cmdline", "fail_page_alloc=1,200,0,1"]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(
        r.stdout.contains(
            "fail_page_alloc: '1,200,0,1' is not <interval>,<probability>,<space>,<times> (probability 0..100): ignored\n"
        ),
        "{}",
        r.all()
    );
}
