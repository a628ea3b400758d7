//! The virtio-mmio transport, version 2 (virtio 1.x, "modern"): the
//! register window of virtio spec 4.2.2, one split virtqueue, the device
//! status state machine and the interrupt status. Everything the guest
//! writes is checked: a bad value is ignored or puts the device in
//! DEVICE_NEEDS_RESET, never panics the VMM.

use super::{MmioDevice, VirtioDevice};
use crate::memory::GuestMem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

/// "virt", little-endian: the magic value every virtio-mmio window starts with.
pub const MAGIC: u32 = 0x7472_6976;
/// The modern (virtio 1.x) register layout.
pub const VERSION: u32 = 2;
/// Our vendor ID ("MMEU" little-endian); drivers ignore it.
pub const VENDOR: u32 = 0x5545_4d4d;

/// Counts of what the transport did, shared with the VMM for its report.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// QueueNotify writes (each is one exit).
    pub notifies: AtomicU64,
    /// Interrupts signalled (used-ring updates, config changes).
    pub interrupts: AtomicU64,
    /// Times the device entered DEVICE_NEEDS_RESET over a broken queue.
    pub needs_reset: AtomicU64,
}

/// How the device interrupts the guest: an irqfd (KVM injects on the GSI
/// it was registered for) or, in unit tests, nothing but the status bit.
pub enum Irq {
    /// `eventfd` registered with `KVM_IRQFD`.
    Fd(EventFd),
    /// No line: the guest must poll.
    None,
}

/// A virtio device behind its virtio-mmio window.
pub struct MmioTransport<D: VirtioDevice> {
    device: D,
    mem: GuestMem,
    irq: Irq,
    queue: Queue,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    interrupt_status: u32,
    stats: Arc<TransportStats>,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// The transport for `device`, with one queue of up to `queue_max`
    /// descriptors.
    pub fn new(device: D, mem: GuestMem, irq: Irq, queue_max: u16) -> Result<Self, virtio_queue::Error> {
        Ok(MmioTransport {
            device,
            mem,
            irq,
            queue: Queue::new(queue_max)?,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            interrupt_status: 0,
            stats: Arc::default(),
        })
    }

    /// The transport's counters.
    pub fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    /// The device behind the transport.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The interrupt status register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    fn reset(&mut self) {
        self.queue.reset();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
    }

    fn signal(&mut self, why: u32) {
        self.interrupt_status |= why;
        self.stats.interrupts.fetch_add(1, Ordering::Relaxed);
        if let Irq::Fd(fd) = &self.irq {
            // A full eventfd counter (never, at one write per request
            // batch) would only merge interrupts.
            let _ = fd.write(1);
        }
    }

    /// The queue is unusable (bad addresses, a corrupt avail index): the
    /// spec's DEVICE_NEEDS_RESET, announced with a configuration interrupt.
    fn needs_reset(&mut self) {
        if self.status & VIRTIO_CONFIG_S_NEEDS_RESET == 0 {
            self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
            self.stats.needs_reset.fetch_add(1, Ordering::Relaxed);
            self.signal(VIRTIO_MMIO_INT_CONFIG);
        }
    }

    fn features_ok(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
    }

    fn queue_configurable(&self) -> bool {
        self.queue_sel == 0 && self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0 && self.features_ok() && !self.queue.ready()
    }

    fn notify(&mut self) {
        self.stats.notifies.fetch_add(1, Ordering::Relaxed);
        let running = self.status & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED)
            == VIRTIO_CONFIG_S_DRIVER_OK;
        if !running || !self.queue.ready() {
            return;
        }
        if !self.queue.is_valid(&*self.mem) {
            self.needs_reset();
            return;
        }
        let mem = self.mem.clone();
        match self.device.process_queue(&mut self.queue, &mem) {
            Ok(true) => {
                // VRING_AVAIL_F_NO_INTERRUPT (no EVENT_IDX is offered) lets
                // a polling driver go without; virtio-queue does not read
                // that flag, so the transport does.
                let flags: u16 = mem.read_obj(GuestAddress(self.queue.avail_ring())).unwrap_or(0);
                let wanted = flags & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0;
                if wanted && self.queue.needs_notification(&*mem).unwrap_or(true) {
                    self.signal(VIRTIO_MMIO_INT_VRING);
                }
            }
            Ok(false) => {}
            Err(_) => self.needs_reset(),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // The driver may only add bits, in the spec's order (3.1.1); a
        // FEATURES_OK the device cannot accept stays clear, which is how
        // the driver learns the negotiation failed.
        let mut v = v | (self.status & VIRTIO_CONFIG_S_NEEDS_RESET);
        if v & self.status != self.status {
            return;
        }
        if v & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_ok() {
            let subset = self.driver_features & !self.device.features() == 0;
            let modern = self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0;
            let steps = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
            if !(subset && modern && v & steps == steps) {
                v &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        if v & VIRTIO_CONFIG_S_DRIVER_OK != 0 && v & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            return;
        }
        self.status = v;
    }

    fn read_reg(&mut self, offset: u32) -> u32 {
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_id(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX if self.queue_sel == 0 => self.queue.max_size() as u32,
            VIRTIO_MMIO_QUEUE_READY => (self.queue_sel == 0 && self.queue.ready()) as u32,
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u32, v: u32) {
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES => {
                let driving = self.status & VIRTIO_CONFIG_S_DRIVER != 0;
                if driving && !self.features_ok() {
                    match self.driver_features_sel {
                        0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v as u64,
                        1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v as u64) << 32,
                        _ => {}
                    }
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM if self.queue_configurable() => {
                // A size the queue refuses (0, above the maximum, not a
                // power of two) is left out: the queue then fails its
                // validity check at QueueReady.
                self.queue.set_size(v.min(u16::MAX as u32) as u16);
            }
            VIRTIO_MMIO_QUEUE_READY if self.queue_sel == 0 => {
                if v == 1 && self.queue_configurable() {
                    // `is_valid` checks the rings lie in RAM, and only
                    // judges a ready queue: a queue that fails stays off.
                    self.queue.set_ready(true);
                    if !self.queue.is_valid(&*self.mem) {
                        self.queue.set_ready(false);
                    }
                } else if v == 0 {
                    self.queue.set_ready(false);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW if self.queue_configurable() => self.queue.set_desc_table_address(Some(v), None),
            VIRTIO_MMIO_QUEUE_DESC_HIGH if self.queue_configurable() => {
                self.queue.set_desc_table_address(None, Some(v))
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW if self.queue_configurable() => {
                self.queue.set_avail_ring_address(Some(v), None)
            }
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH if self.queue_configurable() => {
                self.queue.set_avail_ring_address(None, Some(v))
            }
            VIRTIO_MMIO_QUEUE_USED_LOW if self.queue_configurable() => self.queue.set_used_ring_address(Some(v), None),
            VIRTIO_MMIO_QUEUE_USED_HIGH if self.queue_configurable() => self.queue.set_used_ring_address(None, Some(v)),
            // Only queue 0 exists.
            VIRTIO_MMIO_QUEUE_NOTIFY if v == 0 => self.notify(),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !v,
            VIRTIO_MMIO_STATUS => self.write_status(v),
            _ => {}
        }
    }
}

impl<D: VirtioDevice> MmioDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let config = VIRTIO_MMIO_CONFIG as u64;
        if offset >= config {
            self.device.read_config(offset - config, data);
            return;
        }
        // The common registers are 32 bits wide and aligned (4.2.2.2);
        // anything else reads as 0.
        if data.len() == 4 && offset.is_multiple_of(4) {
            data.copy_from_slice(&self.read_reg(offset as u32).to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Configuration space is read-only for a block device; common
        // registers take aligned 32-bit writes only.
        if data.len() == 4 && offset.is_multiple_of(4) && offset < VIRTIO_MMIO_CONFIG as u64 {
            let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            self.write_reg(offset as u32, v);
        }
    }
}
