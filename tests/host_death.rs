//! Workers never outlive their host: killing the host with SIGKILL while a guest spins leaves
//! no worker (PR_SET_PDEATHSIG) and no tracer process (its socket's EOF) alive a second later,
//! and crashing guests leave no core file even when the host allows unlimited cores.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{alive, children_of};

const BYTEJAIL: &str = env!("CARGO_BIN_EXE_bytejail");

/// Kills the host `bytejail` (run with `args` and `stdin`: a job whose guest spins) with
/// SIGKILL once its guest spins, and checks that its worker, and its tracer process if it has
/// one (`tracer`), are gone a second later.
fn kill_host_while_the_guest_spins(args: &[&str], stdin: &str, tracer: bool) {
    let mut host = Command::new(BYTEJAIL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        // Left open: a batch waits for more lines while its job runs.
        host.stdin
            .as_mut()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
    }
    let start = Instant::now();
    let worker = loop {
        if let Some(&(pid, _)) = children_of(host.id()).first() {
            break pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no worker appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // Let it reach the guest's loop, then check it is really spinning before the kill.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        alive(worker),
        "worker {worker} ended before the host was killed"
    );
    let tracer_pid = common::tracer_of(host.id());
    assert_eq!(
        tracer_pid.is_some(),
        tracer,
        "{args:?}: tracer process {tracer_pid:?}"
    );
    host.kill().unwrap(); // SIGKILL
    host.wait().unwrap();
    let killed_at = Instant::now();
    while alive(worker) || tracer_pid.is_some_and(alive) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(1),
            "worker {worker} or tracer {tracer_pid:?} still alive 1 s after its host was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `bytejail run` traces its worker from its own thread (no tracer process); `bytejail
/// batch` has a tracer process, which must go too.
#[test]
fn killing_the_host_kills_the_spinning_worker() {
    kill_host_while_the_guest_spins(&["run", "--hex", "eb fe", "--timeout", "60s"], "", false);
    let line = "{\"id\":1,\"code_hex\":\"ebfe\",\"timeout_ms\":60000}\n";
    kill_host_while_the_guest_spins(&["batch", "--jobs", "1"], line, true);
}

/// Runs `sh -c 'ulimit -c unlimited; <script>'` in `dir`.
fn with_unlimited_cores(dir: &Path, script: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -c unlimited && {script}"))
        .current_dir(dir)
        .output()
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn crashing_guests_leave_no_core_file_even_with_unlimited_cores() {
    let dir = tempfile::tempdir().unwrap();
    // null write, ud2, div by zero, int3, a forbidden syscall: each a different death.
    for hex in ["48c70001000000", "0f0b", "31c9f7f1", "cc", "b8270000000f05"] {
        let out = with_unlimited_cores(dir.path(), &format!("exec '{BYTEJAIL}' run --hex {hex}"));
        let status = out.status.code().unwrap();
        assert!(
            status >= 128,
            "{hex}: exit {status}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        files_in(dir.path()),
        Vec::<String>::new(),
        "a crashing guest dumped core"
    );

    // The twin: where the kernel writes cores into the working directory, a process that
    // crashes without bytejail's protection does leave one here.
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    if pattern.trim() == "core" {
        with_unlimited_cores(dir.path(), "kill -SEGV $$");
        assert!(
            !files_in(dir.path()).is_empty(),
            "the control crash left no core: the check above proves nothing"
        );
    } else {
        eprintln!("core_pattern is {pattern:?}: cannot show the unprotected twin here");
    }
}
