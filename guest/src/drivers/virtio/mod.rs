//! Virtio over MMIO (virtio 1.x): the transport ([`mmio`]: finding the
//! device on the command line, its registers, feature negotiation), the
//! split virtqueue ([`queue`]) and the block driver ([`blk`]).

pub mod blk;
pub mod mmio;
pub mod queue;

use crate::kprintln;

/// Probes every `virtio_mmio.device=` the command line names and binds the
/// block driver to the first block device.
pub fn probe(cmdline: &str) {
    let poll = cmdline.split(' ').any(|w| w == "virtio_poll");
    for spec in cmdline.split(' ').filter_map(mmio::DeviceSpec::parse_word) {
        match mmio::Transport::probe(&spec) {
            Ok(t) if t.device_id() == blk::DEVICE_ID => {
                if let Err(e) = blk::attach(t, &spec, poll) {
                    kprintln!("virtio_blk: {:#x}: {}", spec.base, e);
                }
            }
            Ok(t) => kprintln!("virtio-mmio: {:#x}: device type {:#x} has no driver", spec.base, t.device_id()),
            Err(e) => kprintln!("virtio-mmio: {:#x}: {}", spec.base, e),
        }
    }
}
