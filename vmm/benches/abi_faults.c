/* The workloads of `cargo bench -p vmm --bench linux_abi`: one static
 * binary, run on the host and in the guest, prints its own fault counts
 * (getrusage) so both sides are measured by the same code.
 *
 *   abi_faults malloc            malloc/free churn across the mmap threshold
 *   abi_faults filemap FILE      private and shared mappings of a file
 *   abi_faults exec              fork + execve of this (1 MiB) binary
 *   abi_faults child             (the exec'd side: touches its 1 MiB)
 *   abi_faults syscalls N        N getppid() between two checkpoints
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* One MiB of initialised data: the binary is 1 MiB larger for it. */
#define BIG (1 << 20)
static const unsigned char big[BIG] = {[0] = 1, [BIG / 2] = 2, [BIG - 1] = 3};

/* This kernel's SYS_CHECKPOINT; -ENOSYS (harmless) on the host. */
static void checkpoint(const char *name) { syscall(503, name, strlen(name)); }

static long minflt(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static long majflt(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_majflt;
}

static unsigned long long seed = 42;
static unsigned rnd(void) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(seed >> 33);
}

static int churn(void) {
    enum { SLOTS = 256, OPS = 6000 };
    static char *slot[SLOTS];
    static size_t len[SLOTS];
    unsigned long sum = 0;
    long f0 = minflt(), m0 = majflt();
    for (int i = 0; i < OPS; i++) {
        unsigned s = rnd() % SLOTS;
        if (slot[s]) {
            sum += (unsigned char)slot[s][len[s] - 1];
            free(slot[s]);
            slot[s] = 0;
            continue;
        }
        /* Mostly small blocks, one in 16 between 64 and 512 KiB (across
         * the 128 KiB mmap threshold of both libcs). */
        size_t n = (rnd() % 16 == 0) ? (64 << 10) + rnd() % (448 << 10) : 16 + rnd() % 2048;
        char *p = malloc(n);
        if (!p) return 1;
        memset(p, (int)(i & 0xff), n);
        slot[s] = p;
        len[s] = n;
    }
    for (int s = 0; s < SLOTS; s++) free(slot[s]);
    printf("malloc minflt=%ld majflt=%ld sum=%lu\n", minflt() - f0, majflt() - m0, sum);
    return 0;
}

static int filemap(const char *path) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        perror(path);
        return 1;
    }
    size_t n = (size_t)st.st_size, pages = n / 4096;
    unsigned long sum = 0;
    long f0 = minflt(), m0 = majflt();
    /* Read every page of a private mapping... */
    const unsigned char *r = mmap(0, n, PROT_READ, MAP_PRIVATE, fd, 0);
    if (r == MAP_FAILED) return 2;
    for (size_t i = 0; i < pages; i++) sum += r[i * 4096];
    munmap((void *)r, n);
    long read_faults = minflt() - f0;
    /* ...write every fourth page of another (COW of the file's page)... */
    unsigned char *w = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (w == MAP_FAILED) return 3;
    for (size_t i = 0; i < pages; i += 4) w[i * 4096] += 1;
    munmap(w, n);
    long write_faults = minflt() - f0 - read_faults;
    /* ...and read every page of a shared one. */
    const unsigned char *s = mmap(0, n, PROT_READ, MAP_SHARED, fd, 0);
    if (s == MAP_FAILED) return 4;
    for (size_t i = 0; i < pages; i++) sum += s[i * 4096];
    munmap((void *)s, n);
    long shared_faults = minflt() - f0 - read_faults - write_faults;
    printf("filemap pages=%zu read=%ld cow=%ld shared=%ld minflt=%ld majflt=%ld sum=%lu\n", pages, read_faults,
           write_faults, shared_faults, minflt() - f0, majflt() - m0, sum);
    return 0;
}

static int exec_child(const char *self) {
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {(char *)self, "child", 0};
        execv(self, argv);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid) return 1;
    printf("exec status=%d minflt=%ld majflt=%ld\n", WEXITSTATUS(status), ru.ru_minflt, ru.ru_majflt);
    return 0;
}

static int child(void) {
    unsigned sum = 0;
    for (int i = 0; i < BIG; i += 4096) sum += big[i];
    return (int)(sum + big[BIG - 1]) & 1;
}

static int syscalls(long n) {
    checkpoint("abi-sys-a");
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    checkpoint("abi-sys-b");
    printf("syscalls n=%ld\n", n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    if (!strcmp(argv[1], "malloc")) return churn();
    if (!strcmp(argv[1], "filemap") && argc > 2) return filemap(argv[2]);
    if (!strcmp(argv[1], "exec")) return exec_child(argv[0]);
    if (!strcmp(argv[1], "child")) return child();
    if (!strcmp(argv[1], "syscalls") && argc > 2) return syscalls(atol(argv[2]));
    return 64;
}
