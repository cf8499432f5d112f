//! Review of the same-code reset's page-fault watch (commit f03acab, `runner/sys/faults.rs`):
//! a spun session's reset skips its `fstat` while the worker's perf ring head has not moved
//! since the last scan. These tests try to make a page of scratch, stack or the alternate
//! signal stack come to be (or be written) without the reset noticing, in every way a strict
//! or strict-bpf guest has, with workers replaced mid-session, guests that forge "done",
//! several sessions and threads, and a forked host; and check the watch leaks nothing.
//!
//! One probe guest serves them all (see [`prober`]): each input first reads a whole page
//! (its first 4 KiB OR-ed into `rax`) without writing it, then makes a page come to be or
//! writes one in the way its input names. Every input of a same-code session starts from
//! zeros, so each probe must read 0, as it does in a fresh run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

mod common;
use common::{
    beside_forks, children_of, essence, forking, gas, one_at_a_time, pseudo_random,
    two_cpus_to_spin,
};

use bytejail::{Limits, Outcome, Policy, Report, RunOptions, SameCode, Zygote};

/// Ways an input makes its page (`P`) come to be or writes it, the input's first byte.
mod how {
    /// A store to `P` (a user-mode write fault, or none where `P` is mapped already).
    pub const STORE: u8 = 0;
    /// A load of `P`, then a store (the page comes with the read fault; the store takes none).
    pub const LOAD_STORE: u8 = 1;
    /// A load of `P` only: the page comes to be, zero, and stays mapped for a later store.
    pub const LOAD: u8 = 2;
    /// `write(1, P, 8)` (the kernel's read brings the page in), then a store.
    pub const WRITE_STORE: u8 = 3;
    /// `write(1, P, 8)` only.
    pub const WRITE: u8 = 4;
    /// `write(1, P, 8192)`: two pages read by the kernel (the second may be the guard page
    /// past scratch: a partial write), then a store to `P`.
    pub const WRITE_TWO_STORE: u8 = 5;
    /// `rt_sigreturn` with a frame whose first 16 bytes lie in `P` and the rest in the page
    /// above it (written by the guest): the kernel's read of `uc_flags` brings `P` in.
    pub const SIGRETURN: u8 = 6;
    /// `int 0x80` `write(1, P, 8)` (the pointer truncated to 32 bits), then a store.
    pub const INT80_WRITE_STORE: u8 = 7;
    /// `read(0, P, 8)` (EOF: nothing copied), then a store.
    pub const READ_STORE: u8 = 8;
    /// A `push` with `rsp` at the top of `P`: its last word.
    pub const PUSH: u8 = 9;
    /// A store to `P`, then a store to the guard page past scratch: SIGSEGV ends the worker.
    pub const STORE_CRASH: u8 = 10;
    /// A store to `P`, then a loop forever: a timeout ends the worker.
    pub const STORE_HANG: u8 = 11;
    /// A store to `P`, then `exit(3)`.
    pub const STORE_EXIT: u8 = 12;
    /// A store to `P`, then 70,000 bytes of scratch to fd 1: over the output limit.
    pub const STORE_FLOOD: u8 = 13;
    /// Nothing but the probe.
    pub const QUIET: u8 = 14;
    /// `write(1, 8, 8)`: EFAULT, nothing written.
    pub const WRITE_BAD: u8 = 15;
    /// Forges "done" (the record's state and the done word), waits (bounded) until the host
    /// posts the next input on the go word, stores to `P` and returns.
    pub const FORGE_THEN_STORE: u8 = 20;
    /// Forges "done", then stores to every page of scratch in turn, forever.
    pub const FORGE_THEN_STORE_FOREVER: u8 = 21;
}

/// Page ids: 0-255 scratch pages (from `rdx`), 1001-1199 stack pages counted down from the
/// page holding the entry `rsp` (1000 + k is k pages below it), 2000-2009 the pages of the
/// alternate signal stack (region + 0x6000).
const SCRATCH_PAGES: u16 = 256;
const STACK_PAGES: u16 = 200;
const ALT_PAGES: u16 = 10;
const MARK: u64 = 7;

/// The probe guest. Input: `[how, probe id (u16), page id (u16)]`. `rax`: the OR of the
/// probe page's 512 words, read before anything else; `rbx`: the last system call's result.
fn prober() -> Vec<u8> {
    let methods = [
        (how::STORE, "mov qword ptr [r9], 7"),
        (how::LOAD_STORE, "mov rax, [r9]\n mov qword ptr [r9], 7"),
        (how::LOAD, "mov rax, [r9]"),
        (how::WRITE_STORE, "mov edx, 8\n call write_p\n mov qword ptr [r9], 7"),
        (how::WRITE, "mov edx, 8\n call write_p"),
        (
            how::WRITE_TWO_STORE,
            "mov edx, 8192\n call write_p\n mov qword ptr [r9], 7",
        ),
        (how::SIGRETURN, "jmp sigreturn_p"),
        (
            how::INT80_WRITE_STORE,
            "mov eax, 4\n mov ebx, 1\n mov ecx, r9d\n mov edx, 8\n int 0x80\n mov rbx, rax\n\
             mov qword ptr [r9], 7",
        ),
        (
            how::READ_STORE,
            "xor edi, edi\n mov rsi, r9\n mov edx, 8\n xor eax, eax\n syscall\n mov rbx, rax\n\
             mov qword ptr [r9], 7",
        ),
        (
            how::PUSH,
            "mov r10, rsp\n lea rsp, [r9 + 4096]\n push 7\n mov rsp, r10",
        ),
        (
            how::STORE_CRASH,
            "mov qword ptr [r9], 7\n lea rax, [r13 + r14]\n mov qword ptr [rax], 1",
        ),
        (how::STORE_HANG, "mov qword ptr [r9], 7\n hang: jmp hang"),
        (
            how::STORE_EXIT,
            "mov qword ptr [r9], 7\n mov edi, 3\n mov eax, 60\n syscall",
        ),
        (
            how::STORE_FLOOD,
            "mov qword ptr [r9], 7\n mov edi, 1\n mov rsi, r13\n mov edx, 70000\n mov eax, 1\n\
             syscall\n mov rbx, rax",
        ),
        (how::QUIET, ""),
        (
            how::WRITE_BAD,
            "mov edi, 1\n mov esi, 8\n mov edx, 8\n mov eax, 1\n syscall\n mov rbx, rax",
        ),
        (
            how::FORGE_THEN_STORE,
            "call forge\n mov edx, 2000000\n\
             forge_wait: pause\n cmp [r15 + 0x17c0], rcx\n jne forge_go\n dec edx\n jnz forge_wait\n\
             forge_go: mov qword ptr [r9], 7",
        ),
        (
            how::FORGE_THEN_STORE_FOREVER,
            "call forge\n\
             forever: xor ecx, ecx\n\
             forever_page: mov rax, rcx\n shl rax, 12\n mov qword ptr [r13 + rax], 7\n\
             inc ecx\n cmp ecx, 256\n jb forever_page\n jmp forever",
        ),
    ];
    let mut dispatch = String::new();
    let mut bodies = String::new();
    for (i, (method, body)) in methods.iter().enumerate() {
        dispatch.push_str(&format!("cmp al, {method}\n je m{i}\n"));
        bodies.push_str(&format!("m{i}:\n {body}\n jmp finish\n"));
    }
    gas(&format!(
        "
        mov r12, rdi
        mov r13, rdx                    # scratch
        mov r14, rcx                    # its length
        mov r15, [rsp]
        and r15, -4096                  # the region (the trampoline's return address)
        mov rbp, rsp
        and rbp, -4096                  # the stack's top page
        xor ebx, ebx
        movzx eax, word ptr [r12 + 1]
        call page_of
        xor r8d, r8d
        mov ecx, 512
    probe:
        or r8, [rax]
        add rax, 8
        dec ecx
        jnz probe
        movzx eax, word ptr [r12 + 3]
        call page_of
        mov r9, rax
        movzx eax, byte ptr [r12]
        {dispatch}
        jmp finish
        {bodies}
    finish:
        mov rax, r8
        ret

    page_of:                            # eax: a page id; rax: its address
        cmp eax, 1000
        jae 1f
        shl rax, 12
        add rax, r13
        ret
    1:  cmp eax, 2000
        jae 2f
        sub eax, 1000
        shl rax, 12
        neg rax
        add rax, rbp
        ret
    2:  sub eax, 2000
        shl rax, 12
        lea rax, [r15 + rax + 0x6000]
        ret

    write_p:                            # write(1, r9, rdx) into rbx
        mov edi, 1
        mov rsi, r9
        mov eax, 1
        syscall
        mov rbx, rax
        ret

    forge:                              # rcx: this input's number
        mov rcx, [r15 + 0x11a0]         # the record's taken word
        mov qword ptr [r15 + 0x1100], 1 # the record: returned
        mov [r15 + 0x17c8], rcx         # the done word
        ret

    sigreturn_p:                        # uc at P's top - 16: uc_flags, uc_link in P
        push r8
        push r9
        push r12
        push r13
        push r14
        push r15
        push rbp
        mov r10, rsp
        lea rsp, [r9 + 4096 - 16]
        lea rdi, [rsp + 16]
        mov ecx, 36
        xor eax, eax
        rep stosq
        mov [rsp + 160], r10            # rsp
        lea rax, [rip + sigreturn_back]
        mov [rsp + 168], rax            # rip
        mov qword ptr [rsp + 176], 0x202
        mov word ptr [rsp + 184], 0x33
        mov word ptr [rsp + 190], 0x2b
        mov eax, 15
        syscall
    sigreturn_back:
        pop rbp
        pop r15
        pop r14
        pop r13
        pop r12
        pop r9
        pop r8
        xor ebx, ebx
        jmp finish"
    ))
}

fn input(how: u8, probe: u16, page: u16) -> Vec<u8> {
    let mut input = vec![how];
    input.extend_from_slice(&probe.to_le_bytes());
    input.extend_from_slice(&page.to_le_bytes());
    input
}

/// Options for the probe: scratch and stack of 1 MiB (256 pages each), a short timeout for
/// the inputs that hang, and an output limit the flood passes.
fn probe_options(policy: &Policy, output_file: bool) -> RunOptions {
    RunOptions::default()
        .with_policy(policy.clone())
        .with_limits(
            Limits::default()
                .with_max_output(64 << 10)
                .with_timeout(Duration::from_millis(300)),
        )
        .with_output_file(output_file)
}

/// The page above `page` (which the sigreturn frame is written to, and the second page of
/// a two-page write), where it is one of the probe's pages.
fn above(page: u16) -> Option<u16> {
    match page {
        0..1000 if page + 1 < SCRATCH_PAGES => Some(page + 1),
        1002..2000 => Some(page - 1),
        2000..2009 => Some(page + 1),
        _ => None,
    }
}

/// A random page id, for `how` (the sigreturn frame and a two-page write need the page
/// above to be a probe page: not the last of scratch, the top of the stack or the last of
/// the alternate stack).
fn random_page(rnd: &mut impl FnMut() -> u64, how: u8) -> u16 {
    loop {
        let page = match rnd() % 8 {
            0..=3 => (rnd() % u64::from(SCRATCH_PAGES)) as u16,
            4..=6 => 1001 + (rnd() % u64::from(STACK_PAGES - 1)) as u16,
            _ => 2000 + (rnd() % u64::from(ALT_PAGES)) as u16,
        };
        let needs_above = matches!(how, how::SIGRETURN | how::WRITE_TWO_STORE);
        if !needs_above || above(page).is_some() {
            return page;
        }
    }
}

/// The rax a probe returned with; `None` for an input that ended otherwise.
fn probe_value(report: &Report) -> Option<u64> {
    match report.outcome {
        Outcome::Returned(regs) => Some(regs.rax),
        _ => None,
    }
}

/// Descriptors and mappings of perf events in this process.
fn perf_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("perf_event"))
        })
        .count()
}

fn perf_maps() -> Vec<(usize, usize)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("perf_event"))
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            )
        })
        .collect()
}

/// One input planned for a session, with the report it got.
struct Step {
    input: Vec<u8>,
    report: Report,
}

/// Runs `count` random inputs of the probe through one session under `options`, the
/// replacing kinds (`STORE_CRASH`, `STORE_EXIT`, `STORE_FLOOD`, `STORE_HANG`) mixed in
/// where `replacing` (never in the last 300). Asserts every probe reads 0, and, as inputs
/// go, that the process never holds more than `max_perf` perf events. Returns the steps.
fn random_session(
    same: &mut SameCode,
    options: &RunOptions,
    (seed, count, max_perf): (u64, usize, usize),
    replacing: bool,
    what: &str,
) -> Vec<Step> {
    let mut rnd = pseudo_random(seed);
    let mut steps = Vec::with_capacity(count);
    // Pages the last input brought in without writing them (a store there takes no fault),
    // and the pages it wrote or may have.
    let mut present: Vec<u16> = Vec::new();
    let mut last_dirty: Vec<u16> = Vec::new();
    let mut history: Vec<u16> = Vec::new();
    let mut hangs = 0;
    let mut trail: Vec<String> = Vec::new();
    for i in 0..count {
        let late = i + 300 >= count;
        let how = match rnd() % 100 {
            0 if replacing && !late => how::STORE_CRASH,
            1 if replacing && !late => how::STORE_EXIT,
            2 if replacing && !late && !options.output_file => how::STORE_FLOOD,
            3 if replacing && !late && hangs < 2 => {
                hangs += 1;
                how::STORE_HANG
            }
            4..=15 => how::QUIET,
            n => [
                how::STORE,
                how::LOAD_STORE,
                how::LOAD,
                how::WRITE_STORE,
                how::WRITE,
                how::WRITE_TWO_STORE,
                how::SIGRETURN,
                how::INT80_WRITE_STORE,
                how::READ_STORE,
                how::PUSH,
            ][(n % 10) as usize],
        };
        let probe = match rnd() % 4 {
            0 | 1 if !last_dirty.is_empty() => {
                last_dirty[(rnd() % last_dirty.len() as u64) as usize]
            }
            2 if !history.is_empty() => history[(rnd() % history.len() as u64) as usize],
            _ => random_page(&mut rnd, how::QUIET),
        };
        let page = if how == how::STORE && !present.is_empty() && rnd() % 2 == 0 {
            present[(rnd() % present.len() as u64) as usize]
        } else {
            random_page(&mut rnd, how)
        };
        let input = input(how, probe, page);
        let (spun0, unstatted0) = (same.inputs_spun(), same.inputs_unstatted());
        let started = Instant::now();
        let report = same
            .run_with(&input, options)
            .unwrap_or_else(|e| panic!("{what}, input {i} {input:?}: {e}"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}, input {i}: took {:?}",
            started.elapsed()
        );
        trail.push(format!(
            "{input:?}: spun {}, unstatted {}, {} {:?}",
            same.inputs_spun() - spun0,
            same.inputs_unstatted() - unstatted0,
            report.outcome.kind(),
            probe_value(&report),
        ));
        if let Some(rax) = probe_value(&report) {
            assert_eq!(
                rax,
                0,
                "{what}, input {i} {input:?}: page {probe} kept an earlier input's bytes \
                 ({} resets without an fstat so far); the last inputs:\n{}",
                same.inputs_unstatted(),
                trail[trail.len().saturating_sub(12)..].join("\n")
            );
        }
        if i % 100 == 99 {
            // Now and then: /proc takes long enough that the next input does not spin.
            let perf = perf_fds();
            assert!(perf <= max_perf, "{what}, input {i}: {perf} perf events");
        }
        present.clear();
        last_dirty.clear();
        match how {
            how::LOAD | how::WRITE => present.push(page),
            how::SIGRETURN => {
                present.push(page);
                last_dirty.extend(above(page));
            }
            how::WRITE_TWO_STORE => {
                present.extend(above(page));
                last_dirty.push(page);
            }
            how::QUIET => {}
            _ => last_dirty.push(page),
        }
        history.extend(&last_dirty);
        history.extend(&present);
        if history.len() > 64 {
            history.drain(..32);
        }
        steps.push(Step { input, report });
    }
    steps
}

/// Each step's report against a fresh run of its input (cached: many inputs repeat):
/// the essence where fd 1 is a pipe, else the outcome's kind (a file keeps the bytes of a
/// faulting write a pipe drops, as documented). An output-limit input's kind only: how much
/// of its output was read before the kill is the host's timing. A `read(0)` input's `rax`
/// and kind: a fresh run's fd 0 holds the input, a same-code worker's is empty (documented).
fn against_fresh(code: &[u8], steps: &[Step], options: &RunOptions, what: &str) {
    let mut fresh: HashMap<Vec<u8>, Report> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let fresh = fresh.entry(step.input.clone()).or_insert_with(|| {
            bytejail::run(code, &step.input, &options.clone().with_output_file(false)).unwrap()
        });
        let exact = !options.output_file && step.report.outcome != Outcome::OutputLimit;
        if step.input[0] == how::READ_STORE {
            assert_eq!(
                probe_value(&step.report),
                probe_value(fresh),
                "{what}, input {i}"
            );
        } else if exact {
            assert_eq!(
                essence(&step.report),
                essence(fresh),
                "{what}, input {i} {:?}",
                step.input
            );
        } else {
            assert_eq!(
                step.report.outcome.kind(),
                fresh.outcome.kind(),
                "{what}, input {i} {:?}",
                step.input
            );
        }
    }
}

/// Every way a strict or strict-bpf guest can make a page of scratch, stack or alternate
/// signal stack come to be, or write one already there without a fault (a store to a page
/// the last input only loaded, wrote out, or had the kernel read for `rt_sigreturn`), with
/// fd 1 a pipe or the arena's file, in random order: each input's probe of earlier inputs'
/// pages reads 0 and every report is a fresh run's. Holds because every new page of the
/// worker's comes through a fault of the worker's (user or kernel mode, sampled by the
/// watch before the page exists and before the input's "done"), and a page already there
/// when the last scan ran is in the scan's runs, which are zeroed whether or not the reset
/// makes its `fstat`. The resets skipped their `fstat` (`inputs_unstatted`), and the session
/// never held more than one perf event.
#[test]
fn every_way_to_bring_or_write_a_page_is_zero_for_later_inputs() {
    let _apart = beside_forks();
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = prober();
    for (seed, (policy, output_file)) in common::both_kinds().into_iter().enumerate() {
        let options = probe_options(&policy, output_file);
        let what = format!("{policy:?} file {output_file}");
        let mut same = SameCode::new(&code, &options).unwrap();
        let steps = random_session(
            &mut same,
            &options,
            (100 + seed as u64, 1500, 1),
            false,
            &what,
        );
        eprintln!(
            "{what}: {} spun, {} unstatted, {} workers",
            same.inputs_spun(),
            same.inputs_unstatted(),
            same.workers_started()
        );
        if common::fault_watch_allowed() && same.inputs_spun() >= 50 {
            assert!(
                same.inputs_unstatted() > 0,
                "{what}: the watch never spared an fstat"
            );
        }
        assert_eq!(same.workers_started(), 1, "{what}");
        drop(same);
        against_fresh(&code, &steps, &options, &what);
    }
}

/// The same with workers replaced mid-session (a crash, an exit, an output flood, a
/// timeout, each after a store to a page): the next input's worker is new, with a new
/// watch whose heads restart at 0, and its first reset must not take the old worker's
/// last head for its own. Holds because a new worker's arena forgets what it knew
/// (`prepare_worker`), and a watch's id goes with its head. Later inputs still skip
/// `fstat`s (a new watch was made) and the process never holds more than one perf event.
#[test]
fn workers_replaced_mid_session_start_from_zeros_with_a_new_watch() {
    let _apart = beside_forks();
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = prober();
    for (seed, (policy, output_file)) in common::both_kinds().into_iter().enumerate() {
        let options = probe_options(&policy, output_file);
        let what = format!("{policy:?} file {output_file} replacing");
        let mut same = SameCode::new(&code, &options).unwrap();
        let steps = random_session(
            &mut same,
            &options,
            (200 + seed as u64, 1200, 1),
            true,
            &what,
        );
        // After the last replacement: still skipping. (Writes among them: with fd 1 the
        // arena's file, a reset that takes its count from the "done" of an input that wrote
        // nothing keeps no head, d0b0de4, and the next one's can only follow an input that
        // wrote, whose count is read at the reset.)
        let before = same.inputs_unstatted();
        let tail: Vec<Step> = (0..200)
            .map(|i| {
                let how = if i % 2 == 0 { how::WRITE } else { how::QUIET };
                let input = input(how, 0, 0);
                let report = same.run_with(&input, &options).unwrap();
                assert_eq!(probe_value(&report), Some(0), "{what}: tail {i}");
                Step { input, report }
            })
            .collect();
        eprintln!(
            "{what}: {} spun, {} unstatted, {} workers",
            same.inputs_spun(),
            same.inputs_unstatted(),
            same.workers_started()
        );
        assert!(same.workers_started() > 1, "{what}: no worker was replaced");
        if common::fault_watch_allowed() && same.inputs_spun() >= 50 {
            assert!(
                same.inputs_unstatted() > before,
                "{what}: no fstat spared after the last replacement"
            );
        }
        drop(same);
        assert_eq!(perf_fds(), 0, "{what}: a perf event outlived its session");
        assert!(
            perf_maps().is_empty(),
            "{what}: a ring outlived its session"
        );
        against_fresh(&code, &steps, &options, &what);
        against_fresh(&code, &tail, &options, &what);
    }
}

/// The deterministic core of the two above, input by input, on one page of each kind: a
/// page only loaded (or written out, or read by `rt_sigreturn`) comes to be zero; the next
/// input stores to it without any fault (the watch's head does not move, so the reset after
/// it skips its `fstat` where the last reset kept a head: with fd 1 the file, only after a
/// reset that counted afresh); the input after that must still find it zero, because the
/// page was in the scan's runs. The twin: a guest that stores to a page and then reads it
/// sees its store (the probe reads what is there).
#[test]
fn a_store_without_a_fault_to_a_page_brought_in_earlier_is_still_zeroed() {
    let _apart = beside_forks();
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = prober();
    for (policy, output_file) in common::both_kinds() {
        let options = probe_options(&policy, output_file);
        let what = format!("{policy:?} file {output_file}");
        let mut same = SameCode::new(&code, &options).unwrap();
        let mut run = |how: u8, probe: u16, page: u16| {
            let report = same.run_with(&input(how, probe, page), &options).unwrap();
            probe_value(&report).unwrap_or_else(|| panic!("{what}: {}", report.summary()))
        };
        for round in 0..30u16 {
            for (bring, page) in [
                (how::LOAD, round),
                (how::WRITE, 40 + round),
                (how::SIGRETURN, 100 + round),
                (how::LOAD, 1001 + round),
                (how::WRITE, 1050 + round),
                (how::SIGRETURN, 1100 + round),
                (how::LOAD, 2000 + round % 9),
                (how::SIGRETURN, 2000 + round % 9),
            ] {
                assert_eq!(run(bring, page, page), 0, "{what}: {page} brought in");
                assert_eq!(
                    run(how::STORE, page, page),
                    0,
                    "{what}: {page} before the store"
                );
                assert_eq!(
                    run(how::QUIET, page, page),
                    0,
                    "{what}: {page} after the store"
                );
                assert_eq!(run(how::QUIET, page, page), 0, "{what}: {page} again");
            }
        }
        eprintln!(
            "{what}: {} spun, {} unstatted",
            same.inputs_spun(),
            same.inputs_unstatted()
        );
        if common::fault_watch_allowed() && same.inputs_spun() >= 50 {
            assert!(
                same.inputs_unstatted() > 0,
                "{what}: the watch never spared an fstat"
            );
        }
    }
    // The twin: the probe sees what is there (a guest that writes before it reads).
    let twin = gas("mov qword ptr [rdx + 4096], 7\n mov rax, [rdx + 4096]\n ret");
    let mut same = SameCode::new(&twin, &RunOptions::default()).unwrap();
    for _ in 0..3 {
        let report = same.run(b"").unwrap();
        assert_eq!(
            probe_value(&report),
            Some(MARK),
            "the twin reads its own store"
        );
    }
}

/// A guest that forges "done" and keeps storing to every scratch page forever (its worker
/// never takes the next input, which is run again in a new worker after the timeout), or that
/// forges "done" and stores to a new page only once the host has posted the next input:
/// every input gets a report (never an error) in bounded time. The second is the twin: its
/// next input sees the page it left (inputs of one session are one submission: documented),
/// yet the input after that finds it zero, because the store's fault came after the reset's
/// read of the head. After a crash replaces the forging worker, every input is a fresh run's.
#[test]
fn a_forged_done_that_keeps_touching_pages_gets_reports_not_errors() {
    let _apart = beside_forks();
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = prober();
    let mut seen_left = 0;
    for (policy, output_file) in common::both_kinds() {
        let options = probe_options(&policy, output_file);
        let what = format!("{policy:?} file {output_file} forger");
        let mut same = SameCode::new(&code, &options).unwrap();
        for round in 0..30u16 {
            // Warm: a few quick inputs, so the forger's input spins.
            for _ in 0..5 {
                let report = same.run_with(&input(how::QUIET, 0, 0), &options).unwrap();
                let _ = report;
            }
            // Even rounds: the page is new, its store's fault comes after the next input's
            // reset read the head. Odd: the forger's probe brought it in, its store takes no
            // fault at all, and the page is in the next reset's runs.
            let page = 10 + round;
            let probe = if round % 2 == 0 { 0 } else { page };
            let t = Instant::now();
            let forged = same.run_with(&input(how::FORGE_THEN_STORE, probe, page), &options);
            let next = same.run_with(&input(how::QUIET, page, 0), &options);
            let after = same.run_with(&input(how::QUIET, page, 0), &options);
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "{what}: round {round}"
            );
            let (_, next, after) = (forged.unwrap(), next.unwrap(), after.unwrap());
            if probe_value(&next) == Some(MARK) {
                seen_left += 1;
            }
            if let Some(rax) = probe_value(&after) {
                assert_eq!(rax, 0, "{what}: round {round}: the input after the next");
            }
        }
        for round in 0..3 {
            let t = Instant::now();
            let forged = same.run_with(&input(how::FORGE_THEN_STORE_FOREVER, 0, 0), &options);
            let next = same.run_with(&input(how::QUIET, 3, 3), &options);
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "{what}: forever {round}"
            );
            let (_, _) = (forged.unwrap(), next.unwrap());
        }
        eprintln!(
            "{what}: left pages seen so far {seen_left}; {} spun, {} unstatted, {} workers, \
             {} rerun",
            same.inputs_spun(),
            same.inputs_unstatted(),
            same.workers_started(),
            same.inputs_rerun()
        );
        // A crash ends the forging worker; from then on, fresh runs' reports.
        let crash = same
            .run_with(&input(how::STORE_CRASH, 0, 0), &options)
            .unwrap();
        assert_eq!(crash.outcome.kind(), "crashed", "{what}");
        let steps = random_session(&mut same, &options, (300, 400, 1), false, &what);
        drop(same);
        against_fresh(&code, &steps, &options, &what);
    }
    // The twin (whether a round's forger spun is the host's timing: over all of them).
    assert!(seen_left > 0, "the twin never saw a forger's page");
}

/// Several sessions (one forking through a zygote) in two threads at once, and several in
/// one thread used in turns: each input of each session finds earlier inputs' pages zero.
/// The leases let one session spin at a time on two CPUs; whichever spun made a watch, and
/// the process's perf events and rings are as many as live sessions with a watch at most,
/// none once all are dropped, with no worker left.
#[test]
fn many_sessions_and_threads_each_start_from_zeros_and_leave_nothing() {
    let _apart = beside_forks();
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = prober();
    let zygote = Zygote::start().unwrap();
    let unstatted: u64 = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let (code, zygote) = (&code, &zygote);
                scope.spawn(move || {
                    let policy = if t == 0 {
                        Policy::Strict
                    } else {
                        Policy::StrictBpf
                    };
                    let options = probe_options(&policy, t == 1);
                    let mut sessions = [
                        SameCode::new(code, &options).unwrap(),
                        SameCode::with_zygote(code, &options, zygote).unwrap(),
                        SameCode::new(code, &options).unwrap(),
                    ];
                    let mut all = Vec::new();
                    // In turns of 50 inputs, so that each session spins at times.
                    for turn in 0..12u64 {
                        let s = (turn % 3) as usize;
                        let what = format!("thread {t} session {s} turn {turn}");
                        let steps = random_session(
                            &mut sessions[s],
                            &options,
                            (1000 * t + turn, 50, 6),
                            false,
                            &what,
                        );
                        all.push((what, steps));
                        assert!(perf_fds() <= 6, "{} perf events", perf_fds());
                    }
                    let unstatted = sessions.iter().map(SameCode::inputs_unstatted).sum::<u64>();
                    drop(sessions);
                    for (what, steps) in &all {
                        against_fresh(code, steps, &options, what);
                    }
                    unstatted
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    eprintln!("{unstatted} resets without an fstat across sessions");
    if common::fault_watch_allowed() {
        assert!(unstatted > 0, "no session's watch spared an fstat");
    }
    drop(zygote);
    assert_eq!(perf_fds(), 0, "perf events left");
    assert!(perf_maps().is_empty(), "rings left: {:?}", perf_maps());
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() } as u32;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !children_of(me).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(children_of(me).is_empty(), "{:?}", children_of(me));
}

/// A child forked from a host whose session holds a watch: its copy of the session refuses
/// to run, and dropping it must neither unmap the ring's address (where the child may have
/// mapped something of its own: the ring is not inherited) nor end the host's worker. Then
/// the host's session goes on, its probes zero, still skipping `fstat`s.
#[test]
fn a_forked_child_dropping_a_watched_session_unmaps_nothing_of_its_own() {
    let _apart = forking();
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = prober();
    let options = probe_options(&Policy::Strict, false);
    if !common::fault_watch_allowed() {
        return;
    }
    let mut same = SameCode::new(&code, &options).unwrap();
    // Until a reset skipped its fstat: the watch is made at the first spun input, and a busy
    // machine may keep inputs from spinning for a while.
    for i in 0..5_000u16 {
        let report = same
            .run_with(&input(how::STORE, i % 3, i % 3), &options)
            .unwrap();
        assert_eq!(probe_value(&report), Some(0));
        if i >= 50 && same.inputs_unstatted() > 0 {
            break;
        }
    }
    if same.inputs_unstatted() == 0 {
        eprintln!("no input spun with a watch in 5,000 (a busy machine): nothing to fork with");
        return;
    }
    let rings = perf_maps();
    assert_eq!(rings.len(), 1, "{rings:?}");
    let (ring, ring_end) = rings[0];
    let worker = same.worker_pid().unwrap();

    // SAFETY: glibc's fork leaves malloc usable in the child, which uses only this thread's
    // data and leaves with `_exit`, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: a bitwise copy the child owns alone (the parent's stays in its memory).
        let copy = unsafe { std::ptr::read(&same) };
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut copy = copy;
            let mut failed = 0;
            // SAFETY: a new private mapping where the host's ring is (not inherited here).
            let mine = unsafe {
                libc::mmap(
                    ring as *mut libc::c_void,
                    ring_end - ring,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if mine != ring as *mut libc::c_void {
                return 1;
            }
            // SAFETY: just mapped, read+write.
            unsafe { *(mine as *mut u64) = 0x5eed };
            if copy.run_with(&input(how::QUIET, 0, 0), &options).is_ok() {
                failed |= 2;
            }
            drop(copy);
            // SAFETY: still mapped unless the drop unmapped it (then this faults: signal).
            if unsafe { *(mine as *const u64) } != 0x5eed {
                failed |= 4;
            }
            failed
        }))
        .unwrap_or(64);
        // SAFETY: ends the child without running the harness's destructors.
        unsafe { libc::_exit(status) }
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child: status {status:#x} (exit {}, signal {})",
        libc::WEXITSTATUS(status),
        libc::WTERMSIG(status)
    );
    assert_eq!(same.worker_pid(), Some(worker));
    let (before, spun_before) = (same.inputs_unstatted(), same.inputs_spun());
    for i in 0..50u16 {
        let report = same
            .run_with(&input(how::STORE, i % 3, i % 3), &options)
            .unwrap();
        assert_eq!(probe_value(&report), Some(0), "after the fork: {i}");
    }
    assert_eq!(
        same.worker_pid(),
        Some(worker),
        "the host's worker lives on"
    );
    assert!(
        same.inputs_unstatted() > before || same.inputs_spun() == spun_before,
        "the watch goes on"
    );
    assert_eq!(perf_maps(), rings, "the ring stays");
}

/// A failed `write` (`write(1, 8, 8)`: EFAULT, nothing written), then a `write` of a new
/// page of stack or scratch and a store to it, then a probe of that page; each against a
/// fresh run, under both policies, spinning (the fault watch) or not.
fn failed_write_then_new_page(output_file: bool) {
    let code = prober();
    for policy in [Policy::Strict, Policy::StrictBpf] {
        for spin in [false, true] {
            let options = probe_options(&policy, output_file).with_spin(spin);
            let what = format!("{policy:?} spin {spin} file {output_file}");
            let mut same = SameCode::new(&code, &options).unwrap();
            for round in 0..4u16 {
                let page = [1030 + round, 40 + round][usize::from(round % 2)];
                let inputs = [
                    input(how::QUIET, 0, 0),
                    input(how::WRITE_BAD, 0, 0),
                    input(how::WRITE_STORE, 0, page),
                    input(how::QUIET, page, page),
                ];
                for (i, input) in inputs.iter().enumerate() {
                    let report = same.run_with(input, &options).unwrap();
                    let fresh = bytejail::run(&code, input, &options).unwrap();
                    assert_eq!(
                        (probe_value(&report), report.outcome.kind()),
                        (probe_value(&fresh), fresh.outcome.kind()),
                        "{what}, round {round}, input {i} {input:?} (page {page}): the \
                         same-code input against a fresh run"
                    );
                }
            }
        }
    }
}

/// fd 1 the arena's file (`RunOptions::output_file`): a `write` whose buffer faults before a
/// byte is copied leaves a page of the file allocated past its end (Linux 6.x's
/// `generic_perform_write` calls `write_begin`, which allocates the page at the file's end,
/// before it finds the source unreadable; `i_size` stays). The page counts in `st_blocks`
/// and no `SEEK_DATA` finds it. Found by this review: `Arena::take_output` (size at the base,
/// "no output") left it, and a later input that wrote output and made one new page of stack
/// or scratch come to be left the block count where the last scan saw it (its output landed
/// in that page, which the output's truncation freed: one page off as the new one added
/// one); the reset saw the count it knew, did not scan, and the new page, listed nowhere,
/// kept its bytes for later inputs: an honest guest got another `rax` than a fresh run, with
/// spinning off as well (no fault watch at all). Holds since b5e959e: `take_output` cuts
/// what lies past the end whenever the count changed since the last scan. The twin below:
/// fd 1 a pipe.
#[test]
fn a_failed_write_to_the_output_file_hides_a_later_new_page_from_the_reset() {
    let _apart = beside_forks();
    let _one = one_at_a_time();
    failed_write_then_new_page(true);
}

/// The twin of the test above: with fd 1 a pipe the same inputs find every page zero, as
/// fresh runs do (a failed write to a pipe allocates nothing in the arena's file).
#[test]
fn a_failed_write_to_a_pipe_hides_nothing() {
    let _apart = beside_forks();
    let _one = one_at_a_time();
    failed_write_then_new_page(false);
}

/// A worker killed from outside while parked (a zombie, not yet reaped), before the
/// session's first spun input: that input runs again in a new worker, which gets a watch of
/// its own (a watch that could not be made would be given up for the whole session), and
/// every later input finds its pages zero.
#[test]
fn a_worker_killed_before_its_watch_is_made_changes_no_result() {
    let _apart = beside_forks();
    let Some(_one) = two_cpus_to_spin() else {
        return;
    };
    let code = prober();
    let options = probe_options(&Policy::Strict, false);
    let mut same = SameCode::new(&code, &options).unwrap();
    let quiet = options.clone().with_spin(false);
    assert_eq!(
        probe_value(&same.run_with(&input(how::STORE, 0, 3), &quiet).unwrap()),
        Some(0)
    );
    let pid = same.worker_pid().unwrap();
    // SAFETY: our worker, parked.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    while common::alive(pid) {
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 0..300u16 {
        let page = 3 + i % 2;
        let report = same
            .run_with(&input(how::STORE, page, page), &options)
            .unwrap();
        assert_eq!(probe_value(&report), Some(0), "input {i}");
    }
    eprintln!(
        "after the kill: {} workers, {} rerun, {} spun, {} unstatted",
        same.workers_started(),
        same.inputs_rerun(),
        same.inputs_spun(),
        same.inputs_unstatted()
    );
    assert_eq!(same.inputs_rerun(), 1);
    if common::fault_watch_allowed() && same.inputs_spun() >= 50 {
        assert!(same.inputs_unstatted() > 0, "the new worker got no watch");
    }
}
