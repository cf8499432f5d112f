//! The syscall storm: guest programs built from a fuzzed sequence of steps, each a syscall
//! instruction (`syscall`, `int 0x80`, `sysenter` or a call into the vsyscall page) with a
//! fuzzed number and fuzzed argument registers, a forged `rt_sigreturn` frame, a fault or a
//! spin, ending in `ret`.
//!
//! Besides the code, [`Storm::build`] predicts the outcome from the kernel's rules for strict
//! mode, as far as the steps allow (see [`Expectation`]): a forbidden number is a
//! `syscall_violation`, `exit(n)` is `exited n`, a fault is `crashed` with its signal at its
//! instruction, a spin is a `timeout`, reaching the end is `returned`. Steps whose effect
//! depends on more than the step (a read into fuzzed memory, a forged frame that resumes
//! anywhere but the next step, `sysenter`, whose behaviour differs between CPU vendors) end
//! the prediction; the generic oracle still applies to the rest of the run.

use arbitrary::Arbitrary;
use bytejail::{Outcome, Report};

use crate::asm::{op, Asm, Reg};

/// Steps after this many are ignored, which bounds a storm's code (to about 17 KiB).
pub const MAX_STEPS: usize = 24;
/// Input bytes after this many are ignored.
pub const MAX_INPUT: usize = 64;

/// A fuzzed guest program.
#[derive(Arbitrary, Debug)]
pub struct Storm {
    /// What the guest finds on fd 0 (at most [`MAX_INPUT`] bytes are used).
    pub input: Vec<u8>,
    /// The program (at most [`MAX_STEPS`] are used).
    pub steps: Vec<Step>,
}

/// One step of a storm.
#[derive(Arbitrary, Debug)]
pub enum Step {
    /// Load the argument registers and the number, then enter the kernel through `gate`.
    Syscall {
        gate: Gate,
        number: Number,
        args: [Arg; 6],
    },
    /// Build a `struct ucontext` on the stack and call `rt_sigreturn` (15) on it.
    Sigreturn(Frame),
    /// An instruction that ends the run: a fault with a known signal, or a spin.
    Stop(Stop),
}

/// How a step enters the kernel.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// `syscall`: native numbers in rax, arguments in rdi rsi rdx r10 r8 r9.
    Syscall,
    /// `int 0x80`: i386 numbers in eax, arguments in ebx ecx edx esi edi ebp (32 bits each).
    Int80,
    /// `sysenter`: the i386 fast path (#UD in 64-bit mode on AMD; Intel enters the kernel).
    Sysenter,
    /// `call` to the legacy vsyscall page at this offset (the entries are 0, 0x400, 0x800).
    Vsyscall(u16),
}

/// A syscall number, biased toward the ranges that matter.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Number {
    /// One of the gate's allowed calls (read, write, exit, rt_sigreturn; ia32 3, 4, 1, 119).
    Allowed(u8),
    /// Any number 0..=470: every native and every i386 table entry.
    Table(u16),
    /// A native number with the x32 bit (0x40000000) set.
    X32(u16),
    /// A number an escape would want (see [`NOTABLE`]).
    Notable(u8),
    /// Anything, high bits included.
    Raw(u64),
}

/// Numbers an escape would reach for, and edge values.
#[rustfmt::skip]
pub const NOTABLE: &[u64] = &[
    // native: exit_group getpid fork vfork clone clone3 execve execveat kill tgkill ptrace
    231, 39, 57, 58, 56, 435, 59, 322, 62, 234, 101,
    // mmap mprotect munmap mremap brk prctl arch_prctl seccomp rt_sigaction rt_sigprocmask
    // sigaltstack
    9, 10, 11, 25, 12, 157, 158, 317, 13, 14, 131,
    // open openat socket io_uring_setup bpf perf_event_open userfaultfd process_vm_writev
    2, 257, 41, 425, 321, 298, 323, 311,
    // uretprobe and uprobe: passed through every seccomp mode since Linux 6.11 / 6.16
    335, 336,
    // i386: exit_group getpid fork execve clone mmap2 mprotect prctl rt_sigreturn sigaltstack
    // socketcall
    252, 20, 2, 11, 120, 192, 125, 172, 173, 186, 102,
    // -1, the 32-bit -1, just past the tables, allowed numbers under high or x32 bits
    u64::MAX, 0xffff_ffff, 471,
    1 << 32, 1 << 32 | 1, 1 << 32 | 60, 0xffff_ffff_0000_0000 | 60, 0x8000_0000 | 60,
    0x4000_0000, 0x4000_0000 | 1, 0x4000_0000 | 60,
];

/// An argument register's value.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Arg {
    /// 0..=255: descriptors, small counts, flags.
    Small(u8),
    /// `rsp` + offset: the guest's stack (the runner's return address is at `rsp`).
    Stack(i16),
    /// Code start + offset (modulo the code length).
    Code(u16),
    /// Anything.
    Raw(u64),
}

/// A forged `rt_sigreturn` frame.
#[derive(Arbitrary, Debug)]
pub struct Frame {
    /// The signal mask to restore (SIGKILL and SIGSTOP cannot be blocked).
    pub mask: Mask,
    /// r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, in `struct sigcontext` order.
    pub gregs: [u64; 15],
    pub eflags: u64,
    pub uc_flags: u64,
    pub resume: Resume,
}

/// The signal mask a frame restores.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Mask {
    /// Every signal blocked: the timeout must still end the worker.
    All,
    None,
    Raw(u64),
}

/// Where and how the forged frame resumes.
#[derive(Arbitrary, Debug)]
pub enum Resume {
    /// At the next step, on the same stack, in 64-bit mode, with no FPU state (reset), TF and AC
    /// cleared from the flags, and the alternate signal stack left alone (`disable_altstack`
    /// false: an invalid `uc_stack` the kernel ignores) or disabled. The prediction goes on.
    Next { disable_altstack: bool },
    /// Anything: the prediction ends here.
    Forged(Box<Forged>),
}

/// The fields of a frame that resumes anywhere.
#[derive(Arbitrary, Debug)]
pub struct Forged {
    pub rip: Target,
    pub rsp: StackTarget,
    pub cs: Selector,
    pub ss: Selector,
    /// gs and fs, packed after cs in `struct sigcontext`.
    pub gs_fs: u32,
    pub fpstate: Arg,
    pub uc_stack_sp: Arg,
    pub uc_stack_flags: u32,
    pub uc_stack_size: u64,
    /// err, trapno, oldmask, cr2: ignored by the kernel, fuzzed all the same.
    pub trap: [u64; 4],
}

/// Where a forged frame resumes.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Target {
    /// The next step.
    Next,
    /// Code start + offset (modulo the code length): any instruction boundary or none.
    Code(u16),
    /// The runner's return address (found at `[rsp]` at entry) + offset: into the runner's own
    /// trampoline and handlers.
    Runner(i16),
    /// The legacy vsyscall page + offset.
    Vsyscall(u16),
    Raw(u64),
}

/// The stack pointer a forged frame resumes with.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum StackTarget {
    /// The stack pointer the step started with.
    Same,
    /// That + offset.
    Offset(i16),
    Raw(u64),
}

/// A code or stack segment selector.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Selector {
    /// 0x33: 64-bit user code.
    User64,
    /// 0x23: 32-bit user code (compatibility mode).
    User32,
    /// 0x2b: user data, the user stack segment.
    UserData,
    Null,
    Raw(u16),
}

impl Selector {
    fn value(self) -> u16 {
        match self {
            Selector::User64 => 0x33,
            Selector::User32 => 0x23,
            Selector::UserData => 0x2b,
            Selector::Null => 0,
            Selector::Raw(value) => value,
        }
    }
}

/// An instruction that ends the run: a fault, with the signal it must end the guest with, or
/// a spin until the deadline. (A step of its own kind, a spin would end a quarter of all
/// programs in a timeout, the slowest outcome by far.)
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Stop {
    /// `ud2`: SIGILL.
    Ud2,
    /// `int3`: SIGTRAP.
    Int3,
    /// `hlt` (privileged): SIGSEGV.
    Hlt,
    /// A store to address 0: SIGSEGV.
    NullStore,
    /// `div` by zero: SIGFPE.
    DivZero,
    /// `call $` until the guard page: SIGSEGV.
    StackOverflow,
    /// A misaligned load with EFLAGS.AC set: SIGBUS.
    Misaligned,
    /// `jmp $` until the deadline: a timeout.
    Spin,
}

impl Stop {
    /// The signal the fault ends the guest with; None for the spin.
    fn signal(self) -> Option<i32> {
        match self {
            Stop::Ud2 => Some(libc::SIGILL),
            Stop::Int3 => Some(libc::SIGTRAP),
            Stop::Hlt | Stop::NullStore | Stop::StackOverflow => Some(libc::SIGSEGV),
            Stop::DivZero => Some(libc::SIGFPE),
            Stop::Misaligned => Some(libc::SIGBUS),
            Stop::Spin => None,
        }
    }

    /// Emits the instruction(s); returns the offset of the one that faults (or spins).
    fn emit(self, asm: &mut Asm) -> u64 {
        let (setup, faulting): (&[u8], &[u8]) = match self {
            Stop::Ud2 => (&[], op::UD2),
            Stop::Int3 => (&[], op::INT3),
            Stop::Hlt => (&[], op::HLT),
            Stop::NullStore => (op::ZERO_EAX, op::STORE_AT_RAX),
            Stop::DivZero => (op::ZERO_ECX, op::DIV_ECX),
            Stop::StackOverflow => (&[], op::CALL_SELF),
            Stop::Misaligned => (op::SET_AC, op::LOAD_MISALIGNED),
            Stop::Spin => (&[], op::SPIN),
        };
        asm.bytes(setup);
        let at = asm.here() as u64;
        asm.bytes(faulting);
        at
    }
}

/// What a storm's run must report, as far as it can be known from the steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// The outcome is one of these.
    pub any_of: Vec<Expected>,
    /// A step may have written to fd 1: the output may be non-empty, and `output_limit` is
    /// possible. Without it the output must be empty.
    pub may_write: bool,
}

/// One acceptable outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Returned through the runner's return address with the stack as at entry: `rsp`
    /// (after the `ret`) is 16-byte aligned.
    Returned,
    /// `exit(code)`; `None` when the code came from a pointer's low byte.
    Exited(Option<i32>),
    Crashed {
        signal: i32,
        record: Record,
    },
    SyscallViolation,
    Timeout,
}

/// What the fault details must say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// The runner's handler ran: the fault is at this code offset.
    At(u64),
    /// The signal was blocked, or could not be delivered: no handler ran, no details in the
    /// record. A traced run's tracer sees the kernel deliver it all the same: the fault is then
    /// at this code offset.
    Absent(u64),
    /// Not predicted.
    Any,
}

impl Expectation {
    /// Why `report` is not one of the expected outcomes, if it is not.
    pub fn violation(&self, report: &Report) -> Option<&'static str> {
        if !self.may_write && !report.output.is_empty() {
            return Some("output, but no step wrote to fd 1");
        }
        if self.may_write && report.outcome == Outcome::OutputLimit {
            return None;
        }
        let matches = |expected: &Expected| match (expected, &report.outcome) {
            (Expected::Returned, Outcome::Returned(regs)) => regs.rsp % 16 == 0,
            (Expected::Exited(want), Outcome::Exited(code)) => want.is_none_or(|w| w == *code),
            (Expected::Crashed { signal, record }, Outcome::Crashed { signal: got, fault }) => {
                signal == got
                    && match record {
                        Record::Any => true,
                        Record::Absent(offset) => fault
                            .as_ref()
                            .is_none_or(|f| f.code_offset == Some(*offset)),
                        Record::At(offset) => {
                            fault.as_ref().and_then(|f| f.code_offset) == Some(*offset)
                        }
                    }
            }
            (Expected::SyscallViolation, Outcome::SyscallViolation)
            | (Expected::Timeout, Outcome::Timeout) => true,
            _ => false,
        };
        if self.any_of.iter().any(matches) {
            None
        } else {
            Some("the outcome is not the one strict mode's rules give")
        }
    }

    /// Whether `report` is a timeout the prediction does not allow: a guest that had no time
    /// to finish, as on a machine that stalled, rather than a wrong outcome.
    pub fn unexpected_timeout(&self, report: &Report) -> bool {
        report.outcome == Outcome::Timeout && !self.any_of.contains(&Expected::Timeout)
    }

    /// Panics unless `report` is one of the expected outcomes.
    pub fn check(&self, report: &Report, storm: &Storm) {
        if let Some(why) = self.violation(report) {
            panic!(
                "{why}\nexpected one of {:?} (may write: {})\ngot {}\nreport: {report:?}\n\
                 storm: {storm:#?}",
                self.any_of,
                self.may_write,
                report.summary()
            );
        }
    }
}

/// A built storm: the code, the input, and the prediction when there is one.
#[derive(Debug)]
pub struct Program {
    pub code: Vec<u8>,
    pub input: Vec<u8>,
    pub expect: Option<Expectation>,
}

/// The kernel's effect of one syscall, as far as the prediction needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// `read`: returns (data, EOF or an error) unless it reads input into fuzzed memory.
    Read,
    /// `write`: returns; may produce output.
    Write,
    /// `exit`: ends the worker with the low byte of the first argument.
    Exit,
    /// Strict mode kills the worker.
    Killed,
    /// Depends on more than the number: `rt_sigreturn` on whatever the stack holds,
    /// `uretprobe`/`uprobe`, whose treatment depends on the kernel version.
    Unknown,
}

/// Strict mode through `syscall`. The kernel takes the number as the low 32 bits of rax, sign
/// extended (`do_syscall_64(regs, int nr)`, `__secure_computing` with an `int`), so high bits
/// do not matter; x32-tagged numbers are checked against the ia32 allow list, which none
/// matches, so they are always killed.
fn native_effect(rax: u64) -> Effect {
    match rax as u32 as i32 {
        0 => Effect::Read,
        1 => Effect::Write,
        60 => Effect::Exit,
        15 | 335 | 336 => Effect::Unknown,
        _ => Effect::Killed,
    }
}

/// Strict mode through `int 0x80`: the number is eax; the ia32 allow list is exit (1), read
/// (3), write (4) and sigreturn (119).
fn ia32_effect(rax: u64) -> Effect {
    match rax as u32 {
        3 => Effect::Read,
        4 => Effect::Write,
        1 => Effect::Exit,
        119 | 335 | 336 => Effect::Unknown,
        _ => Effect::Killed,
    }
}

/// The prediction while the steps are being emitted.
#[derive(Debug)]
struct Prediction {
    /// Signals blocked by the last clean frame (the worker starts with the faults unblocked).
    blocked: u64,
    /// Whether the worker's alternate signal stack is still in place.
    altstack: bool,
    /// Whether a step may have written to fd 1.
    may_write: bool,
    /// Whether the guest has input on fd 0 (a read of it lands in fuzzed memory).
    has_input: bool,
}

impl Prediction {
    fn end(&self, any_of: Vec<Expected>) -> Expectation {
        Expectation {
            any_of,
            may_write: self.may_write,
        }
    }

    /// How `stop` at `offset` ends the run. A fault leaves the runner's record of it when the
    /// handler runs: unless the signal is blocked (the kernel then delivers it with the
    /// default action), and, for a stack overflow, only from the alternate stack.
    fn stop(&self, stop: Stop, offset: u64) -> Expectation {
        let Some(signal) = stop.signal() else {
            return self.end(vec![Expected::Timeout]);
        };
        let blocked = self.blocked & sigbit(signal) != 0;
        let deliverable = self.altstack || !matches!(stop, Stop::StackOverflow);
        let record = if !blocked && deliverable {
            Record::At(offset)
        } else {
            Record::Absent(offset)
        };
        self.end(vec![Expected::Crashed { signal, record }])
    }
}

/// The bit of `signal` in a `sigset_t` word.
fn sigbit(signal: i32) -> u64 {
    1 << (signal - 1)
}

/// The stack room a forged frame takes: `struct ucontext` (304 bytes), rounded up.
const FRAME_ROOM: i32 = 512;

/// Offsets in `struct ucontext` (x86-64).
mod uc {
    pub const FLAGS: i32 = 0;
    pub const LINK: i32 = 8;
    pub const STACK_SP: i32 = 16;
    pub const STACK_FLAGS: i32 = 24;
    pub const STACK_SIZE: i32 = 32;
    /// `uc_mcontext`: r8..r15 rdi rsi rbp rbx rdx rax rcx, then rsp, rip, eflags.
    pub const GREGS: i32 = 40;
    pub const RSP: i32 = GREGS + 15 * 8;
    pub const RIP: i32 = RSP + 8;
    pub const EFLAGS: i32 = RIP + 8;
    /// cs, gs, fs, ss (u16 each).
    pub const SEGMENTS: i32 = EFLAGS + 8;
    /// err, trapno, oldmask, cr2.
    pub const TRAP: i32 = SEGMENTS + 8;
    pub const FPSTATE: i32 = TRAP + 4 * 8;
    pub const SIGMASK: i32 = FPSTATE + 8 + 8 * 8;
}

/// `ss_flags` value that disables the alternate signal stack.
const SS_DISABLE: u64 = 2;
/// EFLAGS bits a clean frame never sets: TF (a trap after every instruction) and AC.
const EFLAGS_TF_AC: u64 = 0x100 | 0x4_0000;
/// The uc_flags bits the kernel reads (UC_FP_XSTATE, UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS).
const UC_KNOWN_FLAGS: u64 = 0x7;

impl Storm {
    /// Encodes the steps into code ending in `ret`, and predicts the outcome.
    pub fn build(&self) -> Program {
        let input = self.input[..self.input.len().min(MAX_INPUT)].to_vec();
        let mut asm = Asm::new();
        let mut prediction = Some(Prediction {
            blocked: 0,
            altstack: true,
            may_write: false,
            has_input: !input.is_empty(),
        });
        let mut expect = None;
        for step in self.steps.iter().take(MAX_STEPS) {
            let verdict = step.emit(&mut asm);
            if let Some(state) = prediction.as_mut() {
                match verdict.apply(state) {
                    Next::Continue => {}
                    Next::Ends(expectation) => {
                        expect = Some(expectation);
                        prediction = None;
                    }
                    Next::Unknown => prediction = None,
                }
            }
        }
        asm.bytes(op::RET);
        if let Some(state) = prediction {
            expect = Some(state.end(vec![Expected::Returned]));
        }
        Program {
            code: asm.finish(),
            input,
            expect,
        }
    }
}

/// What a step does to the prediction, decided when it is emitted.
enum Verdict {
    /// Through `syscall` or `int 0x80`, with the first and third arguments when they are known
    /// before the run: read's and write's descriptor and count, exit's code.
    Syscall {
        effect: Effect,
        arg0: Option<u64>,
        arg2: Option<u64>,
    },
    /// A call into the vsyscall page.
    Vsyscall,
    /// A forged frame that resumes at the next step.
    CleanFrame { mask: u64, disable_altstack: bool },
    /// A fault or a spin, at this code offset.
    Stop { stop: Stop, offset: u64 },
    /// Anything else: the prediction ends.
    Unknown,
}

/// Where the prediction goes after a step.
enum Next {
    /// On to the next step.
    Continue,
    /// The run ends here, like this.
    Ends(Expectation),
    /// The run goes on in a way the steps do not determine.
    Unknown,
}

impl Verdict {
    fn apply(self, state: &mut Prediction) -> Next {
        match self {
            // Emulated through the seccomp check (killed), or SIGSEGV where the kernel has
            // vsyscall=none, for a misaligned entry or for a bad pointer argument.
            Verdict::Vsyscall => Next::Ends(state.end(vec![
                Expected::SyscallViolation,
                Expected::Crashed {
                    signal: libc::SIGSEGV,
                    record: Record::Any,
                },
            ])),
            Verdict::Syscall { effect, arg0, arg2 } => match effect {
                Effect::Killed => Next::Ends(state.end(vec![Expected::SyscallViolation])),
                Effect::Exit => Next::Ends(state.end(vec![Expected::Exited(
                    arg0.map(|code| (code & 0xff) as i32),
                )])),
                // Descriptors are `unsigned int`: the low 32 bits of the register.
                Effect::Write => {
                    if arg0.is_none_or(|fd| fd as u32 == 1) && arg2 != Some(0) {
                        state.may_write = true;
                    }
                    Next::Continue
                }
                Effect::Read => {
                    let from_input = arg0.is_none_or(|fd| fd as u32 == 0);
                    if from_input && arg2 != Some(0) && state.has_input {
                        // Input lands in fuzzed memory: the stack, the code (EFAULT) or the
                        // runner's record.
                        Next::Unknown
                    } else {
                        Next::Continue
                    }
                }
                Effect::Unknown => Next::Unknown,
            },
            Verdict::CleanFrame {
                mask,
                disable_altstack,
            } => {
                state.blocked = mask & !(sigbit(libc::SIGKILL) | sigbit(libc::SIGSTOP));
                state.altstack &= !disable_altstack;
                Next::Continue
            }
            Verdict::Stop { stop, offset } => Next::Ends(state.stop(stop, offset)),
            Verdict::Unknown => Next::Unknown,
        }
    }
}

impl Step {
    fn emit(&self, asm: &mut Asm) -> Verdict {
        match self {
            Step::Syscall { gate, number, args } => emit_syscall(asm, *gate, *number, args),
            Step::Sigreturn(frame) => frame.emit(asm),
            Step::Stop(stop) => {
                let offset = stop.emit(asm);
                Verdict::Stop {
                    stop: *stop,
                    offset,
                }
            }
        }
    }
}

impl Number {
    fn value(self, gate: Gate) -> u64 {
        match self {
            Number::Allowed(i) => {
                let list: &[u64] = match gate {
                    Gate::Syscall | Gate::Vsyscall(_) => &[0, 1, 15, 60],
                    Gate::Int80 | Gate::Sysenter => &[3, 4, 119, 1],
                };
                list[usize::from(i) % list.len()]
            }
            Number::Table(n) => u64::from(n % 471),
            Number::X32(n) => 0x4000_0000 | u64::from(n % 600),
            Number::Notable(i) => NOTABLE[usize::from(i) % NOTABLE.len()],
            Number::Raw(value) => value,
        }
    }
}

/// Loads `arg` into `reg`; returns its value when known before the run.
fn load_arg(asm: &mut Asm, reg: Reg, arg: Arg) -> Option<u64> {
    match arg {
        Arg::Small(value) => {
            asm.mov_imm64(reg, u64::from(value));
            Some(u64::from(value))
        }
        Arg::Raw(value) => {
            asm.mov_imm64(reg, value);
            Some(value)
        }
        Arg::Stack(offset) => {
            asm.lea_rsp(reg, i32::from(offset));
            None
        }
        Arg::Code(offset) => {
            asm.lea_code(reg, u64::from(offset));
            None
        }
    }
}

fn emit_syscall(asm: &mut Asm, gate: Gate, number: Number, args: &[Arg; 6]) -> Verdict {
    let registers = match gate {
        Gate::Syscall | Gate::Vsyscall(_) => {
            [Reg::RDI, Reg::RSI, Reg::RDX, Reg::R10, Reg::R8, Reg::R9]
        }
        Gate::Int80 | Gate::Sysenter => {
            [Reg::RBX, Reg::RCX, Reg::RDX, Reg::RSI, Reg::RDI, Reg::RBP]
        }
    };
    let values: Vec<Option<u64>> = registers
        .iter()
        .zip(args)
        .map(|(reg, arg)| load_arg(asm, *reg, *arg))
        .collect();
    let nr = number.value(gate);
    let effect = match gate {
        Gate::Syscall => {
            asm.mov_imm64(Reg::RAX, nr);
            asm.bytes(op::SYSCALL);
            native_effect(nr)
        }
        Gate::Int80 => {
            asm.mov_imm64(Reg::RAX, nr);
            asm.bytes(op::INT80);
            ia32_effect(nr)
        }
        Gate::Sysenter => {
            asm.mov_imm64(Reg::RAX, nr);
            asm.bytes(op::SYSENTER);
            return Verdict::Unknown;
        }
        Gate::Vsyscall(offset) => {
            asm.mov_imm64(Reg::RAX, VSYSCALL_PAGE + u64::from(offset % 4096));
            asm.bytes(op::CALL_RAX);
            return Verdict::Vsyscall;
        }
    };
    // read(fd, buf, count), write(fd, buf, count), exit(code): the first and third arguments.
    Verdict::Syscall {
        effect,
        arg0: values[0],
        arg2: values[2],
    }
}

/// The legacy vsyscall page, mapped at this fixed address in every x86-64 process.
const VSYSCALL_PAGE: u64 = 0xffff_ffff_ff60_0000;

impl Mask {
    fn value(self) -> u64 {
        match self {
            Mask::All => u64::MAX,
            Mask::None => 0,
            Mask::Raw(value) => value,
        }
    }
}

impl Frame {
    /// `sub rsp, FRAME_ROOM`, a `struct ucontext` at `rsp` filled field by field through rax,
    /// `mov rax, 15; syscall`. The kernel reads the frame at the stack pointer the syscall
    /// left (`rt_sigframe` starts 8 bytes below it, with the unused return address).
    fn emit(&self, asm: &mut Asm) -> Verdict {
        asm.sub_rsp(FRAME_ROOM);
        let store = |asm: &mut Asm, at: i32, value: u64| {
            asm.mov_imm64(Reg::RAX, value);
            asm.store_rax(at);
        };
        let mask = self.mask.value();
        for (i, value) in self.gregs.iter().enumerate() {
            store(asm, uc::GREGS + 8 * i as i32, *value);
        }
        store(asm, uc::LINK, 0);
        store(asm, uc::SIGMASK, mask);
        let verdict = match &self.resume {
            Resume::Next { disable_altstack } => {
                store(asm, uc::FLAGS, self.uc_flags & UC_KNOWN_FLAGS);
                // An invalid uc_stack (size 0) is ignored; SS_DISABLE takes the altstack away.
                let flags = if *disable_altstack { SS_DISABLE } else { 0 };
                store(asm, uc::STACK_SP, 0);
                store(asm, uc::STACK_FLAGS, flags);
                store(asm, uc::STACK_SIZE, 0);
                store(asm, uc::EFLAGS, self.eflags & !EFLAGS_TF_AC);
                store(asm, uc::SEGMENTS, segments(0x33, 0, 0x2b));
                for i in 0..4 {
                    store(asm, uc::TRAP + 8 * i, 0);
                }
                store(asm, uc::FPSTATE, 0);
                asm.lea_rsp(Reg::RAX, FRAME_ROOM);
                asm.store_rax(uc::RSP);
                Verdict::CleanFrame {
                    mask,
                    disable_altstack: *disable_altstack,
                }
            }
            Resume::Forged(forged) => {
                store(asm, uc::FLAGS, self.uc_flags);
                load_arg(asm, Reg::RAX, forged.uc_stack_sp);
                asm.store_rax(uc::STACK_SP);
                store(asm, uc::STACK_FLAGS, u64::from(forged.uc_stack_flags));
                store(asm, uc::STACK_SIZE, forged.uc_stack_size);
                store(asm, uc::EFLAGS, self.eflags);
                store(
                    asm,
                    uc::SEGMENTS,
                    segments(forged.cs.value(), forged.gs_fs, forged.ss.value()),
                );
                for (i, value) in forged.trap.iter().enumerate() {
                    store(asm, uc::TRAP + 8 * i as i32, *value);
                }
                load_arg(asm, Reg::RAX, forged.fpstate);
                asm.store_rax(uc::FPSTATE);
                match forged.rsp {
                    StackTarget::Same => asm.lea_rsp(Reg::RAX, FRAME_ROOM),
                    StackTarget::Offset(offset) => {
                        asm.lea_rsp(Reg::RAX, FRAME_ROOM + i32::from(offset))
                    }
                    StackTarget::Raw(value) => asm.mov_imm64(Reg::RAX, value),
                }
                asm.store_rax(uc::RSP);
                match forged.rip {
                    Target::Next => {}
                    Target::Code(offset) => asm.lea_code(Reg::RAX, u64::from(offset)),
                    Target::Runner(offset) => {
                        // The return address at entry; only right while rsp is as at entry.
                        asm.load_rax(FRAME_ROOM);
                        asm.add_rax(i32::from(offset));
                    }
                    Target::Vsyscall(offset) => {
                        asm.mov_imm64(Reg::RAX, VSYSCALL_PAGE + u64::from(offset % 4096))
                    }
                    Target::Raw(value) => asm.mov_imm64(Reg::RAX, value),
                }
                if !matches!(forged.rip, Target::Next) {
                    asm.store_rax(uc::RIP);
                }
                Verdict::Unknown
            }
        };
        let resumes_next = matches!(&self.resume, Resume::Next { .. })
            || matches!(&self.resume, Resume::Forged(f) if matches!(f.rip, Target::Next));
        if resumes_next {
            // rip = the instruction after the syscall: past this store (8 bytes), the number
            // (10) and the syscall (2).
            asm.lea_ahead(Reg::RAX, 8 + 10 + 2);
            asm.store_rax(uc::RIP);
        }
        asm.mov_imm64(Reg::RAX, 15);
        asm.bytes(op::SYSCALL);
        verdict
    }
}

/// The `cs, gs, fs, ss` words of `struct sigcontext`, as one u64.
fn segments(cs: u16, gs_fs: u32, ss: u16) -> u64 {
    u64::from(cs) | u64::from(gs_fs) << 16 | u64::from(ss) << 48
}
