//! An attacker's look at a one-job batch tracing its fresh workers itself beside its reader
//! thread (`tracer::QuietThread`, counted in the process's threads), and at a batch that reads
//! its regular file itself (`BatchConfig::read_ahead` false): hostile guests report through
//! `bytejail batch --jobs 1` from a named pipe and from a file what the library reports (a
//! tracer process: this test process has several threads); mixed batches give the same lines
//! through a file, a pipe and standard input; odd batch files end with the documented status;
//! a library host with a thread that reaps any child never loses a worker; a reader that
//! panics ends the batch.
//!
//! Found here:
//! - the count of quiet threads was the process's, kept across `fork`: a process forked while
//!   a batch's reader thread was quiet (a pre-forking server whose other thread runs a batch)
//!   counted a quiet thread it does not have, so with one ordinary thread of its own beside
//!   the one that traces its own workers it traced them itself; that thread, reaping any
//!   child, took the worker's stops and held it until its deadline
//!   (`a_process_forked_beside_a_quiet_reader_counts_none_of_its_quiet_threads`);
//! - a batch's reader that panicked (a library host's `BufRead`) left the job threads waiting
//!   for lines for good, with `--jobs 1` and with more
//!   (`a_reader_that_panics_ends_the_batch`); and a `progress` that panicked left the reader
//!   waiting for room in the queue for good (`a_progress_that_panics_ends_the_batch`);
//! - `bytejail batch --jobs 1` from a named pipe or standard input where no thread could start
//!   (a pids limit) panicked (status 101) instead of failing with one line
//!   (`a_batch_that_cannot_start_its_reader_fails_cleanly`);
//! - a directory as the batch file ended with status 125, "runner failed", not 2
//!   (`odd_batch_files_end_with_the_documented_status`);
//! - `bytejail batch F >> F` read its own results back as jobs and never ended, the file
//!   growing without bound (`a_batch_whose_results_go_to_its_own_file_is_refused`).
//!
//! Seen and left as it is: a batch from a named pipe whose stdout was closed (`| head -1`)
//! ends only once the pipe's writer writes another line or closes it (its reader waits in
//! `read`); from standard input it ends at once (the CLI's feed thread).

mod common;

use std::io::{BufRead, Read, Write};
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytejail::batch::{run_batch, BatchConfig};
use bytejail::{Limits, RunOptions};
use common::{
    allow_all_file, cloned, gas, hex, kill_self, with_usr1_handler, SIGCHLD, SPIN, THREAD, UNMASK,
};
use serde_json::Value;

/// A pipe: (read end, write end).
fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: a pointer to a local array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: descriptors just made, owned by nothing else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// Runs `body` in a forked child of this test process, where the forking thread is the only
/// one, and returns what it wrote. The child ends itself with `_exit`, and an alarm ends it if
/// it hangs.
fn in_forked_child(body: impl FnOnce() -> String) -> String {
    let (mut read, write) = pipe();
    // SAFETY: the child runs `body` and `_exit`s; glibc's fork handlers leave malloc usable
    // in the child, and the other threads of this test process are not copied.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        drop(read);
        // SAFETY: alarm takes no pointers.
        unsafe { libc::alarm(60) };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
            .unwrap_or_else(|e| format!("panicked: {:?}", e.downcast_ref::<String>()));
        let mut write = write;
        let _ = write.write_all(result.as_bytes());
        // SAFETY: _exit ends the child without running the test process's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(write);
    let mut out = String::new();
    read.read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: a pointer to a local int.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(
        status, 0,
        "the forked host: status {status:#x}, wrote {out}"
    );
    out
}

/// Starts a thread that reaps any child of the process it can, as some servers do
/// (`waitpid(-1)`, which sees a traced child's stops too, but never reaps a worker: their exit
/// signal is 0), for as long as the process lives.
fn start_reaper() {
    std::thread::spawn(|| loop {
        let mut status = 0;
        // SAFETY: a pointer to a local int.
        if unsafe { libc::waitpid(-1, &mut status, 0) } < 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    });
}

/// A crash at address 0, its fault seen by the kernel.
fn crash() -> Vec<u8> {
    gas("xor eax, eax\nmov rax, [rax]\nret")
}

/// The report of a job that crashes, run in this (forked) process after `trace_own_workers`,
/// as a line saying what is wrong with it ("ok" when nothing).
fn crash_checked() -> String {
    bytejail::trace_own_workers();
    let options =
        RunOptions::default().with_limits(Limits::default().with_timeout(Duration::from_secs(3)));
    let start = Instant::now();
    let report = bytejail::run(&crash(), b"", &options).unwrap().to_json();
    let took = start.elapsed();
    let right = report["outcome"] == "crashed"
        && report["fault"]["verified"] == true
        && report["fault"]["address"] == 0
        && took < Duration::from_secs(2);
    format!(
        "{} in {took:?}: {report}",
        if right { "ok" } else { "WRONG" }
    )
}

/// A library host whose batch (one job at a time, reading a pipe that stays open: its reader
/// thread lives while the jobs run) runs beside a thread of its own that reaps any child: the
/// count of threads does not match, a tracer process traces the first worker (forked by the
/// host's thread; later ones come from a zygote), and every report is right, the fault
/// verified. The twin: without the reaping thread the host traces its first worker itself (no
/// tracer process after it), just as right.
#[test]
fn a_batch_beside_a_thread_that_reaps_any_child_loses_no_worker() {
    let _apart = common::forking();
    use std::os::fd::AsRawFd;
    for reaper in [true, false] {
        // The pipe's write end is this process's: the forked host has no other thread.
        let (read, mut write) = pipe();
        let (read_fd, write_fd) = (read.as_raw_fd(), write.as_raw_fd());
        let lines: String = (0..4)
            .map(|id| {
                format!(
                    "{{\"id\":{id},\"code_hex\":\"{}\",\"timeout_ms\":3000}}\n",
                    hex(&crash())
                )
            })
            .collect();
        write.write_all(lines.as_bytes()).unwrap();
        let closer = std::thread::spawn(move || {
            // Closed a while after the jobs are done: the reader waits for more meanwhile.
            std::thread::sleep(Duration::from_millis(1500));
            drop(write);
        });
        let out = in_forked_child(move || {
            // SAFETY: this process's copies, owned by nothing else here.
            let read = unsafe {
                libc::close(write_fd);
                std::fs::File::from_raw_fd(read_fd)
            };
            bytejail::trace_own_workers();
            if reaper {
                start_reaper();
            }
            let mut out = Vec::new();
            let start = Instant::now();
            let config = BatchConfig::for_jobs(1);
            // Whether a tracer process lived after the first job (forked by this thread;
            // later ones come from a zygote, whose workers a tracer process traces).
            let mut tracer = None;
            let summary = run_batch(
                std::io::BufReader::new(read),
                &mut out,
                &config,
                &mut |_| {
                    tracer.get_or_insert_with(|| common::tracer_of(std::process::id()).is_some());
                },
            );
            let took = start.elapsed();
            let tracer = tracer.unwrap_or_default();
            format!(
                "{summary:?} took {took:?} tracer {tracer}\n{}",
                String::from_utf8_lossy(&out)
            )
        });
        drop(read);
        closer.join().unwrap();
        let mut lines = out.lines();
        let head = lines.next().unwrap();
        assert!(head.starts_with("Ok("), "{out}");
        assert!(
            head.ends_with(&format!("tracer {reaper}")),
            "reaper {reaper}: {out}"
        );
        let results: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(results.len(), 4, "{out}");
        for result in &results {
            assert_eq!(result["outcome"], "crashed", "reaper {reaper}: {out}");
            assert_eq!(result["fault"]["verified"], true, "reaper {reaper}: {out}");
        }
    }
}

/// A process forked while a batch's reader thread is quiet (a library host whose other thread
/// runs a batch from a pipe) has no quiet thread: with one ordinary thread of its own that
/// reaps any child, the job of its thread that traces its own workers still gets a tracer
/// process, and a right report before its deadline. Before the fix the forked process counted
/// its parent's quiet reader (2 threads = 1 + 1 quiet), traced the worker itself, and the
/// reaping thread took the worker's stops: the job ended at its deadline, its report wrong.
/// The twin: forked with no batch running, the same.
#[test]
fn a_process_forked_beside_a_quiet_reader_counts_none_of_its_quiet_threads() {
    let _apart = common::forking();
    for beside_a_batch in [true, false] {
        let (read, write) = pipe();
        let batch = beside_a_batch.then(|| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let config = BatchConfig::for_jobs(1);
                run_batch(
                    std::io::BufReader::new(read),
                    &mut out,
                    &config,
                    &mut |_| {},
                )
                .map(|summary| summary.jobs)
            })
        });
        // The reader thread has said it is quiet (it does so first thing).
        std::thread::sleep(Duration::from_millis(300));
        let out = in_forked_child(|| {
            start_reaper();
            std::thread::sleep(Duration::from_millis(50));
            crash_checked()
        });
        drop(write);
        if let Some(batch) = batch {
            assert_eq!(batch.join().unwrap().unwrap(), 0);
        }
        assert!(
            out.starts_with("ok"),
            "beside a batch {beside_a_batch}: {out}"
        );
    }
}

/// A reader that yields some lines, then panics.
struct PanickingReader {
    lines: Vec<u8>,
    pos: usize,
}

impl Read for PanickingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.len().min(buf.len());
        buf[..n].copy_from_slice(&self.lines[self.pos..self.pos + n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for PanickingReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos == self.lines.len() {
            panic!("the host's reader fails");
        }
        Ok(&self.lines[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// A batch whose input (a library host's `BufRead`) panics after two lines ends, with `--jobs
/// 1` (its reader is a thread of its own) and with more (the calling thread reads), with an
/// error or the panic: never waits for lines for good. Before the fix the job threads waited
/// for good for the reader's end.
#[test]
fn a_reader_that_panics_ends_the_batch() {
    let _apart = common::beside_forks();
    for jobs in [1, 2] {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let input = PanickingReader {
                lines:
                    b"{\"id\":1,\"code_hex\":\"b82a000000c3\"}\n{\"id\":2,\"code_hex\":\"c3\"}\n"
                        .to_vec(),
                pos: 0,
            };
            let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut out = Vec::new();
                let config = BatchConfig::for_jobs(jobs);
                let result = run_batch(input, &mut out, &config, &mut |_| {});
                (result.map(|s| s.jobs).map_err(|e| e.to_string()), out.len())
            }));
            let _ = tx.send(match ended {
                Ok((result, _)) => format!("{result:?}"),
                Err(_) => "panicked".to_owned(),
            });
        });
        let ended = rx.recv_timeout(Duration::from_secs(20));
        let ended = ended.unwrap_or_else(|_| panic!("--jobs {jobs}: the batch never ended"));
        assert!(
            ended == "panicked" || ended.contains("Err"),
            "--jobs {jobs}: {ended}"
        );
    }
}

/// A batch whose `progress` (the library host's) panics at the first result, with more lines
/// than the queue holds (its reader waits for room), ends with the panic, with `--jobs 1` and
/// with more: the reader is stopped. Before the fix it waited for room for good.
#[test]
fn a_progress_that_panics_ends_the_batch() {
    let _apart = common::beside_forks();
    for jobs in [1, 2] {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let lines = "{\"id\":1,\"code_hex\":\"b82a000000c3\"}\n".repeat(1000);
            let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut out = Vec::new();
                let config = BatchConfig::for_jobs(jobs);
                let result = run_batch(lines.as_bytes(), &mut out, &config, &mut |_| {
                    panic!("the host's progress fails")
                });
                result.map(|s| s.jobs).map_err(|e| e.to_string())
            }));
            let _ = tx.send(match ended {
                Ok(result) => format!("{result:?}"),
                Err(_) => "panicked".to_owned(),
            });
        });
        let ended = rx.recv_timeout(Duration::from_secs(30));
        let ended = ended.unwrap_or_else(|_| panic!("--jobs {jobs}: the batch never ended"));
        assert_eq!(ended, "panicked", "--jobs {jobs}");
    }
}

/// How `bytejail batch` gets its lines.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    /// A named pipe kept open until every result is out: the batch's reader thread (quiet)
    /// lives while the jobs run.
    Fifo,
    /// A regular file: the job thread reads each line itself.
    File,
    /// Standard input kept open until every result is out: the CLI's thread that feeds it
    /// (not quiet) lives while the jobs run.
    Stdin,
}

/// A batch's end: its exit status (`None`: killed at the bound), its result lines, its stderr.
struct Ended {
    status: Option<i32>,
    results: Vec<Value>,
    stderr: String,
}

/// `child`'s exit status once it ends, or `None` if it has not by `start + bound`: then it is
/// killed. Reaped either way.
fn exit_within(
    child: &mut std::process::Child,
    start: Instant,
    bound: Duration,
) -> Option<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `bytejail batch ARGS` on `input` the `way` given, killed after `bound`. For a pipe
/// the writing end stays open until `expected` results came (or the bound).
fn batch_way(way: Way, args: &[&str], input: &str, expected: usize, bound: Duration) -> Ended {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs");
    match way {
        Way::File => std::fs::write(&path, input).unwrap(),
        Way::Fifo => assert_eq!(common::fifo_in(dir.path()), path),
        Way::Stdin => {}
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_bytejail"));
    command.arg("batch").args(args);
    if way == Way::Stdin {
        command.arg("-").stdin(Stdio::piped());
    } else {
        command.arg(&path).stdin(Stdio::null());
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let lines = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            all.push(line);
            let _ = tx.send(());
        }
        all
    });
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Written from a thread of its own (a long input fills the pipe while the batch runs).
    let writer: Option<Box<dyn Write + Send>> = match way {
        Way::File => None,
        Way::Stdin => Some(Box::new(child.stdin.take().unwrap())),
        Way::Fifo => {
            // Opening blocks until bytejail opens its end, which it does at once.
            Some(Box::new(
                std::fs::OpenOptions::new().write(true).open(&path).unwrap(),
            ))
        }
    };
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let input = input.to_owned();
    let feeder = writer.map(|mut writer| {
        std::thread::spawn(move || {
            let _ = writer.write_all(input.as_bytes());
            let _ = writer.flush();
            // Kept open until the results are in (or the batch is over).
            let _ = done_rx.recv();
        })
    });
    let mut got = 0;
    while got < expected {
        let left = bound.saturating_sub(start.elapsed());
        if rx.recv_timeout(left).is_err() {
            break;
        }
        got += 1;
    }
    drop(done_tx);
    let status = exit_within(&mut child, start, bound).map(|exit| exit.code().unwrap_or(-1));
    if let Some(feeder) = feeder {
        feeder.join().unwrap();
    }
    let results = lines
        .join()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    Ended {
        status,
        results,
        stderr: errors.join().unwrap(),
    }
}

/// Guests that may run under strict mode: real and forged faults, a violation, a spin to the
/// deadline.
fn strict_guests() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("crash", crash()),
        ("forged fault record", common::forged_fault_record()),
        (
            "violation",
            gas("mov rdi, 0x1111\nmov eax, 39\nsyscall\nret"),
        ),
        ("int3", gas("int3\nret")),
        ("ud2", gas("ud2")),
        ("return", gas("mov eax, 42\nret")),
        (
            "forged rt_sigreturn frame then a real fault",
            // The frame blocks every signal and jumps to the fault: the fault is still the
            // kernel's (SIGSEGV cannot stay blocked for a fault).
            gas("
                sub rsp, 512
                mov rdi, rsp
                mov ecx, 512 / 8
                xor eax, eax
                rep stosq
                mov qword ptr [rsp + 296], -1
                lea rax, [rsp + 512]
                mov [rsp + 160], rax
                lea rax, [rip + 2f]
                mov [rsp + 168], rax
                mov qword ptr [rsp + 176], 0x202
                mov word ptr [rsp + 184], 0x33
                mov word ptr [rsp + 190], 0x2b
                mov eax, 15
                syscall
            2:  mov eax, 0x55
                mov qword ptr [rax], 1"),
        ),
    ]
}

/// Guests that need a profile: signal storms, faults in handlers, ptrace calls, threads and
/// children in any order.
fn profile_guests() -> Vec<(&'static str, Vec<u8>)> {
    let getpid = format!("{UNMASK}\nmov eax, 39\nsyscall\nmov r12, rax");
    let loop_of = |n: u32, body: &str| format!("mov r13d, {n}\n7: {body}\ndec r13d\njnz 7b");
    let storm = &common::sigurg_storm(39);
    vec![
        (
            "3000 ignored SIGURG",
            gas(&format!("{getpid}\n{}\nmov eax, 11\nret", loop_of(3000, &kill_self(23)))),
        ),
        (
            "3000 caught SIGUSR1",
            with_usr1_handler("ret", &format!("{}\nmov eax, 77\nret", loop_of(3000, &kill_self(10)))),
        ),
        (
            "fault in a handler",
            with_usr1_handler("mov eax, 16\nmov qword ptr [rax], 1\nret", &format!("{}\nmov eax, 77\nret", kill_self(10))),
        ),
        (
            "int3 in a handler",
            with_usr1_handler("int3\nret", &format!("{}\nmov eax, 77\nret", kill_self(10))),
        ),
        ("SIGSTOP then SIGCONT", gas(&format!("{getpid}\n{}\n{}\nmov eax, 9\nret", kill_self(19), kill_self(18)))),
        ("SIGBUS itself", gas(&format!("{getpid}\n{}\nmov eax, 9\nret", kill_self(7)))),
        (
            "tgkill SIGFPE",
            gas(&format!("{getpid}\nmov rdi, r12\nmov rsi, r12\nmov edx, 8\nmov eax, 234\nsyscall\nmov eax, 9\nret")),
        ),
        ("PTRACE_TRACEME", gas("xor edi, edi\nmov eax, 101\nsyscall\nret")),
        (
            "PTRACE_TRACEME then a fault",
            gas("xor edi, edi\nmov eax, 101\nsyscall\nmov eax, 0x33\nmov qword ptr [rax], 1"),
        ),
        (
            "PTRACE_ATTACH its parent",
            gas("mov eax, 110\nsyscall\nmov rsi, rax\nmov edi, 16\nxor edx, edx\nxor r10d, r10d\nmov eax, 101\nsyscall\nret"),
        ),
        (
            "a thread faults while the leader stops",
            cloned(THREAD, &format!("{SPIN}\nmov eax, 16\nmov qword ptr [rax], 1"), storm),
        ),
        (
            "the leader exits first, the thread ends the group",
            cloned(THREAD, &format!("{SPIN}\nmov edi, 6\nmov eax, 231\nsyscall"), "mov edi, 3\nmov eax, 60\nsyscall"),
        ),
        (
            "the leader faults while a thread stops",
            cloned(THREAD, storm, &format!("{SPIN}\nmov eax, 16\nmov qword ptr [rax], 1")),
        ),
        (
            "a child that outlives the worker",
            cloned(SIGCHLD, "3: jmp 3b", "mov eax, 3\nret"),
        ),
        (
            "a setsid child that outlives the worker",
            cloned(SIGCHLD, "mov eax, 112\nsyscall\n3: jmp 3b", "mov eax, 3\nret"),
        ),
        (
            "a child sends its parent SIGSEGV",
            cloned(
                SIGCHLD,
                "mov eax, 110\nsyscall\nmov rdi, rax\nmov esi, 11\nmov eax, 62\nsyscall\n3: jmp 3b",
                &format!("{SPIN}\nmov eax, 3\nret"),
            ),
        ),
    ]
}

/// One guest as the first (and own-traced, where the way allows) line of a batch, then a
/// plain job (a zygote's worker): both results as the library reports them, before the bound,
/// and no forged fault verified.
fn guest_as_library(way: Way, name: &str, code: &[u8], mode: &[&str], options: &RunOptions) {
    let library = bytejail::run(code, b"", options).unwrap().to_json();
    let plain = gas("mov eax, 42\nret");
    let input = format!(
        "{{\"id\":1,\"code_hex\":\"{}\"}}\n{{\"id\":2,\"code_hex\":\"{}\"}}\n",
        hex(code),
        hex(&plain)
    );
    let mut args = vec!["--jobs", "1", "-q", "--timeout", "3s"];
    args.extend_from_slice(mode);
    let ended = batch_way(way, &args, &input, 2, Duration::from_secs(30));
    let what = format!("{name} {way:?} {mode:?}");
    assert_eq!(ended.status, Some(0), "{what}: {}", ended.stderr);
    assert_eq!(ended.results.len(), 2, "{what}: {}", ended.stderr);
    let first = &ended.results[0];
    assert_eq!(first["id"], 1, "{what}: {first}");
    assert_eq!(
        common::report_essence(first),
        common::report_essence(&library),
        "{what}: {first} against the library's {library}"
    );
    assert!(
        !(first["fault"]["address"] == 0xdeadbeef_u64 && first["fault"]["verified"] == true),
        "{what}: a forged fault verified: {first}"
    );
    assert_eq!(ended.results[1]["outcome"], "returned", "{what}");
    assert_eq!(ended.results[1]["rax"], 42, "{what}");
}

/// Strict-mode guests as the first line of `bytejail batch --jobs 1` from a named pipe that
/// stays open (own-traced beside the reader thread) and from a regular file (no reader
/// thread) report what the library does; the twin: standard input (a tracer process).
#[test]
fn strict_guests_report_as_the_library_through_a_fifo_and_a_file() {
    let _apart = common::beside_forks();
    let options =
        RunOptions::default().with_limits(Limits::default().with_timeout(Duration::from_secs(3)));
    for (name, code) in strict_guests() {
        for way in [Way::Fifo, Way::File, Way::Stdin] {
            guest_as_library(way, name, &code, &[], &options);
        }
    }
}

/// Hostile guests under the allow-all profile, with `--max-procs 1` (own-traced) and 4 (a
/// tracer process), as the first line of `bytejail batch --jobs 1` from a named pipe and a
/// file, report what the library does; the twin: standard input.
#[test]
fn profile_guests_report_as_the_library_through_a_fifo_and_a_file() {
    let _apart = common::beside_forks();
    if !common::namespaces() {
        eprintln!("not root: no profile workers here; skipping");
        return;
    }
    let (_dir, allow_all) = allow_all_file();
    for procs in [1u32, 4] {
        let options = common::profile_options().with_limits(
            Limits::default()
                .with_max_procs(procs)
                .with_timeout(Duration::from_secs(3)),
        );
        let procs_text = procs.to_string();
        let mode = ["--policy", &allow_all, "--max-procs", &procs_text];
        for (name, code) in profile_guests() {
            if procs == 1 && (name.contains("thread") || name.contains("child")) {
                continue; // clone refused: nothing new to see
            }
            for way in [Way::Fifo, Way::File, Way::Stdin] {
                guest_as_library(way, name, &code, &mode, &options);
            }
        }
    }
}

/// A result line's essence: an error line whole, a report's [`common::report_essence`] with
/// its id.
fn line_essence(line: &Value) -> Value {
    if line.get("error").is_some() {
        return line.clone();
    }
    let mut essence = common::report_essence(line);
    essence["id"] = line["id"].clone();
    essence
}

/// A batch of every kind of line: fresh jobs (crash, forged record, timeout), same-code
/// groups, errors (not JSON, bad hex, a field out of range), blank lines, an over-long line,
/// a line with a 1 MiB `input_hex`.
fn mixed_lines() -> String {
    let ret = hex(&gas("mov eax, 42\nret"));
    // Returns its input's length and first byte.
    let length = hex(&gas("mov rax, rsi\nmovzx ebx, byte ptr [rdi]\nret"));
    let mut lines = vec![
        format!("{{\"id\":\"a\",\"code_hex\":\"{ret}\"}}"),
        String::new(),
        "   ".into(),
        "not json".into(),
        format!("{{\"id\":\"crash\",\"code_hex\":\"{}\"}}", hex(&crash())),
        format!(
            "{{\"id\":\"forged\",\"code_hex\":\"{}\"}}",
            hex(&common::forged_fault_record())
        ),
        format!("{{\"id\":\"spin\",\"code_hex\":\"ebfe\",\"timeout_ms\":100}}"),
    ];
    for (i, group) in ["g1", "g1", "g2", "g1"].iter().enumerate() {
        lines.push(format!(
            "{{\"id\":\"s{i}\",\"code_hex\":\"{length}\",\"group\":\"{group}\",\"input_hex\":\"0{i}0102\"}}"
        ));
    }
    lines.push("{\"id\":\"badhex\",\"code_hex\":\"zz\"}".into());
    lines.push(format!(
        "{{\"id\":\"range\",\"code_hex\":\"{ret}\",\"timeout_ms\":0}}"
    ));
    // Longer than 8 x (--max-code + --max-input) + 64 KiB: skipped unread.
    lines.push(format!(
        "{{\"id\":\"long\",\"code_hex\":\"{}\"}}",
        "c3".repeat(5 << 20)
    ));
    lines.push(format!(
        "{{\"id\":\"big\",\"code_hex\":\"{length}\",\"input_hex\":\"{}\"}}",
        "5a".repeat(512 << 10)
    ));
    lines.push(format!(
        "{{\"id\":\"crash2\",\"code_hex\":\"{}\"}}",
        hex(&crash())
    ));
    lines.push(format!("{{\"id\":\"z\",\"code_hex\":\"{ret}\"}}"));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The same mixed batch through a file (no reader thread), a named pipe kept open (a quiet
/// reader thread), standard input, and `--jobs 2 --ordered` from a file: the same result lines
/// (ids, outcomes, errors, order), strict and under the allow-all profile, with and without
/// `--reuse same-code`.
#[test]
fn a_mixed_batch_gives_the_same_lines_every_way() {
    let _apart = common::beside_forks();
    let (_dir, allow_all) = allow_all_file();
    let input = mixed_lines();
    let expected = 15; // every line but the blank ones
    let mut modes: Vec<Vec<&str>> = vec![vec![], vec!["--reuse", "same-code"]];
    if common::namespaces() {
        modes.push(vec!["--policy", &allow_all]);
        modes.push(vec!["--policy", &allow_all, "--reuse", "same-code"]);
    }
    for mode in &modes {
        let mut first: Option<Vec<Value>> = None;
        for (way, jobs) in [
            (Way::File, "1"),
            (Way::Fifo, "1"),
            (Way::Stdin, "1"),
            (Way::File, "2"),
        ] {
            let mut args = vec![
                "-q",
                "--jobs",
                jobs,
                "--ordered",
                "--max-code",
                "64KiB",
                "--max-input",
                "512KiB",
            ];
            args.extend_from_slice(mode);
            let ended = batch_way(way, &args, &input, expected, Duration::from_secs(60));
            let what = format!("{way:?} --jobs {jobs} {mode:?}");
            assert_eq!(ended.status, Some(1), "{what}: {}", ended.stderr);
            let lines: Vec<Value> = ended.results.iter().map(line_essence).collect();
            assert_eq!(lines.len(), expected, "{what}: {lines:?}");
            let by_id = |id: &str| {
                lines
                    .iter()
                    .find(|l| l["id"] == id)
                    .cloned()
                    .unwrap_or_default()
            };
            assert_eq!(by_id("crash")["outcome"], "crashed", "{what}");
            assert_eq!(by_id("crash")["fault"]["verified"], true, "{what}");
            assert_eq!(by_id("forged")["fault"]["address"], 8, "{what}");
            assert_eq!(by_id("spin")["outcome"], "timeout", "{what}");
            assert_eq!(by_id("big")["rax"], 512 << 10, "{what}");
            match &first {
                None => first = Some(lines),
                Some(first) => assert_eq!(&lines, first, "{what} against the file's lines"),
            }
        }
    }
}

/// `bytejail batch --jobs N FILE` with a bound: (status, stdout, stderr); status `None` when
/// it was killed at the bound.
fn batch_file(
    jobs: &str,
    file: &std::path::Path,
    bound: Duration,
) -> (Option<i32>, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
        .args(["batch", "--jobs", jobs])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(output) => {
            let output = output.unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
        Err(_) => {
            // SAFETY: kill of the child started above, still unreaped (its waiter holds it).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            (None, String::new(), String::new())
        }
    }
}

/// Odd batch files, read by the job thread (`--jobs 1`) and by a reader with more jobs: a
/// directory and a missing file are unreadable FILEs (status 2, one line, nothing ran);
/// /dev/null is an empty batch (status 0). Before the fix a directory ended with status 125,
/// "runner failed", as if bytejail itself had failed.
#[test]
fn odd_batch_files_end_with_the_documented_status() {
    let _apart = common::beside_forks();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for jobs in ["1", "2"] {
        for (file, status) in [
            (dir.path(), 2),
            (missing.as_path(), 2),
            (std::path::Path::new("/dev/null"), 0),
        ] {
            let (got, out, err) = batch_file(jobs, file, Duration::from_secs(20));
            let what = format!("--jobs {jobs} {}", file.display());
            assert_eq!(got, Some(status), "{what}: {err}");
            assert!(out.is_empty(), "{what}: {out}");
            if status == 2 {
                assert_eq!(err.lines().count(), 1, "{what}: {err}");
                assert!(err.contains("cannot read"), "{what}: {err}");
                assert!(!err.contains("panicked"), "{what}: {err}");
            }
        }
    }
}

/// /dev/zero as the batch file: one endless line, held up to the longest line allowed
/// (8 x (--max-code + --max-input) + 64 KiB, here 1.1 MiB) then skipped without being held
/// (the batch's memory stays small), with `--jobs 1` (a reader thread: a device's reads could
/// wait) and 2.
#[test]
fn dev_zero_as_the_batch_file_is_never_held_in_memory() {
    let _apart = common::beside_forks();
    for jobs in ["1", "2"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
            .args([
                "batch",
                "--max-code",
                "64KiB",
                "--max-input",
                "64KiB",
                "--jobs",
                jobs,
            ])
            .arg("/dev/zero")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let rss: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            rss < 64 << 10,
            "--jobs {jobs}: {rss} KiB after a second of /dev/zero"
        );
    }
}

/// A batch file that grows or shrinks while `--jobs 1` reads it line by line: lines appended
/// while the first job runs are run too (read once the job is done), a file truncated while
/// the first job runs ends the batch after the lines already read (the one its last read cut
/// an error line); never a hang.
#[test]
fn a_batch_file_that_changes_while_it_runs() {
    let _apart = common::beside_forks();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs");
    let ret = hex(&gas("mov eax, 42\nret"));
    let spin = "{\"id\":0,\"code_hex\":\"ebfe\",\"timeout_ms\":700}\n";
    let line = |id: u32| format!("{{\"id\":{id},\"code_hex\":\"{ret}\"}}\n");
    for append in [true, false] {
        let mut text = spin.to_owned();
        // More than the job thread's first read (128 KiB): truncating cuts lines not read.
        let mut id = 1;
        while text.len() < 400 << 10 {
            text.push_str(&line(id));
            id += 1;
        }
        std::fs::write(&path, &text).unwrap();
        let changer = {
            let path = path.clone();
            let more: String = (100_000..100_010).map(line).collect();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                if append {
                    let mut file = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .unwrap();
                    file.write_all(more.as_bytes()).unwrap();
                } else {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                }
            })
        };
        let (status, out, err) = batch_file("1", &path, Duration::from_secs(30));
        changer.join().unwrap();
        let mut results: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if append {
            assert_eq!(status, Some(0), "append {append}: {err}");
        } else {
            // The line the first read cut, its end gone: an error line, the batch's last.
            assert_eq!(status, Some(1), "truncated: {err}");
            let cut = results.pop().unwrap();
            assert!(cut["error"].is_string(), "truncated: {cut}");
        }
        assert_eq!(results[0]["outcome"], "timeout", "append {append}");
        let ids: Vec<u64> = results.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        // In order, none twice, none run but whole lines.
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "append {append}: {ids:?}"
        );
        assert!(
            results[1..].iter().all(|r| r["rax"] == 42),
            "append {append}"
        );
        if append {
            assert_eq!(results.len(), id as usize + 10, "append {append}");
        } else {
            assert!(
                results.len() < id as usize,
                "truncated: {} results",
                results.len()
            );
        }
    }
}

/// `bytejail batch FILE | head -1`: once stdout is closed the batch ends at once, status 0,
/// with `--jobs 1` (no reader thread: results go out as the buffer fills) and 2; the twin,
/// standard input.
#[test]
fn a_closed_stdout_ends_a_batch_from_a_file() {
    let _apart = common::beside_forks();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs");
    let ret = hex(&gas("mov eax, 42\nret"));
    let text: String = (0..3000)
        .map(|id| format!("{{\"id\":{id},\"code_hex\":\"{ret}\"}}\n"))
        .collect();
    std::fs::write(&path, &text).unwrap();
    for (jobs, file) in [
        ("1", path.to_str().unwrap()),
        ("2", path.to_str().unwrap()),
        ("1", "-"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
            .args(["batch", "-q", "--jobs", jobs, file])
            .stdin(std::fs::File::open(&path).unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        drop(stdout);
        let status = exit_within(&mut child, Instant::now(), Duration::from_secs(20));
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let _ = child.wait();
        let what = format!("--jobs {jobs} {file}");
        // In completion order with more jobs: any line's result.
        assert!(
            first.contains("\"outcome\":\"returned\""),
            "{what}: {first}"
        );
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{what}: {err}");
        assert!(err.is_empty(), "{what}: {err}");
    }
}

/// Guests that keep going to their deadline (a spin; under a profile, a stop storm, a thread
/// storming its leader, a child that outlives the worker and a leader spinning) as the first
/// line of `bytejail batch --jobs 1` from a named pipe and from a file: "timeout" or their
/// own end, the batch over well before the bound, the next line right, and no process of the
/// guest's left (each names itself `marker`). The twin: standard input.
#[test]
fn guests_that_keep_going_end_at_their_deadline_and_leave_nothing() {
    let _apart = common::beside_forks();
    let (_dir, allow_all) = allow_all_file();
    let named = |marker: &str, body: &str| {
        gas(&format!(
            "{UNMASK}\nlea rsi, [rip + name]\nmov edi, 15\nmov eax, 157\nsyscall\n{body}\nname: .asciz \"{marker}\""
        ))
    };
    let storm = "mov eax, 39\nsyscall\nmov r12, rax\n3: mov rdi, r12\nmov esi, 23\nmov eax, 62\nsyscall\njmp 3b";
    let thread_storm = "mov eax, 39\nsyscall\nmov r12, rax\n3: mov rdi, r12\nmov rsi, r12\nmov edx, 23\nmov eax, 234\nsyscall\njmp 3b";
    let mut jobs: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![("spin", gas("1: jmp 1b"), vec![])];
    if common::namespaces() {
        let profile = |procs| vec!["--policy", allow_all.as_str(), "--max-procs", procs];
        jobs.push(("rq12-storm", named("rq12-storm", storm), profile("1")));
        jobs.push((
            "rq12-thread",
            named(
                "rq12-thread",
                &common::clone_source(THREAD, thread_storm, "4: jmp 4b"),
            ),
            profile("4"),
        ));
        jobs.push((
            "rq12-outlive",
            named(
                "rq12-outlive",
                &common::clone_source(SIGCHLD, "3: jmp 3b", "mov eax, 3\nret"),
            ),
            profile("4"),
        ));
        jobs.push((
            "rq12-setsid",
            named(
                "rq12-setsid",
                &common::clone_source(SIGCHLD, "mov eax, 112\nsyscall\n3: jmp 3b", "4: jmp 4b"),
            ),
            profile("4"),
        ));
    }
    let ret = hex(&gas("mov eax, 42\nret"));
    for (name, code, mode) in &jobs {
        for way in [Way::Fifo, Way::File, Way::Stdin] {
            let input = format!(
                "{{\"id\":1,\"code_hex\":\"{}\",\"timeout_ms\":300}}\n{{\"id\":2,\"code_hex\":\"{ret}\"}}\n",
                hex(code)
            );
            let mut args = vec!["-q", "--jobs", "1"];
            args.extend_from_slice(mode);
            let start = Instant::now();
            let ended = batch_way(way, &args, &input, 2, Duration::from_secs(30));
            let took = start.elapsed();
            let what = format!("{name} {way:?}");
            assert_eq!(ended.status, Some(0), "{what}: {}", ended.stderr);
            assert!(took < Duration::from_secs(10), "{what}: took {took:?}");
            let first = &ended.results[0];
            let expected = if *name == "rq12-outlive" {
                "returned"
            } else {
                "timeout"
            };
            assert_eq!(first["outcome"], expected, "{what}: {first}");
            assert_eq!(ended.results[1]["rax"], 42, "{what}");
            if name.starts_with("rq12") {
                // Killed with the worker (init of its PID namespace): gone within moments.
                let mut left = common::marked(name);
                for _ in 0..100 {
                    if left.is_empty() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    left = common::marked(name);
                }
                assert!(left.is_empty(), "{what}: left {left:?}");
            }
        }
    }
}

/// The forged fault record as the first line of `bytejail batch --jobs 1` from a named pipe
/// and a file: never vouched for. The twin, `--no-trace`: the record is believed but says it
/// is unverified; and `--jobs 2` (a tracer process per CPU): the kernel's fault, verified.
#[test]
fn a_forged_record_is_never_verified_through_a_fifo_or_a_file() {
    let _apart = common::beside_forks();
    let forged = common::forged_fault_record();
    let input = format!("{{\"id\":1,\"code_hex\":\"{}\"}}\n", hex(&forged));
    for way in [Way::Fifo, Way::File] {
        for (mode, verified) in [
            (vec!["--jobs", "1"], true),
            (vec!["--jobs", "1", "--no-trace"], false),
            (vec!["--jobs", "2"], true),
        ] {
            let mut args = vec!["-q"];
            args.extend_from_slice(&mode);
            let ended = batch_way(way, &args, &input, 1, Duration::from_secs(30));
            let what = format!("{way:?} {mode:?}");
            let result = &ended.results[0];
            assert_eq!(result["outcome"], "crashed", "{what}: {result}");
            assert_eq!(result["fault"]["verified"], verified, "{what}: {result}");
            if verified {
                assert_eq!(result["fault"]["address"], 8, "{what}: {result}");
            } else {
                assert_eq!(
                    result["fault"]["address"], 0xdeadbeef_u64,
                    "{what}: {result}"
                );
            }
        }
    }
}

/// `bytejail batch --jobs 1` from a named pipe and from standard input where no thread can
/// start (a pids cgroup that holds one task): one line and status 125, not a panic (101).
/// Before the fix the reader thread's start panicked. The twin: a regular file, read with no
/// thread, runs (each job an error line: no worker can be forked either).
#[test]
fn a_batch_that_cannot_start_its_reader_fails_cleanly() {
    let _apart = common::beside_forks();
    let pids = std::path::Path::new("/sys/fs/cgroup/pids");
    if !common::namespaces() || !pids.join("cgroup.procs").exists() {
        eprintln!("no cgroup v1 pids controller to write here; skipping");
        return;
    }
    let group = pids.join(format!("bytejail-review12-{}", std::process::id()));
    std::fs::create_dir_all(&group).unwrap();
    std::fs::write(group.join("pids.max"), "1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fifo = common::fifo_in(dir.path());
    let file = dir.path().join("file");
    let line = "{\"id\":1,\"code_hex\":\"c3\"}\n";
    std::fs::write(&file, line).unwrap();
    let procs = group.join("cgroup.procs");
    let limited = |batch_file: &str| {
        // The shell moves itself into the group, then becomes bytejail.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {} && exec {} batch -q --jobs 1 {batch_file}",
                procs.display(),
                env!("CARGO_BIN_EXE_bytejail")
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(line.as_bytes());
        drop(stdin);
        let fifo = fifo.clone();
        let writer = (batch_file == fifo.to_str().unwrap()).then(|| {
            std::thread::spawn(move || {
                if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&fifo) {
                    let _ = w.write_all(line.as_bytes());
                }
            })
        });
        let output = child.wait_with_output().unwrap();
        if let Some(writer) = writer {
            writer.join().unwrap();
        }
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let runs = [
        limited(fifo.to_str().unwrap()),
        limited("-"),
        limited(file.to_str().unwrap()),
    ];
    let _ = std::fs::remove_dir(&group);
    for (status, out, err) in &runs[..2] {
        assert_eq!(*status, Some(125), "{out} {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("starting a batch thread"), "{err}");
    }
    let (status, out, err) = &runs[2];
    assert_eq!(*status, Some(1), "{out} {err}");
    assert!(out.contains("\"error\""), "{out}");
}

/// `bytejail batch F >> F`: its results, appended to the batch file it reads, would be read
/// back as lines, each giving another result, for good (with `--jobs 1`, read line by line,
/// and with more). Refused instead: status 2, one line, the file as it was. Before the fix
/// the batch never ended and the file grew without bound. The twin: results to another file.
#[test]
fn a_batch_whose_results_go_to_its_own_file_is_refused() {
    let _apart = common::beside_forks();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs");
    let other = dir.path().join("results");
    let ret = hex(&gas("mov eax, 42\nret"));
    let text: String = (0..300)
        .map(|id| format!("{{\"id\":{id},\"code_hex\":\"{ret}\"}}\n"))
        .collect();
    for jobs in ["1", "2"] {
        for same in [true, false] {
            std::fs::write(&path, &text).unwrap();
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(if same { &path } else { &other })
                .unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
                .args(["batch", "-q", "--jobs", jobs])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let status = exit_within(&mut child, Instant::now(), Duration::from_secs(20))
                .and_then(|status| status.code());
            let _ = child.wait();
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let what = format!("--jobs {jobs} same file {same}");
            if same {
                assert_eq!(status, Some(2), "{what}: {err}");
                assert_eq!(err.lines().count(), 1, "{what}: {err}");
                assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "{what}");
            } else {
                assert_eq!(status, Some(0), "{what}: {err}");
                assert_eq!(
                    std::fs::read_to_string(&other).unwrap().lines().count(),
                    300
                );
                std::fs::remove_file(&other).unwrap();
            }
        }
    }
}

/// A client of `bytejail batch --jobs 1 FIFO` that waits for each answer before it writes the
/// next line gets every answer while the pipe stays open (the reader thread reads ahead, and
/// results go out before it waits): the first job own-traced, the later ones a zygote's, each
/// crash verified.
#[test]
fn a_client_waiting_for_each_answer_through_a_fifo_gets_it() {
    let _apart = common::beside_forks();
    let dir = tempfile::tempdir().unwrap();
    let fifo = common::fifo_in(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
        .args(["batch", "-q", "--jobs", "1"])
        .arg(&fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    for id in 0..6 {
        writeln!(writer, "{{\"id\":{id},\"code_hex\":\"{}\"}}", hex(&crash())).unwrap();
        writer.flush().unwrap();
        let answer = rx.recv_timeout(Duration::from_secs(5));
        let answer =
            answer.unwrap_or_else(|_| panic!("no answer to line {id} while the pipe stays open"));
        let result: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(result["id"], id, "{result}");
        assert_eq!(result["outcome"], "crashed", "{result}");
        assert_eq!(result["fault"]["verified"], true, "{result}");
    }
    drop(writer);
    assert!(child.wait().unwrap().success());
}
