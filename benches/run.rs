//! End-to-end cost of one `mov al,42; ret` job for every mode bytejail has (fresh fork scrubbed,
//! the default, and not; the filter policies), next to the raw libc floors measured in the same
//! run: fork + pipe + strict seccomp + the same code + result + reap (`floor_fork_pipe_strict`),
//! and one byte there and back through a parked strict worker (`floor_pipe_rtt`).
//!
//! The floors are `bytejail::bench::floor_fork_pipe_strict` and `bytejail::bench::ParkedWorker`,
//! written directly against libc with nothing else; `bytejail bench` times the same code.

use bytejail::bench::{self, GuestFunction, ParkedWorker, RETURN_42};
use bytejail::RunOptions;
use criterion::{criterion_group, criterion_main, Criterion};

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
    group.finish();
}

/// Pins this thread (and so every child it forks) to one CPU, as `bytejail bench` does: rows
/// then do not depend on where the scheduler puts a child.
fn pin() {
    match bench::pin_to_last_cpu() {
        Some(cpu) => println!("pinned to CPU {cpu}"),
        None => println!("not pinned (one CPU, or sched_setaffinity failed)"),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
