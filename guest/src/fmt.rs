//! Decimal formatting done by the kernel itself: core's integer `Display`
//! uses SSE in its digit loop, which KVM's emulator cannot run (platform.md).

/// Displays an unsigned integer in decimal without core's integer code.
pub struct Dec(pub u64);

impl core::fmt::Display for Dec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut v = self.0;
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        // The digits are ASCII, so this cannot fail.
        f.write_str(core::str::from_utf8(&buf[i..]).unwrap_or("?"))
    }
}

/// Parses a decimal (or 0x-prefixed hexadecimal) unsigned integer.
pub fn parse_u64(s: &str) -> Option<u64> {
    let (digits, radix) = match s.strip_prefix("0x") {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for c in digits.bytes() {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' if radix == 16 => c - b'a' + 10,
            b'A'..=b'F' if radix == 16 => c - b'A' + 10,
            _ => return None,
        } as u64;
        v = v.checked_mul(radix)?.checked_add(d)?;
    }
    Some(v)
}
