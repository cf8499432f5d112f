//! Any sequence of syscalls (any number, any arguments, through `syscall`, `int 0x80`,
//! `sysenter` or the vsyscall page), forged signal frames and faults gets exactly the outcome
//! strict mode's rules give, as far as the steps determine it, a report that agrees with itself
//! and its limits, and leaves the host as it found it.
#![no_main]

use bytejail_fuzz::storm::Storm;
use bytejail_fuzz::{host, run_storm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        host();
    },
    |storm: Storm| {
        let host = host();
        let before = host.snapshot();
        run_storm(host, &storm);
        host.check_unchanged(&before);
    }
);
