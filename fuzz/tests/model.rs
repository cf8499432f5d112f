//! The storm's model of strict mode, checked against the kernel: every native number through
//! `syscall`, every i386 number through `int 0x80`, x32-tagged numbers, high bits, the vsyscall
//! entries, each stop with and without a forged frame before it. Where the model predicts an
//! outcome it must be the one the runner reports; these are the facts the fuzz target's
//! prediction rests on, so a kernel that changes them fails here first, not as a fuzz finding.

use bytejail_fuzz::fuzz_options;
use bytejail_fuzz::oracle::check_report;
use bytejail_fuzz::storm::{
    Arg, Expected, Frame, Gate, Mask, Number, Record, Resume, Step, Stop, Storm,
};

/// Builds and runs `storm`; checks the report with the oracle and against the prediction,
/// which must exist. Returns the prediction.
fn run(storm: &Storm) -> Vec<Expected> {
    let program = storm.build();
    let options = fuzz_options();
    let report = bytejail::run(&program.code, &program.input, &options).unwrap();
    check_report(&report, &program.code, &options);
    let expect = program
        .expect
        .unwrap_or_else(|| panic!("no prediction for {storm:?}"));
    expect.check(&report, storm);
    expect.any_of
}

fn syscall(gate: Gate, number: Number, args: [Arg; 6]) -> Step {
    Step::Syscall { gate, number, args }
}

fn storm(steps: Vec<Step>) -> Storm {
    Storm {
        input: Vec::new(),
        steps,
    }
}

/// A frame that resumes at the next step with `mask` blocked.
fn clean_frame(mask: Mask, disable_altstack: bool) -> Step {
    Step::Sigreturn(Frame {
        mask,
        gregs: [0x5a5a_5a5a_5a5a_5a5a; 15],
        eflags: 0x8d5, // arithmetic flags; TF and AC are masked out anyway
        uc_flags: 0,
        resume: Resume::Next { disable_altstack },
    })
}

const NO_ARGS: [Arg; 6] = [Arg::Small(0); 6];

/// fd 2 for the call, so that read and write fail with EBADF and the program goes on.
const BAD_FD: [Arg; 6] = [
    Arg::Small(2),
    Arg::Small(0),
    Arg::Small(8),
    Arg::Small(0),
    Arg::Small(0),
    Arg::Small(0),
];

#[test]
fn every_native_number_through_syscall() {
    let mut predicted = 0;
    for nr in 0..=470u16 {
        let storm = storm(vec![syscall(Gate::Syscall, Number::Table(nr), BAD_FD)]);
        if storm.build().expect.is_none() {
            assert!([15, 335, 336].contains(&nr), "{nr} has no prediction");
            continue;
        }
        let want = match nr {
            0 | 1 => Expected::Returned,
            60 => Expected::Exited(Some(2)),
            _ => Expected::SyscallViolation,
        };
        assert_eq!(run(&storm), vec![want], "syscall {nr}");
        predicted += 1;
    }
    assert_eq!(predicted, 471 - 3);
}

#[test]
fn every_i386_number_through_int80() {
    for nr in 0..=470u16 {
        let storm = storm(vec![syscall(Gate::Int80, Number::Table(nr), BAD_FD)]);
        if storm.build().expect.is_none() {
            assert!([119, 335, 336].contains(&nr), "{nr} has no prediction");
            continue;
        }
        let want = match nr {
            3 | 4 => Expected::Returned,
            1 => Expected::Exited(Some(2)),
            _ => Expected::SyscallViolation,
        };
        assert_eq!(run(&storm), vec![want], "int 0x80 {nr}");
    }
}

#[test]
fn x32_numbers_are_always_killed() {
    for nr in 0..600u16 {
        let storm = storm(vec![syscall(Gate::Syscall, Number::X32(nr), NO_ARGS)]);
        assert_eq!(run(&storm), vec![Expected::SyscallViolation], "x32 {nr}");
    }
}

#[test]
fn only_the_low_32_bits_of_rax_are_the_number() {
    let exit_7 = [
        Arg::Small(7),
        Arg::Small(0),
        Arg::Small(0),
        Arg::Small(0),
        Arg::Small(0),
        Arg::Small(0),
    ];
    for rax in [
        1 << 32 | 60,
        0xffff_ffff_0000_0000 | 60,
        0x8000_0000_0000_003c,
    ] {
        let storm = storm(vec![syscall(Gate::Syscall, Number::Raw(rax), exit_7)]);
        assert_eq!(run(&storm), vec![Expected::Exited(Some(7))], "rax {rax:#x}");
    }
    for rax in [1 << 32 | 39, u64::MAX, 0xffff_ffff, 0x8000_003c] {
        let storm = storm(vec![syscall(Gate::Syscall, Number::Raw(rax), exit_7)]);
        assert_eq!(
            run(&storm),
            vec![Expected::SyscallViolation],
            "rax {rax:#x}"
        );
    }
    // int 0x80 takes eax: high bits of rax do not matter either.
    let storm = storm(vec![syscall(Gate::Int80, Number::Raw(1 << 32 | 1), exit_7)]);
    assert_eq!(run(&storm), vec![Expected::Exited(Some(7))]);
}

#[test]
fn vsyscall_entries_are_killed_or_fault() {
    for offset in [0, 0x400, 0x800, 0x1, 0xfff] {
        run(&storm(vec![syscall(
            Gate::Vsyscall(offset),
            Number::Table(0),
            NO_ARGS,
        )]));
    }
}

#[test]
fn writes_to_fd_1_are_the_only_output() {
    // write(1, code, 16): the program's own first bytes come out.
    let args = [
        Arg::Small(1),
        Arg::Code(0),
        Arg::Small(16),
        Arg::Small(0),
        Arg::Small(0),
        Arg::Small(0),
    ];
    let program = storm(vec![syscall(Gate::Syscall, Number::Table(1), args)]);
    let built = program.build();
    assert!(built.expect.as_ref().unwrap().may_write);
    let report = bytejail::run(&built.code, b"", &fuzz_options()).unwrap();
    assert_eq!(report.output, built.code[..16]);
    // The same through int 0x80, whose 32-bit pointer cannot reach the code: EFAULT, no output.
    let args = [
        Arg::Small(1),
        Arg::Code(0),
        Arg::Small(16),
        Arg::Small(0),
        Arg::Small(0),
        Arg::Small(0),
    ];
    run(&storm(vec![syscall(Gate::Int80, Number::Table(4), args)]));
}

#[test]
fn a_read_of_input_into_fuzzed_memory_ends_the_prediction() {
    let args = [
        Arg::Small(0),
        Arg::Stack(0),
        Arg::Small(8),
        Arg::Small(0),
        Arg::Small(0),
        Arg::Small(0),
    ];
    let mut program = storm(vec![syscall(Gate::Syscall, Number::Table(0), args)]);
    assert!(program.build().expect.is_some(), "no input: read sees EOF");
    program.input = b"12345678".to_vec();
    assert!(
        program.build().expect.is_none(),
        "input over the return address"
    );
}

#[test]
fn each_stop_ends_the_run_as_predicted() {
    let stops = [
        Stop::Ud2,
        Stop::Int3,
        Stop::Hlt,
        Stop::NullStore,
        Stop::DivZero,
        Stop::StackOverflow,
        Stop::Misaligned,
        Stop::Spin,
    ];
    for stop in stops {
        // Alone: the runner's handler records the fault at its instruction.
        let any_of = run(&storm(vec![Step::Stop(stop)]));
        if let [Expected::Crashed { record, .. }] = any_of.as_slice() {
            assert!(matches!(record, Record::At(_)), "{stop:?}: {record:?}");
        }
        // After a frame that blocks every signal: delivered with the default action, so no
        // record; the spin still ends at the deadline.
        let any_of = run(&storm(vec![
            clean_frame(Mask::All, false),
            Step::Stop(stop),
        ]));
        if let [Expected::Crashed { record, .. }] = any_of.as_slice() {
            assert!(
                matches!(record, Record::Absent(_)),
                "{stop:?} blocked: {record:?}"
            );
        }
        // After a frame that unblocks everything and disables the alternate stack: the
        // handler runs on the guest's stack, except for a stack overflow.
        run(&storm(vec![
            clean_frame(Mask::None, true),
            Step::Stop(stop),
        ]));
    }
}

#[test]
fn clean_frames_resume_at_the_next_step() {
    for mask in [Mask::All, Mask::None, Mask::Raw(0x1234_5678_9abc_def0)] {
        let steps = vec![
            clean_frame(mask, false),
            syscall(Gate::Syscall, Number::Table(1), BAD_FD),
            clean_frame(mask, true),
        ];
        assert_eq!(run(&storm(steps)), vec![Expected::Returned]);
    }
}
