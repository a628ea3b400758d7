//! Reclaim quality and swap I/O cost, in the real guest (issue 13's
//! bench), each figure beside its reference computed in the same run:
//!
//! 1. The ring-3 `tracereplay` program replays mm-core's fixed-seed trace
//!    (`lru::sim`: a zipfian hot set interrupted by sequential scans
//!    larger than memory) in a guest whose RAM cannot hold it, with swap;
//!    the guest kernel counts its major faults. This binary computes, for
//!    the very same trace and the frame count the process held (its RSS at
//!    the end), the faults of exact LRU and of Belady's OPT, and of
//!    mm-core's `Lruvec` reclaim run natively. The guest's misses are its
//!    major faults plus swap-cache hits plus first touches: every access
//!    that found its page unmapped, as the models count a miss on a
//!    resident set of that size. Target: ours at most 1.3x
//!    exact LRU. Scan resistance: the share of the hot set (the quarter of
//!    the zipfian pages most popular) still resident right after each
//!    scan, in the guest (its page tables, read by the program) and in
//!    the models.
//! 2. VM exits per swapped page: the queue notifies (the exits of the
//!    virtio path) per page written in bulk swap-out (target: at most 1
//!    per 16 pages) and overall; and pages scanned per page reclaimed.
//!
//! Counts only, no times: they do not depend on this host's emulated ring
//! 0. `cargo bench -p vmm --bench swap` (a few minutes here).

use mm_core::lru::sim::{exact_lru, generate, lruvec_default, opt, TraceSpec};
use std::process::Command;

/// The trace: small enough for a guest whose every fault runs through
/// KVM's emulator here, shaped like mm-core's bench trace.
const ZIPF: u32 = 2048;
const SCAN: u32 = 1536;
const KACCESSES: usize = 30;
const PERIOD: usize = 6000;
/// The guest's RAM: well under the trace's 3584 pages.
const MEM: &str = "10M";

fn field(line: &str, key: &str) -> u64 {
    let at = line.find(&format!("{key} ")).unwrap_or_else(|| panic!("{key} missing in {line}")) + key.len() + 1;
    line[at..].split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn counter(out: &str, name: &str) -> u64 {
    let at = out.rfind("tracereplay: exit status").expect("the run's end");
    out[at..]
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * a as f64 / b as f64)
    }
}

fn main() {
    let swap = std::env::temp_dir().join(format!("mmemu-bench-swap-{}", std::process::id()));
    let _ = std::fs::remove_file(&swap);
    let cmdline = format!("tracereplay={ZIPF},{SCAN},{KACCESSES},{PERIOD}");
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "3000", "--mem", MEM, "--cmdline", &cmdline])
        .arg("--swap")
        .arg(format!("{},size=32M", swap.display()))
        .output()
        .expect("run the vmm");
    let _ = std::fs::remove_file(&swap);
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the guest run failed:\n{stdout}\n{stderr}");
    let line = stdout.lines().find(|l| l.starts_with("tracereplay[")).expect("the program's result");
    let (majors, rss, cached) = (field(line, "major_faults"), field(line, "rss"), field(line, "swapin_cached"));
    let (hot, hot_res, hot_chk) = (field(line, "hot"), field(line, "hot_resident"), field(line, "hot_checked"));

    let spec = TraceSpec {
        len: KACCESSES * 1000,
        zipf_pages: ZIPF,
        scan_pages: SCAN,
        scan_period: PERIOD,
        ..TraceSpec::DEFAULT
    };
    let trace = generate(&spec);
    let distinct = {
        let mut seen = vec![false; trace.nr_pages as usize];
        trace.accesses.iter().filter(|&&p| !std::mem::replace(&mut seen[p as usize], true)).count() as u64
    };
    let frames = rss as usize;
    let o = opt(&trace, frames, hot as u32);
    let l = exact_lru(&trace, frames, hot as u32);
    let (u, _) = lruvec_default(&trace, frames, hot as u32, 60);
    // The guest's misses on its resident set of `frames` pages: major
    // faults, faults served from the swap cache (the page was not mapped:
    // a miss for a resident set of this size, though no I/O), and each
    // page's first touch (cold misses, which the models count too).
    let ours = majors + cached + distinct;
    println!("Reclaim quality: {} accesses over {} pages ({} zipfian, a {}-page scan every {} accesses), guest RAM {MEM}, {} frames held", trace.accesses.len(), trace.nr_pages, ZIPF, SCAN, PERIOD, frames);
    println!("{:<28} {:>9} {:>9} {:>9} {:>14}", "policy", "faults", "/ LRU", "/ OPT", "hot kept");
    for (name, f, hk, hc) in [
        ("Belady's OPT (host)", o.faults, o.hot_resident_after_scans, o.hot_checked),
        ("exact LRU (host)", l.faults, l.hot_resident_after_scans, l.hot_checked),
        ("mm-core Lruvec (host)", u.faults, u.hot_resident_after_scans, u.hot_checked),
        ("guest kernel", ours, hot_res, hot_chk),
    ] {
        println!(
            "{:<28} {:>9} {:>8.3}x {:>8.3}x {:>14}",
            name,
            f,
            f as f64 / l.faults as f64,
            f as f64 / o.faults as f64,
            pct(hk, hc)
        );
    }
    let sw = stdout.lines().find(|l| l.starts_with("swap: cache_hits")).expect("the swap counters");
    let (batches, notifies) = (field(sw, "write_batches"), field(sw, "device_notifies"));
    let (pswpout, pswpin) = (counter(&stdout, "pswpout"), counter(&stdout, "pswpin"));
    let scanned = counter(&stdout, "pgscan_kswapd") + counter(&stdout, "pgscan_direct");
    let stolen = counter(&stdout, "pgsteal_kswapd") + counter(&stdout, "pgsteal_direct");
    println!(
        "(guest: {majors} major faults + {cached} swap-cache hits + {distinct} first touches; frames = its RSS at the end)"
    );
    println!();
    println!(
        "Swap I/O: {pswpout} pages written in {batches} batches, {pswpin} read ({majors} major faults, readahead of 8)"
    );
    println!("{:<44} {:>10} {:>10}", "figure", "measured", "target");
    println!(
        "{:<44} {:>10.4} {:>10}",
        "queue notifies (VM exits) per page written",
        batches as f64 / pswpout.max(1) as f64,
        "<= 0.0625"
    );
    println!(
        "{:<44} {:>10.4} {:>10}",
        "queue notifies per page moved (both ways)",
        notifies as f64 / (pswpout + pswpin).max(1) as f64,
        "-"
    );
    println!("{:<44} {:>10.2} {:>10}", "pages scanned per page reclaimed", scanned as f64 / stolen.max(1) as f64, "-");
}
