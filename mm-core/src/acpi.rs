//! Reading the CPU topology from ACPI tables: RSDP -> XSDT (or RSDT) ->
//! MADT, as Linux's `acpi_parse_madt` does at boot.
//!
//! The guest runs this on its own physical memory to learn how many CPUs
//! to start; the host runs it on guest memory (tests, views) to check
//! what the VMM wrote. Tables are read through a callback that copies
//! guest-physical memory, so nothing here needs a mapping, an allocator or
//! `unsafe`; every length and checksum is checked before a byte is trusted,
//! and no input makes it panic (unit tests feed it truncated and corrupt
//! tables).
//!
//! Counted CPUs: enabled Processor Local APIC entries (type 0, flags bit
//! 0) and enabled Processor Local x2APIC entries (type 9), in table order,
//! at most [`MAX_CPUS`]; further entries are ignored as Linux ignores CPUs
//! beyond `NR_CPUS`.

use core::fmt;

/// Most CPUs a [`CpuTopology`] holds.
pub const MAX_CPUS: usize = 8;

/// Longest table this parser reads (1 MiB): a corrupt length field cannot
/// make it walk all of memory.
pub const MAX_TABLE_LEN: u32 = 1 << 20;

/// The standard header every ACPI system description table starts with.
pub const SDT_HEADER_LEN: usize = 36;
/// Length of an ACPI 2.0+ RSDP.
pub const RSDP_V2_LEN: usize = 36;
/// Length of an ACPI 1.0 RSDP (the part the first checksum covers).
pub const RSDP_V1_LEN: usize = 20;
/// The MADT's fixed part: header, local APIC address, flags.
const MADT_FIXED_LEN: usize = SDT_HEADER_LEN + 8;

/// MADT entry: Processor Local APIC.
pub const MADT_LAPIC: u8 = 0;
/// MADT entry: I/O APIC.
pub const MADT_IOAPIC: u8 = 1;
/// MADT entry: Local APIC Address Override (a 64-bit address).
pub const MADT_LAPIC_OVERRIDE: u8 = 5;
/// MADT entry: Processor Local x2APIC.
pub const MADT_X2APIC: u8 = 9;
/// A (x2)APIC entry's flags: the processor is enabled.
pub const MADT_ENABLED: u32 = 1;

/// The CPUs and interrupt controllers a MADT describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// The local APICs' physical address (the MADT's, or its override's).
    pub lapic_addr: u64,
    /// The APIC IDs of the counted CPUs, in table order; `count` are valid.
    pub apic_ids: [u32; MAX_CPUS],
    /// How many CPUs were counted (at most [`MAX_CPUS`]).
    pub count: usize,
    /// The first I/O APIC: its ID, register address and first GSI.
    pub ioapic: Option<(u8, u32, u32)>,
}

impl CpuTopology {
    /// The counted CPUs' APIC IDs.
    pub fn ids(&self) -> &[u32] {
        &self.apic_ids[..self.count.min(MAX_CPUS)]
    }
}

/// Why the tables could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// No valid RSDP at the address: wrong signature or checksum.
    BadRsdp,
    /// A table's checksum does not sum to zero.
    Checksum {
        /// The table's signature.
        table: [u8; 4],
    },
    /// The root table lists no MADT ("APIC").
    NoMadt,
    /// A table (or an entry in it) is shorter than its contents need.
    Truncated {
        /// The table's signature.
        table: [u8; 4],
    },
    /// A table's length field is impossible (below its header, or above
    /// [`MAX_TABLE_LEN`]).
    BadLength {
        /// The table's signature.
        table: [u8; 4],
        /// The length it claims.
        len: u32,
    },
    /// A table pointed at is not the one expected.
    BadSignature {
        /// What was expected.
        expected: [u8; 4],
        /// What is there.
        found: [u8; 4],
    },
    /// Memory at this physical address could not be read.
    Unreadable {
        /// The address.
        addr: u64,
    },
}

/// Writes a table signature, with anything but printable ASCII as `?`.
fn write_sig(f: &mut fmt::Formatter<'_>, sig: &[u8; 4]) -> fmt::Result {
    for &b in sig {
        let c = if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' };
        fmt::Write::write_char(f, c)?;
    }
    Ok(())
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Decimal numbers through the crate's own helper: core's integer
        // formatting cannot run in the guest's ring 0 (platform.md).
        match self {
            AcpiError::BadRsdp => f.write_str("no valid ACPI RSDP (signature or checksum wrong)"),
            AcpiError::Checksum { table } => {
                f.write_str("ACPI table ")?;
                write_sig(f, table)?;
                f.write_str(": checksum wrong")
            }
            AcpiError::NoMadt => f.write_str("the ACPI root table lists no MADT (APIC)"),
            AcpiError::Truncated { table } => {
                f.write_str("ACPI table ")?;
                write_sig(f, table)?;
                f.write_str(": truncated")
            }
            AcpiError::BadLength { table, len } => {
                f.write_str("ACPI table ")?;
                write_sig(f, table)?;
                f.write_str(": impossible length ")?;
                crate::fmt::write_dec(f, u64::from(*len), 0)
            }
            AcpiError::BadSignature { expected, found } => {
                f.write_str("ACPI table: expected ")?;
                write_sig(f, expected)?;
                f.write_str(", found ")?;
                write_sig(f, found)
            }
            AcpiError::Unreadable { addr } => write!(f, "ACPI: cannot read physical memory at {addr:#x}"),
        }
    }
}

/// Guest-physical memory reads: `read(pa, buf)` fills `buf`, false if it
/// cannot.
pub(crate) type Reader<'a> = &'a mut dyn FnMut(u64, &mut [u8]) -> bool;

pub(crate) fn read_exact(read: Reader<'_>, pa: u64, buf: &mut [u8]) -> Result<(), AcpiError> {
    if read(pa, buf) {
        Ok(())
    } else {
        Err(AcpiError::Unreadable { addr: pa })
    }
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

/// The byte sum of `len` bytes at `pa`, read in chunks (no allocation).
fn checksum(read: Reader<'_>, pa: u64, len: u32) -> Result<u8, AcpiError> {
    let mut buf = [0u8; 64];
    let mut s = 0u8;
    let mut off = 0u32;
    while off < len {
        let n = (len - off).min(buf.len() as u32) as usize;
        let at = offset(pa, u64::from(off))?;
        read_exact(read, at, &mut buf[..n])?;
        s = s.wrapping_add(sum(&buf[..n]));
        off += n as u32;
    }
    Ok(s)
}

/// A table's header, after checking its signature, length and checksum.
pub(crate) struct Table {
    pub(crate) pa: u64,
    pub(crate) sig: [u8; 4],
    pub(crate) len: u32,
}

/// Reads and checks the table at `pa`: signature `expected` (if given), a
/// length between `min_len` and [`MAX_TABLE_LEN`], a zero checksum.
fn open_table(read: Reader<'_>, pa: u64, expected: Option<[u8; 4]>, min_len: usize) -> Result<Table, AcpiError> {
    let mut h = [0u8; SDT_HEADER_LEN];
    read_exact(read, pa, &mut h)?;
    let sig = [h[0], h[1], h[2], h[3]];
    if let Some(e) = expected {
        if e != sig {
            return Err(AcpiError::BadSignature { expected: e, found: sig });
        }
    }
    let len = u32_at(&h, 4);
    if (len as usize) < min_len || len > MAX_TABLE_LEN {
        return Err(AcpiError::BadLength { table: sig, len });
    }
    if checksum(read, pa, len)? != 0 {
        return Err(AcpiError::Checksum { table: sig });
    }
    Ok(Table { pa, sig, len })
}

/// Finds the MADT through the RSDP at `rsdp_pa` (ACPI 2.0+: the XSDT;
/// ACPI 1.0: the RSDT) and reads the CPUs and the first I/O APIC from it.
pub fn read_madt(rsdp_pa: u64, read: &mut dyn FnMut(u64, &mut [u8]) -> bool) -> Result<CpuTopology, AcpiError> {
    match find_table(read, rsdp_pa, *b"APIC", MADT_FIXED_LEN)? {
        Some(madt) => parse_madt(read, &madt),
        None => Err(AcpiError::NoMadt),
    }
}

/// Finds the table with signature `sig` through the RSDP at `rsdp_pa`
/// (ACPI 2.0+: the XSDT; ACPI 1.0: the RSDT) and checks it (length at
/// least `min_len`, checksum); `None` if the root table lists none.
pub(crate) fn find_table(
    read: Reader<'_>,
    rsdp_pa: u64,
    sig: [u8; 4],
    min_len: usize,
) -> Result<Option<Table>, AcpiError> {
    let mut r = [0u8; RSDP_V2_LEN];
    read_exact(read, rsdp_pa, &mut r[..RSDP_V1_LEN])?;
    if &r[..8] != b"RSD PTR " || sum(&r[..RSDP_V1_LEN]) != 0 {
        return Err(AcpiError::BadRsdp);
    }
    let revision = r[15];
    // (address of the root table, its signature, bytes per entry)
    let root = if revision >= 2 {
        read_exact(read, rsdp_pa, &mut r)?;
        let len = u32_at(&r, 20) as usize;
        // The extended checksum covers `len` bytes; tables with a longer
        // RSDP than 2.0's are not known, so only 2.0's length is taken.
        if len != RSDP_V2_LEN || sum(&r) != 0 {
            return Err(AcpiError::BadRsdp);
        }
        (u64_at(&r, 24), *b"XSDT", 8usize)
    } else {
        (u64::from(u32_at(&r, 16)), *b"RSDT", 4usize)
    };
    let root = open_table(read, root.0, Some(root.1), SDT_HEADER_LEN).map(|t| (t, root.2))?;
    let (t, width) = root;
    let entries = (t.len as usize - SDT_HEADER_LEN) / width;
    for i in 0..entries {
        let mut e = [0u8; 8];
        let at = offset(t.pa, (SDT_HEADER_LEN + i * width) as u64)?;
        read_exact(read, at, &mut e[..width])?;
        let pa = u64_at(&e, 0);
        let mut found = [0u8; 4];
        read_exact(read, pa, &mut found)?;
        if found == sig {
            return open_table(read, pa, Some(sig), min_len).map(Some);
        }
    }
    Ok(None)
}

/// Counts an enabled CPU, up to [`MAX_CPUS`].
fn add_cpu(topo: &mut CpuTopology, id: u32, flags: u32) {
    if flags & MADT_ENABLED != 0 && topo.count < MAX_CPUS {
        topo.apic_ids[topo.count] = id;
        topo.count += 1;
    }
}

/// `pa + off`, or an error where that leaves the address space.
pub(crate) fn offset(pa: u64, off: u64) -> Result<u64, AcpiError> {
    pa.checked_add(off).ok_or(AcpiError::Unreadable { addr: pa })
}

/// Walks a checked MADT's entries.
fn parse_madt(read: Reader<'_>, madt: &Table) -> Result<CpuTopology, AcpiError> {
    let mut fixed = [0u8; MADT_FIXED_LEN];
    read_exact(read, madt.pa, &mut fixed)?;
    let mut topo = CpuTopology {
        lapic_addr: u64::from(u32_at(&fixed, SDT_HEADER_LEN)),
        apic_ids: [0; MAX_CPUS],
        count: 0,
        ioapic: None,
    };
    let truncated = AcpiError::Truncated { table: madt.sig };
    let mut off = MADT_FIXED_LEN as u32;
    while off < madt.len {
        // Every entry starts with its type and length.
        if madt.len - off < 2 {
            return Err(truncated);
        }
        let mut e = [0u8; 255];
        let at = offset(madt.pa, u64::from(off))?;
        read_exact(read, at, &mut e[..2])?;
        let (kind, len) = (e[0], e[1] as u32);
        if len < 2 || len > madt.len - off {
            return Err(truncated);
        }
        read_exact(read, at, &mut e[..len as usize])?;
        let need = |n: u32| if len < n { Err(truncated) } else { Ok(()) };
        match kind {
            MADT_LAPIC => {
                need(8)?;
                add_cpu(&mut topo, u32::from(e[3]), u32_at(&e, 4));
            }
            MADT_X2APIC => {
                need(16)?;
                add_cpu(&mut topo, u32_at(&e, 4), u32_at(&e, 8));
            }
            MADT_IOAPIC => {
                need(12)?;
                if topo.ioapic.is_none() {
                    topo.ioapic = Some((e[2], u32_at(&e, 4), u32_at(&e, 8)));
                }
            }
            MADT_LAPIC_OVERRIDE => {
                need(12)?;
                topo.lapic_addr = u64_at(&e, 4);
            }
            _ => {}
        }
        off += len;
    }
    Ok(topo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    const BASE: u64 = 0xe_0000;

    fn fix_checksum(t: &mut [u8], at: usize) {
        t[at] = 0;
        t[at] = 0u8.wrapping_sub(sum(t));
    }

    fn sdt(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; SDT_HEADER_LEN];
        t[..4].copy_from_slice(sig);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t[8] = 1;
        fix_checksum(&mut t, 9);
        t
    }

    fn madt(n: u8, x2: &[u32]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        for i in 0..n {
            body.extend_from_slice(&[0, 8, i, i, 1, 0, 0, 0]);
        }
        // A disabled CPU: not counted.
        body.extend_from_slice(&[0, 8, 99, 99, 0, 0, 0, 0]);
        body.extend_from_slice(&[1, 12, 0, 0]);
        body.extend_from_slice(&0xfec0_0000u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        for &id in x2 {
            body.extend_from_slice(&[9, 16, 0, 0]);
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&1u32.to_le_bytes());
            body.extend_from_slice(&id.to_le_bytes());
        }
        sdt(b"APIC", &body)
    }

    /// RSDP at BASE, XSDT at BASE+0x40, MADT at BASE+0x80: a flat image.
    fn image(madt: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; 0x80];
        let xsdt = sdt(b"XSDT", &(BASE + 0x80).to_le_bytes());
        m[0x40..0x40 + xsdt.len()].copy_from_slice(&xsdt);
        m[..8].copy_from_slice(b"RSD PTR ");
        m[9..15].copy_from_slice(b"MMEMU ");
        m[15] = 2;
        m[20..24].copy_from_slice(&36u32.to_le_bytes());
        m[24..32].copy_from_slice(&(BASE + 0x40).to_le_bytes());
        fix_checksum(&mut m[..20], 8);
        fix_checksum(&mut m[..36], 32);
        m.extend_from_slice(madt);
        m
    }

    fn parse(m: &[u8]) -> Result<CpuTopology, AcpiError> {
        read_madt(BASE, &mut |pa, buf| {
            let Some(off) = pa.checked_sub(BASE) else { return false };
            match m.get(off as usize..off as usize + buf.len()) {
                Some(s) => {
                    buf.copy_from_slice(s);
                    true
                }
                None => false,
            }
        })
    }

    #[test]
    fn reads_cpus_and_ioapic() {
        let t = parse(&image(&madt(4, &[]))).unwrap();
        assert_eq!(t.ids(), &[0, 1, 2, 3]);
        assert_eq!(t.lapic_addr, 0xfee0_0000);
        assert_eq!(t.ioapic, Some((0, 0xfec0_0000, 0)));
    }

    #[test]
    fn x2apic_entries_count_and_extra_cpus_are_ignored() {
        let t = parse(&image(&madt(2, &[300, 301]))).unwrap();
        assert_eq!(t.ids(), &[0, 1, 300, 301]);
        let t = parse(&image(&madt(12, &[]))).unwrap();
        assert_eq!(t.count, MAX_CPUS);
        assert_eq!(t.ids(), &[0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn acpi1_rsdt_works() {
        let mut m = image(&madt(2, &[]));
        let rsdt = sdt(b"RSDT", &((BASE + 0x80) as u32).to_le_bytes());
        m[0x40..0x80].fill(0);
        m[0x40..0x40 + rsdt.len()].copy_from_slice(&rsdt);
        m[15] = 0;
        m[16..20].copy_from_slice(&((BASE + 0x40) as u32).to_le_bytes());
        fix_checksum(&mut m[..20], 8);
        assert_eq!(parse(&m).unwrap().ids(), &[0, 1]);
    }

    #[test]
    fn corrupt_tables_are_refused() {
        let good = image(&madt(4, &[]));
        // RSDP checksum.
        let mut m = good.clone();
        m[9] ^= 1;
        assert_eq!(parse(&m), Err(AcpiError::BadRsdp));
        // Extended checksum.
        let mut m = good.clone();
        m[33] ^= 1;
        assert_eq!(parse(&m), Err(AcpiError::BadRsdp));
        // MADT checksum.
        let mut m = good.clone();
        let last = m.len() - 1;
        m[last] ^= 1;
        assert_eq!(parse(&m), Err(AcpiError::Checksum { table: *b"APIC" }));
        // XSDT lists something that is not a MADT.
        let mut m = good.clone();
        m[0x80..0x84].copy_from_slice(b"FACP");
        assert_eq!(parse(&m), Err(AcpiError::NoMadt));
        // An impossible length.
        let mut m = good.clone();
        m[0x84..0x88].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&m), Err(AcpiError::BadLength { .. })));
        // An entry claiming more than the table holds.
        let mut mt = madt(1, &[]);
        mt[SDT_HEADER_LEN + 8 + 1] = 200;
        fix_checksum(&mut mt, 9);
        assert_eq!(parse(&image(&mt)), Err(AcpiError::Truncated { table: *b"APIC" }));
        // A zero-length entry would loop for ever.
        let mut mt = madt(1, &[]);
        mt[SDT_HEADER_LEN + 8 + 1] = 0;
        fix_checksum(&mut mt, 9);
        assert_eq!(parse(&image(&mt)), Err(AcpiError::Truncated { table: *b"APIC" }));
        // A LAPIC entry too short for its fields.
        let mut mt = madt(0, &[]);
        mt.truncate(mt.len() - 12 - 8);
        mt.extend_from_slice(&[0, 4, 0, 0]);
        let len = mt.len() as u32;
        mt[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut mt, 9);
        assert_eq!(parse(&image(&mt)), Err(AcpiError::Truncated { table: *b"APIC" }));
    }

    #[test]
    fn truncated_memory_is_an_error_at_every_length() {
        let good = image(&madt(3, &[7]));
        for n in 0..good.len() {
            let r = parse(&good[..n]);
            assert!(r.is_err(), "{n} bytes parsed");
        }
        assert_eq!(parse(&good).unwrap().ids(), &[0, 1, 2, 7]);
    }

    #[test]
    fn no_bytes_panic() {
        // Every single-byte corruption of a valid image: an error or a
        // result, never a panic; and a few pseudo-random images.
        let good = image(&madt(4, &[9]));
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut m = good.clone();
                m[i] = v;
                let _ = parse(&m);
            }
        }
        let mut x = 0x1234_5678u64;
        for _ in 0..200 {
            let mut m = good.clone();
            for b in m.iter_mut().skip(0x80) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let _ = parse(&m);
        }
    }

    #[test]
    fn errors_display() {
        assert_eq!(AcpiError::Checksum { table: *b"AP\0C" }.to_string(), "ACPI table AP?C: checksum wrong");
        assert_eq!(
            AcpiError::BadLength { table: *b"XSDT", len: 7 }.to_string(),
            "ACPI table XSDT: impossible length 7"
        );
    }
}
