//! Opening KVM, with errors that tell a user what to do.

use kvm_ioctls::Kvm;
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
