//! The mm-emulator guest kernel.
//!
//! A small x86-64 kernel whose memory manager works the way Linux's does.
//! This file owns the boot sequence: entry (arch/entry.S) -> `kmain` ->
//! banner, memory map, command-line actions -> exit through the VMM's port.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod boot;
mod checkpoint;
mod cmdline;
mod console;
mod drivers;
mod exit;
mod fmt;
mod fs;
mod mem;
mod mm;
mod panic;
mod proc;
mod selftest;
mod string;
mod symbols;
mod sync;

use boot::{BootPath, StartInfo};
use fmt::Dec;

/// The boot information, copied out of low memory before the kernel's
/// own page tables (which do not map it at -2 GiB) take over.
static BOOT_PARAMS: sync::BootCell<Option<boot::BootParams>> = sync::BootCell::new(None);

/// Rust entry, called from `_start` with the boot handoff in registers.
#[no_mangle]
pub extern "C" fn kmain(start_info_pa: u64, boot_path: u64) -> ! {
    let path = BootPath::from_register(boot_path);
    kprintln!("mmemu kernel {} (x86-64, 4-level paging) booting via {}", env!("CARGO_PKG_VERSION"), path.name());
    arch::init_cpu();
    let info = match StartInfo::read(start_info_pa) {
        Ok(info) => info,
        Err(e) => panic!("no usable boot information: {}", e),
    };
    // SAFETY: written once here, before anything reads it; only shared
    // references are handed out afterwards.
    let params: &'static boot::BootParams = unsafe {
        let slot = BOOT_PARAMS.get_mut();
        *slot = Some(boot::BootParams::copy_from(&info));
        match slot {
            Some(p) => p,
            None => unreachable!(),
        }
    };
    let cmdline = params.cmdline();
    kprintln!("Command line: {}", cmdline);
    kprintln!("BIOS-provided physical RAM map:");
    let mut usable = 0u64;
    for e in params.memmap() {
        kprintln!("BIOS-e820: [mem {:#018x}-{:#018x}] {}", e.addr, e.addr + e.size - 1, boot::kind_name(e));
        if e.kind == boot::E820_RAM {
            usable += e.size;
        }
    }
    kprintln!("Memory: {}K usable RAM ({} MiB)", Dec(usable >> 10), Dec(usable >> 20));

    mm::numa::init(params.numa(), params.cpus());
    mm::init(params);
    mm::tlbtrace::init(cmdline);
    mm::fail_page_alloc::init(cmdline);
    fs::init(params.initrd());
    proc::init();
    drivers::init(cmdline);
    let maxcpus = cmdline
        .split(' ')
        .take_while(|w| *w != "--")
        .find_map(|w| w.strip_prefix("maxcpus="))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(arch::percpu::MAX_CPUS);
    arch::smp::boot_secondary_cpus(params.cpus(), maxcpus);
    mm::swap::init();
    checkpoint::checkpoint("ready");

    let mut code = cmdline::run_actions(cmdline);
    // Linux's last step of boot: run init from the initramfs. The run's
    // exit status is then init's.
    let word = |w: &str| cmdline.split(' ').take_while(|x| *x != "--").any(|x| x == w);
    if code == 0 && word("kshell") {
        // The in-kernel monitor (views without a /proc file: numactl).
        code = console::shell::run();
    } else if code == 0 && word("shell") {
        // The built-in ring-3 shell, a Linux program like /init.
        code = proc::run_shell();
    } else if code == 0 && fs::present() {
        code = proc::exec::run_init(cmdline);
    }
    proc::sched::report_cpus();
    mm::percpu::report_cpus();
    if code == 0 {
        kprintln!("mmemu: all done, powering off");
    }
    exit::exit(code)
}
