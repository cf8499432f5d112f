//! The tracer: what the kernel itself says about how a worker ended, for the details of a
//! report that a guest must not be able to forge.
//!
//! A worker's record page is the guest's to write, so a fault address or a trapped syscall
//! read from it is only a claim. A traced worker is `PTRACE_SEIZE`d before its setup goes on
//! (the worker waits at a gate in its data page, see
//! [`crate::worker::layout::CTX_TRACE_GATE`], which the tracer opens itself once it has tried,
//! before it answers the host: a switch less per fresh worker on a shared CPU), with
//! `PTRACE_O_TRACEEXIT` and `PTRACE_O_EXITKILL`. The tracer then sees, from the kernel:
//! - every signal at its delivery (`PTRACE_GETSIGINFO` and the registers): a fault's address
//!   and instruction, a filter's trapped syscall and its arguments;
//! - the worker's exit, before its memory goes (`PTRACE_EVENT_EXIT`): the exit status, and for
//!   a strict-mode violation (the kernel's `do_exit(SIGKILL)` from the syscall entry) the
//!   syscall number in `orig_rax`, its six arguments and its ABI.
//!
//! The tracer is a process of its own, not a thread of the host: a ptrace stop is reported to
//! every thread of the tracer's process that waits for children, and a host whose other
//! threads reap any child (`waitpid(-1)`, as some servers do) would take the stop and leave the
//! worker stopped for good. A tracer process is started the first time a traced worker is
//! needed (one per CPU for threads that keep to one CPU, one for all other threads, see
//! [`tracer`]), and is single-threaded, so it can wait for requests and for stops at once
//! (`ppoll` on its request socket and a `signalfd` for SIGCHLD). It is a `CLONE_VM` clone of
//! the host, on a stack of its own: a process with its own descriptors and signal state that
//! shares the host's memory, so starting it copies no page tables and its end tears none down
//! (see [`crate::sys::clone_vm_with_pidfd`]). It runs nothing but raw syscalls (it shares the
//! memory of a host that may have other threads). It writes what it sees into a table of slots
//! shared with the host (kept out of every later fork): one slot per traced worker, written
//! only while the slot is that worker's. It exits when the host's end of its socket closes, and `PTRACE_O_EXITKILL`
//! then ends any worker it still traced.
//!
//! One exception: a thread that said so ([`trace_own_workers`], as a one-job `bytejail run`
//! does) traces the fresh one-job workers it forks itself, of jobs that may start no task,
//! while every other thread of its process is a quiet one ([`QuietThread`]: a batch's reader,
//! which blocks SIGCHLD and waits for no child). No other thread can then take a stop or its
//! SIGCHLD; the thread reads the stops from a signalfd in its watch loop (see
//! [`Trace::follow`]) and records the same facts as the tracer process, by the same code
//! ([`on_trap`]). That saves the tracer process's start and
//! a request to it, about 70 µs of a one-job `bytejail run`.
//!
//! A tracer handles at most [`STOPS_PER_TURN`] stops before it looks at anything else: a
//! guest under a permissive profile can stop again as soon as it is let go.
//!
//! A signal the guest sent itself (`kill`, `tgkill`) carries a `si_code` of zero or below;
//! queueing one with details of the guest's choosing is refused by the walls filter. That, and
//! which processes could have sent a signal (see [`crate::host`]'s classification), decide
//! what the report may call verified.
#![allow(unsafe_code)] // ptrace, waitid, and the tracer process's raw syscalls

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::lock;
use crate::sys::{raw, FdCopy, Incarnation};
use crate::worker::layout::{GATE_TRACED, GATE_UNTRACED};

/// `PTRACE_EVENT_EXIT` and `PTRACE_EVENT_STOP` (group-stop and interrupt stops of a seized
/// tracee).
const PTRACE_EVENT_EXIT: i32 = 6;
const PTRACE_EVENT_STOP: i32 = 128;

/// The registers at a stop, as `PTRACE_GETREGS` gives them.
pub(crate) type Regs = libc::user_regs_struct;

/// A signal at its delivery to the worker.
#[derive(Clone, Copy)]
pub(crate) struct SignalStop {
    pub signo: i32,
    pub code: i32,
    /// `si_addr` (faults), or `si_call_addr` (SIGSYS).
    pub addr: u64,
    /// SIGSYS only: `si_syscall` and `si_arch`.
    pub syscall: i32,
    pub arch: u32,
    pub regs: Regs,
    /// The tracer ended the worker for this signal with SIGKILL (see [`seize`]'s `init`): the
    /// worker's wait status says SIGKILL, and this signal is what it died of.
    pub ended_by_tracer: bool,
}

/// The worker's exit, seen before its memory and descriptors go.
#[derive(Clone, Copy)]
pub(crate) struct ExitStop {
    /// The wait status it is about to report (`PTRACE_GETEVENTMSG`).
    pub status: i32,
    pub regs: Regs,
    /// The syscall entry it was in (`AUDIT_ARCH_X86_64` or `AUDIT_ARCH_I386`), from
    /// `PTRACE_GET_SYSCALL_INFO`; 0 when the kernel did not say.
    pub arch: u32,
}

/// What the tracer saw of one worker since the last [`Trace::take`].
#[derive(Clone, Copy, Default)]
pub(crate) struct Facts {
    /// The last fault-like signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS) delivered.
    pub signal: Option<SignalStop>,
    pub exit: Option<ExitStop>,
    /// The tracer process ended before it saw the worker's exit (`PTRACE_O_EXITKILL` then
    /// killed the worker): how the guest ended is unknown. Set by [`Trace::take`] only.
    pub lost: bool,
}

/// One worker's place in the shared table. `pid` and `init` are the tracer's to write (when
/// it seizes a worker into the slot); `facts` the tracer's while the worker lives, the host's
/// (to read and clear) while it is parked or gone.
#[repr(C)]
struct Slot {
    pid: i32,
    init: u32,
    facts: Facts,
}

/// Slots in the table: traced workers alive at once (beyond that, workers run untraced and
/// their reports say so).
const SLOTS: usize = 4096;

/// A request to the tracer process: seize `pid` into `slot`.
#[derive(Clone, Copy)]
#[repr(C)]
struct Request {
    pid: i32,
    slot: u32,
    init: u32,
    /// The worker's trace gate, a u32 in the host's memory (which the tracer process shares):
    /// the tracer opens it as soon as it has tried the seize (see [`open_gate`]).
    gate: usize,
}

/// The tracer's answer to a [`Request`]: the worker it is about, and 0 or `-errno` from
/// `PTRACE_SEIZE`. The pid lets the host tell its answer from a stale one.
#[derive(Clone, Copy)]
#[repr(C)]
struct Reply {
    pid: i32,
    result: i32,
}

/// A traced worker: its slot in a tracer process's table, given back when the worker is
/// gone, or, for a worker the thread that forked it traces itself ([`trace_own_workers`]),
/// what that thread saw.
pub(crate) struct Trace {
    by: By,
}

#[allow(
    clippy::large_enum_variant,
    reason = "not boxed: the trace is made right after the fork, and an allocation then \
              writes to heap pages the worker still shares (a page copied each)"
)]
enum By {
    /// A tracer process writes into the slot. `owner`: the process that asked for it (a
    /// process forked meanwhile has no such tracer: see [`leak_unforked`]; nor has one forked
    /// later that got the same pid again).
    Process {
        tracer: &'static Tracer,
        slot: u32,
        owner: crate::sys::Incarnation,
    },
    /// The thread that forked the worker.
    Own(Own),
}

/// A worker traced by the thread that forked it (see [`trace_own_workers`]).
struct Own {
    pid: libc::pid_t,
    /// The worker is init of its own PID namespace (see [`seize`]).
    init: bool,
    /// A signalfd for SIGCHLD, which the kernel sends this process at each of the worker's
    /// stops; SIGCHLD is blocked in this thread while the trace lives.
    stops: OwnedFd,
    facts: std::cell::Cell<Facts>,
    /// SIGCHLD was blocked in this thread before the seize (else it is unblocked again when
    /// the trace goes).
    was_blocked: bool,
    /// A SIGCHLD was read from `stops`: one may have been about another child of this
    /// process's, and is raised again when the trace goes (see the `Drop`).
    took_chld: std::cell::Cell<bool>,
}

impl Trace {
    /// Before the host reaps worker `pid` that has ended or must end: kills it, and if it
    /// cannot be reaped within [`crate::sys::HELPER_ANSWER_WAIT`], it is held by a tracer
    /// process that stopped answering (stopped from outside), at its exit stop or as an
    /// exited tracee the tracer has not let go: that tracer is ended, as one killed from
    /// outside is (the worker ends with it, `PTRACE_O_EXITKILL`, and the job's facts say so).
    /// Nothing for a worker this thread traces: it goes on from its stops as the thread
    /// follows them.
    pub(crate) fn release(&self, pid: libc::pid_t, pidfd: &OwnedFd) {
        let By::Process { tracer, .. } = &self.by else {
            return;
        };
        let _ = crate::sys::pidfd_kill(pidfd.as_raw_fd());
        let deadline = std::time::Instant::now() + crate::sys::HELPER_ANSWER_WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            // Its end first (the pidfd), then whether the tracer let it go, looked at often.
            let ended = crate::sys::wait_readable(pidfd.as_raw_fd(), left).unwrap_or(true);
            if ended && crate::sys::reapable(pid) {
                return;
            }
            if left.is_zero() {
                crate::sys::kill_and_wait(&tracer.pidfd);
                tracer.mark_gone();
                return;
            }
            if ended {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    /// What the tracer saw so far, leaving nothing behind (a same-code worker's next input
    /// starts with no facts). Complete once the worker has been reaped: the tracer records each
    /// stop before it lets the worker go on, and lets an exiting worker go (detaches at its
    /// exit stop, or releases it to its parent when it died without one) only after that.
    pub(crate) fn take(&self) -> Facts {
        let (tracer, slot) = match &self.by {
            By::Process { tracer, slot, .. } => (tracer, *slot),
            By::Own(own) => return own.facts.take(),
        };
        let slot = tracer.slot(slot);
        // SAFETY: a slot of the shared table; the tracer process does not write it now (the
        // worker is reaped, or parked between inputs).
        let mut seen = unsafe {
            let facts = std::ptr::addr_of_mut!((*slot).facts);
            let seen = facts.read_volatile();
            facts.write_volatile(Facts::default());
            seen
        };
        // Every end of a traced worker stops at its exit (a SIGKILL's too) while its tracer
        // lives: only without one is the tracer worth a look.
        seen.lost = seen.exit.is_none() && tracer.ended();
        seen
    }

    /// For a worker this thread traces itself: the descriptor that becomes readable when the
    /// worker stops ([`Trace::follow`] then handles the stop). A worker held at a stop goes on
    /// only once this thread has handled it, so a thread waiting for the worker must watch
    /// this too.
    pub(crate) fn stops_fd(&self) -> Option<RawFd> {
        match &self.by {
            By::Process { .. } => None,
            By::Own(own) => Some(own.stops.as_raw_fd()),
        }
    }

    /// Handles the stops of a worker this thread traces itself that are waiting, as the
    /// tracer process does (see [`on_trap`]), at most [`STOPS_PER_TURN`]; nothing for a worker
    /// a tracer process traces. Returns whether it stopped at the bound: more may be waiting,
    /// with no SIGCHLD left to say so, and the caller calls again after its other business.
    ///
    /// The worker is the only task this thread traces for it: its job may start none
    /// (`Limits::max_procs` 1, see [`trace_own_workers`]), so no thread or process of the
    /// guest's, `CLONE_PTRACE` ones included, can be traced by this thread too.
    pub(crate) fn follow(&self) -> bool {
        let By::Own(own) = &self.by else {
            return false;
        };
        if drain(own.stops.as_raw_fd()) {
            own.took_chld.set(true);
        }
        for _ in 0..STOPS_PER_TURN {
            // SAFETY: siginfo_t is plain old data; zeroed is a valid value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // Stops only: the worker's end is its parent's (this thread's) to reap, with its
            // resource usage, through its pidfd.
            let flags = libc::WSTOPPED | libc::WNOHANG | libc::__WALL;
            // SAFETY: a pointer to a local siginfo_t.
            let ret = unsafe { libc::waitid(libc::P_PID, own.pid as libc::id_t, &mut info, flags) };
            // SAFETY: for a child that changed state the kernel filled si_pid and si_status.
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            if ret < 0 || pid != own.pid {
                return false;
            }
            if info.si_code == libc::CLD_TRAPPED {
                let record = |seen: Seen| {
                    let mut facts = own.facts.get();
                    match seen {
                        Seen::Signal(stop) => facts.signal = Some(stop),
                        Seen::Exit(stop) => facts.exit = Some(stop),
                    }
                    own.facts.set(facts);
                };
                on_trap(pid, status, Some(own.init), record);
            } else if info.si_code == libc::CLD_STOPPED {
                resume(pid, 0);
            }
        }
        true
    }

    /// Waits until the worker has ended (its pidfd is readable), following its stops
    /// meanwhile when this thread traces it itself (a worker held at a stop would otherwise
    /// never end); returns at once for a worker a tracer process traces.
    pub(crate) fn follow_until_ended(&self, pidfd: &OwnedFd) -> io::Result<()> {
        let Some(stops) = self.stops_fd() else {
            return Ok(());
        };
        let mut more = false;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stops,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let wait = if more {
                std::time::Duration::ZERO
            } else {
                std::time::Duration::from_secs(3600)
            };
            match crate::sys::poll(&mut fds, wait) {
                Ok(_) if fds[0].revents != 0 => return Ok(()),
                Ok(_) => more = self.follow(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        match &self.by {
            By::Process {
                tracer,
                slot,
                owner,
            } => {
                // In a process forked since (which drops what it inherited), the tracer is
                // not mapped, and its slot is not this process's to give back.
                if *owner == crate::sys::incarnation() {
                    lock(&tracer.free).returned.push(*slot)
                }
            }
            By::Own(own) => {
                if !own.was_blocked {
                    // A SIGCHLD still pending is delivered now, as this process has it
                    // handled. One this trace read may have been about another child of this
                    // process's (a host that reaps its children from a SIGCHLD handler): one is
                    // raised for it, so that such a handler runs as it would have.
                    set_chld_blocked(false);
                    if own.took_chld.get() {
                        // SAFETY: raise takes no pointers.
                        unsafe { libc::raise(libc::SIGCHLD) };
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.by {
            By::Process { slot, .. } => write!(f, "Trace(slot {slot})"),
            By::Own(own) => write!(f, "Trace(by this thread, worker {})", own.pid),
        }
    }
}

/// Reads a non-blocking signalfd until it is empty; whether it read anything.
fn drain(fd: RawFd) -> bool {
    let mut drained = [0u8; 128];
    let mut any = false;
    // SAFETY: reads into a local buffer until the signalfd is empty (non-blocking).
    while unsafe { libc::read(fd, drained.as_mut_ptr().cast(), drained.len()) } > 0 {
        any = true;
    }
    any
}

/// Blocks (or unblocks) SIGCHLD in the calling thread; whether it was blocked before.
fn set_chld_blocked(block: bool) -> bool {
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset before use; the calls
    // take pointers to locals.
    unsafe {
        let mut chld: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &chld, &mut old);
        libc::sigismember(&old, libc::SIGCHLD) == 1
    }
}

/// The host's side of the tracer process.
struct Tracer {
    #[cfg_attr(not(test), allow(dead_code))]
    pid: libc::pid_t,
    /// Held for as long as the process lives (a forked process closes its copy).
    pidfd: OwnedFd,
    socket: OwnedFd,
    /// The shared table ([`SLOTS`] slots), mapped shared before the tracer's fork and kept out
    /// of every later fork (`MADV_DONTFORK`).
    table: usize,
    free: Mutex<FreeSlots>,
    /// One request and its reply at a time.
    io: Mutex<()>,
    /// The process was seen to have ended (or to be ending: its end of the socket closed):
    /// [`tracer`] starts another for later workers.
    gone: std::sync::atomic::AtomicBool,
}

impl Tracer {
    fn slot(&self, index: u32) -> *mut Slot {
        (self.table + index as usize * std::mem::size_of::<Slot>()) as *mut Slot
    }

    /// Whether the tracer process has ended (its pidfd is readable), remembered.
    fn ended(&self) -> bool {
        if self.is_gone() {
            return true;
        }
        let ended = crate::sys::pidfd_ended(&self.pidfd).unwrap_or(false);
        if ended {
            self.mark_gone();
        }
        ended
    }

    fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Something outside the host killed it (nothing of a job's can reach it): it may also
    /// still be ending, its socket closed. Only something outside bytejail ends a tracer.
    fn mark_gone(&self) {
        self.gone.store(true, Ordering::Relaxed);
    }
}

/// The slots free for a seize: the lowest first (given back ones, then never used ones), so
/// that the tracer's scans of the table stay short. No list of all [`SLOTS`] made up front
/// (16 KiB to fault in, in a one-job `bytejail run`).
#[derive(Default)]
struct FreeSlots {
    /// Slots given back, the last one on top.
    returned: Vec<u32>,
    /// Slots from here on were never used.
    fresh: u32,
}

impl FreeSlots {
    fn take(&mut self) -> Option<u32> {
        self.returned.pop().or_else(|| {
            let slot = self.fresh;
            (slot < SLOTS as u32).then(|| {
                self.fresh += 1;
                slot
            })
        })
    }
}

thread_local! {
    /// The CPU whose own tracer this thread uses (see [`use_cpu_tracer`]).
    static CPU: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

thread_local! {
    /// The calling thread traces the fresh workers it forks itself (see [`trace_own_workers`]).
    static OWN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// From now on the calling thread traces the fresh workers it forks itself (one-job runs,
/// [`crate::run`] without a zygote) of jobs that may start no other task (`Limits::max_procs`
/// 1, the default) whenever it is its process's only thread but for quiet ones of bytejail's
/// (a one-job batch's reader thread, see [`crate::batch::BatchConfig::read_ahead`]), instead
/// of through a tracer process: no tracer process to start, and no request to it per job. A
/// one-job `bytejail run` saves about 70 µs so. Other workers go to a tracer process as
/// before: while the process has other threads, and for jobs that may start tasks (one made
/// with `CLONE_PTRACE` would be traced by this thread too, and, held at its exit stop, would
/// keep its worker from ever ending; a tracer process lets such tasks go).
///
/// Why only then: a ptrace stop is reported to every thread of the tracer's process that waits
/// for children (`wait`, `waitpid(-1)`), and one that took a worker's stop would leave the
/// worker held at it until its deadline (the reason a tracer is a process of its own, see the
/// module documentation); and the kernel tells the tracer of a stop with a SIGCHLD sent to
/// its whole process, which another thread that does not block it would take and drop. The
/// calling thread blocks SIGCHLD while such a worker lives and reads it from a signalfd; if it
/// read one, it raises a SIGCHLD again once the worker is reaped, so that a handler that reaps
/// the process's other children still runs. This resets SIGCHLD to its default action if the
/// process ignored it or asked for no stop notices (`SA_NOCLDSTOP`), since the kernel would
/// then send none.
pub fn trace_own_workers() {
    // SAFETY: sigaction with pointers to locals; SIG_DFL for SIGCHLD only, which discards the
    // signal when it is not blocked, as the default action does.
    unsafe {
        let mut now: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut now) == 0
            && (now.sa_sigaction == libc::SIG_IGN || now.sa_flags & libc::SA_NOCLDSTOP != 0)
        {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGCHLD, &default, std::ptr::null_mut());
        }
    }
    OWN.with(|own| own.set(true));
}

/// Threads that block SIGCHLD and never wait for a child, counted while they say so (see
/// [`QuietThread`]): on the page every fork wipes ([`crate::sys::fork_wiped`]), as a process
/// forked while a quiet thread lived has not the thread. Counted here instead only where that
/// page cannot be had, with the process they belong to: the pid in the high half, the count
/// in the low half (a process forked later that gets the same pid again then takes the count
/// for its own). Without either such a process (a pre-forking server whose other thread runs
/// a batch) took one ordinary thread of its own, maybe one that reaps any child, for the quiet
/// one it does not have.
static QUIET_THREADS: AtomicU64 = AtomicU64::new(0);

/// This process's count of quiet threads: `QUIET_THREADS` if there is no page a fork wipes.
fn quiet_count() -> &'static AtomicU64 {
    crate::sys::fork_wiped().map_or(&QUIET_THREADS, |wiped| &wiped.quiet_threads)
}

/// `QUIET_THREADS`' value for `count` quiet threads of the process `pid`.
fn quiet_threads(pid: libc::pid_t, count: u64) -> u64 {
    (u64::from(pid as u32) << 32) | count
}

/// This process's quiet threads in `QUIET_THREADS`' value `value`.
fn quiet_of(value: u64, pid: libc::pid_t) -> u64 {
    if value >> 32 == u64::from(pid as u32) {
        value & 0xffff_ffff
    } else {
        0
    }
}

/// Adds `delta` (1 or -1) to this process's count of quiet threads.
fn count_quiet(delta: i64) {
    let pid = crate::sys::current_pid();
    let _ = quiet_count().fetch_update(Ordering::SeqCst, Ordering::SeqCst, |value| {
        let count = quiet_of(value, pid).saturating_add_signed(delta);
        Some(quiet_threads(pid, count))
    });
}

/// A thread of bytejail's own that blocks SIGCHLD and never waits for a child, for as long as
/// this lives (a batch's reader thread): a thread that traces its own workers
/// ([`trace_own_workers`]) may do so beside it. Such a thread can take no stop of the calling
/// thread's workers (it waits for none) and no SIGCHLD (blocked there, it stays pending for
/// the process until the tracing thread reads it from its signalfd).
///
/// Dropped before the thread ends: until the kernel has removed it, the process then counts
/// one thread more than [`only_quiet_threads_beside`] allows, and workers go to a tracer
/// process, as they do while it starts.
pub(crate) struct QuietThread(std::marker::PhantomData<*const ()>);

impl QuietThread {
    /// Blocks SIGCHLD in the calling thread (for good) and counts it.
    pub(crate) fn enter() -> QuietThread {
        set_chld_blocked(true);
        count_quiet(1);
        QuietThread(std::marker::PhantomData)
    }
}

impl Drop for QuietThread {
    fn drop(&mut self) {
        count_quiet(-1);
    }
}

/// Whether every thread of this process but the calling one is a [`QuietThread`]: its count
/// of threads (`/proc/self/stat`) is one more than theirs. A thread that starts or ends is
/// counted by the kernel before it says it is quiet and after it stops saying so, so a
/// mismatch errs towards a tracer process; and no thread can start during the caller's job
/// but from the caller (busy with it) or a quiet thread (which starts none).
fn only_quiet_threads_beside() -> bool {
    let quiet = quiet_of(
        quiet_count().load(Ordering::SeqCst),
        crate::sys::current_pid(),
    );
    crate::sys::threads() == usize::try_from(quiet + 1).ok()
}

/// From now on the calling thread, which keeps to `cpu` alone (a job thread of a batch with
/// several), uses a tracer process of that CPU's (see [`tracer`]). Such tracers, one per CPU
/// asked for, live as long as the process, as the shared one does.
pub(crate) fn use_cpu_tracer(cpu: usize) {
    CPU.with(|own| own.set(Some(cpu)));
}

/// The calling thread's tracer process, started the first time it is asked for; `None` when it
/// cannot be. A thread that keeps to one CPU and said so ([`use_cpu_tracer`]) has a tracer of
/// its own per CPU, started from such a thread and so keeping to that CPU too: its requests,
/// and the stops of the workers it forks, which keep to the CPU as well, then wake nothing on
/// another CPU (a cross-CPU wake-up is an interrupt to another virtual CPU, several
/// microseconds on a VM). Every other thread shares one tracer.
///
/// A process forked from a host (a pre-forking server, say) has the host's tracers only as
/// stale data: their tables are not mapped here (`MADV_DONTFORK`) and their sockets are the
/// host's; it gets tracers of its own, and closes its copies of the host's sockets and
/// pidfds.
fn tracer() -> Option<&'static Tracer> {
    /// The process that started the tracers, and its tracers by the CPU their threads keep
    /// to (leaked: they live as long as the process).
    /// A tracer, and its socket and pidfd (a forked process closes its copies of them
    /// without reading the tracer, which is not mapped there).
    type Entry = (Option<usize>, Option<(&'static Tracer, [FdCopy; 2])>);
    /// The process by its incarnation, not its pid: a process forked later may get the pid
    /// again, with this list and its thread's `LAST` inherited, but none of these tracers.
    type Tracers = (Incarnation, Vec<Entry>);
    static TRACERS: Mutex<Option<Tracers>> = Mutex::new(None);
    thread_local! {
        /// The tracer this thread found last, and the process and CPU it was for: found
        /// again without taking `TRACERS`'s lock, a write that right after a fork (when a
        /// seize asks) copies the page the lock is on, which the new worker still shares.
        static LAST: std::cell::Cell<Option<(Incarnation, Option<usize>, &'static Tracer)>> =
            const { std::cell::Cell::new(None) };
    }
    let me = crate::sys::incarnation();
    let cpu = CPU.with(|own| own.get()).filter(|&cpu| cpu < MAX_PER_CPU);
    if let Some((pid, on, tracer)) = LAST.with(|last| last.get()) {
        if pid == me && on == cpu && !tracer.is_gone() {
            return Some(tracer);
        }
    }
    let mut current = lock(&TRACERS);
    let mut found = None;
    if let Some((owner, tracers)) = current.as_mut() {
        if *owner == me {
            // A tracer something killed is replaced: the workers it traced died with it, and
            // later ones would otherwise run untraced for as long as this process lives. Its
            // socket and pidfd stay open (another thread may be using them) and it is reaped
            // if it is all gone; its table stays mapped for the traces that still refer to it.
            tracers.retain(|(_, tracer)| match tracer {
                Some((tracer, _)) if tracer.is_gone() => {
                    reap_ended(&tracer.pidfd);
                    false
                }
                _ => true,
            });
            if let Some((_, tracer)) = tracers.iter().find(|(key, _)| *key == cpu) {
                found = Some(tracer.map(|(tracer, _)| tracer));
            }
        } else {
            for (_, fds) in tracers.iter().filter_map(|(_, tracer)| *tracer) {
                // This process's copies of the host's socket and pidfd, which nothing here
                // uses again (the tracer they belong to is leaked, so its OwnedFds never close
                // them twice), unless this process closed them itself and reused the numbers.
                // The pidfds too: with a tracer per CPU a forked process would otherwise keep
                // one descriptor per tracer of the host's for good.
                for fd in fds {
                    fd.close_if_still_open();
                }
            }
            *current = None;
        }
    }
    let tracer = match found {
        Some(tracer) => tracer,
        None => {
            let tracer = start().ok().map(leak_unforked);
            let entry = tracer.map(|t| {
                let fds = [t.socket.as_raw_fd(), t.pidfd.as_raw_fd()];
                (t, fds.map(FdCopy::of))
            });
            current
                .get_or_insert_with(|| (me, Vec::new()))
                .1
                .push((cpu, entry));
            tracer
        }
    };
    if let Some(tracer) = tracer {
        LAST.with(|last| last.set(Some((me, cpu, tracer))));
    }
    tracer
}

/// Reaps an ended tracer process, if it is all gone by now (else it stays a zombie).
fn reap_ended(pidfd: &OwnedFd) {
    // SAFETY: siginfo_t is plain old data; zeroed is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::__WALL;
    // SAFETY: a pointer to a local siginfo_t; the pidfd is this process's child's.
    unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            flags,
        )
    };
}

/// `tracer`, for as long as this process lives, on pages of its own kept out of every fork
/// (`MADV_DONTFORK`): the locks a seize takes right after a fork are then on no page a worker
/// shares (each such write would copy the page). On the heap if those cannot be mapped.
fn leak_unforked(tracer: Tracer) -> &'static Tracer {
    let len = std::mem::size_of::<Tracer>().next_multiple_of(4096);
    match crate::sys::map_advised(len, libc::MADV_DONTFORK) {
        // SAFETY: fresh memory of our own, page-aligned (more than a Tracer needs); the
        // tracer is moved into it and never moved out or dropped.
        Some(page) => unsafe {
            let at = page.as_ptr().cast::<Tracer>();
            at.write(tracer);
            &*at
        },
        None => Box::leak(Box::new(tracer)),
    }
}

/// CPUs below this one get a tracer of their own (see [`tracer`]); threads on others share
/// one.
const MAX_PER_CPU: usize = 64;

/// The tracer process's pid, starting it if need be.
#[cfg(test)]
fn tracer_pid() -> Option<libc::pid_t> {
    tracer().map(|t| t.pid)
}

/// Seizes the worker `pid` in the tracer process, and opens its `gate` (the worker waits there
/// until it is held, see [`crate::worker::layout::CTX_TRACE_GATE`]): by the time this returns
/// it is open, saying whether the seize held the worker ([`GATE_TRACED`]) or not
/// ([`NotTraced::Untraced`]: the worker goes on untraced). One exception,
/// [`NotTraced::Lost`]: the tracer process ended with the request unanswered. It may have
/// seized the worker and opened the gate before it went, in which case `PTRACE_O_EXITKILL`
/// killed the worker, or not; the caller ends the worker. A tracer found gone before it got the
/// request is replaced, and the new one asked.
///
/// `init`: the worker is init of its own PID namespace. The kernel then lets a traced worker
/// survive a fault or a filter's trap whose action is the default (it clears init's
/// protection against signals only for untraced processes), so the tracer ends it with
/// SIGKILL at that signal's delivery instead, and says so ([`SignalStop::ended_by_tracer`]).
///
/// `own_child`: the calling thread forked the worker, for a one-job run whose job may start no
/// task; the thread then traces it itself if it said so ([`trace_own_workers`]).
pub(crate) fn seize(
    pid: libc::pid_t,
    init: bool,
    own_child: bool,
    gate: &AtomicU32,
) -> Result<Trace, NotTraced> {
    let gate = gate.as_ptr() as usize;
    if own_child && OWN.with(|own| own.get()) && only_quiet_threads_beside() {
        let seized = seize_own(pid, init);
        // SAFETY: the caller's gate, alive for this call.
        unsafe { open_gate(gate, seized.is_ok()) };
        return seized.map_err(NotTraced::Untraced);
    }
    let mut asked = ask_tracer(pid, init, gate);
    if let Err(Failed::Unsent(_, true)) = asked {
        // Its tracer was gone before the request: `tracer` starts another.
        asked = ask_tracer(pid, init, gate);
    }
    match asked {
        Ok(trace) => Ok(trace),
        Err(Failed::Answered(error)) => Err(NotTraced::Untraced(error)),
        Err(Failed::Unsent(error, _)) => {
            // SAFETY: the caller's gate, alive for this call.
            unsafe { open_gate(gate, false) };
            Err(NotTraced::Untraced(error))
        }
        Err(Failed::Lost(error)) => Err(NotTraced::Lost(error)),
    }
}

/// Why [`seize`] gave no trace.
#[derive(Debug)]
pub(crate) enum NotTraced {
    /// The worker was not seized, and goes on untraced (its gate is open); why, for tests
    /// (a report says only that its details are unverified).
    Untraced(#[cfg_attr(not(test), allow(dead_code))] io::Error),
    /// The tracer process ended with the request unanswered: the worker may have been seized,
    /// and killed with the tracer, or may wait at its gate; the caller ends it.
    Lost(io::Error),
}

/// Why [`ask_tracer`] gave no trace.
enum Failed {
    /// The tracer answered, and opened the gate.
    Answered(io::Error),
    /// No tracer got the request, and so none opened the gate; with `true`, because the
    /// tracer was gone (another may be asked).
    Unsent(io::Error, bool),
    /// The tracer ended before it answered (see [`NotTraced::Lost`]).
    Lost(io::Error),
}

/// [`seize`] through the tracer process, which opens the gate once it has tried.
fn ask_tracer(pid: libc::pid_t, init: bool, gate: usize) -> Result<Trace, Failed> {
    let unsent = |error| Failed::Unsent(error, false);
    let tracer = tracer().ok_or_else(|| unsent(io::Error::other("no tracer process")))?;
    let slot = lock(&tracer.free)
        .take()
        .ok_or_else(|| unsent(io::Error::other("every tracer slot is taken")))?;
    let trace = Trace {
        by: By::Process {
            tracer,
            slot,
            owner: crate::sys::incarnation(),
        },
    };
    let request = Request {
        pid,
        slot,
        init: u32::from(init),
        gate,
    };
    let mut reply = Reply { pid: 0, result: 0 };
    {
        let _one = lock(&tracer.io);
        let fd = tracer.socket.as_raw_fd();
        // A signal handler of the host's installed without SA_RESTART (a fuzzer's periodic
        // SIGALRM, say) interrupts these calls: each is retried, for a reply left unread
        // would answer the next worker's request, whose worker would then run before it is
        // held, its end unseen. (Nor may this return before the reply while the tracer may
        // still write to the gate.)
        loop {
            // SAFETY: plain data to the socket, through a pointer to a local.
            let sent = unsafe {
                libc::send(
                    fd,
                    (&request as *const Request).cast(),
                    std::mem::size_of::<Request>(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if sent == std::mem::size_of::<Request>() as isize {
                break;
            }
            let error = io::Error::last_os_error();
            if sent >= 0 || error.kind() != io::ErrorKind::Interrupted {
                // Its end closed: the tracer is ending (only the tracer holds that end).
                let gone = sent < 0
                    && matches!(error.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET));
                if gone {
                    tracer.mark_gone();
                }
                return Err(Failed::Unsent(error, gone));
            }
        }
        loop {
            // A tracer that does not answer in time was stopped from outside (`SIGSTOP`, a
            // debugger) or starved: it is ended as one killed from outside, and replaced.
            if !crate::sys::wait_readable(fd, crate::sys::HELPER_ANSWER_WAIT).unwrap_or(true) {
                crate::sys::kill_and_wait(&tracer.pidfd);
                tracer.mark_gone();
                return Err(Failed::Lost(io::Error::other(format!(
                    "the tracer process did not answer in {} s (stopped from outside?); \
                     it was ended, and a new one serves later workers",
                    crate::sys::HELPER_ANSWER_WAIT.as_secs()
                ))));
            }
            // SAFETY: plain data from the socket, into a local of the size given.
            let got = unsafe {
                libc::recv(
                    fd,
                    (&mut reply as *mut Reply).cast(),
                    std::mem::size_of::<Reply>(),
                    0,
                )
            };
            if got == std::mem::size_of::<Reply>() as isize && reply.pid == pid {
                break;
            }
            let interrupted =
                got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
            // Another worker's reply (there can be none: one request at a time, each read
            // to its end) is skipped rather than taken for this one's.
            let stale = got == std::mem::size_of::<Reply>() as isize;
            if !interrupted && !stale {
                // Gone: it may have seized the worker and opened the gate before it went, or
                // not. It writes nothing more: its end of the socket closes as it exits.
                tracer.mark_gone();
                let error = io::Error::other("the tracer process ended before it answered");
                return Err(Failed::Lost(error));
            }
        }
    }
    if reply.result < 0 {
        return Err(Failed::Answered(io::Error::from_raw_os_error(
            -reply.result,
        )));
    }
    Ok(trace)
}

/// Opens a traced worker's gate (see [`crate::worker::layout::CTX_TRACE_GATE`]): stores
/// [`GATE_TRACED`] or [`GATE_UNTRACED`] and wakes the worker if it waits there (a shared
/// futex: the word is in the worker's memfd). Raw syscalls only: the tracer process calls it.
///
/// # Safety
/// `gate` is the address of a live, aligned u32 of this process's memory, or 0 (nothing).
unsafe fn open_gate(gate: usize, traced: bool) {
    if gate == 0 {
        return;
    }
    let value = if traced { GATE_TRACED } else { GATE_UNTRACED };
    // SAFETY: the caller's word; written atomically, as the worker reads it.
    unsafe { (*(gate as *const AtomicU32)).store(value, Ordering::SeqCst) };
    // SAFETY: FUTEX_WAKE reads no memory.
    unsafe {
        raw::syscall6(
            libc::SYS_futex,
            gate,
            libc::FUTEX_WAKE as usize,
            i32::MAX as usize,
            0,
            0,
            0,
        )
    };
}

/// [`seize`] by the calling thread, the worker's parent (see [`trace_own_workers`]).
fn seize_own(pid: libc::pid_t, init: bool) -> io::Result<Trace> {
    // Blocked from here, after the fork: the worker keeps the mask it was forked with.
    let was_blocked = set_chld_blocked(true);
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset; a new signalfd.
    let fd = unsafe {
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::signalfd(-1, &chld, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    if fd < 0 {
        let error = io::Error::last_os_error();
        if !was_blocked {
            set_chld_blocked(false);
        }
        return Err(error);
    }
    // SAFETY: a descriptor just made, owned by nothing else.
    let stops = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // From here the trace's drop restores the mask.
    let trace = Trace {
        by: By::Own(Own {
            pid,
            init,
            stops,
            facts: std::cell::Cell::new(Facts::default()),
            was_blocked,
            took_chld: std::cell::Cell::new(false),
        }),
    };
    let options = (libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL) as usize;
    let seized = ptrace(libc::PTRACE_SEIZE, pid, 0, options);
    if seized != 0 {
        return Err(io::Error::from_raw_os_error(-seized as i32));
    }
    Ok(trace)
}

fn start() -> io::Result<Tracer> {
    let len = SLOTS * std::mem::size_of::<Slot>();
    // SAFETY: a fresh anonymous shared mapping; nothing else refers to it.
    let table = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if table == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // Kept out of every fork at once, before the clone (which shares it whatever the advice:
    // `CLONE_VM`), so that no worker another thread forks meanwhile ever gets it.
    // SAFETY: the mapping just made.
    unsafe { libc::madvise(table, len, libc::MADV_DONTFORK) };
    // The tracer's own stack (leaked with the tracer: it runs on it until this process is
    // gone), above a guard page.
    // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            TRACER_STACK + GUARD,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        let error = io::Error::last_os_error();
        // SAFETY: the table mapped above, referred to by nothing yet.
        unsafe { libc::munmap(table, len) };
        return Err(error);
    }
    // SAFETY: the lowest page of the mapping just made; workers and zygotes forked from here
    // on get neither the table nor the tracer's stack.
    unsafe {
        libc::mprotect(stack, GUARD, libc::PROT_NONE);
        libc::madvise(stack, TRACER_STACK + GUARD, libc::MADV_DONTFORK);
    }
    let (host_end, tracer_end) = crate::sys::seqpacket_pair()?;
    // The tracer shares this process's memory (`CLONE_VM`): no page tables copied at its
    // start nor torn down at its end, about 0.1 ms of a one-job `bytejail run` here. It is
    // still a process of its own, with its own descriptors and signal state, for the reason
    // given at the top of this module.
    // SAFETY: `tracer_entry` runs only raw syscalls on its stack, the table and its socket,
    // and never returns; the stack stays mapped for good.
    let (pid, pidfd) = unsafe {
        crate::sys::clone_vm_with_pidfd(
            stack as usize + GUARD + TRACER_STACK,
            tracer_entry,
            tracer_end.as_raw_fd() as usize,
            table as usize,
        )
    }
    .inspect_err(|_| {
        // SAFETY: the two mappings made above, referred to by nothing.
        unsafe {
            libc::munmap(stack, TRACER_STACK + GUARD);
            libc::munmap(table, len);
        }
    })?;
    drop(tracer_end);
    Ok(Tracer {
        pid,
        pidfd,
        socket: host_end,
        table: table as usize,
        free: Mutex::new(FreeSlots::default()),
        io: Mutex::new(()),
        gone: std::sync::atomic::AtomicBool::new(false),
    })
}

/// The tracer process's stack: its loop keeps a few
/// kernel structures; the rest is margin. Pages it never touches cost nothing.
const TRACER_STACK: usize = 256 * 1024;
const GUARD: usize = 4096;

/// The tracer process's first frame, on its own stack (see [`start`]).
///
/// # Safety
/// In the tracer process, as [`crate::sys::clone_vm_with_pidfd`]'s `entry`.
unsafe extern "C" fn tracer_entry(socket: usize, table: usize) -> ! {
    tracer_main(socket as i32, table)
}

/// Descriptors in the tracer process.
const SOCKET_FD: usize = 3;
const SIGNALFD_FD: usize = 4;

/// The tracer process: serves seize requests and follows its workers until the host's end of
/// the socket closes. Raw syscalls only.
fn tracer_main(socket: i32, table: usize) -> ! {
    // SAFETY: raw syscalls with pointers to locals and to the shared table, in a fresh child.
    unsafe {
        let name = c"bytejail-tracer".as_ptr() as usize;
        raw::syscall3(libc::SYS_prctl, libc::PR_SET_NAME as usize, name, 0);
        // Only the socket stays: another job's pipe end kept here would keep its reader
        // from ever seeing EOF.
        if raw::syscall3(libc::SYS_dup2, socket as usize, SOCKET_FD, 0) < 0
            || raw::syscall3(libc::SYS_close_range, 0, SOCKET_FD - 1, 0) < 0
            || raw::syscall3(libc::SYS_close_range, SOCKET_FD + 1, u32::MAX as usize, 0) < 0
        {
            raw::exit(1);
        }
        // Every signal blocked; SIGCHLD at its default action (a host may ignore it, and then
        // the kernel would not even send it), read from a signalfd.
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
        let default = [libc::SIG_DFL, 0, 0, 0];
        raw::syscall6(
            libc::SYS_rt_sigaction,
            libc::SIGCHLD as usize,
            default.as_ptr() as usize,
            0,
            8,
            0,
            0,
        );
        let chld = 1u64 << (libc::SIGCHLD - 1);
        let flags = (libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) as usize;
        let sfd = raw::syscall6(
            libc::SYS_signalfd4,
            usize::MAX, // -1: a new one
            &chld as *const u64 as usize,
            8,
            flags,
            0,
            0,
        );
        if sfd < 0
            || (sfd != SIGNALFD_FD as isize
                && (raw::syscall3(libc::SYS_dup2, sfd as usize, SIGNALFD_FD, 0) < 0
                    || raw::syscall3(libc::SYS_close, sfd as usize, 0, 0) < 0))
        {
            raw::exit(1);
        }
        // Workers seized and not yet released to their parent.
        let mut traced = 0usize;
        let mut owners = Owners { table, high: 0 };
        // The last turn left stops waiting (see `STOPS_PER_TURN`).
        let mut more = false;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: SOCKET_FD as i32,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: SIGNALFD_FD as i32,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // A worker whose threads outlive its first one becomes waitable only when the
            // last of them is released, and that sends its tracer no signal (the worker's exit
            // signal is 0): while workers are traced, look every few milliseconds as well.
            let tick = libc::timespec {
                tv_sec: 0,
                tv_nsec: 5_000_000,
            };
            let now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let timeout = if more {
                &now as *const libc::timespec as usize
            } else if traced > 0 {
                &tick as *const libc::timespec as usize
            } else {
                0
            };
            let ready = raw::syscall6(
                libc::SYS_ppoll,
                fds.as_mut_ptr() as usize,
                2,
                timeout,
                0,
                0,
                0,
            );
            if ready < 0 {
                continue; // EINTR
            }
            if fds[1].revents != 0 || (ready == 0 && traced > 0) || more {
                let released;
                (released, more) = follow_all(table, &mut owners);
                traced -= released.min(traced);
            }
            if fds[0].revents != 0 {
                match serve(table, &mut owners) {
                    None => raw::exit(0), // the host is gone
                    Some(seized) => traced += usize::from(seized),
                }
            }
        }
    }
}

/// Takes one request from the socket and answers it: whether it seized a worker; `None` when
/// the host's end is closed.
///
/// # Safety
/// In the tracer process.
unsafe fn serve(table: usize, owners: &mut Owners) -> Option<bool> {
    let mut request = Request {
        pid: 0,
        slot: 0,
        init: 0,
        gate: 0,
    };
    let size = std::mem::size_of::<Request>();
    // SAFETY: a pointer to a local of `size` bytes.
    let got = unsafe {
        raw::syscall6(
            libc::SYS_recvfrom,
            SOCKET_FD,
            &mut request as *mut Request as usize,
            size,
            0,
            0,
            0,
        )
    };
    if got == 0 {
        return None;
    }
    if got != size as isize || request.slot as usize >= SLOTS {
        let alive = got > 0 || got == -(libc::EINTR as isize) || got == -(libc::EAGAIN as isize);
        return alive.then_some(false);
    }
    let options = (libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL) as usize;
    // SAFETY: PTRACE_SEIZE takes no pointers; `data` is the options word.
    let seized = unsafe {
        raw::syscall6(
            libc::SYS_ptrace,
            libc::PTRACE_SEIZE as usize,
            request.pid as usize,
            0,
            options,
            0,
            0,
        )
    };
    if seized == 0 {
        let slot = slot_at(table, request.slot as usize);
        // SAFETY: the slot is in the table; the host does not touch it until the reply.
        unsafe {
            std::ptr::addr_of_mut!((*slot).facts).write_volatile(Facts::default());
            std::ptr::addr_of_mut!((*slot).init).write_volatile(request.init);
            std::ptr::addr_of_mut!((*slot).pid).write_volatile(request.pid);
        }
        owners.high = owners.high.max(request.slot as usize + 1);
    }
    // The worker goes on now, before the host has even read the reply: one switch less on a
    // CPU the host, the worker and this tracer share.
    // SAFETY: the host sent its gate's address and, before its worker's memory can go, waits
    // for the reply below or for this process's end (its socket's EOF), after which nothing
    // here writes. Only the host's own `seize` reaches this socket: workers and zygotes close
    // every descriptor they did not ask for before any guest code runs.
    unsafe { open_gate(request.gate, seized == 0) };
    let reply = Reply {
        pid: request.pid,
        result: seized as i32,
    };
    // The host waits for this reply for as long as this process lives (it must not go on
    // while a request is pending: see `ask_tracer`), so a reply that cannot be sent now (the
    // kernel short of memory) is sent again a moment later; only the host's end closing ends
    // the attempts.
    loop {
        // SAFETY: a pointer to a local of the size given.
        let sent = unsafe {
            raw::syscall6(
                libc::SYS_sendto,
                SOCKET_FD,
                &reply as *const Reply as usize,
                std::mem::size_of::<Reply>(),
                libc::MSG_NOSIGNAL as usize,
                0,
                0,
            )
        };
        let again = [libc::EINTR, libc::EAGAIN, libc::ENOBUFS, libc::ENOMEM];
        if sent >= 0 || !again.iter().any(|&e| sent == -(e as isize)) {
            break;
        }
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        // SAFETY: a pointer to a local timespec.
        unsafe {
            raw::syscall6(
                libc::SYS_nanosleep,
                &pause as *const libc::timespec as usize,
                0,
                0,
                0,
                0,
                0,
            )
        };
    }
    Some(seized == 0)
}

fn slot_at(table: usize, index: usize) -> *mut Slot {
    (table + index * std::mem::size_of::<Slot>()) as *mut Slot
}

/// Which worker each slot is for: the slots' `pid`, which only the tracer process writes (at a
/// seize, and 0 once the worker is let go). The host hands out the lowest free slots, so a
/// scan up to the highest slot ever used is short (and touches no page of the table that no
/// seize touched: a table of its own on the tracer's stack cost a `bytejail run` four page
/// faults to zero).
struct Owners {
    table: usize,
    high: usize,
}

impl Owners {
    /// The slot that is `pid`'s now, if any.
    fn slot_of(&self, pid: libc::pid_t) -> Option<usize> {
        (0..self.high).find(|&index| {
            let slot = slot_at(self.table, index);
            // SAFETY: a slot of the table; its pid is written by this process alone.
            unsafe { std::ptr::addr_of!((*slot).pid).read_volatile() == pid }
        })
    }
}

/// Handles the stops and exits of the traced workers that are waiting, recording what tells
/// something and letting each worker go on at once, at most [`STOPS_PER_TURN`] of them.
/// Returns how many workers it let go for good (detached at their exit stop, or released to
/// their parents when they died without one: a SIGKILL may end a worker without that stop),
/// and whether it stopped at the bound (more may be waiting).
///
/// # Safety
/// In the tracer process.
unsafe fn follow_all(table: usize, owners: &mut Owners) -> (usize, bool) {
    let mut released = 0;
    let mut drained = [0u8; 128];
    // SAFETY: reads into a local buffer until the signalfd is empty (non-blocking).
    while unsafe {
        raw::syscall3(
            libc::SYS_read,
            SIGNALFD_FD,
            drained.as_mut_ptr() as usize,
            drained.len(),
        )
    } > 0
    {}
    for _ in 0..STOPS_PER_TURN {
        // SAFETY: siginfo_t is plain old data; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = (libc::WEXITED | libc::WSTOPPED | libc::WNOHANG | libc::__WALL) as usize;
        // SAFETY: a pointer to a local siginfo_t.
        let ret = unsafe {
            raw::syscall6(
                libc::SYS_waitid,
                libc::P_ALL as usize,
                0,
                &mut info as *mut libc::siginfo_t as usize,
                flags,
                0,
                0,
            )
        };
        // SAFETY: for a child that changed state the kernel filled si_pid and si_status.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if ret < 0 || pid == 0 {
            return (released, false);
        }
        let index = owners.slot_of(pid);
        let slot = index.map(|i| slot_at(table, i));
        if info.si_code != libc::CLD_TRAPPED {
            if info.si_code == libc::CLD_STOPPED {
                resume(pid, 0);
                continue;
            }
            // Exited: released to its parent now. The slot is no longer its. (A task the guest
            // made with `CLONE_PTRACE` is traced here too, but is no worker: not counted.)
            if let Some(slot) = slot {
                released += 1;
                // SAFETY: a slot of the table.
                unsafe { std::ptr::addr_of_mut!((*slot).pid).write_volatile(0) };
            }
            continue;
        }
        // SAFETY: a slot of the table, this worker's.
        let init =
            slot.map(|slot| unsafe { std::ptr::addr_of!((*slot).init).read_volatile() != 0 });
        let record = |seen: Seen| {
            let Some(slot) = slot else { return };
            // SAFETY: a slot of the table, this worker's.
            unsafe {
                match seen {
                    Seen::Signal(stop) => {
                        std::ptr::addr_of_mut!((*slot).facts.signal).write_volatile(Some(stop))
                    }
                    Seen::Exit(stop) => {
                        std::ptr::addr_of_mut!((*slot).facts.exit).write_volatile(Some(stop))
                    }
                }
            }
        };
        if on_trap(pid, status, init, record) {
            if let Some(slot) = slot {
                released += 1;
                // SAFETY: a slot of the table.
                unsafe { std::ptr::addr_of_mut!((*slot).pid).write_volatile(0) };
            }
        }
    }
    (released, true)
}

/// Stops a tracer handles before it looks at anything else (its requests, a deadline): a
/// guest under a permissive profile can stop again as fast as it is let go (a signal it sends
/// itself in a loop is a stop each time, even one it ignores), and a loop that handled stops
/// until none was waiting might never end.
const STOPS_PER_TURN: usize = 64;

/// What a stop of a traced worker told.
enum Seen {
    Signal(SignalStop),
    Exit(ExitStop),
}

/// Handles one ptrace stop of the worker `pid` (`status`: `si_status` of its `CLD_TRAPPED`),
/// `record`ing what it tells before the worker goes on, and lets it go on. `init`: whether it
/// is init of its own PID namespace (see [`seize`]), `None` for a process that is no worker
/// of this tracer's (nothing recorded). Returns whether the worker was let go for good
/// (detached at its exit stop).
fn on_trap(pid: libc::pid_t, status: i32, init: Option<bool>, record: impl FnOnce(Seen)) -> bool {
    let (signo, event) = (status & 0xff, (status >> 8) & 0xff);
    match event {
        0 => {
            let mut delivered = signal_stop(pid, signo);
            let mut end = false;
            if let (Some(stop), Some(init)) = (&mut delivered, init) {
                // Only the kernel's own signals (a positive `si_code`): a signal init sends
                // itself with the default action is dropped, traced or not.
                end = init && stop.code > 0 && !caught(pid, signo);
                stop.ended_by_tracer = end;
                record(Seen::Signal(*stop));
            }
            if end {
                // SAFETY: kill takes no pointers; the worker is our tracee, not reaped.
                unsafe { raw::syscall3(libc::SYS_kill, pid as usize, libc::SIGKILL as usize, 0) };
            }
            // Deliver the signal as the guest (or the kernel) raised it.
            resume(pid, signo);
            false
        }
        PTRACE_EVENT_EXIT => {
            if let (Some(stop), Some(_)) = (exit_stop(pid), init) {
                record(Seen::Exit(stop));
            }
            // Nothing after its exit stop tells anything: let it go now rather than wake
            // for its end too (the kernel then tells its parent alone). Recorded before the
            // release, so a parent that reaps it finds its facts complete.
            if ptrace(libc::PTRACE_DETACH, pid, 0, 0) == 0 {
                true
            } else {
                resume(pid, 0);
                false
            }
        }
        PTRACE_EVENT_STOP => {
            resume(pid, 0);
            false
        }
        _ => {
            resume(pid, 0);
            false
        }
    }
}

fn ptrace(request: u32, pid: libc::pid_t, addr: usize, data: usize) -> isize {
    // SAFETY: callers pass pointers to locals of the size `request` writes, or none.
    unsafe {
        raw::syscall6(
            libc::SYS_ptrace,
            request as usize,
            pid as usize,
            addr,
            data,
            0,
            0,
        )
    }
}

fn resume(pid: libc::pid_t, signo: i32) {
    // A worker killed meanwhile gives ESRCH: harmless.
    ptrace(libc::PTRACE_CONT, pid, 0, signo as usize);
}

/// Whether the worker has a handler of its own for `signo` (`SigCgt` in its status): then
/// the signal is the guest's business, not its end. Parsed by hand: no allocation here.
fn caught(pid: libc::pid_t, signo: i32) -> bool {
    let mut path = [0u8; 32];
    let mut at = 0;
    for &b in b"/proc/" {
        path[at] = b;
        at += 1;
    }
    let mut digits = [0u8; 12];
    let (mut n, mut len) = (pid as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in (0..len).rev() {
        path[at] = digits[i];
        at += 1;
    }
    for &b in b"/status" {
        path[at] = b;
        at += 1;
    }
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated path and a local buffer.
    let got = unsafe {
        let fd = raw::syscall3(
            libc::SYS_open,
            path.as_ptr() as usize,
            (libc::O_RDONLY | libc::O_CLOEXEC) as usize,
            0,
        );
        if fd < 0 {
            return false;
        }
        let got = raw::syscall3(
            libc::SYS_read,
            fd as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
        );
        raw::syscall3(libc::SYS_close, fd as usize, 0, 0);
        got
    };
    let Ok(got) = usize::try_from(got) else {
        return false;
    };
    let text = &buf[..got];
    let key = b"SigCgt:";
    let Some(start) = text.windows(key.len()).position(|w| w == key) else {
        return false;
    };
    let mut mask = 0u64;
    for &b in text[start + key.len()..]
        .iter()
        .skip_while(|b| **b == b'\t' || **b == b' ')
    {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => break,
        };
        mask = mask << 4 | u64::from(digit);
    }
    mask & (1u64 << (signo - 1)) != 0
}

fn regs(pid: libc::pid_t) -> Option<Regs> {
    // SAFETY: user_regs_struct is plain old data; the kernel fills it.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    let got = ptrace(
        libc::PTRACE_GETREGS,
        pid,
        0,
        &mut regs as *mut Regs as usize,
    );
    (got == 0).then_some(regs)
}

const FAULT_LIKE: [i32; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

fn signal_stop(pid: libc::pid_t, signo: i32) -> Option<SignalStop> {
    if !FAULT_LIKE.contains(&signo) {
        return None;
    }
    let mut raw_info = [0u8; 128];
    if ptrace(
        libc::PTRACE_GETSIGINFO,
        pid,
        0,
        raw_info.as_mut_ptr() as usize,
    ) != 0
    {
        return None;
    }
    // si_signo, si_errno, si_code, then (after padding) the union at byte 16: si_addr or
    // si_call_addr, then for SIGSYS si_syscall (int) and si_arch (unsigned int).
    let i32_at = |at: usize| {
        i32::from_ne_bytes([
            raw_info[at],
            raw_info[at + 1],
            raw_info[at + 2],
            raw_info[at + 3],
        ])
    };
    let mut addr = [0u8; 8];
    addr.copy_from_slice(&raw_info[16..24]);
    Some(SignalStop {
        signo: i32_at(0),
        code: i32_at(8),
        addr: u64::from_ne_bytes(addr),
        syscall: i32_at(24),
        arch: i32_at(28) as u32,
        regs: regs(pid)?,
        ended_by_tracer: false,
    })
}

fn exit_stop(pid: libc::pid_t) -> Option<ExitStop> {
    let mut msg: libc::c_ulong = 0;
    if ptrace(
        libc::PTRACE_GETEVENTMSG,
        pid,
        0,
        &mut msg as *mut libc::c_ulong as usize,
    ) != 0
    {
        return None;
    }
    // struct ptrace_syscall_info: op (u8), pad, arch (u32) at byte 4, ...
    let mut info = [0u8; 128];
    let got = ptrace(
        libc::PTRACE_GET_SYSCALL_INFO,
        pid,
        info.len(),
        info.as_mut_ptr() as usize,
    );
    let arch = if got >= 8 {
        u32::from_ne_bytes([info[4], info[5], info[6], info[7]])
    } else {
        0
    };
    Some(ExitStop {
        status: msg as i32,
        regs: regs(pid)?,
        arch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_reads_the_handled_mask_of_this_process() {
        // Rust's runtime handles SIGSEGV (stack overflow detection) and leaves SIGFPE alone.
        let me = std::process::id() as libc::pid_t;
        assert!(caught(me, libc::SIGSEGV));
        assert!(!caught(me, libc::SIGFPE));
    }

    #[test]
    fn the_request_socket_is_the_tracers_only_descriptor() {
        // The tracer starts; a pid no process has cannot be seized.
        assert!(tracer_pid().is_some());
        let gate = AtomicU32::new(0);
        let Err(NotTraced::Untraced(err)) = seize(0x3fff_fff0, false, false, &gate) else {
            panic!("a pid no process has was seized, or the tracer was lost");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "{err}");
        assert_eq!(
            gate.into_inner(),
            GATE_UNTRACED,
            "the tracer opened the gate"
        );
        let fds = std::fs::read_dir(format!("/proc/{}/fd", tracer_pid().unwrap()))
            .unwrap()
            .count();
        assert_eq!(fds, 2, "the socket and the signalfd");
    }

    #[test]
    fn free_slots_are_handed_out_lowest_first_and_run_out() {
        let mut free = FreeSlots::default();
        assert_eq!(
            [free.take(), free.take(), free.take()],
            [Some(0), Some(1), Some(2)]
        );
        free.returned.push(1);
        assert_eq!([free.take(), free.take()], [Some(1), Some(3)]);
        while free.take().is_some() {}
        assert_eq!(free.fresh, SLOTS as u32);
        free.returned.push(7);
        assert_eq!([free.take(), free.take()], [Some(7), None]);
    }

    /// The CPUs `pid` may run on.
    fn cpus_of(pid: libc::pid_t) -> Vec<usize> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, written by the kernel within its size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(pid, std::mem::size_of_val(&set), &mut set),
                0
            );
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect()
        }
    }

    #[test]
    fn a_thread_kept_to_one_cpu_has_a_tracer_on_that_cpu() {
        let allowed = crate::sys::allowed_cpus();
        let shared = std::thread::spawn(tracer_pid)
            .join()
            .unwrap()
            .expect("a tracer");
        let last = *allowed.last().unwrap();
        let (pinned, report) = std::thread::spawn(move || {
            crate::sys::set_thread_cpus(&[last]).unwrap();
            use_cpu_tracer(last);
            // A fault's details from the tracer on this CPU: verified.
            let store = [0x31, 0xc0, 0x48, 0xc7, 0x00, 0x01, 0x00, 0x00, 0x00, 0xc3];
            let report = crate::run(&store, b"", &crate::RunOptions::default()).unwrap();
            (tracer_pid().expect("a tracer"), report)
        })
        .join()
        .unwrap();
        assert_ne!(
            pinned, shared,
            "a pinned thread shares the tracer of the others"
        );
        assert_eq!(cpus_of(pinned), vec![last]);
        let crate::Outcome::Crashed { fault, .. } = &report.outcome else {
            panic!("{}", report.summary());
        };
        assert!(
            fault.as_ref().is_some_and(|f| f.verified),
            "{}",
            report.summary()
        );
        // Another thread kept to that CPU that asks finds the same tracer; one that does not
        // ask, the shared one.
        let again = std::thread::spawn(move || {
            crate::sys::set_thread_cpus(&[last]).unwrap();
            let shared = tracer_pid();
            use_cpu_tracer(last);
            (shared, tracer_pid())
        })
        .join()
        .unwrap();
        assert_eq!(again, (Some(shared), Some(pinned)));
    }

    /// `kcmp(a, b, KCMP_VM, 0, 0)`: whether two processes share one address space; see
    /// kcmp(2). `None` when the kernel cannot say.
    fn same_memory(a: libc::pid_t, b: libc::pid_t) -> Option<bool> {
        const KCMP_VM: libc::c_long = 1;
        // SAFETY: kcmp takes no pointers for KCMP_VM.
        let ret = unsafe { libc::syscall(libc::SYS_kcmp, a, b, KCMP_VM, 0, 0) };
        (ret >= 0).then_some(ret == 0)
    }

    #[test]
    fn the_tracer_shares_the_hosts_memory_and_a_fork_does_not() {
        let me = std::process::id() as libc::pid_t;
        let tracer = tracer_pid().expect("a tracer");
        let Some(shared) = same_memory(me, tracer) else {
            eprintln!("kcmp is not available here: skipped");
            return;
        };
        assert!(shared, "the tracer process has an address space of its own");
        // The twin: a process made by fork (what the tracer was before) has its own.
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let forked = same_memory(me, child.id() as libc::pid_t);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(forked, Some(false));
    }
}
