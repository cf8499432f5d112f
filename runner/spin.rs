//! The spinning hand-off of same-code inputs, host side: whether an input spins, for how long,
//! and the host's wait for "done". The worker's side is in the blob (`worker::blob`), the
//! words both sides share in `worker::protocol::Handoff`.
//!
//! A hand-off through a pipe costs a few microseconds: a write, a wake-up of the other side
//! and, when both sides share a CPU, two context switches. Through a cache line that the other
//! side spins on it costs a few hundred nanoseconds, but only while that side has a CPU of its
//! own to spin on, and it keeps that CPU busy. So an input spins only:
//! - under strict mode or `strict-bpf` (the guest can neither start a process that would share
//!   the worker's memory nor change how its worker waits), with [`RunOptions::spin`] on and no
//!   CPU-time limit (whose watch reads the worker's CPU clock around each input);
//! - when the host thread may run on at least two CPUs for each same-code session of this
//!   process that spins now ([`Leases`]): a host and its worker are two spinners. A session
//!   holds its lease while an input runs and for twice [`WORKER_SPIN`] after it (its worker
//!   spins about that long), so a session whose inputs stopped coming leaves its CPUs to
//!   another;
//! - while inputs keep coming: when the caller took longer than the worker would spin
//!   ([`WORKER_SPIN`]) between the last input's end and this one, the worker would have gone
//!   to sleep anyway, and the next input uses the pipes (adaptive: one input later it spins
//!   again if the caller sped up);
//! - while it works: a hand-off that fell back to the pipes although input and caller were
//!   quick (a side lost its CPU) turns spinning off for twice as many inputs as the last miss
//!   did (see [`Spinner::returned`]).
//!
//! Both spins are bounded ([`WORKER_SPIN`], [`HOST_SPIN`]); a side that gives up sleeps on its
//! pipe, and the other side, which sees that in the shared word, writes the pipe too. Spin time
//! is never an input's: a spun input's `user` time is its wall time from the go to the host's
//! sight of "done" (the worker held its CPU throughout), not the scheduler's clock, which would
//! count the worker's spin before the input; the worker's `RLIMIT_CPU` budget is checked
//! against its scheduler clock read at most every [`CLOCK_EVERY`], with a margin of seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::abi::RunOptions;
use crate::worker::protocol::ASLEEP;

/// How long a worker spins on the go word after an input before it sleeps on its go pipe.
pub(crate) const WORKER_SPIN: Duration = Duration::from_micros(50);

/// How long the host spins on the done word after a go before it polls the done pipe (and the
/// worker's end, the deadline, the output, a cancel).
const HOST_SPIN: Duration = Duration::from_micros(50);

/// After an input that took longer than this the host does not spin for the next one's
/// "done": the code is slow, not the hand-off. Well above what an input that missed the spin
/// and ended through the pipes takes (tens of microseconds when the sides sit on two CPUs),
/// so that one miss does not turn the host's spin off for good.
const SLOW_INPUT: Duration = Duration::from_micros(500);

/// The most inputs a session goes without spinning after hand-offs that missed (see
/// [`Spinner::returned`]).
const MAX_COOLDOWN: u32 = 4096;

/// How often a spinning session reads its worker's CPU clock (a syscall) for the budget
/// check: the worker spins at most `WORKER_SPIN` per input, so in this time it cannot use more
/// CPU than this, well inside the budget's margin of a second.
pub(crate) const CLOCK_EVERY: Duration = Duration::from_millis(50);

/// The spin leases of this process: one word per pair of CPUs, each free (0) or held by one
/// same-code session until a time (see [`Leases::take`]). A session whose last input ended more
/// than [`WORKER_SPIN`] ago has no spinning worker: its lease has run out, and another session
/// may take it. Without that, two sessions used in turns on two CPUs would never both spin: the
/// first to spin would keep the only lease while its worker slept.
#[derive(Debug)]
pub(crate) struct Leases {
    words: [Lease; LEASES],
    /// Lease times count from here, in [`LEASE_TICK`]s.
    epoch: Instant,
    /// Taken by each new holding (a lease's word also says who holds it, so a holder whose
    /// lease ran out and was taken since sees that).
    holders: AtomicU64,
}

/// One lease word, on a cache line of its own (its holder rewrites it twice an input).
#[derive(Debug)]
#[repr(align(64))]
struct Lease(AtomicU64);

/// The most leases: a session on more than `2 * LEASES` CPUs uses that many.
const LEASES: usize = 64;

/// A lease's word: the holder's number above [`UNTIL_BITS`] bits of the time it runs out, in
/// these ticks since [`Leases::epoch`] (2^40 ticks of 16 µs: 200 days).
const LEASE_TICK: Duration = Duration::from_micros(16);
const UNTIL_BITS: u32 = 40;
const UNTIL_MASK: u64 = (1 << UNTIL_BITS) - 1;

/// A held lease: its word's index, and what the holder last wrote there.
#[derive(Clone, Copy, Debug)]
struct Held {
    index: usize,
    word: u64,
}

impl Leases {
    pub(crate) fn new() -> Leases {
        Leases {
            words: std::array::from_fn(|_| Lease(AtomicU64::new(0))),
            epoch: Instant::now(),
            holders: AtomicU64::new(1),
        }
    }

    /// The process's leases.
    fn of_process() -> &'static Leases {
        static LEASES: OnceLock<Leases> = OnceLock::new();
        LEASES.get_or_init(Leases::new)
    }

    /// `time` in ticks since the epoch (rounded up), at most the largest a word holds.
    fn ticks(&self, time: Instant) -> u64 {
        let since = time.saturating_duration_since(self.epoch);
        (since.as_nanos().div_ceil(LEASE_TICK.as_nanos()) as u64).min(UNTIL_MASK)
    }

    /// A word's time part for a lease held until `until`: `None`, until the holder says (a
    /// time no later tick reaches).
    fn until(&self, until: Option<Instant>) -> u64 {
        until.map_or(UNTIL_MASK, |t| self.ticks(t))
    }

    /// Takes a free or run-out lease among the first `cpus / 2`, held until `until` (`None`:
    /// until the holder says, see [`Leases::renew`]).
    fn take(&self, cpus: usize, now: Instant, until: Option<Instant>) -> Option<Held> {
        let now = self.ticks(now);
        let until = self.until(until);
        // A new holder's number only for a lease that looks free: a session that finds none
        // (every input of one used beside a spinning one) touches no shared word but these.
        self.words[..(cpus / 2).min(LEASES)]
            .iter()
            .enumerate()
            .find_map(|(index, lease)| {
                let old = lease.0.load(Ordering::Relaxed);
                if old != 0 && old & UNTIL_MASK >= now {
                    return None;
                }
                let holder =
                    self.holders.fetch_add(1, Ordering::Relaxed) & (u64::MAX >> UNTIL_BITS);
                let word = holder << UNTIL_BITS | until;
                let taken = lease
                    .0
                    .compare_exchange(old, word, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
                taken.then_some(Held { index, word })
            })
    }

    /// Moves a held lease's end to `until` (`None`: until the holder says). False when it ran
    /// out and another session holds it now.
    fn renew(&self, held: &mut Held, until: Option<Instant>) -> bool {
        let lease = &self.words[held.index].0;
        let word = held.word & !UNTIL_MASK | self.until(until);
        // Only the holder writes a held word, and a run-out one only through a
        // compare-and-swap: the few instructions between this load and the store are the
        // only time another session can take it in the meantime (two spin for a moment).
        if lease.load(Ordering::Relaxed) != held.word {
            return false;
        }
        if word != held.word {
            lease.store(word, Ordering::Relaxed);
            held.word = word;
        }
        true
    }

    /// Gives a held lease back, unless another session holds it now.
    fn free(&self, held: Held) {
        let _ = self.words[held.index].0.compare_exchange(
            held.word,
            0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// The length of one `pause`, measured once: the worker counts `pause`s, having no clock in
/// strict mode (no `rdtsc` either: the trampoline cannot know the time, only count).
fn pause_ns() -> f64 {
    static PAUSE_NS: OnceLock<f64> = OnceLock::new();
    *PAUSE_NS.get_or_init(|| {
        const PAUSES: u32 = 2000;
        // The fastest of a few rounds: a round the host was preempted in says nothing.
        let fastest = (0..5)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..PAUSES {
                    std::hint::spin_loop();
                }
                start.elapsed()
            })
            .min()
            .unwrap_or_default();
        (fastest.as_nanos() as f64 / f64::from(PAUSES)).max(1.0)
    })
}

/// How many `pause`s take about `time`.
fn pauses_for(time: Duration) -> u64 {
    ((time.as_nanos() as f64 / pause_ns()) as u64).max(1)
}

/// One same-code session's spinning state.
#[derive(Debug)]
pub(crate) struct Spinner {
    /// The process's leases, and the one this session holds (see [`Leases`]).
    leases: &'static Leases,
    lease: Option<Held>,
    /// The CPUs the host thread could run on when the worker was forked (the worker inherited
    /// them).
    cpus: usize,
    /// The budget the worker got with the input it ran last (see [`Spinner::go_by_word`]).
    pauses: u64,
    /// When the host saw the last input end, and how long the caller took from there to the
    /// next input.
    ended_at: Option<Instant>,
    gap: Duration,
    /// How long the last input took, from its go to its "done".
    last_input: Duration,
    /// Hand-offs in a row that fell back to the pipes although inputs kept coming, and how
    /// many inputs from now on do not spin because of them (see [`Spinner::returned`]).
    misses: u32,
    cooldown: u32,
}

impl Spinner {
    /// The state of a new worker: parked on its go pipe, no budget.
    pub(crate) fn new() -> Spinner {
        Spinner {
            leases: Leases::of_process(),
            lease: None,
            cpus: crate::sys::thread_cpus(),
            pauses: 0,
            ended_at: None,
            gap: Duration::ZERO,
            last_input: Duration::ZERO,
            misses: 0,
            cooldown: 0,
        }
    }

    /// Whether the next go goes through the go word (the worker was left spinning, or
    /// sleeping with `ASLEEP` in the word) rather than the go pipe alone.
    pub(crate) fn go_by_word(&self) -> bool {
        self.pauses != 0
    }

    /// Decides the spin budget of the input about to start (the worker spins that many
    /// `pause`s after it; 0: not at all) and whether the host spins for its "done".
    /// `now`: the time the input comes (one clock read serves the caller's several uses).
    pub(crate) fn plan(&mut self, options: &RunOptions, now: Instant) -> Plan {
        if let Some(ended) = self.ended_at.take() {
            self.gap = now.saturating_duration_since(ended);
        }
        let cooling = self.cooldown > 0;
        self.cooldown = self.cooldown.saturating_sub(1);
        let eligible = options.spin
            && crate::host::arena_reusable(&options.policy)
            && options.limits.cpu_time.is_none()
            && self.gap <= WORKER_SPIN
            && self.cpus >= 2
            && !cooling;
        if !eligible || !self.arm(now) {
            self.disarm();
            return Plan { pauses: 0 };
        }
        Plan {
            pauses: pauses_for(WORKER_SPIN),
        }
    }

    /// Holds a lease until the input about to start has ended (see [`Spinner::returned`]):
    /// the one this session held, unless it ran out and another session took it, or a free or
    /// run-out one. False when every lease is held: two CPUs per spinning session remain no
    /// more.
    fn arm(&mut self, now: Instant) -> bool {
        if let Some(held) = &mut self.lease {
            if self.leases.renew(held, None) {
                return true;
            }
            self.lease = None;
        }
        self.lease = self.leases.take(self.cpus, now, None);
        self.lease.is_some()
    }

    fn disarm(&mut self) {
        if let Some(held) = self.lease.take() {
            self.leases.free(held);
        }
    }

    /// Records the budget the input now starting got.
    pub(crate) fn started(&mut self, plan: Plan) {
        self.pauses = plan.pauses;
    }

    /// Records the end of an input that returned, `took` after its go, at `ended`: whether its "done"
    /// came through the done word (`spun`), whether its go went through the go word
    /// (`by_word`: the worker was left spinning) and found the worker asleep on its pipe
    /// (`woke`).
    ///
    /// A hand-off that fell back to the pipes although the input was quick and came quickly
    /// is a miss: a side was not on its CPU when the other looked (other threads or processes
    /// want the CPUs). Each miss in a row doubles the number of inputs that then use the
    /// pipes only (up to [`MAX_COOLDOWN`]), so a busy machine pays for few failed spins,
    /// and a spin that works again starts over.
    pub(crate) fn returned(
        &mut self,
        took: Duration,
        ended: Instant,
        spun: bool,
        woke: bool,
        by_word: bool,
    ) {
        self.ended_at = Some(ended);
        self.last_input = took;
        if let Some(held) = &mut self.lease {
            // The worker spins for about WORKER_SPIN now (longer where a `pause` takes longer
            // than it did when measured): the lease runs out after twice that.
            if !self.leases.renew(held, Some(ended + 2 * WORKER_SPIN)) {
                self.lease = None;
            }
        }
        if self.pauses == 0 || !by_word {
            // This input did not spin, or its go woke a worker that slept by design (the
            // first input, or the first after inputs that did not spin): a wake-up through
            // the pipe, which across CPUs can take longer than the host spins, tells nothing
            // of whether spinning works.
            return;
        }
        let quick = took <= SLOW_INPUT && self.gap <= WORKER_SPIN;
        if spun && !woke {
            self.misses = 0;
        } else if quick {
            self.misses = (self.misses + 1).min(MAX_COOLDOWN.ilog2());
            self.cooldown = 1 << self.misses;
        }
    }

    /// How long the host spins for this input's "done": not at all after a slow input.
    pub(crate) fn host_spin(&self) -> Duration {
        if self.last_input > SLOW_INPUT {
            Duration::ZERO
        } else {
            HOST_SPIN
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// The budget of one input (see [`Spinner::plan`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// `pause`s the worker spins after the input (0: it sleeps on its go pipe at once).
    pub pauses: u64,
}

/// Posts input `seq` in the go word. True when the worker had stopped spinning and sleeps on
/// its go pipe: the caller must then write the go byte too.
pub(crate) fn post_go(word: &AtomicU64, seq: u64) -> bool {
    word.swap(seq, Ordering::SeqCst) & ASLEEP != 0
}

/// Spins up to `limit` for input `seq`'s "done" in the done word, confirmed by `confirm` (the
/// record says the guest returned). True: done. False: the host gave up and marked the word
/// `seq | ASLEEP`, so that the worker writes "done" on the done pipe. A "done" in the
/// word that the record does not confirm is the guest's (it can write both): not believed,
/// the host spins on and then sleeps on the pipe, where the worker's own "done" will come.
pub(crate) fn spin_for_done(
    word: &AtomicU64,
    seq: u64,
    limit: Duration,
    start: Instant,
    confirm: impl Fn() -> bool,
) -> bool {
    let mut seen = word.load(Ordering::Acquire);
    let mut turns = 0u32;
    loop {
        if seen == seq && confirm() {
            return true;
        }
        turns = turns.wrapping_add(1);
        if turns % 64 == 0 && start.elapsed() >= limit {
            // A swap, not a compare-and-swap: a guest flipping the word cannot keep it failing.
            let last = word.swap(seq | ASLEEP, Ordering::SeqCst);
            return last == seq && confirm();
        }
        std::hint::spin_loop();
        seen = word.load(Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spinner() -> Spinner {
        Spinner {
            cpus: 64,
            ..Spinner::new()
        }
    }

    /// One input: planned, started, returned quickly (`spun`: through the done word; `woke`:
    /// its go found the worker asleep). Its budget.
    fn input(s: &mut Spinner, spun: bool, woke: bool) -> u64 {
        let by_word = s.go_by_word();
        let plan = s.plan(&RunOptions::default(), Instant::now());
        s.started(plan);
        s.returned(
            Duration::from_micros(2),
            Instant::now(),
            spun,
            woke,
            by_word,
        );
        plan.pauses
    }

    /// A session on two CPUs with leases of its own (the process's are shared with every
    /// test that runs beside this one).
    fn on_two_cpus(leases: &'static Leases) -> Spinner {
        Spinner {
            cpus: 2,
            leases,
            ..Spinner::new()
        }
    }

    /// Inputs in a row, each quick and spun; how many the plan let spin.
    fn spun_in_a_row(s: &mut Spinner, count: usize) -> usize {
        (0..count).filter(|_| input(s, true, false) > 0).count()
    }

    #[test]
    fn sessions_used_in_turns_each_spin_and_two_at_once_do_not() {
        let leases: &'static Leases = Box::leak(Box::new(Leases::new()));
        let (mut a, mut b) = (on_two_cpus(leases), on_two_cpus(leases));
        // In turns, with pauses longer than a worker spins: all spin but the first input of
        // each turn after the session's first (it comes too late), whichever spun first.
        for turn in 0..3 {
            let spun = if turn == 0 { 10 } else { 9 };
            assert_eq!(spun_in_a_row(&mut a, 10), spun);
            std::thread::sleep(WORKER_SPIN * 3);
            assert_eq!(spun_in_a_row(&mut b, 10), spun);
            std::thread::sleep(WORKER_SPIN * 3);
        }
        // The twin: at once, one input each in turn, two CPUs hold one spinning session.
        assert_eq!(
            spun_in_a_row(&mut a, 2),
            1,
            "a's turn starts late, then it spins"
        );
        let both: Vec<(usize, usize)> = (0..20)
            .map(|_| (spun_in_a_row(&mut a, 1), spun_in_a_row(&mut b, 1)))
            .collect();
        assert!(both.iter().all(|&(a, b)| a + b <= 1), "{both:?}");
        // A session that ends gives its lease back at once.
        drop(a);
        assert_eq!(spun_in_a_row(&mut b, 2), 2);
    }

    #[test]
    fn a_lease_runs_out_only_when_its_time_is_past_and_its_holder_sees_it_was_taken() {
        let leases = Leases::new();
        let now = Instant::now();
        let mut held = leases.take(4, now, None).unwrap();
        let second = leases.take(4, now, Some(now + WORKER_SPIN)).unwrap();
        assert_ne!(held.index, second.index);
        assert!(
            leases.take(4, now, None).is_none(),
            "two leases on four CPUs"
        );
        assert!(leases.take(64, now, None).is_some(), "more on more CPUs");
        // Held until its holder says: never run out. Held until a time: run out after it.
        let later = now + WORKER_SPIN * 2;
        let taken = leases.take(4, later, None).unwrap();
        assert_eq!(taken.index, second.index);
        assert!(leases.renew(&mut held, Some(now)), "still its holder's");
        let mut stolen = leases.take(4, later, None).unwrap();
        assert_eq!(stolen.index, held.index);
        assert!(!leases.renew(&mut held, None), "taken since");
        // A holder that lost its lease frees nothing of the new holder's.
        leases.free(held);
        assert!(leases.renew(&mut stolen, None));
        leases.free(stolen);
        assert!(leases.take(4, later, None).is_some(), "freed");
    }

    #[test]
    fn misses_back_off_twice_as_long_each_time_and_a_spin_that_works_starts_over() {
        let mut s = spinner();
        assert!(input(&mut s, true, false) > 0, "spins while hand-offs work");
        assert!(input(&mut s, true, false) > 0);
        // A miss: the next 2 inputs use the pipes, then it tries again.
        assert!(input(&mut s, false, false) > 0);
        assert_eq!(
            (input(&mut s, false, false), input(&mut s, false, false)),
            (0, 0)
        );
        // The first input after is woken through the pipe (the worker slept by design),
        // which tells nothing, whatever happens.
        assert!(input(&mut s, false, false) > 0);
        // A second miss in a row: 4 inputs without, and so on.
        assert!(
            input(&mut s, true, true) > 0,
            "a go that found the worker asleep misses"
        );
        for _ in 0..4 {
            assert_eq!(input(&mut s, false, false), 0);
        }
        assert!(input(&mut s, false, false) > 0, "woken through the pipe");
        assert!(input(&mut s, true, false) > 0);
        // That one worked: the next miss backs off for 2 again.
        assert!(input(&mut s, false, false) > 0);
        assert_eq!(input(&mut s, false, false), 0);
        assert_eq!(input(&mut s, false, false), 0);
        assert!(input(&mut s, true, false) > 0);
        // Never more than MAX_COOLDOWN.
        for _ in 0..40 {
            s.misses = (s.misses + 1).min(MAX_COOLDOWN.ilog2());
        }
        s.returned(Duration::from_micros(2), Instant::now(), false, false, true);
        assert!(s.cooldown <= MAX_COOLDOWN, "{}", s.cooldown);
    }

    #[test]
    fn a_slow_input_or_a_slow_caller_is_no_miss_and_no_spin() {
        let mut s = spinner();
        assert!(input(&mut s, true, false) > 0);
        // A slow input that the host gave up spinning for is no miss.
        let plan = s.plan(&RunOptions::default(), Instant::now());
        s.started(plan);
        s.returned(Duration::from_millis(2), Instant::now(), false, false, true);
        assert!(input(&mut s, true, false) > 0);
        // A caller that takes longer than the worker spins: that input's worker sleeps at once.
        std::thread::sleep(WORKER_SPIN * 2);
        assert_eq!(input(&mut s, false, true), 0);
        assert!(input(&mut s, true, false) > 0, "it sped up again");
        // Spinning off, a CPU-time limit, a profile-like policy, one CPU: never.
        let off = RunOptions::default().with_spin(false);
        assert_eq!(s.plan(&off, Instant::now()).pauses, 0);
        let limited = RunOptions::default()
            .with_limits(crate::Limits::default().with_cpu_time(Some(Duration::from_secs(1))));
        assert_eq!(s.plan(&limited, Instant::now()).pauses, 0);
        let mut one = Spinner {
            cpus: 1,
            ..Spinner::new()
        };
        assert_eq!(input(&mut one, true, false), 0);
    }
}
