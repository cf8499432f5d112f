//! The worker side of a run: everything that happens between `fork` and the guest's end.
//!
//! - [`protocol`]: what the host, the zygote, the setup and the blob agree on (the region's
//!   layout, descriptor numbers, messages, stages, the plan / fork request);
//! - [`blob`](mod@blob): the position-independent assembly the host copies into each region
//!   (trampoline, fault handler, the setup's last steps);
//! - [`stages`]: the post-fork setup, one function per stage, on raw syscalls only;
//! - here: [`spawn`] / [`enter`] and [`worker_main`], which runs the stages in order.
//!
//! After fork this process may hold a copy of a multi-threaded host whose other threads held
//! the allocator's or stdio's locks at that instant. So the worker path never allocates, frees,
//! locks, prints, unwinds or runs destructors: it issues raw syscalls on data the host built
//! before the fork ([`WorkerPlan`], the blob region), and ends in the guest or in raw
//! `SYS_exit`.
#![allow(unsafe_code)] // The fork, and the post-fork path's jump into the blob.

mod blob;
pub(crate) mod protocol;
pub(crate) mod stages;

pub(crate) use blob::blob;
pub(crate) use protocol::{
    layout, FixedMap, Grant, Protect, Walls, WorkerPlan, PROTECTS, SETUP_FAILED_SIGNAL, STAGES,
};

use protocol::layout::{ALTSTACK, ALTSTACK_LEN, CODE, DATA};
use stages::{SetupError, StageResult};

/// Forks a worker that runs `plan`, returning its pid and pidfd in the host.
///
/// The arena behind `plan` must stay alive and untouched until the worker is reaped.
#[inline(never)]
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) fn spawn(plan: &WorkerPlan) -> std::io::Result<(libc::pid_t, std::os::fd::OwnedFd)> {
    // SAFETY: the child runs only `worker_entry`, which issues raw syscalls on `plan` (plain
    // data on this stack) and the arena's descriptor, and never returns.
    match unsafe { crate::sys::clone_with_pidfd(plan.walls.clone_flags) }? {
        crate::sys::Forked::Child => worker_entry(plan),
        crate::sys::Forked::Parent { pid, pidfd } => Ok((pid, pidfd)),
    }
}

/// Runs `plan` in a child forked elsewhere (by the zygote, see [`crate::zygote`]). Never returns.
///
/// # Safety
/// As for [`worker_main`]: only in a freshly forked child, with `plan`'s descriptors open here.
#[link_section = ".text.hot.bytejail_worker"]
pub(crate) unsafe fn enter(plan: &WorkerPlan) -> ! {
    worker_entry(plan)
}

/// The child's entry. `extern "C"` so that a panic (there is none to raise) would abort
/// instead of unwinding into a copy of the host's stack.
#[link_section = ".text.hot.bytejail_worker"]
extern "C" fn worker_entry(plan: &WorkerPlan) -> ! {
    // SAFETY: called only in the child of `clone_with_pidfd`, with the arena prepared.
    unsafe { worker_main(plan) }
}

/// The post-fork path: sets the worker up and enters the guest. Never returns.
///
/// In order: die with the host; ids in a user namespace; block every signal but the faults;
/// the job's cgroups; map the arena's parts at the host's addresses; wait for the tracer; an
/// empty root, an empty network namespace; fds 0 and 1 become the pipes (3 and 4 the control
/// pipes) and every other fd is closed (the arena's memfd too); own process group (terminal
/// signals are the host's); no core, not dumpable, CPU backstop and limits; fault handlers on
/// an alternate stack; rseq undone; filter mode's privileges, Landlock; then the blob's
/// `finish`: unmap everything but the arena (unless the run opted out), the memory limit,
/// seccomp, the trampoline. A failing stage ends the worker in [`stages::setup_failed`].
///
/// # Safety
/// Call only in the child of [`crate::sys::clone_with_pidfd`], with `plan` describing an
/// arena the host prepared (blob copied, context written) whose window is free here.
#[link_section = ".text.hot.bytejail_worker"]
unsafe fn worker_main(plan: &WorkerPlan) -> ! {
    let fail = |data: Option<usize>, error: SetupError| -> ! {
        // SAFETY: `data` is given only once the data page is mapped.
        unsafe { stages::setup_failed(data, error) }
    };
    // SAFETY: this is the freshly forked child the stages require.
    if let Err(e) = unsafe { before_mapping(plan) } {
        fail(None, e)
    }
    // The region is the first mapping: the record is writable once it is in place.
    let (region, rest) = plan.maps.split_at(1);
    // SAFETY: as above; the window is free here.
    if let Err(e) = unsafe { stages::map(region) } {
        fail(None, e)
    }
    let data = plan.region + DATA;
    // SAFETY: as above; the data page is mapped.
    let finish = match unsafe { after_mapping(plan, rest, data) } {
        Ok(finish) => finish,
        Err(e) => fail(Some(data), e),
    };
    // SAFETY: the blob's `finish` is mapped read+execute at this address; it unmaps
    // everything outside the arena (this code and stack included, unless the run opted out),
    // enters seccomp and jumps to the trampoline, never returning here.
    unsafe { std::arch::asm!("jmp {}", in(reg) finish, options(noreturn)) }
}

/// The stages before the region is mapped (a failure cannot be recorded yet).
///
/// # Safety
/// As for [`worker_main`].
#[link_section = ".text.hot.bytejail_worker"]
unsafe fn before_mapping(plan: &WorkerPlan) -> StageResult {
    let walls = &plan.walls;
    // SAFETY: the caller's contract is the stages' own.
    unsafe {
        stages::pdeathsig()?;
        let host_pidfd = walls.pid_namespace().then_some(walls.host_pidfd);
        stages::exit_if_orphaned(plan.host_pid, host_pidfd);
        if walls.clone_flags & libc::CLONE_NEWUSER as usize != 0 {
            stages::map_user_ids(walls)?;
        }
        stages::block_signals(const { stages::all_but_faults() })?;
        stages::join_cgroups(&plan.cgroup_procs)
    }
}

/// The stages after the region is mapped, up to the blob's `finish`: returns its address.
///
/// # Safety
/// As for [`worker_main`]; `data` is the mapped data page and `rest` the other mappings.
#[link_section = ".text.hot.bytejail_worker"]
unsafe fn after_mapping(
    plan: &WorkerPlan,
    rest: &[protocol::FixedMap],
    data: usize,
) -> StageResult<usize> {
    let walls = &plan.walls;
    // SAFETY: the caller's contract is the stages' own.
    unsafe {
        stages::map(rest)?;
        stages::protect(&plan.protects)?;
        // A traced worker waits here until its tracer has tried to seize it (or there was no
        // tracer to ask): before it makes itself undumpable, and before the guest runs.
        let traced = plan.traced && stages::wait_for_tracer(data);
        if walls.clone_flags & libc::CLONE_NEWNS as usize != 0 {
            stages::empty_root(&walls.grants)?;
        }
        if walls.netns_fd >= 0 {
            stages::join_netns(walls.netns_fd)?;
        }
        stages::move_fds(plan.input_fd, plan.output_fd, plan.control_fds)?;
        stages::own_process_group();
        stages::no_core_dump()?;
        stages::limits(plan.cpu_limit_secs, &plan.rlimits)?;
        stages::altstack(plan.region + ALTSTACK, ALTSTACK_LEN)?;
        let blob = blob();
        let code = plan.region + CODE;
        let (handler, restorer) = (code + blob.handler, code + blob.restorer);
        stages::fault_handlers(handler, restorer, traced, plan.filter_mode)?;
        if let (true, Some(rseq)) = (plan.scrub, &plan.rseq) {
            stages::unregister_rseq(rseq)?;
        }
        if plan.filter_mode {
            stages::drop_privileges(plan.cap_last)?;
        }
        if walls.landlock != [0; 3] {
            stages::landlock(walls)?;
        }
        Ok(code + blob.finish)
    }
}
