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

/// A timer that sends the calling thread SIGALRM every `every`, to a handler installed
/// without `SA_RESTART` (as libFuzzer's and many C programs' are), so that the thread's slow
/// system calls return EINTR; deleted when dropped.
struct Interrupting(libc::timer_t);

impl Interrupting {
    fn every(every: Duration) -> Interrupting {
        extern "C" fn tick(_: libc::c_int) {}
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: a handler that does nothing; a timer aimed at this thread.
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
                tv_nsec: every.as_nanos() as i64,
            };
            let spec = libc::itimerspec {
                it_interval: every,
                it_value: every,
            };
            libc::timer_settime(timer, 0, &spec, std::ptr::null_mut());
        }
        Interrupting(timer)
    }
}

impl Drop for Interrupting {
    fn drop(&mut self) {
        // SAFETY: the timer made in `every`.
        #[allow(unsafe_code)]
        unsafe {
            libc::timer_delete(self.0);
        }
    }
}

/// mov eax, 0x4803c; xor edi, edi; syscall: a number strict mode does not allow.
const FORBIDDEN: [u8; 11] = [
    0xb8, 0x3c, 0x80, 0x04, 0x00, 0x31, 0xff, 0x0f, 0x05, 0x0f, 0x0b,
];

/// write(1, "hi", 2); ret.
const HELLO: [u8; 27] = [
    0xb8, 0x01, 0, 0, 0, // mov eax, 1
    0xbf, 0x01, 0, 0, 0, // mov edi, 1
    0x48, 0x8d, 0x35, 0x08, 0, 0, 0, // lea rsi, [rip + 8]
    0xba, 0x02, 0, 0, 0, // mov edx, 2
    0x0f, 0x05, // syscall
    0xc3, // ret
    b'h', b'i',
];

/// Whether `report` is the strict-mode kill of [`FORBIDDEN`]'s call, named and verified.
fn forbidden_named(report: &bytejail::Report) -> bool {
    report.outcome == Outcome::SyscallViolation
        && report
            .syscall
            .as_ref()
            .is_some_and(|s| s.nr == 0x4803c && s.verified && s.code_offset == Some(7))
}

/// A host whose signal handlers interrupt system calls, with a timer that signals the running
/// thread every 100 us: every traced job's report still names the call strict mode killed,
/// verified. An interrupted exchange with the tracer process once left its answer unread; the
/// next worker then ran before it was held and its end was reported as a kill from outside.
#[test]
fn a_host_with_interrupting_signals_still_gets_verified_reports() {
    let _timer = Interrupting::every(Duration::from_micros(100));
    let mut wrong = Vec::new();
    for i in 0..400 {
        let report = bytejail::run(&FORBIDDEN, b"", &RunOptions::default()).unwrap();
        if !forbidden_named(&report) {
            wrong.push(format!("{i}: {}", report.summary()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 400 reports wrong: {wrong:#?}",
        wrong.len()
    );
}

/// The same interrupting host through every way of running a job: a pool, a zygote, one
/// worker for many inputs, a profile, untraced, with input and output. Each report is the
/// one the job gives without the timer; no call fails.
#[test]
fn interrupting_signals_disturb_no_way_of_running_a_job() {
    let _timer = Interrupting::every(Duration::from_micros(100));
    let options = RunOptions::default();
    let hello = |report: &bytejail::Report| {
        matches!(report.outcome, Outcome::Returned(_)) && report.output == b"hi"
    };
    let input = vec![7u8; 256 << 10];
    for _ in 0..50 {
        let report = bytejail::run(&HELLO, &input, &options).unwrap();
        assert!(hello(&report), "{}", report.summary());
    }
    let mut untraced = RunOptions::default();
    untraced.trace = false;
    for _ in 0..50 {
        let report = bytejail::run(&HELLO, b"", &untraced).unwrap();
        assert!(hello(&report), "untraced: {}", report.summary());
    }
    let pool = bytejail::Pool::new(options.clone(), 2).unwrap();
    for _ in 0..100 {
        let report = pool.run(&HELLO, &input, &options).unwrap();
        assert!(hello(&report), "pool: {}", report.summary());
        let report = pool.run(&FORBIDDEN, b"", &options).unwrap();
        assert!(forbidden_named(&report), "pool: {}", report.summary());
    }
    drop(pool);
    let zygote = bytejail::Zygote::start().unwrap();
    for _ in 0..100 {
        let report = zygote.run(&HELLO, &input, &options).unwrap();
        assert!(hello(&report), "zygote: {}", report.summary());
        let report = zygote.run(&FORBIDDEN, b"", &options).unwrap();
        assert!(forbidden_named(&report), "zygote: {}", report.summary());
    }
    let mut same = bytejail::SameCode::new(&HELLO, &options).unwrap();
    for _ in 0..300 {
        let report = same.run(&input).unwrap();
        assert!(hello(&report), "same code: {}", report.summary());
    }
    drop(same);
    let docker = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guest-samples/policies/docker-default.json"
    );
    let mut profile = RunOptions::default();
    profile.policy = bytejail::Policy::from_arg(docker).unwrap();
    for _ in 0..20 {
        let report = bytejail::run(&HELLO, &input, &profile).unwrap();
        assert!(hello(&report), "profile: {}", report.summary());
    }
}
