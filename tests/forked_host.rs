//! A host process that forks after it has run jobs (a pre-forking server, say) leaves its
//! children copies of what belongs to it: its thread's cached arena (whose memory is never
//! inherited), its pools, zygotes and same-code runners (whose threads and workers are its
//! own). A child's jobs make their own arena; using the host's objects gives an error; dropping
//! them touches nothing of the host's. One test in its own binary: it forks the test process.

use std::time::{Duration, Instant};

use bytejail::{Outcome, Pool, Report, RunOptions, SameCode, Zygote};

const RETURN_42: [u8; 3] = [0xb0, 0x2a, 0xc3];

fn rax(report: &Report) -> u64 {
    match report.outcome {
        Outcome::Returned(regs) => regs.rax,
        ref other => panic!("{other:?}"),
    }
}

fn run_42() -> u64 {
    rax(&bytejail::run(&RETURN_42, b"", &RunOptions::default()).unwrap())
}

/// What the child checks, each a bit of its exit status when it fails.
fn child(pool: Pool, zygote: Zygote, mut same: SameCode) -> i32 {
    let mut failed = 0;
    // Its own jobs run, in an arena of its own.
    if (0..3).any(|_| run_42() != 42) {
        failed |= 1;
    }
    // The host's objects refuse, naming what happened.
    let forked = |e: bytejail::Error| e.to_string().contains("forked");
    let options = RunOptions::default();
    if !pool.run(&RETURN_42, b"", &options).is_err_and(forked) {
        failed |= 2;
    }
    if !zygote.run(&RETURN_42, b"", &options).is_err_and(forked) {
        failed |= 4;
    }
    if !same.run(b"").is_err_and(forked) {
        failed |= 8;
    }
    // And dropping them neither joins the host's threads nor ends its workers.
    drop((pool, zygote, same));
    failed
}

#[test]
fn a_child_forked_after_jobs_runs_its_own_and_leaves_the_hosts_alone() {
    // The parent's thread now caches an arena, and it holds a pool, a zygote and a same-code
    // runner with a parked worker.
    assert_eq!(run_42(), 42);
    let options = RunOptions::default();
    let pool = Pool::new(options.clone(), 1).unwrap();
    let zygote = Zygote::start().unwrap();
    let mut same = SameCode::new(&RETURN_42, &options).unwrap();
    assert_eq!(rax(&same.run(b"").unwrap()), 42);
    let worker = same.worker_pid();

    // SAFETY: glibc's fork leaves malloc usable in the child, which uses only this thread's
    // data and leaves with `_exit`, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Moved in as copies; the parent's originals are untouched by whatever happens here.
        // SAFETY: bitwise copies the child owns alone (the parent's stay in its memory).
        let copies = unsafe {
            (
                std::ptr::read(&pool),
                std::ptr::read(&zygote),
                std::ptr::read(&same),
            )
        };
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            child(copies.0, copies.1, copies.2)
        }))
        .unwrap_or(64);
        // SAFETY: ends the child without running the harness's destructors (or the parent's
        // objects' a second time).
        unsafe { libc::_exit(status) }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = 0;
    loop {
        // SAFETY: polls the child forked above.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if got == pid {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: the child is ours and not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the child hung (dropping the host's objects?)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        libc::WIFEXITED(status),
        "the child died of signal {}",
        libc::WTERMSIG(status)
    );
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "failed checks (bits): 1 run, 2 pool, 4 zygote, 8 same-code, 64 panic"
    );

    // The parent's objects still work, and its same-code worker was not ended by the child.
    assert_eq!(run_42(), 42);
    assert_eq!(rax(&pool.run(&RETURN_42, b"", &options).unwrap()), 42);
    assert_eq!(rax(&zygote.run(&RETURN_42, b"", &options).unwrap()), 42);
    assert_eq!(rax(&same.run(b"").unwrap()), 42);
    assert_eq!(same.worker_pid(), worker, "the same worker");
    assert_eq!(same.workers_started(), 1);
}
