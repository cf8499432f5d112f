//! Seccomp policies: strict mode (mode 1), or a seccomp-bpf filter (mode 2) compiled from
//! strict mode's allow list or from a Docker/OCI seccomp profile.
//!
//! Every program bytejail installs has the same skeleton:
//!
//! ```text
//!   A = arch
//!   arch == x86_64 ? -> X86_64
//!   arch == i386   ? -> I386
//!   return REJECT                      unknown architecture
//! X86_64:
//!   A = nr
//!   nr >= 0x40000000 ? -> X32 (if the profile names x32) else return REJECT
//!   nr == RERAISE_NR ? return TRAP     the fault handler's own re-raise
//!   nr == exit, rt_sigreturn ? ALLOW   what the trampoline and the handler need
//!   rules, in profile order; the first that matches returns its action
//!   return DEFAULT
//! X32:    rules with x32 numbers, then DEFAULT   (only if the profile names x32)
//! I386:   rules with i386 numbers, then DEFAULT  (only if the profile names x86;
//!                                                 else return REJECT)
//! ```
//!
//! A rule is one syscall number plus the AND of its argument conditions; arguments are 64-bit
//! and compared unsigned, in two 32-bit halves. Every jump inside a rule stays inside it (BPF's
//! conditional jumps reach 255 instructions), and sections are reached with `ja`.
//!
//! Kill and trap actions compile to `SECCOMP_RET_TRAP`: the worker's SIGSYS handler records
//! which syscall it was, then re-raises SIGSYS with the default action so that the kernel, not
//! the guest, reports the death. The outcome is a syscall violation either way.
//!
//! The compiler is bytejail's own: the maintained Rust compilers target one architecture per
//! program and cannot express the ia32 section or the x32 check above.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::error::InputError;
use crate::syscalls::{self, Abi};

/// `AUDIT_ARCH_X86_64`: what `seccomp_data.arch` says for `syscall` (and x32).
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_I386`: what `seccomp_data.arch` says for `int 0x80`.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// The x32 ABI's bit in the syscall number.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// A syscall number that no kernel assigns and every bytejail filter traps: the fault
/// handler's stub issues it to die of SIGSYS with the default action.
pub const RERAISE_NR: u32 = 0x3fff_ffff;
/// Native syscalls every bytejail filter allows, whatever the profile says: the trampoline
/// leaves with `exit` (60) and the fault handler returns through `rt_sigreturn` (15). Neither
/// reaches outside the worker; strict mode allows both too.
pub const RUNNER_SYSCALLS: [u32; 2] = [60, 15];
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

// Classic BPF opcodes.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl Insn {
    /// The instruction's 8 bytes as the kernel reads them.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&self.code.to_le_bytes());
        b[2] = self.jt;
        b[3] = self.jf;
        b[4..8].copy_from_slice(&self.k.to_le_bytes());
        b
    }
}

/// What a matching rule (or the default) does with the syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// Fail the syscall with this errno.
    Errno(u16),
    /// Allow and log (`SECCOMP_RET_LOG`).
    Log,
    /// A violation: trap, record, end the worker (`SCMP_ACT_KILL*`, `SCMP_ACT_TRAP`).
    Violation,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => SECCOMP_RET_ALLOW,
            Action::Errno(e) => SECCOMP_RET_ERRNO | u32::from(e),
            Action::Log => SECCOMP_RET_LOG,
            Action::Violation => SECCOMP_RET_TRAP,
        }
    }
}

/// A comparison of one syscall argument, as in a profile's `args[]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgCheck {
    pub index: u8,
    pub op: CmpOp,
    pub value: u64,
    /// Only for `MaskedEq`: `(arg & value) == value_two`.
    pub value_two: u64,
}

/// `SCMP_CMP_*`: unsigned 64-bit comparisons of an argument with `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

impl CmpOp {
    /// Whether `arg` passes, by the profile's semantics (the reference for the compiler).
    pub fn holds(self, arg: u64, value: u64, value_two: u64) -> bool {
        match self {
            CmpOp::Eq => arg == value,
            CmpOp::Ne => arg != value,
            CmpOp::Lt => arg < value,
            CmpOp::Le => arg <= value,
            CmpOp::Gt => arg > value,
            CmpOp::Ge => arg >= value,
            CmpOp::MaskedEq => arg & value == value_two,
        }
    }
}

/// A rule: a syscall number, the AND of its argument checks, and its action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub nr: u32,
    pub args: Vec<ArgCheck>,
    pub action: Action,
}

/// A compiled filter: the rules per ABI, and the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    program: Arc<[Insn]>,
}

impl Filter {
    /// Compiles rules for the three ABIs. `None` for i386 or x32 rejects that entry outright.
    pub fn compile(
        x86_64: &[Rule],
        i386: Option<&[Rule]>,
        x32: Option<&[Rule]>,
        default: Action,
    ) -> Result<Filter, String> {
        let mut asm = Assembler::default();
        let (l_x64, l_i386, l_x32) = (asm.label(), asm.label(), asm.label());
        asm.load(DATA_ARCH);
        asm.jump_if(BPF_JEQ_K, AUDIT_ARCH_X86_64, l_x64);
        asm.jump_if(BPF_JEQ_K, AUDIT_ARCH_I386, l_i386);
        asm.ret(SECCOMP_RET_TRAP);

        asm.bind(l_x64);
        asm.load(DATA_NR);
        match x32 {
            Some(_) => asm.jump_if(BPF_JGE_K, X32_SYSCALL_BIT, l_x32),
            None => asm.ret_if(BPF_JGE_K, X32_SYSCALL_BIT, SECCOMP_RET_TRAP),
        }
        asm.ret_if(BPF_JEQ_K, RERAISE_NR, SECCOMP_RET_TRAP);
        for nr in RUNNER_SYSCALLS {
            asm.ret_if(BPF_JEQ_K, nr, SECCOMP_RET_ALLOW);
        }
        asm.rules(x86_64);
        asm.ret(default.ret());

        asm.bind(l_x32);
        if let Some(rules) = x32 {
            asm.rules(rules);
            asm.ret(default.ret());
        }

        asm.bind(l_i386);
        match i386 {
            Some(rules) => {
                asm.load(DATA_NR);
                asm.rules(rules);
                asm.ret(default.ret());
            }
            None => asm.ret(SECCOMP_RET_TRAP),
        }
        let program = asm.finish()?;
        if program.len() > MAX_INSNS {
            return Err(format!(
                "the filter has {} instructions; the kernel takes at most {MAX_INSNS}",
                program.len()
            ));
        }
        Ok(Filter {
            program: program.into(),
        })
    }

    /// Strict mode's allow list as a filter: `read`, `write`, `exit`, `rt_sigreturn` natively,
    /// `exit`, `read`, `write`, `sigreturn` through `int 0x80`, nothing through x32.
    pub fn strict_equivalent() -> Filter {
        let allow = |nrs: &[u32]| -> Vec<Rule> {
            nrs.iter()
                .map(|&nr| Rule {
                    nr,
                    args: Vec::new(),
                    action: Action::Allow,
                })
                .collect()
        };
        let native = allow(&[0, 1, 60, 15]);
        let ia32 = allow(&[1, 3, 4, 119]);
        Filter::compile(&native, Some(&ia32), None, Action::Violation)
            .expect("the strict-equivalent filter compiles")
    }

    /// The instructions.
    pub fn program(&self) -> &[Insn] {
        &self.program
    }

    /// The program's bytes, as `seccomp(SECCOMP_SET_MODE_FILTER)` reads them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.program
            .iter()
            .flat_map(|insn| insn.to_bytes())
            .collect()
    }

    /// Runs the program on a `seccomp_data` (arch, nr, args), as the kernel would: the return
    /// value. For tests and for explaining a profile; `None` if the program misbehaves (a jump
    /// out of range, a load outside `seccomp_data`, falling off the end).
    pub fn evaluate(&self, arch: u32, nr: u32, args: [u64; 6]) -> Option<u32> {
        let word = |off: u32| -> Option<u32> {
            match off {
                DATA_NR => Some(nr),
                DATA_ARCH => Some(arch),
                8 | 12 => Some(0), // instruction pointer: never used by our programs
                o if (DATA_ARGS..DATA_ARGS + 48).contains(&o) && o % 4 == 0 => {
                    let arg = args[((o - DATA_ARGS) / 8) as usize];
                    Some(if (o - DATA_ARGS) % 8 == 0 {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    })
                }
                _ => None,
            }
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let insn = self.program.get(pc)?;
            pc += 1;
            let jump =
                |taken: bool, pc: usize| pc + usize::from(if taken { insn.jt } else { insn.jf });
            match insn.code {
                BPF_LD_W_ABS => a = word(insn.k)?,
                BPF_ALU_AND_K => a &= insn.k,
                BPF_JA => pc += insn.k as usize,
                BPF_JEQ_K => pc = jump(a == insn.k, pc),
                BPF_JGT_K => pc = jump(a > insn.k, pc),
                BPF_JGE_K => pc = jump(a >= insn.k, pc),
                BPF_RET_K => return Some(insn.k),
                _ => return None,
            }
        }
    }
}

/// Which seccomp mode a run uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Strict mode (mode 1): `read`, `write`, `exit`, `rt_sigreturn`. The default.
    #[default]
    Strict,
    /// A filter with strict mode's allow list (mode 2), for comparison and diagnosis: it says
    /// which syscall a violation was.
    StrictBpf,
    /// A filter compiled from a seccomp profile.
    Profile { name: String, filter: Filter },
}

impl Policy {
    /// Parses `--policy`: `strict`, `strict-bpf`, or the path of a JSON profile.
    pub fn from_arg(arg: &str) -> Result<Policy, InputError> {
        match arg {
            "strict" => Ok(Policy::Strict),
            "strict-bpf" => Ok(Policy::StrictBpf),
            path => Policy::from_profile_file(Path::new(path)),
        }
    }

    /// Reads and compiles a profile file.
    pub fn from_profile_file(path: &Path) -> Result<Policy, InputError> {
        let text = std::fs::read_to_string(path).map_err(|source| InputError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::from_profile_json(&text, &path.display().to_string())
    }

    /// Compiles a profile given as JSON text; `name` names it in errors and reports.
    pub fn from_profile_json(text: &str, name: &str) -> Result<Policy, InputError> {
        let profile: Profile = serde_json::from_str(text)
            .map_err(|e| InputError::Invalid(format!("`{name}`: not a seccomp profile: {e}")))?;
        let filter = profile
            .compile()
            .map_err(|e| InputError::Invalid(format!("`{name}`: {e}")))?;
        Ok(Policy::Profile {
            name: name.to_string(),
            filter,
        })
    }

    /// The filter this policy installs; `None` for strict mode.
    pub fn filter(&self) -> Option<Filter> {
        match self {
            Policy::Strict => None,
            Policy::StrictBpf => Some(strict_bpf_filter()),
            Policy::Profile { filter, .. } => Some(filter.clone()),
        }
    }

    /// The policy's name in reports: `strict`, `strict-bpf` or the profile's.
    pub fn name(&self) -> &str {
        match self {
            Policy::Strict => "strict",
            Policy::StrictBpf => "strict-bpf",
            Policy::Profile { name, .. } => name,
        }
    }
}

fn strict_bpf_filter() -> Filter {
    static FILTER: std::sync::OnceLock<Filter> = std::sync::OnceLock::new();
    FILTER.get_or_init(Filter::strict_equivalent).clone()
}

// ---------------------------------------------------------------------------------------------
// The profile format (Docker's and the OCI runtime spec's `linux.seccomp`).

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Vec<SyscallEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArchMapEntry {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SyscallEntry {
    #[serde(default)]
    names: Vec<String>,
    /// The older single-name form.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<ArgEntry>>,
    /// Free text; accepted and ignored.
    #[serde(default, rename = "comment")]
    _comment: Option<String>,
    #[serde(default)]
    includes: Option<Filters>,
    #[serde(default)]
    excludes: Option<Filters>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArgEntry {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// Docker's conditions on a rule: it applies only with (includes) or without (excludes) these.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Filters {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

const ARCH_X86_64: &str = "SCMP_ARCH_X86_64";
const ARCH_X86: &str = "SCMP_ARCH_X86";
const ARCH_X32: &str = "SCMP_ARCH_X32";

impl Profile {
    fn compile(&self) -> Result<Filter, String> {
        if self.listener_path.is_some() || self.listener_metadata.is_some() {
            return Err(
                "listenerPath: user notification (SCMP_ACT_NOTIFY) is not supported".into(),
            );
        }
        if let Some(flag) = self.flags.iter().flatten().next() {
            return Err(format!(
                "flag `{flag}` is not supported; bytejail sets no filter flags"
            ));
        }
        let arches = self.arches()?;
        let default_errno = self.default_errno_ret;
        let default = parse_action(&self.default_action, default_errno, default_errno)
            .map_err(|e| format!("defaultAction: {e}"))?;

        let mut rules: [Vec<Rule>; 3] = Default::default();
        for (i, entry) in self.syscalls.iter().enumerate() {
            let at = |e: String| format!("syscalls[{i}]: {e}");
            let action = parse_action(&entry.action, entry.errno_ret, default_errno).map_err(at)?;
            let args = entry
                .args
                .iter()
                .flatten()
                .map(parse_arg)
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            let names: Vec<&str> = entry
                .names
                .iter()
                .map(String::as_str)
                .chain(entry.name.as_deref())
                .collect();
            if names.is_empty() {
                return Err(at("no `names`".into()));
            }
            for name in &names {
                if [Abi::X86_64, Abi::I386, Abi::X32]
                    .iter()
                    .all(|abi| syscalls::number(*abi, name).is_none())
                {
                    return Err(at(format!("unknown syscall name `{name}`")));
                }
            }
            for (slot, abi, arch) in [
                (0, Abi::X86_64, ARCH_X86_64),
                (1, Abi::I386, ARCH_X86),
                (2, Abi::X32, ARCH_X32),
            ] {
                if !arches.contains(&arch) || !entry.applies(arch) {
                    continue;
                }
                for name in &names {
                    if let Some(nr) = syscalls::number(abi, name) {
                        rules[slot].push(Rule {
                            nr,
                            args: args.clone(),
                            action,
                        });
                    }
                }
            }
        }
        let [x86_64, i386, x32] = &rules;
        Filter::compile(
            x86_64,
            arches.contains(&ARCH_X86).then_some(i386.as_slice()),
            arches.contains(&ARCH_X32).then_some(x32.as_slice()),
            default,
        )
    }

    /// The x86 ABIs the profile names (`architectures`, or `archMap`'s x86_64 entry); x86_64
    /// alone when it names none. Other architectures are ignored: they never reach this kernel.
    fn arches(&self) -> Result<Vec<&'static str>, String> {
        let mut named: Vec<&str> = Vec::new();
        if let Some(list) = &self.architectures {
            named.extend(list.iter().map(String::as_str));
        }
        for entry in self.arch_map.iter().flatten() {
            if entry.architecture == ARCH_X86_64 {
                named.push(ARCH_X86_64);
                named.extend(entry.sub_architectures.iter().map(String::as_str));
            }
        }
        if named.is_empty() {
            return Ok(vec![ARCH_X86_64]);
        }
        if !named.contains(&ARCH_X86_64) {
            return Err(format!(
                "the profile's architectures ({}) do not include {ARCH_X86_64}",
                named.join(", ")
            ));
        }
        Ok([ARCH_X86_64, ARCH_X86, ARCH_X32]
            .into_iter()
            .filter(|a| named.contains(a))
            .collect())
    }
}

impl SyscallEntry {
    /// Docker's includes/excludes for a worker on `arch` that holds no capabilities.
    fn applies(&self, arch: &str) -> bool {
        let kernel = kernel_version();
        let min_kernel_ok = |f: &Filters| {
            f.min_kernel
                .as_deref()
                .is_none_or(|v| parse_version(v).is_none_or(|min| kernel >= min))
        };
        if let Some(inc) = &self.includes {
            // A bytejail worker holds no capabilities: rules for holders of one never apply.
            if !inc.caps.is_empty()
                || (!inc.arches.is_empty() && !inc.arches.iter().any(|a| arch_matches(a, arch)))
                || !min_kernel_ok(inc)
            {
                return false;
            }
        }
        if let Some(exc) = &self.excludes {
            if exc.arches.iter().any(|a| arch_matches(a, arch)) {
                return false;
            }
        }
        true
    }
}

/// Docker writes arches both as `SCMP_ARCH_X86_64` and as `amd64`/`x86_64`/`x86`/`x32`.
fn arch_matches(named: &str, arch: &str) -> bool {
    let canonical = match named {
        "amd64" | "x86_64" => ARCH_X86_64,
        "x86" | "i386" | "386" => ARCH_X86,
        "x32" => ARCH_X32,
        other => other,
    };
    canonical == arch
}

fn parse_action(
    name: &str,
    errno: Option<u32>,
    default_errno: Option<u32>,
) -> Result<Action, String> {
    match name {
        "SCMP_ACT_ALLOW" => Ok(Action::Allow),
        "SCMP_ACT_LOG" => Ok(Action::Log),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" | "SCMP_ACT_KILL_PROCESS" | "SCMP_ACT_TRAP" => {
            Ok(Action::Violation)
        }
        "SCMP_ACT_ERRNO" => {
            let errno = errno.or(default_errno).unwrap_or(libc::EPERM as u32);
            u16::try_from(errno)
                .ok()
                .filter(|e| *e <= 4095)
                .map(Action::Errno)
                .ok_or_else(|| format!("errno {errno} is out of range (0..=4095)"))
        }
        "SCMP_ACT_TRACE" | "SCMP_ACT_NOTIFY" => Err(format!(
            "action `{name}` is not supported: a bytejail worker has no tracer or listener"
        )),
        other => Err(format!(
            "unknown action `{other}`; expected SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, \
             SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP or SCMP_ACT_LOG"
        )),
    }
}

fn parse_arg(arg: &ArgEntry) -> Result<ArgCheck, String> {
    let op = match arg.op.as_str() {
        "SCMP_CMP_EQ" => CmpOp::Eq,
        "SCMP_CMP_NE" => CmpOp::Ne,
        "SCMP_CMP_LT" => CmpOp::Lt,
        "SCMP_CMP_LE" => CmpOp::Le,
        "SCMP_CMP_GT" => CmpOp::Gt,
        "SCMP_CMP_GE" => CmpOp::Ge,
        "SCMP_CMP_MASKED_EQ" => CmpOp::MaskedEq,
        other => {
            return Err(format!(
                "unknown op `{other}`; expected SCMP_CMP_EQ, NE, LT, LE, GT, GE or MASKED_EQ"
            ))
        }
    };
    if arg.index > 5 {
        return Err(format!(
            "argument index {} is out of range (0..=5)",
            arg.index
        ));
    }
    Ok(ArgCheck {
        index: arg.index as u8,
        op,
        value: arg.value,
        value_two: arg.value_two,
    })
}

/// The running kernel's (major, minor), from uname; (0, 0) if unreadable.
fn kernel_version() -> (u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|v| parse_version(&v))
            .unwrap_or((0, 0))
    })
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

// ---------------------------------------------------------------------------------------------
// A tiny assembler with forward labels.

#[derive(Clone, Copy)]
struct Label(usize);

enum Target {
    /// Conditional jump over the `Ja` that follows it (which goes to the label).
    If(u16, u32),
    /// Conditional jump inside a rule: offsets relative to the rule's own instructions.
    Local(Insn),
    Ja(Label),
    Fixed(Insn),
}

#[derive(Default)]
struct Assembler {
    code: Vec<Target>,
    labels: Vec<Option<usize>>,
}

impl Assembler {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.code.len());
    }

    fn emit(&mut self, code: u16, jt: u8, jf: u8, k: u32) {
        self.code.push(Target::Fixed(Insn { code, jt, jf, k }));
    }

    fn load(&mut self, offset: u32) {
        self.emit(BPF_LD_W_ABS, 0, 0, offset);
    }

    fn ret(&mut self, value: u32) {
        self.emit(BPF_RET_K, 0, 0, value);
    }

    /// `if (A op k) goto label`: a conditional over the next instruction, then `ja label`.
    fn jump_if(&mut self, op: u16, k: u32, label: Label) {
        self.code.push(Target::If(op, k));
        self.code.push(Target::Ja(label));
    }

    /// `if (A op k) return value`.
    fn ret_if(&mut self, op: u16, k: u32, value: u32) {
        self.emit(op, 0, 1, k);
        self.ret(value);
    }

    /// One block per rule: `A = nr; if nr != rule.nr skip; checks (each failing skips the
    /// block); return action`. Leaves A = nr for the next block.
    fn rules(&mut self, rules: &[Rule]) {
        for rule in rules {
            let block = rule_block(rule);
            let len = block.len();
            // jf skips the whole block when the number differs.
            self.code.push(Target::Local(Insn {
                code: BPF_JEQ_K,
                jt: 0,
                jf: len as u8,
                k: rule.nr,
            }));
            self.code.extend(block.into_iter().map(Target::Local));
            if !rule.args.is_empty() {
                // The checks loaded arguments into A; restore the number for the next rule.
                self.load(DATA_NR);
            }
        }
    }

    fn finish(self) -> Result<Vec<Insn>, String> {
        let at = |label: Label| self.labels[label.0].ok_or("unbound label");
        let mut out = Vec::with_capacity(self.code.len());
        for (pc, target) in self.code.iter().enumerate() {
            out.push(match *target {
                Target::Fixed(insn) | Target::Local(insn) => insn,
                // Taken: fall into the following `ja`; not taken: skip it.
                Target::If(op, k) => Insn {
                    code: op,
                    jt: 0,
                    jf: 1,
                    k,
                },
                Target::Ja(label) => {
                    let to = at(label)?;
                    Insn {
                        code: BPF_JA,
                        jt: 0,
                        jf: 0,
                        k: (to - (pc + 1)) as u32,
                    }
                }
            });
        }
        Ok(out)
    }
}

/// The instructions of one rule after its number check: argument checks, each jumping past
/// the end of the block on failure, then the return. At most 6 checks of 7 instructions plus
/// the return: every offset fits in a byte.
fn rule_block(rule: &Rule) -> Vec<Insn> {
    // Each check is built with FAIL = u8::MAX as a placeholder, patched once the block's length
    // is known; PASS jumps are relative within the check.
    const FAIL: u8 = u8::MAX;
    let mut block: Vec<Insn> = Vec::new();
    let i = |code, jt, jf, k| Insn { code, jt, jf, k };
    for check in &rule.args {
        let hi_off = DATA_ARGS + 8 * u32::from(check.index) + 4;
        let lo_off = DATA_ARGS + 8 * u32::from(check.index);
        let (vhi, vlo) = ((check.value >> 32) as u32, check.value as u32);
        let ld = |off| i(BPF_LD_W_ABS, 0, 0, off);
        let checks: Vec<Insn> = match check.op {
            // hi == vhi && lo == vlo
            CmpOp::Eq => vec![
                ld(hi_off),
                i(BPF_JEQ_K, 0, FAIL, vhi),
                ld(lo_off),
                i(BPF_JEQ_K, 0, FAIL, vlo),
            ],
            // !(hi == vhi && lo == vlo)
            CmpOp::Ne => vec![
                ld(hi_off),
                i(BPF_JEQ_K, 0, 2, vhi),
                ld(lo_off),
                i(BPF_JEQ_K, FAIL, 0, vlo),
            ],
            // Gt: hi > vhi || (hi == vhi && lo > vlo); Ge the same with lo >= vlo.
            CmpOp::Gt | CmpOp::Ge => {
                let lo_op = if check.op == CmpOp::Gt {
                    BPF_JGT_K
                } else {
                    BPF_JGE_K
                };
                vec![
                    ld(hi_off),
                    i(BPF_JGT_K, 3, 0, vhi),
                    i(BPF_JEQ_K, 0, FAIL, vhi),
                    ld(lo_off),
                    i(lo_op, 0, FAIL, vlo),
                ]
            }
            // Lt is !Ge and Le is !Gt: hi < vhi || (hi == vhi && lo < vlo (Lt) or <= vlo (Le)).
            CmpOp::Lt | CmpOp::Le => {
                let lo_op = if check.op == CmpOp::Lt {
                    BPF_JGE_K
                } else {
                    BPF_JGT_K
                };
                vec![
                    ld(hi_off),
                    i(BPF_JGT_K, FAIL, 0, vhi),
                    i(BPF_JEQ_K, 0, 2, vhi),
                    ld(lo_off),
                    i(lo_op, FAIL, 0, vlo),
                ]
            }
            // (hi & mhi) == vhi && (lo & mlo) == vlo
            CmpOp::MaskedEq => {
                let (mhi, mlo) = ((check.value >> 32) as u32, check.value as u32);
                let (dhi, dlo) = ((check.value_two >> 32) as u32, check.value_two as u32);
                vec![
                    ld(hi_off),
                    i(BPF_ALU_AND_K, 0, 0, mhi),
                    i(BPF_JEQ_K, 0, FAIL, dhi),
                    ld(lo_off),
                    i(BPF_ALU_AND_K, 0, 0, mlo),
                    i(BPF_JEQ_K, 0, FAIL, dlo),
                ]
            }
        };
        block.extend(checks);
    }
    block.push(i(BPF_RET_K, 0, 0, rule.action.ret()));
    // Patch FAIL: from instruction j, jump to the end of the block (just past the return),
    // where the number is reloaded for the next rule.
    let len = block.len();
    for (j, insn) in block.iter_mut().enumerate() {
        let to_end = (len - (j + 1)) as u8;
        if insn.code != BPF_RET_K && insn.code != BPF_LD_W_ABS && insn.code != BPF_ALU_AND_K {
            if insn.jt == FAIL {
                insn.jt = to_end;
            }
            if insn.jf == FAIL {
                insn.jf = to_end;
            }
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    const X64: u32 = AUDIT_ARCH_X86_64;
    const I386: u32 = AUDIT_ARCH_I386;

    #[test]
    fn strict_equivalent_allows_exactly_the_strict_lists() {
        let f = Filter::strict_equivalent();
        for nr in 0..=1000u32 {
            let want = if [0, 1, 15, 60].contains(&nr) {
                SECCOMP_RET_ALLOW
            } else {
                SECCOMP_RET_TRAP
            };
            assert_eq!(f.evaluate(X64, nr, [0; 6]), Some(want), "x86_64 {nr}");
            let want = if [1, 3, 4, 119].contains(&nr) {
                SECCOMP_RET_ALLOW
            } else {
                SECCOMP_RET_TRAP
            };
            assert_eq!(f.evaluate(I386, nr, [0; 6]), Some(want), "i386 {nr}");
        }
        for nr in [0, 1, 15, 60, 512, 0x3fff_ffff] {
            assert_eq!(
                f.evaluate(X64, X32_SYSCALL_BIT | nr, [0; 6]),
                Some(SECCOMP_RET_TRAP)
            );
        }
        assert_eq!(
            f.evaluate(0xc000_00b7, 0, [0; 6]),
            Some(SECCOMP_RET_TRAP),
            "aarch64"
        );
        assert_eq!(f.evaluate(X64, RERAISE_NR, [0; 6]), Some(SECCOMP_RET_TRAP));
    }

    /// Every op against its reference semantics, on values around the 32-bit halves' edges.
    #[test]
    fn argument_comparisons_match_their_definition() {
        let values = [
            0u64,
            1,
            2,
            0xffff_fffe,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            0x2_0000_0000,
            0x7fff_ffff_ffff_ffff,
            u64::MAX - 1,
            u64::MAX,
            512,
            513,
            511,
        ];
        let ops = [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
            CmpOp::MaskedEq,
        ];
        for op in ops {
            for &value in &values {
                for &value_two in &[0u64, 1, 0xffff_ffff, 0x1_0000_0000] {
                    let rule = Rule {
                        nr: 1,
                        args: vec![ArgCheck {
                            index: 2,
                            op,
                            value,
                            value_two,
                        }],
                        action: Action::Errno(7),
                    };
                    let f = Filter::compile(&[rule], None, None, Action::Allow).unwrap();
                    for &arg in &values {
                        let want = if op.holds(arg, value, value_two) {
                            SECCOMP_RET_ERRNO | 7
                        } else {
                            SECCOMP_RET_ALLOW
                        };
                        let got = f.evaluate(X64, 1, [0, 0, arg, 0, 0, 0]);
                        assert_eq!(
                            got,
                            Some(want),
                            "{op:?} arg={arg:#x} value={value:#x} two={value_two:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn first_matching_rule_wins_and_the_default_catches_the_rest() {
        let rules = [
            Rule {
                nr: 1,
                args: vec![ArgCheck {
                    index: 0,
                    op: CmpOp::Eq,
                    value: 1,
                    value_two: 0,
                }],
                action: Action::Allow,
            },
            Rule {
                nr: 1,
                args: vec![],
                action: Action::Errno(9),
            },
            Rule {
                nr: 39,
                args: vec![],
                action: Action::Allow,
            },
        ];
        let f = Filter::compile(&rules, None, None, Action::Violation).unwrap();
        assert_eq!(
            f.evaluate(X64, 1, [1, 0, 0, 0, 0, 0]),
            Some(SECCOMP_RET_ALLOW)
        );
        assert_eq!(
            f.evaluate(X64, 1, [2, 0, 0, 0, 0, 0]),
            Some(SECCOMP_RET_ERRNO | 9)
        );
        assert_eq!(f.evaluate(X64, 39, [0; 6]), Some(SECCOMP_RET_ALLOW));
        assert_eq!(f.evaluate(X64, 40, [0; 6]), Some(SECCOMP_RET_TRAP));
        // No i386 section: the entry is rejected whatever the number.
        assert_eq!(f.evaluate(I386, 20, [0; 6]), Some(SECCOMP_RET_TRAP));
    }

    fn profile(json: &str) -> Result<Filter, String> {
        match Policy::from_profile_json(json, "p.json") {
            Ok(Policy::Profile { filter, .. }) => Ok(filter),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The classic libseccomp example of filter mode, as a profile.
    #[test]
    fn the_libseccomp_example_as_a_profile() {
        let f = profile(include_str!(
            "../guest-samples/policies/libseccomp-example.json"
        ))
        .unwrap();
        let write = |fd: u64, count: u64| f.evaluate(X64, 1, [fd, 0, count, 0, 0, 0]);
        assert_eq!(write(1, 512), Some(SECCOMP_RET_ALLOW));
        assert_eq!(write(1, 513), Some(SECCOMP_RET_TRAP));
        assert_eq!(write(2, 5), Some(SECCOMP_RET_ERRNO | 9));
        assert_eq!(
            write(1 | 1 << 32, 5),
            Some(SECCOMP_RET_ERRNO | 9),
            "64-bit fd compare"
        );
        for nr in [231, 39, 12] {
            assert_eq!(f.evaluate(X64, nr, [0; 6]), Some(SECCOMP_RET_ALLOW));
        }
        assert_eq!(f.evaluate(X64, 0, [0; 6]), Some(SECCOMP_RET_TRAP), "read");
        // What bytejail itself needs, whatever the profile says.
        assert_eq!(f.evaluate(X64, 60, [0; 6]), Some(SECCOMP_RET_ALLOW), "exit");
        assert_eq!(
            f.evaluate(X64, 15, [0; 6]),
            Some(SECCOMP_RET_ALLOW),
            "rt_sigreturn"
        );
        assert_eq!(
            f.evaluate(I386, 20, [0; 6]),
            Some(SECCOMP_RET_TRAP),
            "no x86 named"
        );
        assert_eq!(
            f.evaluate(X64, X32_SYSCALL_BIT | 39, [0; 6]),
            Some(SECCOMP_RET_TRAP),
            "no x32"
        );
    }

    #[test]
    fn named_sub_architectures_get_their_own_numbers() {
        let f = profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        assert_eq!(f.evaluate(X64, 39, [0; 6]), Some(SECCOMP_RET_ALLOW));
        assert_eq!(f.evaluate(I386, 20, [0; 6]), Some(SECCOMP_RET_ALLOW));
        assert_eq!(
            f.evaluate(X64, X32_SYSCALL_BIT | 39, [0; 6]),
            Some(SECCOMP_RET_ALLOW)
        );
        assert_eq!(f.evaluate(X64, 40, [0; 6]), Some(SECCOMP_RET_ERRNO | 38));
        assert_eq!(f.evaluate(I386, 39, [0; 6]), Some(SECCOMP_RET_ERRNO | 38));
    }

    #[test]
    fn docker_conditions_for_a_worker_without_capabilities() {
        let f = profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [
                  {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                  {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                  {"names": ["getppid"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
                  {"names": ["gettid"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}}
                ]}"#,
        )
        .unwrap();
        let eperm = Some(SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!(
            f.evaluate(X64, 165, [0; 6]),
            eperm,
            "mount needs a capability"
        );
        assert_eq!(f.evaluate(X64, 39, [0; 6]), Some(SECCOMP_RET_ALLOW));
        assert_eq!(
            f.evaluate(X64, 110, [0; 6]),
            eperm,
            "getppid is for arm64 only"
        );
        assert_eq!(f.evaluate(X64, 186, [0; 6]), Some(SECCOMP_RET_ALLOW));
    }

    #[test]
    fn bad_profiles_say_what_is_wrong() {
        let cases = [
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["frobnicate"], "action": "SCMP_ACT_ALLOW"}]}"#,
                "unknown syscall name `frobnicate`",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}"#,
                "unknown op `SCMP_CMP_SOMETIMES`",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
                "argument index 6 is out of range",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#,
                "unknown action `SCMP_ACT_MAYBE`",
            ),
            (r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#, "not supported"),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]}"#,
                "do not include SCMP_ARCH_X86_64",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 99999}"#,
                "",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "sycalls": []}"#,
                "unknown field `sycalls`",
            ),
            (r#"not json"#, "not a seccomp profile"),
        ];
        for (json, want) in cases {
            match profile(json) {
                Err(e) => assert!(
                    e.contains(want) && e.starts_with("`p.json`: "),
                    "{json}: {e}"
                ),
                Ok(_) if want.is_empty() => {}
                Ok(_) => panic!("{json} compiled"),
            }
        }
        assert!(
            profile(r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 99999}"#)
                .unwrap_err()
                .contains("errno 99999 is out of range")
        );
    }

    #[test]
    fn too_many_instructions_is_an_error_naming_the_limit() {
        let rules: Vec<Rule> = (0..3000)
            .map(|nr| Rule {
                nr,
                args: vec![],
                action: Action::Allow,
            })
            .collect();
        let err = Filter::compile(&rules, None, None, Action::Violation).unwrap_err();
        assert!(err.contains("the kernel takes at most 4096"), "{err}");
    }
}
