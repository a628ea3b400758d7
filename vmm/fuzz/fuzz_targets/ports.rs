//! A guest's port and virtio-mmio traffic and host console input (`vmm::fuzz::ports`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz::ports(data));
