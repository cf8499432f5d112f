//! Pre-forked single-use workers: the fork, the worker's set-up, scrubbing and strict mode
//! happen ahead of time, off the critical path; a job only writes its code and input into a
//! parked worker's arena and wakes it.
//!
//! Each worker still runs exactly one job and exits, so one job can never see or influence
//! another: a parked worker has its own arena (a memfd mapped `MADV_DONTFORK` in the host), its
//! own fresh scratch and stack, and nothing of the host. W^X holds: the host writes the code
//! through its own read+write mapping of the memfd, which is never executable; the worker maps
//! the same pages read+execute and never writable.
//!
//! A background thread keeps up to `size` workers parked. It has them forked by a
//! [`Zygote`] (the pool's own, or one shared with [`Pool::with_zygote`]), so a refill neither
//! holds the host's mmap lock nor copies its page tables, however large the host has grown.
//! Workers die with the zygote's owner thread (`PR_SET_PDEATHSIG`), which lives as long as the
//! pool holds its handle: dropping the pool, a panic that drops it, or the host being killed
//! leaves no worker (and, for the pool's own zygote, no zygote) behind.
//!
//! A parked worker was set up for the pool's template: its policy, scrubbing, stack and scratch
//! sizes, code and input capacities and CPU backstop. A job that needs something else runs in a
//! fresh worker instead ([`Zygote::run`]), with the same report. One difference remains in the
//! pool: the code and input mappings span the pool's capacities, so bytes past the end of the
//! code's (or input's) last page read as zero up to the capacity instead of faulting.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::abi::RunOptions;
use crate::arena::{round_up, Arena, Mode, Need, SINGLE_JOB_SEQ, UNUSED_CODE};
use crate::error::Error;
use crate::host::{self, Driven, Forker, Lingering, Spawned, Stdin, WorkerFds};
use crate::lock;
use crate::report::Report;
use crate::sys;
use crate::zygote::Zygote;

/// How long a job with no parked worker waits for the one the refill thread is preparing
/// before it runs in a fresh worker instead.
const REFILL_WAIT: Duration = Duration::from_millis(20);

/// Code capacity of a pooled worker unless the template's `max_code` is smaller.
const CODE_CAPACITY: usize = 1 << 20;
/// Input capacity of a pooled worker unless the template's `max_input` is smaller.
const INPUT_CAPACITY: usize = 4 << 20;

/// A pool of pre-forked, parked, single-use workers. Safe to share between threads.
pub struct Pool {
    shared: Arc<Shared>,
    refill: Option<JoinHandle<()>>,
    /// The process whose threads and workers these are (see [`sys::Owner`]).
    host: sys::Owner,
}

struct Shared {
    template: RunOptions,
    size: usize,
    capacity: Need,
    /// Forks every worker of the pool, parked or fresh.
    /// Replaced when it has ended (see [`Shared::zygote`]).
    zygote: Mutex<Zygote>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    parked: VecDeque<Standby>,
    shutdown: bool,
    /// The last error the refill thread met, kept for `Pool::new` to report.
    last_error: Option<String>,
    /// Jobs that found no parked worker and ran in a fresh one.
    fallbacks: u64,
    /// Finished jobs: workers still to be ended and reaped, arenas to be unmapped, by the
    /// refill thread rather than on a job's clock.
    retired: Vec<Retired>,
}

/// A worker parked in `read(0)` for its go byte, its arena, and the done pipe (both ends
/// kept: the read end never reports EOF, so the worker's end is seen once, on its pidfd).
struct Standby {
    arena: Arena,
    worker: host::Parked,
    done_r: OwnedFd,
    _done_w: OwnedFd,
    /// The write end of the pipe the worker holds still on after its job (never written:
    /// closing it lets the worker exit).
    _hold_w: OwnedFd,
}

impl Standby {
    /// Ends a worker that will not be used: kill (closing its fd 0 would also let it exit by
    /// itself) and reap.
    fn discard(self) {
        self.worker.end();
    }
}

/// What a finished job leaves for the refill thread.
struct Retired {
    /// Unmapped when this is dropped, after the worker is gone.
    _arena: Arena,
    /// The worker, when its guest returned and the job was reported before it exited.
    lingering: Option<Lingering>,
    /// Its done pipe (both ends) and its hold pipe's write end.
    _pipes: (OwnedFd, OwnedFd, OwnedFd),
}

impl Retired {
    /// Kills and reaps the worker (if it still lives), then unmaps the arena.
    fn end(self) {
        if let Some(worker) = self.lingering {
            worker.end();
        }
    }
}

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Workers parked right now.
    pub parked: usize,
    /// Jobs that ran in a fresh worker because none was parked or the job did not fit.
    pub fallbacks: u64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.shared.size)
            .field("template", &self.shared.template)
            .field("zygote", &*lock(&self.shared.zygote))
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts a pool that keeps up to `size` workers parked, set up for `template` (policy,
    /// scrubbing, stack, scratch, CPU backstop), with a zygote of its own to fork them. Returns
    /// once the first worker is parked, or with the error that kept it from parking.
    pub fn new(template: RunOptions, size: usize) -> Result<Pool, Error> {
        let zygote = Zygote::start()?;
        Pool::with_zygote(template, size, &zygote)
    }

    /// [`Pool::new`], with the workers forked by `zygote`: one started early, before the host
    /// grew, and possibly shared with other pools or [`Zygote::run`] callers. The pool keeps a
    /// handle until it is dropped.
    pub fn with_zygote(template: RunOptions, size: usize, zygote: &Zygote) -> Result<Pool, Error> {
        let limits = &template.limits;
        let capacity = Need::sized(
            limits.max_code.min(CODE_CAPACITY),
            limits.max_input.min(INPUT_CAPACITY),
            &template,
        );
        let shared = Arc::new(Shared {
            template,
            size: size.max(1),
            capacity,
            zygote: Mutex::new(zygote.clone()),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let refill = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("bytejail-pool".into())
                .spawn(move || refill(&shared))
                .map_err(|e| Error::io("starting the pool's refill thread", e))?
        };
        let pool = Pool {
            shared,
            refill: Some(refill),
            host: sys::Owner::here(),
        };
        // Wait for the first worker (or the reason there is none).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut state = pool.shared.lock();
        while state.parked.is_empty() && state.last_error.is_none() && Instant::now() < deadline {
            state = pool
                .shared
                .changed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        if state.parked.is_empty() {
            let why = state
                .last_error
                .clone()
                .unwrap_or_else(|| "no worker parked in 10 s".into());
            drop(state);
            return Err(Error::io("starting the pool", std::io::Error::other(why)));
        }
        drop(state);
        Ok(pool)
    }

    /// Runs one job, in a parked worker when one is ready and the job fits the pool's
    /// template, else in a fresh worker. Same contract and report as [`crate::run`]; the wall
    /// clock starts when the parked worker is woken.
    pub fn run(&self, code: &[u8], input: &[u8], options: &RunOptions) -> Result<Report, Error> {
        host::validate(code, input, options)?;
        if let Some(report) = crate::Cancel::before_start(options) {
            return Ok(report);
        }
        self.host
            .check("the pool")
            .map_err(|e| Error::io("running a pooled job", e))?;
        let parked = if self.fits(code, input, options) {
            self.take()
        } else {
            None
        };
        let Some(Standby {
            mut arena,
            worker,
            done_r,
            _done_w: done_w,
            _hold_w: hold_w,
        }) = parked
        else {
            self.shared.lock().fallbacks += 1;
            return self.shared.zygote()?.run(code, input, options);
        };
        let pipes = (done_r, done_w, hold_w);
        arena.load_job_unused(code, input, options);
        let start = Instant::now();
        let Some(worker) = worker.wake(&options.policy) else {
            // Its go byte could not be written: its guest never ran.
            return self.run_elsewhere(arena, pipes, code, input, options);
        };
        let done = &pipes.0;
        let driven = worker.drive(&arena, code, input, options, start, done, SINGLE_JOB_SEQ);
        let (report, lingering) = match driven {
            Ok(Driven {
                report: Some(report),
                lingering,
            }) => (Ok(report), lingering),
            Ok(Driven { report: None, .. }) => {
                // It died while parked (killed from outside) and never took its go byte: its
                // guest never ran.
                return self.run_elsewhere(arena, pipes, code, input, options);
            }
            Err(e) => (Err(e), None),
        };
        self.retire(Retired {
            _arena: arena,
            lingering,
            _pipes: pipes,
        });
        // Not checked for life here (a system call on every job's clock): a diagnosis only
        // adds to a report, and one through a zygote that has ended leaves it as it is.
        let zygote = lock(&self.shared.zygote).clone();
        Ok(host::diagnose(
            report?,
            code,
            input,
            options,
            Forker::Zygote(&zygote),
        ))
    }

    /// Workers parked now, and jobs that ran fresh so far.
    pub fn stats(&self) -> PoolStats {
        let state = self.shared.lock();
        PoolStats {
            parked: state.parked.len(),
            fallbacks: state.fallbacks,
        }
    }

    /// Whether a parked worker can run this job exactly as a fresh one would.
    fn fits(&self, code: &[u8], input: &[u8], options: &RunOptions) -> bool {
        let t = &self.shared.template;
        let cap = self.shared.capacity;
        options.policy == t.policy
            && options.scrub == t.scrub
            && options.limits.stack == t.limits.stack
            && options.limits.scratch == t.limits.scratch
            && options.limits.timeout <= t.limits.timeout
            && host::worker_limits_match(options, t)
            && round_up(code.len().max(1)) <= cap.code()
            && round_up(input.len().max(1)) <= cap.input()
    }

    /// The job of a parked worker that was gone before it took its go byte (its guest never
    /// ran): the worker's arena and pipes go to the refill thread, the job to a fresh worker.
    fn run_elsewhere(
        &self,
        arena: Arena,
        pipes: (OwnedFd, OwnedFd, OwnedFd),
        code: &[u8],
        input: &[u8],
        options: &RunOptions,
    ) -> Result<Report, Error> {
        self.retire(Retired {
            _arena: arena,
            lingering: None,
            _pipes: pipes,
        });
        self.shared.lock().fallbacks += 1;
        self.shared.zygote()?.run(code, input, options)
    }

    /// Hands a finished job's worker and arena to the refill thread, and only now wakes it:
    /// its refill (unmapping retired arenas, mapping a new one) would otherwise take this
    /// process's mmap lock while the job runs, and page faults of the job's thread would wait.
    fn retire(&self, retired: Retired) {
        self.shared.lock().retired.push(retired);
        self.shared.changed.notify_all();
    }

    /// A parked worker; if none is, waits (up to [`REFILL_WAIT`]) for the one the refill thread
    /// prepares, unless its last attempt failed: a fresh worker would cost another fork on top
    /// of the one under way.
    ///
    /// The most recently parked worker goes first (last in, first out): its page tables, task
    /// and pages were touched last, so more of them are still in the CPU's caches and TLB
    /// than an older worker's, and its first run after the go byte is cheaper (about 1-1.5 us
    /// of a 13 us job here). Every parked worker is as fresh as any other for the job: none
    /// has run a guest.
    fn take(&self) -> Option<Standby> {
        let deadline = Instant::now() + REFILL_WAIT;
        let mut state = self.shared.lock();
        loop {
            if let Some(parked) = state.parked.pop_back() {
                return Some(parked);
            }
            let now = Instant::now();
            if state.last_error.is_some() || state.shutdown || now >= deadline {
                return None;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if !self.host.is_here() {
            // A forked copy: the refill thread and the workers are the host's. Leave them be.
            std::mem::forget(self.refill.take());
            std::mem::forget(Arc::clone(&self.shared));
            return;
        }
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(refill) = self.refill.take() {
            let _ = refill.join();
        }
        let (parked, retired): (Vec<Standby>, Vec<Retired>) = {
            let mut state = self.shared.lock();
            (
                state.parked.drain(..).collect(),
                state.retired.drain(..).collect(),
            )
        };
        for worker in parked {
            worker.discard();
        }
        for job in retired {
            job.end();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The pool's zygote, a new one if it has ended (killed from outside: it would fork no
    /// more workers, and every job would fail). Started from the refill thread, it gets the
    /// scheduling that thread had before it went under `SCHED_BATCH`, as the first one got the
    /// caller's: the zygote and its workers inherit it.
    fn zygote(&self) -> Result<Zygote, Error> {
        let mut zygote = lock(&self.zygote);
        if zygote.has_ended() {
            let started = match REFILL_SCHEDULING.with(|own| own.get()) {
                Some(normal) => {
                    sys::set_scheduling(normal);
                    let started = Zygote::start();
                    sys::batch_scheduling();
                    started
                }
                None => Zygote::start(),
            };
            *zygote = started?;
        }
        Ok(zygote.clone())
    }
}

thread_local! {
    /// In a refill thread: the scheduling policy and priority it had before it went under
    /// `SCHED_BATCH` (see [`refill`]).
    static REFILL_SCHEDULING: std::cell::Cell<Option<(i32, i32)>> =
        const { std::cell::Cell::new(None) };
}

/// The refill thread: keeps `size` workers parked until shutdown. The zygote forks them; they
/// die with its owner thread (PDEATHSIG), which outlives the pool's handle.
fn refill(shared: &Shared) {
    // A job wakes this thread when it ends; the job's thread must not be preempted for it.
    let normal = sys::batch_scheduling();
    REFILL_SCHEDULING.with(|own| own.set(Some(normal)));
    let mut backoff = Duration::from_millis(1);
    loop {
        let retired = {
            let mut state = shared.lock();
            while !state.shutdown && state.parked.len() >= shared.size && state.retired.is_empty() {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if state.shutdown {
                return;
            }
            std::mem::take(&mut state.retired)
        };
        for job in retired {
            job.end();
        }
        if shared.lock().parked.len() >= shared.size {
            continue;
        }
        match park_one(shared) {
            Ok(parked) => {
                let mut state = shared.lock();
                state.parked.push_back(parked);
                state.last_error = None;
                drop(state);
                shared.changed.notify_all();
                backoff = Duration::from_millis(1);
            }
            Err(e) => {
                shared.lock().last_error = Some(e.to_string());
                shared.changed.notify_all();
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

fn park_one(shared: &Shared) -> Result<Standby, Error> {
    let mut arena =
        Arena::new(shared.capacity).map_err(|e| Error::io("creating a pool arena", e))?;
    // Fault in the pages every job writes, here rather than on a job's clock; then the worker's
    // part (and the filter program, which a job's reset of the region would wipe).
    arena
        .load_job(UNUSED_CODE, b"", &shared.template)
        .map_err(|e| Error::io("preparing a pool arena", e))?;
    let (maps, protects) = arena.prepare_worker(shared.capacity, &shared.template, Mode::Pool);
    let cpu = host::cpu_limit_secs(&shared.template);
    let zygote = shared.zygote()?;
    let zygote = Forker::Zygote(&zygote);
    let (done_r, done_w) = sys::pipe().map_err(|e| Error::io("creating the done pipe", e))?;
    let (hold_r, hold_w) = sys::pipe().map_err(|e| Error::io("creating the hold pipe", e))?;
    sys::set_nonblocking(done_r.as_raw_fd()).map_err(|e| Error::io("fcntl on the done pipe", e))?;
    // The hold pipe stands at the go pipe's number: the worker waits there once it is done.
    let fds = WorkerFds {
        stdin: Stdin::Pipe,
        go: Some(&hold_r),
        done: Some(&done_w),
        output: None,
    };
    let worker = Spawned::spawn(&arena, maps, protects, &shared.template, cpu, fds, zygote)?;
    // Handed out only once set up: a job never waits for (or competes with) a worker's setup.
    let worker = worker.park(&arena, Duration::from_secs(10), None)?;
    Ok(Standby {
        arena,
        worker,
        done_r,
        _done_w: done_w,
        _hold_w: hold_w,
    })
}
