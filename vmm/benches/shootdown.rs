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
//! Second table: reclaim's flushes, per page against batched, in the same
//! run: `tests/tlbbatch.c` has pages of its address space swapped out
//! (MADV_PAGEOUT of 256 pages, or writing 256 pages more than the guest
//! has free) while reader threads of the mm spin on the other CPUs, once
//! with the guest's batched flushes (arch/tlb.rs `TlbBatch`) and once
//! with `tlbbatch=off` (one flush per PTE, as before), and reads
//! /proc/vmstat's `tlb_batch_reclaim_*` counters.
//!
//! Counts, not times: this host has 2 cores and emulates guest ring 0.
//! `cargo bench -p vmm --bench shootdown` (a few minutes; `-- reclaim`
//! for the second table alone).

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

/// The `tlbbatch:` line's counters (pages, pswpout, ptes, flushes,
/// remote, ipis, full) of one run of tests/tlbbatch.c.
fn reclaim_run(dir: &Path, prog: &Path, cpus: u32, mem: &str, words: &str, args: &str) -> Vec<u64> {
    let root = dir.join("root-reclaim");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(prog, root.join("init")).unwrap();
    let swap = dir.join("swap.img");
    let _ = std::fs::remove_file(&swap);
    let o = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "1200", "--cpus", &cpus.to_string(), "--mem", mem, "--swap"])
        .arg(format!("{},size=16M", swap.display()))
        .arg("--initrd")
        .arg(&root)
        .arg(format!("--cmdline={words} -- {} {args}", cpus - 1))
        .output()
        .expect("run vmm");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let line = text.lines().find(|l| l.starts_with("tlbbatch: ")).unwrap_or_else(|| panic!("{text}"));
    assert!(o.status.success() && text.contains("read back: 0 bad words"), "{text}");
    line.split_whitespace().filter_map(|w| w.trim_start_matches('+').parse().ok()).collect()
}

/// The per-page against batched table.
fn reclaim_table(dir: &Path) {
    let prog = common::build_c(dir, "tlbbatch", include_str!("../../tests/tlbbatch.c"), "musl-gcc", &["-lpthread"]);
    println!();
    println!("Reclaim's TLB flushes, per page (tlbbatch=off) against batched (CPU 0 reclaims; reader threads of the mm on the other CPUs):");
    println!("| vCPUs | workload | flushing | pages swapped out | PTE changes | flushes | remote requests | IPIs | IPIs per page swapped |");
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|");
    for (cpus, mem, args, what) in [
        (2, "32M", "pageout 256", "MADV_PAGEOUT of 256 pages"),
        (4, "32M", "pageout 256", "MADV_PAGEOUT of 256 pages"),
        (2, "16M", "pressure 256", "256 pages beyond MemFree (16 MiB guest)"),
    ] {
        for (words, how) in [("tlbbatch=off", "per page"), ("", "batched")] {
            let c = reclaim_run(dir, &prog, cpus, mem, words, args);
            let (out, ptes, flushes, remote, ipis) = (c[1], c[2], c[3], c[4], c[5]);
            println!(
                "| {cpus} | {what} | {how} | {out} | {ptes} | {flushes} | {remote} | {ipis} | {:.3} |",
                ipis as f64 / out.max(1) as f64
            );
        }
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("mmemu-bench-smp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if std::env::args().any(|a| a == "reclaim") {
        // `cargo bench -p vmm --bench shootdown -- reclaim`: the second
        // table only.
        reclaim_table(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
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
    reclaim_table(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}
