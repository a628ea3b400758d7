//! Breakpoints the stub has planted: software ones (an `int3` byte written
//! over guest code, the original byte kept here) and hardware ones (DR0-DR3),
//! and the `KVM_SET_GUEST_DEBUG` state that follows from them.
//!
//! A software breakpoint remembers the guest-physical address it patched,
//! so memory reads through any alias of that page (the direct map, another
//! CR3, `monitor phys on`) show the original byte, as gdb expects.

use crate::inspect::{linear_to_phys, AddressMode};
use kvm_bindings::{
    kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The x86 breakpoint instruction.
pub const INT3: u8 = 0xcc;

/// The end of the user (lower) half of the address space.
pub const USER_END: u64 = 0x0000_8000_0000_0000;

/// Why a breakpoint could not be set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BreakpointError {
    /// The address has no translation.
    #[error("{addr:#x} is not mapped in the current address space; break on a mapped address (see `monitor pt`) or use `hbreak`, which needs no mapping")]
    Unmapped {
        /// The linear address.
        addr: u64,
    },
    /// Guest-physical memory refused the access.
    #[error("guest-physical {pa:#x} (for {addr:#x}) is not RAM")]
    NotRam {
        /// The linear address.
        addr: u64,
        /// Where it translated to.
        pa: u64,
    },
    /// All four debug registers are taken.
    #[error("all four hardware breakpoints (DR0-DR3) are in use; delete one or use `break`")]
    NoFreeSlot,
}

/// One planted `int3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwBreakpoint {
    /// Linear address gdb asked for.
    pub la: u64,
    /// Guest-physical address of the patched byte.
    pub pa: u64,
    /// The byte the `int3` replaced.
    pub orig: u8,
}

/// The breakpoint set of one gdb session.
#[derive(Debug, Default)]
pub struct Breakpoints {
    sw: Vec<SwBreakpoint>,
    hw: [Option<u64>; 4],
}

impl Breakpoints {
    /// Plants an `int3` at linear address `la`.
    pub fn insert_sw(&mut self, mem: &GuestMemoryMmap, mode: &AddressMode, la: u64) -> Result<(), BreakpointError> {
        if self.sw.iter().any(|b| b.la == la) {
            return Ok(());
        }
        let pa = linear_to_phys(mem, mode, la).map_err(|_| BreakpointError::Unmapped { addr: la })?;
        let orig: u8 = mem.read_obj(GuestAddress(pa)).map_err(|_| BreakpointError::NotRam { addr: la, pa })?;
        // Two linear addresses of one byte (kernel text and its direct-map
        // alias): the first breakpoint's saved byte is the real one.
        let orig = self.sw.iter().find(|b| b.pa == pa).map_or(orig, |b| b.orig);
        mem.write_obj(INT3, GuestAddress(pa)).map_err(|_| BreakpointError::NotRam { addr: la, pa })?;
        self.sw.push(SwBreakpoint { la, pa, orig });
        Ok(())
    }

    /// Removes the `int3` at `la`; false if there was none.
    pub fn remove_sw(&mut self, mem: &GuestMemoryMmap, la: u64) -> bool {
        let Some(i) = self.sw.iter().position(|b| b.la == la) else {
            return false;
        };
        let b = self.sw.remove(i);
        if !self.sw.iter().any(|o| o.pa == b.pa) {
            restore(mem, &b);
        }
        true
    }

    /// The software breakpoint at `la`, if any.
    pub fn sw_at(&self, la: u64) -> Option<SwBreakpoint> {
        self.sw.iter().find(|b| b.la == la).copied()
    }

    /// The software breakpoint whose `int3` sits at guest-physical `pa`,
    /// whatever linear address reached it (kernel text through its
    /// direct-map alias, a shared frame in another process).
    pub fn sw_at_phys(&self, pa: u64) -> Option<SwBreakpoint> {
        self.sw.iter().find(|b| b.pa == pa).copied()
    }

    /// Whether a software breakpoint sits at a user (lower-half) address:
    /// its `int3` runs in ring 3 and enters the guest's own #BP handler.
    pub fn has_user_sw(&self) -> bool {
        self.sw.iter().any(|b| b.la < USER_END)
    }

    /// Puts the original byte back under `b` for a moment (to step over it).
    pub fn lift(&self, mem: &GuestMemoryMmap, b: &SwBreakpoint) {
        restore(mem, b);
    }

    /// Writes the `int3` of `b` again after [`Breakpoints::lift`].
    pub fn replant(&self, mem: &GuestMemoryMmap, b: &SwBreakpoint) {
        let _ = mem.write_obj(INT3, GuestAddress(b.pa));
    }

    /// Takes a free debug register for an execute breakpoint at `la`.
    pub fn insert_hw(&mut self, la: u64) -> Result<(), BreakpointError> {
        if self.hw.contains(&Some(la)) {
            return Ok(());
        }
        let slot = self.hw.iter_mut().find(|s| s.is_none()).ok_or(BreakpointError::NoFreeSlot)?;
        *slot = Some(la);
        Ok(())
    }

    /// Frees the debug register holding `la`; false if none did.
    pub fn remove_hw(&mut self, la: u64) -> bool {
        match self.hw.iter_mut().find(|s| **s == Some(la)) {
            Some(s) => {
                *s = None;
                true
            }
            None => false,
        }
    }

    /// Whether a hardware breakpoint sits at `la`.
    pub fn hw_at(&self, la: u64) -> bool {
        self.hw.contains(&Some(la))
    }

    /// The hardware breakpoint addresses in DR0-DR3 order.
    pub fn hw_slots(&self) -> [Option<u64>; 4] {
        self.hw
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.sw.is_empty() && self.hw.iter().all(Option::is_none)
    }

    /// The software breakpoints.
    pub fn sw(&self) -> &[SwBreakpoint] {
        &self.sw
    }

    /// Removes every breakpoint, restoring the patched bytes.
    pub fn clear(&mut self, mem: &GuestMemoryMmap) {
        for b in self.sw.drain(..) {
            restore(mem, &b);
        }
        self.hw = [None; 4];
    }

    /// Replaces planted `int3`s in `buf`, read from guest-physical `pa`,
    /// with the bytes they hide.
    pub fn mask(&self, pa: u64, buf: &mut [u8]) {
        for b in &self.sw {
            if let Some(off) = b.pa.checked_sub(pa).filter(|&o| o < buf.len() as u64) {
                buf[off as usize] = b.orig;
            }
        }
    }

    /// After `data` was written at guest-physical `pa`: the written bytes
    /// become the saved originals and the `int3`s go back on top.
    pub fn rewrite_after_write(&mut self, mem: &GuestMemoryMmap, pa: u64, data: &[u8]) {
        for b in &mut self.sw {
            if let Some(off) = b.pa.checked_sub(pa).filter(|&o| o < data.len() as u64) {
                b.orig = data[off as usize];
                let _ = mem.write_obj(INT3, GuestAddress(b.pa));
            }
        }
    }

    /// The guest-debug state for the next `KVM_RUN`: single-step or not,
    /// and the debug registers, leaving out an execute breakpoint at
    /// `skip_hw` (the one being stepped over: RFLAGS.RF is ignored on some
    /// hosts, see platform.md).
    ///
    /// `hidden` are the stub's own execute breakpoints (the guest's #BP
    /// and #DB handler entries, to catch user-mode breakpoints and steps):
    /// they take the free debug registers from DR3 down; the answer says
    /// which register holds each (None when none was free).
    pub fn guest_debug(
        &self,
        step: bool,
        skip_hw: Option<u64>,
        hidden: &[u64],
    ) -> (kvm_guest_debug, Vec<Option<usize>>) {
        let mut dbg = kvm_guest_debug::default();
        let mut dr7 = 0u64;
        let mut slots = self.hw;
        let placed: Vec<Option<usize>> = hidden
            .iter()
            .map(|&h| {
                let i = (0..4).rev().find(|&i| slots[i].is_none())?;
                slots[i] = Some(h);
                Some(i)
            })
            .collect();
        for (i, slot) in slots.iter().enumerate() {
            if let Some(la) = slot.filter(|&a| Some(a) != skip_hw) {
                dbg.arch.debugreg[i] = la;
                // Ln and Gn enable; RW = 00 (execute) and LEN = 00 (1 byte).
                dr7 |= 0b11 << (2 * i);
            }
        }
        if dr7 != 0 {
            // GE/LE as Linux sets them, and bit 10 which reads as 1.
            dbg.arch.debugreg[7] = dr7 | 0x700;
            dbg.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
        }
        if !self.sw.is_empty() {
            dbg.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP;
        }
        if step {
            dbg.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
        }
        (dbg, placed)
    }
}

fn restore(mem: &GuestMemoryMmap, b: &SwBreakpoint) {
    // Only where the int3 is still ours: the guest may have rewritten it.
    if mem.read_obj::<u8>(GuestAddress(b.pa)).is_ok_and(|v| v == INT3) {
        let _ = mem.write_obj(b.orig, GuestAddress(b.pa));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap()
    }

    #[test]
    fn int3_is_planted_masked_and_restored() {
        let m = mem();
        m.write_slice(&[0x55, 0x48, 0x89], GuestAddress(0x1000)).unwrap();
        let mut b = Breakpoints::default();
        b.insert_sw(&m, &AddressMode::Unpaged, 0x1001).unwrap();
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x1001)).unwrap(), INT3);
        let mut buf = [0u8; 3];
        m.read_slice(&mut buf, GuestAddress(0x1000)).unwrap();
        b.mask(0x1000, &mut buf);
        assert_eq!(buf, [0x55, 0x48, 0x89]);
        // A write over the breakpoint updates the saved byte.
        m.write_slice(&[0x90], GuestAddress(0x1001)).unwrap();
        b.rewrite_after_write(&m, 0x1001, &[0x90]);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x1001)).unwrap(), INT3);
        assert!(b.remove_sw(&m, 0x1001));
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x1001)).unwrap(), 0x90);
        assert!(!b.remove_sw(&m, 0x1001));
        assert!(b.is_empty());
    }

    #[test]
    fn unmapped_addresses_are_refused() {
        let m = mem();
        let mut b = Breakpoints::default();
        assert!(matches!(b.insert_sw(&m, &AddressMode::Unpaged, 0x10_0000), Err(BreakpointError::NotRam { .. })));
    }

    #[test]
    fn debug_registers_follow_the_slots() {
        let mut b = Breakpoints::default();
        for a in [0x10, 0x20, 0x30, 0x40] {
            b.insert_hw(a).unwrap();
        }
        assert_eq!(b.insert_hw(0x50), Err(BreakpointError::NoFreeSlot));
        let (d, _) = b.guest_debug(false, Some(0x20), &[]);
        assert_eq!(d.arch.debugreg[0], 0x10);
        assert_eq!(d.arch.debugreg[1], 0);
        assert_eq!(d.arch.debugreg[7] & 0xff, 0b1111_0011);
        assert_eq!(d.control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP);
        assert!(b.remove_hw(0x20));
        assert_eq!(Breakpoints::default().guest_debug(false, None, &[]).0.control, 0);
        assert_ne!(Breakpoints::default().guest_debug(true, None, &[]).0.control & KVM_GUESTDBG_SINGLESTEP, 0);
        // Hidden breakpoints take the free registers from DR3 down.
        let (d, placed) = b.guest_debug(false, None, &[0x99, 0x98]);
        assert_eq!(placed, vec![Some(1), None], "DR1 was free, then none");
        assert_eq!(d.arch.debugreg[1], 0x99);
    }
}
