//! The bodies of the cargo-fuzz targets in `mm-core/fuzz/` (libFuzzer,
//! nightly), as ordinary functions: each target calls one of these, and
//! the unit test below replays every committed corpus file
//! (`mm-core/fuzz/corpus/TARGET/*`) through the same function on every
//! `cargo test`, stable toolchain included. A body panics only when the
//! code under test breaks one of its own promises (a panic inside, an
//! overflow, two views of the same input disagreeing): that is what the
//! fuzzer reports.

use crate::addr::PAGE_SIZE;
use crate::buddy::Page;
use crate::descriptor::{AccessRecord, CacheDesc, HugeDesc, MmDescriptor, ProcDesc, SwapDesc, VaRange, Wire};
use crate::elf::Elf;
use crate::paging::entry::Pte;
use crate::paging::swap::{is_swap_pte, SwapEntry};
use alloc::vec;

/// `walker`: hostile page tables (loops, tables past the end of memory,
/// huge leaves at every level, reserved bits) through the walker, the
/// A/D-updating walk, the trace, the mapping iterator, the TLB model and
/// the mapper ([`crate::paging::fuzz::exercise`]); and every word of the
/// input read as a non-present PTE through the swap-entry decoding, which
/// must round-trip.
pub fn walker(data: &[u8]) {
    crate::paging::fuzz::exercise(data);
    for w in data.chunks(8) {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        let pte = Pte(u64::from_le_bytes(b));
        if let Some(e) = SwapEntry::from_pte(pte) {
            assert!(is_swap_pte(pte), "{pte:?} decoded as a swap entry but is not one");
            let back = e.to_pte(SwapEntry::pte_flags(pte));
            assert_eq!(SwapEntry::from_pte(back), Some(e), "swap entry of {pte:?} does not round-trip");
            assert_eq!(SwapEntry::new(e.ty(), e.offset()), Some(e));
            assert_eq!(SwapEntry::from_swp(e.swp()), Some(e));
        }
    }
}

/// `alloc`: the buddy, slab and vmalloc allocators driven by a sequence of
/// operations `arbitrary` builds from the input, each step checked against
/// the model ([`crate::slab::harness::run_arbitrary`]).
#[cfg(any(test, feature = "arbitrary"))]
pub fn alloc(data: &[u8]) {
    if let Err(e) = crate::slab::harness::run_arbitrary(data) {
        panic!("allocator invariant violated: {e}");
    }
}

/// Decodes `data` as a `T` and checks that encoding it and decoding
/// again is stable (compared as bytes: not every structure has `==`).
fn round_trip<T: Wire>(data: &[u8]) -> T {
    let v = T::decode(data);
    let mut once = vec![0u8; T::SIZE];
    v.encode(&mut once);
    let mut twice = vec![0u8; T::SIZE];
    T::decode(&once).encode(&mut twice);
    assert_eq!(once, twice, "encode(decode(encode(x))) != encode(x)");
    // Padding included, every byte is read: a whole structure re-encodes
    // to the bytes it came from (a short input's cut field reads as 0).
    if data.len() >= T::SIZE {
        assert_eq!(once[..], data[..T::SIZE], "decoding lost or changed bytes");
    }
    v
}

/// `descriptor`: the descriptor the guest publishes, and every structure
/// it points to, decoded from arbitrary (short, long, garbage) bytes:
/// decoding never panics, encoding what was decoded gives it back, and the
/// derived values (names, validity) are computed without panicking.
pub fn descriptor(data: &[u8]) {
    let d: MmDescriptor = round_trip(data);
    let _ = d.is_valid();
    for c in &d.caches {
        let _ = c.name();
    }
    // Each structure also from every offset of a short prefix, as a
    // hostile table in guest memory may be misaligned.
    for skip in 0..data.len().min(8) {
        let b = &data[skip..];
        round_trip::<Page>(b);
        round_trip::<CacheDesc>(b).name();
        round_trip::<ProcDesc>(b);
        round_trip::<AccessRecord>(b);
        round_trip::<SwapDesc>(b);
        round_trip::<HugeDesc>(b);
        round_trip::<VaRange>(b);
    }
}

/// `elf`: the user-program ELF reader the guest's `execve` runs on
/// initramfs files, with exec's order of checks: whatever the header says,
/// nothing panics or overflows, and what `check_loads` accepts is safe
/// for the loader's arithmetic.
pub fn elf(data: &[u8]) {
    /// The guest's `TASK_SIZE` and `ET_DYN_BASE` (guest/src/proc).
    const TASK_SIZE: u64 = 0x7fff_ffff_f000;
    const ET_DYN_BASE: u64 = 0x5555_5555_4000;
    let Ok(e) = Elf::parse(data) else { return };
    let _ = e.is_dynamic();
    let bias = if e.etype == 3 { ET_DYN_BASE } else { 0 };
    let _ = e.phdr_vaddr_biased(bias);
    let _ = e.phdr_vaddr();
    if let Some(end) = e.ph_end() {
        assert!(end >= e.phoff);
    }
    // Exec's header-only image: the segments are checked against the
    // file's length, which may exceed what was read; a file twice the
    // input stands for one whose data the image does not hold.
    let file_size = (data.len() as u64) * 2;
    if e.check_loads(bias, TASK_SIZE, file_size).is_ok() {
        for s in e.loads() {
            let end = s.offset.checked_add(s.filesz).expect("accepted segment's file end overflows");
            assert!(end <= file_size);
        }
    }
    for limit in [TASK_SIZE, u64::MAX] {
        if e.check_loads(bias, limit, data.len() as u64).is_ok() {
            for s in e.loads() {
                // What the loaders (guest/src/proc/mm.rs load_elf_at and
                // load_elf_file) compute.
                let end = s.offset.checked_add(s.filesz).expect("accepted segment's file end overflows");
                assert!(end <= data.len() as u64 && s.filesz <= s.memsz);
                let va = s.vaddr.checked_add(bias).expect("accepted segment's address overflows");
                let top = va.checked_add(s.memsz).expect("accepted segment's end overflows");
                assert!(top <= limit);
                let _ = top.checked_add(PAGE_SIZE - 1);
                assert!(data.get(s.offset as usize..end as usize).is_some());
            }
        }
    }
    assert!(e.loads().count() as u64 <= e.phnum);
}

/// `acpi`: the guest's MADT reader (`acpi::read_madt`) on physical memory
/// that is the input (the RSDP at the address its first two bytes give,
/// little-endian, modulo the input's length): whatever the tables say,
/// no panic, no read outside what the callback offers, at most
/// [`crate::acpi::MAX_CPUS`] CPUs.
pub fn acpi(data: &[u8]) {
    let rsdp = match data {
        [a, b, ..] => u64::from(u16::from_le_bytes([*a, *b])) % data.len() as u64,
        _ => 0,
    };
    let mut read = |pa: u64, buf: &mut [u8]| -> bool {
        let Ok(at) = usize::try_from(pa) else { return false };
        match at.checked_add(buf.len()).and_then(|end| data.get(at..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    };
    if let Ok(t) = crate::acpi::read_madt(rsdp, &mut read) {
        assert!(t.ids().len() <= crate::acpi::MAX_CPUS);
    }
}

/// `numa`: the guest's SRAT/SLIT reader (`numa::read_numa`) on physical
/// memory that is the input, the RSDP found as `acpi`'s: whatever the
/// tables say, no panic, no read outside the input, the limits kept, and
/// every range's node and every distance consistent.
pub fn numa(data: &[u8]) {
    use crate::numa::{MAX_CPUS, MAX_MEM_RANGES, MAX_NODES};
    let rsdp = match data {
        [a, b, ..] => u64::from(u16::from_le_bytes([*a, *b])) % data.len() as u64,
        _ => 0,
    };
    let mut read = |pa: u64, buf: &mut [u8]| -> bool {
        let Ok(at) = usize::try_from(pa) else { return false };
        match at.checked_add(buf.len()).and_then(|end| data.get(at..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    };
    if let Ok(Some(n)) = crate::numa::read_numa(rsdp, &mut read) {
        assert!((1..=MAX_NODES).contains(&n.nr_nodes));
        assert!(n.nr_mem <= MAX_MEM_RANGES && n.nr_cpus <= MAX_CPUS);
        assert!(n.mem_ranges().iter().all(|r| usize::from(r.node) < n.nr_nodes && r.len > 0));
        assert!(n.cpu_nodes().iter().all(|c| usize::from(c.1) < n.nr_nodes));
        for a in 0..n.nr_nodes {
            assert_eq!(n.distance(a, a), crate::numa::LOCAL_DISTANCE);
            let mut order = [0u8; MAX_NODES];
            assert_eq!(n.fallback_order(a, &mut order), n.nr_nodes);
            assert_eq!(usize::from(order[0]), a);
        }
    }
}

/// A target's body: one input in, a panic on a bug.
pub type Body = fn(&[u8]);

/// The targets by name (the folder names under `fuzz/corpus/`), each with its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("walker", walker),
    #[cfg(any(test, feature = "arbitrary"))]
    ("alloc", alloc),
    ("descriptor", descriptor),
    ("elf", elf),
    ("acpi", acpi),
    ("numa", numa),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every committed corpus file of every target goes through its body:
    /// the seeds and the reproducers of bugs fuzzing found stay fixed.
    /// The ACPI seeds are tables the reader accepts (the RSDP 2.0 and 1.0
    /// paths), so fuzzing starts past the checksums.
    #[test]
    fn acpi_seeds_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/acpi");
        for name in ["rsdp2-xsdt-madt", "rsdp1-rsdt-madt"] {
            let data = std::fs::read(dir.join(name)).unwrap();
            let mut read = |pa: u64, buf: &mut [u8]| {
                let at = pa as usize;
                data.get(at..at + buf.len()).map(|s| buf.copy_from_slice(s)).is_some()
            };
            let t = crate::acpi::read_madt(0x40, &mut read).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.ids(), &[0, 1, 7], "{name}");
        }
    }

    /// The NUMA seeds are tables the reader accepts (RSDP 2.0 and 1.0, a
    /// SLIT it uses), so fuzzing starts past the checksums.
    #[test]
    fn numa_seeds_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/numa");
        for (name, nodes, cpus, d01) in [("rsdp2-srat-slit-2nodes", 2, 4, 20), ("rsdp1-srat-slit-3nodes", 3, 2, 30)] {
            let data = std::fs::read(dir.join(name)).unwrap();
            let mut read = |pa: u64, buf: &mut [u8]| {
                let at = pa as usize;
                data.get(at..at + buf.len()).map(|s| buf.copy_from_slice(s)).is_some()
            };
            let n = crate::numa::read_numa(0x40, &mut read).unwrap_or_else(|e| panic!("{name}: {e}")).unwrap();
            assert_eq!((n.nr_nodes, n.nr_cpus, n.distance(0, 1), n.slit_used), (nodes, cpus, d01, true), "{name}");
        }
    }

    #[test]
    fn corpus_replays() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut total = 0;
        for (name, body) in super::TARGETS {
            let dir = root.join(name);
            let mut files: std::vec::Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e} (every target keeps a seed corpus)", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "{} is empty", dir.display());
            for f in files {
                let data = std::fs::read(&f).unwrap();
                let r = std::panic::catch_unwind(|| body(&data));
                assert!(r.is_ok(), "{name}: corpus file {} fails", f.display());
                total += 1;
            }
        }
        assert!(total >= super::TARGETS.len());
        // Every corpus folder is a target's (none is left unreplayed).
        for e in std::fs::read_dir(&root).unwrap() {
            let n = e.unwrap().file_name().into_string().unwrap();
            assert!(super::TARGETS.iter().any(|(t, _)| *t == n), "corpus/{n} has no target");
        }
    }
}
