//! The assembler is part of the attack surface: an untrusted source must not read host files
//! (`.incbin`, `.include`, `#include`, NASM's `incbin` and `%include`, also when a macro builds
//! them), must not write past the `--max-code` bound, and must not outlive a killed bytejail.
//! Every "cannot" test has a twin that switches the sandbox off (`toolchain_sandbox: false`)
//! and shows the same source doing it. Code and input paths that are FIFOs or sockets are
//! refused at once.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytejail::load::{load_path, load_path_with, read_input, LoadOptions};
use tempfile::TempDir;

/// How many tests of this file need `nasm`.
const NASM_TESTS: usize = 2;

/// A file outside everything the assembler may read, holding a line nobody could guess: what
/// an attacker wants from the host.
struct Secret {
    _dir: TempDir,
    path: PathBuf,
    text: String,
}

fn secret() -> Secret {
    let dir = tempfile::Builder::new()
        .prefix("bytejail-test-secret-")
        .tempdir()
        .expect("temporary directory");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let text = format!("bytejail_secret_{}_{nanos}", std::process::id());
    let path = dir.path().join("secret.txt");
    std::fs::write(&path, format!("{text}\n")).expect("write secret");
    Secret {
        _dir: dir,
        path,
        text,
    }
}

/// Loads `source` written to a fresh file called `name`, with or without the sandbox.
fn load_source(name: &str, source: &str, sandbox: bool) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join(name);
    std::fs::write(&path, source).expect("write source");
    let mut options = LoadOptions::new(1 << 20);
    options.toolchain_sandbox = sandbox;
    load_path_with(&path, None, &options).map_err(|err| err.to_string())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The error, which must not hold `secret`, and must say the file could not be read.
fn refused(result: Result<Vec<u8>, String>, secret: &str) -> String {
    let message = match result {
        Ok(code) => panic!("assembled {} bytes: {code:02x?}", code.len()),
        Err(message) => message,
    };
    assert!(!message.contains(secret), "the secret leaked: {message}");
    assert!(
        [
            "Permission denied",
            "file not found",
            "can't open",
            "unable to open"
        ]
        .iter()
        .any(|words| message.contains(words)),
        "{message}"
    );
    message
}

// ---------------------------------------------------------------------------------------------
// Reading host files

/// Sources that put the secret file's bytes into the code: plainly, and through a macro that
/// builds the path from pieces (a directive filter could not see it).
fn incbin_sources(path: &Path) -> Vec<String> {
    let dir = path.parent().expect("parent").display().to_string();
    vec![
        format!(".incbin \"{}\"\nret\n", path.display()),
        format!(
            ".macro grab dir, file\n.incbin \"\\dir/\\file\"\n.endm\ngrab {dir}, secret.txt\nret\n"
        ),
    ]
}

#[test]
fn gas_incbin_cannot_read_host_files() {
    let secret = secret();
    for source in incbin_sources(&secret.path) {
        refused(load_source("grab.s", &source, true), &secret.text);
    }
    // Files of the host no source may read, whatever is in them.
    for path in ["/etc/shadow", "/etc/hostname", "/root/.bashrc"] {
        if Path::new(path).exists() {
            let source = format!(".incbin \"{path}\"\nret\n");
            refused(load_source("host.s", &source, true), "root:");
        }
    }
    // Another process's files through /proc: this test's status, read as assembly.
    refused(
        load_source("proc.s", &proc_status_source(), true),
        &own_name(),
    );
}

/// A source that includes this test process's `/proc/PID/status`: `as` would quote its lines.
fn proc_status_source() -> String {
    format!(".include \"/proc/{}/status\"\nret\n", std::process::id())
}

/// This process's name as /proc tells it (the test binary's name, with its hash).
fn own_name() -> String {
    let name = std::fs::read_to_string("/proc/self/comm").expect("read comm");
    name.trim_end().to_string()
}

#[test]
fn gas_incbin_reads_host_files_without_the_sandbox() {
    let secret = secret();
    for source in incbin_sources(&secret.path) {
        let code = load_source("grab.s", &source, false).expect("unsandboxed .incbin");
        assert!(contains(&code, secret.text.as_bytes()), "{code:02x?}");
    }
    let message = load_source("proc.s", &proc_status_source(), false).expect_err("not assembly");
    assert!(message.contains(&own_name()), "{message}");
}

#[test]
fn gas_include_cannot_read_host_files() {
    let secret = secret();
    let source = format!(".include \"{}\"\nret\n", secret.path.display());
    refused(load_source("include.s", &source, true), &secret.text);
}

#[test]
fn gas_include_quotes_host_files_without_the_sandbox() {
    let secret = secret();
    let source = format!(".include \"{}\"\nret\n", secret.path.display());
    // The file is read as assembly, and `as` quotes the line it cannot make sense of.
    let message = load_source("include.s", &source, false).expect_err("not assembly");
    assert!(message.contains(&secret.text), "{message}");
}

#[test]
fn cpp_include_cannot_read_host_files() {
    let secret = secret();
    let source = format!("#include \"{}\"\nret\n", secret.path.display());
    refused(load_source("include.S", &source, true), &secret.text);
    // The system headers a `.S` legitimately includes are readable.
    let source = "#include <sys/syscall.h>\n\tmov $SYS_exit, %eax\n\tret\n";
    assert_eq!(
        load_source("syscall.S", source, true),
        Ok(vec![0xb8, 60, 0, 0, 0, 0xc3])
    );
}

#[test]
fn cpp_include_quotes_host_files_without_the_sandbox() {
    let secret = secret();
    let source = format!("#include \"{}\"\nret\n", secret.path.display());
    let message = load_source("include.S", &source, false).expect_err("not assembly");
    assert!(message.contains(&secret.text), "{message}");
}

#[test]
fn include_dirs_the_user_names_are_readable() {
    let includes = tempfile::tempdir().expect("temporary directory");
    std::fs::write(includes.path().join("answer.inc"), "\tmov $42, %eax\n").expect("write");
    std::fs::write(includes.path().join("answer.h"), "#define ANSWER 42\n").expect("write");
    std::fs::write(includes.path().join("byte.bin"), [0xc3]).expect("write");
    let sources = [
        ("gas.s", ".include \"answer.inc\"\n\tret\n"),
        (
            "cpp.S",
            "#include \"answer.h\"\n\tmov $ANSWER, %eax\n\tret\n",
        ),
        ("incbin.s", "\tmov $42, %eax\n.incbin \"byte.bin\"\n"),
    ];
    let dir = tempfile::tempdir().expect("temporary directory");
    for (name, source) in sources {
        let path = dir.path().join(name);
        std::fs::write(&path, source).expect("write source");
        let mut options = LoadOptions::new(1 << 20);
        // Not readable unless named, not even from the source's own directory...
        std::fs::copy(
            includes.path().join("answer.inc"),
            dir.path().join("answer.inc"),
        )
        .expect("copy");
        assert!(load_path_with(&path, None, &options).is_err(), "{name}");
        // ...and readable once named.
        options.include_dirs = vec![includes.path().to_path_buf()];
        assert_eq!(
            load_path_with(&path, None, &options).map_err(|e| e.to_string()),
            Ok(vec![0xb8, 42, 0, 0, 0, 0xc3]),
            "{name}"
        );
    }
    let mut options = LoadOptions::new(1 << 20);
    options.include_dirs = vec![dir.path().join("missing")];
    let err = load_path_with(&dir.path().join("gas.s"), None, &options).unwrap_err();
    assert!(
        err.to_string().starts_with("include directory `")
            && err.to_string().ends_with("(--include-dir)"),
        "{err}"
    );
}

#[test]
fn nasm_incbin_and_include_cannot_read_host_files() {
    if common::skip_without("nasm", NASM_TESTS) {
        return;
    }
    let secret = secret();
    let incbin = format!("incbin \"{}\"\nret\n", secret.path.display());
    refused(load_source("incbin.asm", &incbin, true), &secret.text);
    let include = format!("%include \"{}\"\nret\n", secret.path.display());
    refused(load_source("include.asm", &include, true), &secret.text);
    let defined = secret.path.with_file_name("secret.inc");
    std::fs::write(&defined, format!("db \"{}\"\n", secret.text)).expect("write");
    let include = format!("%include \"{}\"\nret\n", defined.display());
    refused(load_source("include.asm", &include, true), &secret.text);
}

#[test]
fn nasm_incbin_and_include_read_host_files_without_the_sandbox() {
    if common::skip_without("nasm", NASM_TESTS) {
        return;
    }
    let secret = secret();
    let incbin = format!("incbin \"{}\"\nret\n", secret.path.display());
    let code = load_source("incbin.asm", &incbin, false).expect("unsandboxed incbin");
    assert!(contains(&code, secret.text.as_bytes()), "{code:02x?}");
    // NASM takes a lone word for a label, so the included file spells its bytes out instead.
    let defined = secret.path.with_file_name("secret.inc");
    std::fs::write(&defined, format!("db \"{}\"\n", secret.text)).expect("write");
    let include = format!("%include \"{}\"\nret\n", defined.display());
    let code = load_source("include.asm", &include, false).expect("unsandboxed %include");
    assert!(contains(&code, secret.text.as_bytes()), "{code:02x?}");
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Files of bytejail's private assembly directories larger than `size`.
fn big_assembly_files(size: u64) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return found;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("bytejail-asm-")
        {
            continue;
        }
        for file in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let len = file.metadata().map_or(0, |meta| meta.len());
            if len > size {
                found.push((file.path(), len));
            }
        }
    }
    found
}

#[test]
fn huge_skip_stops_at_the_bound() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = LoadOptions::new(64 << 10);
    for (name, source) in [
        ("skip.s", ".skip 0x100000000\nret\n"),
        ("fill.s", ".fill 0x40000000, 1, 0x90\nret\n"),
        ("skip_big.s", ".skip 0x3000000\nret\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, source).expect("write source");
        let start = Instant::now();
        let err = load_path_with(&path, None, &options)
            .unwrap_err()
            .to_string();
        // Writing gigabytes, or even the whole 48 MiB, takes far longer on this kind of VM.
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name}: {:?}",
            start.elapsed()
        );
        assert!(err.contains("(--max-code)"), "{name}: {err}");
        assert_eq!(big_assembly_files(64 << 20), vec![], "{name}");
    }
    // The bound holds while the file is written: the object is cut off at it.
    let path = dir.path().join("skip_big.s");
    let err = load_path_with(&path, None, &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("as's output grew past"), "{err}");
}

#[test]
fn huge_skip_is_written_whole_without_the_sandbox() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("skip_big.s");
    std::fs::write(&path, ".skip 0x3000000\nret\n").expect("write source");
    let mut options = LoadOptions::new(64 << 10);
    options.toolchain_sandbox = false;
    // The whole object was written and read back: only then is the code found too large.
    let err = load_path_with(&path, None, &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("code is 50331649 bytes"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Processes

/// GNU as source that keeps `as` busy for minutes in a few MiB: a billion empty repetitions.
const SLOW_SOURCE: &str = ".rept 1000\n.rept 1000\n.rept 1000\n.endr\n.endr\n.endr\nret\n";

/// Every process whose chain of parents leads to `root` (not `root` itself), zombies included.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parents.insert(pid, ppid);
        }
    }
    let leads_to_root = |mut pid: u32| {
        for _ in 0..64 {
            match parents.get(&pid) {
                Some(&parent) if parent == root => return true,
                Some(&parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    parents
        .keys()
        .copied()
        .filter(|&pid| leads_to_root(pid))
        .collect()
}

/// Waits until a process under `root` runs the assembler; every process under `root` then.
fn wait_for_assembler(root: u32) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let found = descendants(root);
        // `as` is a link to `x86_64-linux-gnu-as`; comm keeps 15 characters of the name.
        if found
            .iter()
            .any(|&pid| ["as", "x86_64-linux-gn"].contains(&common::comm(pid).as_str()))
        {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no assembler started under {root}");
}

/// Waits (generously) until none of `pids` is alive; the ones still alive after that.
fn wait_gone(pids: &[u32], limit: Duration) -> Vec<(u32, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let alive: Vec<(u32, String)> = pids
            .iter()
            .filter(|&&pid| common::alive(pid))
            .map(|&pid| (pid, common::comm(pid)))
            .collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killing_bytejail_leaves_no_toolchain_process() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("slow.s");
    std::fs::write(&path, SLOW_SOURCE).expect("write source");
    // Its own TMPDIR: the private assembly directory it leaves is checked below.
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mut bytejail = Command::new(env!("CARGO_BIN_EXE_bytejail"))
        .arg("run")
        .arg(&path)
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bytejail");
    let toolchain = wait_for_assembler(bytejail.id());
    bytejail.kill().expect("SIGKILL bytejail");
    bytejail.wait().expect("reap bytejail");
    let left = wait_gone(&toolchain, Duration::from_secs(10));
    assert_eq!(left, vec![], "toolchain processes outlived bytejail");
    sweeps_what_a_killed_bytejail_left(tmp.path(), bytejail.id());
}

/// Names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Makes `path`'s modification time an hour old.
fn age(path: &Path) {
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::open(path)
        .and_then(|file| file.set_modified(hour_ago))
        .expect("set modification time");
}

/// `tmp` holds the private assembly directory of bytejail `pid`, killed while it assembled
/// (it could not remove it): the next bytejail that assembles removes it once it is old, and
/// leaves alone a leftover too recent, the directory of a process that lives, and other names.
fn sweeps_what_a_killed_bytejail_left(tmp: &Path, pid: u32) {
    let prefix = format!("bytejail-asm-{pid}-");
    let left: Vec<String> = names_in(tmp)
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect();
    assert_eq!(left.len(), 1, "{:?}", names_in(tmp));
    let leftover = tmp.join(&left[0]);
    assert!(
        leftover.join("source.s").exists(),
        "{:?}",
        names_in(&leftover)
    );
    age(&leftover);
    let recent = tmp.join(format!("{prefix}recent"));
    let alive = tmp.join(format!("bytejail-asm-{}-alive", std::process::id()));
    let other = tmp.join("bytejail-asm-other");
    for kept in [&recent, &alive, &other] {
        std::fs::create_dir(kept).expect("create directory");
    }
    age(&alive);
    age(&other);
    let source = tmp.join("ret.s");
    std::fs::write(&source, "ret\n").expect("write source");
    let status = Command::new(env!("CARGO_BIN_EXE_bytejail"))
        .arg("run")
        .arg(&source)
        .env("TMPDIR", tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run bytejail");
    assert!(status.success(), "{status}");
    let expected = [
        "bytejail-asm-other",
        &alive.file_name().unwrap().to_string_lossy(),
        &format!("{prefix}recent"),
        "ret.s",
    ];
    let mut expected: Vec<String> = expected.iter().map(|name| name.to_string()).collect();
    expected.sort();
    assert_eq!(names_in(tmp), expected);
}

#[test]
fn without_the_sandbox_the_assembler_outlives_its_host() {
    let (mut host, _out) = common::start_host("slow_assembly_host_without_sandbox");
    let toolchain = wait_for_assembler(host.id());
    host.kill().expect("SIGKILL host");
    host.wait().expect("reap host");
    std::thread::sleep(Duration::from_millis(500));
    let left = wait_gone(&toolchain, Duration::ZERO);
    // Clean up what the twin shows was left behind: these very processes, by pid.
    for (pid, _) in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        left.iter()
            .any(|(_, comm)| ["as", "x86_64-linux-gn"].contains(&comm.as_str())),
        "the assembler died with its host even without the sandbox: {left:?}"
    );
}

/// The host for `without_the_sandbox_the_assembler_outlives_its_host`: assembles the slow
/// source without the sandbox until it is killed.
#[test]
#[ignore = "a host process for another test"]
fn slow_assembly_host_without_sandbox() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("slow.s");
    std::fs::write(&path, SLOW_SOURCE).expect("write source");
    println!("ready");
    let mut options = LoadOptions::new(1 << 20);
    options.toolchain_sandbox = false;
    let _ = load_path_with(&path, None, &options);
}

// ---------------------------------------------------------------------------------------------
// Paths that are not regular files

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success());
}

#[test]
fn fifo_and_socket_paths_are_refused_at_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fifo = dir.path().join("code.bin");
    mkfifo(&fifo);
    let socket = dir.path().join("code.s");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind socket");
    let start = Instant::now();
    let err = load_path(&fifo, None, 1 << 20).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "`{}`: is a FIFO (named pipe); bytejail reads only regular files, or standard input \
             given as `-`",
            fifo.display()
        )
    );
    let err = read_input(&fifo, 1 << 20).unwrap_err().to_string();
    assert!(err.contains("is a FIFO (named pipe)"), "{err}");
    let err = load_path(&socket, None, 1 << 20).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "`{}`: is a socket; bytejail reads only regular files, or standard input given as `-`",
            socket.display()
        )
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

/// Runs bytejail with `args`, at most 20 s; its exit code and stderr.
fn bytejail(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bytejail");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bytejail {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status.code(), stderr)
}

#[test]
fn fifo_as_code_or_input_exits_2_promptly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fifo = dir.path().join("fifo.bin");
    mkfifo(&fifo);
    let code = [std::ffi::OsStr::new("run"), fifo.as_os_str()];
    let (status, stderr) = bytejail(&code);
    assert_eq!(status, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is a FIFO"), "{stderr}");
    let input = [
        std::ffi::OsStr::new("run"),
        std::ffi::OsStr::new("--hex"),
        std::ffi::OsStr::new("c3"),
        std::ffi::OsStr::new("--input"),
        fifo.as_os_str(),
    ];
    let (status, stderr) = bytejail(&input);
    assert_eq!(status, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is a FIFO"), "{stderr}");
}

#[test]
fn cli_include_dir() {
    let includes = tempfile::tempdir().expect("temporary directory");
    std::fs::write(includes.path().join("answer.h"), "#define ANSWER 42\n").expect("write");
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = dir.path().join("answer.S");
    std::fs::write(
        &source,
        "#include \"answer.h\"\n\tmov $ANSWER, %eax\n\tret\n",
    )
    .expect("write");
    let run = |extra: &[&std::ffi::OsStr]| {
        let mut args = vec![std::ffi::OsStr::new("run")];
        args.extend_from_slice(extra);
        args.push(source.as_os_str());
        bytejail(&args)
    };
    // Without the flag the header cannot be read: one line, exit 2.
    let (status, stderr) = run(&[]);
    assert_eq!(status, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--include-dir"), "{stderr}");
    // With it the guest runs and returns 42 (its exit status).
    let (status, stderr) = run(&["--include-dir".as_ref(), includes.path().as_os_str()]);
    assert_eq!(status, Some(42), "{stderr}");
    let missing = dir.path().join("missing");
    let (status, stderr) = run(&["--include-dir".as_ref(), missing.as_os_str()]);
    assert_eq!(status, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("include directory `{}`", missing.display())),
        "{stderr}"
    );
}
