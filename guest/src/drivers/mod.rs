//! Device drivers: the IOAPIC (to route a device's interrupt line to a
//! vector) and virtio over MMIO (the block device swap will use).

pub mod ioapic;
pub mod virtio;

/// Probes the devices the command line names (`virtio_mmio.device=`), as
/// Linux's virtio-mmio platform driver does at boot.
pub fn init(cmdline: &str) {
    virtio::probe(cmdline);
}
