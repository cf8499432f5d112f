//! A tracer process or zygote stopped from outside bytejail (`SIGSTOP`, a debugger: nothing of
//! a job's can reach either) never makes a job wait forever. A request it does not answer
//! within 5 s ends it: the job fails as a runner failure, and later jobs get a new one. The
//! twin: one stopped for less than that and continued answers late, and the job runs as usual.
//!
//! The tests of this file stop the tracer every other test of the process shares: they run one
//! at a time, in a test binary of their own.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytejail::{Error, Outcome, RunOptions, SameCode, Zygote};
use common::{alive, gas, tracer_of};

static ONE: Mutex<()> = Mutex::new(());

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill takes no pointers.
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill {pid} {sig}"
    );
}

fn returns_42(report: &bytejail::Report) {
    match &report.outcome {
        Outcome::Returned(regs) => assert_eq!(regs.rax, 42, "{}", report.summary()),
        other => panic!("{other:?}: {}", report.summary()),
    }
}

fn forty_two() -> Vec<u8> {
    gas("mov eax, 42\nret")
}

/// This process's tracer, started by a traced job if need be.
fn the_tracer() -> u32 {
    returns_42(&bytejail::run(&forty_two(), b"", &RunOptions::default()).unwrap());
    tracer_of(std::process::id()).expect("a traced job started a tracer process")
}

#[test]
fn a_stopped_tracer_is_ended_and_replaced() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let tracer = the_tracer();
    // The twin: stopped for a second, then continued: the job waits, and runs traced.
    signal(tracer, libc::SIGSTOP);
    let cont = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        signal(tracer, libc::SIGCONT);
    });
    let start = Instant::now();
    let report = bytejail::run(&forty_two(), b"", &RunOptions::default()).unwrap();
    cont.join().unwrap();
    returns_42(&report);
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "it waited for the tracer"
    );
    assert_eq!(
        tracer_of(std::process::id()),
        Some(tracer),
        "the same tracer"
    );

    // Stopped for good: the job fails after the wait, and the tracer is ended.
    signal(tracer, libc::SIGSTOP);
    let start = Instant::now();
    let error = bytejail::run(&forty_two(), b"", &RunOptions::default())
        .expect_err("a job whose tracer never answers has no outcome");
    let took = start.elapsed();
    assert!(matches!(error, Error::Runner { .. }), "{error}");
    assert!(error.to_string().contains("tracer"), "{error}");
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(30)).contains(&took),
        "took {took:?}"
    );
    assert!(!alive(tracer), "the stopped tracer was ended");
    // Later jobs, fresh and same-code, have a new tracer.
    let again = the_tracer();
    assert_ne!(again, tracer);
    let mut same = SameCode::new(&forty_two(), &RunOptions::default()).unwrap();
    returns_42(&same.run(b"").unwrap());
}

#[test]
fn a_stopped_zygote_is_ended_and_replaced() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let options = RunOptions::default();
    let zygote = Zygote::start().unwrap();
    returns_42(&zygote.run(&forty_two(), b"", &options).unwrap());
    // The twin: stopped for a second, then continued.
    let pid = zygote.pid();
    signal(pid, libc::SIGSTOP);
    let cont = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        signal(pid, libc::SIGCONT);
    });
    returns_42(&zygote.run(&forty_two(), b"", &options).unwrap());
    cont.join().unwrap();
    assert!(!zygote.has_ended());

    signal(pid, libc::SIGSTOP);
    let start = Instant::now();
    let error = zygote
        .run(&forty_two(), b"", &options)
        .expect_err("a zygote that never answers forks no worker");
    let took = start.elapsed();
    assert!(matches!(error, Error::Runner { .. }), "{error}");
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(30)).contains(&took),
        "took {took:?}"
    );
    assert!(zygote.has_ended(), "the stopped zygote was ended");

    // A same-code session replaces its own zygote when it finds it ended.
    let shared = Zygote::start().unwrap();
    let mut same = SameCode::with_zygote(&forty_two(), &options, &shared).unwrap();
    returns_42(&same.run(b"").unwrap());
    signal(shared.pid(), libc::SIGSTOP);
    // The running worker is not the zygote's to hold up; a crash needs a new one.
    let crash = gas("mov rax, [0]\nret");
    let mut same = SameCode::with_zygote(&crash, &options, &shared).unwrap();
    let first = same.run(b"");
    assert!(
        first.is_err(),
        "the first worker comes from the stopped zygote"
    );
    let second = same.run(b"").unwrap();
    assert!(
        matches!(second.outcome, Outcome::Crashed { .. }),
        "{}",
        second.summary()
    );
}

/// Runs a guest that spins past its 1 s deadline, stops `tracer` 300 ms in and continues it
/// after `stopped` (never, with `None`); what the run said, and how long it took.
fn stop_mid_job(
    tracer: u32,
    stopped: Option<Duration>,
) -> (Result<bytejail::Report, Error>, Duration) {
    let mut options = RunOptions::default();
    options.limits.timeout = Duration::from_secs(1);
    let job = std::thread::spawn(move || {
        let start = Instant::now();
        let report = bytejail::run(&gas("1: jmp 1b"), b"", &options);
        (report, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    signal(tracer, libc::SIGSTOP);
    if let Some(stopped) = stopped {
        std::thread::sleep(stopped);
        signal(tracer, libc::SIGCONT);
    }
    job.join().unwrap()
}

/// A tracer stopped while its worker runs would hold the worker, killed at its deadline, in
/// its exit stop for good: after 5 s more the tracer is ended, and the job ends with what the
/// host saw (its deadline passed: a timeout). The twin: continued after a second, the same job
/// ends when the tracer lets the worker go, with the same outcome, and the tracer lives on.
#[test]
fn a_tracer_stopped_mid_job_is_ended_and_the_job_ends() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let tracer = the_tracer();
    let (report, took) = stop_mid_job(tracer, Some(Duration::from_secs(1)));
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Timeout, "{}", report.summary());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(alive(tracer), "a tracer that answers again lives on");

    let (report, took) = stop_mid_job(tracer, None);
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(30)).contains(&took),
        "took {took:?}"
    );
    match report {
        Ok(report) => assert_eq!(report.outcome, Outcome::Timeout, "{}", report.summary()),
        Err(error) => assert!(error.to_string().contains("tracer"), "{error}"),
    }
    assert!(!alive(tracer), "the stopped tracer was ended");
    assert_ne!(the_tracer(), tracer, "later jobs have a new tracer");
}

/// A pool whose tracer is stopped: the refill thread's seizes (and its ends of retired
/// workers, were one held at its exit stop) give up on the tracer after 5 s and end it, so
/// jobs keep coming back (from new workers, traced by a new tracer) and the pool drops in
/// bounded time. The twin: the same jobs before the stop.
#[test]
fn a_pool_whose_tracer_is_stopped_goes_on() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let pool = bytejail::Pool::new(RunOptions::default(), 2).unwrap();
    for _ in 0..3 {
        returns_42(&pool.run(&forty_two(), b"", &RunOptions::default()).unwrap());
    }
    let tracer = tracer_of(std::process::id()).expect("the pool's workers are traced");
    signal(tracer, libc::SIGSTOP);
    let start = Instant::now();
    for i in 0..4 {
        match pool.run(&forty_two(), b"", &RunOptions::default()) {
            Ok(report) => returns_42(&report),
            Err(error) => assert!(error.to_string().contains("tracer"), "job {i}: {error}"),
        }
    }
    drop(pool);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(!alive(tracer), "the stopped tracer was ended");
    returns_42(&bytejail::run(&forty_two(), b"", &RunOptions::default()).unwrap());
}
