//! A worker's life as the host sees it, one type per state (youki's process states, for
//! bytejail's workers):
//!
//! ```text
//!  Spawned::spawn, through a Forker (this thread, or a zygote)
//!     v
//!  Spawned --- run: a fresh job, fed, watched, reaped, classified ---------------> Report
//!     | park: "ready" read
//!     v
//!  Parked <--- returned: a same-code input said "done" --------------+--------> Report
//!     | wake: go byte on fd 0 (pool)  /  go: go pipe (same code)       |
//!     v                                                                |
//!  Running --- watch_input (same code) ---------------------------------+
//!     |                                 \--- reap_input: the input ended it ---> Report
//!     | drive (pool): one job ----------------------------------------------> Report
//!     v                                     (and, if the guest returned:)
//!  Lingering: said "done", killed and reaped off the job's clock (end)
//! ```
//!
//! [`crate::run`] and [`crate::Zygote::run`] take a fresh worker from spawned to reaped;
//! [`crate::Pool`] parks workers ahead of time and wakes each for one job, after which it may
//! linger; [`crate::SameCode`] parks its worker again after every input that returns; `batch`
//! runs its jobs through those. Every state ends its worker with `end` when it is of no more use.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::abi::{Registers, RunOptions};
use crate::arena::Arena;
use crate::error::Error;
use crate::policy::Policy;
use crate::report::{Outcome, Report};
use crate::sys;
use crate::worker::{self, layout::*, protocol, FixedMap, Protect, Walls, WorkerPlan, PROTECTS};
use crate::zygote::Zygote;

use super::classify::{classify, job_denies, setup_error, Evidence, Kill, WaitStatus};
use super::walls::{cap_last, cpu_limit_secs, guest_may_signal, job_cgroup, walls};
use super::watch::{
    after_spun_done, cpu_clock, kill_worker, pollfd, watch_worker, Control, CpuWatch, InputFeeder,
    Watch, Watched,
};

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
    /// fd 1 when it is not a pipe: a same-code worker's description of its arena's file (see
    /// [`crate::arena::output_in_file`]); its `RLIMIT_FSIZE` then ends that file one byte past
    /// the output limit.
    pub output: Option<&'a OwnedFd>,
}

/// What forks a worker: this thread, or a zygote (see [`crate::zygote`]), which forks it from
/// its own small address space and hands it to this process (`CLONE_PARENT`). Either way the
/// worker is this process's child, waited for and killed the same way.
#[derive(Clone, Copy)]
pub(crate) enum Forker<'a> {
    Direct,
    Zygote(&'a Zygote),
}

impl<'a> Forker<'a> {
    /// Through `zygote` when there is one, else directly.
    pub(crate) fn of(zygote: Option<&'a Zygote>) -> Forker<'a> {
        zygote.map_or(Forker::Direct, Forker::Zygote)
    }

    /// Forks a worker for `plan`; a zygote also gets the descriptors the plan numbers in
    /// this process: the arena's memfd, the input's read end, the output's write end, then
    /// the control pipes present (go, done).
    fn fork(
        self,
        plan: &WorkerPlan,
        arena_fd: i32,
        control: [Option<&OwnedFd>; 2],
    ) -> Result<(libc::pid_t, OwnedFd), Error> {
        match self {
            Forker::Direct => worker::spawn(plan).map_err(|e| Error::io("forking the worker", e)),
            Forker::Zygote(zygote) => {
                let mut fds = vec![arena_fd, plan.input_fd, plan.output_fd];
                fds.extend(control.into_iter().flatten().map(|fd| fd.as_raw_fd()));
                zygote
                    .spawn_worker(plan, &fds)
                    .map_err(|e| Error::io("forking the worker through the zygote", e))
            }
        }
    }
}

/// A forked worker: its pid and pidfd, and the host's ends of its pipes (the output's read
/// end non-blocking; the input's write end, with [`Stdin::Pipe`], made so once there is input
/// to feed).
pub(crate) struct Spawned {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    input_w: Option<OwnedFd>,
    /// The host's own copy of the input's read end, kept open so that the input pipe always
    /// has a reader: no write to it (the go byte, the input) can raise SIGPIPE or fail with
    /// EPIPE. Input a worker never reads stays in the pipe, and the run ends on its pidfd.
    input_r: Option<OwnedFd>,
    output_r: OwnedFd,
    /// The host's own copy of the output's write end, kept open so that the read end never
    /// reports EOF: the worker's end is seen once, on its pidfd, and the host wakes only then
    /// (and for output), not also when the dying worker's descriptors close.
    output_w: OwnedFd,
    /// The job's cgroups, removed once the worker is reaped.
    cgroup: Option<crate::cgroup::JobCgroup>,
    /// The worker's tracer, when it is traced (see [`crate::tracer`]).
    trace: Option<crate::tracer::Trace>,
    /// Its fd 1 is its arena's file, not the output pipe (which then stays empty).
    output_in_file: bool,
}

impl Spawned {
    /// Creates the pipes and forks a worker into `arena` (see [`Arena::prepare_worker`]) with
    /// `fds`, by `via`.
    pub(crate) fn spawn(
        arena: &Arena,
        maps: [FixedMap; 5],
        protects: [Protect; PROTECTS],
        options: &RunOptions,
        cpu_limit_secs: u64,
        fds: WorkerFds<'_>,
        via: Forker<'_>,
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
        let (output_r, output_w) =
            sys::pipe().map_err(|e| Error::io("creating the output pipe", e))?;
        sys::set_nonblocking(output_r.as_raw_fd())
            .map_err(|e| Error::io("fcntl on the output pipe", e))?;
        let control = [fds.go, fds.done];
        // A one-job worker this thread forks itself (not a pool's or same-code worker, which
        // outlives the call) whose job may start no task: this thread may trace it itself
        // (see `tracer::trace_own_workers`).
        let own_child = matches!(via, Forker::Direct)
            && control.iter().all(Option::is_none)
            && options.limits.max_procs == 1;
        debug_assert!(arena.mapped_here(), "spawning into another process's arena");
        let cgroup = job_cgroup(options)?;
        let filter_mode = options.policy != Policy::Strict;
        // Built in place: see `walls`.
        let mut plan = WorkerPlan {
            host_pid: arena.owner_pid(),
            input_fd,
            output_fd: fds.output.map_or(output_w.as_raw_fd(), AsRawFd::as_raw_fd),
            control_fds: control.map(|fd| fd.map_or(-1, |fd| fd.as_raw_fd())),
            region: arena.region_addr(),
            maps,
            protects,
            cpu_limit_secs,
            rseq: sys::rseq_registration(),
            scrub: options.scrub,
            filter_mode,
            // Only a filter-mode worker drops its capabilities (strict mode leaves it no
            // syscall that could use one): a strict run does not read the number at all.
            cap_last: if filter_mode { cap_last() } else { 0 },
            walls: Walls::NONE,
            rlimits: [
                (
                    libc::RLIMIT_FSIZE,
                    match fds.output {
                        // The guest's fd 1 is the only file it can write.
                        Some(_) => arena
                            .output_base()
                            .saturating_add(options.limits.max_output as u64)
                            .saturating_add(1),
                        None => options.limits.max_file_size,
                    },
                ),
                (libc::RLIMIT_NOFILE, options.limits.max_open_files),
            ],
            cgroup_procs: [[0; crate::cgroup::PROCS_PATH_MAX]; crate::cgroup::PROCS_SLOTS],
            traced: options.trace,
        };
        walls(options, &mut plan.walls)?;
        if let Some(cgroup) = &cgroup {
            plan.cgroup_procs = cgroup
                .procs_paths()
                .map_err(|e| Error::io("making the job's cgroups", e))?;
        }
        // A traced worker waits at its gate until its tracer holds it.
        arena.preset_trace_gate(if options.trace { 0 } else { GATE_UNTRACED });
        let (pid, pidfd) = via.fork(&plan, arena.fd(), control)?;
        let trace = if options.trace {
            // Untraced if the tracer cannot attach (another tracer holds the worker, or this
            // host may not trace it): the report then marks its details unverified.
            let init = plan.walls.pid_namespace();
            // The gate is open when this returns, but for a tracer lost meanwhile.
            match crate::tracer::seize(pid, init, own_child, arena.trace_gate()) {
                Ok(trace) => Some(trace),
                Err(crate::tracer::NotTraced::Untraced(_)) => None,
                Err(crate::tracer::NotTraced::Lost(e)) => {
                    // Seized and killed with its tracer, or waiting at its gate: no guest of
                    // this job ran, and none will.
                    sys::end_child(pid, &pidfd);
                    return Err(Error::io("tracing the worker", e));
                }
            }
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
            output_in_file: fds.output.is_some(),
        })
    }

    /// Waits (at most `limit`) until the worker is set up and parked: it said "ready" (see
    /// [`await_ready`]) on `ready`, or on its output pipe. A worker that does not park is killed
    /// and reaped here, and its setup failure becomes the error.
    pub(crate) fn park(
        self,
        arena: &Arena,
        limit: Duration,
        ready: Option<&OwnedFd>,
    ) -> Result<Parked, Error> {
        await_ready(arena, &self, ready.unwrap_or(&self.output_r), limit)?;
        let cpu = cpu_clock(self.pid);
        Ok(Parked { worker: self, cpu })
    }

    /// Runs one job in this fresh worker, which runs its guest as soon as it is set up:
    /// writes the input, watches it from `start`, reaps it and classifies how it ended.
    pub(crate) fn run(
        self,
        arena: &Arena,
        code: &[u8],
        input: &[u8],
        options: &RunOptions,
        start: Instant,
    ) -> Result<Report, Error> {
        drive(arena, self, code, input, options, start, None)?
            .report
            .ok_or_else(|| Error::io("running a fresh worker", std::io::Error::other("no report")))
    }

    /// Kills and reaps the worker; its pipes close and its cgroups go after that.
    fn end(self) {
        end_worker(self.pid, &self.pidfd, self.trace.as_ref());
    }
}

/// Kills and reaps a worker that is of no more use; a traced one through
/// [`crate::tracer::Trace::release`] (which kills it, and ends a tracer that stopped answering
/// and holds it), so that no reap waits for good.
fn end_worker(pid: libc::pid_t, pidfd: &OwnedFd, trace: Option<&crate::tracer::Trace>) {
    match trace {
        Some(trace) => {
            trace.release(pid, pidfd);
            let _ = sys::reap(pid, pidfd);
        }
        None => sys::end_child(pid, pidfd),
    }
}

/// A worker set up and waiting for its go byte (on fd 0 for a pool worker, on its go pipe for
/// a same-code worker), with its CPU clock when it parked.
pub(crate) struct Parked {
    worker: Spawned,
    /// The worker's CPU time when it parked: its set-up (and earlier inputs), which the next
    /// job's time leaves out.
    cpu: Duration,
}

impl Parked {
    /// The worker's process id.
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.worker.pid
    }

    /// The read end of the worker's output pipe, for a watch that tells without a system
    /// call whether the guest wrote there (see [`sys::uring`]); `None` where its fd 1 is not
    /// the pipe. The pipe holds nothing between inputs: the last input's reader emptied it.
    pub(crate) fn output_pipe(&self) -> Option<RawFd> {
        (!self.worker.output_in_file).then(|| self.worker.output_r.as_raw_fd())
    }

    /// The worker's CPU time when it parked.
    pub(crate) fn cpu_parked(&self) -> Duration {
        self.cpu
    }

    /// Wakes a pool worker with its go byte on fd 0. `None` when the worker is gone or the
    /// byte cannot be written: the worker is then reaped here, its guest never ran, and the
    /// job must run elsewhere.
    ///
    /// Under `strict` and `strict-bpf` whether the worker still lives is not asked first (a
    /// `ppoll` of its pidfd, about 0.25 us of every job): the byte goes into a pipe the host
    /// holds a reader of, so it is written even to a worker that died while parked, and
    /// [`Running::drive`] tells that case apart afterwards by the byte still waiting in the
    /// pipe (the job then has no report). A guest there can only take bytes out of that pipe,
    /// never put one in. Under a profile it might (opening `/proc/self/fd/0` for writing,
    /// say) and so have its job run again: the pidfd is asked first, as before.
    pub(crate) fn wake(self, policy: &Policy) -> Option<Running> {
        let worker = self.worker;
        let gone = !unread_go_tells(policy) && sys::pidfd_ended(&worker.pidfd).unwrap_or(true);
        // The pipe is empty and the worker waits for exactly this byte: it always fits, and
        // the pipe has a reader (`Spawned::input_r`).
        let woken = !gone
            && worker
                .input_w
                .as_ref()
                .is_some_and(|w| matches!(sys::write(w.as_raw_fd(), &protocol::GO), Ok(1)));
        if !woken {
            worker.end();
            return None;
        }
        Some(Running {
            worker,
            cpu_before: self.cpu,
        })
    }

    /// Starts a same-code worker's next input with its go byte on `go` (the host's end of its
    /// go pipe, which holds at most this byte and has a reader while the host holds one). What
    /// its tracer saw of earlier inputs is dropped first: it is not this input's. A worker
    /// the byte cannot be written to is ended, and that is the error.
    ///
    ///
    /// The input's number `seq` goes into the hand-off's go `word` first (see
    /// [`crate::spin`]), where a worker that spins after this input compares it. With
    /// `by_word` (the worker was left spinning after its last input) that is the go, and the
    /// byte is written only if the worker stopped spinning and sleeps on the pipe, and
    /// `seq` goes into the context's `ctx_seq` word first, where a worker woken by the pipe
    /// reads it (one that spun takes it from the go word). The second value says whether
    /// the byte was written.
    ///
    /// A "done" for this input can be there before the input starts only if the guest put it
    /// there (an earlier input of its own wrote the done word, or a message on the done pipe,
    /// one ahead), and with it a record that still says "returned": that "done" would be
    /// believed at once, and the input reported from a record its guest has not written yet.
    /// So a done word that names this input is cleared before the go, and before a go byte
    /// (whose pipe may hold such a message) the record's state is too. (The worker clears the
    /// state itself as the input starts; the host does not write it on the spinning path,
    /// where that line stays in the worker's cache.)
    pub(crate) fn go(
        self,
        go: &OwnedFd,
        arena: &Arena,
        seq: u64,
        by_word: bool,
    ) -> Result<(Running, bool), Error> {
        use std::sync::atomic::Ordering;
        if let Some(trace) = &self.worker.trace {
            trace.take();
        }
        let done = arena.handoff_word(HANDOFF_DONE);
        if done.load(Ordering::Relaxed) == seq {
            done.store(0, Ordering::Relaxed);
        }
        let asleep = crate::spin::post_go(arena.handoff_word(HANDOFF_GO), seq);
        let by_pipe = !by_word || asleep;
        if by_pipe {
            // Before the byte: the worker reads them once the byte is in.
            arena.ctx_seq_word().store(seq, Ordering::Release);
            arena.record_state_word().store(0, Ordering::Release);
        }
        if by_pipe && !matches!(sys::write(go.as_raw_fd(), &protocol::GO), Ok(1)) {
            self.end();
            return Err(Error::io(
                "waking the same-code worker",
                std::io::Error::other("the go byte was not written"),
            ));
        }
        let running = Running {
            worker: self.worker,
            cpu_before: self.cpu,
        };
        Ok((running, by_pipe))
    }

    /// Reads the worker's CPU clock again (a spinning session's inputs do not).
    pub(crate) fn refresh_cpu(&mut self) {
        self.cpu = cpu_clock(self.worker.pid);
    }

    /// Ends a worker that will not be used: kill and reap.
    pub(crate) fn end(self) {
        self.worker.end();
    }
}

/// A woken worker running a job (a pool worker) or an input (a same-code worker), with its CPU
/// clock before it (when it parked).
pub(crate) struct Running {
    worker: Spawned,
    cpu_before: Duration,
}

impl Running {
    /// Runs a pool worker's job (see [`drive`]): a guest that returns is reported as soon as
    /// the worker says "done" with `seq` on `done`, and the worker is handed back to be ended
    /// and reaped later. No report ([`Driven::report`] is `None`) when the worker ended
    /// without taking its go byte: it was gone before the job started (see [`Parked::wake`]).
    #[allow(clippy::too_many_arguments)] // the job, and the done pipe to watch
    pub(crate) fn drive(
        self,
        arena: &Arena,
        code: &[u8],
        input: &[u8],
        options: &RunOptions,
        start: Instant,
        done: &OwnedFd,
        seq: u64,
    ) -> Result<Driven, Error> {
        let done = DoneWatch {
            fd: done,
            seq,
            cpu_before: self.cpu_before,
        };
        drive(arena, self.worker, code, input, options, start, Some(done))
    }

    /// Watches a same-code worker's input (the input is in memory: nothing to feed) from
    /// `start` until the worker says "done" with `seq` on `done` and the record agrees, ends,
    /// or is killed.
    pub(crate) fn watch_input(
        &self,
        arena: &Arena,
        done: &OwnedFd,
        seq: u64,
        options: &RunOptions,
        start: Instant,
    ) -> Result<Watch, Error> {
        let confirm = || arena.record_says_returned();
        let max_output = options.limits.max_output;
        let output_over = || arena.output_over(max_output);
        let control = Control {
            fd: done,
            seq,
            confirm: &confirm,
            output_over: self
                .worker
                .output_in_file
                .then_some(&output_over as &dyn Fn() -> std::io::Result<bool>),
        };
        let mut no_input = InputFeeder {
            fd: None,
            input: b"",
            written: 0,
        };
        let worker = &self.worker;
        let watched = Watched {
            pidfd: &worker.pidfd,
            trace: worker.trace.as_ref(),
        };
        watch_worker(
            watched,
            &worker.output_r,
            &mut no_input,
            Some(&control),
            options,
            start,
            CpuWatch::new(worker.pid, options, self.cpu_before)
                .map(|watch| watch.whole_tree(worker.cgroup.as_ref())),
        )
    }

    /// Spins up to `limit` for a same-code input's "done" in the hand-off's done word (see
    /// [`crate::spin::spin_for_done`]), `limit` from `start` (the go). `None`: no "done" there
    /// in time, and the worker now says it on the done pipe: watch it with
    /// [`Running::watch_input`].
    ///
    /// `written`: the output pipe's watch, when there is one (see [`Parked::output_pipe`]).
    pub(crate) fn spin_for_done(
        &self,
        arena: &Arena,
        seq: u64,
        limit: Duration,
        start: Instant,
        options: &RunOptions,
        written: Option<&mut sys::uring::PipeWatch>,
    ) -> Result<Option<Watch>, Error> {
        let word = arena.handoff_word(HANDOFF_DONE);
        let confirm = || {
            // The report reads the whole record next: its lines come from the worker's CPU
            // together rather than one after the other.
            arena.prefetch_record();
            arena.record_says_returned()
        };
        if !crate::spin::spin_for_done(word, seq, limit, start, confirm) {
            return Ok(None);
        }
        let worker = &self.worker;
        let output_r = (!worker.output_in_file).then_some(&worker.output_r);
        after_spun_done(&worker.pidfd, output_r, written, options).map(Some)
    }

    /// What a same-code worker whose fd 1 is its arena's file (see
    /// [`crate::arena::output_in_file`]) wrote during the input `watch` watched, into
    /// `watch` (at most the limit, and whether it passed it); a worker still running past
    /// the limit is ended, as the output pipe's reader ends one. Nothing for other workers.
    pub(crate) fn output_from_file(
        &self,
        arena: &mut Arena,
        watch: &mut Watch,
        options: &RunOptions,
    ) -> Result<(), Error> {
        if !self.worker.output_in_file {
            return Ok(());
        }
        let done = watch.done && watch.killed.is_none();
        let (output, over) = arena
            .take_output(options.limits.max_output, done)
            .map_err(|e| Error::io("reading the output", e))?;
        watch.output = output;
        watch.truncated = over;
        if over && watch.killed.is_none() && !watch.ended {
            watch.killed = kill_worker(&self.worker.pidfd, Kill::OutputLimit)?;
        }
        Ok(())
    }

    /// A same-code worker that said "done": parked again, and the input's report (see
    /// [`report_returned`]), its CPU time the worker's since it last parked.
    pub(crate) fn returned(
        self,
        arena: &Arena,
        output: Vec<u8>,
        start: Instant,
    ) -> (Parked, Report) {
        let cpu_now = cpu_clock(self.worker.pid);
        let cpu = cpu_now.saturating_sub(self.cpu_before);
        let report = report_returned(arena, output, start, cpu);
        let parked = Parked {
            worker: self.worker,
            cpu: cpu_now,
        };
        (parked, report)
    }

    /// A same-code worker whose "done" came through the spinning hand-off: parked again, and
    /// the input's report (see [`report_returned`]) with its wall time as its CPU time. The
    /// worker's CPU clock is not read (a syscall; it would count the worker's spin before
    /// the input too): the worker spun until the go and ran the guest at once, holding its CPU
    /// throughout, so the input's CPU time is at most its wall time.
    pub(crate) fn returned_spun(
        self,
        arena: &Arena,
        output: Vec<u8>,
        start: Instant,
    ) -> (Parked, Report) {
        let mut report = report_returned(arena, output, start, Duration::ZERO);
        report.user = report.wall;
        let parked = Parked {
            worker: self.worker,
            cpu: self.cpu_before,
        };
        (parked, report)
    }

    /// Reaps a same-code worker that ended (or that the host ended) during its input `seq`,
    /// and classifies as a fresh run would (see [`report_reaped`]). `None`: the worker died
    /// with its tracer (killed from outside: no guest can reach a tracer) before its record
    /// said it took the input, so the guest never ran it: its SIGKILL, sent as the tracer
    /// died, can end the very `read` that takes the go byte (a woken reader takes what is
    /// there before it looks at its signals), and the trampoline's first write after that
    /// read is the input's number.
    #[allow(clippy::too_many_arguments)] // the input, its number, and what classifies it
    pub(crate) fn reap_input(
        self,
        mut watch: Watch,
        arena: &Arena,
        code: &[u8],
        cpu_limit_secs: u64,
        start: Instant,
        policy: &Policy,
        seq: u64,
    ) -> Result<Option<Report>, Error> {
        let worker = self.worker;
        if let (Some(trace), false) = (&worker.trace, watch.ended) {
            trace.release(worker.pid, &worker.pidfd);
        }
        let reaped =
            sys::reap(worker.pid, &worker.pidfd).map_err(|e| Error::io("reaping the worker", e))?;
        let wall = start.elapsed();
        watch.facts = worker.trace.as_ref().map(crate::tracer::Trace::take);
        if watch.facts.as_ref().is_some_and(|facts| facts.lost) && arena.taken() != seq {
            return Ok(None);
        }
        // As for a fresh job: the kernel's OOM killer ended a process of the job for its
        // memory cgroup's limit (a profile worker's only).
        watch.oom_killed = worker.cgroup.as_ref().is_some_and(|c| c.oom_killed());
        report_reaped(
            &reaped,
            watch,
            arena,
            code,
            cpu_limit_secs,
            wall,
            Some(self.cpu_before),
            policy,
        )
        .map(Some)
    }

    /// Ends the worker: kill and reap.
    pub(crate) fn end(self) {
        self.worker.end();
    }
}

/// A pool worker's done pipe, watched while it runs its job: the sequence number its "done"
/// carries, and its CPU clock before the job (once it had parked).
struct DoneWatch<'a> {
    fd: &'a OwnedFd,
    seq: u64,
    cpu_before: Duration,
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
    /// Its tracer's hold on it, kept until it is reaped (see [`crate::tracer::Trace::release`]).
    trace: Option<crate::tracer::Trace>,
}

impl Lingering {
    pub(crate) fn end(self) {
        end_worker(self.pid, &self.pidfd, self.trace.as_ref());
    }
}

/// Whether a pool worker's go byte still in its fd 0 pipe after it ended proves that its guest
/// never ran: where the guest can call nothing but `read`, `write`, `exit` and `rt_sigreturn`
/// on the descriptors it has, it can take bytes out of that pipe (its read end) but never put
/// one in (see [`Parked::wake`]).
fn unread_go_tells(policy: &Policy) -> bool {
    super::walls::arena_reusable(policy)
}

/// What [`drive`] gives back: the report, and the worker if it still lives.
pub(crate) struct Driven {
    /// `None` only for a woken pool worker that ended without reading its go byte: its guest
    /// never ran, and the job must run elsewhere.
    pub report: Option<Report>,
    pub lingering: Option<Lingering>,
}

/// Runs one job in a spawned worker (woken already, if it was parked): writes the input,
/// collects the output, enforces the limits from `start`, reaps, classifies. With `done`, a
/// guest that returns is reported as soon as the worker says so, and the worker is handed back
/// to be ended and reaped later (see [`crate::pool`]).
fn drive(
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
        output_in_file,
    } = worker;
    debug_assert!(
        !output_in_file,
        "fresh and pool workers write to the output pipe"
    );
    // No input: fd 0 is at EOF at once (the shared empty pipe, or this pipe's only writer
    // closes here). Else the input is written without ever blocking.
    // (`filter` takes the write end: without input it is dropped here, not when this function
    // returns. A pool worker's fd 0 is the pipe its go byte came on, still in the pipe.)
    let input_w = match input_w.filter(|_| !input.is_empty()) {
        Some(input_w) => {
            // A larger pipe saves wake-ups for large inputs.
            if input.len() > 64 << 10 {
                sys::grow_pipe(input_w.as_raw_fd(), input.len());
            }
            sys::set_nonblocking(input_w.as_raw_fd())
                .map_err(|e| Error::io("fcntl on the input pipe", e))?;
            Some(input_w)
        }
        None => None,
    };
    let mut feeder = InputFeeder {
        fd: input_w,
        input,
        written: 0,
    };
    let confirm = || arena.record_says_returned();
    let control = done.as_ref().map(|done| Control {
        fd: done.fd,
        seq: done.seq,
        confirm: &confirm,
        output_over: None,
    });
    let cpu_before = done.as_ref().map(|done| done.cpu_before);
    let cpu_watch = CpuWatch::new(pid, options, cpu_before.unwrap_or_default())
        .map(|watch| watch.whole_tree(cgroup.as_ref()));
    let watched = Watched {
        pidfd: &pidfd,
        trace: trace.as_ref(),
    };
    let watch = watch_worker(
        watched,
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
                end_worker(pid, &pidfd, trace.as_ref());
                drop((input_r, output_r, output_w, cgroup));
                return Ok(Driven {
                    report: Some(report),
                    lingering: None,
                });
            }
            let lingering = Lingering {
                pid,
                pidfd,
                _pipes: (input_r, output_r, output_w),
                _cgroup: cgroup,
                trace,
            };
            return Ok(Driven {
                report: Some(report),
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
    let ended = watch.as_ref().is_ok_and(|w| w.ended);
    if let (Some(trace), false) = (&trace, ended) {
        // A worker this thread traces goes on from a stop only once this thread handled it.
        trace
            .follow_until_ended(&pidfd)
            .map_err(|e| Error::io("reaping the worker", e))?;
        trace.release(pid, &pidfd);
    }
    // A worker the watch saw end is waited for no more: one poll of its pidfd fewer.
    let reaped = if ended {
        sys::wait4(pid)
    } else {
        sys::reap(pid, &pidfd)
    }
    .map_err(|e| Error::io("reaping the worker", e))?;
    let wall = start.elapsed();
    // Complete: the tracer recorded every stop before it let the worker go on to its end.
    let facts = trace.as_ref().map(crate::tracer::Trace::take);
    // A woken pool worker that never read its go byte (the feeder's input, if any, went into
    // the pipe after it) died while parked: no guest ran, and there is nothing to report.
    // Nor did one killed with its tracer (from outside: no guest can reach a tracer) whose
    // record never says it took the job: its SIGKILL, sent as the tracer died, can end the
    // very `read` that takes the go byte (a woken reader takes what is there before it looks
    // at its signals), and the trampoline's first write after that read is the job's number.
    let parked_death =
        done.is_some() && unread_go_tells(&options.policy) && watch.as_ref().is_ok_and(|w| !w.done);
    let go_unread = parked_death
        && input_r
            .as_ref()
            .and_then(|r| sys::pipe_pending(r.as_raw_fd()).ok())
            .is_some_and(|pending| pending > feeder.written);
    let died_taking_go = parked_death
        && facts.as_ref().is_some_and(|facts| facts.lost)
        && arena.taken() != crate::arena::SINGLE_JOB_SEQ;
    if go_unread || died_taking_go {
        return Ok(Driven {
            report: None,
            lingering: None,
        });
    }
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
        report: Some(report),
        lingering: None,
    })
}

/// The report of a job whose worker said "done" and still lives (a pool or same-code worker):
/// the registers the trampoline recorded, the output read so far, the wall time from `start`,
/// and as `user` the CPU time the worker used for the job, `cpu` (user and system together:
/// see [`cpu_clock`]).
fn report_returned(arena: &Arena, output: Vec<u8>, start: Instant, cpu: Duration) -> Report {
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

/// The report of a reaped worker, classified from its wait status (see [`classify`]). A fresh
/// worker's CPU time is all of it, split as the kernel splits it; with `cpu_before` (a parked
/// worker: its set-up and earlier inputs), it is what the worker used after that, user and
/// system together, as [`report_returned`] counts it.
#[allow(clippy::too_many_arguments)] // what the kernel said, what the host saw, and the job's
fn report_reaped(
    reaped: &sys::Reaped,
    watch: Watch,
    arena: &Arena,
    code: &[u8],
    cpu_limit_secs: u64,
    wall: Duration,
    cpu_before: Option<Duration>,
    policy: &Policy,
) -> Result<Report, Error> {
    let (utime, stime) = (
        timeval(reaped.rusage.ru_utime),
        timeval(reaped.rusage.ru_stime),
    );
    let record = arena.record();
    let (outcome, syscall) = classify(&Evidence {
        status: WaitStatus::from_raw(reaped.status),
        cpu: utime + stime,
        killed: watch.killed,
        truncated: watch.truncated,
        strict: watch.strict,
        cpu_time: watch.cpu_time,
        cpu_limit_secs,
        guest_may_signal: watch.guest_may_signal,
        oom_killed: watch.oom_killed,
        many_procs: watch.many_procs,
        facts: watch.facts.as_ref(),
        record: &record,
        code_addr: arena.code_addr() as u64,
        code,
        job_denies: &|syscall| job_denies(policy, syscall),
    })?;
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

/// Waits (at most `limit`) for a pooled or same-code worker's "ready" byte on its output pipe: then it is set
/// up and parked, and a job handed to it waits for nothing but itself. A worker that dies or
/// stays silent instead is killed and reaped, and its setup failure becomes the error.
fn await_ready(
    arena: &Arena,
    worker: &Spawned,
    ready: &OwnedFd,
    limit: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    loop {
        let now = Instant::now();
        let mut fds = [
            pollfd(ready.as_raw_fd(), libc::POLLIN),
            pollfd(worker.pidfd.as_raw_fd(), libc::POLLIN),
        ];
        if now >= deadline {
            break;
        }
        match sys::poll(&mut fds, deadline - now) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // The runner failed: the worker must not outlive the call.
                sys::end_child(worker.pid, &worker.pidfd);
                return Err(Error::io("waiting for a pooled worker", e));
            }
            Ok(_) if fds[0].revents != 0 => {
                let mut byte = [1u8];
                let got = sys::read(ready.as_raw_fd(), &mut byte);
                if matches!(got, Ok(1)) && protocol::is_ready(byte[0]) {
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

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}
