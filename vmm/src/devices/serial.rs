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

    /// Queues host input for the guest; returns how many bytes fit.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}
