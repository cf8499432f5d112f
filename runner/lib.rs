//! bytejail: run untrusted x86-64 machine code in a fresh worker process under strict seccomp,
//! and report exactly what happened.
//!
//! ```no_run
//! let code = [0xb0, 42, 0xc3]; // mov al, 42; ret
//! let report = bytejail::run(&code, b"", &bytejail::RunOptions::default()).unwrap();
//! assert_eq!(report.outcome.kind(), "returned");
//! ```
#![deny(unsafe_code)]
#![warn(missing_debug_implementations, missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod abi;
mod arena;
pub mod batch;
#[cfg(feature = "cli")]
pub mod bench;
pub mod bounds;
pub mod cancel;
mod cgroup;
pub mod disasm;
pub mod doctor;
pub mod error;
mod host;
pub mod load;
pub mod policy;
pub mod pool;
pub mod report;
pub mod same_code;
mod spin;
mod sys;
pub mod syscalls;
pub mod toolchain;
mod tracer;
pub mod units;
mod walls_filter;
mod worker;
pub mod zygote;

pub use abi::{Gpr, InitialRegisters, Limits, RegisterError, Registers, RunOptions};
pub use cancel::Cancel;
pub use error::{Error, InputError};
pub use host::run;
pub use policy::Policy;
pub use pool::{Pool, PoolStats};
pub use report::{Fault, Outcome, Report, ViolatingSyscall};
pub use same_code::SameCode;
pub use tracer::trace_own_workers;
pub use zygote::Zygote;

/// Compiles and runs every `rust` example in the README as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Compiles and runs every `rust` example in `docs/many-jobs.md` (pool, zygote, same code) as a
/// doctest.
#[cfg(doctest)]
#[doc = include_str!("../docs/many-jobs.md")]
struct ManyJobsDoctests;

/// Locks `mutex`; a panic while it was held left plain data behind, and the caller carries on
/// with it.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
