//! The zygote: a small process, forked from the host early, that forks the workers.
//!
//! Forking copies the forking process's page tables and walks its mappings while holding its
//! mmap lock, so a fresh worker costs more the larger the host grows (about 30 µs per MiB of
//! touched 4 KiB pages here), and every page fault of every other host thread waits for the
//! fork. A zygote is forked once, while the host is still small, and from then on forks each
//! worker from its own small address space: the cost of a worker no longer depends on the
//! host, and the host's mmap lock is never held for it. Call [`Zygote::start`] early, before
//! the host allocates much.
//!
//! The host still prepares everything (arena, pipes, the `WorkerPlan`) and sends the plan with
//! the arena's memfd and the worker's two pipe ends over a `SOCK_SEQPACKET` socket; the zygote
//! unmaps its own stale copy of the arena's window (the host reserved it after the zygote was
//! forked), forks with `CLONE_PARENT`, and the child runs the same worker setup as a worker
//! forked by the host (`runner/worker/`). `CLONE_PARENT` makes the worker the host's child,
//! not the zygote's: the host waits for it, polls its pidfd and kills it exactly as before,
//! and its exit signal (copied from the zygote's) is 0, so the host's SIGCHLD handling never
//! sees it.
//!
//! What a worker inherits is the zygote's memory: right after its fork the zygote unmaps all of
//! its copy of the host but the file-backed mappings (code and data of the binary and its
//! libraries), the vDSO pages and its own stack (`KeepList`), so a fork copies little and a
//! worker has little to scrub. A worker run with `scrub: false` can read what is left, as the
//! host had it at [`Zygote::start`], and nothing the host allocated or wrote afterwards.
//!
//! A zygote serves one fork at a time. Threads that start many workers at once each do better
//! with a zygote of their own (`bytejail batch` starts one per job thread): zygotes are separate
//! processes, and they fork in parallel.
//!
//! Lifetime: `PR_SET_PDEATHSIG` fires when the *thread* that forked a process exits. The zygote
//! and (through `CLONE_PARENT`) every worker it forks are children of one owner thread, which
//! lives until the last [`Zygote`] handle is dropped, then kills and reaps the zygote. Workers
//! forked through a zygote must be reaped before its last handle goes: a job borrows or clones
//! the handle for its whole run. The host being killed ends the owner thread, so the zygote and
//! every worker die with it.
//!
//! Like the worker path, the zygote's side runs in a fork of a multi-threaded host: raw
//! syscalls only, on data built before the fork; no allocation, lock, print or unwinding.
#![allow(unsafe_code)] // The zygote's post-fork loop is raw syscalls, as in `worker`.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::Error;
use crate::sys::{self, raw, Forked, RseqRegistration, SharedFile};
use crate::worker::protocol::{self, Received, Reply};
use crate::worker::{self, stages, WorkerPlan};

/// A started zygote: a cheap handle ([`Clone`]) to one zygote process, shared by every thread
/// that runs jobs through it. The zygote ends when the last handle is dropped.
///
/// # Threads
///
/// `PR_SET_PDEATHSIG` kills a process when the *thread* that forked it exits, so the zygote
/// (and every worker it forks) is tied to one thread: not the caller's, but an owner thread
/// that [`Zygote::start`] spawns for it and that lives until the last handle is dropped. The
/// handle itself is `Send + Sync`; the zygote serves one fork at a time, so threads that start
/// many workers at once do better with a zygote each.
///
/// ```no_run
/// // Early, before the host grows:
/// let zygote = bytejail::Zygote::start().unwrap();
/// // ... later, from any thread:
/// let code = [0xb0, 42, 0xc3]; // mov al, 42; ret
/// let report = zygote.run(&code, b"", &bytejail::RunOptions::default()).unwrap();
/// assert_eq!(report.outcome.kind(), "returned");
/// ```
#[derive(Clone)]
pub struct Zygote {
    inner: Arc<Inner>,
}

struct Inner {
    pid: libc::pid_t,
    /// The zygote's pidfd, readable once it has ended (see [`Zygote::has_ended`]); `None` if
    /// the kernel gave none.
    pidfd: Option<OwnedFd>,
    /// The host process: the zygote and its owner thread are its own (see [`sys::Owner`]).
    host: sys::Owner,
    channel: Mutex<Channel>,
    /// Dropped (with the last handle) to tell the owner thread to end the zygote.
    shutdown: Option<mpsc::Sender<()>>,
    owner: Option<JoinHandle<()>>,
}

/// The host's end of the request socket; one request at a time.
struct Channel {
    socket: OwnedFd,
    /// One word where the kernel writes the pid of each worker the zygote forks
    /// (`CLONE_PARENT_SETTID`) before the worker runs: if the zygote dies before it replies,
    /// the host still knows which child to reap. Never inherited by a worker: `MADV_DONTFORK`
    /// here and in the zygote.
    forked: SharedFile,
}

/// What the zygote needs, built by the owner thread before the fork.
struct Boot {
    host_pid: libc::pid_t,
    socket: RawFd,
    /// The memfd behind [`Channel::forked`] and the host's address for it, where the zygote
    /// maps it too (no host reservation can cover a range the host has mapped).
    forked_fd: RawFd,
    forked_addr: usize,
    /// The owner thread's rseq registration, which the zygote and its workers inherit.
    rseq: Option<RseqRegistration>,
    /// What the zygote keeps of the host's address space; it unmaps the rest.
    keep: KeepList,
    /// The host's shared empty network namespace ([`sys::empty_netns`]), -1 for none.
    netns_fd: RawFd,
}

/// The most address ranges a [`KeepList`] holds.
const MAX_KEPT: usize = 256;

/// Address ranges (sorted, start and end) the zygote keeps: every file-backed mapping and the
/// zero-filled rest of each loaded segment (the code and data of the binary and its libraries,
/// with their `.bss`, where the zygote's and the worker's set-up code runs), the kernel's
/// special pages, and the owner thread's stack, on a copy of which the zygote runs. The rest
/// (heaps, other threads' stacks, anonymous memory) is a copy of the host no worker needs: the
/// zygote unmaps it, so each fork copies little, a worker has little to scrub, and an
/// unscrubbed worker sees little of the host. Empty: keep everything.
///
/// A segment's `.bss` past its file's last page is an anonymous mapping in `/proc/self/maps`,
/// told from other anonymous memory by the program headers ([`loaded_segments`]). In a
/// statically linked `bytejail` that is 24 KiB of variables, the C library's and bytejail's
/// own mixed: a worker whose set-up code read one of them there would crash.
#[derive(Clone, Copy)]
struct KeepList {
    ranges: [(usize, usize); MAX_KEPT],
    len: usize,
    /// The end of the user address space.
    user_end: usize,
}

/// The room [`KeepList::of_this_process`] reads `/proc/self/maps` into at first.
const MAPS_ROOM: usize = 32 << 10;

impl KeepList {
    /// Reads `/proc/self/maps` (in the owner thread, before the fork). `stack` is an address
    /// on the owner thread's stack. Anything unexpected gives the empty list.
    fn of_this_process(stack: usize) -> KeepList {
        let mut keep = KeepList {
            ranges: [(0, 0); MAX_KEPT],
            len: 0,
            user_end: sys::user_address_space_end(),
        };
        // Into room for a few hundred lines at once: the file's size reads as 0, and with no
        // room to start from, reading it would take 32 bytes first and twice as many each time
        // after (a dozen reads, each made by the kernel from the process's mappings).
        let mut maps = String::with_capacity(MAPS_ROOM);
        let read = std::fs::File::open("/proc/self/maps")
            .and_then(|mut file| std::io::Read::read_to_string(&mut file, &mut maps));
        if read.is_err() {
            return keep;
        }
        let segments = loaded_segments();
        let in_a_segment = |start: usize, end: usize| {
            segments
                .iter()
                .any(|&(from, to)| from <= start && end <= to)
        };
        let mut ranges = Vec::new();
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let Some((start, end)) = fields.next().and_then(|r| r.split_once('-')) else {
                return keep;
            };
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                return keep;
            };
            let path = fields.nth(4).unwrap_or("");
            let special = matches!(path, "[vdso]" | "[vvar]" | "[vvar_vclock]");
            let keep_it = path.starts_with('/')
                || special
                || (start..end).contains(&stack)
                || (path.is_empty() && in_a_segment(start, end));
            if keep_it {
                // Coalesce with the previous range when they touch.
                match ranges.last_mut() {
                    Some((_, last_end)) if *last_end == start => *last_end = end,
                    _ => ranges.push((start, end)),
                }
            }
        }
        if ranges.len() > MAX_KEPT || !ranges.iter().any(|r| (r.0..r.1).contains(&stack)) {
            return keep;
        }
        keep.ranges[..ranges.len()].copy_from_slice(&ranges);
        keep.len = ranges.len();
        keep
    }
}

/// The page-aligned address ranges of every loadable segment (`PT_LOAD`) of the binary and
/// the libraries loaded now, `.bss` included (a segment's memory size, not its file size).
fn loaded_segments() -> Vec<(usize, usize)> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `dl_iterate_phdr` passes a valid `info` whose `dlpi_phdr` holds
        // `dlpi_phnum` headers, and `data` is the vector passed below.
        unsafe {
            let info = &*info;
            let segments = &mut *data.cast::<Vec<(usize, usize)>>();
            if info.dlpi_phdr.is_null() {
                return 0;
            }
            let headers = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            for header in headers.iter().filter(|h| h.p_type == libc::PT_LOAD) {
                let start = (info.dlpi_addr as usize).wrapping_add(header.p_vaddr as usize);
                let end = start.wrapping_add(header.p_memsz as usize);
                if end > start {
                    segments.push((start & !4095, crate::arena::round_up(end)));
                }
            }
        }
        0
    }
    let mut segments: Vec<(usize, usize)> = Vec::new();
    // SAFETY: `each` only reads the headers it is given and pushes onto `segments`, which
    // outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut segments as *mut Vec<_>).cast()) };
    segments
}

impl Zygote {
    /// Forks the zygote from a new owner thread (`bytejail-zygote`) and waits until it is
    /// ready. Call it early: the zygote holds a copy of the host as it is now.
    pub fn start() -> Result<Zygote, Error> {
        let fail = |e| Error::io("starting the zygote", e);
        let (host_end, zygote_end) = sys::seqpacket_pair().map_err(fail)?;
        let mut forked = SharedFile::new(4096).map_err(fail)?;
        forked.write_u64(0, 0);
        let boot = Boot {
            host_pid: sys::getpid(),
            socket: zygote_end.as_raw_fd(),
            forked_fd: forked.fd(),
            forked_addr: forked.addr(),
            rseq: None,
            keep: KeepList {
                ranges: [(0, 0); MAX_KEPT],
                len: 0,
                user_end: 0,
            },
            netns_fd: sys::empty_netns().unwrap_or(-1),
        };
        let (started_tx, started_rx) = mpsc::channel();
        let (shutdown_tx, shutdown_rx) = mpsc::channel();
        let owner = std::thread::Builder::new()
            .name("bytejail-zygote".into())
            .spawn(move || own(boot, zygote_end, started_tx, shutdown_rx))
            .map_err(fail)?;
        let pid = match started_rx.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(e)) => {
                let _ = owner.join();
                return Err(fail(e));
            }
            Err(_) => {
                let _ = owner.join();
                return Err(fail(io::Error::other("the zygote's owner thread ended")));
            }
        };
        let socket = host_end.as_raw_fd();
        // From here on, dropping `zygote` ends the zygote.
        let zygote = Zygote {
            inner: Arc::new(Inner {
                pid,
                // Race-free: the zygote is this process's child, reaped only by its owner
                // thread when the last handle goes.
                pidfd: sys::pidfd_open(pid).ok(),
                host: sys::Owner::here(),
                channel: Mutex::new(Channel {
                    socket: host_end,
                    forked,
                }),
                shutdown: Some(shutdown_tx),
                owner: Some(owner),
            }),
        };
        let mut ready = [0u8; size_of::<Reply>()];
        match sys::recv(socket, &mut ready) {
            Ok(n) if n == ready.len() && Reply::from_ne_bytes(ready) == 0 => Ok(zygote),
            Ok(_) => Err(fail(io::Error::other("the zygote ended during its set-up"))),
            Err(e) => Err(fail(e)),
        }
    }

    /// The zygote's process id (a child of this process).
    pub fn pid(&self) -> u32 {
        self.inner.pid as u32
    }

    /// Whether the zygote has ended: something outside bytejail killed it (the OOM killer, an
    /// operator), as nothing of a job's can reach it. It then forks no more workers, and every
    /// job through it fails; start another. Workers it forked before live on (they are this
    /// process's children). [`crate::Pool`], `bytejail batch` and same-code sessions replace a
    /// zygote of theirs that has ended before they use it again.
    pub fn has_ended(&self) -> bool {
        let Some(pidfd) = &self.inner.pidfd else {
            return false;
        };
        sys::pidfd_ended(pidfd).unwrap_or(false)
    }

    /// Has the zygote fork a worker for `plan`, passing it `fds`: the arena's memfd and the
    /// worker's pipe ends in the plan's order (input, output, then the control pipes the plan
    /// has: go, done), which the caller keeps and closes, as after its own fork. Returns the
    /// worker's pid and a pidfd for it; the worker is this process's child (`CLONE_PARENT`)
    /// with exit signal 0, reaped only by the caller's [`sys::wait4`].
    pub(crate) fn spawn_worker(
        &self,
        plan: &WorkerPlan,
        fds: &[RawFd],
    ) -> io::Result<(libc::pid_t, OwnedFd)> {
        self.inner.host.check("the zygote")?;
        let mut channel = self.inner.channel.lock().unwrap_or_else(|e| e.into_inner());
        channel.forked.write_u64(0, 0);
        let socket = channel.socket.as_raw_fd();
        // A failed send delivered nothing: no worker was forked.
        protocol::send_fork_request(socket, plan, fds).map_err(gone)?;
        // A zygote that does not answer in time was stopped from outside (`SIGSTOP`, a
        // debugger) or starved: it is ended (and replaced by its users, see `has_ended`), and
        // this request fails as if it had died.
        if !sys::wait_readable(socket, sys::HELPER_ANSWER_WAIT).unwrap_or(true) {
            match &self.inner.pidfd {
                Some(pidfd) => sys::kill_and_wait(pidfd),
                // Its socket closes as it ends, which the read below waits for.
                None => {
                    let _ = sys::kill_child(self.inner.pid);
                }
            }
        }
        let pid = match protocol::recv_reply(socket) {
            Ok(Some(pid)) => pid,
            got => {
                // The zygote died mid-request. If it had forked the worker, the kernel wrote
                // its pid before the worker ran: kill and reap it, or it stays a zombie.
                let orphan = channel.forked.read_u64(0) as u32 as libc::pid_t;
                if orphan > 0 {
                    reap(orphan);
                }
                return Err(got.map_or_else(gone, |_| gone_error()));
            }
        };
        drop(channel);
        if pid < 0 {
            return Err(io::Error::from_raw_os_error(
                pid.unsigned_abs().min(4095) as i32
            ));
        }
        let pid = libc::pid_t::try_from(pid)
            .ok()
            .filter(|&pid| pid > 0)
            .ok_or_else(|| io::Error::other(format!("the zygote replied pid {pid}")))?;
        // Race-free: the worker is our unreaped child, so its pid is not reused.
        match sys::pidfd_open(pid) {
            Ok(pidfd) => Ok((pid, pidfd)),
            Err(e) => {
                reap(pid);
                Err(e)
            }
        }
    }
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote")
            .field("pid", &self.inner.pid)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.host.is_here() {
            // A forked copy: the owner thread (and the zygote's lifetime) is the host's.
            std::mem::forget(self.owner.take());
            return;
        }
        drop(self.shutdown.take());
        if let Some(owner) = self.owner.take() {
            let _ = owner.join();
        }
    }
}

/// Kills and reaps a child of ours that nobody else will reap.
fn reap(pid: libc::pid_t) {
    let _ = sys::kill_child(pid);
    let _ = sys::wait4(pid);
}

fn gone_error() -> io::Error {
    io::Error::other("the zygote is gone")
}

fn gone(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::EPIPE) | Some(libc::ECONNRESET) => gone_error(),
        _ => e,
    }
}

/// The owner thread: forks the zygote and lives until the last handle is dropped, because the
/// zygote and its workers die (PR_SET_PDEATHSIG) when this thread exits. Then kills and reaps
/// the zygote.
fn own(
    mut boot: Boot,
    zygote_end: OwnedFd,
    started: mpsc::Sender<io::Result<libc::pid_t>>,
    shutdown: mpsc::Receiver<()>,
) {
    // The zygote inherits this thread's registration, and so do its workers: the one they undo.
    boot.rseq = sys::rseq_registration();
    let here = 0u8;
    boot.keep = KeepList::of_this_process(std::ptr::addr_of!(here) as usize);
    // SAFETY: the child runs only `zygote_entry`: raw syscalls on `boot` (plain data on this
    // stack) and the descriptors it names; it never returns.
    let (pid, pidfd) = match unsafe { sys::clone_with_pidfd(0) } {
        Ok(Forked::Child) => zygote_entry(&boot),
        Ok(Forked::Parent { pid, pidfd }) => (pid, pidfd),
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    drop(zygote_end);
    let _ = started.send(Ok(pid));
    // Returns when the sender is dropped with the last handle.
    let _ = shutdown.recv();
    sys::end_child(pid, &pidfd);
}

/// The zygote's entry. `extern "C"` so that a panic (there is none to raise) would abort
/// instead of unwinding into a copy of the host's stack.
extern "C" fn zygote_entry(boot: &Boot) -> ! {
    // SAFETY: called only in the child of `clone_with_pidfd` in `own`.
    unsafe { zygote_main(boot) }
}

/// Sets the zygote up, says it is ready, then serves requests until the host's end closes.
/// Its first steps are the worker's own stages (see [`stages`]).
///
/// # Safety
/// Only in the freshly forked zygote, with `boot` built by the owner thread.
unsafe fn zygote_main(boot: &Boot) -> ! {
    // SAFETY: the stages' contract (a fresh fork); raw syscalls with integer arguments or
    // pointers to locals that outlive them.
    unsafe {
        if stages::pdeathsig().is_err() {
            raw::exit(1);
        }
        // The owner thread may have exited before PDEATHSIG was armed.
        stages::exit_if_orphaned(boot.host_pid, None);
        // No handler of the host's ever runs here; SIGKILL still ends the zygote.
        let _ = stages::block_signals(!0);
        // A core would hold the early host's memory.
        if stages::no_core_dump().is_err() {
            raw::exit(1);
        }
        // Every worker forked here lives in a network namespace without interfaces: a profile
        // worker would otherwise join the host's (see `sys::empty_netns`); a strict one has no
        // use for any. The host's shared one, as its own workers do: making a network
        // namespace costs about 300 us here, most of a zygote's start, and `bytejail batch`
        // starts a zygote per job thread. A zygote makes one of its own only where the host
        // has none; where this process may not make one either, profile workers go without.
        let kind = libc::CLONE_NEWNET as usize;
        if boot.netns_fd < 0 || raw::syscall3(libc::SYS_setns, boot.netns_fd as usize, kind, 0) < 0
        {
            raw::syscall3(libc::SYS_unshare, kind, 0, 0);
        }
        // The page for CLONE_PARENT_SETTID, at the host's address (free here: the host's
        // mapping is MADV_DONTFORK), and not inherited by any worker.
        let page = 4096;
        let flags = libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE;
        let mapped = raw::syscall6(
            libc::SYS_mmap,
            boot.forked_addr,
            page,
            (libc::PROT_READ | libc::PROT_WRITE) as usize,
            flags as usize,
            boot.forked_fd as usize,
            0,
        );
        if mapped != boot.forked_addr as isize
            || raw::syscall3(
                libc::SYS_madvise,
                boot.forked_addr,
                page,
                libc::MADV_DONTFORK as usize,
            ) < 0
        {
            raw::exit(1);
        }
        // Every descriptor but the socket: the zygote holds nothing a worker could inherit.
        let socket = boot.socket as usize;
        if (socket > 0 && stages::close_range(0, socket - 1).is_err())
            || stages::close_range(socket + 1, u32::MAX as usize).is_err()
        {
            raw::exit(1);
        }
        // Everything of the host's copy no worker needs goes (see `KeepList`).
        let keep = &boot.keep;
        if keep.len > 0 {
            let mut from = 0;
            for &(start, end) in &keep.ranges[..keep.len] {
                if start > from && raw::syscall3(libc::SYS_munmap, from, start - from, 0) < 0 {
                    raw::exit(1);
                }
                from = from.max(end);
            }
            if keep.user_end > from
                && raw::syscall3(libc::SYS_munmap, from, keep.user_end - from, 0) < 0
            {
                raw::exit(1);
            }
        }
        reply(boot.socket, 0);
        loop {
            serve_one(boot);
        }
    }
}

/// Sends one reply; a zygote that cannot answer has lost its host and exits.
fn reply(socket: RawFd, value: Reply) {
    if !protocol::send_reply(socket, value) {
        raw::exit(0);
    }
}

/// Receives one request (a plan and exactly its descriptors: three, plus one per control pipe
/// the plan has), forks its worker, closes the descriptors and replies with the pid or
/// `-errno`. Exits on EOF: the host's end is closed.
///
/// # Safety
/// As for [`zygote_main`].
unsafe fn serve_one(boot: &Boot) {
    let mut plan = MaybeUninit::<WorkerPlan>::uninit();
    // SAFETY: raw recvmsg into `plan`, read below only when whole.
    let (fds, count, whole) = match unsafe { protocol::recv_fork_request(boot.socket, &mut plan) } {
        Received::Interrupted => return,
        Received::Closed => raw::exit(0),
        Received::Request { fds, count, whole } => (fds, count, whole),
    };
    // Whatever else is wrong with the request, the descriptors that came are closed below.
    let answer = if whole {
        // SAFETY: exactly the bytes of a `WorkerPlan` arrived, and the only sender is the
        // host's `spawn_worker`, which sends a valid one of this same binary. Patched in
        // place, never moved: a copy of this size is a `memcpy` call, whose large-copy path
        // reads libc's `.bss`, which this process has unmapped.
        let plan = unsafe { plan.assume_init_mut() };
        // SAFETY: in the zygote, with the request's descriptors open.
        unsafe { fork_worker(boot, plan, fds) }
    } else {
        -(libc::EINVAL as Reply)
    };
    for fd in &fds[..count] {
        // SAFETY: a descriptor this request installed here.
        unsafe { raw::syscall3(libc::SYS_close, *fd as usize, 0, 0) };
    }
    reply(boot.socket, answer);
}

/// The worker's name, kept beside the code the worker runs after the fork (see
/// `worker::spawn`): read from `.rodata`, it would cost the worker a page fault of its own.
#[link_section = ".text.hot.bytejail_worker"]
static WORKER_NAME: [u8; 16] = *b"bytejail-worker\0";

/// Forks the worker for `plan` with `CLONE_PARENT`, returning its pid or `-errno`.
///
/// # Safety
/// In the zygote, with `fds` (memfd, input read end, output write end, then the plan's control
/// pipe ends) open.
#[inline(never)]
#[link_section = ".text.hot.bytejail_worker"]
unsafe fn fork_worker(
    boot: &Boot,
    plan: &mut WorkerPlan,
    fds: [i32; protocol::FORK_REQUEST_FDS],
) -> Reply {
    // The host reserved the window after this process was forked: whatever this process
    // still holds there is a stale copy of the host's memory, none of it used here (the
    // zygote's code and stack are mapped in the host too, so never inside a reservation).
    let mut low = usize::MAX;
    let mut high = 0;
    for m in &plan.maps {
        low = low.min(m.addr);
        high = high.max(m.addr.saturating_add(m.len));
    }
    if low % 4096 != 0 || high <= low {
        return -(libc::EINVAL as Reply);
    }
    // SAFETY: unmaps a range nothing in this process uses (see above).
    let unmapped = unsafe { raw::syscall3(libc::SYS_munmap, low, high - low, 0) };
    if unmapped < 0 {
        return unmapped as Reply;
    }
    // The descriptors as numbered here, and the registration this process inherited.
    plan.host_pid = boot.host_pid;
    plan.input_fd = fds[1];
    plan.output_fd = fds[2];
    // The control pipes that came, in order, after the first three descriptors.
    let present = plan.control_fds.iter_mut().filter(|fd| **fd >= 0);
    for (slot, received) in present.zip(&fds[3..]) {
        *slot = *received;
    }
    for m in plan.maps.iter_mut().filter(|m| m.fd >= 0) {
        m.fd = fds[0];
    }
    plan.rseq = boot.rseq;
    // This process is in its empty network namespace already (see `zygote_main`), and the
    // host's pidfd is opened here for the worker's liveness check.
    plan.walls.netns_fd = -1;
    let host_pidfd = if plan.walls.pid_namespace() {
        // SAFETY: plain integer arguments.
        let fd = unsafe { raw::syscall3(libc::SYS_pidfd_open, boot.host_pid as usize, 0, 0) };
        if fd < 0 {
            return fd as Reply;
        }
        plan.walls.host_pidfd = fd as i32;
        fd
    } else {
        -1
    };
    // Exit signal 0 (and CLONE_PARENT copies ours, which is 0 too): the host's SIGCHLD
    // handling never sees the worker. newsp 0: the child runs on a copy of this stack.
    let flags = (libc::CLONE_PARENT | libc::CLONE_PARENT_SETTID) as usize | plan.walls.clone_flags;
    // SAFETY: a fork-like clone; the kernel writes the child's pid to the mapped page.
    let pid = unsafe { raw::syscall6(libc::SYS_clone, flags, 0, boot.forked_addr, 0, 0, 0) };
    if pid != 0 && host_pidfd >= 0 {
        // SAFETY: the descriptor opened above, the worker has its own copy.
        unsafe { raw::syscall3(libc::SYS_close, host_pidfd as usize, 0, 0) };
    }
    if pid == 0 {
        // In the worker. Named apart from the zygote, whose name it inherited.
        let name = WORKER_NAME.as_ptr() as usize;
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes; then the
        // worker's setup on the patched plan, which never returns.
        unsafe {
            raw::syscall3(libc::SYS_prctl, libc::PR_SET_NAME as usize, name, 0);
            worker::enter(plan)
        }
    }
    pid as Reply
}
