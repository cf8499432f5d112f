//! Loading guest code from real files in every format, made with the system `as`, `nasm`, `cc`
//! and `ld`, and every kind of bad input: each must be a one-line error naming the file.
//! Tests that exercise NASM itself skip with one line when it is not installed; the rest need
//! only GNU binutils and gcc.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytejail::load::{assemble, load_bytes, load_path, parse_hex, read_input, text_of_elf, Format};
use bytejail::InputError;
use tempfile::TempDir;

const MAX: usize = 1 << 20;

/// How many tests of this file need `nasm` (for the line that says they were skipped).
const NASM_TESTS: usize = 4;

/// True (after one visible line) when `nasm` is missing: the caller returns.
fn without_nasm() -> bool {
    common::skip_without("nasm", NASM_TESTS)
}

/// `mov $42, %eax; ret`, as every assembler spells it.
const RET_42: [u8; 6] = [0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3];

const GAS_RET_42: &str = "# expect: returned rax=42\n\tmov $42, %eax\n\tret\n";
const NASM_RET_42: &str = "; expect: returned rax=42\nbits 64\n\tmov eax, 42\n\tret\n";

fn temp() -> TempDir {
    tempfile::tempdir().expect("temporary directory")
}

fn write(dir: &TempDir, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write test file");
    path
}

fn load(path: &Path) -> Result<Vec<u8>, String> {
    load_path(path, None, MAX).map_err(|err| err.to_string())
}

fn load_err(path: &Path, format: Option<Format>, max_code: usize) -> InputError {
    match load_path(path, format, max_code) {
        Ok(code) => panic!("{} loaded as {code:02x?}", path.display()),
        Err(err) => err,
    }
}

/// Runs a build tool that must succeed.
fn tool(program: &str, args: &[&Path]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Assembles GNU as `source` into `name` in `dir` with the system `as`.
fn gas_object(dir: &TempDir, name: &str, source: &str) -> PathBuf {
    let source_path = write(dir, &format!("{name}.src.s"), source);
    let object = dir.path().join(name);
    tool(
        "as",
        &[Path::new("--64"), Path::new("-o"), &object, &source_path],
    );
    object
}

/// An object made by GNU as from `source`, with its `.text` section removed (`objcopy`).
fn gas_object_without_text(dir: &TempDir, name: &str, source: &str) -> PathBuf {
    let object = gas_object(dir, name, source);
    tool(
        "objcopy",
        &[Path::new("--remove-section"), Path::new(".text"), &object],
    );
    object
}

fn nasm_object(dir: &TempDir, name: &str, source: &str) -> PathBuf {
    let source_path = write(dir, &format!("{name}.src.asm"), source);
    let object = dir.path().join(name);
    tool(
        "nasm",
        &[
            Path::new("-f"),
            Path::new("elf64"),
            Path::new("-o"),
            &object,
            &source_path,
        ],
    );
    object
}

fn one_line(err: &InputError) -> String {
    let text = err.to_string();
    assert!(!text.contains('\n'), "not one line: {text:?}");
    text
}

// ---------------------------------------------------------------------------------------------
// Every format

#[test]
fn bin_file() {
    let dir = temp();
    assert_eq!(load(&write(&dir, "ret42.bin", RET_42)), Ok(RET_42.to_vec()));
}

#[test]
fn hex_file_with_comments_and_prefixes() {
    let dir = temp();
    let text = "# mov eax, 42\n0xb8, 0x2a 00\t\\x00\\x00 ; imm32\nC3 // ret\n";
    assert_eq!(load(&write(&dir, "ret42.hex", text)), Ok(RET_42.to_vec()));
}

#[test]
fn gas_source() {
    let dir = temp();
    assert_eq!(
        load(&write(&dir, "ret42.s", GAS_RET_42)),
        Ok(RET_42.to_vec())
    );
    let intel = ".intel_syntax noprefix\nmov eax, 42\nret\n";
    assert_eq!(load(&write(&dir, "intel.s", intel)), Ok(RET_42.to_vec()));
}

#[test]
fn gas_source_with_preprocessor() {
    let dir = temp();
    let source = "#define ANSWER 42\n/* C comment */\n\tmov $ANSWER, %eax\n\tret\n";
    assert_eq!(load(&write(&dir, "ret42.S", source)), Ok(RET_42.to_vec()));
}

#[test]
fn gas_data_in_text_with_rip_relative_addressing() {
    let dir = temp();
    let source = "\tmovzbl answer(%rip), %eax\n\tret\nanswer: .byte 42\n";
    // 0F B6 05 disp32: movzx eax, byte [rip+1] (the ret sits between), then C3, then the data.
    assert_eq!(
        load(&write(&dir, "data.s", source)),
        Ok(vec![0x0f, 0xb6, 0x05, 0x01, 0x00, 0x00, 0x00, 0xc3, 0x2a])
    );
}

#[test]
fn nasm_source() {
    if without_nasm() {
        return;
    }
    let dir = temp();
    assert_eq!(
        load(&write(&dir, "ret42.asm", NASM_RET_42)),
        Ok(RET_42.to_vec())
    );
    assert_eq!(
        load(&write(&dir, "ret42.nasm", NASM_RET_42)),
        Ok(RET_42.to_vec())
    );
    let asm = write(&dir, "code.txt", NASM_RET_42);
    assert_eq!(
        load_path(&asm, Some(Format::Nasm), MAX).ok(),
        Some(RET_42.to_vec())
    );
    assert_eq!(
        assemble(NASM_RET_42, Format::Nasm).ok(),
        Some(RET_42.to_vec())
    );
}

#[test]
fn nasm_defaults_to_64_bit_and_text() {
    if without_nasm() {
        return;
    }
    let dir = temp();
    // No `bits 64`, no `section .text`: elf64 output means both. `add rax, rbx` exists only in
    // 64-bit mode (REX.W 01 /r, ModRM 11 011 000).
    let path = write(&dir, "plain.asm", "add rax, rbx\nret\n");
    assert_eq!(load(&path), Ok(vec![0x48, 0x01, 0xd8, 0xc3]));
}

#[test]
fn elf_object() {
    let dir = temp();
    let object = gas_object(&dir, "ret42.o", GAS_RET_42);
    assert_eq!(load(&object), Ok(RET_42.to_vec()));
    let bytes = std::fs::read(&object).expect("read object");
    assert_eq!(text_of_elf(&bytes, "ret42.o").ok(), Some(RET_42.to_vec()));
    assert_eq!(
        load_bytes(&bytes, Format::Elf, "ret42.o", MAX).ok(),
        Some(RET_42.to_vec())
    );
}

#[test]
fn elf_object_from_nasm() {
    if without_nasm() {
        return;
    }
    let dir = temp();
    let nasm = nasm_object(&dir, "nasm.o", NASM_RET_42);
    assert_eq!(load(&nasm), Ok(RET_42.to_vec()));
}

#[test]
fn elf_recognized_by_magic_without_a_known_extension() {
    let dir = temp();
    let object = gas_object(&dir, "ret42.o", GAS_RET_42);
    for name in ["ret42", "ret42.out", "ret42.xyz"] {
        let renamed = dir.path().join(name);
        std::fs::copy(&object, &renamed).expect("copy");
        assert_eq!(load(&renamed), Ok(RET_42.to_vec()), "{name}");
    }
}

#[test]
fn elf_executable_and_shared_object() {
    let dir = temp();
    let source = ".globl _start\n_start:\n\tmov $42, %eax\n\tret\n";
    let object = gas_object(&dir, "start.o", source);
    let executable = dir.path().join("start");
    tool("ld", &[Path::new("-o"), &executable, &object]);
    assert_eq!(load(&executable), Ok(RET_42.to_vec()));
    let shared = dir.path().join("libstart.so");
    tool(
        "ld",
        &[Path::new("-shared"), Path::new("-o"), &shared, &object],
    );
    assert_eq!(load(&shared), Ok(RET_42.to_vec()));
}

#[test]
fn explicit_format_wins_over_the_extension() {
    let dir = temp();
    let path = write(&dir, "code.s", "b8 2a 00 00 00 c3");
    assert_eq!(
        load_path(&path, Some(Format::Hex), MAX).ok(),
        Some(RET_42.to_vec())
    );
    assert_eq!(
        load_path(&path, Some(Format::Bin), MAX).ok(),
        Some(b"b8 2a 00 00 00 c3".to_vec())
    );
    let gas = write(&dir, "code", GAS_RET_42);
    assert_eq!(
        load_path(&gas, Some(Format::Gas), MAX).ok(),
        Some(RET_42.to_vec())
    );
}

#[test]
fn file_names_that_look_like_options() {
    let dir = temp();
    let path = write(&dir, "-o.s", GAS_RET_42);
    assert_eq!(load(&path), Ok(RET_42.to_vec()));
    // Assemble by a relative name that starts with `-`, from inside the directory: in a child,
    // since that means changing the working directory.
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "relative_dash_name_child", "--nocapture"])
        .env("BYTEJAIL_TEST_DIR", dir.path())
        .output()
        .expect("rerun test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// Run by `file_names_that_look_like_options` in a child, because it changes directory; does
/// nothing on its own.
#[test]
fn relative_dash_name_child() {
    let Some(dir) = std::env::var_os("BYTEJAIL_TEST_DIR") else {
        return;
    };
    std::env::set_current_dir(dir).expect("chdir");
    assert_eq!(load(Path::new("-o.s")), Ok(RET_42.to_vec()));
    let preprocessed = Path::new("-E.S");
    std::fs::write(preprocessed, GAS_RET_42).expect("write");
    assert_eq!(load(preprocessed), Ok(RET_42.to_vec()));
}

#[test]
fn assemble_from_memory() {
    assert_eq!(
        assemble(GAS_RET_42, Format::Gas).ok(),
        Some(RET_42.to_vec())
    );
    assert_eq!(
        load_bytes(GAS_RET_42.as_bytes(), Format::Gas, "<stdin>", MAX).ok(),
        Some(RET_42.to_vec())
    );
}

#[test]
fn hex_from_memory() {
    for text in [
        "b8 2a 00 00 00 c3",
        "0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3",
        "0xb8,0x2a,0x0,0x0,0x0,0xc3",
        "\\xb8\\x2a\\x00\\x00\\x00\\xc3",
        "b82a000000c3",
    ] {
        assert_eq!(
            parse_hex(text, "--hex").ok(),
            Some(RET_42.to_vec()),
            "{text}"
        );
    }
    // Without a prefix, a lone `0` is an odd run: bytes are two digits.
    let err = parse_hex("b8 2a 0 0 0 c3", "--hex").unwrap_err();
    assert_eq!(
        one_line(&err),
        "`--hex`: odd number of hex digits in `0` at line 1, column 7"
    );
}

#[test]
fn input_files() {
    let dir = temp();
    assert_eq!(
        read_input(&write(&dir, "in.txt", "hello"), 5).ok(),
        Some(b"hello".to_vec())
    );
    assert_eq!(read_input(&write(&dir, "empty", ""), 5).ok(), Some(vec![]));
    let big = write(&dir, "big", "hello!");
    let err = read_input(&big, 5).unwrap_err();
    assert_eq!(
        one_line(&err),
        format!(
            "`{}`: input is 6 bytes; the limit is 5 bytes (--max-input)",
            big.display()
        )
    );
    // An endless file: read just past the limit, its size not claimed.
    // The memory devices never block: /dev/null is empty input, /dev/zero is read only to just
    // past the limit, and its size is not claimed.
    assert_eq!(read_input(Path::new("/dev/null"), 5).ok(), Some(vec![]));
    let err = read_input(Path::new("/dev/zero"), 1000).unwrap_err();
    assert_eq!(
        one_line(&err),
        "`/dev/zero`: input is over 1000 bytes; the limit is 1000 bytes (--max-input)"
    );
    // Other devices are refused, never read: a terminal would hold the run up (a fresh
    // pseudo-terminal master has nothing to read, ever).
    let err = read_input(Path::new("/dev/ptmx"), 1000).unwrap_err();
    assert_eq!(
        one_line(&err),
        "`/dev/ptmx`: is a character device; bytejail reads only regular files, or standard \
         input given as `-`"
    );
    let missing = dir.path().join("missing");
    let err = read_input(&missing, 5).unwrap_err();
    assert!(matches!(err, InputError::Unreadable { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn empty_code() {
    let dir = temp();
    for (name, contents) in [
        ("empty.bin", ""),
        ("empty.hex", "# no code here\n\n"),
        ("empty.s", "# nothing\n"),
    ] {
        let path = write(&dir, name, contents);
        let err = load_err(&path, None, MAX);
        let message = one_line(&err);
        assert!(
            message.starts_with(&format!("`{}`: ", path.display())),
            "{message}"
        );
        assert!(
            message.ends_with("the code is empty")
                || message.ends_with("the .text section is empty")
                || message.ends_with("has no .text section"),
            "{message}"
        );
    }
    let path = write(&dir, "empty.bin", "");
    assert_eq!(
        one_line(&load_err(&path, None, MAX)),
        format!("`{}`: the code is empty", path.display())
    );
}

#[test]
fn unknown_extension() {
    let dir = temp();
    let path = write(&dir, "foo.xyz", "b0 2a c3");
    assert_eq!(
        one_line(&load_err(&path, None, MAX)),
        format!(
            "`{}`: unknown code format (extension `.xyz`); \
             use .bin .hex .s .S .asm .o or --format bin|hex|gas|nasm|elf",
            path.display()
        )
    );
    let path = write(&dir, "foo", "b0 2a c3");
    assert_eq!(
        one_line(&load_err(&path, None, MAX)),
        format!(
            "`{}`: unknown code format (no extension); \
             use .bin .hex .s .S .asm .o or --format bin|hex|gas|nasm|elf",
            path.display()
        )
    );
}

#[test]
fn bad_hex_says_where() {
    let dir = temp();
    let path = write(&dir, "bad.hex", "b0 2a\n  c3 zz\n");
    assert_eq!(
        one_line(&load_err(&path, None, MAX)),
        format!(
            "`{}`: bad hex digit `z` at line 2, column 6",
            path.display()
        )
    );
    let path = write(&dir, "odd.hex", "b0 2a c");
    assert_eq!(
        one_line(&load_err(&path, None, MAX)),
        format!(
            "`{}`: odd number of hex digits in `c` at line 1, column 7",
            path.display()
        )
    );
    let path = write(&dir, "binary.hex", RET_42);
    assert_eq!(
        one_line(&load_err(&path, None, MAX)),
        format!(
            "`{}`: bad hex digit (byte 0xb8, not text) at line 1, column 1; \
             for raw bytes use .bin or --format bin",
            path.display()
        )
    );
}

#[test]
fn unreadable_files() {
    let dir = temp();
    for name in [
        "missing.bin",
        "missing.hex",
        "missing.s",
        "missing.asm",
        "missing.o",
        "missing",
    ] {
        let path = dir.path().join(name);
        let err = load_err(&path, None, MAX);
        assert!(
            matches!(err, InputError::Unreadable { .. }),
            "{name}: {err:?}"
        );
        assert_eq!(
            one_line(&err),
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                path.display()
            )
        );
    }
    let sub = dir.path().join("code.bin");
    std::fs::create_dir(&sub).expect("mkdir");
    for format in [None, Some(Format::Gas), Some(Format::Elf)] {
        let err = load_err(&sub, format, MAX);
        assert_eq!(
            one_line(&err),
            format!(
                "cannot read {}: Is a directory (os error 21)",
                sub.display()
            )
        );
    }
}

#[test]
fn elf_without_text() {
    let dir = temp();
    let data_only = gas_object_without_text(&dir, "data.o", ".data\n.byte 1\n");
    assert_eq!(
        one_line(&load_err(&data_only, None, MAX)),
        format!("`{}`: has no .text section", data_only.display())
    );
    let elsewhere =
        gas_object_without_text(&dir, "code.o", ".section .code, \"ax\", @progbits\nret\n");
    assert_eq!(
        one_line(&load_err(&elsewhere, None, MAX)),
        format!(
            "`{}`: has no .text section (there is code in `.code`; bytejail runs only .text)",
            elsewhere.display()
        )
    );
    let empty_text = gas_object(&dir, "empty.o", ".data\n.byte 1\n");
    assert_eq!(
        one_line(&load_err(&empty_text, None, MAX)),
        format!("`{}`: the .text section is empty", empty_text.display())
    );
}

#[test]
fn elf_not_x86_64() {
    let dir = temp();
    let object = gas_object(&dir, "ret42.o", GAS_RET_42);
    let mut bytes = std::fs::read(&object).expect("read object");
    // e_machine (offset 18, little-endian) = EM_AARCH64 (183).
    bytes[18] = 183;
    bytes[19] = 0;
    assert_eq!(
        text_of_elf(&bytes, "arm.o").unwrap_err().to_string(),
        "`arm.o`: an ELF file for Aarch64, not x86-64"
    );
    let junk = write(&dir, "junk.o", "not an object");
    assert_eq!(
        one_line(&load_err(&junk, None, MAX)),
        format!(
            "`{}`: not an ELF file (no ELF magic number)",
            junk.display()
        )
    );
    let truncated = write(
        &dir,
        "truncated.o",
        &std::fs::read(&object).expect("read")[..100],
    );
    let message = one_line(&load_err(&truncated, None, MAX));
    assert!(
        message.starts_with(&format!(
            "`{}`: not a valid ELF file: ",
            truncated.display()
        )),
        "{message}"
    );
}

#[test]
fn unresolved_relocations() {
    let dir = temp();
    let source = ".data\nmsg: .byte 1\n.text\n\tlea msg(%rip), %rax\n\tcall external\n\tret\n";
    let path = write(&dir, "reloc.s", source);
    assert_eq!(
        one_line(&load_err(&path, None, MAX)),
        format!(
            "`{}`: .text has 2 unresolved relocations (first: against `.data` at offset 0x3); \
             bytejail runs a single position-independent code blob: keep data in .text and use \
             rip-relative addressing",
            path.display()
        )
    );
    let object = gas_object(&dir, "call.o", "\tcall external\n\tret\n");
    assert_eq!(
        one_line(&load_err(&object, None, MAX)),
        format!(
            "`{}`: .text has 1 unresolved relocation (first: against `external` at offset 0x1); \
             bytejail runs a single position-independent code blob: keep data in .text and use \
             rip-relative addressing",
            object.display()
        )
    );
}

#[test]
fn too_large() {
    let dir = temp();
    let path = write(&dir, "big.bin", [0x90; 100]);
    let err = load_err(&path, None, 10);
    assert!(
        matches!(
            &err,
            InputError::TooLarge {
                what,
                size: Some(100),
                limit: 10,
                flag: "--max-code"
            } if *what == format!("`{}`: code", path.display())
        ),
        "{err:?}"
    );
    assert_eq!(
        one_line(&err),
        format!(
            "`{}`: code is 100 bytes; the limit is 10 bytes (--max-code)",
            path.display()
        )
    );
    assert!(load_path(&path, None, 100).is_ok());
    // An endless file is read only to just past the limit, and its size is not claimed.
    let err = load_err(Path::new("/dev/zero"), Some(Format::Bin), 1000);
    assert_eq!(
        one_line(&err),
        "`/dev/zero`: code is over 1000 bytes; the limit is 1000 bytes (--max-code)"
    );
    // Hex: the code after parsing, and the text before.
    let path = write(&dir, "big.hex", "90 ".repeat(11));
    assert_eq!(
        one_line(&load_err(&path, None, 10)),
        format!(
            "`{}`: code is 11 bytes; the limit is 10 bytes (--max-code)",
            path.display()
        )
    );
    let path = write(&dir, "huge.hex", "90 ".repeat(1 << 20));
    assert_eq!(
        one_line(&load_err(&path, None, 1)),
        format!(
            "`{}`: the hex text is over 1048584 bytes, too large to hold at most 1 bytes of code \
             (--max-code)",
            path.display()
        )
    );
    // ELF: the size of .text counts, not the size of the file.
    let path = write(&dir, "fill.s", ".fill 100, 1, 0x90\nret\n");
    assert_eq!(
        one_line(&load_err(&path, None, 100)),
        format!(
            "`{}`: code is 101 bytes; the limit is 100 bytes (--max-code)",
            path.display()
        )
    );
    assert_eq!(
        load_path(&path, None, 101).map(|code| code.len()).ok(),
        Some(101)
    );
}

#[test]
fn assembler_errors_name_the_file_and_line() {
    let dir = temp();
    let path = write(&dir, "bad.s", "\tmov $1, %eax\n\tfrobnicate %eax\n");
    assert_eq!(
        one_line(&load_err(&path, None, MAX)),
        format!(
            "`{p}`: as failed: {p}:2: Error: no such instruction: `frobnicate %eax'",
            p = path.display()
        )
    );
    let path = write(&dir, "bad.S", "#define OP frobnicate\n\n\tOP %eax\n");
    assert_eq!(
        one_line(&load_err(&path, None, MAX)),
        format!(
            "`{p}`: as failed: {p}:3: Error: no such instruction: `frobnicate %eax'",
            p = path.display()
        )
    );
    let path = write(&dir, "bad_cpp.S", "#include \"no-such-header.h\"\nret\n");
    let message = one_line(&load_err(&path, None, MAX));
    assert!(
        message.starts_with(&format!("`{p}`: cc failed: {p}:1:", p = path.display())),
        "{message}"
    );
    assert!(message.contains("no-such-header.h"), "{message}");
}

#[test]
fn assembler_errors_from_memory_use_the_given_name() {
    let err = load_bytes(b"\tfrobnicate\n", Format::Gas, "<stdin>", MAX).unwrap_err();
    assert_eq!(
        one_line(&err),
        "`<stdin>`: as failed: <stdin>:1: Error: no such instruction: `frobnicate'"
    );
    let err = assemble("\tfrobnicate\n", Format::Gas).unwrap_err();
    assert_eq!(
        one_line(&err),
        "`source.s`: as failed: source.s:1: Error: no such instruction: `frobnicate'"
    );
    let err = load_bytes(b"ret\n", Format::Gas, "<stdin>", 0).unwrap_err();
    assert_eq!(
        one_line(&err),
        "`<stdin>`: code is 1 bytes; the limit is 0 bytes (--max-code)"
    );
}

#[test]
fn nasm_errors() {
    if without_nasm() {
        return;
    }
    let dir = temp();
    let path = write(&dir, "empty.asm", "; nothing\nsection .text\n");
    let message = one_line(&load_err(&path, None, MAX));
    assert!(
        message == format!("`{}`: the .text section is empty", path.display())
            || message == format!("`{}`: has no .text section", path.display()),
        "{message}"
    );
    let nasm = write(&dir, "reloc.asm", "extern puts\ncall puts\nret\n");
    let message = one_line(&load_err(&nasm, None, MAX));
    assert!(
        message.contains("1 unresolved relocation (first: against `puts` at offset 0x1)"),
        "{message}"
    );
    let path = write(&dir, "bad.asm", "bits 64\nmov eax,\n");
    let message = one_line(&load_err(&path, None, MAX));
    assert!(
        message.starts_with(&format!(
            "`{p}`: nasm failed: {p}:2: error: ",
            p = path.display()
        )),
        "{message}"
    );
    let err = assemble("mov eax,\n", Format::Nasm).unwrap_err();
    let message = one_line(&err);
    assert!(
        message.starts_with("`source.asm`: nasm failed: source.asm:1: error: "),
        "{message}"
    );
    let err = load_bytes(b"ret\n", Format::Nasm, "<stdin>", 0).unwrap_err();
    assert_eq!(
        one_line(&err),
        "`<stdin>`: code is 1 bytes; the limit is 0 bytes (--max-code)"
    );
}

#[test]
fn corrupt_elf_objects_never_panic() {
    let dir = temp();
    let object = gas_object(
        &dir,
        "reloc.o",
        ".data\nmsg: .byte 1\n.text\n\tlea msg(%rip), %rax\n\tcall external\n\tret\n",
    );
    let original = std::fs::read(&object).expect("read object");
    for len in 0..original.len() {
        let _ = text_of_elf(&original[..len], "cut.o");
    }
    for index in 0..original.len() {
        for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut bytes = original.clone();
            bytes[index] = value;
            let _ = text_of_elf(&bytes, "corrupt.o");
            // Through the file reader as well, which reads only what it needs.
            if index % 16 == 0 && value == 0xff {
                let path = write(&dir, "corrupt.o", &bytes);
                let _ = load_path(&path, None, MAX);
            }
        }
    }
}

/// Runs the test `child` of this binary in a child process with `stdin`, passing `mode`.
fn run_child(child: &str, mode: &str, stdin: std::process::Stdio, feed: Option<&[u8]>) {
    use std::io::Write;
    let mut process = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", child, "--nocapture"])
        .env("BYTEJAIL_TEST_STDIN", mode)
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rerun test binary");
    if let Some(bytes) = feed {
        let mut pipe = process.stdin.take().expect("stdin pipe");
        // The child may stop reading early; that is the point of some modes.
        let _ = pipe.write_all(bytes);
    }
    let output = process.wait_with_output().expect("wait for child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{mode}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn standard_input() {
    use std::process::Stdio;
    run_child("stdin_child", "bin", Stdio::piped(), Some(&RET_42));
    run_child(
        "stdin_child",
        "hex",
        Stdio::piped(),
        Some(b"b8 2a 00 00 00 c3\n"),
    );
    run_child(
        "stdin_child",
        "gas",
        Stdio::piped(),
        Some(GAS_RET_42.as_bytes()),
    );
    run_child("stdin_child", "empty", Stdio::null(), None);
    run_child(
        "stdin_child",
        "pipe_too_large",
        Stdio::piped(),
        Some(&[0x90; 100]),
    );
    run_child("stdin_child", "input", Stdio::piped(), Some(b"hello"));
    let dir = temp();
    let big = write(&dir, "big.bin", [0x90; 100]);
    let file = std::fs::File::open(&big).expect("open");
    run_child("stdin_child", "file_too_large", Stdio::from(file), None);
}

/// Run by `standard_input` in a child with its standard input set up; does nothing on its own.
#[test]
fn stdin_child() {
    let Ok(mode) = std::env::var("BYTEJAIL_TEST_STDIN") else {
        return;
    };
    let stdin = Path::new("-");
    let code = |format, max| load_path(stdin, format, max).map_err(|err| one_line(&err));
    match mode.as_str() {
        "bin" => assert_eq!(code(None, MAX), Ok(RET_42.to_vec())),
        "hex" => assert_eq!(code(Some(Format::Hex), MAX), Ok(RET_42.to_vec())),
        "gas" => assert_eq!(code(Some(Format::Gas), MAX), Ok(RET_42.to_vec())),
        "empty" => assert_eq!(
            code(None, MAX),
            Err("`<stdin>`: the code is empty".to_string())
        ),
        // A pipe has no length: the error says only that it went past the limit.
        "pipe_too_large" => assert_eq!(
            code(None, 10),
            Err("`<stdin>`: code is over 10 bytes; the limit is 10 bytes (--max-code)".to_string())
        ),
        // A redirected file has one.
        "file_too_large" => assert_eq!(
            code(None, 10),
            Err("`<stdin>`: code is 100 bytes; the limit is 10 bytes (--max-code)".to_string())
        ),
        "input" => assert_eq!(read_input(stdin, 5).ok(), Some(b"hello".to_vec())),
        other => panic!("unknown mode {other}"),
    }
}
