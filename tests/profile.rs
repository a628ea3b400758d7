//! `--count-insns FROM..TO` (issue 17): exact, deterministic ring-0
//! instruction counts between two checkpoints, per function, by
//! single-stepping. Windows stay small: ring 0 is emulated here and every
//! step is a VM exit.

mod common;

use common::{boot, TempFile};

/// Runs a ring-0 window `a..b` around `between` (kernel command-line
/// switches) and returns the JSON report.
fn count(between: &str, json: &TempFile) -> serde_json::Value {
    let cmdline = format!("checkpoint=a {between} checkpoint=b exit=0");
    let r = boot(&["--cmdline", &cmdline, "--count-insns", "a..b", "--count-insns-json", json.path()]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stderr.contains("--- instructions from checkpoint 'a' to 'b' ---"), "{}", r.all());
    serde_json::from_str(&std::fs::read_to_string(&json.0).unwrap()).unwrap()
}

fn ring0(v: &serde_json::Value) -> u64 {
    v["ring0"].as_u64().unwrap()
}

fn insns_of(v: &serde_json::Value, function: &str) -> u64 {
    v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == function)
        .map_or(0, |f| f["insns"].as_u64().unwrap())
}

/// Two runs of one ring-0 path give identical counts, function by
/// function; and the count is exact: printing the same text twice between
/// the same checkpoints costs the formatting and console functions exactly
/// twice what printing it once does (a sampled or approximate count would
/// not double exactly). The totals differ by a little more than double
/// (the second call finds state the first one left), so they are compared
/// only as more work.
#[test]
fn ring0_counts_are_exact_and_deterministic() {
    let (j0, j1, j1b, j2) = (
        TempFile::absent("c0.json"),
        TempFile::absent("c1.json"),
        TempFile::absent("c1b.json"),
        TempFile::absent("c2.json"),
    );
    let empty = count("", &j0);
    let once = count("buddyinfo", &j1);
    let again = count("buddyinfo", &j1b);
    let twice = count("buddyinfo buddyinfo", &j2);
    assert_eq!(once, again, "two runs of the same path must count the same");
    assert!(once["complete"].as_bool().unwrap());
    assert_eq!(once["ring3_stretches"], 0);
    let (e, o, t) = (ring0(&empty), ring0(&once), ring0(&twice));
    assert!(e > 0 && o > e && t > o, "empty {e}, once {o}, twice {t}");
    for f in [
        "<kernel::console::serial::Com1 as core::fmt::Write>::write_str",
        "core::fmt::write",
        "mm_core::fmt::write_dec",
    ] {
        let (e, o, t) = (insns_of(&empty, f), insns_of(&once, f), insns_of(&twice, f));
        assert!(o > 0, "{f} is on the path: {once:#}");
        assert_eq!(t - e, 2 * (o - e), "{f}: empty {e}, once {o}, twice {t}");
    }
}

/// A window through user mode: the child's copy-on-write fault is
/// counted in ring 0 (the fault handler on the path), ring 3 is not
/// stepped but its stretches are counted, and the run completes.
#[test]
fn a_window_through_user_mode_counts_the_kernel_side() {
    let json = TempFile::absent("cow.json");
    let r = boot(&[
        "--cmdline",
        "selftest=process",
        "--count-insns",
        "cow-shared..cow-child-wrote",
        "--count-insns-json",
        json.path(),
    ]);
    assert_eq!(r.status, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json.0).unwrap()).unwrap();
    assert!(v["complete"].as_bool().unwrap(), "{v:#}");
    assert!(v["ring3_stretches"].as_u64().unwrap() > 0, "{v:#}");
    assert!(insns_of(&v, "kernel::proc::fault::handle_mm_fault") > 0, "{v:#}");
    assert!(insns_of(&v, "trap_14") > 0, "the #PF entry stub is counted: {v:#}");
}
