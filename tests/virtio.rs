//! Swap's device end to end: the real VMM with `--swap` on a temp file, the
//! real guest's virtio-mmio and virtio-blk drivers (`selftest=virtio`),
//! then the file itself read on the host; the VM exits per page of a bulk
//! write; and every bad `--swap` refused before boot with a clear message.

mod common;
use common::*;
use serde_json::Value;

/// The guest's test pattern (guest/src/selftest/virtio.rs: keep in step).
const PAGES: u64 = 128;
const BASE_SECTOR: u64 = 128;
const SEED: u64 = 0x6d6d_656d_7573_7770;
fn pattern(p: u64, w: u64) -> u64 {
    (SEED ^ (p << 32) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

const CHECKS: [&str; 9] =
    ["get_id", "capacity", "bulk_write", "batched", "read_back", "out_of_range", "after_error", "flush", "interrupts"];

fn assert_checks_pass(r: &Run) {
    assert_eq!(r.status, 0, "{}", r.all());
    for c in CHECKS {
        assert!(
            r.stderr.contains(&format!("vmm: selftest pass: virtio/{c}\n")),
            "virtio/{c} did not pass: {}",
            r.all()
        );
    }
    assert!(r.stderr.contains("vmm: selftest results: 9 checks passed, 0 failed"), "{}", r.all());
}

/// The pattern at the right place in the file, zeros around it.
fn assert_file_holds_the_pattern(path: &str, size: u64) {
    let file = std::fs::read(path).unwrap();
    assert_eq!(file.len() as u64, size, "the device's size");
    let base = (BASE_SECTOR * 512) as usize;
    assert!(file[..base].iter().all(|&b| b == 0), "nothing written before sector {BASE_SECTOR}");
    for p in 0..PAGES {
        let page = &file[base + (p * 4096) as usize..][..4096];
        for w in 0..512u64 {
            let got = u64::from_le_bytes(page[(w * 8) as usize..][..8].try_into().unwrap());
            assert_eq!(got, pattern(p, w), "page {p} word {w} of the swap file");
        }
    }
    let end = base + (PAGES * 4096) as usize;
    assert!(file[end..].iter().all(|&b| b == 0), "nothing written after the bulk pages");
}

#[test]
fn guest_writes_the_swap_file_and_the_host_reads_the_pages_back() {
    let swap = TempFile::absent("roundtrip.img");
    let opt = format!("{},size=4M", swap.path());
    let r = boot(&[
        "--swap",
        &opt,
        "--cmdline",
        "selftest=virtio",
        "--json",
        "--inspect",
        "exits",
        "--inspect-at",
        "virtio-bulk-end",
    ]);
    assert_checks_pass(&r);
    assert!(
        // With `--json` on stdout the console moves to stderr.
        r.stderr.contains("Command line: selftest=virtio virtio_mmio.device=4K@0xd0000000:16"),
        "the VMM announces the device as Linux's virtio_mmio.device: {}",
        r.all()
    );
    assert!(r.stderr.contains("virtio_blk virtio0: [vda] 8192 512-byte logical blocks (4 MiB)"), "{}", r.all());
    assert!(r.stderr.contains("interrupts (IOAPIC)"), "completions by interrupt: {}", r.all());
    assert_file_holds_the_pattern(swap.path(), 4 << 20);
    // Sparse: only the written pages have blocks.
    let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&swap.0).unwrap());
    assert!(blocks * 512 < 4 << 20, "{blocks} blocks");

    // Exits between the checkpoints around the bulk write of 128 one-page
    // requests, less the closing checkpoint's own port writes and the
    // VMM's own once-a-second kicks of the vCPU (signals, not the guest's
    // doing: a loaded host may land one inside the window).
    let line = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("{\"checkpoint\""))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["checkpoint"] == "virtio-bulk-end" && v["view"] == "exits")
        .unwrap_or_else(|| panic!("no exits view: {}", r.all()));
    let total = line["data"]["total"].as_u64().unwrap();
    let exits = line["data"]["exits"].as_array().unwrap();
    let not_the_device = exits
        .iter()
        .filter(|e| e["port"].as_u64() == Some(0x510) || e["reason"] == "interrupted")
        .map(|e| e["count"].as_u64().unwrap())
        .sum::<u64>();
    let device_exits = total - not_the_device;
    eprintln!(
        "bulk write: {device_exits} VM exits for {PAGES} pages ({:.3} per page, 1 per {:.1} pages); all: {line}",
        device_exits as f64 / PAGES as f64,
        PAGES as f64 / device_exits.max(1) as f64
    );
    assert!(device_exits > 0, "a notify is an exit: {line}");
    assert!(device_exits * 16 <= PAGES, "at most 1 exit per 16 pages in bulk: {device_exits} for {PAGES}: {line}");
}

#[test]
fn polling_works_without_interrupts_and_an_existing_file_is_reused() {
    let swap = TempFile::absent("poll.img");
    std::fs::write(&swap.0, vec![0u8; 1 << 20]).unwrap();
    let r = boot(&["--swap", swap.path(), "--cmdline", "selftest=virtio virtio_poll"]);
    assert_checks_pass(&r);
    assert!(r.stdout.contains("[vda] 2048 512-byte logical blocks (1 MiB)"), "{}", r.all());
    assert!(r.stdout.contains("polling: 0 interrupts taken"), "{}", r.all());
    assert_file_holds_the_pattern(swap.path(), 1 << 20);
}

#[test]
fn without_swap_there_is_no_device() {
    let r = boot(&["--cmdline", "selftest=virtio"]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(!r.stdout.contains("virtio_mmio.device"), "{}", r.all());
    assert!(r.stdout.contains("no block device"), "{}", r.all());
}

fn assert_refused(r: &Run, needles: &[&str]) {
    assert_eq!(r.status, 1, "{}", r.all());
    for n in needles {
        assert!(r.stderr.contains(n), "missing '{n}': {}", r.all());
    }
    assert!(!r.stdout.contains("mmemu kernel"), "refused before boot: {}", r.all());
    assert!(!r.stderr.contains("panicked"), "{}", r.all());
}

#[test]
fn a_swap_file_that_cannot_be_created_is_refused_before_boot() {
    let r = boot(&["--swap", "/nonexistent-mmemu-dir/swap.img"]);
    assert_refused(&r, &["cannot create or open the swap file /nonexistent-mmemu-dir/swap.img", "writable directory"]);
}

#[test]
fn a_read_only_swap_file_is_refused_before_boot() {
    let swap = TempFile::absent("ro.img");
    std::fs::write(&swap.0, vec![0u8; 1 << 20]).unwrap();
    std::fs::set_permissions(&swap.0, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let r = boot(&["--swap", swap.path()]);
    assert_refused(&r, &["is read-only", "chmod u+w"]);
}

#[test]
fn a_too_small_swap_file_is_refused_before_boot() {
    let swap = TempFile::absent("small.img");
    std::fs::write(&swap.0, vec![0u8; 8192]).unwrap();
    let r = boot(&["--swap", swap.path()]);
    assert_refused(&r, &["is 8 KiB, smaller than 64 KiB"]);
    let opt = format!("{},size=2M", swap.path());
    let r = boot(&["--swap", &opt]);
    assert_refused(&r, &["is 8 KiB, smaller than 2 MiB"]);
    assert_eq!(std::fs::metadata(&swap.0).unwrap().len(), 8192, "the file is left as it was");
}

#[test]
fn a_size_that_is_not_whole_pages_is_a_usage_error() {
    let swap = TempFile::absent("odd.img");
    let opt = format!("{},size=5000", swap.path());
    let r = boot(&["--swap", &opt]);
    assert_eq!(r.status, 2, "{}", r.all());
    assert!(r.stderr.contains("not a multiple of 4 KiB"), "{}", r.all());
    assert!(!swap.0.exists(), "nothing created");
}
