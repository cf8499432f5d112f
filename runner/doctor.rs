//! What this machine gives a worker: seccomp's modes, the syscalls that pass through every
//! mode, namespaces, Landlock, cgroups, and the assemblers bytejail drives. `bytejail doctor`
//! prints it; a runner asks the same probes which walls a profile worker can get.
//!
//! - [`walls`]: the kernel facts a runner decides with, probed once per process and cached.
//! - [`probe`]: everything `bytejail doctor` reports (the walls, plus the kernel, the CPU, the
//!   user, a few sysctls and the assemblers), probed afresh.
//! - [`Containment::decide`]: how a profile worker's process tree is contained, from the probes.
//! - Each probe is also a `pub fn` of its own ([`seccomp_strict`], [`pid_namespace`], ...).
//!
//! Probes that change the calling process (entering seccomp, unsharing a namespace) run in a
//! child forked for the purpose. That child follows the worker's discipline: everything it needs
//! is built before the fork, and after it only raw syscalls run (no allocation, no lock, no
//! unwinding: another thread of the host may hold the allocator's lock). It reports through a
//! pipe and its wait status, and is killed if it has not ended within a few seconds.
// Forking the probe children, the raw syscalls they make, `uname` and `access` need unsafe code;
// every block says what it relies on.
#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::sys::{self, raw, Forked};

// ---------------------------------------------------------------------------------------------
// The report.

/// How one line of the doctor's report came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Present and working.
    Ok,
    /// Absent or weaker than it could be: a wall a profile worker does not get, a tool that
    /// is not installed. bytejail still runs strict-mode jobs.
    Warning,
    /// Something strict-mode jobs need does not work: `bytejail doctor` exits 1.
    Missing,
}

impl Status {
    /// `ok`, `warning` or `missing`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Missing => "missing",
        }
    }
}

/// One line of the report: a status and a one-line explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether it is fine, a warning or missing.
    pub status: Status,
    /// The one-line explanation.
    pub detail: String,
}

/// The names of the checks, in the order the report gives them (the keys of `checks` in
/// `bytejail doctor --json`).
pub const CHECK_NAMES: [&str; 24] = [
    "kernel",
    "close_range",
    "cpu",
    "user",
    "strict_job",
    "tracer",
    "seccomp_strict",
    "seccomp_filter",
    "seccomp_actions",
    "syscall_passthrough",
    "user_namespace",
    "pid_namespace",
    "ipc_namespace",
    "mount_namespace",
    "network_namespace",
    "landlock",
    "cgroups",
    "containment",
    "rlimit_nproc",
    "shm_rmid_forced",
    "ptrace_scope",
    "as",
    "cc",
    "nasm",
];

/// Everything `bytejail doctor` found.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Doctor {
    /// The kernel's name for itself.
    pub kernel: Kernel,
    /// `model name` in /proc/cpuinfo.
    pub cpu_model: String,
    /// Who the process runs as.
    pub user: User,
    /// Whether a strict-mode job (`mov al, 42; ret`) ran through [`crate::run`] and returned 42.
    pub strict_job: JobProbe,
    /// Whether the tracer named a strict-mode violation (`getpid`) from the kernel, verified.
    pub tracer: JobProbe,
    /// The kernel facts that decide which walls a worker can get.
    pub walls: Walls,
    /// The sysctls that bear on jobs.
    pub sysctls: Sysctls,
    /// The assemblers `run` can use for `.s` and `.asm` files.
    pub assemblers: Vec<Assembler>,
}

/// The kernel's name for itself (uname(2)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// `uname -r`, e.g. `6.18.44`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    /// `uname -m`, e.g. `x86_64`.
    pub machine: String,
    /// Whether `close_range` (Linux 5.9) exists: the worker closes every inherited descriptor
    /// with it.
    pub close_range: bool,
}

/// Who the process runs as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    /// The real user id.
    pub uid: u32,
    /// The effective user id.
    pub euid: u32,
    /// `CapEff` of /proc/self/status: the effective capabilities, as a bit mask.
    pub effective_capabilities: u64,
}

impl User {
    /// Effective uid 0.
    pub fn is_root(&self) -> bool {
        self.euid == 0
    }
}

/// How the doctor's own strict-mode job went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobProbe {
    /// It returned 42, taking this long from fork to reap.
    Returned {
        /// Fork to reap, in nanoseconds.
        wall_ns: u64,
    },
    /// It ran and ended otherwise (the outcome's summary).
    Ended {
        /// The report's summary line.
        summary: String,
    },
    /// The runner failed.
    Failed {
        /// The runner's error.
        error: String,
    },
}

/// The kernel facts that decide which walls a worker can get.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Walls {
    /// Seccomp strict mode (mode 1).
    pub seccomp_strict: SeccompProbe,
    /// Seccomp filter mode (mode 2).
    pub seccomp_filter: SeccompProbe,
    /// The words of /proc/sys/kernel/seccomp/actions_avail; `None` if it cannot be read.
    pub seccomp_actions: Option<Vec<String>>,
    /// What `uretprobe` (335) and `uprobe` (336) do in a seccomp-confined process.
    pub passthrough: Passthrough,
    /// Whether this process can have a user namespace.
    pub user_namespace: NamespaceProbe,
    /// Whether this process can have a PID namespace.
    pub pid_namespace: NamespaceProbe,
    /// Whether this process can have a IPC namespace.
    pub ipc_namespace: NamespaceProbe,
    /// Whether this process can have a mount namespace.
    pub mount_namespace: NamespaceProbe,
    /// Whether this process can have a network namespace.
    pub network_namespace: NamespaceProbe,
    /// Whether Landlock is there, and its ABI version.
    pub landlock: LandlockProbe,
    /// The cgroups this process is in.
    pub cgroups: Cgroups,
    /// How a profile worker's processes are contained, decided from the probes above.
    pub containment: Containment,
}

/// The sysctls that change what a worker can do to others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sysctls {
    /// /proc/sys/user/max_user_namespaces.
    pub max_user_namespaces: Option<u64>,
    /// /proc/sys/kernel/unprivileged_userns_clone (Debian and Ubuntu kernels only).
    pub unprivileged_userns_clone: Option<bool>,
    /// /proc/sys/kernel/apparmor_restrict_unprivileged_userns (Ubuntu kernels only).
    pub apparmor_restrict_unprivileged_userns: Option<bool>,
    /// /proc/sys/kernel/shm_rmid_forced: whether SysV shared memory dies with its last user.
    pub shm_rmid_forced: Option<bool>,
    /// /proc/sys/kernel/yama/ptrace_scope; `None` without Yama.
    pub ptrace_scope: Option<u32>,
}

/// An assembler bytejail runs for source files, and what `PATH` has of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assembler {
    /// The program bytejail runs: `as`, `cc` or `nasm`.
    pub program: &'static str,
    /// Where `PATH` has it.
    pub path: Option<PathBuf>,
    /// The first line of its version output, e.g. `NASM version 2.16.01`.
    pub version: Option<String>,
    /// What cannot be loaded without it, e.g. `.asm files`.
    pub needed_for: &'static str,
    /// The Debian package that has it.
    pub package: &'static str,
}

// ---------------------------------------------------------------------------------------------
// Entry points.

/// The walls this machine can give a worker, probed on first use and cached for the life of
/// the process (the kernel does not change under it). Costs about a dozen forks the first time.
pub fn walls() -> &'static Walls {
    static WALLS: OnceLock<Walls> = OnceLock::new();
    WALLS.get_or_init(probe_walls)
}

/// Probes the walls afresh (see [`walls`] for the cached copy).
pub fn probe_walls() -> Walls {
    let user_namespace = user_namespace();
    let pid_namespace = pid_namespace();
    let cgroups = cgroups();
    let containment = Containment::decide(&pid_namespace);
    Walls {
        seccomp_strict: seccomp_strict(),
        seccomp_filter: seccomp_filter(),
        seccomp_actions: seccomp_actions(),
        passthrough: passthrough(),
        user_namespace,
        pid_namespace,
        ipc_namespace: namespace(libc::CLONE_NEWIPC),
        mount_namespace: namespace(libc::CLONE_NEWNS),
        network_namespace: namespace(libc::CLONE_NEWNET),
        landlock: landlock(),
        cgroups,
        containment,
    }
}

/// Everything `bytejail doctor` reports, probed now (the walls come from [`walls`]).
pub fn probe() -> Doctor {
    Doctor {
        kernel: kernel(),
        cpu_model: cpu_model(),
        user: user(),
        strict_job: strict_job(),
        tracer: tracer_job(),
        walls: walls().clone(),
        sysctls: sysctls(),
        assemblers: assemblers(),
    }
}

// ---------------------------------------------------------------------------------------------
// Seccomp.

/// What a probe of one seccomp mode found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SeccompProbe {
    /// The mode was entered, an allowed call returned, and a forbidden one was stopped.
    Works,
    /// Entering the mode failed with this errno.
    Refused {
        /// The errno.
        errno: i32,
    },
    /// The mode was entered but did not act as it should.
    Broken {
        /// What it did wrong.
        what: String,
    },
    /// The probe's child could not be run or did not report.
    ProbeFailed {
        /// Why.
        error: String,
    },
}

impl SeccompProbe {
    /// Whether the mode was entered and acted as it should.
    pub fn works(&self) -> bool {
        *self == SeccompProbe::Works
    }
}

/// Strict mode: one child enters it and makes an allowed call (`write` to a closed descriptor
/// must return EBADF, then `exit`); a second one enters it and calls `getpid`, which must be
/// killed with SIGKILL.
pub fn seccomp_strict() -> SeccompProbe {
    let allowed = ChildPlan {
        confine: Confine::Strict,
        call: Some((libc::SYS_write, [u32::MAX as usize, 0, 0])),
        ..ChildPlan::NOTHING
    };
    let forbidden = ChildPlan {
        confine: Confine::Strict,
        call: Some((libc::SYS_getpid, [0; 3])),
        ..ChildPlan::NOTHING
    };
    seccomp_verdict(
        run_child(&allowed),
        run_child(&forbidden),
        libc::SIGKILL,
        -(libc::EBADF as i64),
    )
}

/// The errno the filter probe's filter gives `getpid`: one no real `getpid` returns.
const FILTER_PROBE_ERRNO: u32 = libc::EDOM as u32;

/// Filter mode: a child sets `no_new_privs` and installs a filter that fails `getpid` with
/// EDOM and allows everything else, then makes an allowed call (`write`); `getpid` must give
/// EDOM. A second child installs a filter that kills `getpid` (`SECCOMP_RET_KILL_PROCESS`),
/// which must end it with SIGSYS.
pub fn seccomp_filter() -> SeccompProbe {
    let errno = [
        bpf_load_nr(),
        bpf_jump_if(libc::SYS_getpid as u32, 0, 1),
        bpf_ret(libc::SECCOMP_RET_ERRNO | FILTER_PROBE_ERRNO),
        bpf_ret(libc::SECCOMP_RET_ALLOW),
    ];
    let kill = [
        bpf_load_nr(),
        bpf_jump_if(libc::SYS_getpid as u32, 0, 1),
        bpf_ret(libc::SECCOMP_RET_KILL_PROCESS),
        bpf_ret(libc::SECCOMP_RET_ALLOW),
    ];
    let (errno, kill) = (fprog(&errno), fprog(&kill));
    let getpid = Some((libc::SYS_getpid, [0; 3]));
    let returns = ChildPlan {
        confine: Confine::Filter(&errno),
        call: getpid,
        ..ChildPlan::NOTHING
    };
    let killed = ChildPlan {
        confine: Confine::Filter(&kill),
        call: getpid,
        ..ChildPlan::NOTHING
    };
    seccomp_verdict(
        run_child(&returns),
        run_child(&killed),
        libc::SIGSYS,
        -(FILTER_PROBE_ERRNO as i64),
    )
}

/// The verdict on a mode from its two children: `allowed` must end normally with its call
/// returning `expected`; `forbidden` must die of `kill_signal` before its call returns.
fn seccomp_verdict(
    allowed: io::Result<ChildReport>,
    forbidden: io::Result<ChildReport>,
    kill_signal: i32,
    expected: i64,
) -> SeccompProbe {
    let (allowed, forbidden) = match (allowed, forbidden) {
        (Ok(a), Ok(f)) => (a, f),
        (Err(e), _) | (_, Err(e)) => {
            return SeccompProbe::ProbeFailed {
                error: e.to_string(),
            }
        }
    };
    for report in [&allowed, &forbidden] {
        if let Some(errno) = report.failed_at(Stage::NoNewPrivs) {
            return SeccompProbe::Broken {
                what: format!("no_new_privs could not be set ({})", errno_text(errno)),
            };
        }
        if let Some(errno) = report.failed_at(Stage::Seccomp) {
            return SeccompProbe::Refused { errno };
        }
    }
    match allowed.value(Stage::Call) {
        Some(got) if got == expected && allowed.ended == Ended::Exited(0) => {}
        Some(got) => {
            return SeccompProbe::Broken {
                what: format!(
                    "an allowed call returned {got} (expected {expected}), then the child {}",
                    allowed.ended
                ),
            }
        }
        None => {
            return SeccompProbe::Broken {
                what: format!(
                    "an allowed call did not return: the child {}",
                    allowed.ended
                ),
            }
        }
    }
    if let Some(got) = forbidden.value(Stage::Call) {
        return SeccompProbe::Broken {
            what: format!("a forbidden call returned {got}"),
        };
    }
    if forbidden.ended != Ended::Signal(kill_signal) {
        return SeccompProbe::Broken {
            what: format!(
                "a forbidden call ended the child with {} instead of {}",
                forbidden.ended,
                Ended::Signal(kill_signal)
            ),
        };
    }
    SeccompProbe::Works
}

/// The words of /proc/sys/kernel/seccomp/actions_avail (`kill_process kill_thread trap ...`).
pub fn seccomp_actions() -> Option<Vec<String>> {
    let text = fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").ok()?;
    Some(text.split_whitespace().map(str::to_string).collect())
}

/// The seccomp actions bytejail's filters use, and what each is for.
const ACTIONS_USED: [(&str, &str); 6] = [
    ("allow", "allowed calls"),
    ("errno", "SCMP_ACT_ERRNO"),
    ("trap", "reporting a filter's violation"),
    ("kill_process", "SCMP_ACT_KILL_PROCESS"),
    ("log", "SCMP_ACT_LOG"),
    ("user_notif", "a supervisor that sees the violating call"),
];

/// `uretprobe` (335) and `uprobe` (336).
const SYS_URETPROBE: i64 = 335;
const SYS_UPROBE: i64 = 336;

/// What `uretprobe` and `uprobe` do under seccomp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Passthrough {
    /// Syscall 335.
    pub uretprobe: PassthroughProbe,
    /// Syscall 336.
    pub uprobe: PassthroughProbe,
}

impl Passthrough {
    /// The calls that passed through strict mode.
    pub fn through_strict(&self) -> Vec<&'static str> {
        [("uretprobe", &self.uretprobe), ("uprobe", &self.uprobe)]
            .into_iter()
            .filter(|(_, probe)| probe.strict.passed(libc::SIGKILL))
            .map(|(name, _)| name)
            .collect()
    }
}

/// One call made under strict mode and under a filter that kills everything but `write` and
/// `exit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PassthroughProbe {
    /// The call under strict mode.
    pub strict: CallFate,
    /// The call under the filter.
    pub filter: CallFate,
}

/// What happened to a call made in a probe child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallFate {
    /// The call returned this value (`-errno` on error): seccomp let it through.
    Returned {
        /// The return value.
        value: i64,
    },
    /// The child died of this signal: SIGKILL (strict) or SIGSYS (filter) is seccomp stopping
    /// it; another one (SIGILL from `uretprobe` outside a probe) means the kernel ran the call.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// The probe could not tell.
    ProbeFailed {
        /// Why.
        error: String,
    },
}

impl CallFate {
    /// Whether the call got past seccomp, whose kill signal is `kill_signal`.
    pub fn passed(&self, kill_signal: i32) -> bool {
        match self {
            CallFate::Returned { .. } => true,
            CallFate::Signal { signal } => *signal != kill_signal,
            CallFate::ProbeFailed { .. } => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            CallFate::Returned { value } if *value < 0 => {
                format!("returns {}", errno_name(-*value as i32))
            }
            CallFate::Returned { value } => format!("returns {value}"),
            CallFate::Signal { signal } => format!("raises {}", signal_name(*signal)),
            CallFate::ProbeFailed { error } => format!("could not be probed ({error})"),
        }
    }
}

/// Makes `uretprobe` and `uprobe` under strict mode and under a deny-all filter, each in a
/// child of its own. Since Linux 6.14 (335) and 6.18 (336) the kernel lets them through every
/// seccomp mode; with no probe attached 335 raises SIGILL and 336 returns ENXIO.
pub fn passthrough() -> Passthrough {
    let deny_all = [
        bpf_load_nr(),
        bpf_jump_if(libc::SYS_write as u32, 2, 0),
        bpf_jump_if(libc::SYS_exit as u32, 1, 0),
        bpf_ret(libc::SECCOMP_RET_KILL_PROCESS),
        bpf_ret(libc::SECCOMP_RET_ALLOW),
    ];
    let deny_all = fprog(&deny_all);
    let fate = |confine: Confine<'_>, nr: i64| {
        let plan = ChildPlan {
            confine,
            call: Some((nr, [0; 3])),
            ..ChildPlan::NOTHING
        };
        match run_child(&plan) {
            Err(e) => CallFate::ProbeFailed {
                error: e.to_string(),
            },
            Ok(report) => {
                if let Some(errno) = report
                    .failed_at(Stage::NoNewPrivs)
                    .or(report.failed_at(Stage::Seccomp))
                {
                    return CallFate::ProbeFailed {
                        error: format!("seccomp could not be entered ({})", errno_text(errno)),
                    };
                }
                match (report.value(Stage::Call), report.ended) {
                    (Some(value), _) => CallFate::Returned { value },
                    (None, Ended::Signal(signal)) => CallFate::Signal { signal },
                    (None, other) => CallFate::ProbeFailed {
                        error: format!("the child {other}"),
                    },
                }
            }
        }
    };
    let probe = |nr| PassthroughProbe {
        strict: fate(Confine::Strict, nr),
        filter: fate(Confine::Filter(&deny_all), nr),
    };
    Passthrough {
        uretprobe: probe(SYS_URETPROBE),
        uprobe: probe(SYS_UPROBE),
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces.

/// Whether this process can have a namespace of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NamespaceProbe {
    /// `unshare` works as this process is (as root, or for a user namespace).
    Available,
    /// Only together with a new user namespace (`CLONE_NEWUSER` in the same call): an
    /// unprivileged process.
    InUserNamespace,
    /// Neither: the errno alone, and together with a new user namespace.
    Unavailable {
        /// `unshare`'s errno.
        errno: i32,
        /// `unshare`'s errno together with a new user namespace (`None`: that worked).
        errno_in_user_namespace: Option<i32>,
    },
    /// The probe's child could not be run or did not report.
    ProbeFailed {
        /// Why.
        error: String,
    },
}

impl NamespaceProbe {
    /// Available one way or the other.
    pub fn usable(&self) -> bool {
        matches!(
            self,
            NamespaceProbe::Available | NamespaceProbe::InUserNamespace
        )
    }

    /// The `clone`/`unshare` flags that give the namespace `flag`, if any do.
    pub fn flags(&self, flag: libc::c_int) -> Option<libc::c_int> {
        match self {
            NamespaceProbe::Available => Some(flag),
            NamespaceProbe::InUserNamespace => Some(flag | libc::CLONE_NEWUSER),
            _ => None,
        }
    }
}

/// `unshare(CLONE_NEWUSER)` in a child.
pub fn user_namespace() -> NamespaceProbe {
    namespace(libc::CLONE_NEWUSER)
}

/// `unshare(CLONE_NEWPID)` in a child, which then forks a grandchild that must be pid 1 of the
/// new namespace; if that is refused, the same inside a new user namespace.
pub fn pid_namespace() -> NamespaceProbe {
    namespace(libc::CLONE_NEWPID)
}

/// `unshare(flag)` in a child (for `CLONE_NEWPID`, checked by a grandchild being pid 1); if
/// refused, `unshare(flag | CLONE_NEWUSER)`.
pub fn namespace(flag: libc::c_int) -> NamespaceProbe {
    let attempt = |flags: libc::c_int| -> Result<(), NamespaceProbe> {
        let plan = ChildPlan {
            unshare: flags,
            check_pid_one: flag == libc::CLONE_NEWPID,
            ..ChildPlan::NOTHING
        };
        let report = run_child(&plan).map_err(|e| NamespaceProbe::ProbeFailed {
            error: e.to_string(),
        })?;
        if let Some(errno) = report.failed_at(Stage::Unshare) {
            return Err(NamespaceProbe::Unavailable {
                errno,
                errno_in_user_namespace: None,
            });
        }
        let failed = |what: String| NamespaceProbe::ProbeFailed { error: what };
        if let Some(errno) = report.failed_at(Stage::Fork) {
            return Err(failed(format!(
                "fork in the namespace failed ({})",
                errno_text(errno)
            )));
        }
        if plan.check_pid_one {
            match report.value(Stage::Pid) {
                Some(1) => {}
                Some(pid) => return Err(failed(format!("the first process got pid {pid}, not 1"))),
                None => {
                    return Err(failed(format!(
                        "no first process: the child {}",
                        report.ended
                    )))
                }
            }
        }
        match report.ended {
            Ended::Exited(0) => Ok(()),
            other => Err(failed(format!("the child {other}"))),
        }
    };
    match attempt(flag) {
        Ok(()) => NamespaceProbe::Available,
        Err(NamespaceProbe::Unavailable { errno, .. }) if flag != libc::CLONE_NEWUSER => {
            match attempt(flag | libc::CLONE_NEWUSER) {
                Ok(()) => NamespaceProbe::InUserNamespace,
                Err(NamespaceProbe::Unavailable { errno: inner, .. }) => {
                    NamespaceProbe::Unavailable {
                        errno,
                        errno_in_user_namespace: Some(inner),
                    }
                }
                Err(other) => other,
            }
        }
        Err(other) => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Containment.

/// How a profile worker's process tree is contained: the decision the runner and
/// `bytejail doctor` share. A guest under a profile that allows `fork` or `clone` makes
/// processes of its own; only a PID namespace whose init is the worker makes the kernel kill
/// them all with it, also when the host dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Containment {
    /// The worker is init of a new PID namespace (`CLONE_NEWPID`; root or CAP_SYS_ADMIN).
    PidNamespace,
    /// The worker is init of a new PID namespace inside a new user namespace
    /// (`CLONE_NEWUSER | CLONE_NEWPID`; an unprivileged host).
    PidNamespaceInUserNamespace,
    /// No PID namespace: a job may create no process (`Limits::max_procs` above 1 is refused),
    /// so nothing a guest starts can outlive its job or the host.
    NoPidNamespace,
}

impl Containment {
    /// The containment the PID-namespace probe allows.
    pub fn decide(pid_namespace: &NamespaceProbe) -> Containment {
        match pid_namespace {
            NamespaceProbe::Available => Containment::PidNamespace,
            NamespaceProbe::InUserNamespace => Containment::PidNamespaceInUserNamespace,
            _ => Containment::NoPidNamespace,
        }
    }

    /// The `clone` flags that make a worker init of its own PID namespace; `None` without one.
    pub fn clone_flags(self) -> Option<u64> {
        match self {
            Containment::PidNamespace => Some(libc::CLONE_NEWPID as u64),
            Containment::PidNamespaceInUserNamespace => {
                Some((libc::CLONE_NEWPID | libc::CLONE_NEWUSER) as u64)
            }
            Containment::NoPidNamespace => None,
        }
    }

    /// Whether every process a guest creates dies with its worker, also when the host dies.
    pub fn contains_process_tree(self) -> bool {
        self != Containment::NoPidNamespace
    }

    /// Whether a profile that allows process creation (`fork`, `vfork`, `clone`, `clone3`)
    /// may run: always with a PID namespace; without one only when the user opted in.
    pub fn admits_process_creation(self, opted_in: bool) -> bool {
        self.contains_process_tree() || opted_in
    }
}

// ---------------------------------------------------------------------------------------------
// Landlock.

/// What `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)` said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LandlockProbe {
    /// Landlock is on, with this ABI version.
    Abi {
        /// The ABI version.
        version: u32,
    },
    /// Built in but not enabled at boot (EOPNOTSUPP: `lsm=` lacks `landlock`).
    Disabled,
    /// Not in this kernel (ENOSYS).
    NotBuilt,
    /// Another error.
    Failed {
        /// The errno.
        errno: i32,
    },
}

impl LandlockProbe {
    /// The ABI version, when Landlock is on.
    pub fn abi(&self) -> Option<u32> {
        match self {
            LandlockProbe::Abi { version } => Some(*version),
            _ => None,
        }
    }
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`; see
/// landlock_create_ruleset(2). Creates nothing; safe in the calling process.
pub fn landlock() -> LandlockProbe {
    const LANDLOCK_CREATE_RULESET_VERSION: usize = 1;
    // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag the call only returns
    // the ABI version (or an error); it creates no descriptor.
    let ret = unsafe {
        raw::syscall3(
            libc::SYS_landlock_create_ruleset,
            0,
            0,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    match ret {
        v if v > 0 => LandlockProbe::Abi { version: v as u32 },
        e if e == -(libc::EOPNOTSUPP as isize) => LandlockProbe::Disabled,
        e if e == -(libc::ENOSYS as isize) => LandlockProbe::NotBuilt,
        e => LandlockProbe::Failed { errno: -e as i32 },
    }
}

/// What each Landlock ABI version added, oldest first: (version, Linux release, feature).
pub const LANDLOCK_FEATURES: [(u32, &str, &str); 7] = [
    (1, "5.13", "file system access"),
    (2, "5.19", "linking and renaming across directories"),
    (3, "6.2", "truncating files"),
    (4, "6.7", "TCP bind and connect"),
    (5, "6.10", "ioctl on devices"),
    (6, "6.12", "scoping of signals and abstract UNIX sockets"),
    (7, "6.15", "audit logging control"),
];

/// The features an ABI version brings (those of every version up to it).
pub fn landlock_features(abi: u32) -> Vec<&'static str> {
    LANDLOCK_FEATURES
        .iter()
        .filter(|(version, _, _)| *version <= abi)
        .map(|(_, _, feature)| *feature)
        .collect()
}

/// The Landlock ABI a profile worker's walls need: TCP from 4, signal and abstract-socket
/// scoping from 6.
pub const LANDLOCK_ABI_WANTED: u32 = 6;

// ---------------------------------------------------------------------------------------------
// Cgroups.

/// Which cgroup hierarchies this process sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CgroupMode {
    /// Only the v2 hierarchy (usually at /sys/fs/cgroup).
    Unified,
    /// v1 controller hierarchies next to a v2 hierarchy.
    Hybrid,
    /// Only v1 controller hierarchies.
    Legacy,
    /// No cgroup file system mounted.
    None,
}

/// The cgroups this process is in, and what a worker could use of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cgroups {
    /// Which cgroup versions are mounted.
    pub mode: CgroupMode,
    /// The v2 hierarchy, if mounted.
    pub v2: Option<CgroupV2>,
    /// The v1 hierarchies: one per mount, with its controllers (`pids`, `memory`, ...,
    /// `name=systemd`).
    pub v1: Vec<CgroupV1>,
    /// Where a process limit could come from, if anywhere.
    pub pids: Option<PidsController>,
    /// Where the CPU time of a job's whole process tree could be counted (for `--cpu-time`),
    /// if anywhere: v1's `cpuacct` controller, else any v2 hierarchy (`cpu.stat` needs no
    /// controller).
    pub cpu_accounting: Option<PidsController>,
}

/// This process's place in the v2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupV2 {
    /// Where the hierarchy is mounted.
    pub mount: PathBuf,
    /// This process's cgroup directory.
    pub dir: PathBuf,
    /// `cgroup.controllers` of that directory (empty in a controller-less hierarchy).
    pub controllers: Vec<String>,
    /// Whether cgroups made below the directory have `cgroup.kill` (Linux 5.14): one write
    /// kills every process in a cgroup. Found by making one, when the directory is writable.
    pub kill: bool,
    /// Whether this process may create cgroups below it (write access to the directory).
    pub writable: bool,
}

/// This process's place in one v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupV1 {
    /// The controllers of the hierarchy (`pids`, `memory`, ..., `name=systemd`).
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted.
    pub mount: PathBuf,
    /// This process's cgroup directory in it.
    pub dir: PathBuf,
}

/// A cgroup controller this process could use for jobs (pids: limit a job's processes; CPU
/// accounting: count a job's CPU time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PidsController {
    /// 1 or 2.
    pub version: u8,
    /// This process's cgroup directory in that hierarchy.
    pub dir: PathBuf,
    /// Whether this process may create a cgroup there (with its own `pids.max`).
    pub usable: bool,
}

/// The cgroup hierarchies as /proc/self/mountinfo and /proc/self/cgroup describe them, without
/// looking at the directories (see [`cgroups`] for that).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLayout {
    /// (mount point, this process's directory) of the v2 hierarchy.
    pub v2: Option<(PathBuf, PathBuf)>,
    /// The v1 hierarchies.
    pub v1: Vec<CgroupV1>,
}

impl CgroupLayout {
    /// Reads the layout from the text of /proc/self/mountinfo and /proc/self/cgroup.
    pub fn parse(mountinfo: &str, self_cgroup: &str) -> CgroupLayout {
        // /proc/self/cgroup: `hierarchy-id:controllers:path`; v2 is `0::path`.
        let mut v2_path = None;
        let mut v1_paths: Vec<(Vec<String>, String)> = Vec::new();
        for line in self_cgroup.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if id == "0" && controllers.is_empty() {
                v2_path = Some(path.to_string());
            } else {
                let names = controllers.split(',').map(str::to_string).collect();
                v1_paths.push((names, path.to_string()));
            }
        }
        let mut layout = CgroupLayout {
            v2: None,
            v1: Vec::new(),
        };
        for line in mountinfo.lines() {
            // id parent major:minor root mount-point options [optional fields] - type source
            // super-options
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = before.split(' ').collect();
            let rest: Vec<&str> = after.split(' ').collect();
            let (Some(&root), Some(&mount), Some(&fstype)) =
                (fields.get(3), fields.get(4), rest.first())
            else {
                continue;
            };
            let mount = unescape_mountinfo(mount);
            match fstype {
                "cgroup2" if layout.v2.is_none() => {
                    if let Some(path) = &v2_path {
                        layout.v2 = Some((
                            PathBuf::from(&mount),
                            cgroup_dir(&mount, &unescape_mountinfo(root), path),
                        ));
                    }
                }
                "cgroup" => {
                    let options = rest.get(2).copied().unwrap_or("");
                    let controllers: Vec<String> = options
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains("relatime"))
                        .filter(|o| is_cgroup_controller(o))
                        .map(str::to_string)
                        .collect();
                    let Some((_, path)) = v1_paths.iter().find(|(names, _)| {
                        !controllers.is_empty() && controllers.iter().all(|c| names.contains(c))
                    }) else {
                        continue;
                    };
                    layout.v1.push(CgroupV1 {
                        dir: cgroup_dir(&mount, &unescape_mountinfo(root), path),
                        mount: PathBuf::from(mount),
                        controllers,
                    });
                }
                _ => {}
            }
        }
        layout
    }

    /// Unified, hybrid, legacy or none.
    pub fn mode(&self) -> CgroupMode {
        match (self.v2.is_some(), self.v1.is_empty()) {
            (true, true) => CgroupMode::Unified,
            (true, false) => CgroupMode::Hybrid,
            (false, false) => CgroupMode::Legacy,
            (false, true) => CgroupMode::None,
        }
    }
}

/// A v1 mount's super-option that names a controller or a named hierarchy, not a mount flag.
fn is_cgroup_controller(option: &str) -> bool {
    const FLAGS: [&str; 6] = [
        "noprefix",
        "clone_children",
        "xattr",
        "cpuset_v2_mode",
        "favordynmods",
        "nosuid",
    ];
    !option.is_empty() && !option.starts_with("release_agent=") && !FLAGS.contains(&option)
}

/// The directory of cgroup `path` in a hierarchy mounted at `mount` whose mount shows the
/// hierarchy from `root` on.
fn cgroup_dir(mount: &str, root: &str, path: &str) -> PathBuf {
    let relative = if root == "/" {
        path
    } else {
        path.strip_prefix(root).unwrap_or(path)
    };
    let relative = relative.trim_start_matches('/');
    if relative.is_empty() {
        PathBuf::from(mount)
    } else {
        Path::new(mount).join(relative)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroups of this process: the layout from /proc/self, then its directories.
pub fn cgroups() -> Cgroups {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let layout = CgroupLayout::parse(&read("/proc/self/mountinfo"), &read("/proc/self/cgroup"));
    let mode = layout.mode();
    let v2 = layout.v2.map(|(mount, dir)| {
        let controllers = fs::read_to_string(dir.join("cgroup.controllers"))
            .map(|text| text.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let writable = writable(&dir);
        CgroupV2 {
            kill: cgroup_kill(&dir, writable),
            writable,
            mount,
            dir,
            controllers,
        }
    });
    let pids = match &v2 {
        Some(v2) if v2.controllers.iter().any(|c| c == "pids") => Some(PidsController {
            version: 2,
            dir: v2.dir.clone(),
            usable: v2.writable,
        }),
        _ => layout
            .v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == "pids"))
            .map(|h| PidsController {
                version: 1,
                dir: h.dir.clone(),
                usable: h.dir.is_dir() && writable(&h.dir),
            }),
    };
    let cpu_accounting = layout
        .v1
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == "cpuacct"))
        .map(|h| PidsController {
            version: 1,
            dir: h.dir.clone(),
            usable: h.dir.is_dir() && writable(&h.dir),
        })
        .or_else(|| {
            v2.as_ref().map(|v2| PidsController {
                version: 2,
                dir: v2.dir.clone(),
                usable: v2.writable,
            })
        });
    Cgroups {
        mode,
        v2,
        v1: layout.v1,
        pids,
        cpu_accounting,
    }
}

/// Whether cgroups below `dir` have `cgroup.kill`. A root cgroup never has the file, so
/// unless `dir` has it, a cgroup is made below it to look (and removed at once), when `dir`
/// is writable.
fn cgroup_kill(dir: &Path, writable: bool) -> bool {
    if dir.join("cgroup.kill").exists() {
        return true;
    }
    if !writable {
        return false;
    }
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!("bytejail-doctor-{}-{n}", sys::getpid()));
    if fs::create_dir(&probe).is_err() {
        return false;
    }
    let kill = probe.join("cgroup.kill").exists();
    let _ = fs::remove_dir(&probe);
    kill
}

/// `access(path, W_OK)`; see access(2). Honours read-only mounts, unlike the mode bits.
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string; access only reads it.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

// ---------------------------------------------------------------------------------------------
// The machine, the user, sysctls, assemblers.

/// `uname(2)`, and whether `close_range` exists.
pub fn kernel() -> Kernel {
    // SAFETY: utsname is plain data; zeroed is a valid value.
    let mut names: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local; uname fills it with NUL-terminated strings.
    let ok = unsafe { libc::uname(&mut names) } == 0;
    let field = |chars: &[libc::c_char]| {
        if !ok {
            return "unknown".to_string();
        }
        let bytes: Vec<u8> = chars
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    // close_range(~0U, ~0U, 0) closes nothing (no descriptor is that high) and returns 0 where
    // the call exists, ENOSYS before Linux 5.9.
    // SAFETY: plain integer arguments; closes no descriptor.
    let close_range = unsafe {
        raw::syscall3(
            libc::SYS_close_range,
            u32::MAX as usize,
            u32::MAX as usize,
            0,
        )
    };
    Kernel {
        release: field(&names.release),
        version: field(&names.version),
        machine: field(&names.machine),
        close_range: close_range == 0,
    }
}

/// `model name` in /proc/cpuinfo.
pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The uid, effective uid and effective capabilities of this process.
pub fn user() -> User {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let uids: Vec<u32> = field("Uid:")
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    User {
        uid: uids.first().copied().unwrap_or(u32::MAX),
        euid: uids.get(1).copied().unwrap_or(u32::MAX),
        effective_capabilities: u64::from_str_radix(&field("CapEff:"), 16).unwrap_or(0),
    }
}

/// Runs `mov al, 42; ret` through [`crate::run`] with the default options (strict mode).
pub fn strict_job() -> JobProbe {
    let code = [0xb0, 42, 0xc3];
    match crate::run(&code, b"", &crate::RunOptions::default()) {
        Err(e) => JobProbe::Failed {
            error: e.to_string(),
        },
        Ok(report) => match &report.outcome {
            crate::Outcome::Returned(regs) if regs.rax == 42 => JobProbe::Returned {
                wall_ns: u64::try_from(report.wall.as_nanos()).unwrap_or(u64::MAX),
            },
            _ => JobProbe::Ended {
                summary: report.summary().to_string(),
            },
        },
    }
}

/// Runs `mov eax, 39; syscall` (getpid, a strict-mode violation) through [`crate::run`],
/// traced and without a diagnosis re-run: `Returned` when the report names `getpid`, verified
/// (the tracer attached), `Ended` with the summary otherwise.
pub fn tracer_job() -> JobProbe {
    let code = [0xb8, 39, 0, 0, 0, 0x0f, 0x05, 0xc3];
    let options = crate::RunOptions::default()
        .with_trace(true)
        .with_diagnose(false);
    match crate::run(&code, b"", &options) {
        Err(e) => JobProbe::Failed {
            error: e.to_string(),
        },
        Ok(report) => match &report.syscall {
            Some(sc) if sc.nr == 39 && sc.verified => JobProbe::Returned {
                wall_ns: u64::try_from(report.wall.as_nanos()).unwrap_or(u64::MAX),
            },
            _ => JobProbe::Ended {
                summary: report.summary().to_string(),
            },
        },
    }
}

/// The sysctls in [`Sysctls`], where this kernel has them.
pub fn sysctls() -> Sysctls {
    let read = |path: &str| fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    let number = |path: &str| read(path).and_then(|s| s.parse::<u64>().ok());
    let flag = |path: &str| number(path).map(|n| n != 0);
    Sysctls {
        max_user_namespaces: number("/proc/sys/user/max_user_namespaces"),
        unprivileged_userns_clone: flag("/proc/sys/kernel/unprivileged_userns_clone"),
        apparmor_restrict_unprivileged_userns: flag(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        ),
        shm_rmid_forced: flag("/proc/sys/kernel/shm_rmid_forced"),
        ptrace_scope: number("/proc/sys/kernel/yama/ptrace_scope").map(|n| n as u32),
    }
}

/// The assemblers bytejail runs, as `PATH` has them, each with its version line.
pub fn assemblers() -> Vec<Assembler> {
    [
        ("as", "--version", ".s files (GNU as source)", "binutils"),
        ("cc", "--version", ".S files (preprocessed by cc)", "gcc"),
        ("nasm", "-v", ".asm files (NASM source)", "nasm"),
    ]
    .into_iter()
    .map(|(program, flag, needed_for, package)| {
        let path = find_in_path(program);
        let version = path.as_ref().and_then(|path| version_line(path, flag));
        Assembler {
            program,
            path,
            version,
            needed_for,
            package,
        }
    })
    .collect()
}

/// The first executable `program` in `PATH`.
fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The first non-empty line `program flag` prints (stdout, else stderr), if it runs.
fn version_line(program: &Path, flag: &str) -> Option<String> {
    let output = std::process::Command::new(program)
        .arg(flag)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let line = [&output.stdout, &output.stderr]
        .into_iter()
        .find_map(|text| {
            String::from_utf8_lossy(text)
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(str::to_string)
        });
    line
}

// ---------------------------------------------------------------------------------------------
// The checks: from probes to ok / warning / missing.

impl Doctor {
    /// One check per name in [`CHECK_NAMES`], in that order.
    pub fn checks(&self) -> Vec<(&'static str, Check)> {
        let w = &self.walls;
        let mut checks = vec![
            ("kernel", self.kernel_check()),
            ("close_range", self.close_range_check()),
            ("cpu", ok(self.cpu_model.clone())),
            ("user", self.user_check()),
            ("strict_job", self.strict_job_check()),
            ("tracer", self.tracer_check()),
            ("seccomp_strict", strict_check(&w.seccomp_strict)),
            ("seccomp_filter", filter_check(&w.seccomp_filter)),
            (
                "seccomp_actions",
                actions_check(w.seccomp_actions.as_deref()),
            ),
            ("syscall_passthrough", passthrough_check(&w.passthrough)),
            ("user_namespace", self.user_namespace_check()),
            (
                "pid_namespace",
                namespace_check(
                    &w.pid_namespace,
                    "PID",
                    "the worker can be init of its own PID namespace",
                    "processes a guest creates can outlive its job",
                ),
            ),
            (
                "ipc_namespace",
                namespace_check(
                    &w.ipc_namespace,
                    "IPC",
                    "a profile worker's SysV IPC and POSIX queues are its own",
                    "a guest under a profile shares SysV IPC with the host and later jobs",
                ),
            ),
            (
                "mount_namespace",
                namespace_check(
                    &w.mount_namespace,
                    "mount",
                    "a profile worker's mounts are its own",
                    "a profile worker shares the host's mount table",
                ),
            ),
            (
                "network_namespace",
                namespace_check(
                    &w.network_namespace,
                    "network",
                    "a profile worker can get a network without interfaces",
                    "a guest under a profile that allows sockets reaches the host's network",
                ),
            ),
            ("landlock", landlock_check(&w.landlock)),
            ("cgroups", cgroups_check(&w.cgroups)),
            ("containment", containment_check(w.containment, &w.cgroups)),
            ("rlimit_nproc", self.rlimit_nproc_check()),
            ("shm_rmid_forced", self.shm_check()),
            ("ptrace_scope", self.ptrace_check()),
        ];
        for assembler in &self.assemblers {
            checks.push((assembler.program, assembler_check(assembler)));
        }
        checks
    }

    /// The checks whose status is `missing`: what strict-mode jobs need and do not have.
    pub fn missing(&self) -> Vec<&'static str> {
        self.checks()
            .into_iter()
            .filter(|(_, check)| check.status == Status::Missing)
            .map(|(name, _)| name)
            .collect()
    }

    /// Whether everything strict-mode jobs need works.
    pub fn ready(&self) -> bool {
        self.missing().is_empty()
    }

    /// The `bytejail doctor --json` object: `ready`, `missing`, `checks` (name to `status` and
    /// `detail`) and `probes` (the typed results).
    pub fn to_json(&self) -> Value {
        let checks = self.checks();
        let missing: Vec<&str> = checks
            .iter()
            .filter(|(_, c)| c.status == Status::Missing)
            .map(|(name, _)| *name)
            .collect();
        let mut map = Map::new();
        for (name, check) in &checks {
            map.insert(
                name.to_string(),
                json!({"status": check.status, "detail": check.detail}),
            );
        }
        json!({
            "ready": missing.is_empty(),
            "missing": missing,
            "checks": map,
            "probes": serde_json::to_value(self).unwrap_or(Value::Null),
        })
    }

    /// The report as text: one line per check, then a verdict.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let checks = self.checks();
        let width = checks.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (name, check) in &checks {
            let _ = writeln!(
                text,
                "{:<8} {name:<width$}  {}",
                check.status.name(),
                check.detail
            );
        }
        let warnings = checks
            .iter()
            .filter(|(_, c)| c.status == Status::Warning)
            .count();
        let missing: Vec<&str> = checks
            .iter()
            .filter(|(_, c)| c.status == Status::Missing)
            .map(|(name, _)| *name)
            .collect();
        if missing.is_empty() {
            let _ = writeln!(
                text,
                "ready: strict-mode jobs have every wall they need ({warnings} warning{})",
                if warnings == 1 { "" } else { "s" }
            );
        } else {
            let _ = writeln!(
                text,
                "not ready for strict-mode jobs: missing {}",
                missing.join(", ")
            );
        }
        text
    }

    fn kernel_check(&self) -> Check {
        let k = &self.kernel;
        ok(format!("Linux {} ({}) {}", k.release, k.version, k.machine))
    }

    fn close_range_check(&self) -> Check {
        if self.kernel.close_range {
            ok("close_range works: a worker closes every descriptor it inherited")
        } else {
            missing(
                "no close_range (Linux 5.9+): a worker cannot close the descriptors it inherits",
            )
        }
    }

    fn user_check(&self) -> Check {
        let u = &self.user;
        let caps = format!("effective capabilities {:#x}", u.effective_capabilities);
        if u.is_root() {
            ok(format!(
                "root (uid {}, euid 0), {caps}: filter-mode workers drop every capability",
                u.uid
            ))
        } else {
            ok(format!(
                "uid {} (euid {}), {caps}: namespaces only through a user namespace",
                u.uid, u.euid
            ))
        }
    }

    fn strict_job_check(&self) -> Check {
        match &self.strict_job {
            JobProbe::Returned { .. } => {
                ok("a strict-mode job (mov al, 42; ret) ran through bytejail::run and returned 42")
            }
            JobProbe::Ended { summary } => missing(format!(
                "a strict-mode job (mov al, 42; ret) should return 42 but ended: {summary}"
            )),
            JobProbe::Failed { error } => missing(format!(
                "a strict-mode job (mov al, 42; ret) could not run: {error}"
            )),
        }
    }

    fn tracer_check(&self) -> Check {
        match &self.tracer {
            JobProbe::Returned { .. } => ok(
                "a traced job's forbidden getpid was named by the kernel, through the tracer: \
                 fault and syscall details of reports are verified",
            ),
            JobProbe::Ended { summary } => warning(format!(
                "the tracer could not name a strict-mode violation ({summary}): fault and \
                 syscall details of reports are the worker's claim, marked unverified"
            )),
            JobProbe::Failed { error } => warning(format!(
                "a traced strict-mode job could not run ({error}): fault and syscall details \
                 of reports are the worker's claim, marked unverified"
            )),
        }
    }

    fn user_namespace_check(&self) -> Check {
        let s = &self.sysctls;
        let mut notes = Vec::new();
        if let Some(max) = s.max_user_namespaces {
            notes.push(format!("max_user_namespaces {max}"));
        }
        if let Some(on) = s.unprivileged_userns_clone {
            notes.push(format!("unprivileged_userns_clone {}", u8::from(on)));
        }
        if let Some(on) = s.apparmor_restrict_unprivileged_userns {
            notes.push(format!(
                "apparmor_restrict_unprivileged_userns {}",
                u8::from(on)
            ));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        match &self.walls.user_namespace {
            NamespaceProbe::Available | NamespaceProbe::InUserNamespace => ok(format!(
                "unshare(CLONE_NEWUSER) works{notes}: an unprivileged host can have the other namespaces"
            )),
            NamespaceProbe::Unavailable { errno, .. } => {
                let hint = if s.max_user_namespaces == Some(0) {
                    "; max_user_namespaces is 0"
                } else if s.unprivileged_userns_clone == Some(false) {
                    "; unprivileged_userns_clone is 0"
                } else {
                    ""
                };
                let status = if self.user.is_root() {
                    Status::Ok // root has the other namespaces without one
                } else {
                    Status::Warning
                };
                Check {
                    status,
                    detail: format!(
                        "unshare(CLONE_NEWUSER) fails ({}{hint}){notes}: {}",
                        errno_text(*errno),
                        if self.user.is_root() {
                            "root needs none for the other namespaces"
                        } else {
                            "without root, no other namespace either"
                        }
                    ),
                }
            }
            NamespaceProbe::ProbeFailed { error } => warning(format!(
                "could not probe unshare(CLONE_NEWUSER): {error}{notes}"
            )),
        }
    }

    fn rlimit_nproc_check(&self) -> Check {
        let w = &self.walls;
        let pids = w.cgroups.pids.as_ref().filter(|p| p.usable);
        let elsewhere = match (w.containment, pids) {
            (Containment::PidNamespace, Some(_)) => Some(
                "a filter that refuses clone, fork, vfork and clone3 (--max-procs 1, the \
                 default), or the job's pids cgroup (more)",
            ),
            _ => Some(
                "a filter that refuses clone, fork, vfork and clone3 (--max-procs 1, the \
                 default); more is refused here: it needs a PID namespace and a pids cgroup",
            ),
        };
        let why = if self.user.is_root() {
            "RLIMIT_NPROC does not limit uid 0 and counts per user, not per job"
        } else {
            "RLIMIT_NPROC counts per user, not per job"
        };
        match elsewhere {
            Some(source) => ok(format!("{why}: a job's process limit comes from {source}")),
            None => warning(format!(
                "{why}, and neither a PID namespace nor a usable pids cgroup is there: no \
                 per-job process limit"
            )),
        }
    }

    fn shm_check(&self) -> Check {
        let ipc = self.walls.ipc_namespace.usable();
        match self.sysctls.shm_rmid_forced {
            Some(true) => ok("1: SysV shared memory dies with the last process using it"),
            Some(false) if ipc => ok(
                "0: SysV shared memory outlives its creator; an IPC namespace per profile worker \
                 keeps it to the job",
            ),
            Some(false) => warning(
                "0 and no IPC namespace: SysV shared memory a guest makes outlives its job and \
                 can carry data to a later one",
            ),
            None => warning("cannot read /proc/sys/kernel/shm_rmid_forced"),
        }
    }

    fn ptrace_check(&self) -> Check {
        let landlock = self.walls.landlock.abi().is_some();
        match self.sysctls.ptrace_scope {
            Some(scope) if scope >= 1 => ok(format!(
                "Yama ptrace_scope {scope}: a process may trace only its descendants (or less)"
            )),
            Some(scope) if landlock => ok(format!(
                "Yama ptrace_scope {scope}; Landlock keeps a profile worker from tracing \
                 processes outside its domain"
            )),
            None if landlock => ok(
                "no Yama; Landlock keeps a profile worker from tracing processes outside its \
                 domain",
            ),
            Some(scope) => warning(format!(
                "Yama ptrace_scope {scope} and no Landlock: a guest whose profile allows ptrace \
                 may trace any process of its uid"
            )),
            None => warning(
                "no Yama and no Landlock: a guest whose profile allows ptrace may trace any \
                 process of its uid",
            ),
        }
    }
}

fn ok(detail: impl Into<String>) -> Check {
    Check {
        status: Status::Ok,
        detail: detail.into(),
    }
}

fn warning(detail: impl Into<String>) -> Check {
    Check {
        status: Status::Warning,
        detail: detail.into(),
    }
}

fn missing(detail: impl Into<String>) -> Check {
    Check {
        status: Status::Missing,
        detail: detail.into(),
    }
}

fn seccomp_problem(probe: &SeccompProbe) -> String {
    match probe {
        SeccompProbe::Works => "works".to_string(),
        SeccompProbe::Refused { errno } => format!("cannot be entered ({})", errno_text(*errno)),
        SeccompProbe::Broken { what } => format!("does not hold: {what}"),
        SeccompProbe::ProbeFailed { error } => format!("could not be probed: {error}"),
    }
}

fn strict_check(probe: &SeccompProbe) -> Check {
    if probe.works() {
        ok("strict mode works: an allowed call returned, getpid was killed (SIGKILL)")
    } else {
        missing(format!(
            "strict mode {}: bytejail's default policy needs it",
            seccomp_problem(probe)
        ))
    }
}

fn filter_check(probe: &SeccompProbe) -> Check {
    if probe.works() {
        ok("filter mode works: a filter's errno and kill (SIGSYS) both acted")
    } else {
        warning(format!(
            "filter mode {}: no --policy strict-bpf or profiles, and no diagnosis of \
             strict-mode violations",
            seccomp_problem(probe)
        ))
    }
}

fn actions_check(actions: Option<&[String]>) -> Check {
    let Some(actions) = actions else {
        return warning("cannot read /proc/sys/kernel/seccomp/actions_avail");
    };
    let lacking: Vec<String> = ACTIONS_USED
        .iter()
        .filter(|(name, _)| !actions.iter().any(|a| a == name))
        .map(|(name, use_)| format!("{name} ({use_})"))
        .collect();
    if lacking.is_empty() {
        ok(actions.join(" "))
    } else {
        warning(format!(
            "{}; lacking {}",
            actions.join(" "),
            lacking.join(", ")
        ))
    }
}

fn passthrough_check(p: &Passthrough) -> Check {
    let describe = |name: &str, nr: i64, probe: &PassthroughProbe| {
        if probe.strict == probe.filter {
            format!(
                "{name} ({nr}) {} under strict mode and a deny-all filter",
                probe.strict.describe()
            )
        } else {
            format!(
                "{name} ({nr}) {} under strict mode, {} under a deny-all filter",
                probe.strict.describe(),
                probe.filter.describe()
            )
        }
    };
    let both = format!(
        "{}; {}",
        describe("uretprobe", SYS_URETPROBE, &p.uretprobe),
        describe("uprobe", SYS_UPROBE, &p.uprobe)
    );
    let failed = [&p.uretprobe, &p.uprobe].iter().any(|probe| {
        matches!(probe.strict, CallFate::ProbeFailed { .. })
            || matches!(probe.filter, CallFate::ProbeFailed { .. })
    });
    let through = p.through_strict();
    if failed {
        warning(format!("could not probe every case: {both}"))
    } else if through.is_empty() {
        ok(format!("none: {both}"))
    } else {
        warning(format!(
            "{both}: {} through every seccomp mode, and no filter can block {}",
            if through.len() == 1 {
                format!("{} passes", through[0])
            } else {
                "both pass".to_string()
            },
            if through.len() == 1 { "it" } else { "them" }
        ))
    }
}

fn namespace_check(probe: &NamespaceProbe, kind: &str, gives: &str, without: &str) -> Check {
    match probe {
        NamespaceProbe::Available => ok(format!("a new {kind} namespace works: {gives}")),
        NamespaceProbe::InUserNamespace => ok(format!(
            "a new {kind} namespace works inside a new user namespace: {gives}"
        )),
        NamespaceProbe::Unavailable {
            errno,
            errno_in_user_namespace,
        } => warning(format!(
            "no {kind} namespace ({}{}): {without}",
            errno_text(*errno),
            errno_in_user_namespace
                .map(|e| format!("; in a new user namespace {}", errno_text(e)))
                .unwrap_or_default()
        )),
        NamespaceProbe::ProbeFailed { error } => warning(format!(
            "could not probe a {kind} namespace ({error}): {without}"
        )),
    }
}

fn landlock_check(probe: &LandlockProbe) -> Check {
    let without = "a guest under a profile that allows open reads every file its uid can";
    match probe {
        LandlockProbe::Abi { version } => {
            let features = landlock_features(*version).join(", ");
            if *version >= LANDLOCK_ABI_WANTED {
                ok(format!("ABI {version}: {features}"))
            } else {
                let lacking: Vec<&str> = LANDLOCK_FEATURES
                    .iter()
                    .filter(|(v, _, _)| *v > *version && *v <= LANDLOCK_ABI_WANTED)
                    .map(|(_, _, feature)| *feature)
                    .collect();
                warning(format!(
                    "ABI {version}: {features}; lacking {} (ABI {LANDLOCK_ABI_WANTED})",
                    lacking.join(", ")
                ))
            }
        }
        LandlockProbe::Disabled => warning(format!(
            "built in but not enabled (add landlock to the lsm= boot parameter): {without}"
        )),
        LandlockProbe::NotBuilt => warning(format!("not in this kernel: {without}")),
        LandlockProbe::Failed { errno } => warning(format!(
            "landlock_create_ruleset failed ({}): {without}",
            errno_text(*errno)
        )),
    }
}

fn cgroups_check(c: &Cgroups) -> Check {
    let mode = match c.mode {
        CgroupMode::Unified => "v2 (unified)".to_string(),
        CgroupMode::Hybrid => format!(
            "hybrid: v1 {} and v2",
            c.v1.iter()
                .flat_map(|h| h.controllers.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(",")
        ),
        CgroupMode::Legacy => format!(
            "v1 only: {}",
            c.v1.iter()
                .flat_map(|h| h.controllers.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(",")
        ),
        CgroupMode::None => {
            return warning("no cgroup file system mounted: no cgroup.kill, no pids limit, and --cpu-time counts only the worker's own CPU")
        }
    };
    let kill = match &c.v2 {
        Some(v2) if v2.kill && v2.writable => {
            format!("cgroup.kill below {}", v2.dir.display())
        }
        Some(v2) if v2.writable => {
            format!("no cgroup.kill below {} (Linux 5.14+)", v2.dir.display())
        }
        Some(v2) => format!(
            "{} is not writable here: no cgroups below it, no cgroup.kill",
            v2.dir.display()
        ),
        None => "no v2 hierarchy, so no cgroup.kill".to_string(),
    };
    let pids = match &c.pids {
        Some(p) if p.usable => format!("pids controller (v{}) in {}", p.version, p.dir.display()),
        Some(p) => format!(
            "pids controller (v{}) in {}, not writable here",
            p.version,
            p.dir.display()
        ),
        None => "no pids controller".to_string(),
    };
    let cpu = match &c.cpu_accounting {
        Some(p) if p.usable => format!(
            "--cpu-time counts a job's whole process tree ({} in {})",
            if p.version == 1 {
                "cpuacct, v1"
            } else {
                "cpu.stat, v2"
            },
            p.dir.display()
        ),
        _ => "no writable CPU accounting cgroup: --cpu-time counts only the worker's own CPU, \
              not the processes it starts"
            .to_string(),
    };
    let usable_kill = c.v2.as_ref().is_some_and(|v2| v2.kill && v2.writable);
    let usable_pids = c.pids.as_ref().is_some_and(|p| p.usable);
    let usable_cpu = c.cpu_accounting.as_ref().is_some_and(|p| p.usable);
    let detail = format!("{mode}; {kill}; {pids}; {cpu}");
    if usable_kill && usable_pids && usable_cpu {
        ok(detail)
    } else {
        warning(detail)
    }
}

fn containment_check(containment: Containment, cgroups: &Cgroups) -> Check {
    let second = match &cgroups.v2 {
        Some(v2) if v2.kill && v2.writable => {
            "; cgroup.kill is there (the janitor of a dead host uses it on v2 job cgroups)"
        }
        _ => "",
    };
    match containment {
        Containment::PidNamespace => ok(format!(
            "profile workers can be init of their own PID namespace: every process a guest \
             creates dies with its worker, also when the host dies{second}"
        )),
        Containment::PidNamespaceInUserNamespace => ok(format!(
            "profile workers get a user namespace of their own (this process is not root), \
             and inside it PID, IPC, mount and network namespaces: every process a guest \
             creates dies with its worker, also when the host dies; --max-procs above 1 also \
             needs a pids cgroup this user may make{second}"
        )),
        Containment::NoPidNamespace => warning(format!(
            "no PID namespace for profile workers: a job may create no process (a filter \
             refuses clone, fork, vfork and clone3; --max-procs above 1 is refused unless \
             --allow-uncontained, and then its processes may outlive it){second}"
        )),
    }
}

fn assembler_check(a: &Assembler) -> Check {
    match (&a.path, &a.version) {
        (Some(path), Some(version)) => ok(format!("{version} ({})", path.display())),
        (Some(path), None) => warning(format!(
            "{} does not say its version: {} may not assemble",
            path.display(),
            a.needed_for
        )),
        (None, _) => warning(format!(
            "`{}` not found: {} cannot be loaded (apt-get install {})",
            a.program, a.needed_for, a.package
        )),
    }
}

/// `EPERM (Operation not permitted)`.
fn errno_text(errno: i32) -> String {
    format!(
        "{}: {}",
        errno_name(errno),
        io::Error::from_raw_os_error(errno).kind()
    )
}

/// The symbolic name of the errnos probes meet, else `errno N`.
fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EDOM => "EDOM",
        libc::ENOSYS => "ENOSYS",
        libc::EUSERS => "EUSERS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENXIO => "ENXIO",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// `SIGILL`, `SIGKILL`, ...
fn signal_name(signal: i32) -> String {
    crate::report::signal_name(signal)
}

// ---------------------------------------------------------------------------------------------
// The probe child.

/// How long a probe child may take before it is killed: each does a handful of syscalls.
const CHILD_DEADLINE: Duration = Duration::from_secs(5);

/// What a probe child does, all of it decided before the fork.
#[derive(Clone, Copy)]
struct ChildPlan<'a> {
    /// `unshare` flags, or 0.
    unshare: libc::c_int,
    /// Fork a grandchild that reports its pid (which is 1 in a new PID namespace).
    check_pid_one: bool,
    confine: Confine<'a>,
    /// A syscall to make last, with its first three arguments.
    call: Option<(i64, [usize; 3])>,
}

impl ChildPlan<'_> {
    const NOTHING: ChildPlan<'static> = ChildPlan {
        unshare: 0,
        check_pid_one: false,
        confine: Confine::Nothing,
        call: None,
    };
}

/// The seccomp mode a probe child enters.
#[derive(Clone, Copy)]
enum Confine<'a> {
    Nothing,
    Strict,
    Filter(&'a libc::sock_fprog),
}

/// What a probe child reports, as the first word of a record; the second is the value (a
/// syscall's return value, or the pid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
enum Stage {
    Unshare = 1,
    Fork = 2,
    Pid = 3,
    NoNewPrivs = 4,
    Seccomp = 5,
    Call = 6,
}

/// How a probe child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Exited(i32),
    Signal(i32),
    /// Still running at the deadline; killed.
    TimedOut,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(code) => write!(f, "exited with {code}"),
            Ended::Signal(signal) => write!(f, "died of {}", signal_name(*signal)),
            Ended::TimedOut => write!(f, "did not end within {} s", CHILD_DEADLINE.as_secs()),
        }
    }
}

/// A probe child's records and end.
struct ChildReport {
    records: Vec<(i64, i64)>,
    ended: Ended,
}

impl ChildReport {
    /// The value of the first record of `stage`.
    fn value(&self, stage: Stage) -> Option<i64> {
        self.records
            .iter()
            .find(|(s, _)| *s == stage as i64)
            .map(|&(_, v)| v)
    }

    /// The errno with which `stage` failed, if it did.
    fn failed_at(&self, stage: Stage) -> Option<i32> {
        self.value(stage).filter(|&v| v < 0).map(|v| -v as i32)
    }
}

/// Forks a child that carries out `plan`, waits for it (killing it at [`CHILD_DEADLINE`]) and
/// collects what it reported.
fn run_child(plan: &ChildPlan<'_>) -> io::Result<ChildReport> {
    let (from_child, to_parent) = sys::pipe()?;
    let out = to_parent.as_raw_fd();
    // SAFETY: the child runs only `child_main`, which makes raw syscalls on `plan` (plain data
    // built before the fork, on this stack) and `out`, and never returns.
    let (pid, pidfd) = match unsafe { sys::clone_with_pidfd(0) }? {
        Forked::Child => child_main(plan, out),
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop(to_parent);
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut timed_out = false;
    loop {
        let mut fds = [libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let left = deadline.saturating_duration_since(Instant::now());
        match sys::poll(&mut fds, left) {
            Ok(0) => {
                timed_out = true;
                // A child that is gone already is reaped below all the same.
                let _ = sys::pidfd_kill(pidfd.as_raw_fd());
                break;
            }
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                sys::end_child(pid, &pidfd);
                return Err(e);
            }
        }
    }
    let reaped = sys::wait4(pid)?;
    let status = reaped.status;
    let ended = if timed_out {
        Ended::TimedOut
    } else if libc::WIFSIGNALED(status) {
        Ended::Signal(libc::WTERMSIG(status))
    } else {
        Ended::Exited(libc::WEXITSTATUS(status))
    };
    // Whatever the child (and a grandchild, which the child reaped first) wrote is in the pipe.
    let mut bytes = Vec::new();
    loop {
        let pending = sys::pipe_pending(from_child.as_raw_fd())?;
        if pending == 0 || sys::read_append(from_child.as_raw_fd(), &mut bytes, pending)? == 0 {
            break;
        }
    }
    let records = bytes
        .chunks_exact(16)
        .map(|record| {
            let word =
                |at: usize| i64::from_ne_bytes(record[at..at + 8].try_into().unwrap_or([0; 8]));
            (word(0), word(8))
        })
        .collect();
    Ok(ChildReport { records, ended })
}

/// The probe child: carries out `plan` with raw syscalls only, reporting each result that
/// matters as a 16-byte record on `out`, and leaves with `SYS_exit`. `extern "C"`: a panic
/// (there is none to raise) aborts instead of unwinding into a copy of the parent's stack.
extern "C" fn child_main(plan: &ChildPlan<'_>, out: RawFd) -> ! {
    let record = |stage: Stage, value: isize| {
        let words = [stage as i64, value as i64];
        // SAFETY: writes 16 bytes from a local to a descriptor; strict mode allows write.
        unsafe { raw::syscall3(libc::SYS_write, out as usize, words.as_ptr() as usize, 16) };
    };
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // The kernel's `struct sigaction` for rt_sigaction(2): handler, flags, restorer, mask.
    let default_action: [usize; 4] = [libc::SIG_DFL, 0, 0, 0];
    // SAFETY: integer arguments or pointers to locals. Dies with its parent; never dumps core
    // (uretprobe's SIGILL would otherwise write the host's memory to disk); SIGILL takes its
    // default action, not a handler the host program may have installed.
    unsafe {
        let prctl = |op: i32, arg: usize| raw::syscall3(libc::SYS_prctl, op as usize, arg, 0);
        prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as usize);
        prctl(libc::PR_SET_DUMPABLE, 0);
        raw::syscall6(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_CORE as usize,
            &no_core as *const libc::rlimit as usize,
            0,
            0,
            0,
        );
        raw::syscall6(
            libc::SYS_rt_sigaction,
            libc::SIGILL as usize,
            default_action.as_ptr() as usize,
            0,
            8,
            0,
            0,
        );
    }
    if plan.unshare != 0 {
        // SAFETY: unshare takes integer flags; this child is single-threaded, as
        // CLONE_NEWUSER requires.
        let ret = unsafe { raw::syscall3(libc::SYS_unshare, plan.unshare as usize, 0, 0) };
        if ret < 0 {
            record(Stage::Unshare, ret);
            raw::exit(1);
        }
    }
    if plan.check_pid_one {
        // SAFETY: clone with no new stack continues on a copy of this one, as fork does; the
        // grandchild only makes raw syscalls and exits.
        let ret = unsafe { raw::syscall6(libc::SYS_clone, libc::SIGCHLD as usize, 0, 0, 0, 0, 0) };
        if ret < 0 {
            record(Stage::Fork, ret);
            raw::exit(1);
        }
        if ret == 0 {
            // SAFETY: getpid takes no arguments.
            let pid = unsafe { raw::syscall3(libc::SYS_getpid, 0, 0, 0) };
            record(Stage::Pid, pid);
            raw::exit(0);
        }
        let mut status: libc::c_int = 0;
        // SAFETY: waits for our own child, writing its status to a local.
        unsafe {
            raw::syscall6(
                libc::SYS_wait4,
                ret as usize,
                &mut status as *mut libc::c_int as usize,
                0,
                0,
                0,
                0,
            )
        };
    }
    match plan.confine {
        Confine::Nothing => {}
        Confine::Strict => {
            // SAFETY: integer arguments.
            let ret = unsafe {
                raw::syscall3(
                    libc::SYS_prctl,
                    libc::PR_SET_SECCOMP as usize,
                    libc::SECCOMP_MODE_STRICT as usize,
                    0,
                )
            };
            if ret < 0 {
                record(Stage::Seccomp, ret);
                raw::exit(1);
            }
        }
        Confine::Filter(program) => {
            // SAFETY: integer arguments.
            let ret = unsafe {
                raw::syscall6(
                    libc::SYS_prctl,
                    libc::PR_SET_NO_NEW_PRIVS as usize,
                    1,
                    0,
                    0,
                    0,
                    0,
                )
            };
            if ret < 0 {
                record(Stage::NoNewPrivs, ret);
                raw::exit(1);
            }
            // SAFETY: `program` points at a sock_fprog and instructions the parent keeps alive
            // (a copy of them, here); the kernel copies the program in.
            let ret = unsafe {
                raw::syscall3(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER as usize,
                    0,
                    program as *const libc::sock_fprog as usize,
                )
            };
            if ret < 0 {
                record(Stage::Seccomp, ret);
                raw::exit(1);
            }
        }
    }
    if let Some((nr, [a0, a1, a2])) = plan.call {
        // SAFETY: the calls planned take integers (or are given no memory to touch).
        let ret = unsafe { raw::syscall3(nr, a0, a1, a2) };
        record(Stage::Call, ret);
    }
    raw::exit(0)
}

/// `BPF_LD | BPF_W | BPF_ABS` of `seccomp_data.nr`.
fn bpf_load_nr() -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }
}

/// `BPF_JMP | BPF_JEQ | BPF_K`: skip `jt` instructions if the accumulator is `k`, else `jf`.
fn bpf_jump_if(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// `BPF_RET | BPF_K`.
fn bpf_ret(k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The `sock_fprog` of `program`, which must outlive it.
fn fprog(program: &[libc::sock_filter]) -> libc::sock_fprog {
    libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's machine: v1 controllers plus an empty v2 hierarchy.
    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
1:cpu:/
0::/
";

    #[test]
    fn hybrid_layout_has_v1_controllers_and_the_v2_hierarchy() {
        let layout = CgroupLayout::parse(HYBRID_MOUNTINFO, HYBRID_CGROUP);
        assert_eq!(layout.mode(), CgroupMode::Hybrid);
        assert_eq!(
            layout.v2,
            Some((
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ))
        );
        let found: Vec<(Vec<String>, PathBuf)> = layout
            .v1
            .iter()
            .map(|h| (h.controllers.clone(), h.dir.clone()))
            .collect();
        let want = |c: &str, d: &str| (vec![c.to_string()], PathBuf::from(d));
        assert_eq!(
            found,
            [
                want("cpu", "/sys/fs/cgroup/cpu"),
                want("memory", "/sys/fs/cgroup/memory/process_api/abc"),
                want("pids", "/sys/fs/cgroup/pids"),
                want("name=systemd", "/sys/fs/cgroup/systemd"),
            ]
        );
    }

    #[test]
    fn pure_v2_layout() {
        let mountinfo = "\
25 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        let cgroup = "0::/user.slice/user-1000.slice/session-2.scope\n";
        let layout = CgroupLayout::parse(mountinfo, cgroup);
        assert_eq!(layout.mode(), CgroupMode::Unified);
        assert_eq!(
            layout.v2,
            Some((
                PathBuf::from("/sys/fs/cgroup"),
                PathBuf::from("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope")
            ))
        );
        assert!(layout.v1.is_empty());
    }

    #[test]
    fn v1_only_layout_with_joined_controllers_and_a_mount_root() {
        // A container whose hierarchy is mounted from its own cgroup on.
        let mountinfo = "\
40 31 0:35 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup ro,cpu,cpuacct
41 31 0:36 /docker/abc /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
";
        let cgroup = "3:cpu,cpuacct:/docker/abc\n2:pids:/docker/abc/inner\n";
        let layout = CgroupLayout::parse(mountinfo, cgroup);
        assert_eq!(layout.mode(), CgroupMode::Legacy);
        assert_eq!(layout.v1.len(), 2);
        assert_eq!(layout.v1[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(
            layout.v1[0].dir,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(layout.v1[1].dir, PathBuf::from("/sys/fs/cgroup/pids/inner"));
    }

    #[test]
    fn no_cgroups_mounted() {
        let layout = CgroupLayout::parse("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n", "0::/\n");
        assert_eq!(layout.mode(), CgroupMode::None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn landlock_features_accumulate() {
        assert!(landlock_features(0).is_empty());
        assert_eq!(landlock_features(1), ["file system access"]);
        let six = landlock_features(6);
        assert!(six.contains(&"TCP bind and connect"));
        assert!(six.contains(&"scoping of signals and abstract UNIX sockets"));
        assert!(!six.contains(&"audit logging control"));
        assert_eq!(landlock_features(99).len(), LANDLOCK_FEATURES.len());
    }

    #[test]
    fn containment_follows_the_pid_namespace_probe() {
        let unavailable = NamespaceProbe::Unavailable {
            errno: libc::EPERM,
            errno_in_user_namespace: Some(libc::ENOSPC),
        };
        let cases = [
            (NamespaceProbe::Available, Containment::PidNamespace),
            (
                NamespaceProbe::InUserNamespace,
                Containment::PidNamespaceInUserNamespace,
            ),
            (unavailable, Containment::NoPidNamespace),
            (
                NamespaceProbe::ProbeFailed {
                    error: "x".to_string(),
                },
                Containment::NoPidNamespace,
            ),
        ];
        for (probe, want) in cases {
            let got = Containment::decide(&probe);
            assert_eq!(got, want, "{probe:?}");
            assert_eq!(
                got.contains_process_tree(),
                want != Containment::NoPidNamespace
            );
            assert_eq!(got.clone_flags().is_some(), got.contains_process_tree());
            assert!(got.admits_process_creation(true));
            assert_eq!(
                got.admits_process_creation(false),
                got.contains_process_tree()
            );
        }
        assert_eq!(
            Containment::PidNamespaceInUserNamespace.clone_flags(),
            Some((libc::CLONE_NEWPID | libc::CLONE_NEWUSER) as u64)
        );
    }

    #[test]
    fn a_broken_strict_mode_is_missing_and_a_broken_filter_mode_a_warning() {
        let refused = SeccompProbe::Refused { errno: libc::EPERM };
        assert_eq!(strict_check(&refused).status, Status::Missing);
        assert_eq!(filter_check(&refused).status, Status::Warning);
        assert_eq!(strict_check(&SeccompProbe::Works).status, Status::Ok);
    }

    #[test]
    fn lacking_seccomp_actions_are_named() {
        let some: Vec<String> = ["allow", "errno", "trap", "kill_process"]
            .map(String::from)
            .to_vec();
        let check = actions_check(Some(&some));
        assert_eq!(check.status, Status::Warning);
        assert!(
            check.detail.contains("log (SCMP_ACT_LOG)"),
            "{}",
            check.detail
        );
        assert!(check.detail.contains("user_notif"), "{}", check.detail);
        assert_eq!(actions_check(None).status, Status::Warning);
    }
}
