// Shared by vmm/build.rs and guest/build.rs (with `include!`): builds a
// freestanding cargo workspace from inside another crate's build script.
//
// The child cargo runs in the workspace's own folder, because cargo reads
// `.cargo/config.toml` (the freestanding flags) from the working directory,
// and with the variables the parent build inherited removed: they describe
// the parent build and would override the child's flags.

/// Builds `crate_dir` with `cargo build --release` into `target_dir`;
/// returns the release output folder of the x86_64-unknown-linux-gnu target.
fn nested_cargo_build(crate_dir: &std::path::Path, target_dir: &std::path::Path) -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(crate_dir).args(["build", "--release", "--target-dir"]).arg(target_dir);
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
    target_dir.join("x86_64-unknown-linux-gnu/release")
}
