//! COM1: vm-superio's 16550 model, its output on a host writer (stdout by
//! default), its input fed from the host's stdin by the event loop.

use std::io::Write;
use std::sync::{Arc, Mutex};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// The UART's interrupt line. No interrupt controller is wired yet (the
/// kernel polls), so this eventfd is signalled and never read.
pub struct IrqLine(EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// A byte sink shared with a test.
pub type Captured = Arc<Mutex<Vec<u8>>>;

struct CaptureWriter(Captured);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// COM1.
pub struct SerialConsole {
    uart: Serial<IrqLine, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
}

impl SerialConsole {
    /// A UART whose output goes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let irq = IrqLine(EventFd::new(libc::EFD_NONBLOCK)?);
        Ok(SerialConsole { uart: Serial::new(irq, out) })
    }

    /// A UART writing to stdout.
    pub fn stdout() -> std::io::Result<Self> {
        Self::new(Box::new(std::io::stdout()))
    }

    /// A UART whose output is captured in memory (tests, benchmarks).
    pub fn captured() -> (Self, Captured) {
        let buf: Captured = Arc::default();
        let s = Self::new(Box::new(CaptureWriter(buf.clone()))).expect("eventfd");
        (s, buf)
    }

    /// A register write. Output errors (a closed stdout) are dropped: the
    /// guest must not die because nobody reads its console.
    pub fn write(&mut self, offset: u16, value: u8) {
        let _ = self.uart.write(offset as u8, value);
    }

    /// A register read.
    pub fn read(&mut self, offset: u16) -> u8 {
        self.uart.read(offset as u8)
    }

    /// Bytes the receive FIFO can take now.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Queues host input for the guest; returns how many bytes fit.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

/// Whether this process put its terminal in raw mode (so exactly one
/// restore undoes it, whichever exit path comes first).
static RAW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The host terminal in raw mode while the guest's interactive shell is
/// attached (`vmm run --shell` on a terminal): keys go to the guest as
/// typed (no line editing, echo or Ctrl-C by the host's tty; the guest
/// echoes and edits), output processing stays on. Dropping it restores
/// the terminal: every return from the run, an error included, and a
/// panic's unwinding; the Ctrl-A x escape restores it before it exits.
/// Not a terminal (a pipe, a file): nothing changes.
pub struct RawTerminal(());

impl RawTerminal {
    /// Puts stdin's terminal in raw mode if stdin is one.
    pub fn enter() -> RawTerminal {
        use std::io::IsTerminal;
        use vmm_sys_util::terminal::Terminal;
        if std::io::stdin().is_terminal() && std::io::stdin().lock().set_raw_mode().is_ok() {
            RAW.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        RawTerminal(())
    }

    /// Whether the terminal is in raw mode now (the Ctrl-A escape applies).
    pub fn active() -> bool {
        RAW.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Gives the terminal its line discipline back if this process took it
/// (idempotent).
pub fn restore_terminal() {
    use vmm_sys_util::terminal::Terminal;
    if RAW.swap(false, std::sync::atomic::Ordering::SeqCst) {
        let _ = std::io::stdin().lock().set_canon_mode();
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Bytes of host input kept while the guest's receive FIFO is full
/// (beyond this, input is dropped, as a UART overruns).
pub const INPUT_BACKLOG: usize = 16 << 20;

/// Host input on its way to the UART: what the FIFO (16 bytes deep in a
/// 16550, 64 in vm-superio) cannot take yet waits here, so a script piped
/// into the console is not cut short by a guest that reads slowly; and
/// QEMU's escape on a raw terminal: Ctrl-A x quits, Ctrl-A a sends a
/// Ctrl-A.
#[derive(Default)]
pub struct InputQueue {
    pending: std::collections::VecDeque<u8>,
    ctrl_a: bool,
    warned: bool,
}

/// What host input asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum InputAction {
    /// Nothing special.
    None,
    /// Ctrl-A x: quit.
    Quit,
}

impl InputQueue {
    /// Takes `bytes` read from the host; `escape`: the Ctrl-A escape is on.
    pub fn push(&mut self, bytes: &[u8], escape: bool) -> InputAction {
        for &b in bytes {
            if escape && self.ctrl_a {
                self.ctrl_a = false;
                match b {
                    b'x' | b'X' => return InputAction::Quit,
                    b'a' => self.put(0x01),
                    _ => {}
                }
                continue;
            }
            if escape && b == 0x01 {
                self.ctrl_a = true;
                continue;
            }
            self.put(b);
        }
        InputAction::None
    }

    fn put(&mut self, b: u8) {
        if self.pending.len() >= INPUT_BACKLOG {
            if !self.warned {
                eprintln!("vmm: console input backlog full ({INPUT_BACKLOG} bytes): dropping input");
                self.warned = true;
            }
            return;
        }
        self.pending.push_back(b);
    }

    /// Whether bytes wait for room in the FIFO.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Moves what fits into `serial`'s receive FIFO.
    pub fn flush(&mut self, serial: &mut SerialConsole) {
        while !self.pending.is_empty() {
            let (a, _) = self.pending.as_slices();
            let n = serial.enqueue_input(&a[..a.len().min(64)]);
            if n == 0 {
                break;
            }
            self.pending.drain(..n);
        }
    }
}
