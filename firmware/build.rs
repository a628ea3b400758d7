//! Points the linker at the firmware's linker script by absolute path.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/firmware.ld");
    println!("cargo:rerun-if-changed=firmware.ld");
    println!("cargo:rerun-if-changed=src/reset.S");
}
