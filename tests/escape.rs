//! The escape corpus. Only strict mode's allow list may get through, whatever way into the
//! kernel a guest takes.
//!
//! Generated here, from the checked-in tables (`bytejail::syscalls`), never copied: every
//! x86_64 syscall number through `syscall` (and past the table, to 511, and with garbage in
//! the upper half of `rax`), every i386 number through `int 0x80` (0 to 511), every x32 number
//! (bit 30 set), `sysenter`, and calls into the legacy vsyscall page. Each case is a few
//! hand-encoded instructions that zero every argument register first, so that an allowed call
//! is harmless, and end in `ret`. Hand-written attacks live in `guest-samples/escape/`.
//!
//! Every expected outcome is derived from the strict-mode rules in `../shared/KERNEL-NOTES.md`
//! and the kernel's code, not from what the runner printed:
//! - x86_64 `read` (0), `write` (1), `exit` (60), `rt_sigreturn` (15) and ia32 `exit` (1),
//!   `read` (3), `write` (4), `sigreturn` (119) run; with zero arguments they do what
//!   [`native_outcome`] and [`ia32_outcome`] say;
//! - `uretprobe` (335) and `uprobe` (336) get through on kernels that pass them through
//!   strict mode ([`uretprobe_passes`], [`uprobe_passes`]), and fail there as no probe is set;
//! - everything else is a syscall violation: strict mode kills the thread with SIGKILL.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytejail::syscalls::{self, Abi, X32_SYSCALL_BIT};
use bytejail::{Outcome, Report, RunOptions};

// ---------------------------------------------------------------------------------------------
// Machine code, hand-encoded.

/// `xor edi,edi; xor esi,esi; xor edx,edx; xor r10d,r10d; xor r8d,r8d; xor r9d,r9d`: the six
/// argument registers of the x86_64 syscall ABI, zero.
const ZERO_NATIVE_ARGS: [u8; 15] = [
    0x31, 0xff, 0x31, 0xf6, 0x31, 0xd2, 0x45, 0x31, 0xd2, 0x45, 0x31, 0xc0, 0x45, 0x31, 0xc9,
];
/// `xor ebx,ebx; xor ecx,ecx; xor edx,edx; xor esi,esi; xor edi,edi; xor ebp,ebp`: the six
/// argument registers of the ia32 ABI (and `sysenter`'s stack pointer, ebp), zero.
const ZERO_IA32_ARGS: [u8; 12] = [
    0x31, 0xdb, 0x31, 0xc9, 0x31, 0xd2, 0x31, 0xf6, 0x31, 0xff, 0x31, 0xed,
];
const SYSCALL: [u8; 2] = [0x0f, 0x05];
const INT_0X80: [u8; 2] = [0xcd, 0x80];
const SYSENTER: [u8; 2] = [0x0f, 0x34];
const CALL_RAX: [u8; 2] = [0xff, 0xd0];
const MOV_RAX_FROM_RAX: [u8; 3] = [0x48, 0x8b, 0x00];
const RET: u8 = 0xc3;

/// `mov eax, imm32` (zero-extends into rax).
fn mov_eax(imm: u32) -> Vec<u8> {
    let mut code = vec![0xb8];
    code.extend_from_slice(&imm.to_le_bytes());
    code
}

/// `mov rax, imm64`.
fn mov_rax(imm: u64) -> Vec<u8> {
    let mut code = vec![0x48, 0xb8];
    code.extend_from_slice(&imm.to_le_bytes());
    code
}

/// How a case enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Syscall,
    Int80,
    Sysenter,
}

/// A trap into the kernel with every argument register zero and `rax` = `rax`, then `ret`.
/// Returns the code and the offset of the trap instruction.
fn trap(entry: Entry, rax: u64) -> (Vec<u8>, u64) {
    let mut code = match entry {
        Entry::Syscall => ZERO_NATIVE_ARGS.to_vec(),
        Entry::Int80 | Entry::Sysenter => ZERO_IA32_ARGS.to_vec(),
    };
    match u32::try_from(rax) {
        Ok(small) => code.extend(mov_eax(small)),
        Err(_) => code.extend(mov_rax(rax)),
    }
    let at = code.len() as u64;
    code.extend_from_slice(match entry {
        Entry::Syscall => &SYSCALL,
        Entry::Int80 => &INT_0X80,
        Entry::Sysenter => &SYSENTER,
    });
    code.push(RET);
    (code, at)
}

/// A `call` to `target` (the return address is pushed on the guest's stack), then `ret`.
fn call(target: u64) -> Vec<u8> {
    let mut code = ZERO_NATIVE_ARGS.to_vec();
    code.extend(mov_rax(target));
    code.extend_from_slice(&CALL_RAX);
    code.push(RET);
    code
}

// ---------------------------------------------------------------------------------------------
// The machine the tests run on: kernel version, vsyscall mode, CPU vendor.

/// What the expectations depend on, read once from the test process's own view of the system.
#[derive(Debug)]
struct Machine {
    /// `/proc/sys/kernel/osrelease`, e.g. `6.18.44-...`.
    release: String,
    /// (major, minor) of the release.
    version: (u32, u32),
    vsyscall: Vsyscall,
    /// AMD and Hygon CPUs raise #UD for `sysenter` in 64-bit mode.
    amd: bool,
}

/// How the kernel treats the legacy vsyscall page (`vsyscall=` on its command line), as the
/// permissions of `[vsyscall]` in `/proc/self/maps` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vsyscall {
    /// `--xp`: calls are emulated (through the seccomp check), reads fault.
    ExecuteOnly,
    /// `r-xp`: calls are emulated, reads work.
    Emulate,
    /// Not mapped: calls and reads fault.
    None,
}

fn machine() -> &'static Machine {
    static MACHINE: OnceLock<Machine> = OnceLock::new();
    MACHINE.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .expect("reading /proc/sys/kernel/osrelease")
            .trim()
            .to_string();
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().expect("kernel release numbers"));
        let version = (numbers.next().unwrap(), numbers.next().unwrap());
        let maps = std::fs::read_to_string("/proc/self/maps").expect("reading /proc/self/maps");
        let vsyscall = match maps.lines().find(|l| l.ends_with("[vsyscall]")) {
            Some(line) if line.split_whitespace().nth(1) == Some("r-xp") => Vsyscall::Emulate,
            Some(_) => Vsyscall::ExecuteOnly,
            None => Vsyscall::None,
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let amd = cpuinfo
            .lines()
            .find(|l| l.starts_with("vendor_id"))
            .is_some_and(|l| l.contains("AuthenticAMD") || l.contains("HygonGenuine"));
        Machine {
            release,
            version,
            vsyscall,
            amd,
        }
    })
}

/// Whether a kernel lets a syscall through strict mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Passes {
    Yes,
    No,
    /// Depends on a stable backport this test cannot see.
    Maybe,
}

/// `uretprobe` (335) exists since Linux 6.11; seccomp lets it through every mode, strict
/// included (`mode1_syscalls` lists it), since commit cf6cb56ef244 "seccomp: passthrough
/// uretprobe systemcall without filtering" in 6.14, which the 6.12.y and 6.13.y stable series
/// also took. On 6.11.y it is killed like any other call.
fn uretprobe_passes(version: (u32, u32)) -> Passes {
    if version >= (6, 14) {
        Passes::Yes
    } else if version >= (6, 12) {
        Passes::Maybe
    } else {
        Passes::No
    }
}

/// `uprobe` (336) and its strict-mode passthrough ("seccomp: passthrough uprobe systemcall
/// without filtering") both arrived in Linux 6.18. Before that 336 is an unassigned number.
fn uprobe_passes(version: (u32, u32)) -> Passes {
    if version >= (6, 18) {
        Passes::Yes
    } else {
        Passes::No
    }
}

// ---------------------------------------------------------------------------------------------
// Expected outcomes.

/// Where a crash's fault report must place the faulting instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// At this offset in the code.
    Offset(u64),
    /// Outside the code (`code_offset: None`), with a fault record.
    Outside,
    /// Not checked.
    Unchecked,
}

/// An expected outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Killed by strict mode.
    Violation,
    /// Returned with this `rax`.
    Returned(u64),
    /// Returned, `rax` not checked.
    ReturnedAny,
    /// `exit(code)`.
    Exited(i32),
    /// Died of `signal`; `address` is the fault's `si_addr` when given.
    Crashed {
        signal: i32,
        at: At,
        address: Option<u64>,
    },
    /// Any one of these.
    OneOf(Vec<Expect>),
}

/// `-errno` as the kernel leaves it in `rax`.
fn neg(errno: i32) -> u64 {
    (-i64::from(errno)) as u64
}

/// A SIGSEGV or SIGILL the kernel raised itself (`force_sig`: si_code SI_KERNEL, si_addr 0)
/// inside a syscall, so with `rip` just after the trap instruction (`at` + 2).
fn forced(signal: i32, at: u64) -> Expect {
    Expect::Crashed {
        signal,
        at: At::Offset(at + 2),
        address: Some(0),
    }
}

/// The outcome of x86_64 syscall `nr` entered through `syscall` at offset `at`, with every
/// argument zero.
fn native_outcome(nr: u32, at: u64) -> Expect {
    let version = machine().version;
    let passes = |passes: Passes, yes: Expect| match passes {
        Passes::Yes => yes,
        Passes::No => Expect::Violation,
        Passes::Maybe => Expect::OneOf(vec![yes, Expect::Violation]),
    };
    match nr {
        // read(0, NULL, 0): fd 0 is the input pipe; a zero-length read returns 0 at once.
        0 => Expect::Returned(0),
        // write(0, NULL, 0): fd 0 is the pipe's read end, not open for writing: -EBADF.
        1 => Expect::Returned(neg(libc::EBADF)),
        // rt_sigreturn reads its frame at rsp - 8 and the ucontext's uc_sigmask at rsp + 296,
        // but rsp is the top of the stack minus 8 and nothing is mapped above it: the read
        // fails, the kernel forces SIGSEGV and leaves rip after the `syscall`.
        15 => forced(libc::SIGSEGV, at),
        // exit(0).
        60 => Expect::Exited(0),
        // uretprobe outside a uretprobe trampoline (there is none: no probe is attached):
        // the kernel forces SIGILL.
        335 => passes(uretprobe_passes(version), forced(libc::SIGILL, at)),
        // uprobe outside a uprobe trampoline: -ENXIO, and the guest returns.
        336 => passes(uprobe_passes(version), Expect::Returned(neg(libc::ENXIO))),
        _ => Expect::Violation,
    }
}

/// The outcome of ia32 syscall `nr` entered through `int 0x80` at offset `at`, with every
/// argument zero. The ia32 entry has its own allow list: exit 1, read 3, write 4, sigreturn 119.
fn ia32_outcome(nr: u32, at: u64) -> Expect {
    match nr {
        // exit(0).
        1 => Expect::Exited(0),
        // read(0, NULL, 0): 0.
        3 => Expect::Returned(0),
        // write(0, NULL, 0): -EBADF, sign-extended into rax (the guest is in 64-bit mode).
        4 => Expect::Returned(neg(libc::EBADF)),
        // sigreturn reads its frame's sc.oldmask at rsp + 80, above the stack's top: SIGSEGV,
        // rip after the `int 0x80`.
        119 => forced(libc::SIGSEGV, at),
        _ => Expect::Violation,
    }
}

// ---------------------------------------------------------------------------------------------
// Running cases and comparing.

/// One generated guest and its expected outcome.
struct Case {
    label: String,
    code: Vec<u8>,
    expect: Expect,
}

/// Why `report` does not match `expect`, if it does not.
fn mismatch(expect: &Expect, report: &Report) -> Option<String> {
    let matches = match (expect, &report.outcome) {
        (Expect::Violation, Outcome::SyscallViolation) => true,
        (Expect::Returned(rax), Outcome::Returned(regs)) => regs.rax == *rax,
        (Expect::ReturnedAny, Outcome::Returned(_)) => true,
        (Expect::Exited(code), Outcome::Exited(got)) => code == got,
        (
            Expect::Crashed {
                signal,
                at,
                address,
            },
            Outcome::Crashed { signal: got, fault },
        ) => {
            let at_ok = match at {
                At::Unchecked => true,
                At::Outside => fault.as_ref().is_some_and(|f| f.code_offset.is_none()),
                At::Offset(off) => fault.as_ref().is_some_and(|f| f.code_offset == Some(*off)),
            };
            let address_ok = match address {
                None => true,
                Some(a) => fault.as_ref().is_some_and(|f| f.address == *a),
            };
            signal == got && at_ok && address_ok
        }
        (Expect::OneOf(options), _) => options.iter().any(|e| mismatch(e, report).is_none()),
        _ => false,
    };
    if matches {
        None
    } else {
        Some(format!(
            "expected {expect:?}, got {:?} ({})",
            report.outcome,
            report.summary()
        ))
    }
}

/// Options for generated cases: the defaults (strict mode, scrubbed) with a short deadline.
fn corpus_options() -> RunOptions {
    let mut options = RunOptions::default();
    options.limits.timeout = Duration::from_secs(1);
    options
}

/// Runs every case on a few threads and returns every mismatch, in case order.
fn run_cases(cases: &[Case]) -> Vec<String> {
    const THREADS: usize = 4;
    let options = corpus_options();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let problem = match bytejail::run(&case.code, b"", &options) {
                    Err(e) => Some(format!("runner error: {e}")),
                    Ok(report) if !report.output.is_empty() => Some(format!(
                        "wrote {:?}; no case writes anything",
                        String::from_utf8_lossy(&report.output)
                    )),
                    Ok(report) => mismatch(&case.expect, &report),
                };
                if let Some(problem) = problem {
                    failures
                        .lock()
                        .unwrap()
                        .push((i, format!("{}: {problem}", case.label)));
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    failures.into_iter().map(|(_, text)| text).collect()
}

/// `name` of `nr` in `abi`, or `-` for an unassigned number.
fn label(abi: Abi, nr: u32) -> String {
    format!(
        "{} {nr:#x} {}",
        abi.name(),
        syscalls::name(abi, nr).unwrap_or("-")
    )
}

// ---------------------------------------------------------------------------------------------
// The generated corpus.

/// Every x86_64 number through `syscall`: the table and past it to 511, and some with garbage
/// in the upper 32 bits of `rax`, which the kernel ignores: it takes the number as the int in
/// eax, for the seccomp check (`syscall_get_nr` returns int) and for the dispatch alike.
fn native_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = (0..=511u32)
        .map(|nr| {
            let (code, at) = trap(Entry::Syscall, u64::from(nr));
            Case {
                label: label(Abi::X86_64, nr),
                code,
                expect: native_outcome(nr, at),
            }
        })
        .collect();
    for rax in [
        1 << 32,                     // read
        (1 << 32) | 39,              // getpid
        0xffff_ffff_0000_0000 | 60,  // exit
        0xdead_beef_0000_0000 | 231, // exit_group
        0xffff_ffff,                 // eax = -1
        u64::MAX,                    // rax = -1
        0x8000_0000,                 // eax = INT_MIN
    ] {
        let nr = rax as u32;
        let (code, at) = trap(Entry::Syscall, rax);
        cases.push(Case {
            label: format!("x86_64 rax={rax:#x}: {}", label(Abi::X86_64, nr)),
            code,
            expect: native_outcome(nr, at),
        });
    }
    cases
}

/// Every ia32 number through `int 0x80`, 0 to 511 (the table ends at 470), and two with
/// garbage in the upper half of `rax` (the ia32 entry keeps only eax).
fn ia32_cases() -> Vec<Case> {
    let last = syscalls::table(Abi::I386).last().unwrap().0.max(511);
    let mut cases: Vec<Case> = (0..=last)
        .map(|nr| {
            let (code, at) = trap(Entry::Int80, u64::from(nr));
            Case {
                label: label(Abi::I386, nr),
                code,
                expect: ia32_outcome(nr, at),
            }
        })
        .collect();
    for rax in [(1u64 << 32) | 1, (1u64 << 32) | 20] {
        let (code, at) = trap(Entry::Int80, rax);
        cases.push(Case {
            label: format!("i386 rax={rax:#x}: {}", label(Abi::I386, rax as u32)),
            code,
            expect: ia32_outcome(rax as u32, at),
        });
    }
    cases
}

/// Every x32 number in the table, plus the x32 tag on the native allow list's numbers that
/// the x32 table lacks (rt_sigreturn 15) and on uretprobe and uprobe: strict mode kills every
/// x32 call (the tagged number is in neither allow list).
fn x32_cases() -> Vec<Case> {
    let mut numbers: Vec<u32> = syscalls::table(Abi::X32).map(|(nr, _)| nr).collect();
    numbers.extend([15, 335, 336].map(|nr| X32_SYSCALL_BIT | nr));
    numbers.sort_unstable();
    numbers.dedup();
    numbers
        .into_iter()
        .map(|nr| Case {
            label: label(Abi::X32, nr),
            code: trap(Entry::Syscall, u64::from(nr)).0,
            expect: Expect::Violation,
        })
        .collect()
}

/// `sysenter` from 64-bit code, with ia32 exit, write and getpid in eax. AMD CPUs do not
/// implement `sysenter` in long mode: #UD, SIGILL at the instruction. Intel CPUs enter the
/// kernel's compat SYSENTER path, which first reads the caller's ebp through the stack pointer
/// the vDSO convention keeps in ebp (0 here): that read faults, so the kernel returns with
/// -EFAULT to the 32-bit vDSO's landing pad, which a 64-bit process does not have mapped:
/// SIGSEGV. (Not seen on this project's AMD machines; only the signal is checked there.)
fn sysenter_cases() -> Vec<Case> {
    [1u32, 4, 20]
        .into_iter()
        .map(|nr| {
            let (code, at) = trap(Entry::Sysenter, u64::from(nr));
            let expect = if machine().amd {
                Expect::Crashed {
                    signal: libc::SIGILL,
                    at: At::Offset(at),
                    address: None,
                }
            } else {
                Expect::Crashed {
                    signal: libc::SIGSEGV,
                    at: At::Unchecked,
                    address: None,
                }
            };
            Case {
                label: format!("sysenter eax={nr}"),
                code,
                expect,
            }
        })
        .collect()
}

/// Calls into the legacy vsyscall page. Its three entries (gettimeofday, time, getcpu) are
/// emulated by the kernel, which runs the seccomp check first: strict mode kills. A call to
/// any other address in the page is a "misaligned vsyscall": the kernel forces SIGSEGV with
/// rip in the page. With `vsyscall=none` the page is not mapped and every call faults there.
fn vsyscall_cases() -> Vec<Case> {
    const PAGE: u64 = 0xffff_ffff_ff60_0000;
    let unmapped = |target| Expect::Crashed {
        signal: libc::SIGSEGV,
        at: At::Outside,
        address: Some(target),
    };
    let mut cases = Vec::new();
    for (target, entry) in [
        (PAGE, "gettimeofday"),
        (PAGE + 0x400, "time"),
        (PAGE + 0x800, "getcpu"),
        (PAGE + 1, "misaligned"),
    ] {
        let expect = match (machine().vsyscall, entry) {
            (Vsyscall::None, _) => unmapped(target),
            (_, "misaligned") => Expect::Crashed {
                signal: libc::SIGSEGV,
                at: At::Outside,
                address: Some(0),
            },
            _ => Expect::Violation,
        };
        cases.push(Case {
            label: format!("vsyscall call {target:#x} ({entry})"),
            code: call(target),
            expect,
        });
    }
    // A load from the page: readable only with vsyscall=emulate.
    let mut load = mov_rax(PAGE);
    let at = load.len() as u64;
    load.extend_from_slice(&MOV_RAX_FROM_RAX);
    load.push(RET);
    cases.push(Case {
        label: "vsyscall load".into(),
        code: load,
        expect: match machine().vsyscall {
            Vsyscall::Emulate => Expect::ReturnedAny,
            Vsyscall::ExecuteOnly | Vsyscall::None => Expect::Crashed {
                signal: libc::SIGSEGV,
                at: At::Offset(at),
                address: Some(PAGE),
            },
        },
    });
    cases
}

fn all_cases() -> Vec<Case> {
    let mut cases = native_cases();
    cases.extend(ia32_cases());
    cases.extend(x32_cases());
    cases.extend(sysenter_cases());
    cases.extend(vsyscall_cases());
    cases
}

#[test]
fn generated_corpus_only_the_allow_list_gets_through() {
    let cases = all_cases();
    let failures = run_cases(&cases);
    assert!(
        failures.is_empty(),
        "{} of {} cases did not do what strict mode allows (kernel {}):\n{}",
        failures.len(),
        cases.len(),
        machine().release,
        failures.join("\n")
    );
}

#[test]
fn the_corpus_covers_every_number_of_every_table() {
    let cases = all_cases();
    assert!(cases.len() >= 1000, "{} cases", cases.len());
    for abi in Abi::ALL {
        for (nr, name) in syscalls::table(abi) {
            let label = label(abi, nr);
            assert!(
                cases.iter().any(|case| case.label == label),
                "{} {nr} ({name}) has no case",
                abi.name()
            );
        }
    }
    const _: () = assert!(syscalls::X86_64_MAX <= 511, "extend native_cases past 511");
    // Exactly the allow lists (and the kernel's passthrough) expect anything but a violation.
    let allowed: Vec<&str> = cases
        .iter()
        .filter(|case| case.expect != Expect::Violation)
        .map(|case| case.label.as_str())
        .filter(|label| !label.starts_with("sysenter") && !label.starts_with("vsyscall"))
        .collect();
    let mut expected = vec![
        "x86_64 0x0 read",
        "x86_64 0x1 write",
        "x86_64 0xf rt_sigreturn",
        "x86_64 0x3c exit",
        "x86_64 rax=0x100000000: x86_64 0x0 read",
        "x86_64 rax=0xffffffff0000003c: x86_64 0x3c exit",
        "i386 0x1 exit",
        "i386 0x3 read",
        "i386 0x4 write",
        "i386 0x77 sigreturn",
        "i386 rax=0x100000001: i386 0x1 exit",
    ];
    if uretprobe_passes(machine().version) != Passes::No {
        expected.push("x86_64 0x14f uretprobe");
    }
    if uprobe_passes(machine().version) != Passes::No {
        expected.push("x86_64 0x150 uprobe");
    }
    let mut allowed = allowed;
    allowed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(allowed, expected);
}

#[test]
fn hand_encoded_instructions_decode_as_documented() {
    let decode = |code: &[u8]| {
        let mut offset = 0;
        let mut text = Vec::new();
        while offset < code.len() {
            let insn = bytejail::disasm::instruction_at(code, offset)
                .unwrap_or_else(|| panic!("undecodable at {offset}: {code:02x?}"));
            // instruction_at does not say how long the instruction is: it is the shortest
            // prefix that decodes at all (a cut-short instruction does not).
            let len = (1..=15)
                .find(|n| {
                    code.get(..offset + n)
                        .and_then(|prefix| bytejail::disasm::instruction_at(prefix, offset))
                        .is_some()
                })
                .unwrap();
            text.push(insn);
            offset += len;
        }
        text
    };
    assert_eq!(
        decode(&trap(Entry::Syscall, 60).0),
        [
            "xor edi,edi",
            "xor esi,esi",
            "xor edx,edx",
            "xor r10d,r10d",
            "xor r8d,r8d",
            "xor r9d,r9d",
            "mov eax,3Ch",
            "syscall",
            "ret"
        ]
    );
    assert_eq!(
        decode(&trap(Entry::Int80, 119).0),
        [
            "xor ebx,ebx",
            "xor ecx,ecx",
            "xor edx,edx",
            "xor esi,esi",
            "xor edi,edi",
            "xor ebp,ebp",
            "mov eax,77h",
            "int 80h",
            "ret"
        ]
    );
    assert_eq!(decode(&trap(Entry::Sysenter, 1).0)[7], "sysenter");
    assert_eq!(
        decode(&trap(Entry::Syscall, u64::MAX).0)[6],
        "mov rax,0FFFFFFFFFFFFFFFFh"
    );
    assert_eq!(
        decode(&call(0xffff_ffff_ff60_0400))[6..],
        ["mov rax,0FFFFFFFFFF600400h", "call rax", "ret"]
    );
}

/// Kernel fact (`../shared/KERNEL-NOTES.md`, stated there as 6.11/6.16): the kernel lets
/// `uretprobe` (335) and `uprobe` (336) through every seccomp mode, strict mode included, so on
/// such kernels the allow list is not four calls but six. Upstream history puts the strict-mode
/// passthrough at Linux 6.14 for uretprobe (with 6.12.y and 6.13.y stable backports) and at
/// Linux 6.18 for uprobe (syscall and passthrough arrived together); see [`uretprobe_passes`]
/// and [`uprobe_passes`]. With no probe attached neither does anything: uretprobe forces
/// SIGILL, uprobe returns -ENXIO. Older kernels kill both like any other call.
#[test]
fn linux_6_14_lets_uretprobe_and_linux_6_18_lets_uprobe_through_strict_mode() {
    let machine = machine();
    let options = corpus_options();
    for (nr, passes) in [
        (335, uretprobe_passes(machine.version)),
        (336, uprobe_passes(machine.version)),
    ] {
        let (code, at) = trap(Entry::Syscall, nr);
        let report = bytejail::run(&code, b"", &options).unwrap();
        let name = syscalls::name(Abi::X86_64, nr as u32).unwrap();
        let passed = report.outcome != Outcome::SyscallViolation;
        eprintln!(
            "Linux {}: {name} ({nr}) {} strict mode: {}",
            machine.release,
            if passed {
                "passes through"
            } else {
                "is killed by"
            },
            report.summary()
        );
        match passes {
            Passes::Yes => assert!(
                passed,
                "Linux {} should let {name} through",
                machine.release
            ),
            Passes::No => assert!(!passed, "Linux {} should kill {name}", machine.release),
            Passes::Maybe => {}
        }
        if let Some(problem) = mismatch(&native_outcome(nr as u32, at), &report) {
            panic!("{name}: {problem}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written samples in guest-samples/escape/.

/// Samples these tests run (the `hunt_*` ones belong to tests/hardening.rs).
const SAMPLES: [&str; 10] = [
    "deep_recursion.s",
    "fd_sweep_read.s",
    "fd_sweep_write.s",
    "forged_sigreturn.s",
    "forged_sigreturn_fault.s",
    "forged_sigreturn_noncanonical.s",
    "int80_pointer.s",
    "self_modify.s",
    "vsyscall_read.s",
    "write_flood.s",
];

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-samples/escape")
}

/// Assembles `guest-samples/escape/<name>`.
fn load(name: &str) -> Vec<u8> {
    assert!(SAMPLES.contains(&name), "{name} is not in SAMPLES");
    bytejail::load::load_path(&samples_dir().join(name), None, 1 << 20)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs `code` on `input` with `options`.
fn run(code: &[u8], input: &[u8], options: &RunOptions) -> Report {
    bytejail::run(code, input, options).expect("the runner itself failed")
}

/// The offset of the first occurrence of `needle` in `code`.
fn offset_of(code: &[u8], needle: &[u8]) -> u64 {
    code.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:02x?} not in the code")) as u64
}

/// The fds whose bit is set in `bitmap` (bit fd = byte fd / 8, bit fd % 8).
fn fds_in(bitmap: &[u8]) -> Vec<usize> {
    (0..bitmap.len() * 8)
        .filter(|fd| bitmap[fd / 8] & (1 << (fd % 8)) != 0)
        .collect()
}

fn crash_of(report: &Report) -> (i32, Option<&bytejail::Fault>) {
    match &report.outcome {
        Outcome::Crashed { signal, fault } => (*signal, fault.as_ref()),
        other => panic!("expected a crash, got {other:?}: {}", report.summary()),
    }
}

fn returned(report: &Report) -> bytejail::Registers {
    match &report.outcome {
        Outcome::Returned(regs) => *regs,
        other => panic!("expected a return, got {other:?}: {}", report.summary()),
    }
}

#[test]
fn every_escape_sample_is_run_and_has_a_header() {
    let mut files: Vec<String> = std::fs::read_dir(samples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".s"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = SAMPLES.iter().map(|s| s.to_string()).collect();
    // tests/hardening.rs runs these.
    listed.extend(["hunt_range.s".to_string(), "hunt_stack_top.s".to_string()]);
    listed.sort();
    assert_eq!(files, listed, "guest-samples/escape/ and SAMPLES disagree");
    for name in files.iter().filter(|name| !name.starts_with("hunt_")) {
        let text = std::fs::read_to_string(samples_dir().join(name)).unwrap();
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
        assert!(header.len() >= 3, "{name}: the header explains too little");
        assert_eq!(
            header
                .iter()
                .filter(|l| l.starts_with("# expect: "))
                .count(),
            1,
            "{name}: one `# expect:` line"
        );
    }
}

#[test]
fn a_forged_frame_that_blocks_every_signal_still_ends_at_the_deadline() {
    let code = load("forged_sigreturn.s");
    let mut options = RunOptions::default();
    options.limits.timeout = Duration::from_millis(300);
    let report = run(&code, b"", &options);
    assert_eq!(report.outcome, Outcome::Timeout, "{}", report.summary());
    // "S": rt_sigreturn took the frame and resumed where it said.
    assert_eq!(report.output, b"S");
    assert!(
        report.wall >= Duration::from_millis(300) && report.wall < Duration::from_millis(3300),
        "{:?}",
        report.wall
    );
}

#[test]
fn a_forged_mask_that_blocks_sigsegv_is_not_survivable() {
    let code = load("forged_sigreturn_fault.s");
    let untraced = RunOptions::default().with_trace(false);
    let report = run(&code, b"", &untraced);
    let (signal, fault) = crash_of(&report);
    assert_eq!(signal, libc::SIGSEGV);
    // Untraced, the worker's handler never ran: nothing recorded the fault.
    assert_eq!(fault, None, "{}", report.summary());
    // Traced, the kernel's delivery of the fault shows where it was, mask or not.
    let report = run(&code, b"", &RunOptions::default());
    let (signal, fault) = crash_of(&report);
    assert_eq!(signal, libc::SIGSEGV);
    let fault = fault.expect("the kernel's fault");
    assert_eq!(fault.address, 0, "{}", report.summary());
    assert!(fault.verified && fault.code_offset.is_some());

    // Control: the same store without the forged mask is reported where it happened.
    let store = [0x31, 0xc0, 0x48, 0xc7, 0x00, 0x01, 0x00, 0x00, 0x00, RET]; // xor eax,eax; mov qword ptr [rax],1
    let report = run(&store, b"", &RunOptions::default());
    let (signal, fault) = crash_of(&report);
    assert_eq!(signal, libc::SIGSEGV);
    assert_eq!(fault.and_then(|f| f.code_offset), Some(2));
}

#[test]
fn a_forged_frame_with_a_noncanonical_rip_crashes_outside_the_code() {
    let code = load("forged_sigreturn_noncanonical.s");
    let report = run(&code, b"", &RunOptions::default());
    let (signal, fault) = crash_of(&report);
    assert_eq!(signal, libc::SIGSEGV, "{}", report.summary());
    let fault = fault.expect("a fault record");
    assert_eq!((fault.code_offset, fault.address), (None, 0));
    assert!(report.output.is_empty());
}

#[test]
fn a_read_sweep_of_every_descriptor_finds_only_fd_0() {
    let code = load("fd_sweep_read.s");
    let report = run(&code, b"input", &RunOptions::default());
    assert_eq!(returned(&report).rax, 1, "{}", report.summary());
    assert_eq!(report.output.len(), 128);
    assert_eq!(fds_in(&report.output), [0]);
}

#[test]
fn a_write_sweep_of_every_descriptor_finds_only_fd_1() {
    let code = load("fd_sweep_write.s");
    let report = run(&code, b"", &RunOptions::default());
    assert_eq!(returned(&report).rax, 1, "{}", report.summary());
    // One "W" from the sweep's write to fd 1, then the bitmap.
    assert_eq!(report.output.len(), 1 + 128, "{:?}", report.output);
    assert_eq!(report.output[0], b'W');
    assert_eq!(fds_in(&report.output[1..]), [1]);
}

#[test]
fn a_write_flood_stops_exactly_at_the_output_limit() {
    let code = load("write_flood.s");
    let mut options = RunOptions::default();
    options.limits.max_output = 10_000;
    let report = run(&code, b"", &options);
    assert_eq!(report.outcome, Outcome::OutputLimit, "{}", report.summary());
    assert_eq!(report.output, vec![0; 10_000]);
    assert!(report.output_truncated);
    // Killed for its output, long before the default 2 s deadline.
    assert!(report.wall < options.limits.timeout, "{:?}", report.wall);
}

#[test]
fn deep_recursion_runs_into_the_guard_page_at_the_call() {
    let code = load("deep_recursion.s");
    assert_eq!(code[8], 0xe8, "the call is not at offset 8: {code:02x?}");
    let report = run(&code, b"", &RunOptions::default());
    let (signal, fault) = crash_of(&report);
    assert_eq!(signal, libc::SIGSEGV, "{}", report.summary());
    let fault = fault.expect("the fault handler runs on its own stack");
    assert_eq!(fault.code_offset, Some(8), "{}", report.summary());
    assert_eq!(fault.address % 4096, 0xff8, "{:#x}", fault.address);
}

/// Runs self_modify.s in `mode` (r12).
fn self_modify(mode: u64, input: &[u8]) -> (Vec<u8>, Report) {
    let code = load("self_modify.s");
    let mut options = RunOptions::default();
    options.registers.set("r12".parse().unwrap(), mode).unwrap();
    let report = run(&code, input, &options);
    (code, report)
}

#[test]
fn a_store_into_its_own_code_faults_at_the_store() {
    let (code, report) = self_modify(0, b"");
    let store = offset_of(&code, &[0xc6, 0x00, 0x90]); // mov byte ptr [rax], 0x90
    let patch = code.len() as u64 - 1; // .Lpatch, the last byte
    assert_eq!(code[patch as usize], RET);
    let (signal, fault) = crash_of(&report);
    assert_eq!(signal, libc::SIGSEGV);
    let fault = fault.expect("a fault record");
    assert_eq!(fault.code_offset, Some(store), "{}", report.summary());
    // The code is page-aligned: the fault address is .Lpatch's.
    assert_eq!(fault.address % 4096, patch, "{:#x}", fault.address);
}

#[test]
fn code_written_into_the_scratch_cannot_run() {
    let (_, report) = self_modify(1, b"");
    let (signal, fault) = crash_of(&report);
    assert_eq!(signal, libc::SIGSEGV);
    let fault = fault.expect("a fault record");
    assert_eq!(fault.code_offset, None, "{}", report.summary());
    // The instruction fetch at the scratch's first byte, a page boundary.
    assert_eq!(fault.address % 4096, 0, "{:#x}", fault.address);
}

#[test]
fn the_kernel_does_not_write_the_code_for_the_guest() {
    let (_, report) = self_modify(2, b"\x90");
    let regs = returned(&report);
    assert_eq!(regs.rax, neg(libc::EFAULT), "{}", report.summary());
    assert_eq!(regs.rbx, u64::from(RET), "the code changed");
}

#[test]
fn int_0x80_truncates_pointers_to_32_bits() {
    let code = load("int80_pointer.s");
    let report = run(&code, b"", &RunOptions::default());
    let regs = returned(&report);
    assert!(
        regs.r12 > u64::from(u32::MAX),
        "the code lies below 4 GiB ({:#x}): truncation would change nothing",
        regs.r12
    );
    assert_eq!(regs.rax, neg(libc::EFAULT), "{}", report.summary());
    assert_eq!(report.output, b"ok\n");
}

#[test]
fn the_vsyscall_page_cannot_be_read() {
    let code = load("vsyscall_read.s");
    let report = run(&code, b"", &RunOptions::default());
    // The kernel refused to read it on the guest's behalf.
    assert_eq!(report.output, neg(libc::EFAULT).to_le_bytes());
    if machine().vsyscall == Vsyscall::Emulate {
        returned(&report);
        return;
    }
    let load_at = offset_of(&code, &[0x48, 0x8b, 0x03]); // mov rax, [rbx]
    let (signal, fault) = crash_of(&report);
    assert_eq!(signal, libc::SIGSEGV);
    let fault = fault.expect("a fault record");
    assert_eq!(
        (fault.code_offset, fault.address),
        (Some(load_at), 0xffff_ffff_ff60_0000),
        "{}",
        report.summary()
    );
}
