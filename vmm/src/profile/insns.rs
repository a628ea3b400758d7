//! The instruction counter behind `--count-insns FROM..TO`.
//!
//! From checkpoint FROM the vCPU runs under `KVM_GUESTDBG_SINGLESTEP`
//! with `KVM_GUESTDBG_BLOCKIRQ` (no interrupt is injected between steps,
//! so a ring-0 path is the same path every run): every debug exit is one
//! ring-0 instruction, attributed to the function its address lies in.
//!
//! Ring 3 runs natively on hosts without VMX/SVM, where KVM's single-step
//! never sees it (the trap flag goes to the guest's own #DB handler). So
//! before an `iretq`/`sysretq` back to user mode the counter stops
//! stepping and plants one hardware breakpoint on `trap_common`, where
//! every entry into the kernel (exceptions, interrupts, system calls)
//! arrives; there it counts the entry stub's instructions (the vector on
//! the stack says which stub ran) and steps again. Ring-3 stretches are
//! counted as stretches (how often the window ran user code), not as
//! instructions. Interrupts that arrive while ring 3 runs are timing, not
//! path: they run natively, uncounted, until the next return to user mode
//! (a breakpoint on `trap_return`'s `iretq`); stepping them with
//! interrupts blocked would outlast the timer's period and livelock.

use crate::inspect::checkpoint::{ParkHook, ParkVerdict};
use crate::inspect::{address_mode, read_linear};
use crate::kvm::Vcpu;
use crate::memory::GuestMem;
use crate::symbols::Symbols;
use kvm_bindings::{
    kvm_guest_debug, KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Vectors whose entry stub has no `push $0` (the CPU pushed an error code).
const ERROR_CODE_VECTORS: [u64; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];

/// `--count-insns FROM..TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountSpec {
    /// The checkpoint where counting starts.
    pub from: String,
    /// The checkpoint where it ends.
    pub to: String,
}

impl std::str::FromStr for CountSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once("..") {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok(CountSpec { from: a.into(), to: b.into() }),
            _ => Err(format!("--count-insns '{s}': write FROM..TO, two checkpoint names (e.g. mmbench-kmalloc-begin..mmbench-kmalloc-end)")),
        }
    }
}

/// One function's count.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FunctionCount {
    /// The symbol (demangled, without its hash), or `?` outside every symbol.
    pub function: String,
    /// Ring-0 instructions executed in it.
    pub insns: u64,
}

/// What a window counted.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CountReport {
    /// The window's first checkpoint.
    pub from: String,
    /// Its last.
    pub to: String,
    /// Whether TO was reached (else the counts stop where the run ended).
    pub complete: bool,
    /// Ring-0 instructions on the window's path (interrupts excluded).
    pub ring0: u64,
    /// Times the window ran user code (ring 3, not stepped: see the module).
    pub ring3_stretches: u64,
    /// How many such interrupts.
    pub interrupts: u64,
    /// Per function, most first.
    pub functions: Vec<FunctionCount>,
    /// The host PMU's counts of the window's vCPU in guest mode, where
    /// the host has a PMU (`None`, with a note saying why, elsewhere).
    pub pmu: Option<super::pmu::GuestInsnCounts>,
    /// Why the counts may be short, if they are.
    pub notes: Vec<String>,
}

impl CountReport {
    /// The table `--count-insns` prints.
    pub fn render(&self, top: usize) -> String {
        let mut t = format!(
            "--- instructions from checkpoint '{}' to '{}'{} ---\nring 0: {} instructions in {} functions; ring 3: {} stretches (not stepped); interrupts during ring 3: {} (run natively, not counted)\n",
            self.from,
            self.to,
            if self.complete { "" } else { " (TO never reached: counted to the end of the run)" },
            self.ring0,
            self.functions.len(),
            self.ring3_stretches,
            self.interrupts
        );
        if let Some(p) = self.pmu {
            t.push_str(&format!(
                "host PMU, this vCPU in guest mode: ring 3: {} instructions; ring 0: {} instructions (interrupts and idle included)\n",
                p.ring3, p.ring0
            ));
        }
        t.push_str(&format!("{:>10}  {:>6}  function\n", "insns", "%"));
        for f in self.functions.iter().take(top) {
            let pct = if self.ring0 == 0 { 0.0 } else { f.insns as f64 * 100.0 / self.ring0 as f64 };
            t.push_str(&format!("{:>10}  {pct:>5.1}%  {}\n", f.insns, f.function));
        }
        if self.functions.len() > top {
            t.push_str(&format!(
                "  ... {} more functions (--count-insns-json has them all)\n",
                self.functions.len() - top
            ));
        }
        for n in &self.notes {
            t.push_str(&format!("note: {n}\n"));
        }
        t
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before FROM.
    Idle,
    /// Single-stepping ring 0; `prev` is the instruction about to retire.
    Stepping,
    /// Ring 3 runs; a breakpoint on `trap_common` waits for the next entry.
    User,
    /// An interrupt that arrived in ring 3 (or an idle `hlt`) runs
    /// natively until the next return to user mode (a breakpoint on
    /// `trap_return`'s `iretq`): stepping it, with interrupts blocked,
    /// would take longer than the timer's period and never get back.
    Native,
    /// In [`State::Native`], stepping over a kernel-to-kernel `iretq`.
    NativeStepOver,
    /// After TO (or a failure).
    Done,
}

/// The park hook that counts.
pub struct InsnCounter {
    spec: CountSpec,
    mem: GuestMem,
    symbols: Arc<Symbols>,
    trap_common: Option<u64>,
    /// The `iretq` in `trap_return`.
    iretq: Option<u64>,
    state: State,
    prev: u64,
    counts: BTreeMap<u64, u64>,
    report: CountReport,
    json: Option<PathBuf>,
    out: Arc<Mutex<Option<CountReport>>>,
    /// The host PMU's guest-mode counters, from FROM to TO.
    pmu: Option<super::pmu::GuestInsns>,
}

impl InsnCounter {
    /// A counter for `spec`; the report also goes to `json` when given.
    pub fn new(spec: CountSpec, mem: GuestMem, symbols: Arc<Symbols>, json: Option<PathBuf>) -> Self {
        let trap_common = symbols.address_of("trap_common");
        let iretq = find_iretq(&mem, &symbols);
        let report = CountReport { from: spec.from.clone(), to: spec.to.clone(), ..Default::default() };
        InsnCounter {
            spec,
            mem,
            symbols,
            trap_common,
            iretq,
            state: State::Idle,
            prev: 0,
            counts: BTreeMap::new(),
            report,
            json,
            out: Arc::default(),
            pmu: None,
        }
    }

    /// The report, once the window closed (or the run ended: see [`InsnCounter::finish`]).
    pub fn result(&self) -> Arc<Mutex<Option<CountReport>>> {
        self.out.clone()
    }

    /// Sets KVM's guest debugging for the current state: single-step in
    /// [`State::Stepping`] (and to step over a breakpoint's instruction),
    /// one breakpoint on `trap_common` in [`State::User`], one on
    /// `trap_return`'s `iretq` in [`State::Native`]. One breakpoint at a
    /// time, never on the instruction about to run: hardware breakpoints
    /// re-fire here (RFLAGS.RF is ignored), so a breakpoint's own
    /// instruction is stepped over with the breakpoint off.
    fn set_debug(&mut self, vcpu: &dyn Vcpu, step: bool) {
        let mut dbg = kvm_guest_debug::default();
        let bp = match self.state {
            State::User => self.trap_common,
            State::Native => self.iretq,
            _ => None,
        };
        if step {
            dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_BLOCKIRQ;
        } else if let Some(at) = bp {
            dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
            dbg.arch.debugreg[0] = at;
            // L0 and G0, execute, one byte; bit 10 reads as 1; GE/LE.
            dbg.arch.debugreg[7] = 0b11 | 0x700;
        }
        if let Err(e) = vcpu.set_guest_debug(&dbg) {
            self.report.notes.push(format!("KVM refused the guest-debug state ({e}); counting stopped"));
            self.state = State::Done;
        }
    }

    fn count(&mut self, rip: u64, n: u64) {
        *self.counts.entry(rip).or_default() += n;
        self.report.ring0 += n;
    }

    fn read_u64(&self, vcpu: &dyn Vcpu, la: u64) -> Option<u64> {
        let (regs, sregs) = (vcpu.get_regs().ok()?, vcpu.get_sregs().ok()?);
        let mut b = [0u8; 8];
        (read_linear(&self.mem, &address_mode(&regs, &sregs), la, &mut b) == 8).then(|| u64::from_le_bytes(b))
    }

    /// What the instruction at `rip` does to the counting.
    fn next_kind(&self, vcpu: &dyn Vcpu, rip: u64, rsp: u64) -> Next {
        let (Ok(regs), Ok(sregs)) = (vcpu.get_regs(), vcpu.get_sregs()) else { return Next::Plain };
        let mut b = [0u8; 3];
        let n = read_linear(&self.mem, &address_mode(&regs, &sregs), rip, &mut b);
        let code = &b[..n];
        if code.starts_with(&[0x48, 0xcf]) || code.starts_with(&[0xcf]) {
            // iretq: CS is the second word of the frame it pops.
            if self.read_u64(vcpu, rsp + 8).is_some_and(|cs| cs & 3 == 3) {
                return Next::ToUser;
            }
        }
        if code.starts_with(&[0x48, 0x0f, 0x07]) {
            return Next::ToUser;
        }
        if code.starts_with(&[0xf4]) {
            return Next::Halt;
        }
        Next::Plain
    }

    /// One debug exit while counting.
    fn on_debug(&mut self, vcpu: &dyn Vcpu) {
        let (Ok(regs), Ok(sregs)) = (vcpu.get_regs(), vcpu.get_sregs()) else {
            self.report.notes.push("the vCPU's registers became unreadable; counting stopped".into());
            self.state = State::Done;
            return;
        };
        match self.state {
            State::Stepping => {
                self.count(self.prev, 1);
                if sregs.cs.selector & 3 == 3 {
                    // A return to user mode the counter did not see coming.
                    self.report.notes.push(format!("stepped into ring 3 at {:#x}; counting stopped", regs.rip));
                    self.state = State::Done;
                    self.set_debug(vcpu, false);
                    return;
                }
                self.prev = regs.rip;
                if self.trap_common.is_none() || self.iretq.is_none() {
                    return;
                }
                match self.next_kind(vcpu, regs.rip, regs.rsp) {
                    Next::ToUser => {
                        // The return itself retires without a step exit.
                        self.count(regs.rip, 1);
                        self.report.ring3_stretches += 1;
                        self.state = State::User;
                        self.set_debug(vcpu, false);
                    }
                    Next::Halt => {
                        // Idle: only an interrupt ends it, and stepping blocks them.
                        self.count(regs.rip, 1);
                        self.report.notes.push(format!(
                            "the window went idle (hlt at {}): what ran until the next return to user mode was not stepped",
                            self.symbols.describe(regs.rip)
                        ));
                        self.state = State::Native;
                        self.set_debug(vcpu, false);
                    }
                    Next::Plain => {}
                }
            }
            State::User => {
                if Some(regs.rip) != self.trap_common {
                    return;
                }
                // The stub that ran: `push $0` (no error code), `push $vec`, `jmp`.
                let vector = self.read_u64(vcpu, regs.rsp).unwrap_or(u64::MAX);
                if (32..u64::MAX).contains(&vector) {
                    self.report.interrupts += 1;
                    self.state = State::Native;
                    self.set_debug(vcpu, false);
                    return;
                }
                let stub = if ERROR_CODE_VECTORS.contains(&vector) { 2 } else { 3 };
                let stub_at = self.symbols.address_of(&format!("trap_{vector}")).unwrap_or(regs.rip);
                self.count(stub_at, stub);
                self.prev = regs.rip;
                self.state = State::Stepping;
                self.set_debug(vcpu, true);
            }
            State::Native => {
                if Some(regs.rip) != self.iretq {
                    return;
                }
                if self.read_u64(vcpu, regs.rsp + 8).is_some_and(|cs| cs & 3 == 3) {
                    // Back to user mode: the next entry is the path's again.
                    self.report.ring3_stretches += 1;
                    self.state = State::User;
                    self.set_debug(vcpu, false);
                } else {
                    // A return within the kernel: step over it, then wait again.
                    self.state = State::NativeStepOver;
                    self.set_debug(vcpu, true);
                }
            }
            State::NativeStepOver => {
                self.state = State::Native;
                self.set_debug(vcpu, false);
            }
            State::Idle | State::Done => {}
        }
    }

    /// Ends the window: the table on stderr, the JSON to its file.
    pub fn finish(&mut self, complete: bool) {
        if self.state == State::Idle || self.out.lock().map(|o| o.is_some()).unwrap_or(true) {
            return;
        }
        if let Some(c) = self.pmu.take() {
            match c.stop() {
                Ok(n) => self.report.pmu = Some(n),
                Err(e) => self.report.notes.push(e.to_string()),
            }
        }
        let mut by_fn: BTreeMap<String, u64> = BTreeMap::new();
        for (&rip, &n) in &self.counts {
            let name = self.symbols.lookup(rip).map(|(s, _)| strip_hash(s).to_string()).unwrap_or_else(|| "?".into());
            *by_fn.entry(name).or_default() += n;
        }
        let mut functions: Vec<FunctionCount> =
            by_fn.into_iter().map(|(function, insns)| FunctionCount { function, insns }).collect();
        functions.sort_by(|a, b| b.insns.cmp(&a.insns).then(a.function.cmp(&b.function)));
        self.report.functions = functions;
        self.report.complete = complete;
        eprint!("{}", self.report.render(25));
        if let Some(p) = &self.json {
            let j = serde_json::to_string_pretty(&self.report).unwrap_or_default();
            if let Err(e) = std::fs::write(p, j + "\n") {
                eprintln!("vmm: cannot write {}: {e}", p.display());
            }
        }
        if let Ok(mut o) = self.out.lock() {
            *o = Some(self.report.clone());
        }
    }
}

/// What the next instruction means for the counter.
enum Next {
    /// Returns to user mode (`iretq` to CPL 3, `sysretq`).
    ToUser,
    /// `hlt`: idle until an interrupt.
    Halt,
    /// Anything else.
    Plain,
}

/// The `iretq` (48 cf) in the kernel's `trap_return`, from the kernel's
/// image in guest memory (its physical address is the kernel map's).
fn find_iretq(mem: &GuestMem, symbols: &Symbols) -> Option<u64> {
    use vm_memory::{Bytes, GuestAddress};
    let at = symbols.address_of("trap_return")?;
    let pa = at.checked_sub(mm_core::abi::layout::KERNEL_MAP)?;
    let mut b = [0u8; 512];
    mem.read_slice(&mut b, GuestAddress(pa)).ok()?;
    b.windows(2).position(|w| w == [0x48, 0xcf]).map(|i| at + i as u64)
}

/// `kernel::mm::kmalloc::h0123456789abcdef` -> `kernel::mm::kmalloc`.
pub(crate) fn strip_hash(s: &str) -> &str {
    match s.rsplit_once("::h") {
        Some((head, h)) if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) => head,
        _ => s,
    }
}

impl ParkHook for InsnCounter {
    fn checkpoint(&mut self, name: &str, vcpu: &dyn Vcpu) -> ParkVerdict {
        match self.state {
            State::Idle if name == self.spec.from => {
                let Ok(regs) = vcpu.get_regs() else { return ParkVerdict::Resume };
                if self.trap_common.is_none() || self.iretq.is_none() {
                    self.report.notes.push(
                        "the kernel has no trap_common or trap_return (with an iretq): the window is counted up to its first return to user mode".into(),
                    );
                }
                // Hooks run on the parked vCPU's own thread: perf's
                // counters follow it.
                match super::pmu::GuestInsns::start() {
                    Ok(c) => self.pmu = Some(c),
                    Err(e) => self.report.notes.push(e.to_string()),
                }
                self.prev = regs.rip;
                self.state = State::Stepping;
                self.set_debug(vcpu, true);
            }
            State::Stepping | State::User | State::Native | State::NativeStepOver if name == self.spec.to => {
                // The port write that stopped here was the last instruction.
                if self.state == State::Stepping {
                    self.count(self.prev, 1);
                }
                self.state = State::Done;
                let _ = vcpu.set_guest_debug(&kvm_guest_debug::default());
                self.finish(true);
            }
            _ => {}
        }
        ParkVerdict::Resume
    }

    fn run_ended(&mut self) {
        // TO never came: what was counted, marked incomplete.
        if matches!(self.state, State::Stepping | State::User | State::Native | State::NativeStepOver) {
            self.finish(false);
        }
    }

    fn debug_exit(&mut self, vcpu: &dyn Vcpu) -> bool {
        if matches!(self.state, State::Stepping | State::User | State::Native | State::NativeStepOver) {
            self.on_debug(vcpu);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_names_parse() {
        let s: CountSpec = "a..b".parse().unwrap();
        assert_eq!((s.from.as_str(), s.to.as_str()), ("a", "b"));
        assert!("a..".parse::<CountSpec>().is_err());
        assert!("ab".parse::<CountSpec>().is_err());
        assert_eq!(strip_hash("kernel::mm::kmalloc::h0123456789abcdef"), "kernel::mm::kmalloc");
        assert_eq!(strip_hash("trap_common"), "trap_common");
    }
}
