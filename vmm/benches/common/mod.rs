//! What several benches share: building the C programs they run in the
//! guest (and on the host, as the peer) from sources embedded in the bench.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `source` to `dir/NAME.c` and compiles it statically with `cc`
/// (`gcc` or `musl-gcc`) and `-O2` plus `extra` flags into `dir/NAME`.
/// Panics with the compiler's own message: a bench cannot run without it.
pub fn build_c(dir: &Path, name: &str, source: &str, cc: &str, extra: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let o = Command::new(cc)
        .args(["-O2", "-static"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e} (Debian: apt-get install gcc musl-tools)"));
    assert!(o.status.success(), "{cc}: {}", String::from_utf8_lossy(&o.stderr));
    out
}
