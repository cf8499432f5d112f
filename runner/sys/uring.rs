//! A pipe's "was it written?" without a system call: an io_uring whose one request is a
//! multishot poll for input on the pipe's read end.
//!
//! Used by a same-code worker's host after an input whose "done" came through the spinning
//! hand-off (see `docs/many-jobs.md`): the guest's output pipe was empty when the input began,
//! and the host would otherwise need a `read` to learn that it still is. Here the kernel
//! answers in memory the host already holds:
//! - the ring is set up with `IORING_SETUP_DEFER_TASKRUN` and `IORING_SETUP_TASKRUN_FLAG`: a
//!   write to the pipe wakes the poll, which queues its completion as work for this thread
//!   and sets `IORING_SQ_TASKRUN` in the ring's flags word, in the writer's own `write`
//!   (`pipe_write` wakes its readers before it returns; the flag is set with a locked
//!   instruction), so before the guest could say "done";
//! - the work runs, and the flag clears, only when this thread asks ([`PipeWatch::settle`]);
//! - so while the poll is armed, a clear flag and an empty completion queue mean that no byte
//!   reached the pipe since the last settle ([`PipeWatch::quiet`]).
//!
//! Anything unexpected (a kernel without these flags, io_uring refused by a seccomp profile
//! or `kernel.io_uring_disabled`, a poll the kernel ended, an error) makes the watch say "not
//! quiet", and the host reads the pipe as before: the watch only ever saves a read.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// `struct io_sqring_offsets` (include/uapi/linux/io_uring.h).
#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_cqring_offsets`.
#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params`.
#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

/// `struct io_uring_sqe`, the fields a poll request uses.
#[repr(C)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    poll32_events: u32,
    user_data: u64,
    pad: [u64; 3],
}

/// `struct io_uring_cqe`.
#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

const _: () = assert!(std::mem::size_of::<Params>() == 120);
const _: () = assert!(std::mem::size_of::<Sqe>() == 64);
const _: () = assert!(std::mem::size_of::<Cqe>() == 16);

const IORING_SETUP_CQSIZE: u32 = 1 << 3;
const IORING_SETUP_TASKRUN_FLAG: u32 = 1 << 9;
const IORING_SETUP_SINGLE_ISSUER: u32 = 1 << 12;
const IORING_SETUP_DEFER_TASKRUN: u32 = 1 << 13;
const IORING_FEAT_SINGLE_MMAP: u32 = 1 << 0;
const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_SQES: i64 = 0x1000_0000;
const IORING_OP_POLL_ADD: u8 = 6;
const IORING_OP_ASYNC_CANCEL: u8 = 14;
const IORING_POLL_ADD_MULTI: u32 = 1 << 0;
const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_CQE_F_MORE: u32 = 1 << 1;
/// `IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN`: completions the kernel holds back, or work
/// queued for this thread. Either means "not quiet".
const SQ_NOT_QUIET: u32 = (1 << 1) | (1 << 2);
/// Completions the ring holds: a poll posts one per settle that found input, and a new one
/// only after this thread has taken the last.
const CQ_ENTRIES: u32 = 16;

/// One mapping of the ring, unmapped with the watch.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, offset)`, then
    /// `MADV_DONTFORK`: no process forked from this one (a worker, a zygote) may see the ring,
    /// whose submission queue would run requests as this process.
    fn new(fd: RawFd, len: usize, offset: i64) -> io::Result<Mapping> {
        // SAFETY: a new shared mapping of the ring at a kernel-chosen address aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mapping = Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mapped at 0"))?,
            len,
        };
        // SAFETY: advice on the mapping just made.
        if unsafe { libc::madvise(ptr, len, libc::MADV_DONTFORK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(mapping)
    }

    /// The 32-bit word at `offset`, as the kernel shares it.
    fn word(&self, offset: u32) -> &AtomicU32 {
        debug_assert!(offset as usize + 4 <= self.len && offset % 4 == 0);
        // SAFETY: in bounds and aligned (the kernel's offsets); the mapping lives as long as
        // `self`, and the kernel updates these words atomically.
        unsafe { &*self.ptr.as_ptr().add(offset as usize).cast::<AtomicU32>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; nothing refers to it past the watch.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Watches one pipe's read end for writes (see the module's comment); one ring serves the
/// pipes of a session's workers in turn ([`PipeWatch::watch`]). Not `Send`: the ring takes
/// requests from the thread that made it only (`IORING_SETUP_SINGLE_ISSUER`).
pub struct PipeWatch {
    // Field order is drop order: the ring's fd after its mappings.
    rings: Mapping,
    sqes: Mapping,
    ring: OwnedFd,
    /// The pipe watched now, and its poll's `user_data` (the polls of pipes watched before
    /// had smaller ones; their completions are dropped).
    watched: RawFd,
    generation: u64,
    sq: SqOffsets,
    cq: CqOffsets,
    /// The poll is in place: the kernel has not ended it since it was last added.
    armed: bool,
    /// The poll found input as it was added (the pipe was not empty), and that completion was
    /// taken then: not quiet until the next settle, after which the caller reads the pipe.
    heard: bool,
    _not_send: std::marker::PhantomData<*const ()>,
}

/// The `user_data` of a poll's cancellation, whose completion says nothing of any pipe.
const REMOVAL: u64 = 0;

impl PipeWatch {
    /// `io_uring_setup(2)` with a multishot `IORING_OP_POLL_ADD` for `POLLIN` on `pipe_r`
    /// (what the pipe holds now counts as written since). An error where the kernel has no
    /// such ring (before Linux 6.1) or refuses one.
    pub fn new(pipe_r: RawFd) -> io::Result<PipeWatch> {
        let mut params = Params {
            sq_entries: 2,
            cq_entries: CQ_ENTRIES,
            flags: IORING_SETUP_CQSIZE
                | IORING_SETUP_SINGLE_ISSUER
                | IORING_SETUP_DEFER_TASKRUN
                | IORING_SETUP_TASKRUN_FLAG,
            ..Params::default()
        };
        // SAFETY: `params` is a valid io_uring_params the kernel fills in.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_io_uring_setup,
                params.sq_entries,
                &mut params as *mut Params,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, ours alone (io_uring_setup sets close-on-exec).
        let ring = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        if params.features & IORING_FEAT_SINGLE_MMAP == 0 || params.sq_entries < 2 {
            return Err(io::Error::other("io_uring without a single mapping"));
        }
        let sq_len = params.sq_off.array as usize + params.sq_entries as usize * 4;
        let cq_len =
            params.cq_off.cqes as usize + params.cq_entries as usize * std::mem::size_of::<Cqe>();
        let rings = Mapping::new(ring.as_raw_fd(), sq_len.max(cq_len), IORING_OFF_SQ_RING)?;
        let sqes = Mapping::new(
            ring.as_raw_fd(),
            params.sq_entries as usize * std::mem::size_of::<Sqe>(),
            IORING_OFF_SQES,
        )?;
        let mut watch = PipeWatch {
            rings,
            sqes,
            ring,
            watched: pipe_r,
            generation: REMOVAL,
            sq: params.sq_off,
            cq: params.cq_off,
            armed: false,
            heard: false,
            _not_send: std::marker::PhantomData,
        };
        watch.watch(pipe_r)?;
        Ok(watch)
    }

    /// Watches `pipe_r` from now on instead of the pipe watched so far (what `pipe_r` holds
    /// now counts as written since). On an error the watch stays "not quiet".
    pub fn watch(&mut self, pipe_r: RawFd) -> io::Result<()> {
        let mut entries = 0;
        if self.armed {
            // IORING_OP_ASYNC_CANCEL of the last poll, by its user_data: it ends the poll even
            // with its work queued (IORING_OP_POLL_REMOVE then fails with EALREADY and leaves
            // it, and the pipe it holds, in place).
            self.queue(IORING_OP_ASYNC_CANCEL, -1, self.generation, 0, REMOVAL);
            entries += 1;
        }
        self.armed = false;
        self.generation += 1;
        self.watched = pipe_r;
        let generation = self.generation;
        self.queue(
            IORING_OP_POLL_ADD,
            pipe_r,
            0,
            IORING_POLL_ADD_MULTI,
            generation,
        );
        entries += 1;
        // Submits both, runs their work and takes what completed (the cancelled poll's end).
        if self.enter(entries, IORING_ENTER_GETEVENTS)? != entries {
            return Err(io::Error::other("io_uring took too few requests"));
        }
        self.armed = true;
        if self.reap() {
            self.heard = true; // the pipe held something already
        }
        Ok(())
    }

    /// True when no byte can have reached the pipe since the last [`PipeWatch::settle`] (or
    /// since it was first watched): the poll is armed, no work is queued for it, and no
    /// completion waits. No system call. Call it after seeing, with acquire ordering, a word
    /// the writer stored after its writes (the worker's "done").
    pub fn quiet(&self) -> bool {
        self.armed
            && !self.heard
            && self.rings.word(self.sq.flags).load(Ordering::Acquire) & SQ_NOT_QUIET == 0
            && self.rings.word(self.cq.head).load(Ordering::Relaxed)
                == self.rings.word(self.cq.tail).load(Ordering::Acquire)
    }

    /// Runs the poll's queued work and takes its completions, adding the poll again if the
    /// kernel ended it. Call it before reading the pipe empty: what is written after this
    /// makes the watch not quiet again, what was written before is in the pipe to read.
    pub fn settle(&mut self) -> io::Result<()> {
        // io_uring_enter(fd, 0, 0, IORING_ENTER_GETEVENTS): runs this thread's deferred work.
        self.enter(0, IORING_ENTER_GETEVENTS)?;
        self.reap();
        if !self.armed {
            self.watch(self.watched)?;
        }
        self.heard = false; // the caller reads the pipe now
        Ok(())
    }

    /// Takes every completion; one of the current poll that says it ended (an error, or the
    /// kernel stopped the multishot) disarms the watch. Those of earlier polls, and their
    /// cancellations, say nothing of the pipe watched now. True if one of the current poll's
    /// was among them.
    fn reap(&mut self) -> bool {
        let mut current = false;
        let head = self.rings.word(self.cq.head);
        let tail = self.rings.word(self.cq.tail).load(Ordering::Acquire);
        let mask = self.rings.word(self.cq.ring_mask).load(Ordering::Relaxed);
        let mut at = head.load(Ordering::Relaxed);
        while at != tail {
            let offset = self.cq.cqes as usize + (at & mask) as usize * std::mem::size_of::<Cqe>();
            // SAFETY: a completion slot inside the ring's mapping, which the kernel filled
            // before it moved the tail this thread read with acquire ordering.
            let cqe = unsafe { &*self.rings.ptr.as_ptr().add(offset).cast::<Cqe>() };
            if cqe.user_data == self.generation {
                current = true;
                if cqe.res < 0 || cqe.flags & IORING_CQE_F_MORE == 0 {
                    self.armed = false;
                }
            }
            at = at.wrapping_add(1);
        }
        head.store(tail, Ordering::Release);
        current
    }

    /// Writes a submission entry for `opcode` (a poll of `fd` with `flags` tagged
    /// `user_data`, or the cancellation of the poll tagged `target`) and moves the queue's tail
    /// past it; the kernel reads it at the next `enter`.
    fn queue(&mut self, opcode: u8, fd: RawFd, target: u64, flags: u32, user_data: u64) {
        let tail = self.rings.word(self.sq.tail);
        let mask = self.rings.word(self.sq.ring_mask).load(Ordering::Relaxed);
        let at = tail.load(Ordering::Relaxed);
        let index = at & mask;
        let sqe = Sqe {
            opcode,
            flags: 0,
            ioprio: 0,
            fd,
            off: 0,
            addr: target,
            len: flags,
            poll32_events: if opcode == IORING_OP_POLL_ADD {
                libc::POLLIN as u32
            } else {
                0
            },
            user_data,
            pad: [0; 3],
        };
        // SAFETY: slot `index` of the submission entries (at least two, `new` checked), which
        // the kernel reads only when told to by `enter`; at most two are queued before each
        // `enter` submits them all.
        unsafe {
            self.sqes
                .ptr
                .as_ptr()
                .cast::<Sqe>()
                .add(index as usize)
                .write(sqe)
        };
        let array = self.sq.array + index * 4;
        self.rings.word(array).store(index, Ordering::Relaxed);
        tail.store(at.wrapping_add(1), Ordering::Release);
    }

    /// `io_uring_enter(2)` with `to_submit` entries and `flags`; the count submitted.
    fn enter(&self, to_submit: u32, flags: u32) -> io::Result<u32> {
        loop {
            // SAFETY: the ring's own descriptor; no signal mask passed.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.ring.as_raw_fd(),
                    to_submit,
                    0u32,
                    flags,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if n >= 0 {
                return Ok(n as u32);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe whose read end is non-blocking, as a worker's output pipe is.
    fn output_pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = crate::sys::pipe().unwrap();
        crate::sys::set_nonblocking(r.as_raw_fd()).unwrap();
        (r, w)
    }

    /// An [`output_pipe`] and a watch on it; `None`, with a line saying so, where this kernel
    /// or process may not make the ring.
    fn watched_pipe() -> Option<(PipeWatch, OwnedFd, OwnedFd)> {
        let (r, w) = output_pipe();
        match PipeWatch::new(r.as_raw_fd()) {
            Ok(watch) => Some((watch, r, w)),
            Err(e) => {
                eprintln!("skipped: no io_uring here ({e})");
                None
            }
        }
    }

    #[test]
    fn quiet_until_written_and_again_after_settle_and_read() {
        let Some((mut watch, r, w)) = watched_pipe() else {
            return;
        };
        let mut buf = [0u8; 64];
        for round in 0..100 {
            assert!(watch.quiet(), "round {round}: quiet before a write");
            crate::sys::write(w.as_raw_fd(), b"x").unwrap();
            assert!(!watch.quiet(), "round {round}: a write is seen");
            watch.settle().unwrap();
            assert_eq!(crate::sys::read(r.as_raw_fd(), &mut buf).unwrap(), 1);
            assert!(watch.quiet(), "round {round}: quiet once read");
        }
        // Written twice before a settle, read after it: quiet once empty.
        crate::sys::write(w.as_raw_fd(), b"ab").unwrap();
        crate::sys::write(w.as_raw_fd(), b"cd").unwrap();
        watch.settle().unwrap();
        assert_eq!(crate::sys::read(r.as_raw_fd(), &mut buf).unwrap(), 4);
        assert!(watch.quiet());
        // A write of nothing puts nothing in the pipe.
        crate::sys::write(w.as_raw_fd(), b"").unwrap();
        assert!(watch.quiet());
    }

    /// Moved to another pipe, the watch hears that one only; over many moves (a session's
    /// workers, one after another) it keeps working.
    #[test]
    fn a_moved_watch_hears_its_new_pipe_only() {
        let Some((mut watch, r1, w1)) = watched_pipe() else {
            return;
        };
        let mut buf = [0u8; 8];
        let mut old = (r1, w1);
        for round in 0..1000 {
            let (r, w) = output_pipe();
            // Written before the move, and never read: the old pipe's poll fired.
            crate::sys::write(old.1.as_raw_fd(), b"o").unwrap();
            watch.watch(r.as_raw_fd()).unwrap();
            assert!(watch.quiet(), "round {round}: quiet once moved");
            crate::sys::write(old.1.as_raw_fd(), b"o").unwrap();
            drop(old);
            assert!(watch.quiet(), "round {round}: the old pipe is not heard");
            crate::sys::write(w.as_raw_fd(), b"n").unwrap();
            assert!(!watch.quiet(), "round {round}: the new pipe is");
            watch.settle().unwrap();
            assert_eq!(crate::sys::read(r.as_raw_fd(), &mut buf).unwrap(), 1);
            assert!(watch.quiet(), "round {round}: quiet once read");
            old = (r, w);
        }
        // One poll left in the ring: those of the pipes before were cancelled (each held its
        // pipe open), as the ring's fdinfo lists them.
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", watch.ring.as_raw_fd()))
            .unwrap();
        let polls = info
            .split("PollList:")
            .nth(1)
            .map_or(0, |list| list.lines().filter(|l| l.contains("op=")).count());
        assert_eq!(polls, 1, "{info}");
    }

    /// A pipe that holds something when it comes to be watched (made, or moved to) is not
    /// quiet until a settle and a read; the twin: an empty one is.
    #[test]
    fn a_pipe_not_empty_when_watched_is_heard() {
        let Some((mut watch, r, w)) = watched_pipe() else {
            return;
        };
        let mut buf = [0u8; 8];
        let (r2, w2) = output_pipe();
        crate::sys::write(w2.as_raw_fd(), b"early").unwrap();
        watch.watch(r2.as_raw_fd()).unwrap();
        assert!(!watch.quiet(), "moved to a pipe that holds bytes");
        watch.settle().unwrap();
        assert_eq!(crate::sys::read(r2.as_raw_fd(), &mut buf).unwrap(), 5);
        assert!(watch.quiet());
        watch.watch(r.as_raw_fd()).unwrap();
        assert!(watch.quiet(), "moved to an empty pipe");
        drop((w, w2));
    }

    /// The twin: a watch that is never settled and a pipe that is read anyway stays "not
    /// quiet", so `quiet` is not just "the pipe is empty now".
    #[test]
    fn not_quiet_after_a_write_even_once_read() {
        let Some((watch, r, w)) = watched_pipe() else {
            return;
        };
        crate::sys::write(w.as_raw_fd(), b"x").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(crate::sys::read(r.as_raw_fd(), &mut buf).unwrap(), 1);
        assert!(!watch.quiet());
    }

    /// Another process's writes (as a worker's are) are seen by the time it says so through
    /// shared memory, in every one of many rounds.
    #[test]
    fn another_process_writes_are_seen_before_its_word() {
        let Some((mut watch, r, w)) = watched_pipe() else {
            return;
        };
        let word = crate::sys::map_advised(4096, libc::MADV_NORMAL).unwrap();
        // Shared with the child: remap as MAP_SHARED anonymous.
        // SAFETY: replaces our own fresh private page with a shared one at the same place.
        let shared = unsafe {
            libc::mmap(
                word.as_ptr().cast(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        assert_ne!(shared, libc::MAP_FAILED);
        // SAFETY: the page is ours, aligned, and lives until the end of the test.
        let seq = unsafe { &*shared.cast::<AtomicU32>() };
        const ROUNDS: u32 = 2000;
        // SAFETY: the child only spins, writes and exits with raw calls.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // Round n: write a byte on odd rounds, then say n.
            for n in 1..=ROUNDS {
                while seq.load(Ordering::Acquire) != 2 * n - 1 {
                    std::hint::spin_loop();
                }
                if n % 2 == 1 {
                    // SAFETY: a write of one byte from a static.
                    unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
                }
                seq.store(2 * n, Ordering::Release);
            }
            // SAFETY: leaves the child without running the test harness's exit.
            unsafe { libc::_exit(0) };
        }
        let mut buf = [0u8; 8];
        for n in 1..=ROUNDS {
            seq.store(2 * n - 1, Ordering::Release);
            while seq.load(Ordering::Acquire) != 2 * n {
                std::hint::spin_loop();
            }
            if n % 2 == 1 {
                assert!(!watch.quiet(), "round {n}: the write was missed");
                watch.settle().unwrap();
                assert_eq!(crate::sys::read(r.as_raw_fd(), &mut buf).unwrap(), 1);
            } else {
                assert!(watch.quiet(), "round {n}: nothing was written");
            }
        }
        let mut status = 0;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        // SAFETY: our own mapping.
        unsafe { libc::munmap(shared, 4096) };
    }
}
