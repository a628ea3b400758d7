//! Page-fault policy parity with Linux (issue 15's bench): one static
//! binary (`abi_faults.c`, built here with `gcc -static` and
//! `musl-gcc -static`) runs the same workload on the host's Linux and in
//! the guest and prints its own fault counts with getrusage, so both
//! sides are measured by the same code:
//!  - malloc/free churn across the 128 KiB mmap threshold;
//!  - a file's private mapping read page by page, a private mapping
//!    written every fourth page (copy on write of the file's pages), a
//!    shared mapping read page by page;
//!  - fork + execve of the binary itself (1 MiB of initialised data),
//!    the child touching all of it: the child's faults from wait4's
//!    rusage;
//!  - the system-call round trip in VM exits: N getppid() between two
//!    checkpoints, the VMM's `exits` view (exits the VMM sees; a host
//!    whose KVM handles a fault in the kernel hides those).
//!
//! The target is the guest's counts within 1.2x of Linux's: a figure that
//! does not depend on this host's emulated ring 0.
//!
//! `cargo bench -p vmm --bench linux_abi` (a few minutes: every guest
//! fault is emulated here).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = include_str!("abi_faults.c");
/// The size of the mapped file (MiB).
const FILE_MIB: usize = 4;
/// getppid() calls between the two checkpoints.
const SYSCALLS: u64 = 2000;

/// `key=value` numbers of the line starting with `prefix`.
fn fields(out: &str, prefix: &str) -> HashMap<String, i64> {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn compile(cc: &str, dir: &Path) -> Option<PathBuf> {
    let src = dir.join("abi_faults.c");
    std::fs::write(&src, SOURCE).expect("write the source");
    let out = dir.join(format!("abi_faults-{cc}"));
    match Command::new(cc).args(["-O2", "-static", "-o"]).arg(&out).arg(&src).output() {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => panic!("{cc} failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("skipping {cc}: cannot run it ({e}); Debian: apt-get install gcc musl-tools");
            None
        }
    }
}

/// The program's stdout on the host, run in `dir`.
fn host(prog: &Path, args: &[&str], dir: &Path) -> String {
    let o = Command::new(prog).args(args).current_dir(dir).output().expect("run on the host");
    assert!(o.status.success(), "host run {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The VMM's stdout for `vmm run ARGS` (the program's stdout, and the
/// JSON lines of any views).
fn vmm(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .arg("run")
        .args(["--mem", "256M", "--timeout", "900"])
        .args(args)
        .output()
        .expect("run the vmm");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "vmm run {args:?} failed: {stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    stdout
}

/// The guest's run of `init` (the program, as /init of an initramfs
/// holding the data file too) with `args`.
fn guest(root: &Path, args: &[&str]) -> String {
    // `--cmdline=...`: clap would take a separate `-- ...` for the end of
    // the options.
    let cmdline = format!("--cmdline=-- {}", args.join(" "));
    vmm(&["--initrd", root.to_str().unwrap(), &cmdline])
}

/// VM exits between the two checkpoints of `syscalls N`.
fn syscall_exits(prog: &Path, n: u64) -> i64 {
    let n = n.to_string();
    let out = vmm(&[
        "--inspect",
        "exits",
        "--inspect-at",
        "abi-sys-b",
        "--json",
        "--",
        prog.to_str().unwrap(),
        "syscalls",
        &n,
    ]);
    let line = out.lines().find(|l| l.starts_with('{') && l.contains("\"exits\"")).expect("the exits view");
    let v: serde_json::Value = serde_json::from_str(line).expect("the exits view's JSON");
    v["data"]["total"].as_i64().expect("total exits")
}

fn ratio(guest: i64, host: i64) -> String {
    if host == 0 {
        if guest == 0 {
            "1.00".into()
        } else {
            "inf".into()
        }
    } else {
        format!("{:.2}", guest as f64 / host as f64)
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("mmemu-abi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data: Vec<u8> = (0..FILE_MIB << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(dir.join("data.bin"), &data).unwrap();

    println!("# Linux ABI bench: fault counts of one static binary, host Linux vs the guest");
    println!();
    println!("| libc | workload | counter | Linux (host) | guest | guest / Linux |");
    println!("|---|---|---|---:|---:|---:|");
    let mut exits = Vec::new();
    for cc in ["gcc", "musl-gcc"] {
        let Some(prog) = compile(cc, &dir) else { continue };
        let root = dir.join(format!("root-{cc}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::copy(&prog, root.join("init")).unwrap();
        std::fs::copy(dir.join("data.bin"), root.join("data.bin")).unwrap();
        let libc = if cc == "gcc" { "glibc" } else { "musl" };

        let runs: [(&str, Vec<&str>, &str, &[&str]); 3] = [
            ("malloc churn", vec!["malloc"], "malloc", &["minflt", "majflt"]),
            ("file mmap 4 MiB", vec!["filemap", "data.bin"], "filemap", &["read", "cow", "shared", "majflt"]),
            ("fork + execve of 1 MiB binary (child)", vec!["exec"], "exec", &["minflt", "majflt"]),
        ];
        for (what, args, prefix, keys) in runs {
            eprintln!("{libc}: {what}: host, then guest");
            let h = fields(&host(&root.join("init"), &args, &root), prefix);
            let guest_args: Vec<&str> = args.iter().map(|a| if *a == "data.bin" { "/data.bin" } else { a }).collect();
            let g = fields(&guest(&root, &guest_args), prefix);
            if let (Some(a), Some(b)) = (h.get("sum"), g.get("sum")) {
                assert_eq!(a, b, "{libc} {what}: the guest read other data than the host");
            }
            for k in keys {
                let (hv, gv) = (h[*k], g[*k]);
                println!("| {libc} | {what} | {k} | {hv} | {gv} | {} |", ratio(gv, hv));
            }
        }
        eprintln!("{libc}: system-call exits");
        let base = syscall_exits(&prog, 0);
        let with = syscall_exits(&prog, SYSCALLS);
        exits.push((libc, base, with));
    }
    println!();
    println!("System-call round trip in VM exits seen by the VMM (the `exits` view between two checkpoints):");
    println!();
    println!("| libc | exits, 0 calls | exits, {SYSCALLS} getppid() | exits per call |");
    println!("|---|---:|---:|---:|");
    for (libc, base, with) in exits {
        println!("| {libc} | {base} | {with} | {:.3} |", (with - base) as f64 / SYSCALLS as f64);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
