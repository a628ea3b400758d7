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
