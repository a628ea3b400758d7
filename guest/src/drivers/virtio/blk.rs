//! The virtio-blk driver (virtio spec 5.2): requests of whole 4 KiB pages
//! at a sector offset, submitted in batches (as many chains as the queue
//! holds, then one notify), completed on the device's interrupt (IOAPIC
//! pin -> [`VIRTIO_VECTOR`]) or, without an interrupt controller or with
//! `virtio_poll` on the command line, by polling the used ring.
//!
//! The interface swap uses: [`submit`] with a batch of [`Request`]s (each
//! a run of pages at consecutive sectors), [`read`]/[`write`] for one run,
//! [`flush`], [`capacity`].

use super::mmio::{self, reg, DeviceSpec, ProbeError, Transport};
use super::queue::{Buffer, SplitQueue, MAX_SIZE};
use crate::arch::idt::VIRTIO_VECTOR;
use crate::fmt::Dec;
use crate::kprintln;
use crate::mm::{alloc_pages, phys_to_virt, virt_to_phys, GFP_KERNEL};
use crate::sync::{rank, SpinLock};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mm_core::addr::PAGE_SIZE;

/// virtio device type of a block device.
pub const DEVICE_ID: u32 = 2;
/// VIRTIO_BLK_F_FLUSH.
const F_FLUSH: u64 = 1 << 9;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
/// Request status: done.
pub const S_OK: u8 = 0;
/// Request status: I/O error (also a sector past the end).
pub const S_IOERR: u8 = 1;
/// Status before the device answers (never a real status).
const S_PENDING: u8 = 0xff;
/// Sectors per page.
pub const SECTORS_PER_PAGE: u64 = PAGE_SIZE / 512;
/// Longest GET_ID answer.
pub const ID_BYTES: usize = 20;
/// Polls of the used ring before a polled request is declared lost.
const POLL_LIMIT: u64 = 10_000_000;

/// One request: `pages` (physical addresses of 4 KiB pages) read from or
/// written to the disk at consecutive sectors from `sector`.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// True: pages -> disk (OUT); false: disk -> pages (IN).
    pub write: bool,
    /// First 512-byte sector.
    pub sector: u64,
    /// The pages, in disk order.
    pub pages: &'a [u64],
}

/// Why I/O failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkError {
    /// No block device was found at boot.
    NoDevice,
    /// A request with more pages than a queue can carry, or none.
    BadRequest,
    /// The device flagged DEVICE_NEEDS_RESET (it found the queue broken).
    DeviceBroken,
    /// Polling saw no completion.
    Timeout,
}

impl core::fmt::Display for BlkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            BlkError::NoDevice => "no virtio block device",
            BlkError::BadRequest => "request too large for the queue (or empty)",
            BlkError::DeviceBroken => "the device needs a reset",
            BlkError::Timeout => "no completion from the device",
        })
    }
}

/// Counters (the self-test and the swap statistics read them).
#[derive(Clone, Copy, Default)]
pub struct BlkStats {
    /// Requests completed.
    pub requests: u64,
    /// Pages transferred.
    pub pages: u64,
    /// Requests that ended with a non-OK status.
    pub errors: u64,
    /// QueueNotify writes (one per batch).
    pub notifies: u64,
    /// Interrupts the driver waited for.
    pub irq_waits: u64,
}

/// The bound device.
pub struct Blk {
    t: Transport,
    q: SplitQueue,
    /// Capacity in sectors.
    capacity: u64,
    features: u64,
    irq: Option<u32>,
    /// Per-head request headers (16 bytes each) in one page, status bytes
    /// and the GET_ID buffer in the next (virtual, direct map).
    slots: u64,
    /// For each head descriptor in flight: the caller's request index.
    owner: Vec<u32>,
    bufs: Vec<Buffer>,
    stats: BlkStats,
}

static BLK: SpinLock<Blk> = SpinLock::new("the virtio-blk device", rank::MISC);
static PRESENT: AtomicBool = AtomicBool::new(false);
/// The register window, for the interrupt handler (which must not take
/// `BLK`: it interrupts the waiter holding it).
static WINDOW: AtomicU64 = AtomicU64::new(0);
/// Set by the handler for a used-ring interrupt, cleared by the waiter.
static IRQ_USED: AtomicBool = AtomicBool::new(false);
/// Set by the handler for a configuration interrupt (NEEDS_RESET).
static IRQ_CONFIG: AtomicBool = AtomicBool::new(false);
/// Interrupts taken.
static IRQ_COUNT: AtomicU64 = AtomicU64::new(0);

/// The device's interrupt (vector [`VIRTIO_VECTOR`]): acknowledge what the
/// device reports and note it for the waiter.
pub fn interrupt() {
    let base = WINDOW.load(Ordering::Acquire);
    if base != 0 {
        let isr = mmio::read_at(base, reg::INTERRUPT_STATUS);
        mmio::write_at(base, reg::INTERRUPT_ACK, isr);
        if isr & 1 != 0 {
            IRQ_USED.store(true, Ordering::Release);
        }
        if isr & 2 != 0 {
            IRQ_CONFIG.store(true, Ordering::Release);
            IRQ_USED.store(true, Ordering::Release);
        }
    }
    IRQ_COUNT.fetch_add(1, Ordering::Relaxed);
    crate::arch::apic::eoi();
}

/// Interrupts the device raised so far.
pub fn interrupts() -> u64 {
    IRQ_COUNT.load(Ordering::Relaxed)
}

/// Opens the interrupt window until an interrupt arrives: `sti; hlt` (the
/// interrupt shadow of `sti` keeps an already-pending one from slipping in
/// before the `hlt`), then masked again as kernel code runs.
fn wait_for_interrupt() {
    // SAFETY: only the interrupt flag changes; every vector that can
    // arrive has a handler, and the kernel runs with IF clear again after.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}

/// Binds the driver to a probed block device.
pub fn attach(t: Transport, spec: &DeviceSpec, force_poll: bool) -> Result<(), ProbeError> {
    let features = t.negotiate(F_FLUSH)?;
    let capacity = t.config_u64(0);
    t.write(reg::QUEUE_SEL, 0);
    let max = t.read(reg::QUEUE_NUM_MAX).min(MAX_SIZE as u32);
    if max == 0 {
        t.fail();
        return Err(ProbeError::NoQueue);
    }
    // The largest power of two the device allows.
    let size = 1u16 << (31 - max.leading_zeros());
    let mut q = SplitQueue::new(size).ok_or(ProbeError::NoMemory)?;
    let slots_pfn = alloc_pages(1, GFP_KERNEL).ok_or(ProbeError::NoMemory)?;
    let slots = phys_to_virt(slots_pfn * PAGE_SIZE);
    // Interrupts need the local APIC on (the scheduler's timer may not
    // have started it yet) and the IOAPIC pin routed to our vector.
    let routed = !force_poll && crate::arch::apic::enable() && crate::drivers::ioapic::route(spec.irq, VIRTIO_VECTOR);
    let irq = if routed { Some(spec.irq) } else { None };
    q.set_no_interrupt(irq.is_none());
    let (d, a, u) = q.addresses();
    t.setup_queue(size, d, a, u)?;
    WINDOW.store(t.base(), Ordering::Release);
    kprintln!(
        "virtio_blk virtio0: [vda] {} 512-byte logical blocks ({} MiB), queue {}, {}",
        Dec(capacity),
        Dec(capacity >> 11),
        Dec(size as u64),
        if irq.is_some() { "interrupts (IOAPIC)" } else { "polling" }
    );
    let owner = alloc::vec![0; size as usize];
    BLK.set(Blk { t, q, capacity, features, irq, slots, owner, bufs: Vec::new(), stats: BlkStats::default() });
    PRESENT.store(true, Ordering::Release);
    Ok(())
}

/// True if a block device is bound.
pub fn present() -> bool {
    PRESENT.load(Ordering::Acquire)
}

fn with<R>(f: impl FnOnce(&mut Blk) -> Result<R, BlkError>) -> Result<R, BlkError> {
    if !present() {
        return Err(BlkError::NoDevice);
    }
    BLK.with(f)
}

/// Capacity in 512-byte sectors.
pub fn capacity() -> Result<u64, BlkError> {
    with(|b| Ok(b.capacity))
}

/// True when completions come by interrupt (false: polling).
pub fn interrupt_driven() -> bool {
    present() && BLK.with(|b| b.irq.is_some())
}

/// The driver's counters.
pub fn stats() -> BlkStats {
    if !present() {
        return BlkStats::default();
    }
    BLK.with(|b| b.stats)
}

/// Runs a batch: every request gets its status in `status` (same index;
/// [`S_OK`] or the device's error). Requests go to the device as many at a
/// time as the queue holds, one notify per such batch. An `Err` means the
/// device itself failed; then statuses not yet filled stay 0xff.
pub fn submit(reqs: &[Request<'_>], status: &mut [u8]) -> Result<(), BlkError> {
    with(|b| b.submit(reqs, status))
}

/// Reads `pages.len()` pages from `sector`; the status.
pub fn read(sector: u64, pages: &[u64]) -> Result<u8, BlkError> {
    let mut s = [S_PENDING];
    submit(&[Request { write: false, sector, pages }], &mut s)?;
    Ok(s[0])
}

/// Writes `pages` to the disk from `sector`; the status.
pub fn write(sector: u64, pages: &[u64]) -> Result<u8, BlkError> {
    let mut s = [S_PENDING];
    submit(&[Request { write: true, sector, pages }], &mut s)?;
    Ok(s[0])
}

/// Flushes the device's write cache (a no-op status OK without
/// VIRTIO_BLK_F_FLUSH).
pub fn flush() -> Result<u8, BlkError> {
    with(|b| {
        if b.features & F_FLUSH == 0 {
            return Ok(S_OK);
        }
        b.command(T_FLUSH, None)
    })
}

/// The device's ID string (GET_ID), NUL-padded.
pub fn get_id() -> Result<([u8; ID_BYTES], u8), BlkError> {
    with(|b| {
        let buf = b.slots + PAGE_SIZE + 1024;
        let s = b.command(T_GET_ID, Some((virt_to_phys(buf), ID_BYTES as u32)))?;
        let mut id = [0u8; ID_BYTES];
        for (i, c) in id.iter_mut().enumerate() {
            // SAFETY: inside the driver's own slot page; the device wrote it.
            *c = unsafe { core::ptr::read_volatile((buf + i as u64) as *const u8) };
        }
        Ok((id, s))
    })
}

impl Blk {
    fn header_va(&self, head: u16) -> u64 {
        self.slots + 16 * head as u64
    }

    fn status_va(&self, head: u16) -> u64 {
        self.slots + PAGE_SIZE + head as u64
    }

    /// Queues one request (header, data, status); its head, or `None` if
    /// the queue is full.
    fn add(&mut self, kind: u32, sector: u64, data: &[Buffer]) -> Option<u16> {
        if data.len() + 2 > self.q.num_free() as usize {
            return None;
        }
        self.bufs.clear();
        // The header and status live at the head's slot, known only after
        // `add`: fill the chain with the slot the head will get (the free
        // list's head) and write them there.
        let head = self.q.peek_free_head();
        self.bufs.push(Buffer { addr: virt_to_phys(self.header_va(head)), len: 16, write: false });
        self.bufs.extend_from_slice(data);
        self.bufs.push(Buffer { addr: virt_to_phys(self.status_va(head)), len: 1, write: true });
        let hdr = self.header_va(head);
        // SAFETY: the head's slot in the driver's own page, not in flight.
        unsafe {
            core::ptr::write_volatile(hdr as *mut u32, kind);
            core::ptr::write_volatile((hdr + 4) as *mut u32, 0);
            core::ptr::write_volatile((hdr + 8) as *mut u64, sector);
            core::ptr::write_volatile(self.status_va(head) as *mut u8, S_PENDING);
        }
        let bufs = core::mem::take(&mut self.bufs);
        let got = self.q.add(&bufs);
        self.bufs = bufs;
        debug_assert_eq!(got, Some(head));
        got
    }

    /// Notifies the device and waits until every published chain is used,
    /// handing each (head, status) to `done`.
    fn kick_and_wait(&mut self, mut done: impl FnMut(&mut Self, u16, u8)) -> Result<(), BlkError> {
        IRQ_USED.store(false, Ordering::Release);
        self.q.publish();
        self.t.write(reg::QUEUE_NOTIFY, 0);
        self.stats.notifies += 1;
        let mut polls = 0u64;
        // The IOAPIC delivers the interrupt to the boot CPU: another CPU
        // polls the used ring instead (the interrupt, when the boot CPU
        // takes it, only sets flags).
        let by_irq = self.irq.is_some() && crate::arch::percpu::cpu_id() == 0;
        while self.q.in_flight() > 0 {
            if by_irq {
                // Completion is the interrupt: wait for it, then reap.
                while !IRQ_USED.swap(false, Ordering::AcqRel) {
                    wait_for_interrupt();
                }
                self.stats.irq_waits += 1;
                if IRQ_CONFIG.swap(false, Ordering::AcqRel) && self.t.read(reg::STATUS) & mmio::status::NEEDS_RESET != 0
                {
                    return Err(BlkError::DeviceBroken);
                }
            }
            let mut reaped = false;
            while let Some((head, _len)) = self.q.pop_used() {
                // SAFETY: the head's status byte in the driver's own page.
                let s = unsafe { core::ptr::read_volatile(self.status_va(head) as *const u8) };
                done(self, head, s);
                reaped = true;
            }
            if !by_irq && !reaped {
                polls += 1;
                if polls == POLL_LIMIT {
                    return Err(if self.t.read(reg::STATUS) & mmio::status::NEEDS_RESET != 0 {
                        BlkError::DeviceBroken
                    } else {
                        BlkError::Timeout
                    });
                }
                core::hint::spin_loop();
            }
        }
        Ok(())
    }

    fn command(&mut self, kind: u32, data: Option<(u64, u32)>) -> Result<u8, BlkError> {
        let buf = data.map(|(addr, len)| Buffer { addr, len, write: true });
        let head = self.add(kind, 0, buf.as_slice()).ok_or(BlkError::BadRequest)?;
        let mut status = S_PENDING;
        self.kick_and_wait(|_, h, s| {
            if h == head {
                status = s;
            }
        })?;
        Ok(status)
    }

    fn submit(&mut self, reqs: &[Request<'_>], status: &mut [u8]) -> Result<(), BlkError> {
        let max_pages = self.q.size() as usize - 2;
        if reqs.iter().any(|r| r.pages.is_empty() || r.pages.len() > max_pages) || status.len() < reqs.len() {
            return Err(BlkError::BadRequest);
        }
        status[..reqs.len()].fill(S_PENDING);
        let mut data: Vec<Buffer> = Vec::new();
        let mut next = 0;
        while next < reqs.len() {
            // Fill the queue, then one notify for the lot.
            while next < reqs.len() {
                let r = &reqs[next];
                data.clear();
                data.extend(r.pages.iter().map(|&pa| Buffer { addr: pa, len: PAGE_SIZE as u32, write: !r.write }));
                let Some(head) = self.add(if r.write { T_OUT } else { T_IN }, r.sector, &data) else {
                    break;
                };
                self.owner[head as usize] = next as u32;
                next += 1;
            }
            self.kick_and_wait(|b, head, s| {
                let i = b.owner[head as usize] as usize;
                if let Some(slot) = status.get_mut(i) {
                    *slot = s;
                }
                b.stats.requests += 1;
                if s == S_OK {
                    b.stats.pages += reqs.get(i).map_or(0, |r| r.pages.len() as u64);
                } else {
                    b.stats.errors += 1;
                }
            })?;
        }
        Ok(())
    }
}
