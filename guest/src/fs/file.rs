//! Open files: what a file descriptor of a process refers to.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

/// What an open file is.
#[derive(Clone, Debug)]
pub enum FileKind {
    /// The terminal of a Linux program (/init and its children): reads
    /// come from the serial console, writes go as they are to the VMM's
    /// stdout (false) or stderr (true: what fd 2 starts as, and its
    /// duplicates), `mm_core::abi::port::USER_STDOUT`/`USER_STDERR`.
    Terminal(bool),
    /// A file or directory of the tree (inode number): an initramfs file
    /// or one made at run time (tmpfs).
    Initrd(usize),
    /// A /proc file or directory (procfs.rs).
    Proc(Arc<super::procfs::ProcFile>),
    /// One end of a pipe (pipe.rs).
    Pipe(super::pipe::PipeEnd),
}

/// An open file description's offset, shared by everything that has the
/// description: the descriptors `dup` made and the copies fork and
/// clone gave children, as Linux's `struct file` is shared.
#[derive(Clone, Debug, Default)]
pub struct FilePos(Arc<AtomicU64>);

impl FilePos {
    /// The offset.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves it.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }
}

/// A descriptor's open file (Linux's `struct file` and the fd's flag):
/// the kind, the offset (shared with fork's and dup's copies), the open
/// flags (copied: F_SETFL on one copy does not reach the others, a
/// difference from Linux) and the descriptor's close-on-exec flag.
#[derive(Clone, Debug)]
pub struct File {
    /// What it refers to.
    pub kind: FileKind,
    /// Read position (for a directory: the next entry's index).
    pub pos: FilePos,
    /// `O_*` flags it was opened with.
    pub flags: u32,
    /// The descriptor's `FD_CLOEXEC`.
    pub cloexec: bool,
}

impl File {
    /// A newly opened file at offset 0.
    pub fn new(kind: FileKind, flags: u32, cloexec: bool) -> File {
        File { kind, pos: FilePos::default(), flags, cloexec }
    }

    /// A terminal descriptor (0, 1 and 2 of a Linux program): to the
    /// VMM's stderr if `err`.
    pub fn terminal(err: bool) -> File {
        File::new(FileKind::Terminal(err), 2, false)
    }
}

/// Most descriptors a process may have open (Linux's default RLIMIT_NOFILE).
pub const NR_OPEN: usize = 1024;
