//! The writable half of the tree (Linux's tmpfs/ramfs operations): files
//! and directories made, removed and resized at run time. Data live in the
//! page cache alone (pagecache.rs). Paths are absolute and normalised.

use super::{normalize, pagecache, Inode, Node, FILES, S_IFDIR, S_IFMT, S_IFREG};
use alloc::string::String;

/// Why an operation failed, as a (positive) errno.
pub type Errno = i64;
const ENOENT: Errno = 2;
const EEXIST: Errno = 17;
const ENOTDIR: Errno = 20;
const EISDIR: Errno = 21;
const ENOTEMPTY: Errno = 39;
const EBUSY: Errno = 16;

/// The parent directory of `path` must exist and be a directory.
fn check_parent(f: &[Node], path: &str) -> Result<(), Errno> {
    let parent = &path[..path.rfind('/').unwrap_or(0)];
    let parent = if parent.is_empty() { "/" } else { parent };
    match f.iter().find(|n| n.inode.path == parent) {
        Some(n) if n.inode.mode & S_IFMT == S_IFDIR => Ok(()),
        Some(_) => Err(ENOTDIR),
        None => Err(ENOENT),
    }
}

/// Makes an empty node of `mode` at `path`; its inode number.
fn make(path: &str, mode: u32) -> Result<usize, Errno> {
    let path = normalize(path);
    FILES.with(|f| {
        if f.is_empty() {
            return Err(ENOENT);
        }
        if f.iter().any(|n| n.inode.path == path) {
            return Err(EEXIST);
        }
        check_parent(f, &path)?;
        let inode = Inode { path: String::from(path.as_str()), mode, pa: 0, size: 0, backing: 0, dirty: true };
        f.push(Node { inode, pages: Default::default() });
        Ok(f.len() - 1)
    })
}

/// `open(O_CREAT)` of a missing file: an empty regular file.
pub fn create(path: &str, perm: u32) -> Result<usize, Errno> {
    make(path, S_IFREG | (perm & 0o7777))
}

/// `mkdir`.
pub fn mkdir(path: &str, perm: u32) -> Result<usize, Errno> {
    make(path, S_IFDIR | (perm & 0o7777))
}

/// `unlink` (`rmdir` if `dir`): the name goes; a file's cached data go
/// with it (see `pagecache::evict_inode`).
pub fn unlink(path: &str, dir: bool) -> Result<(), Errno> {
    let path = normalize(path);
    if path == "/" {
        return Err(EBUSY);
    }
    let ino = FILES.with(|f| {
        let ino = f.iter().position(|n| n.inode.path == path).ok_or(ENOENT)?;
        let is_dir = f[ino].inode.mode & S_IFMT == S_IFDIR;
        if dir && !is_dir {
            return Err(ENOTDIR);
        }
        if !dir && is_dir {
            return Err(EISDIR);
        }
        if is_dir {
            let prefix = alloc::format!("{}/", path);
            if f.iter().any(|n| n.inode.path.starts_with(&prefix)) {
                return Err(ENOTEMPTY);
            }
        }
        f[ino].inode.path = String::new();
        Ok(ino)
    })?;
    pagecache::evict_inode(ino);
    Ok(())
}

/// `truncate`/`ftruncate`/`O_TRUNC` of a regular file.
pub fn truncate(ino: usize, size: u64) -> Result<(), Errno> {
    let mode = FILES.with(|f| f.get(ino).map(|n| n.inode.mode)).ok_or(ENOENT)?;
    if mode & S_IFMT == S_IFDIR {
        return Err(EISDIR);
    }
    pagecache::truncate(ino, size);
    Ok(())
}
