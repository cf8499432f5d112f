//! An attacker's look at the reset a strict same-code worker does itself when its guest
//! returns (the table at `RESET_AT` in its read-only blob page, its private stack at the end
//! of the data page) and at the input number it takes from the go word or the context: every
//! well-behaved input sees what a fresh `bytejail::run` of it sees, whatever came before, and a
//! guest that corrupts what it can only hurts its own session, in bounded time.

use std::time::{Duration, Instant};

mod common;
use common::{essence, gas, one_at_a_time};

use bytejail::{Outcome, Policy, Pool, RunOptions, SameCode, Zygote};

/// The stack every probe session gets (the probe finds its lowest page from it).
const STACK_LEN: usize = 256 << 10;
/// The scratch every probe session gets.
const SCRATCH_LEN: usize = 4 << 20;
/// Region offset of the worker's reset tables (`protocol::layout::RESET_AT`: below the spin
/// budget in the last word of the blob's page, the word saying which is active, then two
/// tables of a count and 17 runs of two words).
const RESET_AT: usize = 0x1000 - 8 - 8 - 2 * RESET_TABLE_LEN;
/// Bytes of one table (`protocol::layout::RESET_TABLE_LEN`).
const RESET_TABLE_LEN: usize = 8 + 17 * 16;

/// The pages the probe digests and writes: (base register, offset, length in bytes).
/// r9: scratch, r12: the scratch's last page, r13: the stack's lowest page, r14: the
/// alternate signal stack, r15: the worker's private stack (data page + 0x800), rbp: a
/// scratch page the input chooses (byte 18, in 16 KiB steps), which comes to be now and then.
const PAGES: [(&str, usize, usize); 12] = [
    ("r9", 0, 4096),
    ("r9", 0x1000, 4096),
    ("r9", 0x20000, 4096),
    ("r9", 0x100000, 4096),
    ("r12", 0, 4096),
    ("r13", 0, 4096),
    ("r13", 0x10000, 4096),
    ("r13", STACK_LEN - 0x2000, 4096),
    ("r14", 0, 4096),
    ("r14", 0x9000, 4096),
    // Not its top two words: a fresh worker's set-up leaves a word of its own at 0xff0
    // (same-code inputs see 0 there), and every entry leaves the flags it sets at 0xff8.
    ("r15", 0, 0x7f0),
    ("rbp", 0, 4096),
];

/// A guest that digests (rotate and xor) the pages of [`PAGES`] whose bit is set in the input's
/// word at byte 1 into rax, writes two words (the input's byte 17, | 0x100) into each page whose
/// bit is set in its word at byte 9, then ends as its byte 0 says: 0 return, 1 `ud2`, 2 spin
/// (timeout), 3 `getpid` (a violation under strict mode and strict-bpf), 4 `exit`.
fn probe() -> Vec<u8> {
    probe_ordered(false)
}

/// [`probe`], or with `write_first` its writes before its digest.
fn probe_ordered(write_first: bool) -> Vec<u8> {
    let mut s = format!(
        "mov r8, rdi\n mov r9, rdx\n lea r12, [rdx + rcx - 4096]\n\
         lea r13, [rsp + 8]\n sub r13, {STACK_LEN}\n\
         mov r14, [rsp]\n and r14, -4096\n lea r15, [r14 + 0x1800]\n add r14, 0x6000\n\
         movzx ebp, byte ptr [r8 + 18]\n shl rbp, 14\n add rbp, r9\n\
         mov r10, [r8 + 1]\n mov r11, [r8 + 9]\n movzx ebx, byte ptr [r8 + 17]\n or rbx, 0x100\n\
         xor eax, eax\n"
    );
    let mut digest = String::new();
    for (i, (base, off, len)) in PAGES.iter().enumerate() {
        digest += &format!(
            "bt r10, {i}\n jnc .Lr{i}\n lea rsi, [{base} + {off}]\n mov ecx, {n}\n\
             .Lrl{i}: rol rax, 7\n xor rax, [rsi]\n add rsi, 8\n dec ecx\n jnz .Lrl{i}\n .Lr{i}:\n",
            n = len / 8
        );
    }
    let mut writes = String::new();
    for (i, (base, off, len)) in PAGES.iter().enumerate() {
        writes += &format!(
            "bt r11, {i}\n jnc .Lw{i}\n mov [{base} + {off} + 0x100], rbx\n\
             mov [{base} + {off} + {last}], rbx\n .Lw{i}:\n",
            last = len - 8
        );
    }
    if write_first {
        s += &writes;
        s += &digest;
    } else {
        s += &digest;
        s += &writes;
    }
    s += "movzx ecx, byte ptr [r8]\n cmp ecx, 1\n jne 3f\n ud2\n 3: cmp ecx, 2\n jne 4f\n 5: jmp 5b\n\
          4: cmp ecx, 3\n jne 6f\n mov eax, 39\n syscall\n\
          6: cmp ecx, 4\n jne 7f\n mov eax, 60\n xor edi, edi\n syscall\n 7: ret";
    gas(&s)
}

/// A probe input: ending, digest mask, write mask, value, chosen page; padded to `len`.
fn probe_input(ending: u8, read: u64, write: u64, value: u8, page: u8, len: usize) -> Vec<u8> {
    let mut input = vec![ending];
    input.extend_from_slice(&read.to_le_bytes());
    input.extend_from_slice(&write.to_le_bytes());
    input.push(value);
    input.push(page);
    input.resize(len.max(input.len()), 0x5a);
    input
}

fn probe_options(policy: &Policy, spin: bool) -> RunOptions {
    let mut options = RunOptions::default();
    options.policy = policy.clone();
    options.spin = spin;
    options.limits.scratch = SCRATCH_LEN;
    options.limits.stack = STACK_LEN;
    options.limits.timeout = Duration::from_millis(150);
    options
}

/// Runs `count` pseudo-random probe inputs in one session and compares each with a fresh run
/// of the same input: pages that come to be and then stay (`st_blocks` changes, then not),
/// more than eight runs (the punch), the private stack written, crashes, timeouts,
/// violations and exits between returns, inputs too large for the arena. Returns how many
/// inputs returned.
fn probe_session(
    policy: &Policy,
    spin: bool,
    zygote: Option<&Zygote>,
    count: u64,
    seed: u64,
) -> u64 {
    let code = probe();
    let options = probe_options(policy, spin);
    let mut same = match zygote {
        Some(zygote) => SameCode::with_zygote(&code, &options, zygote).unwrap(),
        None => SameCode::new(&code, &options).unwrap(),
    };
    let mut next = common::pseudo_random(seed);
    let all = (1u64 << PAGES.len()) - 1;
    let mut returned = 0;
    let mut grown = 0usize;
    for i in 0..count {
        let ending = match next() % 24 {
            0 | 1 => 1,
            2 => 2,
            3 | 4 => 3,
            5 | 6 => 4,
            _ => 0,
        };
        // Mostly the same few pages (the shortcut), the chosen page now and then (a new one).
        let chosen = 1 << (PAGES.len() - 1);
        let mut read = next() & all;
        let mut write = (next() | next() << 31) & all;
        if next() % 6 != 0 {
            read &= !chosen;
            write &= !chosen;
        }
        if i % 5 == 0 {
            read = all; // every page, whatever was written before
        }
        // A new arena (and worker) for inputs 40, 80 and 120, each too large for the last.
        let len = if i % 40 == 39 {
            grown += 1;
            (64 << 10) + grown * (80 << 10)
        } else {
            next();
            (next() % 200) as usize
        };
        let input = probe_input(ending, read, write, next() as u8, (next() % 256) as u8, len);
        let report = same.run(&input).unwrap();
        let fresh = bytejail::run(&code, &input, &options).unwrap();
        let what = format!(
            "{policy:?} spin={spin} zygote={} input {i}",
            zygote.is_some()
        );
        assert_eq!(essence(&report), essence(&fresh), "{what}");
        match (&report.outcome, ending) {
            (Outcome::Returned(regs), 0) => {
                assert_eq!(regs.rax, 0, "{what}: a page held data");
                returned += 1;
            }
            (other, 0) => panic!("{what}: {other:?}"),
            _ => {}
        }
    }
    returned
}

/// Every input of a session sees what a fresh run of it sees, under strict mode and
/// strict-bpf, spun and through pipes, with and without a zygote.
#[test]
fn every_input_sees_a_fresh_runs_state_whatever_came_before() {
    let _one = one_at_a_time();
    let zygote = Zygote::start().unwrap();
    let mut seed = 7;
    for policy in [Policy::Strict, Policy::StrictBpf] {
        for spin in [true, false] {
            for zygote in [None, Some(&zygote)] {
                seed += 1;
                let returned = probe_session(&policy, spin, zygote, 150, seed);
                assert!(
                    returned > 80,
                    "{policy:?} spin={spin}: only {returned} returned"
                );
            }
        }
    }
}

/// The twin: the probe with its writes made before its digest (as an earlier input's would
/// be, were nothing reset) does see them, so the test above can fail.
#[test]
fn the_probe_sees_a_write_when_nothing_resets() {
    let code = probe_ordered(true);
    for page in 0..PAGES.len() {
        let input = probe_input(0, u64::MAX, 1 << page, 0x42, 3, 64);
        for policy in [Policy::Strict, Policy::StrictBpf] {
            let report = bytejail::run(&code, &input, &probe_options(&policy, false)).unwrap();
            match report.outcome {
                Outcome::Returned(regs) => assert_ne!(regs.rax, 0, "{policy:?} page {page}"),
                other => panic!("{policy:?}: {other:?}"),
            }
        }
    }
}

/// The guest reads its worker's active reset table (a count, then pairs) and writes to it
/// (`rbx` says: 0 read only, 1 the count, 2 the first pair's end, 3 a word of the data page's
/// private stack instead, 4 the word saying which table is active). Returns the count in rax,
/// the first pair relative to the region in r8, r9.
fn table_guest() -> Vec<u8> {
    gas(&format!(
        "mov rdi, [rsp]\n and rdi, -4096\n mov rax, [rdi + {RESET_AT}]\n and eax, 1\n\
         imul rax, rax, {RESET_TABLE_LEN}\n lea rsi, [rdi + rax + {RESET_AT} + 8]\n mov rax, [rsi]\n\
         mov r8, [rsi + 8]\n sub r8, rdi\n mov r9, [rsi + 16]\n sub r9, rdi\n\
         cmp rbx, 1\n jne 1f\n mov qword ptr [rsi], 17\n\
         1: cmp rbx, 2\n jne 2f\n mov qword ptr [rsi + 16], -1\n\
         2: cmp rbx, 3\n jne 3f\n mov qword ptr [rdi + 0x1f00], -1\n\
         3: cmp rbx, 4\n jne 4f\n mov qword ptr [rdi + {RESET_AT}], 0\n 4: ret"
    ))
}

/// The table is where the layout says and lists the private stack first (so the writes
/// below aim at it), and a write to it is a crash under strict mode and strict-bpf, spun or
/// not; the twin, a write to the data page next to it, returns. The session goes on right.
#[test]
fn the_reset_table_is_read_only_to_the_guest() {
    let _one = one_at_a_time();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        for spin in [true, false] {
            let mut options = RunOptions::default();
            options.policy = policy.clone();
            options.spin = spin;
            options.limits.timeout = Duration::from_millis(300);
            let mut same = SameCode::new(&table_guest(), &options).unwrap();
            let what = format!("{policy:?} spin={spin}");
            let run = |same: &mut SameCode, rbx: u64| {
                let mut options = options.clone();
                options.registers.set(bytejail::Gpr::RBX, rbx).unwrap();
                same.run_with(b"", &options).unwrap()
            };
            // A first input makes the host scan; then the table lists the private stack.
            run(&mut same, 0);
            for round in 0..3 {
                let report = run(&mut same, 0);
                let Outcome::Returned(regs) = report.outcome else {
                    panic!("{what}: {:?}", report.outcome);
                };
                assert!((1..=17).contains(&regs.rax), "{what}: count {}", regs.rax);
                assert_eq!(
                    (regs.r8, regs.r9),
                    (0x1800, 0x2000),
                    "{what}: private stack"
                );
                for attack in [1, 2, 4] {
                    let report = run(&mut same, attack);
                    assert!(
                        matches!(report.outcome, Outcome::Crashed { signal: 11, .. }),
                        "{what} round {round}, write {attack}: {:?}",
                        report.outcome
                    );
                }
                let twin = run(&mut same, 3);
                assert!(
                    matches!(twin.outcome, Outcome::Returned(_)),
                    "{what}: {:?}",
                    twin.outcome
                );
            }
            // A fresh run and a pool job under the same policy: read-only there too.
            let mut one = options.clone();
            one.registers.set(bytejail::Gpr::RBX, 1).unwrap();
            let fresh = bytejail::run(&table_guest(), b"", &one).unwrap();
            assert!(
                matches!(fresh.outcome, Outcome::Crashed { signal: 11, .. }),
                "{what}: fresh {:?}",
                fresh.outcome
            );
        }
    }
}

/// Data page offsets a guest can reach (region + 0x1000 + these): the context's input number,
/// the record's `taken`, the hand-off's go and done words, the private stack.
const CTX_SEQ: usize = 0x0e0;
const REC_TAKEN: usize = 0x1a0;
const HANDOFF_GO: usize = 0x7c0;
const HANDOFF_DONE: usize = 0x7c8;

/// A guest that corrupts one thing (input byte 0) and then returns (or crashes, byte 1 = 1),
/// and otherwise behaves: digests its private stack, scratch and the stack below it into rax,
/// then writes into all three, and returns.
fn corrupter() -> Vec<u8> {
    gas(&format!(
        "mov r8, rdi\n mov r10, [rsp]\n and r10, -4096\n add r10, 0x1000\n\
         xor eax, eax\n lea rsi, [r10 + 0x800]\n mov ecx, 256\n\
         1: rol rax, 7\n xor rax, [rsi]\n add rsi, 8\n dec ecx\n jnz 1b\n\
         mov rsi, rdx\n mov ecx, 1024\n\
         2: rol rax, 7\n xor rax, [rsi]\n add rsi, 8\n dec ecx\n jnz 2b\n\
         lea rsi, [rsp - 4096]\n mov ecx, 512\n\
         3: rol rax, 7\n xor rax, [rsi]\n add rsi, 8\n dec ecx\n jnz 3b\n\
         mov qword ptr [rdx + 8], 0x77\n mov qword ptr [rsp - 4000], 0x77\n\
         movzx ecx, byte ptr [r8]\n\
         cmp ecx, 't'\n jne 10f\n inc qword ptr [r10 + {REC_TAKEN}]\n\
         10: cmp ecx, 'z'\n jne 11f\n mov qword ptr [r10 + {REC_TAKEN}], 0\n\
         11: cmp ecx, 'm'\n jne 12f\n mov qword ptr [r10 + {REC_TAKEN}], -1\n\
         12: cmp ecx, 's'\n jne 13f\n mov qword ptr [r10 + {CTX_SEQ}], -1\n\
         13: cmp ecx, 'S'\n jne 14f\n inc qword ptr [r10 + {CTX_SEQ}]\n\
         14: cmp ecx, 'g'\n jne 15f\n mov rcx, [r10 + {REC_TAKEN}]\n inc rcx\n mov [r10 + {HANDOFF_GO}], rcx\n\
         15: cmp ecx, 'd'\n jne 16f\n mov rcx, [r10 + {REC_TAKEN}]\n inc rcx\n mov [r10 + {HANDOFF_DONE}], rcx\n\
         16: cmp ecx, 'p'\n jne 17f\n lea rdi, [r10 + 0x800]\n mov ecx, 256\n\
         18: mov qword ptr [rdi], -1\n add rdi, 8\n dec ecx\n jnz 18b\n\
         17: cmp byte ptr [r8 + 1], 1\n jne 19f\n ud2\n 19: movzx ebx, byte ptr [r8]\n ret"
    ))
}

/// Each corruption, returned or crashed after, spun or through pipes, under strict mode and
/// strict-bpf: the host answers every input in bounded time and never panics; the two
/// behaving inputs after it may be misreported or time out (its own session's guest broke the
/// protocol), and the inputs after those see a first input's state; another session of other code running
/// beside it, fresh runs and pool jobs are unaffected.
#[test]
fn corruptions_hurt_only_their_own_session() {
    let _one = one_at_a_time();
    let code = corrupter();
    let other_code = probe();
    let pool = Pool::new(RunOptions::default(), 1).unwrap();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        for spin in [true, false] {
            let mut options = RunOptions::default();
            options.policy = policy.clone();
            options.spin = spin;
            options.limits.timeout = Duration::from_millis(200);
            let other_options = probe_options(&policy, spin);
            let mut other = SameCode::new(&other_code, &other_options).unwrap();
            let other_input = probe_input(0, u64::MAX >> 52, u64::MAX >> 52, 9, 1, 0);
            let behave = b"a\0";
            // The whole private stack, as a session's first input sees it (a fresh run's
            // worker leaves a word of its set-up there that same-code inputs do not see).
            let fresh = essence(&SameCode::new(&code, &options).unwrap().run(behave).unwrap());
            for attack in ["t", "z", "m", "s", "S", "g", "d", "p"] {
                for crash in [0u8, 1] {
                    let what = format!("{policy:?} spin={spin} attack {attack} crash={crash}");
                    let mut same = SameCode::new(&code, &options).unwrap();
                    for _ in 0..3 {
                        let report = same.run(behave).unwrap();
                        assert_eq!(essence(&report), fresh, "{what}: before");
                    }
                    let attack_input = [attack.as_bytes()[0], crash];
                    let started = Instant::now();
                    let attacked = same.run(&attack_input);
                    assert!(
                        started.elapsed() < Duration::from_secs(3),
                        "{what}: {:?}",
                        started.elapsed()
                    );
                    if let Ok(report) = &attacked {
                        assert!(report.output.is_empty(), "{what}: output");
                    }
                    // Its next inputs: bounded, and from the third on, right. (A forged done
                    // word one ahead, "d", used to make the host take the next input's "done"
                    // from it and the record the attack left, after an input whose worker did
                    // not spin; the host now clears a done word that names the input it is
                    // about to start. A go of the guest's own, "g", starts the next input
                    // before the host does: its own session only, inputs of one session are
                    // one submission.)
                    for k in 0..5 {
                        let started = Instant::now();
                        let report = same.run(behave);
                        assert!(
                            started.elapsed() < Duration::from_secs(3),
                            "{what}: input {k} took {:?}",
                            started.elapsed()
                        );
                        // A forger of the go word breaks its next two inputs at most;
                        // everything else, none.
                        let broken = if attack == "g" { 2 } else { 0 };
                        if k >= broken {
                            assert_eq!(essence(&report.unwrap()), fresh, "{what}: after, {k}");
                        }
                    }
                    // The other session, a fresh run and a pool job of other code.
                    let report = other.run(&other_input).unwrap();
                    assert!(
                        matches!(report.outcome, Outcome::Returned(ref r) if r.rax == 0),
                        "{what}: other session {:?}",
                        report.outcome
                    );
                    let report = bytejail::run(&other_code, &other_input, &other_options).unwrap();
                    assert!(
                        matches!(report.outcome, Outcome::Returned(ref r) if r.rax == 0),
                        "{what}: fresh {:?}",
                        report.outcome
                    );
                    let report = pool
                        .run(&common::plus_one(), b"", &RunOptions::default())
                        .unwrap();
                    assert!(
                        matches!(report.outcome, Outcome::Returned(ref r) if r.rax == 1),
                        "{what}: pool {:?}",
                        report.outcome
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The CLONE_VM tracer.

/// The stack pointer of the tracer process of this process (it waits in a syscall), from
/// `/proc/<tracer>/syscall`; `None` where there is no tracer.
fn tracer_stack_pointer() -> Option<u64> {
    let tracer = common::tracer_of(std::process::id())?;
    for _ in 0..100 {
        let text = std::fs::read_to_string(format!("/proc/{tracer}/syscall")).ok()?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() == 9 {
            return u64::from_str_radix(fields[7].trim_start_matches("0x"), 16).ok();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// `write(1, rbx, 1)` (rbx 0: the guest's own stack): rax 1 where rbx is mapped, -EFAULT not.
fn mapped_probe() -> Vec<u8> {
    gas(
        "test rbx, rbx\n jnz 1f\n mov rbx, rsp\n 1: mov edi, 1\n mov rsi, rbx\n mov edx, 1\n\
         mov eax, 1\n syscall\n ret",
    )
}

/// The tracer's stack (a `CLONE_VM` child of the host runs on it) and its shared table are in
/// no worker, not even one that keeps the host's memory (`scrub` off), where a heap page of
/// the host is there to read (the twin: the probe does see host memory there, and the
/// guest's own stack).
#[test]
fn the_tracers_stack_is_in_no_worker() {
    let options = common::profile_options().with_scrub(false);
    // A first traced job starts the tracer.
    common::returned_rax(&bytejail::run(&gas("xor eax, eax\n ret"), b"", &options).unwrap());
    let Some(sp) = tracer_stack_pointer() else {
        println!("skipped: no tracer process here");
        return;
    };
    let heap = Box::new([7u8; 64]);
    let code = mapped_probe();
    let probe = |address: u64, options: &RunOptions| {
        let mut options = options.clone();
        options.registers.set(bytejail::Gpr::RBX, address).unwrap();
        common::returned_rax(&bytejail::run(&code, b"", &options).unwrap())
    };
    assert_eq!(probe(0, &options), 1, "the guest's own stack");
    assert_eq!(
        probe(heap.as_ptr() as u64, &options),
        1,
        "the host's heap, unscrubbed"
    );
    // The host's shared anonymous mappings (the tracer's table among them, mapped before
    // the tracer started and kept out of later forks).
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let shared: Vec<u64> = maps
        .lines()
        .filter(|line| line.contains(" rw-s ") && line.contains("/dev/zero"))
        .filter_map(|line| u64::from_str_radix(line.split('-').next()?, 16).ok())
        .collect();
    assert!(!shared.is_empty(), "no shared anonymous mapping: {maps}");
    for &start in &shared {
        assert_eq!(
            probe(start, &options),
            -14,
            "shared mapping {start:#x}, unscrubbed"
        );
    }
    // The pages of the tracer's stack: the one it is on, and the first and the last of its
    // mapping (whatever lies next to the mapping is the host's, readable unscrubbed: the page
    // above the one it is on is such a page when that one is the mapping's top).
    let (low, high) = maps
        .lines()
        .filter_map(|line| {
            let (low, rest) = line.split_once('-')?;
            let high = rest.split_whitespace().next()?;
            Some((
                u64::from_str_radix(low, 16).ok()?,
                u64::from_str_radix(high, 16).ok()?,
            ))
        })
        .find(|&(low, high)| (low..high).contains(&sp))
        .unwrap_or_else(|| panic!("no mapping holds the tracer's stack pointer {sp:#x}: {maps}"));
    for page in [sp & !0xfff, low, high - 0x1000] {
        assert_eq!(
            probe(page, &options),
            -14,
            "tracer stack page {page:#x}, unscrubbed"
        );
        assert_eq!(
            probe(page, &common::profile_options()),
            -14,
            "tracer stack page {page:#x}"
        );
    }
}

const EXECVE_WITH_ARGS: &str = "mov rdi, 0x1111\n mov rsi, 0x2222\n mov rdx, 0x3333\n\
     mov r10, 0x4444\n mov r8, 0x5555\n mov r9, 0x6666\n mov eax, 59\n syscall\n ret";

/// Traced reports stay verified (the kernel's word, from the tracer) while the host has many
/// threads, forks all the time, and runs traced jobs from several threads at once: a strict
/// violation named with its arguments, a crash with its fault, under strict mode and a
/// profile.
#[test]
fn traced_reports_stay_verified_with_threads_forks_and_parallel_jobs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _one = one_at_a_time();
    let stop = Arc::new(AtomicBool::new(false));
    let idle: Vec<_> = (0..24)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    let forker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut forks = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the child only calls _exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: async-signal-safe; the child ends here.
                    unsafe { libc::_exit(0) };
                }
                assert!(pid > 0);
                // SAFETY: waits for the child just forked.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                forks += 1;
            }
            forks
        })
    };
    let violation = gas(EXECVE_WITH_ARGS);
    let crash = gas("xor eax, eax\n mov qword ptr [rax + 0x10], 1\n ret");
    let jobs: Vec<_> = (0..4)
        .map(|t| {
            let (violation, crash) = (violation.clone(), crash.clone());
            std::thread::spawn(move || {
                for i in 0..25 {
                    let options = if (i + t) % 2 == 0 {
                        RunOptions::default()
                    } else {
                        common::profile_options()
                    };
                    let report = bytejail::run(&crash, b"", &options).unwrap();
                    match &report.outcome {
                        Outcome::Crashed {
                            signal: 11,
                            fault: Some(fault),
                        } => {
                            assert!(fault.verified, "thread {t} job {i}: {}", report.summary());
                            assert_eq!(fault.address, 0x10, "thread {t} job {i}");
                        }
                        other => panic!("thread {t} job {i}: {other:?}"),
                    }
                    let report = bytejail::run(&violation, b"", &RunOptions::default()).unwrap();
                    let syscall = report.syscall.clone().expect("a violation names its call");
                    assert!(syscall.verified, "thread {t} job {i}: {}", report.summary());
                    assert_eq!(
                        syscall.args,
                        Some([0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666])
                    );
                }
            })
        })
        .collect();
    let results: Vec<_> = jobs.into_iter().map(|j| j.join()).collect();
    stop.store(true, Ordering::Relaxed);
    let forks = forker.join().unwrap();
    for thread in idle {
        thread.join().unwrap();
    }
    for result in results {
        result.unwrap();
    }
    assert!(forks > 0);
}

// ---------------------------------------------------------------------------------------------
// The CLI's own `main`.

const BIN: &str = env!("CARGO_BIN_EXE_bytejail");

fn hex(code: &[u8]) -> String {
    code.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes 64 KiB of its stack to stdout, then returns 42.
fn loud_42() -> String {
    hex(&gas(
        "mov edi, 1\n lea rsi, [rsp - 0x10000]\n mov edx, 0x10000\n mov eax, 1\n syscall\n\
              mov eax, 42\n ret",
    ))
}

/// With stdin, stdout and stderr all closed, `bytejail run` runs and says how through its
/// exit status.
#[test]
fn all_three_standard_descriptors_closed() {
    for args in ["", "--json"] {
        let script = format!("exec {BIN} run {args} --hex '{}' <&- >&- 2>&-", loud_42());
        let status = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(42), "{args}");
    }
}

/// A stdout whose reader is gone (EPIPE; SIGPIPE at its default in the parent, as a shell
/// leaves it) is no failure: the run happened, the exit status says how, the summary is on
/// stderr. The twin: a program that does not ignore SIGPIPE dies of it on the same pipe.
#[test]
fn a_gone_reader_of_stdout_is_not_a_failure() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::process::{Command, Stdio};
    let closed_pipe = || {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors, which become owned here.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both just made, owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(read);
        Stdio::from(write)
    };
    for args in [&["run", "--hex"][..], &["run", "--json", "--hex"][..]] {
        let output = Command::new(BIN)
            .args(args)
            .arg(loud_42())
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(42), "{args:?}: {stderr}");
        if !args.contains(&"--json") {
            assert!(stderr.contains("returned"), "{stderr}");
        }
    }
    use std::os::unix::process::ExitStatusExt;
    let twin = Command::new("sh")
        .args(["-c", "while :; do echo x; done"])
        .stdout(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(twin.signal(), Some(libc::SIGPIPE), "{twin:?}");
}

/// A profile naming syscalls no x86 ABI has: the warning about them is best-effort like
/// every other line bytejail writes on stderr. A failing stderr (/dev/full) does not keep
/// the job from running and reporting through its exit status (it used to panic: exit 101,
/// nothing run). The twin: with stderr working, the warning is there.
#[test]
fn a_failing_stderr_does_not_stop_a_run_that_warns() {
    use std::process::{Command, Stdio};
    let dir = std::env::temp_dir().join(format!("bytejail-review-reset-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let profile = dir.join("other-arches.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["s390_runtime_instr", "spu_run"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let run = |stderr: Stdio| {
        Command::new(BIN)
            .args(["run", "--policy"])
            .arg(&profile)
            .args(["--hex", "b0 2a c3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .output()
            .unwrap()
    };
    let twin = run(Stdio::piped());
    let said = String::from_utf8_lossy(&twin.stderr);
    assert_eq!(twin.status.code(), Some(42), "{said}");
    assert!(said.contains("skipped s390_runtime_instr"), "{said}");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = run(Stdio::from(full));
    assert_eq!(output.status.code(), Some(42), "{output:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A host for [`the_tracer_ends_with_its_host`]: starts its tracer (a traced job and a traced
/// same-code session that spins), says "ready", and sleeps until it is killed.
#[test]
#[ignore = "a host to kill, started by the_tracer_ends_with_its_host"]
fn tracer_host_killed() {
    tracer_host(Duration::from_secs(60));
}

/// The same host, which exits normally soon after "ready".
#[test]
#[ignore = "a host that exits, started by the_tracer_ends_with_its_host"]
fn tracer_host_exits() {
    tracer_host(Duration::from_millis(500));
}

fn tracer_host(wait: Duration) {
    let options = common::profile_options();
    common::returned_rax(&bytejail::run(&gas("xor eax, eax\n ret"), b"", &options).unwrap());
    let mut same = SameCode::new(&common::plus_one(), &RunOptions::default()).unwrap();
    common::inputs(&mut same, &RunOptions::default(), 20);
    println!("ready");
    std::thread::sleep(wait);
    drop(same);
}

/// The `CLONE_VM` tracer (it shares the host's memory, not its life) ends when its host is
/// killed and when it exits.
#[test]
fn the_tracer_ends_with_its_host() {
    for (name, kill) in [("tracer_host_killed", true), ("tracer_host_exits", false)] {
        let (mut host, _out) = common::start_host(name);
        let tracer = common::tracer_of(host.id());
        let Some(tracer) = tracer else {
            println!("skipped: {name} has no tracer");
            let _ = host.kill();
            let _ = host.wait();
            continue;
        };
        if kill {
            host.kill().unwrap();
        }
        let status = host.wait().unwrap();
        assert!(kill || status.success(), "{name}: {status:?}");
        let start = Instant::now();
        while common::alive(tracer) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name}: tracer {tracer} outlived its host"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
