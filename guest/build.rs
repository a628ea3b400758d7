//! Points the linker at the kernel's linker script by absolute path (the
//! working directory of the link step is not ours to choose), and builds
//! the user programs (guest/user/, their own cargo workspace with their
//! own flags) so the kernel can embed them with `include_bytes!`.
//!
//! The child cargo build is nested_build.rs, shared with vmm/build.rs.

use std::path::{Path, PathBuf};

include!("nested_build.rs");

fn build_user_programs(dir: &str) -> PathBuf {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    nested_cargo_build(&Path::new(dir).join("user"), &out_dir.join("user-target"))
}

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/kernel.ld");
    println!("cargo:rerun-if-changed=kernel.ld");
    println!("cargo:rerun-if-changed=nested_build.rs");
    let user = build_user_programs(&dir);
    println!("cargo:rustc-env=MMEMU_USER_DIR={}", user.display());
    for path in ["user/src", "user/Cargo.toml", "user/build.rs", "user/user.ld", "user/.cargo/config.toml"] {
        println!("cargo:rerun-if-changed={dir}/{path}");
    }
}
