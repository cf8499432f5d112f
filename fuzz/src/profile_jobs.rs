//! Profile mode across jobs: an attacker job under a profile that allows every syscall issues
//! fuzzed memory, process, descriptor and IPC calls on the runner's addresses it can find (the
//! blob page through the return address at `[rsp]`, its code, input, scratch and stack, each
//! +/- a few pages), then a canary job follows on the same host thread, pool, same-code
//! submission slot or batch. The oracle:
//!
//! - the canary's report has the [`essence`] of its report on a fresh thread (a new arena),
//!   which was computed once before any attacker ran, and which is the value and output the
//!   canary's code computes, worked out here in Rust ([`canary_expected`]);
//! - no process the attacker created is alive once its job is reported (for `run`, a batch
//!   without reuse), once its same-code worker is ended (`SameCode`, a batch with reuse), or
//!   once the pool is dropped; and nothing at all is left of the case, pools, zygotes and
//!   workers included, after it ([`Descendants`]);
//! - the runner reported the attacker's job rather than failed, and (but for a batch, whose
//!   result line is only checked for an error) its report is consistent with its limits:
//!   output, truncation, deadline.
//!
//! Shared word for word by the `profile_jobs` fuzz target and `tests/properties.rs` (`#[path]`),
//! so it uses only `std`, `libc`, `serde_json`, `bytejail` and the oracle (`crate::oracle`).
//!
//! Every attacker runs inside bytejail's walls: PID, IPC and mount namespaces, an empty
//! network namespace, Landlock without file access, no capabilities, 64 MiB of memory and
//! 1 MiB files. Never run one outside bytejail.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::sync::OnceLock;
use std::time::Duration;

use bytejail::batch::{self, BatchConfig, Reuse};
use bytejail::{Outcome, Policy, Pool, Report, RunOptions, SameCode};
use serde_json::Value;

use crate::asm::{op, Asm, Reg};
use crate::oracle::{self, Host};

/// At most this many calls per attacker.
pub const MAX_CALLS: usize = 16;
/// The attacker's deadline: a spin (one ending in four) costs this much.
pub const ATTACK_TIMEOUT: Duration = Duration::from_millis(100);
/// The canary's deadline: it needs a millisecond; a stalled machine must not make it miss this.
pub const CANARY_TIMEOUT: Duration = Duration::from_secs(5);
/// What the canary finds as its input.
pub const CANARY_INPUT: &[u8] = b"canary: sum me, echo me";
/// The attacker's input (its address is in `rdi`, one of the regions it aims at).
pub const ATTACK_INPUT: &[u8] = b"attacker input";

/// Where the canary follows the attacker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `bytejail::run`, both on this thread: the thread's arena is reused.
    Run,
    /// One `Pool` whose template is the attacker's profile options.
    Pool,
    /// A `SameCode` for the attacker, dropped, then one for the canary (another submission).
    SameCode,
    /// One `run_batch`, one job thread, without reuse.
    Batch,
    /// One `run_batch`, one job thread, `--reuse same-code`, both lines in one group.
    BatchSameCode,
}

const MODES: [Mode; 5] = [
    Mode::Run,
    Mode::Pool,
    Mode::SameCode,
    Mode::Batch,
    Mode::BatchSameCode,
];

/// How the attacker ends, if it gets there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `exit_group(code)`.
    Exit(u8),
    /// `mov rsp, <entry rsp>; ret` to the runner.
    Return,
    /// `jmp $` until the deadline.
    Spin,
}

/// Where an address argument points, at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The page of the return address at `[rsp]` on entry: the runner's blob.
    Blob,
    /// The first page of the code (`rip`).
    Code,
    /// The input (`rdi` on entry).
    Input,
    /// The scratch (`rdx` on entry).
    Scratch,
    /// The stack page of `rsp` on entry.
    Stack,
}

const REGIONS: [Region; 5] = [
    Region::Blob,
    Region::Code,
    Region::Input,
    Region::Scratch,
    Region::Stack,
];

/// An argument register's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// The page of `region` + `pages` pages.
    Near(Region, i8),
    Value(u64),
    /// What the previous call returned (a descriptor, a segment id, an address).
    Previous,
}

/// What kind of value a call expects in an argument.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Addr,
    /// A length: a few pages, or a few bytes.
    Len,
    /// A descriptor 0..=8, or the previous result.
    Fd,
    /// One of these values.
    Pick(&'static [u64]),
}

const PROT: &[u64] = &[0, 1, 3, 4, 5, 7, 2, 6, 0x0100_0007, 0x0200_0007, 8];
#[rustfmt::skip]
const MMAP_FLAGS: &[u64] = &[
    0x11, 0x12, 0x32, 0x31, 0x13, 0x22, 0x21, 0x01, 0x02, 0x10_0022, 0x10_0011, 0x8032,
    0x2032, 0x4_0022, 0x0100_0032,
];
const MREMAP_FLAGS: &[u64] = &[0, 1, 3, 5, 7, 2];
#[rustfmt::skip]
const ADVICE: &[u64] = &[
    9, 4, 8, 0, 1, 2, 3, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    24, 25, 100, 101, 102, 103,
];
#[rustfmt::skip]
const CLONE_FLAGS: &[u64] = &[
    17, 0, 0x0001_0f00, 0x0005_0f00, 0x100 | 17, 0x8000 | 17, 0x400 | 17, 0x4000 | 17,
    0x2000_0000 | 17, 0x1000_0000 | 17, 0x3000_0000 | 17, 0x0200_0000 | 17, 0x0040_0000 | 17,
    0x10_0000 | 17, 0x4111, 0x8000_0000,
];
const UNSHARE_FLAGS: &[u64] = &[
    0x1000_0000,
    0x2000_0000,
    0x3000_0000,
    0x2_0000,
    0x400,
    0x800_0000,
    0x4000_0000,
    0x200,
];
const PIDS: &[u64] = &[u64::MAX, 0, 1, 2, 3, 4, 0xffff_fffe];
const SIGNALS: &[u64] = &[9, 15, 19, 18, 10, 1, 0, 11, 31, 17, 2, 20];
#[rustfmt::skip]
const PRCTL: &[u64] = &[
    1, 15, 36, 4, 38, 22, 35, 0x5961_6d61, 41, 8, 16, 29, 23, 24, 40, 53, 57, 59, 62, 65,
];
const FCNTL: &[u64] = &[
    0, 1, 2, 3, 4, 8, 10, 1024, 1025, 1026, 1030, 1031, 1033, 1034,
];
const SHMGET_FLAGS: &[u64] = &[0x3b6, 0x7b6, 0x1b6, 0xbb6, 0];
const SHMAT_FLAGS: &[u64] = &[0, 0x1000, 0x4000, 0x2000, 0x8000, 0x5000];
const MEMFD_FLAGS: &[u64] = &[0, 1, 2, 3, 8, 0x10, 4];
const FALLOCATE_MODES: &[u64] = &[0, 1, 3, 0x10, 0x11, 8, 0x20, 0x40];
const SMALL: &[u64] = &[0, 1, 2, 4, 64, 88, 4096];

/// A call the attacker can make: name, number, argument shapes.
struct Kind(&'static str, u64, &'static [Shape]);

use Shape::{Addr, Fd, Len, Pick};

#[rustfmt::skip]
const KINDS: &[Kind] = &[
    Kind("mprotect", 10, &[Addr, Len, Pick(PROT)]),
    Kind("mremap", 25, &[Addr, Len, Len, Pick(MREMAP_FLAGS), Addr]),
    Kind("madvise", 28, &[Addr, Len, Pick(ADVICE)]),
    Kind("remap_file_pages", 216, &[Addr, Len, Pick(&[0]), Pick(SMALL), Pick(&[0, 0x10000])]),
    Kind("munmap", 11, &[Addr, Len]),
    Kind("mmap", 9, &[Addr, Len, Pick(PROT), Pick(MMAP_FLAGS), Fd, Pick(&[0, 4096, 8192])]),
    Kind("pkey_mprotect", 329, &[Addr, Len, Pick(PROT), Pick(&[0, 1, u64::MAX])]),
    Kind("clone", 56, &[Pick(CLONE_FLAGS), Addr, Addr, Addr, Pick(&[0])]),
    Kind("fork", 57, &[]),
    Kind("vfork", 58, &[]),
    Kind("clone3", 435, &[Addr, Pick(&[64, 88, 0, 96])]),
    Kind("unshare", 272, &[Pick(UNSHARE_FLAGS)]),
    Kind("setsid", 112, &[]),
    Kind("kill", 62, &[Pick(PIDS), Pick(SIGNALS)]),
    Kind("prctl", 157, &[Pick(PRCTL), Pick(SMALL), Addr, Pick(SMALL), Pick(SMALL)]),
    Kind("fcntl", 72, &[Fd, Pick(FCNTL), Pick(&[0, 1, 0x800, 0x400, 4096, 15, 9])]),
    Kind("dup2", 33, &[Fd, Fd]),
    Kind("close", 3, &[Fd]),
    Kind("write", 1, &[Fd, Addr, Len]),
    Kind("shmget", 29, &[Pick(&[0, 1, 0x6a6f62]), Len, Pick(SHMGET_FLAGS)]),
    Kind("shmat", 30, &[Fd, Addr, Pick(SHMAT_FLAGS)]),
    Kind("memfd_create", 319, &[Addr, Pick(MEMFD_FLAGS)]),
    Kind("ftruncate", 77, &[Fd, Len]),
    Kind("fallocate", 285, &[Fd, Pick(FALLOCATE_MODES), Len, Len]),
];

/// One call: an index into the kinds, and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub kind: usize,
    pub args: Vec<Arg>,
}

impl Call {
    pub fn name(&self) -> &'static str {
        KINDS[self.kind].0
    }
}

/// One case: the attacker and where the canary follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub mode: Mode,
    /// The attacker's `max_procs`, 1..=8 (1 where workers get no PID namespace).
    pub max_procs: u32,
    /// Whether the canary runs under the same profile (else strict mode). A batch's jobs all
    /// run under its profile.
    pub canary_profile: bool,
    pub ending: Ending,
    pub calls: Vec<Call>,
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

    fn u64(&mut self) -> u64 {
        let mut v = [0; 8];
        for b in &mut v {
            *b = self.u8();
        }
        u64::from_le_bytes(v)
    }
}

impl Shape {
    /// One selector byte, and more for some values. One selector in eight ignores the shape.
    fn decode(self, b: &mut Bytes) -> Arg {
        let sel = b.u8();
        if sel >= 0xe0 {
            return match sel % 4 {
                0 => Arg::Value(u64::from(b.u8())),
                1 => Arg::Value(b.u64()),
                2 => Arg::Previous,
                _ => Arg::Near(REGIONS[usize::from(b.u8()) % 5], b.u8() as i8 >> 3),
            };
        }
        match self {
            // Mostly within a few pages of the region, sometimes up to 16 pages away.
            Addr => {
                let pages = b.u8() as i8;
                let pages = if sel & 0x80 != 0 {
                    pages >> 3
                } else {
                    pages >> 5
                };
                Arg::Near(REGIONS[usize::from(sel) % 5], pages)
            }
            Len => match sel % 8 {
                0 => Arg::Value(u64::from(b.u8())),
                7 => Arg::Value(0x20_0000),
                n => Arg::Value(4096 * u64::from(n + (sel >> 3) % 4)),
            },
            Fd => match sel % 12 {
                9..=11 => Arg::Previous,
                n => Arg::Value(u64::from(n)),
            },
            Pick(values) => Arg::Value(values[usize::from(sel) % values.len()]),
        }
    }
}

impl Arg {
    /// The shortest bytes that [`Shape::decode`] reads back as this argument under `shape`.
    fn encode(self, shape: Shape) -> Vec<u8> {
        let mut best: Option<Vec<u8>> = None;
        for sel in 0..=255u8 {
            for next in 0..=255u8 {
                let buf = [sel, next, 0, 0, 0, 0, 0, 0, 0, 0];
                let mut b = Bytes(&buf);
                if shape.decode(&mut b) == self {
                    let used = buf.len() - b.0.len();
                    if best.as_ref().is_none_or(|best| used < best.len()) {
                        best = Some(buf[..used].to_vec());
                    }
                }
            }
        }
        best.unwrap_or_else(|| match self {
            // The generic forms, which ignore the shape.
            Arg::Value(value) => [&[0xe1][..], &value.to_le_bytes()].concat(),
            Arg::Previous => vec![0xe2],
            Arg::Near(region, pages) => {
                let index = REGIONS.iter().position(|r| *r == region).unwrap_or(0);
                vec![0xe3, index as u8, (pages as u8) << 3]
            }
        })
    }
}

impl Case {
    /// The bytes [`Case::decode`] reads back as this case (for seeds). `max_procs` must be
    /// 1..=8, arguments as the shapes allow (any value, `Previous`, `Near` within -16..=15
    /// pages).
    pub fn encode(&self) -> Vec<u8> {
        let mode = MODES.iter().position(|m| *m == self.mode).expect("a mode") as u8;
        let (ending, code) = match self.ending {
            Ending::Exit(code) => (0, code),
            Ending::Return => (3, 0),
            Ending::Spin => (6, 0),
        };
        let mut out = vec![
            mode | u8::from(self.canary_profile) << 4 | ending << 5,
            (self.max_procs - 1) as u8,
            code,
        ];
        for call in &self.calls {
            out.push(call.kind as u8);
            for (arg, shape) in call.args.iter().zip(KINDS[call.kind].2) {
                out.extend(arg.encode(*shape));
            }
        }
        out
    }

    /// A call by name, with its arguments (as many as the call takes).
    pub fn call(name: &str, args: &[Arg]) -> Call {
        let kind = KINDS
            .iter()
            .position(|k| k.0 == name)
            .unwrap_or_else(|| panic!("no call {name}"));
        assert_eq!(
            args.len(),
            KINDS[kind].2.len(),
            "{name} takes {} arguments",
            KINDS[kind].2.len()
        );
        Call {
            kind,
            args: args.to_vec(),
        }
    }

    /// Decodes a case: a header byte (bits 0-3: the mode, modulo 5; bit 4: the canary runs
    /// under the profile; bits 5-7: the ending, 0-2 exit, 3-5 return, 6-7 spin), the
    /// `max_procs` byte, the exit code, then calls, each a kind byte (an index into the table of
    /// calls, modulo its length) and one selector byte per argument (some take more), up to
    /// [`MAX_CALLS`].
    /// `namespaces` says whether workers get PID namespaces; without them `max_procs` is 1.
    pub fn decode(bytes: &[u8], namespaces: bool) -> Case {
        let mut b = Bytes(bytes);
        let header = b.u8();
        let mode = MODES[usize::from(header & 0x0f) % MODES.len()];
        let canary_profile = header & 0x10 != 0;
        let procs = b.u8();
        let max_procs = if namespaces {
            1 + u32::from(procs) % 8
        } else {
            1
        };
        let code = b.u8();
        let ending = match header >> 5 {
            0..=2 => Ending::Exit(code),
            3..=5 => Ending::Return,
            _ => Ending::Spin,
        };
        let mut calls = Vec::new();
        while !b.0.is_empty() && calls.len() < MAX_CALLS {
            let kind = usize::from(b.u8()) % KINDS.len();
            let args = KINDS[kind].2.iter().map(|s| s.decode(&mut b)).collect();
            calls.push(Call { kind, args });
        }
        Case {
            mode,
            max_procs,
            canary_profile,
            ending,
            calls,
        }
    }

    /// The attacker's machine code. r12..r15 and rbx hold the blob page, the input, the
    /// scratch, the entry `rsp` and the code start; rbp the last call's result.
    pub fn attacker(&self) -> Vec<u8> {
        let mut asm = Asm::new();
        asm.load_rsp0(Reg::R12);
        asm.and_imm(Reg::R12, -4096);
        asm.mov_reg(Reg::R13, Reg::RDI);
        asm.and_imm(Reg::R13, -4096);
        asm.mov_reg(Reg::R14, Reg::RDX);
        asm.and_imm(Reg::R14, -4096);
        asm.mov_reg(Reg::R15, Reg::RSP);
        asm.lea_code(Reg::RBX, 0);
        asm.mov_imm64(Reg::RBP, 0);
        let registers = [Reg::RDI, Reg::RSI, Reg::RDX, Reg::R10, Reg::R8, Reg::R9];
        for call in &self.calls {
            for (i, reg) in registers.iter().enumerate() {
                match call.args.get(i).copied().unwrap_or(Arg::Value(0)) {
                    Arg::Value(value) => asm.mov_imm64(*reg, value),
                    Arg::Previous => asm.mov_reg(*reg, Reg::RBP),
                    Arg::Near(region, pages) => {
                        let base = match region {
                            Region::Blob => Reg::R12,
                            Region::Code => Reg::RBX,
                            Region::Input => Reg::R13,
                            Region::Scratch => Reg::R14,
                            Region::Stack => Reg::R15,
                        };
                        asm.mov_reg(*reg, base);
                        asm.and_imm(*reg, -4096);
                        asm.add_imm(*reg, i32::from(pages) * 4096);
                    }
                }
            }
            asm.mov_imm64(Reg::RAX, KINDS[call.kind].1);
            asm.bytes(op::SYSCALL);
            asm.mov_reg(Reg::RBP, Reg::RAX);
        }
        match self.ending {
            Ending::Exit(code) => {
                asm.mov_imm64(Reg::RDI, u64::from(code));
                asm.mov_imm64(Reg::RAX, 231);
                asm.bytes(op::SYSCALL);
            }
            Ending::Return => {
                asm.mov_reg(Reg::RSP, Reg::R15);
                asm.bytes(op::RET);
            }
            Ending::Spin => asm.bytes(op::SPIN),
        }
        asm.finish()
    }

    /// The attacker's options: the allow-all profile, its `max_procs`, small limits.
    pub fn attack_options(&self) -> RunOptions {
        let mut options = profile_options();
        options.limits.timeout = ATTACK_TIMEOUT;
        options.limits.max_procs = self.max_procs;
        options
    }

    /// The canary's options: the profile's (as the attacker's, with the canary's deadline) or
    /// strict mode's.
    pub fn canary_options(&self) -> RunOptions {
        if self.canary_profile || matches!(self.mode, Mode::Batch | Mode::BatchSameCode) {
            let mut options = profile_options();
            options.limits.max_procs = self.max_procs;
            options
        } else {
            strict_options()
        }
    }
}

/// A profile that allows every syscall.
pub fn allow_all() -> Policy {
    Policy::from_profile_json(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#, "allow-all.json")
        .expect("the allow-all profile compiles")
}

/// Limits both jobs share: small memory and files, 64 KiB stack and scratch, 4 KiB of output.
fn small_limits(options: &mut RunOptions) {
    options.limits.timeout = CANARY_TIMEOUT;
    options.limits.max_output = 4096;
    options.limits.stack = 64 << 10;
    options.limits.scratch = 64 << 10;
    options.limits.memory = 64 << 20;
    options.limits.max_file_size = 1 << 20;
}

/// The canary's deadline and the small limits, under the allow-all profile.
pub fn profile_options() -> RunOptions {
    let mut options = RunOptions::default().with_policy(allow_all());
    small_limits(&mut options);
    options
}

/// The canary's deadline and the small limits, under strict mode.
pub fn strict_options() -> RunOptions {
    let mut options = RunOptions::default();
    small_limits(&mut options);
    options
}

/// Whether workers under a profile get PID namespaces here (root; else `max_procs` above 1 is
/// refused).
#[allow(unsafe_code)]
pub fn namespaces() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    euid == 0
}

/// The canary: sums its input bytes, writes its input to fd 1, and returns
/// `rax = sum << 16 | bytes written`, with every register it used but rdi, rdx (arena addresses
/// in the essence's blind spot) cleared.
pub const CANARY: &[u8] = &[
    0x49, 0x89, 0xfc, // mov r12, rdi
    0x49, 0x89, 0xf5, // mov r13, rsi
    0x31, 0xdb, // xor ebx, ebx
    0x31, 0xc9, // xor ecx, ecx
    0x4c, 0x39, 0xe9, // .loop: cmp rcx, r13
    0x73, 0x0d, // jae .done
    0x41, 0x0f, 0xb6, 0x04, 0x0c, // movzx eax, byte [r12 + rcx]
    0x48, 0x01, 0xc3, // add rbx, rax
    0x48, 0xff, 0xc1, // inc rcx
    0xeb, 0xee, // jmp .loop
    0xb8, 0x01, 0x00, 0x00, 0x00, // .done: mov eax, 1
    0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, 1
    0x4c, 0x89, 0xe6, // mov rsi, r12
    0x4c, 0x89, 0xea, // mov rdx, r13
    0x0f, 0x05, // syscall
    0x48, 0xc1, 0xe3, 0x10, // shl rbx, 16
    0x48, 0x01, 0xd8, // add rax, rbx
    0x31, 0xdb, // xor ebx, ebx
    0x31, 0xc9, // xor ecx, ecx
    0x31, 0xf6, // xor esi, esi
    0x45, 0x31, 0xdb, // xor r11d, r11d
    0x45, 0x31, 0xe4, // xor r12d, r12d
    0x45, 0x31, 0xed, // xor r13d, r13d
    0xc3, // ret
];

/// What the canary must return in rax for `input`, and write: worked out here, not run.
pub fn canary_expected(input: &[u8]) -> (u64, Vec<u8>) {
    let sum: u64 = input.iter().map(|&b| u64::from(b)).sum();
    (sum << 16 | input.len() as u64, input.to_vec())
}

/// A report as `run --json` gives it, less what legitimately differs between a fresh run and
/// one in a pool, a same-code worker or a batch: timings, RSS, and the registers that hold
/// arena addresses at entry (rdi, rdx, rsp).
pub fn essence(json: &Value) -> Value {
    let mut json = json.clone();
    if let Value::Object(fields) = &mut json {
        fields.remove("id");
        for timing in ["wall_ns", "user_ns", "sys_ns", "max_rss_kib"] {
            fields.remove(timing);
        }
        if let Some(Value::Object(regs)) = fields.get_mut("registers") {
            for arena in ["rdi", "rdx", "rsp"] {
                regs.remove(arena);
            }
        }
    }
    json
}

/// The canary's essence on a fresh thread (a new arena), under strict mode (false) or the
/// profile (true); computed once, before any attacker runs if [`references`] is called first,
/// and checked against [`canary_expected`].
pub fn reference(profile: bool) -> &'static Value {
    static REFERENCES: OnceLock<[Value; 2]> = OnceLock::new();
    &REFERENCES.get_or_init(|| {
        [false, true].map(|profile| {
            let options = if profile {
                profile_options()
            } else {
                strict_options()
            };
            let report = std::thread::spawn(move || bytejail::run(CANARY, CANARY_INPUT, &options))
                .join()
                .expect("the reference thread")
                .expect("the canary runs");
            let (rax, output) = canary_expected(CANARY_INPUT);
            match report.outcome {
                Outcome::Returned(regs) => assert_eq!(regs.rax, rax, "{}", report.summary()),
                _ => panic!("the canary did not return: {}", report.summary()),
            }
            assert_eq!(report.output, output, "the canary's output");
            essence(&report.to_json())
        })
    })[usize::from(profile)]
}

/// Computes both references now (call before the first case).
pub fn references() {
    reference(false);
}

/// The fuzzing process's descendants, as the kernel shows them in `/proc`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descendants {
    /// `pid (comm) state nspid...`, sorted.
    pub all: Vec<String>,
    /// Those a guest made: live processes inside a worker's PID namespace that are not its
    /// init (the worker), or in a namespace nested below a worker's.
    pub guest_made: Vec<String>,
}

/// A process as `/proc/PID/stat` and `status` show it.
struct Proc {
    pid: u32,
    ppid: u32,
    state: char,
    line: String,
    nspid: Vec<u32>,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let nspid: Vec<u32> = status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .map(|ids| {
            ids.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // A process whose every NSpid reads 0 is being released by its reaper between our reads
    // of `stat` and `status` (a batch's next job may be reaping its own worker right now): it
    // can no longer run.
    let state = if !nspid.is_empty() && nspid.iter().all(|&n| n == 0) {
        'X'
    } else {
        state
    };
    Some(Proc {
        pid,
        ppid,
        state,
        line: format!("{head}) {state} NSpid {nspid:?}"),
        nspid,
    })
}

impl Descendants {
    /// Every process whose parent chain reaches this process (its own threads are not
    /// processes in `/proc`'s list), live or zombie.
    pub fn now() -> Descendants {
        let me = std::process::id();
        let my_depth = read_proc(me).map_or(1, |p| p.nspid.len());
        let procs: BTreeMap<u32, Proc> = fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter_map(read_proc)
                    .map(|p| (p.pid, p))
                    .collect()
            })
            .unwrap_or_default();
        let descends = |mut pid: u32| {
            for _ in 0..64 {
                match procs.get(&pid) {
                    Some(p) if p.ppid == me => return true,
                    Some(p) if p.ppid > 1 => pid = p.ppid,
                    _ => return false,
                }
            }
            false
        };
        let mut found = Descendants::default();
        // bytejail's tracer process and cgroup janitor: the host's helpers, in the host's PID
        // namespace (a guest that names itself so is nested below its worker's namespace, and
        // still counts). The janitor is adopted by this process, a subreaper.
        let tracer = |p: &Proc| {
            p.nspid.len() == my_depth
                && (p.line.contains("(bytejail-tracer)") || p.line.contains("(bytejail-janitr)"))
        };
        for p in procs
            .values()
            .filter(|p| p.pid != me && descends(p.pid) && !tracer(p))
        {
            found.all.push(p.line.clone());
            let nested = p.nspid.len().saturating_sub(my_depth);
            let worker = nested == 1 && p.nspid.last() == Some(&1);
            if nested >= 1 && !worker && !matches!(p.state, 'Z' | 'X') {
                found.guest_made.push(p.line.clone());
            }
        }
        found
    }
}

/// Panics if a process the attacker made is alive (`when` says at which point).
fn check_no_guest_process(when: &str, case: &Case) {
    let now = Descendants::now();
    assert!(
        now.guest_made.is_empty(),
        "processes the attacker made are alive {when}: {:?}\nall descendants: {:?}\n{case:?}",
        now.guest_made,
        now.all
    );
}

/// The checks on the attacker's report that hold whatever it did: the runner reported, the
/// output within its limit, `output_truncated` exactly for `output_limit`, a timeout no
/// earlier than the deadline. (Under a profile it may die of any signal, or be killed by its
/// own processes; its record page is its own to write.)
fn check_attack_report(result: Result<Report, bytejail::Error>, options: &RunOptions) -> Report {
    let report =
        result.unwrap_or_else(|e| panic!("the attacker's job failed instead of reporting: {e}"));
    let limits = &options.limits;
    assert!(
        report.output.len() <= limits.max_output,
        "the attacker kept {} bytes of output; the limit is {}\n{}",
        report.output.len(),
        limits.max_output,
        report.summary()
    );
    assert_eq!(
        report.output_truncated,
        report.outcome == Outcome::OutputLimit,
        "output_truncated must be true exactly for output_limit\n{}",
        report.summary()
    );
    if report.outcome == Outcome::Timeout {
        assert!(
            report.wall >= limits.timeout,
            "timeout after {:?}, before the {:?} deadline\n{}",
            report.wall,
            limits.timeout,
            report.summary()
        );
    }
    assert!(
        report.wall <= limits.timeout + oracle::WALL_SLACK * 4,
        "the attacker's job took {:?}; its timeout is {:?}\n{}",
        report.wall,
        limits.timeout,
        report.summary()
    );
    report
}

/// Panics unless the canary's report (as JSON) has the reference's essence.
fn check_canary(json: &Value, case: &Case, attack: &str) {
    let profile = case.canary_options().policy != Policy::Strict;
    let want = reference(profile);
    let got = essence(json);
    assert!(
        &got == want,
        "the canary after the attacker differs from a fresh run of it\ncanary: {got}\nfresh:  \
         {want}\nattacker: {attack}\n{case:#?}"
    );
}

/// Runs one case and checks it; the host's descriptors, children and watched directory are the
/// caller's to compare around it. Returns the attacker's report summary (for the log).
pub fn check_case(host: &Host, case: &Case) -> String {
    let code = case.attacker();
    let attack = case.attack_options();
    let canary = case.canary_options();
    let before = Descendants::now();
    let summary = host.in_watched(|| match case.mode {
        Mode::Run => {
            let report = check_attack_report(bytejail::run(&code, ATTACK_INPUT, &attack), &attack);
            check_no_guest_process("after the attacker's report", case);
            assert_eq!(
                Descendants::now().all,
                before.all,
                "a process of the attacker's job outlived its report\n{case:?}"
            );
            let summary = report.summary();
            let report = bytejail::run(CANARY, CANARY_INPUT, &canary).expect("the canary runs");
            check_canary(&report.to_json(), case, &summary);
            summary
        }
        Mode::Pool => {
            let mut template = attack.clone();
            template.limits.timeout = CANARY_TIMEOUT;
            let pool = Pool::new(template, 1).expect("a pool starts");
            let report = check_attack_report(pool.run(&code, ATTACK_INPUT, &attack), &attack);
            check_no_guest_process("after the attacker's pooled report", case);
            let summary = report.summary();
            let report = pool
                .run(CANARY, CANARY_INPUT, &canary)
                .expect("the canary runs");
            check_canary(&report.to_json(), case, &summary);
            drop(pool);
            summary
        }
        Mode::SameCode => {
            let mut same = SameCode::new(&code, &attack).expect("a same-code worker starts");
            let report = check_attack_report(same.run_with(ATTACK_INPUT, &attack), &attack);
            drop(same);
            check_no_guest_process("after the attacker's same-code worker was dropped", case);
            let summary = report.summary();
            let mut same = SameCode::new(CANARY, &canary).expect("a same-code worker starts");
            let report = same
                .run_with(CANARY_INPUT, &canary)
                .expect("the canary runs");
            check_canary(&report.to_json(), case, &summary);
            summary
        }
        Mode::Batch | Mode::BatchSameCode => run_batch_case(case, &code, &attack),
    });
    let after = Descendants::now();
    assert_eq!(
        after.all, before.all,
        "processes outlived the case ({:?})\n{case:?}",
        case.mode
    );
    summary
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A batch of the attacker's line and the canary's, one job thread, in order; checks at each
/// result as it is written.
fn run_batch_case(case: &Case, code: &[u8], attack: &RunOptions) -> String {
    let reuse = if case.mode == Mode::BatchSameCode {
        Reuse::SameCode
    } else {
        Reuse::None
    };
    let mut defaults = profile_options();
    defaults.limits.max_procs = attack.limits.max_procs;
    let lines = format!(
        "{{\"id\":\"attacker\",\"code_hex\":\"{}\",\"input_hex\":\"{}\",\"timeout_ms\":{},\
         \"group\":\"g\"}}\n{{\"id\":\"canary\",\"code_hex\":\"{}\",\"input_hex\":\"{}\",\
         \"group\":\"g\"}}\n",
        hex(code),
        hex(ATTACK_INPUT),
        attack.limits.timeout.as_millis(),
        hex(CANARY),
        hex(CANARY_INPUT),
    );
    let config = BatchConfig::default()
        .with_defaults(defaults)
        .with_jobs(1)
        .with_ordered(true)
        .with_reuse(reuse);
    let mut out = Vec::new();
    let mut results = 0;
    batch::run_batch(Cursor::new(lines), &mut out, &config, &mut |_| {
        results += 1;
        // Without reuse the attacker's worker is reaped before its result; with reuse it is
        // ended when the canary's line (another code) replaces it.
        if results == 2 || reuse == Reuse::None {
            check_no_guest_process(&format!("at batch result {results}"), case);
        }
    })
    .expect("the batch runs");
    let out = String::from_utf8(out).expect("UTF-8 results");
    let lines: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON result line"))
        .collect();
    assert_eq!(lines.len(), 2, "two result lines: {out}");
    let attacker = &lines[0];
    assert!(
        attacker.get("error").is_none(),
        "the attacker's job failed instead of reporting: {attacker}"
    );
    assert_eq!(attacker["id"], "attacker", "{out}");
    let summary = format!("{}", attacker["outcome"]);
    check_canary(&lines[1], case, &summary);
    summary
}

/// A few cases worth starting from: each aims one of the attacks the runner must contain at
/// the runner's pages or processes, through one of the modes.
pub fn seeds() -> Vec<(&'static str, Case)> {
    use Arg::{Near, Previous, Value};
    use Region::{Blob, Code, Scratch, Stack};
    let case = |mode, max_procs, ending, calls| Case {
        mode,
        max_procs,
        canary_profile: false,
        ending,
        calls,
    };
    let c = Case::call;
    let page = Value(4096);
    vec![
        (
            "run_blob_writable_then_removed",
            case(
                Mode::Run,
                1,
                Ending::Return,
                vec![
                    c("mprotect", &[Near(Blob, 0), page, Value(7)]),
                    c("madvise", &[Near(Blob, 0), page, Value(9)]),
                    c("madvise", &[Near(Blob, 1), page, Value(4)]),
                    c(
                        "remap_file_pages",
                        &[Near(Blob, 1), page, Value(0), Value(0), Value(0)],
                    ),
                ],
            ),
        ),
        (
            "pool_fork_setsid_spin",
            case(
                Mode::Pool,
                8,
                Ending::Spin,
                vec![c("fork", &[]), c("setsid", &[]), c("fork", &[])],
            ),
        ),
        (
            "same_code_mremap_over_the_file",
            case(
                Mode::SameCode,
                1,
                Ending::Return,
                vec![
                    c(
                        "mremap",
                        &[
                            Near(Code, 0),
                            page,
                            Value(0x20_0000),
                            Value(0),
                            Near(Blob, 0),
                        ],
                    ),
                    c("mprotect", &[Near(Blob, 1), page, Value(7)]),
                ],
            ),
        ),
        (
            "batch_memfd_over_the_blob",
            case(
                Mode::Batch,
                1,
                Ending::Exit(7),
                vec![
                    c("memfd_create", &[Near(Scratch, 0), Value(0)]),
                    c(
                        "mmap",
                        &[
                            Near(Blob, 0),
                            page,
                            Value(7),
                            Value(0x11),
                            Previous,
                            Value(0),
                        ],
                    ),
                ],
            ),
        ),
        (
            "batch_same_code_shm_fork_kill_all",
            case(
                Mode::BatchSameCode,
                4,
                Ending::Return,
                vec![
                    c("shmget", &[Value(0), page, Value(0x3b6)]),
                    c("shmat", &[Previous, Near(Blob, 1), Value(0x4000)]),
                    c("fork", &[]),
                    c("kill", &[Value(u64::MAX), Value(9)]),
                ],
            ),
        ),
        (
            "run_thread_vfork_descriptors",
            case(
                Mode::Run,
                4,
                Ending::Exit(3),
                vec![
                    c(
                        "clone",
                        &[
                            Value(0x0005_0f00),
                            Near(Stack, -1),
                            Value(0),
                            Value(0),
                            Value(0),
                        ],
                    ),
                    c("vfork", &[]),
                    c(
                        "prctl",
                        &[Value(36), Value(1), Near(Scratch, 0), Value(0), Value(0)],
                    ),
                    c("dup2", &[Value(1), Value(0)]),
                    c("close", &[Value(1)]),
                    c("write", &[Value(0), Near(Blob, 0), page]),
                ],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_decode_from_their_encoding() {
        for (name, case) in seeds() {
            assert_eq!(Case::decode(&case.encode(), true), case, "{name}");
        }
    }

    #[test]
    fn the_attacker_finds_the_runner_pages_as_the_disassembler_reads_it() {
        let case = Case {
            mode: Mode::Run,
            max_procs: 1,
            canary_profile: false,
            ending: Ending::Return,
            calls: vec![Case::call(
                "mprotect",
                &[Arg::Near(Region::Blob, -2), Arg::Value(4096), Arg::Previous],
            )],
        };
        let text = bytejail::disasm::listing(&case.attacker());
        for want in [
            "mov r12,[rsp]",
            "and r12,0xfffffffffffff000",
            "mov r13,rdi",
            "mov r14,rdx",
            "mov r15,rsp",
            "lea rbx,[",
            "mov rdi,r12",
            "add rdi,0xffffffffffffe000",
            "mov rsi,0x1000",
            "mov rdx,rbp",
            "mov rax,0xa",
            "syscall",
            "mov rbp,rax",
            "mov rsp,r15",
            "ret",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
    }

    #[test]
    fn the_canary_is_the_code_its_comments_say() {
        let text = bytejail::disasm::listing(CANARY);
        for want in [
            "jae short 0x1c",
            "movzx eax,byte ptr [r12+rcx]",
            "jmp short 0xa",
            "syscall",
            "shl rbx,0x10",
            "ret",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
    }
}
