//! The panic handler: say where, then fail the run.

use crate::fmt::Dec;
use crate::{exit, kprintln};

/// Exit status of a kernel panic.
pub const PANIC_EXIT_CODE: u32 = 101;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(l) => kprintln!(
            "Kernel panic at {}:{}:{}: {}",
            l.file(),
            Dec(l.line() as u64),
            Dec(l.column() as u64),
            info.message()
        ),
        None => kprintln!("Kernel panic: {}", info.message()),
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
