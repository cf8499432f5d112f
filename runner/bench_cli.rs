//! `bytejail bench`: what isolation costs on this machine, as a table, a JSON object or an SVG
//! bar chart. The measuring is `bytejail::bench`; this module parses the flags and prints.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use bytejail::bench::{self, BenchReport, Machine, Row};
use bytejail::{Error, InputError};
use clap::Args;

/// `bytejail bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measure for about 5 s instead of about 20 s (fewer samples per row).
    #[arg(long)]
    pub quick: bool,

    /// Print one JSON object on stdout instead of the table:
    /// {"machine": {...}, "results": [{"name", "median_ns", "p99_ns", "samples", "floor"}]}.
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
    let report = bench::measure(args.quick, &mut progress);

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
        "{:<width$}  {:>10}  {:>10}  {:>7}  vs floor",
        "row", "median", "p99", "samples"
    );
    for row in &report.results {
        let ratio = match (row.floor, report.ratio_to_floor(row)) {
            (Some(floor), Some(ratio)) => format!("{ratio:.2}x {floor}"),
            (Some(floor), None) => format!("({floor} not measured)"),
            (None, _) => "floor".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:>10}  {:>10}  {:>7}  {ratio}",
            row.name,
            duration(row.median_ns),
            duration(row.p99_ns),
            row.samples,
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
    let pinned = match m.pinned_cpu {
        Some(cpu) => format!("pinned to CPU {cpu}"),
        None => "not pinned".to_string(),
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
        let ratio = report
            .ratio_to_floor(row)
            .map(|r| format!(" ({r:.2}x)"))
            .unwrap_or_default();
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
