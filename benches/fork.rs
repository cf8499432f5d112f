//! What a new process costs: fork, vfork, clone3 with a pidfd and posix_spawn of a tiny static
//! program, each + exit + wait; and fork + exit + wait against the host's size (0, 256 MiB,
//! 1 GiB and 2 GiB of touched memory, in 4 KiB pages and in transparent huge pages): the curve
//! that explains why pre-forking and a zygote exist. `fork_exit_wait` is the floor.

use std::time::Duration;

use bytejail::bench::{self, TinyProgram};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use memmap2::{Advice, MmapMut};

/// The ways to start a process and wait for it, all measured from this (small) process.
fn process_start(c: &mut Criterion) {
    pin();
    // CARGO_TARGET_TMPDIR is target/tmp: the helper is written there at bench time.
    let tiny = TinyProgram::create_in(env!("CARGO_TARGET_TMPDIR").as_ref())
        .expect("writing and running the tiny static program");
    let mut group = c.benchmark_group("fork");
    group.sample_size(200);
    group.bench_function("fork_exit_wait", |b| {
        bench::trim_heap();
        b.iter(|| bench::fork_exit_wait().unwrap())
    });
    group.bench_function("vfork_exit_wait", |b| {
        bench::trim_heap();
        b.iter(|| bench::vfork_exit_wait().unwrap())
    });
    group.bench_function("clone3_pidfd_exit_wait", |b| {
        bench::trim_heap();
        b.iter(|| bench::clone3_pidfd_exit_wait().unwrap())
    });
    group.bench_function("posix_spawn_static_wait", |b| {
        bench::trim_heap();
        b.iter(|| tiny.spawn_wait().unwrap())
    });
    group.finish();
}

const MIB: usize = 1 << 20;

/// How the host's extra memory is backed.
#[derive(Clone, Copy)]
enum Pages {
    /// `MADV_NOHUGEPAGE`: every 4 KiB page has its own page-table entry to copy.
    Small,
    /// `MADV_HUGEPAGE`: one entry per 2 MiB.
    Huge,
}

/// An anonymous private mapping of `size` bytes with every page written, so that fork has
/// something to copy.
fn touched_region(size: usize, pages: Pages) -> MmapMut {
    let mut map = MmapMut::map_anon(size).expect("mapping the host's extra memory");
    map.advise(match pages {
        Pages::Small => Advice::NoHugePage,
        Pages::Huge => Advice::HugePage,
    })
    .expect("madvise");
    for page in map.chunks_mut(4096) {
        page[0] = 1;
    }
    map
}

/// KiB of `region` backed by huge pages, from /proc/self/smaps.
fn huge_kib(region: &MmapMut) -> Option<u64> {
    let start = format!("{:x}-", region.as_ptr() as usize);
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&start));
    lines.next()?;
    lines
        // Field lines start with `Name:`; the next mapping's header with its address range.
        .take_while(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|f| f.ends_with(':'))
        })
        .find_map(|line| line.strip_prefix("AnonHugePages:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// fork + `_exit` + waitpid against the host's size. The child exits at once, but fork copies
/// (and exit tears down) one page-table entry per 4 KiB page, or one per 2 MiB huge page.
fn host_size(c: &mut Criterion) {
    let thp = bench::transparent_hugepages();
    let thp_usable = thp == "always" || thp == "madvise";
    println!("transparent huge pages: {thp}");
    if !thp_usable {
        println!("THP unavailable (enabled = {thp}): the huge-page rows are left out");
    }
    let mut group = c.benchmark_group("fork_host_size");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function(BenchmarkId::new("fork_exit_wait", "0MiB"), |b| {
        bench::trim_heap();
        b.iter(|| bench::fork_exit_wait().unwrap())
    });
    for (pages, label) in [(Pages::Small, "4KiB_pages"), (Pages::Huge, "huge_pages")] {
        if matches!(pages, Pages::Huge) && !thp_usable {
            continue;
        }
        for mib in [256, 1024, 2048] {
            let region = touched_region(mib * MIB, pages);
            if let Some(kib) = huge_kib(&region) {
                println!(
                    "{label}/{mib}MiB: {} MiB of {mib} MiB in huge pages",
                    kib / 1024
                );
            }
            group.bench_function(BenchmarkId::new(label, format!("{mib}MiB")), |b| {
                bench::trim_heap();
                b.iter(|| bench::fork_exit_wait().unwrap())
            });
            drop(region);
        }
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

criterion_group!(benches, process_start, host_size);
criterion_main!(benches);
