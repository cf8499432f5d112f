//! Review (session 11) of the same-code output file (runner/arena.rs `output_in_file`,
//! `take_output`) and of a tracer process killed from outside (runner/tracer.rs).
//!
//! The first test was a hole (fixed: a same-code worker's fd 1 is a pipe again unless the
//! caller asks for the file, `RunOptions::output_file`, whose difference it shows as its twin).
//! The others held at review time. Tests that kill the tracer share it with every other test
//! of this binary, so every test here takes `ONE`.

mod common;
use common::{essence, gas};

use std::time::{Duration, Instant};

use bytejail::{Gpr, Outcome, Policy, RunOptions, SameCode};

static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one() -> std::sync::MutexGuard<'static, ()> {
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `len` bytes (u32 at input+4) starting `back` bytes (u32 at input+0) before the end
/// of the scratch (what follows it is not mapped) to fd 1, and returns what `write` returned.
fn straddling_writer() -> Vec<u8> {
    gas("mov r8d, dword ptr [rdi]\n mov r9d, dword ptr [rdi + 4]\n\
         lea rsi, [rdx + rcx]\n sub rsi, r8\n mov rdx, r9\n mov edi, 1\n mov eax, 1\n syscall\n ret")
}

fn straddle(back: u32, len: u32) -> Vec<u8> {
    let mut input = back.to_le_bytes().to_vec();
    input.extend(len.to_le_bytes());
    input
}

/// Was a hole: a write whose buffer runs into unmapped memory. Through a fresh worker's output
/// pipe the kernel drops the page it copied only in part (`pipe_write` discards a short copy,
/// and says EFAULT when nothing went before); through a same-code worker's output file
/// (`generic_perform_write`) it keeps every byte it copied. So the same input gives another
/// output and another `rax` in a same-code session than in `bytejail::run`, and, when the
/// bytes kept reach past the output limit, another OUTCOME: the fresh run returns with 4096
/// bytes of output, the same-code input is reported `OutputLimit`.
#[test]
fn a_write_whose_buffer_faults_partway_gets_a_fresh_workers_report() {
    let _one = one();
    let code = straddling_writer();
    for output_file in [false, true] {
        let mut differences = Vec::new();
        for policy in [Policy::Strict, Policy::StrictBpf] {
            let options = common::kind_options(&policy, output_file, 4096);
            let mut same = SameCode::new(&code, &options).unwrap();
            // (bytes readable before the fault, bytes asked for)
            for (back, len) in [(100, 4096), (1, 2), (4100, 8192), (5000, 8192)] {
                let input = straddle(back, len);
                let report = same.run(&input).unwrap();
                let fresh = bytejail::run(&code, &input, &options).unwrap();
                if essence(&report) != essence(&fresh) {
                    differences.push(format!(
                        "{policy:?} {back} readable of {len}: same-code {} vs fresh {}",
                        report.summary(),
                        fresh.summary()
                    ));
                }
            }
        }
        if output_file {
            // The twin: fd 1 a file keeps the bytes a pipe drops (documented on
            // `RunOptions::output_file`): on this kernel in every case, and the outcome in
            // two.
            assert!(!differences.is_empty(), "a file keeps what a pipe drops");
        } else {
            assert!(
                differences.is_empty(),
                "same-code reports differ from fresh ones:\n{}",
                differences.join("\n")
            );
        }
    }
}

/// HELD: random inputs that read, dirty and write out pages of scratch and stack, with output
/// below, at and past the limit, in one session, each compared with a fresh run.
#[test]
fn output_and_reset_agree_with_fresh_runs_over_random_inputs() {
    let _one = one();
    // Digests scratch page [rdi] into rax, the stack page [rdi+12] pages below rsp into rbx's
    // high bits, dirties scratch page [rdi+4] (none when >= 1024) and that stack page, writes
    // [rdi+8] bytes from the scratch's start to fd 1 (rbx's low bits: what write returned).
    let code = gas("mov r12, rdx\n mov r13, rdi\n\
         mov eax, dword ptr [r13]\n shl rax, 12\n lea rsi, [r12 + rax]\n xor eax, eax\n xor ecx, ecx\n\
         1: add rax, qword ptr [rsi + rcx*8]\n inc ecx\n cmp ecx, 512\n jb 1b\n mov r14, rax\n\
         mov eax, dword ptr [r13 + 12]\n shl rax, 12\n mov rsi, rsp\n sub rsi, rax\n and rsi, -4096\n xor eax, eax\n xor ecx, ecx\n\
         2: add rax, qword ptr [rsi + rcx*8]\n inc ecx\n cmp ecx, 512\n jb 2b\n mov r15, rax\n\
         mov eax, dword ptr [r13 + 4]\n cmp eax, 1024\n jae 3f\n shl rax, 12\n mov qword ptr [r12 + rax + 8], 0x1234\n\
         3: mov qword ptr [rsi + 16], 0x777\n\
         mov edx, dword ptr [r13 + 8]\n mov rsi, r12\n mov edi, 1\n mov eax, 1\n syscall\n\
         mov rbx, r15\n shl rbx, 20\n xor rbx, rax\n mov rax, r14\n ret");
    for (policy, output_file) in common::both_kinds() {
        let options = common::kind_options(&policy, output_file, 3 * 4096);
        let mut same = SameCode::new(&code, &options).unwrap();
        let mut rnd = common::pseudo_random(7 + policy.name().len() as u64);
        for i in 0..400 {
            let a = (rnd() % 6) as u32;
            let b = match rnd() % 3 {
                0 => 5000,
                _ => (rnd() % 6) as u32,
            };
            let n = match rnd() % 5 {
                0 => 0,
                1 => (rnd() % 100) as u32,
                2 => 4096 + (rnd() % 3) as u32 * 4096,
                3 => 3 * 4096 + (rnd() % 2) as u32,
                _ => (rnd() % 20000) as u32,
            };
            let d = (rnd() % 8) as u32 + 1;
            let mut input = Vec::new();
            for v in [a, b, n, d] {
                input.extend(v.to_le_bytes());
            }
            let what = format!("{policy:?} file {output_file} input {i}: {a} {b} {n} {d}");
            common::same_as_fresh(&mut same, &input, &options, &what);
        }
    }
}

/// HELD: a guest that unblocks SIGXFSZ with a forged rt_sigreturn frame and writes past the
/// file limit dies of SIGXFSZ; the report still says OutputLimit, as a fresh run's does.
#[test]
fn sigxfsz_unblocked_still_reads_as_the_output_limit() {
    let _one = one();
    let code = gas(&format!(
        "{}
            2:  mov edx, 4097
                mov rsi, rsp
                sub rsi, 8192
                mov edi, 1
                mov eax, 1
                syscall
                mov edx, 1
                mov edi, 1
                mov eax, 1
                syscall
                mov eax, 7
                ret",
        common::sigreturn_to("2f", 0)
    ));
    for (policy, output_file) in common::both_kinds() {
        let options = common::kind_options(&policy, output_file, 4096);
        let mut same = SameCode::new(&code, &options).unwrap();
        for _ in 0..3 {
            let what = format!("{policy:?} file {output_file}");
            let report = common::same_as_fresh(&mut same, b"", &options, &what);
            assert_eq!(report.outcome, Outcome::OutputLimit);
        }
    }
}

fn sig(pid: u32, signal: i32) {
    // SAFETY: kill takes no pointers.
    assert_eq!(
        unsafe { libc::kill(pid as i32, signal) },
        0,
        "kill {pid} {signal}"
    );
}

fn me() -> u32 {
    std::process::id()
}

/// The tracer, started if need be by a traced fault.
fn ensure_tracer() -> u32 {
    let report = bytejail::run(&gas("mov rax, [0]\nret"), b"", &RunOptions::default()).unwrap();
    assert!(
        matches!(report.outcome, Outcome::Crashed { .. }),
        "{}",
        report.summary()
    );
    common::tracer_of(me()).expect("a tracer process")
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// HELD: the tracer killed while a seize request waits for it (stopped first, so the request
/// is surely unanswered): the job fails at once, its worker is reaped, the next job gets a new
/// tracer.
#[test]
fn a_tracer_killed_during_a_seize_fails_that_job_only() {
    let _one = one();
    let tracer = ensure_tracer();
    sig(tracer, libc::SIGSTOP);
    let job = std::thread::spawn(|| {
        let start = Instant::now();
        let result = bytejail::run(&gas("mov eax, 5\nret"), b"", &RunOptions::default());
        (result, start.elapsed())
    });
    wait_until("a worker at its gate", || {
        !common::children_of(me()).is_empty()
    });
    std::thread::sleep(Duration::from_millis(50));
    sig(tracer, libc::SIGKILL);
    let (result, took) = job.join().unwrap();
    let error = result.expect_err("no report for a job whose seize went unanswered");
    assert!(error.to_string().contains("tracer"), "{error}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    wait_until("the worker reaped", || common::children_of(me()).is_empty());
    assert_ne!(ensure_tracer(), tracer);
}

/// HELD: the tracer killed while a same-code input runs (spinning hand-off on and off): that
/// input fails, the next one runs in a new, traced worker.
#[test]
fn a_tracer_killed_during_a_same_code_input_fails_that_input_only() {
    let _one = one();
    for spin in [true, false] {
        let tracer = ensure_tracer();
        let mut options = RunOptions::default();
        options.spin = spin;
        let code = gas("test rbx, rbx\n jz 2f\n 1: jmp 1b\n 2: mov eax, 42\n ret");
        let mut same = SameCode::new(&code, &options).unwrap();
        for _ in 0..3 {
            assert_eq!(common::returned_rax(&same.run(b"").unwrap()), 42);
        }
        let mut spinning = options.clone();
        spinning.limits.timeout = Duration::from_secs(30);
        spinning.registers.set(Gpr::RBX, 1).unwrap();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            sig(tracer, libc::SIGKILL);
        });
        let start = Instant::now();
        let result = same.run_with(b"", &spinning);
        killer.join().unwrap();
        assert!(
            result.is_err(),
            "spin {spin}: {:?}",
            result.map(|r| r.summary())
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(common::returned_rax(&same.run(b"").unwrap()), 42);
    }
}
