//! A guest that stops reading its input must not kill the host with SIGPIPE, even in a host
//! that left SIGPIPE at its default action (Rust programs ignore it; C hosts often do not).
//! Alone in its file: it changes the process-wide SIGPIPE disposition.

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
