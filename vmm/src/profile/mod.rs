//! Guest kernel path lengths: `vmm run --count-insns FROM..TO` counts the
//! instructions the guest's ring 0 executes between two checkpoints,
//! exactly, by single-stepping ([`insns`]). Instruction counts do not
//! depend on the host (ring 0 is emulated here, so wall times mean
//! little): they are the path length of a kmalloc, a page fault, a fork.
//! `vmm run --profile FILE` samples every vCPU's stack from a host timer
//! and draws a flame graph ([`sampler`], unwinding with [`unwind`]).
//! Where the host has a PMU, [`pmu`] adds the guest's exact ring-3
//! instruction count to a window.

pub mod insns;
pub mod pmu;
pub mod sampler;
pub mod unwind;
pub mod userimg;
