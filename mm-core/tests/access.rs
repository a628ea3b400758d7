//! Walker conformance suite in the spirit of kvm-unit-tests' x86/access.c:
//! every combination of CPU mode, access kind, PDE and PTE flags and
//! control bits is translated, and the outcome and #PF error code are
//! compared with an oracle written here from the Intel SDM (vol. 3, 4.6
//! and 4.7) and AMD's APM (vol. 2, 5.3-5.6) without calling the code
//! under test, for both vendors: they differ in bit 8 of the PML4E, which
//! AMD reserves (KVM on an AMD host faults on it with error code 0x9)
//! and Intel ignores.

use mm_core::addr::{PageSize, PhysAddr, VirtAddr};
use mm_core::mem::{PhysMem, VecMem};
use mm_core::paging::{translate, Access, CpuContext, CpuVendor, Fault};

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const PS: u64 = 0x80;
const G: u64 = 0x100;
const NX: u64 = 1 << 63;

const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
const PT: u64 = 0x4000;
const FRAME: u64 = 0x5000;
const VA: u64 = 0x4020_1abc; // PML4 0, PDPT 1, PD 1, PT 1
const MAXPHY: u8 = 40;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Supervisor,
    User,
    /// Implicit supervisor access at CPL 3.
    Implicit,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    mode: Mode,
    write: bool,
    fetch: bool,
    pde: u64,
    pte: u64,
    wp: bool,
    nxe: bool,
    smep: bool,
    smap: bool,
    ac: bool,
    vendor: CpuVendor,
    /// Bit 8 set in the PML4E.
    root_g: bool,
}

fn memory(pde: u64, pte: u64, large: bool) -> VecMem {
    memory_g(false, pde, pte, large)
}

/// The tables, with bit 8 in the PML4E if `root_g`.
fn memory_g(root_g: bool, pde: u64, pte: u64, large: bool) -> VecMem {
    let mut m = VecMem::new(0x10_0000);
    m.write_u64(PhysAddr(PML4), PDPT | P | RW | US | if root_g { G } else { 0 }).unwrap();
    m.write_u64(PhysAddr(PDPT + 8), PD | P | RW | US).unwrap();
    if large {
        m.write_u64(PhysAddr(PD + 8), pde).unwrap();
    } else {
        m.write_u64(PhysAddr(PD + 8), PT | pde).unwrap();
        m.write_u64(PhysAddr(PT + 8), FRAME | pte).unwrap();
    }
    m
}

fn context(c: &Case) -> CpuContext {
    CpuContext {
        cr3: PML4,
        wp: c.wp,
        pge: false,
        pcide: false,
        smep: c.smep,
        smap: c.smap,
        pke: false,
        la57: false,
        nxe: c.nxe,
        ac: c.ac,
        cpl: if c.mode == Mode::Supervisor { 0 } else { 3 },
        maxphyaddr: MAXPHY,
        pkru: 0,
        gbpages: false,
        vendor: c.vendor,
    }
}

fn access(c: &Case) -> Access {
    match (c.mode, c.write, c.fetch) {
        (Mode::Implicit, true, _) => Access::ImplicitWrite,
        (Mode::Implicit, false, _) => Access::ImplicitRead,
        (_, _, true) => Access::Execute,
        (_, true, _) => Access::Write,
        _ => Access::Read,
    }
}

/// The SDM's answer for entries `entries` (root first, after the two
/// always-permissive upper levels): `Ok` or the error code.
fn oracle(c: &Case, entries: &[u64]) -> Result<(), u32> {
    let user_access = c.mode == Mode::User;
    let mut code = 0;
    if c.write {
        code |= 2;
    }
    if user_access {
        code |= 4;
    }
    if c.fetch && (c.nxe || c.smep) {
        code |= 0x10;
    }
    // APM vol. 2, figure 5-18: bit 8 of a PML4E is MBZ on AMD; the SDM's
    // table 4-15 says "ignored". The PML4E is read first.
    if c.root_g && c.vendor == CpuVendor::Amd {
        return Err(code | 1 | 8);
    }
    // Table 4-19/4-20: a not-present entry stops the walk; in a present one
    // bit 63 without NXE is reserved.
    for &e in entries {
        if e & P == 0 {
            return Err(code);
        }
        if e & NX != 0 && !c.nxe {
            return Err(code | 1 | 8);
        }
    }
    let writable = entries.iter().all(|e| e & RW != 0);
    let user_page = entries.iter().all(|e| e & US != 0);
    let xd = c.nxe && entries.iter().any(|e| e & NX != 0);
    // 4.6.1, one clause per sentence of the SDM.
    let allowed = if user_access {
        user_page && if c.fetch { !xd } else { !c.write || writable }
    } else if c.fetch {
        let smep_ok = !user_page || !c.smep;
        smep_ok && !xd
    } else {
        let smap_ok = !user_page || !c.smap || (c.ac && c.mode != Mode::Implicit);
        let write_ok = !c.write || !c.wp || writable;
        smap_ok && write_ok
    };
    if allowed {
        Ok(())
    } else {
        Err(code | 1)
    }
}

fn check(c: &Case, mem: &VecMem, entries: &[u64], expect_pa: u64) {
    let got = translate(mem, &context(c), VirtAddr(VA), access(c));
    let want = oracle(c, entries);
    match (&got, want) {
        (Ok(t), Ok(())) => assert_eq!(t.pa, PhysAddr(expect_pa), "{c:x?}"),
        (Err(Fault::PageFault(pf)), Err(code)) => {
            assert_eq!(pf.error_code.0, code, "{c:x?}: {}", got.unwrap_err())
        }
        _ => panic!("{c:x?}: walker {got:?}, oracle {want:x?}"),
    }
}

fn flag_sets() -> impl Iterator<Item = u64> {
    (0..16u64).map(|i| {
        (if i & 1 != 0 { P } else { 0 })
            | (if i & 2 != 0 { RW } else { 0 })
            | (if i & 4 != 0 { US } else { 0 })
            | (if i & 8 != 0 { NX } else { 0 })
    })
}

fn cases(mut f: impl FnMut(Case)) {
    for vendor in [CpuVendor::Intel, CpuVendor::Amd] {
        cases_on(vendor, &mut f);
    }
}

fn cases_on(vendor: CpuVendor, f: &mut impl FnMut(Case)) {
    for mode in [Mode::Supervisor, Mode::User, Mode::Implicit] {
        for (write, fetch) in [(false, false), (true, false), (false, true)] {
            if mode == Mode::Implicit && fetch {
                continue;
            }
            for ctl in 0..32u32 {
                let c = Case {
                    mode,
                    write,
                    fetch,
                    pde: 0,
                    pte: 0,
                    wp: ctl & 1 != 0,
                    nxe: ctl & 2 != 0,
                    smep: ctl & 4 != 0,
                    smap: ctl & 8 != 0,
                    ac: ctl & 16 != 0,
                    vendor,
                    root_g: false,
                };
                f(c);
            }
        }
    }
}

#[test]
fn all_combinations_4k() {
    let mut n = 0;
    for root_g in [false, true] {
        for pde in flag_sets() {
            for pte in flag_sets() {
                let mem = memory_g(root_g, pde, pte, false);
                cases(|mut c| {
                    c.pde = pde;
                    c.pte = pte;
                    c.root_g = root_g;
                    check(&c, &mem, &[pde, pte], FRAME | (VA & 0xfff));
                    n += 1;
                });
            }
        }
    }
    assert_eq!(n, 2 * 16 * 16 * 32 * 8 * 2, "both vendors, with and without PML4E bit 8");
}

#[test]
fn all_combinations_2m() {
    for root_g in [false, true] {
        for pde in flag_sets() {
            let mem = memory_g(root_g, 0x20_0000 | PS | pde, 0, true);
            cases(|mut c| {
                c.pde = pde;
                c.root_g = root_g;
                check(&c, &mem, &[pde], 0x20_0000 | (VA & 0x1f_ffff));
            });
        }
    }
}

#[test]
fn bit8_is_reserved_in_the_pml4e_on_amd_only() {
    let ok = P | RW | US;
    let mut c = base_case();
    // Bit 8 in the PDPTE and PDE (non-leaf) and the PTE: allowed on both.
    let mut mem = memory(ok | G, ok | G, false);
    mem.write_u64(PhysAddr(PDPT + 8), PD | ok | G).unwrap();
    for vendor in [CpuVendor::Intel, CpuVendor::Amd] {
        c.vendor = vendor;
        assert!(translate(&mem, &context(&c), VirtAddr(VA), Access::Write).is_ok(), "{vendor:?}");
    }
    // In the PML4E: a reserved-bit fault on AMD, nothing on Intel.
    let mem = memory_g(true, ok, ok, false);
    c.vendor = CpuVendor::Intel;
    assert!(translate(&mem, &context(&c), VirtAddr(VA), Access::Write).is_ok());
    c.vendor = CpuVendor::Amd;
    expect_rsvd(&mem, &c, false);
    // A supervisor read, as the in-guest test probes it: error code 0x9.
    c.mode = Mode::Supervisor;
    c.write = false;
    let e = translate(&mem, &context(&c), VirtAddr(VA), Access::Read).unwrap_err();
    assert_eq!(e.page_fault().map(|pf| pf.error_code.0), Some(0x9), "{e}");
}

fn base_case() -> Case {
    Case {
        mode: Mode::User,
        write: true,
        fetch: false,
        pde: 0,
        pte: 0,
        wp: true,
        nxe: true,
        smep: false,
        smap: false,
        ac: false,
        vendor: CpuVendor::Intel,
        root_g: false,
    }
}

fn expect_rsvd(mem: &VecMem, c: &Case, gbpages: bool) {
    let mut ctx = context(c);
    ctx.gbpages = gbpages;
    let e = translate(mem, &ctx, VirtAddr(VA), access(c)).unwrap_err();
    let pf = e.page_fault().unwrap_or_else(|| panic!("{e}"));
    // RSVD with P=1, plus W/U for a user write.
    assert_eq!(pf.error_code.0, 0x8 | 0x1 | 0x2 | 0x4, "{e}");
}

#[test]
fn reserved_bits() {
    let c = base_case();
    let ok = P | RW | US;
    // Address bits at and above MAXPHYADDR, at every level.
    for (at, base) in [(PML4, PDPT), (PDPT + 8, PD), (PD + 8, PT), (PT + 8, FRAME)] {
        for bit in [MAXPHY as u32, 51] {
            let mut mem = memory(ok, ok, false);
            mem.write_u64(PhysAddr(at), base | ok | (1 << bit)).unwrap();
            expect_rsvd(&mem, &c, false);
        }
        // One bit below MAXPHYADDR is an address bit: outside memory or
        // a fine translation, never RSVD.
        let mut mem = memory(ok, ok, false);
        mem.write_u64(PhysAddr(at), base | ok | (1 << (MAXPHY - 1))).unwrap();
        let r = translate(&mem, &context(&c), VirtAddr(VA), Access::Write);
        assert!(matches!(r, Ok(_) | Err(Fault::TableOutsideMemory { .. })), "{r:?}");
    }
    // PS in the PML4E.
    let mut mem = memory(ok, ok, false);
    mem.write_u64(PhysAddr(PML4), PDPT | ok | PS).unwrap();
    expect_rsvd(&mem, &c, true);
    // PS in the PDPTE without 1 GiB pages; with them, bits 13..29.
    let mut mem = memory(ok, ok, false);
    mem.write_u64(PhysAddr(PDPT + 8), 0x4000_0000 | ok | PS).unwrap();
    expect_rsvd(&mem, &c, false);
    let mut ctx = context(&c);
    ctx.gbpages = true;
    let t = translate(&mem, &ctx, VirtAddr(VA), Access::Write).unwrap();
    assert_eq!(t.size, PageSize::Size1G);
    assert_eq!(t.pa, PhysAddr(0x4000_0000 | (VA & 0x3fff_ffff)));
    mem.write_u64(PhysAddr(PDPT + 8), 0x4000_0000 | (1 << 20) | ok | PS).unwrap();
    expect_rsvd(&mem, &c, true);
    // 2 MiB: bits 13..20 reserved, bit 12 is PAT.
    for bit in 13..=20 {
        let mem = memory(0x20_0000 | (1 << bit) | ok | PS, 0, true);
        expect_rsvd(&mem, &c, false);
    }
    let mem = memory(0x20_0000 | (1 << 12) | ok | PS, 0, true);
    let t = translate(&mem, &context(&c), VirtAddr(VA), Access::Write).unwrap();
    assert_eq!(t.pa, PhysAddr(0x20_0000 | (VA & 0x1f_ffff)));
    // Reserved beats not-present below it, and a non-present entry's other
    // bits are ignored.
    let mem = memory(ok | NX, 0, false);
    let mut c2 = c;
    c2.nxe = false;
    expect_rsvd(&mem, &c2, false);
    let mem = memory(ok, NX | (1 << 51), false);
    let e = translate(&mem, &context(&c2), VirtAddr(VA), Access::Write).unwrap_err();
    assert_eq!(e.page_fault().unwrap().error_code.0, 0x6);
}

#[test]
fn protection_keys() {
    // Key 7 on the PTE; PKRU AD/WD for key 7 in every combination.
    for (ad, wd) in [(false, false), (true, false), (false, true), (true, true)] {
        for mode in [Mode::Supervisor, Mode::User] {
            for (write, fetch) in [(false, false), (true, false), (false, true)] {
                for wp in [false, true] {
                    for pke in [false, true] {
                        let ok = P | RW | US;
                        let mem = memory(ok, ok | (7 << 59), false);
                        let mut c = base_case();
                        c.mode = mode;
                        c.write = write;
                        c.fetch = fetch;
                        c.wp = wp;
                        let mut ctx = context(&c);
                        ctx.pke = pke;
                        ctx.pkru = (ad as u32) << 14 | (wd as u32) << 15;
                        let r = translate(&mem, &ctx, VirtAddr(VA), access(&c));
                        // SDM 4.6.2: keys apply to data accesses to user-mode
                        // addresses; WD stops supervisor writes only with WP.
                        let denied = pke && !fetch && (ad || (wd && write && (wp || mode == Mode::User)));
                        let mut code = 1 | 0x20;
                        code |= if write { 2 } else { 0 };
                        code |= if mode == Mode::User { 4 } else { 0 };
                        match r {
                            Ok(_) => assert!(!denied),
                            Err(e) => {
                                assert!(denied, "{e}");
                                assert_eq!(e.page_fault().unwrap().error_code.0, code);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn non_canonical_is_not_a_page_fault() {
    let mem = memory(P | RW | US, P | RW | US, false);
    let c = base_case();
    for va in [0x0000_8000_0000_0000u64, 0x7fff_0000_0000_0000, 0xfff0_0000_0000_0000] {
        let r = translate(&mem, &context(&c), VirtAddr(va), Access::Read);
        assert_eq!(r.unwrap_err(), Fault::NonCanonical(VirtAddr(va)));
    }
}
