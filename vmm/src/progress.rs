//! A progress line for long runs (a large `--mem` booting, long
//! self-tests): an indicatif spinner on stderr with what the guest has
//! done so far (memory manager up or not, self-test checks reported and
//! failed) and the time.
//!
//! Shown only when stderr is a terminal and the guest's console does not
//! write to that same terminal (stdout redirected, or `--console FILE`):
//! a spinner redrawn between console lines would garble them. Piped, it
//! draws nothing (indicatif's terminal check).

use crate::inspect::GuestLink;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The running spinner; [`Progress::finish`] clears it.
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Whether a progress line may be drawn: stderr is a terminal the console
/// does not share.
pub fn wanted(console_on_stdout: bool, console_on_stderr: bool) -> bool {
    let err = std::io::stderr().is_terminal();
    err && !console_on_stderr && !(console_on_stdout && std::io::stdout().is_terminal())
}

impl Progress {
    /// Starts the spinner (a thread redrawing it ten times a second).
    pub fn start(link: GuestLink, selftests: Arc<[AtomicU64; 2]>) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                while !d.load(Ordering::Acquire) {
                    let msg = if link.descriptor.get().is_none() {
                        "booting: the guest's memory manager is not up yet".to_string()
                    } else {
                        let (n, failed) = (selftests[0].load(Ordering::Relaxed), selftests[1].load(Ordering::Relaxed));
                        format!("running: the memory manager is up; {n} self-test checks reported ({failed} failed)")
                    };
                    bar.set_message(msg);
                    bar.tick();
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
            .ok();
        Progress { done, thread }
    }

    /// Stops and clears the spinner.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A counted progress bar for long loops (the benchmarks' runs): drawn on
/// stderr only when stderr is a terminal, hidden (nothing written at all)
/// when it is piped or redirected, so logs and CI output stay clean.
pub struct Steps(ProgressBar);

impl Steps {
    /// A bar for `total` steps of `what`.
    pub fn new(what: &str, total: u64) -> Steps {
        Steps::with_target(what, total, std::io::stderr().is_terminal())
    }

    /// A bar drawn or not, as `draw` says (tests use it to check the
    /// hidden case writes nothing).
    pub fn with_target(what: &str, total: u64, draw: bool) -> Steps {
        let target = if draw { ProgressDrawTarget::stderr_with_hz(10) } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} [{elapsed_precise}, ~{eta} left]")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        Steps(bar)
    }

    /// One step done.
    pub fn inc(&self) {
        self.0.inc(1);
    }

    /// What the current step is.
    pub fn set_message(&self, msg: impl Into<String>) {
        self.0.set_message(msg.into());
    }

    /// Runs `f` with the bar cleared (for lines printed mid-loop).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.0.suspend(f)
    }

    /// Whether the bar draws anything.
    pub fn is_hidden(&self) -> bool {
        self.0.is_hidden()
    }

    /// Clears the bar.
    pub fn finish(self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_on_no_terminal_is_hidden() {
        let s = Steps::with_target("runs", 3, false);
        assert!(s.is_hidden());
        s.inc();
        s.finish();
        // Under `cargo test` stderr is captured, not a terminal.
        if !std::io::stderr().is_terminal() {
            assert!(Steps::new("runs", 3).is_hidden(), "piped stderr: no bar");
        }
    }
}
