/* Batched TLB flushes for reclaim (tests/tlbbatch.rs and the shootdown
 * bench): the main thread, pinned to CPU 0, has pages of its own address
 * space swapped out while reader threads of the same mm spin in user mode
 * on CPUs 1..R (so every unmap has shootdown targets), and prints what
 * /proc/vmstat's tlb_batch_reclaim_* counters moved by.
 *
 *   tlbbatch R pageout N   MADV_PAGEOUT of N written pages (exact counts)
 *   tlbbatch R pressure N  writes MemFree + N pages, so reclaim swaps
 *   tlbbatch R compact N   N written pages shared with a forked child
 *                          (copy-on-write: read-only, clean PTEs), then
 *                          /proc/sys/vm/compact_memory; prints the
 *                          tlb_batch_migrate_* counters instead
 *
 * Then it reads every page back (swap-in) and counts bad words. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

static volatile int stop, up;
static char text[16384];

static void slurp(const char *path) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = 0;
}

static long field(const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\n%s ", key);
    char *p = strstr(text, k);
    return p ? atol(p + strlen(k)) : -1;
}

struct counts { long ptes, flushes, remote, ipis, full, pswpout; };

static const char *kind = "reclaim";

static long kfield(const char *what) {
    char k[64];
    snprintf(k, sizeof k, "tlb_batch_%s_%s", kind, what);
    return field(k);
}

static void snap(struct counts *c) {
    slurp("/proc/vmstat");
    c->ptes = kfield("ptes");
    c->flushes = kfield("flushes");
    c->remote = kfield("remote");
    c->ipis = kfield("ipis");
    c->full = kfield("full");
    c->pswpout = field(*kind == 'r' ? "pswpout" : "compact_migrate_scanned");
}

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    if (sched_setaffinity(0, sizeof s, &s) != 0) {
        perror("sched_setaffinity");
        exit(2);
    }
}

static void *reader(void *arg) {
    pin((int)(long)arg);
    volatile char *hot = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    hot[0] = 1;
    __sync_fetch_and_add(&up, 1);
    unsigned long sum = 0;
    while (!stop)
        sum += hot[0];
    return (void *)sum;
}

static long word(long page, long i) { return (page * 4096 + i) * 0x9e3779b97f4a7c15L + 7; }

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 4) {
        fprintf(stderr, "usage: tlbbatch READERS pageout|pressure PAGES\n");
        return 2;
    }
    int readers = atoi(argv[1]), pressure = !strcmp(argv[2], "pressure"), compact = !strcmp(argv[2], "compact");
    if (compact)
        kind = "migrate";
    long n = atol(argv[3]);
    pin(0);
    pthread_t t[8];
    for (long i = 0; i < readers && i < 8; i++)
        pthread_create(&t[i], 0, reader, (void *)(i + 1));
    while (up < readers)
        ;
    long pages = n;
    if (pressure) {
        slurp("/proc/meminfo");
        char *m = strstr(text, "MemFree:");
        pages += m ? atol(m + 8) / 4 : 0;
    }
    struct counts a, b;
    long *p = mmap(0, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    if (pressure)
        snap(&a);
    /* compact: three pages allocated after each one, freed below. */
    long *holes = compact ? mmap(0, pages * 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : 0;
    for (long pg = 0; pg < pages; pg++) {
        for (long i = 0; i < 512; i += 64)
            p[pg * 512 + i] = word(pg, i);
        for (long h = 0; compact && h < 3; h++)
            holes[(pg * 3 + h) * 512] = h;
    }
    int pipefd[2];
    pid_t child = -1;
    if (compact) {
        /* Holes around the pages, so compaction has pages to move. */
        munmap(holes, pages * 3 * 4096);
        /* The child shares every page read-only until told to exit. */
        pipe(pipefd);
        child = fork();
        if (child == 0) {
            char c;
            read(pipefd[0], &c, 1);
            _exit(0);
        }
        snap(&a);
        FILE *f = fopen("/proc/sys/vm/compact_memory", "w");
        if (!f || fputs("1\n", f) < 0 || fclose(f) != 0)
            perror("compact_memory");
    } else if (!pressure) {
        snap(&a);
        if (madvise(p, pages * 4096, MADV_PAGEOUT) != 0)
            perror("madvise");
    }
    snap(&b);
    if (compact)
        printf("tlbbatch-migrate: pages %ld migrate_scanned +%ld ptes +%ld flushes +%ld remote +%ld ipis +%ld full +%ld\n",
               pages, b.pswpout - a.pswpout, b.ptes - a.ptes, b.flushes - a.flushes, b.remote - a.remote,
               b.ipis - a.ipis, b.full - a.full);
    else
    printf("tlbbatch: pages %ld pswpout +%ld ptes +%ld flushes +%ld remote +%ld ipis +%ld full +%ld\n", pages,
           b.pswpout - a.pswpout, b.ptes - a.ptes, b.flushes - a.flushes, b.remote - a.remote, b.ipis - a.ipis,
           b.full - a.full);
    syscall(503, "reclaimed", 9);
    long bad = 0;
    for (long pg = 0; pg < pages; pg++)
        for (long i = 0; i < 512; i += 64)
            bad += p[pg * 512 + i] != word(pg, i);
    if (compact) {
        write(pipefd[1], "x", 1);
        waitpid(child, NULL, 0);
    }
    stop = 1;
    for (int i = 0; i < readers && i < 8; i++)
        pthread_join(t[i], 0);
    printf("read back: %ld bad words\n", bad);
    return bad != 0;
}
