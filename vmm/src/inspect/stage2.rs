//! The second stage: GVA -> GPA (the guest's tables, mm-core's walker) ->
//! HVA (the memslots, vm-memory) -> host frame (`/proc/self/pagemap`).
//!
//! KVM keeps its EPT (or, on the shadow-paging hosts of platform.md, its
//! shadow page tables) to itself: no ioctl exposes them. In a userspace VMM
//! the memslot table plus the VMM process's own page tables, as pagemap
//! shows them, are the second stage: KVM builds its EPT/shadow entries
//! from exactly this HVA -> host-PFN mapping, so this chain stands in for
//! EPT.

use serde::Serialize;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// One memslot as KVM was given it (slot numbers follow
/// [`crate::memory::register`]: one per region, in order).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Slot {
    /// KVM slot number.
    pub slot: u32,
    /// First guest-physical address.
    #[serde(serialize_with = "super::views::hex")]
    pub gpa: u64,
    /// Size in bytes.
    #[serde(serialize_with = "super::views::hex")]
    pub size: u64,
    /// Host virtual address of its first byte.
    #[serde(serialize_with = "super::views::hex")]
    pub hva: u64,
}

/// Every memslot of `mem`.
pub fn slots(mem: &GuestMemoryMmap) -> Vec<Slot> {
    mem.iter()
        .enumerate()
        .map(|(i, r)| Slot {
            slot: i as u32,
            gpa: r.start_addr().0,
            size: r.len(),
            hva: mem.get_host_address(r.start_addr()).map(|p| p as u64).unwrap_or(0),
        })
        .collect()
}

/// The memslot holding `gpa`, if it is RAM.
pub fn slot_of(mem: &GuestMemoryMmap, gpa: u64) -> Option<Slot> {
    slots(mem).into_iter().find(|s| gpa >= s.gpa && gpa - s.gpa < s.size)
}

/// One `/proc/self/pagemap` entry, decoded (Documentation/admin-guide/mm/pagemap.rst).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PagemapEntry {
    /// The raw 64-bit value.
    #[serde(serialize_with = "super::views::hex")]
    pub raw: u64,
    /// Bit 63: a host frame backs the page.
    pub present: bool,
    /// Bit 62: swapped out.
    pub swapped: bool,
    /// Bit 61: a file page or shared anonymous page.
    pub file_or_shared: bool,
    /// Bit 56: mapped by this process only.
    pub exclusive: bool,
    /// Bit 55: written since the soft-dirty bits were last cleared.
    pub soft_dirty: bool,
    /// Bits 0..54 when present: the host PFN. Zero without CAP_SYS_ADMIN.
    #[serde(serialize_with = "super::views::hex")]
    pub pfn: u64,
}

impl PagemapEntry {
    /// Decodes a raw entry.
    pub fn decode(raw: u64) -> Self {
        let present = raw & (1 << 63) != 0;
        PagemapEntry {
            raw,
            present,
            swapped: raw & (1 << 62) != 0,
            file_or_shared: raw & (1 << 61) != 0,
            exclusive: raw & (1 << 56) != 0,
            soft_dirty: raw & (1 << 55) != 0,
            pfn: if present { raw & ((1 << 55) - 1) } else { 0 },
        }
    }

    /// Flags in words.
    pub fn describe(&self) -> String {
        let mut v = vec![if self.present { "present" } else { "not present (never touched, or reclaimed)" }];
        if self.swapped {
            v.push("swapped");
        }
        if self.file_or_shared {
            v.push("file/shared");
        }
        if self.exclusive {
            v.push("exclusive");
        }
        if self.soft_dirty {
            v.push("soft-dirty");
        }
        v.join(", ")
    }
}

/// Reads the pagemap entries of `count` host pages from `hva` (page aligned
/// or not). Errors say what to check.
pub fn pagemap(hva: u64, count: usize) -> Result<Vec<PagemapEntry>, String> {
    let f = File::open("/proc/self/pagemap").map_err(|e| format!("cannot open /proc/self/pagemap: {e}"))?;
    let mut buf = vec![0u8; count * 8];
    f.read_exact_at(&mut buf, (hva / 4096) * 8)
        .map_err(|e| format!("cannot read /proc/self/pagemap at HVA {hva:#x}: {e}"))?;
    Ok(buf.chunks_exact(8).map(|c| PagemapEntry::decode(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))).collect())
}

/// The `stage2` view.
#[derive(Debug, Clone, Serialize)]
pub struct Stage2Report {
    /// The guest-virtual address.
    #[serde(serialize_with = "super::views::hex")]
    pub gva: u64,
    /// What the user called it.
    pub label: Option<String>,
    /// The root walked.
    #[serde(serialize_with = "super::views::hex")]
    pub cr3: u64,
    /// The first stage (the guest's tables).
    pub walk: super::views::WalkOutcome,
    /// The guest-physical address, when the first stage maps it.
    #[serde(serialize_with = "super::views::hex_opt")]
    pub gpa: Option<u64>,
    /// The memslot holding it.
    pub slot: Option<Slot>,
    /// Host virtual address in the VMM.
    #[serde(serialize_with = "super::views::hex_opt")]
    pub hva: Option<u64>,
    /// What the host's page tables say about that HVA.
    pub host: Option<PagemapEntry>,
    /// Host physical address, when the PFN is known.
    #[serde(serialize_with = "super::views::hex_opt")]
    pub hpa: Option<u64>,
    /// Why the chain stops, or caveats (PFN hidden without root).
    pub notes: Vec<String>,
}

/// Follows `walk` (already made) through the memslots and pagemap.
pub fn stage2(mem: &GuestMemoryMmap, walk: &super::views::WalkReport) -> Stage2Report {
    let mut r = Stage2Report {
        gva: walk.va,
        label: walk.label.clone(),
        cr3: walk.cr3,
        walk: walk.outcome.clone(),
        gpa: None,
        slot: None,
        hva: None,
        host: None,
        hpa: None,
        notes: vec![],
    };
    let super::views::WalkOutcome::Mapped { gpa, .. } = walk.outcome else {
        r.notes.push("the guest's page tables do not map this address: there is no second stage to follow".into());
        return r;
    };
    r.gpa = Some(gpa);
    let Some(slot) = slot_of(mem, gpa) else {
        r.notes.push(format!("GPA {gpa:#x} is in no memslot (a hole, or MMIO): a guest access would exit to the VMM"));
        return r;
    };
    r.slot = Some(slot);
    let Some(hva) = mem.get_host_address(GuestAddress(gpa)).ok().map(|p| p as u64) else {
        r.notes.push("vm-memory has no host address for it".into());
        return r;
    };
    r.hva = Some(hva);
    match pagemap(hva, 1) {
        Ok(e) => {
            let e = e[0];
            r.host = Some(e);
            if !e.present {
                r.notes
                    .push("the host has not backed this page yet: neither the guest nor the VMM has touched it".into());
            } else if e.pfn == 0 {
                r.notes.push("the host PFN reads as 0: pagemap hides PFNs from processes without CAP_SYS_ADMIN; run the VMM as root to see it".into());
            } else {
                r.hpa = Some(e.pfn * 4096 + (hva & 0xfff));
            }
        }
        Err(e) => r.notes.push(e),
    }
    r
}

impl Stage2Report {
    /// The chain, one hop per line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let label = self.label.as_ref().map(|l| format!(" ({l})")).unwrap_or_default();
        let _ = writeln!(s, "stage 2 of {:#018x}{label}, CR3 {:#x}", self.gva, self.cr3);
        if let Some(gpa) = self.gpa {
            let size = match &self.walk {
                super::views::WalkOutcome::Mapped { page_size, .. } => crate::memory::human(*page_size),
                _ => String::new(),
            };
            let _ = writeln!(s, "  GVA {:#x} -> GPA {gpa:#x}  (guest page tables, {size} page)", self.gva);
        }
        if let (Some(gpa), Some(slot), Some(hva)) = (self.gpa, self.slot, self.hva) {
            let _ = writeln!(
                s,
                "  GPA {gpa:#x} -> HVA {hva:#x}  (memslot {}: GPA {:#x}-{:#x} at HVA {:#x})",
                slot.slot,
                slot.gpa,
                slot.gpa + slot.size - 1,
                slot.hva
            );
        }
        if let (Some(hva), Some(h)) = (self.hva, self.host) {
            let pfn = if h.present && h.pfn != 0 { format!("host PFN {:#x}", h.pfn) } else { "host frame ?".into() };
            let hpa = self.hpa.map(|a| format!(", HPA {a:#x}")).unwrap_or_default();
            let _ = writeln!(s, "  HVA {hva:#x} -> {pfn}{hpa}  (/proc/self/pagemap: {})", h.describe());
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        let _ = writeln!(
            s,
            "  (KVM keeps its EPT/shadow tables to itself; memslots + the VMM's own page tables stand in for them)"
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagemap_bits_decode() {
        let e = PagemapEntry::decode(1 << 63 | 1 << 56 | 1 << 55 | 0x1234);
        assert!(e.present && e.exclusive && e.soft_dirty && !e.swapped);
        assert_eq!(e.pfn, 0x1234);
        assert!(!PagemapEntry::decode(0).present);
    }

    #[test]
    fn own_pages_are_present_in_pagemap() {
        let v = vec![1u8; 8192];
        let e = pagemap(v.as_ptr() as u64, 1).unwrap();
        assert!(e[0].present, "a page just written is backed: {:?}", e[0]);
    }

    #[test]
    fn slots_cover_the_regions() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20), (GuestAddress(1 << 32), 1 << 20)]).unwrap();
        let s = slots(&m);
        assert_eq!(s.len(), 2);
        assert_eq!(slot_of(&m, (1 << 32) + 5).unwrap().slot, 1);
        assert!(slot_of(&m, 2 << 20).is_none());
    }
}
