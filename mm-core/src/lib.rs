//! Memory-management algorithms and formats shared by the guest kernel and
//! the host-side inspector.
//!
//! The guest runs these on its own memory; the host runs the same code over
//! guest memory it reads through the VMM. Nothing here touches hardware:
//! every access to "physical" memory goes through [`mem::PhysMem`], the one
//! seam where raw memory is reached, and this crate has no `unsafe` at all:
//! the raw implementations of that seam live with their users.
//! [`abi`] is the one definition of the machine interface (ports, boot
//! protocol, kernel layout, control-register bits) guest, firmware and VMM
//! share.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod abi;
pub mod acpi;
pub mod addr;
pub mod buddy;
pub mod compaction;
pub mod descriptor;
pub mod elf;
pub mod fmt;
#[cfg(any(test, feature = "std"))]
pub mod fuzz;
pub mod lru;
pub mod mem;
pub mod memcg;
pub mod mempolicy;
pub mod numa;
pub mod page_ext;
pub mod paging;
pub mod rmap;
pub mod slab;
pub mod swap;
pub mod vma;
pub mod vmalloc;
