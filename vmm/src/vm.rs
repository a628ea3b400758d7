//! One virtual machine: KVM objects, guest memory, devices, the booted
//! kernel; and running it to completion with the event loop.

use crate::boot::{self, kernel::KernelImage, BootError, BootMode};
use crate::devices::{serial::SerialConsole, PortBus};
use crate::eventloop::{self, LoopEnd};
use crate::kvm::{self, KvmError};
use crate::layout;
use crate::memory::{self, GuestMem, MemoryError};
use crate::symbols::Symbols;
use crate::vcpu::{self, report::CpuSnapshot, Crash, VcpuStop};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The KVM device.
    pub kvm_device: PathBuf,
    /// A kernel file, or the embedded guest.
    pub kernel: Option<PathBuf>,
    /// RAM in bytes.
    pub ram: u64,
    /// Boot path.
    pub boot: BootMode,
    /// Kernel command line.
    pub cmdline: String,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
}

/// Errors setting up or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The kernel image.
    #[error(transparent)]
    Kernel(#[from] boot::kernel::KernelError),
    /// KVM itself.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Boot data.
    #[error("cannot prepare the boot")]
    Boot(#[from] BootError),
    /// The console.
    #[error("cannot create the serial console")]
    Serial(#[source] std::io::Error),
    /// The event loop.
    #[error("the event loop failed")]
    EventLoop(#[from] eventloop::LoopError),
    /// KVM_RUN failed.
    #[error("KVM_RUN failed")]
    Run(#[source] kvm_ioctls::Error),
    /// The vCPU thread died.
    #[error("the vCPU thread panicked; this is a VMM bug")]
    VcpuThread,
}

/// How a run ended.
pub enum Outcome {
    /// The guest wrote this status to the exit port.
    Exited(u32),
    /// The guest died; the report says how.
    Crashed {
        /// One line (plus hints).
        headline: String,
        /// Registers and code.
        report: String,
    },
    /// `--timeout` expired.
    TimedOut {
        /// The limit.
        after: Duration,
        /// Where the guest was.
        report: String,
    },
}

/// A VM ready to run.
pub struct Vm {
    // Field order matters for drop: the vCPU and VM fds go before the
    // memory they map.
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    mem: GuestMem,
    serial: Arc<Mutex<SerialConsole>>,
    symbols: Symbols,
    timeout: Option<Duration>,
}

impl Vm {
    /// Builds the VM and boots the kernel up to its first instruction.
    pub fn new(cfg: &VmConfig, console: SerialConsole) -> Result<Self, VmError> {
        let image = match &cfg.kernel {
            Some(p) => KernelImage::from_file(p)?,
            None => KernelImage::embedded()?,
        };
        memory::check_size(cfg.ram)?;
        let kvm = kvm::open(&cfg.kvm_device)?;
        let vm = kvm.create_vm().map_err(KvmError::ioctl("create a VM"))?;
        // Intel's KVM needs three pages for real-mode emulation; harmless
        // elsewhere. Must precede the first vCPU.
        vm.set_tss_address(layout::KVM_TSS as usize).map_err(KvmError::ioctl("set the TSS address"))?;

        let firmware = cfg.boot == BootMode::Firmware;
        let mem = memory::create(cfg.ram, firmware)?;
        memory::register(&vm, &mem)?;

        let kernel = image.load(&mem, cfg.ram)?;
        let _ = kernel.pvh_entry;
        boot::write_start_info(&mem, &layout::e820_map(cfg.ram, firmware), &cfg.cmdline)?;

        let mut symbols = image.symbols.clone();
        let vcpu = vm.create_vcpu(0).map_err(KvmError::ioctl("create vCPU 0"))?;
        let cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmError::ioctl("report its supported CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(KvmError::ioctl("set the vCPU's CPUID"))?;
        match cfg.boot {
            BootMode::Direct => {
                boot::direct::write_tables(&mem)?;
                let sregs = vcpu.get_sregs().map_err(KvmError::ioctl("read special registers"))?;
                vcpu.set_sregs(&boot::direct::long_mode_sregs(sregs))
                    .map_err(KvmError::ioctl("accept the long-mode special registers"))?;
                vcpu.set_regs(&boot::direct::entry_regs(kernel.entry))
                    .map_err(KvmError::ioctl("accept the entry registers"))?;
            }
            BootMode::Firmware => {
                boot::firmware::load_rom(&mem, crate::EMBEDDED_FIRMWARE)?;
                boot::firmware::write_handoff(&mem, kernel.entry)?;
                symbols.merge(Symbols::from_elf(crate::EMBEDDED_FIRMWARE));
                // The vCPU stays in its reset state: real mode at 0xfffffff0.
            }
        }
        Ok(Vm { vcpu, _vm: vm, _kvm: kvm, mem, serial: Arc::new(Mutex::new(console)), symbols, timeout: cfg.timeout })
    }

    /// Guest memory (for inspection).
    pub fn memory(&self) -> &GuestMem {
        &self.mem
    }

    /// Runs the guest until it exits, dies or times out.
    pub fn run(self) -> Result<Outcome, VmError> {
        let Vm { vcpu, _vm, _kvm, mem, serial, symbols, timeout } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let mut bus = PortBus::new(serial.clone(), Arc::new(symbols.clone()));
        let (end, joined) = eventloop::run(serial, timeout, stop.clone(), move |done| {
            let mut vcpu = vcpu;
            let r = vcpu::run(&mut vcpu, &mut bus, &stop);
            let _ = done.write(1);
            (vcpu, r, bus.results)
        })?;
        let (vcpu, result, results) = joined.ok_or(VmError::VcpuThread)?;
        report_selftests(&results);
        let stop = result.map_err(VmError::Run)?;
        let snapshot = || CpuSnapshot::capture(&vcpu, &mem).ok();
        Ok(match (stop, end) {
            (VcpuStop::Exit(code), _) => Outcome::Exited(code),
            (VcpuStop::Crash(crash), _) => {
                let snap = snapshot();
                let headline = vcpu::report::headline(&crash, snap.as_ref());
                let report = snap.map(|s| s.render(&symbols)).unwrap_or_else(|| "  (registers unavailable)\n".into());
                Outcome::Crashed { headline, report }
            }
            (VcpuStop::Stopped, LoopEnd::TimedOut(after)) => {
                let report = snapshot().map(|s| s.render(&symbols)).unwrap_or_default();
                Outcome::TimedOut { after, report }
            }
            (VcpuStop::Stopped, LoopEnd::VcpuDone) => Outcome::Crashed {
                headline: vcpu::report::headline(&Crash::Unexpected("the vCPU stopped without a reason".into()), None),
                report: String::new(),
            },
        })
    }
}

/// Prints what the guest reported on the self-test results channel: one
/// line per check (failures with the guest's detail) and a closing count.
fn report_selftests(results: &crate::devices::results::ResultsChannel) {
    if results.records.is_empty() && results.malformed.is_empty() {
        return;
    }
    for r in &results.records {
        if r.passed {
            eprintln!("vmm: selftest pass: {}/{}", r.group, r.name);
        } else {
            eprintln!("vmm: selftest FAILED: {}/{}: {}", r.group, r.name, r.detail);
        }
    }
    for m in &results.malformed {
        eprintln!("vmm: selftest record not understood: {m:?}");
    }
    let (passed, failed) = results.counts();
    eprintln!("vmm: selftest results: {passed} checks passed, {failed} failed");
}
