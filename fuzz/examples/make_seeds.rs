//! Writes the `run_bytes` seed corpus: every guest sample (`guest-samples/**/*.s`) assembled
//! with `bytejail::load::load_path`, as raw code in `fuzz/seeds/run_bytes/<name>.bin`.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds
//! ```
//!
//! Seeds whose sample is gone are removed, so the directory always mirrors the samples; `git
//! status` then shows what changed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let samples = fuzz_dir.join("../guest-samples");
    let seeds = fuzz_dir.join("seeds/run_bytes");
    fs::create_dir_all(&seeds).unwrap_or_else(|e| panic!("creating {seeds:?}: {e}"));

    let mut sources = Vec::new();
    collect_sources(&samples, &mut sources);
    sources.sort();

    let mut written = BTreeSet::new();
    for source in &sources {
        let relative = source.strip_prefix(&samples).expect("under guest-samples");
        // escape/hunt_range.s -> escape_hunt_range.bin: one flat directory for libFuzzer.
        let name = relative
            .with_extension("bin")
            .to_string_lossy()
            .replace('/', "_");
        let code = bytejail::load::load_path(source, None, bytejail::abi::DEFAULT_MAX_CODE)
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(seeds.join(&name), &code).unwrap_or_else(|e| panic!("writing {name}: {e}"));
        written.insert(name);
    }
    let mut removed = 0;
    for entry in fs::read_dir(&seeds).expect("the seed directory is readable") {
        let entry = entry.expect("the seed directory is readable");
        let name = entry.file_name().to_string_lossy().into_owned();
        if !written.contains(&name) {
            fs::remove_file(entry.path()).unwrap_or_else(|e| panic!("removing {name}: {e}"));
            removed += 1;
        }
    }
    println!(
        "{} seeds in {} ({removed} stale removed)",
        written.len(),
        seeds.display()
    );
}

fn collect_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir:?}: {e}")) {
        let path = entry.expect("a readable directory entry").path();
        if path.is_dir() {
            collect_sources(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "s") {
            out.push(path);
        }
    }
}
