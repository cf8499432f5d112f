//! A pids cgroup per job, for jobs that may create processes (`Limits::max_procs` above 1).
//!
//! A job under a profile that allows `fork` or `clone` runs as init of its own PID namespace,
//! so its whole tree dies with it; the namespace alone does not bound how many processes the
//! tree has at once. The kernel's pids controller does: the host makes a cgroup for the job
//! with `pids.max`, the worker moves itself into it before the guest runs (writing `0` to its
//! `cgroup.procs`), and the host removes it once the worker is reaped (when, with the PID
//! namespace, nothing of the job is left in it).
//!
//! Both hierarchies are found at run time: a cgroup v1 `pids` mount (as on machines that mount
//! the v1 controllers), or the v2 unified hierarchy with the pids controller available at its
//! root. `RLIMIT_NPROC` cannot do this job: it never limits uid 0 and counts per user, not
//! per job.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Room for the NUL-terminated path of a job's `cgroup.procs` in a worker's plan.
pub(crate) const PROCS_PATH_MAX: usize = 192;

/// The directory under which jobs' cgroups are made (`bytejail/<host pid>-<n>` in the pids
/// hierarchy), or why there is none.
fn parent() -> Result<&'static Path, &'static str> {
    static PARENT: OnceLock<Result<PathBuf, &'static str>> = OnceLock::new();
    PARENT
        .get_or_init(|| {
            let root = pids_root().ok_or("no pids cgroup controller is mounted")?;
            let parent = root.join("bytejail");
            match std::fs::create_dir(&parent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(_) => return Err("the pids cgroup hierarchy is not writable here"),
            }
            sweep(&parent);
            if root.join("cgroup.subtree_control").exists() {
                // v2: the parent hands the pids controller down to the job cgroups.
                std::fs::write(parent.join("cgroup.subtree_control"), "+pids")
                    .map_err(|_| "the pids controller cannot be enabled for job cgroups")?;
            }
            Ok(parent)
        })
        .as_deref()
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

/// Where the pids controller is mounted: a v1 hierarchy with `pids` among its options, else
/// the v2 unified hierarchy if its root offers `pids` (and can hand it down).
fn pids_root() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut v2 = None;
    for line in mountinfo.lines() {
        // ... mount-point ... - fstype source super-options
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let options = right.nth(1).unwrap_or("");
        if fstype == "cgroup" && options.split(',').any(|o| o == "pids") {
            return Some(PathBuf::from(mount_point));
        }
        if fstype == "cgroup2" {
            let controllers =
                std::fs::read_to_string(Path::new(mount_point).join("cgroup.controllers"));
            if controllers.is_ok_and(|c| c.split_whitespace().any(|c| c == "pids")) {
                v2.get_or_insert_with(|| PathBuf::from(mount_point));
            }
        }
    }
    v2
}

/// Whether jobs can get a pids cgroup here; the reason when they cannot.
pub(crate) fn available() -> Result<(), &'static str> {
    parent().map(|_| ())
}

/// One job's cgroup, removed on drop (after its worker is reaped).
#[derive(Debug)]
pub(crate) struct JobCgroup {
    dir: PathBuf,
}

impl JobCgroup {
    /// Makes a cgroup that holds at most `max_procs` processes and threads.
    pub(crate) fn new(max_procs: u32) -> io::Result<JobCgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let parent = parent().map_err(io::Error::other)?;
        retry_stale();
        let job = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("{}-{job}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let cgroup = JobCgroup { dir };
        std::fs::write(cgroup.dir.join("pids.max"), max_procs.to_string())?;
        Ok(cgroup)
    }

    /// The NUL-terminated path of its `cgroup.procs`, for the worker to write itself into.
    pub(crate) fn procs_path(&self) -> io::Result<[u8; PROCS_PATH_MAX]> {
        let path = self.dir.join("cgroup.procs");
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        let mut out = [0u8; PROCS_PATH_MAX];
        if bytes.len() >= PROCS_PATH_MAX || bytes.contains(&0) {
            return Err(io::Error::other(format!(
                "the cgroup path {} is longer than {} bytes",
                path.display(),
                PROCS_PATH_MAX - 1
            )));
        }
        out[..bytes.len()].copy_from_slice(bytes);
        Ok(out)
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
        if std::fs::remove_dir(&self.dir).is_err() {
            let dir = std::mem::take(&mut self.dir);
            STALE.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
        }
    }
}
