//! Running the assembler and the C preprocessor on untrusted source, each run in a sandbox of
//! its own.
//!
//! A source file is as untrusted as the code it becomes: `.incbin`, `.include`, `#include` and
//! NASM's `incbin`/`%include` read files at assembly time, and macros can build those directives,
//! so refusing them by name is not enough. Each run of `as`, `cc -E` or `nasm` therefore gets:
//!
//! - **Landlock** (the newest ABI the kernel has, best effort): read and execute only beneath
//!   [`TOOLCHAIN_PATHS`] and the tool's own binary, read `/etc/ld.so.cache`, read the include
//!   directories the user named, and read/write only its private temporary directory (which
//!   holds a copy of the source). No TCP (and, from ABI 9, no UDP or named Unix sockets); no
//!   signals or abstract Unix sockets outside the sandbox (ABI 6).
//! - **Namespaces**: a new PID namespace whose init is a small process of ours (so killing
//!   bytejail, or the init, kills every `cc`, `cc1`, `as` of the run with it: the kernel ends a
//!   PID namespace with its init, and the init has `PR_SET_PDEATHSIG`), plus a network
//!   namespace without interfaces and an IPC namespace.
//! - **Limits**: `RLIMIT_FSIZE` (no file it writes grows past the bound the caller derives from
//!   `--max-code`), `RLIMIT_AS`, `RLIMIT_CPU`, no core dumps, and a wall-clock timeout after which
//!   the init (and so the whole namespace) is killed.
//!
//! Where Landlock or namespaces cannot be had, a run prints one warning line per process and
//! runs with what there is (see [`walls`]): a process group then stands in for the namespace, and
//! the timeout still kills it, but a SIGKILLed bytejail may leave the tool running.
//!
//! Between `clone` and `execve` only async-signal-safe calls run: everything the child needs
//! (paths, argument and environment vectors, the Landlock ruleset, descriptors) is built first.
#![allow(unsafe_code)] // clone, the setup between clone and execve, and execve itself

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetError, Scope, ABI,
};

/// What the toolchain may read and execute, and why each is there:
/// - `/usr/bin`, `/bin`: the tools themselves, and the shells and drivers they start;
/// - `/usr/lib*`, `/lib*`: shared libraries, the dynamic loader, and GCC's own directory
///   (`/usr/lib/gcc`: its specs and built-in headers);
/// - `/usr/libexec`: GCC's programs (`cc1`, the preprocessor proper);
/// - `/usr/include`, `/usr/local/include`: the system headers a `.S` includes
///   (`<sys/syscall.h>`). GCC searches `/usr/local/include` first and stops at a directory it
///   may not read, so it must be readable where it exists;
/// - `/usr/local/lib`: libraries of tools installed under `/usr/local`.
///
/// (Where `/bin` and `/lib*` are symlinks into `/usr`, their rules are the same directories.)
/// Nothing under `/etc`, `/home`, `/root`, `/proc`, `/tmp`, `/var`, `/dev` or the rest of
/// `/usr` (`/usr/share`, `/usr/local/etc`, ...). A tool found in `PATH` elsewhere gets its own
/// binary added, not its directory.
pub const TOOLCHAIN_PATHS: [&str; 14] = [
    "/usr/bin",
    "/bin",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/libx32",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr/libexec",
    "/usr/include",
    "/usr/local/include",
    "/usr/local/lib",
];

/// The one file outside [`TOOLCHAIN_PATHS`] the toolchain may read: the dynamic loader's cache
/// (without it the loader still works, only slower).
const LOADER_CACHE: &str = "/etc/ld.so.cache";

/// The newest Landlock ABI this crate knows; on an older kernel the ruleset is cut down to what
/// the kernel has (best effort), and [`walls`] says what that is.
const LANDLOCK_ABI: ABI = ABI::V10;

/// How the processes of a toolchain run are held together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Containment {
    /// New PID, network and IPC namespaces (root, or `CAP_SYS_ADMIN`).
    Namespaces,
    /// The same inside a new user namespace (unprivileged, where user namespaces are allowed).
    UserNamespaces,
    /// A process group only: the timeout kills the group, but a SIGKILLed bytejail leaves the
    /// tool running, and it has the host's network.
    ProcessGroup,
}

/// The walls the toolchain's sandbox has on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Walls {
    /// The Landlock ABI version the kernel offers; 0 when it has none (then the toolchain can
    /// read every file bytejail can).
    pub landlock_abi: u32,
    /// How a run's processes are contained.
    pub containment: Containment,
}

/// The walls a toolchain run gets here (probed once per process).
pub fn walls() -> Walls {
    Walls {
        landlock_abi: landlock_abi(),
        containment: containment(),
    }
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`; see landlock(7).
fn landlock_abi() -> u32 {
    static ABI_VERSION: OnceLock<u32> = OnceLock::new();
    *ABI_VERSION.get_or_init(|| {
        // SAFETY: with a null attribute pointer and size 0 the call only returns the version.
        let version = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32,
            )
        };
        u32::try_from(version).unwrap_or(0)
    })
}

fn namespace_flags(containment: Containment) -> libc::c_int {
    let namespaces = libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWIPC;
    match containment {
        Containment::Namespaces => namespaces,
        Containment::UserNamespaces => namespaces | libc::CLONE_NEWUSER,
        Containment::ProcessGroup => 0,
    }
}

/// The best containment `clone` grants here: tried once with a child that exits at once.
fn containment() -> Containment {
    static CONTAINMENT: OnceLock<Containment> = OnceLock::new();
    *CONTAINMENT.get_or_init(|| {
        for containment in [Containment::Namespaces, Containment::UserNamespaces] {
            let flags = namespace_flags(containment);
            // SAFETY: fork-like clone (no new stack), exit signal 0 (reaped with `__WALL` below,
            // never seen by the host's SIGCHLD handling); the child only calls _exit.
            let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
            if pid == 0 {
                // SAFETY: async-signal-safe; ends the child at once.
                unsafe { libc::_exit(0) };
            }
            if pid > 0 {
                let mut status = 0;
                // SAFETY: reaps the child just made; status is a valid pointer.
                unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::__WALL) };
                return containment;
            }
        }
        Containment::ProcessGroup
    })
}

/// Prints, once per process, a warning line for each wall this machine lacks.
fn warn_missing_walls(walls: Walls) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    // Best-effort, as every line bytejail writes on stderr (`eprintln!` panics when the
    // write fails: a closed or full stderr would end the job).
    use std::io::Write;
    let mut stderr = io::stderr().lock();
    if walls.landlock_abi == 0 {
        let _ = writeln!(
            stderr,
            "bytejail: warning: no Landlock in this kernel: the assembler runs unconfined and a \
             source can read any file bytejail can (.incbin, .include, #include, %include)"
        );
    }
    if walls.containment == Containment::ProcessGroup {
        let _ = writeln!(
            stderr,
            "bytejail: warning: no PID namespace for the assembler: if bytejail is killed, a \
             running assembler may outlive it"
        );
    }
}

/// One toolchain run.
pub(crate) struct Job<'a> {
    /// The program, looked up in `PATH`.
    pub program: &'a str,
    pub args: &'a [&'a OsStr],
    /// The run's private directory: its working directory and the only place it may write.
    pub dir: &'a Path,
    /// Directories it may read besides the toolchain's own (the user's include directories).
    pub read_dirs: &'a [PathBuf],
    /// `RLIMIT_FSIZE`: no file it writes grows past this many bytes.
    pub max_file: u64,
    /// `RLIMIT_AS` of each process.
    pub max_memory: u64,
    /// Wall-clock limit for the whole run; also `RLIMIT_CPU` of each process.
    pub timeout: Duration,
    /// Where its standard output and error go.
    pub stdout: &'a File,
    pub stderr: &'a File,
    /// False only to show what the sandbox stops: then the tool runs with none of the walls.
    pub sandbox: bool,
}

/// How a toolchain run ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it (`SIGXFSZ` when a file went past `max_file`).
    Signaled(i32),
    /// It was still running at the timeout and was killed with everything it started.
    TimedOut,
}

/// Why a run could not be carried out.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The program is not in `PATH`.
    NotFound,
    /// Anything else, with what failed.
    Failed(&'static str, io::Error),
}

/// Records the init writes to the status pipe: `[kind, step, value]`.
const RECORD_STARTED: i32 = 1; // value: the tool's pid (as the host sees it without a namespace)
const RECORD_EXITED: i32 = 2; // value: the tool's wait status
const RECORD_FAILED: i32 = 3; // step: which setup step; value: errno

/// Setup steps, named in errors.
const STEPS: [&str; 8] = [
    "",
    "moving descriptors",
    "setting resource limits",
    "entering the private directory",
    "no_new_privs",
    "entering the Landlock sandbox",
    "starting the tool",
    "executing the tool",
];

/// Runs `job` in its sandbox and waits for it, at most `job.timeout`.
pub(crate) fn run(job: &Job) -> Result<Ended, RunError> {
    let containment = if job.sandbox {
        let walls = walls();
        warn_missing_walls(walls);
        walls.containment
    } else {
        Containment::ProcessGroup
    };
    run_contained(job, containment)
}

/// [`run`] with the given containment.
fn run_contained(job: &Job, containment: Containment) -> Result<Ended, RunError> {
    let program = find_program(job.program).ok_or(RunError::NotFound)?;
    let ruleset = if job.sandbox {
        landlock_ruleset(&program, job.dir, job.read_dirs).map_err(|err| {
            RunError::Failed("building the Landlock ruleset", io::Error::other(err))
        })?
    } else {
        None
    };
    let c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| {
            RunError::Failed(
                "passing an argument",
                io::Error::from_raw_os_error(libc::EINVAL),
            )
        })
    };
    let program_c = c(program.as_os_str().as_bytes())?;
    let mut argv = vec![c(job.program.as_bytes())?];
    for arg in job.args {
        argv.push(c(arg.as_bytes())?);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    let mut path_var = b"PATH=".to_vec();
    path_var.extend_from_slice(path.as_bytes());
    let mut tmpdir_var = b"TMPDIR=".to_vec();
    tmpdir_var.extend_from_slice(job.dir.as_os_str().as_bytes());
    let envp = [c(&path_var)?, c(b"LC_ALL=C")?, c(&tmpdir_var)?];
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|arg| arg.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|var| var.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let dir_c = c(job.dir.as_os_str().as_bytes())?;
    let failed = |what| move |err| RunError::Failed(what, err);
    let stdin = File::open("/dev/null").map_err(failed("opening /dev/null"))?;
    let (status_read, status_write) = pipe().map_err(failed("making a pipe"))?;
    let (lifeline_read, lifeline_write) = pipe().map_err(failed("making a pipe"))?;
    set_nonblocking(status_read.as_raw_fd()).map_err(failed("making a pipe"))?;
    let cpu = job.timeout.as_secs().saturating_add(1);
    // Never above what this process may set: a host started under `ulimit -v` keeps its bound.
    let limits = [
        (libc::RLIMIT_FSIZE, job.max_file),
        (libc::RLIMIT_AS, job.max_memory),
        (libc::RLIMIT_CPU, cpu),
        (libc::RLIMIT_CORE, 0),
    ]
    .map(|(resource, value)| (resource, value.min(hard_limit(resource))));
    let child = Child {
        program: &program_c,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        dir: &dir_c,
        fds: [
            stdin.as_raw_fd(),
            job.stdout.as_raw_fd(),
            job.stderr.as_raw_fd(),
            status_write.as_raw_fd(),
        ],
        ruleset: ruleset.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        lifeline: (lifeline_read.as_raw_fd(), lifeline_write.as_raw_fd()),
        limits: &limits,
        sandbox: job.sandbox,
        process_group: containment == Containment::ProcessGroup,
    };
    let flags = namespace_flags(containment) | libc::CLONE_PIDFD;
    let mut pidfd: libc::c_int = -1;
    let start = Instant::now();
    // SAFETY: fork-like clone (newsp = 0: the child runs on a copy of this stack); the kernel
    // writes the pidfd through a valid pointer. The child runs only `Child::init`, which makes
    // async-signal-safe calls on memory built above and never returns. Exit signal 0: only a
    // `__WALL` wait reaps it, so no SIGCHLD handling elsewhere in the program can steal it.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0usize,
            &mut pidfd as *mut libc::c_int,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        child.init();
    }
    if pid < 0 {
        return Err(RunError::Failed(
            "starting the tool's sandbox",
            io::Error::last_os_error(),
        ));
    }
    let pid = pid as libc::pid_t;
    // SAFETY: on success the kernel stored a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((status_write, lifeline_read, stdin, ruleset));
    let timed_out = !wait_readable(
        pidfd.as_raw_fd(),
        job.timeout.saturating_sub(start.elapsed()),
    );
    let mut records = Vec::new();
    read_records(&status_read, &mut records);
    let tool_pid = records
        .iter()
        .find(|record| record[0] == RECORD_STARTED)
        .map(|record| record[2]);
    if timed_out {
        kill_pidfd(pidfd.as_raw_fd());
    }
    let status = reap(pid);
    read_records(&status_read, &mut records);
    if containment == Containment::ProcessGroup && job.sandbox {
        // Whatever of the tool's group is left (all of it after a timeout).
        if let Some(group) = tool_pid.filter(|pid| *pid > 0) {
            // SAFETY: plain integer arguments; the group is the tool's own (setpgid in the child).
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
    // The lifeline lives until the init is reaped.
    drop(lifeline_write);
    if timed_out {
        return Ok(Ended::TimedOut);
    }
    for record in &records {
        if record[0] == RECORD_FAILED {
            let step = STEPS
                .get(record[1] as usize)
                .copied()
                .unwrap_or("setting up");
            return Err(RunError::Failed(
                step,
                io::Error::from_raw_os_error(record[2]),
            ));
        }
    }
    let exited = records.iter().find(|record| record[0] == RECORD_EXITED);
    match exited {
        Some(record) => Ok(wait_status(record[2])),
        // The init died before the tool ended: killed from outside.
        None => Ok(match status {
            Some(status) if libc::WIFSIGNALED(status) => Ended::Signaled(libc::WTERMSIG(status)),
            _ => Ended::Signaled(libc::SIGKILL),
        }),
    }
}

fn wait_status(status: i32) -> Ended {
    if libc::WIFSIGNALED(status) {
        Ended::Signaled(libc::WTERMSIG(status))
    } else {
        Ended::Exited(libc::WEXITSTATUS(status))
    }
}

/// `getrlimit(resource)`'s hard limit; see getrlimit(2). Unlimited if it cannot be had.
fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to a local.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return libc::RLIM_INFINITY;
    }
    limit.rlim_max
}

/// `program` resolved as `execvp` would: a path with a slash as it is, else the first
/// executable file of that name in `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return Some(PathBuf::from(program)).filter(|path| executable(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
}

/// The Landlock ruleset of a run (see the module's documentation); None without Landlock.
fn landlock_ruleset(
    program: &Path,
    dir: &Path,
    read_dirs: &[PathBuf],
) -> Result<Option<OwnedFd>, RulesetError> {
    let abi = LANDLOCK_ABI;
    let read = AccessFs::from_read(abi);
    let ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::from_all(abi))?
        .scope(Scope::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(TOOLCHAIN_PATHS, read))?
        // A tool installed elsewhere (`/opt/...`): its binary only, not its directory.
        .add_rules(path_beneath_rules([program], read))?
        .add_rules(path_beneath_rules([LOADER_CACHE], AccessFs::ReadFile))?
        .add_rules(path_beneath_rules(
            read_dirs,
            AccessFs::ReadFile | AccessFs::ReadDir,
        ))?
        .add_rules(path_beneath_rules([dir], AccessFs::from_all(abi)))?;
    Ok(ruleset.into())
}

/// Everything the cloned child needs, built before the clone.
struct Child<'a> {
    program: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    dir: &'a CString,
    /// Standard input, output, error and the status pipe: 0, 1, 2 and 3 in the child.
    fds: [RawFd; 4],
    /// The Landlock ruleset, or -1.
    ruleset: RawFd,
    /// Readable end, and the host's writable end of a pipe that only the host holds open.
    lifeline: (RawFd, RawFd),
    limits: &'a [(libc::__rlimit_resource_t, u64)],
    sandbox: bool,
    process_group: bool,
}

impl Child<'_> {
    /// The child's side: set up the walls, start the tool, wait for it, report, exit.
    ///
    /// Runs between `clone` and `execve` in a copy of a possibly multi-threaded process: only
    /// async-signal-safe libc calls (thin syscall wrappers), no allocation, no locks, never
    /// returns. As PID 1 of its namespace (when there is one), its death ends the namespace.
    fn init(&self) -> ! {
        // SAFETY: each call below is a plain syscall wrapper on integers or on memory built
        // before the clone (C strings, null-terminated pointer arrays, the rlimit table).
        unsafe {
            if self.sandbox {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                // The host may have died before the line above: then the lifeline pipe has no
                // writer left (getppid() says nothing in a new PID namespace: it is 0).
                libc::close(self.lifeline.1);
                let mut lifeline = libc::pollfd {
                    fd: self.lifeline.0,
                    events: libc::POLLIN,
                    revents: 0,
                };
                if libc::poll(&mut lifeline, 1, 0) == 1 && lifeline.revents & libc::POLLHUP != 0 {
                    libc::_exit(1);
                }
            }
            // Move the four descriptors above 3 first, so none is overwritten by another's dup2.
            let mut high = [0; 4];
            for (slot, fd) in high.iter_mut().zip(self.fds) {
                *slot = libc::fcntl(fd, libc::F_DUPFD, 16);
            }
            let ruleset = if self.ruleset >= 0 {
                libc::fcntl(self.ruleset, libc::F_DUPFD, 16)
            } else {
                -1
            };
            for (target, fd) in high.iter().enumerate() {
                if *fd < 0 || libc::dup2(*fd, target as RawFd) < 0 {
                    Self::fail(1);
                }
            }
            if self.sandbox {
                for &(resource, value) in self.limits {
                    let limit = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    if libc::setrlimit(resource, &limit) != 0 {
                        Self::fail(2);
                    }
                }
            }
            if libc::chdir(self.dir.as_ptr()) != 0 {
                Self::fail(3);
            }
            if ruleset >= 0 {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    Self::fail(4);
                }
                if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) != 0 {
                    Self::fail(5);
                }
            }
            // The tool starts with default signal handling and no blocked signal, whatever the
            // host ignores or blocks (Rust ignores SIGPIPE; an ignored SIGCHLD would make the
            // wait below fail).
            for signal in [libc::SIGCHLD, libc::SIGPIPE] {
                libc::signal(signal, libc::SIG_DFL);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            // Nothing but 0-3 reaches the tool; the status pipe (3) closes on its execve.
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
            let tool = libc::syscall(
                libc::SYS_clone,
                libc::SIGCHLD,
                0usize,
                0usize,
                0usize,
                0usize,
            );
            if tool < 0 {
                Self::fail(6);
            }
            if tool == 0 {
                if self.process_group {
                    libc::setpgid(0, 0);
                }
                libc::execve(
                    self.program.as_ptr(),
                    self.argv.as_ptr(),
                    self.envp.as_ptr(),
                );
                Self::fail(7);
            }
            let tool = tool as libc::pid_t;
            Self::record(RECORD_STARTED, 0, tool);
            let mut status = 0;
            while libc::waitpid(tool, &mut status, 0) < 0 {
                if *libc::__errno_location() != libc::EINTR {
                    Self::fail(6);
                }
            }
            Self::record(RECORD_EXITED, 0, status);
            libc::_exit(0)
        }
    }

    /// Writes one record to the status pipe (fd 3).
    fn record(kind: i32, step: i32, value: i32) {
        let record = [kind, step, value];
        // SAFETY: writes 12 bytes from a local array; one write below PIPE_BUF is atomic.
        unsafe { libc::write(3, record.as_ptr().cast(), std::mem::size_of_val(&record)) };
    }

    /// Reports setup step `step` failed with the current errno, and exits.
    fn fail(step: i32) -> ! {
        // SAFETY: reads this thread's errno; _exit ends the process.
        unsafe {
            let errno = *libc::__errno_location();
            Self::record(RECORD_FAILED, step, errno);
            libc::_exit(127)
        }
    }
}

/// Reads every whole record waiting in the status pipe.
fn read_records(pipe: &OwnedFd, records: &mut Vec<[i32; 3]>) {
    let mut buf = [0u8; 12];
    loop {
        // SAFETY: buf is valid for writes of its length; the pipe is non-blocking.
        let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n != buf.len() as isize {
            return;
        }
        let field = |i: usize| i32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        records.push([field(0), field(4), field(8)]);
    }
}

/// `pipe2(O_CLOEXEC)`; see pipe(2).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain integer arguments on a descriptor this process owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until the pidfd is readable (the process ended), at most `limit`; false at the limit.
fn wait_readable(pidfd: RawFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fd = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms =
            libc::c_int::try_from(left.as_millis().saturating_add(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut fd, 1, ms) };
        if n > 0 {
            return true;
        }
        if n == 0 && left.is_zero() {
            return false;
        }
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// `pidfd_send_signal(pidfd, SIGKILL, NULL, 0)`; see pidfd_send_signal(2).
fn kill_pidfd(pidfd: RawFd) {
    // SAFETY: plain integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            libc::SIGKILL,
            0usize,
            0u32,
        )
    };
}

/// Reaps the init (`__WALL`: its exit signal is 0); its wait status, if it could be had.
fn reap(pid: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: a valid pointer to a local.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if ret == pid {
            return Some(status);
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture() -> File {
        tempfile::tempfile().unwrap()
    }

    fn job<'a>(
        program: &'a str,
        args: &'a [&'a OsStr],
        dir: &'a Path,
        out: &'a File,
        timeout: Duration,
    ) -> Job<'a> {
        Job {
            program,
            args,
            dir,
            read_dirs: &[],
            max_file: 1 << 20,
            max_memory: 1 << 30,
            timeout,
            stdout: out,
            stderr: out,
            sandbox: true,
        }
    }

    #[test]
    fn a_tool_that_hangs_is_killed_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let out = capture();
        let args = [OsStr::new("30")];
        let start = Instant::now();
        let ended = run(&job(
            "sleep",
            &args,
            dir.path(),
            &out,
            Duration::from_millis(200),
        ))
        .unwrap();
        assert_eq!(ended, Ended::TimedOut);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_tool_that_finishes_reports_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let out = capture();
        let args = [OsStr::new("-c"), OsStr::new("exit 3")];
        let ended = run(&job("sh", &args, dir.path(), &out, Duration::from_secs(30))).unwrap();
        assert_eq!(ended, Ended::Exited(3));
    }

    /// Processes running `sleep` with exactly this argument.
    fn sleepers(argument: &str) -> Vec<i32> {
        let wanted = format!("sleep\0{argument}\0");
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| {
                let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let state = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let zombie = state
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'));
                (cmdline == wanted.as_bytes() && !zombie).then_some(pid)
            })
            .collect()
    }

    /// Runs `sh` starting two sleeps (one in the background) past a 300 ms timeout; the sleeps
    /// still alive a moment after `run` returned.
    fn leftover_sleepers(
        containment: Containment,
        sandbox: bool,
        tag: u32,
        patience: Duration,
    ) -> Vec<i32> {
        let dir = tempfile::tempdir().unwrap();
        let out = capture();
        let argument = format!("{}.{tag}{}", 30, std::process::id());
        let script = format!("sleep {argument} & sleep {argument}");
        let args = [OsStr::new("-c"), OsStr::new(&script)];
        let mut job = job("sh", &args, dir.path(), &out, Duration::from_millis(300));
        job.sandbox = sandbox;
        assert_eq!(run_contained(&job, containment).unwrap(), Ended::TimedOut);
        let deadline = Instant::now() + patience;
        loop {
            let left = sleepers(&argument);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_timeout_kills_everything_the_tool_started() {
        if walls().containment == Containment::Namespaces {
            assert_eq!(
                leftover_sleepers(Containment::Namespaces, true, 1, Duration::from_secs(5)),
                Vec::<i32>::new()
            );
        }
        // The fallback without namespaces: the tool's process group.
        assert_eq!(
            leftover_sleepers(Containment::ProcessGroup, true, 2, Duration::from_secs(5)),
            Vec::<i32>::new()
        );
    }

    #[test]
    fn without_the_sandbox_the_timeout_kills_only_the_init() {
        let left = leftover_sleepers(
            Containment::ProcessGroup,
            false,
            3,
            Duration::from_millis(500),
        );
        for pid in &left {
            // SAFETY: plain integer arguments; these sleeps were started by this test.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn a_missing_tool_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let out = capture();
        let ended = run(&job(
            "bytejail-no-such-tool",
            &[],
            dir.path(),
            &out,
            Duration::from_secs(30),
        ));
        assert!(matches!(ended, Err(RunError::NotFound)), "{ended:?}");
    }
}
