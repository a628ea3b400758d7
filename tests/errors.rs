//! Bad input: every mistake a user can make gets a clear message and a
//! non-zero status, never a panic or a hang.

mod common;
use common::*;

fn assert_error(r: &Run, status: i32, needles: &[&str]) {
    assert_eq!(r.status, status, "{}", r.all());
    for n in needles {
        assert!(r.stderr.contains(n), "missing '{n}': {}", r.all());
    }
    assert!(!r.stderr.contains("panicked"), "{}", r.all());
}

#[test]
fn missing_kvm_device() {
    let r = boot(&["--kvm-device", "/nonexistent/kvm"]);
    assert_error(&r, 1, &["/nonexistent/kvm does not exist", "KVM is not available"]);
}

#[test]
fn a_device_that_is_not_kvm() {
    let r = boot(&["--kvm-device", "/dev/null"]);
    assert_error(&r, 1, &["/dev/null is not a KVM device"]);
}

#[test]
fn inaccessible_kvm_device() {
    // Root can open anything: drop to nobody to see the permission error.
    let is_root = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    let kvm_mode = std::fs::metadata("/dev/kvm").map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
    if !is_root || kvm_mode.map_or(true, |m| m & 0o006 != 0) {
        eprintln!("skipped: needs root and a /dev/kvm closed to others");
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", vmm_path(), "run", "--timeout", "10"])
        .output();
    let Ok(out) = out else {
        eprintln!("skipped: setpriv not available");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Permission denied") && !stderr.contains("vmm:") {
        eprintln!("skipped: nobody cannot execute the test binary here: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("permission denied opening /dev/kvm"), "{stderr}");
    assert!(stderr.contains("'kvm' group"), "{stderr}");
}

#[test]
fn kernel_file_missing() {
    let r = boot(&["--kernel", "/nonexistent/vmlinux"]);
    assert_error(&r, 1, &["cannot read kernel file /nonexistent/vmlinux", "No such file"]);
}

#[test]
fn kernel_not_elf() {
    let f = TempFile::new("notelf", b"#!/bin/sh\necho not a kernel\n");
    let r = boot(&["--kernel", f.path()]);
    assert_error(&r, 1, &["not an ELF file", "accepted: an ELF64 x86-64 executable"]);
    let empty = TempFile::new("empty", b"");
    assert_error(&boot(&["--kernel", empty.path()]), 1, &["the file is empty"]);
}

fn patched(name: &str, f: impl FnOnce(&mut Vec<u8>)) -> TempFile {
    let mut elf = guest_elf();
    f(&mut elf);
    TempFile::new(name, &elf)
}

#[test]
fn kernel_for_another_architecture() {
    let f = patched("aarch64", |e| e[18..20].copy_from_slice(&183u16.to_le_bytes()));
    assert_error(&boot(&["--kernel", f.path()]), 1, &["an ELF for AArch64", "not x86-64", "accepted:"]);
    let f = patched("elf32", |e| e[4] = 1);
    assert_error(&boot(&["--kernel", f.path()]), 1, &["a 32-bit ELF"]);
    let f = patched("rel", |e| e[16..18].copy_from_slice(&1u16.to_le_bytes()));
    assert_error(&boot(&["--kernel", f.path()]), 1, &["a relocatable object"]);
}

#[test]
fn kernel_in_a_format_the_loader_does_not_take() {
    let mut bz = vec![0u8; 0x400];
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    let f = TempFile::new("bzimage", &bz);
    assert_error(&boot(&["--kernel", f.path()]), 1, &["this is a bzImage", "accepted:"]);
}

#[test]
fn kernel_file_that_is_the_real_guest_boots() {
    let f = TempFile::new("guest", &guest_elf());
    let r = boot(&["--kernel", f.path(), "--cmdline", "exit=5"]);
    assert_eq!(r.status, 5, "{}", r.all());
    assert!(r.stdout.contains("mmemu kernel"), "{}", r.all());
}

/// Moves every loadable segment's physical address up by `delta`.
fn shift_segments(elf: &mut [u8], delta: u64) {
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes(elf[54..56].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(elf[56..58].try_into().unwrap()) as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == 1 {
            let paddr = u64::from_le_bytes(elf[ph + 24..ph + 32].try_into().unwrap());
            elf[ph + 24..ph + 32].copy_from_slice(&(paddr + delta).to_le_bytes());
        }
    }
}

#[test]
fn memory_too_small_for_the_kernel() {
    let f = patched("high", |e| shift_segments(e, 512 << 20));
    let r = boot(&["--kernel", f.path(), "--mem", "256M"]);
    assert_error(&r, 1, &["needs RAM up to", "but the guest has 256 MiB; raise --mem"]);
    let r = boot(&["--mem", "2M"]);
    assert_error(&r, 1, &["2 MiB of RAM is too small", "at least 4 MiB"]);
}

#[test]
fn memory_size_that_does_not_parse() {
    for bad in ["12X", "lots", "1.5G", "0"] {
        let r = boot(&["--mem", bad]);
        assert_error(&r, 2, &["is not a memory size", "256M or 4G"]);
    }
}

#[test]
fn memory_beyond_what_the_host_allows() {
    let r = boot(&["--mem", "4P"]);
    assert_error(&r, 1, &["beyond what this host's CPU can address", "ask for less with --mem"]);
}

#[test]
fn bad_timeout_and_boot_mode_are_usage_errors() {
    assert_error(&vmm(&["run", "--timeout=-3"]), 2, &["positive number of seconds"]);
    assert_error(&vmm(&["run", "--boot", "bios"]), 2, &["invalid value 'bios'"]);
}

#[test]
fn command_line_too_long() {
    let long = "x".repeat(5000);
    let r = boot(&["--cmdline", &long]);
    assert_error(&r, 1, &["command line is 5000 bytes"]);
}

#[test]
fn help_documents_every_option() {
    let r = vmm(&["run", "--help"]);
    assert_eq!(r.status, 0);
    for opt in ["--kernel", "--mem", "--boot", "--cmdline", "--timeout", "--kvm-device", "direct", "firmware"] {
        assert!(r.stdout.contains(opt), "help lacks {opt}: {}", r.stdout);
    }
    let r = vmm(&["--help"]);
    assert!(r.stdout.contains("Exit status"), "{}", r.stdout);
}

#[path = "hostile/mod.rs"]
mod hostile;
use hostile::{elf, Program, Segment, BASE};

fn exit_code() -> Vec<u8> {
    Program { exit: 9, ..Default::default() }.code()
}

fn one_segment(entry: u64, paddr: u64, data: Vec<u8>, memsz: u64, flags: u32) -> Vec<u8> {
    elf(entry, &[Segment { paddr, vaddr: paddr, data, memsz, flags }])
}

#[test]
fn a_hand_made_kernel_that_is_fine_boots() {
    let code = exit_code();
    let f = TempFile::new("tiny", &one_segment(BASE, BASE, code.clone(), code.len() as u64, 5));
    let r = boot(&["--kernel", f.path()]);
    assert_eq!(r.status, 9, "{}", r.all());
}

#[test]
fn bad_segments_and_entry_points_are_refused() {
    let code = exit_code();
    let n = code.len() as u64;
    // More bytes in the file than in memory: would load past the segment
    // (issue 12: past the 1 GiB window with --mem 2G).
    let f = TempFile::new("filesz", &one_segment(BASE, 0x3fff_f000, vec![0x90; 0x10_0000], 0x1000, 5));
    assert_error(
        &boot(&["--kernel", f.path(), "--mem", "2G"]),
        1,
        &["more bytes in the file (0x100000) than in memory (0x1000)"],
    );
    let f = TempFile::new("outside", &one_segment(BASE, 0x4000_0000, code.clone(), n, 5));
    assert_error(&boot(&["--kernel", f.path(), "--mem", "2G"]), 1, &["outside 1 MiB..1 GiB"]);
    let f = TempFile::new("entry", &one_segment(BASE + 0x10_0000, BASE, code.clone(), n, 5));
    assert_error(
        &boot(&["--kernel", f.path()]),
        1,
        &["the entry point 0x300000 is not inside any loaded executable segment"],
    );
    let f = TempFile::new("noexec", &one_segment(BASE, BASE, code.clone(), n, 6));
    assert_error(&boot(&["--kernel", f.path()]), 1, &["not inside any loaded executable segment"]);
    let mut cut = one_segment(BASE, BASE, code, n, 5);
    cut.truncate(0x1000 + 4);
    let f = TempFile::new("truncated", &cut);
    assert_error(&boot(&["--kernel", f.path()]), 1, &["the file is truncated"]);
}

#[test]
fn kernel_files_that_are_not_files_fail_fast() {
    let t = std::time::Instant::now();
    assert_error(&boot(&["--kernel", "/dev/zero"]), 1, &["kernel file /dev/zero: not a regular file"]);
    assert!(t.elapsed() < std::time::Duration::from_secs(30), "no unbounded read");
    assert_error(&boot(&["--kernel", "/tmp"]), 1, &["kernel file /tmp: a directory"]);
}

#[test]
fn guest_switches_are_checked_and_listed() {
    let r = boot(&["--cmdline", "help exit=0"]);
    assert_eq!(r.status, 0, "{}", r.all());
    for cp in ["ready", "sabotage", "access-test-done", "cow-shared", "mmbench-pages-end"] {
        assert!(r.stdout.contains(cp), "help lists checkpoint {cp}: {}", r.all());
    }
    let r = boot(&["--cmdline", "bogus_switch selftest_sabotage=nope exit=0"]);
    assert!(r.stdout.contains("warning: ignoring unknown switch 'bogus_switch'"), "{}", r.all());
    assert!(r.stdout.contains("warning: selftest_sabotage does nothing without selftest"), "{}", r.all());
    let r = boot(&["--cmdline", "selftest=heap selftest_sabotage=nope"]);
    assert_eq!(r.status, 1, "{}", r.all());
    assert!(r.stdout.contains("unknown selftest_sabotage 'nope'"), "{}", r.all());
    let r = boot(&["--cmdline", "break=bogus"]);
    assert_eq!(r.status, 1, "{}", r.all());
    assert!(r.stdout.contains("sabotage: unknown invariant 'bogus' (freed-mapped, text-writable"), "{}", r.all());
    let r = boot(&["--cmdline", "exit=300"]);
    assert_eq!(r.status, 2, "exit=N takes 0..255: {}", r.all());
    assert!(r.stdout.contains("exit=300: the status must be 0..255"), "{}", r.all());
}

#[test]
fn version_names_the_commit() {
    let r = vmm(&["--version"]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("(commit ") || r.stdout.contains("(not built from a git checkout)"), "{}", r.stdout);
}
