//! The ELF64 reader for user programs lives in mm-core (`mm_core::elf`),
//! where the host's fuzz target and tests run it on hostile files.

pub use mm_core::elf::*;
