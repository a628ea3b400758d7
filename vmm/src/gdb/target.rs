//! The gdbstub `Target` over a vCPU's debugger channel: registers, memory,
//! resume and single-step, breakpoints, and the event loop that resumes
//! the vCPU and waits for its next stop or for gdb.
//!
//! Each vCPU is a gdb thread with id = vCPU index + 1. The session runs on
//! vCPU 0's thread; the other vCPUs are parked whenever gdb looks (all-stop:
//! the world is stopped, see [`crate::vcpu::world`]), so their registers
//! are read from their parked state. A step of any vCPU runs that one alone
//! (on its own thread, for the session) and leaves the others stopped, as
//! with gdb's scheduler-locking (and as kgdb steps one CPU with the others
//! held, even when gdb's `vCont;s:N;c` would let them run); a continue runs
//! them all with the same breakpoints, and the first vCPU to stop stops
//! them all and is the thread gdb is told about (`T05thread:N;`). Memory,
//! breakpoints and `monitor` use the address space (CR3) of the thread gdb
//! last addressed (it selects one with `Hg` before reading its registers or
//! memory).

use super::arch::{Regs, X86_64System};
use super::breakpoints::Breakpoints;
use super::connection::Conn;
use super::memory::{self, View};
use super::watch::Watch;
use super::{GdbContext, GdbError};
use crate::inspect::{self, AddressMode, GuestLink};
use crate::symbols::Symbols;
use crate::vcpu::debug::{DebugStop, Debugger, GuestCpu};
use crate::vcpu::{report, Crash, VcpuStop};
use gdbstub::common::{Signal, Tid};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint, SwBreakpointOps,
    WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use kvm_bindings::{kvm_debug_exit_arch, kvm_regs, kvm_sregs, KVM_INTERNAL_ERROR_EMULATION};
use kvm_ioctls::SyncReg;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use vm_memory::GuestMemoryMmap;

/// The gdb thread of vCPU 0.
pub const VCPU0: Tid = NonZeroUsize::MIN;

/// What gdb is told when the target stops.
pub type StopReason = MultiThreadStopReason<u64>;

/// gdb's Ctrl-C: the interrupt byte, sent outside any packet.
const INTERRUPT: u8 = 0x03;
/// DR6.BS: the stop is a single-step trap.
const DR6_BS: u64 = 1 << 14;
/// DR6.B0-B3: which debug register matched.
const DR6_BN: u64 = 0xf;
const EFAULT: u8 = 14;
const EINVAL: u8 = 22;

/// How the guest ended while gdb was attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEnd {
    /// The run is over (exit, timeout, a `--verify` violation).
    Over,
    /// It died; gdb was shown the stop and may still look at the state.
    Crash(Crash),
}

/// The debugged machine as gdbstub sees it.
pub struct GdbTarget<'a> {
    /// The parked vCPU (this runs on its thread).
    cpu: &'a mut dyn GuestCpu,
    dbg: &'a Debugger,
    watch: &'a Watch,
    /// Guest RAM.
    pub(super) mem: &'a GuestMemoryMmap,
    /// Kernel (and firmware) symbols, for monitor expressions.
    pub(super) symbols: &'a Symbols,
    /// Where the guest published its descriptor.
    pub(super) link: &'a GuestLink,
    ctx: &'a GdbContext,
    /// Planted breakpoints.
    pub(super) bps: Breakpoints,
    /// How memory addresses are interpreted (`monitor phys`, `monitor cr3`).
    pub(super) view: View,
    step: bool,
    /// The guest-debug state each vCPU has (None: unknown).
    debug_state: Vec<Option<(u32, [u64; 8])>>,
    /// The vCPU run control is about: the last to stop, or the one gdb
    /// steps. The register cache is its.
    cur: usize,
    /// The vCPU gdb last addressed (registers, memory): whose address
    /// space `monitor` and new breakpoints use.
    sel: usize,
    cache: Option<(kvm_regs, kvm_sregs)>,
    /// Set once the guest died or the run ended.
    pub(super) end: Option<GuestEnd>,
    /// How the run ended, once it did.
    ended_with: Option<VcpuStop>,
    /// gdb's bytes stopped the running guest; gdbstub is reading them.
    interrupted_running: bool,
    /// Refusals and warnings not yet shown in gdb (see [`GdbTarget::note`]).
    notes: Vec<String>,
    /// What each debug register holds besides gdb's `hbreak`s: the stub's
    /// hidden breakpoints on the guest's #BP and #DB handler entries.
    hidden: [Option<Hidden>; 4],
    /// A ring-3 step is under way: the stub set RFLAGS.TF itself (ring 3
    /// runs natively on emulated-ring-0 hosts, so KVM's single-step never
    /// sees it; the #DB enters the guest's handler, where the hidden
    /// breakpoint catches it).
    user_step: bool,
    /// gdb's software breakpoints on no-execute pages, held by debug
    /// registers.
    sw_as_hw: Vec<u64>,
    /// The next run is a step of `cur` alone (the others stay stopped).
    alone: bool,
    /// The vCPU gdb asked to step in the resume being set up.
    step_tid: Option<usize>,
}

/// A hidden breakpoint of the stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hidden {
    /// The guest's #BP handler entry: an `int3` ran in ring 3.
    Breakpoint,
    /// The guest's #DB handler entry: a ring-3 single-step trap.
    Step,
}

/// RFLAGS.TF.
const TF: u64 = 1 << 8;

/// The hardware frame an exception from ring 3 leaves on the kernel stack.
#[derive(Debug, Clone, Copy)]
struct ExceptionFrame {
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

impl<'a> GdbTarget<'a> {
    /// A target over the parked vCPU `cpu`, which stopped with `first`;
    /// `watch` interrupts it while it runs.
    pub fn new(ctx: &'a GdbContext, watch: &'a Watch, cpu: &'a mut dyn GuestCpu, first: DebugStop) -> Self {
        let (n, me) = (cpu.vcpu_count(), cpu.index());
        let mut t = GdbTarget {
            cpu,
            dbg: &ctx.debugger,
            watch,
            mem: &ctx.mem,
            symbols: &ctx.symbols,
            link: &ctx.link,
            ctx,
            bps: Breakpoints::default(),
            view: View::default(),
            step: false,
            debug_state: vec![None; n],
            cur: me,
            sel: me,
            cache: None,
            end: None,
            ended_with: None,
            interrupted_running: false,
            notes: Vec::new(),
            hidden: [None; 4],
            user_step: false,
            sw_as_hw: Vec::new(),
            alone: false,
            step_tid: None,
        };
        // Every exit copies the registers into the vCPU's run structure
        // while gdb is attached (KVM_CAP_SYNC_REGS, x86 KVM since Linux
        // 4.16): a stop's registers come without a KVM_GET_REGS and
        // KVM_GET_SREGS. Turned off again in `finish`.
        for i in 0..t.cpu.vcpu_count() {
            if let Some(mut v) = t.cpu.vcpu_of(i) {
                v.set_sync_valid_reg(SyncReg::Register);
                v.set_sync_valid_reg(SyncReg::SystemRegister);
            }
        }
        // A crash or halt seen at attach is this session's too.
        let _ = t.stop_reason(first);
        t
    }

    /// A refusal or warning for gdb's user: on the VMM's stderr now, and in
    /// gdb itself as console output (`O` packets) before the next stop
    /// reply, or at the top of the next `monitor` answer. (gdb shows no
    /// text sent with an error reply, and after a refused insertion it
    /// does not resume, so the next stop or monitor command carries it.)
    pub(super) fn note(&mut self, msg: String) {
        eprintln!("vmm: gdb: {msg}");
        self.notes.push(msg);
    }

    /// The pending notes as text, taken.
    pub(super) fn take_notes(&mut self) -> String {
        self.notes.drain(..).map(|n| format!("vmm: {n}\n")).collect()
    }

    /// Sends the pending notes as console-output packets (gdb prints them
    /// while it waits for a stop reply).
    fn flush_notes(&mut self, conn: &mut Conn) -> io::Result<()> {
        use gdbstub::conn::Connection;
        let text = self.take_notes();
        if text.is_empty() {
            return Ok(());
        }
        // One packet per line keeps each well under gdb's packet size.
        for line in text.split_inclusive('\n') {
            let mut body = String::from("O");
            for b in line.bytes() {
                body.push_str(&format!("{b:02x}"));
            }
            let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
            conn.write_all(format!("${body}#{sum:02x}").as_bytes())?;
        }
        conn.flush()
    }

    /// Whether the vCPU's run is over.
    pub fn run_over(&self) -> bool {
        matches!(self.end, Some(GuestEnd::Over))
    }

    /// How the run ended (once [`GdbTarget::run_over`]).
    pub fn ended_with(&self) -> Option<VcpuStop> {
        self.ended_with.clone()
    }

    /// Runs the guest until its next stop for gdb. A requested stop with
    /// nothing from gdb behind it (the watcher acted on bytes of an
    /// earlier run, already read) is no stop: it runs on.
    fn run_guest(&mut self) -> DebugStop {
        self.cache = None;
        loop {
            self.watch.arm(self.dbg);
            let s = if self.alone {
                self.cpu.run_alone(self.cur)
            } else {
                let (i, s) = self.cpu.run();
                // The vCPU that stopped is the one gdb is told about.
                self.cur = i;
                self.sel = i;
                s
            };
            self.watch.disarm();
            if let DebugStop::Debug(_) = s {
                // A debug exit ends a KVM_RUN that just returned: KVM
                // copied the registers into the shared run structure (see
                // `new`), which saves two ioctls per step; each costs
                // several microseconds where the host is itself a guest.
                let r = self.fd().sync_regs();
                self.cache = Some((r.regs, r.sregs));
            }
            if s != DebugStop::Requested || self.watch.data_pending() {
                return s;
            }
        }
    }

    /// Removes every breakpoint and turns guest debugging off, so the guest
    /// runs on unobserved after the session. The vCPU must be parked.
    pub fn finish(&mut self) {
        self.bps.clear(self.mem);
        for i in 0..self.cpu.vcpu_count() {
            if let Err(e) = self.flush_state_of(i) {
                eprintln!("vmm: gdb: {e}");
            }
            let Some(mut v) = self.cpu.vcpu_of(i) else { continue };
            let _ = v.set_guest_debug(&Default::default());
            v.clear_sync_valid_reg(SyncReg::Register);
            v.clear_sync_valid_reg(SyncReg::SystemRegister);
        }
        self.debug_state.iter_mut().for_each(|d| *d = None);
    }

    /// The gdb thread of the vCPU run control is about.
    pub(super) fn tid(&self) -> Tid {
        Tid::new(self.cur + 1).unwrap_or(VCPU0)
    }

    /// vCPU `i` (parked); the session's own if `i` is past the last.
    fn fd_of(&self, i: usize) -> std::sync::MutexGuard<'_, kvm_ioctls::VcpuFd> {
        self.cpu.vcpu_of(i).unwrap_or_else(|| self.cpu.vcpu())
    }

    /// The vCPU run control is about.
    fn fd(&self) -> std::sync::MutexGuard<'_, kvm_ioctls::VcpuFd> {
        self.fd_of(self.cur)
    }

    /// Makes vCPU `i` the one run control (and the register cache) is
    /// about.
    fn switch_to(&mut self, i: usize) -> Result<(), GdbError> {
        if i != self.cur {
            self.flush_state()?;
            self.cache = None;
            self.cur = i;
        }
        Ok(())
    }

    /// vCPU `i`'s registers.
    pub(super) fn state_of(&mut self, i: usize) -> Result<(kvm_regs, kvm_sregs), GdbError> {
        if i == self.cur {
            return self.state();
        }
        self.flush_state_of(i)?;
        let v = self.fd_of(i);
        let regs = v.get_regs().map_err(GdbError::kvm("read a vCPU's registers"))?;
        let sregs = v.get_sregs().map_err(GdbError::kvm("read a vCPU's special registers"))?;
        Ok((regs, sregs))
    }

    /// The registers of the thread gdb last addressed (for `monitor`).
    pub(super) fn sel_state(&mut self) -> Result<(kvm_regs, kvm_sregs), GdbError> {
        self.state_of(self.sel)
    }

    /// The vCPU gdb last addressed.
    pub(super) fn selected(&self) -> usize {
        self.sel
    }

    /// What vCPU `i` runs, for gdb's `info threads`: `vCPU 1, pid 3 (sh),
    /// user mode`, or `vCPU 1, no process (kernel), kernel mode` for the
    /// idle loop and kernel threads. The process is the one whose
    /// address-space root (published in the guest's process table) is in
    /// the vCPU's CR3.
    fn describe_vcpu(&self, i: usize) -> String {
        let head = format!("vCPU {i}");
        if !self.cpu.started(i) {
            return format!("{head}, not started (waits for its start-up IPI)");
        }
        let state = match self.cache.filter(|_| i == self.cur) {
            Some(c) => Some(c),
            None => {
                let v = self.fd_of(i);
                v.get_regs().ok().zip(v.get_sregs().ok())
            }
        };
        let Some((regs, sregs)) = state else { return head };
        let mode = if sregs.cs.selector & 3 == 3 { "user mode" } else { "kernel mode" };
        let AddressMode::Paged(ctx) = inspect::address_mode(&regs, &sregs) else {
            return format!("{head}, paging off, {mode}");
        };
        use mm_core::paging::entry::PTE_ADDR_MASK_MAX;
        let root = sregs.cr3 & PTE_ADDR_MASK_MAX;
        let gs = crate::inspect::guest::GuestState::descriptor(self.mem, self.link.descriptor.get(), &ctx);
        let procs = gs.ok().and_then(|g| g.procs().ok().flatten()).unwrap_or_default();
        // Threads share their process's root: the running one first.
        use mm_core::abi::proc::{STATE_RUNNING, STATE_ZOMBIE};
        let mut mine: Vec<_> =
            procs.iter().filter(|p| p.state != STATE_ZOMBIE && p.cr3 & PTE_ADDR_MASK_MAX == root).collect();
        mine.sort_by_key(|p| p.state != STATE_RUNNING);
        let running = mine.first();
        match running {
            Some(p) => {
                let n = p.name.iter().position(|&b| b == 0).unwrap_or(p.name.len());
                format!("{head}, pid {} ({}), {mode}", p.pid, String::from_utf8_lossy(&p.name[..n]))
            }
            None => format!("{head}, no process (kernel), {mode}"),
        }
    }

    /// gdb addressed thread `tid` (memory and registers are its).
    fn address(&mut self, tid: Tid) {
        if tid.get() <= self.cpu.vcpu_count() {
            self.sel = tid.get() - 1;
        }
    }

    /// The vCPU's registers (cached while it is stopped).
    pub(super) fn state(&mut self) -> Result<(kvm_regs, kvm_sregs), GdbError> {
        if let Some(c) = self.cache {
            return Ok(c);
        }
        let v = self.fd();
        let regs = v.get_regs().map_err(GdbError::kvm("read the vCPU's registers"))?;
        let sregs = v.get_sregs().map_err(GdbError::kvm("read the vCPU's special registers"))?;
        drop(v);
        self.cache = Some((regs, sregs));
        Ok((regs, sregs))
    }

    /// Hands registers to the vCPU through KVM's sync-regs copy in the run
    /// structure (applied by the next KVM_RUN) rather than KVM_SET_REGS
    /// and KVM_SET_SREGS: each of those ioctls costs several microseconds
    /// where the host is itself a guest, and a user-mode breakpoint hit
    /// rewrites the registers twice. The cache keeps what the vCPU will
    /// run with, so reads in between see the new values.
    fn put_state(&mut self, regs: kvm_regs, sregs: Option<kvm_sregs>) -> Result<(), GdbError> {
        let (_, cached_sregs) = self.state()?;
        let mut v = self.fd();
        v.sync_regs_mut().regs = regs;
        v.set_sync_dirty_reg(SyncReg::Register);
        if let Some(s) = sregs {
            v.sync_regs_mut().sregs = s;
            v.set_sync_dirty_reg(SyncReg::SystemRegister);
        }
        drop(v);
        self.cache = Some((regs, sregs.unwrap_or(cached_sregs)));
        Ok(())
    }

    /// Applies register writes still waiting in the sync-regs copy with
    /// the ioctls, before anything else reads or writes the registers
    /// through KVM (which would not see them, or be undone by them at the
    /// next KVM_RUN).
    fn flush_state(&mut self) -> Result<(), GdbError> {
        self.flush_state_of(self.cur)
    }

    /// [`GdbTarget::flush_state`] for vCPU `i`.
    fn flush_state_of(&mut self, i: usize) -> Result<(), GdbError> {
        let mut v = self.fd_of(i);
        let dirty = v.get_kvm_run().kvm_dirty_regs;
        let (regs_bit, sregs_bit) = (SyncReg::Register as u64, SyncReg::SystemRegister as u64);
        if dirty & (regs_bit | sregs_bit) == 0 {
            return Ok(());
        }
        v.get_kvm_run().kvm_dirty_regs = dirty & !(regs_bit | sregs_bit);
        let pending = v.sync_regs();
        if dirty & sregs_bit != 0 {
            v.set_sregs(&pending.sregs).map_err(GdbError::kvm("return the vCPU to ring 3 (segments)"))?;
        }
        if dirty & regs_bit != 0 {
            v.set_regs(&pending.regs).map_err(GdbError::kvm("set the vCPU's registers"))?;
        }
        Ok(())
    }

    /// How the running vCPU translates addresses.
    fn cpu_mode(&mut self) -> Result<AddressMode, GdbError> {
        let (regs, sregs) = self.state()?;
        Ok(inspect::address_mode(&regs, &sregs))
    }

    /// How gdb's addresses translate: the vCPU's mode with any `monitor cr3`
    /// root substituted.
    pub(super) fn view_mode(&mut self) -> Result<AddressMode, GdbError> {
        let (regs, mut sregs) = self.sel_state()?;
        if let Some(cr3) = self.view.cr3 {
            sregs.cr3 = cr3;
            // A root given by hand means 4-level long-mode paging even
            // before the guest turned it on.
            use mm_core::abi::cpu::{CR0_PG, CR4_PAE, EFER_LMA, EFER_NXE};
            sregs.cr0 |= CR0_PG;
            sregs.cr4 |= CR4_PAE;
            sregs.efer |= EFER_LMA | EFER_NXE;
        }
        Ok(inspect::address_mode(&regs, &sregs))
    }

    /// The linear address of the next instruction.
    fn pc_linear(&mut self) -> Result<u64, GdbError> {
        let (regs, sregs) = self.state()?;
        Ok(if report::bitness(&sregs) == 64 { regs.rip } else { sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff })
    }

    /// The guest's handler entries for #BP (vector 3) and #DB (vector 1),
    /// from its IDT.
    fn handler_entries(&mut self) -> Result<(u64, u64), GdbError> {
        let (regs, sregs) = self.state()?;
        let mode = inspect::address_mode(&regs, &sregs);
        let gate = |vector: u64| -> Option<u64> {
            let mut g = [0u8; 16];
            let n = inspect::read_linear(self.mem, &mode, sregs.idt.base + vector * 16, &mut g);
            (n == 16).then(|| {
                let w = |i: usize| u64::from(u16::from_le_bytes([g[i], g[i + 1]]));
                w(0) | w(6) << 16 | u64::from(u32::from_le_bytes([g[8], g[9], g[10], g[11]])) << 32
            })
        };
        match (gate(3), gate(1)) {
            (Some(bp), Some(db)) => Ok((bp, db)),
            _ => Err(GdbError::Guest("the guest's IDT is unreadable, so user-mode breakpoints cannot be caught")),
        }
    }

    /// Whether the instruction at the PC returns to user mode (`iretq`,
    /// `sysretq`): a kernel step over it ends in ring 3, where only the
    /// guest's #DB handler sees the step trap.
    fn returns_to_user(&mut self) -> Result<bool, GdbError> {
        let pc = self.pc_linear()?;
        let mode = self.cpu_mode()?;
        let mut b = [0u8; 3];
        let n = inspect::read_linear(self.mem, &mode, pc, &mut b);
        let code = &b[..n];
        Ok(code.starts_with(&[0x48, 0xcf]) || code.starts_with(&[0xcf]) || code.starts_with(&[0x48, 0x0f, 0x07]))
    }

    /// The current privilege level.
    fn cpl(&mut self) -> Result<u16, GdbError> {
        Ok(self.state()?.1.cs.selector & 3)
    }

    fn set_debug(&mut self, step: bool, skip_hw: Option<u64>) -> Result<(), GdbError> {
        // Hidden breakpoints: on the #BP entry while an int3 sits in user
        // code, on the #DB entry while a step may end in ring 3 (a user
        // step, or a kernel step over iretq).
        // Only when needed: a debug register in use makes every KVM_RUN
        // dearer on some hosts, and a kernel step rarely ends in ring 3.
        let mut wanted = Vec::new();
        let catch_step = self.user_step || (step && self.returns_to_user()?);
        let paged = matches!(self.cpu_mode()?, AddressMode::Paged(_));
        if paged && (self.bps.has_user_sw() || catch_step) {
            if let Ok((bp, db)) = self.handler_entries() {
                if self.bps.has_user_sw() {
                    wanted.push((bp, Hidden::Breakpoint, true));
                }
                // With user breakpoints planted, gdb steps off each hit in
                // ring 3 and then continues: the #DB catch stays in its
                // register across both (when one is free), so the
                // guest-debug state, one ioctl, does not flip per hit. A
                // #DB of the guest's own passes through as before.
                if catch_step || self.bps.has_user_sw() {
                    wanted.push((db, Hidden::Step, catch_step));
                }
            }
        }
        let addrs: Vec<u64> = wanted.iter().map(|w| w.0).collect();
        // KVM's single-step only sees ring 0 here; a ring-3 step is the
        // stub's own TF.
        let kvm_step = step && !self.user_step;
        let (dbg, placed) = self.bps.guest_debug(kvm_step, skip_hw, &addrs);
        self.hidden = [None; 4];
        for (w, slot) in wanted.iter().zip(&placed) {
            match slot {
                Some(i) => self.hidden[*i] = Some(w.1),
                None if !w.2 => {}
                None => {
                    let what = if w.1 == Hidden::Breakpoint { "user-mode breakpoints" } else { "user-mode steps" };
                    self.note(format!(
                        "no free debug register for {what} (the stub needs one on the guest's handler entry); \
                         delete an `hbreak`"
                    ));
                }
            }
        }
        // A step (KVM's or the stub's TF) moves its vCPU alone; a continue
        // runs every vCPU with the same breakpoints.
        self.alone = step;
        let key = (dbg.control, dbg.arch.debugreg);
        let which: Vec<usize> = if step { vec![self.cur] } else { (0..self.cpu.vcpu_count()).collect() };
        for i in which {
            if self.debug_state.get(i).copied().flatten() != Some(key) {
                self.fd_of(i).set_guest_debug(&dbg).map_err(GdbError::kvm("set the guest-debug state"))?;
                if let Some(d) = self.debug_state.get_mut(i) {
                    *d = Some(key);
                }
            }
        }
        Ok(())
    }

    /// What gdb is told about a stop of the vCPU.
    /// What gdb is told about a stop of the vCPU; None when the stop was
    /// not for gdb (a hidden breakpoint on the guest's own business: call
    /// [`GdbTarget::pass_through`]).
    fn stop_reason(&mut self, s: DebugStop) -> Result<Option<StopReason>, GdbError> {
        // The register cache is what `run_guest` left: empty, or the
        // registers KVM copied out at this very stop.
        if let DebugStop::Ended(e) = &s {
            self.ended_with = Some(e.clone());
        }
        if let DebugStop::Debug(d) = &s {
            let hit = (0..4).find(|&i| d.dr6 & (1 << i) != 0 && self.hidden[i].is_some());
            if let Some(kind) = hit.and_then(|i| self.hidden[i]) {
                return self.hidden_hit(kind);
            }
        }
        Ok(Some(match s {
            DebugStop::Requested => StopReason::SignalWithThread { tid: self.tid(), signal: Signal::SIGINT },
            DebugStop::Debug(d) => self.debug_stop(&d),
            DebugStop::Crash(Crash::Halted) => {
                self.note(format!(
                    "vCPU {} halted with interrupts masked (cli; hlt): nothing can wake it, so it is reported as \
                     SIGSTOP; `continue` waits for it again, `kill` ends the run",
                    self.cur
                ));
                StopReason::SignalWithThread { tid: self.tid(), signal: Signal::SIGSTOP }
            }
            DebugStop::Crash(crash) => {
                // On hosts whose ring 0 is emulated an int3 ends KVM_RUN as
                // an emulation failure on the int3 (platform.md): when the
                // int3 is one of ours, that is the breakpoint hit.
                let ours = match &crash {
                    Crash::Internal { suberror, .. } if *suberror == KVM_INTERNAL_ERROR_EMULATION => {
                        // By physical address: kernel text hit through its
                        // direct-map alias is the same breakpoint.
                        let pc = self.pc_linear()?;
                        let mode = self.cpu_mode()?;
                        let b =
                            inspect::linear_to_phys(self.mem, &mode, pc).ok().and_then(|pa| self.bps.sw_at_phys(pa));
                        b.map(|b| (b, pc))
                    }
                    _ => None,
                };
                match ours {
                    Some((b, pc)) if b.la == pc => StopReason::SwBreak(self.tid()),
                    // gdb silently resumes a `swbreak` stop at a PC where it
                    // has no breakpoint: an alias hit is a SIGTRAP, named.
                    Some((b, pc)) => {
                        self.note(format!(
                            "the breakpoint at {:#x} was hit at {pc:#x}, another address of the same byte (guest-physical {:#x})",
                            b.la, b.pa
                        ));
                        StopReason::SignalWithThread { tid: self.tid(), signal: Signal::SIGTRAP }
                    }
                    None => self.crashed(crash),
                }
            }
            DebugStop::Ended(VcpuStop::Exit(code)) => {
                self.end = Some(GuestEnd::Over);
                StopReason::Exited(code.min(255) as u8)
            }
            DebugStop::Ended(VcpuStop::Crash(c)) => {
                self.end = Some(GuestEnd::Over);
                StopReason::Terminated(crash_signal(&c))
            }
            DebugStop::Ended(VcpuStop::Stopped | VcpuStop::Killed) => {
                self.end = Some(GuestEnd::Over);
                StopReason::Terminated(Signal::SIGKILL)
            }
        }))
    }

    fn debug_stop(&self, d: &kvm_debug_exit_arch) -> StopReason {
        const BP_VECTOR: u32 = 3;
        if d.exception == BP_VECTOR {
            StopReason::SwBreak(self.tid())
        } else if d.dr6 & DR6_BS != 0 || (self.step && d.dr6 & DR6_BN == 0) {
            StopReason::DoneStep
        } else if d.dr6 & DR6_BN != 0 {
            // A `break` on a no-execute page is held by a debug register:
            // gdb expects a software breakpoint's stop there.
            let slots = self.bps.hw_slots();
            let sw = (0..4).any(|i| d.dr6 & (1 << i) != 0 && slots[i].is_some_and(|a| self.sw_as_hw.contains(&a)));
            if sw {
                StopReason::SwBreak(self.tid())
            } else {
                StopReason::HwBreak(self.tid())
            }
        } else {
            StopReason::SignalWithThread { tid: self.tid(), signal: Signal::SIGTRAP }
        }
    }

    fn crashed(&mut self, crash: Crash) -> StopReason {
        let signal = crash_signal(&crash);
        self.note(format!(
            "{}; reported to gdb as {signal}; the guest cannot run on: `continue` or `kill` ends the run",
            report::headline(&crash, None)
        ));
        self.end = Some(GuestEnd::Crash(crash));
        StopReason::SignalWithThread { tid: self.tid(), signal }
    }

    fn stopping(&self) -> bool {
        self.ctx.stop.load(Ordering::Acquire)
    }

    /// Executes one instruction (KVM_GUESTDBG_SINGLESTEP), with the
    /// hardware breakpoint at `skip_hw` left out, and waits for it.
    fn single_step(&mut self, skip_hw: Option<u64>) -> Result<StopReason, GdbError> {
        self.begin_step(skip_hw)?;
        loop {
            let s = self.run_guest();
            if let Some(r) = self.stop_reason(s)? {
                return Ok(r);
            }
            if let Some(r) = self.pass_through()? {
                return Ok(r);
            }
        }
    }

    /// Sets up one step: KVM's single-step in ring 0, RFLAGS.TF in ring 3.
    fn begin_step(&mut self, skip_hw: Option<u64>) -> Result<(), GdbError> {
        if self.cpl()? == 3 {
            let (mut regs, _) = self.state()?;
            regs.rflags |= TF;
            self.put_state(regs, None)?;
            self.user_step = true;
        }
        self.set_debug(true, skip_hw)
    }

    /// The exception frame at the vCPU's stack pointer (it sits on the
    /// first instruction of a handler), if it is one from ring 3.
    fn user_frame(&mut self) -> Result<Option<ExceptionFrame>, GdbError> {
        let (regs, sregs) = self.state()?;
        let mut b = [0u8; 40];
        if inspect::read_linear(self.mem, &inspect::address_mode(&regs, &sregs), regs.rsp, &mut b) < 40 {
            return Ok(None);
        }
        let q = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let f = ExceptionFrame { rip: q(0), cs: q(1), rflags: q(2), rsp: q(3), ss: q(4) };
        Ok((f.cs & 3 == 3).then_some(f))
    }

    /// A segment register as the GDT entry for `selector` describes it.
    fn gdt_segment(&mut self, selector: u64) -> Result<kvm_bindings::kvm_segment, GdbError> {
        let (regs, sregs) = self.state()?;
        let mut d = [0u8; 8];
        let at = sregs.gdt.base + (selector & !7);
        if inspect::read_linear(self.mem, &inspect::address_mode(&regs, &sregs), at, &mut d) < 8 {
            return Err(GdbError::Guest("the guest's GDT is unreadable"));
        }
        let lo = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let hi = u32::from_le_bytes([d[4], d[5], d[6], d[7]]);
        let g = (hi >> 23) & 1;
        let mut limit = (lo & 0xffff) | (hi & 0xf_0000);
        if g == 1 {
            limit = (limit << 12) | 0xfff;
        }
        Ok(kvm_bindings::kvm_segment {
            base: u64::from((lo >> 16) | ((hi & 0xff) << 16) | (hi & 0xff00_0000)),
            limit,
            selector: selector as u16,
            // Loaded segments have their accessed bit set.
            type_: ((hi >> 8) & 0xf) as u8 | 1,
            present: ((hi >> 15) & 1) as u8,
            dpl: ((hi >> 13) & 3) as u8,
            db: ((hi >> 22) & 1) as u8,
            s: ((hi >> 12) & 1) as u8,
            l: ((hi >> 21) & 1) as u8,
            g: g as u8,
            avl: ((hi >> 20) & 1) as u8,
            unusable: 0,
            padding: 0,
        })
    }

    /// Undoes the entry into the guest's handler: the vCPU is back in
    /// ring 3 at `rip` with the frame's stack and flags, as if the
    /// exception never happened.
    fn rewind(&mut self, f: &ExceptionFrame, rip: u64, clear_tf: bool) -> Result<(), GdbError> {
        let (mut regs, mut sregs) = self.state()?;
        sregs.cs = self.gdt_segment(f.cs)?;
        sregs.ss = self.gdt_segment(f.ss)?;
        regs.rip = rip;
        regs.rsp = f.rsp;
        regs.rflags = if clear_tf { f.rflags & !TF } else { f.rflags };
        self.put_state(regs, Some(sregs))
    }

    /// A hidden breakpoint fired: the guest entered its #BP or #DB handler.
    /// When the entry came from the stub's own int3 or TF in ring 3, the
    /// vCPU is put back where ring 3 was and gdb sees a breakpoint or a
    /// finished step; otherwise it is the guest's own business (None).
    fn hidden_hit(&mut self, kind: Hidden) -> Result<Option<StopReason>, GdbError> {
        let Some(f) = self.user_frame()? else {
            return Ok(None);
        };
        match kind {
            Hidden::Breakpoint => {
                // #BP is a trap: the frame's RIP is past the int3.
                let la = f.rip.wrapping_sub(1);
                let mode = self.cpu_mode()?;
                let ours = inspect::linear_to_phys(self.mem, &mode, la).ok().and_then(|pa| self.bps.sw_at_phys(pa));
                if ours.is_none() {
                    return Ok(None);
                }
                self.rewind(&f, la, false)?;
                Ok(Some(StopReason::SwBreak(self.tid())))
            }
            Hidden::Step => {
                if !self.user_step && !self.step {
                    return Ok(None);
                }
                self.user_step = false;
                self.rewind(&f, f.rip, true)?;
                Ok(Some(StopReason::DoneStep))
            }
        }
    }

    /// After a hidden breakpoint that was not the stub's: lets the guest's
    /// handler run (one ring-0 step past the hidden breakpoint, which would
    /// re-fire since RFLAGS.RF is ignored) and resumes as before.
    fn pass_through(&mut self) -> Result<Option<StopReason>, GdbError> {
        let pc = self.pc_linear()?;
        let user_step = std::mem::take(&mut self.user_step);
        self.set_debug(true, Some(pc))?;
        let s = self.run_guest();
        self.user_step = user_step;
        match self.stop_reason(s)? {
            Some(StopReason::DoneStep) | None => {}
            Some(other) => return Ok(Some(other)),
        }
        self.set_debug(self.step, None)?;
        Ok(None)
    }

    /// Runs the vCPU as gdb asked (continue or step) until it stops or gdb
    /// sends something.
    fn resume_and_wait(
        &mut self,
        conn: &mut Conn,
    ) -> Result<Event<StopReason>, WaitForStopReasonError<GdbError, io::Error>> {
        use WaitForStopReasonError as E;
        if let Some(i) = self.step_tid.take() {
            if !self.cpu.started(i) {
                self.note(format!(
                    "vCPU {i} cannot be stepped: the guest has not started it yet (it waits for its start-up IPI); \
                     it did not move"
                ));
                let tid = Tid::new(i + 1).unwrap_or(VCPU0);
                return Ok(Event::TargetStopped(StopReason::SignalWithThread { tid, signal: Signal::SIGTRAP }));
            }
            self.switch_to(i).map_err(E::Target)?;
            self.step = true;
        }
        match &self.end {
            Some(GuestEnd::Crash(c)) => {
                let signal = crash_signal(c);
                self.ended_with = Some(VcpuStop::Crash(c.clone()));
                self.end = Some(GuestEnd::Over);
                return Ok(Event::TargetStopped(StopReason::Terminated(signal)));
            }
            Some(GuestEnd::Over) => return Err(E::Target(GdbError::Stopping)),
            None => {}
        }
        // A breakpoint under the PC would stop the guest where it stands
        // (hardware ones re-fire: RFLAGS.RF is ignored on some hosts), so
        // its instruction runs alone with the breakpoint out of the way.
        if !self.bps.is_empty() {
            let pc = self.pc_linear().map_err(E::Target)?;
            let mode = self.cpu_mode().map_err(E::Target)?;
            let sw = inspect::linear_to_phys(self.mem, &mode, pc).ok().and_then(|pa| self.bps.sw_at_phys(pa));
            if sw.is_some() || self.bps.hw_at(pc) {
                if let Some(b) = &sw {
                    self.bps.lift(self.mem, b);
                }
                let r = self.single_step(Some(pc));
                if let Some(b) = &sw {
                    self.bps.replant(self.mem, b);
                }
                let r = r.map_err(E::Target)?;
                if self.step || r != StopReason::DoneStep {
                    return Ok(Event::TargetStopped(r));
                }
            }
        }
        if self.step {
            self.begin_step(None).map_err(E::Target)?;
        } else {
            self.set_debug(false, None).map_err(E::Target)?;
        }
        self.wait_event(conn)
    }

    /// Runs the guest until it stops or gdb sends something (a Ctrl-C),
    /// whichever comes first.
    fn wait_event(
        &mut self,
        conn: &mut Conn,
    ) -> Result<Event<StopReason>, WaitForStopReasonError<GdbError, io::Error>> {
        use WaitForStopReasonError as E;
        loop {
            // gdb's bytes read along with the resume packet (`vCont;c`
            // then Ctrl-C at once, as `continue &` + `interrupt` send
            // them) are in the connection's buffer, not in the socket the
            // watch looks at: they stop the guest before it runs.
            if let Some(b) = conn.take_buffered() {
                self.interrupted_running = b == INTERRUPT;
                return Ok(Event::IncomingData(b));
            }
            let s = self.run_guest();
            if s == DebugStop::Requested {
                // Stopped for gdb's bytes: gdbstub reads them (a Ctrl-C
                // comes back through `interrupt`, with the vCPU parked).
                if let Some(b) = conn.take_pending().map_err(E::Connection)? {
                    // Only a Ctrl-C asks for a stop reply; a late ack
                    // must not make a later Ctrl-C (read while stopped)
                    // look like one that stopped a running guest.
                    self.interrupted_running = b == INTERRUPT;
                    return Ok(Event::IncomingData(b));
                }
                if self.stopping() {
                    return Err(E::Target(GdbError::Stopping));
                }
                continue;
            }
            match self.stop_reason(s).map_err(E::Target)? {
                Some(r) => return Ok(Event::TargetStopped(r)),
                None => {
                    if let Some(r) = self.pass_through().map_err(E::Target)? {
                        return Ok(Event::TargetStopped(r));
                    }
                }
            }
        }
    }

    /// gdb's Ctrl-C. The vCPU is parked whenever this runs (the session
    /// runs on its thread): a Ctrl-C that stopped a running guest is
    /// answered with SIGINT; one read while the guest was already stopped
    /// (it crossed the stop reply, or it interrupted a step the stub made
    /// on its own and was answered then) gets no second stop, as with
    /// QEMU's gdbstub (7.2 answers nothing to a Ctrl-C while stopped):
    /// gdb takes any stop reply as the answer to its Ctrl-C, so another
    /// one would be read as the reply to its next packet.
    fn interrupt(&mut self) -> Result<Option<StopReason>, GdbError> {
        let running = std::mem::take(&mut self.interrupted_running);
        Ok(running.then_some(StopReason::SignalWithThread { tid: self.tid(), signal: Signal::SIGINT }))
    }
}

/// The signal gdb sees for a guest that died this way.
pub fn crash_signal(c: &Crash) -> Signal {
    match c {
        Crash::Internal { .. } => Signal::SIGILL,
        Crash::Shutdown => Signal::SIGSEGV,
        _ => Signal::SIGABRT,
    }
}

fn fatal(e: GdbError) -> TargetError<GdbError> {
    TargetError::Fatal(e)
}

impl Target for GdbTarget<'_> {
    type Arch = X86_64System;
    type Error = GdbError;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadBase for GdbTarget<'_> {
    fn read_registers(&mut self, out: &mut Regs, tid: Tid) -> TargetResult<(), Self> {
        let i = tid.get() - 1;
        if i >= self.cpu.vcpu_count() {
            return Err(TargetError::Errno(EINVAL));
        }
        self.sel = i;
        // Every vCPU is parked (all-stop): the one run control is about
        // from the cache, the others straight from KVM.
        let (r, s) = self.state_of(i).map_err(fatal)?;
        let fpu =
            self.fd_of(i).get_fpu().map_err(|e| fatal(GdbError::Kvm { what: "read the FPU state", source: e }))?;
        out.set_from_kvm(&r, &s);
        let c = &mut out.core;
        for (st, fpr) in c.st.iter_mut().zip(fpu.fpr.iter()) {
            st.copy_from_slice(&fpr[..10]);
        }
        c.fpu.fctrl = fpu.fcw.into();
        c.fpu.fstat = fpu.fsw.into();
        // KVM keeps the abridged (FXSAVE) tag byte: a set bit is a valid
        // register (tag 00), a clear one an empty register (tag 11).
        c.fpu.ftag = (0..8).map(|i| if fpu.ftwx & (1 << i) != 0 { 0 } else { 0b11 << (2 * i) }).sum();
        c.fpu.fioff = fpu.last_ip as u32;
        c.fpu.fooff = fpu.last_dp as u32;
        c.fpu.fop = fpu.last_opcode.into();
        for (x, v) in c.xmm.iter_mut().zip(fpu.xmm.iter()) {
            *x = u128::from_le_bytes(*v);
        }
        c.mxcsr = fpu.mxcsr;
        Ok(())
    }

    fn write_registers(&mut self, new: &Regs, tid: Tid) -> TargetResult<(), Self> {
        let i = tid.get() - 1;
        if i >= self.cpu.vcpu_count() {
            return Err(TargetError::Errno(EINVAL));
        }
        self.sel = i;
        self.switch_to(i).map_err(fatal)?;
        let (mut r, mut s) = self.state().map_err(fatal)?;
        let c = &new.core;
        let sel = [s.cs.selector, s.ss.selector, s.ds.selector, s.es.selector, s.fs.selector, s.gs.selector];
        let new_sel = [c.segments.cs, c.segments.ss, c.segments.ds, c.segments.es, c.segments.fs, c.segments.gs];
        if sel.iter().zip(new_sel).any(|(&a, b)| u32::from(a) != b) {
            // A selector alone says nothing of the descriptor behind it.
            self.note("segment selectors cannot be changed from gdb (the descriptor would not follow)".into());
            return Err(TargetError::Errno(EINVAL));
        }
        [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14,
            r.r15,
        ] = c.regs;
        r.rip = c.rip;
        r.rflags = (r.rflags & !0xffff_ffff) | u64::from(c.eflags);
        self.flush_state().map_err(fatal)?;
        self.cache = None;
        self.fd().set_regs(&r).map_err(|e| fatal(GdbError::Kvm { what: "accept the new registers", source: e }))?;

        let mut fpu =
            self.fd().get_fpu().map_err(|e| fatal(GdbError::Kvm { what: "read the FPU state", source: e }))?;
        for (v, x) in fpu.xmm.iter_mut().zip(c.xmm.iter()) {
            *v = x.to_le_bytes();
        }
        fpu.mxcsr = c.mxcsr;
        fpu.fcw = c.fpu.fctrl as u16;
        fpu.fsw = c.fpu.fstat as u16;
        for (fpr, st) in fpu.fpr.iter_mut().zip(c.st.iter()) {
            fpr[..10].copy_from_slice(st);
        }
        self.fd().set_fpu(&fpu).map_err(|e| fatal(GdbError::Kvm { what: "accept the new FPU state", source: e }))?;

        let old = [s.fs.base, s.gs.base, s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer];
        if old != new.system {
            [s.fs.base, s.gs.base, s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer] = new.system;
            let r = self.fd().set_sregs(&s);
            self.cache = None;
            if let Err(e) = r {
                self.note(format!("KVM refused the new control registers ({e}); they are unchanged"));
                return Err(TargetError::Errno(EINVAL));
            }
        }
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        self.address(tid);
        let mode = self.view_mode().map_err(fatal)?;
        let n = memory::read(self.mem, &mode, self.view.phys, &self.bps, start, data);
        if n == 0 && !data.is_empty() {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(n)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        self.address(tid);
        let mode = self.view_mode().map_err(fatal)?;
        let n = memory::write(self.mem, &mode, self.view.phys, &mut self.bps, start, data);
        if n < data.len() {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(())
    }

    fn list_active_threads(&mut self, thread_is_active: &mut dyn FnMut(Tid)) -> Result<(), GdbError> {
        for i in 0..self.cpu.vcpu_count() {
            if let Some(tid) = Tid::new(i + 1) {
                thread_is_active(tid);
            }
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for GdbTarget<'_> {
    fn resume(&mut self) -> Result<(), GdbError> {
        // The vCPU runs in the event loop's wait_for_stop_reason, on this
        // same thread.
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), GdbError> {
        self.step = false;
        self.step_tid = None;
        Ok(())
    }

    fn set_resume_action_continue(&mut self, _tid: Tid, _signal: Option<Signal>) -> Result<(), GdbError> {
        // Signals cannot be delivered into a kernel: they are dropped.
        self.step = false;
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for GdbTarget<'_> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), GdbError> {
        // gdb steps one thread with the others held (to step over a
        // breakpoint, or with `set scheduler-locking`): a step leaves the
        // others stopped anyway.
        Ok(())
    }
}

impl MultiThreadSingleStep for GdbTarget<'_> {
    fn set_resume_action_step(&mut self, tid: Tid, _signal: Option<Signal>) -> Result<(), GdbError> {
        // The step happens at resume (the event loop's wait), where the
        // vCPU is checked and made current.
        let i = tid.get() - 1;
        if i >= self.cpu.vcpu_count() {
            return Err(GdbError::Guest("gdb asked to step a thread that is no vCPU of this guest"));
        }
        self.step_tid = Some(i);
        Ok(())
    }
}

impl ThreadExtraInfo for GdbTarget<'_> {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, GdbError> {
        let s = self.describe_vcpu(tid.get() - 1);
        let n = s.len().min(buf.len());
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        Ok(n)
    }
}

impl gdbstub::target::ext::breakpoints::Breakpoints for GdbTarget<'_> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for GdbTarget<'_> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        // Breakpoints live in the address space the selected vCPU runs in,
        // whatever `monitor cr3`/`phys` say about memory reads.
        let (r, sr) = self.sel_state().map_err(fatal)?;
        let mode = inspect::address_mode(&r, &sr);
        // An int3 on a no-execute page never runs at that address: the
        // fetch faults first (gdb puts `call`'s return breakpoint on the
        // stack). A debug register matches before the fetch, so one takes
        // that address when free; the int3 still catches the frame's
        // executable aliases (kernel text through the direct map).
        if let AddressMode::Paged(ctx) = &mode {
            let nx = mm_core::paging::walk(&inspect::GuestPhys(self.mem), ctx, mm_core::addr::VirtAddr(addr))
                .is_ok_and(|t| t.flags.contains(mm_core::paging::PteFlags::NX));
            if nx {
                match self.bps.insert_hw(addr) {
                    Ok(()) => self.sw_as_hw.push(addr),
                    Err(e) => self.note(format!(
                        "the breakpoint at {addr:#x} is on a no-execute page: it fires only where the same bytes \
                         are executable through another address, since {e}"
                    )),
                }
            }
        }
        match self.bps.insert_sw(self.mem, &mode, addr) {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Some(i) = self.sw_as_hw.iter().position(|&a| a == addr) {
                    self.sw_as_hw.swap_remove(i);
                    self.bps.remove_hw(addr);
                }
                self.note(format!("cannot set a breakpoint: {e}"));
                Ok(false)
            }
        }
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if let Some(i) = self.sw_as_hw.iter().position(|&a| a == addr) {
            self.sw_as_hw.swap_remove(i);
            self.bps.remove_hw(addr);
        }
        Ok(self.bps.remove_sw(self.mem, addr))
    }
}

impl HwBreakpoint for GdbTarget<'_> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if addr < super::breakpoints::USER_END && !crate::kvm::host_has_hw_virt() {
            self.note(format!(
                "refused a hardware breakpoint at {addr:#x}: debug registers never fire in ring 3 on this host \
                 (KVM emulates ring 0 only; platform.md); use `break`, which the stub catches in user mode"
            ));
            return Ok(false);
        }
        match self.bps.insert_hw(addr) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.note(format!("cannot set a hardware breakpoint: {e}"));
                Ok(false)
            }
        }
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.bps.remove_hw(addr))
    }
}

/// What the VMM says when gdb asks for a data watchpoint.
pub const NO_WATCHPOINTS: &str = "data watchpoints are not available: KVM on this host never reports a DR0-DR3 data \
     match (platform.md); break where the data is written instead, or `set can-use-hw-watchpoints 0` for gdb's \
     slow single-stepping watchpoints";

impl HwWatchpoint for GdbTarget<'_> {
    fn add_hw_watchpoint(&mut self, addr: u64, _len: u64, _kind: WatchKind) -> TargetResult<bool, Self> {
        self.note(format!("refused a watchpoint at {addr:#x}: {NO_WATCHPOINTS}"));
        Ok(false)
    }

    fn remove_hw_watchpoint(&mut self, _addr: u64, _len: u64, _kind: WatchKind) -> TargetResult<bool, Self> {
        Ok(false)
    }
}

impl MonitorCmd for GdbTarget<'_> {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), GdbError> {
        let text = super::monitor::execute(self, &String::from_utf8_lossy(cmd));
        let text = self.take_notes() + &text;
        out.write_raw(text.as_bytes());
        Ok(())
    }
}

/// gdbstub's blocking event loop over [`GdbTarget`] and [`Conn`].
pub struct EventLoop<'a>(std::marker::PhantomData<&'a ()>);

impl<'a> BlockingEventLoop for EventLoop<'a> {
    type Target = GdbTarget<'a>;
    type Connection = Conn;
    type StopReason = StopReason;

    fn wait_for_stop_reason(
        target: &mut GdbTarget<'a>,
        conn: &mut Conn,
    ) -> Result<Event<StopReason>, WaitForStopReasonError<GdbError, io::Error>> {
        // Notes queued while stopped (a refused insertion) go out with this
        // resume's replies; notes of the stop itself go before its reply.
        target.flush_notes(conn).map_err(WaitForStopReasonError::Connection)?;
        let mut r = target.resume_and_wait(conn);
        if let Ok(Event::TargetStopped(reason)) = &mut r {
            // With several threads a stop names its thread (gdb warns
            // about a bare step reply and guesses); with one, the reply
            // stays as it always was.
            if *reason == StopReason::DoneStep && target.cpu.vcpu_count() > 1 {
                *reason = StopReason::SignalWithThread { tid: target.tid(), signal: Signal::SIGTRAP };
            }
            target.flush_notes(conn).map_err(WaitForStopReasonError::Connection)?;
        }
        r
    }

    fn on_interrupt(target: &mut GdbTarget<'a>) -> Result<Option<StopReason>, GdbError> {
        target.interrupt()
    }
}
