//! The panic handler: say where, then fail the run.

use crate::fmt::Dec;
use crate::{exit, kprintln};

/// Exit status of a kernel panic.
pub const PANIC_EXIT_CODE: u32 = 101;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // core's own panics (bounds checks, unwrap on None...) format their
    // integers with core's decimal code, which KVM's emulator cannot run
    // (platform.md): print only their static text. The kernel's own
    // panic messages use safe formatting.
    let from_core = info.location().is_some_and(|l| l.file().contains("/rustc/"));
    let msg = info.message();
    match (info.location(), msg.as_str()) {
        (Some(l), Some(text)) => {
            kprintln!("Kernel panic at {}:{}:{}: {}", l.file(), Dec(l.line() as u64), Dec(l.column() as u64), text)
        }
        (Some(l), None) if from_core => kprintln!(
            "Kernel panic at {}:{}:{} (in core; its message is not formatted: it would use SSE)",
            l.file(),
            Dec(l.line() as u64),
            Dec(l.column() as u64)
        ),
        (Some(l), None) => {
            kprintln!("Kernel panic at {}:{}:{}: {}", l.file(), Dec(l.line() as u64), Dec(l.column() as u64), msg)
        }
        (None, _) => kprintln!("Kernel panic: {}", msg),
    }
    exit::exit(PANIC_EXIT_CODE)
}

// The precompiled core was built with unwinding and refers to these.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    crate::arch::halt_forever()
}
