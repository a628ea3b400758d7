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
