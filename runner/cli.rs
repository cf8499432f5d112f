//! The command line: argument definitions (clap derive), their value parsers, and the two
//! commands, `run` and `disasm`.
//!
//! Commands return a [`Completion`] or a [`bytejail::Error`]; turning those into exit statuses is
//! `main`'s job alone. This module never exits the process.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytejail::abi::{self, InitialRegisters, Limits, RunOptions};
use bytejail::load::{self, Format};
use bytejail::{bounds, disasm, units, Error, InputError, Outcome, Policy};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

/// What `bytejail run --help` prints after the options: the outcomes and what they exit with.
const RUN_AFTER_LONG_HELP: &str = "\
Guest ABI (v1):
  The code is mapped read+execute at a page-aligned address and entered at --entry. At entry
  rdi = input address (read-only), rsi = input length, rdx = scratch address (zeroed, read-write),
  rcx = scratch length, rsp = top of a fresh stack with (rsp + 8) % 16 == 0 and [rsp] = the return
  address into the runner; every other general register is 0 unless set with --reg. fd 0 streams
  the input (EOF after it), fd 1 is the guest's output; nothing else is open. Strict seccomp
  allows only read, write, exit and rt_sigreturn (Linux 6.14+ also lets uretprobe, 6.18+ uprobe through).

Values:
  SIZE      bytes, or a number with a unit: 4096, 64KiB, 1MiB, 1.5MiB, 1GB
            (K/KiB, M/MiB, G/GiB, T/TiB mean powers of 1024: 1G = 1GiB = 2^30;
            kB, MB, GB, TB mean powers of 1000: 1GB = 10^9)
  DURATION  a number with a unit: 300ms, 2s, 1.5s (ns, us, ms, s, m, h)
  HEX       bytes in hex; whitespace and 0x / \\x prefixes are tolerated: \"b0 2a c3\", \"0xb0 0x2a 0xc3\";
            C strings stand for their bytes: '\"\\x6a\\x3b\" \"\\x58\"'

Outcomes and exit status (the same with and without --json):
  returned            the guest returned to the runner       rax & 0xff
  exited              the guest called exit(n) (syscall 60)  n & 0xff
  crashed             a signal killed the guest               128 + signal (SIGSEGV: 139)
  syscall_violation   seccomp killed a forbidden syscall      159
  timeout             killed at the --timeout deadline        124
  output_limit        wrote more than --max-output bytes      124
  bad usage or input  nothing ran                             2
  runner failure      bytejail itself failed                  125

Output:
  Without --json the guest's output goes raw to stdout and one summary line to stderr.
  With --json stdout holds exactly one JSON object and nothing else:
    outcome, output_hex, output_text (when the output is UTF-8), output_truncated,
    wall_ns, user_ns, sys_ns, max_rss_kib; plus rax and registers (rax..r15, rflags) when
    returned, exit_code when exited, signal, signal_number and fault (address, code_offset,
    instruction) when crashed, syscall (nr, name, abi, code_offset) for a syscall_violation
    when it is known (filter policies always; strict mode through a re-run under strict-bpf,
    unless --no-diagnose).";

/// What `bytejail batch --help` prints after the options.
const BATCH_AFTER_LONG_HELP: &str = "\
A job line (only the code is required; the rest defaults to the options above):
  {\"id\": <any>, \"code_hex\": \"b0 2a c3\" | \"code_path\": \"guest.s\", \"input_hex\": \"0102\",
   \"timeout_ms\": 2000, \"max_output\": 1048576, \"regs\": {\"rbx\": 5}, \"entry\": 0,
   \"group\": \"s1\"}

Fields get exactly the bounds of the flags: timeout_ms 1 to 86400000 (--timeout, 24h);
max_output 0 to 1073741824 or a size such as \"64KiB\" (--max-output, 1GiB); entry a number
or \"0x10\" inside the code (--entry); regs as --reg; the code at most --max-code bytes and
input_hex at most --max-input bytes. A line may be at most 8 x (--max-code + --max-input)
+ 64KiB bytes.

Results stream: each result line is written and flushed as soon as its job ends (with
--ordered, as soon as it is next in input order), so `bytejail batch -` on a pipe answers each
line without waiting for the next. A result line is the job's id followed by exactly the
`run --json` report. A line that cannot be run (not JSON, unloadable code, a field out of
range) gives {\"id\", \"line\", \"error\"} and the batch goes on. A summary of outcomes goes
to stderr.

Exit status:
  0    every line ran (whatever the guests did)
  1    some lines could not run (each has its error line)
  2    bad usage or an unreadable FILE: nothing ran
  125  bytejail itself failed

Each job runs in its own fresh worker: a job thread's first forked by bytejail itself, as
`run` does, the others by the thread's zygote (a small helper process, started with its second
job); job threads start as lines arrive, up to --jobs. With --reuse same-code,
consecutive jobs with the same code and the same \"group\" (a string or number naming one
submission) share one worker, each input from the same initial state; one input of a group
can pass anything to the next, so a group must be one submission. A job without a group never
shares a worker.

With --pin auto (the default) each job thread, with its zygote and workers, keeps to a CPU
of its own when the process may use at least --jobs CPUs (with --jobs 1, the CPU it is on;
not with --reuse same-code and --spin auto), so that a job's handoffs between host and worker
do not wake another CPU; --pin off leaves every thread to the scheduler.

To scale past one machine, split the JSON lines across machines with the job runner you
already have: results carry their ids.";

/// Run untrusted x86-64 machine code in a fresh strict-seccomp worker and report exactly what it
/// did.
#[derive(Debug, Parser)]
#[command(name = "bytejail", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run code in a fresh worker and report its outcome.
    #[command(after_long_help = RUN_AFTER_LONG_HELP)]
    Run(RunArgs),
    /// Run many jobs given as JSON lines, answering each as soon as it ends.
    #[command(after_long_help = BATCH_AFTER_LONG_HELP)]
    Batch(BatchArgs),
    /// Print code in Intel syntax with offsets, 0x numbers and the syscalls it makes.
    Disasm(DisasmArgs),
    /// Measure what each isolation step costs on this machine (about 20 s; --quick about 5 s).
    Bench(crate::bench_cli::BenchArgs),
    /// Check a seccomp profile, compile it for another runner, or explain one decision.
    Policy(crate::policy_cli::PolicyArgs),
    /// Check what this machine gives a worker: seccomp, namespaces, Landlock, cgroups,
    /// assemblers. Exits 1 when something strict-mode jobs need is missing.
    #[command(after_long_help = DOCTOR_AFTER_LONG_HELP)]
    Doctor(DoctorArgs),
    /// Print a shell completion script, e.g. `bytejail completions bash >
    /// /etc/bash_completion.d/bytejail`.
    Completions(crate::manual::CompletionsArgs),
    /// Print a man page in roff, e.g. `bytejail man run | man -l -`.
    Man(crate::manual::ManArgs),
}

/// What `bytejail doctor --help` prints after the options.
const DOCTOR_AFTER_LONG_HELP: &str = "\
Each line is ok, warning or missing, with a one-line explanation. `missing` is only for what
strict-mode jobs need (strict mode itself, close_range, a strict job that runs); a wall that
only profile workers get (filter mode, namespaces, Landlock, cgroups) or a missing assembler is
a warning. Exit status: 0 when nothing is missing, 1 otherwise.

--json prints one object: ready (bool), missing (names), checks (name -> {status, detail}) and
probes (the typed results the checks come from).";

/// `bytejail doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The code to run or disassemble, and how to read it.
#[derive(Debug, Args)]
pub struct CodeArgs {
    #[command(flatten)]
    pub source: CodeSource,

    /// Read FILE in this format instead of guessing it from the extension.
    #[arg(
        long,
        value_name = "FORMAT",
        ignore_case = true,
        conflicts_with_all = ["hex", "asm"],
        value_parser = PossibleValuesParser::new(["bin", "hex", "gas", "nasm", "elf"])
            .try_map(|name| Format::from_name(&name).ok_or("unknown format")),
    )]
    pub format: Option<Format>,

    /// The syntax of GNU as source (.s, .S, --format gas): `att` (GNU as's own, `mov $42,
    /// %eax`) or `intel` (`mov eax, 42`, registers without `%`). [default: att for files,
    /// intel for --asm]
    #[arg(long, value_name = "SYNTAX", ignore_case = true)]
    pub syntax: Option<SyntaxArg>,

    /// A directory the assembler may read includes from (`.include`, `#include`, `%include`,
    /// `.incbin`); repeatable. Without it the assembler reads only the source and the system's
    /// toolchain and headers (`<sys/syscall.h>`), not even the source's own directory.
    #[arg(long = "include-dir", value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub include_dirs: Vec<PathBuf>,
}

/// Where the code comes from: a file (or stdin) or inline hex; exactly one of them.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct CodeSource {
    /// Code file, or `-` for raw bytes on stdin. The format follows the extension: .bin raw bytes,
    /// .hex hex text, .s/.S GNU as source, .asm NASM source, .o or any ELF object or executable
    /// (its .text).
    #[arg(value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub file: Option<PathBuf>,

    /// Inline code as hex, e.g. "b0 2a c3". Whitespace and 0x / \x prefixes are tolerated, and
    /// C strings stand for their bytes: '"\x6a\x3b" "\x58"'.
    #[arg(long, value_name = "HEX")]
    pub hex: Option<String>,

    /// Inline assembly, Intel syntax unless --syntax att, instructions separated by `;` or
    /// newlines, e.g. 'mov eax, 42; ret'. Assembled with GNU as (binutils), in the same
    /// sandbox as a .s file.
    #[arg(long, value_name = "ASM")]
    pub asm: Option<String>,
}

/// `--syntax`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SyntaxArg {
    /// AT&T: `mov $42, %eax`.
    Att,
    /// Intel, registers without `%`: `mov eax, 42`.
    Intel,
}

impl From<SyntaxArg> for load::Syntax {
    fn from(syntax: SyntaxArg) -> load::Syntax {
        match syntax {
            SyntaxArg::Att => load::Syntax::Att,
            SyntaxArg::Intel => load::Syntax::Intel,
        }
    }
}

/// `bytejail run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub code: CodeArgs,

    /// Input file, or `-` for stdin: mapped read-only at rdi/rsi and streamed on fd 0.
    /// [default: no input]
    #[arg(long, value_name = "FILE", conflicts_with = "input_hex", value_hint = clap::ValueHint::FilePath)]
    pub input: Option<PathBuf>,

    /// Inline input as hex (same forms as --hex).
    #[arg(long, value_name = "HEX")]
    pub input_hex: Option<String>,

    #[command(flatten)]
    pub worker: WorkerArgs,

    /// Offset into the code where the guest is entered, decimal or 0x-hex.
    #[arg(long, value_name = "OFFSET", default_value = "0", value_parser = offset)]
    pub entry: usize,

    /// Set a register at entry, e.g. rbx=5 or r12=0xff (decimal or 0x-hex; rax rbx rcx rdx rsi
    /// rdi rbp r8..r15, not rsp). Repeatable; overrides the ABI's value.
    #[arg(long = "reg", value_name = "NAME=VALUE", value_parser = register)]
    pub registers: Vec<String>,

    /// Print the report as one JSON object on stdout instead of the guest's output.
    #[arg(long)]
    pub json: bool,

    /// With --json: keep only these report fields, e.g. `--fields outcome,rax,output_hex`
    /// (the fields of `bytejail batch --fields`; one the report does not have is absent).
    #[arg(long, value_name = "LIST", value_parser = parse_fields, requires = "json")]
    pub fields: Option<bytejail::batch::ReportFields>,
}

/// The limits and confinement of a worker: shared by `run` and `batch` (where they are the
/// defaults for every job).
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Wall-clock limit, e.g. 300ms, 2s, 1.5s (units ns, us, ms, s, m, h); more than 0, at most
    /// 24h.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = bounds::parse_timeout)]
    pub timeout: Duration,

    /// Most bytes the guest may write to fd 1 (one more and it is killed), e.g. 4096, 64KiB or
    /// 1MiB; 0 to 1GiB.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = max_output)]
    pub max_output: usize,

    /// Guest stack size, e.g. 64KiB or 1MiB (rounded up to pages; an unmapped guard page sits below);
    /// 64 bytes to 1GiB.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = stack)]
    pub stack: usize,

    /// Scratch memory size, e.g. 64KiB or 1MiB, passed in rcx (the mapping is rounded up to
    /// pages); 1 byte to 16GiB.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = scratch)]
    pub scratch: usize,

    /// Largest code accepted, e.g. 4096, 64KiB or 16MiB.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = units::parse_size)]
    pub max_code: usize,

    /// Largest input accepted, e.g. 4096, 1MiB or 64MiB.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = units::parse_size)]
    pub max_input: usize,

    /// Leave the worker's copy of the bytejail process mapped, so the guest can read it (its
    /// environment, heap, stacks). Only for measuring what scrubbing costs and for showing
    /// that it matters.
    #[arg(long)]
    pub no_scrub: bool,

    /// Seccomp policy: `strict` (mode 1: read, write, exit, rt_sigreturn), `strict-bpf` (a
    /// filter with strict mode's allow list, which can say which syscall a violation was), or
    /// the path of a Docker/OCI seccomp profile (JSON) compiled to a filter. Filter modes also
    /// set no_new_privs, disable rdtsc and drop every capability.
    #[arg(long, value_name = "POLICY", default_value = "strict", value_parser = policy)]
    pub policy: Policy,

    /// Do not re-run an untraced strict-mode violation (traced) to learn which syscall it was.
    #[arg(long)]
    pub no_diagnose: bool,

    /// Do not trace the worker: a few microseconds less per fresh worker, but the fault and
    /// syscall details then come from the worker's own record, which the guest can write, and
    /// are reported unverified.
    #[arg(long)]
    pub no_trace: bool,

    /// The guest's own memory: scratch, stack and whatever it maps itself (RLIMIT_AS on top of
    /// the runner's mappings of the code and input), e.g. 256MiB or 2GiB; --scratch and --stack
    /// together may not exceed it; 64KiB to 64GiB.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = memory)]
    pub memory: usize,

    /// Processes and threads a job may have at once, the worker included, 1 to 4096. 1 (the
    /// default) refuses clone, fork, vfork and clone3 with EAGAIN; only a profile can allow
    /// those calls at all, and more needs a PID namespace for the worker (run as root).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(*bounds::MAX_PROCS.start() as i64..=*bounds::MAX_PROCS.end() as i64))]
    pub max_procs: u32,

    /// Largest file the guest may write (RLIMIT_FSIZE; memfds too), e.g. 1MiB; 0 to 64GiB.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = file_size)]
    pub max_file_size: usize,

    /// Most descriptors the guest may hold at once (RLIMIT_NOFILE), 8 to 65536.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(*bounds::OPEN_FILES.start()..=*bounds::OPEN_FILES.end()))]
    pub max_open_files: u64,

    /// CPU time the job may use, next to the wall-clock --timeout, e.g. 500ms or 2s (the host
    /// watches the CPU of the job's whole process tree where a cgroup counts it, else the
    /// worker's CPU clock; RLIMIT_CPU is its backstop); more than 0, at most 24h.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub cpu_time: Option<Duration>,

    /// Under a profile, let the guest read PATH (a file, or a directory and everything below
    /// it), mounted read-only at the same path in its otherwise empty root. Repeatable; an
    /// absolute path that exists; at most 8 grants with --allow-write, none inside another.
    #[arg(long, value_name = "PATH", value_parser = grant)]
    pub allow_read: Vec<PathBuf>,

    /// As --allow-read, for reading and writing (in a directory: creating and removing files
    /// and directories too).
    #[arg(long, value_name = "PATH", value_parser = grant)]
    pub allow_write: Vec<PathBuf>,

    /// Where workers cannot get a PID namespace (see bytejail doctor), run profile jobs with
    /// --max-procs above 1 anyway: processes the guest starts may then outlive the job and
    /// bytejail. Refused without this flag.
    #[arg(long)]
    pub allow_uncontained: bool,

    /// Print nothing on stderr but errors: no summary line, no hints, no warning about
    /// profile entries skipped because no x86 ABI has their syscall.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl WorkerArgs {
    /// The run options these flags describe (entry and registers at their defaults). Warns
    /// once, on stderr, about the syscall names the profile lists for other architectures.
    fn options(&self) -> RunOptions {
        let skipped = self.policy.skipped_names();
        if !self.quiet && !skipped.is_empty() {
            // Best-effort, as every line bytejail writes on stderr: `eprintln!` would panic on
            // a failing stderr (exit 101, the job never run).
            let _ = writeln!(
                io::stderr().lock(),
                "bytejail: `{}`: skipped {} (no x86 ABI has {}; --quiet to silence)",
                self.policy.name(),
                skipped.join(", "),
                if skipped.len() == 1 { "it" } else { "them" }
            );
        }
        let limits = Limits::default()
            .with_timeout(self.timeout)
            .with_max_output(self.max_output)
            .with_stack(self.stack)
            .with_scratch(self.scratch)
            .with_max_code(self.max_code)
            .with_max_input(self.max_input)
            .with_memory(self.memory)
            .with_max_procs(self.max_procs)
            .with_max_file_size(self.max_file_size as u64)
            .with_max_open_files(self.max_open_files)
            .with_cpu_time(self.cpu_time);
        RunOptions::default()
            .with_limits(limits)
            .with_scrub(!self.no_scrub)
            .with_policy(self.policy.clone())
            .with_diagnose(!self.no_diagnose)
            .with_trace(!self.no_trace)
            .with_allow_read(self.allow_read.clone())
            .with_allow_write(self.allow_write.clone())
            .with_allow_uncontained(self.allow_uncontained)
    }
}

/// A path granted with --allow-read or --allow-write (see [`bounds::check_grant`]).
fn grant(text: &str) -> Result<PathBuf, bounds::BoundError> {
    bounds::check_grant(std::path::Path::new(text))
}

/// `bytejail batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// JSON lines, one job each, or `-` for stdin.
    #[arg(value_name = "FILE", default_value = "-", value_hint = clap::ValueHint::FilePath)]
    pub file: PathBuf,

    /// Most jobs run at once; job threads start as lines arrive [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: Option<u16>,

    /// Print results in input order (default: in completion order).
    #[arg(long)]
    pub ordered: bool,

    /// `same-code`: consecutive jobs with the same code, the same `group` (and policy,
    /// scrubbing, stack, scratch) share a worker, each input from the same initial state;
    /// isolates groups from each other, not inputs of one group. Jobs without a `group` never
    /// share a worker. `none`: a fresh worker per job.
    #[arg(long, value_name = "MODE", default_value = "none")]
    pub reuse: bytejail::batch::Reuse,

    /// Keep only these report fields in result lines (after the `id`), e.g.
    /// `--fields outcome,rax,output_hex`: leaves out what is not wanted (output_text repeats
    /// the output, registers are 18 numbers). Fields: schema_version, outcome, rax, registers,
    /// exit_code, signal, signal_number, fault, syscall, output_hex, output_text,
    /// output_truncated, wall_ns, user_ns, sys_ns, max_rss_kib; one a report does not have
    /// is absent from its line. Error lines are unchanged.
    #[arg(long, value_name = "LIST", value_parser = parse_fields)]
    pub fields: Option<bytejail::batch::ReportFields>,

    /// With --reuse same-code: `auto` hands inputs to the worker through a cache line both
    /// sides spin on for a while (a few hundred nanoseconds per input instead of microseconds;
    /// only under strict mode or strict-bpf, without --cpu-time, with two CPUs per spinning
    /// worker, while inputs keep coming); `off` always blocks in the kernel and keeps no core
    /// busy between inputs.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub spin: Spin,

    /// With --reuse same-code under strict mode or strict-bpf: `file` gives each same-code
    /// worker a file of its own as fd 1 instead of a pipe, one system call less per input
    /// (see `RunOptions::output_file`); but a write whose buffer runs into unmapped memory then
    /// keeps the bytes copied before the fault, where a pipe drops them, so such a guest's
    /// report can differ from a fresh run's. `pipe` (the default): every worker writes to a
    /// pipe, and a same-code input's report is a fresh run's.
    #[arg(long, value_name = "KIND", default_value = "pipe")]
    pub stdout: Stdout,

    /// `auto`: each job thread (with --jobs 1, the thread that runs the jobs) keeps to a CPU of
    /// its own, and so do the workers it forks, when the process may use at least --jobs CPUs;
    /// a job's handoffs between host and worker then stay on one CPU instead of waking another
    /// (slow on virtual machines). Not with --reuse same-code and --spin auto, whose hand-off
    /// wants host and worker on two CPUs. `off`: the scheduler places every thread.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub pin: bytejail::batch::Pin,

    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// `--stdout`: what a same-code worker's fd 1 is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stdout {
    /// A pipe, as for every other worker.
    Pipe,
    /// A file of the worker's own (see `RunOptions::output_file`).
    File,
}

/// `--spin`: whether same-code workers may spin between inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Spin {
    /// Spin where it pays (see `RunOptions::spin`).
    Auto,
    /// Never spin.
    Off,
}

/// `--fields`: a comma-separated list of report fields.
fn parse_fields(list: &str) -> Result<bytejail::batch::ReportFields, String> {
    bytejail::batch::ReportFields::parse(list)
}

/// `bytejail disasm`.
#[derive(Debug, Args)]
pub struct DisasmArgs {
    #[command(flatten)]
    pub code: CodeArgs,
}

/// How a command that did not fail ended; `main` turns it into the exit status.
#[derive(Debug)]
pub enum Completion {
    /// The command did its job (`disasm`).
    Done,
    /// A guest ran; its outcome decides the exit status.
    Ran(Outcome),
    /// A batch read all its lines; `errors` of them could not run (each has an error line).
    Batch { errors: u64 },
    /// `doctor` looked at the machine: ready when nothing strict-mode jobs need is missing.
    Examined { ready: bool },
}

impl Cli {
    /// Parses `bytejail run ...` (`args` starts with the program's name) with the `run`
    /// subcommand's own definition, without first building clap's whole command (every other
    /// subcommand and its arguments: about 0.1 ms of a `bytejail run` here). `None` for any
    /// other command line, and for any that does not parse cleanly (help, errors): the full
    /// parser then reads it again and answers as it always did. A line that parses here
    /// parses to the same [`RunArgs`] there: both come from the one derived definition, and
    /// the top-level command adds nothing to its subcommands' parsing but their names.
    pub fn try_parse_run_alone<I, T>(args: I) -> Option<Cli>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let mut args = args.into_iter().map(Into::into);
        let _program = args.next()?;
        let subcommand = args.next()?;
        if subcommand != "run" {
            return None;
        }
        let mut command = RunArgs::augment_args(clap::Command::new("run"));
        let matches = command
            .try_get_matches_from_mut(std::iter::once(subcommand).chain(args))
            .ok()?;
        let run = RunArgs::from_arg_matches(&matches).ok()?;
        // Kept, never freed (the process runs one job and exits): freed, their few hundred
        // small blocks wait in the allocator's bins, and the first allocation after the
        // worker is forked sorts them, writing to heap pages the worker still shares, each
        // write a page copied (5 of them per `bytejail run` here).
        std::mem::forget(command);
        std::mem::forget(matches);
        Some(Cli {
            command: Command::Run(run),
        })
    }

    /// Carries out the command.
    pub fn execute(self) -> Result<Completion, Error> {
        match self.command {
            Command::Run(args) => run(args),
            Command::Batch(args) => batch(args),
            Command::Disasm(args) => disasm(args),
            Command::Bench(args) => crate::bench_cli::bench(args).map(|()| Completion::Done),
            Command::Doctor(args) => doctor(args),
            Command::Policy(args) => crate::policy_cli::policy(args),
            Command::Completions(args) => crate::manual::completions(args),
            Command::Man(args) => crate::manual::man(args),
        }
    }
}

/// `bytejail run`: load, run, report.
fn run(args: RunArgs) -> Result<Completion, Error> {
    let dash = Path::new("-");
    if args.code.source.file.as_deref() == Some(dash) && args.input.as_deref() == Some(dash) {
        return Err(
            invalid("code (FILE `-`) and input (--input -) cannot both come from stdin").into(),
        );
    }

    let mut registers = InitialRegisters::default();
    for setting in &args.registers {
        // Already checked by the value parser; kept fallible rather than trusted.
        registers.set_from_arg(setting).map_err(InputError::from)?;
    }
    let options = args
        .worker
        .options()
        .with_entry(args.entry)
        .with_registers(registers);

    let code = args.code.load(options.limits.max_code)?;
    let input = match (&args.input, &args.input_hex) {
        (Some(path), _) => load::read_input(path, options.limits.max_input)?,
        (None, Some(hex)) => load::parse_hex(hex, "--input-hex")?,
        (None, None) => Vec::new(),
    };

    // This process has one thread and one worker: the thread traces it itself, with no
    // tracer process to start.
    bytejail::trace_own_workers();
    let report = bytejail::run(&code, &input, &options)?;

    if args.json {
        let json = match &args.fields {
            Some(fields) => serde_json::Value::Object(fields.select(&report)),
            None => report.to_json(),
        };
        let mut line = serde_json::to_string(&json).map_err(|e| Error::Runner {
            what: "encoding the report as JSON",
            source: io::Error::other(e),
        })?;
        line.push('\n');
        write_stdout(line.as_bytes())?;
    } else {
        write_stdout(&report.output)?;
        if !args.worker.quiet {
            // On a shared terminal the summary would otherwise start on the output's last line.
            if report.output.last().is_some_and(|&byte| byte != b'\n') && same_terminal() {
                let _ = io::stderr().write_all(b"\n");
            }
            print_diagnostic(report.summary());
            if ran_off_the_end(&report.outcome, &code) {
                print_diagnostic("hint: the guest ran off the end of its code (no ret or exit?)");
            }
        }
    }
    Ok(Completion::Ran(report.outcome))
}

/// Whether a crash looks like the guest running past its last instruction: it crashed outside
/// its code (past the end, a fault there has no code offset) and its code ends in an
/// instruction that goes on to the next (no `ret`, `jmp`, exit...). The report does not hold
/// the faulting `rip`, so this is a guess for a hint, never part of a report.
fn ran_off_the_end(outcome: &Outcome, code: &[u8]) -> bool {
    match outcome {
        Outcome::Crashed {
            signal,
            fault: Some(fault),
        } => {
            [libc::SIGSEGV, libc::SIGILL, libc::SIGBUS].contains(signal)
                && fault.code_offset.is_none()
                && disasm::can_fall_off_end(code)
        }
        _ => false,
    }
}

/// Whether stdout and stderr are the same terminal (same device and inode), where the guest's
/// output and the summary share the screen.
fn same_terminal() -> bool {
    use std::io::IsTerminal;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let (stdout, stderr) = (io::stdout(), io::stderr());
    if !(stdout.is_terminal() && stderr.is_terminal()) {
        return false;
    }
    let metadata = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map(std::fs::File::from)
            .and_then(|file| file.metadata())
            .ok()
    };
    match (metadata(stdout.as_fd()), metadata(stderr.as_fd())) {
        (Some(out), Some(err)) => {
            (out.dev(), out.ino(), out.rdev()) == (err.dev(), err.ino(), err.rdev())
        }
        _ => false,
    }
}

/// Bytes `bytejail batch` reads at a time: a line with a 1 MiB input is 2 MiB of hex, 256
/// reads of the default 8 KiB. A read returns what is there, so short lines on a pipe are not
/// held back.
const BATCH_READ: usize = 128 << 10;

/// `bytejail batch`: run every job line, print a result line each, summarize on stderr.
fn batch(args: BatchArgs) -> Result<Completion, Error> {
    use std::io::IsTerminal;
    let jobs = args
        .jobs
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let config = bytejail::batch::BatchConfig::for_jobs(jobs)
        .with_defaults(
            args.worker
                .options()
                .with_spin(args.spin == Spin::Auto)
                .with_output_file(args.stdout == Stdout::File),
        )
        .with_ordered(args.ordered)
        .with_reuse(args.reuse)
        .with_fields(args.fields)
        .with_pin(args.pin);
    let bar = io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} {pos} jobs, {per_sec}: {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let mut progress = |summary: &bytejail::batch::Summary| {
        if let Some(bar) = &bar {
            bar.set_position(summary.jobs + summary.errors);
            bar.set_message(summary.line());
        }
    };
    let started = std::time::Instant::now();
    if jobs == 1 {
        // The jobs run on this thread: it traces its fresh workers itself, with no tracer
        // process to start, while no other thread of the process lives but a batch's reader
        // (which waits for no child): not the standard input's feed, nor a progress bar's.
        bytejail::trace_own_workers();
    }
    // Standard input that is a regular file (`bytejail batch < jobs.jsonl`) is read as a
    // FILE argument is: its reads never wait, so it needs no thread of its own (starting the
    // two threads cost about 0.3 ms here).
    let from_stdin = args.file.as_os_str() == "-";
    let stdin_file = from_stdin.then(regular_stdin).flatten();
    let stdin = (from_stdin && stdin_file.is_none()).then(StdinFeed::start);
    // Not locked for the batch: with several jobs, the job threads write their results.
    let mut out = io::BufWriter::new(ResultsOut {
        stdout: io::stdout(),
        abandon: stdin.as_ref().map(StdinFeed::abandon_handle),
    });
    let summary = if let Some(stdin) = stdin {
        bytejail::batch::run_batch(
            io::BufReader::with_capacity(BATCH_READ, stdin),
            &mut out,
            &config,
            &mut progress,
        )
    } else {
        let unreadable = |source| InputError::Unreadable {
            path: args.file.clone(),
            source,
        };
        let file = match stdin_file {
            Some(file) => file,
            None => std::fs::File::open(&args.file).map_err(unreadable)?,
        };
        let metadata = file.metadata().ok();
        let kind = metadata.as_ref().map(|m| m.file_type());
        // Results appended to the batch file itself (`bytejail batch f >> f`) would be read
        // back as lines, each giving another result line: a batch that never ends.
        if metadata
            .as_ref()
            .is_some_and(|m| m.is_file() && is_stdout(m))
        {
            let file = if from_stdin {
                "standard input".to_string()
            } else {
                args.file.display().to_string()
            };
            return Err(InputError::Invalid(format!(
                "{file}: the batch file is also standard output, where its results would be \
                 read back as jobs"
            ))
            .into());
        }
        // A directory opens, but its first read fails: an unreadable FILE (status 2, nothing
        // ran), not a failure of bytejail's.
        if kind.is_some_and(|kind| kind.is_dir()) {
            return Err(unreadable(io::Error::from_raw_os_error(libc::EISDIR)).into());
        }
        // A regular file's reads never wait: its lines are read by the job thread itself,
        // with no reader thread to start (a pipe's or a device's could wait for a client who
        // waits for the results so far).
        let regular = kind.is_some_and(|kind| kind.is_file());
        bytejail::batch::run_batch(
            io::BufReader::with_capacity(BATCH_READ, file),
            &mut out,
            &config.clone().with_read_ahead(!regular),
            &mut progress,
        )
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let summary = match summary {
        Err(Error::Runner { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            return Ok(Completion::Done)
        }
        other => other?,
    };
    if !args.worker.quiet {
        print_diagnostic(format_args!(
            "{} in {:.3} s",
            summary.line(),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(Completion::Batch {
        errors: summary.errors,
    })
}

/// Standard input, when it is a regular file: a new descriptor of it (the same open file,
/// so reads go on from where stdin stands).
fn regular_stdin() -> Option<std::fs::File> {
    use std::os::fd::AsFd;
    let stdin = io::stdin();
    let file = std::fs::File::from(stdin.as_fd().try_clone_to_owned().ok()?);
    file.metadata().is_ok_and(|m| m.is_file()).then_some(file)
}

/// Whether standard output is the file `file` is the metadata of.
fn is_stdout(file: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/fd/1")
        .is_ok_and(|out| (out.dev(), out.ino()) == (file.dev(), file.ino()))
}

/// Standard input for `bytejail batch -`, read on a thread of its own so that a batch whose
/// results can no longer be written (stdout closed) ends at once: it sees the end of its input
/// instead of waiting for a client that may never write or close stdin again.
struct StdinFeed {
    chunks: mpsc::Receiver<Feed>,
    /// Told by [`ResultsOut`] when stdout failed.
    abandon: mpsc::SyncSender<Feed>,
    abandoned: Arc<AtomicBool>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
}

enum Feed {
    Data(io::Result<Vec<u8>>),
    Abandon,
}

/// What [`ResultsOut`] holds to abandon a [`StdinFeed`].
#[derive(Clone)]
struct AbandonHandle {
    wake: mpsc::SyncSender<Feed>,
    abandoned: Arc<AtomicBool>,
}

impl AbandonHandle {
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        // Wakes a read waiting for data; when the channel is full, the reader has data to
        // take and sees the flag at its next read.
        let _ = self.wake.try_send(Feed::Abandon);
    }
}

impl StdinFeed {
    /// Starts the thread that reads stdin (it ends with stdin, or with the process).
    fn start() -> StdinFeed {
        let (tx, chunks) = mpsc::sync_channel(4);
        let feed = tx.clone();
        // Not started when it cannot be: reads then see the end of the input at once.
        let _ = std::thread::Builder::new()
            .name("bytejail-stdin".into())
            .spawn(move || loop {
                let mut buf = vec![0; 64 << 10];
                let read = io::stdin().lock().read(&mut buf).map(|n| {
                    buf.truncate(n);
                    buf
                });
                let last = !matches!(&read, Ok(data) if !data.is_empty());
                if feed.send(Feed::Data(read)).is_err() || last {
                    return;
                }
            });
        StdinFeed {
            chunks,
            abandon: tx,
            abandoned: Arc::new(AtomicBool::new(false)),
            current: Vec::new(),
            pos: 0,
            ended: false,
        }
    }

    fn abandon_handle(&self) -> AbandonHandle {
        AbandonHandle {
            wake: self.abandon.clone(),
            abandoned: self.abandoned.clone(),
        }
    }
}

impl io::Read for StdinFeed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.current.len() {
                let n = buf.len().min(self.current.len() - self.pos);
                buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.ended || self.abandoned.load(Ordering::SeqCst) {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Feed::Data(Ok(data))) if !data.is_empty() => {
                    (self.current, self.pos) = (data, 0)
                }
                Ok(Feed::Data(Err(e))) => {
                    self.ended = true;
                    return Err(e);
                }
                Ok(Feed::Data(Ok(_))) | Err(_) => self.ended = true,
                Ok(Feed::Abandon) => {}
            }
        }
    }
}

/// Stdout for batch results: a write that fails abandons stdin (see [`StdinFeed`]).
struct ResultsOut<W> {
    stdout: W,
    abandon: Option<AbandonHandle>,
}

impl<W: Write> Write for ResultsOut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.stdout.write(buf);
        if let (Err(_), Some(abandon)) = (&written, &self.abandon) {
            abandon.abandon();
        }
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.stdout.flush();
        if let (Err(_), Some(abandon)) = (&flushed, &self.abandon) {
            abandon.abandon();
        }
        flushed
    }
}

/// `bytejail doctor`: probe the machine, print the report.
fn doctor(args: DoctorArgs) -> Result<Completion, Error> {
    let doctor = bytejail::doctor::probe();
    let text = if args.json {
        let mut line = serde_json::to_string(&doctor.to_json()).map_err(|e| Error::Runner {
            what: "encoding the doctor's report as JSON",
            source: io::Error::other(e),
        })?;
        line.push('\n');
        line
    } else {
        doctor.to_text()
    };
    write_stdout(text.as_bytes())?;
    Ok(Completion::Examined {
        ready: doctor.ready(),
    })
}

/// `bytejail disasm`: load and print the listing.
fn disasm(args: DisasmArgs) -> Result<Completion, Error> {
    let code = args.code.load(abi::DEFAULT_MAX_CODE)?;
    write_stdout(disasm::listing(&code).as_bytes())?;
    Ok(Completion::Done)
}

impl CodeArgs {
    /// Reads the code from FILE (or stdin) or `--hex`.
    fn load(&self, max_code: usize) -> Result<Vec<u8>, InputError> {
        let mut options = load::LoadOptions::new(max_code);
        options.include_dirs.clone_from(&self.include_dirs);
        let source = &self.source;
        match (&source.file, &source.hex, &source.asm) {
            (Some(path), _, _) => {
                if let Some(syntax) = self.syntax {
                    let format = self.format.or_else(|| Format::from_path(path));
                    if format.is_some_and(|format| format != Format::Gas) {
                        return Err(invalid(format!(
                            "--syntax {}: only GNU as sources (.s, .S, --format gas) have a \
                             choice of syntax",
                            syntax.name()
                        )));
                    }
                    options.syntax = syntax.into();
                }
                load::load_path_with(path, self.format, &options)
            }
            (None, Some(hex), _) => {
                if let Some(syntax) = self.syntax {
                    return Err(invalid(format!(
                        "--syntax {}: --hex is machine code, not assembly",
                        syntax.name()
                    )));
                }
                load::load_bytes(hex.as_bytes(), Format::Hex, "--hex", max_code)
            }
            (None, None, Some(asm)) => {
                options.syntax = self.syntax.unwrap_or(SyntaxArg::Intel).into();
                // GNU as separates statements with `;` as well as newlines on x86.
                let mut text = asm.clone();
                text.push('\n');
                load::load_bytes_with(text.as_bytes(), Format::Gas, "--asm", &options)
            }
            // clap requires one of them; say so plainly should that ever change.
            (None, None, None) => Err(InputError::Invalid(
                "no code given: pass FILE, `-`, --hex or --asm".to_string(),
            )),
        }
    }
}

impl SyntaxArg {
    fn name(self) -> &'static str {
        match self {
            SyntaxArg::Att => "att",
            SyntaxArg::Intel => "intel",
        }
    }
}

/// Opens `/dev/null` on each of descriptors 0, 1 and 2 that is closed, as the standard
/// library's runtime does before a Rust `main` (see `main.rs` for why this binary does it
/// itself), and the same way: one `poll`, or `fcntl(F_GETFD)` on each where `poll` is
/// refused. A closed stdout would otherwise be taken by the first file the run opens.
/// Aborts if one cannot be reopened, as std does.
#[allow(
    unsafe_code,
    reason = "poll, fcntl and open on descriptors 0-2, before any thread"
)]
#[cfg_attr(test, allow(dead_code))] // the test harness has std's main
pub fn sanitize_standard_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    let closed: [bool; 3] = loop {
        // SAFETY: a valid array of three pollfd; a zero timeout.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } != -1 {
            break fds.map(|fd| fd.revents & libc::POLLNVAL != 0);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EINVAL | libc::EAGAIN | libc::ENOMEM) => {
                // SAFETY: F_GETFD only reads a descriptor's flags.
                break [0, 1, 2].map(|fd| unsafe {
                    libc::fcntl(fd, libc::F_GETFD) == -1
                        && io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
                });
            }
            _ => std::process::abort(),
        }
    };
    for (fd, closed) in (0..).zip(closed) {
        if closed {
            // SAFETY: a NUL-terminated path; the lowest free descriptor is the closed one.
            let opened = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR, 0) };
            if opened != fd {
                std::process::abort();
            }
        }
    }
}

/// SIGPIPE ignored, as the standard library's runtime sets it before a Rust `main`: a write to
/// a closed pipe is then EPIPE, which [`write_stdout`] takes as the reader going away.
#[cfg_attr(test, allow(dead_code))] // the test harness has std's main
pub fn ignore_sigpipe() {
    // SAFETY: an async-signal-safe disposition change of this process's own signal, before
    // any other thread exists.
    #[allow(unsafe_code, reason = "signal(2) has no safe wrapper here")]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// An [`InputError::Invalid`] from a message.
pub fn invalid(message: impl Into<String>) -> InputError {
    InputError::Invalid(message.into())
}

/// Writes `bytes` to stdout through a locked handle and flushes.
///
/// A reader that went away (EPIPE, as in `bytejail run x | head -c1`) is not a failure: Rust
/// ignores SIGPIPE, the run happened, and the exit status still says how it ended. Any other
/// write error is the runner failing to deliver the result.
pub fn write_stdout(bytes: &[u8]) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(source) if source.kind() != io::ErrorKind::BrokenPipe => Err(Error::Runner {
            what: "writing to stdout",
            source,
        }),
        _ => Ok(()),
    }
}

/// Prints `bytejail: <message>` on stderr as exactly one line.
///
/// Messages that span lines (an assembler's complaints, say) are joined with `; ` so that every
/// diagnostic stays one line, as the CLI promises. A failing stderr is ignored: there is nowhere
/// left to report it, and the exit status still tells.
pub fn print_diagnostic(message: impl fmt::Display) {
    let message = message.to_string();
    let line = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let _ = writeln!(io::stderr().lock(), "bytejail: {line}");
}

/// The gist of a clap usage error on one line, without the usage block and the `--help` hint,
/// e.g. `invalid value 'abc' for '--timeout <DURATION>': ...`.
pub fn usage_error_message(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let rendered = rendered.trim_start();
    let rendered = rendered.strip_prefix("error:").unwrap_or(rendered);
    rendered
        .split("\n\n")
        .map(str::trim)
        .take_while(|paragraph| {
            !paragraph.starts_with("Usage:") && !paragraph.starts_with("For more information")
        })
        .filter(|paragraph| !paragraph.is_empty())
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ")
}

// Value parsers. Each returns a message that clap puts after "invalid value '...' for '--flag'",
// so the message need not repeat the flag.

// The bounds themselves live in `bytejail::bounds`, shared with `bytejail batch`'s job lines.

/// `--max-output`: 0 to 1GiB.
fn max_output(arg: &str) -> Result<usize, bounds::BoundError> {
    bounds::MAX_OUTPUT.parse(arg)
}

/// `--stack`: 64 bytes to 1GiB.
fn stack(arg: &str) -> Result<usize, bounds::BoundError> {
    bounds::STACK.parse(arg)
}

/// `--scratch`: 1 byte to 16GiB.
fn scratch(arg: &str) -> Result<usize, bounds::BoundError> {
    bounds::SCRATCH.parse(arg)
}

/// `--memory`: 64 KiB to 64 GiB.
fn memory(arg: &str) -> Result<usize, bounds::BoundError> {
    bounds::MEMORY.parse(arg)
}

/// `--max-file-size`: 0 to 64 GiB.
fn file_size(arg: &str) -> Result<usize, bounds::BoundError> {
    bounds::FILE_SIZE.parse(arg)
}

/// `--policy`: `strict`, `strict-bpf` or a profile file, compiled here so that a bad profile
/// is a usage error naming the problem.
fn policy(arg: &str) -> Result<Policy, String> {
    Policy::from_arg(arg).map_err(|error| {
        // A name that is no file and looks like no path is a mistyped policy name.
        let typo = matches!(&error, InputError::Unreadable { source, .. }
            if source.kind() == io::ErrorKind::NotFound)
            && !arg.contains(['/', '.']);
        if typo {
            format!(
                "no policy named `{arg}` and no profile file of that name{} (the names are \
                 strict and strict-bpf; a profile is a path to a JSON file)",
                crate::suggest::did_you_mean(arg, &POLICY_NAMES)
            )
        } else {
            error.to_string()
        }
    })
}

/// The policies `--policy` takes by name.
const POLICY_NAMES: [&str; 2] = ["strict", "strict-bpf"];

/// The registers `--reg` may set, for suggestions (the library decides what it accepts).
const REGISTER_NAMES: [&str; 15] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

/// `--entry`: a decimal or 0x-hex offset.
fn offset(arg: &str) -> Result<usize, bounds::BoundError> {
    bounds::parse_offset(arg)
}

/// `--reg`: checks a `NAME=VALUE` setting; [`run`] applies it.
fn register(arg: &str) -> Result<String, String> {
    InitialRegisters::default().set_from_arg(arg).map_err(|e| {
        let message = e.to_string();
        let name = arg.split('=').next().unwrap_or_default().trim();
        let lower = name.to_ascii_lowercase();
        // rsp is a register, only not one the ABI lets be set: no suggestion for it.
        let known = REGISTER_NAMES.contains(&lower.as_str()) || lower == "rsp";
        if known || name.is_empty() {
            message
        } else {
            message + &crate::suggest::did_you_mean(name, &REGISTER_NAMES)
        }
    })?;
    Ok(arg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The defaults printed in `--help` are the library's defaults.
    #[test]
    fn defaults_match_the_library() {
        let cli = Cli::try_parse_from(["bytejail", "run", "--hex", "c3"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        let defaults = Limits::default();
        assert_eq!(args.worker.timeout, defaults.timeout);
        assert_eq!(args.worker.max_output, defaults.max_output);
        assert_eq!(args.worker.stack, defaults.stack);
        assert_eq!(args.worker.scratch, defaults.scratch);
        assert_eq!(args.worker.max_code, defaults.max_code);
        assert_eq!(args.worker.max_input, defaults.max_input);
        assert_eq!(args.entry, RunOptions::default().entry);
        assert!(args.registers.is_empty());
    }

    /// The `run` fast path parses what the full parser parses, to the same arguments, and
    /// leaves everything else (help, errors, other commands) to it.
    #[test]
    fn run_alone_parses_as_the_full_parser_does() {
        let parsed = [
            &["bytejail", "run", "--json", "r.bin"][..],
            &[
                "bytejail",
                "run",
                "--hex",
                "b0 2a c3",
                "--timeout",
                "250ms",
                "-q",
            ],
            &[
                "bytejail", "run", "x.s", "--syntax", "att", "--reg", "rdi=7", "--entry", "1",
            ],
            &[
                "bytejail",
                "run",
                "--asm",
                "mov al, 1; ret",
                "--policy",
                "strict-bpf",
            ],
            &[
                "bytejail",
                "run",
                "--no-trace",
                "--no-scrub",
                "--input-hex",
                "00ff",
                "-",
            ],
            &["bytejail", "run", "--", "-odd-name.bin"],
            &[
                "bytejail",
                "run",
                "--json",
                "--fields",
                "outcome,rax",
                "r.bin",
            ],
        ];
        for line in parsed {
            let full = Cli::try_parse_from(line).unwrap();
            let alone = Cli::try_parse_run_alone(line).unwrap_or_else(|| panic!("{line:?}"));
            assert_eq!(format!("{alone:?}"), format!("{full:?}"), "{line:?}");
        }
        let left_to_the_full_parser = [
            &["bytejail", "run", "--help"][..],
            &["bytejail", "run", "-h"],
            &["bytejail", "run", "--version"],
            &["bytejail", "run"],
            &["bytejail", "run", "--frmat", "bin", "x.bin"],
            &["bytejail", "run", "--hex", "c3", "x.bin"],
            &["bytejail", "run", "--fields", "outcome", "x.bin"],
            &["bytejail", "disasm", "x.bin"],
            &["bytejail", "--version"],
            &["bytejail"],
        ];
        for line in left_to_the_full_parser {
            assert!(Cli::try_parse_run_alone(line).is_none(), "{line:?}");
        }
        // The twin: the full parser does parse one of them, so `None` is the fast path's
        // choice, not a line nothing parses.
        assert!(Cli::try_parse_from(["bytejail", "disasm", "x.bin"]).is_ok());
    }

    #[test]
    fn usage_errors_fit_on_one_line() {
        let error =
            Cli::try_parse_from(["bytejail", "run", "--frmat", "bin", "x.bin"]).unwrap_err();
        let message = usage_error_message(&error);
        assert!(!message.contains('\n'), "{message:?}");
        assert!(message.contains("'--frmat'"), "{message:?}");
        assert!(!message.contains("Usage:"), "{message:?}");
    }
}
