//! `bytejail bench --quick` in a process that may run on one CPU only: the rows of a hand-off
//! across two CPUs (`floor_shm_handoff`, whose two sides spin, and `run_batch_input_2cpu*`)
//! are left out with a note, never measured on one CPU and never hung on; every other row is
//! there, ran on that CPU alone, and says so. In its own binary: it forks thousands of children
//! for about ten seconds and must not share the machine with other tests' workers.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bytejail");

/// Far above a quick run's ten seconds or so: only a hang gets near it.
const HANG: Duration = Duration::from_secs(240);

#[test]
fn quick_bench_on_one_cpu_leaves_the_two_cpu_rows_out_with_a_note() {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let got = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(
        got,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    let cpu = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, inside the set.
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .expect("this process may run on some CPU");
    // SAFETY: as above.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut one) };

    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut command = Command::new(BIN);
    command
        .args(["bench", "--quick"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    // SAFETY: between fork and exec the child only calls sched_setaffinity, which is
    // async-signal-safe, on a set built before the fork.
    unsafe {
        command.pre_exec(move || {
            match libc::sched_setaffinity(0, std::mem::size_of_val(&one), &one) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "bytejail bench --quick on one CPU still ran after {HANG:?}\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(status.success(), "{status}\n{stderr}");

    let note = "note: floor_shm_handoff and the run_batch_input_2cpu rows (_nospin, _file) \
                left out: this process may run on one CPU only";
    assert!(stdout.contains(note), "no note says why:\n{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|line| !line.starts_with("row "))
        .skip(1)
        .take_while(|line| !line.is_empty())
        .collect();
    let row = |name: &str| {
        rows.iter()
            .find(|line| line.split_whitespace().next() == Some(name))
            .copied()
    };
    for name in [
        "floor_shm_handoff",
        "run_batch_input_2cpu",
        "run_batch_input_2cpu_nospin",
        "run_batch_input_2cpu_file",
    ] {
        assert_eq!(row(name), None, "{name} measured on one CPU:\n{stdout}");
    }
    for name in ["floor_pipe_rtt", "run_batch_input", "run_fresh", "run_pool"] {
        let line = row(name).unwrap_or_else(|| panic!("no row {name}:\n{stdout}"));
        assert!(line.contains("  1 CPU  "), "{line}");
    }
    // Every row ran on the one CPU: none was watched from another (the `syscall_*` rows'
    // host) or spread to one, which the process was kept from.
    for line in &rows {
        assert!(line.contains("  1 CPU  "), "{line}\n{stdout}");
    }
    // Without the blocking two-CPU row, run_batch_input is read against the pipe floor alone.
    let batch = row("run_batch_input").unwrap();
    assert!(!batch.contains("run_batch_input_2cpu_nospin"), "{batch}");
}
