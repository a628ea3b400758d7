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
    let line = log.lines().find(|l| l.contains("context switches per CPU:")).unwrap_or("");
    line.split_whitespace().filter_map(|w| w.split_once('=').and_then(|(_, v)| v.parse().ok())).collect()
}

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
            "--verify=refcount,isolation,cow-ro,freed-mapped",
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
        // Work ran on more than one CPU.
        let per = switches_per_cpu(&log);
        assert_eq!(per.len(), cpus.parse::<usize>().unwrap(), "{log}");
        assert!(per.iter().filter(|&&n| n > 0).count() >= 2, "only one CPU ran tasks: {per:?}\n{log}");
    }
}
