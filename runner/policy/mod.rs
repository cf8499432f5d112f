//! Seccomp policies: strict mode (mode 1), or a seccomp-bpf filter (mode 2) compiled from
//! strict mode's allow list or from a Docker/OCI/Podman seccomp profile.
//!
//! Split as seccompiler splits it: [`bpf`] (instructions, jumps, labels), [`compiler`] (rules
//! per ABI -> one program), [`profile`] (the JSON format, converted to rules as Docker, runc and
//! libseccomp do on amd64), and [`interp`] (a BPF interpreter, to test and explain programs).
//!
//! Kill and trap actions compile to `SECCOMP_RET_TRAP`: the worker's SIGSYS handler records
//! which syscall it was, then re-raises SIGSYS with the default action so that the kernel, not
//! the guest, reports the death. The outcome is a syscall violation either way.
//!
//! The compiler is bytejail's own: the maintained Rust compilers target one architecture per
//! program and cannot express the ia32 section or the x32 check.
//!
//! No jump offset, instruction count or value is ever truncated: every narrowing is a checked
//! conversion, and clippy holds the whole module to it.
#![warn(clippy::cast_possible_truncation)]

pub mod bpf;
pub mod compiler;
pub mod interp;
pub mod profile;
pub mod tool;

use std::path::Path;

use crate::error::InputError;

pub use bpf::Insn;
pub use compiler::{Action, ArgCheck, CmpOp, Filter, FilterExtras, Rule, RuleSet};
pub use profile::{ProfileError, ProfileFile};

/// `AUDIT_ARCH_X86_64`: what `seccomp_data.arch` says for `syscall` (and x32).
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_I386`: what `seccomp_data.arch` says for `int 0x80`.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// The x32 ABI's bit in the syscall number.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// A syscall number that no kernel assigns and every bytejail filter traps: the fault
/// handler's stub issues it to die of SIGSYS with the default action.
pub const RERAISE_NR: u32 = 0x3fff_ffff;
/// Native syscalls every bytejail filter allows, whatever the profile says: the trampoline
/// leaves with `exit` (60) and the fault handler returns through `rt_sigreturn` (15). Neither
/// reaches outside the worker; strict mode allows both too.
pub const RUNNER_SYSCALLS: [u32; 2] = [60, 15];
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// Why rules do not compile to a program the kernel takes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// A program longer than the kernel's `BPF_MAXINSNS`.
    #[error("the filter has {insns} instructions; the kernel takes at most {max}")]
    TooLong {
        /// Its length.
        insns: usize,
        /// The kernel's limit.
        max: usize,
    },
    /// An argument check on an argument a syscall does not have.
    #[error("argument index {index} is out of range (0..=5)")]
    ArgIndex {
        /// The index given.
        index: u32,
    },
    /// An errno seccomp cannot return.
    #[error("errno {errno} is out of range (0..=4095)")]
    Errno {
        /// The errno given.
        errno: u32,
    },
    /// A bug in the compiler, never the input's fault.
    #[error("internal compiler error: {0}")]
    Internal(&'static str),
}

/// Which seccomp mode a run uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// Strict mode (mode 1): `read`, `write`, `exit`, `rt_sigreturn`. The default.
    #[default]
    Strict,
    /// A filter with strict mode's allow list (mode 2), for comparison and diagnosis: it says
    /// which syscall a violation was.
    StrictBpf,
    /// A filter compiled from a seccomp profile.
    Profile {
        /// The profile's name (its file name), for messages.
        name: String,
        /// The compiled program.
        filter: Filter,
    },
}

impl Policy {
    /// Parses `--policy`: `strict`, `strict-bpf`, or the path of a JSON profile.
    pub fn from_arg(arg: &str) -> Result<Policy, InputError> {
        match arg {
            "strict" => Ok(Policy::Strict),
            "strict-bpf" => Ok(Policy::StrictBpf),
            path => Policy::from_profile_file(Path::new(path)),
        }
    }

    /// Reads and compiles a profile file.
    pub fn from_profile_file(path: &Path) -> Result<Policy, InputError> {
        let text = std::fs::read_to_string(path).map_err(|source| InputError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::from_profile_json(&text, &path.display().to_string())
    }

    /// Compiles a profile given as JSON text; `name` names it in errors and reports.
    pub fn from_profile_json(text: &str, name: &str) -> Result<Policy, InputError> {
        let invalid = |e: ProfileError| InputError::Invalid(format!("`{name}`: {e}"));
        let profile = ProfileFile::parse(text).map_err(invalid)?;
        let (filter, _skipped) = profile.compile(&FilterExtras::default()).map_err(invalid)?;
        Ok(Policy::Profile {
            name: name.to_string(),
            filter,
        })
    }

    /// The filter this policy installs; `None` for strict mode.
    pub fn filter(&self) -> Option<Filter> {
        match self {
            Policy::Strict => None,
            Policy::StrictBpf => Some(strict_bpf_filter()),
            Policy::Profile { filter, .. } => Some(filter.clone()),
        }
    }

    /// The filter this policy installs with `extras` in front of a profile's rules; `None` for
    /// strict mode. Strict-bpf already rejects everything the extras deny and is returned as it
    /// is. Compiling can fail only when the extras push a profile past the kernel's limit.
    pub fn filter_with(&self, extras: &FilterExtras) -> Result<Option<Filter>, CompileError> {
        match self {
            Policy::Profile { filter, .. } => filter.with_extras(extras).map(Some),
            other => Ok(other.filter()),
        }
    }

    /// The policy's name in reports: `strict`, `strict-bpf` or the profile's.
    pub fn name(&self) -> &str {
        match self {
            Policy::Strict => "strict",
            Policy::StrictBpf => "strict-bpf",
            Policy::Profile { name, .. } => name,
        }
    }

    /// Syscall names the profile lists that no x86 ABI has (entries for other
    /// architectures): skipped, as Docker skips them. Empty for strict modes.
    pub fn skipped_names(&self) -> &[String] {
        match self {
            Policy::Profile { filter, .. } => filter.skipped_names(),
            _ => &[],
        }
    }
}

fn strict_bpf_filter() -> Filter {
    static FILTER: std::sync::OnceLock<Filter> = std::sync::OnceLock::new();
    FILTER.get_or_init(Filter::strict_equivalent).clone()
}

#[cfg(test)]
mod tests;
