//! Cancelling a running job from another thread (`bytejail::Cancel`): the job ends at once,
//! reported as `cancelled`, in a fresh worker, a pool, a same-code worker and under a profile;
//! and a job without the handle, or with another one, runs on to its own end.

mod common;

use std::time::{Duration, Instant};

use bytejail::{Cancel, Limits, Outcome, RunOptions};

const SPIN: [u8; 2] = [0xeb, 0xfe]; // jmp $

fn spinning(cancel: &Cancel) -> RunOptions {
    RunOptions::default()
        .with_limits(Limits::default().with_timeout(Duration::from_secs(20)))
        .with_cancel(Some(cancel.clone()))
}

/// Cancels `cancel` after `after`, from another thread.
fn cancel_after(cancel: &Cancel, after: Duration) -> std::thread::JoinHandle<()> {
    let cancel = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        cancel.cancel();
    })
}

#[test]
fn a_cancelled_job_ends_at_once_as_cancelled() {
    let cancel = Cancel::new().unwrap();
    assert!(!cancel.is_cancelled());
    let canceller = cancel_after(&cancel, Duration::from_millis(200));
    let start = Instant::now();
    let report = bytejail::run(&SPIN, b"", &spinning(&cancel)).unwrap();
    canceller.join().unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled, "{}", report.summary());
    assert_eq!(report.outcome.exit_status(), 124);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(cancel.is_cancelled());
    // Once cancelled, a handle ends every job started with it at once.
    let report = bytejail::run(&[0xb0, 42, 0xc3], b"", &spinning(&cancel)).unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled, "{}", report.summary());
}

/// A job started with a handle already cancelled never runs, however quickly it would end:
/// a returning guest raced the host's first look at the handle and was reported `returned`
/// (seen in CI). Fresh, zygote, pooled and same-code jobs; the twin runs the same jobs with a
/// handle nobody cancelled and sees them return.
#[test]
fn a_job_started_with_a_cancelled_handle_never_runs() {
    const RETURN_42: [u8; 3] = [0xb0, 42, 0xc3];
    let zygote = bytejail::Zygote::start().unwrap();
    let pool = bytejail::Pool::new(RunOptions::default(), 2).unwrap();
    let mut same = bytejail::SameCode::new(&RETURN_42, &RunOptions::default()).unwrap();
    for (cancelled, expect) in [(true, None), (false, Some(42))] {
        let cancel = Cancel::new().unwrap();
        if cancelled {
            cancel.cancel();
        }
        let options = spinning(&cancel);
        for round in 0..100 {
            let reports = [
                bytejail::run(&RETURN_42, b"", &options).unwrap(),
                zygote.run(&RETURN_42, b"", &options).unwrap(),
                pool.run(&RETURN_42, b"", &options).unwrap(),
                same.run_with(b"", &options).unwrap(),
            ];
            for (kind, report) in ["fresh", "zygote", "pool", "same-code"].iter().zip(reports) {
                let seen = match &report.outcome {
                    Outcome::Returned(regs) => Some(regs.rax),
                    Outcome::Cancelled => None,
                    other => panic!("{kind} job, round {round}: {other:?}"),
                };
                assert_eq!(
                    seen,
                    expect,
                    "{kind} job, round {round}: {}",
                    report.summary()
                );
            }
        }
    }
}

/// The twin: the same job with a handle nobody cancels (and with another, cancelled, handle's
/// clone elsewhere) runs to its own deadline.
#[test]
fn an_uncancelled_job_runs_to_its_deadline() {
    let idle = Cancel::new().unwrap();
    let other = Cancel::new().unwrap();
    other.cancel();
    assert_ne!(idle, other);
    assert_eq!(idle, idle.clone());
    let options =
        spinning(&idle).with_limits(Limits::default().with_timeout(Duration::from_millis(300)));
    let report = bytejail::run(&SPIN, b"", &options).unwrap();
    assert_eq!(report.outcome, Outcome::Timeout, "{}", report.summary());
}

#[test]
fn pooled_and_same_code_jobs_can_be_cancelled() {
    let cancel = Cancel::new().unwrap();
    let options = spinning(&cancel);
    let pool = bytejail::Pool::new(RunOptions::default(), 1).unwrap();
    let canceller = cancel_after(&cancel, Duration::from_millis(200));
    let report = pool.run(&SPIN, b"", &options).unwrap();
    canceller.join().unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled, "{}", report.summary());

    let cancel = Cancel::new().unwrap();
    let options = spinning(&cancel);
    let mut same = bytejail::SameCode::new(&SPIN, &options).unwrap();
    let canceller = cancel_after(&cancel, Duration::from_millis(200));
    let report = same.run(b"").unwrap();
    canceller.join().unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled, "{}", report.summary());
}

#[test]
fn a_profile_job_can_be_cancelled() {
    if !common::namespaces() {
        eprintln!("not root: no profile workers here; skipping");
        return;
    }
    let cancel = Cancel::new().unwrap();
    let options = spinning(&cancel).with_policy(common::allow_all());
    let canceller = cancel_after(&cancel, Duration::from_millis(200));
    let report = bytejail::run(&SPIN, b"", &options).unwrap();
    canceller.join().unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled, "{}", report.summary());
}
