//! Stack unwinding for the profiler from an ELF's `.eh_frame` (CFI).
//!
//! The guest kernel is built without frame pointers but with its unwind
//! tables kept (guest/.cargo/config.toml: `force-unwind-tables`, and
//! kernel.ld keeps `.eh_frame`), which is how gdb's `bt` follows it. The
//! profiler unwinds the same way: every FDE is parsed once, sorted by
//! address, and each frame costs a binary search, the evaluation of one
//! FDE's CFA program up to the frame's address and one or two 8-byte reads
//! of guest memory (the return address, a saved `rbp`). Frame pointers
//! would save the CFA program but the kernel has none; following `rbp`
//! here would give garbage.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, EndianArcSlice, FrameDescriptionEntry, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use object::{Object, ObjectSection, SectionKind};
use std::sync::Arc;

type Reader = EndianArcSlice<LittleEndian>;

/// The deepest stack the profiler follows (deeper ones are cut, leaf kept).
pub const MAX_DEPTH: usize = 64;

/// One image's unwind tables.
pub struct Unwinder {
    eh: EhFrame<Reader>,
    bases: BaseAddresses,
    /// Every FDE, sorted by start address: (start, end, fde).
    fdes: Vec<(u64, u64, FrameDescriptionEntry<Reader>)>,
    /// The executable sections' address ranges: a return address outside
    /// them means the unwinding went wrong (a sample taken where the CFI
    /// does not describe the stack), and the walk stops there.
    code: Vec<(u64, u64)>,
}

/// The registers a frame's unwinding needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The instruction pointer.
    pub pc: u64,
    /// The stack pointer.
    pub sp: u64,
    /// The frame pointer (a callee-saved register the CFI may restore).
    pub bp: u64,
}

impl Unwinder {
    /// The tables of `elf`; `None` when it is no ELF or has no `.eh_frame`.
    pub fn from_elf(elf: &[u8]) -> Option<Unwinder> {
        let file = object::File::parse(elf).ok()?;
        let sec = file.section_by_name(".eh_frame")?;
        let data = sec.data().ok()?;
        let eh = EhFrame::from(EndianArcSlice::new(Arc::from(data), LittleEndian));
        let mut bases = BaseAddresses::default().set_eh_frame(sec.address());
        if let Some(text) = file.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        let mut fdes = Vec::new();
        let mut entries = eh.entries(&bases);
        // A malformed entry ends the walk: what parsed so far is kept.
        while let Ok(Some(entry)) = entries.next() {
            if let CieOrFde::Fde(partial) = entry {
                if let Ok(fde) = partial.parse(EhFrame::cie_from_offset) {
                    fdes.push((fde.initial_address(), fde.end_address(), fde));
                }
            }
        }
        fdes.sort_by_key(|f| f.0);
        let code = file
            .sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .map(|s| (s.address(), s.address() + s.size()))
            .collect();
        Some(Unwinder { eh, bases, fdes, code })
    }

    /// How many functions have unwind information.
    pub fn len(&self) -> usize {
        self.fdes.len()
    }

    /// True when none has.
    pub fn is_empty(&self) -> bool {
        self.fdes.is_empty()
    }

    fn fde_for(&self, pc: u64) -> Option<&FrameDescriptionEntry<Reader>> {
        let i = self.fdes.partition_point(|f| f.0 <= pc).checked_sub(1)?;
        let (start, end, fde) = &self.fdes[i];
        (*start <= pc && pc < *end).then_some(fde)
    }

    /// The program counters of the stack that `top` is the innermost frame
    /// of, innermost first (`top.pc` itself first). `read` reads a guest
    /// word by linear address. Stops at a frame without unwind
    /// information (its pc is kept: assembly entry code, the first
    /// function), at a return address of 0, at an unreadable stack word,
    /// at a stack that does not grow upward, or at [`MAX_DEPTH`].
    pub fn unwind(&self, ctx: &mut UnwindContext<usize>, top: Frame, read: impl FnMut(u64) -> Option<u64>) -> Vec<u64> {
        self.unwind_biased(ctx, top, 0, read)
    }

    /// [`Unwinder::unwind`] for an image loaded `bias` bytes above the
    /// addresses its ELF gives (a PIE): `top` and the words read are
    /// run-time addresses; the pcs returned are the ELF's (run-time
    /// minus `bias`), ready for its symbol table.
    pub fn unwind_biased(
        &self,
        ctx: &mut UnwindContext<usize>,
        top: Frame,
        bias: u64,
        mut read: impl FnMut(u64) -> Option<u64>,
    ) -> Vec<u64> {
        let mut f = Frame { pc: top.pc.wrapping_sub(bias), ..top };
        let mut pcs = vec![f.pc];
        // The innermost frame was interrupted at `pc`; the callers' pcs are
        // return addresses, which may lie past their call's FDE row (or
        // even its function, for a call that does not return): look up pc - 1.
        let mut lookup = f.pc;
        while pcs.len() < MAX_DEPTH {
            let Some(fde) = self.fde_for(lookup) else { break };
            let Ok(row) = fde.unwind_info_for_address(&self.eh, &self.bases, ctx, lookup) else { break };
            let cfa = match row.cfa() {
                CfaRule::RegisterAndOffset { register, offset } => {
                    let base = match *register {
                        X86_64::RSP => f.sp,
                        X86_64::RBP => f.bp,
                        _ => break,
                    };
                    base.wrapping_add(*offset as u64)
                }
                CfaRule::Expression(_) => break,
            };
            let ra = match row.register(X86_64::RA) {
                Some(RegisterRule::Offset(o)) => match read(cfa.wrapping_add(o as u64)) {
                    Some(v) => v,
                    None => break,
                },
                _ => break,
            };
            let bp = match row.register(X86_64::RBP) {
                Some(RegisterRule::Offset(o)) => read(cfa.wrapping_add(o as u64)).unwrap_or(f.bp),
                _ => f.bp,
            };
            let ra = ra.wrapping_sub(bias);
            if ra == 0 || cfa <= f.sp || !self.code.iter().any(|&(a, b)| a <= ra && ra < b) {
                break;
            }
            f = Frame { pc: ra, sp: cfa, bp };
            pcs.push(ra);
            lookup = ra - 1;
        }
        pcs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded guest kernel has unwind tables for its Rust code, and
    /// a synthetic stack (a return address stored where the CFI says)
    /// unwinds to the caller.
    #[test]
    fn the_kernel_has_unwind_tables_and_one_frame_unwinds() {
        let elf = crate::EMBEDDED_GUEST;
        let u = Unwinder::from_elf(elf).expect("the kernel ELF has .eh_frame");
        assert!(u.len() > 100, "only {} FDEs", u.len());
        // At a function's first instruction the CFA is rsp + 8 and the
        // return address sits at rsp.
        let (start, _, _) = u.fdes[u.len() / 2];
        let sp = 0x1000u64;
        let ret = u.fdes[u.len() / 3].0 + 1;
        let mut ctx = UnwindContext::new();
        let pcs = u.unwind(&mut ctx, Frame { pc: start, sp, bp: 0 }, |a| (a == sp).then_some(ret));
        assert_eq!(pcs[..2], [start, ret]);
        assert!(u.unwind(&mut ctx, Frame { pc: 1, sp, bp: 0 }, |_| None) == vec![1]);
    }
}
