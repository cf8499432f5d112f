//! Many jobs, one JSON line each: `bytejail batch`.
//!
//! A job line: `{"id": <any>, "code_hex": "..." | "code_path": "...", "input_hex": "...",
//! "timeout_ms": 2000, "max_output": 1048576, "regs": {"rbx": 5}, "entry": 0}`; only the code is
//! required, the rest defaults to the batch's options. A result line is `id` followed by exactly
//! the `run --json` report; a line that cannot be run gives `{"id", "line", "error"}` and the
//! batch goes on.
//!
//! Each job runs in its own fresh worker, forked by the batch's [`Zygote`]; `jobs` threads run
//! jobs at once. With [`Reuse::SameCode`] each thread keeps a [`SameCode`] worker and runs every job
//! with the same code (and worker options) as its last one in it. Results come in completion
//! order, or in input order with `ordered`.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::abi::RunOptions;
use crate::error::{Error, InputError};
use crate::load;
use crate::report::Report;
use crate::same_code::SameCode;
use crate::zygote::Zygote;

/// How a batch runs.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Defaults for every job (a job's own fields override timeout, output limit, registers
    /// and entry).
    pub defaults: RunOptions,
    /// Jobs run at once.
    pub jobs: usize,
    /// Results in input order instead of completion order.
    pub ordered: bool,
    /// Whether jobs with the same code share a worker.
    pub reuse: Reuse,
}

/// Worker reuse across the jobs of a batch (`--reuse`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Reuse {
    /// A fresh single-use worker per job.
    #[default]
    None,
    /// Consecutive jobs with the same code share a worker, each input from the same state.
    SameCode,
}

/// What a batch did: outcome counts, error lines, jobs in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub jobs: u64,
    pub errors: u64,
    /// Jobs by outcome kind (`returned`, `crashed`, ...).
    pub outcomes: BTreeMap<&'static str, u64>,
}

impl Summary {
    /// `12 jobs: 10 returned, 1 crashed, 1 error`.
    pub fn line(&self) -> String {
        let mut parts: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        if self.errors > 0 {
            parts.push(format!(
                "{} error{}",
                self.errors,
                if self.errors == 1 { "" } else { "s" }
            ));
        }
        let jobs = self.jobs + self.errors;
        format!(
            "{jobs} job{}: {}",
            if jobs == 1 { "" } else { "s" },
            if parts.is_empty() {
                "none".into()
            } else {
                parts.join(", ")
            }
        )
    }
}

/// One job line as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobLine {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    code_hex: Option<String>,
    #[serde(default)]
    code_path: Option<PathBuf>,
    #[serde(default)]
    input_hex: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    max_output: Option<usize>,
    #[serde(default)]
    regs: BTreeMap<String, Value>,
    #[serde(default)]
    entry: Option<usize>,
}

/// A job ready to run.
struct Job {
    code: Arc<Vec<u8>>,
    input: Vec<u8>,
    options: RunOptions,
}

/// Code loaded from `code_path`, by path: a grader's thousand lines naming one file assemble
/// it once.
#[derive(Default)]
struct CodeCache {
    by_path: Mutex<HashMap<PathBuf, Arc<Vec<u8>>>>,
}

impl CodeCache {
    fn load(&self, path: &PathBuf, max_code: usize) -> Result<Arc<Vec<u8>>, InputError> {
        if let Some(code) = self
            .by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Ok(code.clone());
        }
        let code = Arc::new(load::load_path(path, None, max_code)?);
        self.by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone(), code.clone());
        Ok(code)
    }
}

/// Parses one line into a job, or says why not (with the id when the line had one).
fn parse_job(
    text: &str,
    defaults: &RunOptions,
    cache: &CodeCache,
) -> Result<(Value, Job), (Value, String)> {
    let line: JobLine = serde_json::from_str(text).map_err(|e| {
        // Keep the id of a line that is JSON but not a valid job.
        let id = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(Value::Null);
        (id, format!("not a job: {e}"))
    })?;
    let id = line.id.clone();
    let fail = |e: String| (id.clone(), e);
    let mut options = defaults.clone();
    if let Some(ms) = line.timeout_ms {
        if ms == 0 {
            return Err(fail("timeout_ms must be greater than 0".into()));
        }
        options.limits.timeout = Duration::from_millis(ms);
    }
    if let Some(max) = line.max_output {
        options.limits.max_output = max;
    }
    if let Some(entry) = line.entry {
        options.entry = entry;
    }
    for (name, value) in &line.regs {
        let value = match value {
            Value::Number(n) => n.as_u64().map(|v| v.to_string()),
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
        .ok_or_else(|| {
            fail(format!(
                "regs.{name}: expected a number or a decimal/0x-hex string"
            ))
        })?;
        options
            .registers
            .set_from_arg(&format!("{name}={value}"))
            .map_err(|e| fail(format!("regs: {e}")))?;
    }
    let max_code = options.limits.max_code;
    let code = match (&line.code_hex, &line.code_path) {
        (Some(hex), None) => Arc::new(
            load::load_bytes(hex.as_bytes(), load::Format::Hex, "code_hex", max_code)
                .map_err(|e| fail(e.to_string()))?,
        ),
        (None, Some(path)) => cache
            .load(path, max_code)
            .map_err(|e| fail(e.to_string()))?,
        (Some(_), Some(_)) => return Err(fail("give code_hex or code_path, not both".into())),
        (None, None) => return Err(fail("no code: give code_hex or code_path".into())),
    };
    let input = match &line.input_hex {
        Some(hex) => load::parse_hex(hex, "input_hex").map_err(|e| fail(e.to_string()))?,
        None => Vec::new(),
    };
    Ok((
        id,
        Job {
            code,
            input,
            options,
        },
    ))
}

/// Runs one job: in the thread's same-code worker when reusing and the job fits it (else in a
/// new one, which replaces it), otherwise in a fresh worker.
fn run_job(
    job: &Job,
    zygote: &Zygote,
    reuse: Reuse,
    same: &mut Option<SameCode>,
) -> Result<Report, Error> {
    if reuse == Reuse::None {
        return zygote.run(&job.code, &job.input, &job.options);
    }
    let fits = |s: &SameCode| s.code() == job.code.as_slice() && s.fits(&job.options);
    if !same.as_ref().is_some_and(fits) {
        *same = None; // ends the old worker first
        *same = Some(SameCode::with_zygote(&job.code, &job.options, zygote)?);
    }
    let worker = same.as_mut().expect("set above");
    worker.run_with(&job.input, &job.options)
}

/// `{"id": ..., <report>}` on one line.
pub fn result_line(id: &Value, report: &Report) -> String {
    let mut obj = Map::new();
    obj.insert("id".into(), id.clone());
    if let Value::Object(fields) = report.to_json() {
        obj.extend(fields);
    }
    Value::Object(obj).to_string()
}

/// `{"id": ..., "line": n, "error": "..."}` on one line.
pub fn error_line(id: &Value, line: u64, error: &str) -> String {
    serde_json::json!({"id": id, "line": line, "error": error}).to_string()
}

/// What a worker thread hands back for one input line.
struct Done {
    seq: u64,
    text: String,
    outcome: Option<&'static str>,
}

/// Runs every job line of `input`, writing one result line per job line to `out`.
/// `progress` is called after each result with the summary so far. Blank lines are skipped.
/// `Err` only for the runner itself: unreadable input, an unwritable `out`, no zygote.
pub fn run_batch(
    input: impl BufRead + Send,
    out: &mut dyn Write,
    config: &BatchConfig,
    progress: &mut dyn FnMut(&Summary),
) -> Result<Summary, Error> {
    // Every worker is forked by a zygote, one per job thread, started before the lines are
    // read: a zygote serves one fork at a time, and zygotes in separate processes fork in
    // parallel. A batch keeps its threads busy, so pre-forking (a pool) would only put a refill
    // pipeline between them and their zygote: each job asks for its own fresh worker.
    let zygotes = (0..config.jobs.max(1))
        .map(|_| Zygote::start())
        .collect::<Result<Vec<_>, _>>()?;
    let cache = CodeCache::default();
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, u64, String)>(config.jobs.max(1) * 4);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let mut summary = Summary::default();

    std::thread::scope(|scope| -> Result<(), Error> {
        // Workers: parse and run jobs.
        for zygote in &zygotes {
            let (job_rx, done_tx, cache) = (&job_rx, done_tx.clone(), &cache);
            let defaults = &config.defaults;
            let reuse = config.reuse;
            scope.spawn(move || {
                let mut same: Option<SameCode> = None;
                loop {
                    let next = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((seq, line_no, text)) = next else {
                        return;
                    };
                    let done = match parse_job(&text, defaults, cache) {
                        Ok((id, job)) => match run_job(&job, zygote, reuse, &mut same) {
                            Ok(report) => Done {
                                seq,
                                text: result_line(&id, &report),
                                outcome: Some(report.outcome.kind()),
                            },
                            Err(e) => Done {
                                seq,
                                text: error_line(&id, line_no, &e.to_string()),
                                outcome: None,
                            },
                        },
                        Err((id, e)) => Done {
                            seq,
                            text: error_line(&id, line_no, &e),
                            outcome: None,
                        },
                    };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);

        // Reader: feed lines; stops early if the workers are gone.
        let reader = scope.spawn(move || -> Result<(), Error> {
            let mut seq = 0;
            for (i, line) in input.lines().enumerate() {
                let line = line.map_err(|e| Error::io("reading the batch", e))?;
                if line.trim().is_empty() {
                    continue;
                }
                if job_tx.send((seq, i as u64 + 1, line)).is_err() {
                    break;
                }
                seq += 1;
            }
            Ok(())
        });

        // Writer: this thread.
        let mut pending: BTreeMap<u64, String> = BTreeMap::new();
        let mut next = 0u64;
        for done in done_rx {
            match done.outcome {
                Some(kind) => {
                    summary.jobs += 1;
                    *summary.outcomes.entry(kind).or_default() += 1;
                }
                None => summary.errors += 1,
            }
            if config.ordered {
                pending.insert(done.seq, done.text);
                while let Some(text) = pending.remove(&next) {
                    writeln!(out, "{text}").map_err(|e| Error::io("writing results", e))?;
                    next += 1;
                }
            } else {
                writeln!(out, "{}", done.text).map_err(|e| Error::io("writing results", e))?;
            }
            progress(&summary);
        }
        out.flush().map_err(|e| Error::io("writing results", e))?;
        reader.join().unwrap_or_else(|_| {
            Err(Error::io(
                "reading the batch",
                std::io::Error::other("reader panicked"),
            ))
        })
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &str, ordered: bool) -> (Vec<Value>, Summary) {
        run_reusing(lines, ordered, Reuse::None)
    }

    fn run_reusing(lines: &str, ordered: bool, reuse: Reuse) -> (Vec<Value>, Summary) {
        let config = BatchConfig {
            defaults: RunOptions::default(),
            jobs: 3,
            ordered,
            reuse,
        };
        let mut out = Vec::new();
        let summary = run_batch(lines.as_bytes(), &mut out, &config, &mut |_| {}).unwrap();
        let values = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (values, summary)
    }

    #[test]
    fn jobs_errors_and_order() {
        let lines = [
            r#"{"id": 1, "code_hex": "b0 2a c3"}"#,
            r#"{"id": "two", "code_hex": "48 89 d8 c3", "regs": {"rbx": 7}}"#,
            "",
            r#"{"id": 3, "code_hex": "zz"}"#,
            r#"not json"#,
            r#"{"id": [4], "code_hex": "31 c0 ff c0 0f 05 c3", "input_hex": "68 69", "timeout_ms": 500}"#,
            r#"{"id": 5, "code_hex": "c3", "colour": "red"}"#,
            r#"{"id": 6, "code_hex": "eb fe", "timeout_ms": 100}"#,
        ]
        .join("\n");
        let (values, summary) = run(&lines, true);
        assert_eq!(values.len(), 7, "one line per non-blank input line");
        let ids: Vec<&Value> = values.iter().map(|v| &v["id"]).collect();
        assert_eq!(
            ids,
            [
                &Value::from(1),
                &"two".into(),
                &3.into(),
                &Value::Null,
                &serde_json::json!([4]),
                &5.into(),
                &6.into()
            ]
        );
        assert_eq!(values[0]["rax"], 42);
        assert_eq!(values[1]["rax"], 7);
        assert!(
            values[2]["error"]
                .as_str()
                .unwrap()
                .contains("bad hex digit"),
            "{}",
            values[2]
        );
        assert_eq!(values[2]["line"], 4, "line numbers count blank lines");
        assert!(values[3]["error"]
            .as_str()
            .unwrap()
            .starts_with("not a job"));
        // write(rdi, ...) with rdi the input's address, no descriptor: EBADF, then ret.
        assert_eq!(values[4]["outcome"], "returned");
        assert_eq!(
            values[4]["rax"].as_u64(),
            Some(-(libc::EBADF as i64) as u64)
        );
        assert!(values[5]["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"));
        assert_eq!(values[6]["outcome"], "timeout");
        assert_eq!(summary.jobs, 4);
        assert_eq!(summary.errors, 3);
        assert_eq!(summary.outcomes.get("returned"), Some(&3));
        assert_eq!(summary.line(), "7 jobs: 3 returned, 1 timeout, 3 errors");
    }

    #[test]
    fn completion_order_still_gives_every_result() {
        let lines: String = (0..40)
            .map(|i| format!("{{\"id\": {i}, \"code_hex\": \"b0 {i:02x} c3\"}}\n"))
            .collect();
        let (values, summary) = run(&lines, false);
        let mut seen: Vec<u64> = values.iter().map(|v| v["id"].as_u64().unwrap()).collect();
        for v in &values {
            assert_eq!(v["rax"], v["id"], "{v}");
        }
        seen.sort();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        assert_eq!(summary.outcomes.get("returned"), Some(&40));
    }

    #[test]
    fn same_code_reuse_gives_the_results_of_fresh_workers() {
        // Returns the sum of the input bytes; input 0xff crashes. Another code in between.
        let sum = "31 c0 31 c9 48 39 f1 73 0c 0f b6 14 0f 48 01 d0 48 ff c1 eb ef \
                   80 3f ff 75 03 0f 0b 90 c3";
        let mut lines = Vec::new();
        for i in 0..30u32 {
            let input = match i {
                7 | 19 => "ff".to_string(),
                _ => format!("{:02x} {:02x} 01", i, i * 3 % 256),
            };
            lines.push(format!(
                r#"{{"id": {i}, "code_hex": "{sum}", "input_hex": "{input}"}}"#
            ));
            if i == 11 {
                lines.push(r#"{"id": "other", "code_hex": "b0 2a c3"}"#.to_string());
            }
        }
        let lines = lines.join("\n");
        let (fresh, fresh_summary) = run_reusing(&lines, true, Reuse::None);
        let (same, same_summary) = run_reusing(&lines, true, Reuse::SameCode);
        assert_eq!(same.len(), 31);
        let essence = |v: &Value| (v["id"].clone(), v["outcome"].clone(), v["rax"].clone());
        let fresh: Vec<_> = fresh.iter().map(essence).collect();
        let same: Vec<_> = same.iter().map(essence).collect();
        assert_eq!(same, fresh);
        assert_eq!(same_summary, fresh_summary);
        assert_eq!(
            same_summary.outcomes.get("crashed"),
            Some(&2),
            "{same_summary:?}"
        );
        assert_eq!(same[3].2, Value::from(3 + 9 + 1), "{:?}", same[3]);
    }
}
