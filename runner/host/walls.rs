//! The walls and limits a worker gets besides seccomp: namespaces, the shared empty network
//! namespace, Landlock, granted paths, the job's cgroups, and the facts about this host they
//! depend on (which namespaces it may make, its ids, the kernel's last capability); what a
//! policy lets a guest do to its worker (change its arena, signal itself), its CPU backstop,
//! and which limits a parked worker was made with.

use crate::abi::RunOptions;
use crate::error::{Error, InputError};
use crate::sys;
use crate::worker::{self, Walls};

/// The job's cgroups (see [`crate::cgroup`]): a pids cgroup when a profile job may have more
/// than one process (required: refused without one), and a memory cgroup for every profile
/// job where the memory controller can be had (its limit: the job's memory, plus room for
/// what the kernel keeps for the worker: page tables, its stack, socket buffers). Strict
/// workers need neither: they can neither fork nor hold memory outside their mappings.
pub(super) fn job_cgroup(options: &RunOptions) -> Result<Option<crate::cgroup::JobCgroup>, Error> {
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
///
/// Written in place into `walls` (a worker's plan's, [`Walls::NONE`] so far), not returned:
/// a strict job's host then has no copy of the 2 KiB of grants in its frames, whose pages it
/// writes on every job (see [`profile_walls`]).
pub(crate) fn walls(options: &RunOptions, walls: &mut Walls) -> Result<(), Error> {
    if arena_reusable(&options.policy) {
        if !options.allow_read.is_empty() || !options.allow_write.is_empty() {
            return Err(Error::Input(InputError::Invalid(
                "--allow-read and --allow-write grant paths to a guest under a profile \
                 (--policy FILE.json); under strict mode it can open no file: nothing to grant"
                    .into(),
            )));
        }
        return Ok(());
    }
    profile_walls(options, walls)
}

/// [`walls`] under a profile. A function of its own: its frame (the grants, built then
/// copied) is about 7 KiB, and a strict job's host would otherwise write those pages of its
/// stack on every job, each a page fault after the last job's fork write-protected it.
#[inline(never)]
fn profile_walls(options: &RunOptions, walls: &mut Walls) -> Result<(), Error> {
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
    Ok(())
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

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`), read
/// once; 63 (every bit of the 64-bit sets) if unreadable.
pub(super) fn cap_last() -> u32 {
    static CAP_LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CAP_LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63)
    })
}

pub(crate) use crate::arena::arena_reusable;

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

/// Whether the guest can raise [`worker::SETUP_FAILED_SIGNAL`] or exit 127 on its own: under a
/// profile, which may allow `kill` and `exit_group`.
pub(crate) fn guest_may_signal(options: &RunOptions) -> bool {
    !arena_reusable(&options.policy)
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
