//! Reclaim quality, host-independent: the fixed-seed trace of
//! `mm_core::lru::sim` (a zipfian hot set over 4096 pages plus a 3072-page
//! scan every 20000 accesses) at several frame counts, faults of exact LRU,
//! Belady's OPT and our `Lruvec` reclaim run natively (direct reclaim of
//! SWAP_CLUSTER_MAX pages on a full memory, accessed bits harvested,
//! workingset shadows), plus scan resistance: how much of the hot set (the
//! `frames / 4` most popular pages) is resident right after each scan.
//! Counts only, no times. The guest's replay of the same trace will sit
//! beside these figures.
//!
//! Run: `cargo bench -p mm-core --bench reclaim`

use mm_core::lru::sim::{exact_lru, generate, lruvec_default, opt, TraceSpec};

/// A percentage, or "-" when there was nothing to measure (no scans).
fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * a as f64 / b as f64)
    }
}

fn main() {
    let specs = [("zipf+scan", TraceSpec::DEFAULT), ("zipf only", TraceSpec { scan_period: 0, ..TraceSpec::DEFAULT })];
    println!(
        "{:<10} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8} | {:>11} {:>11} {:>11} | {:>10} {:>11}",
        "trace",
        "frames",
        "OPT",
        "LRU",
        "ours",
        "ours/LRU",
        "ours/OPT",
        "hot kept OPT",
        "hot kept LRU",
        "hot kept us",
        "scan/steal",
        "refault act"
    );
    for (name, spec) in specs {
        let t = generate(&spec);
        for frames in [512usize, 1024, 2048, 3072] {
            let hot = frames as u32 / 4;
            let o = opt(&t, frames, hot);
            let l = exact_lru(&t, frames, hot);
            let (u, st) = lruvec_default(&t, frames, hot, 60);
            assert_eq!(u.accesses, t.accesses.len() as u64, "reclaim gave up: the figures would be short");
            println!(
                "{:<10} {:>6} {:>9} {:>9} {:>9} {:>7.3}x {:>7.3}x | {:>11} {:>11} {:>11} | {:>10.2} {:>11}",
                name,
                frames,
                o.faults,
                l.faults,
                u.faults,
                u.faults as f64 / l.faults as f64,
                u.faults as f64 / o.faults as f64,
                pct(o.hot_resident_after_scans, o.hot_checked),
                pct(l.hot_resident_after_scans, l.hot_checked),
                pct(u.hot_resident_after_scans, u.hot_checked),
                st.pgscan() as f64 / st.pgsteal().max(1) as f64,
                st.workingset_activate[0],
            );
        }
    }
    println!("hot kept: share of the hottest frames/4 pages resident right after each scan (all scans summed)");
    println!("scan/steal: pages scanned per page reclaimed; refault act: refaults activated by workingset detection");
}
