//! The fuzzing oracle as properties that stable CI runs (`fuzz/` needs nightly): any bytes give
//! a consistent report; the echo guest's output is its input, whatever the input; a bare `ret`
//! returns exactly the registers passed in, with the stack pointer and flags the ABI gives;
//! every input of a same-code batch reports what a fresh run of it reports, and so does every
//! job of a `Pool`. Each property also leaves the host as it found it: descriptors, children,
//! the watched directory.
//!
//! The oracle is `fuzz/src/oracle.rs`, the same file the fuzz targets use. It changes the
//! process's working directory during each run and compares process-wide counts, so the
//! properties here run one at a time (see [`serial`]).

#[allow(dead_code)] // Shared with the fuzz crate, which uses all of it; this file uses most.
#[path = "../fuzz/src/oracle.rs"]
mod oracle;

#[allow(dead_code)] // Shared with the fuzz crate's `same_code` target.
#[path = "../fuzz/src/same.rs"]
mod same;

#[allow(dead_code)] // The fuzz crate's x86-64 encoder, which `profile_jobs` builds attackers with.
#[path = "../fuzz/src/asm.rs"]
mod asm;

#[allow(dead_code)] // Shared with the fuzz crate's `profile_jobs` target.
#[path = "../fuzz/src/profile_jobs.rs"]
mod profile_jobs;

use std::cell::Cell;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytejail::load::Format;
use bytejail::{Gpr, Outcome, Pool, Registers, Report, RunOptions, SameCode};
use oracle::Host;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use same::{Case, CaseInput, Code, End, Step};

/// Holds every other property off while one runs.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A failed property poisons the lock; the next one still runs.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `cases` random cases; failures are shrunk and printed, not persisted to a file.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// One property's run: it holds every other property off, and the host's state from before it
/// started, to compare with after its last case.
struct Property {
    host: Host,
    before: oracle::HostState,
    _serial: MutexGuard<'static, ()>,
}

impl Property {
    /// Takes the lock, then the snapshot: anything the test prepares after this (an assembler
    /// run, say) must leave the host as it found it too.
    fn start() -> Property {
        let serial = serial();
        let host = Host::new();
        let before = host.snapshot();
        Property {
            host,
            before,
            _serial: serial,
        }
    }

    /// Runs `test` on `cases` values from `strategy`, then checks that the host's descriptors,
    /// children and watched directory are as before.
    fn check<S: Strategy>(
        self,
        cases: u32,
        strategy: S,
        test: impl Fn(&Host, S::Value) -> Result<(), TestCaseError>,
    ) {
        let mut runner = TestRunner::new(config(cases));
        if let Err(e) = runner.run(&strategy, |value| test(&self.host, value)) {
            panic!("{e}");
        }
        self.host.check_unchanged(&self.before);
    }
}

#[test]
fn any_bytes_give_a_consistent_report() {
    let mut options = RunOptions::default();
    options.limits.timeout = Duration::from_millis(200);
    options.limits.max_output = 4096;
    options.limits.stack = 64 << 10;
    options.limits.scratch = 64 << 10;
    Property::start().check(500, vec(any::<u8>(), 1..512), |host, code| {
        // Host::run checks the report (the oracle panics, and proptest shrinks the code).
        host.run(&code, b"input for guests that read", &options);
        Ok(())
    });
}

/// read(0, scratch, scratch length) until EOF, writing each chunk whole to fd 1; returns 0,
/// or the negative errno of a failed read or write.
const ECHO: &str = "
    .intel_syntax noprefix
    .text
        mov r12, rdx                # scratch (syscall clobbers rcx and r11)
        mov r13, rcx                # its length
    .Lread:
        xor eax, eax                # read(0, scratch, length)
        xor edi, edi
        mov rsi, r12
        mov rdx, r13
        syscall
        test rax, rax
        jle .Ldone                  # 0 at EOF, -errno on failure
        mov r14, r12                # write from here
        mov r15, rax                # this many
    .Lwrite:
        mov eax, 1                  # write(1, r14, r15)
        mov edi, 1
        mov rsi, r14
        mov rdx, r15
        syscall
        test rax, rax
        jle .Ldone
        add r14, rax
        sub r15, rax
        jnz .Lwrite
        jmp .Lread
    .Ldone:
        ret
";

#[test]
fn echo_output_is_its_input() {
    let property = Property::start();
    let code = bytejail::load::assemble(ECHO, Format::Gas).expect("the echo guest assembles");
    let options = RunOptions::default();
    property.check(200, vec(any::<u8>(), 0..=64 << 10), |host, input| {
        let report = host.run(&code, &input, &options);
        match report.outcome {
            Outcome::Returned(regs) => prop_assert_eq!(regs.rax, 0, "{}", report.summary()),
            _ => prop_assert!(false, "{}", report.summary()),
        }
        output_is_input(&report, &input, "echo")
    });
}

/// The report's output is `input`, whole and in order: not truncated, and the same bytes.
fn output_is_input(report: &Report, input: &[u8], what: &str) -> Result<(), TestCaseError> {
    prop_assert!(!report.output_truncated, "{what}: {}", report.summary());
    prop_assert!(
        report.output == input,
        "{what}: {} bytes in, {} bytes out, first difference at {:?}",
        input.len(),
        report.output.len(),
        report.output.iter().zip(input).position(|(a, b)| a != b)
    );
    Ok(())
}

/// The registers a guest can be given, in [`Registers`] order (all but rsp).
const SETTABLE: [&str; 15] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

/// The flags the trampoline enters the guest with: IF (bit 9) and the always-set bit 1.
const ENTRY_RFLAGS: u64 = 0x202;

/// The stack pointer at entry, learned from a guest that returns it: `mov rax, rsp; ret`.
fn entry_rsp(host: &Host, options: &RunOptions) -> Result<u64, TestCaseError> {
    match host.run(&[0x48, 0x89, 0xe0, 0xc3], b"", options).outcome {
        Outcome::Returned(regs) => Ok(regs.rax),
        other => Err(TestCaseError::fail(format!("mov rax, rsp; ret: {other:?}"))),
    }
}

#[test]
fn a_bare_ret_returns_the_registers_passed_in() {
    const RET: &[u8] = &[0xc3];
    // Every register: half the cases set all of them, the rest a random subset (the others
    // keep the ABI's values).
    let strategy = (
        any::<[u64; 15]>(),
        prop_oneof![Just(0x7fff_u16), any::<u16>()],
    );
    let options = RunOptions::default();
    Property::start().check(500, strategy, |host, (values, set)| {
        let rsp = entry_rsp(host, &options)?;
        prop_assert_eq!((rsp + 8) % 16, 0, "the ABI's stack alignment at entry");
        let baseline = match host.run(RET, b"", &options).outcome {
            Outcome::Returned(regs) => regs,
            other => return Err(TestCaseError::fail(format!("ret: {other:?}"))),
        };
        check_abi_defaults(&baseline, &options)?;

        let mut given = options.clone();
        let mut want = Registers {
            rsp: rsp + 8,
            rflags: ENTRY_RFLAGS,
            ..baseline
        };
        for (i, name) in SETTABLE.iter().enumerate() {
            if set & (1 << i) != 0 {
                let reg: Gpr = name.parse().unwrap();
                given.registers.set(reg, values[i]).unwrap();
                set_register(&mut want, name, values[i]);
            }
        }
        match host.run(RET, b"", &given).outcome {
            Outcome::Returned(regs) => prop_assert_eq!(regs, want),
            other => prop_assert!(false, "ret: {:?}", other),
        }
        Ok(())
    });
}

/// The ABI's registers at entry, as a bare `ret` with no overrides and no input returns them.
fn check_abi_defaults(regs: &Registers, options: &RunOptions) -> Result<(), TestCaseError> {
    let zero = [
        regs.rax, regs.rbx, regs.rbp, regs.rsi, regs.r8, regs.r9, regs.r10, regs.r11, regs.r12,
        regs.r13, regs.r14, regs.r15,
    ];
    prop_assert_eq!(
        zero,
        [0; 12],
        "zero registers and rsi = input length 0: {:?}",
        regs
    );
    prop_assert_eq!(
        regs.rcx,
        options.limits.scratch as u64,
        "rcx = scratch length"
    );
    prop_assert!(regs.rdx != 0, "rdx = scratch address");
    prop_assert!(regs.rdi != 0, "rdi = input address");
    prop_assert_eq!(regs.rflags, ENTRY_RFLAGS);
    Ok(())
}

fn set_register(regs: &mut Registers, name: &str, value: u64) {
    let slot = match name {
        "rax" => &mut regs.rax,
        "rbx" => &mut regs.rbx,
        "rcx" => &mut regs.rcx,
        "rdx" => &mut regs.rdx,
        "rsi" => &mut regs.rsi,
        "rdi" => &mut regs.rdi,
        "rbp" => &mut regs.rbp,
        "r8" => &mut regs.r8,
        "r9" => &mut regs.r9,
        "r10" => &mut regs.r10,
        "r11" => &mut regs.r11,
        "r12" => &mut regs.r12,
        "r13" => &mut regs.r13,
        "r14" => &mut regs.r14,
        "r15" => &mut regs.r15,
        _ => unreachable!("{name} is not settable"),
    };
    *slot = value;
}

/// Where a program's reads and writes meet: few slots, so that one input's write and a later
/// input's read of the same slot are common.
fn slot() -> impl Strategy<Value = u8> {
    0..4u8
}

fn vector_register() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0u8), Just(1), Just(9), Just(15)]
}

fn end() -> impl Strategy<Value = End> {
    // Spins cost two deadlines (the same-code run and the fresh one): keep them rare.
    prop_oneof![
        8 => Just(End::Return),
        2 => Just(End::Ud2),
        2 => Just(End::NullStore),
        1 => Just(End::DivZero),
        1 => Just(End::Int3),
        2 => Just(End::Misaligned),
        2 => Just(End::Violation),
        2 => any::<u8>().prop_map(End::Exit),
        2 => Just(End::Flood),
        1 => Just(End::Spin),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => slot().prop_map(Step::ReadScratch),
        3 => (slot(), any::<u64>()).prop_map(|(n, v)| Step::WriteScratch(n, v)),
        3 => slot().prop_map(Step::ReadStack),
        3 => (slot(), any::<u64>()).prop_map(|(n, v)| Step::WriteStack(n, v)),
        2 => any::<u64>().prop_map(Step::Push),
        2 => Just(Step::Pop),
        2 => Just(Step::ReadFlags),
        2 => (0..4u8).prop_map(Step::SetFlag),
        2 => vector_register().prop_map(Step::ReadXmm),
        2 => (vector_register(), any::<bool>(), any::<u64>())
            .prop_map(|(n, high, v)| Step::WriteXmm(n, high, v)),
        2 => vector_register().prop_map(Step::ReadYmmHigh),
        2 => vector_register().prop_map(Step::WriteYmmHigh),
        2 => Just(Step::ReadMxcsr),
        2 => prop_oneof![Just(0x1f80u16), Just(0x9fc0), any::<u16>()].prop_map(Step::WriteMxcsr),
        2 => Just(Step::ReadX87),
        2 => prop::option::of(prop_oneof![Just(0x37fu16), Just(0xc7f), any::<u16>()])
            .prop_map(Step::WriteX87),
        2 => (0..40u8).prop_map(Step::ReadInput),
        2 => (1..=8u8).prop_map(Step::Output),
        2 => (prop::option::of((0..8u8, 0..8u8)), end()).prop_map(|(c, e)| Step::End(c, e)),
    ]
}

fn case_input() -> impl Strategy<Value = CaseInput> {
    (
        vec(any::<u8>(), 0..=24),
        any::<u8>(),
        any::<[u64; same::SETTABLE.len()]>(),
    )
        .prop_map(|(bytes, flags, values)| {
            let registers = same::SETTABLE
                .iter()
                .zip(values)
                .enumerate()
                .filter(|(i, _)| flags & (1 << i) != 0)
                .map(|(_, (name, value))| (name.parse().unwrap(), value))
                .collect();
            CaseInput {
                bytes,
                registers,
                small_output: flags & 0x40 != 0,
                output_file: flags & 0x80 != 0,
            }
        })
}

/// The `same_code` fuzz target's equivalence rule (`fuzz/src/same.rs`) on generated programs:
/// each input's report through one `SameCode` is a fresh run's, the worker count is 1 + the
/// inputs that ended a worker before the last, and every report passes the oracle and the
/// same-code rules.
#[test]
fn same_code_inputs_report_what_fresh_runs_report() {
    let strategy = (vec(step(), 1..24), vec(case_input(), 1..=same::MAX_INPUTS));
    Property::start().check(120, strategy, |host, (steps, inputs)| {
        let case = Case {
            code: Code::Steps(steps),
            inputs,
        };
        same::check_case(host, &case);
        Ok(())
    });
}

/// Jobs of the pooled-job property: programs per case, inputs per program.
const POOL_CASES: u32 = 150;
const POOL_INPUTS: usize = 3;

/// The same-code equivalence rule for `Pool` jobs: each generated program and input, run in a
/// parked worker of one shared pool (template: the case options, which every generated input
/// fits, since its options differ only in registers and the output limit), has the
/// [`same::essence`] of a fresh `bytejail::run`. The documented differences of a pooled worker
/// (fds 3 and 4, the code and input mapped up to the pool's capacities, its own arena addresses)
/// are invisible to step programs (see `fuzz/src/same.rs`). Each pooled report also passes the
/// oracle and the pool's documented form: a return is reported on the done pipe, before the
/// reap, with the job's CPU time as `user`, `sys` zero and `max_rss_kib` zero; every other
/// outcome comes from the wait status (a measured RSS). Nearly every job must really have run
/// in a parked worker.
#[test]
fn pooled_jobs_report_what_fresh_runs_report() {
    let property = Property::start();
    let host = &property.host;
    // In the watched directory: the pool's zygote forks every worker, parked or fresh.
    let pool = host
        .in_watched(|| Pool::new(same::case_options(), 2))
        .expect("the pool starts");
    let jobs = Cell::new(0u64);
    let strategy = (vec(step(), 1..24), vec(case_input(), 1..=POOL_INPUTS));
    let mut runner = TestRunner::new(config(POOL_CASES));
    let result = runner.run(&strategy, |(steps, inputs)| {
        let code = same::assemble(&steps);
        for (i, input) in inputs.iter().enumerate() {
            jobs.set(jobs.get() + 1);
            let (pooled, fresh) = pooled_and_fresh(host, &pool, &code, input);
            prop_assert_eq!(
                same::essence(&pooled),
                same::essence(&fresh),
                "input {} of {:?} in a pooled worker (left) and a fresh one (right)\nsteps: {:?}",
                i,
                inputs,
                steps
            );
        }
        Ok(())
    });
    let stats = pool.stats();
    drop(pool);
    if let Err(e) = result {
        panic!("{e}");
    }
    // Each job waited for a parked worker; one that still ran fresh is a rare stall.
    assert!(
        stats.fallbacks * 20 <= jobs.get(),
        "{} of {} jobs ran in a fresh worker: {stats:?}",
        stats.fallbacks,
        jobs.get()
    );
    property.host.check_unchanged(&property.before);
}

/// One input through `pool` (in a parked worker: it waits for one, as `tests/pool.rs` does) and
/// through a fresh run, both held to the oracle and the pooled report to the pool's rules. A
/// late pooled run, or a timeout in one run only, is run again up to [`oracle::STALL_RETRIES`]
/// times: a stalled machine can make any job miss a 100 ms deadline once.
fn pooled_and_fresh(
    host: &Host,
    pool: &Pool,
    code: &[u8],
    input: &same::CaseInput,
) -> (Report, Report) {
    let options = input.options();
    let mut tries = 0;
    loop {
        tries += 1;
        let last_try = tries > oracle::STALL_RETRIES;
        let deadline = Instant::now() + Duration::from_secs(2);
        while pool.stats().parked == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let pooled = host
            .in_watched(|| pool.run(code, &input.bytes, &options))
            .unwrap_or_else(|e| {
                panic!("Pool::run failed instead of reporting: {e}\ncode: {code:02x?}")
            });
        check_pooled_report(&pooled, code, &options);
        let fresh = host.run(code, &input.bytes, &options);
        let late = !oracle::within_deadline(&pooled, &options);
        let one_timeout =
            (pooled.outcome == Outcome::Timeout) != (fresh.outcome == Outcome::Timeout);
        if (late || one_timeout) && !last_try {
            eprintln!("oracle: a pooled job was late or timed out alone; running it again");
            continue;
        }
        assert!(
            !late,
            "a pooled job passed its deadline + {:?} in {tries} tries\n{}",
            oracle::WALL_SLACK,
            pooled.summary()
        );
        return (pooled, fresh);
    }
}

/// The oracle's rules, and the pool's documented form of a report: a return is reported when
/// the worker writes "done", before its reap, so `user` is the job's CPU time (within its wall
/// time), `sys` is zero and so is `max_rss_kib`; any other outcome is reported from the wait
/// status, with the worker's peak RSS.
fn check_pooled_report(report: &Report, code: &[u8], options: &RunOptions) {
    oracle::check_report(report, code, options);
    let context = || format!("{}\nreport: {report:?}", report.summary());
    // Any pooled job: its CPU time leaves out the worker's set-up, and all of it is in `user`.
    assert_eq!(
        report.sys,
        Duration::ZERO,
        "a pooled job's sys\n{}",
        context()
    );
    assert!(
        report.user <= report.wall + oracle::CPU_SLACK,
        "a pooled job's user time exceeds its wall time\n{}",
        context()
    );
    if let Outcome::Returned(_) = report.outcome {
        assert_eq!(
            report.max_rss_kib,
            0,
            "a pooled return's RSS\n{}",
            context()
        );
    } else {
        assert!(
            report.max_rss_kib > 0,
            "a reaped pooled worker's RSS\n{}",
            context()
        );
    }
}

/// The rule can fail: an input that writes its scratch, stack, xmm, ymm, MXCSR, x87 control
/// word and flags, read back by the next one, would differ from a fresh run if any of them
/// survived. This case reads each before writing it, and a second input runs the same code.
#[test]
fn each_kind_of_state_is_read_before_it_is_written() {
    let steps = vec![
        Step::ReadScratch(1),
        Step::ReadStack(2),
        Step::ReadXmm(9),
        Step::ReadYmmHigh(9),
        Step::ReadMxcsr,
        Step::ReadX87,
        Step::ReadFlags,
        Step::Output(1),
        Step::WriteScratch(1, 0x5eed),
        Step::WriteStack(2, 0x5eed),
        Step::WriteXmm(9, true, 0x5eed),
        Step::WriteYmmHigh(9),
        Step::WriteMxcsr(0x9fc0),
        Step::WriteX87(Some(0xc7f)),
        Step::SetFlag(1),
    ];
    let property = Property::start();
    let case = Case {
        code: Code::Steps(steps),
        inputs: vec![CaseInput::default(); 3],
    };
    let reports = same::check_case(&property.host, &case);
    let folds: Vec<u64> = reports
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Returned(regs) => regs.r15,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        folds.windows(2).all(|w| w[0] == w[1]),
        "every input reads the same state: {folds:x?}"
    );
    property.host.check_unchanged(&property.before);
}

// Leaks the same-code target's author found; the host now resets what they used between jobs.

/// The code's address minus this is the worker region (`runner/worker/protocol.rs`,
/// `layout::LEN` plus the guard page); its alternate signal stack starts 0x6000 into the region.
const ALTSTACK_FROM_CODE: i32 = 0x19000 - 0x6000;

/// `lea rcx, [rip + disp]` aimed at the alternate signal stack + 0x100, from offset 0 of the code.
fn lea_altstack() -> Vec<u8> {
    let disp = -ALTSTACK_FROM_CODE + 0x100 - 7;
    let mut code = vec![0x48, 0x8d, 0x0d];
    code.extend_from_slice(&disp.to_le_bytes());
    code
}

/// Reads the qword at the alternate stack + 0x100 into rax, then adds 1 to it.
fn altstack_counter() -> Vec<u8> {
    let mut code = lea_altstack();
    code.extend_from_slice(&[0x48, 0x8b, 0x01]); // mov rax, [rcx]
    code.extend_from_slice(&[0x48, 0xff, 0x01]); // inc qword ptr [rcx]
    code.push(0xc3);
    code
}

fn returned_rax(report: &bytejail::Report) -> u64 {
    match &report.outcome {
        Outcome::Returned(regs) => regs.rax,
        other => panic!("{other:?}"),
    }
}

/// The worker region's alternate signal stack (region + 0x6000..0x10000, in the thread's arena
/// memfd, mapped read+write into every worker) once survived from one job to the next on the
/// same host thread: a job read what the previous one wrote there, or after a crash the kernel's
/// signal frame with the crashed job's registers. The host now zeroes the whole region (but the
/// blob's page) before each job.
#[test]

fn a_job_does_not_see_what_the_previous_job_left_on_the_alternate_stack() {
    let _serial = serial();
    let options = RunOptions::default();
    let counter = altstack_counter();
    let first = returned_rax(&bytejail::run(&counter, b"", &options).unwrap());
    let second = returned_rax(&bytejail::run(&counter, b"", &options).unwrap());
    assert_eq!((first, second), (0, 0), "another job's write was visible");
}

/// Inputs of one `SameCode` once shared the region's alternate signal stack (as above) and the
/// FS base (`wrfsbase` is unprivileged on CPUs with FSGSBASE: a fresh worker started with the
/// forking thread's FS base, the host's TLS address, and a same-code input with whatever the
/// last input left). The region is now reset before each input, and the trampoline zeroes the
/// FS and GS bases.
#[test]

fn same_code_inputs_do_not_see_the_alternate_stack_or_fs_base_of_earlier_ones() {
    let _serial = serial();
    let options = RunOptions::default();
    let counter = altstack_counter();
    let mut same = SameCode::new(&counter, &options).unwrap();
    let seen: Vec<u64> = (0..3)
        .map(|_| returned_rax(&same.run(b"").unwrap()))
        .collect();
    assert_eq!(seen, [0, 0, 0], "alternate stack");

    // rdfsbase rax; mov ecx, 0x777000; wrfsbase rcx; ret
    let fs = [
        0xf3, 0x48, 0x0f, 0xae, 0xc0, 0xb9, 0x00, 0x70, 0x77, 0x00, 0xf3, 0x48, 0x0f, 0xae, 0xd1,
        0xc3,
    ];
    let fresh = returned_rax(&bytejail::run(&fs, b"", &options).unwrap());
    let mut same = SameCode::new(&fs, &options).unwrap();
    let seen: Vec<u64> = (0..2)
        .map(|_| returned_rax(&same.run(b"").unwrap()))
        .collect();
    assert_eq!(seen, [fresh, fresh], "FS base");
    assert_eq!(
        fresh, 0,
        "a fresh worker's FS base is the host's TLS address"
    );
}

/// Writes its input (`rdi`, `rsi`) to fd 1 until all of it is written, then ends as `r12` says:
/// 0 returns, 1 calls `exit(3)`, anything else faults on `ud2`.
const WRITE_INPUT_THEN_END: &str = "
    .intel_syntax noprefix
    .text
        mov r13, rdi                # next byte to write
        mov r14, rsi                # bytes left
    .Lwrite:
        test r14, r14
        jz .Lend
        mov eax, 1                  # write(1, r13, r14)
        mov edi, 1
        mov rsi, r13
        mov rdx, r14
        syscall
        test rax, rax
        jle .Lend
        add r13, rax
        sub r14, rax
        jmp .Lwrite
    .Lend:
        cmp r12, 1
        jb .Lret
        je .Lexit
        ud2
    .Lret:
        ret
    .Lexit:
        mov eax, 60
        mov edi, 3
        syscall
";

/// Output lengths around the host's read sizes (4 KiB first, growing to 64 KiB) and the pipe's
/// 64 KiB buffer, and anything up to 300 000 bytes.
fn output_length() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        (0usize..=2).prop_map(|k| 4096 + k - 1),
        (0usize..=2).prop_map(|k| 65536 + k - 1),
        (0usize..=2).prop_map(|k| 131072 + k - 1),
        0usize..=300_000,
    ]
}

/// The host reads what a worker wrote only while it watches it, and stops watching when the
/// worker ends (or says "done"): whatever the guest wrote just before it returned, exited or
/// crashed is reported whole and in order, by a fresh run, a pooled job and a same-code input.
#[test]
fn output_written_just_before_the_end_is_reported_whole() {
    let property = Property::start();
    let host = &property.host;
    let code = bytejail::load::assemble(WRITE_INPUT_THEN_END, Format::Gas)
        .expect("the writing guest assembles");
    let pool = host
        .in_watched(|| Pool::new(RunOptions::default(), 1))
        .expect("the pool starts");
    let same_code = host
        .in_watched(|| SameCode::new(&code, &RunOptions::default()))
        .map(std::cell::RefCell::new)
        .expect("the same-code runner starts");
    let strategy = (output_length(), 0u64..3, any::<u8>());
    let mut runner = TestRunner::new(config(60));
    let result = runner.run(&strategy, |(len, end, seed)| {
        let input: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        let mut options = RunOptions::default();
        options.registers.set("r12".parse().unwrap(), end).unwrap();
        let reports = [
            ("fresh", host.run(&code, &input, &options)),
            (
                "pooled",
                host.in_watched(|| pool.run(&code, &input, &options))
                    .expect("Pool::run reports"),
            ),
            (
                "same-code",
                host.in_watched(|| same_code.borrow_mut().run_with(&input, &options))
                    .expect("SameCode::run_with reports"),
            ),
        ];
        for (mode, report) in reports {
            let ended_as_asked = match (end, &report.outcome) {
                (0, Outcome::Returned(_)) | (1, Outcome::Exited(3)) => true,
                (2, Outcome::Crashed { signal, .. }) => *signal == libc::SIGILL,
                _ => false,
            };
            prop_assert!(ended_as_asked, "{mode}, end {end}: {}", report.summary());
            output_is_input(&report, &input, &format!("{mode}, end {end}"))?;
        }
        Ok(())
    });
    drop((pool, same_code));
    if let Err(e) = result {
        panic!("{e}");
    }
    property.host.check_unchanged(&property.before);
}

/// The `profile_jobs` fuzz target's rule (`fuzz/src/profile_jobs.rs`): an attacker under a profile
/// that allows every syscall makes up to 16 random calls (mprotect, mremap, madvise with every
/// advice, remap_file_pages, mmap over runner pages, clone, fork, vfork, clone3, unshare,
/// setsid, kill, prctl, fcntl, dup2, close, write, shmget, shmat, memfd_create, ftruncate,
/// fallocate) on the runner's addresses it finds, with up to 8 processes; then a canary (strict
/// or under the profile) on the same thread, pool, same-code slot or batch reports exactly what
/// a fresh run of it reports, and no process of the attacker outlives its job.
#[test]
fn a_canary_after_a_profile_attacker_reports_what_a_fresh_run_reports() {
    // The canary's fresh reports, before any attacker ran, and under the lock: the first
    // profile run opens the process's handle on the shared network namespace, which another
    // property would count as a leaked descriptor.
    {
        let _serial = serial();
        profile_jobs::references();
    }
    Property::start().check(24, vec(any::<u8>(), 3..256), |host, bytes| {
        let case = profile_jobs::Case::decode(&bytes, profile_jobs::namespaces());
        profile_jobs::check_case(host, &case);
        Ok(())
    });
}

/// The twins of the property above: its process check sees an attacker's processes while they
/// run (an attacker decoded from bytes: `Run` mode, spin at the end, `max_procs` 4, two
/// `fork`s, so the worker and three children spin), and its canary check tells a canary that
/// saw another input from one that did not.
#[test]
fn the_profile_oracle_sees_attacker_processes_and_a_changed_canary() {
    let _serial = serial();
    let different = bytejail::run(
        profile_jobs::CANARY,
        b"another input",
        &profile_jobs::strict_options(),
    );
    let got = profile_jobs::essence(&different.unwrap().to_json());
    assert_ne!(
        &got,
        profile_jobs::reference(false),
        "the essence keeps the output and rax"
    );
    // The attacker's addresses are the runner's pages: it writes out the runner's code from
    // the blob page (found through `[rsp]`) and makes that page writable (rbp, the last
    // result, is 0 when the call succeeded).
    use profile_jobs::{Arg, Case, Region};
    let attack = Case {
        mode: profile_jobs::Mode::Run,
        max_procs: 1,
        canary_profile: false,
        ending: profile_jobs::Ending::Return,
        calls: vec![
            Case::call(
                "write",
                &[Arg::Value(1), Arg::Near(Region::Blob, 0), Arg::Value(16)],
            ),
            Case::call(
                "mprotect",
                &[Arg::Near(Region::Blob, 0), Arg::Value(4096), Arg::Value(7)],
            ),
        ],
    };
    let report = bytejail::run(&attack.attacker(), b"", &attack.attack_options()).unwrap();
    match report.outcome {
        Outcome::Returned(regs) => assert_eq!(regs.rbp, 0, "mprotect failed: {}", report.summary()),
        _ => panic!("{}", report.summary()),
    }
    assert_eq!(report.output.len(), 16, "{}", report.summary());
    assert!(
        report.output.iter().any(|&b| b != 0),
        "the blob page holds code"
    );
    if !profile_jobs::namespaces() {
        eprintln!("not root: no PID namespace for workers; skipping the process twin");
        return;
    }
    let case = profile_jobs::Case::decode(&[0xc0, 3, 0, 8, 8], true);
    assert_eq!(
        (case.mode, case.ending, case.max_procs),
        (profile_jobs::Mode::Run, profile_jobs::Ending::Spin, 4)
    );
    assert_eq!(
        case.calls.iter().map(|c| c.name()).collect::<Vec<_>>(),
        ["fork", "fork"]
    );
    let mut options = case.attack_options();
    options.limits.timeout = Duration::from_millis(1500);
    let code = case.attacker();
    let job = std::thread::spawn(move || bytejail::run(&code, b"", &options).unwrap());
    let start = Instant::now();
    let mut seen = 0;
    while start.elapsed() < Duration::from_secs(1) && seen < 3 {
        seen = seen.max(profile_jobs::Descendants::now().guest_made.len());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(seen, 3, "the attacker's three children were never seen");
    let report = job.join().unwrap();
    assert_eq!(report.outcome, Outcome::Timeout, "{}", report.summary());
    assert_eq!(
        profile_jobs::Descendants::now(),
        profile_jobs::Descendants::default()
    );
}

/// Found while writing `profile_jobs`: a pooled job was reported as soon as its guest returned,
/// and its worker (init of the job's PID namespace) ended later by the pool's refill thread,
/// so a process the guest forked still ran after `Pool::run` returned the report. Under a
/// profile the pool now ends and reaps the worker before it reports the job.
#[test]
fn a_pooled_jobs_processes_are_dead_when_it_is_reported() {
    let _serial = serial();
    if !profile_jobs::namespaces() {
        return;
    }
    // fork; the child spins (jz to `jmp $`), the parent returns.
    let code = [
        0xb8, 0x39, 0, 0, 0, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x74, 0x01, 0xc3, 0xeb, 0xfe,
    ];
    let mut options = profile_jobs::profile_options();
    options.limits.max_procs = 4;
    let pool = Pool::new(options.clone(), 1).unwrap();
    // The refill thread ends the worker soon after the report: look right after each of a
    // few jobs (most show the child; any one is the bug).
    let mut alive = Vec::new();
    for _ in 0..10 {
        let report = pool.run(&code, b"", &options).unwrap();
        assert!(
            matches!(report.outcome, Outcome::Returned(_)),
            "{}",
            report.summary()
        );
        alive.extend(profile_jobs::Descendants::now().guest_made);
    }
    drop(pool);
    assert_eq!(
        alive,
        Vec::<String>::new(),
        "alive after their jobs' reports"
    );
}
