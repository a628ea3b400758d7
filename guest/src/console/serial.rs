//! A polled 16550 UART driver for COM1.

use crate::arch::{inb, outb};

use mm_core::abi::port::COM1;
const LSR: u16 = 5;
const LSR_DATA_READY: u8 = 1;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Bounded wait for the transmitter: a UART that never drains must not
/// hang the kernel.
const MAX_POLLS: u32 = 100_000;

/// COM1 as a `core::fmt::Write` sink.
pub struct Com1;

impl Com1 {
    fn put(b: u8) {
        let mut polls = 0;
        while inb(COM1 + LSR) & LSR_THR_EMPTY == 0 && polls < MAX_POLLS {
            polls += 1;
        }
        outb(COM1, b);
    }
}

/// Waits for one received byte (polling the line-status register).
pub fn read_byte() -> u8 {
    while inb(COM1 + LSR) & LSR_DATA_READY == 0 {
        core::hint::spin_loop();
    }
    inb(COM1)
}

impl core::fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Self::put(b'\r');
            }
            Self::put(b);
        }
        Ok(())
    }
}
