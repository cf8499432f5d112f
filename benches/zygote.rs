//! Per-job latency of `mov al,42; ret` with the worker forked by the host (`bytejail::run`) and
//! by a zygote (`Zygote::run`), in a small host and in one holding 2 GiB of touched 4 KiB
//! pages, next to the raw fork + pipe + strict floor measured in the same run. The quantity is
//! how much a worker's start-up grows with the host: `zygote_2GiB / zygote_small` should stay
//! near 1 (target: at most 1.25) while `host_2GiB / host_small` grows with the page tables.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytejail::bench::{self, GuestFunction, RETURN_42};
use bytejail::{RunOptions, Zygote};
use criterion::{criterion_group, criterion_main, Criterion};
use memmap2::{Advice, MmapMut};

const GIB: usize = 1 << 30;

/// Criterion's warm-up per row; samples that start within it are not kept for the ratios.
const WARM_UP: Duration = Duration::from_millis(300);

/// Per row: when criterion first called it, and the per-job time of each measured sample.
type Samples = RefCell<BTreeMap<String, (Instant, Vec<Duration>)>>;

fn job(zygote: Option<&Zygote>) {
    let options = RunOptions::default();
    let report = match zygote {
        Some(zygote) => zygote.run(&RETURN_42, b"", &options),
        None => bytejail::run(&RETURN_42, b"", &options),
    }
    .unwrap();
    assert_eq!(report.outcome.kind(), "returned", "{}", report.summary());
}

/// Times `iters` calls of `f` for criterion, and keeps the per-call time for the ratios once
/// the row's warm-up is over.
fn timed(samples: &Samples, row: &str, iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let elapsed = start.elapsed();
    let mut samples = samples.borrow_mut();
    let (first, kept) = samples
        .entry(row.to_string())
        .or_insert_with(|| (start, Vec::new()));
    if start.duration_since(*first) >= WARM_UP {
        kept.push(elapsed / iters.max(1) as u32);
    }
    elapsed
}

/// `size` bytes of anonymous memory in 4 KiB pages (`MADV_NOHUGEPAGE`), every page written,
/// so that a fork of this process has their page-table entries to copy.
fn touched_small_pages(size: usize) -> MmapMut {
    let mut map = MmapMut::map_anon(size).expect("mapping the host's extra memory");
    map.advise(Advice::NoHugePage).expect("madvise");
    for page in map.chunks_mut(4096) {
        page[0] = 1;
    }
    map
}

fn bench(c: &mut Criterion) {
    match bench::pin_to_quiet_cpu() {
        Some(cpu) => println!("pinned to CPU {cpu}"),
        None => println!("not pinned (one CPU, or sched_setaffinity failed)"),
    }
    let guest = GuestFunction::new(&RETURN_42).unwrap();
    assert_eq!(bench::floor_fork_pipe_strict(&guest).unwrap() & 0xff, 42);
    let samples = Samples::default();

    let mut group = c.benchmark_group("zygote");
    group.sample_size(20);
    group.warm_up_time(WARM_UP);
    group.measurement_time(Duration::from_secs(1));
    group.bench_function("floor_fork_pipe_strict", |b| {
        bench::trim_heap();
        b.iter_custom(|n| {
            timed(&samples, "floor_fork_pipe_strict", n, || {
                bench::floor_fork_pipe_strict(&guest).unwrap();
            })
        })
    });
    group.bench_function("host_small", |b| {
        bench::trim_heap();
        b.iter_custom(|n| timed(&samples, "host_small", n, || job(None)))
    });
    // Started while the host is small (what a zygote is for), but after the rows forked with
    // glibc's fork(): its owner thread puts every later one on glibc's multi-threaded path.
    let zygote = Zygote::start().unwrap();
    group.bench_function("zygote_small", |b| {
        bench::trim_heap();
        b.iter_custom(|n| timed(&samples, "zygote_small", n, || job(Some(&zygote))))
    });

    let ballast = touched_small_pages(2 * GIB);
    // A fork of a 2 GiB host takes tens of ms: fewer, longer samples.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(2));
    for (row, via) in [("host_2GiB", None), ("zygote_2GiB", Some(&zygote))] {
        group.bench_function(row, |b| {
            bench::trim_heap();
            b.iter_custom(|n| timed(&samples, row, n, || job(via)))
        });
    }
    group.finish();
    drop(ballast);

    let samples = samples.into_inner();
    let median = |row: &str| {
        let mut times = samples.get(row).map(|s| s.1.clone()).unwrap_or_default();
        times.sort();
        times.get(times.len() / 2).copied()
    };
    println!("\nmedian per job, over criterion's measured samples:");
    for (row, (_, kept)) in &samples {
        if let Some(m) = median(row) {
            let us = m.as_secs_f64() * 1e6;
            println!("  {row:<24} {us:>10.1} us  ({} samples)", kept.len());
        }
    }
    let ratio = |a: &str, b: &str| match (median(a), median(b)) {
        (Some(a), Some(b)) => format!("{:.2}", a.as_secs_f64() / b.as_secs_f64()),
        _ => "n/a (row filtered out)".into(),
    };
    println!(
        "zygote_2GiB / zygote_small = {} (target <= 1.25)",
        ratio("zygote_2GiB", "zygote_small")
    );
    println!(
        "host_2GiB / host_small     = {}",
        ratio("host_2GiB", "host_small")
    );
    println!(
        "zygote_small / floor       = {}",
        ratio("zygote_small", "floor_fork_pipe_strict")
    );
    println!(
        "host_small / floor         = {}",
        ratio("host_small", "floor_fork_pipe_strict")
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
