//! Reclaim quality in the guest: replays mm-core's fixed-seed page-access
//! trace (`lru::sim::TraceIter`: a zipfian hot set interrupted by
//! sequential scans) over an anonymous mapping, one read-modify-write of
//! a word per access, and prints the major faults the kernel counted for
//! it. The host (vmm/benches/swap.rs) computes exact LRU's and Belady's
//! OPT fault counts for the same trace at the frame count the process
//! held (its RSS at the end), so the guest's reclaim is compared with the
//! ideal policies on the very same accesses.
//!
//! The argument: bits 0..15 zipfian pages, 16..31 scan pages, 32..47
//! accesses in thousands, 48..63 accesses between scans in hundreds.
#![no_std]
#![no_main]

use mm_core::lru::sim::{zipf_table, TraceIter, TraceSpec};
use ulib::abi::*;
use ulib::{getpid, mmap, mmstat, pagemap, println, PAGE};

ulib::entry!(main);

/// Largest zipfian page count the static table holds.
const MAX_ZIPF: usize = 16384;
static mut TABLE: [u64; MAX_ZIPF] = [0; MAX_ZIPF];

fn main(arg: u64) -> i32 {
    let field = |shift: u32| (arg >> shift) & 0xffff;
    let spec = TraceSpec {
        len: field(32) as usize * 1000,
        zipf_pages: field(0) as u32,
        scan_pages: field(16) as u32,
        scan_period: field(48) as usize * 100,
        ..TraceSpec::DEFAULT
    };
    let pid = getpid();
    if spec.zipf_pages == 0 || spec.zipf_pages as usize > MAX_ZIPF || spec.len == 0 {
        println!("tracereplay[{}]: bad trace spec", pid);
        return 2;
    }
    // SAFETY: the only reference to TABLE, in a single-threaded program.
    let table = unsafe { &mut *core::ptr::addr_of_mut!(TABLE) };
    let table = &mut table[..spec.zipf_pages as usize];
    zipf_table(table);
    let pages = (spec.zipf_pages + spec.scan_pages) as u64;
    let base = mmap(0, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
    if base < 0 {
        println!("tracereplay[{}]: mmap failed ({})", pid, base);
        return 3;
    }
    let base = base as u64;
    // Scan resistance: after each scan, how many of the `hot` most popular
    // pages are still resident (mapped: reading pagemap does not
    // fault them in).
    let hot = (spec.zipf_pages / 4) as u64;
    let (mut hot_resident, mut hot_checked) = (0u64, 0u64);
    let s0 = mmstat();
    let mut n = 0u64;
    let mut it = TraceIter::new(spec, table);
    while let Some(page) = it.next() {
        let p = (base + page as u64 * PAGE) as *mut u64;
        // SAFETY: `page` < zipf_pages + scan_pages, inside the mapping.
        unsafe { p.write_volatile(p.read_volatile().wrapping_add(1)) };
        n += 1;
        if it.scan_just_ended() {
            // /proc/self/pagemap's present bits, 64 pages a read.
            let mut e = [0u64; 64];
            let mut h = 0;
            while h < hot {
                let k = (hot - h).min(64) as usize;
                let n = pagemap(base + h * PAGE, &mut e[..k]).max(0) as usize;
                hot_resident += e[..n].iter().filter(|&&x| x >> 63 != 0).count() as u64;
                h += k as u64;
            }
            hot_checked += hot;
        }
    }
    let s1 = mmstat();
    // Every access added one to its page's first word: the sum is the
    // access count, whatever went to swap and back.
    let mut sum = 0u64;
    for i in 0..pages {
        // SAFETY: inside the mapping.
        sum += unsafe { ((base + i * PAGE) as *const u64).read_volatile() };
    }
    println!(
        "tracereplay[{}]: accesses {} major_faults {} minor_faults {} swapin_cached {} rss {} hot {} hot_resident {} hot_checked {} sum {}",
        pid,
        n,
        s1.maj_faults - s0.maj_faults,
        s1.faults - s0.faults - (s1.maj_faults - s0.maj_faults),
        s1.swapin_cached - s0.swapin_cached,
        s1.rss_pages,
        hot,
        hot_resident,
        hot_checked,
        sum
    );
    if sum != n {
        println!("tracereplay[{}]: access count lost: {} counted, {} made", pid, sum, n);
        return 4;
    }
    0
}
