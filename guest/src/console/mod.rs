//! The kernel console: COM1, polled, and the `kprint!`/`kprintln!` macros.

pub mod serial;
pub mod shell;

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

/// Writes formatted text to COM1.
pub fn print(args: core::fmt::Arguments) {
    use core::fmt::Write;
    let _ = serial::Com1.write_fmt(args);
}
