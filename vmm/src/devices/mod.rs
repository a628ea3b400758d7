//! The guest's devices, all on the x86 I/O-port bus: COM1 (vm-superio's
//! 16550) and the exit port. Anything else reads as absent (0xff) and
//! ignores writes, as an empty ISA bus does.

pub mod serial;

use serial::SerialConsole;
use std::sync::{Arc, Mutex};

/// COM1's base port.
pub const COM1: u16 = 0x3f8;
/// The exit port: a write ends the VM with that value as exit status.
pub const EXIT_PORT: u16 = 0xf4;

/// What a port access asks of the VMM.
#[derive(Debug, PartialEq, Eq)]
pub enum PortAction {
    /// Keep running.
    Continue,
    /// The guest asked to exit with this status.
    Exit(u32),
}

/// The I/O-port bus.
pub struct PortBus {
    /// COM1, shared with the stdin reader.
    pub serial: Arc<Mutex<SerialConsole>>,
}

impl PortBus {
    /// A guest `out` to `port`.
    pub fn write(&mut self, port: u16, data: &[u8]) -> PortAction {
        match port {
            EXIT_PORT => {
                let mut v = [0u8; 4];
                let n = data.len().min(4);
                v[..n].copy_from_slice(&data[..n]);
                PortAction::Exit(u32::from_le_bytes(v))
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
        (PortBus { serial: Arc::new(Mutex::new(console)) }, out)
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
    fn absent_ports_read_ff() {
        let (mut b, _) = bus();
        let mut d = [0u8; 2];
        b.read(0x2f8, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        assert_eq!(b.write(0x80, &[1]), PortAction::Continue);
    }
}
