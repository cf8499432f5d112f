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

use serde::Serialize;

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
    pub const RAX: Gpr = Gpr(0);
    pub const RBX: Gpr = Gpr(1);
    pub const RCX: Gpr = Gpr(2);
    pub const RDX: Gpr = Gpr(3);
    pub const RSI: Gpr = Gpr(4);
    pub const RDI: Gpr = Gpr(5);
    pub const RBP: Gpr = Gpr(6);
    pub const RSP: Gpr = Gpr(7);

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
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        GPR_NAMES
            .iter()
            .position(|name| *name == lower)
            .map(|i| Gpr(i as u8))
            .ok_or_else(|| {
                format!(
                    "unknown register `{s}`; expected one of rax rbx rcx rdx rsi rdi rbp r8..r15"
                )
            })
    }
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
    pub fn set(&mut self, reg: Gpr, value: u64) -> Result<(), String> {
        if reg == Gpr::RSP {
            return Err("rsp cannot be set: the runner owns the guest stack".to_string());
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
    pub fn set_from_arg(&mut self, arg: &str) -> Result<(), String> {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("register setting `{arg}` is not NAME=VALUE"))?;
        let reg: Gpr = name.parse()?;
        let value = parse_u64(value.trim())
            .ok_or_else(|| format!("value `{value}` for {reg} is not a decimal or 0x-hex u64"))?;
        self.set(reg, value)
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
            allow_read: Vec::new(),
            allow_write: Vec::new(),
            allow_uncontained: false,
        }
    }
}

/// The general registers and rflags as the guest left them when it returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Registers {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
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
