//! The library as a user outside the crate sees it: reports that go to JSON and back, the
//! builders of the non-exhaustive option types, typed register errors, and which types may be
//! shared between threads.

use std::time::Duration;

use bytejail::{
    Error, Gpr, InitialRegisters, InputError, Limits, Outcome, Pool, RegisterError, Report,
    RunOptions,
};
use serde_json::Value;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn shared_types_are_send_and_sync() {
    assert_send_sync::<Report>();
    assert_send_sync::<Outcome>();
    assert_send_sync::<Error>();
    assert_send_sync::<InputError>();
    assert_send_sync::<RegisterError>();
    assert_send_sync::<RunOptions>();
    assert_send_sync::<Limits>();
    assert_send_sync::<Pool>();
    assert_send_sync::<bytejail::Zygote>();
    assert_send_sync::<bytejail::Cancel>();
}

/// One guest per outcome a default run can reach quickly (raw machine code).
fn guests() -> Vec<(&'static str, Vec<u8>, RunOptions)> {
    let short = RunOptions::default().with_limits(
        Limits::default()
            .with_timeout(Duration::from_millis(100))
            .with_max_output(16),
    );
    vec![
        // mov al, 42; ret
        ("returned", vec![0xb0, 42, 0xc3], RunOptions::default()),
        // push "hi\n"; write(1, rsp, 3); pop rax; ret
        (
            "returned",
            hex("68 68 69 0a 00 bf 01 00 00 00 48 89 e6 ba 03 00 00 00 b8 01 00 00 00 0f 05 58 c3"),
            RunOptions::default(),
        ),
        // push ff fe; write(1, rsp, 2) (not UTF-8); pop rax; ret
        (
            "returned",
            hex("68 ff fe 00 00 bf 01 00 00 00 48 89 e6 ba 02 00 00 00 b8 01 00 00 00 0f 05 58 c3"),
            RunOptions::default(),
        ),
        // exit(3)
        (
            "exited",
            hex("bf 03 00 00 00 b8 3c 00 00 00 0f 05"),
            RunOptions::default(),
        ),
        // xor rax, rax; mov qword ptr [rax], 1
        (
            "crashed",
            hex("48 31 c0 48 c7 00 01 00 00 00"),
            RunOptions::default(),
        ),
        // ud2
        ("crashed", hex("0f 0b"), RunOptions::default()),
        // getpid: the diagnostic re-run names it
        (
            "syscall_violation",
            hex("b8 27 00 00 00 0f 05"),
            RunOptions::default(),
        ),
        (
            "syscall_violation",
            hex("b8 27 00 00 00 0f 05"),
            RunOptions::default().with_diagnose(false),
        ),
        // jmp $
        ("timeout", hex("eb fe"), short.clone()),
        // mov rsi, rdx; 1: write(1, scratch, 64); jmp 1b
        (
            "output_limit",
            hex("48 89 d6 bf 01 00 00 00 ba 40 00 00 00 b8 01 00 00 00 0f 05 eb ed"),
            short,
        ),
    ]
}

fn hex(text: &str) -> Vec<u8> {
    bytejail::load::parse_hex(text, "test code").unwrap()
}

fn reports() -> Vec<(&'static str, Report)> {
    guests()
        .into_iter()
        .map(|(kind, code, options)| {
            let report = bytejail::run(&code, b"", &options).unwrap();
            assert_eq!(report.outcome.kind(), kind, "{report}");
            (kind, report)
        })
        .collect()
}

#[test]
fn real_reports_round_trip_through_json() {
    let reports = reports();
    // The guests reach what they are meant to: a violation named, a fault placed, output kept.
    assert!(reports.iter().any(|(_, r)| r.syscall.is_some()));
    assert!(reports
        .iter()
        .any(|(_, r)| matches!(&r.outcome, Outcome::Crashed { fault: Some(_), .. })));
    assert!(reports.iter().any(|(_, r)| r.output == b"hi\n"));
    assert!(reports.iter().any(|(_, r)| r.output == [0xff, 0xfe]));
    for (kind, report) in reports {
        let text = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report, "{kind}: {text}");
        // `to_json` is the same serialisation, and reading it back loses nothing it says.
        let value = report.to_json();
        assert_eq!(value, serde_json::from_str::<Value>(&text).unwrap());
        let again: Report = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(again.to_json(), value, "{kind}");
    }
}

#[test]
fn the_json_says_what_the_report_holds() {
    // Expected values from the guest's own instructions, not from the output checked.
    let report = bytejail::run(&[0xb0, 42, 0xc3], b"", &RunOptions::default()).unwrap();
    let json = report.to_json();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["outcome"], "returned");
    assert_eq!(json["rax"], json["registers"]["rax"]);
    assert_eq!(json["rax"].as_u64().unwrap() & 0xff, 42);

    let exit = hex("bf 03 00 00 00 b8 3c 00 00 00 0f 05");
    let json = bytejail::run(&exit, b"", &RunOptions::default())
        .unwrap()
        .to_json();
    assert_eq!(json["exit_code"], 3);
    assert!(json.get("syscall").is_none() && json.get("registers").is_none());

    let getpid = hex("b8 27 00 00 00 0f 05");
    let json = bytejail::run(&getpid, b"", &RunOptions::default())
        .unwrap()
        .to_json();
    assert_eq!(json["syscall"]["nr"], libc::SYS_getpid);
    assert_eq!(json["syscall"]["name"], "getpid");
    assert_eq!(json["syscall"]["abi"], "x86_64");
    assert_eq!(json["syscall"]["code_offset"], 5);

    let segv = hex("48 31 c0 48 c7 00 01 00 00 00");
    let json = bytejail::run(&segv, b"", &RunOptions::default())
        .unwrap()
        .to_json();
    assert_eq!(json["signal"], "SIGSEGV");
    assert_eq!(json["signal_number"], libc::SIGSEGV);
    assert_eq!(json["fault"]["address"], 0);
    assert_eq!(json["fault"]["code_offset"], 3);
}

#[test]
fn reading_refuses_what_this_version_cannot_vouch_for() {
    let report = bytejail::run(&[0xb0, 42, 0xc3], b"", &RunOptions::default()).unwrap();
    let good = report.to_json();
    let read = |value: &Value| serde_json::from_value::<Report>(value.clone());
    assert!(read(&good).is_ok());

    let mut newer = good.clone();
    newer["schema_version"] = 2.into();
    let error = read(&newer).unwrap_err().to_string();
    assert!(error.contains("schema_version 2"), "{error}");

    let mut unversioned = good.clone();
    unversioned
        .as_object_mut()
        .unwrap()
        .remove("schema_version");
    assert!(read(&unversioned).is_err());

    let mut odd_hex = good.clone();
    odd_hex["output_hex"] = "abc".into();
    assert!(read(&odd_hex).is_err());

    let mut two_raxes = good.clone();
    two_raxes["rax"] = 7.into();
    assert!(read(&two_raxes).is_err());

    // Derived text is not read back: `output_hex` is the output.
    let mut other_text = good.clone();
    other_text["output_text"] = "not what was written".into();
    assert_eq!(read(&other_text).unwrap(), report);

    // Fields a later version adds are ignored.
    let mut extra = good;
    extra["added_later"] = true.into();
    assert_eq!(read(&extra).unwrap(), report);
}

#[test]
fn display_is_the_summary_line() {
    for (_, report) in reports() {
        let line = report.to_string();
        assert_eq!(line, report.summary());
        assert!(line.starts_with(report.outcome.kind()), "{line}");
    }
    assert_eq!(Outcome::Exited(3).to_string(), "exited: code 3");
    assert_eq!(Outcome::Timeout.to_string(), "timeout");
    assert_eq!(
        Outcome::Crashed {
            signal: libc::SIGILL,
            fault: None
        }
        .to_string(),
        "crashed: SIGILL"
    );
}

#[test]
fn options_are_built_from_defaults_outside_the_crate() {
    let limits = Limits::default()
        .with_timeout(Duration::from_millis(250))
        .with_max_output(4096)
        .with_stack(64 << 10)
        .with_cpu_time(Some(Duration::from_secs(1)));
    let registers = InitialRegisters::default().with(Gpr::R12, 7).unwrap();
    let options = RunOptions::default()
        .with_entry(2)
        .with_scrub(false)
        .with_diagnose(false)
        .with_registers(registers.clone())
        .with_limits(limits.clone());
    assert_eq!(options.entry, 2);
    assert!(!options.scrub && !options.diagnose);
    assert_eq!(options.registers, registers);
    assert_eq!(options.limits.timeout, Duration::from_millis(250));
    assert_eq!(options.limits.max_output, 4096);
    assert_eq!(options.limits.stack, 64 << 10);
    assert_eq!(options.limits.cpu_time, Some(Duration::from_secs(1)));
    // Untouched fields keep their defaults.
    assert_eq!(options.limits.scratch, Limits::default().scratch);

    // The options work: entry 2 skips `mov al, 1` (b0 01) to `mov al, 42`.
    let code = [0xb0, 1, 0xb0, 42, 0xc3];
    let report = bytejail::run(&code, b"", &options).unwrap();
    match report.outcome {
        Outcome::Returned(regs) => {
            assert_eq!(regs.rax & 0xff, 42);
            assert_eq!(regs.get(Gpr::R12), 7);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn register_errors_are_typed() {
    let mut registers = InitialRegisters::default();
    assert_eq!(registers.set(Gpr::RSP, 1), Err(RegisterError::StackPointer));
    assert_eq!(
        "r16".parse::<Gpr>(),
        Err(RegisterError::UnknownName("r16".into()))
    );
    assert_eq!(
        registers.set_from_arg("rbx"),
        Err(RegisterError::NotAssignment("rbx".into()))
    );
    assert_eq!(
        registers.set_from_arg("rbx=lots"),
        Err(RegisterError::BadValue {
            register: Gpr::RBX,
            value: "lots".into()
        })
    );
    assert_eq!(registers, InitialRegisters::default());
    registers.set_from_arg("R15=0x10").unwrap();
    assert_eq!(registers.get(Gpr::R15), Some(16));
    // The messages name the thing; the CLI's one line is this text.
    let message = InputError::from(RegisterError::StackPointer).to_string();
    assert!(message.contains("rsp"), "{message}");
}

#[test]
fn every_register_constant_is_its_name() {
    let names: Vec<&str> = Gpr::ALL.iter().map(|reg| reg.name()).collect();
    assert_eq!(names, bytejail::abi::GPR_NAMES);
    for (reg, name) in [
        (Gpr::R8, "r8"),
        (Gpr::R9, "r9"),
        (Gpr::R10, "r10"),
        (Gpr::R11, "r11"),
        (Gpr::R12, "r12"),
        (Gpr::R13, "r13"),
        (Gpr::R14, "r14"),
        (Gpr::R15, "r15"),
    ] {
        assert_eq!(name.parse::<Gpr>(), Ok(reg));
        assert_eq!(reg.to_string(), name);
    }
}
