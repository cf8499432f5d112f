//! Cgroups per job, for what no rlimit can bound.
//!
//! - **pids**, for jobs that may create processes (`Limits::max_procs` above 1). A job under a
//!   profile that allows `fork` or `clone` runs as init of its own PID namespace, so its whole
//!   tree dies with it; the namespace alone does not bound how many processes the tree has at
//!   once. `pids.max` does. `RLIMIT_NPROC` cannot: it never limits uid 0 and counts per user,
//!   not per job.
//! - **memory**, for every profile job where the controller is there. `RLIMIT_AS` bounds what a
//!   guest maps; memory it holds outside its mappings (SysV shared memory detached again,
//!   memfd pages, tmpfs) counts only in the job's memory cgroup. Past its limit the kernel's
//!   OOM killer ends the job inside the cgroup, and the report says `memory_limit`.
//! - **CPU accounting**, for profile jobs with a CPU limit (`Limits::cpu_time`): the job's
//!   whole process tree is charged to its cgroup (v1 `cpuacct.usage`; v2 `cpu.stat`'s
//!   `usage_usec`, there in every v2 cgroup without any controller), which the host reads
//!   while it watches the budget. Where no such cgroup can be had, only the worker's own CPU
//!   clock is watched, and `bytejail doctor` says so.
//!
//! A host that dies (SIGKILL, OOM kill) cannot remove its job cgroups itself. The first time
//! it makes one, it starts a janitor (see [`janitor`]): a small process that waits for the
//! host's end and then kills whatever is left in this host's cgroups and removes them.
//!
//! The host makes the cgroups, the worker moves itself into them before the guest runs
//! (writing `0` to each `cgroup.procs`), and the host removes them once the worker is reaped
//! (when, with the PID namespace, nothing of the job is left in them). Both hierarchies are
//! found at run time: cgroup v1 mounts (as on machines that mount the v1 controllers), or the
//! v2 unified hierarchy with the controller available at its root.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Room for the NUL-terminated path of a job's `cgroup.procs` in a worker's plan.
pub(crate) const PROCS_PATH_MAX: usize = 192;

/// How many `cgroup.procs` paths a worker's plan holds: one per hierarchy a job can be in.
pub(crate) const PROCS_SLOTS: usize = 3;

/// A cgroup controller bytejail uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Controller {
    Pids,
    Memory,
    /// CPU accounting: v1's `cpuacct`, or any v2 hierarchy (`cpu.stat` needs no controller).
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Pids, Controller::Memory, Controller::Cpu];

    fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
            Controller::Cpu => "cpuacct",
        }
    }
}

/// A controller's `bytejail` directory, under which jobs' cgroups are made
/// (`bytejail/<host pid>-<n>`), and whether it is in the v2 hierarchy; or why there is none.
fn parent(controller: Controller) -> Result<&'static (PathBuf, bool), &'static str> {
    static PARENTS: [OnceLock<Result<(PathBuf, bool), &'static str>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    PARENTS[controller as usize]
        .get_or_init(|| {
            let (root, v2) = controller_root(controller.name()).ok_or(match controller {
                Controller::Pids => "no pids cgroup controller is mounted",
                Controller::Memory => "no memory cgroup controller is mounted",
                Controller::Cpu => "neither a cpuacct cgroup controller nor cgroup v2 is mounted",
            })?;
            let parent = root.join("bytejail");
            match std::fs::create_dir(&parent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(_) => return Err("the cgroup hierarchy is not writable here"),
            }
            sweep(&parent);
            if v2 && controller != Controller::Cpu {
                // The parent hands the controller down to the job cgroups.
                let enable = format!("+{}", controller.name());
                std::fs::write(parent.join("cgroup.subtree_control"), enable)
                    .map_err(|_| "the controller cannot be enabled for job cgroups")?;
            }
            Ok((parent, v2))
        })
        .as_ref()
        .map_err(|why| *why)
}

/// Removes the job cgroups that hosts killed before they could (`<pid>-<n>` of a pid that is
/// gone). A cgroup that still holds a process cannot be removed, and stays.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, _)) = name.to_str().and_then(|n| n.split_once('-')) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Where `controller` is mounted: a v1 hierarchy with it among its options, else the v2
/// unified hierarchy if its root offers it (and can hand it down), or for CPU accounting any
/// v2 hierarchy. `true` for v2.
fn controller_root(controller: &str) -> Option<(PathBuf, bool)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut v2 = None;
    for line in mountinfo.lines() {
        // ... mount-point ... - fstype source super-options
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let options = right.nth(1).unwrap_or("");
        if fstype == "cgroup" && options.split(',').any(|o| o == controller) {
            return Some((PathBuf::from(mount_point), false));
        }
        if fstype == "cgroup2" && controller == Controller::Cpu.name() {
            v2.get_or_insert_with(|| (PathBuf::from(mount_point), true));
        } else if fstype == "cgroup2" {
            let controllers =
                std::fs::read_to_string(Path::new(mount_point).join("cgroup.controllers"));
            if controllers.is_ok_and(|c| c.split_whitespace().any(|c| c == controller)) {
                v2.get_or_insert_with(|| (PathBuf::from(mount_point), true));
            }
        }
    }
    v2
}

/// Whether jobs can get a cgroup of `controller` here; the reason when they cannot.
pub(crate) fn available(controller: Controller) -> Result<(), &'static str> {
    parent(controller).map(|_| ())
}

/// One job's cgroups (one per controller, or one for both in v2), removed on drop (after its
/// worker is reaped).
#[derive(Debug, Default)]
pub(crate) struct JobCgroup {
    dirs: Vec<PathBuf>,
    /// The memory cgroup's directory and whether it is v2, to read its OOM kills.
    memory: Option<(PathBuf, bool)>,
    /// The CPU accounting cgroup's usage file (`cpuacct.usage` or `cpu.stat`), open, and
    /// whether it is v2's.
    cpu: Option<(std::fs::File, bool)>,
}

impl JobCgroup {
    /// Makes the job's cgroups: one that holds at most `max_procs` processes and threads when
    /// given, one whose memory may not pass `memory` bytes when given, and with `cpu` one
    /// that counts the CPU time of the whole job.
    pub(crate) fn new(
        max_procs: Option<u32>,
        memory: Option<u64>,
        cpu: bool,
    ) -> io::Result<JobCgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        retry_stale();
        janitor::ensure();
        let job = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{job}", std::process::id());
        let mut cgroup = JobCgroup::default();
        let mut made = |controller: Controller| -> io::Result<(PathBuf, bool)> {
            let (parent, v2) = parent(controller).map_err(io::Error::other)?;
            let dir = parent.join(&name);
            if !cgroup.dirs.contains(&dir) {
                std::fs::create_dir(&dir)?;
                cgroup.dirs.push(dir.clone());
            }
            Ok((dir, *v2))
        };
        if let Some(max_procs) = max_procs {
            let (dir, _) = made(Controller::Pids)?;
            std::fs::write(dir.join("pids.max"), max_procs.to_string())?;
        }
        // The memory cgroup is the second line behind RLIMIT_AS: where this process may not
        // make one (a hierarchy another user owns), the job goes without, as the doctor says.
        if let Some(memory) = memory {
            if let Ok((dir, v2)) = made(Controller::Memory) {
                let file = if v2 {
                    "memory.max"
                } else {
                    "memory.limit_in_bytes"
                };
                std::fs::write(dir.join(file), memory.to_string())?;
                if v2 {
                    // No swap either: past the limit the job ends, it does not page out.
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                } else {
                    let _ = std::fs::write(dir.join("memory.swappiness"), "0");
                }
                cgroup.memory = Some((dir, v2));
            }
        }
        // Where the CPU accounting cgroup cannot be made after all, the host watches the
        // worker's own clock, as where there is none.
        if cpu {
            if let Ok((dir, v2)) = made(Controller::Cpu) {
                let file = if v2 { "cpu.stat" } else { "cpuacct.usage" };
                cgroup.cpu = std::fs::File::open(dir.join(file)).ok().map(|f| (f, v2));
            }
        }
        Ok(cgroup)
    }

    /// The CPU time (user and system) charged to the job's CPU accounting cgroup so far, for
    /// every process and thread that was in it; `None` without one, or if unreadable.
    pub(crate) fn cpu_usage(&self) -> Option<std::time::Duration> {
        let (file, v2) = self.cpu.as_ref()?;
        cpu_usage(file, *v2)
    }

    /// The NUL-terminated paths of its `cgroup.procs` files (an empty path for none), for the
    /// worker to write itself into.
    pub(crate) fn procs_paths(&self) -> io::Result<[[u8; PROCS_PATH_MAX]; PROCS_SLOTS]> {
        let mut out = [[0u8; PROCS_PATH_MAX]; PROCS_SLOTS];
        for (slot, dir) in out.iter_mut().zip(&self.dirs) {
            let path = dir.join("cgroup.procs");
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
            if bytes.len() >= PROCS_PATH_MAX || bytes.contains(&0) {
                return Err(io::Error::other(format!(
                    "the cgroup path {} is longer than {} bytes",
                    path.display(),
                    PROCS_PATH_MAX - 1
                )));
            }
            slot[..bytes.len()].copy_from_slice(bytes);
        }
        Ok(out)
    }

    /// Whether the kernel's OOM killer ended a process of the job for its memory limit
    /// (`oom_kill` in v1's `memory.oom_control`, v2's `memory.events`).
    pub(crate) fn oom_killed(&self) -> bool {
        let Some((dir, v2)) = &self.memory else {
            return false;
        };
        let file = if *v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(dir.join(file)).is_ok_and(|text| {
            text.lines().any(|line| {
                line.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    }
}

/// Reads a CPU accounting file from its start: v1's `cpuacct.usage` (nanoseconds), or v2's
/// `cpu.stat` (its `usage_usec` line).
pub(crate) fn cpu_usage(file: &std::fs::File, v2: bool) -> Option<std::time::Duration> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 512];
    let len = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..len]).ok()?;
    if v2 {
        let usec = text
            .lines()
            .find_map(|line| line.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        Some(std::time::Duration::from_micros(usec))
    } else {
        Some(std::time::Duration::from_nanos(text.trim().parse().ok()?))
    }
}

/// Job cgroups whose removal failed: the kernel may still count a task of the job as it
/// finishes exiting (rmdir says EBUSY), so they are tried again before the next one is made.
static STALE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn retry_stale() {
    let mut stale = STALE.lock().unwrap_or_else(|e| e.into_inner());
    stale
        .retain(|dir| std::fs::remove_dir(dir).is_err_and(|e| e.kind() != io::ErrorKind::NotFound));
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        // Empty once the worker (init of the job's PID namespace) is reaped and its tasks are
        // gone; if the kernel is not done with them yet, later.
        for dir in self.dirs.drain(..) {
            if std::fs::remove_dir(&dir).is_err() {
                STALE.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
            }
        }
    }
}

/// The janitor: removes this host's job cgroups once the host is gone, however it ended.
///
/// A host that is SIGKILLed (or OOM-killed, or crashes) runs no destructor, so its job
/// cgroups (`<pid>-<n>`) would stay behind for good. The first time a host makes a job
/// cgroup, it starts one janitor. The janitor shares the host's memory (`CLONE_VM`: nothing
/// is copied), runs on a stack of its own, issues raw system calls only, and holds nothing
/// but the read end of a pipe whose write end only the host holds, and the directories the
/// job cgroups are made in. It blocks on the pipe; at EOF (the host has ended: the kernel
/// closes its descriptors however it died) it kills what is left in the host's job cgroups
/// (`cgroup.kill` in v2, each pid of `cgroup.procs` in v1), removes them, and exits.
///
/// It is not a process any guest can reach: guests run in PID namespaces of their own and
/// in their job's cgroups, the janitor in neither. It is not the host's child either (it is
/// started through a short-lived middle process, so it belongs to init, or to the nearest
/// child subreaper: a host that made itself one adopts it), so it does not show among the
/// host's children and never becomes a zombie the host has to reap. It blocks
/// every signal it may and leaves the host's session, so a terminal's Ctrl-C for the host
/// does not end it before its work. `PR_SET_PDEATHSIG` would kill it before it cleaned up:
/// the pipe's EOF is its signal instead.
#[allow(unsafe_code, reason = "a raw-syscall process on a stack of its own")]
mod janitor {
    use std::os::fd::IntoRawFd;
    use std::sync::Mutex;

    use super::{parent, Controller};
    use crate::sys::raw;

    /// At most this many directories to clean (one per controller's parent).
    const DIRS: usize = 3;
    /// Its stack, and the middle process's.
    const STACK: usize = 64 << 10;
    /// How long it keeps trying to remove a cgroup whose tasks are still exiting.
    const ATTEMPTS: usize = 500;
    const PAUSE_NS: i64 = 10_000_000;

    /// What the janitor works with, leaked by the host: it must outlive the host's own use.
    struct Job {
        pipe_r: i32,
        dirs: [i32; DIRS],
        /// `<host pid>-`: the prefix of this host's job cgroups.
        prefix: [u8; 16],
        prefix_len: usize,
        /// The janitor's stack top.
        stack_top: usize,
    }

    /// Starts the janitor for this process unless it runs already. A janitor that cannot
    /// be started leaves the sweep at the next host's start (see [`super::sweep`]).
    pub(super) fn ensure() {
        // The pid whose janitor runs: a forked copy of a host needs a janitor of its own.
        static STARTED_FOR: Mutex<Option<u32>> = Mutex::new(None);
        let me = std::process::id();
        let mut started = STARTED_FOR.lock().unwrap_or_else(|e| e.into_inner());
        if *started == Some(me) {
            return;
        }
        *started = Some(me);
        let _ = start(me);
    }

    fn start(me: u32) -> std::io::Result<()> {
        let mut dirs = [-1; DIRS];
        let mut seen = Vec::new();
        for controller in Controller::ALL {
            let Ok((dir, _)) = parent(controller) else {
                continue;
            };
            if seen.contains(dir) {
                continue;
            }
            seen.push(dir.clone());
            let file = std::fs::File::open(dir)?;
            dirs[seen.len() - 1] = file.into_raw_fd();
        }
        let (pipe_r, pipe_w) = crate::sys::pipe()?;
        let text = format!("{me}-");
        let mut prefix = [0u8; 16];
        prefix[..text.len()].copy_from_slice(text.as_bytes());
        // SAFETY: a fresh private anonymous mapping; never unmapped (the janitor runs on it).
        let stacks = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if stacks == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let job: &'static Job = Box::leak(Box::new(Job {
            pipe_r: pipe_r.into_raw_fd(),
            dirs,
            prefix,
            prefix_len: text.len(),
            stack_top: stacks as usize + 2 * STACK,
        }));
        // SAFETY: `middle` runs on the first stack, shares this memory (`job` is leaked and
        // never written again) and issues raw syscalls only. Exit signal SIGCHLD, so that it
        // is reaped below like any child.
        let middle = unsafe {
            libc::clone(
                middle,
                (stacks as usize + STACK) as *mut libc::c_void,
                libc::CLONE_VM | libc::SIGCHLD,
                job as *const Job as *mut libc::c_void,
            )
        };
        // The janitor's fds were copied (at the middle's clone): the host's copies go.
        for fd in dirs.into_iter().chain([job.pipe_r]).filter(|&fd| fd >= 0) {
            // SAFETY: descriptors opened above and owned by nobody else in this process.
            unsafe { libc::close(fd) };
        }
        if middle < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _ = crate::sys::wait4(middle);
        // The write end stays open as long as this process lives; it closes when it ends.
        let _ = pipe_w.into_raw_fd();
        Ok(())
    }

    /// The middle process: starts the janitor (a child of its own, so that once the middle
    /// exits, init is the janitor's parent) and exits.
    extern "C" fn middle(job: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `job` is the leaked `Job`, read-only from here on.
        let job = unsafe { &*(job as *const Job) };
        // SAFETY: the janitor runs on its own stack (the top of the two) and shares memory;
        // its entry issues raw syscalls only. Exit signal 0: init reaps it whatever.
        unsafe {
            let entry: extern "C" fn(*mut libc::c_void) -> libc::c_int = janitor;
            raw_clone(entry, job);
            raw::syscall3(libc::SYS_exit, 0, 0, 0);
        }
        0
    }

    /// `clone(CLONE_VM)` onto the janitor's stack, through libc (which runs `entry` there).
    ///
    /// # Safety
    /// `job` lives for good; `entry` uses raw syscalls only.
    unsafe fn raw_clone(entry: extern "C" fn(*mut libc::c_void) -> libc::c_int, job: &Job) {
        // SAFETY: forwarded.
        unsafe {
            libc::clone(
                entry,
                job.stack_top as *mut libc::c_void,
                libc::CLONE_VM,
                job as *const Job as *mut libc::c_void,
            );
        }
    }

    /// The janitor: waits for the host's end, then cleans up and exits. Raw syscalls only,
    /// on its own stack: it shares memory with a host whose other threads go on running.
    extern "C" fn janitor(job: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `job` is the leaked `Job`; every call below is a raw syscall on locals.
        unsafe {
            let job = &*(job as *const Job);
            let all = !0u64;
            raw::syscall6(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK as usize,
                &all as *const u64 as usize,
                0,
                8,
                0,
                0,
            );
            raw::syscall3(libc::SYS_setsid, 0, 0, 0);
            let name = b"bytejail-janitr\0";
            raw::syscall3(
                libc::SYS_prctl,
                libc::PR_SET_NAME as usize,
                name.as_ptr() as usize,
                0,
            );
            // Nothing of the host's but what it needs: close every other descriptor.
            let mut keep = [job.pipe_r, job.dirs[0], job.dirs[1], job.dirs[2]];
            keep.sort_unstable();
            let mut from = 0u32;
            for fd in keep.into_iter().filter(|&fd| fd >= 0) {
                if fd as u32 > from {
                    raw::syscall3(libc::SYS_close_range, from as usize, fd as usize - 1, 0);
                }
                from = fd as u32 + 1;
            }
            raw::syscall3(libc::SYS_close_range, from as usize, u32::MAX as usize, 0);
            let mut byte = 0u8;
            loop {
                let got = raw::syscall3(
                    libc::SYS_read,
                    job.pipe_r as usize,
                    &mut byte as *mut u8 as usize,
                    1,
                );
                if got <= 0 && got != -(libc::EINTR as isize) {
                    break; // EOF: the host has ended
                }
            }
            // Until a pass finds none of the host's cgroups (removing entries while listing a
            // directory may hide others from that pass).
            for _ in 0..ATTEMPTS {
                let (mut found, mut left) = (0, 0);
                for dir in job.dirs.into_iter().filter(|&fd| fd >= 0) {
                    let (f, l) = clean(dir, &job.prefix[..job.prefix_len]);
                    found += f;
                    left += l;
                }
                if found == 0 {
                    break;
                }
                if left == 0 {
                    continue;
                }
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: PAUSE_NS,
                };
                raw::syscall3(libc::SYS_nanosleep, &pause as *const _ as usize, 0, 0);
            }
            raw::syscall3(libc::SYS_exit, 0, 0, 0);
        }
        0
    }

    /// Kills the processes in `dir`'s entries named `prefix...` and removes them; how many
    /// it found, and how many of those are left (still busy).
    ///
    /// # Safety
    /// Raw syscalls only; `dir` is an open directory.
    unsafe fn clean(dir: i32, prefix: &[u8]) -> (usize, usize) {
        let (mut found, mut left) = (0, 0);
        let mut buf = [0u8; 4096];
        // SAFETY: raw syscalls with pointers to locals.
        unsafe {
            raw::syscall3(libc::SYS_lseek, dir as usize, 0, libc::SEEK_SET as usize);
            loop {
                let len = raw::syscall3(
                    libc::SYS_getdents64,
                    dir as usize,
                    buf.as_mut_ptr() as usize,
                    buf.len(),
                );
                if len <= 0 {
                    break;
                }
                let mut at = 0usize;
                while at < len as usize {
                    // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
                    let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                    let name = &buf[at + 19..at + reclen];
                    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                    if name.starts_with(prefix) && name.len() < 64 {
                        found += 1;
                        left += clean_one(dir, name);
                    }
                    at += reclen;
                }
            }
        }
        (found, left)
    }

    /// Kills what is in cgroup `name` below `dir` and removes it: 0 if it is gone, 1 if not.
    ///
    /// # Safety
    /// Raw syscalls only.
    unsafe fn clean_one(dir: i32, name: &[u8]) -> usize {
        let mut path = [0u8; 96];
        let file = |path: &mut [u8; 96], leaf: &[u8]| {
            path.fill(0);
            path[..name.len()].copy_from_slice(name);
            path[name.len()] = b'/';
            path[name.len() + 1..name.len() + 1 + leaf.len()].copy_from_slice(leaf);
            path.as_ptr() as usize
        };
        // SAFETY: raw syscalls with pointers to locals.
        unsafe {
            let flags = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
            let kill = raw::syscall6(
                libc::SYS_openat,
                dir as usize,
                file(&mut path, b"cgroup.kill"),
                flags,
                0,
                0,
                0,
            );
            if kill >= 0 {
                raw::syscall3(libc::SYS_write, kill as usize, b"1".as_ptr() as usize, 1);
                raw::syscall3(libc::SYS_close, kill as usize, 0, 0);
            } else {
                // v1: each pid of cgroup.procs.
                let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as usize;
                let procs = raw::syscall6(
                    libc::SYS_openat,
                    dir as usize,
                    file(&mut path, b"cgroup.procs"),
                    flags,
                    0,
                    0,
                    0,
                );
                if procs >= 0 {
                    let mut text = [0u8; 1024];
                    let len = raw::syscall3(
                        libc::SYS_read,
                        procs as usize,
                        text.as_mut_ptr() as usize,
                        text.len(),
                    );
                    raw::syscall3(libc::SYS_close, procs as usize, 0, 0);
                    let mut pid = 0usize;
                    for &b in &text[..len.max(0) as usize] {
                        if b.is_ascii_digit() {
                            pid = pid * 10 + (b - b'0') as usize;
                        } else {
                            if pid > 0 {
                                raw::syscall3(libc::SYS_kill, pid, libc::SIGKILL as usize, 0);
                            }
                            pid = 0;
                        }
                    }
                }
            }
            path.fill(0);
            path[..name.len()].copy_from_slice(name);
            let gone = raw::syscall3(
                libc::SYS_unlinkat,
                dir as usize,
                path.as_ptr() as usize,
                libc::AT_REMOVEDIR as usize,
            );
            usize::from(gone < 0 && gone != -(libc::ENOENT as isize))
        }
    }
}
