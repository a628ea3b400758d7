//! Snapshot size and time against touched RAM (issue 17's bench): a
//! static C program in an initrd touches N MiB (every 4 KiB page written,
//! so every touched page is non-zero) and stops at checkpoint `touched`;
//! `vmm run --mem 1G --snapshot-at touched=FILE` writes the core file,
//! and `vmm inspect FILE --inspect meminfo` reads it back. Printed per
//! size: the file's apparent size and allocated blocks, the VMM's own
//! write time (its `in X s`) and the wall time of the offline read,
//! beside a peer measured in the same run on the same file system: a
//! plain sequential write of the same number of bytes (what `dd` of the
//! touched RAM would write) and a read of that file back.
//!
//! The guest runs with `transparent_hugepage=always` so touching 128 MiB
//! takes 64 faults, not 32,768 emulated ones (the snapshot is the same).
//!
//! `cargo bench -p vmm --bench snapshot_size` (add `-- --runs N`; the default
//! is 2 runs per size, each printed). Needs gcc (static glibc).

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// MiB touched per row.
const SIZES: [u64; 4] = [2, 16, 64, 128];
/// The guest's RAM.
const MEM: &str = "1G";

const PROG: &str = r#"
#include <sys/mman.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    size_t n = (size_t)MIB << 20;
    unsigned char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    for (size_t i = 0; i < n; i += 4096)
        for (int j = 0; j < 4096; j += 512) p[i + j] = (unsigned char)((i >> 12) | 1);
    /* mmemu's checkpoint system call (guest/user/src/abi.rs SYS_CHECKPOINT). */
    return syscall(503, "touched", 7, 0) == 0 ? 0 : 2;
}
"#;

/// A scratch directory removed at the end.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the initrd directory whose /init touches `mib` MiB.
fn root_for(dir: &Path, mib: u64) -> PathBuf {
    let root = dir.join(format!("root{mib}"));
    std::fs::create_dir_all(&root).unwrap();
    let src = dir.join("touch.c");
    std::fs::write(&src, PROG).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O2", &format!("-DMIB={mib}"), "-o"])
        .arg(root.join("init"))
        .arg(&src)
        .output()
        .expect("run gcc (apt-get install gcc)");
    assert!(out.status.success(), "gcc: {}", String::from_utf8_lossy(&out.stderr));
    root
}

/// One row's figures.
struct Row {
    written_kib: u64,
    apparent: u64,
    allocated: u64,
    write_s: f64,
    read_s: f64,
    dd_write_s: f64,
    dd_read_s: f64,
}

fn run(root: &Path, core: &Path, peer: &Path) -> Row {
    let _ = std::fs::remove_file(core);
    let snap = format!("touched={}", core.display());
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "900", "--mem", MEM, "--cmdline", "transparent_hugepage=always", "--initrd"])
        .arg(root)
        .args(["--snapshot-at", &snap])
        .output()
        .expect("run vmm");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    // "... (1024 MiB of RAM, 20332 KiB of it non-zero and written, in 0.015 s)"
    let line = text.lines().find(|l| l.starts_with("vmm: snapshot at checkpoint 'touched'")).expect("the line");
    let kib: Option<u64> =
        line.split(" MiB of RAM, ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok());
    let secs: Option<f64> = line.rsplit_once(", in ").and_then(|(_, s)| s.trim_end_matches(" s)").parse().ok());
    let (Some(written_kib), Some(write_s)) = (kib, secs) else { panic!("cannot parse: {line}") };
    let meta = std::fs::metadata(core).unwrap();

    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_vmm")).arg("inspect").arg(core).args(["--inspect", "meminfo"]).output();
    let read_s = t.elapsed().as_secs_f64();
    let out = out.expect("run vmm inspect");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("MemTotal:"));

    // The peer: the same bytes written sequentially, then read back.
    let buf: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
    let bytes = written_kib << 10;
    let t = Instant::now();
    let mut f = std::fs::File::create(peer).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    drop(f);
    let dd_write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut rbuf = vec![0u8; 1 << 20];
    let mut f = std::fs::File::open(peer).unwrap();
    while f.read(&mut rbuf).unwrap() > 0 {}
    let dd_read_s = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(peer);
    Row { written_kib, apparent: meta.len(), allocated: meta.blocks() * 512, write_s, read_s, dd_write_s, dd_read_s }
}

fn main() {
    let mut runs = 2;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--runs") {
        runs = args.get(i + 1).and_then(|n| n.parse().ok()).expect("--runs N");
    }
    let dir = Scratch(std::env::temp_dir().join(format!("mmemu-snapbench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let core = dir.0.join("s.core");
    let peer = dir.0.join("peer.bin");
    println!(
        "Snapshots of a {MEM} guest at checkpoint 'touched' after N MiB touched ({runs} runs each, files in {}):",
        dir.0.display()
    );
    println!("| touched | written (non-zero) | file apparent | file allocated | snapshot write | peer write (same bytes) | `vmm inspect --inspect meminfo` | peer read |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mib in SIZES {
        let root = root_for(&dir.0, mib);
        for _ in 0..runs {
            let r = run(&root, &core, &peer);
            println!(
                "| {mib} MiB | {:.1} MiB | {} | {:.1} MiB | {:.3} s | {:.3} s | {:.3} s | {:.3} s |",
                r.written_kib as f64 / 1024.0,
                r.apparent,
                r.allocated as f64 / (1 << 20) as f64,
                r.write_s,
                r.dd_write_s,
                r.read_s,
                r.dd_read_s
            );
        }
    }
}
