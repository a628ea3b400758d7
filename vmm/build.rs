//! Builds the guest kernel (guest/) and the firmware (firmware/) with their
//! own bare-metal flags and embeds both ELFs in the vmm binary, so that a
//! plain `cargo build` gives a VMM that boots with no extra step.
//!
//! Each is its own cargo workspace with its own `.cargo/config.toml`; cargo
//! reads that file from the working directory, so the child cargo runs
//! there, with the variables this build inherited removed (they describe
//! the host build and would override the guest's flags).

use std::path::{Path, PathBuf};

include!("../guest/nested_build.rs");

fn build(crate_dir: &Path, bin: &str, out_dir: &Path) -> PathBuf {
    nested_cargo_build(crate_dir, &out_dir.join(format!("{bin}-target"))).join(bin)
}

/// The package version plus the git commit the binary was built from
/// (`0.1.0 (commit a1b2c3d4e5f6)`), or the version alone outside a git
/// checkout.
fn version(root: &Path) -> String {
    let pkg = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // Rebuild when HEAD moves (a commit, a checkout); the paths come from
    // git itself, as a worktree's HEAD is not under root/.git.
    if let Some(p) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    if let Some(p) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]).filter(|r| r.starts_with("refs/")) {
        if let Some(p) = git(&["rev-parse", "--git-path", &p]) {
            println!("cargo:rerun-if-changed={}", root.join(p).display());
        }
    }
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => format!("{pkg} (commit {commit})"),
        None => format!("{pkg} (not built from a git checkout)"),
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    // cargo-fuzz builds the VMM (vmm/fuzz) with `--cfg fuzzing`: its
    // targets never boot a guest, so they embed empty images instead of
    // building the guest and firmware again with the fuzzer's toolchain.
    let (kernel, firmware) = if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let empty = out_dir.join("empty.elf");
        std::fs::write(&empty, b"").expect("OUT_DIR is writable");
        (empty.clone(), empty)
    } else {
        (build(&root.join("guest"), "kernel", &out_dir), build(&root.join("firmware"), "firmware", &out_dir))
    };
    println!("cargo:rustc-env=MMEMU_GUEST_ELF={}", kernel.display());
    println!("cargo:rustc-env=MMEMU_FIRMWARE_ELF={}", firmware.display());
    println!("cargo:rustc-env=MMEMU_VERSION={}", version(&root));
    // Sources only: watching the crate folders whole would include any
    // target/ a developer builds there by hand.
    for path in [
        "guest/src",
        "guest/Cargo.toml",
        "guest/Cargo.lock",
        "guest/build.rs",
        "guest/nested_build.rs",
        "guest/kernel.ld",
        "guest/.cargo/config.toml",
        "guest/user/src",
        "guest/user/Cargo.toml",
        "guest/user/Cargo.lock",
        "guest/user/build.rs",
        "guest/user/user.ld",
        "guest/user/.cargo/config.toml",
        "firmware/src",
        "firmware/Cargo.toml",
        "firmware/build.rs",
        "firmware/firmware.ld",
        "firmware/.cargo/config.toml",
        "mm-core/src",
        "mm-core/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
}
