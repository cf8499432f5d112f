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

/// A cgroup controller bytejail uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Controller {
    Pids,
    Memory,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
        }
    }
}

/// A controller's `bytejail` directory, under which jobs' cgroups are made
/// (`bytejail/<host pid>-<n>`), and whether it is in the v2 hierarchy; or why there is none.
fn parent(controller: Controller) -> Result<&'static (PathBuf, bool), &'static str> {
    static PARENTS: [OnceLock<Result<(PathBuf, bool), &'static str>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    PARENTS[controller as usize]
        .get_or_init(|| {
            let (root, v2) = controller_root(controller.name()).ok_or(match controller {
                Controller::Pids => "no pids cgroup controller is mounted",
                Controller::Memory => "no memory cgroup controller is mounted",
            })?;
            let parent = root.join("bytejail");
            match std::fs::create_dir(&parent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(_) => return Err("the cgroup hierarchy is not writable here"),
            }
            sweep(&parent);
            if v2 {
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
/// unified hierarchy if its root offers it (and can hand it down). `true` for v2.
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
        if fstype == "cgroup2" {
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
}

impl JobCgroup {
    /// Makes the job's cgroups: one that holds at most `max_procs` processes and threads when
    /// given, one whose memory may not pass `memory` bytes when given.
    pub(crate) fn new(max_procs: Option<u32>, memory: Option<u64>) -> io::Result<JobCgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        retry_stale();
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
        Ok(cgroup)
    }

    /// The NUL-terminated paths of its `cgroup.procs` files (an empty path for none), for the
    /// worker to write itself into.
    pub(crate) fn procs_paths(&self) -> io::Result<[[u8; PROCS_PATH_MAX]; 2]> {
        let mut out = [[0u8; PROCS_PATH_MAX]; 2];
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
