use super::compiler::{SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_TRAP};
use super::*;

const X64: u32 = AUDIT_ARCH_X86_64;
const I386: u32 = AUDIT_ARCH_I386;

#[test]
fn strict_equivalent_allows_exactly_the_strict_lists() {
    let f = Filter::strict_equivalent();
    for nr in 0..=1000u32 {
        let want = if [0, 1, 15, 60].contains(&nr) {
            SECCOMP_RET_ALLOW
        } else {
            SECCOMP_RET_TRAP
        };
        assert_eq!(f.evaluate(X64, nr, [0; 6]), Some(want), "x86_64 {nr}");
        let want = if [1, 3, 4, 119].contains(&nr) {
            SECCOMP_RET_ALLOW
        } else {
            SECCOMP_RET_TRAP
        };
        assert_eq!(f.evaluate(I386, nr, [0; 6]), Some(want), "i386 {nr}");
    }
    for nr in [0, 1, 15, 60, 512, 0x3fff_ffff] {
        assert_eq!(
            f.evaluate(X64, X32_SYSCALL_BIT | nr, [0; 6]),
            Some(SECCOMP_RET_TRAP)
        );
    }
    assert_eq!(
        f.evaluate(0xc000_00b7, 0, [0; 6]),
        Some(SECCOMP_RET_TRAP),
        "aarch64"
    );
    assert_eq!(f.evaluate(X64, RERAISE_NR, [0; 6]), Some(SECCOMP_RET_TRAP));
}

/// Every op against its reference semantics, on values around the 32-bit halves' edges.
#[test]
fn argument_comparisons_match_their_definition() {
    let values = [
        0u64,
        1,
        2,
        0xffff_fffe,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0001,
        0x2_0000_0000,
        0x7fff_ffff_ffff_ffff,
        u64::MAX - 1,
        u64::MAX,
        512,
        513,
        511,
    ];
    let ops = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::MaskedEq,
    ];
    for op in ops {
        for &value in &values {
            for &value_two in &[0u64, 1, 0xffff_ffff, 0x1_0000_0000] {
                let rule = Rule {
                    nr: 1,
                    args: vec![ArgCheck {
                        index: 2,
                        op,
                        value,
                        value_two,
                    }],
                    action: Action::Errno(7),
                };
                let f = Filter::compile(&[rule], None, None, Action::Allow).unwrap();
                for &arg in &values {
                    let want = if op.holds(arg, value, value_two) {
                        SECCOMP_RET_ERRNO | 7
                    } else {
                        SECCOMP_RET_ALLOW
                    };
                    let got = f.evaluate(X64, 1, [0, 0, arg, 0, 0, 0]);
                    assert_eq!(
                        got,
                        Some(want),
                        "{op:?} arg={arg:#x} value={value:#x} two={value_two:#x}"
                    );
                }
            }
        }
    }
}

#[test]
fn first_matching_rule_wins_and_the_default_catches_the_rest() {
    let rules = [
        Rule {
            nr: 1,
            args: vec![ArgCheck {
                index: 0,
                op: CmpOp::Eq,
                value: 1,
                value_two: 0,
            }],
            action: Action::Allow,
        },
        Rule {
            nr: 1,
            args: vec![],
            action: Action::Errno(9),
        },
        Rule {
            nr: 39,
            args: vec![],
            action: Action::Allow,
        },
    ];
    let f = Filter::compile(&rules, None, None, Action::Violation).unwrap();
    assert_eq!(
        f.evaluate(X64, 1, [1, 0, 0, 0, 0, 0]),
        Some(SECCOMP_RET_ALLOW)
    );
    assert_eq!(
        f.evaluate(X64, 1, [2, 0, 0, 0, 0, 0]),
        Some(SECCOMP_RET_ERRNO | 9)
    );
    assert_eq!(f.evaluate(X64, 39, [0; 6]), Some(SECCOMP_RET_ALLOW));
    assert_eq!(f.evaluate(X64, 40, [0; 6]), Some(SECCOMP_RET_TRAP));
    // No i386 section: the entry is rejected whatever the number.
    assert_eq!(f.evaluate(I386, 20, [0; 6]), Some(SECCOMP_RET_TRAP));
}

fn profile(json: &str) -> Result<Filter, String> {
    match Policy::from_profile_json(json, "p.json") {
        Ok(Policy::Profile { filter, .. }) => Ok(filter),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

/// The classic libseccomp example of filter mode, as a profile.
#[test]
fn the_libseccomp_example_as_a_profile() {
    let f = profile(include_str!(
        "../../guest-samples/policies/libseccomp-example.json"
    ))
    .unwrap();
    let write = |fd: u64, count: u64| f.evaluate(X64, 1, [fd, 0, count, 0, 0, 0]);
    assert_eq!(write(1, 512), Some(SECCOMP_RET_ALLOW));
    assert_eq!(write(1, 513), Some(SECCOMP_RET_TRAP));
    assert_eq!(write(2, 5), Some(SECCOMP_RET_ERRNO | 9));
    assert_eq!(
        write(1 | 1 << 32, 5),
        Some(SECCOMP_RET_ERRNO | 9),
        "64-bit fd compare"
    );
    for nr in [231, 39, 12] {
        assert_eq!(f.evaluate(X64, nr, [0; 6]), Some(SECCOMP_RET_ALLOW));
    }
    assert_eq!(f.evaluate(X64, 0, [0; 6]), Some(SECCOMP_RET_TRAP), "read");
    // What bytejail itself needs, whatever the profile says.
    assert_eq!(f.evaluate(X64, 60, [0; 6]), Some(SECCOMP_RET_ALLOW), "exit");
    assert_eq!(
        f.evaluate(X64, 15, [0; 6]),
        Some(SECCOMP_RET_ALLOW),
        "rt_sigreturn"
    );
    assert_eq!(
        f.evaluate(I386, 20, [0; 6]),
        Some(SECCOMP_RET_TRAP),
        "no x86 named"
    );
    assert_eq!(
        f.evaluate(X64, X32_SYSCALL_BIT | 39, [0; 6]),
        Some(SECCOMP_RET_TRAP),
        "no x32"
    );
}

#[test]
fn named_sub_architectures_get_their_own_numbers() {
    let f = profile(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    assert_eq!(f.evaluate(X64, 39, [0; 6]), Some(SECCOMP_RET_ALLOW));
    assert_eq!(f.evaluate(I386, 20, [0; 6]), Some(SECCOMP_RET_ALLOW));
    assert_eq!(
        f.evaluate(X64, X32_SYSCALL_BIT | 39, [0; 6]),
        Some(SECCOMP_RET_ALLOW)
    );
    assert_eq!(f.evaluate(X64, 40, [0; 6]), Some(SECCOMP_RET_ERRNO | 38));
    assert_eq!(f.evaluate(I386, 39, [0; 6]), Some(SECCOMP_RET_ERRNO | 38));
}

#[test]
fn docker_conditions_for_a_worker_without_capabilities() {
    let f = profile(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
              {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
              {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
              {"names": ["getppid"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
              {"names": ["gettid"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}}
            ]}"#,
    )
    .unwrap();
    let eperm = Some(SECCOMP_RET_ERRNO | libc::EPERM as u32);
    assert_eq!(
        f.evaluate(X64, 165, [0; 6]),
        eperm,
        "mount needs a capability"
    );
    assert_eq!(f.evaluate(X64, 39, [0; 6]), Some(SECCOMP_RET_ALLOW));
    assert_eq!(
        f.evaluate(X64, 110, [0; 6]),
        eperm,
        "getppid is for arm64 only"
    );
    assert_eq!(f.evaluate(X64, 186, [0; 6]), Some(SECCOMP_RET_ALLOW));
}

#[test]
fn bad_profiles_say_what_is_wrong() {
    let cases = [
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}"#,
            "unknown op `SCMP_CMP_SOMETIMES`",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
            "argument index 6 is out of range",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#,
            "unknown action `SCMP_ACT_MAYBE`",
        ),
        (r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#, "not supported"),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#,
            "unknown architecture `SCMP_ARCH_VAX`",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 99999}"#,
            "",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "sycalls": []}"#,
            "unknown field `sycalls`",
        ),
        (r#"not json"#, "not a seccomp profile"),
    ];
    for (json, want) in cases {
        match profile(json) {
            Err(e) => assert!(
                e.contains(want) && e.starts_with("`p.json`: "),
                "{json}: {e}"
            ),
            Ok(_) if want.is_empty() => {}
            Ok(_) => panic!("{json} compiled"),
        }
    }
    assert!(
        profile(r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 99999}"#)
            .unwrap_err()
            .contains("errno 99999 is out of range")
    );
}

#[test]
fn too_many_instructions_is_an_error_naming_the_limit() {
    let rules: Vec<Rule> = (0..3000)
        .map(|nr| Rule {
            nr,
            args: vec![],
            action: Action::Allow,
        })
        .collect();
    // Numbers far apart, each with a check: nothing merges.
    let rules: Vec<Rule> = rules
        .into_iter()
        .map(|r| Rule {
            nr: r.nr * 2,
            args: vec![ArgCheck {
                index: 0,
                op: CmpOp::Eq,
                value: 1,
                value_two: 0,
            }],
            ..r
        })
        .collect();
    let err = Filter::compile(&rules, None, None, Action::Violation).unwrap_err();
    assert!(
        matches!(err, CompileError::TooLong { max: 4096, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("the kernel takes at most 4096"),
        "{err}"
    );
}

fn check(index: u8, op: CmpOp, value: u64, value_two: u64) -> ArgCheck {
    ArgCheck {
        index,
        op,
        value,
        value_two,
    }
}

/// A KILL-by-default profile with one rule of `n` masked checks on `write`: every check must
/// hold for the rule's ALLOW, whatever its length.
fn long_rule(n: usize) -> Vec<Rule> {
    let args = (0..n)
        .map(|i| {
            check(
                u8::try_from(i % 6).unwrap(),
                CmpOp::MaskedEq,
                1 << (i % 60),
                0,
            )
        })
        .collect();
    vec![Rule {
        nr: 1,
        args,
        action: Action::Allow,
    }]
}

#[test]
fn rules_with_many_checks_never_fail_open() {
    for n in [1, 6, 7, 42, 43, 45, 100, 400] {
        let rules = long_rule(n);
        let f = Filter::compile(&rules, None, None, Action::Violation).unwrap();
        // All bits clear: every check holds.
        assert_eq!(f.evaluate(X64, 1, [0; 6]), Some(SECCOMP_RET_ALLOW), "{n}");
        // The last check alone fails: the rule does not match.
        let last = n - 1;
        let mut args = [0u64; 6];
        args[last % 6] = 1 << (last % 60);
        assert_eq!(f.evaluate(X64, 1, args), Some(SECCOMP_RET_TRAP), "{n}");
        // Each check fails on its own bit (the first ones too).
        for i in [0, n / 2, last] {
            let mut args = [0u64; 6];
            args[i % 6] = 1 << (i % 60);
            assert_eq!(f.evaluate(X64, 1, args), Some(SECCOMP_RET_TRAP), "{n} {i}");
        }
        assert_eq!(f.evaluate(X64, 2, [0; 6]), Some(SECCOMP_RET_TRAP));
    }
}

/// The encoding bytejail used before: one block per rule whose failing checks jump to its end
/// with a `u8` offset (`as u8`). The twin of the test above: with 45 masked checks it lets a
/// call through that fails a check.
#[test]
#[allow(
    clippy::cast_possible_truncation,
    reason = "the old encoding's truncation is what this test reproduces"
)]
fn the_old_8_bit_encoding_failed_open_on_long_rules() {
    use super::bpf::{BPF_ALU_AND_K, BPF_JEQ_K, BPF_LD_W_ABS, BPF_RET_K};
    let rule = &long_rule(45)[0];
    let mut block: Vec<Insn> = Vec::new();
    const FAIL: u8 = u8::MAX;
    for c in &rule.args {
        let lo = 16 + 8 * u32::from(c.index);
        for (off, m) in [(lo + 4, (c.value >> 32) as u32), (lo, c.value as u32)] {
            block.push(Insn::stmt(BPF_LD_W_ABS, off));
            block.push(Insn::stmt(BPF_ALU_AND_K, m));
            block.push(Insn {
                code: BPF_JEQ_K,
                jt: 0,
                jf: FAIL,
                k: 0,
            });
        }
    }
    block.push(Insn::stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    let len = block.len();
    for (j, insn) in block.iter_mut().enumerate() {
        if insn.jf == FAIL {
            insn.jf = (len - (j + 1)) as u8; // the old truncation
        }
    }
    let mut program = vec![
        Insn::stmt(BPF_LD_W_ABS, 0),
        Insn {
            code: BPF_JEQ_K,
            jt: 0,
            jf: len as u8,
            k: 1,
        },
    ];
    program.extend(block);
    program.push(Insn::stmt(BPF_RET_K, SECCOMP_RET_TRAP));
    let mut args = [0u64; 6];
    args[0] = 1; // fails the first check
    let old = interp::run(&program, &interp::SeccompData::new(X64, 1, args));
    assert_eq!(old, Some(SECCOMP_RET_ALLOW), "the old encoding");
    let new = Filter::compile(std::slice::from_ref(rule), None, None, Action::Violation).unwrap();
    assert_eq!(new.evaluate(X64, 1, args), Some(SECCOMP_RET_TRAP));
}

/// "dup2 with fd 1 gets EPERM" holds through `int 0x80` whatever the high half of rbx says;
/// with the 64-bit comparison switched back on, the high half slips past.
#[test]
fn i386_arguments_are_compared_on_their_low_32_bits() {
    let deny = |nr| Rule {
        nr,
        args: vec![check(0, CmpOp::Eq, 1, 0)],
        action: Action::Errno(1),
    };
    let rules = RuleSet {
        x86_64: vec![deny(33)],
        i386: Some(vec![deny(63)]),
        x32: None,
        default: Action::Allow,
    };
    let eperm = Some(SECCOMP_RET_ERRNO | 1);
    let f = Filter::from_rules(rules.clone().into(), FilterExtras::default()).unwrap();
    assert_eq!(f.evaluate(I386, 63, [1, 5, 0, 0, 0, 0]), eperm);
    assert_eq!(f.evaluate(I386, 63, [0x1_0000_0001, 5, 0, 0, 0, 0]), eperm);
    assert_eq!(
        f.evaluate(I386, 63, [2, 5, 0, 0, 0, 0]),
        Some(SECCOMP_RET_ALLOW)
    );
    // Native calls use the whole register: a high half is another fd.
    assert_eq!(f.evaluate(X64, 33, [1, 5, 0, 0, 0, 0]), eperm);
    assert_eq!(
        f.evaluate(X64, 33, [0x1_0000_0001, 5, 0, 0, 0, 0]),
        Some(SECCOMP_RET_ALLOW)
    );
    let old = Filter::from_rules(rules.into(), FilterExtras::i386_full_width_for_tests()).unwrap();
    assert_eq!(
        old.evaluate(I386, 63, [0x1_0000_0001, 5, 0, 0, 0, 0]),
        Some(SECCOMP_RET_ALLOW)
    );
    // Every op at the edges, on 32 bits: the value's high half does not count either.
    for op in [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::MaskedEq,
    ] {
        for value in [0u64, 1, 0xffff_ffff, 0x1_0000_0000, 0x1_8000_0001] {
            let rule = Rule {
                nr: 4,
                args: vec![check(2, op, value, value & 0xff)],
                action: Action::Errno(7),
            };
            let f = Filter::compile(&[], Some(&[rule]), None, Action::Allow).unwrap();
            for arg in [
                0u64,
                1,
                2,
                0x8000_0001,
                0xffff_ffff,
                0x1_0000_0001,
                u64::MAX,
            ] {
                let a = [0, 0, arg, 0, 0, 0];
                let lo = |v: u64| v & 0xffff_ffff;
                let want = if op.holds(lo(arg), lo(value), lo(value & 0xff)) {
                    SECCOMP_RET_ERRNO | 7
                } else {
                    SECCOMP_RET_ALLOW
                };
                assert_eq!(
                    f.evaluate(I386, 4, a),
                    Some(want),
                    "{op:?} {value:#x} {arg:#x}"
                );
                assert_eq!(f.decide(I386, 4, a), want);
            }
        }
    }
}

#[test]
fn denying_new_tasks_takes_precedence_in_every_section() {
    let f = profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let eagain = Some(SECCOMP_RET_ERRNO | libc::EAGAIN as u32);
    let d = f.with_extras(&FilterExtras::deny_new_tasks(true)).unwrap();
    for nr in [56, 57, 58, 435] {
        assert_eq!(f.evaluate(X64, nr, [0; 6]), Some(SECCOMP_RET_ALLOW));
        assert_eq!(d.evaluate(X64, nr, [0; 6]), eagain, "{nr}");
        assert_eq!(
            d.evaluate(X64, X32_SYSCALL_BIT | nr, [0; 6]),
            eagain,
            "x32 {nr}"
        );
    }
    for nr in [2, 120, 190, 435] {
        assert_eq!(d.evaluate(I386, nr, [0; 6]), eagain, "i386 {nr}");
    }
    // Everything else as before.
    assert_eq!(d.evaluate(X64, 39, [0; 6]), Some(SECCOMP_RET_ERRNO | 1));
    assert_eq!(d.evaluate(X64, 0, [0; 6]), Some(SECCOMP_RET_ALLOW));
    // Compiled once: the second call returns the same program.
    let again = f.with_extras(&FilterExtras::deny_new_tasks(true)).unwrap();
    assert!(std::ptr::eq(d.program().as_ptr(), again.program().as_ptr()));
    let policy = Policy::Profile {
        name: "p".into(),
        filter: f,
    };
    let via_policy = policy
        .filter_with(&FilterExtras::deny_new_tasks(true))
        .unwrap()
        .unwrap();
    assert_eq!(via_policy.evaluate(X64, 56, [0; 6]), eagain);
}

/// Docker's and runc's conversion rules, each on a small profile.
#[test]
fn profiles_convert_as_docker_and_runc_do() {
    // ERRNO without errnoRet is EPERM, not defaultErrnoRet; an entry equal to the default is
    // dropped, so the later ALLOW decides.
    let f = profile(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [
              {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
              {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]},
              {"names": ["socket"], "action": "SCMP_ACT_ALLOW"}
            ]}"#,
    )
    .unwrap();
    assert_eq!(f.evaluate(X64, 39, [0; 6]), Some(SECCOMP_RET_ERRNO | 1));
    assert_eq!(
        f.evaluate(X64, 41, [40, 0, 0, 0, 0, 0]),
        Some(SECCOMP_RET_ALLOW)
    );
    assert_eq!(f.evaluate(X64, 40, [0; 6]), Some(SECCOMP_RET_ERRNO | 38));

    // Two conditions on one argument: each is a rule of its own (ORed); on two arguments, ANDed.
    let f = profile(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
              {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 3, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 5, "op": "SCMP_CMP_EQ"}]},
              {"names": ["write"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 3, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 5, "op": "SCMP_CMP_EQ"}]}
            ]}"#,
    )
    .unwrap();
    let eperm = Some(SECCOMP_RET_ERRNO | 1);
    assert_eq!(
        f.evaluate(X64, 0, [3, 0, 0, 0, 0, 0]),
        Some(SECCOMP_RET_ALLOW)
    );
    assert_eq!(
        f.evaluate(X64, 0, [5, 0, 0, 0, 0, 0]),
        Some(SECCOMP_RET_ALLOW)
    );
    assert_eq!(f.evaluate(X64, 0, [4, 0, 0, 0, 0, 0]), eperm);
    assert_eq!(
        f.evaluate(X64, 1, [3, 5, 0, 0, 0, 0]),
        Some(SECCOMP_RET_ALLOW)
    );
    assert_eq!(f.evaluate(X64, 1, [3, 4, 0, 0, 0, 0]), eperm);

    // An unconditional rule overrides conditional ones before it.
    let f = profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9, "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_EQ"}]},
              {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}
            ]}"#,
    )
    .unwrap();
    assert_eq!(
        f.evaluate(X64, 0, [3, 0, 0, 0, 0, 0]),
        Some(SECCOMP_RET_ERRNO | 5)
    );

    // minKernel in includes and excludes, against this kernel.
    let kernel = profile::kernel_version();
    let next = format!("{}.{}", kernel.0 + 1, 0);
    let json = format!(
        r#"{{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
              {{"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "includes": {{"minKernel": "{next}"}}}},
              {{"names": ["getppid"], "action": "SCMP_ACT_ALLOW", "excludes": {{"minKernel": "{next}"}}}},
              {{"names": ["gettid"], "action": "SCMP_ACT_ALLOW", "excludes": {{"minKernel": "3.0"}}}}
            ]}}"#
    );
    let f = profile(&json).unwrap();
    assert_eq!(f.evaluate(X64, 39, [0; 6]), eperm, "needs a newer kernel");
    assert_eq!(f.evaluate(X64, 110, [0; 6]), Some(SECCOMP_RET_ALLOW));
    assert_eq!(f.evaluate(X64, 186, [0; 6]), eperm, "excluded from 3.0 on");

    // Names no x86 ABI has are skipped and listed; archMap's other entries are ignored.
    let p = Policy::from_profile_json(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [{"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": null},
                        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
            "syscalls": [{"names": ["riscv_hwprobe", "getpid", "sync_file_range2", "socketcall"], "action": "SCMP_ACT_ALLOW"}]}"#,
        "p.json",
    )
    .unwrap();
    assert_eq!(p.skipped_names(), ["riscv_hwprobe", "sync_file_range2"]);
    let f = p.filter().unwrap();
    assert_eq!(
        f.evaluate(I386, 102, [0; 6]),
        Some(SECCOMP_RET_ALLOW),
        "socketcall"
    );
    assert_eq!(f.evaluate(I386, 20, [0; 6]), Some(SECCOMP_RET_ALLOW));
}

/// Every program agrees with the direct evaluation of its rules on a grid of vectors.
#[test]
fn programs_agree_with_the_reference_on_the_checked_in_profiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-samples/policies");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(Policy::Profile { filter, .. }) = Policy::from_profile_file(&path) else {
            continue;
        };
        for (arch, nrs) in [
            (X64, 0..500u32),
            (I386, 0..500),
            (X64, X32_SYSCALL_BIT..X32_SYSCALL_BIT + 600),
        ] {
            for nr in nrs {
                for args in [
                    [0u64; 6],
                    [1, 2, 3, 4, 5, 6],
                    [u64::MAX; 6],
                    [0x7e02_0000; 6],
                ] {
                    assert_eq!(
                        filter.evaluate(arch, nr, args),
                        Some(filter.decide(arch, nr, args)),
                        "{} {arch:#x} {nr}",
                        path.display()
                    );
                }
            }
        }
    }
}

/// Docker's, Podman's and runc's published profiles and test profiles load unmodified.
#[test]
fn published_profiles_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-samples/policies");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    for path in names {
        match Policy::from_profile_file(&path) {
            Ok(p) => {
                let f = p.filter().unwrap();
                eprintln!(
                    "{}: {} instructions, longest path {}, skipped {:?}",
                    path.display(),
                    f.program().len(),
                    f.longest_path(),
                    p.skipped_names()
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
}
