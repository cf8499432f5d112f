//! Same-code batches: many inputs for one piece of code through one worker.
//!
//! A grader's test cases or a superoptimizer's test vectors all run the same code. A
//! [`SameCode`] keeps one worker for them: it runs an input, and when the guest returns the
//! trampoline records the registers, says "done" on its done pipe (fd 4) and parks again on its
//! go pipe (fd 3) instead of exiting; or, where it pays, hands over through a cache line that
//! both sides spin on for a while ([`RunOptions::spin`]; `docs/many-jobs.md`). Before each input the host puts everything back as it was
//! for the first one: the scratch and the stack return to zeros (they live in the arena's
//! memfd; the host zeroes the pages holding data, or punches them out of the file, which the
//! worker in strict mode could not even ask for), the whole region the guest can write returns
//! to zeros and the context is written again, the input replaces the last, and the trampoline
//! restores registers, vector state, flags and zero FS and GS bases.
//! The code cannot change: the worker maps it read+execute only and the host never rewrites it.
//! A crash, violation, timeout, exit or output overflow ends that worker; the next input starts
//! a fresh one.
//!
//! What this isolates: one submission from another (a different code gets a different worker,
//! as in any other mode). What it does not: inputs of the same submission from each other. The
//! worker is one process, so a guest can carry state from one input to the next where the host
//! does not reset it (what a forged `rt_sigreturn` frame can change: the signal mask, the
//! alternate stack's settings; segment selectors), and it can write the "done" message and the record itself, so its
//! report for an input is its own claim, exactly as good as the registers it returns. Crashes,
//! violations, timeouts and output overflows still come from the kernel and the host's clock.
//!
//! Differences from a fresh run, all documented in `docs/many-jobs.md` ("Same-code batches"):
//! - the input is only in memory (`rdi`, `rsi`); fd 0 is an empty pipe (reads give EOF) and
//!   fds 3 and 4 are the worker's go and done pipes;
//! - `user` is the worker's CPU time from the kernel's scheduler clock (user and system
//!   together) from its last "done" to this one (the input, and parking and waking), under
//!   strict mode and `strict-bpf` at most the input's wall time, or, for an input whose "done"
//!   came through the spinning hand-off, its wall time (see [`RunOptions::spin`]), `sys` is
//!   zero, and `max_rss_kib` is zero for inputs that return (measured for
//!   the input that ends the worker).

use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::abi::RunOptions;
use crate::arena::{self, Arena, Mode, Need};
use crate::error::{Error, InputError};
use crate::host::{self, Forker, Parked, Spawned, Stdin, WorkerFds};
use crate::report::Report;
use crate::spin::{self, Spinner};
use crate::sys;
use crate::zygote::Zygote;

/// CPU time a same-code worker may use across its inputs before it is replaced. Its
/// `RLIMIT_CPU` backstop is this plus the per-input margin. Short, because it also bounds what
/// a guest that forged "done" can burn between inputs, unwatched (see docs/many-jobs.md); a
/// new worker every 10 s of CPU costs a fork and a set-up, well under 0.01% of that.
const WORKER_CPU_BUDGET: Duration = Duration::from_secs(10);

/// How long a new worker may take to set itself up and park.
const READY_WAIT: Duration = Duration::from_secs(10);

/// One code, many inputs, one worker at a time (see the module docs).
///
/// # Threads
///
/// Tied to the thread that made it: neither `Send` nor `Sync`. Its worker is forked by that
/// thread, and `PR_SET_PDEATHSIG` kills a worker when the *thread* that forked it exits, not
/// when the process does; handing the worker to another thread would cost a cross-thread
/// handoff per input. Make one `SameCode` per thread (each thread may share one [`Zygote`]).
/// Dropping it ends the worker.
pub struct SameCode {
    code: Vec<u8>,
    template: std::sync::Arc<RunOptions>,
    arena: Option<Arena>,
    live: Option<Live>,
    seq: u64,
    workers: u64,
    /// Inputs given to a worker that was gone before it took them, and run again in a new one.
    rerun: u64,
    /// Inputs whose "done" came through the spinning hand-off.
    spun: u64,
    /// Spun inputs whose output pipe the host did not read (its watch said nothing came).
    unread: u64,
    output_watch: OutputWatch,
    /// A page-fault watch could not be made for a worker (see [`Live::faults`]): not tried
    /// again for later ones.
    no_fault_watch: bool,
    /// Inputs whose reset the page-fault watch spared an `fstat`.
    watched_resets: u64,
    /// Forks the workers, when given; else this thread does.
    zygote: Option<Zygote>,
    /// The process whose workers these are (see [`sys::Owner`]).
    host: sys::Owner,
    _thread_bound: PhantomData<*const ()>,
}

/// The current worker, parked between inputs (its CPU clock when it last parked, set up or
/// said "done", is where the next input's CPU time starts), and its control pipes. Its fd 0
/// is a pipe without a writer: reads give EOF.
struct Live {
    worker: Parked,
    pipes: ControlPipes,
    cpu_limit_secs: u64,
    /// Its spinning hand-off (see [`crate::spin`]), and when its CPU clock was last read.
    spinner: Spinner,
    clock_at: Instant,
    /// The output limit its `RLIMIT_FSIZE` holds it to, when its fd 1 is the arena's file
    /// (see [`arena::output_in_file`]): an input with another limit, or that wants a pipe,
    /// gets a new worker (and one that wants the file, of a worker with a pipe).
    output_limit: Option<usize>,
    /// Its page faults, counted where the host reads them without a system call (see
    /// [`crate::sys::faults`]): made at its first spun input, where the kernel allows it.
    faults: Option<crate::sys::faults::FaultWatch>,
}

/// Whether a worker's output pipe took a write, without a `read` per spun input (see
/// [`crate::sys::uring`]): one ring for the session, made before its first spun input and
/// moved to each new worker's pipe before that worker's first.
enum OutputWatch {
    /// Not made yet: no input spun.
    Untried,
    /// This kernel or process has none (each spun input's pipe is read).
    Unavailable,
    /// Watching the pipe of the worker started `for_worker`-th (see `SameCode::workers`).
    Made {
        watch: crate::sys::uring::PipeWatch,
        for_worker: u64,
    },
}

/// The output limit a worker started for `options` holds its fd 1 to when that is its arena's
/// file (see [`arena::output_in_file`]); `None` for a pipe.
fn file_output_limit(options: &RunOptions) -> Option<usize> {
    arena::output_in_file(Mode::SameCode, options).then_some(options.limits.max_output)
}

/// The host's ends of a same-code worker's go and done pipes.
struct ControlPipes {
    /// The go pipe (written) and the done pipe (read, non-blocking).
    go_w: OwnedFd,
    done_r: OwnedFd,
    /// Kept open, like the output's: the done pipe never reports EOF.
    _done_w: OwnedFd,
    /// Kept open too: the go pipe always has a reader, so writing the go byte can never raise
    /// SIGPIPE, and a go byte still in the pipe after the worker ended tells that it never
    /// started the input.
    _go_r: OwnedFd,
}

impl Live {
    /// Kills and reaps the worker; its pipes close after that.
    fn end(self) {
        self.worker.end();
    }
}

impl std::fmt::Debug for SameCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SameCode")
            .field("code_len", &self.code.len())
            .field("template", &self.template)
            .field("workers_started", &self.workers)
            .field("inputs_rerun", &self.rerun)
            .field("inputs_spun", &self.spun)
            .field("zygote", &self.zygote)
            .finish_non_exhaustive()
    }
}

impl SameCode {
    /// Prepares to run `code` under `options` (policy, scrubbing, stack and scratch sizes are
    /// fixed for every input; see [`SameCode::run_with`]). The first worker starts with the
    /// first input.
    pub fn new(code: &[u8], options: &RunOptions) -> Result<SameCode, Error> {
        host::validate(code, b"", options)?;
        Ok(SameCode {
            code: code.to_vec(),
            template: std::sync::Arc::new(options.clone()),
            arena: None,
            live: None,
            seq: 0,
            workers: 0,
            rerun: 0,
            spun: 0,
            unread: 0,
            output_watch: OutputWatch::Untried,
            no_fault_watch: false,
            watched_resets: 0,
            zygote: None,
            host: sys::Owner::here(),
            _thread_bound: PhantomData,
        })
    }

    /// As [`SameCode::new`], with every worker (and diagnosis re-run) forked by `zygote`.
    pub fn with_zygote(
        code: &[u8],
        options: &RunOptions,
        zygote: &Zygote,
    ) -> Result<SameCode, Error> {
        let mut same = SameCode::new(code, options)?;
        same.zygote = Some(zygote.clone());
        Ok(same)
    }

    /// The code every input runs.
    pub fn code(&self) -> &[u8] {
        &self.code
    }

    /// Workers started so far: 1 while every input returned, one more after each input that
    /// ended its worker, and one more for each input [rerun](Self::inputs_rerun).
    pub fn workers_started(&self) -> u64 {
        self.workers
    }

    /// Inputs whose worker was gone before it took them (killed from outside while parked, or
    /// never scheduled before the input's deadline), each run once more in a new worker: the
    /// guest never started in the first. 0 on a healthy machine.
    pub fn inputs_rerun(&self) -> u64 {
        self.rerun
    }

    /// Inputs so far whose end the host saw through the spinning hand-off rather than the done
    /// pipe (see [`RunOptions::spin`]): 0 where spinning is off or does not pay.
    pub fn inputs_spun(&self) -> u64 {
        self.spun
    }

    /// Spun inputs (see [`SameCode::inputs_spun`]) whose output pipe the host did not read:
    /// the pipe's io_uring watch said that nothing reached it (`docs/many-jobs.md`, "The
    /// spinning hand-off"). 0 where io_uring is not available (each such input's pipe is read)
    /// and where fd 1 is the arena's file ([`RunOptions::output_file`]).
    pub fn inputs_unread(&self) -> u64 {
        self.unread
    }

    /// Inputs whose reset of the worker's scratch and stack made no `fstat`: the worker's
    /// page-fault watch, a perf event that counts its page faults into memory the host reads,
    /// said that none came since the last scan, so no page came to be (`docs/many-jobs.md`,
    /// "The spinning hand-off"). Such a spun input that wrote nothing costs the host no system
    /// call. 0 where the kernel refuses the event (`kernel.perf_event_paranoid` over 1 without
    /// `CAP_PERFMON`, or without `CAP_SYS_PTRACE`: the worker is not dumpable; a seccomp profile
    /// around bytejail), for inputs that do not spin, and mostly where fd 1 is the arena's file
    /// ([`RunOptions::output_file`]), whose `fstat` after each input is made anyway.
    pub fn inputs_unstatted(&self) -> u64 {
        self.watched_resets
    }

    /// The current worker's process id, while one is parked.
    pub fn worker_pid(&self) -> Option<u32> {
        self.live.as_ref().map(|live| live.worker.pid() as u32)
    }

    /// Runs one input with the options given at [`SameCode::new`].
    pub fn run(&mut self, input: &[u8]) -> Result<Report, Error> {
        // Shared, not copied: the options are half a KiB, and this is once per input.
        let options = std::sync::Arc::clone(&self.template);
        self.run_with(input, &options)
    }

    /// Whether [`SameCode::run_with`] accepts `options`: the same policy, scrubbing, stack,
    /// scratch and worker-applied limits (memory, processes, files, CPU time) as the worker was
    /// made for.
    pub fn fits(&self, options: &RunOptions) -> bool {
        let t = &self.template;
        options.policy == t.policy
            && options.scrub == t.scrub
            && options.limits.stack == t.limits.stack
            && options.limits.scratch == t.limits.scratch
            && host::worker_limits_match(options, t)
    }

    /// Runs one input with its own registers, entry, timeout and output limit. The report is
    /// the one [`crate::run`] gives, with the differences the module docs list.
    pub fn run_with(&mut self, input: &[u8], options: &RunOptions) -> Result<Report, Error> {
        host::validate(&self.code, input, options)?;
        self.host
            .check("this SameCode")
            .map_err(|e| Error::io("running a same-code input", e))?;
        if !self.fits(options) {
            return Err(InputError::Invalid(
                "a same-code worker keeps the policy, scrubbing, stack, scratch and limits on \
                 memory, processes, files and CPU time it was started with; these options \
                 change them"
                    .into(),
            )
            .into());
        }
        if let Some(report) = crate::Cancel::before_start(options) {
            return Ok(report);
        }
        // One retry: a worker that died while parked (killed from outside) never ran the input.
        for _ in 0..2 {
            if let Some(report) = self.try_input(input, options)? {
                let zygote = Forker::of(self.zygote.as_ref());
                return Ok(host::diagnose(report, &self.code, input, options, zygote));
            }
        }
        Err(Error::io(
            "starting a same-code worker",
            std::io::Error::other("two fresh workers died before the input ran"),
        ))
    }

    /// Runs the input in the current worker (started first if needed). `None`: the parked
    /// worker was gone before the input started.
    fn try_input(&mut self, input: &[u8], options: &RunOptions) -> Result<Option<Report>, Error> {
        let need = Need::sized(self.code.len(), input.len(), options);
        if !self.arena.as_ref().is_some_and(|a| a.fits(need)) {
            self.end_worker();
            self.arena = None;
        }
        if !host::arena_reusable(&options.policy) {
            // Under a profile the guest may have changed what its worker maps (the blob that
            // runs before seccomp included): a new worker gets a new arena.
            if self
                .live
                .as_ref()
                .is_some_and(|live| live.near_budget(options))
            {
                self.end_worker();
            }
            if self.live.is_none() {
                self.arena = None;
            }
        }
        let mut arena = match self.arena.take() {
            Some(arena) => arena,
            None => {
                // Room for inputs up to 64 KiB, or this one, without a new worker.
                let room = Need::sized(self.code.len(), input.len().max(64 << 10), options);
                let mut arena = Arena::new_reusable(room)
                    .map_err(|e| Error::io("creating the worker arena", e))?;
                arena
                    .load_job(&self.code, b"", options)
                    .map_err(|e| Error::io("preparing the worker arena", e))?;
                arena
            }
        };
        let result = self.input_in(&mut arena, input, options);
        self.arena = Some(arena);
        result
    }

    fn input_in(
        &mut self,
        arena: &mut Arena,
        input: &[u8],
        options: &RunOptions,
    ) -> Result<Option<Report>, Error> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.start_worker(arena, options)?,
        };
        // The CPU time the worker used so far (set-up, earlier inputs): the input's is the rest.
        // A worker near its CPU backstop is replaced before the input could reach it, and one
        // whose file limit holds another output limit than this input's.
        if live.near_budget(options) || live.output_limit != file_output_limit(options) {
            live.end();
            live = self.start_worker(arena, options)?;
        }
        self.seq += 1;
        let seq = self.seq;
        let faults = live.faults.as_ref().map(|watch| arena::Faults {
            watch: watch.id(),
            head: watch.head(),
        });
        let cleaned = match arena.reset_memory(host::arena_reusable(&options.policy), faults) {
            Ok(reset) => {
                self.watched_resets += u64::from(reset.unstatted);
                reset.cleaned
            }
            Err(e) => {
                live.end();
                return Err(Error::io("resetting the worker's scratch and stack", e));
            }
        };
        if let Err(e) = arena.load_input(input, options, cleaned) {
            live.end();
            return Err(Error::io("loading the input", e));
        }

        // The worker spins after this input if `plan` says so; it spun after the last one if
        // the go goes through the go word.
        let now = Instant::now();
        let plan = live.spinner.plan(options, now);
        arena.set_spin(plan.pauses);
        if plan.pauses > 0 {
            self.watch_output(&live);
            if live.faults.is_none() && !self.no_fault_watch {
                live.faults = crate::sys::faults::FaultWatch::new(live.worker.pid()).ok();
                self.no_fault_watch = live.faults.is_none();
            }
        }
        let by_word = live.spinner.go_by_word();
        // Whether the worker's clock, read last when it parked, says what it used before this
        // input. Not once it spun since: then even a read now can be a scheduler tick behind
        // (the kernel adds a running task's time to its process clock at ticks and switches).
        // And under strict mode and strict-bpf, where the worker runs one thread, its CPU time
        // for the input is at most the input's wall time whatever the clock says: read as a
        // worker goes to sleep (after "ready" or "done"), it can still miss the last moments
        // it ran, which the next input's difference then counts.
        let clock_fresh = !by_word && !host::arena_reusable(&options.policy);
        let mut start = now;
        if by_word
            && (plan.pauses == 0
                || now.saturating_duration_since(live.clock_at) >= spin::CLOCK_EVERY)
        {
            // Its clock counts its spins since it was last read: read it again for its budget
            // (when it stops spinning, and now and then while it keeps spinning).
            live.worker.refresh_cpu();
            start = Instant::now();
            live.clock_at = start;
        }
        let Live {
            worker,
            pipes,
            cpu_limit_secs,
            mut spinner,
            clock_at,
            output_limit,
            faults,
        } = live;
        let (worker, by_pipe) = worker.go(&pipes.go_w, arena, seq, by_word)?;
        spinner.started(plan);
        let spun = if plan.pauses == 0 {
            None
        } else {
            let written = match &mut self.output_watch {
                OutputWatch::Made { watch, .. } => Some(watch),
                OutputWatch::Untried | OutputWatch::Unavailable => None,
            };
            match worker.spin_for_done(arena, seq, spinner.host_spin(), start, options, written) {
                Ok(watch) => watch,
                Err(e) => {
                    worker.end();
                    return Err(e);
                }
            }
        };
        let spun_done = spun.is_some();
        let mut watch = match spun {
            Some(watch) => watch,
            None => match worker.watch_input(arena, &pipes.done_r, seq, options, start) {
                Ok(watch) => watch,
                Err(e) => {
                    worker.end();
                    return Err(e);
                }
            },
        };
        if let Err(e) = worker.output_from_file(arena, &mut watch, options) {
            worker.end();
            return Err(e);
        }
        let unread = watch.output_unread;
        if watch.done && watch.killed.is_none() {
            let (worker, mut report) = if spun_done {
                worker.returned_spun(arena, watch.output, start)
            } else {
                worker.returned(arena, watch.output, start)
            };
            if !clock_fresh {
                // The worker ran one thread: the input's own CPU time is at most its wall time.
                report.user = report.user.min(report.wall);
            }
            arena.note_cleaned();
            let ended = start + report.wall;
            spinner.returned(report.wall, ended, spun_done, by_word && by_pipe, by_word);
            self.spun += u64::from(spun_done);
            self.unread += u64::from(unread);
            self.live = Some(Live {
                worker,
                pipes,
                cpu_limit_secs,
                spinner,
                clock_at: if spun_done { clock_at } else { ended },
                output_limit,
                faults,
            });
            return Ok(Some(report));
        }
        let never_ran = if by_pipe {
            // The go byte still in the pipe: the worker died while parked (killed from
            // outside, say) or stopped before it could take it.
            sys::pipe_pending(pipes.go_w.as_raw_fd()).is_ok_and(|n| n > 0)
        } else {
            // Posted in the go word to a spinning worker, which says which input it took.
            arena.taken() != seq
        };
        if never_ran {
            worker.end();
            self.rerun += 1;
            return Ok(None);
        }

        // The worker ended (or the host ended it): reap and classify as a fresh run would.
        let Some(mut report) = worker.reap_input(
            watch,
            arena,
            &self.code,
            cpu_limit_secs,
            start,
            &options.policy,
            seq,
        )?
        else {
            // Killed with its tracer as it took the go byte: the guest never ran the input.
            self.rerun += 1;
            return Ok(None);
        };
        if !clock_fresh {
            report.user = report.user.min(report.wall); // as for a return, above
        }
        Ok(Some(report))
    }

    fn start_worker(&mut self, arena: &mut Arena, options: &RunOptions) -> Result<Live, Error> {
        // A new worker starts with a clean hand-off: its first go comes on the pipe.
        arena.reset_handoff();
        let (maps, protects) = arena.prepare_worker(arena.capacity(), options, Mode::SameCode);
        let cpu_limit_secs = WORKER_CPU_BUDGET.as_secs() + options.limits.timeout.as_secs() + 2;
        // Its fd 1: the arena's file, or a pipe (see `arena::output_in_file`).
        let output = arena::output_in_file(Mode::SameCode, options)
            .then(|| arena.open_output())
            .transpose()
            .map_err(|e| Error::io("opening the worker's output", e))?;
        if self.zygote.as_ref().is_some_and(Zygote::has_ended) {
            // Killed from outside: it would fork no more workers.
            self.zygote = Some(Zygote::start()?);
        }
        let (go_r, go_w) = sys::pipe().map_err(|e| Error::io("creating the go pipe", e))?;
        let (done_r, done_w) = sys::pipe().map_err(|e| Error::io("creating the done pipe", e))?;
        sys::set_nonblocking(done_r.as_raw_fd())
            .map_err(|e| Error::io("fcntl on the done pipe", e))?;
        let spawned = Spawned::spawn(
            arena,
            maps,
            protects,
            options,
            cpu_limit_secs,
            WorkerFds {
                stdin: Stdin::Eof,
                go: Some(&go_r),
                done: Some(&done_w),
                output: output.as_ref(),
            },
            Forker::of(self.zygote.as_ref()),
        )?;
        self.workers += 1;
        // Its first input rewrites the region, which the worker reads until it parks.
        // A worker whose output goes to the file says "ready" on its done pipe.
        let worker = spawned.park(arena, READY_WAIT, output.is_some().then_some(&done_r))?;
        Ok(Live {
            worker,
            pipes: ControlPipes {
                go_w,
                done_r,
                _done_w: done_w,
                _go_r: go_r,
            },
            cpu_limit_secs,
            spinner: Spinner::new(),
            clock_at: Instant::now(),
            output_limit: file_output_limit(options),
            faults: None,
        })
    }

    /// Points the session's output watch at `live`'s pipe if it watches another worker's,
    /// making it first if there is none yet. A watch that cannot be made or moved is given
    /// up for the session: its spun inputs' pipes are read.
    fn watch_output(&mut self, live: &Live) {
        let Some(pipe) = live.worker.output_pipe() else {
            return; // fd 1 is the arena's file
        };
        let worker = self.workers;
        match &mut self.output_watch {
            OutputWatch::Untried => {
                self.output_watch = match crate::sys::uring::PipeWatch::new(pipe) {
                    Ok(watch) => OutputWatch::Made {
                        watch,
                        for_worker: worker,
                    },
                    Err(_) => OutputWatch::Unavailable,
                }
            }
            OutputWatch::Made { watch, for_worker } if *for_worker != worker => {
                if watch.watch(pipe).is_ok() {
                    *for_worker = worker;
                } else {
                    self.output_watch = OutputWatch::Unavailable;
                }
            }
            OutputWatch::Made { .. } | OutputWatch::Unavailable => {}
        }
    }

    fn end_worker(&mut self) {
        if let Some(live) = self.live.take() {
            live.end();
        }
    }
}

impl Live {
    /// Whether the worker's CPU time so far leaves too little of its `RLIMIT_CPU` backstop
    /// for one more input to reach its own timeout.
    fn near_budget(&self, options: &RunOptions) -> bool {
        let budget = Duration::from_secs(self.cpu_limit_secs);
        self.worker.cpu_parked() + options.limits.timeout + Duration::from_secs(1) >= budget
    }
}

impl Drop for SameCode {
    fn drop(&mut self) {
        if !self.host.is_here() {
            // A forked copy: the worker is the host's, and must not be ended from here; nor
            // its output watch, whose ring this process never had mapped.
            std::mem::forget(self.live.take());
            std::mem::forget(std::mem::replace(
                &mut self.output_watch,
                OutputWatch::Unavailable,
            ));
            return;
        }
        self.end_worker();
    }
}
