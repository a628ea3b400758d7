//! Snapshots (issue 17): `vmm run --snapshot-at NAME=FILE` writes a sparse
//! ELF core file at a checkpoint; `vmm inspect FILE` shows the same views
//! and checks offline as the live run showed there (JSON compared line by
//! line), readelf and gdb accept the file, `vmm inspect --gdb` serves it
//! read-only, and bad files get clear errors.

mod common;

use common::{boot, guest_elf, vmm, TempFile};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GDB: &str = "/usr/bin/gdb";
const GUEST_ELF: &str = env!("MMEMU_GUEST_ELF");

/// Every view that reads only guest memory and registers (dirty, exits and
/// stage2 need the live VM; physmap writes files).
const VIEWS: &str = "cpu,walk:_start,walk:rsp,tlb,mem,buddyinfo,extfrag,slabinfo,meminfo,ps,vmstat,swaps,free";
/// Every check but kvm (it asks KVM) and those with nothing to examine at
/// cow-shared without --swap or selftest=access (named, they would fail
/// the run for having examined nothing).
const CHECKS: &str = "wx,text-ro,text-user,freed-mapped,pt-owner,refcount,cow-ro,isolation,lru";

fn has(out: &str, what: &str) {
    assert!(out.contains(what), "'{what}' missing from:\n{out}");
}

/// Runs `cmd` (gdb) with a deadline; both streams.
fn run_with_deadline(cmd: &mut Command, secs: u64) -> String {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut o = child.stdout.take().unwrap();
    let mut e = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = o.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish in {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    format!("{}{}", out.join().unwrap(), err.join().unwrap())
}

/// The acceptance test: one live run snapshots `cow-shared` while showing
/// every offline-capable view and check there as JSON; offline, the same
/// views and checks give byte-identical JSON; readelf, gdb on the core
/// file and gdb on `vmm inspect --gdb` read it.
#[test]
fn offline_inspection_of_a_snapshot_equals_the_live_one() {
    let core = TempFile::absent("cow.core");
    let live = TempFile::absent("live.json");
    let offline = TempFile::absent("offline.json");
    let snap = format!("cow-shared={}", core.path());
    let r = boot(&[
        "--cmdline",
        "selftest=process",
        "--inspect-at",
        "cow-shared",
        "--snapshot-at",
        &snap,
        "--inspect",
        VIEWS,
        &format!("--verify={CHECKS}"),
        &format!("--json={}", live.path()),
    ]);
    assert_eq!(r.status, 0, "{}", r.all());
    has(&r.stderr, "vmm: snapshot at checkpoint 'cow-shared'");

    // Sparse: 256 MiB of guest RAM, a few MiB of blocks on disk.
    let md = std::fs::metadata(&core.0).unwrap();
    assert!(md.len() > 256 << 20, "the file covers all of RAM: {}", md.len());
    let allocated = md.blocks() * 512;
    assert!(allocated < 16 << 20, "untouched RAM must be holes: {allocated} bytes allocated");

    let o = vmm(&[
        "inspect",
        core.path(),
        "--inspect",
        VIEWS,
        &format!("--verify={CHECKS}"),
        &format!("--json={}", offline.path()),
    ]);
    assert_eq!(o.status, 0, "{}", o.all());
    let (a, b) = (std::fs::read_to_string(&live.0).unwrap(), std::fs::read_to_string(&offline.0).unwrap());
    let lines = a.lines().count();
    assert_eq!(lines, VIEWS.split(',').count() + 1, "one line per view plus verify:\n{a}");
    for (l, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        assert_eq!(x, y, "line {l} differs between live and offline");
    }
    assert_eq!(a, b);
    has(&a, r#""view":"verify","data":{"status":"ok","passed":true"#);
    has(&a, r#""name":"cow""#);

    // Every check offline: kvm is not applicable (no KVM), the rest pass.
    let v = vmm(&["inspect", core.path(), "--verify"]);
    assert_eq!(v.status, 0, "{}", v.all());
    has(&v.stdout, "verify kvm: not applicable (it asks KVM to translate: this is a snapshot file");
    has(&v.stdout, "verify cow-ro: ok");
    // Named, kvm examined nothing: status 4, as live.
    let k = vmm(&["inspect", core.path(), "--verify=kvm"]);
    assert_eq!(k.status, 4, "{}", k.all());
    let d = vmm(&["inspect", core.path(), "--inspect", "dirty,stage2:_start"]);
    has(&d.stdout, "error: dirty needs the live VM");
    has(&d.stdout, "error: stage2 needs the live VM");
    let s = vmm(&["inspect", core.path()]);
    has(&s.stdout, "snapshot at checkpoint 'cow-shared'");

    // readelf: an x86-64 core with the RAM and kernel-map loads and our notes.
    let re = Command::new("readelf").args(["-h", "-l", "-n", core.path()]).output().expect("readelf (binutils)");
    let re = String::from_utf8_lossy(&re.stdout);
    has(&re, "CORE (Core file)");
    has(&re, "Advanced Micro Devices X86-64");
    has(&re, "0xffff888000000000");
    has(&re, "0xffffffff80000000");
    // The vmalloc window's pages (the kernel stacks): a load at 0xffffc9...
    has(&re, "0xffffc9");
    has(&re, "NT_PRSTATUS");
    has(&re, "MMEMU");

    // gdb on the core file: registers from NT_PRSTATUS, the kernel's
    // variables through the kernel-map load, a backtrace by its CFI.
    let g = run_with_deadline(
        Command::new(GDB).args([
            "-batch",
            "-nx",
            "-ex",
            "bt",
            "-ex",
            "p/x kernel::mm::descriptor::DESC.0.value.magic",
            "-ex",
            "p/x $rip",
            GUEST_ELF,
            core.path(),
        ]),
        60,
    );
    has(&g, "#0  kernel::checkpoint::checkpoint");
    has(&g, "kernel::proc::syscall::dispatch");
    has(&g, &format!("= {:#x}", mm_core::descriptor::DESCRIPTOR_MAGIC));

    // gdb on `vmm inspect --gdb`: reads, monitor views; writes and runs refused.
    let mut server = Command::new(common::vmm_path())
        .args(["inspect", core.path(), "--gdb", "tcp:127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let target = line.split("read-only on tcp:").nth(1).and_then(|t| t.split(';').next()).expect(&line).to_string();
    let g = run_with_deadline(
        Command::new(GDB).args([
            "-batch",
            "-nx",
            "-ex",
            &format!("target remote {target}"),
            "-ex",
            "bt 3",
            "-ex",
            "p/x kernel::mm::descriptor::DESC.0.value.magic",
            "-ex",
            "p/x $cr3",
            "-ex",
            "monitor ps",
            "-ex",
            "monitor pt $pc",
            "-ex",
            "set var $rax = 1",
            "-ex",
            "stepi",
            "-ex",
            "p/x $pc",
            "-ex",
            "detach",
            GUEST_ELF,
        ]),
        60,
    );
    has(&g, "#0  kernel::checkpoint::checkpoint");
    has(&g, &format!("= {:#x}", mm_core::descriptor::DESCRIPTOR_MAGIC));
    has(&g, "cow");
    has(&g, "walk of 0xffffffff");
    has(&g, "Could not write registers");
    has(&g, "continue and step are refused");
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    let st = server.wait().unwrap();
    assert!(st.success(), "the server ends when gdb leaves: {st:?}\n{rest}");
}

/// Every way a file can be wrong is named: not ELF, an ELF that is not a
/// core file, another machine, truncated, a core file that is not ours.
#[test]
fn bad_snapshot_files_get_clear_errors() {
    let core = TempFile::absent("boot.core");
    let r = boot(&["--cmdline", "checkpoint=boot exit=0", "--snapshot-at", &format!("boot={}", core.path())]);
    assert_eq!(r.status, 0, "{}", r.all());
    let good = std::fs::read(&core.0).unwrap();
    let ok = vmm(&["inspect", core.path(), "--inspect", "cpu"]);
    assert_eq!(ok.status, 0, "{}", ok.all());
    has(&ok.stdout, "--- checkpoint 'boot': cpu ---");

    let text = TempFile::new("text.core", b"hello, not an ELF file\n");
    let e = vmm(&["inspect", text.path()]);
    assert_eq!(e.status, 1, "{}", e.all());
    has(&e.stderr, "is not an ELF file");

    let exec = TempFile::new("exec.core", &guest_elf());
    let e = vmm(&["inspect", exec.path()]);
    has(&e.stderr, "not a 64-bit little-endian core file (e_type 2");

    let mut arm = good[..4096].to_vec();
    arm[18..20].copy_from_slice(&183u16.to_le_bytes());
    let arm = TempFile::new("arm.core", &arm);
    let e = vmm(&["inspect", arm.path()]);
    has(&e.stderr, "core file for ELF machine 183, not x86-64");

    let short = TempFile::new("short.core", &good[..good.len() / 2]);
    let e = vmm(&["inspect", short.path()]);
    has(&e.stderr, "is truncated: its RAM at guest-physical 0x0 need");
    let header = TempFile::new("header.core", &good[..40]);
    let e = vmm(&["inspect", header.path()]);
    has(&e.stderr, "is truncated: its ELF header need 64 bytes but the file has 40");

    // Our notes renamed: a core file of someone else.
    let mut other = good[..8192].to_vec();
    let at = other.windows(6).position(|w| w == b"MMEMU\0").unwrap();
    while let Some(p) = other[at..].windows(6).position(|w| w == b"MMEMU\0") {
        other[at + p..at + p + 5].copy_from_slice(b"OTHER");
    }
    let other = TempFile::new("other.core", &other);
    let e = vmm(&["inspect", other.path()]);
    has(&e.stderr, "is a core file but not an mmemu snapshot: it has no MMEMU notes");
    assert_eq!(e.status, 1, "{}", e.all());

    // A file that cannot be written stops the run with the reason; a
    // checkpoint never reached is a warning.
    let e = boot(&["--cmdline", "checkpoint=boot exit=0", "--snapshot-at", "boot=/nonexistent/dir/x.core"]);
    assert_eq!(e.status, 1, "{}", e.all());
    has(&e.stderr, "vmm: cannot create /nonexistent/dir/x.core");
    let never = TempFile::absent("never.core");
    let e = boot(&["--cmdline", "exit=0", "--snapshot-at", &format!("never={}", never.path())]);
    assert_eq!(e.status, 0, "{}", e.all());
    has(&e.stderr, "--snapshot-at never: the guest never reached that checkpoint; no file written");
    assert!(!never.0.exists());

    let e = vmm(&["run", "--snapshot-at", "nofile"]);
    assert_eq!(e.status, 2, "{}", e.all());
    has(&e.stderr, "write NAME=FILE");
}
