//! `bytejail batch` as a long-lived process on pipes: it answers each line while the next is
//! not yet written, starts job threads and zygotes as lines arrive (`--jobs 1000` answers at
//! once), exits 0 / 1 / 2 as documented, and checks every field of a job line against exactly
//! the bounds of the matching `bytejail run` flag.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bytejail");

/// `mov al, N; ret`.
fn returns(n: u8) -> String {
    format!("b0 {n:02x} c3")
}

#[test]
fn a_piped_batch_answers_each_line_while_stdin_stays_open() {
    for args in [
        &[][..],
        &["--ordered"][..],
        &["--jobs", "1"][..],
        &["--reuse", "same-code"][..],
    ] {
        let mut batch = common::Batch::start(args);
        let mut latencies = Vec::new();
        for i in 0..8u8 {
            let line = format!(
                "{{\"id\": {i}, \"code_hex\": \"{}\", \"group\": \"g\"}}",
                returns(i * 5)
            );
            let (answer, took) = batch.ask(&line);
            assert_eq!(answer["id"], i, "{args:?}: {answer}");
            assert_eq!(answer["outcome"], "returned", "{args:?}: {answer}");
            assert_eq!(answer["rax"], i * 5, "{args:?}: {answer}");
            latencies.push(took);
        }
        println!("batch {args:?}: answers after {latencies:?}");
        let (status, stderr) = batch.finish();
        assert_eq!(status, 0, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("bytejail: 8 jobs: 8 returned in "),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn many_jobs_answer_the_first_line_at_once_and_start_what_they_need() {
    let mut batch = common::Batch::start(&["--jobs", "1000"]);
    let pid = batch.child.id();
    let (answer, took) = batch.ask(&format!(
        "{{\"id\": \"first\", \"code_hex\": \"{}\"}}",
        returns(42)
    ));
    println!("--jobs 1000: first answer after {took:?}");
    assert_eq!(answer["rax"], 42, "{answer}");
    // One line came, so one job thread with one zygote serves it: no thousand zygotes
    // waiting. (Its workers are reaped before the answer is written.)
    let children = common::children_of(pid);
    assert!(
        children.len() <= 2,
        "bytejail batch --jobs 1000 has {} children after one line: {children:?}",
        children.len()
    );
    let (status, stderr) = batch.finish();
    assert_eq!(status, 0, "{stderr}");
}

/// Runs `bytejail batch ARGS` on `input`: (status, result lines, stderr).
fn batch_of(args: &[&str], input: &str) -> (i32, Vec<Value>, String) {
    let run = common::batch_of(args, input);
    (run.status, run.results, run.stderr)
}

/// [`common::batch_through`] as (status, result lines, stderr).
fn batch_through(command: Command, input: &str) -> (i32, Vec<Value>, String) {
    let run = common::batch_through(command, input);
    (run.status, run.results, run.stderr)
}

#[test]
fn exit_status_says_whether_every_line_ran() {
    // Whatever the guests do, every line ran: 0.
    let ran = [
        format!("{{\"id\": 1, \"code_hex\": \"{}\"}}", returns(7)),
        // ud2: crashed.
        "{\"id\": 2, \"code_hex\": \"0f 0b\"}".to_string(),
        // jmp $: timeout.
        "{\"id\": 3, \"code_hex\": \"eb fe\", \"timeout_ms\": 50}".to_string(),
        // getpid: syscall violation.
        "{\"id\": 4, \"code_hex\": \"b8 27 00 00 00 0f 05\"}".to_string(),
    ];
    let (status, results, stderr) = batch_of(&["--ordered", "-"], &(ran.join("\n") + "\n"));
    assert_eq!(status, 0, "{stderr}");
    let outcomes: Vec<&str> = results
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["returned", "crashed", "timeout", "syscall_violation"]
    );

    // One bad line among good ones: 1, and every other line still has its result.
    for bad in [
        "{\"id\": \"bad\", \"code_hex\": ",
        "{\"id\": \"bad\", \"code_hex\": \"zz\"}",
        "{\"id\": \"bad\", \"code_path\": \"/nonexistent/guest.s\"}",
        "{\"id\": \"bad\", \"code_hex\": \"c3\", \"max_output\": 18446744073709551615}",
    ] {
        let input = format!("{}\n{bad}\n{}\n", ran[0], ran[0]);
        let (status, results, stderr) = batch_of(&["--ordered", "-"], &input);
        assert_eq!(status, 1, "{bad}: {stderr}");
        assert_eq!(results.len(), 3, "{bad}: {results:?}");
        assert_eq!(results[0]["rax"], 7);
        assert_eq!(results[1]["line"], 2, "{bad}: {}", results[1]);
        assert!(results[1]["error"].is_string(), "{}", results[1]);
        assert_eq!(results[2]["rax"], 7);
    }

    // Bad usage: 2, nothing on stdout, one line on stderr.
    for args in [
        &["--jobs", "0", "-"][..],
        &["--jobs", "1025", "-"][..],
        &["--reuse", "always", "-"][..],
        &["--max-output", "2GiB", "-"][..],
        &["/nonexistent/jobs.jsonl"][..],
    ] {
        let (status, results, stderr) = batch_of(args, "");
        assert_eq!(status, 2, "{args:?}: {stderr}");
        assert!(results.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("bytejail: "), "{args:?}: {stderr}");
    }
}

/// Whether `bytejail run --hex CODE ARGS` accepts its flags (it runs, whatever the guest does)
/// or refuses them as bad usage.
fn run_accepts(code: &str, args: &[&str]) -> bool {
    let output = Command::new(BIN)
        .args(["run", "--json", "--hex", code])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(2) => {
            assert!(output.stdout.is_empty(), "{args:?}: {stderr}");
            false
        }
        Some(_) => {
            let report: Value = serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|e| panic!("{args:?}: {e}: {stderr}"));
            assert!(report["outcome"].is_string(), "{args:?}: {report}");
            true
        }
        None => panic!("{args:?}: killed"),
    }
}

/// One field value to try in a job line, the equivalent `run` flags, and, when it must be
/// refused, what the error line must name (the field and its limit).
struct Case {
    field: &'static str,
    json: String,
    flags: Vec<String>,
    refused: Option<&'static str>,
}

fn case(field: &'static str, json: &str, flags: &[&str], refused: Option<&'static str>) -> Case {
    Case {
        field,
        json: json.to_string(),
        flags: flags.iter().map(|f| f.to_string()).collect(),
        refused,
    }
}

#[test]
fn job_fields_get_exactly_the_bounds_of_the_flags() {
    // The documented limits: 24 h, 1 GiB, the code's length, a register's 64 bits.
    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    const GIB: u64 = 1 << 30;
    let max = u64::MAX.to_string();
    let over_u64 = "18446744073709551616";
    let day = DAY_MS.to_string();
    let day_plus = (DAY_MS + 1).to_string();
    let gib = GIB.to_string();
    let gib_plus = (GIB + 1).to_string();
    let tera = 1_000_000_000_000u64.to_string();
    let cases = [
        // timeout_ms, as --timeout in ms.
        case(
            "timeout_ms",
            &day,
            &["--timeout", &format!("{day}ms")],
            None,
        ),
        case(
            "timeout_ms",
            &day_plus,
            &["--timeout", &format!("{day_plus}ms")],
            Some("86400000"),
        ),
        case(
            "timeout_ms",
            &max,
            &["--timeout", &format!("{max}ms")],
            Some("86400000"),
        ),
        case(
            "timeout_ms",
            "0",
            &["--timeout", "0ms"],
            Some("greater than 0"),
        ),
        case("timeout_ms", "1", &["--timeout", "1ms"], None),
        // max_output, as --max-output, as a number and as a size.
        case("max_output", &gib, &["--max-output", &gib], None),
        case("max_output", "0", &["--max-output", "0"], None),
        case(
            "max_output",
            &gib_plus,
            &["--max-output", &gib_plus],
            Some("1073741824"),
        ),
        case(
            "max_output",
            &tera,
            &["--max-output", &tera],
            Some("1073741824"),
        ),
        case(
            "max_output",
            &max,
            &["--max-output", &max],
            Some("1073741824"),
        ),
        case(
            "max_output",
            over_u64,
            &["--max-output", over_u64],
            Some("1073741824"),
        ),
        case("max_output", "\"1GiB\"", &["--max-output", "1GiB"], None),
        case(
            "max_output",
            "\"1025MiB\"",
            &["--max-output", "1025MiB"],
            Some("1073741824"),
        ),
        // entry, as --entry: inside the 6 bytes of code.
        case("entry", "5", &["--entry", "5"], None),
        case("entry", "\"0x3\"", &["--entry", "0x3"], None),
        case("entry", "6", &["--entry", "6"], Some("6 bytes")),
        case("entry", &max, &["--entry", &max], Some("6 bytes")),
        case("entry", over_u64, &["--entry", over_u64], Some("entry")),
        case("entry", "-1", &["--entry", "-1"], Some("entry")),
        // regs, as --reg: 64 bits.
        case(
            "regs",
            &format!("{{\"rbx\": {max}}}"),
            &["--reg", &format!("rbx={max}")],
            None,
        ),
        case(
            "regs",
            "{\"rbx\": \"0xffffffffffffffff\"}",
            &["--reg", "rbx=0xffffffffffffffff"],
            None,
        ),
        case(
            "regs",
            &format!("{{\"rbx\": {over_u64}}}"),
            &["--reg", &format!("rbx={over_u64}")],
            Some("rbx"),
        ),
        case(
            "regs",
            "{\"rbx\": \"0x10000000000000000\"}",
            &["--reg", "rbx=0x10000000000000000"],
            Some("rbx"),
        ),
        case("regs", "{\"rsp\": 0}", &["--reg", "rsp=0"], Some("rsp")),
        case("regs", "{\"rbx\": -1}", &["--reg", "rbx=-1"], Some("rbx")),
    ];
    // `mov al, 1; ret; mov al, 42; ret`: 6 bytes with a `ret` at 2 and 5.
    let code = "b0 01 c3 b0 2a c3";
    let lines: String = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{{\"id\": {i}, \"code_hex\": \"{code}\", \"{}\": {}}}\n{{\"id\": \"after {i}\", \"code_hex\": \"{code}\"}}\n",
                c.field, c.json
            )
        })
        .collect();
    let (status, results, stderr) = batch_of(&["--ordered", "-"], &lines);
    assert_eq!(status, 1, "{stderr}");
    assert_eq!(results.len(), 2 * cases.len());
    for (i, c) in cases.iter().enumerate() {
        let result = &results[2 * i];
        let after = &results[2 * i + 1];
        let what = format!("\"{}\": {} gave {result}", c.field, c.json);
        assert_eq!(result["id"], i, "{what}");
        // The batch goes on after a refused line.
        assert_eq!(after["outcome"], "returned", "{what}; then {after}");
        match c.refused {
            None => assert!(result["outcome"].is_string(), "{what}"),
            Some(limit) => {
                let error = result["error"].as_str().unwrap_or_else(|| panic!("{what}"));
                assert!(error.contains(c.field), "{what}: the error names the field");
                assert!(error.contains(limit), "{what}: the error names {limit:?}");
                assert_eq!(result["line"], 2 * i + 1, "{what}");
            }
        }
        // The command line draws the line in the same place.
        let flags: Vec<&str> = c.flags.iter().map(String::as_str).collect();
        assert_eq!(
            run_accepts(code, &flags),
            c.refused.is_none(),
            "{what}, but `run {flags:?}` disagrees"
        );
    }
}

#[test]
fn code_input_and_line_sizes_are_bounded_by_the_flags() {
    // With --max-code 8 and --max-input 16 a line may be 8 x (8 + 16) + 64 KiB bytes.
    let (max_code, max_input) = (8usize, 16usize);
    let max_line = 8 * (max_code + max_input) + (64 << 10);
    let hex = |n: usize| "c3".repeat(n);
    let job = |code: usize, input: usize| {
        format!(
            "{{\"id\": \"c{code} i{input}\", \"code_hex\": \"{}\", \"input_hex\": \"{}\"}}",
            hex(code),
            hex(input)
        )
    };
    // A valid job padded with spaces to `len` bytes.
    let padded = |len: usize| {
        let line = job(1, 0);
        format!("{line}{}", " ".repeat(len - line.len()))
    };
    let cases = [
        (job(max_code, 0), None),
        (job(max_code + 1, 0), Some("--max-code")),
        (job(4096, 0), Some("--max-code")),
        (job(1, max_input), None),
        (job(1, max_input + 1), Some("--max-input")),
        (job(1, 4096), Some("--max-input")),
        (padded(max_line), None),
        (padded(max_line + 1), Some("64KiB")),
        (padded(64 * max_line), Some("64KiB")),
    ];
    let good = job(1, 1);
    let lines: String = cases
        .iter()
        .map(|(line, _)| format!("{line}\n{good}\n"))
        .collect();
    let (status, results, stderr) = batch_of(
        &["--ordered", "--max-code", "8", "--max-input", "16", "-"],
        &lines,
    );
    assert_eq!(status, 1, "{stderr}");
    assert_eq!(results.len(), 2 * cases.len(), "{results:?}");
    for (i, (line, refused)) in cases.iter().enumerate() {
        let result = &results[2 * i];
        let what = format!("line {} ({} bytes) gave {result}", 2 * i + 1, line.len());
        assert_eq!(results[2 * i + 1]["outcome"], "returned", "{what}");
        match refused {
            None => assert_eq!(result["outcome"], "returned", "{what}"),
            Some(limit) => {
                let error = result["error"].as_str().unwrap_or_else(|| panic!("{what}"));
                assert!(error.contains(limit), "{what}: the error names {limit:?}");
                assert_eq!(result["line"], 2 * i + 1, "{what}");
            }
        }
    }
}

#[test]
fn a_code_file_rewritten_in_place_runs_its_new_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut batch = common::Batch::start(&["--jobs", "1"]);
    for (name, versions) in [
        ("guest.bin", [&[0xb0u8, 1, 0xc3][..], &[0xb0, 2, 0xc3][..]]),
        (
            "guest.s",
            [
                &b"\tmov $1, %eax\n\tret\n"[..],
                &b"\tmov $2, %eax\n\tret\n"[..],
            ],
        ),
    ] {
        let path = dir.path().join(name);
        let line = format!("{{\"id\": \"{name}\", \"code_path\": {:?}}}", path);
        for _ in 0..2 {
            // Same length, same inode, written within a clock tick of each other.
            for (i, code) in versions.iter().enumerate() {
                std::fs::write(&path, code).unwrap();
                let (answer, _) = batch.ask(&line);
                assert_eq!(answer["rax"], i + 1, "{name}, version {}: {answer}", i + 1);
            }
        }
    }
    let (status, stderr) = batch.finish();
    assert_eq!(status, 0, "{stderr}");
}

#[test]
fn a_batch_whose_reader_went_away_ends_without_waiting_for_stdin() {
    let mut child = Command::new(BIN)
        .args(["batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let line = format!("{{\"id\": 1, \"code_hex\": \"{}\"}}\n", returns(1));
    stdin.write_all(line.as_bytes()).unwrap();
    // The first answer, read on a thread that then closes stdout.
    let (tx, answer) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut answer = String::new();
        let _ = stdout.read_line(&mut answer);
        let _ = tx.send(answer);
    });
    let answer = answer
        .recv_timeout(common::ANSWER_BOUND)
        .unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("no first answer: {e}")
        });
    assert!(answer.contains("\"rax\":1"), "{answer}");
    // The client stops reading results (its end of stdout is closed by now) but keeps stdin
    // open and writes one more line.
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bytejail batch still waits for stdin after its stdout was closed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.code().is_some(), "{status:?}");
    drop(stdin);
}

#[test]
fn fields_keep_only_the_named_report_fields() {
    // write(1, rdi, 2) with rdi the input's address: outputs the input; then ret.
    let write_input = "b8 01 00 00 00 48 89 fe ba 02 00 00 00 bf 01 00 00 00 0f 05 c3";
    let lines = format!(
        "{{\"id\": 1, \"code_hex\": \"{write_input}\", \"input_hex\": \"6869\"}}\n\
         {{\"id\": 2, \"code_hex\": \"0f 0b\"}}\n\
         {{\"id\": 3, \"code_hex\": \"zz\"}}\n"
    );
    let (status, all, _) = batch_of(&["--ordered"], &lines);
    assert_eq!(status, 1);
    let (status, kept, stderr) =
        batch_of(&["--ordered", "--fields", "outcome,rax,output_hex"], &lines);
    assert_eq!(status, 1, "{stderr}");
    let names = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&kept[0]), ["id", "outcome", "rax", "output_hex"]);
    assert_eq!(kept[0]["output_hex"], "6869");
    assert_eq!(kept[0]["rax"], all[0]["rax"]);
    // A crash has no rax: the line simply lacks it.
    assert_eq!(names(&kept[1]), ["id", "outcome", "output_hex"]);
    assert_eq!(kept[1]["outcome"], "crashed");
    // Error lines are whole.
    assert_eq!(kept[2], all[2]);

    let (status, results, stderr) = batch_of(&["--fields", "outcome,colour"], &lines);
    assert_eq!(status, 2, "{stderr}");
    assert!(results.is_empty());
    assert!(
        stderr.contains("`colour` is not a report field"),
        "{stderr}"
    );
}

#[test]
fn one_job_at_a_time_writes_the_lines_several_write() {
    let mut lines = String::new();
    for i in 0..40u8 {
        let group = if i % 4 == 0 { "" } else { ", \"group\": \"g\"" };
        lines += &format!("{{\"id\": {i}, \"code_hex\": \"{}\"{group}}}\n", returns(i));
        if i == 20 {
            lines += "not json\n\n";
        }
    }
    for reuse in ["none", "same-code"] {
        let (one_status, one, _) = batch_of(&["--jobs", "1", "--reuse", reuse], &lines);
        let (two_status, two, _) =
            batch_of(&["--jobs", "2", "--ordered", "--reuse", reuse], &lines);
        assert_eq!((one_status, two_status), (1, 1));
        assert_eq!(one.len(), 41);
        assert_eq!(essence(&one), essence(&two), "--reuse {reuse}");
    }
}

/// `write(1, input, len); ret` with `len` in edx, as hex.
fn writes_input(len: u32) -> String {
    let len: String = len
        .to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("b80100000048 89fe ba{len} bf01000000 0f05 c3").replace(' ', "")
}

/// Lines whose results hold every byte value in `output_hex`, every ASCII character (the
/// control characters escaped) in `output_text`, and trivial returns.
fn pin_lines() -> String {
    let every: String = (0..=255u8).map(|b| format!("{b:02x}")).collect();
    let ascii: String = (0..=127u8).map(|b| format!("{b:02x}")).collect();
    let mut lines = String::new();
    for i in 0..24u8 {
        let (code, input) = match i % 3 {
            0 => (writes_input(256), every.as_str()),
            1 => (writes_input(128), ascii.as_str()),
            _ => (returns(i), ""),
        };
        lines +=
            &format!("{{\"id\": {i}, \"code_hex\": \"{code}\", \"input_hex\": \"{input}\"}}\n");
    }
    lines
}

/// A result without what differs run to run.
fn essence(results: &[Value]) -> Vec<Value> {
    results
        .iter()
        .map(|v| {
            let mut v = v.clone();
            for timing in ["wall_ns", "user_ns", "sys_ns", "max_rss_kib", "registers"] {
                v.as_object_mut().unwrap().remove(timing);
            }
            v
        })
        .collect()
}

#[test]
fn pin_auto_and_off_give_the_same_reports() {
    let lines = pin_lines();
    let mut seen = None;
    for jobs in ["1", "2", "3"] {
        for pin in ["auto", "off"] {
            let (status, results, stderr) =
                batch_of(&["--jobs", jobs, "--ordered", "--pin", pin], &lines);
            assert_eq!(status, 0, "--jobs {jobs} --pin {pin}: {stderr}");
            assert_eq!(results.len(), 24);
            let results = essence(&results);
            match &seen {
                None => seen = Some(results),
                Some(seen) => assert_eq!(seen, &results, "--jobs {jobs} --pin {pin}"),
            }
        }
    }
    let results = seen.unwrap();
    let every: Vec<u8> = (0..=255).collect();
    let every_hex: String = every.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(results[0]["output_hex"], every_hex.as_str());
    assert!(results[0].get("output_text").is_none(), "not UTF-8");
    let ascii: String = (0..=127u8).map(char::from).collect();
    assert_eq!(results[1]["output_text"], ascii.as_str());
    assert_eq!(results[2]["rax"], 2);
}

#[test]
fn pin_on_a_process_allowed_one_cpu_does_nothing_and_still_works() {
    // The first CPU this test may use, named to taskset.
    let cpus = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = cpus
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    let first = allowed.split([',', '-']).next().unwrap().to_string();
    if Command::new("taskset").arg("--version").output().is_err() {
        eprintln!("skipped: no taskset");
        return;
    }
    let lines = pin_lines();
    for jobs in ["1", "2"] {
        let mut taskset = Command::new("taskset");
        taskset.args([
            "-c",
            &first,
            BIN,
            "batch",
            "--jobs",
            jobs,
            "--ordered",
            "--pin",
            "auto",
        ]);
        let (status, results, stderr) = batch_through(taskset, &lines);
        assert_eq!(status, 0, "--jobs {jobs}: {stderr}");
        let (_, off, _) = batch_of(&["--jobs", jobs, "--ordered", "--pin", "off"], &lines);
        assert_eq!(
            essence(&results),
            essence(&off),
            "--jobs {jobs} on CPU {first}"
        );
    }
}

#[test]
fn stdout_file_is_the_opt_in_whose_reports_may_differ_from_a_fresh_runs() {
    // Writes 8192 bytes from 4100 bytes before the scratch's end (nothing mapped after it):
    // a pipe keeps 4096 of them (the page copied in part is dropped), a file all 4100, one
    // more than the output limit.
    let code = common::gas(
        "lea rsi, [rdx + rcx - 4100]\n mov edx, 8192\n mov edi, 1\n mov eax, 1\n syscall\n ret",
    );
    let hex: String = code.iter().map(|b| format!("{b:02x}")).collect();
    let lines: String = (0..3)
        .map(|i| format!("{{\"id\": {i}, \"code_hex\": \"{hex}\", \"group\": \"g\"}}\n"))
        .collect();
    let fresh = common::batch_of(&["--max-output", "4096", "-"], &lines);
    assert_eq!(fresh.results.len(), 3, "{}", fresh.stderr);
    for (stdout, outcome) in [("pipe", "returned"), ("file", "output_limit")] {
        let args = [
            "--reuse",
            "same-code",
            "--stdout",
            stdout,
            "--max-output",
            "4096",
            "-",
        ];
        let same = common::batch_of(&args, &lines);
        assert_eq!(same.status, 0, "{}", same.stderr);
        for (result, fresh) in same.results.iter().zip(&fresh.results) {
            assert_eq!(fresh["outcome"], "returned", "{fresh}");
            assert_eq!(fresh["rax"], 4096, "{fresh}");
            assert_eq!(result["outcome"], outcome, "--stdout {stdout}: {result}");
        }
        assert_eq!(same.results.len(), 3);
    }
}

/// Threads of process `pid` once it has a child (its worker), or `None` if it ended first.
fn threads_while_a_job_runs(child: &mut std::process::Child) -> Option<usize> {
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        if !common::children_of(pid).is_empty() {
            return std::fs::read_dir(format!("/proc/{pid}/task"))
                .ok()
                .map(|tasks| tasks.count());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// `bytejail batch < FILE` reads a regular file on stdin as it reads a FILE argument: the
/// same results, from where stdin stands, on the job's own thread (no reader thread: the
/// twin, stdin a pipe, has them); and a stdin that is also stdout is refused, as that FILE is.
#[test]
fn a_regular_file_on_stdin_is_read_as_a_file_argument() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.jsonl");
    let lines: Vec<String> = (1..=3u8)
        .map(|i| format!("{{\"id\": {i}, \"code_hex\": \"{}\"}}", returns(i)))
        .collect();
    std::fs::write(&jobs, lines.join("\n") + "\n").unwrap();
    let batch = |stdin: Stdio, stdout: Stdio, args: &[&str]| {
        let out = Command::new(BIN)
            .args(["batch", "--ordered", "-q"])
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let raxes: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["rax"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        (
            out.status.code(),
            raxes,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let open = || std::fs::File::open(&jobs).unwrap();
    let by_path = batch(Stdio::null(), Stdio::piped(), &[jobs.to_str().unwrap()]);
    assert_eq!(by_path, (Some(0), vec![1, 2, 3], String::new()));
    assert_eq!(batch(open().into(), Stdio::piped(), &[]), by_path);
    // From where stdin stands: past the first line.
    let mut rest = open();
    std::io::Seek::seek(
        &mut rest,
        std::io::SeekFrom::Start(lines[0].len() as u64 + 1),
    )
    .unwrap();
    assert_eq!(
        batch(rest.into(), Stdio::piped(), &[]),
        (Some(0), vec![2, 3], String::new())
    );

    // Results appended to the file stdin reads would come back as jobs: refused, nothing
    // ran, the file unchanged. The twin: the same file given by its path, refused alike.
    let before = std::fs::read(&jobs).unwrap();
    let append = || {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&jobs)
            .unwrap()
    };
    let (status, _, stderr) = batch(open().into(), append().into(), &[]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("standard input: the batch file is also standard output"),
        "{stderr}"
    );
    let (status, _, stderr) = batch(Stdio::null(), append().into(), &[jobs.to_str().unwrap()]);
    assert_eq!(status, Some(2), "{stderr}");
    assert_eq!(std::fs::read(&jobs).unwrap(), before);

    // One thread while a job runs with stdin a file; a pipe gets a reader thread and more.
    std::fs::write(
        &jobs,
        "{\"id\": 1, \"code_hex\": \"eb fe\", \"timeout_ms\": 2000}\n",
    )
    .unwrap();
    let spawn = |stdin: Stdio| {
        Command::new(BIN)
            .args(["batch", "--jobs", "1", "-q"])
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut from_file = spawn(open().into());
    let threads = threads_while_a_job_runs(&mut from_file);
    from_file.kill().unwrap();
    from_file.wait().unwrap();
    assert_eq!(threads, Some(1), "stdin a file");
    let mut from_pipe = spawn(Stdio::piped());
    let mut stdin = from_pipe.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&jobs).unwrap()).unwrap();
    let threads = threads_while_a_job_runs(&mut from_pipe);
    from_pipe.kill().unwrap();
    from_pipe.wait().unwrap();
    assert!(threads.is_some_and(|n| n > 1), "stdin a pipe: {threads:?}");
}
