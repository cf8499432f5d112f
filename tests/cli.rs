//! The `bytejail` command line as a contract: the `--json` schema of every outcome, exit statuses
//! with and without `--json`, the code and input sources, every bad-input case (one line on
//! stderr, exit 2, nothing on stdout), and `disasm`.
//!
//! Guest code is written inline as hex, encoded by hand; each constant says what it is.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tempfile::TempDir;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_bytejail");

/// `mov al, 42; ret`: returns 42 (rax is 0 at entry).
const RETURN_42: &str = "b0 2a c3";
/// `mov eax, 60; mov edi, 3; syscall`: exit(3).
const EXIT_3: &str = "b8 3c 00 00 00 bf 03 00 00 00 0f 05";
/// `mov qword ptr [rax], 1` with rax = 0: SIGSEGV at code+0, address 0.
const NULL_WRITE: &str = "48 c7 00 01 00 00 00";
/// `mov eax, 39; syscall`: getpid, outside strict mode's allow list.
const GETPID: &str = "b8 27 00 00 00 0f 05";
/// `jmp $`: spins forever.
const SPIN: &str = "eb fe";
/// `mov rsi, rdx` (scratch, zeroed), then forever `write(1, rsi, 4096)`:
/// `mov eax, 1; mov edi, 1; mov edx, 0x1000; syscall; jmp` back to the `mov eax`.
const FLOOD: &str = "48 89 d6 b8 01 00 00 00 bf 01 00 00 00 ba 00 10 00 00 0f 05 eb ed";
/// `mov rdx, rsi; mov rsi, rdi; mov edi, 1; mov eax, 1; syscall; xor eax, eax; ret`:
/// writes the mapped input to fd 1 and returns 0.
const ECHO_INPUT: &str = "48 89 f2 48 89 fe bf 01 00 00 00 b8 01 00 00 00 0f 05 31 c0 c3";
/// `mov rax, rbx; ret`.
const RETURN_RBX: &str = "48 89 d8 c3";
/// `mov rax, rcx; ret`: returns the scratch length.
const RETURN_RCX: &str = "48 89 c8 c3";
/// `mov rax, rsi; ret`: returns the input length.
const RETURN_RSI: &str = "48 89 f0 c3";
/// `mov al, 1; ret; mov al, 42; ret`: 1 from offset 0, 42 from offset 3.
const TWO_ENTRIES: &str = "b0 01 c3 b0 2a c3";

/// GNU as source of `mov $42, %eax; ret`.
const GAS_RETURN_42: &str = "\t.text\n\tmov $42, %eax\n\tret\n";
/// NASM source of the same.
const NASM_RETURN_42: &str = "bits 64\nsection .text\n\tmov eax, 42\n\tret\n";

/// Fields every `--json` report has, whatever the outcome.
const COMMON_FIELDS: [&str; 8] = [
    "schema_version",
    "outcome",
    "output_hex",
    "output_truncated",
    "wall_ns",
    "user_ns",
    "sys_ns",
    "max_rss_kib",
];

/// A finished `bytejail` process.
#[derive(Debug)]
struct Finished {
    status: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Finished {
    /// stdout as the one JSON object it must be, on exactly one line.
    fn json(&self) -> Map<String, Value> {
        let text = std::str::from_utf8(&self.stdout).expect("--json output is UTF-8");
        let line = text
            .strip_suffix('\n')
            .expect("--json output ends with a newline");
        assert!(
            !line.contains('\n'),
            "--json printed more than one line: {text:?}"
        );
        match serde_json::from_str(line) {
            Ok(Value::Object(report)) => report,
            other => panic!("--json printed {text:?}, parsed as {other:?}"),
        }
    }

    /// A run refused for bad usage or input: exit 2, nothing on stdout, and one line on stderr,
    /// `bytejail: ...`, that contains every one of `needles`.
    #[track_caller]
    fn assert_rejected(&self, needles: &[&str]) {
        assert_eq!(self.status, 2, "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        self.assert_one_line_on_stderr();
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr should mention {needle:?}: {:?}",
                self.stderr
            );
        }
    }

    #[track_caller]
    fn assert_one_line_on_stderr(&self) {
        assert!(!self.stderr.contains("panicked"), "{:?}", self.stderr);
        assert!(self.stderr.starts_with("bytejail: "), "{:?}", self.stderr);
        assert!(self.stderr.ends_with('\n'), "{:?}", self.stderr);
        assert_eq!(self.stderr.lines().count(), 1, "{:?}", self.stderr);
    }
}

/// `bytejail ARGS` with no stdin.
fn bytejail(args: &[&str]) -> Finished {
    finish(command(args), None)
}

/// `bytejail ARGS` with `stdin` on its standard input.
fn bytejail_with_stdin(args: &[&str], stdin: &[u8]) -> Finished {
    finish(command(args), Some(stdin))
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    command
}

fn finish(mut command: Command, stdin: Option<&[u8]>) -> Finished {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn bytejail");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // bytejail may refuse the command line before it reads stdin: then the pipe is closed.
        if let Err(e) = pipe.write_all(bytes) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "write bytejail's stdin: {e}"
            );
        }
    }
    let output = child.wait_with_output().expect("wait for bytejail");
    Finished {
        status: output
            .status
            .code()
            .unwrap_or_else(|| panic!("bytejail died of a signal: {output:?}")),
        stdout: output.stdout,
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// A scratch directory with files in it.
struct Files(TempDir);

impl Files {
    fn new() -> Self {
        Files(tempfile::tempdir().expect("temp dir"))
    }

    /// Writes `name` and returns its path as a string, ready to be an argument.
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.0.path().join(name);
        fs::write(&path, contents).expect("write test file");
        path_arg(&path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Assembles `source` with GNU as into `name` (an ELF relocatable object).
    fn assemble(&self, name: &str, source: &str) -> String {
        let source_path = self.write(&format!("{name}.input.s"), source);
        let object = self.path(name);
        let status = Command::new("as")
            .arg("-o")
            .arg(&object)
            .arg(&source_path)
            .status()
            .expect("run `as` (binutils)");
        assert!(status.success(), "as failed on {source:?}");
        path_arg(&object)
    }
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("temp paths are UTF-8").to_string()
}

/// The keys of `report`, which must be exactly the common ones plus `extra`.
#[track_caller]
fn assert_fields(report: &Map<String, Value>, extra: &[&str]) {
    let actual: BTreeSet<&str> = report.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = COMMON_FIELDS.iter().chain(extra).copied().collect();
    assert_eq!(actual, expected, "{report:?}");
    for field in ["wall_ns", "user_ns", "sys_ns", "max_rss_kib"] {
        assert!(report[field].is_u64(), "{field} is not a u64: {report:?}");
    }
    assert!(report["output_truncated"].is_boolean(), "{report:?}");
    assert!(report["output_hex"].is_string(), "{report:?}");
    assert_eq!(report["schema_version"], 1, "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// The --json schema, one test per outcome.

#[test]
fn json_returned_has_rax_and_every_register() {
    let run = bytejail(&["run", "--json", "--hex", RETURN_42]);
    assert_eq!(run.status, 42, "{run:?}");
    assert!(
        run.stderr.is_empty(),
        "--json prints nothing on stderr: {run:?}"
    );
    let report = run.json();
    assert_fields(&report, &["rax", "registers", "output_text"]);
    assert_eq!(report["outcome"], "returned");
    assert_eq!(report["rax"], 42);
    assert_eq!(report["output_hex"], "");
    assert_eq!(report["output_text"], "");
    assert_eq!(report["output_truncated"], false);

    let registers = report["registers"]
        .as_object()
        .expect("registers is an object");
    let names: BTreeSet<&str> = registers.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15", "rflags",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, expected);
    let register = |name: &str| {
        registers[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} is not a u64: {registers:?}"))
    };
    assert_eq!(register("rax"), 42);
    // Untouched registers still hold their ABI entry values: rsi the input length (0), rcx the
    // scratch length (1 MiB by default), the ones with no role 0.
    assert_eq!(register("rsi"), 0);
    assert_eq!(register("rcx"), 1 << 20);
    for name in [
        "rbx", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    ] {
        assert_eq!(register(name), 0, "{name}");
    }
    assert_ne!(register("rdx"), 0, "rdx points at the scratch memory");
    // Entry had (rsp + 8) % 16 == 0; `ret` popped 8 bytes.
    assert_eq!(register("rsp") % 16, 0);
    // Bit 1 of rflags is reserved and always reads as 1.
    assert_eq!(register("rflags") & 2, 2);
}

#[test]
fn json_exited_has_the_exit_code() {
    let run = bytejail(&["run", "--json", "--hex", EXIT_3]);
    assert_eq!(run.status, 3, "{run:?}");
    let report = run.json();
    assert_fields(&report, &["exit_code", "output_text"]);
    assert_eq!(report["outcome"], "exited");
    assert_eq!(report["exit_code"], 3);
}

#[test]
fn json_crashed_has_the_signal_and_the_fault() {
    let run = bytejail(&["run", "--json", "--hex", NULL_WRITE]);
    assert_eq!(run.status, 128 + 11, "{run:?}");
    let report = run.json();
    assert_fields(
        &report,
        &["signal", "signal_number", "fault", "output_text"],
    );
    assert_eq!(report["outcome"], "crashed");
    assert_eq!(report["signal"], "SIGSEGV");
    assert_eq!(report["signal_number"], 11);
    let fault = report["fault"].as_object().expect("fault is an object");
    assert_eq!(fault["address"], 0);
    assert_eq!(fault["code_offset"], 0);
    assert_eq!(fault["instruction"], "mov qword ptr [rax],1");
}

#[test]
fn json_syscall_violation() {
    let run = bytejail(&["run", "--json", "--hex", GETPID]);
    assert_eq!(run.status, 159, "{run:?}");
    let report = run.json();
    assert_fields(&report, &["syscall", "output_text"]);
    assert_eq!(report["outcome"], "syscall_violation");
    // Strict mode kills without saying why; the tracer sees the call it killed in.
    // getpid is x86_64 syscall 39, and its `syscall` instruction sits after the 5-byte mov.
    let syscall = &report["syscall"];
    assert_eq!(syscall["nr"], 39);
    assert_eq!(syscall["name"], "getpid");
    assert_eq!(syscall["abi"], "x86_64");
    assert_eq!(syscall["code_offset"], 5);
    assert_eq!(syscall["verified"], true);

    // Untraced, the diagnostic re-run finds it, unverified.
    let run = bytejail(&["run", "--json", "--no-trace", "--hex", GETPID]);
    assert_eq!(run.status, 159, "{run:?}");
    let report = run.json();
    assert_eq!(report["syscall"]["nr"], 39);
    assert_eq!(report["syscall"]["verified"], false);

    // Untraced and without the re-run nothing says which syscall it was.
    let run = bytejail(&[
        "run",
        "--json",
        "--no-trace",
        "--no-diagnose",
        "--hex",
        GETPID,
    ]);
    assert_eq!(run.status, 159, "{run:?}");
    let report = run.json();
    assert_fields(&report, &["output_text"]);
    assert_eq!(report["outcome"], "syscall_violation");

    // A filter says it directly, through the same field.
    let run = bytejail(&["run", "--json", "--policy", "strict-bpf", "--hex", GETPID]);
    assert_eq!(run.status, 159, "{run:?}");
    assert_eq!(run.json()["syscall"]["name"], "getpid");
}

#[test]
fn json_timeout() {
    let started = Instant::now();
    let run = bytejail(&["run", "--json", "--timeout", "300ms", "--hex", SPIN]);
    assert_eq!(run.status, 124, "{run:?}");
    let report = run.json();
    assert_fields(&report, &["output_text"]);
    assert_eq!(report["outcome"], "timeout");
    assert!(
        report["wall_ns"].as_u64().unwrap() >= 300_000_000,
        "{report:?}"
    );
    // Generous slack: this only catches a deadline that is not enforced at all.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn json_output_limit_keeps_the_first_max_output_bytes() {
    let run = bytejail(&["run", "--json", "--max-output", "64KiB", "--hex", FLOOD]);
    assert_eq!(run.status, 124, "{run:?}");
    let report = run.json();
    // Zero bytes are valid UTF-8, so output_text is there too.
    assert_fields(&report, &["output_text"]);
    assert_eq!(report["outcome"], "output_limit");
    assert_eq!(report["output_truncated"], true);
    assert_eq!(report["output_hex"], "00".repeat(64 << 10));
    assert_eq!(report["output_text"], "\0".repeat(64 << 10));
}

#[test]
fn json_output_text_only_for_utf8() {
    let run = bytejail(&[
        "run",
        "--json",
        "--input-hex",
        "68 69 0a",
        "--hex",
        ECHO_INPUT,
    ]);
    assert_eq!(run.status, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["output_hex"], "68690a");
    assert_eq!(report["output_text"], "hi\n");

    let run = bytejail(&["run", "--json", "--input-hex", "68 ff", "--hex", ECHO_INPUT]);
    let report = run.json();
    assert_fields(&report, &["rax", "registers"]);
    assert_eq!(report["output_hex"], "68ff");
}

// ---------------------------------------------------------------------------------------------
// Exit statuses and the plain (non-JSON) mode.

#[test]
fn exit_status_is_the_same_with_and_without_json() {
    let cases: [(&str, &[&str], i32); 6] = [
        (RETURN_42, &[], 42),
        (EXIT_3, &[], 3),
        (NULL_WRITE, &[], 139),
        (GETPID, &[], 159),
        (SPIN, &["--timeout", "300ms"], 124),
        (FLOOD, &["--max-output", "4KiB"], 124),
    ];
    for (code, options, expected) in cases {
        for json in [false, true] {
            let mut args = vec!["run", "--hex", code];
            args.extend_from_slice(options);
            if json {
                args.push("--json");
            }
            let run = bytejail(&args);
            assert_eq!(run.status, expected, "{args:?}: {run:?}");
            assert!(!run.stderr.contains("panicked"), "{args:?}: {run:?}");
        }
    }
}

#[test]
fn returned_exit_status_is_rax_low_byte() {
    // rbx = 0x1234 -> rax = 0x1234 -> exit status 0x34.
    let run = bytejail(&["run", "--reg", "rbx=0x1234", "--hex", RETURN_RBX]);
    assert_eq!(run.status, 0x34, "{run:?}");
}

#[test]
fn plain_mode_prints_raw_output_and_a_summary_line() {
    let run = bytejail(&["run", "--input-hex", "68 69 0a ff", "--hex", ECHO_INPUT]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, [0x68, 0x69, 0x0a, 0xff]);
    run.assert_one_line_on_stderr();
    assert!(
        run.stderr
            .starts_with("bytejail: returned: rax=0x0; 4 bytes of output, "),
        "{:?}",
        run.stderr
    );
}

#[test]
fn plain_mode_crash_summary_names_the_instruction() {
    let run = bytejail(&["run", "--hex", NULL_WRITE]);
    assert_eq!(run.status, 139, "{run:?}");
    assert!(run.stdout.is_empty());
    run.assert_one_line_on_stderr();
    assert!(
        run.stderr.starts_with(
            "bytejail: crashed: SIGSEGV at code+0x0 (mov qword ptr [rax],1), address 0x0; "
        ),
        "{:?}",
        run.stderr
    );
}

#[test]
fn plain_mode_summaries_name_the_outcome() {
    for (code, options, summary) in [
        (EXIT_3, &[][..], "bytejail: exited: code 3; "),
        (GETPID, &[], "bytejail: syscall_violation: "),
        (SPIN, &["--timeout", "300ms"], "bytejail: timeout: "),
        (FLOOD, &["--max-output", "4KiB"], "bytejail: output_limit: "),
    ] {
        let mut args = vec!["run", "--hex", code];
        args.extend_from_slice(options);
        let run = bytejail(&args);
        run.assert_one_line_on_stderr();
        assert!(
            run.stderr.starts_with(summary),
            "{args:?}: {:?}",
            run.stderr
        );
    }
}

#[test]
fn a_reader_that_goes_away_does_not_break_bytejail() {
    // `bytejail run flood | head -c1`: 1 MiB of output into a pipe whose reader leaves.
    let mut child = command(&["run", "--hex", FLOOD])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(124), "{stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr:?}");
    assert!(stderr.starts_with("bytejail: output_limit: "), "{stderr:?}");

    // The same with --json and a reader gone before the report is written.
    let mut child = command(&["run", "--json", "--hex", RETURN_42])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(42), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

/// The shared libraries mapped in a running process: each mapped file whose name has `.so`
/// in it (`libc.so.6`, `ld-linux-x86-64.so.2`), once.
fn shared_libraries(pid: u32) -> Vec<String> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut found: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/'))
        .filter_map(|path| path.rsplit('/').next())
        .filter(|name| name.contains(".so"))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The shared libraries `command` has mapped while it waits on its stdin, once it has mapped
/// `until` (or has run for a while, when `until` is `None`).
fn libraries_of(mut command: Command, until: Option<&str>) -> Vec<String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(name) = until {
        if Instant::now() >= deadline || shared_libraries(child.id()).iter().any(|l| l == name) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let seen = shared_libraries(child.id());
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    seen
}

/// Linked statically (the repository's `.cargo/config.toml`), a running `bytejail` maps no
/// shared library at all: no dynamic loader to map and relocate them at every start. Linked
/// the standard way (`RUSTFLAGS` given, which replace the configuration's), it still maps no
/// libgcc_s, whose constructor runs its CPU probing at every start (the unwinder is linked in,
/// see `runner/main.rs`). The twin: `cat`, dynamically linked, maps libc.so.6 and is seen to.
#[test]
fn bytejail_maps_no_shared_library_it_can_do_without() {
    let cat = libraries_of(Command::new("cat"), Some("libc.so.6"));
    assert!(
        cat.iter().any(|l| l == "libc.so.6"),
        "cat maps no libc.so.6 here: the checks below could not fail ({cat:?})"
    );
    // `batch` waits for its first line: its mappings can be read meanwhile.
    if cfg!(target_feature = "crt-static") {
        let seen = libraries_of(command(&["batch"]), None);
        assert!(seen.is_empty(), "{seen:?}");
    } else {
        let seen = libraries_of(command(&["batch"]), Some("libc.so.6"));
        assert!(seen.iter().any(|l| l == "libc.so.6"), "{seen:?}");
        assert!(!seen.iter().any(|l| l.starts_with("libgcc_s")), "{seen:?}");
    }
}

/// With stdout closed, `bytejail run` still runs and reports through its exit status: fd 1
/// is opened on /dev/null before anything else is opened (as std's runtime does), so no file
/// of the run's own becomes its stdout.
#[test]
fn a_closed_stdout_is_reopened_on_dev_null() {
    let script = format!("exec {BIN} run --json --hex '{RETURN_42}' >&-");
    let output = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(42), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

#[test]
fn a_failing_stdout_is_a_runner_failure() {
    // /dev/full fails every write with ENOSPC: the result cannot be delivered.
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = command(&["run", "--json", "--hex", RETURN_42])
        .stdin(Stdio::null())
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(125), "{stderr:?}");
    assert!(
        stderr.starts_with("bytejail: runner failed: "),
        "{stderr:?}"
    );
    assert!(stderr.contains("stdout"), "{stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
}

// ---------------------------------------------------------------------------------------------
// Code formats, input sources and options.

#[test]
fn code_from_every_format() {
    let files = Files::new();
    let object = files.assemble("return42.o", GAS_RETURN_42);
    let sources = [
        files.write("return42.bin", [0xb0, 0x2a, 0xc3]),
        files.write("return42.hex", "b0 2a\nc3\n"),
        files.write("return42.s", GAS_RETURN_42),
        files.write("return42.S", GAS_RETURN_42),
        object,
    ];
    for source in &sources {
        let run = bytejail(&["run", "--json", source]);
        assert_eq!(run.status, 42, "{source}: {run:?}");
        assert_eq!(run.json()["rax"], 42, "{source}");
    }
}

#[test]
fn format_overrides_the_extension() {
    let files = Files::new();
    let sources = [
        (files.write("code.txt", "b0 2a c3"), "hex"),
        (files.write("code.hex", [0xb0, 0x2a, 0xc3]), "bin"),
        (files.write("code.gas", GAS_RETURN_42), "gas"),
        (files.write("code.s", [0xb0, 0x2a, 0xc3]), "BIN"),
    ];
    for (path, format) in &sources {
        let run = bytejail(&["run", "--format", format, path]);
        assert_eq!(run.status, 42, "--format {format}: {run:?}");
    }

    // A linked ELF executable, named without an extension.
    let object = files.assemble(
        "start.o",
        "\t.globl _start\n_start:\n\tmov $42, %eax\n\tret\n",
    );
    let executable = path_arg(&files.path("return42"));
    let status = Command::new("ld")
        .args(["-o", &executable, &object])
        .status()
        .expect("run `ld` (binutils)");
    assert!(status.success(), "ld failed");
    let run = bytejail(&["run", "--format", "elf", &executable]);
    assert_eq!(run.status, 42, "{run:?}");
}

#[test]
fn code_from_stdin() {
    let run = bytejail_with_stdin(&["run", "-"], &[0xb0, 0x2a, 0xc3]);
    assert_eq!(run.status, 42, "{run:?}");
}

#[test]
fn hex_tolerates_whitespace_and_prefixes() {
    for hex in [
        "b02ac3",
        " b0\n2a\tc3 ",
        "0xb0 0x2a 0xc3",
        "\\xb0\\x2a\\xc3",
    ] {
        let run = bytejail(&["run", "--hex", hex]);
        assert_eq!(run.status, 42, "{hex:?}: {run:?}");
    }
}

#[test]
fn input_from_hex_file_and_stdin() {
    let files = Files::new();
    let input = files.write("input.dat", [1u8, 2, 3, 4, 5]);
    let run = bytejail(&[
        "run",
        "--json",
        "--input-hex",
        "01 02 03",
        "--hex",
        RETURN_RSI,
    ]);
    assert_eq!(run.json()["rax"], 3);
    let run = bytejail(&["run", "--json", "--input", &input, "--hex", RETURN_RSI]);
    assert_eq!(run.json()["rax"], 5);
    let run = bytejail_with_stdin(
        &["run", "--json", "--input", "-", "--hex", RETURN_RSI],
        b"seven!!",
    );
    assert_eq!(run.json()["rax"], 7);
    let run = bytejail(&["run", "--json", "--hex", RETURN_RSI]);
    assert_eq!(run.json()["rax"], 0, "no input by default");
}

#[test]
fn registers_scratch_and_entry_reach_the_guest() {
    let run = bytejail(&["run", "--json", "--reg", "rbx=7", "--hex", RETURN_RBX]);
    assert_eq!(run.json()["rax"], 7);
    let run = bytejail(&["run", "--json", "--reg", "RBX = 0x_ff", "--hex", RETURN_RBX]);
    assert_eq!(run.json()["rax"], 255);
    let run = bytejail(&[
        "run",
        "--json",
        "--reg",
        "rbx=1",
        "--reg",
        "r15=0xffffffffffffffff",
        "--hex",
        RETURN_RBX,
    ]);
    let report = run.json();
    assert_eq!(report["rax"], 1);
    assert_eq!(report["registers"]["r15"], u64::MAX);

    let run = bytejail(&["run", "--json", "--scratch", "64KiB", "--hex", RETURN_RCX]);
    assert_eq!(run.json()["rax"], 64 << 10);
    let run = bytejail(&["run", "--json", "--stack", "4KiB", "--hex", RETURN_42]);
    assert_eq!(run.json()["rax"], 42);

    let run = bytejail(&["run", "--json", "--hex", TWO_ENTRIES]);
    assert_eq!(run.json()["rax"], 1);
    for entry in ["3", "0x3"] {
        let run = bytejail(&["run", "--json", "--entry", entry, "--hex", TWO_ENTRIES]);
        assert_eq!(run.json()["rax"], 42, "--entry {entry}");
    }
}

// ---------------------------------------------------------------------------------------------
// Bad usage and bad input: exit 2, one line on stderr naming the thing, nothing on stdout.

#[test]
fn empty_code() {
    let files = Files::new();
    let empty = files.write("empty.bin", "");
    bytejail(&["run", "--hex", ""]).assert_rejected(&["--hex", "empty"]);
    bytejail(&["run", "--hex", "  \n "]).assert_rejected(&["--hex", "empty"]);
    bytejail(&["run", &empty]).assert_rejected(&["empty.bin", "empty"]);
    bytejail_with_stdin(&["run", "-"], b"").assert_rejected(&["<stdin>", "empty"]);
}

#[test]
fn unknown_extension() {
    let files = Files::new();
    let path = files.write("program.xyz", [0xc3]);
    bytejail(&["run", &path]).assert_rejected(&["program.xyz", "--format"]);
    let path = files.write("program", [0xc3]);
    bytejail(&["run", &path]).assert_rejected(&["program", "--format"]);
}

#[test]
fn malformed_hex_says_where() {
    // Columns count characters from 1: the `z` is the 4th.
    bytejail(&["run", "--hex", "b0 zz c3"]).assert_rejected(&["--hex", "`z`", "line 1, column 4"]);
    // A lone digit: the odd run `c` starts at column 7.
    bytejail(&["run", "--hex", "b0 2a c"]).assert_rejected(&["--hex", "`c`", "column 7"]);
    bytejail(&["run", "--hex", RETURN_42, "--input-hex", "00 g0"]).assert_rejected(&[
        "--input-hex",
        "`g`",
        "column 4",
    ]);
    let files = Files::new();
    let path = files.write("bad.hex", "b0 2a\nc3 q1\n");
    bytejail(&["run", &path]).assert_rejected(&["bad.hex", "`q`", "line 2, column 4"]);
}

#[test]
fn unreadable_files() {
    let files = Files::new();
    let missing = path_arg(&files.path("missing.bin"));
    bytejail(&["run", &missing]).assert_rejected(&["missing.bin"]);
    let directory = path_arg(files.0.path());
    bytejail(&["run", "--format", "bin", &directory]).assert_rejected(&[&directory]);
    let missing_input = path_arg(&files.path("missing-input.dat"));
    bytejail(&["run", "--input", &missing_input, "--hex", RETURN_42])
        .assert_rejected(&["missing-input.dat"]);
}

/// NASM sources, by extension and by `--format nasm`; skipped (with one line) without `nasm`.
#[test]
fn nasm_sources() {
    if common::skip_without("nasm", 1) {
        return;
    }
    let files = Files::new();
    let by_extension = files.write("return42.asm", NASM_RETURN_42);
    let by_format = files.write("code.nasm", NASM_RETURN_42);
    for args in [
        ["run", "--json", by_extension.as_str()].as_slice(),
        ["run", "--json", "--format", "nasm", by_format.as_str()].as_slice(),
    ] {
        let run = bytejail(args);
        assert_eq!(run.status, 42, "{args:?}: {run:?}");
        assert_eq!(run.json()["rax"], 42, "{args:?}");
    }
}

#[test]
fn missing_assemblers_name_their_package() {
    let files = Files::new();
    let gas = files.write("prog.s", GAS_RETURN_42);
    let nasm = files.write("prog.asm", NASM_RETURN_42);
    let empty_path = tempfile::tempdir().unwrap();
    for (source, needles) in [(&gas, ["as", "binutils"]), (&nasm, ["nasm", "nasm"])] {
        let mut command = command(&["run", source]);
        command.env("PATH", empty_path.path());
        finish(command, None).assert_rejected(&needles);
    }
}

#[test]
fn elf_without_text() {
    // A minimal ELF64 x86-64 relocatable object with no sections at all: just the 64-byte header.
    let mut header = Vec::with_capacity(64);
    header.extend_from_slice(b"\x7fELF"); // magic
    header.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, ELF version 1, System V ABI
    header.extend_from_slice(&[0; 8]); // ABI version, padding
    header.extend_from_slice(&1u16.to_le_bytes()); // e_type: ET_REL
    header.extend_from_slice(&62u16.to_le_bytes()); // e_machine: EM_X86_64
    header.extend_from_slice(&1u32.to_le_bytes()); // e_version
    header.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    header.extend_from_slice(&0u64.to_le_bytes()); // e_phoff
    header.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no section headers
    header.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    header.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    header.extend_from_slice(&0u16.to_le_bytes()); // e_phentsize
    header.extend_from_slice(&0u16.to_le_bytes()); // e_phnum
    header.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    header.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    header.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    assert_eq!(header.len(), 64);
    let files = Files::new();
    let path = files.write("notext.o", &header);
    bytejail(&["run", &path]).assert_rejected(&["notext.o", ".text"]);
}

#[test]
fn elf_with_unresolved_relocations() {
    let source = "\t.text\n\tcall elsewhere\n\tret\n";
    let files = Files::new();
    let object = files.assemble("calls.o", source);
    bytejail(&["run", &object]).assert_rejected(&["calls.o", "elsewhere"]);
    // Assembled by bytejail itself, the same source fails the same way.
    let path = files.write("calls.s", source);
    bytejail(&["run", &path]).assert_rejected(&["calls.s", "elsewhere"]);
}

#[test]
fn code_and_input_over_their_limits() {
    bytejail(&["run", "--max-code", "2", "--hex", RETURN_42])
        .assert_rejected(&["code is 3 bytes; the limit is 2 bytes (--max-code)"]);
    bytejail(&[
        "run",
        "--max-input",
        "2",
        "--input-hex",
        "01 02 03",
        "--hex",
        RETURN_42,
    ])
    .assert_rejected(&["input is 3 bytes; the limit is 2 bytes (--max-input)"]);
    let files = Files::new();
    let code = files.write("big.bin", [0x90, 0x90, 0xc3]);
    bytejail(&["run", "--max-code", "2", &code]).assert_rejected(&["code", "--max-code"]);
    let input = files.write("big.dat", [1u8, 2, 3]);
    bytejail(&[
        "run",
        "--max-input",
        "2",
        "--input",
        &input,
        "--hex",
        RETURN_42,
    ])
    .assert_rejected(&["input", "--max-input"]);
    bytejail_with_stdin(
        &[
            "run",
            "--max-input",
            "2",
            "--input",
            "-",
            "--hex",
            RETURN_42,
        ],
        b"abc",
    )
    .assert_rejected(&["input", "--max-input"]);
}

#[test]
fn bad_durations() {
    for value in [
        "",
        "abc",
        "2",
        "0s",
        "-1s",
        "1.5parsecs",
        "25h",
        "99999999999999999999s",
    ] {
        bytejail(&["run", &format!("--timeout={value}"), "--hex", RETURN_42])
            .assert_rejected(&["--timeout", value]);
    }
}

#[test]
fn bad_sizes() {
    for (flag, value) in [
        ("--max-output", "12XB"),
        ("--max-output", "2GiB"),
        ("--max-output", "-1"),
        ("--stack", "0"),
        ("--stack", "2GiB"),
        ("--scratch", "0"),
        ("--scratch", "17GiB"),
        ("--max-code", "lots"),
        ("--max-input", "1.3KiB"),
        ("--max-input", "99999999999999999999"),
    ] {
        bytejail(&["run", &format!("{flag}={value}"), "--hex", RETURN_42])
            .assert_rejected(&[flag, value]);
    }
}

#[test]
fn bad_registers() {
    for (setting, needle) in [
        ("rzz=1", "rzz"),
        ("eax=1", "eax"),
        ("rsp=0", "rsp"),
        ("rax", "NAME=VALUE"),
        ("rax=xyz", "xyz"),
        ("rax=0x1_0000_0000_0000_0000", "rax"),
    ] {
        bytejail(&["run", "--reg", setting, "--hex", RETURN_42])
            .assert_rejected(&["--reg", needle]);
    }
}

#[test]
fn bad_entry() {
    bytejail(&["run", "--entry", "3", "--hex", RETURN_42]).assert_rejected(&["--entry"]);
    bytejail(&["run", "--entry", "zz", "--hex", RETURN_42]).assert_rejected(&["--entry"]);
}

#[test]
fn bad_usage() {
    bytejail(&["run"]).assert_rejected(&["FILE", "--hex"]);
    bytejail(&["run", "--hex", RETURN_42, "code.bin"]).assert_rejected(&["--hex", "FILE"]);
    bytejail(&[
        "run",
        "--input",
        "x",
        "--input-hex",
        "00",
        "--hex",
        RETURN_42,
    ])
    .assert_rejected(&["--input", "--input-hex"]);
    bytejail(&["run", "--format", "pdf", "x"]).assert_rejected(&["--format", "pdf"]);
    bytejail(&["run", "--format", "bin", "--hex", RETURN_42]).assert_rejected(&["--format"]);
    bytejail(&["run", "--frobnicate", "--hex", RETURN_42]).assert_rejected(&["--frobnicate"]);
    bytejail(&["disasm"]).assert_rejected(&["FILE", "--hex"]);
    bytejail_with_stdin(&["run", "-", "--input", "-"], &[0xc3]).assert_rejected(&["stdin"]);

    // No command at all: the full help, on stderr, is the useful answer; still bad usage.
    let run = bytejail(&[]);
    assert_eq!(run.status, 2, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains("Usage: bytejail"), "{run:?}");
    assert!(run.stderr.contains("disasm"), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// disasm and help.

#[test]
fn disasm_prints_intel_syntax_with_offsets() {
    let run = bytejail(&["disasm", "--hex", TWO_ENTRIES]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    assert_eq!(
        String::from_utf8(run.stdout).unwrap(),
        "0x0000:  b0 01                       mov al,1\n\
         0x0002:  c3                          ret\n\
         0x0003:  b0 2a                       mov al,0x2a\n\
         0x0005:  c3                          ret\n"
    );

    let run = bytejail(&["disasm", "--hex", NULL_WRITE]);
    assert_eq!(
        String::from_utf8(run.stdout).unwrap(),
        "0x0000:  48 c7 00 01 00 00 00        mov qword ptr [rax],1\n"
    );

    let files = Files::new();
    let path = files.write("return42.s", GAS_RETURN_42);
    let run = bytejail(&["disasm", &path]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(
        String::from_utf8(run.stdout).unwrap(),
        "0x0000:  b8 2a 00 00 00              mov eax,0x2a\n\
         0x0005:  c3                          ret\n"
    );

    bytejail(&["disasm", "--hex", ""]).assert_rejected(&["--hex", "empty"]);
}

#[test]
fn run_help_documents_outcomes_and_exit_statuses() {
    let run = bytejail(&["run", "--help"]);
    assert_eq!(run.status, 0, "{run:?}");
    let help = String::from_utf8(run.stdout).unwrap();
    for needle in [
        "returned",
        "exited",
        "crashed",
        "syscall_violation",
        "timeout",
        "output_limit",
        "159",
        "124",
        "125",
        "[default: 2s]",
        "[default: 1MiB]",
        "[default: 16MiB]",
        "[default: 64MiB]",
    ] {
        assert!(help.contains(needle), "run --help lacks {needle:?}");
    }
}

#[test]
fn batch_runs_json_lines_and_summarizes() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.jsonl");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/guest-samples/hello.s");
    std::fs::write(
        &jobs,
        format!(
            "{{\"id\": \"a\", \"code_hex\": \"{RETURN_42}\"}}\n\
             {{\"id\": \"b\", \"code_path\": \"{sample}\"}}\n\
             {{\"id\": \"c\", \"code_hex\": \"{GETPID}\"}}\n\
             {{\"id\": \"d\", \"code_hex\": \"eb fe\", \"timeout_ms\": 200}}\n\
             {{\"id\": \"e\"}}\n"
        ),
    )
    .unwrap();
    // Every mode gives the same results.
    for reuse in ["none", "same-code"] {
        let path = jobs.to_str().unwrap();
        let run = bytejail(&["batch", "--ordered", "--jobs", "2", "--reuse", reuse, path]);
        // One line (e) could not run: exit status 1.
        assert_eq!(run.status, 1, "--reuse {reuse}: {run:?}");
        let lines: Vec<serde_json::Value> = String::from_utf8(run.stdout.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e"]);
        assert_eq!(lines[0]["outcome"], "returned");
        assert_eq!(lines[0]["rax"], 42);
        assert_eq!(lines[1]["output_text"], "hello from bytejail\n");
        assert_eq!(lines[2]["outcome"], "syscall_violation");
        assert_eq!(lines[2]["syscall"]["name"], "getpid");
        assert_eq!(lines[3]["outcome"], "timeout");
        assert_eq!(lines[4]["line"], 5);
        assert!(
            lines[4]["error"].as_str().unwrap().contains("no code"),
            "{}",
            lines[4]
        );
        // The same report as `run --json`, field for field, after the id.
        let single = bytejail(&["run", "--json", "--hex", RETURN_42]).json();
        let batch_keys: Vec<&String> = lines[0].as_object().unwrap().keys().collect();
        let run_keys: Vec<&String> = single.keys().collect();
        assert_eq!(batch_keys[1..], run_keys[..]);
        assert_eq!(
            run.stderr.trim(),
            run.stderr.lines().next().unwrap().trim(),
            "one summary line"
        );
        assert!(
            run.stderr.starts_with(
                "bytejail: 5 jobs: 2 returned, 1 syscall_violation, 1 timeout, 1 error in "
            ),
            "{}",
            run.stderr
        );
    }

    bytejail(&["batch", "--jobs", "0", "-"]).assert_rejected(&["--jobs"]);
    bytejail(&["batch", "--reuse", "always", "-"]).assert_rejected(&["--reuse"]);
    bytejail(&["batch", "/nonexistent/jobs.jsonl"]).assert_rejected(&["/nonexistent/jobs.jsonl"]);
}

#[test]
fn version_alone_is_answered_as_clap_answers_it() {
    for flag in ["--version", "-V"] {
        let out = bytejail(&[flag]);
        assert_eq!(out.status, 0);
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("bytejail {}\n", env!("CARGO_PKG_VERSION"))
        );
        assert!(out.stderr.is_empty(), "{}", out.stderr);
    }
}

/// `run --json --fields LIST` keeps the named fields of the report, with their values and in
/// the report's order; a field the outcome does not have is absent; without `--fields` the
/// same run has them all (and more). `--fields` without `--json`, or naming no report
/// field, is bad usage: one line, exit 2.
#[test]
fn json_fields_keep_only_the_named_fields() {
    let whole = bytejail(&["run", "--json", "--hex", RETURN_42]).json();
    let kept = bytejail(&[
        "run",
        "--json",
        "--fields",
        "wall_ns,outcome,exit_code,rax",
        "--hex",
        RETURN_42,
    ]);
    assert_eq!(kept.status, 42, "{kept:?}");
    let kept = kept.json();
    // The report's own order (outcome before rax before wall_ns), not the list's.
    let names: Vec<&str> = kept.keys().map(String::as_str).collect();
    assert_eq!(names, ["outcome", "rax", "wall_ns"], "{kept:?}");
    assert_eq!(kept["outcome"], whole["outcome"]);
    assert_eq!(kept["rax"], whole["rax"]);
    assert!(kept["wall_ns"].as_u64().is_some_and(|ns| ns > 0));
    // The twin: the whole report has what the list left out.
    for name in ["registers", "output_hex", "schema_version"] {
        assert!(
            whole.contains_key(name) && !kept.contains_key(name),
            "{name}"
        );
    }

    for args in [
        &["run", "--fields", "outcome", "--hex", RETURN_42][..],
        &[
            "run",
            "--json",
            "--fields",
            "outcome,colour",
            "--hex",
            RETURN_42,
        ][..],
        &["run", "--json", "--fields", " , ", "--hex", RETURN_42][..],
    ] {
        let run = bytejail(args);
        assert_eq!(run.status, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
        run.assert_one_line_on_stderr();
    }
}
