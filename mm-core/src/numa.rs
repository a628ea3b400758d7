//! Reading the NUMA topology from ACPI: the SRAT (System Resource
//! Affinity Table: which memory ranges and which CPUs belong to which
//! proximity domain) and the SLIT (System Locality Information Table: the
//! distances between domains), as Linux's `acpi_numa_init` does.
//!
//! Like [`crate::acpi::read_madt`], everything is read through a callback
//! that copies guest-physical memory, every length and checksum is
//! checked first, and no input makes it panic. Proximity domains become
//! node numbers in the order they first appear in the SRAT (Linux's
//! `acpi_map_pxm_to_node`), at most [`MAX_NODES`]; entries of further
//! domains are counted in [`Numa::dropped`] and otherwise ignored, as
//! Linux ignores nodes beyond `MAX_NUMNODES`. A SLIT that is absent, too
//! small or invalid (a diagonal other than 10, an off-diagonal entry of
//! 10 or less: Linux's `slit_valid`) is not used: the distances are then
//! 10 to itself and 20 to any other node, Linux's defaults.

use crate::acpi::{find_table, offset, read_exact, u32_at, u64_at, AcpiError, Table, SDT_HEADER_LEN};

/// Most nodes a [`Numa`] holds.
pub const MAX_NODES: usize = 8;
/// Most memory ranges a [`Numa`] holds.
pub const MAX_MEM_RANGES: usize = 16;
/// Most CPUs a [`Numa`] holds (the MADT reader's limit).
pub const MAX_CPUS: usize = crate::acpi::MAX_CPUS;
/// A node's distance to itself (ACPI's and Linux's `LOCAL_DISTANCE`).
pub const LOCAL_DISTANCE: u8 = 10;
/// The distance between two nodes when the SLIT does not say
/// (Linux's `REMOTE_DISTANCE`).
pub const REMOTE_DISTANCE: u8 = 20;

/// The SRAT's fixed part: header, a reserved 1, eight reserved bytes.
const SRAT_FIXED_LEN: usize = SDT_HEADER_LEN + 12;
/// The SLIT's fixed part: header, the number of localities.
const SLIT_FIXED_LEN: usize = SDT_HEADER_LEN + 8;
/// SRAT entry: Processor Local APIC/SAPIC Affinity (16 bytes).
pub const SRAT_LAPIC: u8 = 0;
/// SRAT entry: Memory Affinity (40 bytes).
pub const SRAT_MEMORY: u8 = 1;
/// SRAT entry: Processor Local x2APIC Affinity (24 bytes).
pub const SRAT_X2APIC: u8 = 2;
/// An SRAT entry's flags: enabled (ignore the entry otherwise).
pub const SRAT_ENABLED: u32 = 1;

/// A memory range of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemRange {
    /// The node (not the proximity domain: see the module doc).
    pub node: u8,
    /// First physical address.
    pub base: u64,
    /// Length in bytes (never 0).
    pub len: u64,
}

impl MemRange {
    /// One past the last address (saturating).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }
}

/// The NUMA topology SRAT and SLIT describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numa {
    /// How many nodes (1 to [`MAX_NODES`]).
    pub nr_nodes: usize,
    /// Each node's proximity domain.
    pub pxm: [u32; MAX_NODES],
    /// Enabled memory ranges in table order; `nr_mem` are valid.
    pub mem: [MemRange; MAX_MEM_RANGES],
    /// How many memory ranges.
    pub nr_mem: usize,
    /// Enabled CPUs as `(APIC ID, node)` in table order; `nr_cpus` valid.
    pub cpus: [(u32, u8); MAX_CPUS],
    /// How many CPUs.
    pub nr_cpus: usize,
    /// `distance[a][b]` for nodes `a`, `b` below `nr_nodes`.
    pub distance: [[u8; MAX_NODES]; MAX_NODES],
    /// Whether the distances came from a valid SLIT (else the defaults).
    pub slit_used: bool,
    /// Entries ignored for lack of room (nodes, ranges or CPUs beyond the
    /// limits).
    pub dropped: u32,
}

impl Numa {
    /// The memory ranges.
    pub fn mem_ranges(&self) -> &[MemRange] {
        &self.mem[..self.nr_mem.min(MAX_MEM_RANGES)]
    }

    /// The CPUs as `(APIC ID, node)`.
    pub fn cpu_nodes(&self) -> &[(u32, u8)] {
        &self.cpus[..self.nr_cpus.min(MAX_CPUS)]
    }

    /// The node of physical address `pa`, if a range holds it.
    pub fn node_of(&self, pa: u64) -> Option<u8> {
        self.mem_ranges().iter().find(|r| r.base <= pa && pa < r.end()).map(|r| r.node)
    }

    /// The node of the CPU with APIC ID `apic`, if the SRAT names it.
    pub fn node_of_cpu(&self, apic: u32) -> Option<u8> {
        self.cpu_nodes().iter().find(|c| c.0 == apic).map(|c| c.1)
    }

    /// Bytes of memory on `node`.
    pub fn node_bytes(&self, node: u8) -> u64 {
        self.mem_ranges().iter().filter(|r| r.node == node).fold(0u64, |a, r| a.saturating_add(r.len))
    }

    /// `distance(a, b)`, [`REMOTE_DISTANCE`] for nodes out of range.
    pub fn distance(&self, a: usize, b: usize) -> u8 {
        if a < self.nr_nodes && b < self.nr_nodes {
            self.distance[a][b]
        } else {
            REMOTE_DISTANCE
        }
    }

    /// The nodes in the order an allocation on `node` falls back to
    /// them: itself first, then by distance, ties by node number (Linux's
    /// `build_zonelists` -> `find_next_best_node`). Fills `out`, returns
    /// how many.
    pub fn fallback_order(&self, node: usize, out: &mut [u8; MAX_NODES]) -> usize {
        let n = self.nr_nodes.min(MAX_NODES);
        for (i, o) in out.iter_mut().enumerate().take(n) {
            *o = i as u8;
        }
        // Insertion sort: at most eight entries, and no allocation.
        let key = |x: u8| (if x as usize == node { 0 } else { 1 }, self.distance(node, x as usize), x);
        for i in 1..n {
            let mut j = i;
            while j > 0 && key(out[j - 1]) > key(out[j]) {
                out.swap(j - 1, j);
                j -= 1;
            }
        }
        n
    }

    /// The node for proximity domain `pxm`, assigning the next number
    /// to a new one; `None` when all [`MAX_NODES`] are taken.
    fn node_for(&mut self, pxm: u32) -> Option<u8> {
        if let Some(i) = self.pxm[..self.nr_nodes].iter().position(|&p| p == pxm) {
            return Some(i as u8);
        }
        if self.nr_nodes == MAX_NODES {
            return None;
        }
        self.pxm[self.nr_nodes] = pxm;
        self.nr_nodes += 1;
        Some(self.nr_nodes as u8 - 1)
    }
}

/// Reads the SRAT (and the SLIT, if any) through the RSDP at `rsdp_pa`;
/// `Ok(None)` if there is no SRAT (not a NUMA machine) or it names no
/// enabled memory.
pub fn read_numa(rsdp_pa: u64, read: &mut dyn FnMut(u64, &mut [u8]) -> bool) -> Result<Option<Numa>, AcpiError> {
    let Some(srat) = find_table(read, rsdp_pa, *b"SRAT", SRAT_FIXED_LEN)? else {
        return Ok(None);
    };
    let mut numa = Numa {
        nr_nodes: 0,
        pxm: [0; MAX_NODES],
        mem: [MemRange::default(); MAX_MEM_RANGES],
        nr_mem: 0,
        cpus: [(0, 0); MAX_CPUS],
        nr_cpus: 0,
        distance: [[REMOTE_DISTANCE; MAX_NODES]; MAX_NODES],
        slit_used: false,
        dropped: 0,
    };
    parse_srat(read, &srat, &mut numa)?;
    if numa.nr_mem == 0 {
        return Ok(None);
    }
    for (i, row) in numa.distance.iter_mut().enumerate() {
        row[i] = LOCAL_DISTANCE;
    }
    if let Some(slit) = find_table(read, rsdp_pa, *b"SLIT", SLIT_FIXED_LEN)? {
        numa.slit_used = parse_slit(read, &slit, &mut numa)?;
    }
    Ok(Some(numa))
}

/// Walks a checked SRAT's entries into `numa`.
fn parse_srat(read: &mut dyn FnMut(u64, &mut [u8]) -> bool, srat: &Table, numa: &mut Numa) -> Result<(), AcpiError> {
    let truncated = AcpiError::Truncated { table: srat.sig };
    let mut off = SRAT_FIXED_LEN as u32;
    while off < srat.len {
        if srat.len - off < 2 {
            return Err(truncated);
        }
        let mut e = [0u8; 255];
        let at = offset(srat.pa, u64::from(off))?;
        read_exact(read, at, &mut e[..2])?;
        let (kind, len) = (e[0], u32::from(e[1]));
        if len < 2 || len > srat.len - off {
            return Err(truncated);
        }
        read_exact(read, at, &mut e[..len as usize])?;
        let need = |n: u32| if len < n { Err(truncated) } else { Ok(()) };
        match kind {
            SRAT_LAPIC => {
                need(16)?;
                let pxm = u32::from(e[2]) | u32::from(e[9]) << 8 | u32::from(e[10]) << 16 | u32::from(e[11]) << 24;
                add_cpu(numa, u32::from(e[3]), pxm, u32_at(&e, 4));
            }
            SRAT_X2APIC => {
                need(24)?;
                add_cpu(numa, u32_at(&e, 8), u32_at(&e, 4), u32_at(&e, 12));
            }
            SRAT_MEMORY => {
                need(40)?;
                let (pxm, base, size, flags) = (u32_at(&e, 2), u64_at(&e, 8), u64_at(&e, 16), u32_at(&e, 28));
                if flags & SRAT_ENABLED != 0 && size != 0 {
                    match numa.node_for(pxm) {
                        Some(node) if numa.nr_mem < MAX_MEM_RANGES => {
                            numa.mem[numa.nr_mem] = MemRange { node, base, len: size };
                            numa.nr_mem += 1;
                        }
                        _ => numa.dropped += 1,
                    }
                }
            }
            _ => {}
        }
        off += len;
    }
    Ok(())
}

fn add_cpu(numa: &mut Numa, apic: u32, pxm: u32, flags: u32) {
    if flags & SRAT_ENABLED == 0 {
        return;
    }
    match numa.node_for(pxm) {
        Some(node) if numa.nr_cpus < MAX_CPUS => {
            numa.cpus[numa.nr_cpus] = (apic, node);
            numa.nr_cpus += 1;
        }
        _ => numa.dropped += 1,
    }
}

/// Reads a checked SLIT into `numa.distance`; false (distances left at
/// the defaults) if it does not cover every node's domain or is invalid.
fn parse_slit(read: &mut dyn FnMut(u64, &mut [u8]) -> bool, slit: &Table, numa: &mut Numa) -> Result<bool, AcpiError> {
    let mut n = [0u8; 8];
    read_exact(read, offset(slit.pa, SDT_HEADER_LEN as u64)?, &mut n)?;
    let localities = u64::from_le_bytes(n);
    // The matrix must fit the table (no overflow: localities is checked
    // against the table's at most 1 MiB first).
    let room = u64::from(slit.len) - SLIT_FIXED_LEN as u64;
    if localities > room || localities.saturating_mul(localities) > room {
        return Err(AcpiError::Truncated { table: slit.sig });
    }
    let mut d = numa.distance;
    let n = numa.nr_nodes.min(MAX_NODES);
    for (a, row) in d.iter_mut().enumerate().take(n) {
        for (b, cell) in row.iter_mut().enumerate().take(n) {
            let (pa, pb) = (u64::from(numa.pxm[a]), u64::from(numa.pxm[b]));
            if pa >= localities || pb >= localities {
                return Ok(false);
            }
            let mut v = [0u8; 1];
            read_exact(read, offset(slit.pa, SLIT_FIXED_LEN as u64 + pa * localities + pb)?, &mut v)?;
            let ok = if a == b { v[0] == LOCAL_DISTANCE } else { v[0] > LOCAL_DISTANCE };
            if !ok {
                return Ok(false);
            }
            *cell = v[0];
        }
    }
    numa.distance = d;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    const BASE: u64 = 0xe_0000;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    fn sdt(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; SDT_HEADER_LEN];
        t[..4].copy_from_slice(sig);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t[9] = 0u8.wrapping_sub(sum(&t));
        t
    }

    fn mem_entry(pxm: u32, base: u64, len: u64, flags: u32) -> Vec<u8> {
        let mut e = vec![1u8, 40];
        e.extend_from_slice(&pxm.to_le_bytes());
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&base.to_le_bytes());
        e.extend_from_slice(&len.to_le_bytes());
        e.extend_from_slice(&[0; 4]);
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&[0; 8]);
        e
    }

    fn lapic_entry(pxm: u32, apic: u8, flags: u32) -> Vec<u8> {
        let p = pxm.to_le_bytes();
        let mut e = vec![0u8, 16, p[0], apic];
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&[0, p[1], p[2], p[3]]);
        e.extend_from_slice(&[0; 4]);
        e
    }

    fn x2apic_entry(pxm: u32, apic: u32) -> Vec<u8> {
        let mut e = vec![2u8, 24, 0, 0];
        e.extend_from_slice(&pxm.to_le_bytes());
        e.extend_from_slice(&apic.to_le_bytes());
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&[0; 8]);
        e
    }

    fn srat(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&[0; 8]);
        for e in entries {
            body.extend_from_slice(e);
        }
        sdt(b"SRAT", &body)
    }

    fn slit(n: u64, m: &[u8]) -> Vec<u8> {
        let mut body = n.to_le_bytes().to_vec();
        body.extend_from_slice(m);
        sdt(b"SLIT", &body)
    }

    /// RSDP at BASE, XSDT at BASE+0x40 listing `tables`, laid out from
    /// BASE+0x100 on 16-byte boundaries.
    fn image(tables: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![0u8; 0x100];
        let mut ptrs = Vec::new();
        for t in tables {
            m.resize(m.len().next_multiple_of(16), 0);
            ptrs.extend_from_slice(&(BASE + m.len() as u64).to_le_bytes());
            m.extend_from_slice(t);
        }
        let xsdt = sdt(b"XSDT", &ptrs);
        m[0x40..0x40 + xsdt.len()].copy_from_slice(&xsdt);
        m[..8].copy_from_slice(b"RSD PTR ");
        m[15] = 2;
        m[20..24].copy_from_slice(&36u32.to_le_bytes());
        m[24..32].copy_from_slice(&(BASE + 0x40).to_le_bytes());
        m[8] = 0u8.wrapping_sub(sum(&m[..20]));
        m[32] = 0u8.wrapping_sub(sum(&m[..36]));
        m
    }

    fn parse(m: &[u8]) -> Result<Option<Numa>, AcpiError> {
        read_numa(BASE, &mut |pa, buf| {
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

    fn two_nodes() -> Vec<Vec<u8>> {
        vec![
            srat(&[
                lapic_entry(0, 0, 1),
                lapic_entry(0, 1, 1),
                lapic_entry(1, 2, 1),
                lapic_entry(1, 3, 0),
                mem_entry(0, 0, 0xa_0000, 1),
                mem_entry(0, 0x10_0000, 0x7f0_0000, 1),
                mem_entry(1, 0x800_0000, 0x800_0000, 1),
                mem_entry(1, 0x1000_0000, 0x100_0000, 0),
            ]),
            slit(2, &[10, 21, 21, 10]),
        ]
    }

    #[test]
    fn reads_nodes_ranges_cpus_and_distances() {
        let n = parse(&image(&two_nodes())).unwrap().unwrap();
        assert_eq!(n.nr_nodes, 2);
        assert_eq!(n.mem_ranges().len(), 3, "the disabled range is skipped");
        assert_eq!(n.node_of(0x10_0000), Some(0));
        assert_eq!(n.node_of(0x800_0000), Some(1));
        assert_eq!(n.node_of(0xfff_ffff), Some(1));
        assert_eq!(n.node_of(0x1000_0000), None);
        assert_eq!(n.node_of(0xa_0000), None);
        assert_eq!(n.cpu_nodes(), &[(0, 0), (1, 0), (2, 1)], "the disabled CPU is skipped");
        assert_eq!(n.node_bytes(1), 0x800_0000);
        assert!(n.slit_used);
        assert_eq!((n.distance(0, 1), n.distance(1, 0), n.distance(1, 1)), (21, 21, 10));
    }

    #[test]
    fn domains_become_nodes_in_order_of_appearance() {
        let t = vec![
            srat(&[mem_entry(7, 0, 0x100_0000, 1), mem_entry(3, 0x100_0000, 0x100_0000, 1), x2apic_entry(3, 300)]),
            slit(8, &{
                let mut m = [30u8; 64];
                for i in 0..8 {
                    m[i * 8 + i] = 10;
                }
                m[7 * 8 + 3] = 17;
                m[3 * 8 + 7] = 17;
                m
            }),
        ];
        let n = parse(&image(&t)).unwrap().unwrap();
        assert_eq!(&n.pxm[..2], &[7, 3]);
        assert_eq!(n.node_of_cpu(300), Some(1));
        assert_eq!(n.distance(0, 1), 17);
    }

    #[test]
    fn without_srat_there_is_no_numa_and_a_bad_slit_gives_the_defaults() {
        assert_eq!(parse(&image(&[sdt(b"APIC", &[0; 8])])).unwrap(), None);
        // The diagonal must be 10.
        let mut t = two_nodes();
        t[1] = slit(2, &[11, 21, 21, 10]);
        let n = parse(&image(&t)).unwrap().unwrap();
        assert!(!n.slit_used);
        assert_eq!(n.distance(0, 1), REMOTE_DISTANCE);
        // Too few localities for the domains.
        t[1] = slit(1, &[10]);
        assert!(!parse(&image(&t)).unwrap().unwrap().slit_used);
        // A matrix larger than the table.
        t[1] = slit(200, &[10; 4]);
        assert_eq!(parse(&image(&t)), Err(AcpiError::Truncated { table: *b"SLIT" }));
        // No SLIT at all.
        let n = parse(&image(&two_nodes()[..1])).unwrap().unwrap();
        assert!(!n.slit_used);
        assert_eq!(n.distance(1, 0), 20);
    }

    #[test]
    fn fallback_order_is_by_distance() {
        let mut t = two_nodes();
        t[0] = srat(&[
            mem_entry(0, 0, 0x100_0000, 1),
            mem_entry(1, 0x100_0000, 0x100_0000, 1),
            mem_entry(2, 0x200_0000, 0x100_0000, 1),
        ]);
        t[1] = slit(3, &[10, 40, 20, 40, 10, 30, 20, 30, 10]);
        let n = parse(&image(&t)).unwrap().unwrap();
        let mut o = [0u8; MAX_NODES];
        assert_eq!(n.fallback_order(0, &mut o), 3);
        assert_eq!(&o[..3], &[0, 2, 1]);
        n.fallback_order(1, &mut o);
        assert_eq!(&o[..3], &[1, 2, 0]);
        n.fallback_order(2, &mut o);
        assert_eq!(&o[..3], &[2, 0, 1]);
    }

    #[test]
    fn too_many_domains_are_dropped() {
        let entries: Vec<Vec<u8>> = (0..12u32).map(|i| mem_entry(i, u64::from(i) << 24, 1 << 24, 1)).collect();
        let n = parse(&image(&[srat(&entries)])).unwrap().unwrap();
        assert_eq!(n.nr_nodes, MAX_NODES);
        assert_eq!(n.dropped, 4);
        assert_eq!(n.node_of(11 << 24), None);
    }

    #[test]
    fn corrupt_tables_are_refused_and_nothing_panics() {
        let good = image(&two_nodes());
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "{cut} bytes parsed");
        }
        // A zero-length entry would loop for ever.
        let mut t = two_nodes();
        t[0][SRAT_FIXED_LEN + 1] = 0;
        t[0][9] = 0;
        t[0][9] = 0u8.wrapping_sub(sum(&t[0]));
        assert_eq!(parse(&image(&t)), Err(AcpiError::Truncated { table: *b"SRAT" }));
        // A memory entry too short for its fields.
        let mut t = two_nodes();
        t[0] = srat(&[vec![1, 8, 0, 0, 0, 0, 0, 0]]);
        assert_eq!(parse(&image(&t)), Err(AcpiError::Truncated { table: *b"SRAT" }));
        // Every single-byte corruption: an error or a result, never a panic.
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut m = good.clone();
                m[i] = v;
                if let Ok(Some(n)) = parse(&m) {
                    assert!(n.nr_nodes <= MAX_NODES && n.nr_mem <= MAX_MEM_RANGES && n.nr_cpus <= MAX_CPUS);
                }
            }
        }
    }
}
