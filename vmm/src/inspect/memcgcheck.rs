//! `--verify memcg`: the guest's memory-cgroup charges against the page
//! descriptors. The guest publishes its groups' counters and limits
//! (mm-core's `memcg::MemcgTable`, at the descriptor's `memcg_table`);
//! each charged page records its group and kind in its descriptor. The
//! host counts those tags over every allocated block itself and checks:
//! each group's counter of each kind equals the pages tagged with it (the
//! charge is exact: nothing charged twice, nothing freed and still
//! counted); a tagged page is an allocated page of its kind's owner
//! (anon: `UserAnon`, file: `PageCache`, page table: `PageTable`); every
//! user page a live process maps is charged to some group; and no group
//! is over its memory.max (its subtree's charges; checkpoints are taken
//! where reclaim has settled).

use super::guest::{BlockKind, GuestState};
use super::invariants::UserMaps;
use super::spec::Check;
use super::verify::CheckResult;
use mm_core::buddy::PageOwner;
use mm_core::memcg::{self, ChargeKind, MemcgSnapshot, MAX_MEMCG, NR_CHARGE_KINDS, TABLE_SIZE};
use vm_memory::{Bytes, GuestAddress};

const KIND_NAMES: [&str; NR_CHARGE_KINDS] = ["anon", "file", "pagetables"];

fn owner_of(kind: ChargeKind) -> PageOwner {
    match kind {
        ChargeKind::Anon => PageOwner::UserAnon,
        ChargeKind::File => PageOwner::PageCache,
        ChargeKind::PageTable => PageOwner::PageTable,
    }
}

/// Runs the check (`um`: the live processes' user mappings).
pub fn check(gs: &GuestState<'_>, um: &UserMaps) -> CheckResult {
    let pa = u64::from(gs.desc.memcg_table);
    if pa == 0 {
        return CheckResult::not_applicable(Check::Memcg, "the guest publishes no memory-cgroup table".into());
    }
    let mut buf = vec![0u8; TABLE_SIZE];
    if let Err(e) = gs.memory().read_slice(&mut buf, GuestAddress(pa)) {
        return CheckResult::could_not_run(Check::Memcg, format!("the memcg table at {pa:#x} is unreadable: {e}"));
    }
    let Some(t) = MemcgSnapshot::decode(&buf) else {
        return CheckResult::could_not_run(Check::Memcg, "the memcg table is short".into());
    };
    let mut violations = Vec::new();
    // The tags, counted over every allocated block's head.
    let mut tagged = [[0u64; NR_CHARGE_KINDS]; MAX_MEMCG];
    let mut charged_pfns = std::collections::BTreeSet::new();
    for b in &gs.blocks {
        let BlockKind::Allocated(owner) = b.kind else { continue };
        let Some((g, kind)) = memcg::tag(&gs.page(b.pfn)) else { continue };
        tagged[g][kind as usize] += 1 << b.order;
        charged_pfns.insert(b.pfn);
        if owner != owner_of(kind) {
            violations.push(format!(
                "frame {:#x} is charged to group {g} as {} but is owned {owner:?}",
                b.pfn << 12,
                KIND_NAMES[kind as usize]
            ));
        }
    }
    for (g, (counted, tags)) in t.charged.iter().zip(&tagged).enumerate() {
        for (k, (c, n)) in counted.iter().zip(tags).enumerate() {
            if c != n {
                violations
                    .push(format!("group {g} counts {c} {} pages charged but {n} pages carry its tag", KIND_NAMES[k]));
            }
        }
    }
    // No group over its limit.
    let mut groups = 0;
    for g in (1..MAX_MEMCG).filter(|&g| t.live[g] != 0) {
        groups += 1;
        let usage: u64 = (0..MAX_MEMCG).filter(|&d| t.is_in(d, g)).map(|d| t.charged[d].iter().sum::<u64>()).sum();
        if usage > t.max[g] {
            violations.push(format!("group {g} is over memory.max: {usage} pages charged, max {}", t.max[g]));
        }
    }
    // Every user page a live process maps is charged.
    let mut uncharged = 0u64;
    for (&pfn, leaves) in &um.frames {
        let Some(b) = gs.block_of(pfn) else { continue };
        let user = matches!(b.kind, BlockKind::Allocated(PageOwner::UserAnon | PageOwner::PageCache));
        if user && !charged_pfns.contains(&b.pfn) {
            uncharged += 1;
            if uncharged <= 4 {
                let who = leaves.first().map_or(String::new(), |l| format!(" (pid {} at {:#x})", l.pid, l.va));
                violations.push(format!("user frame {:#x} is mapped but charged to no group{who}", pfn << 12));
            }
        }
    }
    if uncharged > 4 {
        violations.push(format!("{} more mapped user frames charged to no group", uncharged - 4));
    }
    let total: u64 = tagged.iter().flatten().sum();
    let detail = format!(
        "{total} charged pages in {} groups ({groups} below the root) match their tags; {} mapped user frames of {} processes all charged",
        (0..MAX_MEMCG).filter(|&g| t.live[g] != 0).count(),
        um.frames.len(),
        um.processes
    );
    CheckResult::new(Check::Memcg, detail, violations)
}
