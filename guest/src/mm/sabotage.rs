//! `break=WHAT` on the kernel command line: the kernel breaks one of its
//! own invariants on purpose and stops at the `sabotage` checkpoint, so the
//! host's `--verify` can be seen to catch it.
//!
//! `freed-mapped`   a vmalloc page's frame goes back to the buddy allocator
//!                  while still mapped (a use-after-free waiting to happen)
//! `text-writable`  a page of kernel text is made writable (W^X broken)
//!
//! Layers above mm/ register their own switches ([`register`]): the
//! process-side names (`cow-writable`, `cross-map`, `refcount`,
//! `pt-owner`) need live address spaces, and proc/sabotage.rs runs them.

use super::{vmalloc, KERNEL_PT, PAGES};
use crate::arch::cpu::Invlpg;
use crate::kprintln;
use crate::sync::{rank, SpinLock};
use mm_core::addr::{VirtAddr, PAGE_SHIFT};
use mm_core::paging::{walk, PteFlags};

/// A registered set of switches: their names (for the message listing
/// them) and the function that runs one, None if `what` is not its.
#[derive(Clone, Copy)]
pub struct Switches {
    /// Comma-separated names.
    pub names: &'static str,
    /// Breaks `what`; Some(whether it worked) if the name is one of these.
    pub run: fn(&str) -> Option<bool>,
}

/// Registered switch sets (one per layer above mm/).
static REGISTERED: SpinLock<[Option<Switches>; 4]> =
    SpinLock::new_with("the sabotage switches", rank::STATS, [None; 4]);

/// Registers a layer's switches; false if the table is full.
pub fn register(switches: Switches) -> bool {
    REGISTERED.with(|r| match r.iter_mut().find(|s| s.is_none()) {
        Some(slot) => {
            *slot = Some(switches);
            true
        }
        None => false,
    })
}

/// Breaks `what`, stops at the checkpoint, and reports whether it knew it.
pub fn run(what: &str) -> bool {
    let code = match what {
        "freed-mapped" => {
            let Ok(va) = vmalloc::vmalloc(4096, "sabotage freed-mapped") else { return false };
            let ctx = KERNEL_PT.with(|m| m.context());
            let pfn = PAGES.with(|p| walk(&p.phys, &ctx, va).map(|t| t.pa.0 >> PAGE_SHIFT));
            match pfn {
                Ok(pfn) => {
                    let _ = super::free_pages(pfn, 0);
                    super::percpu::drain_all();
                    kprintln!("sabotage: freed pfn {:#x} while {:#x} still maps it", pfn, va.0);
                }
                Err(_) => return false,
            }
            1
        }
        "text-writable" => {
            let text = run as *const () as u64 & !0xfff;
            let mapper = KERNEL_PT.with(|m| *m);
            let r =
                PAGES.with(|p| mapper.protect(&mut p.phys, VirtAddr(text), 4096, PteFlags::RW.union(PteFlags::GLOBAL)));
            match r {
                Ok(flush) => flush.flush(&mut Invlpg),
                Err(_) => return false,
            }
            kprintln!("sabotage: kernel text page {:#x} is now writable", text);
            2
        }
        "memcg" => {
            // A charge no page carries: the counter and the tags disagree.
            mm_core::memcg::TABLE.charged[0][0].fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            kprintln!("sabotage: the root memory cgroup counts one anon page no page is tagged with");
            3
        }
        _ => {
            // Copied out: a layer's switch takes its own (outer) locks.
            let registered = REGISTERED.with(|r| *r);
            for s in registered.iter().flatten() {
                if let Some(ok) = (s.run)(what) {
                    return ok;
                }
            }
            let mut names = crate::fmt::StackString::<200>::new();
            for s in registered.iter().flatten() {
                let _ = core::fmt::Write::write_fmt(&mut names, format_args!(", {}", s.names));
            }
            kprintln!("sabotage: unknown invariant '{}' (freed-mapped, text-writable, memcg{})", what, names.as_str());
            return false;
        }
    };
    super::descriptor::set_sabotage(code);
    crate::checkpoint::checkpoint("sabotage");
    true
}
