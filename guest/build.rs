//! Points the linker at the kernel's linker script by absolute path (the
//! working directory of the link step is not ours to choose), and builds
//! the user programs (guest/user/, their own cargo workspace with their
//! own flags) so the kernel can embed them with `include_bytes!`.
//!
//! The child cargo runs in guest/user/ (cargo reads `.cargo/config.toml`
//! from the working directory) with the variables this build inherited
//! removed: they describe the kernel build and would override the user
//! programs' flags (the approach of vmm/build.rs).

use std::path::PathBuf;
use std::process::Command;

fn build_user_programs(dir: &str) -> PathBuf {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("user-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(format!("{dir}/user")).args(["build", "--release", "--target-dir"]).arg(&target_dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let inherited = key.starts_with("CARGO_") && key != "CARGO_HOME";
        if inherited
            || matches!(key.as_str(), "RUSTFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER" | "RUSTDOCFLAGS")
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build the user programs: {e}"));
    assert!(status.success(), "building the user programs (guest/user) failed");
    target_dir.join("x86_64-unknown-linux-gnu/release")
}

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/kernel.ld");
    println!("cargo:rerun-if-changed=kernel.ld");
    let user = build_user_programs(&dir);
    println!("cargo:rustc-env=MMEMU_USER_DIR={}", user.display());
    for path in ["user/src", "user/Cargo.toml", "user/build.rs", "user/user.ld", "user/.cargo/config.toml"] {
        println!("cargo:rerun-if-changed={dir}/{path}");
    }
}
