//! Random alloc/free sequences over the buddy, slab and vmalloc allocators
//! together: every step is checked against a reference model and the
//! allocators' invariants (no double hand-out, every frame accounted for,
//! bad frees rejected, full merge at the end). The same logic runs under
//! proptest in `cargo test -p mm-core` (`slab::harness::tests`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = mm_core::slab::harness::run(data) {
        panic!("allocator invariant violated: {e}");
    }
});
