//! Reports a guest cannot forge: the fault and syscall details of a traced run come from the
//! kernel (the tracer), never from the record page the guest can write. Each forgery is tried
//! twice: untraced (where it shows, marked unverified: the twin that proves the attack is
//! real) and traced (where it must not).

mod common;

use bytejail::{Outcome, Report, RunOptions, ViolatingSyscall};
use common::{gas, namespaces, profile_options};

fn violation(report: &Report) -> Option<ViolatingSyscall> {
    assert_eq!(
        report.outcome,
        Outcome::SyscallViolation,
        "{}",
        report.summary()
    );
    report.syscall.clone()
}

fn crash(report: &Report) -> (i32, Option<bytejail::Fault>) {
    match &report.outcome {
        Outcome::Crashed { signal, fault } => (*signal, fault.clone()),
        other => panic!("expected a crash, got {other:?}: {}", report.summary()),
    }
}

fn untraced(mut options: RunOptions) -> RunOptions {
    options.trace = false;
    options
}

/// The offset of the first `syscall` (0f 05) or `int 0x80` (cd 80) in `code`.
fn syscall_at(code: &[u8]) -> u64 {
    code.windows(2)
        .position(|w| w == [0x0f, 0x05] || w == [0xcd, 0x80])
        .expect("a syscall instruction") as u64
}

const EXECVE_WITH_ARGS: &str = "
    mov rdi, 0x1111
    mov rsi, 0x2222
    mov rdx, 0x3333
    mov r10, 0x4444
    mov r8, 0x5555
    mov r9, 0x6666
    mov eax, 59
    syscall
    ret";

#[test]
fn a_strict_violation_is_named_with_its_arguments_by_the_kernel() {
    let code = gas(EXECVE_WITH_ARGS);
    let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
    let syscall = violation(&report).expect("the traced run names the call");
    assert_eq!((syscall.nr, syscall.name), (59, Some("execve")));
    assert_eq!(
        syscall.args,
        Some([0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666])
    );
    assert_eq!(syscall.code_offset, Some(syscall_at(&code)));
    assert!(syscall.verified, "{}", report.summary());
    assert!(report.summary().contains("execve"), "{}", report.summary());
}

#[test]
fn an_untraced_strict_violation_is_named_only_by_a_checked_rerun() {
    let code = gas(EXECVE_WITH_ARGS);
    let mut options = untraced(RunOptions::default());
    options.diagnose = false;
    let report = bytejail::run(&code, b"", &options).unwrap();
    assert_eq!(violation(&report), None, "no tracer, no re-run: unknown");

    options.diagnose = true;
    let report = bytejail::run(&code, b"", &options).unwrap();
    let syscall = violation(&report).expect("the re-run names it");
    assert_eq!(syscall.nr, 59);
    assert!(!syscall.verified, "a re-run's call is not this run's fact");
    assert!(
        report.summary().contains("unverified"),
        "{}",
        report.summary()
    );
}

#[test]
fn an_i386_violation_names_the_i386_call_and_its_registers() {
    let code = gas("mov ebx, 0x77\nmov ecx, 0x88\nmov eax, 20\nint 0x80\nret");
    let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
    let syscall = violation(&report).expect("named");
    assert_eq!(syscall.abi, bytejail::syscalls::Abi::I386);
    assert_eq!((syscall.nr, syscall.name), (20, Some("getpid")));
    let args = syscall.args.expect("arguments");
    assert_eq!((args[0], args[1]), (0x77, 0x88));
    assert!(syscall.verified);
}

/// A rerun that makes another call than the first run is caught by its output: the guest
/// writes which call it makes (chosen by `rdrand`: strict mode has no time-stamp counter)
/// before making it. Whenever the report names a call, it is the one the output says was made.
#[test]
fn a_diagnosis_never_names_a_call_the_output_contradicts() {
    if !std::arch::is_x86_feature_detected!("rdrand") {
        eprintln!("no rdrand on this CPU: skipping");
        return;
    }
    let code = gas("
        rdrand eax
        and eax, 1
        add eax, 0x30
        push rax
        mov rsi, rsp
        mov edx, 1
        mov edi, 1
        mov eax, 1
        syscall
        pop rax
        cmp al, 0x30
        je 1f
        mov eax, 102
        syscall
        ret
    1:  mov eax, 39
        syscall
        ret");
    let mut options = untraced(RunOptions::default());
    options.diagnose = true;
    let mut named = 0;
    for _ in 0..30 {
        let report = bytejail::run(&code, b"", &options).unwrap();
        let made = if report.output == b"0" { 39 } else { 102 };
        if let Some(syscall) = violation(&report) {
            assert_eq!(syscall.nr, made, "{}", report.summary());
            named += 1;
        }
    }
    assert!(named > 0, "the re-run never agreed with the first run");
}

#[test]
fn a_forged_fault_record_is_not_reported_as_the_fault() {
    let code = common::forged_fault_record();
    let store = code
        .windows(3)
        .rposition(|w| w == [0x48, 0xc7, 0x00])
        .expect("the store") as u64;

    // The twin: untraced, the record the guest wrote is what the report shows (unverified).
    let report = bytejail::run(&code, b"", &untraced(RunOptions::default())).unwrap();
    let (signal, fault) = crash(&report);
    assert_eq!(signal, libc::SIGSEGV);
    let fault = fault.expect("the forged record");
    assert_eq!((fault.address, fault.code_offset), (0xdeadbeef, Some(0)));
    assert!(!fault.verified);

    // Traced: the kernel's fault, where it happened.
    let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
    let (signal, fault) = crash(&report);
    assert_eq!(signal, libc::SIGSEGV);
    let fault = fault.expect("the kernel's fault");
    assert_eq!((fault.address, fault.code_offset), (8, Some(store)));
    assert!(fault.verified, "{}", report.summary());
}

/// Under a profile the guest sends itself a SIGSYS naming a call it never made. Queueing a
/// signal with details is refused by the walls, so it uses `tgkill`: traced, the report sees a
/// signal a process sent, not a violation.
#[test]
fn a_self_sent_sigsys_is_not_a_violation() {
    if !namespaces() {
        eprintln!("not root: no profile workers here; skipping");
        return;
    }
    let code = gas("
        mov eax, 39          # getpid: 1, init of its PID namespace
        syscall
        mov rdi, rax
        mov rsi, rax
        mov edx, 31          # SIGSYS
        mov eax, 234         # tgkill
        syscall
        ret");
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    // As init of its PID namespace the worker ignores a signal it sends itself without a
    // handler; if one ever arrives, it must not read as a violation.
    assert_ne!(
        report.outcome,
        Outcome::SyscallViolation,
        "{}",
        report.summary()
    );
}

/// `rt_sigqueueinfo` with a forged SIGSEGV is refused by the walls filter (the guest sees
/// EPERM and returns it), so a pending forged fault can never meet a real one.
#[test]
fn a_profile_guest_cannot_queue_itself_a_forged_fault() {
    if !namespaces() {
        eprintln!("not root: no profile workers here; skipping");
        return;
    }
    let code = gas("
        sub rsp, 128
        mov rdi, rsp
        mov ecx, 16
        xor eax, eax
        rep stosq
        mov dword ptr [rsp], 11              # si_signo
        mov dword ptr [rsp + 8], 1           # si_code: SEGV_MAPERR
        mov rax, 0xdeadbeef
        mov [rsp + 16], rax                  # si_addr
        mov eax, 39
        syscall
        mov rdi, rax
        mov esi, 11
        mov rdx, rsp
        mov eax, 129                         # rt_sigqueueinfo
        syscall
        add rsp, 128
        ret");
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    assert_eq!(common::returned_rax(&report), -(libc::EPERM as i64));
}

#[test]
fn a_real_fault_under_a_profile_is_verified() {
    if !namespaces() {
        eprintln!("not root: no profile workers here; skipping");
        return;
    }
    let code = gas("mov eax, 16\nmov qword ptr [rax], 1\nret");
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    let (signal, fault) = crash(&report);
    assert_eq!(signal, libc::SIGSEGV);
    let fault = fault.expect("the fault");
    assert_eq!((fault.address, fault.code_offset), (16, Some(5)));
    assert!(fault.verified);
    // The twin: untraced, the worker's record says the same, unverified.
    let report = bytejail::run(&code, b"", &untraced(profile_options())).unwrap();
    let fault = crash(&report).1.expect("the recorded fault");
    assert_eq!((fault.address, fault.code_offset), (16, Some(5)));
    assert!(!fault.verified);
}

#[test]
fn a_profile_violation_is_named_with_its_arguments() {
    if !namespaces() {
        eprintln!("not root: no profile workers here; skipping");
        return;
    }
    let policy = bytejail::Policy::from_profile_json(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"},
                         {"names": ["getuid"], "action": "SCMP_ACT_TRAP"}]}"#,
        "kill-getppid.json",
    )
    .unwrap();
    let options = RunOptions::default().with_policy(policy);
    for (nr, name) in [(110, "getppid"), (102, "getuid")] {
        let code = gas(&format!("mov rdi, 0xabc\nmov eax, {nr}\nsyscall\nret"));
        let report = bytejail::run(&code, b"", &options).unwrap();
        let syscall = violation(&report).expect("named");
        assert_eq!((syscall.nr, syscall.name), (nr, Some(name)));
        assert_eq!(syscall.args.map(|a| a[0]), Some(0xabc));
        assert!(syscall.verified, "{}", report.summary());
    }
}

/// A traced worker whose first thread exits before its other thread: the kernel makes it
/// waitable only when the last thread is released, and tells its tracer nothing then (the
/// worker's exit signal is 0). The report must still come, as soon as the last thread ends.
#[test]
fn a_worker_whose_first_thread_exits_first_is_still_reported() {
    if !namespaces() {
        eprintln!("not root: no profile workers here; skipping");
        return;
    }
    let code = common::with_thread(
        "
        mov ecx, 100000000                      # the thread: outlive the first one
    1:  dec ecx
        jnz 1b
        mov edi, 3
        mov eax, 60                             # exit: this thread only
        syscall",
        "
        mov edi, 5
        mov eax, 60                             # exit: the first thread only
        syscall",
    );
    let options = profile_options().with_limits(
        bytejail::Limits::default()
            .with_max_procs(2)
            .with_timeout(std::time::Duration::from_secs(20)),
    );
    let start = std::time::Instant::now();
    let report = bytejail::run(&code, b"", &options).unwrap();
    assert!(
        matches!(report.outcome, Outcome::Exited(_)),
        "{}",
        report.summary()
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "reported after {:?}",
        start.elapsed()
    );
}
