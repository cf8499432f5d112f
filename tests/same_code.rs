//! Same-code batches: one worker runs many inputs of one code, each from the same initial
//! state, and whatever ends a worker only ends it for the input that did it.

use std::time::Duration;

mod common;
use common::{essence, gas};

use bytejail::{Gpr, Limits, Outcome, Report, RunOptions, SameCode};

fn returned(report: &Report) -> &bytejail::Registers {
    match &report.outcome {
        Outcome::Returned(regs) => regs,
        other => panic!("expected a return, got {other:?}"),
    }
}

/// Writes the input (rdi, rsi) to fd 1, returns the sum of its bytes in rax and rbx + 1 in rbx.
fn echo_sum() -> Vec<u8> {
    gas("push rdi\n push rsi\n mov rdx, rsi\n mov rsi, rdi\n mov edi, 1\n mov eax, 1\n syscall\n\
         pop rsi\n pop rdi\n xor eax, eax\n xor ecx, ecx\n\
         1: cmp rcx, rsi\n jae 2f\n movzx edx, byte ptr [rdi + rcx]\n add rax, rdx\n inc rcx\n jmp 1b\n\
         2: inc rbx\n ret")
}

#[test]
fn every_input_returns_what_a_fresh_run_returns_in_one_worker() {
    let code = echo_sum();
    let mut options = RunOptions::default();
    options.registers.set(Gpr::RBX, 41).unwrap();
    let mut same = SameCode::new(&code, &options).unwrap();
    for i in 0..60usize {
        let input: Vec<u8> = (0..i * 37).map(|j| (j * 7 + i) as u8).collect();
        let report = common::same_as_fresh(&mut same, &input, &options, &format!("input {i}"));
        let sum: u64 = input.iter().map(|&b| b as u64).sum();
        assert_eq!(returned(&report).rax, sum, "input {i}");
        assert_eq!(returned(&report).rbx, 42, "input {i}");
        assert_eq!(report.output, input, "input {i}");
    }
    assert_eq!(
        same.workers_started(),
        1,
        "every input returned: one worker"
    );
}

#[test]
fn per_input_registers_entry_and_limits() {
    // Entry 0: rax = rbx; entry 4: rax = rbx + 1.
    let code = gas("mov rax, rbx\n ret\n nop\n mov rax, rbx\n inc rax\n ret");
    let mut same = SameCode::new(&code, &RunOptions::default()).unwrap();
    for i in 0..10u64 {
        let mut options = RunOptions::default();
        options.registers.set(Gpr::RBX, i * 1000).unwrap();
        options.entry = if i % 2 == 0 { 0 } else { 5 };
        let report = same.run_with(b"", &options).unwrap();
        assert_eq!(returned(&report).rax, i * 1000 + i % 2, "input {i}");
    }
    assert_eq!(same.workers_started(), 1);
    let other = RunOptions::default().with_scrub(false);
    let refused = same.run_with(b"", &other).unwrap_err();
    assert!(refused.to_string().contains("same-code"), "{refused}");
}

#[test]
fn each_input_starts_from_the_same_state() {
    // Reads what an earlier input would have left (scratch, below the stack pointer, the top of
    // the scratch, MXCSR, xmm0, the input area past the input), then changes all of it and
    // reads one change back within the same input: proof that the writes happen.
    let code = gas(
        "mov rax, [rdx]\n mov rbx, [rsp - 64]\n mov r10, [rdx + rcx - 8]\n\
         sub rsp, 8\n stmxcsr [rsp]\n mov r11d, [rsp]\n add rsp, 8\n movq r8, xmm0\n\
         mov r12, [rdi + rsi]\n\
         mov qword ptr [rdx], 0xdead\n mov qword ptr [rsp - 64], 0xbeef\n\
         mov qword ptr [rdx + rcx - 8], 0xfeed\n\
         mov r9, 0x1234\n movq xmm0, r9\n\
         sub rsp, 8\n mov dword ptr [rsp], 0x9fc0\n ldmxcsr [rsp]\n add rsp, 8\n\
         mov r9, [rdx]\n mov r13, [rsp - 64]\n ret",
    );
    let mut same = SameCode::new(&code, &RunOptions::default()).unwrap();
    for i in 0..20usize {
        // Inputs of falling length: a shorter input must not see the tail of a longer one.
        let input = vec![0xaa; 200 - i * 10];
        let report = same.run(&input).unwrap();
        let regs = returned(&report);
        assert_eq!(regs.rax, 0, "scratch, input {i}");
        assert_eq!(regs.rbx, 0, "stack, input {i}");
        assert_eq!(regs.r10, 0, "end of scratch, input {i}");
        assert_eq!(regs.r11, 0x1f80, "MXCSR, input {i}");
        assert_eq!(regs.r8, 0, "xmm0, input {i}");
        assert_eq!(regs.r12, 0, "input area past the input, input {i}");
        assert_eq!(
            regs.r9, 0xdead,
            "the guest's own write reads back, input {i}"
        );
        assert_eq!(regs.r13, 0xbeef, "the guest's own stack write, input {i}");
    }
    assert_eq!(same.workers_started(), 1);
}

#[test]
fn whatever_ends_a_worker_ends_it_for_that_input_only() {
    ends_a_worker(None);
}

#[test]
fn through_a_zygote_too() {
    let zygote = bytejail::Zygote::start().unwrap();
    ends_a_worker(Some(&zygote));
    let mut same = SameCode::with_zygote(&echo_sum(), &RunOptions::default(), &zygote).unwrap();
    for i in 0..20u8 {
        let report = same.run(&[i, 1]).unwrap();
        assert_eq!(returned(&report).rax, i as u64 + 1);
        assert_eq!(report.output, [i, 1]);
    }
    assert_eq!(same.workers_started(), 1);
}

fn ends_a_worker(zygote: Option<&bytejail::Zygote>) {
    // Dispatch on the first input byte.
    let code = gas("movzx eax, byte ptr [rdi]\n\
         cmp al, 'c'\n je 10f\n cmp al, 't'\n je 11f\n cmp al, 'v'\n je 12f\n\
         cmp al, 'x'\n je 13f\n cmp al, 'o'\n je 14f\n ret\n\
         10: xor eax, eax\n mov qword ptr [rax], 1\n\
         11: jmp 11b\n\
         12: mov eax, 39\n syscall\n ret\n\
         13: mov eax, 60\n mov edi, 3\n syscall\n\
         14: mov r12, rdx\n 15: mov eax, 1\n mov edi, 1\n mov rsi, r12\n mov edx, 512\n syscall\n jmp 15b");
    let options = RunOptions::default().with_limits(
        Limits::default()
            .with_timeout(Duration::from_millis(300))
            .with_max_output(4096),
    );
    let mut same = match zygote {
        Some(zygote) => SameCode::with_zygote(&code, &options, zygote).unwrap(),
        None => SameCode::new(&code, &options).unwrap(),
    };
    let inputs = ["a", "c", "b", "t", "d", "v", "e", "x", "f", "o", "g"];
    for input in inputs {
        let report = same.run(input.as_bytes()).unwrap();
        let fresh = bytejail::run(&code, input.as_bytes(), &options).unwrap();
        assert_eq!(essence(&report), essence(&fresh), "input {input:?}");
        if !"ctvxo".contains(input) {
            assert_eq!(returned(&report).rax, input.as_bytes()[0] as u64);
        }
    }
    // a+c share the first worker; each of t, v, x, o follows a fresh one.
    let ending = inputs.iter().filter(|i| "ctvxo".contains(**i)).count() as u64;
    assert_eq!(same.workers_started(), ending + 1);
}

#[test]
fn fd0_reads_eof_and_only_the_control_pipes_are_added() {
    // rax: read(0); rbx: write(2); rcx: write(5); rdx: write(3), the go pipe's read end;
    // r8: write(1, "", 0).
    let code = gas("mov r12, rdx\n\
         xor eax, eax\n xor edi, edi\n mov rsi, r12\n mov edx, 16\n syscall\n mov r13, rax\n\
         mov eax, 1\n mov edi, 2\n mov rsi, r12\n mov edx, 1\n syscall\n mov r14, rax\n\
         mov eax, 1\n mov edi, 5\n mov rsi, r12\n mov edx, 1\n syscall\n mov r15, rax\n\
         mov eax, 1\n mov edi, 3\n mov rsi, r12\n mov edx, 1\n syscall\n mov rbp, rax\n\
         mov eax, 1\n mov edi, 1\n mov rsi, r12\n xor edx, edx\n syscall\n mov r8, rax\n\
         mov rax, r13\n mov rbx, r14\n mov rcx, r15\n mov rdx, rbp\n ret");
    let mut same = SameCode::new(&code, &RunOptions::default()).unwrap();
    for _ in 0..3 {
        let report = same.run(b"not on fd 0").unwrap();
        let regs = returned(&report);
        assert_eq!(regs.rax, 0, "fd 0 is at EOF");
        let ebadf = -(libc::EBADF as i64) as u64;
        assert_eq!(regs.rbx, ebadf, "fd 2 is closed");
        assert_eq!(regs.rcx, ebadf, "fd 5 is closed");
        assert_eq!(regs.rdx, ebadf, "fd 3 is read-only");
        assert_eq!(regs.r8, 0, "fd 1 is open");
    }
    assert_eq!(same.workers_started(), 1);
}

#[test]
fn junk_on_the_done_pipe_is_not_taken_for_done() {
    // Writes 8 junk bytes to fd 4, then works a while before returning 7. Were the junk taken
    // for "done", the report would come early and without rax = 7.
    let code = gas(
        "push 0x4b4e554a\n mov eax, 1\n mov edi, 4\n mov rsi, rsp\n mov edx, 8\n syscall\n\
         mov rbx, rax\n pop rax\n mov ecx, 20000000\n 1: dec ecx\n jnz 1b\n mov eax, 7\n ret",
    );
    let mut same = SameCode::new(&code, &RunOptions::default()).unwrap();
    for _ in 0..3 {
        let report = same.run(b"").unwrap();
        assert_eq!(returned(&report).rax, 7);
        assert_eq!(returned(&report).rbx, 8, "the junk was written");
    }
    assert_eq!(same.workers_started(), 1);
}

#[test]
fn a_violation_names_its_syscall() {
    let code = gas("mov eax, 39\n syscall\n ret");
    let mut same = SameCode::new(&code, &RunOptions::default()).unwrap();
    let report = same.run(b"").unwrap();
    assert_eq!(report.outcome, Outcome::SyscallViolation);
    assert_eq!(
        report.syscall.as_ref().map(|s| s.name),
        Some(Some("getpid"))
    );
}

#[test]
fn dropping_it_ends_and_reaps_the_worker() {
    let mut same = SameCode::new(&[0xb0, 42, 0xc3], &RunOptions::default()).unwrap();
    assert_eq!(same.worker_pid(), None, "no worker before the first input");
    same.run(b"").unwrap();
    let pid = same.worker_pid().unwrap();
    assert!(common::alive(pid), "the worker waits for the next input");
    // Parked in read() (it may still be on its way there from writing "done").
    wait_state(pid, 'S');
    drop(same);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "killed and reaped, not a zombie"
    );
}

/// Waits until the worker `pid` is in `state` (`/proc` letters: S sleeping, T stopped, Z
/// dead and not yet reaped).
fn wait_state(pid: u32, state: char) {
    let there = || common::children_of(std::process::id()).contains(&(pid, state));
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !there() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(there(), "worker {pid} in state {state}");
}

/// A worker that cannot take its go byte (killed from outside while parked, or stopped) never
/// ran the input: the input runs in a fresh worker and reports what the guest did, not what
/// happened to the parked one.
#[test]
fn an_input_the_parked_worker_never_took_runs_in_a_fresh_worker() {
    let code = gas("lea rax, [rbx + 1]\n ret");
    // Untraced: a traced worker's tracer lets it go on from a SIGSTOP at once.
    let untraced = RunOptions::default().with_trace(false);
    let mut same = SameCode::new(&code, &untraced).unwrap();
    let mut options = untraced.clone();
    options.limits.timeout = Duration::from_millis(300);
    let mut input = |rbx: u64| {
        options.registers.set(Gpr::RBX, rbx).unwrap();
        let report = same.run_with(b"", &options).unwrap();
        (
            returned(&report).rax,
            same.workers_started(),
            same.worker_pid(),
            same.inputs_rerun(),
        )
    };
    let (rax, workers, pid, rerun) = input(1);
    assert_eq!((rax, workers, rerun), (2, 1, 0));
    let first = pid.unwrap();
    wait_state(first, 'S'); // parked in read()

    // SIGKILL while parked: the host sees the worker's end before it ever read the go byte.
    // (Once it is dead: a go byte that comes while the kill is still on its way can be read
    // first, and the input is then lost with the worker.)
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
    wait_state(first, 'Z');
    let (rax, workers, pid, rerun) = input(10);
    assert_eq!(
        (rax, workers, rerun),
        (11, 2, 1),
        "the input ran once, in a new worker"
    );
    let second = pid.unwrap();
    assert_ne!(second, first);
    wait_state(second, 'S');

    // SIGSTOP while parked: the input's deadline passes with the go byte still in the pipe.
    assert_eq!(unsafe { libc::kill(second as i32, libc::SIGSTOP) }, 0);
    wait_state(second, 'T');
    let (rax, workers, pid, rerun) = input(100);
    assert_eq!(
        (rax, workers, rerun),
        (101, 3, 2),
        "the input ran once, in a new worker"
    );
    assert_ne!(pid.unwrap(), second);
    assert!(
        !std::path::Path::new(&format!("/proc/{second}")).exists(),
        "the stopped worker was killed and reaped"
    );
}

/// After "done" (and "ready") the host rewrites the data page for the next input, zeroing it
/// first, while the worker may still be on its way to its read of the next go byte: the worker
/// reads what it needs of the context before it says "done". It once read a zeroed context
/// there and left its loop: an input reported `exited: code 0` where a fresh run returns, or
/// one run again in a new worker (both found by the `same_code` fuzz target in CI). Many
/// inputs in a row, with the host and worker on one CPU or two: every input returns, in one
/// worker.
#[test]
fn inputs_in_a_row_all_return_in_one_worker() {
    let code = gas("lea rax, [rbx + 1]\n ret");
    let options = RunOptions::default();
    let mut same = SameCode::new(&code, &options).unwrap();
    for i in 0..20_000u64 {
        let mut options = options.clone();
        options.registers.set(Gpr::RBX, i).unwrap();
        let report = same.run_with(b"", &options).unwrap();
        assert_eq!(
            returned(&report).rax,
            i + 1,
            "input {i}: {}",
            report.summary()
        );
    }
    assert_eq!((same.workers_started(), same.inputs_rerun()), (1, 0));
}

/// Each input finds zeros wherever the last ones wrote, the pages they wrote first and those
/// they wrote again alike (the host's reset skips its scan of the file while no page came to
/// be since the last, and must still zero a page written again): the scratch, and the
/// alternate signal stack in the region. Sixteen places of each, one written per input, all
/// read by the next.
#[test]
fn every_input_finds_zeros_where_earlier_ones_wrote() {
    let code = gas(
        "mov rax, [rsp]\n and rax, -4096\n xor r8, r8\n xor r9, r9\n\
         1: mov r10, r9\n shl r10, 12\n add r8, [rdx + r10]\n\
         mov r11, r9\n shl r11, 9\n add r8, [rax + r11 + 0x6000]\n\
         inc r9\n cmp r9, 16\n jb 1b\n\
         mov r10, rbx\n shl r10, 12\n mov qword ptr [rdx + r10], 1\n\
         mov r11, rbx\n shl r11, 9\n mov qword ptr [rax + r11 + 0x6000], 1\n\
         mov rax, r8\n ret",
    );
    for spin in [true, false] {
        let options = RunOptions::default().with_spin(spin);
        let mut same = SameCode::new(&code, &options).unwrap();
        for i in 0..200u64 {
            let mut options = options.clone();
            options.registers.set(Gpr::RBX, i % 16).unwrap();
            let report = same.run_with(b"", &options).unwrap();
            assert_eq!(returned(&report).rax, 0, "spin {spin}, input {i}");
        }
        assert_eq!(same.workers_started(), 1);
    }
}

/// In a same-code worker the XSAVE image the trampoline restores and the filter area are
/// read-only to the guest (so the host never has to put them back between inputs): a write
/// there is a crash. (A fresh worker's region is the host's to reset after its one job.)
#[test]
fn the_xsave_image_and_the_filter_area_are_read_only() {
    for offset in [0x2000 + 0x300, 0x2018, 0x10000, 0x17ff8] {
        let code = gas(&format!(
            "mov rax, [rsp]\n and rax, -4096\n mov qword ptr [rax + {offset}], 1\n ret"
        ));
        let mut same = SameCode::new(&code, &RunOptions::default()).unwrap();
        let report = same.run(b"").unwrap();
        assert!(
            matches!(report.outcome, Outcome::Crashed { signal: 11, .. }),
            "offset {offset:#x}: {report:?}"
        );
    }
}

/// A guest that scribbles on the context its next input starts from (the initial registers
/// and entry point in the data page, and the words the blob does not read) does not change
/// how that input starts: every word is written again or zeroed before each input. (The host
/// writes a context word only where it changed, and zeroes only lines that are not zero.)
#[test]
fn scribbling_on_the_context_changes_nothing_for_the_next_input() {
    // rbx == 0: fill the context's registers and entry (data page offsets 0..0x88), and from
    // the fault record through the late context and the walls program area (0x258..0x780),
    // with ones, and return 5. Else return rbx + rcx (the
    // scratch size, 1 MiB by default).
    let code = gas(
        "test rbx, rbx\n jnz 2f\n mov rax, [rsp]\n and rax, -4096\n mov rcx, -1\n\
         xor r8, r8\n 1: mov [rax + r8 + 0x1000], rcx\n add r8, 8\n cmp r8, 0x88\n jb 1b\n\
         mov r8, 0x258\n 3: mov [rax + r8 + 0x1000], rcx\n add r8, 8\n cmp r8, 0x780\n jb 3b\n\
         mov eax, 5\n ret\n 2: lea rax, [rbx + rcx]\n ret",
    );
    for spin in [true, false] {
        let options = RunOptions::default().with_spin(spin);
        let mut same = SameCode::new(&code, &options).unwrap();
        for i in 0..100u64 {
            let rbx = i % 2 * (i + 1);
            let mut options = options.clone();
            options.registers.set(Gpr::RBX, rbx).unwrap();
            let report = same.run_with(b"", &options).unwrap();
            let expect = if rbx == 0 { 5 } else { rbx + (1 << 20) };
            assert_eq!(returned(&report).rax, expect, "spin {spin}, input {i}");
        }
        assert_eq!(same.workers_started(), 1, "spin {spin}");
    }
}

/// The worker's private stack at the end of the data page (0x1800..0x2000 of the region,
/// which a strict same-code worker zeroes itself when its guest returns, so that its host
/// need not fetch those lines) reads the same at the start of every input, whatever an
/// earlier one wrote there. Spinning and not.
#[test]
fn scribbling_on_the_private_stack_changes_nothing_for_the_next_input() {
    // rbx == 0: fill 0x1800..0x2000 with ones and return 5. Else return a weighted sum of
    // its 256 words as this input found them.
    let code = gas(
        "mov rax, [rsp]\n and rax, -4096\n lea rsi, [rax + 0x1800]\n test rbx, rbx\n jnz 2f\n\
         mov rcx, -1\n xor r8, r8\n 1: mov [rsi + r8*8], rcx\n inc r8\n cmp r8, 256\n jb 1b\n\
         mov eax, 5\n ret\n\
         2: xor eax, eax\n xor r8, r8\n 3: mov r9, [rsi + r8*8]\n lea r10, [r8 + 1]\n\
         imul r9, r10\n add rax, r9\n inc r8\n cmp r8, 256\n jb 3b\n ret",
    );
    for spin in [true, false] {
        let options = RunOptions::default().with_spin(spin);
        let mut same = SameCode::new(&code, &options).unwrap();
        let mut first = None;
        // The first input reads before any wrote.
        for i in 0..200u64 {
            let rbx = (i + 1) % 3;
            let mut options = options.clone();
            options.registers.set(Gpr::RBX, rbx).unwrap();
            let report = same.run_with(b"", &options).unwrap();
            let rax = returned(&report).rax;
            if rbx == 0 {
                assert_eq!(rax, 5, "spin {spin}, input {i}");
            } else {
                assert_eq!(*first.get_or_insert(rax), rax, "spin {spin}, input {i}");
            }
        }
        assert_eq!(same.workers_started(), 1, "spin {spin}");
    }
}

/// An input that ends with `exit(0)` after inputs that returned is an exit, not a return with
/// the registers an earlier input left in the record: the record's state is cleared as each
/// input starts (by the worker, which the same-code host leaves it to). Spinning and not.
#[test]
fn an_exit_after_returns_is_an_exit() {
    let code =
        gas("cmp rbx, 1\n jne 1f\n mov eax, 60\n xor edi, edi\n syscall\n 1: mov eax, 7\n ret");
    for spin in [true, false] {
        let options = RunOptions::default().with_spin(spin);
        let mut same = SameCode::new(&code, &options).unwrap();
        for i in 0..30u64 {
            let mut options = options.clone();
            options
                .registers
                .set(Gpr::RBX, u64::from(i % 3 == 2))
                .unwrap();
            let report = same.run_with(b"", &options).unwrap();
            if i % 3 == 2 {
                assert_eq!(report.outcome, Outcome::Exited(0), "spin {spin}, input {i}");
            } else {
                assert_eq!(returned(&report).rax, 7, "spin {spin}, input {i}");
            }
        }
    }
}

/// Writes `n` bytes (a pattern, built on the stack) to fd 1 `k` times, `n` and `k` from the
/// input (a u32, then a byte), and returns what the writes returned, summed; with a non-zero
/// sixth input byte it reads one byte from fd 1 instead and returns what the read returned.
fn writer() -> Vec<u8> {
    gas("mov r12d, dword ptr [rdi]\n movzx r13d, byte ptr [rdi + 4]\n\
         movzx eax, byte ptr [rdi + 5]\n test eax, eax\n jnz 30f\n\
         sub rsp, 0x50000\n xor ecx, ecx\n\
         1: cmp rcx, r12\n jae 2f\n imul eax, ecx, 7\n mov byte ptr [rsp + rcx], al\n inc rcx\n jmp 1b\n\
         2: xor r14d, r14d\n\
         3: test r13d, r13d\n jz 4f\n mov eax, 1\n mov edi, 1\n mov rsi, rsp\n mov rdx, r12\n syscall\n\
         add r14, rax\n dec r13d\n jmp 3b\n\
         4: add rsp, 0x50000\n mov rax, r14\n ret\n\
         30: xor eax, eax\n mov edi, 1\n lea rsi, [rsp - 64]\n mov edx, 1\n syscall\n ret")
}

fn writes(n: u32, k: u8) -> Vec<u8> {
    let mut input = n.to_le_bytes().to_vec();
    input.extend([k, 0]);
    input
}

#[test]
fn output_up_to_and_past_its_limit_is_what_a_fresh_worker_gives() {
    // A same-code worker reads its output between inputs, from a pipe or (asked for, under
    // strict mode or strict-bpf) its arena's file, and a fresh one from a pipe as it comes: ways
    // of reading it and holding it to its limit, compared here input by input, with inputs that
    // write nothing or little in between (whose output must not include an earlier input's).
    let code = writer();
    for (policy, output_file) in common::both_kinds() {
        let options = common::kind_options(&policy, output_file, 4096);
        let mut same = SameCode::new(&code, &options).unwrap();
        let cases: &[(u32, u8)] = &[
            (0, 1),
            (10, 1),
            (4096, 1),    // exactly the limit
            (4097, 1),    // one byte past it
            (10, 3),      // after an overflow: a new worker
            (1000, 5),    // past it in steps
            (4096, 2),    // the second write passes it by one byte
            (5000, 3),    // a write cut at the limit, then one past it
            (200_000, 1), // one write far past it
            (7, 1),
            (4095, 1),
            (1, 1),
        ];
        let mut overflows = 0;
        for &(n, k) in cases {
            let input = writes(n, k);
            let what = format!("{policy:?}, file {output_file}: {n} bytes x {k}");
            let report = common::same_as_fresh(&mut same, &input, &options, &what);
            let wrote = n as usize * k as usize;
            assert_eq!(report.output_truncated, wrote > 4096, "{n} x {k}");
            assert_eq!(report.output.len(), wrote.min(4096), "{n} x {k}");
            if wrote > 4096 {
                assert_eq!(report.outcome, Outcome::OutputLimit, "{n} x {k}");
                overflows += 1;
            } else {
                assert_eq!(returned(&report).rax, wrote as u64, "{n} x {k}");
            }
        }
        // Each overflow ended its worker; the inputs between them shared one.
        assert_eq!(
            same.workers_started(),
            overflows + 1,
            "{policy:?}, file {output_file}"
        );
    }
}

#[test]
fn an_input_with_another_output_limit_gets_a_worker_held_to_it() {
    let code = writer();
    for output_file in [false, true] {
        let with_max = |max: usize| {
            RunOptions::default()
                .with_limits(Limits::default().with_max_output(max))
                .with_output_file(output_file)
        };
        let mut same = SameCode::new(&code, &with_max(100)).unwrap();
        for (max, n) in [
            (100, 100),
            (100, 101),
            (5000, 4000),
            (5000, 4000),
            (3000, 4000),
            (3000, 10),
        ] {
            let per_input = with_max(max);
            let what = format!("limit {max}, {n} bytes");
            common::same_as_fresh(&mut same, &writes(n, 1), &per_input, &what);
        }
        // One worker for the first two (the second's overflow ends it), one for the two at
        // 5000 and, with a pipe, the first at 3000, whose overflow ends it; with the file, the
        // first at 3000 gets one of its own (its worker's file limit was 5000's); and one for
        // the last.
        let expected = if output_file { 4 } else { 3 };
        assert_eq!(same.workers_started(), expected, "file {output_file}");
    }
    // An input that asks for the other kind of fd 1 gets a worker of that kind.
    let options = RunOptions::default();
    let mut same = SameCode::new(&code, &options).unwrap();
    for output_file in [false, true, true, false] {
        let report = same
            .run_with(
                &writes(10, 1),
                &options.clone().with_output_file(output_file),
            )
            .unwrap();
        assert_eq!(returned(&report).rax, 10);
    }
    assert_eq!(same.workers_started(), 3);
}

#[test]
fn fd1_is_for_writing_only() {
    let code = writer();
    for output_file in [false, true] {
        let options = RunOptions::default().with_output_file(output_file);
        let mut same = SameCode::new(&code, &options).unwrap();
        for _ in 0..3 {
            let report = same.run(&[0, 0, 0, 0, 0, 1]).unwrap();
            let fresh = bytejail::run(&code, &[0, 0, 0, 0, 0, 1], &options).unwrap();
            assert_eq!(returned(&report).rax, -(libc::EBADF as i64) as u64);
            assert_eq!(essence(&report), essence(&fresh));
        }
        assert_eq!(same.workers_started(), 1);
    }
}

#[test]
fn a_guest_past_its_output_limit_is_ended_while_it_runs_on() {
    // Writes n bytes (a u32 in the input) once, then spins. One byte past the limit ends it
    // at once, as a fresh worker's output pipe does; exactly the limit lets it run to its
    // deadline (the twin: the check does not fire on output within the limit).
    let code = gas(
        "mov edx, dword ptr [rdi]\n sub rsp, 0x10000\n mov rsi, rsp\n\
                    mov edi, 1\n mov eax, 1\n syscall\n 1: jmp 1b",
    );
    for (policy, output_file) in common::both_kinds() {
        let with_timeout = |timeout| {
            RunOptions::default()
                .with_policy(policy.clone())
                .with_limits(
                    Limits::default()
                        .with_max_output(4096)
                        .with_timeout(timeout),
                )
                .with_output_file(output_file)
        };
        let mut same = SameCode::new(&code, &with_timeout(Duration::from_secs(3))).unwrap();
        let over = same.run(&4097u32.to_le_bytes()).unwrap();
        assert_eq!(over.outcome, Outcome::OutputLimit, "{policy:?}");
        assert!(over.output_truncated);
        assert_eq!(over.output.len(), 4096);
        assert!(
            over.wall < Duration::from_secs(1),
            "{policy:?}: ended after {:?}, not at once",
            over.wall
        );
        let short = with_timeout(Duration::from_millis(300));
        let at_limit = same.run_with(&4096u32.to_le_bytes(), &short).unwrap();
        assert_eq!(at_limit.outcome, Outcome::Timeout, "{policy:?}");
        assert_eq!(at_limit.output.len(), 4096);
        assert!(!at_limit.output_truncated);
    }
}

#[test]
fn the_largest_output_limit_loses_no_output() {
    // The limit plus one byte past it, as the file's size limit, must not wrap around.
    let code = writer();
    for (max, output_file) in [usize::MAX, usize::MAX - 1, 1 << 30]
        .into_iter()
        .flat_map(|max| [(max, false), (max, true)])
    {
        let options = RunOptions::default()
            .with_limits(Limits::default().with_max_output(max))
            .with_output_file(output_file);
        let mut same = SameCode::new(&code, &options).unwrap();
        let report = same.run(&writes(10, 2)).unwrap();
        assert_eq!(returned(&report).rax, 20, "limit {max}");
        assert_eq!(report.output.len(), 20, "limit {max}");
        assert!(!report.output_truncated);
    }
}
