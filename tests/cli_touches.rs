//! The command line's conveniences: inline `--asm`, `--syntax`, the summary's spelling (hex
//! registers, "1 byte"), the hint for a guest that runs off its code, the newline before the
//! summary on a shared terminal, C-string `--hex`, the disasm listing, "did you mean",
//! decimal and binary size units, completions and man pages, `--quiet`.
//!
//! Each convenience has a twin showing it stays out of the way where it does not apply.
//! Expected machine code is encoded by hand (Intel SDM); each constant says what it is.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_bytejail");

/// `mov rdx, rsi; mov rsi, rdi; mov edi, 1; mov eax, 1; syscall; xor eax, eax; ret`:
/// writes the mapped input to fd 1 and returns 0.
const ECHO_INPUT: &str = "48 89 f2 48 89 fe bf 01 00 00 00 b8 01 00 00 00 0f 05 31 c0 c3";

/// How a run of bytejail ended.
#[derive(Debug)]
struct Finished {
    status: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Finished {
    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    /// Bad usage: exit 2, nothing on stdout, one `bytejail:` line on stderr holding `needles`.
    #[track_caller]
    fn assert_rejected(&self, needles: &[&str]) {
        assert_eq!(self.status, 2, "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        assert!(self.stderr.starts_with("bytejail: "), "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:?}");
        for needle in needles {
            assert!(self.stderr.contains(needle), "{needle:?} in {self:?}");
        }
    }
}

fn bytejail(args: &[&str]) -> Finished {
    let output = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run bytejail");
    Finished {
        status: output.status.code().expect("bytejail exited"),
        stdout: output.stdout,
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// --asm and --syntax

#[test]
fn inline_asm_is_intel_syntax() {
    for asm in [
        "mov eax, 42; ret",
        "mov eax, 42\nret",
        "  mov eax, 42 ;ret  ",
    ] {
        let run = bytejail(&["run", "--asm", asm]);
        assert_eq!(run.status, 42, "{asm:?}: {run:?}");
    }
    // The bytes GNU as made: B8 id is `mov eax, imm32`, C3 `ret`.
    let run = bytejail(&["disasm", "--asm", "mov eax, 42; ret"]);
    assert_eq!(run.status, 0, "{run:?}");
    let bytes: Vec<String> = run
        .stdout_text()
        .lines()
        .map(|line| line[9..35].trim().to_string())
        .collect();
    assert_eq!(bytes, ["b8 2a 00 00 00", "c3"]);
    // AT&T on request.
    let run = bytejail(&["run", "--syntax", "att", "--asm", "mov $7, %eax; ret"]);
    assert_eq!(run.status, 7, "{run:?}");
}

/// `--asm` reads Intel syntax exactly as GNU as's own `.intel_syntax noprefix` directive does,
/// x87 operand orders included.
#[test]
fn inline_asm_matches_the_intel_syntax_directive() {
    let source = "fsub st(1), st; fsubr st(1), st; fdivp st(1), st; \
                  mov eax, [rdi+rsi*4+8]; lea rax, [rip+0x10]; movzx eax, byte ptr [rdi]; ret";
    let expected = bytejail::load::assemble(
        &format!(".intel_syntax noprefix\n{}\n", source.replace(';', "\n")),
        bytejail::load::Format::Gas,
    )
    .unwrap();
    let run = bytejail(&["disasm", "--asm", source]);
    assert_eq!(run.status, 0, "{run:?}");
    let got: Vec<u8> = run
        .stdout_text()
        .lines()
        .flat_map(|line| {
            line[9..35]
                .split_whitespace()
                .map(|pair| u8::from_str_radix(pair, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn inline_asm_errors_are_one_line() {
    bytejail(&["run", "--asm", "mov eax, 42; ret", "guest.s"]).assert_rejected(&["--asm", "FILE"]);
    bytejail(&["run", "--asm", "c3", "--hex", "c3"]).assert_rejected(&["--asm", "--hex"]);
    bytejail(&["run", "--asm", "frobnicate eax"]).assert_rejected(&["--asm", "frobnicate"]);
    bytejail(&["run", "--format", "nasm", "--asm", "ret"]).assert_rejected(&["--format"]);
    bytejail(&["run", "--syntax", "intel", "--hex", "c3"]).assert_rejected(&["--syntax", "--hex"]);
    bytejail(&["run", "--syntax", "wrong", "--asm", "ret"]).assert_rejected(&["--syntax"]);
}

#[test]
fn syntax_intel_for_s_files_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let intel = write_file(&dir, "intel.s", "# returns 42\n\tmov eax, 42\n\tret\n");
    let run = bytejail(&["run", "--syntax", "intel", &intel]);
    assert_eq!(run.status, 42, "{run:?}");
    // As AT&T (the default) it fails, and the message says what to try.
    bytejail(&["run", &intel]).assert_rejected(&["intel.s", "try --syntax intel"]);
    // Twin: an AT&T file with a mistake gets no such hint.
    let att = write_file(&dir, "att.s", "\tmovx $42, %eax\n\tret\n");
    let run = bytejail(&["run", &att]);
    run.assert_rejected(&["att.s"]);
    assert!(!run.stderr.contains("--syntax"), "{run:?}");
    // A good AT&T file still runs as before.
    let att = write_file(&dir, "good.s", "\tmov $42, %eax\n\tret\n");
    assert_eq!(bytejail(&["run", &att]).status, 42);
    // NASM has no choice of syntax.
    let nasm = write_file(&dir, "x.asm", "bits 64\nret\n");
    bytejail(&["run", "--syntax", "intel", &nasm]).assert_rejected(&["--syntax", "GNU as"]);
}

// ---------------------------------------------------------------------------------------------
// The summary line and its hints

#[test]
fn summary_shows_registers_in_hex() {
    // mov al, 42; ret.
    let run = bytejail(&["run", "--hex", "b0 2a c3"]);
    assert!(
        run.stderr
            .starts_with("bytejail: returned: rax=0x2a (42); 0 bytes of output"),
        "{run:?}"
    );
    // mov rax, rbx; ret with rbx = -1.
    let run = bytejail(&[
        "run",
        "--reg",
        "rbx=0xffffffffffffffff",
        "--hex",
        "48 89 d8 c3",
    ]);
    assert!(
        run.stderr.contains("rax=0xffffffffffffffff (-1);"),
        "{run:?}"
    );
}

#[test]
fn summary_names_syscalls_in_decimal() {
    // mov eax, 39; syscall: getpid (39 in arch/x86/entry/syscalls/syscall_64.tbl).
    let run = bytejail(&[
        "run",
        "--policy",
        "strict-bpf",
        "--hex",
        "b8 27 00 00 00 0f 05",
    ]);
    assert_eq!(run.status, 159, "{run:?}");
    assert!(run.stderr.contains("getpid (x86_64 39)"), "{run:?}");
    assert!(run.stderr.contains("at code+0x5"), "{run:?}");
}

#[test]
fn summary_counts_bytes_in_words() {
    for (input, words) in [("", "0 bytes"), ("41", "1 byte"), ("4142", "2 bytes")] {
        let mut args = vec!["run", "--hex", ECHO_INPUT];
        if !input.is_empty() {
            args.extend(["--input-hex", input]);
        }
        let run = bytejail(&args);
        assert!(
            run.stderr.contains(&format!("; {words} of output,")),
            "{words}: {run:?}"
        );
    }
}

/// The hint line's text.
const RAN_OFF: &str = "ran off the end of its code";

#[test]
fn a_guest_without_ret_gets_a_hint() {
    // mov al, 42 and nothing after it: the zeros past the code are `add [rax], al`.
    let run = bytejail(&["run", "--hex", "b0 2a"]);
    assert_eq!(run.status, 139, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 2, "{run:?}");
    assert!(
        run.stderr.lines().nth(1).unwrap().contains(RAN_OFF),
        "{run:?}"
    );
    // Twins: a crash inside the code, a crash after a `ret` to address 0 (push 0; ret), a
    // guest that returns: no hint.
    for hex in ["48 c7 00 01 00 00 00 c3", "6a 00 c3", "b0 2a c3"] {
        let run = bytejail(&["run", "--hex", hex]);
        assert!(!run.stderr.contains(RAN_OFF), "{hex}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{hex}: {run:?}");
    }
}

#[test]
fn quiet_prints_only_errors() {
    let run = bytejail(&["run", "--quiet", "--hex", "b0 2a"]);
    assert_eq!(run.status, 139, "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let run = bytejail(&["run", "-q", "--input-hex", "6869", "--hex", ECHO_INPUT]);
    assert_eq!((run.status, &run.stdout[..]), (0, &b"hi"[..]), "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    bytejail(&["run", "--quiet", "--hex", "zz"]).assert_rejected(&["--hex"]);

    let dir = tempfile::tempdir().unwrap();
    let jobs = write_file(
        &dir,
        "jobs.jsonl",
        "{\"id\": 1, \"code_hex\": \"b0 2a c3\"}\n",
    );
    let batch = bytejail(&["batch", "--quiet", &jobs]);
    assert_eq!(batch.status, 0, "{batch:?}");
    assert_eq!(batch.stderr, "", "{batch:?}");
    assert_eq!(batch.stdout_text().lines().count(), 1, "{batch:?}");
    // Twin: without --quiet, batch summarizes on stderr.
    assert!(!bytejail(&["batch", &jobs]).stderr.is_empty());
}

/// A pseudo-terminal: (controller, terminal).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut controller, mut terminal) = (-1, -1);
    // SAFETY: openpty writes two descriptors through valid pointers; the other arguments may
    // be null.
    let rc = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptors that nothing else owns.
    unsafe {
        (
            OwnedFd::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    }
}

/// Runs `bytejail ARGS` with stderr on a terminal and stdout on the same terminal or a pipe;
/// returns what the terminal showed (its `\r\n` as `\n`) and what the pipe got.
fn on_terminal(args: &[&str], stdout_too: bool) -> (String, Vec<u8>) {
    let (controller, terminal) = pty();
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::from(terminal.try_clone().unwrap()));
    if stdout_too {
        command.stdout(Stdio::from(terminal.try_clone().unwrap()));
    } else {
        command.stdout(Stdio::piped());
    }
    let mut child = command.spawn().unwrap();
    drop(terminal);
    drop(command);
    let mut piped = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut piped).unwrap();
    }
    child.wait().unwrap();
    // Every writer is gone: reading the controller ends with EIO once the screen is read.
    let mut screen = Vec::new();
    let mut reader = std::fs::File::from(controller);
    let mut buf = [0; 4096];
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        screen.extend_from_slice(&buf[..n]);
    }
    (
        String::from_utf8_lossy(&screen).replace("\r\n", "\n"),
        piped,
    )
}

#[test]
fn a_shared_terminal_gets_a_newline_before_the_summary() {
    // The guest writes "hi" without a newline.
    let args = ["run", "--input-hex", "6869", "--hex", ECHO_INPUT];
    let (screen, _) = on_terminal(&args, true);
    assert!(screen.starts_with("hi\nbytejail: returned"), "{screen:?}");
    // Twin: stdout on a pipe keeps exactly the guest's bytes, and the terminal has the summary
    // alone.
    let (screen, piped) = on_terminal(&args, false);
    assert_eq!(piped, b"hi");
    assert!(screen.starts_with("bytejail: returned"), "{screen:?}");
    // Twin: output that ends in a newline gets no blank line.
    let (screen, _) = on_terminal(&["run", "--input-hex", "68690a", "--hex", ECHO_INPUT], true);
    assert!(screen.starts_with("hi\nbytejail: returned"), "{screen:?}");
}

// ---------------------------------------------------------------------------------------------
// --hex as C strings, disasm

#[test]
fn hex_takes_c_strings() {
    // "\xb0\x2a" "\xc3": mov al, 42; ret.
    let run = bytejail(&["run", "--hex", r#""\xb0\x2a" "\xc3""#]);
    assert_eq!(run.status, 42, "{run:?}");
    // Plain hex with spaces, as before.
    assert_eq!(bytejail(&["run", "--hex", "b0 2a c3"]).status, 42);
    bytejail(&["run", "--hex", r#""\xb0\x2a"#]).assert_rejected(&["--hex", "closing"]);
}

#[test]
fn disasm_names_syscalls_and_writes_0x_numbers() {
    // push 0x3b; pop rax; syscall: execve (59 in arch/x86/entry/syscalls/syscall_64.tbl).
    let run = bytejail(&["disasm", "--hex", r#""\x6a\x3b" "\x58" "\x0f\x05""#]);
    assert_eq!(run.status, 0, "{run:?}");
    let texts: Vec<String> = run
        .stdout_text()
        .lines()
        .map(|line| line[37..].to_string())
        .collect();
    assert_eq!(texts, ["push 0x3b", "pop rax", "syscall ; rax=59 execve"]);
}

// ---------------------------------------------------------------------------------------------
// Did you mean, sizes

#[test]
fn mistyped_names_get_a_suggestion() {
    bytejail(&["run", "--policy", "strcit", "--hex", "c3"])
        .assert_rejected(&["--policy", "did you mean `strict`?"]);
    bytejail(&["run", "--policy", "strict-bfp", "--hex", "c3"])
        .assert_rejected(&["did you mean `strict-bpf`?"]);
    bytejail(&["run", "--reg", "rbz=1", "--hex", "c3"]).assert_rejected(&["did you mean `rbx`?"]);
    bytejail(&["man", "rnu"]).assert_rejected(&["did you mean `run`?"]);
    // Twins: nothing close, or a path: no guess.
    let run = bytejail(&["run", "--policy", "seccomp", "--hex", "c3"]);
    run.assert_rejected(&["--policy"]);
    assert!(!run.stderr.contains("did you mean"), "{run:?}");
    let run = bytejail(&["run", "--policy", "./strcit.json", "--hex", "c3"]);
    run.assert_rejected(&["strcit.json"]);
    assert!(!run.stderr.contains("did you mean"), "{run:?}");
}

#[test]
fn gb_is_decimal_and_gib_binary() {
    // 999 nops and a ret: 1000 bytes of code; 1024 with 1023 nops.
    let code = |len: usize| format!("{}c3", "90".repeat(len - 1));
    let (thousand, kibi) = (code(1000), code(1024));
    assert_eq!(
        bytejail(&["run", "--max-code", "1kB", "--hex", &thousand]).status,
        0
    );
    bytejail(&["run", "--max-code", "1kB", "--hex", &kibi]).assert_rejected(&["--max-code"]);
    for binary in ["1KiB", "1K", "1k"] {
        let run = bytejail(&["run", "--max-code", binary, "--hex", &kibi]);
        assert_eq!(run.status, 0, "{binary}: {run:?}");
    }
    let help = bytejail(&["run", "--help"]).stdout_text();
    assert!(help.contains("1GB = 10^9"), "{help}");
    assert!(help.contains("1G = 1GiB = 2^30"), "{help}");
}

// ---------------------------------------------------------------------------------------------
// Completions and man pages

#[test]
fn completions_for_each_shell() {
    let bash = bytejail(&["completions", "bash"]);
    assert_eq!(bash.status, 0, "{bash:?}");
    let script = bash.stdout_text();
    assert!(script.contains("complete"), "{script}");
    for word in ["run", "batch", "disasm", "--policy", "--asm"] {
        assert!(script.contains(word), "{word} in the bash script");
    }
    // bash itself reads the script without a syntax error, and completes `bytejail r` to `run`.
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, "bytejail.bash", &script);
    let completed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{path}'; COMP_WORDS=(bytejail r); COMP_CWORD=1; COMP_LINE='bytejail r'; \
             COMP_POINT=10; _bytejail bytejail r bytejail; echo \"${{COMPREPLY[@]}}\""
        ))
        .output()
        .unwrap();
    assert!(completed.status.success(), "{completed:?}");
    assert_eq!(String::from_utf8_lossy(&completed.stdout).trim(), "run");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let run = bytejail(&["completions", shell]);
        assert_eq!(run.status, 0, "{shell}: {run:?}");
        assert!(run.stdout_text().contains("run"), "{shell}");
    }
    bytejail(&["completions", "tcsh"]).assert_rejected(&["tcsh"]);
}

#[test]
fn man_pages() {
    let page = bytejail(&["man"]);
    assert_eq!(page.status, 0, "{page:?}");
    let text = page.stdout_text();
    assert!(text.contains(".TH bytejail 1"), "{text}");
    assert!(text.contains("disasm"), "{text}");
    let run_page = bytejail(&["man", "run"]).stdout_text();
    // roff writes a hyphen as `\-`.
    let plain = run_page.replace("\\-", "-");
    assert!(plain.contains(".TH bytejail-run 1"), "{run_page}");
    for flag in ["--policy", "--asm", "--syntax", "--quiet"] {
        assert!(plain.contains(flag), "{flag} in {run_page}");
    }
    let disasm_page = bytejail(&["man", "disasm"]).stdout_text();
    assert!(disasm_page.contains("bytejail\\-disasm"), "{disasm_page}");
}

/// man(1), a reader that is not ours, shows the page with its options.
#[test]
fn man_renders_the_page() {
    if common::skip_without("man", 1) {
        return;
    }
    let run_page = bytejail(&["man", "run"]).stdout_text();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bytejail-run.1");
    std::fs::write(&path, &run_page).unwrap();
    // Plain ASCII text: no pager, no bold by overstriking, `-` for a hyphen.
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&path)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C")
        .env("MAN_KEEP_FORMATTING", "")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{rendered:?}");
    let shown = String::from_utf8_lossy(&rendered.stdout);
    for text in ["bytejail-run", "--policy", "--asm"] {
        assert!(shown.contains(text), "{text} in {shown}");
    }
}
