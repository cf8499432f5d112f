//! Ten thousand runs leave the host as they found it: the same open descriptors, no children,
//! no zombies. Alone in its file so that no other test opens descriptors meanwhile.

mod common;

use bytejail::{Outcome, RunOptions};
use common::children_of;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn ten_thousand_runs_leak_no_fd_child_or_zombie() {
    // One run first, so that lazily opened descriptors of the process exist before counting.
    bytejail::run(&[0xc3], b"", &RunOptions::default()).unwrap();
    let fds_before = open_fds();
    assert!(children_of(std::process::id()).is_empty());
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
        children_of(std::process::id()),
        Vec::new(),
        "children or zombies left behind"
    );
    // One tracer process for the whole host, however many traced workers it had.
    let me = std::process::id();
    let tracers: Vec<u32> = common::all_children_of(me)
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|&pid| common::comm(pid) == "bytejail-tracer")
        .collect();
    assert_eq!(tracers.len(), 1, "{tracers:?}");
}
