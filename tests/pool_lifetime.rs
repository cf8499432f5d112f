//! A pool leaves no worker and no zygote behind: not when it is dropped, and not when its host
//! is killed. Alone in its file: it counts this process's children.

mod common;

use std::time::{Duration, Instant};

use bytejail::{Pool, RunOptions};
use common::{alive, children_of, comm};

/// The two tests below both create children of this process; one counts them.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The children of `parent` that are workers, and those that are the pool's zygote (which
/// forks the workers; they are its parent's children all the same, see `bytejail::Zygote`),
/// once there are `workers` of the first and one of the second (or after 10 s). A worker is
/// told apart by its name, which it takes just after the zygote forked it.
fn workers_and_zygotes(parent: u32, workers: usize) -> (Vec<u32>, Vec<u32>) {
    let start = Instant::now();
    loop {
        let (named, zygotes): (Vec<u32>, Vec<u32>) = children_of(parent)
            .into_iter()
            .map(|(pid, _)| pid)
            .partition(|&pid| comm(pid) == "bytejail-worker");
        if (named.len(), zygotes.len()) == (workers, 1) || start.elapsed() > Duration::from_secs(10)
        {
            return (named, zygotes);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn dropping_the_pool_ends_every_parked_worker() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = Pool::new(RunOptions::default(), 4).unwrap();
    let report = pool
        .run(&[0xb0, 7, 0xc3], b"", &RunOptions::default())
        .unwrap();
    assert_eq!(report.outcome.kind(), "returned");
    let start = Instant::now();
    while pool.stats().parked < 4 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let me = std::process::id();
    let (workers, zygotes) = workers_and_zygotes(me, 4);
    assert_eq!(workers.len(), 4, "parked workers");
    assert_eq!(zygotes.len(), 1, "the pool's zygote");
    drop(pool);
    assert_eq!(
        children_of(me),
        Vec::new(),
        "workers or the zygote left after the pool was dropped"
    );
}

/// Run by the test below in a child process: start a pool, say so, and wait to be killed.
#[test]
#[ignore = "helper for killing_the_host_ends_every_parked_worker"]
fn pool_host() {
    let pool = Pool::new(RunOptions::default(), 4).unwrap();
    while pool.stats().parked < 4 {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("ready");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn killing_the_host_ends_every_parked_worker() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut host, _out) = common::start_host("pool_host");
    let (workers, zygotes) = workers_and_zygotes(host.id(), 4);
    assert_eq!(workers.len(), 4, "parked workers of the host");
    assert_eq!(zygotes.len(), 1, "the zygote of the host's pool");
    assert!(workers.iter().chain(&zygotes).all(|&pid| alive(pid)));
    host.kill().unwrap();
    host.wait().unwrap();
    let killed = Instant::now();
    while workers.iter().chain(&zygotes).any(|&pid| alive(pid)) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "workers or the zygote outlived their host by 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A parked worker killed from outside is noticed when its job comes: the job runs in a fresh
/// worker with the right report, the dead worker is reaped, and the host (here with SIGPIPE at
/// its default action, as in a C host) is not disturbed.
#[test]
fn a_parked_worker_killed_from_outside_is_replaced_not_reported() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the default action for SIGPIPE; no handler involved.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let pool = Pool::new(RunOptions::default(), 1).unwrap();
    let start = Instant::now();
    while pool.stats().parked < 1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let me = std::process::id();
    let (parked, _) = workers_and_zygotes(me, 1);
    assert_eq!(parked.len(), 1, "{parked:?}");
    // SAFETY: kill(2) on our own child.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(parked[0] as i32, libc::SIGKILL);
    }
    while alive(parked[0]) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = pool
        .run(&[0xb0, 9, 0xc3], b"", &RunOptions::default())
        .unwrap();
    assert!(
        matches!(report.outcome, bytejail::Outcome::Returned(r) if r.rax == 9),
        "{report:?}"
    );
    assert!(pool.stats().fallbacks >= 1);
    drop(pool);
    assert_eq!(
        children_of(me),
        Vec::new(),
        "the killed worker was not reaped"
    );
}
