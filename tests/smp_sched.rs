//! The guest's side of SMP: the kernel starts the CPUs the VMM's MADT
//! lists (INIT-SIPI-SIPI to a real-mode trampoline), runs processes on
//! all of them, flushes other CPUs' TLBs by IPI, and parks the others at
//! checkpoints so the host's checks see settled state.

mod common;

use common::{boot, compile, Scratch};

/// Forks CHILDREN processes that each map, touch, fork (a COW child that
/// writes every other page), check their own data and unmap, with a
/// checkpoint while mapped; the parent counts failures.
const CHURN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILDREN 6
#define PAGES 48

int main(int argc, char **argv) {
    int checkpoint = argc > 1;
    for (int i = 0; i < CHILDREN; i++) {
        pid_t p = fork();
        if (p < 0) { perror("fork"); return 2; }
        if (p == 0) {
            size_t len = PAGES * 4096;
            unsigned char *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) _exit(3);
            for (size_t j = 0; j < PAGES; j++) m[j * 4096] = (unsigned char)(i * 7 + j);
            pid_t c = fork();
            if (c == 0) {
                for (size_t j = 0; j < PAGES; j += 2) m[j * 4096] ^= 0xff;
                if (checkpoint && i == 0) syscall(503, "smp-mapped", 10);
                for (size_t j = 0; j < PAGES; j += 2)
                    if (m[j * 4096] != (unsigned char)((i * 7 + j) ^ 0xff)) _exit(4);
                _exit(0);
            }
            int st;
            waitpid(c, &st, 0);
            long bad = !WIFEXITED(st) || WEXITSTATUS(st) != 0;
            for (size_t j = 0; j < PAGES; j++)
                if (m[j * 4096] != (unsigned char)(i * 7 + j)) bad++;
            munmap(m, len);
            _exit(bad ? 1 : 0);
        }
    }
    int fails = 0;
    for (int i = 0; i < CHILDREN; i++) {
        int st;
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) fails++;
    }
    printf("churn: %d children, %d failed\n", CHILDREN, fails);
    return fails;
}
"#;

/// The per-CPU counts of the kernel's `sched: context switches per CPU:`
/// line.
fn switches_per_cpu(log: &str) -> Vec<u64> {
    per_cpu(log, "context switches")
}

/// The per-CPU counts of the kernel's `sched: WHAT per CPU:` line.
fn per_cpu(log: &str, what: &str) -> Vec<u64> {
    let line = log.lines().find(|l| l.contains(&format!("sched: {what} per CPU:"))).unwrap_or("");
    line.split_whitespace().filter_map(|w| w.split_once('=').and_then(|(_, v)| v.parse().ok())).collect()
}

/// argv[1] CPUs: as many children spinning in ring 3 (few system calls)
/// each note the CPU they find themselves on (getcpu) in a shared mask
/// until every CPU is in it (or a bound of rounds is reached), and the
/// parent prints how many CPUs ran them. Then affinity: a child that
/// excludes its CPU with sched_setaffinity is on an allowed one when the
/// call returns; one the parent confines to another CPU while it spins
/// there gets there.
const SPREAD: &str = r#"
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Unbuffered: children leave by _exit. */
#define ROUNDS 4000

static int cpu(void) { unsigned c = 99; syscall(SYS_getcpu, &c, 0, 0); return (int)c; }
static void spin(void) { for (volatile long j = 0; j < 200000; j++) ; }
static int pin(pid_t pid, int c) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(c, &s);
    return sched_setaffinity(pid, sizeof s, &s);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int n = argc > 1 ? atoi(argv[1]) : 2;
    long full = (1L << n) - 1;
    volatile long *sh = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return 2;
    for (int i = 0; i < n; i++) {
        if (fork() == 0) {
            for (int k = 0; k < ROUNDS && __atomic_load_n(&sh[0], __ATOMIC_SEQ_CST) != full; k++) {
                __atomic_fetch_or(&sh[0], 1L << cpu(), __ATOMIC_SEQ_CST);
                spin();
            }
            _exit(0);
        }
    }
    while (wait(NULL) > 0) ;
    printf("spread: %d of %d CPUs ran the children\n", __builtin_popcountl(sh[0]), n);

    /* A child leaves its CPU by its own sched_setaffinity. */
    if (fork() == 0) {
        int ok = 1;
        for (int c = n - 1; c >= 0; c--) ok &= pin(0, c) == 0 && cpu() == c;
        printf("self-pinned to each CPU in turn: %s\n", ok ? "on it each time" : "NOT on it");
        _exit(0);
    }
    while (wait(NULL) > 0) ;

    /* The parent moves a child spinning on CPU 1 to CPU 0 (while it
       runs there: the reschedule IPI sends it on its way). */
    sh[1] = -1;
    sh[2] = 0;
    pin(0, 0);
    pid_t c = fork();
    if (c == 0) {
        pin(0, 1);
        for (int k = 0; k < ROUNDS && !sh[2]; k++) { sh[1] = cpu(); spin(); }
        for (int k = 0; k < ROUNDS && cpu() != 0; k++) spin();
        printf("moved by the parent: %s\n", cpu() == 0 ? "on the CPU it was given" : "NOT moved");
        _exit(0);
    }
    while (sh[1] != 1) sched_yield();
    pin(c, 0);
    sh[2] = 1;
    waitpid(c, NULL, 0);
    return 0;
}
"#;

#[test]
fn four_cpus_come_up_and_the_default_guest_exits_normally() {
    let run = boot(&["--cpus", "4"]);
    assert_eq!(run.status, 0, "{}", run.all());
    let log = run.all();
    assert!(log.contains("ACPI: MADT lists 4 CPU(s)"), "{log}");
    for cpu in 1..4 {
        assert!(log.contains(&format!("smpboot: CPU {cpu} is up (APIC id {cpu})")), "{log}");
    }
    assert!(log.contains("smp: Brought up 1 node, 4 CPUs"), "{log}");
}

#[test]
fn maxcpus_limits_the_cpus_the_kernel_starts() {
    let run = boot(&["--cpus", "4", "--cmdline", "maxcpus=2"]);
    assert_eq!(run.status, 0, "{}", run.all());
    assert!(run.all().contains("smp: Brought up 1 node, 2 CPUs"), "{}", run.all());
    assert!(!run.all().contains("CPU 2 is up"), "{}", run.all());
}

#[test]
fn processes_churn_on_every_cpu_and_the_checks_hold_at_a_checkpoint() {
    let dir = Scratch::new("smp-churn");
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let prog = compile("musl-gcc", CHURN, &dir.0, "churn", &["-static"]);
    std::fs::copy(&prog, root.join("init")).unwrap();
    for cpus in ["2", "4"] {
        let run = boot(&[
            "--cpus",
            cpus,
            "--initrd",
            root.to_str().unwrap(),
            "--verify=refcount,isolation,cow-ro,freed-mapped,tlb",
            "--inspect-at",
            "smp-mapped",
            "--cmdline=-- checkpoint",
        ]);
        let log = run.all();
        assert_eq!(run.status, 0, "{cpus} CPUs: {log}");
        assert!(run.stdout.contains("churn: 6 children, 0 failed"), "{cpus} CPUs: {log}");
        assert!(log.contains(&format!("smp: Brought up 1 node, {cpus} CPUs")), "{log}");
        // The checks ran at the checkpoint and passed.
        assert!(log.contains("verify refcount: ok"), "{log}");
        assert!(log.contains("verify isolation: ok"), "{log}");
        // The stale-TLB detector replayed every CPU's page-table changes,
        // flushes and frees up to the checkpoint: none went stale.
        let tlb = log.lines().find(|l| l.starts_with("verify tlb:")).unwrap_or_else(|| panic!("no tlb check: {log}"));
        assert!(tlb.starts_with("verify tlb: ok (") && tlb.contains(" 0 stale"), "{tlb}\n{log}");
        // Work ran on more than one CPU.
        let per = switches_per_cpu(&log);
        assert_eq!(per.len(), cpus.parse::<usize>().unwrap(), "{log}");
        assert!(per.iter().filter(|&&n| n > 0).count() >= 2, "only one CPU ran tasks: {per:?}\n{log}");
    }
}

#[test]
fn work_spreads_over_every_cpu_and_affinity_moves_tasks() {
    let dir = Scratch::new("smp-spread");
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let prog = compile("musl-gcc", SPREAD, &dir.0, "spread", &["-static"]);
    std::fs::copy(&prog, root.join("init")).unwrap();
    for cpus in [2usize, 4] {
        let n = cpus.to_string();
        let run = boot(&["--cpus", &n, "--initrd", root.to_str().unwrap(), &format!("--cmdline=-- {n}")]);
        let log = run.all();
        assert_eq!(run.status, 0, "{cpus} CPUs: {log}");
        assert!(run.stdout.contains(&format!("spread: {cpus} of {cpus} CPUs ran the children")), "{log}");
        assert!(run.stdout.contains("self-pinned to each CPU in turn: on it each time"), "{log}");
        assert!(run.stdout.contains("moved by the parent: on the CPU it was given"), "{log}");
        // The kernel's own per-CPU counts agree: every CPU ran tasks, and
        // the run queues are empty at power-off.
        let run_on = per_cpu(&log, "tasks run");
        assert_eq!(run_on.len(), cpus, "{log}");
        assert!(run_on.iter().all(|&n| n > 0), "a CPU ran no task: {run_on:?}\n{log}");
        assert_eq!(per_cpu(&log, "run queue length"), vec![0; cpus], "{log}");
        assert!(per_cpu(&log, "longest run queue").iter().any(|&n| n > 0), "{log}");
    }
}
