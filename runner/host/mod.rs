//! The host side of a run: prepare the worker's memory and pipes, fork, feed the input, collect
//! the output, enforce the limits, reap, and classify from what the kernel says.
//!
//! One module per idea:
//! - this one: [`run`], [`Zygote::run`], the diagnosis re-run of a strict-mode violation
//!   ([`diagnose`]), the checks on a job ([`validate`]), and this thread's arena;
//! - [`lifecycle`]: a worker's states as the host sees them (spawned, parked, running,
//!   lingering, reaped) and the [`Forker`] that forks it, directly or through a zygote;
//! - [`watch`]: the poll loop on a running worker (input, output, deadline, CPU time, cancel);
//! - [`classify`]: the pure decision of what happened, from the wait status, the host's kills,
//!   the tracer's stops and the worker's record;
//! - [`walls`]: namespaces, Landlock, granted paths and the job's cgroups.
//!
//! The dependencies go one way, top to bottom; nothing imports in a circle:
//!
//! ```text
//! batch            --> same_code, pool, Zygote::run
//! pool, same_code  --> host (run's checks and diagnosis, the lifecycle types), zygote (a handle)
//! host             --> host::lifecycle, host::walls
//! host::lifecycle  --> host::watch, host::classify, host::walls, zygote (Forker::Zygote)
//! host::watch      --> host::classify (Kill), host::walls
//! host::walls      --> cgroup, bounds
//! host::classify   --> plain data only: the record, the tracer's facts, the report types
//! zygote           --> worker, sys (it forks; it knows nothing of runs)
//! arena            --> worker (the region's layout), sys (it knows nothing of runs either)
//! worker::stages   --> sys::raw, worker::protocol (after the fork, nothing else)
//! ```
//!
//! `zygote` knows nothing of runs: `Zygote::run` is defined here, on top of it, and `Pool`,
//! `SameCode` and `batch` reach the zygote only to start one or to hand it to a [`Forker`].

mod classify;
mod lifecycle;
mod walls;
mod watch;

use std::cell::RefCell;
use std::time::Instant;

use crate::abi::{RunOptions, MAX_REGION, MIN_OPEN_FILES, MIN_STACK};
use crate::arena::{Arena, Need};
use crate::error::{Error, InputError};
use crate::policy::Policy;
use crate::report::{Outcome, Report};
use crate::zygote::Zygote;

pub(crate) use lifecycle::{Driven, Forker, Lingering, Parked, Spawned, Stdin, WorkerFds};
pub(crate) use walls::{arena_reusable, cpu_limit_secs, worker_limits_match};

thread_local! {
    /// Each host thread keeps one arena between runs (see [`crate::arena`]).
    static ARENA: RefCell<Option<Arena>> = const { RefCell::new(None) };
}

/// Runs `code` on `input` in a fresh seccomp worker and reports what happened.
///
/// Guest behaviour (crash, violation, timeout, ...) is an [`Outcome`] in the `Ok` report;
/// `Err` means the code, input or options are unusable ([`Error::Input`]) or the runner
/// itself failed ([`Error::Runner`]). Safe to call from many threads at once.
///
/// A violation under strict mode, which kills without saying why, is run once more under the
/// strict-equivalent filter to learn which syscall it was (unless `options.diagnose` is off).
pub fn run(code: &[u8], input: &[u8], options: &RunOptions) -> Result<Report, Error> {
    run_via(code, input, options, Forker::Direct)
}

impl Zygote {
    /// Runs `code` on `input` in a fresh worker forked by the zygote. Same contract and same
    /// report as [`crate::run`] (the diagnosis re-run of a strict-mode violation is forked by
    /// the zygote too); `Err` also when the zygote is gone (killed from outside).
    // Here rather than in `zygote.rs`: the zygote only forks, and knows nothing of runs.
    pub fn run(&self, code: &[u8], input: &[u8], options: &RunOptions) -> Result<Report, Error> {
        run_via(code, input, options, Forker::Zygote(self))
    }
}

/// [`run`], with the worker (and the diagnosis's) forked by `via`.
fn run_via(
    code: &[u8],
    input: &[u8],
    options: &RunOptions,
    via: Forker<'_>,
) -> Result<Report, Error> {
    validate(code, input, options)?;
    if let Some(report) = crate::Cancel::before_start(options) {
        return Ok(report);
    }
    let report = run_once(code, input, options, via)?;
    Ok(diagnose(report, code, input, options, via))
}

/// After a strict-mode violation whose call the run could not see (an untraced run, or one
/// the tracer could not attach to), runs the job once more, traced, to learn which syscall it
/// was (unless `options.diagnose` is off). The re-run is the same strict-mode job in the same
/// kind of worker, within what is left of the job's timeout; its call is believed only if it
/// too ends in a violation with the same output, and is reported unverified: a guest that
/// behaves differently from run to run may have made another call the first time.
pub(crate) fn diagnose(
    mut report: Report,
    code: &[u8],
    input: &[u8],
    options: &RunOptions,
    via: Forker<'_>,
) -> Report {
    let seen = report.syscall.as_ref().is_some_and(|sc| sc.verified);
    if report.outcome != Outcome::SyscallViolation
        || options.policy != Policy::Strict
        || !options.diagnose
        || seen
    {
        return report;
    }
    let Some(left) = options.limits.timeout.checked_sub(report.wall) else {
        return report;
    };
    let mut diagnostic = options.clone();
    diagnostic.diagnose = false;
    diagnostic.trace = true;
    diagnostic.limits.timeout = left;
    // Best effort: a diagnosis that fails or ends differently tells nothing.
    if let Ok(rerun) = run_once(code, input, &diagnostic, via) {
        let same = rerun.outcome == Outcome::SyscallViolation
            && rerun.output == report.output
            && rerun.output_truncated == report.output_truncated;
        if let Some(mut syscall) = rerun.syscall.filter(|sc| same && sc.verified) {
            syscall.verified = false;
            report.syscall = Some(syscall);
        }
    }
    report
}

/// One run in this thread's arena.
fn run_once(
    code: &[u8],
    input: &[u8],
    options: &RunOptions,
    via: Forker<'_>,
) -> Result<Report, Error> {
    let need = Need::new(code, input, options);
    let run_in = |slot: &mut Option<Arena>| -> Result<Report, Error> {
        if !arena_reusable(&options.policy) {
            // A guest that may call mprotect, mremap, madvise or remap_file_pages can change
            // the memfd its worker maps: its arena is its own and goes with it.
            let mut arena =
                Arena::new(need).map_err(|e| Error::io("creating the worker arena", e))?;
            return run_in_arena(&mut arena, code, input, options, via);
        }
        // A process forked from the one that made the arena has the cache, not the memory.
        let mut arena = match slot.take() {
            Some(arena) if arena.mapped_here() && arena.fits(need) => arena,
            _ => Arena::new(need).map_err(|e| Error::io("creating the worker arena", e))?,
        };
        let report = run_in_arena(&mut arena, code, input, options, via);
        if arena.worth_keeping() {
            *slot = Some(arena);
        }
        report
    };
    // A thread being torn down (run called from a thread-local destructor) gets a fresh arena.
    ARENA
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => run_in(&mut slot),
            Err(_) => run_in(&mut None),
        })
        .unwrap_or_else(|_| run_in(&mut None))
}

fn run_in_arena(
    arena: &mut Arena,
    code: &[u8],
    input: &[u8],
    options: &RunOptions,
    via: Forker<'_>,
) -> Result<Report, Error> {
    let (maps, protects) = arena
        .prepare(code, input, options)
        .map_err(|e| Error::io("preparing the worker arena", e))?;
    let start = Instant::now();
    let cpu = cpu_limit_secs(options);
    let stdin = if input.is_empty() {
        Stdin::Eof
    } else {
        Stdin::Pipe
    };
    let fds = WorkerFds {
        stdin,
        go: None,
        done: None,
        output: None,
    };
    let worker = Spawned::spawn(arena, maps, protects, options, cpu, fds, via)?;
    worker.run(arena, code, input, options, start)
}

pub(crate) fn validate(code: &[u8], input: &[u8], options: &RunOptions) -> Result<(), InputError> {
    let limits = &options.limits;
    if code.is_empty() {
        return Err(InputError::Invalid("the code is empty".into()));
    }
    if code.len() > limits.max_code {
        return Err(InputError::TooLarge {
            what: "code".into(),
            size: Some(code.len()),
            limit: limits.max_code,
            flag: "--max-code",
        });
    }
    if input.len() > limits.max_input {
        return Err(InputError::TooLarge {
            what: "input".into(),
            size: Some(input.len()),
            limit: limits.max_input,
            flag: "--max-input",
        });
    }
    if options.entry >= code.len() {
        return Err(InputError::Invalid(format!(
            "entry offset 0x{:x} is outside the code ({} bytes) (--entry)",
            options.entry,
            code.len()
        )));
    }
    if limits.timeout.is_zero() {
        return Err(InputError::Invalid(
            "the timeout must be greater than zero (--timeout)".into(),
        ));
    }
    for (what, flag, size) in [
        ("stack", "--stack", limits.stack),
        ("scratch", "--scratch", limits.scratch),
    ] {
        if size > MAX_REGION {
            return Err(InputError::TooLarge {
                what: what.into(),
                size: Some(size),
                limit: MAX_REGION,
                flag,
            });
        }
    }
    let guest_memory = limits.scratch.saturating_add(limits.stack);
    if guest_memory > limits.memory {
        return Err(InputError::Invalid(format!(
            "scratch ({} bytes) and stack ({} bytes) together exceed the guest's memory limit of \
             {} bytes (--memory)",
            limits.scratch, limits.stack, limits.memory
        )));
    }
    if limits.max_open_files < MIN_OPEN_FILES {
        return Err(InputError::Invalid(format!(
            "{} open files is under the minimum of {MIN_OPEN_FILES} (--max-open-files)",
            limits.max_open_files
        )));
    }
    if limits.max_procs == 0 {
        return Err(InputError::Invalid(
            "the process limit must be at least 1: the worker itself (--max-procs)".into(),
        ));
    }
    if limits.cpu_time.is_some_and(|cpu| cpu.is_zero()) {
        return Err(InputError::Invalid(
            "the CPU time limit must be greater than zero (--cpu-time)".into(),
        ));
    }
    if limits.stack < MIN_STACK {
        return Err(InputError::Invalid(format!(
            "the stack is {} bytes; it must be at least {MIN_STACK} bytes (--stack)",
            limits.stack
        )));
    }
    Ok(())
}
