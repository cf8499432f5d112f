//! End-to-end cost of one `mov al,42; ret` job for every mode bytejail has (fresh fork scrubbed,
//! the default, and not; the filter policies; a pre-forked `bytejail::Pool`; one input through
//! a same-code worker; a fresh worker forked by a `bytejail::Zygote`), next to the raw
//! libc floors measured in the same run: fork, pipe, strict seccomp, the same code, result and
//! reap (`floor_fork_pipe_strict`), and one byte there and back through a parked strict worker
//! (`floor_pipe_rtt`, the floor of `run_pool`). Then `--jobs` scaling: per-job time of fresh
//! jobs on one thread and on two, next to the same for raw fork, exit and wait.
//!
//! The floors are `bytejail::bench::floor_fork_pipe_strict` and `bytejail::bench::ParkedWorker`,
//! written directly against libc with nothing else; `bytejail bench` times the same code.

use std::time::Duration;

use bytejail::bench::{self, GuestFunction, ParkedWorker, PoolLatency, SameCodeLatency, RETURN_42};
use bytejail::{RunOptions, Zygote};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn run_returns_42(options: &RunOptions) {
    let report = bytejail::run(&RETURN_42, b"", options).unwrap();
    assert_eq!(report.outcome.kind(), "returned", "{}", report.summary());
}

fn bench(c: &mut Criterion) {
    pin();
    let guest = GuestFunction::new(&RETURN_42).unwrap();
    assert_eq!(bench::floor_fork_pipe_strict(&guest).unwrap() & 0xff, 42);
    let parked = ParkedWorker::start().unwrap();

    let mut group = c.benchmark_group("run");
    group.sample_size(200);
    group.bench_function("floor_fork_pipe_strict", |b| {
        bench::trim_heap();
        b.iter(|| bench::floor_fork_pipe_strict(&guest).unwrap())
    });
    group.bench_function("floor_pipe_rtt", |b| {
        bench::trim_heap();
        b.iter(|| parked.round_trip().unwrap())
    });
    let modes = bench::run_modes();
    for (name, options) in &modes {
        group.bench_function(*name, |b| {
            bench::trim_heap();
            b.iter(|| run_returns_42(options))
        });
    }
    let same_code = SameCodeLatency::start().unwrap();
    group.bench_function("run_batch_input", |b| {
        bench::trim_heap();
        b.iter(|| same_code.input().unwrap())
    });
    assert_eq!(same_code.workers(), 1, "every input returned in one worker");
    drop(same_code);
    // Only now: the zygote's owner thread would put every later glibc fork of this process on
    // its multi-threaded path, the floors' included (see `phases_in_child` in
    // runner/bench.rs). The process is as small now as it was at the start.
    let zygote = Zygote::start().unwrap();
    group.bench_function("run_zygote", |b| {
        bench::trim_heap();
        b.iter(|| {
            let report = zygote.run(&RETURN_42, b"", &RunOptions::default()).unwrap();
            assert_eq!(report.outcome.kind(), "returned", "{}", report.summary());
        })
    });
    drop(zygote);
    // Last, and the pool dropped right after: its refill thread, even idle, slows every fork
    // of this process (see `bench::Phase`). Only the job is timed; the wait for a full,
    // settled pool before each one is not.
    let pool = PoolLatency::start().unwrap();
    group.bench_function("run_pool", |b| {
        bench::trim_heap();
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                pool.wait_until_full();
                let started = std::time::Instant::now();
                pool.run_one().unwrap();
                timed += started.elapsed();
            }
            timed
        });
    });
    println!(
        "run_pool: {} jobs found no parked worker and ran fresh",
        pool.fallbacks()
    );
    drop(pool);
    group.finish();
}

/// Fresh jobs (and raw fork + exit + wait, their floor) on one thread and on two, each thread
/// free to run on any CPU: the time per job. One thread's over two threads' is the speed-up of
/// a second thread; the floor's shows how much of a shortfall fork itself explains. Then
/// `bytejail batch` itself with one job thread and two (a zygote each): the `--jobs 2` target.
fn jobs(c: &mut Criterion) {
    let mut group = c.benchmark_group("jobs");
    group.sample_size(30);
    let rows: [(&str, &(dyn Fn() -> std::io::Result<()> + Sync)); 2] = [
        ("fork_exit_wait", &bench::fork_exit_wait),
        ("run_fresh", &bench::run_fresh_once),
    ];
    for (name, job) in rows {
        for threads in [1, 2] {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                bench::trim_heap();
                b.iter_custom(|iters| bench::on_threads(threads, iters, job).unwrap())
            });
        }
    }
    // `bytejail batch --jobs 1` and `--jobs 2`: one iteration is a batch of BATCH_JOBS fresh
    // jobs (its zygotes started included), through the library entry the CLI uses.
    const BATCH_JOBS: usize = 200;
    let lines = "{\"code_hex\": \"b0 2a c3\"}\n".repeat(BATCH_JOBS);
    for threads in [1, 2] {
        let config = bytejail::batch::BatchConfig::default()
            .with_jobs(threads)
            .with_ordered(false)
            .with_reuse(bytejail::batch::Reuse::None);
        group.bench_with_input(
            BenchmarkId::new("batch_fresh_200", threads),
            &threads,
            |b, _| {
                b.iter(|| {
                    let mut out = Vec::new();
                    let summary = bench::unpinned(|| {
                        let lines = lines.as_bytes();
                        bytejail::batch::run_batch(lines, &mut out, &config, &mut |_| {})
                    })
                    .unwrap()
                    .unwrap();
                    assert_eq!(summary.outcomes.get("returned"), Some(&(BATCH_JOBS as u64)));
                })
            },
        );
    }
    group.finish();
}

/// Pins this thread (and so every child it forks) to one CPU, as `bytejail bench` does: rows
/// then do not depend on where the scheduler puts a child.
fn pin() {
    match bench::pin_to_quiet_cpu() {
        Some(cpu) => println!("pinned to CPU {cpu}"),
        None => println!("not pinned (one CPU, or sched_setaffinity failed)"),
    }
}

criterion_group!(benches, bench, jobs);
criterion_main!(benches);
