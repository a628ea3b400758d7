//! The software MMU: a linear-address translation with the exact x86-64
//! rules of 4-level and 5-level paging (Intel SDM vol. 3, 4.5-4.8).
//!
//! [`walk`] does the structural part (present bits, reserved bits, page
//! size, permissions combined over the levels); [`check_access`] applies
//! the access-rights rules of SDM 4.6 to the combined permissions;
//! [`translate`] is both, as the CPU does it. The fault carries the error
//! code the CPU would push. A walk reads at most five entries, so hostile
//! tables (loops, pointers outside memory) cannot make it loop or panic.

use crate::abi::cpu;
use crate::addr::{Level, PageSize, PhysAddr, VirtAddr};
use crate::mem::PhysMem;
use crate::paging::entry::{large_page_reserved_low, phys_addr_mask, reserved_addr_mask, Pte, PteFlags};
use core::fmt;

/// The processor state a translation depends on.
///
/// CR4.PSE does not appear: it has no effect in long mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuContext {
    /// CR3: root table address (bits 12..MAXPHYADDR-1) plus PCID or
    /// PWT/PCD in bits 0..11.
    pub cr3: u64,
    /// CR0.WP: supervisor writes honour R/W.
    pub wp: bool,
    /// CR4.PGE: G=1 translations survive a CR3 write (TLB model only).
    pub pge: bool,
    /// CR4.PCIDE: CR3 bits 0..11 are a PCID (TLB model only).
    pub pcide: bool,
    /// CR4.SMEP.
    pub smep: bool,
    /// CR4.SMAP.
    pub smap: bool,
    /// CR4.PKE: protection keys for user-mode addresses.
    pub pke: bool,
    /// CR4.LA57: 5-level paging.
    pub la57: bool,
    /// IA32_EFER.NXE: bit 63 is XD (otherwise reserved).
    pub nxe: bool,
    /// EFLAGS.AC: with SMAP, explicit supervisor accesses to user pages
    /// are allowed.
    pub ac: bool,
    /// Current privilege level (3 = user mode).
    pub cpl: u8,
    /// CPUID.80000008H:EAX[7:0], physical-address width (bits above it in
    /// an entry are reserved).
    pub maxphyaddr: u8,
    /// PKRU: two bits per key, AD = bit 2i, WD = bit 2i+1.
    pub pkru: u32,
    /// CPUID.80000001H:EDX.Page1GB: PS=1 in a PDPTE is legal.
    pub gbpages: bool,
    /// The CPU's vendor (CPUID leaf 0): the reserved bits differ (on AMD
    /// bit 8 of a PML4E/PML5E is reserved, on Intel it is ignored).
    pub vendor: CpuVendor,
}

/// Whose rules the walker applies where Intel's SDM and AMD's APM differ.
///
/// The one difference a walk can observe: AMD reserves bit 8 (G) of the
/// non-leaf PML4E and PML5E (APM vol. 2, "Long-Mode Page Translation"
/// tables: "MBZ"), so KVM raises #PF with RSVD (error code 0x9 for a
/// read) on it, as `__reset_rsvds_bits_mask` in arch/x86/kvm/mmu/mmu.c
/// does with `nonleaf_bit8_rsvd`; Intel ignores it (SDM table 4-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CpuVendor {
    /// "GenuineIntel" (and every vendor that follows Intel's rules).
    #[default]
    Intel,
    /// "AuthenticAMD" or "HygonGenuine".
    Amd,
}

impl CpuVendor {
    /// The vendor named by CPUID leaf 0's EBX, EDX, ECX (the 12-byte
    /// vendor string); anything but AMD's and Hygon's follows Intel.
    pub const fn from_cpuid(ebx: u32, edx: u32, ecx: u32) -> Self {
        // "Auth" "enti" "cAMD" and "Hygo" "nGen" "uine".
        match (ebx, edx, ecx) {
            (0x6874_7541, 0x6974_6e65, 0x444d_4163) | (0x6f67_7948, 0x6e65_476e, 0x656e_6975) => CpuVendor::Amd,
            _ => CpuVendor::Intel,
        }
    }
}

impl CpuContext {
    /// Linux's long-mode setup on root `cr3`, kernel mode: WP, PGE, NXE
    /// on; SMEP/SMAP/PKE/LA57/PCID off; MAXPHYADDR 46; no 1 GiB pages
    /// (the KVM of platform.md rejects them); Intel's reserved bits.
    pub const fn kernel(cr3: PhysAddr) -> Self {
        CpuContext {
            cr3: cr3.0,
            wp: true,
            pge: true,
            pcide: false,
            smep: false,
            smap: false,
            pke: false,
            la57: false,
            nxe: true,
            ac: false,
            cpl: 0,
            maxphyaddr: 46,
            pkru: 0,
            gbpages: false,
            vendor: CpuVendor::Intel,
        }
    }

    /// The same state on a CPU of `vendor`.
    pub const fn with_vendor(self, vendor: CpuVendor) -> Self {
        CpuContext { vendor, ..self }
    }

    /// The same state in user mode (CPL 3).
    pub const fn user(self) -> Self {
        CpuContext { cpl: 3, ..self }
    }

    /// From raw register values as the host reads them from a vCPU.
    pub const fn from_registers(r: &RawRegisters) -> Self {
        CpuContext {
            cr3: r.cr3,
            wp: r.cr0 & cpu::CR0_WP != 0,
            pge: r.cr4 & cpu::CR4_PGE != 0,
            la57: r.cr4 & cpu::CR4_LA57 != 0,
            pcide: r.cr4 & cpu::CR4_PCIDE != 0,
            smep: r.cr4 & cpu::CR4_SMEP != 0,
            smap: r.cr4 & cpu::CR4_SMAP != 0,
            pke: r.cr4 & cpu::CR4_PKE != 0,
            nxe: r.efer & cpu::EFER_NXE != 0,
            ac: r.rflags & cpu::RFLAGS_AC != 0,
            cpl: r.cpl,
            maxphyaddr: r.maxphyaddr,
            pkru: r.pkru,
            gbpages: r.gbpages,
            vendor: r.vendor,
        }
    }

    /// Physical address of the root table (PML4, or PML5 with LA57).
    #[inline]
    pub const fn root(&self) -> PhysAddr {
        PhysAddr(self.cr3 & phys_addr_mask(self.maxphyaddr))
    }

    /// The root level for this paging mode.
    #[inline]
    pub const fn root_level(&self) -> Level {
        Level::root(self.la57)
    }
}

/// The register values and CPUID facts a [`CpuContext`] is made of, as
/// the host reads them from a vCPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawRegisters {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// Current privilege level (CS.DPL in long mode).
    pub cpl: u8,
    /// PKRU.
    pub pkru: u32,
    /// CPUID's physical-address width.
    pub maxphyaddr: u8,
    /// CPUID: 1 GiB pages supported.
    pub gbpages: bool,
    /// CPUID leaf 0: whose reserved bits apply.
    pub vendor: CpuVendor,
}

/// The kind of a linear-address access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Data read at the current privilege level.
    Read,
    /// Data write at the current privilege level.
    Write,
    /// Instruction fetch at the current privilege level.
    Execute,
    /// Implicit supervisor-mode read (descriptor tables, TSS...): a
    /// supervisor access even at CPL 3, never allowed by EFLAGS.AC.
    ImplicitRead,
    /// Implicit supervisor-mode write (e.g. setting a descriptor's
    /// accessed bit).
    ImplicitWrite,
}

impl Access {
    /// The access writes.
    #[inline]
    pub const fn is_write(self) -> bool {
        matches!(self, Access::Write | Access::ImplicitWrite)
    }
    /// The access is an instruction fetch.
    #[inline]
    pub const fn is_fetch(self) -> bool {
        matches!(self, Access::Execute)
    }
    /// The access is an implicit supervisor-mode access.
    #[inline]
    pub const fn is_implicit(self) -> bool {
        matches!(self, Access::ImplicitRead | Access::ImplicitWrite)
    }
    /// Whether this is a user-mode access under `ctx` (CPL 3, not implicit).
    #[inline]
    pub const fn is_user_mode(self, ctx: &CpuContext) -> bool {
        ctx.cpl == 3 && !self.is_implicit()
    }
}

/// The #PF error code (SDM 4.7), as pushed by the CPU.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PfErrorCode(pub u32);

impl PfErrorCode {
    /// P: 0 = non-present page, 1 = protection or reserved-bit violation.
    pub const PRESENT: u32 = cpu::PF_PRESENT;
    /// W/R: the access was a write.
    pub const WRITE: u32 = cpu::PF_WRITE;
    /// U/S: the access was a user-mode access.
    pub const USER: u32 = cpu::PF_USER;
    /// RSVD: a reserved bit was set in some paging-structure entry.
    pub const RSVD: u32 = cpu::PF_RSVD;
    /// I/D: instruction fetch (reported only with EFER.NXE or CR4.SMEP).
    pub const FETCH: u32 = cpu::PF_FETCH;
    /// PK: protection-key violation.
    pub const PK: u32 = cpu::PF_PK;

    /// Whether all `bits` are set.
    #[inline]
    pub const fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// The bits every #PF for `access` carries (W/R, U/S, I/D).
    #[inline]
    pub const fn for_access(ctx: &CpuContext, access: Access) -> Self {
        let mut e = 0;
        if access.is_write() {
            e |= Self::WRITE;
        }
        if access.is_user_mode(ctx) {
            e |= Self::USER;
        }
        if access.is_fetch() && (ctx.nxe || ctx.smep) {
            e |= Self::FETCH;
        }
        PfErrorCode(e)
    }
}

impl fmt::Debug for PfErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PfErrorCode({self})")
    }
}

/// `0x7 [P W U]`: the value and its set bits.
impl fmt::Display for PfErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} [", self.0)?;
        let mut first = true;
        for (bit, name) in [
            (Self::PRESENT, "P"),
            (Self::WRITE, "W"),
            (Self::USER, "U"),
            (Self::RSVD, "RSVD"),
            (Self::FETCH, "I/D"),
            (Self::PK, "PK"),
        ] {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str(" ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str("]")
    }
}

/// Which reserved bit a present entry had set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservedBit {
    /// Address bits at or above MAXPHYADDR.
    AboveMaxPhyAddr,
    /// XD (bit 63) with EFER.NXE = 0.
    XdWithoutNxe,
    /// PS = 1 in a PML4E or PML5E.
    PsAtRoot,
    /// PS = 1 in a PDPTE without 1 GiB page support.
    No1GPages,
    /// Bits 13..20 (2 MiB) or 13..29 (1 GiB) of a large page's address.
    LargePageAlignment,
    /// Bit 8 of a PML4E or PML5E on an AMD CPU.
    AmdRootBit8,
}

/// Why a translation faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultReason {
    /// P = 0 in the entry at the fault's level.
    NotPresent,
    /// A reserved bit is set in the entry at the fault's level.
    Reserved(ReservedBit),
    /// A write with R/W = 0 at the fault's level (user mode, or CR0.WP=1).
    ReadOnly,
    /// A user-mode access with U/S = 0 at the fault's level.
    SupervisorPage,
    /// A fetch with XD = 1 at the fault's level (EFER.NXE = 1).
    ExecuteDisabled,
    /// A supervisor fetch from a user-mode page with CR4.SMEP.
    Smep,
    /// A supervisor data access to a user-mode page with CR4.SMAP and
    /// EFLAGS.AC = 0 (or an implicit access).
    Smap,
    /// The page's protection key forbids the access (PKRU).
    ProtectionKey(u8),
}

impl fmt::Display for FaultReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultReason::NotPresent => f.write_str("not present"),
            FaultReason::Reserved(r) => write!(f, "reserved bit set ({r:?})"),
            FaultReason::ReadOnly => f.write_str("write to read-only"),
            FaultReason::SupervisorPage => f.write_str("user access to supervisor page"),
            FaultReason::ExecuteDisabled => f.write_str("fetch from NX page"),
            FaultReason::Smep => f.write_str("SMEP: supervisor fetch from user page"),
            FaultReason::Smap => f.write_str("SMAP: supervisor access to user page"),
            FaultReason::ProtectionKey(k) => write!(f, "protection key {k} denies access"),
        }
    }
}

/// One entry read during a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkStep {
    /// The level of the table the entry is in.
    pub level: Level,
    /// Index of the entry in its table.
    pub index: u16,
    /// Physical address of the entry.
    pub entry_pa: PhysAddr,
    /// The entry's value.
    pub entry: Pte,
}

/// The entries a walk read, root first (at most five). Only the values
/// are stored and the entry addresses recomputed, which keeps a trace (and
/// so a [`Fault`]) small enough to return by value without a heap.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WalkTrace {
    entries: [Pte; 5],
    va: VirtAddr,
    root: PhysAddr,
    len: u8,
    top: Level,
    maxphyaddr: u8,
}

impl WalkTrace {
    /// No steps (a fault served from a TLB entry reads no tables).
    pub const EMPTY: WalkTrace =
        WalkTrace { entries: [Pte(0); 5], va: VirtAddr(0), root: PhysAddr(0), len: 0, top: Level::P4d, maxphyaddr: 0 };

    #[inline]
    fn new(ctx: &CpuContext, va: VirtAddr) -> Self {
        WalkTrace { va, root: ctx.root(), top: ctx.root_level(), maxphyaddr: ctx.maxphyaddr, ..Self::EMPTY }
    }

    #[inline]
    fn push(&mut self, e: Pte) {
        // A walk never reads more than five entries; the guard keeps a
        // logic error from becoming a panic.
        if let Some(slot) = self.entries.get_mut(self.len as usize) {
            *slot = e;
            self.len += 1;
        }
    }

    /// Number of entries read.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no entry was read.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The steps, root first.
    pub fn steps(&self) -> impl Iterator<Item = WalkStep> + '_ {
        let mut table = self.root;
        let mut level = Some(self.top);
        self.entries[..self.len()].iter().map_while(move |&entry| {
            let l = level?;
            let index = self.va.table_index(l);
            let step =
                WalkStep { level: l, index: index as u16, entry_pa: PhysAddr(table.0 + 8 * index as u64), entry };
            table = entry.addr(self.maxphyaddr);
            level = l.next_lower();
            Some(step)
        })
    }

    /// The last entry read (the leaf, or the one the walk stopped at).
    pub fn last(&self) -> Option<WalkStep> {
        self.steps().last()
    }
}

impl Default for WalkTrace {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl fmt::Debug for WalkTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.steps()).finish()
    }
}

/// One line per level, as crash's `vtop`:
/// `PGD (PML4)[273] @ 0x1888: 0x...  -> 0x... P RW ...`.
impl fmt::Display for WalkTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in self.steps() {
            writeln!(
                f,
                "{:>4} ({:>4})[{:3}] @ {:#x}: {}",
                s.level.linux_name(),
                s.level.sdm_name(),
                s.index,
                s.entry_pa.0,
                s.entry
            )?;
        }
        Ok(())
    }
}

/// A completed translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The translated address.
    pub va: VirtAddr,
    /// The physical address `va` maps to.
    pub pa: PhysAddr,
    /// The size of the page containing `va`.
    pub size: PageSize,
    /// Effective normalised flags: the leaf's flags with RW and USER
    /// ANDed and NX ORed over all levels (NX only with EFER.NXE), PAT at
    /// bit 7, no PS.
    pub flags: PteFlags,
    /// The leaf entry as stored.
    pub leaf: Pte,
    /// Every entry read, root first.
    pub trace: WalkTrace,
}

impl Translation {
    /// Base physical address of the page.
    #[inline]
    pub const fn frame(&self) -> PhysAddr {
        PhysAddr(self.pa.0 & !(self.size.bytes() - 1))
    }
}

/// A #PF as the CPU would deliver it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFault {
    /// CR2.
    pub va: VirtAddr,
    /// The error code pushed.
    pub error_code: PfErrorCode,
    /// For non-present and reserved-bit faults the level where the walk
    /// stopped; for permission faults the highest level whose entry denies
    /// the access (the leaf level for SMEP, SMAP and protection keys).
    pub level: Level,
    /// Why.
    pub reason: FaultReason,
    /// Entries read, root first (empty for faults raised from the TLB).
    pub trace: WalkTrace,
}

/// Why a translation did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The address is not canonical for the paging mode: the CPU raises
    /// #GP (or #SS for stack accesses), not #PF, and walks nothing.
    NonCanonical(VirtAddr),
    /// A page fault.
    PageFault(PageFault),
    /// A paging-structure entry lies outside physical memory: not a CPU
    /// outcome (real hardware would read whatever the bus returns), it
    /// means the tables point at nothing.
    TableOutsideMemory {
        /// Level of the table.
        level: Level,
        /// Base of the table.
        table: PhysAddr,
        /// The entry that could not be read.
        entry_pa: PhysAddr,
    },
}

impl Fault {
    /// The page fault, if this is one.
    pub fn page_fault(&self) -> Option<&PageFault> {
        match self {
            Fault::PageFault(pf) => Some(pf),
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::NonCanonical(va) => write!(f, "{:#x} is not canonical (#GP)", va.0),
            Fault::PageFault(pf) => {
                write!(f, "#PF at {:#x}, error code {}: {} at {}", pf.va.0, pf.error_code, pf.reason, pf.level)
            }
            Fault::TableOutsideMemory { level, table, entry_pa } => {
                write!(f, "{} table at PA {:#x} is outside memory (entry at {:#x})", level, table.0, entry_pa.0)
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Fault {}

/// Effective permissions of a translation, combined over all levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    /// R/W = 1 at every level.
    pub writable: bool,
    /// U/S = 1 at every level (a user-mode address).
    pub user: bool,
    /// XD = 1 at some level, with EFER.NXE.
    pub nx: bool,
    /// The leaf's protection key.
    pub pkey: u8,
}

impl Perms {
    /// The permissions normalised `flags` (as in [`Translation::flags`])
    /// describe.
    #[inline]
    pub const fn from_flags(flags: PteFlags) -> Self {
        Perms {
            writable: flags.contains(PteFlags::RW),
            user: flags.contains(PteFlags::USER),
            nx: flags.contains(PteFlags::NX),
            pkey: flags.pkey(),
        }
    }
}

/// The reserved bits `e` (present, at `level`) violates, if any (SDM
/// 4.5.4 tables 4-15..4-20, and 4.5.5 for PML5).
#[inline]
pub fn reserved_bit(e: Pte, level: Level, ctx: &CpuContext) -> Option<ReservedBit> {
    reserved_bit_masked(e, level, ctx, reserved_addr_mask(ctx.maxphyaddr))
}

/// [`reserved_bit`] with `reserved_addr_mask(ctx.maxphyaddr)` computed
/// once by a caller that checks entry after entry.
#[inline(always)]
pub(crate) fn reserved_bit_masked(e: Pte, level: Level, ctx: &CpuContext, addr_rsvd: u64) -> Option<ReservedBit> {
    // Every rule below needs one of these bits set: most entries (table
    // pointers) have none of them, and are done with one test.
    let nx_rsvd = if ctx.nxe { 0 } else { PteFlags::NX.0 };
    if e.0 & (addr_rsvd | nx_rsvd | PteFlags::PSE.0 | PteFlags::GLOBAL.0) == 0 {
        return None;
    }
    if e.0 & addr_rsvd != 0 {
        return Some(ReservedBit::AboveMaxPhyAddr);
    }
    if !ctx.nxe && e.is_nx() {
        return Some(ReservedBit::XdWithoutNxe);
    }
    match level {
        Level::Pgd | Level::P4d if e.bit7() => Some(ReservedBit::PsAtRoot),
        Level::Pgd | Level::P4d if ctx.vendor == CpuVendor::Amd && e.is_global() => Some(ReservedBit::AmdRootBit8),
        Level::Pud if e.bit7() && !ctx.gbpages => Some(ReservedBit::No1GPages),
        Level::Pud if e.bit7() && e.0 & large_page_reserved_low(PageSize::Size1G) != 0 => {
            Some(ReservedBit::LargePageAlignment)
        }
        Level::Pmd if e.bit7() && e.0 & large_page_reserved_low(PageSize::Size2M) != 0 => {
            Some(ReservedBit::LargePageAlignment)
        }
        _ => None,
    }
}

/// Whether PKRU forbids `access` to a user-mode page with key `pkey`
/// (SDM 4.6.2); the caller has checked CR4.PKE and that the page is
/// user-mode and the access a data access.
#[inline]
fn pkey_denies(ctx: &CpuContext, access: Access, pkey: u8) -> bool {
    let ad = ctx.pkru >> (2 * pkey as u32) & 1 != 0;
    let wd = ctx.pkru >> (2 * pkey as u32 + 1) & 1 != 0;
    ad || (wd && access.is_write() && (ctx.wp || access.is_user_mode(ctx)))
}

/// The access-rights rules of SDM 4.6.1 applied to combined permissions:
/// `Ok` if allowed, else the error code and the first reason found.
///
/// The error code holds P=1, the access bits and PK whenever the key
/// would deny the access, even if another rule denies it too (SDM 4.7).
#[inline(always)]
pub fn check_access(ctx: &CpuContext, access: Access, perms: Perms) -> Result<(), (PfErrorCode, FaultReason)> {
    let user_mode = access.is_user_mode(ctx);
    let fetch = access.is_fetch();
    let write = access.is_write();
    let nx = ctx.nxe && perms.nx;
    let pk = ctx.pke && perms.user && !fetch && pkey_denies(ctx, access, perms.pkey);

    let reason = if user_mode {
        if !perms.user {
            Some(FaultReason::SupervisorPage)
        } else if fetch && nx {
            Some(FaultReason::ExecuteDisabled)
        } else if write && !perms.writable {
            Some(FaultReason::ReadOnly)
        } else if pk {
            Some(FaultReason::ProtectionKey(perms.pkey))
        } else {
            None
        }
    } else if fetch {
        if perms.user && ctx.smep {
            Some(FaultReason::Smep)
        } else if nx {
            Some(FaultReason::ExecuteDisabled)
        } else {
            None
        }
    } else if perms.user && ctx.smap && (!ctx.ac || access.is_implicit()) {
        Some(FaultReason::Smap)
    } else if write && ctx.wp && !perms.writable {
        Some(FaultReason::ReadOnly)
    } else if pk {
        Some(FaultReason::ProtectionKey(perms.pkey))
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(r) => {
            let mut code = PfErrorCode::for_access(ctx, access).0 | PfErrorCode::PRESENT;
            if pk {
                code |= PfErrorCode::PK;
            }
            Err((PfErrorCode(code), r))
        }
    }
}

/// Walks the tables for `va` without checking access rights: the
/// structural translation (or the not-present / reserved-bit fault that
/// any access would take).
pub fn walk<M: PhysMem + ?Sized>(mem: &M, ctx: &CpuContext, va: VirtAddr) -> Result<Translation, Fault> {
    walk_inner(mem, ctx, va, PfErrorCode(0))
}

#[inline]
fn walk_inner<M: PhysMem + ?Sized>(
    mem: &M,
    ctx: &CpuContext,
    va: VirtAddr,
    access_code: PfErrorCode,
) -> Result<Translation, Fault> {
    if !va.is_canonical(ctx.la57) {
        return Err(Fault::NonCanonical(va));
    }
    let mut trace = WalkTrace::new(ctx, va);
    let mut table = ctx.root();
    let mut level = ctx.root_level();
    let mut writable = true;
    let mut user = true;
    let mut nx = false;
    loop {
        let index = va.table_index(level);
        let entry_pa = PhysAddr(table.0 + 8 * index as u64);
        let e = match mem.read_u64(entry_pa) {
            Ok(v) => Pte(v),
            Err(_) => return Err(Fault::TableOutsideMemory { level, table, entry_pa }),
        };
        trace.push(e);
        let fault = |reason, code: u32| {
            Fault::PageFault(PageFault { va, error_code: PfErrorCode(access_code.0 | code), level, reason, trace })
        };
        if !e.is_present() {
            return Err(fault(FaultReason::NotPresent, 0));
        }
        if let Some(r) = reserved_bit(e, level, ctx) {
            return Err(fault(FaultReason::Reserved(r), PfErrorCode::PRESENT | PfErrorCode::RSVD));
        }
        writable &= e.is_writable();
        user &= e.is_user();
        nx |= e.is_nx();
        if e.is_leaf_at(level) {
            let Some(size) = level.page_size() else {
                // is_leaf_at never says yes above the PDPT.
                return Err(fault(
                    FaultReason::Reserved(ReservedBit::PsAtRoot),
                    PfErrorCode::PRESENT | PfErrorCode::RSVD,
                ));
            };
            let frame = e.frame(size, ctx.maxphyaddr);
            let mut flags =
                e.leaf_flags(level).difference(PteFlags(PteFlags::RW.0 | PteFlags::USER.0 | PteFlags::NX.0));
            if writable {
                flags |= PteFlags::RW;
            }
            if user {
                flags |= PteFlags::USER;
            }
            if nx && ctx.nxe {
                flags |= PteFlags::NX;
            }
            return Ok(Translation { va, pa: PhysAddr(frame.0 | va.offset_in(size)), size, flags, leaf: e, trace });
        }
        table = e.addr(ctx.maxphyaddr);
        match level.next_lower() {
            Some(l) => level = l,
            // Unreachable: a PT entry is always a leaf.
            None => return Err(fault(FaultReason::NotPresent, 0)),
        }
    }
}

/// The highest level whose entry fails `denies` (for fault reports).
fn culprit(trace: &WalkTrace, denies: impl Fn(Pte) -> bool) -> Option<Level> {
    trace.steps().find(|s| denies(s.entry)).map(|s| s.level)
}

/// Translates `va` for `access` under `ctx` as the CPU does: the walk,
/// then the access-rights check of SDM 4.6.
pub fn translate<M: PhysMem + ?Sized>(
    mem: &M,
    ctx: &CpuContext,
    va: VirtAddr,
    access: Access,
) -> Result<Translation, Fault> {
    let t = walk_inner(mem, ctx, va, PfErrorCode::for_access(ctx, access))?;
    match check_access(ctx, access, Perms::from_flags(t.flags)) {
        Ok(()) => Ok(t),
        Err((error_code, reason)) => {
            let leaf_level = t.size.leaf_level();
            let level = match reason {
                FaultReason::ReadOnly => culprit(&t.trace, |e| !e.is_writable()),
                FaultReason::SupervisorPage => culprit(&t.trace, |e| !e.is_user()),
                FaultReason::ExecuteDisabled => culprit(&t.trace, |e| e.is_nx()),
                _ => None,
            }
            .unwrap_or(leaf_level);
            Err(Fault::PageFault(PageFault { va, error_code, level, reason, trace: t.trace }))
        }
    }
}

/// [`translate`], then the accessed and dirty updates the CPU makes on a
/// successful translation (SDM 4.8): A in every entry used, D in the leaf
/// for a write. Like KVM's and QEMU's MMUs, nothing is written when the
/// access faults.
pub fn translate_update_ad<M: PhysMem + ?Sized>(
    mem: &mut M,
    ctx: &CpuContext,
    va: VirtAddr,
    access: Access,
) -> Result<Translation, Fault> {
    let mut t = translate(&*mem, ctx, va, access)?;
    let n = t.trace.len();
    // Setting A/D changes no address, so the original trace still locates
    // every entry.
    let orig = t.trace;
    for (i, s) in orig.steps().enumerate() {
        let mut new = s.entry.with(PteFlags::ACCESSED);
        if i + 1 == n && access.is_write() {
            new = new.with(PteFlags::DIRTY);
        }
        if new != s.entry {
            if mem.write_u64(s.entry_pa, new.0).is_err() {
                return Err(Fault::TableOutsideMemory {
                    level: s.level,
                    table: PhysAddr(s.entry_pa.0 & !0xfff),
                    entry_pa: s.entry_pa,
                });
            }
            t.trace.entries[i] = new;
        }
    }
    if let Some(last) = t.trace.last() {
        t.leaf = last.entry;
        t.flags |= PteFlags(last.entry.0 & (PteFlags::ACCESSED.0 | PteFlags::DIRTY.0));
    }
    Ok(t)
}

/// Reads the trace of a walk for `va`, whether it completes or not: the
/// crash `vtop` view. Returns the trace and the outcome of [`walk`].
pub fn walk_trace<M: PhysMem + ?Sized>(
    mem: &M,
    ctx: &CpuContext,
    va: VirtAddr,
) -> (WalkTrace, Result<Translation, Fault>) {
    let r = walk(mem, ctx, va);
    let trace = match &r {
        Ok(t) => t.trace,
        Err(Fault::PageFault(pf)) => pf.trace,
        Err(_) => WalkTrace::EMPTY,
    };
    (trace, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMem;

    const P: u64 = 1;
    const RW: u64 = 2;
    const US: u64 = 4;
    const PS: u64 = 0x80;
    const NX: u64 = 1 << 63;

    /// Tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD), 0x4000 (PT),
    /// mapping va 0x40_0000 + 0x5000 -> 0x9000.
    fn setup(pml4: u64, pdpt: u64, pd: u64, pt: u64) -> VecMem {
        let mut m = VecMem::new(1 << 20);
        m.write_u64(PhysAddr(0x1000), 0x2000 | pml4).unwrap();
        m.write_u64(PhysAddr(0x2000), 0x3000 | pdpt).unwrap();
        m.write_u64(PhysAddr(0x3000 + 2 * 8), 0x4000 | pd).unwrap();
        m.write_u64(PhysAddr(0x4000 + 5 * 8), 0x9000 | pt).unwrap();
        m
    }

    const VA: VirtAddr = VirtAddr(0x40_5123);

    fn ctx() -> CpuContext {
        CpuContext::kernel(PhysAddr(0x1000))
    }

    fn pf(r: Result<Translation, Fault>) -> PageFault {
        *r.unwrap_err().page_fault().unwrap()
    }

    #[test]
    fn basic_4k() {
        let m = setup(P | RW | US, P | RW | US, P | RW | US, P | RW | US);
        let t = translate(&m, &ctx(), VA, Access::Read).unwrap();
        assert_eq!(t.pa, PhysAddr(0x9123));
        assert_eq!(t.size, PageSize::Size4K);
        assert_eq!(t.trace.len(), 4);
        assert_eq!(t.trace.steps().nth(2).unwrap().entry_pa, PhysAddr(0x3010));
        assert!(t.flags.contains(PteFlags::RW | PteFlags::USER));
    }

    #[test]
    fn not_present_levels_and_codes() {
        let m = setup(P | RW | US, P | RW | US, RW | US, P | RW | US);
        let f = pf(translate(&m, &ctx().user(), VA, Access::Write));
        assert_eq!(f.level, Level::Pmd);
        assert_eq!(f.reason, FaultReason::NotPresent);
        assert_eq!(f.error_code.0, 0x6);
        let f = pf(translate(&m, &ctx(), VA, Access::Execute));
        assert_eq!(f.error_code.0, 0x10);
        let mut c = ctx();
        c.nxe = false;
        let f = pf(translate(&m, &c, VA, Access::Execute));
        assert_eq!(f.error_code.0, 0x0);
        c.smep = true;
        let f = pf(translate(&m, &c, VA, Access::Execute));
        assert_eq!(f.error_code.0, 0x10);
    }

    #[test]
    fn permission_combination() {
        // R/W=0 at the PUD level only.
        let m = setup(P | RW | US, P | US, P | RW | US, P | RW | US);
        let f = pf(translate(&m, &ctx().user(), VA, Access::Write));
        assert_eq!(f.reason, FaultReason::ReadOnly);
        assert_eq!(f.level, Level::Pud);
        assert_eq!(f.error_code.0, 0x7);
        // Supervisor write with WP=0 is allowed.
        let mut c = ctx();
        c.wp = false;
        assert!(translate(&m, &c, VA, Access::Write).is_ok());
        // NX in the PML4E only.
        let m = setup(P | RW | US | NX, P | RW | US, P | RW | US, P | RW | US);
        let f = pf(translate(&m, &ctx(), VA, Access::Execute));
        assert_eq!(f.reason, FaultReason::ExecuteDisabled);
        assert_eq!(f.level, Level::P4d);
        assert_eq!(f.error_code.0, 0x11);
        // The same with NXE=0: bit 63 is reserved.
        let mut c = ctx();
        c.nxe = false;
        let f = pf(translate(&m, &c, VA, Access::Read));
        assert_eq!(f.reason, FaultReason::Reserved(ReservedBit::XdWithoutNxe));
        assert_eq!(f.error_code.0, 0x9);
        assert_eq!(f.level, Level::P4d);
    }

    #[test]
    fn smep_smap_pkeys() {
        let m = setup(P | RW | US, P | RW | US, P | RW | US, P | RW | US | (5 << 59));
        let mut c = ctx();
        c.smep = true;
        c.smap = true;
        assert_eq!(pf(translate(&m, &c, VA, Access::Execute)).reason, FaultReason::Smep);
        let f = pf(translate(&m, &c, VA, Access::Read));
        assert_eq!((f.reason, f.error_code.0), (FaultReason::Smap, 0x1));
        c.ac = true;
        assert!(translate(&m, &c, VA, Access::Read).is_ok());
        assert_eq!(pf(translate(&m, &c.user(), VA, Access::ImplicitWrite)).reason, FaultReason::Smap);
        c.pke = true;
        c.pkru = 0b10 << 10; // WD for key 5
        assert!(translate(&m, &c.user(), VA, Access::Read).is_ok());
        let f = pf(translate(&m, &c.user(), VA, Access::Write));
        assert_eq!((f.reason, f.error_code.0), (FaultReason::ProtectionKey(5), 0x27));
        c.wp = false; // supervisor writes ignore WD when WP=0
        assert!(translate(&m, &c, VA, Access::Write).is_ok());
        c.pkru = 0b01 << 10; // AD
        assert_eq!(pf(translate(&m, &c, VA, Access::Read)).error_code.0, 0x21);
        // Keys do not apply to fetches.
        assert!(translate(&m, &c.user(), VA, Access::Execute).is_ok());
    }

    #[test]
    fn reserved_bits() {
        let c = ctx();
        // PS in PML4E.
        let m = setup(P | RW | PS, P | RW, P | RW, P | RW);
        let f = pf(translate(&m, &c, VA, Access::Read));
        assert_eq!(f.reason, FaultReason::Reserved(ReservedBit::PsAtRoot));
        assert_eq!(f.level, Level::P4d);
        // 1 GiB page without support, then with it.
        let m = setup(P | RW, P | RW | PS, P | RW, P | RW);
        let f = pf(translate(&m, &c, VA, Access::Read));
        assert_eq!(f.reason, FaultReason::Reserved(ReservedBit::No1GPages));
        assert_eq!(f.error_code.0, 0x9);
        let mut g = c;
        g.gbpages = true;
        // PDPTE address 0x3000 is not 1G-aligned: bits 13 and 12 (PAT).
        let f = pf(translate(&m, &g, VA, Access::Read));
        assert_eq!(f.reason, FaultReason::Reserved(ReservedBit::LargePageAlignment));
        // Address bit above MAXPHYADDR in the PT entry.
        let mut m = setup(P | RW, P | RW, P | RW, P | RW);
        m.write_u64(PhysAddr(0x4028), (1 << 46) | 0x9000 | P).unwrap();
        let f = pf(translate(&m, &c, VA, Access::Read));
        assert_eq!(f.reason, FaultReason::Reserved(ReservedBit::AboveMaxPhyAddr));
        assert_eq!(f.level, Level::Pte);
        let mut wide = c;
        wide.maxphyaddr = 52;
        let t = translate(&m, &wide, VA, Access::Read).unwrap();
        assert_eq!(t.pa, PhysAddr((1 << 46) | 0x9123));
    }

    #[test]
    fn pml4_bit8_is_reserved_on_amd_only() {
        const G: u64 = 0x100;
        let m = setup(P | RW | G, P | RW | G, P | RW | G, P | RW);
        let intel = ctx();
        let amd = ctx().with_vendor(CpuVendor::Amd);
        assert!(translate(&m, &intel, VA, Access::Read).is_ok());
        let f = pf(translate(&m, &amd, VA, Access::Read));
        assert_eq!(
            (f.reason, f.level, f.error_code.0),
            (FaultReason::Reserved(ReservedBit::AmdRootBit8), Level::P4d, 0x9)
        );
        // Bit 8 of the PDPTE and PDE (non-leaf) is not reserved on AMD.
        let m = setup(P | RW, P | RW | G, P | RW | G, P | RW | G);
        assert!(translate(&m, &amd, VA, Access::Read).is_ok());
        assert_eq!(CpuVendor::from_cpuid(0x6874_7541, 0x6974_6e65, 0x444d_4163), CpuVendor::Amd);
        assert_eq!(CpuVendor::from_cpuid(0x756e_6547, 0x4965_6e69, 0x6c65_746e), CpuVendor::Intel);
    }

    #[test]
    fn large_pages_and_pat() {
        let mut m = setup(P | RW, P | RW, P | RW, P | RW);
        // 2 MiB page at 0x20_0000 with PAT (bit 12).
        m.write_u64(PhysAddr(0x3010), 0x20_0000 | 0x1000 | PS | P | RW).unwrap();
        let t = translate(&m, &ctx(), VA, Access::Write).unwrap();
        assert_eq!(t.size, PageSize::Size2M);
        assert_eq!(t.pa, PhysAddr(0x20_0000 + 0x5123));
        assert!(t.flags.contains(PteFlags::PAT));
        m.write_u64(PhysAddr(0x3010), 0x20_2000 | PS | P | RW).unwrap();
        let f = pf(translate(&m, &ctx(), VA, Access::Write));
        assert_eq!(f.reason, FaultReason::Reserved(ReservedBit::LargePageAlignment));
        assert_eq!(f.error_code.0, 0xb);
    }

    #[test]
    fn non_canonical_and_outside_memory() {
        let m = setup(P | RW, P | RW, P | RW, P | RW);
        assert_eq!(
            translate(&m, &ctx(), VirtAddr(0x8000_0000_0000), Access::Read),
            Err(Fault::NonCanonical(VirtAddr(0x8000_0000_0000)))
        );
        let mut m = m;
        m.write_u64(PhysAddr(0x2000), 0x7000_0000 | P | RW).unwrap();
        let e = translate(&m, &ctx(), VA, Access::Read).unwrap_err();
        assert_eq!(
            e,
            Fault::TableOutsideMemory {
                level: Level::Pmd,
                table: PhysAddr(0x7000_0000),
                entry_pa: PhysAddr(0x7000_0010)
            }
        );
    }

    #[test]
    fn self_reference_terminates() {
        let mut m = VecMem::new(0x2000);
        // PML4[0] -> PML4 itself: PDPT, PD and PT are all the PML4.
        m.write_u64(PhysAddr(0x1000), 0x1000 | P | RW | US).unwrap();
        let t = translate(&m, &ctx(), VirtAddr(0x123), Access::Read).unwrap();
        assert_eq!(t.pa, PhysAddr(0x1123));
        assert_eq!(t.trace.len(), 4);
    }

    #[test]
    fn five_level() {
        let mut m = setup(P | RW | US, P | RW | US, P | RW | US, P | RW | US);
        m.write_u64(PhysAddr(0x8000 + 8), 0x1000 | P | RW | US).unwrap();
        let mut c = ctx();
        c.la57 = true;
        c.cr3 = 0x8000;
        let va = VirtAddr((1 << 48) | VA.0);
        assert!(!va.is_canonical_48());
        let t = translate(&m, &c, va, Access::Read).unwrap();
        assert_eq!(t.pa, PhysAddr(0x9123));
        assert_eq!(t.trace.steps().next().unwrap().level, Level::Pgd);
        assert_eq!(t.trace.len(), 5);
    }

    #[test]
    fn accessed_dirty_update() {
        let mut m = setup(P | RW, P | RW, P | RW, P | RW);
        let t = translate_update_ad(&mut m, &ctx(), VA, Access::Write).unwrap();
        assert!(t.leaf.is_dirty() && t.leaf.is_accessed());
        for s in t.trace.steps() {
            let e = Pte(m.read_u64(s.entry_pa).unwrap());
            assert!(e.is_accessed());
            assert_eq!(e.is_dirty(), s.level == Level::Pte);
        }
        // A faulting access writes nothing.
        let mut u = setup(P | RW, P | RW, P | RW, P | RW);
        assert!(translate_update_ad(&mut u, &ctx().user(), VA, Access::Read).is_err());
        assert_eq!(u.read_u64(PhysAddr(0x1000)).unwrap(), 0x2000 | P | RW);
    }

    #[test]
    fn display() {
        use alloc::format;
        let m = setup(P | RW, P | RW, P, P | RW);
        let e = translate(&m, &ctx().user(), VA, Access::Write).unwrap_err();
        let s = format!("{e}");
        assert!(s.contains("error code 0x7 [P W U]"), "{s}");
        let (trace, _) = walk_trace(&m, &ctx(), VA);
        let s = format!("{trace}");
        assert_eq!(s.lines().count(), 4);
        assert!(s.starts_with(" P4D (PML4)[  0] @ 0x1000"), "{s}");
    }
}
