//! The same kernel ELF on an independent machine: QEMU boots it through
//! its PVH note (`-kernel`), under TCG, QEMU's own software CPU and MMU.
//! This checks the guest does not depend on our VMM's quirks (QEMU 7.2's
//! TCG has no x2APIC, so the guest's timer runs on the xAPIC page there),
//! that the PVH 32-bit entry really works, and that the self-tests pass
//! on a machine with a real TLB model. .ci/run installs qemu-system-x86.

mod common;

use std::process::Command;

const QEMU: &str = "qemu-system-x86_64";

fn have_qemu() -> bool {
    if Command::new(QEMU).arg("--version").output().is_err() {
        eprintln!("skipped: {QEMU} is not installed (apt-get install qemu-system-x86)");
        return false;
    }
    true
}

/// Boots the guest under TCG with `cpu` and `append`; (status, console).
/// `timeout` bounds the run: a guest waiting for a timer tick that never
/// comes must fail the test, not hang CI.
fn qemu(cpu: &str, append: &str, secs: u32) -> (Option<i32>, String) {
    qemu_mem(cpu, "128M", append, secs)
}

/// [`qemu`] with `mem` of RAM.
fn qemu_mem(cpu: &str, mem: &str, append: &str, secs: u32) -> (Option<i32>, String) {
    let out = Command::new("timeout")
        .args([&secs.to_string(), QEMU, "-M", "microvm", "-accel", "tcg", "-cpu", cpu, "-m", mem])
        .args(["-nographic", "-no-reboot", "-nodefaults"])
        .args(["-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .args(["-kernel", env!("MMEMU_GUEST_ELF"), "-append", append])
        .output()
        .expect("run qemu");
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    (out.status.code(), format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn qemu_boots_the_guest_through_its_pvh_note() {
    if !have_qemu() {
        return;
    }
    let (status, all) = qemu("qemu64", "exit=3", 60);
    // isa-debug-exit turns the value v into the status (v << 1) | 1.
    assert_eq!(status, Some(7), "{all}");
    assert!(all.contains("booting via PVH 32-bit entry"), "{all}");
    assert!(all.contains("Command line: exit=3"), "{all}");
    assert!(all.contains("BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable"), "{all}");
}

/// Every self-test group under TCG, with QEMU's two usual CPU models: the
/// allocators, paging, faults (the TLB model sees a missing invlpg that
/// KVM's shadow paging hides), the access-rights probes and processes with
/// timer preemption on the xAPIC. Each check's verdict is read from the
/// console (QEMU has no results port); a few seconds each.
#[test]
fn the_selftests_pass_under_qemu_tcg() {
    if !have_qemu() {
        return;
    }
    for cpu in ["qemu64", "max"] {
        let (status, all) = qemu(cpu, "selftest", 120);
        let line = |prefix: &str| all.lines().find(|l| l.starts_with(prefix)).map(str::to_string);
        assert!(all.contains("apic: no x2APIC (CPUID), using the xAPIC page at 0xfee00000"), "{cpu}: {all}");
        for group in ["buddy", "slab", "heap", "vmalloc", "debug", "paging", "faults", "access", "process"] {
            assert!(all.contains(&format!("selftest: group {group}")), "{cpu}: group {group} ran: {all}");
        }
        let failed: Vec<&str> = all.lines().filter(|l| l.starts_with("selftest: ") && l.contains(": FAIL")).collect();
        assert!(failed.is_empty(), "{cpu}: {failed:?}");
        let preempt = line("selftest: process/timer_preempts_round_robin: ").unwrap_or_default();
        assert!(preempt.contains(": PASS"), "{cpu}: the timer ticks under TCG: {preempt}\n{all}");
        let summary = all.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or_default();
        assert!(summary.ends_with(" passed, 0 failed"), "{cpu}: {summary:?}");
        let passed: u32 = summary.trim_start_matches("selftest: ").split(' ').next().unwrap().parse().unwrap();
        assert!(passed >= 40, "{cpu}: {passed} checks");
        assert_eq!(status, Some(1), "{cpu}: exit status 0 through isa-debug-exit: {all}");
    }
}

/// 1 GiB hugetlb pages (issue 14) where the CPU reports them: TCG's `max`
/// CPU has pdpe1gb (KVM here does not: tests/hugetlb.rs checks the
/// refusal there), so on a 2 GiB machine `hugepagesz=1G hugepages=1`
/// takes a whole free 1 GiB range for the pool, and gigatest maps it with
/// one PUD leaf: reservation, one fault, a physically contiguous 1 GiB
/// page in pagemap, smaps' 1048576 kB page size, the leaf in the guest's
/// /sys/kernel/debug/page_tables/current_user, ENOMEM past the pool,
/// SIGBUS for the child's copy, the pool shrunk and grown at run time.
/// With `qemu64` (no pdpe1gb) the same command line is refused as Linux
/// refuses it.
#[test]
fn gigantic_hugetlb_pages_where_the_cpu_reports_pdpe1gb() {
    if !have_qemu() {
        return;
    }
    let (status, all) = qemu_mem("max", "2G", "hugepagesz=1G hugepages=1 gigatest exit=0", 300);
    for want in [
        "HugeTLB: registered 1.00 GiB page size, pre-allocated 1 pages",
        "gigatest[1]: mapped 1 GiB: nr_hugepages 1 free_hugepages 1 resv_hugepages 1 surplus_hugepages 0",
        "gigatest[1]: wrote it: nr_hugepages 1 free_hugepages 0 resv_hugepages 0 surplus_hugepages 0",
        "0 of 1025 sampled pages off the contiguous frame, KernelPageSize 1048576 kB, Private_Hugetlb 1048576 kB",
        // The kernel's own walk (debugfs page_tables/current_user).
        "           1G USR RW         PSE     NX pud",
        "gigatest[1]: a second 1 GiB mmap: -12",
        "gigatest[1]: child status 0x7 (SIGBUS is 0x7); parent's words bad: 0",
        "gigatest[1]: unmapped: nr_hugepages 1 free_hugepages 1 resv_hugepages 0 surplus_hugepages 0",
        "gigatest[1]: nr_hugepages 0: nr_hugepages 0 free_hugepages 0",
        "gigatest[1]: nr_hugepages 1 again: nr_hugepages 1 free_hugepages 1",
        "gigatest[1]: meminfo Hugetlb 0 kB -> 1048576 kB; nr_overcommit_hugepages=1: -22",
        "gigatest: exit status 0x0",
    ] {
        assert!(all.contains(want), "missing {want:?}: {all}");
    }
    // The page is 1 GiB-aligned physical memory at a 1 GiB-aligned address.
    let line = all.lines().find(|l| l.contains("1 GiB page at ")).unwrap_or_default();
    let pa = line.split("-> pa ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default();
    let pa = u64::from_str_radix(pa.trim_start_matches("0x"), 16).unwrap_or(1);
    assert!(pa != 0 && pa % (1 << 30) == 0, "{line}");
    assert_eq!(status, Some(1), "exit 0: {all}");

    let (status, all) = qemu("qemu64", "hugepagesz=1G hugepages=1 gigatest exit=0", 120);
    for want in [
        "HugeTLB: hugepagesz=1G refused: the CPU does not report 1 GiB pages (CPUID 0x80000001 EDX bit 26, pdpe1gb, clear). Using 2 MiB pages.",
        "HugeTLB: hugepages=1 does not follow a valid hugepagesz, ignoring",
        "gigatest[1]: no 1 GiB pool (/sys/kernel/mm/hugepages/hugepages-1048576kB/ absent); MAP_HUGE_1GB mmap: -22",
    ] {
        assert!(all.contains(want), "qemu64: missing {want:?}: {all}");
    }
    assert_eq!(status, Some(1), "qemu64: exit 0: {all}");
}

/// A kernel stack overflow on QEMU's own CPU and MMU: the #PF into the
/// guard page below a task's vmalloc'd stack cannot be delivered on that
/// stack, so the CPU raises #DF on its IST stack (the hardware rule, not
/// a quirk of KVM's emulator), and the handler's report names the guard
/// page below the stack.
#[test]
fn a_kernel_stack_overflow_is_a_double_fault_under_tcg() {
    if !have_qemu() {
        return;
    }
    let (status, all) = qemu("max", "stackoverflow", 60);
    // The oops' 102 through isa-debug-exit.
    assert_eq!(status, Some(102 << 1 | 1), "{all}");
    assert!(all.contains("Oops: double fault (vector 0x8)"), "{all}");
    let bug =
        all.lines().find(|l| l.starts_with("BUG: stack guard page was hit at 0x")).unwrap_or_else(|| panic!("{all}"));
    let hex = |marker: &str| {
        let rest = &bug[bug.find(marker).unwrap_or_else(|| panic!("{bug}")) + marker.len()..];
        let end = rest.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(rest.len());
        u64::from_str_radix(&rest[..end], 16).unwrap()
    };
    let (hit, lo) = (hex("hit at 0x"), hex("(stack is 0x"));
    assert!((lo - 4096..lo).contains(&hit), "{bug}");
    assert!(all.contains("Comm: stackoverflow"), "{all}");
}
