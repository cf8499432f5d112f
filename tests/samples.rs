//! The guest samples are the test table: every `guest-samples/*.s` states in its header what the
//! runner must report (format: `guest-samples/README.md`), and the tests here run all of them
//! through the library (`bytejail::run`) and through the CLI (`bytejail run --json`).
//!
//! Every mismatch is collected and reported at once, sample by sample, so one run shows
//! everything that is wrong.

use std::collections::BTreeMap;
use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytejail::abi::{Gpr, GPR_NAMES};
use bytejail::{InitialRegisters, Outcome, Report, RunOptions};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The suite must keep at least this many samples (issue 2).
const MIN_SAMPLES: usize = 25;
/// Samples run this many at a time.
const THREADS: usize = 4;
/// How long a CLI run may take beyond the sample's own timeout before the test gives up on it.
const CLI_SLACK: Duration = Duration::from_secs(30);

/// Flags an `# args:` line may use; every one takes a value.
const ALLOWED_FLAGS: [&str; 7] = [
    "--timeout",
    "--max-output",
    "--stack",
    "--scratch",
    "--reg",
    "--input-hex",
    "--entry",
];

// ---------------------------------------------------------------------------------------------
// The header: `# <description>`, `# expect: <outcome> [key=value ...]`, optional `# args: ...`.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum ExpectedOutcome {
    Returned,
    Exited(i32),
    /// The signal's name, e.g. `SIGSEGV`, checked to be a real signal.
    Crashed(String),
    SyscallViolation,
    Timeout,
    OutputLimit,
}

impl ExpectedOutcome {
    fn kind(&self) -> &'static str {
        match self {
            ExpectedOutcome::Returned => "returned",
            ExpectedOutcome::Exited(_) => "exited",
            ExpectedOutcome::Crashed(_) => "crashed",
            ExpectedOutcome::SyscallViolation => "syscall_violation",
            ExpectedOutcome::Timeout => "timeout",
            ExpectedOutcome::OutputLimit => "output_limit",
        }
    }
}

/// What a sample's `# expect:` line asks for. `None` fields are not checked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Expectation {
    outcome: ExpectedOutcome,
    /// Register name (`rax`..`r15`, `rsp`, `rflags`) and value at return.
    registers: Vec<(String, u64)>,
    output: Option<Vec<u8>>,
    output_len: Option<usize>,
    /// `Some(None)` means "the fault lies outside the code" (`code_offset=none`).
    code_offset: Option<Option<u64>>,
    address: Option<u64>,
    instruction: Option<String>,
}

/// A parsed header.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    description: String,
    /// What follows `# expect:`, as written, for messages.
    expect_line: String,
    expect: Expectation,
    /// The `# args:` flags, split on whitespace, in `--flag value` pairs.
    args: Vec<String>,
}

/// Parses the header of a sample's source text.
fn parse_header(text: &str) -> Result<Header, String> {
    let mut lines = text.lines().enumerate().peekable();
    let mut header: Vec<&str> = Vec::new();
    while let Some((_, line)) = lines.next_if(|(_, l)| l.trim_start().starts_with('#')) {
        header.push(line.trim_start()[1..].trim());
    }
    // A directive after the header is almost certainly a mistake (a blank line in the header).
    for (number, line) in lines {
        let body = line.trim_start().strip_prefix('#').map(str::trim);
        if let Some(body) = body {
            if body.starts_with("expect:") || body.starts_with("args:") {
                return Err(format!(
                    "line {}: `# {}` comes after the header; the header is the block of `#` lines at the top",
                    number + 1,
                    body.split(':').next().unwrap_or_default()
                ));
            }
        }
    }
    let Some((description, rest)) = header.split_first() else {
        return Err(
            "no header: the file must start with `# <description>` and `# expect: ...`".into(),
        );
    };
    if description.is_empty()
        || description.starts_with("expect:")
        || description.starts_with("args:")
    {
        return Err("the first header line must describe the sample in one line".into());
    }
    let mut expect = None;
    let mut args = None;
    for body in rest {
        if let Some(spec) = body.strip_prefix("expect:") {
            if expect.is_some() {
                return Err("more than one `# expect:` line".into());
            }
            expect = Some((spec.trim().to_string(), parse_expectation(spec)?));
        } else if let Some(spec) = body.strip_prefix("args:") {
            if args.is_some() {
                return Err("more than one `# args:` line".into());
            }
            args = Some(parse_args(spec)?);
        }
    }
    let (expect_line, expect) = expect.ok_or("no `# expect:` line in the header")?;
    Ok(Header {
        description: description.to_string(),
        expect_line,
        expect,
        args: args.unwrap_or_default(),
    })
}

/// Parses what follows `# expect:`.
fn parse_expectation(spec: &str) -> Result<Expectation, String> {
    let tokens = tokenize(spec)?;
    let mut tokens = tokens.iter().map(String::as_str);
    let outcome = match tokens.next() {
        None => return Err("`# expect:` names no outcome".into()),
        Some("returned") => ExpectedOutcome::Returned,
        Some("exited") => {
            let code = tokens.next().ok_or("`exited` needs an exit code")?;
            ExpectedOutcome::Exited(
                code.parse()
                    .map_err(|_| format!("exit code `{code}` is not an integer"))?,
            )
        }
        Some("crashed") => {
            let name = tokens
                .next()
                .ok_or("`crashed` needs a signal name, e.g. SIGSEGV")?;
            Signal::from_str(name).map_err(|_| format!("`{name}` is not a signal name"))?;
            ExpectedOutcome::Crashed(name.to_string())
        }
        Some("syscall_violation") => ExpectedOutcome::SyscallViolation,
        Some("timeout") => ExpectedOutcome::Timeout,
        Some("output_limit") => ExpectedOutcome::OutputLimit,
        Some(other) => return Err(format!("unknown outcome `{other}`")),
    };
    let crashed = matches!(outcome, ExpectedOutcome::Crashed(_));
    let mut expect = Expectation {
        outcome,
        registers: Vec::new(),
        output: None,
        output_len: None,
        code_offset: None,
        address: None,
        instruction: None,
    };
    let mut seen = Vec::new();
    for token in tokens {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| format!("`{token}` is not key=value"))?;
        if seen.contains(&key) {
            return Err(format!("key `{key}` given twice"));
        }
        seen.push(key);
        let number = || parse_number(key, value);
        match key {
            "output" => expect.output = Some(parse_quoted(key, value)?),
            "output_hex" => {
                expect.output = Some(
                    decode_hex(value).ok_or("output_hex is not an even number of hex digits")?,
                )
            }
            "output_len" => {
                expect.output_len =
                    Some(usize::try_from(number()?).map_err(|_| "output_len is too large")?)
            }
            "code_offset" | "address" | "instruction" if !crashed => {
                return Err(format!("`{key}` only applies to `crashed`"))
            }
            "code_offset" if value == "none" => expect.code_offset = Some(None),
            "code_offset" => expect.code_offset = Some(Some(number()?)),
            "address" => expect.address = Some(number()?),
            "instruction" => {
                let bytes = parse_quoted(key, value)?;
                let text = String::from_utf8(bytes).map_err(|_| "instruction is not UTF-8")?;
                expect.instruction = Some(text);
            }
            _ if is_register(key) => {
                if expect.outcome != ExpectedOutcome::Returned {
                    return Err(format!("register `{key}` only applies to `returned`"));
                }
                expect.registers.push((key.to_string(), number()?));
            }
            _ => return Err(format!("unknown key `{key}`")),
        }
    }
    if seen.contains(&"output") && seen.contains(&"output_hex") {
        return Err("give `output` or `output_hex`, not both".into());
    }
    Ok(expect)
}

fn is_register(name: &str) -> bool {
    name == "rflags" || GPR_NAMES.contains(&name)
}

fn parse_number(key: &str, value: &str) -> Result<u64, String> {
    bytejail::abi::parse_u64(value)
        .ok_or_else(|| format!("`{key}={value}`: not a decimal or 0x-hex u64"))
}

/// Splits on whitespace outside double quotes; quotes and escapes stay in the tokens.
fn tokenize(spec: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut chars = spec.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            '\\' if quoted => {
                current.push(c);
                current.push(chars.next().ok_or("a `\\` ends the line")?);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err("unterminated `\"`".into());
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    Ok(tokens)
}

/// Decodes a `"..."` value with `\n \t \r \0 \\ \" \xNN` escapes into bytes.
fn parse_quoted(key: &str, value: &str) -> Result<Vec<u8>, String> {
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|_| value.len() >= 2)
        .ok_or_else(|| format!("`{key}` takes a double-quoted value, e.g. {key}=\"hi\\n\""))?;
    let mut out = Vec::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('r') => out.push(b'\r'),
            Some('0') => out.push(0),
            Some('\\') => out.push(b'\\'),
            Some('"') => out.push(b'"'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let byte = u8::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 2)
                    .ok_or_else(|| format!("`{key}`: `\\x{hex}` needs two hex digits"))?;
                out.push(byte);
            }
            other => {
                return Err(format!(
                    "`{key}`: unknown escape `\\{}`",
                    other.unwrap_or(' ')
                ))
            }
        }
    }
    Ok(out)
}

/// Decodes plain hex (an even number of hex digits, nothing else), independently of the runner's
/// own parser.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Parses what follows `# args:` into `--flag value` pairs.
fn parse_args(spec: &str) -> Result<Vec<String>, String> {
    let words: Vec<String> = spec.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        return Err("`# args:` is empty".into());
    }
    for pair in words.chunks(2) {
        let flag = pair[0].as_str();
        if !ALLOWED_FLAGS.contains(&flag) {
            return Err(format!(
                "`{flag}` is not allowed in `# args:`; use {}",
                ALLOWED_FLAGS.join(" ")
            ));
        }
        if pair.len() < 2 || pair[1].starts_with("--") {
            return Err(format!("`{flag}` needs a value"));
        }
    }
    Ok(words)
}

/// Applies `# args:` flags to library options, as the CLI would. Returns the options and the input.
fn library_options(args: &[String]) -> Result<(RunOptions, Vec<u8>), String> {
    let mut options = RunOptions::default();
    let mut registers = InitialRegisters::default();
    let mut input = Vec::new();
    for pair in args.chunks(2) {
        let (flag, value) = (pair[0].as_str(), pair[1].as_str());
        let bad = |e: String| format!("{flag} {value}: {e}");
        match flag {
            "--timeout" => {
                options.limits.timeout =
                    bytejail::units::parse_duration(value).map_err(|e| bad(e.to_string()))?
            }
            "--max-output" => {
                options.limits.max_output =
                    bytejail::units::parse_size(value).map_err(|e| bad(e.to_string()))?
            }
            "--stack" => {
                options.limits.stack =
                    bytejail::units::parse_size(value).map_err(|e| bad(e.to_string()))?
            }
            "--scratch" => {
                options.limits.scratch =
                    bytejail::units::parse_size(value).map_err(|e| bad(e.to_string()))?
            }
            "--reg" => registers
                .set_from_arg(value)
                .map_err(|e| bad(e.to_string()))?,
            "--input-hex" => {
                input = bytejail::load::parse_hex(value, "--input-hex")
                    .map_err(|e| bad(e.to_string()))?
            }
            "--entry" => {
                let entry = bytejail::abi::parse_u64(value)
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| bad("not a decimal or 0x-hex offset".into()))?;
                options.entry = entry;
            }
            _ => return Err(format!("`{flag}` is not allowed in `# args:`")),
        }
    }
    options.registers = registers;
    Ok((options, input))
}

// ---------------------------------------------------------------------------------------------
// Loading the samples.
// ---------------------------------------------------------------------------------------------

struct Sample {
    name: String,
    path: PathBuf,
    header: Header,
    options: RunOptions,
    input: Vec<u8>,
}

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-samples")
}

/// Every sample, sorted by name. Panics listing every malformed header, or if there are too few.
fn load_samples() -> Vec<Sample> {
    let dir = samples_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "s"))
        .collect();
    paths.sort();
    let mut samples = Vec::new();
    let mut malformed = Vec::new();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|text| parse_header(&text))
            .and_then(|header| {
                let (options, input) = library_options(&header.args)?;
                Ok((header, options, input))
            });
        match parsed {
            Ok((header, options, input)) => samples.push(Sample {
                name,
                path,
                header,
                options,
                input,
            }),
            Err(e) => malformed.push(format!("  {name}: {e}")),
        }
    }
    assert!(
        malformed.is_empty(),
        "{} sample header(s) malformed (format: guest-samples/README.md):\n{}",
        malformed.len(),
        malformed.join("\n")
    );
    assert!(
        samples.len() >= MIN_SAMPLES,
        "{} has {} samples; at least {MIN_SAMPLES} are required",
        dir.display(),
        samples.len()
    );
    samples
}

// ---------------------------------------------------------------------------------------------
// What a run reported, from either path, and the comparison.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct ObservedFault {
    address: u64,
    code_offset: Option<u64>,
    instruction: Option<String>,
}

/// A report, normalised from a library `Report` or a CLI JSON object.
#[derive(Debug, Default)]
struct Observed {
    kind: String,
    exit_code: Option<i64>,
    signal: Option<String>,
    /// When returned: every general register and rflags.
    registers: BTreeMap<String, u64>,
    fault: Option<ObservedFault>,
    output: Vec<u8>,
    output_truncated: bool,
}

impl Observed {
    fn from_report(report: &Report) -> Observed {
        let mut observed = Observed {
            output: report.output.clone(),
            output_truncated: report.output_truncated,
            ..Observed::default()
        };
        observed.kind = match &report.outcome {
            Outcome::Returned(regs) => {
                for name in GPR_NAMES {
                    let reg = Gpr::from_str(name).expect("GPR_NAMES parse");
                    observed.registers.insert(name.to_string(), regs.get(reg));
                }
                observed.registers.insert("rflags".into(), regs.rflags);
                "returned"
            }
            Outcome::Exited(code) => {
                observed.exit_code = Some(i64::from(*code));
                "exited"
            }
            Outcome::Crashed { signal, fault } => {
                observed.signal = Some(match Signal::try_from(*signal) {
                    Ok(sig) => sig.as_str().to_string(),
                    Err(_) => format!("signal {signal}"),
                });
                observed.fault = fault.as_ref().map(|f| ObservedFault {
                    address: f.address,
                    code_offset: f.code_offset,
                    instruction: f.instruction.clone(),
                });
                "crashed"
            }
            Outcome::SyscallViolation => "syscall_violation",
            Outcome::Timeout => "timeout",
            Outcome::OutputLimit => "output_limit",
            other => other.kind(),
        }
        .to_string();
        observed
    }

    /// Reads a `run --json` object, adding every schema problem to `problems`.
    fn from_json(json: &Value, problems: &mut Vec<String>) -> Observed {
        let mut observed = Observed::default();
        let Some(obj) = json.as_object() else {
            problems.push(format!("stdout is JSON but not an object: {json}"));
            return observed;
        };
        let mut field = |name: &str| {
            let value = obj.get(name);
            if value.is_none() {
                problems.push(format!("JSON has no `{name}`"));
            }
            value
        };
        let as_u64 = |name: &str, v: Option<&Value>, problems: &mut Vec<String>| {
            let n = v.and_then(Value::as_u64);
            if let (Some(v), None) = (v, n) {
                problems.push(format!("JSON `{name}` is not a u64: {v}"));
            }
            n
        };
        observed.kind = field("outcome")
            .and_then(Value::as_str)
            .unwrap_or("<missing>")
            .to_string();
        let output_hex = field("output_hex")
            .and_then(Value::as_str)
            .map(str::to_string);
        let output_text = obj.get("output_text").cloned();
        let truncated = field("output_truncated").and_then(Value::as_bool);
        let timings = ["wall_ns", "user_ns", "sys_ns"].map(|name| (name, obj.get(name).cloned()));
        match observed.kind.as_str() {
            "returned" => {
                let rax = obj.get("rax").cloned();
                match obj.get("registers").and_then(Value::as_object) {
                    None => problems.push("returned, but JSON has no `registers` object".into()),
                    Some(regs) => {
                        for name in GPR_NAMES.iter().chain(&["rflags"]) {
                            if let Some(v) = as_u64(name, regs.get(*name), problems) {
                                observed.registers.insert(name.to_string(), v);
                            } else if regs.get(*name).is_none() {
                                problems.push(format!("JSON `registers` has no `{name}`"));
                            }
                        }
                    }
                }
                match as_u64("rax", rax.as_ref(), problems) {
                    None if rax.is_none() => {
                        problems.push("returned, but JSON has no `rax`".into())
                    }
                    Some(rax) if observed.registers.get("rax").is_some_and(|r| *r != rax) => {
                        problems.push(format!(
                            "JSON `rax` {rax} differs from `registers.rax` {}",
                            observed.registers["rax"]
                        ))
                    }
                    _ => {}
                }
            }
            "exited" => {
                observed.exit_code = obj.get("exit_code").and_then(Value::as_i64);
                if observed.exit_code.is_none() {
                    problems.push("exited, but JSON has no integer `exit_code`".into());
                }
            }
            "crashed" => {
                observed.signal = obj
                    .get("signal")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if observed.signal.is_none() {
                    problems.push("crashed, but JSON has no string `signal`".into());
                }
                match obj.get("fault") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(fault)) => {
                        let address = as_u64("fault.address", fault.get("address"), problems);
                        if fault.get("address").is_none() {
                            problems.push("JSON `fault` has no `address`".into());
                        }
                        let code_offset = match fault.get("code_offset") {
                            None => {
                                problems.push(
                                    "JSON `fault` has no `code_offset` (null is fine)".into(),
                                );
                                None
                            }
                            Some(Value::Null) => None,
                            v => as_u64("fault.code_offset", v, problems),
                        };
                        let instruction = match fault.get("instruction") {
                            None | Some(Value::Null) => None,
                            Some(Value::String(s)) => Some(s.clone()),
                            Some(other) => {
                                problems.push(format!(
                                    "JSON `fault.instruction` is not a string: {other}"
                                ));
                                None
                            }
                        };
                        observed.fault = Some(ObservedFault {
                            address: address.unwrap_or(u64::MAX),
                            code_offset,
                            instruction,
                        });
                    }
                    Some(other) => problems.push(format!("JSON `fault` is not an object: {other}")),
                }
            }
            "syscall_violation" | "timeout" | "output_limit" => {}
            other => problems.push(format!(
                "JSON `outcome` {other:?} is not a documented outcome"
            )),
        }
        if let Some(hex) = output_hex {
            match decode_hex(&hex) {
                Some(bytes) => observed.output = bytes,
                None => problems.push(format!("JSON `output_hex` is not plain hex: {hex:.80}")),
            }
        }
        match (std::str::from_utf8(&observed.output), output_text) {
            (Ok(text), Some(Value::String(got))) if got != text => problems.push(format!(
                "JSON `output_text` {:?} differs from `output_hex`",
                shorten(got.as_bytes())
            )),
            (Ok(_), Some(Value::String(_))) => {}
            (Ok(_), _) => {
                problems.push("output is UTF-8, but JSON has no string `output_text`".into())
            }
            (Err(_), Some(Value::String(_))) => {
                problems.push("output is not UTF-8, but JSON has `output_text`".into())
            }
            (Err(_), _) => {}
        }
        match truncated {
            Some(t) => observed.output_truncated = t,
            None if obj.contains_key("output_truncated") => {
                problems.push("JSON `output_truncated` is not a bool".into())
            }
            None => {}
        }
        for (name, value) in timings {
            if value.is_none() {
                problems.push(format!("JSON has no `{name}`"));
            } else {
                as_u64(name, value.as_ref(), problems);
            }
        }
        observed
    }

    /// One line for messages.
    fn summary(&self) -> String {
        let mut s = self.kind.clone();
        if let Some(code) = self.exit_code {
            s += &format!(" {code}");
        }
        if let Some(signal) = &self.signal {
            s += &format!(" {signal}");
        }
        if let Some(rax) = self.registers.get("rax") {
            s += &format!(" rax={rax} (0x{rax:x})");
        }
        if let Some(f) = &self.fault {
            s += &format!(
                " fault{{address=0x{:x} code_offset={} instruction={:?}}}",
                f.address,
                f.code_offset.map_or("none".into(), |o| format!("0x{o:x}")),
                f.instruction
            );
        }
        s += &format!(
            " output=\"{}\" ({} bytes{})",
            shorten(&self.output),
            self.output.len(),
            if self.output_truncated {
                ", truncated"
            } else {
                ""
            }
        );
        s
    }
}

/// The bytes escaped, cut to a readable length.
fn shorten(bytes: &[u8]) -> String {
    let escaped = bytes.escape_ascii().to_string();
    if escaped.len() > 120 {
        format!("{}...", &escaped[..120])
    } else {
        escaped
    }
}

/// Every way `got` differs from `expect`.
fn compare(expect: &Expectation, got: &Observed) -> Vec<String> {
    let mut problems = Vec::new();
    let want = expect.outcome.kind();
    if got.kind != want {
        problems.push(format!("outcome: expected {want}, got {}", got.kind));
        return problems;
    }
    match &expect.outcome {
        ExpectedOutcome::Exited(code) if got.exit_code != Some(i64::from(*code)) => problems.push(
            format!("exit code: expected {code}, got {:?}", got.exit_code),
        ),
        ExpectedOutcome::Crashed(name) if got.signal.as_deref() != Some(name.as_str()) => {
            problems.push(format!("signal: expected {name}, got {:?}", got.signal))
        }
        _ => {}
    }
    for (name, value) in &expect.registers {
        match got.registers.get(name) {
            Some(v) if v == value => {}
            Some(v) => problems.push(format!(
                "{name}: expected {value} (0x{value:x}), got {v} (0x{v:x})"
            )),
            None => problems.push(format!("{name}: expected {value}, not reported")),
        }
    }
    if let Some(output) = &expect.output {
        if &got.output != output {
            problems.push(format!(
                "output: expected \"{}\", got \"{}\"",
                shorten(output),
                shorten(&got.output)
            ));
        }
    }
    if let Some(len) = expect.output_len {
        if got.output.len() != len {
            problems.push(format!(
                "output length: expected {len}, got {}",
                got.output.len()
            ));
        }
    }
    let limit = expect.outcome == ExpectedOutcome::OutputLimit;
    if got.output_truncated != limit {
        problems.push(format!(
            "output_truncated: expected {limit} (true exactly for output_limit), got {}",
            got.output_truncated
        ));
    }
    let wants_fault =
        expect.code_offset.is_some() || expect.address.is_some() || expect.instruction.is_some();
    match &got.fault {
        None if wants_fault => problems.push("fault details expected, none reported".into()),
        None => {}
        Some(fault) => {
            if let Some(offset) = expect.code_offset {
                if fault.code_offset != offset {
                    let show = |o: Option<u64>| o.map_or("none".into(), |o| format!("0x{o:x}"));
                    problems.push(format!(
                        "code_offset: expected {}, got {}",
                        show(offset),
                        show(fault.code_offset)
                    ));
                }
            }
            if let Some(address) = expect.address {
                if fault.address != address {
                    problems.push(format!(
                        "fault address: expected 0x{address:x}, got 0x{:x}",
                        fault.address
                    ));
                }
            }
            if let Some(insn) = &expect.instruction {
                if fault.instruction.as_ref() != Some(insn) {
                    problems.push(format!(
                        "instruction: expected {insn:?}, got {:?}",
                        fault.instruction
                    ));
                }
            }
        }
    }
    problems
}

/// The documented `bytejail run` exit status for what the header expects, if it pins one.
fn expected_exit_status(expect: &Expectation, got: &Observed) -> Option<i32> {
    Some(match &expect.outcome {
        ExpectedOutcome::Returned => {
            let rax = expect
                .registers
                .iter()
                .find(|(name, _)| name == "rax")
                .map(|(_, v)| *v)
                .or_else(|| got.registers.get("rax").copied())?;
            (rax & 0xff) as i32
        }
        ExpectedOutcome::Exited(code) => code & 0xff,
        ExpectedOutcome::Crashed(name) => 128 + Signal::from_str(name).ok()? as i32,
        ExpectedOutcome::SyscallViolation => 159,
        ExpectedOutcome::Timeout | ExpectedOutcome::OutputLimit => 124,
    })
}

// ---------------------------------------------------------------------------------------------
// Running.
// ---------------------------------------------------------------------------------------------

/// Why a sample failed: every problem found, and a one-line summary of what the runner reported.
type Failure = (Vec<String>, String);

/// Runs `check` on every sample, `THREADS` at a time, and fails once listing every sample whose
/// check found problems.
fn check_all(path_name: &str, check: impl Fn(&Sample) -> Result<(), Failure> + Sync) {
    let samples = load_samples();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(sample) = samples.get(i) else { break };
                // A panic (in the runner or here) is one more failure, not the end of the list.
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| check(sample)))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err((vec![format!("panicked: {what}")], "no report".to_string()))
                    });
                if let Err((problems, got)) = result {
                    failures.lock().unwrap().push((i, problems, got));
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(i, _, _)| *i);
    if failures.is_empty() {
        return;
    }
    let mut message = format!(
        "{} of {} samples failed through the {path_name}:\n",
        failures.len(),
        samples.len()
    );
    for (i, problems, got) in &failures {
        let sample = &samples[*i];
        message += &format!("\n{} ({})\n", sample.name, sample.header.description);
        message += &format!("  expected: {}\n", sample.header.expect_line);
        if !sample.header.args.is_empty() {
            message += &format!("  args:     {}\n", sample.header.args.join(" "));
        }
        message += &format!("  got:      {got}\n");
        for problem in problems {
            message += &format!("  - {problem}\n");
        }
    }
    panic!("{message}");
}

fn run_library(sample: &Sample) -> Result<(), Failure> {
    let code = bytejail::load::load_path(&sample.path, None, sample.options.limits.max_code)
        .map_err(|e| (vec![format!("loading failed: {e}")], "no run".to_string()))?;
    let report = bytejail::run(&code, &sample.input, &sample.options).map_err(|e| {
        (
            vec![format!("bytejail::run failed: {e}")],
            "no report".to_string(),
        )
    })?;
    let observed = Observed::from_report(&report);
    let problems = compare(&sample.header.expect, &observed);
    if problems.is_empty() {
        Ok(())
    } else {
        Err((problems, observed.summary()))
    }
}

/// What a CLI process left behind.
struct CliRun {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs the CLI, killing it if it outlives `deadline`.
fn run_cli_process(args: &[String], deadline: Duration) -> Result<CliRun, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bytejail"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start bytejail: {e}"))?;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stdout_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for bytejail: {e}"))?
        {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("bytejail still running after {deadline:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(CliRun {
        status,
        stdout: stdout_reader.join().unwrap(),
        stderr: stderr_reader.join().unwrap(),
    })
}

fn run_cli(sample: &Sample) -> Result<(), Failure> {
    let mut args = vec!["run".to_string(), "--json".to_string()];
    args.extend(sample.header.args.iter().cloned());
    args.push(sample.path.display().to_string());
    let deadline = sample.options.limits.timeout + CLI_SLACK;
    let run = run_cli_process(&args, deadline).map_err(|e| (vec![e], "no run".to_string()))?;
    let stderr = String::from_utf8_lossy(&run.stderr).trim().to_string();
    let json: Value = match serde_json::from_slice(&run.stdout) {
        Ok(json) => json,
        Err(e) => {
            let problem = format!(
                "stdout is not one JSON object ({e}); exit status {:?}; stdout {:?}; stderr {:?}",
                run.status,
                shorten(&run.stdout),
                stderr
            );
            return Err((vec![problem], "no report".to_string()));
        }
    };
    let mut problems = Vec::new();
    let observed = Observed::from_json(&json, &mut problems);
    problems.extend(compare(&sample.header.expect, &observed));
    match (
        run.status.code(),
        expected_exit_status(&sample.header.expect, &observed),
    ) {
        (None, _) => problems.push(format!("bytejail itself died: {:?}", run.status)),
        (Some(got), Some(want)) if got != want => problems.push(format!(
            "exit status: expected {want}, got {got} (stderr: {stderr:?})"
        )),
        _ => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err((problems, observed.summary()))
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn sample_headers_are_well_formed() {
    let samples = load_samples();
    assert!(samples.len() >= MIN_SAMPLES);
    assert!(
        samples.iter().any(|s| s.name == "hello.s"),
        "guest-samples/hello.s (the README's showcase) is missing"
    );
    // Every outcome is covered.
    for kind in [
        "returned",
        "exited",
        "crashed",
        "syscall_violation",
        "timeout",
        "output_limit",
    ] {
        assert!(
            samples
                .iter()
                .any(|s| s.header.expect.outcome.kind() == kind),
            "no sample expects `{kind}`"
        );
    }
}

#[test]
fn header_parser_rejects_malformed_headers() {
    let good = "# says hi\n# expect: returned rax=0x2a output=\"a \\\"b\\\"\\n\\x00\"\n# args: --reg rbx=1 --timeout 300ms\n# more words\nret\n";
    let header = parse_header(good).expect("a good header parses");
    assert_eq!(header.description, "says hi");
    assert_eq!(header.expect.registers, vec![("rax".to_string(), 42)]);
    assert_eq!(header.expect.output.as_deref(), Some(&b"a \"b\"\n\0"[..]));
    assert_eq!(header.args, ["--reg", "rbx=1", "--timeout", "300ms"]);
    let crashed = parse_header(
        "# d\n# expect: crashed SIGSEGV code_offset=none address=0 instruction=\"mov qword ptr [rax],1\"\n",
    )
    .expect("a crash header parses");
    assert_eq!(crashed.expect.code_offset, Some(None));
    assert_eq!(
        crashed.expect.instruction.as_deref(),
        Some("mov qword ptr [rax],1")
    );

    let bad = [
        ("", "no header"),
        ("ret\n", "no header"),
        ("# expect: returned\n", "description first"),
        ("# d\nret\n", "no expect line"),
        ("# d\n# expect:\n", "no outcome"),
        ("# d\n# expect: finished\n", "unknown outcome"),
        ("# d\n# expect: exited\n", "exited without a code"),
        ("# d\n# expect: exited three\n", "exit code not a number"),
        ("# d\n# expect: crashed\n", "crashed without a signal"),
        ("# d\n# expect: crashed SIGNOPE\n", "not a signal"),
        ("# d\n# expect: returned rax=4x2\n", "bad number"),
        ("# d\n# expect: returned rsx=1\n", "unknown register"),
        ("# d\n# expect: returned colour=blue\n", "unknown key"),
        ("# d\n# expect: returned rax=1 rax=2\n", "key twice"),
        (
            "# d\n# expect: exited 0 rax=1\n",
            "register without returned",
        ),
        (
            "# d\n# expect: returned code_offset=0x3\n",
            "fault key without crashed",
        ),
        ("# d\n# expect: returned output=hi\n", "unquoted output"),
        (
            "# d\n# expect: returned output=\"hi\n",
            "unterminated quote",
        ),
        ("# d\n# expect: returned output=\"\\q\"\n", "unknown escape"),
        (
            "# d\n# expect: returned output=\"\\x4\"\n",
            "short \\x escape",
        ),
        (
            "# d\n# expect: returned output=\"a\" output_hex=61\n",
            "output twice",
        ),
        ("# d\n# expect: returned output_hex=6\n", "odd output_hex"),
        (
            "# d\n# expect: returned\n# expect: returned\n",
            "two expect lines",
        ),
        (
            "# d\n# expect: returned\n# args: --hex c3\n",
            "flag not allowed",
        ),
        (
            "# d\n# expect: returned\n# args: --timeout\n",
            "flag without value",
        ),
        ("# d\n# expect: returned\n# args:\n", "empty args"),
        (
            "# d\n# expect: returned\n# args: --stack 1 # args: --stack 2\n",
            "stray words in args",
        ),
        (
            "# d\n\n# expect: returned\nret\n",
            "expect after the header",
        ),
    ];
    for (text, why) in bad {
        assert!(
            parse_header(text).is_err(),
            "{why}: header {text:?} should be rejected"
        );
    }
    assert!(
        library_options(&["--timeout".into(), "soon".into()]).is_err(),
        "a bad duration in `# args:` should be rejected"
    );
}

#[test]
fn samples_through_library() {
    check_all("library", run_library);
}

#[test]
fn samples_through_cli() {
    check_all("CLI (bytejail run --json)", run_cli);
}
