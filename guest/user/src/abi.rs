//! The system-call ABI between the kernel and the user programs: numbers
//! (Linux x86-64's where Linux has the call), flags and the record of a
//! process's memory counters. The kernel includes this very file by path
//! (guest/src/proc/mod.rs), so the two sides cannot drift.

/// `write(fd, buf, len)`.
pub const SYS_WRITE: u64 = 1;
/// `mmap(addr, len, prot, flags, fd, off)`: anonymous memory only.
pub const SYS_MMAP: u64 = 9;
/// `mprotect(addr, len, prot)`.
pub const SYS_MPROTECT: u64 = 10;
/// `munmap(addr, len)`.
pub const SYS_MUNMAP: u64 = 11;
/// `madvise(addr, len, advice)`.
pub const SYS_MADVISE: u64 = 28;
/// `MADV_PAGEOUT`: reclaim these pages now.
pub const MADV_PAGEOUT: u64 = 21;
/// `brk(addr)`: returns the new (or, on failure, the current) break.
pub const SYS_BRK: u64 = 12;
/// `sched_yield()`.
pub const SYS_SCHED_YIELD: u64 = 24;
/// `getpid()`.
pub const SYS_GETPID: u64 = 39;
/// `fork()`.
pub const SYS_FORK: u64 = 57;
/// `exit(status)`: ends the calling thread.
pub const SYS_EXIT: u64 = 60;
/// `exit_group(status)`: ends the process.
pub const SYS_EXIT_GROUP: u64 = 231;
/// `wait4(pid, &status, options, rusage)`: `pid` -1 for any child.
pub const SYS_WAIT4: u64 = 61;
/// `read(fd, buf, len)`.
pub const SYS_READ: u64 = 0;
/// `close(fd)`.
pub const SYS_CLOSE: u64 = 3;
/// `pread64(fd, buf, len, offset)`.
pub const SYS_PREAD64: u64 = 17;
/// `openat(dirfd, path, flags, mode)`.
pub const SYS_OPENAT: u64 = 257;
/// `openat`'s directory for a path relative to the working directory.
pub const AT_FDCWD: u64 = -100i64 as u64;
/// Open for reading.
pub const O_RDONLY: u64 = 0;
/// Open for writing.
pub const O_WRONLY: u64 = 1;
/// Closed by execve.
pub const O_CLOEXEC: u64 = 0o2000000;
/// `mmstat(&MmStat)`: the calling process's memory and fault counters.
pub const SYS_MMSTAT: u64 = 500;
/// `report(key, key_len, value)`: hands a named figure to the kernel's
/// self-test, which checks it.
pub const SYS_REPORT: u64 = 501;
/// `checkpoint(name, name_len)`: the kernel stops at the named checkpoint
/// (the VMM's port 0x510) so the host can inspect and verify every
/// address space at this point of the program; then the call returns 0.
/// The name is 1 to [`CHECKPOINT_NAME_MAX`] printable ASCII bytes.
pub const SYS_CHECKPOINT: u64 = 503;
/// Longest checkpoint name `SYS_CHECKPOINT` accepts.
pub const CHECKPOINT_NAME_MAX: u64 = 48;
/// `probe_fixup(addr)`: registers a fix-up address for fault-tolerant
/// probes (0 unregisters). While one is registered, a #PF the kernel
/// cannot resolve (no demand paging, copy-on-write or stack growth serves
/// it) or a #GP in ring 3 does not kill the process: the kernel resumes it
/// at `addr` with every register as at the fault except rax = the vector,
/// rdx = the error code and rcx = CR2 (0 for a #GP). A fault the kernel
/// resolves is invisible, as ever. Returns 0, or -EINVAL for an address
/// outside user space.
pub const SYS_PROBE_FIXUP: u64 = 504;
/// `access_records(records, count)`: hands the kernel's access-rights
/// self-test (`selftest=access`) `count` [`UserAccessRecord`]s the program
/// probed in ring 3; the kernel adds them to the table the host checks
/// (at CPL 3 under this process's CR3). Returns the number taken,
/// -EINVAL for a malformed record or more than [`ACCESS_RECORDS_MAX`],
/// -ENOENT when no access test is collecting records, -ENOMEM when the
/// table is full.
pub const SYS_ACCESS_RECORDS: u64 = 505;
/// `reported(key, key_len)`: how many figures have been reported under
/// `key` since the self-test last cleared them (a barrier for programs
/// the self-test runs side by side).
pub const SYS_REPORTED: u64 = 508;
/// `compact(op)` (Linux's /proc/sys/vm/compact_memory and the extfrag
/// views): op 0 compacts all memory and returns the pages migrated; 1
/// tries an order-9 (2 MiB) allocation without reclaim or compaction and
/// frees it (1 succeeded, 0 failed); 2 returns the lowest
/// unusable-free-space index of order 9 (thousandths) over the zones;
/// 3 the number of free blocks of order 9 or more; 4 allocates an order-9
/// block through the allocator's slow path (direct reclaim, then direct
/// compaction) and frees it: the pages compaction migrated meanwhile, or
/// -ENOMEM; 5 tries an order-9 allocation that may not block (no direct
/// reclaim or compaction) and frees it: 1 succeeded, 0 failed (which
/// wakes kcompactd); 6 the pages compaction migrated since boot.
/// -EINVAL for another op.
pub const SYS_COMPACT: u64 = 520;
/// `thp(op, arg)`: transparent huge pages. op 0 returns the mode (0
/// never, 1 madvise, 2 always: /sys/kernel/mm/transparent_hugepage/
/// enabled); 1 sets it to `arg` and returns the old one; 2 runs
/// khugepaged over the caller's address space now and returns the 2 MiB
/// ranges it collapsed; 3 returns the caller's AnonHugePages in KiB; 4
/// returns khugepaged's limit `arg` (0 max_ptes_none, 1 max_ptes_shared,
/// also /proc/sys/vm/khugepaged_max_ptes_*); 5 sets limit `arg >> 32` to
/// `arg & 0xffff_ffff` (at most 511) and returns the old value.
/// -EINVAL otherwise.
pub const SYS_THP: u64 = 530;
/// `madvise` advice: transparent huge pages wanted in the range.
pub const MADV_HUGEPAGE: u64 = 14;
/// `madvise` advice: no transparent huge pages in the range.
pub const MADV_NOHUGEPAGE: u64 = 15;
/// The event counters of /proc/vmstat that `ulib::vmstat` reads, in its
/// order: the descriptor's list, which the kernel's mm/vmstat.rs counts
/// by and the host reads.
pub use mm_core::descriptor::VM_EVENT_NAMES as VMSTAT_NAMES;
/// How many counters `ulib::vmstat` reads.
pub const VMSTAT_COUNT: usize = VMSTAT_NAMES.len();
/// Index of `oom_kill` in those counters.
pub const VMSTAT_OOM_KILL: usize = 11;
/// The lowest `oom_score_adj`: the OOM killer never picks the process.
pub const OOM_SCORE_ADJ_MIN: i64 = -1000;
/// The highest `oom_score_adj`: the process goes first.
pub const OOM_SCORE_ADJ_MAX: i64 = 1000;
/// No such process.
pub const ESRCH: i64 = 3;
/// Killed by the OOM killer (or anyone): the wait status of a process
/// killed with SIGKILL.
pub const SIGKILL: u64 = 9;
/// The signal a page that cannot be read back from swap kills with.
pub const SIGBUS: u64 = 7;
/// Most records one `SYS_ACCESS_RECORDS` takes.
pub const ACCESS_RECORDS_MAX: u64 = 64;
/// The #PF vector, as the fix-up reports it in rax.
pub const VECTOR_PF: u64 = 14;
/// The #GP vector.
pub const VECTOR_GP: u64 = 13;

/// Pages may be read.
pub const PROT_READ: u64 = 1;
/// Pages may be written.
pub const PROT_WRITE: u64 = 2;
/// Pages may be executed.
pub const PROT_EXEC: u64 = 4;
/// Share the pages with forked children.
pub const MAP_SHARED: u64 = 0x01;
/// Copy-on-write after fork.
pub const MAP_PRIVATE: u64 = 0x02;
/// Map exactly at `addr`, replacing what is there.
pub const MAP_FIXED: u64 = 0x10;
/// Not backed by a file.
pub const MAP_ANONYMOUS: u64 = 0x20;
/// `MAP_NORESERVE`: no hugetlb pages reserved at mmap (a fault that
/// finds the pool empty gets SIGBUS), and not charged to Committed_AS, so
/// the overcommit heuristic (mode 0) lets a mapping larger than RAM + swap
/// through, as the programs that set out to exhaust memory need.
pub const MAP_NORESERVE: u64 = 0x4000;
/// Back the mapping with 2 MiB pages from the hugetlb pool (Linux's
/// value); mmap fails with ENOMEM if the pool cannot reserve them.
pub const MAP_HUGETLB: u64 = 0x4_0000;

/// No such child (`wait4`).
pub const ECHILD: i64 = 10;
/// Out of memory or address space.
pub const ENOMEM: i64 = 12;
/// Bad user pointer.
pub const EFAULT: i64 = 14;
/// No such entity (`access_records` outside the access test).
pub const ENOENT: i64 = 2;
/// Bad argument.
pub const EINVAL: i64 = 22;
/// No such system call.
pub const ENOSYS: i64 = 38;

/// The signal a segfault kills with; a killed child's wait status is
/// the signal number (Linux's `WTERMSIG`), an exit's is `status << 8`.
pub const SIGSEGV: u64 = 11;

/// A process's memory counters (`SYS_MMSTAT`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct MmStat {
    /// Page faults handled for this process (Linux's `min_flt`).
    pub faults: u64,
    /// Faults that mapped a new zeroed frame (`do_anonymous_page`).
    pub anon_faults: u64,
    /// Read faults that mapped the shared zero page.
    pub zero_page_maps: u64,
    /// Write faults on shared pages that copied (`do_wp_page`, copy).
    pub cow_copies: u64,
    /// Write faults on shared pages that reused the frame (last user).
    pub cow_reuses: u64,
    /// Faults that grew the stack VMA.
    pub stack_grows: u64,
    /// Resident anonymous pages (`MM_ANONPAGES`).
    pub rss_pages: u64,
    /// The current program break.
    pub brk: u64,
    /// Page-table pages of the user half.
    pub pt_pages: u64,
    /// Data pages copied when this process was forked (0: copy-on-write).
    pub fork_copied_pages: u64,
    /// Page-table pages allocated when this process was forked.
    pub fork_pt_pages: u64,
    /// Times the timer interrupt took the CPU from this process.
    pub preemptions: u64,
    /// Faults that read a page back from swap (Linux's `maj_flt`).
    pub maj_faults: u64,
    /// Swap-ins served from the swap cache (no I/O).
    pub swapin_cached: u64,
    /// Swap entries in its page tables (`MM_SWAPENTS`).
    pub swap_ents: u64,
    /// File pages mapped around read faults, without a fault of their
    /// own (Linux's `do_fault_around`).
    pub fault_around_maps: u64,
}

/// One ring-3 access as the program saw it (`SYS_ACCESS_RECORDS`); the
/// kernel adds the CPL and CR3 (mm-core's `AccessRecord` has the same
/// fields but these).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct UserAccessRecord {
    /// The linear address accessed.
    pub va: u64,
    /// 0 read, 1 write, 2 instruction fetch.
    pub access: u64,
    /// 1 if the access raised a #PF the kernel did not resolve.
    pub faulted: u64,
    /// Its #PF error code (0 when it did not fault).
    pub error_code: u64,
}
