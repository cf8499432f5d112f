//! The worker's address space is scrubbed: a guest that hunts for the host's secrets finds
//! nothing, and each hunt has a twin that finds the secret with scrubbing switched off. A live
//! worker shows exactly its own mappings, two descriptors, strict mode and no core limit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bytejail::{Gpr, Outcome, RunOptions};

const BYTEJAIL: &str = env!("CARGO_BIN_EXE_bytejail");

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guest-samples/escape")
        .join(name)
}

/// A secret no file in the repository holds: it exists only in this run's memory.
fn fresh_secret() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bytejail-secret-{nanos:x}-{:x}", std::process::id())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Runs the no-hint hunt for the environment through the CLI with a secret in bytejail's
/// environment; returns (outcome, output).
fn hunt_environment(extra: &[&str], secret: &str) -> (String, Vec<u8>) {
    let out = Command::new(BYTEJAIL)
        .args(["run", "--json", "--timeout", "60s", "--max-output", "1MiB"])
        .args(extra)
        .arg(sample("hunt_stack_top.s"))
        .env("BYTEJAIL_TEST_SECRET", secret)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let hex = report["output_hex"].as_str().unwrap();
    let output = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    (report["outcome"].as_str().unwrap().to_string(), output)
}

#[test]
fn a_guest_hunting_for_the_hosts_environment_finds_nothing() {
    let secret = fresh_secret();
    let (outcome, output) = hunt_environment(&[], &secret);
    assert_eq!(outcome, "returned");
    assert!(
        !contains(&output, &secret),
        "the guest found the secret in the environment"
    );
    // Nothing at all is mapped at the top of the address space.
    assert!(
        output.is_empty(),
        "found {} bytes of mapped memory",
        output.len()
    );
}

#[test]
fn without_scrubbing_the_same_hunt_finds_the_environment() {
    let secret = fresh_secret();
    let (outcome, output) = hunt_environment(&["--no-scrub"], &secret);
    assert_eq!(outcome, "returned");
    assert!(
        contains(&output, &secret),
        "the hunt found {} bytes but not the secret",
        output.len()
    );
}

/// Runs the range hunt in this process, around a secret held in this process's heap.
fn hunt_heap(scrub: bool) -> (String, bytejail::Report) {
    let secret = fresh_secret();
    let held: Box<[u8]> = secret.as_bytes().into();
    let page = held.as_ptr() as u64 & !0xfff;
    let code = bytejail::load::load_path(&sample("hunt_range.s"), None, 1 << 20).unwrap();
    let mut options = RunOptions::default().with_scrub(scrub);
    options.registers.set(Gpr::RBX, page - 16 * 4096).unwrap();
    options
        .registers
        .set("r12".parse().unwrap(), 33 * 4096)
        .unwrap();
    options.limits.timeout = Duration::from_secs(20);
    let report = bytejail::run(&code, b"", &options).unwrap();
    drop(held);
    (secret, report)
}

#[test]
fn a_guest_hunting_for_a_secret_in_the_hosts_heap_finds_nothing() {
    let (secret, report) = hunt_heap(true);
    assert!(
        matches!(report.outcome, Outcome::Returned(_)),
        "{:?}",
        report.outcome
    );
    assert!(
        !contains(&report.output, &secret),
        "the guest found the secret in the heap"
    );
    // The scan may cross the guest's own arena (the kernel can place it next to the heap it
    // probes), so some bytes may come back: never the host's.
}

#[test]
fn without_scrubbing_the_same_hunt_finds_the_heap_secret() {
    let (secret, report) = hunt_heap(false);
    assert!(
        matches!(report.outcome, Outcome::Returned(_)),
        "{:?}",
        report.outcome
    );
    assert!(
        contains(&report.output, &secret),
        "the hunt read {} bytes but not the secret",
        report.output.len()
    );
}

/// A `bytejail run` process, killed and reaped when dropped.
struct Host(std::process::Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bytejail run` on a spinning guest and returns it with its worker's pid once the
/// worker runs the guest.
fn spinning_worker(extra: &[&str]) -> (Host, u32) {
    let host = Host(
        Command::new(BYTEJAIL)
            .args(["run", "--hex", "eb fe", "--timeout", "30s"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let id = host.0.id();
    let start = Instant::now();
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            let pid: u32 = pid.parse().unwrap();
            // Strict mode is the last step of its setup: then it runs the guest.
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status.contains("Seccomp:\t1") {
                return (host, pid);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no worker reached the guest"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_live_worker_holds_only_its_own_memory_two_fds_and_strict_mode() {
    let (host, worker) = spinning_worker(&[]);
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{worker}/maps")).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    drop(host);

    assert!(status.contains("Seccomp:\t1"), "{status}");
    fds.sort();
    assert_eq!(fds, ["0", "1"]);
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );

    // Blob (r-x shared), region (rw- shared), code (r-x shared), input (r-- shared), scratch,
    // stack (the guard page below it is unmapped), and the vsyscall page no process can unmap.
    // Nothing else: no binary, no libc, no heap, no host stack, no vdso.
    let perms: Vec<(&str, &str)> = maps
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1], f.get(5).copied().unwrap_or(""))
        })
        .collect();
    let expected = [
        ("r-xs", "/memfd:bytejail-arena"),
        ("rw-s", "/memfd:bytejail-arena"),
        ("r-xs", "/memfd:bytejail-arena"),
        ("r--s", "/memfd:bytejail-arena"),
        ("rw-p", ""),
        ("rw-p", ""),
        ("--xp", "[vsyscall]"),
    ];
    assert_eq!(perms, expected, "maps:\n{maps}");
}

#[test]
fn without_scrubbing_a_live_worker_still_maps_the_host() {
    let (host, worker) = spinning_worker(&["--no-scrub"]);
    let maps = std::fs::read_to_string(format!("/proc/{worker}/maps")).unwrap();
    drop(host);
    assert!(
        maps.contains("target") && maps.contains("bytejail"),
        "the binary is not mapped:\n{maps}"
    );
    assert!(maps.contains("[heap]") || maps.contains("libc"), "{maps}");
}
