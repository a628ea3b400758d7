//! The same kernel ELF on an independent machine: QEMU boots it through
//! its PVH note (`-kernel`), under TCG, QEMU's own software CPU and MMU.
//! This checks the guest does not depend on our VMM's quirks, and that the
//! PVH 32-bit entry really works. .ci/run installs qemu-system-x86.

mod common;

use std::process::Command;

#[test]
fn qemu_boots_the_guest_through_its_pvh_note() {
    let qemu = "qemu-system-x86_64";
    if Command::new(qemu).arg("--version").output().is_err() {
        eprintln!("skipped: {qemu} is not installed (apt-get install qemu-system-x86)");
        return;
    }
    let out = Command::new("timeout")
        .args(["60", qemu, "-M", "microvm", "-accel", "tcg", "-m", "128M", "-nographic", "-no-reboot", "-nodefaults"])
        .args(["-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .args(["-kernel", env!("MMEMU_GUEST_ELF"), "-append", "exit=3"])
        .output()
        .expect("run qemu");
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // isa-debug-exit turns the value v into the status (v << 1) | 1.
    assert_eq!(out.status.code(), Some(7), "{all}");
    assert!(stdout.contains("booting via PVH 32-bit entry"), "{all}");
    assert!(stdout.contains("Command line: exit=3"), "{all}");
    assert!(stdout.contains("BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable"), "{all}");
}
