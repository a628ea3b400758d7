//! Host-side inspection of guest memory: the seam between vm-memory and
//! mm-core. Every guest-virtual address the VMM resolves (crash reports,
//! gdb, verification) goes through mm-core's software MMU here, never
//! through a second walker.
//!
//! This module owns [`GuestPhys`] and the linear-address helpers; its
//! children own the rest of host-side inspection: [`spec`] (what the user
//! asked for), [`views`] (walk, `info tlb`, `info mem`), [`stage2`]
//! (GPA -> HVA -> host frame), [`dirty`] (KVM's dirty log), [`physmap`]
//! (the SVG map), [`verify`] (cross-checks) and [`checkpoint`] (the pause
//! points that run them all while the vCPU is parked). Guest state read
//! through the descriptor the guest publishes: [`guest`] (reading and
//! validating it, page descriptors through `vmemmap`), [`mmviews`]
//! (buddyinfo, slabinfo, meminfo, ps), [`invariants`] (the `--verify`
//! checks that need it). [`exits`] counts VM exits between checkpoints,
//! [`pause`] turns SIGUSR1 into an ad-hoc checkpoint. [`GuestLink`] is
//! what the run loop and the port bus share with the inspector.

pub mod checkpoint;
pub mod dirty;
pub mod exits;
pub mod guest;
pub mod invariants;
pub mod memcgcheck;
pub mod mmviews;
pub mod numa;
pub mod pagesums;
pub mod pause;
pub mod physmap;
pub mod spec;
pub mod stage2;
pub mod swapcheck;
pub mod tlbcheck;
pub mod verify;
pub mod views;
pub mod vmas;

/// What the vCPU side (port bus, run loop) and the inspection side (the
/// checkpoint hook, the gdb stub) share: where the guest's descriptor is
/// and the exit counts. Cloning shares.
#[derive(Debug, Clone, Default)]
pub struct GuestLink {
    /// The descriptor's address, set by the port bus.
    pub descriptor: guest::DescriptorSlot,
    /// Exits counted by the run loop.
    pub exits: exits::ExitCounter,
    /// Every vCPU, for the per-vCPU `cpu` view.
    pub vcpus: VcpuSet,
}

/// Every vCPU of the VM and which one reached the checkpoint (the run
/// loops set it before the park hooks run): the `cpu` view shows them all
/// with the world stopped. Cloning shares.
#[derive(Clone, Default)]
pub struct VcpuSet(std::sync::Arc<std::sync::Mutex<(Vec<crate::vcpu::SharedVcpu>, usize)>>);

/// One vCPU's state for the views: index, registers, KVM's MP state.
pub type VcpuState = (usize, Option<(kvm_regs, kvm_sregs, u32)>);

impl std::fmt::Debug for VcpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VcpuSet({} vCPUs)", self.len())
    }
}

impl VcpuSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<crate::vcpu::SharedVcpu>, usize)> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the VM's vCPUs (empty again once the run is over).
    pub fn set(&self, all: Vec<crate::vcpu::SharedVcpu>) {
        self.lock().0 = all;
    }

    /// The vCPU at the checkpoint about to be inspected.
    pub fn set_current(&self, index: usize) {
        self.lock().1 = index;
    }

    /// The vCPU at the checkpoint.
    pub fn current(&self) -> usize {
        self.lock().1
    }

    /// How many vCPUs (0 when not set: a VM driven by hand).
    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    /// Whether no vCPUs are set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each vCPU's registers and MP state; None for one whose lock is
    /// held (the vCPU at the checkpoint: its thread holds it while the
    /// hooks run) or whose registers cannot be read.
    pub fn states(&self) -> Vec<VcpuState> {
        let all = self.lock().0.clone();
        all.iter()
            .enumerate()
            .map(|(i, v)| {
                let st = v
                    .try_lock()
                    .ok()
                    .and_then(|v| Some((v.get_regs().ok()?, v.get_sregs().ok()?, v.get_mp_state().ok()?.mp_state)));
                (i, st)
            })
            .collect()
    }
}

use crate::memory::host_phys_bits;
use kvm_bindings::{kvm_regs, kvm_sregs};
use mm_core::addr::{PhysAddr, VirtAddr};
use mm_core::mem::{MemError, PhysMem};
use mm_core::paging::{walk, CpuContext, CpuVendor, Fault, Translation};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest-physical memory as mm-core sees it.
pub struct GuestPhys<'a>(pub &'a GuestMemoryMmap);

impl PhysMem for GuestPhys<'_> {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        self.0.read_slice(buf, GuestAddress(pa.0)).map_err(|_| MemError::OutOfRange(pa))
    }

    fn write(&mut self, pa: PhysAddr, buf: &[u8]) -> Result<(), MemError> {
        self.0.write_slice(buf, GuestAddress(pa.0)).map_err(|_| MemError::OutOfRange(pa))
    }
}

/// Whether guests on this host may use 1 GiB pages: only under hardware
/// virtualisation (the emulated MMU of platform.md faults on them).
fn gbpages() -> bool {
    let cpu_has = std::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0;
    cpu_has && crate::kvm::host_has_hw_virt()
}

/// The guest's CPU vendor, whose reserved-bit rules the walker applies
/// (on AMD, bit 8 of a PML4E is reserved). The vCPU gets KVM's supported
/// CPUID (vm.rs), whose leaf 0 is the host's, and KVM picks its
/// reserved bits from the guest's CPUID vendor: so the host's leaf 0.
pub fn cpu_vendor() -> CpuVendor {
    let l0 = std::arch::x86_64::__cpuid(0);
    CpuVendor::from_cpuid(l0.ebx, l0.edx, l0.ecx)
}

/// How the vCPU currently turns linear addresses into physical ones.
#[derive(Debug, Clone, Copy)]
pub enum AddressMode {
    /// CR0.PG = 0: linear = physical (truncated to 32 bits).
    Unpaged,
    /// Paging on: walk these tables.
    Paged(CpuContext),
}

/// The translation state of a vCPU, from its registers.
pub fn address_mode(regs: &kvm_regs, sregs: &kvm_sregs) -> AddressMode {
    if sregs.cr0 & mm_core::abi::cpu::CR0_PG == 0 {
        return AddressMode::Unpaged;
    }
    let host = host_paging();
    AddressMode::Paged(CpuContext::from_registers(&mm_core::paging::RawRegisters {
        cr0: sregs.cr0,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        efer: sregs.efer,
        rflags: regs.rflags,
        cpl: (sregs.cs.selector & 3) as u8,
        pkru: 0,
        maxphyaddr: host.0,
        gbpages: host.1,
        vendor: host.2,
    }))
}

/// What the host's CPU contributes to every translation, read once per
/// process: each CPUID traps to the hypervisor where the host is itself a
/// guest (as under kvm_pvm), tens of microseconds for the four, and the
/// gdb stub translates several times per single step (they were a third
/// of a step's time on such a host).
pub(crate) fn host_paging() -> (u8, bool, CpuVendor) {
    static HOST: std::sync::OnceLock<(u8, bool, CpuVendor)> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| (host_phys_bits() as u8, gbpages(), cpu_vendor()))
}

/// Translates a linear address (no access-rights check: inspection reads
/// what the tables map, whatever the privilege).
pub fn linear_to_phys(mem: &GuestMemoryMmap, mode: &AddressMode, la: u64) -> Result<u64, Fault> {
    match mode {
        AddressMode::Unpaged => Ok(la & 0xffff_ffff),
        AddressMode::Paged(ctx) => walk(&GuestPhys(mem), ctx, VirtAddr(la)).map(|t: Translation| t.pa.0),
    }
}

/// Walks `[la, la + len)` a page at a time: `translate` gives each piece's
/// guest-physical address and `f` does the work on it, with the piece's
/// range in the caller's buffer. Stops at the first piece that does not
/// translate or that `f` refuses; returns how many bytes were done. Every
/// access to guest memory by linear address (crash reports, gdb) goes
/// through here.
pub fn for_each_page(
    la: u64,
    len: usize,
    mut translate: impl FnMut(u64) -> Option<u64>,
    mut f: impl FnMut(u64, std::ops::Range<usize>) -> bool,
) -> usize {
    let mut done = 0;
    while done < len {
        let addr = la.wrapping_add(done as u64);
        let Some(pa) = translate(addr) else { break };
        let chunk = (4096 - (addr & 0xfff) as usize).min(len - done);
        if !f(pa, done..done + chunk) {
            break;
        }
        done += chunk;
    }
    done
}

/// Reads guest memory at a linear address, page by page; returns how many
/// bytes were read before the first unmapped page or hole.
pub fn read_linear(mem: &GuestMemoryMmap, mode: &AddressMode, la: u64, buf: &mut [u8]) -> usize {
    for_each_page(
        la,
        buf.len(),
        |a| linear_to_phys(mem, mode, a).ok(),
        |pa, r| mem.read_slice(&mut buf[r], GuestAddress(pa)).is_ok(),
    )
}

/// Writes guest memory at a linear address; returns how many bytes were
/// written before the first unmapped page.
pub fn write_linear(mem: &GuestMemoryMmap, mode: &AddressMode, la: u64, data: &[u8]) -> usize {
    for_each_page(
        la,
        data.len(),
        |a| linear_to_phys(mem, mode, a).ok(),
        |pa, r| mem.write_slice(&data[r], GuestAddress(pa)).is_ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm_core::abi::cpu::{CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};

    /// Builds a 4-level mapping of one page by hand (PML4 at 0x1000).
    fn mem_with_mapping(va: u64, pa: u64) -> GuestMemoryMmap {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let idx = |l: u32| (va >> (12 + 9 * l)) & 0x1ff;
        m.write_obj(0x2000u64 | 3, GuestAddress(0x1000 + idx(3) * 8)).unwrap();
        m.write_obj(0x3000u64 | 3, GuestAddress(0x2000 + idx(2) * 8)).unwrap();
        m.write_obj(0x4000u64 | 3, GuestAddress(0x3000 + idx(1) * 8)).unwrap();
        m.write_obj(pa | 3, GuestAddress(0x4000 + idx(0) * 8)).unwrap();
        m
    }

    #[test]
    fn reads_through_the_guest_tables_and_stops_at_holes() {
        let va = 0xffff_c900_0000_0000u64;
        let m = mem_with_mapping(va, 0x8000);
        m.write_slice(b"mapped!", GuestAddress(0x8000)).unwrap();
        let mut sregs = kvm_sregs {
            cr0: CR0_PG | CR0_PE,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_LMA | EFER_LME,
            ..Default::default()
        };
        let mode = address_mode(&kvm_regs::default(), &sregs);
        let mut buf = [0u8; 7];
        assert_eq!(read_linear(&m, &mode, va, &mut buf), 7);
        assert_eq!(&buf, b"mapped!");
        // The next page is not mapped: a read across stops at the boundary.
        let mut big = [0u8; 8];
        assert_eq!(read_linear(&m, &mode, va + 4092, &mut big), 4);
        assert_eq!(write_linear(&m, &mode, va + 4094, b"xyzw"), 2);
        sregs.cr0 = CR0_PE;
        assert!(matches!(address_mode(&kvm_regs::default(), &sregs), AddressMode::Unpaged));
    }
}
