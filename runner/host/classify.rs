//! What happened to the guest, decided from what the kernel said (the wait status, the
//! tracer's stops) and the host's own kills; the worker's record only adds details, and only
//! where it agrees with the kernel.

use std::time::Duration;

use crate::abi::Registers;
use crate::arena::Record;
use crate::error::Error;
use crate::policy::Policy;
use crate::report::{Fault, Outcome, ViolatingSyscall};
use crate::syscalls::Abi;
use crate::worker::{self, layout::*};

use crate::tracer::Facts;

use super::watch::Kill;

/// How a reaped worker ended, as `wait4` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitStatus {
    /// It exited with this status (`WIFEXITED`, `WEXITSTATUS`).
    Exited(i32),
    /// A signal ended it (`WIFSIGNALED`, `WTERMSIG`), with a core dump or not (`WCOREDUMP`;
    /// never for a worker, whose `RLIMIT_CORE` is 0, and no part of the decision).
    Signaled { signal: i32, core: bool },
    /// Anything else (a stop, a continue): never the status of a reaped process.
    Other(i32),
}

impl WaitStatus {
    /// Decodes a raw wait status.
    pub(crate) fn from_raw(status: i32) -> WaitStatus {
        if libc::WIFEXITED(status) {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled {
                signal: libc::WTERMSIG(status),
                core: libc::WCOREDUMP(status),
            }
        } else {
            WaitStatus::Other(status)
        }
    }
}

/// Everything [`classify`] decides from, gathered by the host once the worker is reaped: what
/// the kernel said (the wait status, the CPU time, the tracer's stops, the OOM killer), what
/// the host did and knew (its kills, the job's limits and policy), and the worker's record,
/// copied out of the arena.
pub(crate) struct Evidence<'a> {
    pub status: WaitStatus,
    /// The worker's CPU time, user and system together (its rusage).
    pub cpu: Duration,
    /// Why the host killed the worker, if it did.
    pub killed: Option<Kill>,
    /// The output passed its limit.
    pub truncated: bool,
    /// The worker was under strict mode, which kills a violation with SIGKILL (filters trap).
    pub strict: bool,
    /// The job's CPU limit, if it has one.
    pub cpu_time: Option<Duration>,
    /// The worker's `RLIMIT_CPU` backstop, in seconds.
    pub cpu_limit_secs: u64,
    /// The guest may raise any signal itself, or exit 127 (under a profile).
    pub guest_may_signal: bool,
    /// The kernel's OOM killer ended a process of the job for its memory cgroup's limit.
    pub oom_killed: bool,
    /// The job may have more than one process: another could have sent the worker a signal.
    pub many_procs: bool,
    /// What the tracer saw, for a traced worker.
    pub facts: Option<&'a Facts>,
    /// The worker's record: its claims (a return's registers, a fault, a setup failure).
    pub record: &'a Record,
    /// Where the code was mapped in the worker, and the code.
    pub code_addr: u64,
    pub code: &'a [u8],
    /// Whether the job's own filter denies a call (see [`job_denies`]); strict mode: always.
    pub job_denies: &'a dyn Fn(&ViolatingSyscall) -> bool,
}

/// Decides the outcome from the wait status and the host's own kills; the worker's record
/// only adds details, and only where it agrees with the kernel. Pure: everything it reads is
/// in `evidence`.
pub(crate) fn classify(
    evidence: &Evidence<'_>,
) -> Result<(Outcome, Option<ViolatingSyscall>), Error> {
    let (record, code_addr, code) = (evidence.record, evidence.code_addr, evidence.code);
    let job_denies = evidence.job_denies;
    if evidence.truncated || evidence.killed == Some(Kill::OutputLimit) {
        return Ok((Outcome::OutputLimit, None));
    }
    let mut signal = match evidence.status {
        WaitStatus::Exited(code) => {
            // Only the trampoline's own exit is status 0 with a return recorded. A guest that
            // forges the record and exits 0 has in effect returned with those registers.
            if code == 0 && record.state == STATE_RETURNED {
                let registers = Registers::from_array(record.gpr, record.rflags);
                return Ok((Outcome::Returned(registers), None));
            }
            return Ok((Outcome::Exited(code), None));
        }
        WaitStatus::Signaled { signal, .. } => signal,
        WaitStatus::Other(status) => {
            return Err(Error::io(
                "reaping the worker",
                std::io::Error::other(format!("unexpected wait status 0x{status:x}")),
            ))
        }
    };
    if signal == libc::SIGKILL && evidence.killed.is_none() {
        // The tracer's kill for a signal the worker, init of its PID namespace, would have
        // survived (see `tracer::seize`): it died of that signal.
        let ended = evidence.facts.and_then(|f| f.signal);
        if let Some(stop) = ended.filter(|stop| stop.ended_by_tracer) {
            signal = stop.signo;
        }
    }
    if signal == libc::SIGKILL {
        match evidence.killed {
            Some(Kill::Deadline) => return Ok((Outcome::Timeout, None)),
            Some(Kill::CpuTime) => return Ok((Outcome::CpuTimeLimit, None)),
            Some(Kill::Cancelled) => return Ok((Outcome::Cancelled, None)),
            _ => {}
        }
        let cpu = evidence.cpu;
        let margin = Duration::from_millis(100);
        if evidence.cpu_time.is_some_and(|limit| cpu + margin >= limit) {
            return Ok((Outcome::CpuTimeLimit, None)); // its RLIMIT_CPU backstop
        }
        if cpu + margin >= Duration::from_secs(evidence.cpu_limit_secs) {
            return Ok((Outcome::Timeout, None)); // the RLIMIT_CPU backstop
        }
        if evidence.strict {
            let Some(facts) = evidence.facts else {
                // Untraced: strict mode kills a violation with SIGKILL, and no guest can
                // send one; which call it was is for the diagnosis to find.
                return Ok((Outcome::SyscallViolation, None));
            };
            // Traced: strict mode's kill comes from the syscall entry itself, so the tracer
            // saw the worker's exit in that call, a call strict mode forbids. A SIGKILL sent
            // from outside ends it outside any call, or in one strict mode allows.
            let violation = facts
                .exit
                .filter(|e| e.status == libc::SIGKILL)
                .and_then(|e| strict_violation(&e, code_addr, code));
            if let Some(syscall) = violation {
                return Ok((Outcome::SyscallViolation, Some(syscall)));
            }
            if evidence.oom_killed {
                return Ok((Outcome::MemoryLimit, None));
            }
            return Ok((Outcome::Killed, None));
        }
        if evidence.oom_killed {
            return Ok((Outcome::MemoryLimit, None));
        }
        // A filter traps every violation (SIGSYS): this SIGKILL came from outside bytejail.
        return Ok((Outcome::Killed, None));
    }
    if signal == worker::SETUP_FAILED_SIGNAL && !evidence.guest_may_signal {
        // No guest can raise it: the worker's setup failed before the guest ran.
        return Err(setup_error(record));
    }
    if let Some(facts) = evidence.facts {
        // Traced: the details are the kernel's, from the signal's delivery to the worker
        // (the worker installs no handler of its own then, so that was the last one).
        let stop = facts.signal.filter(|stop| stop.signo == signal);
        if signal == libc::SIGSYS {
            match stop {
                // A filter's trap (strict mode never sends SIGSYS), delivered in the call.
                Some(stop) => match trapped_syscall(&stop, code_addr, code.len())
                    .filter(|sc| job_denies(sc))
                {
                    Some(mut syscall) => {
                        syscall.verified &= !evidence.many_procs;
                        return Ok((Outcome::SyscallViolation, Some(syscall)));
                    }
                    // Not the kernel's trap of a call the job's filters deny: a process of
                    // the job sent it, or a filter of the guest's own trapped the call.
                    None => {
                        return Ok((
                            Outcome::Crashed {
                                signal,
                                fault: None,
                            },
                            None,
                        ))
                    }
                },
                None => {
                    // A filter's kill action (a traced worker's filters kill every violation)
                    // ends the worker with SIGSYS without a signal stop, in the call itself.
                    let syscall = facts
                        .exit
                        .filter(|e| e.status & 0x7f == libc::SIGSYS)
                        .and_then(|e| killed_in_syscall(&e, code_addr, code.len()))
                        .map(|mut sc| {
                            // Another thread's kill ends this one too, in whatever call.
                            sc.verified &= !evidence.many_procs;
                            sc
                        });
                    if syscall.as_ref().is_some_and(|sc| !job_denies(sc)) {
                        if evidence.many_procs {
                            // Another thread's violation took this one down in a call the
                            // job allows: a violation, of a call no stop showed.
                            return Ok((Outcome::SyscallViolation, None));
                        }
                        // A filter of the guest's own killed it, not the job's.
                        return Ok((
                            Outcome::Crashed {
                                signal,
                                fault: None,
                            },
                            None,
                        ));
                    }
                    return Ok((Outcome::SyscallViolation, syscall));
                }
            }
        }
        // The kernel's own signals have a positive `si_code`. No guest can queue one with
        // details of its choosing: strict mode has no call for it, and the walls filter refuses
        // them to profile guests; only another process of the job could send one.
        // A SIGSEGV with `SI_KERNEL` (0x80) is the kernel's too, but may be no instruction's
        // fault: a general protection fault, or a signal frame the kernel could not read or
        // write (a forged `rt_sigreturn` frame with a bad FPU state pointer, say), after which
        // the registers are partly the guest's. Shown, unverified. (`int3`'s SIGTRAP has
        // `SI_KERNEL` too, and is its instruction's.)
        let fault = stop.filter(|stop| stop.code > 0).map(|stop| {
            let mut fault = fault_at(signal, stop.addr, stop.regs.rip, code_addr, code);
            let frame_or_gp = signal == libc::SIGSEGV && stop.code == SI_KERNEL;
            fault.verified = !frame_or_gp && !evidence.many_procs;
            fault
        });
        return Ok((Outcome::Crashed { signal, fault }, None));
    }
    let recorded = record.state == STATE_FAULT && record.fault_signo == signal as u64;
    if signal == libc::SIGSYS {
        // A filter's trap: the worker re-raised it with the default action. Strict mode never
        // sends SIGSYS and no guest can send it, so this is a violation.
        let syscall = recorded.then(|| violating_syscall(record, code_addr, code.len()));
        return Ok((Outcome::SyscallViolation, syscall));
    }
    let fault =
        recorded.then(|| fault_at(signal, record.fault_addr, record.fault_rip, code_addr, code));
    Ok((Outcome::Crashed { signal, fault }, None))
}

/// Whether the job's own filter traps or kills `syscall` (as the kernel saw its arguments): a
/// guest may install a filter of its own on top, whose trap or kill of a call the job allows
/// is no violation of the job's policy. Decided by bytejail's interpreter of the program, which
/// `tests/policy_libseccomp.rs` checks against the kernel.
pub(super) fn job_denies(policy: &Policy, syscall: &ViolatingSyscall) -> bool {
    let Some(filter) = policy.filter() else {
        return true; // strict mode: no filter, and no call to install one
    };
    let arch = match syscall.abi {
        Abi::I386 => crate::policy::AUDIT_ARCH_I386,
        Abi::X86_64 | Abi::X32 => crate::policy::AUDIT_ARCH_X86_64,
    };
    let args = syscall.args.unwrap_or_default();
    match filter.evaluate(arch, syscall.nr, args) {
        // SECCOMP_RET_KILL_THREAD (0), SECCOMP_RET_TRAP, SECCOMP_RET_KILL_PROCESS.
        Some(action) => matches!(action & 0xffff_0000, 0 | 0x0003_0000 | 0x8000_0000),
        None => true,
    }
}

/// `si_code` of a signal the kernel sends on its own account (not an instruction's fault).
const SI_KERNEL: i32 = 0x80;

/// A fault at data address `addr` with the instruction pointer `rip` the kernel saved,
/// unverified until the caller says otherwise.
fn fault_at(signal: i32, addr: u64, rip: u64, code_addr: u64, code: &[u8]) -> Fault {
    let code_offset = rip
        .checked_sub(code_addr)
        .map(|off| faulting_offset(signal, code, off))
        .filter(|off| *off < code.len() as u64);
    Fault {
        address: addr,
        code_offset,
        instruction: code_offset.and_then(|off| crate::disasm::instruction_at(code, off as usize)),
        verified: false,
    }
}

/// The ABI of a call, from the kernel's `AUDIT_ARCH_*` and the number's x32 bit.
fn abi_of(arch: u32, nr: u32) -> Abi {
    match arch {
        crate::policy::AUDIT_ARCH_I386 => Abi::I386,
        _ if nr & crate::policy::X32_SYSCALL_BIT != 0 => Abi::X32,
        _ => Abi::X86_64,
    }
}

/// The six argument registers of a call through `abi`, as the kernel reads them.
fn syscall_args(abi: Abi, regs: &crate::tracer::Regs) -> [u64; 6] {
    match abi {
        Abi::I386 => {
            [regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp].map(|r| r & 0xffff_ffff)
        }
        _ => [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9],
    }
}

/// The call a strict-mode worker was killed in, from its exit stop: `orig_rax` holds the
/// number, the argument registers are as the call left them, `rip` is just past the
/// instruction. `None` for the calls strict mode allows (no violation could be in them).
fn strict_violation(
    exit: &crate::tracer::ExitStop,
    code_addr: u64,
    code: &[u8],
) -> Option<ViolatingSyscall> {
    // The kernel takes the number from the low 32 bits of `orig_rax`; -1 is also what a
    // worker outside any call shows, so that one counts only just after a syscall instruction.
    let nr = exit.regs.orig_rax as u32;
    if exit.regs.orig_rax == u64::MAX && !after_syscall_instruction(exit.regs.rip, code_addr, code)
    {
        return None;
    }
    let allowed: &[u32] = match abi_of(exit.arch, nr) {
        Abi::I386 => &[1, 3, 4, 119],
        Abi::X32 => &[],
        Abi::X86_64 => &[0, 1, 15, 60],
    };
    if allowed.contains(&nr) {
        return None;
    }
    killed_in_syscall(exit, code_addr, code.len())
}

/// Whether the two bytes before `rip` are `syscall` (0f 05) or `int 0x80` (cd 80) in the code.
fn after_syscall_instruction(rip: u64, code_addr: u64, code: &[u8]) -> bool {
    rip.checked_sub(code_addr + 2)
        .and_then(|at| usize::try_from(at).ok())
        .and_then(|at| code.get(at..at + 2))
        .is_some_and(|insn| insn == [0x0f, 0x05] || insn == [0xcd, 0x80])
}

/// The call a worker was killed in by seccomp itself (strict mode's kill, a filter's kill
/// action), from its exit stop.
fn killed_in_syscall(
    exit: &crate::tracer::ExitStop,
    code_addr: u64,
    code_len: usize,
) -> Option<ViolatingSyscall> {
    let nr = exit.regs.orig_rax as u32;
    let abi = abi_of(exit.arch, nr);
    // `syscall` and `int 0x80` are 2 bytes.
    let code_offset = exit
        .regs
        .rip
        .checked_sub(code_addr + 2)
        .filter(|off| *off < code_len as u64);
    Some(ViolatingSyscall {
        nr,
        name: crate::syscalls::name(abi, nr),
        abi,
        code_offset,
        args: Some(syscall_args(abi, &exit.regs)),
        verified: true,
    })
}

/// The call a filter trapped, from the SIGSYS at its delivery: the kernel's trap of that very
/// call has `si_code` SYS_SECCOMP and the worker in the call `si_syscall` names (`orig_rax`);
/// anything else is a signal a process sent (`None`). A guest that queued itself a SIGSYS
/// was in the queueing call then, so it can only name that call: a trap of a signal-sending
/// call is reported unverified.
fn trapped_syscall(
    stop: &crate::tracer::SignalStop,
    code_addr: u64,
    code_len: usize,
) -> Option<ViolatingSyscall> {
    const SYS_SECCOMP: i32 = 1;
    let nr = stop.syscall as u32;
    // The kernel takes the number from the low 32 bits of `orig_rax`.
    if stop.code != SYS_SECCOMP || stop.regs.orig_rax as u32 != nr {
        return None;
    }
    let abi = abi_of(stop.arch, nr);
    let sends_signals: &[u32] = match abi {
        Abi::I386 => &[37, 178, 238, 270, 335, 424],
        _ => &[62, 129, 200, 234, 297, 424],
    };
    let plain = nr & !crate::policy::X32_SYSCALL_BIT;
    let verified = !sends_signals.contains(&plain);
    let code_offset = stop
        .addr
        .checked_sub(code_addr + 2)
        .filter(|off| *off < code_len as u64);
    Some(ViolatingSyscall {
        nr,
        name: crate::syscalls::name(abi, nr),
        abi,
        code_offset,
        args: Some(syscall_args(abi, &stop.regs)),
        verified,
    })
}

/// Why a worker's setup failed, from the stage and errno it recorded (if it got that far).
pub(super) fn setup_error(record: &Record) -> Error {
    let (stage, errno) = if record.state == STATE_SETUP_FAILED {
        let stage = worker::STAGES.get(record.stage as usize).copied();
        (stage.unwrap_or("worker setup"), record.errno as i32)
    } else {
        ("worker setup", 0)
    };
    let source = if errno > 0 {
        std::io::Error::from_raw_os_error(errno)
    } else {
        std::io::Error::other("the worker died before it could say why")
    };
    Error::io(stage, source)
}

/// Which syscall a filter trapped, from the SIGSYS siginfo the handler recorded. The record is
/// the worker's claim, so only what the kernel could have said is believed: an ABI from the
/// reported arch, an offset only inside the code.
fn violating_syscall(record: &Record, code_addr: u64, code_len: usize) -> ViolatingSyscall {
    let nr = record.fault_sysnr as u32;
    let abi = match record.fault_arch as u32 {
        crate::policy::AUDIT_ARCH_I386 => Abi::I386,
        _ if nr & crate::policy::X32_SYSCALL_BIT != 0 => Abi::X32,
        _ => Abi::X86_64,
    };
    // si_call_addr is the address after the instruction; `syscall` and `int 0x80` are 2 bytes.
    let code_offset = record
        .fault_addr
        .checked_sub(code_addr + 2)
        .filter(|off| *off < code_len as u64);
    ViolatingSyscall {
        nr,
        name: crate::syscalls::name(abi, nr),
        abi,
        code_offset,
        args: None,
        verified: false,
    }
}

/// The offset of the instruction that raised `signal`, given the `rip` the kernel saved.
/// Faults save the faulting instruction's address; `int3` (`cc`) and `int 3` (`cd 03`) are
/// traps that save the address after it.
fn faulting_offset(signal: i32, code: &[u8], rip_offset: u64) -> u64 {
    if signal != libc::SIGTRAP {
        return rip_offset;
    }
    let at = |back: u64| {
        rip_offset
            .checked_sub(back)
            .and_then(|i| code.get(i as usize..rip_offset as usize))
    };
    if at(1) == Some(&[0xcc][..]) {
        rip_offset - 1
    } else if at(2) == Some(&[0xcd, 0x03][..]) {
        rip_offset - 2
    } else {
        rip_offset
    }
}
