//! The report's JSON Schema: `docs/report.schema.json` is what `bytejail::report::json_schema`
//! generates today, and real `bytejail run --json` and `bytejail batch` output validates
//! against it under an independent validator (python3-jsonschema).
#![cfg(feature = "schema")]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

const BYTEJAIL: &str = env!("CARGO_BIN_EXE_bytejail");

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/report.schema.json")
}

fn generated() -> String {
    let mut text = serde_json::to_string_pretty(&bytejail::report::json_schema()).unwrap();
    text.push('\n');
    text
}

#[test]
fn checked_in_schema_is_current() {
    let path = schema_path();
    let fresh = generated();
    if std::env::var_os("BYTEJAIL_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "docs/report.schema.json is stale; regenerate it with \
         `BYTEJAIL_BLESS=1 cargo test --release --test schema`"
    );
}

/// One guest per outcome the CLI can show without special setup, as `run` arguments.
const CASES: &[(&str, &[&str])] = &[
    ("returned", &["--hex", "b0 2a c3"]),
    // write(1, "hi\n", 3) from the stack, then return: output_text present.
    (
        "returned",
        &[
            "--hex",
            "68 68 69 0a 00 bf 01 00 00 00 48 89 e6 ba 03 00 00 00 b8 01 00 00 00 0f 05 58 c3",
        ],
    ),
    // Output that is not UTF-8: no output_text.
    (
        "returned",
        &[
            "--hex",
            "68 ff fe 00 00 bf 01 00 00 00 48 89 e6 ba 02 00 00 00 b8 01 00 00 00 0f 05 58 c3",
        ],
    ),
    ("exited", &["--hex", "bf 03 00 00 00 b8 3c 00 00 00 0f 05"]),
    ("crashed", &["--hex", "48 31 c0 48 c7 00 01 00 00 00"]),
    ("crashed", &["--hex", "0f 0b"]),
    ("syscall_violation", &["--hex", "b8 27 00 00 00 0f 05"]),
    (
        "syscall_violation",
        &["--no-diagnose", "--hex", "b8 27 00 00 00 0f 05"],
    ),
    ("timeout", &["--timeout", "100ms", "--hex", "eb fe"]),
    // write(1, scratch, 64) forever with a 16-byte limit.
    (
        "output_limit",
        &[
            "--max-output",
            "16",
            "--hex",
            "48 89 d6 bf 01 00 00 00 ba 40 00 00 00 b8 01 00 00 00 0f 05 eb ed",
        ],
    ),
];

/// `bytejail run --json` for each case, parsed, with the outcome it must show.
fn real_reports() -> Vec<(&'static str, Value)> {
    CASES
        .iter()
        .map(|(outcome, args)| {
            let out = Command::new(BYTEJAIL)
                .args(["run", "--json"])
                .args(*args)
                .output()
                .unwrap();
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "run {args:?}: {e}: {}\nstatus {}, stderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            assert_eq!(report["outcome"], *outcome, "run {args:?}: {report}");
            (*outcome, report)
        })
        .collect()
}

/// `bytejail batch` result lines for a few of the cases, without their `id`.
fn real_batch_lines() -> Vec<Value> {
    let jobs = "{\"id\": 1, \"code_hex\": \"b02ac3\"}\n\
                {\"id\": 2, \"code_hex\": \"b827000000 0f05\"}\n\
                {\"id\": 3, \"code_hex\": \"4831c048c70001000000\"}\n";
    let mut child = Command::new(BYTEJAIL)
        .args(["batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(jobs.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut value: Value = serde_json::from_str(line).unwrap();
            assert!(value.get("error").is_none(), "batch refused a job: {line}");
            value.as_object_mut().unwrap().remove("id");
            value
        })
        .collect();
    assert_eq!(lines.len(), 3);
    lines
}

/// A python3 with `jsonschema` (Draft 2020-12 needs 4.0 or later), or `None` after one
/// visible line.
fn python() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import jsonschema; jsonschema.Draft202012Validator"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn real_output_validates_against_the_schema() {
    let Some(python) = python() else {
        let _ = writeln!(
            std::io::stderr(),
            "python3-jsonschema not found: skipping 1 schema validation test \
             (apt-get install python3-jsonschema)"
        );
        return;
    };
    let mut documents: Vec<Value> = real_reports().into_iter().map(|(_, r)| r).collect();
    documents.extend(real_batch_lines());
    // Twins: documents the schema must refuse, so a schema that accepts anything fails here.
    let returned = documents[0].clone();
    let mut no_version = returned.clone();
    no_version.as_object_mut().unwrap().remove("schema_version");
    let mut other_version = returned.clone();
    other_version["schema_version"] = 2.into();
    let mut no_registers = returned.clone();
    no_registers.as_object_mut().unwrap().remove("registers");
    let mut unknown_outcome = returned.clone();
    unknown_outcome["outcome"] = "vanished".into();
    let mut negative_wall = returned;
    negative_wall["wall_ns"] = (-1).into();
    let refused = [
        no_version,
        other_version,
        no_registers,
        unknown_outcome,
        negative_wall,
    ];

    let script = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
for line in sys.stdin:
    errors = list(validator.iter_errors(json.loads(line)))
    print("ok" if not errors else "invalid: " + errors[0].message)
"#;
    let input: String = documents
        .iter()
        .chain(&refused)
        .map(|d| format!("{d}\n"))
        .collect();
    let mut child = Command::new(python)
        .args(["-c", script])
        .arg(schema_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(verdicts.len(), documents.len() + refused.len());
    for (document, verdict) in documents.iter().zip(&verdicts) {
        assert_eq!(verdict, "ok", "{document}");
    }
    for (document, verdict) in refused.iter().zip(&verdicts[documents.len()..]) {
        assert!(verdict.starts_with("invalid"), "accepted: {document}");
    }
}

/// Without a validator, at least: every key the schema requires of an object is in each real
/// report, and every key a real report has is one the schema names.
#[test]
fn real_output_has_exactly_the_keys_the_schema_names() {
    let schema = bytejail::report::json_schema();
    let text = schema.to_string();
    for (outcome, report) in real_reports() {
        for key in report.as_object().unwrap().keys() {
            assert!(
                text.contains(&format!("\"{key}\"")),
                "{outcome}: key {key} is not in the schema"
            );
        }
        for key in [
            "schema_version",
            "outcome",
            "output_hex",
            "output_truncated",
        ] {
            assert!(report.get(key).is_some(), "{outcome}: no {key}: {report}");
        }
        let required = schema["required"].as_array().unwrap();
        for key in required {
            assert!(
                report.get(key.as_str().unwrap()).is_some(),
                "{outcome}: no required {key}: {report}"
            );
        }
    }
}
