//! What a user asked the inspector to do: the `--inspect VIEW[,VIEW...]`
//! view specifications, the `--verify[=CHECK,...]` checks, and the whole
//! inspection configuration a [`crate::vm::VmConfig`] carries. Parsing
//! only; the views themselves live in the sibling modules.

use std::fmt;
use std::path::PathBuf;

/// A guest-virtual address as the user wrote it: a number, a register or
/// a kernel symbol, resolved when the vCPU is parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrSpec {
    /// A literal address.
    Num(u64),
    /// The vCPU's RIP.
    Rip,
    /// The vCPU's RSP.
    Rsp,
    /// A symbol of the kernel ELF, plus an offset.
    Symbol(String, u64),
}

impl fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrSpec::Num(a) => write!(f, "{a:#x}"),
            AddrSpec::Rip => f.write_str("rip"),
            AddrSpec::Rsp => f.write_str("rsp"),
            AddrSpec::Symbol(s, 0) => f.write_str(s),
            AddrSpec::Symbol(s, off) => write!(f, "{s}+{off:#x}"),
        }
    }
}

/// One view to show at a checkpoint. `cr3: None` means the vCPU's own CR3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewSpec {
    /// `cpu`: the registers translation depends on (a trivial view).
    Cpu,
    /// `walk:ADDR[@CR3]`: the per-level walk of one address (crash's `vtop`).
    Walk {
        /// The address.
        addr: AddrSpec,
        /// Root to walk, if not the vCPU's.
        cr3: Option<u64>,
    },
    /// `tlb[@CR3]`: every leaf mapping, like QEMU's `info tlb`.
    Tlb {
        /// Root, if not the vCPU's.
        cr3: Option<u64>,
    },
    /// `mem[@CR3]`: merged ranges with equal permissions, like QEMU's `info mem`.
    Mem {
        /// Root, if not the vCPU's.
        cr3: Option<u64>,
    },
    /// `stage2:ADDR[@CR3]`: GVA -> GPA -> HVA -> host frame.
    Stage2 {
        /// The address.
        addr: AddrSpec,
        /// Root, if not the vCPU's.
        cr3: Option<u64>,
    },
    /// `dirty`: guest pages written since the previous checkpoint (KVM's dirty log).
    Dirty,
    /// `physmap[:DIR]`: an SVG (and PNG) map of guest-physical memory.
    Physmap {
        /// Where the files go (default: the current directory).
        dir: Option<PathBuf>,
    },
    /// `buddyinfo`: free blocks per zone and order (the guest's descriptor).
    Buddyinfo,
    /// `extfrag`: unusable and fragmentation indexes per zone and order
    /// (the guest's descriptor).
    Extfrag,
    /// `pagetypeinfo`: free blocks per migratetype and pageblocks per
    /// type (the guest's descriptor and pageblock array).
    Pagetypeinfo,
    /// `slabinfo`: slab caches (the guest's descriptor).
    Slabinfo,
    /// `meminfo`: frames by owner (the guest's descriptor).
    Meminfo,
    /// `ps`: the guest's processes (the guest's descriptor).
    Ps,
    /// `vmstat`: the guest's event counters (the guest's descriptor).
    Vmstat,
    /// `exits`: VM exits by reason since the previous checkpoint.
    Exits,
    /// `swaps`: the guest's swap areas (/proc/swaps, the descriptor and
    /// the swap map).
    Swaps,
    /// `free`: memory and swap totals as free(1) prints them.
    Free,
    /// `numa`: the NUMA nodes (ACPI SRAT/SLIT read from guest memory)
    /// with their free pages, as `numactl --hardware`.
    Numa,
    /// `vmas[:PID]`: every process's (or one's) VMAs as /proc/PID/maps
    /// lists them, with Rss and Swap per VMA from its page tables.
    Vmas {
        /// Only this process.
        pid: Option<u32>,
    },
    /// `pagesums[:PID]`: every resident user page of every process (or
    /// one's) with its frame and the checksum of its contents.
    Pagesums {
        /// Only this process.
        pid: Option<u32>,
    },
}

impl ViewSpec {
    /// The view's name as JSON and headings show it.
    pub fn name(&self) -> &'static str {
        match self {
            ViewSpec::Cpu => "cpu",
            ViewSpec::Walk { .. } => "walk",
            ViewSpec::Tlb { .. } => "tlb",
            ViewSpec::Mem { .. } => "mem",
            ViewSpec::Stage2 { .. } => "stage2",
            ViewSpec::Dirty => "dirty",
            ViewSpec::Physmap { .. } => "physmap",
            ViewSpec::Buddyinfo => "buddyinfo",
            ViewSpec::Extfrag => "extfrag",
            ViewSpec::Pagetypeinfo => "pagetypeinfo",
            ViewSpec::Slabinfo => "slabinfo",
            ViewSpec::Meminfo => "meminfo",
            ViewSpec::Ps => "ps",
            ViewSpec::Vmstat => "vmstat",
            ViewSpec::Exits => "exits",
            ViewSpec::Swaps => "swaps",
            ViewSpec::Free => "free",
            ViewSpec::Vmas { .. } => "vmas",
            ViewSpec::Pagesums { .. } => "pagesums",
            ViewSpec::Numa => "numa",
        }
    }
}

/// The views `--inspect` accepts, for error messages and `--help`.
pub const VIEW_HELP: &str = "cpu, walk:ADDR[@CR3], tlb[@CR3], mem[@CR3], stage2:ADDR[@CR3], dirty, physmap[:DIR], buddyinfo, extfrag, pagetypeinfo, slabinfo, meminfo, ps, vmas[:PID], pagesums[:PID], vmstat, exits, swaps, free, numa; ADDR is a number (0x... for hex), rip, rsp or a kernel symbol (with an optional +OFFSET)";

fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_addr(s: &str) -> Result<AddrSpec, String> {
    if s.is_empty() {
        return Err(format!("an address is missing; expected one of: {VIEW_HELP}"));
    }
    if let Some(n) = parse_num(s) {
        return Ok(AddrSpec::Num(n));
    }
    match s {
        "rip" => return Ok(AddrSpec::Rip),
        "rsp" => return Ok(AddrSpec::Rsp),
        _ => {}
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("'{s}' is not an address: write 0x followed by hex digits, or a decimal number"));
    }
    let (name, off) = match s.rsplit_once('+') {
        Some((n, o)) => (n, parse_num(o).ok_or_else(|| format!("'{o}' in '{s}' is not an offset"))?),
        None => (s, 0),
    };
    Ok(AddrSpec::Symbol(name.to_string(), off))
}

fn parse_cr3(s: Option<&str>) -> Result<Option<u64>, String> {
    s.map(|c| {
        let v = parse_num(c).ok_or_else(|| format!("'{c}' is not a CR3 value: write 0x followed by hex digits"))?;
        // Bits 12..51 are the root's address; 63..52 are reserved (or
        // LAM/PCID-no-flush controls the walker does not model).
        if v >> 52 != 0 {
            return Err(format!("{v:#x} is not a CR3 value: bits 63..52 must be 0 (the root is at bits 51..12)"));
        }
        Ok(v)
    })
    .transpose()
}

/// Parses one view (one item of `--inspect`).
pub fn parse_view(s: &str) -> Result<ViewSpec, String> {
    let s = s.trim();
    let (head, arg) = match s.split_once(':') {
        Some((h, a)) => (h, Some(a)),
        None => (s, None),
    };
    // `@CR3` binds to the whole view: `tlb@0x1000`, `walk:ADDR@0x1000`.
    let split_at = |t: &str| -> (String, Option<String>) {
        match t.split_once('@') {
            Some((a, c)) => (a.to_string(), Some(c.to_string())),
            None => (t.to_string(), None),
        }
    };
    let (name, name_cr3) = split_at(head);
    let no_arg = |v: ViewSpec| match arg {
        None => Ok(v),
        Some(_) => Err(format!("the view '{name}' takes no ':' argument; views: {VIEW_HELP}")),
    };
    match name.as_str() {
        "cpu" => no_arg(ViewSpec::Cpu),
        "dirty" => no_arg(ViewSpec::Dirty),
        "buddyinfo" => no_arg(ViewSpec::Buddyinfo),
        "extfrag" => no_arg(ViewSpec::Extfrag),
        "pagetypeinfo" => no_arg(ViewSpec::Pagetypeinfo),
        "slabinfo" => no_arg(ViewSpec::Slabinfo),
        "meminfo" => no_arg(ViewSpec::Meminfo),
        "ps" => no_arg(ViewSpec::Ps),
        "vmstat" => no_arg(ViewSpec::Vmstat),
        "exits" => no_arg(ViewSpec::Exits),
        "swaps" => no_arg(ViewSpec::Swaps),
        "free" => no_arg(ViewSpec::Free),
        "numa" => no_arg(ViewSpec::Numa),
        "vmas" | "pagesums" => {
            let pid = match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => None,
                Some(a) => Some(a.parse::<u32>().map_err(|_| {
                    format!("{name}:{a}: '{a}' is not a pid (give {name} for every process, {name}:PID for one; ps lists the pids)")
                })?),
            };
            Ok(if name == "vmas" { ViewSpec::Vmas { pid } } else { ViewSpec::Pagesums { pid } })
        }
        "tlb" => no_arg(ViewSpec::Tlb { cr3: parse_cr3(name_cr3.as_deref())? }),
        "mem" => no_arg(ViewSpec::Mem { cr3: parse_cr3(name_cr3.as_deref())? }),
        "physmap" => Ok(ViewSpec::Physmap { dir: arg.filter(|a| !a.is_empty()).map(PathBuf::from) }),
        "walk" | "stage2" => {
            let (a, cr3) = split_at(arg.unwrap_or(""));
            let addr = parse_addr(&a)?;
            let cr3 = parse_cr3(cr3.as_deref())?;
            Ok(if name == "walk" { ViewSpec::Walk { addr, cr3 } } else { ViewSpec::Stage2 { addr, cr3 } })
        }
        _ => Err(format!("unknown view '{s}'; views: {VIEW_HELP}")),
    }
}

/// One cross-check `--verify` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Every walker translation agrees with `KVM_TRANSLATE` (GPA and validity).
    Kvm,
    /// No mapping is both writable and executable.
    Wx,
    /// Kernel text (`__text_start..__text_end`) is not writable.
    TextRo,
    /// Kernel text is not user-accessible.
    TextUser,
    /// No frame both free in the buddy allocator and mapped outside the
    /// direct map (needs the guest's descriptor).
    FreedMapped,
    /// Every page-table page is a boot-time table or owned `PageTable`.
    PtOwner,
    /// The guest's recorded accesses agree with the software MMU.
    Access,
    /// Every user frame's refcount equals the user PTEs mapping it across
    /// the live processes (the zero page, owner `Reserved`, stays at 1).
    Refcount,
    /// A frame mapped by more than one private (not MAP_SHARED-marked)
    /// user PTE is read-only in every mapper; the zero page everywhere.
    CowRo,
    /// A process's private frame (refcount 1, not shared-marked) is not
    /// reachable through another process's CR3, and user PTEs map only
    /// user frames.
    Isolation,
    /// Every swap PTE names an allocated slot of a swap area; each slot's
    /// count equals the swap PTEs naming it and `SWAP_HAS_CACHE` is set
    /// exactly for slots in the swap cache; every slot in use holds, in
    /// the swap file, the contents the guest recorded writing.
    Swap,
    /// Every page on an LRU list is an allocated user page, each on one
    /// list, the lists' counts agree; every private user page mapped or in
    /// the swap cache is on a list.
    Lru,
    /// No access would have used a stale TLB entry on hardware: the
    /// guest's per-CPU record of page-table changes, flushes, frees and
    /// returns to user mode, replayed (mm-core's `paging::tlbtrace`).
    Tlb,
    /// Every buddy block's node (the zone its descriptor names) is the
    /// node whose SRAT range holds it, so the per-node free and used
    /// counts agree with the frames in each node's range; every frame
    /// mapped in a VMA with an MPOL_BIND policy lies in one of its nodes.
    Numa,
    /// Every memory cgroup's charge equals the pages whose descriptors
    /// carry its tag, each an allocated page of the charged kind; every
    /// mapped user page is charged; no group is over memory.max.
    Memcg,
}

impl Check {
    /// Every check, in the order they run.
    pub const ALL: [Check; 15] = [
        Check::Kvm,
        Check::Wx,
        Check::TextRo,
        Check::TextUser,
        Check::FreedMapped,
        Check::PtOwner,
        Check::Access,
        Check::Refcount,
        Check::CowRo,
        Check::Isolation,
        Check::Swap,
        Check::Lru,
        Check::Tlb,
        Check::Numa,
        Check::Memcg,
    ];

    /// The checks that read the guest's descriptor.
    pub const DESCRIPTOR: [Check; 11] = [
        Check::FreedMapped,
        Check::PtOwner,
        Check::Access,
        Check::Refcount,
        Check::CowRo,
        Check::Isolation,
        Check::Swap,
        Check::Lru,
        Check::Tlb,
        Check::Numa,
        Check::Memcg,
    ];

    /// The name `--verify` and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Check::Kvm => "kvm",
            Check::Wx => "wx",
            Check::TextRo => "text-ro",
            Check::TextUser => "text-user",
            Check::FreedMapped => "freed-mapped",
            Check::PtOwner => "pt-owner",
            Check::Access => "access",
            Check::Refcount => "refcount",
            Check::CowRo => "cow-ro",
            Check::Isolation => "isolation",
            Check::Swap => "swap",
            Check::Lru => "lru",
            Check::Tlb => "tlb",
            Check::Numa => "numa",
            Check::Memcg => "memcg",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The checks `--verify` selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checks(pub Vec<Check>);

/// Parses `--verify`'s value: `all` or a comma-separated list of checks.
pub fn parse_checks(s: &str) -> Result<Checks, String> {
    let mut v = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if item == "all" {
            v.extend(Check::ALL);
            continue;
        }
        let c = Check::ALL.into_iter().find(|c| c.name() == item).ok_or_else(|| {
            let names: Vec<&str> = Check::ALL.iter().map(|c| c.name()).collect();
            format!("unknown check '{item}'; checks: all, {}", names.join(", "))
        })?;
        v.push(c);
    }
    if v.is_empty() {
        v.extend(Check::ALL);
    }
    let mut seen = Vec::new();
    v.retain(|c| {
        let new = !seen.contains(c);
        seen.push(*c);
        new
    });
    Ok(Checks(v))
}

/// The checkpoints the embedded guest reaches on its own, with what
/// brings them about; `checkpoint=NAME` on the command line adds any name,
/// and SIGUSR1 to the VMM makes `pause`.
pub const BUILTIN_CHECKPOINTS: [(&str, &str); 12] = [
    ("ready", "every boot, once the memory manager is up and the descriptor published"),
    ("sabotage", "break=NAME, right after the invariant was broken"),
    ("access-test-done", "selftest=access (twice: ring 0, then the ring-3 program access3)"),
    ("processes-alive", "selftest=process, while six processes map one address"),
    ("cow-shared", "selftest=process, right after the cow program forked"),
    ("cow-child-wrote", "selftest=process, after the cow child wrote its copy"),
    ("zero-page-mapped", "selftest=process, after the touch program read untouched memory"),
    ("mmbench-kmalloc-begin", "mmbench, around 1000 kmalloc/kfree pairs"),
    ("mmbench-kmalloc-end", "mmbench"),
    ("mmbench-pages-begin", "mmbench, around 1000 order-0 page pairs"),
    ("mmbench-pages-end", "mmbench"),
    ("pause", "SIGUSR1 sent to the VMM (any moment)"),
];

/// Everything the inspector does during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InspectConfig {
    /// Views to show at each checkpoint.
    pub views: Vec<ViewSpec>,
    /// Only at these checkpoints (empty: at all).
    pub at: Vec<String>,
    /// JSON lines instead of tables.
    pub json: bool,
    /// Checks to run at each checkpoint (`None`: no verification).
    pub verify: Option<Vec<Check>>,
    /// Where JSON goes (`--json=PATH`); `None` or `-`: stdout.
    pub json_out: Option<PathBuf>,
    /// Entry reads one listing of one root may spend (`--budget`; `None`:
    /// [`super::views::DEFAULT_BUDGET`]).
    pub budget: Option<u64>,
    /// The swap device's backing file (`--swap`), which `--verify swap`
    /// reads to check the slots' contents.
    pub swap_file: Option<PathBuf>,
}

impl InspectConfig {
    /// The read budget per root listing.
    pub fn budget(&self) -> u64 {
        self.budget.unwrap_or(super::views::DEFAULT_BUDGET)
    }

    /// Opens where the views and checks are written: stdout, or with
    /// `--json=PATH` that file (created or truncated). Buffered: the views
    /// stream and flush after each.
    pub fn output(&self) -> std::io::Result<Box<dyn std::io::Write + Send>> {
        Ok(match &self.json_out {
            Some(p) if self.json && p.as_os_str() != "-" => {
                Box::new(std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(p)?))
            }
            _ => Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())),
        })
    }

    /// Whether the views' JSON takes over stdout (the console must go
    /// elsewhere so the stream stays JSON only).
    pub fn json_on_stdout(&self) -> bool {
        self.json && self.json_out.as_ref().is_none_or(|p| p.as_os_str() == "-")
    }

    /// The roots the user named with `@CR3`.
    pub fn user_roots(&self) -> Vec<u64> {
        self.views
            .iter()
            .filter_map(|v| match v {
                ViewSpec::Walk { cr3, .. }
                | ViewSpec::Tlb { cr3 }
                | ViewSpec::Mem { cr3 }
                | ViewSpec::Stage2 { cr3, .. } => *cr3,
                _ => None,
            })
            .collect()
    }

    /// Whether anything is to be done at checkpoints.
    pub fn is_active(&self) -> bool {
        !self.views.is_empty() || self.verify.is_some()
    }

    /// Whether the memslots need KVM's dirty logging.
    pub fn wants_dirty_log(&self) -> bool {
        self.views.iter().any(|v| matches!(v, ViewSpec::Dirty))
    }

    /// Whether the views and checks apply at checkpoint `name`.
    pub fn applies_at(&self, name: &str) -> bool {
        self.at.is_empty() || self.at.iter().any(|a| a == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_parse() {
        assert_eq!(parse_view("cpu"), Ok(ViewSpec::Cpu));
        assert_eq!(parse_view("tlb@0x9000"), Ok(ViewSpec::Tlb { cr3: Some(0x9000) }));
        assert_eq!(
            parse_view("walk:0xffff_ffff_8020_0000"),
            Ok(ViewSpec::Walk { addr: AddrSpec::Num(0xffff_ffff_8020_0000), cr3: None })
        );
        assert_eq!(
            parse_view("walk:_start+0x10@0x1000"),
            Ok(ViewSpec::Walk { addr: AddrSpec::Symbol("_start".into(), 0x10), cr3: Some(0x1000) })
        );
        assert_eq!(parse_view("stage2:rip"), Ok(ViewSpec::Stage2 { addr: AddrSpec::Rip, cr3: None }));
        assert_eq!(parse_view("physmap:/tmp/x"), Ok(ViewSpec::Physmap { dir: Some("/tmp/x".into()) }));
        assert_eq!(parse_view("physmap"), Ok(ViewSpec::Physmap { dir: None }));
        assert_eq!(parse_view("buddyinfo"), Ok(ViewSpec::Buddyinfo));
        assert_eq!(parse_view("extfrag"), Ok(ViewSpec::Extfrag));
        assert_eq!(parse_view("exits"), Ok(ViewSpec::Exits));
        assert_eq!(parse_view("pagesums"), Ok(ViewSpec::Pagesums { pid: None }));
        assert_eq!(parse_view("pagesums:3"), Ok(ViewSpec::Pagesums { pid: Some(3) }));
        assert!(parse_view("pagesums:x").is_err_and(|e| e.contains("pagesums:x: 'x' is not a pid")));
        assert_eq!(parse_view("vmstat"), Ok(ViewSpec::Vmstat));
        assert!(parse_view("ps:1").is_err());
        for bad in ["wlk", "walk", "walk:12zz", "tlb@zz", "cpu:3", "walk:_start+q"] {
            assert!(parse_view(bad).is_err(), "{bad} parsed");
        }
        assert!(parse_view("nope").unwrap_err().contains("walk:ADDR"), "errors list the views");
    }

    #[test]
    fn checks_parse() {
        assert_eq!(parse_checks("all").unwrap().0, Check::ALL.to_vec());
        assert_eq!(parse_checks("kvm,text-user,kvm").unwrap().0, vec![Check::Kvm, Check::TextUser]);
        assert!(parse_checks("kvm,bogus").is_err());
        assert_eq!(
            parse_checks("freed-mapped,pt-owner,access").unwrap().0,
            vec![Check::FreedMapped, Check::PtOwner, Check::Access]
        );
        assert_eq!(
            parse_checks("refcount,cow-ro,isolation").unwrap().0,
            vec![Check::Refcount, Check::CowRo, Check::Isolation]
        );
        assert!(parse_checks("bogus").unwrap_err().contains("isolation"), "errors list every check");
    }

    #[test]
    fn config_filters_checkpoints() {
        let mut c = InspectConfig::default();
        assert!(!c.is_active());
        c.views.push(ViewSpec::Dirty);
        assert!(c.is_active() && c.wants_dirty_log() && c.applies_at("x"));
        c.at.push("boot".into());
        assert!(c.applies_at("boot") && !c.applies_at("x"));
    }
}
