//! Link options of the `bytejail` binary (the library is not affected).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Relative relocations packed as DT_RELR (binutils 2.38+ makes them, glibc 2.36+ applies
    // them): the PIE's 6,600 relative relocations become about 260 words, which the dynamic
    // loader reads and applies at every start in a fraction of the time. Only where the C
    // library that the binary links against applies them: the linker then makes the binary
    // need `GLIBC_ABI_DT_RELR`, and an older glibc would refuse to start it at all.
    if glibc_applies_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the target is the build machine's own glibc and that glibc has
/// `GLIBC_ABI_DT_RELR` (the version its dynamic loader marks RELR support with).
fn glibc_applies_relr() -> bool {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    if env("CARGO_CFG_TARGET_ENV") != "gnu" || env("TARGET") != env("HOST") {
        return false;
    }
    // The C compiler that links the binary says where its libc.so.6 is.
    let Ok(out) = Command::new("cc")
        .arg("-print-file-name=libc.so.6")
        .output()
    else {
        return false;
    };
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !path.is_absolute() {
        return false;
    }
    let Ok(libc) = std::fs::read(&path) else {
        return false;
    };
    let needle = b"GLIBC_ABI_DT_RELR";
    libc.windows(needle.len()).any(|w| w == needle)
}
