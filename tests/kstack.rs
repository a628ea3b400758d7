//! Tasks' kernel stacks in vmalloc space (Linux's CONFIG_VMAP_STACK,
//! guest/src/proc/kstack.rs): an overflow hits the unmapped guard page
//! below the stack and is reported as Linux's `handle_stack_overflow`
//! does, and forked tasks' stacks show in KernelStack, VmallocUsed and
//! /proc/vmallocinfo, and go back when the tasks are reaped.

mod common;
use common::{boot, run_c_init, Run};

/// The first `0x...` number after `marker` in `text`.
fn hex_after(text: &str, marker: &str) -> u64 {
    let at = text.find(marker).unwrap_or_else(|| panic!("no '{marker}' in:\n{text}")) + marker.len();
    let rest = text[at..].trim_start().trim_start_matches("0x");
    let end = rest.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(rest.len());
    u64::from_str_radix(&rest[..end], 16).unwrap_or_else(|e| panic!("'{marker}': {e} in:\n{text}"))
}

/// The line of `text` that starts with `prefix`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line '{prefix}' in:\n{text}"))
}

/// Checks an overflow report: the BUG line's address lies in the guard
/// page right below the stack it names, that stack is the one the probe
/// ran on, 32 KiB in the vmalloc window, and the task, CPU, oops and the
/// VMM's status all say what happened. Returns the guard-page address.
fn assert_overflow_report(r: &Run, cpu: u64) -> u64 {
    let out = &r.stdout;
    assert_eq!(r.status, 102, "an oops' status: {}", r.all());
    assert!(
        r.stderr.contains(
            "vmm: the guest exited with status 102 (a kernel oops: its report is on the guest console above)"
        ),
        "{}",
        r.all()
    );
    let bug = line(out, "BUG: stack guard page was hit at 0x");
    let hit = hex_after(bug, "hit at ");
    let (lo, hi) = (hex_after(bug, "(stack is "), hex_after(bug, "-0x"));
    assert_eq!(hi - lo, 32 << 10, "THREAD_SIZE: {bug}");
    assert!((lo - 4096..lo).contains(&hit), "{hit:#x} is not in the guard page below {lo:#x}: {bug}");
    // The vmalloc window (Linux's layout), 4 KiB aligned.
    assert!((0xffff_c900_0000_0000..0xffff_e900_0000_0000).contains(&lo) && lo % 4096 == 0, "{bug}");
    // The stack the probe announced it would overflow, and its task.
    let probe = line(out, "cmdline: task ");
    let pid: u64 = probe["cmdline: task ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(probe.contains(&format!("({lo:#x}-{hi:#x})")), "{probe} vs {bug}");
    assert!(probe.contains(&format!(" on CPU {cpu} ")), "{probe}");
    assert!(out.contains(&format!("CPU: {cpu} PID: {pid} Comm: stackoverflow\n")), "{}", r.all());
    hit
}

#[test]
fn recursion_into_the_guard_page_is_reported_as_a_stack_overflow() {
    let r = boot(&["--cmdline", "stackoverflow"]);
    let hit = assert_overflow_report(&r, 0);
    let out = &r.stdout;
    // The #PF could not be delivered on the exhausted stack: a #DF, on
    // its own stack, whose CR2 is the address in the guard page.
    assert!(out.contains("Oops: double fault (vector 0x8)"), "{}", r.all());
    assert!(out.contains("kernel stack overflow"), "{}", r.all());
    assert_eq!(hex_after(out, "CR2: "), hit, "{}", r.all());
    // Where it was: the recursing function, with the stack pointer at or
    // just above the faulting access, in the guard page too.
    assert!(line(out, "RIP: 0008:").contains("<kernel::cmdline::recurse+0x"), "{}", r.all());
    let rsp = hex_after(out, "RSP: 0010:");
    assert!((hit..hit + 4096).contains(&rsp) && rsp >> 12 == hit >> 12, "RSP {rsp:#x}, hit {hit:#x}");
    assert!(out.contains("---[ end trace ]---"), "{}", r.all());
}

#[test]
fn an_overflow_on_an_application_processor_names_that_cpu() {
    let r = boot(&["--cpus", "2", "--cmdline", "stackoverflow=1"]);
    assert_overflow_report(&r, 1);
    assert!(r.stdout.contains("Oops: double fault"), "{}", r.all());
}

#[test]
fn a_write_below_the_stack_from_above_is_caught_by_the_page_fault_path() {
    // The stack pointer is near the top, so the #PF is delivered; its
    // handler finds the address in the task's guard page and reports the
    // overflow from the #DF stack.
    let r = boot(&["--cmdline", "stackoverflow=write"]);
    let hit = assert_overflow_report(&r, 0);
    let out = &r.stdout;
    let lo = hex_after(line(out, "BUG: stack guard page"), "(stack is ");
    assert_eq!(hit, lo - 8, "{}", r.all());
    assert!(out.contains("Oops: page fault (vector 0xe) error code 0x2"), "{}", r.all());
    assert!(out.contains("#PF: write data access in kernel mode, page not present"), "{}", r.all());
}

#[test]
fn a_bad_probe_argument_is_refused() {
    let r = boot(&["--cmdline", "stackoverflow=0,read"]);
    assert_eq!(r.status, 2, "{}", r.all());
    assert!(r.stdout.contains("cmdline: stackoverflow=0,read: want CPU or CPU,write"), "{}", r.all());
}

/// Forks `CHILDREN` children that wait on a pipe, reads KernelStack,
/// VmallocUsed and the kernel stacks /proc/vmallocinfo lists before,
/// while they live (stopping at a checkpoint for the host) and after
/// they are reaped (another checkpoint).
const FORKS: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#define CHILDREN 12
static char buf[65536];
static const char *slurp(const char *path) {
    int fd = open(path, O_RDONLY);
    int n = 0, r;
    while (fd >= 0 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += r;
    if (fd >= 0) close(fd);
    buf[n] = 0;
    return buf;
}
static long field(const char *name) {
    char *p = strstr(slurp("/proc/meminfo"), name);
    return p ? atol(p + strlen(name)) : -1;
}
/* Kernel stacks in /proc/vmallocinfo; *bad counts the ones whose size
 * (with the guard page) or page count is not a 32 KiB stack's. */
static int stacks(int *bad) {
    int n = 0;
    *bad = 0;
    for (char *l = (char *)slurp("/proc/vmallocinfo"); l && *l;) {
        char *nl = strchr(l, '\n');
        if (nl) *nl = 0;
        if (strstr(l, " alloc_thread_stack_node ")) {
            n++;
            if (!strstr(l, " 36864 alloc_thread_stack_node pages=8 vmalloc")) (*bad)++;
        }
        l = nl ? nl + 1 : 0;
    }
    return n;
}
static void show(const char *when) {
    int bad;
    int n = stacks(&bad);
    printf("%s: KernelStack %ld VmallocUsed %ld stacks %d bad %d\n", when, field("KernelStack:"),
           field("VmallocUsed:"), n, bad);
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    show("before");
    int p[2];
    if (pipe(p)) return 1;
    pid_t kids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) {
        kids[i] = fork();
        if (kids[i] < 0) return 2;
        if (kids[i] == 0) {
            char c;
            close(p[1]);
            read(p[0], &c, 1);
            _exit(7);
        }
    }
    show("during");
    syscall(503, "kstacks-live", 12);
    close(p[1]);
    int ok = 0;
    for (int i = 0; i < CHILDREN; i++) {
        int st;
        if (waitpid(kids[i], &st, 0) == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 7) ok++;
    }
    printf("reaped %d\n", ok);
    show("after");
    syscall(503, "kstacks-freed", 13);
    return 0;
}
"#;

/// (KernelStack kB, VmallocUsed kB, stacks listed) on the line `when:`.
fn counts(out: &str, when: &str) -> (u64, u64, u64) {
    let l = line(out, &format!("{when}: "));
    let w: Vec<&str> = l.split_whitespace().collect();
    assert_eq!(w[8], "0", "a kernel stack area of the wrong size: {l}");
    (w[2].parse().unwrap(), w[4].parse().unwrap(), w[6].parse().unwrap())
}

#[test]
fn forked_tasks_stacks_are_counted_listed_and_given_back() {
    // Two CPUs, so stacks are freed on one while the other may hold their
    // translations: `--verify tlb` replays every unmap, flush and free.
    let r = run_c_init(
        "kstack-forks",
        FORKS,
        &[
            "--timeout",
            "240",
            "--cpus",
            "2",
            "--verify",
            "tlb,freed-mapped,pt-owner,wx,text-ro",
            "--inspect",
            "meminfo",
        ],
    );
    assert_eq!(r.status, 0, "{}", r.all());
    let out = &r.stdout;
    assert!(out.contains("reaped 12\n"), "{}", r.all());
    let (ks0, vu0, n0) = counts(out, "before");
    let (ks1, vu1, n1) = counts(out, "during");
    let (ks2, vu2, n2) = counts(out, "after");
    // KernelStack follows the tasks exactly: 32 kB each.
    assert!(ks0 >= 32, "init's own stack: {}", r.all());
    assert_eq!(ks1, ks0 + 12 * 32, "{}", r.all());
    assert_eq!(ks2, ks0, "{}", r.all());
    // Every live stack is a vmalloc area named as Linux's; freed ones
    // stay mapped only in the per-CPU caches (two per CPU).
    assert!(n1 >= n0 + 12 && n1 * 32 >= ks1, "{}", r.all());
    assert!(vu1 >= ks1 && vu1 >= vu0 + (12 - 4) * 32, "{}", r.all());
    assert!(n2 <= n0 + 4 && vu2 <= vu0 + 4 * 32, "{}", r.all());
    assert!(vu1 - vu2 >= (12 - 4) * 32, "{}", r.all());
    // The host's own count of vmalloc-owned frames, read from the page
    // descriptors while the children lived, matches the guest's.
    let live = out.find("--- checkpoint 'kstacks-live': meminfo ---").unwrap_or_else(|| panic!("{}", r.all()));
    let host_vm: u64 = line(&out[live..], "VmallocPages:").split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(host_vm, vu1, "host VmallocPages vs guest VmallocUsed: {}", r.all());
    // Every check passed at both checkpoints, the TLB replay with stacks
    // unmapped and freed on two CPUs among its events.
    for cp in ["kstacks-live", "kstacks-freed"] {
        let at = out.find(&format!("--- checkpoint '{cp}': verify ---")).unwrap_or_else(|| panic!("{cp}: {}", r.all()));
        let s = &out[at..];
        let s = &s[..s[4..].find("--- checkpoint").map_or(s.len(), |e| e + 4)];
        for check in ["tlb", "freed-mapped", "pt-owner", "wx", "text-ro"] {
            assert!(s.contains(&format!("verify {check}: ok")), "{check} at {cp}: {s}");
        }
    }
}
