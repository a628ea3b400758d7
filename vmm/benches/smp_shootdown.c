/* Shootdown IPIs per munmap (issue 16's bench). argv[1] = number of
 * CPUs. The main thread runs on CPU 0; a reader thread per CPU 1..R
 * (R = CPUs - 2 with 4 CPUs, else CPUs - 1) spins on a page of this
 * address space, so those CPUs hold its CR3; with 4 CPUs a forked
 * process (its own address space) spins on the last CPU, outside the
 * mm's cpumask. For N in 1, 16, 128, 512, 1024 pages: 20 rounds of mmap,
 * touch, munmap; /proc/interrupts' TLB row before and after gives the
 * shootdown requests each CPU served. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef ROUNDS
#define ROUNDS 20
#endif
static volatile int stop, ready;
static volatile unsigned char *page;

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
    __sync_fetch_and_add(&ready, 1);
    unsigned long sum = 0;
    while (!stop)
        sum += page[0];
    return (void *)sum;
}

/* Shootdown requests served per CPU, from /proc/interrupts (read with
 * open/read into a static buffer: stdio's buffer, freed, could itself
 * unmap memory and cost a shootdown). */
static int tlb_row(long *v, int n) {
    static char buf[16384];
    int fd = open("/proc/interrupts", O_RDONLY), len = 0, r;
    if (fd < 0)
        return 0;
    while (len < (int)sizeof buf - 1 && (r = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += r;
    close(fd);
    buf[len] = 0;
    char *p = strstr(buf, "\nTLB:");
    if (!p)
        return 0;
    p += 5;
    for (int i = 0; i < n; i++)
        v[i] = strtol(p, &p, 10);
    return 1;
}

int main(int argc, char **argv) {
    int cpus = argc > 1 ? atoi(argv[1]) : 2;
    int outsider = cpus >= 4;
    int readers = cpus - 1 - outsider;
    pin(0);
    page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    page[0] = 1;
    pid_t other = -1;
    if (outsider) {
        other = fork();
        if (other == 0) {
            pin(cpus - 1);
            volatile unsigned long x = 0;
            for (;;)
                x++;
        }
    }
    pthread_t t[8];
    for (int i = 0; i < readers; i++)
        pthread_create(&t[i], 0, reader, (void *)(long)(i + 1));
    while (ready < readers)
        sched_yield();
    static const int sizes[] = {1, 16, 128, 512, 1024};
    for (unsigned k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        int n = sizes[k];
        long before[8], after[8];
        if (!tlb_row(before, cpus))
            return 3;
        for (int r = 0; r < ROUNDS; r++) {
            char *m = mmap(0, n * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            for (int j = 0; j < n; j++)
                m[j * 4096L] = j;
            munmap(m, n * 4096L);
        }
        if (!tlb_row(after, cpus))
            return 3;
        printf("shoot: pages=%d rounds=%d readers=%d outsider=%d served", n, ROUNDS, readers, outsider);
        for (int c = 0; c < cpus; c++)
            printf(" %ld", after[c] - before[c]);
        printf("\n");
    }
    stop = 1;
    for (int i = 0; i < readers; i++)
        pthread_join(t[i], 0);
    if (other > 0) {
        kill(other, SIGKILL);
        waitpid(other, 0, 0);
    }
    return 0;
}
