//! The fuzzing oracle as properties that stable CI runs (`fuzz/` needs nightly): any bytes give
//! a consistent report; the echo guest's output is its input, whatever the input; a bare `ret`
//! returns exactly the registers passed in, with the stack pointer and flags the ABI gives. Each
//! property also leaves the host as it found it: descriptors, children, the watched directory.
//!
//! The oracle is `fuzz/src/oracle.rs`, the same file the fuzz targets use. It changes the
//! process's working directory during each run and compares process-wide counts, so the
//! properties here run one at a time (see [`serial`]).

#[allow(dead_code)] // Shared with the fuzz crate, which uses all of it; this file uses most.
#[path = "../fuzz/src/oracle.rs"]
mod oracle;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytejail::load::Format;
use bytejail::{Gpr, Outcome, Registers, RunOptions};
use oracle::Host;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

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
        prop_assert!(!report.output_truncated);
        prop_assert!(
            report.output == input,
            "{} bytes in, {} bytes out, first difference at {:?}",
            input.len(),
            report.output.len(),
            report.output.iter().zip(&input).position(|(a, b)| a != b)
        );
        Ok(())
    });
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
