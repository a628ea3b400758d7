//! What the VMM itself costs to start a guest: from process start to the
//! guest's first byte on the serial console, beside
//!  (a) the floor: a minimal raw kvm-ioctls program (this binary re-run
//!      with `--floor`) that creates a VM, a vCPU and memory and runs to
//!      the guest's first `out` to COM1;
//!  (b) QEMU `-M microvm -accel kvm` booting the same kernel ELF through
//!      its PVH note, where qemu-system-x86_64 is installed.
//! Medians over the same number of runs, all measured in this one run.
//!
//! `cargo bench -p vmm --bench boot` (add `-- --runs N` for more runs).

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use mm_core::abi::boot::{FIRMWARE_BASE, FIRMWARE_SIZE};
use mm_core::abi::port::COM1;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the floor guest: 64 KiB at the top of 4 GiB with, at the reset
/// vector, `mov al,'x'; mov dx,0x3f8; out dx,al`.
fn floor() {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("create VM");
    let size = FIRMWARE_SIZE as usize;
    // SAFETY: a fresh anonymous private mapping, owned here until exit.
    let host = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(host, libc::MAP_FAILED);
    let [com1_lo, com1_hi] = COM1.to_le_bytes();
    let code = [0xb0, b'x', 0xba, com1_lo, com1_hi, 0xee, 0xf4];
    // SAFETY: 0xfff0 + code.len() is inside the mapping just created.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), (host as *mut u8).add(0xfff0), code.len()) };
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: FIRMWARE_BASE,
        memory_size: size as u64,
        userspace_addr: host as u64,
    };
    // SAFETY: the mapping outlives the VM (the process exits first).
    unsafe { vm.set_user_memory_region(region) }.expect("memslot");
    vm.set_tss_address(vmm::layout::KVM_TSS as usize).expect("tss");
    let mut vcpu = vm.create_vcpu(0).expect("vcpu");
    loop {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(COM1, data) => {
                std::io::stdout().write_all(data).unwrap();
                std::io::stdout().flush().unwrap();
                return;
            }
            VcpuExit::IoOut(..) | VcpuExit::IoIn(..) => {}
            other => panic!("floor guest: unexpected exit {other:?}"),
        }
    }
}

/// Spawns `cmd` and returns the time until its first stdout byte.
fn first_byte(cmd: &mut Command) -> Option<Duration> {
    let start = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    let mut b = [0u8; 1];
    let got = child.stdout.as_mut().unwrap().read(&mut b).ok()?;
    let t = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    (got == 1).then_some(t)
}

/// Spawns `cmd` and returns the time until a stdout line contains `marker`.
fn until_line(cmd: &mut Command, marker: &str) -> Option<Duration> {
    let start = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let t = loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(marker) => break Some(start.elapsed()),
            Some(Ok(_)) => {}
            _ => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    t
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

fn measure(runs: usize, mut mk: impl FnMut() -> Command) -> Option<Duration> {
    let _ = first_byte(&mut mk()); // warm the page cache
    let bar = vmm::progress::Steps::new("first serial byte", runs as u64);
    let v: Vec<Duration> = (0..runs)
        .filter_map(|_| {
            let d = first_byte(&mut mk());
            bar.inc();
            d
        })
        .collect();
    bar.finish();
    if v.len() < runs / 2 {
        return None;
    }
    median(v)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--floor") {
        floor();
        return;
    }
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let me = std::env::current_exe().unwrap();
    let vmm = env!("CARGO_BIN_EXE_vmm");
    let kernel = env!("MMEMU_GUEST_ELF");

    let floor = measure(runs, || {
        let mut c = Command::new(&me);
        c.arg("--floor");
        c
    });
    let direct = measure(runs, || {
        let mut c = Command::new(vmm);
        c.args(["run", "--timeout", "20"]);
        c
    });
    let firmware = measure(runs, || {
        let mut c = Command::new(vmm);
        c.args(["run", "--boot", "firmware", "--timeout", "20"]);
        c
    });
    let exit_device = format!("isa-debug-exit,iobase={:#x},iosize=4", mm_core::abi::port::EXIT);
    let qemu = measure(runs, || {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-M", "microvm", "-accel", "kvm", "-m", "256M", "-nographic", "-no-reboot", "-nodefaults"]).args([
            "-serial",
            "stdio",
            "-device",
            &exit_device,
            "-kernel",
            kernel,
        ]);
        c
    });

    let ms = |d: Option<Duration>| d.map_or("n/a".to_string(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3));
    let ratio = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
        _ => "n/a".into(),
    };
    println!("process start -> first guest serial byte, median of {runs} runs");
    println!("| what | median | vs floor | QEMU microvm / this |");
    println!("|---|---|---|---|");
    println!("| floor: raw kvm-ioctls, VM + vCPU + 64 KiB, run to first `out` | {} | 1.00x | |", ms(floor));
    println!(
        "| vmm run (direct boot, 256 MiB) | {} | {} | {} |",
        ms(direct),
        ratio(direct, floor),
        ratio(qemu, direct)
    );
    println!(
        "| vmm run --boot firmware (256 MiB) | {} | {} | {} |",
        ms(firmware),
        ratio(firmware, floor),
        ratio(qemu, firmware)
    );
    println!(
        "| qemu-system-x86_64 -M microvm -accel kvm (PVH, 256 MiB) | {} | {} | 1.00x |",
        ms(qemu),
        ratio(qemu, floor)
    );

    // Boot to ready: process start to the end of the guest's memory-manager
    // init (the "Memory: ...K/...K available" line), by RAM size.
    println!();
    println!("boot to ready (memory manager up), median of {runs} runs");
    println!("| guest RAM | median | vs 128 MiB |");
    println!("|---|---|---|");
    let mut base = None;
    for size in ["128M", "1G", "16G", "64G"] {
        let bar = vmm::progress::Steps::new(&format!("boot to ready, --mem {size}"), runs as u64);
        let v: Vec<Duration> = (0..runs)
            .filter_map(|_| {
                let d = until_line(Command::new(vmm).args(["run", "--mem", size, "--timeout", "60"]), "K available");
                bar.inc();
                d
            })
            .collect();
        bar.finish();
        let m = median(v);
        if size == "128M" {
            base = m;
        }
        println!("| {size} | {} | {} |", ms(m), ratio(m, base));
    }
}
