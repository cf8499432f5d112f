//! Helpers shared by the integration tests: guest code from GNU as source, what must agree
//! between two runs of one job, processes watched through /proc, hosts to kill, and a
//! `bytejail batch` to talk to line by line.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use bytejail::load::{assemble, Format};
use bytejail::{Outcome, Report};

/// A hand-written escape guest from `guest-samples/escape/`, loaded as `bytejail run` loads it.
pub fn escape_sample(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guest-samples/escape")
        .join(name);
    bytejail::load::load_path(&path, None, 1 << 20).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Machine code from Intel-syntax GNU as source.
pub fn gas(source: &str) -> Vec<u8> {
    assemble(&format!(".intel_syntax noprefix\n{source}\n"), Format::Gas).unwrap()
}

/// What must agree between two runs of the same job: everything but timings and the
/// addresses the ABI hands out (each arena has its own).
pub fn essence(report: &Report) -> String {
    let outcome = match &report.outcome {
        Outcome::Returned(regs) => format!("returned rax={} rbx={}", regs.rax, regs.rbx),
        Outcome::Crashed { signal, fault } => format!(
            "crashed {signal} at {:?} {:?}",
            fault.as_ref().and_then(|f| f.code_offset),
            fault.as_ref().and_then(|f| f.instruction.clone())
        ),
        other => format!("{other:?}"),
    };
    let syscall = report
        .syscall
        .as_ref()
        .map(|s| (s.nr, s.name, s.abi, s.code_offset));
    format!(
        "{outcome} output={:?} truncated={} syscall={syscall:?}",
        report.output, report.output_truncated
    )
}

/// Runs the ignored test `name` of this test binary in a child process, a host to kill, and
/// returns once it printed "ready" (or ended), with its output still open.
pub fn start_host(name: &str) -> (Child, BufReader<ChildStdout>) {
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--nocapture"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
    (host, out)
}

/// (pid, state letter) of every process whose parent is `parent`, zombies included, but for
/// bytejail's tracer process, which a host keeps for as long as it lives once it has traced a
/// worker (see `runner/tracer.rs`; `tracer_of` finds it).
pub fn children_of(parent: u32) -> Vec<(u32, char)> {
    all_children_of(parent)
        .into_iter()
        .filter(|&(pid, _)| comm(pid) != "bytejail-tracer")
        .collect()
}

/// The tracer process of the host `parent`, if it has started one.
pub fn tracer_of(parent: u32) -> Option<u32> {
    all_children_of(parent)
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|&pid| comm(pid) == "bytejail-tracer")
}

/// (pid, state letter) of every process whose parent is `parent`, zombies included.
pub fn all_children_of(parent: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            found.push((pid, fields[0].chars().next().unwrap_or('?')));
        }
    }
    found
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The process's name (`/proc/<pid>/comm`), empty once it is gone.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Whether an optional tool (`nasm`, `chromium`, ...) is on `PATH`. A fresh machine has none of
/// them; CI installs them. Tests that need one call [`skip_without`] first.
pub fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_program(&dir.join(tool))))
}

/// Whether `path` is a file that can be run (a file without an execute bit is no tool).
pub fn is_program(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `true` when `tool` is missing: the caller returns at once. The first call per test binary
/// and tool prints one visible line, "`tool` not found: skipping N `tool` tests" (`count` is
/// how many tests of this binary need it), straight to stderr so the test harness's output
/// capture does not hide it.
pub fn skip_without(tool: &str, count: usize) -> bool {
    use std::collections::HashSet;
    use std::io::Write;
    use std::sync::Mutex;
    static TOLD: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    if have_tool(tool) {
        return false;
    }
    let mut told = TOLD.lock().unwrap_or_else(|e| e.into_inner());
    if told
        .get_or_insert_with(HashSet::new)
        .insert(tool.to_string())
    {
        let plural = if count == 1 { "" } else { "s" };
        let _ = writeln!(
            std::io::stderr(),
            "{tool} not found: skipping {count} {tool} test{plural}"
        );
    }
    true
}

/// A profile that allows everything: the guest holds every syscall (inside bytejail's walls).
pub fn allow_all() -> bytejail::Policy {
    bytejail::Policy::from_profile_json(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#, "allow-all.json")
        .unwrap()
}

/// Default options under [`allow_all`].
pub fn profile_options() -> bytejail::RunOptions {
    bytejail::RunOptions::default().with_policy(allow_all())
}

/// The `rax` a guest returned with; panics, with the summary, on any other outcome.
pub fn returned_rax(report: &Report) -> i64 {
    match report.outcome {
        Outcome::Returned(regs) => regs.rax as i64,
        ref other => panic!("expected a return, got {other:?}: {}", report.summary()),
    }
}

/// Whether this process may give workers PID namespaces (root here; CI runs as root too).
pub fn namespaces() -> bool {
    // SAFETY: geteuid cannot fail.
    (unsafe { libc::geteuid() }) == 0
}

/// Processes whose name (`comm`) is `marker` and that are not zombies.
pub fn marked(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if comm(pid) == marker && alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// A command that runs `program` where workers can get no PID namespace: in a user namespace
/// (util-linux `unshare -U -r`) that may make no further user namespace, whose root holds no
/// capability and cannot regain one (`setpriv`), like a host that is not root on a machine
/// without unprivileged user namespaces. Needs root, `unshare` and `setpriv`.
pub fn without_pid_namespaces(program: &std::path::Path) -> Command {
    let mut command = Command::new("unshare");
    command
        .args([
            "-U",
            "-r",
            "sh",
            "-c",
            "echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv \
             --securebits +noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked \
             --inh-caps=-all --bounding-set=-all --ambient-caps=-all -- \"$@\"",
            "sh",
        ])
        .arg(program);
    command
}

/// The CPU time process `pid` used so far, user and system, in clock ticks (`/proc/PID/stat`).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command's closing parenthesis: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The spinning hand-off's tests (`tests/spin.rs`, `tests/review_spin.rs`): spinning sessions
/// of one process share its CPUs (two per session), so these tests run one at a time.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pins the calling thread (and so the workers it forks from now on) to `cpus`.
pub fn pin(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0
        );
    }
}

/// Whether this machine has two CPUs to spin on (saying so when it has not).
pub fn two_cpus() -> bool {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 {
        eprintln!("one CPU: nothing spins here; skipping");
    }
    n >= 2
}

/// For a test of the spinning hand-off: `None` where there are not two CPUs to spin on (said
/// in one line, see [`two_cpus`]); else the lock that runs such tests one at a time
/// ([`one_at_a_time`]), with this thread, and the workers it forks from now on, pinned to
/// CPUs 0 and 1.
pub fn two_cpus_to_spin() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !two_cpus() {
        return None;
    }
    let one = one_at_a_time();
    pin(&[0, 1]);
    Some(one)
}

/// A reproducible stream of pseudo-random 31-bit numbers from `seed` (a linear congruential
/// generator's high bits), for tests that mix inputs.
pub fn pseudo_random(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    }
}

/// `bytes` as lower-case hex digits without separators, as a batch line's `code_hex` or
/// `input_hex` holds them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `lea rax, [rbx + 1]; ret`.
pub fn plus_one() -> Vec<u8> {
    gas("lea rax, [rbx + 1]\n ret")
}

/// `count` inputs of [`plus_one`] with rbx = 0, 1, ...; every one must return rbx + 1.
pub fn inputs(same: &mut bytejail::SameCode, options: &bytejail::RunOptions, count: u64) {
    for i in 0..count {
        let mut options = options.clone();
        options.registers.set(bytejail::Gpr::RBX, i).unwrap();
        let report = same.run_with(b"", &options).unwrap();
        match report.outcome {
            Outcome::Returned(regs) => assert_eq!(regs.rax, i + 1, "input {i}"),
            other => panic!("input {i}: {other:?}"),
        }
    }
}

/// Generous bound on one trivial job's answer on a loaded 2-core machine; a quiet one answers
/// within milliseconds.
pub const ANSWER_BOUND: Duration = Duration::from_secs(2);

/// A running `bytejail batch ARGS -` with its result lines arriving on a channel.
pub struct Batch {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Batch {
    pub fn start(args: &[&str]) -> Batch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
            .arg("batch")
            .args(args)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Batch {
            child,
            stdin,
            lines,
        }
    }

    /// Writes one job line (stdin stays open) and waits for one result line; the result and
    /// how long it took.
    pub fn ask(&mut self, line: &str) -> (Value, Duration) {
        let started = Instant::now();
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let answer = self.lines.recv_timeout(ANSWER_BOUND).unwrap_or_else(|e| {
            panic!("no answer to {line} within {ANSWER_BOUND:?} ({e}) while stdin stays open")
        });
        let took = started.elapsed();
        (serde_json::from_str(&answer).unwrap(), took)
    }

    /// Closes stdin and waits: the exit status and stderr.
    pub fn finish(mut self) -> (i32, String) {
        drop(self.stdin.take());
        let output = self.child.wait_with_output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        (output.status.code().unwrap_or(-1), stderr)
    }
}

/// What a `bytejail batch` given all its input at once did (see [`batch_through`]).
pub struct BatchRun {
    pub status: i32,
    pub results: Vec<Value>,
    pub stderr: String,
    /// Whether all of the input was written (a batch that ends early closes its stdin).
    pub wrote_all: bool,
}

/// Runs `bytejail batch ARGS` on `input` (see [`batch_through`]).
pub fn batch_of(args: &[&str], input: &str) -> BatchRun {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bytejail"));
    command.arg("batch").args(args);
    batch_through(command, input)
}

/// Runs `command` (a `bytejail batch`, maybe under a wrapper) on `input`, written from a
/// thread of its own while the results are read.
pub fn batch_through(mut command: Command, input: &str) -> BatchRun {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).is_ok());
    let output = child.wait_with_output().unwrap();
    let wrote_all = writer.join().unwrap();
    let results = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    BatchRun {
        status: output.status.code().unwrap_or(-1),
        results,
        stderr: String::from_utf8(output.stderr).unwrap(),
        wrote_all,
    }
}

/// `clone` of a thread (no stack of its own: neither side touches it) that runs `thread`
/// while the leader runs `leader`.
pub fn with_thread(thread: &str, leader: &str) -> Vec<u8> {
    gas(&clone_source(0x10f00, thread, leader)) // CLONE_VM|FS|FILES|SIGHAND|THREAD
}

/// GNU as source: `clone(flags)` (no stack of its own: neither side touches it), then the
/// child's code, then the parent's.
pub fn clone_source(flags: u32, child: &str, parent: &str) -> String {
    format!(
        "
        mov edi, {flags:#x}
        xor esi, esi
        xor edx, edx
        xor r10d, r10d
        xor r8d, r8d
        mov eax, 56
        syscall
        test rax, rax
        jnz 2f
        {child}
    2:  {parent}"
    )
}

/// What a report's JSON must agree on with another run of the same job: everything but
/// timings and the addresses the ABI hands out (each arena has its own), with the first
/// argument of a violating call (test guests set it) and whether the kernel vouched for the
/// details.
pub fn report_essence(report: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let mut kept = serde_json::Map::new();
    for key in [
        "outcome",
        "rax",
        "exit_code",
        "signal",
        "output_hex",
        "output_truncated",
    ] {
        if let Some(value) = report.get(key) {
            kept.insert(key.into(), value.clone());
        }
    }
    if let Some(fault) = report.get("fault") {
        let mut fault = fault.clone();
        // An address in the arena (the instruction of a trap, the stack) is this run's own.
        if fault["address"].as_u64().is_some_and(|a| a >= 1 << 32) {
            fault["address"] = Value::Null;
        }
        kept.insert("fault".into(), fault);
    }
    if let Some(syscall) = report.get("syscall") {
        let mut syscall = syscall.clone();
        let first = syscall["args"].get(0).cloned();
        syscall["args"] = first.unwrap_or(Value::Null);
        kept.insert("syscall".into(), syscall);
    }
    Value::Object(kept)
}

/// The guest finds its own record page (one page below the code's guard and the region), writes
/// a fault there, blocks SIGSEGV with a forged `rt_sigreturn` frame, and faults: the worker's
/// handler never runs, so untraced the record stays as the guest wrote it.
pub fn forged_fault_record() -> Vec<u8> {
    gas(&format!(
        "
    code_start:
        lea rbx, [rip + code_start]
        lea rdi, [rbx - 0x18000]            # the data page: region + 0x1000
        mov qword ptr [rdi + 0x200], 11     # FAULT_SIGNO
        mov rax, 0xdeadbeef
        mov qword ptr [rdi + 0x210], rax    # FAULT_ADDR
        mov qword ptr [rdi + 0x218], rbx    # FAULT_RIP: code+0
        mov qword ptr [rdi + 0x100], 2      # REC_STATE: a fault
{}
    resume:
        mov eax, 8
        mov qword ptr [rax], 1              # the real fault: address 8
        ret",
        sigreturn_to("resume", -1)
    ))
}

/// GNU as (Intel syntax) that builds an `rt_sigreturn` frame on the stack and makes the call:
/// the guest goes on at `label` with the signal mask `mask` (-1: every signal blocked, 0: none),
/// rsp back where it was, rflags 0x202, and the 64-bit user code and data selectors.
pub fn sigreturn_to(label: &str, mask: i64) -> String {
    format!(
        "
        sub rsp, 512
        mov rdi, rsp
        mov ecx, 512 / 8
        xor eax, eax
        rep stosq
        mov qword ptr [rsp + 296], {mask}   # uc_sigmask
        lea rax, [rsp + 512]
        mov [rsp + 160], rax
        lea rax, [rip + {label}]
        mov [rsp + 168], rax
        mov qword ptr [rsp + 176], 0x202
        mov word ptr [rsp + 184], 0x33
        mov word ptr [rsp + 190], 0x2b
        mov eax, 15
        syscall"
    )
}

// Guests that handle, send and wait for signals (the tracer reviews).

/// `rt_sigprocmask(SIG_SETMASK, {0})`: the worker starts with every signal but the faults
/// blocked, so a guest that wants its signals delivered (and stops for them) unblocks them first.
pub const UNMASK: &str = "
        push 0
        mov edi, 2
        mov rsi, rsp
        xor edx, edx
        mov r10d, 8
        mov eax, 14
        syscall
        pop rax";

pub const THREAD: u32 = 0x10f00; // CLONE_VM|FS|FILES|SIGHAND|THREAD
pub const SIGCHLD: u32 = 17;
pub const SPIN: &str = "mov ecx, 100000000\n1: dec ecx\njnz 1b";

/// `kill(pid, SIGURG)` 2,000 times, `pid` from syscall `pid_call` (39 `getpid`, 110
/// `getppid`), then a spin forever. Under a tracer each signal is a stop of whichever thread
/// takes it, even ignored; an endless storm can then starve a spinning leader for as long as
/// the tracer is slow to let it go (seconds on a VM whose system calls are slow), and whether
/// such a job times out or gets to its fault depends on the machine. A storm that ends keeps
/// the stops racing the job's end and the end the same everywhere.
pub fn sigurg_storm(pid_call: u32) -> String {
    format!(
        "mov eax, {pid_call}\nsyscall\nmov r12, rax\nmov r13d, 2000\n\
         3: mov rdi, r12\nmov esi, 23\nmov eax, 62\nsyscall\ndec r13d\njnz 3b\n4: jmp 4b"
    )
}

/// A file with the allow-all profile, kept as long as the returned directory.
pub fn allow_all_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allow-all.json");
    std::fs::write(&path, r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

/// `clone(flags)` then the child's code, then the parent's ([`clone_source`]), with
/// every signal unblocked first.
pub fn cloned(flags: u32, child: &str, parent: &str) -> Vec<u8> {
    gas(&format!("{UNMASK}\n{}", clone_source(flags, child, parent)))
}

/// `rt_sigaction(signo)` with the guest's labels `handler` and `restorer` and `flags`.
pub fn install_handler(signo: u32, flags: u32) -> String {
    sigaction(signo, flags, "handler", "restorer")
}

/// `rt_sigaction(signo)` with the guest's labels `handler` and `restorer` (its code's own)
/// and `flags`; every register but `rax`, `rcx`, `rdx`, `rsi`, `rdi`, `r10` and `r11` kept.
pub fn sigaction(signo: u32, flags: u32, handler: &str, restorer: &str) -> String {
    format!(
        "
        sub rsp, 64
        lea rax, [rip + {handler}]
        mov [rsp], rax
        mov qword ptr [rsp + 8], {flags:#x}
        lea rax, [rip + {restorer}]
        mov [rsp + 16], rax
        mov qword ptr [rsp + 24], 0
        mov edi, {signo}
        mov rsi, rsp
        xor edx, edx
        mov r10d, 8
        mov eax, 13                             # rt_sigaction
        syscall
        add rsp, 64"
    )
}

/// A signal handler for SIGUSR1 (`handler`, returning through a restorer), then `body`.
pub fn with_usr1_handler(handler: &str, body: &str) -> Vec<u8> {
    let install = install_handler(10, 0x04000000); // SA_RESTORER
    gas(&format!(
        "
        {install}
        {UNMASK}
        mov eax, 39
        syscall
        mov r12, rax
        {body}
    handler:
        {handler}
    restorer:
        mov eax, 15
        syscall"
    ))
}

/// kill(r12 = own pid, signo)
pub fn kill_self(signo: u32) -> String {
    format!("mov rdi, r12\nmov esi, {signo}\nmov eax, 62\nsyscall")
}

/// A named pipe `jobs` made in `dir`.
pub fn fifo_in(dir: &std::path::Path) -> std::path::PathBuf {
    let fifo = dir.join("jobs");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
    fifo
}

/// A fork copies only the forking thread: a lock another test's thread held in the library at
/// that moment (the tracers' list, say) would stay locked in the child for good, and the child
/// would hang. So in a test file whose tests fork the test process, those tests take this for
/// writing and every other test there for reading: none of them runs while one forks.
static APART: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// For a test that forks this test process (see `APART`).
pub fn forking() -> std::sync::RwLockWriteGuard<'static, ()> {
    APART.write().unwrap_or_else(|e| e.into_inner())
}

/// For every other test of a file whose tests fork (see `APART`).
pub fn beside_forks() -> std::sync::RwLockReadGuard<'static, ()> {
    APART.read().unwrap_or_else(|e| e.into_inner())
}

/// Strict mode and strict-bpf, each with a same-code worker's fd 1 a pipe (the default) and
/// its own file (`RunOptions::output_file`).
pub fn both_kinds() -> Vec<(bytejail::Policy, bool)> {
    [bytejail::Policy::Strict, bytejail::Policy::StrictBpf]
        .into_iter()
        .flat_map(|policy| [(policy.clone(), false), (policy, true)])
        .collect()
}

/// The `/proc/self/task/<tid>` directories of this process's threads named `name`.
pub fn threads_named(name: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|task| task.path())
        .filter(|task| {
            std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

/// Runs `input` through the same-code session `same` with `options`, and the same job in a
/// fresh worker; asserts that the two reports agree ([`essence`], `what` saying which input)
/// and returns the same-code one.
pub fn same_as_fresh(
    same: &mut bytejail::SameCode,
    input: &[u8],
    options: &bytejail::RunOptions,
    what: &str,
) -> Report {
    let report = same.run_with(input, options).unwrap();
    let fresh = bytejail::run(same.code(), input, options).unwrap();
    assert_eq!(essence(&report), essence(&fresh), "{what}");
    report
}

/// Run options under `policy` with an output limit of `max_output` bytes and a same-code
/// worker's fd 1 its own file or not (see [`both_kinds`]).
pub fn kind_options(
    policy: &bytejail::Policy,
    output_file: bool,
    max_output: usize,
) -> bytejail::RunOptions {
    bytejail::RunOptions::default()
        .with_policy(policy.clone())
        .with_limits(bytejail::Limits::default().with_max_output(max_output))
        .with_output_file(output_file)
}

/// Whether this process may open the page-fault event a same-code host watches its worker
/// with (`runner/sys/faults.rs`): a software perf event, kernel-mode faults included, on a
/// child that is not dumpable, as a worker is not. Asked once, of a child made for it; says
/// so in one line where it may not (not root, `perf_event_paranoid` over 1, a seccomp
/// profile around the tests): the resets then make their `fstat`, and tests that count the
/// skipped ones check nothing of that.
pub fn fault_watch_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| {
        // SAFETY: the child only makes raw calls (prctl, pause) until it is killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: raw calls in the child, which never returns. It holds no descriptor of
            // the tests beside it (a pipe end held here would keep another test from its EOF).
            unsafe {
                libc::syscall(libc::SYS_close_range, 0, u32::MAX, 0);
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
                loop {
                    libc::pause();
                }
            }
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        std::thread::sleep(Duration::from_millis(20)); // past its prctl
                                                       // struct perf_event_attr (PERF_ATTR_SIZE_VER0): software page faults, period 1,
                                                       // exclude_hv only.
        let mut attr = [0u64; 8];
        attr[0] = 1 | (64 << 32); // type PERF_TYPE_SOFTWARE, size 64
        attr[1] = 2; // PERF_COUNT_SW_PAGE_FAULTS
        attr[2] = 1; // sample_period
        attr[6] = 1 << 6; // exclude_hv
                          // SAFETY: perf_event_open reads 64 bytes of `attr`; the fd is closed below; the
                          // child is ours, killed and reaped.
        let fd = unsafe {
            let fd = libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), pid, -1, -1, 8);
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            fd
        };
        if fd < 0 {
            eprintln!(
                "no page-fault watch here ({}): resets make their fstat; not counted",
                std::io::Error::last_os_error()
            );
            return false;
        }
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(fd as i32) };
        true
    })
}
