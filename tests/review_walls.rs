//! An attacker's review of the walls for profile guests: `--allow-read` / `--allow-write`
//! grants, the empty root and the mount namespace. Each attack that works is a test kept
//! `#[ignore]`d with the hole and its proposed fix; each one that is stopped is a regression
//! test with the kernel's answer. Of the four holes the review found, three are fixed (set-id
//! modes refused by the walls filter; grants on kernel file systems and through symbolic
//! links refused) and marked "Was a hole"; one stays ignored.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{gas, namespaces, profile_options, returned_rax};

/// A directory of this test's own below the temporary directory, made afresh.
fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bytejail-rw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Docker's default profile.
fn docker_options() -> bytejail::RunOptions {
    bytejail::RunOptions::default().with_policy(
        bytejail::Policy::from_profile_json(
            include_str!("../guest-samples/policies/docker-default.json"),
            "docker-default.json",
        )
        .unwrap(),
    )
}

/// A guest that makes one call `nr` with `path` as its first argument and `rsi`, `rdx` as the
/// next two, and returns what it returned.
fn path_call(nr: i64, path: &Path, rsi: i64, rdx: i64) -> Vec<u8> {
    gas(&format!(
        "    lea rdi, [rip + path]
             mov rsi, {rsi}
             mov rdx, {rdx}
             mov eax, {nr}
             syscall
             ret
         path: .asciz \"{}\"",
        path.display()
    ))
}

/// A guest that opens `path` read-only, reads up to 4096 bytes to its output and returns the
/// read's result (or the open's errno).
fn read_guest(path: &Path) -> Vec<u8> {
    gas(&format!(
        "    lea rdi, [rip + path]
             xor esi, esi
             mov eax, 2
             syscall
             test rax, rax
             js 1f
             mov edi, eax
             sub rsp, 4096
             mov rsi, rsp
             mov edx, 4096
             xor eax, eax
             syscall
             test rax, rax
             js 2f
             mov rdx, rax
             mov edi, 1
             mov rsi, rsp
             mov eax, 1
             syscall
         2:  add rsp, 4096
         1:  ret
         path: .asciz \"{}\"",
        path.display()
    ))
}

/// Was a hole (fixed; the test stays as a regression). A guest granted a directory for writing creates a file there, makes it setuid with
/// `fchmod` (Landlock does not cover mode changes, and the owner needs no capability to set
/// `S_ISUID`), and leaves a setuid file owned by the host's user (root on most hosts) in the
/// host's file system: `MOUNT_ATTR_NOSUID` applies only to the worker's mount of the grant.
/// Anyone who can run it on the host (it is mode 4755) runs the guest's bytes as the host's
/// user. Under the allow-all profile and Docker's default profile alike (`fchmod` is in it);
/// the same call on a granted file, or `chmod 0777` on the granted directory itself, changes
/// the host's file modes too. Proposed fix: refuse `chmod`/`fchmod`/`fchmodat(2)` with `S_ISUID`/`S_ISGID` in the
/// walls filter (mode argument), or better, drop the ability at the kernel: make the worker's
/// files through a user namespace whose uid is not the host's, or have the host strip
/// set-id bits (and refuse to run) on everything in a writable grant after each job.
#[test]
fn a_writable_grant_lets_a_guest_leave_a_setuid_file_for_the_host() {
    let dir = scratch_dir("suid");
    let planted = dir.join("planted");
    let guest = gas(&format!(
        "    lea rdi, [rip + path]
             mov esi, {flags}
             mov edx, 0x1ed
             mov eax, 2
             syscall
             test rax, rax
             js 1f
             mov edi, eax
             mov esi, 0x9ed
             mov eax, 91
             syscall
         1:  ret
         path: .asciz \"{}\"",
        planted.display(),
        flags = libc::O_WRONLY | libc::O_CREAT,
    ));
    let mut modes = Vec::new();
    for (name, mut options) in [
        ("docker", docker_options()),
        ("allow-all", profile_options()),
    ] {
        let _ = std::fs::remove_file(&planted);
        options.allow_write = vec![dir.clone()];
        let report = bytejail::run(&guest, b"", &options).unwrap();
        returned_rax(&report);
        let mode = std::fs::metadata(&planted).map(|m| m.permissions().mode());
        modes.push((name, mode.expect("the guest made no file at all")));
    }
    // Removed before any assertion: no setuid file stays behind.
    std::fs::remove_dir_all(&dir).unwrap();
    for (name, mode) in modes {
        assert_eq!(
            mode & libc::S_ISUID,
            0,
            "{name}: the guest left a setuid file (mode {mode:o}) in the host's file system"
        );
    }
}

/// A writable grant cannot be used to plant a symlink or a FIFO for the host to follow or
/// block on later: Landlock's `MAKE_SYM` and `MAKE_FIFO` are handled and not granted. The
/// reference: the host itself can make both in the same directory.
#[test]
fn a_guest_plants_no_symlink_or_fifo_in_a_writable_grant() {
    let dir = scratch_dir("plant");
    let link = dir.join("link");
    let fifo = dir.join("fifo");
    let mut options = profile_options();
    options.allow_write = vec![dir.clone()];
    // symlink(path, path): the target does not matter; mknod(fifo, S_IFIFO | 0644, 0).
    let symlink = gas(&format!(
        "    lea rdi, [rip + target]
             lea rsi, [rip + path]
             mov eax, 88
             syscall
             ret
         target: .asciz \"/etc/shadow\"
         path: .asciz \"{}\"",
        link.display()
    ));
    let made = returned_rax(&bytejail::run(&symlink, b"", &options).unwrap());
    assert!(made < 0, "the guest made a symlink: {made}");
    let mknod = path_call(133, &fifo, (libc::S_IFIFO | 0o644) as i64, 0);
    let made = returned_rax(&bytejail::run(&mknod, b"", &options).unwrap());
    assert!(made < 0, "the guest made a FIFO: {made}");
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert!(std::fs::symlink_metadata(&fifo).is_err());

    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
    let fifo_c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o644) }, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A guest cannot unmount or remount its grant to reach what lies under it, or to make a
/// read-only grant writable: the worker holds no capability (`EPERM`), and a read-only grant
/// stays read-only (`EROFS` or Landlock's `EACCES`). The reference: the same file is writable
/// through a writable grant.
#[test]
fn a_guest_cannot_unmount_or_remount_its_grant() {
    let dir = scratch_dir("remount");
    let file = dir.join("f");
    std::fs::write(&file, "x").unwrap();
    let mut options = profile_options();
    options.allow_read = vec![dir.clone()];
    let umount = path_call(166, &dir, libc::MNT_DETACH as i64, 0);
    let got = returned_rax(&bytejail::run(&umount, b"", &options).unwrap());
    assert!(got < 0, "the guest unmounted its grant: {got}");
    // mount(NULL, dir, NULL, MS_REMOUNT | MS_BIND, NULL): rdi = 0, so built by hand.
    let remount = gas(&format!(
        "    xor edi, edi
             lea rsi, [rip + path]
             xor edx, edx
             mov r10, {flags}
             xor r8d, r8d
             mov eax, 165
             syscall
             ret
         path: .asciz \"{}\"",
        dir.display(),
        flags = libc::MS_REMOUNT | libc::MS_BIND,
    ));
    let got = returned_rax(&bytejail::run(&remount, b"", &options).unwrap());
    assert!(got < 0, "the guest remounted its grant: {got}");
    let write = path_call(2, &file, libc::O_WRONLY as i64, 0);
    let got = returned_rax(&bytejail::run(&write, b"", &options).unwrap());
    assert!(got < 0, "a read-only grant opened for writing: {got}");
    options.allow_read = Vec::new();
    options.allow_write = vec![dir.clone()];
    let got = returned_rax(&bytejail::run(&write, b"", &options).unwrap());
    assert!(got >= 0, "the reference write failed: {got}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A guest cannot link a granted file's content to a path outside the grant, nor rename it
/// there: the grant is its own mount (`EXDEV`), and nothing else exists in the empty root.
#[test]
fn a_guest_cannot_link_or_rename_out_of_its_grant() {
    let dir = scratch_dir("link");
    let file = dir.join("f");
    std::fs::write(&file, "x").unwrap();
    let mut options = profile_options();
    options.allow_write = vec![dir.clone()];
    for nr in [86i64, 82] {
        // link(file, "/out") / rename(file, "/out").
        let guest = gas(&format!(
            "    lea rdi, [rip + path]
                 lea rsi, [rip + out]
                 mov eax, {nr}
                 syscall
                 ret
             out: .asciz \"/out\"
             path: .asciz \"{}\"",
            file.display()
        ));
        let got = returned_rax(&bytejail::run(&guest, b"", &options).unwrap());
        assert!(
            got < 0,
            "syscall {nr} moved the file out of its grant: {got}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Was a hole (fixed; the test stays as a regression) (user side). A grant of `/proc` (or a file below it) is accepted, and the host's
/// `/proc` is of the host's PID namespace: the guest reads the command lines, and for
/// processes of the host's user their environments and maps, of every process on the host,
/// the host itself included, from inside its own PID namespace. The test reads the host's
/// command line, compared with what the host reads of itself. Proposed fix: refuse grants on
/// `proc`, `sysfs`, `cgroup`, `debugfs` and similar pseudo file systems (by `statfs` magic of
/// the resolved path, so a symlink to them is refused too), with one line and exit code 2.
#[test]
fn a_grant_of_proc_shows_the_hosts_processes() {
    if !namespaces() {
        return;
    }
    let host = std::process::id();
    let expected = std::fs::read("/proc/self/cmdline").unwrap();
    let mut options = profile_options();
    options.allow_read = vec!["/proc".into()];
    let guest = read_guest(Path::new(&format!("/proc/{host}/cmdline")));
    match bytejail::run(&guest, b"", &options) {
        Err(bytejail::Error::Input(_)) => {} // refused: what the fix does
        Ok(report) => {
            let n = expected.len().min(4096);
            assert_ne!(
                report.output,
                expected[..n],
                "the guest read the host's command line through --allow-read /proc"
            );
        }
        Err(e) => panic!("{e}"),
    }
}

/// Was a hole (fixed; the test stays as a regression) (user side). A grant whose path is a symlink is accepted and the worker mounts
/// whatever the link points to when the worker starts: the host checks the path with
/// `metadata` (which follows links), and the worker resolves it again, by name, in
/// `open_tree`. Whoever can change the link (any user, for a link in a shared directory such as
/// /tmp) chooses what a later job sees, between the check and each worker's start. The test
/// grants a link to a directory and reads, through the link's name, a file of the directory
/// the link names (the host reads the same file as reference). Proposed fix: refuse grants
/// that are or pass through a symlink (or resolve them once with `canonicalize` and grant and
/// report the real path), and have the host open each grant once (`O_PATH | O_NOFOLLOW`) and
/// the worker clone that descriptor (`open_tree(fd, "", AT_EMPTY_PATH | OPEN_TREE_CLONE)`),
/// so the tree checked is the tree mounted.
#[test]
fn a_grant_of_a_symlink_mounts_what_it_points_to_at_the_workers_start() {
    let dir = scratch_dir("symlink");
    let target = dir.join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("secret"), "behind the link\n").unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let expected = std::fs::read(target.join("secret")).unwrap();
    let mut options = profile_options();
    options.allow_read = vec![link.clone()];
    let outcome = bytejail::run(&read_guest(&link.join("secret")), b"", &options);
    std::fs::remove_dir_all(&dir).unwrap();
    match outcome {
        Err(bytejail::Error::Input(_)) => {} // refused: what the fix does
        Ok(report) => assert_ne!(
            report.output, expected,
            "a grant of a symlink mounted what it points to"
        ),
        Err(e) => panic!("{e}"),
    }
}

/// Expected, and not yet said in the docs: what one job leaves in a directory granted for
/// writing, the next job granted the same directory finds (bytejail empties nothing the user
/// grants). The test shows it, the host reading nothing between the two jobs.
#[test]
fn a_writable_grant_carries_files_from_one_job_to_the_next() {
    let dir = scratch_dir("carry");
    let note = dir.join("note");
    let writer = gas(&format!(
        "    lea rdi, [rip + path]
             mov esi, {flags}
             mov edx, 0x1a4
             mov eax, 2
             syscall
             test rax, rax
             js 1f
             mov edi, eax
             lea rsi, [rip + msg]
             mov edx, 5
             mov eax, 1
             syscall
         1:  ret
         msg: .ascii \"left\\n\"
         path: .asciz \"{}\"",
        note.display(),
        flags = libc::O_WRONLY | libc::O_CREAT,
    ));
    let mut options = profile_options();
    options.allow_write = vec![dir.clone()];
    let wrote = returned_rax(&bytejail::run(&writer, b"", &options).unwrap());
    assert_eq!(wrote, 5);
    let report = bytejail::run(&read_guest(&note), b"", &options).unwrap();
    assert_eq!(report.output, std::fs::read(&note).unwrap());
    assert!(!report.output.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A guest cannot open a file outside its grant by handle: the host takes the handle of a file
/// on the same file system as the grant (`name_to_handle_at`), the guest opens its grant as the
/// mount descriptor and calls `open_by_handle_at`, which needs `CAP_DAC_READ_SEARCH` the worker
/// does not hold. The reference: the host opens the same handle and reads the file.
#[test]
fn a_guest_opens_nothing_by_handle_outside_its_grant() {
    let dir = scratch_dir("handle");
    let outside = dir.with_file_name(format!("bytejail-rw-outside-{}", std::process::id()));
    std::fs::write(&outside, "outside the grant\n").unwrap();
    // struct file_handle: handle_bytes, handle_type, then the bytes.
    let mut handle = [0u8; 8 + 128];
    handle[..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id = 0i32;
    let path = std::ffi::CString::new(outside.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path, a buffer of the size it claims, an int.
    let got = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            path.as_ptr(),
            handle.as_mut_ptr(),
            &mut mount_id,
            0,
        )
    };
    assert_eq!(got, 0, "{}", std::io::Error::last_os_error());
    let used = 8 + u32::from_ne_bytes(handle[..4].try_into().unwrap()) as usize;
    let bytes = handle[..used]
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let guest = gas(&format!(
        "    lea rdi, [rip + path]
             mov esi, {flags}
             mov eax, 2
             syscall
             test rax, rax
             js 1f
             mov edi, eax
             lea rsi, [rip + handle]
             xor edx, edx
             mov eax, 304
             syscall
             test rax, rax
             js 1f
             mov edi, eax
             sub rsp, 256
             mov rsi, rsp
             mov edx, 256
             xor eax, eax
             syscall
             mov rdx, rax
             mov edi, 1
             mov rsi, rsp
             mov eax, 1
             syscall
             add rsp, 256
         1:  ret
         handle: .byte {bytes}
         path: .asciz \"{}\"",
        dir.display(),
        flags = libc::O_RDONLY | libc::O_DIRECTORY,
    ));
    let mut options = profile_options();
    options.allow_write = vec![dir.clone()];
    let report = bytejail::run(&guest, b"", &options).unwrap();
    let got = returned_rax(&report);
    // The reference: the host, which holds the capability, opens the same handle.
    let mount = std::fs::File::open(&dir).unwrap();
    // SAFETY: a descriptor of this test and the handle the kernel filled in.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            std::os::fd::AsRawFd::as_raw_fd(&mount),
            handle.as_ptr(),
            libc::O_RDONLY,
        )
    };
    let host_could = fd >= 0;
    if host_could {
        // SAFETY: the descriptor just opened, closed once.
        unsafe { libc::close(fd as i32) };
    }
    std::fs::remove_file(&outside).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        report.output.is_empty(),
        "read by handle: {:?}",
        report.output
    );
    assert_eq!(got, -(libc::EPERM as i64), "{}", report.summary());
    assert!(host_could || !namespaces(), "the reference open failed");
}

/// A guest cannot mount a cgroup file system (to move itself out of its job's cgroup and so
/// out of `--cpu-time` and `--max-procs` accounting) or a new proc on its writable grant: the
/// worker holds no capability.
#[test]
fn a_guest_mounts_no_cgroup_or_proc_on_its_grant() {
    let dir = scratch_dir("mount");
    let mut options = profile_options();
    options.allow_write = vec![dir.clone()];
    for fstype in ["cgroup2", "cgroup", "proc"] {
        let guest = gas(&format!(
            "    lea rdi, [rip + fstype]
                 lea rsi, [rip + path]
                 lea rdx, [rip + fstype]
                 xor r10d, r10d
                 xor r8d, r8d
                 mov eax, 165
                 syscall
                 ret
             fstype: .asciz \"{fstype}\"
             path: .asciz \"{}\"",
            dir.display()
        ));
        let got = returned_rax(&bytejail::run(&guest, b"", &options).unwrap());
        assert!(got < 0, "the guest mounted {fstype}: {got}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A guest with processes to spare (`--max-procs 4`) cannot signal or ptrace its host's janitor
/// or tracer, though it is told their pids: both are outside its PID namespace (`ESRCH`), and
/// `kill(-1, SIGKILL)` reaches only its own namespace. Both are alive after the job, and the
/// next job is still traced and cleaned up (it returns).
#[test]
fn a_guest_reaches_neither_the_janitor_nor_the_tracer() {
    if !namespaces() {
        println!("skipped: needs a PID namespace for the worker (run as root)");
        return;
    }
    let mut options = profile_options();
    options.limits.max_procs = 4;
    // A first job starts the janitor (with the first job cgroup) and the tracer. The janitor
    // is init's child: it is the one that appears with this first job.
    let before = common::marked("bytejail-janitr");
    returned_rax(&bytejail::run(&gas("xor eax, eax\nret"), b"", &options).unwrap());
    let me = std::process::id();
    let children = common::all_children_of(me);
    let named = |name: &str| {
        children
            .iter()
            .map(|&(pid, _)| pid)
            .find(|&pid| common::comm(pid) == name)
    };
    let janitor = common::marked("bytejail-janitr")
        .into_iter()
        .find(|pid| !before.contains(pid));
    let (Some(janitor), Some(tracer)) = (janitor, named("bytejail-tracer")) else {
        println!("skipped: no janitor or tracer here (no cgroups, or tracing off): {children:?}");
        return;
    };
    // kill(janitor, 9), kill(tracer, 9), ptrace(PTRACE_ATTACH, janitor), kill(-1, 9): the
    // first three results are summed into rbx, as negative errnos.
    let guest = gas(&format!(
        "    push rbx
             xor ebx, ebx
             mov edi, {janitor}
             mov esi, 9
             mov eax, 62
             syscall
             add rbx, rax
             mov edi, {tracer}
             mov esi, 9
             mov eax, 62
             syscall
             add rbx, rax
             mov edi, 16
             mov esi, {janitor}
             xor edx, edx
             xor r10d, r10d
             mov eax, 101
             syscall
             add rbx, rax
             mov rax, rbx
             pop rbx
             ret"
    ));
    let got = returned_rax(&bytejail::run(&guest, b"", &options).unwrap());
    assert_eq!(got, -3 * libc::ESRCH as i64, "the guest reached them");
    let kill_all = gas("mov edi, -1\nmov esi, 9\nmov eax, 62\nsyscall\nret");
    let _ = bytejail::run(&kill_all, b"", &options).unwrap();
    assert!(common::alive(janitor), "the janitor is gone");
    assert!(common::alive(tracer), "the tracer is gone");
    returned_rax(&bytejail::run(&gas("xor eax, eax\nret"), b"", &options).unwrap());
}

/// A guest cannot starve `--cpu-time` accounting with many short-lived children (each spins a
/// little, exits and is reaped, so none lives long enough to be seen by a per-process clock):
/// the job's CPU accounting cgroup keeps what its dead tasks used, and the job ends as
/// `cpu_time_limit` well before its wall-clock timeout.
#[test]
fn short_lived_children_do_not_escape_cpu_time() {
    if !namespaces() {
        println!("skipped: needs a PID namespace for the worker (run as root)");
        return;
    }
    let report = bytejail::run(&short_lived_children(), b"", &forking_options(300, 20)).unwrap();
    assert_eq!(
        report.outcome,
        bytejail::Outcome::CpuTimeLimit,
        "{}",
        report.summary()
    );
}

/// The twin: the same guest with a CPU budget far above what it can use before a short wall
/// clock ends it is reported `timeout`, so the CPU limit is what ended the one above.
#[test]
fn short_lived_children_under_their_cpu_budget_run_to_the_timeout() {
    if !namespaces() {
        println!("skipped: needs a PID namespace for the worker (run as root)");
        return;
    }
    let mut options = forking_options(60_000, 1);
    options.limits.timeout = std::time::Duration::from_millis(400);
    let report = bytejail::run(&short_lived_children(), b"", &options).unwrap();
    assert_eq!(
        report.outcome,
        bytejail::Outcome::Timeout,
        "{}",
        report.summary()
    );
}

/// A profile with room for one child at a time, a CPU budget and a wall-clock timeout.
fn forking_options(cpu_ms: u64, timeout_s: u64) -> bytejail::RunOptions {
    let mut options = profile_options();
    options.limits.max_procs = 2;
    options.limits.cpu_time = Some(std::time::Duration::from_millis(cpu_ms));
    options.limits.timeout = std::time::Duration::from_secs(timeout_s);
    options
}

/// Loop: fork; the child spins 2^22 times and exits; the parent waits for it.
fn short_lived_children() -> Vec<u8> {
    gas("1:  mov eax, 57
            syscall
            test rax, rax
            jz 3f
            js 1b
            mov rdi, rax
            xor esi, esi
            xor edx, edx
            xor r10d, r10d
            mov eax, 61
            syscall
            jmp 1b
        3:  mov ecx, 0x400000
        4:  dec ecx
            jnz 4b
            xor edi, edi
            mov eax, 60
            syscall")
}

/// A guest climbs out of its grant neither with `..` (the grant's parent is the worker's empty
/// root) nor through `/proc/self/root` (no proc is mounted there): a host file the host reads
/// itself stays out of reach under both.
#[test]
fn a_guest_climbs_out_of_its_grant_neither_by_dotdot_nor_proc_self_root() {
    let host_file = Path::new("/etc/hostname");
    let Ok(expected) = std::fs::read(host_file) else {
        println!("skipped: no /etc/hostname to hunt for");
        return;
    };
    assert!(!expected.is_empty());
    let dir = scratch_dir("climb");
    let depth = dir.components().count() - 1;
    let climb = format!("{}/{}etc/hostname", dir.display(), "../".repeat(depth));
    assert_eq!(
        std::fs::read(&climb).unwrap(),
        expected,
        "the host's own climb"
    );
    let mut options = profile_options();
    options.allow_write = vec![dir.clone()];
    for path in [
        climb.as_str(),
        "/proc/self/root/etc/hostname",
        "/etc/hostname",
    ] {
        let report = bytejail::run(&read_guest(Path::new(path)), b"", &options).unwrap();
        assert!(returned_rax(&report) < 0, "{path}: {}", report.summary());
        assert!(report.output.is_empty(), "{path} read");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// HOLE (resource, medium; documented in docs/security.md, not fixed). `--max-file-size` is `RLIMIT_FSIZE`: a limit per file. In a
/// directory granted for writing a guest makes as many files as it likes, each up to the
/// limit, so what one job can leave in the host's file system is bounded only by its time
/// (and files persist after it). The test: with a limit of 4096 bytes a guest leaves 16
/// files of 4096 bytes (64 KiB, 16 times the limit). Proposed fix: say in the docs that a
/// writable grant is bounded by the file system only, and offer a bound: count and size what
/// the job left (the host walks the grant after the job and reports it), or grant a directory
/// on a size-limited tmpfs (or a quota'd project) that the user copies from.
#[test]
#[ignore = "hole: a writable grant takes any number of files, each up to --max-file-size"]
fn a_writable_grant_holds_more_than_max_file_size() {
    let dir = scratch_dir("fill");
    // Opens the grant; for r12 in 'a'..='p': openat(grant, "<r12>", O_WRONLY|O_CREAT), write
    // 4096 bytes of the stack, close.
    let guest = gas(&format!(
        "    push r12
             push r13
             push r14
             lea rdi, [rip + path]
             mov esi, {dir_flags}
             mov eax, 2
             syscall
             test rax, rax
             js 2f
             mov r14, rax
             mov r12d, 0x61
         1:  sub rsp, 16
             mov [rsp], r12
             mov rdi, r14
             mov rsi, rsp
             mov edx, {flags}
             mov r10d, 0x1a4
             mov eax, 257
             syscall
             add rsp, 16
             test rax, rax
             js 2f
             mov r13, rax
             mov rdi, rax
             sub rsp, 4096
             mov rsi, rsp
             mov edx, 4096
             mov eax, 1
             syscall
             add rsp, 4096
             mov rdi, r13
             mov eax, 3
             syscall
             inc r12d
             cmp r12d, 0x71
             jb 1b
             xor eax, eax
         2:  pop r14
             pop r13
             pop r12
             ret
         path: .asciz \"{}\"",
        dir.display(),
        dir_flags = libc::O_RDONLY | libc::O_DIRECTORY,
        flags = libc::O_WRONLY | libc::O_CREAT,
    ));
    let mut options = profile_options();
    options.allow_write = vec![dir.clone()];
    options.limits.max_file_size = 4096;
    let report = bytejail::run(&guest, b"", &options);
    let total: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    std::fs::remove_dir_all(&dir).unwrap();
    let report = report.unwrap();
    assert!(
        total <= 4096,
        "{total} bytes left in the grant under a 4096-byte limit: {}",
        report.summary()
    );
}

/// The walls filter decides `setrlimit` and `prlimit64` on the low 32 bits of the resource, as
/// the kernel reads it (an `unsigned int`): a guest that sets a high bit to slip a new
/// `RLIMIT_CPU` past the filter gets `EPERM`. The twin: the same high bit on another resource
/// (`RLIMIT_NOFILE`, lowered) is accepted by the kernel, so the truncation is real.
#[test]
fn a_new_cpu_limit_cannot_hide_behind_high_bits() {
    // setrlimit(resource | 1 << 32, {4, 4}) or prlimit64(0, resource | 1 << 32, .., 0): a
    // limit below the job's, which needs no privilege.
    let guest = |prlimit: bool, resource: u32| {
        let call = if prlimit {
            "xor edi, edi
             mov rsi, rax
             mov rdx, rsp
             xor r10d, r10d
             mov eax, 302"
        } else {
            "mov rdi, rax
             mov rsi, rsp
             mov eax, 160"
        };
        gas(&format!(
            "    sub rsp, 16
                 mov qword ptr [rsp], 4
                 mov qword ptr [rsp + 8], 4
                 mov rax, 0x100000000 + {resource}
                 {call}
                 syscall
                 add rsp, 16
                 ret"
        ))
    };
    let options = profile_options();
    for prlimit in [false, true] {
        let cpu =
            returned_rax(&bytejail::run(&guest(prlimit, libc::RLIMIT_CPU), b"", &options).unwrap());
        assert_eq!(cpu, -(libc::EPERM as i64), "prlimit64: {prlimit}");
        let nofile = guest(prlimit, libc::RLIMIT_NOFILE);
        let got = returned_rax(&bytejail::run(&nofile, b"", &options).unwrap());
        assert_eq!(
            got, 0,
            "the kernel refused a lower RLIMIT_NOFILE (prlimit64: {prlimit})"
        );
    }
}
