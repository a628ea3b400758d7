//! The kernel's memory manager.

pub mod fault;
pub mod layout;
