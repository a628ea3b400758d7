//! What processes cost (issue 5's "Measure"), each guest figure beside
//! its peer measured in the same run:
//!  (1) malloc/free churn of mixed sizes: the ring-3 program `mallocbench`
//!      replays the traces of guest/user/src/trace.rs on our libc's
//!      malloc in the guest (ring 3 runs natively even where the kernel
//!      is emulated), and this binary replays the very same traces (the
//!      same file, included below) on glibc's malloc on the host, each
//!      trace in a fresh process on both sides, timed with the TSC;
//!  (2) fork of a process with 1, 16 and 64 MiB touched: what the guest
//!      kernel copied (data pages, page-table pages) and the in-guest time
//!      of the call (TSC in ring 3 around the system call; the kernel's
//!      part runs through KVM's emulator on hosts without hardware ring 0),
//!      beside a null system call in the same process and beside Linux
//!      forking the same amount of touched memory on the host.
//!
//! The guest side is the kernel's `procbench` switch (guest/src/cmdline.rs).
//! The TSC is converted to time with the host's TSC rate, calibrated here
//! against the monotonic clock; the guest's TSC rate is checked from the
//! arrival times of the guest's `tsc=` console lines.
//!
//! `cargo bench -p vmm --bench process` (`-- --only malloc` or
//! `-- --only fork` for one half). Takes a few minutes here: every guest
//! page fault and system call runs through the emulator.

#[path = "../../guest/user/src/trace.rs"]
mod trace;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trace::{rdtsc, Heap, Line, Spec, PHASES, RUNS, TRACES};

/// The guest's memory: 64 MiB touched, its fork, and the kernel's share.
const GUEST_MEM: &str = "256M";
/// The fork sizes (MiB touched), as the `procbench` switch runs them.
const FORK_MIB: [u64; 3] = [1, 16, 64];

/// A result line's `key=value` pairs (numbers only; `trace=` kept apart).
#[derive(Debug, Default, Clone)]
struct Fields {
    trace: String,
    n: HashMap<String, u64>,
}

impl Fields {
    fn parse(line: &str) -> Fields {
        let mut f = Fields::default();
        for word in line.split_whitespace() {
            if let Some((k, v)) = word.split_once('=') {
                if k == "trace" {
                    f.trace = v.to_string();
                } else if let Ok(v) = v.parse() {
                    f.n.insert(k.to_string(), v);
                }
            }
        }
        f
    }

    fn get(&self, key: &str) -> u64 {
        *self.n.get(key).unwrap_or_else(|| panic!("no {key} in the result line {:?}", self.n))
    }
}

/// glibc's malloc, with the kernel's fault counter for this process.
struct Glibc;

impl Heap for Glibc {
    fn malloc(&mut self, n: usize) -> *mut u8 {
        // SAFETY: plain malloc.
        unsafe { libc::malloc(n) as *mut u8 }
    }

    unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: the caller's contract is free's.
        unsafe { libc::free(p as *mut libc::c_void) }
    }

    fn faults(&mut self) -> u64 {
        // SAFETY: getrusage fills the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        (ru.ru_minflt + ru.ru_majflt) as u64
    }

    fn heap_range(&mut self) -> (usize, usize) {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        maps.lines()
            .find(|l| l.ends_with("[heap]"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap()))
            .unwrap_or((0, 0))
    }
}

/// Child mode: replays trace `index` on glibc under `policy` and prints
/// one `glibc: run=R ...` line per replay. `same`: our malloc's policy
/// (mmap threshold fixed at 128 KiB, the trace's trim threshold, 64 KiB
/// top pad); `default`: glibc's own (dynamic mmap threshold, 128 KiB top
/// pad), except that the warm trace keeps trimming off by definition.
fn glibc_child(index: usize, policy: &str) {
    let spec = &TRACES[index];
    let trim = if spec.trim_threshold == usize::MAX { -1 } else { spec.trim_threshold as i32 };
    // SAFETY: mallopt before the first replay; this process is one thread.
    unsafe {
        if policy == "same" {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
            libc::mallopt(libc::M_TOP_PAD, 64 << 10);
            libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
        } else if trim == -1 {
            libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        }
    }
    let mut ops = vec![0u64; trace::capacity(spec)];
    let bounds = trace::generate(spec, &mut ops);
    // On the stack, as in the guest program.
    let mut slots = [std::ptr::null_mut::<u8>(); 4096];
    for run in 0..RUNS {
        let r = trace::replay(&mut Glibc, &ops, bounds, &mut slots);
        if spec.trim_threshold == usize::MAX {
            trace::prefault(&mut Glibc);
        }
        println!("glibc: run={run} {}", Line(spec, &r));
    }
}

/// Median of the middle run (of the replays after the warm-up).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Child mode: Linux's fork of a process with `mib` MiB touched (4 KiB
/// pages, as the guest's), timed with the TSC; the child reports its
/// page-table size (VmPTE) and exits at once.
fn host_fork_child(mib: u64) {
    let null = {
        let mut t: Vec<u64> = (0..51)
            .map(|_| {
                let t0 = rdtsc();
                // SAFETY: getpid has no arguments (libc's cache bypassed).
                unsafe { libc::syscall(libc::SYS_getpid) };
                rdtsc() - t0
            })
            .collect();
        t.sort_unstable();
        t[t.len() / 2]
    };
    let len = (mib << 20) as usize;
    // SAFETY: a fresh private anonymous mapping, ours until exit.
    let a = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(a, libc::MAP_FAILED);
    // SAFETY: the mapping just made. 4 KiB pages, as the guest has: no THP.
    unsafe { libc::madvise(a, len, libc::MADV_NOHUGEPAGE) };
    for i in (0..len).step_by(4096) {
        // SAFETY: inside the mapping.
        unsafe { (a as *mut u8).add(i).write_volatile(1) };
    }
    let vmpte = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("VmPTE:").map(|v| v.trim().trim_end_matches(" kB").to_string()))
            })
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let parent_pte = vmpte();
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    let t0 = rdtsc();
    // SAFETY: this process has one thread; the child only reads a file,
    // prints and exits.
    let pid = unsafe { libc::fork() };
    let cycles = rdtsc() - t0;
    if pid == 0 {
        println!("hostfork: child mib={mib} vmpte_kb={}", vmpte());
        // SAFETY: ends the child without running the parent's exit path.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    println!("hostfork: parent mib={mib} fork_cycles={cycles} null_syscall_cycles={null} parent_vmpte_kb={parent_pte}");
}

/// The host's TSC rate in cycles per ns, against the monotonic clock.
fn tsc_per_ns() -> f64 {
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(500));
    let (t1, c1) = (Instant::now(), rdtsc());
    (c1 - c0) as f64 / (t1 - t0).as_nanos() as f64
}

/// Runs this binary in a child mode; its stdout lines.
fn rerun(args: &[&str]) -> Vec<String> {
    let out = Command::new(std::env::current_exe().unwrap()).args(args).output().expect("re-run the bench");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Boots the guest with `procbench[=half]`; its console lines, each with
/// its arrival time.
fn guest(half: Option<&str>) -> Vec<(Instant, String)> {
    let cmdline = match half {
        Some(h) => format!("procbench={h}"),
        None => "procbench".to_string(),
    };
    eprintln!("booting the guest with {cmdline} (minutes: its page faults and system calls are emulated here)");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--mem", GUEST_MEM, "--timeout", "1800", "--cmdline", &cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the vmm");
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.expect("guest console");
        let now = Instant::now();
        if line.starts_with("mallocbench:") || line.starts_with("forkbench:") || line.starts_with("procbench:") {
            eprintln!("  {line}");
        }
        lines.push((now, line));
    }
    let status = child.wait().expect("wait for the vmm");
    assert!(status.success(), "the guest's procbench failed ({status}); its console:\n{:#?}", lines);
    lines
}

/// One side's replays of one trace: the runs after the warm-up.
struct Runs(Vec<Fields>);

impl Runs {
    fn from_lines<'a>(prefix: &str, trace: &str, lines: impl Iterator<Item = &'a str>) -> Runs {
        let all: Vec<Fields> =
            lines.filter_map(|l| l.strip_prefix(prefix)).map(Fields::parse).filter(|f| f.trace == trace).collect();
        assert_eq!(all.len(), RUNS, "{prefix} {trace}: expected {RUNS} runs");
        assert!(all.iter().all(|f| f.get("ok") == 1), "{prefix} {trace}: a replay saw corrupt blocks");
        Runs(all)
    }

    fn timed(&self) -> &[Fields] {
        &self.0[1..]
    }

    /// Median churn cycles per operation of the timed runs.
    fn churn_cycles_per_op(&self) -> f64 {
        median(self.timed().iter().map(|f| f.get("churn_cycles") as f64 / f.get("churn_ops") as f64).collect())
    }

    /// Page faults per MiB allocated over `runs`, all phases.
    fn faults_per_mib(runs: &[Fields]) -> f64 {
        let faults: u64 = runs.iter().flat_map(|f| PHASES.map(|p| f.get(&format!("{p}_faults")))).sum();
        let bytes: u64 = runs.iter().flat_map(|f| PHASES.map(|p| f.get(&format!("{p}_bytes")))).sum();
        faults as f64 / (bytes as f64 / (1 << 20) as f64)
    }

    /// Median churn-phase faults of the timed runs.
    fn churn_faults(&self) -> u64 {
        let mut v: Vec<u64> = self.timed().iter().map(|f| f.get("churn_faults")).collect();
        v.sort_unstable();
        v[v.len() / 2]
    }

    /// Our malloc's system calls in the timed runs' median (guest only).
    fn syscalls(&self) -> u64 {
        let mut v: Vec<u64> = self
            .timed()
            .iter()
            .map(|f| ["brk_grows", "brk_trims", "mmaps", "munmaps"].iter().map(|k| f.get(k)).sum())
            .collect();
        v.sort_unstable();
        v[v.len() / 2]
    }
}

fn describe(spec: &Spec) -> String {
    let large = if spec.large_per_mille == 0 {
        String::new()
    } else {
        format!(", {}% of mallocs 128 KiB..1 MiB (mmap)", spec.large_per_mille as f64 / 10.0)
    };
    let trim = if spec.trim_threshold == usize::MAX { "trim off, warm heap" } else { "trim at 128 KiB" };
    format!("{} ({} churn ops over {} slots; {}{})", spec.name, spec.churn_ops, spec.slots, trim, large)
}

fn malloc_table(lines: &[(Instant, String)], ghz: f64) {
    println!("## malloc/free churn: our libc malloc (guest ring 3) vs glibc malloc (host), same traces");
    println!();
    println!(
        "Churn phase, median of {} replays after a warm-up, each trace in a fresh process. ns = TSC cycles / {ghz:.3} GHz.",
        RUNS - 1
    );
    println!("glibc (same policy): mmap threshold 128 KiB fixed, the trace's trim threshold, 64 KiB top pad, as ours;");
    println!("glibc (default): its dynamic mmap threshold and 128 KiB top pad.");
    println!("Kernel work inside the timed churn (our system calls, page faults) runs emulated in the guest here.");
    println!();
    println!("| trace | ours ns/op (cycles) | glibc same policy ns/op (cycles) | ours / glibc | glibc default ns/op | churn faults ours / glibc | our malloc's syscalls in churn | faults per MiB allocated, ours / glibc (timed runs; warm-up run) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, spec) in TRACES.iter().enumerate() {
        let ours = Runs::from_lines("mallocbench: ", spec.name, lines.iter().map(|(_, l)| l.as_str()));
        let same_lines = rerun(&["--glibc", &i.to_string(), "same"]);
        let same = Runs::from_lines("glibc: ", spec.name, same_lines.iter().map(String::as_str));
        let def_lines = rerun(&["--glibc", &i.to_string(), "default"]);
        let def = Runs::from_lines("glibc: ", spec.name, def_lines.iter().map(String::as_str));
        let (o, g, d) = (ours.churn_cycles_per_op(), same.churn_cycles_per_op(), def.churn_cycles_per_op());
        println!(
            "| {} | {:.1} ({:.0}) | {:.1} ({:.0}) | {:.2}x | {:.1} | {} / {} | {} | {:.2} / {:.2} ({:.2} / {:.2}) |",
            describe(spec),
            o / ghz,
            o,
            g / ghz,
            g,
            o / g,
            d / ghz,
            ours.churn_faults(),
            same.churn_faults(),
            ours.syscalls(),
            Runs::faults_per_mib(ours.timed()),
            Runs::faults_per_mib(same.timed()),
            Runs::faults_per_mib(&ours.0[..1]),
            Runs::faults_per_mib(&same.0[..1]),
        );
    }
    println!();
}

fn fork_table(lines: &[(Instant, String)], ghz: f64) {
    let find = |prefix: &str, mib: u64| {
        lines
            .iter()
            .filter_map(|(_, l)| l.strip_prefix(prefix))
            .map(Fields::parse)
            .find(|f| f.get("mib") == mib)
            .unwrap_or_else(|| panic!("no {prefix} line for {mib} MiB"))
    };
    let us = |cycles: u64| cycles as f64 / ghz / 1e3;
    println!("## fork of a process with N MiB touched: our kernel (guest) vs Linux (host)");
    println!();
    println!("Guest time: TSC in ring 3 around the fork system call; the kernel's part runs through KVM's instruction");
    println!("emulator on this host (about 1000x slower than native), hence the column in null system calls");
    println!("(getpid, timed the same way in the same process). Data pages copied: the kernel's count (target 0).");
    println!("Linux: the same touch and fork natively on the host (4 KiB pages, THP off), its child's VmPTE.");
    println!();
    println!("| MiB touched | pages | data pages copied | page-table pages copied (parent's) | guest fork µs | guest fork / null syscall | guest µs per touched page | guest page-fault µs (touch) | Linux fork µs | Linux child VmPTE pages | guest / Linux fork time |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for mib in FORK_MIB {
        let child = find("forkbench: child ", mib);
        let parent = find("forkbench: parent ", mib);
        let host = rerun(&["--host-fork", &mib.to_string()]);
        let hparent =
            Fields::parse(host.iter().find_map(|l| l.strip_prefix("hostfork: parent ")).expect("host fork result"));
        let hchild =
            Fields::parse(host.iter().find_map(|l| l.strip_prefix("hostfork: child ")).expect("host fork child"));
        let (fork, null, pages) = (parent.get("fork_cycles"), parent.get("null_syscall_cycles"), parent.get("pages"));
        let touch_fault = us(parent.get("touch_cycles")) / parent.get("touch_faults").max(1) as f64;
        let hfork = hparent.get("fork_cycles");
        println!(
            "| {mib} | {pages} | {} | {} ({}) | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {} | {:.0}x |",
            child.get("fork_copied_pages"),
            child.get("fork_pt_pages"),
            parent.get("parent_pt_pages"),
            us(fork),
            fork as f64 / null as f64,
            us(fork) / pages as f64,
            touch_fault,
            us(hfork),
            hchild.get("vmpte_kb") / 4,
            fork as f64 / hfork as f64,
        );
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str);
    if let Some(i) = arg("--glibc") {
        let policy = args.last().map(String::as_str).unwrap_or("same");
        glibc_child(i.parse().expect("trace index"), policy);
        return;
    }
    if let Some(mib) = arg("--host-fork") {
        host_fork_child(mib.parse().expect("MiB"));
        return;
    }
    let only = arg("--only");
    let ghz = tsc_per_ns();
    let lines = guest(only);

    // The guest's TSC rate from the first and last `tsc=` lines' arrival
    // (the time between them is long, so the console's latency is small).
    let tscs: Vec<(Instant, u64)> = lines
        .iter()
        .filter_map(|(t, l)| l.strip_prefix("mallocbench: tsc=").and_then(|v| v.parse().ok()).map(|v| (*t, v)))
        .collect();
    println!("# process bench");
    println!();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpu}, nproc {nproc}; host TSC {ghz:.3} GHz (against CLOCK_MONOTONIC)");
    if let (Some(first), Some(last)) = (tscs.first(), tscs.last()) {
        if last.0 > first.0 {
            let guest_ghz = (last.1 - first.1) as f64 / (last.0 - first.0).as_nanos() as f64;
            let same = if (guest_ghz / ghz - 1.0).abs() < 0.02 {
                "guest and host cycles are the same unit"
            } else {
                "NOT the host's rate: guest ns below are off by that ratio"
            };
            println!(
                "guest TSC {guest_ghz:.3} GHz (from its console lines' arrival over {:.1} s): {same}",
                (last.0 - first.0).as_secs_f64()
            );
        }
    }
    println!();
    if only != Some("fork") {
        malloc_table(&lines, ghz);
    }
    if only != Some("malloc") {
        fork_table(&lines, ghz);
    }
}
