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

/// core's decimal integer and float formatting use SSE in their digit
/// loops (platform.md: printing 2500 killed a ring-0 guest). The kernel
/// must format decimals with its own code (`Dec`, mm-core's `fmt`). core's
/// own panic paths (bounds checks) do link the integer `Display` in, so
/// the check is on references: no kernel or mm-core function may refer to
/// those functions, directly or through a pointer slot (GOT, argument
/// tables).
#[test]
fn kernel_code_never_formats_integers_with_core() {
    let elf = common::guest_elf();
    let file = object::File::parse(&*elf).expect("guest ELF parses");
    let kinds = ["u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32", "f64"];
    let is_decimal_fmt = |n: &str| {
        kinds
            .iter()
            .any(|t| n == format!("<{t} as core::fmt::Display>::fmt") || n == format!("<{t} as core::fmt::Debug>::fmt"))
            || n.contains("core::fmt::float")
    };
    let bad: std::collections::HashSet<u64> = file
        .symbols()
        .filter(|s| {
            s.kind() == SymbolKind::Text
                && is_decimal_fmt(&format!("{:#}", rustc_demangle::demangle(s.name().unwrap_or(""))))
        })
        .map(|s| s.address())
        .collect();
    // Pointer slots holding those addresses.
    let mut targets = bad.clone();
    // Loaded sections only: debug info holds function addresses too, at
    // section offsets that would alias small displacements.
    for sec in file.sections().filter(|s| s.address() != 0) {
        let (Ok(data), addr) = (sec.data(), sec.address()) else { continue };
        for (i, w) in data.chunks_exact(8).enumerate() {
            if bad.contains(&u64::from_le_bytes(w.try_into().unwrap())) {
                targets.insert(addr + 8 * i as u64);
            }
        }
    }
    let text = file.section_by_name(".text").expect(".text");
    let (text_addr, text_data) = (text.address(), text.data().unwrap());
    let mut offenders = Vec::new();
    for sym in file.symbols().filter(|s| s.kind() == SymbolKind::Text && s.size() > 0) {
        let name = format!("{:#}", rustc_demangle::demangle(sym.name().unwrap_or("")));
        if !ours(&name) || is_decimal_fmt(&name) {
            continue;
        }
        let Some(off) = sym.address().checked_sub(text_addr) else { continue };
        let Some(bytes) = text_data.get(off as usize..(off + sym.size()) as usize) else { continue };
        let mut d = Decoder::with_ip(64, bytes, sym.address(), DecoderOptions::NONE);
        while d.can_decode() {
            let ins = d.decode();
            // Code-model kernel puts addresses in sign-extended 32-bit
            // immediates and displacements as well as RIP-relative operands.
            let immediates = (0..ins.op_count()).filter_map(|i| match ins.op_kind(i) {
                OpKind::Immediate32to64 | OpKind::Immediate64 | OpKind::Immediate32 => Some(ins.immediate(i)),
                _ => None,
            });
            let mut refs = vec![ins.near_branch_target(), ins.memory_displacement64()];
            if ins.is_ip_rel_memory_operand() {
                refs.push(ins.ip_rel_memory_address());
            }
            refs.extend(immediates);
            if refs.iter().any(|a| targets.contains(a)) {
                offenders.push(format!("{name}: {:#x}: {ins}", ins.ip()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "kernel code formats numbers with core's decimal code (dies in KVM's emulator):\n{offenders:#?}"
    );
}
