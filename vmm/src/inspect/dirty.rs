//! The `dirty` view: guest pages written since the previous checkpoint,
//! from KVM's dirty log (`KVM_GET_DIRTY_LOG`, which also re-arms it).
//! The log counts guest writes, including the A/D updates the CPU makes
//! in page-table pages; host writes through the HVA are not counted
//! (platform.md). The memslots need `KVM_MEM_LOG_DIRTY_PAGES`, which the
//! VM sets when the view is asked for.

use super::stage2::Slot;
use kvm_ioctls::VmFd;
use serde::Serialize;
use std::fmt::Write as _;

/// A run of dirty pages.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct DirtyRange {
    /// First guest-physical address.
    #[serde(serialize_with = "super::views::hex")]
    pub start: u64,
    /// One past the last.
    #[serde(serialize_with = "super::views::hex")]
    pub end: u64,
    /// Pages.
    pub pages: u64,
}

/// The `dirty` view.
#[derive(Debug, Clone, Serialize)]
pub struct DirtyReport {
    /// Since which checkpoint ("the start of the run" for the first).
    pub since: String,
    /// Dirty 4 KiB pages.
    pub pages: u64,
    /// Merged runs, in address order.
    pub ranges: Vec<DirtyRange>,
}

/// Turns one slot's bitmap into ranges.
pub fn ranges_of(slot: &Slot, bitmap: &[u64]) -> Vec<DirtyRange> {
    let mut v: Vec<DirtyRange> = Vec::new();
    let npages = slot.size / 4096;
    for (w, &word) in bitmap.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let b = bits.trailing_zeros() as u64;
            bits &= bits - 1;
            let page = w as u64 * 64 + b;
            if page >= npages {
                break;
            }
            let start = slot.gpa + page * 4096;
            match v.last_mut() {
                Some(r) if r.end == start => {
                    r.end += 4096;
                    r.pages += 1;
                }
                _ => v.push(DirtyRange { start, end: start + 4096, pages: 1 }),
            }
        }
    }
    v
}

/// Reads (and clears) the dirty log of every slot.
pub fn dirty_view(vm: &VmFd, slots: &[Slot], since: &str) -> Result<DirtyReport, String> {
    let mut r = DirtyReport { since: since.to_string(), pages: 0, ranges: vec![] };
    for s in slots {
        let bitmap = vm.get_dirty_log(s.slot, s.size as usize).map_err(|e| {
            format!(
                "KVM_GET_DIRTY_LOG on memslot {} failed ({e}); dirty logging is on only when the run asks for the `dirty` view",
                s.slot
            )
        })?;
        let ranges = ranges_of(s, &bitmap);
        r.pages += ranges.iter().map(|x| x.pages).sum::<u64>();
        r.ranges.extend(ranges);
    }
    Ok(r)
}

impl DirtyReport {
    /// A count and the ranges, annotated by `describe` (what lies there).
    pub fn render(&self, describe: impl Fn(u64, u64) -> String) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "dirty since {}: {} pages ({} KiB) in {} ranges",
            self.since,
            self.pages,
            self.pages * 4,
            self.ranges.len()
        );
        for r in &self.ranges {
            let what = describe(r.start, r.end);
            let _ = writeln!(s, "  {:#012x}-{:#012x} {:>6} pages  {what}", r.start, r.end - 1, r.pages);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_become_ranges() {
        let slot = Slot { slot: 0, gpa: 0x10_0000, size: 256 * 4096, hva: 0 };
        let r = ranges_of(&slot, &[0b1110_0001, 1 << 63, 1]);
        assert_eq!(
            r,
            vec![
                DirtyRange { start: 0x10_0000, end: 0x10_1000, pages: 1 },
                DirtyRange { start: 0x10_5000, end: 0x10_8000, pages: 3 },
                DirtyRange { start: 0x10_0000 + 127 * 4096, end: 0x10_0000 + 129 * 4096, pages: 2 },
            ]
        );
        let small = Slot { size: 4 * 4096, ..slot };
        assert_eq!(ranges_of(&small, &[0xff]).len(), 1, "bits past the slot's end are ignored");
        assert_eq!(ranges_of(&small, &[0xff])[0].pages, 4);
    }
}
