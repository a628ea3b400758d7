//! Just enough ELF64 to load static executables (the built-in programs
//! and a user's `gcc -static` / `musl-gcc -static` binaries): the
//! header's type and entry point, the PT_LOAD program headers, and where
//! the program headers themselves are (for AT_PHDR); PT_INTERP marks a
//! dynamically linked program, which this kernel cannot run. Fields are read byte-wise, so the
//! embedded image needs no particular alignment.
//!
//! The guest runs this on files from the user's initramfs, so every offset
//! and count in a header is hostile: all arithmetic on them is checked (a
//! header that points past the end of the address space reads as absent),
//! and the fuzz target `mm-core/fuzz/fuzz_targets/elf.rs` holds it to that.

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

/// `b[at..at + N]`, or `None` when any of it lies outside `b` (an `at`
/// near `u64::MAX` included).
fn bytes_at<const N: usize>(b: &[u8], at: u64) -> Option<[u8; N]> {
    let at = usize::try_from(at).ok()?;
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u16_at(b: &[u8], at: u64) -> Option<u64> {
    let s = bytes_at::<2>(b, at)?;
    Some(u16::from_le_bytes([s[0], s[1]]) as u64)
}

fn u32_at(b: &[u8], at: u64) -> Option<u32> {
    let s = bytes_at::<4>(b, at)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: u64) -> Option<u64> {
    bytes_at::<8>(b, at).map(u64::from_le_bytes)
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

    /// File offset of program header `i`; `None` past the address space
    /// (a hostile `e_phoff`).
    fn ph_at(&self, i: u64) -> Option<u64> {
        self.phoff.checked_add(i * PHENT)
    }

    fn ph_type(&self, i: u64) -> Option<u32> {
        u32_at(self.image, self.ph_at(i)?)
    }

    /// Checks every PT_LOAD of a file from outside the kernel (the
    /// initramfs): bytes inside the file, no more in the file than in
    /// memory, and the segment (moved by `bias`) inside user space below
    /// `limit`, so the loader's arithmetic cannot overflow.
    ///
    /// `file_size` is the file's length: exec parses the headers alone
    /// (read through the page cache, as Linux's `bprm->buf`) and maps the
    /// segments from the cache, so the image may be shorter than the file.
    pub fn check_loads(&self, bias: u64, limit: u64, file_size: u64) -> Result<(), &'static str> {
        for s in self.loads() {
            if s.filesz > s.memsz {
                return Err("a segment has more bytes in the file than in memory");
            }
            if s.offset.checked_add(s.filesz).is_none_or(|e| e > file_size) {
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

    /// One past the program headers' last byte in the file (how much of
    /// the file exec must read to see them all); `None` when a hostile
    /// `e_phoff` puts them past the address space.
    pub fn ph_end(&self) -> Option<u64> {
        self.ph_at(self.phnum)
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
                return u64_at(self.image, self.ph_at(i)?.checked_add(16)?);
            }
        }
        let end = self.ph_at(self.phnum)?;
        self.loads()
            .find(|s| s.offset <= self.phoff && s.offset.checked_add(s.filesz).is_some_and(|e| end <= e))
            .and_then(|s| s.vaddr.checked_add(self.phoff - s.offset))
    }

    /// [`phdr_vaddr`](Self::phdr_vaddr) moved by the load `bias` (AT_PHDR);
    /// `None` when that leaves the address space (a PT_PHDR's address is
    /// not checked by [`check_loads`](Self::check_loads)).
    pub fn phdr_vaddr_biased(&self, bias: u64) -> Option<u64> {
        self.phdr_vaddr()?.checked_add(bias)
    }

    /// The PT_LOAD segments (malformed headers are skipped).
    pub fn loads(&self) -> impl Iterator<Item = Segment> + '_ {
        (0..self.phnum).filter_map(move |i| {
            let h = self.ph_at(i)?;
            if u32_at(self.image, h)? != 1 {
                return None;
            }
            Some(Segment {
                flags: u32_at(self.image, h.checked_add(4)?)?,
                offset: u64_at(self.image, h.checked_add(8)?)?,
                vaddr: u64_at(self.image, h.checked_add(16)?)?,
                filesz: u64_at(self.image, h.checked_add(32)?)?,
                memsz: u64_at(self.image, h.checked_add(40)?)?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// An ELF header (type `etype`, x86-64) with `phnum` program headers
    /// at `phoff`, and room for them when they fall inside `len` bytes.
    fn header(etype: u16, phoff: u64, phnum: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len.max(64)];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&etype.to_le_bytes());
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[24..32].copy_from_slice(&0x401000u64.to_le_bytes());
        b[32..40].copy_from_slice(&phoff.to_le_bytes());
        b[54..56].copy_from_slice(&(PHENT as u16).to_le_bytes());
        b[56..58].copy_from_slice(&phnum.to_le_bytes());
        b
    }

    fn phdr(b: &mut [u8], at: usize, kind: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) {
        b[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&5u32.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
        b[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
        b[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
        b[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
    }

    #[test]
    fn a_static_executable_parses() {
        let mut b = header(2, 64, 1, 64 + PHENT as usize);
        phdr(&mut b, 64, 1, 0, 0x400000, 64 + PHENT, 0x2000);
        let e = Elf::parse(&b).unwrap();
        assert_eq!((e.entry, e.phnum), (0x401000, 1));
        assert!(!e.is_dynamic());
        e.check_loads(0, 0x7fff_ffff_f000, b.len() as u64).unwrap();
        assert_eq!(e.ph_end(), Some(64 + PHENT));
        assert_eq!(e.phdr_vaddr(), Some(0x400040));
        assert_eq!(e.phdr_vaddr_biased(0x1000), Some(0x401040));
        assert_eq!(e.loads().count(), 1);
    }

    /// Found by the `elf` fuzz target (reproducer in
    /// mm-core/fuzz/corpus/elf/phoff-near-u64-max): an `e_phoff` near
    /// `u64::MAX` overflowed the header arithmetic (a panic with overflow
    /// checks, a read of a wrapped-around offset without).
    #[test]
    fn program_headers_past_the_address_space_read_as_absent() {
        for phoff in [u64::MAX, u64::MAX - 7, u64::MAX - PHENT, u64::MAX / 2] {
            let b = header(2, phoff, 3, 64);
            let e = Elf::parse(&b).unwrap();
            assert!(!e.is_dynamic());
            assert_eq!(e.loads().count(), 0);
            assert_eq!(e.phdr_vaddr(), None);
            assert!(e.check_loads(0, u64::MAX, u64::MAX).is_err());
            assert_eq!(e.ph_end().is_none(), phoff > u64::MAX - 3 * PHENT);
        }
    }

    /// Exec parses only the headers it read: a segment may lie past the
    /// image (the rest of the file is in the page cache) but not past the
    /// file's length.
    #[test]
    fn segments_are_checked_against_the_file_not_the_image() {
        let mut b = header(2, 64, 1, 64 + PHENT as usize);
        phdr(&mut b, 64, 1, 0, 0x400000, 0x3000, 0x4000);
        let e = Elf::parse(&b).unwrap();
        e.check_loads(0, 0x7fff_ffff_f000, 0x3000).unwrap();
        assert!(e.check_loads(0, 0x7fff_ffff_f000, 0x2fff).is_err());
        assert!(e.check_loads(0, 0x7fff_ffff_f000, b.len() as u64).is_err());
    }

    /// A PT_PHDR whose address plus the load bias leaves the address
    /// space has no AT_PHDR (exec refuses the file instead of wrapping).
    #[test]
    fn a_biased_phdr_address_that_wraps_is_none() {
        let mut b = header(3, 64, 1, 64 + PHENT as usize);
        phdr(&mut b, 64, PT_PHDR, 64, u64::MAX - 8, PHENT, PHENT);
        let e = Elf::parse(&b).unwrap();
        assert_eq!(e.phdr_vaddr(), Some(u64::MAX - 8));
        assert_eq!(e.phdr_vaddr_biased(0x5555_5555_4000), None);
    }
}
