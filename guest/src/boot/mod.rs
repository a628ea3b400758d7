//! What the kernel is handed at boot: the PVH `hvm_start_info` (its
//! E820-style memory map and command line) and which path brought it here.
//! All three boot paths (VMM direct, our firmware, a PVH loader such as
//! QEMU) use this one format, defined in mm-core's ABI.

use crate::mem::phys_to_virt;
pub use mm_core::abi::boot::E820_RAM;
use mm_core::abi::boot::{
    e820_name, HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, BOOT_MAPPED, CMDLINE_MAX, INITRD_MAX_END, PATH_DIRECT,
    PATH_FIRMWARE, PATH_PVH, XEN_HVM_START_MAGIC,
};

/// One E820-style memory-map entry (`hvm_memmap_table_entry`).
pub type MemmapEntry = HvmMemmapEntry;

/// How the kernel was entered.
#[derive(Clone, Copy)]
pub enum BootPath {
    /// The VMM built long mode itself and jumped to the ELF entry.
    Direct,
    /// Our real-mode firmware walked reset vector -> protected -> long mode.
    Firmware,
    /// A PVH loader entered the 32-bit PVH entry point.
    Pvh,
    /// Something else: the register held an unknown value.
    Unknown,
}

impl BootPath {
    /// Decodes the boot-path register `_start` received.
    pub fn from_register(v: u64) -> Self {
        match u8::try_from(v) {
            Ok(PATH_DIRECT) => BootPath::Direct,
            Ok(PATH_FIRMWARE) => BootPath::Firmware,
            Ok(PATH_PVH) => BootPath::Pvh,
            _ => BootPath::Unknown,
        }
    }

    /// A name for the banner.
    pub fn name(self) -> &'static str {
        match self {
            BootPath::Direct => "direct boot (VMM-built long mode)",
            BootPath::Firmware => "firmware (real mode -> protected mode -> long mode)",
            BootPath::Pvh => "PVH 32-bit entry",
            BootPath::Unknown => "an unknown boot path",
        }
    }
}

/// The name Linux prints for an entry's type.
pub fn kind_name(e: &MemmapEntry) -> &'static str {
    e820_name(e.kind)
}

/// The boot information, validated.
pub struct StartInfo {
    info: &'static HvmStartInfo,
}

/// Entries beyond this are ignored: a sane map has a handful.
const MAX_MEMMAP: usize = 128;

impl StartInfo {
    /// Reads and checks the `hvm_start_info` at physical `pa`.
    pub fn read(pa: u64) -> Result<Self, &'static str> {
        if pa == 0 || !pa.is_multiple_of(8) || pa >= BOOT_MAPPED {
            return Err("the start_info pointer is null, misaligned or above 1 GiB");
        }
        // SAFETY: the boot page tables map the first GiB at -2 GiB and `pa`
        // was checked to lie there; the struct is plain data.
        let info = unsafe { &*(phys_to_virt(pa) as *const HvmStartInfo) };
        if info.magic != XEN_HVM_START_MAGIC {
            return Err("bad hvm_start_info magic");
        }
        if info.memmap_paddr == 0 || info.memmap_entries == 0 {
            return Err("no memory map");
        }
        let end = info.memmap_paddr + info.memmap_entries as u64 * core::mem::size_of::<MemmapEntry>() as u64;
        if end >= BOOT_MAPPED || info.cmdline_paddr >= BOOT_MAPPED {
            return Err("memory map or command line above 1 GiB");
        }
        Ok(StartInfo { info })
    }

    /// The E820-style memory map.
    pub fn memmap(&self) -> &'static [MemmapEntry] {
        let n = (self.info.memmap_entries as usize).min(MAX_MEMMAP);
        // SAFETY: `read` checked the table lies in the mapped first GiB;
        // entries are plain data, 8-byte aligned as the ABI requires.
        unsafe { core::slice::from_raw_parts(phys_to_virt(self.info.memmap_paddr) as *const MemmapEntry, n) }
    }

    /// The initrd (module 0): its physical start and end, if the loader
    /// handed one over within what the kernel can read at boot.
    pub fn initrd(&self) -> Result<Option<(u64, u64)>, &'static str> {
        if self.info.nr_modules == 0 {
            return Ok(None);
        }
        let list = self.info.modlist_paddr;
        if list == 0 || !list.is_multiple_of(8) || list + 32 > BOOT_MAPPED {
            return Err("the module list pointer is null, misaligned or above 1 GiB");
        }
        // SAFETY: checked to lie in the mapped first GiB, 8-byte aligned;
        // the entry is plain data.
        let m = unsafe { *(phys_to_virt(list) as *const HvmModlistEntry) };
        let end = m.paddr.checked_add(m.size).ok_or("the initrd wraps around")?;
        if end > INITRD_MAX_END || m.size == 0 {
            return Err("the initrd is empty or ends above the boot-time direct map");
        }
        Ok(Some((m.paddr, end)))
    }

    /// The command line ("" when none was given or it is not UTF-8).
    pub fn cmdline(&self) -> &'static str {
        if self.info.cmdline_paddr == 0 {
            return "";
        }
        let p = phys_to_virt(self.info.cmdline_paddr) as *const u8;
        let mut len = 0;
        // SAFETY: the string lies in the mapped first GiB (checked in
        // `read`); the scan stops at the NUL or after CMDLINE_MAX bytes.
        while len < CMDLINE_MAX && unsafe { *p.add(len) } != 0 {
            len += 1;
        }
        // SAFETY: `len` bytes from `p` were just read.
        let bytes = unsafe { core::slice::from_raw_parts(p, len) };
        core::str::from_utf8(bytes).unwrap_or("")
    }
}

/// Finds an RSDP in the BIOS read-only area (0xE0000-0xFFFFF, on 16-byte
/// boundaries, with its signature and checksum), 0 if none.
fn scan_rsdp(read: &mut dyn FnMut(u64, &mut [u8]) -> bool) -> u64 {
    let mut buf = [0u8; 20];
    let mut pa = 0xe_0000;
    while pa < 0x10_0000 {
        if read(pa, &mut buf) && &buf[..8] == b"RSD PTR " && buf.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0 {
            return pa;
        }
        pa += 16;
    }
    0
}

/// What the kernel keeps of the boot information: copied into the kernel
/// image early, because the boot structures live in low memory that the
/// kernel's own page tables do not map at -2 GiB.
pub struct BootParams {
    memmap: [MemmapEntry; 32],
    nr_memmap: usize,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
    cpus: Option<mm_core::acpi::CpuTopology>,
    numa: Option<mm_core::numa::Numa>,
}

impl BootParams {
    /// Copies what `info` points to.
    pub fn copy_from(info: &StartInfo) -> Self {
        let empty = MemmapEntry { addr: 0, size: 0, kind: 0, reserved: 0 };
        let initrd = info.initrd().unwrap_or_else(|e| {
            crate::kprintln!("initrd: ignored: {}", e);
            None
        });
        let mut p = BootParams {
            memmap: [empty; 32],
            nr_memmap: 0,
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            initrd,
            rsdp: info.info.rsdp_paddr,
            cpus: None,
            numa: None,
        };
        // The MADT is read now, while the boot page tables map the whole
        // first GiB (ACPI tables sit in a hole of the E820 map that the
        // kernel's direct map leaves out).
        let mut read = |pa: u64, buf: &mut [u8]| {
            let Some(end) = pa.checked_add(buf.len() as u64) else { return false };
            if end > BOOT_MAPPED {
                return false;
            }
            // SAFETY: the range lies in the first GiB, which the boot
            // page tables map at -2 GiB; reading ACPI bytes has no
            // side effects.
            unsafe { core::ptr::copy_nonoverlapping(phys_to_virt(pa) as *const u8, buf.as_mut_ptr(), buf.len()) };
            true
        };
        if p.rsdp == 0 {
            // A loader that passes none (a BIOS, QEMU's): the legacy scan
            // of the BIOS area, as Linux's acpi_find_root_pointer.
            p.rsdp = scan_rsdp(&mut read);
        }
        if p.rsdp == 0 {
            crate::kprintln!("ACPI: no RSDP: one CPU");
        } else {
            match mm_core::acpi::read_madt(p.rsdp, &mut read) {
                Ok(t) => p.cpus = Some(t),
                Err(e) => crate::kprintln!("ACPI: {}: one CPU", e),
            }
            // The NUMA nodes (SRAT, SLIT), as Linux's acpi_numa_init.
            match mm_core::numa::read_numa(p.rsdp, &mut read) {
                Ok(n) => p.numa = n,
                Err(e) => crate::kprintln!("ACPI: {}: NUMA off", e),
            }
        }
        for e in info.memmap().iter().filter(|e| e.size != 0).take(32) {
            p.memmap[p.nr_memmap] = *e;
            p.nr_memmap += 1;
        }
        let c = info.cmdline().as_bytes();
        let n = c.len().min(p.cmdline.len());
        p.cmdline[..n].copy_from_slice(&c[..n]);
        p.cmdline_len = n;
        p
    }

    /// The E820 map (non-empty entries).
    pub fn memmap(&self) -> &[MemmapEntry] {
        &self.memmap[..self.nr_memmap]
    }

    /// The initrd's physical range, if one was handed over.
    pub fn initrd(&self) -> Option<(u64, u64)> {
        self.initrd
    }

    /// The CPUs the ACPI MADT lists (None: no usable MADT, one CPU).
    pub fn cpus(&self) -> Option<&mm_core::acpi::CpuTopology> {
        self.cpus.as_ref()
    }

    /// The NUMA topology the ACPI SRAT and SLIT describe (None: no SRAT).
    pub fn numa(&self) -> Option<&mm_core::numa::Numa> {
        self.numa.as_ref()
    }

    /// The command line.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}
