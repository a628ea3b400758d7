//! A kernel file as `--kernel` reads it: checks, symbols, load (`vmm::fuzz::kernel_elf`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::kernel_elf(data));
