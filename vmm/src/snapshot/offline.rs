//! `vmm inspect FILE`: the views and checks of `vmm run --inspect/--verify`
//! on a snapshot file, without KVM. The inspector is the live one
//! ([`Inspector`]), given the file's RAM as guest memory and the saved
//! registers as its vCPU ([`super::CoreVcpu`]); what needs a live VM
//! (`dirty`, `exits`, `stage2`, the `kvm` check) says so.

use super::{CoreFile, SnapshotError};
use crate::boot::kernel::KernelImage;
use crate::inspect::checkpoint::{Inspector, ParkHook};
use crate::inspect::spec::InspectConfig;
use crate::inspect::GuestLink;
use crate::symbols::Symbols;
use crate::vm::VmError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a view or check needs the live VM.
pub const OFFLINE: &str = "this is a snapshot file, with no KVM, vCPU or host mapping behind it";

/// The kernel's symbols for a snapshot: `--kernel`, else the kernel the
/// snapshot names, else the embedded guest; plus the firmware's when it
/// booted through it.
pub fn symbols(core: &CoreFile, kernel: Option<&Path>) -> Result<Symbols, VmError> {
    let path: Option<PathBuf> = kernel.map(Into::into).or_else(|| core.meta.kernel.clone());
    let mut s = match path {
        Some(p) => KernelImage::from_file(&p)?.symbols,
        None => KernelImage::embedded()?.symbols,
    };
    if core.meta.firmware {
        s.merge(Symbols::from_static(crate::EMBEDDED_FIRMWARE));
    }
    Ok(s)
}

/// Opens `file` and shows what `cfg` asks at its checkpoint, as the live
/// inspector would have; with nothing asked, says what the file holds.
pub fn run(file: &Path, kernel: Option<&Path>, cfg: InspectConfig) -> Result<(), VmError> {
    let core = CoreFile::open(file)?;
    let (maxphyaddr, _, vendor) = crate::inspect::host_paging();
    if core.meta.maxphyaddr != maxphyaddr || core.meta.vendor != format!("{vendor:?}") {
        eprintln!(
            "vmm: note: the snapshot was taken on a {} host with {}-bit physical addresses; this one is {vendor:?} with {maxphyaddr}: reserved-bit faults may be judged differently",
            core.meta.vendor, core.meta.maxphyaddr
        );
    }
    let symbols = symbols(&core, kernel)?;
    if !cfg.is_active() {
        let r = &core.vcpu.regs;
        println!(
            "{}: snapshot at checkpoint '{}' by vmm {}\n  RAM {} MiB in {} regions; RIP {:#x} <{}>, CR3 {:#x}; descriptor {}",
            file.display(),
            crate::devices::results::escape(&core.meta.checkpoint),
            core.meta.vmm,
            core.meta.regions.iter().map(|r| r.size).sum::<u64>() >> 20,
            core.meta.regions.len(),
            r.rip,
            symbols.describe(r.rip),
            core.vcpu.sregs.cr3,
            core.meta.descriptor_pa.map_or("not published".into(), |p| format!("at {p:#x}")),
        );
        return Ok(());
    }
    let out =
        cfg.output().map_err(|source| VmError::Output { path: cfg.json_out.clone().unwrap_or_default(), source })?;
    let link = GuestLink::default();
    if let Some(pa) = core.meta.descriptor_pa {
        link.descriptor.set(pa);
    }
    let mut inspector =
        Inspector::new(cfg, core.mem.clone(), None, Arc::new(symbols), out).with_link(link).offline(OFFLINE);
    inspector.checkpoint(&core.meta.checkpoint, &core.vcpu);
    // The inspector always keeps an outcome; a poisoned lock would mean
    // it panicked, which already ended this thread.
    if let Some(Ok(o)) = inspector.outcome().as_ref().map(|o| o.lock()) {
        if let Some(e) = o.error.clone() {
            return Err(e.into());
        }
        for note in o.finish()? {
            eprintln!("vmm: {note}");
        }
    }
    Ok(())
}

impl From<SnapshotError> for VmError {
    fn from(e: SnapshotError) -> Self {
        VmError::Snapshot(e)
    }
}

/// `vmm inspect FILE --gdb ADDR`: serves the snapshot read-only to gdb.
pub fn gdb(file: &Path, kernel: Option<&Path>, addr: &crate::gdb::GdbAddr) -> Result<(), VmError> {
    let core = CoreFile::open(file)?;
    let symbols = symbols(&core, kernel)?;
    super::gdbcore::serve(core, symbols, addr)?;
    Ok(())
}
