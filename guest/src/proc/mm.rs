//! The `mm_struct` of a process: its own PGD (user half private, kernel
//! half copied from the kernel's root, so kernel mappings are shared), its
//! VMAs (mm-core's `VmaSet`), brk, and RSS/fault counters; and the
//! address-space operations on it: exec-style ELF loading, `dup_mmap`
//! (fork: page tables copied, pages shared copy-on-write), `exit_mmap`,
//! and the mmap/munmap/mprotect/brk system-call bodies.

use super::abi::*;
use super::fault::{pte_alloc, user_pt, PtFrames};
use crate::mm::phys::{clear_page, direct_map, write_frame};
use crate::mm::swap::{SwapState, SWAP};
use crate::mm::{page_alloc, BuddyFrames, PageAlloc, GFP_KERNEL, KERNEL_PT, PAGES};
use crate::sync::{rank, SpinLock};
use mm_core::addr::{PhysAddr, PAGE_SHIFT, PAGE_SIZE};
use mm_core::buddy::PageOwner;
use mm_core::mem::PhysMem;
use mm_core::paging::entry::PTE_ADDR_MASK_MAX as ADDR_MASK;
use mm_core::paging::swap::SwapEntry;
use mm_core::paging::{FrameAllocator, LeafKinds, Level, Pte, PteFlags, Slot};
use mm_core::vma::{VmFlags, Vma, VmaSet};

/// One past the highest user address the kernel hands out.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// The first PGD entry of the kernel half (shared by every process).
pub const KERNEL_PGD_FIRST: usize = 256;
/// One past the user half (the kernel half's first address).
const USER_HALF_END: u64 = 1 << 47;
/// Top of the user stack.
pub const STACK_TOP: u64 = TASK_SIZE;
/// The stack VMA a program starts with.
const STACK_INITIAL: u64 = 16 * 1024;
/// RLIMIT_STACK: how far the stack may grow.
pub const STACK_LIMIT: u64 = 8 << 20;
/// Linux's `stack_guard_gap`: no other mapping may come this close below
/// a growing stack.
pub const STACK_GUARD_GAP: u64 = 256 * PAGE_SIZE;
/// mmap allocates top-down from here (below the stack's room and gap).
const MMAP_BASE: u64 = STACK_TOP - STACK_LIMIT - STACK_GUARD_GAP - (1 << 30);
/// Lowest address mmap hands out (`mmap_min_addr`).
const MMAP_MIN: u64 = 0x10000;
/// `MAP_GROWSDOWN`: the mapping grows down on a fault just below it, as
/// the stack does (`VM_GROWSDOWN`).
const MAP_GROWSDOWN: u64 = 0x100;
/// `MAP_POPULATE`: the pages are faulted in before mmap returns.
const MAP_POPULATE: u64 = 0x8000;
/// `MAP_NONBLOCK`: with MAP_POPULATE, populate nothing (Linux's).
const MAP_NONBLOCK: u64 = 0x1_0000;
/// `MAP_FIXED_NOREPLACE`: exactly at `addr`, or -EEXIST if that range
/// holds a mapping.
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const EEXIST: Errno = -17;

/// A PT_LOAD's `p_flags` (PF_X 1, PF_W 2, PF_R 4) as VMA flags.
fn segment_flags(pf: u32) -> VmFlags {
    let mut flags = VmFlags(0);
    if pf & 4 != 0 {
        flags = flags | VmFlags::READ;
    }
    if pf & 2 != 0 {
        flags = flags | VmFlags::WRITE;
    }
    if pf & 1 != 0 {
        flags = flags | VmFlags::EXEC;
    }
    flags
}

/// The shared zero page and global counters.
pub struct MmGlobals {
    /// Frame of the shared zero page (never freed).
    pub zero_pa: u64,
    /// User data frames allocated since boot (to prove fork copies none).
    pub user_frames_allocated: u64,
}

/// The globals.
pub static MM_GLOBALS: SpinLock<MmGlobals> = SpinLock::new("the process mm globals", rank::STATS);

/// A process's address space (Linux's `mm_struct`).
pub struct MmStruct {
    /// Physical address of the PGD (what CR3 holds).
    pub pgd: u64,
    /// The VMAs.
    pub vmas: VmaSet,
    /// Start of the brk heap (page-aligned end of the program image).
    pub start_brk: u64,
    /// The program break.
    pub brk: u64,
    /// Counters (faults, RSS, page tables...), in the ABI's layout.
    pub stat: MmStat,
    /// Its name for the reverse map and reclaim (mm/swap.rs).
    pub id: mm_core::rmap::MmId,
    /// The process's resource limits (soft, hard) by RLIMIT_* number,
    /// kept with the address space they mostly limit: fork copies them,
    /// execve carries them over (sched.rs `replace_mm`).
    pub rlimits: [(u64, u64); super::mman::RLIM_NLIMITS],
    /// The VMA set's generation the descriptor's VMA table last got
    /// (`u64::MAX`: never published).
    pub vmas_published: u64,
}

/// Why an address-space operation failed, as an errno.
pub type Errno = i64;

fn page_up(a: u64) -> u64 {
    (a + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// Allocates a user data frame (owner `UserAnon`); physical address.
/// Under the running task's policy (exec's segments are its pages).
pub fn alloc_user_frame(p: &mut PageAlloc) -> Option<u64> {
    let pfn = page_alloc::alloc_pages_locked(p, 0, super::mempolicy::task_gfp(GFP_KERNEL)).ok()?;
    let _ = p.buddy.set_owner(pfn, PageOwner::UserAnon);
    crate::mm::memcg::charge(&mut p.buddy, pfn, crate::mm::memcg::ChargeKind::Anon);
    MM_GLOBALS.with(|g| g.user_frames_allocated += 1);
    Some(pfn << PAGE_SHIFT)
}

/// Drops a reference to a user frame (Linux's `put_page`); the zero page
/// is never counted: like Linux's `ZERO_PAGE` it is `Reserved` and keeps
/// the one reference it was allocated with, whoever maps it.
pub fn put_page(p: &mut PageAlloc, zero_pa: u64, pa: u64) {
    if pa == zero_pa {
        return;
    }
    crate::mm::swap::put_user_page(p, pa >> PAGE_SHIFT);
}

/// Takes a reference to a user frame (`get_page`).
pub fn get_page(p: &mut PageAlloc, zero_pa: u64, pa: u64) {
    if pa != zero_pa {
        if let Err(e) = p.buddy.get_page(pa >> PAGE_SHIFT) {
            panic!("get_page({:#x}): {}", pa, e);
        }
    }
}

/// References to a user frame (`page_count`).
pub fn page_count(p: &PageAlloc, pa: u64) -> u32 {
    p.buddy.page(pa >> PAGE_SHIFT).map_or(0, |pg| pg.refcount)
}

/// The leaf flags a VMA's page gets (writable only if `writable`); the
/// leaves of a `MAP_SHARED` VMA carry mm-core's `PTE_MAP_SHARED` so the
/// host can tell them from copy-on-write sharing.
pub fn leaf_flags(flags: VmFlags, writable: bool) -> u64 {
    let mut f = PteFlags::PRESENT.0;
    if flags.contains(VmFlags::SHARED) {
        f |= mm_core::descriptor::PTE_MAP_SHARED.0;
    }
    if flags.0 & VmFlags::PROT_MASK.0 != 0 {
        f |= PteFlags::USER.0;
    }
    if writable {
        f |= PteFlags::RW.0;
    }
    if !flags.contains(VmFlags::EXEC) {
        f |= PteFlags::NX.0;
    }
    f
}

pub(super) fn zero_pa() -> u64 {
    MM_GLOBALS.with(|g| g.zero_pa)
}

impl MmStruct {
    /// An empty address space: a fresh PGD whose kernel half is the
    /// kernel root's (entries 256..511 copied; the lead keeps every one of
    /// them present from boot, so the copies never go stale).
    pub fn new() -> Option<MmStruct> {
        let kroot = KERNEL_PT.with(|m| m.root());
        let pgd = PAGES.with(|p| BuddyFrames(p).allocate_frame())?;
        let mut phys = direct_map();
        for i in KERNEL_PGD_FIRST..512 {
            let e = Slot::new(kroot, i, Level::P4d).read(&phys).ok()?;
            Slot::new(pgd, i, Level::P4d).write(&mut phys, e).ok()?;
        }
        let pgd = pgd.0;
        let stat = MmStat { pt_pages: 1, ..MmStat::default() };
        let id = crate::mm::swap::register_mm(pgd);
        let rlimits = super::mman::default_rlimits();
        Some(MmStruct { pgd, vmas: VmaSet::new(), start_brk: 0, brk: 0, stat, id, rlimits, vmas_published: u64::MAX })
    }

    /// Loads a static ELF executable (Linux's `load_elf_binary`): one VMA
    /// per PT_LOAD segment with its permissions, the file-backed pages
    /// copied in now (a built-in program's image is in the kernel, not in
    /// the page cache to fault them from; exec of a file maps it instead,
    /// [`load_elf_file`](Self::load_elf_file)), the bss
    /// beyond them left to demand paging; then the stack VMA (growing
    /// down) and the brk heap's start. Returns the entry point.
    pub fn load_elf(&mut self, image: &[u8]) -> Result<u64, &'static str> {
        self.load_elf_at(image, 0)
    }

    /// [`load_elf`](Self::load_elf) with every address moved up by
    /// `bias` (a static PIE's load address); the entry point, biased.
    pub fn load_elf_at(&mut self, image: &[u8], bias: u64) -> Result<u64, &'static str> {
        let elf = super::elf::Elf::parse(image)?;
        let mut image_end = 0;
        for mut seg in elf.loads() {
            seg.vaddr = seg.vaddr.checked_add(bias).ok_or("segment outside user space")?;
            let start = seg.vaddr & !(PAGE_SIZE - 1);
            let end = page_up(seg.vaddr + seg.memsz);
            let flags = segment_flags(seg.flags);
            if end > TASK_SIZE || start < MMAP_MIN {
                return Err("segment outside user space");
            }
            self.vmas.insert(Vma::anon(start, end, flags)).map_err(|_| "overlapping segments")?;
            let file_end = seg.vaddr + seg.filesz;
            let data =
                image.get(seg.offset as usize..(seg.offset + seg.filesz) as usize).ok_or("segment outside the file")?;
            let zero = zero_pa();
            let mut va = start;
            while va < file_end {
                let ok = PAGES.with(|p| {
                    let pa = alloc_user_frame(p)?;
                    clear_page(pa);
                    let lo = va.max(seg.vaddr);
                    let hi = (va + PAGE_SIZE).min(file_end);
                    let from = (lo - seg.vaddr) as usize;
                    write_frame(pa, (lo - va) as usize, &data[from..from + (hi - lo) as usize]);
                    let mut phys = direct_map();
                    let (slot, _) = pte_alloc(p, &mut phys, self, va)?;
                    slot.write(&mut phys, Pte(pa | leaf_flags(flags, flags.contains(VmFlags::WRITE)))).ok()?;
                    Some(pa)
                });
                let Some(pa) = ok else {
                    return Err("out of memory");
                };
                // A private copy of the file's page: anon memory for the
                // rmap and the LRU (there is no page cache to drop it to).
                crate::mm::swap::new_anon_page(self.id, &Vma::anon(start, end, flags), va, pa >> PAGE_SHIFT);
                self.stat.rss_pages += 1;
                va += PAGE_SIZE;
            }
            let _ = zero;
            image_end = image_end.max(end);
        }
        self.finish_load(image_end)?;
        Ok(elf.entry + bias)
    }

    /// The stack VMA (growing down) and the brk heap's start above the
    /// image, once its segments are in.
    fn finish_load(&mut self, image_end: u64) -> Result<(), &'static str> {
        let stack =
            Vma::anon(STACK_TOP - STACK_INITIAL, STACK_TOP, VmFlags::READ | VmFlags::WRITE | VmFlags::GROWSDOWN);
        self.vmas.insert(stack).map_err(|_| "stack overlaps the image")?;
        self.start_brk = image_end;
        self.brk = image_end;
        self.stat.brk = image_end;
        Ok(())
    }

    /// Loads static ELF file `ino` of the file system, whose headers
    /// `elf` parsed and checked, at `bias` (Linux's `load_elf_binary` with
    /// `elf_map`/`elf_load`): each PT_LOAD's file part becomes a private
    /// file VMA over the page cache (text and rodata are faulted in from
    /// the cached pages and stay shared with the cache and every other
    /// process running the program; a write to the data segment copies
    /// the page, as any MAP_PRIVATE file mapping), the rest of the
    /// segment (bss) an anonymous VMA; the bytes between the end of the
    /// file part and the end of its page are zeroed (Linux's `padzero`,
    /// a copy-on-write of that one page). Nothing else is read or copied
    /// now. A segment whose address and file offset disagree modulo the
    /// page size cannot be mapped and is copied in instead (Linux
    /// refuses such a file). Returns the entry point.
    pub fn load_elf_file(&mut self, elf: &super::elf::Elf, ino: usize, bias: u64) -> Result<u64, &'static str> {
        let mut image_end = 0;
        for seg in elf.loads() {
            let vaddr = seg.vaddr.checked_add(bias).ok_or("segment outside user space")?;
            let start = vaddr & !(PAGE_SIZE - 1);
            let end = page_up(vaddr.checked_add(seg.memsz).ok_or("segment outside user space")?);
            let flags = segment_flags(seg.flags);
            if end > TASK_SIZE || start < MMAP_MIN {
                return Err("segment outside user space");
            }
            let file_end = vaddr + seg.filesz;
            image_end = image_end.max(end);
            if !(vaddr ^ seg.offset).is_multiple_of(PAGE_SIZE) {
                self.vmas.insert(Vma::anon(start, end, flags)).map_err(|_| "overlapping segments")?;
                self.copy_segment_from_file(ino, &seg, vaddr, start, end, flags)?;
                continue;
            }
            let map_end = if seg.filesz == 0 { start } else { page_up(file_end) };
            if map_end > start {
                let pgoff = (seg.offset - (vaddr - start)) / PAGE_SIZE;
                let vma =
                    Vma { kind: mm_core::vma::VmaKind::File(ino as u32), pgoff, ..Vma::anon(start, map_end, flags) };
                self.vmas.insert(vma).map_err(|_| "overlapping segments")?;
            }
            if end > map_end {
                self.vmas.insert(Vma::anon(map_end, end, flags)).map_err(|_| "overlapping segments")?;
            }
            let pad = (PAGE_SIZE - file_end % PAGE_SIZE) % PAGE_SIZE;
            if seg.memsz > seg.filesz && seg.filesz > 0 && pad > 0 && flags.contains(VmFlags::WRITE) {
                let zeros = [0u8; PAGE_SIZE as usize];
                super::syscall::copy_to_user(self, file_end, &zeros[..pad as usize]).map_err(|_| "out of memory")?;
            }
        }
        self.finish_load(image_end)?;
        Ok(elf.entry + bias)
    }

    /// The fallback of [`load_elf_file`](Self::load_elf_file) for a
    /// segment that cannot be mapped: its file bytes copied into
    /// anonymous pages of `[start, end)` through the page cache.
    fn copy_segment_from_file(
        &mut self,
        ino: usize,
        seg: &super::elf::Segment,
        vaddr: u64,
        start: u64,
        end: u64,
        flags: VmFlags,
    ) -> Result<(), &'static str> {
        let file_end = vaddr + seg.filesz;
        let mut page = alloc::vec![0u8; PAGE_SIZE as usize];
        let mut va = start;
        while va < file_end {
            let lo = va.max(vaddr);
            let hi = (va + PAGE_SIZE).min(file_end);
            let buf = &mut page[(lo - va) as usize..(hi - va) as usize];
            let n = crate::fs::pagecache::read(ino, seg.offset + (lo - vaddr), buf);
            if n != buf.len() {
                return Err("a segment lies past the end of the file");
            }
            let ok = PAGES.with(|p| {
                let pa = alloc_user_frame(p)?;
                clear_page(pa);
                write_frame(pa, (lo - va) as usize, &page[(lo - va) as usize..(hi - va) as usize]);
                let mut phys = direct_map();
                let (slot, _) = pte_alloc(p, &mut phys, self, va)?;
                slot.write(&mut phys, Pte(pa | leaf_flags(flags, flags.contains(VmFlags::WRITE)))).ok()?;
                Some(pa)
            });
            let pa = ok.ok_or("out of memory")?;
            crate::mm::swap::new_anon_page(self.id, &Vma::anon(start, end, flags), va, pa >> PAGE_SHIFT);
            self.stat.rss_pages += 1;
            va += PAGE_SIZE;
        }
        Ok(())
    }

    /// Unmaps the pages of `[start, end)` (the VMAs are the caller's):
    /// frames lose a reference once the TLB has forgotten them (Linux's
    /// `zap_page_range` + `tlb_finish_mmu`): the cleared pages gather in
    /// a fixed batch ([`MmuGather`]); a full batch, and the end, flush the
    /// range gathered on every CPU running this address space, and only
    /// then go back to the allocator. A CPU still holding a translation
    /// can therefore never write into a frame someone else was given.
    pub(super) fn zap(&mut self, s: &mut SwapState, p: &mut PageAlloc, start: u64, end: u64) {
        let mut tlb = MmuGather::new(self.pgd);
        self.zap_into(s, p, &mut tlb, start, end);
        tlb.finish(p);
    }

    /// [`zap`](Self::zap) into the caller's gather, which flushes and
    /// releases when full and at its `finish` (munmap's one gather for
    /// its pages and page tables).
    fn zap_into(&mut self, s: &mut SwapState, p: &mut PageAlloc, tlb: &mut MmuGather, start: u64, end: u64) {
        let zero = zero_pa();
        let mut swapents = 0u64;
        let stat = &mut self.stat;
        let _ = user_pt(self.pgd).for_each_leaf(&mut direct_map(), start..end, LeafKinds::NonNone, |phys, l| {
            let _ = l.slot.write(phys, Pte::NONE);
            if !l.entry.is_present() {
                // A swap entry: its slot count (and the swap cache's page
                // once no one else names the slot). Never in a TLB.
                match SwapEntry::from_pte(l.entry) {
                    Some(e) => s.free_swap_and_cache(p, e.swp()),
                    None => crate::kprintln!("zap: bad swap PTE {:#x} at {:#x}", l.entry.0, l.va.0),
                }
                swapents += 1;
                tlb.cleared(l.va.0, PAGE_SIZE);
                return true;
            }
            if l.slot.level() == Level::Pmd {
                // A transparent huge page (proc/thp.rs).
                let pages = super::thp::huge_pmd_pages(l.entry);
                stat.rss_pages = stat.rss_pages.saturating_sub(pages);
                tlb.remove(p, l.va.0, crate::mm::huge_memory::HPAGE_PMD_SIZE, l.entry, true);
                return true;
            }
            let pa = l.entry.0 & ADDR_MASK;
            if pa != zero {
                stat.rss_pages = stat.rss_pages.saturating_sub(1);
            }
            tlb.remove(p, l.va.0, PAGE_SIZE, l.entry, false);
            true
        });
        if let Some(m) = s.mms.get_mut(&self.id) {
            m.swapents = m.swapents.saturating_sub(swapents);
        }
    }

    /// Linux's `free_pgtables` after `[start, end)` was unmapped (its
    /// VMAs gone, its leaves zapped into `tlb`): the page tables the range
    /// used that no VMA left can use, those lying wholly in the gap
    /// between the VMA below and the VMA above (mm-core's
    /// `free_pgd_range` with Linux's floor and ceiling; never past the
    /// user half, whose kernel-half entries every process shares), leave
    /// the tables and the count now and wait in `tlb` with the pages: its
    /// flush reaches every CPU that may cache them before they are freed
    /// (see [`MmuGather::remove_table`]).
    fn free_pgtables(&mut self, s: &mut SwapState, p: &mut PageAlloc, tlb: &mut MmuGather, start: u64, end: u64) {
        let Some((floor, ceiling)) = self.vmas.gap(start, end) else { return };
        let ceiling = ceiling.unwrap_or(USER_HALF_END).min(USER_HALF_END);
        // Tables reclaim's THP splits added are in the count before any
        // of them can leave it (mm/huge_memory.rs; under the swap lock).
        if let Some(m) = s.mms.get_mut(&self.id) {
            self.stat.pt_pages += core::mem::take(&mut m.pt_pages_in);
        }
        let mut frames = GatherTables { tlb, p, count: &mut self.stat.pt_pages };
        let _ = user_pt(self.pgd).free_pgd_range(&mut direct_map(), &mut frames, start..end, floor..ceiling);
    }

    /// Folds what reclaim did to this address space (pages it swapped
    /// out) into the counters; called wherever they are read.
    pub fn sync_reclaim_counters(&mut self) {
        let (out, swapents) = crate::mm::swap::take_rss_out(self.id);
        self.stat.pt_pages += crate::mm::huge_memory::take_split_tables(self.id);
        self.stat.rss_pages = self.stat.rss_pages.saturating_sub(out);
        self.stat.swap_ents = swapents;
    }

    /// Copies the VMAs into the descriptor's VMA table for the host if
    /// they changed since the last copy (or always, `force`: the THP
    /// mode, which decides eligibility, may have changed).
    pub fn publish_vmas(&mut self, force: bool) {
        let gen = self.vmas.generation();
        if !force && gen == self.vmas_published {
            return;
        }
        use mm_core::descriptor::{vma_kind, VmaDesc, VMA_THP_ELIGIBLE};
        let heap_end = self.brk.next_multiple_of(PAGE_SIZE);
        let descs: alloc::vec::Vec<VmaDesc> = self
            .vmas
            .iter()
            .map(|v| {
                let mut d = VmaDesc {
                    cr3: self.pgd,
                    start: v.start,
                    end: v.end,
                    pgoff: v.pgoff,
                    flags: v.flags.0,
                    ..VmaDesc::default()
                };
                d.kind = match v.kind {
                    mm_core::vma::VmaKind::File(ino) => {
                        d.ino = ino;
                        if let Some(i) = crate::fs::inode(ino as usize) {
                            // The path's tail if it is longer than the field.
                            let p = i.path.as_bytes();
                            let tail = &p[p.len().saturating_sub(d.name.len() - 1)..];
                            d.name[..tail.len()].copy_from_slice(tail);
                        }
                        vma_kind::FILE
                    }
                    _ if v.flags.contains(VmFlags::HUGETLB) => vma_kind::HUGETLB,
                    _ if v.flags.contains(VmFlags::GROWSDOWN) && v.end == STACK_TOP => vma_kind::STACK,
                    _ if self.brk > self.start_brk && v.start >= self.start_brk && v.end <= heap_end => vma_kind::HEAP,
                    _ => vma_kind::ANON,
                };
                // What huge_range asks of a fault, for the VMA as a whole:
                // anonymous, allowed in this mode, and one aligned 2 MiB
                // page fits inside.
                let hp = crate::mm::huge_memory::HPAGE_PMD_SIZE;
                let fits = v.start.next_multiple_of(hp) + hp <= v.end;
                if d.kind != vma_kind::FILE
                    && d.kind != vma_kind::HUGETLB
                    && fits
                    && crate::mm::huge_memory::vma_allows(v.flags)
                {
                    d.attrs |= VMA_THP_ELIGIBLE;
                }
                // The VMA's own NUMA policy, for the host's --verify numa.
                d.attrs |= (v.policy.mode.number() as u32) << mm_core::descriptor::VMA_POLICY_MODE_SHIFT
                    | u32::from(v.policy.nodes) << mm_core::descriptor::VMA_POLICY_NODES_SHIFT;
                d
            })
            .collect();
        crate::mm::descriptor::update_vmas(self.pgd, &descs);
        self.vmas_published = gen;
    }

    /// Linux's `exit_mmap`: every page and page table of the user half,
    /// then the PGD. The caller has moved CR3 off this address space.
    /// It allocates nothing (the VMA set is moved out, not copied): it
    /// runs when memory is exhausted, for the OOM killer's victims.
    pub fn exit_mmap(&mut self) {
        // Gone from the host's VMA table before the PGD that names it is
        // freed (and perhaps reused by another address space).
        crate::mm::descriptor::update_vmas(self.pgd, &[]);
        self.vmas_published = u64::MAX;
        let vmas = core::mem::take(&mut self.vmas);
        for v in vmas.iter().filter(|v| v.flags.contains(VmFlags::HUGETLB)) {
            crate::mm::hugetlb::unmap_hugetlb_vma(self.pgd, self.id, v);
        }
        super::mman::unaccount(vmas.iter());
        SWAP.with(|s| {
            PAGES.with(|p| {
                for v in vmas.iter() {
                    self.zap(s, p, v.start, v.end);
                }
                // No CPU may keep the root loaded lazily once it is freed.
                crate::arch::tlb::leave_root(self.pgd);
                let mut frames = PtFrames { p, count: &mut self.stat.pt_pages };
                let _ = user_pt(self.pgd).free_tables(&mut direct_map(), &mut frames, 0..USER_HALF_END);
                BuddyFrames(p).deallocate_frame(PhysAddr(self.pgd));
            });
            s.unregister_mm(self.id);
        });
        self.stat.pt_pages -= 1;
        self.vmas = VmaSet::new();
    }

    /// Linux's `dup_mmap` + `copy_page_range`: the child gets a copy of the
    /// VMAs and of the page tables, not of the pages. Private writable
    /// pages become read-only in both (copy-on-write) and every shared
    /// frame gains a reference. Returns the child's mm.
    pub fn dup_mmap(&mut self) -> Option<MmStruct> {
        let mut child = MmStruct::new()?;
        // The child's accountable memory is charged anew (Linux's
        // dup_mmap): under overcommit_memory=2 a fork can fail.
        if !super::mman::account(self.vmas.iter()) {
            child.exit_mmap();
            return None;
        }
        child.vmas = self.vmas.clone();
        child.rlimits = self.rlimits;
        child.start_brk = self.start_brk;
        child.brk = self.brk;
        child.stat.brk = self.brk;
        let vmas: alloc::vec::Vec<Vma> = self.vmas.iter().copied().collect();
        let zero = zero_pa();
        let data_before = MM_GLOBALS.with(|g| g.user_frames_allocated);
        let pt_before = child.stat.pt_pages;
        crate::mm::swap::fork_mm(self.id, child.id);
        let mut child_swapents = 0u64;
        let ok = SWAP.with(|s| {
            PAGES.with(|p| {
                let mut ok = true;
                for v in &vmas {
                    if v.flags.contains(VmFlags::HUGETLB) {
                        let (ppgd, cpgd) = (self.pgd, child.pgd);
                        ok &= crate::mm::hugetlb::copy_hugetlb_range(p, ppgd, cpgd, &mut child.stat.pt_pages, v);
                        continue;
                    }
                    let shared = v.flags.contains(VmFlags::SHARED);
                    let (cpt, ctables, crss) =
                        (user_pt(child.pgd), &mut child.stat.pt_pages, &mut child.stat.rss_pages);
                    let range = v.start..v.end;
                    // The child's page table for the last 2 MiB seen: one walk
                    // per table, not per page (Linux's copy_pte_range).
                    let mut cached: Option<(u64, PhysAddr)> = None;
                    let _ = user_pt(self.pgd).for_each_leaf(&mut direct_map(), range, LeafKinds::NonNone, |phys, l| {
                        if l.slot.level() == Level::Pmd {
                            // A transparent huge page: shared through the
                            // child's own PMD (proc/thp.rs).
                            let mut frames = PtFrames { p: &mut *p, count: &mut *ctables };
                            let Ok((cslot, _)) = cpt.alloc_slot(phys, &mut frames, l.va, Level::Pmd, true) else {
                                ok = false;
                                return false;
                            };
                            *crss += super::thp::copy_huge_pmd(p, phys, l.slot, cslot, l.entry, shared);
                            return true;
                        }
                        let cslot = match cached {
                            Some((region, table)) if region == l.va.0 >> 21 => {
                                Slot::new(table, l.va.table_index(Level::Pte), Level::Pte)
                            }
                            _ => {
                                let mut frames = PtFrames { p: &mut *p, count: &mut *ctables };
                                let Ok((slot, _)) = cpt.alloc_slot(phys, &mut frames, l.va, Level::Pte, true) else {
                                    ok = false;
                                    return false;
                                };
                                cached = Some((l.va.0 >> 21, slot.table()));
                                slot
                            }
                        };
                        let mut e = l.entry;
                        if !e.is_present() {
                            // A swap entry: the child names the same slot
                            // (`copy_nonpresent_pte`: one more count).
                            match SwapEntry::from_pte(e).map(|se| s.areas.swap_duplicate(se.swp())) {
                                Some(Ok(())) => {
                                    let _ = cslot.write(phys, e);
                                    child_swapents += 1;
                                }
                                _ => crate::kprintln!("fork: bad swap PTE {:#x} at {:#x}", e.0, l.va.0),
                            }
                            return true;
                        }
                        if !shared && e.is_writable() {
                            e = e.without(PteFlags::RW);
                            let _ = l.slot.write(phys, e);
                        }
                        let pa = e.0 & ADDR_MASK;
                        get_page(p, zero, pa);
                        if pa != zero {
                            *crss += 1;
                        }
                        let _ = cslot.write(phys, e);
                        true
                    });
                }
                if let Some(m) = s.mms.get_mut(&child.id) {
                    m.swapents = child_swapents;
                }
                ok
            })
        });
        // The parent's writable PTEs just lost RW: every CPU running it (its
        // other threads) must forget them, or a thread's write through a
        // stale writable entry would land in the frame the child shares.
        crate::arch::tlb::flush_range(self.pgd, 0, crate::arch::tlb::ALL);
        child.stat.fork_pt_pages = child.stat.pt_pages - pt_before + 1;
        child.stat.fork_copied_pages = MM_GLOBALS.with(|g| g.user_frames_allocated) - data_before;
        if !ok {
            child.exit_mmap();
            return None;
        }
        Some(child)
    }

    /// The range a new mapping of `len` bytes can take, top-down from
    /// the mmap base (Linux's `arch_get_unmapped_area_topdown`).
    pub(super) fn unmapped_area(&self, len: u64) -> Option<u64> {
        let mut end = MMAP_BASE;
        loop {
            let start = end.checked_sub(len)?;
            if start < MMAP_MIN {
                return None;
            }
            match self.vmas.find_intersection(start, end) {
                None => return Some(start),
                Some(v) => end = v.start,
            }
        }
    }

    /// Linux's `get_unmapped_area` without a hint for a new mapping of
    /// `len` bytes with `flags` (an anonymous one if `anon`): 2 MiB-aligned
    /// where [`aligns_unmapped_area`](crate::mm::huge_memory::aligns_unmapped_area)
    /// says so (mmap, and mremap's move), else plain top-down.
    pub(super) fn get_unmapped_area(&self, len: u64, flags: VmFlags, anon: bool) -> Option<u64> {
        if crate::mm::huge_memory::aligns_unmapped_area(len, flags, anon) {
            self.thp_unmapped_area(len)
        } else {
            self.unmapped_area(len)
        }
    }

    /// Linux's `thp_get_unmapped_area_vmflags` / `__thp_get_unmapped_area`
    /// (mm/huge_memory.c, top-down): the highest range that holds `len`
    /// plus one huge page, its start rounded up to 2 MiB (an already
    /// aligned start takes the top of the padding, as Linux does under
    /// `MMF_TOPDOWN` to stay next to the mapping above); without room for
    /// the padding, the plain search.
    fn thp_unmapped_area(&self, len: u64) -> Option<u64> {
        const HPAGE: u64 = crate::mm::huge_memory::HPAGE_PMD_SIZE;
        match len.checked_add(HPAGE).and_then(|padded| self.unmapped_area(padded)) {
            Some(ret) if ret.is_multiple_of(HPAGE) => Some(ret + HPAGE),
            Some(ret) => Some(ret.next_multiple_of(HPAGE)),
            None => self.unmapped_area(len),
        }
    }

    /// [`unmapped_area`](Self::unmapped_area) for a mapping whose start
    /// must be `align`-aligned (hugetlb: 2 MiB).
    pub fn unmapped_area_aligned(&self, len: u64, align: u64) -> Option<u64> {
        let mut end = MMAP_BASE;
        loop {
            let start = end.checked_sub(len)? & !(align - 1);
            if start < MMAP_MIN {
                return None;
            }
            match self.vmas.find_intersection(start, start + len) {
                None => return Some(start),
                Some(v) => end = v.start,
            }
        }
    }

    /// `munmap`: the VMAs first, then their pages.
    pub fn munmap(&mut self, start: u64, len: u64) -> Result<(), Errno> {
        let end = start.checked_add(page_up(len)).ok_or(-EINVAL)?;
        if !start.is_multiple_of(PAGE_SIZE) || len == 0 || end > TASK_SIZE {
            return Err(-EINVAL);
        }
        if !crate::mm::hugetlb::unmap_allowed(&self.vmas, start, end) {
            return Err(-EINVAL);
        }
        if !super::thp::split_huge_pmd_edges(self, start, end) {
            return Err(-ENOMEM);
        }
        let removed = self.vmas.munmap(start, end).map_err(|_| -EINVAL)?;
        for v in removed.iter().filter(|v| v.flags.contains(VmFlags::HUGETLB)) {
            crate::mm::hugetlb::unmap_hugetlb_vma(self.pgd, self.id, v);
        }
        super::mman::unaccount(removed.iter());
        SWAP.with(|s| {
            PAGES.with(|p| {
                // One gather for the whole unmap (Linux's unmap_region):
                // the pages, then the page tables no VMA left can use,
                // then one flush before any of them is freed.
                let mut tlb = MmuGather::new(self.pgd);
                for v in &removed {
                    self.zap_into(s, p, &mut tlb, v.start, v.end);
                }
                if let (Some(first), Some(last)) = (removed.first(), removed.last()) {
                    self.free_pgtables(s, p, &mut tlb, first.start, last.end);
                }
                tlb.finish(p);
            });
            s.rmap.unlink_anon_vmas(self.id, start, end);
        });
        Ok(())
    }

    /// The page tables of the unmapped `[start, end)` that no VMA left
    /// can use, freed after a flush (mremap's old range, whose entries
    /// moved away: Linux frees them in the munmap of the old range).
    pub(super) fn free_unused_tables(&mut self, start: u64, end: u64) {
        SWAP.with(|s| {
            PAGES.with(|p| {
                let mut tlb = MmuGather::new(self.pgd);
                self.free_pgtables(s, p, &mut tlb, start, end);
                tlb.finish(p);
            })
        });
    }

    /// `mmap` of anonymous memory. Private mappings only reserve: pages
    /// come on first touch. Shared anonymous mappings are populated now:
    /// without a shmem object to find a page by offset later, a page must
    /// exist before fork for both processes to share it.
    pub fn mmap(&mut self, addr: u64, len: u64, prot: u64, flags: u64) -> Result<u64, Errno> {
        if flags & MAP_ANONYMOUS == 0 {
            return Err(-EINVAL);
        }
        self.mmap_region(addr, len, prot, flags, mm_core::vma::VmaKind::Anon, 0)
    }

    /// `mmap` of file `ino` from page `pgoff` on: a file VMA whose pages
    /// the fault path takes from the page cache (proc/fault.rs
    /// `filemap_fault`); nothing is mapped now.
    pub fn mmap_file(
        &mut self,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        ino: u32,
        pgoff: u64,
    ) -> Result<u64, Errno> {
        self.mmap_region(addr, len, prot, flags & !MAP_ANONYMOUS, mm_core::vma::VmaKind::File(ino), pgoff)
    }

    fn mmap_region(
        &mut self,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        kind: mm_core::vma::VmaKind,
        pgoff: u64,
    ) -> Result<u64, Errno> {
        let file = matches!(kind, mm_core::vma::VmaKind::File(_));
        if len == 0 || prot & !7 != 0 {
            return Err(-EINVAL);
        }
        let shared = flags & MAP_SHARED != 0;
        if shared == (flags & MAP_PRIVATE != 0) {
            return Err(-EINVAL);
        }
        if flags & crate::mm::hugetlb::MAP_HUGETLB != 0 {
            return crate::mm::hugetlb::mmap_hugetlb(self, addr, len, prot, flags);
        }
        let len = page_up(len);
        let mut vflags = VmFlags(prot as u32);
        if shared {
            vflags = vflags | VmFlags::SHARED;
        }
        if flags & MAP_GROWSDOWN != 0 {
            // Linux's do_mmap: a shared mapping cannot grow.
            if shared {
                return Err(-EINVAL);
            }
            vflags = vflags | VmFlags::GROWSDOWN;
        }
        // MAP_FIXED_NOREPLACE places as MAP_FIXED but fails with -EEXIST
        // where MAP_FIXED would replace (checked after the alignment, as
        // Linux's do_mmap, before anything is charged).
        let noreplace = flags & MAP_FIXED_NOREPLACE != 0;
        if noreplace
            && addr.is_multiple_of(PAGE_SIZE)
            && addr.checked_add(len).is_some_and(|e| e <= TASK_SIZE)
            && self.vmas.find_intersection(addr, addr + len).is_some()
        {
            return Err(EEXIST);
        }
        // RLIMIT_AS and the overcommit charge, before anything changes
        // (a MAP_FIXED over mapped memory replaces it: that part is not
        // new address space).
        let fixed = flags & MAP_FIXED != 0 || noreplace;
        let replaced = if fixed { self.mapped_bytes(addr, addr.saturating_add(len)) } else { 0 };
        self.may_expand_vm(len - replaced)?;
        if super::mman::accountable(flags, prot) {
            if !crate::mm::overcommit::vm_enough_memory(len / PAGE_SIZE) {
                return Err(-ENOMEM);
            }
            vflags = vflags | super::mman::VM_ACCOUNT;
        }
        let uncharge = |e: Errno| {
            if vflags.contains(super::mman::VM_ACCOUNT) {
                crate::mm::overcommit::vm_unacct_memory(len / PAGE_SIZE);
            }
            e
        };
        let start = if fixed {
            if !addr.is_multiple_of(PAGE_SIZE) || addr < MMAP_MIN || addr.checked_add(len).is_none_or(|e| e > TASK_SIZE)
            {
                return Err(uncharge(-EINVAL));
            }
            self.munmap(addr, len).map_err(uncharge)?;
            addr
        } else if addr != 0
            && addr.is_multiple_of(PAGE_SIZE)
            && addr >= MMAP_MIN
            && addr + len <= TASK_SIZE
            && self.vmas.find_intersection(addr, addr + len).is_none()
        {
            addr
        } else {
            // No usable hint. A hint that was given but is not free is
            // not replaced by a 2 MiB-aligned place (Linux since 6.13
            // aligns for THP only when no hint was given).
            let anon_no_hint = kind == mm_core::vma::VmaKind::Anon && addr == 0;
            self.get_unmapped_area(len, vflags, anon_no_hint).ok_or(-ENOMEM).map_err(uncharge)?
        };
        let vma = if file {
            Vma { kind, pgoff, ..Vma::anon(start, start + len, vflags) }
        } else {
            Vma::anon(start, start + len, vflags)
        };
        self.vmas.insert(vma).map_err(|_| uncharge(-ENOMEM))?;
        if shared && !file {
            for va in (start..start + len).step_by(PAGE_SIZE as usize) {
                if super::fault::do_anonymous_page(self, va, vflags).is_err() {
                    let _ = self.munmap(start, len);
                    return Err(-ENOMEM);
                }
            }
        } else if flags & (MAP_POPULATE | MAP_NONBLOCK) == MAP_POPULATE {
            self.populate(start, start + len, vflags);
        }
        Ok(start)
    }

    /// Linux's `mm_populate` for a new mapping: faults in every page of
    /// `start..end` as `get_user_pages` does (a write fault where the
    /// mapping is private and writable, so no copy-on-write fault is left
    /// for later; a read fault otherwise), counted as the caller's faults
    /// as Linux counts them. It stops at the first page that cannot be
    /// had (past a file's end, no memory): mmap succeeds regardless.
    fn populate(&mut self, start: u64, end: u64, vflags: VmFlags) {
        if vflags.0 & VmFlags::PROT_MASK.0 == 0 {
            return;
        }
        let write = vflags.contains(VmFlags::WRITE) && !vflags.contains(VmFlags::SHARED);
        for va in (start..end).step_by(PAGE_SIZE as usize) {
            if super::fault::user_page(self, va, write).is_err() {
                break;
            }
        }
    }

    /// `mprotect`: the VMAs' protection, then the PTEs of resident pages.
    /// Write permission is granted to a PTE only where no copy-on-write is
    /// pending (a shared mapping, or a frame this process alone uses);
    /// elsewhere the next write fault decides. PROT_NONE keeps the frame
    /// but clears the user bit, so any user access faults.
    pub fn mprotect(&mut self, start: u64, len: u64, prot: u64) -> Result<(), Errno> {
        let end = start.checked_add(page_up(len)).ok_or(-EINVAL)?;
        if !start.is_multiple_of(PAGE_SIZE) || prot & !7 != 0 || end > TASK_SIZE {
            return Err(-EINVAL);
        }
        if len == 0 {
            return Ok(());
        }
        if !crate::mm::hugetlb::unmap_allowed(&self.vmas, start, end) {
            return Err(-EINVAL);
        }
        if !super::thp::split_huge_pmd_edges(self, start, end) {
            return Err(-ENOMEM);
        }
        self.vmas.mprotect(start, end, VmFlags(prot as u32)).map_err(|_| -ENOMEM)?;
        let vmas: alloc::vec::Vec<Vma> = self.vmas.iter().filter(|v| v.end > start && v.start < end).copied().collect();
        let zero = zero_pa();
        PAGES.with(|p| {
            for v in &vmas {
                let shared = v.flags.contains(VmFlags::SHARED);
                let range = v.start.max(start)..v.end.min(end);
                let _ = user_pt(self.pgd).for_each_leaf(&mut direct_map(), range, LeafKinds::Present, |phys, l| {
                    let pa = l.entry.0 & ADDR_MASK;
                    let huge = l.slot.level() != mm_core::paging::Level::Pte;
                    // A hugetlb page is counted on its first frame, with the
                    // pool's reference (mm/hugetlb.rs); a transparent huge
                    // page on each of its 512 frames (proc/thp.rs).
                    let sole = pa != zero
                        && !crate::mm::huge_memory::is_huge_zero(pa)
                        && (shared
                            || if v.flags.contains(VmFlags::HUGETLB) {
                                page_count(p, pa) == 2
                            } else {
                                (0..if huge { 512 } else { 1 }).all(|i| page_count(p, pa + i * PAGE_SIZE) == 1)
                            });
                    let writable = v.flags.contains(VmFlags::WRITE) && sole;
                    // PS stays on a huge leaf (bit 7, never PAT on a user PTE).
                    let ad = l.entry.0 & (PteFlags::ACCESSED.0 | PteFlags::DIRTY.0 | PteFlags::PSE.0);
                    let _ = l.slot.write(phys, Pte(pa | leaf_flags(v.flags, writable) | ad));
                    true
                });
            }
            // One flush of the range (mmu_gather's batch), before the
            // page allocator's lock goes (`noflush=mprotect` drops it).
            if !crate::mm::tlbtrace::drop_flush(crate::mm::tlbtrace::NOFLUSH_MPROTECT) {
                crate::arch::tlb::flush_range(self.pgd, start, end);
            }
        });
        Ok(())
    }

    /// `brk`: grows the heap VMA (pages come on first touch) or shrinks
    /// it (pages freed). Returns the break, unchanged when refused.
    pub fn brk(&mut self, addr: u64) -> u64 {
        if addr < self.start_brk || addr > MMAP_BASE {
            return self.brk;
        }
        let (old_end, new_end) = (page_up(self.brk), page_up(addr));
        if new_end > old_end {
            if self.vmas.find_intersection(old_end, new_end + STACK_GUARD_GAP).is_some() {
                return self.brk;
            }
            // RLIMIT_AS, then the overcommit charge (the heap is always
            // accounted, as Linux's brk).
            let pages = (new_end - old_end) / PAGE_SIZE;
            if self.may_expand_vm(new_end - old_end).is_err() || !crate::mm::overcommit::vm_enough_memory(pages) {
                return self.brk;
            }
            let heap = Vma::anon(old_end, new_end, VmFlags::READ | VmFlags::WRITE | super::mman::VM_ACCOUNT);
            if self.vmas.insert(heap).is_err() {
                crate::mm::overcommit::vm_unacct_memory(pages);
                return self.brk;
            }
        } else if new_end < old_end && self.munmap(new_end, old_end - new_end).is_err() {
            return self.brk;
        }
        self.brk = addr;
        self.stat.brk = addr;
        addr
    }
}

/// Linux's `mmu_gather` for one zap: the pages whose PTEs were cleared,
/// held until the range they were mapped in has been flushed on every
/// CPU (`tlb_flush_mmu`), then released. A few entries live on the
/// stack; beyond them the gather takes one page for a batch of 512 if
/// the allocator has one without waiting (Linux's `tlb_next_batch`, with
/// GFP_NOWAIT), else it flushes whenever the stack's entries are full.
/// Nothing here can sleep or needs the heap: the page allocator's lock
/// is held throughout. Page-table pages unlinked by `free_pgtables` wait
/// in a small array of their own (Linux's table batch), so they add no
/// flush to a munmap whose pages fill whole batches.
struct MmuGather {
    pgd: u64,
    /// Entries: a page's physical address, bit 0 set for a huge PMD leaf.
    local: [u64; GATHER_LOCAL],
    /// The batch page (0: none yet, or none to be had).
    batch: u64,
    tried_batch: bool,
    len: usize,
    /// The range cleared since the last flush (start > end: none).
    start: u64,
    end: u64,
    /// Page-table pages unlinked since the last flush.
    tables: [u64; GATHER_TABLES],
    ntables: usize,
}

/// Entries on the stack.
const GATHER_LOCAL: usize = 16;
/// Entries in a batch page.
const GATHER_BATCH: usize = (PAGE_SIZE / 8) as usize;
/// Page-table pages gathered before a flush (an unmap of a range far from
/// any other mapping frees one table per level, and one page table per
/// 2 MiB it covered).
const GATHER_TABLES: usize = 16;

/// The page-table pages `free_pgd_range` unlinks, as its frame allocator:
/// each leaves the process's count at once (Linux's `mm_dec_nr_ptes`) and
/// waits in the gather for the flush before it is freed.
struct GatherTables<'a> {
    tlb: &'a mut MmuGather,
    p: &'a mut PageAlloc,
    count: &'a mut u64,
}

impl FrameAllocator for GatherTables<'_> {
    fn allocate_frame(&mut self) -> Option<PhysAddr> {
        // Freeing tables allocates none.
        None
    }
    fn deallocate_frame(&mut self, frame: PhysAddr) {
        *self.count = self.count.saturating_sub(1);
        self.tlb.remove_table(self.p, frame.0);
    }
}

impl MmuGather {
    fn new(pgd: u64) -> Self {
        MmuGather {
            pgd,
            local: [0; GATHER_LOCAL],
            batch: 0,
            tried_batch: false,
            len: 0,
            start: u64::MAX,
            end: 0,
            tables: [0; GATHER_TABLES],
            ntables: 0,
        }
    }

    /// Queues page-table page `table`, already unlinked from the tables,
    /// for release after the flush (Linux's `pte_free_tlb`, which sets
    /// `freed_tables`). The order is what makes it safe: unlink, then a
    /// flush that drops every CPU's paging-structure caches of this root
    /// (`tlb::flush_freed_tables`, reaching CPUs that hold the root lazily
    /// too), then free. Freed before the flush, the page could be reused
    /// while a CPU still walks through it from a cached upper entry,
    /// reading its new contents as page-table entries (and, on hardware,
    /// setting accessed bits in them).
    fn remove_table(&mut self, p: &mut PageAlloc, table: u64) {
        if self.ntables == GATHER_TABLES {
            self.flush(p);
        }
        self.tables[self.ntables] = table;
        self.ntables += 1;
    }

    /// Notes that `[va, va + size)` lost its translation.
    fn cleared(&mut self, va: u64, size: u64) {
        self.start = self.start.min(va);
        self.end = self.end.max(va + size);
    }

    fn capacity(&self) -> usize {
        if self.batch != 0 {
            GATHER_BATCH
        } else {
            GATHER_LOCAL
        }
    }

    fn entry(&self, i: usize) -> u64 {
        if self.batch != 0 {
            direct_map().read_u64(PhysAddr(self.batch + 8 * i as u64)).unwrap_or(0)
        } else {
            self.local[i]
        }
    }

    /// Queues the page `e` maps at `va` (a huge PMD leaf if `huge`) for
    /// release after the flush; a full batch is flushed and released now.
    fn remove(&mut self, p: &mut PageAlloc, va: u64, size: u64, e: Pte, huge: bool) {
        self.cleared(va, size);
        if self.len == self.capacity() && !self.tried_batch {
            self.tried_batch = true;
            self.take_batch_page(p);
        }
        if self.len == self.capacity() {
            self.flush(p);
        }
        let v = (e.0 & ADDR_MASK) | huge as u64;
        if self.batch != 0 {
            let _ = direct_map().write_u64(PhysAddr(self.batch + 8 * self.len as u64), v);
        } else {
            self.local[self.len] = v;
        }
        self.len += 1;
    }

    /// Moves the stack's entries to a page of their own, if one is free
    /// without waiting.
    fn take_batch_page(&mut self, p: &mut PageAlloc) {
        let Ok(pfn) = p.buddy.alloc_pages(crate::arch::percpu::this_cpu().id, 0, mm_core::buddy::GFP_KERNEL) else {
            return;
        };
        self.batch = pfn << PAGE_SHIFT;
        let mut phys = direct_map();
        for (i, &v) in self.local[..self.len].iter().enumerate() {
            let _ = phys.write_u64(PhysAddr(self.batch + 8 * i as u64), v);
        }
    }

    /// Flushes the range gathered, everything with its paging-structure
    /// caches if page tables were unlinked (`noflush=munmap`,
    /// mm/tlbtrace.rs, drops the flush), then releases the pages and the
    /// tables.
    fn flush(&mut self, p: &mut PageAlloc) {
        let work = self.start < self.end || self.ntables > 0;
        if work && !crate::mm::tlbtrace::drop_flush(crate::mm::tlbtrace::NOFLUSH_MUNMAP) {
            if self.ntables > 0 {
                crate::arch::tlb::flush_freed_tables(self.pgd);
            } else {
                crate::arch::tlb::flush_range(self.pgd, self.start, self.end);
            }
        }
        self.start = u64::MAX;
        self.end = 0;
        let zero = zero_pa();
        for i in 0..self.len {
            let v = self.entry(i);
            if v & 1 != 0 {
                super::thp::zap_huge_pmd(p, Pte(v & !1));
            } else {
                put_page(p, zero, v);
            }
        }
        self.len = 0;
        for &t in &self.tables[..self.ntables] {
            BuddyFrames(p).deallocate_frame(PhysAddr(t));
        }
        self.ntables = 0;
    }

    /// The last flush and release (`tlb_finish_mmu`), and the batch page
    /// goes back.
    fn finish(mut self, p: &mut PageAlloc) {
        self.flush(p);
        if self.batch != 0 {
            if let Err(e) = p.buddy.free_pages(crate::arch::percpu::this_cpu().id, self.batch >> PAGE_SHIFT, 0) {
                panic!("freeing the mmu_gather batch page: {}", e);
            }
        }
    }
}
