//! virtio-blk (virtio spec 5.2) backed by a host file: swap's device.
//!
//! The file is opened (created sparse when missing) and checked before the
//! guest boots ([`BackingFile::open`]); then each request chain is served
//! through virtio-queue's `Reader`/`Writer`, which bound every access by
//! guest RAM. Whatever a guest puts in a chain (a loop, a length beyond
//! RAM, a sector past the end, an unknown type) ends as a status byte
//! (`VIRTIO_BLK_S_IOERR`/`UNSUPP`) or, with no writable byte to put it in,
//! a used entry of length 0: never a panic, and never more work than the
//! chain's own bounded length (virtio-queue stops a chain after queue-size
//! descriptors).

use super::VirtioDevice;
use crate::memory::{human, parse_size, MemoryError};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestMemoryMmap};

pub use mm_core::abi::virtio::SECTOR_SIZE;

/// Size of a swap file the VMM creates when `--swap` names a missing file
/// and gives no size.
pub const DEFAULT_SIZE: u64 = 64 << 20;
/// Smallest swap device accepted: 16 pages (Linux's mkswap wants 10).
pub const MIN_SIZE: u64 = 64 << 10;
/// Swap sizes are whole pages.
pub const PAGE: u64 = 4096;
/// What GET_ID answers (up to 20 bytes, NUL-padded).
pub const SERIAL: &[u8] = b"mmemu-swap";
/// The most bytes copied per step between the file and guest memory.
const CHUNK: usize = 64 << 10;

/// `--swap PATH[,size=SIZE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapConfig {
    /// The backing file.
    pub path: PathBuf,
    /// The device's size; by default an existing file's size, or
    /// [`DEFAULT_SIZE`] for a file the VMM creates.
    pub size: Option<u64>,
    /// Fault injection (`fail_writes=A-B`, as Linux's fail_make_request):
    /// the A-th to B-th write requests (counted from 1) fail with IOERR,
    /// so the guest's handling of a failing disk can be tested.
    pub fail_writes: Option<(u64, u64)>,
}

/// Errors preparing the swap device, all before the guest boots.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The option did not parse.
    #[error(
        "'{0}' is not a swap option: write --swap PATH or --swap PATH,size=SIZE (e.g. --swap /tmp/swap.img,size=64M); fail_writes=A-B makes the A-th to B-th writes fail (fault injection)"
    )]
    BadOption(String),
    /// The size did not parse.
    #[error("bad swap size")]
    BadSize(#[from] MemoryError),
    /// Not whole pages.
    #[error("a swap size of {0} bytes is not a multiple of 4 KiB: give whole pages, e.g. size=64M")]
    Unaligned(u64),
    /// The file could not be created or opened.
    #[error("cannot create or open the swap file {path}: choose a path in an existing, writable directory")]
    Create {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Not writable.
    #[error("the swap file {0} is read-only (its permissions or its file system): make it writable (chmod u+w) or choose another path")]
    ReadOnly(PathBuf),
    /// Not a regular file.
    #[error("the swap path {0} is not a regular file: give a file path (the VMM creates it when missing)")]
    NotAFile(PathBuf),
    /// Smaller than asked, or than the minimum.
    #[error("the swap file {path} is {have}, smaller than {need}: give a bigger file, a smaller size=, or a new path (the VMM creates it)")]
    TooSmall {
        /// The path.
        path: PathBuf,
        /// Its size.
        have: String,
        /// What was needed.
        need: String,
    },
    /// No eventfd for the interrupt.
    #[error("cannot create the swap device's interrupt eventfd (check the open-files limit, ulimit -n)")]
    Interrupt(#[source] io::Error),
    /// KVM refused the irqfd.
    #[error("KVM refused to connect the swap device's interrupt (KVM_IRQFD on GSI {gsi}); this KVM lacks irqfd support", gsi = mm_core::abi::virtio::BLK_IRQ)]
    Irqfd(#[source] kvm_ioctls::Error),
    /// The queue refused its size (a VMM bug: the size is a constant).
    #[error("the swap device's virtqueue could not be created; this is a VMM bug")]
    Queue(#[source] virtio_queue::Error),
    /// The file could not be sized.
    #[error("cannot size the swap file {path} to {size}: check the free space and the file system")]
    Resize {
        /// The path.
        path: PathBuf,
        /// The size.
        size: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl SwapConfig {
    /// Parses `PATH[,size=SIZE]`.
    pub fn parse(s: &str) -> Result<Self, SwapError> {
        let (path, rest) = match s.split_once(',') {
            Some((p, r)) => (p, Some(r)),
            None => (s, None),
        };
        if path.is_empty() {
            return Err(SwapError::BadOption(s.into()));
        }
        let (mut size, mut fail_writes) = (None, None);
        for opt in rest.into_iter().flat_map(|r| r.split(',')) {
            if let Some(v) = opt.strip_prefix("size=") {
                size = Some(parse_size(v)?);
            } else if let Some(v) = opt.strip_prefix("fail_writes=") {
                let (a, b) = v.split_once('-').unwrap_or((v, v));
                match (a.parse::<u64>(), b.parse::<u64>()) {
                    (Ok(a), Ok(b)) if a >= 1 && a <= b => fail_writes = Some((a, b)),
                    _ => return Err(SwapError::BadOption(s.into())),
                }
            } else {
                return Err(SwapError::BadOption(s.into()));
            }
        }
        if let Some(n) = size {
            if !n.is_multiple_of(PAGE) {
                return Err(SwapError::Unaligned(n));
            }
        }
        Ok(SwapConfig { path: path.into(), size, fail_writes })
    }
}

/// The host file behind the device, open for reading and writing.
#[derive(Debug)]
pub struct BackingFile {
    file: File,
    path: PathBuf,
    size: u64,
    fail_writes: Option<(u64, u64)>,
}

impl BackingFile {
    /// Opens `cfg.path`, creating a sparse file of the asked size (or
    /// [`DEFAULT_SIZE`]) when missing, and checks it is a writable regular
    /// file of whole pages, at least [`MIN_SIZE`] and the asked size.
    pub fn open(cfg: &SwapConfig) -> Result<Self, SwapError> {
        let path = cfg.path.clone();
        if let Some(n) = cfg.size {
            if !n.is_multiple_of(PAGE) {
                return Err(SwapError::Unaligned(n));
            }
        }
        let create = |source| SwapError::Create { path: path.clone(), source };
        let existed = match std::fs::metadata(&path) {
            Ok(m) => {
                if !m.is_file() {
                    return Err(SwapError::NotAFile(path));
                }
                // Root writes through any mode bits: a file nobody may
                // write is read-only by its owner's intent, so honour that.
                if m.permissions().mode() & 0o222 == 0 {
                    return Err(SwapError::ReadOnly(path));
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(create(e)),
        };
        let file = OpenOptions::new().read(true).write(true).create(!existed).open(&path).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) if existed => {
                    SwapError::ReadOnly(path.clone())
                }
                _ => create(e),
            }
        })?;
        let have = file.metadata().map_err(create)?.len();
        let size = if existed {
            let size = cfg.size.unwrap_or(have - have % PAGE);
            if have < size || size < MIN_SIZE {
                return Err(SwapError::TooSmall {
                    path,
                    have: human_bytes(have),
                    need: human_bytes(size.max(MIN_SIZE)),
                });
            }
            size
        } else {
            let size = cfg.size.unwrap_or(DEFAULT_SIZE);
            if size < MIN_SIZE {
                let _ = std::fs::remove_file(&path);
                return Err(SwapError::TooSmall { path, have: human_bytes(size), need: human_bytes(MIN_SIZE) });
            }
            // Sparse: the host allocates blocks only where the guest writes.
            if let Err(source) = file.set_len(size) {
                // Nothing of ours is left behind.
                let _ = std::fs::remove_file(&path);
                return Err(SwapError::Resize { path, size: human_bytes(size), source });
            }
            size
        };
        Ok(BackingFile { file, path, size, fail_writes: cfg.fail_writes })
    }

    /// The device's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn human_bytes(n: u64) -> String {
    if n == 0 {
        return "0 bytes".into();
    }
    human(n)
}

/// What the device did, for the VMM's closing report and the tests.
#[derive(Debug, Default)]
pub struct BlkStats {
    /// IN requests served.
    pub reads: AtomicU64,
    /// OUT requests served.
    pub writes: AtomicU64,
    /// FLUSH requests.
    pub flushes: AtomicU64,
    /// GET_ID requests.
    pub get_ids: AtomicU64,
    /// Sectors read.
    pub sectors_read: AtomicU64,
    /// Sectors written.
    pub sectors_written: AtomicU64,
    /// Requests that ended with IOERR or UNSUPP.
    pub errors: AtomicU64,
    /// Chains with no writable byte for a status (used length 0).
    pub unanswerable: AtomicU64,
}

/// The virtio-blk device.
pub struct Block {
    disk: BackingFile,
    buf: Vec<u8>,
    stats: Arc<BlkStats>,
    /// Write requests seen (for `fail_writes`).
    writes_seen: u64,
}

/// Why a request failed, as the status byte says.
struct Failed(u8);

impl Block {
    /// A device over `disk`.
    pub fn new(disk: BackingFile) -> Self {
        Block { disk, buf: vec![0; CHUNK], stats: Arc::default(), writes_seen: 0 }
    }

    /// The device's counters.
    pub fn stats(&self) -> Arc<BlkStats> {
        self.stats.clone()
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.size / SECTOR_SIZE
    }

    /// Serves one request chain; returns the bytes written into it (the
    /// used entry's length).
    fn execute(&mut self, chain: DescriptorChain<&GuestMemoryMmap>, mem: &GuestMemoryMmap) -> u32 {
        let mut data_out = match chain.clone().writer(mem) {
            Ok(w) if w.available_bytes() > 0 => w,
            Ok(_) => {
                self.stats.unanswerable.fetch_add(1, Ordering::Relaxed);
                return 0;
            }
            // Some writable buffer lies outside RAM: the status byte (the
            // last writable descriptor's last byte) may still be reachable.
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let status_at = chain
                    .writable()
                    .last()
                    .filter(|d| d.len() > 0)
                    .and_then(|d| d.addr().checked_add(d.len() as u64 - 1));
                return match status_at.map(|a| mem.write_obj(VIRTIO_BLK_S_IOERR as u8, a)) {
                    Some(Ok(())) => 1,
                    _ => {
                        self.stats.unanswerable.fetch_add(1, Ordering::Relaxed);
                        0
                    }
                };
            }
        };
        // The status is the chain's last writable byte (5.2.6).
        let mut status_out = match data_out.split_at(data_out.available_bytes() - 1) {
            Ok(s) => s,
            Err(_) => {
                self.stats.unanswerable.fetch_add(1, Ordering::Relaxed);
                return 0;
            }
        };
        let status = match chain.reader(mem) {
            Ok(mut data_in) => match self.request(&mut data_in, &mut data_out) {
                Ok(()) => VIRTIO_BLK_S_OK as u8,
                Err(Failed(s)) => s,
            },
            Err(_) => VIRTIO_BLK_S_IOERR as u8,
        };
        if status != VIRTIO_BLK_S_OK as u8 {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        if status_out.write_all(&[status]).is_err() {
            self.stats.unanswerable.fetch_add(1, Ordering::Relaxed);
        }
        (data_out.bytes_written() + status_out.bytes_written()) as u32
    }

    /// The sector range `[sector, sector + len/512)` if it is whole sectors
    /// inside the disk.
    fn range(&self, sector: u64, len: usize) -> Result<u64, Failed> {
        let len = len as u64;
        let offset = sector.checked_mul(SECTOR_SIZE).ok_or(Failed(VIRTIO_BLK_S_IOERR as u8))?;
        let end = offset.checked_add(len).ok_or(Failed(VIRTIO_BLK_S_IOERR as u8))?;
        if !len.is_multiple_of(SECTOR_SIZE) || end > self.disk.size {
            return Err(Failed(VIRTIO_BLK_S_IOERR as u8));
        }
        Ok(offset)
    }

    fn request(
        &mut self,
        data_in: &mut virtio_queue::Reader<'_>,
        data_out: &mut virtio_queue::Writer<'_>,
    ) -> Result<(), Failed> {
        let ioerr = || Failed(VIRTIO_BLK_S_IOERR as u8);
        // struct virtio_blk_outhdr: le32 type, le32 ioprio, le64 sector.
        let mut hdr = [0u8; 16];
        data_in.read_exact(&mut hdr).map_err(|_| ioerr())?;
        let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15]]);
        match kind {
            VIRTIO_BLK_T_IN => {
                let len = data_out.available_bytes();
                let mut offset = self.range(sector, len)?;
                let mut left = len;
                while left > 0 {
                    let n = left.min(CHUNK);
                    self.disk.file.read_exact_at(&mut self.buf[..n], offset).map_err(|_| ioerr())?;
                    data_out.write_all(&self.buf[..n]).map_err(|_| ioerr())?;
                    offset += n as u64;
                    left -= n;
                }
                self.stats.reads.fetch_add(1, Ordering::Relaxed);
                self.stats.sectors_read.fetch_add(len as u64 / SECTOR_SIZE, Ordering::Relaxed);
                Ok(())
            }
            VIRTIO_BLK_T_OUT => {
                self.writes_seen += 1;
                if self.disk.fail_writes.is_some_and(|(a, b)| (a..=b).contains(&self.writes_seen)) {
                    return Err(ioerr());
                }
                let len = data_in.available_bytes();
                let mut offset = self.range(sector, len)?;
                let mut left = len;
                while left > 0 {
                    let n = left.min(CHUNK);
                    data_in.read_exact(&mut self.buf[..n]).map_err(|_| ioerr())?;
                    self.disk.file.write_all_at(&self.buf[..n], offset).map_err(|_| ioerr())?;
                    offset += n as u64;
                    left -= n;
                }
                self.stats.writes.fetch_add(1, Ordering::Relaxed);
                self.stats.sectors_written.fetch_add(len as u64 / SECTOR_SIZE, Ordering::Relaxed);
                Ok(())
            }
            VIRTIO_BLK_T_FLUSH => {
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.disk.file.sync_data().map_err(|_| ioerr())
            }
            VIRTIO_BLK_T_GET_ID => {
                self.stats.get_ids.fetch_add(1, Ordering::Relaxed);
                let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
                id[..SERIAL.len()].copy_from_slice(SERIAL);
                let n = data_out.available_bytes().min(id.len());
                data_out.write_all(&id[..n]).map_err(|_| ioerr())
            }
            _ => Err(Failed(VIRTIO_BLK_S_UNSUPP as u8)),
        }
    }
}

impl VirtioDevice for Block {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_BLK_F_FLUSH)
    }

    /// struct virtio_blk_config: only `capacity` (le64 sectors, offset 0)
    /// is meaningful without further features; the rest reads as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let capacity = self.capacity().to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *b = if at < 8 { capacity[at as usize] } else { 0 };
        }
    }

    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, virtio_queue::Error> {
        let mut done = false;
        // `iter` refuses an avail index more than a queue ahead (a hostile
        // driver's), so this loop serves at most one queue's worth.
        let chains: Vec<_> = queue.iter(mem)?.collect();
        for chain in chains {
            let head = chain.head_index();
            let len = self.execute(chain, mem);
            queue.add_used(mem, head, len)?;
            done = true;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::mmio::{Irq, MmioTransport};
    use crate::devices::virtio::MmioDevice;
    use std::sync::atomic::AtomicU32;
    use virtio_bindings::virtio_config::*;
    use virtio_bindings::virtio_mmio::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    const QSIZE: u16 = 16;
    const HDR: u64 = 0x8000;
    const STATUS: u64 = 0x8100;
    const DATA: u64 = 0x10000;
    const RAM: usize = 1 << 20;

    static FILES: AtomicU32 = AtomicU32::new(0);

    /// A fresh path in the temp directory (removed by `Disk`'s drop).
    struct TempPath(PathBuf);
    impl TempPath {
        fn new() -> Self {
            let n = FILES.fetch_add(1, Ordering::Relaxed);
            TempPath(std::env::temp_dir().join(format!("mmemu-blk-unit-{}-{n}", std::process::id())))
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A driver's view of the device: RAM, the queue's rings in it (the
    /// mock), the transport to poke through its registers.
    struct Rig<'a> {
        mem: crate::memory::GuestMem,
        // Created once: making a mock zeroes its rings' indexes.
        mock: MockSplitQueue<'a, GuestMemoryMmap>,
        dev: MmioTransport<Block>,
        _file: TempPath,
        path: PathBuf,
        next_desc: u16,
    }

    fn w32(dev: &mut MmioTransport<Block>, reg: u32, v: u32) {
        dev.write(reg as u64, &v.to_le_bytes());
    }

    fn r32(dev: &mut MmioTransport<Block>, reg: u32) -> u32 {
        let mut d = [0u8; 4];
        dev.read(reg as u64, &mut d);
        u32::from_le_bytes(d)
    }

    fn ram() -> crate::memory::GuestMem {
        Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).unwrap())
    }

    fn rig(mem: &crate::memory::GuestMem, size: u64) -> Rig<'_> {
        let tmp = TempPath::new();
        let path = tmp.0.clone();
        let disk = BackingFile::open(&SwapConfig { path: path.clone(), size: Some(size), fail_writes: None }).unwrap();
        let dev = MmioTransport::new(Block::new(disk), mem.clone(), Irq::None, QSIZE).unwrap();
        let mock = MockSplitQueue::create(&**mem, GuestAddress(0), QSIZE);
        let mut r = Rig { mem: mem.clone(), mock, dev, _file: tmp, path, next_desc: 0 };
        r.negotiate(1 << VIRTIO_F_VERSION_1);
        r
    }

    impl<'a> Rig<'a> {
        fn mock(&self) -> &MockSplitQueue<'a, GuestMemoryMmap> {
            &self.mock
        }

        /// The driver's side of 3.1.1: status steps, features, the queue.
        fn negotiate(&mut self, features: u64) {
            let d = &mut self.dev;
            assert_eq!(r32(d, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
            assert_eq!(r32(d, VIRTIO_MMIO_VERSION), 2);
            assert_eq!(r32(d, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
            w32(d, VIRTIO_MMIO_STATUS, 0);
            w32(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
            w32(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
            w32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
            w32(d, VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
            w32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
            w32(d, VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
            let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
            w32(d, VIRTIO_MMIO_STATUS, s);
            if r32(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
                return;
            }
            let (desc, avail, used) =
                (self.mock.desc_table_addr().0, self.mock.avail_addr().0, self.mock.used_addr().0);
            let d = &mut self.dev;
            w32(d, VIRTIO_MMIO_QUEUE_SEL, 0);
            assert_eq!(r32(d, VIRTIO_MMIO_QUEUE_NUM_MAX), QSIZE as u32);
            w32(d, VIRTIO_MMIO_QUEUE_NUM, QSIZE as u32);
            for (lo, hi, a) in [
                (VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, desc),
                (VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, avail),
                (VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH, used),
            ] {
                w32(d, lo, a as u32);
                w32(d, hi, (a >> 32) as u32);
            }
            w32(d, VIRTIO_MMIO_QUEUE_READY, 1);
            assert_eq!(r32(d, VIRTIO_MMIO_QUEUE_READY), 1);
            w32(d, VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
        }

        /// Puts one chain (descriptors given as (addr, len, device-writable))
        /// on the avail ring, notifies, and returns the used entry
        /// (id, len) it produced.
        fn submit(&mut self, descs: &[(u64, u32, bool)]) -> (u32, u32) {
            // Chains never wrap around the table's end (done requests free
            // their descriptors: only one is ever in flight here).
            let first = if self.next_desc as usize + descs.len() > QSIZE as usize { 0 } else { self.next_desc };
            let raw: Vec<RawDescriptor> = descs
                .iter()
                .enumerate()
                .map(|(i, &(addr, len, w))| {
                    let last = i + 1 == descs.len();
                    let flags = if w { VRING_DESC_F_WRITE } else { 0 } | if last { 0 } else { VRING_DESC_F_NEXT };
                    RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, first + i as u16 + 1))
                })
                .collect();
            self.next_desc = first + descs.len() as u16;
            self.raw_submit(&raw, first)
        }

        fn raw_submit(&mut self, raw: &[RawDescriptor], at: u16) -> (u32, u32) {
            let used_before = self.used_idx();
            self.mock().add_desc_chains(raw, at).unwrap();
            w32(&mut self.dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
            let used = self.used_idx();
            assert_eq!(used, used_before.wrapping_add(1), "one chain, one used entry");
            let m = self.mock();
            let slot = (used_before % QSIZE) as u64;
            let base = m.used_addr().0 + 4 + slot * 8;
            (self.mem.read_obj(GuestAddress(base)).unwrap(), self.mem.read_obj(GuestAddress(base + 4)).unwrap())
        }

        fn used_idx(&self) -> u16 {
            self.mem.read_obj(GuestAddress(self.mock().used_addr().0 + 2)).unwrap()
        }

        fn header(&self, kind: u32, sector: u64) {
            let mut h = [0u8; 16];
            h[..4].copy_from_slice(&kind.to_le_bytes());
            h[8..].copy_from_slice(&sector.to_le_bytes());
            self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
            self.mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
        }

        fn status(&self) -> u8 {
            self.mem.read_obj(GuestAddress(STATUS)).unwrap()
        }

        fn rw(&mut self, kind: u32, sector: u64, addr: u64, len: u32) -> u8 {
            self.header(kind, sector);
            self.submit(&[(HDR, 16, false), (addr, len, kind == VIRTIO_BLK_T_IN), (STATUS, 1, true)]);
            self.status()
        }
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed ^ (i >> 9) as u8).collect()
    }

    #[test]
    fn writes_reach_the_file_and_read_back() {
        let mem = ram();
        let mut r = rig(&mem, 1 << 20);
        let data = pattern(0x5a, 8192);
        r.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
        assert_eq!(r.rw(VIRTIO_BLK_T_OUT, 8, DATA, 8192), VIRTIO_BLK_S_OK as u8);
        let file = std::fs::read(&r.path).unwrap();
        assert_eq!(file.len(), 1 << 20);
        assert_eq!(&file[4096..4096 + 8192], &data[..], "sector 8 is byte 4096");
        assert!(file[..4096].iter().all(|&b| b == 0));
        assert_ne!(r.dev.interrupt_status() & VIRTIO_MMIO_INT_VRING, 0, "completion raised the interrupt");
        w32(&mut r.dev, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
        assert_eq!(r.dev.interrupt_status(), 0);

        r.header(VIRTIO_BLK_T_IN, 8);
        let (_, len) =
            r.submit(&[(HDR, 16, false), (DATA + 0x4000, 4096, true), (DATA + 0x5000, 4096, true), (STATUS, 1, true)]);
        assert_eq!(len, 8192 + 1, "data plus the status byte");
        assert_eq!(r.status(), VIRTIO_BLK_S_OK as u8);
        let mut back = vec![0u8; 8192];
        r.mem.read_slice(&mut back, GuestAddress(DATA + 0x4000)).unwrap();
        assert_eq!(back, data);
        let s = r.dev.device().stats();
        assert_eq!((s.reads.load(Ordering::Relaxed), s.writes.load(Ordering::Relaxed)), (1, 1));
        assert_eq!(s.sectors_written.load(Ordering::Relaxed), 16);
    }

    #[test]
    fn capacity_flush_and_get_id() {
        let mem = ram();
        let mut r = rig(&mem, 1 << 20);
        let mut cap = [0u8; 8];
        r.dev.read(VIRTIO_MMIO_CONFIG as u64, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 2048, "1 MiB in sectors");
        let features = r32(&mut r.dev, VIRTIO_MMIO_DEVICE_FEATURES);
        assert_ne!(features & (1 << VIRTIO_BLK_F_FLUSH), 0);
        r.header(VIRTIO_BLK_T_FLUSH, 0);
        r.submit(&[(HDR, 16, false), (STATUS, 1, true)]);
        assert_eq!(r.status(), VIRTIO_BLK_S_OK as u8);
        r.header(VIRTIO_BLK_T_GET_ID, 0);
        r.submit(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
        assert_eq!(r.status(), VIRTIO_BLK_S_OK as u8);
        let mut id = [0u8; 20];
        r.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id[..SERIAL.len()], SERIAL);
    }

    #[test]
    fn out_of_range_and_malformed_requests_get_errors() {
        let mem = ram();
        let mut r = rig(&mem, 1 << 20);
        let ioerr = VIRTIO_BLK_S_IOERR as u8;
        assert_eq!(r.rw(VIRTIO_BLK_T_OUT, 2048, DATA, 512), ioerr, "first sector past the end");
        assert_eq!(r.rw(VIRTIO_BLK_T_IN, 2047, DATA, 1024), ioerr, "runs past the end");
        assert_eq!(r.rw(VIRTIO_BLK_T_IN, u64::MAX / 2, DATA, 512), ioerr, "offset overflows");
        assert_eq!(r.rw(VIRTIO_BLK_T_OUT, 0, DATA, 100), ioerr, "not whole sectors");
        assert_eq!(r.rw(VIRTIO_BLK_T_IN, 0, RAM as u64 - 512, 4096), ioerr, "buffer runs out of RAM");
        assert_eq!(r.rw(VIRTIO_BLK_T_OUT, 0, 1 << 40, 4096), ioerr, "buffer far outside RAM");
        assert_eq!(r.rw(VIRTIO_BLK_T_IN, 0, DATA, u32::MAX - 4096), ioerr, "a 4 GiB buffer in 1 MiB of RAM");
        // Lengths summing past 4 GiB make the chain invalid (virtio-queue
        // stops it there): no status can be placed, the used length says 0.
        r.header(VIRTIO_BLK_T_IN, 0);
        let (_, len) = r.submit(&[(HDR, 16, false), (DATA, u32::MAX, true), (STATUS, 1, true)]);
        assert_eq!(len, 0);
        assert_eq!(r.rw(77, 0, DATA, 512), VIRTIO_BLK_S_UNSUPP as u8, "unknown request type");
        // A header too short to hold the request.
        r.header(VIRTIO_BLK_T_IN, 0);
        r.submit(&[(HDR, 8, false), (STATUS, 1, true)]);
        assert_eq!(r.status(), ioerr);
        // No writable byte at all: nowhere to put a status, used length 0.
        r.header(VIRTIO_BLK_T_OUT, 0);
        let (_, len) = r.submit(&[(HDR, 16, false), (DATA, 512, false)]);
        assert_eq!(len, 0);
        // The device still works afterwards.
        assert_eq!(r.rw(VIRTIO_BLK_T_OUT, 0, DATA, 512), VIRTIO_BLK_S_OK as u8);
        assert_eq!(r.dev.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert!(r.dev.device().stats().errors.load(Ordering::Relaxed) >= 9);
    }

    #[test]
    fn a_descriptor_loop_ends() {
        let mem = ram();
        let mut r = rig(&mem, 1 << 20);
        r.header(VIRTIO_BLK_T_IN, 0);
        let next = VRING_DESC_F_NEXT as u16;
        let w = VRING_DESC_F_WRITE as u16;
        // 0 -> 1 -> 2 -> 1 -> 2 ...: the chain never ends by itself.
        let raw = [
            RawDescriptor::from(SplitDescriptor::new(HDR, 16, next, 1)),
            RawDescriptor::from(SplitDescriptor::new(DATA, 512, w | next, 2)),
            RawDescriptor::from(SplitDescriptor::new(STATUS, 1, w | next, 1)),
        ];
        r.mock().desc_table().store(1, raw[1]).unwrap();
        r.mock().desc_table().store(2, raw[2]).unwrap();
        r.raw_submit(&raw[..1], 0);
        // Bounded by the queue size; the outcome is an error or a bounded
        // read, and the device keeps serving.
        r.next_desc = 3;
        assert_eq!(r.rw(VIRTIO_BLK_T_OUT, 0, DATA, 512), VIRTIO_BLK_S_OK as u8);
    }

    #[test]
    fn a_runaway_avail_index_needs_reset_not_a_hang() {
        let mem = ram();
        let mut r = rig(&mem, 1 << 20);
        let avail = r.mock().avail_addr().0;
        r.mem.write_obj(0x8000u16, GuestAddress(avail + 2)).unwrap();
        w32(&mut r.dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert_ne!(r.dev.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert_ne!(r.dev.interrupt_status() & VIRTIO_MMIO_INT_CONFIG, 0);
        assert_eq!(r.used_idx(), 0, "nothing was served");
        // A reset brings it back.
        r.mem.write_obj(0u16, GuestAddress(avail + 2)).unwrap();
        r.next_desc = 0;
        r.negotiate(1 << VIRTIO_F_VERSION_1);
        assert_eq!(r.rw(VIRTIO_BLK_T_OUT, 0, DATA, 512), VIRTIO_BLK_S_OK as u8);
    }

    #[test]
    fn negotiation_needs_version_1_and_known_features() {
        let mem = ram();
        let mut r = rig(&mem, 1 << 20);
        r.negotiate(0);
        assert_eq!(r.dev.status() & VIRTIO_CONFIG_S_FEATURES_OK, 0, "legacy-only driver refused");
        r.negotiate((1 << VIRTIO_F_VERSION_1) | (1 << 20));
        assert_eq!(r.dev.status() & VIRTIO_CONFIG_S_FEATURES_OK, 0, "a feature never offered");
        // Queue registers are ignored until FEATURES_OK, so a notify does nothing.
        w32(&mut r.dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert_eq!(r.used_idx(), 0);
        // A queue whose rings lie outside RAM is not made ready.
        w32(&mut r.dev, VIRTIO_MMIO_STATUS, 0);
        w32(&mut r.dev, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        w32(&mut r.dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        w32(&mut r.dev, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        w32(
            &mut r.dev,
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
        );
        w32(&mut r.dev, VIRTIO_MMIO_QUEUE_DESC_LOW, 0xfff0_0000);
        w32(&mut r.dev, VIRTIO_MMIO_QUEUE_READY, 1);
        assert_eq!(r32(&mut r.dev, VIRTIO_MMIO_QUEUE_READY), 0);
    }

    #[test]
    fn any_register_traffic_is_survived() {
        // A guest writing anything anywhere in the window, at any width,
        // in any order (a deterministic xorshift stream): no panic, and
        // the device can always be reset and used again.
        let mem = ram();
        let mut r = rig(&mem, 1 << 20);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let v = next();
            let offset = (v >> 8) % 0x140;
            let width = [1usize, 2, 4, 8][(v & 3) as usize];
            // Values biased towards the interesting ones: small numbers,
            // ring addresses inside and outside RAM, all-ones.
            let value = match (v >> 40) % 4 {
                0 => next() % 16,
                1 => next() % RAM as u64,
                2 => u64::MAX,
                _ => next(),
            };
            if (v >> 20) & 1 == 0 {
                r.dev.write(offset, &value.to_le_bytes()[..width]);
            } else {
                let mut d = [0u8; 8];
                r.dev.read(offset, &mut d[..width]);
            }
        }
        r.mem.write_obj(0u16, GuestAddress(r.mock().avail_addr().0 + 2)).unwrap();
        r.mem.write_obj(0u16, GuestAddress(r.mock().used_addr().0 + 2)).unwrap();
        r.next_desc = 0;
        r.negotiate(1 << VIRTIO_F_VERSION_1);
        assert_eq!(r.rw(VIRTIO_BLK_T_OUT, 0, DATA, 512), VIRTIO_BLK_S_OK as u8);
    }

    #[test]
    fn backing_files_are_created_sparse_and_checked() {
        let t = TempPath::new();
        let f = BackingFile::open(&SwapConfig { path: t.0.clone(), size: None, fail_writes: None }).unwrap();
        assert_eq!(f.size(), DEFAULT_SIZE);
        let meta = std::fs::metadata(&t.0).unwrap();
        assert_eq!(meta.len(), DEFAULT_SIZE);
        assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < DEFAULT_SIZE, "sparse");
        drop(f);
        // An existing file: its size, or less when asked.
        assert_eq!(
            BackingFile::open(&SwapConfig { path: t.0.clone(), size: None, fail_writes: None }).unwrap().size(),
            DEFAULT_SIZE
        );
        assert_eq!(
            BackingFile::open(&SwapConfig { path: t.0.clone(), size: Some(1 << 20), fail_writes: None })
                .unwrap()
                .size(),
            1 << 20
        );
        let more =
            BackingFile::open(&SwapConfig { path: t.0.clone(), size: Some(DEFAULT_SIZE * 2), fail_writes: None });
        assert!(matches!(more, Err(SwapError::TooSmall { .. })), "{more:?}");
        // Read-only.
        std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o444)).unwrap();
        let ro = BackingFile::open(&SwapConfig { path: t.0.clone(), size: None, fail_writes: None });
        assert!(matches!(ro, Err(SwapError::ReadOnly(_))), "{ro:?}");
        // Too small.
        let small = TempPath::new();
        std::fs::write(&small.0, [0u8; 4096]).unwrap();
        let e = BackingFile::open(&SwapConfig { path: small.0.clone(), size: None, fail_writes: None }).unwrap_err();
        assert!(matches!(e, SwapError::TooSmall { .. }), "{e:?}");
        assert!(e.to_string().contains("4 KiB"), "{e}");
        // Nowhere to create it.
        let e =
            BackingFile::open(&SwapConfig { path: "/nonexistent-dir/swap.img".into(), size: None, fail_writes: None })
                .unwrap_err();
        assert!(matches!(e, SwapError::Create { .. }), "{e:?}");
        // A directory.
        let e =
            BackingFile::open(&SwapConfig { path: std::env::temp_dir(), size: None, fail_writes: None }).unwrap_err();
        assert!(matches!(e, SwapError::NotAFile(_)), "{e:?}");
    }

    #[test]
    fn options_parse() {
        assert_eq!(
            SwapConfig::parse("/tmp/s").unwrap(),
            SwapConfig { path: "/tmp/s".into(), size: None, fail_writes: None }
        );
        assert_eq!(SwapConfig::parse("/tmp/s,size=64M").unwrap().size, Some(64 << 20));
        assert!(matches!(SwapConfig::parse("/tmp/s,size=5000"), Err(SwapError::Unaligned(5000))));
        assert!(matches!(SwapConfig::parse("/tmp/s,size=lots"), Err(SwapError::BadSize(_))));
        assert!(matches!(SwapConfig::parse("/tmp/s,sise=4M"), Err(SwapError::BadOption(_))));
        assert!(matches!(SwapConfig::parse(",size=4M"), Err(SwapError::BadOption(_))));
        let f = SwapConfig::parse("/tmp/s,size=1M,fail_writes=3-9").unwrap();
        assert_eq!((f.size, f.fail_writes), (Some(1 << 20), Some((3, 9))));
        assert_eq!(SwapConfig::parse("/tmp/s,fail_writes=4").unwrap().fail_writes, Some((4, 4)));
        for bad in ["/tmp/s,fail_writes=0-3", "/tmp/s,fail_writes=5-2", "/tmp/s,fail_writes=x", "/tmp/s,fail_writes="] {
            assert!(matches!(SwapConfig::parse(bad), Err(SwapError::BadOption(_))), "{bad}");
        }
    }
}
