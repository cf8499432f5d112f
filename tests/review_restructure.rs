//! An attacker's review of the restructure that split `runner/worker.rs` into
//! `runner/worker/{mod,protocol,stages,blob}.rs` and `runner/host.rs` into
//! `runner/host/{mod,classify,lifecycle,watch,walls}.rs` (issue 12, section 2).
//!
//! The restructure meant to change nothing a guest can do or a report says. These tests pin,
//! from outside, what the worker's setup stages leave behind for a guest that holds every
//! syscall (a profile that allows everything), through each way a worker is made (a fresh
//! fork, a zygote's fork, a same-code worker, a pooled worker), so that a stage that moves
//! after the guest, runs twice, or no longer runs shows up here:
//! - the descriptors the guest can reach (`move_fds`, `close_range`);
//! - the limits it cannot raise (`no_core_dump`, `limits`, `drop_privileges`);
//! - the process state the stages set (`pdeathsig`, `block_signals`, `own_process_group`,
//!   `no_core_dump`, `drop_privileges`, seccomp);
//! - a guest's forged setup failure, which the host must not believe (`classify`,
//!   `setup_failed_unreaped`);
//! - workers that die with their host (`pdeathsig` + `exit_if_orphaned`, in the fresh worker and
//!   in the zygote's preamble).

mod common;

use std::io::BufRead;
use std::time::{Duration, Instant};

use bytejail::{Outcome, Pool, Report, RunOptions, SameCode, Zygote};
use common::{alive, children_of, comm, gas, marked, profile_options, returned_rax, start_host};

/// Runs `code` (with no input) under `options` in each kind of worker: a fresh fork, a
/// zygote's fork, a same-code worker (twice: its first input, then one after it parked again),
/// and a pooled worker. Returns the reports, named.
fn in_every_worker(code: &[u8], options: &RunOptions) -> Vec<(&'static str, Report)> {
    let mut reports = Vec::new();
    reports.push(("run", bytejail::run(code, b"", options).unwrap()));
    let zygote = Zygote::start().unwrap();
    reports.push(("zygote", zygote.run(code, b"", options).unwrap()));
    let mut same = SameCode::new(code, options).unwrap();
    reports.push(("same-code first", same.run(b"").unwrap()));
    reports.push(("same-code again", same.run(b"").unwrap()));
    let mut same = SameCode::with_zygote(code, options, &zygote).unwrap();
    reports.push(("same-code zygote", same.run(b"").unwrap()));
    let pool = Pool::new(options.clone(), 1).unwrap();
    reports.push(("pool", pool.run(code, b"", options).unwrap()));
    reports
}

/// Guest source: the descriptors it holds, as a bit mask of fds 0..62 (bit 63: any fd from 63
/// to 4095), found with `fcntl(fd, F_GETFD)`, returned in rax.
const FD_PROBE: &str = "    xor r12, r12
             xor r13, r13
         1:  mov edi, r13d
             mov esi, 1
             mov eax, 72
             syscall
             test rax, rax
             js 2f
             mov rcx, r13
             cmp rcx, 63
             jb 3f
             mov ecx, 63
         3:  bts r12, rcx
         2:  inc r13
             cmp r13, 4096
             jb 1b
             mov rax, r12
             ret";

/// A profile guest reaches only the descriptors its worker hands it: fds 0 and 1 in a fresh
/// or zygote-forked worker, and the go / done pipes (3, 4) besides in a same-code or pooled
/// one. The arena's memfd, the zygote's socket, the host's pidfd and every descriptor the host
/// had open are closed before the guest runs.
#[test]
fn a_profile_guest_sees_only_its_own_descriptors() {
    let code = gas(FD_PROBE);
    for (how, report) in in_every_worker(&code, &profile_options()) {
        let open = returned_rax(&report) as u64;
        let expected: u64 = if how.starts_with("same-code") || how == "pool" {
            0b11011
        } else {
            0b11
        };
        assert_eq!(
            open, expected,
            "{how}: the guest holds fds {open:#b}, expected {expected:#b}"
        );
    }
}

/// The twin of the test above: the probe does see a descriptor the guest opens itself, so a
/// descriptor left open by the setup would show.
#[test]
fn the_descriptor_probe_sees_a_descriptor_the_guest_opens() {
    // dup(1) lands on the lowest free number: 2 in a fresh worker.
    let mut source = String::from(
        "    mov edi, 1
             mov eax, 32
             syscall\n",
    );

    source.push_str(FD_PROBE);
    let report = bytejail::run(&gas(&source), b"", &profile_options()).unwrap();
    assert_eq!(returned_rax(&report) as u64, 0b111);
}

/// Guest: `read(0, .., 1)` in the low byte of rax and `write(0, .., 1)` in the next.
const FD_0_PROBE: &str = "    sub rsp, 16
             xor edi, edi
             mov rsi, rsp
             mov edx, 1
             xor eax, eax
             syscall
             movzx r12, al
             xor edi, edi
             mov rsi, rsp
             mov edx, 1
             mov eax, 1
             syscall
             movzx rax, al
             shl rax, 8
             or rax, r12
             add rsp, 16
             ret";

/// A profile guest's fd 0 is at EOF and cannot be written, in every kind of worker, on every
/// input: the host holds no write end of it (a same-code worker's read end now stays open in
/// the host until the worker ends, which gives the guest nothing: readers do not matter to a
/// read at EOF).
///
/// HOLE (before and after the restructure, found here): a pooled worker's fd 0 is the pipe its
/// go byte came on, and with no input `drive` kept the host's write end open until the worker
/// was reaped (a `match` on the `input_w` place that binds nothing in its `_` arm neither
/// moves nor drops it; the `let` only shadows it). The guest's `read(0)` then blocked until the
/// job's timeout: a pooled job reported `Timeout` where a fresh worker (and `Zygote::run`)
/// reports a return, against the pool's promise of the same report.
/// Fixed: `drive` (`runner/host/lifecycle.rs`) drops the write end when there is no input.
#[test]
fn a_profile_guests_fd_0_is_at_eof_and_read_only() {
    let code = gas(FD_0_PROBE);
    let ebadf = (-libc::EBADF) as u8 as u64;
    for (how, report) in in_every_worker(&code, &profile_options()) {
        assert!(
            matches!(report.outcome, Outcome::Returned(_)),
            "{how}: {}",
            report.summary()
        );
        assert_eq!(returned_rax(&report) as u64, ebadf << 8, "{how}");
    }
}

/// The same hole under strict mode: a pooled job with no input that reads fd 0 gets the report
/// a fresh worker gives (EOF at once, then a return), not a timeout.
#[test]
fn a_pooled_job_without_input_reads_eof_as_a_fresh_worker_does() {
    let code = gas("    sub rsp, 16
             xor edi, edi
             mov rsi, rsp
             mov edx, 1
             xor eax, eax
             syscall
             add rsp, 16
             ret");
    let options = RunOptions::default();
    let fresh = bytejail::run(&code, b"", &options).unwrap();
    assert_eq!(returned_rax(&fresh), 0);
    let pool = Pool::new(options.clone(), 1).unwrap();
    let pooled = pool.run(&code, b"", &options).unwrap();
    assert_eq!(
        common::essence(&pooled),
        common::essence(&fresh),
        "pooled: {}",
        pooled.summary()
    );
}

/// Guest: tries to raise the hard limits the worker set on itself (open files, core size,
/// CPU time) by one with `prlimit64`; returns the three results' low bytes (`0xff` each:
/// `-EPERM`).
fn raise_limits() -> Vec<u8> {
    let mut source = String::from(
        "    mov r15, rsp
             sub rsp, 64
             and rsp, -16
             xor r14, r14\n",
    );
    for (i, resource) in [7, 4, 0].iter().enumerate() {
        // RLIMIT_NOFILE 7, RLIMIT_CORE 4, RLIMIT_CPU 0.
        source.push_str(&format!(
            "    xor edi, edi
                 mov esi, {resource}
                 xor edx, edx
                 mov r10, rsp
                 mov eax, 302
                 syscall
                 mov rax, [rsp + 8]
                 inc rax
                 mov [rsp + 16], rax
                 mov [rsp + 24], rax
                 xor edi, edi
                 mov esi, {resource}
                 lea rdx, [rsp + 16]
                 xor r10d, r10d
                 mov eax, 302
                 syscall
                 movzx rax, al
                 shl rax, {shift}
                 or r14, rax\n",
            shift = i * 8
        ));
    }
    source.push_str(
        "    mov rax, r14
             mov rsp, r15
             ret",
    );
    gas(&source)
}

/// A profile guest cannot raise its open-file, core-size or CPU-time hard limits: the limits
/// stage ran, and capabilities are gone (`drop_privileges`) before the guest.
#[test]
fn a_profile_guest_cannot_raise_its_limits() {
    let code = raise_limits();
    for (how, report) in in_every_worker(&code, &profile_options()) {
        assert_eq!(
            returned_rax(&report) as u64,
            0xff_ffff,
            "{how}: a limit was raised (low bytes of the three prlimit64 results)"
        );
    }
}

/// Slots the state probe writes, in order.
const STATE_SLOTS: usize = 16;

/// Guest: writes 16 u64s to fd 1 and returns: `PR_GET_DUMPABLE`, `PR_GET_NO_NEW_PRIVS`,
/// `PR_GET_PDEATHSIG`, `PR_GET_TSC`, `PR_GET_SECCOMP`, the blocked signal mask,
/// `getpgid(0) - getpid()`, then `capget`'s header, its three data words (effective,
/// permitted, inheritable, both halves: six u32s) and its result, then SIGSEGV's action:
/// 1 if its handler is in the blob's page (where the guest's return address points), its
/// flags, 0 (in place of the restorer's address) and its mask. (prctl's unused arguments are
/// zero: `PR_GET_NO_NEW_PRIVS` refuses anything else.)
fn state_probe() -> Vec<u8> {
    gas("    mov r15, rsp
             sub rsp, 128
             and rsp, -16
             mov rbx, rsp
             xor edx, edx
             xor r10d, r10d
             xor r8d, r8d
             mov edi, 3
             xor esi, esi
             mov eax, 157
             syscall
             mov [rbx], rax
             mov edi, 39
             xor esi, esi
             mov eax, 157
             syscall
             mov [rbx + 8], rax
             mov qword ptr [rbx + 16], 0
             mov edi, 2
             lea rsi, [rbx + 16]
             mov eax, 157
             syscall
             mov qword ptr [rbx + 24], 0
             mov edi, 25
             lea rsi, [rbx + 24]
             mov eax, 157
             syscall
             mov edi, 21
             xor esi, esi
             mov eax, 157
             syscall
             mov [rbx + 32], rax
             xor edi, edi
             xor esi, esi
             lea rdx, [rbx + 40]
             mov r10d, 8
             mov eax, 14
             syscall
             xor edi, edi
             mov eax, 121
             syscall
             mov r12, rax
             mov eax, 39
             syscall
             sub r12, rax
             mov [rbx + 48], r12
             mov dword ptr [rbx + 56], 0x20080522
             mov dword ptr [rbx + 60], 0
             lea rdi, [rbx + 56]
             lea rsi, [rbx + 64]
             mov eax, 125
             syscall
             mov [rbx + 88], rax
             mov edi, 11
             xor esi, esi
             lea rdx, [rbx + 96]
             mov r10d, 8
             mov eax, 13
             syscall
             mov rax, [rbx + 96]
             and rax, -4096
             mov rcx, [r15]
             and rcx, -4096
             cmp rax, rcx
             sete al
             movzx eax, al
             mov [rbx + 96], rax
             mov qword ptr [rbx + 112], 0
             mov edi, 1
             mov rsi, rbx
             mov edx, 128
             mov eax, 1
             syscall
             xor eax, eax
             mov rsp, r15
             ret")
}

/// Bit of `sig` in a kernel sigset.
fn sigbit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// Every stage that leaves process state behind has run before a profile guest, in every kind
/// of worker: not dumpable (no core, no ptrace by others), `no_new_privs`, death with the host
/// armed, the TSC off as in strict mode, under a seccomp filter, every signal blocked but the
/// faults (the kernel never reports SIGKILL or SIGSTOP as blocked), a process group of its own,
/// no capability left, and the fault handlers of the blob installed (untraced) or the default
/// action (traced: the tracer sees each signal's delivery).
fn check_state(traced: bool) {
    let code = state_probe();
    let faults = [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGSYS,
    ];
    let unstoppable = sigbit(libc::SIGKILL) | sigbit(libc::SIGSTOP);
    let mut mask = !unstoppable;
    for sig in faults {
        mask &= !sigbit(sig);
    }
    let header = 0x2008_0522u64; // _LINUX_CAPABILITY_VERSION_3, pid 0
    let segv = if traced {
        [0, 0, 0, 0]
    } else {
        let flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND | 0x0400_0000;
        [1, flags as u32 as u64, 0, !unstoppable]
    };
    let mut expected = vec![0, 1, 9, 2, 2, mask, 0, header, 0, 0, 0, 0];
    expected.extend(segv);
    let mut options = profile_options();
    options.trace = traced;
    for (how, report) in in_every_worker(&code, &options) {
        assert_eq!(returned_rax(&report), 0, "{how}");
        assert_eq!(report.output.len(), STATE_SLOTS * 8, "{how}: {report:?}");
        let got: Vec<u64> = report
            .output
            .chunks(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        let names = [
            "dumpable",
            "no_new_privs",
            "pdeathsig",
            "tsc",
            "seccomp",
            "blocked",
            "pgid - pid",
            "capget header",
            "caps 0",
            "caps 1",
            "caps 2",
            "capget",
            "SIGSEGV handler in the blob",
            "SIGSEGV flags",
            "(restorer)",
            "SIGSEGV mask",
        ];
        for ((name, got), want) in names.iter().zip(&got).zip(expected.iter()) {
            assert_eq!(
                got, want,
                "{how} (traced: {traced}): {name} is {got:#x}, expected {want:#x}"
            );
        }
    }
}

#[test]
fn a_profile_guest_runs_with_the_state_the_setup_stages_leave() {
    check_state(false);
}

#[test]
fn a_traced_profile_guest_runs_with_the_same_state_and_default_fault_actions() {
    check_state(true);
}

/// Guest: forges the record of a setup failure (state `STATE_SETUP_FAILED` at data + 0x100,
/// stage 0 and errno 1 at data + 0x190 / 0x198; the data page follows the blob's page, which
/// its return address points into), then raises the setup-failed signal (SIGUSR2) on itself
/// after unblocking it, and exits 127 if it is still alive (init of a PID namespace ignores
/// its own signals).
fn forged_setup_failure() -> Vec<u8> {
    gas("    mov rbx, [rsp]
             and rbx, -4096
             add rbx, 0x1000
             mov qword ptr [rbx + 0x190], 0
             mov qword ptr [rbx + 0x198], 1
             mov qword ptr [rbx + 0x100], 3
             sub rsp, 16
             mov qword ptr [rsp], 0x800
             mov edi, 1
             mov rsi, rsp
             xor edx, edx
             mov r10d, 8
             mov eax, 14
             syscall
             mov eax, 39
             syscall
             mov edi, eax
             mov esi, 12
             mov eax, 62
             syscall
             mov edi, 127
             mov eax, 231
             syscall
             ud2")
}

/// A profile guest that forges a setup failure and dies of the setup-failed signal (or exits
/// 127, as a failed PID-namespace init does) is reported as what it did, never as a runner
/// error: the host believes a setup failure only when the kernel says the worker never entered
/// seccomp. The restructure moved this decision (`classify` over `Evidence`, `drive` in
/// `host::lifecycle`); it must hold for fresh and zygote-forked workers alike.
#[test]
fn a_forged_setup_failure_is_the_guests_own_end_not_a_runner_error() {
    let code = forged_setup_failure();
    let options = profile_options();
    let zygote = Zygote::start().unwrap();
    let reports = [
        ("run", bytejail::run(&code, b"", &options)),
        ("zygote", zygote.run(&code, b"", &options)),
    ];
    for (how, report) in reports {
        let report = report.unwrap_or_else(|e| panic!("{how}: a forged setup failure: {e}"));
        assert!(
            matches!(
                report.outcome,
                Outcome::Exited(127)
                    | Outcome::Crashed {
                        signal: libc::SIGUSR2,
                        ..
                    }
            ),
            "{how}: {:?}",
            report.outcome
        );
    }
}

/// Under strict mode a guest can forge the record too but raise no signal: its `exit(127)` is
/// reported as an exit, the forged stage is never shown.
#[test]
fn a_strict_guest_that_forges_a_setup_failure_just_exits() {
    let code = gas("    mov rbx, [rsp]
             and rbx, -4096
             add rbx, 0x1000
             mov qword ptr [rbx + 0x190], 0
             mov qword ptr [rbx + 0x198], 1
             mov qword ptr [rbx + 0x100], 3
             mov edi, 127
             mov eax, 60
             syscall");
    let options = RunOptions::default();
    let zygote = Zygote::start().unwrap();
    let pool = Pool::new(options.clone(), 1).unwrap();
    let reports = [
        ("run", bytejail::run(&code, b"", &options)),
        ("zygote", zygote.run(&code, b"", &options)),
        ("pool", pool.run(&code, b"", &options)),
    ];
    for (how, report) in reports {
        let report = report.unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(report.outcome, Outcome::Exited(127), "{how}");
    }
}

// ---------------------------------------------------------------------------------------------
// Workers die with their host: `pdeathsig` and the orphan check, in the fresh worker's stages
// and in the zygote's preamble (which now calls the same stage functions).
// ---------------------------------------------------------------------------------------------

/// A name for the workers of one of this test run's hosts, `tag` plus a number (at most 15
/// bytes); `pid` is the test process's.
fn marker(tag: &str, pid: u32) -> String {
    format!("{tag}{}", pid % 100_000)
}

/// Guest: names itself `marker` (`PR_SET_NAME`), then spins.
fn named_spinner(marker: &str) -> Vec<u8> {
    gas(&format!(
        "    mov edi, 15
             lea rsi, [rip + bj_name]
             mov eax, 157
             syscall
         1:  jmp 1b
         bj_name: .asciz \"{marker}\""
    ))
}

/// Runs a spinning profile guest named for `tag` for up to a minute, through a zygote when
/// `zygote`; says "ready" first.
fn spin_named(tag: &str, zygote: bool) {
    let marker = marker(tag, std::os::unix::process::parent_id());
    let code = named_spinner(&marker);
    let mut options = profile_options();
    options.limits.timeout = Duration::from_secs(60);
    let zygote = zygote.then(|| Zygote::start().unwrap());
    println!("ready");
    let _ = match &zygote {
        Some(zygote) => zygote.run(&code, b"", &options),
        None => bytejail::run(&code, b"", &options),
    };
}

#[test]
#[ignore = "a host for host_death_kills_* (run by them in a child process)"]
fn host_spinning_profile_fresh() {
    spin_named("rrf", false);
}

#[test]
#[ignore = "a host for host_death_kills_* (run by them in a child process)"]
fn host_spinning_profile_zygote() {
    spin_named("rrz", true);
}

#[test]
#[ignore = "a host for host_death_kills_* (run by them in a child process)"]
fn host_spinning_strict_zygote() {
    let zygote = Zygote::start().unwrap();
    let mut options = RunOptions::default();
    options.limits.timeout = Duration::from_secs(60);
    println!("ready");
    let _ = zygote.run(&gas("1: jmp 1b"), b"", &options);
}

/// Starts the host test `name`, waits (5 s at most) for `find` to name its worker and for the
/// worker to spin a little, kills the host with SIGKILL, and checks that the worker, and every
/// child the host had (its zygote), is gone within a second.
fn kill_host_and_watch(name: &str, find: impl Fn(u32) -> Option<u32>) {
    let (mut host, mut out) = start_host(name);
    let start = Instant::now();
    let worker = loop {
        if let Some(pid) = find(host.id()) {
            break pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{name}: no worker appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(worker), "{name}: worker {worker} ended early");
    let children: Vec<u32> = children_of(host.id()).into_iter().map(|c| c.0).collect();
    host.kill().unwrap();
    host.wait().unwrap();
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    let killed_at = Instant::now();
    loop {
        let left: Vec<u32> = std::iter::once(worker)
            .chain(children.iter().copied())
            .filter(|&pid| alive(pid))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(1),
            "{name}: {left:?} still alive 1 s after the host was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn host_death_kills_a_fresh_profile_worker() {
    let marker = marker("rrf", std::process::id());
    kill_host_and_watch("host_spinning_profile_fresh", |_| {
        marked(&marker).first().copied()
    });
}

#[test]
fn host_death_kills_a_zygote_profile_worker_and_the_zygote() {
    let marker = marker("rrz", std::process::id());
    kill_host_and_watch("host_spinning_profile_zygote", |_| {
        marked(&marker).first().copied()
    });
}

#[test]
fn host_death_kills_a_zygote_strict_worker_and_the_zygote() {
    kill_host_and_watch("host_spinning_strict_zygote", |host| {
        children_of(host)
            .into_iter()
            .map(|c| c.0)
            .find(|&pid| comm(pid) == "bytejail-worker")
    });
}

// ---------------------------------------------------------------------------------------------
// A failing stage ends the worker before any guest code runs, and the host says which stage.
// ---------------------------------------------------------------------------------------------

/// Options whose open-file limit the kernel refuses (`RLIMIT_NOFILE` above `fs.nr_open`, which
/// even root may not pass): the worker's limits stage fails.
fn failing_limits(mut options: RunOptions) -> RunOptions {
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    options.limits.max_open_files = nr_open + 1;
    options
}

/// Guest: writes "ran" and returns. If any of it shows, the guest ran after a failed stage.
fn says_it_ran() -> Vec<u8> {
    gas("    mov edi, 1
             lea rsi, [rip + bj_ran]
             mov edx, 3
             mov eax, 1
             syscall
             ret
         bj_ran: .ascii \"ran\"")
}

/// Checks that `result` is the limits stage's failure, not a report (the guest never ran).
fn assert_limits_stage_failed(how: &str, result: Result<Report, bytejail::Error>) {
    match result {
        Ok(report) => panic!("{how}: the guest ran after a failed stage: {report:?}"),
        Err(e) => assert!(
            e.to_string().contains("setrlimit"),
            "{how}: expected the limits stage's failure, got: {e}"
        ),
    }
}

/// A worker whose limits stage fails dies of the setup-failed signal (or, as a PID-namespace
/// init under a profile, exits 127 with the kernel saying it never entered seccomp) before
/// the guest: the host reports the stage as a runner error, and no output of the guest's
/// appears. In fresh and zygote-forked workers, under strict mode and under a profile, and
/// for same-code workers.
#[test]
fn a_failing_stage_ends_the_worker_before_the_guest_with_the_stage_named() {
    let code = says_it_ran();
    let zygote = Zygote::start().unwrap();
    for (policy, options) in [
        ("strict", failing_limits(RunOptions::default())),
        ("profile", failing_limits(profile_options())),
    ] {
        assert_limits_stage_failed(
            &format!("{policy} run"),
            bytejail::run(&code, b"", &options),
        );
        assert_limits_stage_failed(
            &format!("{policy} zygote"),
            zygote.run(&code, b"", &options),
        );
        let mut same = SameCode::new(&code, &options).unwrap();
        assert_limits_stage_failed(&format!("{policy} same-code"), same.run(b""));
        assert_eq!(same.worker_pid(), None, "{policy}: a failed worker is kept");
    }
}

/// The twin: with the host's own hard limit on open files (which a worker may keep without
/// `CAP_SYS_RESOURCE`) the same jobs run.
#[test]
fn the_same_jobs_run_with_a_limit_the_kernel_takes() {
    let code = says_it_ran();
    let mut host = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut host) },
        0
    );
    for options in [RunOptions::default(), profile_options()] {
        let mut options = options;
        options.limits.max_open_files = host.rlim_max.min(1 << 20);
        let report = bytejail::run(&code, b"", &options).unwrap();
        assert_eq!(report.output, b"ran");
    }
}

/// A pool whose template's limits stage fails starts no worker: its first one's failure is
/// the error, and nothing of the guest's runs.
#[test]
fn a_pool_whose_workers_cannot_set_up_says_why() {
    for options in [RunOptions::default(), profile_options()] {
        let options = failing_limits(options);
        match Pool::new(options.clone(), 1) {
            Err(e) => assert!(e.to_string().contains("setrlimit"), "{e}"),
            Ok(pool) => {
                // A pool may start and fall back to fresh workers: the job must still fail.
                assert_limits_stage_failed("pool", pool.run(&says_it_ran(), b"", &options));
            }
        }
    }
}
