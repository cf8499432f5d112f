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
    // A statically linked build (`-C target-feature=+crt-static`, as .cargo/config.toml asks
    // for) has no dynamic symbol table for `dlsym` to search: the glibc variables and functions
    // bytejail looks up at run time are then named directly, where the static C library
    // defines them. The rseq area's offset matters most: a worker that cannot find it cannot
    // unregister the area before it unmaps it, and the kernel then kills it at its first
    // preemption (see `sys::rseq_registration`).
    println!("cargo::rustc-check-cfg=cfg(glibc_static_rseq, glibc_static_cpuid_leaf)");
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if gnu && features.split(',').any(|f| f == "crt-static") {
        let defined = static_libc_symbols();
        let has = |name: &str| defined.iter().any(|d| d == name);
        if has("__rseq_offset") && has("__rseq_size") {
            println!("cargo:rustc-cfg=glibc_static_rseq");
        } else {
            println!(
                "cargo:warning=the static C library defines no __rseq_offset: if it registers \
                 rseq areas, workers will be killed at their first preemption"
            );
        }
        if has("__x86_get_cpuid_feature_leaf") {
            println!("cargo:rustc-cfg=glibc_static_cpuid_leaf");
        }
    }
}

/// The symbols the static C library (`libc.a`, as the C compiler finds it) defines: the names
/// in its archive's symbol index (GNU `ar` format, 32- or 64-bit offsets). Empty when it
/// cannot be read.
fn static_libc_symbols() -> Vec<String> {
    let Ok(out) = Command::new("cc").arg("-print-file-name=libc.a").output() else {
        return Vec::new();
    };
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    println!("cargo:rerun-if-changed={}", path.display());
    let Ok(archive) = std::fs::read(&path) else {
        return Vec::new();
    };
    let Some(member) = archive.strip_prefix(b"!<arch>\n") else {
        return Vec::new();
    };
    // The first member is the index: "/" (32-bit offsets) or "/SYM64/" (64-bit).
    let (Some(header), Some(body)) = (member.get(..60), member.get(60..)) else {
        return Vec::new();
    };
    let name = String::from_utf8_lossy(&header[..16]);
    let width = match name.trim_end() {
        "/" => 4,
        "/SYM64/" => 8,
        _ => return Vec::new(),
    };
    let size: usize = String::from_utf8_lossy(&header[48..58])
        .trim()
        .parse()
        .unwrap_or(0);
    let Some(index) = body.get(..size) else {
        return Vec::new();
    };
    let Some(count) = index.get(..width).map(|b| {
        b.iter().fold(0usize, |n, &byte| n << 8 | usize::from(byte)) // big-endian
    }) else {
        return Vec::new();
    };
    let Some(names) = count
        .checked_add(1)
        .and_then(|n| n.checked_mul(width))
        .and_then(|start| index.get(start..))
    else {
        return Vec::new();
    };
    names
        .split(|&b| b == 0)
        .take(count)
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect()
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
