//! Which ELF a sampled user pc belongs to, per process.
//!
//! The guest publishes every address space's VMAs in its descriptor (the
//! table `--inspect vmas` reads): a program exec'd from the initrd has
//! its text in a private file VMA named by the file's path, with the
//! file offset (`vm_pgoff`) of its start. The host has the same file:
//! it read or packed the initrd itself (`--initrd`, `-- PROG`). So a user
//! pc resolves to (the initrd file, its offset in the file), and the
//! file's PT_LOAD headers turn the offset into the ELF's own address,
//! which its symbol table and unwind tables speak (a static binary's
//! address is its run-time one; a PIE's differs by the load bias, found
//! here the same way). A built-in program (the kernel embeds them and
//! copies them into anonymous memory, `kernel::proc::PROGRAMS`) has no
//! file VMA: it is found by the process's name in that table, which the
//! host reads from the kernel's ELF.

use super::sampler::Image;
use crate::symbols::Symbols;
use object::{Object, ObjectSegment, ObjectSymbol};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The files of a newc archive by path (`/init`, `/bin/x`): regular files
/// only. A malformed archive yields what parsed before the damage (the
/// guest refuses such an archive anyway; symbols are a convenience).
pub fn newc_files(bytes: &[u8]) -> HashMap<String, Arc<[u8]>> {
    let mut out = HashMap::new();
    let mut at = 0usize;
    let field = |b: &[u8], i: usize| -> Option<usize> {
        let s = std::str::from_utf8(b.get(6 + 8 * i..6 + 8 * (i + 1))?).ok()?;
        usize::from_str_radix(s, 16).ok()
    };
    while let Some(h) = bytes.get(at..at + 110) {
        if !h.starts_with(b"070701") {
            break;
        }
        let (Some(mode), Some(size), Some(namesize)) = (field(h, 1), field(h, 6), field(h, 11)) else { break };
        let name_at = at + 110;
        let Some(name) = bytes.get(name_at..name_at + namesize.saturating_sub(1)) else { break };
        let name = String::from_utf8_lossy(name).into_owned();
        let data_at = (name_at + namesize).next_multiple_of(4);
        let Some(data) = bytes.get(data_at..data_at.saturating_add(size)) else { break };
        if name == "TRAILER!!!" {
            break;
        }
        // S_IFREG.
        if mode & 0o170_000 == 0o100_000 {
            let path = format!("/{}", name.trim_start_matches("./").trim_start_matches('/'));
            out.insert(path, Arc::from(data));
        }
        at = (data_at + size).next_multiple_of(4);
    }
    out
}

/// The built-in programs a kernel ELF embeds: `kernel::proc::PROGRAMS`,
/// an array of `(&str, &[u8])`, read from the file (its pointers are
/// link-time addresses inside the same image). Empty when the kernel has
/// no such table or it does not read as one.
pub fn builtin_programs(kernel: &[u8]) -> HashMap<String, Arc<[u8]>> {
    let mut out = HashMap::new();
    let Ok(file) = object::File::parse(kernel) else { return out };
    let Some(table) = file.symbols().find(|s| {
        s.name().is_ok_and(|n| {
            n.contains("PROGRAMS") && format!("{:#}", rustc_demangle::demangle(n)) == "kernel::proc::PROGRAMS"
        })
    }) else {
        return out;
    };
    let bytes_at =
        |va: u64, len: u64| -> Option<&[u8]> { file.segments().find_map(|seg| seg.data_range(va, len).ok().flatten()) };
    let word = |va: u64| -> Option<u64> { Some(u64::from_le_bytes(bytes_at(va, 8)?.try_into().ok()?)) };
    // A fat pointer is (address, length) in practice; the tuple's field
    // order is the compiler's choice, so each half is tried as either.
    for entry in (0..table.size() / 32).map(|i| table.address() + i * 32) {
        let slice = |va: u64| -> Option<&[u8]> {
            let (ptr, len) = (word(va)?, word(va + 8)?);
            (len < 64 << 20).then_some(())?;
            bytes_at(ptr, len)
        };
        let (Some(a), Some(b)) = (slice(entry), slice(entry + 16)) else { continue };
        let (name, elf) = if b.starts_with(b"\x7fELF") { (a, b) } else { (b, a) };
        if let (Ok(name), true) = (std::str::from_utf8(name), elf.starts_with(b"\x7fELF")) {
            out.insert(name.to_string(), Arc::from(elf));
        }
    }
    out
}

/// An ELF's PT_LOAD segments as (file offset, file size, address).
fn loads(elf: &[u8]) -> Vec<(u64, u64, u64)> {
    let Ok(file) = object::File::parse(elf) else { return Vec::new() };
    file.segments()
        .map(|seg| {
            let (off, size) = seg.file_range();
            (off, size, seg.address())
        })
        .collect()
}

/// One resolved user image: its tables, and how to name it.
pub struct UserImage {
    /// Symbols and unwind tables.
    pub image: Image,
    /// The file's path in the initrd, or the built-in program's name.
    pub label: String,
    /// Its PT_LOAD segments: (file offset, file size, address).
    loads: Vec<(u64, u64, u64)>,
}

impl UserImage {
    /// The ELF's own address of file offset `off`: the PT_LOAD covering
    /// it gives `vaddr + (off - offset)`.
    pub fn vaddr_of_offset(&self, off: u64) -> Option<u64> {
        // A hostile ELF's fields may be anything: no arithmetic may overflow.
        self.loads.iter().find(|&&(o, n, _)| o <= off && off - o < n).map(|&(o, _, va)| va.wrapping_add(off - o))
    }
}

/// Every ELF a user pc may belong to, parsed on first use.
#[derive(Default)]
pub struct UserImages {
    files: HashMap<String, Arc<[u8]>>,
    builtins: HashMap<String, Arc<[u8]>>,
    parsed: Mutex<HashMap<String, Option<Arc<UserImage>>>>,
}

impl UserImages {
    /// The initrd's files and the kernel's built-in programs.
    pub fn new(initrd: Option<&[u8]>, kernel: &[u8]) -> UserImages {
        UserImages {
            files: initrd.map(newc_files).unwrap_or_default(),
            builtins: builtin_programs(kernel),
            parsed: Mutex::default(),
        }
    }

    /// How many ELFs are known (initrd files and built-in programs).
    pub fn len(&self) -> usize {
        self.files.len() + self.builtins.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, key: String, bytes: Option<&Arc<[u8]>>, label: &str) -> Option<Arc<UserImage>> {
        let mut parsed = self.parsed.lock().unwrap_or_else(PoisonError::into_inner);
        parsed
            .entry(key)
            .or_insert_with(|| {
                let elf = bytes?.clone();
                object::File::parse(&*elf).ok()?;
                Some(Arc::new(UserImage {
                    image: Image::new(&elf, Symbols::from_elf(&elf)),
                    label: label.to_string(),
                    loads: loads(&elf),
                }))
            })
            .clone()
    }

    /// The initrd file a VMA names: the guest publishes the path's last
    /// 31 bytes, so a longer path matches by its tail (the only file
    /// ending so, else none).
    pub fn file(&self, vma_name: &str) -> Option<Arc<UserImage>> {
        if vma_name.is_empty() {
            return None;
        }
        let path = if self.files.contains_key(vma_name) {
            vma_name.to_string()
        } else {
            let mut tails = self.files.keys().filter(|p| p.ends_with(vma_name));
            let p = tails.next()?;
            if tails.next().is_some() {
                return None;
            }
            p.clone()
        };
        self.get(format!("file:{path}"), self.files.get(&path), &path)
    }

    /// The built-in program a process is named after.
    pub fn builtin(&self, name: &str) -> Option<Arc<UserImage>> {
        self.get(format!("builtin:{name}"), self.builtins.get(name), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_lists_its_regular_files_by_path() {
        let dir = std::env::temp_dir().join(format!("mmemu-userimg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("init"), b"\x7fELF-init").unwrap();
        std::fs::write(dir.join("bin/tool"), b"tool").unwrap();
        let rd = crate::boot::initrd::Initrd::from_path(&dir).unwrap();
        let files = newc_files(&rd.bytes);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(files.get("/init").map(|b| &b[..]), Some(&b"\x7fELF-init"[..]));
        assert_eq!(files.get("/bin/tool").map(|b| &b[..]), Some(&b"tool"[..]));
        assert!(!files.contains_key("/bin"), "directories are no files: {:?}", files.keys());
        // Truncated archives give what parsed.
        assert!(newc_files(&rd.bytes[..rd.bytes.len() / 2]).len() <= 2);
        assert!(newc_files(b"junk").is_empty());
    }

    /// The embedded kernel's built-in programs are found, and each is an
    /// ELF with symbols.
    #[test]
    fn the_embedded_kernel_names_its_builtin_programs() {
        let b = builtin_programs(crate::EMBEDDED_GUEST);
        if crate::EMBEDDED_GUEST.is_empty() {
            return;
        }
        for name in ["spin", "cow", "forkbench"] {
            let elf = b.get(name).unwrap_or_else(|| panic!("{name} missing among {:?}", b.keys()));
            assert!(!Symbols::from_elf(elf).is_empty(), "{name} has no symbols");
        }
    }
}
