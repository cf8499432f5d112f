//! seccomp-bpf policies on the real kernel: the classic libseccomp example as a profile, a
//! raw packet socket under a profile that allows `socket` (EPERM: the worker holds no
//! capabilities) and under strict mode (killed), and what filter mode does to the worker.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytejail::load::{assemble, Format};
use bytejail::{Outcome, Policy, Report, RunOptions};

const BYTEJAIL: &str = env!("CARGO_BIN_EXE_bytejail");

/// The libseccomp example: allow exit_group, getpid, brk; write only to fd 1 with count <= 512;
/// a write to any other fd fails with EBADF; anything else kills.
const LIBSECCOMP_EXAMPLE: &str = include_str!("../guest-samples/policies/libseccomp-example.json");

fn run_gas(source: &str, policy: &Policy) -> Report {
    let code = assemble(&format!(".intel_syntax noprefix\n{source}\n"), Format::Gas).unwrap();
    let options = RunOptions {
        policy: policy.clone(),
        ..RunOptions::default()
    };
    bytejail::run(&code, b"", &options).unwrap()
}

fn returned_rax(report: &Report) -> i64 {
    match report.outcome {
        Outcome::Returned(regs) => regs.rax as i64,
        ref other => panic!("expected a return, got {other:?}"),
    }
}

fn assert_violation(report: &Report, name: &str, abi: &str) {
    assert_eq!(report.outcome, Outcome::SyscallViolation, "{report:?}");
    let syscall = report
        .syscall
        .as_ref()
        .expect("filter mode says which syscall");
    assert_eq!(
        (syscall.name, syscall.abi.name()),
        (Some(name), abi),
        "{syscall:?}"
    );
}

#[test]
fn the_libseccomp_example_profile_does_exactly_what_it_says() {
    let policy = Policy::from_profile_json(LIBSECCOMP_EXAMPLE, "libseccomp-example.json").unwrap();

    // exit_group(5): allowed, and unlike strict mode it ends the worker normally.
    let r = run_gas("mov eax, 231\n mov edi, 5\n syscall", &policy);
    assert_eq!(r.outcome, Outcome::Exited(5));

    // getpid(): allowed; a positive pid comes back.
    let pid = returned_rax(&run_gas("mov eax, 39\n syscall\n ret", &policy));
    assert!(pid > 1, "getpid returned {pid}");

    // brk(0): allowed; the current break (an address) comes back.
    assert!(
        returned_rax(&run_gas(
            "mov eax, 12\n xor edi, edi\n syscall\n ret",
            &policy
        )) > 0
    );

    // write(1, scratch, 512): allowed, 512 bytes arrive.
    let r = run_gas(
        "mov eax, 1\n mov edi, 1\n mov rsi, rdx\n mov edx, 512\n syscall\n ret",
        &policy,
    );
    assert_eq!((returned_rax(&r), r.output.len()), (512, 512));

    // write(1, scratch, 513): no rule matches: the default kills.
    let r = run_gas(
        "mov eax, 1\n mov edi, 1\n mov rsi, rdx\n mov edx, 513\n syscall\n ret",
        &policy,
    );
    assert_violation(&r, "write", "x86_64");
    assert!(r.output.is_empty());

    // write(2, scratch, 5): fails with EBADF, the guest goes on.
    let r = run_gas(
        "mov eax, 1\n mov edi, 2\n mov rsi, rdx\n mov edx, 5\n syscall\n ret",
        &policy,
    );
    assert_eq!(returned_rax(&r), -(libc::EBADF as i64));

    // Anything else: read, and getpid through int 0x80 (the profile names no x86 entry).
    assert_violation(
        &run_gas("xor eax, eax\n xor edi, edi\n syscall\n ret", &policy),
        "read",
        "x86_64",
    );
    assert_violation(
        &run_gas("mov eax, 20\n int 0x80\n ret", &policy),
        "getpid",
        "i386",
    );
    // x32-tagged getpid: rejected although the profile allows getpid.
    assert_violation(
        &run_gas("mov eax, 0x40000027\n syscall\n ret", &policy),
        "getpid",
        "x32",
    );
}

/// socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)), returning rax.
const RAW_PACKET_SOCKET: &str =
    "mov eax, 41\n mov edi, 17\n mov esi, 3\n mov edx, 0x300\n syscall\n ret";

#[test]
fn a_raw_packet_socket_needs_a_capability_the_worker_does_not_hold() {
    let allow_socket = Policy::from_profile_json(
        include_str!("../guest-samples/policies/allow-socket.json"),
        "allow-socket.json",
    )
    .unwrap();
    // seccomp lets the call through; the kernel refuses it for want of CAP_NET_RAW.
    let rax = returned_rax(&run_gas(RAW_PACKET_SOCKET, &allow_socket));
    assert_eq!(rax, -(libc::EPERM as i64), "socket returned {rax}");
    // Strict mode kills it outright.
    let r = run_gas(RAW_PACKET_SOCKET, &Policy::Strict);
    assert_eq!(r.outcome, Outcome::SyscallViolation);
    assert_eq!(r.syscall.as_ref().and_then(|s| s.name), Some("socket"));

    // The twin: the same call from this test process succeeds when it runs as root, so the
    // EPERM above is the worker's dropped capabilities, not the machine.
    // SAFETY: plain syscalls on values; the descriptor is closed right away.
    #[allow(unsafe_code)]
    unsafe {
        if libc::geteuid() == 0 {
            let fd = libc::socket(17, 3, 0x300);
            assert!(
                fd >= 0,
                "root could not open a packet socket: {}",
                std::io::Error::last_os_error()
            );
            libc::close(fd);
        } else {
            eprintln!("not root: the twin (root opens the socket) cannot be shown here");
        }
    }
}

#[test]
fn filter_mode_disables_rdtsc_like_strict_mode() {
    for policy in [Policy::Strict, Policy::StrictBpf] {
        let r = run_gas("rdtsc\n ret", &policy);
        assert!(
            matches!(
                r.outcome,
                Outcome::Crashed {
                    signal: libc::SIGSEGV,
                    ..
                }
            ),
            "{policy:?}: {:?}",
            r.outcome
        );
    }
}

#[test]
fn strict_mode_violations_are_diagnosed_by_a_rerun_unless_switched_off() {
    let getpid = "mov eax, 39\n syscall\n ret";
    let r = run_gas(getpid, &Policy::Strict);
    assert_eq!(r.outcome, Outcome::SyscallViolation);
    let syscall = r.syscall.expect("diagnosed");
    assert_eq!(
        (syscall.nr, syscall.name, syscall.code_offset),
        (39, Some("getpid"), Some(5))
    );

    let code = assemble(&format!(".intel_syntax noprefix\n{getpid}\n"), Format::Gas).unwrap();
    let options = RunOptions {
        diagnose: false,
        ..RunOptions::default()
    };
    let r = bytejail::run(&code, b"", &options).unwrap();
    assert_eq!((r.outcome, r.syscall), (Outcome::SyscallViolation, None));
}

/// `/proc/<worker>/status` of a worker spinning under `args`, as root or not.
fn live_status(args: &[&str]) -> String {
    let mut host = Command::new(BYTEJAIL)
        .args(["run", "--hex", "eb fe", "--timeout", "20s"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = host.id();
    let start = Instant::now();
    let status = loop {
        let children =
            std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
        let status = children
            .split_whitespace()
            .next()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .unwrap_or_default();
        if status.contains("Seccomp:\t1")
            || status.contains("Seccomp:\t2")
            || start.elapsed() > Duration::from_secs(10)
        {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = host.kill();
    let _ = host.wait();
    status
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[test]
fn a_live_filter_mode_worker_has_no_new_privs_and_no_capabilities() {
    let status = live_status(&["--policy", "strict-bpf"]);
    assert_eq!(field(&status, "Seccomp:"), "2");
    assert_eq!(field(&status, "NoNewPrivs:"), "1");
    for cap in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:", "CapBnd:"] {
        assert_eq!(field(&status, cap), "0000000000000000", "{cap}");
    }
    // The twin: strict mode needs none of that, and as root the worker keeps root's sets.
    let strict = live_status(&[]);
    assert_eq!(field(&strict, "Seccomp:"), "1");
    assert_eq!(field(&strict, "NoNewPrivs:"), "0");
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    if unsafe { libc::geteuid() } == 0 {
        assert_ne!(field(&strict, "CapEff:"), "0000000000000000");
    }
}

/// A profile that allows `fcntl` on top of strict mode's calls.
const ALLOW_FCNTL: &str = r#"{
  "defaultAction": "SCMP_ACT_KILL",
  "syscalls": [
    { "names": ["read", "write", "fcntl"], "action": "SCMP_ACT_ALLOW" }
  ]
}"#;

/// fcntl(0, F_SETFL, O_NONBLOCK), then fcntl(0, F_GETFL) into rax: the status flags of the open
/// file description behind fd 0, which every process holding it shares.
const SET_NONBLOCK_ON_FD0: &str =
    "mov eax, 72\n xor edi, edi\n mov esi, 4\n mov edx, 0x800\n syscall\n\
     mov eax, 72\n xor edi, edi\n mov esi, 3\n syscall\n ret";
const GET_FL_OF_FD0: &str = "mov eax, 72\n xor edi, edi\n mov esi, 3\n syscall\n ret";

/// Workers without input under `strict` share one empty pipe as fd 0, where a guest can only
/// read EOF. Under a profile that allows `fcntl` a guest could change that pipe's shared status
/// flags for every later guest: there each worker gets an empty pipe of its own.
#[test]
fn a_profile_guest_cannot_change_the_next_guests_fd_0() {
    let profile = Policy::from_profile_json(ALLOW_FCNTL, "allow-fcntl.json").unwrap();
    let flags = returned_rax(&run_gas(SET_NONBLOCK_ON_FD0, &profile));
    // It did change its own fd 0 (the twin of the assertion below).
    assert_eq!(
        flags & libc::O_NONBLOCK as i64,
        libc::O_NONBLOCK as i64,
        "{flags:#x}"
    );
    for _ in 0..3 {
        let flags = returned_rax(&run_gas(GET_FL_OF_FD0, &profile));
        assert!(flags >= 0, "F_GETFL failed: {flags}");
        assert_eq!(
            flags & libc::O_NONBLOCK as i64,
            0,
            "{flags:#x}: the last guest's flag"
        );
    }
}
