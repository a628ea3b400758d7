//! Symbol names for addresses, from the VMM (a paravirtual kallsyms): the
//! kernel writes an address to the symbol port and reads back
//! `name+0xoff`. The kernel then carries no symbol table of its own, and
//! its oops read like Linux's. On a machine without the port (QEMU) the
//! reads return 0xff and the name is `?`.

use crate::arch::{inb, outl};

// Write the address's low 32 bits to SYMBOL and its high 32 bits to
// SYMBOL_HIGH (which triggers the lookup); read the name back at SYMBOL.
use mm_core::abi::port::{SYMBOL as SYMBOL_PORT, SYMBOL_HIGH as SYMBOL_PORT_HIGH};

/// Displays as `<name+0xoff>`.
pub struct Symbol(pub u64);

impl core::fmt::Display for Symbol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        outl(SYMBOL_PORT, self.0 as u32);
        outl(SYMBOL_PORT_HIGH, (self.0 >> 32) as u32);
        let mut buf = [0u8; 128];
        let mut n = 0;
        while n < buf.len() {
            match inb(SYMBOL_PORT) {
                0 | 0xff => break,
                b => buf[n] = b,
            }
            n += 1;
        }
        let name = core::str::from_utf8(&buf[..n]).unwrap_or("?");
        f.write_str("<")?;
        f.write_str(if name.is_empty() { "?" } else { name })?;
        f.write_str(">")
    }
}
