//! `bytejail`: run untrusted x86-64 machine code in a fresh strict-seccomp worker and report
//! exactly what it did. See `bytejail run --help` for the contract.
//!
//! This file is the one place where results become exit statuses.
#![deny(unsafe_code)]
// The process's entry is `main` below, a C `main`: see there for why. (A test build keeps
// the test harness's own.)
#![cfg_attr(not(test), no_main)]

mod bench_cli;
mod cli;
mod manual;
mod policy_cli;
mod suggest;

use std::io::Write;

use bytejail::Error;
use clap::error::ErrorKind;
use clap::Parser;

use cli::{Cli, Completion};

// The unwinder linked in from libgcc_eh.a rather than loaded from libgcc_s.so.1: the shared
// library's constructor (`__cpu_indicator_init`) runs about a dozen `cpuid` instructions at
// every start, and under a hypervisor each is a VM exit (7.5 us on this project's KVM
// machines): about 0.1 ms of every `bytejail` process, for CPU feature bits it never asks.
// Named here, in the binary, so that it comes on the link line before the standard library's
// `-lgcc_s`; the binary's own code calls `_Unwind_Resume`, which pulls the unwinder in from
// the archive, and `--as-needed` then drops libgcc_s. The library is not linked this way: a
// program embedding bytejail keeps its own choice. (A static glibc build links libgcc_eh
// already, and other targets have unwinders of their own.)
#[cfg_attr(
    all(target_env = "gnu", not(target_feature = "crt-static")),
    link(name = "gcc_eh", kind = "static")
)]
extern "C" {}

/// Exit status of `bytejail batch` when some lines could not run (each has an error line).
const EXIT_BATCH_LINES_FAILED: u8 = 1;
/// Exit status for bad usage or bad input: nothing ran.
const EXIT_USAGE: u8 = 2;
/// Exit status of `doctor` when something strict-mode jobs need is missing.
const EXIT_NOT_READY: u8 = 1;
/// Exit status when bytejail itself failed (a mapping, a pipe, the fork, writing stdout).
const EXIT_RUNNER_FAILED: u8 = 125;

/// The process's entry, in place of the standard library's own `main` wrapper, which before
/// calling the program's `main` also sets up the main thread's stack-overflow report: it asks
/// glibc for the main thread's stack (`pthread_getattr_np`, which reads and `sscanf`s all of
/// `/proc/self/maps`) and maps an alternate signal stack, about 50 us of every `bytejail`
/// process here. What else that wrapper does, this does the same way: descriptors 0, 1 and
/// 2 are opened on `/dev/null` if closed (so that no file the run opens becomes stdout),
/// SIGPIPE is ignored (a closed stdout is EPIPE, see [`cli::write_stdout`]; children the CLI
/// spawns get it back at its default, as std's `Command` resets it), a panic exits with
/// status 101 after its message, and stdout is flushed at the end. What it does not: a stack
/// overflow of the CLI's own ends in a plain SIGSEGV, without std's one-line report.
#[cfg(not(test))]
#[allow(unsafe_code, reason = "the C entry point must not be mangled")]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // std's `sys::init`, as its own code does it (`std::env::args` needs none of it: glibc
    // hands std the arguments through `.init_array`, before this runs).
    cli::sanitize_standard_fds();
    cli::ignore_sigpipe();
    let status = std::panic::catch_unwind(status_of_command_line).unwrap_or(101);
    let _ = std::io::stdout().lock().flush();
    let _ = std::io::stderr().lock().flush();
    // Straight out: nothing is left to do that the kernel does not do anyway at the exit
    // (thread-locals' destructors would unmap the worker arena and close its descriptor).
    // SAFETY: `_exit` ends the process; stdout and stderr are flushed, and no other thread
    // of this process has anything left to say (each one the CLI starts is joined or
    // abandoned by design).
    #[allow(unsafe_code, reason = "_exit(2) has no safe wrapper here")]
    unsafe {
        libc::_exit(libc::c_int::from(status))
    }
}

/// Carries out the command line and says the process's exit status.
#[cfg_attr(test, allow(dead_code))]
fn status_of_command_line() -> u8 {
    if let Some(exit) = version_alone() {
        return exit;
    }
    let cli = match Cli::try_parse_run_alone(std::env::args_os()) {
        Some(cli) => cli,
        None => match Cli::try_parse() {
            Ok(cli) => cli,
            Err(error) => return usage_exit(&error),
        },
    };
    match cli.execute() {
        Ok(Completion::Done | Completion::Examined { ready: true }) => 0,
        Ok(Completion::Batch { errors: 0 }) => 0,
        Ok(Completion::Batch { .. }) => EXIT_BATCH_LINES_FAILED,
        Ok(Completion::Examined { ready: false }) => EXIT_NOT_READY,
        // The kernel keeps only the low 8 bits of an exit status; every documented status fits.
        Ok(Completion::Ran(outcome)) => (outcome.exit_status() & 0xff) as u8,
        Err(error @ Error::Input(_)) => {
            cli::print_diagnostic(error);
            EXIT_USAGE
        }
        // `Error::Runner`, and whatever failure of bytejail's own a later version adds.
        Err(error) => {
            cli::print_diagnostic(format_args!("runner failed: {error}"));
            EXIT_RUNNER_FAILED
        }
    }
}

/// `bytejail --version` (or `-V`) and nothing else: printed as clap prints it, without first
/// building clap's whole command (every subcommand and its arguments), which is most of what
/// this invocation costs after the process has started. `None` for anything else.
fn version_alone() -> Option<u8> {
    let mut args = std::env::args_os().skip(1);
    let (Some(flag), None) = (args.next(), args.next()) else {
        return None;
    };
    if flag != "--version" && flag != "-V" {
        return None;
    }
    let mut stdout = std::io::stdout().lock();
    // As clap does: a failed write (a closed pipe) is not an error of the command.
    let _ = writeln!(stdout, "bytejail {}", env!("CARGO_PKG_VERSION"));
    let _ = stdout.flush();
    Some(0)
}

/// Reports what clap could not parse (or the help and version it was asked for).
fn usage_exit(error: &clap::Error) -> u8 {
    match error.kind() {
        // Asked for: printed in full on stdout, success.
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            0
        }
        // `bytejail` alone: the full help is the useful answer, but it is still bad usage.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            EXIT_USAGE
        }
        _ => {
            cli::print_diagnostic(cli::usage_error_message(error));
            EXIT_USAGE
        }
    }
}
