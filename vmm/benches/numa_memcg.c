/* Issue 18's bench workload, run as the guest's /init (static, musl).
 *
 *   numa N [small]  two tasks, one pinned to CPU 0 and one to CPU 1, each
 *                   mapping and touching N pages under each policy;
 *                   "small" skips bind (node 1 too small: the OOM killer).
 *   memcg N MAX     a task in a group with memory.max MAX bytes touching N
 *                   pages in a tight loop (swap on).
 *   global N        the same task outside any group.
 *
 * Prints one parseable line per measurement (see numa_memcg.rs). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MPOL_DEFAULT 0
#define MPOL_PREFERRED 1
#define MPOL_BIND 2
#define MPOL_INTERLEAVE 3
#define MPOL_F_NODE 1
#define MPOL_F_ADDR 2
#define CG "/sys/fs/cgroup"

static char *text(const char *path, char *buf, int len) {
    buf[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return buf;
    int n = read(fd, buf, len - 1);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
    return buf;
}

/* The value of "k N" in a flat-keyed file; -1 when absent. */
static long key(const char *path, const char *k) {
    static char t[16384];
    char *p = text(path, t, sizeof t);
    size_t n = strlen(k);
    while (p && *p) {
        if (!strncmp(p, k, n) && p[n] == ' ') return atol(p + n + 1);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

static long num(const char *path) {
    char b[64];
    return atol(text(path, b, sizeof b));
}

static int put(const char *path, const char *s) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -errno;
    int r = write(fd, s, strlen(s)) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static const char *NUMA_KEYS[6] = {"numa_hit", "numa_miss", "numa_foreign", "interleave_hit", "local_node", "other_node"};

static void numa_counts(long v[6]) {
    for (int i = 0; i < 6; i++) v[i] = key("/proc/vmstat", NUMA_KEYS[i]);
}

/* One task: pinned to `cpu`, under `mode`/`mask`, touches n pages and
 * says where they are. */
static int task(const char *name, int cpu, long mode, unsigned long mask, long n) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    if (sched_setaffinity(0, sizeof s, &s)) return 2;
    sched_yield();
    if (syscall(SYS_set_mempolicy, mode, mode == MPOL_DEFAULT ? NULL : &mask, mode == MPOL_DEFAULT ? 0 : 64) < 0) {
        printf("set_mempolicy %s: errno %d\n", name, errno);
        return 3;
    }
    char *p = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 4;
    for (long i = 0; i < n; i++) p[i * 4096] = 1;
    long on[2] = {0, 0};
    for (long i = 0; i < n; i++) {
        int node = -1;
        unsigned long m = 0;
        syscall(SYS_get_mempolicy, &node, &m, 64, p + i * 4096, MPOL_F_NODE | MPOL_F_ADDR);
        if (node == 0 || node == 1) on[node]++;
    }
    printf("task %s cpu %d pages %ld node0 %ld node1 %ld\n", name, cpu, n, on[0], on[1]);
    return 0;
}

static void numa_case(const char *name, long mode, unsigned long mask, long n) {
    long a[6], b[6];
    numa_counts(a);
    pid_t c[2];
    for (int cpu = 0; cpu < 2; cpu++) {
        c[cpu] = fork();
        if (c[cpu] == 0) _exit(task(name, cpu, mode, mask, n));
    }
    int st[2];
    for (int cpu = 0; cpu < 2; cpu++) waitpid(c[cpu], &st[cpu], 0);
    numa_counts(b);
    printf("case %s", name);
    for (int i = 0; i < 6; i++) printf(" %s %ld", NUMA_KEYS[i], b[i] - a[i]);
    for (int cpu = 0; cpu < 2; cpu++)
        printf(" cpu%d %s", cpu, WIFEXITED(st[cpu]) && WEXITSTATUS(st[cpu]) == 0 ? "ok" : "killed");
    printf("\n");
}

static char *touch(long n) {
    char *p = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) exit(4);
    /* The fast allocator: one store per page, nothing else. */
    for (long i = 0; i < n; i++) p[i * 4096] = 1;
    return p;
}

static const char *RECLAIM_KEYS[4] = {"pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct"};

static void vm_reclaim(long v[4]) {
    for (int i = 0; i < 4; i++) v[i] = key("/proc/vmstat", RECLAIM_KEYS[i]);
}

static void print_reclaim(const char *what, long a[4], long b[4]) {
    printf("%s", what);
    for (int i = 0; i < 4; i++) printf(" %s %ld", RECLAIM_KEYS[i], b[i] - a[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3) return 1;
    long n = atol(argv[2]);
    if (!strcmp(argv[1], "numa")) {
        int small = argc > 3 && !strcmp(argv[3], "small");
        numa_case("default", MPOL_DEFAULT, 0, n);
        numa_case("preferred1", MPOL_PREFERRED, 2, n);
        if (!small) numa_case("bind1", MPOL_BIND, 2, n);
        numa_case("interleave01", MPOL_INTERLEAVE, 3, n);
        return 0;
    }
    long a[4], b[4];
    char t[64];
    printf("free before: %ld kB\n", key("/proc/meminfo", "MemFree:"));
    if (!strcmp(argv[1], "memcg") && argc > 3) {
        if (mkdir(CG "/b", 0755)) return 5;
        if (put(CG "/b/memory.max", argv[3])) return 6;
        vm_reclaim(a);
        pid_t c = fork();
        if (c == 0) {
            snprintf(t, sizeof t, "%d", getpid());
            if (put(CG "/b/cgroup.procs", t)) _exit(7);
            touch(n);
            printf("memcg max %ld peak %ld current %ld\n", num(CG "/b/memory.max"), num(CG "/b/memory.peak"),
                   num(CG "/b/memory.current"));
            _exit(0);
        }
        int st;
        waitpid(c, &st, 0);
        vm_reclaim(b);
        printf("memcg stat pgscan %ld pgsteal %ld max_events %ld oom %ld status %d\n", key(CG "/b/memory.stat", "pgscan"),
               key(CG "/b/memory.stat", "pgsteal"), key(CG "/b/memory.events", "max"),
               key(CG "/b/memory.events", "oom"), st);
        print_reclaim("memcg vmstat", a, b);
        return 0;
    }
    if (!strcmp(argv[1], "global")) {
        vm_reclaim(a);
        pid_t c = fork();
        if (c == 0) {
            touch(n);
            _exit(0);
        }
        int st;
        waitpid(c, &st, 0);
        vm_reclaim(b);
        printf("global status %d\n", st);
        print_reclaim("global vmstat", a, b);
        return 0;
    }
    return 1;
}
