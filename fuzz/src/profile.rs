//! The profile compiler's property, for the `profile_compile` target and its stable test: any
//! input either is refused with an error or compiles, never panics; a compiled program decides
//! every probed (arch, number, arguments) as the direct evaluation of its rules does, also with
//! new tasks denied.

use bytejail::policy::{FilterExtras, ProfileFile, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};

/// Checks one input; panics on a violation of the property.
pub fn check_profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(profile) = ProfileFile::parse(text) else {
        return;
    };
    for deny in [false, true] {
        let Ok((filter, _skipped)) = profile.compile(&FilterExtras::deny_new_tasks(deny)) else {
            return;
        };
        // Probe every number the rules name (and its neighbours), with values they compare.
        let rules = filter.rules();
        let mut nrs: Vec<u32> = vec![0, 1, 2, 56, 57, 60, 120, 0x3fff_ffff, 0x4000_0000, u32::MAX];
        let mut values: Vec<u64> = vec![0, 1, 0xffff_ffff, 0x1_0000_0000, u64::MAX];
        for rule in rules
            .x86_64
            .iter()
            .chain(rules.i386.iter().flatten())
            .chain(rules.x32.iter().flatten())
        {
            nrs.extend([rule.nr.wrapping_sub(1), rule.nr, rule.nr.wrapping_add(1)]);
            for c in &rule.args {
                values.extend([c.value, c.value.wrapping_add(1), c.value.wrapping_sub(1)]);
                values.extend([c.value_two, c.value | 1 << 32, c.value & 0xffff_ffff]);
            }
        }
        nrs.sort_unstable();
        nrs.dedup();
        values.sort_unstable();
        values.dedup();
        for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, 0xc000_00b7] {
            for &nr in &nrs {
                for (i, _) in values.iter().enumerate().take(16) {
                    let args: [u64; 6] = std::array::from_fn(|k| {
                        values[(i * 7 + k * 13 + nr as usize) % values.len()]
                    });
                    assert_eq!(
                        filter.evaluate(arch, nr, args),
                        Some(filter.decide(arch, nr, args)),
                        "arch {arch:#x} nr {nr:#x} args {args:x?} deny {deny}"
                    );
                }
            }
        }
    }
}
