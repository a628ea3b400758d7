//! A file for `vmm inspect FILE`: the snapshot reader on arbitrary bytes (`vmm::fuzz::snapshot`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::snapshot(data));
