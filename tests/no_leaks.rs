//! Ten thousand runs leave the host as they found it: the same open descriptors, no children,
//! no zombies. Alone in its file so that no other test opens descriptors meanwhile.

use bytejail::{Outcome, RunOptions};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Processes whose parent is this process (live children and zombies alike).
fn children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&me.as_str()) {
            found.push(format!(
                "{} state {}",
                entry.file_name().to_string_lossy(),
                fields[0]
            ));
        }
    }
    found
}

#[test]
fn ten_thousand_runs_leak_no_fd_child_or_zombie() {
    // One run first, so that lazily opened descriptors of the process exist before counting.
    bytejail::run(&[0xc3], b"", &RunOptions::default()).unwrap();
    let fds_before = open_fds();
    assert!(children().is_empty());
    let codes: [&[u8]; 4] = [
        &[0xb0, 0x01, 0xc3],                            // returned
        &[0x0f, 0x0b],                                  // crashed SIGILL
        &[0xb8, 0x27, 0, 0, 0, 0x0f, 0x05],             // getpid: syscall_violation
        &[0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05], // exit(0)
    ];
    let input = b"some input the guests do not read";
    for i in 0..10_000 {
        let report = bytejail::run(codes[i % 4], input, &RunOptions::default()).unwrap();
        let kind = ["returned", "crashed", "syscall_violation", "exited"][i % 4];
        assert_eq!(report.outcome.kind(), kind, "run {i}: {:?}", report.outcome);
        if i % 4 == 1 {
            assert!(matches!(
                report.outcome,
                Outcome::Crashed {
                    signal: libc::SIGILL,
                    ..
                }
            ));
        }
    }
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
    assert_eq!(
        children(),
        Vec::<String>::new(),
        "children or zombies left behind"
    );
}
