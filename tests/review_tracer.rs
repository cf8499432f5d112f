//! An attacker's review of the verified reports of a traced run: a guest that holds every call
//! its profile allows tries to make a report show, as the kernel's fact (`verified: true`), a
//! fault or a syscall that did not happen, or an outcome that did not happen.
//!
//! The review found fifteen holes; each is fixed, and its test ("Was a hole") asserts what the
//! report says now, with the fix in its doc comment. The others are attacks that failed from
//! the start. All stay as regressions. A new hole gets `#[ignore = "hole: .."]` until fixed.

mod common;

use bytejail::{Outcome, Report, RunOptions};
use common::{gas, namespaces, profile_options};

fn untraced(mut options: RunOptions) -> RunOptions {
    options.trace = false;
    options
}

fn with_procs(mut options: RunOptions, max_procs: u32) -> RunOptions {
    options.limits.max_procs = max_procs;
    options
}

fn policy(json: &str) -> RunOptions {
    RunOptions::default()
        .with_policy(bytejail::Policy::from_profile_json(json, "review.json").unwrap())
}

fn docker_default() -> RunOptions {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guest-samples/policies/docker-default.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    RunOptions::default()
        .with_policy(bytejail::Policy::from_profile_json(&text, "docker-default.json").unwrap())
}

/// Profile workers need a PID namespace (root here and in CI).
fn no_profiles() -> bool {
    if namespaces() {
        return false;
    }
    eprintln!("not root: no profile workers here; skipping");
    true
}

fn verified_violation(report: &Report) -> Option<(u32, Option<&'static str>)> {
    match (&report.outcome, &report.syscall) {
        (Outcome::SyscallViolation, Some(sc)) if sc.verified => Some((sc.nr, sc.name)),
        _ => None,
    }
}

/// Installs the label `handler` for signal `signo` with `rt_sigaction`, and a restorer that
/// calls `rt_sigreturn` (x86-64 needs `SA_RESTORER`). `tag` keeps the labels apart.
fn install_handler(signo: i32, tag: &str) -> String {
    let install = common::sigaction(
        signo as u32,
        0x04000000, // SA_RESTORER
        &format!("handler_{tag}"),
        &format!("restorer_{tag}"),
    );
    format!(
        "{install}
        jmp after_{tag}
    handler_{tag}:
        ret
    restorer_{tag}:
        mov eax, 15
        syscall
    after_{tag}:
"
    )
}

/// `seccomp(SECCOMP_SET_MODE_FILTER)` with a filter of the guest's own: `action` for `nr`,
/// allow the rest.
fn own_filter(nr: u32, action: u32) -> String {
    let jeq = 0x15u64 | (1 << 24) | (u64::from(nr) << 32);
    let hit = 0x06u64 | (u64::from(action) << 32);
    let allow = 0x06u64 | (0x7fff_0000u64 << 32);
    format!(
        "
        sub rsp, 48
        mov qword ptr [rsp], 0x20               # ld [nr]
        mov rax, {jeq:#x}
        mov [rsp + 8], rax                      # jeq nr, 0, 1
        mov rax, {hit:#x}
        mov [rsp + 16], rax                     # ret action
        mov rax, {allow:#x}
        mov [rsp + 24], rax                     # ret ALLOW
        mov qword ptr [rsp + 32], 4
        mov [rsp + 40], rsp
        mov edi, 1                              # SECCOMP_SET_MODE_FILTER
        xor esi, esi
        lea rdx, [rsp + 32]
        mov eax, 317                            # seccomp
        syscall
        add rsp, 48
"
    )
}

const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;

fn own_filter_getpid(action: u32) -> Vec<u8> {
    gas(&format!(
        "{}
        mov eax, 39                             # getpid: the profile allows it
        syscall
        mov eax, 42
        ret",
        own_filter(39, action)
    ))
}

/// Was a hole (fixed; the test stays as a regression): the guest stacks a seccomp filter of its own (Docker's default profile and an
/// allow-all one allow `seccomp`; `no_new_privs` is already set) that traps `getpid`, then
/// calls `getpid`. The kernel's SIGSYS is genuine (`SYS_SECCOMP`, `si_syscall` 39, in that very
/// call), so the report says "syscall violation: getpid (verified)", although the user's
/// profile allows `getpid`: the guest chose which call the report blames.
///
/// Fix: the walls filter refuses `seccomp(SECCOMP_SET_MODE_FILTER)` and
/// `prctl(PR_SET_SECCOMP)` (EPERM) for profile guests, or the host checks each trapped or killed
/// call against the job's own compiled program (walls + profile, evaluated on the nr, arch, ip
/// and args the tracer has) and reports a call that program allows as no violation.
#[test]
fn a_guest_filter_cannot_forge_a_verified_violation() {
    if no_profiles() {
        return;
    }
    for (name, options) in [
        ("allow-all", profile_options()),
        ("docker", docker_default()),
    ] {
        for action in [SECCOMP_RET_TRAP, SECCOMP_RET_KILL_PROCESS] {
            let report = bytejail::run(&own_filter_getpid(action), b"", &options).unwrap();
            assert_eq!(
                verified_violation(&report),
                None,
                "{name} {action:#x}: {}",
                report.summary()
            );
        }
    }
}

/// The twin of the hole above: without the guest's own filter, `getpid` is allowed and the
/// guest returns (the profile itself never blames it).
#[test]
fn without_its_own_filter_the_guest_returns() {
    if no_profiles() {
        return;
    }
    let code = gas("mov eax, 39\nsyscall\nmov eax, 42\nret");
    for options in [profile_options(), docker_default()] {
        let report = bytejail::run(&code, b"", &options).unwrap();
        assert_eq!(common::returned_rax(&report), 42);
    }
}

const TRAP_AND_KILL: &str = r#"{"defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"},
                 {"names": ["getuid"], "action": "SCMP_ACT_TRAP"}]}"#;

/// Was a hole (fixed; the test stays as a regression): a profile kills `getppid` (`SCMP_ACT_KILL_PROCESS`). bytejail compiles every kill to
/// `SECCOMP_RET_TRAP` (so that its own handler could record the call), and a profile guest may
/// call `rt_sigaction`: it installs a SIGSYS handler of its own, calls `getppid`, the handler
/// returns, and the guest returns 42. The report says "returned", although the profile's kill
/// fired and the tracer saw the kernel's trap of `getppid` (SYS_SECCOMP, in that call): a
/// violation that happened is not shown, and a guest can probe every forbidden call and go on.
/// (Pre-existing for untraced runs; traced, the host has the fact and drops it.)
///
/// Fix: in a traced worker compile the kill actions to `SECCOMP_RET_KILL_PROCESS` (the exit
/// stop gives the call and its arguments; the kernel makes that SIGSYS immutable); and report
/// any trap the tracer saw (`SYS_SECCOMP` stop for a kill action) as the outcome even if the
/// guest survived it. Untraced: refuse `rt_sigaction(SIGSYS, ..)` (its `int` first argument can
/// be filtered) in the walls filter, for `syscall` and `int 0x80` (`sigaction`, `rt_sigaction`).
#[test]
fn a_guest_handler_does_not_survive_a_profile_kill() {
    if no_profiles() {
        return;
    }
    let code = gas(&format!(
        "{}
        mov eax, 110                            # getppid: the profile kills it
        syscall
        mov eax, 42
        ret",
        install_handler(libc::SIGSYS, "sys")
    ));
    let report = bytejail::run(&code, b"", &policy(TRAP_AND_KILL)).unwrap();
    assert_eq!(
        report.outcome,
        Outcome::SyscallViolation,
        "{}",
        report.summary()
    );
    assert_eq!(verified_violation(&report), Some((110, Some("getppid"))));
}

/// The twin: without the guest's handler, the kill is named right and verified.
#[test]
fn a_kill_alone_is_named_right() {
    if no_profiles() {
        return;
    }
    let code = gas("mov eax, 110\nsyscall\nret");
    let report = bytejail::run(&code, b"", &policy(TRAP_AND_KILL)).unwrap();
    assert_eq!(verified_violation(&report), Some((110, Some("getppid"))));
}

/// Was a hole (fixed; the test stays as a regression): the guest has a SIGSEGV handler but no room on its stack for the signal frame, and
/// stores to 0x1000. The kernel delivers the fault (`SEGV_MAPERR`, address 0x1000), fails to
/// write the frame, and forces a second SIGSEGV with `si_code` SI_KERNEL, whose `si_addr` slot
/// holds `si_pid`/`si_uid` (0). The tracer keeps the last stop, and `classify` accepts any
/// `si_code > 0`: the report says "SIGSEGV at address 0x0 (verified)". With a signal that
/// interrupts a spin loop instead of a fault, the guest picks the blamed instruction too.
///
/// Fix: believe a fault's address only for the fault codes of its signal (`0 < si_code <
/// SI_KERNEL`: SEGV_*, BUS_*, ILL_*, FPE_*, TRAP_*); for SI_KERNEL report the signal with no
/// address; and keep the first fault of a delivery chain, not the last.
#[test]
fn a_failed_signal_frame_does_not_rewrite_the_fault_address() {
    if no_profiles() {
        return;
    }
    let code = gas(&format!(
        "{}
        mov r12, rsp
        mov rsp, 0x10                           # no room for a signal frame
        mov eax, 0x1000
        mov dword ptr [rax], 1                  # the fault: address 0x1000
        mov rsp, r12
        ret",
        install_handler(libc::SIGSEGV, "segv")
    ));
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    let Outcome::Crashed { signal, fault } = &report.outcome else {
        panic!("expected a crash: {}", report.summary());
    };
    assert_eq!(*signal, libc::SIGSEGV);
    if let Some(fault) = fault.as_ref().filter(|f| f.verified) {
        assert_eq!(fault.address, 0x1000, "{}", report.summary());
    }
}

/// Was a hole (fixed; the test stays as a regression), the same with an instruction of the guest's choosing: the guest has a SIGUSR1
/// handler, blocks SIGUSR1, sends itself one (pending), and unblocks it with a forged
/// `rt_sigreturn` frame whose `rsp` leaves no room for a signal frame and whose `rip` is a
/// `nop`. The kernel delivers SIGUSR1 as `rt_sigreturn` returns (`orig_rax` -1), cannot write
/// the frame, and forces SIGSEGV (SI_KERNEL) at the `nop`: the report says "SIGSEGV at the
/// nop, address 0x0 (verified)". Same fix as above.
#[test]
fn a_failed_signal_frame_does_not_blame_an_innocent_instruction() {
    if no_profiles() {
        return;
    }
    let code = gas(&format!(
        "{}
        push 0x200                              # SIGUSR1's bit
        xor edi, edi                            # SIG_BLOCK
        mov rsi, rsp
        xor edx, edx
        mov r10d, 8
        mov eax, 14                             # rt_sigprocmask
        syscall
        pop rax
        mov eax, 39
        syscall
        mov rdi, rax
        mov esi, 10
        mov eax, 62                             # kill(self, SIGUSR1): pending
        syscall
        sub rsp, 512
        mov rdi, rsp
        mov ecx, 512 / 8
        xor eax, eax
        rep stosq
        mov qword ptr [rsp + 160], 0x10         # rsp: no room for a signal frame
        lea rax, [rip + innocent]
        mov [rsp + 168], rax                    # rip
        mov qword ptr [rsp + 176], 0x202
        mov word ptr [rsp + 184], 0x33
        mov word ptr [rsp + 190], 0x2b
        mov eax, 15                             # rt_sigreturn, mask 0
        syscall
    innocent:
        nop
        mov eax, 42
        ret",
        install_handler(libc::SIGUSR1, "usr")
    ));
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    let Outcome::Crashed { signal, fault } = &report.outcome else {
        panic!("expected a crash: {}", report.summary());
    };
    assert_eq!(*signal, libc::SIGSEGV);
    assert!(
        !fault.as_ref().is_some_and(|f| f.verified),
        "{}",
        report.summary()
    );
}

/// Was a hole (fixed; the test stays as a regression), in strict mode (the default) with one process: the guest calls `rt_sigreturn` with a
/// forged frame whose registers are fine (`rip` a `nop` of its choosing) but whose `fpstate`
/// points to unmapped memory. The kernel loads the registers, sets `orig_rax` -1, fails to
/// restore the FPU state, and forces SIGSEGV (SI_KERNEL, `si_addr` slot 0): the report says
/// "SIGSEGV at the nop, address 0x0 (verified)". Same fix: SI_KERNEL is no fault address, and
/// (for the instruction) a `rt_sigreturn` that failed is not an instruction's fault.
#[test]
fn a_bad_sigreturn_frame_does_not_blame_an_innocent_instruction() {
    let code = gas("
        sub rsp, 512
        mov rdi, rsp
        mov ecx, 512 / 8
        xor eax, eax
        rep stosq
        lea rax, [rsp + 512]
        mov [rsp + 160], rax                    # rsp
        lea rax, [rip + innocent]
        mov [rsp + 168], rax                    # rip
        mov qword ptr [rsp + 176], 0x202
        mov word ptr [rsp + 184], 0x33
        mov word ptr [rsp + 190], 0x2b
        mov qword ptr [rsp + 224], 0x1000       # fpstate: unmapped
        mov eax, 15                             # rt_sigreturn
        syscall
    innocent:
        nop
        mov eax, 42
        ret");
    let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
    let Outcome::Crashed { signal, fault } = &report.outcome else {
        panic!("expected a crash: {}", report.summary());
    };
    assert_eq!(*signal, libc::SIGSEGV);
    assert!(
        !fault.as_ref().is_some_and(|f| f.verified),
        "{}",
        report.summary()
    );
}

/// Was a hole (fixed; the test stays as a regression) (needs `max_procs` 2): the guest forks a child whose exit signal is SIGSYS and which
/// exits with status 61 while the worker waits in `wait4` (61). The kernel's notification of
/// the child's exit is a SIGSYS with `si_code` CLD_EXITED (1, the value of SYS_SECCOMP) and
/// `si_status` 61 where a trap has `si_syscall`, delivered to a worker in call 61: the report
/// says "syscall violation: wait4" (unverified, as `many_procs`), although the profile allows
/// everything and no call was refused. Untraced it is the same (the worker's own handler
/// records the child's status as the trapped call).
///
/// Fix: a SIGSYS is a trap only with `si_code` SYS_SECCOMP *and* no other process as sender
/// (`si_pid` is the trap's `si_call_addr` slot, so check the signal's source instead: a trap is
/// forced, `__SI_FAULT`; or mark the worker's children's exit signal: refuse `clone` with an
/// exit signal other than SIGCHLD in the walls filter). The outcome, not only the details,
/// must then not be a violation.
#[test]
fn a_child_exit_signal_is_not_a_violation() {
    if no_profiles() {
        return;
    }
    let code = gas("
        mov edi, 31                             # clone: a fork whose exit signal is SIGSYS
        xor esi, esi
        xor edx, edx
        xor r10d, r10d
        xor r8d, r8d
        mov eax, 56
        syscall
        test rax, rax
        jnz 2f
        mov ecx, 50000000                       # the child: let the parent reach wait4
    1:  dec ecx
        jnz 1b
        mov edi, 61                             # exit status 61: the parent's call number
        mov eax, 60
        syscall
    2:  mov rdi, -1
        xor esi, esi
        mov edx, 0x40000000                     # __WALL: a child with another exit signal
        xor r10d, r10d
        mov eax, 61                             # wait4
        syscall
        mov eax, 42
        ret");
    let options = with_procs(profile_options(), 2);
    // Fixed in the walls filter, traced or not: `clone` with an exit signal other than SIGCHLD
    // fails with EINVAL, so no child ever signals the worker so, and the guest returns.
    for options in [untraced(options.clone()), options] {
        let report = bytejail::run(&code, b"", &options).unwrap();
        assert_eq!(common::returned_rax(&report), 42, "{}", report.summary());
    }
}

/// The guest sends itself SIGSEGV with `kill`: untraced, the worker's own handler records the
/// signal's `si_pid` (1) as the "address", unverified; traced, the crash has no verified fault
/// (the signal came from a process, `si_code` SI_USER, delivered as `kill` returned).
#[test]
fn a_self_sent_sigsegv_has_no_verified_fault() {
    if no_profiles() {
        return;
    }
    let code = gas("
        mov eax, 39                             # getpid: 1
        syscall
        mov rdi, rax
        mov esi, 11                             # SIGSEGV
        mov eax, 62                             # kill
        syscall
        mov eax, 42
        ret");
    let untraced = bytejail::run(&code, b"", &untraced(profile_options())).unwrap();
    let traced = bytejail::run(&code, b"", &profile_options()).unwrap();
    // Traced, the worker (init of its PID namespace, with no handler) drops the signal it sent
    // itself, as the kernel does for an untraced init, and returns.
    assert_eq!(common::returned_rax(&traced), 42, "{}", traced.summary());
    for report in [&untraced] {
        match &report.outcome {
            Outcome::Crashed { signal, fault } => {
                assert_eq!(*signal, libc::SIGSEGV);
                assert!(
                    !fault.as_ref().is_some_and(|f| f.verified),
                    "{}",
                    report.summary()
                );
            }
            other => panic!("expected a crash, got {other:?}: {}", report.summary()),
        }
    }
}

/// Was a hole (fixed; the test stays as a regression) (needs `max_procs` 2): a second thread (untraced: the tracer seizes only the worker's
/// thread, without `PTRACE_O_TRACECLONE`) calls `getppid`, which the profile kills; the
/// thread dies of SIGSYS and takes the process with it. The worker's own thread, waiting in
/// `pause`, is zapped and still gets its exit stop (with the group's SIGSYS status) in call 34,
/// so `killed_in_syscall` reports "syscall violation: pause (verified)" with `pause`'s
/// registers as arguments; `many_procs` is not applied on that path.
///
/// Fix: apply `many_procs` to `killed_in_syscall` too, and better, trace every task of the job
/// (`PTRACE_O_TRACECLONE | TRACEFORK | TRACEVFORK`) so the dying thread's own stop is the fact;
/// at least require that the exit stop's call is one the job's program kills (evaluate walls +
/// profile on its nr, arch and args).
#[test]
fn a_thread_killed_by_the_profile_does_not_blame_the_main_thread_call() {
    if no_profiles() {
        return;
    }
    let code = common::with_thread(
        "
        mov ecx, 50000000                       # the thread: let the main one reach pause
    1:  dec ecx
        jnz 1b
        mov eax, 110                            # getppid: the profile kills the process
        syscall
        ud2",
        "
        mov eax, 34                             # pause
        syscall
        ret",
    );
    let options = with_procs(policy(TRAP_AND_KILL), 2);
    let report = bytejail::run(&code, b"", &options).unwrap();
    assert_eq!(
        report.outcome,
        Outcome::SyscallViolation,
        "{}",
        report.summary()
    );
    if let Some((nr, _)) = verified_violation(&report) {
        assert_eq!(nr, 110, "{}", report.summary());
    }
}

/// The guest stops itself with SIGSTOP: the tracer resumes it (a group-stop of a seized
/// worker), and neither the host nor the tracer hangs.
#[test]
fn a_self_stopped_guest_runs_on() {
    if no_profiles() {
        return;
    }
    let code = gas("
        mov eax, 39
        syscall
        mov rdi, rax
        mov esi, 19                             # SIGSTOP
        mov eax, 62
        syscall
        mov eax, 42
        ret");
    for procs in [1, 2] {
        let mut options = with_procs(profile_options(), procs);
        options.limits.timeout = std::time::Duration::from_secs(5);
        let report = bytejail::run(&code, b"", &options).unwrap();
        assert_eq!(common::returned_rax(&report), 42, "{}", report.summary());
    }
}

/// A traced worker cannot trace itself or be traced by another: PTRACE_TRACEME fails.
#[test]
fn ptrace_traceme_is_refused() {
    if no_profiles() {
        return;
    }
    let code = gas("xor edi, edi\nmov eax, 101\nsyscall\nret");
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    assert_eq!(common::returned_rax(&report), -(libc::EPERM as i64));
}

/// The guest blocks SIGSEGV, sends itself one with `kill` (pending, `si_code` SI_USER), and
/// unblocks it with a forged `rt_sigreturn` frame: the kernel delivers it as that call
/// returns, with `orig_rax` -1 (rt_sigreturn clears it), like a fault, at an instruction of
/// the guest's choosing. Its `si_code` still says a process sent it: no verified fault.
#[test]
fn a_pending_sent_signal_unblocked_by_sigreturn_is_not_a_fault() {
    if no_profiles() {
        return;
    }
    let code = gas("
        push 0x400                              # SIGSEGV's bit
        xor edi, edi                            # SIG_BLOCK
        mov rsi, rsp
        xor edx, edx
        mov r10d, 8
        mov eax, 14                             # rt_sigprocmask
        syscall
        pop rax
        mov eax, 39
        syscall
        mov rdi, rax
        mov esi, 11
        mov eax, 62                             # kill(self, SIGSEGV): pending
        syscall
        sub rsp, 512
        mov rdi, rsp
        mov ecx, 512 / 8
        xor eax, eax
        rep stosq
        lea rax, [rsp + 512]
        mov [rsp + 160], rax                    # rsp
        lea rax, [rip + innocent]
        mov [rsp + 168], rax                    # rip
        mov qword ptr [rsp + 176], 0x202
        mov word ptr [rsp + 184], 0x33
        mov word ptr [rsp + 190], 0x2b
        mov eax, 15                             # rt_sigreturn, mask 0: SIGSEGV unblocked
        syscall
    innocent:
        nop
        mov eax, 42
        ret");
    for options in [profile_options(), docker_default()] {
        let report = bytejail::run(&code, b"", &options).unwrap();
        if let Outcome::Crashed { fault: Some(f), .. } = &report.outcome {
            assert!(!f.verified, "{}", report.summary());
        }
        assert_ne!(
            report.outcome,
            Outcome::SyscallViolation,
            "{}",
            report.summary()
        );
    }
}

/// A strict-mode guest cannot make a crash look like a violation or the other way round:
/// single-stepping (TF) ends it with SIGTRAP, a forbidden call after it is never reached.
#[test]
fn a_single_stepping_strict_guest_is_a_crash() {
    let code = gas("
        pushfq
        or qword ptr [rsp], 0x100               # TF
        popfq
        nop
        mov eax, 39
        syscall
        ret");
    let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
    match &report.outcome {
        Outcome::Crashed { signal, .. } => assert_eq!(*signal, libc::SIGTRAP),
        other => panic!("expected SIGTRAP, got {other:?}: {}", report.summary()),
    }
    assert!(report.syscall.is_none());
}

/// Looks at the input's first byte: `s` spins, anything else returns 42.
fn spin_on_s() -> Vec<u8> {
    gas("
        mov al, byte ptr [rdi]                  # the input (rdi, rsi)
        cmp al, 's'
        je 1f
        mov eax, 42
        ret
    1:  jmp 1b")
}

/// Was a hole (fixed; the test stays as a regression) (not the guest's doing): a strict-mode worker killed by someone else (here the test,
/// as an administrator, a service manager or the OOM killer would) while it spins. The traced
/// classification assumes "a SIGKILL sent from outside is a pending signal, which skips the
/// exit stop"; on this kernel (6.18) it does not skip it: the tracer records an exit stop with
/// status SIGKILL and `orig_rax` -1, `classify` calls it a violation (no call named), and the
/// diagnosis then re-runs the job for nothing. The report says "syscall_violation".
///
/// Fix: in the traced strict path, a violation only when the exit stop is in a call strict mode
/// refuses (`strict_violation` is `Some`, with `orig_rax` compared on its low 32 bits as the
/// kernel does) or the kernel says seccomp killed it (`Seccomp:` 3, SECCOMP_MODE_DEAD, in
/// `/proc/PID/status` at the exit stop); otherwise `killed`.
#[test]
fn an_outside_sigkill_of_a_strict_worker_is_not_a_violation() {
    let mut same = bytejail::SameCode::new(&spin_on_s(), &RunOptions::default()).unwrap();
    assert_eq!(common::returned_rax(&same.run(b"r").unwrap()), 42);
    let pid = same.worker_pid().expect("a parked worker") as libc::pid_t;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        // SAFETY: a signal to the worker this test owns; no pointers.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let report = same.run(b"s").unwrap();
    killer.join().unwrap();
    assert_ne!(
        report.outcome,
        Outcome::SyscallViolation,
        "{}",
        report.summary()
    );
}

/// Jobs through one pool, traced: each report's facts are its own job's, never a neighbour's.
#[test]
fn pool_jobs_do_not_share_facts() {
    let mut templates = vec![RunOptions::default()];
    if namespaces() {
        templates.push(profile_options());
    }
    let violation = gas("mov rdi, 0x1234\nmov eax, 59\nsyscall\nret");
    let fault = gas("mov eax, 0x2000\nmov dword ptr [rax], 1\nret");
    let ok = gas("mov eax, 42\nret");
    for template in templates {
        let strict = template.policy == bytejail::Policy::Strict;
        let pool = bytejail::Pool::new(template.clone(), 2).unwrap();
        for _ in 0..3 {
            let report = pool.run(&violation, b"", &template).unwrap();
            if strict {
                let sc = report.syscall.clone().expect("named");
                assert_eq!((sc.nr, sc.verified), (59, true), "{}", report.summary());
                assert_eq!(sc.args.map(|a| a[0]), Some(0x1234));
            }
            let report = pool.run(&fault, b"", &template).unwrap();
            match &report.outcome {
                Outcome::Crashed { fault: Some(f), .. } => {
                    assert_eq!(
                        (f.address, f.verified),
                        (0x2000, true),
                        "{}",
                        report.summary()
                    )
                }
                other => panic!("expected a fault, got {other:?}: {}", report.summary()),
            }
            assert!(report.syscall.is_none());
            let report = pool.run(&ok, b"", &template).unwrap();
            assert_eq!(common::returned_rax(&report), 42);
            assert!(report.syscall.is_none());
        }
    }
}

/// Through a zygote (the worker is forked by another process), a traced strict violation is
/// still the kernel's, with its arguments, and a fault the kernel's.
#[test]
fn zygote_workers_are_traced_too() {
    let zygote = bytejail::Zygote::start().unwrap();
    let options = RunOptions::default();
    let report = zygote
        .run(
            &gas("mov rdi, 0x77\nmov eax, 59\nsyscall\nret"),
            b"",
            &options,
        )
        .unwrap();
    let sc = report.syscall.clone().expect("named");
    assert_eq!((sc.nr, sc.verified), (59, true), "{}", report.summary());
    assert_eq!(sc.args.map(|a| a[0]), Some(0x77));
    let report = zygote
        .run(
            &gas("mov eax, 0x3000\nmov dword ptr [rax], 1\nret"),
            b"",
            &options,
        )
        .unwrap();
    match &report.outcome {
        Outcome::Crashed { fault: Some(f), .. } => {
            assert_eq!(
                (f.address, f.verified),
                (0x3000, true),
                "{}",
                report.summary()
            )
        }
        other => panic!("expected a fault, got {other:?}: {}", report.summary()),
    }
}

/// Many traced jobs of every kind, one after another: tracer threads are reused, not leaked
/// (a thread per job that never returns to the idle list would show here).
#[test]
fn tracer_threads_are_reused() {
    let jobs = [
        gas("mov eax, 42\nret"),
        gas("mov eax, 59\nsyscall\nret"),
        gas("mov eax, 8\nmov dword ptr [rax], 1\nret"),
        gas("ud2"),
    ];
    for _ in 0..15 {
        for code in &jobs {
            bytejail::run(code, b"", &RunOptions::default()).unwrap();
        }
    }
    let tracers = common::threads_named("bytejail-tracer").len();
    // Other tests of this binary run beside this one, each with a few workers at a time.
    assert!(tracers <= 16, "{tracers} tracer threads after 60 jobs");
}

/// Was a hole (fixed; the test stays as a regression) (latent on this kernel, which has no x32 ABI): the walls filter refuses queueing a
/// signal with details (`rt_sigqueueinfo` 129, `rt_tgsigqueueinfo` 297) and masks the x32 bit
/// before it compares, but x32's own numbers for those calls are 524 and 536 (0x4000020c,
/// 0x40000218), which it lets through. Docker's default profile has an x32 section and allows
/// both: on a kernel with `CONFIG_X86_X32_ABI`, a guest queues itself the forged SIGSEGV the
/// walls exist to stop. Here the call reaches the kernel and fails with ENOSYS instead of the
/// walls' EPERM.
///
/// Fix: add x32's 524 and 536 (after masking: compare the masked number too) to the walls'
/// x86_64 list, or refuse every x32 number in the walls filter (bytejail's guests are x86-64).
#[test]
fn x32_signal_queueing_is_refused_by_the_walls() {
    if no_profiles() {
        return;
    }
    for nr in [0x4000_020c_u32, 0x4000_0218] {
        let code = gas(&format!(
            "
            sub rsp, 128
            mov rdi, rsp
            mov ecx, 16
            xor eax, eax
            rep stosq
            mov dword ptr [rsp], 11             # si_signo
            mov dword ptr [rsp + 8], 1          # si_code: SEGV_MAPERR
            mov rax, 0xdeadbeef
            mov [rsp + 16], rax                 # si_addr
            mov eax, 39
            syscall
            mov rdi, rax
            mov rsi, rax
            mov edx, 11
            mov r10, rsp
            cmp dword ptr [rip + which], 0x4000020c
            jne 1f
            mov esi, 11                         # rt_sigqueueinfo(pid, sig, info)
            mov rdx, rsp
        1:  mov eax, dword ptr [rip + which]
            syscall
            add rsp, 128
            ret
        which:
            .long {nr:#x}"
        ));
        let report = bytejail::run(&code, b"", &docker_default()).unwrap();
        assert_eq!(
            common::returned_rax(&report),
            -(libc::EPERM as i64),
            "{nr:#x}: {}",
            report.summary()
        );
    }
}

/// Looks at the input's first byte: `v` makes a forbidden call with rdi 0x5151, `c` stores to 0x4000,
/// anything else returns 42.
fn by_input() -> Vec<u8> {
    gas("
        mov al, byte ptr [rdi]                  # the input (rdi, rsi)
        cmp al, 'v'
        jne 1f
        mov rdi, 0x5151
        mov eax, 59
        syscall
    1:  cmp al, 'c'
        jne 2f
        mov eax, 0x4000
        mov dword ptr [rax], 1
    2:  mov eax, 42
        ret")
}

/// One same-code submission, inputs in turn: each report's facts are that input's own, and an
/// input that returns after one that crashed or violated shows none. (Ignored for the race
/// below, which makes it fail now and then: a fast fault loses its facts.)
#[test]
fn same_code_inputs_do_not_inherit_facts() {
    let mut templates = vec![RunOptions::default()];
    if namespaces() {
        templates.push(profile_options());
    }
    for template in templates {
        let strict = template.policy == bytejail::Policy::Strict;
        let mut same = bytejail::SameCode::new(&by_input(), &template).unwrap();
        for (i, input) in [b"r", b"v", b"r", b"c", b"r", b"c", b"v", b"r"]
            .iter()
            .enumerate()
        {
            let report = same.run(*input).unwrap();
            match *input {
                b"r" => {
                    assert_eq!(common::returned_rax(&report), 42);
                    assert!(report.syscall.is_none());
                }
                b"v" if strict => {
                    let sc = report
                        .syscall
                        .clone()
                        .unwrap_or_else(|| panic!("input {i}: {}", report.summary()));
                    assert_eq!((sc.nr, sc.verified), (59, true), "{}", report.summary());
                    assert_eq!(sc.args.map(|a| a[0]), Some(0x5151));
                }
                b"v" => {
                    // allow-all: execve(0x5151, ..) fails with EFAULT, and the guest returns.
                    assert_eq!(common::returned_rax(&report), 42, "{}", report.summary());
                }
                _ => match &report.outcome {
                    Outcome::Crashed { fault: Some(f), .. } => {
                        assert_eq!(
                            (f.address, f.verified),
                            (0x4000, true),
                            "{}",
                            report.summary()
                        )
                    }
                    other => panic!("expected a fault, got {other:?}: {}", report.summary()),
                },
            }
        }
    }
}

/// Strict mode, the other entries: `int 0x80` with high halves in its registers (the i386 call
/// uses the low 32 bits: the report shows those), and an x32 number (always killed).
#[test]
fn strict_i386_and_x32_calls_are_named_as_the_kernel_saw_them() {
    let code = gas("
        mov rbx, 0xffffffff00000077
        mov rcx, 0x1234567800000088
        mov eax, 20                             # i386 getpid
        int 0x80
        ret");
    let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
    let sc = report.syscall.clone().expect("named");
    assert_eq!(sc.abi, bytejail::syscalls::Abi::I386);
    assert_eq!((sc.nr, sc.verified), (20, true));
    assert_eq!(sc.args.map(|a| (a[0], a[1])), Some((0x77, 0x88)));

    let code = gas("mov eax, 0x40000027\nsyscall\nret");
    let report = bytejail::run(&code, b"", &RunOptions::default()).unwrap();
    let sc = report.syscall.clone().expect("named");
    assert_eq!(sc.abi, bytejail::syscalls::Abi::X32);
    assert_eq!(
        (sc.nr, sc.name, sc.verified),
        (0x4000_0027, Some("getpid"), true)
    );
}

/// Children of this process stuck in a ptrace stop (`t`) or never reaped (`Z`) that were not
/// there `before`, seen twice 300 ms apart (a worker on its way out is not stuck).
fn stuck_children(before: &[(u32, char)]) -> Vec<(u32, char)> {
    let me = std::process::id();
    let stuck = |seen: &[(u32, char)]| -> Vec<(u32, char)> {
        common::children_of(me)
            .into_iter()
            .filter(|(pid, s)| matches!(s, 't' | 'Z') && !before.iter().any(|(b, _)| b == pid))
            .filter(|c| seen.is_empty() || seen.contains(c))
            .collect()
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let first = stuck(&[]);
    if first.is_empty() {
        return first;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    stuck(&first)
}

/// Runs `input` `n` times through one same-code submission: what each run gave, and the
/// workers left stuck.
fn same_code_runs(options: &RunOptions, input: &[u8], n: usize) -> (Vec<String>, Vec<(u32, char)>) {
    let before = common::children_of(std::process::id());
    let mut same = bytejail::SameCode::new(&spin_on_s(), options).unwrap();
    let got = (0..n)
        .map(|_| match same.run(input) {
            Ok(report) => format!("{:?}", report.outcome),
            Err(e) => format!("Err: {e}"),
        })
        .collect();
    drop(same);
    (got, stuck_children(&before))
}

/// Was a hole (fixed; the test stays as a regression) (high: any guest that spins until its timeout): the host kills a worker at its deadline
/// with SIGKILL, then reaps it with a blocking `wait4(pid, __WALL)`. A traced worker killed by
/// SIGKILL still stops at `PTRACE_EVENT_EXIT` (see the hole above), and `wait4` from any thread
/// of the tracer's thread group reports (and consumes) the ptrace stops of that group's tracees.
/// When the host thread wins the race, `run` returns `Err("reaping the worker: unexpected wait
/// status 0x6057f")` (stopped, PTRACE_EVENT_EXIT), the tracer never sees the stop, and the worker
/// stays in its ptrace stop for as long as the host lives (its tracer thread blocked in
/// `waitid` with it). Measured: about half of 200 timeouts, strict and profile alike, each
/// leaving a stopped worker (and under a profile its whole PID namespace) behind.
///
/// Fix: never `wait4` a traced worker that may still stop: after the kill, wait for its pidfd
/// to become readable (it does only after `exit_notify`, once the tracer let it go past its
/// exit stop), then reap; or let the tracer thread reap it (it alone sees its stops), and
/// treat a stopped status as "not yet" rather than an error. The same holds for
/// `sys::end_child` (the done path of a profile job), the pool's ready wait and `SameCode`.
#[test]
fn timeouts_of_traced_workers_are_timeouts() {
    let mut options = RunOptions::default();
    options.limits.timeout = std::time::Duration::from_millis(20);
    let mut templates = vec![options.clone()];
    if namespaces() {
        templates.push(options.with_policy(common::allow_all()));
    }
    for options in templates {
        let (got, left) = same_code_runs(&options, b"s", 60);
        let errs = got.iter().filter(|g| g.as_str() != "Timeout").count();
        assert_eq!(
            errs,
            0,
            "{errs} of 60: {:?}; left {left:?}",
            got.iter().find(|g| g.as_str() != "Timeout")
        );
        assert_eq!(left, [], "workers left behind");
    }
}

/// The same hole through the CLI: `bytejail run --timeout 50ms` of a guest that spins exits
/// 125 ("runner failed: reaping the worker: unexpected wait status 0x6057f") most of the time
/// instead of 124 (timeout); `bytejail batch` answers such lines with an error.
#[test]
fn cli_run_of_a_spinning_guest_times_out() {
    let dir = std::env::temp_dir().join(format!("bytejail-review-tracer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let code = dir.join("spin.hex");
    std::fs::write(&code, "eb fe\n").unwrap();
    let mut codes = Vec::new();
    for _ in 0..10 {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_bytejail"))
            .args(["run", "--timeout", "50ms"])
            .arg(&code)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        codes.push(status.code());
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(codes.iter().all(|c| *c == Some(124)), "{codes:?}");
}

/// Was a hole (fixed; the test stays as a regression), the same race on the paths of jobs that return: a pool's worker that said "done"
/// lingers and is ended with `sys::end_child` (SIGKILL, then `wait4`, whose result it
/// ignores), as are a parked same-code worker when its submission is dropped and a profile
/// job's worker. When `wait4` takes the exit stop, the worker is never reaped and stays in its
/// ptrace stop (with its tracer thread) for as long as the host lives. Strict mode, the
/// default, through a `Pool`. Same fix.
#[test]
fn returning_jobs_leave_no_worker_behind() {
    let mut templates = vec![RunOptions::default()];
    if namespaces() {
        templates.push(profile_options());
    }
    let code = gas("mov eax, 42\nret");
    let mut wrong = Vec::new();
    for template in templates {
        let before = common::children_of(std::process::id());
        let pool = bytejail::Pool::new(template.clone(), 2).unwrap();
        for _ in 0..300 {
            let report = pool.run(&code, b"", &template).unwrap();
            assert_eq!(common::returned_rax(&report), 42);
        }
        let left = stuck_children(&before);
        drop(pool);
        if !left.is_empty() {
            let strict = template.policy == bytejail::Policy::Strict;
            let mode = if strict { "strict" } else { "profile" };
            wrong.push(format!(
                "{mode}: {} of 300 left behind: {:?}",
                left.len(),
                &left[..3.min(left.len())]
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Was a hole (fixed; the test stays as a regression) (default strict mode, no attacker needed): `SameCode::run_with` writes the go byte and
/// only then clears the tracer's facts (`trace.take()`, "what an earlier input did is not this
/// input's"). An input that faults or violates at once does so before the host clears them, so
/// its own facts are erased: a strict violation then has no exit stop and is reported as
/// `killed` ("SIGKILL from outside bytejail"), a fault loses its verified details, and a
/// profile worker's tracer kill reads as `killed`. Here: inputs `r` then `v`, repeated.
///
/// Fix: clear the facts before writing the go byte (the worker is parked, so nothing can be
/// recorded in between).
#[test]
fn a_fast_same_code_violation_keeps_its_facts() {
    let mut same = bytejail::SameCode::new(&by_input(), &RunOptions::default()).unwrap();
    let mut wrong = Vec::new();
    for _ in 0..100 {
        assert_eq!(common::returned_rax(&same.run(b"r").unwrap()), 42);
        let report = same.run(b"v").unwrap();
        if verified_violation(&report) != Some((59, Some("execve"))) {
            wrong.push(report.summary());
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 100: {:?}",
        wrong.len(),
        wrong.first()
    );
}

/// Was a hole (fixed; the test stays as a regression): the kernel takes a syscall's number from the low 32 bits of `rax` (sign-extended;
/// seccomp's `nr` is an int), but `orig_rax` keeps all 64. A guest calls `getuid` with
/// `rax = 0x1_0000_0066`: the profile traps it (a real violation, SIGSYS with `si_syscall`
/// 102), but `trapped_syscall` compares `orig_rax` with `si_syscall` on 64 bits, decides "not
/// the kernel's trap: a process of the job sent it", and the report says "crashed: SIGSYS".
/// In strict mode the same trick (`execve` as `0x1_0000_003b`) leaves the violation unnamed
/// (`u32::try_from(orig_rax)` fails), and the diagnosis cannot name it either.
///
/// Fix: compare and name by `orig_rax as u32` (as the kernel's `int nr`), for `syscall`,
/// `int 0x80` and the strict exit stop alike.
#[test]
fn high_bits_in_rax_do_not_hide_a_violation() {
    let mut wrong = Vec::new();
    let strict = gas("mov rax, 0x10000003b\nmov rdi, 0x99\nsyscall\nret");
    let report = bytejail::run(&strict, b"", &RunOptions::default()).unwrap();
    if verified_violation(&report) != Some((59, Some("execve"))) {
        wrong.push(format!("strict: {}", report.summary()));
    }
    if namespaces() {
        let code = gas("mov rax, 0x100000066\nsyscall\nret");
        let report = bytejail::run(&code, b"", &policy(TRAP_AND_KILL)).unwrap();
        if verified_violation(&report) != Some((102, Some("getuid"))) {
            wrong.push(format!("profile: {}", report.summary()));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Under a profile, an `int 0x80` call the filter traps is named as the i386 call, with the
/// i386 argument registers (low halves).
#[test]
fn a_trapped_i386_call_is_named_as_i386() {
    if no_profiles() {
        return;
    }
    let code = gas("
        mov rbx, 0xffffffff00000011
        mov rcx, 0x22
        mov eax, 24                             # i386 getuid
        int 0x80
        ret");
    let report = bytejail::run(&code, b"", &policy(TRAP_AND_KILL)).unwrap();
    let sc = report.syscall.clone().expect("named");
    assert_eq!(
        sc.abi,
        bytejail::syscalls::Abi::I386,
        "{}",
        report.summary()
    );
    assert_eq!((sc.nr, sc.name, sc.verified), (24, Some("getuid"), true));
    assert_eq!(sc.args.map(|a| (a[0], a[1])), Some((0x11, 0x22)));
}

/// A `vfork` child (untraced) makes a call the profile traps while the worker waits in
/// `vfork`: the child dies of it, the worker goes on and returns. Neither hangs nor turns into a
/// runner failure, and no verified fact is made of the child's call.
#[test]
fn a_vfork_child_violation_neither_hangs_nor_is_a_verified_fact() {
    if no_profiles() {
        return;
    }
    let code = gas("
        mov eax, 58                             # vfork
        syscall
        test rax, rax
        jnz 1f
        mov eax, 102                            # the child: getuid, trapped
        syscall
        mov edi, 3
        mov eax, 60
        syscall
    1:  mov eax, 42
        ret");
    let mut options = with_procs(policy(TRAP_AND_KILL), 2);
    options.limits.timeout = std::time::Duration::from_secs(5);
    let report = bytejail::run(&code, b"", &options).unwrap();
    assert_eq!(verified_violation(&report), None, "{}", report.summary());
    assert_ne!(report.outcome, Outcome::Timeout, "{}", report.summary());
}

/// With `max_procs` 2, a child of the guest tries to take the worker over with `PTRACE_SEIZE`
/// (and would then see and change its stops): the worker already has its tracer, EPERM.
#[test]
fn a_guest_child_cannot_trace_the_worker() {
    if no_profiles() {
        return;
    }
    let code = gas("
        mov eax, 57                             # fork
        syscall
        test rax, rax
        jnz 1f
        mov edi, 0x4206                         # the child: PTRACE_SEIZE the worker (pid 1)
        mov esi, 1
        xor edx, edx
        xor r10d, r10d
        mov eax, 101
        syscall
        neg eax
        mov edi, eax                            # exit with the errno
        mov eax, 60
        syscall
    1:  sub rsp, 8
        mov rdi, rax
        mov rsi, rsp
        xor edx, edx
        xor r10d, r10d
        mov eax, 61                             # wait4(child, &status, 0, 0)
        syscall
        mov eax, dword ptr [rsp]
        add rsp, 8
        shr eax, 8
        and eax, 0xff                           # the child's exit status
        ret");
    let report = bytejail::run(&code, b"", &with_procs(profile_options(), 2)).unwrap();
    assert_eq!(
        common::returned_rax(&report),
        i64::from(libc::EPERM),
        "{}",
        report.summary()
    );
}

/// Was a hole (fixed; the test stays as a regression) (low): as init of its PID namespace, a worker ignores a signal that it sends itself
/// while the signal's action is the default. The guest sets SIGSEGV back to SIG_DFL (the
/// worker's own recording handler is gone then) and sends itself SIGSEGV: untraced, the kernel
/// drops it and the guest returns 42 (the twin). Traced, the kernel queues it (a tracee's
/// signals are never dropped as ignored), the tracer sees a SIGSEGV at its delivery with no
/// handler and SIGKILLs the worker "for" it: the report shows a crash that does not happen
/// without the tracer. The tracer changes what the guest does.
///
/// Fix: the tracer ends an init worker only for signals the kernel would have made fatal to
/// an untraced init: forced ones (a fault: `orig_rax` -1 with a fault `si_code`; a trap:
/// SIGSYS with SYS_SECCOMP in that call; SI_KERNEL); for a signal a process sent (`si_code`
/// <= 0, CLD_*), it resumes without the signal (what untraced init does with it).
#[test]
fn a_self_sent_signal_with_default_action_is_dropped_as_untraced() {
    if no_profiles() {
        return;
    }
    let code = gas("
        sub rsp, 32
        mov rdi, rsp
        mov ecx, 4
        xor eax, eax
        rep stosq                               # handler SIG_DFL (0), no flags
        mov edi, 11
        mov rsi, rsp
        xor edx, edx
        mov r10d, 8
        mov eax, 13                             # rt_sigaction(SIGSEGV, SIG_DFL)
        syscall
        add rsp, 32
        mov eax, 39                             # getpid: 1
        syscall
        mov rdi, rax
        mov esi, 11
        mov eax, 62                             # kill(1, SIGSEGV)
        syscall
        mov eax, 42
        ret");
    let twin = bytejail::run(&code, b"", &untraced(profile_options())).unwrap();
    let twin_ok = matches!(twin.outcome, Outcome::Returned(r) if r.rax == 42);
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    let traced_ok = matches!(report.outcome, Outcome::Returned(r) if r.rax == 42);
    assert!(
        twin_ok && traced_ok,
        "untraced: {}; traced: {}",
        twin.summary(),
        report.summary()
    );
}
