//! Just enough ELF64 to load static executables (the built-in programs
//! and a user's `gcc -static` / `musl-gcc -static` binaries): the
//! header's type and entry point, the PT_LOAD program headers, and where
//! the program headers themselves are (for AT_PHDR); PT_INTERP marks a
//! dynamically linked program, which this kernel cannot run. Fields are read byte-wise, so the
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
    /// Entry point (before any load bias).
    pub entry: u64,
    /// `e_type`: 2 ET_EXEC, 3 ET_DYN (a static PIE).
    pub etype: u64,
    /// File offset of the program headers.
    pub phoff: u64,
    /// Number of program headers.
    pub phnum: u64,
}

/// `PT_INTERP`: the program needs a dynamic linker.
const PT_INTERP: u32 = 3;
/// `PT_PHDR`: where the program headers are mapped.
const PT_PHDR: u32 = 6;
/// Size of one program header.
pub const PHENT: u64 = 56;

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
        let etype = u16_at(image, 16).ok_or("short header")?;
        if !(etype == 2 || etype == 3) || u16_at(image, 18) != Some(62) {
            return Err("not an x86-64 executable");
        }
        let entry = u64_at(image, 24).ok_or("short header")?;
        let phoff = u64_at(image, 32).ok_or("short header")?;
        let phnum = u16_at(image, 56).ok_or("short header")?;
        if u16_at(image, 54) != Some(PHENT) {
            return Err("unexpected program header size");
        }
        Ok(Elf { image, entry, etype, phoff, phnum })
    }

    fn ph_type(&self, i: u64) -> Option<u32> {
        u32_at(self.image, self.phoff + i * PHENT)
    }

    /// Checks every PT_LOAD of a file from outside the kernel (the
    /// initramfs): bytes inside the file, no more in the file than in
    /// memory, and the segment (moved by `bias`) inside user space below
    /// `limit`, so the loader's arithmetic cannot overflow.
    pub fn check_loads(&self, bias: u64, limit: u64) -> Result<(), &'static str> {
        for s in self.loads() {
            if s.filesz > s.memsz {
                return Err("a segment has more bytes in the file than in memory");
            }
            if s.offset.checked_add(s.filesz).is_none_or(|e| e > self.image.len() as u64) {
                return Err("a segment lies past the end of the file (truncated?)");
            }
            let end = s.vaddr.checked_add(bias).and_then(|v| v.checked_add(s.memsz));
            if end.is_none_or(|e| e > limit) {
                return Err("a segment lies outside user space");
            }
        }
        if self.loads().next().is_none() {
            return Err("no loadable segment");
        }
        Ok(())
    }

    /// Whether it asks for a dynamic linker (PT_INTERP).
    pub fn is_dynamic(&self) -> bool {
        (0..self.phnum).any(|i| self.ph_type(i) == Some(PT_INTERP))
    }

    /// The virtual address (before any load bias) where the program
    /// headers are mapped: PT_PHDR's, else inside the PT_LOAD that covers
    /// their file offset (as Linux computes AT_PHDR).
    pub fn phdr_vaddr(&self) -> Option<u64> {
        for i in 0..self.phnum {
            if self.ph_type(i) == Some(PT_PHDR) {
                return u64_at(self.image, self.phoff + i * PHENT + 16);
            }
        }
        self.loads()
            .find(|s| s.offset <= self.phoff && self.phoff + self.phnum * PHENT <= s.offset + s.filesz)
            .map(|s| s.vaddr + (self.phoff - s.offset))
    }

    /// The PT_LOAD segments (malformed headers are skipped).
    pub fn loads(&self) -> impl Iterator<Item = Segment> + '_ {
        (0..self.phnum).filter_map(move |i| {
            let h = self.phoff + i * PHENT;
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
