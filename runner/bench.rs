//! What isolation costs, measured in-process for `bytejail bench`: fork and its cousins, one job
//! through `bytejail::run`, one same-code input on one CPU and across two, one syscall under
//! each seccomp mode, and installing a filter, each next to the raw floor it should be compared
//! with.
//!
//! [`measure`] takes every row in interleaved rounds, in a new order each round (drift on a
//! shared machine, and whatever one row leaves behind for the next, hit all rows alike), throws
//! the warm-up rounds away and reports medians. The probes it uses are public so that the
//! criterion benches in `benches/` time the very same code.
//!
//! Row names are stable identifiers (documented in `docs/costs.md`); rows for modes bytejail does not
//! have are absent, never faked. To add a row, add one entry to `Fixtures::table`; a row that
//! needs something alive in this process while it is measured (a pool, a zygote) gets a phase of
//! its own instead: see `Phase`.
// Measuring fork, vfork, clone3, posix_spawn and seccomp takes raw syscalls, some of them in
// forked children; every block says what it relies on.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::policy::{Action, ArgCheck, CmpOp, Filter, Rule};
use crate::sys::raw;
use crate::{Outcome, Policy, Pool, RunOptions, SameCode, Zygote};

/// `mov al, 42; ret`: the job every end-to-end row runs.
pub const RETURN_42: [u8; 3] = [0xb0, 0x2a, 0xc3];

/// Syscalls one child makes per sample in the `syscall_*` rows: a loop of a millisecond or two,
/// long enough that the host's timing error (two looks at a flag, each within [`PUNCTUAL`]) is
/// noise, short enough for hundreds of samples in a few seconds.
const SYSCALLS_PER_SAMPLE: u64 = 10_000;

// ---------------------------------------------------------------------------------------------
// The report.

/// Everything `bytejail bench` found: where it ran and one row per measurement.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Where it ran.
    pub machine: Machine,
    /// One row per measurement.
    pub results: Vec<Row>,
    /// Rows left out and why (a tool not installed, a probe that failed). Not part of the JSON.
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// The machine a report was measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// `model name` in /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// The current clocksource (`tsc` lets the vDSO read the clock without a syscall).
    pub clocksource: String,
    /// Whether this is a virtual machine: the CPU's `hypervisor` flag.
    pub virtualized: bool,
    /// What `systemd-detect-virt` says (`kvm`, ...), when it is installed and finds one.
    pub hypervisor: Option<String>,
    /// /sys/kernel/mm/transparent_hugepage/enabled: the selected value.
    pub transparent_hugepages: String,
    /// The CPU the measuring thread (and so every child it forks) was pinned to, if any.
    pub pinned_cpu: Option<usize>,
    /// The other CPU of the rows measured on two CPUs (`placement` "2 CPUs"), if any; the
    /// `syscall_*` rows' host watches from any CPU but the pinned one.
    pub second_cpu: Option<usize>,
    /// /proc/loadavg at the start: a loaded machine gives slower, noisier rows.
    pub load_average: [f64; 3],
    /// `bytejail bench --quick`.
    pub quick: bool,
    /// Wall-clock seconds the measurement took.
    pub seconds: f64,
    /// The bytejail version that measured.
    pub bytejail_version: &'static str,
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// A stable identifier, e.g. `run_fresh`.
    pub name: &'static str,
    /// Median of the samples, in nanoseconds per operation.
    pub median_ns: u64,
    /// 99th percentile of the samples. For `syscall_*` rows a sample is the mean of
    /// `SYSCALLS_PER_SAMPLE` (10 000) calls, so this is the p99 of those means.
    pub p99_ns: u64,
    /// How many samples the median and p99 are of.
    pub samples: usize,
    /// The row this one should be compared with, measured in the same run.
    pub floor: Option<&'static str>,
    /// A second row this one is read against, measured in the same run: the other side of a
    /// target (`run_batch_input_2cpu` against both `floor_shm_handoff` and `floor_pipe_rtt`).
    pub second_floor: Option<&'static str>,
    /// Where the row's host (the measuring thread) and its worker or child ran.
    pub placement: Placement,
}

/// Where a row's host and worker ran: a hand-off between two processes costs something else on
/// one CPU (a context switch) than across two (a wake-up on another CPU, or a cache line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Placement {
    /// Both on the one CPU `bytejail bench` pinned itself to, or the only one it may use.
    #[serde(rename = "1 CPU")]
    OneCpu,
    /// The pinned CPU and one other: host and worker each allowed on both, or one on each.
    #[serde(rename = "2 CPUs")]
    TwoCpus,
    /// Wherever the scheduler put them: pinning to one CPU failed.
    #[serde(rename = "unpinned")]
    Unpinned,
}

impl Placement {
    /// As in the JSON: `1 CPU`, `2 CPUs`, `unpinned`.
    pub fn label(self) -> &'static str {
        match self {
            Placement::OneCpu => "1 CPU",
            Placement::TwoCpus => "2 CPUs",
            Placement::Unpinned => "unpinned",
        }
    }
}

impl BenchReport {
    /// The row called `name`.
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.results.iter().find(|row| row.name == name)
    }

    /// `row`'s median over its floor's median, when it has a floor that was measured.
    pub fn ratio_to_floor(&self, row: &Row) -> Option<f64> {
        self.ratio_to(row, row.floor?)
    }

    /// `row`'s median over its second floor's median, when it has one that was measured.
    pub fn ratio_to_second_floor(&self, row: &Row) -> Option<f64> {
        self.ratio_to(row, row.second_floor?)
    }

    /// `row`'s median over the median of the row called `other`, when that was measured.
    pub fn ratio_to(&self, row: &Row, other: &str) -> Option<f64> {
        let other = self.row(other)?;
        (other.median_ns > 0).then(|| row.median_ns as f64 / other.median_ns as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// The measurement loop.

/// One named measurement: how to take a sample, and the samples taken.
struct Measurement<'a> {
    name: &'static str,
    floor: Option<&'static str>,
    second_floor: Option<&'static str>,
    placement: Placement,
    /// The CPUs the measuring thread may use while it takes this row's samples, when not only
    /// the one `measure` pinned it to (see [`Measurement::on`]).
    cpus: Option<CpuSet>,
    /// Takes one sample: nanoseconds per operation.
    take: Box<dyn FnMut() -> io::Result<f64> + 'a>,
    /// Wall time each warm-up sample cost (including what is not timed, such as a child's
    /// fork): decides how many samples a round takes.
    costs: Vec<Duration>,
    /// Samples per warm-up round, of which only the last one's cost counts (see
    /// [`Measurement::waking`]).
    warm_up_batch: usize,
    /// Samples per round, or with `every > 1` one sample every `every` rounds.
    per_round: usize,
    every: usize,
    samples: Vec<f64>,
    failed: bool,
}

impl<'a> Measurement<'a> {
    fn new(
        name: &'static str,
        floor: Option<&'static str>,
        take: impl FnMut() -> io::Result<f64> + 'a,
    ) -> Self {
        Measurement {
            name,
            floor,
            second_floor: None,
            placement: Placement::OneCpu,
            cpus: None,
            take: Box::new(take),
            costs: Vec::new(),
            warm_up_batch: 1,
            per_round: 1,
            every: 1,
            samples: Vec::new(),
            failed: false,
        }
    }

    /// Also read against `row` (see [`Row::second_floor`]).
    fn also(mut self, row: &'static str) -> Self {
        self.second_floor = Some(row);
        self
    }

    /// Where host and worker or child run, when not both on the pinned CPU.
    fn placed(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// For a row whose peer (a spinning child or worker) goes to sleep while other rows run:
    /// its first sample after them pays a wake-up on another CPU (untimed, but its cost would
    /// plan the row as if every sample paid it; in the measuring rounds only the first of a
    /// row's samples in a round does). Warm-up takes two samples a round and counts the
    /// second's cost.
    fn waking(mut self) -> Self {
        self.warm_up_batch = 2;
        self
    }

    /// Measured with the thread allowed on `pair`'s two CPUs (and back on the pinned CPU for
    /// the other rows).
    fn on(mut self, pair: &CpuPair) -> Self {
        self.cpus = Some(pair.both);
        self.placement = Placement::TwoCpus;
        self
    }

    /// Takes `count` samples in a row, with the thread on the row's CPUs meanwhile; then back
    /// on `home`.
    fn samples(
        &mut self,
        count: usize,
        warming_up: bool,
        home: Option<&CpuSet>,
        notes: &mut Vec<String>,
    ) {
        if self.failed {
            return;
        }
        if let Some(cpus) = &self.cpus {
            if let Err(error) = cpus.apply() {
                self.failed = true;
                notes.push(format!(
                    "{} left out: cannot move to its CPUs: {error}",
                    self.name
                ));
                return;
            }
        }
        let costs_before = self.costs.len();
        for _ in 0..count {
            self.sample(warming_up, notes);
        }
        if warming_up && self.costs.len() > costs_before + 1 {
            // Only the batch's last cost: see `Measurement::waking`.
            let last = self.costs.len() - 1;
            self.costs.drain(costs_before..last);
        }
        if let (Some(_), Some(home)) = (&self.cpus, home) {
            // Failing leaves the thread on two CPUs for the next rows, which is harmless.
            let _ = home.apply();
        }
    }

    /// Takes one sample: kept when measuring, its cost noted when warming up. A failure ends
    /// the row with a note.
    fn sample(&mut self, warming_up: bool, notes: &mut Vec<String>) {
        if self.failed {
            return;
        }
        let started = Instant::now();
        match (self.take)() {
            Ok(_) if warming_up => self.costs.push(started.elapsed()),
            Ok(ns) => self.samples.push(ns),
            Err(error) => {
                self.failed = true;
                notes.push(format!("{} left out: {error}", self.name));
            }
        }
    }

    /// Sets the samples per round from the warm-up costs, so that the row gets about `slot`
    /// of each round (or one sample every few rounds when one sample costs more).
    fn plan(&mut self, slot: Duration) {
        self.costs.sort();
        let cost = self
            .costs
            .get(self.costs.len() / 2)
            .copied()
            .unwrap_or(slot)
            .max(Duration::from_nanos(1));
        self.per_round = (slot.as_nanos() / cost.as_nanos()).clamp(1, 200) as usize;
        self.every = cost.as_nanos().div_ceil(slot.as_nanos()).max(1) as usize;
    }

    /// The samples taken so far, to be pooled with other cycles' ([`Tallies`]).
    fn tally(self) -> Tally {
        Tally {
            name: self.name,
            floor: self.floor,
            second_floor: self.second_floor,
            placement: self.placement,
            samples: self.samples,
            failed: self.failed,
        }
    }
}

/// One row's samples from every cycle so far; a row that failed once is left out.
struct Tally {
    name: &'static str,
    floor: Option<&'static str>,
    second_floor: Option<&'static str>,
    placement: Placement,
    samples: Vec<f64>,
    failed: bool,
}

impl Tally {
    fn row(&self) -> Option<Row> {
        if self.failed || self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let at =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Some(Row {
            name: self.name,
            median_ns: at(0.5).round() as u64,
            p99_ns: at(0.99).round() as u64,
            samples: sorted.len(),
            floor: self.floor,
            second_floor: self.second_floor,
            placement: self.placement,
        })
    }
}

/// Every row's samples so far, in the order rows were first measured, and the pool's count of
/// jobs that found no parked worker.
#[derive(Default)]
struct Tallies {
    rows: Vec<Tally>,
    pool_jobs: u64,
    pool_fallbacks: u64,
}

impl Tallies {
    fn add(&mut self, table: Vec<Measurement>) {
        self.merge(table.into_iter().map(Measurement::tally));
    }

    fn merge(&mut self, tallies: impl IntoIterator<Item = Tally>) {
        for tally in tallies {
            match self.rows.iter_mut().find(|t| t.name == tally.name) {
                Some(seen) => {
                    seen.samples.extend(tally.samples);
                    seen.failed |= tally.failed;
                }
                None => self.rows.push(tally),
            }
        }
    }

    fn rows(&self) -> Vec<Row> {
        self.rows.iter().filter_map(Tally::row).collect()
    }
}

/// A phase of one cycle, measured in a child forked for it alone: its threads (the pool's
/// refill thread, the zygote's owner) never exist in this process, nor in another phase's.
/// Once a process has had a second thread, glibc's `fork()` takes its multi-threaded path for
/// good, even after the thread is gone: here that made `floor_fork_pipe_strict` and
/// `fork_exit_wait` 40-55% slower in every later cycle. And what a thread leaves mapped (glibc
/// keeps a gone thread's stack and its malloc arena for reuse) is copied by every later fork:
/// when the phases of a cycle shared one child, the traced phase, measured after the pool's,
/// forked about 20 µs slower than the main table (`floor_fork_pipe_strict` measured in it took
/// 96 µs against 71 µs, an untraced `run_fresh` 103 against 92 µs). The child is a copy of
/// this process, so the phase rows are measured at the same host size; it sends their samples,
/// notes and progress lines back as JSON on a pipe and leaves with `_exit`, running no
/// destructor of what it inherited (the fixtures' workers belong to this process). It prints
/// nothing itself: a lock another thread of a caller's process held at the fork (stderr's, say)
/// stays locked in the child, so its progress is told here once it is done.
fn phase_in_child(
    phase: Phase,
    budget: Duration,
    pinned_cpu: Option<usize>,
    tallies: &mut Tallies,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(&str),
) {
    let result = (|| -> io::Result<PhaseResults> {
        let (from_child, to_parent) = pipe()?;
        // SAFETY: the bench starts no thread in this process. Should a caller's other threads
        // hold locks at the fork, the child takes none of theirs: it allocates (glibc's fork
        // leaves malloc usable), starts threads of its own and prints nothing. It never returns
        // into this frame's callers: it leaves with `_exit` whatever happens, a panic included.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(last_error());
        }
        if pid == 0 {
            drop(from_child);
            let measured = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut child = Tallies::default();
                let mut child_notes = Vec::new();
                let mut lines = Vec::new();
                let mut told = |line: &str| lines.push(line.to_string());
                let budget = budget * phase.percent() / 100;
                phase.measure(budget, pinned_cpu, &mut child, &mut child_notes, &mut told);
                PhaseResults::new(&child, child_notes, lines)
            }));
            let status = match measured.map(|results| serde_json::to_vec(&results)) {
                Ok(Ok(json)) => match fs::File::from(to_parent).write_all(&json) {
                    Ok(()) => 0,
                    Err(_) => 2,
                },
                _ => 1,
            };
            // SAFETY: ends the child at once, without running this process's destructors.
            unsafe { libc::_exit(status) }
        }
        drop(to_parent);
        let mut json = Vec::new();
        let read = io::Read::read_to_end(&mut fs::File::from(from_child), &mut json);
        reap_clean(pid, "the phases' child")?;
        read?;
        serde_json::from_slice(&json).map_err(io::Error::other)
    })();
    match result {
        Ok(results) => {
            for line in &results.progress {
                progress(line);
            }
            results.merge_into(tallies, notes)
        }
        Err(error) => note(
            notes,
            progress,
            format!("run_pool and run_zygote left out of a cycle: {error}"),
        ),
    }
}

/// What a phases' child sends back: each row's samples, its notes, the pool's counts.
#[derive(Serialize, Deserialize)]
struct PhaseResults {
    rows: Vec<PhaseRow>,
    notes: Vec<String>,
    progress: Vec<String>,
    pool_jobs: u64,
    pool_fallbacks: u64,
}

#[derive(Serialize, Deserialize)]
struct PhaseRow {
    name: String,
    samples: Vec<f64>,
    failed: bool,
}

impl PhaseResults {
    fn new(tallies: &Tallies, notes: Vec<String>, progress: Vec<String>) -> PhaseResults {
        let rows = tallies.rows.iter().map(|tally| PhaseRow {
            name: tally.name.to_string(),
            samples: tally.samples.clone(),
            failed: tally.failed,
        });
        PhaseResults {
            rows: rows.collect(),
            notes,
            progress,
            pool_jobs: tallies.pool_jobs,
            pool_fallbacks: tallies.pool_fallbacks,
        }
    }

    /// Adds the rows to `tallies` (under their names and floors from [`PHASE_ROWS`]; a name
    /// the child should not have sent is dropped) and the notes to `notes`.
    fn merge_into(self, tallies: &mut Tallies, notes: &mut Vec<String>) {
        let table = self.rows.into_iter().filter_map(|row| {
            let &(name, floor, second_floor) =
                PHASE_ROWS.iter().find(|(name, ..)| *name == row.name)?;
            Some(Tally {
                name,
                floor,
                second_floor,
                placement: Placement::OneCpu,
                samples: row.samples,
                failed: row.failed,
            })
        });
        tallies.merge(table);
        tallies.pool_jobs += self.pool_jobs;
        tallies.pool_fallbacks += self.pool_fallbacks;
        notes.extend(self.notes);
    }
}

/// The rows the phases measure, with their floors (and a second floor to be read against).
const PHASE_ROWS: [(&str, Option<&str>, Option<&str>); 4] = [
    // A pooled job is also a parked process's first run (`floor_parked_first_rtt`).
    (
        "run_pool",
        Some("floor_pipe_rtt"),
        Some("floor_parked_first_rtt"),
    ),
    ("run_zygote", Some("floor_fork_pipe_strict"), None),
    ("run_profile_256", Some("floor_fork_pipe_strict"), None),
    ("run_profile_docker", Some("floor_fork_pipe_strict"), None),
];

/// Cycles of a full run: the main table's rounds, then each [`Phase`], this many times over,
/// each with its share of the budget. A slow stretch of the machine (a neighbour on the VM's
/// host, a kernel thread's burst) then falls on every row alike instead of on one phase's
/// rows, whose ratios are taken to the main table's floors: with one cycle, `run_pool` and
/// `run_zygote` moved by up to 26% between consecutive runs here, the main table's rows by 8%.
/// `--quick` has one cycle.
const CYCLES: u32 = 3;

/// Time each row gets per round once warmed up: small enough that a round is over in tens of
/// milliseconds (so drift is shared), large enough that cheap rows take many samples.
const SLOT: Duration = Duration::from_micros(1500);

/// The `run_*` rows of fresh workers: one `mov al,42; ret` job end to end through
/// [`crate::run`] with each set of options, by row name. Those under profiles are measured in
/// `Phase::Profiles`, the others in the main table. Shared by `bytejail bench` and
/// `benches/run.rs`. Modes that keep something alive between jobs (`run_pool`, and to come
/// `run_batch_input`, `run_zygote`) are measured in a phase of their own (`Phase`).
pub fn run_modes() -> Vec<(&'static str, RunOptions)> {
    vec![
        ("run_fresh", RunOptions::default()),
        (
            // What the tracer costs: `run_fresh` without it (unverified fault details).
            "run_fresh_untraced",
            RunOptions {
                trace: false,
                ..RunOptions::default()
            },
        ),
        (
            // Against `run_fresh_untraced`: what scrubbing costs.
            "run_fresh_noscrub",
            RunOptions {
                scrub: false,
                trace: false,
                ..RunOptions::default()
            },
        ),
        (
            "run_strict_bpf",
            RunOptions {
                policy: Policy::StrictBpf,
                ..RunOptions::default()
            },
        ),
        (
            // A profile-sized filter: 256 rules, installed in every worker.
            "run_profile_256",
            RunOptions {
                policy: Policy::Profile {
                    name: "allow-256".to_string(),
                    filter: allow_list(256, RulePosition::Last, true),
                },
                ..RunOptions::default()
            },
        ),
        (
            // Docker's default profile, installed in every worker.
            "run_profile_docker",
            RunOptions {
                policy: Policy::Profile {
                    name: "docker-default.json".to_string(),
                    filter: docker_default(),
                },
                ..RunOptions::default()
            },
        ),
    ]
}

/// Docker's default seccomp profile (`guest-samples/policies/docker-default.json`), compiled.
pub fn docker_default() -> Filter {
    match Policy::from_profile_json(
        include_str!("../guest-samples/policies/docker-default.json"),
        "docker-default.json",
    ) {
        Ok(Policy::Profile { filter, .. }) => filter,
        other => panic!("Docker's default profile compiles: {other:?}"),
    }
}

/// libseccomp 2.5.4's `optimize=2` program for Docker's default profile, built as runc builds
/// it (`tests/libseccomp_filter.py`) and checked in: what `filter_install_docker` is compared to.
pub fn docker_default_libseccomp() -> Filter {
    let bytes = include_bytes!("../guest-samples/policies/docker-default.libseccomp-2.5.4.bpf");
    Filter::parse_program(bytes)
        .and_then(|program| Filter::from_program(program).ok())
        .expect("the checked-in libseccomp program is whole and fits the kernel")
}

/// Measures every row and returns the report: about 20 s, or about 5 s with `quick`.
///
/// `progress` receives a line now and then (what is being done, what was left out).
///
/// The measuring thread is pinned to one CPU for the duration, so every child it forks (and the
/// parked worker) runs there too: the rows then do not depend on where the scheduler happens
/// to put a child, which on a small VM halves the run-to-run spread. It is unpinned afterwards;
/// see `Machine::pinned_cpu`. The rows of a hand-off across two CPUs (`floor_shm_handoff`,
/// `run_batch_input_2cpu*`) use a second CPU (`Machine::second_cpu`) as well, and are left
/// out with a note when the process may run on one CPU only; every row says where it ran
/// (`Row::placement`).
///
/// In each of three cycles (`CYCLES`; one with `quick`) the main table comes first, then each
/// `Phase` in turn, each with its own slice of the budget; every row's samples from all cycles
/// make its median and p99.
///
/// Call it from a process with one thread, as `bytejail bench` is: with any other thread
/// alive, glibc's `fork()` takes its slower multi-threaded path, and the floors that use it
/// (`floor_fork_pipe_strict`, `fork_exit_wait`) no longer are floors.
pub fn measure(quick: bool, progress: &mut dyn FnMut(&str)) -> BenchReport {
    let started = Instant::now();
    let budget = Duration::from_secs(if quick { 5 } else { 20 });
    let load_average = load_average();
    let allowed = CpuSet::current().map_or(0, |set| set.cpus().len());
    let pinned = pin_to_one_cpu();
    let pinned_cpu = pinned.as_ref().map(|p| p.0);
    let pair = match &pinned {
        Some((cpu, previous)) => CpuPair::choose(*cpu, previous),
        None if allowed < 2 => Err("this process may run on one CPU only, and a spinning \
                                    hand-off needs two"
            .to_string()),
        None => Err("pinning the measuring thread to one CPU failed".to_string()),
    };
    let second_cpu = pair.as_ref().ok().map(|pair| pair.other);
    let mut notes = Vec::new();
    let phases = Phase::ALL;
    let cycles = if quick { 1 } else { CYCLES };
    let phase_percent: u32 = phases.iter().map(|phase| phase.percent()).sum();
    let main_budget = budget.saturating_sub(budget * phase_percent / 100);

    let fixtures = Fixtures::prepare(pair, &mut notes, progress);
    let mut tallies = Tallies::default();
    for cycle in 1..=cycles {
        if cycles > 1 {
            progress(&format!("cycle {cycle} of {cycles}:"));
        }
        let mut table = fixtures.table(&mut notes, progress);
        run_rounds(
            &mut table,
            main_budget / cycles,
            pinned_cpu,
            &mut notes,
            progress,
        );
        tallies.add(table);
        let budget = budget / cycles;
        for &phase in &phases {
            phase_in_child(
                phase,
                budget,
                pinned_cpu,
                &mut tallies,
                &mut notes,
                progress,
            );
        }
    }
    if let Some(probe) = &fixtures.same_code_2cpu {
        note(
            &mut notes,
            progress,
            probe.spun_note("run_batch_input_2cpu"),
        );
    }
    drop(fixtures);
    if tallies.pool_jobs > 0 {
        note(
            &mut notes,
            progress,
            format!(
                "run_pool: {} of {} jobs found no parked worker and ran fresh (pool of \
                 {POOL_SIZE}, refilled before each job)",
                tallies.pool_fallbacks, tallies.pool_jobs
            ),
        );
    }
    let mut results = tallies.rows();
    if pinned.is_none() && allowed > 1 {
        // Rows meant to run on the pinned CPU ran wherever the scheduler put them.
        for row in &mut results {
            if row.placement == Placement::OneCpu {
                row.placement = Placement::Unpinned;
            }
        }
    }

    if let Some((_, previous)) = &pinned {
        unpin(previous);
    }
    BenchReport {
        machine: Machine {
            pinned_cpu: pinned.map(|(cpu, _)| cpu),
            second_cpu,
            load_average,
            quick,
            seconds: started.elapsed().as_secs_f64(),
            ..Machine::detect()
        },
        results,
        notes,
    }
}

/// Rows measured apart from the main table, because what they keep alive would disturb the
/// other rows: a [`Pool`]'s refill thread, even idle and on the same CPU, makes every glibc
/// fork of the process about 40% slower here (`fork_exit_wait` 102 -> 143-149 us,
/// `floor_fork_pipe_strict` 141 -> 183-189 us; `run_fresh` barely moves), and its refill forks
/// run whenever a job has used a worker. Each phase starts its fixture, takes its rows in
/// interleaved rounds of their own (same warm-up, same pinning), and stops it; the phases of a
/// cycle run in a child process of their own (see [`phase_in_child`]), because glibc keeps
/// taking the slow path once the process has had a second thread.
///
/// Rows here are compared with floors of the main table (`floor_pipe_rtt` is the same with or
/// without an idle pool: 13.0 and 12.9 us here).
///
/// To add a phase: a variant here and in `ALL`, its row in [`PHASE_ROWS`], and an arm in
/// `measure` like `Pool`'s that starts the fixture, hands [`measure_phase`] one
/// [`Measurement`] per row and drops it. A mode that keeps only a
/// worker process alive and starts no thread in this one (`run_batch_input`: inputs through
/// one reused worker, against `floor_pipe_rtt`) needs no phase: it is a fixture and one entry
/// in `Fixtures::table`, as `floor_pipe_rtt`'s [`ParkedWorker`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `run_pool`: jobs through a [`Pool`] of the default template.
    Pool,
    /// `run_zygote`: fresh workers forked by a [`Zygote`], one per job.
    Zygote,
    /// The `run_*` rows of [`run_modes`] under profiles (traced, as by default): a profile
    /// job's worker has a cgroup, namespaces and a Landlock domain, which the kernel tears
    /// down after the job, in workqueues on the same CPU. Measured beside other rows, that work
    /// falls on their samples: a strict job run right after a Docker-profile job took 133-135
    /// µs here against 67-71 µs after another strict job (`perf` showed the CPU in the cgroup
    /// workqueue's `kworker`). The traced strict rows (`run_fresh`, `run_strict_bpf`) are in
    /// the main table, beside their floor: the tracer process they start (a `CLONE_VM` process,
    /// not a thread, so glibc's `fork()` keeps its single-threaded path) left the floors where
    /// they were (two runs each way: `floor_fork_pipe_strict` 70.8 and 70.0 µs,
    /// `fork_exit_wait` 65.2 and 64.0 µs), while a phase's child forks more slowly than the
    /// main table (see [`phase_in_child`]).
    Profiles,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Pool, Phase::Zygote, Phase::Profiles];

    /// Percent of the budget the phase gets; the main table gets the rest.
    fn percent(self) -> u32 {
        match self {
            Phase::Pool | Phase::Zygote => 15,
            Phase::Profiles => 8,
        }
    }

    /// Starts the phase's fixture, measures its rows for `budget` into `tallies`, stops it.
    fn measure(
        self,
        budget: Duration,
        pinned_cpu: Option<usize>,
        tallies: &mut Tallies,
        notes: &mut Vec<String>,
        progress: &mut dyn FnMut(&str),
    ) {
        match self {
            Phase::Pool => {
                let Some(pool) = kept("run_pool", PoolLatency::start(), notes, progress) else {
                    return;
                };
                let (name, floor, _) = PHASE_ROWS[0];
                let table = vec![Measurement::new(name, floor, || pool.job())];
                let table = measure_phase(table, "pool", budget, pinned_cpu, notes, progress);
                tallies.add(table);
                tallies.pool_jobs += pool.jobs();
                tallies.pool_fallbacks += pool.fallbacks();
            }
            Phase::Zygote => {
                let started = Zygote::start().map_err(io::Error::other);
                let Some(zygote) = kept("run_zygote", started, notes, progress) else {
                    return;
                };
                let (name, floor, _) = PHASE_ROWS[1];
                let table = vec![Measurement::new(name, floor, || {
                    time(|| zygote_returns_42(&zygote))
                })];
                let table = measure_phase(table, "zygote", budget, pinned_cpu, notes, progress);
                tallies.add(table);
            }
            Phase::Profiles => {
                let runs: Vec<_> = run_modes()
                    .into_iter()
                    .filter(|(_, o)| matches!(o.policy, Policy::Profile { .. }))
                    .collect();
                let table = runs
                    .iter()
                    .map(|(name, options)| {
                        let floor = PHASE_ROWS
                            .iter()
                            .find(|(row, ..)| row == name)
                            .and_then(|(_, floor, _)| *floor);
                        Measurement::new(name, floor, move || time(|| run_returns_42(options)))
                    })
                    .collect();
                let table = measure_phase(table, "profiles", budget, pinned_cpu, notes, progress);
                tallies.add(table);
            }
        }
    }
}

fn zygote_returns_42(zygote: &Zygote) -> io::Result<()> {
    let report = zygote
        .run(&RETURN_42, b"", &RunOptions::default())
        .map_err(io::Error::other)?;
    expect_returned_42(&report)
}

/// `run_batch_input`: one input at a time through a same-code worker (the first starts it).
#[derive(Debug)]
pub struct SameCodeLatency {
    same: std::cell::RefCell<SameCode>,
    inputs: std::cell::Cell<u64>,
}

impl SameCodeLatency {
    /// Starts the worker and runs one input, so the first sample does not pay the start-up.
    pub fn start() -> io::Result<SameCodeLatency> {
        SameCodeLatency::start_with_spin(true)
    }

    /// As [`SameCodeLatency::start`], with [`RunOptions::spin`] as given. The worker is forked
    /// here and inherits the calling thread's CPU affinity: call it on the CPUs the inputs
    /// will be handed over on.
    pub fn start_with_spin(spin: bool) -> io::Result<SameCodeLatency> {
        SameCodeLatency::start_with(spin, false)
    }

    /// As [`SameCodeLatency::start_with_spin`], with [`RunOptions::output_file`] as given.
    pub fn start_with(spin: bool, output_file: bool) -> io::Result<SameCodeLatency> {
        // Untraced, as this row always was: a same-code worker's tracer costs nothing per
        // input anyway (it is seized once, when the worker starts).
        let options = RunOptions {
            trace: false,
            spin,
            output_file,
            ..RunOptions::default()
        };
        let same = SameCode::new(&RETURN_42, &options).map_err(io::Error::other)?;
        let probe = SameCodeLatency {
            same: std::cell::RefCell::new(same),
            inputs: std::cell::Cell::new(0),
        };
        probe.input()?;
        Ok(probe)
    }

    /// Runs one input.
    pub fn input(&self) -> io::Result<()> {
        let report = self.same.borrow_mut().run(b"").map_err(io::Error::other)?;
        self.inputs.set(self.inputs.get() + 1);
        expect_returned_42(&report)
    }

    /// What the session's spun inputs cost the host, as a note: how many of its inputs spun,
    /// and how many of those made no `fstat` for the reset and no `read` of the output (see
    /// [`SameCode::inputs_unstatted`] and [`SameCode::inputs_unread`]).
    pub fn spun_note(&self, row: &str) -> String {
        let same = self.same.borrow();
        format!(
            "{row}: {} of {} inputs spun; {} reset without an fstat (a page-fault watch, where \
             the kernel allows one) and {} left the output pipe unread (an io_uring watch)",
            same.inputs_spun(),
            self.inputs.get(),
            same.inputs_unstatted(),
            same.inputs_unread()
        )
    }

    /// Workers started so far (1 while every input returned).
    pub fn workers(&self) -> u64 {
        self.same.borrow().workers_started()
    }
}

/// Takes `table`'s rows in interleaved rounds for `budget`; the table, with its samples.
fn measure_phase<'a>(
    mut table: Vec<Measurement<'a>>,
    name: &str,
    budget: Duration,
    pinned_cpu: Option<usize>,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(&str),
) -> Vec<Measurement<'a>> {
    progress(&format!("phase {name}:"));
    run_rounds(&mut table, budget, pinned_cpu, notes, progress);
    table
}

/// Workers the `run_pool` row's pool keeps parked.
pub const POOL_SIZE: usize = 2;

/// How long a `run_pool` sample waits (untimed) for the pool to be full again.
const REFILL_WAIT: Duration = Duration::from_secs(1);

/// The `run_pool` probe: a [`Pool`] of the default template, and the latency of one job when
/// the pool keeps up. Before each timed job it waits, untimed, until every worker is parked
/// again (at most `REFILL_WAIT`), and after it until the refill fork is done, so that the
/// time is what a caller sees between jobs that do not outrun the refill, and the refill's
/// fork lands on no other row's sample. Throughput under load is another number: a pool
/// refilled by one thread cannot park workers faster than it can fork them.
///
/// The pool's refill thread inherits the caller's CPU affinity, so under `bytejail bench` it,
/// its zygote and every worker share the pinned CPU, as `floor_pipe_rtt`'s worker does. The
/// refill thread runs under `SCHED_BATCH` and never preempts the job that woke it; a worker
/// counts as parked only once it said ready, so no worker's set-up competes with a job either.
/// (A pause after the pool is full, tried before workers said ready, only let the CPU go idle:
/// 48-53 us medians with 200 us of it, 35-40 us without.)
#[derive(Debug)]
pub struct PoolLatency {
    pool: Pool,
    jobs: std::cell::Cell<u64>,
    fallbacks_before: u64,
}

impl PoolLatency {
    /// Starts the pool and waits until it is full.
    pub fn start() -> io::Result<PoolLatency> {
        let pool = Pool::new(RunOptions::default(), POOL_SIZE).map_err(io::Error::other)?;
        let probe = PoolLatency {
            fallbacks_before: pool.stats().fallbacks,
            pool,
            jobs: std::cell::Cell::new(0),
        };
        probe.wait_until_full();
        Ok(probe)
    }

    /// Waits (untimed) for a full pool, times one `mov al,42; ret` job through it, waits for
    /// the refill; nanoseconds.
    pub fn job(&self) -> io::Result<f64> {
        self.wait_until_full();
        let ns = time(|| self.run_one());
        self.jobs.set(self.jobs.get() + 1);
        self.wait_until_full();
        ns
    }

    /// One job, untimed waits left to the caller (for criterion's `iter_custom`).
    pub fn run_one(&self) -> io::Result<()> {
        let report = self
            .pool
            .run(&RETURN_42, b"", &RunOptions::default())
            .map_err(io::Error::other)?;
        expect_returned_42(&report)
    }

    /// Sleeps until [`POOL_SIZE`] workers are parked, or `REFILL_WAIT` has passed (the next
    /// job then may run fresh, and counts as a fallback).
    pub fn wait_until_full(&self) {
        let deadline = Instant::now() + REFILL_WAIT;
        while self.pool.stats().parked < POOL_SIZE && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    /// Jobs timed by [`PoolLatency::job`].
    pub fn jobs(&self) -> u64 {
        self.jobs.get()
    }

    /// Jobs since `start` that ran in a fresh worker.
    pub fn fallbacks(&self) -> u64 {
        self.pool.stats().fallbacks - self.fallbacks_before
    }
}

/// Runs `job` `jobs` times, split over `threads` threads that may each run on every online
/// CPU (they do not inherit a pinned caller's affinity); the wall time from the first spawn to
/// the last join. For the `--jobs` scaling group of `benches/run.rs`: per-job time on one
/// thread over per-job time on two is the speed-up `bytejail batch --jobs 2` can get.
pub fn on_threads(
    threads: usize,
    jobs: u64,
    job: &(dyn Fn() -> io::Result<()> + Sync),
) -> io::Result<Duration> {
    let online = fs::read_to_string("/sys/devices/system/cpu/online")?;
    let everywhere = CpuSet::of(parse_cpu_list(&online));
    let threads = threads.max(1) as u64;
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let share = jobs / threads + u64::from(i < jobs % threads);
                scope.spawn(move || {
                    everywhere.apply()?;
                    (0..share).try_for_each(|_| job())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("panicked")))
        })
    })?;
    Ok(started.elapsed())
}

/// Runs `f` with the calling thread free to run on every CPU this process may use (and so every
/// thread and process it starts), then restores its affinity: for `bytejail batch`'s own
/// threads in the `--jobs` group, as a user runs it. A thread the bench pinned gets back the
/// CPUs it had before (kept when it pinned it), never more: CPUs the user kept the process
/// from (`taskset`, a cpuset) stay out.
pub fn unpinned<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    let previous = CpuSet::current()?;
    CpuSet::of(allowed_before_pin(&previous)).apply()?;
    let result = f();
    unpin(&previous);
    Ok(result)
}

/// One `mov al,42; ret` job through a fresh worker with default options: what `--jobs` runs.
pub fn run_fresh_once() -> io::Result<()> {
    run_returns_42(&RunOptions::default())
}

/// Everything the rows need, built before the first sample.
struct Fixtures {
    tiny: Option<TinyProgram>,
    guest: Option<GuestFunction>,
    parked: Option<ParkedWorker>,
    same_code: Option<SameCodeLatency>,
    /// The two CPUs of the rows measured on two, when there are two.
    pair: Option<CpuPair>,
    shm: Option<ShmHandoff>,
    /// `run_batch_input_2cpu`, `_nospin` and `_file`: workers forked on `pair`'s two CPUs.
    same_code_2cpu: Option<SameCodeLatency>,
    same_code_2cpu_nospin: Option<SameCodeLatency>,
    same_code_2cpu_file: Option<SameCodeLatency>,
    /// `run_*` rows: name and options.
    runs: Vec<(&'static str, RunOptions)>,
    /// `syscall_*` rows: name, floor and confinement.
    syscalls: Vec<(&'static str, Option<&'static str>, Confinement)>,
    /// `filter_install_*` rows: name, floor and filter.
    installs: Vec<(&'static str, Option<&'static str>, Filter)>,
    /// External sandboxes found on PATH: row name and program.
    externals: Vec<(&'static str, PathBuf)>,
}

impl Fixtures {
    fn prepare(
        pair: Result<CpuPair, String>,
        notes: &mut Vec<String>,
        progress: &mut dyn FnMut(&str),
    ) -> Fixtures {
        let tiny = kept(
            "posix_spawn_static_wait and the external rows",
            TinyProgram::create_in(&std::env::temp_dir()),
            notes,
            progress,
        );
        let guest = kept(
            "floor_fork_pipe_strict",
            GuestFunction::new(&RETURN_42),
            notes,
            progress,
        );
        let parked = kept("floor_pipe_rtt", ParkedWorker::start(), notes, progress);
        let same_code = kept("run_batch_input", SameCodeLatency::start(), notes, progress);
        let (mut shm, mut same_code_2cpu, mut same_code_2cpu_nospin, mut same_code_2cpu_file) =
            (None, None, None, None);
        let pair = match pair {
            Ok(pair) => {
                let started = ShmHandoff::start(pair.other);
                shm = kept("floor_shm_handoff", started, notes, progress);
                for (name, spin, output_file, probe) in [
                    ("run_batch_input_2cpu", true, false, &mut same_code_2cpu),
                    (
                        "run_batch_input_2cpu_nospin",
                        false,
                        false,
                        &mut same_code_2cpu_nospin,
                    ),
                    (
                        "run_batch_input_2cpu_file",
                        true,
                        true,
                        &mut same_code_2cpu_file,
                    ),
                ] {
                    // Forked on both CPUs, as a host thread allowed on two forks its worker.
                    let started = pair.with_both(|| SameCodeLatency::start_with(spin, output_file));
                    *probe = kept(name, started, notes, progress);
                }
                Some(pair)
            }
            Err(why) => {
                note(
                    notes,
                    progress,
                    format!(
                        "floor_shm_handoff and the run_batch_input_2cpu rows (_nospin, _file) \
                         left out: {why}"
                    ),
                );
                None
            }
        };
        // The profile rows run in a phase of their own (`Phase::Profiles`).
        let runs = run_modes()
            .into_iter()
            .filter(|(_, o)| !matches!(o.policy, Policy::Profile { .. }))
            .collect();
        let mut syscalls = vec![
            ("syscall_none", None, Confinement::None),
            ("syscall_strict", Some("syscall_none"), Confinement::Strict),
        ];
        for (name, filter) in [
            ("syscall_bpf_strict", Filter::strict_equivalent()),
            (
                "syscall_bpf_256_last",
                allow_list(256, RulePosition::Last, false),
            ),
            (
                "syscall_bpf_256_args",
                allow_list(256, RulePosition::Last, true),
            ),
            ("syscall_bpf_docker", docker_default()),
        ] {
            if let Some(confinement) = kept(name, Confinement::filter(&filter), notes, progress) {
                syscalls.push((name, Some("syscall_none"), confinement));
            }
        }
        let installs = vec![
            (
                "filter_install_1",
                None,
                allow_list(1, RulePosition::Last, false),
            ),
            (
                "filter_install_256",
                Some("filter_install_1"),
                allow_list(256, RulePosition::Last, false),
            ),
            (
                "filter_install_docker",
                Some("filter_install_1"),
                docker_default(),
            ),
            (
                "filter_install_docker_libseccomp",
                Some("filter_install_1"),
                docker_default_libseccomp(),
            ),
        ];
        let mut externals = Vec::new();
        for (name, program) in EXTERNALS {
            match find_in_path(program) {
                Some(path) if tiny.is_some() => externals.push((name, path)),
                Some(_) => {}
                None => note(
                    notes,
                    progress,
                    format!("{name} left out: `{program}` is not installed"),
                ),
            }
        }
        Fixtures {
            tiny,
            guest,
            parked,
            same_code,
            pair,
            shm,
            same_code_2cpu,
            same_code_2cpu_nospin,
            same_code_2cpu_file,
            runs,
            syscalls,
            installs,
            externals,
        }
    }

    /// The table of rows, in the order they are reported. A mode is one entry here, or a
    /// [`Phase`] when it would disturb the other rows (`run_pool` and `run_zygote` have one).
    fn table<'a>(
        &'a self,
        notes: &mut Vec<String>,
        progress: &mut dyn FnMut(&str),
    ) -> Vec<Measurement<'a>> {
        let mut table = Vec::new();
        if let Some(guest) = &self.guest {
            table.push(Measurement::new("floor_fork_pipe_strict", None, || {
                time(|| floor_fork_pipe_strict(guest).and_then(expect_42))
            }));
        }
        if let Some(parked) = &self.parked {
            table.push(Measurement::new("floor_pipe_rtt", None, || {
                time(|| parked.round_trip())
            }));
        }
        table.push(Measurement::new("floor_parked_first_rtt", None, || {
            let parked = ParkedWorker::start()?;
            parked.wait_until_parked()?;
            time(|| parked.round_trip())
        }));
        table.push(Measurement::new("fork_exit_wait", None, || {
            time(fork_exit_wait)
        }));
        for (name, probe) in [
            ("vfork_exit_wait", vfork_exit_wait as fn() -> io::Result<()>),
            ("clone3_pidfd_exit_wait", clone3_pidfd_exit_wait),
        ] {
            table.push(Measurement::new(name, Some("fork_exit_wait"), move || {
                time(probe)
            }));
        }
        if let Some(tiny) = &self.tiny {
            table.push(Measurement::new(
                "posix_spawn_static_wait",
                Some("fork_exit_wait"),
                || time(|| tiny.spawn_wait()),
            ));
        }
        for (name, options) in &self.runs {
            table.push(Measurement::new(
                name,
                Some("floor_fork_pipe_strict"),
                move || time(|| run_returns_42(options)),
            ));
        }
        if let Some(shm) = &self.shm {
            table.push(
                Measurement::new("floor_shm_handoff", None, || {
                    // Untimed: wakes the child if it went to sleep since the last sample.
                    shm.round_trip()?;
                    time(|| shm.round_trip())
                })
                .placed(Placement::TwoCpus)
                .waking(),
            );
        }
        if let Some(same_code) = &self.same_code {
            let row = Measurement::new("run_batch_input", Some("floor_pipe_rtt"), || {
                time(|| same_code.input())
            });
            // On one CPU a same-code worker does not spin (`RunOptions::spin`): read against
            // the blocking hand-off too, where it is measured.
            table.push(match &self.same_code_2cpu_nospin {
                Some(_) => row.also("run_batch_input_2cpu_nospin"),
                None => row,
            });
        }
        if let Some(pair) = &self.pair {
            for (name, floor, also, probe) in [
                (
                    "run_batch_input_2cpu",
                    "floor_shm_handoff",
                    Some("floor_pipe_rtt"),
                    &self.same_code_2cpu,
                ),
                (
                    "run_batch_input_2cpu_nospin",
                    "floor_pipe_rtt",
                    None,
                    &self.same_code_2cpu_nospin,
                ),
                (
                    "run_batch_input_2cpu_file",
                    "floor_shm_handoff",
                    Some("run_batch_input_2cpu"),
                    &self.same_code_2cpu_file,
                ),
            ] {
                let Some(same_code) = probe else { continue };
                let row = Measurement::new(name, Some(floor), move || {
                    // Untimed: the input before it, so that the timed one follows another
                    // as in a stream of inputs (a worker that spins goes back to blocking
                    // between this row's turns).
                    same_code.input()?;
                    time(|| same_code.input())
                })
                .on(pair)
                .waking();
                table.push(match also {
                    Some(also) => row.also(also),
                    None => row,
                });
            }
        }
        // The child alone on the pinned CPU, the host watching from another; on one CPU
        // the CPU-time fallback (`syscalls_in_child`).
        let watched = match WatchCpus::choose() {
            Some(_) => Placement::TwoCpus,
            None => Placement::OneCpu,
        };
        for (name, floor, confinement) in &self.syscalls {
            table.push(
                Measurement::new(name, *floor, move || {
                    let elapsed = syscalls_in_child(confinement, SYSCALLS_PER_SAMPLE)?;
                    Ok(elapsed.as_nanos() as f64 / SYSCALLS_PER_SAMPLE as f64)
                })
                .placed(watched),
            );
        }
        for (name, floor, filter) in &self.installs {
            table.push(Measurement::new(name, *floor, move || {
                Ok(install_in_child(filter)?.as_nanos() as f64)
            }));
        }
        if let Some(tiny) = &self.tiny {
            for (name, program) in &self.externals {
                let args = external_args(name, tiny.path());
                table.push(Measurement::new(
                    name,
                    Some("floor_fork_pipe_strict"),
                    move || time(|| run_external(program, &args)),
                ));
            }
        }
        if table.is_empty() {
            note(notes, progress, "no row could be measured".to_string());
        }
        table
    }
}

/// Warm-up (at least two full rounds, samples dropped, costs learned: a tenth of the budget),
/// then rounds until the budget is spent, each giving every row about [`SLOT`], in an order
/// shuffled anew each round so that no row always follows the same neighbour (a row that
/// forks leaves work behind, such as freeing its children, that the next one may pay for).
fn run_rounds(
    table: &mut [Measurement],
    budget: Duration,
    pinned_cpu: Option<usize>,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(&str),
) {
    let started = Instant::now();
    let warm_up = budget / 10;
    let pinned = pinned_cpu.map_or(String::new(), |cpu| format!(" (pinned to CPU {cpu})"));
    progress(&format!(
        "warming up {} rows for {:.1} s{pinned}",
        table.len(),
        warm_up.as_secs_f64(),
    ));
    let noted = notes.len();
    // Where a row measured on two CPUs puts the thread back.
    let home = pinned_cpu.map(|cpu| CpuSet::of([cpu]));
    let mut rounds = 0usize;
    while rounds < 2 || started.elapsed() < warm_up {
        for m in table.iter_mut() {
            let batch = m.warm_up_batch;
            m.samples(batch, true, home.as_ref(), notes);
        }
        rounds += 1;
    }
    for m in table.iter_mut() {
        m.plan(SLOT);
    }

    let measuring = Instant::now();
    let remaining = budget.saturating_sub(started.elapsed());
    progress(&format!(
        "measuring in interleaved rounds for {:.1} s",
        remaining.as_secs_f64()
    ));
    let (mut round, mut next_report) = (0usize, Duration::from_secs(5));
    let mut order: Vec<usize> = (0..table.len()).collect();
    let mut random = 0x9e37_79b9_7f4a_7c15u64;
    while measuring.elapsed() < remaining {
        // The samples grow the heap; give back what is free so that forks do not copy it.
        trim_heap();
        // Fisher-Yates with xorshift64: a fixed seed, so two runs shuffle alike.
        for i in (1..order.len()).rev() {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            order.swap(i, (random % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            let m = &mut table[i];
            // Offset by the row so that the rows sampled every few rounds take turns.
            if (round + i) % m.every == 0 {
                let count = m.per_round;
                m.samples(count, false, home.as_ref(), notes);
            }
        }
        round += 1;
        if measuring.elapsed() >= next_report {
            progress(&format!(
                "... {round} rounds, {:.0} s",
                measuring.elapsed().as_secs_f64()
            ));
            next_report += Duration::from_secs(5);
        }
    }
    for text in &notes[noted..] {
        progress(text);
    }
}

/// The value, or `None` after a note that `what` is left out and why.
fn kept<T>(
    what: &str,
    result: io::Result<T>,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(&str),
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            note(notes, progress, format!("{what} left out: {error}"));
            None
        }
    }
}

/// Tells `progress` and keeps the line for the report.
fn note(notes: &mut Vec<String>, progress: &mut dyn FnMut(&str), text: String) {
    progress(&text);
    notes.push(text);
}

/// Times `f` on the host's clock, in nanoseconds.
fn time<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<f64> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_nanos() as f64)
}

fn expect_42(rax: u64) -> io::Result<()> {
    match rax & 0xff {
        42 => Ok(()),
        other => Err(io::Error::other(format!(
            "the floor's guest returned {other}, not 42"
        ))),
    }
}

/// One `mov al,42; ret` job through [`crate::run`].
fn run_returns_42(options: &RunOptions) -> io::Result<()> {
    let report = crate::run(&RETURN_42, b"", options).map_err(io::Error::other)?;
    expect_returned_42(&report)
}

fn expect_returned_42(report: &crate::Report) -> io::Result<()> {
    match report.outcome {
        Outcome::Returned(regs) if regs.rax & 0xff == 42 => Ok(()),
        _ => Err(io::Error::other(format!(
            "the job ended {}",
            report.summary()
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// The machine.

impl Machine {
    /// What the machine says about itself; the run's own fields are left at defaults.
    pub fn detect() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let virtualized = cpuinfo
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|flag| flag == "hypervisor"));
        let hypervisor = std::process::Command::new("systemd-detect-virt")
            .arg("--vm")
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|name| !name.is_empty() && name != "none");
        let read = |path: &str| {
            fs::read_to_string(path)
                .map(|text| text.trim().to_string())
                .unwrap_or_else(|_| "unknown".to_string())
        };
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease"),
            clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
            virtualized,
            hypervisor,
            transparent_hugepages: transparent_hugepages(),
            pinned_cpu: None,
            second_cpu: None,
            load_average: load_average(),
            quick: false,
            seconds: 0.0,
            bytejail_version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// The selected value of /sys/kernel/mm/transparent_hugepage/enabled (`always`, `madvise`,
/// `never`), or `unavailable` when the kernel has no THP.
pub fn transparent_hugepages() -> String {
    fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|text| {
            let start = text.find('[')?;
            let end = text[start..].find(']')?;
            Some(text[start + 1..start + end].to_string())
        })
        .unwrap_or_else(|| "unavailable".to_string())
}

fn load_average() -> [f64; 3] {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [0; 3].map(|_| fields.next().unwrap_or(0.0))
}

/// A set of CPUs, as `sched_setaffinity(2)` takes it.
#[derive(Clone, Copy)]
struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// `sched_getaffinity(0)` - the CPUs the calling thread may run on.
    fn current() -> io::Result<CpuSet> {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
        match unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } {
            0 => Ok(CpuSet(set)),
            _ => Err(last_error()),
        }
    }

    fn of(cpus: impl IntoIterator<Item = usize>) -> CpuSet {
        // SAFETY: as above.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for cpu in cpus
            .into_iter()
            .filter(|&cpu| cpu < libc::CPU_SETSIZE as usize)
        {
            // SAFETY: `cpu` is below CPU_SETSIZE, inside the set.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        CpuSet(set)
    }

    fn cpus(&self) -> Vec<usize> {
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE, inside the set.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &self.0) })
            .collect()
    }

    /// `sched_setaffinity(0, set)` - move the calling thread onto these CPUs.
    fn apply(&self) -> io::Result<()> {
        // SAFETY: the kernel reads a valid set of the size given.
        match unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&self.0), &self.0) } {
            0 => Ok(()),
            _ => Err(last_error()),
        }
    }
}

/// `malloc_trim(0)` - hands the heap's free pages back to the kernel, so that the next fork
/// copies the page tables of live memory only. The criterion benches call it before each
/// sample: criterion's analysis between rows grows the heap, and every later fork would pay
/// for it (a few MiB of freed heap slow fork here by a third).
pub fn trim_heap() {
    // SAFETY: glibc's malloc_trim has no preconditions; it only releases free memory.
    unsafe { libc::malloc_trim(0) };
}

/// Pins the calling thread for good to the quietest CPU it may run on, as [`measure`] does for
/// its duration; the CPU, or `None` with only one CPU allowed or when it fails. For the
/// criterion benches, so that they measure in the same conditions as `bytejail bench`.
pub fn pin_to_quiet_cpu() -> Option<usize> {
    pin_to_one_cpu().map(|(cpu, _)| cpu)
}

/// Pins the calling thread to the last CPU it may run on (CPU 0 takes most interrupts), unless
/// another was clearly idler over the last [`QUIET_WINDOW`] (a quarter of that CPU's idle time
/// more): then to that one. Returns the CPU and the previous set. `None` with only one CPU
/// allowed or when it fails.
///
/// Not always the last CPU: on a shared machine other benchmarks pin themselves there too (seen
/// here: another process kept CPU 1 100% busy in the kernel, and every row pinned there
/// doubled). Not simply the idlest either: on a quiet machine that is a coin toss between CPUs
/// whose speeds differ (by a fifth to a third here), and two runs would not agree.
fn pin_to_one_cpu() -> Option<(usize, CpuSet)> {
    let previous = CpuSet::current().ok()?;
    let allowed = previous.cpus();
    if allowed.len() < 2 {
        return None;
    }
    *ALLOWED_BEFORE_PIN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = allowed.clone();
    let before = idle_ticks();
    std::thread::sleep(QUIET_WINDOW);
    let after = idle_ticks();
    let idle = |cpu: usize| match (before.get(&cpu), after.get(&cpu)) {
        (Some(b), Some(a)) => a.saturating_sub(*b),
        _ => 0,
    };
    let last = *allowed.last()?;
    let idlest = allowed.iter().copied().max_by_key(|&cpu| idle(cpu))?;
    let cpu = if idle(idlest) > idle(last) + idle(idlest) / 4 {
        idlest
    } else {
        last
    };
    CpuSet::of([cpu]).apply().is_ok().then_some((cpu, previous))
}

/// The CPUs the thread [`pin_to_one_cpu`] pinned last could run on before (empty before any).
static ALLOWED_BEFORE_PIN: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// The CPUs a thread whose affinity is `current` may spread to: `current` itself, unless that
/// is the one CPU [`pin_to_one_cpu`] pinned it to, then the CPUs it had before. A process kept
/// to one CPU from outside stays there.
fn allowed_before_pin(current: &CpuSet) -> Vec<usize> {
    let cpus = current.cpus();
    let before = ALLOWED_BEFORE_PIN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match cpus.as_slice() {
        [one] if before.contains(one) => before,
        _ => cpus,
    }
}

/// How long [`pin_to_one_cpu`] watches the CPUs' idle time.
const QUIET_WINDOW: Duration = Duration::from_millis(200);

/// The CPU `measure` pinned the thread to and a second one, for the rows measured on two
/// CPUs (`floor_shm_handoff`, `run_batch_input_2cpu*`).
#[derive(Clone, Copy)]
struct CpuPair {
    /// The pinned CPU, where the other rows run.
    home: CpuSet,
    /// The second CPU.
    other: usize,
    /// Both.
    both: CpuSet,
}

impl CpuPair {
    /// `pinned` and the next CPU after it in `allowed` (wrapping around), skipping `pinned`'s
    /// SMT siblings while another CPU is left: two hardware threads of one core share its
    /// caches, and a cache line handed between them is not what two CPUs usually cost. Or
    /// why there is none.
    fn choose(pinned: usize, allowed: &CpuSet) -> Result<CpuPair, String> {
        let siblings = fs::read_to_string(format!(
            "/sys/devices/system/cpu/cpu{pinned}/topology/thread_siblings_list"
        ))
        .map(|text| parse_cpu_list(&text))
        .unwrap_or_default();
        let cpus = allowed.cpus();
        let after = cpus.iter().filter(|&&cpu| cpu > pinned);
        let before = cpus.iter().filter(|&&cpu| cpu < pinned);
        let others: Vec<usize> = after.chain(before).copied().collect();
        let other = others
            .iter()
            .find(|cpu| !siblings.contains(cpu))
            .or(others.first())
            .copied()
            .ok_or_else(|| {
                format!(
                    "this process may run on CPU {pinned} only, and a spinning hand-off needs \
                     two CPUs"
                )
            })?;
        Ok(CpuPair {
            home: CpuSet::of([pinned]),
            other,
            both: CpuSet::of([pinned, other]),
        })
    }

    /// Runs `f` with the thread allowed on both CPUs (a process it forks inherits that), then
    /// puts it back on the pinned one.
    fn with_both<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        self.both.apply()?;
        let result = f();
        // Failing leaves the thread on two CPUs for the next rows, which is harmless.
        let _ = self.home.apply();
        result
    }
}

/// Idle plus iowait ticks of each CPU, from /proc/stat (empty if unreadable).
fn idle_ticks() -> std::collections::HashMap<usize, u64> {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            // user nice system idle iowait ...
            let ticks: Vec<u64> = fields.take(5).filter_map(|f| f.parse().ok()).collect();
            Some((cpu, ticks.get(3)? + ticks.get(4)?))
        })
        .collect()
}

fn unpin(previous: &CpuSet) {
    // Failing leaves the thread pinned, which is harmless.
    let _ = previous.apply();
}

/// CPUs listed in a sysfs CPU list such as `0-3,6,8-9`.
fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|part| !part.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            cpus.extend(first..=last);
        }
    }
    cpus
}

/// Where a `syscall_*` child runs (alone) and where the host watches it from: the calling
/// thread's last CPU for the child, and any other CPU the process may use that is not its SMT
/// sibling for the host. `None` where the process may use one CPU only.
struct WatchCpus {
    child: CpuSet,
    observer: CpuSet,
    previous: CpuSet,
}

impl WatchCpus {
    fn choose() -> Option<WatchCpus> {
        let previous = CpuSet::current().ok()?;
        let child_cpu = *previous.cpus().last()?;
        let read_list = |path: String| {
            fs::read_to_string(path)
                .map(|text| parse_cpu_list(&text))
                .unwrap_or_default()
        };
        let siblings = read_list(format!(
            "/sys/devices/system/cpu/cpu{child_cpu}/topology/thread_siblings_list"
        ));
        // Pinned by `measure`: watch from another CPU the process had before.
        let mut candidates = allowed_before_pin(&previous);
        candidates.retain(|&cpu| cpu != child_cpu);
        let apart: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|cpu| !siblings.contains(cpu))
            .collect();
        let observer = if apart.is_empty() { candidates } else { apart };
        (!observer.is_empty()).then(|| WatchCpus {
            child: CpuSet::of([child_cpu]),
            observer: CpuSet::of(observer),
            previous,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Probes: each takes one sample of one quantity. Public for the criterion benches.
//
// Children forked here run only raw syscalls on data built before the fork, and leave with raw
// `SYS_exit`: they never allocate, lock, unwind or return (a forked copy of a multi-threaded
// process may hold locks that no thread will ever release).

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// `waitpid(pid, &status, 0)`, retried on EINTR; the wait status.
fn reap(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(status);
        }
        let error = last_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Reaps `pid` and insists it exited with status 0.
fn reap_clean(pid: libc::pid_t, what: &str) -> io::Result<()> {
    let status = reap(pid)?;
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if libc::WIFSIGNALED(status) {
        Err(io::Error::other(format!(
            "{what}: the child died of signal {}",
            libc::WTERMSIG(status)
        )))
    } else {
        Err(io::Error::other(format!(
            "{what}: the child exited with status {}",
            libc::WEXITSTATUS(status)
        )))
    }
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads exactly `buf.len()` bytes, retrying on EINTR; `Ok(false)` at end of file.
fn read_exact(fd: RawFd, buf: &mut [u8]) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the kernel writes at most the rest of `buf`.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        match n {
            0 => return Ok(false),
            n if n > 0 => done += n as usize,
            _ => {
                let error = last_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(true)
}

/// `fork()`; in the child, runs `child`, which should leave with [`raw::exit`] (if it returns,
/// the child exits with status 127).
///
/// # Safety
/// `child` runs in a copy of this process in which only the calling thread exists: it may only
/// make raw syscalls on data built before the fork (no allocation, no locks, no unwinding).
unsafe fn fork_then(child: impl FnOnce()) -> io::Result<libc::pid_t> {
    // SAFETY: the caller vouches for the child path; the parent continues normally.
    match unsafe { libc::fork() } {
        -1 => Err(last_error()),
        0 => {
            child();
            // A child path that forgot to leave never returns into the caller's frames.
            raw::exit(127)
        }
        pid => Ok(pid),
    }
}

/// `fork()` + `_exit(0)` + `waitpid`: what a fresh process costs at this host's size.
pub fn fork_exit_wait() -> io::Result<()> {
    // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    let pid = unsafe { fork_then(|| libc::_exit(0)) }?;
    reap_clean(pid, "fork")
}

/// `vfork()` + `_exit` + `waitpid`: no copy of the page tables; the parent sleeps until the
/// child is gone.
pub fn vfork_exit_wait() -> io::Result<()> {
    let ret: i64;
    // SAFETY: vfork shares this address space and stack with the child and suspends this
    // thread until the child exits. The child runs only the three instructions after the
    // syscall, which touch no memory, and leaves with SYS_exit; `syscall` clobbers rcx, r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov eax, 60",
            "xor edi, edi",
            "syscall",
            "2:",
            inlateout("rax") libc::SYS_vfork => ret,
            lateout("rdi") _, lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    reap_clean(ret as libc::pid_t, "vfork")
}

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3({CLONE_PIDFD})` + `SYS_exit` + `waitid(P_PIDFD)`: fork as bytejail does it, with a
/// pidfd to wait on (no pid-reuse race).
pub fn clone3_pidfd_exit_wait() -> io::Result<()> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: no stack given, so the child continues on a copy of this one, exactly as after
    // fork(); it only calls SYS_exit. The kernel writes the pidfd through a valid pointer.
    let ret = unsafe {
        raw::syscall3(
            libc::SYS_clone3,
            &args as *const CloneArgs as usize,
            std::mem::size_of::<CloneArgs>(),
            0,
        )
    };
    if ret == 0 {
        raw::exit(0);
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    // SAFETY: on success the kernel stored a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: siginfo_t is plain data; `info` is a valid out-pointer.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits on our own child through its pidfd.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let error = last_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// A tiny static executable that only calls `exit_group(0)`: 129 bytes of ELF written by hand,
/// so no toolchain is needed. Deleted when dropped.
#[derive(Debug)]
pub struct TinyProgram {
    path: tempfile::TempPath,
    c_path: CString,
}

impl TinyProgram {
    /// The ELF image: one header, one read+execute `PT_LOAD` segment at 0x400000, then
    /// `xor edi, edi; mov eax, 231; syscall`.
    pub fn image() -> Vec<u8> {
        const BASE: u64 = 0x40_0000;
        const CODE: [u8; 9] = [0x31, 0xff, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05];
        let size = (64 + 56 + CODE.len()) as u64;
        let mut elf = Vec::with_capacity(size as usize);
        elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"); // 64-bit, LE, SysV
        elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
        elf.extend_from_slice(&62u16.to_le_bytes()); // e_machine: x86-64
        elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
        elf.extend_from_slice(&(BASE + 64 + 56).to_le_bytes()); // e_entry: the code
        elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
        elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        for half in [64u16, 56, 1, 64, 0, 0] {
            // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
            elf.extend_from_slice(&half.to_le_bytes());
        }
        elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
        elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R+X
        elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
        elf.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
        elf.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
        elf.extend_from_slice(&size.to_le_bytes()); // p_filesz
        elf.extend_from_slice(&size.to_le_bytes()); // p_memsz
        elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
        elf.extend_from_slice(&CODE);
        elf
    }

    /// Writes the program into `dir` (mode 0755) and checks that it runs.
    pub fn create_in(dir: &Path) -> io::Result<TinyProgram> {
        let mut file = tempfile::Builder::new()
            .prefix("bytejail-exit0-")
            .tempfile_in(dir)?;
        file.write_all(&Self::image())?;
        file.as_file()
            .set_permissions(fs::Permissions::from_mode(0o755))?;
        // Closing the descriptor before any exec: an executable open for writing is ETXTBSY.
        let path = file.into_temp_path();
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
        let program = TinyProgram { path, c_path };
        program.spawn_wait().map_err(|error| {
            io::Error::other(format!(
                "{} does not run: {error}",
                program.path().display()
            ))
        })?;
        Ok(program)
    }

    /// Where the program is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `posix_spawn` + `waitpid`: glibc spawns with `clone(CLONE_VM | CLONE_VFORK)` then
    /// `execve`s the program.
    pub fn spawn_wait(&self) -> io::Result<()> {
        let argv = [
            self.c_path.as_ptr() as *mut libc::c_char,
            std::ptr::null_mut(),
        ];
        let envp = [std::ptr::null_mut::<libc::c_char>()];
        let mut pid = 0;
        // SAFETY: the path and argv are NUL-terminated and outlive the call; null file
        // actions and attributes mean the defaults.
        let r = unsafe {
            libc::posix_spawn(
                &mut pid,
                self.c_path.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        reap_clean(pid, "posix_spawn")
    }
}

/// A function in an executable mapping, called by the floor's child.
#[derive(Debug)]
pub struct GuestFunction {
    map: memmap2::Mmap,
}

impl GuestFunction {
    /// Maps `code`, which must be a complete function returning in rax, read+execute.
    pub fn new(code: &[u8]) -> io::Result<GuestFunction> {
        let mut map = memmap2::MmapMut::map_anon(code.len().max(1))?;
        map[..code.len()].copy_from_slice(code);
        Ok(GuestFunction {
            map: map.make_exec()?,
        })
    }

    fn entry(&self) -> extern "C" fn() -> u64 {
        // SAFETY: the mapping is executable and holds a complete function (the constructor's
        // contract); it lives as long as `self`.
        unsafe { std::mem::transmute::<*const u8, extern "C" fn() -> u64>(self.map.as_ptr()) }
    }
}

/// The floor of every fork-per-job strict sandbox, written directly against libc with nothing
/// else: `pipe2`, `fork`; in the child strict mode, the guest, `write` its rax, `SYS_exit`; in
/// the parent `read` the 8 bytes, `waitpid`. Returns the guest's rax.
pub fn floor_fork_pipe_strict(guest: &GuestFunction) -> io::Result<u64> {
    let (from_child, to_parent) = pipe()?;
    let code = guest.entry();
    let out = to_parent.as_raw_fd();
    // SAFETY: the child makes raw syscalls and calls the guest, which touches only registers.
    let pid = unsafe {
        fork_then(|| {
            raw::syscall3(
                libc::SYS_prctl,
                libc::PR_SET_SECCOMP as usize,
                libc::SECCOMP_MODE_STRICT as usize,
                0,
            );
            let rax = code();
            raw::syscall3(
                libc::SYS_write,
                out as usize,
                &rax as *const u64 as usize,
                8,
            );
            raw::exit(0)
        })
    }?;
    drop(to_parent);
    let mut rax = [0u8; 8];
    let complete = read_exact(from_child.as_raw_fd(), &mut rax);
    reap_clean(pid, "floor_fork_pipe_strict")?;
    match complete? {
        true => Ok(u64::from_le_bytes(rax)),
        false => Err(io::Error::other("the floor's child wrote no result")),
    }
}

/// A child parked in strict mode that echoes each byte from fd 0 to fd 1: the floor of any
/// pool of pre-forked workers. Dropping it closes its input, and it exits.
#[derive(Debug)]
pub struct ParkedWorker {
    pid: libc::pid_t,
    to_worker: Option<OwnedFd>,
    from_worker: OwnedFd,
}

impl ParkedWorker {
    /// Forks the worker: `dup2` the pipes onto 0 and 1, close everything else, die with the
    /// parent, enter strict mode, then loop `read(0, 1)` / `write(1, 1)` until EOF.
    pub fn start() -> io::Result<ParkedWorker> {
        let (worker_in, to_worker) = pipe()?;
        let (from_worker, worker_out) = pipe()?;
        let (input, output) = (worker_in.as_raw_fd(), worker_out.as_raw_fd());
        // SAFETY: the child makes raw syscalls on integers and a stack byte only.
        let pid = unsafe {
            fork_then(|| {
                raw::syscall3(libc::SYS_dup2, input as usize, 0, 0);
                raw::syscall3(libc::SYS_dup2, output as usize, 1, 0);
                raw::syscall3(libc::SYS_close_range, 2, u32::MAX as usize, 0);
                raw::syscall3(libc::SYS_prctl, libc::PR_SET_PDEATHSIG as usize, 9, 0);
                raw::syscall3(
                    libc::SYS_prctl,
                    libc::PR_SET_SECCOMP as usize,
                    libc::SECCOMP_MODE_STRICT as usize,
                    0,
                );
                let mut byte = 0u8;
                let at = &mut byte as *mut u8 as usize;
                while raw::syscall3(libc::SYS_read, 0, at, 1) == 1 {
                    raw::syscall3(libc::SYS_write, 1, at, 1);
                }
                raw::exit(0)
            })
        }?;
        Ok(ParkedWorker {
            pid,
            to_worker: Some(to_worker),
            from_worker,
        })
    }

    /// Sleeps until the worker is blocked reading its first byte (`/proc/PID/stat` says `S`:
    /// strict mode and that read are all it does), at most a second.
    pub fn wait_until_parked(&self) -> io::Result<()> {
        let stat = format!("/proc/{}/stat", self.pid);
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let text = fs::read_to_string(&stat)?;
            // The state is the field after the command's closing parenthesis.
            let state = text
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            if state == Some('S') {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other("the parked worker never blocked"));
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    /// One byte there and back.
    pub fn round_trip(&self) -> io::Result<()> {
        let to = self.to_worker.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        // SAFETY: writes one byte from a valid buffer.
        if unsafe { libc::write(to, [42u8].as_ptr().cast(), 1) } != 1 {
            return Err(last_error());
        }
        let mut byte = [0u8];
        match read_exact(self.from_worker.as_raw_fd(), &mut byte)? {
            true => Ok(()),
            false => Err(io::Error::other("the parked worker is gone")),
        }
    }
}

impl Drop for ParkedWorker {
    fn drop(&mut self) {
        drop(self.to_worker.take());
        let _ = reap(self.pid);
    }
}

/// The floor of a spinning hand-off between two processes (`floor_shm_handoff`): a child on
/// another CPU than the measuring thread's, sharing one 64-byte cache line of `MAP_SHARED`
/// anonymous memory with it. The host writes a sequence number into the line's first word;
/// the child, spinning on it with `pause`, writes it back into the second; the host spins
/// until it sees it there. No syscall on either side: what is left is the line crossing
/// between the two CPUs' caches, there and back. On one CPU it cannot work at all (each side
/// would spin away the time slice the other needs), so it is never measured there.
///
/// Neither side spins unbounded. The child, after [`SHM_LOOKS`] looks without a new number,
/// marks itself asleep (the line's third word) and blocks reading a doorbell pipe, which the
/// host rings when it finds it asleep: between this row's samples it leaves its CPU to the
/// rows measured meanwhile (the `syscall_*` rows' host watches from that CPU). The host
/// gives up after [`SHM_ANSWER_WAIT`]. The child dies with the host (`PR_SET_PDEATHSIG`),
/// and is killed when this is dropped.
#[derive(Debug)]
pub struct ShmHandoff {
    shared: SharedPage,
    doorbell: Option<OwnedFd>,
    pid: libc::pid_t,
    sequence: std::cell::Cell<u64>,
}

/// Words of the shared line: the host's number, the child's echo of it, the child's state.
const SHM_NUMBER: usize = 0;
const SHM_ECHO: usize = 1;
const SHM_STATE: usize = 2;
/// `SHM_STATE`: the child is about to block, or blocked, on the doorbell.
const SHM_ASLEEP: u64 = 1;
const SHM_AWAKE: u64 = 0;

/// Looks at the line (each followed by a `pause`) after which the child without a new number
/// goes to sleep on the doorbell: about 20 µs on the Intel Xeon VM of docs/costs.md (2,048
/// `pause`s took 22 µs there), far longer than the gap between two samples of the row, far
/// shorter than the other rows measured before its next turn.
pub const SHM_LOOKS: u32 = 2048;

/// How long the host spins for the child's answer before it gives up on the row.
pub const SHM_ANSWER_WAIT: Duration = Duration::from_secs(1);

impl ShmHandoff {
    /// Forks the child, moves it to `child_cpu` (the host stays where it is: call this from
    /// another CPU), and takes one round trip.
    pub fn start(child_cpu: usize) -> io::Result<ShmHandoff> {
        let shared = SharedPage::new()?;
        let (bell_in, doorbell) = pipe()?;
        // The host never waits on the doorbell: a full pipe (it cannot fill: a byte is only
        // written to wake a child, which reads one before it sleeps again) must not block it.
        // SAFETY: fcntl on a descriptor this function owns.
        if unsafe { libc::fcntl(doorbell.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            return Err(last_error());
        }
        let line = shared.line();
        let host = std::process::id() as isize;
        let child_cpus = CpuSet::of([child_cpu]).0;
        let bell_in_fd = bell_in.as_raw_fd() as usize;
        let mut byte = 0u8;
        let at = &mut byte as *mut u8 as usize;
        // SAFETY: the child makes raw syscalls on integers and data built before the fork (its
        // CPU set, a stack byte), atomic loads and stores on the shared line, and `pause`.
        let pid = unsafe {
            fork_then(|| {
                // The doorbell's read end as fd 0 and nothing else: no end of another pipe
                // of the host's (a parked worker's input, say) stays open here, and the host
                // closing the doorbell (or dying) is end of file.
                raw::syscall3(libc::SYS_dup2, bell_in_fd, 0, 0);
                raw::syscall3(libc::SYS_close_range, 1, u32::MAX as usize, 0);
                raw::syscall3(
                    libc::SYS_prctl,
                    libc::PR_SET_PDEATHSIG as usize,
                    libc::SIGKILL as usize,
                    0,
                );
                // The host may have died before the line above: then nobody would kill us.
                if raw::syscall3(libc::SYS_getppid, 0, 0, 0) != host
                    || raw::syscall3(
                        libc::SYS_sched_setaffinity,
                        0,
                        std::mem::size_of::<libc::cpu_set_t>(),
                        &child_cpus as *const libc::cpu_set_t as usize,
                    ) != 0
                {
                    raw::exit(3);
                }
                let mut seen = 0u64;
                loop {
                    let mut looks = 0u32;
                    while looks < SHM_LOOKS {
                        let number = line[SHM_NUMBER].load(Ordering::Acquire);
                        if number != seen {
                            seen = number;
                            line[SHM_ECHO].store(number, Ordering::Release);
                            looks = 0;
                        } else {
                            looks += 1;
                            std::hint::spin_loop();
                        }
                    }
                    // Say "asleep" before the last look: the host stores its number before
                    // it looks at the state (both sequentially consistent), so either this
                    // look sees the number or the host sees "asleep" and rings.
                    line[SHM_STATE].store(SHM_ASLEEP, Ordering::SeqCst);
                    if line[SHM_NUMBER].load(Ordering::SeqCst) == seen
                        && raw::syscall3(libc::SYS_read, 0, at, 1) != 1
                    {
                        // End of file: the host dropped the doorbell.
                        raw::exit(0);
                    }
                    line[SHM_STATE].store(SHM_AWAKE, Ordering::SeqCst);
                }
            })
        }?;
        drop(bell_in);
        let handoff = ShmHandoff {
            shared,
            doorbell: Some(doorbell),
            pid,
            sequence: std::cell::Cell::new(0),
        };
        handoff.round_trip()?;
        Ok(handoff)
    }

    /// One number there and back. A child that went to sleep since the last one is rung
    /// awake first, which costs a wake-up on its CPU: time a round trip that follows another.
    pub fn round_trip(&self) -> io::Result<()> {
        let line = self.shared.line();
        let number = self.sequence.get() + 1;
        self.sequence.set(number);
        line[SHM_NUMBER].store(number, Ordering::SeqCst);
        if line[SHM_STATE].load(Ordering::SeqCst) == SHM_ASLEEP {
            let bell = self.doorbell.as_ref().map_or(-1, |fd| fd.as_raw_fd());
            // SAFETY: writes one byte from a valid buffer. EAGAIN would mean bytes are
            // already waiting for the child: it wakes without this one.
            unsafe { libc::write(bell, [1u8].as_ptr().cast(), 1) };
        }
        let started = Instant::now();
        let mut looks = 0u32;
        while line[SHM_ECHO].load(Ordering::Acquire) != number {
            std::hint::spin_loop();
            looks = looks.wrapping_add(1);
            if looks % 1024 == 0 && started.elapsed() > SHM_ANSWER_WAIT {
                let why = match exited(self.pid) {
                    Ok(true) => "it is gone".to_string(),
                    _ => format!("it did not answer within {SHM_ANSWER_WAIT:?}"),
                };
                return Err(io::Error::other(format!("the spinning child: {why}")));
            }
        }
        Ok(())
    }
}

impl Drop for ShmHandoff {
    fn drop(&mut self) {
        // SAFETY: our own child, not reaped yet, so the pid is still its.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        drop(self.doorbell.take());
        let _ = reap(self.pid);
    }
}

/// How a `syscall_*` child confines itself before it starts counting.
#[derive(Debug)]
pub enum Confinement {
    /// No seccomp.
    None,
    /// Strict mode.
    Strict,
    /// A seccomp-bpf filter, with `no_new_privs`.
    Filter(Vec<libc::sock_filter>),
}

impl Confinement {
    /// A filter confinement; fails if the program is too long for `sock_fprog`.
    pub fn filter(filter: &Filter) -> io::Result<Confinement> {
        let program = sock_filters(filter);
        match u16::try_from(program.len()) {
            Ok(_) => Ok(Confinement::Filter(program)),
            Err(_) => Err(io::Error::other(format!(
                "the filter has {} instructions; sock_fprog holds at most 65535",
                program.len()
            ))),
        }
    }
}

fn sock_filters(filter: &Filter) -> Vec<libc::sock_filter> {
    filter
        .program()
        .iter()
        .map(|insn| libc::sock_filter {
            code: insn.code,
            jt: insn.jt,
            jf: insn.jf,
            k: insn.k,
        })
        .collect()
}

/// Enters `confinement` (raw syscalls only: called in a child). Returns the kernel's result.
fn confine(confinement: &Confinement, fprog: &libc::sock_fprog) -> isize {
    match confinement {
        Confinement::None => 0,
        // SAFETY: prctl with integer arguments.
        Confinement::Strict => unsafe {
            raw::syscall3(
                libc::SYS_prctl,
                libc::PR_SET_SECCOMP as usize,
                libc::SECCOMP_MODE_STRICT as usize,
                0,
            )
        },
        Confinement::Filter(_) => {
            // SAFETY: prctl with integer arguments; seccomp reads a valid sock_fprog whose
            // program was built before the fork.
            unsafe {
                raw::syscall6(
                    libc::SYS_prctl,
                    libc::PR_SET_NO_NEW_PRIVS as usize,
                    1,
                    0,
                    0,
                    0,
                    0,
                );
                raw::syscall3(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER as usize,
                    0,
                    fprog as *const libc::sock_fprog as usize,
                )
            }
        }
    }
}

fn fprog(confinement: &Confinement) -> libc::sock_fprog {
    match confinement {
        Confinement::Filter(program) => libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        },
        _ => libc::sock_fprog {
            len: 0,
            filter: std::ptr::null_mut(),
        },
    }
}

/// The time `count` calls of `write(/dev/null, buf, 0)` take under `confinement`, in a forked
/// child that confines itself first.
///
/// Strict mode disables the TSC, so the child cannot time itself. Instead it runs alone on one
/// CPU while the host watches from another, spinning on a shared flag that the child sets
/// (with a plain store, no syscall) just before and just after its loop: the host's clock
/// around exactly the calls, with no wake-up latency in it. On a machine with one usable CPU
/// the fallback is [`syscalls_cpu_time`].
///
/// A sample in which the host was not watching when the flag changed (it was preempted, say:
/// its checks were more than `PUNCTUAL` apart) is taken again, up to `ATTEMPTS` times.
pub fn syscalls_in_child(confinement: &Confinement, count: u64) -> io::Result<Duration> {
    let Some(cpus) = WatchCpus::choose() else {
        return syscalls_cpu_time(confinement, count);
    };
    for _ in 0..ATTEMPTS {
        if let Some(elapsed) = syscalls_watched(confinement, count, &cpus)? {
            return Ok(elapsed);
        }
    }
    Err(io::Error::other(format!(
        "the host was preempted while watching {ATTEMPTS} times in a row: the machine is too \
         busy to time a syscall"
    )))
}

/// Largest gap between two of the host's looks at the flag for a change to count as seen on
/// time: the error it allows is small next to a loop of milliseconds.
const PUNCTUAL: Duration = Duration::from_micros(10);
/// Attempts at an undisturbed `syscall_*` sample.
const ATTEMPTS: usize = 20;

/// States of the flag a `syscall_*` child shares with the host.
const LOOP_STARTED: u32 = 1;
const LOOP_DONE: u32 = 2;

fn syscalls_watched(
    confinement: &Confinement,
    count: u64,
    cpus: &WatchCpus,
) -> io::Result<Option<Duration>> {
    let shared = SharedPage::new()?;
    let flag = shared.flag();
    let devnull = fs::OpenOptions::new().write(true).open("/dev/null")?;
    let (go_in, go) = pipe()?;
    let program = fprog(confinement);
    let (null_fd, go_fd) = (devnull.as_raw_fd() as usize, go_in.as_raw_fd() as usize);
    let child_cpus = cpus.child.0;
    let mut byte = 0u8;
    let at = &mut byte as *mut u8 as usize;
    // SAFETY: before confining itself the child makes raw syscalls on data built before the
    // fork (its CPU set, the go pipe); then the loop, and plain stores to the shared page.
    let pid = unsafe {
        fork_then(|| {
            let set = &child_cpus as *const libc::cpu_set_t as usize;
            raw::syscall3(
                libc::SYS_sched_setaffinity,
                0,
                std::mem::size_of::<libc::cpu_set_t>(),
                set,
            );
            // Wait until the host has moved to its own CPU.
            if raw::syscall3(libc::SYS_read, go_fd, at, 1) != 1
                || confine(confinement, &program) != 0
            {
                raw::exit(3);
            }
            flag.store(LOOP_STARTED, Ordering::Release);
            let mut left = count;
            while left > 0 {
                raw::syscall3(libc::SYS_write, null_fd, at, 0);
                left -= 1;
            }
            flag.store(LOOP_DONE, Ordering::Release);
            raw::exit(0)
        })
    }?;
    let watched = cpus.observer.apply().and_then(|()| {
        // SAFETY: writes one byte from a valid buffer.
        if unsafe { libc::write(go.as_raw_fd(), [1u8].as_ptr().cast(), 1) } != 1 {
            return Err(last_error());
        }
        watch(flag, pid)
    });
    // Back where `measure` pinned us (a failure leaves the thread watching from elsewhere).
    let _ = cpus.previous.apply();
    drop(go);
    reap_clean(pid, "syscall child")?;
    watched
}

/// Spins on `flag` until the child's loop is done; the time from the moment it was seen to
/// start to the moment it was seen to end, or `None` if either change was not seen on time.
/// Fails if the child exits without finishing its loop.
fn watch(flag: &AtomicU32, pid: libc::pid_t) -> io::Result<Option<Duration>> {
    let mut last = Instant::now();
    let mut started = None;
    let mut spins = 0u32;
    loop {
        let state = flag.load(Ordering::Acquire);
        let now = Instant::now();
        let punctual = now - last <= PUNCTUAL;
        match (state, started) {
            (LOOP_STARTED, None) if punctual => started = Some(now),
            (LOOP_STARTED, None) | (LOOP_DONE, None) => return Ok(None),
            (LOOP_DONE, Some(started)) => return Ok(punctual.then(|| now - started)),
            _ => {}
        }
        last = now;
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % (1 << 14) == 0 && exited(pid)? && flag.load(Ordering::Acquire) != LOOP_DONE {
            return Err(io::Error::other("the syscall child stopped early"));
        }
    }
}

/// `waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)` - whether the child has ended, without
/// reaping it.
fn exited(pid: libc::pid_t) -> io::Result<bool> {
    // SAFETY: siginfo_t is plain data; all-zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: a valid out-pointer; queries our own child.
    if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) } != 0 {
        return Err(last_error());
    }
    // SAFETY: waitid filled `info` (si_pid stays 0 when no child changed state).
    Ok(unsafe { info.si_pid() } != 0)
}

/// One page of memory shared with forked children (`MAP_SHARED | MAP_ANONYMOUS`).
#[derive(Debug)]
struct SharedPage {
    addr: std::ptr::NonNull<libc::c_void>,
}

impl SharedPage {
    fn new() -> io::Result<SharedPage> {
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match std::ptr::NonNull::new(addr).filter(|_| addr != libc::MAP_FAILED) {
            Some(addr) => Ok(SharedPage { addr }),
            None => Err(last_error()),
        }
    }

    /// The page's first 64 bytes, one cache line, as eight words (zero-filled at first).
    fn line(&self) -> &[AtomicU64; 8] {
        // SAFETY: the page is mapped read+write, page-aligned and zeroed for as long as `self`
        // lives; atomics may alias memory another process writes atomically.
        unsafe { &*self.addr.as_ptr().cast::<[AtomicU64; 8]>() }
    }

    /// The flag at the start of the page (zero-filled, so initially 0).
    fn flag(&self) -> &AtomicU32 {
        // SAFETY: the page is mapped read+write, aligned and zeroed for as long as `self`
        // lives; an AtomicU32 may alias memory another process writes atomically.
        unsafe { &*self.addr.as_ptr().cast::<AtomicU32>() }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the page `new` mapped; no reference to it outlives `self`.
        unsafe { libc::munmap(self.addr.as_ptr(), 4096) };
    }
}

/// The fallback of [`syscalls_in_child`] on one CPU: the CPU time (user + system, from
/// `wait4`) of a child that confines itself, makes the calls and exits, minus that of a child
/// that makes none. Less exact: the kernel charges deferred work it does meanwhile (freeing
/// earlier children, say) to whichever task is running.
pub fn syscalls_cpu_time(confinement: &Confinement, count: u64) -> io::Result<Duration> {
    let with_calls = child_cpu_time(confinement, count)?;
    let without = child_cpu_time(confinement, 0)?;
    Ok(with_calls.saturating_sub(without))
}

/// The CPU time of a child that enters `confinement`, makes `count` calls of
/// `write(/dev/null, buf, 0)` and exits.
fn child_cpu_time(confinement: &Confinement, count: u64) -> io::Result<Duration> {
    let devnull = fs::OpenOptions::new().write(true).open("/dev/null")?;
    let program = fprog(confinement);
    let null_fd = devnull.as_raw_fd() as usize;
    let byte = [0u8];
    let at = byte.as_ptr() as usize;
    // SAFETY: the child makes raw syscalls on integers and data built before the fork.
    let pid = unsafe {
        fork_then(|| {
            if confine(confinement, &program) != 0 {
                raw::exit(3);
            }
            let mut left = count;
            while left > 0 {
                raw::syscall3(libc::SYS_write, null_fd, at, 0);
                left -= 1;
            }
            raw::exit(0)
        })
    }?;
    drop(devnull);
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status = 0;
    loop {
        // SAFETY: valid out-pointers; waits for our own child.
        if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } == pid {
            break;
        }
        let error = last_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(io::Error::other(format!(
            "the syscall child failed (wait status {status:#x})"
        )));
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok(Duration::from_micros(
        micros(usage.ru_utime) + micros(usage.ru_stime),
    ))
}

/// Forks a child that sets `no_new_privs` and installs `filter`, timing the `seccomp` call on
/// its own clock (filter mode leaves the TSC on, so the vDSO clock needs no syscall), and
/// reports the time through a pipe.
pub fn install_in_child(filter: &Filter) -> io::Result<Duration> {
    let confinement = Confinement::filter(filter)?;
    let program = fprog(&confinement);
    let (from_child, to_parent) = pipe()?;
    let out = to_parent.as_raw_fd() as usize;
    // SAFETY: the child makes raw syscalls and vDSO clock reads (async-signal-safe) on data
    // built before the fork.
    let pid = unsafe {
        fork_then(|| {
            let mut t0: libc::timespec = std::mem::zeroed();
            let mut t1: libc::timespec = std::mem::zeroed();
            raw::syscall6(
                libc::SYS_prctl,
                libc::PR_SET_NO_NEW_PRIVS as usize,
                1,
                0,
                0,
                0,
                0,
            );
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t0);
            let r = raw::syscall3(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as usize,
                0,
                &program as *const libc::sock_fprog as usize,
            );
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t1);
            let ns = (t1.tv_sec.wrapping_sub(t0.tv_sec) as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(t1.tv_nsec as u64)
                .wrapping_sub(t0.tv_nsec as u64);
            let report = [ns, r as u64];
            raw::syscall3(libc::SYS_write, out, report.as_ptr() as usize, 16);
            raw::exit(0)
        })
    }?;
    drop(to_parent);
    let mut report = [0u8; 16];
    let complete = read_exact(from_child.as_raw_fd(), &mut report);
    reap_clean(pid, "filter install child")?;
    if !complete? {
        return Err(io::Error::other("the filter install child wrote no result"));
    }
    let ns = u64::from_le_bytes(report[..8].try_into().unwrap_or_default());
    let r = i64::from_le_bytes(report[8..].try_into().unwrap_or_default());
    if r != 0 {
        return Err(io::Error::other(format!(
            "seccomp(SECCOMP_SET_MODE_FILTER) failed: {}",
            io::Error::from_raw_os_error(-r as i32)
        )));
    }
    Ok(Duration::from_nanos(ns))
}

/// Where the measured `write` rule sits in an allow list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RulePosition {
    /// The first rule of the list.
    First,
    /// The last rule of the list: every other rule is checked before it.
    Last,
}

/// An allow list of `rules` rules, compiled by bytejail's own compiler: `write` at `position`
/// and `rules - 1` rules for unassigned syscall numbers (1000, 1001, ...) that are never called;
/// anything else is a violation. With `inspect_args` the `write` rule also checks an argument
/// (`fd < 1024`), which keeps the kernel (5.11+) from caching "always allowed" for `write`:
/// the program then runs on every call, through every rule before `write`'s.
pub fn allow_list(rules: usize, position: RulePosition, inspect_args: bool) -> Filter {
    let allow = |nr: u32, args: Vec<ArgCheck>| Rule {
        nr,
        args,
        action: Action::Allow,
    };
    let write_args = match inspect_args {
        true => vec![ArgCheck {
            index: 0,
            op: CmpOp::Lt,
            value: 1024,
            value_two: 0,
        }],
        false => Vec::new(),
    };
    let mut list: Vec<Rule> = (0..rules.saturating_sub(1) as u32)
        .map(|i| allow(1000 + i, Vec::new()))
        .collect();
    let write = allow(libc::SYS_write as u32, write_args);
    match position {
        RulePosition::First => list.insert(0, write),
        RulePosition::Last => list.push(write),
    }
    Filter::compile(&list, None, None, Action::Violation)
        .expect("allow lists of up to 256 rules fit the kernel's 4096 instructions")
}

// ---------------------------------------------------------------------------------------------
// Heavier sandboxes, when installed: their CLI around the tiny static program.

/// (row name, program) for each external sandbox measured when present.
const EXTERNALS: [(&str, &str); 2] = [
    ("external_bwrap", "bwrap"),
    ("external_firejail", "firejail"),
];

/// The arguments each external row passes: the isolation a user of each tool typically asks
/// for, around [`TinyProgram`].
fn external_args(name: &str, tiny: &Path) -> Vec<std::ffi::OsString> {
    let args: Vec<&std::ffi::OsStr> = match name {
        // Every namespace bwrap can unshare, and only the program itself in an empty root.
        "external_bwrap" => vec![
            "--unshare-all".as_ref(),
            "--die-with-parent".as_ref(),
            "--ro-bind".as_ref(),
            tiny.as_os_str(),
            "/exit0".as_ref(),
            "/exit0".as_ref(),
        ],
        // firejail's default profile (for root `server.profile`: seccomp, capabilities dropped,
        // namespaces, private /dev, /home, ...) less `private-tmp`: that one mounts an empty
        // /tmp over the program, and firejail then exits 1 with "no suitable ... executable
        // found" (its stderr), which is what the row met before.
        _ => vec![
            "--quiet".as_ref(),
            "--ignore=private-tmp".as_ref(),
            tiny.as_os_str(),
        ],
    };
    args.into_iter().map(ToOwned::to_owned).collect()
}

/// Runs `program args`, with no input and its output discarded; it must succeed. On failure
/// the error carries the last line the program wrote on stderr, which says why.
fn run_external(program: &Path, args: &[std::ffi::OsString]) -> io::Result<()> {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let why = stderr
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .map_or(String::new(), |line| format!(": {line}"));
    Err(io::Error::other(format!(
        "`{}` ended with {}{why}",
        program.display(),
        output.status
    )))
}

/// The first executable `name` on PATH.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_allow_write_and_nothing_else() {
        const ALLOW: u32 = 0x7fff_0000;
        let arch = crate::policy::AUDIT_ARCH_X86_64;
        for rules in [1, 16, 64, 256] {
            for position in [RulePosition::First, RulePosition::Last] {
                for inspect_args in [false, true] {
                    let filter = allow_list(rules, position, inspect_args);
                    assert_eq!(filter.evaluate(arch, 1, [3, 0, 0, 0, 0, 0]), Some(ALLOW));
                    assert_ne!(filter.evaluate(arch, 39, [0; 6]), Some(ALLOW));
                    assert_eq!(
                        filter.evaluate(arch, 1, [4096, 0, 0, 0, 0, 0]) == Some(ALLOW),
                        !inspect_args
                    );
                }
            }
        }
    }

    #[test]
    fn cpu_lists_parse_like_sysfs_writes_them() {
        assert_eq!(parse_cpu_list("0-1\n"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0-2,5,7-8"), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
    }

    #[test]
    fn tiny_program_is_129_bytes() {
        assert_eq!(TinyProgram::image().len(), 129);
    }
}
