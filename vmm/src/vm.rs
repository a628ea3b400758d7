//! One virtual machine: KVM objects, guest memory, devices, the booted
//! kernel; and running it to completion with the event loop.

use crate::boot::{self, kernel::KernelImage, BootError, BootMode};
use crate::devices::virtio;
use crate::devices::virtio::blk::{BackingFile, SwapConfig, SwapError};
use crate::devices::{serial::SerialConsole, PortBus};
use crate::eventloop::{self, LoopEnd};
use crate::gdb::{self, GdbConfig, GdbError};
use crate::inspect::checkpoint::{InspectError, InspectOutcome, Inspector};
use crate::inspect::spec::InspectConfig;
use crate::inspect::GuestLink;
use crate::kvm::{self, KvmError};
use crate::layout;
use crate::memory::{self, GuestMem, MemoryError};
use crate::symbols::Symbols;
use crate::vcpu::{self, report::CpuSnapshot, Crash, ParkHook, SharedVcpu, VcpuRunner, VcpuStop};
use kvm_ioctls::{Kvm, VmFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most vCPUs a VM has (`--cpus`); mm-core's ACPI reader holds as many.
pub const MAX_VCPUS: u8 = mm_core::acpi::MAX_CPUS as u8;

/// What to run.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The KVM device.
    pub kvm_device: PathBuf,
    /// A kernel file, or the embedded guest.
    pub kernel: Option<PathBuf>,
    /// RAM in bytes.
    pub ram: u64,
    /// vCPUs (1..=[`MAX_VCPUS`]): vCPU 0 boots, the others wait for the
    /// guest's INIT-SIPI-SIPI.
    pub cpus: u8,
    /// NUMA nodes (`--numa`), described to the guest in ACPI SRAT/SLIT;
    /// none: one node, no SRAT.
    pub numa: Option<crate::numa::NumaSpec>,
    /// Boot path.
    pub boot: BootMode,
    /// Kernel command line.
    pub cmdline: String,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// Serve gdb (`--gdb`, `--gdb-wait`).
    pub gdb: Option<GdbConfig>,
    /// Views and checks at checkpoints (`--inspect`, `--verify`).
    pub inspect: InspectConfig,
    /// The swap device's backing file (`--swap`); none: no device.
    pub swap: Option<SwapConfig>,
    /// The initial RAM disk (`--initrd`, `-- PROG`); none: no module.
    pub initrd: Option<Arc<boot::initrd::Initrd>>,
    /// User programs' standard output to the VMM's stderr instead of its
    /// stdout (when stdout carries the JSON stream).
    pub user_stdout_to_stderr: bool,
    /// Snapshot files to write at checkpoints (`--snapshot-at NAME=FILE`).
    pub snapshots: Vec<(String, PathBuf)>,
    /// Count ring-0 instructions between two checkpoints
    /// (`--count-insns FROM..TO`), with the JSON report's file.
    pub count_insns: Option<(crate::profile::insns::CountSpec, Option<PathBuf>)>,
    /// Serve the live web view (`--web`).
    pub web: Option<crate::web::WebConfig>,
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
    /// `--cpus` out of range (the CLI refuses it first).
    #[error("the VMM runs 1 to {max} vCPUs, not {0}", max = MAX_VCPUS)]
    Cpus(u8),
    /// `--numa` does not fit --mem and --cpus.
    #[error(transparent)]
    Numa(#[from] crate::numa::NumaError),
    /// The gdb stub's thread died.
    #[error("the gdb stub's thread panicked; this is a VMM bug")]
    GdbThread,
    /// The channel between the vCPU and the gdb stub.
    #[error("cannot connect the gdb stub to the vCPU")]
    DebugChannel(#[source] std::io::Error),
    /// The gdb stub.
    #[error("the gdb stub failed")]
    Gdb(#[from] GdbError),
    /// The inspector's output file (`--json=PATH`).
    #[error("cannot create {}, where --json was asked to write", .path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Inspection at a checkpoint stopped the run (`--verify` violations).
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// The swap device (`--swap`).
    #[error(transparent)]
    Swap(#[from] SwapError),
    /// A snapshot file (`--snapshot-at`, `vmm inspect`).
    #[error(transparent)]
    Snapshot(crate::snapshot::SnapshotError),
    /// The profiler (`--profile`).
    #[error(transparent)]
    Profile(#[from] crate::profile::sampler::ProfileError),
    /// The web view (`--web`).
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
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
    /// gdb's `kill` ended the run.
    Killed,
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
    /// Every vCPU, by index (KVM vCPU id and APIC ID = index).
    vcpus: Vec<SharedVcpu>,
    _vm: Arc<VmFd>,
    _kvm: Kvm,
    mem: GuestMem,
    serial: Arc<Mutex<SerialConsole>>,
    symbols: Symbols,
    timeout: Option<Duration>,
    gdb: Option<GdbConfig>,
    park_hook: Option<Box<dyn ParkHook>>,
    inspect_outcome: Option<Arc<Mutex<InspectOutcome>>>,
    link: GuestLink,
    swap: Option<virtio::SwapDevice>,
    inspect_at: Vec<String>,
    user_stdout_to_stderr: bool,
    snapshot_hook: Option<crate::snapshot::SnapshotHook>,
    counter: Option<crate::profile::insns::InsnCounter>,
    web: Option<crate::web::WebView>,
    progress: bool,
    profiler: Option<crate::profile::sampler::Profiler>,
}

impl Vm {
    /// Builds the VM and boots the kernel up to its first instruction.
    pub fn new(cfg: &VmConfig, console: SerialConsole) -> Result<Self, VmError> {
        let image = match &cfg.kernel {
            Some(p) => KernelImage::from_file(p)?,
            None => KernelImage::embedded()?,
        };
        memory::check_size(cfg.ram)?;
        if !(1..=MAX_VCPUS).contains(&cfg.cpus) {
            return Err(VmError::Cpus(cfg.cpus));
        }
        let numa = cfg.numa.as_ref().map(|n| n.resolve(cfg.ram, cfg.cpus)).transpose()?;
        // The swap file is checked first: a bad one fails before anything boots.
        let swap_file = cfg.swap.as_ref().map(BackingFile::open).transpose()?;
        let kvm = kvm::open(&cfg.kvm_device)?;
        let vm = Arc::new(kvm.create_vm().map_err(KvmError::ioctl("create a VM"))?);
        // Intel's KVM needs three pages for real-mode emulation; harmless
        // elsewhere. Must precede the first vCPU.
        vm.set_tss_address(layout::KVM_TSS as usize).map_err(KvmError::ioctl("set the TSS address"))?;

        let firmware = cfg.boot == BootMode::Firmware;
        let mem = memory::create(cfg.ram, firmware)?;
        memory::register_with_dirty_log(&vm, &mem, cfg.inspect.wants_dirty_log())?;
        // The in-kernel interrupt controllers (PIC, IOAPIC, and a local APIC
        // per vCPU): the guest's scheduler runs on the local APIC timer. After
        // the memslots: registering RAM with the irqchip present costs KVM far
        // more (measured: ~9 ms for 256 MiB instead of well under 1 ms).
        vm.create_irq_chip().map_err(KvmError::ioctl("create the in-kernel interrupt controller"))?;
        let swap = swap_file.map(|f| virtio::swap_device(&vm, &mem, f)).transpose()?;
        // The guest finds the device as Linux does, on its command line.
        let cmdline = match swap {
            Some(_) => format!("{} {}", cfg.cmdline, virtio::kernel_cmdline()),
            None => cfg.cmdline.clone(),
        };
        // `--verify tlb` replays what the guest records only when asked
        // (mm/tlbtrace.rs): switch the recorder on, first, before any `--`.
        // Named only: a plain `--verify` (every check) leaves the guest as
        // it is, and the check then says it is not applicable.
        let wants_tlb = cfg.inspect.verify.as_ref().is_some_and(|v| {
            use crate::inspect::spec::Check;
            v.contains(&Check::Tlb) && !Check::ALL.iter().all(|c| v.contains(c))
        });
        let has_switch =
            cmdline.split(' ').take_while(|w| *w != "--").any(|w| w == "tlbtrace" || w.starts_with("tlbtrace="));
        let cmdline = if wants_tlb && !has_switch { format!("tlbtrace {cmdline}") } else { cmdline };

        let kernel = image.load(&mem, cfg.ram)?;
        // The ACPI tables tell the guest its CPUs; the memory map covers
        // their bytes as ACPI data and the start info points at the RSDP
        // (every boot path hands the guest the same start info).
        let acpi_len = boot::acpi::write(&mem, cfg.cpus, numa.as_ref())?;
        if let Some(numa) = &numa {
            // Before the guest touches a page: the policy places every page
            // the host ever backs it with.
            eprintln!("vmm: NUMA: {}", crate::numa::bind_to_host(&mem, numa));
        }
        let mut e820 = layout::e820_map(cfg.ram, firmware);
        layout::e820_insert(
            &mut e820,
            layout::E820Entry { addr: boot::acpi::ACPI_TABLES, size: acpi_len, kind: layout::E820_ACPI },
        );
        boot::write_start_info(&mem, &e820, &cmdline, boot::acpi::ACPI_TABLES)?;
        if let Some(initrd) = &cfg.initrd {
            initrd.load(&mem, image.phys_end, cfg.ram)?;
        }

        let mut symbols = image.symbols.clone();
        let cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmError::ioctl("report its supported CPUID"))?;
        // vCPU 0 (the boot CPU) first; the others stay as KVM creates them
        // with the in-kernel irqchip: waiting for INIT-SIPI-SIPI, which the
        // guest sends through its local APIC to start them in real mode.
        let mut vcpus = Vec::new();
        for id in 0..cfg.cpus {
            let v = vm.create_vcpu(u64::from(id)).map_err(KvmError::ioctl("create a vCPU"))?;
            v.set_cpuid2(&vcpu::cpuid::for_vcpu(&cpuid, id, cfg.cpus))
                .map_err(KvmError::ioctl("set the vCPU's CPUID"))?;
            vcpus.push(v);
        }
        let vcpu = &vcpus[0];
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
                symbols.merge(Symbols::from_static(crate::EMBEDDED_FIRMWARE));
                // The vCPU stays in its reset state: real mode at 0xfffffff0.
            }
        }
        let link = GuestLink::default();
        let out = match cfg.inspect.is_active() {
            true => Some(cfg.inspect.output().map_err(|source| VmError::Output {
                path: cfg.inspect.json_out.clone().unwrap_or_default(),
                source,
            })?),
            false => None,
        };
        let inspector = out.map(|out| {
            Inspector::new(cfg.inspect.clone(), mem.clone(), Some(vm.clone()), Arc::new(symbols.clone()), out)
                .with_link(link.clone())
        });
        let park_hook = inspector.map(|i| Box::new(i) as Box<dyn ParkHook>);
        let snapshot_hook = (!cfg.snapshots.is_empty()).then(|| {
            let info = crate::snapshot::SnapshotInfo { kernel: cfg.kernel.clone(), firmware, ..Default::default() };
            crate::snapshot::SnapshotHook::new(mem.clone(), link.clone(), cfg.snapshots.clone(), info)
        });
        let counter = cfg.count_insns.clone().map(|(spec, json)| {
            crate::profile::insns::InsnCounter::new(spec, mem.clone(), Arc::new(symbols.clone()), json)
        });
        // Bound before the guest boots, so a taken port fails the start.
        let web = cfg.web.as_ref().map(crate::web::start).transpose()?;
        let inspect_outcome = park_hook.as_ref().and_then(|h| h.outcome());
        Ok(Vm {
            vcpus: vcpus.into_iter().map(|v| Arc::new(Mutex::new(v))).collect(),
            _vm: vm,
            _kvm: kvm,
            mem,
            serial: Arc::new(Mutex::new(console)),
            symbols,
            timeout: cfg.timeout,
            gdb: cfg.gdb.clone(),
            park_hook,
            inspect_outcome,
            link,
            swap,
            inspect_at: cfg.inspect.at.clone(),
            user_stdout_to_stderr: cfg.user_stdout_to_stderr,
            snapshot_hook,
            counter,
            web,
            progress: false,
            profiler: None,
        })
    }

    /// What the port bus and run loop share with inspection (the guest's
    /// descriptor address, exit counts): give it to a hand-made
    /// [`Inspector`] with [`Inspector::with_link`].
    pub fn link(&self) -> &GuestLink {
        &self.link
    }

    /// Guest memory (for inspection).
    pub fn memory(&self) -> &GuestMem {
        &self.mem
    }

    /// vCPU `index`, for tools that drive it themselves (the gdb bench's
    /// raw single-step floor) instead of calling [`Vm::run`].
    pub fn vcpu(&self, index: usize) -> Option<&SharedVcpu> {
        self.vcpus.get(index)
    }

    /// Replaces what runs at checkpoints (by default the `--inspect` /
    /// `--verify` inspector, if asked for).
    pub fn set_park_hook(&mut self, hook: Box<dyn ParkHook>) {
        self.inspect_outcome = hook.outcome();
        self.park_hook = Some(hook);
    }

    /// Shows a progress line on stderr while the guest runs (see
    /// [`crate::progress::wanted`] for when that is right).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Samples the vCPUs' stacks while the guest runs (`--profile`); the
    /// files are written when the run ends.
    pub fn with_profiler(mut self, profiler: Option<crate::profile::sampler::Profiler>) -> Self {
        self.profiler = profiler;
        self
    }

    /// Runs the guest until it exits, dies or times out.
    pub fn run(self) -> Result<Outcome, VmError> {
        let Vm {
            vcpus,
            _vm,
            _kvm,
            mem,
            serial,
            symbols,
            timeout,
            gdb,
            park_hook,
            inspect_outcome,
            link,
            swap,
            inspect_at,
            user_stdout_to_stderr,
            snapshot_hook,
            counter,
            web,
            progress,
            profiler,
        } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let mut bus = PortBus::new(serial.clone(), Arc::new(symbols.clone()));
        if user_stdout_to_stderr {
            bus.user_stdout = Box::new(std::io::stderr());
        }
        if web.is_some() {
            // The web page's console shows programs' output too.
            let out = std::mem::replace(&mut bus.user_stdout, Box::new(std::io::sink()));
            bus.user_stdout = Box::new(crate::web::ConsoleTee(out));
            let err = std::mem::replace(&mut bus.user_stderr, Box::new(std::io::sink()));
            bus.user_stderr = Box::new(crate::web::ConsoleTee(err));
        }
        let swap_report = swap.map(|s| {
            bus.mmio.insert(mm_core::abi::virtio::MMIO_BASE, mm_core::abi::virtio::MMIO_SIZE, s.transport);
            s.report
        });
        let progress = progress.then(|| crate::progress::Progress::start(link.clone(), bus.results.live.clone()));
        // One runner and thread per vCPU; they share the device bus, the
        // park hooks and the world (stop the world at checkpoints).
        let bus = Arc::new(Mutex::new(bus));
        let hooks: vcpu::SharedHooks = Arc::default();
        let world = Arc::new(vcpu::world::World::new(vcpus.len()));
        let mut runners: Vec<VcpuRunner> = vcpus
            .iter()
            .enumerate()
            .map(|(i, v)| {
                VcpuRunner::in_world(
                    i,
                    v.clone(),
                    bus.clone(),
                    hooks.clone(),
                    world.clone(),
                    link.clone(),
                    stop.clone(),
                )
            })
            .collect();
        let profiler =
            profiler.map(|p| p.start(mem.clone(), link.descriptor.clone(), world.clone(), stop.clone())).transpose()?;
        if let Some(p) = &profiler {
            for r in &mut runners {
                r.set_sampler(p.sampler());
            }
        }
        let runner = &mut runners[0];
        link.vcpus.set(vcpus.clone());
        if park_hook.is_some() || web.is_some() {
            // SIGUSR1 pauses the guest for the views (and the web view's
            // update); without a hook a pause would have nothing to show,
            // so the default (ending the process) stays.
            crate::inspect::pause::install().map_err(|source| {
                VmError::EventLoop(eventloop::LoopError::Setup { what: "the SIGUSR1 pause handler", source })
            })?;
        }
        // Snapshots first: the file holds the state the views then show.
        let snapshot_log = snapshot_hook.as_ref().map(|h| h.log());
        let snapshot_names: Vec<String> = snapshot_hook.as_ref().map(|h| h.names()).unwrap_or_default();
        if let Some(hook) = snapshot_hook {
            runner.add_park_hook(Box::new(hook));
        }
        if let Some(hook) = park_hook {
            runner.add_park_hook(hook);
        }
        if let Some(c) = counter {
            runner.add_park_hook(Box::new(c));
        }
        if let Some(w) = &web {
            w.attach_console(serial.clone());
            if w.shared.wants_hold_at_start() {
                crate::inspect::pause::poke();
            }
            let hook = w.hook(mem.clone(), Arc::new(symbols.clone()), link.clone(), stop.clone());
            runner.add_park_hook(Box::new(hook));
        }
        // Bound before the guest starts, so a taken port fails the start.
        let gdb_thread = match gdb.as_ref().map(gdb::GdbServer::bind).transpose()? {
            Some(server) => {
                let (vcpu_end, debugger) = vcpu::debug::channel(0).map_err(VmError::DebugChannel)?;
                runner.set_debugger(vcpu_end);
                runner.set_all_vcpus(vcpus.clone());
                let ctx = gdb::GdbContext {
                    debugger,
                    mem: mem.clone(),
                    symbols: symbols.clone(),
                    link: link.clone(),
                    stop: stop.clone(),
                };
                Some(gdb::spawn(server, ctx)?)
            }
            None => None,
        };
        let bodies: Vec<eventloop::VcpuBody<Result<VcpuStop, VmError>>> = runners
            .into_iter()
            .map(|mut runner| -> eventloop::VcpuBody<Result<VcpuStop, VmError>> {
                Box::new(move |done| {
                    let r = runner.run().map_err(VmError::Run);
                    let _ = done.write(1);
                    r
                })
            })
            .collect();
        let (end, joined) = eventloop::run(serial, timeout, stop.clone(), bodies)?;
        if let Some(p) = profiler {
            // Written whatever the run's end (a crash's profile is worth having).
            let path = p.path().to_path_buf();
            eprintln!("vmm: {}", p.finish()?.render(&path));
        }
        if let Some(p) = progress {
            p.finish();
        }
        if let Some(w) = &web {
            eprintln!("vmm: {}", w.summary());
        }
        // The stub ends once the vCPU's run is over.
        let gdb_result = gdb_thread.map(|t| t.join());
        // The views' handles on the vCPUs go before the vCPUs themselves.
        link.vcpus.set(Vec::new());
        report_selftests(&bus.lock().unwrap_or_else(std::sync::PoisonError::into_inner).results);
        // The run's result is the vCPU's that ended it (the guest's exit or
        // a crash on any vCPU); else (a timeout, a stop) the boot CPU's.
        let ender = world.first_end().unwrap_or(0);
        let mut results = joined.into_iter();
        let result = results.nth(ender).flatten().ok_or(VmError::VcpuThread)?;
        match gdb_result {
            Some(Err(_)) => return Err(VmError::GdbThread),
            Some(Ok(Err(e))) => eprintln!("vmm: gdb: the stub failed ({e}); the guest ran on without it"),
            _ => {}
        }
        if let Some(report) = swap_report {
            eprintln!("vmm: virtio-blk: {}", report());
        }
        let stop = result?;
        if let Some(Ok(mut log)) = snapshot_log.as_ref().map(|l| l.lock()) {
            if let Some(e) = log.error.take() {
                return Err(VmError::Snapshot(e));
            }
            for name in snapshot_names.iter().filter(|n| !log.written.contains(*n)) {
                eprintln!(
                    "vmm: warning: --snapshot-at {}: the guest never reached that checkpoint; no file written",
                    crate::devices::results::escape(name)
                );
            }
        }
        if let Some(Ok(mut o)) = inspect_outcome.as_ref().map(|o| o.lock()) {
            if let Some(e) = o.error.take() {
                return Err(e.into());
            }
            if o.checkpoints == 0 {
                eprintln!("vmm: --inspect/--verify did nothing: the guest reached no checkpoint (add checkpoint=NAME to --cmdline)");
            } else {
                for name in inspect_at.iter().filter(|n| !o.seen.contains(*n)) {
                    eprintln!(
                        "vmm: warning: --inspect-at {}: the guest never reached that checkpoint ({} others were reached; `--cmdline help` lists the built-in ones)",
                        crate::devices::results::escape(name),
                        o.seen.len()
                    );
                }
                for note in o.finish()? {
                    eprintln!("vmm: {note}");
                }
            }
        }
        let snapshot = || CpuSnapshot::capture(&*vcpu::lock(&vcpus[ender]), &mem).ok();
        let multi = vcpus.len() > 1;
        Ok(match (stop, end) {
            (VcpuStop::Exit(code), _) => Outcome::Exited(code),
            (VcpuStop::Killed, _) => Outcome::Killed,
            (VcpuStop::Crash(crash), _) => {
                let snap = snapshot();
                let mut headline = vcpu::report::headline(&crash, snap.as_ref());
                if multi {
                    // Which vCPU died ("vCPU 2: triple fault ...").
                    headline = format!("vCPU {ender}: {headline}");
                }
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
        // Guest text: escaped, so control characters cannot drive the terminal.
        use crate::devices::results::escape;
        if r.passed {
            eprintln!("vmm: selftest pass: {}/{}", escape(&r.group), escape(&r.name));
        } else {
            eprintln!("vmm: selftest FAILED: {}/{}: {}", escape(&r.group), escape(&r.name), escape(&r.detail));
        }
    }
    for m in &results.malformed {
        eprintln!("vmm: selftest record not understood: {m:?}");
    }
    if results.dropped > 0 {
        eprintln!(
            "vmm: note: {} more self-test lines were dropped: the results channel keeps at most {} records and {} malformed lines",
            results.dropped,
            crate::devices::results::MAX_RECORDS,
            crate::devices::results::MAX_MALFORMED
        );
    }
    let (passed, failed) = results.counts();
    eprintln!("vmm: selftest results: {passed} checks passed, {failed} failed");
}
