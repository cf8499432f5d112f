//! The profile file format: Docker's seccomp profile (`profiles/seccomp/default.json`), the OCI
//! runtime spec's `linux.seccomp`, and Podman's (`containers/common`), turned into rules as
//! Docker, runc and libseccomp turn them into a filter on amd64:
//!
//! - `archMap`: the entry for `SCMP_ARCH_X86_64` and its sub-architectures; `architectures` as
//!   given. x86_64 is always in (libseccomp's native architecture); other architectures are
//!   ignored: they never reach this kernel.
//! - `includes` / `excludes` (Docker): `arches` matched once against the host, `amd64`; `caps`
//!   against the worker's capabilities, which are none; `minKernel` against the running kernel.
//! - actions (runc): `SCMP_ACT_ERRNO` without `errnoRet` is EPERM, whatever `defaultErrnoRet`
//!   says; an entry whose action equals the default is dropped; a name libseccomp knows but no
//!   x86 ABI has (an entry for another architecture) is skipped and named in a warning.
//! - conditions (runc): conditions on different arguments are ANDed; when two conditions name
//!   the same argument, each condition is a rule of its own (ORed).
//! - multiplexed calls (libseccomp on x86): a socket or SysV IPC call's entry is also a rule
//!   for `socketcall` / `ipc` with the call's number as the first argument.
//! - overlapping rules (libseccomp): an unconditional rule for a number overrides every
//!   conditional one, whatever the order; the first unconditional rule wins. A masked compare
//!   with a mask of 0 in the ABI's width (32 bits for i386 and x32) is no check at all.

use serde::{Deserialize, Serialize};

use super::compiler::{Action, ArgCheck, CmpOp, Rule, RuleSet};
use super::{CompileError, Filter, FilterExtras};
use crate::syscalls::{self, Abi};

/// A seccomp profile as JSON holds it. Unknown fields are refused (a misspelt field would
/// otherwise be ignored).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileFile {
    /// `defaultAction`: what a call no entry names gets (`SCMP_ACT_*`).
    pub default_action: String,
    /// `defaultErrnoRet`: the errno of an `SCMP_ACT_ERRNO` default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// Podman: the default errno by name, beside `defaultErrnoRet` (which decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno: Option<String>,
    /// `architectures`: the `SCMP_ARCH_*` the filter admits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// `archMap`: Docker's architectures with their sub-architectures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch_map: Option<Vec<ArchMapEntry>>,
    /// `flags`: filter flags (bytejail sets none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    /// `listenerPath`: a user notification socket (not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    /// `listenerMetadata`: data for that listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_metadata: Option<String>,
    /// `syscalls`: the entries, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<Vec<SyscallEntry>>,
}

/// One `archMap` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchMapEntry {
    /// `architecture`: the main `SCMP_ARCH_*`.
    pub architecture: String,
    /// `subArchitectures`: the others it brings.
    #[serde(default)]
    pub sub_architectures: Option<Vec<String>>,
}

/// One `syscalls[]` entry: names, an action and optional argument checks.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyscallEntry {
    /// `names`: the syscalls it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// The older single-name form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `action`: what they get (`SCMP_ACT_*`).
    pub action: String,
    /// `errnoRet`: the errno of an `SCMP_ACT_ERRNO` action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Podman: the errno by name, beside `errnoRet` (which decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// `args`: argument checks, all of which must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<ArgEntry>>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `includes`: the entry applies only when these hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<Conditions>,
    /// `excludes`: the entry applies only when these do not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Conditions>,
}

/// One argument check of an entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgEntry {
    /// `index`: the argument, 0..=5.
    pub index: u32,
    /// `value`: what it is compared with.
    pub value: u64,
    /// `valueTwo`: the second value of `SCMP_CMP_MASKED_EQ`.
    #[serde(default)]
    pub value_two: u64,
    /// `op`: `SCMP_CMP_*`.
    pub op: String,
}

/// Docker's conditions on an entry: it applies only with (includes) or without (excludes) these.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conditions {
    /// `arches`: architectures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arches: Option<Vec<String>>,
    /// `caps`: capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    /// `minKernel`: the least kernel version, e.g. `4.8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

/// Where in a profile a problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Place {
    /// The profile as a whole.
    Profile,
    /// Its `defaultAction`.
    DefaultAction,
    /// Entry `syscalls[i]`.
    Entry(usize),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Profile => write!(f, "the profile"),
            Place::DefaultAction => write!(f, "defaultAction"),
            Place::Entry(i) => write!(f, "syscalls[{i}]"),
        }
    }
}

/// Why a profile does not load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Not JSON, or not a profile's fields.
    #[error("not a seccomp profile: {0}")]
    Json(#[from] serde_json::Error),
    /// An action that is no `SCMP_ACT_*`.
    #[error("{at}: unknown action `{name}`; expected SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_TRAP or SCMP_ACT_LOG")]
    UnknownAction {
        /// Where.
        at: Place,
        /// The action given.
        name: String,
    },
    /// An action a bytejail worker cannot carry out.
    #[error("{at}: action `{name}` is not supported: a bytejail worker has no tracer or listener")]
    UnsupportedAction {
        /// Where.
        at: Place,
        /// The action given.
        name: String,
    },
    /// An op that is no `SCMP_CMP_*`.
    #[error("{at}: unknown op `{op}`; expected SCMP_CMP_EQ, NE, LT, LE, GT, GE or MASKED_EQ")]
    UnknownOp {
        /// Where.
        at: Place,
        /// The op given.
        op: String,
    },
    /// An argument index past 5.
    #[error("{at}: argument index {index} is out of range (0..=5)")]
    ArgIndex {
        /// Where.
        at: Place,
        /// The index given.
        index: u32,
    },
    /// An errno libseccomp would not take.
    #[error("{at}: errno {errno} is out of range (0..=4094, as libseccomp takes it)")]
    Errno {
        /// Where.
        at: Place,
        /// The errno given.
        errno: u32,
    },
    /// An entry without names.
    #[error("{at}: no `names`")]
    NoNames {
        /// Where.
        at: Place,
    },
    /// An entry with both `name` and `names`.
    #[error("{at}: both `name` and `names`; use one")]
    NameAndNames {
        /// Where.
        at: Place,
    },
    /// Both `architectures` and `archMap`.
    #[error("both `architectures` and `archMap`; use one")]
    ArchitecturesAndArchMap,
    /// An architecture that is no `SCMP_ARCH_*`.
    #[error("unknown architecture `{0}`")]
    UnknownArch(String),
    /// A `minKernel` that is not a kernel version.
    #[error("{at}: minKernel `{text}` is not a kernel version (<kernel>.<major>, e.g. 4.8)")]
    MinKernel {
        /// Where.
        at: Place,
        /// The text given.
        text: String,
    },
    /// A filter flag (bytejail sets none).
    #[error("flag `{0}` is not supported; bytejail sets no filter flags")]
    Flag(String),
    /// A `listenerPath` (user notification).
    #[error("listenerPath: user notification (SCMP_ACT_NOTIFY) is not supported")]
    Listener,
    /// The rules did not compile.
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// A profile turned into rules, and what was left out.
#[derive(Clone, Debug)]
pub struct Converted {
    /// The rules, per ABI, and the default.
    pub rules: RuleSet,
    /// For each rule of `rules.x86_64`, `rules.i386` and `rules.x32`: the index of the
    /// `syscalls[]` entry it came from.
    pub origins: [Vec<usize>; 3],
    /// Names no x86 ABI has, in the order met: their entries are for other architectures.
    pub skipped: Vec<String>,
    /// Entries (by index) that make no rule, and why.
    pub unused: Vec<(usize, Unused)>,
}

/// Why an entry of a profile makes no rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unused {
    /// Its `includes` / `excludes` leave it out on this host for this worker.
    NotApplicable,
    /// Its action is the default action (runc drops it).
    DefaultAction,
    /// None of its names is an x86 syscall.
    NoX86Name,
}

impl std::fmt::Display for Unused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unused::NotApplicable => {
                "its includes/excludes leave it out here (amd64, no capabilities, this kernel)"
            }
            Unused::DefaultAction => "its action is the default action",
            Unused::NoX86Name => "no x86 ABI has any of its names",
        })
    }
}

/// Architectures libseccomp knows (`SCMP_ARCH_*`); only the x86 ones reach this kernel.
const KNOWN_ARCHES: [&str; 21] = [
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_RISCV64",
];

/// libseccomp refuses an errno of `MAX_ERRNO` (4095) or more (the kernel would take 4095).
const MAX_ERRNO: u16 = 4095;

/// Docker's name for the host architecture, which `includes`/`excludes` `arches` name.
const HOST_ARCH: &str = "amd64";

/// The action as libseccomp holds it: kills and traps differ here (runc drops an entry whose
/// action equals the default, exactly), and all become a violation in the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScmpAction {
    Allow,
    Errno(u16),
    Log,
    Trap,
    KillThread,
    KillProcess,
}

impl ScmpAction {
    fn action(self) -> Action {
        match self {
            ScmpAction::Allow => Action::Allow,
            ScmpAction::Errno(e) => Action::Errno(e),
            ScmpAction::Log => Action::Log,
            ScmpAction::Trap => Action::Trap,
            ScmpAction::KillThread => Action::KillThread,
            ScmpAction::KillProcess => Action::KillProcess,
        }
    }
}

impl ProfileFile {
    /// Parses a profile; a JSON error says where (line and column).
    pub fn parse(text: &str) -> Result<ProfileFile, ProfileError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The rules Docker, runc and libseccomp would make of this profile on this machine.
    pub fn convert(&self) -> Result<Converted, ProfileError> {
        self.convert_for_kernel(kernel_version())
    }

    /// [`ProfileFile::convert`] for a kernel of version `kernel` (major, minor).
    pub fn convert_for_kernel(&self, kernel: (u32, u32)) -> Result<Converted, ProfileError> {
        if self.listener_path.as_deref().is_some_and(|p| !p.is_empty()) {
            return Err(ProfileError::Listener);
        }
        // runc: "tsync" is what it does anyway; the others change what a violation does.
        if let Some(flag) = self
            .flags
            .iter()
            .flatten()
            .find(|f| f.as_str() != "SECCOMP_FILTER_FLAG_TSYNC")
        {
            return Err(ProfileError::Flag(flag.clone()));
        }
        let (i386, x32) = self.sub_arches()?;
        let default = scmp_action(
            &self.default_action,
            self.default_errno_ret,
            Place::DefaultAction,
        )?;
        let mut sections: [Vec<(Rule, usize)>; 3] = Default::default();
        let mut skipped: Vec<String> = Vec::new();
        let mut unused: Vec<(usize, Unused)> = Vec::new();
        for (i, entry) in self.syscalls.iter().flatten().enumerate() {
            let at = Place::Entry(i);
            if entry.name.is_some() && entry.names.as_ref().is_some_and(|n| !n.is_empty()) {
                return Err(ProfileError::NameAndNames { at });
            }
            let names: Vec<&str> = entry
                .names
                .iter()
                .flatten()
                .map(String::as_str)
                .chain(entry.name.as_deref())
                .collect();
            if names.is_empty() {
                return Err(ProfileError::NoNames { at });
            }
            // Docker drops the entries that do not apply before runc reads their actions.
            if !applies(entry, kernel, &at)? {
                unused.push((i, Unused::NotApplicable));
                continue;
            }
            let action = scmp_action(&entry.action, entry.errno_ret, at.clone())?;
            let args = entry
                .args
                .iter()
                .flatten()
                .map(|a| parse_arg(a, &at))
                .collect::<Result<Vec<_>, _>>()?;
            if action == default {
                unused.push((i, Unused::DefaultAction));
                continue;
            }
            // runc: conditions on distinct arguments are ANDed; if two name the same argument,
            // each condition becomes a rule of its own.
            let mut counts = [0usize; 6];
            for check in &args {
                counts[usize::from(check.index)] += 1;
            }
            let conjunctions: Vec<Vec<ArgCheck>> = if counts.iter().any(|&c| c > 1) {
                args.iter().map(|c| vec![*c]).collect()
            } else {
                vec![args]
            };
            let mut any_known = false;
            for name in names {
                let mut known = false;
                for (slot, abi, named) in [
                    (0, Abi::X86_64, true),
                    (1, Abi::I386, i386),
                    (2, Abi::X32, x32),
                ] {
                    // libseccomp drops a masked compare whose mask is 0 in the ABI's width
                    // (a tautology): a rule left with no checks is unconditional.
                    let width = if abi == Abi::X86_64 {
                        u64::MAX
                    } else {
                        0xffff_ffff
                    };
                    let rule = |nr: u32, args: Vec<ArgCheck>| Rule {
                        nr,
                        args: args
                            .into_iter()
                            .filter(|c| !(c.op == CmpOp::MaskedEq && c.value & width == 0))
                            .collect(),
                        action: action.action(),
                    };
                    // libseccomp on x86: a socket or SysV IPC call is also a rule for its
                    // multiplexer (socketcall, ipc) whose first argument is the call's number,
                    // in place of any condition on the first argument; the other conditions
                    // stay. It comes before the direct call's rule.
                    if abi == Abi::I386 {
                        if let Some((mux, call)) = multiplexed(name) {
                            known = true;
                            if named {
                                for args in &conjunctions {
                                    let mut muxed = vec![ArgCheck {
                                        index: 0,
                                        op: CmpOp::Eq,
                                        value: call,
                                        value_two: 0,
                                    }];
                                    muxed.extend(args.iter().filter(|c| c.index != 0));
                                    sections[slot].push((rule(mux, muxed), i));
                                }
                            }
                        }
                    }
                    let Some(nr) = syscalls::number(abi, name) else {
                        continue;
                    };
                    known = true;
                    if !named {
                        continue;
                    }
                    for args in &conjunctions {
                        sections[slot].push((rule(nr, args.clone()), i));
                    }
                }
                any_known |= known;
                if !known && !skipped.iter().any(|s| s == name) {
                    skipped.push(name.to_string());
                }
            }
            if !any_known {
                unused.push((i, Unused::NoX86Name));
            }
        }
        let [(x86_64, o0), (i386_rules, o1), (x32_rules, o2)] =
            sections.map(|s| unconditional_first(s).into_iter().unzip());
        Ok(Converted {
            rules: RuleSet {
                x86_64,
                i386: i386.then_some(i386_rules),
                x32: x32.then_some(x32_rules),
                default: default.action(),
            },
            origins: [o0, o1, o2],
            skipped,
            unused,
        })
    }

    /// Whether the filter has an i386 and an x32 section: the profile names them in
    /// `architectures`, or as sub-architectures of x86_64 in `archMap` (Docker).
    fn sub_arches(&self) -> Result<(bool, bool), ProfileError> {
        let listed = self.architectures.iter().flatten();
        let mapped = self.arch_map.iter().flatten();
        if listed.clone().next().is_some() && mapped.clone().next().is_some() {
            return Err(ProfileError::ArchitecturesAndArchMap);
        }
        // Docker keeps only archMap's entry for the host; runc validates what is kept.
        let mut host: Vec<&str> = listed.map(String::as_str).collect();
        if let Some(entry) = mapped
            .into_iter()
            .find(|e| e.architecture == "SCMP_ARCH_X86_64")
        {
            host.push(&entry.architecture);
            host.extend(entry.sub_architectures.iter().flatten().map(String::as_str));
        }
        if let Some(unknown) = host.iter().find(|a| !KNOWN_ARCHES.contains(a)) {
            return Err(ProfileError::UnknownArch(unknown.to_string()));
        }
        Ok((
            host.contains(&"SCMP_ARCH_X86"),
            host.contains(&"SCMP_ARCH_X32"),
        ))
    }

    /// Compiles the profile: the filter and the names skipped.
    pub fn compile(&self, extras: &FilterExtras) -> Result<(Filter, Vec<String>), ProfileError> {
        let converted = self.convert()?;
        let mut filter = Filter::from_rules(converted.rules.into(), *extras)?;
        filter.set_skipped(converted.skipped.clone());
        Ok((filter, converted.skipped))
    }
}

/// i386's `socketcall` and `ipc`.
const SOCKETCALL: u32 = 102;
const IPC: u32 = 117;

/// libseccomp's multiplexed calls on x86: the multiplexer's number and the call's number in
/// it (`SYS_SOCKET` = 1, ..., `SHMCTL` = 24), as `include/seccomp-syscalls.h` numbers them.
pub(crate) fn multiplexed(name: &str) -> Option<(u32, u64)> {
    const SOCKET: [&str; 20] = [
        "socket",
        "bind",
        "connect",
        "listen",
        "accept",
        "getsockname",
        "getpeername",
        "socketpair",
        "send",
        "recv",
        "sendto",
        "recvfrom",
        "shutdown",
        "setsockopt",
        "getsockopt",
        "sendmsg",
        "recvmsg",
        "accept4",
        "recvmmsg",
        "sendmmsg",
    ];
    const IPC_CALLS: [(&str, u64); 12] = [
        ("semop", 1),
        ("semget", 2),
        ("semctl", 3),
        ("semtimedop", 4),
        ("msgsnd", 11),
        ("msgrcv", 12),
        ("msgget", 13),
        ("msgctl", 14),
        ("shmat", 21),
        ("shmdt", 22),
        ("shmget", 23),
        ("shmctl", 24),
    ];
    if let Some(i) = SOCKET.iter().position(|s| *s == name) {
        return Some((SOCKETCALL, u64::try_from(i + 1).ok()?));
    }
    IPC_CALLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, call)| (IPC, call))
}

/// libseccomp: the first unconditional rule for a number decides it, whatever comes before or
/// after; conditional rules keep their order.
fn unconditional_first(rules: Vec<(Rule, usize)>) -> Vec<(Rule, usize)> {
    let mut decided: Vec<u32> = Vec::new();
    let mut out: Vec<(Rule, usize)> = Vec::with_capacity(rules.len());
    for (rule, origin) in &rules {
        if rule.args.is_empty() && !decided.contains(&rule.nr) {
            decided.push(rule.nr);
            out.push((rule.clone(), *origin));
        }
    }
    out.extend(rules.into_iter().filter(|(r, _)| !decided.contains(&r.nr)));
    out
}

/// Docker's `includes`/`excludes` on amd64, for a worker without capabilities.
fn applies(entry: &SyscallEntry, kernel: (u32, u32), at: &Place) -> Result<bool, ProfileError> {
    let arches = |c: &Conditions| c.arches.clone().unwrap_or_default();
    let caps = |c: &Conditions| c.caps.clone().unwrap_or_default();
    let min_kernel = |c: &Conditions| -> Result<Option<bool>, ProfileError> {
        match c.min_kernel.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => parse_min_kernel(text)
                .map(|min| Some(kernel >= min))
                .ok_or_else(|| ProfileError::MinKernel {
                    at: at.clone(),
                    text: text.to_string(),
                }),
        }
    };
    if let Some(exc) = &entry.excludes {
        // Held capabilities exclude an entry: the worker holds none.
        if arches(exc).iter().any(|a| a == HOST_ARCH) || min_kernel(exc)? == Some(true) {
            return Ok(false);
        }
    }
    if let Some(inc) = &entry.includes {
        let a = arches(inc);
        if (!a.is_empty() && !a.iter().any(|a| a == HOST_ARCH))
            || !caps(inc).is_empty()
            || min_kernel(inc)? == Some(false)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Docker's `<kernel>.<major>`: two numbers of at most 255, not both 0.
fn parse_min_kernel(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    let major: u8 = major.parse().ok()?;
    let minor: u8 = minor.parse().ok()?;
    ((major, minor) != (0, 0)).then_some((u32::from(major), u32::from(minor)))
}

/// runc's conversion of an action: ERRNO without a value is EPERM.
fn scmp_action(name: &str, errno: Option<u32>, at: Place) -> Result<ScmpAction, ProfileError> {
    match name {
        "SCMP_ACT_ALLOW" => Ok(ScmpAction::Allow),
        "SCMP_ACT_LOG" => Ok(ScmpAction::Log),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Ok(ScmpAction::KillThread),
        "SCMP_ACT_KILL_PROCESS" => Ok(ScmpAction::KillProcess),
        "SCMP_ACT_TRAP" => Ok(ScmpAction::Trap),
        "SCMP_ACT_ERRNO" => {
            let errno = errno.unwrap_or(libc::EPERM as u32);
            u16::try_from(errno)
                .ok()
                .filter(|e| *e < MAX_ERRNO)
                .map(ScmpAction::Errno)
                .ok_or(ProfileError::Errno { at, errno })
        }
        "SCMP_ACT_TRACE" | "SCMP_ACT_NOTIFY" => Err(ProfileError::UnsupportedAction {
            at,
            name: name.to_string(),
        }),
        other => Err(ProfileError::UnknownAction {
            at,
            name: other.to_string(),
        }),
    }
}

fn parse_arg(arg: &ArgEntry, at: &Place) -> Result<ArgCheck, ProfileError> {
    let op = match arg.op.as_str() {
        "SCMP_CMP_EQ" => CmpOp::Eq,
        "SCMP_CMP_NE" => CmpOp::Ne,
        "SCMP_CMP_LT" => CmpOp::Lt,
        "SCMP_CMP_LE" => CmpOp::Le,
        "SCMP_CMP_GT" => CmpOp::Gt,
        "SCMP_CMP_GE" => CmpOp::Ge,
        "SCMP_CMP_MASKED_EQ" => CmpOp::MaskedEq,
        other => {
            return Err(ProfileError::UnknownOp {
                at: at.clone(),
                op: other.to_string(),
            })
        }
    };
    let index = u8::try_from(arg.index)
        .ok()
        .filter(|i| *i <= 5)
        .ok_or(ProfileError::ArgIndex {
            at: at.clone(),
            index: arg.index,
        })?;
    Ok(ArgCheck {
        index,
        op,
        value: arg.value,
        value_two: arg.value_two,
    })
}

/// The running kernel's (major, minor), from uname; (0, 0) if unreadable.
pub fn kernel_version() -> (u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|v| {
                let mut parts = v.trim().split(['.', '-']);
                let major = parts.next()?.parse().ok()?;
                let minor = parts.next()?.parse().ok()?;
                Some((major, minor))
            })
            .unwrap_or((0, 0))
    })
}
