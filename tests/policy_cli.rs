//! `bytejail policy check | compile | explain` on real profiles, in text and JSON.

use std::process::{Command, Output};

use bytejail::policy::interp::{self, SeccompData};
use bytejail::policy::Insn;

const BIN: &str = env!("CARGO_BIN_EXE_bytejail");

fn policies(name: &str) -> String {
    format!(
        "{}/guest-samples/policies/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn bytejail(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn check_lists_what_docker_would_skip_and_leave_out() {
    let docker = policies("docker-default.json");
    let text = stdout(&bytejail(&["policy", "check", &docker]));
    assert!(text.contains("loads;"), "{text}");
    assert!(
        text.contains("skipped (no x86 ABI has them): riscv_hwprobe\n"),
        "{text}"
    );
    // The entry for holders of CAP_SYS_BOOT makes no rule for a worker without capabilities.
    assert!(
        text.contains("(reboot): no rule: its includes/excludes"),
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&bytejail(&["policy", "check", &docker, "--json"]))).unwrap();
    assert_eq!(json["i386"], true);
    assert!(json["instructions"].as_u64().unwrap() > 100);
    assert!(json["skipped"]
        .as_array()
        .unwrap()
        .contains(&"riscv_hwprobe".into()));
}

#[test]
fn check_warns_that_socketcall_reaches_a_conditional_socket_rule_unchecked() {
    let profile = policies("socket-unix-only.json");
    let text = stdout(&bytejail(&["policy", "check", &profile]));
    assert!(
        text.contains("syscalls[0] (socket): warning: through int 0x80"),
        "{text}"
    );
    // The decision that warning is about.
    let text = stdout(&bytejail(&[
        "policy",
        "explain",
        &profile,
        "socketcall",
        "1",
        "--abi",
        "i386",
    ]));
    assert!(
        text.contains(": allow — syscalls[0] (socket, 1 argument check)"),
        "{text}"
    );
}

#[test]
fn check_names_an_entry_shadowed_by_an_unconditional_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shadow.json");
    std::fs::write(
        &path,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getpid"], "action": "SCMP_ACT_LOG", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}
        ]}"#,
    )
    .unwrap();
    let text = stdout(&bytejail(&["policy", "check", path.to_str().unwrap()]));
    assert!(text.contains("syscalls[1] (getpid): shadowed"), "{text}");
    assert!(!text.contains("syscalls[0]"), "{text}");
}

#[test]
fn explain_names_the_entry_or_the_default() {
    let docker = policies("docker-default.json");
    let explain = |args: &[&str]| {
        let mut all = vec!["policy", "explain", &docker];
        all.extend_from_slice(args);
        stdout(&bytejail(&all))
    };
    let text = explain(&["socket", "40"]);
    assert!(
        text.contains("errno 1 (EPERM) — the default action"),
        "{text}"
    );
    let text = explain(&["socket", "2"]);
    assert!(text.starts_with("socket(0x2,"), "{text}");
    assert!(text.contains(": allow — syscalls["), "{text}");
    // int 0x80 compares 32 bits: the high half does not turn AF_VSOCK into an allowed family.
    let text = explain(&["socket", "0x100000028", "--abi", "i386"]);
    assert!(text.contains("(i386 0x167): errno 1 (EPERM)"), "{text}");
    let text = explain(&["clone3"]);
    assert!(text.contains("errno 38 (ENOSYS) — syscalls["), "{text}");
    let text = explain(&["exit"]);
    assert!(text.contains("bytejail's own"), "{text}");

    let json: serde_json::Value = serde_json::from_str(&explain(&["getpid", "--json"])).unwrap();
    assert_eq!(json["action"], "allow");
    assert_eq!(json["program_says"], 0x7fff_0000u32);
    assert_eq!(json["entry"], 0);

    let out = bytejail(&["policy", "explain", &docker, "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`frobnicate`: no x86_64 syscall"));
}

#[test]
fn compile_writes_a_program_with_the_profiles_own_actions() {
    let dir = tempfile::tempdir().unwrap();
    let bpf = dir.path().join("example.bpf");
    let example = policies("libseccomp-example.json");
    stdout(&bytejail(&[
        "policy",
        "compile",
        &example,
        "-o",
        bpf.to_str().unwrap(),
    ]));
    let bytes = std::fs::read(&bpf).unwrap();
    assert_eq!(bytes.len() % 8, 0);
    let program: Vec<Insn> = bytes
        .chunks_exact(8)
        .map(|b| Insn {
            code: u16::from_le_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
        .collect();
    let x64 = bytejail::policy::AUDIT_ARCH_X86_64;
    let decide = |nr, args| interp::run(&program, &SeccompData::new(x64, nr, args));
    // The profile's default is SCMP_ACT_KILL: a thread kill, not bytejail's trap.
    assert_eq!(decide(0, [0; 6]), Some(0), "read is killed");
    // No calls of bytejail's own: exit is the profile's to decide (killed here too).
    assert_eq!(decide(60, [0; 6]), Some(0), "exit");
    assert_eq!(decide(39, [0; 6]), Some(0x7fff_0000), "getpid");
    assert_eq!(
        decide(1, [2, 0, 5, 0, 0, 0]),
        Some(0x0005_0009),
        "write to fd 2: EBADF"
    );

    let json: serde_json::Value = serde_json::from_str(&stdout(&bytejail(&[
        "policy", "compile", &example, "--json",
    ])))
    .unwrap();
    assert_eq!(json["instructions"].as_u64(), Some(program.len() as u64));
    let text = stdout(&bytejail(&["policy", "compile", &example, "--disasm"]));
    assert!(text.contains("ret KILL"), "{text}");
    assert!(text.contains("ret ERRNO(9)"), "{text}");
    assert!(!text.contains("TRAP"), "{text}");

    // Malformed JSON: exit 2 with the position.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\"defaultAction\": \"SCMP_ACT_ALLOW\",\n \"syscalls\": [",
    )
    .unwrap();
    let out = bytejail(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2 column"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
