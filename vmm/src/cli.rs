//! The command line: `vmm run [options]`.

use crate::boot::BootMode;
use crate::devices::virtio::blk::SwapConfig;
use crate::gdb::{GdbAddr, GdbConfig};
use crate::memory;
use crate::vm::VmConfig;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// A VMM on KVM that boots the mm-emulator guest kernel, a small x86-64
/// kernel whose memory manager works like Linux's.
#[derive(Debug, Parser)]
#[command(name = "vmm", version = env!("MMEMU_VERSION"), about, long_about = None, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_STATUS_HELP: &str = "Exit status: the guest's own (what it wrote to port 0xf4; the guest kernel writes 101 for a panic, 102 for an oops, a kernel stack overflow among them); 1 when the VMM could not start the guest (bad input, no KVM); 2 for a usage error (a bad option, or an @CR3 that is not a table in guest RAM); 3 when --verify found a violation; 4 when a --verify check could not run or complete (no descriptor, paging off, --budget reached); 124 when --timeout stopped the guest; 125 when the guest crashed (triple fault, KVM emulation failure).";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a kernel (by default the guest embedded in this binary) and
    /// relay its serial console to stdout/stdin.
    Run(Box<RunArgs>),
    /// Inspect a snapshot file (`vmm run --snapshot-at NAME=FILE`) without
    /// KVM: the views and checks of --inspect/--verify at the checkpoint
    /// it was taken at, or a read-only gdb target with --gdb.
    Inspect(InspectArgs),
}

/// Options of `vmm inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The snapshot file (an ELF core file written by `vmm run --snapshot-at`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The kernel ELF the snapshot's guest ran, for its symbols (default:
    /// the kernel the snapshot names, else the embedded guest).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Views, as `vmm run --inspect` (dirty, exits and stage2 need a live VM).
    #[arg(long, value_name = "VIEW[,VIEW...]", value_delimiter = ',', value_parser = crate::inspect::spec::parse_view)]
    pub inspect: Vec<crate::inspect::spec::ViewSpec>,

    /// Checks, as `vmm run --verify` (kvm is not applicable offline);
    /// `--verify=CHECK,...` with the `=`, since FILE is a positional word.
    #[arg(long, value_name = "CHECK[,CHECK...]", num_args = 0..=1, require_equals = true, default_missing_value = "all", value_parser = crate::inspect::spec::parse_checks)]
    pub verify: Option<crate::inspect::spec::Checks>,

    /// JSON lines to PATH or stdout, as `vmm run --json`.
    #[arg(long, value_name = "PATH|-", num_args = 0..=1, require_equals = true, default_missing_value = "-")]
    pub json: Option<PathBuf>,

    /// Entry reads one listing of one root's page tables may spend.
    #[arg(long, value_name = "ENTRIES", default_value_t = crate::inspect::views::DEFAULT_BUDGET, value_parser = parse_budget)]
    pub budget: u64,

    /// Serve a read-only gdb target on the snapshot at tcp:HOST:PORT or
    /// unix:PATH (memory, registers, monitor views; no writes, continue
    /// or step).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["inspect", "verify"])]
    pub gdb: Option<GdbAddr>,

    /// The swap file the guest used, for the swap check's slot contents.
    #[arg(long, value_name = "PATH")]
    pub swap_file: Option<PathBuf>,
}

impl InspectArgs {
    /// The inspector's configuration these options describe.
    pub fn config(&self) -> crate::inspect::spec::InspectConfig {
        crate::inspect::spec::InspectConfig {
            views: self.inspect.clone(),
            at: vec![],
            json: self.json.is_some(),
            json_out: self.json.clone(),
            verify: self.verify.clone().map(|c| c.0),
            budget: Some(self.budget),
            swap_file: self.swap_file.clone(),
        }
    }
}

/// Options of `vmm run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kernel ELF to boot instead of the embedded guest (an ELF64 x86-64
    /// executable loaded at its physical addresses, between 1 MiB and 1 GiB).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Guest RAM, with a binary-unit suffix: 256M, 1G, 16G. Reserved
    /// lazily: the host backs only what the guest touches.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_mem)]
    pub mem: u64,

    /// Virtual CPUs, 1 to 8. vCPU 0 boots the kernel; the others wait for
    /// the guest to start them (INIT-SIPI-SIPI through its local APIC), as
    /// a PC's application processors do; the guest finds them in the ACPI
    /// MADT. Every vCPU runs on its own host thread.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_cpus)]
    pub cpus: u8,

    /// NUMA nodes, described to the guest in ACPI SRAT and SLIT: `N`
    /// (--mem split equally, the vCPUs in consecutive blocks) or
    /// `0=SIZE,1=SIZE[,cpus=0-1:2-3][,distance=LOCAL:REMOTE]` (sizes
    /// adding up to --mem in multiples of 4 MiB; one `:`-separated vCPU
    /// list per node, `A-B`, `A` or `A+B`, empty for none; distances
    /// `10:REMOTE` or the whole N x N matrix). Where the host has several
    /// NUMA nodes, each guest node's memory is bound to one (mbind).
    #[arg(long, value_name = "SPEC", value_parser = parse_numa)]
    pub numa: Option<crate::numa::NumaSpec>,

    /// How the vCPU reaches the kernel: `direct` (the VMM sets up long mode
    /// and jumps to the ELF entry) or `firmware` (the vCPU starts at the
    /// reset vector in real mode and our firmware enters long mode).
    #[arg(long, value_enum, default_value_t = BootMode::Direct)]
    pub boot: BootMode,

    /// Kernel command line. The embedded guest understands `selftest[=GROUP]`,
    /// `meminfo`, `vmstat`, `oom[=adj]`, `buddyinfo`, `slabinfo`, `vmallocinfo`, `ptdump`,
    /// `mmbench`, `checkpoint=NAME`,
    /// `break=freed-mapped|text-writable|cow-writable|cross-map|refcount|pt-owner`,
    /// `vmalloc_marker`, `nullderef`, `vmalloc_overrun`, `exit=N` (0..255), `panic`,
    /// `triplefault`, `sse`, `hang` and `echo`; `help` lists them and the
    /// built-in checkpoints (see README).
    #[arg(long, value_name = "STRING", default_value = "")]
    pub cmdline: String,

    /// Stop the guest after this many seconds (exit status 124).
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// The KVM device to open.
    #[arg(long, value_name = "PATH", default_value = crate::kvm::DEFAULT_KVM_DEVICE)]
    pub kvm_device: PathBuf,

    /// Serve gdb's remote protocol at tcp:HOST:PORT (port 0 picks a free
    /// one) or unix:PATH; then `gdb -ex 'target remote HOST:PORT' GUEST_ELF`.
    /// The guest runs until gdb attaches, unless --gdb-wait.
    #[arg(long, value_name = "ADDR")]
    pub gdb: Option<GdbAddr>,

    /// With --gdb: hold the guest before its first instruction until gdb
    /// attaches.
    #[arg(long, requires = "gdb")]
    pub gdb_wait: bool,

    /// At each checkpoint the guest reaches (`--cmdline checkpoint=NAME`),
    /// with the vCPU parked, show these views: cpu, walk:ADDR[@CR3],
    /// tlb[@CR3], mem[@CR3], stage2:ADDR[@CR3], dirty, physmap[:DIR], and,
    /// through the descriptor the guest publishes, buddyinfo, slabinfo,
    /// meminfo, ps, vmstat; exits counts VM exits since the previous checkpoint.
    /// ADDR is a number, rip, rsp or a kernel symbol; CR3 defaults to the
    /// vCPU's. SIGUSR1 to the VMM shows them at once, as checkpoint 'pause'.
    #[arg(long, value_name = "VIEW[,VIEW...]", value_delimiter = ',', value_parser = crate::inspect::spec::parse_view)]
    pub inspect: Vec<crate::inspect::spec::ViewSpec>,

    /// Inspect and verify only at these checkpoints: the guest's built-in
    /// ones (ready, sabotage, access-test-done, processes-alive,
    /// cow-shared, cow-child-wrote, zero-page-mapped, mmbench-*-begin/end;
    /// `--cmdline help` lists them), checkpoint=NAME's, or pause. A name
    /// never reached is reported at the end of the run.
    #[arg(long, value_name = "NAME[,NAME...]", value_delimiter = ',')]
    pub inspect_at: Vec<String>,

    /// Write the views (and --verify's results) as JSON, one object per
    /// line, every 64-bit value a "0x..." string, to PATH or to stdout
    /// (`-`, the default); with stdout the guest's console moves to stderr
    /// (or --console) so the stream is JSON only.
    #[arg(long, value_name = "PATH|-", num_args = 0..=1, require_equals = true, default_missing_value = "-")]
    pub json: Option<PathBuf>,

    /// Write the guest's serial console to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub console: Option<PathBuf>,

    /// The guest's interactive shell on the console (instead of /init):
    /// ls, cat, free, ps, programs of the initramfs by name... (`help`
    /// lists them). On a terminal, the VMM puts it in raw mode while
    /// attached (restored on every exit; Ctrl-A x quits); stdin from a
    /// pipe works too, for scripts.
    #[arg(long)]
    pub shell: bool,

    /// Entry reads one listing of one root's page tables may spend (tlb,
    /// mem, wx, kvm, freed-mapped, physmap). Protects the host from
    /// hostile tables (loops, shared subtrees): a view that reaches it says
    /// so, and a check that reaches it fails (status 4).
    #[arg(long, value_name = "ENTRIES", default_value_t = crate::inspect::views::DEFAULT_BUDGET, value_parser = parse_budget)]
    pub budget: u64,

    /// Cross-check at each checkpoint and stop the run (exit status 3) on a
    /// violation: kvm (walker vs KVM_TRANSLATE), wx (no writable+executable
    /// page), text-ro and text-user (kernel text read-only, supervisor-only),
    /// freed-mapped (no free frame mapped outside the direct map), pt-owner
    /// (page tables are boot tables or owned PageTable), access (the guest's
    /// recorded faults match the software MMU), refcount (each user frame's
    /// refcount equals the user PTEs mapping it across the processes),
    /// cow-ro (a frame shared by private mappings is read-only in every
    /// mapper), isolation (no process reaches another's private frame).
    /// Without a value: all of them.
    /// (`--verify swap,lru` and `--verify=swap,lru` both work: a program
    /// to run comes only after `--`, so the next word cannot be one.)
    #[arg(long, value_name = "CHECK[,CHECK...]", num_args = 0..=1, default_missing_value = "all", value_parser = crate::inspect::spec::parse_checks)]
    pub verify: Option<crate::inspect::spec::Checks>,

    /// Swap's device: a virtio-blk disk on virtio-mmio backed by this host
    /// file, created sparse when missing (SIZE, default 64M; an existing
    /// file is used whole unless SIZE says less). The guest finds it on its
    /// command line (`virtio_mmio.device=...`). Without it: no swap device.
    /// `fail_writes=A-B` fails the A-th to B-th write requests (fault
    /// injection, to watch the guest keep such pages resident).
    #[arg(long, value_name = "PATH[,size=SIZE][,fail_writes=A-B]", value_parser = parse_swap)]
    pub swap: Option<SwapConfig>,

    /// Serve the live web view (page-table explorer, physical map, free
    /// lists and vmstat over time, controls) at HOST:PORT; without a value
    /// 127.0.0.1 with a free port. The URL is printed on stderr. Binds to
    /// loopback unless told otherwise (anyone who reaches the address can
    /// pause and inspect the guest).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::web::DEFAULT_ADDR, value_parser = crate::web::parse_addr)]
    pub web: Option<std::net::SocketAddr>,

    /// With --web: hold the guest before its first instruction until the
    /// page (or POST /api/resume or /api/step) lets it run.
    #[arg(long, requires = "web")]
    pub web_wait: bool,

    /// Initial RAM disk: a cpio "newc" archive, or a host directory the VMM
    /// packs into one. The guest unpacks it and runs its /init (a static
    /// x86-64 Linux executable) with the command line's words after `--`
    /// as arguments; the run's exit status is init's, its output is the
    /// VMM's stdout and stderr, and the kernel's console goes to stderr
    /// (or --console).
    #[arg(long, value_name = "PATH", conflicts_with = "program")]
    pub initrd: Option<PathBuf>,

    /// After `--`: a static x86-64 Linux program on the host (built with
    /// `gcc -static` or `musl-gcc -static`) and its arguments. It runs in
    /// the guest as /init; its standard output and error are the VMM's,
    /// the kernel's console goes to stderr (or --console), and the VMM
    /// exits with the program's exit status (128 + N when signal N killed it).
    #[arg(last = true, value_name = "PROG [ARGS]")]
    pub program: Vec<String>,

    /// At checkpoint NAME (the first time the guest reaches it), write
    /// guest RAM and the vCPU's state to FILE as a sparse ELF core file
    /// (zero pages are holes), for `vmm inspect FILE`, `gdb KERNEL FILE`
    /// or readelf. Repeatable.
    #[arg(long, value_name = "NAME=FILE", value_parser = parse_snapshot)]
    pub snapshot_at: Vec<(String, PathBuf)>,

    /// Count the ring-0 instructions the guest executes from checkpoint
    /// FROM to checkpoint TO, exactly, by single-stepping, per function;
    /// the table goes to stderr. Ring 3 is not stepped (it runs natively
    /// here): its stretches are counted. Slow: ring 0 is emulated here.
    #[arg(long, value_name = "FROM..TO", conflicts_with = "gdb")]
    pub count_insns: Option<crate::profile::insns::CountSpec>,

    /// With --count-insns: the whole report as JSON to FILE.
    #[arg(long, value_name = "FILE", requires = "count_insns")]
    pub count_insns_json: Option<PathBuf>,

    /// Sample every vCPU's instruction pointer and stack from a host timer
    /// (--profile-hz), unwound with the kernel's unwind tables; write the
    /// flame graph SVG to FILE and the folded stacks to FILE.folded.
    /// User code is symbolised for `-- PROG` (else shown as [user]).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["gdb", "count_insns"])]
    pub profile: Option<PathBuf>,

    /// With --profile: samples per second per vCPU (1 to 10000).
    #[arg(long, value_name = "N", requires = "profile", value_parser = crate::profile::sampler::parse_hz,
          default_value_t = crate::profile::sampler::DEFAULT_HZ)]
    pub profile_hz: u32,
}

fn parse_snapshot(s: &str) -> Result<(String, PathBuf), String> {
    crate::snapshot::parse_spec(s).map_err(|e| e.to_string())
}

fn parse_swap(s: &str) -> Result<SwapConfig, String> {
    SwapConfig::parse(s).map_err(|e| {
        let mut m = e.to_string();
        if let Some(src) = std::error::Error::source(&e) {
            m = format!("{m}: {src}");
        }
        m
    })
}

fn parse_mem(s: &str) -> Result<u64, String> {
    memory::parse_size(s).map_err(|e| e.to_string())
}

fn parse_numa(s: &str) -> Result<crate::numa::NumaSpec, String> {
    crate::numa::parse(s).map_err(|e| e.to_string())
}

fn parse_cpus(s: &str) -> Result<u8, String> {
    let max = crate::vm::MAX_VCPUS;
    match s.parse::<u8>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(_) | Err(_) if s.parse::<u64>().is_ok() => Err(format!("the VMM runs 1 to {max} vCPUs, not {s}")),
        _ => Err(format!("'{s}' is not a number of vCPUs (1 to {max})")),
    }
}

fn parse_budget(s: &str) -> Result<u64, String> {
    let n: u64 = s.replace('_', "").parse().map_err(|_| format!("'{s}' is not a number of entries"))?;
    if n == 0 {
        return Err("the budget must be at least 1 entry".into());
    }
    Ok(n)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(secs > 0.0 && secs < 1e9) {
        return Err(format!("the timeout must be a positive number of seconds, not {s}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl RunArgs {
    /// The VM configuration these options describe.
    pub fn config(&self) -> VmConfig {
        VmConfig {
            kvm_device: self.kvm_device.clone(),
            kernel: self.kernel.clone(),
            ram: self.mem,
            cpus: self.cpus,
            numa: self.numa.clone(),
            boot: self.boot,
            cmdline: self.cmdline.clone(),
            timeout: self.timeout,
            gdb: self.gdb.clone().map(|addr| GdbConfig { addr, wait: self.gdb_wait }),
            inspect: crate::inspect::spec::InspectConfig {
                views: self.inspect.clone(),
                at: self.inspect_at.clone(),
                json: self.json.is_some(),
                json_out: self.json.clone(),
                verify: self.verify.clone().map(|c| c.0),
                budget: Some(self.budget),
                swap_file: self.swap.as_ref().map(|s| s.path.clone()),
            },
            swap: self.swap.clone(),
            web: self.web.map(|addr| crate::web::WebConfig { addr, wait: self.web_wait, shell: self.shell }),
            initrd: None,
            user_stdout_to_stderr: self.json.as_deref() == Some(std::path::Path::new("-")),
            snapshots: self.snapshot_at.clone(),
            count_insns: self.count_insns.clone().map(|s| (s, self.count_insns_json.clone())),
        }
    }

    /// The profiler's options (`--profile`), if asked for.
    pub fn profile_config(&self) -> Option<crate::profile::sampler::ProfileConfig> {
        self.profile
            .as_ref()
            .map(|path| crate::profile::sampler::ProfileConfig { path: path.clone(), hz: self.profile_hz })
    }

    /// The configuration with the initrd read or packed (`--initrd`,
    /// `-- PROG`) and the program's arguments on the kernel command line.
    pub fn config_with_initrd(&self) -> Result<VmConfig, crate::boot::initrd::InitrdError> {
        use crate::boot::initrd::{init_args, Initrd};
        let mut cfg = self.config();
        if let Some(path) = &self.initrd {
            cfg.initrd = Some(std::sync::Arc::new(Initrd::from_path(path)?));
        }
        if let Some((prog, args)) = self.program.split_first() {
            cfg.initrd = Some(std::sync::Arc::new(Initrd::for_program(std::path::Path::new(prog))?));
            cfg.cmdline = format!("{} {}", cfg.cmdline, init_args(args)?).trim_start().to_string();
        }
        if self.runs_program() {
            use std::io::IsTerminal;
            // Which of our streams are terminals: the program's fds 0, 1
            // and 2 are them, and answer TCGETS as Linux's would.
            let mask = u8::from(std::io::stdin().is_terminal())
                | u8::from(std::io::stdout().is_terminal()) << 1
                | u8::from(std::io::stderr().is_terminal()) << 2;
            if mask != 0 {
                let word = format!("tty={mask}");
                cfg.cmdline = match cfg.cmdline.split_once("--") {
                    Some((k, rest)) => format!("{} {word} --{rest}", k.trim()).trim_start().to_string(),
                    None => format!("{} {word}", cfg.cmdline).trim_start().to_string(),
                };
            }
        }
        if self.shell {
            use std::io::IsTerminal;
            // `tty`: the console is a terminal, so programs see one.
            let words = if std::io::stdin().is_terminal() { "shell tty" } else { "shell" };
            // Before any `--`: the words after it are init's.
            cfg.cmdline = match cfg.cmdline.split_once("--") {
                Some((k, rest)) => format!("{} {words} --{rest}", k.trim()).trim_start().to_string(),
                None => format!("{} {words}", cfg.cmdline).trim_start().to_string(),
            };
        }
        Ok(cfg)
    }

    /// Whether an init program runs (`-- PROG`, `--initrd`): its output
    /// owns stdout.
    pub fn runs_program(&self) -> bool {
        (!self.program.is_empty() || self.initrd.is_some()) && !self.shell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["vmm", "run"].iter().chain(args))?;
        let Command::Run(a) = cli.command else { panic!("not a run") };
        Ok(*a)
    }

    #[test]
    fn verify_takes_its_checks_with_or_without_equals() {
        for args in [&["--verify", "swap,lru"][..], &["--verify=swap,lru"]] {
            let a = run(args).unwrap();
            let checks = format!("{:?}", a.verify.expect("checks"));
            assert!(checks.contains("Swap") && checks.contains("Lru") && !checks.contains("Wx"), "{args:?}: {checks}");
        }
        // Without a value: every check, also before another option or
        // the program.
        for args in [&["--verify"][..], &["--verify", "--inspect", "ps"], &["--verify", "--", "prog"]] {
            let a = run(args).unwrap();
            assert!(format!("{:?}", a.verify.expect("checks")).contains("Wx"), "{args:?}");
        }
        let e = run(&["--verify", "swap,bogus"]).expect_err("refused").to_string();
        assert!(e.contains("unknown check 'bogus'"), "{e}");
    }
}
