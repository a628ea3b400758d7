//! The file system: the initramfs (the cpio "newc" archive the loader
//! handed over as PVH module 0, `vmm run --initrd`, `vmm run -- PROG`)
//! unpacked at boot into a writable, tmpfs-like tree (Linux's rootfs).
//! An unpacked file's data stay in the archive (memblock keeps it
//! reserved) as its backing store: the page cache (pagecache.rs) reads a
//! page from there the first time it is needed, so unpacking costs one
//! pass over the headers and no copies, which matters where ring 0 runs
//! ~1000x slower (platform.md). Files created at run time (tmpfs.rs) live
//! in the page cache alone. /proc (procfs.rs) and pipes (pipe.rs) are
//! here too.

pub mod cgroupfs;
pub mod file;
pub mod pagecache;
pub mod pipe;
pub mod procfs;
pub mod sysfs;
pub mod tmpfs;

use crate::kprintln;
use crate::sync::{rank, SpinLock};
use alloc::string::String;
use alloc::vec::Vec;

/// File-type bits of `st_mode` (Linux's `S_IFMT`).
pub const S_IFMT: u32 = 0o170_000;
/// A directory.
pub const S_IFDIR: u32 = 0o040_000;
/// A regular file.
pub const S_IFREG: u32 = 0o100_000;
/// A symbolic link.
pub const S_IFLNK: u32 = 0o120_000;

/// One file of the initramfs.
#[derive(Clone)]
pub struct Inode {
    /// Its absolute, normalised path ("/" for the root).
    pub path: String,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Physical address of its data (in the archive).
    pub pa: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes of its data in the archive (`pa`): the page cache's backing
    /// store; 0 for a file created at run time.
    pub backing: u64,
    /// Written since boot (or created at run time): its pages in the page
    /// cache are the only copy (tmpfs's, Linux's Shmem), `drop_caches`
    /// keeps them.
    pub dirty: bool,
}

impl Inode {
    /// Its data as unpacked (a symbolic link's target for a link), read
    /// in place through the direct map: the file's contents while it was
    /// never written.
    pub fn data(&self) -> &'static [u8] {
        if self.backing == 0 {
            return &[];
        }
        // SAFETY: the bytes lie inside the archive, which memblock keeps
        // reserved for good and the boot-time direct map covers (the
        // loader put it below INITRD_MAX_END, `fs::init` checked the
        // bounds); nothing writes them.
        unsafe { core::slice::from_raw_parts(crate::mm::phys_to_virt(self.pa) as *const u8, self.backing as usize) }
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

/// A file: what lookups return (a copy of [`Inode`]) and its pages in
/// the page cache (index -> physical address).
pub(crate) struct Node {
    /// The inode.
    pub(crate) inode: Inode,
    /// Its page cache (Linux's `address_space`): page index -> frame.
    pub(crate) pages: alloc::collections::BTreeMap<u64, u64>,
}

/// The files, by inode number (the index; 0 is the root directory); an
/// unlinked file keeps its number with an empty path.
pub(crate) static FILES: SpinLock<Vec<Node>> = SpinLock::new_with("the file system", rank::MISC, Vec::new());

fn hex8(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b.get(..8)? {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u32;
    }
    Some(v)
}

/// `path` made absolute and normalised ("." and ".." resolved, no
/// repeated or trailing slashes); relative paths start at the root (the
/// only working directory there is).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut s = String::new();
    for p in &parts {
        s.push('/');
        s.push_str(p);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Unpacks the archive at physical `start..end`; logs what it found.
fn root() -> Inode {
    Inode { path: String::from("/"), mode: S_IFDIR | 0o755, pa: 0, size: 0, backing: 0, dirty: false }
}

/// The directories every system has (tmpfs mount points and /dev),
/// made unless the archive has them.
const STANDARD_DIRS: [&str; 3] = ["/tmp", "/dev", "/proc"];

pub fn init(range: Option<(u64, u64)>) {
    let Some((start, end)) = range else { return };
    // SAFETY: the loader's module, reserved in memblock and inside the
    // boot-time direct map (boot/mod.rs checked its end).
    let archive =
        unsafe { core::slice::from_raw_parts(crate::mm::phys_to_virt(start) as *const u8, (end - start) as usize) };
    let mut files = alloc::vec![root()];
    let mut off = 0usize;
    let mut bad = false;
    while off + 110 <= archive.len() {
        let h = &archive[off..off + 110];
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            bad = true;
            break;
        }
        let field = |i: usize| hex8(&h[6 + i * 8..]);
        let (Some(mode), Some(filesize), Some(namesize)) = (field(1), field(6), field(11)) else {
            bad = true;
            break;
        };
        let name_at = off + 110;
        let data_at = (name_at + namesize as usize + 3) & !3;
        let next = (data_at + filesize as usize + 3) & !3;
        if namesize == 0 || data_at + filesize as usize > archive.len() {
            bad = true;
            break;
        }
        let name = &archive[name_at..name_at + namesize as usize - 1];
        let Ok(name) = core::str::from_utf8(name) else {
            off = next;
            continue;
        };
        if name == "TRAILER!!!" {
            break;
        }
        let path = normalize(name);
        let size = filesize as u64;
        let inode = Inode { path, mode, pa: start + data_at as u64, size, backing: size, dirty: false };
        // A later entry of the same name replaces the earlier, as Linux's
        // unpacker does.
        match files.iter_mut().find(|f| f.path == inode.path) {
            Some(f) => *f = inode,
            None => files.push(inode),
        }
        off = next;
    }
    if bad {
        kprintln!("initrd: malformed cpio newc archive at offset {:#x}; using the files before it", off);
    }
    kprintln!(
        "Unpacking initramfs: {} files, {} KiB at [mem {:#x}-{:#x}]",
        crate::fmt::Dec(files.len() as u64 - 1),
        crate::fmt::Dec((end - start) >> 10),
        start,
        end - 1
    );
    for d in STANDARD_DIRS {
        if !files.iter().any(|f| f.path == d) {
            files.push(Inode { path: String::from(d), mode: S_IFDIR | 0o1777, ..root() });
        }
    }
    FILES.with(|f| *f = files.into_iter().map(|inode| Node { inode, pages: Default::default() }).collect());
}

/// Whether an initramfs was unpacked.
pub fn present() -> bool {
    FILES.with(|f| !f.is_empty())
}

/// Looks `path` up, following symbolic links (up to 8). Its inode
/// number and a copy of the inode.
pub fn lookup(path: &str) -> Option<(usize, Inode)> {
    let mut p = normalize(path);
    for _ in 0..8 {
        let (ino, inode) = FILES.with(|f| f.iter().position(|i| i.inode.path == p).map(|n| (n, f[n].inode.clone())))?;
        if inode.mode & S_IFMT != S_IFLNK {
            return Some((ino, inode));
        }
        let target = core::str::from_utf8(inode.data()).ok()?;
        p = if target.starts_with('/') {
            normalize(target)
        } else {
            let dir = &p[..p.rfind('/').unwrap_or(0)];
            normalize(&alloc::format!("{}/{}", dir, target))
        };
    }
    None
}

/// Looks `path` up without following a final symbolic link (`lstat`).
pub fn lookup_nofollow(path: &str) -> Option<(usize, Inode)> {
    let p = normalize(path);
    FILES.with(|f| f.iter().position(|i| i.inode.path == p).map(|n| (n, f[n].inode.clone())))
}

/// Inode `ino`.
pub fn inode(ino: usize) -> Option<Inode> {
    FILES.with(|f| f.get(ino).map(|n| n.inode.clone()))
}

/// The entries of directory `dir` (a normalised path), from index
/// `from` on: (inode number, name, mode).
pub fn dir_entries(dir: &str) -> Vec<(usize, String, u32)> {
    FILES.with(|f| {
        f.iter()
            .map(|n| &n.inode)
            .enumerate()
            .filter(|(_, i)| i.path != "/" && !i.path.is_empty())
            .filter(|(_, i)| {
                let parent = &i.path[..i.path.rfind('/').unwrap_or(0)];
                parent == dir || (parent.is_empty() && dir == "/")
            })
            .map(|(n, i)| (n, String::from(&i.path[i.path.rfind('/').map_or(0, |k| k + 1)..]), i.mode))
            .collect()
    })
}

/// Marks file `ino` written (a shared writable mapping of it exists): its
/// cached pages are its only copy from now on.
pub fn mark_dirty(ino: usize) {
    FILES.with(|f| {
        if let Some(n) = f.get_mut(ino) {
            n.inode.dirty = true;
        }
    });
}
