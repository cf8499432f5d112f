//! An attacker's review of the walls around profile workers (issue 10's threat model: a guest
//! may hold every syscall its profile allows and runs before, after and beside other jobs).
//!
//! Two kinds of tests live here:
//! - attacks the walls stop, kept as regression tests, each asserting the kernel's answer;
//! - holes: attacks that work on the current code. Each is `#[ignore = "hole: ..."]` so the
//!   suite stays green, fails when run (`cargo test --release --test review_attacks --
//!   --ignored`), and says what the hole is and the fix proposed. Once fixed, drop the ignore.

mod common;

use std::time::{Duration, Instant};

use bytejail::{Outcome, Policy, Pool, RunOptions, Zygote};
use common::{gas, marked, namespaces, profile_options, returned_rax};

/// The same, with the i386 and x32 entries allowed too.
fn allow_all_arches() -> Policy {
    Policy::from_profile_json(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]}"#,
        "allow-all-arches.json",
    )
    .unwrap()
}

/// The Landlock ABI of this kernel, 0 without Landlock.
fn landlock_abi() -> i64 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) reads nothing.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) };
    v.max(0)
}

/// A name for processes of this test run, `tag` plus a number (at most 15 bytes).
fn marker(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

/// Waits (at most 5 s) for a live process named `marker`.
fn wait_marked(marker: &str) -> Option<u32> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Some(&pid) = marked(marker).first() {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Guest prologue: name the worker `marker` (prctl PR_SET_NAME), so the test can find it.
fn name_self(marker: &str) -> String {
    format!(
        "    mov edi, 15
             lea rsi, [rip + bj_name]
             mov eax, 157
             syscall
             jmp bj_named
         bj_name: .asciz \"{marker}\"
         bj_named:"
    )
}

// ---------------------------------------------------------------------------------------------
// Holes.
// ---------------------------------------------------------------------------------------------

/// HOLE (high): a guest changes the metadata of host files. The worker runs as uid 0 with no
/// capability, and Landlock (every ABI up to 7) has no right for chmod, utimes or setxattr; the
/// mount namespace is a copy of the host's, so the guest reaches the host's inodes by path.
/// As the owner of every root-owned file it may `chmod` any of them (`/etc/shadow` 0644,
/// `/root/.ssh` 0777, a setuid bit on a root-owned copy of a shell), set their times, and set
/// `user.*` extended attributes on those it may write.
/// Fix: give profile workers a root they cannot name host files from: in the worker's own
/// mount namespace, `pivot_root` (or `chroot` + `chdir`) into an empty read-only tmpfs before
/// Landlock (unmounting the old root: MNT_DETACH), or run the worker as an unprivileged uid
/// (a fresh user namespace mapping it to nobody, or setuid to a dedicated uid) so that it owns
/// no host file. A stacked filter refusing chmod/fchmodat/fchmodat2/utimensat/setxattr family
/// with EPERM is a cheap extra line, not a wall.
#[test]
fn a_profile_guest_changes_no_host_files_metadata() {
    let dir = std::env::temp_dir().join(format!("bjrev-meta-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, b"secret").unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = victim.to_str().unwrap();
    let before = std::fs::metadata(&victim).unwrap();

    // chmod(path, 0o4777)
    let chmod = gas(&format!(
        "lea rdi, [rip + path]
         mov esi, 0x9ff
         mov eax, 90
         syscall
         ret
         path: .asciz \"{path}\""
    ));
    // utimensat(AT_FDCWD, path, {{0, 0}, {0, 0}}, 0): explicit times need ownership only.
    let utimes = gas(&format!(
        "sub rsp, 40
         xor eax, eax
         mov [rsp], rax
         mov [rsp + 8], rax
         mov [rsp + 16], rax
         mov [rsp + 24], rax
         mov rdi, -100
         lea rsi, [rip + path]
         mov rdx, rsp
         xor r10d, r10d
         mov eax, 280
         syscall
         add rsp, 40
         ret
         path: .asciz \"{path}\""
    ));
    // setxattr(path, "user.bytejail", "x", 1, 0)
    let setxattr = gas(&format!(
        "lea rdi, [rip + path]
         lea rsi, [rip + name]
         lea rdx, [rip + value]
         mov r10d, 1
         xor r8d, r8d
         mov eax, 188
         syscall
         ret
         path: .asciz \"{path}\"
         name: .asciz \"user.bytejail\"
         value: .ascii \"x\""
    ));
    let mut changed = Vec::new();
    let rax = returned_rax(&bytejail::run(&chmod, b"", &profile_options()).unwrap());
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
    if rax == 0 || mode != 0o600 {
        changed.push(format!("chmod returned {rax}, mode now {mode:o}"));
    }
    let rax = returned_rax(&bytejail::run(&utimes, b"", &profile_options()).unwrap());
    let mtime = std::fs::metadata(&victim).unwrap().mtime();
    if rax == 0 || mtime != before.mtime() {
        changed.push(format!("utimensat returned {rax}, mtime now {mtime}"));
    }
    let rax = returned_rax(&bytejail::run(&setxattr, b"", &profile_options()).unwrap());
    let cpath = std::ffi::CString::new(path).unwrap();
    // SAFETY: a NUL-terminated path and name, no buffer (size query).
    let xattr = unsafe {
        libc::getxattr(
            cpath.as_ptr(),
            c"user.bytejail".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rax == 0 || xattr >= 0 {
        changed.push(format!(
            "setxattr returned {rax}, xattr present: {}",
            xattr >= 0
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        changed.is_empty(),
        "a guest changed a host file: {changed:?}"
    );
}

/// HOLE (high): the root user's keyring carries data from one job to any later (or
/// concurrent) job, of this process or any other bytejail on the machine, and outlives every
/// job: keys live in the kernel's per-user (uid 0, initial user namespace) keyring, which no
/// namespace the worker gets (PID, IPC, mount, net) separates and Landlock does not cover.
/// Docker's default profile refuses add_key/keyctl/request_key for this reason, but a profile
/// that allows them (or the threat model's "every syscall") hands it over; it also lets a guest
/// fill root's key quota (`kernel.keys.root_maxbytes`, 25 MB here) for the whole machine.
/// Fix: refuse add_key, keyctl and request_key with EPERM in the stacked filter every profile
/// worker installs (as `NO_NEW_TASKS` does for clone), whatever the profile says; or run
/// profile workers in a user namespace of their own (key_user is per user namespace).
#[test]
fn one_job_leaves_nothing_in_the_root_keyring_for_the_next() {
    let desc = marker("bjrevkey");
    let secret = "keyring-secret-of-job-one";
    let add = gas(&format!(
        "lea rdi, [rip + ktype]
         lea rsi, [rip + desc]
         lea rdx, [rip + payload]
         mov r10d, {len}
         mov r8, -4
         mov eax, 248
         syscall
         ret
         ktype: .asciz \"user\"
         desc: .asciz \"{desc}\"
         payload: .ascii \"{secret}\"",
        len = secret.len()
    ));
    let read = gas(&format!(
        "    mov edi, 10
             mov rsi, -4
             lea rdx, [rip + ktype]
             lea r10, [rip + desc]
             xor r8d, r8d
             mov eax, 250
             syscall
             test rax, rax
             js 1f
             sub rsp, 256
             mov rsi, rax
             mov edi, 11
             mov rdx, rsp
             mov r10d, 256
             mov eax, 250
             syscall
             test rax, rax
             js 2f
             mov rdx, rax
             mov edi, 1
             mov rsi, rsp
             mov eax, 1
             syscall
         2:  add rsp, 256
         1:  ret
         ktype: .asciz \"user\"
         desc: .asciz \"{desc}\""
    ));
    let first = bytejail::run(&add, b"", &profile_options()).unwrap();
    let added = returned_rax(&first);
    let second = bytejail::run(&read, b"", &profile_options()).unwrap();
    // Clean up whatever the first job left before judging.
    let cdesc = std::ffi::CString::new(desc.clone()).unwrap();
    // SAFETY: keyctl(KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", desc, 0), then
    // keyctl(KEYCTL_INVALIDATE, id): integers and NUL-terminated strings.
    unsafe {
        let id = libc::syscall(
            libc::SYS_keyctl,
            10,
            -4i64,
            c"user".as_ptr(),
            cdesc.as_ptr(),
            0,
        );
        if id > 0 {
            libc::syscall(libc::SYS_keyctl, 21, id);
        }
    }
    assert!(
        !String::from_utf8_lossy(&second.output).contains(secret),
        "the second job read the first job's key (add_key gave {added}): {:?}",
        String::from_utf8_lossy(&second.output)
    );
}

/// HOLE (high): two concurrent jobs talk over a NETLINK_USERSOCK socket. Every profile worker
/// of a process joins the one shared empty network namespace; netlink needs no interface, and
/// NETLINK_USERSOCK lets an unprivileged socket bind any port id and unicast to any other
/// (NL_CFG_F_NONROOT_SEND/RECV). Landlock scopes only abstract unix sockets and signals, and
/// handles only TCP. So one job's input reaches a job running beside it, also across
/// submissions and users of a shared grader.
/// Fix: a network namespace per job (about 0.5 ms; the host can keep a few made ahead on a
/// background thread, each used once), or at least a stacked filter refusing
/// socket(AF_NETLINK, ...) (and, to be safe, every family but AF_UNIX) with EAFNOSUPPORT.
#[test]
fn concurrent_jobs_share_no_netlink_channel() {
    let port = 0x4000_0000u32 | (std::process::id() & 0xff_ffff);
    let addr = format!(
        "addr: .short 16
               .short 0
               .long {port}
               .long 0"
    );
    let receiver = gas(&format!(
        "    mov edi, 16
             mov esi, 3
             mov edx, 2
             mov eax, 41
             syscall
             test rax, rax
             js 9f
             mov r12, rax
             mov rdi, r12
             lea rsi, [rip + addr]
             mov edx, 12
             mov eax, 49
             syscall
             test rax, rax
             js 9f
             sub rsp, 256
             mov rdi, r12
             mov rsi, rsp
             mov edx, 256
             xor r10d, r10d
             xor r8d, r8d
             xor r9d, r9d
             mov eax, 45
             syscall
             test rax, rax
             js 8f
             mov rdx, rax
             mov edi, 1
             mov rsi, rsp
             mov eax, 1
             syscall
         8:  add rsp, 256
         9:  ret
         {addr}"
    ));
    let secret = "netlink-secret";
    let sender = gas(&format!(
        "    mov edi, 16
             mov esi, 3
             mov edx, 2
             mov eax, 41
             syscall
             test rax, rax
             js 9f
             mov rdi, rax
             lea rsi, [rip + msg]
             mov edx, {len}
             xor r10d, r10d
             lea r8, [rip + addr]
             mov r9d, 12
             mov eax, 44
             syscall
         9:  ret
         msg: .ascii \"{secret}\"
         {addr}",
        len = secret.len()
    ));
    let mut options = profile_options();
    options.limits.timeout = Duration::from_secs(3);
    let job = std::thread::spawn(move || bytejail::run(&receiver, b"", &options).unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let sent = bytejail::run(&sender, b"", &profile_options()).unwrap();
    let received = job.join().unwrap();
    assert!(
        !String::from_utf8_lossy(&received.output).contains(secret),
        "a concurrent job received the other's message (sendto gave {}): {}",
        returned_rax(&sent),
        received.summary()
    );
}

/// HOLE (medium): with `--max-procs 1` (the default) a guest still creates kernel-made threads
/// of its own: each io_uring set up with IORING_SETUP_SQPOLL starts an `iou-sqp-N` thread (and
/// io-wq workers start `iou-wrk-N` threads), without clone. The stacked filter refuses only
/// clone/fork/vfork/clone3, there is no pids cgroup at `max_procs` 1, and RLIMIT_NPROC never
/// limits uid 0: one thread per ring, up to `--max-open-files` rings, each may busy-poll a CPU
/// (SQPOLL's idle time is the guest's to choose) and io-wq can add workers up to the machine's
/// task limit.
/// Fix: put every profile worker in a pids cgroup (max = `max_procs`; kernel threads of
/// io_uring are created through copy_process and are counted), not only when `max_procs` > 1;
/// and/or refuse io_uring_setup/io_uring_enter/io_uring_register with ENOSYS in the stacked
/// filter when `max_procs` is 1.
#[test]
fn io_uring_makes_no_thread_beyond_max_procs_1() {
    let name = marker("bjrevuring");
    let code = gas(&format!(
        "{}
             xor r12d, r12d
             mov r13d, 8
             sub rsp, 128
         1:  mov rdi, rsp
             xor eax, eax
             mov ecx, 128
             rep stosb
             mov dword ptr [rsp + 8], 2
             mov edi, 8
             mov rsi, rsp
             mov eax, 425
             syscall
             test rax, rax
             js 2f
             inc r12d
         2:  dec r13d
             jnz 1b
         3:  jmp 3b",
        name_self(&name)
    ));
    let mut options = profile_options();
    options.limits.timeout = Duration::from_millis(2000);
    let job = std::thread::spawn(move || bytejail::run(&code, b"", &options).unwrap());
    let pid = wait_marked(&name).expect("the guest never named itself");
    let mut most = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let tid = e.file_name().to_string_lossy().to_string();
                        let comm =
                            std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                        format!("{tid}:{}", comm.trim_end())
                    })
                    .collect()
            })
            .unwrap_or_default();
        if tasks.len() > most.len() {
            most = tasks;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = job.join().unwrap();
    assert_eq!(report.outcome, Outcome::Timeout, "{}", report.summary());
    assert!(
        most.len() <= 1,
        "the job ran {} tasks under --max-procs 1: {most:?}",
        most.len()
    );
}

/// A guest that fills 8 x 32 MiB of SysV shared memory, each segment made
/// (shmget(IPC_PRIVATE, 32 MiB, IPC_CREAT|0600)), attached, filled and detached, so its pages
/// stay outside every mapping; rax = how many it filled.
fn sysv_shm_filler() -> Vec<u8> {
    gas("    xor r12d, r12d
                       mov r13d, 8
                   1:  xor edi, edi
                       mov esi, 0x2000000
                       mov edx, 0x380
                       mov eax, 29
                       syscall
                       test rax, rax
                       js 9f
                       mov rdi, rax
                       xor esi, esi
                       xor edx, edx
                       mov eax, 30
                       syscall
                       cmp rax, -4096
                       ja 9f
                       mov rbx, rax
                       mov rdi, rax
                       mov ecx, 0x2000000
                       mov al, 1
                       rep stosb
                       mov rdi, rbx
                       mov eax, 67
                       syscall
                       inc r12d
                       dec r13d
                       jnz 1b
                   9:  mov eax, r12d
                       ret")
}

/// HOLE (high): memory a guest keeps outside its mappings is not counted by `--memory`
/// (RLIMIT_AS counts only mapped address space). A SysV segment that is filled and detached
/// keeps its pages until the job's IPC namespace dies; a memfd that is filled, unmapped and
/// kept open keeps its pages until the fd closes. Under a 64 MiB limit a guest holds 256 MiB
/// of SysV segments (8 x 32 MiB, shmmax/shmall of a new IPC namespace are unbounded) and
/// 128 MiB of memfds (8 x 16 MiB under the default 16 MiB `--max-file-size`; up to
/// `--max-open-files` of them): with a longer loop, all of the machine's memory (no swap here:
/// the OOM killer then picks a victim, likely not the guest). Pipe buffers and io_uring rings
/// add more the same way.
/// Fixed: a memory cgroup per profile job (`memory.max`, or v1's `memory.limit_in_bytes`, at
/// `--memory` plus room for the kernel's part), which counts shmem and tmpfs pages; a guest
/// past it is ended by the OOM killer inside its cgroup and reported `memory_limit`.
#[test]
fn memory_held_outside_mappings_counts_against_the_limit() {
    const LIMIT: usize = 64 << 20;
    let shm = sysv_shm_filler();
    // memfd_create, ftruncate 16 MiB, mmap shared, fill, munmap, keep the fd: 8 times.
    let memfd = gas("    xor r12d, r12d
                         mov r13d, 8
                     1:  lea rdi, [rip + name]
                         xor esi, esi
                         mov eax, 319
                         syscall
                         test rax, rax
                         js 9f
                         mov r14, rax
                         mov rdi, rax
                         mov esi, 0x1000000
                         mov eax, 77
                         syscall
                         test rax, rax
                         jnz 9f
                         xor edi, edi
                         mov esi, 0x1000000
                         mov edx, 3
                         mov r10d, 1
                         mov r8, r14
                         xor r9d, r9d
                         mov eax, 9
                         syscall
                         cmp rax, -4096
                         ja 9f
                         mov rbx, rax
                         mov rdi, rax
                         mov ecx, 0x1000000
                         mov al, 1
                         rep stosb
                         mov rdi, rbx
                         mov esi, 0x1000000
                         mov eax, 11
                         syscall
                         inc r12d
                         dec r13d
                         jnz 1b
                     9:  mov eax, r12d
                         ret
                     name: .asciz \"bj\"");
    let mut options = profile_options();
    options.limits.memory = LIMIT;
    options.limits.timeout = Duration::from_secs(10);
    // The twin: under a limit of 1 GiB the same guest holds all its 256 MiB of SysV shm.
    let mut roomy = options.clone();
    roomy.limits.memory = 1 << 30;
    assert_eq!(returned_rax(&bytejail::run(&shm, b"", &roomy).unwrap()), 8);
    // Each guest is either ended at the job's memory limit (its memory cgroup counts what it
    // holds outside its mappings) or holds no more than the limit.
    for (what, code, chunk) in [
        ("SysV shm", &shm, 32usize << 20),
        ("memfds", &memfd, 16 << 20),
    ] {
        let report = bytejail::run(code, b"", &options).unwrap();
        if report.outcome == Outcome::MemoryLimit {
            continue;
        }
        let held = returned_rax(&report) as usize * chunk;
        assert!(
            held <= LIMIT,
            "under a {} MiB limit a guest held {} MiB of {what}",
            LIMIT >> 20,
            held >> 20
        );
    }
}

/// Was a HOLE (low), fixed: a same-code worker ended by the OOM killer during an input was
/// reported `killed` (from outside bytejail) where a fresh job is reported `memory_limit`: the
/// host read its memory cgroup's OOM count only for fresh and pooled jobs. The guest fills
/// 8 x 32 MiB of SysV shared memory under a 64 MiB limit.
#[test]
fn a_same_code_job_past_its_memory_limit_is_reported_memory_limit() {
    const LIMIT: usize = 64 << 20;
    let shm = sysv_shm_filler();
    let mut options = profile_options();
    options.limits.memory = LIMIT;
    options.limits.timeout = Duration::from_secs(10);
    let fresh = bytejail::run(&shm, b"", &options).unwrap();
    let mut same = bytejail::SameCode::new(&shm, &options).unwrap();
    let report = same.run(b"").unwrap();
    // Whatever a fresh job of this guest is reported, a same-code input of it is too.
    assert_eq!(
        report.outcome.kind(),
        fresh.outcome.kind(),
        "fresh: {}; same code: {}",
        fresh.summary(),
        report.summary()
    );
    if report.outcome != Outcome::MemoryLimit {
        let held = returned_rax(&report) as usize * (32 << 20);
        assert!(
            held <= LIMIT,
            "held {} MiB: {}",
            held >> 20,
            report.summary()
        );
    }
}

/// Was a HOLE (medium), fixed: `--cpu-time` is for the whole process tree, but the host's
/// watch read the worker's own CPU clock and RLIMIT_CPU is per process. With `--max-procs`
/// above 1, a worker that forks spinners and sleeps used no CPU of its own: the job ran to the
/// wall-clock timeout on every core and was reported `timeout`. Now a profile job with a CPU
/// limit is charged in a CPU accounting cgroup (v1 `cpuacct`, v2 `cpu.stat`), which the host
/// watches. The twin below: a tree that stays under its budget is not killed for it.
#[test]
fn cpu_time_of_the_whole_tree_is_limited() {
    if !namespaces() {
        eprintln!("not root: no PID namespace for workers; skipping");
        return;
    }
    let report = bytejail::run(&spinning_children(), b"", &spinner_options(200)).unwrap();
    assert_eq!(
        report.outcome,
        Outcome::CpuTimeLimit,
        "{} (user {:?}, sys {:?})",
        report.summary(),
        report.user,
        report.sys
    );
}

/// The twin: the same tree with a budget far above what it can use before the wall clock
/// ends it is reported `timeout`, so the CPU limit above is what ended that one.
#[test]
fn a_tree_under_its_cpu_budget_is_not_killed_for_it() {
    if !namespaces() {
        eprintln!("not root: no PID namespace for workers; skipping");
        return;
    }
    // Two spinners for at most 0.4 s of wall clock use at most 0.8 s of CPU (2 cores).
    let mut options = spinner_options(60_000);
    options.limits.timeout = Duration::from_millis(400);
    let report = bytejail::run(&spinning_children(), b"", &options).unwrap();
    assert_eq!(report.outcome, Outcome::Timeout, "{}", report.summary());
}

/// A guest that forks two children which spin, and sleeps itself (pause in a loop).
fn spinning_children() -> Vec<u8> {
    gas("    mov r12d, 2
        1:  mov eax, 57
            syscall
            test rax, rax
            jz 3f
            dec r12d
            jnz 1b
        2:  mov eax, 34
            syscall
            jmp 2b
        3:  jmp 3b")
}

/// A profile with room for the spinners, a CPU budget of `cpu_ms` and a 3 s timeout.
fn spinner_options(cpu_ms: u64) -> RunOptions {
    let mut options = profile_options();
    options.limits.max_procs = 4;
    options.limits.cpu_time = Some(Duration::from_millis(cpu_ms));
    options.limits.timeout = Duration::from_secs(3);
    options
}

/// HOLE (high for library users): `Pool::run` hands a job to a worker parked with the pool's
/// template limits when policy, scrub, stack, scratch and timeout fit (`Pool::fits`), ignoring
/// the job's own `memory`, `max_procs`, `max_file_size` and `max_open_files`: a job that asks
/// for 256 MiB runs with the template's 1 GiB, one that asks for no process runs with the
/// template's `max_procs` (and its pids cgroup). `batch` and `SameCode` decide walls per job.
/// Fix: `fits` must also require equal `memory`, `max_procs`, `max_file_size`,
/// `max_open_files` (and `cpu_time`, whose RLIMIT_CPU backstop is the template's), falling
/// back to a fresh worker otherwise; better, compare one `Walls`/limits value built by the
/// same function that `spawn` uses, so a new limit cannot be forgotten again.
#[test]
fn a_pooled_job_gets_its_own_limits_not_the_templates() {
    let map = gas("xor edi, edi
                   mov esi, 0x20000000
                   mov edx, 3
                   mov r10d, 0x22
                   mov r8, -1
                   xor r9d, r9d
                   mov eax, 9
                   syscall
                   ret");
    let template = profile_options(); // memory 1 GiB
    let pool = Pool::new(template.clone(), 1).unwrap();
    let mut options = template.clone();
    options.limits.memory = 256 << 20;
    // The reference: a fresh worker with the job's options refuses the 512 MiB mapping.
    let fresh = bytejail::run(&map, b"", &options).unwrap();
    assert_eq!(returned_rax(&fresh), -(libc::ENOMEM as i64));
    let pooled = pool.run(&map, b"", &options).unwrap();
    assert_eq!(
        returned_rax(&pooled),
        -(libc::ENOMEM as i64),
        "a pooled job asking for 256 MiB mapped 512 MiB"
    );
}

/// HOLE (medium, same family as the pool's): `SameCode::run_with` (and so `batch` with
/// same-code reuse, for lines of one group) runs an input in the parked worker when policy,
/// scrub, stack and scratch match (`SameCode::fits`), under the limits of the first input's
/// options: a later input's smaller `memory` (or `max_procs`, file limits) is silently not
/// applied. Fix: as for `Pool::fits`: compare every limit the worker applies (or refuse, as
/// `run_with` already does for the policy).
#[test]
fn a_same_code_input_gets_its_own_limits_not_the_first_ones() {
    let map = gas("xor edi, edi
                   mov esi, 0x10000000
                   mov edx, 3
                   mov r10d, 0x22
                   mov r8, -1
                   xor r9d, r9d
                   mov eax, 9
                   syscall
                   ret");
    let first = profile_options(); // memory 1 GiB
    let mut same = bytejail::SameCode::new(&map, &first).unwrap();
    // The first input starts the worker, under the first options: it maps its 256 MiB.
    assert!(returned_rax(&same.run(b"").unwrap()) > 0);
    let mut options = first.clone();
    options.limits.memory = 128 << 20;
    // The reference: a fresh worker with the input's options refuses the 256 MiB mapping.
    let fresh = bytejail::run(&map, b"", &options).unwrap();
    assert_eq!(returned_rax(&fresh), -(libc::ENOMEM as i64));
    // The input runs under its own limit, or is refused: never under the first input's.
    match same.run_with(b"", &options) {
        Err(bytejail::Error::Input(_)) => {}
        other => assert_eq!(
            returned_rax(&other.unwrap()),
            -(libc::ENOMEM as i64),
            "a same-code input asking for 128 MiB mapped 256 MiB"
        ),
    }
}

/// A guest that unblocks SETUP_FAILED_SIGNAL (SIGUSR2) and sends it to itself: the worker then
/// dies of the signal the host reads as "the setup failed before the guest ran".
fn self_sigusr2() -> Vec<u8> {
    gas("push 0x800
         mov edi, 1
         mov rsi, rsp
         xor edx, edx
         mov r10d, 8
         mov eax, 14
         syscall
         mov eax, 39
         syscall
         mov edi, eax
         mov esi, 12
         mov eax, 62
         syscall
         pop rcx
         ret")
}

#[test]
#[ignore = "a host for a_guest_cannot_fake_a_setup_failure_without_a_pid_namespace, run as nobody"]
fn host_running_self_sigusr2() {
    let Ok(code) = std::env::var("BJ_CODE") else {
        return; // run by hand with --ignored: nothing to host
    };
    let code: Vec<u8> = code
        .as_bytes()
        .chunks(2)
        .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
        .collect();
    match bytejail::run(&code, b"", &profile_options()) {
        Ok(report) => println!("result: Ok {:?}", report.outcome),
        Err(e) => println!("result: Err {e}"),
    }
}

/// HOLE (medium): where workers get no PID namespace (a host that is not root where
/// unprivileged user namespaces are not allowed, made here with `unshare` and `setpriv`:
/// `bytejail doctor` warns, profiles still run with `--max-procs 1`), a guest makes the host report a
/// runner failure (`Err`, "worker setup ... died before it could say why"; exit status of a
/// runner error in the CLI, an error line in batch) for what is its own doing: it unblocks
/// SIGUSR2 and sends it to itself, and `classify` takes any death by
/// `SETUP_FAILED_SIGNAL` as a setup failure ("no guest can raise it" holds for strict mode
/// only). The twin, as root: the worker is init of its PID namespace and ignores the signal.
/// Fix: decide "setup failed" as `setup_failed_unreaped` already does in a PID namespace: the
/// worker exits with a status no guest can forge together with the kernel's word that it
/// never entered seccomp (`Seccomp: 0` before reaping), for every worker; never from the
/// signal alone.
#[test]
fn a_guest_cannot_fake_a_setup_failure_without_a_pid_namespace() {
    if !namespaces() {
        eprintln!("not root: cannot run the host as another user; skipping");
        return;
    }
    let code = self_sigusr2();
    // The twin: as root (init of a PID namespace) the signal is ignored and the guest returns.
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    assert_eq!(returned_rax(&report), 0, "{}", report.summary());
    let hex: String = code.iter().map(|b| format!("{b:02x}")).collect();
    // The host where workers get no PID namespace (a user namespace without capabilities
    // that may make no other); as nobody, where util-linux's tools are missing (workers may
    // then get a PID namespace inside a user namespace, if unprivileged ones are allowed).
    let me = std::env::current_exe().unwrap();
    let mut host = if common::have_tool("unshare") && common::have_tool("setpriv") {
        common::without_pid_namespaces(&me)
    } else {
        use std::os::unix::process::CommandExt;
        let mut host = std::process::Command::new(&me);
        host.uid(65534).gid(65534);
        host
    };
    let out = host
        .args([
            "--ignored",
            "--exact",
            "host_running_self_sigusr2",
            "--nocapture",
        ])
        .env("BJ_CODE", hex)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find(|l| l.starts_with("result: "))
        .unwrap_or_else(|| panic!("the host as nobody said nothing: {stdout}"));
    assert!(
        result.starts_with("result: Ok"),
        "a guest forged a runner error: {result}"
    );
}

/// Was a HOLE (low-medium), fixed for profiles: a pooled guest says "done" itself and keeps
/// running past its report. Under a profile the pool now ends and reaps the worker before it
/// reports; under strict mode the guest can do nothing but spin until the refill thread ends it.
/// The done message is public (`CTX_SEQ` in the data page, `DONE_FD` 4 is open to the guest)
/// and the host's confirmation reads the record page, which the guest writes: so the pool
/// reports `returned` at once while the guest (and, with `max_procs` > 1, its children) runs on
/// until the refill thread gets to kill it: its CPU after "done" is nobody's, and the report's
/// promise that nothing of the job runs any more is false. Works under strict mode as well
/// (write is allowed), and through `batch` with reuse.
/// Fix: confirm "done" from something the guest cannot forge: e.g. after the done message,
/// the host checks that the worker is blocked in the blob's `read(GO_FD)` (its
/// `/proc/<pid>/syscall` shows syscall 0 on fd 3 with an instruction pointer inside the blob
/// page, and `/proc/<pid>/stat` state S; the task count is 1), or simply kills and reaps the
/// worker before returning the report (about 60 us) when the policy is a profile.
#[test]
fn a_pooled_job_is_not_reported_while_its_guest_runs() {
    let name = marker("bjrevdone");
    // The blob page is where the return address points; the data page follows it:
    // REC_STATE at +0x100 (1: returned), CTX_SEQ at +0xe0; DONE_FD is 4.
    let code = gas(&format!(
        "{}
             mov rbx, [rsp]
             and rbx, -4096
             mov qword ptr [rbx + 0x1100], 1
             mov edi, 4
             lea rsi, [rbx + 0x10e0]
             mov edx, 8
             mov eax, 1
             syscall
         1:  jmp 1b",
        name_self(&name)
    ));
    let mut options = profile_options();
    options.limits.timeout = Duration::from_secs(3);
    let pool = Pool::new(options.clone(), 1).unwrap();
    let mut seen = Vec::new();
    let mut pooled = 0;
    for _ in 0..10 {
        let fallbacks = pool.stats().fallbacks;
        let report = pool.run(&code, b"", &options).unwrap();
        let running = marked(&name);
        if pool.stats().fallbacks != fallbacks {
            // No worker was parked in time (a loaded machine): the job ran in a fresh worker,
            // which has no done pipe, so this guest spun to its timeout. Not a pooled job.
            assert_eq!(report.outcome, Outcome::Timeout, "{}", report.summary());
            continue;
        }
        pooled += 1;
        assert!(
            matches!(report.outcome, Outcome::Returned(_)),
            "{}",
            report.summary()
        );
        if !running.is_empty() {
            seen.push((report.wall, running));
        }
    }
    drop(pool);
    assert!(pooled > 0, "no job ran in a pooled worker");
    assert!(
        seen.is_empty(),
        "reported `returned` while the guest still ran (wall, pids): {seen:?}"
    );
}

#[test]
#[ignore = "a host for a_killed_host_leaves_no_job_cgroup to kill"]
fn host_with_a_max_procs_job() {
    let Ok(name) = std::env::var("BJ_MARKER") else {
        return; // run by hand with --ignored: nothing to host
    };
    let mut options = profile_options();
    options.limits.max_procs = 4;
    options.limits.timeout = Duration::from_secs(30);
    options.limits.cpu_time = Some(Duration::from_secs(30)); // a CPU accounting cgroup too
    let code = gas(&format!("{}\n1: jmp 1b", name_self(&name)));
    println!("ready");
    let _ = bytejail::run(&code, b"", &options);
}

/// Was a HOLE (low), fixed: a host that dies (SIGKILL, OOM kill, a crash) while a
/// `--max-procs` job runs left that job's pids cgroup behind: `JobCgroup`'s Drop never runs
/// and, before the sweep, nothing else ever removed `bytejail/<pid>-<n>`. The job's processes die (PID namespace), but the empty
/// directories pile up (this machine had 148 of them from 10 hosts after an hour of tests);
/// every one holds a kernel cgroup (memory, an id), and a v1 hierarchy runs out of ids
/// eventually, after which every `--max-procs` job fails to start.
/// Fixed by the next host's sweep, and, without waiting for one, by the host's janitor: a
/// process started with the first job cgroup that waits for the host's end (EOF on a pipe
/// only the host writes to), then kills what is left in the host's cgroups and removes them.
/// The twin is inside: while the job runs, its cgroup is there.
#[test]
fn a_killed_host_leaves_no_job_cgroup() {
    if !namespaces() {
        eprintln!("not root: no PID namespace for workers; skipping");
        return;
    }
    let name = marker("bjrevcg");
    let mut host = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "host_with_a_max_procs_job",
            "--nocapture",
        ])
        .env("BJ_MARKER", &name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let host_pid = host.id();
    let found = wait_marked(&name);
    let prefix = format!("{host_pid}-");
    let job_cgroups = || -> Vec<String> {
        [
            "/sys/fs/cgroup/pids/bytejail",
            "/sys/fs/cgroup/memory/bytejail",
            "/sys/fs/cgroup/cpuacct/bytejail",
            "/sys/fs/cgroup/unified/bytejail",
            "/sys/fs/cgroup/bytejail",
        ]
        .iter()
        .flat_map(|parent| {
            std::fs::read_dir(parent)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().to_string_lossy().to_string())
        })
        .filter(|path| path.rsplit('/').next().unwrap().starts_with(&prefix))
        .collect()
    };
    // The twin: while the job runs, its cgroup is there.
    let during = job_cgroups();
    host.kill().unwrap();
    host.wait().unwrap();
    assert!(found.is_some(), "the job never started");
    // (A pids cgroup, and a memory one where that controller is there.)
    assert!(
        during.iter().any(|dir| dir.contains("pids")),
        "the running job's cgroups: {during:?}"
    );
    let killed = Instant::now();
    while !marked(&name).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the job outlived its host"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let left = job_cgroups();
    for dir in &left {
        let _ = std::fs::remove_dir(dir); // clean up after the demonstration
    }
    assert_eq!(
        left,
        Vec::<String>::new(),
        "cgroups outlived their killed host"
    );
}

/// HOLE (medium): a guest watches the host's file system with inotify. Landlock (up to ABI 7)
/// has no hook on `inotify_add_watch` and the worker's mount namespace is a copy of the
/// host's, so a guest that may read a directory by its mode (uid 0: nearly all) learns the
/// names of the files created, opened, changed and deleted there while it runs: the grader's
/// test cases and expected outputs as they are written, other submissions' files, the host's
/// temporary files. With the metadata hole above, two jobs can also signal each other through
/// IN_ATTRIB events.
/// Fix: the same as for the metadata hole: a root the worker cannot name host files from
/// (pivot_root into an empty tmpfs in the worker's mount namespace), or an unprivileged uid
/// that may read no host directory; and refuse inotify_init/inotify_init1 (and
/// fanotify_init) in the stacked filter.
#[test]
fn a_profile_guest_cannot_watch_host_directories() {
    let dir = std::env::temp_dir().join(format!("bjrev-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.to_str().unwrap().to_string();
    // inotify_init1(0), inotify_add_watch(fd, dir, IN_CREATE), read the events to the output.
    let code = gas(&format!(
        "    xor edi, edi
             mov eax, 294
             syscall
             test rax, rax
             js 9f
             mov r12, rax
             mov rdi, r12
             lea rsi, [rip + path]
             mov edx, 0x100
             mov eax, 254
             syscall
             test rax, rax
             js 9f
             sub rsp, 512
             mov rdi, r12
             mov rsi, rsp
             mov edx, 512
             xor eax, eax
             syscall
             test rax, rax
             js 8f
             mov rdx, rax
             mov edi, 1
             mov rsi, rsp
             mov eax, 1
             syscall
         8:  add rsp, 512
         9:  ret
         path: .asciz \"{path}\""
    ));
    let mut options = profile_options();
    options.limits.timeout = Duration::from_secs(3);
    let job = std::thread::spawn(move || bytejail::run(&code, b"", &options).unwrap());
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.join("expected-output-of-test-7"), b"42").unwrap();
    let report = job.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !String::from_utf8_lossy(&report.output).contains("expected-output-of-test-7"),
        "the guest saw a host file's name: {}",
        report.summary()
    );
}

/// HOLE (medium where the host pipes core dumps to a helper, as Ubuntu's apport and
/// systemd-coredump do; latent here, where `core_pattern` is a file name): the worker is made
/// non-dumpable so that a crash leaves no core, but a guest may call
/// `prctl(PR_SET_DUMPABLE, 1)`; then any crash (the blob re-raises faults with their default
/// action) is dumped, and for a piped `core_pattern` the kernel ignores RLIMIT_CORE 0 and
/// runs the helper as root in the initial namespaces, fed the guest's memory and its chosen
/// name: a guest reaches privileged host code and the host's disk. Being dumpable also opens
/// `/proc/<worker>/` files to same-uid processes outside the job's Landlock domain.
/// Fix: refuse prctl(PR_SET_DUMPABLE, ...) in the stacked filter every profile worker gets
/// (compare args[0] == 4, EPERM), as the filter already does for clone.
#[test]
fn a_guest_cannot_make_its_worker_dumpable() {
    let code = gas("mov edi, 4
                    mov esi, 1
                    mov eax, 157
                    syscall
                    mov edi, 3
                    xor esi, esi
                    mov eax, 157
                    syscall
                    ret");
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    assert_eq!(
        returned_rax(&report),
        0,
        "PR_GET_DUMPABLE after the guest's PR_SET_DUMPABLE 1"
    );
}

/// HOLE (critical): a guest connects to the host's unix sockets by path. connect() on a
/// pathname AF_UNIX socket is a path lookup and a write-permission check on the socket inode,
/// not an open: Landlock up to ABI 7 does not handle it, the network namespace does not
/// separate file system sockets, and as uid 0 the guest passes the permission check. On a
/// usual host that is `/var/run/docker.sock` (root on the host), `/run/systemd/private` and
/// the system D-Bus (start units as root), a database's socket, the grader's own control
/// socket. Demonstrated on a socket this test listens on: the guest's connect() returns 0 and
/// the test accepts the connection and reads what the guest wrote.
/// Fix: a root the worker cannot name host paths from (pivot_root into an empty tmpfs in its
/// mount namespace, old root detached), which closes this and the metadata and inotify holes
/// at once; where the kernel has it, also Landlock's right for resolving unix sockets; and/or
/// refuse connect/sendto/sendmsg on AF_UNIX sockets to pathnames (the stacked filter cannot
/// read the address: refuse socket(AF_UNIX) entirely unless the profile needs it).
#[test]
fn a_profile_guest_reaches_no_host_unix_socket() {
    let dir = std::env::temp_dir().join(format!("bjrev-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let path = path.to_str().unwrap().to_string();
    // socket(AF_UNIX, SOCK_STREAM, 0), connect(path), write "hello host": rax = connect's result.
    let code = gas(&format!(
        "    mov edi, 1
             mov esi, 1
             xor edx, edx
             mov eax, 41
             syscall
             test rax, rax
             js 9f
             mov r12, rax
             mov rdi, r12
             lea rsi, [rip + addr]
             mov edx, {len}
             mov eax, 42
             syscall
             test rax, rax
             jnz 9f
             mov rdi, r12
             lea rsi, [rip + msg]
             mov edx, 10
             mov eax, 1
             syscall
             xor eax, eax
         9:  ret
         msg: .ascii \"hello host\"
         addr: .short 1
               .asciz \"{path}\"",
        len = 2 + path.len() + 1
    ));
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    let connected = returned_rax(&report);
    let mut heard = String::new();
    if let Ok((mut stream, _)) = listener.accept() {
        use std::io::Read;
        let _ = stream.read_to_string(&mut heard);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        connected < 0 && heard.is_empty(),
        "the guest reached a host socket: connect gave {connected}, the host heard {heard:?}"
    );
}

/// HOLE (medium on VMs, not demonstrated end to end on purpose): the "no network" wall is a
/// network namespace, and AF_VSOCK is not namespaced on this kernel (nor covered by
/// Landlock): a guest makes a vsock socket and may connect to the hypervisor (CID 2) and to
/// whatever services the VM's host offers there (agents, metadata, build or test
/// infrastructure), from inside a job documented to reach no network. This test does not
/// connect anywhere; it shows only that the socket is made where the wall should refuse it.
/// Fix: the stacked filter refuses socket()/socketpair() for every address family but AF_UNIX
/// (args[0] compare, EAFNOSUPPORT) unless the user asks for networking; that also closes the
/// netlink channel between jobs.
#[test]
fn a_profile_guest_gets_no_vsock_socket() {
    // socket(AF_VSOCK, SOCK_STREAM, 0)
    let code = gas("mov edi, 40\nmov esi, 1\nxor edx, edx\nmov eax, 41\nsyscall\nret");
    let report = bytejail::run(&code, b"", &profile_options()).unwrap();
    let rax = returned_rax(&report);
    assert!(rax < 0, "the guest made an AF_VSOCK socket (fd {rax})");
}

/// HOLE (low): a guest makes the host report `killed` ("a SIGKILL from outside bytejail") for a
/// death it caused itself: it lowers its own RLIMIT_CPU (lowering needs no privilege) and
/// spins; the kernel's SIGKILL at the hard limit reaches even a PID-namespace init. The report
/// then blames an outsider (an operator, the OOM killer) for what is a CPU limit.
/// Fix: refuse setrlimit/prlimit64 on the worker's own RLIMIT_CPU (and RLIMIT_AS, whose
/// lowering is harmless but makes `--memory` reports lie the other way) in the stacked filter
/// (compare args), or classify any SIGKILL the host did not send with CPU time at or past one
/// second as "killed (unverified)" rather than blaming the outside.
#[test]
fn a_guest_cannot_make_its_own_death_look_like_an_outside_kill() {
    // prlimit64(0, RLIMIT_CPU, {1, 1}, NULL), then spin.
    let code = gas("    push 1
                        push 1
                        xor edi, edi
                        xor esi, esi
                        mov rdx, rsp
                        xor r10d, r10d
                        mov eax, 302
                        syscall
                    1:  jmp 1b");
    let mut options = profile_options();
    options.limits.timeout = Duration::from_secs(8);
    let report = bytejail::run(&code, b"", &options).unwrap();
    assert_ne!(
        report.outcome,
        Outcome::Killed,
        "a self-inflicted RLIMIT_CPU kill is blamed on the outside: {}",
        report.summary()
    );
}

// ---------------------------------------------------------------------------------------------
// Attacks that are stopped (regression tests).
// ---------------------------------------------------------------------------------------------

/// The host (and a zygote) is out of a profile guest's reach: in its PID namespace the host's
/// pid names nothing (kill, pidfd_open, process_vm_readv and ptrace give ESRCH), and kill(-1)
/// finds no process to signal. The twin: the same calls on pid 1 (the worker itself) work.
#[test]
fn a_profile_guest_reaches_no_host_process() {
    if !namespaces() {
        eprintln!("not root: no PID namespace for workers; skipping");
        return;
    }
    let zygote = Zygote::start().unwrap();
    let targets = [std::process::id(), zygote.pid()];
    let calls = |pid: u32| {
        [
            // kill(pid, 0)
            ("kill", format!("mov edi, {pid}\nxor esi, esi\nmov eax, 62\nsyscall\nret")),
            // pidfd_open(pid, 0)
            ("pidfd_open", format!("mov edi, {pid}\nxor esi, esi\nmov eax, 434\nsyscall\nret")),
            // process_vm_readv(pid, iov, 1, iov, 1, 0) with an iovec of 8 bytes of the stack.
            (
                "process_vm_readv",
                format!(
                    "push 8
                     push rsp
                     mov edi, {pid}
                     mov rsi, rsp
                     mov edx, 1
                     mov r10, rsp
                     mov r8d, 1
                     xor r9d, r9d
                     mov eax, 310
                     syscall
                     add rsp, 16
                     ret"
                ),
            ),
            // ptrace(PTRACE_ATTACH, pid, 0, 0)
            (
                "ptrace",
                format!("mov edi, 16\nmov esi, {pid}\nxor edx, edx\nxor r10d, r10d\nmov eax, 101\nsyscall\nret"),
            ),
        ]
    };
    for pid in targets {
        for (what, source) in calls(pid) {
            let code = gas(&source);
            let report = bytejail::run(&code, b"", &profile_options()).unwrap();
            assert_eq!(
                returned_rax(&report),
                -(libc::ESRCH as i64),
                "{what} on pid {pid}"
            );
            let report = zygote.run(&code, b"", &profile_options()).unwrap();
            assert_eq!(
                returned_rax(&report),
                -(libc::ESRCH as i64),
                "{what} on pid {pid} from a zygote's worker"
            );
        }
    }
    // kill(-1, SIGKILL): init signals everything in its namespace but itself: nothing.
    let all = gas("mov edi, -1\nmov esi, 9\nmov eax, 62\nsyscall\nret");
    let report = bytejail::run(&all, b"", &profile_options()).unwrap();
    assert_eq!(returned_rax(&report), -(libc::ESRCH as i64));
    // The twin: pid 1 is the worker itself, and these calls work on it.
    let own = gas("mov edi, 1\nxor esi, esi\nmov eax, 62\nsyscall\nret");
    assert_eq!(
        returned_rax(&bytejail::run(&own, b"", &profile_options()).unwrap()),
        0
    );
    let own = gas("mov edi, 1\nxor esi, esi\nmov eax, 434\nsyscall\nret");
    assert!(returned_rax(&bytejail::run(&own, b"", &profile_options()).unwrap()) >= 0);
}

/// A spinning profile guest holds exactly fds 0 and 1: the host's pidfd (`host_pidfd`), the
/// empty network namespace's fd and the arena's memfd are closed before it runs.
#[test]
fn a_profile_worker_holds_only_its_pipes() {
    let name = marker("bjrevfds");
    let code = gas(&format!("{}\n1: jmp 1b", name_self(&name)));
    let mut options = profile_options();
    options.limits.timeout = Duration::from_secs(3);
    let job = std::thread::spawn(move || bytejail::run(&code, b"", &options).unwrap());
    let pid = wait_marked(&name).expect("the guest never named itself");
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    fds.sort();
    // The twin: the same listing of this test process shows more than two descriptors.
    let own = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let report = job.join().unwrap();
    assert_eq!(report.outcome, Outcome::Timeout, "{}", report.summary());
    assert_eq!(fds, ["0", "1"]);
    assert!(own > 2);
}

/// Two concurrent jobs in the shared network namespace cannot meet on an abstract unix
/// socket: Landlock (ABI 6+) scopes them to their own domains (EPERM on connect). The twin:
/// the listener's bind works, and a guest connects to its own abstract socket.
#[test]
fn concurrent_jobs_share_no_abstract_socket() {
    if landlock_abi() < 6 {
        eprintln!("Landlock ABI below 6: abstract sockets are not scoped; skipping");
        return;
    }
    let name = marker("bjrevabs");
    // sockaddr_un { AF_UNIX, "\0name" }, length 2 + 1 + len.
    let addr = format!(
        "addr: .short 1
               .byte 0
               .ascii \"{name}\""
    );
    let addr_len = 3 + name.len();
    let listener = gas(&format!(
        "    mov edi, 1
             mov esi, 1
             xor edx, edx
             mov eax, 41
             syscall
             mov r12, rax
             mov rdi, r12
             lea rsi, [rip + addr]
             mov edx, {addr_len}
             mov eax, 49
             syscall
             test rax, rax
             jnz 9f
             mov rdi, r12
             mov esi, 1
             mov eax, 50
             syscall
             mov rdi, r12
             xor esi, esi
             xor edx, edx
             mov eax, 43
             syscall
         9:  ret
         {addr}"
    ));
    // Connects, retrying (50 ms apart, 60 times) while nothing listens yet (ECONNREFUSED).
    let connector = gas(&format!(
        "    mov r13d, 60
         1:  mov edi, 1
             mov esi, 1
             xor edx, edx
             mov eax, 41
             syscall
             mov r12, rax
             mov rdi, rax
             lea rsi, [rip + addr]
             mov edx, {addr_len}
             mov eax, 42
             syscall
             cmp rax, -111
             jne 2f
             mov r14, rax
             mov rdi, r12
             mov eax, 3
             syscall
             push 50000000
             push 0
             mov rdi, rsp
             xor esi, esi
             mov eax, 35
             syscall
             add rsp, 16
             mov rax, r14
             dec r13d
             jnz 1b
         2:  ret
         {addr}"
    ));
    let mut options = profile_options();
    options.limits.timeout = Duration::from_secs(4);
    let job = std::thread::spawn(move || bytejail::run(&listener, b"", &options).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let report = bytejail::run(&connector, b"", &profile_options()).unwrap();
    let listened = job.join().unwrap();
    assert_eq!(listened.outcome, Outcome::Timeout, "{}", listened.summary());
    assert_eq!(returned_rax(&report), -(libc::EPERM as i64));
    // The twin: in one job, bind, listen and connect to itself.
    let both = gas(&format!(
        "    mov edi, 1
             mov esi, 1
             xor edx, edx
             mov eax, 41
             syscall
             mov r12, rax
             mov rdi, r12
             lea rsi, [rip + addr]
             mov edx, {addr_len}
             mov eax, 49
             syscall
             mov rdi, r12
             mov esi, 1
             mov eax, 50
             syscall
             mov edi, 1
             mov esi, 1
             xor edx, edx
             mov eax, 41
             syscall
             mov rdi, rax
             lea rsi, [rip + addr]
             mov edx, {addr_len}
             mov eax, 42
             syscall
             ret
         {addr}"
    ));
    let report = bytejail::run(&both, b"", &profile_options()).unwrap();
    assert_eq!(returned_rax(&report), 0, "{}", report.summary());
}

/// The shared network namespace's loopback is down and stays so: bringing it up needs
/// CAP_NET_ADMIN over that namespace (EPERM). The twin: SIOCGIFFLAGS reads `lo`'s flags
/// (the interface exists, IFF_UP clear).
#[test]
fn a_profile_guest_cannot_bring_up_loopback() {
    let ioctl = |request: u32, flags: u32| {
        gas(&format!(
            "    mov edi, 2
                 mov esi, 2
                 xor edx, edx
                 mov eax, 41
                 syscall
                 test rax, rax
                 js 9f
                 sub rsp, 48
                 mov qword ptr [rsp], 0x6f6c
                 mov qword ptr [rsp + 8], 0
                 mov qword ptr [rsp + 16], {flags}
                 mov qword ptr [rsp + 24], 0
                 mov rdi, rax
                 mov esi, {request}
                 mov rdx, rsp
                 mov eax, 16
                 syscall
                 test rax, rax
                 jnz 8f
                 movzx eax, word ptr [rsp + 16]
                 or rax, 0x10000
             8:  add rsp, 48
             9:  ret"
        ))
    };
    // SIOCGIFFLAGS: 0x10000 marks success, the low bits are the flags.
    let got = returned_rax(&bytejail::run(&ioctl(0x8913, 0), b"", &profile_options()).unwrap());
    assert!(got & 0x10000 != 0, "SIOCGIFFLAGS failed: {got}");
    assert_eq!(got & libc::IFF_UP as i64, 0, "lo is up: flags {got:x}");
    // SIOCSIFFLAGS with IFF_UP | IFF_RUNNING.
    let set = ioctl(0x8914, (libc::IFF_UP | libc::IFF_RUNNING) as u32);
    let report = bytejail::run(&set, b"", &profile_options()).unwrap();
    assert_eq!(returned_rax(&report), -(libc::EPERM as i64));
}

/// A job with a pids cgroup cannot move itself out: its `cgroup.procs` (like every file) is
/// closed to it by Landlock (EACCES), so it cannot escape `pids.max`.
#[test]
fn a_job_cannot_leave_its_pids_cgroup() {
    if !namespaces() || landlock_abi() == 0 {
        eprintln!("no PID namespace or no Landlock; skipping");
        return;
    }
    for path in [
        "/sys/fs/cgroup/pids/cgroup.procs",
        "/sys/fs/cgroup/cgroup.procs",
        "/sys/fs/cgroup/unified/cgroup.procs",
    ] {
        if !std::path::Path::new(path).exists() {
            continue;
        }
        // open(path, O_WRONLY)
        let code = gas(&format!(
            "lea rdi, [rip + path]
             mov esi, 1
             mov eax, 2
             syscall
             ret
             path: .asciz \"{path}\""
        ));
        let mut options = profile_options();
        options.limits.max_procs = 4;
        let report = bytejail::run(&code, b"", &options).unwrap();
        // Out of sight in the worker's empty root (ENOENT) or, without one, refused (EACCES).
        let got = returned_rax(&report);
        assert!(
            got == -(libc::ENOENT as i64) || got == -(libc::EACCES as i64),
            "{path}: {got}"
        );
    }
    // The job's cgroup is gone once it is reported, also after a guest that forked to its
    // limit: nothing of it is left in the hierarchy.
    let bomb = gas("    mov r12d, 10
                    1:  mov eax, 57
                        syscall
                        test rax, rax
                        jz 2f
                        dec r12d
                        jnz 1b
                        ret
                    2:  jmp 2b");
    let mut options = profile_options();
    options.limits.max_procs = 4;
    let report = bytejail::run(&bomb, b"", &options).unwrap();
    assert!(
        matches!(report.outcome, Outcome::Returned(_)),
        "{}",
        report.summary()
    );
    let prefix = format!("{}-", std::process::id());
    for parent in ["/sys/fs/cgroup/pids/bytejail", "/sys/fs/cgroup/bytejail"] {
        let left: Vec<String> = std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|name| name.starts_with(&prefix))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "job cgroups left in {parent}");
    }
}

/// A guest cannot raise the limits the worker set (hard = soft; raising needs
/// CAP_SYS_RESOURCE): RLIMIT_AS, RLIMIT_CPU, RLIMIT_FSIZE and RLIMIT_NOFILE give EPERM. The
/// twin: lowering one works.
#[test]
fn a_profile_guest_cannot_raise_its_limits() {
    // prlimit64(0, resource, {new, new}, NULL)
    let prlimit = |resource: u32, value: &str| {
        gas(&format!(
            "mov rax, {value}
             push rax
             push rax
             xor edi, edi
             mov esi, {resource}
             mov rdx, rsp
             xor r10d, r10d
             mov eax, 302
             syscall
             add rsp, 16
             ret"
        ))
    };
    for (what, resource) in [
        ("RLIMIT_AS", libc::RLIMIT_AS),
        ("RLIMIT_CPU", libc::RLIMIT_CPU),
        ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
        ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
    ] {
        let raise = prlimit(resource, "-1");
        let report = bytejail::run(&raise, b"", &profile_options()).unwrap();
        assert_eq!(returned_rax(&report), -(libc::EPERM as i64), "{what}");
    }
    let lower = prlimit(libc::RLIMIT_NOFILE, "16");
    let report = bytejail::run(&lower, b"", &profile_options()).unwrap();
    assert_eq!(returned_rax(&report), 0);
}

/// A guest that writes the record of a setup failure and exits 127 (as the worker does when
/// its setup fails in a PID namespace) is reported as exiting 127, not as a runner error: the
/// host asks the kernel whether it entered seccomp.
#[test]
fn a_forged_setup_failure_is_the_guests_exit() {
    if !namespaces() {
        eprintln!("not root: no PID namespace for workers; skipping");
        return;
    }
    // REC_STATE (data page + 0x100) = 3 (setup failed), REC_STAGE = 0, REC_ERRNO = EPERM.
    let code = gas("mov rbx, [rsp]
                    and rbx, -4096
                    mov qword ptr [rbx + 0x1190], 0
                    mov qword ptr [rbx + 0x1198], 1
                    mov qword ptr [rbx + 0x1100], 3
                    mov edi, 127
                    mov eax, 60
                    syscall");
    let report = bytejail::run(&code, b"", &profile_options());
    let report = report.expect("a guest's exit became a runner error");
    assert_eq!(report.outcome, Outcome::Exited(127), "{}", report.summary());
}

/// With `--max-procs 1` no thread or process is made through any entry: clone with
/// CLONE_THREAD, vfork, the x32 numbers of clone and clone3, and clone3 with an odd size all
/// fail with EAGAIN (the stacked filter answers before the kernel looks at the arguments).
#[test]
fn no_task_is_made_through_any_entry_under_max_procs_1() {
    let options = RunOptions::default().with_policy(allow_all_arches());
    let eagain = -(libc::EAGAIN as i64);
    // clone(CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, stack)
    let flags = libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM;
    let cases = [
        (
            "clone(CLONE_THREAD)",
            format!("mov edi, {flags}\nlea rsi, [rsp - 4096]\nxor edx, edx\nxor r10d, r10d\nxor r8d, r8d\nmov eax, 56\nsyscall\nret"),
        ),
        ("vfork", "mov eax, 58\nsyscall\nret".to_string()),
        (
            "x32 clone",
            "mov edi, 17\nxor esi, esi\nxor edx, edx\nxor r10d, r10d\nxor r8d, r8d\nmov eax, 0x40000038\nsyscall\nret".to_string(),
        ),
        (
            "x32 clone3",
            "xor edi, edi\nxor esi, esi\nmov eax, 0x400001b3\nsyscall\nret".to_string(),
        ),
        (
            "clone3 with an odd size",
            "sub rsp, 128\nmov rdi, rsp\nxor eax, eax\nmov ecx, 128\nrep stosb\nmov rdi, rsp\nmov esi, 89\nmov eax, 435\nsyscall\nadd rsp, 128\nret".to_string(),
        ),
        (
            "i386 clone",
            "mov ebx, 17\nxor ecx, ecx\nxor edx, edx\nxor esi, esi\nxor edi, edi\nmov eax, 120\nint 0x80\nmovsxd rax, eax\nret".to_string(),
        ),
    ];
    for (what, source) in cases {
        let report = bytejail::run(&gas(&source), b"", &options).unwrap();
        assert_eq!(
            returned_rax(&report),
            eagain,
            "{what}: {}",
            report.summary()
        );
    }
}

/// A pool's parked worker holds its pipes and the two control pipes (fds 0, 1, 3, 4), nothing
/// of the host: no pidfd, no namespace fd, no memfd.
#[test]
fn a_pooled_profile_worker_holds_only_its_pipes() {
    let name = marker("bjrevpfds");
    let code = gas(&format!("{}\n1: jmp 1b", name_self(&name)));
    let mut options = profile_options();
    options.limits.timeout = Duration::from_secs(3);
    let pool = std::sync::Arc::new(Pool::new(options.clone(), 1).unwrap());
    let job = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.run(&code, b"", &options).unwrap())
    };
    let pid = wait_marked(&name).expect("the guest never named itself");
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    fds.sort();
    let report = job.join().unwrap();
    assert_eq!(report.outcome, Outcome::Timeout, "{}", report.summary());
    assert_eq!(fds, ["0", "1", "3", "4"]);
}

/// What Landlock and the dropped capabilities do stop on a host file the guest's uid owns:
/// writing (open O_WRONLY: EACCES), truncating (ABI 3+: EACCES), unlinking and renaming
/// (EACCES), hard-linking it elsewhere (EACCES) and chown (no CAP_CHOWN: EPERM). The file is
/// unchanged afterwards. (Its mode, times and xattrs are not protected: see
/// `a_profile_guest_changes_no_host_files_metadata`.)
#[test]
fn a_profile_guest_cannot_write_truncate_unlink_or_chown_host_files() {
    if landlock_abi() < 3 {
        eprintln!("Landlock ABI below 3: truncate is not handled; skipping");
        return;
    }
    let dir = std::env::temp_dir().join(format!("bjrev-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, b"secret").unwrap();
    let path = victim.to_str().unwrap();
    let other = dir.join("other");
    let other = other.to_str().unwrap();
    let eacces = -(libc::EACCES as i64);
    let cases = [
        // open(path, O_WRONLY)
        (
            "open for writing",
            "lea rdi, [rip + path]\nmov esi, 1\nmov eax, 2\nsyscall\nret",
            eacces,
        ),
        // truncate(path, 0)
        (
            "truncate",
            "lea rdi, [rip + path]\nxor esi, esi\nmov eax, 76\nsyscall\nret",
            eacces,
        ),
        // unlink(path)
        (
            "unlink",
            "lea rdi, [rip + path]\nmov eax, 87\nsyscall\nret",
            eacces,
        ),
        // rename(path, other)
        (
            "rename",
            "lea rdi, [rip + path]\nlea rsi, [rip + other]\nmov eax, 82\nsyscall\nret",
            eacces,
        ),
        // link(path, other)
        (
            "link",
            "lea rdi, [rip + path]\nlea rsi, [rip + other]\nmov eax, 86\nsyscall\nret",
            eacces,
        ),
        // chown(path, 65534, 65534)
        (
            "chown",
            "lea rdi, [rip + path]\nmov esi, 65534\nmov edx, 65534\nmov eax, 92\nsyscall\nret",
            -(libc::EPERM as i64),
        ),
    ];
    for (what, source, errno) in cases {
        let code = gas(&format!(
            "{source}\npath: .asciz \"{path}\"\nother: .asciz \"{other}\""
        ));
        let report = bytejail::run(&code, b"", &profile_options()).unwrap();
        // The file is out of sight in the worker's empty root (ENOENT), or refused as said.
        let got = returned_rax(&report);
        assert!(
            got == errno || got == -(libc::ENOENT as i64),
            "{what}: {got}"
        );
    }
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&victim).unwrap();
    let content = std::fs::read(&victim).unwrap();
    let other_exists = std::path::Path::new(other).exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(content, b"secret");
    assert_eq!((meta.uid(), meta.nlink()), (0, 1));
    assert!(!other_exists);
}

/// io_uring is no way around the walls: a ring's operations do not pass through seccomp, so the
/// walls filter refuses `io_uring_setup` itself (EPERM) and neither an IORING_OP_NOP nor an
/// IORING_OP_OPENAT of `/etc/passwd` ever runs.
#[test]
fn io_uring_opens_no_file_either() {
    if landlock_abi() == 0 {
        eprintln!("no Landlock; skipping");
        return;
    }
    let ring = |opcode: u8| {
        gas(&format!(
            "    sub rsp, 128
                 mov rdi, rsp
                 xor eax, eax
                 mov ecx, 128
                 rep stosb
                 mov edi, 1
                 mov rsi, rsp
                 mov eax, 425
                 syscall
                 test rax, rax
                 js 9f
                 mov r12, rax
                 xor edi, edi
                 mov esi, 4096
                 mov edx, 3
                 mov r10d, 1
                 mov r8, r12
                 xor r9d, r9d
                 mov eax, 9
                 syscall
                 cmp rax, -4096
                 ja 9f
                 mov r13, rax
                 xor edi, edi
                 mov esi, 4096
                 mov edx, 3
                 mov r10d, 1
                 mov r8, r12
                 mov r9d, 0x8000000
                 mov eax, 9
                 syscall
                 cmp rax, -4096
                 ja 9f
                 mov r14, rax
                 xor edi, edi
                 mov esi, 4096
                 mov edx, 3
                 mov r10d, 1
                 mov r8, r12
                 mov r9d, 0x10000000
                 mov eax, 9
                 syscall
                 cmp rax, -4096
                 ja 9f
                 mov r15, rax
                 mov byte ptr [r15], {opcode}
                 mov dword ptr [r15 + 4], -100
                 mov qword ptr [r15 + 8], 0
                 lea rax, [rip + path]
                 mov [r15 + 16], rax
                 mov dword ptr [r15 + 24], 0
                 mov dword ptr [r15 + 28], 0
                 mov qword ptr [r15 + 32], 7
                 mov eax, dword ptr [rsp + 64]
                 mov dword ptr [r13 + rax], 0
                 mov eax, dword ptr [rsp + 44]
                 mov dword ptr [r13 + rax], 1
                 mov rdi, r12
                 mov esi, 1
                 mov edx, 1
                 mov r10d, 1
                 xor r8d, r8d
                 xor r9d, r9d
                 mov eax, 426
                 syscall
                 test rax, rax
                 js 9f
                 mov eax, dword ptr [rsp + 100]
                 movsxd rax, dword ptr [r14 + rax + 8]
             9:  add rsp, 128
                 ret
             path: .asciz \"/etc/passwd\""
        ))
    };
    const IORING_OP_NOP: u8 = 0;
    const IORING_OP_OPENAT: u8 = 18;
    for op in [IORING_OP_NOP, IORING_OP_OPENAT] {
        let report = bytejail::run(&ring(op), b"", &profile_options()).unwrap();
        assert_eq!(
            returned_rax(&report),
            -(libc::EPERM as i64),
            "{}",
            report.summary()
        );
    }
}

/// Calls that need a capability fail with EPERM: the worker dropped them all. Each would
/// change the host (its hostname: this test passes the current one, so even a success would
/// change nothing) or mount over its files. A guest that makes a user namespace of its own
/// (and with it every capability there) still cannot mount: Landlock refuses mounts to a
/// sandboxed process. The twin: the unshare itself works.
#[test]
fn a_profile_guest_holds_no_capability_even_in_a_user_namespace_of_its_own() {
    let host = {
        // SAFETY: utsname is plain data; uname fills it.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a local.
        assert_eq!(unsafe { libc::uname(&mut uts) }, 0);
        // SAFETY: uname NUL-terminates nodename.
        unsafe { std::ffi::CStr::from_ptr(uts.nodename.as_ptr()) }
            .to_string_lossy()
            .to_string()
    };
    let eperm = -(libc::EPERM as i64);
    // sethostname(current, len)
    let sethostname = gas(&format!(
        "lea rdi, [rip + name]\nmov esi, {}\nmov eax, 170\nsyscall\nret\nname: .ascii \"{host}\"",
        host.len()
    ));
    let report = bytejail::run(&sethostname, b"", &profile_options()).unwrap();
    assert_eq!(returned_rax(&report), eperm, "sethostname");
    // mount("none", "/", "tmpfs", 0, NULL), without and after unshare(CLONE_NEWUSER|CLONE_NEWNS)
    let mount = "lea rdi, [rip + src]
                 lea rsi, [rip + dst]
                 lea rdx, [rip + fstype]
                 xor r10d, r10d
                 xor r8d, r8d
                 mov eax, 165
                 syscall";
    let strings = "src: .asciz \"none\"\ndst: .asciz \"/\"\nfstype: .asciz \"tmpfs\"";
    let plain = gas(&format!("{mount}\nret\n{strings}"));
    let report = bytejail::run(&plain, b"", &profile_options()).unwrap();
    assert_eq!(returned_rax(&report), eperm, "mount");
    // rax = unshare's result << 32 | mount's result (low 32 bits)
    let userns = gas(&format!(
        "    mov edi, 0x10020000
             mov eax, 272
             syscall
             mov r12, rax
             test rax, rax
             jnz 9f
             {mount}
         9:  shl r12, 32
             mov eax, eax
             or rax, r12
             ret
         {strings}"
    ));
    let report = bytejail::run(&userns, b"", &profile_options()).unwrap();
    let rax = returned_rax(&report);
    assert_eq!(
        rax >> 32,
        0,
        "unshare(CLONE_NEWUSER | CLONE_NEWNS) failed: {}",
        rax >> 32
    );
    assert_eq!(
        rax as i32 as i64, eperm,
        "mount in the guest's own user namespace"
    );
}
