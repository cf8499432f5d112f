//! A tracer process killed from outside bytejail (an operator's `kill`, the OOM killer: nothing
//! of a job's can reach it). `PTRACE_O_EXITKILL` kills every worker it traced. The job whose
//! guest was running then fails as a runner failure, never as an outcome the guest did not
//! have (a strict worker's SIGKILL would otherwise read as a syscall violation or an outside
//! kill), and later jobs, pooled and same-code ones included, are traced by a new tracer, their
//! details verified as before.
//!
//! The tests of this file kill the tracer every other test of the process shares: they run one
//! at a time, in a test binary of their own.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytejail::{Error, Outcome, Pool, Report, RunOptions, SameCode};
use common::{alive, gas, namespaces, profile_options, tracer_of};

/// One test at a time: each kills the tracer the others use.
static ONE: Mutex<()> = Mutex::new(());

fn me() -> u32 {
    std::process::id()
}

fn kill(pid: u32) {
    // SAFETY: kill takes no pointers.
    assert_eq!(
        unsafe { libc::kill(pid as i32, libc::SIGKILL) },
        0,
        "kill {pid}"
    );
}

/// Waits until every one of `pids` has ended (a zombie, or reaped).
fn wait_ended(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(Instant::now() < deadline, "{pids:?} still alive after 30 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A field of `/proc/<pid>/status`, e.g. `TracerPid`.
fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
}

/// A process traced by `tracer` that runs under seccomp, once there is one.
fn worker_traced_by(tracer: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let traced = status_field(pid, "TracerPid") == Some(tracer.to_string());
            let confined = status_field(pid, "Seccomp").is_some_and(|mode| mode != "0");
            if traced && confined {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no worker traced by {tracer} ran within 30 s");
}

/// The tracer process of this test process: started if need be by a job whose guest faults,
/// whose report then shows the fault verified (the kernel's, through the tracer).
fn traced_fault(options: &RunOptions) -> u32 {
    let report = bytejail::run(&gas("mov rax, [0]\nret"), b"", options).unwrap();
    assert_verified_fault(&report);
    tracer_of(me()).expect("a traced job started a tracer process")
}

fn assert_verified_fault(report: &Report) {
    match &report.outcome {
        Outcome::Crashed { signal, fault } => {
            assert_eq!(*signal, libc::SIGSEGV, "{}", report.summary());
            let fault = fault.as_ref().expect("the fault's details");
            assert!(fault.verified, "traced: {}", report.summary());
        }
        other => panic!("expected a crash, got {other:?}: {}", report.summary()),
    }
}

/// Runs a guest that spins until its 60 s deadline, kills `victim(tracer, worker)` once the
/// tracer holds its worker, and returns what the run said and how long it took.
fn spin_and_kill(
    options: &RunOptions,
    tracer: u32,
    victim: fn(u32, u32) -> u32,
) -> (Result<Report, Error>, Duration) {
    let mut options = options.clone();
    options.limits.timeout = Duration::from_secs(60);
    let start = Instant::now();
    let job = std::thread::spawn(move || bytejail::run(&gas("1: jmp 1b"), b"", &options));
    let worker = worker_traced_by(tracer);
    kill(victim(tracer, worker));
    (job.join().unwrap(), start.elapsed())
}

fn the_worker(_tracer: u32, worker: u32) -> u32 {
    worker
}

fn the_tracer(tracer: u32, _worker: u32) -> u32 {
    tracer
}

fn a_running_job_fails_and_later_ones_are_traced(options: &RunOptions) {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let tracer = traced_fault(options);

    // The twin: the worker itself killed from outside is guest behaviour, an outcome.
    let (killed, _) = spin_and_kill(options, tracer, the_worker);
    let killed = killed.expect("a worker killed from outside is an outcome");
    assert_eq!(killed.outcome, Outcome::Killed, "{}", killed.summary());

    // Its tracer killed: the job fails, at once rather than at its deadline.
    let (lost, took) = spin_and_kill(options, tracer, the_tracer);
    let error = lost.expect_err("a job whose tracer died has no true outcome");
    assert!(matches!(error, Error::Runner { .. }), "{error}");
    assert!(error.to_string().contains("tracer"), "{error}");
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // Later jobs have a tracer again.
    let again = traced_fault(options);
    assert_ne!(again, tracer, "a new tracer process");
}

#[test]
fn a_strict_job_whose_tracer_is_killed_fails_and_later_jobs_are_traced() {
    a_running_job_fails_and_later_ones_are_traced(&RunOptions::default());
}

#[test]
fn a_profile_job_whose_tracer_is_killed_fails_and_later_jobs_are_traced() {
    if !namespaces() {
        eprintln!("skipped: workers get PID namespaces only as root");
        return;
    }
    a_running_job_fails_and_later_ones_are_traced(&profile_options());
}

#[test]
fn parked_pool_workers_killed_with_their_tracer_are_replaced() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let options = RunOptions::default();
    let fault = gas("mov rax, [0]\nret");
    let pool = Pool::new(options.clone(), 2).unwrap();
    assert_verified_fault(&pool.run(&fault, b"", &options).unwrap());
    // Parked workers wait traced: killing their tracer kills them too.
    let tracer = tracer_of(me()).expect("the pool's workers are traced");
    let parked = worker_traced_by(tracer);
    kill(tracer);
    // (A job that starts while the tracer is still ending fails as a job whose tracer was
    // killed while it ran: see the tests above.)
    wait_ended(&[tracer, parked]);
    for _ in 0..6 {
        // Every job runs, in a worker a new tracer holds.
        assert_verified_fault(&pool.run(&fault, b"", &options).unwrap());
    }
    assert_ne!(tracer_of(me()), Some(tracer));
}

#[test]
fn a_parked_same_code_worker_killed_with_its_tracer_is_replaced() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let options = RunOptions::default();
    let mut session = SameCode::new(&gas("mov eax, 42\nret"), &options).unwrap();
    let returned = |report: Report| match report.outcome {
        Outcome::Returned(regs) => regs.rax,
        ref other => panic!("expected a return, got {other:?}: {}", report.summary()),
    };
    assert_eq!(returned(session.run(b"").unwrap()), 42);
    let worker = session.worker_pid().expect("a parked worker");
    let tracer: u32 = status_field(worker, "TracerPid").unwrap().parse().unwrap();
    assert_ne!(tracer, 0, "the same-code worker is traced");
    kill(tracer);
    wait_ended(&[tracer, worker]);
    // The parked worker died with its tracer, before this input started: it runs in a new
    // worker, traced by a new tracer.
    assert_eq!(returned(session.run(b"").unwrap()), 42);
    let worker = session.worker_pid().expect("a parked worker");
    let now: u32 = status_field(worker, "TracerPid").unwrap().parse().unwrap();
    assert!(
        now != 0 && now != tracer,
        "traced by {now}, the old tracer was {tracer}"
    );
}
