//! What happened in a run: the [`Outcome`] the kernel and the host's own clock decided, the
//! output the guest wrote, and what it cost. Guest behaviour is data here, never an error.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::abi::Registers;

/// How the guest's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest returned to the runner; the registers as it left them.
    Returned(Registers),
    /// The guest called `exit(code)` (syscall 60).
    Exited(i32),
    /// The worker died of a signal other than the host's SIGKILL.
    Crashed {
        /// The signal number the kernel reported.
        signal: i32,
        /// Where it happened, when the worker's fault record agrees with the kernel.
        fault: Option<Fault>,
    },
    /// The kernel killed the worker for a syscall outside the allow list.
    SyscallViolation,
    /// The host killed the worker at the wall-clock deadline (or the CPU backstop fired).
    Timeout,
    /// The host killed the worker because it wrote more than `max_output` bytes.
    OutputLimit,
    /// The job used up its CPU time (`Limits::cpu_time`): the host killed it, or the kernel's
    /// `RLIMIT_CPU` did.
    CpuTimeLimit,
    /// The kernel's OOM killer ended the job at its memory cgroup's limit (`Limits::memory`,
    /// counting memory held outside mappings: SysV shared memory, memfd and tmpfs pages).
    MemoryLimit,
    /// A SIGKILL that no part of bytejail sent or caused, under a filter (which traps every
    /// violation instead of killing): another process, or the kernel's OOM killer.
    Killed,
}

impl Outcome {
    /// The stable name used in JSON and the summary line.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Returned(_) => "returned",
            Outcome::Exited(_) => "exited",
            Outcome::Crashed { .. } => "crashed",
            Outcome::SyscallViolation => "syscall_violation",
            Outcome::Timeout => "timeout",
            Outcome::OutputLimit => "output_limit",
            Outcome::CpuTimeLimit => "cpu_time_limit",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Killed => "killed",
        }
    }

    /// The documented `bytejail run` exit status for this outcome.
    pub fn exit_status(&self) -> i32 {
        match self {
            Outcome::Returned(regs) => (regs.rax & 0xff) as i32,
            Outcome::Exited(code) => code & 0xff,
            Outcome::Crashed { signal, .. } => 128 + signal,
            Outcome::SyscallViolation => 159,
            Outcome::Timeout
            | Outcome::OutputLimit
            | Outcome::CpuTimeLimit
            | Outcome::MemoryLimit => 124,
            Outcome::Killed => 128 + libc::SIGKILL,
        }
    }
}

/// Where a crash happened, from the worker's own fault record, validated by the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// `si_addr`: the faulting data address for SIGSEGV/SIGBUS, the instruction for the others.
    pub address: u64,
    /// Offset of the faulting instruction in the guest code, when it lies there.
    pub code_offset: Option<u64>,
    /// The faulting instruction in Intel syntax, when it lies in the guest code.
    pub instruction: Option<String>,
    /// True when the kernel itself showed this fault, through the tracer: the signal came
    /// from an instruction (not from a process that queued it) in this very run. False when
    /// it comes from the worker's own record, which the guest can write (an untraced run).
    pub verified: bool,
}

/// Which syscall a violation was, when it can be known: from the tracer (the kernel's own
/// view of the call), or, untraced, from a filter's SIGSYS trap or a traced diagnostic re-run
/// after a strict-mode kill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ViolatingSyscall {
    /// The number as the guest passed it (x32: with the 0x40000000 bit).
    pub nr: u32,
    /// Its name in `abi`, when the table knows it.
    pub name: Option<&'static str>,
    /// The entry used: `syscall` (x86_64 or x32) or `int 0x80` (i386).
    pub abi: crate::syscalls::Abi,
    /// Offset of the syscall instruction in the guest code, when it lies there.
    pub code_offset: Option<u64>,
    /// The six argument registers as the kernel saw them at the call (`rdi, rsi, rdx, r10,
    /// r8, r9`; for `int 0x80`: `ebx, ecx, edx, esi, edi, ebp`), when known.
    pub args: Option<[u64; 6]>,
    /// True when the kernel itself showed this call in this very run (the tracer). False
    /// when it comes from a diagnostic re-run that ended the same way, or from the worker's
    /// own record, which the guest can write.
    pub verified: bool,
}

/// Everything the host knows about one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    /// Bytes the guest wrote to fd 1, at most `max_output`.
    pub output: Vec<u8>,
    /// True when the guest wrote more than was kept.
    pub output_truncated: bool,
    /// Host wall clock from just before the fork to the reap.
    pub wall: Duration,
    /// CPU time of the worker in user mode (`wait4` rusage).
    pub user: Duration,
    /// CPU time of the worker in kernel mode (`wait4` rusage).
    pub sys: Duration,
    /// Peak resident set of the worker in KiB (`ru_maxrss`; counts pages shared with the host).
    pub max_rss_kib: u64,
    /// For a syscall violation: which syscall, when known.
    pub syscall: Option<ViolatingSyscall>,
}

/// The name of a signal, e.g. `SIGSEGV`, or `SIG<n>` for numbers without one.
pub fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(sig) => sig.as_str().to_string(),
        Err(_) => format!("SIG{signal}"),
    }
}

impl Report {
    /// The report as the `run --json` object.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("outcome".into(), json!(self.outcome.kind()));
        match &self.outcome {
            Outcome::Returned(regs) => {
                obj.insert("rax".into(), json!(regs.rax));
                obj.insert("registers".into(), json!(regs));
            }
            Outcome::Exited(code) => {
                obj.insert("exit_code".into(), json!(code));
            }
            Outcome::Crashed { signal, fault } => {
                obj.insert("signal".into(), json!(signal_name(*signal)));
                obj.insert("signal_number".into(), json!(signal));
                if let Some(fault) = fault {
                    obj.insert("fault".into(), json!(fault));
                }
            }
            Outcome::SyscallViolation => {
                if let Some(syscall) = &self.syscall {
                    obj.insert("syscall".into(), json!(syscall));
                }
            }
            Outcome::Timeout
            | Outcome::OutputLimit
            | Outcome::CpuTimeLimit
            | Outcome::MemoryLimit
            | Outcome::Killed => {}
        }
        obj.insert("output_hex".into(), json!(hex_string(&self.output)));
        if let Ok(text) = std::str::from_utf8(&self.output) {
            obj.insert("output_text".into(), json!(text));
        }
        obj.insert("output_truncated".into(), json!(self.output_truncated));
        obj.insert("wall_ns".into(), json!(nanos(self.wall)));
        obj.insert("user_ns".into(), json!(nanos(self.user)));
        obj.insert("sys_ns".into(), json!(nanos(self.sys)));
        obj.insert("max_rss_kib".into(), json!(self.max_rss_kib));
        Value::Object(obj)
    }

    /// The one-line human summary, e.g.
    /// `crashed: SIGSEGV at code+0x3 (mov qword ptr [rax],1), address 0x0`.
    pub fn summary(&self) -> String {
        let tail = match &self.outcome {
            Outcome::Returned(regs) => format!("rax={}", hex_and_decimal(regs.rax)),
            Outcome::Exited(code) => format!("code {code}"),
            Outcome::Crashed { signal, fault } => {
                let mut s = signal_name(*signal);
                if let Some(fault) = fault {
                    match (&fault.code_offset, &fault.instruction) {
                        (Some(off), Some(insn)) => s += &format!(" at code+0x{off:x} ({insn})"),
                        (Some(off), None) => s += &format!(" at code+0x{off:x}"),
                        _ => {}
                    }
                    s += &format!(", address 0x{:x}", fault.address);
                    if !fault.verified {
                        s += " (unverified)";
                    }
                }
                s
            }
            Outcome::SyscallViolation => match &self.syscall {
                Some(sc) => {
                    // Syscall tables count in decimal; an x32 number (bit 30 set) reads in hex.
                    let nr = if sc.nr < 0x1000 {
                        sc.nr.to_string()
                    } else {
                        format!("{:#x}", sc.nr)
                    };
                    let mut s = format!(
                        "{} ({} {nr})",
                        sc.name.unwrap_or("unknown syscall"),
                        sc.abi.name(),
                    );
                    if let Some(args) = sc.args {
                        let args: Vec<String> = args.iter().map(|a| format!("{a:#x}")).collect();
                        s += &format!(" args ({})", args.join(", "));
                    }
                    if let Some(off) = sc.code_offset {
                        s += &format!(" at code+0x{off:x}");
                    }
                    if !sc.verified {
                        s += " (unverified)";
                    }
                    s + ", stopped by seccomp"
                }
                None => "forbidden syscall, killed by seccomp".to_string(),
            },
            Outcome::Timeout => format!("killed after {:.3}s", self.wall.as_secs_f64()),
            Outcome::OutputLimit => {
                format!("killed after {} of output", bytes(self.output.len()))
            }
            Outcome::CpuTimeLimit => format!(
                "killed after {:.3}s of CPU time",
                (self.user + self.sys).as_secs_f64()
            ),
            Outcome::MemoryLimit => "killed by the kernel at its memory limit".to_string(),
            Outcome::Killed => {
                "SIGKILL from outside bytejail (another process or the OOM killer)".to_string()
            }
        };
        let truncated = if self.output_truncated && self.outcome != Outcome::OutputLimit {
            ", output truncated"
        } else {
            ""
        };
        // Plain numbers for people: registers in hex with the decimal beside it (what a
        // guest computes is often a count), and "1 byte", "2 bytes".
        fn hex_and_decimal(value: u64) -> String {
            match value as i64 {
                0..=9 => format!("{value:#x}"),
                signed @ (i64::MIN..=-1) => format!("{value:#x} ({signed})"),
                _ => format!("{value:#x} ({value})"),
            }
        }
        fn bytes(n: usize) -> String {
            format!("{n} byte{}", if n == 1 { "" } else { "s" })
        }
        format!(
            "{}: {}; {} of output{}, {:.3} ms",
            self.outcome.kind(),
            tail,
            bytes(self.output.len()),
            truncated,
            self.wall.as_secs_f64() * 1e3
        )
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Lower-case hex of `bytes`, no separators.
pub fn hex_string(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}
