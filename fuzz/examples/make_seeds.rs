//! Writes the `run_bytes` seed corpus: every guest sample (`guest-samples/**/*.s`) assembled
//! with `bytejail::load::load_path`, as raw code in `fuzz/seeds/run_bytes/<name>.bin`; and the
//! `same_code` seeds in `fuzz/seeds/same_code/`: a few samples as raw cases with inputs that
//! return, crash and return again, and a few programs of steps; and the `profile_jobs` seeds in
//! `fuzz/seeds/profile_jobs/` (`bytejail_fuzz::profile_jobs::seeds`).
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
    same_code_seeds(&samples, &fuzz_dir.join("seeds/same_code"));
    profile_seeds(&fuzz_dir.join("seeds/profile_jobs"));
}

fn profile_seeds(seeds: &Path) {
    fs::create_dir_all(seeds).unwrap_or_else(|e| panic!("creating {seeds:?}: {e}"));
    let cases = bytejail_fuzz::profile_jobs::seeds();
    for (name, case) in &cases {
        let file = seeds.join(format!("{name}.bin"));
        fs::write(&file, case.encode()).unwrap_or_else(|e| panic!("writing {file:?}: {e}"));
    }
    println!("{} seeds in {}", cases.len(), seeds.display());
}

/// Samples that read their input from memory or not at all, so that their same-code inputs
/// differ, and whose outcomes cover a return, a crash, a violation, an exit and the output limit.
const SAME_CODE_SAMPLES: [&str; 8] = [
    "sum_input.s",
    "return42.s",
    "registers_roundtrip.s",
    "rflags.s",
    "ud2.s",
    "forbid_getpid.s",
    "exit3.s",
    "output_flood.s",
];

fn same_code_seeds(samples: &Path, seeds: &Path) {
    use bytejail_fuzz::same::{Case, CaseInput};

    fs::create_dir_all(seeds).unwrap_or_else(|e| panic!("creating {seeds:?}: {e}"));
    let input = |bytes: &[u8], registers: Vec<(bytejail::Gpr, u64)>| CaseInput {
        bytes: bytes.to_vec(),
        registers,
        small_output: false,
        output_file: false,
    };
    let rbx: bytejail::Gpr = "rbx".parse().unwrap();
    let inputs = [
        input(b"first", vec![]),
        input(b"", vec![(rbx, 0x5eed)]),
        input(b"\x01\x02\x03\xff", vec![]),
    ];
    let mut written = 0;
    for name in SAME_CODE_SAMPLES {
        let code = bytejail::load::load_path(&samples.join(name), None, 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        let case = Case::encode_raw(&code, &inputs);
        let file = format!("raw_{}", Path::new(name).with_extension("bin").display());
        fs::write(seeds.join(&file), case).unwrap_or_else(|e| panic!("writing {file}: {e}"));
        written += 1;
    }
    // Programs of steps, as `Case::decode` reads them: header (not raw, 3 inputs), each input
    // (length, bytes, flags), then steps. Step kinds: 0 read scratch, 1 write scratch, 2 read
    // stack, 3 write stack, 6 read flags, 7 set flag, 8 read xmm, 9 write xmm, 10 read ymm high,
    // 11 write ymm high, 12 read MXCSR, 13 write MXCSR, 14 read x87, 15 write x87, 16 read
    // input, 17 output, 18 end.
    let inputs3 = [2 << 1, 1, b'a', 0, 1, 0x01, 0, 2, b'x', b'y', 0x40];
    let programs: [(&str, &[u8]); 3] = [
        (
            "steps_read_then_write",
            &[
                0, 1, 2, 1, 8, 9, 10, 9, 12, 14, 6, 17, 2, //
                1, 1, 0xed, 0x5e, 0, 0, 0, 0, 0, 0, //
                3, 1, 0xed, 0x5e, 0, 0, 0, 0, 0, 0, //
                9, 0x89, 0xed, 0x5e, 0, 0, 0, 0, 0, 0, 11, 9, //
                13, 0xc0, 0x9f, 15, 0x7f, 0x0c, 7, 1,
            ],
        ),
        (
            "steps_end_on_input",
            &[
                16, 0, 0, 1, 18, 0x80, 1, 1, 0, 17, 4, 18, 0x80, 0, 6, 0, 0, 3,
            ],
        ),
        (
            "steps_exit_or_flood",
            &[18, 0x80, 0, 7, 9, 17, 8, 18, 0x80, 1, 9, 0],
        ),
    ];
    for (name, steps) in programs {
        let mut case = inputs3.to_vec();
        case.extend_from_slice(steps);
        assert!(Case::decode(&case).is_some(), "{name} decodes");
        let file = format!("{name}.bin");
        fs::write(seeds.join(&file), case).unwrap_or_else(|e| panic!("writing {file}: {e}"));
        written += 1;
    }
    println!("{written} seeds in {}", seeds.display());
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
