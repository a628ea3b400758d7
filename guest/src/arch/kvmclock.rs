//! The host's wall-clock time through KVM's paravirtual clock (Linux's
//! arch/x86/kernel/kvmclock.c): CLOCK_REALTIME, gettimeofday and time()
//! count from the Unix epoch as the host's clock does.
//!
//! When CPUID's hypervisor leaf 0x40000000 says "KVMKVMKVM" and leaf
//! 0x40000001 has KVM_FEATURE_CLOCKSOURCE2, writing a guest-physical
//! address to MSR_KVM_WALL_CLOCK_NEW makes KVM store there the wall-clock
//! time at which the KVM clock read 0 (`struct pvclock_wall_clock`), and
//! MSR_KVM_SYSTEM_TIME_NEW enables the per-vCPU `pvclock_vcpu_time_info`
//! from which the KVM clock's current value follows (scaled TSC). Their
//! sum is the wall-clock time now; the kernel keeps its difference from
//! its own boot-relative clock (`proc/linux.rs` `now_ns`) as the
//! real-time offset, measured once at the first real-time query, then
//! turns the system-time area off again. Without the feature the offset
//! is 0 (real time counts from the epoch at boot, as before) and the
//! kernel says so once.

use core::sync::atomic::{AtomicU64, Ordering};

/// `MSR_KVM_WALL_CLOCK_NEW`.
const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
/// `MSR_KVM_SYSTEM_TIME_NEW`.
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// `KVM_FEATURE_CLOCKSOURCE2` in leaf 0x40000001's eax.
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
/// Where the time info goes in the page (the wall clock takes bytes
/// 0-11).
const TIME_INFO_OFF: u64 = 64;

/// The offset plus one (0: not measured yet).
static OFFSET: AtomicU64 = AtomicU64::new(0);

/// Whether the hypervisor is KVM with the second-generation clock MSRs.
fn has_kvmclock() -> bool {
    let sig = core::arch::x86_64::__cpuid(0x4000_0000);
    let name = [sig.ebx.to_le_bytes(), sig.ecx.to_le_bytes(), sig.edx.to_le_bytes()];
    if name.concat() != *b"KVMKVMKVM\0\0\0" || sig.eax < 0x4000_0001 {
        return false;
    }
    core::arch::x86_64::__cpuid(0x4000_0001).eax & KVM_FEATURE_CLOCKSOURCE2 != 0
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc reads the counter into edx:eax (it works in ring 0
    // here: platform.md).
    unsafe {
        let (lo, hi): (u32, u32);
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack));
        (hi as u64) << 32 | lo as u64
    }
}

/// Reads a `u32`/`u64` field of the page at direct-map address `va`.
fn rd32(va: u64) -> u32 {
    // SAFETY: `va` lies in the page this module allocated and owns, in the
    // direct map; volatile, as the hypervisor writes it.
    unsafe { core::ptr::read_volatile(va as *const u32) }
}
fn rd64(va: u64) -> u64 {
    // SAFETY: as `rd32`.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

/// The wall-clock time now, in ns since the epoch, from KVM's clock
/// (Linux's `kvm_get_wallclock` + `pvclock_clocksource_read`); None if
/// the hypervisor does not offer it or the page cannot be had.
fn kvm_wall_clock_ns() -> Option<u64> {
    if !has_kvmclock() {
        return None;
    }
    let pfn = crate::mm::page_alloc::alloc_pages(0, crate::mm::GFP_KERNEL).ok()?;
    let pa = pfn << mm_core::addr::PAGE_SHIFT;
    let va = crate::mm::phys_to_virt(pa);
    // SAFETY: the page is ours and zeroed below by KVM's writes only; the
    // MSRs take a guest-physical address (bit 0 enables the time info).
    unsafe { super::cpu::wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (pa + TIME_INFO_OFF) | 1) };
    let mut result = None;
    for _ in 0..8 {
        // SAFETY: as above; KVM writes the wall clock once, now.
        unsafe { super::cpu::wrmsr(MSR_KVM_WALL_CLOCK_NEW, pa) };
        let (wv, sec, nsec) = (rd32(va), rd32(va + 4), rd32(va + 8));
        let t = va + TIME_INFO_OFF;
        let version = rd32(t);
        let (tsc_timestamp, system_time) = (rd64(t + 8), rd64(t + 16));
        let (mul, shift) = (rd32(t + 24), rd32(t + 28) as u8 as i8);
        let tsc = rdtsc();
        // An odd version is an update in progress; a changed one, an
        // update that raced the reads.
        if wv & 1 != 0 || version & 1 != 0 || rd32(t) != version || rd32(va) != wv {
            continue;
        }
        if mul == 0 || version == 0 {
            break; // never written: the MSR does nothing here
        }
        let mut delta = tsc.saturating_sub(tsc_timestamp);
        delta = if shift < 0 { delta >> (-shift) as u32 } else { delta << shift as u32 };
        let kvm_ns = system_time + ((delta as u128 * mul as u128) >> 32) as u64;
        result = Some(u64::from(sec) * 1_000_000_000 + u64::from(nsec) + kvm_ns);
        break;
    }
    // SAFETY: 0 turns the time info off before its page is freed.
    unsafe { super::cpu::wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0) };
    let _ = crate::mm::free_pages(pfn, 0);
    // A wall clock before 2001 is no wall clock (an empty struct).
    result.filter(|&ns| ns > 1_000_000_000 * 1_000_000_000)
}

/// CLOCK_REALTIME minus the kernel's boot-relative clock `now` (ns),
/// measured at the first call (`now` is the boot clock's reading then).
pub fn realtime_offset(now: u64) -> u64 {
    let v = OFFSET.load(Ordering::Relaxed);
    if v != 0 {
        return v - 1;
    }
    let off = match kvm_wall_clock_ns() {
        Some(wall) => wall.saturating_sub(now),
        None => {
            crate::kprintln!(
                "kvmclock: no KVM wall clock (CPUID 0x40000001 CLOCKSOURCE2): real time counts from the epoch at boot"
            );
            0
        }
    };
    OFFSET.store(off + 1, Ordering::Relaxed);
    off
}
