//! The user's own static Linux binaries in the guest (`vmm run -- PROG`,
//! `vmm run --initrd DIR`): C programs compiled now with `gcc -static`
//! (glibc) and `musl-gcc -static` (Debian's musl-tools), run on the host
//! and in the guest; what they print and their exit status must agree.
//! A missing compiler fails the test with what to install (.ci/run
//! installs both).

mod common;

use common::{boot, compile, Run, Scratch};
use std::path::Path;
use std::process::Command;

/// The two C toolchains that build static x86-64 Linux binaries.
const COMPILERS: [&str; 2] = ["gcc", "musl-gcc"];

const HELLO: &str = r#"
#include <stdio.h>
int main(int argc, char **argv) {
    printf("hello, world\n");
    for (int i = 1; i < argc; i++) printf("argv[%d] = [%s]\n", i, argv[i]);
    return 0;
}
"#;

/// malloc/free churn crossing the 128 KiB mmap threshold (small chunks
/// from brk, big ones from mmap, freed in a pseudo-random order); prints a
/// checksum of what it read back.
const CHURN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    unsigned long sum = 0, seed = 12345, big = 0;
    void *slots[16] = {0};
    size_t sizes[16] = {0};
    for (int i = 0; i < 200; i++) {
        seed = seed * 6364136223846793005UL + 1442695040888963407UL;
        int k = (seed >> 33) % 16;
        if (slots[k]) {
            unsigned char *p = slots[k];
            for (size_t j = 0; j < sizes[k]; j += 512) sum = sum * 31 + p[j];
            free(slots[k]);
            slots[k] = 0;
        } else {
            size_t n = (i % 5 == 0) ? (128 << 10) + ((seed >> 40) % (256 << 10)) : 16 + (seed >> 44) % 4000;
            unsigned char *p = malloc(n);
            if (!p) { printf("malloc failed\n"); return 1; }
            big += n > (128 << 10);
            for (size_t j = 0; j < n; j += 512) p[j] = (unsigned char)(j ^ i ^ k);
            slots[k] = p; sizes[k] = n;
        }
    }
    for (int k = 0; k < 16; k++) free(slots[k]);
    printf("churn: %lu chunks above 128 KiB, checksum %lu\n", big, sum);
    return 0;
}
"#;

/// Reads a file of the initramfs with open/fstat/read/lseek/close and
/// stdio, maps it privately (the mapping holds the file's bytes; writes
/// to it stay private), and fails to open a missing one.
const READFILE: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "data.txt";
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("open %s: %s\n", path, strerror(errno)); return 2; }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { printf("fstat failed\n"); return 3; }
    char buf[256];
    long total = 0;
    ssize_t n;
    unsigned long sum = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) sum = sum * 33 + (unsigned char)buf[i];
        total += n;
    }
    if (lseek(fd, 6, SEEK_SET) != 6) { printf("lseek failed\n"); return 4; }
    n = read(fd, buf, 10);
    if (n != 10) return 5;
    buf[n] = 0;
    char *m = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) { printf("mmap: %s\n", strerror(errno)); return 8; }
    int same = memcmp(m + 6, buf, 10) == 0;
    m[6] = 'X';
    char again[10];
    lseek(fd, 6, SEEK_SET);
    int unchanged = read(fd, again, 10) == 10 && memcmp(again, buf, 10) == 0;
    printf("mmap: same bytes %d, private write %c, file unchanged %d\n", same, m[6], unchanged);
    munmap(m, st.st_size);
    close(fd);
    FILE *f = fopen(path, "r");
    char line[128];
    if (!f || !fgets(line, sizeof line, f)) { printf("fopen failed\n"); return 6; }
    fclose(f);
    printf("size %ld read %ld sum %lu at 6 [%s] first line %s", (long)st.st_size, total, sum, buf, line);
    errno = 0;
    if (open("/no/such/file", O_RDONLY) >= 0) return 7;
    printf("missing file: %s\n", strerror(errno));
    return 0;
}
"#;

/// fork + waitpid: the child's exit status reaches the parent, and the
/// child's write to a copy-on-write page stays its own.
const FORKWAIT: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    int *p = malloc(4096);
    *p = 7;
    fflush(stdout);
    pid_t c = fork();
    if (c < 0) { printf("fork failed\n"); return 1; }
    if (c == 0) { *p = 42; _exit(*p + 1); }
    int st = 0;
    if (waitpid(c, &st, 0) != c) { printf("waitpid failed\n"); return 1; }
    printf("child exited %d with %d; the parent still sees %d\n", WIFEXITED(st), WEXITSTATUS(st), *p);
    return WEXITSTATUS(st) == 43 && *p == 7 ? 5 : 1;
}
"#;

/// Runs `prog` with `args` on the host, in `cwd`.
fn host(prog: &Path, args: &[&str], cwd: &Path) -> (i32, String) {
    let o = Command::new(prog).args(args).current_dir(cwd).output().expect("run the program on the host");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `vmm run -- PROG ARGS`.
fn guest(prog: &Path, args: &[&str]) -> Run {
    let mut a = vec!["--", prog.to_str().unwrap()];
    a.extend_from_slice(args);
    boot(&a)
}

/// Builds `src` with both compilers and checks the guest run against
/// the host run: same stdout, same exit status (`want`).
fn same_as_host(name: &str, src: &str, args: &[&str], want: i32) {
    let dir = Scratch::new(name);
    for cc in COMPILERS {
        let prog = compile(cc, src, &dir.0, &format!("{name}-{cc}"), &["-static"]);
        let (status, stdout) = host(&prog, args, &dir.0);
        assert_eq!(status, want, "{cc}: the host run of {name} exited with {status}: {stdout}");
        let run = guest(&prog, args);
        assert_eq!(run.status, want, "{cc}: {name} in the guest: {}", run.all());
        assert_eq!(run.stdout, stdout, "{cc}: {name} printed something else in the guest: {}", run.all());
        assert!(!run.stderr.contains("segfault") && !run.stderr.contains("traps:"), "{cc}: {}", run.all());
        // What it wrote to stderr is on the VMM's stderr (among the
        // kernel's lines), not on its stdout.
        let o = Command::new(&prog).args(args).current_dir(&dir.0).output().unwrap();
        for line in String::from_utf8_lossy(&o.stderr).lines() {
            assert!(run.stderr.contains(line), "{cc}: stderr line {line:?} missing: {}", run.all());
        }
    }
}

#[test]
fn hello_prints_what_it_prints_on_the_host() {
    same_as_host("hello", HELLO, &["one", "two words", ""], 0);
}

#[test]
fn malloc_churn_across_the_mmap_threshold_reads_back_the_same_checksum() {
    same_as_host("churn", CHURN, &[], 0);
}

#[test]
fn fork_and_wait4_return_the_childs_status() {
    same_as_host("forkwait", FORKWAIT, &[], 5);
}

#[test]
fn a_file_of_the_initrd_reads_as_on_the_host() {
    let dir = Scratch::new("readfile");
    let root = dir.0.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let mut data = String::from("first line of the data\n");
    for i in 0..400 {
        data.push_str(&format!("line {i}\n"));
    }
    std::fs::write(root.join("etc/data.txt"), &data).unwrap();
    for cc in COMPILERS {
        let prog = compile(cc, READFILE, &dir.0, &format!("readfile-{cc}"), &["-static"]);
        std::fs::copy(&prog, root.join("init")).unwrap();
        let (status, stdout) = host(&root.join("init"), &["etc/data.txt"], &root);
        assert_eq!(status, 0, "{cc}: host run: {stdout}");
        // The directory packed by the VMM, init's argument after `--`
        // (a relative path: the guest's working directory is the root).
        let run = boot(&["--initrd", root.to_str().unwrap(), "--cmdline=-- etc/data.txt"]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        assert_eq!(run.stdout, stdout, "{cc}: {}", run.all());
        assert!(run.stdout.contains("missing file: No such file or directory"), "{}", run.all());
    }
}

/// One `read` of a regular file larger than a page returns all of it
/// (Linux's `filemap_read` fills the whole request up to the end of the
/// file: programs read a file by its size), pread too, then 0 at the
/// end; a read across the end returns what is left.
const BIGREAD: &str = r#"
#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>
static unsigned char buf[200000];
static unsigned long sum(long n) { unsigned long s = 0; for (long i = 0; i < n; i++) s = s * 31 + buf[i]; return s; }
int main(void) {
    int fd = open("data.bin", O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    long n = read(fd, buf, sizeof buf);
    printf("read: %ld bytes, sum %lu\n", n, sum(n));
    printf("read at the end: %ld\n", (long)read(fd, buf, sizeof buf));
    n = pread(fd, buf, 60000, 5000);
    printf("pread 60000 at 5000: %ld bytes, sum %lu\n", n, sum(n));
    lseek(fd, 100000, SEEK_SET);
    n = read(fd, buf, 10000);
    printf("read 10000 at 100000: %ld bytes, sum %lu\n", n, sum(n));
    return 0;
}
"#;

#[test]
fn one_read_of_a_regular_file_returns_all_of_it_as_on_the_host() {
    let dir = Scratch::new("bigread");
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let data: Vec<u8> = (0..103_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(root.join("data.bin"), &data).unwrap();
    for cc in COMPILERS {
        let prog = compile(cc, BIGREAD, &dir.0, &format!("bigread-{cc}"), &["-static"]);
        std::fs::copy(&prog, root.join("init")).unwrap();
        let (status, stdout) = host(&root.join("init"), &[], &root);
        assert_eq!(status, 0, "{cc}: host run: {stdout}");
        assert!(
            stdout.contains("read: 103000 bytes") && stdout.contains("read 10000 at 100000: 3000 bytes"),
            "{stdout}"
        );
        let run = boot(&["--initrd", root.to_str().unwrap()]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        assert_eq!(run.stdout, stdout, "{cc}: {}", run.all());
    }
}

#[test]
fn an_initrd_archive_made_by_cpio_runs_its_init() {
    let dir = Scratch::new("cpio");
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    compile("musl-gcc", HELLO, &root, "init", &["-static"]);
    std::fs::remove_file(root.join("init.c")).unwrap();
    let archive = dir.0.join("initrd.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && find . | cpio -o -H newc > {}", root.display(), archive.display()))
        .status()
        .expect("run cpio (Debian: apt-get install cpio)");
    assert!(status.success(), "cpio failed");
    let run = boot(&["--initrd", archive.to_str().unwrap()]);
    assert_eq!(run.status, 0, "{}", run.all());
    assert_eq!(run.stdout, "hello, world\n", "{}", run.all());
}

#[test]
fn the_exit_status_is_the_programs() {
    let dir = Scratch::new("status");
    let prog = compile("musl-gcc", "int main(void) { return 42; }", &dir.0, "status", &["-static"]);
    let run = guest(&prog, &[]);
    assert_eq!(run.status, 42, "{}", run.all());
    // A program killed by a signal: 128 + the signal, as a shell says.
    let prog = compile("gcc", "int main(void) { return *(volatile int *)8; }", &dir.0, "segv", &["-static"]);
    let run = guest(&prog, &[]);
    assert_eq!(run.status, 128 + 11, "{}", run.all());
    assert!(run.stderr.contains("segfault at 8"), "{}", run.all());
}

#[test]
fn a_static_pie_runs() {
    let dir = Scratch::new("pie");
    let prog = compile("gcc", HELLO, &dir.0, "hello-pie", &["-static-pie", "-fPIE"]);
    let (status, stdout) = host(&prog, &["x"], &dir.0);
    assert_eq!(status, 0);
    let run = guest(&prog, &["x"]);
    assert_eq!((run.status, run.stdout.as_str()), (0, stdout.as_str()), "{}", run.all());
}

#[test]
fn a_dynamic_binary_is_refused_before_boot() {
    let dir = Scratch::new("dynamic");
    let prog = compile("gcc", HELLO, &dir.0, "hello-dynamic", &[]);
    let run = guest(&prog, &[]);
    assert_eq!(run.status, 1, "{}", run.all());
    assert!(run.stderr.contains("dynamically linked"), "{}", run.all());
    assert!(run.stderr.contains("-static"), "the message says what is needed: {}", run.all());
    assert!(!run.stderr.contains("mmemu kernel"), "refused before boot: {}", run.all());
}

#[test]
fn an_arm_binary_is_refused_before_boot() {
    // An AArch64 executable's ELF header (no cross compiler needed for
    // the loader's check: it reads e_machine).
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // ELFCLASS64
    elf[5] = 1; // little-endian
    elf[6] = 1; // EV_CURRENT
    elf[16] = 2; // ET_EXEC
    elf[18] = 183; // EM_AARCH64
    let f = common::TempFile::new("arm-prog", &elf);
    let run = guest(Path::new(f.path()), &[]);
    assert_eq!(run.status, 1, "{}", run.all());
    assert!(run.stderr.contains("AArch64") && run.stderr.contains("not x86-64"), "{}", run.all());
}

#[test]
fn a_missing_program_is_refused_before_boot() {
    let run = guest(Path::new("/no/such/program"), &[]);
    assert_eq!(run.status, 1, "{}", run.all());
    assert!(run.stderr.contains("cannot read /no/such/program"), "{}", run.all());
    assert!(!run.stderr.contains("mmemu kernel"), "{}", run.all());
}

/// Touches 1000 fresh pages of one malloc'd block and reports its own
/// getrusage fault counts on stderr.
const FAULTS: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
int main(void) {
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    size_t n = 1000;
    volatile char *p = malloc(n * 4096);
    for (size_t i = 0; i < n; i++) p[i * 4096] = 1;
    getrusage(RUSAGE_SELF, &after);
    printf("touched %zu pages\n", n);
    fprintf(stderr, "faults: minflt %ld majflt %ld touching %ld\n", after.ru_minflt, after.ru_majflt,
            after.ru_minflt - before.ru_minflt);
    return 0;
}
"#;

/// The figure after `key` in `text`.
fn figure(text: &str, key: &str) -> Option<i64> {
    let at = text.find(key)? + key.len();
    text[at..].split_whitespace().next()?.parse().ok()
}

#[test]
fn page_fault_counts_are_the_processs_own_and_printed_at_exit() {
    let dir = Scratch::new("faults");
    for cc in COMPILERS {
        let prog = compile(cc, FAULTS, &dir.0, &format!("faults-{cc}"), &["-static"]);
        let host_run = Command::new(&prog).output().expect("run on the host");
        let host_err = String::from_utf8_lossy(&host_run.stderr);
        let run = guest(&prog, &[]);
        assert_eq!(run.status, 0, "{}", run.all());
        assert_eq!(run.stdout, "touched 1000 pages\n", "{}", run.all());
        let touching = figure(&run.stderr, "touching ").unwrap_or_else(|| panic!("no getrusage line: {}", run.all()));
        // One minor fault per first touch of an anonymous page, as Linux
        // without transparent huge pages.
        assert_eq!(touching, 1000, "{}", run.all());
        let exit_minor = figure(&run.stderr, "page faults ").unwrap_or_else(|| panic!("no exit line: {}", run.all()));
        let total = figure(&run.stderr, "minflt ").unwrap_or(0);
        assert!(exit_minor >= total && total >= 1000, "{}", run.all());
        println!(
            "{cc}: touching 1000 pages: guest {touching} minor faults (whole run {exit_minor}); host {} (whole run {})",
            figure(&host_err, "touching ").unwrap_or(-1),
            figure(&host_err, "minflt ").unwrap_or(-1)
        );
    }
}

/// fork, then execve of itself with new arguments in the child (a
/// program of the initramfs: /init), wait4 for it; a failed execve
/// returns ENOENT (perror: on stderr, so not compared).
const EXECER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 2) { printf("child: %s %s (%s)\n", argv[1], argv[2], getenv("X")); return 7; }
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        char *args[] = {argv[0], "after", "execve", NULL};
        char *env[] = {"X=1", NULL};
        execve(argv[0], args, env);
        perror("execve");
        _exit(99);
    }
    int st;
    waitpid(c, &st, 0);
    printf("parent: child exited %d with %d\n", WIFEXITED(st), WEXITSTATUS(st));
    if (execve("/no/such", (char *[]){"x", NULL}, (char *[]){NULL}) < 0) perror("execve of a missing file");
    return WEXITSTATUS(st);
}
"#;

#[test]
fn fork_execve_and_wait() {
    same_as_host("execer", EXECER, &[], 7);
}

/// The child execs itself and touches 300 pages; the parent reads the
/// child's faults from wait4's rusage and getrusage(RUSAGE_CHILDREN).
const CHILD_FAULTS: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1) {
        char *p = malloc(300 * 4096 + 4096);
        for (int i = 0; i < 300; i++) p[i * 4096] = 1;
        struct rusage me;
        getrusage(RUSAGE_SELF, &me);
        printf("child own %ld\n", me.ru_minflt);
        return 0;
    }
    struct rusage before, ru, kids;
    getrusage(RUSAGE_CHILDREN, &before);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        execv(argv[0], (char *[]){argv[0], "child", NULL});
        _exit(99);
    }
    memset(&ru, 0x55, sizeof ru);
    int st;
    if (wait4(c, &st, 0, &ru) != c) return 2;
    getrusage(RUSAGE_CHILDREN, &kids);
    printf("before %ld wait4 min %ld maj %ld children %ld %ld\n", before.ru_minflt, ru.ru_minflt, ru.ru_majflt,
           kids.ru_minflt, kids.ru_majflt);
    return WEXITSTATUS(st);
}
"#;

#[test]
fn wait4_and_rusage_children_report_the_childs_faults_across_its_execve() {
    let dir = Scratch::new("child-faults");
    for cc in COMPILERS {
        let prog = compile(cc, CHILD_FAULTS, &dir.0, &format!("child-faults-{cc}"), &["-static"]);
        for (side, out) in [("host", host(&prog, &[], &dir.0).1), ("guest", guest(&prog, &[]).stdout)] {
            let own = figure(&out, "child own ").unwrap_or_else(|| panic!("{cc} {side}: {out}"));
            let min = figure(&out, "wait4 min ").unwrap_or_else(|| panic!("{cc} {side}: {out}"));
            let maj = figure(&out, " maj ").unwrap_or_else(|| panic!("{cc} {side}: {out}"));
            let kids = figure(&out, "children ").unwrap_or_else(|| panic!("{cc} {side}: {out}"));
            assert_eq!(figure(&out, "before "), Some(0), "{cc} {side}: {out}");
            // wait4's count covers the child's whole life: its faults
            // before the execve too, so at least what it saw of itself
            // after it (Linux counts per task, across execve).
            assert!(own >= 300 && min >= own, "{cc} {side}: {out}");
            assert_eq!(maj, 0, "{cc} {side}: no swap, no major faults: {out}");
            assert_eq!(kids, min, "{cc} {side}: RUSAGE_CHILDREN is the reaped child's total: {out}");
            println!("{cc} {side}: child {own} faults after execve, {min} in its life");
        }
    }
}

/// Reads one byte of every page of a 1 MiB file through a private and
/// a shared read-only mapping, and prints the minor faults each took.
const FILE_FAULTS: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
static long minflt(void) { struct rusage r; getrusage(RUSAGE_SELF, &r); return r.ru_minflt; }
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) return 2;
    unsigned sum = 0;
    for (int shared = 0; shared < 2; shared++) {
        const unsigned char *p = mmap(0, 1 << 20, PROT_READ, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) return 3;
        long f0 = minflt();
        for (int i = 0; i < 256; i++) sum += p[i * 4096];
        printf("%s faults %ld\n", shared ? "shared" : "private", minflt() - f0);
        munmap((void *)p, 1 << 20);
    }
    printf("sum %u\n", sum);
    return 0;
}
"#;

#[test]
fn reading_a_file_mapping_faults_once_per_16_pages_as_linux_faults_around() {
    let dir = Scratch::new("file-faults");
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i / 4096 + i) as u8).collect();
    std::fs::write(root.join("data.bin"), &data).unwrap();
    for cc in COMPILERS {
        let prog = compile(cc, FILE_FAULTS, &dir.0, &format!("file-faults-{cc}"), &["-static"]);
        std::fs::copy(&prog, root.join("init")).unwrap();
        // The host's page cache holds the file just written: Linux maps
        // 16 pages per fault (fault_around_bytes 64 KiB).
        let (status, host_out) = host(&root.join("init"), &["data.bin"], &root);
        assert_eq!(status, 0, "{cc}: host run: {host_out}");
        let run = boot(&["--initrd", root.to_str().unwrap(), "--cmdline=-- /data.bin"]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        assert_eq!(figure(&run.stdout, "sum "), figure(&host_out, "sum "), "{cc}: other data: {}", run.all());
        for kind in ["private", "shared"] {
            let key = format!("{kind} faults ");
            let g = figure(&run.stdout, &key).unwrap_or_else(|| panic!("{cc}: {}", run.all()));
            let h = figure(&host_out, &key).unwrap_or(-1);
            // 256 pages in 64 KiB windows: 16 faults, 17 when the mapping
            // does not start on a 64 KiB boundary.
            assert!((16..=17).contains(&g), "{cc} {kind}: {g} faults for 256 pages (host {h}): {}", run.all());
            println!("{cc} {kind}: 256 pages read: guest {g} faults, host {h}");
        }
    }
}

#[test]
fn an_init_the_kernel_cannot_load_exits_127_with_the_reason() {
    // --initrd takes what it is given (only `-- PROG` is checked on the
    // host): the guest's loader must refuse a truncated executable.
    let dir = Scratch::new("badinit");
    let prog = compile("musl-gcc", HELLO, &dir.0, "hello", &["-static"]);
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let bytes = std::fs::read(&prog).unwrap();
    std::fs::write(root.join("init"), &bytes[..bytes.len() / 2]).unwrap();
    let run = boot(&["--initrd", root.to_str().unwrap()]);
    assert_eq!(run.status, 127, "{}", run.all());
    assert!(run.stderr.contains("Failed to execute /init: a segment lies past the end of the file"), "{}", run.all());
    std::fs::write(root.join("init"), b"#!/bin/sh\necho hi\n").unwrap();
    let run = boot(&["--initrd", root.to_str().unwrap()]);
    assert_eq!(run.status, 127, "{}", run.all());
    assert!(run.stderr.contains("Failed to execute /init: not a 64-bit little-endian ELF"), "{}", run.all());
}

#[test]
fn an_unknown_system_call_is_enosys_and_logged_once_by_name() {
    // vserver (236) is reserved and unimplemented in Linux too.
    let src = r#"
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
    long a = syscall(236), ea = errno;
    long b = syscall(236), eb = errno;
    printf("vserver: %ld %d, %ld %d\n", a, ea == ENOSYS, b, eb == ENOSYS);
    return 0;
}
"#;
    same_as_host("enosys", src, &[], 0);
    let dir = Scratch::new("enosys-log");
    let prog = compile("musl-gcc", src, &dir.0, "enosys", &["-static"]);
    let run = guest(&prog, &[]);
    assert_eq!(run.stdout, "vserver: -1 1, -1 1\n", "{}", run.all());
    assert_eq!(
        run.stderr.matches("init[1]: system call vserver (236) not implemented: -ENOSYS").count(),
        1,
        "logged once, by name: {}",
        run.all()
    );
}

// ---- signals (guest/src/proc/signal.rs) ---------------------------------

/// User-level paging: a SIGSEGV handler (SA_SIGINFO) makes a PROT_NONE
/// page accessible (SEGV_ACCERR) or maps an unmapped one (SEGV_MAPERR),
/// returns, and the faulting store is retried and succeeds; the handler
/// clobbers SSE registers that the interrupted loop keeps a double in
/// (the FPU image of the frame must bring it back), and reads the error
/// code from the ucontext.
const USER_PAGING: &str = r#"
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>
#define PAGES 16
static char *prot_region, *gone_region;
static int accerr, maperr, write_bit, stray;
static void handler(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    char *a = si->si_addr;
    char *page = (char *)((unsigned long)a & ~4095UL);
    volatile double clobber = si->si_code * 3.25;
    clobber = clobber * clobber + 1.0;
    write_bit += (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
    if (sig == SIGSEGV && si->si_code == SEGV_ACCERR && page >= prot_region && page < prot_region + PAGES * 4096) {
        accerr++;
        mprotect(page, 4096, PROT_READ | PROT_WRITE);
    } else if (sig == SIGSEGV && si->si_code == SEGV_MAPERR && page >= gone_region && page < gone_region + PAGES * 4096) {
        maperr++;
        if (mmap(page, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != page) _exit(4);
    } else {
        stray++;
        _exit(3);
    }
}
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    prot_region = mmap(NULL, PAGES * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gone_region = mmap(NULL, PAGES * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (prot_region == MAP_FAILED || gone_region == MAP_FAILED) return 1;
    munmap(gone_region, PAGES * 4096);
    double d = 0.5;
    long sum = 0;
    for (int i = 0; i < PAGES; i++) {
        prot_region[i * 4096 + i] = (char)(i + 1);
        d = d * 1.5 + prot_region[i * 4096 + i];
        gone_region[i * 4096 + 7] = (char)(2 * i);
        d = d * 0.5 + gone_region[i * 4096 + 7];
    }
    for (int i = 0; i < PAGES; i++) sum += prot_region[i * 4096 + i] * 3 + gone_region[i * 4096 + 7];
    printf("accerr %d maperr %d write bit %d stray %d sum %ld d %.6f\n", accerr, maperr, write_bit, stray, sum, d);
    return 0;
}
"#;

#[test]
fn a_sigsegv_handler_maps_the_page_and_the_access_is_retried() {
    same_as_host("userpaging", USER_PAGING, &[], 0);
}

/// kill, raise (tgkill/tkill), sigprocmask and sigaction: blocked signals
/// stay pending and arrive when unblocked (the thread's queue first, then
/// the process's, each set up on top of the last so the last runs first,
/// as Linux); a signal raised in its own handler waits for it to return,
/// unless SA_NODEFER; SA_RESETHAND runs once; SA_ONSTACK runs on the
/// sigaltstack; ignoring a pending signal discards it; SIGKILL's action
/// cannot be set.
const SIGNAL_ORDER: &str = r#"
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static char trace[512];
static volatile int depth, maxdepth, reraise;
static char *alt_lo, *alt_hi;
static void note(const char *s) { strcat(trace, s); }
static void h(int sig) {
    char local;
    depth++;
    if (depth > maxdepth) maxdepth = depth;
    note(sig == SIGUSR1 ? "USR1 " : sig == SIGUSR2 ? "USR2 " : sig == SIGHUP ? "HUP " : sig == SIGALRM ? "ALRM " : "? ");
    if (sig == SIGALRM && reraise) { reraise = 0; raise(SIGALRM); note("alrm-raised "); }
    if (sig == SIGHUP) note(&local >= alt_lo && &local < alt_hi ? "on-altstack " : "not-on-altstack ");
    depth--;
}
static void on(int sig, int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigaction(sig, &sa, NULL);
}
int main(void) {
    on(SIGUSR1, 0);
    on(SIGUSR2, 0);
    sigset_t both, pend;
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGUSR2);
    sigprocmask(SIG_BLOCK, &both, NULL);
    kill(getpid(), SIGUSR2);
    kill(getpid(), SIGUSR1);
    raise(SIGUSR1);
    note("sent ");
    sigpending(&pend);
    printf("pending USR1 %d USR2 %d HUP %d\n", sigismember(&pend, SIGUSR1), sigismember(&pend, SIGUSR2), sigismember(&pend, SIGHUP));
    sigprocmask(SIG_UNBLOCK, &both, NULL);
    note("unblocked | ");
    /* Without SA_NODEFER a raise in the handler waits for it to return. */
    on(SIGALRM, 0);
    reraise = 1;
    raise(SIGALRM);
    printf("deferred: max depth %d\n", maxdepth);
    maxdepth = 0;
    note("| ");
    on(SIGALRM, SA_NODEFER);
    reraise = 1;
    raise(SIGALRM);
    printf("nodefer: max depth %d\n", maxdepth);
    note("| ");
    /* SA_RESETHAND: one run, then the default again; SA_ONSTACK. */
    stack_t ss = {0};
    ss.ss_size = 65536;
    ss.ss_sp = malloc(ss.ss_size);
    alt_lo = ss.ss_sp;
    alt_hi = alt_lo + ss.ss_size;
    if (sigaltstack(&ss, NULL) != 0) printf("sigaltstack failed\n");
    on(SIGHUP, SA_RESETHAND | SA_ONSTACK);
    raise(SIGHUP);
    struct sigaction now;
    sigaction(SIGHUP, NULL, &now);
    printf("after SA_RESETHAND: handler is SIG_DFL %d\n", now.sa_handler == SIG_DFL);
    /* Ignored signals vanish, even when sent while blocked then ignored. */
    signal(SIGUSR1, SIG_IGN);
    raise(SIGUSR1);
    sigprocmask(SIG_BLOCK, &both, NULL);
    on(SIGUSR2, 0);
    raise(SIGUSR2);
    signal(SIGUSR2, SIG_IGN);
    sigpending(&pend);
    printf("ignored while pending: USR2 pending %d\n", sigismember(&pend, SIGUSR2));
    sigprocmask(SIG_UNBLOCK, &both, NULL);
    /* SIGKILL cannot be caught or blocked. */
    struct sigaction sa = {0};
    sa.sa_handler = h;
    printf("sigaction(SIGKILL) %d, sigaction(65) %d\n", sigaction(SIGKILL, &sa, NULL), sigaction(65, &sa, NULL));
    printf("trace: %s\n", trace);
    return 0;
}
"#;

#[test]
fn kill_sigaction_and_sigprocmask_deliver_in_linuxs_order() {
    same_as_host("sigorder", SIGNAL_ORDER, &[], 0);
}

/// Children dying by signal (abort, a null write, SIGTERM to itself,
/// SIGUSR1 from the parent while it sleeps in pause) are seen by the
/// parent's wait4 as WIFSIGNALED with the signal; an ignored SIGTERM does
/// nothing; SIGCHLD (blocked, awaited with sigsuspend) carries the
/// child's pid, CLD_EXITED and status; WNOHANG with no child left fails.
const DEATH_BY_SIGNAL: &str = r#"
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
static volatile int chld_pid, chld_code, chld_status, chld_count;
static void on_chld(int sig, siginfo_t *si, void *uc) {
    chld_pid = si->si_pid;
    chld_code = si->si_code;
    chld_status = si->si_status;
    chld_count++;
}
static void report(const char *what, pid_t c) {
    int st = 0;
    if (waitpid(c, &st, 0) != c) { printf("%s: waitpid failed\n", what); return; }
    if (WIFSIGNALED(st)) printf("%s: killed by signal %d\n", what, WTERMSIG(st));
    else if (WIFEXITED(st)) printf("%s: exited %d\n", what, WEXITSTATUS(st));
}
int main(void) {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) abort();
    report("abort", c);
    c = fork();
    if (c == 0) { *(volatile int *)16 = 1; _exit(0); }
    report("null write", c);
    c = fork();
    if (c == 0) { kill(getpid(), SIGTERM); _exit(0); }
    report("SIGTERM to itself", c);
    c = fork();
    if (c == 0) { for (;;) pause(); }
    kill(c, SIGUSR1);
    report("SIGUSR1 from the parent", c);
    c = fork();
    if (c == 0) { signal(SIGTERM, SIG_IGN); kill(getpid(), SIGTERM); _exit(9); }
    report("SIGTERM ignored", c);
    /* SIGCHLD: blocked, then waited for with sigsuspend. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t chld, none;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    c = fork();
    if (c == 0) _exit(3);
    while (chld_count == 0) sigsuspend(&none);
    printf("SIGCHLD: from the child %d, code CLD_EXITED %d, status %d\n", chld_pid == c, chld_code == CLD_EXITED, chld_status);
    report("the child SIGCHLD told of", c);
    int st;
    printf("no child left: %d\n", waitpid(-1, &st, WNOHANG));
    return 0;
}
"#;

#[test]
fn death_by_signal_is_seen_by_the_parents_wait4() {
    let dir = Scratch::new("death");
    for cc in COMPILERS {
        let prog = compile(cc, DEATH_BY_SIGNAL, &dir.0, &format!("death-{cc}"), &["-static"]);
        let (status, stdout) = host(&prog, &[], &dir.0);
        assert_eq!(status, 0, "{cc}: host run: {stdout}");
        let run = guest(&prog, &[]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        assert_eq!(run.stdout, stdout, "{cc}: {}", run.all());
        // The null write is reported as Linux reports an unhandled
        // segfault, and only that child died of it.
        assert_eq!(run.stderr.matches("segfault at 10 ").count(), 1, "{cc}: {}", run.all());
    }
}

/// A fault with no handler still kills with the segfault line (the
/// built-in programs' path, tests/processes.rs), and so does one whose
/// handler is blocked; a handler that returns without fixing anything
/// faults again, forever, as on Linux (not tested: it would spin).
#[test]
fn a_blocked_sigsegv_handler_does_not_save_the_process() {
    let src = r#"
#include <signal.h>
#include <stdio.h>
static void h(int sig) { printf("handler ran\n"); }
int main(void) {
    signal(SIGSEGV, h);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGSEGV);
    sigprocmask(SIG_BLOCK, &s, NULL);
    return *(volatile int *)8;
}
"#;
    let dir = Scratch::new("blockedsegv");
    for cc in COMPILERS {
        let prog = compile(cc, src, &dir.0, &format!("blockedsegv-{cc}"), &["-static"]);
        let run = guest(&prog, &[]);
        assert_eq!(run.status, 128 + 11, "{cc}: {}", run.all());
        assert_eq!(run.stdout, "", "{cc}: {}", run.all());
        assert!(run.stderr.contains("segfault at 8 "), "{cc}: {}", run.all());
    }
}

// ---- address space: mremap, mincore, msync, limits, overcommit ----------
// (guest/src/proc/mman.rs, guest/src/mm/overcommit.rs)

/// mremap: growth blocked without MREMAP_MAYMOVE, growth with a move
/// (the data comes along, resident without new faults, the old range is
/// gone), shrink in place, growth in place, MREMAP_FIXED, the refusals;
/// mincore's residency and msync's checks.
const MREMAP: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#define P 4096UL
static int check(const char *p, unsigned long pages, int seed) {
    for (unsigned long i = 0; i < pages; i++)
        for (unsigned long j = 0; j < P; j += 512)
            if (p[i * P + j] != (char)(i * 7 + j / 512 + seed)) return 0;
    return 1;
}
static void fill(char *p, unsigned long pages, int seed) {
    for (unsigned long i = 0; i < pages; i++)
        for (unsigned long j = 0; j < P; j += 512) p[i * P + j] = (char)(i * 7 + j / 512 + seed);
}
static int resident(char *p, unsigned long pages) {
    unsigned char v[64];
    if (mincore(p, pages * P, v) != 0) return -errno;
    int n = 0;
    for (unsigned long i = 0; i < pages; i++) n += v[i] & 1;
    return n;
}
int main(void) {
    /* 8 pages; the first 4 grow to 16: pages 4..7 are in the way, so without MREMAP_MAYMOVE it fails. */
    char *a = mmap(NULL, 8 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fill(a, 8, 1);
    errno = 0;
    void *r = mremap(a, 4 * P, 16 * P, 0);
    printf("grow blocked without MAYMOVE: %s\n", r == MAP_FAILED && errno == ENOMEM ? "ENOMEM" : "?");
    char *b = mremap(a, 4 * P, 16 * P, MREMAP_MAYMOVE);
    printf("grow with move: moved %d, data kept %d, resident %d of 16\n", b != a, check(b, 4, 1), resident(b, 16));
    printf("old range: the moved part is gone (mincore %s), the rest stays %d\n",
           resident(a, 4) == -ENOMEM ? "ENOMEM" : "?", check(a + 4 * P, 4, 1 + 28));
    fill(b + 4 * P, 12, 5);
    printf("new pages writable, resident %d of 16\n", resident(b, 16));
    /* Shrink in place. */
    char *c = mremap(b, 16 * P, 2 * P, 0);
    printf("shrink: same place %d, data kept %d, tail gone (mincore %s)\n", c == b, check(c, 2, 1),
           resident(b + 2 * P, 1) == -ENOMEM ? "ENOMEM" : "?");
    /* Grow in place where there is room (a fresh spot with free space after it). */
    char *d = mmap(NULL, 64 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(d + 4 * P, 60 * P);
    fill(d, 4, 9);
    char *e = mremap(d, 4 * P, 32 * P, 0);
    printf("grow in place: same place %d, data kept %d\n", e == d, check(e, 4, 9));
    /* MREMAP_FIXED to a chosen free address. */
    char *spot = mmap(NULL, 8 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(spot, 8 * P);
    char *f = mremap(e, 4 * P, 8 * P, MREMAP_MAYMOVE | MREMAP_FIXED, spot);
    printf("fixed: at the spot %d, data kept %d\n", f == spot, check(f, 4, 9));
    errno = 0;
    r = mremap(f, 4 * P, 4 * P, MREMAP_FIXED, spot + P);
    printf("FIXED without MAYMOVE: %s\n", r == MAP_FAILED && errno == EINVAL ? "EINVAL" : "?");
    errno = 0;
    r = mremap(spot + 100 * P, P, 2 * P, MREMAP_MAYMOVE);
    printf("unmapped source: %s\n", r == MAP_FAILED && errno == EFAULT ? "EFAULT" : "?");
    printf("msync: %d %d, unmapped %s\n", msync(f, 8 * P, MS_SYNC), msync(f, P, MS_ASYNC),
           msync(spot + 100 * P, P, MS_SYNC) == -1 && errno == ENOMEM ? "ENOMEM" : "?");
    return 0;
}
"#;

#[test]
fn mremap_grows_moves_and_shrinks_keeping_the_data() {
    same_as_host("mremap", MREMAP, &[], 0);
}

/// RLIMIT_AS refuses mmap, malloc and brk beyond it; RLIMIT_STACK kills
/// a recursion that outgrows it with SIGSEGV (the default limit lets the
/// same depth through).
const RLIMITS: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <unistd.h>
static int deep(int n) {
    volatile char pad[4096];
    pad[0] = (char)n;
    pad[4095] = (char)n;
    return n == 0 ? pad[0] : deep(n - 1) + pad[4095];
}
int main(void) {
    struct rlimit as = {64 << 20, 64 << 20}, got;
    if (setrlimit(RLIMIT_AS, &as) != 0) { perror("setrlimit"); return 1; }
    getrlimit(RLIMIT_AS, &got);
    printf("RLIMIT_AS now %lu MiB\n", (unsigned long)got.rlim_cur >> 20);
    errno = 0;
    void *big = mmap(NULL, 100 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap 100 MiB: %s\n", big == MAP_FAILED && errno == ENOMEM ? "ENOMEM" : "mapped");
    void *small = mmap(NULL, 16 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap 16 MiB: %s\n", small == MAP_FAILED ? "failed" : "mapped");
    errno = 0;
    void *m = malloc(80 << 20);
    printf("malloc 80 MiB: %s\n", m ? "got it" : errno == ENOMEM ? "NULL, ENOMEM" : "NULL");
    /* brk directly: musl's sbrk refuses any increment itself. */
    long cur = syscall(SYS_brk, 0), want = cur + (80L << 20);
    printf("brk +80 MiB: %s\n", syscall(SYS_brk, want) == want ? "grew" : "refused");
    want = cur + (1L << 20);
    printf("brk +1 MiB: %s\n", syscall(SYS_brk, want) == want ? "grew" : "refused");
    printf("lowering both limits: %d\n",
           (as.rlim_max = 63 << 20, as.rlim_cur = 63 << 20, setrlimit(RLIMIT_AS, &as)));
    struct rlimit bad = {2, 1};
    errno = 0;
    printf("soft above hard: %s\n", setrlimit(RLIMIT_STACK, &bad) == -1 && errno == EINVAL ? "EINVAL" : "?");
    fflush(stdout);
    /* RLIMIT_STACK: a child whose stack may not grow past 256 KiB recurses 1 MiB deep. */
    pid_t c = fork();
    if (c == 0) {
        struct rlimit st = {256 << 10, 256 << 10};
        setrlimit(RLIMIT_STACK, &st);
        struct rlimit core = {0, 0};
        setrlimit(RLIMIT_CORE, &core);
        printf("unreachable %d\n", deep(256));
        _exit(0);
    }
    int status;
    waitpid(c, &status, 0);
    printf("deep recursion under RLIMIT_STACK 256 KiB: %s %d\n", WIFSIGNALED(status) ? "killed by signal" : "exited",
           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    c = fork();
    if (c == 0) _exit(deep(64) & 1);
    waitpid(c, &status, 0);
    printf("recursion 256 KiB deep under the default limit: exited %d\n", WIFEXITED(status));
    return 0;
}
"#;

#[test]
fn rlimit_as_and_rlimit_stack_are_enforced() {
    let dir = Scratch::new("rlimit");
    for cc in COMPILERS {
        let prog = compile(cc, RLIMITS, &dir.0, &format!("rlimit-{cc}"), &["-static"]);
        let (status, stdout) = host(&prog, &[], &dir.0);
        assert_eq!(status, 0, "{cc}: host run: {stdout}");
        let run = guest(&prog, &[]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        assert_eq!(run.stdout, stdout, "{cc}: {}", run.all());
        assert!(run.stdout.contains("killed by signal 11"), "{cc}: {}", run.all());
    }
}

/// Maps `argv[1]` MiB privately writable, with MAP_NORESERVE, read-only,
/// then 16 MiB, then grows the brk heap by as much.
const OVERCOMMIT: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
static const char *try(size_t mb, int prot, int flags) {
    void *p = mmap(NULL, mb << 20, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
    if (p == MAP_FAILED) return strerror(errno);
    munmap(p, mb << 20);
    return "mapped";
}
int main(int argc, char **argv) {
    size_t mb = argc > 1 ? strtoul(argv[1], 0, 0) : 200;
    printf("private writable %zu MiB: %s\n", mb, try(mb, PROT_READ | PROT_WRITE, 0));
    printf("MAP_NORESERVE %zu MiB: %s\n", mb, try(mb, PROT_READ | PROT_WRITE, MAP_NORESERVE));
    printf("read-only %zu MiB: %s\n", mb, try(mb, PROT_READ, 0));
    printf("private writable 16 MiB: %s\n", try(16, PROT_READ | PROT_WRITE, 0));
    /* brk directly: musl's sbrk refuses any increment itself. */
    long cur = syscall(SYS_brk, 0), want = cur + (long)(mb << 20);
    printf("brk +%zu MiB: %s\n", mb, syscall(SYS_brk, want) == want ? "grew" : "refused");
    return 0;
}
"#;

#[test]
fn overcommit_memory_2_refuses_what_passes_the_commit_limit() {
    let dir = Scratch::new("overcommit");
    let prog = compile("musl-gcc", OVERCOMMIT, &dir.0, "overcommit", &["-static"]);
    let line = |out: &str, what: &str| out.lines().find(|l| l.starts_with(what)).map(|l| l.to_string());
    // 200 MiB of a 256 MiB guest without swap: mode 0 lets it through;
    // mode 2 (CommitLimit = half the RAM) refuses every charged form,
    // MAP_NORESERVE included, and still maps read-only memory (not
    // charged) and a small mapping.
    let run = boot(&["--cmdline", "meminfo", "--", prog.to_str().unwrap(), "200"]);
    assert_eq!(run.status, 0, "{}", run.all());
    assert_eq!(
        run.stdout,
        "private writable 200 MiB: mapped\nMAP_NORESERVE 200 MiB: mapped\nread-only 200 MiB: mapped\n\
         private writable 16 MiB: mapped\nbrk +200 MiB: grew\n",
        "{}",
        run.all()
    );
    let run = boot(&["--cmdline", "overcommit_memory=2 meminfo", "--", prog.to_str().unwrap(), "200"]);
    assert_eq!(run.status, 0, "{}", run.all());
    assert_eq!(
        run.stdout,
        "private writable 200 MiB: Out of memory\nMAP_NORESERVE 200 MiB: Out of memory\n\
         read-only 200 MiB: mapped\nprivate writable 16 MiB: mapped\nbrk +200 MiB: refused\n",
        "{}",
        run.all()
    );
    // CommitLimit = MemManaged * overcommit_ratio (50) / 100, no swap.
    let kb = |l: Option<String>| -> u64 {
        l.and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("{}", run.all()))
    };
    let managed = kb(line(&run.stderr, "MemManaged:"));
    assert_eq!(kb(line(&run.stderr, "CommitLimit:")), managed / 4 * 50 / 100 * 4, "{}", run.all());
    assert!(line(&run.stderr, "Committed_AS:").is_some(), "{}", run.all());
    // 1 GiB: more than RAM + swap, refused by mode 0's heuristic unless
    // MAP_NORESERVE; mode 1 maps anything.
    let run = boot(&["--", prog.to_str().unwrap(), "1024"]);
    assert_eq!(line(&run.stdout, "private writable 1024").as_deref(), Some("private writable 1024 MiB: Out of memory"));
    assert_eq!(line(&run.stdout, "MAP_NORESERVE").as_deref(), Some("MAP_NORESERVE 1024 MiB: mapped"));
    let run = boot(&["--cmdline", "overcommit_memory=1", "--", prog.to_str().unwrap(), "1024"]);
    assert_eq!(line(&run.stdout, "private writable 1024").as_deref(), Some("private writable 1024 MiB: mapped"));
    let run = boot(&["--cmdline", "overcommit_memory=3", "--", prog.to_str().unwrap(), "1"]);
    assert!(run.stderr.contains("overcommit_memory=3: want 0, 1 or 2"), "{}", run.all());
}

/// statx agrees with stat on a file of the initramfs (the program
/// itself), by path and by descriptor.
const STATX: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
struct sx { /* Linux's struct statx */
    uint32_t mask, blksize; uint64_t attributes; uint32_t nlink, uid, gid; uint16_t mode, pad0;
    uint64_t ino, size, blocks, attributes_mask; uint64_t ts[8];
    uint32_t rdev_major, rdev_minor, dev_major, dev_minor; uint64_t spare[14];
};
int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : argv[0];
    struct stat st;
    struct sx x;
    if (stat(path, &st) != 0) return 2;
    if (syscall(SYS_statx, AT_FDCWD, path, 0, 0x7ff, &x) != 0) { perror("statx"); return 3; }
    printf("statx agrees with stat: size %d mode %d ino %d nlink %d blocks %d, basic stats %d, regular %d\n",
           x.size == (uint64_t)st.st_size, x.mode == st.st_mode, x.ino == st.st_ino, x.nlink == st.st_nlink,
           x.blocks == (uint64_t)st.st_blocks, (x.mask & 0x7ff) == 0x7ff, S_ISREG(x.mode));
    int fd = open(path, O_RDONLY);
    struct sx y;
    printf("AT_EMPTY_PATH on a descriptor: %d\n",
           syscall(SYS_statx, fd, "", AT_EMPTY_PATH, 0x7ff, &y) == 0 && y.size == x.size && y.ino == x.ino);
    return 0;
}
"#;

#[test]
fn statx_agrees_with_stat() {
    same_as_host("statx", STATX, &[], 0);
}

/// Real-time signals (issue 15): queued, not merged as standard signals
/// are (three `sigqueue`s of SIGUSR1 while blocked deliver once, of
/// SIGRTMIN three times, oldest first, each with its own SI_QUEUE
/// si_value and the sender's pid, a `kill` of one queued among them);
/// lowest number first; RLIMIT_SIGPENDING caps what is queued (EAGAIN
/// for `sigqueue`, while `kill` still makes the signal pending, without
/// its information); to another process (the child's handler sees the
/// parent's pid); a forged SI_USER siginfo for another process is EPERM.
/// Printed relative to SIGRTMIN (glibc's is 34, musl's 35). With an
/// argument it also prints how many the limit let through, which on the
/// host depends on what other processes of the user have pending.
const RT_SIGNALS: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
static char trace[1024];
static pid_t from;
static void h(int sig, siginfo_t *si, void *uc) {
    char b[96];
    const char *code = si->si_code == SI_QUEUE ? "queue" : si->si_code == SI_USER ? "user" : "other";
    const char *who = si->si_pid == from ? "sender" : si->si_pid == 0 ? "none" : "someone else";
    int value = si->si_code == SI_QUEUE ? si->si_value.sival_int : -1;
    if (sig == SIGUSR1) snprintf(b, sizeof b, "USR1(%s %d %s) ", code, value, who);
    else snprintf(b, sizeof b, "RT%d(%s %d %s) ", sig - SIGRTMIN, code, value, who);
    strcat(trace, b);
}
static sigset_t set;
static void catch_all(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = SA_SIGINFO;
    sa.sa_mask = set; /* one handler at a time: the trace is the delivery order */
    sigaction(SIGUSR1, &sa, NULL);
    for (int i = 0; i < 3; i++) sigaction(SIGRTMIN + i, &sa, NULL);
}
static int queue(pid_t pid, int sig, int v) {
    union sigval sv;
    sv.sival_int = v;
    return sigqueue(pid, sig, sv);
}
int main(int argc, char **argv) {
    int exact = argc > 1;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    for (int i = 0; i < 3; i++) sigaddset(&set, SIGRTMIN + i);
    catch_all();
    sigprocmask(SIG_BLOCK, &set, NULL);
    from = getpid();
    for (int i = 0; i < 3; i++) queue(getpid(), SIGRTMIN + 1, 10 + i);
    for (int i = 0; i < 3; i++) queue(getpid(), SIGRTMIN, 20 + i);
    kill(getpid(), SIGRTMIN);
    for (int i = 0; i < 3; i++) queue(getpid(), SIGUSR1, 30 + i);
    sigset_t pend;
    sigpending(&pend);
    printf("pending: USR1 %d RT0 %d RT1 %d RT2 %d\n", sigismember(&pend, SIGUSR1), sigismember(&pend, SIGRTMIN),
           sigismember(&pend, SIGRTMIN + 1), sigismember(&pend, SIGRTMIN + 2));
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    printf("delivered: %s\n", trace);

    /* The limit counts what the user has queued anywhere: on a busy
     * host other processes' pending signals take some of it, so only
     * the guest (`exact`) can say how many. */
    struct rlimit was, rl;
    getrlimit(RLIMIT_SIGPENDING, &was);
    rl.rlim_cur = 8;
    rl.rlim_max = was.rlim_max;
    if (setrlimit(RLIMIT_SIGPENDING, &rl) != 0) printf("setrlimit failed\n");
    getrlimit(RLIMIT_SIGPENDING, &rl);
    sigprocmask(SIG_BLOCK, &set, NULL);
    trace[0] = 0;
    int ok = 0, eagain = 0;
    for (int i = 0; i < 12; i++) {
        if (queue(getpid(), SIGRTMIN, 40 + i) == 0) ok++;
        else if (errno == EAGAIN) eagain++;
    }
    int k = kill(getpid(), SIGRTMIN + 1);
    sigpending(&pend);
    if (exact) printf("RLIMIT_SIGPENDING %d: %d queued, %d EAGAIN\n", (int)rl.rlim_cur, ok, eagain);
    printf("RLIMIT_SIGPENDING %d: at most 8 queued %d, the rest EAGAIN %d; kill past it returns %d, pending %d\n",
           (int)rl.rlim_cur, ok <= 8, ok + eagain == 12, k, sigismember(&pend, SIGRTMIN + 1));
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    char want[1024] = "";
    for (int i = 0; i < ok; i++) {
        char b[64];
        snprintf(b, sizeof b, "RT0(queue %d sender) ", 40 + i);
        strcat(want, b);
    }
    strcat(want, "RT1(user -1 none) ");
    printf("delivered: the queued ones in order, then kill's without its information: %d\n", strcmp(trace, want) == 0);
    if (strcmp(trace, want) != 0) printf("  %s\n", trace);
    setrlimit(RLIMIT_SIGPENDING, &was);

    /* To a child that blocks them (the mask is inherited) until told. */
    trace[0] = 0;
    int p[2];
    pipe(p);
    sigprocmask(SIG_BLOCK, &set, NULL);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        char x;
        from = getppid();
        read(p[0], &x, 1);
        siginfo_t si;
        memset(&si, 0, sizeof si);
        si.si_signo = SIGRTMIN;
        si.si_code = SI_USER;
        long r = syscall(SYS_rt_sigqueueinfo, getppid(), SIGRTMIN, &si);
        printf("child: a forged SI_USER to the parent: %ld EPERM %d\n", r, r == -1 && errno == EPERM);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        printf("child: delivered: %s\n", trace);
        return 0;
    }
    for (int i = 0; i < 3; i++) queue(c, SIGRTMIN + 2, 50 + i);
    queue(c, SIGRTMIN, 60);
    write(p[1], "x", 1);
    int st;
    waitpid(c, &st, 0);
    printf("child exited %d\n", WEXITSTATUS(st));
    return 0;
}
"#;

#[test]
fn real_time_signals_are_queued_with_their_values() {
    same_as_host("rtsig", RT_SIGNALS, &[], 0);
    // In the guest nothing else is pending: exactly the limit is queued.
    let dir = Scratch::new("rtsig-exact");
    let prog = compile("musl-gcc", RT_SIGNALS, &dir.0, "rtsig-exact", &["-static"]);
    let run = guest(&prog, &["exact"]);
    assert_eq!(run.status, 0, "{}", run.all());
    assert!(run.stdout.contains("RLIMIT_SIGPENDING 8: 8 queued, 4 EAGAIN\n"), "{}", run.all());
}

/// nanosleep (35, called directly: glibc's wrapper uses clock_nanosleep)
/// and clock_nanosleep (230) on CLOCK_MONOTONIC and CLOCK_REALTIME,
/// relative and TIMER_ABSTIME, each lasting at least what was asked
/// (measured with clock_gettime); -EINVAL for a bad tv_nsec or clock;
/// glibc's and musl's `usleep`; and a signal ending a long sleep with
/// EINTR and the time left in `rem` (a child sends SIGUSR1 every 20 ms
/// while /proc says the parent sleeps, until the parent kills it: the
/// child runs while the parent sleeps, blocked).
const SLEEP: &str = r#"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static long long now(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}
static volatile int got;
static void on_usr1(int s) { (void)s; got++; }
/// Whether /proc/PID/status says the task sleeps.
static int sleeping(const char *status) {
    FILE *f = fopen(status, "r");
    char line[128];
    int s = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "State:", 6) == 0) s = strstr(line, "S (sleeping)") != NULL;
    if (f) fclose(f);
    return s;
}
int main(void) {
    long long t0 = now(CLOCK_MONOTONIC);
    struct timespec req = {0, 20 * 1000000}, rem = {0, 0};
    long r = syscall(SYS_nanosleep, &req, &rem);
    long long d = now(CLOCK_MONOTONIC) - t0;
    printf("nanosleep 20 ms: %ld, slept enough %d\n", r, d >= 20000000LL);
    t0 = now(CLOCK_MONOTONIC);
    req.tv_nsec = 15 * 1000000;
    int e = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem);
    d = now(CLOCK_MONOTONIC) - t0;
    printf("clock_nanosleep MONOTONIC 15 ms: %d, slept enough %d\n", e, d >= 15000000LL);
    long long target = now(CLOCK_REALTIME) + 12 * 1000000LL;
    struct timespec abs = {target / 1000000000LL, target % 1000000000LL};
    e = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &abs, NULL);
    printf("clock_nanosleep REALTIME TIMER_ABSTIME: %d, reached %d\n", e, now(CLOCK_REALTIME) >= target);
    target = now(CLOCK_MONOTONIC) - 1000000;
    abs.tv_sec = target / 1000000000LL; abs.tv_nsec = target % 1000000000LL;
    printf("an absolute time already past: %d\n", clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL));
    t0 = now(CLOCK_MONOTONIC);
    usleep(10000);
    printf("usleep 10 ms: slept enough %d\n", now(CLOCK_MONOTONIC) - t0 >= 10000000LL);
    struct timespec bad = {0, 1000000000L};
    errno = 0;
    r = syscall(SYS_nanosleep, &bad, NULL);
    printf("tv_nsec 1e9: %ld EINVAL %d; ", r, errno == EINVAL);
    bad.tv_nsec = -1;
    printf("tv_nsec -1: %d; ", clock_nanosleep(CLOCK_MONOTONIC, 0, &bad, NULL) == EINVAL);
    printf("bad clock: %d\n", clock_nanosleep(99, 0, &req, NULL) == EINVAL);

    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    fflush(stdout);
    pid_t parent = getpid(), c = fork();
    if (c == 0) {
        struct timespec tick = {0, 20 * 1000000};
        char status[64];
        snprintf(status, sizeof status, "/proc/%d/status", (int)parent);
        // Only at a parent seen asleep (blocked, not spinning).
        for (int i = 0; i < 500; i++) {
            nanosleep(&tick, NULL);
            if (sleeping(status)) kill(parent, SIGUSR1);
        }
        _exit(1);
    }
    struct timespec lng = {5, 0};
    int eintr = 0, tries = 0;
    long long left = 0;
    while (!eintr && tries < 3) {
        tries++;
        rem.tv_sec = rem.tv_nsec = 0;
        errno = 0;
        r = syscall(SYS_nanosleep, &lng, &rem);
        if (r == -1 && errno == EINTR) {
            eintr = 1;
            left = rem.tv_sec * 1000000000LL + rem.tv_nsec;
        }
    }
    int eintr2 = 0;
    long long left2 = 0;
    rem.tv_sec = rem.tv_nsec = 0;
    e = clock_nanosleep(CLOCK_MONOTONIC, 0, &lng, &rem);
    if (e == EINTR) { eintr2 = 1; left2 = rem.tv_sec * 1000000000LL + rem.tv_nsec; }
    kill(c, SIGKILL);
    int st;
    waitpid(c, &st, 0);
    printf("a signal interrupts: EINTR %d, handler ran %d, 0 < rem < 5 s %d; clock_nanosleep EINTR %d, 0 < rem < 5 s %d\n",
           eintr, got > 0, left > 0 && left < 5000000000LL, eintr2, left2 > 0 && left2 < 5000000000LL);
    return 0;
}
"#;

#[test]
fn nanosleep_and_clock_nanosleep_sleep_and_a_signal_interrupts_them() {
    same_as_host("sleep", SLEEP, &[], 0);
}

/// sysinfo(2) against /proc/meminfo: the same total and swap (to the
/// byte), free memory near MemFree, mem_unit 1, tasks counted, uptime.
const SYSINFO: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/sysinfo.h>
static unsigned long long field(const char *name) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long v = ~0ULL;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, name, strlen(name)) == 0) sscanf(line + strlen(name), " %llu", &v);
    if (f) fclose(f);
    return v;
}
int main(void) {
    struct sysinfo si;
    memset(&si, 0xa5, sizeof si);
    int r = sysinfo(&si);
    unsigned long long total = field("MemTotal:"), free = field("MemFree:"), swap = field("SwapTotal:"),
                       swapfree = field("SwapFree:");
    long long dfree = (long long)(si.freeram / 1024) - (long long)free;
    printf("sysinfo: %d, mem_unit %u\n", r, si.mem_unit);
    printf("totalram = MemTotal %d, totalswap = SwapTotal %d, freeswap = SwapFree %d\n",
           si.totalram / 1024 == total, si.totalswap / 1024 == swap, si.freeswap / 1024 == swapfree);
    printf("0 < freeram <= totalram %d, freeram near MemFree %d, sharedram <= totalram %d\n",
           si.freeram > 0 && si.freeram <= si.totalram, dfree < (long long)total / 8 && -dfree < (long long)total / 8,
           si.sharedram <= si.totalram);
    printf("procs >= 1 %d, uptime > 0 %d\n", si.procs >= 1, si.uptime > 0);
    return 0;
}
"#;

#[test]
fn sysinfo_reports_the_counters_of_proc_meminfo() {
    same_as_host("sysinfo", SYSINFO, &[], 0);
}

/// chdir, fchdir and getcwd, and relative paths resolved from the
/// working directory by open, stat, access, mkdir, unlink, rmdir and
/// execve; fork inherits the directory (a child's chdir stays its own),
/// execve keeps it; ENOENT and ENOTDIR as Linux. Paths are printed
/// relative to the starting directory (the host's scratch directory,
/// the guest's root).
const CWD: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
static char base[4096];
static const char *cwd(void) {
    static char buf[4096];
    if (!getcwd(buf, sizeof buf)) return "(getcwd failed)";
    size_t n = strlen(base);
    if (strcmp(buf, base) == 0) return "/";
    return strncmp(buf, base, n) == 0 ? buf + n : buf;
}
int main(int argc, char **argv) {
    if (argc > 2) {
        strcpy(base, argv[2]);
        int there = access("../f", F_OK) == 0;
        printf("after execve of a relative path: cwd %s, ../f is there %d\n", cwd(), there);
        return 0;
    }
    // Each call its own statement: the order of a printf's arguments is
    // not C's to fix.
    int self = open(argv[0], O_RDONLY);
    if (!getcwd(base, sizeof base)) return 1;
    if (strcmp(base, "/") == 0) base[0] = 0;
    int r1 = mkdir("d1", 0755), r2 = chdir("d1");
    printf("mkdir d1 %d, chdir d1 %d: cwd %s\n", r1, r2, cwd());
    int fd = open("f", O_CREAT | O_WRONLY, 0644);
    r1 = write(fd, "hello", 5);
    printf("open f %d, write %d\n", fd >= 0, r1);
    close(fd);
    struct stat st;
    r1 = stat("../d1/f", &st);
    r2 = access("f", R_OK);
    printf("stat ../d1/f %d size %ld, access f %d\n", r1, (long)st.st_size, r2);
    r1 = mkdir("sub", 0755);
    r2 = chdir("sub/");
    printf("mkdir sub %d, chdir sub/ %d: cwd %s\n", r1, r2, cwd());
    r1 = chdir("..");
    printf("chdir .. %d: cwd %s\n", r1, cwd());
    errno = 0;
    r1 = chdir("missing");
    printf("chdir missing: %d ENOENT %d; ", r1, errno == ENOENT);
    errno = 0;
    r1 = chdir("f");
    printf("chdir f: %d ENOTDIR %d; ", r1, errno == ENOTDIR);
    errno = 0;
    r1 = open("missing/x", O_RDONLY);
    printf("open missing/x: ENOENT %d; cwd %s\n", r1 < 0 && errno == ENOENT, cwd());
    int d = open("sub", O_RDONLY | O_DIRECTORY);
    r1 = fchdir(d);
    printf("fchdir sub %d: cwd %s; ", r1, cwd());
    errno = 0;
    r1 = fchdir(self);
    printf("fchdir of a file: ENOTDIR %d\n", r1 < 0 && errno == ENOTDIR);
    close(d);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        printf("child: cwd %s", cwd());
        r1 = chdir("/");
        printf(", chdir / %d\n", r1);
        fflush(stdout);
        _exit(0);
    }
    int s;
    waitpid(c, &s, 0);
    printf("parent after the child's chdir: cwd %s\n", cwd());
    // A copy of this program here, run by a relative path.
    int out = open("me", O_CREAT | O_WRONLY | O_TRUNC, 0755);
    char buf[4096];
    ssize_t n;
    while ((n = read(self, buf, sizeof buf)) > 0) write(out, buf, n);
    close(out);
    fflush(stdout);
    c = fork();
    if (c == 0) {
        char *args[] = {"me", "child", base, NULL};
        execve("me", args, NULL);
        printf("execve failed: %s\n", strerror(errno));
        fflush(stdout);
        _exit(1);
    }
    waitpid(c, &s, 0);
    r1 = unlink("me");
    r2 = unlink("../f");
    int r3 = chdir("../.."), r4 = rmdir("d1/sub"), r5 = rmdir("d1");
    printf("unlink me %d, unlink ../f %d, chdir ../.. %d, rmdir d1/sub %d, rmdir d1 %d: cwd [%s]\n", r1, r2, r3, r4, r5,
           cwd());
    return WEXITSTATUS(s);
}
"#;

#[test]
fn chdir_fchdir_and_getcwd_and_relative_paths_resolve_from_the_working_directory() {
    same_as_host("cwd", CWD, &[], 0);
}

/// MAP_FIXED_NOREPLACE (-EEXIST over a mapping, exactly at the address
/// otherwise), MAP_POPULATE (resident at return, per mincore, and no
/// fault on touching it, per getrusage's ru_minflt, where an unpopulated
/// mapping takes one per page) and MAP_GROWSDOWN (a fault just below the
/// mapping grows it down, as the stack grows). The results are printed
/// at the end so that no stdio allocation lands in the gaps.
const MMAP_FLAGS: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#define PG 4096L
static long minflt(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}
static int resident(char *p, long pages) {
    unsigned char v[64];
    if (mincore(p, pages * PG, v) != 0) return -1;
    int n = 0;
    for (long i = 0; i < pages; i++) n += v[i] & 1;
    return n;
}
int main(void) {
    char out[2048];
    int o = 0;
    int rw = PROT_READ | PROT_WRITE, anon = MAP_PRIVATE | MAP_ANONYMOUS;
    char *p = mmap(NULL, 4 * PG, rw, anon, -1, 0);
    errno = 0;
    void *q = mmap(p + PG, PG, rw, anon | MAP_FIXED_NOREPLACE, -1, 0);
    o += sprintf(out + o, "NOREPLACE over a mapping: failed %d EEXIST %d\n", q == MAP_FAILED, errno == EEXIST);
    munmap(p + 2 * PG, 2 * PG);
    q = mmap(p + 2 * PG, 2 * PG, rw, anon | MAP_FIXED_NOREPLACE, -1, 0);
    o += sprintf(out + o, "NOREPLACE in a hole: exactly there %d\n", q == p + 2 * PG);
    errno = 0;
    q = mmap(p + 4 * PG + 1, PG, rw, anon | MAP_FIXED_NOREPLACE, -1, 0);
    o += sprintf(out + o, "NOREPLACE unaligned: EINVAL %d\n", q == MAP_FAILED && errno == EINVAL);
    munmap(p, 4 * PG);

    char *a = mmap(NULL, 16 * PG, rw, anon | MAP_POPULATE, -1, 0);
    char *b = mmap(NULL, 16 * PG, rw, anon, -1, 0);
    int ra = resident(a, 16), rb = resident(b, 16);
    long f0 = minflt();
    for (long i = 0; i < 16; i++) a[i * PG] = 1;
    long f1 = minflt();
    for (long i = 0; i < 16; i++) b[i * PG] = 1;
    long f2 = minflt();
    o += sprintf(out + o, "POPULATE: resident %d of 16 (unpopulated %d); faults touching it %ld, the other %ld\n", ra,
                 rb, f1 - f0, f2 - f1);
    munmap(a, 16 * PG);
    munmap(b, 16 * PG);

    // A hole of 8 MiB (beyond the 1 MiB stack guard gap), the mapping at its top.
    char *hole = mmap(NULL, 8 << 20, PROT_NONE, anon, -1, 0);
    munmap(hole, 8 << 20);
    char *g = mmap(hole + (8 << 20) - 4 * PG, 4 * PG, rw, anon | MAP_FIXED | MAP_GROWSDOWN, -1, 0);
    int before = resident(g - 8 * PG, 8);
    g[-1] = 7;
    int one = resident(g - PG, 1);
    g[-8 * PG] = 9;
    int eight = resident(g - 8 * PG, 8);
    o += sprintf(out + o, "GROWSDOWN: mapped %d; below it before: %d; after touching 1 byte below: %d; "
                 "8 pages below: %d resident, values %d %d\n", g != MAP_FAILED, before, one, eight, g[-1], g[-8 * PG]);
    // Its line in /proc/self/maps: one VMA from the lowest page touched,
    // nameless ([stack] is the initial stack's alone).
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[256];
    int found = 0, named = 0;
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s == (unsigned long)(g - 8 * PG)) {
            found = e == (unsigned long)(g + 4 * PG);
            named = strstr(line, "[stack]") != NULL;
        }
    }
    if (maps) fclose(maps);
    o += sprintf(out + o, "GROWSDOWN in maps: one VMA from the lowest page touched %d, named [stack] %d\n", found, named);
    errno = 0;
    q = mmap(NULL, PG, rw, MAP_SHARED | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0);
    o += sprintf(out + o, "GROWSDOWN shared: EINVAL %d\n", q == MAP_FAILED && errno == EINVAL);
    fputs(out, stdout);
    return 0;
}
"#;

#[test]
fn mmap_fixed_noreplace_populate_and_growsdown_behave_as_linux() {
    same_as_host("mmapflags", MMAP_FLAGS, &[], 0);
}

/// CLOCK_REALTIME, gettimeofday and time() are the host's wall-clock time
/// (KVM's paravirtual wall clock, guest/src/arch/kvmclock.rs): each of
/// the three the guest prints is within a minute of the host's clock
/// read around the run, with both libcs; the monotonic clock still
/// counts from boot (under an hour).
const WALLCLOCK: &str = r#"
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
int main(void) {
    struct timespec rt, mono;
    struct timeval tv;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    gettimeofday(&tv, NULL);
    printf("time %ld realtime %ld gettimeofday %ld monotonic %ld\n", (long)time(NULL), (long)rt.tv_sec,
           (long)tv.tv_sec, (long)mono.tv_sec);
    return 0;
}
"#;

#[test]
fn the_real_time_clocks_are_the_hosts_wall_clock() {
    let dir = Scratch::new("abi-wallclock");
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for cc in ["gcc", "musl-gcc"] {
        let prog = compile(cc, WALLCLOCK, &dir.0, &format!("wallclock-{cc}"), &["-static"]);
        let before = now();
        let run = guest(&prog, &[]);
        let after = now();
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        let words: Vec<&str> = run.stdout.split_whitespace().collect();
        assert_eq!(words.len(), 8, "{cc}: {}", run.all());
        for (name, value) in words.chunks(2).map(|w| (w[0], w[1].parse::<i64>().unwrap())) {
            if name == "monotonic" {
                assert!((0..3600).contains(&value), "{cc}: the monotonic clock counts from boot: {value}");
            } else {
                assert!(
                    value >= before - 60 && value <= after + 60,
                    "{cc}: {name} {value} is not the host's time ({before}..{after}): {}",
                    run.all()
                );
            }
        }
        assert!(!run.stderr.contains("no KVM wall clock"), "{cc}: {}", run.all());
    }
}
