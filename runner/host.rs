//! The host side of a run: prepare the worker's memory and pipes, fork, feed the input, collect
//! the output, enforce the limits, reap, and classify from what the kernel says.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::abi::{Registers, RunOptions, MAX_REGION, MIN_OPEN_FILES, MIN_STACK};
use crate::arena::{Arena, Need, Record};
use crate::error::{Error, InputError};
use crate::policy::Policy;
use crate::report::{Fault, Outcome, Report, ViolatingSyscall};
use crate::sys;
use crate::syscalls::Abi;
use crate::worker::{self, layout::*, FixedMap, Protect, Walls, WorkerPlan};
use crate::zygote::Zygote;

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
    run_via(code, input, options, None)
}

/// [`run`], with the worker (and the diagnosis's) forked by `via` when given.
pub(crate) fn run_via(
    code: &[u8],
    input: &[u8],
    options: &RunOptions,
    via: Option<&Zygote>,
) -> Result<Report, Error> {
    validate(code, input, options)?;
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
    via: Option<&Zygote>,
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
    via: Option<&Zygote>,
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

/// Whether an arena may serve another job after a worker under `policy` used it: only where
/// the guest can call nothing but `read`, `write`, `exit` and `rt_sigreturn`, so that it can
/// change nothing it maps (its code and the blob stay read+execute, the file keeps its pages
/// and size) and leaves no process behind; the host rewrites the rest before the next job.
/// Under a profile every worker gets a fresh arena, whatever the profile allows.
pub(crate) fn arena_reusable(policy: &Policy) -> bool {
    matches!(policy, Policy::Strict | Policy::StrictBpf)
}

fn run_in_arena(
    arena: &mut Arena,
    code: &[u8],
    input: &[u8],
    options: &RunOptions,
    via: Option<&Zygote>,
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
    };
    let worker = spawn(arena, maps, protects, options, cpu, fds, via)?;
    Ok(drive(arena, worker, code, input, options, start, None)?.report)
}

/// What a worker's fd 0 is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdin {
    /// A pipe of its own, for input written after the fork (and a pool worker's go byte).
    Pipe,
    /// A pipe without a writer: reads give EOF at once. Under `strict` and `strict-bpf` the
    /// process's shared one ([`sys::eof_pipe`]); under a profile a pipe of its own.
    Eof,
}

/// The worker's descriptors besides its output: what fd 0 is, and the control pipes it has
/// (the go pipe's read end for same-code workers, the done pipe's write end for same-code and
/// pool workers).
pub(crate) struct WorkerFds<'a> {
    pub stdin: Stdin,
    pub go: Option<&'a OwnedFd>,
    pub done: Option<&'a OwnedFd>,
}

/// A forked worker: its pid and pidfd, and the host's ends of its pipes (the output's read
/// end non-blocking; the input's write end, with [`Stdin::Pipe`], made so once there is input
/// to feed).
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    pub input_w: Option<OwnedFd>,
    /// The host's own copy of the input's read end, kept open so that the input pipe always
    /// has a reader: no write to it (the go byte, the input) can raise SIGPIPE or fail with
    /// EPIPE. Input a worker never reads stays in the pipe, and the run ends on its pidfd.
    pub input_r: Option<OwnedFd>,
    pub output_r: OwnedFd,
    /// The host's own copy of the output's write end, kept open so that the read end never
    /// reports EOF: the worker's end is seen once, on its pidfd, and the host wakes only then
    /// (and for output), not also when the dying worker's descriptors close.
    pub output_w: OwnedFd,
    /// The job's cgroups, removed once the worker is reaped.
    pub cgroup: Option<crate::cgroup::JobCgroup>,
    /// The worker's tracer, when it is traced (see [`crate::tracer`]).
    pub trace: Option<crate::tracer::Trace>,
}

/// Creates the pipes and forks a worker into `arena` (see [`Arena::prepare_worker`]) with
/// `fds`: from this thread, or through `via`.
pub(crate) fn spawn(
    arena: &Arena,
    maps: [FixedMap; 5],
    protects: [Protect; 1],
    options: &RunOptions,
    cpu_limit_secs: u64,
    fds: WorkerFds<'_>,
    via: Option<&Zygote>,
) -> Result<Spawned, Error> {
    // The shared empty pipe only where the guest can do nothing with it but read and fail to
    // write: a profile may allow fcntl or flock, which would reach every other worker's fd 0.
    let shared_eof = matches!(options.policy, Policy::Strict | Policy::StrictBpf);
    let (input_r, input_w) = match fds.stdin {
        Stdin::Eof if shared_eof => (None, None),
        Stdin::Eof => {
            let (r, w) = sys::pipe().map_err(|e| Error::io("creating the input pipe", e))?;
            drop(w); // no writer: EOF at once
            (Some(r), None)
        }
        Stdin::Pipe => {
            let (r, w) = sys::pipe().map_err(|e| Error::io("creating the input pipe", e))?;
            (Some(r), Some(w))
        }
    };
    let input_fd = match &input_r {
        Some(r) => r.as_raw_fd(),
        None => sys::eof_pipe().map_err(|e| Error::io("creating the empty input pipe", e))?,
    };
    let (output_r, output_w) = sys::pipe().map_err(|e| Error::io("creating the output pipe", e))?;
    sys::set_nonblocking(output_r.as_raw_fd())
        .map_err(|e| Error::io("fcntl on the output pipe", e))?;
    let control = [fds.go, fds.done];
    debug_assert!(arena.mapped_here(), "spawning into another process's arena");
    let walls = walls(options)?;
    let cgroup = job_cgroup(options)?;
    let cgroup_procs = match &cgroup {
        Some(cgroup) => cgroup
            .procs_paths()
            .map_err(|e| Error::io("making the job's cgroups", e))?,
        None => [[0; crate::cgroup::PROCS_PATH_MAX]; crate::cgroup::PROCS_SLOTS],
    };
    let plan = WorkerPlan {
        host_pid: arena.owner_pid(),
        input_fd,
        output_fd: output_w.as_raw_fd(),
        control_fds: control.map(|fd| fd.map_or(-1, |fd| fd.as_raw_fd())),
        region: arena.region_addr(),
        maps,
        protects,
        cpu_limit_secs,
        rseq: sys::rseq_registration(),
        scrub: options.scrub,
        filter_mode: options.policy != Policy::Strict,
        cap_last: cap_last(),
        walls,
        rlimits: [
            (libc::RLIMIT_FSIZE, options.limits.max_file_size),
            (libc::RLIMIT_NOFILE, options.limits.max_open_files),
        ],
        cgroup_procs,
        traced: options.trace,
    };
    // A traced worker waits at its gate until its tracer holds it.
    arena.set_trace_gate(if options.trace { 0 } else { GATE_UNTRACED });
    let (pid, pidfd) = match via {
        None => worker::spawn(&plan).map_err(|e| Error::io("forking the worker", e))?,
        Some(zygote) => {
            let mut fds = vec![arena.fd(), input_fd, output_w.as_raw_fd()];
            fds.extend(control.into_iter().flatten().map(|fd| fd.as_raw_fd()));
            zygote
                .spawn_worker(&plan, &fds)
                .map_err(|e| Error::io("forking the worker through the zygote", e))?
        }
    };
    let trace = if options.trace {
        // Untraced if the tracer cannot attach (another tracer holds the worker, or this
        // host may not trace it): the report then marks its details unverified.
        let init = plan.walls.pid_namespace();
        let trace = crate::tracer::seize(pid, init).ok();
        arena.set_trace_gate(if trace.is_some() {
            GATE_TRACED
        } else {
            GATE_UNTRACED
        });
        trace
    } else {
        None
    };
    Ok(Spawned {
        pid,
        pidfd,
        input_w,
        input_r,
        output_r,
        output_w,
        cgroup,
        trace,
    })
}

/// Whether a worker set up for `template` applies exactly the limits `options` asks for: those
/// the worker sets on itself before the guest runs (memory, processes, file size, open files,
/// the CPU backstop), so that a parked or reused worker never runs a job under another job's.
pub(crate) fn worker_limits_match(options: &RunOptions, template: &RunOptions) -> bool {
    let (a, b) = (&options.limits, &template.limits);
    a.memory == b.memory
        && a.max_procs == b.max_procs
        && a.max_file_size == b.max_file_size
        && a.max_open_files == b.max_open_files
        && a.cpu_time == b.cpu_time
        && options.trace == template.trace
        && options.allow_read == template.allow_read
        && options.allow_write == template.allow_write
        && options.allow_uncontained == template.allow_uncontained
}

/// The job's cgroups (see [`crate::cgroup`]): a pids cgroup when a profile job may have more
/// than one process (required: refused without one), and a memory cgroup for every profile
/// job where the memory controller can be had (its limit: the job's memory, plus room for
/// what the kernel keeps for the worker: page tables, its stack, socket buffers). Strict
/// workers need neither: they can neither fork nor hold memory outside their mappings.
fn job_cgroup(options: &RunOptions) -> Result<Option<crate::cgroup::JobCgroup>, Error> {
    use crate::cgroup::{available, Controller, JobCgroup};
    if arena_reusable(&options.policy) {
        return Ok(None);
    }
    let max_procs = options.limits.max_procs;
    // (Without a PID namespace, `walls` let more than one process through only with
    // `allow_uncontained`; the process limit then still comes from this cgroup.)
    let pids = (max_procs > 1).then_some(max_procs);
    if pids.is_some() {
        available(Controller::Pids).map_err(|why| {
            Error::Input(InputError::Invalid(format!(
                "--max-procs {max_procs} needs a pids cgroup for the job, and {why} (see \
                 bytejail doctor)"
            )))
        })?;
    }
    const KERNEL_ROOM: u64 = 32 << 20;
    let memory = available(Controller::Memory)
        .is_ok()
        .then(|| (options.limits.memory as u64).saturating_add(KERNEL_ROOM));
    // The CPU limit is for the job's whole process tree: its cgroup counts every process.
    let cpu = options.limits.cpu_time.is_some() && available(Controller::Cpu).is_ok();
    if pids.is_none() && memory.is_none() && !cpu {
        return Ok(None);
    }
    JobCgroup::new(pids, memory, cpu)
        .map(Some)
        .map_err(|e| Error::io("making the job's cgroups", e))
}

/// The namespaces this process can give workers, asked once with a child that is forked into
/// them and exits at once: [`NAMESPACE_FLAGS`] (root, or CAP_SYS_ADMIN), else the same inside
/// a user namespace of the worker's own, with a network namespace of its own too (a host that
/// is not root, where unprivileged user namespaces are allowed); `None` without either.
pub(crate) fn namespace_flags() -> Option<usize> {
    static FLAGS: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *FLAGS.get_or_init(|| {
        [NAMESPACE_FLAGS, USER_NAMESPACE_FLAGS]
            .into_iter()
            .find(|&flags| sys::can_clone_with(flags))
    })
}

/// `/proc/self/uid_map` and `gid_map` for a worker in a user namespace of its own: the host's
/// effective uid and gid (which an unprivileged process may map, and only those) mapped to
/// themselves, read once from `/proc/self/status`.
fn id_maps() -> [[u8; 32]; 2] {
    static MAPS: std::sync::OnceLock<[[u8; 32]; 2]> = std::sync::OnceLock::new();
    *MAPS.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        // `Uid:` and `Gid:` list the real, effective, saved and file-system ids.
        let effective = |key: &str| -> u32 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|id| id.parse().ok())
                .unwrap_or(u32::MAX) // no map: the worker's set-up fails and says so
        };
        let mut maps = [[0u8; 32]; 2];
        for (map, key) in maps.iter_mut().zip(["Uid:", "Gid:"]) {
            let id = effective(key);
            if id != u32::MAX {
                let text = format!("{id} {id} 1\n");
                map[..text.len()].copy_from_slice(text.as_bytes());
            }
        }
        maps
    })
}

/// A profile worker's namespaces: it is init of its own PID namespace (its whole process tree
/// dies with it, also when the host dies), with IPC objects and mounts of its own.
const NAMESPACE_FLAGS: usize =
    (libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWNS) as usize;

/// The same for a host that is not root: a user namespace first, in which the worker may make
/// the others, and a network namespace per worker (it could not join the shared one, which
/// belongs to another user namespace).
const USER_NAMESPACE_FLAGS: usize =
    NAMESPACE_FLAGS | (libc::CLONE_NEWUSER | libc::CLONE_NEWNET) as usize;

/// The walls a worker under `options.policy` gets besides seccomp. Strict mode and strict-bpf
/// need none (the guest can call nothing that would reach past them); a profile worker gets
/// namespaces (where this process can make them), the shared empty network namespace, and a
/// Landlock domain that grants no file, no TCP port, and no signal or abstract socket beyond
/// itself.
pub(crate) fn walls(options: &RunOptions) -> Result<Walls, Error> {
    let mut walls = Walls {
        host_pidfd: -1,
        netns_fd: -1,
        ..Walls::default()
    };
    if arena_reusable(&options.policy) {
        if !options.allow_read.is_empty() || !options.allow_write.is_empty() {
            return Err(Error::Input(InputError::Invalid(
                "--allow-read and --allow-write grant paths to a guest under a profile \
                 (--policy FILE.json); under strict mode it can open no file: nothing to grant"
                    .into(),
            )));
        }
        return Ok(walls);
    }
    if let Some(flags) = namespace_flags() {
        walls.clone_flags = flags;
        walls.host_pidfd =
            sys::own_pidfd().map_err(|e| Error::io("opening a pidfd of the host", e))?;
        if flags & libc::CLONE_NEWNET as usize == 0 {
            walls.netns_fd = sys::empty_netns().unwrap_or(-1);
        }
        if flags & libc::CLONE_NEWUSER as usize != 0 {
            walls.id_maps = id_maps();
        }
    } else if options.limits.max_procs > 1 && !options.allow_uncontained {
        // Without a PID namespace, processes a guest starts are not killed with its worker:
        // they could outlive the job and bytejail itself.
        return Err(Error::Input(InputError::Invalid(format!(
            "--max-procs {} needs a PID namespace for the worker, which this process cannot \
             create, so processes the guest starts could outlive the job and bytejail (run as \
             root or allow unprivileged user namespaces; --allow-uncontained to run it anyway; \
             see bytejail doctor)",
            options.limits.max_procs
        ))));
    }
    walls.landlock = landlock_masks(sys::landlock_abi());
    walls.grants = grants(options, walls.landlock[0])?;
    Ok(walls)
}

/// The paths `options` grants the guest, checked (see [`crate::bounds::check_grants`]), with
/// the Landlock rights each rule gives out of `handled` (the file rights the ruleset handles).
fn grants(
    options: &RunOptions,
    handled: u64,
) -> Result<[worker::Grant; crate::abi::MAX_GRANTS], Error> {
    // Never EXECUTE (bit 0): a granted file is data, not a program.
    const WRITE_FILE: u64 = 1 << 1;
    const READ_FILE: u64 = 1 << 2;
    const READ_DIR: u64 = 1 << 3;
    const REMOVE_DIR: u64 = 1 << 4;
    const REMOVE_FILE: u64 = 1 << 5;
    const MAKE_DIR: u64 = 1 << 7;
    const MAKE_REG: u64 = 1 << 8;
    const TRUNCATE: u64 = 1 << 14;
    let invalid = |e: crate::bounds::BoundError| Error::Input(InputError::Invalid(e.to_string()));
    crate::bounds::check_grants(&options.allow_read, &options.allow_write).map_err(invalid)?;
    let mut grants = [worker::Grant::default(); crate::abi::MAX_GRANTS];
    let asked = (options.allow_read.iter().map(|p| (p, false)))
        .chain(options.allow_write.iter().map(|p| (p, true)));
    for (grant, (path, write)) in grants.iter_mut().zip(asked) {
        let path = crate::bounds::check_grant(path).map_err(invalid)?;
        let dir = path.is_dir();
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        grant.path[..bytes.len()].copy_from_slice(bytes);
        grant.dir = dir;
        grant.write = write;
        let access = match (dir, write) {
            (false, false) => READ_FILE,
            (false, true) => READ_FILE | WRITE_FILE | TRUNCATE,
            (true, false) => READ_FILE | READ_DIR,
            (true, true) => {
                READ_FILE
                    | READ_DIR
                    | WRITE_FILE
                    | TRUNCATE
                    | REMOVE_DIR
                    | REMOVE_FILE
                    | MAKE_DIR
                    | MAKE_REG
            }
        };
        grant.access = access & handled;
    }
    Ok(grants)
}

/// Landlock's handled rights for ABI `abi` (files, TCP, scopes): everything it knows.
fn landlock_masks(abi: u32) -> [u64; 3] {
    if abi == 0 {
        return [0; 3];
    }
    // ABI 1: execute .. make_sym (13 rights); 2: refer; 3: truncate; 5: ioctl_dev.
    let mut fs = (1u64 << 13) - 1;
    for (since, bit) in [(2, 13), (3, 14), (5, 15)] {
        if abi >= since {
            fs |= 1 << bit;
        }
    }
    // ABI 4: bind_tcp, connect_tcp. ABI 6: abstract unix sockets and signals scoped.
    let net = if abi >= 4 { 0b11 } else { 0 };
    let scoped = if abi >= 6 { 0b11 } else { 0 };
    [fs, net, scoped]
}

/// Wakes a parked worker with its go byte. `false` when the worker is gone (killed from
/// outside while parked, say): it is then reaped here, its guest never ran, and the job must
/// run elsewhere.
pub(crate) fn wake(worker: &Spawned) -> bool {
    let mut fds = [pollfd(worker.pidfd.as_raw_fd(), libc::POLLIN)];
    let exited = sys::poll(&mut fds, Duration::ZERO).map_or(true, |_| fds[0].revents != 0);
    // The pipe is empty and the worker waits for exactly this byte: it always fits, and the
    // pipe has a reader (`Spawned::input_r`).
    let woken = !exited
        && worker
            .input_w
            .as_ref()
            .is_some_and(|w| matches!(sys::write(w.as_raw_fd(), &[1]), Ok(1)));
    if !woken {
        sys::end_child(worker.pid, &worker.pidfd);
    }
    woken
}

/// A pool worker's done pipe, watched while it runs its job: the sequence number its "done"
/// carries, and its CPU clock before the job (once it had parked).
pub(crate) struct DoneWatch<'a> {
    pub fd: &'a OwnedFd,
    pub seq: u64,
    pub cpu_before: Duration,
}

/// A worker that said "done" and was left to end: the caller kills and reaps it, off the job's
/// clock, and closes the host's ends of its pipes then (the input's read end, the output's
/// ends).
pub(crate) struct Lingering {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    _pipes: (Option<OwnedFd>, OwnedFd, OwnedFd),
    /// Dropped after the worker is ended and reaped (fields drop after `end`'s body).
    _cgroup: Option<crate::cgroup::JobCgroup>,
}

impl Lingering {
    pub(crate) fn end(self) {
        sys::end_child(self.pid, &self.pidfd);
    }
}

/// What [`drive`] gives back: the report, and the worker if it still lives.
pub(crate) struct Driven {
    pub report: Report,
    pub lingering: Option<Lingering>,
}

/// Runs one job in a spawned worker (woken already, if it was parked): writes the input,
/// collects the output, enforces the limits from `start`, reaps, classifies. With `done`, a
/// guest that returns is reported as soon as the worker says so, and the worker is handed back
/// to be ended and reaped later (see [`crate::pool`]).
pub(crate) fn drive(
    arena: &Arena,
    worker: Spawned,
    code: &[u8],
    input: &[u8],
    options: &RunOptions,
    start: Instant,
    done: Option<DoneWatch<'_>>,
) -> Result<Driven, Error> {
    let Spawned {
        pid,
        pidfd,
        input_w,
        input_r,
        output_r,
        output_w,
        cgroup,
        trace,
    } = worker;
    // No input: fd 0 is at EOF at once (the shared empty pipe, or this pipe's only writer
    // closes here). Else the input is written without ever blocking.
    let input_w = match input_w {
        Some(input_w) if !input.is_empty() => {
            // A larger pipe saves wake-ups for large inputs.
            if input.len() > 64 << 10 {
                sys::grow_pipe(input_w.as_raw_fd(), input.len());
            }
            sys::set_nonblocking(input_w.as_raw_fd())
                .map_err(|e| Error::io("fcntl on the input pipe", e))?;
            Some(input_w)
        }
        _ => None,
    };
    let mut feeder = InputFeeder {
        fd: input_w,
        input,
        written: 0,
    };
    let confirm = || arena.record().state == STATE_RETURNED;
    let control = done.as_ref().map(|done| Control {
        fd: done.fd,
        seq: done.seq,
        confirm: &confirm,
    });
    let cpu_before = done.as_ref().map(|done| done.cpu_before);
    let cpu_watch = CpuWatch::new(pid, options, cpu_before.unwrap_or_default())
        .map(|watch| watch.whole_tree(cgroup.as_ref()));
    let watch = watch_worker(
        &pidfd,
        &output_r,
        &mut feeder,
        control.as_ref(),
        options,
        start,
        cpu_watch,
    );
    let watch = match (watch, cpu_before) {
        (Ok(watch), Some(cpu_before)) if watch.done && watch.killed.is_none() => {
            // The guest returned: its report needs nothing more from the worker.
            let cpu = cpu_clock(pid).saturating_sub(cpu_before);
            let report = report_returned(arena, watch.output, start, cpu);
            if guest_may_signal(options) {
                // Under a profile the guest may have started processes (or claimed "done" and
                // run on): the job is reported only once its worker, and with it (init of its
                // PID namespace) every process of the job, is dead and reaped.
                sys::end_child(pid, &pidfd);
                drop((input_r, output_r, output_w, cgroup));
                return Ok(Driven {
                    report,
                    lingering: None,
                });
            }
            let lingering = Lingering {
                pid,
                pidfd,
                _pipes: (input_r, output_r, output_w),
                _cgroup: cgroup,
            };
            return Ok(Driven {
                report,
                lingering: Some(lingering),
            });
        }
        (watch, _) => watch,
    };
    if watch.is_err() {
        // The runner failed mid-run: the worker must not outlive the call.
        let _ = sys::pidfd_kill(pidfd.as_raw_fd());
    }
    // Under a profile the guest may exit 127 or signal itself: a setup failure is believed
    // only when the kernel says the worker never entered seccomp.
    let setup_failed = guest_may_signal(options) && setup_failed_unreaped(arena, pid);
    let reaped = sys::reap(pid, &pidfd).map_err(|e| Error::io("reaping the worker", e))?;
    let wall = start.elapsed();
    // Complete: the tracer recorded every stop before it let the worker go on to its end.
    let facts = trace.as_ref().map(crate::tracer::Trace::take);
    let oom_killed = cgroup.as_ref().is_some_and(|c| c.oom_killed());
    drop((pidfd, input_r, output_w, cgroup));
    if setup_failed {
        return Err(setup_error(&arena.record()));
    }
    let cpu_limit = cpu_limit_secs(options);
    let mut watch = watch?;
    watch.oom_killed = oom_killed;
    watch.facts = facts;
    let report = report_reaped(
        &reaped,
        watch,
        arena,
        code,
        cpu_limit,
        wall,
        cpu_before,
        &options.policy,
    )?;
    Ok(Driven {
        report,
        lingering: None,
    })
}

/// The report of a job whose worker said "done" and still lives (a pool or same-code worker):
/// the registers the trampoline recorded, the output read so far, the wall time from `start`,
/// and as `user` the CPU time the worker used for the job, `cpu` (user and system together:
/// see [`cpu_clock`]).
pub(crate) fn report_returned(
    arena: &Arena,
    output: Vec<u8>,
    start: Instant,
    cpu: Duration,
) -> Report {
    let wall = start.elapsed();
    let record = arena.record();
    Report {
        outcome: Outcome::Returned(Registers::from_array(record.gpr, record.rflags)),
        output,
        output_truncated: false,
        wall,
        user: cpu,
        sys: Duration::ZERO,
        max_rss_kib: 0,
        syscall: None,
    }
}

/// The CPU time a live (or not yet reaped) worker has used so far, user and system together,
/// from the scheduler's clock; zero if the clock cannot be read.
pub(crate) fn cpu_clock(pid: libc::pid_t) -> Duration {
    sys::process_cpu_time(pid).unwrap_or_default()
}

/// The report of a reaped worker, classified from its wait status (see [`classify`]). A fresh
/// worker's CPU time is all of it, split as the kernel splits it; with `cpu_before` (a parked
/// worker: its set-up and earlier inputs), it is what the worker used after that, user and
/// system together, as [`report_returned`] counts it.
#[allow(clippy::too_many_arguments)] // what the kernel said, what the host saw, and the job's
pub(crate) fn report_reaped(
    reaped: &sys::Reaped,
    watch: Watch,
    arena: &Arena,
    code: &[u8],
    cpu_limit_secs: u64,
    wall: Duration,
    cpu_before: Option<Duration>,
    policy: &Policy,
) -> Result<Report, Error> {
    let (outcome, syscall) = classify(
        reaped,
        &watch,
        &arena.record(),
        arena.code_addr() as u64,
        code,
        cpu_limit_secs,
        policy,
    )?;
    let (utime, stime) = (
        timeval(reaped.rusage.ru_utime),
        timeval(reaped.rusage.ru_stime),
    );
    let (user, sys) = match cpu_before {
        Some(before) => ((utime + stime).saturating_sub(before), Duration::ZERO),
        None => (utime, stime),
    };
    Ok(Report {
        outcome,
        output: watch.output,
        output_truncated: watch.truncated,
        wall,
        user,
        sys,
        max_rss_kib: reaped.rusage.ru_maxrss.max(0) as u64,
        syscall,
    })
}

/// Whether a worker that has ended (but is not reaped yet) ended because its setup failed: it
/// recorded the failure, and the kernel says it never entered seccomp (`Seccomp: 0` in its
/// status), so no guest ran that could have written the record or raised the signal. A
/// profile worker needs this: as init of its PID namespace it cannot kill itself with
/// [`worker::SETUP_FAILED_SIGNAL`] (it exits 127 instead), and without a PID namespace its guest
/// may be allowed to raise that signal or exit 127 itself.
fn setup_failed_unreaped(arena: &Arena, pid: libc::pid_t) -> bool {
    arena.record().state == STATE_SETUP_FAILED && sys::seccomp_mode(pid) == Some(0)
}

/// Whether the guest can raise [`worker::SETUP_FAILED_SIGNAL`] or exit 127 on its own: under a
/// profile, which may allow `kill` and `exit_group`.
fn guest_may_signal(options: &RunOptions) -> bool {
    !arena_reusable(&options.policy)
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`), read
/// once; 63 (every bit of the 64-bit sets) if unreadable.
fn cap_last() -> u32 {
    static CAP_LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CAP_LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63)
    })
}

/// `RLIMIT_CPU` for the worker: the timeout rounded up, plus a margin, so that it only fires
/// when the host failed to kill at the deadline.
pub(crate) fn cpu_limit_secs(options: &RunOptions) -> u64 {
    let backstop = options.limits.timeout.as_secs() + 2;
    match options.limits.cpu_time {
        // The host kills at the CPU limit itself (see [`CpuWatch`]); this is its backstop.
        Some(cpu) => backstop.min(cpu.as_secs() + 2),
        None => backstop,
    }
}

/// The host's watch on a job's CPU time, when the job has a CPU limit: the job's CPU time is
/// read whenever the poll loop wakes, and the loop wakes at least as often as the rest of the
/// budget could run out. The job's CPU time is its cgroup's (every process of the job) where
/// it has one for CPU accounting (see [`crate::cgroup`]), else the worker's CPU clock (all its
/// threads; processes it starts are not counted then, as `bytejail doctor` says).
#[derive(Clone, Copy)]
pub(crate) struct CpuWatch<'a> {
    pid: libc::pid_t,
    budget: Duration,
    /// What the worker had used before the job (a parked worker's set-up, earlier inputs).
    before: Duration,
    /// The job's CPU accounting cgroup, with its usage and the worker's clock when the watch
    /// began: the job's CPU is the cgroup's since then plus the worker's own up to then.
    tree: Option<(&'a crate::cgroup::JobCgroup, Duration, Duration)>,
}

impl<'a> CpuWatch<'a> {
    pub(crate) fn new(pid: libc::pid_t, options: &RunOptions, before: Duration) -> Option<Self> {
        options.limits.cpu_time.map(|budget| CpuWatch {
            pid,
            budget,
            before,
            tree: None,
        })
    }

    /// Watches the CPU time of the job's whole process tree through `cgroup`, when it has a
    /// CPU accounting cgroup.
    pub(crate) fn whole_tree(self, cgroup: Option<&'a crate::cgroup::JobCgroup>) -> Self {
        let tree = cgroup.and_then(|cgroup| {
            let usage = cgroup.cpu_usage()?;
            Some((cgroup, usage, cpu_clock(self.pid)))
        });
        CpuWatch { tree, ..self }
    }

    /// The CPU time left, zero once the budget is spent.
    fn left(&self) -> Duration {
        let own = |now: Duration| now.saturating_sub(self.before);
        let used = match self.tree {
            Some((cgroup, usage_then, clock_then)) => match cgroup.cpu_usage() {
                Some(usage) => usage.saturating_sub(usage_then) + own(clock_then),
                None => own(cpu_clock(self.pid)),
            },
            None => own(cpu_clock(self.pid)),
        };
        self.budget.saturating_sub(used)
    }
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

/// Writes the input to the worker's fd 0 without ever blocking; closes it when done.
pub(crate) struct InputFeeder<'a> {
    pub fd: Option<OwnedFd>,
    pub input: &'a [u8],
    pub written: usize,
}

impl InputFeeder<'_> {
    /// Writes as much as the pipe takes. A guest that stops reading (or ends) leaves the rest
    /// in the pipe, which the host's own read end (`Spawned::input_r`) keeps open: never EPIPE.
    fn pump(&mut self) -> std::io::Result<()> {
        while let Some(fd) = &self.fd {
            if self.written == self.input.len() {
                self.fd = None; // EOF for the guest
                break;
            }
            match sys::write(fd.as_raw_fd(), &self.input[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What the host saw while the worker ran.
pub(crate) struct Watch {
    pub output: Vec<u8>,
    pub truncated: bool,
    /// Why the host killed the worker, if it did.
    pub killed: Option<Kill>,
    /// A same-code worker said the input is done (and still lives, parked for the next one).
    pub done: bool,
    /// The worker was under strict mode, which kills a violation with SIGKILL (filters trap).
    pub strict: bool,
    /// The job's CPU limit, if it has one.
    pub cpu_time: Option<Duration>,
    /// The guest may raise any signal itself (see [`guest_may_signal`]).
    pub guest_may_signal: bool,
    /// The kernel's OOM killer ended a process of the job for its memory cgroup's limit.
    pub oom_killed: bool,
    /// What the tracer saw, for a traced worker (set once it is reaped).
    pub facts: Option<crate::tracer::Facts>,
    /// The job may have more than one process (`Limits::max_procs` above 1): another of its
    /// processes could have queued the worker a signal with any details.
    pub many_procs: bool,
}

/// A same-code worker's done pipe, watched for the "done" message of input `seq`: the input
/// is done when the last 8 bytes read from the pipe are `seq` and `confirm` agrees (the record
/// says returned). A guest can write to the pipe too; what it writes only ever delays its own
/// "done" (to its timeout) or claims a return it could have made anyway.
pub(crate) struct Control<'a> {
    pub fd: &'a OwnedFd,
    pub seq: u64,
    pub confirm: &'a dyn Fn() -> bool,
}

impl Control<'_> {
    /// Reads what is waiting (a bounded amount: a guest may keep writing); true once the
    /// bytes read so far end with the done message.
    fn done(&self, tail: &mut [u8; 8]) -> std::io::Result<bool> {
        let mut chunk = [0u8; 512];
        for _ in 0..64 {
            match sys::read(self.fd.as_raw_fd(), &mut chunk) {
                Ok(0) => return Ok(false), // the worker is gone; its pidfd says how
                Ok(n) => {
                    let mut joined = [0u8; 8 + 512];
                    joined[..8].copy_from_slice(tail);
                    joined[8..8 + n].copy_from_slice(&chunk[..n]);
                    tail.copy_from_slice(&joined[n..n + 8]);
                    if n < chunk.len() {
                        break; // the pipe had no more
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(*tail == self.seq.to_le_bytes() && (self.confirm)())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    Deadline,
    OutputLimit,
    CpuTime,
    Cancelled,
}

/// The poll loop: feed input, collect output, kill at the deadline or past the output limit,
/// return once the worker has exited (its pidfd is readable), been killed, or (a same-code
/// worker) said on `control` that the input is done.
pub(crate) fn watch_worker(
    pidfd: &OwnedFd,
    output_r: &OwnedFd,
    feeder: &mut InputFeeder<'_>,
    control: Option<&Control<'_>>,
    options: &RunOptions,
    start: Instant,
    cpu: Option<CpuWatch<'_>>,
) -> Result<Watch, Error> {
    let deadline = start + options.limits.timeout;
    let max_output = options.limits.max_output;
    let mut collector = OutputCollector {
        fd: Some(output_r.as_raw_fd()),
        output: Vec::new(),
        max: max_output,
    };
    let mut done = false;
    let mut tail = [0u8; 8];
    feeder
        .pump()
        .map_err(|e| Error::io("writing the input", e))?;
    let mut killed = None;
    let kill = |why| -> Result<Option<Kill>, Error> {
        sys::pidfd_kill(pidfd.as_raw_fd()).map_err(|e| Error::io("killing the worker", e))?;
        Ok(Some(why))
    };

    loop {
        let now = Instant::now();
        if now >= deadline {
            killed = kill(Kill::Deadline)?;
            break;
        }
        // One CPU-clock read per wake-up, only for jobs with a CPU limit. The CPU time cannot
        // run faster than the wall clock times the CPUs, so waking after half the rest of the
        // budget (at least 1 ms) is in time to within that.
        let mut wake = deadline - now;
        if let Some(cpu) = &cpu {
            let left = cpu.left();
            if left.is_zero() {
                killed = kill(Kill::CpuTime)?;
                break;
            }
            wake = wake.min((left / 2).max(Duration::from_millis(1)));
        }
        // The kernel looks at these in order, so the output comes after the two that end the
        // loop: a poll that sees the worker's end or its "done" also sees everything it wrote
        // before, and the loop drains it below before it stops. No read after the loop, then,
        // and none at all for a worker that wrote nothing.
        let mut fds = [
            pollfd(pidfd.as_raw_fd(), libc::POLLIN),
            pollfd(control.map_or(-1, |c| c.fd.as_raw_fd()), libc::POLLIN),
            pollfd(collector.raw_fd(), libc::POLLIN),
            pollfd(
                feeder.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                libc::POLLOUT,
            ),
            pollfd(
                options.cancel.as_ref().map_or(-1, crate::Cancel::raw_fd),
                libc::POLLIN,
            ),
        ];
        match sys::poll(&mut fds, wake) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("polling the worker", e)),
        }
        if fds[2].revents != 0
            && collector
                .drain()
                .map_err(|e| Error::io("reading the output", e))?
        {
            killed = kill(Kill::OutputLimit)?;
            break;
        }
        if fds[3].revents != 0 {
            feeder
                .pump()
                .map_err(|e| Error::io("writing the input", e))?;
        }
        if fds[4].revents != 0 {
            killed = kill(Kill::Cancelled)?;
            break;
        }
        if fds[0].revents != 0 {
            break;
        }
        if let Some(control) = control.filter(|_| fds[1].revents != 0) {
            if control
                .done(&mut tail)
                .map_err(|e| Error::io("reading the done pipe", e))?
            {
                done = true;
                break;
            }
        }
    }
    feeder.fd = None;
    let truncated = collector.output.len() > max_output;
    let mut output = collector.output;
    output.truncate(max_output);
    Ok(Watch {
        output,
        truncated,
        killed,
        done,
        strict: options.policy == Policy::Strict,
        cpu_time: options.limits.cpu_time,
        guest_may_signal: guest_may_signal(options),
        oom_killed: false,
        facts: None,
        many_procs: options.limits.max_procs > 1,
    })
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Reads the worker's fd 1, keeping at most `max + 1` bytes (one past the limit proves it
/// was passed).
struct OutputCollector {
    fd: Option<i32>,
    output: Vec<u8>,
    max: usize,
}

impl OutputCollector {
    fn raw_fd(&self) -> i32 {
        self.fd.unwrap_or(-1)
    }

    /// Reads until the pipe is empty; true when the output passed the limit.
    ///
    /// The reads grow from `FIRST_READ` bytes to `CHUNK` as the output does, straight into the
    /// vector's spare room: every page the host writes after a fork costs it a page fault, so a
    /// few bytes of output must not cost a zeroed 64 KiB buffer.
    fn drain(&mut self) -> std::io::Result<bool> {
        const FIRST_READ: usize = 4 << 10;
        const CHUNK: usize = 64 << 10;
        while let Some(fd) = self.fd {
            let room = (self.max + 1).saturating_sub(self.output.len());
            if room == 0 {
                return Ok(true);
            }
            let want = room.min(CHUNK).min(self.output.len().max(FIRST_READ));
            match sys::read_append(fd, &mut self.output, want) {
                Ok(0) => self.fd = None,    // EOF: no writer is left
                Ok(n) if n < want => break, // the pipe had no more
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.output.len() > self.max)
    }
}

/// Decides the outcome from the wait status and the host's own kills; the worker's record
/// only adds details, and only where it agrees with the kernel.
fn classify(
    reaped: &sys::Reaped,
    watch: &Watch,
    record: &Record,
    code_addr: u64,
    code: &[u8],
    cpu_limit_secs: u64,
    policy: &Policy,
) -> Result<(Outcome, Option<ViolatingSyscall>), Error> {
    let status = reaped.status;
    if watch.truncated || watch.killed == Some(Kill::OutputLimit) {
        return Ok((Outcome::OutputLimit, None));
    }
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        // Only the trampoline's own exit is status 0 with a return recorded. A guest that
        // forges the record and exits 0 has in effect returned with those registers.
        if code == 0 && record.state == STATE_RETURNED {
            let registers = Registers::from_array(record.gpr, record.rflags);
            return Ok((Outcome::Returned(registers), None));
        }
        return Ok((Outcome::Exited(code), None));
    }
    if !libc::WIFSIGNALED(status) {
        return Err(Error::io(
            "reaping the worker",
            std::io::Error::other(format!("unexpected wait status 0x{status:x}")),
        ));
    }
    let mut signal = libc::WTERMSIG(status);
    if signal == libc::SIGKILL && watch.killed.is_none() {
        // The tracer's kill for a signal the worker, init of its PID namespace, would have
        // survived (see `tracer::seize`): it died of that signal.
        let ended = watch.facts.as_ref().and_then(|f| f.signal);
        if let Some(stop) = ended.filter(|stop| stop.ended_by_tracer) {
            signal = stop.signo;
        }
    }
    if signal == libc::SIGKILL {
        match watch.killed {
            Some(Kill::Deadline) => return Ok((Outcome::Timeout, None)),
            Some(Kill::CpuTime) => return Ok((Outcome::CpuTimeLimit, None)),
            Some(Kill::Cancelled) => return Ok((Outcome::Cancelled, None)),
            _ => {}
        }
        let cpu = timeval(reaped.rusage.ru_utime) + timeval(reaped.rusage.ru_stime);
        let margin = Duration::from_millis(100);
        if watch.cpu_time.is_some_and(|limit| cpu + margin >= limit) {
            return Ok((Outcome::CpuTimeLimit, None)); // its RLIMIT_CPU backstop
        }
        if cpu + margin >= Duration::from_secs(cpu_limit_secs) {
            return Ok((Outcome::Timeout, None)); // the RLIMIT_CPU backstop
        }
        if watch.strict {
            let Some(facts) = &watch.facts else {
                // Untraced: strict mode kills a violation with SIGKILL, and no guest can
                // send one; which call it was is for the diagnosis to find.
                return Ok((Outcome::SyscallViolation, None));
            };
            // Traced: strict mode's kill comes from the syscall entry itself, so the tracer
            // saw the worker's exit in that call, a call strict mode forbids. A SIGKILL sent
            // from outside ends it outside any call, or in one strict mode allows.
            let violation = facts
                .exit
                .filter(|e| e.status == libc::SIGKILL)
                .and_then(|e| strict_violation(&e, code_addr, code));
            if let Some(syscall) = violation {
                return Ok((Outcome::SyscallViolation, Some(syscall)));
            }
            if watch.oom_killed {
                return Ok((Outcome::MemoryLimit, None));
            }
            return Ok((Outcome::Killed, None));
        }
        if watch.oom_killed {
            return Ok((Outcome::MemoryLimit, None));
        }
        // A filter traps every violation (SIGSYS): this SIGKILL came from outside bytejail.
        return Ok((Outcome::Killed, None));
    }
    if signal == worker::SETUP_FAILED_SIGNAL && !watch.guest_may_signal {
        // No guest can raise it: the worker's setup failed before the guest ran.
        return Err(setup_error(record));
    }
    if let Some(facts) = &watch.facts {
        // Traced: the details are the kernel's, from the signal's delivery to the worker
        // (the worker installs no handler of its own then, so that was the last one).
        let stop = facts.signal.filter(|stop| stop.signo == signal);
        if signal == libc::SIGSYS {
            match stop {
                // A filter's trap (strict mode never sends SIGSYS), delivered in the call.
                Some(stop) => match trapped_syscall(&stop, code_addr, code.len())
                    .filter(|sc| job_denies(policy, sc))
                {
                    Some(mut syscall) => {
                        syscall.verified &= !watch.many_procs;
                        return Ok((Outcome::SyscallViolation, Some(syscall)));
                    }
                    // Not the kernel's trap of a call the job's filters deny: a process of
                    // the job sent it, or a filter of the guest's own trapped the call.
                    None => {
                        return Ok((
                            Outcome::Crashed {
                                signal,
                                fault: None,
                            },
                            None,
                        ))
                    }
                },
                None => {
                    // A filter's kill action (a traced worker's filters kill every violation)
                    // ends the worker with SIGSYS without a signal stop, in the call itself.
                    let syscall = facts
                        .exit
                        .filter(|e| e.status & 0x7f == libc::SIGSYS)
                        .and_then(|e| killed_in_syscall(&e, code_addr, code.len()))
                        .map(|mut sc| {
                            // Another thread's kill ends this one too, in whatever call.
                            sc.verified &= !watch.many_procs;
                            sc
                        });
                    if syscall.as_ref().is_some_and(|sc| !job_denies(policy, sc)) {
                        if watch.many_procs {
                            // Another thread's violation took this one down in a call the
                            // job allows: a violation, of a call no stop showed.
                            return Ok((Outcome::SyscallViolation, None));
                        }
                        // A filter of the guest's own killed it, not the job's.
                        return Ok((
                            Outcome::Crashed {
                                signal,
                                fault: None,
                            },
                            None,
                        ));
                    }
                    return Ok((Outcome::SyscallViolation, syscall));
                }
            }
        }
        // The kernel's own signals have a positive `si_code`. No guest can queue one with
        // details of its choosing: strict mode has no call for it, and the walls filter refuses
        // them to profile guests; only another process of the job could send one.
        // A SIGSEGV with `SI_KERNEL` (0x80) is the kernel's too, but may be no instruction's
        // fault: a general protection fault, or a signal frame the kernel could not read or
        // write (a forged `rt_sigreturn` frame with a bad FPU state pointer, say), after which
        // the registers are partly the guest's. Shown, unverified. (`int3`'s SIGTRAP has
        // `SI_KERNEL` too, and is its instruction's.)
        let fault = stop.filter(|stop| stop.code > 0).map(|stop| {
            let mut fault = fault_at(signal, stop.addr, stop.regs.rip, code_addr, code);
            let frame_or_gp = signal == libc::SIGSEGV && stop.code == SI_KERNEL;
            fault.verified = !frame_or_gp && !watch.many_procs;
            fault
        });
        return Ok((Outcome::Crashed { signal, fault }, None));
    }
    let recorded = record.state == STATE_FAULT && record.fault_signo == signal as u64;
    if signal == libc::SIGSYS {
        // A filter's trap: the worker re-raised it with the default action. Strict mode never
        // sends SIGSYS and no guest can send it, so this is a violation.
        let syscall = recorded.then(|| violating_syscall(record, code_addr, code.len()));
        return Ok((Outcome::SyscallViolation, syscall));
    }
    let fault =
        recorded.then(|| fault_at(signal, record.fault_addr, record.fault_rip, code_addr, code));
    Ok((Outcome::Crashed { signal, fault }, None))
}

/// Whether the job's own filter traps or kills `syscall` (as the kernel saw its arguments): a
/// guest may install a filter of its own on top, whose trap or kill of a call the job allows
/// is no violation of the job's policy. Decided by bytejail's interpreter of the program, which
/// `tests/policy_libseccomp.rs` checks against the kernel.
fn job_denies(policy: &Policy, syscall: &ViolatingSyscall) -> bool {
    let Some(filter) = policy.filter() else {
        return true; // strict mode: no filter, and no call to install one
    };
    let arch = match syscall.abi {
        Abi::I386 => crate::policy::AUDIT_ARCH_I386,
        Abi::X86_64 | Abi::X32 => crate::policy::AUDIT_ARCH_X86_64,
    };
    let args = syscall.args.unwrap_or_default();
    match filter.evaluate(arch, syscall.nr, args) {
        // SECCOMP_RET_KILL_THREAD (0), SECCOMP_RET_TRAP, SECCOMP_RET_KILL_PROCESS.
        Some(action) => matches!(action & 0xffff_0000, 0 | 0x0003_0000 | 0x8000_0000),
        None => true,
    }
}

/// `si_code` of a signal the kernel sends on its own account (not an instruction's fault).
const SI_KERNEL: i32 = 0x80;

/// A fault at data address `addr` with the instruction pointer `rip` the kernel saved,
/// unverified until the caller says otherwise.
fn fault_at(signal: i32, addr: u64, rip: u64, code_addr: u64, code: &[u8]) -> Fault {
    let code_offset = rip
        .checked_sub(code_addr)
        .map(|off| faulting_offset(signal, code, off))
        .filter(|off| *off < code.len() as u64);
    Fault {
        address: addr,
        code_offset,
        instruction: code_offset.and_then(|off| crate::disasm::instruction_at(code, off as usize)),
        verified: false,
    }
}

/// The ABI of a call, from the kernel's `AUDIT_ARCH_*` and the number's x32 bit.
fn abi_of(arch: u32, nr: u32) -> Abi {
    match arch {
        crate::policy::AUDIT_ARCH_I386 => Abi::I386,
        _ if nr & crate::policy::X32_SYSCALL_BIT != 0 => Abi::X32,
        _ => Abi::X86_64,
    }
}

/// The six argument registers of a call through `abi`, as the kernel reads them.
fn syscall_args(abi: Abi, regs: &crate::tracer::Regs) -> [u64; 6] {
    match abi {
        Abi::I386 => {
            [regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp].map(|r| r & 0xffff_ffff)
        }
        _ => [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9],
    }
}

/// The call a strict-mode worker was killed in, from its exit stop: `orig_rax` holds the
/// number, the argument registers are as the call left them, `rip` is just past the
/// instruction. `None` for the calls strict mode allows (no violation could be in them).
fn strict_violation(
    exit: &crate::tracer::ExitStop,
    code_addr: u64,
    code: &[u8],
) -> Option<ViolatingSyscall> {
    // The kernel takes the number from the low 32 bits of `orig_rax`; -1 is also what a
    // worker outside any call shows, so that one counts only just after a syscall instruction.
    let nr = exit.regs.orig_rax as u32;
    if exit.regs.orig_rax == u64::MAX && !after_syscall_instruction(exit.regs.rip, code_addr, code)
    {
        return None;
    }
    let allowed: &[u32] = match abi_of(exit.arch, nr) {
        Abi::I386 => &[1, 3, 4, 119],
        Abi::X32 => &[],
        Abi::X86_64 => &[0, 1, 15, 60],
    };
    if allowed.contains(&nr) {
        return None;
    }
    killed_in_syscall(exit, code_addr, code.len())
}

/// Whether the two bytes before `rip` are `syscall` (0f 05) or `int 0x80` (cd 80) in the code.
fn after_syscall_instruction(rip: u64, code_addr: u64, code: &[u8]) -> bool {
    rip.checked_sub(code_addr + 2)
        .and_then(|at| usize::try_from(at).ok())
        .and_then(|at| code.get(at..at + 2))
        .is_some_and(|insn| insn == [0x0f, 0x05] || insn == [0xcd, 0x80])
}

/// The call a worker was killed in by seccomp itself (strict mode's kill, a filter's kill
/// action), from its exit stop.
fn killed_in_syscall(
    exit: &crate::tracer::ExitStop,
    code_addr: u64,
    code_len: usize,
) -> Option<ViolatingSyscall> {
    let nr = exit.regs.orig_rax as u32;
    let abi = abi_of(exit.arch, nr);
    // `syscall` and `int 0x80` are 2 bytes.
    let code_offset = exit
        .regs
        .rip
        .checked_sub(code_addr + 2)
        .filter(|off| *off < code_len as u64);
    Some(ViolatingSyscall {
        nr,
        name: crate::syscalls::name(abi, nr),
        abi,
        code_offset,
        args: Some(syscall_args(abi, &exit.regs)),
        verified: true,
    })
}

/// The call a filter trapped, from the SIGSYS at its delivery: the kernel's trap of that very
/// call has `si_code` SYS_SECCOMP and the worker in the call `si_syscall` names (`orig_rax`);
/// anything else is a signal a process sent (`None`). A guest that queued itself a SIGSYS
/// was in the queueing call then, so it can only name that call: a trap of a signal-sending
/// call is reported unverified.
fn trapped_syscall(
    stop: &crate::tracer::SignalStop,
    code_addr: u64,
    code_len: usize,
) -> Option<ViolatingSyscall> {
    const SYS_SECCOMP: i32 = 1;
    let nr = stop.syscall as u32;
    // The kernel takes the number from the low 32 bits of `orig_rax`.
    if stop.code != SYS_SECCOMP || stop.regs.orig_rax as u32 != nr {
        return None;
    }
    let abi = abi_of(stop.arch, nr);
    let sends_signals: &[u32] = match abi {
        Abi::I386 => &[37, 178, 238, 270, 335, 424],
        _ => &[62, 129, 200, 234, 297, 424],
    };
    let plain = nr & !crate::policy::X32_SYSCALL_BIT;
    let verified = !sends_signals.contains(&plain);
    let code_offset = stop
        .addr
        .checked_sub(code_addr + 2)
        .filter(|off| *off < code_len as u64);
    Some(ViolatingSyscall {
        nr,
        name: crate::syscalls::name(abi, nr),
        abi,
        code_offset,
        args: Some(syscall_args(abi, &stop.regs)),
        verified,
    })
}

/// Why a worker's setup failed, from the stage and errno it recorded (if it got that far).
fn setup_error(record: &Record) -> Error {
    let (stage, errno) = if record.state == STATE_SETUP_FAILED {
        let stage = worker::STAGES.get(record.stage as usize).copied();
        (stage.unwrap_or("worker setup"), record.errno as i32)
    } else {
        ("worker setup", 0)
    };
    let source = if errno > 0 {
        std::io::Error::from_raw_os_error(errno)
    } else {
        std::io::Error::other("the worker died before it could say why")
    };
    Error::io(stage, source)
}

/// Waits (at most `limit`) for a pool worker's "ready" byte on its output pipe: then it is set
/// up and parked, and a job handed to it waits for nothing but itself. A worker that dies or
/// stays silent instead is killed and reaped, and its setup failure becomes the error.
pub(crate) fn await_ready(arena: &Arena, worker: &Spawned, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    loop {
        let now = Instant::now();
        let mut fds = [
            pollfd(worker.output_r.as_raw_fd(), libc::POLLIN),
            pollfd(worker.pidfd.as_raw_fd(), libc::POLLIN),
        ];
        if now >= deadline {
            break;
        }
        match sys::poll(&mut fds, deadline - now) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("waiting for a pooled worker", e)),
            Ok(_) if fds[0].revents != 0 => {
                let mut byte = [1u8];
                let got = sys::read(worker.output_r.as_raw_fd(), &mut byte);
                if matches!(got, Ok(1)) && byte[0] == 0 {
                    return Ok(());
                }
                break;
            }
            Ok(_) if fds[1].revents != 0 => break,
            Ok(_) => {}
        }
    }
    // No guest has run in a worker that never said ready.
    let setup_failed = setup_failed_unreaped(arena, worker.pid);
    let _ = sys::pidfd_kill(worker.pidfd.as_raw_fd());
    let reaped = sys::reap(worker.pid, &worker.pidfd)
        .map_err(|e| Error::io("reaping a pooled worker", e))?;
    let record = arena.record();
    if setup_failed {
        return Err(setup_error(&record));
    }
    if libc::WIFSIGNALED(reaped.status)
        && libc::WTERMSIG(reaped.status) == worker::SETUP_FAILED_SIGNAL
    {
        return Err(setup_error(&record));
    }
    Err(Error::io(
        "starting a pooled worker",
        std::io::Error::other(format!(
            "it never said ready (wait status 0x{:x})",
            reaped.status
        )),
    ))
}

/// Which syscall a filter trapped, from the SIGSYS siginfo the handler recorded. The record is
/// the worker's claim, so only what the kernel could have said is believed: an ABI from the
/// reported arch, an offset only inside the code.
fn violating_syscall(record: &Record, code_addr: u64, code_len: usize) -> ViolatingSyscall {
    let nr = record.fault_sysnr as u32;
    let abi = match record.fault_arch as u32 {
        crate::policy::AUDIT_ARCH_I386 => Abi::I386,
        _ if nr & crate::policy::X32_SYSCALL_BIT != 0 => Abi::X32,
        _ => Abi::X86_64,
    };
    // si_call_addr is the address after the instruction; `syscall` and `int 0x80` are 2 bytes.
    let code_offset = record
        .fault_addr
        .checked_sub(code_addr + 2)
        .filter(|off| *off < code_len as u64);
    ViolatingSyscall {
        nr,
        name: crate::syscalls::name(abi, nr),
        abi,
        code_offset,
        args: None,
        verified: false,
    }
}

/// The offset of the instruction that raised `signal`, given the `rip` the kernel saved.
/// Faults save the faulting instruction's address; `int3` (`cc`) and `int 3` (`cd 03`) are
/// traps that save the address after it.
fn faulting_offset(signal: i32, code: &[u8], rip_offset: u64) -> u64 {
    if signal != libc::SIGTRAP {
        return rip_offset;
    }
    let at = |back: u64| {
        rip_offset
            .checked_sub(back)
            .and_then(|i| code.get(i as usize..rip_offset as usize))
    };
    if at(1) == Some(&[0xcc][..]) {
        rip_offset - 1
    } else if at(2) == Some(&[0xcd, 0x03][..]) {
        rip_offset - 2
    } else {
        rip_offset
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}
