//! The ELF core-file format of a snapshot: headers and notes as bytes,
//! written and read field by field (little-endian), so no `unsafe` and no
//! reinterpreting of memory.

/// `e_ident`'s magic.
pub const ELFMAG: &[u8; 4] = b"\x7fELF";
/// 64-bit objects.
pub const ELFCLASS64: u8 = 2;
/// Little-endian.
pub const ELFDATA2LSB: u8 = 1;
/// A core file.
pub const ET_CORE: u16 = 4;
/// AMD x86-64.
pub const EM_X86_64: u16 = 62;
/// A loadable segment.
pub const PT_LOAD: u32 = 1;
/// A note segment.
pub const PT_NOTE: u32 = 4;
/// Segment readable / writable / executable.
pub const PF_RWX: u32 = 7;
/// The ELF header's size.
pub const EHDR_SIZE: usize = 64;
/// A program header's size.
pub const PHDR_SIZE: usize = 56;
/// `NT_PRSTATUS`: a thread's general registers (`struct elf_prstatus`).
pub const NT_PRSTATUS: u32 = 1;
/// `struct elf_prstatus` on x86-64.
pub const PRSTATUS_SIZE: usize = 336;
/// Where `pr_reg` (`struct user_regs_struct`) starts in it.
pub const PRSTATUS_REG_OFFSET: usize = 112;
/// `pr_pid`'s offset.
pub const PRSTATUS_PID_OFFSET: usize = 32;

/// One program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Phdr {
    /// `p_type`.
    pub kind: u32,
    /// `p_flags`.
    pub flags: u32,
    /// `p_offset`.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_paddr`.
    pub paddr: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_align`.
    pub align: u64,
}

impl Phdr {
    /// Its bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.kind.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        for v in [self.offset, self.vaddr, self.paddr, self.filesz, self.memsz, self.align] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Decodes one from exactly [`PHDR_SIZE`] bytes.
    pub fn decode(b: &[u8]) -> Phdr {
        Phdr {
            kind: u32_at(b, 0),
            flags: u32_at(b, 4),
            offset: u64_at(b, 8),
            vaddr: u64_at(b, 16),
            paddr: u64_at(b, 24),
            filesz: u64_at(b, 32),
            memsz: u64_at(b, 40),
            align: u64_at(b, 48),
        }
    }
}

/// The ELF header of a core file with `phnum` program headers right after it.
pub fn ehdr(phnum: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(EHDR_SIZE);
    h.extend_from_slice(ELFMAG);
    h.extend_from_slice(&[ELFCLASS64, ELFDATA2LSB, 1 /* EV_CURRENT */, 0 /* System V */]);
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&ET_CORE.to_le_bytes());
    h.extend_from_slice(&EM_X86_64.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes()); // e_version
    h.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    h.extend_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    h.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    h.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    h.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    h.extend_from_slice(&phnum.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // e_shentsize
    h.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    h.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    h
}

/// Appends one note (name, type, descriptor), each part 4-byte aligned.
pub fn note(out: &mut Vec<u8>, name: &str, kind: u32, desc: &[u8]) {
    let namesz = name.len() + 1;
    out.extend_from_slice(&(namesz as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(desc);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One parsed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note<'a> {
    /// Its owner (without the NUL).
    pub name: &'a [u8],
    /// Its type.
    pub kind: u32,
    /// Its descriptor.
    pub desc: &'a [u8],
}

/// Parses a note segment; `None` at the first malformed note.
pub fn notes(mut b: &[u8]) -> Option<Vec<Note<'_>>> {
    let mut v = Vec::new();
    let up4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while b.len() >= 12 {
        let (namesz, descsz, kind) = (u32_at(b, 0) as usize, u32_at(b, 4) as usize, u32_at(b, 8));
        let name_end = 12usize.checked_add(up4(namesz)?)?;
        let desc_end = name_end.checked_add(up4(descsz)?)?;
        if desc_end > b.len() {
            return None;
        }
        let name = &b[12..12 + namesz];
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        v.push(Note { name, kind, desc: &b[name_end..name_end + descsz] });
        b = &b[desc_end..];
    }
    b.is_empty().then_some(v)
}

/// `struct elf_prstatus` for one thread with these general registers (in
/// `user_regs_struct`'s order), as Linux's core dumps and vmcores carry
/// it: gdb and crash take a thread's registers from it.
pub fn prstatus(pid: u32, user_regs: &[u64; 27]) -> Vec<u8> {
    let mut b = vec![0u8; PRSTATUS_SIZE];
    b[PRSTATUS_PID_OFFSET..PRSTATUS_PID_OFFSET + 4].copy_from_slice(&pid.to_le_bytes());
    for (i, r) in user_regs.iter().enumerate() {
        let at = PRSTATUS_REG_OFFSET + 8 * i;
        b[at..at + 8].copy_from_slice(&r.to_le_bytes());
    }
    b
}

/// A little-endian u16 at `at` (the caller checked the length).
pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// A little-endian u32 at `at`.
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

/// A little-endian u64 at `at`.
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_reject_garbage() {
        let mut b = Vec::new();
        note(&mut b, "CORE", NT_PRSTATUS, &[1, 2, 3]);
        note(&mut b, "MMEMU", 7, b"{}");
        let n = notes(&b).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!((n[0].name, n[0].kind, n[0].desc), (&b"CORE"[..], 1, &[1u8, 2, 3][..]));
        assert_eq!((n[1].name, n[1].desc), (&b"MMEMU"[..], &b"{}"[..]));
        assert!(notes(&b[..b.len() - 4]).is_none());
        let mut huge = b.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(notes(&huge).is_none());
    }

    #[test]
    fn phdr_round_trips() {
        let p =
            Phdr { kind: PT_LOAD, flags: PF_RWX, offset: 4096, vaddr: 1, paddr: 2, filesz: 3, memsz: 3, align: 4096 };
        let mut b = Vec::new();
        p.encode(&mut b);
        assert_eq!(b.len(), PHDR_SIZE);
        assert_eq!(Phdr::decode(&b), p);
        assert_eq!(ehdr(3).len(), EHDR_SIZE);
    }
}
