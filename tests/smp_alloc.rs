//! The allocators' per-CPU caches on several CPUs (issue 16): every CPU
//! serves page and kmalloc requests from its own lists without the page
//! allocator's lock, frees go to the freeing CPU's lists, the host's
//! checks hold at a checkpoint while processes churn on all CPUs, and
//! draining every CPU's lists at the end gives every page back.

mod common;

use common::{boot, compile, Scratch};

/// Forks CHILDREN processes that each map and touch pages (order-0 user
/// pages from their CPU's list), malloc and free, fork a COW child, and
/// spin a little so the balancer spreads them over the CPUs; one child
/// stops at a checkpoint while its pages are mapped.
const CHURN: &str = r#"
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILDREN 8
#define PAGES 32

int main(int argc, char **argv) {
    int checkpoint = argc > 1;
    cpu_set_t all;
    if (sched_getaffinity(0, sizeof all, &all) != 0) { perror("sched_getaffinity"); return 2; }
    int ncpus = CPU_COUNT(&all);
    for (int i = 0; i < CHILDREN; i++) {
        pid_t p = fork();
        if (p < 0) { perror("fork"); return 2; }
        if (p == 0) {
            /* Child i works (allocates, forks, frees) on CPU i % ncpus
               only, so every CPU's own lists serve and take pages whatever
               the load balancer would have done. */
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(i % ncpus, &one);
            if (sched_setaffinity(0, sizeof one, &one) != 0) _exit(4);
            if (sched_getcpu() != i % ncpus) _exit(5);
            volatile unsigned long spin = 0;
            for (unsigned long k = 0; k < 200000; k++) spin += k;
            size_t len = PAGES * 4096;
            unsigned char *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) _exit(3);
            for (size_t j = 0; j < PAGES; j++) m[j * 4096] = (unsigned char)(i + j);
            pid_t c = fork();
            if (c == 0) {
                for (size_t j = 0; j < PAGES; j += 2) m[j * 4096] ^= 0xff;
                if (checkpoint && i == 0) syscall(503, "pcp-mapped", 10);
                _exit(0);
            }
            int st;
            waitpid(c, &st, 0);
            long bad = !WIFEXITED(st) || WEXITSTATUS(st) != 0;
            for (size_t j = 0; j < PAGES; j++)
                if (m[j * 4096] != (unsigned char)(i + j)) bad++;
            munmap(m, len);
            _exit(bad ? 1 : 0);
        }
    }
    int fails = 0;
    for (int i = 0; i < CHILDREN; i++) {
        int st;
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) fails++;
    }
    printf("pcp churn: %d children, %d failed\n", CHILDREN, fails);
    return fails;
}
"#;

/// The `pagesets:` lines: per CPU, (pcp_alloc, pcp_free, slab alloc, slab free).
fn pagesets(log: &str) -> Vec<(u64, u64, u64, u64)> {
    let field = |l: &str, key: &str| -> u64 {
        let mut w = l.split_whitespace();
        while let Some(x) = w.next() {
            if x == key {
                return w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        0
    };
    log.lines()
        .filter(|l| l.starts_with("pagesets: cpu"))
        .map(|l| {
            let (pages, slab) = l.split_once('|').unwrap_or((l, ""));
            (field(pages, "pcp_alloc"), field(pages, "pcp_free"), field(slab, "alloc"), field(slab, "free"))
        })
        .collect()
}

#[test]
fn pages_and_objects_are_served_on_every_cpu_and_none_is_lost() {
    let dir = Scratch::new("pcp-churn");
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let prog = compile("musl-gcc", CHURN, &dir.0, "churn", &["-static"]);
    std::fs::copy(&prog, root.join("init")).unwrap();
    for cpus in [2usize, 4] {
        let run = boot(&[
            "--cpus",
            &cpus.to_string(),
            "--initrd",
            root.to_str().unwrap(),
            "--verify=refcount,isolation,cow-ro,freed-mapped",
            "--inspect-at",
            "pcp-mapped",
            "--cmdline=-- checkpoint",
        ]);
        let log = run.all();
        assert_eq!(run.status, 0, "{cpus} CPUs: {log}");
        assert!(run.stdout.contains("pcp churn: 8 children, 0 failed"), "{cpus} CPUs: {log}");
        for check in ["refcount", "isolation", "cow-ro", "freed-mapped"] {
            assert!(log.contains(&format!("verify {check}: ok")), "{cpus} CPUs, {check}: {log}");
        }
        let sets = pagesets(&log);
        assert_eq!(sets.len(), cpus, "one pagesets line per CPU: {log}");
        for (cpu, &(pcp_alloc, pcp_free, slab_alloc, slab_free)) in sets.iter().enumerate() {
            assert!(pcp_alloc > 0 && pcp_free > 0, "cpu{cpu} served no pages from its own list: {sets:?}\n{log}");
            assert!(slab_alloc > 0 && slab_free > 0, "cpu{cpu} served no kmalloc from its own array: {sets:?}\n{log}");
        }
        // Every CPU's lists drained at power-off, the buddy consistent and
        // its counts adding up: no page lost on a per-CPU list.
        let line = log.lines().find(|l| l.starts_with("pcp: drained")).unwrap_or_else(|| panic!("{log}"));
        assert!(line.contains("buddy consistent"), "{line}\n{log}");
        assert!(!log.contains("entries left on per-CPU lists"), "{log}");
    }
}

/// The in-guest allocator self-tests (leak checks included: they drain
/// every CPU's lists first) on several CPUs.
#[test]
fn allocator_selftests_pass_on_four_cpus() {
    for group in ["buddy", "slab"] {
        let run = boot(&["--cpus", "4", "--cmdline", &format!("selftest={group}")]);
        let log = run.all();
        assert_eq!(run.status, 0, "{group}: {log}");
        assert!(!log.contains("FAIL"), "{group}: {log}");
    }
}

/// The bench's figures: with the per-CPU caches, no page-allocator lock
/// on the fast paths; bypassed, every operation takes it (two per pair).
#[test]
fn pcpbench_counts_no_shared_lock_on_the_fast_paths() {
    for cpus in ["1", "2", "4"] {
        let run = boot(&["--cpus", cpus, "--cmdline", "pcpbench"]);
        let log = run.all();
        assert_eq!(run.status, 0, "{log}");
        // Every CPU ran the loops at once and reports its own counts.
        let n: usize = cpus.parse().unwrap();
        for cpu in 0..n {
            let figures = |mode: &str| -> (u64, u64) {
                let l = log
                    .lines()
                    .find(|l| l.contains(&format!("pcpbench: {cpus} CPUs, cpu{cpu}, ")) && l.contains(mode))
                    .unwrap_or_else(|| panic!("cpu{cpu}, {mode}: {log}"));
                assert!(l.contains("(ok yes)"), "{l}");
                // "... taken K times per 1000 kmalloc/kfree pairs, P times per ...".
                let words: Vec<&str> = l.split_whitespace().collect();
                let nums: Vec<u64> =
                    words.windows(2).filter(|w| w[1] == "times").filter_map(|w| w[0].parse().ok()).collect();
                assert_eq!(nums.len(), 2, "{l}");
                (nums[0], nums[1])
            };
            let (k_locked, p_locked) = figures("bypassed");
            let (k_pcp, p_pcp) = figures("per-CPU caches");
            assert!(k_locked >= 2000 && p_locked >= 2000, "cpu{cpu}: {log}");
            assert_eq!((k_pcp, p_pcp), (0, 0), "cpu{cpu}: {log}");
        }
    }
}
