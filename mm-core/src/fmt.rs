//! Decimal number formatting that does not go through core's integer
//! `Display`.
//!
//! This module owns every decimal number the /proc-style reports print
//! (buddyinfo, slabinfo, vmallocinfo, fragmentation indices). The
//! precompiled `core` formats integers with SSE instructions that kill a
//! ring-0 guest under KVM's instruction emulator (see platform.md), and
//! `Formatter::pad` has the same problem, so digits and padding are produced
//! here with plain integer code and written one `write_char`/`write_str` at a
//! time.

use core::fmt::{self, Write};

/// Most digits a `u64` has in decimal.
const MAX_DIGITS: usize = 20;

/// Writes `v` in decimal, right-aligned in `width` columns (no padding when
/// the number is wider).
pub fn write_dec<W: Write + ?Sized>(w: &mut W, v: u64, width: usize) -> fmt::Result {
    let mut digits = [0u8; MAX_DIGITS];
    let mut n = 0;
    let mut rest = v;
    loop {
        digits[n] = b'0' + (rest % 10) as u8;
        n += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    write_spaces(w, width.saturating_sub(n))?;
    while n > 0 {
        n -= 1;
        w.write_char(char::from(digits[n]))?;
    }
    Ok(())
}

/// Writes a signed `v` in decimal, right-aligned in `width` columns.
pub fn write_dec_signed<W: Write + ?Sized>(w: &mut W, v: i64, width: usize) -> fmt::Result {
    let digits = count_digits(v.unsigned_abs());
    let len = digits + usize::from(v < 0);
    write_spaces(w, width.saturating_sub(len))?;
    if v < 0 {
        w.write_char('-')?;
    }
    write_dec(w, v.unsigned_abs(), 0)
}

/// Writes a value given in thousandths as `I.FFF` (Linux prints its
/// fragmentation indices this way: `-1.000`, `0.734`).
pub fn write_milli<W: Write + ?Sized>(w: &mut W, thousandths: i64) -> fmt::Result {
    if thousandths < 0 {
        w.write_char('-')?;
    }
    let a = thousandths.unsigned_abs();
    write_dec(w, a / 1000, 0)?;
    w.write_char('.')?;
    let frac = a % 1000;
    // Zero-padded to three digits by hand: `{:03}` would go through core.
    if frac < 100 {
        w.write_char('0')?;
    }
    if frac < 10 {
        w.write_char('0')?;
    }
    write_dec(w, frac, 0)
}

/// Writes `s` padded with spaces to `width` bytes, on the right when `left`
/// (like `%-17s`), otherwise on the left (like `%8s`). Widths count bytes:
/// the names printed here are ASCII, and counting chars would go through
/// core's SSE code.
pub fn write_padded<W: Write + ?Sized>(w: &mut W, s: &str, width: usize, left: bool) -> fmt::Result {
    let pad = width.saturating_sub(s.len());
    if !left {
        write_spaces(w, pad)?;
    }
    w.write_str(s)?;
    if left {
        write_spaces(w, pad)?;
    }
    Ok(())
}

fn write_spaces<W: Write + ?Sized>(w: &mut W, n: usize) -> fmt::Result {
    for _ in 0..n {
        w.write_char(' ')?;
    }
    Ok(())
}

fn count_digits(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// A `u64` that prints in decimal through [`write_dec`]: usable in
/// `write!(w, "{}", Dec(n))` without reaching core's integer formatting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec(pub u64);

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_dec(f, self.0, 0)
    }
}

/// A `u64` printed in decimal right-aligned in a width (like `%6lu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecW(pub u64, pub usize);

impl fmt::Display for DecW {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_dec(f, self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use proptest::prelude::*;

    fn s(f: impl FnOnce(&mut String) -> fmt::Result) -> String {
        let mut out = String::new();
        f(&mut out).unwrap();
        out
    }

    #[test]
    fn formats_edge_values() {
        assert_eq!(s(|w| write_dec(w, 0, 0)), "0");
        assert_eq!(s(|w| write_dec(w, 2500, 0)), "2500");
        assert_eq!(s(|w| write_dec(w, u64::MAX, 0)), "18446744073709551615");
        assert_eq!(s(|w| write_dec(w, 42, 6)), "    42");
        assert_eq!(s(|w| write_dec(w, 1234567, 3)), "1234567");
        assert_eq!(s(|w| write_dec_signed(w, -1000, 6)), " -1000");
        assert_eq!(s(|w| write_dec_signed(w, i64::MIN, 0)), "-9223372036854775808");
        assert_eq!(s(|w| write_milli(w, -1000)), "-1.000");
        assert_eq!(s(|w| write_milli(w, 734)), "0.734");
        assert_eq!(s(|w| write_milli(w, 5)), "0.005");
        assert_eq!(s(|w| write_milli(w, 1000)), "1.000");
        assert_eq!(s(|w| write_padded(w, "DMA", 8, false)), "     DMA");
        assert_eq!(s(|w| write_padded(w, "kmalloc-8", 12, true)), "kmalloc-8   ");
        assert_eq!(alloc::format!("{}|{}", Dec(7), DecW(7, 3)), "7|  7");
    }

    proptest! {
        #[test]
        fn matches_core(v: u64, i: i64, width in 0usize..25) {
            // The host's core formatting is the reference; the guest never uses it.
            prop_assert_eq!(s(|w| write_dec(w, v, width)), std::format!("{:>width$}", v, width = width));
            prop_assert_eq!(s(|w| write_dec_signed(w, i, width)), std::format!("{:>width$}", i, width = width));
        }
    }
}
