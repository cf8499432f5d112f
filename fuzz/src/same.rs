//! Same-code cases: one code and a few inputs, run through one `bytejail::SameCode`, each
//! report held to the oracle, to the same-code rules, and (for built programs) to the report a
//! fresh `bytejail::run` gives the same code and input: the equivalence rule.
//!
//! Shared word for word by the `same_code` fuzz target and `tests/properties.rs` (`#[path]`),
//! so it uses only `std`, `bytejail` and the oracle (`crate::oracle`).
//!
//! # The equivalence rule
//!
//! A same-code worker differs from a fresh one in documented ways: fd 0 is at EOF (a fresh
//! worker streams the input there), fds 3 and 4 are its go and done pipes, bytes past the input
//! read as zero up to 64 KiB (a fresh worker faults past the input's last page), its arena sits
//! at other addresses, and its CPU times and peak RSS are measured differently. A program built
//! from [`Step`]s cannot see any of these, by construction:
//!
//! - it makes no syscall but `write(1, scratch, n)`, `getpid` (a violation) and `exit`: it never
//!   reads fd 0 and never touches fds 3 and 4;
//! - it reads input bytes only at offsets below the input length (`rsi` at entry);
//! - it never puts an address into a register it keeps or into memory it writes: the scratch
//!   and input addresses live in r12 and r13, which the epilogue zeroes; after every write
//!   rsi (the buffer) and rcx (`syscall`'s return address) are zeroed;
//! - it uses no instruction whose result is not a function of the architectural state it can
//!   set (no `rdrand`, `rdpid`, `cpuid`, `rdfsbase`, timing loops).
//!
//! So its report is a function of the code, the input and the options. The rule compares what
//! it determines: the outcome kind; for a return every general register but the three that hold
//! arena addresses at entry (rdi, rdx, rsp) and rflags; the exit code; the crash signal and the
//! fault's code offset and instruction (not its address); the violating syscall; the output and
//! its truncation. Timings and RSS are not compared. A difference can then only come from state
//! an input inherited from an earlier one in the same worker (scratch, stack, vector, x87 and
//! MXCSR state, flags, registers, the output limit) or from a misclassification.
//!
//! The programs read the state they could inherit *before* they change it (the steps come in
//! any order, so both orders occur), and fold every read into r15, which a return reports: an
//! input that saw a value an earlier input left behind returns a different r15.
//!
//! What the vocabulary leaves out on purpose: state the runner documents as carried between
//! inputs, or found not to be reset (see `tests/properties.rs`, the ignored tests): the FS and
//! GS bases, a signal mask or alternate stack forged with `rt_sigreturn`, and the runner's own
//! shared region (context, record, alternate signal stack).
//!
//! Raw cases (any bytes as code) are held to everything but the equivalence, which their
//! reads of fd 0, of addresses and past the input would break.

use std::time::Duration;

use bytejail::{Gpr, Outcome, Report, RunOptions, SameCode};

use crate::oracle::{self, Host};

/// At most this many inputs per case.
pub const MAX_INPUTS: usize = 6;
/// At most this many bytes per input; together they stay far below the 64 KiB a same-code arena
/// holds without a new worker (which would start one no input ended).
pub const MAX_INPUT_LEN: usize = 64;
/// At most this many steps per program.
pub const MAX_STEPS: usize = 48;
/// At most this many pushes outstanding.
const MAX_DEPTH: usize = 64;

/// The registers an input may set at entry (the rest of the program relies on rdi, rsi, rdx):
/// its temporaries, some untouched ones, and the accumulator r15.
pub const SETTABLE: [&str; 6] = ["rax", "rbx", "rbp", "r8", "r10", "r15"];

fn settable(i: usize) -> Gpr {
    SETTABLE[i].parse().expect("a register name")
}

/// The options of a case: a short deadline (spinning inputs cost little), a small output limit
/// (floods reach it quickly), 64 KiB of stack and scratch as the other targets.
pub fn case_options() -> RunOptions {
    let mut options = RunOptions::default();
    options.limits.timeout = Duration::from_millis(100);
    options.limits.max_output = 512;
    options.limits.stack = 64 << 10;
    options.limits.scratch = 64 << 10;
    options
}

/// The output limit of an input that asks for a small one: below what two `write` steps can
/// produce, so that the limit a previous input had must not stick.
pub const SMALL_MAX_OUTPUT: usize = 64;

/// One input of a case, with what it changes in [`case_options`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaseInput {
    pub bytes: Vec<u8>,
    /// Register values at entry, for registers in [`SETTABLE`].
    pub registers: Vec<(Gpr, u64)>,
    /// Output limit [`SMALL_MAX_OUTPUT`] instead of the default.
    pub small_output: bool,
    /// fd 1 the worker's own file instead of a pipe ([`RunOptions::output_file`]).
    pub output_file: bool,
}

impl CaseInput {
    pub fn options(&self) -> RunOptions {
        let mut options = case_options();
        for &(reg, value) in &self.registers {
            options.registers.set(reg, value).expect("not rsp");
        }
        if self.small_output {
            options.limits.max_output = SMALL_MAX_OUTPUT;
        }
        options.output_file = self.output_file;
        options
    }
}

/// The code of a case: a program of steps (held to the equivalence) or raw bytes (not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    Steps(Vec<Step>),
    Raw(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub code: Code,
    pub inputs: Vec<CaseInput>,
}

/// One step of a program. Reads fold what they read into r15 (`xor r15, rax; rol r15, 7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read / write the scratch qword `n` (0..64).
    ReadScratch(u8),
    WriteScratch(u8, u64),
    /// Read / write the qword `n + 1` (1..=32) below the stack pointer.
    ReadStack(u8),
    WriteStack(u8, u64),
    Push(u64),
    /// Pops (and folds) what a `Push` pushed; nothing when none is outstanding.
    Pop,
    /// `pushfq`: the arithmetic flags, DF, AC.
    ReadFlags,
    /// 0: `stc`, 1: `std`, 2: `cld`, 3: set AC.
    SetFlag(u8),
    /// Both halves of xmm `n` (0..16).
    ReadXmm(u8),
    /// Writes the low (false) or high (true) half of xmm `n`.
    WriteXmm(u8, bool, u64),
    /// The upper 128 bits of ymm `n` (through xmm0, which it overwrites).
    ReadYmmHigh(u8),
    /// Copies xmm `n` into the upper half of ymm `n`.
    WriteYmmHigh(u8),
    ReadMxcsr,
    WriteMxcsr(u16),
    /// The x87 control and status words (TOP, condition codes, exceptions).
    ReadX87,
    /// `fldpi` (None) or `fldcw` with a control word.
    WriteX87(Option<u16>),
    /// Input byte `n` (0..80), when the input is longer than `n`.
    ReadInput(u8),
    /// `write(1, scratch, 8 * n)` (n in 1..=32); folds the result.
    Output(u8),
    /// Ends the input: always (None) or when input byte `n` has bit `b` set (Some((n, b))).
    End(Option<(u8, u8)>, End),
}

/// How an input ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Return,
    /// `ud2`: SIGILL.
    Ud2,
    /// A store to address 0: SIGSEGV.
    NullStore,
    /// `div` by zero: SIGFPE.
    DivZero,
    /// `int3`: SIGTRAP.
    Int3,
    /// A misaligned load with AC set: SIGBUS.
    Misaligned,
    /// `getpid`: a syscall violation.
    Violation,
    Exit(u8),
    /// `jmp $`: a timeout.
    Spin,
    /// `write` in a loop: the output limit.
    Flood,
}

const ENDS: usize = 10;
const STEPS: usize = 19;

impl End {
    fn decode(byte: u8, param: u8) -> End {
        match byte as usize % ENDS {
            0 => End::Return,
            1 => End::Ud2,
            2 => End::NullStore,
            3 => End::DivZero,
            4 => End::Int3,
            5 => End::Misaligned,
            6 => End::Violation,
            7 => End::Exit(param),
            8 => End::Spin,
            _ => End::Flood,
        }
    }

    /// Whether this ending ends the worker (everything but a return).
    pub fn ends_worker(self) -> bool {
        self != End::Return
    }
}

/// Reads bytes as a case's fields; past the end every byte is zero.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut v = [0; 8];
        for b in &mut v {
            *b = self.u8();
        }
        u64::from_le_bytes(v)
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
}

impl Step {
    /// Decodes steps from bytes, each a kind byte and its parameters, up to [`MAX_STEPS`].
    pub fn decode_all(bytes: &[u8]) -> Vec<Step> {
        let mut b = Bytes(bytes);
        let mut steps = Vec::new();
        while !b.0.is_empty() && steps.len() < MAX_STEPS {
            steps.push(Step::decode(&mut b));
        }
        steps
    }

    fn decode(b: &mut Bytes) -> Step {
        match b.u8() as usize % STEPS {
            // Few slots, so that one input's write and another's read meet often.
            0 => Step::ReadScratch(b.u8() % 8),
            1 => Step::WriteScratch(b.u8() % 8, b.u64()),
            2 => Step::ReadStack(b.u8() % 8),
            3 => Step::WriteStack(b.u8() % 8, b.u64()),
            4 => Step::Push(b.u64()),
            5 => Step::Pop,
            6 => Step::ReadFlags,
            7 => Step::SetFlag(b.u8() % 4),
            8 => Step::ReadXmm(b.u8() % 16),
            9 => {
                let p = b.u8();
                Step::WriteXmm(p % 16, p & 0x80 != 0, b.u64())
            }
            10 => Step::ReadYmmHigh(b.u8() % 16),
            11 => Step::WriteYmmHigh(b.u8() % 16),
            12 => Step::ReadMxcsr,
            13 => Step::WriteMxcsr(b.u16()),
            14 => Step::ReadX87,
            15 => {
                let cw = b.u16();
                Step::WriteX87((cw & 1 != 0).then_some(cw))
            }
            16 => Step::ReadInput(b.u8() % 80),
            17 => Step::Output(b.u8() % 32 + 1),
            _ => {
                let when = b.u8();
                let bit = b.u8();
                let cond = (when & 0x80 != 0).then_some((when % 64, bit % 8));
                let how = b.u8();
                Step::End(cond, End::decode(how, b.u8()))
            }
        }
    }
}

impl Case {
    /// Decodes a case: a header byte (bit 0: raw code; then the number of inputs, 1 +
    /// `(header >> 1) % MAX_INPUTS`), each input (a length byte, that many bytes, a flags byte:
    /// bits 0-5 set the [`SETTABLE`] registers, each followed by its 8 bytes, bit 6 asks for the
    /// small output limit, bit 7 for fd 1 a file), then the code: steps or raw bytes. `None` for raw empty code, which
    /// the runner refuses as an input error.
    pub fn decode(bytes: &[u8]) -> Option<Case> {
        let mut b = Bytes(bytes);
        let header = b.u8();
        let raw = header & 1 != 0;
        let count = 1 + (header as usize >> 1) % MAX_INPUTS;
        let mut inputs = Vec::with_capacity(count);
        for _ in 0..count {
            let len = b.u8() as usize % (MAX_INPUT_LEN + 1);
            let bytes = b.take(len);
            let flags = b.u8();
            let mut registers = Vec::new();
            for i in 0..SETTABLE.len() {
                if flags & (1 << i) != 0 {
                    registers.push((settable(i), b.u64()));
                }
            }
            inputs.push(CaseInput {
                bytes,
                registers,
                small_output: flags & 0x40 != 0,
                output_file: flags & 0x80 != 0,
            });
        }
        let code = if raw {
            if b.0.is_empty() {
                return None;
            }
            Code::Raw(b.0.to_vec())
        } else {
            Code::Steps(Step::decode_all(b.0))
        };
        Some(Case { code, inputs })
    }

    /// The encoding [`Case::decode`] reads back (for seeds).
    pub fn encode_raw(code: &[u8], inputs: &[CaseInput]) -> Vec<u8> {
        assert!(!inputs.is_empty() && inputs.len() <= MAX_INPUTS);
        let mut out = vec![1 | ((inputs.len() - 1) as u8) << 1];
        for input in inputs {
            assert!(input.bytes.len() <= MAX_INPUT_LEN);
            out.push(input.bytes.len() as u8);
            out.extend_from_slice(&input.bytes);
            let mut flags = (input.small_output as u8) << 6 | (input.output_file as u8) << 7;
            let mut values = Vec::new();
            for i in 0..SETTABLE.len() {
                let reg = settable(i);
                if let Some(&(_, value)) = input.registers.iter().find(|(r, _)| *r == reg) {
                    flags |= 1 << i;
                    values.extend_from_slice(&value.to_le_bytes());
                }
            }
            out.push(flags);
            out.extend_from_slice(&values);
        }
        out.extend_from_slice(code);
        out
    }

    /// The machine code.
    pub fn code(&self) -> Vec<u8> {
        match &self.code {
            Code::Steps(steps) => assemble(steps),
            Code::Raw(code) => code.clone(),
        }
    }
}

// Registers the programs keep: r12 = scratch, r13 = input, r14 = input length, r15 = the fold.
const PROLOGUE: &[u8] = &[
    0x49, 0x89, 0xd4, // mov r12, rdx
    0x49, 0x89, 0xfd, // mov r13, rdi
    0x49, 0x89, 0xf6, // mov r14, rsi
];
/// `xor r15, rax; rol r15, 7`
const FOLD: &[u8] = &[0x49, 0x31, 0xc7, 0x49, 0xc1, 0xc7, 0x07];
/// `pushfq; or dword ptr [rsp], 0x40000 (AC); popfq`
const SET_AC: &[u8] = &[0x9c, 0x81, 0x0c, 0x24, 0x00, 0x00, 0x04, 0x00, 0x9d];
const SYSCALL: &[u8] = &[0x0f, 0x05];

/// The REX prefix with W, plus R for a register number 8..15 in the ModRM reg field.
fn rex_w_r(n: u8) -> u8 {
    0x48 | if n >= 8 { 0x04 } else { 0 }
}

fn modrm_reg(n: u8) -> u8 {
    0xc0 | (n & 7) << 3
}

fn mov_rax_imm(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&[0x48, 0xb8]);
    out.extend_from_slice(&value.to_le_bytes());
}

/// `write(1, r12, len)`, then rsi (the scratch address) and rcx (the return address `syscall`
/// leaves) zeroed.
fn write_scratch(out: &mut Vec<u8>, len: u32) {
    out.extend_from_slice(&[0xb8, 1, 0, 0, 0]); // mov eax, 1
    out.extend_from_slice(&[0xbf, 1, 0, 0, 0]); // mov edi, 1
    out.extend_from_slice(&[0x4c, 0x89, 0xe6]); // mov rsi, r12
    out.push(0xba); // mov edx, len
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(SYSCALL);
    out.extend_from_slice(&[0x31, 0xf6]); // xor esi, esi
    out.extend_from_slice(&[0x31, 0xc9]); // xor ecx, ecx
}

/// Pops what is outstanding, zeroes the address registers, returns.
fn epilogue(out: &mut Vec<u8>, depth: usize) {
    out.extend_from_slice(&[0x48, 0x81, 0xc4]); // add rsp, imm32
    out.extend_from_slice(&(depth as u32 * 8).to_le_bytes());
    out.extend_from_slice(&[0x45, 0x31, 0xe4]); // xor r12d, r12d
    out.extend_from_slice(&[0x45, 0x31, 0xed]); // xor r13d, r13d
    out.push(0xc3);
}

/// The code of an ending, entered with `depth` pushes outstanding.
fn ending(how: End, depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    match how {
        End::Return => epilogue(&mut out, depth),
        End::Ud2 => out.extend_from_slice(&[0x0f, 0x0b]),
        End::NullStore => out.extend_from_slice(&[0x31, 0xc0, 0x88, 0x00]),
        End::DivZero => out.extend_from_slice(&[0x31, 0xc9, 0xf7, 0xf1]),
        End::Int3 => out.push(0xcc),
        End::Misaligned => {
            out.extend_from_slice(SET_AC);
            out.extend_from_slice(&[0x8b, 0x44, 0x24, 0x01]); // mov eax, [rsp + 1]
        }
        End::Violation => {
            out.extend_from_slice(&[0xb8, 39, 0, 0, 0]); // mov eax, 39 (getpid)
            out.extend_from_slice(SYSCALL);
        }
        End::Exit(code) => {
            out.extend_from_slice(&[0xb8, 60, 0, 0, 0]); // mov eax, 60 (exit)
            out.extend_from_slice(&[0xbf, code, 0, 0, 0]); // mov edi, code
            out.extend_from_slice(SYSCALL);
        }
        End::Spin => out.extend_from_slice(&[0xeb, 0xfe]),
        End::Flood => {
            write_scratch(&mut out, 256);
            let back = -(out.len() as i32 + 2);
            out.extend_from_slice(&[0xeb, back as u8]); // jmp to the write
        }
    }
    out
}

/// Encodes a program: the prologue, the steps, the epilogue.
pub fn assemble(steps: &[Step]) -> Vec<u8> {
    let mut out = PROLOGUE.to_vec();
    let mut depth = 0usize;
    for &step in steps {
        match step {
            Step::ReadScratch(n) => {
                out.extend_from_slice(&[0x49, 0x8b, 0x84, 0x24]); // mov rax, [r12 + disp32]
                out.extend_from_slice(&(n as u32 * 8).to_le_bytes());
                out.extend_from_slice(FOLD);
            }
            Step::WriteScratch(n, value) => {
                mov_rax_imm(&mut out, value);
                out.extend_from_slice(&[0x49, 0x89, 0x84, 0x24]); // mov [r12 + disp32], rax
                out.extend_from_slice(&(n as u32 * 8).to_le_bytes());
            }
            Step::ReadStack(n) => {
                out.extend_from_slice(&[0x48, 0x8b, 0x84, 0x24]); // mov rax, [rsp + disp32]
                out.extend_from_slice(&(-8 * (n as i32 + 1)).to_le_bytes());
                out.extend_from_slice(FOLD);
            }
            Step::WriteStack(n, value) => {
                mov_rax_imm(&mut out, value);
                out.extend_from_slice(&[0x48, 0x89, 0x84, 0x24]); // mov [rsp + disp32], rax
                out.extend_from_slice(&(-8 * (n as i32 + 1)).to_le_bytes());
            }
            Step::Push(value) => {
                if depth < MAX_DEPTH {
                    mov_rax_imm(&mut out, value);
                    out.push(0x50); // push rax
                    depth += 1;
                }
            }
            Step::Pop => {
                if depth > 0 {
                    out.push(0x58); // pop rax
                    out.extend_from_slice(FOLD);
                    depth -= 1;
                }
            }
            Step::ReadFlags => {
                out.extend_from_slice(&[0x9c, 0x58]); // pushfq; pop rax
                out.extend_from_slice(FOLD);
            }
            Step::SetFlag(which) => match which % 4 {
                0 => out.push(0xf9), // stc
                1 => out.push(0xfd), // std
                2 => out.push(0xfc), // cld
                _ => out.extend_from_slice(SET_AC),
            },
            Step::ReadXmm(n) => {
                // movq rax, xmmN; fold; pextrq rax, xmmN, 1; fold
                out.extend_from_slice(&[0x66, rex_w_r(n), 0x0f, 0x7e, modrm_reg(n)]);
                out.extend_from_slice(FOLD);
                out.extend_from_slice(&[0x66, rex_w_r(n), 0x0f, 0x3a, 0x16, modrm_reg(n), 1]);
                out.extend_from_slice(FOLD);
            }
            Step::WriteXmm(n, high, value) => {
                mov_rax_imm(&mut out, value);
                if high {
                    // pinsrq xmmN, rax, 1
                    out.extend_from_slice(&[0x66, rex_w_r(n), 0x0f, 0x3a, 0x22, modrm_reg(n), 1]);
                } else {
                    // movq xmmN, rax
                    out.extend_from_slice(&[0x66, rex_w_r(n), 0x0f, 0x6e, modrm_reg(n)]);
                }
            }
            Step::ReadYmmHigh(n) => {
                // vextractf128 xmm0, ymmN, 1 (VEX.256.66.0F3A.W0 19 /r ib; reg = ymmN)
                let r = if n < 8 { 0x80 } else { 0 };
                out.extend_from_slice(&[0xc4, r | 0x63, 0x7d, 0x19, modrm_reg(n), 1]);
                out.extend_from_slice(&[0x66, 0x48, 0x0f, 0x7e, 0xc0]); // movq rax, xmm0
                out.extend_from_slice(FOLD);
                // pextrq rax, xmm0, 1
                out.extend_from_slice(&[0x66, 0x48, 0x0f, 0x3a, 0x16, 0xc0, 1]);
                out.extend_from_slice(FOLD);
            }
            Step::WriteYmmHigh(n) => {
                // vinsertf128 ymmN, ymmN, xmmN, 1 (VEX.256.66.0F3A.W0 18 /r ib)
                let rb = if n < 8 { 0xa0 } else { 0 };
                let vvvv = (!n & 0xf) << 3;
                let modrm = modrm_reg(n) | (n & 7);
                out.extend_from_slice(&[0xc4, rb | 0x43, vvvv | 0x05, 0x18, modrm, 1]);
            }
            Step::ReadMxcsr => {
                // push 0; stmxcsr [rsp]; pop rax
                out.extend_from_slice(&[0x6a, 0x00, 0x0f, 0xae, 0x1c, 0x24, 0x58]);
                out.extend_from_slice(FOLD);
            }
            Step::WriteMxcsr(value) => {
                out.push(0x68); // push imm32
                out.extend_from_slice(&(value as u32).to_le_bytes());
                out.extend_from_slice(&[0x0f, 0xae, 0x14, 0x24]); // ldmxcsr [rsp]
                out.extend_from_slice(&[0x48, 0x83, 0xc4, 0x08]); // add rsp, 8
            }
            Step::ReadX87 => {
                // push 0; fnstcw [rsp]; pop rax; shl rax, 16; fnstsw ax
                out.extend_from_slice(&[0x6a, 0x00, 0xd9, 0x3c, 0x24, 0x58]);
                out.extend_from_slice(&[0x48, 0xc1, 0xe0, 0x10, 0xdf, 0xe0]);
                out.extend_from_slice(FOLD);
            }
            Step::WriteX87(None) => out.extend_from_slice(&[0xd9, 0xeb]), // fldpi
            Step::WriteX87(Some(cw)) => {
                out.push(0x68); // push imm32
                out.extend_from_slice(&(cw as u32).to_le_bytes());
                out.extend_from_slice(&[0xd9, 0x2c, 0x24]); // fldcw [rsp]
                out.extend_from_slice(&[0x48, 0x83, 0xc4, 0x08]); // add rsp, 8
            }
            Step::ReadInput(n) => {
                out.extend_from_slice(&[0x49, 0x81, 0xfe]); // cmp r14, imm32
                out.extend_from_slice(&(n as u32).to_le_bytes());
                out.extend_from_slice(&[0x76, 8 + FOLD.len() as u8]); // jbe past the read
                out.extend_from_slice(&[0x41, 0x0f, 0xb6, 0x85]); // movzx eax, byte [r13 + disp32]
                out.extend_from_slice(&(n as u32).to_le_bytes());
                out.extend_from_slice(FOLD);
            }
            Step::Output(n) => {
                write_scratch(&mut out, n as u32 * 8);
                out.extend_from_slice(FOLD);
            }
            Step::End(None, how) => {
                out.extend_from_slice(&ending(how, depth));
                // Whatever follows is never reached; the epilogue still balances the stack.
            }
            Step::End(Some((n, bit)), how) => {
                let body = ending(how, depth);
                let skip = body.len() as u32;
                out.extend_from_slice(&[0x49, 0x81, 0xfe]); // cmp r14, imm32
                out.extend_from_slice(&(n as u32).to_le_bytes());
                // jbe past the test and the body: 8 + 6 bytes of test and jz.
                out.extend_from_slice(&[0x0f, 0x86]);
                out.extend_from_slice(&(skip + 8 + 6).to_le_bytes());
                out.extend_from_slice(&[0x41, 0xf6, 0x85]); // test byte [r13 + disp32], imm8
                out.extend_from_slice(&(n as u32).to_le_bytes());
                out.push(1 << (bit % 8));
                out.extend_from_slice(&[0x0f, 0x84]); // jz past the body
                out.extend_from_slice(&skip.to_le_bytes());
                out.extend_from_slice(&body);
            }
        }
    }
    epilogue(&mut out, depth);
    out
}

/// What a report must agree on with a fresh run of the same code and input (see the module
/// docs): everything but timings, RSS, fault addresses and the registers that hold arena
/// addresses at entry (rdi, rdx, rsp).
pub fn essence(report: &Report) -> String {
    let outcome = match &report.outcome {
        Outcome::Returned(r) => format!(
            "returned rax={:#x} rbx={:#x} rcx={:#x} rsi={:#x} rbp={:#x} r8={:#x} r9={:#x} \
             r10={:#x} r11={:#x} r12={:#x} r13={:#x} r14={:#x} r15={:#x} rflags={:#x}",
            r.rax,
            r.rbx,
            r.rcx,
            r.rsi,
            r.rbp,
            r.r8,
            r.r9,
            r.r10,
            r.r11,
            r.r12,
            r.r13,
            r.r14,
            r.r15,
            r.rflags
        ),
        Outcome::Crashed { signal, fault } => format!(
            "crashed signal={signal} at={:?} {:?}",
            fault.as_ref().and_then(|f| f.code_offset),
            fault.as_ref().and_then(|f| f.instruction.as_deref())
        ),
        other => format!("{other:?}"),
    };
    let syscall = report
        .syscall
        .as_ref()
        .map(|s| (s.nr, s.name, s.code_offset));
    format!(
        "{outcome}\n  syscall={syscall:?} truncated={} output={:02x?}",
        report.output_truncated, report.output
    )
}

/// The same-code rules on top of [`oracle::check_report`], for the documented differences:
/// `sys` is always zero (the scheduler clock counts user and system time together as `user`),
/// and `max_rss_kib` is zero exactly for a return (measured when the input ends the worker).
pub fn check_same_code_report(report: &Report, code: &[u8], options: &RunOptions) {
    oracle::check_report(report, code, options);
    assert_eq!(
        report.sys,
        Duration::ZERO,
        "a same-code report's sys must be zero\n{}",
        report.summary()
    );
    let returned = matches!(report.outcome, Outcome::Returned(_));
    assert_eq!(
        report.max_rss_kib == 0,
        returned,
        "max_rss_kib must be zero exactly for a return (the worker lives on)\n{}\nreport: {report:?}",
        report.summary()
    );
}

/// The result of one pass over a case: the same-code reports, the workers it started.
struct Pass {
    reports: Vec<Report>,
    workers: u64,
    rerun: u64,
    late: bool,
}

/// Runs every input through one `SameCode` (in the watched directory), checks each report
/// with [`check_same_code_report`], and drops the `SameCode`.
fn same_code_pass(host: &Host, code: &[u8], inputs: &[CaseInput]) -> Pass {
    host.in_watched(|| {
        let mut same = SameCode::new(code, &case_options())
            .unwrap_or_else(|e| panic!("SameCode::new failed: {e}\ncode: {code:02x?}"));
        let mut late = false;
        let reports = inputs
            .iter()
            .map(|input| {
                let options = input.options();
                let report = same.run_with(&input.bytes, &options).unwrap_or_else(|e| {
                    panic!("SameCode::run_with failed instead of reporting: {e}\ncode: {code:02x?}")
                });
                check_same_code_report(&report, code, &options);
                late |= !oracle::within_deadline(&report, &options);
                report
            })
            .collect();
        Pass {
            reports,
            workers: same.workers_started(),
            rerun: same.inputs_rerun(),
            late,
        }
    })
}

/// Runs a case and checks it: every report passes the oracle and the same-code rules, the
/// worker count is 1 + the inputs before the last that ended a worker or changed the output
/// limit, and, for programs of steps, each report has the [`essence`] of a fresh run's. A pass that was late or disagreed
/// only through a timeout is run again, up to [`oracle::STALL_RETRIES`] times, before it
/// counts: a stalled machine can make any input miss a 100 ms deadline once.
///
/// The host's descriptors and children are the caller's to compare, around this call: the
/// `SameCode` is dropped before it returns.
pub fn check_case(host: &Host, case: &Case) -> Vec<Report> {
    let code = case.code();
    let mut tries = 0;
    loop {
        tries += 1;
        let last_try = tries > oracle::STALL_RETRIES;
        let pass = same_code_pass(host, &code, &case.inputs);
        assert!(
            !pass.late || !last_try,
            "same-code inputs passed their deadline + {:?} in {tries} tries\nlast: {:?}",
            oracle::WALL_SLACK,
            pass.reports.iter().map(|r| r.wall).collect::<Vec<_>>()
        );
        if pass.late {
            eprintln!("oracle: a same-code input was late; running the case again");
            continue;
        }

        // A worker starts for the first input, after an input that ended one, for an input
        // that wants the other kind of fd 1, and, with fd 1 the worker's file, for an input
        // whose output limit is not the one its worker was started with (the file's
        // `RLIMIT_FSIZE` holds it to that limit: documented).
        let mut started = 0u64;
        let mut live = None;
        for (input, report) in case.inputs.iter().zip(&pass.reports) {
            let limit = input.output_file.then(|| input.options().limits.max_output);
            if live != Some((input.output_file, limit)) {
                started += 1;
            }
            let returned = matches!(report.outcome, Outcome::Returned(_));
            live = returned.then_some((input.output_file, limit));
        }
        // An input whose worker was gone before it took it is run again in a new worker
        // (documented; its guest never started in the first): each such rerun is one worker
        // more, and is said.
        if pass.rerun > 0 {
            eprintln!(
                "oracle: {} input(s) rerun: their worker was gone before it took them",
                pass.rerun
            );
        }
        assert_eq!(
            pass.workers,
            started + pass.rerun,
            "workers_started must be 1 + the inputs before the last that ended a worker or \
             changed the output limit + the inputs rerun\n{}",
            outcomes(&pass.reports)
        );

        if let Code::Steps(steps) = &case.code {
            let mut timing_only = true;
            let mut mismatch = None;
            for (i, (input, same)) in case.inputs.iter().zip(&pass.reports).enumerate() {
                let fresh = host.run(&code, &input.bytes, &input.options());
                let (a, b) = (essence(same), essence(&fresh));
                if a != b {
                    timing_only &=
                        (same.outcome == Outcome::Timeout) != (fresh.outcome == Outcome::Timeout);
                    mismatch.get_or_insert((i, a, b));
                }
            }
            if let Some((i, a, b)) = mismatch {
                if timing_only && !last_try {
                    eprintln!("oracle: a timeout in one run only; running the case again");
                    continue;
                }
                panic!(
                    "same-code input {i} differs from a fresh run of it\nsame-code: {a}\n\
                     fresh:     {b}\nsteps: {steps:?}\ninputs: {:?}\n{}",
                    case.inputs,
                    outcomes(&pass.reports)
                );
            }
        }
        return pass.reports;
    }
}

fn outcomes(reports: &[Report]) -> String {
    let lines: Vec<String> = reports
        .iter()
        .enumerate()
        .map(|(i, r)| format!("  input {i}: {}", r.summary()))
        .collect();
    format!("outcomes:\n{}", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step's encoding, as the disassembler reads it back.
    #[test]
    fn steps_encode_as_their_instructions() {
        let steps = [
            Step::ReadScratch(3),
            Step::WriteScratch(63, 7),
            Step::ReadStack(0),
            Step::WriteStack(31, 7),
            Step::Push(9),
            Step::Pop,
            Step::ReadFlags,
            Step::SetFlag(1),
            Step::SetFlag(3),
            Step::ReadXmm(9),
            Step::WriteXmm(3, false, 1),
            Step::WriteXmm(12, true, 1),
            Step::ReadYmmHigh(2),
            Step::ReadYmmHigh(10),
            Step::WriteYmmHigh(5),
            Step::WriteYmmHigh(13),
            Step::ReadMxcsr,
            Step::WriteMxcsr(0x1f80),
            Step::ReadX87,
            Step::WriteX87(None),
            Step::WriteX87(Some(0x37f)),
            Step::ReadInput(70),
            Step::Output(2),
            Step::End(Some((5, 3)), End::Exit(3)),
            Step::End(None, End::Flood),
        ];
        let text = bytejail::disasm::listing(&assemble(&steps));
        for want in [
            "mov r12,rdx",
            "mov rax,[r12+0x18]",
            "xor r15,rax",
            "rol r15,7",
            "mov [r12+0x1f8],rax",
            "mov rax,[rsp-8]",
            "mov [rsp-0x100],rax",
            "push rax",
            "pop rax",
            "pushfq",
            "std",
            "popfq",
            "movq rax,xmm9",
            "pextrq rax,xmm9,1",
            "movq xmm3,rax",
            "pinsrq xmm12,rax,1",
            "vextractf128 xmm0,ymm2,1",
            "vextractf128 xmm0,ymm10,1",
            "vinsertf128 ymm5,ymm5,xmm5,1",
            "vinsertf128 ymm13,ymm13,xmm13,1",
            "stmxcsr [rsp]",
            "ldmxcsr [rsp]",
            "fnstcw [rsp]",
            "fnstsw ax",
            "fldpi",
            "fldcw [rsp]",
            "cmp r14,0x46",
            "movzx eax,byte ptr [r13+0x46]",
            "mov edx,0x10",
            "syscall",
            "xor esi,esi",
            "test byte ptr [r13+5],8",
            "mov edi,3",
            "mov edx,0x100",
            "xor r13d,r13d",
            "ret",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
    }

    #[test]
    fn raw_cases_decode_from_their_encoding() {
        let inputs = [
            CaseInput {
                bytes: b"abc".to_vec(),
                registers: vec![(settable(1), 5), (settable(5), u64::MAX)],
                small_output: true,
                output_file: true,
            },
            CaseInput::default(),
        ];
        let bytes = Case::encode_raw(&[0xc3], &inputs);
        let case = Case::decode(&bytes).expect("a raw case with code");
        assert_eq!(case.code, Code::Raw(vec![0xc3]));
        assert_eq!(case.inputs, inputs);
    }
}
