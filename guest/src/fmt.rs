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

/// [`Dec`] right-aligned in a field of `.1` columns (Linux's `%8lu`):
/// core's width padding is not used in the kernel, so the spaces are
/// written here.
pub struct DecPad(pub u64, pub usize);

impl core::fmt::Display for DecPad {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut digits = 1;
        let mut v = self.0;
        while v >= 10 {
            v /= 10;
            digits += 1;
        }
        for _ in digits..self.1 {
            f.write_str(" ")?;
        }
        core::fmt::Display::fmt(&Dec(self.0), f)
    }
}

/// A signed integer in decimal without core's integer code.
pub struct DecI64(pub i64);

impl core::fmt::Display for DecI64 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 < 0 {
            f.write_str("-")?;
        }
        core::fmt::Display::fmt(&Dec(self.0.unsigned_abs()), f)
    }
}

/// Parses [`parse_u64`]'s numbers with an optional leading `-`.
pub fn parse_i64(s: &str) -> Option<i64> {
    let (neg, digits) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
    let v = i64::try_from(parse_u64(digits)?).ok()?;
    Some(if neg { -v } else { v })
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

/// A fixed-capacity string for formatting without a heap (oops paths).
pub struct StackString<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackString<N> {
    /// Empty.
    pub const fn new() -> Self {
        StackString { buf: [0; N], len: 0 }
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl<const N: usize> core::fmt::Write for StackString<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // Truncate at a char boundary rather than fail.
        let mut take = s.len().min(N - self.len);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

impl<const N: usize> core::ops::Deref for StackString<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}
