//! Buddy, slab and vmalloc driven by operation sequences `arbitrary`
//! builds, every step checked against a model (`mm_core::fuzz::alloc`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_core::fuzz::alloc(data));
