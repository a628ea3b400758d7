//! The virtio block device (`vmm run --swap`): GET_ID, capacity, a bulk
//! write of patterned pages (one-page requests, as swap-out of scattered
//! slots issues them) between the checkpoints `virtio-bulk-start` and
//! `virtio-bulk-end` (the host counts the exits in between), reading it
//! back with multi-page requests, out-of-range requests answered with an
//! I/O error, flush, and completions by interrupt (or polling with
//! `virtio_poll`). The host then checks the file itself (tests/virtio.rs),
//! so the pattern here is the one it recomputes: keep them in step.
//! Without a device the group reports nothing.

use super::check;
use crate::detail;
use crate::drivers::virtio::blk::{self, Request, SECTORS_PER_PAGE, S_IOERR, S_OK};
use crate::fmt::Dec;
use crate::kprintln;
use crate::mm::{alloc_pages, free_pages, phys_to_virt, GFP_KERNEL};
use alloc::vec::Vec;
use mm_core::addr::PAGE_SIZE;

const G: &str = "virtio";
/// Pages in the bulk write.
pub const PAGES: u64 = 128;
/// Where on the disk they go (64 KiB in: offsets are exercised).
pub const BASE_SECTOR: u64 = 128;
/// The pattern's seed ("mmemuswp").
pub const SEED: u64 = 0x6d6d_656d_7573_7770;

/// Word `w` of disk page `p` of the pattern (tests/virtio.rs recomputes it).
pub fn pattern(p: u64, w: u64) -> u64 {
    (SEED ^ (p << 32) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn words(pa: u64) -> *mut u64 {
    phys_to_virt(pa) as *mut u64
}

fn fill(pa: u64, f: impl Fn(u64) -> u64) {
    for w in 0..PAGE_SIZE / 8 {
        // SAFETY: `pa` is a page this test allocated, in the direct map.
        unsafe { core::ptr::write_volatile(words(pa).add(w as usize), f(w)) };
    }
}

/// The first word of page `pa` that differs from `f`, if any.
fn mismatch(pa: u64, f: impl Fn(u64) -> u64) -> Option<u64> {
    // SAFETY: as `fill`.
    (0..PAGE_SIZE / 8).find(|&w| unsafe { core::ptr::read_volatile(words(pa).add(w as usize)) } != f(w))
}

fn alloc(n: u64) -> Option<Vec<u64>> {
    let mut v = Vec::new();
    for _ in 0..n {
        match alloc_pages(0, GFP_KERNEL) {
            Some(pfn) => v.push(pfn * PAGE_SIZE),
            None => {
                release(&v);
                return None;
            }
        }
    }
    Some(v)
}

fn release(pages: &[u64]) {
    for &pa in pages {
        let _ = free_pages(pa / PAGE_SIZE, 0);
    }
}

/// The group.
pub fn virtio() {
    if !blk::present() {
        kprintln!("selftest: virtio: no block device (run the VMM with --swap PATH): nothing to test");
        return;
    }
    let irq_before = blk::interrupts();
    match blk::get_id() {
        Ok((id, s)) => {
            let n = id.iter().position(|&c| c == 0).unwrap_or(id.len());
            let text = core::str::from_utf8(&id[..n]).unwrap_or("?");
            check(G, "get_id", s == S_OK && text == "mmemu-swap", &detail!("status {}, id '{}'", Dec(s as u64), text));
        }
        Err(e) => check(G, "get_id", false, &detail!("{}", e)),
    }
    let capacity = blk::capacity().unwrap_or(0);
    check(G, "capacity", capacity >= BASE_SECTOR + PAGES * SECTORS_PER_PAGE, &detail!("{} sectors", Dec(capacity)));
    if capacity < BASE_SECTOR + PAGES * SECTORS_PER_PAGE {
        return;
    }
    let (Some(src), Some(dst)) = (alloc(PAGES), alloc(PAGES)) else {
        check(G, "pages", false, "out of memory for the test pages");
        return;
    };
    bulk(&src, &dst, capacity);
    release(&src);
    release(&dst);

    let taken = blk::interrupts() - irq_before;
    let waits = blk::stats().irq_waits;
    if blk::interrupt_driven() {
        check(
            G,
            "interrupts",
            taken > 0 && taken >= waits,
            &detail!("{} interrupts taken, {} waits completed by one", Dec(taken), Dec(waits)),
        );
    } else {
        check(G, "interrupts", taken == 0, &detail!("polling: {} interrupts taken (0 expected)", Dec(taken)));
    }
}

fn bulk(src: &[u64], dst: &[u64], capacity: u64) {
    for (p, &pa) in src.iter().enumerate() {
        fill(pa, |w| pattern(p as u64, w));
    }
    for &pa in dst {
        fill(pa, |_| 0xdead_beef_dead_beef);
    }
    // One-page requests, all in one call: the driver batches them.
    let reqs: Vec<Request<'_>> = src
        .iter()
        .enumerate()
        .map(|(p, pa)| Request {
            write: true,
            sector: BASE_SECTOR + p as u64 * SECTORS_PER_PAGE,
            pages: core::slice::from_ref(pa),
        })
        .collect();
    let mut status = alloc::vec![0xffu8; reqs.len()];
    let notifies = blk::stats().notifies;
    crate::checkpoint::checkpoint("virtio-bulk-start");
    let r = blk::submit(&reqs, &mut status);
    crate::checkpoint::checkpoint("virtio-bulk-end");
    let notifies = blk::stats().notifies - notifies;
    let ok = status.iter().filter(|&&s| s == S_OK).count() as u64;
    check(
        G,
        "bulk_write",
        r.is_ok() && ok == PAGES,
        &detail!("{} of {} one-page writes OK, {} notifies", Dec(ok), Dec(PAGES), Dec(notifies)),
    );
    // The bound: at most one exit per 16 pages in bulk swap-out;
    // a notify is one exit (the host counts all of them, tests/virtio.rs).
    check(
        G,
        "batched",
        notifies > 0 && notifies * 16 <= PAGES,
        &detail!("{} notifies for {} pages", Dec(notifies), Dec(PAGES)),
    );

    // Read back in 8-page requests (multi-segment chains).
    let reqs: Vec<Request<'_>> = dst
        .chunks(8)
        .enumerate()
        .map(|(k, pages)| Request { write: false, sector: BASE_SECTOR + 8 * k as u64 * SECTORS_PER_PAGE, pages })
        .collect();
    let mut status = alloc::vec![0xffu8; reqs.len()];
    let r = blk::submit(&reqs, &mut status);
    let bad = dst.iter().enumerate().find_map(|(p, &pa)| mismatch(pa, |w| pattern(p as u64, w)).map(|w| (p, w)));
    check(
        G,
        "read_back",
        r.is_ok() && status.iter().all(|&s| s == S_OK) && bad.is_none(),
        &match bad {
            None => detail!("{} pages in {} requests match", Dec(PAGES), Dec(reqs.len() as u64)),
            Some((p, w)) => detail!("page {} word {} differs", Dec(p as u64), Dec(w)),
        },
    );

    // Past the end, and straddling it: I/O errors, and the device goes on.
    let past = blk::write(capacity, &src[..1]);
    let straddle = blk::read(capacity - SECTORS_PER_PAGE / 2, &dst[..1]);
    check(
        G,
        "out_of_range",
        past == Ok(S_IOERR) && straddle == Ok(S_IOERR),
        &detail!(
            "write at sector {}: {}, read across the end: {}",
            Dec(capacity),
            Dec(past.map_or(99, |s| s as u64)),
            Dec(straddle.map_or(99, |s| s as u64))
        ),
    );
    let again = blk::read(BASE_SECTOR, &dst[..1]);
    check(
        G,
        "after_error",
        again == Ok(S_OK) && mismatch(dst[0], |w| pattern(0, w)).is_none(),
        "page 0 reads back after the errors",
    );
    let f = blk::flush();
    check(G, "flush", f == Ok(S_OK), &detail!("status {}", Dec(f.map_or(99, |s| s as u64))));
}
