//! The gdb stub: `vmm run --gdb tcp:HOST:PORT` (or `unix:PATH`) lets gdb
//! debug the guest kernel over the remote serial protocol (gdbstub crate).
//!
//! The stub runs on the vCPU thread. Without a client the guest runs freely
//! while a watcher thread waits on the listening socket; a client that
//! connects stops the guest (as attaching does), and from then on gdbstub's
//! blocking event loop drives the vCPU: `KVM_RUN` while gdb lets it run,
//! with the watcher kicking the thread out of `KVM_RUN` when gdb sends a
//! Ctrl-C. When gdb detaches or disconnects, breakpoints are removed and
//! the guest runs on; another gdb may attach later. `kill` from gdb ends
//! the run (exit status 137); the guest's own exit or death ends it too.
//!
//! Modules: [`arch`] the register set and target description, [`target`]
//! the gdbstub target and event loop, [`breakpoints`] int3 and DR0-DR3
//! bookkeeping, [`memory`] gdb's view of guest memory, [`monitor`] the
//! `monitor` commands, [`connection`] sockets and the watcher.

pub mod arch;
pub mod breakpoints;
pub mod connection;
pub mod memory;
pub mod monitor;
pub mod target;

pub use connection::GdbAddr;

use crate::devices::PortBus;
use crate::symbols::Symbols;
use crate::vcpu::{self, Crash, ExitAction, VcpuStop};
use connection::{Conn, Listener, Stream, Watcher, STOPPING};
use gdbstub::stub::{DisconnectReason, GdbStub};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use target::{EventLoop, GdbTarget, GuestEnd};
use vm_memory::GuestMemoryMmap;

/// The exit status when gdb kills the guest (128 + SIGKILL, as a shell
/// reports a killed process).
pub const EXIT_KILLED: u32 = 137;

/// `--gdb` and `--gdb-wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GdbConfig {
    /// Where to listen.
    pub addr: GdbAddr,
    /// Hold the guest before its first instruction until gdb attaches.
    pub wait: bool,
}

/// Errors of the gdb stub.
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    /// The listening socket.
    #[error("cannot listen for gdb on {addr} (is something else using it? pick another port or path with --gdb)")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// accept(2) failed.
    #[error("cannot accept gdb's connection")]
    Accept(#[source] std::io::Error),
    /// The watcher thread or its epoll/eventfd.
    #[error("cannot start the thread that watches the gdb socket")]
    Watcher(#[source] std::io::Error),
    /// A vCPU ioctl failed.
    #[error("KVM failed to {what}")]
    Kvm {
        /// What the stub was doing.
        what: &'static str,
        /// The ioctl error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The VMM is ending the run (`--timeout`).
    #[error("the VMM is stopping the guest (--timeout)")]
    Stopping,
}

impl GdbError {
    /// A mapper for `map_err` on a vCPU ioctl.
    pub fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> GdbError {
        move |source| GdbError::Kvm { what, source }
    }
}

/// A bound gdb socket, ready for [`serve`].
pub struct GdbServer {
    listener: Listener,
    wait: bool,
}

impl GdbServer {
    /// Binds the socket (before the guest starts, so a taken port is an
    /// error at start-up) and says where gdb should connect.
    pub fn bind(cfg: &GdbConfig) -> Result<Self, GdbError> {
        let listener = Listener::bind(&cfg.addr)?;
        let target = match &listener.addr {
            GdbAddr::Tcp(a) => a.clone(),
            GdbAddr::Unix(p) => p.display().to_string(),
        };
        eprintln!(
            "vmm: gdb: listening on {}{}; connect with: gdb -ex 'target remote {target}' GUEST_ELF",
            listener.addr,
            if cfg.wait { ", the guest waits for gdb before its first instruction" } else { "" }
        );
        Ok(GdbServer { listener, wait: cfg.wait })
    }

    /// Where it listens (with the real port when port 0 was asked for).
    pub fn addr(&self) -> &GdbAddr {
        &self.listener.addr
    }
}

/// Runs the vCPU under the stub until the guest exits or dies, gdb kills
/// it, or `stop` is set (then the caller kicks this thread with the event
/// loop's signal). Call it on the vCPU thread, inside the event loop, which
/// installs the kick signal's handler.
pub fn serve(
    server: GdbServer,
    vcpu: &mut VcpuFd,
    bus: &mut PortBus,
    mem: &GuestMemoryMmap,
    symbols: &Symbols,
    stop: Arc<AtomicBool>,
) -> Result<VcpuStop, GdbError> {
    let mut watcher = Watcher::start().map_err(GdbError::Watcher)?;
    let mut client = None;
    if server.wait {
        match server.listener.accept_blocking(&stop).map_err(GdbError::Accept)? {
            Some(s) => client = Some(s),
            None => return Ok(VcpuStop::Stopped),
        }
    }
    loop {
        let stream = match client.take() {
            Some(s) => s,
            None => match run_free(&server.listener, vcpu, bus, &stop, &mut watcher)? {
                Free::Attach(s) => s,
                Free::End(end) => return Ok(end),
            },
        };
        if let Some(end) = session(stream, vcpu, bus, mem, symbols, &stop, &mut watcher)? {
            return Ok(end);
        }
    }
}

enum Free {
    Attach(Stream),
    End(VcpuStop),
}

/// Runs the guest with no debugger until it ends or a client connects.
fn run_free(
    listener: &Listener,
    vcpu: &mut VcpuFd,
    bus: &mut PortBus,
    stop: &AtomicBool,
    watcher: &mut Watcher,
) -> Result<Free, GdbError> {
    use std::os::fd::AsRawFd;
    watcher.watch(listener.as_raw_fd()).map_err(GdbError::Watcher)?;
    watcher.arm();
    loop {
        if stop.load(Ordering::Acquire) {
            watcher.unwatch();
            return Ok(Free::End(VcpuStop::Stopped));
        }
        let action = match vcpu.run() {
            Ok(VcpuExit::Intr) => None,
            Ok(VcpuExit::InternalError) => Some(ExitAction::Crash(Crash::Internal { suberror: 0, data: vec![] })),
            Ok(exit) => Some(vcpu::handle_exit(exit, bus)),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => return Err(GdbError::Kvm { what: "run the vCPU", source: e }),
        };
        let end = match action {
            Some(ExitAction::Continue) => continue,
            Some(ExitAction::Exit(code)) => VcpuStop::Exit(code),
            Some(ExitAction::Crash(Crash::Internal { .. })) => VcpuStop::Crash(vcpu::internal_error(vcpu)),
            Some(ExitAction::Crash(c)) => VcpuStop::Crash(c),
            None => {
                if watcher.fired() {
                    if let Some(s) = listener.try_accept().map_err(GdbError::Accept)? {
                        watcher.unwatch();
                        return Ok(Free::Attach(s));
                    }
                    watcher.arm();
                }
                continue;
            }
        };
        watcher.unwatch();
        return Ok(Free::End(end));
    }
}

/// One gdb client, from attach to detach. Returns how the run ended, or
/// None when the guest should run on without a debugger.
fn session(
    stream: Stream,
    vcpu: &mut VcpuFd,
    bus: &mut PortBus,
    mem: &GuestMemoryMmap,
    symbols: &Symbols,
    stop: &Arc<AtomicBool>,
    watcher: &mut Watcher,
) -> Result<Option<VcpuStop>, GdbError> {
    let conn = match Conn::new(stream, stop.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmm: gdb: cannot set up the client's socket ({e}); waiting for another client");
            return Ok(None);
        }
    };
    watcher.watch(conn.raw_fd()).map_err(GdbError::Watcher)?;
    eprintln!("vmm: gdb: attached; the guest is stopped");
    let mut target = GdbTarget::new(vcpu, bus, mem, symbols, stop, watcher);
    let result = GdbStub::new(conn).run_blocking::<EventLoop<'_>>(&mut target);
    target.finish();
    let end = target.end.take();
    drop(target);
    watcher.unwatch();
    let guest_end = |end: Option<GuestEnd>| match end {
        Some(GuestEnd::Exit(code)) => Some(VcpuStop::Exit(code)),
        Some(GuestEnd::Crash(c)) => Some(VcpuStop::Crash(c)),
        None => None,
    };
    match result {
        Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => Ok(guest_end(end)),
        Ok(DisconnectReason::Kill) => {
            eprintln!("vmm: gdb: killed the guest");
            Ok(Some(VcpuStop::Exit(EXIT_KILLED)))
        }
        Ok(DisconnectReason::Disconnect) => {
            eprintln!("vmm: gdb: detached; the guest runs on (gdb may attach again)");
            Ok(guest_end(end))
        }
        Err(e) => {
            if stop.load(Ordering::Acquire) {
                return Ok(Some(VcpuStop::Stopped));
            }
            if e.is_target_error() {
                match e.into_target_error() {
                    Some(GdbError::Stopping) => return Ok(Some(VcpuStop::Stopped)),
                    Some(other) => return Err(other),
                    None => {}
                }
                return Ok(guest_end(end));
            }
            let why = if e.is_connection_error() {
                match e.into_connection_error() {
                    Some((io, _)) if io.to_string() == STOPPING => return Ok(Some(VcpuStop::Stopped)),
                    Some((io, kind)) => format!("connection {kind:?} error: {io}"),
                    None => "connection error".into(),
                }
            } else {
                e.to_string()
            };
            if let Some(end) = guest_end(end) {
                return Ok(Some(end));
            }
            eprintln!("vmm: gdb: session ended ({why}); the guest runs on (gdb may attach again)");
            Ok(None)
        }
    }
}
