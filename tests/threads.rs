//! Many host threads running jobs at once while another thread hammers the allocator: every
//! report is right and nothing deadlocks (the post-fork path takes no lock).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytejail::{Gpr, Outcome, RunOptions};

/// `mov rax, rbx; ret`
const RETURN_RBX: &[u8] = &[0x48, 0x89, 0xd8, 0xc3];

/// read(0, scratch, rcx) until EOF, write(1, ...) what was read, then ret.
/// `mov r12, rdx; mov r13, rcx; L: xor eax,eax; xor edi,edi; mov rsi,r12; mov rdx,r13; syscall;
///  test rax,rax; jle done; mov rdx,rax; mov eax,1; mov edi,1; mov rsi,r12; syscall; jmp L;
///  done: ret`
const ECHO: &[u8] = &[
    0x49, 0x89, 0xd4, // mov r12, rdx
    0x49, 0x89, 0xcd, // mov r13, rcx
    0x31, 0xc0, // L: xor eax, eax
    0x31, 0xff, // xor edi, edi
    0x4c, 0x89, 0xe6, // mov rsi, r12
    0x4c, 0x89, 0xea, // mov rdx, r13
    0x0f, 0x05, // syscall
    0x48, 0x85, 0xc0, // test rax, rax
    0x7e, 0x14, // jle done (+20)
    0x48, 0x89, 0xc2, // mov rdx, rax
    0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
    0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, 1
    0x4c, 0x89, 0xe6, // mov rsi, r12
    0x0f, 0x05, // syscall
    0xeb, 0xdb, // jmp L (-37)
    0xc3, // done: ret
];

#[test]
fn eight_threads_two_hundred_jobs_each_while_allocating() {
    let stop = Arc::new(AtomicBool::new(false));
    let allocator = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut kept: Vec<Vec<u8>> = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                kept.push(vec![n as u8; 1 + (n >> 52) % 65536]);
                if kept.len() > 64 {
                    kept.swap_remove((n >> 40) % kept.len());
                }
            }
            kept.len()
        })
    };

    let workers: Vec<_> = (0..8u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for i in 0..200u64 {
                    let mut options = RunOptions::default();
                    if i % 4 == 3 {
                        let input = format!("thread {t} job {i}\n").repeat(1 + i as usize % 7);
                        let report = bytejail::run(ECHO, input.as_bytes(), &options).unwrap();
                        if !matches!(report.outcome, Outcome::Returned(_))
                            || report.output != input.as_bytes()
                        {
                            failures.push(format!("echo t{t} i{i}: {:?}", report.outcome));
                        }
                    } else {
                        let want = (t << 32) | i;
                        options.registers.set(Gpr::RBX, want).unwrap();
                        let report = bytejail::run(RETURN_RBX, b"", &options).unwrap();
                        match report.outcome {
                            Outcome::Returned(regs) if regs.rax == want => {}
                            other => failures.push(format!("return t{t} i{i}: {other:?}")),
                        }
                    }
                }
                failures
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut failures = Vec::new();
    for worker in workers {
        while !worker.is_finished() {
            assert!(
                Instant::now() < deadline,
                "jobs did not finish in 300 s: deadlock?"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        failures.extend(worker.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    allocator.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} wrong reports: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
}

#[test]
fn a_timeout_is_reported_within_the_limit_plus_slack() {
    let mut options = RunOptions::default();
    options.limits.timeout = Duration::from_millis(300);
    let report = bytejail::run(&[0xeb, 0xfe], b"", &options).unwrap(); // jmp $
    assert_eq!(report.outcome, Outcome::Timeout);
    assert!(
        report.wall >= Duration::from_millis(300),
        "ended early: {:?}",
        report.wall
    );
    assert!(
        report.wall < Duration::from_millis(2300),
        "ended late: {:?}",
        report.wall
    );
    // It did spin (on a loaded machine only part of the time): the worker ran the guest.
    assert!(
        report.user + report.sys >= Duration::from_millis(10),
        "{report:?}"
    );
}

#[test]
fn a_guest_ignoring_an_8_mib_input_returns_promptly() {
    let input = vec![0x5a; 8 << 20];
    let start = Instant::now();
    let report = bytejail::run(&[0xb0, 0x07, 0xc3], &input, &RunOptions::default()).unwrap();
    assert!(
        matches!(report.outcome, Outcome::Returned(regs) if regs.rax == 7),
        "{:?}",
        report.outcome
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn an_8_mib_input_streams_through_fd_0_completely() {
    let input: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut options = RunOptions::default();
    options.limits.max_output = input.len();
    options.limits.timeout = Duration::from_secs(20);
    let report = bytejail::run(ECHO, &input, &options).unwrap();
    assert!(
        matches!(report.outcome, Outcome::Returned(_)),
        "{:?}",
        report.outcome
    );
    assert!(
        report.output == input,
        "echoed {} of {} bytes",
        report.output.len(),
        input.len()
    );
}
