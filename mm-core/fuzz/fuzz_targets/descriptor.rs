//! The guest's descriptor and the structures it points to, decoded from
//! arbitrary bytes (`mm_core::fuzz::descriptor`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_core::fuzz::descriptor(data));
