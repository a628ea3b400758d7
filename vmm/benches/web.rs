//! What the live web view (issue 19) costs a run nobody watches: the same
//! guest (256 MiB, `CHECKPOINTS` checkpoints from its command line, then
//! exit) run alternately with `--web` (no browser attached) and without,
//! in this one process; the median wall times side by side, and the time
//! the VMM itself measured in the web hook per checkpoint (its end-of-run
//! line). What an attached browser sees (latency from a checkpoint to the
//! page, bytes per update) is measured by tests/web.rs in real Chromium.
//!
//! `cargo bench -p vmm --bench web`.

use std::process::Command;
use std::time::Instant;

const CHECKPOINTS: usize = 200;
const ROUNDS: usize = 7;

fn run(cmdline: &str, web: bool) -> (f64, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmm"));
    c.args(["run", "--timeout", "300", "--mem", "256M", "--cmdline", cmdline]);
    if web {
        c.args(["--web", "127.0.0.1:0"]);
    }
    let t = Instant::now();
    let out = c.output().expect("run vmm");
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "vmm failed: {err}");
    (secs, err)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut cmdline: String = (0..CHECKPOINTS).map(|i| format!("checkpoint=c{i} ")).collect();
    cmdline.push_str("exit=0");
    let (mut off, mut on, mut hook_us) = (Vec::new(), Vec::new(), Vec::new());
    let bar = vmm::progress::Steps::new("web bench runs (off, on)", ROUNDS as u64);
    for _ in 0..ROUNDS {
        off.push(run(&cmdline, false).0);
        let (t, err) = run(&cmdline, true);
        on.push(t);
        // "... N checkpoints passed with no browser attached, X us each in the web hook"
        let line = err.lines().find(|l| l.starts_with("vmm: web view:")).expect("the web view's summary line");
        let n: usize = line
            .split("); ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("checkpoint count");
        assert!(n > CHECKPOINTS, "{line}");
        let us: f64 =
            line.rsplit(", ").next().and_then(|r| r.split(' ').next()).and_then(|u| u.parse().ok()).expect("hook time");
        hook_us.push(us);
        bar.inc();
    }
    bar.finish();
    let (m_off, m_on, m_hook) = (median(&mut off), median(&mut on), median(&mut hook_us));
    let per_cp = |s: f64| s / (CHECKPOINTS as f64 + 1.0) * 1e6;
    println!("web bench: 256 MiB guest, {} checkpoints per run, {ROUNDS} runs each way (medians)", CHECKPOINTS + 1);
    println!("  --web off:                         {m_off:.3} s per run");
    println!("  --web on, no browser attached:     {m_on:.3} s per run");
    println!(
        "  difference:                        {:+.3} s per run = {:+.1} us per checkpoint (run-to-run spread: off {:.3}..{:.3} s, on {:.3}..{:.3} s)",
        m_on - m_off,
        per_cp(m_on - m_off),
        off[0],
        off[ROUNDS - 1],
        on[0],
        on[ROUNDS - 1]
    );
    println!("  time in the web hook per checkpoint (measured by the VMM): {m_hook:.2} us");
}
