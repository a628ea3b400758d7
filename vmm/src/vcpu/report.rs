//! The report a developer reads when the guest dies: why, where (RIP and
//! the guest symbol), the instruction bytes decoded (iced-x86), and every
//! general, segment and control register, in the spirit of a Linux oops.

use super::Crash;
use crate::inspect;
use crate::kvm::Vcpu;
use crate::memory::GuestMem;
use crate::symbols::Symbols;
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use std::fmt::Write as _;

/// Everything captured from a stopped vCPU.
pub struct CpuSnapshot {
    /// General registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
    /// Linear address of the next instruction (CS.base + RIP).
    pub pc_linear: u64,
    /// Up to 16 bytes at the PC (fewer when the page is not mapped).
    pub code: Vec<u8>,
    /// The CPU mode the bytes are decoded in (16, 32 or 64).
    pub bitness: u32,
}

/// The instruction width the CPU is executing in.
pub fn bitness(sregs: &kvm_sregs) -> u32 {
    use mm_core::abi::cpu::{CR0_PE, EFER_LMA};
    if sregs.cr0 & CR0_PE == 0 {
        16
    } else if sregs.efer & EFER_LMA != 0 && sregs.cs.l == 1 {
        64
    } else if sregs.cs.db == 1 {
        32
    } else {
        16
    }
}

impl CpuSnapshot {
    /// Captures the vCPU's state (registers and the bytes at its PC).
    pub fn capture(vcpu: &dyn Vcpu, mem: &GuestMem) -> Result<Self, kvm_ioctls::Error> {
        let regs = vcpu.get_regs()?;
        let sregs = vcpu.get_sregs()?;
        let bitness = bitness(&sregs);
        let pc_linear = if bitness == 64 { regs.rip } else { sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff };
        let mut code = vec![0u8; 16];
        let n = inspect::read_linear(mem, &inspect::address_mode(&regs, &sregs), pc_linear, &mut code);
        code.truncate(n);
        Ok(CpuSnapshot { regs, sregs, pc_linear, code, bitness })
    }

    /// The first instructions at the PC, decoded: (bytes as hex, text).
    pub fn disassemble(&self, max: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut decoder = Decoder::with_ip(self.bitness, &self.code, self.pc_linear, DecoderOptions::NONE);
        let mut fmt = IntelFormatter::new();
        let mut text = String::new();
        while decoder.can_decode() && out.len() < max {
            let start = decoder.position();
            let ins = decoder.decode();
            if ins.is_invalid() {
                // A cut-off instruction at the end of what could be read.
                break;
            }
            text.clear();
            fmt.format(&ins, &mut text);
            let bytes =
                self.code[start..start + ins.len()].iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
            out.push((bytes, text.clone()));
        }
        out
    }

    /// A multi-line register dump with the code at the PC.
    pub fn render(&self, symbols: &Symbols) -> String {
        let r = &self.regs;
        let s = &self.sregs;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "  RIP: {:04x}:{:016x} <{}>  ({}-bit code)",
            s.cs.selector,
            r.rip,
            symbols.describe(self.pc_linear),
            self.bitness
        );
        let dis = self.disassemble(3);
        if dis.is_empty() {
            let _ = writeln!(o, "  Code: unreadable (the page at the PC is not mapped or not in RAM)");
        }
        for (i, (bytes, text)) in dis.iter().enumerate() {
            let marker = if i == 0 { "=>" } else { "  " };
            let _ = writeln!(o, "  {marker} {bytes:<30} {text}");
        }
        let _ = writeln!(o, "  RSP: {:04x}:{:016x} EFLAGS: {:08x}", s.ss.selector, r.rsp, r.rflags);
        let rows = [
            ("RAX", r.rax, "RBX", r.rbx, "RCX", r.rcx),
            ("RDX", r.rdx, "RSI", r.rsi, "RDI", r.rdi),
            ("RBP", r.rbp, "R08", r.r8, "R09", r.r9),
            ("R10", r.r10, "R11", r.r11, "R12", r.r12),
            ("R13", r.r13, "R14", r.r14, "R15", r.r15),
        ];
        for (a, av, b, bv, c, cv) in rows {
            let _ = writeln!(o, "  {a}: {av:016x} {b}: {bv:016x} {c}: {cv:016x}");
        }
        let _ = writeln!(o, "  CR0: {:016x} CR2: {:016x} CR3: {:016x}", s.cr0, s.cr2, s.cr3);
        let _ = writeln!(o, "  CR4: {:016x} EFER: {:016x} CR8: {:x}", s.cr4, s.efer, s.cr8);
        for (name, seg) in
            [("CS", &s.cs), ("SS", &s.ss), ("DS", &s.ds), ("ES", &s.es), ("FS", &s.fs), ("GS", &s.gs), ("TR", &s.tr)]
        {
            let _ = writeln!(o, "  {name}: {}", segment(seg));
        }
        let _ = writeln!(
            o,
            "  GDT: base {:016x} limit {:04x}   IDT: base {:016x} limit {:04x}",
            s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit
        );
        o
    }
}

fn segment(seg: &kvm_segment) -> String {
    format!(
        "sel {:04x} base {:016x} limit {:08x} type {:x} dpl {} {}{}{}",
        seg.selector,
        seg.base,
        seg.limit,
        seg.type_,
        seg.dpl,
        if seg.present == 1 { "P" } else { "-" },
        if seg.l == 1 { " L" } else { "" },
        if seg.db == 1 { " D/B" } else { "" },
    )
}

pub use crate::kvm::host_has_hw_virt;

/// One line saying what happened, plus any hint.
pub fn headline(crash: &Crash, snap: Option<&CpuSnapshot>) -> String {
    match crash {
        Crash::Shutdown => "the guest triple-faulted (KVM_EXIT_SHUTDOWN): an exception could not be delivered, usually a fault with no valid IDT, stack or handler".into(),
        Crash::Internal { suberror, data } => {
            let what = match suberror {
                1 => "instruction emulation failed (KVM_INTERNAL_ERROR_EMULATION)",
                2 => "an exception occurred while delivering another (KVM_INTERNAL_ERROR_SIMUL_EX)",
                3 => "an event could not be delivered (KVM_INTERNAL_ERROR_DELIVERY_EV)",
                4 => "KVM met an exit reason it does not handle (KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON)",
                _ => "an unknown internal error",
            };
            let words = data.iter().map(|d| format!("{d:#x}")).collect::<Vec<_>>().join(" ");
            let mut s = format!("KVM internal error {suberror}: {what}");
            if !words.is_empty() {
                let _ = write!(s, " [data: {words}]");
            }
            if *suberror == 1 {
                let insn = snap.and_then(|s| s.disassemble(1).into_iter().next()).map(|(_, t)| t);
                if let Some(t) = insn {
                    let _ = write!(s, "\n  the instruction KVM could not emulate: {t}");
                }
                if !host_has_hw_virt() {
                    s.push_str("\n  hint: this host has no VMX/SVM, so guest ring 0 runs through KVM's instruction emulator, which rejects SSE/AVX arithmetic, x87, int3, popcnt and more (shared/docs/platform.md); build kernel code without them");
                }
            }
            s
        }
        Crash::FailEntry { reason } => format!("KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x}): the vCPU state is invalid"),
        Crash::Halted => "the guest executed hlt with interrupts disabled (or with nothing that could wake it): it can never resume".into(),
        Crash::Unexpected(what) => format!("unexpected vCPU exit: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(code: &[u8], bitness: u32) -> CpuSnapshot {
        CpuSnapshot {
            regs: kvm_regs::default(),
            sregs: kvm_sregs::default(),
            pc_linear: 0x1000,
            code: code.to_vec(),
            bitness,
        }
    }

    #[test]
    fn decodes_the_instruction_at_the_pc() {
        // xorps xmm0,xmm0 ; int3
        let s = snap(&[0x0f, 0x57, 0xc0, 0xcc], 64);
        let d = s.disassemble(3);
        assert_eq!(d[0], ("0f 57 c0".to_string(), "xorps xmm0,xmm0".to_string()));
        assert_eq!(d[1].1, "int3");
        let head = headline(&Crash::Internal { suberror: 1, data: vec![] }, Some(&s));
        assert!(head.contains("xorps xmm0,xmm0"), "{head}");
    }

    #[test]
    fn truncated_code_stops_cleanly() {
        let s = snap(&[0x48, 0x8b], 64);
        assert!(s.disassemble(3).is_empty());
        assert!(s.render(&Symbols::default()).contains("Code: unreadable"));
    }

    #[test]
    fn real_mode_is_decoded_as_16_bit() {
        let mut sregs = kvm_sregs::default();
        assert_eq!(bitness(&sregs), 16);
        sregs.cr0 = mm_core::abi::cpu::CR0_PE;
        sregs.cs.db = 1;
        assert_eq!(bitness(&sregs), 32);
        sregs.efer = mm_core::abi::cpu::EFER_LMA;
        sregs.cs.l = 1;
        assert_eq!(bitness(&sregs), 64);
    }
}
