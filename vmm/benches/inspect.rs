//! What host-side inspection costs, measured in one run:
//!  (1) a full walk of an address space with 1 GiB of 4 KiB mappings: the
//!      software MMU (mm-core's `mappings()` over all leaves, and `walk()`
//!      page by page) against `KVM_TRANSLATE` page by page on a vCPU whose
//!      CR3 points at the same tables (every answer compared);
//!  (2) pause-inspect-resume at a checkpoint: a long-mode guest looping on
//!      a checkpoint through the VMM's own run loop, port bus and hook,
//!      with a hook that only counts (the plain port-exit round trip),
//!      with the inspector showing a trivial view, a walk, and a walk plus
//!      the KVM cross-check.
//!
//!  (3) host memory and time of `vmm run --inspect tlb,mem --verify` (the
//!      real binary, output drained and counted) on the default guest with
//!      six live processes, on a hand-made kernel whose 4-page alias tree
//!      maps 2^36 pages, and on a 64 GiB guest, each beside the same run
//!      without inspection: peak RSS (the child's VmHWM) and wall time.
//!
//! `cargo bench -p vmm --bench inspect` (add `-- --runs N` for more runs).

use kvm_ioctls::Kvm;
use mm_core::addr::{PageSize, PhysAddr, VirtAddr};
use mm_core::paging::mapper::mappings;
use mm_core::paging::{walk, FrameAllocator, MapRequest, Mapper, PteFlags, SizeRequest};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::serial::SerialConsole;
use vmm::devices::PortBus;
use vmm::inspect::checkpoint::{Inspector, ParkHook, ParkVerdict};
use vmm::inspect::spec::{parse_view, Check, InspectConfig};
use vmm::inspect::GuestPhys;
use vmm::memory::GuestMem;

const GIB: u64 = 1 << 30;
const VA: u64 = 0xffff_c900_0000_0000;

struct Bump(u64);
impl FrameAllocator for Bump {
    fn allocate_frame(&mut self) -> Option<PhysAddr> {
        self.0 += 4096;
        Some(PhysAddr(self.0 - 4096))
    }
    fn deallocate_frame(&mut self, _: PhysAddr) {}
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn walk_vs_kvm() {
    // 1 GiB of data frames, then room for the tables.
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (GIB + (8 << 20)) as usize)]).expect("reserve");
    let mut frames = Bump(GIB);
    let mut pm = GuestPhys(&mem);
    let mapper = Mapper::create(&mut pm, &mut frames, false, 46, false).expect("root");
    mapper
        .map(
            &mut pm,
            &mut frames,
            MapRequest {
                va: VirtAddr(VA),
                pa: PhysAddr(0),
                len: GIB,
                size: SizeRequest::Fixed(PageSize::Size4K),
                flags: PteFlags::RW,
            },
        )
        .expect("map 1 GiB")
        .ignore();
    let ctx = mapper.context();
    let pages = GIB / 4096;
    println!("address space: 1 GiB of 4 KiB pages ({pages} leaves), {} table pages", (frames.0 - GIB) / 4096);

    let t = Instant::now();
    let n = mappings(&GuestPhys(&mem), &ctx).filter(|m| m.is_ok()).count() as u64;
    let t_iter = t.elapsed();
    assert_eq!(n, pages);

    let t = Instant::now();
    let mut sw = Vec::with_capacity(pages as usize);
    for i in 0..pages {
        sw.push(walk(&GuestPhys(&mem), &ctx, VirtAddr(VA + i * 4096)).map(|t| t.pa.0).ok());
    }
    let t_walk = t.elapsed();

    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("create a VM");
    vmm::memory::register(&vm, &mem).expect("memslot");
    let vcpu = vm.create_vcpu(0).expect("vCPU");
    let mut sregs = vmm::boot::direct::long_mode_sregs(vcpu.get_sregs().expect("sregs"));
    sregs.cr3 = mapper.root().0;
    sregs.efer |= 1 << 11;
    vcpu.set_sregs(&sregs).expect("long mode");
    let t = Instant::now();
    let mut disagree = 0u64;
    for i in 0..pages {
        let tr = vcpu.translate_gva(VA + i * 4096).expect("KVM_TRANSLATE");
        if (tr.valid != 0).then_some(tr.physical_address) != sw[i as usize] {
            disagree += 1;
        }
    }
    let t_kvm = t.elapsed();
    let per = |d: Duration| d.as_nanos() as f64 / pages as f64;
    println!();
    println!("| method (all {pages} pages) | total | per page | vs KVM_TRANSLATE |");
    println!("|---|---|---|---|");
    for (name, d) in [
        ("mm-core mappings() iterator", t_iter),
        ("mm-core walk() per page", t_walk),
        ("KVM_TRANSLATE per page", t_kvm),
    ] {
        println!(
            "| {name} | {:.1} ms | {:.0} ns | {:.0}x faster |",
            d.as_secs_f64() * 1e3,
            per(d),
            t_kvm.as_secs_f64() / d.as_secs_f64()
        );
    }
    println!("\nKVM_TRANSLATE disagreed with the walker on {disagree} of {pages} pages");
}

/// Counts checkpoints, runs `inner` at each, stops the run after `limit`.
struct Count {
    n: u64,
    limit: u64,
    inner: Option<Inspector>,
    in_hook: Duration,
}

impl ParkHook for Count {
    fn checkpoint(&mut self, name: &str, vcpu: &dyn vmm::vcpu::Vcpu) -> ParkVerdict {
        let t = Instant::now();
        if let Some(i) = &mut self.inner {
            i.checkpoint(name, vcpu);
        }
        self.in_hook += t.elapsed();
        self.n += 1;
        if self.n >= self.limit {
            ParkVerdict::Stop
        } else {
            ParkVerdict::Resume
        }
    }
}

/// A long-mode guest that loops `out 0x510,'c'; out 0x510,0` (a checkpoint
/// named `c`) through the VMM's real run loop, bus and hook. Returns the
/// time per checkpoint and the time spent in the hook per checkpoint.
fn checkpoint_loop(n: u64, inspect: Option<InspectConfig>) -> (Duration, Duration) {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("create a VM");
    let mem: GuestMem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).expect("reserve"));
    vmm::memory::register(&vm, &mem).expect("memslot");
    vmm::boot::direct::write_tables(&mem).expect("boot tables");
    let [port_lo, port_hi] = mm_core::abi::port::CHECKPOINT.to_le_bytes();
    let code = [0x66, 0xba, port_lo, port_hi, 0xb0, b'c', 0xee, 0x30, 0xc0, 0xee, 0xeb, 0xf4];
    mem.write_slice(&code, GuestAddress(CODE)).expect("code");
    let vcpu = vm.create_vcpu(0).expect("vCPU");
    let sregs = vmm::boot::direct::long_mode_sregs(vcpu.get_sregs().expect("sregs"));
    vcpu.set_sregs(&sregs).expect("long mode");
    vcpu.set_regs(&kvm_bindings::kvm_regs { rip: CODE, rflags: 2, ..Default::default() }).expect("regs");
    let (console, _out) = SerialConsole::captured();
    let bus = PortBus::new(Arc::new(Mutex::new(console)), Arc::default());
    let inner = inspect.map(|c| Inspector::new(c, mem.clone(), None, Arc::default(), Box::new(std::io::sink())));
    let count = Arc::new(Mutex::new(Duration::ZERO));
    let stop = Arc::new(AtomicBool::new(false));
    let mut runner =
        vmm::vcpu::VcpuRunner::new(0, Arc::new(Mutex::new(vcpu)), bus, vmm::inspect::GuestLink::default(), stop);
    runner.add_park_hook(Box::new(Timed(Count { n: 0, limit: n, inner, in_hook: Duration::ZERO }, count.clone())));
    let t = Instant::now();
    let stop = runner.run().expect("KVM_RUN");
    let total = t.elapsed();
    assert!(matches!(stop, vmm::vcpu::VcpuStop::Stopped), "{stop:?}");
    let in_hook = *count.lock().unwrap();
    (total / n as u32, in_hook / n as u32)
}

/// Publishes the hook time when the hook is dropped with the bus.
struct Timed(Count, Arc<Mutex<Duration>>);
impl ParkHook for Timed {
    fn checkpoint(&mut self, name: &str, vcpu: &dyn vmm::vcpu::Vcpu) -> ParkVerdict {
        let v = self.0.checkpoint(name, vcpu);
        *self.1.lock().unwrap() = self.0.in_hook;
        v
    }
}

const CODE: u64 = 0x10_0000;

fn checkpoints(runs: usize) {
    let n = 5000;
    let views = |v: &[&str], verify: bool| InspectConfig {
        views: v.iter().map(|s| parse_view(s).unwrap()).collect(),
        verify: verify.then(|| vec![Check::Kvm]),
        ..Default::default()
    };
    let cases: Vec<(&str, Option<InspectConfig>)> = vec![
        ("plain checkpoint (2 port exits, hook counts only)", None),
        ("inspector, view `cpu`", Some(views(&["cpu"], false))),
        ("inspector, view `walk:0x100000`", Some(views(&["walk:0x100000"], false))),
        ("inspector, `walk:0x100000` + --verify=kvm", Some(views(&["walk:0x100000"], true))),
    ];
    println!("\npause-inspect-resume: a long-mode guest looping on checkpoint `c`, {n} checkpoints, median of {runs} runs:\n");
    println!("| case | per checkpoint | of which in the hook | vs plain |");
    println!("|---|---|---|---|");
    let mut plain = 0.0;
    for (i, (name, c)) in cases.into_iter().enumerate() {
        let bar = vmm::progress::Steps::new(name, runs as u64);
        let r: Vec<(Duration, Duration)> = (0..runs)
            .map(|_| {
                let r = checkpoint_loop(n, c.clone());
                bar.inc();
                r
            })
            .collect();
        bar.finish();
        let per = median(r.iter().map(|x| x.0).collect());
        let hook = median(r.iter().map(|x| x.1).collect());
        let us = per.as_secs_f64() * 1e6;
        if i == 0 {
            plain = us;
        }
        println!("| {name} | {us:.1} us | {:.1} us | {:.2}x |", hook.as_secs_f64() * 1e6, us / plain);
    }
    println!("\nplain port-exit round trip: {:.1} us (half a plain checkpoint)", plain / 2.0);
}

#[path = "../../tests/hostile/mod.rs"]
mod hostile;

/// One `vmm` run with stdout drained: (wall time, peak RSS in KiB from the
/// child's VmHWM polled every 10 ms, stdout bytes, exit status).
fn measure(args: &[&str]) -> (Duration, u64, u64, i32) {
    use std::io::Read;
    let t = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn vmm");
    let status_file = format!("/proc/{}/status", child.id());
    let done = Arc::new(AtomicBool::new(false));
    let poll = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(st) = std::fs::read_to_string(&status_file) {
                    let kb = st
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
                    peak = peak.max(kb.unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let mut out = child.stdout.take().expect("stdout");
    let (mut buf, mut bytes) = (vec![0u8; 1 << 16], 0u64);
    while let Ok(n @ 1..) = out.read(&mut buf) {
        bytes += n as u64;
    }
    let status = child.wait().expect("wait");
    let wall = t.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    (wall, poll.join().unwrap_or(0), bytes, status.code().unwrap_or(-1))
}

fn host_memory() {
    let mut img = hostile::Image::new(&[], 4);
    for i in 0..3 {
        img.fill(hostile::page(i), hostile::page(i + 1) | hostile::PW);
    }
    img.fill(hostile::page(3), hostile::BASE | 1);
    let code =
        hostile::Program { cr3: Some(hostile::page(0)), checkpoints: vec![b"alias".to_vec()], ..Default::default() }
            .code();
    img.bytes[..code.len()].copy_from_slice(&code);
    let alias = std::env::temp_dir().join(format!("mmemu-bench-alias-{}.elf", std::process::id()));
    std::fs::write(&alias, img.elf()).expect("write the alias-tree kernel");
    let alias = alias.to_str().unwrap_or_default().to_string();
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "default guest, six processes (`selftest=process`, at `processes-alive`)",
            vec!["--cmdline", "selftest=process", "--inspect-at", "processes-alive"],
        ),
        ("4-page alias tree (2^36 pages mapped; default --budget, 16 Mi entries)", vec!["--kernel", &alias]),
        (
            "64 GiB guest (`checkpoint=x`)",
            vec!["--mem", "64G", "--cmdline", "checkpoint=x exit=0", "--inspect-at", "x"],
        ),
    ];
    println!("\nhost memory and time of `--inspect tlb,mem --verify`, beside the same run without them:\n");
    println!("| guest | with inspection: peak RSS | time | output | status | without: peak RSS | time |");
    println!("|---|---|---|---|---|---|---|");
    for (what, args) in cases {
        let mut base = vec!["run", "--timeout", "600"];
        base.extend(args.iter().copied());
        let (t0, rss0, _, _) = measure(&base);
        let mut with = base.clone();
        with.extend(["--inspect", "tlb,mem", "--verify"]);
        let (t1, rss1, bytes, status) = measure(&with);
        println!(
            "| {what} | {:.1} MiB | {:.2} s | {} | {status} | {:.1} MiB | {:.2} s |",
            rss1 as f64 / 1024.0,
            t1.as_secs_f64(),
            if bytes >= 10_000_000 {
                format!("{:.0} MB", bytes as f64 / 1e6)
            } else {
                format!("{:.0} KB", bytes as f64 / 1e3)
            },
            rss0 as f64 / 1024.0,
            t0.as_secs_f64()
        );
    }
    let _ = std::fs::remove_file(&alias);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args.iter().position(|a| a == "--runs").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(5);
    println!(
        "host: {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_default()
    );
    if args.iter().any(|a| a == "--memory-only") {
        host_memory();
        return;
    }
    walk_vs_kvm();
    checkpoints(runs);
    host_memory();
}
