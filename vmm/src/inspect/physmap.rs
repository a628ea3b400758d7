//! The `physmap` view: a picture of guest-physical memory, one pixel per
//! frame (or per few frames on big guests), coloured by what the host can
//! tell on its own: RAM or hole, touched by anyone or not (pagemap), the
//! page-table pages reachable from CR3, the kernel image by its section
//! symbols, and frames the tables map. Written as SVG, and as PNG where
//! `rsvg-convert` or ImageMagick's `convert` is installed.
//!
//! Owners the guest's memory-manager descriptor tells (free blocks by
//! order, slab, vmalloc, user pages, reserved) are further [`FrameClass`]
//! variants painted as further layers with [`PhysMap::paint`]: a class
//! paints over any class of lower [`FrameClass::priority`].

use super::stage2::{pagemap, Slot};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a guest frame is, as far as the host can tell: first what the host
/// sees on its own (RAM, mapped, untouched, kernel image by its symbols,
/// page tables reachable from CR3), then, where the guest publishes its
/// descriptor, the owner its page descriptors name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrameClass {
    /// RAM the host backed but that the tables do not map.
    Ram,
    /// RAM mapped by some leaf of CR3 (data, as far as the host knows).
    Mapped,
    /// RAM the buddy allocator never managed (memblock reservations:
    /// first MiB, vmemmap, boot tables), from the descriptors.
    Reserved,
    /// RAM the host never backed: nobody has touched it (pagemap); with
    /// the descriptor, also RAM whose init is deferred.
    Untouched,
    /// Allocated with no owner recorded.
    Allocated,
    /// Free on a per-CPU list.
    FreePcp,
    /// Free block of order 0-2.
    FreeSmall,
    /// Free block of order 3-6.
    FreeMedium,
    /// Free block of order 7-9.
    FreeLarge,
    /// Free block of the largest order (10, 4 MiB).
    FreeMax,
    /// A slab.
    Slab,
    /// A large kmalloc.
    KmallocLarge,
    /// Backing a vmalloc area.
    Vmalloc,
    /// Anonymous user memory.
    UserAnon,
    /// The page cache (file data: initramfs and tmpfs files).
    PageCache,
    /// Anonymous user memory a process maps with a 2 MiB (PMD) leaf: a
    /// transparent huge page (its 512 frames are `UserAnon` pages to the
    /// buddy; the user page tables tell them apart).
    Thp,
    /// A 2 MiB page of the hugetlb pool.
    HugeTlb,
    /// A user page in the swap cache (written to swap, or read back from
    /// it, and still named by a slot).
    SwapCache,
    /// The kernel's writable data and bss.
    KernelData,
    /// The kernel's read-only data.
    KernelRodata,
    /// The kernel's text.
    KernelText,
    /// A page-table page reachable from CR3.
    PageTable,
}

impl FrameClass {
    /// Every class, by priority.
    pub const ALL: [FrameClass; 22] = [
        FrameClass::Ram,
        FrameClass::Mapped,
        FrameClass::Reserved,
        FrameClass::Untouched,
        FrameClass::Allocated,
        FrameClass::FreePcp,
        FrameClass::FreeSmall,
        FrameClass::FreeMedium,
        FrameClass::FreeLarge,
        FrameClass::FreeMax,
        FrameClass::Slab,
        FrameClass::KmallocLarge,
        FrameClass::Vmalloc,
        FrameClass::UserAnon,
        FrameClass::PageCache,
        FrameClass::Thp,
        FrameClass::HugeTlb,
        FrameClass::SwapCache,
        FrameClass::KernelData,
        FrameClass::KernelRodata,
        FrameClass::KernelText,
        FrameClass::PageTable,
    ];

    /// Higher paints over lower.
    pub fn priority(self) -> u8 {
        self as u8
    }

    /// The class of a free block of `order`.
    pub fn free(order: u8) -> Self {
        match order {
            0..=2 => FrameClass::FreeSmall,
            3..=6 => FrameClass::FreeMedium,
            7..=9 => FrameClass::FreeLarge,
            _ => FrameClass::FreeMax,
        }
    }

    /// Fill colour.
    pub fn colour(self) -> &'static str {
        match self {
            FrameClass::Ram => "#9e9e9e",
            FrameClass::Mapped => "#9ecae1",
            FrameClass::Reserved => "#636363",
            FrameClass::Untouched => "#f2f2f2",
            FrameClass::Allocated => "#a6761d",
            FrameClass::FreePcp => "#efedf5",
            FrameClass::FreeSmall => "#dadaeb",
            FrameClass::FreeMedium => "#bcbddc",
            FrameClass::FreeLarge => "#9e9ac8",
            FrameClass::FreeMax => "#756bb1",
            FrameClass::Slab => "#e7298a",
            FrameClass::KmallocLarge => "#f781bf",
            FrameClass::Vmalloc => "#1f78b4",
            FrameClass::UserAnon => "#ffd92f",
            FrameClass::PageCache => "#66c2a5",
            FrameClass::Thp => "#ff7f00",
            FrameClass::HugeTlb => "#e6ab02",
            FrameClass::SwapCache => "#e41a1c",
            FrameClass::KernelData => "#fdae6b",
            FrameClass::KernelRodata => "#fdd0a2",
            FrameClass::KernelText => "#d94801",
            FrameClass::PageTable => "#238b45",
        }
    }

    /// Legend text.
    pub fn label(self) -> &'static str {
        match self {
            FrameClass::Ram => "RAM (touched, not mapped by CR3)",
            FrameClass::Mapped => "mapped by CR3 (data)",
            FrameClass::Reserved => "reserved (never buddy-managed)",
            FrameClass::Untouched => "untouched (host never backed it; deferred)",
            FrameClass::Allocated => "allocated, no owner recorded",
            FrameClass::FreePcp => "free, per-CPU lists",
            FrameClass::FreeSmall => "free, order 0-2",
            FrameClass::FreeMedium => "free, order 3-6",
            FrameClass::FreeLarge => "free, order 7-9",
            FrameClass::FreeMax => "free, order 10 (4 MiB)",
            FrameClass::Slab => "slab",
            FrameClass::KmallocLarge => "kmalloc-large",
            FrameClass::Vmalloc => "vmalloc backing",
            FrameClass::UserAnon => "user anonymous",
            FrameClass::PageCache => "page cache (file data)",
            FrameClass::Thp => "transparent huge pages (anon, PMD-mapped)",
            FrameClass::HugeTlb => "hugetlb pools (2 MiB and 1 GiB pages)",
            FrameClass::SwapCache => "swap cache",
            FrameClass::KernelData => "kernel data/bss",
            FrameClass::KernelRodata => "kernel rodata",
            FrameClass::KernelText => "kernel text",
            FrameClass::PageTable => "page tables (from CR3)",
        }
    }
}

/// One class per guest frame of each memslot.
pub struct PhysMap {
    slots: Vec<Slot>,
    frames: Vec<Vec<FrameClass>>,
    /// The guest's pageblock migratetypes (one byte per 2 MiB from the
    /// pfn given), drawn as a band under each row when set.
    pageblocks: Option<(Vec<u8>, u64)>,
    /// The NUMA nodes' memory ranges `[start, end)` with their node, from
    /// the SRAT; empty without `--numa` (nothing drawn or counted per
    /// node then).
    nodes: Vec<(u64, u64, u8)>,
}

/// Outline colours of the NUMA node bands, by node (cycled).
const NODE_COLOURS: [&str; 4] = ["#08519c", "#a50f15", "#006d2c", "#54278f"];

/// One NUMA node's frames in the `physmap` view.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeFrames {
    /// The node.
    pub node: u8,
    /// Frames its SRAT ranges cover.
    pub srat_frames: u64,
    /// Frames per class in its ranges.
    pub frames: BTreeMap<FrameClass, u64>,
}

/// Colours and labels of the pageblock band, by `MigrateType as u8`.
const PAGEBLOCK_BAND: [(&str, &str); 3] =
    [("#d62728", "pageblock unmovable"), ("#2ca02c", "pageblock movable"), ("#17becf", "pageblock reclaimable")];

impl PhysMap {
    /// All RAM as [`FrameClass::Ram`].
    pub fn new(slots: &[Slot]) -> Self {
        PhysMap {
            slots: slots.to_vec(),
            frames: slots.iter().map(|s| vec![FrameClass::Ram; (s.size / 4096) as usize]).collect(),
            pageblocks: None,
            nodes: Vec::new(),
        }
    }

    /// Sets the NUMA nodes' ranges (`[start, end)`, node), from the SRAT:
    /// each row's left margin is then banded by node, and
    /// [`PhysMap::node_counts`] counts per node.
    pub fn set_nodes(&mut self, ranges: Vec<(u64, u64, u8)>) {
        self.nodes = ranges;
    }

    /// The node whose SRAT range holds `gpa`.
    fn node_at(&self, gpa: u64) -> Option<u8> {
        self.nodes.iter().find(|(s, e, _)| gpa >= *s && gpa < *e).map(|r| r.2)
    }

    /// Frames per class in each node's ranges, nodes in order; empty
    /// without nodes. A frame outside every range counts in no node.
    pub fn node_counts(&self) -> Vec<NodeFrames> {
        let mut ids: Vec<u8> = self.nodes.iter().map(|r| r.2).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut out: Vec<NodeFrames> = ids
            .iter()
            .map(|&node| NodeFrames {
                node,
                srat_frames: self.nodes.iter().filter(|r| r.2 == node).map(|r| (r.1 - r.0) / 4096).sum(),
                frames: BTreeMap::new(),
            })
            .collect();
        for (s, f) in self.slots.iter().zip(&self.frames) {
            for &(lo, hi, node) in &self.nodes {
                let (lo, hi) = (lo.max(s.gpa), hi.min(s.gpa + s.size));
                if lo >= hi {
                    continue;
                }
                let Some(v) = out.iter_mut().find(|v| v.node == node) else { continue };
                for c in &f[((lo - s.gpa) / 4096) as usize..((hi - s.gpa) / 4096) as usize] {
                    *v.frames.entry(*c).or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// Draws the guest's pageblock migratetypes (`types`, one byte per
    /// 2 MiB pageblock from pfn `base`) as a band under each row.
    pub fn set_pageblocks(&mut self, types: Vec<u8>, base: u64) {
        self.pageblocks = (!types.is_empty()).then_some((types, base));
    }

    /// The pageblock band's colour index at guest-physical `gpa`.
    fn pageblock_at(&self, gpa: u64) -> Option<usize> {
        let (types, base) = self.pageblocks.as_ref()?;
        let i = ((gpa >> 12).checked_sub(*base)? >> 9) as usize;
        types.get(i).map(|&t| (t as usize).min(PAGEBLOCK_BAND.len() - 1))
    }

    /// Paints `[start, end)` (guest-physical) with `class` where it outranks
    /// what is there; parts outside RAM are ignored.
    pub fn paint(&mut self, start: u64, end: u64, class: FrameClass) {
        for (s, f) in self.slots.iter().zip(self.frames.iter_mut()) {
            let lo = start.max(s.gpa);
            let hi = end.min(s.gpa + s.size);
            if lo >= hi {
                continue;
            }
            for c in &mut f[((lo - s.gpa) / 4096) as usize..((hi - s.gpa).div_ceil(4096)) as usize] {
                if class.priority() > c.priority() {
                    *c = class;
                }
            }
        }
    }

    /// Paints the frames pagemap says the host never backed.
    pub fn paint_untouched(&mut self) -> Result<(), String> {
        for i in 0..self.slots.len() {
            let s = self.slots[i];
            // Chunks keep the buffer small on big guests.
            let chunk = 1 << 16;
            let n = (s.size / 4096) as usize;
            let mut page = 0;
            while page < n {
                let count = chunk.min(n - page);
                let entries = pagemap(s.hva + page as u64 * 4096, count)?;
                for (j, e) in entries.iter().enumerate() {
                    if !e.present {
                        let a = s.gpa + (page + j) as u64 * 4096;
                        self.paint(a, a + 4096, FrameClass::Untouched);
                    }
                }
                page += count;
            }
        }
        Ok(())
    }

    /// Frames per class.
    pub fn counts(&self) -> BTreeMap<FrameClass, u64> {
        let mut m = BTreeMap::new();
        for f in self.frames.iter().flatten() {
            *m.entry(*f).or_insert(0) += 1;
        }
        m
    }

    /// Each memslot with its frames' classes, in slot order.
    pub fn slot_frames(&self) -> impl Iterator<Item = (&Slot, &[FrameClass])> {
        self.slots.iter().zip(self.frames.iter().map(Vec::as_slice))
    }

    /// The class of the frame at `gpa`.
    pub fn class_of(&self, gpa: u64) -> Option<FrameClass> {
        self.slots
            .iter()
            .zip(&self.frames)
            .find(|(s, _)| gpa >= s.gpa && gpa - s.gpa < s.size)
            .map(|(s, f)| f[((gpa - s.gpa) / 4096) as usize])
    }

    /// The SVG: one band per memslot, holes between them as labelled gaps.
    pub fn svg(&self, title: &str) -> String {
        const COLS: u64 = 1024;
        const ROW_H: u64 = 4;
        const LEFT: u64 = 150;
        let total: u64 = self.frames.iter().map(|f| f.len() as u64).sum();
        // Keep the picture under ~1024 rows: several frames per pixel on big
        // guests, the highest-priority class shown.
        let mut per_px = 1u64;
        while total / (per_px * COLS) > 1024 {
            per_px *= 2;
        }
        // The legend first, so a reader knows the colours before the
        // bands, in two columns (the longest labels overlap in three);
        // each band's runs carry a hover title.
        let counts = self.counts();
        let mut legend = String::new();
        let cols = 2u64;
        let col_w = (COLS + LEFT) / cols;
        for (i, c) in FrameClass::ALL.iter().enumerate() {
            let (col, row) = (i as u64 % cols, i as u64 / cols);
            let (lx, ly) = (4 + col * col_w, 44 + row * 16);
            let n = counts.get(c).copied().unwrap_or(0);
            let _ = writeln!(
                legend,
                r##"<rect x="{lx}" y="{ly}" width="12" height="12" fill="{}" stroke="#333"><title>{}</title></rect><text x="{}" y="{}" font-size="12">{} — {n} frames ({})</text>"##,
                c.colour(),
                c.label(),
                lx + 18,
                ly + 10,
                c.label(),
                crate::memory::human(n * 4096)
            );
        }
        let mut entries = FrameClass::ALL.len() as u64;
        if self.pageblocks.is_some() {
            for (colour, label) in PAGEBLOCK_BAND {
                let (col, row) = (entries % cols, entries / cols);
                let (lx, ly) = (4 + col * col_w, 44 + row * 16);
                let _ = writeln!(
                    legend,
                    r##"<rect x="{lx}" y="{}" width="12" height="4" fill="{colour}"/><text x="{}" y="{}" font-size="12">{label} (the band under each row)</text>"##,
                    ly + 4,
                    lx + 18,
                    ly + 10
                );
                entries += 1;
            }
        }
        let mut node_ids: Vec<u8> = self.nodes.iter().map(|r| r.2).collect();
        node_ids.sort_unstable();
        node_ids.dedup();
        for n in &node_ids {
            let (col, row) = (entries % cols, entries / cols);
            let (lx, ly) = (4 + col * col_w, 44 + row * 16);
            let frames: u64 = self.nodes.iter().filter(|r| r.2 == *n).map(|r| (r.1 - r.0) / 4096).sum();
            let _ = writeln!(
                legend,
                r##"<rect x="{lx}" y="{ly}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="12">NUMA node {n} — {frames} frames ({}) (the bar left of each row)</text>"##,
                NODE_COLOURS[usize::from(*n) % NODE_COLOURS.len()],
                lx + 18,
                ly + 10,
                crate::memory::human(frames * 4096)
            );
            entries += 1;
        }
        let legend_rows = entries.div_ceil(cols);
        let mut body = String::new();
        let mut y = 44 + legend_rows * 16 + 12;
        let mut prev_end = 0u64;
        for (s, f) in self.slots.iter().zip(&self.frames) {
            if s.gpa > prev_end {
                let _ = writeln!(
                    body,
                    r##"<text x="4" y="{}" font-size="11" fill="#555">hole {:#x}-{:#x} ({})</text>"##,
                    y + 11,
                    prev_end,
                    s.gpa - 1,
                    crate::memory::human(s.gpa - prev_end)
                );
                y += 18;
            }
            prev_end = s.gpa + s.size;
            let px: Vec<FrameClass> = f
                .chunks(per_px as usize)
                .map(|c| c.iter().copied().max_by_key(|c| c.priority()).unwrap_or(FrameClass::Ram))
                .collect();
            let mut prev_node = None;
            for (row, cells) in px.chunks(COLS as usize).enumerate() {
                let row_gpa = s.gpa + row as u64 * COLS * per_px * 4096;
                if let Some(n) = self.node_at(row_gpa) {
                    // The node band: a bar left of the row (nodes are
                    // 4 MiB aligned, so a row of 4 MiB or less lies in
                    // one), labelled where a node starts.
                    let colour = NODE_COLOURS[usize::from(n) % NODE_COLOURS.len()];
                    let _ = writeln!(
                        body,
                        r#"<rect x="{}" y="{y}" width="6" height="{ROW_H}" fill="{colour}"><title>NUMA node {n}</title></rect>"#,
                        LEFT - 10
                    );
                    if prev_node != Some(n) {
                        let _ = writeln!(
                            body,
                            r#"<text x="{}" y="{}" font-size="10" font-weight="bold" fill="{colour}" text-anchor="end">node {n}</text>"#,
                            LEFT - 12,
                            y + ROW_H + 8
                        );
                    }
                    prev_node = Some(n);
                }
                if row % 16 == 0 {
                    let _ = writeln!(
                        body,
                        r##"<text x="4" y="{}" font-size="9" font-family="monospace">{row_gpa:#011x}</text>"##,
                        y + ROW_H
                    );
                }
                let mut x = 0usize;
                while x < cells.len() {
                    let c = cells[x];
                    let run = cells[x..].iter().take_while(|&&d| d == c).count();
                    let start = row_gpa + x as u64 * per_px * 4096;
                    let end = start + run as u64 * per_px * 4096;
                    let _ = writeln!(
                        body,
                        r#"<rect x="{}" y="{y}" width="{run}" height="{ROW_H}" fill="{}"><title>{start:#x}-{:#x}: {}</title></rect>"#,
                        LEFT + x as u64,
                        c.colour(),
                        end - 1,
                        c.label()
                    );
                    x += run;
                }
                y += ROW_H;
                if self.pageblocks.is_some() {
                    // The pageblock band: one strip per run of pageblocks
                    // of one migratetype.
                    let px_gpa = |x: usize| row_gpa + x as u64 * per_px * 4096;
                    let mut x = 0usize;
                    while x < cells.len() {
                        let t = self.pageblock_at(px_gpa(x));
                        let run = (x..cells.len()).take_while(|&d| self.pageblock_at(px_gpa(d)) == t).count();
                        if let Some(t) = t {
                            let _ = writeln!(
                                body,
                                r#"<rect x="{}" y="{y}" width="{run}" height="2" fill="{}"><title>{:#x}-{:#x}: {}</title></rect>"#,
                                LEFT + x as u64,
                                PAGEBLOCK_BAND[t].0,
                                px_gpa(x),
                                px_gpa(x + run) - 1,
                                PAGEBLOCK_BAND[t].1
                            );
                        }
                        x += run;
                    }
                    y += 3;
                }
            }
            y += 6;
        }
        let height = y + 10;
        let width = LEFT + COLS + 10;
        format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="4" y="16" font-size="14">{}</text>
<text x="4" y="32" font-size="11" fill="#555">guest-physical memory, scale: 1 pixel = {} KiB, 1 row = {}; a pixel shows its highest-ranked owner, so a single page table or text page stays visible; hover for addresses</text>
{legend}{body}</svg>
"##,
            xml_escape(title),
            per_px * 4,
            crate::memory::human(COLS * per_px * 4096)
        )
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The `physmap` view's result.
#[derive(Debug, Clone, Serialize)]
pub struct PhysmapReport {
    /// The SVG written.
    pub svg: PathBuf,
    /// The PNG written, if a converter is installed.
    pub png: Option<PathBuf>,
    /// Why there is no PNG.
    pub png_note: Option<String>,
    /// Frames per class.
    pub frames: BTreeMap<FrameClass, u64>,
    /// Frames per class in each NUMA node's SRAT ranges (absent for a
    /// guest without `--numa`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeFrames>,
}

impl PhysmapReport {
    /// Where the files went and the counts.
    pub fn render(&self) -> String {
        let mut s = format!("physmap: wrote {}", self.svg.display());
        if let Some(p) = &self.png {
            let _ = write!(s, " and {}", p.display());
        }
        if let Some(n) = &self.png_note {
            let _ = write!(s, " (no PNG: {n})");
        }
        s.push('\n');
        for (c, n) in &self.frames {
            let _ = writeln!(s, "  {:<44} {n:>8} frames", c.label());
        }
        for v in &self.nodes {
            let _ = writeln!(
                s,
                "node {}: {} frames in its SRAT ranges ({})",
                v.node,
                v.srat_frames,
                crate::memory::human(v.srat_frames * 4096)
            );
            for (c, n) in &v.frames {
                let _ = writeln!(s, "  {:<44} {n:>8} frames", c.label());
            }
        }
        s
    }
}

/// A file-name-safe form of a checkpoint name.
pub fn file_stem(checkpoint: &str) -> String {
    let s: String =
        checkpoint.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("physmap-{s}")
}

/// Converts `svg` to PNG with whatever converter is installed.
pub fn to_png(svg: &Path) -> Result<PathBuf, String> {
    let png = svg.with_extension("png");
    let attempts: [(&str, Vec<&std::ffi::OsStr>); 2] = [
        ("rsvg-convert", vec!["-o".as_ref(), png.as_os_str(), svg.as_os_str()]),
        ("convert", vec![svg.as_os_str(), png.as_os_str()]),
    ];
    let mut tried = Vec::new();
    for (tool, args) in attempts {
        match std::process::Command::new(tool).args(args).output() {
            Ok(o) if o.status.success() && png.exists() => return Ok(png.clone()),
            Ok(o) => tried.push(format!("{tool} failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(_) => tried.push(format!("{tool} is not installed")),
        }
    }
    Err(tried.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_paint_by_priority_and_the_svg_has_a_legend() {
        let slots =
            [Slot { slot: 0, gpa: 0, size: 8 << 20, hva: 0 }, Slot { slot: 1, gpa: 1 << 32, size: 1 << 20, hva: 0 }];
        let mut m = PhysMap::new(&slots);
        m.paint(0, 8 << 20, FrameClass::Mapped);
        m.paint(0x20_0000, 0x20_3000, FrameClass::KernelText);
        m.paint(0x20_1000, 0x20_2000, FrameClass::PageTable);
        m.paint(0x20_0000, 0x20_1000, FrameClass::Mapped);
        m.paint(0xffff_0000, 0x1_0000_2000, FrameClass::KernelData);
        assert_eq!(m.class_of(0x20_0000), Some(FrameClass::KernelText));
        assert_eq!(m.class_of(0x20_1000), Some(FrameClass::PageTable));
        assert_eq!(m.class_of(1 << 32), Some(FrameClass::KernelData), "clipped to RAM");
        assert_eq!(m.class_of(0x9000_0000), None);
        let c = m.counts();
        assert_eq!(c[&FrameClass::KernelText], 2);
        assert_eq!(c[&FrameClass::KernelData], 2);
        let svg = m.svg("test <1>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("test &lt;1&gt;"));
        assert!(svg.contains("hole 0x800000-0xffffffff"), "the hole between slots is labelled");
        assert!(svg.contains(FrameClass::KernelText.colour()));
        assert!(svg.contains("<title>0x200000-0x200fff: kernel text</title>"), "hover titles");
        assert!(svg.find("kernel text —").unwrap() < svg.find("hole 0x800000").unwrap(), "the legend is on top");
        assert_eq!(file_stem("a b/c"), "physmap-a_b_c");
    }

    #[test]
    fn nodes_band_the_rows_and_split_the_counts() {
        let slots = [Slot { slot: 0, gpa: 0, size: 8 << 20, hva: 0 }];
        let mut m = PhysMap::new(&slots);
        assert!(m.node_counts().is_empty(), "no nodes, no counts");
        assert!(!m.svg("t").contains("NUMA node"), "no nodes, no band");
        m.paint(0x3f_f000, 0x40_1000, FrameClass::Slab);
        m.set_nodes(vec![(0, 4 << 20, 0), (4 << 20, 8 << 20, 1)]);
        let c = m.node_counts();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].node, c[0].srat_frames, c[1].srat_frames), (0, 1024, 1024));
        assert_eq!((c[0].frames[&FrameClass::Slab], c[1].frames[&FrameClass::Slab]), (1, 1));
        assert_eq!((c[0].frames[&FrameClass::Ram], c[1].frames[&FrameClass::Ram]), (1023, 1023));
        let svg = m.svg("t");
        assert!(svg.contains("NUMA node 0 —") && svg.contains(">node 1</text>"), "{svg}");
        assert!(svg.contains("<title>NUMA node 1</title>"));
    }
}
