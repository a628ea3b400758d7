//! Kernel command-line switches: what a run should do after booting.
//!
//! `help`        list these switches and the built-in checkpoints
//! `exit=N`      power off with exit status N (0..255)
//! `panic`       panic (exercises the panic handler)
//! `deadlock`    take the page allocator's lock twice (the spinlock's
//!               self-deadlock check panics, naming the lock)
//! `triplefault` triple-fault the CPU (exercises the VMM's crash report)
//! `triplefault=CPU` the same on CPU number CPU (an AP's crash report);
//! `sse=CPU` likewise for the SSE probe
//! `stackoverflow[=CPU]` a kernel thread (on CPU number CPU, default 0)
//!               recurses until its stack hits the guard page below it:
//!               the #DF handler reports the overflow (proc/kstack.rs);
//!               `stackoverflow=[CPU,]write` writes into the guard page
//!               with the stack pointer still above it (the #PF path)
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
//! `pathbench`   checkpoint pairs around one first-touch fault run, a
//!               munmap and two forks, for `--count-insns` (pathbench.rs)
//! `oom`         the OOM scenario: three memory hogs in a small guest,
//!               the biggest killed (`oom=adj`: oom_score_adj 1000
//!               picks a smaller one); proc/mod.rs `oom_scenario`
//! `vmstat`      print the event counters (/proc/vmstat)
//! `swaps`, `free` print /proc/swaps and free(1)'s table
//! `swappiness=N` vm.swappiness (0..200)
//! `overcommit_memory=N` vm.overcommit_memory (0 heuristic, 1 always, 2 never)
//! `overcommit_ratio=N` vm.overcommit_ratio (percent of RAM in CommitLimit)
//! `swaptest=PAGES[,fork][,yield][,STRIDE]` the swap proof program
//! `compact_memory` compact all memory now (/proc/sys/vm/compact_memory)
//! `pagetypeinfo`, `extfrag` free blocks per migratetype, and the
//!               unusable and fragmentation indexes per order
//! `compacttest=PAGES[,direct|,kcompactd][,thp]` the compaction proof program
//!               (fragtest); `kcompactd` starts kcompactd
//! `hugepages=N`, `hugepagesz=SIZE` the hugetlb pool (mm/hugetlb.rs);
//!               `hugetlbtest` its accounting program (hugetest)
//! `transparent_hugepage=always|madvise|never` THP mode (default madvise)
//! `thptest=MIB[,wait][,placement]` the transparent-huge-page proof program (thptest)
//! `khugepaged`  start the khugepaged thread
//! `meminfo`, `buddyinfo`, `slabinfo`, `vmallocinfo`, `ptdump`
//!               print the /proc-like views
//! `vmalloc_marker` put a known string in a vmalloc page and publish its
//!               address in `MMEMU_VMALLOC_MARKER` (for gdb and tests)
//! `vmalloc_overrun` read past the end of a vmalloc area (the guard page
//!               oopses, naming the area)
//! `tlbtrace[=N]` record what the host's `--verify tlb` replays (mm/tlbtrace.rs)
//! `noflush=WHAT` drop one TLB flush on purpose (munmap, mprotect, cow,
//!               reclaim) for `--verify tlb` to find
//! `tlbbatch=off` reclaim and migration flush each PTE at once instead of
//!               once per batch (arch/tlb.rs `TlbBatch`), for comparison
//! `fail_page_alloc=I,P,S,T` fault injection for the page allocator:
//!               interval, probability (%), space, times (mm/fail_page_alloc.rs)
//! `break=WHAT`   break an invariant on purpose and stop at the `sabotage`
//!               checkpoint, for the host's --verify (mm/sabotage.rs;
//!               the process-side ones in proc/sabotage.rs)
//! `echo`        read one line from the console and print it back
//!               (exercises host stdin -> the guest's UART)
//! `rdinit=PATH` the initramfs program to run as init (default /init)
//! `-- ARGS`     everything after is init's arguments, not switches

use crate::fmt::{parse_u64, Dec};
use crate::{arch, kprintln};

/// Runs the switches in order; returns the exit status for the run.
// Kept out of line: a place to break on in gdb, and a frame in backtraces.
#[inline(never)]
pub fn run_actions(cmdline: &'static str) -> u32 {
    let mut code = 0;
    let sabotage = cmdline.split(' ').find_map(|w| w.strip_prefix("selftest_sabotage="));
    for word in cmdline.split(' ').filter(|w| !w.is_empty()).take_while(|&w| w != "--") {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key, value) {
            ("exit", Some(v)) => match parse_u64(v) {
                Some(n) if n <= 255 => code = n as u32,
                Some(_) => {
                    kprintln!(
                        "cmdline: exit={}: the status must be 0..255 (a process status has 8 bits); exiting with 2",
                        v
                    );
                    return 2;
                }
                None => {
                    kprintln!("cmdline: exit={}: not a number; exiting with 2", v);
                    return 2;
                }
            },
            ("help", None) => help(),
            ("selftest", group) => {
                if !crate::selftest::run(group, sabotage) && code == 0 {
                    code = 1;
                }
            }
            ("selftest_sabotage", Some(_)) => {
                if !cmdline.split(' ').any(|w| w == "selftest" || w.starts_with("selftest=")) {
                    kprintln!("cmdline: warning: selftest_sabotage does nothing without selftest");
                }
            }
            // Read at boot by drivers::virtio (the VMM's `--swap` device;
            // `virtio_poll` polls it instead of taking its interrupt).
            ("virtio_mmio.device", Some(_)) | ("virtio_poll", None) => {}
            // Read by proc/exec.rs when the initramfs's init starts.
            ("rdinit", Some(_)) => {}
            // Run by main.rs once the other switches are done, instead of
            // the initramfs's init.
            ("shell", None) | ("kshell", None) => {}
            // The console is a terminal (the VMM's --shell on a tty).
            ("tty", None) => crate::proc::linux::set_console_tty(7),
            // Which of the VMM's stdin (1), stdout (2), stderr (4) are
            // terminals (the VMM adds it when running a program).
            ("tty", Some(v)) => match parse_u64(v) {
                Some(m) if m <= 7 => crate::proc::linux::set_console_tty(m as u8),
                _ => crate::kprintln!("cmdline: tty={} is not a mask of 1, 2 and 4", v),
            },
            ("mmbench", None) => crate::mm::bench::run(),
            ("pathbench", None) => {
                // Path-length windows for --count-insns (user/src/bin/pathbench.rs).
                if crate::proc::run("pathbench", 0) != Some(0) && code == 0 {
                    code = 1;
                }
            }
            ("pcpbench", None) => crate::mm::percpu::bench(),
            ("pagesets", None) => crate::mm::percpu::print_pagesets(),
            ("procbench", what) => {
                if !procbench(what) && code == 0 {
                    code = 1;
                }
            }
            // Read at boot by mm/tlbtrace.rs, before any process runs.
            ("tlbtrace", _) | ("noflush", Some(_)) | ("tlbbatch", Some(_)) => {}
            // Read at boot by mm/fail_page_alloc.rs.
            ("fail_page_alloc", Some(_)) => {}
            ("break", Some(what)) => {
                if !crate::mm::sabotage::run(what) {
                    code = 1;
                }
            }
            ("oom", variant) => {
                if !crate::proc::oom_scenario(variant) && code == 0 {
                    code = 1;
                }
            }
            ("vmstat", None) => crate::mm::vmstat::print(),
            ("swaps", None) => crate::mm::swap::print_swaps(),
            ("free", None) => crate::mm::procfs::free(),
            ("overcommit_memory", Some(v)) => {
                if !parse_u64(v).is_some_and(crate::mm::overcommit::set_overcommit_memory) {
                    kprintln!("cmdline: overcommit_memory={}: want 0, 1 or 2", v);
                    code = 2;
                }
            }
            ("overcommit_ratio", Some(v)) => match parse_u64(v) {
                Some(n) => crate::mm::overcommit::set_overcommit_ratio(n),
                None => {
                    kprintln!("cmdline: overcommit_ratio={}: not a number", v);
                    code = 2;
                }
            },
            ("swappiness", Some(v)) => match parse_u64(v) {
                Some(n) if n <= mm_core::lru::MAX_SWAPPINESS as u64 => crate::mm::swap::set_swappiness(n as u32),
                _ => {
                    kprintln!("cmdline: swappiness={}: want 0..200", v);
                    code = 2;
                }
            },
            ("tracereplay", Some(v)) => {
                if !tracereplay(v) && code == 0 {
                    code = 1;
                }
            }
            ("swaptest", Some(v)) => {
                if !swaptest(v) && code == 0 {
                    code = 1;
                }
            }
            ("transparent_hugepage", Some(v)) => match crate::mm::huge_memory::ThpMode::parse(v) {
                Some(m) => {
                    crate::mm::huge_memory::set_mode(m);
                }
                None => {
                    kprintln!("cmdline: transparent_hugepage={}: want always, madvise or never", v);
                    return 2;
                }
            },
            ("khugepaged", None) => {
                if crate::proc::thp::start_khugepaged().is_none() {
                    kprintln!("cmdline: khugepaged: no memory for the thread");
                    return 2;
                }
            }
            ("thptest", Some(v)) => {
                if !thptest(v) && code == 0 {
                    code = 1;
                }
            }
            ("compact_memory", None) => crate::mm::compaction::compact_memory_verbose(),
            ("kcompactd", None) => match crate::proc::sched::start_kcompactd() {
                Some(pid) => kprintln!("kcompactd0 running as pid {}", crate::fmt::Dec(pid)),
                None => kprintln!("kcompactd: no memory for the thread"),
            },
            ("pagetypeinfo", None) => crate::mm::compaction::pagetypeinfo(),
            ("extfrag", None) => crate::mm::compaction::extfrag(),
            ("compacttest", Some(v)) => {
                if !compacttest(v) && code == 0 {
                    code = 1;
                }
            }
            ("hugepages", Some(v)) => match parse_u64(v) {
                Some(n) if n <= 1 << 20 => crate::mm::hugetlb::boot_hugepages(n),
                _ => {
                    kprintln!("cmdline: hugepages={}: want a page count", v);
                    code = 2;
                }
            },
            (k @ ("hugepagesz" | "default_hugepagesz"), Some(v)) => {
                if !crate::mm::hugetlb::hugepagesz(v, k == "default_hugepagesz") {
                    code = 2;
                }
            }
            ("hugetlbtest", None) => {
                let status = crate::proc::run("hugetest", 0);
                kprintln!("hugetlbtest: exit status {:#x}", status.unwrap_or(u64::MAX));
                if status != Some(0) && code == 0 {
                    code = 1;
                }
            }
            ("gigatest", None) => {
                let status = crate::proc::run("gigatest", 0);
                kprintln!("gigatest: exit status {:#x}", status.unwrap_or(u64::MAX));
                if status != Some(0) && code == 0 {
                    code = 1;
                }
            }
            ("meminfo", None) => crate::mm::procfs::meminfo(),
            ("buddyinfo", None) => crate::mm::procfs::buddyinfo(),
            ("numa", None) => crate::mm::numa::hardware(),
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
            ("triplefault", Some(v)) => on_cpu("triplefault", v, 0),
            ("sse", Some(v)) => on_cpu("sse", v, 1),
            ("stackoverflow", Some(v)) => match v.split_once(',') {
                Some((cpu, "write")) => on_cpu("stackoverflow", if cpu.is_empty() { "0" } else { cpu }, 3),
                Some(_) => {
                    kprintln!("cmdline: stackoverflow={}: want CPU or CPU,write", v);
                    code = 2;
                }
                None if v == "write" => on_cpu("stackoverflow", "0", 3),
                None => on_cpu("stackoverflow", v, 2),
            },
            ("stackoverflow", None) => on_cpu("stackoverflow", "0", 2),
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
            _ => kprintln!("cmdline: warning: ignoring unknown switch '{}'; `help` lists the switches", word),
        }
    }
    code
}

/// The switches, one line each (the module documentation's list).
const SWITCHES: [(&str, &str); 56] = [
    ("help", "this list"),
    ("exit=N", "power off with exit status N (0..255)"),
    ("selftest[=GROUP]", "the self-test suite: buddy, slab, heap, vmalloc, debug, paging, faults, access, process"),
    ("selftest_sabotage=NAME", "invert the verdict of the check NAME (with selftest)"),
    ("meminfo", "/proc/meminfo"),
    ("free", "free(1): memory and swap in kB"),
    ("tracereplay=ZIPF,SCAN,KACCESSES,PERIOD", "replay mm-core's reclaim trace (ZIPF hot pages, a SCAN-page scan every PERIOD accesses, KACCESSES thousand accesses) and count major faults (vmm/benches/swap.rs)"),
    ("swaps", "/proc/swaps"),
    ("swappiness=N", "vm.swappiness, 0..200 (default 60): anon against file reclaim"),
    ("swaptest=PAGES[,fork][,yield][,STRIDE]", "write PAGES pages of checksummed data and read them back (swaps when beyond RAM); fork: then a child shares them and writes every STRIDE-th page; yield: let kswapd run while writing"),
    ("buddyinfo", "/proc/buddyinfo"),
    ("numa", "numactl --hardware: the NUMA nodes (ACPI SRAT/SLIT), their CPUs, size, free memory and distances, then each node's meminfo"),
    ("transparent_hugepage=MODE", "transparent huge pages: always, madvise (default) or never"),
    ("khugepaged", "start khugepaged: collapses populated 2 MiB ranges whenever processes yield"),
    ("thptest=MIB[,wait][,placement]", "touch MIB MiB of anonymous memory, then (THP on) split, fork+COW and khugepaged collapse; placement: only where mmap/mremap put THP-sized mappings"),
    ("compact_memory", "compact all memory now, print pages migrated and the order-9 unusable index"),
    ("pagetypeinfo", "/proc/pagetypeinfo: free blocks per order and migratetype, pageblocks per type"),
    ("extfrag", "the unusable and fragmentation indexes per order (debugfs extfrag)"),
    ("compacttest=PAGES[,direct|,kcompactd][,thp]", "fragment memory with up to PAGES pages, compact (direct: by an order-9 allocation; kcompactd: by kcompactd after a failed one; thp: around two transparent huge pages), check the data"),
    ("kcompactd", "start kcompactd, background compaction woken by failed high-order allocations"),
    ("hugepages=N", "fill the hugetlb pool with N 2 MiB pages (nr_hugepages)"),
    ("hugepagesz=SIZE", "the pool the next hugepages=N fills: 2M, or 1G where the CPU has pdpe1gb (refused with the reason elsewhere)"),
    ("default_hugepagesz=SIZE", "the hugetlb page size mmap uses without MAP_HUGE_*: 2M or 1G (as hugepagesz=)"),
    ("hugetlbtest", "the hugetlb accounting program (needs hugepages=4 or more)"),
    ("gigatest", "the 1 GiB hugetlb program (needs hugepagesz=1G hugepages=1 and pdpe1gb; checks the refusal without)"),
    ("slabinfo", "/proc/slabinfo"),
    ("vmallocinfo", "/proc/vmallocinfo"),
    ("ptdump", "the kernel page tables (debugfs page_tables)"),
    ("mmbench", "memory-manager figures (counts)"),
    ("pathbench", "checkpoint pairs around first-touch faults, munmap, fork (--count-insns)"),
    ("pcpbench", "page-allocator lock acquisitions per 1000 kmalloc/kfree and per 1000 order-0 pages, per-CPU caches bypassed and used"),
    ("pagesets", "each CPU's page lists and object arrays: allocations served, refills, hand-backs (/proc/zoneinfo's pagesets)"),
    ("procbench[=malloc|fork]", "the process bench's ring-3 programs"),
    ("checkpoint=NAME", "stop at checkpoint NAME for the host's --inspect/--verify"),
    ("break=WHAT", "break an invariant on purpose, then checkpoint 'sabotage'"),
    ("tlbtrace[=N]", "record page-table changes, flushes, frees and returns to user mode in per-CPU rings of N records (default 8192) for the host's --verify tlb (which adds it)"),
    ("noflush=WHAT", "drop one TLB flush on purpose (munmap, mprotect, cow, reclaim), for --verify tlb"),
    ("tlbbatch=off", "reclaim and migration flush each PTE at once, not once per batch (for comparison)"),
    ("fail_page_alloc=I,P,S,T", "fault injection: fail page allocations (interval, probability %, space, times; /sys/kernel/debug/fail_page_alloc)"),
    ("vmalloc_marker", "a known string in a vmalloc page (for gdb)"),
    ("vmalloc_overrun", "read past a vmalloc area: the guard page oopses"),
    ("nullderef", "read address 0: the oops names the NULL page"),
    ("panic", "a kernel panic"),
    ("triplefault", "triple-fault the CPU"),
    ("triplefault=CPU", "triple-fault CPU number CPU (a kernel thread pinned there; the VMM names that vCPU)"),
    ("sse=CPU", "execute xorps in ring 0 on CPU number CPU"),
    ("sse", "one SSE instruction in ring 0"),
    ("stackoverflow[=CPU]", "a kernel thread (on CPU, default 0) recurses into its stack's guard page: the double-fault handler's report"),
    ("stackoverflow=[CPU,]write", "a kernel thread writes into its stack's guard page, stack pointer above it: the page-fault handler's report"),
    ("hang", "spin forever (for --timeout)"),
    ("halt", "cli; hlt for good"),
    ("echo", "read a console line and print it back"),
    ("tty", "the console is a terminal: TCGETS and TIOCGWINSZ answer as a tty's (the VMM adds it for --shell on a terminal)"),
    ("tty=MASK", "which of the VMM's stdin (1), stdout (2) and stderr (4) are terminals: fds 0, 1 and 2 answer TCGETS as they do (the VMM adds it when it runs a program)"),
    ("shell", "the built-in ring-3 shell (a Linux program) instead of /init (`vmm run --shell`; `help` in it lists its commands)"),
    ("kshell", "the in-kernel console monitor instead of /init (its `numactl` has no /proc file; `help` lists its commands)"),
];

/// The checkpoints the kernel and its programs reach on their own (the
/// VMM's `--inspect-at` takes these names; vmm/src/inspect/spec.rs
/// `BUILTIN_CHECKPOINTS` documents the same list).
const CHECKPOINTS: [(&str, &str); 11] = [
    ("ready", "every boot, once the memory manager is up"),
    ("sabotage", "break=WHAT, right after the invariant was broken"),
    ("access-test-done", "selftest=access (ring 0, then ring 3)"),
    ("processes-alive", "selftest=process, six processes mapping one address"),
    ("cow-shared", "selftest=process, right after a fork"),
    ("cow-child-wrote", "selftest=process, after the child's copy-on-write"),
    ("zero-page-mapped", "selftest=process, after reads of untouched memory"),
    ("mmbench-kmalloc-begin", "mmbench"),
    ("mmbench-kmalloc-end", "mmbench"),
    ("mmbench-pages-begin", "mmbench"),
    ("mmbench-pages-end", "mmbench"),
];

/// `help`: the switches and the built-in checkpoints. Plain `{}` of
/// strings only: width and padding are not safe in ring 0 here.
fn help() {
    kprintln!("switches (space-separated on the kernel command line):");
    for (name, what) in SWITCHES {
        kprintln!("  {}  --  {}", name, what);
    }
    kprintln!("break=WHAT: freed-mapped, text-writable, {}", crate::proc::sabotage::NAMES);
    kprintln!("built-in checkpoints (for the VMM's --inspect-at; checkpoint=NAME adds any, SIGUSR1 gives 'pause'):");
    for (name, when) in CHECKPOINTS {
        kprintln!("  {}  --  {}", name, when);
    }
}

/// `tracereplay=ZIPF,SCAN,KACCESSES,PERIOD`: runs the tracereplay
/// program (guest/user/src/bin/tracereplay.rs); true if it exited 0.
fn tracereplay(v: &str) -> bool {
    let f: alloc::vec::Vec<u64> = v.split(',').filter_map(parse_u64).collect();
    if f.len() != 4 || f.iter().any(|&x| x > 0xffff) || f[0] == 0 || f[2] == 0 || !f[3].is_multiple_of(100) {
        kprintln!("cmdline: tracereplay={}: want ZIPF,SCAN,KACCESSES,PERIOD (each < 65536, PERIOD in hundreds)", v);
        return false;
    }
    let arg = f[0] | f[1] << 16 | f[2] << 32 | (f[3] / 100) << 48;
    let status = crate::proc::run("tracereplay", arg);
    kprintln!("tracereplay: exit status {:#x}", status.unwrap_or(u64::MAX));
    crate::mm::swap::print_swaps();
    crate::mm::vmstat::print();
    status == Some(0)
}

/// `swaptest=PAGES[,fork][,yield][,STRIDE]`: runs the swaptest program
/// (guest/user/src/bin/swaptest.rs) and prints its end; true if it
/// exited 0.
fn swaptest(v: &str) -> bool {
    let mut parts = v.split(',');
    let Some(pages) = parts.next().and_then(parse_u64).filter(|&p| p > 0 && p < 1 << 32) else {
        kprintln!("cmdline: swaptest={}: want a page count", v);
        return false;
    };
    let mut arg = pages;
    for opt in parts {
        match opt {
            "fork" => arg |= 1 << 32,
            "yield" => arg |= 1 << 33,
            s => match parse_u64(s).filter(|&s| (1..256).contains(&s)) {
                Some(stride) => arg |= stride << 40,
                None => {
                    kprintln!("cmdline: swaptest: unknown option '{}' (fork, yield, or a stride 1..255)", s);
                    return false;
                }
            },
        }
    }
    let status = crate::proc::run("swaptest", arg);
    kprintln!("swaptest: exit status {:#x}", status.unwrap_or(u64::MAX));
    crate::mm::swap::print_swaps();
    crate::mm::vmstat::print();
    status == Some(0)
}

/// `thptest=MIB[,wait][,placement]`: runs the thptest program
/// (guest/user/src/bin/thptest.rs) touching MIB MiB (`wait`: its collapse
/// is left to the khugepaged thread; `placement`: only its check of where
/// mmap and mremap put THP-sized mappings), then prints vmstat; true if
/// it exited 0.
fn thptest(v: &str) -> bool {
    let mut parts = v.split(',');
    let Some(mib) = parts.next().and_then(parse_u64).filter(|m| (8..=0xffff).contains(m)) else {
        kprintln!("cmdline: thptest={}: want the MiB to touch (8..65535)", v);
        return false;
    };
    let (mut wait, mut placement) = (false, false);
    for p in parts {
        match p {
            "wait" => wait = true,
            "placement" => placement = true,
            _ => {
                kprintln!("cmdline: thptest={}: unknown option {} (wait, placement)", v, p);
                return false;
            }
        }
    }
    let status = crate::proc::run("thptest", mib | (wait as u64) << 16 | (placement as u64) << 17);
    kprintln!("thptest: exit status {:#x}", status.unwrap_or(u64::MAX));
    crate::mm::vmstat::print();
    status == Some(0)
}

/// `compacttest=PAGES[,direct]`: runs the fragtest program (guest/user/src/bin/
/// fragtest.rs) with at most PAGES pages, then prints the extfrag
/// indexes; true if it exited 0.
fn compacttest(v: &str) -> bool {
    let mut parts = v.split(',');
    let Some(pages) = parts.next().and_then(parse_u64).filter(|p| (2..1 << 32).contains(p)) else {
        kprintln!("cmdline: compacttest={}: want a page count (2 or more)", v);
        return false;
    };
    // `,direct`: compaction by an order-9 allocation's slow path;
    // `,kcompactd`: by kcompactd, woken by an order-9 allocation that
    // failed (the program yields until it ran).
    // `,thp`: two transparent huge pages mapped first, which compaction
    // must work around (and leave intact).
    let (mut direct, mut kcompactd, mut thp) = (false, false, false);
    for opt in parts {
        match opt {
            "direct" => direct = true,
            "kcompactd" => kcompactd = true,
            "thp" => thp = true,
            o => {
                kprintln!("cmdline: compacttest: unknown option '{}' (direct, kcompactd, thp)", o);
                return false;
            }
        }
    }
    if kcompactd && crate::proc::sched::start_kcompactd().is_none() {
        kprintln!("compacttest: cannot start kcompactd");
        return false;
    }
    let status =
        crate::proc::run("fragtest", pages | (direct as u64) << 32 | (kcompactd as u64) << 33 | (thp as u64) << 34);
    kprintln!("compacttest: exit status {:#x}", status.unwrap_or(u64::MAX));
    crate::mm::compaction::extfrag();
    status == Some(0)
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

/// What [`on_cpu`]'s thread does, and where, and whether it came back.
static ON_CPU: [core::sync::atomic::AtomicUsize; 3] = [const { core::sync::atomic::AtomicUsize::new(0) }; 3];

/// `triplefault=CPU`, `sse=CPU` and `stackoverflow=CPU`: a kernel thread
/// pinned to that CPU runs the probe there (`what` 0: triple fault, 1:
/// SSE in ring 0, 2: recursion into the stack's guard page, 3: a write
/// into it from above), so the report has to name an application
/// processor. This CPU gives way until the thread is done (a probe that
/// returns).
fn on_cpu(name: &'static str, v: &str, what: usize) {
    use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    let n = crate::arch::smp::nr_cpus();
    let Some(cpu) = parse_u64(v).map(|c| c as usize).filter(|&c| c < n) else {
        kprintln!("cmdline: {}={}: want a CPU number below {}", name, v, Dec(n as u64));
        return;
    };
    ON_CPU[0].store(what, Relaxed);
    ON_CPU[1].store(cpu, Relaxed);
    ON_CPU[2].store(0, Release);
    extern "C" fn entry() -> ! {
        let cpu = ON_CPU[1].load(Relaxed);
        while crate::arch::percpu::cpu_id() != cpu {
            // Not there yet: the pinned mask moves it at its next yield.
            crate::proc::sched::set_affinity(0, 1 << cpu);
            crate::proc::sched::yield_now(false);
        }
        if ON_CPU[0].load(Relaxed) == 0 {
            kprintln!("cmdline: triple-faulting CPU {} on purpose", Dec(cpu as u64));
            arch::triple_fault()
        }
        if ON_CPU[0].load(Relaxed) == 3 {
            let (pid, base) = crate::arch::percpu::this_cpu().task_stack.get();
            kprintln!(
                "cmdline: task {} on CPU {} writing below its kernel stack ({:#x}-{:#x})",
                Dec(pid),
                Dec(cpu as u64),
                base,
                base + crate::proc::kstack::THREAD_SIZE
            );
            // SAFETY: deliberately invalid: the page below the stack is
            // its guard page, unmapped; the fault ends the run.
            unsafe { core::ptr::write_volatile((base - 8) as *mut u64, 0x5a5a) };
            kprintln!("cmdline: wrote below the kernel stack: the guard page is mapped!");
            ON_CPU[2].store(1, Release);
            loop {
                crate::proc::sched::sleep_current();
            }
        }
        if ON_CPU[0].load(Relaxed) == 2 {
            let (pid, base) = crate::arch::percpu::this_cpu().task_stack.get();
            kprintln!(
                "cmdline: task {} recursing on CPU {} until its kernel stack ({:#x}-{:#x}) overflows",
                Dec(pid),
                Dec(cpu as u64),
                base,
                base + crate::proc::kstack::THREAD_SIZE
            );
            let depth = recurse(0);
            kprintln!("cmdline: the recursion returned at depth {}: no guard page stopped it!", Dec(depth));
            ON_CPU[2].store(1, Release);
            loop {
                crate::proc::sched::sleep_current();
            }
        }
        kprintln!("cmdline: executing xorps in ring 0 on CPU {}", Dec(cpu as u64));
        arch::sse_probe();
        kprintln!("cmdline: xorps executed natively on CPU {} (hardware-assisted ring 0)", Dec(cpu as u64));
        ON_CPU[2].store(1, Release);
        loop {
            crate::proc::sched::sleep_current();
        }
    }
    let thread = if what >= 2 { name } else { "probe" };
    let Some(pid) = crate::proc::sched::kthread_run(thread, entry) else {
        kprintln!("cmdline: {}={}: no memory for a kernel thread", name, v);
        return;
    };
    crate::proc::sched::set_affinity(pid, 1 << cpu);
    while ON_CPU[2].load(Acquire) == 0 {
        crate::proc::sched::yield_now(false);
    }
}

/// Recurses with a 512-byte frame (each level writes its frame, as real
/// code does) until the stack runs out: the `stackoverflow` probe. The
/// depth bound only keeps the compiler from treating the recursion as
/// endless; a 32 KiB stack is gone after ~60 levels.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 512];
    frame[0] = depth as u8;
    let frame = core::hint::black_box(&mut frame);
    if depth >= 1 << 20 {
        return depth;
    }
    let r = recurse(core::hint::black_box(depth + 1));
    // Used after the call: no tail call reuses the frame.
    core::hint::black_box(&*frame);
    r
}
