//! Workers forked by a zygote: the same reports as fresh workers forked by the host; one zygote
//! shared by many threads; no zygote or worker outlives the last handle or the host; and a
//! worker forked by the zygote holds none of the memory the host wrote after the zygote started.
//! Alone in its file, every test serialized: some count this process's children.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytejail::{Gpr, Outcome, Report, RunOptions, Zygote};
use common::{alive, children_of, comm};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn sample(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guest-samples")
        .join(name);
    bytejail::load::load_path(&path, None, 1 << 20).unwrap()
}

/// What a report says about the guest (times and memory use differ from run to run).
fn guest_view(report: &Report) -> impl PartialEq + std::fmt::Debug {
    (
        report.outcome.clone(),
        report.output.clone(),
        report.output_truncated,
        report.syscall.clone(),
    )
}

#[test]
fn zygote_reports_equal_fresh_reports_for_every_outcome() {
    let _serial = serial();
    let zygote = Zygote::start().unwrap();
    let with = |f: fn(&mut RunOptions)| {
        let mut options = RunOptions::default();
        f(&mut options);
        options
    };
    let cases: Vec<(&str, &[u8], RunOptions, &str)> = vec![
        ("return42.s", b"", RunOptions::default(), "returned"),
        (
            "echo.s",
            b"hello, zygote\n",
            RunOptions::default(),
            "returned",
        ),
        ("cli.s", b"", RunOptions::default(), "crashed"),
        (
            "forbid_getpid.s",
            b"",
            RunOptions::default(),
            "syscall_violation",
        ),
        (
            "infinite_loop.s",
            b"",
            with(|o| o.limits.timeout = Duration::from_millis(300)),
            "timeout",
        ),
        (
            "output_flood.s",
            b"",
            with(|o| {
                o.limits.max_output = 4096;
                o.limits.timeout = Duration::from_secs(2);
            }),
            "output_limit",
        ),
        ("exit3.s", b"", RunOptions::default(), "exited"),
        ("hello.s", b"", with(|o| o.scrub = false), "returned"),
    ];
    for (name, input, options, kind) in cases {
        let code = sample(name);
        let fresh = bytejail::run(&code, input, &options).unwrap();
        let zygoted = zygote.run(&code, input, &options).unwrap();
        assert_eq!(fresh.outcome.kind(), kind, "{name}: {fresh:?}");
        assert_eq!(guest_view(&zygoted), guest_view(&fresh), "{name}");
        match name {
            "cli.s" => assert!(
                matches!(&zygoted.outcome, Outcome::Crashed { fault: Some(f), .. } if f.code_offset.is_some()),
                "{zygoted:?}"
            ),
            "forbid_getpid.s" => assert!(zygoted.syscall.is_some(), "no diagnosis: {zygoted:?}"),
            "echo.s" => assert_eq!(zygoted.output, input),
            _ => {}
        }
    }
}

#[test]
fn many_threads_share_one_zygote() {
    let _serial = serial();
    let zygote = Zygote::start().unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let zygote = zygote.clone();
            s.spawn(move || {
                for i in 0..16u8 {
                    let value = t * 16 + i;
                    let code = [0xb0, value, 0xc3]; // mov al, value; ret
                    let report = zygote.run(&code, b"", &RunOptions::default()).unwrap();
                    assert!(
                        matches!(report.outcome, Outcome::Returned(r) if r.rax == value as u64),
                        "{report:?}"
                    );
                }
            });
        }
    });
    drop(zygote);
    assert_eq!(children_of(std::process::id()), Vec::new());
}

#[test]
fn dropping_the_last_handle_ends_the_zygote_and_leaves_no_child() {
    let _serial = serial();
    let me = std::process::id();
    let zygote = Zygote::start().unwrap();
    let pid = zygote.pid();
    let other = zygote.clone();
    let report = other
        .run(&[0xb0, 5, 0xc3], b"", &RunOptions::default())
        .unwrap();
    assert!(matches!(report.outcome, Outcome::Returned(r) if r.rax == 5));
    // While a handle lives the zygote is this process's only child (the worker was reaped).
    let children: Vec<u32> = children_of(me).iter().map(|&(pid, _)| pid).collect();
    assert_eq!(children, [pid]);
    assert_eq!(comm(pid), "bytejail-zygote");
    drop(other);
    assert!(alive(pid), "the zygote ended with a handle left");
    drop(zygote);
    assert!(!alive(pid), "the zygote outlived its last handle");
    assert_eq!(children_of(me), Vec::new(), "children left behind");
}

#[test]
fn a_killed_zygote_is_an_error_not_an_outcome_and_leaves_no_zombie() {
    let _serial = serial();
    let me = std::process::id();
    let zygote = Zygote::start().unwrap();
    let ok = zygote.run(&[0xb0, 1, 0xc3], b"", &RunOptions::default());
    assert!(ok.is_ok(), "{ok:?}");
    // SAFETY: kill(2) on our own child.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(zygote.pid() as i32, libc::SIGKILL);
    }
    while alive(zygote.pid()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let err = zygote.run(&[0xb0, 1, 0xc3], b"", &RunOptions::default());
    assert!(
        matches!(err, Err(bytejail::Error::Runner { .. })),
        "{err:?}"
    );
    drop(zygote);
    assert_eq!(children_of(me), Vec::new(), "children left behind");
}

/// Run by the test below in a child process: start a zygote, run a spinning guest through it,
/// say so once the worker exists, and wait to be killed.
#[test]
#[ignore = "helper for killing_the_host_ends_the_zygote_and_its_workers"]
fn zygote_host() {
    let zygote = Zygote::start().unwrap();
    let spinner = zygote.clone();
    std::thread::spawn(move || {
        let mut options = RunOptions::default();
        options.limits.timeout = Duration::from_secs(60);
        let _ = spinner.run(&[0xeb, 0xfe], b"", &options); // jmp $
    });
    let me = std::process::id();
    // A worker takes its name just after the zygote forked it.
    while !children_of(me)
        .iter()
        .any(|&(pid, _)| comm(pid) == "bytejail-worker")
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("ready");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn killing_the_host_ends_the_zygote_and_its_workers() {
    let _serial = serial();
    let (mut host, _out) = common::start_host("zygote_host");
    let mut names: Vec<String> = children_of(host.id())
        .iter()
        .map(|&(pid, _)| comm(pid))
        .collect();
    names.sort();
    assert_eq!(names, ["bytejail-worker", "bytejail-zygote"]);
    let children = children_of(host.id());
    assert!(children.iter().all(|&(pid, _)| alive(pid)));
    host.kill().unwrap();
    host.wait().unwrap();
    let killed = Instant::now();
    while children.iter().any(|&(pid, _)| alive(pid)) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "the zygote or its worker outlived the host by 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A secret no file in the repository holds: it exists only in this run's memory.
fn fresh_secret() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bytejail-secret-{nanos:x}-{:x}", std::process::id())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Puts a fresh secret in this process's heap and hunts for it with an unscrubbed worker
/// (`tests/hardening.rs`' range hunt), forked by `via` or by the host.
fn hunt_heap_unscrubbed(via: Option<&Zygote>) -> (String, Report) {
    let secret = fresh_secret();
    let held: Box<[u8]> = secret.as_bytes().into();
    let page = held.as_ptr() as u64 & !0xfff;
    let code = common::escape_sample("hunt_range.s");
    let mut options = RunOptions::default().with_scrub(false);
    options.registers.set(Gpr::RBX, page - 16 * 4096).unwrap();
    options
        .registers
        .set("r12".parse().unwrap(), 33 * 4096)
        .unwrap();
    options.limits.timeout = Duration::from_secs(20);
    options.limits.max_output = 1 << 20;
    let report = match via {
        Some(zygote) => zygote.run(&code, b"", &options),
        None => bytejail::run(&code, b"", &options),
    }
    .unwrap();
    drop(held);
    (secret, report)
}

#[test]
fn an_unscrubbed_worker_of_the_zygote_cannot_find_a_secret_written_after_it_started() {
    let _serial = serial();
    let zygote = Zygote::start().unwrap();
    let (secret, report) = hunt_heap_unscrubbed(Some(&zygote));
    assert!(
        matches!(report.outcome, Outcome::Returned(_)),
        "{:?}",
        report.outcome
    );
    assert!(
        !contains(&report.output, &secret),
        "the zygote's worker found the secret"
    );
}

#[test]
fn an_unscrubbed_worker_forked_by_the_host_finds_the_same_secret() {
    let _serial = serial();
    let zygote = Zygote::start().unwrap();
    let (secret, report) = hunt_heap_unscrubbed(None);
    drop(zygote);
    assert!(
        matches!(report.outcome, Outcome::Returned(_)),
        "{:?}",
        report.outcome
    );
    assert!(
        contains(&report.output, &secret),
        "the hunt read {} bytes but not the secret",
        report.output.len()
    );
}

/// Kills `zygote` (from outside, as the OOM killer or an operator would) and waits until it
/// has ended.
fn kill_zygote(pid: u32) {
    // SAFETY: kill(2) on our own child.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        assert!(Instant::now() < deadline, "zygote {pid} still alive");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn returned_rax(report: &Report) -> u64 {
    match &report.outcome {
        Outcome::Returned(regs) => regs.rax,
        other => panic!("expected a return, got {other:?}: {}", report.summary()),
    }
}

// The twin of the three below is `a_killed_zygote_is_an_error_not_an_outcome_and_leaves_no_zombie`:
// a zygote handle of the caller's own stays dead, and every job through it fails.

#[test]
fn a_pool_whose_zygote_was_killed_starts_another() {
    let _serial = serial();
    let zygote = Zygote::start().unwrap();
    let pool = bytejail::Pool::with_zygote(RunOptions::default(), 2, &zygote).unwrap();
    let code = [0xb0, 7, 0xc3];
    assert_eq!(
        returned_rax(&pool.run(&code, b"", &RunOptions::default()).unwrap()),
        7
    );
    assert!(!zygote.has_ended());
    // Full again, so that the refill thread, not a job's fallback, meets the dead zygote.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.stats().parked < 2 {
        assert!(Instant::now() < deadline, "the pool never refilled");
        std::thread::sleep(Duration::from_millis(1));
    }
    kill_zygote(zygote.pid());
    assert!(zygote.has_ended());
    // The parked workers live on (the host's children); once they are used up, the refill
    // needs a zygote again.
    for i in 0..8u8 {
        let code = [0xb0, i, 0xc3];
        let report = pool.run(&code, b"", &RunOptions::default());
        let report = report.unwrap_or_else(|e| panic!("job {i} after the zygote died: {e}"));
        assert_eq!(returned_rax(&report), u64::from(i));
    }
    assert!(
        pool.stats().fallbacks < 8,
        "the pool parks workers again: {:?}",
        pool.stats()
    );
    // The new zygote was started by the refill thread, which runs under SCHED_BATCH (3); the
    // zygote, and so its workers, under the caller's policy, SCHED_OTHER (0), as the first.
    let policy = |stat: String| -> u32 {
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        fields[38].parse().unwrap() // field 41 of stat (the first after the name is 3): policy
    };
    let refill = common::threads_named("bytejail-pool");
    let refill = refill.first().expect("the refill thread");
    let refill_policy = policy(std::fs::read_to_string(refill.join("stat")).unwrap());
    assert_eq!(refill_policy, libc::SCHED_BATCH as u32);
    let zygotes: Vec<u32> = children_of(std::process::id())
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|&pid| comm(pid) == "bytejail-zygote" && alive(pid))
        .collect();
    assert!(!zygotes.is_empty(), "a new zygote");
    for pid in zygotes {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        eprintln!(
            "zygote {pid} policy {} fallbacks {:?}",
            policy(stat.clone()),
            pool.stats()
        );
        assert_eq!(policy(stat), libc::SCHED_OTHER as u32, "zygote {pid}");
    }
}

#[test]
fn a_same_code_session_whose_zygote_was_killed_starts_another() {
    let _serial = serial();
    let zygote = Zygote::start().unwrap();
    // A guest that crashes when its input's first byte is 1: its worker dies, and the next
    // input needs a new one.
    let code = common::gas("movzx eax, byte ptr [rdi]\ncmp al, 1\njne 1f\nud2\n1: ret");
    let options = RunOptions::default();
    let mut session = bytejail::SameCode::with_zygote(&code, &options, &zygote).unwrap();
    assert_eq!(returned_rax(&session.run(&[5]).unwrap()), 5);
    kill_zygote(zygote.pid());
    let crashed = session.run(&[1]).unwrap();
    assert!(
        matches!(crashed.outcome, Outcome::Crashed { .. }),
        "{}",
        crashed.summary()
    );
    for i in [2u8, 3, 4] {
        let report = session.run(&[i]);
        let report = report.unwrap_or_else(|e| panic!("input {i} after the zygote died: {e}"));
        assert_eq!(returned_rax(&report), u64::from(i));
    }
}

#[test]
fn a_batch_thread_whose_zygote_was_killed_starts_another() {
    let _serial = serial();
    let mut batch = common::Batch::start(&["--jobs", "1"]);
    let ask = |batch: &mut common::Batch, i: u8| {
        let line = format!("{{\"id\": {i}, \"code_hex\": \"b0{i:02x}c3\"}}");
        let (answer, _) = batch.ask(&line);
        assert_eq!(answer["outcome"], "returned", "job {i}: {answer}");
        assert_eq!(answer["rax"], i, "job {i}: {answer}");
    };
    // The second job starts the thread's zygote.
    ask(&mut batch, 1);
    ask(&mut batch, 2);
    let zygotes: Vec<u32> = children_of(batch.child.id())
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|&pid| comm(pid) == "bytejail-zygote")
        .collect();
    assert_eq!(zygotes.len(), 1, "one zygote after two jobs");
    kill_zygote(zygotes[0]);
    for i in 3..7 {
        ask(&mut batch, i);
    }
    let (status, stderr) = batch.finish();
    assert_eq!(status, 0, "{stderr}");
}
