//! Threads (issue 16's Linux part): static pthread programs built now
//! with `gcc -static -pthread` (glibc) and `musl-gcc -static` run in the
//! guest as on the host: clone with CLONE_THREAD and the rest of what
//! pthread_create passes, futexes under mutexes, condition variables and
//! pthread_join, thread groups (getpid/gettid, exit vs exit_group, the
//! leader's pthread_exit), signals to a process with threads, fork from
//! a thread, shared open file descriptions, vfork, and the host's
//! `--verify` at a checkpoint while threads live.

mod common;

use common::{boot, compile, Run, Scratch};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The two C toolchains, each with what it needs for threads.
const COMPILERS: [(&str, &[&str]); 2] = [("gcc", &["-static", "-pthread"]), ("musl-gcc", &["-static"])];

/// One program, its modes chosen by argv[1]. Every mode prints only what
/// Linux prints too, so the host run is the reference.
const THREADS: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NT 4
#define ITER 10000
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter, atomic_counter;
static pthread_barrier_t bar;
static long tids[NT];

static long gettid_(void) { return syscall(SYS_gettid); }

/* The Threads: line of /proc/self/status (the host's too). */
static int threads_now(void) {
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY);
    if (fd < 0) return -1;
    int n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strstr(buf, "Threads:");
    return p ? atoi(p + 8) : -1;
}

static void *counting(void *arg) {
    long id = (long)arg;
    tids[id] = gettid_();
    size_t len = (size_t)(id + 1) * 16 * 4096;
    for (int round = 0; round < 2; round++) {
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) { printf("thread %ld: mmap failed\n", id); exit(9); }
        for (size_t i = 0; i < len; i += 4096) m[i] = (unsigned char)(id + i / 4096);
        for (size_t i = 0; i < len; i += 4096)
            if (m[i] != (unsigned char)(id + i / 4096)) { printf("thread %ld: bad byte\n", id); exit(9); }
        if (round == 0) pthread_barrier_wait(&bar); /* all mapped: main checks */
        if (round == 0) pthread_barrier_wait(&bar); /* main is done */
        munmap(m, len);
    }
    for (int i = 0; i < ITER; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
        __atomic_fetch_add(&atomic_counter, 1, __ATOMIC_SEQ_CST);
        if (i % 1000 == 0) sched_yield();
    }
    return (void *)(id * 10);
}

static int count_mode(void) {
    pthread_t t[NT];
    pthread_barrier_init(&bar, NULL, NT + 1);
    for (long i = 0; i < NT; i++)
        if (pthread_create(&t[i], NULL, counting, (void *)i)) { printf("pthread_create failed\n"); return 1; }
    pthread_barrier_wait(&bar);
    int distinct = 1;
    for (int i = 0; i < NT; i++) {
        if (tids[i] == getpid() || tids[i] <= 0) distinct = 0;
        for (int j = 0; j < i; j++) if (tids[i] == tids[j]) distinct = 0;
    }
    printf("main: getpid == gettid %d; threads' tids distinct %d; Threads: %d\n", getpid() == gettid_(), distinct,
           threads_now());
    fflush(stdout);
    /* The host verifies page tables and refcounts here, threads alive. */
    syscall(503, "threads-live", 12);
    pthread_barrier_wait(&bar);
    long sum = 0;
    for (int i = 0; i < NT; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (long)r;
    }
    printf("counter %ld atomic %ld (want %d); join values %ld; Threads: %d\n", counter, atomic_counter, NT * ITER, sum,
           threads_now());
    return counter == NT * ITER && atomic_counter == NT * ITER ? 0 : 1;
}

/* A bounded buffer: one producer, two consumers. */
#define ITEMS 3000
static int buf[4], head, tail, fill;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER, not_full = PTHREAD_COND_INITIALIZER;
static long consumed_sum[2], consumed_n[2];

static void *producer(void *arg) {
    (void)arg;
    for (int i = 1; i <= ITEMS + 2; i++) {
        pthread_mutex_lock(&lock);
        while (fill == 4) pthread_cond_wait(&not_full, &lock);
        buf[head] = i > ITEMS ? -1 : i; /* two end markers */
        head = (head + 1) % 4;
        fill++;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void *consumer(void *arg) {
    long me = (long)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (fill == 0) pthread_cond_wait(&not_empty, &lock);
        int v = buf[tail];
        tail = (tail + 1) % 4;
        fill--;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&lock);
        if (v < 0) return NULL;
        consumed_sum[me] += v;
        consumed_n[me]++;
    }
}

static int go;
static void *waiter(void *a) {
    (void)a;
    pthread_mutex_lock(&lock);
    while (!go) pthread_cond_wait(&not_empty, &lock);
    pthread_mutex_unlock(&lock);
    return (void *)1;
}

static int condvar_mode(void) {
    pthread_t p, c[2];
    pthread_create(&c[0], NULL, consumer, (void *)0);
    pthread_create(&c[1], NULL, consumer, (void *)1);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(p, NULL);
    pthread_join(c[0], NULL);
    pthread_join(c[1], NULL);
    long n = consumed_n[0] + consumed_n[1], sum = consumed_sum[0] + consumed_sum[1];
    printf("condvar: %ld items, sum %ld (want %d, %d)\n", n, sum, ITEMS, ITEMS * (ITEMS + 1) / 2);
    /* Broadcast: three waiters released at once. */
    pthread_t w[3];
    for (int i = 0; i < 3; i++) pthread_create(&w[i], NULL, waiter, NULL);
    for (int i = 0; i < 20; i++) sched_yield();
    pthread_mutex_lock(&lock);
    go = 1;
    pthread_cond_broadcast(&not_empty);
    pthread_mutex_unlock(&lock);
    long back = 0;
    for (int i = 0; i < 3; i++) {
        void *r;
        pthread_join(w[i], &r);
        back += (long)r;
    }
    printf("broadcast: %ld waiters released\n", back);
    return n == ITEMS && sum == (long)ITEMS * (ITEMS + 1) / 2 && back == 3 ? 0 : 1;
}

static void *exiter(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++) sched_yield();
    printf("thread: exit(7)\n");
    fflush(stdout);
    exit(7);
}

static void *sleeper(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) pthread_cond_wait(&not_full, &lock); /* never signalled */
}

/* exit() in one thread ends every thread with its status. */
static int exit_mode(void) {
    pthread_t s, e;
    pthread_create(&s, NULL, sleeper, NULL);
    pthread_create(&e, NULL, exiter, NULL);
    pthread_join(s, NULL); /* never returns */
    printf("main: not reached\n");
    return 1;
}

static void *late(void *arg) {
    long id = (long)arg;
    pthread_barrier_wait(&bar);
    for (int i = 0; i < 50; i++) sched_yield();
    pthread_mutex_lock(&lock);
    counter += id;
    printf("late thread %ld done after main's pthread_exit\n", id);
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* The leader's pthread_exit while its threads run: the process lives on
   until the last one, and exits 0. */
static int mainexit_mode(void) {
    pthread_t t[2];
    pthread_barrier_init(&bar, NULL, 3);
    pthread_create(&t[0], NULL, late, (void *)1);
    pthread_create(&t[1], NULL, late, (void *)2);
    printf("main: pthread_exit\n");
    fflush(stdout);
    pthread_barrier_wait(&bar);
    pthread_exit(NULL);
}

static void *blocked(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    pthread_barrier_wait(&bar);
    for (;;) pthread_cond_wait(&not_full, &lock);
}

static void *spinner(void *arg) {
    (void)arg;
    pthread_barrier_wait(&bar);
    for (;;) sched_yield();
}

/* kill -9 of a process with threads (sleeping on futexes and running):
   the parent's wait4 sees SIGKILL. */
static int kill_mode(void) {
    for (int round = 0; round < 2; round++) {
        pid_t c = fork();
        if (c == 0) {
            pthread_t t[4];
            pthread_barrier_init(&bar, NULL, 5);
            pthread_create(&t[0], NULL, blocked, NULL);
            pthread_create(&t[1], NULL, spinner, NULL);
            pthread_create(&t[2], NULL, spinner, NULL);
            pthread_create(&t[3], NULL, blocked, NULL);
            pthread_barrier_wait(&bar);
            for (;;) pause();
        }
        for (int i = 0; i < 200; i++) sched_yield();
        kill(c, SIGKILL);
        int st;
        pid_t w = waitpid(c, &st, 0);
        printf("round %d: waitpid %d signalled %d sig %d\n", round, w == c, WIFSIGNALED(st), WTERMSIG(st));
    }
    fflush(stdout);
    syscall(503, "threads-killed", 14);
    return 0;
}

static void *forker(void *arg) {
    (void)arg;
    pid_t c = fork();
    if (c == 0) {
        /* The child has only the thread that forked, as its main. */
        printf("child: getpid == gettid %d, Threads: %d\n", getpid() == gettid_(), threads_now());
        fflush(stdout);
        _exit(3);
    }
    int st;
    waitpid(c, &st, 0);
    printf("thread: child exited %d\n", WEXITSTATUS(st));
    return NULL;
}

/* fork from a thread; the parent's fds share their offsets with the
   child's; vfork suspends the parent until the child exits. */
static int fork_mode(void) {
    pthread_t t;
    pthread_create(&t, NULL, forker, NULL);
    pthread_join(t, NULL);
    int fd = open("/proc/self/status", O_RDONLY);
    pid_t c = fork();
    if (c == 0) {
        char b[10];
        read(fd, b, sizeof b);
        _exit(0);
    }
    waitpid(c, NULL, 0);
    printf("offset after the child's read: %ld\n", (long)lseek(fd, 0, SEEK_CUR));
    static volatile int shared_flag;
    pid_t v = vfork();
    if (v == 0) {
        shared_flag = 5; /* the borrowed address space */
        _exit(4);
    }
    int st;
    waitpid(v, &st, 0);
    printf("vfork: child exited %d, its store seen %d\n", WEXITSTATUS(st), shared_flag);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *m = argc > 1 ? argv[1] : "count";
    if (!strcmp(m, "count")) return count_mode();
    if (!strcmp(m, "condvar")) return condvar_mode();
    if (!strcmp(m, "exit")) return exit_mode();
    if (!strcmp(m, "mainexit")) return mainexit_mode();
    if (!strcmp(m, "kill")) return kill_mode();
    if (!strcmp(m, "fork")) return fork_mode();
    return 2;
}
"#;

/// Builds the program with `cc` into `dir`.
fn build(dir: &Path, cc: &str, flags: &[&str]) -> PathBuf {
    compile(cc, THREADS, dir, &format!("threads-{cc}"), flags)
}

/// Runs `prog mode` on the host: (status, stdout).
fn host(prog: &Path, mode: &str) -> (i32, String) {
    let o = Command::new(prog).arg(mode).output().expect("run the program on the host");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `vmm run [extra] -- prog mode`.
fn guest(prog: &Path, mode: &str, extra: &[&str]) -> Run {
    let mut a: Vec<&str> = extra.to_vec();
    a.extend_from_slice(&["--", prog.to_str().unwrap(), mode]);
    boot(&a)
}

/// The program's own lines (the host's `--verify` reports at checkpoints
/// are on the same stdout).
fn program_lines(s: &str) -> Vec<String> {
    s.lines().filter(|l| !l.starts_with("--- checkpoint") && !l.starts_with("verify ")).map(String::from).collect()
}

/// Sorted lines (threads print in an order the scheduler picks).
fn sorted(s: &str) -> Vec<String> {
    let mut v = program_lines(s);
    v.sort();
    v
}

/// Runs `mode` with both compilers; the guest prints the host's lines
/// (in any order if `any_order`) and exits with `want`, as the host.
fn same_as_host(mode: &str, want: i32, any_order: bool, extra: &[&str]) -> Vec<Run> {
    let dir = Scratch::new(&format!("threads-{mode}"));
    let mut runs = Vec::new();
    for (cc, flags) in COMPILERS {
        let prog = build(&dir.0, cc, flags);
        let (status, stdout) = host(&prog, mode);
        assert_eq!(status, want, "{cc}: the host run of {mode} exited {status}: {stdout}");
        let run = guest(&prog, mode, extra);
        assert_eq!(run.status, want, "{cc}: {mode} in the guest: {}", run.all());
        if any_order {
            assert_eq!(sorted(&run.stdout), sorted(&stdout), "{cc}: {mode}: {}", run.all());
        } else {
            assert_eq!(program_lines(&run.stdout), program_lines(&stdout), "{cc}: {}", run.all());
        }
        assert!(!run.stderr.contains("traps:") && !run.stderr.contains("panic"), "{cc}: {}", run.all());
        runs.push(run);
    }
    runs
}

/// The lines of the `--verify` block at checkpoint `cp`.
fn verify_block<'a>(out: &'a str, cp: &str) -> &'a str {
    let start =
        out.find(&format!("--- checkpoint '{cp}': verify ---")).unwrap_or_else(|| panic!("no verify at {cp}:\n{out}"));
    let rest = &out[start..];
    let end = rest[4..].find("--- checkpoint").map_or(rest.len(), |e| e + 4);
    &rest[..end]
}

#[test]
fn four_threads_count_exactly_under_a_mutex_and_atomics_with_verify_while_they_live() {
    let runs = same_as_host("count", 0, false, &["--inspect-at", "threads-live", "--verify=refcount,isolation"]);
    for r in &runs {
        assert!(r.stdout.contains("counter 40000 atomic 40000"), "{}", r.all());
        assert!(r.stdout.contains("Threads: 5\n"), "{}", r.all());
        let v = verify_block(&r.stdout, "threads-live");
        for check in ["refcount", "isolation"] {
            assert!(v.contains(&format!("verify {check}: ok")), "{check}: {v}\n{}", r.all());
        }
        // The futexes were used (the kernel served futex, not -ENOSYS).
        assert!(!r.stderr.contains("system call futex"), "{}", r.all());
    }
}

#[test]
fn a_condition_variable_producer_consumer_and_broadcast() {
    same_as_host("condvar", 0, false, &[]);
}

#[test]
fn exit_in_a_thread_ends_the_whole_process_with_its_status() {
    same_as_host("exit", 7, false, &[]);
}

#[test]
fn pthread_exit_of_main_leaves_the_process_to_its_last_thread() {
    for r in same_as_host("mainexit", 0, true, &[]) {
        assert!(r.stdout.contains("late thread 2 done"), "{}", r.all());
    }
}

#[test]
fn kill_of_a_process_with_threads_reaps_every_thread() {
    for r in
        same_as_host("kill", 0, false, &["--inspect-at", "threads-killed", "--verify=refcount,isolation,freed-mapped"])
    {
        let v = verify_block(&r.stdout, "threads-killed");
        for check in ["refcount", "isolation", "freed-mapped"] {
            assert!(v.contains(&format!("verify {check}: ok")), "{check}: {v}\n{}", r.all());
        }
    }
}

#[test]
fn no_kernel_stack_outlives_its_thread() {
    // meminfo's KernelStack before the threads and after the killed
    // process is reaped: the same.
    const SRC: &str = r#"
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static long kstack(void) {
    char b[8192];
    int fd = open("/proc/meminfo", O_RDONLY);
    int n = read(fd, b, sizeof b - 1);
    close(fd);
    b[n > 0 ? n : 0] = 0;
    char *p = strstr(b, "KernelStack:");
    return p ? atol(p + 12) : -1;
}
static void *idle(void *a) { (void)a; for (;;) pause(); }
static void *quick(void *a) { return a; }
int main(void) {
    long before = kstack();
    for (int round = 0; round < 2; round++) {
        pid_t c = fork();
        if (c == 0) {
            pthread_t t;
            for (int i = 0; i < 3; i++) pthread_create(&t, NULL, idle, NULL);
            for (int i = 0; i < 3; i++) { pthread_create(&t, NULL, quick, NULL); pthread_join(t, NULL); }
            for (;;) pause();
        }
        for (int i = 0; i < 100; i++) sched_yield();
        long during = kstack();
        kill(c, SIGKILL);
        waitpid(c, NULL, 0);
        printf("round %d: KernelStack grew %d, back %d\n", round, during > before, kstack() == before);
    }
    pthread_t t;
    pthread_create(&t, NULL, quick, NULL);
    pthread_join(t, NULL);
    printf("joined thread gone: %d\n", kstack() == before);
    return 0;
}
"#;
    let dir = Scratch::new("threads-kstack");
    for (cc, flags) in COMPILERS {
        let prog = compile(cc, SRC, &dir.0, &format!("kstack-{cc}"), flags);
        let run = boot(&["--", prog.to_str().unwrap()]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        for round in 0..2 {
            assert!(run.stdout.contains(&format!("round {round}: KernelStack grew 1, back 1")), "{cc}: {}", run.all());
        }
        assert!(run.stdout.contains("joined thread gone: 1"), "{cc}: {}", run.all());
    }
}

#[test]
fn fork_from_a_thread_shared_offsets_and_vfork() {
    same_as_host("fork", 0, false, &[]);
}

/// Every mode of the program on `cpus` vCPUs, with both C libraries, as
/// on the host: the threads of one process then really run at once on
/// several CPUs (futex wakes, exits and kills crossing CPUs, TLB
/// shootdowns of the shared mm), with `--verify` while they live.
fn every_mode_on(cpus: &str) {
    let modes: [(&str, i32, bool); 6] = [
        ("count", 0, false),
        ("condvar", 0, false),
        ("exit", 7, false),
        ("mainexit", 0, true),
        ("kill", 0, false),
        ("fork", 0, false),
    ];
    for (mode, want, any_order) in modes {
        let extra: &[&str] = if mode == "count" {
            &["--cpus", cpus, "--inspect-at", "threads-live", "--verify=refcount,isolation,tlb"]
        } else {
            &["--cpus", cpus]
        };
        for r in same_as_host(mode, want, any_order, extra) {
            assert!(r.all().contains(&format!("smp: Brought up 1 node, {cpus} CPUs")), "{mode}: {}", r.all());
            if mode == "count" {
                assert!(r.stdout.contains("counter 40000 atomic 40000"), "{}", r.all());
                let v = verify_block(&r.stdout, "threads-live");
                for check in ["refcount", "isolation", "tlb"] {
                    assert!(v.contains(&format!("verify {check}: ok")), "{check}: {v}\n{}", r.all());
                }
                // Threads of one mm on several CPUs: none kept a stale
                // translation of a changed or freed page.
                assert!(v.contains(" 0 stale"), "{v}");
            }
        }
    }
}

#[test]
fn every_mode_on_two_cpus() {
    every_mode_on("2");
}

#[test]
fn every_mode_on_four_cpus() {
    every_mode_on("4");
}

/// Robust mutexes: a thread locks two `PTHREAD_MUTEX_ROBUST` mutexes and
/// dies through the raw exit system call (so no libc code releases
/// anything: only the kernel's walk of its `set_robust_list` list,
/// Linux's `exit_robust_list`, can), while main waits in
/// `pthread_mutex_lock` on the first: the kernel marks both words
/// FUTEX_OWNER_DIED and wakes main, whose locks return EOWNERDEAD; after
/// `pthread_mutex_consistent` and an unlock the mutex locks normally.
/// Without the walk main would sleep forever (the run's timeout). The
/// mutexes are process-shared so that musl, too, puts them on the list
/// it registers (musl asks `get_robust_list` first, to learn that robust
/// mutexes work).
const ROBUST: &str = r#"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
static pthread_mutex_t a, b;
static volatile int held;
static const char *name(int r) { return r == EOWNERDEAD ? "EOWNERDEAD" : r == 0 ? "0" : "other"; }
static void *holder(void *arg) {
    (void)arg;
    int ra = pthread_mutex_lock(&a), rb = pthread_mutex_lock(&b);
    printf("holder: locked %d %d\n", ra, rb);
    fflush(stdout);
    held = 1;
    usleep(50000); /* main is most likely asleep on a by now */
    syscall(SYS_exit, 0);
    return NULL;
}
int main(void) {
    pthread_mutexattr_t at;
    pthread_mutexattr_init(&at);
    pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
    /* musl hands only process-shared robust mutexes to the kernel's list
       (it releases private ones itself in pthread_exit, which SYS_exit
       skips); glibc hands both. */
    pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&a, &at);
    pthread_mutex_init(&b, &at);
    pthread_t t;
    pthread_create(&t, NULL, holder, NULL);
    while (!held) sched_yield();
    int ra = pthread_mutex_lock(&a);
    int rb = pthread_mutex_lock(&b);
    printf("main: a %s, b %s\n", name(ra), name(rb));
    /* No pthread_join: musl's joiner waits for a word its pthread_exit
       clears, which SYS_exit skipped. */
    pthread_mutex_consistent(&a);
    pthread_mutex_consistent(&b);
    pthread_mutex_unlock(&a);
    pthread_mutex_unlock(&b);
    printf("again: a %s, b %s\n", name(pthread_mutex_lock(&a)), name(pthread_mutex_lock(&b)));
    return 0;
}
"#;

#[test]
fn a_robust_mutex_held_by_a_dead_thread_returns_eownerdead() {
    let dir = Scratch::new("threads-robust");
    for (cc, flags) in COMPILERS {
        let prog = compile(cc, ROBUST, &dir.0, &format!("robust-{cc}"), flags);
        let o = Command::new(&prog).output().expect("run the program on the host");
        let host_out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(
            host_out, "holder: locked 0 0\nmain: a EOWNERDEAD, b EOWNERDEAD\nagain: a 0, b 0\n",
            "{cc}: the host's run"
        );
        let run = boot(&["--", prog.to_str().unwrap()]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        assert_eq!(program_lines(&run.stdout), program_lines(&host_out), "{cc}: {}", run.all());
    }
}
