//! x86-64 paging: entry formats, the software MMU (walker), a TLB model and
//! page-table editing.
//!
//! This module owns everything that interprets or edits page tables through
//! [`crate::mem::PhysMem`]. The walker is the reference: the mapper, the TLB
//! model and the host's reports all agree with it by construction or are
//! tested against it.

pub mod editor;
pub mod entry;
pub mod fuzz;
pub mod huge;
pub mod mapper;
pub mod swap;
pub mod tlb;
pub mod tlbtrace;
pub mod walker;

#[cfg(test)]
mod model_tests;

pub use crate::addr::{Level, PageSize};
pub use editor::{tables, Leaf, LeafKinds, Slot, TableRef, Tables};
pub use entry::{Pte, PteFlags};
pub use mapper::{FrameAllocator, MapError, MapRequest, Mapper, MapperFlush, Mapping, SizeRequest, TlbFlusher};
pub use swap::SwapEntry;
pub use tlb::{SharedTlb, Tlb};
pub use walker::{
    translate, walk, Access, CpuContext, CpuVendor, Fault, FaultReason, PageFault, PfErrorCode, RawRegisters,
    Translation,
};
