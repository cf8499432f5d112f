//! `bytejail bench`: what isolation costs on this machine, as a table, a JSON object or an SVG
//! bar chart. The measuring is `bytejail::bench`; this module parses the flags and prints.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytejail::bench::{self, BenchReport, Machine, Placement, Row};
use bytejail::{Error, InputError};
use clap::Args;

/// `bytejail bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measure for about 5 s instead of about 20 s (fewer samples per row).
    #[arg(long)]
    pub quick: bool,

    /// Print one JSON object on stdout instead of the table: {"machine": {...}, "results":
    /// [{"name", "median_ns", "p99_ns", "samples", "floor", "second_floor", "placement"}]};
    /// "placement" is where host and worker ran: "1 CPU", "2 CPUs" or "unpinned".
    #[arg(long)]
    pub json: bool,

    /// Also write the results as a horizontal bar chart (SVG, log scale) to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// Measures, then prints the table (or the JSON) on stdout and writes the chart. Progress goes
/// to stderr.
pub fn bench(args: BenchArgs) -> Result<(), Error> {
    // Open the chart's file first: a bad path should not cost the whole measurement.
    let svg_file = match &args.svg {
        Some(path) => Some(File::create(path).map_err(|source| {
            InputError::Invalid(format!("cannot write {}: {source}", path.display()))
        })?),
        None => None,
    };

    let mut progress = |line: &str| {
        let _ = writeln!(io::stderr().lock(), "bytejail bench: {line}");
    };
    let mut report = bench::measure(args.quick, &mut progress);
    cli_rows(&mut report, args.quick, &mut progress);

    if let Some(mut file) = svg_file {
        file.write_all(svg(&report).as_bytes())
            .map_err(|source| Error::Runner {
                what: "writing the SVG chart",
                source,
            })?;
    }
    let text = if args.json {
        let mut line = serde_json::to_string(&report).map_err(|e| Error::Runner {
            what: "encoding the results as JSON",
            source: io::Error::other(e),
        })?;
        line.push('\n');
        line
    } else {
        table(&report)
    };
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A reader that went away (`bytejail bench | head`) is not a failure.
        Err(source) if source.kind() != io::ErrorKind::BrokenPipe => Err(Error::Runner {
            what: "writing to stdout",
            source,
        }),
        _ => Ok(()),
    }
}

/// The C program that is the floor of `cli_run_vs_c` and `cli_version_vs_c`.
const RUN_FLOOR_C: &str = include_str!("../benches/run_floor.c");

/// `mov al, 42; ret`.
const RETURN_42: [u8; 3] = [0xb0, 0x2a, 0xc3];

/// Jobs of the base batch a `cli_batch_*` sample subtracts: enough that every job thread
/// of `--jobs 2` is started, and its zygote, which a thread starts with its second job.
const WARM_JOBS: usize = 20;

/// Jobs per sample of the `cli_batch_*` rows, past the [`WARM_JOBS`] that pay the start-up.
const SAME_CODE_JOBS: usize = 1000;
const FRESH_JOBS: usize = 200;
const OUTPUT_JOBS: usize = 100;

/// Fills 64 KiB of scratch with `a` and writes it to fd 1, then returns:
/// `mov r8, rdx; mov rdi, rdx; mov ecx, 0x10000; mov al, 'a'; rep stosb; mov rsi, r8;
/// mov edx, 0x10000; mov edi, 1; mov eax, 1; syscall; ret`.
const WRITE_64KIB_HEX: &str =
    "4989d04889d7b900000100b061f3aa4c89c6ba00000100bf01000000b8010000000f05c3";

/// One row of [`cli_rows`]: how to take a sample, and the samples (nanoseconds) taken.
struct CliRow<'a> {
    name: &'static str,
    floor: Option<&'static str>,
    sample: Box<dyn FnMut() -> io::Result<f64> + 'a>,
    samples: Vec<f64>,
    /// Where the row's processes ran, when not where this process is pinned.
    placement: Option<Placement>,
}

/// What the CLI costs as a user runs it, as whole processes spawned (`posix_spawn` + wait, by
/// `std::process::Command`) from this one, rows and their floors alternating sample by sample,
/// medians:
///
/// - `floor_c_run` / `cli_run_vs_c`: `benches/run_floor.c` (built with `cc -O2`, dynamically
///   linked) and `bytejail run --json` on the same code file; `floor_c_version` /
///   `cli_version_vs_c`: the same two with `--version`. Left out without a C compiler.
/// - `cli_batch_same_code` (floor `run_batch_input`) and `cli_batch_fresh` (floor
///   `run_zygote`): one job of `bytejail batch --jobs 1` (`--reuse same-code` and one group
///   for the first), as (batch of 20+N jobs - batch of 20 jobs) / N: the start-up taken out
///   (each job thread, its zygote and tracer are started within the first 20 jobs).
/// - `cli_run_1mib_input` / `cli_batch_1mib_input`: one job with 1 MiB of input, through
///   `run --input FILE` and as a batch line (2 MiB of `input_hex`).
/// - `cli_batch_jobs1` / `cli_batch_jobs2` (floor `cli_batch_jobs1`): one fresh trivial job of
///   `bytejail batch --jobs 1` and `--jobs 2`, as for `cli_batch_fresh`; the ratio is per-job
///   time on two threads over one (a speed-up of 1.8x is a ratio of 0.56).
///   `cli_batch_output_jobs1` / `cli_batch_output_jobs2`: the same with jobs that each write
///   64 KiB (`output_hex` and `output_text` in every result line). Unpinned: `batch` started
///   free to run on every CPU the bench may use, as a user runs it (with its default
///   `--pin auto`, so its job threads pin themselves); left out on one CPU.
///
/// Pinned to one CPU, as the library rows are (children inherit it), but for the `--jobs`
/// rows.
fn cli_rows(report: &mut BenchReport, quick: bool, progress: &mut dyn FnMut(&str)) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            report
                .notes
                .push(format!("cli_* rows left out: no path to bytejail ({e})"));
            return;
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            report
                .notes
                .push(format!("cli_* rows left out: no temporary directory ({e})"));
            return;
        }
    };
    let files = CliFiles::write(dir.path());
    let files = match files {
        Ok(files) => files,
        Err(e) => {
            report.notes.push(format!(
                "cli_* rows left out: cannot write their files ({e})"
            ));
            return;
        }
    };
    let floor_c = build_run_floor(dir.path());
    if let Err(why) = &floor_c {
        report.notes.push(format!(
            "floor_c_run, cli_run_vs_c, floor_c_version and cli_version_vs_c left out: {why}"
        ));
    }
    let placement = match bench::pin_to_quiet_cpu() {
        Some(_) => Placement::OneCpu,
        None if report.machine.cores <= 1 => Placement::OneCpu,
        None => Placement::Unpinned,
    };
    progress("the CLI as whole processes");

    let code = files.code.as_os_str();
    let spawn = |program: &Path, args: &[&OsStr], stdin: Option<&Path>, expect: i32| {
        let stdin = match stdin {
            Some(path) => std::process::Stdio::from(File::open(path)?),
            None => std::process::Stdio::null(),
        };
        let started = std::time::Instant::now();
        let status = std::process::Command::new(program)
            .args(args)
            .stdin(stdin)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        let elapsed = started.elapsed().as_nanos() as f64;
        match status.code() {
            Some(code) if code == expect => Ok(elapsed),
            _ => Err(io::Error::other(format!(
                "{} {args:?} ended with {status}, not {expect}",
                program.display()
            ))),
        }
    };
    let batch_on = |file: &Path, same_code: bool, jobs: &str| {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("batch"),
            OsStr::new("--jobs"),
            OsStr::new(jobs),
            OsStr::new("-q"),
        ];
        if same_code {
            args.extend([OsStr::new("--reuse"), OsStr::new("same-code")]);
        }
        args.push(file.as_os_str());
        spawn(&exe, &args, None, 0)
    };
    let batch = |file: &Path, same_code: bool| batch_on(file, same_code, "1");
    let mut rows: Vec<CliRow> = Vec::new();
    if let Ok(floor) = &floor_c {
        rows.push(CliRow::new("floor_c_run", None, move || {
            spawn(floor, &[code], None, 42)
        }));
        rows.push(CliRow::new("cli_run_vs_c", Some("floor_c_run"), || {
            spawn(
                &exe,
                &[OsStr::new("run"), OsStr::new("--json"), code],
                None,
                42,
            )
        }));
        rows.push(CliRow::new("floor_c_version", None, move || {
            spawn(floor, &[OsStr::new("--version")], None, 0)
        }));
        rows.push(CliRow::new(
            "cli_version_vs_c",
            Some("floor_c_version"),
            || spawn(&exe, &[OsStr::new("--version")], None, 0),
        ));
    }
    for (name, floor, same_code, many, jobs) in [
        (
            "cli_batch_same_code",
            "run_batch_input",
            true,
            &files.same_code,
            SAME_CODE_JOBS,
        ),
        (
            "cli_batch_fresh",
            "run_zygote",
            false,
            &files.fresh,
            FRESH_JOBS,
        ),
    ] {
        let (warm, batch) = (&files.warm, &batch);
        rows.push(CliRow::new(name, Some(floor), move || {
            let warm = batch(warm, same_code)?;
            let many = batch(many, same_code)?;
            Ok((many - warm).max(0.0) / jobs as f64)
        }));
    }
    rows.push(CliRow::new("cli_run_1mib_input", None, || {
        spawn(
            &exe,
            &[
                OsStr::new("run"),
                OsStr::new("--json"),
                OsStr::new("-q"),
                OsStr::new("--input"),
                files.input.as_os_str(),
                code,
            ],
            None,
            42,
        )
    }));
    rows.push(CliRow::new(
        "cli_batch_1mib_input",
        Some("cli_run_1mib_input"),
        || batch(&files.big_line, false),
    ));
    if report.machine.cores >= 2 {
        for (name, floor, jobs, warm, many, count) in [
            (
                "cli_batch_jobs1",
                None,
                "1",
                &files.warm,
                &files.fresh,
                FRESH_JOBS,
            ),
            (
                "cli_batch_jobs2",
                Some("cli_batch_jobs1"),
                "2",
                &files.warm,
                &files.fresh,
                FRESH_JOBS,
            ),
            (
                "cli_batch_output_jobs1",
                None,
                "1",
                &files.output_warm,
                &files.output_many,
                OUTPUT_JOBS,
            ),
            (
                "cli_batch_output_jobs2",
                Some("cli_batch_output_jobs1"),
                "2",
                &files.output_warm,
                &files.output_many,
                OUTPUT_JOBS,
            ),
        ] {
            let batch_on = &batch_on;
            let mut row = CliRow::new(name, floor, move || {
                let (warm, many) = bench::unpinned(|| {
                    Ok::<_, io::Error>((batch_on(warm, false, jobs)?, batch_on(many, false, jobs)?))
                })??;
                Ok((many - warm).max(0.0) / count as f64)
            });
            row.placement = Some(Placement::Unpinned);
            rows.push(row);
        }
    } else {
        report.notes.push(
            "cli_batch_jobs1, cli_batch_jobs2, cli_batch_output_jobs1 and \
             cli_batch_output_jobs2 left out: they need two CPUs"
                .into(),
        );
    }

    let budget = std::time::Duration::from_secs(if quick { 4 } else { 12 });
    let started = std::time::Instant::now();
    let mut round = 0;
    // At least three rounds (the first is a warm-up, dropped), then until the budget is spent.
    while round < 3 || started.elapsed() < budget {
        let count = rows.len();
        for i in 0..count {
            // Every other round backwards: no row always follows the same neighbour.
            let row = &mut rows[if round % 2 == 0 { i } else { count - 1 - i }];
            match (row.sample)() {
                Ok(ns) if round > 0 => row.samples.push(ns),
                Ok(_) => {}
                Err(e) => {
                    report.notes.push(format!("{} left out: {e}", row.name));
                    row.samples.clear();
                    row.sample = Box::new(|| Err(io::Error::other("failed before")));
                }
            }
        }
        rows.retain(|row| round == 0 || !row.samples.is_empty());
        round += 1;
        if rows.is_empty() {
            break;
        }
    }
    for row in rows {
        if let Some(row) = row.tally(placement) {
            report.results.push(row);
        }
    }
    drop(dir);
}

impl<'a> CliRow<'a> {
    fn new(
        name: &'static str,
        floor: Option<&'static str>,
        sample: impl FnMut() -> io::Result<f64> + 'a,
    ) -> CliRow<'a> {
        CliRow {
            name,
            floor,
            sample: Box::new(sample),
            samples: Vec::new(),
            placement: None,
        }
    }

    fn tally(mut self, placement: Placement) -> Option<Row> {
        if self.samples.is_empty() {
            return None;
        }
        self.samples.sort_by(f64::total_cmp);
        let at = |q: f64| self.samples[((self.samples.len() - 1) as f64 * q).round() as usize];
        Some(Row {
            name: self.name,
            median_ns: at(0.5) as u64,
            p99_ns: at(0.99) as u64,
            samples: self.samples.len(),
            floor: self.floor,
            second_floor: None,
            placement: self.placement.unwrap_or(placement),
        })
    }
}

/// The files the `cli_*` rows run.
struct CliFiles {
    /// `mov al, 42; ret`, raw.
    code: PathBuf,
    /// 1 MiB of input, raw.
    input: PathBuf,
    /// [`WARM_JOBS`] trivial job lines of one group.
    warm: PathBuf,
    /// [`WARM_JOBS`] + [`SAME_CODE_JOBS`] trivial job lines of one group.
    same_code: PathBuf,
    /// [`WARM_JOBS`] + [`FRESH_JOBS`] trivial job lines.
    fresh: PathBuf,
    /// One job line with 1 MiB of `input_hex`.
    big_line: PathBuf,
    /// [`WARM_JOBS`] job lines writing 64 KiB each.
    output_warm: PathBuf,
    /// [`WARM_JOBS`] + [`OUTPUT_JOBS`] job lines writing 64 KiB each.
    output_many: PathBuf,
}

impl CliFiles {
    fn write(dir: &Path) -> io::Result<CliFiles> {
        let path = |name: &str| dir.join(name);
        let files = CliFiles {
            code: path("code.bin"),
            input: path("input.bin"),
            warm: path("warm.jsonl"),
            same_code: path("same_code.jsonl"),
            fresh: path("fresh.jsonl"),
            big_line: path("big_line.jsonl"),
            output_warm: path("output_warm.jsonl"),
            output_many: path("output_many.jsonl"),
        };
        std::fs::write(&files.code, RETURN_42)?;
        let input: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&files.input, &input)?;
        let line = |group: bool| {
            format!(
                "{{\"id\":1,\"code_hex\":\"b02ac3\"{}}}\n",
                if group { ",\"group\":\"g\"" } else { "" }
            )
        };
        std::fs::write(&files.warm, line(true).repeat(WARM_JOBS))?;
        std::fs::write(
            &files.same_code,
            line(true).repeat(WARM_JOBS + SAME_CODE_JOBS),
        )?;
        std::fs::write(&files.fresh, line(false).repeat(WARM_JOBS + FRESH_JOBS))?;
        let mut big = String::with_capacity(input.len() * 2 + 64);
        big.push_str("{\"id\":1,\"code_hex\":\"b02ac3\",\"input_hex\":\"");
        for byte in &input {
            let _ = write!(big, "{byte:02x}");
        }
        big.push_str("\"}\n");
        std::fs::write(&files.big_line, big)?;
        let output = format!("{{\"id\":1,\"code_hex\":\"{WRITE_64KIB_HEX}\"}}\n");
        std::fs::write(&files.output_warm, output.repeat(WARM_JOBS))?;
        std::fs::write(&files.output_many, output.repeat(WARM_JOBS + OUTPUT_JOBS))?;
        Ok(files)
    }
}

/// Builds `benches/run_floor.c` in `dir` with `cc -O2`; the program, or why not.
fn build_run_floor(dir: &Path) -> Result<PathBuf, String> {
    let source = dir.join("run_floor.c");
    let program = dir.join("run_floor");
    std::fs::write(&source, RUN_FLOOR_C).map_err(|e| format!("cannot write run_floor.c: {e}"))?;
    let out = std::process::Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(&source)
        .output()
        .map_err(|e| format!("no C compiler (`cc`: {e})"))?;
    if !out.status.success() {
        return Err(format!(
            "`cc` could not build run_floor.c: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(program)
}

/// The machine block and the table, as printed without `--json`.
pub fn table(report: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", machine_line(&report.machine));
    let _ = writeln!(out);
    let width = report
        .results
        .iter()
        .map(|row| row.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:<width$}  {:>10}  {:>10}  {:>7}  {:<8}  vs floor",
        "row", "median", "p99", "samples", "where"
    );
    for row in &report.results {
        let versus = |floor: &str, ratio: Option<f64>| match ratio {
            Some(ratio) => format!("{ratio:.2}x {floor}"),
            None => format!("({floor} not measured)"),
        };
        let mut ratio = match row.floor {
            Some(floor) => versus(floor, report.ratio_to_floor(row)),
            None => "floor".to_string(),
        };
        if let Some(second) = row.second_floor {
            ratio = format!(
                "{ratio}; {}",
                versus(second, report.ratio_to_second_floor(row))
            );
        }
        let _ = writeln!(
            out,
            "{:<width$}  {:>10}  {:>10}  {:>7}  {:<8}  {ratio}",
            row.name,
            duration(row.median_ns),
            duration(row.p99_ns),
            row.samples,
            row.placement.label(),
        );
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out);
        for note in &report.notes {
            let _ = writeln!(out, "note: {note}");
        }
    }
    out
}

/// One line about the machine: `machine: AMD EPYC, 2 cores, Linux 6.18.0, ...`.
fn machine_line(m: &Machine) -> String {
    let [hardware, run] = machine_parts(m);
    format!("machine: {hardware}, {run}")
}

/// The machine in two halves: the hardware and kernel, then the run's conditions.
fn machine_parts(m: &Machine) -> [String; 2] {
    let vm = match (&m.hypervisor, m.virtualized) {
        (Some(name), _) => format!("VM ({name})"),
        (None, true) => "VM".to_string(),
        (None, false) => "bare metal".to_string(),
    };
    let pinned = match (m.pinned_cpu, m.second_cpu) {
        (Some(cpu), Some(other)) => format!("pinned to CPU {cpu} (2-CPU rows: and {other})"),
        (Some(cpu), None) => format!("pinned to CPU {cpu}"),
        (None, _) => "not pinned".to_string(),
    };
    let [one, five, fifteen] = m.load_average;
    [
        format!(
            "{}, {} cores, Linux {}, clocksource {}, {vm}",
            m.cpu_model, m.cores, m.kernel, m.clocksource
        ),
        format!(
            "THP {}, {pinned}, load {one:.2} {five:.2} {fifteen:.2}; bytejail {}, {:.1} s{}",
            m.transparent_hugepages,
            m.bytejail_version,
            m.seconds,
            if m.quick { " (--quick)" } else { "" },
        ),
    ]
}

/// `312 ns`, `45.2 µs`, `1.23 ms`, `2.50 s`: three significant digits.
fn duration(ns: u64) -> String {
    let ns = ns as f64;
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    let decimals = if unit == "ns" || value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {unit}")
}

/// A horizontal bar chart of the medians on a log scale, with each row's p99 as a whisker.
pub fn svg(report: &BenchReport) -> String {
    const LABEL: f64 = 230.0; // width of the name column
    const PLOT: f64 = 560.0; // width of the plot
    const RIGHT: f64 = 150.0; // room for the value and the ratio
    const ROW: f64 = 22.0;
    const TOP: f64 = 66.0;
    let rows = &report.results;
    let positive = |ns: u64| (ns.max(1)) as f64;
    let low = rows
        .iter()
        .map(|r| positive(r.median_ns))
        .fold(f64::INFINITY, f64::min);
    let high = rows
        .iter()
        .map(|r| positive(r.p99_ns.max(r.median_ns)))
        .fold(1.0, f64::max);
    let (low_decade, high_decade) = if rows.is_empty() {
        (2, 6)
    } else {
        (
            low.log10().floor() as i32,
            (high.log10().ceil() as i32).max(low.log10().floor() as i32 + 1),
        )
    };
    let x = |ns: f64| {
        let t = (ns.log10() - f64::from(low_decade)) / f64::from(high_decade - low_decade);
        LABEL + PLOT * t.clamp(0.0, 1.0)
    };
    let width = LABEL + PLOT + RIGHT;
    let height = TOP + ROW * rows.len() as f64 + 40.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"monospace\" font-size=\"12\">"
    );
    let _ = writeln!(
        out,
        "<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        out,
        "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">What isolation costs \
         (median, whisker to p99; log scale)</text>"
    );
    for (line, text) in machine_parts(&report.machine).iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{}\" font-size=\"10\">{}</text>",
            36 + 13 * line,
            escape(text)
        );
    }
    // Decade grid lines and their labels.
    let bottom = TOP + ROW * rows.len() as f64;
    for decade in low_decade..=high_decade {
        let gx = x(10f64.powi(decade));
        let _ = writeln!(
            out,
            "<line x1=\"{gx:.1}\" y1=\"{:.1}\" x2=\"{gx:.1}\" y2=\"{bottom:.1}\" stroke=\"#ddd\"/>",
            TOP - 6.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{gx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            bottom + 16.0,
            decade_label(decade)
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let (bar_end, whisker) = (x(positive(row.median_ns)), x(positive(row.p99_ns)));
        // Rows not on the pinned CPU alone say where they ran.
        let place = match row.placement {
            Placement::OneCpu => None,
            other => Some(other.label().to_string()),
        };
        let ratio = report.ratio_to_floor(row).map(|r| format!("{r:.2}x"));
        let ratio = match [ratio, place].into_iter().flatten().collect::<Vec<_>>() {
            parts if parts.is_empty() => String::new(),
            parts => format!(" ({})", parts.join(", ")),
        };
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LABEL - 8.0,
            y + 14.0,
            escape(row.name)
        );
        let _ = writeln!(
            out,
            "<rect x=\"{LABEL}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
            y + 3.0,
            (bar_end - LABEL).max(1.0),
            ROW - 6.0,
            colour(row)
        );
        let _ = writeln!(
            out,
            "<line x1=\"{bar_end:.1}\" y1=\"{:.1}\" x2=\"{whisker:.1}\" y2=\"{:.1}\" \
             stroke=\"#333\"/><line x1=\"{whisker:.1}\" y1=\"{:.1}\" x2=\"{whisker:.1}\" \
             y2=\"{:.1}\" stroke=\"#333\"/>",
            y + ROW / 2.0,
            y + ROW / 2.0,
            y + 6.0,
            y + ROW - 6.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}{}</text>",
            whisker.max(bar_end) + 6.0,
            y + 14.0,
            escape(&duration(row.median_ns)),
            escape(&ratio)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// `100 ns`, `1 µs`, `10 µs`, ... for 10^`decade` nanoseconds.
fn decade_label(decade: i32) -> String {
    let units = ["ns", "µs", "ms", "s"];
    let decade = decade.max(0);
    let unit = (decade / 3).min(3);
    format!(
        "{} {}",
        10u64.pow((decade - unit * 3) as u32),
        units[unit as usize]
    )
}

/// A colour per family of rows.
fn colour(row: &Row) -> &'static str {
    let name = row.name;
    if name.starts_with("floor_") {
        "#888888"
    } else if name.starts_with("run_") {
        "#1b9e77"
    } else if name.starts_with("syscall_") {
        "#7570b3"
    } else if name.starts_with("filter_") {
        "#e7298a"
    } else if name.starts_with("external_") {
        "#e6ab02"
    } else {
        "#d95f02"
    }
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_are_labelled_plainly() {
        assert_eq!(decade_label(2), "100 ns");
        assert_eq!(decade_label(3), "1 µs");
        assert_eq!(decade_label(7), "10 ms");
    }

    #[test]
    fn durations_have_three_significant_digits() {
        assert_eq!(duration(312), "312 ns");
        assert_eq!(duration(45_210), "45.2 µs");
        assert_eq!(duration(1_234_000), "1.23 ms");
        assert_eq!(duration(263_100), "263 µs");
    }
}
