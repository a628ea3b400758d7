//! Open files: what a file descriptor of a process refers to.

use alloc::sync::Arc;

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

/// An open file description (Linux's `struct file`): the kind, the
/// offset and the open flags. Copied, not shared, by fork and dup (so a
/// child's reads do not move its parent's offset: a difference from
/// Linux, where the two share the description; a pipe's ends are shared
/// objects all the same).
#[derive(Clone, Debug)]
pub struct File {
    /// What it refers to.
    pub kind: FileKind,
    /// Read position (for a directory: the next entry's index).
    pub pos: u64,
    /// `O_*` flags it was opened with.
    pub flags: u32,
    /// The descriptor's `FD_CLOEXEC`.
    pub cloexec: bool,
}

impl File {
    /// A terminal descriptor (0, 1 and 2 of a Linux program): to the
    /// VMM's stderr if `err`.
    pub const fn terminal(err: bool) -> File {
        File { kind: FileKind::Terminal(err), pos: 0, flags: 2, cloexec: false }
    }
}

/// Most descriptors a process may have open (Linux's default RLIMIT_NOFILE).
pub const NR_OPEN: usize = 1024;
