//! An attacker's review of the tracer's host-side state kept out of forks (`runner/tracer.rs`:
//! `leak_unforked`, the thread's `LAST` tracer, the slot's `owner`) and of own tracing's
//! stack-buffer thread count (`sys::threads`). A process forked from a host (a pre-forking
//! server) must never use, read or close anything of the host's tracers, and must never close
//! a descriptor of its own; a thread tracing its own workers must do so whatever its name.
//!
//! Each test forks, so each runs in this test binary run again (`in_own_process`): the forking
//! process then has a single thread besides the harness's waiting one.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bytejail::{Outcome, RunOptions};

/// Runs the ignored test `name` in this test binary run again, alone; asserts it passed.
fn in_own_process(name: &str) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            name,
            "--test-threads=1",
            "--nocapture",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "{name}: {status:?}");
}

/// A faulting job: its report's fault is verified when a tracer saw it.
fn verified_fault() -> bool {
    let faults = common::gas("nop\n xor eax, eax\n mov [rax], eax");
    let report = bytejail::run(&faults, b"", &RunOptions::default()).unwrap();
    matches!(&report.outcome, Outcome::Crashed { fault: Some(f), .. } if f.verified)
}

/// Waits for the child `pid` at most `bound`, killing it then; its wait status, or `None` if
/// it hung.
fn wait_bounded(pid: libc::pid_t, bound: Duration) -> Option<i32> {
    let deadline = Instant::now() + bound;
    let mut status = 0;
    loop {
        // SAFETY: polls our own child.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            return Some(status);
        }
        if Instant::now() > deadline {
            // SAFETY: our own child, not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Forks; the child runs `body` (its exit status; 64 if it panicked) and leaves with `_exit`.
/// The child's pid.
fn fork_running(body: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the harness's other thread only waits; the child uses this thread alone and
    // leaves with _exit, never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(64);
        // SAFETY: ends the child without the harness's destructors.
        unsafe { libc::_exit(status) };
    }
    pid
}

/// Describes a wait status for a failure message.
fn describe(status: Option<i32>) -> String {
    match status {
        None => "hung".to_string(),
        Some(s) if libc::WIFSIGNALED(s) => format!("died of signal {}", libc::WTERMSIG(s)),
        Some(s) => format!("exited {}", libc::WEXITSTATUS(s)),
    }
}

/// A process that ran traced jobs forks a child and ends; a process the child forks later gets
/// the dead host's pid again (pid reuse, forced here through `ns_last_pid`). That grandchild's
/// jobs are traced by a tracer of its own: it neither crashes on the host's tracer (whose page
/// was never mapped in it) nor asks that tracer to trace its workers.
///
/// Was a crash (fixed): the thread's cached tracer (`LAST`) and the process-wide list were
/// told apart from a forked process's by the pid alone, and the grandchild, with the same pid,
/// took the host's unmapped tracer for its own: "the grandchild with the host's pid died of
/// signal 11".
#[test]
fn a_later_process_with_a_dead_hosts_pid_uses_a_tracer_of_its_own() {
    with_pid_reuse_in_own_process("pid_reuse_host");
}

/// [`in_own_process`] for a test that reuses a pid through `ns_last_pid`: skipped with a line
/// where that cannot be written (not root).
fn with_pid_reuse_in_own_process(name: &str) {
    if !common::namespaces() {
        println!("skipped: writing /proc/sys/kernel/ns_last_pid needs root");
        return;
    }
    in_own_process(name);
}

/// Sets the pid the next fork of this PID namespace tries first to `pid`.
fn next_pid_is(pid: libc::pid_t) -> bool {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).is_ok()
}

#[test]
#[ignore = "run by a_later_process_with_a_dead_hosts_pid_uses_a_tracer_of_its_own"]
fn pid_reuse_host() {
    reuse_the_hosts_pid(
        |fork_child| verified_fault() && fork_child() > 0,
        || if verified_fault() { 0 } else { 4 },
    );
}

/// A host whose batch's reader thread (a quiet one, see `tracer::QuietThread`) lived when it
/// forked: a process forked later with the host's pid again, which traces its own workers and
/// has another, ordinary thread, has no quiet thread: a tracer process traces its worker.
///
/// Was a defect (fixed): the count of quiet threads was told apart by pid alone, and such a
/// process took its ordinary thread for the quiet one and traced its worker itself; the other
/// thread, which does not block SIGCHLD, took the stop's SIGCHLD: "the grandchild with the
/// host's pid hung" (60 s bound; one run instead failed within 2 s).
#[test]
fn a_later_process_with_a_dead_hosts_pid_has_no_quiet_thread_of_the_hosts() {
    with_pid_reuse_in_own_process("quiet_pid_reuse_host");
}

#[test]
#[ignore = "run by a_later_process_with_a_dead_hosts_pid_has_no_quiet_thread_of_the_hosts"]
fn quiet_pid_reuse_host() {
    reuse_the_hosts_pid(
        |fork_child| {
            // A one-job batch that reads ahead: its reader thread lives (waiting for more
            // input) while the job thread reports progress, and the child
            // is forked from there.
            let config = bytejail::batch::BatchConfig::for_jobs(1).with_read_ahead(true);
            let faults = common::hex(&common::gas("nop\n xor eax, eax\n mov [rax], eax"));
            let input: String = (0..3)
                .map(|i| format!("{{\"id\": {i}, \"code_hex\": \"{faults}\"}}\n"))
                .collect();
            let more =
                std::sync::Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
            let input = ThenWaits {
                lines: std::io::Cursor::new(input.into_bytes()),
                more: more.clone(),
            };
            let mut forked = false;
            let mut out = Vec::new();
            let ran = bytejail::batch::run_batch(
                std::io::BufReader::new(input),
                &mut out,
                &config,
                &mut |_| {
                    if !forked {
                        forked = fork_child() > 0;
                        // The reader sees the input's end.
                        *more.0.lock().unwrap() = false;
                        more.1.notify_all();
                    }
                },
            );
            ran.is_ok() && forked
        },
        || {
            bytejail::trace_own_workers();
            let me = bytejail_pid() as u32;
            let (stop, wait) = std::sync::mpsc::channel::<()>();
            let other = std::thread::spawn(move || wait.recv());
            let beside = verified_fault() && common::tracer_of(me).is_some();
            drop(stop);
            let _ = other.join();
            if beside {
                0
            } else {
                println!("traced its worker itself beside an ordinary thread");
                4
            }
        },
    );
}

/// `lines`, then an input that waits while `more` says so (60 s at most), and ends.
struct ThenWaits {
    lines: std::io::Cursor<Vec<u8>>,
    more: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl std::io::Read for ThenWaits {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.lines.read(buf)?;
        if read > 0 {
            return Ok(read);
        }
        let (more, changed) = &*self.more;
        let more = more.lock().unwrap();
        let _ended = changed
            .wait_timeout_while(more, Duration::from_secs(60), |more| *more)
            .unwrap();
        Ok(0)
    }
}

/// Runs `host` in a child of this process's (`fork_child` forks the host's child, its pid);
/// once the host has ended, the host's child forks until a process gets the host's pid again
/// (`ns_last_pid`), which runs `grandchild` (its exit status). Asserts everything passed.
fn reuse_the_hosts_pid(
    host: impl FnOnce(&mut (dyn FnMut() -> libc::pid_t + Send)) -> bool,
    grandchild: fn() -> i32,
) {
    /// The grandchild's result when the pid it got is not the dead host's (try again).
    const OTHER_PID: i32 = 77;
    // The host's child is reparented to this process when the host ends.
    // SAFETY: prctl with integer arguments.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let mut go = [0; 2];
    // SAFETY: a pipe into a local array.
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    let mut child_pid = [0; 2];
    // SAFETY: as above.
    assert_eq!(unsafe { libc::pipe(child_pid.as_mut_ptr()) }, 0);
    let the_host = fork_running(move || {
        let mut fork_child = move || {
            let child = fork_running(move || {
                let mut pid = [0u8; 4];
                // SAFETY: reads the host's pid into a local, once the host is reaped.
                if unsafe { libc::read(go[0], pid.as_mut_ptr().cast(), 4) } != 4 {
                    return 2;
                }
                let host = i32::from_ne_bytes(pid);
                for _ in 0..50 {
                    if !next_pid_is(host) {
                        return 3;
                    }
                    let grandchild = fork_running(move || {
                        if bytejail_pid() != host {
                            return OTHER_PID;
                        }
                        grandchild()
                    });
                    match wait_bounded(grandchild, Duration::from_secs(60)) {
                        Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == OTHER_PID => {}
                        Some(0) => return 0,
                        other => {
                            println!("the grandchild with the host's pid {}", describe(other));
                            return 5;
                        }
                    }
                }
                println!("skipped: pid {host} was never given again (a busy machine)");
                0
            });
            let bytes = child.to_ne_bytes();
            // SAFETY: writes a local to our pipe.
            unsafe { libc::write(child_pid[1], bytes.as_ptr().cast(), 4) };
            child
        };
        if host(&mut fork_child) {
            0
        } else {
            1
        }
    });
    let host_status = wait_bounded(the_host, Duration::from_secs(60));
    assert_eq!(host_status, Some(0), "the host {}", describe(host_status));
    let mut bytes = [0u8; 4];
    // SAFETY: reads the child's pid into a local.
    assert_eq!(
        unsafe { libc::read(child_pid[0], bytes.as_mut_ptr().cast(), 4) },
        4
    );
    let child = i32::from_ne_bytes(bytes);
    // The host is reaped: its pid is free. Tell the child which pid it was.
    let message = the_host.to_ne_bytes();
    // SAFETY: writes a local to our pipe.
    assert_eq!(
        unsafe { libc::write(go[1], message.as_ptr().cast(), message.len()) },
        4
    );
    let status = wait_bounded(child, Duration::from_secs(120));
    assert_eq!(status, Some(0), "the host's child: {}", describe(status));
}

/// This process's pid from the kernel.
fn bytejail_pid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// A child that closes every descriptor it inherited (as a daemon does) and opens its own,
/// which take the numbers the host's tracer socket and pidfd had: its jobs close none of them
/// (nor put a tracer's socket in their place).
///
/// Was a defect (fixed): the child's first traced job closed the descriptors at the numbers
/// the host's tracer had, whatever they were by then: "the child's descriptors 4, 5 were
/// closed or replaced".
#[test]
fn a_child_that_reuses_the_hosts_descriptor_numbers_keeps_its_descriptors() {
    in_own_process("reused_numbers_host");
}

/// (fd, inode) of each open descriptor from 3 up to `below`.
fn open_fds(below: i32) -> Vec<(i32, u64)> {
    (3..below)
        .filter_map(|fd| {
            // SAFETY: stat is plain old data; fstat writes into a local.
            let mut stat: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            (unsafe { libc::fstat(fd, &mut stat) } == 0).then_some((fd, stat.st_ino))
        })
        .collect()
}

#[test]
#[ignore = "run by a_child_that_reuses_the_hosts_descriptor_numbers_keeps_its_descriptors"]
fn reused_numbers_host() {
    const BELOW: i32 = 64;
    assert!(verified_fault());
    let tracer_fds: Vec<(i32, String)> = open_fds(BELOW)
        .into_iter()
        .map(|(fd, _)| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
            (fd, target.to_string_lossy().to_string())
        })
        .collect();
    let child = fork_running(|| {
        // SAFETY: closes this process's copies of everything but stdio.
        if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } != 0 {
            return 1;
        }
        // Its own descriptors, at every number up to BELOW (the host's tracer's among them).
        for _ in 3..BELOW {
            // SAFETY: a new eventfd.
            if unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) } < 0 {
                return 1;
            }
        }
        let before = open_fds(BELOW);
        if !verified_fault() || !verified_fault() {
            return 2;
        }
        let after = open_fds(BELOW);
        let changed: Vec<i32> = before
            .iter()
            .filter(|entry| !after.contains(entry))
            .map(|&(fd, _)| fd)
            .collect();
        if !changed.is_empty() {
            println!("the child's descriptors {changed:?} were closed or replaced");
            return 3;
        }
        0
    });
    let status = wait_bounded(child, Duration::from_secs(60));
    assert_eq!(
        status,
        Some(0),
        "the child {} (host's descriptors: {tracer_fds:?})",
        describe(status)
    );
    assert!(verified_fault(), "the host's tracer still serves it");
}

/// A process name that looks like `/proc/self/stat`'s own fields (a `)` and numbers, set with
/// `PR_SET_NAME`), or fills all 15 bytes: a single-threaded process that traces its own
/// workers still counts one thread and traces them itself (no tracer process), verified.
/// Twin: the same name beside another thread leaves the worker to a tracer process.
#[test]
fn own_tracing_counts_its_thread_whatever_the_process_name() {
    in_own_process("own_tracing_names");
}

#[test]
#[ignore = "run by own_tracing_names"]
fn own_tracing_names() {
    for name in [
        &b") R 1 1 1 0 -1\0"[..],
        b"))))))))))))))\0",
        b"a b (c) 9 9 9 9\0",
        b"plain\0",
    ] {
        let shown = String::from_utf8_lossy(&name[..name.len() - 1]).to_string();
        let child = fork_running(|| {
            // SAFETY: prctl with a NUL-terminated name of at most 16 bytes.
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
            bytejail::trace_own_workers();
            let me = bytejail_pid() as u32;
            let alone = verified_fault() && common::tracer_of(me).is_none();
            // The twin: with another (not quiet) thread, a tracer process takes the worker.
            let (stop, wait) = std::sync::mpsc::channel::<()>();
            let other = std::thread::spawn(move || wait.recv());
            let beside = verified_fault() && common::tracer_of(me).is_some();
            drop(stop);
            let _ = other.join();
            match (alone, beside) {
                (true, true) => 0,
                (false, _) => 1,
                (true, false) => 2,
            }
        });
        let status = wait_bounded(child, Duration::from_secs(60));
        assert_eq!(
            status,
            Some(0),
            "name {shown:?}: {} (1: not traced by itself alone, 2: no tracer beside a thread)",
            describe(status)
        );
    }
}
