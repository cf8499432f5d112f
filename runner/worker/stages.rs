//! The worker's post-fork setup, one short function per stage ([`Stage`]); the zygote's
//! preamble uses the same ones.
//!
//! Everything here runs in a fresh fork of a multi-threaded host: another thread may have held
//! the allocator's or stdio's lock at the instant of the fork, and holds it forever here. So
//! this module never allocates, frees, locks, prints, unwinds or runs a destructor, and copies
//! nothing large (a large copy is a `memcpy` call, whose large-copy path reads libc's `.bss`,
//! which a zygote's fork no longer has). It reaches the kernel only through the raw syscall
//! layer: its imports are [`crate::sys::raw`] and the worker [`protocol`](super::protocol),
//! nothing else of the crate, and of `libc` only constants and plain kernel types (no libc
//! function is called). Keep it so: that is what makes it safe to call between `fork` and the
//! guest.
//!
//! Each stage returns a [`SetupError`] (the stage and the kernel's `-errno`) when it fails;
//! the caller ends the worker with [`setup_failed`], which records both for the host.
#![allow(unsafe_code)] // Raw syscalls, after fork: the whole point of this module.

use super::protocol::{
    layout::{REC_ERRNO, REC_STAGE, REC_STATE},
    FixedMap, Grant, Protect, Stage, Walls, DONE_FD, FAULT_SIGNALS, GATE_TRACED, GO_FD, GRANT_PATH,
    INPUT_FD, MAX_GRANTS, OUTPUT_FD, PROCS_PATH_MAX, SETUP_FAILED_SIGNAL, STATE_SETUP_FAILED,
};
use crate::sys::raw::{
    self, sigbit, KernelSigaction, RseqRegistration, StackT, RSEQ_SIG, SA_RESTORER, ZERO_TIME,
};

/// A stage that failed, and how: the kernel's return value (`-errno`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SetupError {
    pub stage: Stage,
    pub ret: isize,
}

/// What a stage returns.
pub(crate) type StageResult<T = ()> = Result<T, SetupError>;

/// `ret` when it is a success, else the failure of `stage`.
#[inline(always)]
fn check(stage: Stage, ret: isize) -> StageResult<isize> {
    if ret < 0 {
        Err(SetupError { stage, ret })
    } else {
        Ok(ret)
    }
}

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: die when the forking thread does. Fork clears it, so
/// every forked process sets its own.
///
/// # Safety
/// Only in a freshly forked child (this whole module's contract).
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn pdeathsig() -> StageResult {
    let pdeathsig = libc::PR_SET_PDEATHSIG as usize;
    // SAFETY: integer arguments.
    let ret = unsafe { raw::syscall3(libc::SYS_prctl, pdeathsig, libc::SIGKILL as usize, 0) };
    check(Stage::Pdeathsig, ret).map(drop)
}

/// Exits quietly (`SYS_exit(0)`) if the host died before [`pdeathsig`] was armed: then this
/// process is someone else's child. In a PID namespace the parent is out of sight
/// (`getppid()` is 0): `host_pidfd` (a pidfd of the host) is asked instead.
///
/// # Safety
/// As for [`pdeathsig`].
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn exit_if_orphaned(host_pid: libc::pid_t, host_pidfd: Option<i32>) {
    // SAFETY: ppoll on a local pollfd with a static zero timeout; getppid.
    unsafe {
        if let Some(fd) = host_pidfd {
            let mut host = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let fds = &mut host as *mut libc::pollfd as usize;
            let zero = &ZERO_TIME as *const libc::timespec as usize;
            if raw::syscall6(libc::SYS_ppoll, fds, 1, zero, 0, 0, 0) != 0 {
                raw::exit(0); // the host has exited (or its pidfd is unusable)
            }
        } else if raw::syscall3(libc::SYS_getppid, 0, 0, 0) != host_pid as isize {
            raw::exit(0);
        }
    }
}

/// In a user namespace of its own (a host that is not root), the worker holds every
/// capability there but no id yet: it maps the host's uid and gid to themselves (after giving
/// up setgroups, as an unprivileged map requires). Files it makes (the empty root's mount
/// points) then have an owner.
///
/// # Safety
/// As for [`pdeathsig`].
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn map_user_ids(walls: &Walls) -> StageResult {
    let fail = |ret| check(Stage::Userns, ret);
    // SAFETY: prctl with integers; open/write/close on static C strings and the plan's
    // NUL-terminated maps.
    unsafe {
        // The map files of a process that is not dumpable (a worker forked by the zygote,
        // which is not) belong to root, and not even the process itself may write them.
        // Dumpable for the three writes only (nothing of a job is mapped yet), then as it
        // was (the host's tracer may need it so until it has seized the worker; the limits
        // stage clears it for good).
        let was = raw::syscall3(libc::SYS_prctl, libc::PR_GET_DUMPABLE as usize, 0, 0);
        let dumpable = libc::PR_SET_DUMPABLE as usize;
        fail(raw::syscall3(libc::SYS_prctl, dumpable, 1, 0))?;
        for (file, text) in [
            (c"/proc/self/setgroups", b"deny\0".as_slice()),
            (c"/proc/self/uid_map", walls.id_maps[0].as_slice()),
            (c"/proc/self/gid_map", walls.id_maps[1].as_slice()),
        ] {
            let flags = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
            let fd = fail(raw::syscall3(
                libc::SYS_open,
                file.as_ptr() as usize,
                flags,
                0,
            ))?;
            let len = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            let text = text.as_ptr() as usize;
            fail(raw::syscall3(libc::SYS_write, fd as usize, text, len))?;
            raw::syscall3(libc::SYS_close, fd as usize, 0, 0);
        }
        let was = was.clamp(0, 1) as usize;
        fail(raw::syscall3(libc::SYS_prctl, dumpable, was, 0)).map(drop)
    }
}

/// Every signal but the faults: what a worker blocks (a fault must still reach its handler).
pub(crate) const fn all_but_faults() -> u64 {
    let mut mask = !0u64;
    let mut i = 0;
    while i < FAULT_SIGNALS.len() {
        mask &= !sigbit(FAULT_SIGNALS[i]);
        i += 1;
    }
    mask
}

/// `rt_sigprocmask(SIG_SETMASK, &mask, NULL, 8)`: block the signals in `mask`.
///
/// # Safety
/// As for [`pdeathsig`].
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn block_signals(mask: u64) -> StageResult {
    let set = &mask as *const u64 as usize;
    let how = libc::SIG_SETMASK as usize;
    // SAFETY: a pointer to a local kernel sigset of 8 bytes.
    let ret = unsafe { raw::syscall6(libc::SYS_rt_sigprocmask, how, set, 0, 8, 0, 0) };
    check(Stage::Sigmask, ret).map(drop)
}

/// Into the job's cgroups (each a NUL-terminated `cgroup.procs` path; empty: none) before
/// anything else can fork ("0": this process).
///
/// # Safety
/// As for [`pdeathsig`].
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn join_cgroups(procs: &[[u8; PROCS_PATH_MAX]]) -> StageResult {
    let fail = |ret| check(Stage::Cgroup, ret);
    for procs in procs.iter().filter(|p| p[0] != 0) {
        let path = procs.as_ptr() as usize;
        let flags = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
        let zero = b"0".as_ptr() as usize;
        // SAFETY: a NUL-terminated path of the plan; a static one-byte buffer.
        unsafe {
            let fd = fail(raw::syscall3(libc::SYS_open, path, flags, 0))?;
            fail(raw::syscall3(libc::SYS_write, fd as usize, zero, 1))?;
            raw::syscall3(libc::SYS_close, fd as usize, 0, 0);
        }
    }
    Ok(())
}

/// Maps `maps` at their fixed addresses. The window is free here (the host's reservation was
/// not inherited); `MAP_FIXED_NOREPLACE` makes sure nothing of this process is ever
/// overwritten all the same.
///
/// # Safety
/// As for [`pdeathsig`]; the addresses lie in the arena's window, free in this process.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn map(maps: &[FixedMap]) -> StageResult {
    for m in maps {
        let flags = libc::MAP_FIXED_NOREPLACE
            | if m.fd >= 0 {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
            };
        let (prot, flags, fd) = (m.prot as usize, flags as usize, m.fd as usize);
        // SAFETY: NOREPLACE: the kernel maps only where nothing is mapped.
        let got =
            unsafe { raw::syscall6(libc::SYS_mmap, m.addr, m.len, prot, flags, fd, m.offset) };
        if got != m.addr as isize {
            // Older kernels treat NOREPLACE as a hint and may map elsewhere.
            let ret = if got < 0 {
                got
            } else {
                -(libc::EEXIST as isize)
            };
            return Err(SetupError {
                stage: Stage::Map,
                ret,
            });
        }
    }
    Ok(())
}

/// Applies `protects` (the blob page made read+execute, and for a same-code worker the XSAVE
/// image and the filter area read-only); one of length 0 is none.
///
/// # Safety
/// As for [`map`]; the ranges are the worker's own mappings.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn protect(protects: &[Protect]) -> StageResult {
    for p in protects.iter().filter(|p| p.len != 0) {
        // SAFETY: changes the protection of a range this stage's caller mapped.
        let ret = unsafe { raw::syscall3(libc::SYS_mprotect, p.addr, p.len, p.prot as usize) };
        check(Stage::Map, ret)?;
    }
    Ok(())
}

/// A traced worker waits at the gate in its data page until its tracer has tried to seize it
/// (or there was no tracer to ask); says what the gate said (see [`crate::tracer::seize`]).
///
/// # Safety
/// As for [`pdeathsig`]; `data` is the mapped data page.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn wait_for_tracer(data: usize) -> bool {
    let gate = data + super::protocol::layout::CTX_TRACE_GATE;
    // SAFETY: the gate is an aligned u32 in the mapped, shared data page; FUTEX_WAIT reads it.
    unsafe {
        // One read decides: a gate found open is not read again.
        loop {
            let said = (gate as *const u32).read_volatile();
            if said != 0 {
                return said == GATE_TRACED;
            }
            let wait = libc::FUTEX_WAIT as usize;
            raw::syscall6(libc::SYS_futex, gate, wait, 0, 0, 0, 0);
        }
    }
}

/// Gives a worker in its own mount namespace an empty, read-only root: nothing of the host's
/// file system is left to reach by path (unix sockets, files' metadata, directories to watch),
/// whatever Landlock does not cover. Mounts stop propagating, a tmpfs goes over `/proc` (a
/// directory every Linux host has), becomes the root (`pivot_root(".", ".")`), and the old
/// root is detached. The paths in `grants` are cloned from the host's tree first
/// (`open_tree`, read-only unless granted for writing, never setuid, devices or exec), and
/// mounted at the same paths in the tmpfs (on mount points made for them) before it is made
/// read-only.
///
/// # Safety
/// As for [`pdeathsig`], in a mount namespace of the worker's own, before capabilities drop.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn empty_root(grants: &[Grant; MAX_GRANTS]) -> StageResult {
    const OPEN_TREE_CLONE: usize = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: usize = 4;
    const MOUNT_ATTR_RDONLY: u64 = 1;
    const MOUNT_ATTR_NOSUID: u64 = 2;
    const MOUNT_ATTR_NODEV: u64 = 4;
    const MOUNT_ATTR_NOEXEC: u64 = 8;
    let fail = |ret| check(Stage::Root, ret);
    let root = c"/".as_ptr() as usize;
    let dot = c".".as_ptr() as usize;
    let empty = c"".as_ptr() as usize;
    let mountpoint = c"/proc".as_ptr() as usize;
    let tmpfs = c"tmpfs".as_ptr() as usize;
    let options = c"size=4k,mode=0555".as_ptr() as usize;
    let ro = (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as usize;
    let cwd = libc::AT_FDCWD as usize;
    let exists = -(libc::EEXIST as isize);
    // SAFETY: raw syscalls on NUL-terminated string literals of this binary, on the plan's
    // NUL-terminated paths, and on locals.
    unsafe {
        let private = (libc::MS_REC | libc::MS_PRIVATE) as usize;
        fail(raw::syscall6(libc::SYS_mount, 0, root, 0, private, 0, 0))?;
        // The granted paths, cloned while the host's tree is still in reach.
        let mut trees = [-1isize; MAX_GRANTS];
        for (tree, grant) in trees.iter_mut().zip(grants) {
            if grant.path[0] == 0 {
                break;
            }
            let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as usize;
            let path = grant.path.as_ptr() as usize;
            let fd = fail(raw::syscall3(libc::SYS_open_tree, cwd, path, flags))?;
            let mut set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
            if !grant.write {
                set |= MOUNT_ATTR_RDONLY;
            }
            // struct mount_attr: attr_set, attr_clr, propagation, userns_fd.
            let attr = [set, 0u64, 0, 0];
            let at_empty = libc::AT_EMPTY_PATH as usize;
            let size = std::mem::size_of_val(&attr);
            let attr = attr.as_ptr() as usize;
            let fd_ = fd as usize;
            fail(raw::syscall6(
                libc::SYS_mount_setattr,
                fd_,
                empty,
                at_empty,
                attr,
                size,
                0,
            ))?;
            *tree = fd;
        }
        let granting = trees[0] >= 0;
        // Writable only while the grants' mount points are made in it.
        let flags = if granting {
            ro & !(libc::MS_RDONLY as usize)
        } else {
            ro
        };
        fail(raw::syscall6(
            libc::SYS_mount,
            tmpfs,
            mountpoint,
            tmpfs,
            flags,
            options,
            0,
        ))?;
        for (&tree, grant) in trees.iter().zip(grants).filter(|(&tree, _)| tree >= 0) {
            // "/proc" + the path: where the path will be once the tmpfs is the root.
            let mut target = [0u8; 5 + GRANT_PATH];
            target[..5].copy_from_slice(b"/proc");
            let len = grant.path.iter().position(|&b| b == 0).unwrap_or(0);
            target[5..5 + len].copy_from_slice(&grant.path[..len]);
            // Its parent directories, in the tmpfs (no grant lies inside another).
            // (Cut at each '/' in turn: the buffer is the path the kernel reads.)
            let mut slash = 6;
            while slash < 5 + len {
                if target[slash] == b'/' {
                    target[slash] = 0;
                    let at = target.as_ptr() as usize;
                    let made = raw::syscall3(libc::SYS_mkdir, at, 0o555, 0);
                    target[slash] = b'/';
                    if made != exists {
                        fail(made)?;
                    }
                }
                slash += 1;
            }
            let at = target.as_ptr() as usize;
            let made = if grant.dir {
                raw::syscall3(libc::SYS_mkdir, at, 0o555, 0)
            } else {
                let file = (libc::S_IFREG | 0o444) as usize;
                raw::syscall6(libc::SYS_mknodat, cwd, at, file, 0, 0, 0)
            };
            if made != exists {
                fail(made)?;
            }
            let from_empty = MOVE_MOUNT_F_EMPTY_PATH;
            let tree = tree as usize;
            fail(raw::syscall6(
                libc::SYS_move_mount,
                tree,
                empty,
                cwd,
                at,
                from_empty,
                0,
            ))?;
            raw::syscall3(libc::SYS_close, tree, 0, 0);
        }
        if granting {
            let remount = ro | libc::MS_REMOUNT as usize;
            fail(raw::syscall6(
                libc::SYS_mount,
                0,
                mountpoint,
                0,
                remount,
                options,
                0,
            ))?;
        }
        fail(raw::syscall3(libc::SYS_chdir, mountpoint, 0, 0))?;
        fail(raw::syscall3(libc::SYS_pivot_root, dot, dot, 0))?;
        let detach = libc::MNT_DETACH as usize;
        fail(raw::syscall3(libc::SYS_umount2, dot, detach, 0))?;
        fail(raw::syscall3(libc::SYS_chdir, root, 0, 0)).map(drop)
    }
}

/// `setns(netns, CLONE_NEWNET)`: into the shared empty network namespace.
///
/// # Safety
/// As for [`pdeathsig`].
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn join_netns(netns: i32) -> StageResult {
    let kind = libc::CLONE_NEWNET as usize;
    // SAFETY: integer arguments.
    let ret = unsafe { raw::syscall3(libc::SYS_setns, netns as usize, kind, 0) };
    check(Stage::Netns, ret).map(drop)
}

/// The descriptors a worker runs with: the input pipe on [`INPUT_FD`], the output on
/// [`OUTPUT_FD`], the control pipes (those present) on [`GO_FD`] and [`DONE_FD`], and nothing
/// else open (the arena's memfd neither): in strict mode the guest can read and write any
/// descriptor that is still open.
///
/// # Safety
/// As for [`pdeathsig`]; the descriptors are this process's.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn move_fds(input: i32, output: i32, control_fds: [i32; 2]) -> StageResult {
    let fail = |ret| check(Stage::Fds, ret);
    let dup = libc::F_DUPFD as usize;
    // SAFETY: fcntl/dup2/close_range on descriptors of this process.
    unsafe {
        // Control pipes first go above every low descriptor, out of the other pipes' way.
        let mut control = [-1; 2];
        for (moved, fd) in control.iter_mut().zip(control_fds) {
            if fd >= 0 {
                *moved = fail(raw::syscall3(libc::SYS_fcntl, fd as usize, dup, 10))? as i32;
            }
        }
        let controlled = control.iter().any(|&fd| fd >= 0);
        // Move the pipes to 0 and 1 without one clobbering the other.
        let (mut input, mut output) = (input, output);
        if output == INPUT_FD as i32 {
            output = fail(raw::syscall3(libc::SYS_fcntl, INPUT_FD, dup, 3))? as i32;
        }
        if input == OUTPUT_FD as i32 {
            input = fail(raw::syscall3(libc::SYS_fcntl, OUTPUT_FD, dup, 3))? as i32;
        }
        if input != INPUT_FD as i32 {
            fail(raw::syscall3(libc::SYS_dup2, input as usize, INPUT_FD, 0))?;
        }
        if output != OUTPUT_FD as i32 {
            fail(raw::syscall3(libc::SYS_dup2, output as usize, OUTPUT_FD, 0))?;
        }
        // dup2 leaves fd 0/1 without FD_CLOEXEC; when input was already 0 it keeps the flag,
        // which is harmless: nothing here ever execs.
        if controlled {
            for (fd, target) in control.into_iter().zip([GO_FD, DONE_FD]) {
                let ret = if fd >= 0 {
                    raw::syscall3(libc::SYS_dup2, fd as usize, target, 0)
                } else {
                    // An absent pipe: nothing stays open at its number.
                    raw::syscall3(libc::SYS_close_range, target, target, 0)
                };
                fail(ret)?;
            }
            close_range(2, 2)?;
        }
        let first_closed = if controlled { DONE_FD + 1 } else { 2 };
        close_range(first_closed, u32::MAX as usize)
    }
}

/// `close_range(first, last, 0)`; see close_range(2).
///
/// # Safety
/// As for [`pdeathsig`]; nothing of this process uses the descriptors any more.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn close_range(first: usize, last: usize) -> StageResult {
    // SAFETY: integer arguments; the caller no longer uses the descriptors.
    let ret = unsafe { raw::syscall3(libc::SYS_close_range, first, last, 0) };
    check(Stage::Close, ret).map(drop)
}

/// `setpgid(0, 0)`: terminal-generated signals go to the host's process group, not to the
/// guest. Best effort.
///
/// # Safety
/// As for [`pdeathsig`].
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn own_process_group() {
    // SAFETY: integer arguments.
    unsafe { raw::syscall3(libc::SYS_setpgid, 0, 0, 0) };
}

/// `RLIMIT_CORE` 0 and `PR_SET_DUMPABLE` 0: a core would hold the host's memory, and no
/// other process of the user may read this one's.
///
/// # Safety
/// As for [`pdeathsig`].
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn no_core_dump() -> StageResult {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let core = libc::RLIMIT_CORE as usize;
    let limit = &no_core as *const libc::rlimit as usize;
    // SAFETY: a pointer to a local rlimit; integer arguments.
    unsafe {
        check(
            Stage::Limits,
            raw::syscall3(libc::SYS_setrlimit, core, limit, 0),
        )?;
        let dumpable = libc::PR_SET_DUMPABLE as usize;
        check(
            Stage::Limits,
            raw::syscall3(libc::SYS_prctl, dumpable, 0, 0),
        )
        .map(drop)
    }
}

/// `RLIMIT_CPU` at `cpu_secs`, then each of `rlimits`, soft == hard: at the CPU limit the
/// kernel sends SIGKILL, never a SIGXCPU the guest could unblock and die of.
///
/// # Safety
/// As for [`pdeathsig`].
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn limits(cpu_secs: u64, rlimits: &[(u32, u64)]) -> StageResult {
    let cpu = (libc::RLIMIT_CPU, cpu_secs);
    for &(resource, value) in core::iter::once(&cpu).chain(rlimits) {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        let limit = &limit as *const libc::rlimit as usize;
        // SAFETY: a pointer to a local rlimit.
        let ret = unsafe { raw::syscall3(libc::SYS_setrlimit, resource as usize, limit, 0) };
        check(Stage::Limits, ret)?;
    }
    Ok(())
}

/// `sigaltstack` at `[sp, sp + size)`: a stack overflow must still be able to report.
///
/// # Safety
/// As for [`pdeathsig`]; the range is mapped read+write for as long as handlers may run.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn altstack(sp: usize, size: usize) -> StageResult {
    let stack = StackT { sp, flags: 0, size };
    let stack = &stack as *const StackT as usize;
    // SAFETY: a pointer to a local stack_t; the caller vouches for the range.
    let ret = unsafe { raw::syscall3(libc::SYS_sigaltstack, stack, 0, 0) };
    check(Stage::Altstack, ret).map(drop)
}

/// The fault signals' actions: the blob's `handler` (with its `restorer`) records a fault and
/// re-raises it. A traced worker keeps the default action instead: its tracer sees each
/// signal's delivery from the kernel, and the default action ends the worker with it (the
/// host's own handlers, inherited with the fork, would run in unmapped memory). SIGSYS only
/// where a filter can send it (strict mode kills, and no guest can call kill).
///
/// # Safety
/// As for [`pdeathsig`]; `handler` and `restorer` are the blob's entry points, mapped.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn fault_handlers(
    handler: usize,
    restorer: usize,
    traced: bool,
    filter_mode: bool,
) -> StageResult {
    let action = KernelSigaction {
        handler,
        // SA_SIGINFO: the handler needs siginfo (address) and ucontext (rip).
        // SA_ONSTACK: a stack overflow must still be able to report.
        // SA_RESETHAND: the re-raise stub then dies of the default action.
        // SA_RESTORER: x86-64 requires one; ours lives in the blob, not in libc.
        flags: (libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND | SA_RESTORER) as u64,
        restorer,
        // Block everything while the handler runs.
        mask: !0u64,
    };
    // Both actions and the signals are built here or kept beside this code, never read from
    // `.rodata`: a page of it the worker touches only here would cost a page fault of its own.
    let action = if traced {
        KernelSigaction::DEFAULT
    } else {
        action
    };
    let handled = if filter_mode || traced {
        &SIGNALS[..]
    } else {
        &SIGNALS[..SIGNALS.len() - 1]
    };
    let act = &action as *const KernelSigaction as usize;
    for &sig in handled {
        // SAFETY: a pointer to a local kernel sigaction, sigset size 8.
        let ret = unsafe { raw::syscall6(libc::SYS_rt_sigaction, sig as usize, act, 0, 8, 0, 0) };
        check(Stage::Sigaction, ret)?;
    }
    Ok(())
}

/// [`FAULT_SIGNALS`], in the section of the post-fork code (see [`fault_handlers`]).
#[link_section = ".text.hot.bytejail_worker"]
static SIGNALS: [i32; FAULT_SIGNALS.len()] = FAULT_SIGNALS;

/// Unregisters the inherited rseq area: the kernel writes it (in the host's memory) at every
/// preemption; with that memory gone it would kill the guest with SIGSEGV.
///
/// # Safety
/// As for [`pdeathsig`]; `rseq` is this thread's registration, inherited from the forking one.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn unregister_rseq(rseq: &RseqRegistration) -> StageResult {
    let mut ret = 0;
    for len in rseq.lengths {
        let sig = RSEQ_SIG as usize;
        // SAFETY: RSEQ_FLAG_UNREGISTER (1) of the registered area; the kernel only compares.
        ret = unsafe { raw::syscall6(libc::SYS_rseq, rseq.addr, len as usize, 1, sig, 0, 0) };
        if ret == 0 {
            break;
        }
    }
    check(Stage::Rseq, ret).map(drop)
}

/// Filter mode's extra set-up, which strict mode implies: `no_new_privs` (required to install a
/// filter without CAP_SYS_ADMIN), the TSC disabled as in strict mode, and, when the worker holds
/// any (as root it holds all), every capability dropped: bounding set, ambient set, then the
/// effective, permitted and inheritable sets.
///
/// # Safety
/// As for [`pdeathsig`].
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn drop_privileges(cap_last: u32) -> StageResult {
    let fail = |ret| check(Stage::Privileges, ret);
    // SAFETY: raw syscalls with integer arguments or pointers to locals.
    unsafe {
        let prctl = |op: i32, arg: usize| raw::syscall3(libc::SYS_prctl, op as usize, arg, 0);
        fail(prctl(libc::PR_SET_NO_NEW_PRIVS, 1))?;
        fail(prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV as usize))?;
        for cap in 0..=cap_last as usize {
            // EPERM without CAP_SETPCAP: then the worker is unprivileged and the bounding set
            // cannot matter (no_new_privs, no exec).
            prctl(libc::PR_CAPBSET_DROP, cap);
        }
        let ambient = libc::PR_CAP_AMBIENT as usize;
        let clear_all = libc::PR_CAP_AMBIENT_CLEAR_ALL as usize;
        raw::syscall6(libc::SYS_prctl, ambient, clear_all, 0, 0, 0, 0);
        // capset(v3 header for this process, all-zero data for both 32-bit halves).
        let header: [u32; 2] = [0x2008_0522, 0]; // _LINUX_CAPABILITY_VERSION_3, pid 0 = self
        let none = [0u32; 6];
        let (header, none) = (header.as_ptr() as usize, none.as_ptr() as usize);
        fail(raw::syscall3(libc::SYS_capset, header, none, 0)).map(drop)
    }
}

/// Landlock: a ruleset that handles every right this kernel knows (`walls.landlock`) and
/// grants only the granted paths (at the same path in the empty root, if any). Needs
/// `no_new_privs` ([`drop_privileges`]).
///
/// # Safety
/// As for [`pdeathsig`].
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn landlock(walls: &Walls) -> StageResult {
    const LANDLOCK_RULE_PATH_BENEATH: usize = 1;
    let fail = |ret| check(Stage::Landlock, ret);
    // SAFETY: raw syscalls on the plan's attributes and NUL-terminated paths, and on locals.
    unsafe {
        // 24 bytes: fields this kernel lacks are zero.
        let attr = &walls.landlock;
        let size = std::mem::size_of_val(attr);
        let create = libc::SYS_landlock_create_ruleset;
        let ruleset = fail(raw::syscall3(create, attr.as_ptr() as usize, size, 0))? as usize;
        for grant in walls.grants.iter().take_while(|g| g.path[0] != 0) {
            let path = grant.path.as_ptr() as usize;
            let flags = (libc::O_PATH | libc::O_CLOEXEC) as usize;
            let fd = fail(raw::syscall3(libc::SYS_open, path, flags, 0))?;
            // struct landlock_path_beneath_attr (packed): allowed_access, parent_fd.
            let mut rule = [0u8; 12];
            rule[..8].copy_from_slice(&grant.access.to_ne_bytes());
            rule[8..].copy_from_slice(&(fd as i32).to_ne_bytes());
            let rule = rule.as_ptr() as usize;
            let add = libc::SYS_landlock_add_rule;
            fail(raw::syscall6(
                add,
                ruleset,
                LANDLOCK_RULE_PATH_BENEATH,
                rule,
                0,
                0,
                0,
            ))?;
            raw::syscall3(libc::SYS_close, fd as usize, 0, 0);
        }
        fail(raw::syscall3(
            libc::SYS_landlock_restrict_self,
            ruleset,
            0,
            0,
        ))?;
        raw::syscall3(libc::SYS_close, ruleset, 0, 0);
    }
    Ok(())
}

/// Ends a worker whose setup failed: records the stage and errno (once the region is mapped:
/// `data` is then its data page's address) and dies of [`SETUP_FAILED_SIGNAL`], which no guest
/// can raise.
///
/// # Safety
/// As for [`pdeathsig`]; `data` is the address of the mapped data page, or `None` before it
/// is mapped.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn setup_failed(data: Option<usize>, error: SetupError) -> ! {
    // SAFETY: the data page is mapped read+write when `data` is given (caller's contract);
    // the syscalls take pointers to locals.
    unsafe {
        if let Some(data) = data {
            ((data + REC_STAGE) as *mut u64).write_volatile(error.stage as u64);
            ((data + REC_ERRNO) as *mut u64).write_volatile(error.ret.unsigned_abs() as u64);
            ((data + REC_STATE) as *mut u64).write_volatile(STATE_SETUP_FAILED);
        }
        let unblock = sigbit(SETUP_FAILED_SIGNAL);
        let sig = SETUP_FAILED_SIGNAL as usize;
        let dfl = &KernelSigaction::DEFAULT as *const KernelSigaction as usize;
        raw::syscall6(libc::SYS_rt_sigaction, sig, dfl, 0, 8, 0, 0);
        let set = &unblock as *const u64 as usize;
        let how = libc::SIG_UNBLOCK as usize;
        raw::syscall6(libc::SYS_rt_sigprocmask, how, set, 0, 8, 0, 0);
        let pid = raw::syscall3(libc::SYS_getpid, 0, 0, 0);
        raw::syscall3(libc::SYS_kill, pid as usize, sig, 0);
    }
    raw::exit(127)
}
