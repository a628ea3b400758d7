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
const EXIT_VERIFY: u8 = 3;

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
            let console = SerialConsole::stdout().map_err(VmError::Serial)?;
            Vm::new(&args.config(), console)?.run()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = run(cli);
    let _ = std::io::stdout().flush();
    match outcome {
        Ok(Outcome::Exited(code)) => {
            if code != 0 {
                eprintln!("vmm: the guest exited with status {code}");
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
            match e {
                VmError::Inspect(vmm::inspect::checkpoint::InspectError::Violation { .. }) => {
                    ExitCode::from(EXIT_VERIFY)
                }
                _ => ExitCode::from(EXIT_VMM_ERROR),
            }
        }
    }
}
