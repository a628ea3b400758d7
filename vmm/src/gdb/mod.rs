//! The gdb stub: `vmm run --gdb tcp:HOST:PORT` (or `unix:PATH`) lets gdb
//! debug the guest kernel over the remote serial protocol (gdbstub crate).
//!
//! The stub is a client of the vCPU's one run loop ([`crate::vcpu`]),
//! through [`crate::vcpu::debug`]: it never calls `KVM_RUN` itself.
//! Without a client the guest runs freely while the stub's thread waits on
//! the listening socket; a client that connects is handed to the vCPU,
//! which parks (as attaching does) and serves the session on its own
//! thread: gdbstub's event loop reads gdb's packets there and runs the
//! guest on through the loop until its next stop, so a single step costs
//! no thread hand-off. Meanwhile the stub's thread watches the socket
//! while the guest runs ([`watch`]): gdb's Ctrl-C asks the vCPU to park. The vCPU serves its checkpoints, `--inspect`,
//! `--verify` and SIGUSR1 pauses itself, attached or not. When gdb detaches
//! or disconnects, breakpoints are removed and the guest runs on; another
//! gdb may attach later. `kill` from gdb ends the run with status
//! [`EXIT_KILLED`]; the guest's own exit or death ends it too.
//!
//! Modules: [`arch`] the register set and target description, [`target`]
//! the gdbstub target and event loop, [`breakpoints`] int3 and DR0-DR3
//! bookkeeping, [`memory`] gdb's view of guest memory, [`monitor`] the
//! `monitor` commands, [`connection`] sockets.

pub mod arch;
pub mod breakpoints;
pub mod connection;
pub mod memory;
pub mod monitor;
pub mod target;
pub mod watch;

pub use connection::GdbAddr;

use crate::inspect::GuestLink;
use crate::symbols::Symbols;
use crate::vcpu::debug::{DebugSession, DebugStop, Debugger, GuestCpu};
use crate::vcpu::VcpuStop;
use connection::{Conn, Listener, STOPPING};
use gdbstub::stub::{DisconnectReason, GdbStub};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use target::{EventLoop, GdbTarget};

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
    /// The stub's thread or its epoll.
    #[error("cannot start the gdb stub's thread")]
    Thread(#[source] std::io::Error),
    /// A vCPU ioctl failed.
    #[error("KVM failed to {what}")]
    Kvm {
        /// What the stub was doing.
        what: &'static str,
        /// The ioctl error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The guest's own tables are unusable for what the stub needs.
    #[error("{0}")]
    Guest(&'static str),
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

/// What the stub needs besides the socket: the vCPU's debugger channel,
/// guest memory, symbols, and the link to the guest's descriptor (for the
/// `monitor` views).
pub struct GdbContext {
    /// The debugger's end of vCPU 0's channel.
    pub debugger: Debugger,
    /// Guest RAM.
    pub mem: crate::memory::GuestMem,
    /// Kernel (and firmware) symbols.
    pub symbols: Symbols,
    /// Where the guest published its descriptor.
    pub link: GuestLink,
    /// The VMM's stop flag (`--timeout`).
    pub stop: Arc<AtomicBool>,
}

/// Starts the stub's thread. It ends when the vCPU's run is over (gdb's
/// `kill` included); join it after the vCPU thread.
pub fn spawn(server: GdbServer, ctx: GdbContext) -> Result<JoinHandle<Result<(), GdbError>>, GdbError> {
    if server.wait {
        ctx.debugger.hold_at_start();
    }
    let ctx = Arc::new(ctx);
    std::thread::Builder::new().name("gdb".into()).spawn(move || serve(server, ctx)).map_err(GdbError::Thread)
}

/// Accepts clients one after another until the run is over; each is
/// served on the vCPU thread while this one watches its socket.
fn serve(server: GdbServer, ctx: Arc<GdbContext>) -> Result<(), GdbError> {
    let over = || ctx.stop.load(Ordering::Acquire) || ctx.debugger.ended();
    loop {
        let Some(stream) = server.listener.accept_blocking(&over, ctx.debugger.notify()).map_err(GdbError::Accept)?
        else {
            return Ok(());
        };
        let conn = match Conn::new(stream, ctx.stop.clone()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("vmm: gdb: cannot set up the client's socket ({e}); waiting for another client");
                continue;
            }
        };
        let watch = Arc::new(watch::Watch::new(conn.raw_fd()).map_err(GdbError::Thread)?);
        ctx.debugger.start(Box::new(Session { conn, ctx: ctx.clone(), watch: watch.clone() }));
        watch.watch(&ctx.debugger).map_err(GdbError::Thread)?;
        if over() {
            return Ok(());
        }
    }
}

/// One gdb client, served on the vCPU thread.
struct Session {
    conn: Conn,
    ctx: Arc<GdbContext>,
    watch: Arc<watch::Watch>,
}

impl DebugSession for Session {
    fn serve(self: Box<Self>, first: DebugStop, cpu: &mut dyn GuestCpu) -> Option<VcpuStop> {
        let Session { conn, ctx, watch } = *self;
        let end = session(conn, &ctx, &watch, first, cpu);
        let _ = watch.done.write(1);
        end
    }
}

/// One gdb client, from attach to detach, on the parked vCPU: `Some` when
/// the run is to end.
fn session(
    conn: Conn,
    ctx: &GdbContext,
    watch: &watch::Watch,
    first: DebugStop,
    cpu: &mut dyn GuestCpu,
) -> Option<VcpuStop> {
    let over = || ctx.stop.load(Ordering::Acquire);
    eprintln!("vmm: gdb: attached; the guest is stopped");
    let mut target = GdbTarget::new(ctx, watch, cpu, first);
    let result = GdbStub::new(conn).run_blocking::<EventLoop<'_>>(&mut target);
    let ended = target.run_over();
    let gone = |target: &GdbTarget<'_>| Some(target.ended_with().unwrap_or(VcpuStop::Stopped));
    let end = |target: &mut GdbTarget<'_>| {
        if target.run_over() {
            return gone(target);
        }
        target.finish();
        None
    };
    match result {
        Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => gone(&target),
        Ok(DisconnectReason::Kill) => {
            if ended {
                return gone(&target);
            }
            eprintln!("vmm: gdb: killed the guest (exit status {EXIT_KILLED})");
            Some(VcpuStop::Killed)
        }
        Ok(DisconnectReason::Disconnect) => {
            if ended {
                return gone(&target);
            }
            eprintln!("vmm: gdb: detached; the guest runs on (gdb may attach again)");
            end(&mut target)
        }
        Err(e) => {
            if over() || ended {
                return gone(&target);
            }
            if e.is_target_error() {
                match e.into_target_error() {
                    Some(GdbError::Stopping) => return gone(&target),
                    Some(other) => {
                        eprintln!("vmm: gdb: {other}; the guest runs on without the debugger");
                        return end(&mut target);
                    }
                    None => return end(&mut target),
                }
            }
            let why = if e.is_connection_error() {
                match e.into_connection_error() {
                    Some((io, _)) if io.to_string() == STOPPING => return gone(&target),
                    Some((io, kind)) => format!("connection {kind:?} error: {io}"),
                    None => "connection error".into(),
                }
            } else {
                e.to_string()
            };
            let r = end(&mut target);
            if r.is_none() {
                eprintln!("vmm: gdb: session ended ({why}); the guest runs on (gdb may attach again)");
            }
            r
        }
    }
}
