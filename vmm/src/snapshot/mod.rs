//! Snapshots: guest RAM and the vCPU's state saved at a checkpoint as an
//! ELF core file, and read back for offline inspection.
//!
//! `vmm run --snapshot-at NAME=FILE` writes, while the vCPU is parked at
//! checkpoint NAME, a core file like Linux's vmcore: an `ET_CORE` ELF for
//! x86-64 with one `PT_LOAD` per guest RAM region (its `p_paddr` the
//! guest-physical base, its `p_vaddr` the region's direct-map address)
//! plus one more for the kernel image's mapping at `KERNEL_MAP` over the
//! same file bytes, so `gdb KERNEL FILE` reads kernel variables; a
//! `CORE`/`NT_PRSTATUS` note with the general registers (gdb's and
//! crash's source for a thread's registers); and `MMEMU` notes with what
//! only this VMM knows: the complete `kvm_regs` and `kvm_sregs` (CR3,
//! CR4, EFER, segments), the checkpoint, where the guest published its
//! descriptor and the descriptor's bytes, the CPU the walker modelled.
//! All-zero pages are never written: the file is sparse, so untouched RAM
//! costs no disk blocks (check with `du`).
//!
//! `vmm inspect FILE` ([`offline`]) maps the file back as guest memory
//! (vm-memory's `GuestMemoryMmap` over a private mapping of each region's
//! bytes) and gives the inspector a [`CoreVcpu`] holding the saved
//! registers, so every view and check runs as it does live, without KVM.

pub mod elf;
pub mod gdbcore;
pub mod offline;

use crate::inspect::checkpoint::{ParkHook, ParkVerdict};
use crate::inspect::GuestLink;
use crate::kvm::Vcpu;
use crate::memory::GuestMem;
use elf::{Phdr, PF_RWX, PT_LOAD, PT_NOTE};
use kvm_bindings::{kvm_fpu, kvm_guest_debug, kvm_mp_state, kvm_regs, kvm_sregs, kvm_translation};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};
use zerocopy::{FromBytes, IntoBytes};

/// The owner of this VMM's notes.
pub const NOTE_OWNER: &str = "MMEMU";
/// `MMEMU` note: the [`Meta`] as JSON.
pub const NT_MMEMU_META: u32 = 0x4d4d_0001;
/// `MMEMU` note: KVM's `kvm_regs`, as KVM lays it out.
pub const NT_MMEMU_REGS: u32 = 0x4d4d_0002;
/// `MMEMU` note: KVM's `kvm_sregs`.
pub const NT_MMEMU_SREGS: u32 = 0x4d4d_0003;
/// The version of [`Meta`] this VMM writes and reads.
pub const FORMAT: u32 = 1;
/// Region data starts at page boundaries (a mapping's file offset must).
const PAGE: u64 = 4096;
/// How much guest RAM is copied and scanned for zero pages at a time.
const CHUNK: usize = 1 << 20;
/// Notes larger than this are not ours (a hostile file cannot make the
/// reader allocate more).
const MAX_NOTES: u64 = 1 << 20;
/// More program headers than this are not ours.
const MAX_PHDRS: u16 = 256;

/// Errors writing or reading a snapshot file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file cannot be created, opened, written or read.
    #[error("cannot {what} {}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not an ELF file at all.
    #[error("{} is not an ELF file (no \\x7fELF magic): give a file written by `vmm run --snapshot-at NAME=FILE`", .0.display())]
    NotElf(PathBuf),
    /// An ELF file, but not a 64-bit little-endian core file.
    #[error("{} is an ELF file but not a 64-bit little-endian core file ({what}): give a file written by `vmm run --snapshot-at`", .path.display())]
    NotCore {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A core file of another machine.
    #[error("{} is a core file for ELF machine {machine}, not x86-64 (62): it is not a snapshot of this VMM's guest", .path.display())]
    WrongMachine {
        /// The file.
        path: PathBuf,
        /// Its `e_machine`.
        machine: u16,
    },
    /// Shorter than its headers say.
    #[error("{} is truncated: its {what} need {need} bytes but the file has {len}; the copy is incomplete, copy or write it again", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What lies beyond the end.
        what: String,
        /// Bytes needed.
        need: u64,
        /// Bytes present.
        len: u64,
    },
    /// A core file, but not written by this VMM (no `MMEMU` notes) or
    /// with notes this version does not understand.
    #[error("{} is a core file but not an mmemu snapshot: {why}", .path.display())]
    NotOurs {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        why: String,
    },
    /// Mapping a region of the file as guest memory failed.
    #[error("cannot map the guest RAM saved in {}", .path.display())]
    Map {
        /// The file.
        path: PathBuf,
        /// What vm-memory said.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The vCPU's registers could not be read at the checkpoint.
    #[error("cannot read the vCPU's registers for the snapshot at checkpoint '{checkpoint}': {source}")]
    Registers {
        /// The checkpoint.
        checkpoint: String,
        /// The ioctl error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `--snapshot-at` without `NAME=FILE`.
    #[error("--snapshot-at '{0}': write NAME=FILE (a checkpoint name and the core file to write there)")]
    BadSpec(String),
}

/// One region of guest RAM in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRegion {
    /// Guest-physical base.
    pub gpa: u64,
    /// Bytes.
    pub size: u64,
    /// Where its bytes start in the file.
    pub offset: u64,
}

/// What the `MMEMU` meta note says (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// [`FORMAT`].
    pub format: u32,
    /// The VMM that wrote it (`--version`'s string).
    pub vmm: String,
    /// The checkpoint the snapshot was taken at.
    pub checkpoint: String,
    /// Guest RAM, region by region.
    pub regions: Vec<SavedRegion>,
    /// Where the guest published its memory-manager descriptor, if it had.
    pub descriptor_pa: Option<u64>,
    /// The descriptor's bytes at the time (hex), for tools that read the
    /// note alone; `vmm inspect` reads it from the saved RAM as live.
    pub descriptor: Option<String>,
    /// The kernel booted (`--kernel`), none for the embedded guest.
    pub kernel: Option<PathBuf>,
    /// Booted through the firmware (its symbols are merged).
    pub firmware: bool,
    /// The physical-address width the walker modelled.
    pub maxphyaddr: u8,
    /// The CPU vendor whose reserved bits the walker applied.
    pub vendor: String,
}

/// What the writer is told besides memory and registers.
#[derive(Debug, Clone, Default)]
pub struct SnapshotInfo {
    /// The checkpoint's name.
    pub checkpoint: String,
    /// Where the guest's descriptor is.
    pub descriptor_pa: Option<u64>,
    /// `--kernel`.
    pub kernel: Option<PathBuf>,
    /// `--boot firmware`.
    pub firmware: bool,
    /// With several vCPUs: the index of the one whose registers are
    /// written (the one at the checkpoint; 0 otherwise).
    pub vcpu: usize,
    /// Every other vCPU's index and registers (parked: the world is
    /// stopped), each written as one more `NT_PRSTATUS` (gdb shows a thread
    /// per vCPU).
    pub other_vcpus: Vec<(usize, kvm_regs, kvm_sregs)>,
}

/// What writing cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// The file's length (apparent size).
    pub file_len: u64,
    /// Guest RAM in the file.
    pub ram: u64,
    /// RAM bytes actually written (non-zero pages); the rest are holes.
    pub written: u64,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { what, path: path.into(), source }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `kvm_regs` in `struct user_regs_struct`'s order (NT_PRSTATUS).
fn user_regs(r: &kvm_regs, s: &kvm_sregs) -> [u64; 27] {
    [
        r.r15,
        r.r14,
        r.r13,
        r.r12,
        r.rbp,
        r.rbx,
        r.r11,
        r.r10,
        r.r9,
        r.r8,
        r.rax,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        u64::MAX, // orig_rax: not in a system call
        r.rip,
        s.cs.selector.into(),
        r.rflags,
        r.rsp,
        s.ss.selector.into(),
        s.fs.base,
        s.gs.base,
        s.ds.selector.into(),
        s.es.selector.into(),
        s.fs.selector.into(),
        s.gs.selector.into(),
    ]
}

/// Whether a page (or any run of bytes) is all zero.
fn is_zero(b: &[u8]) -> bool {
    // OR-folding 64-byte blocks vectorises; the early exit keeps a
    // non-zero page cheap.
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Loads at most this many vmalloc runs go into a core file's header.
const VMALLOC_RUNS_MAX: usize = 4096;

/// The vmalloc window's mappings under the vCPU's root, as runs of pages
/// contiguous both virtually and physically (va, pa, bytes), each wholly
/// inside one RAM region: gdb reads a kernel stack there from the core
/// file as from the live guest (Linux's vmcore leaves vmalloc space to
/// crash's own page-table walk; gdb has none). Bounded: a hostile guest's
/// tables cost at most the walk's budget and [`VMALLOC_RUNS_MAX`] loads.
fn vmalloc_runs(mem: &GuestMemoryMmap, regs: &kvm_regs, sregs: &kvm_sregs) -> Vec<(u64, u64, u64)> {
    use mm_core::abi::layout::{VMALLOC_END, VMALLOC_START};
    let crate::inspect::AddressMode::Paged(ctx) = crate::inspect::address_mode(regs, sregs) else {
        return Vec::new();
    };
    let in_one_region =
        |pa: u64, size: u64| mem.iter().any(|r| r.start_addr().0 <= pa && pa + size <= r.start_addr().0 + r.len());
    let phys = crate::inspect::GuestPhys(mem);
    let mut runs: Vec<(u64, u64, u64)> = Vec::new();
    for m in mm_core::paging::mapper::mappings(&phys, &ctx).budget(crate::inspect::views::DEFAULT_BUDGET).flatten() {
        let (va, pa, size) = (m.va.0, m.pa.0, m.size.bytes());
        if !(VMALLOC_START..VMALLOC_END).contains(&va) {
            continue;
        }
        if let Some(last) = runs.last_mut() {
            if last.0 + last.2 == va && last.1 + last.2 == pa && in_one_region(last.1, last.2 + size) {
                last.2 += size;
                continue;
            }
        }
        if runs.len() == VMALLOC_RUNS_MAX {
            break;
        }
        if in_one_region(pa, size) {
            runs.push((va, pa, size));
        }
    }
    runs
}

/// Writes a snapshot of `mem` and the vCPU's registers to `path`.
pub fn write(
    path: &Path,
    mem: &GuestMemoryMmap,
    regs: &kvm_regs,
    sregs: &kvm_sregs,
    info: &SnapshotInfo,
) -> Result<WriteStats, SnapshotError> {
    let ranges: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
    let descriptor = info.descriptor_pa.and_then(|pa| {
        let mut b = vec![0u8; mm_core::descriptor::DESCRIPTOR_SIZE];
        mem.read_slice(&mut b, GuestAddress(pa)).ok().map(|_| hex(&b))
    });
    let (maxphyaddr, _, vendor) = crate::inspect::host_paging();
    let mut meta = Meta {
        format: FORMAT,
        vmm: env!("MMEMU_VERSION").to_string(),
        checkpoint: info.checkpoint.clone(),
        regions: Vec::new(),
        descriptor_pa: info.descriptor_pa,
        descriptor,
        kernel: info.kernel.clone(),
        firmware: info.firmware,
        maxphyaddr,
        vendor: format!("{vendor:?}"),
    };
    // The notes' size depends on the offsets in the meta note: lay the
    // data out after the longest the notes can be (every offset at its
    // widest), then fill the real offsets in.
    let kernel_alias = ranges.iter().any(|&(gpa, _)| gpa == 0);
    let vmalloc = vmalloc_runs(mem, regs, sregs);
    let phnum = 1 + ranges.len() + usize::from(kernel_alias) + vmalloc.len();
    let build_notes = |meta: &Meta| -> Vec<u8> {
        let mut n = Vec::new();
        // Thread ids are vCPU index + 1, as the live gdb stub numbers them.
        let tid = |i: usize| u32::try_from(i + 1).unwrap_or(u32::MAX);
        elf::note(&mut n, "CORE", elf::NT_PRSTATUS, &elf::prstatus(tid(info.vcpu), &user_regs(regs, sregs)));
        for (i, r, s) in &info.other_vcpus {
            elf::note(&mut n, "CORE", elf::NT_PRSTATUS, &elf::prstatus(tid(*i), &user_regs(r, s)));
        }
        elf::note(&mut n, NOTE_OWNER, NT_MMEMU_META, serde_json::to_string(meta).unwrap_or_default().as_bytes());
        elf::note(&mut n, NOTE_OWNER, NT_MMEMU_REGS, regs.as_bytes());
        elf::note(&mut n, NOTE_OWNER, NT_MMEMU_SREGS, sregs.as_bytes());
        n
    };
    let notes_at = (elf::EHDR_SIZE + phnum * elf::PHDR_SIZE) as u64;
    meta.regions = ranges.iter().map(|&(gpa, size)| SavedRegion { gpa, size, offset: u64::MAX }).collect();
    let mut off = (notes_at + build_notes(&meta).len() as u64).div_ceil(PAGE) * PAGE;
    for r in &mut meta.regions {
        r.offset = off;
        off += r.size.div_ceil(PAGE) * PAGE;
    }
    let notes = build_notes(&meta);
    let total = meta.regions.last().map_or(notes_at + notes.len() as u64, |r| r.offset + r.size);

    let mut head = elf::ehdr(phnum as u16);
    Phdr { kind: PT_NOTE, offset: notes_at, filesz: notes.len() as u64, align: 4, ..Default::default() }
        .encode(&mut head);
    let load = |r: &SavedRegion, vaddr: u64, size: u64| Phdr {
        kind: PT_LOAD,
        flags: PF_RWX,
        offset: r.offset,
        vaddr,
        paddr: r.gpa,
        filesz: size,
        memsz: size,
        align: PAGE,
    };
    for r in &meta.regions {
        // RAM below the direct map's end is reached there, as in a vmcore.
        load(r, mm_core::abi::layout::PAGE_OFFSET + r.gpa, r.size).encode(&mut head);
    }
    if let Some(r) = meta.regions.iter().find(|r| r.gpa == 0) {
        // The kernel image's own mapping (KERNEL_MAP + physical, the first
        // GiB), over the same file bytes: where gdb finds its variables.
        load(r, mm_core::abi::layout::KERNEL_MAP, r.size.min(1 << 30)).encode(&mut head);
    }
    // The vmalloc window's mapped pages (kernel stacks live there): each
    // run at its virtual address over the file bytes of its frames.
    for &(va, pa, size) in &vmalloc {
        if let Some(r) = meta.regions.iter().find(|r| r.gpa <= pa && pa + size <= r.gpa + r.size) {
            Phdr { offset: r.offset + (pa - r.gpa), paddr: pa, ..load(r, va, size) }.encode(&mut head);
        }
    }
    head.extend_from_slice(&notes);

    let file = File::create(path).map_err(io("create", path))?;
    file.write_all_at(&head, 0).map_err(io("write", path))?;
    let mut written = 0u64;
    let mut buf = vec![0u8; CHUNK];
    // Pages the host never backed are zero without reading them: the
    // VMM's own page map says which (a guest that touched 2 MiB of 1 GiB
    // costs a 2 MiB map read, not a 1 GiB scan). Without it, every page
    // is read and tested.
    let pagemap = File::open("/proc/self/pagemap").ok();
    let mut entries = vec![0u8; CHUNK / PAGE as usize * 8];
    for r in &meta.regions {
        let mut done = 0u64;
        while done < r.size {
            let n = (r.size - done).min(CHUNK as u64) as usize;
            let gpa = r.gpa + done;
            if let (Some(pm), Ok(hva)) = (&pagemap, mem.get_host_address(GuestAddress(gpa))) {
                let e = &mut entries[..n.div_ceil(PAGE as usize) * 8];
                let untouched = pm.read_exact_at(e, hva as u64 / PAGE * 8).is_ok()
                    // Bit 63 present, bit 62 swapped: neither means never backed.
                    && e.chunks(8).all(|x| x[7] & 0xc0 == 0);
                if untouched {
                    done += n as u64;
                    continue;
                }
            }
            mem.read_slice(&mut buf[..n], GuestAddress(gpa)).map_err(|e| SnapshotError::Io {
                what: "read guest RAM for",
                path: path.into(),
                source: std::io::Error::other(e),
            })?;
            // Runs of non-zero pages are written; zero pages stay holes.
            let mut run: Option<usize> = None;
            for (i, page) in buf[..n].chunks(PAGE as usize).enumerate() {
                let at = i * PAGE as usize;
                match (is_zero(page), run) {
                    (false, None) => run = Some(at),
                    (true, Some(s)) => {
                        file.write_all_at(&buf[s..at], r.offset + done + s as u64).map_err(io("write", path))?;
                        written += (at - s) as u64;
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = run {
                file.write_all_at(&buf[s..n], r.offset + done + s as u64).map_err(io("write", path))?;
                written += (n - s) as u64;
            }
            done += n as u64;
        }
    }
    file.set_len(total).map_err(io("set the length of", path))?;
    Ok(WriteStats { file_len: total, ram: ranges.iter().map(|r| r.1).sum(), written })
}

/// A snapshot file, opened: guest RAM mapped from it and the saved vCPU.
pub struct CoreFile {
    /// Guest RAM (a private mapping of the file: nothing writes it back).
    pub mem: GuestMem,
    /// The vCPU as saved.
    pub vcpu: CoreVcpu,
    /// The `MMEMU` meta note.
    pub meta: Meta,
}

impl CoreFile {
    /// Opens and checks `path`; every way a file can be wrong is a typed
    /// error, never a panic or a mapping past the file's end.
    pub fn open(path: &Path) -> Result<CoreFile, SnapshotError> {
        let file = File::open(path).map_err(io("open", path))?;
        let len = file.metadata().map_err(io("read the size of", path))?.len();
        let read = |at: u64, n: usize, what: &str| -> Result<Vec<u8>, SnapshotError> {
            let end = at.saturating_add(n as u64);
            if end > len {
                return Err(SnapshotError::Truncated { path: path.into(), what: what.into(), need: end, len });
            }
            let mut b = vec![0u8; n];
            file.read_exact_at(&mut b, at).map_err(io("read", path))?;
            Ok(b)
        };
        if len < 4 || read(0, 4, "ELF magic")? != elf::ELFMAG {
            return Err(SnapshotError::NotElf(path.into()));
        }
        let h = read(0, elf::EHDR_SIZE, "ELF header")?;
        let not_core = |what: String| SnapshotError::NotCore { path: path.into(), what };
        if h[4] != elf::ELFCLASS64 || h[5] != elf::ELFDATA2LSB {
            return Err(not_core(format!("class {} data {}", h[4], h[5])));
        }
        let e_type = elf::u16_at(&h, 16);
        if e_type != elf::ET_CORE {
            return Err(not_core(format!("e_type {e_type}, a core file has 4")));
        }
        let machine = elf::u16_at(&h, 18);
        if machine != elf::EM_X86_64 {
            return Err(SnapshotError::WrongMachine { path: path.into(), machine });
        }
        let (phoff, phentsize, phnum) = (elf::u64_at(&h, 32), elf::u16_at(&h, 54), elf::u16_at(&h, 56));
        let not_ours = |why: String| SnapshotError::NotOurs { path: path.into(), why };
        if phentsize as usize != elf::PHDR_SIZE || phnum == 0 || phnum > MAX_PHDRS {
            return Err(not_ours(format!("{phnum} program headers of {phentsize} bytes")));
        }
        let ph = read(phoff, phnum as usize * elf::PHDR_SIZE, "program headers")?;
        let phdrs: Vec<Phdr> = ph.chunks(elf::PHDR_SIZE).map(Phdr::decode).collect();
        let note_ph = phdrs.iter().find(|p| p.kind == PT_NOTE).ok_or_else(|| not_ours("no note segment".into()))?;
        if note_ph.filesz > MAX_NOTES {
            return Err(not_ours(format!("a note segment of {} bytes", note_ph.filesz)));
        }
        let nb = read(note_ph.offset, note_ph.filesz as usize, "notes")?;
        let notes = elf::notes(&nb).ok_or_else(|| not_ours("its note segment is malformed".into()))?;
        let ours = |kind: u32| notes.iter().find(|n| n.name == NOTE_OWNER.as_bytes() && n.kind == kind);
        let meta_note = ours(NT_MMEMU_META)
            .ok_or_else(|| not_ours("it has no MMEMU notes (it was not written by `vmm run --snapshot-at`)".into()))?;
        let meta: Meta = serde_json::from_slice(meta_note.desc)
            .map_err(|e| not_ours(format!("its MMEMU meta note does not parse ({e})")))?;
        if meta.format != FORMAT {
            return Err(not_ours(format!(
                "format {} (this VMM reads format {FORMAT}); inspect it with the VMM that wrote it ({})",
                meta.format, meta.vmm
            )));
        }
        let regs = ours(NT_MMEMU_REGS)
            .and_then(|n| kvm_regs::read_from_bytes(n.desc).ok())
            .ok_or_else(|| not_ours("its kvm_regs note is missing or of the wrong size".into()))?;
        let sregs = ours(NT_MMEMU_SREGS)
            .and_then(|n| kvm_sregs::read_from_bytes(n.desc).ok())
            .ok_or_else(|| not_ours("its kvm_sregs note is missing or of the wrong size".into()))?;
        let mut regions = Vec::new();
        let mut prev_end = 0u64;
        for r in &meta.regions {
            let bad = |why: &str| not_ours(format!("RAM region at {:#x} ({} bytes): {why}", r.gpa, r.size));
            if r.size == 0 || r.size % PAGE != 0 || r.offset % PAGE != 0 || r.gpa % PAGE != 0 {
                return Err(bad("not page-aligned"));
            }
            if r.gpa < prev_end || r.gpa.checked_add(r.size).is_none() {
                return Err(bad("overlaps the one before or wraps"));
            }
            prev_end = r.gpa + r.size;
            let end = r.offset.checked_add(r.size).ok_or_else(|| bad("its file offset wraps"))?;
            if end > len {
                return Err(SnapshotError::Truncated {
                    path: path.into(),
                    what: format!("RAM at guest-physical {:#x}", r.gpa),
                    need: end,
                    len,
                });
            }
            let size = usize::try_from(r.size).map_err(|_| bad("larger than this host's address space"))?;
            let fd = file.try_clone().map_err(io("open", path))?;
            // A private, read-write mapping of a read-only file: views that
            // set bits as they go (none should) change this process's copy,
            // never the file.
            let region: MmapRegion = vm_memory::mmap::MmapRegionBuilder::new(size)
                .with_file_offset(FileOffset::new(fd, r.offset))
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
                .build()
                .map_err(|source| SnapshotError::Map { path: path.into(), source })?;
            regions.push(GuestRegionMmap::new(region, GuestAddress(r.gpa)).ok_or_else(|| bad("does not fit"))?);
        }
        if regions.is_empty() {
            return Err(not_ours("it saves no RAM".into()));
        }
        let mem = GuestMemoryMmap::from_regions(regions).map_err(|e| not_ours(format!("its RAM regions: {e}")))?;
        Ok(CoreFile { mem: Arc::new(mem), vcpu: CoreVcpu { regs, sregs }, meta })
    }
}

/// A vCPU as saved in a snapshot: its registers read back; everything
/// that would change it or ask KVM is refused (`EROFS`: the file is a
/// record, there is no vCPU to change).
#[derive(Debug, Clone, Copy)]
pub struct CoreVcpu {
    /// The general registers.
    pub regs: kvm_regs,
    /// The special registers.
    pub sregs: kvm_sregs,
}

fn refused<T>() -> Result<T, kvm_ioctls::Error> {
    Err(kvm_ioctls::Error::new(libc::EROFS))
}

impl Vcpu for CoreVcpu {
    fn get_regs(&self) -> Result<kvm_regs, kvm_ioctls::Error> {
        Ok(self.regs)
    }
    fn set_regs(&self, _: &kvm_regs) -> Result<(), kvm_ioctls::Error> {
        refused()
    }
    fn get_sregs(&self) -> Result<kvm_sregs, kvm_ioctls::Error> {
        Ok(self.sregs)
    }
    fn set_sregs(&self, _: &kvm_sregs) -> Result<(), kvm_ioctls::Error> {
        refused()
    }
    fn get_fpu(&self) -> Result<kvm_fpu, kvm_ioctls::Error> {
        refused()
    }
    fn set_fpu(&self, _: &kvm_fpu) -> Result<(), kvm_ioctls::Error> {
        refused()
    }
    fn translate_gva(&self, _: u64) -> Result<kvm_translation, kvm_ioctls::Error> {
        refused()
    }
    fn set_guest_debug(&self, _: &kvm_guest_debug) -> Result<(), kvm_ioctls::Error> {
        refused()
    }
    fn get_mp_state(&self) -> Result<kvm_mp_state, kvm_ioctls::Error> {
        refused()
    }
}

/// Parses `--snapshot-at NAME=FILE`.
pub fn parse_spec(s: &str) -> Result<(String, PathBuf), SnapshotError> {
    match s.split_once('=') {
        Some((n, f)) if !n.is_empty() && !f.is_empty() => Ok((n.to_string(), PathBuf::from(f))),
        _ => Err(SnapshotError::BadSpec(s.to_string())),
    }
}

/// What the snapshot hook did, for the VM to report after the run.
#[derive(Debug, Default)]
pub struct SnapshotLog {
    /// The write that failed (it stopped the run).
    pub error: Option<SnapshotError>,
    /// The checkpoints snapshotted.
    pub written: Vec<String>,
}

/// The park hook behind `--snapshot-at`: at the first time the guest
/// reaches each named checkpoint, writes the file.
pub struct SnapshotHook {
    mem: GuestMem,
    link: GuestLink,
    wanted: Vec<(String, PathBuf)>,
    info: SnapshotInfo,
    log: Arc<Mutex<SnapshotLog>>,
}

impl SnapshotHook {
    /// A hook writing `wanted` (checkpoint, file) pairs.
    pub fn new(mem: GuestMem, link: GuestLink, wanted: Vec<(String, PathBuf)>, info: SnapshotInfo) -> Self {
        SnapshotHook { mem, link, wanted, info, log: Arc::default() }
    }

    /// The checkpoints it snapshots.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.wanted.iter().map(|(n, _)| n.clone()).collect();
        v.dedup();
        v
    }

    /// What it did, readable after the run.
    pub fn log(&self) -> Arc<Mutex<SnapshotLog>> {
        self.log.clone()
    }

    fn snapshot(&self, name: &str, path: &Path, vcpu: &dyn Vcpu) -> Result<WriteStats, SnapshotError> {
        let reg_err = |source| SnapshotError::Registers { checkpoint: name.into(), source };
        let regs = vcpu.get_regs().map_err(reg_err)?;
        let sregs = vcpu.get_sregs().map_err(reg_err)?;
        // The other vCPUs are parked (stop the world): their registers too.
        let current = self.link.vcpus.current();
        let other_vcpus = self
            .link
            .vcpus
            .states()
            .into_iter()
            .filter(|(i, _)| *i != current)
            .filter_map(|(i, st)| st.map(|(r, s, _)| (i, r, s)))
            .collect();
        let info = SnapshotInfo {
            checkpoint: name.into(),
            descriptor_pa: self.link.descriptor.get(),
            vcpu: if self.link.vcpus.is_empty() { 0 } else { current },
            other_vcpus,
            ..self.info.clone()
        };
        write(path, &self.mem, &regs, &sregs, &info)
    }
}

impl ParkHook for SnapshotHook {
    fn checkpoint(&mut self, name: &str, vcpu: &dyn Vcpu) -> ParkVerdict {
        let Ok(mut log) = self.log.lock() else { return ParkVerdict::Resume };
        let todo: Vec<PathBuf> = self
            .wanted
            .iter()
            .filter(|(n, _)| n == name && !log.written.iter().any(|w| w == name))
            .map(|(_, p)| p.clone())
            .collect();
        for path in todo {
            let t = std::time::Instant::now();
            match self.snapshot(name, &path, vcpu) {
                Ok(s) => eprintln!(
                    "vmm: snapshot at checkpoint '{}': {} ({} MiB of RAM, {} KiB of it non-zero and written, in {:.3} s)",
                    crate::devices::results::escape(name),
                    path.display(),
                    s.ram >> 20,
                    s.written >> 10,
                    t.elapsed().as_secs_f64()
                ),
                Err(e) => {
                    log.error = Some(e);
                    return ParkVerdict::Stop;
                }
            }
        }
        if self.wanted.iter().any(|(n, _)| n == name) {
            log.written.push(name.to_string());
        }
        ParkVerdict::Resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_sparse_and_exact() {
        let mem =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20), (GuestAddress(1 << 32), 1 << 20)]).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x1234)).unwrap();
        mem.write_slice(b"world", GuestAddress((1 << 32) + 0x5000)).unwrap();
        let regs = kvm_regs { rip: 0xffff_ffff_8020_0000, rsp: 0x1000, rax: 7, ..Default::default() };
        let mut sregs = kvm_sregs { cr3: 0x9000, cr4: 0x20, efer: 0xd00, ..Default::default() };
        sregs.cs.selector = 8;
        let dir = std::env::temp_dir().join(format!("mmemu-snap-unit-{}", std::process::id()));
        let info = SnapshotInfo { checkpoint: "ready".into(), ..Default::default() };
        let s = write(&dir, &mem, &regs, &sregs, &info).unwrap();
        assert_eq!(s.written, 2 * PAGE);
        assert_eq!(s.ram, 5 << 20);
        let c = CoreFile::open(&dir).unwrap();
        assert_eq!(c.meta.checkpoint, "ready");
        assert_eq!((c.vcpu.regs, c.vcpu.sregs), (regs, sregs));
        let mut b = [0u8; 5];
        c.mem.read_slice(&mut b, GuestAddress(0x1234)).unwrap();
        assert_eq!(&b, b"hello");
        c.mem.read_slice(&mut b, GuestAddress((1 << 32) + 0x5000)).unwrap();
        assert_eq!(&b, b"world");
        // Truncated: every region must lie in the file.
        let f = std::fs::OpenOptions::new().write(true).open(&dir).unwrap();
        f.set_len(s.file_len - 1).unwrap();
        assert!(matches!(CoreFile::open(&dir), Err(SnapshotError::Truncated { .. })), "truncated");
        std::fs::write(&dir, b"not an elf").unwrap();
        assert!(matches!(CoreFile::open(&dir), Err(SnapshotError::NotElf(_))));
        let _ = std::fs::remove_file(&dir);
    }
}
