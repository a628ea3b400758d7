//! Processes: address spaces (`mm_struct`, mm.rs) over their own page
//! tables (edited with mm-core's slot API), user-mode page faults (fault.rs: demand paging,
//! copy-on-write, stack growth, segfaults), the system calls
//! (syscall.rs), the tasks and the preemptive round-robin scheduler
//! (sched.rs), and the user programs embedded in the kernel image
//! (built from guest/user/ by build.rs).
//!
//! Entry from ring 3 arrives here from arch/traps.rs: `interrupt` for the
//! APIC timer and for system calls through the `syscall` stub,
//! `user_exception` for everything ring 3 raised, including the #PF at
//! LSTAR that a `syscall` produces on hosts where it stays in ring 3
//! (platform.md).

// The user side uses every item; the kernel only some.
#[allow(dead_code)]
#[path = "../../user/src/abi.rs"]
pub mod abi;
pub mod elf;
pub mod exec;
pub mod fault;
pub mod futex;
pub mod kstack;
pub mod linux;
pub mod mempolicy;
pub mod mm;
pub mod mman;
pub mod report;
pub mod sabotage;
pub mod sched;
pub mod signal;
pub mod syscall;
pub mod sysnames;
pub mod thp;

use crate::arch::idt::{SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::arch::traps::{exception_name, TrapFrame, PAGE_FAULT};
use crate::arch::usermode::FpuState;
use crate::arch::{apic, syscall as sysentry};
use crate::fmt::Dec;
use crate::kprintln;
use crate::mm::{KERNEL_PT, PAGES};
use fault::FaultError;
use mm::{MmGlobals, MmStruct, MM_GLOBALS};
use mm_core::abi::cpu::{PF_FETCH, PF_PRESENT, PF_USER, RFLAGS_FIXED, RFLAGS_IF};

/// #PF error code of the fetch at LSTAR when `syscall` stays in ring 3:
/// present, user, instruction fetch.
const SYSCALL_FAULT_ERR: u64 = (PF_PRESENT | PF_USER | PF_FETCH) as u64;
/// The timer period in APIC bus cycles (1 ns each under KVM): 4 ms.
const TIMER_PERIOD: u32 = 4_000_000;

macro_rules! user_program {
    ($name:literal) => {
        ($name, include_bytes!(concat!(env!("MMEMU_USER_DIR"), "/", $name)) as &[u8])
    };
}

/// The embedded user programs, by name.
pub static PROGRAMS: [(&str, &[u8]); 19] = [
    user_program!("touch"),
    user_program!("cow"),
    user_program!("segv"),
    user_program!("sameva"),
    user_program!("mallocs"),
    user_program!("spin"),
    user_program!("stack"),
    // The process bench (vmm/benches/process.rs, the `procbench` switch).
    user_program!("mallocbench"),
    user_program!("forkbench"),
    // The ring-3 half of the access-rights test (selftest/access.rs).
    user_program!("access3"),
    // Memory pressure: the OOM scenario (cmdline `oom`).
    user_program!("memhog"),
    // Swap under pressure (cmdline `swaptest=`).
    user_program!("swaptest"),
    // Reclaim quality: mm-core's trace replayed (vmm/benches/swap.rs).
    user_program!("tracereplay"),
    // Fragmentation and compaction (cmdline `compacttest=`).
    user_program!("fragtest"),
    // hugetlb accounting (cmdline `hugetlbtest`).
    user_program!("hugetest"),
    // 1 GiB hugetlb pages (cmdline `gigatest`).
    user_program!("gigatest"),
    // Path-length windows for --count-insns (cmdline `pathbench`).
    user_program!("pathbench"),
    // Transparent huge pages (cmdline `thptest=`).
    user_program!("thptest"),
    // The console shell (cmdline `shell`, `vmm run --shell`).
    user_program!("sh"),
];

/// The kernel root's PGD entries 256..511 at init, to notice a
/// kernel-half entry created later (process PGDs copied before it would
/// miss it).
static KERNEL_HALF_AT_INIT: crate::sync::SpinLock<[u64; 256]> =
    crate::sync::SpinLock::new("the boot kernel half", crate::sync::rank::MISC);

/// Sets up processes: the shared zero page, the task table.
pub fn init() {
    // The clocks count from here (sysinfo's uptime: from boot).
    linux::now_ns();
    MM_GLOBALS.set(MmGlobals { zero_pa: 0, user_frames_allocated: 0 });
    let zero = PAGES.with(|p| {
        let zero = mm::alloc_user_frame(p)?;
        // Linux's zero page is PG_reserved and never refcounted on map: the
        // owner says so to the host, whose refcount check exempts it.
        let _ = p.buddy.set_owner(zero >> mm_core::addr::PAGE_SHIFT, mm_core::buddy::PageOwner::Reserved);
        Some(zero)
    });
    let zero = zero.unwrap_or_else(|| panic!("no memory for the zero page"));
    crate::mm::phys::clear_page(zero);
    MM_GLOBALS.with(|g| *g = MmGlobals { zero_pa: zero, user_frames_allocated: 0 });
    sched::init();
    // What this layer publishes through mm/ (which sits below it and so
    // cannot call it): the descriptor's process table, and the sabotage
    // switches that need live address spaces.
    crate::mm::descriptor::register_proc_table(sched::fill_descs);
    crate::mm::descriptor::register_vma_filler(publish_all_vmas);
    if !crate::mm::sabotage::register(crate::mm::sabotage::Switches { names: sabotage::NAMES, run: sabotage::run }) {
        panic!("no room to register the process sabotage switches");
    }
    report::init();
    crate::mm::vmscan::init();
    crate::mm::oom_kill::register(crate::mm::oom_kill::OomOps {
        candidates: sched::oom_candidates,
        kill: sched::oom_kill,
        current: || {
            let (name, pid, _) = sched::current_info();
            (pid, name, sched::current_killed())
        },
    });
    KERNEL_HALF_AT_INIT.set(kernel_half());
}

/// The kernel root's PGD entries 256..511 now.
fn kernel_half() -> [u64; 256] {
    let root = KERNEL_PT.with(|m| m.root());
    let phys = crate::mm::phys::direct_map();
    let mut half = [0u64; 256];
    for (i, e) in half.iter_mut().enumerate() {
        let slot = mm_core::paging::Slot::new(root, mm::KERNEL_PGD_FIRST + i, mm_core::paging::Level::P4d);
        *e = slot.read(&phys).map_or(0, |e| e.0);
    }
    half
}

/// Kernel-half PGD indices that were empty at init and are present now.
pub fn kernel_half_added() -> alloc::vec::Vec<usize> {
    let now = kernel_half();
    KERNEL_HALF_AT_INIT.with(|then| {
        (0..256).filter(|&i| then[i] & 1 == 0 && now[i] & 1 != 0).map(|i| i + mm::KERNEL_PGD_FIRST).collect()
    })
}

/// Starts the preemption tick; false without a local APIC (the
/// scheduler is then cooperative: processes switch on yield, wait, exit).
pub fn start_timer() -> bool {
    let on = apic::start_timer(TIMER_PERIOD);
    // The other CPUs follow when they next pass through their idle loop.
    sched::TIMER_WANTED.store(on, core::sync::atomic::Ordering::Relaxed);
    on
}

/// Starts this CPU's tick (another CPU following the boot CPU's choice).
pub fn start_timer_here() -> bool {
    apic::start_timer(TIMER_PERIOD)
}

/// Stops it (on every CPU: the others when they next idle).
pub fn stop_timer() {
    sched::TIMER_WANTED.store(false, core::sync::atomic::Ordering::Relaxed);
    apic::stop_timer();
}

/// Starts embedded program `name` as a child of the kernel, as Linux
/// starts a program: argv `[name, arg]` (`arg` in decimal) and the
/// kernel's environment on Linux's initial stack, fds 0-2 on the
/// terminal. Its pid.
pub fn spawn(name: &str, arg: u64) -> Result<u64, &'static str> {
    // Dec: core's integer Display uses SSE, which ring 0 cannot run here.
    let arg = alloc::format!("{}", Dec(arg));
    spawn_argv(name, &[name, &arg])
}

/// Starts embedded program `name` with `argv` (see [`spawn`]). Its pid.
pub fn spawn_argv(name: &str, argv: &[&str]) -> Result<u64, &'static str> {
    let (pname, image) = PROGRAMS.iter().find(|(n, _)| *n == name).copied().ok_or("no such program")?;
    let mut mm = MmStruct::new().ok_or("out of memory")?;
    let started = mm.load_elf(image).and_then(|entry| Ok((entry, exec::builtin_stack(&mut mm, image, entry, argv)?)));
    let (entry, sp) = match started {
        Ok(e) => e,
        Err(e) => {
            mm.exit_mmap();
            return Err(e);
        }
    };
    let frame = sched::initial_frame(entry, sp, 0);
    let cmdline = exec::cmdline_bytes(argv);
    sched::create_task_with(pname, 0, mm, &frame, FpuState::initial(), |t| {
        t.files = Some(exec::terminal_files());
        t.cmdline = cmdline;
    })
    .ok_or("out of memory")
}

/// Runs program `name` to completion; its wait status.
pub fn run(name: &str, arg: u64) -> Option<u64> {
    let pid = spawn(name, arg).ok()?;
    sched::kernel_wait(pid)
}

/// Runs the built-in ring-3 shell (`sh`, cmdline `shell`) on the console
/// and waits for it, as [`exec::run_init`] runs /init: the exit status
/// for the VMM (its `exit N`, or 128 + the signal that killed it).
pub fn run_shell() -> u32 {
    let pid = match spawn_argv("sh", &["sh"]) {
        Ok(pid) => pid,
        Err(e) => {
            kprintln!("cannot start the shell: {}", e);
            return 127;
        }
    };
    match sched::kernel_wait(pid) {
        Some(st) if st & 0x7f == 0 => ((st >> 8) & 0xff) as u32,
        Some(st) => {
            kprintln!("sh: killed by signal {}", Dec(st & 0x7f));
            128 + (st & 0x7f) as u32
        }
        None => 127,
    }
}

/// `memhog`'s argument: `pages` to touch (0: until killed), and the
/// oom_score_adj it sets for itself (None: inherit).
fn memhog_arg(pages: u64, adj: Option<i64>) -> u64 {
    pages | adj.map_or(0, |a| (((a + 1000) as u64) << 32) | (1 << 44))
}

/// The OOM scenario (cmdline `oom`, `oom=adj`): three `memhog`s in a
/// guest too small for all of them, with kswapd running.
///
/// - `oom`: two bounded hogs (256 and 384 pages) and an unbounded one:
///   the unbounded one, the biggest, must be killed and the others finish.
/// - `oom=adj`: a 384-page hog with oom_score_adj 1000, a 192-page one,
///   and a big bounded one sized so that all three do not fit but the big
///   one and the small one do: the adjusted hog must be killed although
///   it is not the biggest, and the other two finish. (The big one is
///   the biggest while some 780 pages are free: an 8 MiB guest has ~930.)
///
/// Prints each hog's fate and the vmstat counters; true if the expected
/// victim, and only it, was killed (SIGKILL) and the others exited 0.
pub fn oom_scenario(variant: Option<&str>) -> bool {
    let adj = match variant {
        None => false,
        Some("adj") => true,
        Some(other) => {
            kprintln!("oom: unknown variant '{}' (none or adj)", other);
            return false;
        }
    };
    match sched::start_kswapd() {
        Some(pid) => kprintln!("oom: kswapd0 running as pid {}", Dec(pid)),
        None => {
            kprintln!("oom: no memory for kswapd");
            return false;
        }
    }
    let free = PAGES.with(|p| {
        let c = crate::mm::percpu::counts(p);
        c.free + c.pcp
    });
    kprintln!("oom: {} pages free", Dec(free));
    // (pages, oom_score_adj, expected to be killed)
    let hogs: [(u64, Option<i64>, bool); 3] = if adj {
        [(384, Some(1000), true), (192, None, false), (free.saturating_sub(192 + 200), None, false)]
    } else {
        // The bounded two leave the unbounded third well over half of
        // what is free, so it is the biggest when memory runs out (with
        // 32 KiB kernel stacks an 8 MiB guest has some 1100 pages free).
        [(192, None, false), (256, None, false), (0, None, true)]
    };
    let mut pids = [0u64; 3];
    for (pid, &(pages, a, _)) in pids.iter_mut().zip(hogs.iter()) {
        match spawn("memhog", memhog_arg(pages, a)) {
            Ok(p) => *pid = p,
            Err(e) => {
                kprintln!("oom: cannot start memhog: {}", e);
                return false;
            }
        }
        let sign = if a.unwrap_or(0) < 0 { "-" } else { "" };
        kprintln!(
            "oom: started pid {} (memhog) pages {} oom_score_adj {}{}",
            Dec(*pid),
            Dec(pages),
            sign,
            Dec(a.unwrap_or(0).unsigned_abs())
        );
    }
    let mut ok = true;
    for (&pid, &(_, _, victim)) in pids.iter().zip(hogs.iter()) {
        match sched::kernel_wait(pid) {
            Some(st) if st == abi::SIGKILL => {
                kprintln!("oom: pid {} (memhog) killed by signal 9", Dec(pid));
                ok &= victim;
            }
            Some(st) => {
                kprintln!("oom: pid {} (memhog) exited with status {}", Dec(pid), Dec(st >> 8));
                ok &= !victim && st == 0;
            }
            None => {
                kprintln!("oom: pid {} (memhog) could not be waited for", Dec(pid));
                ok = false;
            }
        }
    }
    crate::mm::vmstat::print();
    kprintln!("oom: scenario {}", if ok { "passed" } else { "FAILED" });
    ok
}

/// Device interrupts and system calls (vectors >= 32).
pub fn interrupt(frame: &mut TrapFrame) {
    interrupt_inner(frame);
    // A task the OOM killer killed dies before it runs user code again;
    // pending signals are delivered on the way out.
    if frame.cs & 3 == 3 {
        sched::exit_if_killed();
        signal::do_signal(frame);
    }
}

fn interrupt_inner(frame: &mut TrapFrame) {
    match frame.vector {
        v if v == sysentry::SYSCALL_VECTOR => syscall::dispatch(frame),
        v if v == TIMER_VECTOR as u64 => {
            apic::eoi();
            // `try_with`, not `with`: a tick may land in ring 0 while a
            // driver waits with interrupts open holding an outer-ranked
            // lock (virtio-blk's `sti; hlt` under its state lock), where
            // the order check would object. The scheduler's lock is
            // irq-safe, so no interrupted context on this CPU holds it and
            // the try cannot fail for that reason.
            let now = linux::now_ns();
            sched::SCHED.try_with(|s| {
                s.ticks += 1;
                sched::wake_timed(s, now);
            });
            // Only ring 3 is preempted: kernel code never runs with
            // interrupts on, so a tick can only land in user mode.
            if frame.cs & 3 == 3 {
                sched::yield_now(true);
            }
        }
        v if v == SPURIOUS_VECTOR as u64 => {}
        v if v == crate::arch::idt::RESCHED_VECTOR as u64 => {
            apic::eoi();
            // Woken from idle, or told to look at its task (killed, a
            // signal): from ring 3 the checks on the way out do that. Or
            // a checkpoint on another CPU stops this one here. Or its
            // task's CPU mask no longer has this CPU: it moves.
            crate::arch::smp::park_if_stopped();
            if frame.cs & 3 == 3 {
                sched::migrate_if_disallowed();
            }
        }
        v if v == crate::arch::idt::FLUSH_VECTOR as u64 => {
            apic::eoi();
            crate::arch::tlb::flush_ipi();
        }
        v if v == crate::arch::idt::VIRTIO_VECTOR as u64 => crate::drivers::virtio::blk::interrupt(),
        v => kprintln!("unexpected interrupt vector {:#x}", v),
    }
}

/// The #GP vector.
const GENERAL_PROTECTION: u64 = abi::VECTOR_GP;

/// A fault-tolerant user probe (`SYS_PROBE_FIXUP`): if the process
/// registered a fix-up, the fault it could not survive is reported to it
/// instead (rax = vector, rdx = error code, rcx = CR2) and it resumes at
/// the fix-up; every other register stays as at the fault, so the fix-up
/// can restore its own stack. True if it was taken.
fn probe_fixup(frame: &mut TrapFrame, cr2: u64) -> bool {
    let fixup = sched::probe_fixup();
    // A fault at the fix-up itself (a bad registration) would resume
    // where it faulted forever: that one kills as usual.
    if fixup == 0 || frame.rip == fixup {
        return false;
    }
    frame.rax = frame.vector;
    frame.rdx = frame.error_code;
    frame.rcx = cr2;
    frame.rip = fixup;
    true
}

/// Everything ring 3 raised: system calls arriving as the #PF at LSTAR,
/// page faults, and fatal exceptions (the process dies, nothing else).
pub fn user_exception(frame: &mut TrapFrame, cr2: u64) {
    user_exception_inner(frame, cr2);
    // A task the OOM killer killed dies before it runs user code again;
    // pending signals (a fault's among them) are delivered on the way out.
    sched::exit_if_killed();
    signal::do_signal(frame);
}

fn user_exception_inner(frame: &mut TrapFrame, cr2: u64) {
    if frame.vector == PAGE_FAULT && cr2 == sysentry::entry_address() && frame.error_code == SYSCALL_FAULT_ERR {
        // `syscall` left RCX = return address and R11 = RFLAGS, as on
        // hardware; resume there (before dispatch, so fork copies it).
        frame.rip = frame.rcx;
        frame.rflags = (frame.r11 & 0xcd5) | RFLAGS_IF | RFLAGS_FIXED;
        syscall::dispatch(frame);
        return;
    }
    if frame.vector == PAGE_FAULT {
        crate::mm::vmstat::count(crate::mm::vmstat::Event::PgFault, 1);
        crate::mm::memcg::count_fault();
        let r = sched::current_mm().map(|m| m.with(|mm| fault::handle_mm_fault(mm, cr2, frame.error_code)));
        match r {
            Some(Ok(())) => return,
            Some(Err(FaultError::Io)) => {
                // Linux's VM_FAULT_SIGBUS: the page could not be read back.
                if signal::force_sig_fault(frame, signal::SIGBUS, signal::BUS_ADRERR, cr2, cr2) {
                    return;
                }
                let (name, pid, _) = sched::current_info();
                kprintln!("{}[{}]: bus error reading swap at {:#x}", name, Dec(pid), cr2);
                sched::do_exit(abi::SIGBUS)
            }
            Some(Err(FaultError::SigBus)) => {
                // hugetlb: no pool page for this fault (mm/hugetlb.rs).
                let (name, pid, _) = sched::current_info();
                kprintln!("{}[{}]: SIGBUS: no huge page for the fault at {:#x}", name, Dec(pid), cr2);
                sched::do_exit(abi::SIGBUS)
            }
            Some(Err(FaultError::Oom)) => {
                // The fault's allocation reclaims but never kills (it holds
                // the mm lock): as Linux's VM_FAULT_OOM, the killer runs
                // here with no lock held and the fault is retried (the
                // victim's memory is free by then, or the victim is this
                // process, which dies on the way out). Direct reclaim once
                // more first, then the killer. A memory cgroup at its
                // limit kills inside the group instead (memcg.rs).
                match crate::mm::memcg::oom_synchronize() {
                    Some(true) => return,
                    Some(false) => {
                        let (name, pid, _) = sched::current_info();
                        kprintln!(
                            "Memory cgroup out of memory: no victim in the group; killing the faulting process {} ({})",
                            Dec(pid),
                            name
                        );
                        sched::do_exit(abi::SIGKILL)
                    }
                    None => {}
                }
                let nodes = mempolicy::fault_nodemask(cr2);
                if crate::mm::vmscan::try_to_free_pages() > 0 || crate::mm::oom_kill::pagefault_out_of_memory(nodes) {
                    return;
                }
                let (name, pid, _) = sched::current_info();
                kprintln!(
                    "Out of memory: no victim freed memory; killing the faulting process {} ({})",
                    Dec(pid),
                    name
                );
                sched::do_exit(abi::SIGKILL)
            }
            Some(Err(e)) => {
                // A handler for SIGSEGV runs instead of the kill (user-level
                // paging: it maps the page and returns to retry).
                let code = if e == FaultError::AccErr { signal::SEGV_ACCERR } else { signal::SEGV_MAPERR };
                if signal::force_sig_fault(frame, signal::SIGSEGV, code, cr2, cr2) {
                    return;
                }
            }
            None => {}
        }
        if probe_fixup(frame, cr2) {
            return;
        }
        let (name, pid, _) = sched::current_info();
        kprintln!(
            "{}[{}]: segfault at {:x} ip {:016x} sp {:016x} error {:x}",
            name,
            Dec(pid),
            cr2,
            frame.rip,
            frame.rsp,
            frame.error_code
        );
        sched::do_exit(abi::SIGSEGV)
    }
    let (sig, code) = signal::exception_signal(frame.vector);
    // si_addr: the faulting instruction, except for #GP and #SS (Linux
    // reports 0 there).
    let addr = if code == signal::SI_KERNEL && sig == signal::SIGSEGV { 0 } else { frame.rip };
    if signal::force_sig_fault(frame, sig, code, addr, 0) {
        return;
    }
    if frame.vector == GENERAL_PROTECTION && probe_fixup(frame, 0) {
        return;
    }
    let (name, pid, _) = sched::current_info();
    kprintln!(
        "traps: {}[{}] {} ip:{:x} sp:{:x} error:{:x}",
        name,
        Dec(pid),
        exception_name(frame.vector),
        frame.rip,
        frame.rsp,
        frame.error_code
    );
    sched::do_exit(sig)
}

/// Republishes every live address space's VMAs for the host (at a
/// checkpoint's refresh). An address space whose lock is held right now
/// keeps the entries it last published.
fn publish_all_vmas() {
    for (_, mm) in sched::other_mms(u64::MAX) {
        let _ = mm.try_with(|m| m.publish_vmas(true));
    }
}
