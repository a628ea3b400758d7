//! Each vCPU's CPUID: what KVM supports, with the vCPU's own APIC ID and
//! the VM's CPU count where a kernel reads its topology (leaf 1 and the
//! extended topology leaves 0xB and 0x1F), as QEMU fills them.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Leaf 1 EDX: HTT, "EBX[23:16] is valid".
const HTT: u32 = 1 << 28;

/// Bits of the APIC ID that number `n` logical CPUs (0 for one).
fn id_bits(n: u32) -> u32 {
    n.max(1).next_power_of_two().trailing_zeros()
}

/// One subleaf of the extended topology leaves (0xB, 0x1F) for a package
/// of `cpus` single-threaded cores: level 0 SMT (one thread), level 1
/// core (`cpus` of them), higher levels invalid.
fn topology_subleaf(function: u32, index: u32, apic_id: u32, cpus: u32) -> kvm_cpuid_entry2 {
    let (eax, ebx, ecx) = match index {
        0 => (0, 1, (1 << 8) | index),
        1 => (id_bits(cpus), cpus, (2 << 8) | index),
        _ => (0, 0, index),
    };
    kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx,
        edx: apic_id,
        ..Default::default()
    }
}

/// `supported` (KVM's CPUID) for the vCPU with APIC ID `apic_id` of a VM
/// with `cpus` vCPUs.
pub fn for_vcpu(supported: &CpuId, apic_id: u8, cpus: u8) -> CpuId {
    if cpus <= 1 {
        // One vCPU: KVM's CPUID as it always was (APIC ID 0 is KVM's too).
        return supported.clone();
    }
    let (id, n) = (u32::from(apic_id), u32::from(cpus));
    let max_basic = supported.as_slice().iter().find(|e| e.function == 0).map_or(0, |e| e.eax);
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .filter(|e| e.function != 0xb && e.function != 0x1f)
        .copied()
        .map(|mut e| {
            if e.function == 1 {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical CPUs.
                e.ebx = (e.ebx & 0xffff) | (id << 24) | ((n.next_power_of_two() & 0xff) << 16);
                if n > 1 {
                    e.edx |= HTT;
                }
            }
            e
        })
        .collect();
    for function in [0xb, 0x1f] {
        let present = supported.as_slice().iter().any(|e| e.function == function);
        // 0xB whenever the basic leaves reach it; 0x1F only if KVM offers it.
        if (function == 0xb && max_basic >= 0xb) || present {
            for index in 0..3 {
                entries.push(topology_subleaf(function, index, id, n));
            }
        }
    }
    // From at most KVM's own count of entries plus six: fits (the
    // wrapper's limit is KVM_MAX_CPUID_ENTRIES, far above what KVM lists).
    CpuId::from_entries(&entries).unwrap_or_else(|_| supported.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice().iter().find(|e| e.function == function && e.index == index).unwrap()
    }

    #[test]
    fn each_vcpu_gets_its_apic_id_and_the_count() {
        let base = CpuId::from_entries(&[
            kvm_cpuid_entry2 { function: 0, eax: 0xd, ..Default::default() },
            kvm_cpuid_entry2 { function: 1, ebx: 0xff00_0800, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, index: 0, edx: 77, ..Default::default() },
        ])
        .unwrap();
        let c = for_vcpu(&base, 2, 4);
        assert_eq!(leaf(&c, 1, 0).ebx >> 24, 2);
        assert_eq!((leaf(&c, 1, 0).ebx >> 16) & 0xff, 4);
        assert_eq!(leaf(&c, 1, 0).ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(leaf(&c, 1, 0).edx & HTT, 0);
        assert_eq!(leaf(&c, 0xb, 0).edx, 2);
        assert_eq!(leaf(&c, 0xb, 1).ebx, 4);
        assert_eq!(leaf(&c, 0xb, 1).eax, 2);
        assert_eq!(leaf(&c, 0xb, 1).ecx, 0x201);
        assert_eq!(c.as_slice().iter().filter(|e| e.function == 0xb).count(), 3);
        let one = for_vcpu(&base, 0, 1);
        assert_eq!(one.as_slice(), base.as_slice(), "one vCPU: unchanged");
    }
}
