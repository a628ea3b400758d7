//! Guest memory as gdb sees it: linear addresses translated by mm-core's
//! software MMU (through the vCPU's CR3, or another root after
//! `monitor cr3`), or guest-physical addresses after `monitor phys on`;
//! planted breakpoints hidden from reads.

use super::breakpoints::Breakpoints;
use crate::inspect::{linear_to_phys, AddressMode};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// How gdb's addresses are interpreted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// Addresses are guest-physical (`monitor phys on`).
    pub phys: bool,
    /// Walk this root instead of the vCPU's CR3 (`monitor cr3 VALUE`).
    pub cr3: Option<u64>,
}

const PAGE: u64 = 4096;

/// Resolves `addr` for a chunk that stays inside one page: (guest-physical
/// address, chunk length).
fn chunk(mem: &GuestMemoryMmap, mode: &AddressMode, phys: bool, addr: u64, left: usize) -> Option<(u64, usize)> {
    let pa = if phys { Some(addr) } else { linear_to_phys(mem, mode, addr).ok() }?;
    let len = ((PAGE - (addr & (PAGE - 1))) as usize).min(left);
    Some((pa, len))
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
    let mut done = 0;
    while done < buf.len() {
        let a = addr.wrapping_add(done as u64);
        let Some((pa, len)) = chunk(mem, mode, phys, a, buf.len() - done) else { break };
        let out = &mut buf[done..done + len];
        if mem.read_slice(out, GuestAddress(pa)).is_err() {
            break;
        }
        bps.mask(pa, out);
        done += len;
    }
    done
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
    let mut done = 0;
    while done < data.len() {
        let a = addr.wrapping_add(done as u64);
        let Some((pa, len)) = chunk(mem, mode, phys, a, data.len() - done) else { break };
        let part = &data[done..done + len];
        if mem.write_slice(part, GuestAddress(pa)).is_err() {
            break;
        }
        bps.rewrite_after_write(mem, pa, part);
        done += len;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

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
