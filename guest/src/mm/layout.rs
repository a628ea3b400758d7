//! The kernel's virtual memory layout (Linux x86-64, 4-level paging):
//! mm-core's ABI defines it (the host reads it back from the descriptor);
//! the kernel image's own sections come from the linker script.

pub use mm_core::abi::layout::{
    DIRECT_MAP_SIZE, KERNEL_MAP, KERNEL_START, PAGE_OFFSET, USER_END, VMALLOC_END, VMALLOC_START, VMEMMAP_SIZE,
    VMEMMAP_START,
};
use mm_core::addr::PAGE_SIZE;

/// The region an address falls in, for oops messages.
pub fn region_name(addr: u64) -> &'static str {
    match addr {
        a if a < PAGE_SIZE => "the NULL page (a NULL pointer dereference)",
        a if a < USER_END => "user space",
        a if a < KERNEL_START => "the non-canonical hole",
        a if (PAGE_OFFSET..PAGE_OFFSET + DIRECT_MAP_SIZE).contains(&a) => "the direct map",
        a if (VMALLOC_START..VMALLOC_END).contains(&a) => "the vmalloc area",
        a if (VMEMMAP_START..VMEMMAP_START + VMEMMAP_SIZE).contains(&a) => "the vmemmap (page descriptors)",
        a if a >= KERNEL_MAP => "the kernel image",
        _ => "an unused kernel range",
    }
}

/// The kernel image's sections, from the linker script's symbols.
#[derive(Clone, Copy)]
pub struct KernelImage {
    /// Text: read-only, executable.
    pub text: (u64, u64),
    /// Read-only data.
    pub rodata: (u64, u64),
    /// Data and bss: read-write, not executable.
    pub data: (u64, u64),
}

extern "C" {
    static __kernel_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

impl KernelImage {
    /// The running kernel's sections.
    pub fn get() -> Self {
        let a = |s: &u8| s as *const u8 as u64;
        // SAFETY: only the addresses of linker-script symbols are taken.
        unsafe {
            KernelImage {
                text: (a(&__text_start), a(&__text_end)),
                rodata: (a(&__rodata_start), a(&__rodata_end)),
                data: (a(&__data_start), a(&__kernel_end)),
            }
        }
    }

    /// The whole image's virtual range.
    pub fn range(&self) -> (u64, u64) {
        // SAFETY: only the address of a linker-script symbol is taken.
        (unsafe { &__kernel_start as *const u8 as u64 }, self.data.1)
    }

    /// Where the image lies in physical memory.
    pub fn phys(&self) -> (u64, u64) {
        let (s, e) = self.range();
        (s - KERNEL_MAP, e - KERNEL_MAP)
    }
}
