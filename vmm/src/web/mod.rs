//! The live web view (`vmm run --web [ADDR]`): one page, embedded in the
//! binary, that shows the guest's memory as the `--inspect` views see it
//! (page tables, the physical map, buddyinfo, vmstat, slabinfo, processes)
//! and updates at every checkpoint and pause.
//!
//! Threads: [`server`] answers HTTP and WebSocket connections on its own
//! threads; guest memory is read only on the vCPU thread while the vCPU is
//! parked, by the [`WebHook`] (a [`ParkHook`]). A request that needs guest
//! memory becomes a [`Job`] in [`Shared`]'s queue; the server then pokes
//! the vCPU ([`pause::poke`], the pause path's kick without its views),
//! and the hook runs the queued jobs while the vCPU is held, at the next
//! checkpoint, pause or poke, whichever comes first. Nothing a browser
//! sends reaches guest memory any other way, and every job has a deadline
//! on the server's side, so a vCPU held elsewhere (gdb) costs a 503, not a
//! hung page.
//!
//! With no browser attached a checkpoint costs the hook two atomic loads
//! and one short log push ([`WebHook::checkpoint`]).

pub mod api;
pub mod server;

use crate::inspect::checkpoint::{Inspector, ParkVerdict};
use crate::inspect::guest::GuestState;
use crate::inspect::mmviews;
use crate::inspect::pause;
use crate::inspect::spec::InspectConfig;
use crate::inspect::GuestLink;
use crate::kvm::Vcpu;
use crate::memory::GuestMem;
use crate::symbols::Symbols;
use crate::vcpu::ParkHook;
use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where `--web` serves when no address is given: loopback, a free port.
pub const DEFAULT_ADDR: &str = "127.0.0.1:0";

/// Events the log keeps (the oldest go first).
const LOG_MAX: usize = 2000;
/// Faults [`Shared`] keeps for `GET /api/faults` (the oldest go first).
const FAULTS_MAX: usize = 4096;
/// Most slots a guest's fault ring may claim (the guest's has 512).
const FAULT_RING_MAX: u32 = 1 << 16;
/// Samples the history keeps for a browser that attaches late.
const HISTORY_MAX: usize = 600;
/// Updates queued for one browser before it counts as stuck.
const SUBSCRIBER_QUEUE: usize = 256;
/// How often the guest is sampled while it runs and a browser watches.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(500);

/// `--web`'s settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Hold the guest before its first instruction until the page (or
    /// the API) resumes it.
    pub wait: bool,
    /// The guest runs its console shell (`--shell`): `POST /api/run`
    /// types command lines into it.
    pub shell: bool,
}

/// Console output the web view keeps for `GET /api/console` (the last
/// [`CONSOLE_KEEP`] bytes).
pub const CONSOLE_KEEP: usize = 64 << 10;

/// The console's recent output and how many bytes were ever written.
#[derive(Default)]
struct ConsoleTail {
    bytes: VecDeque<u8>,
    total: u64,
}

/// The console output of this process's VM (one VM per `vmm run`).
static CONSOLE: Mutex<ConsoleTail> = Mutex::new(ConsoleTail { bytes: VecDeque::new(), total: 0 });

/// A console writer that also keeps the output for the web view: what
/// `vmm run --web` wraps the console in.
pub struct ConsoleTee(pub Box<dyn std::io::Write + Send>);

impl std::io::Write for ConsoleTee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        {
            let mut t = locked(&CONSOLE);
            t.bytes.extend(buf);
            let over = t.bytes.len().saturating_sub(CONSOLE_KEEP);
            t.bytes.drain(..over);
            t.total += buf.len() as u64;
        }
        // The page keeps the bytes even if the host's writer is gone.
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The console output from byte `since` on (what is still kept), and the
/// offset to ask from next.
pub fn console_since(since: u64) -> (String, u64) {
    let t = locked(&CONSOLE);
    let first = t.total - t.bytes.len() as u64;
    let from = since.clamp(first, t.total);
    let skip = (from - first) as usize;
    let bytes: Vec<u8> = t.bytes.iter().skip(skip).copied().collect();
    (String::from_utf8_lossy(&bytes).into_owned(), t.total)
}

/// Longest command line `POST /api/run` takes: what the UART's receive
/// FIFO holds with the line's end (the shell reads 256).
pub const RUN_LINE_MAX: usize = 63;

/// Errors starting the web view.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address cannot be bound.
    #[error("cannot serve the web view at {addr} ({reason}); give another address with --web HOST:PORT (port 0 picks a free one)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A server thread.
    #[error("cannot start the web view's threads")]
    Thread(#[source] std::io::Error),
}

/// A request's failure, as the HTTP status and message the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// 4xx for the client's mistakes, 5xx for ours or the guest's state.
    pub status: u16,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// 400 Bad Request.
    pub fn bad(message: impl Into<String>) -> Self {
        ApiError { status: 400, message: message.into() }
    }
    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: 404, message: message.into() }
    }
    /// 409 Conflict (the guest's state does not allow it now).
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError { status: 409, message: message.into() }
    }
}

/// Where the guest is, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Running.
    Running,
    /// Held by the web view (pause, run-to-checkpoint, --web-wait).
    Paused,
    /// The run is over: the vCPU thread is gone.
    Ended,
}

/// One entry of the event log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Its number (1, 2, ...).
    pub id: u64,
    /// Milliseconds since the VMM started serving.
    pub ms: u64,
    /// "checkpoint", "pause", "sample", "resume", "run", "fault", "end".
    pub kind: &'static str,
    /// A checkpoint's name (escaped), or a note (a fault's one-line
    /// summary).
    pub name: String,
    /// A fault's details (kind "fault" only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

/// One user page fault from the guest's fault log (guest/src/mm/faultlog.rs,
/// mm-core's `FaultRecord`), as the API and the page give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// The guest's record number (1, 2, ... since boot, in the order the
    /// faults finished).
    pub n: u64,
    /// The faulting address (CR2), `0x...`.
    pub addr: String,
    /// The faulting task's pid.
    pub pid: u32,
    /// Its address space's page-table root, `0x...`.
    pub cr3: String,
    /// "anon", "zero", "cow", "file", "swap-in", "huge", "spurious", or
    /// "none" (refused before any page was touched).
    pub kind: &'static str,
    /// "ok", "segv-maperr", "segv-accerr", "oom", "sigbus-io",
    /// "sigbus-hugetlb".
    pub result: &'static str,
    /// The access was a write.
    pub write: bool,
    /// The access was an instruction fetch.
    pub fetch: bool,
    /// The page was present (a protection fault).
    pub present: bool,
    /// The checkpoint or stop at which the host read it.
    pub seen_at: String,
}

impl Fault {
    fn from_record(r: &mm_core::descriptor::FaultRecord, seen_at: &str) -> Fault {
        use mm_core::abi::cpu::{PF_FETCH, PF_PRESENT, PF_WRITE};
        let e = r.error as u32;
        Fault {
            n: r.seq,
            addr: format!("{:#x}", r.addr),
            pid: r.pid,
            cr3: format!("{:#x}", r.cr3),
            kind: r.kind_name(),
            result: r.result_name(),
            write: e & PF_WRITE != 0,
            fetch: e & PF_FETCH != 0,
            present: e & PF_PRESENT != 0,
            seen_at: crate::devices::results::escape(seen_at),
        }
    }

    /// One line for the log: "cow write 0x4000 pid 3: ok".
    fn summary(&self) -> String {
        let access = if self.fetch {
            "fetch"
        } else if self.write {
            "write"
        } else {
            "read"
        };
        format!("{} {access} {} pid {}: {}", self.kind, self.addr, self.pid, self.result)
    }
}

/// The faults read from the guest's ring so far.
#[derive(Default)]
struct FaultLog {
    /// The next record number to read (records before it were read or
    /// lost).
    next: u64,
    /// Records the ring overwrote (or were being written) before the host
    /// read them.
    lost: u64,
    /// The last [`FAULTS_MAX`] read.
    kept: VecDeque<Fault>,
}

/// What one sample of the guest holds: free blocks per zone and order and
/// the vmstat counters.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// The update it belongs to.
    pub seq: u64,
    /// Milliseconds since the VMM started serving.
    pub ms: u64,
    /// Why it was taken: a checkpoint's name, "pause" or "sample".
    pub name: String,
    /// Free blocks per order, per zone, with the zones' names.
    pub buddy: Vec<(String, Vec<u64>)>,
    /// The vmstat counters in /proc/vmstat's order.
    pub vmstat: Vec<u64>,
}

/// A piece of work that needs the parked vCPU.
pub struct Job {
    /// What to do.
    pub query: api::Query,
    /// Where the answer goes (JSON text).
    pub reply: mpsc::SyncSender<Result<String, ApiError>>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    resume: bool,
}

struct Ctl {
    state: RunState,
    /// The checkpoint or pause the guest is held at.
    at: Option<String>,
    /// Updates so far: every checkpoint, pause and sample a browser saw.
    seq: u64,
    /// The last checkpoint reached.
    last_checkpoint: Option<String>,
}

/// What the server threads and the vCPU's hook share.
pub struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    ctl: Mutex<Ctl>,
    /// Jobs queued and not yet taken (a cheap look for the hook).
    pending: AtomicUsize,
    /// Browsers attached through the WebSocket.
    pub clients: AtomicUsize,
    pause_req: AtomicBool,
    step_req: AtomicBool,
    sample_req: AtomicBool,
    subscribers: Mutex<Vec<mpsc::SyncSender<Arc<String>>>>,
    log: Mutex<VecDeque<Event>>,
    next_event: AtomicU64,
    history: Mutex<VecDeque<Sample>>,
    faults: Mutex<FaultLog>,
    start: Instant,
    /// Updates pushed and their bytes (per subscriber), for the bench.
    pub updates_sent: AtomicU64,
    /// See `updates_sent`.
    pub update_bytes: AtomicU64,
    /// What the same updates would have been with every vmstat counter
    /// in each instead of the changed ones (the bench's peer for
    /// `update_bytes`), per subscriber.
    pub update_full_bytes: AtomicU64,
    /// Time the hook spent in checkpoints when no browser was attached,
    /// in nanoseconds, and how many such checkpoints (the bench's "cost
    /// with nobody watching").
    pub idle_ns: AtomicU64,
    /// See `idle_ns`.
    pub idle_checkpoints: AtomicU64,
    /// The guest's console (`POST /api/run` types into it).
    console: std::sync::OnceLock<Arc<Mutex<crate::devices::serial::SerialConsole>>>,
    /// Whether the guest runs its shell.
    shell: bool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves plain data behind: use it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Shared {
    fn new(wait: bool, shell: bool) -> Self {
        Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            ctl: Mutex::new(Ctl { state: RunState::Running, at: None, seq: 0, last_checkpoint: None }),
            pending: AtomicUsize::new(0),
            clients: AtomicUsize::new(0),
            pause_req: AtomicBool::new(wait),
            step_req: AtomicBool::new(false),
            sample_req: AtomicBool::new(false),
            subscribers: Mutex::new(Vec::new()),
            log: Mutex::new(VecDeque::new()),
            next_event: AtomicU64::new(1),
            history: Mutex::new(VecDeque::new()),
            faults: Mutex::new(FaultLog::default()),
            start: Instant::now(),
            updates_sent: AtomicU64::new(0),
            update_bytes: AtomicU64::new(0),
            update_full_bytes: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            idle_checkpoints: AtomicU64::new(0),
            console: std::sync::OnceLock::new(),
            shell,
        }
    }

    /// Types `line` (and Enter) into the guest's console shell: `POST
    /// /api/run`. The bytes go into the UART's receive FIFO whole or not
    /// at all, so a line is never cut; a held guest reads them when it
    /// resumes.
    pub fn run_line(&self, line: &str) -> Result<(), ApiError> {
        self.require_live()?;
        if !self.shell {
            return Err(ApiError::conflict(
                "the guest runs no console shell: start the VMM with --shell (and --initrd DIR for programs) to start programs from here",
            ));
        }
        let line = line.trim();
        if line.is_empty() {
            return Err(ApiError::bad("the command line is empty: give {\"cmd\": \"PROGRAM ARGS\"}"));
        }
        if line.len() > RUN_LINE_MAX {
            return Err(ApiError::bad(format!(
                "the command line is {} bytes; at most {RUN_LINE_MAX} fit the UART's receive FIFO at once",
                line.len()
            )));
        }
        if let Some(c) = line.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(ApiError::bad(format!(
                "the command line holds {c:?}: only printable ASCII reaches the shell (it would drop or act on the rest)"
            )));
        }
        let console =
            self.console.get().ok_or_else(|| ApiError::conflict("the guest's console is not attached yet"))?;
        let mut c = locked(console);
        let bytes = format!("{line}\r");
        if c.input_room() < bytes.len() {
            return Err(ApiError {
                status: 503,
                message: format!(
                    "the console's input FIFO has room for {} bytes, the line needs {}: the guest is not reading its console now (a program runs, or it is held); try again",
                    c.input_room(),
                    bytes.len()
                ),
            });
        }
        c.enqueue_input(bytes.as_bytes());
        drop(c);
        self.log_event("run", line);
        Ok(())
    }

    /// `--web-wait`: the guest is to be held before its first instruction.
    pub fn wants_hold_at_start(&self) -> bool {
        self.pause_req.load(Ordering::Acquire)
    }

    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn log_event(&self, kind: &'static str, name: &str) -> u64 {
        self.push_event(kind, crate::devices::results::escape(name), None)
    }

    fn push_event(&self, kind: &'static str, name: String, fault: Option<Fault>) -> u64 {
        let id = self.next_event.fetch_add(1, Ordering::Relaxed);
        let mut log = locked(&self.log);
        if log.len() >= LOG_MAX {
            log.pop_front();
        }
        log.push_back(Event { id, ms: self.ms(), kind, name, fault });
        id
    }

    /// The faults kept (oldest first), those of `pid` only when given,
    /// those after record `since`, at most `limit` (the newest): `GET
    /// /api/faults`.
    pub fn faults_json(&self, since: u64, pid: Option<u32>, limit: usize) -> serde_json::Value {
        let f = locked(&self.faults);
        let sel: Vec<&Fault> = f.kept.iter().filter(|x| x.n > since && pid.is_none_or(|p| x.pid == p)).collect();
        let skip = sel.len().saturating_sub(limit);
        serde_json::json!({
            "faults": sel[skip..],
            "next": f.next,
            "lost": f.lost,
            "kept": f.kept.len(),
        })
    }

    /// Events after `since`.
    pub fn events_since(&self, since: u64) -> Vec<Event> {
        locked(&self.log).iter().filter(|e| e.id > since).cloned().collect()
    }

    /// The samples kept (oldest first).
    pub fn history(&self) -> Vec<Sample> {
        locked(&self.history).iter().cloned().collect()
    }

    /// The state as `/api/state` gives it.
    pub fn state_json(&self) -> serde_json::Value {
        let c = locked(&self.ctl);
        serde_json::json!({
            "state": c.state,
            "at": c.at,
            "seq": c.seq,
            "last_checkpoint": c.last_checkpoint,
            "clients": self.clients.load(Ordering::Relaxed),
            "updates_sent": self.updates_sent.load(Ordering::Relaxed),
            "update_bytes": self.update_bytes.load(Ordering::Relaxed),
            "update_full_bytes": self.update_full_bytes.load(Ordering::Relaxed),
            "idle_checkpoints": self.idle_checkpoints.load(Ordering::Relaxed),
            "idle_ns": self.idle_ns.load(Ordering::Relaxed),
        })
    }

    fn state(&self) -> RunState {
        locked(&self.ctl).state.clone()
    }

    /// Sends `msg` to every attached browser; forgets the gone ones, and
    /// the stuck ones (a full queue: its page reconnects and reloads the
    /// history rather than miss a delta).
    fn broadcast(&self, msg: String) {
        let msg = Arc::new(msg);
        let mut subs = locked(&self.subscribers);
        subs.retain(|s| s.try_send(msg.clone()).is_ok());
        self.updates_sent.fetch_add(subs.len() as u64, Ordering::Relaxed);
        self.update_bytes.fetch_add((subs.len() * msg.len()) as u64, Ordering::Relaxed);
    }

    /// A new browser's channel of updates.
    pub fn subscribe(&self) -> mpsc::Receiver<Arc<String>> {
        let (tx, rx) = mpsc::sync_channel(SUBSCRIBER_QUEUE);
        locked(&self.subscribers).push(tx);
        rx
    }

    fn state_message(&self) -> String {
        let c = locked(&self.ctl);
        serde_json::json!({"t": "s", "state": c.state, "at": c.at, "seq": c.seq, "ms": epoch_ms()}).to_string()
    }

    /// Asks for a pause at the next chance (the vCPU is kicked).
    pub fn request_pause(&self) -> Result<(), ApiError> {
        self.require_live()?;
        self.pause_req.store(true, Ordering::Release);
        pause::poke();
        Ok(())
    }

    /// Lets a held guest run on.
    pub fn request_resume(&self) -> Result<(), ApiError> {
        self.require_live()?;
        self.pause_req.store(false, Ordering::Release);
        self.step_req.store(false, Ordering::Release);
        locked(&self.queue).resume = true;
        self.wake.notify_all();
        Ok(())
    }

    /// Runs the guest to its next checkpoint and holds it there.
    pub fn request_step(&self) -> Result<(), ApiError> {
        self.require_live()?;
        self.step_req.store(true, Ordering::Release);
        locked(&self.queue).resume = true;
        self.wake.notify_all();
        Ok(())
    }

    /// Asks for a sample at the next chance (the sampler thread).
    pub fn request_sample(&self) {
        if self.state() == RunState::Running {
            self.sample_req.store(true, Ordering::Release);
            pause::poke();
        }
    }

    fn require_live(&self) -> Result<(), ApiError> {
        match self.state() {
            RunState::Ended => Err(ApiError { status: 410, message: "the guest's run is over".into() }),
            _ => Ok(()),
        }
    }

    /// Runs `query` on the vCPU thread while the vCPU is parked and waits
    /// for the answer, at most `deadline`.
    pub fn run_job(&self, query: api::Query, deadline: Duration) -> Result<String, ApiError> {
        self.require_live()?;
        let (tx, rx) = mpsc::sync_channel(1);
        locked(&self.queue).jobs.push_back(Job { query, reply: tx });
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_all();
        pause::poke();
        match rx.recv_timeout(deadline) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ApiError {
                status: 503,
                message: format!(
                    "the vCPU did not stop within {} s to answer (is gdb holding it?); try again",
                    deadline.as_secs()
                ),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(ApiError { status: 410, message: "the guest's run ended before the answer".into() })
            }
        }
    }
}

/// The park hook that serves the web view on the vCPU thread.
pub struct WebHook {
    shared: Arc<Shared>,
    /// The views' code, with no views of its own configured.
    inspector: Inspector,
    mem: GuestMem,
    link: GuestLink,
    stop: Arc<AtomicBool>,
    /// The vmstat counters last sent, for deltas.
    last_vmstat: Vec<u64>,
    /// The physical map of the current stop, kept while the guest holds
    /// still (zooming asks for it again and again); dropped at every new
    /// stop.
    physmap: Option<(u64, crate::inspect::physmap::PhysMap)>,
    /// Where the guest's fault ring lies (read from the descriptor once).
    fault_ring: Option<mm_core::descriptor::FaultLogDesc>,
    /// Faults read since the last update was sent (the next one carries
    /// them).
    fresh_faults: Vec<Fault>,
}

/// A running web view: the server's threads and the hook to give the
/// vCPU's run loop.
pub struct WebView {
    /// What the threads share.
    pub shared: Arc<Shared>,
    /// The address served.
    pub addr: SocketAddr,
}

/// Binds `cfg.addr`, prints the URL on stderr, and starts the server.
pub fn start(cfg: &WebConfig) -> Result<WebView, WebError> {
    let shared = Arc::new(Shared::new(cfg.wait, cfg.shell));
    let http =
        tiny_http::Server::http(cfg.addr).map_err(|e| WebError::Bind { addr: cfg.addr, reason: e.to_string() })?;
    let addr =
        http.server_addr().to_ip().ok_or(WebError::Bind { addr: cfg.addr, reason: "not an IP socket".into() })?;
    let scope = if addr.ip().is_loopback() {
        "loopback only; give --web 0.0.0.0:PORT to serve other hosts"
    } else {
        "NOT loopback: anyone who reaches this address can pause and inspect the guest"
    };
    eprintln!("vmm: web view at http://{addr}/ ({scope})");
    if cfg.wait {
        eprintln!("vmm: --web-wait: the guest is held before its first instruction until the page resumes it");
    }
    server::spawn(http, shared.clone()).map_err(WebError::Thread)?;
    Ok(WebView { shared, addr })
}

impl WebView {
    /// One line for the end of the run: what the view sent, and what the
    /// checkpoints that passed with no browser attached cost in its hook.
    pub fn summary(&self) -> String {
        let s = &self.shared;
        let (n, bytes) = (s.updates_sent.load(Ordering::Relaxed), s.update_bytes.load(Ordering::Relaxed));
        let (idle, ns) = (s.idle_checkpoints.load(Ordering::Relaxed), s.idle_ns.load(Ordering::Relaxed));
        let per = bytes.checked_div(n).map(|b| format!(", {b} bytes per update")).unwrap_or_default();
        let cost = if idle > 0 {
            format!(", {:.2} us each in the web hook", ns as f64 / idle as f64 / 1000.0)
        } else {
            String::new()
        };
        format!(
            "web view: {n} updates sent ({bytes} bytes{per}); {idle} checkpoints passed with no browser attached{cost}"
        )
    }

    /// Gives `POST /api/run` the guest's console.
    pub fn attach_console(&self, console: Arc<Mutex<crate::devices::serial::SerialConsole>>) {
        let _ = self.shared.console.set(console);
    }

    /// The hook for the vCPU's run loop. `stop` is the run's stop flag (a
    /// held guest lets go when it is set, as at `--timeout`).
    pub fn hook(&self, mem: GuestMem, symbols: Arc<Symbols>, link: GuestLink, stop: Arc<AtomicBool>) -> WebHook {
        let inspector = Inspector::new(InspectConfig::default(), mem.clone(), None, symbols, Box::new(std::io::sink()))
            .with_link(link.clone());
        WebHook {
            shared: self.shared.clone(),
            inspector,
            mem,
            link,
            stop,
            last_vmstat: Vec::new(),
            physmap: None,
            fault_ring: None,
            fresh_faults: Vec::new(),
        }
    }
}

impl WebHook {
    /// Reads buddyinfo and vmstat (the views' code) and sends the browsers
    /// an update: the free counts and only the counters that changed.
    pub(crate) fn sample(&mut self, kind: &'static str, name: &str, t0_ms: u64, vcpu: &dyn Vcpu) {
        let seq = {
            let mut c = locked(&self.shared.ctl);
            c.seq += 1;
            c.seq
        };
        let mut msg = serde_json::json!({"t": "u", "seq": seq, "ev": kind, "name": crate::devices::results::escape(name), "ms": t0_ms});
        self.read_faults(name);
        if !self.fresh_faults.is_empty() {
            msg["faults"] = serde_json::json!(std::mem::take(&mut self.fresh_faults));
        }
        let mut full_len = 0;
        if let Ok((_, base)) = Inspector::guest_context(vcpu) {
            if let Ok(gs) = GuestState::read(&self.mem, self.link.descriptor.get(), &base) {
                let b = mmviews::buddyinfo(&gs);
                let v = mmviews::vmstat(&gs);
                let buddy: Vec<(String, Vec<u64>)> = b
                    .zones
                    .iter()
                    .map(|z| {
                        // Node 0's zones keep their bare names; other
                        // nodes' are told apart.
                        let name = if z.node == 0 { z.zone.to_string() } else { format!("node {} {}", z.node, z.zone) };
                        (name, z.free.to_vec())
                    })
                    .collect();
                let values: Vec<u64> = v.counters.iter().map(|c| c.value).collect();
                // Only the counters that moved: most do not between samples.
                let delta: serde_json::Map<String, serde_json::Value> = v
                    .counters
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| self.last_vmstat.get(*i) != Some(&c.value))
                    .map(|(_, c)| (c.name.to_string(), c.value.into()))
                    .collect();
                msg["buddy"] = serde_json::json!(buddy);
                // The peer of the delta: every counter.
                let all: serde_json::Map<String, serde_json::Value> =
                    v.counters.iter().map(|c| (c.name.to_string(), c.value.into())).collect();
                msg["vm"] = serde_json::Value::Object(all);
                full_len = msg.to_string().len();
                msg["vm"] = serde_json::Value::Object(delta);
                let mut h = locked(&self.shared.history);
                if h.len() >= HISTORY_MAX {
                    h.pop_front();
                }
                h.push_back(Sample {
                    seq,
                    ms: self.shared.ms(),
                    name: name.to_string(),
                    buddy,
                    vmstat: values.clone(),
                });
                self.last_vmstat = values;
            }
        }
        let text = msg.to_string();
        let subs = locked(&self.shared.subscribers).len() as u64;
        self.shared.update_full_bytes.fetch_add(subs * full_len.max(text.len()) as u64, Ordering::Relaxed);
        self.shared.broadcast(text);
    }

    /// Runs the queued jobs now, with the vCPU parked.
    fn serve_jobs(&mut self, vcpu: &dyn Vcpu) {
        loop {
            let Some(job) = locked(&self.shared.queue).jobs.pop_front() else { break };
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            let seq = locked(&self.shared.ctl).seq;
            let r = api::execute(self, &job.query, seq, vcpu);
            let _ = job.reply.send(r);
        }
    }

    /// Holds the guest at `at` until the page resumes it or steps to the
    /// next checkpoint, serving jobs meanwhile.
    fn hold(&mut self, at: &str, vcpu: &dyn Vcpu) -> ParkVerdict {
        {
            let mut c = locked(&self.shared.ctl);
            c.state = RunState::Paused;
            c.at = Some(crate::devices::results::escape(at));
        }
        locked(&self.shared.queue).resume = false;
        self.shared.broadcast(self.shared.state_message());
        loop {
            self.serve_jobs(vcpu);
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let q = locked(&self.shared.queue);
            if q.resume {
                break;
            }
            if q.jobs.is_empty() {
                // Woken by a job or a resume; the timeout looks at `stop`.
                let _ = self.shared.wake.wait_timeout(q, Duration::from_millis(100));
            }
        }
        locked(&self.shared.queue).resume = false;
        {
            let mut c = locked(&self.shared.ctl);
            c.state = RunState::Running;
            c.at = None;
        }
        self.physmap = None;
        self.shared.log_event("resume", at);
        self.shared.broadcast(self.shared.state_message());
        ParkVerdict::Resume
    }

    /// Reads the faults the guest logged since the last read (its ring,
    /// guest/src/mm/faultlog.rs) into the event log and [`Shared`]'s
    /// list, and keeps them for the next update. `at` names the stop.
    /// Records the ring overwrote first are counted as lost; a ring the
    /// descriptor does not describe sanely is left alone.
    pub(crate) fn read_faults(&mut self, at: &str) {
        use mm_core::descriptor::{FaultRecord, Wire, FAULT_RECORD_SIZE};
        use vm_memory::{Bytes, GuestAddress};
        if self.fault_ring.is_none() {
            let base = mm_core::paging::CpuContext::kernel(mm_core::addr::PhysAddr(0));
            let Ok(gs) = GuestState::descriptor(&self.mem, self.link.descriptor.get(), &base) else {
                return;
            };
            let d = gs.desc.faults;
            if d.ring == 0
                || d.record_size as usize != FAULT_RECORD_SIZE
                || !d.capacity.is_power_of_two()
                || d.capacity > FAULT_RING_MAX
            {
                return;
            }
            self.fault_ring = Some(d);
        }
        let Some(d) = self.fault_ring else { return };
        let Ok(head) = self.mem.read_obj::<u64>(GuestAddress(d.head)) else { return };
        let cap = d.capacity as u64;
        let mut ring = vec![0u8; d.capacity as usize * FAULT_RECORD_SIZE];
        if self.mem.read_slice(&mut ring, GuestAddress(d.ring)).is_err() {
            return;
        }
        let mut log = locked(&self.shared.faults);
        if head < log.next {
            // The guest started over (a reboot): so does the log.
            log.next = 0;
        }
        let from = log.next.max(head.saturating_sub(cap));
        log.lost += from - log.next;
        let mut fresh = Vec::new();
        for n in from..head {
            let at_slot = (n % cap) as usize * FAULT_RECORD_SIZE;
            let r = FaultRecord::decode(&ring[at_slot..at_slot + FAULT_RECORD_SIZE]);
            if r.seq != n + 1 {
                // Overwritten since the count was read, or mid-write.
                log.lost += 1;
                continue;
            }
            fresh.push(Fault::from_record(&r, at));
        }
        log.next = head;
        for f in &fresh {
            if log.kept.len() >= FAULTS_MAX {
                log.kept.pop_front();
            }
            log.kept.push_back(f.clone());
        }
        drop(log);
        for f in &fresh {
            self.shared.push_event("fault", f.summary(), Some(f.clone()));
        }
        self.fresh_faults.extend(fresh);
    }

    pub(crate) fn inspector(&mut self) -> &mut Inspector {
        &mut self.inspector
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The name of the stop the vCPU is held at (or "running" for a
    /// short stop to answer a request).
    pub(crate) fn stop_name(&self) -> String {
        locked(&self.shared.ctl).at.clone().unwrap_or_else(|| "running".into())
    }

    pub(crate) fn mem(&self) -> &GuestMem {
        &self.mem
    }

    pub(crate) fn link(&self) -> &GuestLink {
        &self.link
    }

    /// The physical map at this stop (update `seq`), painted once per stop.
    pub(crate) fn physmap(&mut self, seq: u64, vcpu: &dyn Vcpu) -> Result<&crate::inspect::physmap::PhysMap, String> {
        if self.physmap.as_ref().is_none_or(|(s, _)| *s != seq) {
            self.physmap = Some((seq, self.inspector.physmap_frames(vcpu)?));
        }
        Ok(&self.physmap.as_ref().expect("just set").1)
    }
}

impl ParkHook for WebHook {
    fn checkpoint(&mut self, name: &str, vcpu: &dyn Vcpu) -> ParkVerdict {
        let t = Instant::now();
        // The guest ran since the last stop: the painted map is stale.
        self.physmap = None;
        let t0_ms = epoch_ms();
        let attached = self.shared.clients.load(Ordering::Acquire) > 0;
        if attached {
            // The faults that led here go before the checkpoint in the log.
            self.read_faults(name);
        }
        self.shared.log_event("checkpoint", name);
        locked(&self.shared.ctl).last_checkpoint = Some(crate::devices::results::escape(name));
        let step = self.shared.step_req.swap(false, Ordering::AcqRel);
        if !attached && !step && self.shared.pending.load(Ordering::Acquire) == 0 {
            self.shared.idle_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.shared.idle_checkpoints.fetch_add(1, Ordering::Relaxed);
            return ParkVerdict::Resume;
        }
        if attached {
            self.sample("checkpoint", name, t0_ms, vcpu);
        } else {
            locked(&self.shared.ctl).seq += 1;
        }
        if step || self.shared.pause_req.swap(false, Ordering::AcqRel) {
            return self.hold(name, vcpu);
        }
        self.serve_jobs(vcpu);
        ParkVerdict::Resume
    }

    fn poke(&mut self, vcpu: &dyn Vcpu) -> ParkVerdict {
        self.physmap = None;
        if self.shared.pause_req.swap(false, Ordering::AcqRel) {
            let t0_ms = epoch_ms();
            self.shared.log_event("pause", "pause");
            if self.shared.clients.load(Ordering::Acquire) > 0 {
                self.sample("pause", "pause", t0_ms, vcpu);
            } else {
                locked(&self.shared.ctl).seq += 1;
            }
            return self.hold("pause", vcpu);
        }
        if self.shared.sample_req.swap(false, Ordering::AcqRel) && self.shared.clients.load(Ordering::Acquire) > 0 {
            self.sample("sample", "sample", epoch_ms(), vcpu);
        }
        self.serve_jobs(vcpu);
        ParkVerdict::Resume
    }
}

impl Drop for WebHook {
    fn drop(&mut self) {
        // The run is over: answer what is queued and say so.
        locked(&self.shared.ctl).state = RunState::Ended;
        let jobs: Vec<Job> = locked(&self.shared.queue).jobs.drain(..).collect();
        for j in jobs {
            let _ = j.reply.send(Err(ApiError { status: 410, message: "the guest's run is over".into() }));
        }
        self.shared.log_event("end", "the run is over");
        self.shared.broadcast(self.shared.state_message());
    }
}

/// Parses `--web`'s address: `HOST:PORT`, `[V6]:PORT`, or a bare `PORT`
/// on loopback (port 0 picks a free one).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("'{s}' is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("'{s}' names no address"))
}
