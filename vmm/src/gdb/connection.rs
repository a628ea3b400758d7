//! Where gdb connects: the listening socket (TCP or Unix) and the buffered
//! connection gdbstub talks through.
//!
//! Every blocking wait here wakes up at least every [`POLL_MS`] to look at
//! the VMM's stop flag, so `--timeout` ends a run even while gdb is idle.

use super::GdbError;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// How often blocking waits look at the stop flag.
pub const POLL_MS: i32 = 100;

/// Where the stub listens: `tcp:HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GdbAddr {
    /// A TCP address such as `127.0.0.1:1234` (port 0 picks a free one; the
    /// VMM prints the port it got).
    Tcp(String),
    /// A Unix socket path (created, and removed when the VMM ends).
    Unix(PathBuf),
}

impl FromStr for GdbAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a gdb address: write tcp:HOST:PORT (e.g. tcp:127.0.0.1:1234) or unix:PATH");
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(GdbAddr::Unix(PathBuf::from(path)));
        }
        let hostport = s.strip_prefix("tcp:").unwrap_or(s);
        // A bare port means the loopback interface, like QEMU's `-gdb tcp::1234`.
        if let Ok(port) = hostport.trim_start_matches(':').parse::<u16>() {
            return Ok(GdbAddr::Tcp(format!("127.0.0.1:{port}")));
        }
        match hostport.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(GdbAddr::Tcp(hostport.into())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for GdbAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GdbAddr::Tcp(a) => write!(f, "tcp:{a}"),
            GdbAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The listening socket.
pub struct Listener {
    inner: ListenerKind,
    /// What it is bound to (the real port when 0 was asked for).
    pub addr: GdbAddr,
}

enum ListenerKind {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds `addr`. The socket is non-blocking: the VMM polls it.
    pub fn bind(addr: &GdbAddr) -> Result<Self, GdbError> {
        let bind_err = |source| GdbError::Bind { addr: addr.to_string(), source };
        let (inner, bound) = match addr {
            GdbAddr::Tcp(a) => {
                let l = TcpListener::bind(a.as_str()).map_err(bind_err)?;
                let local = l.local_addr().map_err(bind_err)?;
                (ListenerKind::Tcp(l), GdbAddr::Tcp(local.to_string()))
            }
            GdbAddr::Unix(p) => {
                // A socket file left by an earlier run would make bind fail;
                // anything else at that path is not ours to remove.
                if std::fs::symlink_metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(p);
                }
                (ListenerKind::Unix(UnixListener::bind(p).map_err(bind_err)?), addr.clone())
            }
        };
        match &inner {
            ListenerKind::Tcp(l) => l.set_nonblocking(true),
            ListenerKind::Unix(l) => l.set_nonblocking(true),
        }
        .map_err(bind_err)?;
        Ok(Listener { inner, addr: bound })
    }

    /// Accepts a pending client, if any.
    pub fn try_accept(&self) -> io::Result<Option<Stream>> {
        let r = match &self.inner {
            ListenerKind::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            ListenerKind::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        };
        match r {
            Ok(s) => Ok(Some(s)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for a client; `None` when `cancel` says so first. A readable
    /// `wake` descriptor makes it look at `cancel` at once.
    pub fn accept_blocking(&self, cancel: &dyn Fn() -> bool, wake: &EventFd) -> io::Result<Option<Stream>> {
        let epoll = Epoll::new()?;
        epoll.ctl(ControlOperation::Add, self.as_raw_fd(), EpollEvent::new(EventSet::IN, 0))?;
        epoll.ctl(ControlOperation::Add, wake.as_raw_fd(), EpollEvent::new(EventSet::IN, 1))?;
        let mut events = [EpollEvent::default(); 2];
        loop {
            if cancel() {
                return Ok(None);
            }
            if let Some(s) = self.try_accept()? {
                return Ok(Some(s));
            }
            match epoll.wait(POLL_MS, &mut events) {
                // Level-triggered: taken here or it fires again at once.
                Ok(n) if events[..n].iter().any(|e| e.data() == 1) => {
                    let _ = wake.read();
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match &self.inner {
            ListenerKind::Tcp(l) => l.as_raw_fd(),
            ListenerKind::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let GdbAddr::Unix(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An accepted client socket.
pub enum Stream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix socket.
    Unix(UnixStream),
}

impl Stream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The message of the error a read returns when the VMM is stopping.
pub const STOPPING: &str = "the VMM is stopping";

/// The longest packet accepted (gdb's own stay far below: it sends at most
/// the PacketSize the stub announces).
const MAX_PACKET: usize = 1 << 20;

/// Checks gdb's framing before gdbstub sees a byte. gdbstub ends the whole
/// session on a byte outside a packet or a bad checksum; here stray bytes
/// are dropped and a corrupt packet is refused with `-` (the protocol's
/// "send it again"), so line noise or a confused tool does not cost the
/// user their session.
#[derive(Debug, Default)]
struct Framer {
    /// The packet being received, from its `$`; empty between packets.
    packet: Vec<u8>,
    sum: u8,
    /// Checksum digits received after `#`.
    digits: Vec<u8>,
    /// A valid `vKill` packet went through (gdbstub does not answer it
    /// without extended mode; [`Conn`] does, as it closes).
    kill_seen: bool,
}

impl Framer {
    /// Feeds one byte; complete, valid packets and out-of-band bytes go to
    /// `out`. Returns true when a corrupt packet was dropped.
    fn push(&mut self, b: u8, out: &mut VecDeque<u8>) -> bool {
        if self.packet.is_empty() {
            match b {
                b'$' => self.packet.push(b),
                b'+' | b'-' | 0x03 => out.push_back(b),
                _ => {}
            }
            return false;
        }
        if self.digits.is_empty() && !self.packet.ends_with(b"#") {
            match b {
                // A new start inside a packet: the old one was cut off.
                b'$' => {
                    self.reset();
                    self.packet.push(b);
                }
                b'#' => self.packet.push(b),
                _ if self.packet.len() >= MAX_PACKET => {
                    self.reset();
                    return true;
                }
                _ => {
                    self.packet.push(b);
                    self.sum = self.sum.wrapping_add(b);
                }
            }
            return false;
        }
        self.digits.push(b);
        if self.digits.len() < 2 {
            return false;
        }
        let given = std::str::from_utf8(&self.digits).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
        let ok = given == Some(self.sum);
        if ok {
            self.kill_seen |= self.packet.starts_with(b"$vKill");
            out.extend(self.packet.iter().copied());
            out.extend(self.digits.iter().copied());
        }
        self.reset();
        !ok
    }

    fn reset(&mut self) {
        self.packet.clear();
        self.digits.clear();
        self.sum = 0;
    }
}

/// The connection gdbstub reads and writes: buffered both ways, because
/// gdbstub moves one byte per call and a syscall per byte would dominate
/// a single-step round trip.
pub struct Conn {
    stream: Stream,
    scratch: Box<[u8; 4096]>,
    ready: VecDeque<u8>,
    framer: Framer,
    wbuf: Vec<u8>,
    stop: Arc<AtomicBool>,
}

impl Conn {
    /// Wraps an accepted client.
    pub fn new(stream: Stream, stop: Arc<AtomicBool>) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_millis(POLL_MS as u64)))?;
        if let Stream::Tcp(s) = &stream {
            s.set_nodelay(true)?;
        }
        Ok(Conn {
            stream,
            scratch: Box::new([0; 4096]),
            ready: VecDeque::with_capacity(4096),
            framer: Framer::default(),
            wbuf: Vec::with_capacity(4096),
            stop,
        })
    }

    /// The socket's descriptor, for epoll.
    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// One read from the socket into `ready`; false when nothing arrived.
    fn fill(&mut self, nonblocking: bool) -> io::Result<bool> {
        // A bounded spin on the non-blocking read before blocking (so the
        // next packet finds this thread awake) was measured: no gain
        // beyond the noise on this 2-CPU host, at the cost of a CPU.
        let r = if nonblocking { self.recv_dontwait() } else { self.stream.read(&mut self.scratch[..]) };
        match r {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "gdb closed the connection")),
            Ok(n) => {
                let mut corrupt = false;
                for &b in &self.scratch[..n] {
                    corrupt |= self.framer.push(b, &mut self.ready);
                }
                if corrupt {
                    eprintln!("vmm: gdb: dropped a packet with a bad checksum or framing; asked gdb to resend it");
                    use gdbstub::conn::Connection;
                    self.wbuf.insert(0, b'-');
                    self.flush()?;
                }
                Ok(!self.ready.is_empty())
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One read that never blocks (MSG_DONTWAIT: no flag changes on the
    /// socket, so no extra system calls).
    fn recv_dontwait(&mut self) -> io::Result<usize> {
        let buf = &mut self.scratch[..];
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes and
        // the descriptor is the stream's own, open for as long as `self`.
        let n = unsafe { libc::recv(self.stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Takes a byte already read from the socket and not yet given to
    /// gdbstub, without a system call. A Ctrl-C that came in the same read
    /// as the packet that resumed the guest sits here, where the socket
    /// watch cannot see it.
    pub fn take_buffered(&mut self) -> Option<u8> {
        self.ready.pop_front()
    }

    /// Takes one byte if gdb sent any, without blocking.
    pub fn take_pending(&mut self) -> io::Result<Option<u8>> {
        if self.ready.is_empty() {
            self.fill(true)?;
        }
        Ok(self.ready.pop_front())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // gdb sends `vKill` (gdbstub announces multiprocess) and waits for
        // its OK before it prints that it killed the program; gdbstub
        // without extended mode ends the session without a reply.
        if self.framer.kill_seen {
            let _ = self.stream.write_all(b"$OK#9a");
        }
    }
}

impl gdbstub::conn::Connection for Conn {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.wbuf.push(byte);
        // An ack must go out at once: in ack mode gdb retransmits a packet
        // whose ack it has not seen within its timeout, and gdbstub sends
        // the ack for a `continue` long before it flushes the stop reply.
        if self.wbuf.len() == 1 && matches!(byte, b'+' | b'-') {
            self.flush()?;
        }
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.wbuf.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut done = 0;
        while done < self.wbuf.len() {
            match self.stream.write(&self.wbuf[done..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "gdb stopped reading")),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.wbuf.clear();
                    return Err(e);
                }
            }
        }
        self.wbuf.clear();
        Ok(())
    }
}

impl gdbstub::conn::ConnectionExt for Conn {
    fn read(&mut self) -> io::Result<u8> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(b);
            }
            if self.stop.load(Ordering::Acquire) {
                return Err(io::Error::other(STOPPING));
            }
            self.fill(false)?;
        }
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        if self.ready.is_empty() {
            self.fill(true)?;
        }
        Ok(self.ready.front().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!("tcp:127.0.0.1:1234".parse(), Ok(GdbAddr::Tcp("127.0.0.1:1234".into())));
        assert_eq!("1234".parse(), Ok(GdbAddr::Tcp("127.0.0.1:1234".into())));
        assert_eq!("tcp::1234".parse(), Ok(GdbAddr::Tcp("127.0.0.1:1234".into())));
        assert_eq!("localhost:9".parse(), Ok(GdbAddr::Tcp("localhost:9".into())));
        assert_eq!("unix:/tmp/g.sock".parse(), Ok(GdbAddr::Unix("/tmp/g.sock".into())));
        for bad in ["", "unix:", "tcp:", "tcp:host", "tcp:host:99999", "foo"] {
            assert!(bad.parse::<GdbAddr>().is_err(), "{bad} parsed");
        }
        assert_eq!(GdbAddr::Unix("/x".into()).to_string(), "unix:/x");
    }

    #[test]
    fn framing_drops_noise_and_corrupt_packets() {
        let mut f = Framer::default();
        let mut out = VecDeque::new();
        let mut corrupt = 0;
        for &b in b"hi+$m1,2#00\x03junk$?#3f$?#00$g$?#3f" {
            corrupt += f.push(b, &mut out) as u32;
        }
        assert_eq!(out.iter().copied().collect::<Vec<u8>>(), b"+\x03$?#3f$?#3f");
        assert_eq!(corrupt, 2);
        assert!(f.packet.is_empty());
    }
}
