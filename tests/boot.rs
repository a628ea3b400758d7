//! Boot scenarios: the real VMM boots the real guest on KVM, both ways,
//! and every way a run can end is seen to end that way.

mod common;
use common::*;

fn assert_banner_and_memory_map(r: &Run, ram_top: &str) {
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("mmemu kernel"), "{}", r.all());
    assert!(r.stdout.contains("BIOS-provided physical RAM map:"), "{}", r.all());
    assert!(r.stdout.contains("BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable"), "{}", r.all());
    assert!(r.stdout.contains(&format!("BIOS-e820: [mem 0x0000000000100000-{ram_top}] usable")), "{}", r.all());
    assert!(r.stdout.contains("mmemu: all done, powering off"), "{}", r.all());
}

#[test]
fn direct_boot_prints_banner_and_memory_map_and_exits_0() {
    let r = boot(&["--boot", "direct", "--mem", "256M"]);
    assert_banner_and_memory_map(&r, "0x000000000fffffff");
    assert!(r.stdout.contains("booting via direct boot"), "{}", r.all());
    assert!(!r.stdout.contains("firmware:"), "{}", r.all());
}

#[test]
fn firmware_boot_walks_real_mode_to_long_mode() {
    let r = boot(&["--boot", "firmware", "--mem", "128M"]);
    assert_banner_and_memory_map(&r, "0x0000000007ffffff");
    let fw1 = r
        .stdout
        .find("firmware: reset vector -> real mode -> flat protected mode")
        .unwrap_or_else(|| panic!("{}", r.all()));
    let fw2 = r.stdout.find("firmware: page tables built").unwrap_or_else(|| panic!("{}", r.all()));
    let kernel = r.stdout.find("booting via firmware").unwrap_or_else(|| panic!("{}", r.all()));
    assert!(fw1 < fw2 && fw2 < kernel, "{}", r.all());
    assert!(r.stdout.contains("BIOS-e820: [mem 0x00000000ffff0000-0x00000000ffffffff] reserved"), "{}", r.all());
}

#[test]
fn default_run_needs_no_options() {
    let r = vmm(&["run"]);
    assert_banner_and_memory_map(&r, "0x000000000fffffff");
}

#[test]
fn command_line_reaches_the_guest() {
    let r = boot(&["--cmdline", "hello=world  extra"]);
    assert!(r.stdout.contains("Command line: hello=world  extra"), "{}", r.all());
    assert!(r.stdout.contains("ignoring unknown switch 'hello=world'"), "{}", r.all());
}

#[test]
fn big_guests_get_ram_above_4g() {
    let r = boot(&["--mem", "16G"]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable"), "{}", r.all());
    assert!(r.stdout.contains("BIOS-e820: [mem 0x0000000100000000-0x000000043fffffff] usable"), "{}", r.all());
}

#[test]
fn guest_exit_status_propagates() {
    for boot_mode in ["direct", "firmware"] {
        let r = boot(&["--boot", boot_mode, "--cmdline", "exit=42"]);
        assert_eq!(r.status, 42, "{}", r.all());
        assert!(r.stderr.contains("the guest exited with status 42"), "{}", r.all());
    }
}

#[test]
fn guest_panic_reports_location_and_fails() {
    let r = boot(&["--cmdline", "panic"]);
    assert_eq!(r.status, 101, "{}", r.all());
    assert!(r.stdout.contains("Kernel panic at src/cmdline.rs:"), "{}", r.all());
    assert!(r.stdout.contains("requested on the command line"), "{}", r.all());
}

#[test]
fn a_lock_taken_twice_panics_naming_it() {
    // With one CPU a spinlock re-taken by its holder would spin for ever:
    // the lock notices and panics instead.
    let r = boot(&["--cmdline", "deadlock"]);
    assert_eq!(r.status, 101, "{}", r.all());
    assert!(r.stdout.contains("Kernel panic at src/cmdline.rs:"), "{}", r.all());
    assert!(r.stdout.contains("deadlock: this CPU takes the page allocator while already holding it"), "{}", r.all());
}

#[test]
fn triple_fault_yields_registers_decoded_code_and_symbol() {
    let r = boot(&["--cmdline", "triplefault"]);
    assert_eq!(r.status, 125, "{}", r.all());
    let e = &r.stderr;
    assert!(e.contains("the guest triple-faulted (KVM_EXIT_SHUTDOWN)"), "{}", r.all());
    assert!(e.contains("<kernel::arch::triple_fault+0x"), "symbol at RIP: {}", r.all());
    // The faulting load of the unmapped address, decoded.
    assert!(e.contains("=> ") && e.contains("mov rax,["), "{}", r.all());
    for reg in [
        "RAX:",
        "R15:",
        "CR0:",
        "CR2: 0000400000000000",
        "CR3:",
        "CR4:",
        "EFER:",
        "CS: sel 0008",
        "IDT: base 0000000000000000 limit 0000",
    ] {
        assert!(e.contains(reg), "missing {reg}: {}", r.all());
    }
}

#[test]
fn sse_in_ring_0_is_reported_or_runs_natively() {
    let r = boot(&["--cmdline", "sse"]);
    if r.status == 0 {
        // Hardware KVM: ring 0 runs natively and SSE just works.
        assert!(r.stdout.contains("xorps executed natively"), "{}", r.all());
    } else {
        // Emulated ring 0 (our CI hosts): the emulation failure report.
        assert_eq!(r.status, 125, "{}", r.all());
        assert!(r.stderr.contains("instruction emulation failed (KVM_INTERNAL_ERROR_EMULATION)"), "{}", r.all());
        assert!(r.stderr.contains("the instruction KVM could not emulate: xorps xmm0,xmm0"), "{}", r.all());
        assert!(r.stderr.contains("<kernel::arch::sse_probe"), "{}", r.all());
    }
}

#[test]
fn timeout_stops_a_spinning_guest_and_says_where() {
    let start = std::time::Instant::now();
    let r = vmm(&["run", "--cmdline", "hang", "--timeout", "1"]);
    assert_eq!(r.status, 124, "{}", r.all());
    assert!(r.stderr.contains("still running after 1.0 s (--timeout)"), "{}", r.all());
    assert!(r.stderr.contains("RIP: 0008:ffffffff8"), "{}", r.all());
    assert!(start.elapsed().as_secs() < 30, "the VMM took {:?} to stop", start.elapsed());
}

#[test]
fn a_guest_halted_with_interrupts_off_is_reported_not_waited_for() {
    // No --timeout: the VMM itself must notice the vCPU can never wake.
    let start = std::time::Instant::now();
    let r = vmm(&["run", "--cmdline", "halt"]);
    assert_eq!(r.status, 125, "{}", r.all());
    assert!(r.stderr.contains("hlt with interrupts disabled"), "{}", r.all());
    assert!(r.stderr.contains("<kernel::arch::halt_forever"), "{}", r.all());
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
}

#[test]
fn host_stdin_reaches_the_guest_uart() {
    let r = vmm_with_input(&["run", "--timeout", "60", "--cmdline", "echo"], Some("hello from the host\n"));
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("echo: hello from the host"), "{}", r.all());
}
