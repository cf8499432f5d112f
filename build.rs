//! Link options of the `bytejail` binary (the library is not affected).

fn main() {
    // Relative relocations packed as DT_RELR (glibc 2.36+ applies them; binutils 2.38+ makes
    // them): the PIE's 6,600 relative relocations become a few hundred words, which the
    // dynamic loader reads and applies in a fraction of the time, at every start.
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
