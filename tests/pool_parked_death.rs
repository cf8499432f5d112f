//! A pooled worker killed from outside while parked never runs its job, and the job runs in a
//! fresh worker with the report a fresh worker gives: the pool tells that case apart by the go
//! byte still waiting in the worker's fd 0 pipe (it no longer asks the worker's pidfd before
//! every job). Its twin: a worker killed from outside after it took its go byte ran the job,
//! and the job is reported killed, not run again.
//!
//! A file of its own: it kills every parked worker of this test process, which would turn
//! other tests' parked jobs into fresh ones.

use std::time::{Duration, Instant};

use bytejail::{Outcome, Pool, RunOptions};

mod common;
use common::gas;

/// This process's children in strict seccomp mode (its pool's workers; the zygote is not in
/// strict mode), with their scheduler state letter.
fn strict_children() -> Vec<(i32, char)> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if field("PPid:").as_deref() == Some(me.as_str())
            && field("Seccomp:").as_deref() == Some("1")
        {
            let state = field("State:")
                .and_then(|s| s.chars().next())
                .unwrap_or('?');
            found.push((pid, state));
        }
    }
    found
}

/// The two tests kill workers of this whole process: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn wait_until_full(pool: &Pool, size: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().parked < size && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(pool.stats().parked, size);
}

/// Kills every parked worker and waits until each is a zombie (dead, not reaped).
fn kill_parked() -> usize {
    let parked = strict_children();
    for &(pid, _) in &parked {
        // SAFETY: kill(2) of our own child; no memory is passed.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while strict_children().iter().any(|&(_, s)| s != 'Z') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    parked.len()
}

#[test]
fn a_worker_killed_while_parked_never_runs_the_job_which_runs_fresh() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pool = Pool::new(RunOptions::default(), 2).unwrap();
    let echo = gas(
        "mov r12, rdx\n mov r13, rcx\n1: xor eax, eax\n xor edi, edi\n mov rsi, r12\n\
         mov rdx, r13\n syscall\n test rax, rax\n jle 2f\n mov rdx, rax\n mov eax, 1\n\
         mov edi, 1\n mov rsi, r12\n syscall\n jmp 1b\n2: mov eax, 42\n ret",
    );
    let input = b"input behind the go byte".repeat(50);
    for (round, job_input) in [&b""[..], &input[..]].into_iter().enumerate() {
        wait_until_full(&pool, 2);
        assert_eq!(kill_parked(), 2, "round {round}");
        let report = pool.run(&echo, job_input, &RunOptions::default()).unwrap();
        assert!(
            matches!(report.outcome, Outcome::Returned(regs) if regs.rax == 42),
            "round {round}: {}",
            report.summary()
        );
        assert_eq!(report.output, job_input, "round {round}");
        // Both dead workers are gone from the pool: the job found one (LIFO), ran fresh, and
        // the other is found by the next round's kill or left as a zombie the pool ends.
        assert!(pool.stats().fallbacks > round as u64, "round {round}");
    }
}

#[test]
fn twin_a_worker_killed_after_its_go_byte_ran_the_job_and_is_reported_killed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let spin = vec![0xeb, 0xfe];
    let options = RunOptions::default()
        .with_limits(bytejail::Limits::default().with_timeout(Duration::from_secs(20)));
    let pool = Pool::new(options.clone(), 1).unwrap();
    wait_until_full(&pool, 1);
    let killer = std::thread::spawn(|| {
        // The spinning worker is the one running (state R); a parked one sleeps.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(&(pid, _)) = strict_children().iter().find(|&&(_, s)| s == 'R') {
                // SAFETY: kill(2) of our own child; no memory is passed.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("no running worker found");
    });
    let report = pool.run(&spin, b"", &options).unwrap();
    killer.join().unwrap();
    // Killed from outside: whatever a fresh worker's report says of that (strict mode's
    // SIGKILL), not a return, and not the timeout a re-run job would reach.
    assert!(
        !matches!(report.outcome, Outcome::Returned(_) | Outcome::Timeout),
        "{}",
        report.summary()
    );
    assert!(report.wall < Duration::from_secs(10));
    assert_eq!(
        pool.stats().fallbacks,
        0,
        "the job ran in the parked worker, once: {}",
        report.summary()
    );
}
