//! The page cache under memory pressure (issue 15): tmpfs pages are
//! swap-backed as Linux's shmem (on the anon LRU; reclaim writes the
//! unmapped ones to swap and read() and a mapping's fault read them
//! back; drop_caches keeps them). A C program compiled now with
//! `musl-gcc -static`; the host's `--verify swap,lru,refcount` checks the
//! guest's swap map, LRU lists and reference counts at checkpoints taken
//! while the file is partly in swap. Not covered here: the file LRU's
//! reclaim of clean initramfs pages, and tmpfs without swap.

mod common;

use common::{compile, vmm, Run, Scratch};
use std::path::Path;

/// One libc: the kernel's path is the same for both, and each run swaps
/// some 5000 pages through the emulated device (minutes on a loaded
/// host); the other tests run both.
const COMPILERS: [&str; 1] = ["musl-gcc"];

/// `big MIB`: writes a tmpfs file of MIB MiB (each 8-byte word a function
/// of its offset), stops at checkpoint `written`, reads it all back with
/// read() and checks every word, maps its first MiB and checks that too
/// (the faults read swapped pages back), stops at `readback`, and prints
/// meminfo's Shmem and vmstat's pswpin/pswpout along the way; then checks
/// drop_caches keeps the file, and unlinks it.
const BIG: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#define MIB (1024L * 1024)
static char text[8192];
static long field(const char *path, const char *key) {
    int fd = open(path, O_RDONLY);
    int n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
    if (fd >= 0) close(fd);
    text[n > 0 ? n : 0] = 0;
    char *p = strstr(text, key);
    return p ? atol(p + strlen(key)) : -1;
}
static unsigned long word(long i) { return (unsigned long)i * 0x9e3779b97f4a7c15UL + 12345; }
static unsigned long buf[8192];
int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 8, len = mib * MIB, words = sizeof buf / 8;
    int fd = open("/tmp/big", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { printf("create: %s\n", strerror(errno)); return 2; }
    for (long off = 0; off < len; off += sizeof buf) {
        for (long i = 0; i < words; i++) buf[i] = word(off / 8 + i);
        for (long put = 0, w; put < (long)sizeof buf; put += w)
            if ((w = write(fd, (char *)buf + put, sizeof buf - put)) <= 0) { printf("write at %ld: %s\n", off + put, strerror(errno)); return 3; }
    }
    printf("wrote %ld MiB\n", mib);
    printf("after write: Shmem %ld kB, pswpout %ld\n", field("/proc/meminfo", "Shmem:"), field("/proc/vmstat", "pswpout "));
    syscall(503, "written", 7);
    long bad = 0;
    lseek(fd, 0, SEEK_SET);
    for (long off = 0; off < len; off += sizeof buf) {
        for (long got = 0, r; got < (long)sizeof buf; got += r)
            if ((r = read(fd, (char *)buf + got, sizeof buf - got)) <= 0) { printf("read at %ld: %s\n", off + got, strerror(errno)); return 4; }
        for (long i = 0; i < words; i++) bad += buf[i] != word(off / 8 + i);
    }
    printf("read back %ld MiB: %ld bad words\n", mib, bad);
    unsigned long *m = mmap(NULL, MIB, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { printf("mmap: %s\n", strerror(errno)); return 5; }
    long mbad = 0;
    for (long i = 0; i < MIB / 8; i++) mbad += m[i] != word(i);
    printf("mapped first MiB: %ld bad words\n", mbad);
    munmap(m, MIB);
    printf("after reading: pswpin %ld\n", field("/proc/vmstat", "pswpin "));
    syscall(503, "readback", 8);
    long shmem = field("/proc/meminfo", "Shmem:");
    int d = open("/proc/sys/vm/drop_caches", O_WRONLY);
    write(d, "3", 1);
    close(d);
    long kept = field("/proc/meminfo", "Shmem:");
    printf("drop_caches keeps tmpfs pages: %d\n", kept == shmem);
    unlink("/tmp/big");
    printf("after unlink: Shmem %ld kB\n", field("/proc/meminfo", "Shmem:"));
    return bad != 0 || mbad != 0;
}
"#;

fn guest(root: &Path, extra: &[&str]) -> Run {
    // Swap I/O is slow where ring 0 is emulated: swap.rs's timeout.
    let mut a = vec!["run", "--timeout", "900", "--initrd", root.to_str().unwrap()];
    a.extend_from_slice(extra);
    vmm(&a)
}

/// A number after `key` in `text`.
fn figure(text: &str, key: &str) -> Option<i64> {
    let at = text.find(key)? + key.len();
    text[at..].split(|c: char| !c.is_ascii_digit() && c != '-').find(|s| !s.is_empty())?.parse().ok()
}

/// The verify line of `check` at checkpoint `cp`, which must say ok.
fn verify_ok<'a>(out: &'a str, cp: &str, check: &str) -> &'a str {
    let at = out.find(&format!("--- checkpoint '{cp}': verify ---")).unwrap_or_else(|| panic!("no {cp}:\n{out}"));
    let l = out[at..]
        .lines()
        .find(|l| l.starts_with(&format!("verify {check}: ")))
        .unwrap_or_else(|| panic!("no verify {check} at {cp}:\n{out}"));
    assert!(l.starts_with(&format!("verify {check}: ok (")), "{check} at {cp}: {l}\n{out}");
    l
}

#[test]
fn a_tmpfs_file_bigger_than_ram_goes_to_swap_and_reads_back_intact() {
    let dir = Scratch::new("pagecache-big");
    for cc in COMPILERS {
        let prog = compile(cc, BIG, &dir.0, &format!("big-{cc}"), &["-static"]);
        let root = common::initrd_with_init(&dir.0, &prog);
        let swap = common::TempFile::absent(&format!("pagecache-swap-{cc}"));
        let swap_arg = format!("{},size=32M", swap.path());
        // 12 MiB of file in a 12 MiB guest: the kernel, the program and
        // the rest take 3 MiB, so a good part of the file must go to swap.
        let run = guest(
            &root,
            &[
                "--mem",
                "12M",
                "--swap",
                &swap_arg,
                "--verify=swap,lru,refcount",
                "--inspect-at",
                "written,readback",
                "--cmdline=-- 12",
            ],
        );
        let out = run.all();
        assert_eq!(run.status, 0, "{cc}: {out}");
        for want in [
            "wrote 12 MiB",
            "read back 12 MiB: 0 bad words",
            "mapped first MiB: 0 bad words",
            "drop_caches keeps tmpfs pages: 1",
        ] {
            assert!(run.stdout.contains(want), "{cc}: missing {want:?}: {out}");
        }
        let pswpout = figure(&run.stdout, "pswpout ").unwrap_or(0);
        assert!(pswpout > 256, "{cc}: the file does not fit: part of it must be in swap (pswpout {pswpout}): {out}");
        let shmem = figure(&run.stdout, "after write: Shmem ").unwrap_or(-1);
        assert!(shmem > 0 && shmem < 12 * 1024, "{cc}: Shmem counts the resident part: {shmem} kB: {out}");
        let pswpin = figure(&run.stdout, "after reading: pswpin ").unwrap_or(0);
        assert!(pswpin > 256, "{cc}: reading it back reads swap (pswpin {pswpin}): {out}");
        assert_eq!(figure(&run.stdout, "after unlink: Shmem ").unwrap_or(-1), 0, "{cc}: {out}");
        for cp in ["written", "readback"] {
            let l = verify_ok(&out, cp, "swap");
            // The file's pages in swap are counted as the slots' users.
            let tmpfs = figure(l, " processes and ").unwrap_or(0);
            assert!(tmpfs > 0, "{cc}: no tmpfs pages in swap at {cp}: {l}");
            assert!(l.contains(" matched"), "{cc}: {l}");
            verify_ok(&out, cp, "lru");
            verify_ok(&out, cp, "refcount");
        }
    }
}
