//! The web view's HTTP API: parsing requests into [`Query`]s (on the
//! server's threads, so a malformed request never reaches the vCPU) and
//! answering them with the parked vCPU ([`execute`], on the vCPU thread).
//!
//! Every answer is JSON, every 64-bit quantity a `"0x..."` string as in
//! `--json`; the views' answers are the `data` objects `--json` writes.
//! Errors are `{"error": "what went wrong and what to do"}` with a 4xx
//! status for the client's mistakes (400 malformed, 404 unknown process
//! or route, 405 wrong method, 409 not possible in the guest's state now,
//! 410 the run is over) and 5xx for the VMM's (503: the vCPU did not stop
//! in time).

use super::{ApiError, WebHook};
use crate::inspect::checkpoint::Inspector;
use crate::inspect::guest::{ram_end, GuestState};
use crate::inspect::mmviews;
use crate::inspect::physmap::FrameClass;
use crate::inspect::spec::{AddrSpec, ViewSpec};
use crate::inspect::views::{self, for_each_leaf, RangeMerger};
use crate::inspect::GuestPhys;
use crate::kvm::Vcpu;
use mm_core::addr::VirtAddr;
use mm_core::mem::PhysMem;
use mm_core::paging::walker::walk_trace;
use mm_core::paging::{CpuContext, Level, Pte};

/// Whose page tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// The kernel's (the descriptor's `kernel_cr3`).
    Kernel,
    /// A process's, by pid.
    Pid(u32),
}

/// A request that needs the parked vCPU.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// The processes and the kernel's root.
    Procs,
    /// One page table's entries: the table reached from `root` by walking
    /// `va` down `depth` levels (0: the PGD).
    Table {
        /// Whose tables.
        root: Root,
        /// An address under the table.
        va: u64,
        /// Levels below the root.
        depth: u8,
    },
    /// The `walk` view of `va` under `root`'s tables, with the frame's
    /// page descriptor.
    Walk {
        /// Whose tables.
        root: Root,
        /// The address.
        va: u64,
    },
    /// The physical map: counts of every class and `cells` cells over
    /// `[from, to)` (guest-physical; default all RAM).
    Physmap {
        /// First address.
        from: Option<u64>,
        /// One past the last.
        to: Option<u64>,
        /// How many cells.
        cells: u64,
    },
    /// A descriptor view's `--json` data.
    View(ViewSpec),
    /// A sample now (buddyinfo and vmstat to every browser): what a
    /// browser that attaches to a held guest starts its plots with.
    Sample,
    /// A process's VMAs as the guest publishes them, with Rss and Swap
    /// per VMA (the `vmas` view).
    Vmas {
        /// Whose.
        pid: u32,
    },
    /// A process's mapped ranges from its page tables (`info mem`'s
    /// merging), with its RSS.
    Ranges {
        /// Whose tables.
        root: Root,
    },
    /// The user page faults the guest logged (its fault ring, read now):
    /// those after record `since`, of `pid` when given, the newest
    /// `limit`.
    Faults {
        /// Record number to start after (0: all kept).
        since: u64,
        /// Only this process's.
        pid: Option<u32>,
        /// At most this many (the newest).
        limit: usize,
    },
}

/// Most faults one `/api/faults` answer lists (and its default).
pub const FAULTS_LIMIT: u64 = 4096;

/// Most cells one physical-map request may ask for.
pub const CELLS_MAX: u64 = 1 << 16;
/// How far the physical map reaches: 1 TiB of guest-physical address
/// space (RAM, the holes and MMIO between), the widest zoom.
pub const PHYS_SPACE: u64 = 1 << 40;

/// Views `/api/view/NAME` serves.
pub const VIEWS: [&str; 9] = ["buddyinfo", "slabinfo", "meminfo", "ps", "vmstat", "extfrag", "swaps", "free", "cpu"];

/// Parses a number: `0x...` hex or decimal, `_` allowed.
pub fn parse_num(what: &str, s: &str) -> Result<u64, ApiError> {
    let t = s.trim().replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| ApiError::bad(format!("{what} '{s}' is not a number (give 0x... hex or decimal)")))
}

fn parse_root(s: Option<&str>) -> Result<Root, ApiError> {
    match s {
        None | Some("kernel") => Ok(Root::Kernel),
        Some(p) => p.parse::<u32>().map(Root::Pid).map_err(|_| {
            ApiError::bad(format!("root '{p}' is neither 'kernel' nor a pid (the ps view lists the pids)"))
        }),
    }
}

fn parse_va(s: Option<&str>) -> Result<u64, ApiError> {
    let va = parse_num("the address", s.ok_or_else(|| ApiError::bad("va=ADDRESS is missing"))?)?;
    // Canonical under 4-level paging (bits 63..47 equal); 5-level guests
    // would pass 57 bits, which this guest never enables.
    let top = va >> 47;
    if top != 0 && top != (1 << 17) - 1 {
        return Err(ApiError::bad(format!(
            "the address {va:#x} is not canonical (bits 63..47 must all equal bit 47): no page table maps it"
        )));
    }
    Ok(va)
}

/// Decodes `key=value&...` (percent-escapes included).
pub fn query_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    let dec = |s: &str| -> Result<String, ApiError> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' => {
                    let h = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                    let v = h.and_then(|h| u8::from_str_radix(h, 16).ok());
                    out.push(v.ok_or_else(|| ApiError::bad(format!("bad percent-escape in '{s}'")))?);
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| ApiError::bad("the query is not UTF-8"))
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((dec(k)?, dec(v)?))
        })
        .collect()
}

/// Parses a `GET /api/...` path (after `/api/`) and its query into a
/// [`Query`]. Unknown keys are refused, so a typo is not silently ignored.
pub fn parse(path: &str, query: &str) -> Result<Query, ApiError> {
    let pairs = query_pairs(query)?;
    let allowed: &[&str] = match path {
        "procs" => &[],
        "pt" => &["root", "va", "depth"],
        "walk" => &["root", "va"],
        "vmas" | "ranges" => &["root"],
        "physmap" => &["from", "to", "cells"],
        "faults" => &["since", "pid", "limit"],
        p if p.starts_with("view/") => &[],
        _ => {
            return Err(ApiError::not_found(format!(
                "no API at /api/{path}; see README's \"Live web view\" for the routes"
            )))
        }
    };
    for (k, _) in &pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad(format!(
                "/api/{path} takes no parameter '{k}' (it takes: {})",
                allowed.join(", ")
            )));
        }
    }
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    Ok(match path {
        "procs" => Query::Procs,
        "pt" => {
            let depth = get("depth").map(|d| parse_num("depth", d)).transpose()?.unwrap_or(0);
            if depth > 3 {
                return Err(ApiError::bad(format!(
                    "depth {depth} is out of range: 0 (PGD) to 3 (PTE) under 4-level paging"
                )));
            }
            Query::Table { root: parse_root(get("root"))?, va: parse_va(get("va").or(Some("0")))?, depth: depth as u8 }
        }
        "walk" => Query::Walk { root: parse_root(get("root"))?, va: parse_va(get("va"))? },
        "vmas" => match parse_root(get("root"))? {
            Root::Pid(pid) => Query::Vmas { pid },
            Root::Kernel => {
                return Err(ApiError::bad(
                    "the kernel has no VMAs: give root=PID (GET /api/procs lists the pids; /api/ranges?root=kernel merges the kernel's mappings)",
                ))
            }
        },
        "ranges" => Query::Ranges { root: parse_root(get("root"))? },
        "faults" => {
            let since = get("since").map(|v| parse_num("since", v)).transpose()?.unwrap_or(0);
            let pid = get("pid")
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        ApiError::bad(format!("pid '{v}' is not a process id (GET /api/procs lists them)"))
                    })
                })
                .transpose()?;
            let limit = get("limit").map(|v| parse_num("limit", v)).transpose()?.unwrap_or(FAULTS_LIMIT);
            if limit == 0 || limit > FAULTS_LIMIT {
                return Err(ApiError::bad(format!("limit={limit} is out of range: 1 to {FAULTS_LIMIT}")));
            }
            Query::Faults { since, pid, limit: limit as usize }
        }
        "physmap" => {
            let cells = get("cells").map(|c| parse_num("cells", c)).transpose()?.unwrap_or(1024);
            if cells == 0 || cells > CELLS_MAX {
                return Err(ApiError::bad(format!("cells={cells} is out of range: 1 to {CELLS_MAX}")));
            }
            let from = get("from").map(|v| parse_num("from", v)).transpose()?;
            let to = get("to").map(|v| parse_num("to", v)).transpose()?;
            if let (Some(f), Some(t)) = (from, to) {
                if f >= t {
                    return Err(ApiError::bad(format!("from={f:#x} must be below to={t:#x}")));
                }
            }
            Query::Physmap { from, to, cells }
        }
        p => {
            let name = p.trim_start_matches("view/");
            if !VIEWS.contains(&name) {
                return Err(ApiError::not_found(format!(
                    "no view '{name}' here; views: {} (walk through /api/walk, physmap through /api/physmap)",
                    VIEWS.join(", ")
                )));
            }
            Query::View(crate::inspect::spec::parse_view(name).map_err(ApiError::bad)?)
        }
    })
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, ApiError> {
    serde_json::to_string(v).map_err(|e| ApiError { status: 500, message: format!("cannot serialise: {e}") })
}

fn unavailable(why: impl std::fmt::Display) -> ApiError {
    ApiError::conflict(format!("{why}; try again at a later checkpoint"))
}

/// The CR3 of `root` and the context to walk it with.
fn context(hook: &WebHook, root: Root, vcpu: &dyn Vcpu) -> Result<(CpuContext, u64), ApiError> {
    let (p, base) = Inspector::guest_context(vcpu).map_err(|e| ApiError { status: 500, message: e })?;
    if p.ctx.is_none() {
        return Err(unavailable("paging is off at this stop: there are no page tables"));
    }
    let gs = GuestState::read(hook.mem(), hook.link().descriptor.get(), &base).map_err(unavailable)?;
    let cr3 = match root {
        Root::Kernel => gs.desc.kernel_cr3,
        Root::Pid(pid) => {
            let procs = gs.procs().map_err(unavailable)?.unwrap_or_default();
            let pr = procs.iter().find(|p| p.pid == pid && p.cr3 != 0).ok_or_else(|| {
                ApiError::not_found(format!("no live process with pid {pid} (GET /api/procs lists them)"))
            })?;
            pr.cr3
        }
    };
    Ok((CpuContext { cr3, ..base }, cr3))
}

fn levels(ctx: &CpuContext) -> Vec<Level> {
    let mut v = vec![ctx.root_level()];
    while let Some(l) = v.last().and_then(|l| l.next_lower()) {
        v.push(l);
    }
    v
}

/// One page table's entries, empty runs folded.
fn table(hook: &WebHook, root: Root, va: u64, depth: u8, vcpu: &dyn Vcpu) -> Result<String, ApiError> {
    let (ctx, cr3) = context(hook, root, vcpu)?;
    let lv = levels(&ctx);
    let level = *lv
        .get(depth as usize)
        .ok_or_else(|| ApiError::bad(format!("depth {depth} is below the last level ({} levels)", lv.len())))?;
    let phys = GuestPhys(hook.mem());
    // The table's address: the root, or where mm-core's walker went
    // through the entry above it.
    let table_pa = if depth == 0 {
        ctx.root().0
    } else {
        let (trace, _) = walk_trace(&phys, &ctx, VirtAddr(va));
        let step = trace.steps().nth(depth as usize - 1).ok_or_else(|| {
            ApiError::not_found(format!(
                "no table at depth {depth} above {va:#x}: the walk ends higher (an entry not present or a huge leaf); GET /api/walk shows where"
            ))
        })?;
        if !step.entry.is_present() || step.entry.is_leaf_at(step.level) {
            return Err(ApiError::not_found(format!(
                "no table at depth {depth} above {va:#x}: the {} entry is {}",
                views::level_name(step.level, &ctx),
                if step.entry.is_present() { "a huge leaf" } else { "not present" }
            )));
        }
        step.entry.addr(ctx.maxphyaddr).0
    };
    let span = 1u64 << level.shift();
    let base_mask = if depth == 0 { 0 } else { !((span << 9) - 1) };
    let base = va & base_mask;
    let mut entries = Vec::new();
    let mut empty: Option<(u16, u16)> = None;
    let sign = |a: u64| if a & (1 << 47) != 0 { a | 0xffff_0000_0000_0000 } else { a & 0x0000_ffff_ffff_ffff };
    for i in 0..512u16 {
        let e = phys.read_u64(mm_core::addr::PhysAddr(table_pa + 8 * i as u64)).map(Pte).map_err(|_| ApiError {
            status: 500,
            message: format!("the table at {table_pa:#x} is outside guest RAM"),
        })?;
        if e.0 == 0 {
            empty = Some(empty.map_or((i, i), |(a, _)| (a, i)));
            continue;
        }
        if let Some((a, b)) = empty.take() {
            entries.push(serde_json::json!({"empty": [a, b]}));
        }
        let eva = sign(base.wrapping_add(i as u64 * span));
        let leaf = e.is_present() && e.is_leaf_at(level);
        let kind = if !e.is_present() {
            if level == Level::Pte {
                "swap"
            } else {
                "not-present"
            }
        } else if leaf {
            "leaf"
        } else {
            "table"
        };
        let target = if leaf { e.frame(level_size(level), ctx.maxphyaddr).0 } else { e.addr(ctx.maxphyaddr).0 };
        let mut o = serde_json::json!({
            "i": i, "va": format!("{eva:#x}"), "raw": format!("{:#x}", e.0), "kind": kind,
            "target": format!("{target:#x}"), "decoded": e.to_string(),
            "w": e.is_writable(), "u": e.is_user(), "nx": e.is_nx(), "g": e.is_global(),
            "a": e.is_accessed(), "d": e.is_dirty(),
        });
        if leaf {
            o["size"] = format!("{span:#x}").into();
            o["huge"] = (level != Level::Pte).into();
        }
        if kind == "swap" {
            if let Some(s) = mm_core::paging::SwapEntry::from_pte(e) {
                o["swap"] = serde_json::json!({"type": s.ty(), "offset": s.offset()});
            }
        }
        entries.push(o);
    }
    if let Some((a, b)) = empty {
        entries.push(serde_json::json!({"empty": [a, b]}));
    }
    json(&serde_json::json!({
        "root": match root { Root::Kernel => "kernel".to_string(), Root::Pid(p) => p.to_string() },
        "cr3": format!("{cr3:#x}"), "depth": depth, "level": views::level_name(level, &ctx),
        "sdm_level": level.sdm_name(), "table": format!("{table_pa:#x}"), "va_base": format!("{:#x}", sign(base)),
        "entry_span": format!("{span:#x}"), "last_level": level == Level::Pte, "entries": entries,
    }))
}

fn level_size(l: Level) -> mm_core::paging::PageSize {
    match l {
        Level::Pud => mm_core::paging::PageSize::Size1G,
        Level::Pmd => mm_core::paging::PageSize::Size2M,
        _ => mm_core::paging::PageSize::Size4K,
    }
}

/// The physical map over `[from, to)` in `cells` cells: each cell's
/// most common class, as one character per cell ('a' + the class's
/// index in `classes`, '.' for a hole: no RAM there). The range may
/// reach past RAM up to [`PHYS_SPACE`], so the map zooms from the whole
/// 1 TiB address space down to one frame.
fn physmap(
    hook: &mut WebHook,
    seq: u64,
    q: (Option<u64>, Option<u64>, u64),
    vcpu: &dyn Vcpu,
) -> Result<String, ApiError> {
    let end = ram_end(hook.mem());
    let (from, to, cells) = (q.0.unwrap_or(0), q.1.unwrap_or(end), q.2);
    if to > PHYS_SPACE || from >= PHYS_SPACE {
        return Err(ApiError::bad(format!(
            "the range {from:#x}..{to:#x} is out of range: the map covers guest-physical addresses up to {PHYS_SPACE:#x} (1 TiB; RAM ends at {end:#x})"
        )));
    }
    if from >= to {
        return Err(ApiError::bad(format!("from={from:#x} must be below to={to:#x}")));
    }
    let map = hook.physmap(seq, vcpu).map_err(unavailable)?;
    let slots: Vec<(u64, u64, &[FrameClass])> =
        map.slot_frames().map(|(s, f)| (s.gpa / 4096, s.gpa / 4096 + f.len() as u64, f)).collect();
    let first = from / 4096;
    let frames = (to - from).div_ceil(4096);
    let cells = cells.min(frames);
    let mut out = String::with_capacity(cells as usize);
    for c in 0..cells {
        let lo = first + c * frames / cells;
        let hi = (first + (c + 1) * frames / cells).max(lo + 1);
        // Each slot's part of the cell is counted frame by frame (at most
        // RAM's frames over the whole map); the rest is hole, counted at
        // once, so a cell of a whole GiB past RAM costs nothing.
        let mut counts = [0u64; FrameClass::ALL.len() + 1];
        let mut in_ram = 0;
        for &(a, b, f) in &slots {
            let (s, e) = (lo.max(a), hi.min(b));
            if e > s {
                for &k in &f[(s - a) as usize..(e - a) as usize] {
                    counts[k as usize] += 1;
                }
                in_ram += e - s;
            }
        }
        counts[FrameClass::ALL.len()] += (hi - lo).saturating_sub(in_ram);
        let (best, _) = counts.iter().enumerate().max_by_key(|(i, n)| (**n, usize::MAX - i)).unwrap_or((0, &0));
        out.push(if best == FrameClass::ALL.len() { '.' } else { (b'a' + best as u8) as char });
    }
    let classes: Vec<serde_json::Value> = FrameClass::ALL
        .iter()
        .map(|k| serde_json::json!({"class": k, "colour": k.colour(), "label": k.label()}))
        .collect();
    json(&serde_json::json!({
        "seq": seq, "ram_end": format!("{end:#x}"), "from": format!("{from:#x}"), "to": format!("{to:#x}"),
        "frames_per_cell": frames as f64 / cells as f64, "cells": cells, "map": out,
        "classes": classes, "frames": map.counts(),
    }))
}

/// Answers `q` with the vCPU parked (on the vCPU thread).
pub fn execute(hook: &mut WebHook, q: &Query, seq: u64, vcpu: &dyn Vcpu) -> Result<String, ApiError> {
    match q {
        Query::Procs => {
            let (_, base) = Inspector::guest_context(vcpu).map_err(|e| ApiError { status: 500, message: e })?;
            let gs = GuestState::read(hook.mem(), hook.link().descriptor.get(), &base).map_err(unavailable)?;
            let ps = mmviews::ps(&gs).map_err(unavailable)?;
            json(
                &serde_json::json!({"seq": seq, "kernel_cr3": format!("{:#x}", gs.desc.kernel_cr3), "vcpu_cr3": format!("{:#x}", base.cr3), "ps": ps}),
            )
        }
        Query::Table { root, va, depth } => table(hook, *root, *va, *depth, vcpu),
        Query::Walk { root, va } => {
            let (_, cr3) = context(hook, *root, vcpu)?;
            let spec = ViewSpec::Walk { addr: AddrSpec::Num(*va), cr3: Some(cr3) };
            let v = hook.inspector().view_data("web", &spec, vcpu).map_err(unavailable)?;
            json(&v)
        }
        Query::Physmap { from, to, cells } => physmap(hook, seq, (*from, *to, *cells), vcpu),
        Query::Sample => {
            hook.sample("sample", "attach", super::epoch_ms(), vcpu);
            Ok("{}".into())
        }
        Query::View(spec) => {
            let mut v = hook.inspector().view_data("web", spec, vcpu).map_err(unavailable)?;
            v["seq"] = seq.into();
            json(&v)
        }
        Query::Vmas { pid } => {
            let (_, base) = Inspector::guest_context(vcpu).map_err(|e| ApiError { status: 500, message: e })?;
            let gs = GuestState::read(hook.mem(), hook.link().descriptor.get(), &base).map_err(unavailable)?;
            let procs = gs.procs().map_err(unavailable)?.unwrap_or_default();
            if !procs.iter().any(|p| p.pid == *pid) {
                return Err(ApiError::not_found(format!("no process with pid {pid} (GET /api/procs lists them)")));
            }
            let mut v = serde_json::to_value(crate::inspect::vmas::vmas(&gs, Some(*pid)).map_err(unavailable)?)
                .map_err(|e| ApiError { status: 500, message: e.to_string() })?;
            v["seq"] = seq.into();
            json(&v)
        }
        Query::Faults { since, pid, limit } => {
            let at = hook.stop_name();
            hook.read_faults(&at);
            let mut v = hook.shared().faults_json(*since, *pid, *limit);
            v["seq"] = seq.into();
            json(&v)
        }
        Query::Ranges { root } => {
            let (ctx, cr3) = context(hook, *root, vcpu)?;
            let phys = GuestPhys(hook.mem());
            let mut merger = RangeMerger::default();
            let mut ranges = Vec::new();
            let user_only = matches!(root, Root::Pid(_));
            let listing = for_each_leaf(&phys, &ctx, views::DEFAULT_BUDGET, |e| {
                if user_only && e.va >= 1 << 47 {
                    return;
                }
                ranges.extend(merger.feed(e));
            });
            ranges.extend(merger.finish());
            let rss: u64 = ranges.iter().map(|r| r.pages).sum();
            json(&serde_json::json!({
                "cr3": format!("{cr3:#x}"), "ranges": ranges, "mapped_pages": rss,
                "complete": listing.complete, "note": "ranges merged from the page tables ('info mem'); the VMAs are at /api/vmas",
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            parse("pt", "root=3&va=0x400000&depth=2").unwrap(),
            Query::Table { root: Root::Pid(3), va: 0x40_0000, depth: 2 }
        );
        assert_eq!(
            parse("walk", "va=0xffffffff80200000").unwrap(),
            Query::Walk { root: Root::Kernel, va: 0xffff_ffff_8020_0000 }
        );
        assert_eq!(parse("pt", "depth=4").unwrap_err().status, 400);
        assert_eq!(parse("walk", "va=0x800000000000").unwrap_err().status, 400);
        assert_eq!(parse("walk", "va=zz").unwrap_err().status, 400);
        assert_eq!(parse("walk", "").unwrap_err().status, 400);
        assert_eq!(parse("walk", "root=me&va=1").unwrap_err().status, 400);
        assert_eq!(parse("walk", "va=1&bogus=2").unwrap_err().status, 400);
        assert_eq!(parse("nothing", "").unwrap_err().status, 404);
        assert_eq!(parse("view/tlb", "").unwrap_err().status, 404);
        assert_eq!(parse("physmap", "cells=0").unwrap_err().status, 400);
        assert_eq!(parse("physmap", "from=0x2000&to=0x1000").unwrap_err().status, 400);
        assert_eq!(parse("walk", "va=%zz").unwrap_err().status, 400);
        assert_eq!(parse("vmas", "root=7").unwrap(), Query::Vmas { pid: 7 });
        assert_eq!(parse("vmas", "root=kernel").unwrap_err().status, 400);
        assert_eq!(parse("vmas", "").unwrap_err().status, 400, "the kernel by default: refused");
        assert_eq!(parse("vmas", "root=1&va=2").unwrap_err().status, 400);
        assert_eq!(parse("ranges", "root=kernel").unwrap(), Query::Ranges { root: Root::Kernel });
        assert!(matches!(parse("view/buddyinfo", "").unwrap(), Query::View(ViewSpec::Buddyinfo)));
        assert_eq!(
            parse("faults", "since=0x10&pid=3&limit=5").unwrap(),
            Query::Faults { since: 16, pid: Some(3), limit: 5 }
        );
        assert_eq!(parse("faults", "").unwrap(), Query::Faults { since: 0, pid: None, limit: 4096 });
        assert_eq!(parse("faults", "pid=me").unwrap_err().status, 400);
        assert_eq!(parse("faults", "limit=0").unwrap_err().status, 400);
        assert_eq!(parse("faults", "limit=99999").unwrap_err().status, 400);
        assert_eq!(parse("faults", "since=-1").unwrap_err().status, 400);
        assert_eq!(parse("faults", "addr=1").unwrap_err().status, 400);
    }
}
