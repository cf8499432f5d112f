//! A worker traced by the thread that forked it (`bytejail::trace_own_workers`, what a one-job
//! `bytejail run` does): the same reports, verified details and all, as through a tracer
//! process, for every way a guest ends, forgeries included; no tracer process in `bytejail
//! run`; and in a process with other threads, a tracer process as before.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytejail::{Limits, RunOptions};
use common::{gas, hex, namespaces, profile_options};
use serde_json::Value;

/// `bytejail run --json` of `code` with `args` (a process of one thread: it traces its worker
/// itself), its report.
fn cli_report(code: &[u8], args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bytejail"))
        .args(["run", "--json", "--hex", &hex(code)])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Each job's report from `bytejail run` (its thread traces the worker) equals the library's
/// in this test process (which has several threads: a tracer process traces it).
fn same_reports(jobs: &[(&str, Vec<u8>, RunOptions, Vec<&str>)]) {
    for (name, code, options, args) in jobs {
        let library = bytejail::run(code, b"", options).unwrap().to_json();
        let cli = cli_report(code, args);
        assert_eq!(
            common::report_essence(&cli),
            common::report_essence(&library),
            "{name}: {cli} against {library}"
        );
    }
}

#[test]
fn a_thread_tracing_its_own_strict_worker_reports_what_a_tracer_process_does() {
    let strict = RunOptions::default();
    let short = RunOptions::default()
        .with_limits(Limits::default().with_timeout(Duration::from_millis(200)));
    let jobs = [
        ("return", "mov eax, 42\nret", &strict, vec![]),
        (
            "output",
            "mov edi, 1\nlea rsi, [rip + m]\nmov edx, 3\nmov eax, 1\nsyscall\nret\nm: .ascii \"hi\\n\"",
            &strict,
            vec![],
        ),
        ("null read", "xor eax, eax\nmov rax, [rax]\nret", &strict, vec![]),
        ("int3", "int3", &strict, vec![]),
        ("ud2", "ud2", &strict, vec![]),
        ("divide by zero", "xor ecx, ecx\ndiv ecx\nret", &strict, vec![]),
        ("violation", "mov rdi, 0x1111\nmov eax, 39\nsyscall\nret", &strict, vec![]),
        ("i386 violation", "mov ebx, 0x2222\nmov eax, 20\nint 0x80\nret", &strict, vec![]),
        ("exit", "mov edi, 7\nmov eax, 60\nsyscall", &strict, vec![]),
        ("timeout", "1: jmp 1b", &short, vec!["--timeout", "200ms"]),
        ("stack overflow", "1: push rax\njmp 1b", &strict, vec![]),
    ];
    let jobs: Vec<_> = jobs
        .into_iter()
        .map(|(name, source, options, args)| (name, gas(source), options.clone(), args))
        .collect();
    same_reports(&jobs);
}

/// The forged fault record (`common::forged_fault_record`): the guest writes a fault into its
/// record page, blocks SIGSEGV with a forged `rt_sigreturn` frame, then faults for real at
/// address 8. `bytejail run` reports the kernel's fault, verified. The twin: with
/// `--no-trace` the forged record is what it shows, unverified.
#[test]
fn a_forged_fault_record_fools_no_thread_tracing_its_own_worker() {
    let code = common::forged_fault_record();
    let traced = cli_report(&code, &[]);
    assert_eq!(traced["fault"]["address"], 8, "{traced}");
    assert_eq!(traced["fault"]["verified"], true, "{traced}");
    let untraced = cli_report(&code, &["--no-trace"]);
    assert_eq!(untraced["fault"]["address"], 0xdeadbeef_u64, "{untraced}");
    assert_eq!(untraced["fault"]["verified"], false, "{untraced}");
}

#[test]
fn a_thread_tracing_its_own_profile_worker_reports_what_a_tracer_process_does() {
    if !namespaces() {
        eprintln!("not root: no profile workers here; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, json: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, json).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let allow_all = write("allow-all.json", r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#);
    let kill_json = r#"{"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"},
                     {"names": ["getuid"], "action": "SCMP_ACT_TRAP"}]}"#;
    let kill = write("kill-getppid.json", kill_json);
    let profile = profile_options();
    let filtered = RunOptions::default()
        .with_policy(bytejail::Policy::from_profile_json(kill_json, "kill-getppid.json").unwrap());
    let threads = profile_options().with_limits(
        Limits::default()
            .with_max_procs(2)
            .with_timeout(Duration::from_secs(20)),
    );
    let on = |policy: &str| vec!["--policy".to_owned(), policy.to_owned()];
    let mut with_threads = on(&allow_all);
    with_threads.extend(["--max-procs", "2", "--timeout", "20s"].map(str::to_owned));
    let jobs = [
        ("fault", gas("mov eax, 16\nmov qword ptr [rax], 1\nret"), profile.clone(), on(&allow_all)),
        (
            "self-sent SIGSYS",
            gas("mov eax, 39\nsyscall\nmov rdi, rax\nmov rsi, rax\nmov edx, 31\nmov eax, 234\nsyscall\nret"),
            profile.clone(),
            on(&allow_all),
        ),
        (
            "self-sent SIGSEGV",
            gas("mov eax, 39\nsyscall\nmov rdi, rax\nmov esi, 11\nmov eax, 62\nsyscall\nret"),
            profile.clone(),
            on(&allow_all),
        ),
        ("killed by the filter", gas("mov rdi, 0xabc\nmov eax, 110\nsyscall\nret"), filtered.clone(), on(&kill)),
        ("trapped by the filter", gas("mov rdi, 0xabc\nmov eax, 102\nsyscall\nret"), filtered, on(&kill)),
        (
            // Init of its PID namespace (more than one process): the tracer ends it at the
            // fault, which the kernel would let it survive.
            "fault as init",
            gas("mov eax, 16\nmov qword ptr [rax], 1\nret"),
            threads.clone(),
            with_threads.clone(),
        ),
        (
            "first thread exits first",
            common::with_thread(
                "mov ecx, 100000000\n1: dec ecx\njnz 1b\nmov edi, 3\nmov eax, 60\nsyscall",
                "mov edi, 5\nmov eax, 60\nsyscall",
            ),
            threads,
            with_threads,
        ),
    ];
    for (name, code, options, args) in &jobs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        same_reports(&[(name, code.clone(), options.clone(), args)]);
    }
}

/// Whether SIGCHLD is blocked in the calling thread.
fn chld_blocked() -> bool {
    // SAFETY: sigset_t is plain old data; pthread_sigmask only reads the mask into it.
    unsafe {
        let mut now: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
        libc::sigismember(&now, libc::SIGCHLD) == 1
    }
}

/// In a process with other threads (this test process) a thread that asked to trace its own
/// workers leaves them to a tracer process: another thread could take the SIGCHLD of a stop.
/// Its reports are verified all the same, and its signal mask is left as it was.
#[test]
fn with_other_threads_a_tracer_process_traces_the_worker() {
    std::thread::spawn(|| {
        bytejail::trace_own_workers();
        for _ in 0..20 {
            let code = gas("xor eax, eax\nmov rax, [rax]\nret");
            let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
            let json = report.to_json();
            assert_eq!(json["fault"]["verified"], true, "{json}");
            assert!(!chld_blocked(), "SIGCHLD left blocked");
        }
    })
    .join()
    .unwrap();
}

/// The processes whose parent is `pid`, by name.
fn children(pid: u32) -> Vec<String> {
    common::all_children_of(pid)
        .into_iter()
        .map(|(child, _)| common::comm(child))
        .collect()
}

/// The children of `pid` by name, once its worker is there (a child that is not the tracer)
/// and a little after; at most 10 s.
fn children_once_a_worker_runs(pid: u32) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = children(pid);
        if seen.iter().any(|name| name != "bytejail-tracer") {
            std::thread::sleep(Duration::from_millis(50));
            return children(pid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    seen
}

/// While `bytejail` (run with `args`, a job that loops for 2 s) runs its worker: its children
/// by name (see [`children_once_a_worker_runs`]).
fn children_while_running(args: &[&str], stdin: &str) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Left open while the job runs: a batch's thread that feeds it standard input then lives
    // on, waiting for more.
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, stdin.as_bytes()).unwrap();
    let seen = children_once_a_worker_runs(child.id());
    let _ = child.kill();
    let _ = child.wait();
    drop(input);
    seen
}

/// `bytejail run` traces its one worker from its own thread: no tracer process beside the
/// worker, and the report's details still verified. The twin: `bytejail batch` on a standard
/// input left open, whose thread feeding it lives beside the job thread, has one.
#[test]
fn bytejail_run_starts_no_tracer_process() {
    let seen = children_while_running(&["run", "--timeout", "2s", "--hex", "ebfe"], "");
    assert_eq!(
        seen,
        ["bytejail"],
        "bytejail run's children: its worker alone"
    );
    let line = "{\"id\":1,\"code_hex\":\"ebfe\",\"timeout_ms\":2000}\n";
    let seen = children_while_running(&["batch", "--jobs", "1"], line);
    assert!(
        seen.iter().any(|name| name == "bytejail-tracer"),
        "bytejail batch's children: {seen:?}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_bytejail"))
        .args([
            "run",
            "--json",
            "--fields",
            "outcome,fault",
            "--hex",
            "31c0488b00",
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "crashed", "{report}");
    assert_eq!(report["fault"]["verified"], true, "{report}");
}

/// `bytejail batch --jobs 1` reading a named pipe that stays open: while its first job runs,
/// the batch's reader thread is still alive, waiting for more lines. That thread blocks SIGCHLD
/// and waits for no child, so the job thread traces its fresh worker itself: no tracer process,
/// and the worker's fault still verified. The twin: the same line on standard input, where the
/// CLI's thread that feeds it (not such a thread) is alive too: a tracer process.
#[test]
fn a_batch_beside_its_reader_thread_traces_its_first_worker_itself() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = common::fifo_in(dir.path());
    let through_fifo = |line: &str, watch: bool| -> (Vec<String>, String) {
        let child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
            .args(["batch", "--jobs", "1", "-q"])
            .arg(&fifo)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Opening blocks until bytejail opens its end; kept open while the job runs.
        let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut writer, line.as_bytes()).unwrap();
        let seen = if watch {
            children_once_a_worker_runs(child.id())
        } else {
            Vec::new()
        };
        drop(writer);
        let out = child.wait_with_output().unwrap();
        (seen, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let spin = "{\"id\":1,\"code_hex\":\"ebfe\",\"timeout_ms\":1000}\n";
    let (seen, _) = through_fifo(spin, true);
    assert_eq!(
        seen,
        ["bytejail"],
        "bytejail batch's children: its worker alone"
    );
    let crash = format!(
        "{{\"id\":1,\"code_hex\":\"{}\"}}\n",
        hex(&gas("xor eax, eax\nmov rax, [rax]\nret"))
    );
    let (_, out) = through_fifo(&crash, false);
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(result["outcome"], "crashed", "{result}");
    assert_eq!(result["fault"]["verified"], true, "{result}");

    let seen = children_while_running(&["batch", "--jobs", "1"], spin);
    assert!(
        seen.iter().any(|name| name == "bytejail-tracer"),
        "bytejail batch on standard input: {seen:?}"
    );
}

/// A guest under a profile that sends itself an ignored signal in a loop: traced, each one is a
/// stop, and it stops again as soon as it is let go. It unblocks its signals first: the worker
/// starts with every signal but the faults blocked, and a blocked signal stays pending, no stop.
fn stop_storm() -> Vec<u8> {
    gas(&format!(
        "{}
        mov eax, 39             # getpid
        syscall
        mov r12, rax
    1:  mov rdi, r12
        mov esi, 23             # SIGURG, ignored by default
        mov eax, 62             # kill
        syscall
        jmp 1b",
        common::UNMASK
    ))
}

/// A guest that stops its tracer as fast as it is let go still ends at its deadline when its
/// own thread traces it (`bytejail run`), and a tracer process shared with another thread's
/// jobs still serves them meanwhile: a tracer handles a bounded number of stops at a time.
#[test]
fn a_guest_that_keeps_stopping_ends_at_its_deadline_and_holds_up_no_other_job() {
    if !namespaces() {
        eprintln!("not root: no profile workers here; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let allow_all = dir.path().join("allow-all.json");
    std::fs::write(&allow_all, r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
    let start = Instant::now();
    let report = cli_report(
        &stop_storm(),
        &[
            "--policy",
            allow_all.to_str().unwrap(),
            "--timeout",
            "300ms",
        ],
    );
    assert_eq!(report["outcome"], "timeout", "{report}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "bytejail run took {:?}",
        start.elapsed()
    );

    // Through the library: both threads (unpinned) share one tracer process.
    let storm = std::thread::spawn(|| {
        let options =
            profile_options().with_limits(Limits::default().with_timeout(Duration::from_secs(3)));
        bytejail::run(&stop_storm(), b"", &options).unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    let others = Instant::now();
    for _ in 0..10 {
        let code = gas("xor eax, eax\nmov rax, [rax]\nret");
        let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
        assert_eq!(report.to_json()["fault"]["verified"], true);
    }
    let took = others.elapsed();
    let storm = storm.join().unwrap();
    assert_eq!(storm.outcome.kind(), "timeout", "{}", storm.summary());
    assert!(
        took < Duration::from_millis(2500),
        "ten jobs beside the storm took {took:?}"
    );
}
