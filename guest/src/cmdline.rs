//! Kernel command-line switches: what a run should do after booting.
//!
//! `exit=N`      power off with exit status N
//! `panic`       panic (exercises the panic handler)
//! `deadlock`    take the page allocator's lock twice (the spinlock's
//!               self-deadlock check panics, naming the lock)
//! `triplefault` triple-fault the CPU (exercises the VMM's crash report)
//! `sse`         run one SSE instruction (dies in KVM's emulator on hosts
//!               whose ring 0 is emulated; runs on hardware KVM)
//! `hang`        spin forever (exercises the VMM's --timeout)
//! `halt`        `cli; hlt` for good (the VMM must notice it can never wake)
//! `checkpoint=NAME` stop at a named checkpoint (the VMM inspects)
//! `nullderef`   read address 0 (exercises the kernel's oops)
//! `selftest`    run the self-test suite (`selftest=GROUP` for one group;
//!               `selftest_sabotage=NAME` inverts one check's verdict)
//! `mmbench`     in-guest memory-manager figures (counts, not times)
//! `procbench`   the process bench's ring-3 programs (`procbench=malloc`
//!               or `procbench=fork` for one half), for
//!               vmm/benches/process.rs, which parses their output
//! `meminfo`, `buddyinfo`, `slabinfo`, `vmallocinfo`, `ptdump`
//!               print the /proc-like views
//! `vmalloc_marker` put a known string in a vmalloc page and publish its
//!               address in `MMEMU_VMALLOC_MARKER` (for gdb and tests)
//! `vmalloc_overrun` read past the end of a vmalloc area (the guard page
//!               oopses, naming the area)
//! `break=WHAT`   break an invariant on purpose and stop at the `sabotage`
//!               checkpoint, for the host's --verify (mm/sabotage.rs;
//!               the process-side ones in proc/sabotage.rs)
//! `echo`        read one line from the console and print it back
//!               (exercises host stdin -> the guest's UART)

use crate::fmt::{parse_u64, Dec};
use crate::{arch, kprintln};

/// Runs the switches in order; returns the exit status for the run.
// Kept out of line: a place to break on in gdb, and a frame in backtraces.
#[inline(never)]
pub fn run_actions(cmdline: &'static str) -> u32 {
    let mut code = 0;
    let sabotage = cmdline.split(' ').find_map(|w| w.strip_prefix("selftest_sabotage="));
    for word in cmdline.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key, value) {
            ("exit", Some(v)) => match parse_u64(v) {
                Some(n) if n <= u32::MAX as u64 => code = n as u32,
                _ => kprintln!("cmdline: ignoring bad exit status '{}'", v),
            },
            ("selftest", group) => {
                if !crate::selftest::run(group, sabotage) && code == 0 {
                    code = 1;
                }
            }
            ("selftest_sabotage", Some(_)) => {}
            // Read at boot by drivers::virtio (the VMM's `--swap` device;
            // `virtio_poll` polls it instead of taking its interrupt).
            ("virtio_mmio.device", Some(_)) | ("virtio_poll", None) => {}
            ("mmbench", None) => crate::mm::bench::run(),
            ("procbench", what) => {
                if !procbench(what) && code == 0 {
                    code = 1;
                }
            }
            ("break", Some(what)) => {
                if !crate::mm::sabotage::run(what) {
                    code = 1;
                }
            }
            ("meminfo", None) => crate::mm::procfs::meminfo(),
            ("buddyinfo", None) => crate::mm::procfs::buddyinfo(),
            ("slabinfo", None) => crate::mm::procfs::slabinfo(),
            ("vmallocinfo", None) => crate::mm::procfs::vmallocinfo(),
            ("ptdump", None) => crate::mm::procfs::ptdump(),
            ("vmalloc_overrun", None) => vmalloc_overrun(),
            ("vmalloc_marker", None) => match crate::mm::vmalloc::create_marker() {
                Ok(va) => kprintln!("cmdline: vmalloc marker at {:#x}", va.0),
                Err(e) => kprintln!("cmdline: vmalloc marker failed: {}", e),
            },
            ("checkpoint", Some(name)) => crate::checkpoint::checkpoint(name),
            ("panic", None) => panic!("requested on the command line"),
            ("deadlock", None) => {
                kprintln!("cmdline: taking the page allocator's lock twice");
                crate::mm::PAGES.with(|_| crate::mm::PAGES.with(|_| ()));
            }
            ("triplefault", None) => {
                kprintln!("cmdline: triple-faulting on purpose");
                arch::triple_fault()
            }
            ("sse", None) => {
                kprintln!("cmdline: executing xorps in ring 0");
                arch::sse_probe();
                kprintln!("cmdline: xorps executed natively (hardware-assisted ring 0)");
            }
            ("echo", None) => echo_line(),
            ("nullderef", None) => {
                kprintln!("cmdline: dereferencing NULL");
                null_deref();
            }
            ("halt", None) => {
                kprintln!("cmdline: halting with interrupts disabled");
                arch::halt_forever()
            }
            ("hang", None) => {
                kprintln!("cmdline: spinning forever");
                #[allow(clippy::empty_loop)]
                loop {
                    core::hint::spin_loop();
                }
            }
            _ => kprintln!("cmdline: ignoring unknown switch '{}'", word),
        }
    }
    code
}

/// The process bench (vmm/benches/process.rs): runs `mallocbench` once
/// per trace (each in a fresh process, as the host runs glibc's), then
/// `forkbench` with 1, 16 and 64 MiB touched, or one half (`malloc`,
/// `fork`). The programs time themselves in ring 3 and print their own
/// results; the timer stays off, so no tick interrupts the timed work.
/// True if every program exited with status 0.
fn procbench(what: Option<&str>) -> bool {
    let (malloc, fork) = match what {
        None => (true, true),
        Some("malloc") => (true, false),
        Some("fork") => (false, true),
        Some(other) => {
            kprintln!("procbench: unknown half '{}' (malloc or fork)", other);
            return false;
        }
    };
    let mut runs: alloc::vec::Vec<(&str, u64)> = alloc::vec::Vec::new();
    if malloc {
        // The traces' count: guest/user/src/trace.rs, `TRACES`.
        runs.extend([("mallocbench", 0), ("mallocbench", 1), ("mallocbench", 2)]);
    }
    if fork {
        runs.extend([("forkbench", 1), ("forkbench", 16), ("forkbench", 64)]);
    }
    let mut ok = true;
    for (name, arg) in runs {
        let status = crate::proc::run(name, arg);
        if status != Some(0) {
            kprintln!("procbench: {} {} ended with status {:#x}", name, Dec(arg), status.unwrap_or(u64::MAX));
            ok = false;
        }
    }
    kprintln!("procbench: done");
    ok
}

/// Reads a line (up to 128 bytes) from COM1 and prints it back.
fn echo_line() {
    let mut line = [0u8; 128];
    let mut len = 0;
    kprintln!("echo: type a line");
    while len < line.len() {
        match crate::console::serial::read_byte() {
            b'\n' | b'\r' => break,
            b => {
                line[len] = b;
                len += 1;
            }
        }
    }
    kprintln!("echo: {}", core::str::from_utf8(&line[..len]).unwrap_or("<not UTF-8>"));
}

/// Reads through a NULL pointer (volatile, so the compiler keeps it).
#[inline(never)]
fn null_deref() {
    // SAFETY: deliberately invalid: the #PF handler oopses and ends the run.
    let v = unsafe { core::ptr::read_volatile(core::ptr::null::<u64>()) };
    kprintln!("read {:#x} from NULL: the NULL page is mapped!", v);
}

/// Reads one byte past the end of a one-page vmalloc area: the guard page
/// must catch it and the oops must name the area.
fn vmalloc_overrun() {
    match crate::mm::vmalloc::vmalloc(4096, "cmdline vmalloc_overrun") {
        Ok(va) => {
            kprintln!("cmdline: reading past the end of the vmalloc area at {:#x}", va.0);
            // SAFETY: deliberately invalid: the guard page faults and the
            // kernel oopses.
            let v = unsafe { core::ptr::read_volatile((va.0 + 4096) as *const u8) };
            kprintln!("read {:#x} from a guard page: the guard page is mapped!", v);
        }
        Err(e) => kprintln!("cmdline: vmalloc failed: {}", e),
    }
}
