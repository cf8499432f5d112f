//! `bytejail policy check | compile | explain`: a seccomp profile as bytejail reads it, its
//! program for other runners, and the decision for one call.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use bytejail::policy::tool::{disasm, Loaded};
use bytejail::syscalls::{self, Abi};
use bytejail::{Error, InputError};
use clap::{Args, Subcommand};

use crate::cli::Completion;

/// `bytejail policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// The `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load a profile: names skipped for other architectures, entries that make no rule,
    /// entries shadowed by others, conditions socketcall/ipc bypass, the program's size.
    Check {
        /// The profile (Docker, OCI or Podman JSON).
        file: PathBuf,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Compile a profile to a raw `struct sock_filter` program with the profile's own actions
    /// (kills kill, no trap only bytejail would answer), for `bwrap --seccomp FD` or
    /// `--add-seccomp-fd`.
    Compile {
        file: PathBuf,
        /// Write the program here (default: stdout, unless it is a terminal).
        #[arg(short, long, value_name = "OUT.bpf")]
        output: Option<PathBuf>,
        /// Print the program readably instead (as scmp_bpf_disasm does).
        #[arg(long, conflicts_with = "json")]
        disasm: bool,
        /// One JSON object on stdout: the instructions and the program in hex.
        #[arg(long)]
        json: bool,
    },
    /// The decision for one call, and the entry that made it.
    Explain {
        file: PathBuf,
        /// A syscall name (`socket`) or number (`41`).
        syscall: String,
        /// Up to six arguments, decimal or 0x-hex (missing ones are 0).
        #[arg(value_name = "ARG")]
        args: Vec<String>,
        /// The entry point: x86_64 (`syscall`), i386 (`int 0x80`) or x32.
        #[arg(long, default_value = "x86_64", value_parser = ["x86_64", "i386", "x32"])]
        abi: String,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn load(path: &Path) -> Result<Loaded, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    Loaded::parse(&text)
        .map_err(|e| InputError::Invalid(format!("`{}`: {e}", path.display())).into())
}

fn out(text: &str) -> Result<(), Error> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|source| Error::Runner {
            what: "writing stdout",
            source,
        })
}

fn json_line<T: serde::Serialize>(value: &T) -> Result<(), Error> {
    let mut line = serde_json::to_string(value).map_err(|e| Error::Runner {
        what: "encoding JSON",
        source: std::io::Error::other(e),
    })?;
    line.push('\n');
    out(&line)
}

/// Carries out `bytejail policy ...`.
pub fn policy(args: PolicyArgs) -> Result<Completion, Error> {
    match args.command {
        PolicyCommand::Check { file, json } => {
            let loaded = load(&file)?;
            let report = loaded.check();
            if json {
                json_line(&report)?;
            } else {
                let mut text = format!(
                    "{}: loads; {} instructions, longest path {}; int 0x80 {}, x32 {}\n",
                    file.display(),
                    report.instructions,
                    report.longest_path,
                    if report.i386 { "filtered" } else { "rejected" },
                    if report.x32 { "filtered" } else { "rejected" },
                );
                if !report.skipped.is_empty() {
                    text.push_str(&format!(
                        "skipped (no x86 ABI has them): {}\n",
                        report.skipped.join(", ")
                    ));
                }
                for (kind, notes) in [
                    ("no rule", &report.unused),
                    ("shadowed", &report.shadowed),
                    ("warning", &report.multiplexed),
                ] {
                    for note in notes {
                        text.push_str(&format!(
                            "syscalls[{}] ({}): {kind}: {}\n",
                            note.entry,
                            note.names.join(", "),
                            note.why
                        ));
                    }
                }
                out(&text)?;
            }
        }
        PolicyCommand::Compile {
            file,
            output,
            disasm: readable,
            json,
        } => {
            let loaded = load(&file)?;
            let program = loaded.standalone.program();
            let bytes = loaded.standalone.to_bytes();
            if let Some(path) = &output {
                std::fs::write(path, &bytes).map_err(|source| {
                    InputError::Invalid(format!("cannot write {}: {source}", path.display()))
                })?;
            }
            if json {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                json_line(&serde_json::json!({
                    "instructions": program.len(),
                    "longest_path": loaded.standalone.longest_path(),
                    "program_hex": hex,
                }))?;
            } else if readable {
                out(&disasm(program))?;
            } else if output.is_none() {
                if std::io::stdout().is_terminal() {
                    return Err(InputError::Invalid(
                        "the program is binary: give -o OUT.bpf, or --disasm to read it".into(),
                    )
                    .into());
                }
                std::io::stdout()
                    .write_all(&bytes)
                    .map_err(|source| Error::Runner {
                        what: "writing stdout",
                        source,
                    })?;
            }
        }
        PolicyCommand::Explain {
            file,
            syscall,
            args,
            abi,
            json,
        } => {
            let abi = match abi.as_str() {
                "i386" => Abi::I386,
                "x32" => Abi::X32,
                _ => Abi::X86_64,
            };
            if args.len() > 6 {
                return Err(InputError::Invalid(format!(
                    "{} arguments; a syscall takes at most 6",
                    args.len()
                ))
                .into());
            }
            let mut values = [0u64; 6];
            for (slot, arg) in values.iter_mut().zip(&args) {
                *slot = bytejail::abi::parse_u64(arg.trim()).ok_or_else(|| {
                    InputError::Invalid(format!(
                        "argument `{arg}`: expected a decimal or 0x-hex number below 2^64"
                    ))
                })?;
            }
            let nr = match syscall.parse::<u32>() {
                Ok(nr) => nr,
                Err(_) => syscalls::number(abi, &syscall).ok_or_else(|| {
                    InputError::Invalid(format!(
                        "`{syscall}`: no {} syscall has that name",
                        abi.name()
                    ))
                })?,
            };
            let loaded = load(&file)?;
            let answer = loaded.explain(abi, nr & !bytejail::policy::X32_SYSCALL_BIT, values);
            if json {
                json_line(&answer)?;
            } else {
                let shown: Vec<String> = answer.args.iter().map(|a| format!("{a:#x}")).collect();
                out(&format!(
                    "{}({}) ({} {:#x}): {}{} — {}\n",
                    answer.name.unwrap_or("?"),
                    shown.join(", "),
                    answer.abi,
                    answer.nr,
                    answer.action,
                    if answer.violation && answer.action != "violation" {
                        " (a syscall_violation in bytejail)"
                    } else {
                        ""
                    },
                    answer.because
                ))?;
            }
        }
    }
    Ok(Completion::Done)
}
