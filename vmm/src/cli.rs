//! The command line: `vmm run [options]`.

use crate::boot::BootMode;
use crate::memory;
use crate::vm::VmConfig;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// A VMM on KVM that boots the mm-emulator guest kernel, a small x86-64
/// kernel whose memory manager works like Linux's.
#[derive(Debug, Parser)]
#[command(name = "vmm", version, about, long_about = None, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_STATUS_HELP: &str = "Exit status: the guest's own (what it wrote to port 0xf4); 1 when the VMM could not start the guest (bad input, no KVM); 2 for a command-line usage error; 124 when --timeout stopped the guest; 125 when the guest crashed (triple fault, KVM emulation failure).";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a kernel (by default the guest embedded in this binary) and
    /// relay its serial console to stdout/stdin.
    Run(RunArgs),
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

    /// How the vCPU reaches the kernel: `direct` (the VMM sets up long mode
    /// and jumps to the ELF entry) or `firmware` (the vCPU starts at the
    /// reset vector in real mode and our firmware enters long mode).
    #[arg(long, value_enum, default_value_t = BootMode::Direct)]
    pub boot: BootMode,

    /// Kernel command line. The embedded guest understands `exit=N`,
    /// `panic`, `triplefault`, `sse` and `hang`.
    #[arg(long, value_name = "STRING", default_value = "")]
    pub cmdline: String,

    /// Stop the guest after this many seconds (exit status 124).
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// The KVM device to open.
    #[arg(long, value_name = "PATH", default_value = crate::kvm::DEFAULT_KVM_DEVICE)]
    pub kvm_device: PathBuf,
}

fn parse_mem(s: &str) -> Result<u64, String> {
    memory::parse_size(s).map_err(|e| e.to_string())
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
            boot: self.boot,
            cmdline: self.cmdline.clone(),
            timeout: self.timeout,
        }
    }
}
