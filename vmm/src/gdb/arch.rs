//! The register set gdb sees: gdbstub_arch's x86-64 core + SSE registers,
//! followed by the segment bases and the control registers, with a target
//! description that names them all, so `info registers` and `p $cr3` work
//! without a `monitor` detour.
//!
//! gdb lays out the `g` packet in the order the target description lists
//! registers, so [`TARGET_XML`] and [`Regs::gdb_serialize`] must list them
//! in the same order (checked by a unit test).

use gdbstub::arch::{Arch, Registers};
use gdbstub_arch::x86::reg::id::X86_64CoreRegId;
use gdbstub_arch::x86::reg::X86_64CoreRegs;

/// x86-64 as this VMM exposes it: core + SSE (as gdbstub_arch's
/// `X86_64_SSE`), then `fs_base`, `gs_base`, `cr0`, `cr2`, `cr3`, `cr4`,
/// `cr8`, `efer`.
pub enum X86_64System {}

impl Arch for X86_64System {
    type Usize = u64;
    type Registers = Regs;
    // Only used for single-register access (`p`/`P`), which this stub does
    // not offer: gdb then reads and writes the whole set with `g`/`G`.
    type RegId = X86_64CoreRegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// The system registers appended after the core set, in `g`-packet order.
pub const SYSTEM_REGS: [&str; 8] = ["fs_base", "gs_base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer"];

/// Every register of [`X86_64System`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Regs {
    /// General, segment selector, x87 and SSE registers.
    pub core: X86_64CoreRegs,
    /// Values of [`SYSTEM_REGS`], in that order.
    pub system: [u64; 8],
}

impl Regs {
    /// The general, segment-selector and system registers from KVM's
    /// state (the live vCPU's or a snapshot's); the x87/SSE part is left
    /// as it is.
    pub fn set_from_kvm(&mut self, r: &kvm_bindings::kvm_regs, s: &kvm_bindings::kvm_sregs) {
        let c = &mut self.core;
        c.regs = [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14,
            r.r15,
        ];
        c.rip = r.rip;
        c.eflags = r.rflags as u32;
        c.segments.cs = s.cs.selector.into();
        c.segments.ss = s.ss.selector.into();
        c.segments.ds = s.ds.selector.into();
        c.segments.es = s.es.selector.into();
        c.segments.fs = s.fs.selector.into();
        c.segments.gs = s.gs.selector.into();
        self.system = [s.fs.base, s.gs.base, s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer];
    }
}

/// Byte length of the core part of a `g` packet (gdbstub_arch's layout).
const CORE_LEN: usize = 0x218;

impl Registers for Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for v in self.system {
            for b in v.to_le_bytes() {
                write_byte(Some(b));
            }
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() < CORE_LEN + 8 * SYSTEM_REGS.len() {
            return Err(());
        }
        self.core.gdb_deserialize(&bytes[..CORE_LEN])?;
        for (i, chunk) in bytes[CORE_LEN..].chunks_exact(8).take(SYSTEM_REGS.len()).enumerate() {
            self.system[i] = u64::from_le_bytes(chunk.try_into().map_err(|_| ())?);
        }
        Ok(())
    }
}

/// gdb's own 64bit-core.xml and 64bit-sse.xml (so gdb recognises the
/// architecture), 64bit-segments.xml (which gives `$fs_base`), and a feature
/// of ours for the control registers, as QEMU's stub has them.
pub const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
<architecture>i386:x86-64</architecture>
<feature name="org.gnu.gdb.i386.core">
<flags id="i386_eflags" size="4">
<field name="CF" start="0" end="0"/><field name="" start="1" end="1"/><field name="PF" start="2" end="2"/>
<field name="AF" start="4" end="4"/><field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
<field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/><field name="DF" start="10" end="10"/>
<field name="OF" start="11" end="11"/><field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
<field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/><field name="VIF" start="19" end="19"/>
<field name="VIP" start="20" end="20"/><field name="ID" start="21" end="21"/>
</flags>
<reg name="rax" bitsize="64" type="int64"/><reg name="rbx" bitsize="64" type="int64"/>
<reg name="rcx" bitsize="64" type="int64"/><reg name="rdx" bitsize="64" type="int64"/>
<reg name="rsi" bitsize="64" type="int64"/><reg name="rdi" bitsize="64" type="int64"/>
<reg name="rbp" bitsize="64" type="data_ptr"/><reg name="rsp" bitsize="64" type="data_ptr"/>
<reg name="r8" bitsize="64" type="int64"/><reg name="r9" bitsize="64" type="int64"/>
<reg name="r10" bitsize="64" type="int64"/><reg name="r11" bitsize="64" type="int64"/>
<reg name="r12" bitsize="64" type="int64"/><reg name="r13" bitsize="64" type="int64"/>
<reg name="r14" bitsize="64" type="int64"/><reg name="r15" bitsize="64" type="int64"/>
<reg name="rip" bitsize="64" type="code_ptr"/>
<reg name="eflags" bitsize="32" type="i386_eflags"/>
<reg name="cs" bitsize="32" type="int32"/><reg name="ss" bitsize="32" type="int32"/>
<reg name="ds" bitsize="32" type="int32"/><reg name="es" bitsize="32" type="int32"/>
<reg name="fs" bitsize="32" type="int32"/><reg name="gs" bitsize="32" type="int32"/>
<reg name="st0" bitsize="80" type="i387_ext"/><reg name="st1" bitsize="80" type="i387_ext"/>
<reg name="st2" bitsize="80" type="i387_ext"/><reg name="st3" bitsize="80" type="i387_ext"/>
<reg name="st4" bitsize="80" type="i387_ext"/><reg name="st5" bitsize="80" type="i387_ext"/>
<reg name="st6" bitsize="80" type="i387_ext"/><reg name="st7" bitsize="80" type="i387_ext"/>
<reg name="fctrl" bitsize="32" type="int" group="float"/><reg name="fstat" bitsize="32" type="int" group="float"/>
<reg name="ftag" bitsize="32" type="int" group="float"/><reg name="fiseg" bitsize="32" type="int" group="float"/>
<reg name="fioff" bitsize="32" type="int" group="float"/><reg name="foseg" bitsize="32" type="int" group="float"/>
<reg name="fooff" bitsize="32" type="int" group="float"/><reg name="fop" bitsize="32" type="int" group="float"/>
</feature>
<feature name="org.gnu.gdb.i386.sse">
<vector id="v4f" type="ieee_single" count="4"/><vector id="v2d" type="ieee_double" count="2"/>
<vector id="v16i8" type="int8" count="16"/><vector id="v8i16" type="int16" count="8"/>
<vector id="v4i32" type="int32" count="4"/><vector id="v2i64" type="int64" count="2"/>
<union id="vec128">
<field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/>
<field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>
<field name="uint128" type="uint128"/>
</union>
<flags id="i386_mxcsr" size="4">
<field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/><field name="ZE" start="2" end="2"/>
<field name="OE" start="3" end="3"/><field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
<field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/><field name="DM" start="8" end="8"/>
<field name="ZM" start="9" end="9"/><field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
<field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
</flags>
<reg name="xmm0" bitsize="128" type="vec128" regnum="40"/><reg name="xmm1" bitsize="128" type="vec128"/>
<reg name="xmm2" bitsize="128" type="vec128"/><reg name="xmm3" bitsize="128" type="vec128"/>
<reg name="xmm4" bitsize="128" type="vec128"/><reg name="xmm5" bitsize="128" type="vec128"/>
<reg name="xmm6" bitsize="128" type="vec128"/><reg name="xmm7" bitsize="128" type="vec128"/>
<reg name="xmm8" bitsize="128" type="vec128"/><reg name="xmm9" bitsize="128" type="vec128"/>
<reg name="xmm10" bitsize="128" type="vec128"/><reg name="xmm11" bitsize="128" type="vec128"/>
<reg name="xmm12" bitsize="128" type="vec128"/><reg name="xmm13" bitsize="128" type="vec128"/>
<reg name="xmm14" bitsize="128" type="vec128"/><reg name="xmm15" bitsize="128" type="vec128"/>
<reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/>
</feature>
<feature name="org.gnu.gdb.i386.segments">
<reg name="fs_base" bitsize="64" type="int"/><reg name="gs_base" bitsize="64" type="int"/>
</feature>
<feature name="org.mmemu.x86.sys">
<flags id="x86_cr0" size="8">
<field name="PE" start="0" end="0"/><field name="MP" start="1" end="1"/><field name="EM" start="2" end="2"/>
<field name="TS" start="3" end="3"/><field name="ET" start="4" end="4"/><field name="NE" start="5" end="5"/>
<field name="WP" start="16" end="16"/><field name="AM" start="18" end="18"/><field name="NW" start="29" end="29"/>
<field name="CD" start="30" end="30"/><field name="PG" start="31" end="31"/>
</flags>
<flags id="x86_cr4" size="8">
<field name="VME" start="0" end="0"/><field name="PVI" start="1" end="1"/><field name="TSD" start="2" end="2"/>
<field name="DE" start="3" end="3"/><field name="PSE" start="4" end="4"/><field name="PAE" start="5" end="5"/>
<field name="MCE" start="6" end="6"/><field name="PGE" start="7" end="7"/><field name="PCE" start="8" end="8"/>
<field name="OSFXSR" start="9" end="9"/><field name="OSXMMEXCPT" start="10" end="10"/>
<field name="UMIP" start="11" end="11"/><field name="LA57" start="12" end="12"/>
<field name="FSGSBASE" start="16" end="16"/><field name="PCIDE" start="17" end="17"/>
<field name="OSXSAVE" start="18" end="18"/><field name="SMEP" start="20" end="20"/>
<field name="SMAP" start="21" end="21"/><field name="PKE" start="22" end="22"/>
</flags>
<flags id="x86_efer" size="8">
<field name="SCE" start="0" end="0"/><field name="LME" start="8" end="8"/><field name="LMA" start="10" end="10"/>
<field name="NXE" start="11" end="11"/><field name="SVME" start="12" end="12"/><field name="FFXSR" start="14" end="14"/>
</flags>
<reg name="cr0" bitsize="64" type="x86_cr0"/><reg name="cr2" bitsize="64" type="int"/>
<reg name="cr3" bitsize="64" type="int"/><reg name="cr4" bitsize="64" type="x86_cr4"/>
<reg name="cr8" bitsize="64" type="int"/><reg name="efer" bitsize="64" type="x86_efer"/>
</feature>
</target>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_lists_registers_in_serialisation_order() {
        let names: Vec<&str> =
            TARGET_XML.split("<reg name=\"").skip(1).map(|s| s.split('"').next().unwrap_or_default()).collect();
        // 16 GPRs + rip + eflags + 6 selectors + 8 st + 8 x87 control = 40,
        // 16 xmm + mxcsr = 57, then the system registers.
        assert_eq!(names.len(), 57 + SYSTEM_REGS.len());
        assert_eq!(names[16], "rip");
        assert_eq!(names[40], "xmm0");
        assert_eq!(names[56], "mxcsr");
        assert_eq!(&names[57..], &SYSTEM_REGS);
    }

    #[test]
    fn registers_round_trip() {
        let mut r = Regs::default();
        r.core.rip = 0xffff_ffff_8020_0000;
        r.core.regs[3] = 7;
        r.system = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut bytes = Vec::new();
        r.gdb_serialize(|b| bytes.push(b.unwrap_or(0)));
        assert_eq!(bytes.len(), CORE_LEN + 64);
        let mut back = Regs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, r);
        assert!(back.gdb_deserialize(&bytes[..100]).is_err());
    }
}
