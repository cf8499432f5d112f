//! `bytejail doctor` and `bytejail::doctor`: the documented JSON keys, the exit status, and the
//! probes checked against what other tools and the kernel say on this machine.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use bytejail::doctor::{self, CallFate, Containment, LandlockProbe, NamespaceProbe, SeccompProbe};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bytejail");

/// The check names `docs/doctor.md` documents, in its order.
const DOCUMENTED_CHECKS: [&str; 24] = [
    "kernel",
    "close_range",
    "cpu",
    "user",
    "strict_job",
    "tracer",
    "seccomp_strict",
    "seccomp_filter",
    "seccomp_actions",
    "syscall_passthrough",
    "user_namespace",
    "pid_namespace",
    "ipc_namespace",
    "mount_namespace",
    "network_namespace",
    "landlock",
    "cgroups",
    "containment",
    "rlimit_nproc",
    "shm_rmid_forced",
    "ptrace_scope",
    "as",
    "cc",
    "nasm",
];

/// The keys of `probes` and of `probes.walls` `docs/doctor.md` documents.
const DOCUMENTED_PROBES: [&str; 8] = [
    "kernel",
    "cpu_model",
    "user",
    "strict_job",
    "tracer",
    "walls",
    "sysctls",
    "assemblers",
];
const DOCUMENTED_WALLS: [&str; 12] = [
    "seccomp_strict",
    "seccomp_filter",
    "seccomp_actions",
    "passthrough",
    "user_namespace",
    "pid_namespace",
    "ipc_namespace",
    "mount_namespace",
    "network_namespace",
    "landlock",
    "cgroups",
    "containment",
];

fn doctor_json(command: &mut Command) -> (Output, Value) {
    let output = command.args(["doctor", "--json"]).output().unwrap();
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout}");
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (output, json)
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn command_line(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn json_has_every_documented_key() {
    let (output, json) = doctor_json(&mut Command::new(BIN));
    assert_eq!(keys(&json), ["ready", "missing", "checks", "probes"]);
    assert_eq!(keys(&json["checks"]), DOCUMENTED_CHECKS);
    assert_eq!(doctor::CHECK_NAMES, DOCUMENTED_CHECKS);
    for (name, check) in json["checks"].as_object().unwrap() {
        assert_eq!(keys(check), ["status", "detail"], "{name}");
        let status = check["status"].as_str().unwrap();
        assert!(["ok", "warning", "missing"].contains(&status), "{name}");
        let detail = check["detail"].as_str().unwrap();
        assert!(
            !detail.is_empty() && !detail.contains('\n'),
            "{name}: {detail:?}"
        );
    }
    assert_eq!(keys(&json["probes"]), DOCUMENTED_PROBES);
    assert_eq!(keys(&json["probes"]["walls"]), DOCUMENTED_WALLS);
    // This machine has every wall strict mode needs.
    assert_eq!(json["ready"], true, "{json}");
    assert_eq!(json["missing"], serde_json::json!([]));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn text_report_gives_each_check_one_line_then_the_verdict() {
    let output = Command::new(BIN).arg("doctor").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), DOCUMENTED_CHECKS.len() + 1, "{text}");
    for (line, name) in lines.iter().zip(DOCUMENTED_CHECKS) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(["ok", "warning", "missing"].contains(&fields[0]), "{line}");
        assert_eq!(fields[1], name, "{line}");
    }
    assert!(lines.last().unwrap().starts_with("ready: "), "{text}");
}

/// A process in which seccomp cannot be entered (a filter of its own fails `seccomp` and
/// `prctl(PR_SET_SECCOMP)` with EPERM): strict mode is missing, and doctor says so and exits 1.
/// The twin of `json_has_every_documented_key`, which sees it work and exit 0.
#[test]
fn without_seccomp_doctor_reports_strict_mode_missing_and_exits_1() {
    let (output, json) = doctor_json(&mut doctor_without_seccomp());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(json["ready"], false);
    let missing: Vec<&str> = json["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(missing.contains(&"seccomp_strict"), "{missing:?}");
    let strict = &json["checks"]["seccomp_strict"];
    assert_eq!(strict["status"], "missing");
    assert!(
        strict["detail"].as_str().unwrap().contains("EPERM"),
        "{strict}"
    );
    assert_eq!(
        json["probes"]["walls"]["seccomp_strict"],
        serde_json::json!({"result": "refused", "errno": libc::EPERM})
    );
    // Filter mode is not needed by strict-mode jobs: a warning, not a reason to exit 1.
    assert_eq!(json["checks"]["seccomp_filter"]["status"], "warning");
    assert!(!missing.contains(&"seccomp_filter"), "{missing:?}");

    let output = doctor_without_seccomp().arg("doctor").output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let verdict = text.lines().last().unwrap();
    assert!(
        verdict.starts_with("not ready for strict-mode jobs: missing ")
            && verdict.contains("seccomp_strict"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("missing  seccomp_strict ")),
        "{text}"
    );
}

/// `bytejail` in a process whose own seccomp filter fails `seccomp` and
/// `prctl(PR_SET_SECCOMP)` with EPERM.
fn doctor_without_seccomp() -> Command {
    let deny_seccomp = Box::new([
        bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // nr
        bpf_jump(libc::SYS_seccomp as u32, 4, 0),                // -> EPERM
        bpf_jump(libc::SYS_prctl as u32, 0, 2),                  // else -> ALLOW
        bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 16), // args[0], low half
        bpf_jump(libc::PR_SET_SECCOMP as u32, 1, 0),             // -> EPERM
        bpf_stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        bpf_stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
    ]);
    let mut command = Command::new(BIN);
    // SAFETY: between fork and exec the closure makes two raw syscalls on data built before
    // the fork (the program, which the closure owns), which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: deny_seccomp.len() as u16,
                filter: deny_seccomp.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    command
}

fn bpf_stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn bpf_jump(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

#[test]
fn kernel_and_cpu_are_what_uname_and_cpuinfo_say() {
    let kernel = doctor::kernel();
    assert_eq!(kernel.release, command_line("uname", &["-r"]));
    assert_eq!(kernel.version, command_line("uname", &["-v"]));
    assert_eq!(kernel.machine, command_line("uname", &["-m"]));
    assert!(kernel.close_range, "bytejail's tests run on Linux 5.9+");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let model = doctor::cpu_model();
    assert!(
        cpuinfo
            .lines()
            .any(|l| l.starts_with("model name") && l.ends_with(&model)),
        "{model}"
    );
}

#[test]
fn seccomp_modes_and_actions_are_what_the_kernel_has() {
    let walls = doctor::walls();
    assert_eq!(walls.seccomp_strict, SeccompProbe::Works);
    assert_eq!(walls.seccomp_filter, SeccompProbe::Works);
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap();
    let actions: Vec<&str> = actions.split_whitespace().collect();
    assert_eq!(walls.seccomp_actions.as_deref().unwrap(), actions);
}

/// Linux 6.18 lets both calls through every seccomp mode (KERNEL-NOTES.md); with no probe
/// attached uretprobe raises SIGILL and uprobe returns ENXIO.
#[test]
fn uretprobe_and_uprobe_pass_through_seccomp_from_linux_6_18() {
    let release = command_line("uname", &["-r"]);
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let p = &doctor::walls().passthrough;
    if version < (6, 18) {
        eprintln!("kernel {release}: not checking the passthrough (6.18+ only)");
        return;
    }
    let sigill = CallFate::Signal {
        signal: libc::SIGILL,
    };
    let enxio = CallFate::Returned {
        value: -(libc::ENXIO as i64),
    };
    assert_eq!(p.uretprobe.strict, sigill);
    assert_eq!(p.uretprobe.filter, sigill);
    assert_eq!(p.uprobe.strict, enxio);
    assert_eq!(p.uprobe.filter, enxio);
    assert_eq!(p.through_strict(), ["uretprobe", "uprobe"]);
}

#[test]
fn landlock_abi_is_what_the_syscall_says() {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with a NULL attribute pointer and the VERSION flag the call only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    let probe = &doctor::walls().landlock;
    if abi > 0 {
        assert_eq!(
            *probe,
            LandlockProbe::Abi {
                version: abi as u32
            }
        );
    } else {
        assert_eq!(probe.abi(), None, "{probe:?}");
    }
}

/// util-linux's `unshare` as the reference for the namespace probes.
#[test]
fn namespaces_are_what_unshare_finds() {
    if common::skip_without("unshare", 1) {
        return;
    }
    let walls = doctor::walls();
    let unshare = |args: &[&str]| {
        Command::new("unshare")
            .args(args)
            .arg("true")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let cases: [(&NamespaceProbe, &[&str], &[&str]); 5] = [
        (&walls.user_namespace, &["--user"], &["--user"]),
        (
            &walls.pid_namespace,
            &["--pid", "--fork"],
            &["--user", "--pid", "--fork"],
        ),
        (&walls.ipc_namespace, &["--ipc"], &["--user", "--ipc"]),
        (&walls.mount_namespace, &["--mount"], &["--user", "--mount"]),
        (&walls.network_namespace, &["--net"], &["--user", "--net"]),
    ];
    for (probe, alone, with_user) in cases {
        let want = if unshare(alone) {
            NamespaceProbe::Available
        } else if unshare(with_user) {
            NamespaceProbe::InUserNamespace
        } else {
            assert!(!probe.usable(), "{alone:?}: {probe:?}");
            continue;
        };
        assert_eq!(*probe, want, "unshare {alone:?}");
    }
    let want = match walls.pid_namespace {
        NamespaceProbe::Available => Containment::PidNamespace,
        NamespaceProbe::InUserNamespace => Containment::PidNamespaceInUserNamespace,
        _ => Containment::NoPidNamespace,
    };
    assert_eq!(walls.containment, want);
    // As root (this project's machines) a worker needs no user namespace for its PID namespace.
    if doctor::user().is_root() {
        assert_eq!(walls.containment, Containment::PidNamespace);
    }
}

/// util-linux's `findmnt` as the reference for where the cgroup hierarchies are mounted.
#[test]
fn cgroup_mounts_are_what_findmnt_finds() {
    if common::skip_without("findmnt", 1) {
        return;
    }
    let mounts = |fstype: &str| -> Vec<String> {
        let output = Command::new("findmnt")
            .args(["-n", "-l", "-o", "TARGET", "-t", fstype])
            .output()
            .unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let cgroups = &doctor::walls().cgroups;
    let v2 = mounts("cgroup2");
    match &cgroups.v2 {
        Some(found) => assert!(
            v2.contains(&found.mount.display().to_string()),
            "{found:?} {v2:?}"
        ),
        None => assert!(v2.is_empty(), "{v2:?}"),
    }
    let v1 = mounts("cgroup");
    let found: Vec<String> = cgroups
        .v1
        .iter()
        .map(|h| h.mount.display().to_string())
        .collect();
    for mount in &found {
        assert!(v1.contains(mount), "{mount} not in {v1:?}");
    }
    use bytejail::doctor::CgroupMode;
    let want = match (v2.is_empty(), v1.is_empty()) {
        (false, true) => CgroupMode::Unified,
        (false, false) => CgroupMode::Hybrid,
        (true, false) => CgroupMode::Legacy,
        (true, true) => CgroupMode::None,
    };
    assert_eq!(cgroups.mode, want);
    // CPU accounting for --cpu-time: a v1 hierarchy with cpuacct first, else any v2 one.
    let cpuacct = Command::new("findmnt")
        .args(["-n", "-l", "-o", "TARGET", "-t", "cgroup", "-O", "cpuacct"])
        .output()
        .unwrap();
    let cpuacct = !String::from_utf8(cpuacct.stdout).unwrap().trim().is_empty();
    let version = cgroups.cpu_accounting.as_ref().map(|c| c.version);
    let want = match (cpuacct, v2.is_empty()) {
        (true, _) => Some(1),
        (false, false) => Some(2),
        (false, true) => None,
    };
    assert_eq!(version, want, "{:?}", cgroups.cpu_accounting);
    // The cgroup this process is in has a directory in each hierarchy.
    for dir in cgroups
        .v1
        .iter()
        .map(|h| &h.dir)
        .chain(cgroups.v2.iter().map(|h| &h.dir))
    {
        assert!(dir.is_dir(), "{}", dir.display());
    }
}

/// procps's `sysctl` as the reference for the sysctls.
#[test]
fn sysctls_are_what_sysctl_says() {
    // Debian keeps sysctl in /usr/sbin, which an unprivileged user's PATH lacks.
    let program = if common::have_tool("sysctl") {
        "sysctl"
    } else if common::is_program(Path::new("/usr/sbin/sysctl")) {
        "/usr/sbin/sysctl"
    } else {
        common::skip_without("sysctl", 1);
        return;
    };
    let sysctl = |name: &str| {
        Command::new(program)
            .args(["-n", name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let s = doctor::sysctls();
    assert_eq!(
        s.max_user_namespaces.map(|n| n.to_string()),
        sysctl("user.max_user_namespaces")
    );
    assert_eq!(
        s.shm_rmid_forced.map(|on| u8::from(on).to_string()),
        sysctl("kernel.shm_rmid_forced")
    );
    assert_eq!(
        s.ptrace_scope.map(|n| n.to_string()),
        sysctl("kernel.yama.ptrace_scope")
    );
    assert_eq!(
        s.unprivileged_userns_clone
            .map(|on| u8::from(on).to_string()),
        sysctl("kernel.unprivileged_userns_clone")
    );
}

#[test]
fn root_is_reported_as_id_says() {
    let uid: u32 = command_line("id", &["-u"]).parse().unwrap();
    let user = doctor::user();
    assert_eq!(user.uid, uid);
    assert_eq!(user.is_root(), uid == 0);
}

/// Doctor with a `PATH` that has no assembler warns about each, naming what it disables; with
/// a `nasm` on `PATH` it reports that one's version line. Neither changes the exit status.
#[test]
fn assemblers_come_from_path() {
    let empty = tempfile::tempdir().unwrap();
    let (output, json) = doctor_json(Command::new(BIN).env("PATH", empty.path()));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    for (program, disables) in [
        ("as", ".s files"),
        ("cc", ".S files"),
        ("nasm", ".asm files"),
    ] {
        let check = &json["checks"][program];
        assert_eq!(check["status"], "warning", "{program}: {check}");
        let detail = check["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("`{program}` not found")),
            "{detail}"
        );
        assert!(detail.contains(disables), "{detail}");
    }

    let with_nasm = tempfile::tempdir().unwrap();
    let fake = with_nasm.path().join("nasm");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'NASM version 9.99.99 (a stand-in)'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, json) = doctor_json(Command::new(BIN).env("PATH", with_nasm.path()));
    let check = &json["checks"]["nasm"];
    assert_eq!(check["status"], "ok", "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("NASM version 9.99.99 (a stand-in)"),
        "{detail}"
    );
    assert!(detail.contains(&fake.display().to_string()), "{detail}");
}

/// The real assemblers' version lines, as they print them.
#[test]
fn assembler_versions_are_what_the_tools_print() {
    let found = doctor::assemblers();
    for (program, flag) in [("as", "--version"), ("cc", "--version"), ("nasm", "-v")] {
        let assembler = found.iter().find(|a| a.program == program).unwrap();
        if !common::have_tool(program) {
            assert_eq!(assembler.path, None, "{program}");
            common::skip_without(program, 1);
            continue;
        }
        let printed = command_line(program, &[flag]);
        let first = printed.lines().next().unwrap_or("").trim();
        assert_eq!(assembler.version.as_deref(), Some(first), "{program}");
        assert!(Path::new(assembler.path.as_ref().unwrap()).is_file());
    }
}

/// The runner asks the cached walls on every profile worker: the second call is the first's.
#[test]
fn walls_are_probed_once() {
    let first = doctor::walls() as *const _;
    assert!(std::ptr::eq(first, doctor::walls()));
}

/// Run by an unprivileged user (root drops to `nobody` with util-linux's `setpriv`), doctor
/// finds the namespaces only inside a user namespace, as `unshare` does for that user, and
/// the containment follows; the twin of root's `Containment::PidNamespace` above.
#[test]
fn an_unprivileged_user_gets_namespaces_through_a_user_namespace() {
    if !doctor::user().is_root() {
        eprintln!("not root: cannot drop to another user; skipping 1 test");
        return;
    }
    if common::skip_without("setpriv", 1) || common::skip_without("unshare", 1) {
        return;
    }
    let as_nobody = |program: &str| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["--inh-caps=-all", program])
            .current_dir("/")
            .stderr(std::process::Stdio::null());
        command
    };
    let unshare = |args: &[&str]| {
        as_nobody("unshare")
            .args(args)
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    let (output, json) = doctor_json(&mut as_nobody(BIN));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(json["probes"]["user"]["euid"], 65534);
    let walls = &json["probes"]["walls"];
    let want = if unshare(&["--pid", "--fork"]) {
        "available"
    } else if unshare(&["--user", "--pid", "--fork"]) {
        "in_user_namespace"
    } else {
        "unavailable"
    };
    assert_eq!(walls["pid_namespace"]["result"], want, "{walls}");
    let containment = match want {
        "available" => "pid_namespace",
        "in_user_namespace" => "pid_namespace_in_user_namespace",
        _ => "no_pid_namespace",
    };
    assert_eq!(walls["containment"], containment);
    // On this project's machines, as on most: nobody has no PID namespace of its own, but
    // gets one inside a user namespace.
    if unshare(&["--user"]) {
        assert_eq!(want, "in_user_namespace");
    }
}
