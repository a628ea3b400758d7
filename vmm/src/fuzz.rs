//! The bodies of the cargo-fuzz targets in `vmm/fuzz/` (libFuzzer,
//! nightly), as ordinary functions: each target calls one of these, and
//! the unit test below replays every committed corpus file
//! (`vmm/fuzz/corpus/TARGET/*`) through the same function on every
//! `cargo test`, stable toolchain included. Everything here is what a
//! guest or a user hands the VMM; a body panics only when the VMM would
//! (a panic, an overflow, a broken bound), which is what the fuzzer
//! reports.

use crate::boot::kernel::KernelImage;
use crate::devices::results::{escape, MAX_MALFORMED, MAX_RECORDS};
use crate::devices::serial::{InputQueue, SerialConsole};
use crate::devices::virtio::blk::{BackingFile, Block, SwapConfig, MIN_SIZE};
use crate::devices::virtio::mmio::{Irq, MmioTransport};
use crate::devices::{PortAction, PortBus, CHECKPOINT_NAME_MAX};
use crate::gdb::connection::{Conn, Stream};
use crate::inspect::guest::GuestState;
use crate::inspect::mmviews;
use crate::snapshot::gdbcore::CoreTarget;
use crate::snapshot::{CoreFile, CoreVcpu, Meta, SavedRegion};
use crate::symbols::Symbols;
use mm_core::abi::port;
use mm_core::abi::virtio::{MMIO_BASE, MMIO_SIZE, QUEUE_MAX};
use mm_core::addr::PhysAddr;
use mm_core::descriptor::{MmDescriptor, Wire, DESCRIPTOR_MAGIC, DESCRIPTOR_SIZE, DESCRIPTOR_VERSION, PAGE_DESC_SIZE};
use mm_core::paging::CpuContext;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM of the kernel loader's target: the smallest the loader
/// accepts images into (1 MiB below the kernel, 3 above it).
const KERNEL_RAM: u64 = 4 << 20;

/// `kernel_elf`: a kernel file as `--kernel` reads it: the checks, the
/// symbol table, and when they pass, the load into guest RAM by
/// linux-loader. What the checks accept must load within the bounds they
/// promise.
pub fn kernel_elf(data: &[u8]) {
    static RAM: OnceLock<GuestMemoryMmap> = OnceLock::new();
    let Ok(k) = KernelImage::from_bytes(data.to_vec(), "fuzz input".into()) else { return };
    assert!(k.phys_end >= crate::layout::KERNEL_MIN && k.phys_end <= crate::layout::BOOT_MAPPED);
    let _ = k.symbols.describe(k.entry);
    let ram = RAM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), KERNEL_RAM as usize)]).expect("anonymous guest RAM")
    });
    match k.load(ram, KERNEL_RAM) {
        Ok(l) => assert_eq!(l.entry, k.entry),
        Err(e) => {
            // Only what does not fit may fail after the checks passed.
            let _ = e.to_string();
        }
    }
}

/// A snapshot of a tiny long-mode guest for the gdb target: 1 MiB of RAM
/// whose first 2 MiB of virtual addresses are identity-mapped by one
/// 2 MiB page (PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000), and a vCPU
/// in 64-bit mode with RIP at 0x10000 and RSP at 0x20000.
fn tiny_core() -> CoreFile {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("anonymous guest RAM");
    for (at, v) in [(0x1000u64, 0x2003u64), (0x2000, 0x3003), (0x3000, 0x83)] {
        mem.write_obj(v, GuestAddress(at)).expect("inside RAM");
    }
    mem.write_slice(b"\x90\x90\xf4", GuestAddress(0x10000)).expect("inside RAM");
    let mut vcpu = CoreVcpu { regs: Default::default(), sregs: Default::default() };
    vcpu.regs.rip = 0x10000;
    vcpu.regs.rsp = 0x20000;
    vcpu.regs.rflags = 2;
    vcpu.sregs.cr0 = mm_core::abi::cpu::CR0_PG | 1;
    vcpu.sregs.cr3 = 0x1000;
    vcpu.sregs.cr4 = 1 << 5;
    vcpu.sregs.efer = (1 << 8) | (1 << 10);
    vcpu.sregs.cs.l = 1;
    let meta = Meta {
        format: crate::snapshot::FORMAT,
        vmm: "fuzz".into(),
        checkpoint: "fuzz".into(),
        regions: vec![SavedRegion { gpa: 0, size: 1 << 20, offset: 0 }],
        descriptor_pa: None,
        descriptor: None,
        kernel: None,
        firmware: false,
        maxphyaddr: 40,
        vendor: "intel".into(),
    };
    CoreFile { mem: Arc::new(mem), vcpu, meta }
}

/// `gdb`: the bytes a gdb client sends, through the stub's own framing
/// ([`Conn`]: noise dropped, bad checksums refused), gdbstub's packet
/// parser and the read-only snapshot target with its `monitor` commands,
/// over a real socket pair; no vCPU is needed (the live stub's target
/// needs KVM's, the snapshot's serves the same packets from saved state).
/// Also the live stub's `monitor` argument splitter on the same bytes.
pub fn gdb(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    for a in crate::gdb::monitor::split_args(&line) {
        assert!(!a.is_empty() && !a.contains(char::is_whitespace), "split_args gave {a:?}");
    }
    let _ = line.parse::<crate::gdb::GdbAddr>();

    let (ours, mut client) = UnixStream::pair().expect("socketpair");
    // gdb's side: everything it sends, then the end of its stream; the
    // replies are drained on another thread so the stub never blocks on a
    // full socket.
    client.write_all(data).expect("a socket pair takes a fuzz input");
    client.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink);
        sink.len()
    });
    let conn = Conn::new(Stream::Unix(ours), Arc::new(AtomicBool::new(false))).expect("socket options");
    let mut target = CoreTarget::new(tiny_core(), Symbols::default());
    let _ = crate::snapshot::gdbcore::session(&mut target, conn);
    drain.join().expect("drain thread");
}

/// One step of the `ports` workload, decoded from bytes by [`ports`].
#[derive(Debug)]
enum PortOp<'a> {
    Out { port: u16, data: Vec<u8> },
    In { port: u16, width: usize },
    MmioWrite { addr: u64, data: Vec<u8> },
    MmioRead { addr: u64, width: usize },
    Ram { addr: u64, bytes: &'a [u8] },
    Console { escape: bool, bytes: &'a [u8] },
}

/// The ports a guest reaches (the rest read as absent).
const PORTS: [u16; 17] = [
    port::EXIT,
    port::SYMBOL,
    port::SYMBOL + 4,
    port::RESULTS,
    port::DESCRIPTOR,
    port::DESCRIPTOR_HIGH,
    port::CHECKPOINT,
    port::USER_STDOUT,
    port::USER_STDERR,
    port::COM1,
    port::COM1 + 1,
    port::COM1 + 2,
    port::COM1 + 3,
    port::COM1 + 4,
    port::COM1 + 5,
    port::COM1 + 6,
    port::COM1 + 7,
];

/// Guest RAM of the `ports` target (the virtqueue's rings and buffers).
const PORTS_RAM: u64 = 1 << 20;

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).first().copied()
    }
    fn le(&mut self, n: usize) -> u64 {
        let mut b = [0u8; 8];
        let s = self.take(n);
        b[..s.len()].copy_from_slice(s);
        u64::from_le_bytes(b)
    }
    /// A port: one of [`PORTS`] for small values, any port otherwise.
    fn port(&mut self) -> u16 {
        let p = self.le(2) as u16;
        if p < 0x100 {
            PORTS[p as usize % PORTS.len()]
        } else {
            p
        }
    }
    /// An MMIO address: in the virtio window for small offsets, anywhere
    /// near it otherwise.
    fn mmio(&mut self) -> u64 {
        let o = self.le(2);
        if o < 0x8000 {
            MMIO_BASE + o % MMIO_SIZE
        } else {
            MMIO_BASE + o - 0x8000 - 0x100
        }
    }
}

fn width(sel: u8, max: usize) -> usize {
    [1, 2, 4, 8][sel as usize % 4].min(max)
}

/// Decodes the `ports` workload: a tag byte per step (its kind
/// `(tag & 7) % 6`, its width `tag >> 3`), then the step's fields,
/// little-endian.
fn port_ops(data: &[u8]) -> Vec<PortOp<'_>> {
    let mut i = Input(data);
    let mut ops = Vec::new();
    while let Some(tag) = i.u8() {
        ops.push(match (tag & 7) % 6 {
            0 => {
                let port = i.port();
                let w = width(tag >> 3, 4);
                PortOp::Out { port, data: i.le(w).to_le_bytes()[..w].to_vec() }
            }
            1 => PortOp::In { port: i.port(), width: width(tag >> 3, 4) },
            2 => {
                let addr = i.mmio();
                let w = width(tag >> 3, 8);
                PortOp::MmioWrite { addr, data: i.le(w).to_le_bytes()[..w].to_vec() }
            }
            3 => PortOp::MmioRead { addr: i.mmio(), width: width(tag >> 3, 8) },
            4 => {
                let addr = i.le(4) % PORTS_RAM;
                let n = i.u8().unwrap_or(0) as usize;
                PortOp::Ram { addr, bytes: i.take(n) }
            }
            _ => {
                let n = i.u8().unwrap_or(0) as usize;
                PortOp::Console { escape: tag & 8 != 0, bytes: i.take(n) }
            }
        });
    }
    ops
}

/// A fresh swap device backing file for one `ports` run: the smallest
/// size the device takes, sparse, and unlinked at once (the open file
/// lives on until the run drops it, nothing is left in the temp folder).
fn backing() -> BackingFile {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| std::env::temp_dir().join(format!("mmemu-fuzz-blk-{}", std::process::id())));
    let _ = std::fs::remove_file(path);
    let f = BackingFile::open(&SwapConfig { path: path.clone(), size: Some(MIN_SIZE), fail_writes: None })
        .expect("the fuzz target's backing file in the temp directory");
    let _ = std::fs::remove_file(path);
    f
}

/// `ports`: what a guest writes and reads on its ports and MMIO: the
/// results channel's records, checkpoint names, the descriptor ports, the
/// symbol port, COM1 (with host console input queued into it, Ctrl-A
/// escape included), user program output, and the virtio-mmio registers
/// of the swap device with rings and requests in guest RAM the input
/// writes. The bounds the bus promises must hold.
pub fn ports(data: &[u8]) {
    let _ = ports_run(data);
}

/// What a `ports` run did, for the tests that check the seeds reach deep.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PortsSummary {
    /// Results-channel records and malformed lines.
    pub records: usize,
    /// Malformed results lines.
    pub malformed: usize,
    /// Checkpoint names completed.
    pub checkpoints: Vec<String>,
    /// The used ring's index at guest-physical 0x3002 at the end (the
    /// seeds put the used ring at 0x3000): requests the device completed.
    pub used_idx: u16,
}

/// [`ports`], returning what happened.
pub fn ports_run(data: &[u8]) -> PortsSummary {
    let mut summary = PortsSummary::default();
    let mem: crate::memory::GuestMem =
        Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), PORTS_RAM as usize)]).expect("anonymous guest RAM"));
    let (console, out) = SerialConsole::captured();
    let serial = Arc::new(Mutex::new(console));
    let mut bus = PortBus::new(serial.clone(), Arc::default());
    bus.user_stdout = Box::new(std::io::sink());
    bus.user_stderr = Box::new(std::io::sink());
    let blk = MmioTransport::new(Block::new(backing()), mem.clone(), Irq::None, QUEUE_MAX).expect("queue");
    bus.mmio.insert(MMIO_BASE, MMIO_SIZE, Box::new(blk));
    let mut input = InputQueue::default();
    let mut written = 0usize;
    for op in port_ops(data) {
        match op {
            PortOp::Out { port, data } => {
                written += data.len();
                match bus.write(port, &data) {
                    PortAction::Checkpoint(name) => {
                        assert!(name.chars().count() <= CHECKPOINT_NAME_MAX, "checkpoint name past the cap");
                        let _ = escape(&name);
                        summary.checkpoints.push(name);
                    }
                    PortAction::Exit(_) | PortAction::Descriptor(_) | PortAction::Continue => {}
                }
            }
            PortOp::In { port, width } => {
                let mut d = [0u8; 4];
                bus.read(port, &mut d[..width]);
            }
            PortOp::MmioWrite { addr, data } => {
                bus.mmio.write(addr, &data);
            }
            PortOp::MmioRead { addr, width } => {
                let mut d = [0u8; 8];
                bus.mmio.read(addr, &mut d[..width]);
            }
            PortOp::Ram { addr, bytes } => {
                let n = bytes.len().min((PORTS_RAM - addr) as usize);
                mem.write_slice(&bytes[..n], GuestAddress(addr)).expect("inside RAM");
            }
            PortOp::Console { escape, bytes } => {
                let _ = input.push(bytes, escape);
                if let Ok(mut s) = serial.lock() {
                    input.flush(&mut s);
                }
            }
        }
    }
    let r = &bus.results;
    assert!(r.records.len() <= MAX_RECORDS && r.malformed.len() <= MAX_MALFORMED);
    for rec in &r.records {
        let _ = (escape(&rec.group), escape(&rec.name), escape(&rec.detail));
    }
    assert!(out.lock().map(|o| o.len()).unwrap_or(0) <= written, "COM1 printed more than was written");
    summary.records = r.records.len();
    summary.malformed = r.malformed.len();
    summary.used_idx = mem.read_obj(GuestAddress(0x3002)).unwrap_or(0);
    summary
}

/// `snapshot`: a file handed to `vmm inspect FILE` (an ELF core file the
/// VMM wrote, or anything else): the reader's checks, the mapping of its
/// RAM regions, and when it opens, reads through the saved vCPU's paging
/// and the guest's descriptor, as the offline views start. A file the
/// reader accepts must map no byte past its end.
pub fn snapshot(data: &[u8]) {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| std::env::temp_dir().join(format!("mmemu-fuzz-core-{}", std::process::id())));
    if std::fs::write(path, data).is_err() {
        return;
    }
    let core = CoreFile::open(path);
    // The mappings keep the file's pages; nothing is left in the folder.
    let _ = std::fs::remove_file(path);
    let Ok(core) = core else { return };
    let mapped: u64 = core.meta.regions.iter().map(|r| r.size).sum();
    assert!(mapped <= data.len() as u64, "mapped {mapped:#x} bytes of a {:#x}-byte file", data.len());
    let mode = crate::inspect::address_mode(&core.vcpu.regs, &core.vcpu.sregs);
    let mut buf = [0u8; 64];
    let _ = crate::inspect::read_linear(&core.mem, &mode, core.vcpu.regs.rip, &mut buf);
    let _ = crate::inspect::read_linear(&core.mem, &mode, core.vcpu.regs.rsp, &mut buf);
    let ctx = CpuContext::kernel(PhysAddr(core.vcpu.sregs.cr3));
    if let Ok(gs) = GuestState::read(&core.mem, core.meta.descriptor_pa, &ctx) {
        let _ = mmviews::buddyinfo(&gs).render();
    }
    let _ = escape(&core.meta.checkpoint);
}

/// Where the `guest_state` target puts the descriptor.
const DESC_PA: u64 = 0x1000;
/// Guest RAM of the `guest_state` target.
const STATE_RAM: usize = 256 << 10;

/// `guest_state`: the host's reading of the guest's memory manager through
/// its descriptor (`monitor buddyinfo`, `--inspect`, `vmm inspect` on a
/// snapshot): the input's first bytes are the descriptor (its header made
/// valid when the first byte is even, so the fuzzer gets past it), the rest
/// is guest RAM after it (page tables, vmemmap, caches, processes); every
/// view renders without panicking whatever the guest wrote.
pub fn guest_state(data: &[u8]) {
    let (head, rest) = data.split_at(data.len().min(DESCRIPTOR_SIZE));
    let mut d = MmDescriptor::decode(head);
    if head.first().is_some_and(|b| b % 2 == 0) {
        d.magic = DESCRIPTOR_MAGIC;
        d.version = DESCRIPTOR_VERSION;
        d.size = DESCRIPTOR_SIZE as u32;
        d.page_desc_size = PAGE_DESC_SIZE as u32;
        d.nr_caches %= mm_core::descriptor::MAX_CACHE_DESCS as u32 + 1;
        d.access_count = d.access_count.min(d.access_capacity);
    }
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), STATE_RAM)]).expect("anonymous guest RAM");
    let mut buf = vec![0u8; DESCRIPTOR_SIZE];
    d.encode(&mut buf);
    mem.write_slice(&buf, GuestAddress(DESC_PA)).expect("inside RAM");
    let after = DESC_PA + DESCRIPTOR_SIZE as u64;
    let n = rest.len().min(STATE_RAM - after as usize);
    mem.write_slice(&rest[..n], GuestAddress(after)).expect("inside RAM");
    let ctx = CpuContext::kernel(PhysAddr(d.kernel_cr3));
    let Ok(gs) = GuestState::read(&mem, Some(DESC_PA), &ctx) else { return };
    let _ = gs.untrustworthy();
    let _ = mmviews::buddyinfo(&gs).render();
    let _ = mmviews::extfrag(&gs).render();
    let _ = mmviews::slabinfo(&gs).render();
    let _ = mmviews::meminfo(&gs).render();
    let _ = mmviews::vmstat(&gs).render();
    if let Ok(r) = mmviews::pagetypeinfo(&gs) {
        let _ = r.render();
    }
    if let Ok(r) = mmviews::ps(&gs) {
        let _ = r.render();
    }
    let _ = gs.procs();
    let _ = gs.access_records();
    for b in &gs.blocks {
        assert!(b.end_pfn() >= b.pfn);
    }
}

/// A target's body: one input in, a panic on a bug.
pub type Body = fn(&[u8]);

/// The targets by name (the folder names under `fuzz/corpus/`), each with its body.
pub const TARGETS: &[(&str, Body)] =
    &[("kernel_elf", kernel_elf), ("snapshot", snapshot), ("gdb", gdb), ("ports", ports), ("guest_state", guest_state)];

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The seeds reach past the first checks: records, checkpoint names,
    /// and a virtio-blk read request completed through the used ring.
    #[test]
    fn ports_seeds_reach_the_devices() {
        let seed =
            |n: &str| std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ports").join(n)).unwrap();
        let s = super::ports_run(&seed("results-checkpoints-symbols"));
        assert_eq!((s.records, s.malformed, s.checkpoints), (2, 1, vec!["cow-shared".to_string()]));
        assert_eq!(super::ports_run(&seed("virtio-read-request")).used_idx, 1);
    }

    /// The kernel seed passes the checks, names its entry from its own
    /// symbol table and loads.
    #[test]
    fn kernel_seed_loads() {
        let b = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/kernel_elf/kernel-with-symbols"))
            .unwrap();
        let k = super::KernelImage::from_bytes(b, "seed".into()).unwrap();
        assert_eq!((k.entry, k.phys_end), (0x100000, 0x102000));
        assert!(k.symbols.describe(0x100004).starts_with("kmain"), "{}", k.symbols.describe(0x100004));
        let ram = super::GuestMemoryMmap::from_ranges(&[(super::GuestAddress(0), super::KERNEL_RAM as usize)]).unwrap();
        k.load(&ram, super::KERNEL_RAM).unwrap();
        let mut code = [0u8; 17];
        super::Bytes::read_slice(&ram, &mut code, super::GuestAddress(0x100000)).unwrap();
        assert_eq!(code[16], 0xf4);
    }

    /// The snapshot seed is one `vmm run --snapshot-at` would write (of a
    /// one-page guest): it opens. Rewrite it with
    /// `MMEMU_WRITE_SNAPSHOT_SEED=1 cargo test -p vmm --lib snapshot_seed`.
    #[test]
    fn snapshot_seed_opens() {
        let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/snapshot/one-page-guest");
        if std::env::var_os("MMEMU_WRITE_SNAPSHOT_SEED").is_some() {
            let core = super::tiny_core();
            let mem = super::GuestMemoryMmap::from_ranges(&[(super::GuestAddress(0), 4096)]).unwrap();
            let mut page = vec![0u8; 4096];
            super::Bytes::read_slice(&*core.mem, &mut page, super::GuestAddress(0x1000)).unwrap();
            super::Bytes::write_slice(&mem, &page, super::GuestAddress(0)).unwrap();
            let info = crate::snapshot::SnapshotInfo { checkpoint: "seed".into(), ..Default::default() };
            crate::snapshot::write(&seed, &mem, &core.vcpu.regs, &core.vcpu.sregs, &info).unwrap();
        }
        let core = crate::snapshot::CoreFile::open(&seed).unwrap();
        assert_eq!((core.meta.checkpoint.as_str(), core.vcpu.regs.rip), ("seed", 0x10000));
    }

    /// Every committed corpus file of every target goes through its body:
    /// the seeds and the reproducers of bugs fuzzing found stay fixed.
    #[test]
    fn corpus_replays() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, body) in super::TARGETS {
            let dir = root.join(name);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e} (every target keeps a seed corpus)", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "{} is empty", dir.display());
            for f in files {
                let data = std::fs::read(&f).unwrap();
                let r = std::panic::catch_unwind(|| body(&data));
                assert!(r.is_ok(), "{name}: corpus file {} fails", f.display());
            }
        }
        for e in std::fs::read_dir(&root).unwrap() {
            let n = e.unwrap().file_name().into_string().unwrap();
            assert!(super::TARGETS.iter().any(|(t, _)| *t == n), "corpus/{n} has no target");
        }
    }
}
