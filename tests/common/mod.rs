//! Running the real `vmm` binary on the real guest, for the integration
//! tests. Every run has a `--timeout` so no test can hang.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

/// What one run printed and returned.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both streams, for assertion messages.
    pub fn all(&self) -> String {
        format!("status {}\n--- stdout\n{}\n--- stderr\n{}", self.status, self.stdout, self.stderr)
    }
}

/// The vmm binary cargo built for these tests.
pub fn vmm_path() -> &'static str {
    env!("CARGO_BIN_EXE_vmm")
}

/// Runs `vmm` with `args`, feeding `stdin` (or /dev/null).
pub fn vmm_with_input(args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(vmm_path());
    cmd.args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn vmm");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().expect("wait for vmm");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).replace('\r', ""),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `vmm` with `args` and no input.
pub fn vmm(args: &[&str]) -> Run {
    vmm_with_input(args, None)
}

/// `vmm run --timeout 240` plus `args`. The timeout only guards against a
/// hang: a 16 GiB selftest takes ~13 s alone but several times that while
/// the other test binaries load both cores (ring 0 is emulated here).
pub fn boot(args: &[&str]) -> Run {
    let mut a = vec!["run", "--timeout", "240"];
    a.extend_from_slice(args);
    vmm(&a)
}

/// The guest kernel ELF embedded in the VMM.
pub fn guest_elf() -> Vec<u8> {
    std::fs::read(env!("MMEMU_GUEST_ELF")).expect("the guest ELF built by vmm's build script")
}

/// A scratch file in the temp directory, removed on drop.
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    /// `mmemu-test-PID-SEQ-NAME` holding `bytes`.
    pub fn new(name: &str, bytes: &[u8]) -> Self {
        let f = TempFile::absent(name);
        std::fs::write(&f.0, bytes).unwrap();
        f
    }
    /// `mmemu-test-PID-SEQ-NAME`, which does not exist yet (removed if it
    /// did): for the VMM to create. SEQ keeps two tests of one binary that
    /// build the same NAME from removing each other's file when they run
    /// in parallel.
    pub fn absent(name: &str) -> Self {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("mmemu-test-{}-{seq}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempFile(p)
    }
    /// The path as a string.
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A vmstat-style counter from the first `name value` line after
/// `marker` in `out`.
pub fn counter_after(out: &str, marker: &str, name: &str) -> u64 {
    let at = out.find(marker).unwrap_or_else(|| panic!("'{marker}' missing:\n{out}"));
    out[at..]
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing after '{marker}':\n{out}"))
        .trim()
        .parse()
        .unwrap()
}

/// A scratch directory for one test (under the temporary directory, named
/// after the test binary's process, `name` and a per-process sequence
/// number: tests running at once with the same `name` get their own),
/// removed on drop.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    /// A fresh, empty directory `mmemu-NAME-PID-N`.
    pub fn new(name: &str) -> Scratch {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("mmemu-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `dir/root`, an initrd directory with `prog` as its /init (for
/// `vmm run --initrd`).
pub fn initrd_with_init(dir: &std::path::Path, prog: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(prog, root.join("init")).unwrap();
    root
}

/// Runs the C program `src` as the guest's /init: built with
/// `musl-gcc -static` in scratch directory `name`, booted by `vmm run
/// ARGS --initrd DIR` (ARGS: the run's own `--timeout`, `--mem`, ...).
pub fn run_c_init(name: &str, src: &str, args: &[&str]) -> Run {
    let dir = Scratch::new(name);
    let prog = compile("musl-gcc", src, &dir.0, name, &["-static"]);
    let root = initrd_with_init(&dir.0, &prog);
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--initrd", root.to_str().unwrap()]);
    vmm(&all)
}

/// Asserts that the run exited with status 0 and that its stdout holds
/// every text of `want`, naming the first one missing.
pub fn assert_stdout_has(r: &Run, want: &[&str]) {
    assert_eq!(r.status, 0, "{}", r.all());
    for w in want {
        assert!(r.stdout.contains(w), "missing {w:?}:\n{}", r.all());
    }
}

/// Compiles the C program `src` with `cc` (`gcc` or `musl-gcc`) and
/// `extra` flags into `dir/name`; panics with what to install when the
/// compiler is missing.
pub fn compile(cc: &str, src: &str, dir: &std::path::Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let out = dir.join(name);
    match Command::new(cc).args(["-O2", "-o"]).arg(&out).arg(&c).args(extra).output() {
        Ok(o) if o.status.success() => out,
        Ok(o) => panic!("{cc} failed on {name}.c:\n{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!(
            "cannot run {cc} ({e}): these tests build C programs at test time; install it \
             (Debian: `apt-get install gcc musl-tools`, as .ci/run does)"
        ),
    }
}
