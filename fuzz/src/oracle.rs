//! The oracle applied after every fuzzed or property-tested run: the runner gave a report (never
//! an error or a panic), the report is consistent with itself, its limits and the kernel's facts,
//! and the host process is as it was: as many descriptors, no new child or zombie, and no file
//! in a watched directory that is the process's working directory while the worker runs.
//!
//! Shared word for word by the fuzz targets (`fuzz/src/lib.rs`) and the stable property tests
//! (`tests/properties.rs` includes this file with `#[path]`), so it uses only `std`, `libc` and
//! `bytejail`. Every check panics with a message naming the broken rule: libFuzzer records the
//! input that caused it, proptest shrinks it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytejail::{Outcome, Report, RunOptions};

/// How far past its timeout a run's wall time may go: the kill, the reap and a loaded machine.
pub const WALL_SLACK: Duration = Duration::from_secs(2);

/// How far the worker's CPU time (user + sys) may exceed the run's wall time. A single-threaded
/// worker cannot use more CPU than the time it lived; the slack only absorbs accounting rounding.
/// More would mean a second thread or process was running for the guest.
pub const CPU_SLACK: Duration = Duration::from_millis(20);

/// The signals a guest can die of. SIGKILL never appears in a `Crashed` outcome: the host
/// classifies it as a timeout, an output limit or a syscall violation.
pub const CRASH_SIGNALS: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
];

/// How many times [`Host::run`] runs a guest again when its wall time broke the bound, to tell
/// a machine that stalled (a loaded or overcommitted VM can stop a process for seconds) from a
/// runner that missed its deadline (which does so every time).
pub const STALL_RETRIES: usize = 2;

/// Whether the run ended within its timeout plus [`WALL_SLACK`].
pub fn within_deadline(report: &Report, options: &RunOptions) -> bool {
    report.wall <= options.limits.timeout + WALL_SLACK
}

/// Checks what a report says about itself against the limits the run had, all but the bound
/// on its wall time ([`within_deadline`]). Panics on the first broken rule.
pub fn check_report(report: &Report, code: &[u8], options: &RunOptions) {
    let limits = &options.limits;
    let context = || format!("{}\nreport: {report:?}", report.summary());

    assert!(
        report.output.len() <= limits.max_output,
        "kept {} bytes of output; the limit is {}\n{}",
        report.output.len(),
        limits.max_output,
        context()
    );
    assert_eq!(
        report.output_truncated,
        report.outcome == Outcome::OutputLimit,
        "output_truncated must be true exactly for output_limit\n{}",
        context()
    );
    assert!(
        report.user + report.sys <= report.wall + CPU_SLACK,
        "the worker used {:?} of CPU in {:?} of wall time: something else ran for it\n{}",
        report.user + report.sys,
        report.wall,
        context()
    );

    match &report.outcome {
        Outcome::Returned(_) | Outcome::SyscallViolation => {}
        Outcome::Exited(code) => assert!(
            (0..=255).contains(code),
            "exit code {code} is not a wait status byte\n{}",
            context()
        ),
        Outcome::Crashed { signal, fault } => {
            assert!(
                CRASH_SIGNALS.contains(signal),
                "crashed of signal {signal}; only {CRASH_SIGNALS:?} can end a guest\n{}",
                context()
            );
            if let Some(offset) = fault.as_ref().and_then(|fault| fault.code_offset) {
                assert!(
                    offset < code.len() as u64,
                    "fault at code offset {offset}, outside the {}-byte code\n{}",
                    code.len(),
                    context()
                );
            }
        }
        Outcome::Timeout => assert!(
            report.wall >= limits.timeout,
            "timeout after {:?}, before the {:?} deadline\n{}",
            report.wall,
            limits.timeout,
            context()
        ),
        Outcome::OutputLimit => assert_eq!(
            report.output.len(),
            limits.max_output,
            "output_limit must keep exactly max_output bytes\n{}",
            context()
        ),
        Outcome::CpuTimeLimit => assert!(
            limits.cpu_time.is_some(),
            "cpu_time_limit for a job without a CPU limit\n{}",
            context()
        ),
        // Only a profile worker has a memory cgroup; the profile_jobs attacker may fill it.
        Outcome::MemoryLimit => {}
        Outcome::Killed => panic!(
            "killed from outside bytejail, which nothing here does\n{}",
            context()
        ),
        // `Outcome` is non-exhaustive: an outcome added later needs its own check here.
        other => panic!(
            "an outcome the oracle has no check for: {other:?}\n{}",
            context()
        ),
    }
}

/// The host process as the oracle watches it: a directory that must stay empty, and the
/// process's working directory to come back to after each run.
///
/// The watched directory is the working directory only while [`Host::run`] runs, not for the
/// whole process: libFuzzer resolves `-dict`, corpus and reproducer paths relative to the
/// working directory after the fuzz target's init hook has run, so a permanent `chdir` would
/// break every relative path on its command line. The worker, forked inside `bytejail::run`,
/// starts in the watched directory all the same, so a guest that escaped and created a file
/// by a relative path would create it there.
///
/// Not thread-safe by design: the working directory belongs to the process. One thread runs
/// guests through a `Host` at a time (libFuzzer calls its target from one thread; the property
/// tests take a lock).
pub struct Host {
    watched: PathBuf,
    home: PathBuf,
}

/// What [`Host::snapshot`] records and [`Host::check_unchanged`] compares.
#[derive(Clone, Debug)]
pub struct HostState {
    /// Open descriptors as `fd -> target`, for the message; only their number is compared,
    /// since the runner may replace its arena (a new memfd under another number).
    fds: Vec<String>,
    /// Child processes (live or zombie) as `pid (comm)`. Usually none; a fuzzer's tools may
    /// keep one of their own (ASan's llvm-symbolizer), which must simply still be the same.
    children: Vec<String>,
}

impl Host {
    /// Creates the watched directory (empty, under the system temp directory) and makes this
    /// process a child subreaper, so that any process a guest managed to start would be
    /// reparented here, where [`Host::check_unchanged`] sees it, rather than to init.
    pub fn new() -> Host {
        let home = std::env::current_dir().expect("the working directory is readable");
        // A name taken already is left by an earlier process of the same pid that did not
        // drop its host (a fuzzer ended by its time limit): the next suffix is tried.
        let watched = loop {
            let watched = std::env::temp_dir().join(format!(
                "bytejail-oracle-{}-{}",
                std::process::id(),
                unique_suffix()
            ));
            match fs::create_dir(&watched) {
                Ok(()) => break watched,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("creating the watched directory {watched:?}: {e}"),
            }
        };
        become_subreaper();
        let host = Host { watched, home };
        // bytejail keeps one arena (a memfd) per thread between runs, and one empty pipe per
        // process for workers without input: make this thread's arena and the pipe exist
        // before the first snapshot, so that they do not count as leaks.
        host.run(&[0xc3], b"", &RunOptions::default());
        host
    }

    /// The directory that must stay empty.
    pub fn watched(&self) -> &Path {
        &self.watched
    }

    /// Runs `code` on `input` with the watched directory as the working directory, checks the
    /// report with [`check_report`] and [`within_deadline`], and returns it. Panics when the
    /// runner fails (fuzzed code and options within the limits must always give a report), on
    /// a report that breaks a rule, and on a wall time past the bound in [`STALL_RETRIES`] + 1
    /// runs in a row.
    pub fn run(&self, code: &[u8], input: &[u8], options: &RunOptions) -> Report {
        let mut late = Vec::new();
        loop {
            let result = {
                let _cwd = WorkingDirectory::enter(&self.watched, &self.home);
                bytejail::run(code, input, options)
            };
            let report = result.unwrap_or_else(|e| {
                panic!("bytejail::run failed instead of reporting: {e}\ncode: {code:02x?}")
            });
            check_report(&report, code, options);
            if within_deadline(&report, options) {
                return report;
            }
            late.push(report.wall);
            assert!(
                late.len() <= STALL_RETRIES,
                "the run took {late:?} in {} tries; the timeout is {:?} (+{WALL_SLACK:?} \
                 slack)\n{}\nreport: {report:?}",
                late.len(),
                options.limits.timeout,
                report.summary()
            );
            eprintln!(
                "oracle: a run took {:?} (timeout {:?}); running it again to tell a stalled \
                 machine from a missed deadline",
                report.wall, options.limits.timeout
            );
        }
    }

    /// Calls `f` with the watched directory as the working directory, as [`Host::run`] runs
    /// `bytejail::run`: for runs the oracle does not make itself (a `SameCode`'s workers are
    /// forked inside `f`, and start in the watched directory).
    pub fn in_watched<T>(&self, f: impl FnOnce() -> T) -> T {
        let _cwd = WorkingDirectory::enter(&self.watched, &self.home);
        f()
    }

    /// The host's state now. Take it before the runs it should be compared after.
    pub fn snapshot(&self) -> HostState {
        HostState {
            fds: open_fds(),
            children: children(),
        }
    }

    /// Panics unless the host is as `before` says: as many open descriptors, the same child
    /// processes (live or zombie), and nothing in the watched directory.
    pub fn check_unchanged(&self, before: &HostState) {
        let mut now = self.snapshot();
        // A descriptor that a background thread of the runner (a pool's refill thread, say)
        // has open for a moment is not a leak: a leaked one is still there a second later.
        let settle = std::time::Instant::now();
        while now.fds.len() != before.fds.len()
            && settle.elapsed() < std::time::Duration::from_secs(1)
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
            now = self.snapshot();
        }
        if now.fds.len() != before.fds.len() {
            panic!(
                "the host had {} open descriptors and now has {}\nbefore: {}\nafter:  {}",
                before.fds.len(),
                now.fds.len(),
                before.fds.join(", "),
                now.fds.join(", ")
            );
        }
        if now.children != before.children {
            panic!(
                "the host's child processes changed\nbefore: {:?}\nafter:  {:?}",
                before.children, now.children
            );
        }
        let entries: Vec<_> = fs::read_dir(&self.watched)
            .unwrap_or_else(|e| panic!("reading the watched directory {:?}: {e}", self.watched))
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect();
        assert!(
            entries.is_empty(),
            "files appeared in the watched directory {:?} (the worker's working directory): \
             {entries:?}",
            self.watched
        );
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::new()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Only an empty directory goes: anything in it is evidence of an escape.
        let _ = fs::remove_dir(&self.watched);
    }
}

/// Makes `to` the working directory until dropped, then goes back to `home`, also when the
/// run panics (libFuzzer writes its crash artifact after the panic unwinds, and a relative
/// `-artifact_prefix` must resolve from where it started).
struct WorkingDirectory<'a> {
    home: &'a Path,
}

impl<'a> WorkingDirectory<'a> {
    fn enter(to: &Path, home: &'a Path) -> Self {
        std::env::set_current_dir(to).unwrap_or_else(|e| panic!("chdir to {to:?}: {e}"));
        WorkingDirectory { home }
    }
}

impl Drop for WorkingDirectory<'_> {
    fn drop(&mut self) {
        if let Err(e) = std::env::set_current_dir(self.home) {
            panic!("chdir back to {:?}: {e}", self.home);
        }
    }
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)` - adopt orphaned descendants; see prctl(2).
#[allow(unsafe_code)]
fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory of ours.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };
    assert_eq!(
        ret,
        0,
        "prctl(PR_SET_CHILD_SUBREAPER): {}",
        std::io::Error::last_os_error()
    );
}

/// This process's children, live or zombie, as `pid (comm)`, sorted.
fn children() -> Vec<String> {
    // The cheap answer first: one syscall says whether there is any child at all.
    if !has_children() {
        return Vec::new();
    }
    let mut children = children_from_proc();
    children.sort_unstable();
    children
}

/// `waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT | __WALL)` - whether this process has any
/// child, live or zombie, of any exit signal (bytejail's workers have none); see waitid(2).
/// WNOWAIT leaves a zombie in place for the caller to see.
#[allow(unsafe_code)]
fn has_children() -> bool {
    // SAFETY: all-zero bytes are a valid siginfo_t (a plain C struct).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t for the kernel to fill.
    let ret = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL,
        )
    };
    if ret == 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ECHILD),
        "waitid(P_ALL): {err}"
    );
    false
}

/// Processes whose parent is this process, as `pid (comm)`, read from `/proc/*/stat`.
fn children_from_proc() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses; split after the last.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        // After the comm: state, then ppid.
        if rest.split_whitespace().nth(1) == Some(me.as_str()) {
            found.push(format!("{head})"));
        }
    }
    found
}

/// This process's open descriptors as `fd -> target` (including the one reading the list), but
/// the per-thread arenas' memfds: each host thread keeps one between runs and closes it when the
/// thread exits, which for a test harness thread can be just after the next test took its
/// snapshot. A leak would show in the pipes and pidfds every run opens.
fn open_fds() -> Vec<String> {
    let mut fds: Vec<(i32, String)> = fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd is readable")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            // One that is gone before it could be read was closed while the list was read:
            // a descriptor of a moment, not counted.
            let target = fs::read_link(entry.path()).ok()?.display().to_string();
            Some((fd, target))
        })
        .filter(|(_, target)| !target.starts_with("/memfd:bytejail-arena"))
        .collect();
    fds.sort_unstable();
    fds.into_iter()
        .map(|(fd, target)| format!("{fd} -> {target}"))
        .collect()
}
