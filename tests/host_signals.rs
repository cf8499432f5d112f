//! The host's own signal set-up never disturbs a run: a guest that stops reading its input
//! does not kill a host that left SIGPIPE at its default action (Rust programs ignore it; C
//! hosts often do not), and a host that ignores SIGCHLD (auto-reaping) or reaps every child
//! with `waitpid(-1)` elsewhere still gets every report. These tests change process-wide signal
//! dispositions, so they live in a file of their own.

use std::time::{Duration, Instant};

use bytejail::{Outcome, RunOptions};

#[test]
fn guest_exiting_before_reading_input_does_not_disturb_the_host() {
    // SAFETY: restoring the default disposition of SIGPIPE; no handler is involved.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let exit_7 = [0xb8, 0x3c, 0, 0, 0, 0xbf, 0x07, 0, 0, 0, 0x0f, 0x05]; // exit(7)
    let input = vec![1u8; 8 << 20];
    for _ in 0..20 {
        let start = Instant::now();
        let report = bytejail::run(&exit_7, &input, &RunOptions::default()).unwrap();
        assert_eq!(report.outcome, Outcome::Exited(7));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
    }
    // Still here: SIGPIPE at its default action would have ended this process.
    let report = bytejail::run(&[0xb0, 0x2a, 0xc3], b"", &RunOptions::default()).unwrap();
    assert!(matches!(report.outcome, Outcome::Returned(r) if r.rax == 42));
}

#[test]
fn a_host_that_ignores_sigchld_and_reaps_everything_still_gets_reports() {
    // SAFETY: SIG_IGN for SIGCHLD: the kernel then auto-reaps children that exit with SIGCHLD.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    // Another part of the program reaps any child it can, as some servers do.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reaper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut status = 0;
                // SAFETY: waitpid with a valid status pointer.
                #[allow(unsafe_code)]
                unsafe {
                    libc::waitpid(-1, &mut status, libc::WNOHANG)
                };
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };
    for i in 0..200u64 {
        let mut options = RunOptions::default();
        options.registers.set(bytejail::Gpr::RBX, i).unwrap();
        // mov rax, rbx; ret
        let report = bytejail::run(&[0x48, 0x89, 0xd8, 0xc3], b"", &options).unwrap();
        assert!(
            matches!(report.outcome, Outcome::Returned(r) if r.rax == i),
            "{:?}",
            report.outcome
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reaper.join().unwrap();
}
