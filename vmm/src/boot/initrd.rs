//! The initial RAM disk: a cpio "newc" archive (what Linux's initramfs
//! takes) read from a file, packed from a host directory, or packed around
//! one static program as `/init` (`vmm run -- PROG`); loaded into guest
//! RAM after the kernel image and handed over as PVH module 0
//! (`mm_core::abi::boot::HvmModlistEntry`).

use super::{write_bytes, write_obj, BootError};
use crate::layout;
use crate::memory::human;
use linux_loader::loader::elf::start_info::hvm_modlist_entry;
use mm_core::abi::boot::{HvmModlistEntry, HvmStartInfo, INITRD_MAX_END};
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The largest initrd accepted: it must fit below
/// [`INITRD_MAX_END`] beside the kernel.
pub const INITRD_MAX: u64 = 192 << 20;

/// Problems with the initrd or the program to run.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a cpio newc archive.
    #[error("{path} is not a cpio \"newc\" archive (it does not start with 070701); give a directory to pack, or make one with `find . | cpio -o -H newc`")]
    NotNewc {
        /// The path.
        path: PathBuf,
    },
    /// Too big.
    #[error("the initrd is {size} bytes; at most {max} fit below the kernel's boot-time direct map", max = human(INITRD_MAX))]
    TooBig {
        /// Its size.
        size: u64,
    },
    /// The guest's RAM is too small for it.
    #[error("the initrd ({size}) does not fit in guest RAM after the kernel (RAM {ram}); raise --mem")]
    NoRoom {
        /// Human size of the initrd.
        size: String,
        /// Human RAM size.
        ram: String,
    },
    /// The program cannot run in the guest.
    #[error("{path}: {why}")]
    Program {
        /// The program.
        path: PathBuf,
        /// What is wrong and what is needed.
        why: String,
    },
    /// An argument cannot go on the kernel command line.
    #[error(
        "argument {arg:?} contains a double quote or a control character, which the kernel command line cannot carry"
    )]
    BadArgument {
        /// The argument.
        arg: String,
    },
}

/// An initrd image (a cpio newc archive).
#[derive(Clone)]
pub struct Initrd {
    /// The archive's bytes.
    pub bytes: Vec<u8>,
    /// Where it came from, for messages.
    pub name: String,
}

impl std::fmt::Debug for Initrd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Initrd({}, {} bytes)", self.name, self.bytes.len())
    }
}

/// Appends one newc entry.
fn newc_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let fields = [ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The archive's end.
fn newc_trailer(out: &mut Vec<u8>) {
    newc_entry(out, 0, "TRAILER!!!", 0, &[]);
}

fn read(path: &Path) -> Result<Vec<u8>, InitrdError> {
    std::fs::read(path).map_err(|source| InitrdError::Read { path: path.into(), source })
}

fn check_size(bytes: Vec<u8>, name: String) -> Result<Initrd, InitrdError> {
    if bytes.len() as u64 > INITRD_MAX {
        return Err(InitrdError::TooBig { size: bytes.len() as u64 });
    }
    Ok(Initrd { bytes, name })
}

impl Initrd {
    /// `--initrd PATH`: a newc archive, or a directory packed into one
    /// (regular files, directories and symbolic links; owners become root).
    pub fn from_path(path: &Path) -> Result<Initrd, InitrdError> {
        let meta = std::fs::metadata(path).map_err(|source| InitrdError::Read { path: path.into(), source })?;
        if meta.is_dir() {
            let mut out = Vec::new();
            let mut ino = 1;
            pack_dir(path, "", &mut out, &mut ino)?;
            newc_trailer(&mut out);
            return check_size(out, format!("directory {}", path.display()));
        }
        let bytes = read(path)?;
        if !bytes.starts_with(b"070701") {
            return Err(InitrdError::NotNewc { path: path.into() });
        }
        check_size(bytes, format!("archive {}", path.display()))
    }

    /// `vmm run -- PROG`: PROG (a static x86-64 ELF, checked here) as
    /// `/init`.
    pub fn for_program(prog: &Path) -> Result<Initrd, InitrdError> {
        let bytes = read(prog)?;
        check_static_x86_64(&bytes).map_err(|why| InitrdError::Program { path: prog.into(), why })?;
        let mut out = Vec::with_capacity(bytes.len() + 512);
        newc_entry(&mut out, 1, "init", 0o100_755, &bytes);
        newc_trailer(&mut out);
        check_size(out, format!("{} as /init", prog.display()))
    }

    /// Copies the archive into guest RAM (page-aligned, after the kernel
    /// image ending at `kernel_end`) and points the start info's module
    /// list at it. Call after `write_start_info`.
    pub fn load(&self, mem: &GuestMemoryMmap, kernel_end: u64, ram: u64) -> Result<(), BootError> {
        let size = self.bytes.len() as u64;
        let start = kernel_end.div_ceil(2 * layout::MIB) * (2 * layout::MIB);
        let end = start + size;
        if end > ram.min(layout::LOW_RAM_MAX) || end > INITRD_MAX_END {
            return Err(BootError::Initrd(InitrdError::NoRoom { size: human(size), ram: human(ram) }));
        }
        write_bytes(mem, start, &self.bytes)?;
        // linux-loader's binding of the ABI's `HvmModlistEntry` (same layout).
        const _: () = assert!(std::mem::size_of::<hvm_modlist_entry>() == std::mem::size_of::<HvmModlistEntry>());
        write_obj(mem, layout::MODLIST, hvm_modlist_entry { paddr: start, size, cmdline_paddr: 0, reserved: 0 })?;
        let at = |field: usize| layout::START_INFO + field as u64;
        write_obj(mem, at(std::mem::offset_of!(HvmStartInfo, nr_modules)), 1u32)?;
        write_obj(mem, at(std::mem::offset_of!(HvmStartInfo, modlist_paddr)), layout::MODLIST)?;
        debug_assert_eq!(mem.read_obj::<u32>(GuestAddress(at(12))).ok(), Some(1));
        Ok(())
    }
}

fn pack_dir(dir: &Path, prefix: &str, out: &mut Vec<u8>, ino: &mut u32) -> Result<(), InitrdError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| InitrdError::Read { path: dir.into(), source };
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(err)?.collect::<Result<_, _>>().map_err(err)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let meta =
            std::fs::symlink_metadata(&path).map_err(|source| InitrdError::Read { path: path.clone(), source })?;
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        let perm = meta.permissions().mode() & 0o7777;
        *ino += 1;
        if meta.is_dir() {
            newc_entry(out, *ino, &name, 0o040_000 | perm, &[]);
            pack_dir(&path, &format!("{name}/"), out, ino)?;
        } else if meta.file_type().is_symlink() {
            let target =
                std::fs::read_link(&path).map_err(|source| InitrdError::Read { path: path.clone(), source })?;
            newc_entry(out, *ino, &name, 0o120_777, target.to_string_lossy().as_bytes());
        } else if meta.is_file() {
            newc_entry(out, *ino, &name, 0o100_000 | perm, &read(&path)?);
        }
        // Devices, sockets and pipes are left out: the guest has none.
    }
    Ok(())
}

/// Checks that `b` is an ELF the guest can run: 64-bit little-endian
/// x86-64, an executable (ET_EXEC) or a static PIE (ET_DYN without an
/// interpreter). The error says what is wrong and what is needed.
pub fn check_static_x86_64(b: &[u8]) -> Result<(), String> {
    const REBUILD: &str =
        "the guest runs static x86-64 Linux executables: build it with `gcc -static` or `musl-gcc -static`";
    if b.starts_with(b"#!") {
        return Err(format!("a script, not an ELF executable; {REBUILD}"));
    }
    if !b.starts_with(b"\x7fELF") || b.len() < 64 {
        return Err(format!("not an ELF executable; {REBUILD}"));
    }
    if b[4] != 2 {
        return Err(format!("a 32-bit ELF; {REBUILD}"));
    }
    if b[5] != 1 {
        return Err(format!("a big-endian ELF; {REBUILD}"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let machine = u16_at(18);
    if machine != 62 {
        return Err(format!(
            "an ELF for {} (e_machine {machine}), not x86-64; {REBUILD}",
            super::kernel::machine_name(machine)
        ));
    }
    match u16_at(16) {
        2 | 3 => {}
        _ => return Err(format!("not an executable (a relocatable object or core dump); {REBUILD}")),
    }
    let file = object::read::elf::ElfFile64::<object::LittleEndian>::parse(b)
        .map_err(|e| format!("a malformed ELF ({e}); {REBUILD}"))?;
    use object::read::elf::ProgramHeader;
    let endian = object::LittleEndian;
    for ph in file.elf_program_headers() {
        if ph.p_type(endian) == object::elf::PT_INTERP {
            let interp = ph
                .data(endian, b)
                .ok()
                .map(|d| String::from_utf8_lossy(d.split(|&c| c == 0).next().unwrap_or(d)).into_owned())
                .unwrap_or_default();
            return Err(format!(
                "dynamically linked (it needs the interpreter {interp} and shared libraries, which the guest does not have); {REBUILD}"
            ));
        }
    }
    if !file.elf_program_headers().iter().any(|ph| ph.p_type(endian) == object::elf::PT_LOAD) {
        return Err(format!("no loadable segment; {REBUILD}"));
    }
    Ok(())
}

/// The kernel command-line tail that hands `args` to init (Linux passes
/// what follows `--` to init as argv[1..]); words with spaces are quoted.
pub fn init_args(args: &[String]) -> Result<String, InitrdError> {
    let mut s = String::from("--");
    for a in args {
        if a.contains('"') || a.chars().any(|c| c.is_control()) {
            return Err(InitrdError::BadArgument { arg: a.clone() });
        }
        s.push(' ');
        if a.is_empty() || a.contains(' ') {
            s.push('"');
            s.push_str(a);
            s.push('"');
        } else {
            s.push_str(a);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_parseable() {
        let mut out = Vec::new();
        newc_entry(&mut out, 1, "init", 0o100_755, b"hello");
        newc_trailer(&mut out);
        assert_eq!(&out[..6], b"070701");
        assert_eq!(out.len() % 4, 0);
        // name size field (12th) = 5 ("init" + NUL), file size (7th) = 5.
        assert_eq!(&out[6 + 6 * 8..6 + 7 * 8], b"00000005");
        assert_eq!(&out[6 + 11 * 8..6 + 12 * 8], b"00000005");
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..121], b"hello");
    }

    #[test]
    fn programs_are_checked() {
        assert!(check_static_x86_64(b"#!/bin/sh\n").unwrap_err().contains("script"));
        assert!(check_static_x86_64(b"hello").unwrap_err().contains("not an ELF"));
        let mut arm = vec![0u8; 64];
        arm[..4].copy_from_slice(b"\x7fELF");
        arm[4] = 2;
        arm[5] = 1;
        arm[16] = 2;
        arm[18] = 183;
        assert!(check_static_x86_64(&arm).unwrap_err().contains("AArch64"));
    }

    #[test]
    fn init_args_quote_spaces() {
        assert_eq!(init_args(&["a".into(), "b c".into()]).unwrap(), "-- a \"b c\"");
        assert!(init_args(&["x\"y".into()]).is_err());
    }
}
