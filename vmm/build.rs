//! Builds the guest kernel (guest/) and the firmware (firmware/) with their
//! own bare-metal flags and embeds both ELFs in the vmm binary, so that a
//! plain `cargo build` gives a VMM that boots with no extra step.
//!
//! Each is its own cargo workspace with its own `.cargo/config.toml`; cargo
//! reads that file from the working directory, so the child cargo runs
//! there, with the variables this build inherited removed (they describe
//! the host build and would override the guest's flags).

use std::path::{Path, PathBuf};
use std::process::Command;

fn build(crate_dir: &Path, bin: &str, out_dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out_dir.join(format!("{bin}-target"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate_dir).args(["build", "--release", "--target-dir"]).arg(&target_dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let inherited = key.starts_with("CARGO_") && key != "CARGO_HOME";
        if inherited
            || matches!(key.as_str(), "RUSTFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER" | "RUSTDOCFLAGS")
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build {}: {e}", crate_dir.display()));
    assert!(status.success(), "building {} failed", crate_dir.display());
    target_dir.join("x86_64-unknown-linux-gnu/release").join(bin)
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());

    let kernel = build(&root.join("guest"), "kernel", &out_dir);
    let firmware = build(&root.join("firmware"), "firmware", &out_dir);
    println!("cargo:rustc-env=MMEMU_GUEST_ELF={}", kernel.display());
    println!("cargo:rustc-env=MMEMU_FIRMWARE_ELF={}", firmware.display());
    // Sources only: watching the crate folders whole would include any
    // target/ a developer builds there by hand.
    for path in [
        "guest/src",
        "guest/Cargo.toml",
        "guest/Cargo.lock",
        "guest/build.rs",
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
