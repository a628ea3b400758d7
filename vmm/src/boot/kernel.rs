//! The kernel image: checking what a user hands us before loading it, and
//! loading it with linux-loader.

use crate::layout;
use crate::memory::human;
use crate::symbols::Symbols;
use linux_loader::loader::elf::Elf;
use linux_loader::loader::KernelLoader;
use object::Object;
use std::borrow::Cow;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// What the loader accepts, for error messages.
pub const ACCEPTED: &str = "an ELF64 x86-64 executable linked for physical addresses between 1 MiB and 1 GiB (a vmlinux-style kernel, optionally with a PVH note), such as the guest/ kernel this VMM embeds";

/// The largest kernel file read: a kernel loads into 1 MiB..1 GiB, and even
/// with full debug information a file past this is not one (`/dev/zero`,
/// a disk image) and is refused before it fills the host's memory.
pub const KERNEL_FILE_MAX: u64 = 512 << 20;

/// Problems with the kernel image.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The file could not be read.
    #[error("cannot read kernel file {path}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file, or too large to be a kernel.
    #[error("kernel file {path}: {detail}")]
    NotAKernelFile {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A format the loader does not take.
    #[error("{what}: {detail}; accepted: {ACCEPTED}")]
    Format {
        /// The image.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// Needs more RAM than the guest has.
    #[error("{what} needs RAM up to {end:#x} ({need}) but the guest has {have}; raise --mem")]
    TooBig {
        /// The image.
        what: String,
        /// Last byte + 1 the kernel occupies.
        end: u64,
        /// Human form of `end`.
        need: String,
        /// Human RAM size.
        have: String,
    },
    /// linux-loader failed.
    #[error("loading {what} into guest memory failed")]
    Load {
        /// The image.
        what: String,
        /// The loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
}

/// A kernel ELF, validated.
pub struct KernelImage {
    bytes: Cow<'static, [u8]>,
    /// Where it came from, for messages.
    pub name: String,
    /// The ELF entry point (64-bit).
    pub entry: u64,
    /// First byte past the highest loaded segment (physical).
    pub phys_end: u64,
    /// Its symbols.
    pub symbols: Symbols,
}

/// Where the kernel went and what it offers.
pub struct LoadedKernel {
    /// 64-bit entry (virtual address, reached through the boot tables).
    pub entry: u64,
}

impl KernelImage {
    /// The kernel built from guest/ and embedded in this binary.
    pub fn embedded() -> Result<Self, KernelError> {
        Self::parse(Cow::Borrowed(crate::EMBEDDED_GUEST), "the embedded guest kernel".into())
    }

    /// A kernel file.
    pub fn from_file(path: &Path) -> Result<Self, KernelError> {
        use std::io::Read;
        let read_err = |source| KernelError::Read { path: path.into(), source };
        let not = |detail: String| KernelError::NotAKernelFile { path: path.into(), detail };
        let f = std::fs::File::open(path).map_err(read_err)?;
        let meta = f.metadata().map_err(read_err)?;
        if !meta.is_file() {
            let what = if meta.is_dir() { "a directory" } else { "not a regular file (a device, pipe or socket)" };
            return Err(not(format!("{what}; give the path of a kernel ELF")));
        }
        if meta.len() > KERNEL_FILE_MAX {
            return Err(not(format!(
                "{} bytes, more than the {} a kernel file may have here",
                meta.len(),
                human(KERNEL_FILE_MAX)
            )));
        }
        // The limit again while reading: the file may grow meanwhile.
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        f.take(KERNEL_FILE_MAX + 1).read_to_end(&mut bytes).map_err(read_err)?;
        if bytes.len() as u64 > KERNEL_FILE_MAX {
            return Err(not(format!("grew past {} while being read", human(KERNEL_FILE_MAX))));
        }
        Self::parse(Cow::Owned(bytes), format!("kernel file {}", path.display()))
    }

    /// A kernel image already in memory (`name` says where it came from,
    /// for messages): the checks [`KernelImage::from_file`] makes after
    /// reading the file.
    pub fn from_bytes(bytes: Vec<u8>, name: String) -> Result<Self, KernelError> {
        Self::parse(Cow::Owned(bytes), name)
    }

    fn parse(bytes: Cow<'static, [u8]>, name: String) -> Result<Self, KernelError> {
        let fail = |detail: String| KernelError::Format { what: name.clone(), detail };
        let b: &[u8] = &bytes;
        if b.len() > 0x206 && &b[0x202..0x206] == b"HdrS" {
            return Err(fail(
                "this is a bzImage (Linux boot protocol); extract or build the vmlinux ELF instead".into(),
            ));
        }
        if b.starts_with(b"MZ") {
            return Err(fail("this is a PE/EFI image".into()));
        }
        if !b.starts_with(b"\x7fELF") {
            return Err(fail(if b.is_empty() {
                "the file is empty".into()
            } else {
                "not an ELF file (bad magic)".into()
            }));
        }
        if b.len() < 20 {
            return Err(fail("truncated ELF header".into()));
        }
        if b[4] != 2 {
            return Err(fail("a 32-bit ELF (ELFCLASS32)".into()));
        }
        if b[5] != 1 {
            return Err(fail("a big-endian ELF".into()));
        }
        let machine = u16::from_le_bytes([b[18], b[19]]);
        if machine != 62 {
            return Err(fail(format!("an ELF for {} (e_machine {machine}), not x86-64", machine_name(machine))));
        }
        let etype = u16::from_le_bytes([b[16], b[17]]);
        if etype != 2 {
            let kind = match etype {
                1 => "a relocatable object (ET_REL), not a linked executable",
                3 => "a shared object or PIE (ET_DYN), not a fixed-address executable",
                4 => "a core dump",
                _ => "not an executable ELF",
            };
            return Err(fail(kind.into()));
        }
        let file = object::File::parse(b).map_err(|e| fail(format!("malformed ELF: {e}")))?;
        let mut phys_end = 0u64;
        let mut any = false;
        let entry = file.entry();
        let mut entry_ok = false;
        if let object::File::Elf64(elf) = &file {
            use object::read::elf::ProgramHeader;
            let endian = elf.endian();
            for ph in elf.elf_program_headers() {
                if ph.p_type(endian) != object::elf::PT_LOAD || ph.p_memsz(endian) == 0 {
                    continue;
                }
                any = true;
                let (filesz, memsz, offset) = (ph.p_filesz(endian), ph.p_memsz(endian), ph.p_offset(endian));
                if filesz > memsz {
                    return Err(fail(format!(
                        "a segment has more bytes in the file ({filesz:#x}) than in memory ({memsz:#x}); loading it would write past its end"
                    )));
                }
                if offset.checked_add(filesz).is_none_or(|end| end > b.len() as u64) {
                    return Err(fail(format!(
                        "a segment's bytes ({filesz:#x} at file offset {offset:#x}) lie past the end of the file ({:#x} bytes): the file is truncated",
                        b.len()
                    )));
                }
                let vaddr = ph.p_vaddr(endian);
                if ph.p_flags(endian) & object::elf::PF_X != 0 && entry >= vaddr && entry - vaddr < memsz {
                    entry_ok = true;
                }
                let start = ph.p_paddr(endian);
                let end = start.checked_add(ph.p_memsz(endian)).ok_or_else(|| fail("a segment wraps around".into()))?;
                if start < layout::KERNEL_MIN || end > layout::BOOT_MAPPED {
                    return Err(fail(format!(
                        "a segment occupies physical {start:#x}-{end:#x}, outside 1 MiB..1 GiB where the boot page tables map it"
                    )));
                }
                phys_end = phys_end.max(end);
            }
        }
        if !any {
            return Err(fail("no loadable segment".into()));
        }
        if !entry_ok {
            return Err(fail(format!(
                "the entry point {entry:#x} is not inside any loaded executable segment (PT_LOAD with PF_X): the vCPU would start on data or nothing"
            )));
        }
        let symbols = match &bytes {
            Cow::Borrowed(b) => Symbols::from_static(b),
            Cow::Owned(b) => Symbols::from_elf(b),
        };
        Ok(KernelImage { bytes, name, entry, phys_end, symbols })
    }

    /// The raw ELF.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Copies the segments into guest memory with linux-loader.
    pub fn load(&self, mem: &GuestMemoryMmap, ram: u64) -> Result<LoadedKernel, KernelError> {
        let low = ram.min(layout::LOW_RAM_MAX);
        if self.phys_end > low {
            return Err(KernelError::TooBig {
                what: self.name.clone(),
                end: self.phys_end,
                need: human(self.phys_end.div_ceil(layout::MIB) * layout::MIB),
                have: human(ram),
            });
        }
        let mut cursor = Cursor::new(&self.bytes[..]);
        // Both boot paths enter the 64-bit ELF entry; a PVH note (QEMU's
        // way in) is not used here.
        Elf::load(mem, None, &mut cursor, Some(GuestAddress(layout::KERNEL_MIN)))
            .map_err(|source| KernelError::Load { what: self.name.clone(), source })?;
        Ok(LoadedKernel { entry: self.entry })
    }
}

/// A name for an ELF `e_machine` value.
pub(crate) fn machine_name(m: u16) -> &'static str {
    match m {
        3 => "i386",
        40 => "ARM",
        183 => "AArch64",
        243 => "RISC-V",
        8 => "MIPS",
        20 | 21 => "PowerPC",
        22 => "s390",
        _ => "another architecture",
    }
}
