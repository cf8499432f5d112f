//! The tracer: what the kernel itself says about how a worker ended, for the details of a
//! report that a guest must not be able to forge.
//!
//! A worker's record page is the guest's to write, so a fault address or a trapped syscall
//! read from it is only a claim. A traced worker is `PTRACE_SEIZE`d before its setup goes on
//! (the worker waits at a gate in its data page, see [`crate::worker::layout::CTX_TRACE_GATE`]),
//! with `PTRACE_O_TRACEEXIT` and `PTRACE_O_EXITKILL`. The tracer then sees, from the kernel:
//! - every signal at its delivery (`PTRACE_GETSIGINFO` and the registers): a fault's address
//!   and instruction, a filter's trapped syscall and its arguments;
//! - the worker's exit, before its memory goes (`PTRACE_EVENT_EXIT`): the exit status, and for
//!   a strict-mode violation (the kernel's `do_exit(SIGKILL)` from the syscall entry) the
//!   syscall number in `orig_rax`, its six arguments and its ABI.
//!
//! ptrace requests must come from the thread that attached, and a stop is seen only by
//! `waitid`, which cannot wait on a pipe at the same time. So each traced worker gets a tracer
//! thread of its own for as long as it lives: threads wait in a global idle list between
//! workers, and a new one starts only when none is idle. The host's own poll loop is
//! unchanged: a stopped worker has not exited, and its tracer resumes it at once.
//!
//! A signal the guest sent itself (`kill`, `rt_sigqueueinfo`, which may carry any `si_code`
//! and `si_addr`) is delivered when that syscall returns, so its `orig_rax` is the syscall's
//! number; a fault raised by an instruction is delivered with `orig_rax` -1. That, `si_code`,
//! and which processes could have sent it (see [`crate::host`]'s classification) decide what
//! the report may call verified.
#![allow(unsafe_code)] // ptrace and waitid

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};

/// `PTRACE_EVENT_EXIT` and `PTRACE_EVENT_STOP` (group-stop and interrupt stops of a seized
/// tracee).
const PTRACE_EVENT_EXIT: i32 = 6;
const PTRACE_EVENT_STOP: i32 = 128;

/// The registers at a stop, as `PTRACE_GETREGS` gives them.
pub(crate) type Regs = libc::user_regs_struct;

/// A signal at its delivery to the worker.
#[derive(Clone, Copy)]
pub(crate) struct SignalStop {
    pub signo: i32,
    pub code: i32,
    /// `si_addr` (faults), or `si_call_addr` (SIGSYS).
    pub addr: u64,
    /// SIGSYS only: `si_syscall` and `si_arch`.
    pub syscall: i32,
    pub arch: u32,
    pub regs: Regs,
    /// The tracer ended the worker for this signal with SIGKILL (see [`seize`]'s `init`): the
    /// worker's wait status says SIGKILL, and this signal is what it died of.
    pub ended_by_tracer: bool,
}

/// The worker's exit, seen before its memory and descriptors go.
#[derive(Clone, Copy)]
pub(crate) struct ExitStop {
    /// The wait status it is about to report (`PTRACE_GETEVENTMSG`).
    pub status: i32,
    pub regs: Regs,
    /// The syscall entry it was in (`AUDIT_ARCH_X86_64` or `AUDIT_ARCH_I386`), from
    /// `PTRACE_GET_SYSCALL_INFO`; 0 when the kernel did not say.
    pub arch: u32,
}

/// What the tracer saw of one worker since the last [`Trace::take`].
#[derive(Clone, Copy, Default)]
pub(crate) struct Facts {
    /// The last fault-like signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS) delivered.
    pub signal: Option<SignalStop>,
    pub exit: Option<ExitStop>,
}

/// A traced worker: its tracer writes here, the host reads once the worker has ended.
pub(crate) struct Trace {
    facts: Arc<Mutex<Facts>>,
}

impl Trace {
    /// What the tracer saw so far, leaving nothing behind (a same-code worker's next input
    /// starts with no facts). Complete once the worker has exited: the tracer records each
    /// stop before it resumes the worker.
    pub(crate) fn take(&self) -> Facts {
        std::mem::take(&mut *self.facts.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trace")
    }
}

/// One worker for a tracer thread: seize `pid`, say how that went on `reply`, then follow it.
struct Job {
    pid: libc::pid_t,
    init: bool,
    pidfd: OwnedFd,
    facts: Arc<Mutex<Facts>>,
    reply: mpsc::SyncSender<io::Result<()>>,
}

/// Tracer threads waiting for a worker.
static IDLE: Mutex<Vec<mpsc::Sender<Job>>> = Mutex::new(Vec::new());

/// Seizes the worker `pid` (whose pidfd is `pidfd`) in a tracer thread. The worker must be
/// held at its gate until this returns.
///
/// `init`: the worker is init of its own PID namespace. The kernel then lets a traced worker
/// survive a fault or a filter's trap whose action is the default (it clears init's
/// protection against signals only for untraced processes), so the tracer ends it with
/// SIGKILL at that signal's delivery instead, and says so ([`SignalStop::ended_by_tracer`]).
pub(crate) fn seize(pid: libc::pid_t, pidfd: &OwnedFd, init: bool) -> io::Result<Trace> {
    let facts = Arc::new(Mutex::new(Facts::default()));
    let (reply, replied) = mpsc::sync_channel(1);
    let mut job = Job {
        pid,
        init,
        pidfd: pidfd.try_clone()?,
        facts: Arc::clone(&facts),
        reply,
    };
    loop {
        let idle = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let tracer = match idle {
            Some(tracer) => tracer,
            None => start_tracer()?,
        };
        match tracer.send(job) {
            Ok(()) => break,
            // That thread is gone (it cannot be, short of a panic): try another.
            Err(mpsc::SendError(back)) => job = back,
        }
    }
    match replied.recv() {
        Ok(Ok(())) => Ok(Trace { facts }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::other("the tracer thread ended")),
    }
}

fn start_tracer() -> io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let me = tx.clone();
    std::thread::Builder::new()
        .name("bytejail-tracer".into())
        .stack_size(128 << 10)
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let seized = seize_here(job.pid);
                let ok = seized.is_ok();
                let _ = job.reply.send(seized);
                if ok {
                    follow(&job);
                }
                drop(job);
                IDLE.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(me.clone());
            }
        })?;
    Ok(tx)
}

fn seize_here(pid: libc::pid_t) -> io::Result<()> {
    let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL;
    // SAFETY: PTRACE_SEIZE takes no pointers; `data` is the options word.
    let ret = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, options as usize) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Follows a seized worker until it has exited (not reaped: its parent reaps it), recording
/// each stop that tells something and resuming the worker at once.
fn follow(job: &Job) {
    let (pid, pidfd, facts) = (job.pid, &job.pidfd, &*job.facts);
    loop {
        // SAFETY: siginfo_t is plain old data; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT | libc::__WALL;
        // SAFETY: a valid pidfd and a pointer to a local siginfo_t.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        if ret < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return; // reaped already (ECHILD): nothing left to follow
        }
        if info.si_code != libc::CLD_TRAPPED {
            if info.si_code == libc::CLD_STOPPED {
                resume(pid, 0);
                continue;
            }
            return; // exited, killed or dumped: the parent reaps it
        }
        // SAFETY: for CLD_TRAPPED the kernel filled si_status.
        let status = unsafe { info.si_status() };
        let (signo, event) = (status & 0xff, (status >> 8) & 0xff);
        match event {
            0 => {
                let mut delivered = signal_stop(pid, signo);
                let end = job.init && delivered.is_some() && !caught(pid, signo);
                if let Some(stop) = &mut delivered {
                    stop.ended_by_tracer = end;
                    lock(facts).signal = Some(*stop);
                }
                if end {
                    // SAFETY: a signal to our own pidfd's process; no pointers.
                    unsafe {
                        libc::syscall(
                            libc::SYS_pidfd_send_signal,
                            pidfd.as_raw_fd(),
                            libc::SIGKILL,
                            0usize,
                            0u32,
                        )
                    };
                }
                // Deliver the signal as the guest (or the kernel) raised it.
                resume(pid, signo);
            }
            PTRACE_EVENT_EXIT => {
                if let Some(stop) = exit_stop(pid) {
                    lock(facts).exit = Some(stop);
                }
                resume(pid, 0);
            }
            PTRACE_EVENT_STOP => resume(pid, 0),
            _ => resume(pid, 0),
        }
    }
}

/// Whether the worker has a handler of its own for `signo` (`SigCgt` in its status): then
/// the signal is the guest's business, not its end.
fn caught(pid: libc::pid_t, signo: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (signo - 1)) != 0)
}

fn lock(facts: &Mutex<Facts>) -> std::sync::MutexGuard<'_, Facts> {
    facts.lock().unwrap_or_else(|e| e.into_inner())
}

fn resume(pid: libc::pid_t, signo: i32) {
    // SAFETY: PTRACE_CONT takes no pointers; a worker killed meanwhile gives ESRCH, harmless.
    unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0usize, signo as usize) };
}

fn regs(pid: libc::pid_t) -> Option<Regs> {
    // SAFETY: user_regs_struct is plain old data; the kernel fills it.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    // SAFETY: a pointer to a local of the size PTRACE_GETREGS writes.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            pid,
            0usize,
            &mut regs as *mut Regs as usize,
        )
    };
    (ret == 0).then_some(regs)
}

const FAULT_LIKE: [i32; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

fn signal_stop(pid: libc::pid_t, signo: i32) -> Option<SignalStop> {
    if !FAULT_LIKE.contains(&signo) {
        return None;
    }
    // SAFETY: siginfo_t is plain old data; the kernel fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: a pointer to a local siginfo_t.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            pid,
            0usize,
            &mut info as *mut libc::siginfo_t as usize,
        )
    };
    if ret != 0 {
        return None;
    }
    // The union after si_signo, si_errno, si_code (and padding) starts at byte 16: si_addr or
    // si_call_addr there, then for SIGSYS si_syscall (int) and si_arch (unsigned int).
    // SAFETY: siginfo_t is 128 bytes of plain old data.
    let raw: [u8; 128] = unsafe { std::mem::transmute(info) };
    let u64_at = |at: usize| u64::from_ne_bytes(raw[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_ne_bytes(raw[at..at + 4].try_into().unwrap_or([0; 4]));
    Some(SignalStop {
        signo: info.si_signo,
        code: info.si_code,
        addr: u64_at(16),
        syscall: u32_at(24) as i32,
        arch: u32_at(28),
        regs: regs(pid)?,
        ended_by_tracer: false,
    })
}

fn exit_stop(pid: libc::pid_t) -> Option<ExitStop> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: a pointer to a local c_ulong.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            pid,
            0usize,
            &mut msg as *mut libc::c_ulong as usize,
        )
    };
    if ret != 0 {
        return None;
    }
    // struct ptrace_syscall_info: op (u8), pad, arch (u32) at byte 4, ...
    let mut info = [0u8; 128];
    // SAFETY: the kernel writes at most `addr` (the buffer's length) bytes.
    let got = unsafe {
        libc::ptrace(
            libc::PTRACE_GET_SYSCALL_INFO,
            pid,
            info.len(),
            info.as_mut_ptr() as usize,
        )
    };
    let arch = if got >= 8 {
        u32::from_ne_bytes([info[4], info[5], info[6], info[7]])
    } else {
        0
    };
    Some(ExitStop {
        status: msg as i32,
        regs: regs(pid)?,
        arch,
    })
}
