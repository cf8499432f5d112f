//! Random seccomp profile JSON through bytejail's profile compiler: no panic, and every
//! compiled program decides as the direct evaluation of its rules (`src/profile.rs`).
#![no_main]

use bytejail_fuzz::profile::check_profile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_profile(data);
});
