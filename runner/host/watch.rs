//! Watching a running worker: the poll loop that feeds its input, collects its output, and
//! kills it at the deadline, past the output limit or its CPU time, or when the job is
//! cancelled; and what the host saw while it ran ([`Watch`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::abi::RunOptions;
use crate::error::Error;
use crate::policy::Policy;
use crate::sys;
use crate::worker::protocol;

use super::classify::Kill;
use super::walls::guest_may_signal;

/// The host's watch on a job's CPU time, when the job has a CPU limit: the job's CPU time is
/// read whenever the poll loop wakes, and the loop wakes at least as often as the rest of the
/// budget could run out. The job's CPU time is its cgroup's (every process of the job) where
/// it has one for CPU accounting (see [`crate::cgroup`]), else the worker's CPU clock (all its
/// threads; processes it starts are not counted then, as `bytejail doctor` says).
#[derive(Clone, Copy)]
pub(crate) struct CpuWatch<'a> {
    pid: libc::pid_t,
    budget: Duration,
    /// What the worker had used before the job (a parked worker's set-up, earlier inputs).
    before: Duration,
    /// The job's CPU accounting cgroup, with its usage and the worker's clock when the watch
    /// began: the job's CPU is the cgroup's since then plus the worker's own up to then.
    tree: Option<(&'a crate::cgroup::JobCgroup, Duration, Duration)>,
}

impl<'a> CpuWatch<'a> {
    pub(crate) fn new(pid: libc::pid_t, options: &RunOptions, before: Duration) -> Option<Self> {
        options.limits.cpu_time.map(|budget| CpuWatch {
            pid,
            budget,
            before,
            tree: None,
        })
    }

    /// Watches the CPU time of the job's whole process tree through `cgroup`, when it has a
    /// CPU accounting cgroup.
    pub(crate) fn whole_tree(self, cgroup: Option<&'a crate::cgroup::JobCgroup>) -> Self {
        let tree = cgroup.and_then(|cgroup| {
            let usage = cgroup.cpu_usage()?;
            Some((cgroup, usage, cpu_clock(self.pid)))
        });
        CpuWatch { tree, ..self }
    }

    /// The CPU time left, zero once the budget is spent.
    fn left(&self) -> Duration {
        let own = |now: Duration| now.saturating_sub(self.before);
        let used = match self.tree {
            Some((cgroup, usage_then, clock_then)) => match cgroup.cpu_usage() {
                Some(usage) => usage.saturating_sub(usage_then) + own(clock_then),
                None => own(cpu_clock(self.pid)),
            },
            None => own(cpu_clock(self.pid)),
        };
        self.budget.saturating_sub(used)
    }
}

/// Writes the input to the worker's fd 0 without ever blocking; closes it when done.
pub(crate) struct InputFeeder<'a> {
    pub fd: Option<OwnedFd>,
    pub input: &'a [u8],
    pub written: usize,
}

impl InputFeeder<'_> {
    /// Writes as much as the pipe takes. A guest that stops reading (or ends) leaves the rest
    /// in the pipe, which the host's own read end (`Spawned::input_r`) keeps open: never EPIPE.
    fn pump(&mut self) -> std::io::Result<()> {
        while let Some(fd) = &self.fd {
            if self.written == self.input.len() {
                self.fd = None; // EOF for the guest
                break;
            }
            match sys::write(fd.as_raw_fd(), &self.input[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What the host saw while the worker ran.
pub(crate) struct Watch {
    pub output: Vec<u8>,
    pub truncated: bool,
    /// Why the host killed the worker, if it did.
    pub killed: Option<Kill>,
    /// A same-code worker said the input is done (and still lives, parked for the next one).
    pub done: bool,
    /// The loop saw the worker's pidfd readable: it has ended, and a reap waits for nothing.
    pub ended: bool,
    /// The worker was under strict mode, which kills a violation with SIGKILL (filters trap).
    pub strict: bool,
    /// The job's CPU limit, if it has one.
    pub cpu_time: Option<Duration>,
    /// The guest may raise any signal itself (see [`guest_may_signal`]).
    pub guest_may_signal: bool,
    /// The kernel's OOM killer ended a process of the job for its memory cgroup's limit.
    pub oom_killed: bool,
    /// What the tracer saw, for a traced worker (set once it is reaped).
    pub facts: Option<crate::tracer::Facts>,
    /// The job may have more than one process (`Limits::max_procs` above 1): another of its
    /// processes could have queued the worker a signal with any details.
    pub many_procs: bool,
    /// The output pipe was not read: its watch said nothing reached it (see
    /// [`after_spun_done`]).
    pub output_unread: bool,
}

/// A same-code worker's done pipe, watched for the "done" message of input `seq`: the input
/// is done when the last 8 bytes read from the pipe are `seq` and `confirm` agrees (the record
/// says returned). A guest can write to the pipe too; what it writes only ever delays its own
/// "done" (to its timeout) or claims a return it could have made anyway.
pub(crate) struct Control<'a> {
    pub fd: &'a OwnedFd,
    pub seq: u64,
    pub confirm: &'a dyn Fn() -> bool,
    /// A same-code worker whose output goes to its arena's file (see
    /// [`crate::arena::output_in_file`]): whether it passed its output limit, asked at least
    /// every [`OUTPUT_CHECK_EVERY`] while the input runs (the file raises no event to poll,
    /// and a write past the limit only fails: the host ends the worker, as it ends one whose
    /// output pipe brought one byte too many).
    pub output_over: Option<&'a dyn Fn() -> std::io::Result<bool>>,
}

/// How often a running same-code input whose output goes to a file is checked against its
/// output limit (one `fstat`).
pub(crate) const OUTPUT_CHECK_EVERY: Duration = Duration::from_millis(2);

impl Control<'_> {
    /// Reads what is waiting (a bounded amount: a guest may keep writing); true once the
    /// bytes read so far end with the done message.
    fn done(&self, tail: &mut [u8; protocol::DONE_LEN]) -> std::io::Result<bool> {
        let mut chunk = [0u8; 512];
        for _ in 0..64 {
            match sys::read(self.fd.as_raw_fd(), &mut chunk) {
                Ok(0) => return Ok(false), // the worker is gone; its pidfd says how
                Ok(n) => {
                    const LEN: usize = protocol::DONE_LEN;
                    let mut joined = [0u8; LEN + 512];
                    joined[..LEN].copy_from_slice(tail);
                    joined[LEN..LEN + n].copy_from_slice(&chunk[..n]);
                    tail.copy_from_slice(&joined[n..n + LEN]);
                    if n < chunk.len() {
                        break; // the pipe had no more
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(protocol::is_done(tail, self.seq) && (self.confirm)())
    }
}

/// The worker a poll loop watches: its pidfd, and its trace when its own thread traces it
/// (see `tracer::trace_own_workers`).
pub(crate) struct Watched<'a> {
    pub pidfd: &'a OwnedFd,
    pub trace: Option<&'a crate::tracer::Trace>,
}

/// The poll loop: feed input, collect output, kill at the deadline or past the output limit,
/// return once the worker has exited (its pidfd is readable), been killed, or (a same-code
/// worker) said on `control` that the input is done.
pub(crate) fn watch_worker(
    worker: Watched<'_>,
    output_r: &OwnedFd,
    feeder: &mut InputFeeder<'_>,
    control: Option<&Control<'_>>,
    options: &RunOptions,
    start: Instant,
    cpu: Option<CpuWatch<'_>>,
) -> Result<Watch, Error> {
    let Watched { pidfd, trace } = worker;
    // A worker this thread traces itself stops at its faults and its exit until this thread
    // lets it go on (see `tracer::trace_own_workers`).
    let stops = trace.and_then(crate::tracer::Trace::stops_fd).unwrap_or(-1);
    let deadline = start + options.limits.timeout;
    let mut collector = OutputCollector {
        fd: Some(output_r.as_raw_fd()),
        output: Vec::new(),
        max: options.limits.max_output,
    };
    let mut done = false;
    let mut ended = false;
    let mut tail = [0u8; protocol::DONE_LEN];
    feeder
        .pump()
        .map_err(|e| Error::io("writing the input", e))?;
    let mut killed = None;
    let kill = |why| kill_worker(pidfd, why);
    let mut next_output_check = start + OUTPUT_CHECK_EVERY;
    // The last look at the worker's stops left some waiting (see `Trace::follow`).
    let mut more_stops = false;

    loop {
        let now = Instant::now();
        if now >= deadline {
            killed = kill(Kill::Deadline)?;
            break;
        }
        // One CPU-clock read per wake-up, only for jobs with a CPU limit. The CPU time cannot
        // run faster than the wall clock times the CPUs, so waking after half the rest of the
        // budget (at least 1 ms) is in time to within that.
        let mut wake = deadline - now;
        if let Some(cpu) = &cpu {
            let left = cpu.left();
            if left.is_zero() {
                killed = kill(Kill::CpuTime)?;
                break;
            }
            wake = wake.min((left / 2).max(Duration::from_millis(1)));
        }
        let output_over = control.and_then(|c| c.output_over);
        if output_over.is_some() {
            wake = wake.min(next_output_check.saturating_duration_since(now));
        }
        if more_stops {
            wake = Duration::ZERO;
        }
        // The kernel looks at these in order, so the output comes after the two that end the
        // loop: a poll that sees the worker's end or its "done" also sees everything it wrote
        // before, and the loop drains it below before it stops. No read after the loop, then,
        // and none at all for a worker that wrote nothing.
        let mut fds = [
            pollfd(pidfd.as_raw_fd(), libc::POLLIN),
            pollfd(control.map_or(-1, |c| c.fd.as_raw_fd()), libc::POLLIN),
            pollfd(collector.raw_fd(), libc::POLLIN),
            pollfd(
                feeder.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                libc::POLLOUT,
            ),
            pollfd(
                options.cancel.as_ref().map_or(-1, crate::Cancel::raw_fd),
                libc::POLLIN,
            ),
            pollfd(stops, libc::POLLIN),
        ];
        match sys::poll(&mut fds, wake) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("polling the worker", e)),
        }
        if fds[2].revents != 0
            && collector
                .drain()
                .map_err(|e| Error::io("reading the output", e))?
        {
            killed = kill(Kill::OutputLimit)?;
            break;
        }
        // Every OUTPUT_CHECK_EVERY from the start, whatever else woke the host: an input that
        // ends sooner is checked once, by the caller, and costs no `fstat` more here.
        if let Some(over) = output_over {
            let checked_at = Instant::now();
            if checked_at >= next_output_check {
                next_output_check = checked_at + OUTPUT_CHECK_EVERY;
                if over().map_err(|e| Error::io("reading the output's size", e))? {
                    killed = kill(Kill::OutputLimit)?;
                    break;
                }
            }
        }
        if fds[3].revents != 0 {
            feeder
                .pump()
                .map_err(|e| Error::io("writing the input", e))?;
        }
        if fds[4].revents != 0 {
            killed = kill(Kill::Cancelled)?;
            break;
        }
        if fds[5].revents != 0 || more_stops {
            more_stops = trace.is_some_and(crate::tracer::Trace::follow);
        }
        if fds[0].revents != 0 {
            ended = true;
            break;
        }
        if let Some(control) = control.filter(|_| fds[1].revents != 0) {
            if control
                .done(&mut tail)
                .map_err(|e| Error::io("reading the done pipe", e))?
            {
                done = true;
                break;
            }
        }
    }
    feeder.fd = None;
    let mut watch = collector.into_watch(killed, done, options);
    watch.ended = ended;
    Ok(watch)
}

/// What the host saw of a same-code input whose "done" came through the spinning hand-off:
/// the output (written before the guest returned, so all in the pipe now), and an
/// output-limit kill when it is too much. No pipe (`None`): the output is in the arena's
/// file, for the caller to read (see [`crate::arena::output_in_file`]).
///
/// The pipe is read only when `written` (the pipe's watch, see [`sys::uring`]) does not say
/// that nothing reached it since the last input; without a watch it always is (one `read`
/// when there is nothing).
pub(crate) fn after_spun_done(
    pidfd: &OwnedFd,
    output_r: Option<&OwnedFd>,
    written: Option<&mut sys::uring::PipeWatch>,
    options: &RunOptions,
) -> Result<Watch, Error> {
    let mut fd = output_r.map(AsRawFd::as_raw_fd);
    let mut unread = false;
    if let (Some(_), Some(watch)) = (fd, written) {
        if watch.quiet() {
            fd = None; // nothing was written: no read
            unread = true;
        } else {
            // Before the read, so that what is written after it shows again. A watch that
            // fails here stays "not quiet" and the pipe is read each time, as without one.
            let _ = watch.settle();
        }
    }
    let mut collector = OutputCollector {
        fd,
        output: Vec::new(),
        max: options.limits.max_output,
    };
    let over = collector
        .drain()
        .map_err(|e| Error::io("reading the output", e))?;
    let killed = if over {
        kill_worker(pidfd, Kill::OutputLimit)?
    } else {
        None
    };
    let mut watch = collector.into_watch(killed, !over, options);
    watch.output_unread = unread;
    Ok(watch)
}

/// Kills the worker through its pidfd, saying why.
pub(super) fn kill_worker(pidfd: &OwnedFd, why: Kill) -> Result<Option<Kill>, Error> {
    sys::pidfd_kill(pidfd.as_raw_fd()).map_err(|e| Error::io("killing the worker", e))?;
    Ok(Some(why))
}

pub(super) fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Reads the worker's fd 1, keeping at most `max + 1` bytes (one past the limit proves it
/// was passed).
struct OutputCollector {
    fd: Option<i32>,
    output: Vec<u8>,
    max: usize,
}

impl OutputCollector {
    /// What the host saw: the output kept (at most the limit, and whether there was more),
    /// why it killed the worker, whether a same-code worker said "done", and the job's facts
    /// the classification needs from `options`.
    fn into_watch(self, killed: Option<Kill>, done: bool, options: &RunOptions) -> Watch {
        let max_output = options.limits.max_output;
        let truncated = self.output.len() > max_output;
        let mut output = self.output;
        output.truncate(max_output);
        Watch {
            output,
            truncated,
            killed,
            done,
            ended: false,
            strict: options.policy == Policy::Strict,
            cpu_time: options.limits.cpu_time,
            guest_may_signal: guest_may_signal(options),
            oom_killed: false,
            facts: None,
            many_procs: options.limits.max_procs > 1,
            output_unread: false,
        }
    }

    fn raw_fd(&self) -> i32 {
        self.fd.unwrap_or(-1)
    }

    /// Reads until the pipe is empty; true when the output passed the limit.
    ///
    /// The reads grow from `FIRST_READ` bytes to `CHUNK` as the output does, straight into the
    /// vector's spare room: every page the host writes after a fork costs it a page fault, so a
    /// few bytes of output must not cost a zeroed 64 KiB buffer.
    fn drain(&mut self) -> std::io::Result<bool> {
        const FIRST_READ: usize = 4 << 10;
        const CHUNK: usize = 64 << 10;
        while let Some(fd) = self.fd {
            let room = self.max.saturating_add(1).saturating_sub(self.output.len());
            if room == 0 {
                return Ok(true);
            }
            let want = room.min(CHUNK).min(self.output.len().max(FIRST_READ));
            match sys::read_append(fd, &mut self.output, want) {
                Ok(0) => self.fd = None,    // EOF: no writer is left
                Ok(n) if n < want => break, // the pipe had no more
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.output.len() > self.max)
    }
}

/// The CPU time a live (or not yet reaped) worker has used so far, user and system together,
/// from the scheduler's clock; zero if the clock cannot be read.
pub(super) fn cpu_clock(pid: libc::pid_t) -> Duration {
    sys::process_cpu_time(pid).unwrap_or_default()
}
