//! The SRAT/SLIT reader the guest learns its NUMA nodes with, on
//! arbitrary physical memory (`mm_core::fuzz::numa`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_core::fuzz::numa(data));
