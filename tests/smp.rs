//! Several vCPUs (`vmm run --cpus N`): the guest boots and exits on vCPU 0
//! while the others wait for their start-up IPI; the ACPI tables in guest
//! memory describe N CPUs (read back with mm-core's MADT reader, as the
//! guest reads them); bad counts are refused before boot; a crash names
//! its vCPU.

mod common;
use common::*;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::serial::SerialConsole;
use vmm::inspect::checkpoint::{ParkHook, ParkVerdict};
use vmm::inspect::spec::InspectConfig;
use vmm::vm::{Outcome, Vm, VmConfig};

fn config(cmdline: &str, cpus: u8) -> VmConfig {
    VmConfig {
        kvm_device: vmm::kvm::DEFAULT_KVM_DEVICE.into(),
        kernel: None,
        ram: 256 << 20,
        cpus,
        numa: None,
        boot: vmm::boot::BootMode::Direct,
        cmdline: cmdline.into(),
        timeout: Some(Duration::from_secs(120)),
        gdb: None,
        inspect: InspectConfig::default(),
        swap: None,
        initrd: None,
        user_stdout_to_stderr: false,
        snapshots: vec![],
        count_insns: None,
        web: None,
    }
}

#[test]
fn four_vcpus_boot_and_exit_normally() {
    for boot_path in ["direct", "firmware"] {
        let r = boot(&["--cpus", "4", "--boot", boot_path, "--cmdline", "exit=7"]);
        assert_eq!(r.status, 7, "{boot_path}: {}", r.all());
        assert!(r.stderr.contains("the guest exited with status 7"), "{}", r.all());
    }
}

/// What the hook found: the RSDP's address, the MADT's CPUs, whether the
/// memory map has the ACPI entry.
type Found = Arc<Mutex<Option<Result<(u64, mm_core::acpi::CpuTopology, bool), String>>>>;

/// At a checkpoint: the RSDP the start info points at, the MADT read from
/// guest memory, and the memory map's ACPI entry.
struct AcpiHook {
    mem: vmm::memory::GuestMem,
    found: Found,
}

impl ParkHook for AcpiHook {
    fn checkpoint(&mut self, name: &str, _vcpu: &dyn vmm::vcpu::Vcpu) -> ParkVerdict {
        if name != "boot" {
            return ParkVerdict::Resume;
        }
        let m = &self.mem;
        let info: linux_loader::loader::elf::start_info::hvm_start_info =
            m.read_obj(GuestAddress(vmm::layout::START_INFO)).unwrap();
        let acpi_entry = (0..u64::from(info.memmap_entries)).any(|i| {
            let mut e = [0u8; 24];
            m.read_slice(&mut e, GuestAddress(info.memmap_paddr + i * 24)).unwrap();
            let addr = u64::from_le_bytes(e[0..8].try_into().unwrap());
            let kind = u32::from_le_bytes(e[16..20].try_into().unwrap());
            addr == mm_core::abi::boot::ACPI_TABLES && kind == mm_core::abi::boot::E820_ACPI
        });
        let topo =
            mm_core::acpi::read_madt(info.rsdp_paddr, &mut |pa, buf| m.read_slice(buf, GuestAddress(pa)).is_ok());
        *self.found.lock().unwrap() = Some(topo.map(|t| (info.rsdp_paddr, t, acpi_entry)).map_err(|e| e.to_string()));
        ParkVerdict::Resume
    }
}

#[test]
fn madt_in_guest_memory_lists_every_vcpu_and_the_ioapic() {
    for cpus in [1u8, 4] {
        let (console, serial) = SerialConsole::captured();
        let mut vm = Vm::new(&config("checkpoint=boot exit=7", cpus), console).expect("VM");
        let found = Arc::new(Mutex::new(None));
        vm.set_park_hook(Box::new(AcpiHook { mem: vm.memory().clone(), found: found.clone() }));
        let outcome = vm.run().expect("run");
        let serial = String::from_utf8_lossy(&serial.lock().unwrap()).into_owned();
        assert!(matches!(outcome, Outcome::Exited(7)), "{serial}");
        let (rsdp, topo, acpi_entry) =
            found.lock().unwrap().clone().expect("the checkpoint was reached").expect("the MADT parses");
        assert_eq!(rsdp, mm_core::abi::boot::ACPI_TABLES, "hvm_start_info.rsdp_paddr");
        assert!(acpi_entry, "the memory map has an ACPI entry over the tables");
        assert_eq!(topo.ids(), (0..u32::from(cpus)).collect::<Vec<_>>(), "{topo:?}");
        assert_eq!(topo.lapic_addr, 0xfee0_0000);
        assert_eq!(topo.ioapic, Some((0, 0xfec0_0000, 0)));
    }
}

#[test]
fn bad_cpu_counts_are_refused_before_boot() {
    for (bad, says) in
        [("0", "1 to 8 vCPUs, not 0"), ("9", "1 to 8 vCPUs, not 9"), ("abc", "'abc' is not a number of vCPUs")]
    {
        let r = vmm(&["run", "--timeout", "30", "--cpus", bad, "--cmdline", "exit=7"]);
        assert_eq!(r.status, 2, "--cpus {bad}: {}", r.all());
        assert!(r.stderr.contains(says), "--cpus {bad}: {}", r.all());
        assert!(!r.stdout.contains("Memory:"), "nothing booted: {}", r.all());
    }
}

#[test]
fn a_crash_names_its_vcpu() {
    let r = boot(&["--cpus", "2", "--cmdline", "triplefault"]);
    assert_eq!(r.status, 125, "{}", r.all());
    assert!(r.stderr.contains("vCPU 0: the guest triple-faulted (KVM_EXIT_SHUTDOWN)"), "{}", r.all());
    assert!(r.stderr.contains("CR2: 0000400000000000"), "that vCPU's registers: {}", r.all());
}

#[test]
fn a_crash_on_an_application_processor_names_that_vcpu() {
    let r = boot(&["--cpus", "2", "--cmdline", "triplefault=1"]);
    assert_eq!(r.status, 125, "{}", r.all());
    assert!(r.stdout.contains("triple-faulting CPU 1 on purpose"), "{}", r.all());
    assert!(r.stderr.contains("vCPU 1: the guest triple-faulted (KVM_EXIT_SHUTDOWN)"), "{}", r.all());
    assert!(!r.stderr.contains("vCPU 0: the guest"), "only the AP crashed: {}", r.all());
    assert!(r.stderr.contains("CR2: 0000400000000000"), "that vCPU's registers: {}", r.all());
    // An AP number the machine does not have is refused with the reason.
    let r = boot(&["--cpus", "2", "--cmdline", "triplefault=2"]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("triplefault=2: want a CPU number below 2"), "{}", r.all());
}

#[test]
fn an_emulation_failure_on_an_application_processor_names_that_vcpu() {
    let r = boot(&["--cpus", "2", "--cmdline", "sse=1"]);
    if r.status == 0 {
        // Hardware KVM: ring 0 runs natively and SSE just works there.
        assert!(r.stdout.contains("xorps executed natively on CPU 1"), "{}", r.all());
    } else {
        // Emulated ring 0 (our CI hosts): CPU 1's emulation failure.
        assert_eq!(r.status, 125, "{}", r.all());
        assert!(r.stdout.contains("executing xorps in ring 0 on CPU 1"), "{}", r.all());
        assert!(
            r.stderr
                .contains("vCPU 1: KVM internal error 1: instruction emulation failed (KVM_INTERNAL_ERROR_EMULATION)"),
            "{}",
            r.all()
        );
        assert!(r.stderr.contains("the instruction KVM could not emulate: xorps xmm0,xmm0"), "{}", r.all());
        assert!(r.stderr.contains("<kernel::arch::sse_probe"), "{}", r.all());
    }
}

/// `vmm run --gdb ... --gdb-wait` plus `args`, and real gdb's batch output
/// for `cmds` (the VMM ends with the guest; both are bounded in time).
fn gdb_session(args: &[&str], cmds: &[&str]) -> (String, Run) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut vmm = Command::new(vmm_path())
        .args(["run", "--timeout", "120", "--gdb", "tcp:127.0.0.1:0", "--gdb-wait"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm");
    let mut err = BufReader::new(vmm.stderr.take().unwrap());
    let mut stderr = String::new();
    let target = loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "the VMM ended before listening: {stderr}");
        stderr.push_str(&line);
        if let Some(rest) = line.split("listening on tcp:").nth(1) {
            break rest.split([',', ';', ' ']).next().unwrap().to_string();
        }
    };
    let mut gdb = Command::new("/usr/bin/gdb");
    gdb.args(["-batch", "-nx", "-ex", "set pagination off", "-ex", &format!("target remote {target}")]);
    for c in cmds {
        gdb.args(["-ex", c]);
    }
    let out = gdb.arg(env!("MMEMU_GUEST_ELF")).stdin(Stdio::null()).output().expect("run gdb");
    let gdb_out = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let rest = vmm.wait_with_output().expect("wait for the VMM");
    stderr.push_str(&String::from_utf8_lossy(&rest.stderr));
    let run = Run {
        status: rest.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&rest.stdout).into_owned(),
        stderr,
    };
    (gdb_out, run)
}

#[test]
fn gdb_shows_one_thread_per_vcpu_with_its_own_registers() {
    let (out, run) = gdb_session(
        &["--cpus", "4", "--cmdline", "exit=7"],
        &[
            "info threads",
            "thread 3",
            "info registers rip cs",
            "thread 1",
            "stepi",
            "info registers rip",
            "thread 2",
            "info registers rip",
            "continue",
        ],
    );
    let all = format!("{out}\n{}", run.all());
    for i in 1..=4 {
        assert!(out.contains(&format!("Thread 1.{i} (vCPU {}, ", i - 1)), "thread {i} listed: {all}");
    }
    // vCPU 2 (thread 3) waits for its SIPI in the reset state: real mode
    // at f000:fff0; vCPU 0 is at the kernel's entry.
    assert!(out.contains("[Switching to thread 3 (Thread 1.3)]"), "{all}");
    assert!(out.lines().any(|l| l.starts_with("rip") && l.contains("0xfff0")), "vCPU 2's own RIP: {all}");
    assert!(out.lines().any(|l| l.starts_with("cs") && l.contains("0xf000")), "vCPU 2's own CS: {all}");
    assert!(out.lines().any(|l| l.starts_with("rip") && l.contains("0xffffffff8")), "vCPU 0's RIP: {all}");
    // The step moved vCPU 0 alone and named its thread (no guessing).
    assert!(!out.contains("stopped without sending a thread-id"), "{all}");
    assert_eq!(out.lines().filter(|l| l.starts_with("rip") && l.contains("0xfff0")).count(), 2, "{all}");
    assert!(out.contains("exited with code 07"), "{all}");
    assert_eq!(run.status, 7, "{all}");
}

/// The views that do not depend on how many CPUs the guest started, as
/// JSON, at checkpoint `boot`: the kernel's mappings (without the accessed
/// and dirty counts, which the APs' own work changes), a walk, the process
/// list and the `--verify` verdicts. (`cpu` and `exits` describe the vCPUs
/// themselves; meminfo, buddyinfo and slabinfo hold the APs' per-CPU
/// caches and stacks once the guest starts them.)
fn memory_views(cpus: &str) -> Vec<serde_json::Value> {
    let r = boot(&[
        "--cpus",
        cpus,
        "--cmdline",
        "checkpoint=boot exit=0",
        "--inspect-at",
        "boot",
        "--json=-",
        "--inspect",
        "mem,ps,walk:kmain",
        "--verify=kvm,wx,text-ro,text-user,pt-owner",
    ]);
    assert_eq!(r.status, 0, "--cpus {cpus}: {}", r.all());
    let mut views: Vec<serde_json::Value> =
        r.stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(views.len(), 4, "--cpus {cpus}: {}", r.all());
    for v in &mut views {
        if let Some(ranges) = v["data"]["ranges"].as_array_mut() {
            for range in ranges {
                let o = range.as_object_mut().unwrap();
                o.remove("accessed");
                o.remove("dirty");
            }
        }
        if let Some(checks) = v["data"]["checks"].as_array_mut() {
            for c in checks {
                // Counts of table pages differ with the APs' own tables.
                c.as_object_mut().unwrap().remove("detail");
            }
        }
    }
    views
}

#[test]
fn a_checkpoint_with_two_vcpus_shows_what_one_shows() {
    let one = memory_views("1");
    let two = memory_views("2");
    assert_eq!(one, two);
}

#[test]
fn cpu_and_exits_views_show_every_vcpu_parked() {
    let r =
        boot(&["--cpus", "3", "--cmdline", "checkpoint=boot exit=0", "--inspect-at", "boot", "--inspect", "cpu,exits"]);
    assert_eq!(r.status, 0, "{}", r.all());
    let o = &r.stdout;
    assert!(o.contains("(vCPU 0 reached the checkpoint; the others are stopped)"), "{}", r.all());
    assert!(o.contains("  vCPU 0: at the checkpoint"), "{}", r.all());
    // The APs' lines come from their own registers, readable only because
    // they were kicked out of KVM_RUN and parked (stop the world): a vCPU
    // inside KVM_RUN holds its lock and would have no line.
    for i in 1..3 {
        assert!(o.lines().any(|l| l.starts_with(&format!("  vCPU {i}: ")) && l.contains(" RIP 0x")), "{}", r.all());
    }
    assert!(o.lines().any(|l| l.starts_with("  vCPU 2: ") && !l.contains("RIP")), "per-vCPU exits: {}", r.all());
    let j = boot(&[
        "--cpus",
        "2",
        "--cmdline",
        "checkpoint=boot exit=0",
        "--inspect-at",
        "boot",
        "--json=-",
        "--inspect",
        "cpu,exits",
    ]);
    let views: Vec<serde_json::Value> =
        j.stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let cpu = views.iter().find(|v| v["view"] == "cpu").expect("cpu view");
    assert_eq!(cpu["data"]["vcpus"].as_array().map(Vec::len), Some(2), "{cpu}");
    assert!(cpu["data"]["vcpus"][1]["state"].as_str().is_some_and(|s| !s.is_empty()), "{cpu}");
    let exits = views.iter().find(|v| v["view"] == "exits").expect("exits view");
    assert_eq!(exits["data"]["per_vcpu"].as_array().map(Vec::len), Some(2), "{exits}");
}

#[test]
fn a_snapshot_holds_every_vcpus_registers() {
    let file = std::env::temp_dir().join(format!("mmemu-smp-snap-{}.core", std::process::id()));
    let spec = format!("boot={}", file.display());
    let r = boot(&["--cpus", "3", "--cmdline", "checkpoint=boot exit=0", "--snapshot-at", &spec]);
    assert_eq!(r.status, 0, "{}", r.all());
    let notes = std::process::Command::new("readelf").args(["-n", file.to_str().unwrap()]).output().expect("readelf");
    let notes = String::from_utf8_lossy(&notes.stdout).into_owned();
    assert_eq!(notes.matches("NT_PRSTATUS").count(), 3, "one per vCPU:\n{notes}");
    // The file still opens for offline inspection.
    let i = vmm(&["inspect", file.to_str().unwrap(), "--inspect", "cpu"]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(i.status, 0, "{}", i.all());
    assert!(i.stdout.contains("cpu: RIP 0xffffffff8"), "{}", i.all());
}
