//! Hostile page tables: arbitrary bytes become memory, CR3, a virtual
//! address and a CPU context; the walker, the mapping iterator, the TLB
//! model and the mapper must neither panic nor disagree with each other,
//! and swap entries must round-trip (`mm_core::fuzz::walker`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_core::fuzz::walker(data));
