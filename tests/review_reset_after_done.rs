//! An attacker's look at a strict same-code worker that zeroes the pages of the host's last
//! scan (and its private stack) after it said "done", while the host prepares the next input
//! from one of two reset tables: every input that returns finds its scratch, its stack, the
//! alternate signal stack and the worker's private stack zero, as a fresh `bytejail::run` of it
//! does, whatever the input before it did (returned in odd states, crashed, timed out, broke a
//! rule, exited, overflowed its output, forged "done", needed a new arena, dirtied many pages);
//! a new table every input with many runs neither reruns an input nor ends a worker; and the
//! wall time the zeroing adds to the next input is bounded and measured.

use std::time::{Duration, Instant};

mod common;
use common::{essence, gas, one_at_a_time, two_cpus};

use bytejail::{Outcome, Policy, RunOptions, SameCode, Zygote};

/// The stack and scratch every probe session gets (the defaults).
const STACK_LEN: usize = 1 << 20;
const SCRATCH_LEN: usize = 1 << 20;

/// Pages of scratch the probe digests and writes (from its start).
const SCRATCH_PAGES: usize = 24;
/// Bytes of stack the probe digests and writes, just below its entry `rsp`.
const STACK_BYTES: usize = 0x6000;

/// Input byte 1, the probe's flags: digest its pages into rax first.
const CHECK: u8 = 1;
/// Write a word into every line of its pages (the value: input byte 2 | 0x100).
const WRITE: u8 = 2;
/// Write a word into every line of 63 scratch pages past its own (256 KiB with the stack's
/// top page: the most a scan leaves to the worker) and of the whole alternate signal stack,
/// a long zeroing after "done" (without [`WRITE`]: with it the next scan punches instead).
const WRITE_LONG: u8 = 4;
/// Digest its pages into rax again after its writes (the twin: the check can fail).
const CHECK_AFTER: u8 = 16;
/// Write a word into a scratch page chosen by input byte 3 (in 8 KiB steps past 512 KiB):
/// now and then a page that never existed, so a new scan and a new table.
const WRITE_NEW: u8 = 8;

/// How the probe ends (input byte 0).
const ENDINGS: [&str; 10] = [
    "return",
    "ud2",
    "spin (timeout)",
    "getpid (violation)",
    "exit",
    "return with DF, AC, odd rsp, xmm all ones, odd MXCSR",
    "output overflow, then return",
    "return with TF set",
    "forged pipe done, then spin",
    "return after writing the blob's reset words (a crash: read-only)",
];

/// The probe: r9 scratch, r13 the stack bytes below `rsp`, r12 the alternate signal stack
/// (region + 0x6000, ten pages: its first and last), r15 the worker's private stack (data
/// page + 0x800 up to, not with, its top two words: a fresh worker's set-up leaves one there,
/// every entry the flags it sets).
fn probe() -> Vec<u8> {
    let pages: [(&str, usize); 4] = [
        ("r9", SCRATCH_PAGES * 4096),
        ("r13", STACK_BYTES),
        ("r12", 4096),
        ("r15", 0x7c0),
    ];
    let mut s = String::from(
        "mov r8, rdi\n mov r9, rdx\n mov r14, [rsp]\n and r14, -4096\n\
         lea r15, [r14 + 0x1800]\n lea r12, [r14 + 0x6000]\n\
         mov r13, rsp\n sub r13, 0x6000\n\
         movzx ebx, byte ptr [r8 + 2]\n or rbx, 0x100\n movzx r10d, byte ptr [r8 + 1]\n\
         xor eax, eax\n",
    );
    let digest = |tag: &str| {
        let mut d = String::new();
        for (i, (base, len)) in pages.iter().enumerate() {
            d += &format!(
                "mov rsi, {base}\n mov ecx, {n}\n .Ld{tag}{i}: or rax, [rsi]\n add rsi, 8\n dec ecx\n jnz .Ld{tag}{i}\n",
                n = len / 8
            );
        }
        d + "or rax, [r12 + 0x9000]\n or rax, [r12 + 0x9ff8]\n"
    };
    s += "bt r10, 0\n jnc .Lnocheck\n";
    s += &digest("a");
    s += ".Lnocheck:\n bt r10, 1\n jnc .Lnowrite\n";
    for (i, (base, len)) in pages.iter().enumerate() {
        s += &format!(
            "mov rsi, {base}\n mov ecx, {n}\n .Lw{i}: mov [rsi], rbx\n add rsi, 64\n dec ecx\n jnz .Lw{i}\n",
            n = len / 64
        );
    }
    s += "mov [r12 + 0x9000], rbx\n mov [r12 + 0x9ff8], rbx\n";
    s += ".Lnowrite:\n bt r10, 4\n jnc .Lnocheck2\n";
    s += &digest("b");
    s += ".Lnocheck2:\n bt r10, 2\n jnc .Lnolong\n";
    s += &format!(
        "lea rsi, [r9 + {at}]\n mov ecx, {n}\n .Llong: mov [rsi], rbx\n add rsi, 64\n dec ecx\n jnz .Llong\n",
        at = SCRATCH_PAGES * 4096,
        n = 63 * 64
    );
    s += "mov rsi, r12\n mov ecx, 0x280\n .Lalt: mov [rsi], rbx\n add rsi, 64\n dec ecx\n jnz .Lalt\n";
    s += ".Lnolong:\n bt r10, 3\n jnc .Lnonew\n";
    s += "movzx ecx, byte ptr [r8 + 3]\n shl rcx, 13\n mov [r9 + rcx + 0x80000], rbx\n";
    s += ".Lnonew:\n movzx ecx, byte ptr [r8]\n";
    // The endings.
    s += "cmp ecx, 0\n jne 1f\n ret\n";
    s += "1: cmp ecx, 1\n jne 2f\n ud2\n";
    s += "2: cmp ecx, 2\n jne 3f\n 9: jmp 9b\n";
    s += "3: cmp ecx, 3\n jne 4f\n mov eax, 39\n syscall\n ret\n";
    s += "4: cmp ecx, 4\n jne 5f\n mov eax, 60\n xor edi, edi\n syscall\n";
    s += "5: cmp ecx, 5\n jne 6f\n\
          pcmpeqb xmm0, xmm0\n pcmpeqb xmm1, xmm1\n pcmpeqb xmm7, xmm7\n pcmpeqb xmm15, xmm15\n\
          sub rsp, 8\n mov dword ptr [rsp], 0xff80\n ldmxcsr [rsp]\n add rsp, 8\n\
          pop rcx\n sub rsp, 3\n pushfq\n or qword ptr [rsp], 0x40400\n popfq\n jmp rcx\n";
    s += "6: cmp ecx, 6\n jne 7f\n mov rdx, rax\n mov eax, 1\n mov edi, 1\n mov rsi, r9\n\
          mov r11, rdx\n mov edx, 0x10000\n syscall\n mov rax, r11\n ret\n";
    s += "7: cmp ecx, 7\n jne 8f\n pushfq\n or qword ptr [rsp], 0x100\n popfq\n ret\n";
    s += "8: cmp ecx, 8\n jne 10f\n mov qword ptr [r14 + 0x1100], 1\n lea rsi, [r14 + 0x10e0]\n\
          mov edi, 4\n mov edx, 8\n mov eax, 1\n syscall\n 11: jmp 11b\n";
    s += "10: mov qword ptr [r14 + 0xf00], -1\n ret\n";
    gas(&s)
}

/// A probe input: ending, flags, value, chosen page; padded to `len` bytes.
fn probe_input(ending: u8, flags: u8, value: u8, page: u8, len: usize) -> Vec<u8> {
    let mut input = vec![ending, flags, value, page];
    input.resize(len.max(input.len()), 0xa5);
    input
}

fn probe_options(policy: &Policy, spin: bool, trace: bool) -> RunOptions {
    let mut options = RunOptions::default();
    options.policy = policy.clone();
    options.spin = spin;
    options.trace = trace;
    options.limits.scratch = SCRATCH_LEN;
    options.limits.stack = STACK_LEN;
    options.limits.max_output = 4096;
    options.limits.timeout = Duration::from_millis(100);
    options
}

/// One session of `count` pseudo-random probe inputs, each compared with a fresh run of the
/// same input; after every other ending a checking input that returns. Returns how many
/// inputs returned having checked.
fn probe_session(
    policy: &Policy,
    spin: bool,
    trace: bool,
    zygote: Option<&Zygote>,
    count: u64,
    seed: u64,
) -> u64 {
    let code = probe();
    let options = probe_options(policy, spin, trace);
    let mut same = match zygote {
        Some(zygote) => SameCode::with_zygote(&code, &options, zygote).unwrap(),
        None => SameCode::new(&code, &options).unwrap(),
    };
    let mut next = common::pseudo_random(seed);
    let mut checked = 0;
    let mut grown = 0usize;
    let mut last = "none".to_string();
    let mut forged = 0;
    for i in 0..count {
        // Every other input is a plain checking return, so each ending is followed by one.
        let ending = if i % 2 == 0 {
            0
        } else {
            (next() % ENDINGS.len() as u64) as u8
        };
        let mut flags = CHECK;
        if next() % 2 == 0 {
            flags |= WRITE;
        }
        if next() % 3 == 0 {
            flags |= WRITE_LONG;
        }
        if next() % 4 == 0 {
            flags |= WRITE_NEW;
        }
        let len = if i % 50 == 49 {
            grown += 1;
            (64 << 10) + grown * (80 << 10)
        } else {
            (next() % 64) as usize
        };
        let input = probe_input(ending, flags, next() as u8, next() as u8, len);
        let report = same.run(&input).unwrap();
        let fresh = bytejail::run(&code, &input, &options).unwrap();
        let what = format!(
            "{policy:?} spin={spin} trace={trace} zygote={} input {i} ({}, flags {flags:#x}, len {len}) after {last}",
            zygote.is_some(),
            ENDINGS[ending as usize],
        );
        // A forged "done" is a return of the session's own making (a fresh worker, which
        // has no done pipe, times out); the worker then runs on in the guest, and the next
        // input is run again in a fresh one.
        // The documented bound on an input's CPU time under strict mode and strict-bpf: its
        // wall time (the zeroing after "done" of the input before included).
        assert!(report.user <= report.wall, "{what}: {report:?}");
        if ending == 8 {
            forged += 1;
        } else {
            assert_eq!(essence(&report), essence(&fresh), "{what}");
        }
        if let (Outcome::Returned(regs), 0) = (&report.outcome, ending) {
            assert_eq!(regs.rax, 0, "{what}: a page held data");
            checked += 1;
        }
        last = ENDINGS[ending as usize].to_string();
    }
    assert!(
        same.inputs_rerun() <= forged,
        "{} reruns, {forged} forged",
        same.inputs_rerun()
    );
    checked
}

/// Whatever the input before did, every input that returns finds its pages zero and gets
/// the report a fresh run gives: strict mode and strict-bpf, spun and through pipes, traced
/// and not, with and without a zygote.
#[test]
fn every_input_after_every_ending_finds_zeros() {
    let _one = one_at_a_time();
    let zygote = Zygote::start().unwrap();
    let mut seed = 1000;
    for policy in [Policy::Strict, Policy::StrictBpf] {
        for spin in [true, false] {
            for trace in [false, true] {
                for zygote in [None, Some(&zygote)] {
                    seed += 1;
                    let checked = probe_session(&policy, spin, trace, zygote, 120, seed);
                    assert!(checked >= 55, "{policy:?} spin={spin}: {checked} checked");
                }
            }
        }
    }
}

/// The twin: the probe that digests its pages again after its writes sees them (the check
/// can fail), in the same sessions and modes.
#[test]
fn the_check_sees_its_own_writes() {
    let _one = one_at_a_time();
    let code = probe();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        for spin in [true, false] {
            let options = probe_options(&policy, spin, false);
            let mut same = SameCode::new(&code, &options).unwrap();
            for i in 0..20u8 {
                let report = same
                    .run(&probe_input(0, CHECK | WRITE | CHECK_AFTER, i, 0, 0))
                    .unwrap();
                match report.outcome {
                    Outcome::Returned(regs) => assert_ne!(regs.rax, 0, "input {i}"),
                    other => panic!("input {i}: {other:?}"),
                }
                // And the check alone, right after, finds zeros again.
                match same.run(&probe_input(0, CHECK, 0, 0, 0)).unwrap().outcome {
                    Outcome::Returned(regs) => assert_eq!(regs.rax, 0, "after input {i}"),
                    other => panic!("after input {i}: {other:?}"),
                }
            }
        }
    }
}

/// A guest writing two words into each of `runs` separate scratch pages (8 KiB apart) at a
/// base that moves every input (a new page, a new scan and a new table every input), and a
/// word into each of `alt` separate pages of the alternate signal stack, after checking that
/// every word the input before could have written (eleven pages from the base before, the
/// alternate stack's five) is zero. Input: runs, alt, base (in 64 KiB steps).
fn runs_probe() -> Vec<u8> {
    gas("mov r8, rdi\n mov r9, rdx\n mov r14, [rsp]\n and r14, -4096\n lea r12, [r14 + 0x6000]\n\
         movzx r10d, byte ptr [r8 + 2]\n shl r10, 16\n add r10, r9\n\
         xor eax, eax\n\
         lea rsi, [r10 - 0x10000]\n mov ecx, 11\n\
         1: or rax, [rsi]\n or rax, [rsi + 0x7c0]\n add rsi, 0x2000\n dec ecx\n jnz 1b\n\
         mov rsi, r12\n mov ecx, 5\n 3: or rax, [rsi]\n add rsi, 0x2000\n dec ecx\n jnz 3b\n\
         movzx ecx, byte ptr [r8]\n test ecx, ecx\n jz 5f\n mov rsi, r10\n\
         4: mov qword ptr [rsi], 1\n mov qword ptr [rsi + 0x7c0], 1\n add rsi, 0x2000\n dec ecx\n jnz 4b\n\
         5: movzx ecx, byte ptr [r8 + 1]\n test ecx, ecx\n jz 7f\n mov rsi, r12\n\
         6: mov qword ptr [rsi], 1\n add rsi, 0x2000\n dec ecx\n jnz 6b\n\
         7: ret")
}

/// A new table every input with up to the most runs a table can hold (its private stack, five
/// runs of the alternate signal stack, up to eight of scratch and stack: past that the scan
/// punches and the table lists no scratch: 14, below the 17 it has room for), on two CPUs,
/// spun and not: every input finds zeros, one worker serves them all, and no input is run
/// again.
#[test]
fn a_new_table_every_input_with_many_runs_reruns_nothing() {
    let _one = one_at_a_time();
    let code = runs_probe();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        for spin in [true, false] {
            let mut options = RunOptions::default();
            options.policy = policy.clone();
            options.spin = spin;
            options.limits.scratch = 4 << 20;
            let mut same = SameCode::new(&code, &options).unwrap();
            let mut next = common::pseudo_random(77);
            for i in 0..600u32 {
                let runs = (next() % 12) as u8; // 0..=11: past the eight a scan lists
                let alt = (next() % 6) as u8; // 0..=5
                let base = 1 + (i % 60) as u8; // a new page most inputs
                let input = [runs, alt, base];
                let report = same.run(&input).unwrap();
                match report.outcome {
                    Outcome::Returned(regs) => assert_eq!(
                        regs.rax, 0,
                        "{policy:?} spin {spin} input {i} ({runs} runs, {alt} alt, base {base}): data"
                    ),
                    other => panic!("{policy:?} spin {spin} input {i}: {other:?}"),
                }
            }
            assert_eq!(
                (same.workers_started(), same.inputs_rerun()),
                (1, 0),
                "{policy:?} spin {spin}"
            );
            if spin && two_cpus() && same.inputs_spun() == 0 {
                eprintln!("none spun (a busy machine)");
            }
        }
    }
}

/// Median wall time (as reported, and of the `run` call) of `count` tiny inputs each right
/// after `before` (an input of the same session), in microseconds, and how many of the
/// `2 * count` inputs timed out rather than returned.
fn tiny_after(same: &mut SameCode, before: &[u8], count: usize) -> (f64, f64, usize) {
    let tiny = probe_input(0, 0, 0, 0, 0);
    let mut timeouts = 0;
    let mut returned = |report: &bytejail::Report| match report.outcome.kind() {
        "returned" => true,
        "timeout" => {
            timeouts += 1;
            false
        }
        other => panic!("{other}: {:?}", report.outcome),
    };
    let mut walls: Vec<(f64, f64)> = Vec::new();
    for _ in 0..count {
        let report = same.run(before).unwrap();
        returned(&report);
        let start = Instant::now();
        let report = same.run(&tiny).unwrap();
        let call = start.elapsed().as_secs_f64() * 1e6;
        if returned(&report) {
            walls.push((report.wall.as_secs_f64() * 1e6, call));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (
        median(walls.iter().map(|w| w.0).collect()),
        median(walls.iter_mut().map(|w| w.1).collect()),
        timeouts,
    )
}

/// What the zeroing after "done" adds to the next input's wall time, at its worst with the
/// default limits (a table of 256 KiB of scratch and stack, every line dirty, plus the
/// alternate and private stacks), spun and not; and a tight timeout right after such an input:
/// the tiny input is not reported as timed out for the zeroing (no more often after the long
/// input than after a tiny one; a few of 600 may, on a VM that takes the CPU away for a
/// millisecond now and then). Prints the medians (timing belongs in benches; the bound here is
/// generous).
#[test]
fn the_zeroing_an_input_leaves_to_the_next_is_bounded() {
    let _one = one_at_a_time();
    let code = probe();
    for spin in [true, false] {
        let mut options = probe_options(&Policy::Strict, spin, false);
        options.limits.timeout = Duration::from_millis(1);
        let mut same = SameCode::new(&code, &options).unwrap();
        // The long pages exist and are listed (no new page afterwards).
        let long = probe_input(0, WRITE_LONG, 3, 0, 0);
        same.run(&long).unwrap();
        same.run(&long).unwrap();
        let idle = probe_input(0, 0, 0, 0, 0);
        let quiet = tiny_after(&mut same, &idle, 300);
        let loud = tiny_after(&mut same, &long, 300);
        eprintln!(
            "spin {spin}: a tiny input's wall (its run call) after a tiny one {:.1} us ({:.1} us), \
             after one dirtying 296 KiB {:.1} us ({:.1} us); timeouts {} and {} of 600",
            quiet.0, quiet.1, loud.0, loud.1, quiet.2, loud.2
        );
        assert!(loud.0 < 1000.0, "spin {spin}: {loud:?} us");
        assert!(
            quiet.2 <= NOISE && loud.2 <= quiet.2 + NOISE,
            "spin {spin}: timeouts {} after tiny inputs, {} after long ones",
            quiet.2,
            loud.2
        );
    }
}

/// Inputs of a few hundred that may time out at a tight limit for the machine alone (a VM
/// that takes the CPU away for a millisecond now and then), not for the zeroing.
const NOISE: usize = 3;

/// Tight timeouts right after an input that left 296 KiB to zero, against the same right
/// after a tiny input: timeouts from the zeroing alone would show as a difference. With a
/// 2 ms timeout no more than a few may time out, and no more after the zeroing than after a
/// tiny input (see [`NOISE`]); below that the counts are printed (the documented effect:
/// an input's wall time holds the zeroing the input before it left unfinished).
#[test]
fn tight_timeouts_after_long_zeroing_report_only_real_timeouts() {
    let _one = one_at_a_time();
    let code = probe();
    let long = probe_input(0, WRITE_LONG, 3, 0, 0);
    let tiny = probe_input(0, 0, 0, 0, 0);
    for spin in [true, false] {
        let options = probe_options(&Policy::Strict, spin, false);
        let mut same = SameCode::new(&code, &options).unwrap();
        same.run(&long).unwrap();
        same.run(&long).unwrap();
        for micros in [2000u64, 200, 50, 20] {
            let mut tight = options.clone();
            tight.limits.timeout = Duration::from_micros(micros);
            let mut timeouts = [0; 2];
            let mut errors = [0; 2];
            for (k, before) in [&tiny, &long].into_iter().enumerate() {
                for _ in 0..300 {
                    same.run(before).unwrap();
                    // Below a worker's wake-up time the input may not be taken in time by
                    // the worker nor by the fresh one it is run again in: an error.
                    let report = match same.run_with(&tiny, &tight) {
                        Ok(report) => report,
                        Err(e) if micros < 2000 => {
                            eprintln!("spin {spin}, timeout {micros} us, after input {k}: {e}");
                            errors[k] += 1;
                            continue;
                        }
                        Err(e) => panic!("spin {spin}, after input {k}: {e}"),
                    };
                    match report.outcome.kind() {
                        "returned" => {}
                        "timeout" => timeouts[k] += 1,
                        other => panic!("{other}"),
                    }
                }
            }
            eprintln!(
                "spin {spin}, timeout {micros} us: {} of 300 tiny inputs timed out after a tiny one \
                 ({} errors), {} after a long zeroing ({} errors)",
                timeouts[0], errors[0], timeouts[1], errors[1]
            );
            if micros >= 2000 {
                assert!(
                    timeouts[0] <= NOISE && timeouts[1] <= timeouts[0] + NOISE,
                    "spin {spin}: {timeouts:?}"
                );
            }
        }
    }
}

/// A guest for the race between the host's punching scan and the worker's zeroing after
/// "done". Input byte 0: 0 digests `X` (60 scratch pages) and the stack's top page below
/// `rsp` into rax, then writes a word into a line of each; 1 writes a word into every page
/// of `X` and into 80 scratch pages past them (320 KiB more: the next scan punches).
fn punch_probe() -> Vec<u8> {
    gas("mov r9, rdx\n xor eax, eax\n cmp byte ptr [rdi], 1\n je 5f\n\
         mov rsi, r9\n mov ecx, 60 * 512\n 1: or rax, [rsi]\n add rsi, 8\n dec ecx\n jnz 1b\n\
         lea rsi, [rsp - 0xf00]\n mov ecx, 0x1e0\n 2: or rax, [rsi]\n add rsi, 8\n dec ecx\n jnz 2b\n\
         mov qword ptr [rsp - 0x800], 7\n\
         mov rsi, r9\n mov ecx, 60\n 3: mov qword ptr [rsi + 0x40], 7\n add rsi, 4096\n dec ecx\n jnz 3b\n\
         ret\n\
         5: mov rsi, r9\n mov ecx, 140\n 6: mov qword ptr [rsi], 1\n add rsi, 4096\n dec ecx\n jnz 6b\n\
         ret")
}

/// The host's scan after an input that made more than 256 KiB of new pages punches the
/// scratch and stack out, while the worker may still read (and so, on a shared mapping,
/// bring back) the pages of the last scan's table. Pages it brings back before the host's
/// `fstat` are counted in the block count the host then trusts, but listed nowhere: nothing
/// would zero them again. Here the host's thread shares its CPU with a busy thread (so it is
/// now and then preempted between its punch and its `fstat`) and the worker has the other:
/// every check input must still find zeros.
#[test]
fn pages_the_worker_brings_back_during_a_punch_are_zeroed_later() {
    if !two_cpus() {
        return;
    }
    let _one = one_at_a_time();
    let code = punch_probe();
    let mut options = RunOptions::default();
    options.spin = true;
    let rounds: usize = std::env::var("BYTEJAIL_PUNCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let test_thread = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut same = SameCode::new(&code, &options).unwrap();
            common::pin(&[0]);
            let hog = std::thread::spawn({
                let stop = stop.clone();
                move || {
                    common::pin(&[0]);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                }
            });
            let mut bad = Vec::new();
            for round in 0..rounds {
                for (k, input) in [[0u8], [0], [1], [0], [0]].iter().enumerate() {
                    match same.run(input).unwrap().outcome {
                        Outcome::Returned(regs) if regs.rax != 0 => bad.push((round, k)),
                        Outcome::Returned(_) => {}
                        other => panic!("round {round} input {k}: {other:?}"),
                    }
                }
                if bad.len() > 5 {
                    break;
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            hog.join().unwrap();
            (bad, same.workers_started(), same.inputs_rerun())
        }
    });
    let (bad, workers, rerun) = test_thread.join().unwrap();
    eprintln!("{workers} workers, {rerun} inputs run again");
    assert!(
        bad.is_empty(),
        "check inputs that found data (round, input): {bad:?}"
    );
}

/// `bytejail batch --reuse same-code` on two job threads: a group of the probe whose inputs
/// end every way there is (writing its pages first), interleaved with a group of the same
/// probe whose inputs only check and return, and `--cpu-time` (no spin) and `--spin off` as
/// well as the default: every line is answered, and every checking input returns 0 as it does
/// alone.
#[test]
fn a_batch_mixing_every_ending_with_checking_inputs_gets_every_check_right() {
    let _one = one_at_a_time();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let code = hex(&probe());
    let mut lines = String::new();
    let mut checks = 0;
    let mut total = 0;
    for i in 0..60u8 {
        let ending = i % ENDINGS.len() as u8;
        let flags = if i % 3 == 0 {
            WRITE_LONG
        } else {
            WRITE | WRITE_NEW
        };
        let input = hex(&probe_input(ending, CHECK | flags, i, i, 0));
        lines += &format!(
            "{{\"id\": \"a{i}\", \"group\": \"dirty\", \"code_hex\": \"{code}\", \"input_hex\": \"{input}\", \"timeout_ms\": 100}}\n"
        );
        let input = hex(&probe_input(0, CHECK, 0, 0, 0));
        lines += &format!(
            "{{\"id\": \"c{i}\", \"group\": \"clean\", \"code_hex\": \"{code}\", \"input_hex\": \"{input}\", \"timeout_ms\": 1000}}\n"
        );
        checks += 1;
        total += 2;
    }
    for extra in [&[][..], &["--cpu-time", "1s"][..], &["--spin", "off"][..]] {
        let start = Instant::now();
        let mut args = vec!["--reuse", "same-code", "--jobs", "2"];
        args.extend_from_slice(extra);
        args.push("-");
        let run = common::batch_of(&args, &lines);
        assert!(run.wrote_all, "{extra:?}: {}", run.stderr);
        assert!(start.elapsed() < Duration::from_secs(60), "{extra:?}");
        let results = run.results;
        assert_eq!(results.len(), total, "{extra:?}: {}", run.stderr);
        let mut ok = 0;
        let mut ok_dirty = 0;
        for r in &results {
            let id = r["id"].as_str().unwrap();
            if id.starts_with('c') {
                assert_eq!(r["outcome"], "returned", "{extra:?}: {r}");
                assert_eq!(r["rax"], 0, "{extra:?}: {r}");
                ok += 1;
            } else {
                assert!(r.get("outcome").is_some(), "{extra:?}: {r}");
                // Its own session's inputs that return find zeros too.
                let i: u8 = id[1..].parse().unwrap();
                if [0, 5].contains(&(i % ENDINGS.len() as u8)) {
                    assert_eq!(r["outcome"], "returned", "{extra:?}: {r}");
                    assert_eq!(r["rax"], 0, "{extra:?}: {r}");
                    ok_dirty += 1;
                }
            }
        }
        assert_eq!((ok, ok_dirty), (checks, 12), "{extra:?}");
    }
}

/// The session of [`punch_probe`] inputs that [`a_punch_the_host_is_slow_to_count_after_is_rescanned`]
/// runs under `strace`; prints how many checks found data.
#[test]
#[ignore = "run by a_punch_the_host_is_slow_to_count_after_is_rescanned"]
fn punch_host() {
    let code = punch_probe();
    let mut options = RunOptions::default();
    options.spin = false; // "done" on the pipe, a write strace can hold the worker after
    let mut same = SameCode::new(&code, &options).unwrap();
    let mut bad = 0;
    for _ in 0..20 {
        for input in [[0u8], [0], [1], [0], [0]] {
            match same.run(&input).unwrap().outcome {
                Outcome::Returned(regs) if regs.rax != 0 => bad += 1,
                Outcome::Returned(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    println!("checks that found data: {bad}");
}

/// The race of [`pages_the_worker_brings_back_during_a_punch_are_zeroed_later`] made
/// certain: `strace` holds the worker 5 ms after each `write` (its "done", so it zeroes late)
/// and the host 20 ms after each `fallocate` returns (its punch), before its `fstat`: the
/// worker, zeroing from the last table, reads (and brings back) the pages just punched out
/// before the host counts the file's blocks. Every check still finds zeros: the host does not
/// trust that count and scans again.
#[test]
fn a_punch_the_host_is_slow_to_count_after_is_rescanned() {
    if common::skip_without("strace", 1) || !two_cpus() {
        return;
    }
    let _one = one_at_a_time();
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=fallocate,write"])
        .args(["-e", "inject=fallocate:delay_exit=20000"])
        .args(["-e", "inject=write:delay_exit=5000"])
        .arg(exe)
        .args(["--ignored", "--exact", "punch_host", "--nocapture"])
        .args(["--test-threads", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("checks that found data: 0\n"), "{stdout}");
}
