//! The host's reading of guest state through a hostile descriptor (`vmm::fuzz::guest_state`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::guest_state(data));
