//! NUMA policies and memory cgroups (issue 18's bench): `numa_memcg.c`
//! (built here with `musl-gcc -static`) runs as the guest's /init.
//!
//! NUMA: on `--numa 2 --cpus 2` two tasks, one pinned to CPU 0 (node 0)
//! and one to CPU 1 (node 1), each map and touch N pages under each
//! policy (default/local, preferred node 1, bind node 1, interleave
//! 0-1); /proc/vmstat's numastat deltas are divided by the pages
//! allocated meanwhile (numa_hit + numa_miss: every allocation counts
//! one of them), and each task reports where its pages are
//! (`get_mempolicy(MPOL_F_NODE|MPOL_F_ADDR)`). A second guest with a
//! 4 MiB node 1 shows the fallback (bind is left out there: it ends in
//! the OOM killer, which tests/numa.rs checks).
//!
//! memcg: a task in a group with memory.max 8 MiB touches 16 MiB in a
//! tight loop (swap on): memory.peak - memory.max (target: at most one
//! reclaim batch, 32 pages) and the group's pgscan/pgsteal; then the same
//! task unconfined in a guest whose --mem (12M) leaves about 7 MiB free, so
//! global reclaim frees about as much (/proc/vmstat pgscan_*/pgsteal_*).
//!
//! Counts, not times: this host has 2 cores and emulates guest ring 0.
//! `cargo bench -p vmm --bench numa_memcg` (a few minutes).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = include_str!("numa_memcg.c");
/// Pages each NUMA task touches.
const NUMA_PAGES: u64 = 512;
/// Pages each task touches on the guest with the small node 1.
const SMALL_PAGES: u64 = 1280;
/// The memcg workload: pages touched, and the group's memory.max.
const MEMCG_PAGES: u64 = 4096;
const MEMCG_MAX: u64 = 8 << 20;
/// The unconfined guest's memory: about 7 MiB free at start, so global
/// reclaim frees about as many pages as the group's (measured: 2433 vs 2080).
const GLOBAL_MEM: &str = "12M";
/// One reclaim batch (SWAP_CLUSTER_MAX), in pages.
const BATCH: i64 = 32;

fn build(dir: &Path) -> PathBuf {
    common::build_c(dir, "numa_memcg", SOURCE, "musl-gcc", &[])
}

/// Boots the program with `args` (after `--`) and vmm options `opts`.
fn guest(prog: &Path, dir: &Path, name: &str, opts: &[&str], args: &str) -> String {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(prog, root.join("init")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "1800"])
        .args(opts)
        .arg("--initrd")
        .arg(&root)
        .arg(format!("--cmdline=-- {args}"))
        .output()
        .expect("run vmm");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    text
}

/// The number after `key ` in `line`.
fn field(line: &str, key: &str) -> i64 {
    let mut w = line.split_whitespace();
    while let Some(k) = w.next() {
        if k == key {
            // Leading digits only: two CPUs' lines can run together on
            // the serial console ("513task ...").
            let v: String = w.next().unwrap_or("").chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
            return v.parse().unwrap_or_else(|_| panic!("bad {key} in {line}"));
        }
    }
    panic!("no {key} in {line}")
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no '{prefix}' line:\n{text}"))
}

fn numa_table(text: &str, label: &str, small: bool) {
    let cases: &[(&str, &str, &str)] = &[
        (
            "default",
            "default (local)",
            if small {
                "CPU 1's node is too small: its overflow misses (numa_miss on node 0, foreign on node 1)"
            } else {
                "miss 0 while the node has room; each task on its own node"
            },
        ),
        (
            "preferred1",
            "preferred node 1",
            if small {
                "node 1 fills, the rest falls back to node 0 as misses"
            } else {
                "all on node 1; miss 0 (node 1 has room); CPU 0's task other_node"
            },
        ),
        ("bind1", "bind node 1", "never off node 1 (miss 0; node0 pages 0)"),
        (
            "interleave01",
            "interleave 0-1",
            "even split; interleave_hit = every interleaved page (each lands on its intended node)",
        ),
    ];
    for &(key, name, target) in cases {
        let Some(c) = text.lines().find(|l| l.starts_with(&format!("case {key} "))) else { continue };
        let (hit, miss, foreign) = (field(c, "numa_hit"), field(c, "numa_miss"), field(c, "numa_foreign"));
        let pages = (hit + miss).max(1) as f64;
        // Each task's report, wherever it starts (the two tasks' lines
        // may be interleaved).
        let mut tasks: Vec<String> = text
            .match_indices(&format!("task {key} "))
            .map(|(at, _)| text.get(at..at + 80).unwrap_or(&text[at..]))
            .map(|l| format!("CPU{}: {}/{}", field(l, "cpu"), field(l, "node0"), field(l, "node1")))
            .collect();
        tasks.sort();
        let killed = if c.contains("killed") { " (a task was killed)" } else { "" };
        println!(
            "| {label} | {name} | {} | {:.3} | {:.3} | {} | {} / {} | {}{killed} | {target} |",
            hit + miss,
            miss as f64 / pages,
            foreign as f64 / pages,
            field(c, "interleave_hit"),
            field(c, "local_node"),
            field(c, "other_node"),
            tasks.join(", "),
        );
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("mmemu-bench-numa-memcg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = build(&dir);

    let roomy =
        guest(&prog, &dir, "numa", &["--mem", "128M", "--cpus", "2", "--numa", "2"], &format!("numa {NUMA_PAGES}"));
    let small = guest(
        &prog,
        &dir,
        "numa-small",
        &["--mem", "128M", "--cpus", "2", "--numa", "0=124M,1=4M"],
        &format!("numa {SMALL_PAGES} small"),
    );
    println!("NUMA policies: two tasks (pinned to CPU 0 / node 0 and CPU 1 / node 1) each touching N pages:");
    println!(
        "| guest | policy | pages allocated | numa_miss per page | numa_foreign per page | interleave_hit | local_node / other_node | task pages on node0/node1 | target |"
    );
    println!("|---|---|---:|---:|---:|---:|---|---|---|");
    numa_table(&roomy, &format!("--numa 2 (64M+64M), N={NUMA_PAGES}"), false);
    numa_table(&small, &format!("--numa 0=124M,1=4M, N={SMALL_PAGES}"), true);

    let swap = dir.join("swap.img");
    let swap_arg = format!("{},size=64M", swap.display());
    let cg = guest(
        &prog,
        &dir,
        "memcg",
        &["--mem", "128M", "--swap", &swap_arg],
        &format!("memcg {MEMCG_PAGES} {MEMCG_MAX}"),
    );
    let _ = std::fs::remove_file(&swap);
    let global =
        guest(&prog, &dir, "global", &["--mem", GLOBAL_MEM, "--swap", &swap_arg], &format!("global {MEMCG_PAGES}"));
    let m = line(&cg, "memcg max ");
    let over = (field(m, "peak") - field(m, "max")) / 4096;
    let s = line(&cg, "memcg stat ");
    let (scan, steal) = (field(s, "pgscan"), field(s, "pgsteal"));
    let g = line(&global, "global vmstat");
    let gscan = field(g, "pgscan_kswapd") + field(g, "pgscan_direct");
    let gsteal = field(g, "pgsteal_kswapd") + field(g, "pgsteal_direct");
    let free = |t: &str| field(line(t, "free before:"), "before:") / 1024;
    println!();
    println!(
        "memcg: a task touching {MEMCG_PAGES} pages ({} MiB) in a tight loop, with swap:",
        (MEMCG_PAGES * 4096) >> 20
    );
    println!("| run | memory.max | memory.peak - memory.max | pages scanned | pages reclaimed | scanned per reclaimed | target |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    println!(
        "| in a group, --mem 128M ({} MiB free) | {} MiB | {over} pages | {scan} | {steal} | {:.2} | overshoot <= {BATCH} pages (one batch) |",
        free(&cg),
        MEMCG_MAX >> 20,
        scan as f64 / steal.max(1) as f64
    );
    println!(
        "| unconfined, --mem {GLOBAL_MEM} ({} MiB free) | - | - | {gscan} | {gsteal} | {:.2} | the peer: global reclaim (kswapd + direct) |",
        free(&global),
        gscan as f64 / gsteal.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
