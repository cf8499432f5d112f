//! The security scenario through `bytejail batch`'s library entry: a job of one
//! submission holds a secret in its input, a later job of another submission hunts for it where
//! the host keeps it. In either reuse mode it finds nothing; a worker forked straight from the
//! host without scrubbing finds it (the twin).

mod common;

use bytejail::batch::{run_batch, BatchConfig, Reuse};
use bytejail::{Gpr, RunOptions};

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
        common::hex(&held),
        common::hex(&hunt)
    );
    for reuse in [Reuse::None, Reuse::SameCode] {
        let config = BatchConfig::default()
            .with_jobs(1)
            .with_ordered(true)
            .with_reuse(reuse);
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
            !text.contains(&common::hex(secret.as_bytes())) && !text.contains(&secret),
            "{reuse:?}: the hunter found the holder's input"
        );
    }

    // The twin: the same hunt in an unscrubbed worker forked from the host finds it.
    let mut options = RunOptions::default().with_scrub(false);
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

/// Runs `lines` through `run_batch` on one job thread, in input order; the result lines and
/// the summary.
fn run_lines(lines: &str, reuse: Reuse) -> (Vec<serde_json::Value>, bytejail::batch::Summary) {
    let config = BatchConfig::default()
        .with_jobs(1)
        .with_ordered(true)
        .with_reuse(reuse);
    let mut out = Vec::new();
    let summary = run_batch(lines.as_bytes(), &mut out, &config, &mut |_| {}).unwrap();
    let results = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (results, summary)
}

/// A segment selector survives from one input to the next in a same-code worker (the host
/// does not reset ES), so a guest that reads ES and then loads it sees whether another input
/// ran before it in the same worker: 0 in a fresh worker, the selector it loads (the user data
/// segment, 0x2b) after one.
#[test]
fn same_code_reuse_stays_within_a_group() {
    let probe = common::gas("mov eax, es\nmov ecx, 0x2b\nmov es, ecx\nret");
    let code = common::hex(&probe);
    let line = |id: &str, group: &str| {
        let group = if group.is_empty() {
            String::new()
        } else {
            format!(", \"group\": {group}")
        };
        format!("{{\"id\": \"{id}\", \"code_hex\": \"{code}\"{group}}}\n")
    };
    let lines = [
        // Two submissions with the same code, one after the other.
        line("a1", "\"a\""),
        line("b1", "\"b\""),
        // A group given as a number is not the same group as that number as a string.
        line("n1", "1"),
        line("s1", "\"1\""),
        // No group: never shared.
        line("u1", ""),
        line("u2", ""),
        // The twin: one submission's inputs do share the worker.
        line("c1", "\"c\""),
        line("c2", "\"c\""),
        line("c3", "\"c\""),
    ]
    .concat();

    let (results, summary) = run_lines(&lines, Reuse::SameCode);
    let es: Vec<(String, u64)> = results
        .iter()
        .map(|r| {
            assert_eq!(r["outcome"], "returned", "{r}");
            (
                r["id"].as_str().unwrap().to_string(),
                r["rax"].as_u64().unwrap(),
            )
        })
        .collect();
    let user_data = 0x2b;
    let expected = [
        ("a1", 0),
        ("b1", 0),
        ("n1", 0),
        ("s1", 0),
        ("u1", 0),
        ("u2", 0),
        ("c1", 0),
        ("c2", user_data),
        ("c3", user_data),
    ]
    .map(|(id, v)| (id.to_string(), v));
    assert_eq!(es, expected);
    // A worker each for a1, b1, n1, s1, u1, u2, and one for the three inputs of group c.
    assert_eq!(summary.workers, 7, "{summary:?}");

    // Without reuse, not even a group shares a worker.
    let (results, summary) = run_lines(&lines, Reuse::None);
    assert!(
        results.iter().all(|r| r["rax"] == 0),
        "{:?}",
        results.iter().map(|r| &r["rax"]).collect::<Vec<_>>()
    );
    assert_eq!(summary.workers, 9, "{summary:?}");
}

/// A long `input_hex` is decoded as its line is read (in pieces, as from a file or a pipe):
/// every job still gets exactly its own input, whatever the case of its digits, and a line
/// whose digits cannot be taken that way (mixed case, an odd count) is answered as before.
#[test]
fn a_long_input_hex_read_in_pieces_is_the_jobs_input() {
    // mov eax, 1; mov edx, esi; mov rsi, rdi; mov edi, 1; syscall; ret: writes its input.
    let echo = "b80100000089f24889febf010000000f05c3";
    let inputs: Vec<Vec<u8>> = (0..3u32)
        .map(|n| (0..300_000u32).map(|i| (i * 7 + n) as u8).collect())
        .collect();
    let lower = common::hex(&inputs[0]);
    let upper = common::hex(&inputs[1]).to_uppercase();
    let mixed = format!(
        "{}{}",
        &lower[..1000],
        common::hex(&inputs[2])[1000..].to_uppercase()
    );
    let lines = format!(
        "{{\"id\":1,\"code_hex\":\"{echo}\",\"input_hex\":\"{lower}\"}}\n\
         {{\"id\":2,\"input_hex\":\"{upper}\",\"code_hex\":\"{echo}\"}}\r\n\
         {{\"id\":3,\"code_hex\":\"{echo}\",\"input_hex\":\"{mixed}\"}}\n\
         {{\"id\":4,\"code_hex\":\"{echo}\",\"input_hex\":\"{lower}0\"}}\n"
    );
    for jobs in [1, 2] {
        let config = BatchConfig::default().with_jobs(jobs).with_ordered(true);
        let mut out = Vec::new();
        let input = std::io::BufReader::with_capacity(64 << 10, lines.as_bytes());
        run_batch(input, &mut out, &config, &mut |_| {}).unwrap();
        let results: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(results.len(), 4, "{jobs}");
        let mixed_bytes = [&inputs[0][..500], &inputs[2][500..]].concat();
        for (result, input) in results.iter().zip([&inputs[0], &inputs[1], &mixed_bytes]) {
            assert_eq!(result["outcome"], "returned", "{jobs}: {}", result["id"]);
            assert!(
                result["output_hex"].as_str() == Some(common::hex(input).as_str()),
                "{jobs}: job {} did not get its input back",
                result["id"]
            );
        }
        let error = results[3]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("odd number of hex digits"),
            "{jobs}: {error}"
        );
    }
}
