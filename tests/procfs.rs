//! Files, the page cache, pipes and /proc for the user's own static
//! programs (issue 15): C programs compiled now with `gcc -static` and
//! `musl-gcc -static`. File mappings over an initramfs file and a tmpfs
//! file (MAP_SHARED writes visible through read(), MAP_PRIVATE writes
//! not), a writable tmpfs, pipes between processes, and a program
//! reading its own /proc/self/maps, smaps and pagemap, whose PFN the
//! host's `--inspect walk` confirms at a checkpoint.

mod common;

use common::{boot, compile, Run, Scratch};
use std::path::{Path, PathBuf};
use std::process::Command;

const COMPILERS: [&str; 2] = ["gcc", "musl-gcc"];

/// File mappings, tmpfs and pipes; prints the same on the host (run in a
/// directory holding `data.txt`, with /tmp writable).
const FILES: &str = r#"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void maps(const char *what, int fd, size_t len) {
    char *s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (s == MAP_FAILED || p == MAP_FAILED) { printf("%s: mmap: %s\n", what, strerror(errno)); return; }
    char b[4] = {0};
    s[100] = 'S';                                  /* shared write: the file's */
    pread(fd, b, 1, 100);
    int shared_seen = b[0] == 'S';
    int private_sees_shared = p[100] == 'S';       /* not copied yet: the same page */
    p[300] = 'P';                                  /* private write: a copy */
    pread(fd, b, 1, 300);
    int private_hidden = b[0] != 'P' && s[300] != 'P';
    pwrite(fd, "W", 1, 200);                       /* write(): seen by the shared map */
    int write_seen = s[200] == 'W';
    int private_kept = p[200] != 'W' && p[100] == 'S';
    printf("%s: shared write read back %d, private saw it %d, private write hidden %d, "
           "write() seen by shared map %d, private copy kept %d\n",
           what, shared_seen, private_sees_shared, private_hidden, write_seen, private_kept);
    munmap(s, len);
    munmap(p, len);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    int fd = open("data.txt", O_RDWR);
    if (fd < 0) { printf("open data.txt: %s\n", strerror(errno)); return 2; }
    maps("initrd file", fd, 8192);
    close(fd);

    mkdir("/tmp/mmemu-procfs-t", 0755);
    fd = open("/tmp/mmemu-procfs-t/f", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { printf("create: %s\n", strerror(errno)); return 3; }
    char buf[5000];
    memset(buf, 'a', sizeof buf);
    write(fd, buf, sizeof buf);
    ftruncate(fd, 8192);
    struct stat st;
    fstat(fd, &st);
    printf("tmpfs file size %ld\n", (long)st.st_size);
    maps("tmpfs file", fd, 8192);
    close(fd);
    fd = open("/tmp/mmemu-procfs-t/f", O_WRONLY | O_APPEND);
    write(fd, "END", 3);
    close(fd);
    stat("/tmp/mmemu-procfs-t/f", &st);
    printf("after append %ld\n", (long)st.st_size);
    int n = 0;
    DIR *d = opendir("/tmp/mmemu-procfs-t");
    struct dirent *e;
    while (d && (e = readdir(d))) if (strcmp(e->d_name, "f") == 0) n++;
    if (d) closedir(d);
    printf("readdir found f %d\n", n);
    unlink("/tmp/mmemu-procfs-t/f");
    rmdir("/tmp/mmemu-procfs-t");
    printf("after unlink open: %d\n", open("/tmp/mmemu-procfs-t/f", O_RDONLY) < 0 && errno == ENOENT);

    int pfd[2];
    pipe(pfd);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        close(pfd[0]);
        dup2(pfd[1], 1);
        close(pfd[1]);
        for (int i = 0; i < 3; i++) printf("line %d from the child\n", i);
        return 0;
    }
    close(pfd[1]);
    char in[256];
    int total = 0, r;
    while ((r = read(pfd[0], in + total, sizeof in - 1 - total)) > 0) total += r;
    in[total] = 0;
    int status;
    waitpid(c, &status, 0);
    printf("pipe read %d bytes then EOF (%d):\n%s", total, r, in);
    close(pfd[0]);
    pipe(pfd);
    close(pfd[0]);
    errno = 0;
    r = write(pfd[1], "x", 1);
    printf("write with no reader: %d %s\n", r, strerror(errno));
    return 0;
}
"#;

/// Maps 4 anonymous pages at a fixed address, touches pages 0 and 2, and
/// checks /proc/self/maps, smaps and pagemap against that; stops at
/// checkpoint `mark` for the host's page walk; reads meminfo and drops
/// the page cache through /proc/sys/vm.
const PROCSELF: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#define ADDR 0x10000000UL
static char text[65536];
static long slurp(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("open %s failed\n", path); exit(2); }
    long n = 0, r;
    while ((r = read(fd, text + n, sizeof text - 1 - n)) > 0) n += r;
    text[n] = 0;
    close(fd);
    return n;
}
static long field(const char *from, const char *name) {
    const char *p = strstr(from, name);
    return p ? atol(p + strlen(name)) : -1;
}
int main(void) {
    char *m = mmap((void *)ADDR, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (m != (char *)ADDR) { printf("mmap failed\n"); return 2; }
    m[0] = 1;
    m[2 * 4096] = 2;
    slurp("/proc/self/maps");
    char *line = strstr(text, "10000000-10004000 rw-p");
    printf("maps line: %d\n", line != NULL);
    slurp("/proc/self/smaps");
    char *v = strstr(text, "10000000-10004000");
    printf("smaps Size %ld Rss %ld Pss %ld Anonymous %ld Swap %ld\n", v ? field(v, "\nSize:") : -1,
           v ? field(v, "\nRss:") : -1, v ? field(v, "\nPss:") : -1, v ? field(v, "\nAnonymous:") : -1,
           v ? field(v, "\nSwap:") : -1);
    int fd = open("/proc/self/pagemap", O_RDONLY);
    uint64_t e[4];
    if (pread(fd, e, sizeof e, (ADDR / 4096) * 8) != sizeof e) { printf("pagemap read failed\n"); return 3; }
    close(fd);
    for (int i = 0; i < 4; i++)
        printf("pagemap[%d]: present %d swapped %d file %d exclusive %d pfn nonzero %d\n", i, (int)(e[i] >> 63),
               (int)(e[i] >> 62 & 1), (int)(e[i] >> 61 & 1), (int)(e[i] >> 56 & 1), (e[i] & ((1ULL << 55) - 1)) != 0);
    printf("pfn0 %#llx\n", (unsigned long long)(e[0] & ((1ULL << 55) - 1)));
    fflush(stdout);
    syscall(503, "mark", 4);
    slurp("/proc/self/status");
    printf("status VmRSS>0 %d VmSize>=16 %d\n", field(text, "VmRSS:") > 0, field(text, "VmSize:") >= 16);
    char exe[256] = {0};
    readlink("/proc/self/exe", exe, sizeof exe - 1);
    printf("exe %s\n", exe);
    int data = open("/data.txt", O_RDONLY);
    char buf[4096];
    while (read(data, buf, sizeof buf) > 0) {}
    close(data);
    slurp("/proc/meminfo");
    long before = field(text, "Cached:");
    fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    printf("drop_caches write %ld\n", (long)write(fd, "1\n", 2));
    close(fd);
    slurp("/proc/meminfo");
    long after = field(text, "Cached:");
    printf("Cached before %ld after %ld\n", before, after);
    return 0;
}
"#;

/// A root directory with `prog` as /init and an 8 KiB data.txt.
fn root_with(dir: &Path, prog: &Path) -> PathBuf {
    let root = common::initrd_with_init(dir, prog);
    let data: String = (0..8192).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    std::fs::write(root.join("data.txt"), data).unwrap();
    root
}

fn guest(root: &Path, extra: &[&str]) -> Run {
    let mut a = vec!["--initrd", root.to_str().unwrap()];
    a.extend_from_slice(extra);
    boot(&a)
}

#[test]
fn file_mappings_tmpfs_and_pipes_behave_as_on_the_host() {
    let dir = Scratch::new("files");
    for cc in COMPILERS {
        let prog = compile(cc, FILES, &dir.0, &format!("files-{cc}"), &["-static"]);
        let root = root_with(&dir.0, &prog);
        let run = guest(&root, &[]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        // The host run writes data.txt: a fresh copy first.
        let root = root_with(&dir.0, &prog);
        let o = Command::new(root.join("init")).current_dir(&root).output().unwrap();
        let host = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(0), "{cc}: host run: {host}");
        assert_eq!(run.stdout, host, "{cc}: the guest printed something else: {}", run.all());
        for want in [
            "initrd file: shared write read back 1, private saw it 1, private write hidden 1, write() seen by shared map 1, private copy kept 1",
            "tmpfs file: shared write read back 1, private saw it 1, private write hidden 1, write() seen by shared map 1, private copy kept 1",
            "tmpfs file size 8192",
            "after append 8195",
            "readdir found f 1",
            "after unlink open: 1",
            "pipe read 66 bytes then EOF (0):",
            "write with no reader: -1 Broken pipe",
        ] {
            assert!(run.stdout.contains(want), "{cc}: missing {want:?}: {}", run.all());
        }
    }
}

#[test]
fn a_program_reads_its_own_maps_smaps_and_pagemap() {
    let dir = Scratch::new("procself");
    for cc in COMPILERS {
        let prog = compile(cc, PROCSELF, &dir.0, &format!("procself-{cc}"), &["-static"]);
        let root = root_with(&dir.0, &prog);
        let run = guest(&root, &["--inspect", "walk:0x10000000", "--inspect-at", "mark"]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        let out = &run.stdout;
        for want in [
            "maps line: 1",
            "smaps Size 16 Rss 8 Pss 8 Anonymous 8 Swap 0",
            "pagemap[0]: present 1 swapped 0 file 0 exclusive 1 pfn nonzero 1",
            "pagemap[1]: present 0 swapped 0 file 0 exclusive 0 pfn nonzero 0",
            "pagemap[2]: present 1 swapped 0 file 0 exclusive 1 pfn nonzero 1",
            "pagemap[3]: present 0 swapped 0 file 0 exclusive 0 pfn nonzero 0",
            "status VmRSS>0 1 VmSize>=16 1",
            "exe /init",
            "drop_caches write 2",
        ] {
            assert!(out.contains(want), "{cc}: missing {want:?}: {}", run.all());
        }
        // The PFN the program read from pagemap is the frame the host's
        // walk of the same address found at the checkpoint.
        let pfn = out.lines().find_map(|l| l.strip_prefix("pfn0 0x")).expect("pfn0 line");
        let pfn = u64::from_str_radix(pfn.trim(), 16).unwrap();
        let all = format!("{}{}", run.stdout, run.stderr);
        let gpa = all
            .lines()
            .find_map(|l| l.trim().strip_prefix("=> 4 KiB page at GPA 0x"))
            .and_then(|r| r.split_whitespace().next())
            .map(|h| u64::from_str_radix(h.trim_end_matches(|c: char| !c.is_ascii_hexdigit()), 16).unwrap())
            .unwrap_or_else(|| panic!("{cc}: no walk at the checkpoint: {}", run.all()));
        assert_eq!(gpa, pfn << 12, "{cc}: pagemap's PFN is not the walk's frame: {}", run.all());
        // The file read filled the page cache; drop_caches emptied its
        // clean pages (init's own pages stay: exec copies them).
        let cached = |k: &str| -> i64 {
            let l = out.lines().find(|l| l.starts_with("Cached before")).unwrap();
            let w: Vec<&str> = l.split_whitespace().collect();
            w[w.iter().position(|x| *x == k).unwrap() + 1].parse().unwrap()
        };
        assert!(cached("before") >= 8, "{cc}: {}", run.all());
        assert!(cached("after") < cached("before"), "{cc}: {}", run.all());
    }
}

/// Writes /proc/sys/vm settings and checks what they do: overcommit mode
/// 2 refuses a mapping the heuristic allows, nr_hugepages grows the
/// hugetlb pool that meminfo then shows, khugepaged's max_ptes limits
/// read Linux's defaults and take a new value, a bad value is EINVAL.
const SYSCTL: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static int put(const char *f, const char *v) {
    int fd = open(f, O_WRONLY);
    if (fd < 0) return -errno;
    int r = write(fd, v, strlen(v));
    int e = errno;
    close(fd);
    return r < 0 ? -e : 0;
}
static long get(const char *f) {
    char b[64] = {0};
    int fd = open(f, O_RDONLY);
    if (fd < 0) return -1;
    read(fd, b, sizeof b - 1);
    close(fd);
    return atol(b);
}
static long meminfo(const char *key) {
    static char b[4096];
    int fd = open("/proc/meminfo", O_RDONLY);
    int n = read(fd, b, sizeof b - 1);
    close(fd);
    b[n > 0 ? n : 0] = 0;
    char *p = strstr(b, key);
    return p ? atol(p + strlen(key)) : -1;
}
int main(void) {
    size_t big = 48 << 20;
    void *a = mmap(0, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mode %ld: 48 MiB %s\n", get("/proc/sys/vm/overcommit_memory"), a == MAP_FAILED ? "refused" : "mapped");
    if (a != MAP_FAILED) munmap(a, big);
    printf("write 2: %d\n", put("/proc/sys/vm/overcommit_memory", "2\n"));
    printf("ratio 10: %d\n", put("/proc/sys/vm/overcommit_ratio", "10\n"));
    a = mmap(0, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mode %ld: 48 MiB %s\n", get("/proc/sys/vm/overcommit_memory"), a == MAP_FAILED ? "refused" : "mapped");
    printf("write 7: %d\n", put("/proc/sys/vm/overcommit_memory", "7\n"));
    printf("write 0: %d\n", put("/proc/sys/vm/overcommit_memory", "0\n"));
    printf("nr_hugepages %ld\n", get("/proc/sys/vm/nr_hugepages"));
    printf("write 2 pages: %d\n", put("/proc/sys/vm/nr_hugepages", "2\n"));
    printf("nr_hugepages %ld HugePages_Total %ld\n", get("/proc/sys/vm/nr_hugepages"), meminfo("HugePages_Total:"));
    printf("max_ptes_none %ld shared %ld\n", get("/proc/sys/vm/khugepaged_max_ptes_none"), get("/proc/sys/vm/khugepaged_max_ptes_shared"));
    printf("max_ptes_none 512: %d\n", put("/proc/sys/vm/khugepaged_max_ptes_none", "512\n"));
    printf("max_ptes_none 64: %d\n", put("/proc/sys/vm/khugepaged_max_ptes_none", "64\n"));
    printf("max_ptes_none now %ld\n", get("/proc/sys/vm/khugepaged_max_ptes_none"));
    static char sw[1024];
    int fd = open("/proc/swaps", O_RDONLY);
    int n = fd < 0 ? -1 : read(fd, sw, sizeof sw - 1);
    sw[n > 0 ? n : 0] = 0;
    printf("swaps: %s", sw);
    return 0;
}
"#;

#[test]
fn proc_sys_vm_settings_apply() {
    let dir = Scratch::new("sysctl");
    for cc in COMPILERS {
        let prog = compile(cc, SYSCTL, &dir.0, &format!("sysctl-{cc}"), &["-static"]);
        let root = root_with(&dir.0, &prog);
        let swap = common::TempFile::absent(&format!("sysctl-swap-{cc}"));
        let swap_arg = format!("{},size=16M", swap.path());
        let run = guest(&root, &["--mem", "64M", "--swap", &swap_arg]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        // /proc/swaps as Linux formats it: the header, then the device.
        let swaps: Vec<&str> = run.stdout.split("swaps: ").nth(1).unwrap_or("").lines().collect();
        assert!(swaps.len() == 2 && swaps[0].starts_with("Filename\t"), "{cc}: {}", run.all());
        assert!(swaps[1].starts_with("/dev/vda") && swaps[1].contains("partition\t"), "{cc}: {}", run.all());
        for want in [
            "mode 0: 48 MiB mapped",
            "write 2: 0",
            "ratio 10: 0",
            "mode 2: 48 MiB refused",
            "write 7: -22",
            "write 0: 0",
            "nr_hugepages 0",
            "write 2 pages: 0",
            "nr_hugepages 2 HugePages_Total 2",
            // khugepaged's limits at Linux's defaults; 512 is out of range.
            "max_ptes_none 511 shared 256",
            "max_ptes_none 512: -22",
            "max_ptes_none 64: 0",
            "max_ptes_none now 64",
        ] {
            assert!(run.stdout.contains(want), "{cc}: missing {want:?}: {}", run.all());
        }
    }
}

/// Reads /proc/zoneinfo and /proc/sys/vm/min_free_kbytes, checks the
/// watermarks against Linux's `__setup_per_zone_wmarks` of that value
/// (and the default against `calculate_min_free_kbytes`), doubles it and
/// checks them again, tries bad values, restores it.
const ZONEINFO: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static char text[16384];
static void slurp(const char *path) {
    int fd = open(path, O_RDONLY);
    long n = 0, r;
    while (fd >= 0 && (r = read(fd, text + n, sizeof text - 1 - n)) > 0) n += r;
    if (fd >= 0) close(fd);
    text[n] = 0;
}
static int set(const char *v) {
    int fd = open("/proc/sys/vm/min_free_kbytes", O_WRONLY);
    if (fd < 0) return -errno;
    int r = write(fd, v, strlen(v)) < 0 ? -errno : 0;
    close(fd);
    return r;
}
static long get(void) {
    slurp("/proc/sys/vm/min_free_kbytes");
    return atol(text);
}
static long isqrt(long x) { long r = 0; while ((r + 1) * (r + 1) <= x) r++; return r; }
static long num(const char *at, const char *key) {
    const char *p = strstr(at, key);
    return p ? atol(p + strlen(key)) : -1;
}
/* Per zone: name, free, min, low, high, managed; checks Linux's
   __setup_per_zone_wmarks against min_free_kbytes `mfk`. */
static int check(long mfk, int print) {
    slurp("/proc/zoneinfo");
    long total = 0;
    for (char *z = strstr(text, "Node 0, zone"); z; z = strstr(z + 1, "Node 0, zone")) total += num(z, "managed ");
    int ok = total > 0, zones = 0;
    for (char *z = strstr(text, "Node 0, zone"); z; z = strstr(z + 1, "Node 0, zone")) {
        char name[16] = {0};
        sscanf(z, "Node 0, zone %15s", name);
        long min = num(z, "min "), low = num(z, "low "), high = num(z, "high "), managed = num(z, "managed ");
        long spanned = num(z, "spanned "), present = num(z, "present ");
        long want = (mfk / 4) * managed / total;
        long gap = want / 4 > managed * 10 / 10000 ? want / 4 : managed * 10 / 10000;
        ok &= min == want && low == want + gap && high == want + 2 * gap;
        ok &= spanned >= present && present >= managed;
        zones++;
        if (print) printf("zone %s: managed>0 %d spanned>=present>=managed %d\n", name, managed > 0, spanned >= present && present >= managed);
    }
    if (print) printf("zones %d, protection line %d, pagesets %d, nr_free_pages %d, per-node stats %d\n", zones,
                      strstr(text, "protection: (0, 0, 0)") != 0, strstr(text, "\n  pagesets\n    cpu: 0\n              count: ") != 0,
                      strstr(text, "\n      nr_free_pages ") != 0, strstr(text, "\n  per-node stats\n      nr_inactive_anon ") != 0);
    return ok;
}
int main(void) {
    long mfk = get();
    slurp("/proc/zoneinfo");
    long total = 0;
    for (char *z = strstr(text, "Node 0, zone"); z; z = strstr(z + 1, "Node 0, zone")) total += num(z, "managed ");
    long want = isqrt(total * 4 * 16);
    want = want < 128 ? 128 : want > 262144 ? 262144 : want;
    printf("default min_free_kbytes follows sqrt(16 * managed kB): %d\n", mfk == want);
    printf("watermarks follow min_free_kbytes: %d\n", check(mfk, 1));
    char b[32];
    snprintf(b, sizeof b, "%ld\n", mfk * 2);
    printf("write double: %d\n", set(b));
    printf("read back double: %d\n", get() == mfk * 2);
    printf("watermarks recomputed: %d\n", check(mfk * 2, 0));
    printf("write -1: %d\n", set("-1"));
    printf("write abc: %d\n", set("abc"));
    printf("write 2^31: %d\n", set("2147483648"));
    printf("unchanged: %d\n", get() == mfk * 2);
    snprintf(b, sizeof b, "%ld", mfk);
    int restored = set(b);
    printf("restore: %d %d\n", restored, check(mfk, 0));
    return 0;
}
"#;

#[test]
fn zoneinfo_and_min_free_kbytes_follow_linuxs_watermark_formula() {
    let dir = Scratch::new("zoneinfo");
    for cc in COMPILERS {
        let prog = compile(cc, ZONEINFO, &dir.0, &format!("zoneinfo-{cc}"), &["-static"]);
        let root = root_with(&dir.0, &prog);
        let run = guest(&root, &["--mem", "64M"]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        for want in [
            "default min_free_kbytes follows sqrt(16 * managed kB): 1",
            "watermarks follow min_free_kbytes: 1",
            "zone DMA: managed>0 1 spanned>=present>=managed 1",
            "zone DMA32: managed>0 1 spanned>=present>=managed 1",
            "zone Normal: managed>0 0 spanned>=present>=managed 1",
            "zones 3, protection line 1, pagesets 1, nr_free_pages 1, per-node stats 1",
            "write double: 0",
            "read back double: 1",
            "watermarks recomputed: 1",
            "write -1: -22",
            "write abc: -22",
            "write 2^31: -22",
            "unchanged: 1",
            "restore: 0 1",
        ] {
            assert!(run.stdout.contains(want), "{cc}: missing {want:?}: {}", run.all());
        }
    }
}

/// /proc/PID/oom_score_adj is writable as on Linux: -1000..1000 with
/// white space around, anything else EINVAL; fork inherits it; a parent
/// sets its child's; the file says 0644.
const OOMADJ: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
static int put(const char *path, const char *v) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -errno;
    int r = write(fd, v, strlen(v)) < 0 ? -errno : 0;
    close(fd);
    return r;
}
static long get(const char *path) {
    char b[32] = {0};
    int fd = open(path, O_RDONLY);
    read(fd, b, sizeof b - 1);
    close(fd);
    return atol(b);
}
int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *me = "/proc/self/oom_score_adj";
    struct stat st;
    stat(me, &st);
    printf("mode %o\n", st.st_mode & 0777);
    /* One call per statement: C leaves the order of arguments open. */
    int w = put(me, "500");
    printf("write 500: %d read %ld\n", w, get(me));
    w = put(me, " -300\n");
    printf("write ' -300\\n': %d read %ld\n", w, get(me));
    int w1 = put(me, "-1001"), w2 = put(me, "1001"), w3 = put(me, "abc");
    printf("write -1001: %d, 1001: %d, abc: %d, read %ld\n", w1, w2, w3, get(me));
    int p[2], q[2];
    pipe(p);
    pipe(q);
    pid_t c = fork();
    if (c == 0) {
        char x;
        printf("child inherits: %ld\n", get(me));
        write(q[1], "r", 1);
        read(p[0], &x, 1);
        printf("child after the parent's write: %ld\n", get(me));
        _exit(0);
    }
    char path[64], x;
    snprintf(path, sizeof path, "/proc/%d/oom_score_adj", c);
    read(q[0], &x, 1);
    w = put(path, "1000");
    printf("parent sets the child's: %d\n", w);
    write(p[1], "x", 1);
    waitpid(c, NULL, 0);
    return 0;
}
"#;

#[test]
fn oom_score_adj_is_written_as_on_linux() {
    let dir = Scratch::new("oomadj");
    let prog = compile("musl-gcc", OOMADJ, &dir.0, "oomadj", &["-static"]);
    let root = root_with(&dir.0, &prog);
    let run = guest(&root, &[]);
    assert_eq!(run.status, 0, "{}", run.all());
    for want in [
        "mode 644",
        "write 500: 0 read 500",
        "write ' -300\\n': 0 read -300",
        "write -1001: -22, 1001: -22, abc: -22, read -300",
        "child inherits: -300",
        "parent sets the child's: 0",
        "child after the parent's write: 1000",
    ] {
        assert!(run.stdout.contains(want), "missing {want:?}: {}", run.all());
    }
}

/// madvise(MADV_DONTNEED) as Linux's: private anonymous pages read back
/// as zeros, a private file mapping's written copy is dropped and the
/// file's bytes come back, a range over three VMAs (an mprotect in the
/// middle) works and keeps them, an unmapped hole is ENOMEM, a shared
/// anonymous mapping EINVAL here (see proc/mman.rs).
const DONTNEED: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static int resident(char *p, int n) {
    unsigned char v[64];
    if (mincore(p, n * 4096L, v)) return -1;
    int r = 0;
    for (int i = 0; i < n; i++) r += v[i] & 1;
    return r;
}
int main(void) {
    char *a = mmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(a, 0x5a, 8 * 4096);
    int r = madvise(a, 8 * 4096, MADV_DONTNEED);
    int res = resident(a, 8);
    long sum = 0;
    for (int i = 0; i < 8 * 4096; i++) sum += a[i];
    printf("anon: %d, resident after %d, sum %ld\n", r, res, sum);

    int fd = open("data.txt", O_RDONLY);
    char *f = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    f[0] = 'Z';
    char before = f[0];
    r = madvise(f, 2 * 4096, MADV_DONTNEED);
    printf("file private: %c then %d, reads %c%c%c\n", before, r, f[0], f[1], f[2]);

    char *m = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(m, 1, 4 * 4096);
    mprotect(m + 4096, 4096, PROT_READ);
    r = madvise(m, 4 * 4096, MADV_DONTNEED);
    res = resident(m, 4);
    int ro = m[4096];
    m[0] = 7;
    printf("three vmas: %d, resident %d, m[4096] %d, write after: %d\n", r, res, ro, m[0]);

    munmap(m + 2 * 4096, 4096);
    errno = 0;
    r = madvise(m, 4 * 4096, MADV_DONTNEED);
    printf("hole: %d errno %d\n", r, errno);
    char *s = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    errno = 0;
    r = madvise(s, 4096, MADV_DONTNEED);
    printf("shared anon: %d errno %d\n", r, errno);
    return 0;
}
"#;

#[test]
fn madvise_dontneed_drops_pages_and_keeps_the_mappings() {
    let dir = Scratch::new("dontneed");
    for cc in COMPILERS {
        let prog = compile(cc, DONTNEED, &dir.0, &format!("dontneed-{cc}"), &["-static"]);
        let root = root_with(&dir.0, &prog);
        let run = guest(&root, &[]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        for want in [
            "anon: 0, resident after 0, sum 0",
            "file private: Z then 0, reads abc",
            "three vmas: 0, resident 0, m[4096] 0, write after: 7",
            "hole: -1 errno 12",
            "shared anon: -1 errno 22",
        ] {
            assert!(run.stdout.contains(want), "{cc}: missing {want:?}: {}", run.all());
        }
    }
}

/// stat, lstat and statx of /proc entries as on the host's Linux:
/// /proc/self is a symbolic link (lstat, statx with
/// AT_SYMLINK_NOFOLLOW) to a directory (stat, statx); /proc/meminfo a
/// read-only regular file; /proc/sys/vm/drop_caches writable; a missing
/// entry ENOENT. Compiled with gcc and musl, run in the guest and on the
/// host: the same lines.
const STATS: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *kind(unsigned m) {
    return S_ISLNK(m) ? "link" : S_ISDIR(m) ? "dir" : S_ISREG(m) ? "file" : "other";
}
/* statx(2) by number (old musl has no wrapper): stx_mode is the u16 at 28. */
static int statx_mode(const char *path, int flags, unsigned *mode) {
    unsigned char x[256] = {0};
    long r = syscall(SYS_statx, AT_FDCWD, path, flags, 0x7ff, x);
    *mode = x[28] | x[29] << 8;
    return r ? -1 : 0;
}
static void show(const char *path) {
    struct stat st, lst;
    unsigned sx, lsx;
    int a = stat(path, &st), b = lstat(path, &lst);
    int c = statx_mode(path, 0, &sx);
    int d = statx_mode(path, AT_SYMLINK_NOFOLLOW, &lsx);
    if (a || b || c || d) {
        printf("%s: %d %d %d %d errno %d\n", path, a, b, c, d, errno);
        return;
    }
    printf("%s: stat %s %o, lstat %s, statx %s %o, statx nofollow %s\n", path, kind(st.st_mode),
           st.st_mode & 0222, kind(lst.st_mode), kind(sx), sx & 0222, kind(lsx));
}
int main(void) {
    show("/proc/self");
    show("/proc/meminfo");
    show("/proc/sys/vm/drop_caches");
    show("/proc/self/maps");
    show("/proc/nonexistent");
    return 0;
}
"#;

#[test]
fn stat_lstat_and_statx_of_proc_entries_as_on_linux() {
    let dir = Scratch::new("stats");
    for cc in COMPILERS {
        let prog = compile(cc, STATS, &dir.0, &format!("stats-{cc}"), &["-static"]);
        let root = common::initrd_with_init(&dir.0, &prog);
        let run = guest(&root, &[]);
        assert_eq!(run.status, 0, "{cc}: {}", run.all());
        for want in [
            "/proc/self: stat dir 0, lstat link, statx dir 0, statx nofollow link\n",
            "/proc/meminfo: stat file 0, lstat file, statx file 0, statx nofollow file\n",
            "/proc/sys/vm/drop_caches: stat file 200, lstat file, statx file 200, statx nofollow file\n",
            "/proc/self/maps: stat file 0, lstat file, statx file 0, statx nofollow file\n",
            "/proc/nonexistent: -1 -1 -1 -1 errno 2\n",
        ] {
            assert!(run.stdout.contains(want), "{cc}: missing {want:?}: {}", run.all());
        }
        // The host's Linux, where it lets this user write drop_caches as
        // the guest's root does (root); elsewhere that line differs.
        let o = Command::new(&prog).output().unwrap();
        let host = String::from_utf8_lossy(&o.stdout).into_owned();
        let same = |s: &str| s.lines().filter(|l| !l.starts_with("/proc/sys/")).collect::<Vec<_>>().join("\n");
        assert_eq!(
            same(&run.stdout.lines().filter(|l| l.starts_with("/proc/")).collect::<Vec<_>>().join("\n")),
            same(&host),
            "{cc}"
        );
    }
}
