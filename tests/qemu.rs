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
    let out = Command::new("timeout")
        .args([&secs.to_string(), QEMU, "-M", "microvm", "-accel", "tcg", "-cpu", cpu, "-m", "128M"])
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
