//! A host process that forks after it has run jobs (a pre-forking server, say) leaves its
//! children a copy of its thread's cached arena but not the arena's memory, which is never
//! inherited: a child's first job must make its own arena instead of writing into the hole.
//! One test in its own binary: it forks the test process.

use bytejail::{Outcome, RunOptions};

fn rax_of_42() -> u64 {
    let report = bytejail::run(&[0xb0, 0x2a, 0xc3], b"", &RunOptions::default()).unwrap();
    match report.outcome {
        Outcome::Returned(regs) => regs.rax,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_child_forked_after_a_run_runs_jobs_of_its_own() {
    // The parent's thread now caches an arena.
    assert_eq!(rax_of_42(), 42);
    // SAFETY: the child runs jobs (glibc's fork leaves malloc usable in it) and leaves with
    // `_exit`, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(|| (0..3).map(|_| rax_of_42()).sum::<u64>());
        // SAFETY: ends the child without running the harness's destructors.
        unsafe { libc::_exit(code.map_or(1, |sum| (sum / 3) as i32)) }
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status),
        "the child died of signal {}",
        libc::WTERMSIG(status)
    );
    assert_eq!(
        libc::WEXITSTATUS(status),
        42,
        "three jobs in the child returned 42"
    );
    // And the parent's arena is still its own.
    assert_eq!(rax_of_42(), 42);
}
