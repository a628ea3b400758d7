//! `vmm`: the command-line entry. Parses options, runs the VM, turns the
//! outcome into an exit status, and prints any error with its whole chain
//! (`vmm: a => b => c`).

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use vmm::cli::{Cli, Command};
use vmm::devices::serial::SerialConsole;
use vmm::vm::{Outcome, Vm, VmError};

const EXIT_VMM_ERROR: u8 = 1;
const EXIT_TIMEOUT: u8 = 124;
const EXIT_CRASH: u8 = 125;
const EXIT_USAGE: u8 = 2;
const EXIT_VERIFY: u8 = 3;
const EXIT_VERIFY_INCOMPLETE: u8 = 4;

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(" => ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn run(cli: Cli) -> Result<Outcome, VmError> {
    match cli.command {
        Command::Run(args) => {
            let cfg = args.config_with_initrd().map_err(|e| VmError::Boot(e.into()))?;
            // The profile's files first: a bad path fails before the boot.
            let profiler = args
                .profile_config()
                .map(|p| {
                    let initrd = cfg.initrd.as_ref().map(|i| i.bytes.as_slice());
                    vmm::profile::sampler::Profiler::open_for(p, cfg.kernel.as_deref(), initrd)
                })
                .transpose()?;
            // With the JSON on stdout the console goes elsewhere, so a
            // pipe into jq sees JSON only.
            let console_on_stdout = args.console.is_none() && !cfg.inspect.json_on_stdout() && !args.runs_program();
            let console_on_stderr = args.console.is_none() && !console_on_stdout;
            let out: Box<dyn std::io::Write + Send> = match &args.console {
                Some(path) => Box::new(std::fs::File::create(path).map_err(VmError::Serial)?),
                // A program's own output owns stdout: the kernel's log goes
                // to stderr.
                None if cfg.inspect.json_on_stdout() || args.runs_program() => Box::new(std::io::stderr()),
                None => Box::new(std::io::stdout()),
            };
            // The web view keeps the console's output for its page.
            let out = if cfg.web.is_some() { Box::new(vmm::web::ConsoleTee(out)) } else { out };
            let console = SerialConsole::new(out).map_err(VmError::Serial)?;
            // The terminal goes back to its line discipline when this
            // returns, an error included.
            let _raw = args.shell.then(vmm::devices::serial::RawTerminal::enter);
            // An interactive shell owns the terminal: no progress line.
            let progress = !args.shell && vmm::progress::wanted(console_on_stdout, console_on_stderr);
            Vm::new(&cfg, console)?.with_progress(progress).with_profiler(profiler).run()
        }
        Command::Inspect(args) => {
            match &args.gdb {
                Some(addr) => vmm::snapshot::offline::gdb(&args.file, args.kernel.as_deref(), addr)?,
                None => vmm::snapshot::offline::run(&args.file, args.kernel.as_deref(), args.config())?,
            }
            Ok(Outcome::Exited(0))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = run(cli);
    let _ = std::io::stdout().flush();
    match outcome {
        Ok(Outcome::Exited(code)) => {
            if code > 255 {
                // A process status has 8 bits: say what the guest wrote
                // rather than let it wrap.
                eprintln!(
                    "vmm: the guest exited with status {code}, which does not fit a process status; exiting with 255"
                );
            } else if code != 0 {
                eprintln!("vmm: the guest exited with status {code}{}", guest_status_meaning(code));
            }
            ExitCode::from(code.min(255) as u8)
        }
        Ok(Outcome::Crashed { headline, report }) => {
            eprintln!("vmm: {headline}\n{report}");
            ExitCode::from(EXIT_CRASH)
        }
        Ok(Outcome::Killed) => ExitCode::from(vmm::gdb::EXIT_KILLED as u8),
        Ok(Outcome::TimedOut { after, report }) => {
            eprintln!(
                "vmm: the guest was still running after {:.1} s (--timeout) and was stopped here:\n{report}",
                after.as_secs_f64()
            );
            ExitCode::from(EXIT_TIMEOUT)
        }
        Err(e) => {
            eprintln!("vmm: {}", chain(&e));
            use vmm::inspect::checkpoint::InspectError;
            match e {
                VmError::Inspect(InspectError::Violation { .. }) => ExitCode::from(EXIT_VERIFY),
                VmError::Inspect(InspectError::Incomplete { .. } | InspectError::NothingExamined { .. }) => {
                    ExitCode::from(EXIT_VERIFY_INCOMPLETE)
                }
                VmError::Inspect(InspectError::Usage { .. }) | VmError::Numa(_) => ExitCode::from(EXIT_USAGE),
                _ => ExitCode::from(EXIT_VMM_ERROR),
            }
        }
    }
}

/// What the guest kernel means by an exit status of its own (guest/src/
/// panic.rs, arch/traps.rs), for the VMM's last line.
fn guest_status_meaning(code: u32) -> &'static str {
    match code {
        101 => " (a kernel panic: its message is on the guest console above)",
        102 => " (a kernel oops: its report is on the guest console above)",
        _ => "",
    }
}
