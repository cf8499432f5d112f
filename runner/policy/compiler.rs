//! The compiler: rules per ABI -> one seccomp program.
//!
//! ```text
//!   A = arch
//!   arch == x86_64 ? fall through : -> OTHER
//!   A = nr
//!   binary search over the numbers (x86_64 below 0x40000000, x32 above):
//!     each leaf is a return, or one number's rules: argument checks, first match returns
//!   rets of this section
//! OTHER:
//!   arch == i386 ? fall through : -> REJECT
//!   A = nr, binary search over the i386 numbers, rets      (or return REJECT: no x86 named)
//! REJECT: return TRAP (a standalone program: KILL_THREAD)
//! ```
//!
//! What every worker program decides, whatever the rules say (highest precedence first): the
//! fault handler's re-raise number traps, `exit` and `rt_sigreturn` are allowed (x86_64), the
//! extra rules of [`FilterExtras`], then the rules in order (the first whose number and checks
//! match returns its action), then the default. x32 numbers are rejected unless an x32 section is
//! given. A standalone program ([`FilterExtras::standalone`]) has no calls of bytejail's own.
//!
//! Arguments are compared unsigned: on 64 bits, in two halves, for x86_64; on their low 32 bits
//! for i386 and x32, as libseccomp compares them (`int 0x80` ignores the high halves).
//! A rule may have any number of checks: jumps too far for BPF's 8-bit offsets go through `ja`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use super::bpf::{Assembler, Dest, Insn, Label, BPF_ALU_AND_K, BPF_JEQ_K, BPF_JGE_K, BPF_JGT_K};
use super::interp::{self, SeccompData};
use super::{
    CompileError, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, MAX_INSNS, RERAISE_NR, RUNNER_SYSCALLS,
    X32_SYSCALL_BIT,
};
use crate::syscalls::{self, Abi};

pub(crate) const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
pub(crate) const SECCOMP_RET_KILL_THREAD: u32 = 0;
pub(crate) const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
pub(crate) const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
pub(crate) const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
pub(crate) const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

/// What a matching rule (or the default) does with the syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Let the syscall run.
    Allow,
    /// Fail the syscall with this errno (at most 4095).
    Errno(u16),
    /// Allow and log (`SECCOMP_RET_LOG`).
    Log,
    /// A violation: trap, record, end the worker (`SCMP_ACT_KILL*`, `SCMP_ACT_TRAP`).
    Violation,
    /// `SCMP_ACT_KILL` / `SCMP_ACT_KILL_THREAD`: a violation in a worker; itself in a
    /// standalone program.
    KillThread,
    /// `SCMP_ACT_KILL_PROCESS`: likewise.
    KillProcess,
    /// `SCMP_ACT_TRAP`: likewise.
    Trap,
}

impl Action {
    /// The `SECCOMP_RET_*` value a worker's program returns: every kill and trap is a trap
    /// that the worker's handler records.
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => SECCOMP_RET_ALLOW,
            Action::Errno(e) => SECCOMP_RET_ERRNO | u32::from(e & 0x0fff),
            Action::Log => SECCOMP_RET_LOG,
            Action::Violation | Action::KillThread | Action::KillProcess | Action::Trap => {
                SECCOMP_RET_TRAP
            }
        }
    }

    /// The value the program returns, in a worker's program or a standalone one (the
    /// profile's own actions: kills kill).
    pub fn ret_for(self, extras: &FilterExtras) -> u32 {
        if !extras.standalone {
            return self.ret();
        }
        match self {
            // libseccomp's bad-architecture action, SCMP_ACT_KILL, is a thread kill too.
            Action::Violation | Action::KillThread => SECCOMP_RET_KILL_THREAD,
            Action::KillProcess => SECCOMP_RET_KILL_PROCESS,
            other => other.ret(),
        }
    }

    /// Whether the action ends the guest as a violation in a worker.
    pub fn is_violation(self) -> bool {
        self.ret() == SECCOMP_RET_TRAP
    }
}

/// What a program returns for an architecture or ABI it does not handle.
fn reject(extras: &FilterExtras) -> u32 {
    Action::Violation.ret_for(extras)
}

/// A comparison of one syscall argument, as in a profile's `args[]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArgCheck {
    /// 0..=5.
    pub index: u8,
    /// How the argument is compared.
    pub op: CmpOp,
    /// What it is compared with (the mask, for `MaskedEq`).
    pub value: u64,
    /// Only for `MaskedEq`: `(arg & value) == (value_two & value)`.
    pub value_two: u64,
}

impl ArgCheck {
    /// Whether the check passes for `args`, comparing `width` bits (32 or 64).
    pub fn holds(&self, args: &[u64; 6], width: Width) -> bool {
        let arg = args[usize::from(self.index.min(5))];
        let m = width.mask();
        self.op.holds(arg & m, self.value & m, self.value_two & m)
    }
}

/// `SCMP_CMP_*`: unsigned comparisons of an argument with `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CmpOp {
    /// `SCMP_CMP_EQ`: equal.
    Eq,
    /// `SCMP_CMP_NE`: not equal.
    Ne,
    /// `SCMP_CMP_LT`: less than.
    Lt,
    /// `SCMP_CMP_LE`: less than or equal.
    Le,
    /// `SCMP_CMP_GT`: greater than.
    Gt,
    /// `SCMP_CMP_GE`: greater than or equal.
    Ge,
    /// `SCMP_CMP_MASKED_EQ`: equal under a mask.
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
            // libseccomp masks the datum too.
            CmpOp::MaskedEq => arg & value == value_two & value,
        }
    }
}

/// How many bits of each argument an ABI's rules compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Width {
    /// The low 32 bits.
    W32,
    /// All 64 bits.
    W64,
}

impl Width {
    fn mask(self) -> u64 {
        match self {
            Width::W32 => 0xffff_ffff,
            Width::W64 => u64::MAX,
        }
    }

    /// Which width an ABI's arguments are compared on: 32 bits for i386 (its registers) and
    /// x32 (libseccomp's width for it), 64 for x86_64.
    pub fn of(abi: Abi, extras: &FilterExtras) -> Width {
        match abi {
            Abi::I386 if !extras.i386_full_width => Width::W32,
            Abi::X32 => Width::W32,
            _ => Width::W64,
        }
    }
}

/// A rule: a syscall number, the AND of its argument checks, and its action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The syscall number in its ABI.
    pub nr: u32,
    /// Checks that must all hold (none: the number alone decides).
    pub args: Vec<ArgCheck>,
    /// What happens when the rule matches.
    pub action: Action,
}

/// The rules of a filter, per ABI, and its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// Rules for `syscall` with an x86_64 number.
    pub x86_64: Vec<Rule>,
    /// `None`: every `int 0x80` call is rejected.
    pub i386: Option<Vec<Rule>>,
    /// `None`: every x32 call is rejected.
    pub x32: Option<Vec<Rule>>,
    /// What a call no rule matches gets.
    pub default: Action,
}

/// Rules added in front of a filter's own, for one job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FilterExtras {
    /// `clone`, `clone3`, `fork` and `vfork` fail with `EAGAIN` whatever the profile says, in
    /// every ABI the filter lets through (for a job whose process limit is 1).
    pub deny_new_tasks: bool,
    /// Test-only: compare i386 arguments on all 64 bits of `seccomp_data.args`, as bytejail once
    /// did (a deny rule is then bypassed with a high half). The twin of the tests that show it
    /// is not.
    #[doc(hidden)]
    pub i386_full_width: bool,
    /// A program for another runner (`bwrap --seccomp`, `--add-seccomp-fd`): the profile's own
    /// actions (kills kill, traps trap), no calls of bytejail's own, other architectures and
    /// ABIs the profile does not name killed (`SECCOMP_RET_KILL_THREAD`, libseccomp's default).
    pub standalone: bool,
}

impl FilterExtras {
    /// Extras that deny new tasks (or not).
    pub fn deny_new_tasks(deny: bool) -> FilterExtras {
        FilterExtras {
            deny_new_tasks: deny,
            ..FilterExtras::default()
        }
    }

    /// Extras for a standalone program: see [`FilterExtras::standalone`].
    pub fn standalone() -> FilterExtras {
        FilterExtras {
            standalone: true,
            ..FilterExtras::default()
        }
    }

    /// The test-only switch [`FilterExtras::i386_full_width`].
    #[doc(hidden)]
    pub fn i386_full_width_for_tests() -> FilterExtras {
        FilterExtras {
            i386_full_width: true,
            ..FilterExtras::default()
        }
    }
}

const NEW_TASK_CALLS: [&str; 4] = ["clone", "clone3", "fork", "vfork"];
/// `EAGAIN` (11), what `fork` returns at a process limit.
const EAGAIN: u16 = 11;

/// A compiled filter: the program, and the rules it came from.
#[derive(Clone, Debug)]
pub struct Filter {
    program: Arc<[Insn]>,
    rules: Arc<RuleSet>,
    extras: FilterExtras,
    /// Names the profile listed that no x86 ABI has.
    skipped: Arc<[String]>,
    /// The same rules with new tasks denied, compiled once when first asked for.
    no_new_tasks: Arc<OnceLock<Result<Filter, CompileError>>>,
}

impl PartialEq for Filter {
    fn eq(&self, other: &Filter) -> bool {
        self.program == other.program
    }
}

impl Eq for Filter {}

impl Filter {
    /// Compiles rules for the three ABIs. `None` for i386 or x32 rejects that entry outright.
    pub fn compile(
        x86_64: &[Rule],
        i386: Option<&[Rule]>,
        x32: Option<&[Rule]>,
        default: Action,
    ) -> Result<Filter, CompileError> {
        let rules = RuleSet {
            x86_64: x86_64.to_vec(),
            i386: i386.map(<[Rule]>::to_vec),
            x32: x32.map(<[Rule]>::to_vec),
            default,
        };
        Filter::from_rules(Arc::new(rules), FilterExtras::default())
    }

    /// Compiles `rules` with `extras` in front of them.
    pub fn from_rules(rules: Arc<RuleSet>, extras: FilterExtras) -> Result<Filter, CompileError> {
        for rule in rules
            .x86_64
            .iter()
            .chain(rules.i386.iter().flatten())
            .chain(rules.x32.iter().flatten())
        {
            if let Some(check) = rule.args.iter().find(|c| c.index > 5) {
                return Err(CompileError::ArgIndex {
                    index: u32::from(check.index),
                });
            }
            if let Action::Errno(errno) = rule.action {
                if errno > 4095 {
                    return Err(CompileError::Errno {
                        errno: u32::from(errno),
                    });
                }
            }
        }
        let program = compile(&rules, &extras)?;
        if program.len() > MAX_INSNS {
            return Err(CompileError::TooLong {
                insns: program.len(),
                max: MAX_INSNS,
            });
        }
        Ok(Filter {
            program: program.into(),
            rules,
            extras,
            skipped: Arc::new([]),
            no_new_tasks: Arc::default(),
        })
    }

    /// A program compiled elsewhere (libseccomp's, say), installed as it is: for comparing
    /// installation costs. It has no rules: [`Filter::decide`] and [`Filter::with_extras`]
    /// know nothing of it (they answer for an empty rule set that rejects everything).
    pub fn from_program(program: Vec<Insn>) -> Result<Filter, CompileError> {
        if program.len() > MAX_INSNS {
            return Err(CompileError::TooLong {
                insns: program.len(),
                max: MAX_INSNS,
            });
        }
        Ok(Filter {
            program: program.into(),
            rules: Arc::new(RuleSet {
                x86_64: Vec::new(),
                i386: None,
                x32: None,
                default: Action::Violation,
            }),
            extras: FilterExtras::default(),
            skipped: Arc::new([]),
            no_new_tasks: Arc::default(),
        })
    }

    /// Reads a raw `struct sock_filter` program (8 bytes per instruction, little endian).
    pub fn parse_program(bytes: &[u8]) -> Option<Vec<Insn>> {
        if bytes.len() % 8 != 0 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(8)
                .map(|b| Insn {
                    code: u16::from_le_bytes([b[0], b[1]]),
                    jt: b[2],
                    jf: b[3],
                    k: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                })
                .collect(),
        )
    }

    /// This filter's rules compiled with other extras (the names skipped carry over).
    pub fn with_extras(&self, extras: &FilterExtras) -> Result<Filter, CompileError> {
        if *extras == self.extras {
            return Ok(self.clone());
        }
        let compile = || {
            let mut filter = Filter::from_rules(self.rules.clone(), *extras)?;
            filter.skipped = self.skipped.clone();
            Ok(filter)
        };
        if self.extras == FilterExtras::default() && *extras == FilterExtras::deny_new_tasks(true) {
            return self.no_new_tasks.get_or_init(compile).clone();
        }
        compile()
    }

    /// Names the profile listed that no x86 ABI has: skipped, as Docker skips them.
    pub fn skipped_names(&self) -> &[String] {
        &self.skipped
    }

    pub(crate) fn set_skipped(&mut self, skipped: Vec<String>) {
        self.skipped = skipped.into();
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

    /// The rules the program was compiled from.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// [`Filter::to_bytes`], with every violation's trap made a kill of the process: for a
    /// traced worker, which needs no handler to learn the call (see `crate::tracer`), and
    /// whose guest must not be able to catch its own violation with a SIGSYS handler.
    pub(crate) fn to_bytes_killing_violations(&self) -> Vec<u8> {
        const BPF_RET_K: u16 = 0x06;
        self.program
            .iter()
            .map(|insn| {
                let mut insn = *insn;
                if insn.code == BPF_RET_K && insn.k & 0xffff_0000 == SECCOMP_RET_TRAP {
                    insn.k = SECCOMP_RET_KILL_PROCESS;
                }
                insn
            })
            .flat_map(|insn| insn.to_bytes())
            .collect()
    }

    /// The program's bytes, as `seccomp(SECCOMP_SET_MODE_FILTER)` reads them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.program
            .iter()
            .flat_map(|insn| insn.to_bytes())
            .collect()
    }

    /// Runs the program on a `seccomp_data` (arch, nr, args), as the kernel would: the return
    /// value. `None` if the program misbehaves (a jump out of range, a load outside
    /// `seccomp_data`, falling off the end).
    pub fn evaluate(&self, arch: u32, nr: u32, args: [u64; 6]) -> Option<u32> {
        interp::run(&self.program, &SeccompData::new(arch, nr, args))
    }

    /// What the rules decide for a syscall, evaluated directly rather than through the
    /// program: the reference the program must agree with.
    pub fn decide(&self, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        decide(&self.rules, &self.extras, arch, nr, &args)
    }

    /// The longest path through the program, in instructions executed.
    pub fn longest_path(&self) -> usize {
        longest_path(&self.program)
    }
}

/// The rules of one number, in order, highest precedence first.
type Groups = BTreeMap<u32, Vec<Rule>>;

/// The rules that apply to each ABI, with bytejail's own and the extras in front.
fn groups(rules: &RuleSet, extras: &FilterExtras, abi: Abi) -> Option<Groups> {
    let own: &[Rule] = match abi {
        Abi::X86_64 => &rules.x86_64,
        Abi::I386 => rules.i386.as_deref()?,
        Abi::X32 => rules.x32.as_deref()?,
    };
    let mut groups = Groups::new();
    let mut add = |nr: u32, args: Vec<ArgCheck>, action: Action| {
        groups
            .entry(nr)
            .or_default()
            .push(Rule { nr, args, action });
    };
    if abi == Abi::X86_64 && !extras.standalone {
        add(RERAISE_NR, Vec::new(), Action::Violation);
        for nr in RUNNER_SYSCALLS {
            add(nr, Vec::new(), Action::Allow);
        }
    }
    if extras.deny_new_tasks {
        for name in NEW_TASK_CALLS {
            if let Some(nr) = syscalls::number(abi, name) {
                add(nr, Vec::new(), Action::Errno(EAGAIN));
            }
        }
    }
    for rule in own {
        // On the x86_64 arch every number from the x32 bit up is x32's (libseccomp's split).
        let in_range = match abi {
            Abi::X32 => rule.nr >= X32_SYSCALL_BIT,
            Abi::X86_64 => rule.nr < X32_SYSCALL_BIT,
            Abi::I386 => true,
        };
        if in_range {
            add(rule.nr, rule.args.clone(), rule.action);
        }
    }
    Some(groups)
}

/// The reference: what `rules` decide, without BPF (and without building the groups, so that
/// tests can ask it often).
pub(crate) fn decide(
    rules: &RuleSet,
    extras: &FilterExtras,
    arch: u32,
    nr: u32,
    args: &[u64; 6],
) -> u32 {
    let abi = match arch {
        AUDIT_ARCH_X86_64 if nr == u32::MAX => return rules.default.ret_for(extras),
        AUDIT_ARCH_X86_64 if nr >= X32_SYSCALL_BIT => Abi::X32,
        AUDIT_ARCH_X86_64 => Abi::X86_64,
        AUDIT_ARCH_I386 => Abi::I386,
        _ => return reject(extras),
    };
    let own: &[Rule] = match abi {
        Abi::X86_64 => &rules.x86_64,
        Abi::I386 => match &rules.i386 {
            Some(r) => r,
            None => return reject(extras),
        },
        Abi::X32 => match &rules.x32 {
            Some(r) => r,
            None => return reject(extras),
        },
    };
    if abi == Abi::X86_64 && !extras.standalone {
        if nr == RERAISE_NR {
            return SECCOMP_RET_TRAP;
        }
        if RUNNER_SYSCALLS.contains(&nr) {
            return SECCOMP_RET_ALLOW;
        }
    }
    if extras.deny_new_tasks
        && NEW_TASK_CALLS
            .iter()
            .any(|name| syscalls::number(abi, name) == Some(nr))
    {
        return Action::Errno(EAGAIN).ret_for(extras);
    }
    let width = Width::of(abi, extras);
    own.iter()
        .find(|rule| rule.nr == nr && rule.args.iter().all(|c| c.holds(args, width)))
        .map_or(rules.default, |rule| rule.action)
        .ret_for(extras)
}

/// A stretch of syscall numbers and what decides them.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Leaf {
    Ret(u32),
    /// One number whose first rule checks arguments.
    Rules(u32),
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    start: u32,
    leaf: Leaf,
}

/// Cuts `[lo, hi]` into segments: each number with rules, and the gaps between, which
/// `background` decides. Neighbouring segments that return the same value merge.
fn segments(
    groups: &Groups,
    lo: u32,
    hi: u32,
    background: u32,
    extras: &FilterExtras,
    out: &mut Vec<Segment>,
) {
    let mut push = |start: u32, leaf: Leaf| {
        if let (Some(last), Leaf::Ret(_)) = (out.last(), leaf) {
            if last.leaf == leaf {
                return;
            }
        }
        out.push(Segment { start, leaf });
    };
    let mut next = Some(lo);
    for (&nr, rules) in groups.range(lo..=hi) {
        if next.is_some_and(|n| n < nr) {
            push(next.unwrap_or(lo), Leaf::Ret(background));
        }
        let leaf = match rules.first() {
            Some(rule) if rule.args.is_empty() => Leaf::Ret(rule.action.ret_for(extras)),
            _ => Leaf::Rules(nr),
        };
        push(nr, leaf);
        next = nr.checked_add(1);
    }
    if let Some(n) = next.filter(|&n| n <= hi) {
        push(n, Leaf::Ret(background));
    }
}

/// One section's emitter: the tree over its numbers, rule bodies, and its returns.
struct Section<'a> {
    asm: &'a mut Assembler,
    extras: FilterExtras,
    groups: BTreeMap<u32, Vec<Rule>>,
    width: Width,
    default: u32,
    rets: Vec<(u32, Label)>,
}

impl Section<'_> {
    fn ret_label(&mut self, value: u32) -> Label {
        if let Some(&(_, label)) = self.rets.iter().find(|(v, _)| *v == value) {
            return label;
        }
        let label = self.asm.label();
        self.rets.push((value, label));
        label
    }

    /// Where a jump to `segs` goes without emitting anything: a return's label.
    fn direct(&mut self, segs: &[Segment]) -> Option<Label> {
        match segs {
            [Segment {
                leaf: Leaf::Ret(value),
                ..
            }] => Some(self.ret_label(*value)),
            _ => None,
        }
    }

    /// A binary search over `segs` (A holds the number): `A >= start of the right half`.
    fn tree(&mut self, segs: &[Segment]) -> Result<(), CompileError> {
        match segs {
            [] => Err(CompileError::Internal("an empty segment list")),
            [Segment {
                leaf: Leaf::Ret(value),
                ..
            }] => {
                let label = self.ret_label(*value);
                self.asm.ja(label);
                Ok(())
            }
            [Segment {
                leaf: Leaf::Rules(nr),
                ..
            }] => self.rules(*nr),
            _ => {
                let (left, right) = segs.split_at(segs.len() / 2);
                let right_label = match self.direct(right) {
                    Some(label) => (label, false),
                    None => (self.asm.label(), true),
                };
                let left_dest = match self.direct(left) {
                    Some(label) => Dest::To(label),
                    None => Dest::Next,
                };
                self.asm.jump(
                    BPF_JGE_K,
                    right[0].start,
                    Dest::To(right_label.0),
                    left_dest,
                );
                if left_dest == Dest::Next {
                    self.tree(left)?;
                }
                if right_label.1 {
                    self.asm.bind(right_label.0);
                    self.tree(right)?;
                }
                Ok(())
            }
        }
    }

    /// The rules of one number, in order; the first whose checks all pass returns its action.
    fn rules(&mut self, nr: u32) -> Result<(), CompileError> {
        let rules = self.groups.remove(&nr).unwrap_or_default();
        for rule in &rules {
            let ret = self.ret_label(rule.action.ret_for(&self.extras));
            if rule.args.is_empty() {
                self.asm.ja(ret);
                return Ok(());
            }
            let next = self.asm.label();
            let last = rule.args.len() - 1;
            for (i, check) in rule.args.iter().enumerate() {
                let pass = if i == last { Dest::To(ret) } else { Dest::Next };
                self.check(check, pass, next);
            }
            self.asm.bind(next);
        }
        let default = self.ret_label(self.default);
        self.asm.ja(default);
        Ok(())
    }

    /// One argument check: falls through or goes to `pass` when it holds, to `fail` if not.
    fn check(&mut self, check: &ArgCheck, pass: Dest, fail: Label) {
        let asm = &mut *self.asm;
        let fail = Dest::To(fail);
        let lo_off = DATA_ARGS + 8 * u32::from(check.index);
        let hi_off = lo_off + 4;
        let (vhi, vlo) = halves(check.value);
        let (dhi, dlo) = halves(check.value_two & check.value);
        // Pass from the high half: to `pass`, or past this check.
        let early = asm.label();
        let pass_early = match pass {
            Dest::Next => Dest::To(early),
            to => to,
        };
        if self.width == Width::W64 {
            asm.load(hi_off);
            match check.op {
                CmpOp::Eq => asm.jump(BPF_JEQ_K, vhi, Dest::Next, fail),
                CmpOp::Ne => asm.jump(BPF_JEQ_K, vhi, Dest::Next, pass_early),
                CmpOp::Gt | CmpOp::Ge => {
                    asm.jump(BPF_JGT_K, vhi, pass_early, Dest::Next);
                    asm.jump(BPF_JEQ_K, vhi, Dest::Next, fail);
                }
                CmpOp::Lt | CmpOp::Le => {
                    asm.jump(BPF_JGT_K, vhi, fail, Dest::Next);
                    asm.jump(BPF_JEQ_K, vhi, Dest::Next, pass_early);
                }
                CmpOp::MaskedEq => {
                    asm.stmt(BPF_ALU_AND_K, vhi);
                    asm.jump(BPF_JEQ_K, dhi, Dest::Next, fail);
                }
            }
        }
        asm.load(lo_off);
        match check.op {
            CmpOp::Eq => asm.jump(BPF_JEQ_K, vlo, pass, fail),
            CmpOp::Ne => asm.jump(BPF_JEQ_K, vlo, fail, pass),
            CmpOp::Gt => asm.jump(BPF_JGT_K, vlo, pass, fail),
            CmpOp::Ge => asm.jump(BPF_JGE_K, vlo, pass, fail),
            CmpOp::Lt => asm.jump(BPF_JGE_K, vlo, fail, pass),
            CmpOp::Le => asm.jump(BPF_JGT_K, vlo, fail, pass),
            CmpOp::MaskedEq => {
                asm.stmt(BPF_ALU_AND_K, vlo);
                asm.jump(BPF_JEQ_K, dlo, pass, fail);
            }
        }
        asm.bind(early);
    }

    /// The returns this section jumped to.
    fn finish(self) {
        for (value, label) in self.rets {
            self.asm.bind(label);
            self.asm.ret(value);
        }
    }
}

/// The high and low 32-bit halves of a 64-bit value.
fn halves(v: u64) -> (u32, u32) {
    let hi = u32::try_from(v >> 32).unwrap_or(u32::MAX);
    let lo = u32::try_from(v & 0xffff_ffff).unwrap_or(u32::MAX);
    (hi, lo)
}

fn compile(rules: &RuleSet, extras: &FilterExtras) -> Result<Vec<Insn>, CompileError> {
    let mut asm = Assembler::default();
    let default = rules.default.ret_for(extras);
    let rejected = reject(extras);
    let (other, reject_label) = (asm.label(), asm.label());
    asm.load(DATA_ARCH);
    asm.jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, Dest::Next, Dest::To(other));

    // x86_64 and x32 share the arch value: one search over both ranges of numbers.
    let native = groups(rules, extras, Abi::X86_64).unwrap_or_default();
    let x32 = groups(rules, extras, Abi::X32);
    let mut segs = Vec::new();
    segments(&native, 0, X32_SYSCALL_BIT - 1, default, extras, &mut segs);
    let x32_background = if x32.is_some() { default } else { rejected };
    let x32 = x32.unwrap_or_default();
    // Number -1 (what a tracer sets to skip a call) is decided by the default, as libseccomp
    // decides it; the kernel runs no syscall for it.
    let below_minus_one = u32::MAX - 1;
    segments(
        &x32,
        X32_SYSCALL_BIT,
        below_minus_one,
        x32_background,
        extras,
        &mut segs,
    );
    segments(
        &Groups::new(),
        u32::MAX,
        u32::MAX,
        default,
        extras,
        &mut segs,
    );
    let mut both = native;
    both.extend(x32);
    asm.load(DATA_NR);
    let mut section = Section {
        asm: &mut asm,
        extras: *extras,
        groups: both,
        width: Width::W64,
        default,
        rets: Vec::new(),
    };
    emit_split(&mut section, &segs, extras)?;
    section.finish();

    asm.bind(other);
    asm.jump(
        BPF_JEQ_K,
        AUDIT_ARCH_I386,
        Dest::Next,
        Dest::To(reject_label),
    );
    match groups(rules, extras, Abi::I386) {
        Some(i386) => {
            let mut segs = Vec::new();
            segments(&i386, 0, u32::MAX, default, extras, &mut segs);
            asm.load(DATA_NR);
            let mut section = Section {
                asm: &mut asm,
                extras: *extras,
                groups: i386,
                width: Width::of(Abi::I386, extras),
                default,
                rets: Vec::new(),
            };
            section.tree(&segs)?;
            section.finish();
        }
        None => asm.ret(rejected),
    }
    asm.bind(reject_label);
    asm.ret(rejected);
    asm.finish()
}

/// The x86_64 arch's search: x86_64 numbers compared on 64 bits, x32's as [`Width::of`] says.
fn emit_split(
    section: &mut Section<'_>,
    segs: &[Segment],
    extras: &FilterExtras,
) -> Result<(), CompileError> {
    let x32_width = Width::of(Abi::X32, extras);
    if x32_width == Width::W64 {
        return section.tree(segs);
    }
    // Split at the x32 bit first, so each half knows its width.
    let cut = segs
        .iter()
        .position(|s| s.start >= X32_SYSCALL_BIT)
        .unwrap_or(segs.len());
    let (native, x32) = segs.split_at(cut);
    if x32.is_empty() || native.is_empty() {
        return section.tree(segs);
    }
    let right = match section.direct(x32) {
        Some(label) => (label, false),
        None => (section.asm.label(), true),
    };
    section
        .asm
        .jump(BPF_JGE_K, x32[0].start, Dest::To(right.0), Dest::Next);
    section.tree(native)?;
    if right.1 {
        section.asm.bind(right.0);
        section.width = x32_width;
        section.tree(x32)?;
        section.width = Width::W64;
    }
    Ok(())
}

/// The most instructions any run of `program` executes (jumps only go forward).
pub fn longest_path(program: &[Insn]) -> usize {
    // longest[i]: the most instructions executed from i to a return.
    let mut longest = vec![0usize; program.len() + 1];
    for i in (0..program.len()).rev() {
        let insn = program[i];
        let at = |off: usize| longest.get(i + 1 + off).copied().unwrap_or(0);
        longest[i] = 1 + match insn.code & 0x07 {
            0x06 => 0,
            0x05 if insn.code & 0xf0 == 0 => at(usize::try_from(insn.k).unwrap_or(usize::MAX)),
            0x05 => at(usize::from(insn.jt)).max(at(usize::from(insn.jf))),
            _ => at(0),
        };
    }
    longest[0]
}
