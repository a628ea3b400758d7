//! The guest's devices, all on the x86 I/O-port bus: COM1 (vm-superio's
//! 16550), the exit port, the symbol port (a paravirtual kallsyms) and the
//! self-test results channel. Anything else reads as absent (0xff) and
//! ignores writes, as an empty ISA bus does.
//!
//! The bus only decodes: what a port write asks of the VMM beyond the
//! device itself (exit, a checkpoint, the descriptor's address) comes back
//! as a [`PortAction`] for the vCPU run loop, which owns what happens next
//! (the park hooks, the link to inspection).

pub mod results;
pub mod serial;
pub mod virtio;

use crate::symbols::Symbols;
use results::ResultsChannel;
use serial::SerialConsole;
use std::sync::{Arc, Mutex};

// The ports, as mm-core's ABI defines them for the guest too: COM1's base;
// the exit port (a write ends the VM with that value as exit status); the
// symbol port (`outl` the low half of an address here, then the high half
// to `SYMBOL_PORT + 4`; `inb` here then yields `name+0xoff`, NUL-ended);
// self-test results (text lines, one record each); the checkpoint port (a
// name's bytes, then a NUL; the vCPU stays parked in that last exit while
// the host inspects: the run loop's park hooks run on
// `PortAction::Checkpoint`); the descriptor ports (the guest's
// memory-manager descriptor's guest-physical address, low 32 bits then
// high 32 bits, which publishes it).
pub use mm_core::abi::port::{
    CHECKPOINT as CHECKPOINT_PORT, COM1, DESCRIPTOR as DESCRIPTOR_PORT, DESCRIPTOR_HIGH as DESCRIPTOR_PORT_HIGH,
    EXIT as EXIT_PORT, RESULTS as RESULTS_PORT, SYMBOL as SYMBOL_PORT, USER_OUTPUT_PRESENT, USER_STDERR, USER_STDOUT,
};
/// Longest checkpoint name kept; further bytes are dropped.
pub const CHECKPOINT_NAME_MAX: usize = 256;

/// What a port access asks of the VMM.
#[derive(Debug, PartialEq, Eq)]
pub enum PortAction {
    /// Keep running.
    Continue,
    /// The guest asked to exit with this status.
    Exit(u32),
    /// The guest completed a checkpoint's name: park the vCPU in this exit
    /// and run the checkpoint hooks before the next `KVM_RUN`.
    Checkpoint(String),
    /// The guest published its memory-manager descriptor at this
    /// guest-physical address.
    Descriptor(u64),
}

/// The I/O-port bus.
pub struct PortBus {
    /// COM1, shared with the stdin reader.
    pub serial: Arc<Mutex<SerialConsole>>,
    symbols: Arc<Symbols>,
    symbol_addr: u64,
    symbol_reply: Vec<u8>,
    symbol_pos: usize,
    /// Self-test records received so far.
    pub results: ResultsChannel,
    checkpoint_name: Vec<u8>,
    /// Bytes of the current checkpoint name past [`CHECKPOINT_NAME_MAX`].
    checkpoint_dropped: usize,
    descriptor_low: u32,
    /// The MMIO devices (virtio), reached through the vCPU's MMIO exits.
    pub mmio: virtio::MmioBus,
    /// Where user programs' standard output goes (port `USER_STDOUT`):
    /// the VMM's stdout unless replaced.
    pub user_stdout: Box<dyn std::io::Write + Send>,
    /// Where their standard error goes (port `USER_STDERR`).
    pub user_stderr: Box<dyn std::io::Write + Send>,
}

impl PortBus {
    /// A bus with COM1 and the guest's symbols for the symbol port.
    pub fn new(serial: Arc<Mutex<SerialConsole>>, symbols: Arc<Symbols>) -> Self {
        PortBus {
            serial,
            symbols,
            symbol_addr: 0,
            symbol_reply: Vec::new(),
            symbol_pos: 0,
            results: ResultsChannel::default(),
            checkpoint_name: Vec::new(),
            checkpoint_dropped: 0,
            descriptor_low: 0,
            mmio: virtio::MmioBus::default(),
            user_stdout: Box::new(std::io::stdout()),
            user_stderr: Box::new(std::io::stderr()),
        }
    }

    fn u32_of(data: &[u8]) -> u32 {
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        u32::from_le_bytes(v)
    }

    /// A guest `out` to `port`.
    pub fn write(&mut self, port: u16, data: &[u8]) -> PortAction {
        match port {
            EXIT_PORT => PortAction::Exit(Self::u32_of(data)),
            SYMBOL_PORT => {
                self.symbol_addr = (self.symbol_addr & !0xffff_ffff) | Self::u32_of(data) as u64;
                PortAction::Continue
            }
            p if p == SYMBOL_PORT + 4 => {
                self.symbol_addr = (self.symbol_addr & 0xffff_ffff) | (Self::u32_of(data) as u64) << 32;
                self.symbol_reply = self.symbols.describe(self.symbol_addr).into_bytes();
                self.symbol_pos = 0;
                PortAction::Continue
            }
            RESULTS_PORT => {
                self.results.push_bytes(data);
                PortAction::Continue
            }
            DESCRIPTOR_PORT => {
                self.descriptor_low = Self::u32_of(data);
                PortAction::Continue
            }
            DESCRIPTOR_PORT_HIGH => {
                PortAction::Descriptor((Self::u32_of(data) as u64) << 32 | self.descriptor_low as u64)
            }
            CHECKPOINT_PORT => match data.first() {
                Some(0) => {
                    let name = String::from_utf8_lossy(&self.checkpoint_name).into_owned();
                    self.checkpoint_name.clear();
                    if self.checkpoint_dropped > 0 {
                        // The cap protects the host from a guest that never
                        // ends a name; say so rather than cut silently.
                        eprintln!(
                            "vmm: note: a checkpoint name was cut at {CHECKPOINT_NAME_MAX} bytes ({} more dropped)",
                            self.checkpoint_dropped
                        );
                        self.checkpoint_dropped = 0;
                    }
                    PortAction::Checkpoint(name)
                }
                Some(&b) => {
                    if self.checkpoint_name.len() < CHECKPOINT_NAME_MAX {
                        self.checkpoint_name.push(b);
                    } else {
                        self.checkpoint_dropped += 1;
                    }
                    PortAction::Continue
                }
                None => PortAction::Continue,
            },
            USER_STDOUT | USER_STDERR => {
                // A host stream that fails (a closed pipe) loses the
                // program's output, as a write to a hung-up terminal
                // would; the guest goes on.
                let sink = if port == USER_STDOUT { &mut self.user_stdout } else { &mut self.user_stderr };
                use std::io::Write as _;
                let _ = sink.write_all(data).and_then(|_| sink.flush());
                PortAction::Continue
            }
            p if (COM1..COM1 + 8).contains(&p) => {
                if let (Some(&b), Ok(mut s)) = (data.first(), self.serial.lock()) {
                    s.write(p - COM1, b);
                }
                PortAction::Continue
            }
            _ => PortAction::Continue,
        }
    }

    /// A guest `in` from `port`.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        if port == SYMBOL_PORT {
            let b = self.symbol_reply.get(self.symbol_pos).copied().unwrap_or(0);
            self.symbol_pos += 1;
            data[0] = b;
            return;
        }
        if port == USER_STDOUT {
            data[0] = USER_OUTPUT_PRESENT;
            return;
        }
        if (COM1..COM1 + 8).contains(&port) {
            if let (Some(b), Ok(mut s)) = (data.first_mut(), self.serial.lock()) {
                *b = s.read(port - COM1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> (PortBus, serial::Captured) {
        let (console, out) = SerialConsole::captured();
        (PortBus::new(Arc::new(Mutex::new(console)), Arc::default()), out)
    }

    #[test]
    fn exit_port_takes_any_width() {
        let (mut b, _) = bus();
        assert_eq!(b.write(EXIT_PORT, &[7]), PortAction::Exit(7));
        assert_eq!(b.write(EXIT_PORT, &300u32.to_le_bytes()), PortAction::Exit(300));
    }

    #[test]
    fn serial_output_reaches_the_sink_and_lsr_says_empty() {
        let (mut b, out) = bus();
        for &c in b"hi" {
            assert_eq!(b.write(COM1, &[c]), PortAction::Continue);
        }
        assert_eq!(out.lock().unwrap().as_slice(), b"hi");
        let mut lsr = [0u8];
        b.read(COM1 + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter empty");
    }

    #[test]
    fn symbol_port_names_addresses() {
        let (mut b, _) = bus();
        let mut one = [0u8];
        b.write(SYMBOL_PORT, &0x1234u32.to_le_bytes());
        b.write(SYMBOL_PORT + 4, &0u32.to_le_bytes());
        b.read(SYMBOL_PORT, &mut one);
        assert_eq!(one[0], b'?', "no symbols: '?'");
        b.read(SYMBOL_PORT, &mut one);
        assert_eq!(one[0], 0, "then the NUL");
    }

    #[test]
    fn checkpoint_names_complete_at_the_nul() {
        let (mut b, _) = bus();
        for &c in b"boot" {
            assert_eq!(b.write(CHECKPOINT_PORT, &[c]), PortAction::Continue);
        }
        assert_eq!(b.write(CHECKPOINT_PORT, &[0]), PortAction::Checkpoint("boot".into()));
        assert_eq!(b.write(CHECKPOINT_PORT, &[0]), PortAction::Checkpoint(String::new()), "the name was taken");
        for _ in 0..1000 {
            b.write(CHECKPOINT_PORT, b"x");
        }
        assert_eq!(b.checkpoint_dropped, 1000 - CHECKPOINT_NAME_MAX);
        match b.write(CHECKPOINT_PORT, &[0]) {
            PortAction::Checkpoint(n) => assert_eq!(n.len(), CHECKPOINT_NAME_MAX),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.checkpoint_dropped, 0, "the count restarts with the next name");
    }

    #[test]
    fn descriptor_address_is_published_by_the_high_half() {
        let (mut b, _) = bus();
        assert_eq!(
            b.write(DESCRIPTOR_PORT, &0x1234_5000u32.to_le_bytes()),
            PortAction::Continue,
            "the low half alone publishes nothing"
        );
        assert_eq!(b.write(DESCRIPTOR_PORT_HIGH, &1u32.to_le_bytes()), PortAction::Descriptor(0x1_1234_5000));
    }

    #[test]
    fn absent_ports_read_ff() {
        let (mut b, _) = bus();
        let mut d = [0u8; 2];
        b.read(0x2f8, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        assert_eq!(b.write(0x80, &[1]), PortAction::Continue);
    }
}
