//! What `bytejail policy check | compile | explain` report about a profile: the profile as
//! bytejail reads it, its program, and the decision for one call with the entry that made it.

use serde::Serialize;

use super::bpf::Insn;
use super::compiler::{Action, FilterExtras, RuleSet, Width};
use super::profile::{Converted, ProfileError, ProfileFile};
use super::{
    Filter, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, RERAISE_NR, RUNNER_SYSCALLS, X32_SYSCALL_BIT,
};
use crate::syscalls::{self, Abi};

/// A profile, loaded and converted, with both programs.
#[derive(Debug)]
pub struct Loaded {
    /// The profile as read.
    pub profile: ProfileFile,
    /// The profile as rules.
    pub converted: Converted,
    /// The program a bytejail worker installs.
    pub worker: Filter,
    /// The program with the profile's own actions, for another runner.
    pub standalone: Filter,
}

impl Loaded {
    /// Parses and converts a profile and compiles both programs.
    pub fn parse(text: &str) -> Result<Loaded, ProfileError> {
        let profile = ProfileFile::parse(text)?;
        let converted = profile.convert()?;
        let rules = std::sync::Arc::new(converted.rules.clone());
        let worker = Filter::from_rules(rules.clone(), FilterExtras::default())?;
        let standalone = Filter::from_rules(rules, FilterExtras::standalone())?;
        Ok(Loaded {
            profile,
            converted,
            worker,
            standalone,
        })
    }

    fn entry_names(&self, entry: usize) -> Vec<String> {
        let Some(e) = self.profile.syscalls.iter().flatten().nth(entry) else {
            return Vec::new();
        };
        e.names
            .iter()
            .flatten()
            .chain(e.name.iter())
            .cloned()
            .collect()
    }

    /// `policy check`: what was skipped, what makes no rule, what is shadowed.
    pub fn check(&self) -> CheckReport {
        let used: std::collections::BTreeSet<usize> =
            self.converted.origins.iter().flatten().copied().collect();
        let unused: Vec<EntryNote> = self
            .converted
            .unused
            .iter()
            .map(|(i, why)| EntryNote {
                entry: *i,
                names: self.entry_names(*i),
                why: why.to_string(),
            })
            .collect();
        let shadowed = (0..self.profile.syscalls.iter().flatten().count())
            .filter(|i| !used.contains(i) && !self.converted.unused.iter().any(|(u, _)| u == i))
            .map(|i| EntryNote {
                entry: i,
                names: self.entry_names(i),
                why: "an earlier or unconditional rule decides every one of its calls \
                      (libseccomp: the first rule without conditions wins)"
                    .to_string(),
            })
            .collect();
        // An entry with conditions on a socket or IPC call: through socketcall / ipc only the
        // call's number is checked (the call's own arguments are in memory, out of reach).
        let multiplexed = if self.converted.rules.i386.is_some() {
            self.profile
                .syscalls
                .iter()
                .flatten()
                .enumerate()
                .filter(|(i, e)| {
                    used.contains(i)
                        && e.args.as_ref().is_some_and(|a| !a.is_empty())
                        && self
                            .entry_names(*i)
                            .iter()
                            .any(|n| super::profile::multiplexed(n).is_some())
                })
                .map(|(i, _)| EntryNote {
                    entry: i,
                    names: self.entry_names(i),
                    why: "through int 0x80 the same call made with socketcall or ipc is \
                          checked on the call's number alone (its arguments are in memory), \
                          as libseccomp and Docker do: the conditions do not hold there"
                        .to_string(),
                })
                .collect()
        } else {
            Vec::new()
        };
        CheckReport {
            multiplexed,
            instructions: self.worker.program().len(),
            longest_path: self.worker.longest_path(),
            i386: self.converted.rules.i386.is_some(),
            x32: self.converted.rules.x32.is_some(),
            skipped: self.converted.skipped.clone(),
            unused,
            shadowed,
        }
    }

    /// `policy explain`: the decision for one call, and why.
    pub fn explain(&self, abi: Abi, nr: u32, args: [u64; 6]) -> Explanation {
        let arch = if abi == Abi::I386 {
            AUDIT_ARCH_I386
        } else {
            AUDIT_ARCH_X86_64
        };
        let rules: &RuleSet = &self.converted.rules;
        let (section, origins) = match abi {
            Abi::X86_64 => (Some(&rules.x86_64), &self.converted.origins[0]),
            Abi::I386 => (rules.i386.as_ref(), &self.converted.origins[1]),
            Abi::X32 => (rules.x32.as_ref(), &self.converted.origins[2]),
        };
        let width = if abi == Abi::X86_64 {
            Width::W64
        } else {
            Width::W32
        };
        let (action, because, entry) = if abi == Abi::X86_64 && nr == RERAISE_NR {
            (
                Action::Violation,
                "bytejail's own: the fault handler's re-raise".to_string(),
                None,
            )
        } else if abi == Abi::X86_64 && RUNNER_SYSCALLS.contains(&nr) {
            (
                Action::Allow,
                "bytejail's own: the worker leaves with exit and returns from its signal \
                 handler with rt_sigreturn"
                    .to_string(),
                None,
            )
        } else if let Some(section) = section {
            match section
                .iter()
                .zip(origins)
                .find(|(r, _)| r.nr == nr && r.args.iter().all(|c| c.holds(&args, width)))
            {
                Some((rule, &origin)) => {
                    let names = self.entry_names(origin);
                    let names = match names.len() {
                        0..=4 => names.join(", "),
                        n => format!("{} and {} other names", names[..3].join(", "), n - 3),
                    };
                    let conditions = match rule.args.len() {
                        0 => String::new(),
                        1 => ", 1 argument check".to_string(),
                        n => format!(", {n} argument checks"),
                    };
                    (
                        rule.action,
                        format!("syscalls[{origin}] ({names}{conditions})"),
                        Some(origin),
                    )
                }
                None => (rules.default, "the default action".to_string(), None),
            }
        } else {
            let arch_name = if abi == Abi::I386 {
                "SCMP_ARCH_X86"
            } else {
                "SCMP_ARCH_X32"
            };
            (
                Action::Violation,
                format!(
                    "the profile does not name {arch_name}: every {} call is rejected",
                    abi.name()
                ),
                None,
            )
        };
        let nr_full = if abi == Abi::X32 {
            nr | X32_SYSCALL_BIT
        } else {
            nr
        };
        Explanation {
            abi: abi.name(),
            nr: nr_full,
            name: syscalls::name(abi, nr_full),
            args,
            action: action_name(action),
            violation: action.is_violation(),
            because,
            entry,
            program_says: self.worker.evaluate(arch, nr_full, args),
        }
    }
}

/// An action as a profile names it, in lower case: `allow`, `errno 1 (EPERM)`, `kill_process`.
pub fn action_name(action: Action) -> String {
    match action {
        Action::Allow => "allow".into(),
        Action::Log => "log".into(),
        Action::Errno(e) => match errno_name(e) {
            Some(name) => format!("errno {e} ({name})"),
            None => format!("errno {e}"),
        },
        Action::Violation => "violation".into(),
        Action::KillThread => "kill_thread".into(),
        Action::KillProcess => "kill_process".into(),
        Action::Trap => "trap".into(),
    }
}

fn errno_name(e: u16) -> Option<&'static str> {
    Some(match i32::from(e) {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        _ => return None,
    })
}

/// `policy check`'s findings.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Instructions in the worker's program.
    pub instructions: usize,
    /// The most instructions any one call runs through.
    pub longest_path: usize,
    /// Whether `int 0x80` calls have rules (else all are rejected).
    pub i386: bool,
    /// Whether x32 calls have rules (else all are rejected).
    pub x32: bool,
    /// Names no x86 ABI has.
    pub skipped: Vec<String>,
    /// Entries that make no rule.
    pub unused: Vec<EntryNote>,
    /// Entries that an earlier entry hides.
    pub shadowed: Vec<EntryNote>,
    /// Conditional entries for socket or IPC calls that `socketcall` / `ipc` reach unchecked.
    pub multiplexed: Vec<EntryNote>,
}

/// One entry of `syscalls[]` and a finding about it.
#[derive(Debug, Serialize)]
pub struct EntryNote {
    /// The index in `syscalls[]`.
    pub entry: usize,
    /// Its names.
    pub names: Vec<String>,
    /// The finding.
    pub why: String,
}

/// `policy explain`'s answer.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// The ABI: `x86_64`, `i386` or `x32`.
    pub abi: &'static str,
    /// The syscall number.
    pub nr: u32,
    /// Its name, when the table knows it.
    pub name: Option<&'static str>,
    /// The arguments asked about.
    pub args: [u64; 6],
    /// The profile's action: `allow`, `errno 1 (EPERM)`, `kill_process`, ...
    pub action: String,
    /// Whether a bytejail worker ends as a `syscall_violation` on it.
    pub violation: bool,
    /// What decided it: an entry, the default, bytejail's own calls, a missing section.
    pub because: String,
    /// The `syscalls[]` entry that decided, if one did.
    pub entry: Option<usize>,
    /// The worker program's return value for the call (the interpreter's), as a check.
    pub program_says: Option<u32>,
}

/// The program as `scmp_bpf_disasm` prints it: line, opcode, jt, jf, k, and what it does.
pub fn disasm(program: &[Insn]) -> String {
    use super::bpf::*;
    let mut out = String::from(" line  OP   JT   JF   K\n=================================\n");
    for (i, insn) in program.iter().enumerate() {
        let target = |off: u8| i + 1 + usize::from(off);
        let what = match insn.code {
            BPF_LD_W_ABS => format!("ld  $data[{}]", insn.k),
            BPF_ALU_AND_K => format!("and 0x{:08x}", insn.k),
            BPF_JA => format!("jmp {}", i + 1 + insn.k as usize),
            BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K | BPF_JSET_K => {
                let op = match insn.code {
                    BPF_JEQ_K => "jeq",
                    BPF_JGT_K => "jgt",
                    BPF_JGE_K => "jge",
                    _ => "jset",
                };
                format!(
                    "{op} 0x{:08x} true:{} false:{}",
                    insn.k,
                    target(insn.jt),
                    target(insn.jf)
                )
            }
            BPF_RET_K => format!("ret {}", ret_name(insn.k)),
            _ => "?".to_string(),
        };
        out.push_str(&format!(
            " {i:04}: 0x{:02x} 0x{:02x} 0x{:02x} 0x{:08x}   {what}\n",
            insn.code, insn.jt, insn.jf, insn.k
        ));
    }
    out
}

fn ret_name(k: u32) -> String {
    match k & 0xffff_0000 {
        0x7fff_0000 => "ALLOW".into(),
        0x7ffc_0000 => "LOG".into(),
        0x0005_0000 => format!("ERRNO({})", k & 0xffff),
        0x0003_0000 => "TRAP".into(),
        0x8000_0000 => "KILL_PROCESS".into(),
        0 => "KILL".into(),
        _ => format!("0x{k:08x}"),
    }
}
