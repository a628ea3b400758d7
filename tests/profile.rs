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
    // Ring 3's exact count comes from the host's PMU where there is one;
    // where perf has no `cpu` event source (these machines) the window
    // says so instead of reporting a zero.
    let notes = v["notes"].to_string();
    if std::path::Path::new("/sys/bus/event_source/devices/cpu").exists() {
        let ring3 = v["pmu"]["ring3"].as_u64();
        assert!(ring3.is_some_and(|n| n > 0) || notes.contains("perf_event_paranoid"), "{v:#}");
    } else {
        assert!(v["pmu"].is_null(), "{v:#}");
        assert!(notes.contains("no hardware PMU"), "{v:#}");
        assert!(r.stderr.contains("note: this host has no hardware PMU"), "{}", r.all());
    }
}

/// `vmm run --profile FILE` for `selftest=slab`: the folded stacks unwind
/// to the kernel's entry, and under the slab self-test's frame the hottest
/// frames are the slab allocator's, a sample below a slab function (its
/// page refills in the buddy allocator) counting as that function's
/// (console output aside: the
/// module with the most leaf samples is `mm_core::slab`, one of the three
/// hottest leaves is one of its functions, and they hold at least a fifth of the
/// self-test's samples); the flame graph is well-formed XML that draws
/// the slab functions.
#[test]
fn the_flame_graph_of_the_slab_selftest_has_the_slab_functions_on_top() {
    let svg = TempFile::absent("slab-profile.svg");
    let folded = TempFile(format!("{}.folded", svg.path()).into());
    let r = boot(&["--cmdline", "selftest=slab", "--profile", svg.path(), "--profile-hz", "5000"]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stderr.contains("vmm: profile: "), "{}", r.all());
    let text = std::fs::read_to_string(&folded.0).unwrap();
    let mut leaves: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut total, mut in_slab, mut rooted) = (0, 0, 0);
    for line in text.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a folded line: {line:?}"));
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("no count: {line:?}"));
        let frames: Vec<&str> = stack.split(';').collect();
        total += n;
        // Kernel stacks unwind to the entry point (the CFI reaches it);
        // a sample in an interrupt's entry code ends earlier.
        if frames.contains(&"kernel::selftest::allocators::slab") {
            in_slab += n;
            if frames.starts_with(&["_start", "kmain"]) {
                rooted += n;
            }
            // A sample in the buddy allocator or memset on behalf of a
            // slab function (a slab's page refill or release) is that
            // function's: its tower in the flame graph. Other samples
            // count by their leaf.
            let at = frames.iter().rposition(|f| f.starts_with("mm_core::slab::")).unwrap_or(frames.len() - 1);
            *leaves.entry(frames[at].to_string()).or_default() += n;
        }
    }
    assert!(in_slab >= 30, "{in_slab} of {total} samples in the slab self-test:\n{text}");
    assert!(rooted * 10 >= in_slab * 9, "only {rooted} of {in_slab} stacks unwound to _start:\n{text}");
    let mut by_leaf: Vec<(u64, &str)> = leaves.iter().map(|(f, n)| (*n, f.as_str())).collect();
    by_leaf.sort_unstable_by(|a, b| b.cmp(a));
    // Printing the results is console output: every byte a port write
    // that exits to the VMM (slow in a debug VMM). Beside it, the
    // hottest leaves must be the slab allocator's.
    let console = |f: &str| f.contains("fmt") || f.contains("console") || f.starts_with("<str as");
    let group = |f: &str| -> String {
        if console(f) {
            return "console output".into();
        }
        f.split("::").take(2).collect::<Vec<_>>().join("::")
    };
    let mut by_group: std::collections::BTreeMap<String, u64> = Default::default();
    for (n, f) in &by_leaf {
        *by_group.entry(group(f)).or_default() += n;
    }
    let top_group = by_group
        .iter()
        .filter(|(g, _)| *g != "console output")
        .max_by_key(|(_, n)| **n)
        .map(|(g, _)| g.clone())
        .unwrap();
    assert_eq!(top_group, "mm_core::slab", "leaf samples by group: {by_group:?}\nleaves: {by_leaf:?}");
    let top3: Vec<&(u64, &str)> = by_leaf.iter().filter(|(_, f)| !console(f)).take(3).collect();
    assert!(top3.iter().any(|(_, f)| f.starts_with("mm_core::slab::")), "the three hottest leaves: {top3:?}");
    assert!(
        by_group["mm_core::slab"] * 5 >= in_slab,
        "slab functions are {} of the self-test's {in_slab} samples: {by_group:?}",
        by_group["mm_core::slab"]
    );

    // The SVG parses as XML from start to end, and its frames' titles
    // name the slab functions.
    let svg_text = std::fs::read_to_string(&svg.0).unwrap();
    let mut reader = quick_xml::Reader::from_str(&svg_text);
    let (mut elements, mut titles, mut depth) = (0, Vec::new(), 0i32);
    let mut in_title = false;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) => {
                elements += 1;
                depth += 1;
                in_title = e.name().as_ref() == b"title";
            }
            Ok(quick_xml::events::Event::Empty(_)) => elements += 1,
            Ok(quick_xml::events::Event::End(_)) => {
                depth -= 1;
                in_title = false;
            }
            Ok(quick_xml::events::Event::Text(t)) if in_title => {
                titles.push(String::from_utf8_lossy(t.as_ref()).into_owned());
            }
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("the flame graph is not well-formed XML at {}: {e}", reader.buffer_position()),
        }
    }
    assert_eq!(depth, 0, "unclosed elements");
    assert!(svg_text.contains("<svg") && elements > 50, "{elements} elements");
    assert!(
        titles.iter().any(|t| t.contains("mm_core::slab::cache::KmemCache")),
        "no slab frame among the SVG's {} titles",
        titles.len()
    );
}

/// Bad `--profile` arguments fail before the guest boots, saying what to do.
#[test]
fn profile_arguments_are_checked_before_the_boot() {
    let r = boot(&["--cmdline", "exit=0", "--profile", "/nonexistent-dir/p.svg"]);
    assert_eq!(r.status, 1, "{}", r.all());
    assert!(r.stderr.contains("cannot create /nonexistent-dir/p.svg") && r.stderr.contains("writable"), "{}", r.all());
    let svg = TempFile::absent("zero.svg");
    let r = boot(&["--cmdline", "exit=0", "--profile", svg.path(), "--profile-hz", "0"]);
    assert_eq!(r.status, 2, "{}", r.all());
    assert!(r.stderr.contains("no samples"), "{}", r.all());
    let r = boot(&["--cmdline", "exit=0", "--profile-hz", "100"]);
    assert_eq!(r.status, 2, "--profile-hz alone: {}", r.all());
}

/// A static C program with a named hot function, run from an initrd
/// directory (not `-- PROG`: the profiler finds the program through the
/// guest's VMA table, the file VMA over the pc naming `/init`, which the
/// VMM has from the initrd it packed). Its user samples name `spin_here`
/// under `main`; and the kernel samples taken inside its system calls are
/// joined to the user function that made them (`[user init]`, the user
/// frames down to `call_kernel_here`, then the kernel's entry and its
/// system-call path).
const SPIN: &str = r#"
#include <unistd.h>
#include <sys/syscall.h>
volatile unsigned long sink;
__attribute__((noinline)) void spin_here(unsigned long n) {
    for (unsigned long i = 0; i < n; i++) sink += i;
}
__attribute__((noinline)) void call_kernel_here(int n) {
    for (int i = 0; i < n; i++) syscall(SYS_getppid);
}
int main(void) {
    spin_here(400000000UL);
    call_kernel_here(300);
    return 0;
}
"#;

#[test]
fn user_frames_of_an_initrd_program_are_named_from_its_own_elf() {
    let dir = common::Scratch::new("profile-user");
    let prog = common::compile("gcc", SPIN, &dir.0, "spin", &["-static", "-fno-omit-frame-pointer"]);
    let root = common::initrd_with_init(&dir.0, &prog);
    let svg = TempFile::absent("user-profile.svg");
    let folded = TempFile(format!("{}.folded", svg.path()).into());
    let r = boot(&["--initrd", root.to_str().unwrap(), "--profile", svg.path(), "--profile-hz", "2000"]);
    assert_eq!(r.status, 0, "{}", r.all());
    let text = std::fs::read_to_string(&folded.0).unwrap();
    let (mut spin, mut joined, mut unknown) = (0u64, 0u64, 0u64);
    for line in text.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a folded line: {line:?}"));
        let n: u64 = n.parse().unwrap();
        let frames: Vec<&str> = stack.split(';').collect();
        if frames[0] != "[user init]" {
            continue;
        }
        if frames.iter().any(|f| f.starts_with("[user code: no ELF known]")) {
            unknown += n;
        }
        if frames.last() == Some(&"spin_here") {
            assert!(frames.contains(&"main"), "spin_here unwinds to main: {line}");
            spin += n;
        }
        // A kernel frame beneath the user function that made the call.
        if let Some(at) = frames.iter().position(|f| *f == "call_kernel_here") {
            if frames[at + 1..].iter().any(|f| f.starts_with("kernel::")) {
                joined += n;
            }
        }
    }
    assert!(spin >= 20, "{spin} samples in spin_here:\n{text}");
    assert!(joined >= 5, "{joined} kernel samples joined to call_kernel_here:\n{text}");
    assert_eq!(unknown, 0, "user code without an ELF:\n{text}");
}
