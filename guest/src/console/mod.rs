//! The kernel console: COM1, polled, and the `kprint!`/`kprintln!` macros.

pub mod serial;
pub mod shell;

use core::sync::atomic::{AtomicUsize, Ordering};

/// Prints to the console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// The CPU printing (its number + 1; 0: none). One `kprint!` at a time
/// reaches COM1, as Linux's console lock keeps each printk record whole:
/// two CPUs' lines used to come out interleaved byte by byte.
static OWNER: AtomicUsize = AtomicUsize::new(0);

/// How long a CPU waits for another's line before it prints anyway: a
/// holder that never finishes (stopped for good by a panic elsewhere, a
/// UART that never drains) must not silence the rest, a panic above all.
const MAX_SPINS: u32 = 1 << 20;

/// Writes formatted text to COM1, whole: another CPU's text waits until
/// it is out. A print from inside this CPU's own print (an interrupt or
/// a fault while formatting) goes ahead; the outer one lets go.
pub fn print(args: core::fmt::Arguments) {
    use core::fmt::Write;
    // Interrupts off while the line goes out: an IPI that parks this CPU
    // (a checkpoint's stop, a panic's) must not catch it holding the
    // console.
    let flags = crate::arch::irq_save();
    let me = crate::arch::percpu::cpu_id() + 1;
    let mut took = false;
    if OWNER.load(Ordering::Relaxed) != me {
        for _ in 0..MAX_SPINS {
            if OWNER.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                took = true;
                break;
            }
            // The holder may be waiting for this CPU's shootdown answer.
            crate::arch::tlb::poll();
            core::hint::spin_loop();
        }
    }
    let _ = serial::Com1.write_fmt(args);
    if took {
        OWNER.store(0, Ordering::Release);
    }
    crate::arch::irq_restore(flags);
}
