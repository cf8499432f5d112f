//! An attacker's look at `bytejail run` tracing its one worker from its own thread
//! (`bytejail::trace_own_workers`): hostile guests under an allow-all profile get the same
//! report from `bytejail run` as from the library in this (multi-threaded) test process, whose
//! workers a tracer process traces; nothing they do keeps `bytejail run` past its deadline; a
//! single-threaded library host is left as it was (SIGCHLD mask, descriptors) and its later jobs
//! are right; the static binary's pooled and same-code workers survive preemption.
//!
//! Found here: a guest's `CLONE_PTRACE` thread or process was traced by `bytejail run`'s thread
//! too, which never let it go; held at its exit stop it cannot be killed, and `bytejail run`
//! hung for good past its `--timeout` (`clone_ptrace_*` below). Since then a thread traces its
//! own worker only for jobs that may start no task (`--max-procs 1`); a tracer process, which
//! lets such tasks go, traces the others.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytejail::{Limits, RunOptions};
use common::{
    allow_all_file, cloned, gas, hex, install_handler, kill_self, namespaces, profile_options,
    with_usr1_handler, SIGCHLD, SPIN, THREAD, UNMASK,
};
use serde_json::Value;

/// `bytejail run --json` of `code` with `args`, killed if it is still running after `bound`:
/// its report (`Value::Null` when it was killed) and how long it took.
fn cli_report_within(code: &[u8], args: &[&str], bound: Duration) -> (Value, Duration) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
        .args(["run", "--json", "--hex", &hex(code)])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            return (Value::Null, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let report = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
    (report, took)
}

/// `bytejail run` under the allow-all profile with `--max-procs procs` and a 5 s timeout
/// (bounded at 20 s) reports what the library (a tracer process) does, and ends before its
/// deadline unless the guest is meant to time out.
fn same_as_library(name: &str, code: &[u8], procs: u32) -> Value {
    let (_dir, allow_all) = allow_all_file();
    let timeout = Duration::from_secs(5);
    let options = profile_options().with_limits(
        Limits::default()
            .with_max_procs(procs)
            .with_timeout(timeout),
    );
    let library = bytejail::run(code, b"", &options).unwrap().to_json();
    let procs = procs.to_string();
    let args = [
        "--policy",
        &allow_all,
        "--max-procs",
        &procs,
        "--timeout",
        "5s",
    ];
    let (cli, took) = cli_report_within(code, &args, Duration::from_secs(20));
    assert!(
        !cli.is_null(),
        "{name} (--max-procs {procs}): bytejail run still running after {took:?} \
         (--timeout 5s); the library reported {library}"
    );
    assert_eq!(
        common::report_essence(&cli),
        common::report_essence(&library),
        "{name} (--max-procs {procs}): {cli} against {library}"
    );
    // The forged fault record's address is never vouched for.
    assert!(
        !(cli["fault"]["address"] == 0xdeadbeef_u64 && cli["fault"]["verified"] == true),
        "{name}: a forged fault verified: {cli}"
    );
    if library["outcome"] != "timeout" {
        assert!(took < timeout, "{name}: bytejail run took {took:?}: {cli}");
    }
    cli
}

fn profiles_here() -> bool {
    if !namespaces() {
        eprintln!("not root: no profile workers here; skipping");
        return false;
    }
    true
}

const CLONE_PTRACE: u32 = 0x2000;

/// A thread made with `CLONE_PTRACE` exits at once (held at its exit stop by whoever traces the
/// worker), then the leader exits alone. Before the fix `bytejail run` never ended: the
/// thread, traced by `bytejail run`'s thread and never let go, could not be killed either.
#[test]
fn clone_ptrace_thread_neither_hangs_bytejail_run_nor_changes_its_report() {
    let _apart = common::beside_forks();
    if !profiles_here() {
        return;
    }
    let code = cloned(
        THREAD | CLONE_PTRACE,
        "mov edi, 0\nmov eax, 60\nsyscall",
        &format!("{SPIN}\nmov edi, 5\nmov eax, 60\nsyscall"),
    );
    for procs in [2, 4] {
        let cli = same_as_library("CLONE_PTRACE thread", &code, procs);
        assert_eq!(cli["exit_code"], 5, "{cli}");
    }
    // The twin without CLONE_PTRACE: the same report, it was never the flag's doing.
    let plain = cloned(
        THREAD,
        "mov edi, 0\nmov eax, 60\nsyscall",
        &format!("{SPIN}\nmov edi, 5\nmov eax, 60\nsyscall"),
    );
    same_as_library("plain thread", &plain, 2);
}

/// The same with a child process made with `CLONE_PTRACE`: the worker (init of its PID
/// namespace) could never finish killing it.
#[test]
fn clone_ptrace_process_neither_hangs_bytejail_run_nor_changes_its_report() {
    let _apart = common::beside_forks();
    if !profiles_here() {
        return;
    }
    let exit_group = |code: u32| format!("mov edi, {code}\nmov eax, 231\nsyscall");
    let cases = [
        ("child exits", "mov edi, 0\nmov eax, 60\nsyscall".to_owned()),
        // A child that keeps stopping (traced, even an ignored signal is a stop).
        (
            "child storms itself",
            "mov eax, 39\nsyscall\nmov r12, rax\n3: mov rdi, r12\nmov esi, 23\nmov eax, 62\nsyscall\njmp 3b"
                .to_owned(),
        ),
        ("child faults", "mov eax, 16\nmov qword ptr [rax], 1".to_owned()),
    ];
    for (name, child) in cases {
        let code = cloned(
            SIGCHLD | CLONE_PTRACE,
            &child,
            &format!("{SPIN}\n{}", exit_group(5)),
        );
        for procs in [2, 4] {
            let cli = same_as_library(name, &code, procs);
            assert_eq!(cli["exit_code"], 5, "{name}: {cli}");
        }
    }
}

/// A SIGSEGV handler that goes on at `cont`, a real fault at 0x77 it catches, then `then` (at
/// `cont`): the tracer saw a kernel fault the guest survived.
fn caught_fault_then(then: &str) -> Vec<u8> {
    let install = install_handler(11, 0x04000004); // SA_RESTORER | SA_SIGINFO
    gas(&format!(
        "
        {install}
        mov eax, 0x77
        mov qword ptr [rax], 1
    cont:
        {then}
    handler:
        lea rax, [rip + cont]
        mov [rdx + 168], rax                    # uc_mcontext.rip
        ret
    restorer:
        mov eax, 15
        syscall"
    ))
}

/// Signals a guest sends itself: ignored, caught (many), stopping, continuing, fault-like,
/// a fault in a handler; and ptrace calls on itself and its parent.
#[test]
fn signal_storms_and_ptrace_calls_report_as_through_a_tracer_process() {
    let _apart = common::beside_forks();
    if !profiles_here() {
        return;
    }
    let getpid = format!("{UNMASK}\nmov eax, 39\nsyscall\nmov r12, rax");
    let loop_of = |n: u32, body: &str| format!("mov r13d, {n}\n7: {body}\ndec r13d\njnz 7b");
    let jobs: Vec<(&str, Vec<u8>)> = vec![
        (
            "10000 ignored SIGURG",
            gas(&format!("{getpid}\n{}\nmov eax, 11\nret", loop_of(10000, &kill_self(23)))),
        ),
        (
            "10000 caught SIGUSR1",
            with_usr1_handler("ret", &format!("{}\nmov eax, 77\nret", loop_of(10000, &kill_self(10)))),
        ),
        (
            "fault in a handler",
            with_usr1_handler("mov eax, 16\nmov qword ptr [rax], 1\nret", &format!("{}\nmov eax, 77\nret", kill_self(10))),
        ),
        (
            "int3 in a handler",
            with_usr1_handler("int3\nret", &format!("{}\nmov eax, 77\nret", kill_self(10))),
        ),
        ("SIGSTOP itself", gas(&format!("{getpid}\n{}\nmov eax, 9\nret", kill_self(19)))),
        ("SIGTSTP itself", gas(&format!("{getpid}\n{}\nmov eax, 9\nret", kill_self(20)))),
        (
            "SIGSTOP then SIGCONT",
            gas(&format!("{getpid}\n{}\n{}\nmov eax, 9\nret", kill_self(19), kill_self(18))),
        ),
        ("SIGBUS itself", gas(&format!("{getpid}\n{}\nmov eax, 9\nret", kill_self(7)))),
        ("SIGILL itself", gas(&format!("{getpid}\n{}\nmov eax, 9\nret", kill_self(4)))),
        (
            "tgkill SIGFPE",
            gas(&format!("{getpid}\nmov rdi, r12\nmov rsi, r12\nmov edx, 8\nmov eax, 234\nsyscall\nmov eax, 9\nret")),
        ),
        ("forged fault record", common::forged_fault_record()),
        (
            "a caught real fault, then exit_group",
            caught_fault_then("mov edi, 7\nmov eax, 231\nsyscall"),
        ),
        (
            "a caught real fault, then a self-sent SIGSYS",
            caught_fault_then(&format!("{getpid}\n{}\nmov eax, 5\nret", kill_self(31))),
        ),
        (
            "a caught real fault, then a real one uncaught",
            caught_fault_then(&format!(
                "{UNMASK}\npush 0\npush 0\npush 0\npush 0\nmov edi, 11\nmov rsi, rsp\nxor edx, edx\nmov r10d, 8\nmov eax, 13\nsyscall\n\
                 mov eax, 0x99\nmov qword ptr [rax], 1"
            )),
        ),
        ("PTRACE_TRACEME", gas("xor edi, edi\nmov eax, 101\nsyscall\nret")),
        (
            "PR_SET_PTRACER any",
            gas("mov edi, 0x59616d61\nmov rsi, -1\nmov eax, 157\nsyscall\nret"),
        ),
        (
            "PTRACE_ATTACH its parent",
            gas("mov eax, 110\nsyscall\nmov rsi, rax\nmov edi, 16\nxor edx, edx\nxor r10d, r10d\nmov eax, 101\nsyscall\nret"),
        ),
        (
            "PTRACE_SEIZE its parent",
            gas("mov eax, 110\nsyscall\nmov rsi, rax\nmov edi, 0x4206\nxor edx, edx\nxor r10d, r10d\nmov eax, 101\nsyscall\nret"),
        ),
    ];
    for procs in [1, 4] {
        for (name, code) in &jobs {
            let cli = same_as_library(name, code, procs);
            if name.starts_with("PTRACE_") && cli["outcome"] == "returned" {
                // rax is printed as an unsigned number: -errno is above 2^63.
                let rax = cli["rax"].as_u64().unwrap_or(0);
                assert!(rax > 1 << 63, "{name}: a guest traced its host: {cli}");
            }
        }
    }
}

/// Threads that fault, exit or end the group in either order, also while the leader keeps
/// stopping; a leader that exits first (a zombie leader); a child that signals its parent.
#[test]
fn threads_and_children_report_as_through_a_tracer_process() {
    let _apart = common::beside_forks();
    if !profiles_here() {
        return;
    }
    let storm = &common::sigurg_storm(39);
    let jobs: Vec<(&str, Vec<u8>)> =
        vec![
        (
            "exit_group from a thread while the leader stops",
            cloned(THREAD, &format!("{SPIN}\nmov edi, 9\nmov eax, 231\nsyscall"), storm),
        ),
        (
            "a thread faults while the leader stops",
            cloned(THREAD, &format!("{SPIN}\nmov eax, 16\nmov qword ptr [rax], 1"), storm),
        ),
        (
            "the leader exits first, the thread ends the group",
            cloned(
                THREAD,
                &format!("{SPIN}\nmov edi, 6\nmov eax, 231\nsyscall"),
                "mov edi, 3\nmov eax, 60\nsyscall",
            ),
        ),
        (
            "the leader exits first, the thread faults",
            cloned(
                THREAD,
                &format!("{SPIN}\nmov eax, 16\nmov qword ptr [rax], 1"),
                "mov edi, 3\nmov eax, 60\nsyscall",
            ),
        ),
        (
            "the leader faults while a thread stops",
            cloned(THREAD, storm, &format!("{SPIN}\nmov eax, 16\nmov qword ptr [rax], 1")),
        ),
        (
            "a child storms its parent with SIGURG",
            cloned(
                SIGCHLD,
                &common::sigurg_storm(110),
                &format!("{SPIN}\nmov eax, 3\nret"),
            ),
        ),
        (
            "a child sends its parent SIGSEGV",
            cloned(
                SIGCHLD,
                "mov eax, 110\nsyscall\nmov rdi, rax\nmov esi, 11\nmov eax, 62\nsyscall\n3: jmp 3b",
                &format!("{SPIN}\nmov eax, 3\nret"),
            ),
        ),
    ];
    for procs in [2, 4] {
        for (name, code) in &jobs {
            same_as_library(name, code, procs);
        }
    }
}

/// A thread that stops the leader as fast as it is let go (tgkill of the leader, SIGURG), the
/// leader spinning: `bytejail run` still ends at its `--timeout`, and says "timeout".
#[test]
fn a_thread_storming_its_leader_ends_at_the_deadline() {
    let _apart = common::beside_forks();
    if !profiles_here() {
        return;
    }
    let (_dir, allow_all) = allow_all_file();
    let code = cloned(
        THREAD,
        "mov eax, 39\nsyscall\nmov r12, rax\n3: mov rdi, r12\nmov rsi, r12\nmov edx, 23\nmov eax, 234\nsyscall\njmp 3b",
        "4: jmp 4b",
    );
    for procs in ["2", "4"] {
        let args = [
            "--policy",
            &allow_all,
            "--max-procs",
            procs,
            "--timeout",
            "300ms",
        ];
        let (report, took) = cli_report_within(&code, &args, Duration::from_secs(20));
        assert_eq!(report["outcome"], "timeout", "{report} after {took:?}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
}

/// `bytejail run` started with SIGCHLD ignored (as `trap "" CHLD` leaves it) still traces its
/// worker: the kernel's fault, verified, also under a profile with a PID namespace.
#[test]
fn bytejail_run_with_sigchld_ignored_still_verifies() {
    let _apart = common::beside_forks();
    let bin = env!("CARGO_BIN_EXE_bytejail");
    let run = |args: &str| -> Value {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("trap '' CHLD; exec \"$0\" run --json {args}"),
                bin,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let null_read = hex(&gas("xor eax, eax\nmov rax, [rax]\nret"));
    let report = run(&format!("--hex {null_read}"));
    assert_eq!(report["outcome"], "crashed", "{report}");
    assert_eq!(report["fault"]["verified"], true, "{report}");
    let forged = run(&format!("--hex {}", hex(&common::forged_fault_record())));
    assert_eq!(forged["fault"]["address"], 8, "{forged}");
    assert_eq!(forged["fault"]["verified"], true, "{forged}");
    if profiles_here() {
        let (_dir, allow_all) = allow_all_file();
        let fault = hex(&gas("mov eax, 16\nmov qword ptr [rax], 1\nret"));
        // With a PID namespace more than one process could have sent the signal: the fault is
        // unverified by design (host::classify), ignored SIGCHLD or not.
        let args = format!("--policy {allow_all} --max-procs 4 --hex {fault}");
        let ignored = run(&args);
        let out = Command::new(bin)
            .args(["run", "--json"])
            .args(args.split(' '))
            .output()
            .unwrap();
        let plain: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ignored["outcome"], "crashed", "{ignored}");
        assert_eq!(
            common::report_essence(&ignored),
            common::report_essence(&plain),
            "{ignored} against {plain}"
        );
        let report = run(&format!("--policy {allow_all} --hex {fault}"));
        assert_eq!(report["fault"]["verified"], true, "{report}");
    }
    // The twin: untraced, the forged record is what shows, unverified.
    let untraced = run(&format!(
        "--no-trace --hex {}",
        hex(&common::forged_fault_record())
    ));
    assert_eq!(untraced["fault"]["verified"], false, "{untraced}");
}

/// The number of threads of this process (/proc/self/stat, field 20).
fn threads() -> usize {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(17).unwrap().parse().unwrap()
}

fn chld_blocked() -> bool {
    // SAFETY: sigset_t is plain old data; pthread_sigmask only reads the mask into it.
    unsafe {
        let mut now: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
        libc::sigismember(&now, libc::SIGCHLD) == 1
    }
}

/// This process's descriptors and what each is.
fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            format!(
                "{}:{}",
                entry.file_name().to_string_lossy(),
                target.display()
            )
        })
        .filter(|fd| !fd.contains("/proc/") || !fd.ends_with("/fd"))
        .collect();
    fds.sort();
    fds
}

/// Runs `body` in a forked child of this test process, where the forking thread is the only
/// one (what a single-threaded library host is), and returns what it wrote. The child ends
/// itself with `_exit`, and an alarm ends it if it hangs.
fn in_single_threaded_child(body: fn() -> String) -> String {
    let mut pipe = [0; 2];
    // SAFETY: a pointer to a local array of two ints.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child runs `body` and `_exit`s; glibc's fork handlers leave malloc usable
    // in the child, and the other threads of this test process (libtest's) are not copied.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: alarm and close take no pointers.
        unsafe {
            libc::alarm(60);
            libc::close(pipe[0]);
        }
        let result = std::panic::catch_unwind(body)
            .unwrap_or_else(|e| format!("panicked: {:?}", e.downcast_ref::<String>()));
        // SAFETY: a write of a live buffer, then _exit.
        unsafe {
            libc::write(pipe[1], result.as_ptr().cast(), result.len());
            libc::_exit(0);
        }
    }
    // SAFETY: close takes no pointers; the read end is wrapped in a File that owns it.
    unsafe { libc::close(pipe[1]) };
    // SAFETY: a descriptor just made, owned by nothing else.
    let mut read = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(pipe[0]) };
    let mut out = String::new();
    read.read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: a pointer to a local int.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(
        status, 0,
        "the single-threaded host: status {status:#x}, wrote {out}"
    );
    out
}

/// The jobs a single-threaded host runs after `trace_own_workers`, each checked against what
/// it must report, with the host's SIGCHLD mask, descriptors and children checked after each.
fn host_jobs() -> String {
    host_jobs_with(true)
}

/// [`host_jobs`], but for the job of a `CLONE_PTRACE` thread when `clone_ptrace` is false.
fn host_jobs_with(clone_ptrace: bool) -> String {
    let mut lines = Vec::new();
    let single = threads() == 1;
    lines.push(format!("threads {}", threads()));
    bytejail::trace_own_workers();
    let blocked = chld_blocked();
    // The first round opens what later jobs reuse (the arena, the janitor, the empty network
    // namespace): descriptors are compared with what was open after it.
    let mut fds = open_fds();
    let short = RunOptions::default()
        .with_limits(Limits::default().with_timeout(Duration::from_millis(200)));
    let mut jobs: Vec<(&str, Vec<u8>, RunOptions, &str, bool)> = vec![
        (
            "crash",
            gas("xor eax, eax\nmov rax, [rax]\nret"),
            RunOptions::default(),
            "crashed",
            true,
        ),
        ("timeout", gas("1: jmp 1b"), short, "timeout", false),
        (
            "violation",
            gas("mov rdi, 0x1111\nmov eax, 39\nsyscall\nret"),
            RunOptions::default(),
            "syscall_violation",
            true,
        ),
        (
            "forged",
            common::forged_fault_record(),
            RunOptions::default(),
            "crashed",
            true,
        ),
        (
            "return",
            gas("mov eax, 42\nret"),
            RunOptions::default(),
            "returned",
            false,
        ),
    ];
    if namespaces() && clone_ptrace {
        let threads = profile_options().with_limits(
            Limits::default()
                .with_max_procs(4)
                .with_timeout(Duration::from_secs(5)),
        );
        jobs.push((
            "CLONE_PTRACE thread",
            cloned(
                THREAD | CLONE_PTRACE,
                "mov edi, 0\nmov eax, 60\nsyscall",
                &format!("{SPIN}\nmov edi, 5\nmov eax, 60\nsyscall"),
            ),
            threads.clone(),
            "exited",
            false,
        ));
        jobs.push((
            "stop storm",
            gas(&format!("{UNMASK}\nmov eax, 39\nsyscall\nmov r12, rax\n1: mov rdi, r12\nmov esi, 23\nmov eax, 62\nsyscall\njmp 1b")),
            profile_options()
                .with_limits(Limits::default().with_timeout(Duration::from_millis(300))),
            "timeout",
            false,
        ));
        jobs.push((
            "fault as init",
            gas("mov eax, 16\nmov qword ptr [rax], 1\nret"),
            threads,
            "crashed",
            // More than one process could have sent the signal: unverified by design.
            false,
        ));
    }
    // Jobs that may start tasks go to a tracer process (see `trace_own_workers`), which then
    // lives as long as this host: none may exist before the first of them.
    let mut tracer_expected = false;
    for round in 0..2 {
        for (name, code, options, outcome, verified) in &jobs {
            tracer_expected |= options.limits.max_procs > 1;
            let start = Instant::now();
            let json = bytejail::run(code, b"", options).unwrap().to_json();
            let took = start.elapsed();
            let mut bad = Vec::new();
            if json["outcome"] != *outcome {
                bad.push("outcome");
            }
            if *verified {
                let detail = json.get("fault").or(json.get("syscall"));
                if detail.is_none_or(|d| d["verified"] != true) {
                    bad.push("unverified");
                }
            }
            if *name == "forged" && json["fault"]["address"] != 8 {
                bad.push("forged record believed");
            }
            if chld_blocked() != blocked {
                bad.push("SIGCHLD mask changed");
            }
            let now = open_fds();
            let left: Vec<&String> = now.iter().filter(|fd| !fds.contains(fd)).collect();
            let leak = format!("descriptors left: {left:?}");
            if round > 0 && !left.is_empty() {
                bad.push(&leak);
            }
            if common::tracer_of(std::process::id()).is_some() && !tracer_expected {
                bad.push("a tracer process");
            }
            if !common::children_of(std::process::id()).is_empty() {
                bad.push("children left");
            }
            if took > Duration::from_secs(5) && *outcome != "timeout" {
                bad.push("slow");
            }
            if left.iter().any(|fd| fd.contains("signalfd")) {
                bad.push("a signalfd left");
            }
            let state = if bad.is_empty() {
                "ok".to_owned()
            } else {
                bad.join(",")
            };
            lines.push(format!("round {round} {name}: {state}: {json}"));
        }
        fds = open_fds();
    }
    if !single {
        lines.push("not single-threaded".into());
    }
    lines.join("\n")
}

/// A single-threaded library host that asked to trace its own workers: every job right
/// (verified where the kernel saw it, the forged record not believed), its SIGCHLD mask and
/// descriptors as before each job, no tracer process (before a job that may start tasks) and no
/// child left; also when it started
/// with SIGCHLD ignored.
#[test]
fn a_single_threaded_library_host_is_left_as_it_was() {
    let _apart = common::forking();
    for ignore in [false, true] {
        let out = in_single_threaded_child(if ignore {
            || {
                // SAFETY: signal with SIG_IGN, in this forked child only.
                unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
                host_jobs()
            }
        } else {
            host_jobs
        });
        assert!(out.starts_with("threads 1"), "{out}");
        let bad: Vec<&str> = out
            .lines()
            .skip(1)
            .filter(|line| !line.contains(": ok: "))
            .collect();
        assert!(
            bad.is_empty(),
            "SIGCHLD ignored: {ignore}:\n{}",
            bad.join("\n")
        );
    }
}

/// The static `bytejail run`'s worker, strict and under a profile, spins about a second (many
/// preemptions) and returns: glibc's rseq area was unregistered before the worker unmapped it.
#[test]
fn static_run_workers_survive_preemption() {
    let _apart = common::beside_forks();
    let spin = gas("mov rcx, 3000000000\n1: dec rcx\njnz 1b\nmov eax, 42\nret");
    let (_dir, allow_all) = allow_all_file();
    for args in [
        vec!["--timeout", "20s"],
        vec!["--timeout", "20s", "--policy", &allow_all],
    ] {
        if args.len() > 2 && !namespaces() {
            continue;
        }
        let (report, _) = cli_report_within(&spin, &args, Duration::from_secs(30));
        assert_eq!(report["outcome"], "returned", "{args:?}: {report}");
        assert_eq!(report["rax"], 42, "{args:?}: {report}");
    }
}

/// The static binary's pooled and same-code workers (`bytejail batch`, `--jobs 2`, `--reuse
/// same-code`, and zygote-forked fresh ones) run a guest long enough to be preempted many times
/// and return: no rseq area left registered under them.
#[test]
fn static_batch_workers_survive_preemption() {
    let _apart = common::beside_forks();
    // About 0.3 s of spinning: preempted many times on a shared machine.
    let spin = hex(&gas(
        "mov ecx, 600000000\n1: dec ecx\njnz 1b\nmov eax, 42\nret",
    ));
    let lines: String = (0..6)
        .map(|id| format!("{{\"id\":{id},\"code_hex\":\"{spin}\",\"timeout_ms\":20000}}\n"))
        .collect();
    let (_dir, allow_all) = allow_all_file();
    let mut modes = vec![
        vec!["--jobs", "2", "-"],
        vec!["--jobs", "2", "--reuse", "same-code", "-"],
        vec!["--jobs", "1", "--reuse", "same-code", "-"],
        vec!["--jobs", "1", "-"],
    ];
    if namespaces() {
        modes.push(vec!["--jobs", "2", "--policy", &allow_all, "-"]);
        modes.push(vec![
            "--jobs",
            "1",
            "--reuse",
            "same-code",
            "--policy",
            &allow_all,
            "-",
        ]);
    }
    for args in modes {
        let run = common::batch_of(&args, &lines);
        let answers = &run.results;
        assert_eq!(answers.len(), 6, "{args:?}: {answers:?} {}", run.stderr);
        for answer in answers {
            assert_eq!(answer["outcome"], "returned", "{args:?}: {answer}");
            assert_eq!(answer["rax"], 42, "{args:?}: {answer}");
        }
    }
}

/// A single-threaded library host with a stopped child of its own that nobody traces: its jobs
/// are right, and the child's stop is still there for the host to wait for (the thread's look
/// for its tracees' stops takes nothing that is not a ptrace stop).
#[test]
fn a_library_hosts_own_stopped_child_keeps_its_stop_report() {
    let _apart = common::forking();
    let out = in_single_threaded_child(|| {
        // SAFETY: fork in a single-threaded process; the child stops itself and then `_exit`s.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: raise and _exit take no pointers.
            unsafe {
                libc::raise(libc::SIGSTOP);
                libc::_exit(3);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while common::children_of(std::process::id())
            .iter()
            .all(|&(pid, state)| pid != child as u32 || state != 'T')
        {
            assert!(Instant::now() < deadline, "the child never stopped");
            std::thread::sleep(Duration::from_millis(2));
        }
        let jobs = host_jobs_with(false);
        let mut status = 0;
        // SAFETY: a pointer to a local int.
        let got = unsafe { libc::waitpid(child, &mut status, libc::WUNTRACED | libc::WNOHANG) };
        let stop = if got == child && libc::WIFSTOPPED(status) {
            "stop kept".to_owned()
        } else {
            format!("stop lost: waitpid {got}, status {status:#x}")
        };
        // SAFETY: kill and waitpid on this process's own child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, &mut status, 0);
        }
        format!("{jobs}\n{stop}")
    });
    assert!(out.starts_with("threads 1"), "{out}");
    assert!(out.ends_with("stop kept"), "{out}");
    // The stopped child is a child of the host: the per-job "children left" check sees it.
    let bad: Vec<&str> = out
        .lines()
        .skip(1)
        .filter(|line| line.starts_with("round") && !line.contains(": ok: "))
        .filter(|line| !line.contains(": children left: "))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Children of its own a handler reaped, in the single-threaded host of the test below.
static REAPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn reap_children(_: libc::c_int) {
    let mut status = 0;
    // SAFETY: waitpid with a pointer to a local int; async-signal-safe.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {
        REAPED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A single-threaded library host that reaps its own children from a SIGCHLD handler: a child
/// of its that ends while a job runs (its SIGCHLD blocked and read with the job's stops) is
/// still reaped by the handler once the job is over: the trace raises a SIGCHLD again for
/// the ones it read.
#[test]
fn a_hosts_sigchld_handler_still_reaps_a_child_that_ended_during_a_job() {
    let _apart = common::forking();
    let out = in_single_threaded_child(|| {
        // SAFETY: sigaction with a handler that only calls waitpid, in this forked child.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = reap_children as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());
        }
        bytejail::trace_own_workers();
        // The host's own child: ends 50 ms from now, while the job below runs.
        // SAFETY: the child only sleeps and _exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: _exit takes no pointers.
            unsafe { libc::_exit(0) };
        }
        // About 300 ms of spinning, then a fault: the worker's stops come after the child's end.
        let code =
            gas("mov rcx, 1000000000\n1: dec rcx\njnz 1b\nxor eax, eax\nmov rax, [rax]\nret");
        let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
        let json = report.to_json();
        std::thread::sleep(Duration::from_millis(20));
        format!(
            "reaped {} fault verified {}",
            REAPED.load(std::sync::atomic::Ordering::SeqCst),
            json["fault"]["verified"]
        )
    });
    assert_eq!(out, "reaped 1 fault verified true");
}
