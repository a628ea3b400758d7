//! A guard against the emulator trap (shared/docs/platform.md): on hosts
//! whose guest ring 0 runs through KVM's instruction emulator, SSE
//! arithmetic kills the VM. The kernel is built without SSE; this test
//! disassembles the linked guest and fails if any of the kernel's own
//! functions uses an SSE/AVX/MMX register, so a codegen or flag change
//! cannot silently break such hosts.

mod common;

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// The one deliberate SSE instruction: the `sse` command-line probe.
const ALLOWED: &[&str] = &["kernel::arch::sse_probe"];

/// True for code the project writes (the kernel and mm-core), false for
/// the precompiled core/alloc/compiler_builtins, which the kernel must
/// merely avoid calling on SSE paths.
fn ours(name: &str) -> bool {
    let plain_c = !name.contains("::") && !name.starts_with('<');
    plain_c || name.contains("kernel::") || name.contains("mm_core::")
}

/// Every (function, instruction) of ours that touches a vector register.
fn vector_instructions(elf: &[u8]) -> (Vec<(String, String)>, usize) {
    let file = object::File::parse(elf).expect("guest ELF parses");
    let text = file.section_by_name(".text").expect(".text");
    let (text_addr, text_data) = (text.address(), text.data().unwrap());
    let mut hits = Vec::new();
    let mut checked = 0;
    for sym in file.symbols().filter(|s| s.kind() == SymbolKind::Text && s.size() > 0) {
        let name = format!("{:#}", rustc_demangle::demangle(sym.name().unwrap_or("")));
        if !ours(&name) {
            continue;
        }
        checked += 1;
        let Some(off) = sym.address().checked_sub(text_addr) else { continue };
        let Some(bytes) = text_data.get(off as usize..(off + sym.size()) as usize) else { continue };
        let mut d = Decoder::with_ip(64, bytes, sym.address(), DecoderOptions::NONE);
        while d.can_decode() {
            let ins = d.decode();
            let vector = (0..ins.op_count()).any(|i| {
                ins.op_kind(i) == OpKind::Register && {
                    let r = ins.op_register(i);
                    r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_mm()
                }
            });
            if vector && ins.mnemonic() != Mnemonic::INVALID {
                hits.push((name.clone(), format!("{:#x}: {ins}", ins.ip())));
            }
        }
    }
    (hits, checked)
}

#[test]
fn kernel_code_has_no_sse() {
    let elf = common::guest_elf();
    let (hits, checked) = vector_instructions(&elf);
    assert!(checked >= 4, "only {checked} kernel functions found: is the symbol table gone?");
    // The probe proves the check sees SSE when it is there.
    assert!(
        hits.iter().any(|(f, i)| ALLOWED.contains(&f.as_str()) && i.contains("xorps")),
        "the deliberate xorps in sse_probe was not found, so the check is blind: {hits:?}"
    );
    let bad: Vec<_> = hits.iter().filter(|(f, _)| !ALLOWED.contains(&f.as_str())).collect();
    assert!(bad.is_empty(), "SSE/AVX/MMX in kernel code (dies in KVM's emulator):\n{bad:#?}");
}
