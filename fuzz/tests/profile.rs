//! The `profile_compile` target's property on every checked-in profile, and on each of them cut
//! short and with a byte changed at several places: stable Rust, no fuzzer needed.

use bytejail_fuzz::profile::check_profile;

#[test]
fn checked_in_profiles_and_their_mutants_hold_the_property() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-samples/policies");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read(&path).unwrap();
        check_profile(&text);
        for cut in [1, text.len() / 2, text.len() - 1] {
            check_profile(&text[..cut]);
            for byte in [b'9', b'"', b'}'] {
                let mut mutant = text.clone();
                mutant[cut] = byte;
                check_profile(&mutant);
            }
        }
        count += 1;
    }
    assert!(count >= 8, "{count} profiles");
}
