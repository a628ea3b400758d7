//! The in-guest self-test suite (`selftest` on the kernel command line,
//! `selftest=GROUP` for one group). Each check prints a line and sends a
//! record `<group> <name> pass|fail <detail>` on the VMM's results port,
//! so the host gets structured results. The run fails (exit status 1) if
//! any check failed. `selftest_sabotage=NAME` inverts one check's verdict,
//! to show a failure reaches the VMM.
//!
//! Sized for ring-0 emulation (platform.md): a few million instructions
//! per group.

pub mod access;
mod allocators;
mod faults;
mod locks;
mod process;
mod virtio;

use crate::arch::outb;
use crate::fmt::StackString;
use crate::kprintln;
use crate::sync::{rank, SpinLock};
use core::fmt::Write;

// The VMM's results port.
use mm_core::abi::port::RESULTS as RESULTS_PORT;

struct Run {
    passed: u64,
    failed: u64,
    sabotage: Option<&'static str>,
    sabotage_hit: bool,
}

static RUN: SpinLock<Run> = SpinLock::new("the self-test run", rank::MISC);

/// A check's detail text, built without a heap.
pub type Detail = StackString<200>;

/// Records one check.
pub fn check(group: &str, name: &str, ok: bool, detail: &str) {
    let sabotaged = RUN.with(|r| {
        let hit = r.sabotage == Some(name);
        r.sabotage_hit |= hit;
        hit
    });
    let ok = ok != sabotaged;
    RUN.with(|r| if ok { r.passed += 1 } else { r.failed += 1 });
    kprintln!(
        "selftest: {}/{}: {}{}{}{}",
        group,
        name,
        if ok { "PASS" } else { "FAIL" },
        if detail.is_empty() { "" } else { ": " },
        detail,
        if sabotaged { " (verdict inverted by selftest_sabotage)" } else { "" }
    );
    let mut line = StackString::<320>::new();
    let _ = writeln!(line, "{} {} {} {}", group, name, if ok { "pass" } else { "fail" }, detail);
    for b in line.as_str().bytes() {
        outb(RESULTS_PORT, b);
    }
}

/// Formats a detail string.
#[macro_export]
macro_rules! detail {
    ($($arg:tt)*) => {{
        let mut d = $crate::selftest::Detail::new();
        let _ = core::fmt::Write::write_fmt(&mut d, format_args!($($arg)*));
        d
    }};
}

/// The groups, in the order they run.
const GROUPS: [(&str, fn()); 11] = [
    ("buddy", allocators::buddy),
    ("slab", allocators::slab),
    ("heap", allocators::heap),
    ("vmalloc", allocators::vmalloc),
    ("debug", allocators::debug),
    ("locks", locks::locks),
    ("paging", faults::paging),
    ("faults", faults::faults),
    ("access", access::access),
    ("process", process::process),
    ("virtio", virtio::virtio),
];

/// Runs the suite (or one group); true if every check passed.
pub fn run(only: Option<&str>, sabotage: Option<&'static str>) -> bool {
    RUN.set(Run { passed: 0, failed: 0, sabotage, sabotage_hit: false });
    let mut ran = false;
    for (name, f) in GROUPS {
        if only.is_none_or(|o| o == name) {
            kprintln!("selftest: group {}", name);
            f();
            ran = true;
        }
    }
    if !ran {
        check(
            "selftest",
            "group_exists",
            false,
            "no such group (buddy, slab, heap, vmalloc, debug, locks, paging, faults, access, process, virtio)",
        );
    }
    if let (Some(name), false) = (sabotage, RUN.with(|r| r.sabotage_hit)) {
        check("selftest", "sabotage_name_exists", false, "selftest_sabotage names no check that ran");
        kprintln!("selftest: unknown selftest_sabotage '{}': no check of that name ran", name);
    }
    let (passed, failed) = RUN.with(|r| (r.passed, r.failed));
    kprintln!("selftest: {} passed, {} failed", crate::fmt::Dec(passed), crate::fmt::Dec(failed));
    failed == 0
}
