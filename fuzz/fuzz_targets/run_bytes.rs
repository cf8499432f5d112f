//! Any bytes, run as guest code, give a report that agrees with itself, its limits and the
//! kernel, and leave the host as they found it: the same descriptors, no child, nothing written.
#![no_main]

use bytejail_fuzz::{fuzz_options, host};
use libfuzzer_sys::fuzz_target;

/// What the guest finds on fd 0: enough for a read loop to go round a few times.
const INPUT: &[u8] = b"bytejail fuzz input: read me, echo me, sum me\n";

fuzz_target!(
    init: {
        host();
    },
    |code: &[u8]| {
        // The runner refuses empty code (an input error, not guest behaviour).
        if code.is_empty() {
            return;
        }
        let host = host();
        let before = host.snapshot();
        host.run(code, INPUT, &fuzz_options());
        host.check_unchanged(&before);
    }
);
