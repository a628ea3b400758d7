//! Points the linker at the user programs' linker script by absolute path.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/user.ld");
    println!("cargo:rerun-if-changed=user.ld");
}
