//! `vmm inspect FILE --gdb ADDR`: a read-only gdb target on a snapshot.
//! gdb reads registers and memory (through mm-core's walker, as the live
//! stub does) and runs `monitor` views (the inspector's, on the saved
//! state); writes, `continue` and `stepi` are refused with a message, since
//! a snapshot is a record of one moment with no vCPU behind it.

use super::CoreFile;
use crate::gdb::arch::{Regs, X86_64System};
use crate::gdb::connection::{Conn, Listener};
use crate::gdb::GdbAddr;
use crate::inspect::checkpoint::{Inspector, ParkHook};
use crate::inspect::spec::{parse_view, InspectConfig};
use crate::inspect::{address_mode, read_linear, GuestLink};
use crate::symbols::Symbols;
use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep, SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// What gdb is told when it tries to change or run the snapshot.
pub const READ_ONLY: &str =
    "this is a snapshot file (read-only): registers and memory cannot be written, and continue and step are refused; the vCPU stays where it was saved";

const HELP: &str = "\
monitor commands on a snapshot (the views of vmm run --inspect, at the saved checkpoint):
  cpu  walk:ADDR[@CR3]  pt ADDR (the same walk)  tlb[@CR3]  mem[@CR3]  physmap[:DIR]
  buddyinfo  slabinfo  meminfo  ps  vmstat  extfrag  swaps  free
  verify [CHECK,...]   run --verify's checks on the snapshot
  help                 this text
ADDR is a number, rip, rsp or a kernel symbol.
";

/// The gdb target over a snapshot.
pub struct CoreTarget {
    core: CoreFile,
    symbols: Arc<Symbols>,
    /// Messages for gdb's console with the next stop reply.
    notes: Vec<String>,
}

/// A writer into a shared buffer (the inspector's output for a monitor answer).
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CoreTarget {
    /// A target over `core`, with the kernel's `symbols` for the views.
    pub fn new(core: CoreFile, symbols: Symbols) -> Self {
        CoreTarget { core, symbols: Arc::new(symbols), notes: Vec::new() }
    }

    fn refuse(&mut self) {
        eprintln!("vmm: gdb: {READ_ONLY}");
        self.notes.push(READ_ONLY.into());
    }

    /// Runs the inspector with these views or checks on the snapshot and
    /// returns what it printed.
    fn inspect(&self, cfg: InspectConfig) -> String {
        let buf = SharedBuf::default();
        let link = GuestLink::default();
        if let Some(pa) = self.core.meta.descriptor_pa {
            link.descriptor.set(pa);
        }
        let mut insp = Inspector::new(cfg, self.core.mem.clone(), None, self.symbols.clone(), Box::new(buf.clone()))
            .with_link(link)
            .offline(super::offline::OFFLINE);
        insp.checkpoint(&self.core.meta.checkpoint, &self.core.vcpu);
        let text = buf.0.lock().map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        text
    }

    fn monitor(&mut self, line: &str) -> String {
        let mut words = line.split_whitespace();
        let head = words.next().unwrap_or("help");
        let rest: Vec<&str> = words.collect();
        let notes: String = self.notes.drain(..).map(|n| format!("vmm: {n}\n")).collect();
        let body = match head {
            "help" => HELP.to_string(),
            "verify" => match crate::inspect::spec::parse_checks(rest.first().copied().unwrap_or("all")) {
                Ok(c) => self.inspect(InspectConfig { verify: Some(c.0), ..Default::default() }),
                Err(e) => format!("{e}\n"),
            },
            _ => {
                // `pt ADDR` is the walk view, as the live stub's command.
                // gdb's own names for the two registers the views take.
                fn reg(a: &str) -> &str {
                    match a {
                        "$pc" | "$rip" => "rip",
                        "$sp" | "$rsp" => "rsp",
                        other => other,
                    }
                }
                let spec = match (head, rest.first().map(|a| reg(a))) {
                    ("pt", Some(a)) => format!("walk:{a}"),
                    (h, None) => h.to_string(),
                    (h, Some(a)) => format!("{h}:{a}"),
                };
                match parse_view(&spec) {
                    Ok(v) => self.inspect(InspectConfig { views: vec![v], ..Default::default() }),
                    Err(e) => format!("{e}\n(monitor help lists the commands)\n"),
                }
            }
        };
        notes + &body
    }
}

/// The server's error: what went wrong, in words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CoreGdbError(pub String);

impl Target for CoreTarget {
    type Arch = X86_64System;
    type Error = CoreGdbError;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    // gdb may plant breakpoints by writing memory (which this target
    // refuses): that is the plain outcome, not a misconfiguration.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl SingleThreadBase for CoreTarget {
    fn read_registers(&mut self, out: &mut Regs) -> TargetResult<(), Self> {
        // The x87/SSE state is not saved (the guest's ring 0 uses none).
        out.set_from_kvm(&self.core.vcpu.regs, &self.core.vcpu.sregs);
        Ok(())
    }

    fn write_registers(&mut self, _: &Regs) -> TargetResult<(), Self> {
        self.refuse();
        Err(TargetError::Errno(libc::EROFS as u8))
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let mode = address_mode(&self.core.vcpu.regs, &self.core.vcpu.sregs);
        let n = read_linear(&self.core.mem, &mode, start, data);
        if n == 0 && !data.is_empty() {
            return Err(TargetError::Errno(libc::EFAULT as u8));
        }
        Ok(n)
    }

    fn write_addrs(&mut self, _: u64, _: &[u8]) -> TargetResult<(), Self> {
        self.refuse();
        Err(TargetError::Errno(libc::EROFS as u8))
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for CoreTarget {
    fn resume(&mut self, _: Option<Signal>) -> Result<(), CoreGdbError> {
        self.refuse();
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for CoreTarget {
    fn step(&mut self, _: Option<Signal>) -> Result<(), CoreGdbError> {
        self.refuse();
        Ok(())
    }
}

impl MonitorCmd for CoreTarget {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), CoreGdbError> {
        let text = self.monitor(&String::from_utf8_lossy(cmd));
        out.write_raw(text.as_bytes());
        Ok(())
    }
}

/// The event loop: a resume never runs anything; it stops at once where
/// it was, with the refusal on gdb's console before the stop reply.
struct CoreLoop;

impl BlockingEventLoop for CoreLoop {
    type Target = CoreTarget;
    type Connection = Conn;
    type StopReason = SingleThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut CoreTarget,
        conn: &mut Conn,
    ) -> Result<Event<Self::StopReason>, WaitForStopReasonError<CoreGdbError, std::io::Error>> {
        for n in target.notes.drain(..) {
            let line = format!("vmm: {n}\n");
            let mut body = String::from("O");
            for b in line.bytes() {
                body.push_str(&format!("{b:02x}"));
            }
            let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
            conn.write_all(format!("${body}#{sum:02x}").as_bytes()).map_err(WaitForStopReasonError::Connection)?;
        }
        conn.flush().map_err(WaitForStopReasonError::Connection)?;
        Ok(Event::TargetStopped(SingleThreadStopReason::Signal(Signal::SIGTRAP)))
    }

    fn on_interrupt(_: &mut CoreTarget) -> Result<Option<Self::StopReason>, CoreGdbError> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}

/// Serves gdb clients one after another on `addr` until one detaches or
/// kills (then returns), or the process is interrupted.
pub fn serve(core: CoreFile, symbols: Symbols, addr: &GdbAddr) -> Result<(), crate::gdb::GdbError> {
    let listener = Listener::bind(addr)?;
    eprintln!(
        "vmm: gdb: serving the snapshot at checkpoint '{}' read-only on {}; connect with: gdb -ex 'target remote {}' KERNEL_ELF",
        crate::devices::results::escape(&core.meta.checkpoint),
        listener.addr,
        match &listener.addr {
            GdbAddr::Tcp(a) => a.clone(),
            GdbAddr::Unix(p) => p.display().to_string(),
        }
    );
    let wake = vmm_sys_util::eventfd::EventFd::new(0).map_err(crate::gdb::GdbError::Thread)?;
    let Some(stream) = listener.accept_blocking(&|| false, &wake).map_err(crate::gdb::GdbError::Accept)? else {
        return Ok(());
    };
    let conn = Conn::new(stream, Arc::new(AtomicBool::new(false))).map_err(crate::gdb::GdbError::Accept)?;
    let mut target = CoreTarget::new(core, symbols);
    match session(&mut target, conn) {
        Ok(()) => eprintln!("vmm: gdb: the client left"),
        Err(e) => eprintln!("vmm: gdb: session ended ({e})"),
    }
    Ok(())
}

/// Serves one client on `conn` until it detaches, kills or disconnects
/// (the error: why the session ended otherwise). The fuzz target
/// `vmm/fuzz/fuzz_targets/gdb.rs` drives this over a socket pair.
pub fn session(target: &mut CoreTarget, conn: Conn) -> Result<(), String> {
    GdbStub::new(conn).run_blocking::<CoreLoop>(target).map(|_| ()).map_err(|e| e.to_string())
}
