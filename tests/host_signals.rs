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

/// A host whose signal handlers interrupt system calls (installed without `SA_RESTART`, as
/// libFuzzer's and many C programs' are), with a timer that signals the running thread every
/// 100 us: every traced job's report still names the call strict mode killed, verified. An
/// interrupted exchange with the tracer process once left its answer unread; the next worker
/// then ran before it was held and its end was reported as a kill from outside.
#[test]
fn a_host_with_interrupting_signals_still_gets_verified_reports() {
    extern "C" fn tick(_: libc::c_int) {}
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: a handler that does nothing, installed without SA_RESTART; a timer that sends
    // this thread SIGALRM every 100 us until it is deleted below.
    #[allow(unsafe_code)]
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = tick as *const () as usize;
        action.sa_flags = 0;
        libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
        let mut event: libc::sigevent = std::mem::zeroed();
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = libc::SIGALRM;
        event.sigev_notify_thread_id = libc::gettid();
        assert_eq!(
            libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer),
            0
        );
        let every = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000,
        };
        let spec = libc::itimerspec {
            it_interval: every,
            it_value: every,
        };
        libc::timer_settime(timer, 0, &spec, std::ptr::null_mut());
    }
    // mov eax, 0x4803c; xor edi, edi; syscall: a number strict mode does not allow.
    let code = [
        0xb8, 0x3c, 0x80, 0x04, 0x00, 0x31, 0xff, 0x0f, 0x05, 0x0f, 0x0b,
    ];
    let mut wrong = Vec::new();
    for i in 0..400 {
        let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
        let named = report
            .syscall
            .as_ref()
            .is_some_and(|s| s.nr == 0x4803c && s.verified && s.code_offset == Some(7));
        if report.outcome != Outcome::SyscallViolation || !named {
            wrong.push(format!("{i}: {}", report.summary()));
        }
    }
    // SAFETY: the timer made above.
    #[allow(unsafe_code)]
    unsafe {
        libc::timer_delete(timer);
    }
    assert!(
        wrong.is_empty(),
        "{} of 400 reports wrong: {wrong:#?}",
        wrong.len()
    );
}
