//! Property: for random rule sets (long rules included) and random vectors, the compiled
//! program's decision, run through the BPF interpreter, equals the direct evaluation of the
//! rules (`Filter::decide`): first matching rule of the number in order, bytejail's own calls and
//! the extras first, i386 and x32 compared on 32 bits, x32 and i386 rejected when absent.

use std::sync::Arc;

use bytejail::policy::{
    Action, ArgCheck, CmpOp, CompileError, Filter, FilterExtras, Rule, RuleSet, AUDIT_ARCH_I386,
    AUDIT_ARCH_X86_64, X32_SYSCALL_BIT,
};
use proptest::prelude::*;

const EDGES: [u64; 12] = [
    0,
    1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0001,
    0x1_8000_0000,
    0xffff_ffff_0000_0000,
    u64::MAX - 1,
    u64::MAX,
];

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![3 => proptest::sample::select(EDGES.to_vec()), 1 => any::<u64>()]
}

fn op() -> impl Strategy<Value = CmpOp> {
    proptest::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::MaskedEq,
    ])
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Allow),
        Just(Action::Log),
        Just(Action::Violation),
        (0u16..4095).prop_map(Action::Errno),
    ]
}

fn check() -> impl Strategy<Value = ArgCheck> {
    (0u8..6, op(), value(), value()).prop_map(|(index, op, value, value_two)| ArgCheck {
        index,
        op,
        value,
        value_two,
    })
}

/// Rules on a few numbers (so that they overlap), some with many checks.
fn rules(base: u32) -> impl Strategy<Value = Vec<Rule>> {
    let nr = prop_oneof![
        (0u32..6).prop_map(move |n| base + n),
        Just(base + 56), // clone (native and x32), which the extras deny
        Just(base + 60), // exit: bytejail's own
        (0u32..600).prop_map(move |n| base + n),
    ];
    let args = prop_oneof![
        4 => proptest::collection::vec(check(), 0..4),
        1 => proptest::collection::vec(check(), 40..120),
    ];
    proptest::collection::vec(
        (nr, args, action()).prop_map(|(nr, args, action)| Rule { nr, args, action }),
        0..12,
    )
}

fn rule_set() -> impl Strategy<Value = RuleSet> {
    (
        rules(0),
        proptest::option::of(rules(0)),
        proptest::option::of(rules(X32_SYSCALL_BIT)),
        action(),
    )
        .prop_map(|(x86_64, i386, x32, default)| RuleSet {
            x86_64,
            i386,
            x32,
            default,
        })
}

/// Vectors aimed at the rules: their numbers and values, or anything.
fn vectors(rules: &RuleSet) -> impl Strategy<Value = Vec<(u32, u32, [u64; 6])>> {
    let mut nrs: Vec<u32> = [0u32, 2, 56, 57, 60, 120, 435, u32::MAX, 0x3fff_ffff].to_vec();
    let mut values: Vec<u64> = EDGES.to_vec();
    for rule in rules
        .x86_64
        .iter()
        .chain(rules.i386.iter().flatten())
        .chain(rules.x32.iter().flatten())
    {
        nrs.push(rule.nr);
        nrs.push(rule.nr & !X32_SYSCALL_BIT);
        nrs.push(rule.nr | X32_SYSCALL_BIT);
        for c in &rule.args {
            values.extend([c.value, c.value.wrapping_add(1), c.value.wrapping_sub(1)]);
            values.push(c.value_two);
        }
    }
    let arch = proptest::sample::select(vec![AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, 0xc000_00b7]);
    let nr = prop_oneof![4 => proptest::sample::select(nrs), 1 => any::<u32>()];
    let arg = prop_oneof![4 => proptest::sample::select(values), 1 => any::<u64>()];
    proptest::collection::vec((arch, nr, proptest::array::uniform6(arg)), 64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_program_decides_as_the_rules_say(
        (rules, vectors, deny) in rule_set().prop_flat_map(|r| {
            let v = vectors(&r);
            (Just(r), v, any::<bool>())
        })
    ) {
        let summary = format!(
            "default {:?}, x86_64 {:?}, i386 {:?}, x32 {:?}",
            rules.default,
            rules.x86_64.iter().map(|r| (r.nr, r.args.len(), r.action)).collect::<Vec<_>>(),
            rules.i386.as_ref().map(|s| s.iter().map(|r| (r.nr, r.args.len(), r.action)).collect::<Vec<_>>()),
            rules.x32.as_ref().map(|s| s.iter().map(|r| (r.nr, r.args.len(), r.action)).collect::<Vec<_>>()),
        );
        let filter = match Filter::from_rules(Arc::new(rules), FilterExtras::deny_new_tasks(deny)) {
            Ok(f) => f,
            Err(CompileError::TooLong { .. }) => return Err(TestCaseError::reject("too long")),
            Err(e) => panic!("{e}"),
        };
        for (arch, nr, args) in vectors {
            prop_assert_eq!(
                filter.evaluate(arch, nr, args),
                Some(filter.decide(arch, nr, args)),
                "arch {:#x} nr {:#x} args {:x?}; deny {}; {}", arch, nr, args, deny, summary
            );
        }
    }
}
