//! Profile mode across jobs: an attacker under a profile that allows every syscall makes fuzzed
//! memory, process, descriptor and IPC calls on the runner's addresses it finds, then a canary
//! job follows on the same thread, pool, same-code slot or batch. The canary must report what
//! a fresh run of it reports, no process the attacker made may be alive once its job is
//! reported (or its same-code worker ended, or its pool dropped), nothing of the case may be
//! left after it, and the host is as it was (`src/profile_jobs.rs` states the rules).
#![no_main]

use bytejail_fuzz::host;
use bytejail_fuzz::profile_jobs::{check_case, namespaces, references, Case};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        host();
        // The canary's fresh-run reports, before any attacker ran.
        references();
    },
    |data: &[u8]| {
        let case = Case::decode(data, namespaces());
        let host = host();
        let before = host.snapshot();
        check_case(host, &case);
        host.check_unchanged(&before);
    }
);
