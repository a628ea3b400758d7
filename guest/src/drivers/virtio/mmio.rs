//! The virtio-mmio transport, driver side (virtio spec 4.2.2-4.2.3): the
//! device's place from the command line (Linux's
//! `virtio_mmio.device=<size>@<base>:<irq>`), its registers through an
//! uncached mapping, the status handshake and feature negotiation.

use crate::fmt::parse_u64;

/// "virt".
const MAGIC: u32 = 0x7472_6976;

/// Register offsets (virtio spec 4.2.2).
pub mod reg {
    /// Magic value ("virt").
    pub const MAGIC: u64 = 0x000;
    /// Transport version (2: modern).
    pub const VERSION: u64 = 0x004;
    /// Device type.
    pub const DEVICE_ID: u64 = 0x008;
    /// Device features, 32 bits selected by DEVICE_FEATURES_SEL.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// Which 32 features bits DEVICE_FEATURES shows.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// Driver features, 32 bits selected by DRIVER_FEATURES_SEL.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// Which 32 bits DRIVER_FEATURES sets.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Queue selector.
    pub const QUEUE_SEL: u64 = 0x030;
    /// Largest size of the selected queue (0: no queue).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// Size the driver chose.
    pub const QUEUE_NUM: u64 = 0x038;
    /// Queue ready.
    pub const QUEUE_READY: u64 = 0x044;
    /// Queue notifier (the queue index).
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// Interrupt status (bit 0: used ring, bit 1: configuration).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// Interrupt acknowledge.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Device status.
    pub const STATUS: u64 = 0x070;
    /// Descriptor table address, low half.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// Available ring address, low half.
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    /// Used ring address, low half.
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    /// Device configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (virtio spec 2.1).
pub mod status {
    /// The guest saw the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation done.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from alone.
    pub const NEEDS_RESET: u32 = 64;
    /// The driver gave up.
    pub const FAILED: u32 = 128;
}

/// VIRTIO_F_VERSION_1: the modern interface.
pub const F_VERSION_1: u64 = 1 << 32;

/// One `virtio_mmio.device=<size>@<base>:<irq>` from the command line.
#[derive(Clone, Copy, Debug)]
pub struct DeviceSpec {
    /// Physical base of the register window.
    pub base: u64,
    /// Its size.
    pub size: u64,
    /// Its interrupt (a GSI: an IOAPIC pin).
    pub irq: u32,
}

impl DeviceSpec {
    /// Parses one command-line word; `None` for any other word or a
    /// malformed one.
    pub fn parse_word(word: &str) -> Option<DeviceSpec> {
        let v = word.strip_prefix("virtio_mmio.device=")?;
        let (size, rest) = v.split_once('@')?;
        let (base, irq) = rest.split_once(':')?;
        // Linux allows a trailing `:<platform device id>`.
        let irq = irq.split(':').next()?;
        let size = parse_size(size)?;
        let base = parse_u64(base)?;
        let irq = parse_u64(irq)?;
        if size < 0x200 || base % 0x1000 != 0 || irq > 255 {
            return None;
        }
        Some(DeviceSpec { base, size, irq: irq as u32 })
    }
}

/// `4K`, `0x1000`, `1M` (Linux's memparse, the suffixes it takes here).
fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        _ => (s, 0),
    };
    parse_u64(num)?.checked_mul(1 << shift)
}

/// Why a device could not be driven.
#[derive(Debug, Clone, Copy)]
pub enum ProbeError {
    /// The window could not be mapped.
    Map,
    /// No virtio magic there.
    NoDevice(u32),
    /// A legacy (version 1) device: only modern ones are driven.
    Legacy(u32),
    /// The device does not offer VIRTIO_F_VERSION_1.
    NotModern,
    /// The device refused the features (FEATURES_OK stayed clear).
    FeaturesRefused,
    /// No queue 0, or it was already in use.
    NoQueue,
    /// No memory for the queue.
    NoMemory,
    /// The device refused the queue (QueueReady stayed 0).
    QueueRefused,
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::Map => f.write_str("cannot map the register window"),
            ProbeError::NoDevice(m) => write!(f, "no virtio device (magic {:#x})", m),
            ProbeError::Legacy(v) => write!(f, "transport version {:#x}, only version 2 (virtio 1.x) is driven", v),
            ProbeError::NotModern => f.write_str("the device does not offer VIRTIO_F_VERSION_1"),
            ProbeError::FeaturesRefused => f.write_str("the device refused the negotiated features"),
            ProbeError::NoQueue => f.write_str("no usable queue 0"),
            ProbeError::NoMemory => f.write_str("no memory for the virtqueue"),
            ProbeError::QueueRefused => f.write_str("the device refused the virtqueue"),
        }
    }
}

/// A virtio-mmio device's register window.
pub struct Transport {
    base: u64,
    device_id: u32,
}

impl Transport {
    /// Maps the window and checks there is a modern virtio device behind it.
    pub fn probe(spec: &DeviceSpec) -> Result<Transport, ProbeError> {
        let va = crate::mm::vmalloc::ioremap(spec.base, spec.size.max(0x1000), "virtio-mmio")
            .map_err(|_| ProbeError::Map)?;
        let t = Transport { base: va.0, device_id: 0 };
        let magic = t.read(reg::MAGIC);
        if magic != MAGIC {
            return Err(ProbeError::NoDevice(magic));
        }
        let version = t.read(reg::VERSION);
        if version != 2 {
            return Err(ProbeError::Legacy(version));
        }
        let device_id = t.read(reg::DEVICE_ID);
        Ok(Transport { base: va.0, device_id })
    }

    /// The device type (2: block).
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// The mapped window's virtual address (for the interrupt handler,
    /// which must not take the driver's lock).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Reads a 32-bit register.
    pub fn read(&self, offset: u64) -> u32 {
        read_at(self.base, offset)
    }

    /// Writes a 32-bit register.
    pub fn write(&self, offset: u64, value: u32) {
        write_at(self.base, offset, value)
    }

    /// Reads a little-endian u64 from the configuration space.
    pub fn config_u64(&self, offset: u64) -> u64 {
        // Two 32-bit reads; a generation counter would matter only for
        // configuration that changes, and a disk's capacity here does not.
        let lo = self.read(reg::CONFIG + offset) as u64;
        let hi = self.read(reg::CONFIG + offset + 4) as u64;
        hi << 32 | lo
    }

    /// Resets the device, then the handshake of virtio spec 3.1.1 up to
    /// FEATURES_OK: returns the features both sides have, from `wanted`
    /// (which must include VERSION_1).
    pub fn negotiate(&self, wanted: u64) -> Result<u64, ProbeError> {
        self.write(reg::STATUS, 0);
        self.write(reg::STATUS, status::ACKNOWLEDGE);
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.write(reg::DEVICE_FEATURES_SEL, 0);
        let lo = self.read(reg::DEVICE_FEATURES) as u64;
        self.write(reg::DEVICE_FEATURES_SEL, 1);
        let hi = self.read(reg::DEVICE_FEATURES) as u64;
        let offered = hi << 32 | lo;
        if offered & F_VERSION_1 == 0 {
            self.fail();
            return Err(ProbeError::NotModern);
        }
        let features = offered & (wanted | F_VERSION_1);
        self.write(reg::DRIVER_FEATURES_SEL, 0);
        self.write(reg::DRIVER_FEATURES, features as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 1);
        self.write(reg::DRIVER_FEATURES, (features >> 32) as u32);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(reg::STATUS, s);
        if self.read(reg::STATUS) & status::FEATURES_OK == 0 {
            self.fail();
            return Err(ProbeError::FeaturesRefused);
        }
        Ok(features)
    }

    /// Gives the device queue 0 at these physical addresses, `size`
    /// entries, and sets DRIVER_OK.
    pub fn setup_queue(&self, size: u16, desc: u64, avail: u64, used: u64) -> Result<(), ProbeError> {
        self.write(reg::QUEUE_SEL, 0);
        if self.read(reg::QUEUE_READY) != 0 {
            return Err(ProbeError::NoQueue);
        }
        self.write(reg::QUEUE_NUM, size as u32);
        for (low, addr) in [(reg::QUEUE_DESC_LOW, desc), (reg::QUEUE_AVAIL_LOW, avail), (reg::QUEUE_USED_LOW, used)] {
            self.write(low, addr as u32);
            self.write(low + 4, (addr >> 32) as u32);
        }
        self.write(reg::QUEUE_READY, 1);
        if self.read(reg::QUEUE_READY) != 1 {
            self.fail();
            return Err(ProbeError::QueueRefused);
        }
        let s = self.read(reg::STATUS);
        self.write(reg::STATUS, s | status::DRIVER_OK);
        Ok(())
    }

    /// Tells the device the driver gave up.
    pub fn fail(&self) {
        let s = self.read(reg::STATUS);
        self.write(reg::STATUS, s | status::FAILED);
    }
}

/// Reads the 32-bit register at `offset` of the window mapped at `base`.
pub fn read_at(base: u64, offset: u64) -> u32 {
    // SAFETY: `base` is an uncached mapping of the device's window (from
    // `Transport::probe`), and every offset used is a register inside it.
    unsafe { core::ptr::read_volatile((base + offset) as *const u32) }
}

/// Writes the 32-bit register at `offset` of the window mapped at `base`.
pub fn write_at(base: u64, offset: u64, value: u32) {
    // SAFETY: as `read_at`.
    unsafe { core::ptr::write_volatile((base + offset) as *mut u32, value) }
}
