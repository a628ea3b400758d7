//! Transparent huge pages in the real guest (issue 14's bench): the
//! thptest program touches the same 2 MiB-aligned anonymous region, one
//! word per 4 KiB page, once with `transparent_hugepage=always` and once
//! with `never`; the kernel counts the faults. Printed side by side:
//! faults per MiB touched and the ratio. The peer is arithmetic: 256
//! faults per MiB with 4 KiB pages, 0.5 with 2 MiB ones.
//!
//! The TLB half of the bench (misses of mm-core's second-level TLB model
//! for a random walk over 256 MiB, 4 KiB vs 2 MiB pages) runs natively:
//! `cargo bench -p mm-core --bench huge`, table (a).
//!
//! Counts only, no times. `cargo bench -p vmm --bench thp` (a few
//! minutes here: every 4 KiB fault is emulated ring-0 work).

use std::process::Command;

/// MiB touched: enough for 8 huge pages, small enough for the 4 KiB run.
const MIB: u64 = 16;

/// Faults thptest counted for its touch, with `mode`.
fn faults(mode: &str) -> u64 {
    let cmdline = format!("transparent_hugepage={mode} thptest={MIB} exit=0");
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "900", "--mem", "64M", "--cmdline", &cmdline])
        .output()
        .expect("run vmm");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("thptest: exit status 0x0"), "{text}");
    let line = text.lines().find(|l| l.starts_with("thptest: faults ")).expect("the fault line");
    line["thptest: faults ".len()..].split(' ').next().and_then(|n| n.parse().ok()).expect("a count")
}

fn main() {
    let thp = faults("always");
    let small = faults("never");
    println!("Faults to touch {MIB} MiB, one write per 4 KiB page (thptest):");
    println!("| pages | faults | faults per MiB | expected per MiB |");
    println!("|---|---:|---:|---:|");
    println!("| 4 KiB (never) | {small} | {:.1} | 256 |", small as f64 / MIB as f64);
    println!("| 2 MiB THP (always) | {thp} | {:.1} | 0.5 |", thp as f64 / MIB as f64);
    println!("4 KiB / THP: {:.0}x fewer faults with huge pages", small as f64 / thp.max(1) as f64);
}
