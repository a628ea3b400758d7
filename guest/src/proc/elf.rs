//! Just enough ELF64 to load the user programs: the header's entry point
//! and the PT_LOAD program headers. Fields are read byte-wise, so the
//! embedded image needs no particular alignment.

/// A loadable segment.
#[derive(Clone, Copy)]
pub struct Segment {
    /// File offset of the segment's bytes.
    pub offset: u64,
    /// Virtual address.
    pub vaddr: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is bss).
    pub memsz: u64,
    /// PF_X = 1, PF_W = 2, PF_R = 4.
    pub flags: u32,
}

/// A parsed executable.
pub struct Elf<'a> {
    image: &'a [u8],
    /// Entry point.
    pub entry: u64,
    phoff: u64,
    phnum: u64,
}

fn u16_at(b: &[u8], at: u64) -> Option<u64> {
    let s = b.get(at as usize..at as usize + 2)?;
    Some(u16::from_le_bytes([s[0], s[1]]) as u64)
}

fn u32_at(b: &[u8], at: u64) -> Option<u32> {
    let s = b.get(at as usize..at as usize + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: u64) -> Option<u64> {
    let s = b.get(at as usize..at as usize + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

impl<'a> Elf<'a> {
    /// Checks the header: 64-bit little-endian x86-64 executable.
    pub fn parse(image: &'a [u8]) -> Result<Elf<'a>, &'static str> {
        if image.get(..4) != Some(b"\x7fELF") || image.get(4) != Some(&2) || image.get(5) != Some(&1) {
            return Err("not a 64-bit little-endian ELF");
        }
        if u16_at(image, 16) != Some(2) || u16_at(image, 18) != Some(62) {
            return Err("not an x86-64 executable");
        }
        let entry = u64_at(image, 24).ok_or("short header")?;
        let phoff = u64_at(image, 32).ok_or("short header")?;
        let phnum = u16_at(image, 56).ok_or("short header")?;
        if u16_at(image, 54) != Some(56) {
            return Err("unexpected program header size");
        }
        Ok(Elf { image, entry, phoff, phnum })
    }

    /// The PT_LOAD segments (malformed headers are skipped).
    pub fn loads(&self) -> impl Iterator<Item = Segment> + '_ {
        (0..self.phnum).filter_map(move |i| {
            let h = self.phoff + i * 56;
            if u32_at(self.image, h)? != 1 {
                return None;
            }
            Some(Segment {
                flags: u32_at(self.image, h + 4)?,
                offset: u64_at(self.image, h + 8)?,
                vaddr: u64_at(self.image, h + 16)?,
                filesz: u64_at(self.image, h + 32)?,
                memsz: u64_at(self.image, h + 40)?,
            })
        })
    }
}
