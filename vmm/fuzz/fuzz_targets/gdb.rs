//! gdb's bytes through the stub's framing, gdbstub and the snapshot target (`vmm::fuzz::gdb`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::gdb(data));
