//! Many jobs, one JSON line each: `bytejail batch`.
//!
//! A job line: `{"id": <any>, "code_hex": "..." | "code_path": "...", "input_hex": "...",
//! "timeout_ms": 2000, "max_output": 1048576, "regs": {"rbx": 5}, "entry": 0, "group": "s1"}`;
//! only the code is required, the rest defaults to the batch's options. A result line is `id`
//! followed by exactly the `run --json` report; a line that cannot be run gives
//! `{"id", "line", "error"}` and the batch goes on.
//!
//! A job's fields get exactly the bounds of the CLI's flags ([`crate::bounds`]): `timeout_ms`
//! as `--timeout` (more than 0, at most 24 h), `max_output` as `--max-output` (at most 1 GiB),
//! `entry` as `--entry` (inside the code), `regs` as `--reg`, the code and `input_hex` within
//! `--max-code` and `--max-input`. A value out of range is an error line naming the field and
//! the limit, never a wrapped number. A line itself may be at most [`max_line`] bytes.
//!
//! Results stream: each result line is written as soon as its job ends (with `ordered`, as soon
//! as it is next in input order), and the output is flushed whenever no further result is
//! ready, so a client that writes one line to a long-lived `bytejail batch -` and waits gets its
//! answer at once. Job threads, each with its own [`Zygote`], start as work arrives: one while
//! lines come one at a time, up to `jobs` while lines wait for a free thread. Each writes its
//! own results (under a lock); with `jobs` 1 the one job runs on the calling thread, which
//! writes the results as well. No thread is woken to hand a job's result on: the lines come
//! through a queue that wakes a side only when it waits. With several jobs the calling thread
//! reads the lines; with one, a reader thread does.
//!
//! With [`Pin::Auto`] each job thread keeps to a CPU of its own (and so do the zygote and
//! workers it forks, and a tracer process of its CPU's) when the process may use
//! enough CPUs; the reader is left to the scheduler.
//!
//! With [`Reuse::SameCode`] each thread keeps a [`SameCode`] worker and runs in it the next job
//! with the same code, worker options and `group`. A job without a `group` never shares a
//! worker: reuse is only ever within one submission, and the `group` says what one is.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::abi::RunOptions;
use crate::bounds;
use crate::error::{Error, InputError};
use crate::load;
use crate::report::Report;
use crate::same_code::SameCode;
use crate::zygote::Zygote;

/// How a batch runs. Built from [`BatchConfig::default`] and the `with_*` methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BatchConfig {
    /// Defaults for every job (a job's own fields override timeout, output limit, registers
    /// and entry).
    pub defaults: RunOptions,
    /// Most jobs run at once (job threads, each with its own zygote, started as needed).
    pub jobs: usize,
    /// Results in input order instead of completion order.
    pub ordered: bool,
    /// Whether consecutive jobs of one submission (same code, same `group`) share a worker.
    pub reuse: Reuse,
    /// The report fields a result line keeps (`--fields`), after its `id`; `None` for all of
    /// them. Error lines are whole whatever this says.
    pub fields: Option<ReportFields>,
    /// Whether each job thread keeps to a CPU of its own (`--pin`).
    pub pin: Pin,
    /// With one job at a time: whether a reader thread reads the lines ahead while a job runs
    /// (the default), or the job thread reads each line once the last job is done. Without
    /// read-ahead there is no thread to start and no hand-off per line, and the job thread,
    /// alone in the process, traces its fresh workers itself where it said so
    /// ([`crate::trace_own_workers`]); but results are then written out only as the output's
    /// buffer fills and at the end, and a read that waits holds back the results before it.
    /// For input whose reads never wait: a regular file. More jobs always read ahead.
    ///
    /// The reader thread blocks SIGCHLD and counts as one that waits for no child, so that a
    /// job thread that traces its own workers may do so beside it: `input`'s reads must then
    /// wait for no child of the process (`waitpid(-1)`) nor start a thread that does.
    pub read_ahead: bool,
}

impl Default for BatchConfig {
    /// Default run options, as many jobs at once as there are CPUs, completion order, no reuse.
    fn default() -> Self {
        BatchConfig::for_jobs(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

impl BatchConfig {
    /// [`BatchConfig::default`] with `jobs` jobs at once, without counting the CPUs (which
    /// reads the process's cgroup files: about 20 µs of a one-line `bytejail batch`).
    pub fn for_jobs(jobs: usize) -> Self {
        BatchConfig {
            defaults: RunOptions::default(),
            jobs,
            ordered: false,
            reuse: Reuse::None,
            fields: None,
            pin: Pin::Auto,
            read_ahead: true,
        }
    }

    /// Sets [`BatchConfig::read_ahead`].
    #[must_use]
    pub fn with_read_ahead(mut self, read_ahead: bool) -> Self {
        self.read_ahead = read_ahead;
        self
    }

    /// Sets [`BatchConfig::defaults`].
    #[must_use]
    pub fn with_defaults(mut self, defaults: RunOptions) -> Self {
        self.defaults = defaults;
        self
    }

    /// Sets [`BatchConfig::jobs`].
    #[must_use]
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs;
        self
    }

    /// Sets [`BatchConfig::ordered`].
    #[must_use]
    pub fn with_ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// Sets [`BatchConfig::reuse`].
    #[must_use]
    pub fn with_reuse(mut self, reuse: Reuse) -> Self {
        self.reuse = reuse;
        self
    }

    /// Sets [`BatchConfig::pin`].
    #[must_use]
    pub fn with_pin(mut self, pin: Pin) -> Self {
        self.pin = pin;
        self
    }

    /// Sets [`BatchConfig::fields`].
    #[must_use]
    pub fn with_fields(mut self, fields: Option<ReportFields>) -> Self {
        self.fields = fields;
        self
    }
}

/// The fields of a `run --json` report, in the order it writes them (those of an outcome only
/// where it has them).
pub const REPORT_FIELDS: [&str; 16] = [
    "schema_version",
    "outcome",
    "rax",
    "registers",
    "exit_code",
    "signal",
    "signal_number",
    "fault",
    "syscall",
    "output_hex",
    "output_text",
    "output_truncated",
    "wall_ns",
    "user_ns",
    "sys_ns",
    "max_rss_kib",
];

/// Which report fields a batch's result lines keep (`--fields outcome,output_hex`): a field
/// a report does not have (`rax` of a crash) is simply absent from its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportFields {
    keep: Vec<&'static str>,
}

impl ReportFields {
    /// The fields named in a comma-separated list; an error names a field that no report has,
    /// or says the list names none.
    pub fn parse(list: &str) -> Result<ReportFields, String> {
        let mut keep = Vec::new();
        for name in list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let field = REPORT_FIELDS
                .iter()
                .find(|field| **field == name)
                .ok_or_else(|| {
                    format!(
                        "`{name}` is not a report field; expected some of {}",
                        REPORT_FIELDS.join(", ")
                    )
                })?;
            if !keep.contains(field) {
                keep.push(*field);
            }
        }
        if keep.is_empty() {
            // Lines of nothing but the id (an unset variable in `--fields "$F"`, say) would
            // drop every outcome without a word.
            return Err(format!(
                "the list names no report field; expected some of {}",
                REPORT_FIELDS.join(", ")
            ));
        }
        Ok(ReportFields { keep })
    }

    /// Whether a report field is kept.
    pub fn keeps(&self, field: &str) -> bool {
        self.keep.contains(&field)
    }

    /// The report's JSON object ([`Report::to_json`]) with only the kept fields, in its order.
    pub fn select(&self, report: &Report) -> Map<String, Value> {
        match report.to_json() {
            Value::Object(all) => all
                .into_iter()
                .filter(|(name, _)| self.keeps(name))
                .collect(),
            _ => Map::new(),
        }
    }
}

/// Worker reuse across the jobs of a batch (`--reuse`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum Reuse {
    /// A fresh single-use worker per job.
    #[default]
    None,
    /// Consecutive jobs with the same code and the same `group` share a worker, each input
    /// from the same state; jobs without a `group` get a fresh worker each.
    SameCode,
}

/// Where a batch's job threads run (`--pin`).
///
/// A job hands its work back and forth between the thread that runs it and the worker it
/// forks (a pipe each way, then the reap). Left to the scheduler, the two often sit on
/// different CPUs, and every handoff wakes the other CPU, which on a virtual machine costs tens
/// of microseconds, more than a trivial job itself. A job thread kept to one CPU forks its
/// zygote and its workers there too (they inherit the thread's CPU set), so a job's handoffs
/// stay on one CPU and two job threads on two CPUs do not trade places.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum Pin {
    /// Each job thread keeps to a CPU of its own, the first to the first CPU the process may
    /// use and so on, when there are at least as many such CPUs as `jobs`; else none is
    /// pinned. With one job the calling thread, which runs the jobs, keeps to the CPU it is
    /// on for the batch (and gets its own CPU set back afterwards). Not with
    /// [`Reuse::SameCode`] and [`RunOptions::spin`]: a spinning hand-off needs the worker on
    /// another CPU than its host.
    #[default]
    Auto,
    /// The scheduler places every thread.
    Off,
}

/// The CPUs job thread `k` keeps to the `k`-th of, when the config's `pin` says so and there
/// are enough. Never for same-code workers that may spin ([`RunOptions::spin`]): their hand-off
/// wants host and worker on two CPUs, which a pinned thread's worker would not get.
fn pinned_cpus(config: &BatchConfig, jobs: usize) -> Option<Vec<usize>> {
    if config.pin == Pin::Off || (config.reuse == Reuse::SameCode && config.defaults.spin) {
        return None;
    }
    let allowed = crate::sys::allowed_cpus();
    (allowed.len() >= jobs.max(1)).then_some(allowed)
}

/// What a batch did: outcome counts, error lines, jobs in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines that ran (whatever the guest did).
    pub jobs: u64,
    /// Lines that could not run: an error line each.
    pub errors: u64,
    /// Jobs by outcome kind (`returned`, `crashed`, ...).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Workers started for the jobs (a same-code worker counts once for all the inputs it
    /// ran; diagnosis re-runs are not counted).
    pub workers: u64,
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

/// The fields a job line may have.
const FIELDS: [&str; 14] = [
    "id",
    "code_hex",
    "code_path",
    "input_hex",
    "timeout_ms",
    "max_output",
    "regs",
    "entry",
    "group",
    "memory",
    "max_procs",
    "cpu_time_ms",
    "allow_read",
    "allow_write",
];

/// A size field (`max_output`, `memory`): a whole number of bytes or a size such as "64KiB",
/// checked against `limit`; `flag` names the CLI flag with the same bound.
fn size_field(
    value: &Value,
    limit: bounds::SizeBound,
    field: &str,
    flag: &str,
) -> Result<usize, String> {
    let checked = match value {
        Value::String(size) => limit.parse(size).map_err(String::from),
        other => match other.as_u64() {
            Some(bytes) => limit.check(bytes).map_err(String::from),
            None => Err(format!(
                "{other} is not a whole number of bytes from {} to {} ({}) nor a size such as \
                 \"64KiB\"",
                limit.min, limit.max, limit.max_text
            )),
        },
    };
    checked.map_err(|e| format!("{field}: {e}, as for {flag}"))
}

/// The longest job line read, in bytes: room for the largest code and input in the most
/// verbose hex form (`0x6a, ` is 6 characters a byte) with the other fields, i.e.
/// 8 × (max_code + max_input) + 64 KiB. A longer line is an error line, skipped without
/// being held in memory.
pub fn max_line(defaults: &RunOptions) -> usize {
    defaults
        .limits
        .max_code
        .saturating_add(defaults.limits.max_input)
        .saturating_mul(8)
        .saturating_add(64 << 10)
}

/// A job ready to run.
struct Job<'a> {
    code: Arc<Vec<u8>>,
    input: Vec<u8>,
    /// The batch's defaults, borrowed, unless the line changed one (a copy is 512 bytes).
    options: Cow<'a, RunOptions>,
    /// The submission it belongs to, as written in JSON (`"a"` and `1` differ).
    group: Option<String>,
}

/// Code loaded from `code_path`, by path: a grader's thousand lines naming one file assemble
/// it once. An entry serves only a file whose bytes are still the ones it was loaded from: a
/// long-lived batch whose client rewrites a file in place runs the new code, never a stale copy
/// (file times are too coarse to tell two writes in a row apart).
#[derive(Default)]
struct CodeCache {
    entries: Mutex<CacheEntries>,
}

#[derive(Default)]
struct CacheEntries {
    /// Path -> (the file's bytes, the code loaded from them).
    by_path: HashMap<PathBuf, (Vec<u8>, Arc<Vec<u8>>)>,
    /// Bytes held, sources and code.
    held: usize,
}

/// Largest source file remembered; larger ones are loaded every time.
const MAX_CACHED_SOURCE: u64 = 1 << 20;
/// Bytes the cache may hold before it starts afresh: a long-lived batch naming ever new files
/// does not grow without end.
const MAX_CACHE_BYTES: usize = 64 << 20;

/// The bytes of `path` when it is a regular file small enough to remember.
fn cacheable_source(path: &PathBuf) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: opening a FIFO must not wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_CACHED_SOURCE {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_CACHED_SOURCE + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() as u64 <= MAX_CACHED_SOURCE).then_some(bytes)
}

impl CodeCache {
    fn load(&self, path: &PathBuf, max_code: usize) -> Result<Arc<Vec<u8>>, InputError> {
        let lock = || self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let source = cacheable_source(path);
        if let Some(source) = &source {
            if let Some((seen, code)) = lock().by_path.get(path) {
                if seen == source {
                    return Ok(code.clone());
                }
            }
        }
        let code = Arc::new(load::load_path(path, None, max_code)?);
        // Remembered only when the file still holds the bytes read before the load.
        if let Some(source) = source.filter(|s| cacheable_source(path).as_ref() == Some(s)) {
            let mut cache = lock();
            let size = source.len() + code.len();
            if cache.held + size > MAX_CACHE_BYTES {
                *cache = CacheEntries::default();
            }
            if let Some((old_source, old_code)) =
                cache.by_path.insert(path.clone(), (source, code.clone()))
            {
                cache.held -= old_source.len() + old_code.len();
            }
            cache.held += size;
        }
        Ok(code)
    }
}

/// Where a job thread gets its jobs' code: `code_path` through the batch's [`CodeCache`],
/// `code_hex` decoded, or the previous job's code when its `code_hex` is the same text (one
/// submission's lines: no decoding, and the same-code worker's code is the same allocation).
struct Codes<'a> {
    shared: &'a CodeCache,
    /// The last `code_hex` text decoded, and its code.
    last_hex: Option<(Vec<u8>, Arc<Vec<u8>>)>,
}

impl<'a> Codes<'a> {
    fn new(shared: &'a CodeCache) -> Codes<'a> {
        Codes {
            shared,
            last_hex: None,
        }
    }

    fn decode_hex(&mut self, hex: &[u8], max_code: usize) -> Result<Arc<Vec<u8>>, String> {
        if let Some((text, code)) = &self.last_hex {
            if text.as_slice() == hex {
                return Ok(code.clone());
            }
        }
        let code = Arc::new(
            load::load_bytes(hex, load::Format::Hex, "code_hex", max_code)
                .map_err(|e| e.to_string())?,
        );
        // Only short texts are kept: a copy of megabytes of hex per line would cost more
        // than decoding it again.
        self.last_hex = (hex.len() <= MAX_REMEMBERED_HEX).then(|| (hex.to_vec(), code.clone()));
        Ok(code)
    }
}

/// The longest `code_hex` text [`Codes`] remembers.
const MAX_REMEMBERED_HEX: usize = 64 << 10;

/// A string field, `None` when absent or null.
fn string_field<'a>(fields: &'a Fields, name: &str) -> Result<Option<&'a str>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{name}: expected a string, found {other}")),
    }
}

/// A job line's fields: the hex fields apart, each borrowed from the line when its JSON string
/// has no escapes, so that a line with megabytes of `input_hex` is not copied into a tree of
/// values before its hex is decoded; every other field as a [`Value`].
#[derive(Default)]
struct JobLine<'a> {
    /// Every field but `code_hex` and `input_hex`, in the line's order.
    fields: Fields,
    code_hex: Option<HexField<'a>>,
    input_hex: Option<HexField<'a>>,
}

/// A job line's other fields in the line's order, each name once. A line has a few of them: a
/// list looked through is quicker to build and to ask than a hash map.
#[derive(Default)]
struct Fields(Vec<(Cow<'static, str>, Value)>);

impl Fields {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(key, _)| key.as_ref())
    }

    /// A repeated field keeps its last value, in its first place, as a `Map` parsed by
    /// serde_json does.
    fn insert(&mut self, name: Cow<'static, str>, value: Value) {
        match self.0.iter_mut().find(|(key, _)| *key == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name, value)),
        }
    }
}

/// The value of `code_hex` or `input_hex` as the line has it.
enum HexField<'a> {
    /// An even run of hex digits and nothing else, as the line has it (checked, so ASCII).
    Digits(&'a [u8]),
    /// Any other string.
    Text(Cow<'a, str>),
    /// Anything but a string (an error unless `null`).
    Other(Value),
    /// A string of at least [`LONG_HEX`] bytes, as the line has it, not yet looked at:
    /// [`JobLine::parse`] makes it one of the others, or (`input_hex`) [`HexField::Decoded`].
    Long(&'a [u8]),
    /// `input_hex` that was an even run of hex digits, decoded as it was checked.
    Decoded(Vec<u8>),
}

/// From this length on a hex field's string is checked after the line is parsed: `input_hex`
/// then checked and decoded in one pass ([`load::decode_hex_run`]) rather than checked while
/// parsing and decoded later.
const LONG_HEX: usize = 4 << 10;

/// A hex field's string without escapes as a [`HexField`]: `Digits` for an even run of hex
/// digits, `Text` for other UTF-8 without control characters (what serde_json checks of a
/// string); `None` for anything else, which the line then is not read as.
fn hex_field_of(bytes: &[u8]) -> Option<HexField<'_>> {
    if bytes.len() % 2 == 0 && load::all_hex_digits(bytes) {
        return Some(HexField::Digits(bytes));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if !bytes.iter().any(|&b| b < 0x20) => Some(HexField::Text(Cow::Borrowed(text))),
        _ => None,
    }
}

/// A hex field's text, as [`JobLine::hex_field`] gives it.
enum HexText<'a> {
    /// Checked: an even run of hex digits.
    Digits(&'a [u8]),
    Text(&'a str),
    /// Already decoded (see [`HexField::Decoded`]).
    Decoded(&'a [u8]),
}

impl HexText<'_> {
    /// The text (`Decoded` never reaches here: only `input_hex` is decoded early).
    fn as_bytes(&self) -> &[u8] {
        match self {
            HexText::Digits(digits) | HexText::Decoded(digits) => digits,
            HexText::Text(text) => text.as_bytes(),
        }
    }
}

impl<'a> JobLine<'a> {
    /// Parses one line, reading it once: the hex fields' strings are taken as bytes (their
    /// end found with `memchr`; neither copied nor checked for UTF-8 and control characters a
    /// byte at a time) and checked here, every other string by serde_json; so a line read
    /// this way is UTF-8. Any other line (not UTF-8, not an object, not JSON, hex fields with
    /// escapes or that are not strings) is parsed again as text into a tree of values, as
    /// every line once was, for exactly the job or the message that gives.
    ///
    /// A long hex field is looked at after the line is parsed, not while: `input_hex` checked
    /// and decoded in one pass when it is an even run of hex digits (a 1 MiB input is 2 MiB of
    /// digits), anything else checked as a shorter one is.
    fn parse(line: &'a [u8]) -> Result<JobLine<'a>, String> {
        let mut job = match JobLine::from_json(line) {
            Ok(job) => job,
            Err(_) => return JobLine::parse_as_tree(line),
        };
        for (decode, field) in [(false, &mut job.code_hex), (true, &mut job.input_hex)] {
            let Some(HexField::Long(bytes)) = field else {
                continue;
            };
            let bytes: &'a [u8] = bytes;
            match decode.then(|| load::decode_hex_run(bytes)).flatten() {
                Some(decoded) => *field = Some(HexField::Decoded(decoded)),
                None => match hex_field_of(bytes) {
                    Some(checked) => *field = Some(checked),
                    None => return JobLine::parse_as_tree(line),
                },
            }
        }
        Ok(job)
    }

    /// The line read by serde_json straight into its fields, as `serde_json::from_slice` reads
    /// a value (nothing but whitespace after it); the hex fields as [`HexSeed`] reads them.
    fn from_json(line: &'a [u8]) -> serde_json::Result<JobLine<'a>> {
        use serde::Deserializer as _;
        let mut json = serde_json::Deserializer::from_slice(line);
        let hex = HexSeed {
            as_str: line.len() <= SHORT_LINE,
        };
        let job = (&mut json).deserialize_map(JobFields { hex })?;
        json.end()?;
        Ok(job)
    }

    /// The line as text and a tree of values, as every line once was parsed.
    fn parse_as_tree(line: &[u8]) -> Result<JobLine<'a>, String> {
        let text = std::str::from_utf8(line)
            .map_err(|_| "not a job: the line is not UTF-8".to_string())?;
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => Ok(JobLine::from_fields(fields)),
            Ok(_) => Err("not a job: expected a JSON object".into()),
            Err(e) => Err(format!("not a job: {e}")),
        }
    }

    /// The same line from its fields as a tree (the hex fields owned).
    fn from_fields(mut fields: Map<String, Value>) -> JobLine<'a> {
        let mut hex = |name: &str| {
            fields.shift_remove(name).map(|value| match value {
                Value::String(text) => HexField::Text(Cow::Owned(text)),
                other => HexField::Other(other),
            })
        };
        let (code_hex, input_hex) = (hex("code_hex"), hex("input_hex"));
        JobLine {
            fields: Fields(
                fields
                    .into_iter()
                    .map(|(name, value)| (Cow::Owned(name), value))
                    .collect(),
            ),
            code_hex,
            input_hex,
        }
    }

    /// A hex field, `None` when absent or null; as [`string_field`].
    fn hex_field(&self, name: &str) -> Result<Option<HexText<'_>>, String> {
        let field = match name {
            "code_hex" => &self.code_hex,
            _ => &self.input_hex,
        };
        match field {
            None | Some(HexField::Other(Value::Null)) => Ok(None),
            Some(HexField::Digits(digits)) => Ok(Some(HexText::Digits(digits))),
            Some(HexField::Text(text)) => Ok(Some(HexText::Text(text))),
            Some(HexField::Decoded(bytes)) => Ok(Some(HexText::Decoded(bytes))),
            // Not after `parse`; as the field it stands for.
            Some(HexField::Long(bytes)) => match hex_field_of(bytes) {
                Some(HexField::Digits(digits)) => Ok(Some(HexText::Digits(digits))),
                Some(HexField::Text(Cow::Borrowed(text))) => Ok(Some(HexText::Text(text))),
                _ => Err(format!("{name}: not UTF-8 text without control characters")),
            },
            Some(HexField::Other(other)) => {
                Err(format!("{name}: expected a string, found {other}"))
            }
        }
    }
}

/// Reads a job object's fields into a [`JobLine`] (see [`JobLine::from_json`]).
struct JobFields {
    hex: HexSeed,
}

impl<'de> Visitor<'de> for JobFields {
    type Value = JobLine<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a job object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JobLine<'de>, A::Error> {
        let mut line = JobLine::default();
        while let Some(FieldName(name)) = map.next_key::<FieldName>()? {
            // A repeated hex field keeps its last value, as other fields do.
            match name.as_ref() {
                "code_hex" => replace_hex(&mut line.code_hex, map.next_value_seed(self.hex)?)?,
                "input_hex" => replace_hex(&mut line.input_hex, map.next_value_seed(self.hex)?)?,
                _ => {
                    let value = map.next_value::<Value>()?;
                    line.fields.insert(name, value);
                }
            }
        }
        Ok(line)
    }
}

/// A job object's key: one of [`FIELDS`] without a copy of its text (most lines have only
/// those), any other as read (named in the error that refuses it).
struct FieldName(Cow<'static, str>);

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FieldName, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = FieldName;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<FieldName, E> {
                Ok(FieldName(
                    match FIELDS.iter().find(|known| **known == name) {
                        Some(known) => Cow::Borrowed(known),
                        None => Cow::Owned(name.to_owned()),
                    },
                ))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// Sets a hex field to the value read last. A long value it replaces ([`HexField::Long`], not
/// looked at while the line was parsed) is looked at now, as serde_json looks at every string:
/// one that is not UTF-8 or holds a control character makes the line not JSON, even though its
/// field is given again later.
fn replace_hex<'de, E: serde::de::Error>(
    field: &mut Option<HexField<'de>>,
    value: HexField<'de>,
) -> Result<(), E> {
    if let Some(HexField::Long(old)) = field {
        if hex_field_of(old).is_none() {
            return Err(E::custom("not UTF-8 text without control characters"));
        }
    }
    *field = Some(value);
    Ok(())
}

/// Reads a hex field: only a string without escapes, its bytes as the line has them, which
/// must be hex digits or UTF-8 without control characters (what serde_json checks of a
/// string). Anything else is an error here, and [`JobLine::parse`] then reads the line as a
/// tree of values.
///
/// `as_str`: the string read as text, serde_json checking it as it finds its end, rather than
/// as bytes, which serde_json takes to their end with `memchr2` and this checks after. Either
/// way the same field, or the same error; as bytes, a long string is read faster, but the first
/// `memchr2` of a process runs std's detection of every CPU feature (about 0.1 ms of `cpuid`
/// here), which a batch of short lines (a long `input_hex` is decoded as it is read, see
/// [`read_line`]) need not pay.
#[derive(Clone, Copy)]
struct HexSeed {
    as_str: bool,
}

impl<'de> DeserializeSeed<'de> for HexSeed {
    type Value = HexField<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<HexField<'de>, D::Error> {
        struct Field;
        impl<'de> Visitor<'de> for Field {
            type Value = HexField<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string without escapes")
            }

            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                bytes: &'de [u8],
            ) -> Result<HexField<'de>, E> {
                if bytes.len() >= LONG_HEX {
                    return Ok(HexField::Long(bytes));
                }
                hex_field_of(bytes)
                    .ok_or_else(|| E::custom("not UTF-8 text without control characters"))
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> Result<HexField<'de>, E> {
                self.visit_borrowed_bytes(text.as_bytes())
            }
        }
        // serde_json hands over the string as the line has it (escapes aside).
        if self.as_str {
            deserializer.deserialize_str(Field)
        } else {
            deserializer.deserialize_bytes(Field)
        }
    }
}

/// The longest line whose hex fields [`JobLine::from_json`] reads as text (see [`HexSeed`]).
const SHORT_LINE: usize = 1 << 10;

/// Parses one line into a job, or says why not (with the id when the line had one). Every
/// message names the field it is about.
fn parse_job<'a>(
    line: &[u8],
    defaults: &'a RunOptions,
    codes: &mut Codes,
) -> Result<(Value, Job<'a>), (Value, String)> {
    let line = JobLine::parse(line).map_err(|e| (Value::Null, e))?;
    job_of(line, defaults, codes)
}

/// [`parse_job`] for a line as [`read_line`] gives it: the job or the message that the line as
/// it came gives, the line freed before this returns. The input decoded as the line was read
/// is the job's input when the line's `input_hex` is the string that held its digits: the line
/// then parses as it does with them (both strings are runs of digits, without escapes), and
/// every other field is the same. Any other line (`input_hex` given again later or nested in
/// another value, a line that is not a job object, ...) is parsed again with its digits put
/// back.
fn parse_line<'a>(
    text: LineText,
    defaults: &'a RunOptions,
    codes: &mut Codes,
) -> Result<(Value, Job<'a>), (Value, String)> {
    let LineText { bytes, input } = text;
    let Some((at, run)) = input else {
        return parse_job(&bytes, defaults, codes);
    };
    if let Ok(mut line) = JobLine::parse(&bytes) {
        let stand_in = &bytes[at..at + STAND_IN.len()];
        if matches!(line.input_hex, Some(HexField::Digits(digits)) if std::ptr::eq(digits, stand_in))
        {
            line.input_hex = Some(HexField::Decoded(run.into_bytes()));
            return job_of(line, defaults, codes);
        }
    }
    let mut original = Vec::with_capacity(bytes.len() - STAND_IN.len() + run.digits_taken());
    original.extend_from_slice(&bytes[..at]);
    run.write_digits(&mut original);
    original.extend_from_slice(&bytes[at + STAND_IN.len()..]);
    drop((bytes, run));
    parse_job(&original, defaults, codes)
}

/// The job a parsed line describes, or why not, with the line's id.
fn job_of<'a>(
    mut line: JobLine,
    defaults: &'a RunOptions,
    codes: &mut Codes,
) -> Result<(Value, Job<'a>), (Value, String)> {
    let id = line.fields.get("id").cloned().unwrap_or(Value::Null);
    parse_fields(&mut line, defaults, codes)
        .map(|job| (id.clone(), job))
        .map_err(|e| (id, e))
}

/// The job a line's fields describe (see the module docs for the bounds).
fn parse_fields<'a>(
    line: &mut JobLine,
    defaults: &'a RunOptions,
    codes: &mut Codes,
) -> Result<Job<'a>, String> {
    let fields = &line.fields;
    if let Some(name) = fields.names().find(|k| !FIELDS.contains(k)) {
        return Err(format!(
            "not a job: unknown field `{name}`; expected one of {}",
            FIELDS.join(", ")
        ));
    }
    let mut options = Cow::Borrowed(defaults);
    if let Some(value) = fields.get("timeout_ms").filter(|v| !v.is_null()) {
        let ms = value.as_u64().ok_or_else(|| {
            format!(
                "timeout_ms: {value} is not a whole number of milliseconds from 1 to {} \
                 (24h, as for --timeout)",
                bounds::MAX_TIMEOUT.as_millis()
            )
        })?;
        options.to_mut().limits.timeout = bounds::timeout_from_ms(ms)
            .map_err(|e| format!("timeout_ms: {e}, as for --timeout"))?;
    }
    if let Some(value) = fields.get("max_output").filter(|v| !v.is_null()) {
        options.to_mut().limits.max_output =
            size_field(value, bounds::MAX_OUTPUT, "max_output", "--max-output")?;
    }
    if let Some(value) = fields.get("memory").filter(|v| !v.is_null()) {
        options.to_mut().limits.memory = size_field(value, bounds::MEMORY, "memory", "--memory")?;
    }
    if let Some(value) = fields.get("max_procs").filter(|v| !v.is_null()) {
        let range = bounds::MAX_PROCS;
        options.to_mut().limits.max_procs = value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                format!(
                    "max_procs: {value} is not a whole number from {} to {}, as for --max-procs",
                    range.start(),
                    range.end()
                )
            })?;
    }
    if let Some(value) = fields.get("cpu_time_ms").filter(|v| !v.is_null()) {
        let ms = value.as_u64().ok_or_else(|| {
            format!(
                "cpu_time_ms: {value} is not a whole number of milliseconds from 1 to {} \
                 (24h, as for --cpu-time)",
                bounds::MAX_TIMEOUT.as_millis()
            )
        })?;
        let cpu = bounds::timeout_from_ms(ms)
            .map_err(|e| format!("cpu_time_ms: {e}, as for --cpu-time"))?;
        options.to_mut().limits.cpu_time = Some(cpu);
    }
    for (field, flag) in [
        ("allow_read", "--allow-read"),
        ("allow_write", "--allow-write"),
    ] {
        let Some(value) = fields.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let paths = value
            .as_array()
            .filter(|paths| paths.iter().all(Value::is_string))
            .ok_or_else(|| format!("{field}: {value} is not an array of paths, as for {flag}"))?;
        let paths = paths
            .iter()
            .map(|path| {
                let path = std::path::Path::new(path.as_str().unwrap_or_default());
                bounds::check_grant(path).map_err(|e| format!("{field}: {e}, as for {flag}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if field == "allow_read" {
            options.to_mut().allow_read = paths;
        } else {
            options.to_mut().allow_write = paths;
        }
    }
    bounds::check_grants(&options.allow_read, &options.allow_write)?;
    match fields.get("regs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(regs)) => {
            for (name, value) in regs {
                let value = match value {
                    Value::Number(n) => n.as_u64().map(|v| v.to_string()),
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                }
                .ok_or_else(|| {
                    format!(
                        "regs.{name}: {value} is not a number from 0 to 2^64-1 nor a \
                         decimal/0x-hex string"
                    )
                })?;
                options
                    .to_mut()
                    .registers
                    .set_from_arg(&format!("{name}={value}"))
                    .map_err(|e| format!("regs.{name}: {e}"))?;
            }
        }
        Some(other) => {
            return Err(format!(
                "regs: expected an object such as {{\"rbx\": 5}}, found {other}"
            ))
        }
    }
    let group = match fields.get("group") {
        None | Some(Value::Null) => None,
        Some(group @ (Value::String(_) | Value::Number(_))) => Some(group.to_string()),
        Some(other) => {
            return Err(format!(
                "group: expected a string or a number, found {other}"
            ))
        }
    };

    let max_code = options.limits.max_code;
    let code = match (
        line.hex_field("code_hex")?,
        string_field(fields, "code_path")?,
    ) {
        (Some(hex), None) => codes.decode_hex(hex.as_bytes(), max_code)?,
        (None, Some(path)) => codes
            .shared
            .load(&PathBuf::from(path), max_code)
            .map_err(|e| e.to_string())?,
        (Some(_), Some(_)) => return Err("give code_hex or code_path, not both".into()),
        (None, None) => return Err("no code: give code_hex or code_path".into()),
    };
    if let Some(value) = fields.get("entry").filter(|v| !v.is_null()) {
        let entry = match value {
            Value::String(text) => bounds::parse_offset(text).map_err(String::from),
            other => other
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("{other} is not a whole number")),
        };
        options.to_mut().entry = entry
            .and_then(|entry| bounds::check_entry(entry, code.len()).map_err(String::from))
            .map_err(|e| format!("entry: {e}"))?;
    }
    if let Some(HexField::Decoded(input)) = &mut line.input_hex {
        // Decoded as it was checked: taken, not copied.
        let input = std::mem::take(input);
        return finish_job(code, input, options, group);
    }
    let input = match line.hex_field("input_hex")? {
        Some(HexText::Decoded(bytes)) => bytes.to_vec(),
        Some(HexText::Digits(digits)) => load::decode_hex_digits(digits),
        Some(HexText::Text(text)) => {
            load::parse_hex(text, "input_hex").map_err(|e| e.to_string())?
        }
        None => Vec::new(),
    };
    finish_job(code, input, options, group)
}

/// The job, its input checked against `--max-input`.
fn finish_job(
    code: Arc<Vec<u8>>,
    input: Vec<u8>,
    options: Cow<'_, RunOptions>,
    group: Option<String>,
) -> Result<Job<'_>, String> {
    if input.len() > options.limits.max_input {
        return Err(InputError::TooLarge {
            what: "input_hex".into(),
            size: Some(input.len()),
            limit: options.limits.max_input,
            flag: "--max-input",
        }
        .to_string());
    }
    Ok(Job {
        code,
        input,
        options,
        group,
    })
}

/// A job thread's same-code worker and the group it serves.
struct Reused {
    group: String,
    worker: SameCode,
}

/// How a job thread forks its workers: its first fresh worker straight from the host, as
/// `run` does, and every later one (and every same-code worker) through a zygote of its own,
/// started when first needed. A batch of one job (one large input, say) then never pays for
/// starting a zygote it would use once; a longer batch starts it with its second job, from a
/// host however large it has grown (the zygote unmaps its copy of the host's heap, so only its
/// own fork pays for that). The reports are the same either way ([`Zygote::run`] has
/// [`crate::run`]'s contract). A job that keeps the host's memory (`scrub: false`) is always
/// forked by the zygote: forked from this host it could read the lines queued behind it, other
/// jobs' code and input.
#[derive(Default)]
struct Forks {
    zygote: Option<Zygote>,
    /// A fresh worker was forked straight from the host.
    forked_directly: bool,
}

impl Forks {
    /// The thread's zygote, started now if it has none yet, or none that still lives (one
    /// killed from outside would fail every later job of the thread).
    fn zygote(&mut self) -> Result<&Zygote, Error> {
        if self.zygote.as_ref().is_some_and(Zygote::has_ended) {
            self.zygote = None;
        }
        match &mut self.zygote {
            Some(zygote) => Ok(zygote),
            empty => Ok(empty.insert(Zygote::start()?)),
        }
    }

    /// Runs `job` in a fresh worker.
    fn run_fresh(&mut self, job: &Job) -> Result<Report, Error> {
        if self.zygote.is_none() && !self.forked_directly && job.options.scrub {
            self.forked_directly = true;
            return crate::run(&job.code, &job.input, &job.options);
        }
        self.zygote()?.run(&job.code, &job.input, &job.options)
    }
}

/// Runs one job. With [`Reuse::SameCode`] and a group: in the thread's same-code worker when
/// the job has its code, worker options and group, else in a new one, which replaces it.
/// Otherwise in a fresh worker (and a same-code worker the thread held is ended first: it
/// belongs to another submission). Returns the report and the workers started for it.
fn run_job(
    job: &Job,
    forks: &mut Forks,
    reuse: Reuse,
    same: &mut Option<Reused>,
) -> (Result<Report, Error>, u64) {
    let group = match (reuse, &job.group) {
        (Reuse::SameCode, Some(group)) => group,
        _ => {
            *same = None;
            return (forks.run_fresh(job), 1);
        }
    };
    let fits = |r: &Reused| {
        r.group == *group && r.worker.code() == job.code.as_slice() && r.worker.fits(&job.options)
    };
    if !same.as_ref().is_some_and(fits) {
        *same = None; // ends the old worker first
        let worker = forks
            .zygote()
            .and_then(|zygote| SameCode::with_zygote(&job.code, &job.options, zygote));
        match worker {
            Ok(worker) => {
                *same = Some(Reused {
                    group: group.clone(),
                    worker,
                })
            }
            Err(e) => return (Err(e), 0),
        }
    }
    let worker = &mut same.as_mut().expect("set above").worker;
    let before = worker.workers_started();
    let report = worker.run_with(&job.input, &job.options);
    (report, worker.workers_started() - before)
}

/// `{"id": ..., <report>}` on one line.
pub fn result_line(id: &Value, report: &Report) -> String {
    result_text(id, report, None)
}

/// `{"id": ..., <report>}` on one line, with only the report fields `fields` keeps.
///
/// The whole report is serialised straight after the id into one buffer: the same bytes as
/// going through a `serde_json::Value` (the report has no `id` field and no duplicate keys),
/// without building a tree whose strings (the output, twice) are each copied again.
fn result_text(id: &Value, report: &Report, fields: Option<&ReportFields>) -> String {
    let mut line = Vec::new();
    write_result(&mut line, id, report, fields);
    String::from_utf8(line).expect("serde_json writes UTF-8")
}

/// Appends [`result_text`]'s line to `line` (a buffer a job thread reuses: a result line with
/// 64 KiB of output is about 200 KiB, which fresh each job costs a mapping and its page faults).
fn write_result(line: &mut Vec<u8>, id: &Value, report: &Report, fields: Option<&ReportFields>) {
    if let Some(fields) = fields {
        let mut obj = Map::new();
        obj.insert("id".into(), id.clone());
        obj.extend(fields.select(report));
        serde_json::to_writer(&mut *line, &Value::Object(obj)).expect("a value serialises");
        return;
    }
    // Room for the output twice over (hex, and maybe text) and the rest.
    line.reserve(report.output.len() * 3 + 512);
    line.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut *line, id).expect("a JSON value always serialises");
    let report_at = line.len();
    report.write_json(line);
    // The report's own `{` becomes the comma after the id.
    debug_assert_eq!(line.get(report_at), Some(&b'{'));
    line[report_at] = b',';
}

/// `{"id": ..., "line": n, "error": "..."}` on one line.
pub fn error_line(id: &Value, line: u64, error: &str) -> String {
    serde_json::json!({"id": id, "line": line, "error": error}).to_string()
}

/// One line read from the batch, or why it cannot be a job.
enum Line {
    Text(LineText),
    Refused(String),
}

/// A line's bytes as [`read_line`] read them (not yet known to be UTF-8: see
/// [`JobLine::parse`]), with a long `input_hex` already decoded. It reads as its bytes.
struct LineText {
    bytes: Vec<u8>,
    /// `input_hex`'s digits decoded as they were read, and where `bytes` holds [`STAND_IN`] in
    /// their place.
    input: Option<(usize, load::HexRun)>,
}

impl std::ops::Deref for LineText {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl LineText {
    /// Bytes held: the line's and its decoded input's.
    fn held(&self) -> usize {
        self.bytes.len() + self.input.as_ref().map_or(0, |(_, run)| run.bytes().len())
    }
}

/// What [`read_line`] leaves in a line in place of the `input_hex` digits it decoded: digits
/// too, so that the line parses as it does with them.
const STAND_IN: &[u8] = b"00";

/// Whether a line is blank (nothing but whitespace, as `str::trim` sees it): looks no further
/// than the first byte that is not ASCII whitespace, unless that byte starts a non-ASCII
/// character.
fn is_blank(line: &[u8]) -> bool {
    // `char::is_whitespace` in ASCII: tab, line feed, vertical tab, form feed, return, space.
    match line.iter().find(|&&b| !matches!(b, b'\t'..=b'\r' | b' ')) {
        None => true,
        Some(b) if b.is_ascii() => false,
        Some(_) => std::str::from_utf8(line).is_ok_and(|text| text.trim().is_empty()),
    }
}

/// Reads the next line (without its `\n` or `\r\n`), holding at most `max` bytes of it: a
/// longer line is read to its end and dropped. `None` at the end of the input.
///
/// A long line's `input_hex` is decoded as it is read: once a piece read that does not end
/// the line holds `"input_hex":"` (or the line so far ends in it), the value of a field
/// `input_hex` by the look of it ([`parse_line`] makes sure), the digits that follow, in that
/// piece and the next ones, are checked and decoded straight into the job's input
/// ([`load::HexRun`]), and the line keeps [`STAND_IN`] in their place. A 1 MiB input then costs its 1 MiB, not 2 MiB of line
/// more (and what growing a buffer to hold them faults in). Digits that end in anything but
/// the string's end, that do not pair up, or whose letters change case are put back, and the
/// line is read on as any other: either way the line read is the line's text.
fn read_line(input: &mut impl BufRead, max: usize, buf: &mut Vec<u8>) -> io::Result<Option<Line>> {
    buf.clear();
    let mut len: u64 = 0;
    let mut too_long = false;
    // Over `max` bytes of text and the line's end.
    let over = |len: u64| len > (max as u64).saturating_add(2);
    // How much of `buf` is faulted in ahead.
    let mut populated = 0;
    // `input_hex`'s digits while they come, then decoded with where the stand-in is; and
    // whether the line had its digits taken (once a line).
    let mut digits: Option<load::HexRun> = None;
    let mut decoded: Option<(usize, load::HexRun)> = None;
    let mut found = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            if let Some(run) = digits.take() {
                // The line ends in the digits: as read.
                run.write_digits(buf);
            }
            if len == 0 {
                return Ok(None);
            }
            break;
        }
        if let Some(run) = &mut digits {
            let (taken, ended) = take_digits(run, chunk);
            input.consume(taken);
            len += taken as u64;
            if over(len) {
                too_long = true;
                *buf = Vec::new();
                digits = None;
                continue;
            }
            match ended {
                None => {}
                Some(true) => {
                    decoded = digits.take().map(|run| (buf.len(), run));
                    buf.extend_from_slice(STAND_IN);
                }
                Some(false) => {
                    if let Some(run) = digits.take() {
                        run.write_digits(buf);
                    }
                }
            }
            // What follows the digits is read as any line's bytes.
            continue;
        }
        let (mut take, mut end) = match find_byte(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !found && !end && !too_long {
            if let Some((in_buf, in_chunk)) = hex_value_start(buf, chunk) {
                let mut run = load::HexRun::default();
                let held = &buf[in_buf..];
                if run.push(held) == held.len() {
                    buf.truncate(in_buf);
                    // The bytes before the digits are read as usual, then the digits.
                    (take, end) = (in_chunk, false);
                    digits = Some(run);
                    found = true;
                }
            }
        }
        len += take as u64;
        if !too_long {
            if over(len) {
                too_long = true;
                *buf = Vec::new();
            } else {
                if buf.len() + take > populated && buf.len() + take >= load::POPULATE_FROM {
                    // A long line: its buffer faulted in ahead, a step at a time, with one
                    // call each (see `sys::populate`) rather than a page fault per 4 KiB.
                    buf.reserve(take);
                    let spare = buf.spare_capacity_mut();
                    let ahead = spare.len().min(take + POPULATE_STEP);
                    crate::sys::populate(&mut spare[..ahead]);
                    populated = buf.len() + ahead;
                }
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        input.consume(take);
        if end {
            break;
        }
    }
    let mut line_len = len;
    for end in [b'\n', b'\r'] {
        if buf.last() == Some(&end) {
            buf.pop();
            line_len -= 1;
        }
    }
    if too_long || line_len > max as u64 {
        return Ok(Some(Line::Refused(format!(
            "the line is over {max} bytes (8 x (--max-code + --max-input) + 64KiB); \
             it is {len} bytes"
        ))));
    }
    Ok(Some(Line::Text(LineText {
        bytes: std::mem::take(buf),
        input: decoded,
    })))
}

/// Takes the digits at the start of `chunk` into `run`: how many bytes it took, and `None`
/// when they were all digits, `Some(true)` when the digits end at the string's end and pair
/// up, `Some(false)` when they end otherwise.
fn take_digits(run: &mut load::HexRun, chunk: &[u8]) -> (usize, Option<bool>) {
    let taken = run.push(chunk);
    if taken == chunk.len() {
        return (taken, None);
    }
    // The first byte that is not a digit of the run is in the slice `push` stopped at.
    let rest = &chunk[taken..];
    let slice = &rest[..rest.len().min(load::HexRun::SLICE)];
    match find_byte(b'"', slice) {
        Some(quote) => {
            let more = run.push(&rest[..quote]);
            (taken + more, Some(more == quote && run.is_even()))
        }
        None => (taken, Some(false)),
    }
}

/// Where the digits of an `input_hex` string start, when the line so far (`buf` then `chunk`)
/// ends in one: `"input_hex"`, a colon and a quote (JSON whitespace between), in `chunk` or
/// across its start; as (offset in `buf`, offset in `chunk`), one of them at its end. Only a
/// likely place: [`load::HexRun`] checks the digits, [`parse_line`] that it was the field.
fn hex_value_start(buf: &[u8], chunk: &[u8]) -> Option<(usize, usize)> {
    /// Bytes on each side of the piece's start looked at for a key across it.
    const ACROSS: usize = 32;
    if let Some(at) = value_after_key(chunk) {
        return Some((buf.len(), at));
    }
    let tail = &buf[buf.len().saturating_sub(ACROSS)..];
    let head = &chunk[..chunk.len().min(ACROSS)];
    let mut window = [0u8; 2 * ACROSS];
    window[..tail.len()].copy_from_slice(tail);
    window[tail.len()..tail.len() + head.len()].copy_from_slice(head);
    let at = value_after_key(&window[..tail.len() + head.len()])?;
    Some(match at.checked_sub(tail.len()) {
        Some(in_chunk) => (buf.len(), in_chunk),
        None => (buf.len() - (tail.len() - at), 0),
    })
}

/// The offset just after `"input_hex":"` (JSON whitespace allowed around the colon), its
/// last occurrence in `bytes`.
fn value_after_key(bytes: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"\"input_hex\"";
    // Found by its `_`, from the end: a run of digits has none to stop at.
    const UNDERSCORE: usize = 6;
    let mut end = bytes.len();
    let key = loop {
        let at = rfind_byte(b'_', &bytes[..end])?;
        if at >= UNDERSCORE && bytes[at - UNDERSCORE..].starts_with(KEY) {
            break at - UNDERSCORE;
        }
        end = at;
    };
    let skip = |at: usize| {
        let spaces = bytes[at..]
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        at + spaces.count()
    };
    let at = skip(key + KEY.len());
    if bytes.get(at) != Some(&b':') {
        return None;
    }
    let at = skip(at + 1);
    (bytes.get(at) == Some(&b'"')).then_some(at + 1)
}

/// The first `byte` in `haystack`: with SSE2, which every x86-64 CPU has, rather than
/// `memchr::memchr`, whose first call runs std's detection of every CPU feature (about 0.1 ms
/// of `cpuid`, each a VM exit on a virtual machine: a noticeable part of a batch of one job).
fn find_byte(byte: u8, haystack: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(finder) = memchr::arch::x86_64::sse2::memchr::One::new(byte) {
        return finder.find(haystack);
    }
    memchr::memchr(byte, haystack)
}

/// The last `byte` in `haystack` (see [`find_byte`]).
fn rfind_byte(byte: u8, haystack: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(finder) = memchr::arch::x86_64::sse2::memchr::One::new(byte) {
        return finder.rfind(haystack);
    }
    memchr::memrchr(byte, haystack)
}

/// What a job thread (or the reader, for a refused line) hands the writer for one line.
struct Done {
    seq: u64,
    /// The result line with its `\n`: written with one call, so that a line-buffered output
    /// finds the line's end at once instead of searching a long line for one. Always UTF-8.
    text: Vec<u8>,
    outcome: Option<&'static str>,
    workers: u64,
}

impl Done {
    fn error(seq: u64, id: &Value, line: u64, error: &str) -> Done {
        Done {
            seq,
            text: with_end(error_line(id, line, error)).into_bytes(),
            outcome: None,
            workers: 0,
        }
    }
}

/// Shared by the reader and the job threads.
struct Crew<'a, 'o> {
    config: &'a BatchConfig,
    cache: CodeCache,
    work: LineQueue,
    /// Idle job threads minus lines queued for them: at or below 0, a new line finds no
    /// thread free and, below `jobs` threads, the reader starts one.
    free: AtomicIsize,
    /// Set when results can no longer be written: everyone stops.
    stop: AtomicBool,
    /// Result buffers written, for the job threads to fill again.
    spare: SpareBuffers,
    results: Results<'o>,
}

/// Result-line buffers handed back by the writer: a job thread takes one for its next result
/// instead of allocating (and faulting in) a new one per job.
#[derive(Default)]
struct SpareBuffers(Mutex<Vec<Vec<u8>>>);

/// Buffers [`SpareBuffers`] holds at most, and the largest it keeps: a long-lived batch does not
/// hold on to one huge result's memory.
const SPARE_BUFFERS: usize = 8;
const MAX_SPARE_BUFFER: usize = 4 << 20;

impl SpareBuffers {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() > MAX_SPARE_BUFFER {
            return;
        }
        buf.clear();
        let mut spare = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf);
        }
    }
}

/// Runs one line `(seq, line_no, text)` in a fresh worker (see [`Forks`]) or in the same-code
/// worker `same`: its result line, or its error line.
fn run_line(
    config: &BatchConfig,
    codes: &mut Codes,
    (seq, line_no, text): (u64, u64, LineText),
    forks: &mut Forks,
    same: &mut Option<Reused>,
    mut buf: Vec<u8>,
) -> Done {
    // The job holds its own code and input: the line is freed before a worker is forked from
    // this host.
    let parsed = parse_line(text, &config.defaults, codes);
    match parsed {
        Err((id, e)) => Done::error(seq, &id, line_no, &e),
        Ok((id, job)) => {
            let (report, workers) = run_job(&job, forks, config.reuse, same);
            match report {
                Ok(report) => Done {
                    seq,
                    text: {
                        buf.clear();
                        write_result(&mut buf, &id, &report, config.fields.as_ref());
                        buf.push(b'\n');
                        buf
                    },
                    outcome: Some(report.outcome.kind()),
                    workers,
                },
                Err(e) => Done {
                    workers,
                    ..Done::error(seq, &id, line_no, &e.to_string())
                },
            }
        }
    }
}

impl Crew<'_, '_> {
    /// A job thread: takes lines, runs them in workers it forks (see [`Forks`]), and writes
    /// their results itself (see [`Results`]).
    fn job_thread(&self, cpu: Option<usize>) {
        if let Some(cpu) = cpu {
            // Before it forks anything: its zygote and workers inherit the CPU, and so does
            // the tracer it starts. A failure leaves the thread where the scheduler puts it,
            // which runs the same jobs.
            if crate::sys::set_thread_cpus(&[cpu]).is_ok() {
                crate::tracer::use_cpu_tracer(cpu);
            }
        }
        // A panic here (the host's `progress`, say) stops the reader too, which could
        // otherwise wait for room in the queue for good.
        let _stop = StopOnPanic(self);
        let mut forks = Forks::default();
        let mut codes = Codes::new(&self.cache);
        let mut same: Option<Reused> = None;
        loop {
            let queued = match self.work.try_take() {
                Take::Line(line) => line,
                Take::Ended => break,
                Take::Empty => {
                    // Nothing more to run now: what is written goes out before the wait, so
                    // that a client waiting for its answer gets it.
                    self.flush();
                    match self.work.take() {
                        Some(line) => line,
                        None => break,
                    }
                }
            };
            if self.stop.load(Ordering::Relaxed) {
                continue; // drain until the reader closes the queue
            }
            let result = match queued {
                Queued::Line(seq, line_no, text) => run_line(
                    self.config,
                    &mut codes,
                    (seq, line_no, text),
                    &mut forks,
                    &mut same,
                    self.spare.take(),
                ),
                Queued::Refused(seq, line_no, why) => Done::error(seq, &Value::Null, line_no, &why),
            };
            // Free again before the result is out: a client that answers it with a new line
            // finds this thread free.
            self.free.fetch_add(1, Ordering::SeqCst);
            self.give(result);
        }
    }

    /// Writes a line's result (see [`Results::give`]); once results can no longer be
    /// written, everyone stops: the job threads drain the queue, the reader stops reading.
    fn give(&self, done: Done) {
        if !self.results.give(done, &self.spare) {
            self.stopped();
        }
    }

    /// Flushes what is written (see [`Results::flush`]).
    fn flush(&self) {
        if !self.results.flush() {
            self.stopped();
        }
    }

    fn stopped(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.work.abandon();
    }
}

/// Stops a batch's reader when a job thread panics (see [`Crew::stopped`]).
struct StopOnPanic<'c, 'a, 'o>(&'c Crew<'a, 'o>);

impl Drop for StopOnPanic<'_, '_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stopped();
        }
    }
}

/// The results of a batch with several job threads. The thread that ends a job writes its
/// result itself, under a lock (with `ordered`, it holds a result until it is next in input
/// order, and writes every result that its own makes next): no thread is woken to write a
/// result, which on two CPUs is a wake-up on the other CPU per job. The output is flushed
/// whenever no further result is ready: by a writer that sees no other thread waiting to write
/// (a result written while another thread goes on to a long job is not held back by it). A job
/// thread also flushes before it waits for a line.
struct Results<'o> {
    state: Mutex<ResultsState<'o>>,
    /// Threads waiting for the lock to write a result.
    waiting: AtomicUsize,
}

struct ResultsState<'o> {
    out: &'o mut (dyn Write + Send),
    progress: &'o mut (dyn FnMut(&Summary) + Send),
    ordered: bool,
    /// Results ended before an earlier line's (with `ordered`), by sequence number.
    pending: BTreeMap<u64, Vec<u8>>,
    /// The sequence number to write next (with `ordered`).
    next: u64,
    summary: Summary,
    /// The first failure to write: nothing more is written after it.
    failed: Option<io::Error>,
}

impl<'o> Results<'o> {
    fn new(
        out: &'o mut (dyn Write + Send),
        progress: &'o mut (dyn FnMut(&Summary) + Send),
        ordered: bool,
    ) -> Results<'o> {
        Results {
            state: Mutex::new(ResultsState {
                out,
                progress,
                ordered,
                pending: BTreeMap::new(),
                next: 0,
                summary: Summary::default(),
                failed: None,
            }),
            waiting: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ResultsState<'o>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts and writes one line's result (or holds it for its turn), giving written buffers
    /// back to `spare`, and flushes unless another thread waits to write; `false` once results
    /// can no longer be written.
    fn give(&self, done: Done, spare: &SpareBuffers) -> bool {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if state.failed.is_some() {
            return false;
        }
        state.summary.count(&done);
        let state = &mut *state;
        let written = (|| -> io::Result<()> {
            if state.ordered {
                state.pending.insert(done.seq, done.text);
                while let Some(text) = state.pending.remove(&state.next) {
                    write_line(state.out, &text)?;
                    spare.give(text);
                    state.next += 1;
                }
            } else {
                write_line(state.out, &done.text)?;
                spare.give(done.text);
            }
            if self.waiting.load(Ordering::SeqCst) == 0 {
                state.out.flush()?;
            }
            Ok(())
        })();
        match written {
            Ok(()) => {
                (state.progress)(&state.summary);
                true
            }
            Err(e) => {
                state.failed = Some(e);
                false
            }
        }
    }

    /// Flushes what is written; `false` once results can no longer be written.
    fn flush(&self) -> bool {
        let mut state = self.lock();
        if state.failed.is_some() {
            return false;
        }
        match state.out.flush() {
            Ok(()) => true,
            Err(e) => {
                state.failed = Some(e);
                false
            }
        }
    }

    /// The summary, after a last flush; `Err` if results could not all be written.
    fn finish(self) -> Result<Summary, Error> {
        let state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        let flushed = match state.failed {
            Some(e) => Err(e),
            None => state.out.flush(),
        };
        flushed
            .map(|()| state.summary)
            .map_err(|e| Error::io("writing results", e))
    }
}

/// Runs every job line of `input`, writing one result line per job line to `out` as results
/// come (see the module docs) and flushing `out` whenever no further result is ready.
/// `progress` is called after each result with the summary so far. Blank lines are skipped.
/// `Err` only for the runner itself: unreadable input, an unwritable `out`.
///
/// With more than one job, the job threads write to `out` and call `progress` themselves
/// (one at a time): both must be `Send`.
pub fn run_batch(
    input: impl BufRead + Send,
    out: &mut (dyn Write + Send),
    config: &BatchConfig,
    progress: &mut (dyn FnMut(&Summary) + Send),
) -> Result<Summary, Error> {
    let jobs = config.jobs.max(1);
    if jobs == 1 {
        return run_batch_inline(input, out, config, progress);
    }
    let crew = Crew {
        config,
        cache: CodeCache::default(),
        work: LineQueue::new((jobs * 4).max(QUEUE_LINES)),
        free: AtomicIsize::new(0),
        stop: AtomicBool::new(false),
        spare: SpareBuffers::default(),
        results: Results::new(out, progress, config.ordered),
    };
    let cpus = pinned_cpus(config, jobs);
    let mut lines = Lines::new(input, config);

    let read = std::thread::scope(|scope| -> Result<(), Error> {
        let crew = &crew;
        // Job threads end once they have taken every line (the scope waits for them); also
        // when reading panics (the host's `BufRead`).
        let _close = CloseOnDrop(&crew.work);
        // The reader: this thread. It hands lines to job threads, starting one when none is
        // free.
        let read = (|| {
            let mut started = 0;
            while let Some(queued) = lines.next()? {
                if crew.stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Queued::Refused(seq, line_no, why) = &queued {
                    crew.give(Done::error(*seq, &Value::Null, *line_no, why));
                    continue;
                }
                if crew.free.fetch_sub(1, Ordering::SeqCst) <= 0 && started < jobs {
                    let cpu = cpus.as_ref().map(|cpus| cpus[started]);
                    started += 1;
                    crew.free.fetch_add(1, Ordering::SeqCst);
                    std::thread::Builder::new()
                        .name("bytejail-batch".into())
                        .spawn_scoped(scope, move || crew.job_thread(cpu))
                        .map_err(|e| Error::io("starting a batch thread", e))?;
                }
                if !crew.work.put(queued) {
                    break;
                }
            }
            Ok(())
        })();
        read
    });
    // A failure to write comes first: reading stopped because of it.
    let summary = crew.results.finish()?;
    read.map(|()| summary)
}

impl Summary {
    /// Counts one line's result.
    fn count(&mut self, done: &Done) {
        match done.outcome {
            Some(kind) => {
                self.jobs += 1;
                *self.outcomes.entry(kind).or_default() += 1;
            }
            None => self.errors += 1,
        }
        self.workers += done.workers;
    }
}

/// A line handed from the reader to the thread that runs it.
enum Queued {
    /// (sequence number among non-blank lines, line number, text).
    Line(u64, u64, LineText),
    /// A line that cannot be a job: (sequence number, line number, why).
    Refused(u64, u64, String),
}

impl Queued {
    fn bytes(&self) -> usize {
        match self {
            Queued::Line(_, _, text) => text.held(),
            Queued::Refused(_, _, why) => why.len(),
        }
    }
}

/// Lines from the reader to the threads that run them, at most `capacity` lines and (past the
/// first) [`QUEUE_BYTES`] at a time. Unlike a channel it wakes the reader only when half the
/// queue is free again, not after every line taken, and wakes either side only when it waits:
/// a batch read from a file then costs a wake-up every `capacity / 2` jobs instead of a few
/// per job (a wake-up on the same CPU is a futex call and two context switches, a large part
/// of a job that runs in a same-code worker).
struct LineQueue {
    state: Mutex<QueueState>,
    /// Runners wait here for a line (or the reader's end).
    queued: Condvar,
    /// The reader waits here for room.
    room: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct QueueState {
    lines: VecDeque<Queued>,
    /// Bytes of text queued.
    bytes: usize,
    /// The reader read its last line.
    closed: bool,
    /// The runners stopped (results can no longer be written): the reader should too.
    abandoned: bool,
    reader_waiting: bool,
    runners_waiting: usize,
}

/// How far ahead [`read_line`] faults in a long line's buffer.
const POPULATE_STEP: usize = 256 << 10;

/// Bytes of lines the queue holds ahead of the runners (one longer line is still let in when
/// the queue is empty).
const QUEUE_BYTES: usize = 8 << 20;

/// What [`LineQueue::try_take`] found.
enum Take {
    Line(Queued),
    /// Nothing queued yet.
    Empty,
    /// Nothing queued, ever again.
    Ended,
}

impl LineQueue {
    fn new(capacity: usize) -> LineQueue {
        LineQueue {
            state: Mutex::default(),
            queued: Condvar::new(),
            room: Condvar::new(),
            capacity: capacity.max(2),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a line, waiting for room; `false` when the runners have stopped.
    fn put(&self, line: Queued) -> bool {
        let mut state = self.lock();
        let full = |state: &QueueState| {
            !state.lines.is_empty()
                && (state.lines.len() >= self.capacity || state.bytes + line.bytes() > QUEUE_BYTES)
        };
        while full(&state) && !state.abandoned {
            state.reader_waiting = true;
            state = self.room.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.abandoned {
            return false;
        }
        state.bytes += line.bytes();
        state.lines.push_back(line);
        if state.runners_waiting > 0 {
            self.queued.notify_one();
        }
        true
    }

    /// The reader is done (at the end of its input, or failing).
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        if state.runners_waiting > 0 {
            self.queued.notify_all();
        }
    }

    /// The runners are done: a reader waiting for room stops.
    fn abandon(&self) {
        let mut state = self.lock();
        state.abandoned = true;
        state.lines.clear();
        state.bytes = 0;
        if std::mem::take(&mut state.reader_waiting) {
            self.room.notify_one();
        }
    }

    /// The next line if one is queued, without waiting.
    fn try_take(&self) -> Take {
        let mut state = self.lock();
        self.take_from(&mut state)
    }

    /// The next line, waiting for one; `None` once the reader is done and all are taken.
    fn take(&self) -> Option<Queued> {
        let mut state = self.lock();
        loop {
            match self.take_from(&mut state) {
                Take::Line(line) => return Some(line),
                Take::Ended => return None,
                Take::Empty => {
                    state.runners_waiting += 1;
                    state = self.queued.wait(state).unwrap_or_else(|e| e.into_inner());
                    state.runners_waiting -= 1;
                }
            }
        }
    }

    fn take_from(&self, state: &mut QueueState) -> Take {
        match state.lines.pop_front() {
            Some(line) => {
                state.bytes -= line.bytes();
                if state.reader_waiting
                    && state.lines.len() <= self.capacity / 2
                    && state.bytes <= QUEUE_BYTES / 2
                {
                    state.reader_waiting = false;
                    self.room.notify_one();
                }
                Take::Line(line)
            }
            None if state.closed => Take::Ended,
            None => Take::Empty,
        }
    }
}

/// Lines the reader may hold ahead of the runners (at least; `4 x --jobs` with more jobs).
const QUEUE_LINES: usize = 64;

/// Closes a [`LineQueue`] when dropped: the reader is done, even if it panicked.
struct CloseOnDrop<'q>(&'q LineQueue);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Abandons a [`LineQueue`] when dropped while panicking: a runner that panicked stops the
/// reader.
struct AbandonOnPanic<'q>(&'q LineQueue);

impl Drop for AbandonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abandon();
        }
    }
}

/// A batch's lines as they are read, numbered (`seq` counts the lines that get a result,
/// `line_no` every line of the input), blank lines left out.
struct Lines<R> {
    input: R,
    buf: Vec<u8>,
    max: usize,
    seq: u64,
    line_no: u64,
}

impl<R: BufRead> Lines<R> {
    fn new(input: R, config: &BatchConfig) -> Lines<R> {
        Lines {
            input,
            buf: Vec::new(),
            max: max_line(&config.defaults),
            seq: 0,
            line_no: 0,
        }
    }

    /// The next line that gets a result; `None` at the end of the input.
    fn next(&mut self) -> Result<Option<Queued>, Error> {
        while let Some(line) = read_line(&mut self.input, self.max, &mut self.buf)
            .map_err(|e| Error::io("reading the batch", e))?
        {
            self.line_no += 1;
            let queued = match line {
                Line::Text(text) if is_blank(&text) => continue,
                Line::Text(text) => Queued::Line(self.seq, self.line_no, text),
                Line::Refused(why) => Queued::Refused(self.seq, self.line_no, why),
            };
            self.seq += 1;
            return Ok(Some(queued));
        }
        Ok(None)
    }
}

/// The calling thread running a batch's jobs one at a time and writing their results.
struct OneAtATime<'a, 'o> {
    config: &'a BatchConfig,
    forks: Forks,
    codes: Codes<'a>,
    same: Option<Reused>,
    /// The result buffer, written and reused job after job.
    buf: Vec<u8>,
    summary: Summary,
    out: &'o mut dyn Write,
}

impl<'a, 'o> OneAtATime<'a, 'o> {
    fn new(config: &'a BatchConfig, cache: &'a CodeCache, out: &'o mut dyn Write) -> Self {
        OneAtATime {
            config,
            forks: Forks::default(),
            codes: Codes::new(cache),
            same: None,
            buf: Vec::new(),
            summary: Summary::default(),
            out,
        }
    }

    /// Runs a line's job and writes its result (not flushed).
    fn run(&mut self, queued: Queued, progress: &mut dyn FnMut(&Summary)) -> Result<(), Error> {
        let done = match queued {
            Queued::Line(seq, line_no, text) => run_line(
                self.config,
                &mut self.codes,
                (seq, line_no, text),
                &mut self.forks,
                &mut self.same,
                std::mem::take(&mut self.buf),
            ),
            Queued::Refused(seq, line_no, why) => Done::error(seq, &Value::Null, line_no, &why),
        };
        self.summary.count(&done);
        write_line(self.out, &done.text).map_err(write_failed)?;
        if done.text.capacity() <= MAX_SPARE_BUFFER {
            self.buf = done.text;
        }
        progress(&self.summary);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.out.flush().map_err(write_failed)
    }
}

fn write_failed(e: io::Error) -> Error {
    Error::io("writing results", e)
}

/// The calling thread kept to one CPU of those [`pinned_cpus`] allows for one job thread (the
/// one it runs on, if allowed) while this lives; the CPU set it had comes back when dropped.
struct PinnedJobThread(Option<Vec<usize>>);

impl PinnedJobThread {
    fn new(config: &BatchConfig) -> PinnedJobThread {
        PinnedJobThread(pinned_cpus(config, 1).filter(|allowed| {
            let cpu = crate::sys::current_cpu()
                .filter(|cpu| allowed.contains(cpu))
                .unwrap_or(allowed[0]);
            crate::sys::set_thread_cpus(&[cpu]).is_ok()
        }))
    }
}

impl Drop for PinnedJobThread {
    fn drop(&mut self) {
        if let Some(allowed) = &self.0 {
            let _ = crate::sys::set_thread_cpus(allowed);
        }
    }
}

/// [`run_batch`] with one job at a time: the jobs run on the calling thread, which writes
/// their results itself. With [`BatchConfig::read_ahead`] a reader thread keeps it fed
/// through a [`LineQueue`], and results are flushed whenever no further line is queued,
/// before waiting for one; without, the calling thread reads each line once the last job is
/// done, and results go out as the output's buffer fills and at the end. Results come as with
/// more jobs (in input order, which is completion order here).
fn run_batch_inline(
    input: impl BufRead + Send,
    out: &mut dyn Write,
    config: &BatchConfig,
    progress: &mut dyn FnMut(&Summary),
) -> Result<Summary, Error> {
    let cache = CodeCache::default();
    let mut lines = Lines::new(input, config);
    if !config.read_ahead {
        let pinned = PinnedJobThread::new(config);
        let mut jobs = OneAtATime::new(config, &cache, out);
        let ran = (|| -> Result<(), Error> {
            // A line that cannot be read ends the batch after the results of those before.
            let read = loop {
                match lines.next() {
                    Ok(Some(queued)) => jobs.run(queued, progress)?,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            jobs.flush()?;
            read
        })();
        drop(pinned);
        return ran.map(|()| jobs.summary);
    }
    let queue = LineQueue::new(QUEUE_LINES);
    let queue = &queue;
    let mut jobs = OneAtATime::new(config, &cache, out);
    std::thread::scope(|scope| -> Result<(), Error> {
        // Where no thread can start (a pids limit reached), an error, not a panic.
        let reader = std::thread::Builder::new()
            .spawn_scoped(scope, move || -> Result<(), Error> {
                // This thread forks nothing and waits for no child: the job thread may trace
                // its own workers beside it (see `trace_own_workers`).
                let _quiet = crate::tracer::QuietThread::enter();
                // The job thread ends once it has taken every line; also when reading panics
                // (the host's `BufRead`).
                let _close = CloseOnDrop(queue);
                while let Some(queued) = lines.next()? {
                    if !queue.put(queued) {
                        break;
                    }
                }
                Ok(())
            })
            .map_err(|e| Error::io("starting a batch thread", e))?;
        // A panic of this thread's (the host's `progress`, say) stops the reader, which could
        // otherwise wait for room in the queue for good.
        let _abandon = AbandonOnPanic(queue);

        // Pinned after the reader started (it inherits the CPU set of the thread that starts
        // it, and stays free); the caller's own set comes back at the end.
        let pinned = PinnedJobThread::new(config);
        let ran = (|| -> Result<(), Error> {
            loop {
                let queued = match queue.try_take() {
                    Take::Line(line) => line,
                    Take::Ended => break,
                    Take::Empty => {
                        // Nothing more to answer now: what is written goes out before the
                        // wait, so that a client waiting for its answer gets it.
                        jobs.flush()?;
                        match queue.take() {
                            Some(line) => line,
                            None => break,
                        }
                    }
                };
                jobs.run(queued, progress)?;
            }
            jobs.flush()
        })();
        drop(pinned);
        if ran.is_err() {
            queue.abandon();
        }
        let read = reader.join().unwrap_or_else(|_| {
            Err(Error::io(
                "reading the batch",
                io::Error::other("the reader panicked"),
            ))
        });
        ran.and(read)
    })?;
    Ok(jobs.summary)
}

/// A line and its end.
fn with_end(mut line: String) -> String {
    line.push('\n');
    line
}

/// Writes one result line, which ends in its `\n` ([`Done::text`]), with one call (no
/// `write!` formatting machinery: a same-code job is a few microseconds).
fn write_line(out: &mut dyn Write, line: &[u8]) -> io::Result<()> {
    out.write_all(line)
}

#[cfg(test)]
mod read_review;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn run(lines: &str, ordered: bool) -> (Vec<Value>, Summary) {
        run_reusing(lines, ordered, Reuse::None)
    }

    fn run_reusing(lines: &str, ordered: bool, reuse: Reuse) -> (Vec<Value>, Summary) {
        run_on(lines, ordered, reuse, 3)
    }

    fn run_on(lines: &str, ordered: bool, reuse: Reuse, jobs: usize) -> (Vec<Value>, Summary) {
        let config = BatchConfig {
            defaults: RunOptions::default(),
            jobs,
            ordered,
            reuse,
            fields: None,
            pin: Pin::Auto,
            read_ahead: true,
        };
        run_with(lines, &config)
    }

    fn run_with(lines: &str, config: &BatchConfig) -> (Vec<Value>, Summary) {
        let mut out = Vec::new();
        let summary = run_batch(lines.as_bytes(), &mut out, config, &mut |_| {}).unwrap();
        let values = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (values, summary)
    }

    /// A job's code, input, group, entry and timeout.
    type ParsedJob = (Vec<u8>, Vec<u8>, Option<String>, usize, u128);

    /// What a line parses to, comparable: the id and the job, or the error.
    fn parsed(line: &[u8], tree: bool) -> (Value, Result<ParsedJob, String>) {
        let cache = CodeCache::default();
        let mut codes = Codes::new(&cache);
        let defaults = RunOptions::default();
        let job_line = if tree {
            JobLine::parse_as_tree(line)
        } else {
            JobLine::parse(line)
        };
        let job_line = match job_line {
            Ok(job_line) => job_line,
            Err(e) => return (Value::Null, Err(e)),
        };
        let id = job_line.fields.get("id").cloned().unwrap_or(Value::Null);
        let mut job_line = job_line;
        let job = parse_fields(&mut job_line, &defaults, &mut codes).map(|job| {
            (
                job.code.to_vec(),
                job.input,
                job.group,
                job.options.entry,
                job.options.limits.timeout.as_millis(),
            )
        });
        (id, job)
    }

    #[test]
    fn lines_parse_as_a_tree_of_values_parses_them() {
        let mut lines: Vec<Vec<u8>> = [
            r#"{"id":1,"code_hex":"b02ac3","input_hex":"0A0b"}"#,
            r#"{"id":2,"code_hex":"b0 2a c3","input_hex":"0a 0b"}"#,
            // Escapes: the string is copied and unescaped, then decoded the same.
            r#"{"id":3,"code_hex":"b0 2a c3","input_hex":"0A0b"}"#,
            r#"{"id":4,"code_hex":"b02ac3","input_hex":"0A0"}"#,
            r#"{"id":5,"code_hex":"b02ac3","input_hex":5}"#,
            r#"{"id":6,"code_hex":"b02ac3","input_hex":null}"#,
            r#"{"id":7,"code_hex":"b02ac3","input_hex":"0x41 0x42 # comment"}"#,
            r#"{"id":8,"code_hex":"b02ac3","input_hex":"aa","input_hex":"bb","id":9}"#,
            r#"{"id":10,"code_hex":[1,{"a":null}]}"#,
            r#"{"id":11,"code_hex":"b02ac3","code_hex":"c3","entry":0,"timeout_ms":7}"#,
            r#"{"id":12,"code_hex":"b02ac3","colour":1,"group":"g"}"#,
            r#"{"id":13,"code_hex":"b02ac3","group":14}"#,
            r#"[1,2]"#,
            r#"{"id":15,"code_hex":"b02ac3""#,
            r#"{"id":16,"code_hex":"b02ac3"} x"#,
            r#"{"id":17,"code_hex":"b02ac3","input_hex":"ab	cd"}"#,
            r#"{"id":18,"code_hex":"b02ac3","input_hex":"é"}"#,
            r#"{"id":19,"input_hex":"ff"}"#,
        ]
        .iter()
        .map(|line| line.as_bytes().to_vec())
        .collect();
        lines.push(b"{\"id\":20,\"code_hex\":\"b02ac3\",\"input_hex\":\"ab\xffcd\"}".to_vec());
        lines.push(b"{\"id\":21,\"code_hex\":\"b0\xff\"}".to_vec());
        lines.push(b"{\"id\":22,\"code_hex\":\"b02ac3\",\"group\":\"\xff\"}".to_vec());
        // Hex fields of `LONG_HEX` bytes and more, looked at after the line is parsed.
        let short = lines.len();
        let long = "0aFb".repeat(LONG_HEX);
        for (id, code, input) in [
            (30, "b02ac3".to_string(), long.clone()),
            (31, "b02ac3".to_string(), format!("{long}0")),
            (32, "b02ac3".to_string(), format!("{long} 0a")),
            (33, "b02ac3".to_string(), format!("{long}\t0a")),
            (34, "b02ac3".to_string(), format!("{long}g0")),
            (35, "b02ac3".to_string(), format!("{long}\u{e9}")),
            (36, format!("{}b02ac3", "90".repeat(LONG_HEX)), long.clone()),
            (37, format!("{}b02ac3 ", "90".repeat(LONG_HEX)), "ab".into()),
            (38, format!("{}\tc3", "90".repeat(LONG_HEX)), "ab".into()),
        ] {
            lines.push(
                format!(r#"{{"id":{id},"code_hex":"{code}","input_hex":"{input}"}}"#).into_bytes(),
            );
        }
        let mut bad =
            format!(r#"{{"id":39,"code_hex":"b02ac3","input_hex":"{long}"}}"#).into_bytes();
        let at = bad.len() - 10;
        bad[at] = 0xff;
        lines.push(bad);
        for line in &lines {
            let shown = String::from_utf8_lossy(line);
            assert_eq!(parsed(line, false), parsed(line, true), "{shown}");
        }
        // The borrowed digits and the unescaped copy give the same job.
        assert_eq!(parsed(&lines[0], false).1, parsed(&lines[2], false).1);
        assert_eq!(
            parsed(&lines[0], false).1.unwrap().1,
            vec![0x0a, 0x0b],
            "upper and lower case"
        );
        assert_eq!(
            parsed(&lines[short], false).1.unwrap().1.len(),
            2 * LONG_HEX
        );
        // A non-UTF-8 line is refused as before, whichever string holds the byte.
        for line in lines[short - 3..short].iter().chain(lines.last()) {
            assert_eq!(
                parsed(line, false),
                (Value::Null, Err("not a job: the line is not UTF-8".into()))
            );
        }
    }

    /// A parse's result, comparable (see [`parsed`]).
    fn comparable(
        parsed: Result<(Value, Job), (Value, String)>,
    ) -> (Value, Result<ParsedJob, String>) {
        match parsed {
            Ok((id, job)) => (
                id,
                Ok((
                    job.code.to_vec(),
                    job.input,
                    job.group,
                    job.options.entry,
                    job.options.limits.timeout.as_millis(),
                )),
            ),
            Err((id, e)) => (id, Err(e)),
        }
    }

    #[test]
    fn lines_decoded_as_they_are_read_give_what_the_whole_line_gives() {
        // Digits enough for several pieces of every size read below.
        let input: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let lower = faster_hex::hex_string(&input);
        let upper = faster_hex::hex_string_upper(&input);
        let (half, rest) = lower.split_at(lower.len() / 2);
        let mixed = format!("{half}{}", rest.to_uppercase());
        let line = |fields: &str| format!(r#"{{"id":1,"code_hex":"b02ac3",{fields}}}"#);
        let long_code = "90".repeat(100_000);
        // (line, whether its digits are decoded while it is read whatever the pieces)
        let lines: Vec<(String, bool)> = vec![
            (line(&format!(r#""input_hex":"{lower}""#)), true),
            (line(&format!(r#""input_hex":"{upper}""#)), true),
            (
                line(&format!(r#""input_hex" :	"{lower}","timeout_ms":7"#)),
                true,
            ),
            (
                line(&format!(r#""input_hex":"{lower}","timeout_ms":0"#)),
                true,
            ),
            (line(&format!(r#""input_hex":"{lower}","entry":9"#)), true),
            (
                line(&format!(
                    r#""input_hex":"{lower}","group":"g","colour":[1]"#
                )),
                true,
            ),
            (line(&format!(r#""input_hex":"{mixed}""#)), false),
            (line(&format!(r#""input_hex":"{lower}0""#)), false),
            (line(&format!(r#""input_hex":"g{lower}""#)), false),
            (line(&format!(r#""input_hex":"{half}g{rest}""#)), false),
            (line(&format!(r#""input_hex":"{lower}g""#)), false),
            (line(&format!(r#""input_hex":"{lower}G0""#)), false),
            (line(&format!(r#""input_hex":"{lower} 0a""#)), false),
            (line(&format!(r#""input_hex":"{lower}\u0030a""#)), false),
            (line(&format!(r#""input_hex":"{half}\u0030{rest}""#)), false),
            (line(&format!(r#""input_hex":"{lower}\"""#)), false),
            (line(&format!(r#""input_hex":"{lower}\\""#)), false),
            (
                line(&format!(r#""input_hex":"{lower}","input_hex":"0a""#)),
                true,
            ),
            (
                line(&format!(r#""input_hex":"0a","input_hex":"{upper}""#)),
                true,
            ),
            (
                line(&format!(r#""input_hex":"{lower}","input_hex":"{upper}""#)),
                true,
            ),
            (line(&format!(r#""regs":{{"input_hex":"{lower}"}}"#)), true),
            (
                format!(r#"{{"id":{{"input_hex":"{upper}"}},"code_hex":"b02ac3"}}"#),
                true,
            ),
            (
                format!(r#"{{"id":"\"input_hex\":\"{upper}","code_hex":"b02ac3"}}"#),
                false,
            ),
            (
                format!(r#"{{"id":2,"code_hex":"{long_code}","input_hex":"{upper}"}}"#),
                true,
            ),
            (
                format!(r#"{{"id":2,"input_hex":"{upper}","code_hex":"{long_code}"}}"#),
                true,
            ),
            (format!(r#"{{"id":2,"input_hex":"{upper}"}}"#), true),
            (format!(r#"[{{"input_hex":"{upper}"}}]"#), true),
            (format!(r#"{{"id":2,"input_hex":"{upper}""#), true),
            (format!(r#"{{"id":2,"input_hex":"{upper}"}} x"#), true),
        ];
        let mut lines: Vec<(Vec<u8>, bool)> = lines
            .into_iter()
            .map(|(line, streams)| (line.into_bytes(), streams))
            .collect();
        let mut not_utf8 = format!(r#"{{"id":2,"input_hex":"{upper}"#).into_bytes();
        not_utf8.extend_from_slice(b"\xff\"}");
        lines.push((not_utf8, false));
        // Cut off in its digits at the end of the input.
        let cut = format!(r#"{{"id":3,"code_hex":"b02ac3","input_hex":"{lower}"#);
        lines.push((cut.into_bytes(), false));
        let text = lines
            .iter()
            .map(|(line, _)| line.as_slice())
            .collect::<Vec<_>>()
            .join(&b"\r\n"[..]);
        let cache = CodeCache::default();
        let defaults = RunOptions::default();
        for piece in [4099, 8 << 10, 65_537, 128 << 10] {
            let mut input = io::BufReader::with_capacity(piece, text.as_slice());
            let mut buf = Vec::new();
            for (index, (line, streams)) in lines.iter().enumerate() {
                let shown = String::from_utf8_lossy(&line[..line.len().min(80)]);
                let Some(Line::Text(read)) = read_line(&mut input, 4 << 20, &mut buf).unwrap()
                else {
                    panic!("{shown}: not read whole");
                };
                // Pieces of 4099 bytes split the key; those of 128 KiB read the digits of the
                // long code with theirs.
                if piece == 65_537 || piece == 8 << 10 {
                    assert_eq!(read.input.is_some(), *streams, "{piece}: {index} {shown}");
                }
                assert_eq!(
                    comparable(parse_line(read, &defaults, &mut Codes::new(&cache))),
                    comparable(parse_job(line, &defaults, &mut Codes::new(&cache))),
                    "{piece}: {shown}"
                );
            }
            assert!(read_line(&mut input, 4 << 20, &mut buf).unwrap().is_none());
        }
        // An input over `--max-input`, and a line over the limit.
        let mut small = RunOptions::default();
        small.limits.max_input = 1000;
        let mut input = io::BufReader::with_capacity(8 << 10, lines[0].0.as_slice());
        let Some(Line::Text(read)) = read_line(&mut input, 4 << 20, &mut Vec::new()).unwrap()
        else {
            panic!("not read");
        };
        assert!(read.input.is_some());
        assert_eq!(
            comparable(parse_line(read, &small, &mut Codes::new(&cache))),
            comparable(parse_job(&lines[0].0, &small, &mut Codes::new(&cache)))
        );
        let over = [&lines[0].0[..], b"\nnext\n"].concat();
        let mut input = io::BufReader::with_capacity(8 << 10, over.as_slice());
        let mut buf = Vec::new();
        match read_line(&mut input, 100_000, &mut buf).unwrap() {
            Some(Line::Refused(why)) => assert_eq!(
                why,
                format!(
                    "the line is over 100000 bytes (8 x (--max-code + --max-input) + 64KiB); \
                     it is {} bytes",
                    lines[0].0.len() + 1
                )
            ),
            _ => panic!("a line over the limit was read"),
        }
        match read_line(&mut input, 100_000, &mut buf).unwrap() {
            Some(Line::Text(next)) => assert_eq!(
                (next.bytes.as_slice(), next.input.is_none()),
                (&b"next"[..], true)
            ),
            _ => panic!("the next line was not read"),
        }
    }

    #[test]
    fn blank_lines_are_those_str_trim_empties() {
        for (line, blank) in [
            ("", true),
            (" \t\r\x0b\x0c", true),
            ("\u{3000}\u{a0} ", true),
            (" {", false),
            ("\u{3000}x", false),
            ("é", false),
        ] {
            assert_eq!(is_blank(line.as_bytes()), blank, "{line:?}");
            assert_eq!(line.trim().is_empty(), blank, "{line:?}");
        }
        assert!(!is_blank(b" \xff"));
    }

    #[test]
    fn a_long_line_is_read_whole() {
        // Past `POPULATE_FROM`, read through a small buffer: faulted in ahead, step by step.
        let long: Vec<u8> = (0..(3usize << 20) / 2)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let mut text = long.clone();
        text.extend_from_slice(b"\r\nnext\n");
        let mut input = io::BufReader::with_capacity(8 << 10, io::Cursor::new(text));
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut input, 4 << 20, &mut buf).unwrap() {
            match line {
                Line::Text(text) => lines.push(text.bytes),
                Line::Refused(why) => panic!("{why}"),
            }
        }
        assert_eq!(lines, [long, b"next".to_vec()]);
    }

    #[test]
    fn only_a_scrubbed_first_job_forks_from_the_host() {
        let job = |scrub: bool| Job {
            code: Arc::new(vec![0xb0, 0x2a, 0xc3]),
            input: Vec::new(),
            options: Cow::Owned(RunOptions {
                scrub,
                ..RunOptions::default()
            }),
            group: None,
        };
        let mut forks = Forks::default();
        assert_eq!(
            forks.run_fresh(&job(true)).unwrap().outcome.kind(),
            "returned"
        );
        assert!(forks.zygote.is_none(), "the first job forked from the host");
        forks.run_fresh(&job(true)).unwrap();
        assert!(forks.zygote.is_some(), "the second started the zygote");
        // Unscrubbed, a worker forked from the host could read the lines queued behind it.
        let mut forks = Forks::default();
        forks.run_fresh(&job(false)).unwrap();
        assert!(forks.zygote.is_some());
    }

    #[test]
    fn a_zygote_started_with_the_second_job_gives_the_reports_of_the_first() {
        // A thread's first fresh job forks from the host, the others through its zygote:
        // each job twice in a row, the same report either way.
        let write_input = "b8 01 00 00 00 48 89 fe ba 04 00 00 00 bf 01 00 00 00 0f 05 c3";
        let jobs = [
            (write_input, "68 22 5c 0a"),
            ("b0 2a c3", ""),
            ("0f 0b", ""),
            ("b8 27 00 00 00 0f 05", ""),
            ("b8 3c 00 00 00 bf 07 00 00 00 0f 05", ""),
        ];
        let essence = |v: &Value| {
            let mut v = v.clone();
            let v = v.as_object_mut().unwrap();
            for field in [
                "id",
                "wall_ns",
                "user_ns",
                "sys_ns",
                "max_rss_kib",
                "registers",
            ] {
                v.remove(field);
            }
            Value::Object(v.clone())
        };
        for (first, second) in [(0, 1), (1, 0)] {
            let mut lines = Vec::new();
            for (i, (code, input)) in jobs.iter().enumerate() {
                let order = if i == 0 { [first, second] } else { [0, 1] };
                for k in order {
                    lines.push(format!(
                        r#"{{"id": {}, "code_hex": "{code}", "input_hex": "{input}"}}"#,
                        i * 2 + k
                    ));
                }
            }
            let (values, summary) = run_on(&lines.join("\n"), true, Reuse::None, 1);
            assert_eq!(values.len(), jobs.len() * 2);
            assert_eq!(summary.workers, (jobs.len() * 2) as u64);
            for pair in values.chunks(2) {
                assert_eq!(essence(&pair[0]), essence(&pair[1]), "{pair:?}");
            }
            assert_eq!(values[0]["output_hex"], "68225c0a");
            assert_eq!(values[0]["registers"]["rsi"], values[1]["registers"]["rsi"]);
        }
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

    /// The result line as it was built before it was written straight from the report.
    fn result_line_through_value(id: &Value, report: &Report) -> String {
        let mut obj = Map::new();
        obj.insert("id".into(), id.clone());
        if let Value::Object(fields) = report.to_json() {
            obj.extend(fields);
        }
        Value::Object(obj).to_string()
    }

    /// Reports of every common shape: registers, output as text (with characters JSON
    /// escapes) and as bytes only, a crash with its fault, a violation, an exit.
    fn sample_reports() -> Vec<Report> {
        // write(1, input, 4); ret
        let write_input = "b8 01 00 00 00 48 89 fe ba 04 00 00 00 bf 01 00 00 00 0f 05 c3";
        let jobs: [(&str, &str); 6] = [
            ("b0 2a c3", ""),
            (write_input, "68 22 5c 0a"),
            (write_input, "ff fe 41 0a"),
            ("0f 0b", ""),
            ("b8 27 00 00 00 0f 05", ""),
            ("b8 3c 00 00 00 bf 07 00 00 00 0f 05", ""),
        ];
        jobs.iter()
            .map(|(code, input)| {
                let code = load::parse_hex(code, "code").unwrap();
                let input = load::parse_hex(input, "input").unwrap();
                crate::run(&code, &input, &RunOptions::default()).unwrap()
            })
            .collect()
    }

    #[test]
    fn result_lines_are_the_bytes_of_the_value_they_replace() {
        let reports = sample_reports();
        let kinds: Vec<&str> = reports.iter().map(|r| r.outcome.kind()).collect();
        assert_eq!(
            kinds,
            [
                "returned",
                "returned",
                "returned",
                "crashed",
                "syscall_violation",
                "exited"
            ]
        );
        let ids = [
            Value::from(7),
            Value::from("a \"quoted\" id\n"),
            serde_json::json!([1, {"k": null}]),
            Value::Null,
        ];
        for report in &reports {
            for id in &ids {
                assert_eq!(
                    result_line(id, report),
                    result_line_through_value(id, report)
                );
            }
        }
    }

    #[test]
    fn fields_keep_only_what_is_asked() {
        let fields = ReportFields::parse("outcome, output_hex,outcome,rax").unwrap();
        for report in sample_reports() {
            let line: Value =
                serde_json::from_str(&result_text(&Value::from(1), &report, Some(&fields)))
                    .unwrap();
            let all = report.to_json();
            let names: Vec<&str> = line
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            let mut expected = vec!["id", "outcome"];
            if all.get("rax").is_some() {
                expected.push("rax");
            }
            expected.push("output_hex");
            assert_eq!(names, expected, "{line}");
            for name in &names[1..] {
                assert_eq!(line[name], all[name]);
            }
        }
        let err = ReportFields::parse("outcome,colour").unwrap_err();
        assert!(err.contains("`colour` is not a report field"), "{err}");
        // Every field a report has is one that can be asked for.
        for report in sample_reports() {
            for name in report.to_json().as_object().unwrap().keys() {
                assert!(REPORT_FIELDS.contains(&name.as_str()), "{name}");
            }
        }
    }

    #[test]
    fn one_job_at_a_time_gives_what_several_give() {
        let sum = "31 c0 31 c9 48 39 f1 73 0c 0f b6 14 0f 48 01 d0 48 ff c1 eb ef \
                   80 3f ff 75 03 0f 0b 90 c3";
        let mut lines = vec![
            "not json".to_string(),
            String::new(),
            r#"{"id": "bad", "code_hex": "zz"}"#.to_string(),
        ];
        for i in 0..150u32 {
            let input = if i % 50 == 7 {
                "ff".to_string()
            } else {
                format!("{:02x} 01", i % 256)
            };
            let group = if i % 3 == 0 { "" } else { r#", "group": "g""# };
            lines.push(format!(
                r#"{{"id": {i}, "code_hex": "{sum}", "input_hex": "{input}"{group}}}"#
            ));
        }
        let lines = lines.join("\n");
        let essence = |v: &Value| {
            (
                v["id"].clone(),
                v["outcome"].clone(),
                v["rax"].clone(),
                v["line"].clone(),
                v["error"].is_string(),
            )
        };
        for reuse in [Reuse::None, Reuse::SameCode] {
            let (one, one_summary) = run_on(&lines, true, reuse, 1);
            let (three, three_summary) = run_on(&lines, true, reuse, 3);
            // One job at a time, each line read by the job thread once the last job is done.
            let unread = BatchConfig::for_jobs(1)
                .with_reuse(reuse)
                .with_read_ahead(false);
            let (inline, inline_summary) = run_with(&lines, &unread);
            assert_eq!(one.len(), 152);
            assert_eq!(
                one.iter().map(essence).collect::<Vec<_>>(),
                three.iter().map(essence).collect::<Vec<_>>()
            );
            assert_eq!(
                inline.iter().map(essence).collect::<Vec<_>>(),
                three.iter().map(essence).collect::<Vec<_>>()
            );
            assert_eq!(one_summary.outcomes, three_summary.outcomes);
            assert_eq!(inline_summary.outcomes, three_summary.outcomes);
            assert_eq!(inline_summary.errors, 2);
            assert_eq!(one_summary.errors, 2);
            if reuse == Reuse::SameCode {
                assert!(one_summary.workers < 150, "{one_summary:?}");
            }
        }
    }

    #[test]
    fn one_job_at_a_time_answers_each_line_before_the_next_comes() {
        // Written by the calling thread with one job, by the job threads with several.
        for jobs in [1, 3] {
            answers_each_line_before_the_next_comes(jobs);
        }
    }

    /// Results as a client gets them: what was written, sent on at each flush.
    struct Answers(mpsc::Sender<String>, Vec<u8>);

    impl Write for Answers {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            if !self.1.is_empty() {
                let text = String::from_utf8(std::mem::take(&mut self.1)).unwrap();
                let _ = self.0.send(text);
            }
            Ok(())
        }
    }

    fn answers_each_line_before_the_next_comes(jobs: usize) {
        // A client that writes a line and waits for its answer before writing the next.
        let (line_tx, line_rx) = mpsc::channel::<String>();
        let (answer_tx, answer_rx) = mpsc::channel::<String>();
        struct Client(mpsc::Receiver<String>, Vec<u8>, usize);
        impl io::Read for Client {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.2 == self.1.len() {
                    match self.0.recv() {
                        Ok(line) => (self.1, self.2) = (line.into_bytes(), 0),
                        Err(_) => return Ok(0),
                    }
                }
                let n = buf.len().min(self.1.len() - self.2);
                buf[..n].copy_from_slice(&self.1[self.2..self.2 + n]);
                self.2 += n;
                Ok(n)
            }
        }
        let batch = std::thread::spawn(move || {
            let config = BatchConfig::default().with_jobs(jobs);
            let mut out = Answers(answer_tx, Vec::new());
            let input = io::BufReader::new(Client(line_rx, Vec::new(), 0));
            run_batch(input, &mut out, &config, &mut |_| {}).unwrap()
        });
        for i in 0..3 {
            line_tx
                .send(format!("{{\"id\": {i}, \"code_hex\": \"b0 2a c3\"}}\n"))
                .unwrap();
            let answer = answer_rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("an answer before the next line");
            let answer: Value = serde_json::from_str(answer.trim_end()).unwrap();
            assert_eq!(answer["id"], i);
            assert_eq!(answer["rax"], 42);
        }
        drop(line_tx);
        assert_eq!(batch.join().unwrap().jobs, 3);
    }

    #[test]
    fn a_result_goes_out_while_the_thread_that_wrote_it_runs_a_long_job() {
        // One quick line, then two that run until their timeout: whichever thread ends the
        // quick one goes on to a long one, and its result must not wait for that.
        let lines = "{\"id\": 1, \"code_hex\": \"b02ac3\"}\n\
                     {\"id\": 2, \"code_hex\": \"ebfe\", \"timeout_ms\": 3000}\n\
                     {\"id\": 3, \"code_hex\": \"ebfe\", \"timeout_ms\": 3000}\n";
        let (tx, rx) = mpsc::channel();
        let started = std::time::Instant::now();
        let batch = std::thread::spawn(move || {
            let config = BatchConfig::default().with_jobs(2);
            let mut out = Answers(tx, Vec::new());
            run_batch(lines.as_bytes(), &mut out, &config, &mut |_| {}).unwrap()
        });
        // Received as it is flushed: this thread waits for it.
        let first = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        let at = std::time::Instant::now();
        let first: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        assert_eq!(first["id"], 1);
        assert!(
            at - started < std::time::Duration::from_millis(2500),
            "the quick result went out after {:?}, with the long jobs",
            at - started
        );
        assert_eq!(batch.join().unwrap().jobs, 3);
    }

    #[test]
    fn spinning_same_code_workers_are_never_pinned() {
        let allowed = crate::sys::allowed_cpus();
        let config = BatchConfig::default().with_pin(Pin::Auto);
        assert_eq!(pinned_cpus(&config, 1), Some(allowed.clone()));
        assert_eq!(pinned_cpus(&config, allowed.len() + 1), None);
        assert_eq!(pinned_cpus(&config.clone().with_pin(Pin::Off), 1), None);
        let same = config.with_reuse(Reuse::SameCode);
        assert_eq!(pinned_cpus(&same, 1), None);
        let no_spin = same
            .clone()
            .with_defaults(RunOptions::default().with_spin(false));
        assert_eq!(pinned_cpus(&no_spin, 1), Some(allowed));
    }

    #[test]
    fn one_pinned_job_thread_gives_the_caller_its_cpus_back() {
        let before = crate::sys::allowed_cpus();
        for jobs in [1, 2] {
            let config = BatchConfig::default().with_jobs(jobs).with_pin(Pin::Auto);
            let mut out = Vec::new();
            let lines = "{\"id\":1,\"code_hex\":\"b02ac3\"}\n".repeat(3);
            let summary = run_batch(lines.as_bytes(), &mut out, &config, &mut |_| {}).unwrap();
            assert_eq!(summary.outcomes.get("returned"), Some(&3));
            assert_eq!(crate::sys::allowed_cpus(), before, "--jobs {jobs}");
        }
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
                r#"{{"id": {i}, "code_hex": "{sum}", "input_hex": "{input}", "group": "sum"}}"#
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
        assert_eq!(same_summary.outcomes, fresh_summary.outcomes);
        assert_eq!(fresh_summary.workers, 31, "{fresh_summary:?}");
        // The 30 jobs of group "sum" share workers (a crash ends one); "other" gets its own.
        assert!(same_summary.workers < 31, "{same_summary:?}");
        // Without the group, nothing is shared.
        let ungrouped = lines.replace(r#", "group": "sum""#, "");
        let (_, ungrouped_summary) = run_reusing(&ungrouped, true, Reuse::SameCode);
        assert_eq!(ungrouped_summary.workers, 31, "{ungrouped_summary:?}");
        assert_eq!(
            same_summary.outcomes.get("crashed"),
            Some(&2),
            "{same_summary:?}"
        );
        assert_eq!(same[3].2, Value::from(3 + 9 + 1), "{:?}", same[3]);
    }
}
