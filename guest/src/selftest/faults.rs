//! Self-tests of the kernel's page tables and fault handling: W^X, the
//! NULL page, write protection, and faults caught and explained (a vmalloc
//! guard page, a non-canonical address). Faults are provoked through the
//! fault-tolerant probes in arch/traps.rs, so the kernel survives them.

use super::check;
use crate::arch::traps::{
    exception_table, last_fixup_fault, probe_read, probe_write, search_exception_table, EX_TYPE_CALL_FETCH,
    EX_TYPE_FAULT,
};
use crate::detail;
use crate::fmt::StackString;
use crate::mm::{self, layout, vmalloc, KERNEL_PT, PAGES};
use mm_core::addr::VirtAddr;
use mm_core::paging::{walk, PageSize, PteFlags};

/// A read-only object for the write-protection check.
static READ_ONLY: u64 = 0x5eed;

/// The kernel's own tables, checked through mm-core's walker and against
/// the CPU.
pub fn paging() {
    let mapper = KERNEL_PT.with(|m| *m);
    let (mut total, mut wx, mut user) = (0u64, 0u64, 0u64);
    PAGES.with(|p| {
        for m in mapper.mappings(&p.phys).flatten() {
            total += 1;
            if m.flags.contains(PteFlags::RW) && !m.flags.contains(PteFlags::NX) {
                wx += 1;
            }
            if m.flags.contains(PteFlags::USER) {
                user += 1;
            }
        }
    });
    check(
        "paging",
        "kernel_w_xor_x",
        total > 0 && wx == 0 && user == 0,
        &detail!(
            "{} mappings, {} writable+executable, {} user-accessible",
            crate::fmt::Dec(total),
            crate::fmt::Dec(wx),
            crate::fmt::Dec(user)
        ),
    );

    let text = paging as *const () as u64;
    let ctx = mapper.context();
    let t = PAGES.with(|p| walk(&p.phys, &ctx, VirtAddr(text)));
    let text_ok = t.is_ok_and(|t| {
        !t.flags.contains(PteFlags::RW) && !t.flags.contains(PteFlags::NX) && t.flags.contains(PteFlags::GLOBAL)
    });
    check("paging", "text_read_only_executable", text_ok, "kernel text is RX and global");

    let dm = layout::PAGE_OFFSET + (4 << 20);
    let d = PAGES.with(|p| walk(&p.phys, &ctx, VirtAddr(dm)));
    check(
        "paging",
        "direct_map_2m_pages",
        d.is_ok_and(|t| t.size == PageSize::Size2M && t.pa.0 == 4 << 20),
        "PAGE_OFFSET + 4 MiB is a 2 MiB page of physical 4 MiB",
    );

    // The software MMU and the hardware agree: a value read through a
    // kernel address equals the one read through the walker's physical
    // address in the direct map.
    let addr = &READ_ONLY as *const u64 as u64;
    let via_walker = PAGES.with(|p| walk(&p.phys, &ctx, VirtAddr(addr))).map(|t| {
        // SAFETY: the walker's physical address, read through the direct map.
        unsafe { (mm::phys_to_virt(t.pa.0) as *const u64).read_volatile() }
    });
    check(
        "paging",
        "walker_agrees_with_cpu",
        via_walker == Ok(0x5eed) && probe_read(addr) == Ok(0x5eed),
        "kernel rodata read by the CPU and through mm-core's translation",
    );

    let wp = probe_write(addr, 1);
    check(
        "paging",
        "rodata_write_faults",
        matches!(wp, Err((14, 0x3, a)) if a == addr),
        &detail!("CR0.WP: a kernel write to rodata takes #PF error code 0x3 (got {:#x})", wp.err().map_or(0, |e| e.1)),
    );
    let null = probe_read(0);
    check(
        "paging",
        "null_page_unmapped",
        matches!(null, Err((14, 0, 0))),
        "a read of address 0 takes #PF error code 0x0, CR2 0",
    );
}

/// Faults caught and named.
pub fn faults() {
    match vmalloc::vmalloc(8192, "selftest-guard") {
        Ok(va) => {
            let guard = va.0 + 8192;
            let r = probe_read(guard);
            let mut what = StackString::<120>::new();
            mm::fault::describe(guard, &mut what);
            check(
                "faults",
                "vmalloc_guard_page_caught",
                matches!(r, Err((14, 0, a)) if a == guard) && what.as_str().contains("guard page"),
                &detail!("read just past an 8 KiB area: #PF at {:#x}, explained as {}", guard, what.as_str()),
            );
            let _ = vmalloc::vfree(va);
        }
        Err(_) => check("faults", "vmalloc_guard_page_caught", false, "vmalloc failed"),
    }
    let r = probe_read(0x8000_0000_0000);
    check("faults", "non_canonical_is_gp", matches!(r, Err((13, 0, _))), "a non-canonical address raises #GP, not #PF");
    exception_table_checks();
}

/// The exception table as linked: every entry's addresses in kernel text,
/// found by the handler's search; an address without an entry finds none;
/// and a fault fixed up through it reports what the CPU said.
fn exception_table_checks() {
    let table = exception_table();
    let (ts, te) = layout::KernelImage::get().text;
    let in_text = |a: u64| a >= ts && a < te;
    let well_formed = table.iter().all(|e| {
        in_text(e.insn)
            && in_text(e.fixup)
            && (e.kind == EX_TYPE_FAULT || e.kind == EX_TYPE_CALL_FETCH)
            && search_exception_table(e.insn, e.kind).is_some_and(|f| f.fixup == e.fixup)
    });
    let kinds = |k| table.iter().filter(|e| e.kind == k).count() as u64;
    let unrelated = exception_table_checks as *const () as u64;
    let none = search_exception_table(unrelated, EX_TYPE_FAULT).is_none()
        && search_exception_table(unrelated, EX_TYPE_CALL_FETCH).is_none();
    check(
        "faults",
        "exception_table_well_formed",
        // probe read, probe write and the APIC's wrmsr; the exec probe.
        well_formed && kinds(EX_TYPE_FAULT) >= 3 && kinds(EX_TYPE_CALL_FETCH) >= 1 && none,
        &detail!(
            "{} entries ({} fault, {} call-fetch), all in kernel text and found by the search; none for other code",
            crate::fmt::Dec(table.len() as u64),
            crate::fmt::Dec(kinds(EX_TYPE_FAULT)),
            crate::fmt::Dec(kinds(EX_TYPE_CALL_FETCH))
        ),
    );
    // A fault through the table: the per-CPU record holds the CPU's
    // report, and the code after the fix-up ran (the probe returned).
    let addr = layout::PAGE_OFFSET - 0x1000;
    let r = probe_read(addr);
    let w = probe_write(addr, 7);
    check(
        "faults",
        "exception_table_fixes_up",
        r == Err((14, 0, addr)) && w == Err((14, 2, addr)) && last_fixup_fault() == (14, 2, addr),
        &detail!("read and write of the unmapped {:#x} resumed at their fix-ups with #PF 0x0 and 0x2", addr),
    );
}
