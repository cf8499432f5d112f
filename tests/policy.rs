//! seccomp-bpf policies on the real kernel: the classic libseccomp example as a profile, a
//! raw IP socket under a profile that allows `socket` (EPERM: the worker holds no
//! capabilities) and under strict mode (killed), what filter mode does to the worker, i386
//! deny rules against high halves (Docker's vsock rule included), a rule of 45 checks, and
//! `clone`/`fork` denied for a job without new tasks; each with its twin.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytejail::load::{assemble, Format};
use bytejail::policy::{Action, ArgCheck, CmpOp, Filter, FilterExtras, Rule};
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

    // getpid(): allowed; a positive pid comes back (1 when the worker is the init of its own
    // PID namespace, as a profile worker run as root is).
    let pid = returned_rax(&run_gas("mov eax, 39\n syscall\n ret", &policy));
    assert!(pid >= 1, "getpid returned {pid}");

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

/// socket(AF_INET, SOCK_RAW, IPPROTO_RAW), returning rax: a family the walls filter leaves to
/// the profile (an AF_PACKET socket it refuses outright, EAFNOSUPPORT).
const RAW_PACKET_SOCKET: &str =
    "mov eax, 41\n mov edi, 2\n mov esi, 3\n mov edx, 255\n syscall\n ret";

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
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(
                fd >= 0,
                "root could not open a raw IP socket: {}",
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

/// Strict mode kills without saying which call: a traced run (the default) sees it; an
/// untraced one re-runs the job traced, unless that is switched off too.
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
    let untraced = RunOptions {
        trace: false,
        ..RunOptions::default()
    };
    let r = bytejail::run(&code, b"", &untraced).unwrap();
    let syscall = r.syscall.expect("diagnosed by the re-run");
    assert_eq!((syscall.nr, syscall.verified), (39, false));
    let options = RunOptions {
        diagnose: false,
        ..untraced
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

/// "dup2 with fd 1 gets EPERM", i386 numbers included.
const DENY_DUP2_OF_FD_1: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
  "syscalls": [
    { "names": ["dup2"], "action": "SCMP_ACT_ERRNO",
      "args": [{ "index": 0, "value": 1, "op": "SCMP_CMP_EQ" }] }
  ]
}"#;

/// dup2(1, 5) through `int 0x80` with rbx = 0x1_00000001: the i386 call uses ebx = 1.
const I386_DUP2_HIGH_HALF: &str =
    "mov eax, 63\n mov rbx, 0x100000001\n mov ecx, 5\n int 0x80\n ret";

#[test]
fn an_i386_deny_rule_holds_whatever_the_high_half_of_the_register() {
    let policy = Policy::from_profile_json(DENY_DUP2_OF_FD_1, "deny-dup2.json").unwrap();
    assert_eq!(
        returned_rax(&run_gas(I386_DUP2_HIGH_HALF, &policy)),
        -(libc::EPERM as i64)
    );
    // Without the high half too.
    assert_eq!(
        returned_rax(&run_gas(
            "mov eax, 63\n mov ebx, 1\n mov ecx, 5\n int 0x80\n ret",
            &policy
        )),
        -(libc::EPERM as i64)
    );
    // The twin: compared on 64 bits, as bytejail once did, the call goes through and the
    // kernel duplicates fd 1 onto 5.
    let full_width = policy
        .filter_with(&FilterExtras::i386_full_width_for_tests())
        .unwrap()
        .unwrap();
    let old = Policy::Profile {
        name: "deny-dup2.json (64-bit i386 compare)".into(),
        filter: full_width,
    };
    assert_eq!(returned_rax(&run_gas(I386_DUP2_HIGH_HALF, &old)), 5);
}

/// write is allowed only when none of bits 10..=54 of the count is set: 45 checks on one rule.
fn long_write_rule() -> Policy {
    let args = (10..55)
        .map(|bit| ArgCheck {
            index: 2,
            op: CmpOp::MaskedEq,
            value: 1 << bit,
            value_two: 0,
        })
        .collect();
    let rule = Rule {
        nr: 1,
        args,
        action: Action::Allow,
    };
    let filter = Filter::compile(&[rule], None, None, Action::Violation).unwrap();
    Policy::Profile {
        name: "long-write-rule".into(),
        filter,
    }
}

#[test]
fn a_rule_with_45_checks_allows_what_passes_them_all_and_nothing_else() {
    let policy = long_write_rule();
    // write(1, scratch, 5): every check holds.
    let r = run_gas(
        "mov eax, 1\n mov edi, 1\n mov rsi, rdx\n mov edx, 5\n syscall\n ret",
        &policy,
    );
    assert_eq!((returned_rax(&r), r.output.len()), (5, 5));
    // Bit 10 (the first check) and bit 54 (the last) each fail the rule: a violation, nothing
    // written. The old 8-bit encoding let the first through (see the unit test
    // `the_old_8_bit_encoding_failed_open_on_long_rules`).
    for count in ["0x405", "0x40000000000005"] {
        let r = run_gas(
            &format!("mov eax, 1\n mov edi, 1\n mov rsi, rdx\n mov rdx, {count}\n syscall\n ret"),
            &policy,
        );
        assert_violation(&r, "write", "x86_64");
        assert!(r.output.is_empty());
    }
}

/// socket(AF_VSOCK | 1 << 32, SOCK_STREAM, 0) through `int 0x80`: the i386 call asks for
/// AF_VSOCK (40), which Docker's default profile refuses.
const I386_VSOCK_HIGH_HALF: &str =
    "mov eax, 359\n mov rbx, 0x100000028\n mov ecx, 1\n xor edx, edx\n int 0x80\n ret";

#[test]
fn dockers_default_refuses_vsock_through_int_0x80_whatever_the_high_half() {
    let docker = Policy::from_profile_json(
        include_str!("../guest-samples/policies/docker-default.json"),
        "docker-default.json",
    )
    .unwrap();
    assert_eq!(
        returned_rax(&run_gas(I386_VSOCK_HIGH_HALF, &docker)),
        -(libc::EPERM as i64)
    );
    // The twin: compared on 64 bits the value is above AF_VSOCK, the rule "family > 40"
    // allows it, and the kernel's socket code answers (a socket or its own error, not the
    // profile's EPERM).
    let old = Policy::Profile {
        name: "docker-default.json (64-bit i386 compare)".into(),
        filter: docker
            .filter_with(&FilterExtras::i386_full_width_for_tests())
            .unwrap()
            .unwrap(),
    };
    assert_ne!(
        returned_rax(&run_gas(I386_VSOCK_HIGH_HALF, &old)),
        -(libc::EPERM as i64)
    );
}

#[test]
fn denying_new_tasks_makes_fork_fail_with_eagain_in_the_worker() {
    let allow_fork = Policy::from_profile_json(
        r#"{"defaultAction": "SCMP_ACT_KILL", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [{"names": ["fork", "vfork", "clone", "clone3"], "action": "SCMP_ACT_ALLOW"}]}"#,
        "allow-fork.json",
    )
    .unwrap();
    let denied = Policy::Profile {
        name: "allow-fork.json, no new tasks".into(),
        filter: allow_fork
            .filter_with(&FilterExtras::deny_new_tasks(true))
            .unwrap()
            .unwrap(),
    };
    for guest in [
        "mov eax, 57\n syscall\n ret",   // fork
        "mov eax, 58\n syscall\n ret",   // vfork
        "mov eax, 435\n syscall\n ret",  // clone3
        "mov eax, 2\n int 0x80\n ret",   // i386 fork
        "mov eax, 120\n int 0x80\n ret", // i386 clone
    ] {
        assert_eq!(
            returned_rax(&run_gas(guest, &denied)),
            -(libc::EAGAIN as i64),
            "{guest}"
        );
    }
    // The twin: without the extras the profile's ALLOW decides (checked on the program, not
    // by forking a copy of the worker).
    let filter = allow_fork.filter().unwrap();
    assert_eq!(
        filter.evaluate(bytejail::policy::AUDIT_ARCH_X86_64, 57, [0; 6]),
        Some(0x7fff_0000)
    );
}
