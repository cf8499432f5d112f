//! One code, a few inputs, one `SameCode`: every report agrees with the oracle and the
//! same-code rules (sys zero, RSS only for an input that ends the worker), the worker count is
//! one more than the inputs before the last that ended a worker, the host is as it was once the
//! `SameCode` is dropped, and for programs of steps each input's report is the one a fresh run
//! of the same code and input gives (`src/same.rs` states the rule): no input sees state an
//! earlier one left.
#![no_main]

use bytejail_fuzz::host;
use bytejail_fuzz::same::{check_case, Case};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        host();
    },
    |data: &[u8]| {
        // Raw cases need code: the runner refuses empty code (an input error).
        let Some(case) = Case::decode(data) else {
            return;
        };
        let host = host();
        let before = host.snapshot();
        check_case(host, &case);
        host.check_unchanged(&before);
    }
);
