//! The security scenario through `bytejail batch`'s library entry: a job of one
//! submission holds a secret in its input, a later job of another submission hunts for it where
//! the host keeps it. In either reuse mode it finds nothing; a worker forked straight from the
//! host without scrubbing finds it (the twin).

mod common;

use bytejail::batch::{run_batch, BatchConfig, Reuse};
use bytejail::{Gpr, RunOptions};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_later_batch_job_cannot_find_an_earlier_jobs_input() {
    let secret = format!("bytejail-batch-secret-{:x}", std::process::id()).repeat(4);
    let hunt = common::escape_sample("hunt_range.s");
    // The host holds the secret, as a batch runner holds the lines it read.
    let held: Vec<u8> = secret.as_bytes().to_vec();
    let page = held.as_ptr() as u64 & !0xfff;
    let (start, len) = (page - 8 * 4096, 17 * 4096u64);
    let lines = format!(
        "{{\"id\": \"holder\", \"code_hex\": \"c3\", \"input_hex\": \"{}\"}}\n\
         {{\"id\": \"hunter\", \"code_hex\": \"{}\", \"regs\": {{\"rbx\": {start}, \"r12\": {len}}}}}\n",
        hex(&held),
        hex(&hunt)
    );
    for reuse in [Reuse::None, Reuse::SameCode] {
        let config = BatchConfig {
            defaults: RunOptions::default(),
            jobs: 1,
            ordered: true,
            reuse,
        };
        let mut out = Vec::new();
        run_batch(lines.as_bytes(), &mut out, &config, &mut |_| {}).unwrap();
        let text = String::from_utf8(out).unwrap();
        let results: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(results[1]["id"], "hunter");
        assert_eq!(
            results[1]["outcome"], "returned",
            "{reuse:?}: {}",
            results[1]
        );
        assert!(
            !text.contains(&hex(secret.as_bytes())) && !text.contains(&secret),
            "{reuse:?}: the hunter found the holder's input"
        );
    }

    // The twin: the same hunt in an unscrubbed worker forked from the host finds it.
    let mut options = RunOptions {
        scrub: false,
        ..RunOptions::default()
    };
    options.registers.set(Gpr::RBX, start).unwrap();
    options.registers.set("r12".parse().unwrap(), len).unwrap();
    let twin = bytejail::run(&hunt, b"", &options).unwrap();
    assert!(
        twin.output
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()),
        "the unscrubbed hunt did not find the secret ({} bytes read)",
        twin.output.len()
    );
    drop(held);
}
