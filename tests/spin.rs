//! The spinning hand-off of same-code inputs (`RunOptions::spin`): inputs spun through the
//! shared cache line report exactly what inputs through the pipes report; it turns itself off
//! where it cannot pay (one CPU, a CPU-time limit, a profile, inputs that come slowly); spin
//! time is never an input's CPU time; a worker killed while it spins never loses an input; and
//! a guest that writes the hand-off's words only ever confuses its own inputs, never the host.

use std::time::{Duration, Instant};

mod common;
use common::{essence, gas, inputs, one_at_a_time, pin, plus_one, two_cpus, two_cpus_to_spin};

use bytejail::{Gpr, Limits, Outcome, RunOptions, SameCode};

/// With two CPUs inputs in a row spin, and report what the pipes report; with spinning off,
/// or one CPU, none does (the twin: the counter counts).
#[test]
fn inputs_in_a_row_spin_on_two_cpus_and_not_otherwise() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = plus_one();
    let options = RunOptions::default();
    let mut same = SameCode::new(&code, &options).unwrap();
    inputs(&mut same, &options, 5_000);
    // Most spin on a quiet machine. A busy one preempts either side, and after each such miss
    // the session backs off (see `spin::Spinner::returned`): then few do.
    if same.inputs_spun() < 2_500 {
        eprintln!(
            "{} of 5000 inputs spun (a busy machine); the twins below still hold",
            same.inputs_spun()
        );
    }
    assert!(same.inputs_spun() > 0, "none of 5000 inputs spun");
    assert_eq!((same.workers_started(), same.inputs_rerun()), (1, 0));

    let off = options.clone().with_spin(false);
    let mut same = SameCode::new(&code, &off).unwrap();
    inputs(&mut same, &off, 2_000);
    assert_eq!(same.inputs_spun(), 0, "spin off");

    pin(&[1]);
    let mut same = SameCode::new(&code, &options).unwrap();
    inputs(&mut same, &options, 2_000);
    assert_eq!(same.inputs_spun(), 0, "one CPU");
}

/// A CPU-time limit, or a profile, never spins; a guest's output, faults and violations are
/// reported the same whichever way its input came.
#[test]
fn spun_inputs_report_what_the_pipes_report() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    // Writes its input, then returns, crashes or makes a forbidden call by rbx.
    let code = gas("push rdi\n push rsi\n mov rdx, rsi\n mov rsi, rdi\n mov edi, 1\n mov eax, 1\n\
         syscall\n pop rsi\n pop rdi\n cmp rbx, 1\n je 1f\n cmp rbx, 2\n je 2f\n mov rax, rsi\n ret\n\
         1: mov qword ptr [0], 0\n 2: mov eax, 39\n syscall\n ret");
    let spin = RunOptions::default();
    let pipes = spin.clone().with_spin(false);
    let mut spun = SameCode::new(&code, &spin).unwrap();
    let mut piped = SameCode::new(&code, &pipes).unwrap();
    let input = |i: u64| -> Vec<u8> { (0..(i * 13 % 200)).map(|j| (j + i) as u8).collect() };
    let kind = |i: u64| if i % 50 == 49 { i / 50 % 3 } else { 0 };
    // Each session's inputs in a row: an input spins only when the last one ended moments
    // before (`spin::WORKER_SPIN`), and one through the pipes between two would take longer
    // than that where host and worker sit on two CPUs.
    let run_all = |same: &mut SameCode, options: &RunOptions| -> Vec<bytejail::Report> {
        (0..300u64)
            .map(|i| {
                same.run_with(&input(i), &options.clone().with_registers(regs(kind(i))))
                    .unwrap()
            })
            .collect()
    };
    let spun_reports = run_all(&mut spun, &spin);
    let piped_reports = run_all(&mut piped, &pipes);
    for (i, (a, b)) in (0..300u64).zip(spun_reports.iter().zip(&piped_reports)) {
        let input = input(i);
        assert_eq!(essence(a), essence(b), "input {i}");
        assert_eq!(a.output, input, "input {i}");
        assert!(
            a.user <= a.wall,
            "input {i}: user {:?} > wall {:?}",
            a.user,
            a.wall
        );
    }
    assert!(spun.inputs_spun() > 0, "{} spun", spun.inputs_spun());
    assert_eq!(piped.inputs_spun(), 0);

    let limited = spin
        .clone()
        .with_limits(Limits::default().with_cpu_time(Some(Duration::from_secs(1))));
    let mut same = SameCode::new(&plus_one(), &limited).unwrap();
    inputs(&mut same, &limited, 1_000);
    assert_eq!(same.inputs_spun(), 0, "a CPU-time limit");
}

fn regs(kind: u64) -> bytejail::InitialRegisters {
    let mut regs = bytejail::InitialRegisters::default();
    regs.set(Gpr::RBX, kind).unwrap();
    regs
}

/// The worker spins between inputs; that time is not the inputs'. The caller takes 30 us
/// between inputs, which the worker spins through: a spun input's reported CPU time is its
/// wall time from the go (about a microsecond), not the clock's difference, which would add
/// the spin before it.
#[test]
fn spin_time_is_not_an_inputs_cpu_time() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let options = RunOptions::default();
    let mut same = SameCode::new(&plus_one(), &options).unwrap();
    inputs(&mut same, &options, 100);
    let (mut spun, mut spun_user) = (0u32, Duration::ZERO);
    for _ in 0..2_000 {
        let before = same.inputs_spun();
        let report = same.run(b"").unwrap();
        assert!(report.user <= report.wall, "{report:?}");
        if same.inputs_spun() > before {
            spun += 1;
            spun_user += report.user;
        }
        let pause = Instant::now();
        while pause.elapsed() < Duration::from_micros(30) {
            std::hint::spin_loop();
        }
    }
    if spun < 1_000 {
        // A busy machine preempts either side and most inputs fall back to the pipes, whose
        // wake-ups across CPUs take tens of microseconds: nothing to tell spin time apart.
        eprintln!("only {spun} of 2000 inputs spun (a busy machine): not measured");
        return;
    }
    let mean = spun_user / spun;
    assert!(
        mean < Duration::from_micros(15),
        "{spun} spun inputs, {mean:?} each"
    );
}

/// A worker killed from outside while it spins (between inputs) never ran the next input:
/// the input runs in a new worker.
#[test]
fn a_worker_killed_while_it_spins_loses_no_input() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = plus_one();
    let options = RunOptions::default().with_trace(false);
    let mut same = SameCode::new(&code, &options).unwrap();
    let mut killed = 0;
    for round in 0..20u64 {
        inputs(&mut same, &options, 20);
        let pid = same.worker_pid().unwrap();
        // Right after an input: the worker spins for about 50 us. The next input comes once
        // it is dead (a go it could still see while the kill is on its way would be lost with
        // it, as for a parked worker).
        // SAFETY: kill takes no pointers.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !common::children_of(std::process::id()).contains(&(pid, 'Z')) {
            assert!(Instant::now() < deadline, "worker {pid} did not die");
            std::hint::spin_loop();
        }
        killed += 1;
        let mut o = options.clone();
        o.registers.set(Gpr::RBX, 1000 + round).unwrap();
        let report = same.run_with(b"", &o).unwrap();
        match report.outcome {
            Outcome::Returned(regs) => assert_eq!(regs.rax, 1001 + round, "round {round}"),
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(same.workers_started(), 1 + killed);
    assert_eq!(same.inputs_rerun(), killed);
}

/// The hand-off's words sit in the data page the guest can write. A guest that forges "done",
/// posts its own go, marks either side asleep or scribbles the whole line confuses its own
/// inputs at worst (each still ends within its timeout); the host never hangs or fails, and
/// the next submission is unaffected.
#[test]
fn a_guest_writing_the_handoff_only_confuses_itself() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    // The region starts at the page of the return address (the blob's); its data page is the
    // next, the hand-off at 0x7c0 there: go, done, taken. rbx picks the attack.
    let attacks = [
        // Forge "done" for this input (seq at data + 0xe0), then spin forever.
        "mov rax, [rsp]\n and rax, -4096\n mov rcx, [rax + 0x10e0]\n mov [rax + 0x17c8], rcx\n 1: jmp 1b",
        // Forge "done" and return.
        "mov rax, [rsp]\n and rax, -4096\n mov rcx, [rax + 0x10e0]\n mov [rax + 0x17c8], rcx\n mov eax, 7\n ret",
        // Post a go for the next input (seq + 1) and return: the worker runs again at once.
        "mov rax, [rsp]\n and rax, -4096\n mov rcx, [rax + 0x10e0]\n inc rcx\n mov [rax + 0x17c0], rcx\n mov eax, 7\n ret",
        // Mark both words asleep and return.
        "mov rax, [rsp]\n and rax, -4096\n mov rcx, [rax + 0x10e0]\n bts rcx, 63\n mov [rax + 0x17c0], rcx\n mov [rax + 0x17c8], rcx\n mov eax, 7\n ret",
        // Scribble the whole line (and the taken word) with ones, and return.
        "mov rax, [rsp]\n and rax, -4096\n mov rcx, -1\n mov [rax + 0x17c0], rcx\n mov [rax + 0x17c8], rcx\n mov [rax + 0x17d0], rcx\n mov [rax + 0x17d8], rcx\n mov eax, 7\n ret",
    ];
    let mut options = RunOptions::default();
    options.limits.timeout = Duration::from_millis(300);
    for (n, attack) in attacks.iter().enumerate() {
        let code = gas(attack);
        let mut same = SameCode::new(&code, &options).unwrap();
        for i in 0..40 {
            let start = Instant::now();
            let report = same.run(b"").unwrap();
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "attack {n}, input {i}: {:?}",
                start.elapsed()
            );
            // Whatever it did to itself: a guest re-entered early finds its stack rewritten
            // under it and may crash, say. Its own inputs only.
            let _ = report.outcome;
        }
        drop(same);
        // Another submission, fresh, as if nothing happened.
        let mut clean = SameCode::new(&plus_one(), &options).unwrap();
        inputs(&mut clean, &options, 200);
    }
}

/// A guest that ORs every word of `DIRTY` scratch pages and of the page numbered `DIRTY` plus
/// its input's first two bytes into rax, writes that page, then a word in every line of the
/// `DIRTY` pages, and returns rax; with `write_first` it writes before it reads (as an
/// earlier input's writes would be, were nothing reset).
fn rescan_probe(write_first: bool) -> Vec<u8> {
    const DIRTY: usize = 48;
    let check = format!(
        "mov rsi, r9\n mov ecx, {words}\n 1: or rax, [rsi]\n add rsi, 8\n dec ecx\n jnz 1b\n\
         or rax, [r9 + r10]\n",
        words = DIRTY * 512,
    );
    let write = format!(
        "mov qword ptr [r9 + r10], 1\n\
         mov rsi, r9\n mov ecx, {lines}\n 2: mov qword ptr [rsi], rcx\n add rsi, 64\n dec ecx\n jnz 2b\n",
        lines = DIRTY * 64,
    );
    let (first, then) = if write_first {
        (&write, &check)
    } else {
        (&check, &write)
    };
    gas(&format!(
        "mov r9, rdx\n xor eax, eax\n movzx r10d, word ptr [rdi]\n add r10d, {DIRTY}\n shl r10, 12\n\
         {first}{then} ret"
    ))
}

/// The worker zeroes the pages of the host's last scan after it said "done", while the host
/// prepares the next input, and the host scans again whenever a page came to be: here every
/// input writes every line of 48 pages (a long zeroing) and one page never written before (a
/// new scan and a new table each time, written while the worker may still be zeroing from the
/// last). Every input finds all its pages zero, and no worker dies of a table changing under
/// it (one worker, no input run again); spun inputs included on two CPUs. The twin: the probe
/// that writes before it reads sees its writes, so the check can fail.
#[test]
fn a_new_scan_while_the_worker_zeroes_changes_no_table_under_it() {
    let _one = one_at_a_time();
    let mut options = RunOptions::default();
    options.limits.scratch = 4 << 20;
    let count: u16 = 400;
    for spin in [true, false] {
        let options = options.clone().with_spin(spin);
        let mut same = SameCode::new(&rescan_probe(false), &options).unwrap();
        for i in 0..count {
            let report = same.run(&i.to_le_bytes()).unwrap();
            match report.outcome {
                Outcome::Returned(regs) => {
                    assert_eq!(regs.rax, 0, "spin {spin}, input {i}: a page held data")
                }
                other => panic!("spin {spin}, input {i}: {other:?}"),
            }
        }
        assert_eq!(
            (same.workers_started(), same.inputs_rerun()),
            (1, 0),
            "spin {spin}"
        );
        if spin && two_cpus() && same.inputs_spun() == 0 {
            eprintln!("none of {count} inputs spun (a busy machine)");
        }
    }
    let mut same = SameCode::new(&rescan_probe(true), &options).unwrap();
    for i in 0..3u16 {
        match same.run(&i.to_le_bytes()).unwrap().outcome {
            Outcome::Returned(regs) => assert_ne!(regs.rax, 0, "input {i}"),
            other => panic!("input {i}: {other:?}"),
        }
    }
}

/// A spun input whose guest wrote nothing costs the host no `read` of its output pipe (an
/// io_uring poll on the pipe says nothing came, `SameCode::inputs_unread`), and no output is
/// lost for it: inputs that write their input, write nothing, or hand `write` a buffer that
/// faults come in a pseudo-random order, and every output is checked against its input.
/// The twins: with spinning off, or fd 1 the arena's file, no input is counted unread.
#[test]
fn spun_inputs_that_write_nothing_are_not_read_and_no_output_is_lost() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    // rbx = 0: write the input (nothing when it is empty); else write rsi bytes from rbx.
    let code = gas(
        "test rsi, rsi\n jz 2f\n mov rdx, rsi\n mov rsi, rdi\n test rbx, rbx\n jz 1f\n\
         mov rsi, rbx\n 1: mov edi, 1\n mov eax, 1\n syscall\n 2: ret",
    );
    let uring = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map_or(true, |s| s.trim() == "0");
    let options = RunOptions::default();
    for (what, options) in [
        ("spin, pipe", options.clone()),
        ("no spin", options.clone().with_spin(false)),
        ("output file", options.clone().with_output_file(true)),
    ] {
        let mut same = SameCode::new(&code, &options).unwrap();
        let (mut silent_spun, mut silent_unread) = (0u64, 0u64);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..3_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let (len, bad) = match state % 4 {
                0 | 1 => (0, false),
                2 => (1 + state as usize / 4 % 300, false),
                _ => (1 + state as usize / 4 % 300, true),
            };
            let input: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            let mut options = options.clone();
            if bad {
                options.registers.set(Gpr::RBX, 8).unwrap(); // unmapped
            }
            let (spun, unread) = (same.inputs_spun(), same.inputs_unread());
            let report = same.run_with(&input, &options).unwrap();
            assert!(
                matches!(report.outcome, Outcome::Returned(_)),
                "{what}, input {i}: {:?}",
                report.outcome
            );
            let expected: &[u8] = if bad { b"" } else { &input };
            assert_eq!(report.output, expected, "{what}, input {i}");
            let unread = same.inputs_unread() - unread;
            if unread == 1 {
                assert!(len == 0 || bad, "{what}, input {i}: its write was not read");
            }
            if len == 0 && same.inputs_spun() > spun {
                silent_spun += 1;
                silent_unread += unread;
            }
        }
        eprintln!(
            "{what}: {} of 3000 inputs spun, {silent_unread} of {silent_spun} silent spun ones unread",
            same.inputs_spun()
        );
        if what == "spin, pipe" {
            if uring && silent_spun >= 100 {
                // After an input that wrote and came through the pipes the next one reads
                // once; nearly every other silent spun input is not read.
                assert!(
                    silent_unread * 2 >= silent_spun,
                    "{silent_unread} of {silent_spun} silent spun inputs unread"
                );
            }
        } else {
            assert_eq!(same.inputs_unread(), 0, "{what}");
        }
    }
}

/// Two sessions used in turns on two CPUs both spin: a session whose inputs stopped coming
/// holds no CPUs for spinning once its worker has stopped spinning (`spin::Leases`, whose unit
/// tests show that two sessions used at once do not both spin). Before leases, the first
/// session to spin kept its claim while idle, and the second never spun.
#[test]
fn sessions_used_in_turns_both_spin() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = plus_one();
    let options = RunOptions::default();
    let mut a = SameCode::new(&code, &options).unwrap();
    let mut b = SameCode::new(&code, &options).unwrap();
    for _ in 0..3 {
        inputs(&mut a, &options, 1_000);
        std::thread::sleep(Duration::from_millis(1));
        inputs(&mut b, &options, 1_000);
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!(
        "in turns: {} and {} of 3000 inputs spun",
        a.inputs_spun(),
        b.inputs_spun()
    );
    assert!(a.inputs_spun() > 0 && b.inputs_spun() > 0);
}

/// A page of scratch or stack that an input made come to be is zero for the next input, also
/// when the reset skips its `fstat` because the worker's page-fault watch said no fault came
/// (`SameCode::inputs_unstatted`): each input reads the page the last one dirtied (it must be
/// zero) and dirties a new one, by a store (a fault in the guest), by `write`-ing it to fd 1
/// first (the kernel's read brings the page in: a fault in kernel mode, which the watch counts
/// too) and then a store, or not at all; pages of the stack alike, far below its top.
/// Where the kernel refuses the watch (not root, `perf_event_paranoid` over 1), the resets
/// `fstat` and the same holds. The twin: with spinning off no reset skips its `fstat`.
#[test]
fn pages_made_in_any_way_are_zero_for_the_next_input_without_an_fstat() {
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    // Input: [how, page as u16 of the last input's, page as u16 of this one's]; how: 0 store,
    // 1 write(1) then store, 2 nothing; pages 0-999 of scratch, 1000 on of the stack (counted
    // down from 64 KiB below its top). rax: the last input's page's first word.
    let code = gas(
        "movzx eax, word ptr [rdi + 1]\n call 8f\n mov r8, [rax]\n\
         movzx eax, word ptr [rdi + 3]\n call 8f\n mov r9, rax\n\
         cmp byte ptr [rdi], 2\n je 3f\n cmp byte ptr [rdi], 0\n je 2f\n\
         mov rsi, r9\n mov edx, 1\n mov edi, 1\n mov eax, 1\n syscall\n\
         2: mov qword ptr [r9], 7\n\
         3: mov rax, r8\n ret\n\
         8: cmp eax, 1000\n jae 9f\n shl rax, 12\n add rax, rdx\n ret\n\
         9: sub eax, 1000\n shl rax, 12\n neg rax\n lea rax, [rsp + rax - 65536]\n and rax, -4096\n ret",
    );
    let mut options = RunOptions::default();
    options.limits.scratch = 4 << 20;
    options.limits.stack = 8 << 20;
    for spin in [true, false] {
        let options = options.clone().with_spin(spin);
        let mut same = SameCode::new(&code, &options).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut last = 0u16;
        for i in 0..1_500u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let how = (state % 3) as u8;
            // A new page each time it dirties one: scratch, then stack, in turns.
            let page = if i % 2 == 0 {
                (i / 2 % 1000) as u16
            } else {
                1000 + (i / 2 % 1000) as u16
            };
            let mut input = vec![how];
            input.extend_from_slice(&last.to_le_bytes());
            input.extend_from_slice(&page.to_le_bytes());
            match same.run(&input).unwrap().outcome {
                Outcome::Returned(regs) => assert_eq!(
                    regs.rax, 0,
                    "spin {spin}, input {i}: page {last} kept the last input's store"
                ),
                other => panic!("spin {spin}, input {i}: {other:?}"),
            }
            last = page;
        }
        assert_eq!((same.workers_started(), same.inputs_rerun()), (1, 0));
        eprintln!(
            "spin {spin}: {} of 1500 inputs spun, {} resets without an fstat",
            same.inputs_spun(),
            same.inputs_unstatted()
        );
        if !spin {
            assert_eq!(same.inputs_unstatted(), 0, "spinning off");
        }
    }
}
