//! TLB shootdown IPIs per munmap (issue 16's bench): `smp_shootdown.c`
//! (built here with `musl-gcc -static`) pins its main thread to CPU 0,
//! reader threads of the same address space to the next CPUs and, with
//! 4 CPUs, a forked process (another address space) to the last one;
//! then 20 rounds of mmap, touch, munmap for 1, 16, 128, 512 and 1024 pages,
//! counting the shootdown requests each CPU served from
//! /proc/interrupts' `TLB` row. The target is one IPI per remote CPU in
//! the mm's cpumask per flush batch (a batch holds 512 pages here, as a
//! page of Linux's mmu_gather does), none to CPUs outside it.
//!
//! The peer, in the same run: the same binary on this host's Linux with
//! 2 CPUs (its threads are not pinned to idle CPUs there; the host is
//! itself a VM, and a Linux with broadcast TLB invalidation sends no IPI
//! at all, so its row is a reference, not a target).
//!
//! Counts, not times: this host has 2 cores and emulates guest ring 0.
//! `cargo bench -p vmm --bench shootdown` (a few minutes).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = include_str!("smp_shootdown.c");
/// Pages per munmap the program uses, in its order.
const SIZES: [u64; 5] = [1, 16, 128, 512, 1024];
/// Pages one flush batch gathers in the guest (proc/mm.rs's MmuGather).
const BATCH: u64 = 512;

fn build(dir: &Path) -> PathBuf {
    common::build_c(dir, "smp_shootdown", SOURCE, "musl-gcc", &[])
}

/// Per size: the requests each CPU served over the 20 rounds.
fn rows(text: &str) -> Vec<Vec<u64>> {
    text.lines()
        .filter_map(|l| l.split("shoot: ").nth(1))
        .filter_map(|l| l.split(" served ").nth(1))
        .map(|v| v.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .collect()
}

fn guest(prog: &Path, dir: &Path, cpus: u32) -> Vec<Vec<u64>> {
    let root = dir.join(format!("root{cpus}"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(prog, root.join("init")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "1200", "--cpus", &cpus.to_string(), "--initrd"])
        .arg(&root)
        .arg(format!("--cmdline=-- {cpus}"))
        .output()
        .expect("run vmm");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let r = rows(&text);
    assert!(o.status.success() && r.len() == SIZES.len(), "{text}");
    r
}

fn main() {
    let dir = std::env::temp_dir().join(format!("mmemu-bench-smp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = build(&dir);
    let host = Command::new(&prog).arg("2").output().ok().filter(|o| o.status.success());
    let host = host.map(|o| rows(&String::from_utf8_lossy(&o.stdout)));
    println!("TLB shootdown requests per munmap (20 rounds each; CPU 0 unmaps):");
    println!("| vCPUs | pages per munmap | flush batches | per remote CPU in the mm | to CPUs outside it | target | Linux on this host (2 CPUs) |");
    println!("|---:|---:|---:|---|---|---|---|");
    for cpus in [2u32, 4] {
        let g = guest(&prog, &dir, cpus);
        let outsider = cpus >= 4;
        let inside: Vec<usize> = (1..cpus as usize - outsider as usize).collect();
        for (i, &n) in SIZES.iter().enumerate() {
            let batches = n.div_ceil(BATCH);
            let per: Vec<String> = inside.iter().map(|&c| format!("CPU{c} {:.2}", g[i][c] as f64 / 20.0)).collect();
            let out = if outsider {
                format!("CPU{} {:.2}", cpus - 1, g[i][cpus as usize - 1] as f64 / 20.0)
            } else {
                "none".into()
            };
            let peer = host.as_ref().map_or("not run".to_string(), |h| {
                h[i].iter().map(|v| format!("{:.2}", *v as f64 / 20.0)).collect::<Vec<_>>().join(" / ")
            });
            println!(
                "| {cpus} | {n} | {batches} | {} | {out} | {batches} per remote CPU, 0 outside | {peer} |",
                per.join(", ")
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
