//! The guest ABI (v1): what the guest finds at entry, and the limits of a run.
//!
//! This is a contract: graders and test suites outside this repository hold bytejail to it.
//! - Code is mapped read+execute at a page-aligned address and entered at `entry`.
//! - `rdi` = input address (read-only), `rsi` = input length, `rdx` = scratch address (zeroed,
//!   read-write), `rcx` = scratch length, `rsp` = top of a fresh stack with `(rsp + 8) % 16 == 0`
//!   and `[rsp]` = the return address into the runner. Every other general register is 0.
//!   [`InitialRegisters`] overrides any of them except `rsp`.
//! - fd 0 streams the input bytes (EOF after them); fd 1 is the guest's output.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default wall-clock limit of one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default limit on the bytes a guest may write to fd 1.
pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;
/// Default guest stack size (an unmapped guard page sits below it).
pub const DEFAULT_STACK: usize = 1 << 20;
/// Default scratch size.
pub const DEFAULT_SCRATCH: usize = 1 << 20;
/// Default limit on the code size.
pub const DEFAULT_MAX_CODE: usize = 16 << 20;
/// Default limit on the input size.
pub const DEFAULT_MAX_INPUT: usize = 64 << 20;

/// Default limit on the guest's own memory: scratch, stack and whatever it maps itself.
pub const DEFAULT_MEMORY: usize = 1 << 30;
/// Default limit on one file a guest writes (`RLIMIT_FSIZE`).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 16 << 20;
/// Default limit on the descriptors a guest holds at once (`RLIMIT_NOFILE`).
pub const DEFAULT_MAX_OPEN_FILES: u64 = 64;
/// Fewest descriptors accepted: the worker's own (0, 1, the control pipes 3 and 4) and a few.
pub const MIN_OPEN_FILES: u64 = 8;

/// Smallest guest stack accepted: room for the return address and a few frames.
pub const MIN_STACK: usize = 64;
/// Largest stack or scratch the runner maps for one guest.
pub const MAX_REGION: usize = 16 << 30;

/// The general registers the guest can set at entry and sees at return, in the
/// order the trampoline loads and stores them.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// Index of a general register in [`GPR_NAMES`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gpr(u8);

impl Gpr {
    /// `rax`.
    pub const RAX: Gpr = Gpr(0);
    /// `rbx`.
    pub const RBX: Gpr = Gpr(1);
    /// `rcx`.
    pub const RCX: Gpr = Gpr(2);
    /// `rdx`.
    pub const RDX: Gpr = Gpr(3);
    /// `rsi`.
    pub const RSI: Gpr = Gpr(4);
    /// `rdi`.
    pub const RDI: Gpr = Gpr(5);
    /// `rbp`.
    pub const RBP: Gpr = Gpr(6);
    /// `rsp`.
    pub const RSP: Gpr = Gpr(7);
    /// `r8`.
    pub const R8: Gpr = Gpr(8);
    /// `r9`.
    pub const R9: Gpr = Gpr(9);
    /// `r10`.
    pub const R10: Gpr = Gpr(10);
    /// `r11`.
    pub const R11: Gpr = Gpr(11);
    /// `r12`.
    pub const R12: Gpr = Gpr(12);
    /// `r13`.
    pub const R13: Gpr = Gpr(13);
    /// `r14`.
    pub const R14: Gpr = Gpr(14);
    /// `r15`.
    pub const R15: Gpr = Gpr(15);

    /// Every general register, in [`GPR_NAMES`] order.
    pub const ALL: [Gpr; 16] = [
        Gpr::RAX,
        Gpr::RBX,
        Gpr::RCX,
        Gpr::RDX,
        Gpr::RSI,
        Gpr::RDI,
        Gpr::RBP,
        Gpr::RSP,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];

    /// The register's position in [`GPR_NAMES`].
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The register's lower-case name.
    pub fn name(self) -> &'static str {
        GPR_NAMES[self.index()]
    }
}

impl FromStr for Gpr {
    type Err = RegisterError;

    /// Parses a register name, in any case (`rax`, `R12`).
    fn from_str(s: &str) -> Result<Self, RegisterError> {
        let lower = s.trim().to_ascii_lowercase();
        GPR_NAMES
            .iter()
            .position(|name| *name == lower)
            .map(|i| Gpr(i as u8))
            .ok_or_else(|| RegisterError::UnknownName(s.to_string()))
    }
}

/// Why a register setting was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Not the name of a general register.
    #[error("unknown register `{0}`; expected one of rax rbx rcx rdx rsi rdi rbp r8..r15")]
    UnknownName(String),
    /// `rsp` belongs to the runner.
    #[error("rsp cannot be set: the runner owns the guest stack")]
    StackPointer,
    /// A setting without `=`.
    #[error("register setting `{0}` is not NAME=VALUE")]
    NotAssignment(String),
    /// A value that is not a u64.
    #[error("value `{value}` for {register} is not a decimal or 0x-hex u64")]
    BadValue {
        /// The register being set.
        register: Gpr,
        /// The text given as its value.
        value: String,
    },
}

impl fmt::Display for Gpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Register values the caller sets at entry, overriding the ABI's defaults.
///
/// `rsp` cannot be set: the runner owns the stack it hands to the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialRegisters {
    overrides: [Option<u64>; 16],
}

impl InitialRegisters {
    /// Sets `reg` to `value` at entry. Fails for `rsp`.
    pub fn set(&mut self, reg: Gpr, value: u64) -> Result<(), RegisterError> {
        if reg == Gpr::RSP {
            return Err(RegisterError::StackPointer);
        }
        self.overrides[reg.index()] = Some(value);
        Ok(())
    }

    /// The override for `reg`, if any.
    pub fn get(&self, reg: Gpr) -> Option<u64> {
        self.overrides[reg.index()]
    }

    /// Writes the overrides into `gpr` (in [`GPR_NAMES`] order).
    pub(crate) fn apply(&self, gpr: &mut [u64; 16]) {
        for (slot, value) in gpr.iter_mut().zip(self.overrides) {
            if let Some(value) = value {
                *slot = value;
            }
        }
    }

    /// Parses `NAME=VALUE` (decimal or 0x-hex) and applies it.
    pub fn set_from_arg(&mut self, arg: &str) -> Result<(), RegisterError> {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| RegisterError::NotAssignment(arg.to_string()))?;
        let reg: Gpr = name.parse()?;
        let value = parse_u64(value.trim()).ok_or_else(|| RegisterError::BadValue {
            register: reg,
            value: value.to_string(),
        })?;
        self.set(reg, value)
    }

    /// As [`InitialRegisters::set`], by value: `InitialRegisters::default().with(Gpr::RBX, 5)?`.
    pub fn with(mut self, reg: Gpr, value: u64) -> Result<Self, RegisterError> {
        self.set(reg, value)?;
        Ok(self)
    }
}

/// Parses a decimal or `0x`-prefixed hexadecimal u64 (underscores allowed).
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.replace('_', "");
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// The limits of one run.
///
/// Built from [`Limits::default`] and the `with_*` methods (or by setting its public fields):
/// `Limits::default().with_timeout(Duration::from_millis(300))`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Wall-clock limit, measured by the host from before the fork to the reap.
    pub timeout: Duration,
    /// Bytes the guest may write to fd 1; one more and the worker is killed.
    pub max_output: usize,
    /// Guest stack size in bytes (rounded up to whole pages).
    pub stack: usize,
    /// Scratch memory size in bytes (rounded up to whole pages for the mapping;
    /// `rcx` holds this exact value).
    pub scratch: usize,
    /// Largest code accepted.
    pub max_code: usize,
    /// Largest input accepted.
    pub max_input: usize,
    /// The guest's own memory: scratch, stack and whatever it maps itself, in bytes
    /// (`RLIMIT_AS` once the runner's read-only mappings are counted in). `scratch + stack`
    /// may not exceed it.
    pub memory: usize,
    /// Processes and threads a job may have at once, the worker included: 1 (the default)
    /// refuses `clone`, `fork`, `vfork` and `clone3` with `EAGAIN`. Only a profile can allow
    /// those calls at all; more than 1 needs the worker's PID namespace (see `bytejail doctor`).
    pub max_procs: u32,
    /// Largest file a guest may write, in bytes (`RLIMIT_FSIZE`; a memfd is a file too).
    pub max_file_size: u64,
    /// Most descriptors a guest may hold at once (`RLIMIT_NOFILE`), at least [`MIN_OPEN_FILES`].
    pub max_open_files: u64,
    /// CPU time the job may use, next to the wall-clock `timeout`: the host watches the CPU of
    /// the job's whole process tree (a profile job's CPU accounting cgroup, where one can be
    /// had; see `bytejail doctor`), else the worker's own clock (all its threads; with
    /// `max_procs` 1 that is the whole job), with `RLIMIT_CPU` as the backstop. `None`: only
    /// the backstop the runner sets from the timeout.
    pub cpu_time: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            max_output: DEFAULT_MAX_OUTPUT,
            stack: DEFAULT_STACK,
            scratch: DEFAULT_SCRATCH,
            max_code: DEFAULT_MAX_CODE,
            max_input: DEFAULT_MAX_INPUT,
            memory: DEFAULT_MEMORY,
            max_procs: 1,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            cpu_time: None,
        }
    }
}

/// Everything about a run except the code and the input.
///
/// Built from [`RunOptions::default`] and the `with_*` methods (or by setting its public
/// fields): `RunOptions::default().with_policy(policy).with_limits(limits)`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// Offset into the code where the guest is entered.
    pub entry: usize,
    /// Register overrides at entry.
    pub registers: InitialRegisters,
    /// Limits of the run.
    pub limits: Limits,
    /// Unmap everything in the worker but the guest's own memory before it runs (default).
    /// Off, the guest can read a copy of the whole host process: its environment, heap and
    /// other jobs' data. Only for measuring what scrubbing costs and for tests that show it
    /// matters.
    pub scrub: bool,
    /// Which seccomp mode the worker enters: strict (the default), or a filter.
    pub policy: crate::policy::Policy,
    /// After a violation under strict mode in an untraced run (or one the tracer could not
    /// attach to), which kills without saying why, run the same code and input once more,
    /// traced, to learn which syscall it was (default). The re-run is the same strict-mode
    /// job; its syscall is believed only if it ends the same way with the same output, and is
    /// reported unverified. Its time counts against the job's timeout.
    pub diagnose: bool,
    /// Trace the worker (default): the details of a fault or a violation then come from the
    /// kernel, through `ptrace`, and are reported as verified (see [`crate::Fault::verified`]).
    /// Off, a run saves the tracer's hand-offs (a few microseconds per fresh worker) and those
    /// details come from the worker's record, which the guest can write: they are reported
    /// unverified. Where the tracer cannot attach (another tracer, no permission), the run
    /// goes on untraced and says so the same way.
    pub trace: bool,
    /// A handle that ends the job from another thread ([`crate::Cancel`]): the job is then
    /// reported as [`crate::Outcome::Cancelled`]. `None` (the default): only its limits end it.
    pub cancel: Option<crate::Cancel>,
    /// Under a profile, files and directories the guest may read (a directory with everything
    /// below it): each appears at the same path in the worker's empty root, mounted read-only,
    /// and Landlock allows reading it. Absolute paths of existing files or directories, at
    /// most [`MAX_GRANTS`] with `allow_write`; refused under strict mode (nothing to grant).
    pub allow_read: Vec<std::path::PathBuf>,
    /// As `allow_read`, for reading and writing (and, in a directory, creating and removing
    /// files and directories); mounted writable.
    pub allow_write: Vec<std::path::PathBuf>,
    /// Where workers get no PID namespace (a host that is not root, without unprivileged user
    /// namespaces; see `bytejail doctor`), run jobs with `Limits::max_procs` above 1 anyway:
    /// processes a guest starts may then outlive its job and the host. Off (the default),
    /// such jobs are refused. The process limit still needs a pids cgroup.
    pub allow_uncontained: bool,
    /// Let a same-code worker and its host hand inputs over through a shared cache line that
    /// each side spins on for a while (default), instead of only through pipes: a few hundred
    /// nanoseconds per input instead of microseconds, at the price of a core kept busy for at
    /// most tens of microseconds after each input. Only where it pays and does not hurt:
    /// under strict mode and `strict-bpf`, without a CPU-time limit, when the host's thread
    /// may run on at least two CPUs per worker spinning in this process now (an idle session
    /// stops counting once its worker has stopped spinning), and only while
    /// inputs keep coming (see `docs/many-jobs.md`). Off, every hand-off blocks in the
    /// kernel. Spinning never counts against a job's CPU time, its reported `user` time or its
    /// worker's `RLIMIT_CPU` budget. Fresh and pooled jobs never spin.
    pub spin: bool,
    /// Give a same-code worker under strict mode or `strict-bpf` a file of its own as fd 1
    /// instead of a pipe (off by default). An input that writes then costs the host one
    /// system call instead of two or three (one `fstat` says whether the guest wrote and what
    /// the next reset must clean; a pipe takes a `read` of its own, and a spun input that
    /// writes nothing costs the same either way where io_uring tells the host the pipe is
    /// empty: see [`crate::SameCode::inputs_unread`]). The price: fd 1 is then a file, not a pipe, and a `write` whose buffer
    /// runs into unmapped memory keeps the bytes copied before the fault, where a pipe drops
    /// the page it copied in part (or fails with `EFAULT`). Such a guest's output, `rax` and
    /// even outcome (the kept bytes may pass the output limit) then differ from a fresh
    /// run's, which is otherwise the same report. Writes never block (a pipe's do when full),
    /// and an input whose output limit differs from its worker's gets a new worker. Ignored
    /// elsewhere: fresh and pooled workers, and workers under a profile, always write to a pipe.
    pub output_file: bool,
}

/// Most paths `RunOptions::allow_read` and `allow_write` may grant together.
pub const MAX_GRANTS: usize = 8;

/// Longest path a grant may name, in bytes.
pub const MAX_GRANT_PATH: usize = 240;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            entry: 0,
            registers: InitialRegisters::default(),
            limits: Limits::default(),
            scrub: true,
            policy: crate::policy::Policy::Strict,
            diagnose: true,
            trace: true,
            cancel: None,
            allow_read: Vec::new(),
            allow_write: Vec::new(),
            allow_uncontained: false,
            spin: true,
            output_file: false,
        }
    }
}

/// One `with_*` builder method per field.
macro_rules! builders {
    ($ty:ident { $($(#[$doc:meta])* $method:ident => $field:ident: $value:ty,)* }) => {
        impl $ty {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $method(mut self, $field: $value) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}

builders!(Limits {
    /// Sets [`Limits::timeout`].
    with_timeout => timeout: Duration,
    /// Sets [`Limits::max_output`].
    with_max_output => max_output: usize,
    /// Sets [`Limits::stack`].
    with_stack => stack: usize,
    /// Sets [`Limits::scratch`].
    with_scratch => scratch: usize,
    /// Sets [`Limits::max_code`].
    with_max_code => max_code: usize,
    /// Sets [`Limits::max_input`].
    with_max_input => max_input: usize,
    /// Sets [`Limits::memory`].
    with_memory => memory: usize,
    /// Sets [`Limits::max_procs`].
    with_max_procs => max_procs: u32,
    /// Sets [`Limits::max_file_size`].
    with_max_file_size => max_file_size: u64,
    /// Sets [`Limits::max_open_files`].
    with_max_open_files => max_open_files: u64,
    /// Sets [`Limits::cpu_time`].
    with_cpu_time => cpu_time: Option<Duration>,
});

builders!(RunOptions {
    /// Sets [`RunOptions::entry`].
    with_entry => entry: usize,
    /// Sets [`RunOptions::registers`].
    with_registers => registers: InitialRegisters,
    /// Sets [`RunOptions::limits`].
    with_limits => limits: Limits,
    /// Sets [`RunOptions::scrub`].
    with_scrub => scrub: bool,
    /// Sets [`RunOptions::policy`].
    with_policy => policy: crate::policy::Policy,
    /// Sets [`RunOptions::diagnose`].
    with_diagnose => diagnose: bool,
    /// Sets [`RunOptions::trace`].
    with_trace => trace: bool,
    /// Sets [`RunOptions::cancel`].
    with_cancel => cancel: Option<crate::Cancel>,
    /// Sets [`RunOptions::allow_read`].
    with_allow_read => allow_read: Vec<std::path::PathBuf>,
    /// Sets [`RunOptions::allow_write`].
    with_allow_write => allow_write: Vec<std::path::PathBuf>,
    /// Sets [`RunOptions::allow_uncontained`].
    with_allow_uncontained => allow_uncontained: bool,
    /// Sets [`RunOptions::spin`].
    with_spin => spin: bool,
    /// Sets [`RunOptions::output_file`].
    with_output_file => output_file: bool,
});

/// The general registers and rflags as the guest left them when it returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Registers {
    /// `rax`.
    pub rax: u64,
    /// `rbx`.
    pub rbx: u64,
    /// `rcx`.
    pub rcx: u64,
    /// `rdx`.
    pub rdx: u64,
    /// `rsi`.
    pub rsi: u64,
    /// `rdi`.
    pub rdi: u64,
    /// `rbp`.
    pub rbp: u64,
    /// `rsp`.
    pub rsp: u64,
    /// `r8`.
    pub r8: u64,
    /// `r9`.
    pub r9: u64,
    /// `r10`.
    pub r10: u64,
    /// `r11`.
    pub r11: u64,
    /// `r12`.
    pub r12: u64,
    /// `r13`.
    pub r13: u64,
    /// `r14`.
    pub r14: u64,
    /// `r15`.
    pub r15: u64,
    /// `rflags`.
    pub rflags: u64,
}

impl Registers {
    /// Builds the set from the 16 general registers in [`GPR_NAMES`] order and rflags.
    pub fn from_array(gpr: [u64; 16], rflags: u64) -> Self {
        let [rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15] = gpr;
        Registers {
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rbp,
            rsp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rflags,
        }
    }

    /// The value of a general register.
    pub fn get(&self, reg: Gpr) -> u64 {
        let r = self;
        [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ][reg.index()]
    }
}
