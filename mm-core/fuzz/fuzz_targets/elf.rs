//! The guest's user-program ELF reader on arbitrary files
//! (`mm_core::fuzz::elf`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_core::fuzz::elf(data));
