//! Hostile page tables: arbitrary bytes become memory, CR3, a virtual
//! address and a CPU context; the walker, the mapping iterator, the TLB
//! model and the mapper must neither panic nor disagree with each other.
//! The same check runs under proptest in `cargo test -p mm-core`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mm_core::paging::fuzz::exercise(data);
});
