//! Guest memory as gdb sees it: linear addresses translated by mm-core's
//! software MMU (through the vCPU's CR3, or another root after
//! `monitor cr3`), or guest-physical addresses after `monitor phys on`;
//! planted breakpoints hidden from reads.

use super::breakpoints::Breakpoints;
use crate::inspect::{for_each_page, linear_to_phys, AddressMode};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// How gdb's addresses are interpreted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// Addresses are guest-physical (`monitor phys on`).
    pub phys: bool,
    /// Walk this root instead of the vCPU's CR3 (`monitor cr3 VALUE`).
    pub cr3: Option<u64>,
}

/// The guest-physical address of `addr` as gdb means it.
fn resolve(mem: &GuestMemoryMmap, mode: &AddressMode, phys: bool, addr: u64) -> Option<u64> {
    if phys {
        Some(addr)
    } else {
        linear_to_phys(mem, mode, addr).ok()
    }
}

/// Reads `buf.len()` bytes at `addr`; returns how many could be read before
/// the first unmapped page or hole in guest RAM.
pub fn read(
    mem: &GuestMemoryMmap,
    mode: &AddressMode,
    phys: bool,
    bps: &Breakpoints,
    addr: u64,
    buf: &mut [u8],
) -> usize {
    for_each_page(
        addr,
        buf.len(),
        |a| resolve(mem, mode, phys, a),
        |pa, r| {
            let out = &mut buf[r];
            let ok = mem.read_slice(out, GuestAddress(pa)).is_ok();
            if ok {
                bps.mask(pa, out);
            }
            ok
        },
    )
}

/// Writes `data` at `addr`; returns how many bytes were written before the
/// first unmapped page or hole.
pub fn write(
    mem: &GuestMemoryMmap,
    mode: &AddressMode,
    phys: bool,
    bps: &mut Breakpoints,
    addr: u64,
    data: &[u8],
) -> usize {
    for_each_page(
        addr,
        data.len(),
        |a| resolve(mem, mode, phys, a),
        |pa, r| {
            let part = &data[r];
            let ok = mem.write_slice(part, GuestAddress(pa)).is_ok();
            if ok {
                bps.rewrite_after_write(mem, pa, part);
            }
            ok
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    #[test]
    fn physical_reads_stop_at_the_end_of_ram_and_hide_breakpoints() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 * PAGE as usize)]).unwrap();
        m.write_slice(b"abcdef", GuestAddress(PAGE * 2 - 6)).unwrap();
        let mut bps = Breakpoints::default();
        bps.insert_sw(&m, &AddressMode::Unpaged, PAGE * 2 - 5).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(read(&m, &AddressMode::Unpaged, true, &bps, PAGE * 2 - 6, &mut buf), 6);
        assert_eq!(&buf[..6], b"abcdef");
        assert_eq!(write(&m, &AddressMode::Unpaged, true, &mut bps, PAGE * 2 - 6, b"XYZ"), 3);
        assert_eq!(bps.sw()[0].orig, b'Y');
    }
}
