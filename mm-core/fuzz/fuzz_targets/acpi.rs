//! The MADT reader the guest boots with, on arbitrary physical memory
//! (`mm_core::fuzz::acpi`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_core::fuzz::acpi(data));
