//! Fuzzing bytejail: the oracle every run is held to, the structured guest programs of the
//! `syscall_storm` target, and the same-code cases of the `same_code` target. The targets
//! themselves are in `fuzz_targets/`; see `README.md`.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod asm;
pub mod oracle;
pub mod profile;
pub mod profile_jobs;
pub mod same;
pub mod storm;

use std::sync::OnceLock;
use std::time::Duration;

use bytejail::{Report, RunOptions};
use oracle::Host;
use storm::Storm;

/// The options every fuzzed run uses: a short deadline, so that spinning guests cost little,
/// and small limits, so that floods hit them quickly.
pub fn fuzz_options() -> RunOptions {
    let mut options = RunOptions::default();
    options.limits.timeout = Duration::from_millis(200);
    options.limits.max_output = 4096;
    options.limits.stack = 64 << 10;
    options.limits.scratch = 64 << 10;
    options
}

/// [`fuzz_options`] with a shorter deadline for storms: one in eight of their last steps is a
/// spin, and with 200 ms those timeouts took nine tenths of a campaign's time. A storm that
/// does not spin ends within a few milliseconds.
pub fn storm_options() -> RunOptions {
    let mut options = fuzz_options();
    options.limits.timeout = Duration::from_millis(50);
    options
}

/// Runs a storm through `host` (the generic oracle) and holds the report to the storm's
/// prediction, if it has one. A timeout the prediction does not allow is run again up to
/// [`oracle::STALL_RETRIES`] times before it counts: a stalled machine can make any guest miss
/// a 50 ms deadline once, a wrong runner does it every time.
pub fn run_storm(host: &Host, storm: &Storm) -> Report {
    let program = storm.build();
    let options = storm_options();
    let mut report = host.run(&program.code, &program.input, &options);
    if let Some(expect) = &program.expect {
        for _ in 0..oracle::STALL_RETRIES {
            if !expect.unexpected_timeout(&report) {
                break;
            }
            eprintln!(
                "oracle: an unexpected timeout after {:?}; running it again to tell a stalled \
                 machine from a wrong outcome",
                report.wall
            );
            report = host.run(&program.code, &program.input, &options);
        }
        expect.check(&report, storm);
    }
    report
}

static HOST: OnceLock<Host> = OnceLock::new();

/// The process-wide [`Host`] of a fuzz target, created on first use (call it from the target's
/// init hook). Its watched directory is removed at exit when it is still empty; a directory
/// left behind holds what an escaped guest created.
pub fn host() -> &'static Host {
    HOST.get_or_init(|| {
        remove_watched_directory_at_exit();
        Host::new()
    })
}

/// `atexit(remove_watched_directory)`: statics are never dropped; see atexit(3).
#[allow(unsafe_code)]
fn remove_watched_directory_at_exit() {
    extern "C" fn remove_watched_directory() {
        if let Some(host) = HOST.get() {
            // Only an empty directory goes (remove_dir), as in `Host`'s own Drop.
            let _ = std::fs::remove_dir(host.watched());
        }
    }
    // SAFETY: the callback is a plain function that neither unwinds nor calls exit.
    let ret = unsafe { libc::atexit(remove_watched_directory) };
    assert_eq!(ret, 0, "atexit failed");
}
