//! The filter every profile worker installs before its profile's: the calls no profile may
//! hand a guest, because they reach past the job's walls.
//!
//! Seccomp runs every installed filter and keeps the strictest decision, so this one can only
//! take away: where the profile kills or traps one of these calls, it still does. What it
//! refuses, through `syscall` (x32 numbers included) and `int 0x80` alike:
//! - new tasks when the job may have none (`Limits::max_procs` 1): `clone`, `clone3`, `fork`,
//!   `vfork` fail with `EAGAIN`;
//! - the kernel keyrings (`add_key`, `request_key`, `keyctl`: `EPERM`): they are per user, not
//!   per namespace, so one job could leave data there for the next, as Docker's profile knows;
//! - `io_uring_setup` (`EPERM`): a ring's operations do not pass through seccomp, and its
//!   kernel threads count as the job's tasks;
//! - `prctl(PR_SET_DUMPABLE, ..)` (`EPERM`): a dumpable worker could be dumped by a core helper
//!   that runs as root;
//! - a new `RLIMIT_CPU` (`setrlimit`, `prlimit64` with a new value: `EPERM`): the job's CPU
//!   limits are the host's, and a guest killed by a limit it set itself would look killed from
//!   outside;
//! - sockets of any family but `AF_UNIX`, `AF_INET` and `AF_INET6` (`EAFNOSUPPORT`): netlink,
//!   packet, vsock (the hypervisor) and the rest are not scoped by the network namespace or
//!   Landlock; the i386 `socketcall` multiplexer, whose arguments are in memory no filter reads,
//!   is refused whole (`EPERM`; the direct i386 `socket` is checked);
//! - queueing a signal with details of the guest's choosing (`rt_sigqueueinfo`,
//!   `rt_tgsigqueueinfo`, `pidfd_send_signal` with a siginfo: `EPERM`), and `fcntl(F_SETSIG)`
//!   (`EPERM`), which makes I/O readiness raise any signal with a positive `si_code`: a
//!   signal such as a forged SIGSEGV, pending when a real fault comes, would be delivered at
//!   the fault with the guest's `si_addr`, and the report would show it as the kernel's. Plain
//!   `kill`, `tgkill` and `pidfd_send_signal` without a siginfo stay: the kernel marks what
//!   they send as sent by a process;
//! - where the job may have processes (`Limits::max_procs` above 1): `clone` with an exit
//!   signal other than SIGCHLD (`EINVAL`), whose arrival the worker cannot tell from a fault or
//!   a trap of its own, and `clone3` (`ENOSYS`, as Docker's profile answers it: glibc then
//!   uses `clone`), whose exit signal is in memory no filter reads;
//! - a file mode with the set-user-ID or set-group-ID bit (`chmod`, `fchmod`, `fchmodat`,
//!   `fchmodat2`, `open`, `openat`, `creat`, `mknod`, `mknodat`: `EPERM`; `openat2`, whose mode
//!   is in memory: `ENOSYS`): a file a guest leaves in a writable grant must not be a set-id
//!   program of the host's user on the host's disk.

use crate::policy::bpf::{Assembler, Dest, Insn, Label, BPF_JEQ_K};
use crate::policy::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
/// `S_ISUID | S_ISGID`.
const SET_ID_BITS: u32 = 0o6000;
/// `fcntl`'s command that picks the signal I/O readiness raises (not in every libc).
const F_SETSIG: u32 = 10;

const fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}

/// Offsets in `struct seccomp_data`: nr, arch, and the low half of `args[0]` (the calls checked
/// here take an `int` there, so the kernel reads only those 32 bits).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;
const ARG1_LOW: u32 = 24;
const ARG2_LOW: u32 = 32;
const ARG2_HIGH: u32 = 36;
const ARG3_LOW: u32 = 40;

/// Syscall numbers of one ABI that the filter looks at.
struct Numbers {
    new_tasks: [u32; 4],
    keys: [u32; 3],
    io_uring_setup: u32,
    prctl: u32,
    socket: u32,
    socketcall: Option<u32>,
    setrlimit: u32,
    prlimit64: u32,
    /// `rt_sigqueueinfo`, `rt_tgsigqueueinfo` (x86_64 numbers, then x32's own).
    queue_signal: &'static [u32],
    clone: u32,
    clone3: u32,
    pidfd_send_signal: u32,
    fcntl: &'static [u32],
    /// Calls whose mode argument (at index 1, 2, 3) could set a file's set-user-ID or
    /// set-group-ID bit: `chmod`, `fchmod`, `creat`, `mknod`; `fchmodat`, `fchmodat2`,
    /// `mknodat`, `open`; `openat`.
    mode_at: [&'static [u32]; 3],
    openat2: u32,
}

const X86_64: Numbers = Numbers {
    new_tasks: [56, 57, 58, 435], // clone, fork, vfork, clone3
    keys: [248, 249, 250],        // add_key, request_key, keyctl
    io_uring_setup: 425,
    prctl: 157,
    socket: 41,
    socketcall: None,
    setrlimit: 160,
    prlimit64: 302,
    queue_signal: &[129, 297, 524, 536],
    pidfd_send_signal: 424,
    fcntl: &[72],
    mode_at: [&[90, 91, 85, 133], &[268, 452, 259, 2], &[257]],
    openat2: 437,
    clone: 56,
    clone3: 435,
};

const I386: Numbers = Numbers {
    new_tasks: [120, 2, 190, 435],
    keys: [286, 287, 288],
    io_uring_setup: 425,
    prctl: 172,
    socket: 359,
    socketcall: Some(102),
    setrlimit: 75,
    prlimit64: 340,
    queue_signal: &[178, 335],
    pidfd_send_signal: 424,
    fcntl: &[55, 221], // fcntl, fcntl64
    mode_at: [&[15, 94, 8, 14], &[306, 452, 297, 5], &[295]],
    openat2: 437,
    clone: 120,
    clone3: 435,
};

/// The socket families a profile guest may create.
const FAMILIES: [u32; 3] = [
    libc::AF_UNIX as u32,
    libc::AF_INET as u32,
    libc::AF_INET6 as u32,
];

/// The program, with the new-task rule when `deny_new_tasks`.
pub(crate) fn program(deny_new_tasks: bool) -> Vec<Insn> {
    let mut a = Assembler::default();
    let allow = a.label();
    let eagain = a.label();
    let eperm = a.label();
    let i386 = a.label();
    // Shared by both ABIs but for the pointer checks (an i386 pointer is 32 bits).
    let common = Labels {
        eagain,
        eperm,
        enosys: a.label(),
        prctl: a.label(),
        socket: a.label(),
        setrlimit: a.label(),
        prlimit: a.label(),
        arg2: a.label(),
        fcntl: a.label(),
        clone: a.label(),
        mode: [a.label(), a.label(), a.label()],
    };
    let ia32 = Labels {
        prlimit: a.label(),
        arg2: a.label(),
        ..common
    };
    let x86 = common;

    a.load(ARCH);
    a.jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, Dest::Next, Dest::To(i386));
    a.load(NR);
    // x32 numbers are the x86_64 ones with a high bit: decided alike.
    a.stmt(crate::policy::bpf::BPF_ALU_AND_K, !X32_SYSCALL_BIT);
    abi_rules(&mut a, &X86_64, deny_new_tasks, &x86);
    a.ret(ALLOW);

    a.bind(i386);
    a.jump(BPF_JEQ_K, AUDIT_ARCH_I386, Dest::Next, Dest::To(allow));
    a.load(NR);
    abi_rules(&mut a, &I386, deny_new_tasks, &ia32);
    a.ret(ALLOW);

    a.bind(x86.prctl);
    a.load(ARG0_LOW);
    a.jump(
        BPF_JEQ_K,
        libc::PR_SET_DUMPABLE as u32,
        Dest::To(eperm),
        Dest::To(allow),
    );

    // clone(flags, ..) with an exit signal other than SIGCHLD: the worker would get that
    // signal (SIGSYS, say) with a `si_code` and fields the child chose by its exit.
    a.bind(x86.clone);
    a.load(ARG0_LOW);
    a.stmt(crate::policy::bpf::BPF_ALU_AND_K, 0xff);
    a.jump(BPF_JEQ_K, 0, Dest::To(allow), Dest::Next);
    a.jump(BPF_JEQ_K, libc::SIGCHLD as u32, Dest::To(allow), Dest::Next);
    a.ret(errno(libc::EINVAL));
    a.bind(x86.enosys);
    a.ret(errno(libc::ENOSYS));

    a.bind(x86.setrlimit);
    a.load(ARG0_LOW);
    a.jump(
        BPF_JEQ_K,
        libc::RLIMIT_CPU,
        Dest::To(eperm),
        Dest::To(allow),
    );

    // prlimit64(pid, resource, new, old): RLIMIT_CPU with a new value. An i386 pointer is the
    // low half of its register only. `pidfd_send_signal(pidfd, sig, info, flags)` goes
    // straight to the third argument.
    a.bind(x86.prlimit);
    a.load(ARG1_LOW);
    a.jump(BPF_JEQ_K, libc::RLIMIT_CPU, Dest::Next, Dest::To(allow));
    a.bind(x86.arg2);
    a.load(ARG2_HIGH);
    a.jump(BPF_JEQ_K, 0, Dest::Next, Dest::To(eperm));
    a.load(ARG2_LOW);
    a.jump(BPF_JEQ_K, 0, Dest::To(allow), Dest::To(eperm));
    a.bind(ia32.prlimit);
    a.load(ARG1_LOW);
    a.jump(BPF_JEQ_K, libc::RLIMIT_CPU, Dest::Next, Dest::To(allow));
    a.bind(ia32.arg2);
    a.load(ARG2_LOW);
    a.jump(BPF_JEQ_K, 0, Dest::To(allow), Dest::To(eperm));

    // A mode with the set-user-ID or set-group-ID bit: a file a guest leaves in a writable
    // grant would be a set-id program of the host's user on the host's disk. The mode is a
    // `umode_t`: the low half of its register.
    for (check, at) in x86.mode.into_iter().zip([ARG1_LOW, ARG2_LOW, ARG3_LOW]) {
        a.bind(check);
        a.load(at);
        a.stmt(crate::policy::bpf::BPF_ALU_AND_K, SET_ID_BITS);
        a.jump(BPF_JEQ_K, 0, Dest::To(allow), Dest::To(eperm));
    }

    // fcntl(fd, cmd, ..): the command is an int.
    a.bind(x86.fcntl);
    a.load(ARG1_LOW);
    a.jump(BPF_JEQ_K, F_SETSIG, Dest::To(eperm), Dest::To(allow));

    a.bind(x86.socket);
    a.load(ARG0_LOW);
    for family in FAMILIES {
        a.jump(BPF_JEQ_K, family, Dest::To(allow), Dest::Next);
    }
    a.ret(errno(libc::EAFNOSUPPORT));

    a.bind(allow);
    a.ret(ALLOW);
    a.bind(eagain);
    a.ret(errno(libc::EAGAIN));
    a.bind(eperm);
    a.ret(errno(libc::EPERM));
    // A fixed program of a few dozen instructions: its jumps always fit.
    a.finish().expect("the walls filter assembles")
}

/// Where one ABI's rules jump to.
#[derive(Clone, Copy)]
struct Labels {
    eagain: Label,
    eperm: Label,
    enosys: Label,
    prctl: Label,
    socket: Label,
    setrlimit: Label,
    prlimit: Label,
    arg2: Label,
    fcntl: Label,
    clone: Label,
    /// Checks of the mode argument at index 1, 2, 3.
    mode: [Label; 3],
}

/// One ABI's checks on the syscall number in A; falls through when none matches.
fn abi_rules(a: &mut Assembler, n: &Numbers, deny_new_tasks: bool, l: &Labels) {
    if deny_new_tasks {
        for nr in n.new_tasks {
            a.jump(BPF_JEQ_K, nr, Dest::To(l.eagain), Dest::Next);
        }
    } else {
        // clone3's exit signal is in memory, where no filter looks: glibc falls back to clone.
        a.jump(BPF_JEQ_K, n.clone3, Dest::To(l.enosys), Dest::Next);
        a.jump(BPF_JEQ_K, n.clone, Dest::To(l.clone), Dest::Next);
    }
    for nr in n
        .keys
        .into_iter()
        .chain([n.io_uring_setup])
        .chain(n.socketcall)
        .chain(n.queue_signal.iter().copied())
    {
        a.jump(BPF_JEQ_K, nr, Dest::To(l.eperm), Dest::Next);
    }
    a.jump(BPF_JEQ_K, n.prctl, Dest::To(l.prctl), Dest::Next);
    a.jump(BPF_JEQ_K, n.socket, Dest::To(l.socket), Dest::Next);
    a.jump(BPF_JEQ_K, n.setrlimit, Dest::To(l.setrlimit), Dest::Next);
    a.jump(BPF_JEQ_K, n.prlimit64, Dest::To(l.prlimit), Dest::Next);
    a.jump(BPF_JEQ_K, n.pidfd_send_signal, Dest::To(l.arg2), Dest::Next);
    for (numbers, check) in n.mode_at.iter().zip(l.mode) {
        for &nr in *numbers {
            a.jump(BPF_JEQ_K, nr, Dest::To(check), Dest::Next);
        }
    }
    // openat2's mode is in memory, where no filter looks: glibc's open does not use it.
    a.jump(BPF_JEQ_K, n.openat2, Dest::To(l.enosys), Dest::Next);
    for &nr in n.fcntl {
        a.jump(BPF_JEQ_K, nr, Dest::To(l.fcntl), Dest::Next);
    }
}

/// The two programs, assembled once.
pub(crate) fn cached(deny_new_tasks: bool) -> &'static [Insn] {
    static PROGRAMS: std::sync::OnceLock<[Vec<Insn>; 2]> = std::sync::OnceLock::new();
    &PROGRAMS.get_or_init(|| [program(false), program(true)])[deny_new_tasks as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::interp::{run, SeccompData};

    fn decide(deny: bool, arch: u32, nr: u32, arg0: u64) -> u32 {
        decide_args(deny, arch, nr, [arg0, 0, 0, 0, 0, 0])
    }

    fn decide_args(deny: bool, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        run(&program(deny), &SeccompData::new(arch, nr, args)).expect("the program returns")
    }

    #[test]
    fn decides_what_its_doc_says() {
        const X64: u32 = AUDIT_ARCH_X86_64;
        const X32: u32 = X32_SYSCALL_BIT;
        for deny in [false, true] {
            let tasks = if deny { errno(libc::EAGAIN) } else { ALLOW };
            for nr in [56, 57, 58, 56 | X32] {
                assert_eq!(decide(deny, X64, nr, 0), tasks, "x86_64 {nr:#x}");
            }
            for nr in [120, 2, 190] {
                assert_eq!(decide(deny, AUDIT_ARCH_I386, nr, 0), tasks, "i386 {nr}");
            }
            // clone3 keeps its exit signal in memory: ENOSYS (glibc falls back to clone).
            let clone3 = if deny {
                errno(libc::EAGAIN)
            } else {
                errno(libc::ENOSYS)
            };
            for (arch, nr) in [(X64, 435), (X64, 435 | X32), (AUDIT_ARCH_I386, 435)] {
                assert_eq!(decide(deny, arch, nr, 0), clone3, "clone3 {nr:#x}");
            }
            // clone: SIGCHLD or no exit signal, whatever the other flags.
            for (arch, nr) in [(X64, 56), (AUDIT_ARCH_I386, 120)] {
                for (flags, expect) in [
                    (17, tasks),
                    (0x0001_0f00, tasks),
                    (0x0100_0011, tasks),
                    (31, if deny { tasks } else { errno(libc::EINVAL) }),
                    (0x0100_001f, if deny { tasks } else { errno(libc::EINVAL) }),
                ] {
                    assert_eq!(decide(deny, arch, nr, flags), expect, "clone {flags:#x}");
                }
            }
            let eperm = errno(libc::EPERM);
            // x32's own numbers for queueing a signal.
            for nr in [524 | X32, 536 | X32] {
                assert_eq!(decide(deny, X64, nr, 1), eperm, "{nr:#x}");
            }
            for (arch, nr) in [
                (X64, 248),
                (X64, 250 | X32),
                (X64, 425),
                (AUDIT_ARCH_I386, 288),
            ] {
                assert_eq!(
                    decide(deny, arch, nr, 0),
                    errno(libc::EPERM),
                    "{arch:#x} {nr:#x}"
                );
            }
            assert_eq!(decide(deny, AUDIT_ARCH_I386, 102, 1), errno(libc::EPERM));
            // prctl: only PR_SET_DUMPABLE, whatever the high half says.
            assert_eq!(decide(deny, X64, 157, 4), errno(libc::EPERM));
            assert_eq!(decide(deny, X64, 157, 4 | 1 << 32), errno(libc::EPERM));
            assert_eq!(decide(deny, X64, 157, 15), ALLOW); // PR_SET_NAME
            assert_eq!(decide(deny, AUDIT_ARCH_I386, 172, 4), errno(libc::EPERM));
            // socket: three families, on the low 32 bits.
            for family in [1, 2, 10, 1 | 1 << 32] {
                assert_eq!(decide(deny, X64, 41, family), ALLOW, "family {family:#x}");
                assert_eq!(decide(deny, AUDIT_ARCH_I386, 359, family), ALLOW);
            }
            for family in [16, 17, 38, 40] {
                assert_eq!(decide(deny, X64, 41, family), errno(libc::EAFNOSUPPORT));
            }
            // Signals with details of the guest's choosing.
            for (arch, nr) in [
                (X64, 129),
                (X64, 297),
                (X64, 297 | X32),
                (AUDIT_ARCH_I386, 178),
                (AUDIT_ARCH_I386, 335),
            ] {
                assert_eq!(decide(deny, arch, nr, 1), errno(libc::EPERM), "{nr}");
            }
            for arch in [X64, AUDIT_ARCH_I386] {
                let send = |info| decide_args(deny, arch, 424, [3, 11, info, 0, 0, 0]);
                assert_eq!(send(0), ALLOW);
                assert_eq!(send(0x1000), errno(libc::EPERM));
            }
            assert_eq!(
                decide_args(deny, X64, 424, [3, 11, 1 << 32, 0, 0, 0]),
                errno(libc::EPERM)
            );
            for (arch, nr) in [(X64, 72), (AUDIT_ARCH_I386, 55), (AUDIT_ARCH_I386, 221)] {
                let fcntl = |cmd| decide_args(deny, arch, nr, [1, cmd, 11, 0, 0, 0]);
                assert_eq!(fcntl(10), errno(libc::EPERM), "F_SETSIG {nr}");
                assert_eq!(fcntl(4), ALLOW, "F_SETFL {nr}");
            }
            for nr in [62, 200, 234] {
                assert_eq!(decide(deny, X64, nr, 1), ALLOW, "kill {nr}");
            }
            // Set-id modes: refused wherever the mode argument is, plain modes allowed.
            for (arch, nr, at) in [
                (X64, 90, 1),
                (X64, 91, 1),
                (X64, 85, 1),
                (X64, 133, 1),
                (X64, 268, 2),
                (X64, 452, 2),
                (X64, 259, 2),
                (X64, 2, 2),
                (X64, 257, 3),
                (X64, 257 | X32, 3),
                (AUDIT_ARCH_I386, 15, 1),
                (AUDIT_ARCH_I386, 5, 2),
                (AUDIT_ARCH_I386, 295, 3),
            ] {
                for (mode, expect) in [
                    (0o755, ALLOW),
                    (0o4755, errno(libc::EPERM)),
                    (0o2755, errno(libc::EPERM)),
                    (0o100644, ALLOW),
                ] {
                    let mut args = [0u64; 6];
                    args[at] = mode;
                    assert_eq!(decide_args(deny, arch, nr, args), expect, "{nr} {mode:o}");
                }
            }
            assert_eq!(decide(deny, X64, 437, 0), errno(libc::ENOSYS));
            // Everything else, and other architectures, is the profile's to decide.
            for nr in [0, 1, 39, 60, 231, 9, 10] {
                assert_eq!(decide(deny, X64, nr, 0), ALLOW, "{nr}");
            }
            assert_eq!(decide(deny, 0xdead, 57, 0), ALLOW);
            // RLIMIT_CPU (0): no new value; reading it, and other limits, stay allowed.
            let eperm = errno(libc::EPERM);
            assert_eq!(decide(deny, X64, 160, 0), eperm);
            assert_eq!(decide(deny, X64, 160, 1), ALLOW);
            assert_eq!(decide(deny, AUDIT_ARCH_I386, 75, 0), eperm);
            for (new, expect) in [(0, ALLOW), (0x1000, eperm), (1 << 32, eperm)] {
                assert_eq!(decide_args(deny, X64, 302, [0, 0, new, 0, 0, 0]), expect);
            }
            assert_eq!(decide_args(deny, X64, 302, [0, 9, 0x1000, 0, 0, 0]), ALLOW);
            // i386 pointers are 32 bits: a high half is not part of the call.
            for (new, expect) in [(0, ALLOW), (1 << 32, ALLOW), (0x1000, eperm)] {
                assert_eq!(
                    decide_args(deny, AUDIT_ARCH_I386, 340, [0, 0, new, 0, 0, 0]),
                    expect
                );
            }
        }
    }
}
