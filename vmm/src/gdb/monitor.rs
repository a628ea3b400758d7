//! `monitor` commands: page-table walks (`pt`), the mapped ranges (`mem`),
//! physical addressing (`phys`), another address space (`cr3`, `cr3 pid
//! N`), system registers (`regs`), and the guest-state views read through
//! the descriptor the guest publishes (`buddyinfo`, `slabinfo`, `meminfo`,
//! `ps`), rendered by the same code as `vmm run --inspect`.
//!
//! gdb sends a monitor line verbatim (it does not expand `$pc`), so the
//! stub evaluates its own small expressions with gdb's syntax: registers
//! (`$pc`, `$sp`, `$rax`, `$eflags`, `$cr3`, `$efer`... every register gdb
//! shows), numbers (`0x` hex or decimal), symbols with or without their
//! path (`kmain`, `kernel::kmain`, `mm_core::buddy::BuddyAllocator::alloc_pages`),
//! `+` and `-` (`$pc+8`, `$sp - 0x10`). Arguments are separated by spaces
//! unless an operator joins them.

use super::target::GdbTarget;
use crate::inspect::guest::GuestState;
use crate::inspect::{mmviews, AddressMode, GuestPhys};
use mm_core::addr::VirtAddr;
use mm_core::paging::mapper::{mappings, MappingError};
use mm_core::paging::walker::walk_trace;
use mm_core::paging::PteFlags;
use std::fmt::Write as _;
use vm_memory::{Bytes, GuestAddress};

const HELP: &str = "\
monitor commands. ADDR is an expression as gdb writes it: a number (0x-hex or decimal), a
symbol with or without its path, $register (any register gdb shows: $pc $sp $rax $eflags
$cr3 $cr8 $efer $fs_base ...), joined with + and -.
  pt ADDR...     walk the page tables for each ADDR, one line per level (crash's vtop)
                   monitor pt $pc      monitor pt kernel::kmain+0x10      monitor pt 0x0 0x400000
  mem            mapped virtual ranges with permissions, merged (QEMU's info mem)
  phys on|off    gdb's addresses are guest-physical / virtual (now: %PHYS%)
                   monitor phys on     x/2gx 0x200000      monitor phys off
  cr3 [ROOT]     read memory through the tables at ROOT; alone: back to the vCPU's CR3
                   monitor cr3 0x9000      monitor cr3 $cr3      monitor cr3
  cr3 pid N      read memory through process N's address space (monitor ps lists them)
                   monitor cr3 pid 1
  regs           control, descriptor-table and segment registers
  buddyinfo      free blocks per zone and order (/proc/buddyinfo)
  slabinfo       slab caches (/proc/slabinfo)
  meminfo        where the frames went, by owner
  ps             the guest's processes
  help           this text
Levels are named as Linux names them: PGD, PUD, PMD, PTE with 4-level paging (P4D only with LA57).
";

/// Splits a monitor line into arguments: spaces separate them, except
/// around `+` and `-`, which join their neighbours (`$pc + 8` is one).
pub fn split_args(line: &str) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut joining = false;
    for word in line.split_whitespace() {
        let starts_op = word.starts_with(['+', '-']) && !args.is_empty();
        match args.last_mut() {
            Some(last) if joining || starts_op => last.push_str(word),
            _ => args.push(word.to_string()),
        }
        joining = word.ends_with(['+', '-']);
    }
    args
}

/// Runs one monitor line and returns what gdb should print.
pub fn execute(t: &mut GdbTarget<'_>, line: &str) -> String {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("help");
    let rest = line.trim_start().strip_prefix(cmd).unwrap_or("");
    let owned = split_args(rest);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let r = match cmd {
        "help" => Ok(HELP.replace("%PHYS%", if t.view.phys { "physical" } else { "virtual" })),
        "pt" => pt(t, &args),
        "mem" => mem(t),
        "phys" => phys(t, &args),
        "cr3" => cr3(t, &args),
        "regs" => regs(t),
        "buddyinfo" | "slabinfo" | "meminfo" | "ps" => guest_view(t, cmd),
        other => Err(format!("unknown monitor command '{other}'; `monitor help` lists them")),
    };
    match r {
        Ok(s) => s,
        Err(e) => format!("error: {e}\n"),
    }
}

/// Evaluates an address expression such as `$pc`, `kmain+0x10`, `0x1000`.
pub fn eval(t: &mut GdbTarget<'_>, expr: &str) -> Result<u64, String> {
    let expr: String = expr.split_whitespace().collect();
    if expr.is_empty() {
        return Err("an address is needed, e.g. `$pc`, `kmain` or `0xffffffff80200000`".into());
    }
    let mut total = 0u64;
    let mut sign_minus = false;
    let mut start = 0;
    let bytes = expr.as_bytes();
    for i in 0..=bytes.len() {
        // A sign at the start belongs to the first term.
        if i == bytes.len() || (i > start && matches!(bytes[i], b'+' | b'-')) {
            let v = term(t, &expr[start..i])?;
            total = if sign_minus { total.wrapping_sub(v) } else { total.wrapping_add(v) };
            if i < bytes.len() {
                sign_minus = bytes[i] == b'-';
                start = i + 1;
            }
        }
    }
    Ok(total)
}

fn term(t: &mut GdbTarget<'_>, s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("an operator is missing its operand".into());
    }
    if let Some(reg) = s.strip_prefix('$') {
        return register(t, reg);
    }
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).map_err(|_| format!("'{s}' is not a hexadecimal number"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("'{s}' does not fit in 64 bits"));
    }
    symbol(t, s).ok_or_else(|| format!("no symbol '{s}' in the guest (write an address, e.g. 0x...)"))
}

/// A symbol by its name as gdb writes it: exact, or with its crate path
/// (`kernel::kmain` for the `#[no_mangle]` `kmain`), or a unique path
/// suffix (`BuddyAllocator::alloc_pages`).
fn symbol(t: &GdbTarget<'_>, s: &str) -> Option<u64> {
    if let Some(a) = t.symbols.address_of(s) {
        return Some(a);
    }
    // Leading path components dropped, one at a time.
    let mut rest = s;
    while let Some((_, tail)) = rest.split_once("::") {
        if let Some(a) = t.symbols.address_of(tail) {
            return Some(a);
        }
        rest = tail;
    }
    t.symbols.unique_suffix(&format!("::{s}"))
}

fn register(t: &mut GdbTarget<'_>, name: &str) -> Result<u64, String> {
    let (r, s) = t.sel_state().map_err(|e| e.to_string())?;
    // gdb's 32-bit names read the low half.
    let low = |v: u64| v & 0xffff_ffff;
    Ok(match name {
        "eflags" | "rflags" => r.rflags,
        "eax" => low(r.rax),
        "ebx" => low(r.rbx),
        "ecx" => low(r.rcx),
        "edx" => low(r.rdx),
        "esi" => low(r.rsi),
        "edi" => low(r.rdi),
        "ebp" => low(r.rbp),
        "esp" => low(r.rsp),
        "eip" => low(r.rip),
        "cs" => s.cs.selector.into(),
        "ss" => s.ss.selector.into(),
        "ds" => s.ds.selector.into(),
        "es" => s.es.selector.into(),
        "fs" => s.fs.selector.into(),
        "gs" => s.gs.selector.into(),
        "cr8" => s.cr8,
        "efer" => s.efer,
        "gdtr" => s.gdt.base,
        "idtr" => s.idt.base,
        "pc" | "rip" => r.rip,
        "sp" | "rsp" => r.rsp,
        "fp" | "rbp" => r.rbp,
        "rax" => r.rax,
        "rbx" => r.rbx,
        "rcx" => r.rcx,
        "rdx" => r.rdx,
        "rsi" => r.rsi,
        "rdi" => r.rdi,
        "r8" => r.r8,
        "r9" => r.r9,
        "r10" => r.r10,
        "r11" => r.r11,
        "r12" => r.r12,
        "r13" => r.r13,
        "r14" => r.r14,
        "r15" => r.r15,
        "cr0" => s.cr0,
        "cr2" => s.cr2,
        "cr3" => s.cr3,
        "cr4" => s.cr4,
        "fs_base" => s.fs.base,
        "gs_base" => s.gs.base,
        other => {
            return Err(format!(
                "unknown register '${other}' (registers: $pc $sp $fp $rax..$r15 $eax.. $eflags $cs $ss $ds $es $fs $gs \
                 $fs_base $gs_base $cr0 $cr2 $cr3 $cr4 $cr8 $efer $gdtr $idtr)"
            ))
        }
    })
}

fn paged(t: &mut GdbTarget<'_>) -> Result<mm_core::paging::CpuContext, String> {
    match t.view_mode().map_err(|e| e.to_string())? {
        AddressMode::Paged(ctx) => Ok(ctx),
        AddressMode::Unpaged => {
            Err("paging is off (CR0.PG = 0): linear addresses are physical; `monitor cr3 ROOT` walks tables anyway"
                .into())
        }
    }
}

fn root_note(t: &GdbTarget<'_>) -> &'static str {
    if t.view.cr3.is_some() {
        " (set by `monitor cr3`)"
    } else {
        ""
    }
}

fn pt(t: &mut GdbTarget<'_>, args: &[&str]) -> Result<String, String> {
    if args.is_empty() {
        return Err("an address is needed, e.g. `monitor pt $pc` or `monitor pt kernel::kmain`".into());
    }
    let mut o = String::new();
    for a in args {
        o.push_str(&pt_one(t, a)?);
    }
    Ok(o)
}

/// Linux's level names: with 4-level paging the top level is the PGD
/// (the P4D is folded into it); mm-core names levels by their LA57 place.
fn linux_levels(text: String, la57: bool) -> String {
    if la57 {
        text
    } else {
        text.replace("P4D (PML4)", "PGD (PML4)")
    }
}

fn pt_one(t: &mut GdbTarget<'_>, arg: &str) -> Result<String, String> {
    let va = eval(t, arg)?;
    let ctx = paged(t)?;
    let (trace, outcome) = walk_trace(&GuestPhys(t.mem), &ctx, VirtAddr(va));
    let mut o = format!("{va:#018x} through CR3 {:#x}{}:\n", ctx.cr3, root_note(t));
    let _ = write!(o, "{trace}");
    match outcome {
        Ok(tr) => {
            let _ = writeln!(
                o,
                "=> physical {:#x} ({} page at {:#x}), effective flags {}",
                tr.pa.0,
                tr.size,
                tr.frame().0,
                tr.flags
            );
        }
        Err(f) => {
            let _ = writeln!(o, "=> no translation: {f}");
            // A non-zero not-present PTE is a swap entry (Linux's x86
            // encoding): say where the page went.
            let swapped = trace
                .steps()
                .last()
                .filter(|st| st.level == mm_core::addr::Level::Pte && !st.entry.is_present())
                .and_then(|st| mm_core::paging::swap::SwapEntry::from_pte(st.entry));
            if let Some(e) = swapped {
                let _ = writeln!(o, "=> swapped: type {} offset {:#x} (a fault reads it back)", e.ty(), e.offset());
            }
        }
    }
    Ok(linux_levels(o, ctx.la57))
}

/// Permission letters of a mapping: user, read, write, execute.
fn perms(f: PteFlags) -> String {
    let u = if f.contains(PteFlags::USER) { 'u' } else { '-' };
    let w = if f.contains(PteFlags::RW) { 'w' } else { '-' };
    let x = if f.contains(PteFlags::NX) { '-' } else { 'x' };
    format!("{u}r{w}{x}")
}

/// The most table entries `monitor mem` reads: every entry of a fully
/// populated 4-level tree under 64 GiB is far less; hostile tables (loops)
/// end here instead of hanging the stub.
const MEM_BUDGET: u64 = 1 << 24;

fn mem(t: &mut GdbTarget<'_>) -> Result<String, String> {
    let ctx = paged(t)?;
    let phys = GuestPhys(t.mem);
    let mut ranges: Vec<(u64, u64, String)> = Vec::new();
    let mut notes = Vec::new();
    for m in mappings(&phys, &ctx).budget(MEM_BUDGET) {
        match m {
            Ok(m) => {
                let p = perms(m.flags);
                let end = m.va.0.wrapping_add(m.size.bytes());
                match ranges.last_mut() {
                    Some(last) if last.1 == m.va.0 && last.2 == p => last.1 = end,
                    _ => ranges.push((m.va.0, end, p)),
                }
            }
            Err(MappingError::BudgetExhausted) => notes.push(format!("stopped after {MEM_BUDGET} table entries")),
            Err(MappingError::TableOutsideMemory { level, table, va }) => notes
                .push(format!("{level} table at {:#x} (for {:#x}) is outside guest memory: skipped", table.0, va.0)),
            Err(MappingError::Reserved { va, level, entry, reason }) => {
                notes.push(format!("{level} entry {entry} for {:#x} has reserved bits set ({reason:?})", va.0))
            }
        }
    }
    let mut o = format!("CR3 {:#x}{}: {} ranges (u = user, r, w, x)\n", ctx.cr3, root_note(t), ranges.len());
    for (start, end, p) in &ranges {
        let _ = writeln!(o, "{start:016x}-{end:016x} {:016x} {p}", end.wrapping_sub(*start));
    }
    for n in notes {
        let _ = writeln!(o, "note: {n}");
    }
    Ok(o)
}

/// The guest's state through its descriptor, with the vCPU's paging mode.
fn guest_state<'m>(t: &mut GdbTarget<'m>) -> Result<GuestState<'m>, String> {
    let (r, s) = t.sel_state().map_err(|e| e.to_string())?;
    let base = match crate::inspect::address_mode(&r, &s) {
        AddressMode::Paged(ctx) => ctx,
        AddressMode::Unpaged => mm_core::paging::CpuContext {
            maxphyaddr: crate::memory::host_phys_bits() as u8,
            vendor: crate::inspect::cpu_vendor(),
            ..mm_core::paging::CpuContext::kernel(mm_core::addr::PhysAddr(0))
        },
    };
    let mem = t.mem;
    GuestState::read(mem, t.link.descriptor.get(), &base).map_err(|e| e.to_string())
}

fn guest_view(t: &mut GdbTarget<'_>, cmd: &str) -> Result<String, String> {
    let gs = guest_state(t)?;
    Ok(match cmd {
        "buddyinfo" => mmviews::buddyinfo(&gs).render(),
        "slabinfo" => mmviews::slabinfo(&gs).render(),
        "meminfo" => mmviews::meminfo(&gs).render(),
        _ => mmviews::ps(&gs)?.render(),
    })
}

fn phys(t: &mut GdbTarget<'_>, args: &[&str]) -> Result<String, String> {
    match args {
        ["on"] => t.view.phys = true,
        ["off"] => t.view.phys = false,
        [] => {}
        _ => return Err("write `monitor phys on` or `monitor phys off`".into()),
    }
    Ok(if t.view.phys {
        "gdb's addresses are guest-physical now (`monitor phys off` goes back)\n".into()
    } else {
        "gdb's addresses are virtual, translated by the software MMU\n".into()
    })
}

fn cr3(t: &mut GdbTarget<'_>, args: &[&str]) -> Result<String, String> {
    let (_, sregs) = t.sel_state().map_err(|e| e.to_string())?;
    if args.is_empty() {
        t.view.cr3 = None;
        return Ok(format!("memory reads walk the vCPU's own CR3 ({:#x}) again\n", sregs.cr3));
    }
    if args[0] == "pid" {
        let pid: u32 = match args.get(1).map(|a| a.parse()) {
            Some(Ok(p)) => p,
            _ => return Err("write `monitor cr3 pid N` with a process id (`monitor ps` lists them)".into()),
        };
        let gs = guest_state(t)?;
        let ps = mmviews::ps(&gs)?;
        if !ps.table {
            return Err(format!(
                "no process {pid}: the guest publishes no process table yet; give a page-table root instead"
            ));
        }
        let p = ps.procs.iter().find(|p| p.pid == pid).ok_or_else(|| {
            let pids: Vec<String> = ps.procs.iter().map(|p| p.pid.to_string()).collect();
            format!(
                "no process {pid}; the guest has: {}",
                if pids.is_empty() { "none".into() } else { pids.join(", ") }
            )
        })?;
        let (cr3, name) = (p.cr3, p.name.clone());
        t.view.cr3 = Some(cr3);
        return Ok(format!(
            "memory reads now walk process {pid} ({name})'s tables at CR3 {cr3:#x} (the vCPU's CR3 is {:#x}; `monitor cr3` alone goes back)\n",
            sregs.cr3
        ));
    }
    let [one] = args else {
        return Err(
            "write `monitor cr3 ROOT` with one page-table root, `monitor cr3 pid N`, or `monitor cr3` alone".into()
        );
    };
    let root = eval(t, one)?;
    let pa = root & 0x000f_ffff_ffff_f000;
    if t.mem.read_obj::<u64>(GuestAddress(pa)).is_err() {
        return Err(format!("{root:#x} is not a page-table root: guest-physical {pa:#x} is not RAM"));
    }
    t.view.cr3 = Some(root);
    Ok(format!(
        "memory reads now walk the tables at {pa:#x} (the vCPU's CR3 is {:#x}; `monitor cr3` alone goes back)\n",
        sregs.cr3
    ))
}

fn regs(t: &mut GdbTarget<'_>) -> Result<String, String> {
    let (r, s) = t.sel_state().map_err(|e| e.to_string())?;
    let mut o = String::new();
    // The thread gdb last addressed (`thread N` and a look at it).
    let _ = writeln!(o, "vCPU {} (gdb thread {})", t.selected(), t.selected() + 1);
    let _ = writeln!(o, "rip {:#018x} {}", r.rip, t.symbols.describe(r.rip));
    let _ = writeln!(o, "cr0 {:#018x}  cr2 {:#018x}  cr3 {:#018x}", s.cr0, s.cr2, s.cr3);
    let _ = writeln!(o, "cr4 {:#018x}  cr8 {:#018x}  efer {:#018x}", s.cr4, s.cr8, s.efer);
    let _ = writeln!(o, "gdt {:#018x}/{:#x}  idt {:#018x}/{:#x}", s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
    for (n, seg) in [("cs", s.cs), ("ss", s.ss), ("ds", s.ds), ("es", s.es), ("fs", s.fs), ("gs", s.gs), ("tr", s.tr)] {
        let _ = writeln!(
            o,
            "{n}  {:#06x} base {:#018x} limit {:#010x} type {:#x} dpl {} l {} db {}",
            seg.selector, seg.base, seg.limit, seg.type_, seg.dpl, seg.l, seg.db
        );
    }
    let view = if t.view.phys { "physical" } else { "virtual" };
    let _ = writeln!(o, "gdb memory view: {view}, root {:#x}{}", t.view.cr3.unwrap_or(s.cr3), root_note(t));
    Ok(o)
}
