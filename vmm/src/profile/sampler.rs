//! The sampling profiler behind `vmm run --profile FILE [--profile-hz N]`.
//!
//! A host thread ticks at N Hz; at each tick it marks every running vCPU
//! as owing a sample and kicks its thread out of `KVM_RUN` (the kick the
//! stop-the-world protocol uses: a signal whose handler also sets
//! `immediate_exit`). The vCPU thread takes the sample itself before its
//! next `KVM_RUN` ([`Sampler::sample_if_due`]): it reads its own registers
//! (two ioctls), unwinds the stack it finds with the image's CFI
//! ([`super::unwind`]) and counts the stack. No other vCPU waits: the
//! world is not stopped (stopping it would park every vCPU for every
//! sample, and a sample needs only its own vCPU's state).
//!
//! User code is resolved per process ([`super::userimg`]): the VMA
//! covering the user pc in the guest's published VMA table names the
//! initrd file it was exec'd from (or, for a built-in program, the
//! process's name names the kernel's embedded copy), whose symbols and
//! unwind tables then apply. A sample taken in ring 0 on a process's
//! kernel stack is joined to the user stack beneath it: the trap frame at
//! the top of that stack (TSS.RSP0) holds the user registers the system
//! call or fault entered with, so the flame graph shows the user
//! function above the kernel path it entered.
//!
//! At the end the stacks are symbolised and written as folded stacks (`FILE.folded`, one line per
//! stack, the format of Brendan Gregg's stackcollapse scripts) and as a
//! flame graph SVG (`FILE`, drawn by the `inferno` crate).

use super::unwind::{Frame, Unwinder};
use super::userimg::{UserImage, UserImages};
use crate::inspect::guest::{DescriptorSlot, GuestState};
use crate::inspect::{address_mode, read_linear};
use crate::kvm::Vcpu;
use crate::memory::GuestMem;
use crate::symbols::Symbols;
use crate::vcpu::world::{CpuState, World};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The highest sampling rate `--profile-hz` accepts: each sample is a VM
/// exit and two register reads on the vCPU's thread.
pub const MAX_HZ: u32 = 10_000;

/// The default sampling rate: a prime, so the ticks do not beat with the
/// guest's own periodic timer.
pub const DEFAULT_HZ: u32 = 997;

/// `--profile FILE --profile-hz N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileConfig {
    /// Where the flame graph SVG goes; the folded stacks go to `FILE.folded`.
    pub path: PathBuf,
    /// Samples per second per vCPU.
    pub hz: u32,
}

/// Why the profile could not be taken or written.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// An output file cannot be created.
    #[error("--profile: cannot create {path}: {source}; give a path in a writable directory")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An output file cannot be written.
    #[error("--profile: cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel file (`--kernel`) cannot be read for its unwind tables.
    #[error("--profile: cannot read the kernel {path} for its unwind tables: {source}")]
    Kernel {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The sampling thread could not start.
    #[error("--profile: cannot start the sampling thread: {0}")]
    Thread(std::io::Error),
}

/// Parses `--profile-hz`: 1 to [`MAX_HZ`].
pub fn parse_hz(s: &str) -> Result<u32, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("--profile-hz 0 would take no samples: give 1 to 10000 samples per second".into()),
        Ok(n) if n <= u64::from(MAX_HZ) => Ok(n as u32),
        Ok(n) => Err(format!(
            "--profile-hz {n} is too fast: each sample stops the vCPU; give at most {MAX_HZ} samples per second"
        )),
        Err(_) => Err(format!("'{s}' is not a number of samples per second (1 to {MAX_HZ})")),
    }
}

/// `FILE.folded` beside `FILE`.
pub fn folded_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".folded");
    PathBuf::from(p)
}

/// One image the profiler symbolises and unwinds.
pub struct Image {
    unwinder: Option<Unwinder>,
    symbols: Symbols,
}

impl Image {
    /// The unwind tables of `elf`, and its `symbols`.
    pub fn new(elf: &[u8], symbols: Symbols) -> Image {
        Image { unwinder: Unwinder::from_elf(elf), symbols }
    }

    /// The function containing `pc`, as flame graphs name frames.
    fn name(&self, pc: u64) -> String {
        match self.symbols.lookup(pc) {
            // `;` separates frames in the folded format.
            Some((s, _)) => super::insns::strip_hash(s).replace(';', ":"),
            None => "[unknown]".into(),
        }
    }
}

/// The user half of a sampled stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct UserStack {
    /// The process's name (from the descriptor's process table).
    process: String,
    /// The image's label ([`UserImage::label`]); `None` when no ELF is
    /// known for the code.
    image: Option<String>,
    /// The pcs, innermost first: the ELF's own addresses when the image is
    /// known, else the run-time pc.
    pcs: Vec<u64>,
}

/// A sampled stack: the user part (a sample in ring 3, or in ring 0 on a
/// process's kernel stack entered from ring 3) and the kernel pcs,
/// innermost first.
type RawStack = (Option<UserStack>, Vec<u64>);

/// What a thread last resolved to: its process's name, and its
/// code's image with the load bias.
type LastSeen = (String, Option<(Arc<UserImage>, u64)>);

/// The most a sampled ring-0 stack pointer may lie below TSS.RSP0 for the
/// stack to count as the process's kernel stack (the guest's are 32 KiB).
const KSTACK_MAX: u64 = 64 << 10;

/// Words of the guest's `TrapFrame` (arch/traps.rs): 15 registers, the
/// vector, the error code, and the five the CPU pushes.
const TRAP_FRAME_WORDS: usize = 22;

/// The physical-frame bits of a CR3 value (PCID and flags dropped).
fn cr3_root(cr3: u64) -> u64 {
    cr3 & 0x000f_ffff_ffff_f000
}

/// The profiler, from before the boot (the output files are created
/// then, so a bad path fails at once) to after the run.
pub struct Profiler {
    cfg: ProfileConfig,
    svg: std::fs::File,
    folded: std::fs::File,
    kernel: Image,
    user: UserImages,
}

impl Profiler {
    /// [`Profiler::open`] for the kernel a run boots: `kernel`
    /// (`--kernel FILE`) or the embedded one; `initrd` is the archive the
    /// run loads (`--initrd`, `-- PROG`), whose programs' symbols name
    /// user frames.
    pub fn open_for(
        cfg: ProfileConfig,
        kernel: Option<&Path>,
        initrd: Option<&[u8]>,
    ) -> Result<Profiler, ProfileError> {
        match kernel {
            Some(path) => {
                let elf = std::fs::read(path).map_err(|source| ProfileError::Kernel { path: path.into(), source })?;
                let symbols = Symbols::from_elf(&elf);
                Profiler::open(cfg, &elf, symbols, initrd)
            }
            None => Profiler::open(cfg, crate::EMBEDDED_GUEST, Symbols::from_static(crate::EMBEDDED_GUEST), initrd),
        }
    }

    /// Creates the output files and reads the images' unwind tables:
    /// `kernel` is the guest kernel's ELF (its symbols come with it, and
    /// its built-in programs), `initrd` the archive of user programs.
    pub fn open(
        cfg: ProfileConfig,
        kernel: &[u8],
        kernel_symbols: Symbols,
        initrd: Option<&[u8]>,
    ) -> Result<Profiler, ProfileError> {
        let create = |path: &Path| {
            // A directory is refused here with a clear message (create
            // would say only "Is a directory").
            if path.is_dir() {
                return Err(ProfileError::Create {
                    path: path.into(),
                    source: std::io::Error::other("it is a directory"),
                });
            }
            std::fs::File::create(path).map_err(|source| ProfileError::Create { path: path.into(), source })
        };
        let svg = create(&cfg.path)?;
        let folded = create(&folded_path(&cfg.path))?;
        let user = UserImages::new(initrd, kernel);
        Ok(Profiler { kernel: Image::new(kernel, kernel_symbols), user, cfg, svg, folded })
    }

    /// What the vCPU threads share while the guest runs.
    /// `descriptor` is where the guest publishes its descriptor (its
    /// process and VMA tables resolve user code).
    pub fn start(
        self,
        mem: GuestMem,
        descriptor: DescriptorSlot,
        world: Arc<World>,
        stop: Arc<AtomicBool>,
    ) -> Result<Running, ProfileError> {
        let n = world.len();
        let sampler = Arc::new(Sampler {
            due: (0..n).map(|_| AtomicBool::new(false)).collect(),
            mem,
            descriptor,
            kernel: self.kernel,
            user: self.user,
            seen: Mutex::default(),
            last: Mutex::default(),
            stacks: Mutex::new(HashMap::new()),
            samples: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            sampling_ns: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
        });
        let (end_tx, end_rx) = mpsc::channel::<()>();
        let period = Duration::from_secs_f64(1.0 / f64::from(self.cfg.hz));
        let s = sampler.clone();
        let thread = std::thread::Builder::new()
            .name("profile".into())
            .spawn(move || s.tick(period, &world, &stop, &end_rx))
            .map_err(ProfileError::Thread)?;
        Ok(Running {
            sampler,
            end: Some(end_tx),
            thread: Some(thread),
            started: Instant::now(),
            cfg: self.cfg,
            svg: self.svg,
            folded: self.folded,
        })
    }
}

/// The samples the vCPU threads take.
pub struct Sampler {
    due: Vec<AtomicBool>,
    mem: GuestMem,
    descriptor: DescriptorSlot,
    kernel: Image,
    user: UserImages,
    /// The user images samples resolved to, by label.
    seen: Mutex<HashMap<String, Arc<UserImage>>>,
    /// The last process name and image (with its load bias) each thread
    /// (by its kernel stack's top, TSS.RSP0) resolved to: an exiting
    /// process leaves the process and VMA tables, and its CR3 the
    /// kernel's, before its kernel stack is done tearing it down, and
    /// those samples still belong to it.
    last: Mutex<HashMap<u64, LastSeen>>,
    stacks: Mutex<HashMap<RawStack, u64>>,
    samples: AtomicU64,
    unreadable: AtomicU64,
    /// Time the vCPU threads spent taking samples (the kick's exit excluded).
    sampling_ns: AtomicU64,
    ticks: AtomicU64,
}

impl Sampler {
    /// The sampling thread: marks and kicks every running vCPU each
    /// period until the run ends.
    fn tick(&self, period: Duration, world: &World, stop: &AtomicBool, end: &mpsc::Receiver<()>) {
        let mut next = Instant::now() + period;
        loop {
            let now = Instant::now();
            if next > now {
                // The channel's sender drops (or sends) when the run is over.
                match end.recv_timeout(next - now) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            } else if next + period < now {
                // Fell behind (a loaded host): skip the missed ticks
                // rather than burst.
                next = now;
            }
            next += period;
            if stop.load(Ordering::Acquire) {
                return;
            }
            self.ticks.fetch_add(1, Ordering::Relaxed);
            for i in 0..world.len() {
                // A vCPU that has not started (or is over, or halted for
                // good) has no stack worth a sample.
                if world.cpu_state(i) == CpuState::Running {
                    self.due[i].store(true, Ordering::Release);
                    world.kick(i);
                }
            }
        }
    }

    /// Called by vCPU `index`'s thread before each `KVM_RUN`: takes the
    /// sample the sampling thread asked for, if any (else one atomic load).
    pub fn sample_if_due(&self, index: usize, vcpu: &dyn Vcpu) {
        if !self.due.get(index).is_some_and(|d| d.swap(false, Ordering::AcqRel)) {
            return;
        }
        let t0 = Instant::now();
        let (Ok(regs), Ok(sregs)) = (vcpu.get_regs(), vcpu.get_sregs()) else {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let in_user = sregs.cs.selector & 3 == 3;
        let top = Frame { pc: regs.rip, sp: regs.rsp, bp: regs.rbp };
        let mode = address_mode(&regs, &sregs);
        // User memory is read as ring 3 would (a ring-0 read of user pages
        // may be refused by SMAP).
        let mut user_sregs = sregs;
        user_sregs.cs.selector |= 3;
        let user_mode = address_mode(&regs, &user_sregs);
        let mut kernel_sregs = sregs;
        kernel_sregs.cs.selector &= !3;
        let kernel_mode = address_mode(&regs, &kernel_sregs);
        let word = |mode: &crate::inspect::AddressMode, la: u64| {
            let mut b = [0u8; 8];
            (read_linear(&self.mem, mode, la, &mut b) == 8).then(|| u64::from_le_bytes(b))
        };
        let mut ctx = gimli::UnwindContext::new();
        let (kernel_pcs, user_top) = if in_user {
            // `syscall` on a host where it stays in ring 3 (platform.md)
            // sits at LSTAR, a kernel address, in ring 3 until the fetch
            // faults: the caller's pc is in RCX.
            let pc = if regs.rip >> 47 != 0 { regs.rcx } else { regs.rip };
            (Vec::new(), Some(Frame { pc, ..top }))
        } else {
            let pcs = match &self.kernel.unwinder {
                Some(u) => u.unwind(&mut ctx, top, |la| word(&mode, la)),
                None => vec![regs.rip],
            };
            (pcs, self.user_frame_beneath(&regs, sregs.tr.base, |la| word(&mode, la)))
        };
        // The thread's kernel stack (TSS.RSP0) names it while its process
        // is torn down (CR3 moved to the kernel's, tables emptied).
        let thread = sregs.tr.base.checked_add(4).and_then(|a| word(&kernel_mode, a)).unwrap_or(0);
        let user = user_top.map(|f| self.user_stack(&mut ctx, f, sregs.cr3, thread, |la| word(&user_mode, la)));
        *self.stacks.lock().unwrap_or_else(PoisonError::into_inner).entry((user, kernel_pcs)).or_default() += 1;
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.sampling_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// The user registers beneath a ring-0 sample: the trap frame at the
    /// top of the kernel stack TSS.RSP0 names (the TSS at `tr_base`), if
    /// the sampled `rsp` is on that stack and the frame came from ring 3.
    /// A `syscall` whose frame holds LSTAR (the #PF at LSTAR on hosts
    /// where `syscall` stays in ring 3, platform.md) returns to RCX. While
    /// the entry stub has not saved the registers yet (the sampled `rsp`
    /// is above the frame's register area) they are still live in `regs`.
    fn user_frame_beneath(
        &self,
        regs: &kvm_bindings::kvm_regs,
        tr_base: u64,
        read: impl Fn(u64) -> Option<u64>,
    ) -> Option<Frame> {
        let rsp0 = read(tr_base.checked_add(4)?)?;
        if regs.rsp >= rsp0 || rsp0 - regs.rsp > KSTACK_MAX {
            return None;
        }
        let base = rsp0.checked_sub(8 * TRAP_FRAME_WORDS as u64)?;
        let w = |i: usize| read(base + 8 * i as u64);
        let (rip, cs, sp) = (w(17)?, w(18)?, w(20)?);
        if cs & 3 != 3 {
            return None;
        }
        let saved = regs.rsp <= base;
        let (rcx, rbp) = if saved { (w(2)?, w(6)?) } else { (regs.rcx, regs.rbp) };
        // A kernel-half rip cannot be user code: the syscall's return
        // address is in RCX.
        let pc = if rip >> 47 != 0 { rcx } else { rip };
        Some(Frame { pc, sp, bp: rbp })
    }

    /// The user stack whose innermost frame is `top`, in address space
    /// `cr3`, resolved to its ELF through the guest's process and VMA
    /// tables (or, when they no longer know it, to what thread `thread`,
    /// its kernel stack's top, last ran); `read` reads user memory.
    fn user_stack(
        &self,
        ctx: &mut gimli::UnwindContext<usize>,
        top: Frame,
        cr3: u64,
        thread: u64,
        read: impl FnMut(u64) -> Option<u64>,
    ) -> UserStack {
        let root = cr3_root(cr3);
        let base = mm_core::paging::CpuContext::kernel(mm_core::addr::PhysAddr(0));
        let gs = GuestState::descriptor(&self.mem, self.descriptor.get(), &base).ok();
        let process = gs
            .as_ref()
            .and_then(|g| g.procs().ok().flatten())
            .and_then(|ps| ps.into_iter().find(|p| p.cr3 != 0 && cr3_root(p.cr3) == root))
            .map(|p| {
                let n = p.name.iter().position(|&b| b == 0).unwrap_or(p.name.len());
                String::from_utf8_lossy(&p.name[..n]).into_owned()
            });
        let vma = gs
            .as_ref()
            .and_then(|g| crate::inspect::vmas::table(g).ok().flatten())
            .and_then(|t| t.into_iter().find(|v| cr3_root(v.cr3) == root && v.start <= top.pc && top.pc < v.end));
        // The file the VMA maps and the ELF address of the pc's file
        // offset give the load bias; a built-in program is loaded at its
        // link addresses.
        let found = match vma {
            Some(v) if v.kind == mm_core::descriptor::vma_kind::FILE => self.user.file(v.name()).and_then(|img| {
                let off = (v.pgoff << 12).checked_add(top.pc - v.start)?;
                let vaddr = img.vaddr_of_offset(off)?;
                Some((img, top.pc.wrapping_sub(vaddr)))
            }),
            Some(_) => process.as_deref().and_then(|p| self.user.builtin(p)).map(|img| (img, 0)),
            None => None,
        };
        let (process, found) = {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            let prev = last.get(&thread);
            let process = process.or_else(|| prev.map(|p| p.0.clone())).unwrap_or_default();
            // Unresolved (the tables are gone, or being rewritten): the
            // image this address space last ran.
            let found = found.or_else(|| prev.and_then(|p| p.1.clone()));
            last.insert(thread, (process.clone(), found.clone()));
            (process, found)
        };
        let Some((img, bias)) = found else {
            return UserStack { process, image: None, pcs: vec![top.pc] };
        };
        let pcs = match &img.image.unwinder {
            Some(u) => u.unwind_biased(ctx, top, bias, read),
            None => vec![top.pc.wrapping_sub(bias)],
        };
        let label = img.label.clone();
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).entry(label.clone()).or_insert(img);
        UserStack { process, image: Some(label), pcs }
    }

    /// The folded stacks: `root;...;leaf count` per distinct stack, sorted.
    /// A stack with a user part starts with `[user PROCESS]` and its user
    /// frames, then the kernel frames the process entered.
    fn folded(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for ((user, pcs), n) in self.stacks.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let mut frames: Vec<String> = Vec::with_capacity(pcs.len() + 4);
            if let Some(u) = user {
                // Guest text: `;` and spaces would break the format.
                let process = if u.process.is_empty() { "?".into() } else { u.process.replace([';', ' '], "_") };
                frames.push(format!("[user {process}]"));
                let image = u.image.as_ref().and_then(|l| seen.get(l));
                for pc in u.pcs.iter().rev() {
                    frames.push(match image {
                        Some(img) => img.image.name(*pc),
                        None => format!("[user code: no ELF known] {pc:#x}"),
                    });
                }
            }
            // Recursion shows once per level, as in any flame graph;
            // adjacent duplicates of one frame (a pc and a return into
            // the same function) are real frames too.
            frames.extend(pcs.iter().rev().map(|pc| self.kernel.name(*pc)));
            *out.entry(frames.join(";")).or_default() += n;
        }
        out
    }
}

/// The profiler while the guest runs.
pub struct Running {
    sampler: Arc<Sampler>,
    end: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
    cfg: ProfileConfig,
    svg: std::fs::File,
    folded: std::fs::File,
}

/// What a profile recorded, for the summary line.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSummary {
    /// Samples taken.
    pub samples: u64,
    /// Distinct stacks.
    pub stacks: usize,
    /// The sampling thread's ticks (each asks every running vCPU).
    pub ticks: u64,
    /// Seconds the guest ran with the profiler on.
    pub seconds: f64,
    /// Mean time a vCPU thread spent on one sample, microseconds.
    pub us_per_sample: f64,
    /// Samples whose registers could not be read.
    pub unreadable: u64,
}

impl Running {
    /// The handle the vCPU threads sample through.
    pub fn sampler(&self) -> Arc<Sampler> {
        self.sampler.clone()
    }

    /// Stops sampling and writes `FILE.folded` and the flame graph `FILE`.
    pub fn finish(mut self) -> Result<ProfileSummary, ProfileError> {
        drop(self.end.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let s = &self.sampler;
        let samples = s.samples.load(Ordering::Relaxed);
        let folded = s.folded();
        let fpath = folded_path(&self.cfg.path);
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ProfileError::Write { path, source }
        };
        use std::io::Write;
        let mut text = String::new();
        for (stack, n) in &folded {
            text.push_str(&format!("{stack} {n}\n"));
        }
        self.folded.write_all(text.as_bytes()).map_err(werr(&fpath))?;
        let mut opt = inferno::flamegraph::Options::default();
        opt.title = format!("mmemu guest profile ({samples} samples at {} Hz per vCPU)", self.cfg.hz);
        opt.count_name = "samples".into();
        let mut out = std::io::BufWriter::new(&self.svg);
        if folded.is_empty() {
            // inferno refuses empty input; an SVG that says so is still one.
            let msg = "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\"><text x=\"10\" y=\"25\">no samples: the run ended before the first tick</text></svg>\n";
            out.write_all(msg.as_bytes()).map_err(werr(&self.cfg.path))?;
        } else {
            inferno::flamegraph::from_lines(&mut opt, text.lines(), &mut out).map_err(werr(&self.cfg.path))?;
        }
        out.flush().map_err(werr(&self.cfg.path))?;
        Ok(ProfileSummary {
            samples,
            stacks: folded.len(),
            ticks: s.ticks.load(Ordering::Relaxed),
            seconds,
            us_per_sample: if samples == 0 {
                0.0
            } else {
                s.sampling_ns.load(Ordering::Relaxed) as f64 / samples as f64 / 1000.0
            },
            unreadable: s.unreadable.load(Ordering::Relaxed),
        })
    }

    /// Where the flame graph went.
    pub fn path(&self) -> &Path {
        &self.cfg.path
    }
}

impl ProfileSummary {
    /// The line `vmm run --profile` prints on stderr.
    pub fn render(&self, path: &Path) -> String {
        format!(
            "profile: {} samples in {:.2} s ({:.0} per second; {} ticks), {} distinct stacks, {:.1} us per sample on the vCPU thread{} -> {} (flame graph), {}",
            self.samples,
            self.seconds,
            self.samples as f64 / self.seconds.max(1e-9),
            self.ticks,
            self.stacks,
            self.us_per_sample,
            if self.unreadable > 0 { format!(", {} with unreadable registers", self.unreadable) } else { String::new() },
            path.display(),
            folded_path(path).display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_parses_with_clear_errors() {
        assert_eq!(parse_hz("997"), Ok(997));
        assert!(parse_hz("0").unwrap_err().contains("no samples"));
        assert!(parse_hz("20000").unwrap_err().contains("at most"));
        assert!(parse_hz("x").is_err());
        assert_eq!(folded_path(Path::new("/tmp/p.svg")), PathBuf::from("/tmp/p.svg.folded"));
    }

    #[test]
    fn a_directory_or_missing_parent_is_refused_before_the_run() {
        let cfg = |p: &str| ProfileConfig { path: p.into(), hz: 10 };
        let e = Profiler::open(cfg("/"), &[], Symbols::default(), None).err().unwrap();
        assert!(e.to_string().contains("directory"), "{e}");
        let e = Profiler::open(cfg("/nonexistent-dir/p.svg"), &[], Symbols::default(), None).err().unwrap();
        assert!(e.to_string().contains("writable directory"), "{e}");
    }
}
