//! The stub's thread while a session is served on the vCPU thread: it
//! watches gdb's socket while the guest runs and asks the vCPU to park
//! when gdb sends something (a Ctrl-C), so a guest that never stops (or
//! halted with interrupts masked) can still be interrupted.
//!
//! The socket is in the watcher's epoll only while the guest runs (the
//! session adds it right before running and removes it right after, two
//! cheap syscalls): gdb's packets to a parked vCPU wake nobody but the
//! vCPU thread, which reads them.

use super::connection::POLL_MS;
use crate::vcpu::debug::Debugger;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

const EV_GDB: u64 = 0;
const EV_DONE: u64 = 1;
const EV_ENDED: u64 = 2;

/// How often a pending request is kicked again (a kick that lands between
/// the loop's check and `KVM_RUN` is lost).
const REKICK_MS: i32 = 5;

/// What the session (vCPU thread) and the watcher (stub thread) share.
pub struct Watch {
    epoll: Epoll,
    fd: RawFd,
    running: AtomicBool,
    /// Written when the session is over.
    pub done: EventFd,
}

impl Watch {
    /// A watch over the client socket `fd`.
    pub fn new(fd: RawFd) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let done = EventFd::new(libc::EFD_NONBLOCK)?;
        epoll.ctl(ControlOperation::Add, done.as_raw_fd(), EpollEvent::new(EventSet::IN, EV_DONE))?;
        Ok(Watch { epoll, fd, running: AtomicBool::new(false), done })
    }

    /// The guest is about to run: gdb's bytes from now on interrupt it.
    pub fn arm(&self, dbg: &Debugger) {
        // A request left from an earlier run (the watcher acted late) is
        // not about this one.
        dbg.clear_stop_request();
        self.running.store(true, Ordering::SeqCst);
        let ev = EpollEvent::new(EventSet::IN | EventSet::READ_HANG_UP | EventSet::ONE_SHOT, EV_GDB);
        if self.epoll.ctl(ControlOperation::Add, self.fd, ev).is_err() {
            // Cannot watch: ask at once, so a Ctrl-C is never missed.
            dbg.request_stop();
        }
    }

    /// The guest stopped: the vCPU thread reads gdb's bytes itself.
    pub fn disarm(&self) {
        self.running.store(false, Ordering::SeqCst);
        let _ = self.epoll.ctl(ControlOperation::Delete, self.fd, EpollEvent::default());
    }

    /// Whether gdb sent bytes not yet read from the socket.
    pub fn data_pending(&self) -> bool {
        let mut b = 0u8;
        // SAFETY: a one-byte peek into a local; `fd` is the session's
        // socket, open while the session (which calls this) runs.
        let n = unsafe { libc::recv(self.fd, (&mut b as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        // A closed socket (0) counts: the session must see it.
        n >= 0
    }

    /// The watcher: runs on the stub's thread until the session is over
    /// or the vCPU's run ended.
    pub fn watch(&self, dbg: &Debugger) -> io::Result<()> {
        self.epoll.ctl(ControlOperation::Add, dbg.notify().as_raw_fd(), EpollEvent::new(EventSet::IN, EV_ENDED))?;
        let mut events = [EpollEvent::default(); 3];
        let mut kicking = false;
        loop {
            let n = match self.epoll.wait(if kicking { REKICK_MS } else { POLL_MS }, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(e),
            };
            for e in &events[..n] {
                match e.data() {
                    EV_DONE | EV_ENDED => return Ok(()),
                    _ if self.running.load(Ordering::SeqCst) => {
                        dbg.request_stop();
                        kicking = true;
                    }
                    _ => {}
                }
            }
            if dbg.ended() {
                return Ok(());
            }
            if kicking && n == 0 {
                if self.running.load(Ordering::SeqCst) && dbg.stop_requested() {
                    dbg.kick();
                } else {
                    kicking = false;
                }
            }
        }
    }
}
