//! Virtio devices on the virtio-mmio transport (virtio 1.x, the modern
//! register layout): the transport ([`mmio`]) and a block device
//! ([`blk`]) backed by a host file, swap's device (`vmm run --swap`).
//!
//! The queues are rust-vmm's `virtio-queue` split virtqueues over our
//! `GuestMemoryMmap`; the constants are `virtio-bindings`'. Requests are
//! served in the vCPU thread at the guest's QueueNotify write (the MMIO
//! exit), and completion is signalled through an irqfd on a GSI the
//! in-kernel IOAPIC routes, so the guest's interrupt arrives without
//! another exit.

pub mod blk;
pub mod mmio;

use crate::memory::GuestMem;
use blk::{BackingFile, Block, SwapError};
use kvm_ioctls::VmFd;
use mm_core::abi::virtio::{BLK_IRQ, MMIO_BASE, MMIO_SIZE, QUEUE_MAX};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// What a device behind the virtio-mmio transport provides: its identity,
/// features and configuration space, and the work on its queue.
pub trait VirtioDevice: Send {
    /// The virtio device ID (2: block).
    fn device_id(&self) -> u32;
    /// The features offered (device-specific bits plus the transport's).
    fn features(&self) -> u64;
    /// Reads `data.len()` bytes of the configuration space at `offset`;
    /// bytes beyond it read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Serves every request available on `queue`; true if any was
    /// completed (the used ring advanced).
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, virtio_queue::Error>;
}

/// A device on the MMIO bus: the VMM's dispatch of the guest's `MmioRead`
/// and `MmioWrite` exits.
pub trait MmioDevice: Send {
    /// A read of `data.len()` bytes at `offset` into the device's window.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A write at `offset` into the device's window.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// The devices on the MMIO bus, each with its window.
#[derive(Default)]
pub struct MmioBus {
    devices: Vec<(u64, u64, Box<dyn MmioDevice>)>,
}

impl MmioBus {
    /// Places `device` at guest-physical `[base, base + size)`.
    pub fn insert(&mut self, base: u64, size: u64, device: Box<dyn MmioDevice>) {
        self.devices.push((base, size, device));
    }

    fn find(&mut self, addr: u64) -> Option<(u64, &mut Box<dyn MmioDevice>)> {
        self.devices
            .iter_mut()
            .find(|(base, size, _)| addr >= *base && addr - *base < *size)
            .map(|(b, _, d)| (addr - *b, d))
    }

    /// A guest read at `addr`: true if a device took it (otherwise the
    /// caller answers all-ones, as an empty bus does).
    pub fn read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                dev.read(offset, data);
                true
            }
            None => false,
        }
    }

    /// A guest write at `addr`: true if a device took it.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                dev.write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Linux's `virtio_mmio.device=<size>@<base>:<irq>` for the swap device,
/// which the VMM appends to the kernel command line.
pub fn kernel_cmdline() -> String {
    format!("virtio_mmio.device={}K@{:#x}:{}", MMIO_SIZE >> 10, MMIO_BASE, BLK_IRQ)
}

/// The swap device ready for the MMIO bus (at `MMIO_BASE`), and a closing
/// line of its counts.
pub struct SwapDevice {
    /// The transport with the block device behind it.
    pub transport: Box<dyn MmioDevice>,
    /// "N reads (S sectors), ..." for the VMM's report at the end of a run.
    pub report: Box<dyn Fn() -> String + Send>,
}

/// The virtio-blk device over `file` on its MMIO transport, its interrupt
/// an irqfd on the GSI the in-kernel IOAPIC routes (create the irqchip
/// first).
pub fn swap_device(vm: &VmFd, mem: &GuestMem, file: BackingFile) -> Result<SwapDevice, SwapError> {
    use std::sync::atomic::Ordering::Relaxed;
    let irq = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).map_err(SwapError::Interrupt)?;
    vm.register_irqfd(&irq, BLK_IRQ).map_err(SwapError::Irqfd)?;
    let block = Block::new(file);
    let blk = block.stats();
    let transport =
        mmio::MmioTransport::new(block, mem.clone(), mmio::Irq::Fd(irq), QUEUE_MAX).map_err(SwapError::Queue)?;
    let t = transport.stats();
    let report = Box::new(move || {
        format!(
            "{} reads ({} sectors), {} writes ({} sectors), {} flushes, {} get-id, {} errors, {} notifies, {} interrupts",
            blk.reads.load(Relaxed),
            blk.sectors_read.load(Relaxed),
            blk.writes.load(Relaxed),
            blk.sectors_written.load(Relaxed),
            blk.flushes.load(Relaxed),
            blk.get_ids.load(Relaxed),
            blk.errors.load(Relaxed) + blk.unanswerable.load(Relaxed),
            t.notifies.load(Relaxed),
            t.interrupts.load(Relaxed),
        )
    });
    Ok(SwapDevice { transport: Box::new(transport), report })
}
