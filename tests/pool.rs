//! The pool of pre-forked single-use workers reports exactly what a fresh worker reports, from
//! many threads at once, and one job never sees another's memory.

use std::time::Duration;

use bytejail::{Gpr, Outcome, Pool, Report, RunOptions};

mod common;
use common::{essence, gas};

fn jobs() -> Vec<(&'static str, Vec<u8>, Vec<u8>, RunOptions)> {
    let short = RunOptions::default().with_limits(
        bytejail::Limits::default()
            .with_timeout(Duration::from_millis(300))
            .with_max_output(4096),
    );
    let mut regs = RunOptions::default();
    regs.registers.set(Gpr::RBX, 0x1234_5678_9abc).unwrap();
    vec![
        ("return", vec![0xb0, 42, 0xc3], vec![], RunOptions::default()),
        ("registers", gas("mov rax, rbx\n ret"), vec![], regs),
        ("exit", gas("mov eax, 60\n mov edi, 3\n syscall"), vec![], RunOptions::default()),
        ("null write", gas("xor eax, eax\n mov qword ptr [rax], 1"), vec![], RunOptions::default()),
        ("violation", gas("mov eax, 39\n syscall\n ret"), vec![], RunOptions::default()),
        ("timeout", vec![0xeb, 0xfe], vec![], short.clone()),
        ("flood", gas("mov r12, rdx\n1: mov eax, 1\n mov edi, 1\n mov rsi, r12\n mov edx, 512\n syscall\n jmp 1b"), vec![], short),
        (
            "echo",
            gas("mov r12, rdx\n mov r13, rcx\n1: xor eax, eax\n xor edi, edi\n mov rsi, r12\n mov rdx, r13\n syscall\n test rax, rax\n jle 2f\n mov rdx, rax\n mov eax, 1\n mov edi, 1\n mov rsi, r12\n syscall\n jmp 1b\n2: ret"),
            b"some input for the echo".repeat(100),
            RunOptions::default(),
        ),
    ]
}

#[test]
fn the_pool_reports_exactly_what_a_fresh_worker_reports() {
    let pool = Pool::new(RunOptions::default(), 2).unwrap();
    for (name, code, input, options) in jobs() {
        let fresh = bytejail::run(&code, &input, &options).unwrap();
        let pooled = pool.run(&code, &input, &options).unwrap();
        assert_eq!(essence(&pooled), essence(&fresh), "{name}");
    }
    // The jobs above fit the template (or ran fresh, which is also correct); at least some
    // really used parked workers.
    let stats = pool.stats();
    assert!(stats.fallbacks < jobs().len() as u64, "{stats:?}");
}

#[test]
fn four_threads_share_one_pool() {
    let pool = Pool::new(RunOptions::default(), 4).unwrap();
    let jobs = jobs();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (pool, jobs) = (&pool, &jobs);
            scope.spawn(move || {
                for i in 0..60 {
                    let (name, code, input, options) = &jobs[(t + i) % jobs.len()];
                    let report = pool.run(code, input, options).unwrap();
                    let expected = match *name {
                        "return" => "returned",
                        "registers" => "returned",
                        "exit" => "exited",
                        "null write" => "crashed",
                        "violation" => "syscall_violation",
                        "timeout" => "timeout",
                        "flood" => "output_limit",
                        _ => "returned",
                    };
                    assert_eq!(report.outcome.kind(), expected, "{name}: {report:?}");
                }
            });
        }
    });
}

#[test]
fn one_job_never_sees_another_jobs_memory() {
    let pool = Pool::new(RunOptions::default(), 2).unwrap();
    // Job A leaves a marker in its scratch, its stack and the shared region page, and returns.
    let leave = gas(
        "mov rax, 0x5445524345534a42\n mov [rdx], rax\n mov [rdx + rcx - 8], rax\n push rax\n push rax\n pop rbx\n pop rbx\n\
         lea rbx, [rip]\n and rbx, -4096\n ret",
    );
    // Job B dumps the first and last 4 KiB of its scratch and the 4 KiB below its stack top.
    let dump = gas("mov r12, rdx\n mov r13, rcx\n mov r14, rsp\n\
         mov eax, 1\n mov edi, 1\n mov rsi, r12\n mov edx, 4096\n syscall\n\
         mov eax, 1\n mov edi, 1\n lea rsi, [r12 + r13 - 4096]\n mov edx, 4096\n syscall\n\
         mov eax, 1\n mov edi, 1\n lea rsi, [r14 - 4088]\n mov edx, 4096\n syscall\n ret");
    let marker = 0x5445_5243_4553_4a42u64.to_le_bytes();
    for _ in 0..20 {
        let a = pool.run(&leave, b"", &RunOptions::default()).unwrap();
        assert_eq!(a.outcome.kind(), "returned");
        let b = pool.run(&dump, b"", &RunOptions::default()).unwrap();
        assert_eq!(b.output.len(), 3 * 4096, "{b:?}");
        assert!(
            !b.output.windows(8).any(|w| w == marker),
            "job B saw job A's marker"
        );
        assert!(
            b.output[..2 * 4096].iter().all(|&byte| byte == 0),
            "job B's scratch is not zero"
        );
    }
}

/// The scenario: a job of one submission holds a secret in its input; a later job of
/// another submission hunts for it, given where the host keeps it. Pooled and scrubbed it finds
/// nothing; forked directly from the host without scrubbing, the same hunt finds it.
#[test]
fn a_later_job_cannot_find_an_earlier_jobs_input() {
    let secret = format!("bytejail-input-secret-{:x}", std::process::id()).repeat(4);
    let hunt = common::escape_sample("hunt_range.s");
    // The host keeps the first job's input (as a batch runner does with the lines it read).
    let held: Vec<u8> = secret.as_bytes().to_vec();
    let page = held.as_ptr() as u64 & !0xfff;
    let hunt_options = |scrub: bool| {
        let mut options = RunOptions::default().with_scrub(scrub);
        options.registers.set(Gpr::RBX, page - 8 * 4096).unwrap();
        options
            .registers
            .set("r12".parse().unwrap(), 17 * 4096)
            .unwrap();
        options
    };
    let found = |report: &Report| {
        report
            .output
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
    };

    let pool = Pool::new(RunOptions::default(), 2).unwrap();
    let first = pool.run(&[0xc3], &held, &RunOptions::default()).unwrap();
    assert_eq!(first.outcome.kind(), "returned");
    let later = pool.run(&hunt, b"", &hunt_options(true)).unwrap();
    assert_eq!(later.outcome.kind(), "returned");
    assert!(
        !found(&later),
        "the pooled hunt found the earlier job's input"
    );

    // The twin: no scrubbing, a worker forked straight from the host.
    let twin = bytejail::run(&hunt, b"", &hunt_options(false)).unwrap();
    assert!(
        found(&twin),
        "the unscrubbed hunt did not find the input ({} bytes read)",
        twin.output.len()
    );
    drop(held);
}

#[test]
fn jobs_that_do_not_fit_the_template_run_fresh_with_the_same_report() {
    let pool = Pool::new(RunOptions::default(), 1).unwrap();
    let small_stack =
        RunOptions::default().with_limits(bytejail::Limits::default().with_stack(64 << 10));
    // Recursion until the guard page: where it faults depends on the stack size.
    let recurse = gas("1: call 1b");
    let pooled = pool.run(&recurse, b"", &small_stack).unwrap();
    let fresh = bytejail::run(&recurse, b"", &small_stack).unwrap();
    assert_eq!(essence(&pooled), essence(&fresh));
    assert!(pool.stats().fallbacks >= 1);
}

#[test]
fn a_pooled_worker_holds_only_its_pipes_and_junk_on_the_done_pipe_is_no_done() {
    // rbx: write(2); rcx: write(3), a read end; rdx: write(5); r8: write(4, junk, 8), the done
    // pipe; then
    // some work before returning 7: were the junk taken for "done", rax would not be 7.
    let code = gas("push 0x4b4e554a\n mov r12, rsp\n\
         mov eax, 1\n mov edi, 2\n mov rsi, r12\n mov edx, 1\n syscall\n mov r13, rax\n\
         mov eax, 1\n mov edi, 3\n mov rsi, r12\n mov edx, 1\n syscall\n mov r14, rax\n\
         mov eax, 1\n mov edi, 5\n mov rsi, r12\n mov edx, 1\n syscall\n mov r15, rax\n\
         mov eax, 1\n mov edi, 4\n mov rsi, r12\n mov edx, 8\n syscall\n mov r8, rax\n\
         pop rax\n mov ecx, 20000000\n 1: dec ecx\n jnz 1b\n\
         mov rbx, r13\n mov rcx, r14\n mov rdx, r15\n mov eax, 7\n ret");
    let pool = Pool::new(RunOptions::default(), 1).unwrap();
    for _ in 0..3 {
        // In a parked worker, not a fresh one (which has no fd 4): wait for the refill.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.stats().parked == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let report = pool.run(&code, b"", &RunOptions::default()).unwrap();
        let Outcome::Returned(regs) = report.outcome else {
            panic!("{}", report.summary());
        };
        let ebadf = -(libc::EBADF as i64) as u64;
        assert_eq!((regs.rbx, regs.rcx, regs.rdx), (ebadf, ebadf, ebadf));
        assert_eq!(regs.r8, 8, "the junk was written to the done pipe");
        assert_eq!(regs.rax, 7);
    }
    assert_eq!(pool.stats().fallbacks, 0);
}
