//! Opening KVM, with errors that tell a user what to do, and the [`Vcpu`]
//! trait through which everything but the run loop reaches a vCPU.

use kvm_bindings::{kvm_fpu, kvm_guest_debug, kvm_mp_state, kvm_regs, kvm_sregs, kvm_translation};
use kvm_ioctls::{Kvm, VcpuFd};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// The KVM device the VMM uses unless told otherwise.
pub const DEFAULT_KVM_DEVICE: &str = "/dev/kvm";

/// Errors opening or querying KVM.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// The device node is missing.
    #[error("{0} does not exist: KVM is not available on this host (load the kvm_intel or kvm_amd module, or enable nested virtualisation if this is a VM)")]
    Missing(PathBuf),
    /// Not allowed to open it.
    #[error("permission denied opening {0}: add your user to the 'kvm' group (then log in again) or run as root")]
    Denied(PathBuf),
    /// Opening failed otherwise.
    #[error("cannot open {path}")]
    Open {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Opened, but it does not answer KVM's ioctls.
    #[error("{0} is not a KVM device (KVM_GET_API_VERSION failed); point the VMM at /dev/kvm")]
    NotKvm(PathBuf),
    /// Wrong API version.
    #[error("{path} speaks KVM API version {version}, this VMM needs 12")]
    ApiVersion {
        /// The device.
        path: PathBuf,
        /// What it reported.
        version: i32,
    },
    /// An ioctl on the VM failed.
    #[error("KVM refused to {what}")]
    Ioctl {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

impl KvmError {
    /// Wraps an ioctl error with what the VMM was doing.
    pub fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
        move |source| KvmError::Ioctl { what, source }
    }
}

/// Opens the KVM device at `path` and checks it is KVM.
pub fn open(path: &Path) -> Result<Kvm, KvmError> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| KvmError::Missing(path.into()))?;
    let kvm = Kvm::new_with_path(&c).map_err(|e| match e.errno() {
        libc::ENOENT => KvmError::Missing(path.into()),
        libc::EACCES | libc::EPERM => KvmError::Denied(path.into()),
        errno => KvmError::Open { path: path.into(), source: std::io::Error::from_raw_os_error(errno) },
    })?;
    let version = kvm.get_api_version();
    if version < 0 {
        return Err(KvmError::NotKvm(path.into()));
    }
    if version != 12 {
        return Err(KvmError::ApiVersion { path: path.into(), version });
    }
    Ok(kvm)
}

/// Whether the host CPU has hardware virtualisation (VMX or SVM). Without
/// it KVM emulates guest ring 0 instruction by instruction (platform.md),
/// and some things (1 GiB pages, SSE in ring 0) behave differently.
///
/// Read once per process: `/proc/cpuinfo` is slow to generate (tens of
/// microseconds, with IPIs to every CPU) and every address translation of
/// the gdb stub and the views asks (for 1 GiB pages).
pub fn host_has_hw_virt() -> bool {
    static HW_VIRT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HW_VIRT.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|c| {
                c.lines()
                    .filter(|l| l.starts_with("flags"))
                    .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
            })
            .unwrap_or(false)
    })
}

/// The state of one virtual CPU, as everything outside the run loop sees
/// it: inspection at checkpoints, `--verify`'s KVM cross-check, the gdb
/// stub and crash reports read and write a vCPU only through this trait
/// (Cloud Hypervisor's `hypervisor::Vcpu` is the model), never through
/// `KVM_RUN`, which only the run loop ([`crate::vcpu`]) calls. The method
/// names are kvm-ioctls' own, so `VcpuFd` implements it by forwarding.
pub trait Vcpu {
    /// The general registers.
    fn get_regs(&self) -> Result<kvm_regs, kvm_ioctls::Error>;
    /// Loads the general registers.
    fn set_regs(&self, regs: &kvm_regs) -> Result<(), kvm_ioctls::Error>;
    /// Segment, control and descriptor-table registers.
    fn get_sregs(&self) -> Result<kvm_sregs, kvm_ioctls::Error>;
    /// Loads the special registers.
    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<(), kvm_ioctls::Error>;
    /// The x87/SSE state.
    fn get_fpu(&self) -> Result<kvm_fpu, kvm_ioctls::Error>;
    /// Loads the x87/SSE state.
    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<(), kvm_ioctls::Error>;
    /// KVM's own translation of a guest-virtual address (KVM_TRANSLATE).
    fn translate_gva(&self, gva: u64) -> Result<kvm_translation, kvm_ioctls::Error>;
    /// Debug controls for the next runs (single-step, breakpoints).
    fn set_guest_debug(&self, dbg: &kvm_guest_debug) -> Result<(), kvm_ioctls::Error>;
    /// Running, halted, waiting for a SIPI...
    fn get_mp_state(&self) -> Result<kvm_mp_state, kvm_ioctls::Error>;
}

impl Vcpu for VcpuFd {
    fn get_regs(&self) -> Result<kvm_regs, kvm_ioctls::Error> {
        VcpuFd::get_regs(self)
    }
    fn set_regs(&self, regs: &kvm_regs) -> Result<(), kvm_ioctls::Error> {
        VcpuFd::set_regs(self, regs)
    }
    fn get_sregs(&self) -> Result<kvm_sregs, kvm_ioctls::Error> {
        VcpuFd::get_sregs(self)
    }
    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<(), kvm_ioctls::Error> {
        VcpuFd::set_sregs(self, sregs)
    }
    fn get_fpu(&self) -> Result<kvm_fpu, kvm_ioctls::Error> {
        VcpuFd::get_fpu(self)
    }
    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<(), kvm_ioctls::Error> {
        VcpuFd::set_fpu(self, fpu)
    }
    fn translate_gva(&self, gva: u64) -> Result<kvm_translation, kvm_ioctls::Error> {
        VcpuFd::translate_gva(self, gva)
    }
    fn set_guest_debug(&self, dbg: &kvm_guest_debug) -> Result<(), kvm_ioctls::Error> {
        VcpuFd::set_guest_debug(self, dbg)
    }
    fn get_mp_state(&self) -> Result<kvm_mp_state, kvm_ioctls::Error> {
        VcpuFd::get_mp_state(self)
    }
}
