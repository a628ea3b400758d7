//! The malloc/free trace of the process bench, written once for both
//! sides: the ring-3 program `mallocbench` (our libc's malloc, in the
//! guest) and the host bench vmm/benches/process.rs (glibc's malloc),
//! which includes this very file by path. Both replay the same operations
//! with the same code, so the only difference is the allocator (and the
//! kernel under it).
//!
//! A trace is generated from a fixed seed into a buffer of encoded
//! operations before any timing starts, so the generator's cost is not
//! measured. It has three phases over a fixed number of slots:
//! - fill: each slot gets a block with probability 1/2;
//! - churn: a random slot is toggled (freed if live, else allocated),
//!   which keeps about half the slots live: the steady state an
//!   allocator spends its life in;
//! - drain: every live slot is freed, in slot order.
//!
//! Only `core` is used (no allocation, no formatting of floats), so the
//! file builds in the freestanding user programs and in a std binary.

use core::fmt;

/// One trace's shape, and the allocator policy it runs under.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Name in the result lines.
    pub name: &'static str,
    /// PRNG seed.
    pub seed: u64,
    /// Slots (live blocks at most).
    pub slots: usize,
    /// Operations in the churn phase.
    pub churn_ops: usize,
    /// Mallocs per thousand that ask for a block above the mmap
    /// threshold (128 KiB .. 1 MiB); 0 for none.
    pub large_per_mille: u64,
    /// The heap's trim threshold (M_TRIM_THRESHOLD); `usize::MAX`: never
    /// trim, so a warm heap needs no kernel at all.
    pub trim_threshold: usize,
}

/// Small and medium blocks only (16 B .. 64 KiB), default policy: the
/// kernel is involved whenever the heap top grows or is trimmed.
pub const SMALL: Spec = Spec {
    name: "small",
    seed: 0x5eed_0001,
    slots: 2048,
    churn_ops: 1_000_000,
    large_per_mille: 0,
    trim_threshold: 128 << 10,
};

/// The same operations with trimming off: after the warm-up replay the
/// heap keeps its peak size, so the timed replays involve no kernel (no
/// faults, no system calls): the allocators' own work alone.
pub const SMALL_WARM: Spec = Spec { name: "small_warm", trim_threshold: usize::MAX, ..SMALL };

/// The small mix with 1% of the mallocs above the 128 KiB mmap
/// threshold: each of those is an mmap, a munmap and two page faults.
pub const MIXED: Spec = Spec {
    name: "mixed",
    seed: 0x5eed_0002,
    slots: 2048,
    churn_ops: 100_000,
    large_per_mille: 10,
    trim_threshold: 128 << 10,
};

/// The traces the bench runs; each runs in a fresh process.
pub const TRACES: [Spec; 3] = [SMALL_WARM, SMALL, MIXED];

/// Replays of a trace per process: the first warms up (the heap grows
/// to its peak, the caches fill) and the bench takes the median of the
/// others.
pub const RUNS: usize = 4;

/// A free: bit 63 of an encoded operation. Otherwise a malloc.
const FREE: u64 = 1 << 63;

/// Encoded operations a trace of `spec` needs room for.
pub const fn capacity(spec: &Spec) -> usize {
    2 * spec.slots + spec.churn_ops
}

/// xorshift64*: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi` (close enough: hi - lo is far below 2^64).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// A request size: mostly small, as real programs' are (a shape like
/// the size histograms in allocator papers), odd sizes included.
fn size(rng: &mut Rng, spec: &Spec) -> u64 {
    if spec.large_per_mille != 0 && rng.next() % 1000 < spec.large_per_mille {
        return rng.range(128 << 10, 1 << 20);
    }
    match rng.next() % 100 {
        0..=59 => rng.range(16, 128),
        60..=84 => rng.range(128, 1024),
        85..=95 => rng.range(1024, 8192),
        _ => rng.range(8192, 64 << 10),
    }
}

fn encode_malloc(slot: usize, size: u64) -> u64 {
    ((slot as u64) << 32) | size
}

/// Writes `spec`'s trace into `out` (at least `capacity(spec)` long);
/// returns where the churn and the drain phases start and the end.
pub fn generate(spec: &Spec, out: &mut [u64]) -> [usize; 3] {
    let mut rng = Rng(spec.seed | 1);
    // Which slots are live; 64 slots a word.
    let mut live = [0u64; 64];
    assert!(spec.slots <= live.len() * 64 && out.len() >= capacity(spec));
    let mut n = 0;
    for slot in 0..spec.slots {
        if rng.next() & 1 == 1 {
            out[n] = encode_malloc(slot, size(&mut rng, spec));
            live[slot / 64] |= 1 << (slot % 64);
            n += 1;
        }
    }
    let churn = n;
    for _ in 0..spec.churn_ops {
        let slot = (rng.next() % spec.slots as u64) as usize;
        let bit = 1u64 << (slot % 64);
        out[n] = if live[slot / 64] & bit != 0 {
            FREE | ((slot as u64) << 32)
        } else {
            encode_malloc(slot, size(&mut rng, spec))
        };
        live[slot / 64] ^= bit;
        n += 1;
    }
    let drain = n;
    for slot in 0..spec.slots {
        if live[slot / 64] & (1 << (slot % 64)) != 0 {
            out[n] = FREE | ((slot as u64) << 32);
            n += 1;
        }
    }
    [churn, drain, n]
}

/// Time-stamp counter, after earlier instructions have completed
/// (`lfence; rdtsc`, so the read is not hoisted into the work timed).
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads a counter; ring 3 may (CR4.TSD is clear).
    unsafe { core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nostack, nomem)) };
    ((hi as u64) << 32) | lo as u64
}

/// What one phase cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phase {
    /// Operations replayed.
    pub ops: u64,
    /// TSC cycles for them.
    pub cycles: u64,
    /// Page faults the process took meanwhile.
    pub faults: u64,
    /// Bytes requested by the phase's mallocs.
    pub bytes: u64,
}

/// One replay of a trace.
#[derive(Clone, Copy, Debug, Default)]
pub struct Replay {
    /// The phases: fill, churn, drain.
    pub phases: [Phase; 3],
    /// Every block came back with the contents written at malloc and no
    /// malloc failed.
    pub ok: bool,
}

/// The allocator and the fault counter a replay runs against.
pub trait Heap {
    /// `malloc(n)`.
    fn malloc(&mut self, n: usize) -> *mut u8;
    /// `free(p)`.
    ///
    /// # Safety
    /// `p` came from `malloc` and was not freed yet.
    unsafe fn free(&mut self, p: *mut u8);
    /// Page faults this process has taken so far (read outside the timed
    /// work: in the guest it is a system call).
    fn faults(&mut self) -> u64;
    /// The heap's address range (the brk heap), for `prefault`.
    fn heap_range(&mut self) -> (usize, usize);
}

/// Write-touches every page of `heap`'s brk heap without changing its
/// contents (`lock or qword [page], 0`), so a warm replay with trimming
/// off finds every page present: pages the allocator reserved with brk
/// but a previous replay did not reach would otherwise fault inside the
/// timed work (~1000x dearer in the guest here, where the kernel is
/// emulated, than on the host). Both sides call it between replays.
pub fn prefault(heap: &mut impl Heap) {
    let (start, end) = heap.heap_range();
    let mut page = (start + 4095) & !4095;
    while page + 8 <= end {
        // SAFETY: a page of the heap, mapped read-write; adding nothing
        // atomically leaves whatever the allocator keeps there intact
        // (a plain atomic add of 0 may be turned into a load by LLVM).
        unsafe { core::arch::asm!("lock or qword ptr [{0}], 0", in(reg) page, options(nostack)) };
        page += 4096;
    }
}

/// A block's tag: its size and slot, so a block handed out twice or
/// overwritten shows up.
fn tag(slot: usize, size: usize) -> u64 {
    ((slot as u64) << 32) ^ size as u64 ^ 0xa5a5_0000_0000_0000
}

/// Replays `ops` (from `generate`, with its phase bounds) on `heap`.
/// Each malloc writes the block's first 8 bytes and its last byte (so a
/// large block is touched at both ends, as a program using it would)
/// and each free checks them. `slots` holds the live blocks and must be
/// empty (all null) and at least `spec.slots` long.
pub fn replay(heap: &mut impl Heap, ops: &[u64], bounds: [usize; 3], slots: &mut [*mut u8]) -> Replay {
    let mut r = Replay { ok: true, ..Replay::default() };
    let mut start = 0;
    for (phase, &end) in r.phases.iter_mut().zip(bounds.iter()) {
        let mut bytes = 0u64;
        let mut ok = true;
        let f0 = heap.faults();
        let t0 = rdtsc();
        for &op in &ops[start..end] {
            let slot = ((op >> 32) & 0x7fff_ffff) as usize;
            if op & FREE != 0 {
                let p = slots[slot];
                // SAFETY: the trace frees only live slots; the block holds
                // at least 16 bytes, its size in the first 8.
                unsafe {
                    let size = (p as *const u64).read() ^ tag(slot, 0);
                    ok &= size >> 32 == 0 && p.add(size as usize - 1).read() == size as u8;
                    heap.free(p);
                }
                slots[slot] = core::ptr::null_mut();
            } else {
                let size = (op & 0xffff_ffff) as usize;
                let p = heap.malloc(size);
                if p.is_null() {
                    ok = false;
                    break;
                }
                // SAFETY: a fresh block of `size` >= 16 bytes, 8-aligned.
                unsafe {
                    (p as *mut u64).write(tag(slot, size));
                    p.add(size - 1).write(size as u8);
                }
                slots[slot] = p;
                bytes += size as u64;
            }
        }
        let t1 = rdtsc();
        *phase = Phase { ops: (end - start) as u64, cycles: t1 - t0, faults: heap.faults() - f0, bytes };
        r.ok &= ok;
        start = end;
    }
    r
}

/// The result line both sides print (the host bench parses it):
/// `trace=NAME ok=0|1` then `PHASE_ops=.. PHASE_cycles=.. PHASE_faults=..
/// PHASE_bytes=..` for fill, churn and drain.
pub struct Line<'a>(pub &'a Spec, pub &'a Replay);

/// The phases' names, in order.
pub const PHASES: [&str; 3] = ["fill", "churn", "drain"];

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trace={} ok={}", self.0.name, self.1.ok as u8)?;
        for (name, p) in PHASES.iter().zip(self.1.phases.iter()) {
            write!(
                f,
                " {name}_ops={} {name}_cycles={} {name}_faults={} {name}_bytes={}",
                p.ops, p.cycles, p.faults, p.bytes
            )?;
        }
        Ok(())
    }
}
