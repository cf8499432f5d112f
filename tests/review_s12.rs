//! Review (session 12) of the same-code output pipe's io_uring watch (`runner/sys/uring.rs`,
//! `after_spun_done`): a spun input whose pipe the host did not read must report what a fresh
//! run reports, for guests that write nothing, write faulting buffers, write at and over the
//! output limit, in many pieces, huge amounts, crash/violate/time out/exit after writing; the
//! ring must stay bounded over thousands of replaced workers and sessions, and stay out of the
//! forks of a host that runs fresh jobs meanwhile.

mod common;
use common::{essence, gas, pseudo_random, two_cpus_to_spin};

use std::time::Duration;

use bytejail::{Limits, Outcome, Policy, Report, RunOptions, SameCode};

/// A tiny interpreter: the input is a list of 16-byte ops (u32 kind, u32 a, u64 b), then
/// payload. `rbx` sums what every write returned, `rax` is the last write's return.
/// - 0: return;
/// - 1: write(1, input + a, b);
/// - 2: fill the last `a` bytes of the scratch with byte `b >> 32`, write(1, scratch end - a,
///   b as u32) (runs into the unmapped page after the scratch when longer than `a`);
/// - 3: write(1, b, a) (an absolute address: unmapped, kernel, ...);
/// - 4: `a` times write(1, input + b, 1);
/// - 5: store to address `a` (a crash for a small `a`);
/// - 6: getpid (a violation);
/// - 7: loop forever (a timeout);
/// - 8: exit(a);
/// - 9: `int 0x80` write(1, b as u32, a);
/// - 10: fill the first `b` bytes of the scratch with byte `a`, write(1, scratch, b).
fn interpreter() -> Vec<u8> {
    gas("
    mov r12, rdi
    mov r14, rdx
    mov r15, rcx
    xor ebx, ebx
    xor eax, eax
    mov rbp, rdi
next:
    mov r8d, dword ptr [rbp]
    mov r9d, dword ptr [rbp + 4]
    mov r10, qword ptr [rbp + 8]
    add rbp, 16
    cmp r8d, 1
    je op_1
    cmp r8d, 2
    je op_2
    cmp r8d, 3
    je op_3
    cmp r8d, 4
    je op_4
    cmp r8d, 5
    je op_5
    cmp r8d, 6
    je op_6
    cmp r8d, 7
    je op_7
    cmp r8d, 8
    je op_8
    cmp r8d, 9
    je op_9
    cmp r8d, 10
    je op_10
    ret
op_1: lea rsi, [r12 + r9]
    mov rdx, r10
    call wr
    jmp next
op_2: lea rdi, [r14 + r15]
    sub rdi, r9
    mov rcx, r9
    mov rax, r10
    shr rax, 32
    rep stosb
    lea rsi, [r14 + r15]
    sub rsi, r9
    mov edx, r10d
    call wr
    jmp next
op_3: mov rsi, r10
    mov edx, r9d
    call wr
    jmp next
op_4: mov r13d, r9d
4:  test r13d, r13d
    jz next
    lea rsi, [r12 + r10]
    mov edx, 1
    call wr
    dec r13d
    jmp 4b
op_5: mov byte ptr [r9], 1
    jmp next
op_6: mov eax, 39
    syscall
    jmp next
op_7: jmp op_7
op_8: mov edi, r9d
    mov eax, 60
    syscall
op_9: push rbx
    mov eax, 4
    mov ebx, 1
    mov ecx, r10d
    mov edx, r9d
    int 0x80
    pop rbx
    add rbx, rax
    jmp next
op_10: mov rdi, r14
    mov rcx, r10
    mov eax, r9d
    rep stosb
    mov rsi, r14
    mov rdx, r10
    call wr
    jmp next
wr: mov edi, 1
    mov eax, 1
    syscall
    add rbx, rax
    ret
")
}

/// One op of [`interpreter`]. `Payload(len)` writes `len` bytes of the input's own payload.
#[derive(Clone, Copy, Debug)]
enum Op {
    Payload(u32),
    Straddle { back: u32, len: u32, tag: u8 },
    Absolute { addr: u64, len: u32 },
    Pieces(u32),
    Crash,
    Violate,
    Hang,
    Exit(u32),
    Int80 { addr: u32, len: u32 },
    Big { len: u64, tag: u8 },
}

/// The input for `ops`, its payload unique to `id` (so a byte attributed to another input
/// shows).
fn program(ops: &[Op], id: u64) -> Vec<u8> {
    let payload_at = (ops.len() + 1) * 16;
    let payload_len = ops
        .iter()
        .map(|op| match op {
            Op::Payload(n) => *n as usize,
            Op::Pieces(_) => 1,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let mut input = Vec::new();
    let mut push = |kind: u32, a: u32, b: u64| {
        input.extend_from_slice(&kind.to_le_bytes());
        input.extend_from_slice(&a.to_le_bytes());
        input.extend_from_slice(&b.to_le_bytes());
    };
    for op in ops {
        match *op {
            Op::Payload(n) => push(1, payload_at as u32, u64::from(n)),
            Op::Straddle { back, len, tag } => {
                push(2, back, (u64::from(tag) << 32) | u64::from(len))
            }
            Op::Absolute { addr, len } => push(3, len, addr),
            Op::Pieces(n) => push(4, n, payload_at as u64),
            Op::Crash => push(5, 0, 0),
            Op::Violate => push(6, 0, 0),
            Op::Hang => push(7, 0, 0),
            Op::Exit(code) => push(8, code, 0),
            Op::Int80 { addr, len } => push(9, len, u64::from(addr)),
            Op::Big { len, tag } => push(10, u32::from(tag), len),
        }
    }
    push(0, 0, 0);
    let mut seed = pseudo_random(id.wrapping_mul(0x9e37_79b9) ^ 0x5eed);
    input.extend((0..payload_len).map(|_| seed() as u8));
    input
}

/// One input of a mixed session: its ops, and options of its own (output limit, timeout).
struct Case {
    ops: Vec<Op>,
    max_output: usize,
    timeout: Duration,
    /// Sleep this long before it (so the worker stops spinning and the input uses the pipes).
    pause: Duration,
    /// Its worker's fd 1 the arena's file (`RunOptions::output_file`).
    file: bool,
}

/// A pseudo-random mix, half of it silent, the rest every kind of write and end.
/// `faults`: include writes whose buffer faults (the output file keeps part of those, a
/// documented difference); `ends`: include inputs that end the worker.
fn cases(seed: u64, count: usize, faults: bool, ends: bool) -> Vec<Case> {
    let mut rnd = pseudo_random(seed);
    let lens = [1u32, 7, 100, 4095, 4096, 4097, 20_000];
    let mut out = Vec::new();
    let mut hangs = 0;
    for _ in 0..count {
        let mut max_output = 1 << 20;
        let mut timeout = Duration::from_secs(2);
        let ops: Vec<Op> = match rnd() % 40 {
            0..=19 => vec![],
            20 => vec![Op::Payload(0)],
            21 => vec![Op::Payload(lens[rnd() as usize % lens.len()])],
            22 => vec![
                Op::Payload(3),
                Op::Payload(0),
                Op::Payload(5),
                Op::Payload(1),
            ],
            23 => vec![Op::Pieces(1 + rnd() as u32 % 200)],
            24 if faults => vec![Op::Straddle {
                back: [1u32, 100, 4096, 5000][rnd() as usize % 4],
                len: [2u32, 4097, 6000, 9000][rnd() as usize % 4],
                tag: rnd() as u8,
            }],
            25 if faults => vec![Op::Absolute {
                addr: [8u64, 0x1000, 0xffff_8000_0000_0000][rnd() as usize % 3],
                len: [1u32, 10, 4096, 8192][rnd() as usize % 4],
            }],
            // Writes of whole pages from nowhere: each may leave an empty buffer in the pipe;
            // 20 of them fill its 16 slots.
            26 if faults => vec![Op::Absolute { addr: 8, len: 4096 }; 20],
            27 if faults => vec![
                Op::Payload(10),
                Op::Absolute { addr: 8, len: 4096 },
                Op::Payload(4096),
                Op::Absolute { addr: 8, len: 4096 },
            ],
            28 => {
                // Exactly at the limit, or one byte over it.
                let n = 1 + rnd() as u32 % 300;
                max_output = n as usize - (rnd() % 2) as usize;
                vec![Op::Payload(n)]
            }
            29 => {
                max_output = (rnd() % 3) as usize;
                vec![Op::Pieces(1 + rnd() as u32 % 4)]
            }
            30 => {
                max_output = (rnd() % 50) as usize;
                vec![]
            }
            31 if ends => vec![Op::Payload(50), Op::Crash],
            32 if ends => vec![Op::Payload(50), Op::Violate],
            33 if ends && hangs < 4 => {
                hangs += 1;
                timeout = Duration::from_millis(40);
                vec![Op::Payload(70), Op::Hang]
            }
            34 if ends => vec![Op::Payload(30), Op::Exit(3)],
            35 => vec![
                Op::Int80 {
                    addr: 0x1000,
                    len: 10,
                },
                Op::Int80 { addr: 0, len: 0 },
            ],
            36 => vec![Op::Big {
                len: [65_536u64, 70_000, 200_000][rnd() as usize % 3],
                tag: rnd() as u8,
            }],
            37 => {
                max_output = 1000;
                vec![Op::Big { len: 5000, tag: 7 }]
            }
            _ => vec![Op::Payload(1 + rnd() as u32 % 64)],
        };
        let pause = if rnd() % 25 == 0 {
            Duration::from_micros(200 + rnd() % 2000)
        } else {
            Duration::ZERO
        };
        out.push(Case {
            ops,
            max_output,
            timeout,
            pause,
            file: false,
        });
    }
    out
}

fn options_for(base: &RunOptions, case: &Case) -> RunOptions {
    let mut options = base.clone();
    options.limits = options
        .limits
        .clone()
        .with_max_output(case.max_output)
        .with_timeout(case.timeout);
    if case.file {
        options.output_file = true;
    }
    options
}

/// Runs every case through one session (all first, in quick succession), then each in a
/// fresh worker, and compares. Returns (spun, unread) of the session.
fn session_against_fresh(code: &[u8], base: &RunOptions, cases: &[Case], what: &str) -> (u64, u64) {
    session_in(SameCode::new(code, base).unwrap(), code, base, cases, what)
}

fn session_in(
    mut same: SameCode,
    code: &[u8],
    base: &RunOptions,
    cases: &[Case],
    what: &str,
) -> (u64, u64) {
    let mut got: Vec<(Report, bool)> = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        if !case.pause.is_zero() {
            std::thread::sleep(case.pause);
        }
        let input = program(&case.ops, i as u64);
        let unread = same.inputs_unread();
        let report = same
            .run_with(&input, &options_for(base, case))
            .unwrap_or_else(|e| panic!("{what}, input {i} {:?}: {e}", case.ops));
        got.push((report, same.inputs_unread() > unread));
    }
    let (spun, unread) = (same.inputs_spun(), same.inputs_unread());
    drop(same);
    for (i, (case, (report, was_unread))) in cases.iter().zip(&got).enumerate() {
        let input = program(&case.ops, i as u64);
        let fresh = bytejail::run(code, &input, &options_for(base, case)).unwrap();
        assert_eq!(
            essence(report),
            essence(&fresh),
            "{what}, input {i} {:?} (max_output {}, unread {was_unread})",
            case.ops,
            case.max_output
        );
        if *was_unread {
            assert!(
                fresh.output.is_empty() && !fresh.output_truncated,
                "{what}, input {i}"
            );
        }
    }
    eprintln!(
        "{what}: {} inputs, {spun} spun, {unread} unread",
        cases.len()
    );
    (spun, unread)
}

fn uring_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map_or(true, |s| s.trim() == "0")
}

/// Where io_uring is on and enough inputs spun, at least an eighth of them went unread: the
/// path under test was taken.
fn assert_unread_share(spun: u64, unread: u64, what: &str) {
    if uring_enabled() && spun >= 200 {
        assert!(unread >= spun / 8, "{what}: {unread} of {spun} spun unread");
    }
}

/// Every kind of write, under strict mode and strict-bpf, fd 1 a pipe, inputs in quick
/// succession (a few after a pause): each report as a fresh run's, and the unread path taken.
#[test]
fn mixed_writers_match_fresh_runs_with_the_pipe_watched() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = interpreter();
    for (n, policy) in [Policy::Strict, Policy::StrictBpf].into_iter().enumerate() {
        let base = RunOptions::default().with_policy(policy.clone());
        let cases = cases(0x1234 + n as u64, 1500, true, true);
        let (spun, unread) = session_against_fresh(&code, &base, &cases, &format!("{policy:?}"));
        assert_unread_share(spun, unread, &format!("{policy:?}"));
    }
}

/// Silent inputs only between writers of every kind that return (the worker lives on): the
/// watch stays on one pipe for long stretches, and writes of any shape in between must show.
#[test]
fn returning_writers_and_silent_inputs_alternate() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = interpreter();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        let base = RunOptions::default().with_policy(policy.clone());
        let mixed = cases(77, 1200, true, false);
        // Strictly alternating: a silent input after every other one.
        let mut cases = Vec::new();
        for case in mixed {
            cases.push(case);
            cases.push(Case {
                ops: vec![],
                max_output: 1 << 20,
                timeout: Duration::from_secs(2),
                pause: Duration::ZERO,
                file: false,
            });
        }
        let (spun, unread) =
            session_against_fresh(&code, &base, &cases, &format!("{policy:?} alternating"));
        assert_unread_share(spun, unread, &format!("{policy:?}"));
    }
}

/// The twins: spinning off, and fd 1 the arena's file (without faulting writes, whose kept
/// bytes are the file's documented difference): the same reports, and nothing counted unread.
#[test]
fn twins_without_the_watch_agree_and_count_nothing_unread() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = interpreter();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        for (what, base, faults) in [
            ("no spin", RunOptions::default().with_spin(false), true),
            (
                "output file",
                RunOptions::default().with_output_file(true),
                false,
            ),
        ] {
            let base = base.with_policy(policy.clone());
            let cases = cases(99, 400, faults, true);
            let (_, unread) =
                session_against_fresh(&code, &base, &cases, &format!("{policy:?} {what}"));
            assert_eq!(unread, 0, "{policy:?} {what}");
        }
    }
}

/// This process's descriptors: (all, io_uring ones).
fn fds() -> (usize, Vec<String>) {
    let mut all = 0;
    let mut rings = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        all += 1;
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if target.to_string_lossy().contains("io_uring") {
                rings.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    (all, rings)
}

/// The number of polls a ring's fdinfo lists, and the fdinfo itself.
fn ring_polls(fd: &str) -> (usize, String) {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    let mut polls = 0;
    let mut in_list = false;
    for line in info.lines() {
        if line.starts_with("PollList") {
            in_list = true;
            continue;
        }
        if in_list {
            if line.starts_with(' ') || line.starts_with('\t') {
                polls += 1;
            } else {
                in_list = false;
            }
        }
    }
    (polls, info)
}

/// A crash-heavy session: every other input ends its worker (after writing, or not), the
/// next is a new worker's first, spun and silent: the watch moves to a new pipe thousands of
/// times (cancelling polls whose work is still queued). Descriptors and the ring's polls stay
/// bounded, each output is right, and the silent first inputs go unread.
#[test]
fn crash_heavy_sessions_keep_the_ring_bounded() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = interpreter();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        let base = RunOptions::default().with_policy(policy.clone());
        let (fds_before, rings_before) = fds();
        let mut same = SameCode::new(&code, &base).unwrap();
        let mut max_polls = 0;
        let mut max_fds = 0;
        let mut ring_fd = None;
        let rounds = 1000u64;
        for i in 0..rounds {
            let enders: [&[Op]; 4] = [
                &[Op::Crash],
                &[Op::Payload(20), Op::Crash],
                &[Op::Pieces(5), Op::Violate],
                &[
                    Op::Big {
                        len: 100_000,
                        tag: 1,
                    },
                    Op::Exit(1),
                ],
            ];
            let ops = enders[(i % 4) as usize];
            let input = program(ops, i);
            let report = same.run_with(&input, &base).unwrap();
            assert!(
                !matches!(report.outcome, Outcome::Returned(_)),
                "input {i}: {:?}",
                report.outcome
            );
            let expected_len = match i % 4 {
                0 => 0,
                1 => 20,
                2 => 5,
                _ => 100_000,
            };
            assert_eq!(report.output.len(), expected_len, "{policy:?} ender {i}");
            // A new worker's first inputs: silent, or a write of their own payload.
            for j in 0..3u64 {
                let ops: &[Op] = if (i + j) % 3 == 1 {
                    &[Op::Payload(9)]
                } else {
                    &[]
                };
                let input = program(ops, 1_000_000 + i * 4 + j);
                let report = same.run_with(&input, &base).unwrap();
                let want: &[u8] = if ops.is_empty() {
                    b""
                } else {
                    &input[input.len() - 9..]
                };
                assert!(matches!(report.outcome, Outcome::Returned(_)), "{i}");
                assert_eq!(report.output, want, "{policy:?} input {j} of worker {i}");
            }
            if i % 100 == 0 {
                let (all, rings) = fds();
                max_fds = max_fds.max(all);
                if let Some(fd) = rings.iter().find(|fd| !rings_before.contains(fd)) {
                    ring_fd = Some(fd.clone());
                    let (polls, info) = ring_polls(fd);
                    if polls > max_polls {
                        max_polls = polls;
                        eprintln!("{policy:?} round {i}: {polls} polls\n{info}");
                    }
                }
            }
        }
        let (spun, unread) = (same.inputs_spun(), same.inputs_unread());
        eprintln!("{policy:?}: {spun} spun, {unread} unread, max {max_fds} fds, max {max_polls} polls, ring {ring_fd:?}");
        assert!(
            max_polls <= 2,
            "{policy:?}: the ring holds {max_polls} polls"
        );
        assert!(
            max_fds <= fds_before + 16,
            "{policy:?}: {max_fds} fds (from {fds_before})"
        );
        if uring_enabled() && spun >= 200 {
            assert!(ring_fd.is_some(), "{policy:?}: no ring seen");
            assert!(unread >= spun / 4, "{policy:?}: {unread} of {spun} unread");
        }
        drop(same);
        let (_, rings_after) = fds();
        assert_eq!(
            rings_after, rings_before,
            "{policy:?}: a ring outlived its session"
        );
    }
}

/// Many short sessions, one after another: each makes its ring at its first spun input; none
/// outlives its session (descriptors), and a session's watch never sees another's pipe.
#[test]
fn many_sessions_leave_no_rings() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = interpreter();
    let (fds_before, rings_before) = fds();
    let mut unread = 0;
    for s in 0..300u64 {
        let policy = if s % 2 == 0 {
            Policy::Strict
        } else {
            Policy::StrictBpf
        };
        let base = RunOptions::default().with_policy(policy);
        let mut same = SameCode::new(&code, &base).unwrap();
        for i in 0..12u64 {
            let ops: &[Op] = if (i + s) % 4 == 3 {
                &[Op::Payload(33)]
            } else {
                &[]
            };
            let input = program(ops, s * 100 + i);
            let report = same.run_with(&input, &base).unwrap();
            let want: &[u8] = if ops.is_empty() {
                b""
            } else {
                &input[input.len() - 33..]
            };
            assert_eq!(report.output, want, "session {s}, input {i}");
        }
        unread += same.inputs_unread();
    }
    let (fds_after, rings_after) = fds();
    eprintln!("{unread} unread; fds {fds_before} -> {fds_after}");
    assert_eq!(rings_after, rings_before);
    assert!(fds_after <= fds_before + 4, "{fds_before} -> {fds_after}");
}

/// A session that spins while another thread of the host runs fresh jobs (forks of the host,
/// whose guests look for every descriptor they could reach: none but 0 and 1): the session's
/// outputs stay right, and no fresh guest finds the ring.
#[test]
fn fresh_jobs_beside_a_watched_session_neither_see_the_ring_nor_disturb_it() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = stop.clone();
    // fcntl(fd, F_GETFD) for fd 2..4096, and io_uring_enter(fd, 0, 0, 0) on the same: the
    // number of fds open (rax) and of those io_uring took (rbx).
    let prober = gas("
        xor r12d, r12d
        xor r13d, r13d
        mov r14d, 2
    1:  mov edi, r14d
        mov esi, 1
        mov eax, 72
        syscall
        test rax, rax
        js 2f
        inc r12
    2:  mov edi, r14d
        xor esi, esi
        xor edx, edx
        xor r10d, r10d
        xor r8d, r8d
        xor r9d, r9d
        mov eax, 426
        syscall
        cmp rax, -9
        je 3f
        inc r13
    3:  inc r14d
        cmp r14d, 4096
        jb 1b
        mov rax, r12
        mov rbx, r13
        ret");
    let fresh = std::thread::spawn(move || {
        let options = common::profile_options();
        let scrubless = common::profile_options().with_scrub(false);
        let mut runs = 0u64;
        while !stopper.load(std::sync::atomic::Ordering::Relaxed) {
            for options in [&options, &scrubless] {
                let report = bytejail::run(&prober, b"", options).unwrap();
                match report.outcome {
                    Outcome::Returned(regs) => {
                        assert_eq!((regs.rax, regs.rbx), (0, 0), "a fresh guest sees fds")
                    }
                    other => panic!("prober: {other:?}"),
                }
                runs += 1;
            }
            std::thread::sleep(Duration::from_micros(300));
        }
        runs
    });
    let code = interpreter();
    let base = RunOptions::default();
    let mut same = SameCode::new(&code, &base).unwrap();
    let mut rnd = pseudo_random(5);
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut i = 0u64;
    while std::time::Instant::now() < deadline {
        let ops: Vec<Op> = match rnd() % 6 {
            0 => vec![Op::Payload(1 + rnd() as u32 % 100)],
            1 => vec![Op::Pieces(1 + rnd() as u32 % 10)],
            _ => vec![],
        };
        let input = program(&ops, i);
        let report = same.run_with(&input, &base).unwrap();
        let want: Vec<u8> = match ops.first() {
            Some(Op::Payload(n)) => input[input.len() - *n as usize..].to_vec(),
            Some(Op::Pieces(n)) => vec![input[input.len() - 1]; *n as usize],
            _ => vec![],
        };
        assert_eq!(report.output, want, "input {i} {ops:?}");
        i += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = fresh.join().unwrap();
    eprintln!(
        "{i} inputs, {} spun, {} unread, beside {runs} fresh jobs",
        same.inputs_spun(),
        same.inputs_unread()
    );
}

/// Per-input limits through one watched worker: an input with a limit of 0 that is silent
/// (unread) and the same with one byte (over: a new worker), a tight timeout between quick
/// inputs, and the limits a fresh run applies to each.
#[test]
fn per_input_limits_through_the_watch() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = interpreter();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        let base = RunOptions::default()
            .with_policy(policy.clone())
            .with_limits(Limits::default().with_max_output(0));
        let mut cases = Vec::new();
        let mut rnd = pseudo_random(3);
        for i in 0..1500 {
            let (ops, max_output) = match rnd() % 10 {
                0 => (vec![Op::Pieces(1)], 0),
                1 => (vec![Op::Pieces(1)], 1),
                2 => (vec![Op::Payload(64)], 63 + (rnd() % 3) as usize),
                3 => (vec![Op::Payload(0)], 0),
                _ => (vec![], (i % 3) as usize),
            };
            cases.push(Case {
                ops,
                max_output,
                timeout: Duration::from_millis(if i % 7 == 0 { 200 } else { 2000 }),
                pause: Duration::ZERO,
                file: false,
            });
        }
        let (spun, unread) =
            session_against_fresh(&code, &base, &cases, &format!("{policy:?} limits"));
        assert_unread_share(spun, unread, &format!("{policy:?} limits"));
    }
}

/// The same mix through a zygote's workers and through traced workers (`RunOptions::trace`).
#[test]
fn zygote_and_traced_sessions_match_fresh_runs() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = interpreter();
    let zygote = bytejail::Zygote::start().unwrap();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        let base = RunOptions::default().with_policy(policy.clone());
        let cases_z = cases(0x2200, 600, true, true);
        let same = SameCode::with_zygote(&code, &base, &zygote).unwrap();
        session_in(same, &code, &base, &cases_z, &format!("{policy:?} zygote"));
        let mut traced = base.clone();
        traced.trace = true;
        let cases_t = cases(0x3300, 600, true, true);
        session_against_fresh(&code, &traced, &cases_t, &format!("{policy:?} traced"));
    }
}

/// A guest that forges "done" (the record's "returned" and the done word, as
/// `tests/review_spin.rs` does) and then writes its input to fd 1 forever; with an empty input
/// it returns at once. Sessions mixing it with silent and writing inputs: every input gets a
/// report (never an error) in time, and once the forging worker is gone, a session of another
/// code gets every output right and unread where silent.
#[test]
fn a_forged_done_that_keeps_writing_gets_reports_not_errors() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let forger = gas("
        test rsi, rsi
        jnz 1f
        mov eax, 7
        ret
    1:  mov r12, rdi
        mov r13, rsi
        cmp byte ptr [rdi], 2
        je 3f
        mov rax, [rsp]
        and rax, -4096
        mov rcx, [rax + 0x10e0]
        mov qword ptr [rax + 0x1100], 1
        mov [rax + 0x17c8], rcx
        cmp byte ptr [r12], 1
        je 3f
    2:  mov edi, 1
        mov rsi, r12
        mov rdx, r13
        mov eax, 1
        syscall
        jmp 2b
    3:  mov edi, 1
        mov rsi, r12
        mov rdx, r13
        mov eax, 1
        syscall
        mov eax, 7
        ret");
    for policy in [Policy::Strict, Policy::StrictBpf] {
        let mut options = RunOptions::default().with_policy(policy.clone());
        options.limits.timeout = Duration::from_millis(100);
        let mut same = SameCode::new(&forger, &options).unwrap();
        let mut rnd = pseudo_random(11);
        let started = std::time::Instant::now();
        for i in 0..600u64 {
            // 0: forge, write forever; 1: forge, write once, return; 2: write, return.
            let input: Vec<u8> = match rnd() % 10 {
                0 => vec![0; 1 + (rnd() % 5000) as usize],
                1 => vec![1; 1 + (rnd() % 100) as usize],
                2 | 3 => vec![2; 1 + (rnd() % 100) as usize],
                _ => vec![],
            };
            let t = std::time::Instant::now();
            let report = same
                .run_with(&input, &options)
                .unwrap_or_else(|e| panic!("{policy:?} input {i}: {e}"));
            assert!(t.elapsed() < Duration::from_secs(2), "{policy:?} input {i}");
            let _ = report;
        }
        eprintln!(
            "{policy:?} forger: {} spun, {} unread in {:?}",
            same.inputs_spun(),
            same.inputs_unread(),
            started.elapsed()
        );
        drop(same);
        // Another submission afterwards: exact outputs.
        let code = interpreter();
        let base = RunOptions::default().with_policy(policy.clone());
        let cases = cases(0x4400, 400, true, false);
        session_against_fresh(&code, &base, &cases, &format!("{policy:?} after forger"));
    }
}

/// One session whose inputs switch between fd 1 a pipe and the arena's file in runs of a few
/// (each switch is a new worker, the watch moves only for pipe workers): every report as a
/// fresh run's (no faulting writes: the file keeps part of those, as documented).
#[test]
fn switching_between_pipe_and_file_workers_keeps_outputs() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = interpreter();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        let base = RunOptions::default().with_policy(policy.clone());
        let mut cases = cases(0x5500, 1200, false, true);
        let mut rnd = pseudo_random(8);
        let mut file = false;
        for case in &mut cases {
            if rnd() % 6 == 0 {
                file = !file;
            }
            case.file = file;
        }
        let (spun, unread) =
            session_against_fresh(&code, &base, &cases, &format!("{policy:?} switching"));
        if uring_enabled() && spun >= 200 {
            assert!(unread >= spun / 16, "{policy:?}: {unread} of {spun} unread");
        }
    }
}
