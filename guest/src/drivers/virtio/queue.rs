//! The split virtqueue, driver side (virtio spec 2.7): a descriptor table,
//! the available ring the driver fills, the used ring the device fills, in
//! physically contiguous pages the device reaches by physical address.
//! Free descriptors form a list through their `next` fields, as Linux's
//! virtio_ring.c keeps them.

use crate::mm::{alloc_pages, free_pages, phys_to_virt, GFP_KERNEL};
use core::sync::atomic::{fence, Ordering};
use mm_core::addr::PAGE_SIZE;

/// VIRTQ_DESC_F_NEXT: the chain goes on at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// VIRTQ_DESC_F_WRITE: the device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// VIRTQ_AVAIL_F_NO_INTERRUPT: the driver polls; no interrupt wanted.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Largest queue this driver sets up (the pages below hold one this big).
pub const MAX_SIZE: u16 = 256;
/// The queue's pages: 2^ORDER (desc 4 KiB + avail, then used from the
/// next page boundary, for 256 entries).
const ORDER: u8 = 2;

/// One buffer of a chain: physical address, length, device-writable.
#[derive(Clone, Copy)]
pub struct Buffer {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it (else it reads it).
    pub write: bool,
}

/// A split virtqueue.
pub struct SplitQueue {
    size: u16,
    pfn: u64,
    /// Virtual (direct-map) addresses of the three parts.
    desc: u64,
    avail: u64,
    used: u64,
    free_head: u16,
    num_free: u16,
    /// The driver's copy of avail->idx (published by `publish`).
    avail_idx: u16,
    /// The next used entry to reap.
    last_used: u16,
}

fn vread<T: Copy>(va: u64) -> T {
    // SAFETY: every address passed is inside the queue's own pages
    // (allocated in `new`, freed in `drop`), suitably aligned; volatile
    // because the device writes them behind the compiler's back.
    unsafe { core::ptr::read_volatile(va as *const T) }
}

fn vwrite<T: Copy>(va: u64, v: T) {
    // SAFETY: as `vread`.
    unsafe { core::ptr::write_volatile(va as *mut T, v) }
}

impl SplitQueue {
    /// A queue of `size` entries (a power of two, at most [`MAX_SIZE`]).
    pub fn new(size: u16) -> Option<SplitQueue> {
        if size == 0 || size > MAX_SIZE || !size.is_power_of_two() {
            return None;
        }
        let pfn = alloc_pages(ORDER, GFP_KERNEL)?;
        let base = phys_to_virt(pfn * PAGE_SIZE);
        // SAFETY: the pages were just allocated for this queue alone.
        unsafe { core::ptr::write_bytes(base as *mut u8, 0, (PAGE_SIZE << ORDER) as usize) };
        let n = size as u64;
        let avail = base + 16 * n;
        let used = base + (16 * n + 6 + 2 * n).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let q =
            SplitQueue { size, pfn, desc: base, avail, used, free_head: 0, num_free: size, avail_idx: 0, last_used: 0 };
        for i in 0..size {
            vwrite(q.desc_va(i) + 14, (i + 1) % size);
        }
        Some(q)
    }

    /// Entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Physical addresses of the descriptor table, the available ring and
    /// the used ring, for the transport.
    pub fn addresses(&self) -> (u64, u64, u64) {
        let pa = |va: u64| crate::mm::virt_to_phys(va);
        (pa(self.desc), pa(self.avail), pa(self.used))
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    fn desc_va(&self, i: u16) -> u64 {
        self.desc + 16 * i as u64
    }

    /// Asks the device for no interrupts (polling) or for them.
    pub fn set_no_interrupt(&mut self, no: bool) {
        vwrite(self.avail, if no { AVAIL_F_NO_INTERRUPT } else { 0 });
    }

    /// The descriptor the next [`SplitQueue::add`] will use as its head.
    pub fn peek_free_head(&self) -> u16 {
        self.free_head
    }

    /// Puts a chain of `bufs` on the available ring (not yet visible to
    /// the device: see [`SplitQueue::publish`]); its head index, or `None`
    /// if there are not enough free descriptors.
    pub fn add(&mut self, bufs: &[Buffer]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.num_free as usize {
            return None;
        }
        let head = self.free_head;
        let mut i = head;
        for (k, b) in bufs.iter().enumerate() {
            let d = self.desc_va(i);
            let next: u16 = vread(d + 14);
            let last = k + 1 == bufs.len();
            let flags = if b.write { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
            vwrite(d, b.addr);
            vwrite(d + 8, b.len);
            vwrite(d + 12, flags);
            if last {
                self.free_head = next;
            } else {
                i = next;
            }
        }
        self.num_free -= bufs.len() as u16;
        let slot = self.avail_idx % self.size;
        vwrite(self.avail + 4 + 2 * slot as u64, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        Some(head)
    }

    /// Makes every chain added so far visible to the device (avail->idx),
    /// after the descriptors themselves (virtio spec 2.7.13).
    pub fn publish(&mut self) {
        fence(Ordering::SeqCst);
        vwrite(self.avail + 2, self.avail_idx);
        fence(Ordering::SeqCst);
    }

    /// Chains published and not yet reaped.
    pub fn in_flight(&self) -> u16 {
        self.avail_idx.wrapping_sub(self.last_used)
    }

    /// True when the device has used entries the driver has not reaped.
    pub fn has_used(&self) -> bool {
        let idx: u16 = vread(self.used + 2);
        idx != self.last_used
    }

    /// Reaps one used entry: (head index, bytes the device wrote); its
    /// descriptors go back on the free list.
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        if !self.has_used() {
            return None;
        }
        // The entry is read after the index that published it.
        fence(Ordering::SeqCst);
        let slot = (self.last_used % self.size) as u64;
        let id: u32 = vread(self.used + 4 + 8 * slot);
        let len: u32 = vread(self.used + 8 + 8 * slot);
        self.last_used = self.last_used.wrapping_add(1);
        let head = (id % self.size as u32) as u16;
        // Free the chain: follow NEXT, at most `size` steps (the table is
        // ours, but a bound costs nothing).
        let mut i = head;
        let mut n = 1;
        while n < self.size {
            let flags: u16 = vread(self.desc_va(i) + 12);
            if flags & DESC_F_NEXT == 0 {
                break;
            }
            i = vread(self.desc_va(i) + 14);
            n += 1;
        }
        vwrite(self.desc_va(i) + 14, self.free_head);
        vwrite(self.desc_va(i) + 12, 0u16);
        self.free_head = head;
        self.num_free += n;
        Some((head, len))
    }
}

impl Drop for SplitQueue {
    fn drop(&mut self) {
        let _ = free_pages(self.pfn, ORDER);
    }
}
