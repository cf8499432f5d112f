//! The cost of one allowed syscall, `write(/dev/null, buf, 0)`, under each seccomp confinement
//! against none (the floor, `syscall_none`): strict mode, strict mode's allow list as a filter,
//! and allow lists of 1, 16, 64 and 256 rules with `write` first and last, with and without an
//! argument check on it (which defeats the kernel's constant-action cache); and the time to
//! install filters of those sizes.
//!
//! Seccomp cannot be undone, so every sample runs in its own forked child, timed from the
//! parent between two bytes the child writes around its loop (strict mode disables the TSC, so
//! the child cannot time itself): `bytejail::bench::syscalls_in_child`.

use std::time::Duration;

use bytejail::bench::{self, Confinement, RulePosition};
use bytejail::policy::Filter;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

const SIZES: [usize; 4] = [1, 16, 64, 256];

/// Row name of an allow list: `syscall_bpf_256_last_args`; a 1-rule list has no position.
fn list_name(rules: usize, position: RulePosition, inspect_args: bool) -> String {
    let position = match (rules, position) {
        (1, _) => "",
        (_, RulePosition::First) => "_first",
        (_, RulePosition::Last) => "_last",
    };
    let args = if inspect_args { "_args" } else { "" };
    format!("syscall_bpf_{rules}{position}{args}")
}

fn syscall_cost(c: &mut Criterion) {
    pin();
    let mut rows: Vec<(String, Confinement)> = vec![
        ("syscall_none".into(), Confinement::None),
        ("syscall_strict".into(), Confinement::Strict),
        (
            "syscall_bpf_strict".into(),
            Confinement::filter(&Filter::strict_equivalent()).unwrap(),
        ),
    ];
    for rules in SIZES {
        for position in [RulePosition::First, RulePosition::Last] {
            if rules == 1 && position == RulePosition::Last {
                continue;
            }
            for inspect_args in [false, true] {
                let filter = bench::allow_list(rules, position, inspect_args);
                rows.push((
                    list_name(rules, position, inspect_args),
                    Confinement::filter(&filter).unwrap(),
                ));
            }
        }
    }
    let mut group = c.benchmark_group("syscall");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, confinement) in &rows {
        group.bench_function(name.as_str(), |b| {
            bench::trim_heap();
            b.iter_custom(|iters| bench::syscalls_in_child(confinement, iters).unwrap())
        });
    }
    group.finish();
}

fn install_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("filter_install");
    // Each iteration forks a child (a few hundred microseconds that are not timed): keep the
    // timed total small.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(300));
    for rules in SIZES {
        let filter = bench::allow_list(rules, RulePosition::Last, false);
        group.bench_function(format!("filter_install_{rules}"), |b| {
            bench::trim_heap();
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| bench::install_in_child(&filter).unwrap())
                    .sum()
            })
        });
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

criterion_group!(benches, syscall_cost, install_cost);
criterion_main!(benches);
