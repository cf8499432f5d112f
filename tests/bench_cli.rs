//! `bytejail bench --quick`: the JSON contract users script against (the machine block, every
//! documented row with its floor), the SVG chart and the table. One test in its own binary: it
//! forks thousands of children for about five seconds and must not share the machine with
//! other tests' workers.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bytejail");

/// The row names `docs/costs.md` documents as stable identifiers, each with the floor it is
/// compared with (`None`: a floor itself) and where host and worker run: the pinned CPU, or
/// (`WATCHED`) the child on it and the host watching from another online CPU.
const ROWS: [(&str, Option<&str>, &str); 21] = [
    ("floor_fork_pipe_strict", None, ONE),
    ("floor_pipe_rtt", None, ONE),
    ("floor_parked_first_rtt", None, ONE),
    ("fork_exit_wait", None, ONE),
    ("vfork_exit_wait", Some("fork_exit_wait"), ONE),
    ("run_fresh", Some("floor_fork_pipe_strict"), ONE),
    ("run_fresh_untraced", Some("floor_fork_pipe_strict"), ONE),
    ("run_fresh_noscrub", Some("floor_fork_pipe_strict"), ONE),
    ("run_pool", Some("floor_pipe_rtt"), ONE),
    ("run_batch_input", Some("floor_pipe_rtt"), ONE),
    ("run_zygote", Some("floor_fork_pipe_strict"), ONE),
    ("syscall_none", None, WATCHED),
    ("syscall_strict", Some("syscall_none"), WATCHED),
    ("syscall_bpf_strict", Some("syscall_none"), WATCHED),
    ("syscall_bpf_256_last", Some("syscall_none"), WATCHED),
    ("syscall_bpf_256_args", Some("syscall_none"), WATCHED),
    ("syscall_bpf_docker", Some("syscall_none"), WATCHED),
    ("filter_install_1", None, ONE),
    ("filter_install_256", Some("filter_install_1"), ONE),
    ("filter_install_docker", Some("filter_install_1"), ONE),
    (
        "filter_install_docker_libseccomp",
        Some("filter_install_1"),
        ONE,
    ),
];

/// The rows of a hand-off across two CPUs, measured when the process may run on two: name,
/// floor, second floor.
const TWO_CPU_ROWS: [(&str, Option<&str>, Option<&str>); 4] = [
    ("floor_shm_handoff", None, None),
    (
        "run_batch_input_2cpu",
        Some("floor_shm_handoff"),
        Some("floor_pipe_rtt"),
    ),
    ("run_batch_input_2cpu_nospin", Some("floor_pipe_rtt"), None),
    (
        "run_batch_input_2cpu_file",
        Some("floor_shm_handoff"),
        Some("run_batch_input_2cpu"),
    ),
];

/// `bytejail batch --jobs 2` against `--jobs 1`, started unpinned where two CPUs are allowed:
/// name, floor.
const JOBS_ROWS: [(&str, Option<&str>); 4] = [
    ("cli_batch_jobs1", None),
    ("cli_batch_jobs2", Some("cli_batch_jobs1")),
    ("cli_batch_output_jobs1", None),
    ("cli_batch_output_jobs2", Some("cli_batch_output_jobs1")),
];

const ONE: &str = "1 CPU";
const UNPINNED: &str = "unpinned";
const TWO: &str = "2 CPUs";
/// `syscall_*`: "2 CPUs" where the machine has two online, else "1 CPU".
const WATCHED: &str = "watched";

#[test]
fn quick_json_has_the_machine_and_every_documented_row() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("bench.svg");
    let out = Command::new(BIN)
        .args(["bench", "--quick", "--json", "--svg"])
        .arg(&svg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stderr}", out.status);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object: {e}\n{stderr}"));

    let machine = &json["machine"];
    for key in ["cpu_model", "kernel", "clocksource"] {
        assert!(machine[key].is_string(), "machine.{key}: {machine}");
    }
    assert!(
        machine["cores"].as_u64().is_some_and(|n| n >= 1),
        "{machine}"
    );
    assert!(machine["virtualized"].is_boolean(), "{machine}");
    assert_eq!(machine["quick"], true);

    let results = json["results"].as_array().expect("results is an array");
    let row = |name: &str| results.iter().find(|r| r["name"] == name);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let watched = if online.trim().contains(['-', ',']) {
        TWO
    } else {
        ONE
    };
    let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
    let two_cpu_rows = if allowed >= 2 { &TWO_CPU_ROWS[..] } else { &[] };
    let expected = ROWS
        .iter()
        .map(|&(name, floor, place)| {
            (
                name,
                floor,
                None,
                if place == WATCHED { watched } else { place },
            )
        })
        .chain(
            two_cpu_rows
                .iter()
                .map(|&(name, floor, second)| (name, floor, second, TWO)),
        );
    for (name, floor, second, placement) in expected {
        // The phases' rows come back from a child process: missing means it failed.
        let r = row(name).unwrap_or_else(|| panic!("no row {name}\n{stderr}"));
        let median = r["median_ns"].as_u64().unwrap();
        let p99 = r["p99_ns"].as_u64().unwrap();
        assert!(median > 0 && p99 >= median, "{r}");
        assert!(r["samples"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["floor"].as_str(), floor, "{r}");
        let second = match name {
            // On one CPU, read against the blocking hand-off on two too.
            "run_batch_input" if allowed >= 2 => Some("run_batch_input_2cpu_nospin"),
            // A pooled job is a parked process's first run: read against that too.
            "run_pool" => Some("floor_parked_first_rtt"),
            _ => second,
        };
        assert_eq!(r["second_floor"].as_str(), second, "{r}");
        assert_eq!(r["placement"], placement, "{r}");
    }
    if allowed >= 2 {
        let second_cpu = machine["second_cpu"].as_u64().expect("machine.second_cpu");
        assert_ne!(
            machine["pinned_cpu"].as_u64(),
            Some(second_cpu),
            "{machine}"
        );
    } else {
        assert!(
            stderr.contains(
                "floor_shm_handoff and the run_batch_input_2cpu rows (_nospin, _file) left out"
            ),
            "{stderr}"
        );
    }
    // Every floor a row names was measured in the same run, and every row says where it ran.
    for r in results {
        for key in ["floor", "second_floor"] {
            if let Some(floor) = r[key].as_str() {
                assert!(
                    row(floor).is_some(),
                    "{} names {key} {floor}, not in the results",
                    r["name"]
                );
            }
        }
        let name = r["name"].as_str().unwrap_or("");
        let placements: &[&str] = if JOBS_ROWS.iter().any(|(row, _)| *row == name) {
            &[UNPINNED]
        } else {
            &[ONE, TWO]
        };
        assert!(
            placements.contains(&r["placement"].as_str().unwrap_or("")),
            "pinned rows run on 1 CPU or 2, the --jobs rows unpinned: {r}"
        );
    }
    // What the spun same-code inputs cost the host, said in a note where they ran.
    if row("run_batch_input_2cpu").is_some() {
        assert!(
            stderr.contains("run_batch_input_2cpu: ")
                && stderr.contains("inputs spun")
                && stderr.contains("reset without an fstat"),
            "no note says how the spun inputs went: {stderr}"
        );
    }
    // `--jobs 2` against `--jobs 1`: where there are two CPUs to run on.
    if allowed >= 2 {
        for (name, floor) in JOBS_ROWS {
            let r = row(name).unwrap_or_else(|| panic!("no row {name}\n{stderr}"));
            assert!(r["median_ns"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["floor"].as_str(), floor, "{r}");
        }
    } else {
        assert!(
            stderr.contains("cli_batch_jobs2"),
            "no note says why the --jobs rows are left out: {stderr}"
        );
    }

    // The CLI as whole processes: the batch rows always, the C floors when `cc` is there.
    let mut cli_rows = vec![
        ("cli_batch_same_code", Some("run_batch_input")),
        ("cli_batch_fresh", Some("run_zygote")),
        ("cli_run_1mib_input", None),
        ("cli_batch_1mib_input", Some("cli_run_1mib_input")),
    ];
    let has_cc = Command::new("cc").arg("--version").output().is_ok();
    if has_cc {
        cli_rows.extend([
            ("floor_c_run", None),
            ("cli_run_vs_c", Some("floor_c_run")),
            ("floor_c_version", None),
            ("cli_version_vs_c", Some("floor_c_version")),
        ]);
    } else {
        assert!(
            stderr.contains("cli_run_vs_c"),
            "no note says why cli_run_vs_c is left out: {stderr}"
        );
    }
    for (name, floor) in cli_rows {
        let r = row(name).unwrap_or_else(|| panic!("no row {name}\n{stderr}"));
        assert!(r["median_ns"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["floor"].as_str(), floor, "{r}");
        assert_eq!(r["placement"], ONE, "{r}");
    }

    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(
        chart.starts_with("<svg"),
        "{}",
        &chart[..chart.len().min(80)]
    );
    for name in ROWS
        .iter()
        .map(|r| r.0)
        .chain(two_cpu_rows.iter().map(|r| r.0))
    {
        assert!(chart.contains(name), "the chart has no bar for {name}");
    }
}

/// `docs/costs.md` has a table line for every row the bench always measures and every 2-CPU row,
/// each saying where it runs. Cheap: reads one file, runs nothing beside the bench test.
#[test]
fn costs_md_documents_every_row_and_where_it_runs() {
    let costs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/costs.md")).unwrap();
    let names = ROWS
        .iter()
        .map(|r| (r.0, r.2))
        .chain(TWO_CPU_ROWS.iter().map(|r| (r.0, TWO)))
        .chain(JOBS_ROWS.iter().map(|r| (r.0, UNPINNED)));
    for (name, placement) in names {
        let start = format!("| `{name}` |");
        let line = costs
            .lines()
            .find(|line| line.starts_with(&start))
            .unwrap_or_else(|| panic!("docs/costs.md has no table line for {name}"));
        let placement = if placement == WATCHED { TWO } else { placement };
        assert!(line.contains(&format!(" | {placement} | ")), "{line}");
    }
}
