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
use crate::tracer::Facts;
use crate::worker::{self, layout::*};

/// Why the host killed a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kill {
    /// The job's wall-clock deadline passed.
    Deadline,
    /// The output passed its limit.
    OutputLimit,
    /// The job used up its CPU time.
    CpuTime,
    /// The job's `Cancel` handle was cancelled.
    Cancelled,
}

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
    if signal == libc::SIGKILL
        && evidence.killed.is_none()
        && evidence.facts.is_some_and(|f| f.lost)
    {
        // The tracer process ended, and `PTRACE_O_EXITKILL` killed the worker: whatever the
        // guest did then (a fault, a violation) is unknown, and no outcome would be true.
        return Err(Error::io(
            "tracing the worker",
            std::io::Error::other(
                "the tracer process ended while it traced the worker, which died with it",
            ),
        ));
    }
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

/// Every wait status and every kill reason, with the outcome the docs give for it
/// (`README.md` "Outcomes and exit status", `docs/how-it-works.md` "Classification",
/// `docs/security.md` "Reports a guest cannot forge"). The expectations are written from those
/// words: a test fails if the decision moves away from them.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::{ExitStop, Regs, SignalStop};

    /// Where the code is mapped in these cases, and the code: `syscall` at 0, `int3` at 2,
    /// `int 0x80` at 3, `int 3` at 5, `nop` at 7.
    const CODE_ADDR: u64 = 0x7000_0000;
    const CODE: [u8; 8] = [0x0f, 0x05, 0xcc, 0xcd, 0x80, 0xcd, 0x03, 0x90];
    const SYS_SECCOMP: i32 = 1;
    /// `si_code` of a signal a process sent with `kill` (`SI_USER`).
    const SI_USER: i32 = 0;

    fn regs() -> Regs {
        Regs {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            rbp: 0,
            rbx: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rax: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            orig_rax: u64::MAX,
            rip: 0,
            cs: 0,
            eflags: 0,
            rsp: 0,
            ss: 0,
            fs_base: 0,
            gs_base: 0,
            ds: 0,
            es: 0,
            fs: 0,
            gs: 0,
        }
    }

    fn empty_record() -> Record {
        Record {
            state: 0,
            gpr: [0; 16],
            rflags: 0,
            stage: 0,
            errno: 0,
            fault_signo: 0,
            fault_addr: 0,
            fault_rip: 0,
            fault_sysnr: 0,
            fault_arch: 0,
        }
    }

    /// One case: everything [`Evidence`] holds, owned.
    struct Case {
        status: WaitStatus,
        cpu: Duration,
        killed: Option<Kill>,
        truncated: bool,
        strict: bool,
        cpu_time: Option<Duration>,
        cpu_limit_secs: u64,
        guest_may_signal: bool,
        oom_killed: bool,
        many_procs: bool,
        facts: Option<Facts>,
        record: Record,
        /// What the job's filter says of every call.
        denies: bool,
    }

    impl Case {
        /// A strict-mode worker, untraced, that used little CPU, with a 10 s backstop.
        fn strict(status: WaitStatus) -> Case {
            Case {
                status,
                cpu: Duration::from_millis(1),
                killed: None,
                truncated: false,
                strict: true,
                cpu_time: None,
                cpu_limit_secs: 10,
                guest_may_signal: false,
                oom_killed: false,
                many_procs: false,
                facts: None,
                record: empty_record(),
                denies: true,
            }
        }

        /// A `strict-bpf` worker: a filter, and still no call to raise a signal.
        fn filter(status: WaitStatus) -> Case {
            Case {
                strict: false,
                ..Case::strict(status)
            }
        }

        /// A worker under a profile, whose guest may signal itself.
        fn profile(status: WaitStatus) -> Case {
            Case {
                strict: false,
                guest_may_signal: true,
                ..Case::strict(status)
            }
        }

        fn traced(mut self, facts: Facts) -> Case {
            self.facts = Some(facts);
            self
        }

        fn classify(&self) -> Result<(Outcome, Option<ViolatingSyscall>), Error> {
            let denies = self.denies;
            classify(&Evidence {
                status: self.status,
                cpu: self.cpu,
                killed: self.killed,
                truncated: self.truncated,
                strict: self.strict,
                cpu_time: self.cpu_time,
                cpu_limit_secs: self.cpu_limit_secs,
                guest_may_signal: self.guest_may_signal,
                oom_killed: self.oom_killed,
                many_procs: self.many_procs,
                facts: self.facts.as_ref(),
                record: &self.record,
                code_addr: CODE_ADDR,
                code: &CODE,
                job_denies: &move |_| denies,
            })
        }

        fn outcome(&self) -> Outcome {
            self.classify().expect("an outcome, not a runner error").0
        }

        fn syscall(&self) -> Option<ViolatingSyscall> {
            self.classify().expect("an outcome, not a runner error").1
        }
    }

    fn signaled(signal: i32) -> WaitStatus {
        WaitStatus::Signaled {
            signal,
            core: false,
        }
    }

    fn crashed(signal: i32, fault: Option<Fault>) -> Outcome {
        Outcome::Crashed { signal, fault }
    }

    /// The worker's exit in a call: number `nr` through `arch`, `rip` just past the
    /// instruction at `at` in the code, arguments 1..=6 (with high bits set, to see what the
    /// i386 entry keeps).
    fn exit_in(status: i32, arch: u32, nr: u64, at: u64) -> Facts {
        let mut regs = regs();
        regs.orig_rax = nr;
        regs.rip = CODE_ADDR + at + 2;
        let high = 0xdead_0000_0000;
        regs.rdi = high | 1;
        regs.rsi = high | 2;
        regs.rdx = high | 3;
        regs.r10 = high | 4;
        regs.r8 = high | 5;
        regs.r9 = high | 6;
        regs.rbx = high | 11;
        regs.rcx = high | 12;
        regs.rbp = high | 16;
        Facts {
            exit: Some(ExitStop { status, regs, arch }),
            ..Facts::default()
        }
    }

    /// A signal at its delivery: `code` is its `si_code`, `addr` its `si_addr` (or, SIGSYS,
    /// `si_call_addr`), `rip` the saved instruction pointer.
    fn signal_at(signo: i32, code: i32, addr: u64, rip: u64) -> SignalStop {
        let mut regs = regs();
        regs.rip = rip;
        SignalStop {
            signo,
            code,
            addr,
            syscall: 0,
            arch: 0,
            regs,
            ended_by_tracer: false,
        }
    }

    fn delivered(stop: SignalStop) -> Facts {
        Facts {
            signal: Some(stop),
            ..Facts::default()
        }
    }

    /// A filter's trap of call `nr` (x86_64) made by the `syscall` at offset 0.
    fn trap(nr: i32) -> SignalStop {
        let mut stop = signal_at(libc::SIGSYS, SYS_SECCOMP, CODE_ADDR + 2, CODE_ADDR + 2);
        stop.syscall = nr;
        stop.arch = crate::policy::AUDIT_ARCH_X86_64;
        stop.regs.orig_rax = nr as u64;
        stop
    }

    fn record_fault(signo: i32, addr: u64, rip: u64) -> Record {
        Record {
            state: STATE_FAULT,
            fault_signo: signo as u64,
            fault_addr: addr,
            fault_rip: rip,
            ..empty_record()
        }
    }

    // ---- How the kernel reports an end ----

    #[test]
    fn wait_status_decodes_every_kind() {
        assert_eq!(WaitStatus::from_raw(0), WaitStatus::Exited(0));
        assert_eq!(WaitStatus::from_raw(3 << 8), WaitStatus::Exited(3));
        assert_eq!(WaitStatus::from_raw(255 << 8), WaitStatus::Exited(255));
        assert_eq!(WaitStatus::from_raw(libc::SIGKILL), signaled(libc::SIGKILL));
        // 0x80: the core-dumped bit.
        assert_eq!(
            WaitStatus::from_raw(0x80 | libc::SIGSEGV),
            WaitStatus::Signaled {
                signal: libc::SIGSEGV,
                core: true
            }
        );
        // Stopped (0x7f in the low byte) and continued (0xffff) are no end.
        let stopped = (libc::SIGSTOP << 8) | 0x7f;
        assert_eq!(WaitStatus::from_raw(stopped), WaitStatus::Other(stopped));
        assert_eq!(WaitStatus::from_raw(0xffff), WaitStatus::Other(0xffff));
    }

    #[test]
    fn a_status_that_is_no_end_is_a_runner_error() {
        let case = Case::strict(WaitStatus::Other(0x137f));
        assert!(matches!(
            case.classify(),
            Err(Error::Runner {
                what: "reaping the worker",
                ..
            })
        ));
    }

    // ---- Exits ----

    #[test]
    fn exit_0_with_a_return_recorded_is_returned_with_the_recorded_registers() {
        let mut case = Case::strict(WaitStatus::Exited(0));
        case.record.state = STATE_RETURNED;
        case.record.gpr[0] = 42; // rax
        case.record.gpr[15] = 7;
        case.record.rflags = 0x246;
        let mut gpr = [0; 16];
        gpr[0] = 42;
        gpr[15] = 7;
        let expected = Outcome::Returned(Registers::from_array(gpr, 0x246));
        assert_eq!(case.classify().unwrap(), (expected, None));
    }

    #[test]
    fn exit_0_without_a_return_recorded_is_exited_0() {
        assert_eq!(
            Case::strict(WaitStatus::Exited(0)).outcome(),
            Outcome::Exited(0)
        );
        // A fault or a setup failure recorded is no return either.
        let mut case = Case::strict(WaitStatus::Exited(0));
        case.record = record_fault(libc::SIGSEGV, 0, 0);
        assert_eq!(case.outcome(), Outcome::Exited(0));
    }

    #[test]
    fn exit_n_is_exited_n_whatever_the_record_says() {
        for code in [1, 3, 60, 127, 255] {
            let mut case = Case::strict(WaitStatus::Exited(code));
            case.record.state = STATE_RETURNED;
            assert_eq!(case.outcome(), Outcome::Exited(code), "exit {code}");
            assert_eq!(case.syscall(), None);
        }
        // Under a profile too: a setup failure (exit 127) is decided before, from the kernel's
        // seccomp mode, not here.
        let case = Case::profile(WaitStatus::Exited(127));
        assert_eq!(case.outcome(), Outcome::Exited(127));
    }

    #[test]
    fn an_exit_wins_over_a_kill_that_came_too_late() {
        // The host sent SIGKILL at the deadline, but the worker had exited already.
        for why in [Kill::Deadline, Kill::CpuTime, Kill::Cancelled] {
            let mut case = Case::strict(WaitStatus::Exited(5));
            case.killed = Some(why);
            assert_eq!(case.outcome(), Outcome::Exited(5));
        }
    }

    // ---- The host's kills ----

    #[test]
    fn sigkill_for_each_kill_reason() {
        let expected = [
            (Kill::Deadline, Outcome::Timeout),
            (Kill::OutputLimit, Outcome::OutputLimit),
            (Kill::CpuTime, Outcome::CpuTimeLimit),
            (Kill::Cancelled, Outcome::Cancelled),
        ];
        for (why, outcome) in expected {
            for mut case in [
                Case::strict(signaled(libc::SIGKILL)),
                Case::filter(signaled(libc::SIGKILL)),
                Case::profile(signaled(libc::SIGKILL)),
            ] {
                case.killed = Some(why);
                // Even a traced exit in a forbidden call does not make the host's kill a
                // violation.
                case.facts = Some(exit_in(
                    libc::SIGKILL,
                    crate::policy::AUDIT_ARCH_X86_64,
                    39,
                    0,
                ));
                assert_eq!(case.classify().unwrap(), (outcome.clone(), None));
            }
        }
    }

    #[test]
    fn output_past_the_limit_is_output_limit_whatever_the_end() {
        for status in [
            WaitStatus::Exited(0),
            WaitStatus::Exited(1),
            signaled(libc::SIGKILL),
            signaled(libc::SIGSEGV),
            signaled(libc::SIGSYS),
        ] {
            let mut case = Case::strict(status);
            case.record.state = STATE_RETURNED;
            case.truncated = true;
            assert_eq!(case.outcome(), Outcome::OutputLimit, "{status:?}");
        }
    }

    #[test]
    fn a_kill_reason_does_not_explain_another_signal() {
        let mut case = Case::strict(signaled(libc::SIGSEGV));
        case.killed = Some(Kill::Deadline);
        assert_eq!(case.outcome(), crashed(libc::SIGSEGV, None));
    }

    // ---- SIGKILL the host did not send ----

    #[test]
    fn untraced_strict_sigkill_is_a_violation_of_an_unknown_call() {
        let case = Case::strict(signaled(libc::SIGKILL));
        assert_eq!(case.classify().unwrap(), (Outcome::SyscallViolation, None));
    }

    #[test]
    fn sigkill_at_the_cpu_backstop_is_a_timeout_or_the_cpu_limit() {
        // The RLIMIT_CPU backstop (10 s here): the CPU time used, within 100 ms of it.
        let mut case = Case::strict(signaled(libc::SIGKILL));
        case.cpu = Duration::from_millis(9_950);
        assert_eq!(case.outcome(), Outcome::Timeout);
        case.cpu = Duration::from_millis(9_850);
        assert_eq!(case.outcome(), Outcome::SyscallViolation);
        // With a CPU limit, its backstop: the CPU limit.
        let mut case = Case::filter(signaled(libc::SIGKILL));
        case.cpu_time = Some(Duration::from_secs(2));
        case.cpu = Duration::from_millis(1_950);
        assert_eq!(case.outcome(), Outcome::CpuTimeLimit);
        case.cpu = Duration::from_millis(1_800);
        assert_eq!(case.outcome(), Outcome::Killed);
    }

    #[test]
    fn traced_strict_sigkill_in_a_forbidden_call_is_that_call_verified() {
        let facts = exit_in(libc::SIGKILL, crate::policy::AUDIT_ARCH_X86_64, 39, 0);
        let case = Case::strict(signaled(libc::SIGKILL)).traced(facts);
        let (outcome, syscall) = case.classify().unwrap();
        assert_eq!(outcome, Outcome::SyscallViolation);
        let syscall = syscall.expect("the call the exit stop shows");
        assert_eq!(syscall.nr, 39);
        assert_eq!(syscall.name, Some("getpid"));
        assert_eq!(syscall.abi, Abi::X86_64);
        assert_eq!(syscall.code_offset, Some(0));
        let high = 0xdead_0000_0000;
        assert_eq!(
            syscall.args,
            Some([1, 2, 3, 4, 5, 6].map(|r: u64| high | r))
        );
        assert!(syscall.verified);
    }

    #[test]
    fn traced_strict_sigkill_through_int_0x80_and_x32() {
        // i386: getpid is 20; the arguments are ebx, ecx, edx, esi, edi, ebp, on 32 bits.
        let i386 = crate::policy::AUDIT_ARCH_I386;
        let case =
            Case::strict(signaled(libc::SIGKILL)).traced(exit_in(libc::SIGKILL, i386, 20, 3));
        let syscall = case.syscall().expect("a violation through int 0x80");
        assert_eq!(syscall.abi, Abi::I386);
        assert_eq!((syscall.nr, syscall.name), (20, Some("getpid")));
        assert_eq!(syscall.code_offset, Some(3));
        assert_eq!(syscall.args, Some([11, 12, 3, 2, 1, 16]));
        // x32: strict mode allows none of its numbers, not even read.
        let x32 = crate::policy::X32_SYSCALL_BIT as u64;
        let facts = exit_in(libc::SIGKILL, crate::policy::AUDIT_ARCH_X86_64, x32, 0);
        let case = Case::strict(signaled(libc::SIGKILL)).traced(facts);
        let syscall = case.syscall().expect("a violation through x32");
        assert_eq!((syscall.abi, syscall.nr), (Abi::X32, x32 as u32));
    }

    #[test]
    fn traced_strict_sigkill_in_an_allowed_call_or_outside_any_is_killed() {
        let x86_64 = crate::policy::AUDIT_ARCH_X86_64;
        let i386 = crate::policy::AUDIT_ARCH_I386;
        let allowed = [
            (x86_64, 0),
            (x86_64, 1),
            (x86_64, 15),
            (x86_64, 60),
            (i386, 1),
            (i386, 3),
            (i386, 4),
            (i386, 119),
        ];
        for (arch, nr) in allowed {
            let case =
                Case::strict(signaled(libc::SIGKILL)).traced(exit_in(libc::SIGKILL, arch, nr, 0));
            assert_eq!(case.classify().unwrap(), (Outcome::Killed, None), "{nr}");
        }
        // Outside any call: orig_rax is -1 and rip is not after a syscall instruction.
        let mut facts = exit_in(libc::SIGKILL, x86_64, u64::MAX, 0);
        facts.exit.as_mut().unwrap().regs.rip = CODE_ADDR + 8;
        let case = Case::strict(signaled(libc::SIGKILL)).traced(facts);
        assert_eq!(case.outcome(), Outcome::Killed);
        // -1 just after a `syscall`: a call the kernel read as number 0xffffffff.
        let facts = exit_in(libc::SIGKILL, x86_64, u64::MAX, 0);
        let case = Case::strict(signaled(libc::SIGKILL)).traced(facts);
        assert_eq!(case.syscall().map(|sc| sc.nr), Some(u32::MAX));
        // An exit stop that is not a SIGKILL's tells nothing of the kill.
        let facts = exit_in(libc::SIGSEGV, x86_64, 39, 0);
        let case = Case::strict(signaled(libc::SIGKILL)).traced(facts);
        assert_eq!(case.outcome(), Outcome::Killed);
    }

    #[test]
    fn a_worker_that_died_with_its_tracer_has_no_outcome() {
        let lost = Facts {
            lost: true,
            ..Facts::default()
        };
        for case in [Case::strict, Case::profile] {
            // The twin: the same SIGKILL with the tracer alive is an outside kill.
            let alive = case(signaled(libc::SIGKILL)).traced(Facts::default());
            assert_eq!(alive.outcome(), Outcome::Killed);
            let error = case(signaled(libc::SIGKILL)).traced(lost).classify();
            assert!(
                matches!(error, Err(Error::Runner { .. })),
                "a report of a worker whose tracer died: {error:?}"
            );
            // The host's own kill still says why it killed.
            let mut deadline = case(signaled(libc::SIGKILL)).traced(lost);
            deadline.killed = Some(Kill::Deadline);
            assert_eq!(deadline.outcome(), Outcome::Timeout);
        }
    }

    #[test]
    fn sigkill_from_the_oom_killer_is_the_memory_limit() {
        let mut traced = Case::strict(signaled(libc::SIGKILL)).traced(Facts::default());
        traced.oom_killed = true;
        assert_eq!(traced.outcome(), Outcome::MemoryLimit);
        let mut profile = Case::profile(signaled(libc::SIGKILL));
        profile.oom_killed = true;
        assert_eq!(profile.outcome(), Outcome::MemoryLimit);
    }

    #[test]
    fn unexplained_sigkill_under_a_filter_is_killed_never_a_violation() {
        for mut case in [
            Case::filter(signaled(libc::SIGKILL)),
            Case::profile(signaled(libc::SIGKILL)),
        ] {
            assert_eq!(case.classify().unwrap(), (Outcome::Killed, None));
            case.facts = Some(exit_in(
                libc::SIGKILL,
                crate::policy::AUDIT_ARCH_X86_64,
                39,
                0,
            ));
            assert_eq!(case.classify().unwrap(), (Outcome::Killed, None));
        }
    }

    #[test]
    fn sigkill_from_the_tracer_for_init_is_the_signal_it_died_of() {
        // A profile worker is init of its PID namespace: its tracer ends it with SIGKILL at the
        // delivery of a signal the kernel raised, and the report names that signal.
        let mut stop = signal_at(libc::SIGSEGV, 1, 0x10, CODE_ADDR + 7);
        stop.ended_by_tracer = true;
        let case = Case::profile(signaled(libc::SIGKILL)).traced(delivered(stop));
        let fault = Fault {
            address: 0x10,
            code_offset: Some(7),
            instruction: crate::disasm::instruction_at(&CODE, 7),
            verified: true,
        };
        assert_eq!(case.outcome(), crashed(libc::SIGSEGV, Some(fault)));
        // Not when the host killed it: then the host's reason counts.
        let mut case = Case::profile(signaled(libc::SIGKILL)).traced(delivered(stop));
        case.killed = Some(Kill::Deadline);
        assert_eq!(case.outcome(), Outcome::Timeout);
    }

    // ---- Setup failures ----

    #[test]
    fn the_setup_failed_signal_is_a_runner_error_where_no_guest_can_raise_it() {
        let signal = worker::SETUP_FAILED_SIGNAL;
        for mut case in [
            Case::strict(signaled(signal)),
            Case::filter(signaled(signal)),
        ] {
            case.record.state = STATE_SETUP_FAILED;
            case.record.stage = 1;
            case.record.errno = libc::EPERM as u64;
            match case.classify() {
                Err(Error::Runner { what, source }) => {
                    assert_eq!(what, worker::STAGES[1]);
                    assert_eq!(source.raw_os_error(), Some(libc::EPERM));
                }
                other => panic!("expected a setup error, got {other:?}"),
            }
        }
        // Without a record: the worker died before it could say why.
        let case = Case::strict(signaled(signal));
        assert!(matches!(
            case.classify(),
            Err(Error::Runner {
                what: "worker setup",
                ..
            })
        ));
        // Under a profile the guest may raise it itself: a crash.
        let case = Case::profile(signaled(signal));
        assert_eq!(case.outcome(), crashed(signal, None));
    }

    // ---- Faults, untraced: the record adds details, unverified ----

    #[test]
    fn untraced_faults_take_details_from_a_record_of_the_same_signal() {
        for signal in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGTRAP,
        ] {
            let mut case = Case::strict(signaled(signal));
            assert_eq!(case.outcome(), crashed(signal, None), "no record");
            case.record = record_fault(signal, 0xbad, CODE_ADDR);
            let fault = Fault {
                address: 0xbad,
                code_offset: Some(0),
                instruction: crate::disasm::instruction_at(&CODE, 0),
                verified: false,
            };
            assert_eq!(case.outcome(), crashed(signal, Some(fault)), "{signal}");
            // A record of another signal is not this crash's.
            let other = if signal == libc::SIGSEGV {
                libc::SIGBUS
            } else {
                libc::SIGSEGV
            };
            case.record = record_fault(other, 0xbad, CODE_ADDR);
            assert_eq!(case.outcome(), crashed(signal, None));
        }
    }

    #[test]
    fn a_fault_outside_the_code_has_no_offset() {
        let mut case = Case::strict(signaled(libc::SIGSEGV));
        case.record = record_fault(libc::SIGSEGV, 0, CODE_ADDR + 100);
        let Outcome::Crashed {
            fault: Some(fault), ..
        } = case.outcome()
        else {
            panic!("a crash with a fault");
        };
        assert_eq!((fault.code_offset, fault.instruction), (None, None));
        case.record = record_fault(libc::SIGSEGV, 0, CODE_ADDR - 1);
        let Outcome::Crashed {
            fault: Some(fault), ..
        } = case.outcome()
        else {
            panic!("a crash with a fault");
        };
        assert_eq!(fault.code_offset, None);
    }

    #[test]
    fn a_breakpoint_trap_points_at_its_instruction() {
        // `int3` and `int 3` save the address after them.
        for (after, at) in [(3, 2), (7, 5)] {
            let mut case = Case::strict(signaled(libc::SIGTRAP));
            case.record = record_fault(libc::SIGTRAP, 0, CODE_ADDR + after);
            let Outcome::Crashed {
                fault: Some(fault), ..
            } = case.outcome()
            else {
                panic!("a crash with a fault");
            };
            assert_eq!(fault.code_offset, Some(at));
        }
    }

    #[test]
    fn the_core_dumped_bit_changes_nothing() {
        for signal in [libc::SIGSEGV, libc::SIGILL, libc::SIGKILL, libc::SIGSYS] {
            let plain = Case::strict(signaled(signal)).classify().unwrap();
            let cored = Case::strict(WaitStatus::Signaled { signal, core: true })
                .classify()
                .unwrap();
            assert_eq!(plain, cored, "{signal}");
        }
    }

    #[test]
    fn resource_limit_signals_are_crashes() {
        // SIGXCPU (RLIMIT_CPU's soft limit) and SIGXFSZ (past --max-file-size) are signals
        // that killed the worker: crashes, with no fault to show.
        for signal in [libc::SIGXCPU, libc::SIGXFSZ] {
            for case in [
                Case::strict(signaled(signal)),
                Case::filter(signaled(signal)),
                Case::profile(signaled(signal)),
            ] {
                assert_eq!(case.classify().unwrap(), (crashed(signal, None), None));
            }
            let traced = Case::profile(signaled(signal)).traced(Facts::default());
            assert_eq!(traced.outcome(), crashed(signal, None));
        }
    }

    // ---- SIGSYS: a filter's violation ----

    #[test]
    fn untraced_sigsys_is_a_violation_with_the_recorded_call_unverified() {
        let case = Case::filter(signaled(libc::SIGSYS));
        assert_eq!(case.classify().unwrap(), (Outcome::SyscallViolation, None));
        let mut case = Case::filter(signaled(libc::SIGSYS));
        case.record = Record {
            fault_sysnr: 39,
            fault_arch: crate::policy::AUDIT_ARCH_X86_64 as u64,
            ..record_fault(libc::SIGSYS, CODE_ADDR + 2, 0)
        };
        let syscall = case.syscall().expect("the recorded call");
        assert_eq!((syscall.nr, syscall.name), (39, Some("getpid")));
        assert_eq!(syscall.code_offset, Some(0));
        assert_eq!(syscall.args, None);
        assert!(!syscall.verified);
        // Through int 0x80, by the recorded arch.
        case.record.fault_arch = crate::policy::AUDIT_ARCH_I386 as u64;
        case.record.fault_sysnr = 20;
        case.record.fault_addr = CODE_ADDR + 5;
        let syscall = case.syscall().unwrap();
        assert_eq!((syscall.abi, syscall.code_offset), (Abi::I386, Some(3)));
    }

    #[test]
    fn traced_sigsys_trap_of_a_denied_call_is_that_call_verified() {
        let case = Case::filter(signaled(libc::SIGSYS)).traced(delivered(trap(39)));
        let (outcome, syscall) = case.classify().unwrap();
        assert_eq!(outcome, Outcome::SyscallViolation);
        let syscall = syscall.unwrap();
        assert_eq!((syscall.nr, syscall.code_offset), (39, Some(0)));
        assert!(syscall.verified);
        // With more than one process another could have been the one: unverified.
        let mut case = Case::profile(signaled(libc::SIGSYS)).traced(delivered(trap(39)));
        case.many_procs = true;
        assert!(!case.syscall().unwrap().verified);
        // A trap of a call that sends signals could be one the guest queued itself.
        let case = Case::filter(signaled(libc::SIGSYS)).traced(delivered(trap(62)));
        assert!(!case.syscall().unwrap().verified);
    }

    #[test]
    fn traced_sigsys_the_job_does_not_deny_or_a_process_sent_is_a_crash() {
        // A filter of the guest's own trapped a call the job allows.
        let mut case = Case::profile(signaled(libc::SIGSYS)).traced(delivered(trap(39)));
        case.denies = false;
        assert_eq!(
            case.classify().unwrap(),
            (crashed(libc::SIGSYS, None), None)
        );
        // A SIGSYS sent with kill: not SYS_SECCOMP.
        let mut sent = trap(39);
        sent.code = SI_USER;
        let case = Case::profile(signaled(libc::SIGSYS)).traced(delivered(sent));
        assert_eq!(case.outcome(), crashed(libc::SIGSYS, None));
        // A trap whose si_syscall is not the call the worker is in.
        let mut other = trap(39);
        other.regs.orig_rax = 40;
        let case = Case::profile(signaled(libc::SIGSYS)).traced(delivered(other));
        assert_eq!(case.outcome(), crashed(libc::SIGSYS, None));
    }

    #[test]
    fn traced_sigsys_kill_without_a_signal_stop() {
        // A filter's kill action: the exit stop in the call, no signal stop.
        let x86_64 = crate::policy::AUDIT_ARCH_X86_64;
        let case =
            Case::filter(signaled(libc::SIGSYS)).traced(exit_in(libc::SIGSYS, x86_64, 39, 0));
        let syscall = case.syscall().expect("the call of the exit stop");
        assert_eq!(syscall.nr, 39);
        assert!(syscall.verified);
        // No exit stop to read: a violation of an unknown call.
        let case = Case::filter(signaled(libc::SIGSYS)).traced(Facts::default());
        assert_eq!(case.classify().unwrap(), (Outcome::SyscallViolation, None));
        // A call the job allows: a filter of the guest's own killed it...
        let mut case =
            Case::profile(signaled(libc::SIGSYS)).traced(exit_in(libc::SIGSYS, x86_64, 39, 0));
        case.denies = false;
        assert_eq!(
            case.classify().unwrap(),
            (crashed(libc::SIGSYS, None), None)
        );
        // ... unless another thread's violation took it down: a violation, call unknown.
        case.many_procs = true;
        assert_eq!(case.classify().unwrap(), (Outcome::SyscallViolation, None));
        // A denied call with many processes: reported, unverified.
        case.denies = true;
        assert!(!case.syscall().unwrap().verified);
    }

    // ---- Faults, traced: the kernel's details ----

    #[test]
    fn traced_fault_the_kernel_raised_is_verified() {
        for signal in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGTRAP,
        ] {
            // SEGV_MAPERR, BUS_ADRALN, ILL_ILLOPC, FPE_INTDIV, TRAP_BRKPT: all 1. At offset 0,
            // which no breakpoint precedes.
            let stop = signal_at(signal, 1, 0x1234, CODE_ADDR);
            let mut case = Case::strict(signaled(signal)).traced(delivered(stop));
            // The record is ignored when traced.
            case.record = record_fault(signal, 0xbad, CODE_ADDR);
            let fault = Fault {
                address: 0x1234,
                code_offset: Some(0),
                instruction: crate::disasm::instruction_at(&CODE, 0),
                verified: true,
            };
            assert_eq!(case.outcome(), crashed(signal, Some(fault)), "{signal}");
        }
    }

    #[test]
    fn traced_fault_details_lose_their_proof_where_they_could_be_sent() {
        // Sent by a process (si_code 0 or below): no details.
        let stop = signal_at(libc::SIGSEGV, SI_USER, 0x1234, CODE_ADDR + 7);
        let case = Case::profile(signaled(libc::SIGSEGV)).traced(delivered(stop));
        assert_eq!(case.outcome(), crashed(libc::SIGSEGV, None));
        // SI_KERNEL SIGSEGV: a general protection fault or a bad signal frame: unverified.
        let stop = signal_at(libc::SIGSEGV, SI_KERNEL, 0, CODE_ADDR + 7);
        let case = Case::strict(signaled(libc::SIGSEGV)).traced(delivered(stop));
        let Outcome::Crashed {
            fault: Some(fault), ..
        } = case.outcome()
        else {
            panic!("a crash with a fault");
        };
        assert!(!fault.verified);
        // int3's SIGTRAP has SI_KERNEL too, and is its instruction's: verified, at the int3.
        let stop = signal_at(libc::SIGTRAP, SI_KERNEL, 0, CODE_ADDR + 3);
        let case = Case::strict(signaled(libc::SIGTRAP)).traced(delivered(stop));
        let Outcome::Crashed {
            fault: Some(fault), ..
        } = case.outcome()
        else {
            panic!("a crash with a fault");
        };
        assert!(fault.verified);
        assert_eq!(fault.code_offset, Some(2));
        // With more than one process: unverified.
        let stop = signal_at(libc::SIGSEGV, 1, 0x1234, CODE_ADDR + 7);
        let mut case = Case::profile(signaled(libc::SIGSEGV)).traced(delivered(stop));
        case.many_procs = true;
        let Outcome::Crashed {
            fault: Some(fault), ..
        } = case.outcome()
        else {
            panic!("a crash with a fault");
        };
        assert!(!fault.verified);
        // A stop of another signal is not this crash's.
        let stop = signal_at(libc::SIGBUS, 1, 0x1234, CODE_ADDR + 7);
        let case = Case::strict(signaled(libc::SIGSEGV)).traced(delivered(stop));
        assert_eq!(case.outcome(), crashed(libc::SIGSEGV, None));
    }

    #[test]
    fn strict_mode_denies_every_call_it_is_asked_about() {
        let syscall = ViolatingSyscall {
            nr: 0,
            name: Some("read"),
            abi: Abi::X86_64,
            code_offset: None,
            args: None,
            verified: true,
        };
        assert!(job_denies(&Policy::Strict, &syscall));
    }
}
