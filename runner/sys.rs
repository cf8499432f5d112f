//! The unsafe layer: raw syscalls and the few libc calls the host makes around a run.
//!
//! Everything here is a thin, documented wrapper. The worker side uses only [`raw`] functions:
//! they are plain `syscall` instructions, touch no errno, take no lock and never allocate, so
//! they are safe to call between `fork` and the guest.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// Raw syscalls for the post-fork worker path. Return values are the kernel's: `-errno` on error.
pub mod raw {
    use std::arch::asm;

    /// `syscall(nr, a0..a5)` - issue a system call with the `syscall` instruction.
    ///
    /// # Safety
    /// The caller upholds the contract of syscall `nr` for the given arguments (valid pointers,
    /// no memory the Rust abstract machine owns is invalidated behind its back).
    #[inline(always)]
    pub unsafe fn syscall6(nr: i64, a0: usize, a1: usize, a2: usize, a3: usize, a4: usize, a5: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller upholds the syscall's contract; `syscall` clobbers rcx and r11 only.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a0, in("rsi") a1, in("rdx") a2, in("r10") a3, in("r8") a4, in("r9") a5,
                lateout("rcx") _, lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// Three-argument form of [`syscall6`].
    ///
    /// # Safety
    /// As for [`syscall6`].
    #[inline(always)]
    pub unsafe fn syscall3(nr: i64, a0: usize, a1: usize, a2: usize) -> isize {
        // SAFETY: forwarded contract.
        unsafe { syscall6(nr, a0, a1, a2, 0, 0, 0) }
    }

    /// `_exit` via raw `SYS_exit` (never `exit_group`, which strict mode kills).
    pub fn exit(code: i32) -> ! {
        loop {
            // SAFETY: SYS_exit takes a plain integer and does not return.
            unsafe { syscall3(libc::SYS_exit, code as usize, 0, 0) };
        }
    }
}

/// Result of [`clone_with_pidfd`].
pub enum Forked {
    /// In the new worker process: only raw syscalls from here on.
    Child,
    /// In the host: the worker's pid and a pidfd for it.
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
}

/// `clone(CLONE_PIDFD | SIGCHLD, 0, &pidfd, 0, 0)` - fork the calling thread, getting a pidfd
/// for the child; see clone(2).
///
/// Raw `clone` rather than libc `fork`: no atfork handlers run, and the child never returns
/// into libc, so it needs none of the state libc's fork fixes up.
///
/// # Safety
/// In the child only async-signal-safe code may run (raw syscalls, no allocation, no locks),
/// and it must never return past the caller's frame: it must end in [`raw::exit`] or the guest.
#[inline(never)]
pub unsafe fn clone_with_pidfd() -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let flags = (libc::CLONE_PIDFD as usize) | (libc::SIGCHLD as usize);
    // SAFETY: newsp = 0 keeps the child on a copy of this stack, exactly like fork(); the
    // kernel writes the pidfd through a valid pointer to a local.
    let ret = unsafe {
        raw::syscall6(libc::SYS_clone, flags, 0, &mut pidfd as *mut libc::c_int as usize, 0, 0, 0)
    };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    if ret == 0 {
        return Ok(Forked::Child);
    }
    // SAFETY: on success the kernel stored a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Forked::Parent { pid: ret as libc::pid_t, pidfd })
}

/// A `MAP_SHARED | MAP_ANONYMOUS` mapping: what the worker writes there the host sees after
/// it exits. memmap2 only makes private anonymous mappings, hence this small type.
pub struct SharedRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory owned by this value; no thread-affine state.
unsafe impl Send for SharedRegion {}
// SAFETY: shared access goes through raw pointers with explicit volatile reads.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS, -1, 0)`; see mmap(2).
    pub fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous mapping at a kernel-chosen address aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(SharedRegion { ptr, len })
    }

    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Copies `bytes` to `offset`. Panics if out of range (a runner bug, not guest behaviour).
    pub fn write_bytes(&mut self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len);
        // SAFETY: in range (checked above) and we hold `&mut self`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(offset), bytes.len())
        };
    }

    /// Writes a u64 at an 8-aligned `offset`.
    pub fn write_u64(&mut self, offset: usize, value: u64) {
        assert!(offset % 8 == 0 && offset + 8 <= self.len);
        // SAFETY: in range and aligned (checked above); we hold `&mut self`.
        unsafe { self.ptr.as_ptr().add(offset).cast::<u64>().write_volatile(value) };
    }

    /// Reads a u64 at an 8-aligned `offset`. Volatile: another process wrote it.
    pub fn read_u64(&self, offset: usize) -> u64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len);
        // SAFETY: in range and aligned (checked above).
        unsafe { self.ptr.as_ptr().add(offset).cast::<u64>().read_volatile() }
    }

    /// `mprotect(addr + offset, len, prot)`; see mprotect(2).
    pub fn protect(&mut self, offset: usize, len: usize, prot: libc::c_int) -> io::Result<()> {
        assert!(offset + len <= self.len);
        // SAFETY: the range lies inside this mapping; no Rust reference into it is alive.
        protect(unsafe { self.ptr.as_ptr().add(offset) }, len, prot)
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; nothing refers to it after drop.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `mprotect(addr, len, prot)`; see mprotect(2).
pub fn protect(addr: *mut u8, len: usize, prot: libc::c_int) -> io::Result<()> {
    // SAFETY: mprotect only changes protections; the callers pass ranges of mappings they own
    // and hold no references into the parts they make inaccessible.
    if unsafe { libc::mprotect(addr.cast(), len, prot) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pipe2(fds, O_CLOEXEC)`; see pipe(2). Returns (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `fcntl(fd, F_SETFL, flags | O_NONBLOCK)`; see fcntl(2).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `fcntl(fd, F_SETPIPE_SZ, size)`; see fcntl(2). Best effort: the kernel may cap it.
pub fn grow_pipe(fd: RawFd, size: usize) {
    let size = size.min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: F_SETPIPE_SZ on a pipe the caller owns; failure is harmless.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size) };
}

/// `read(fd, buf, len)`; see read(2).
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `write(fd, buf, len)`; see write(2).
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for reads of its length.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `ppoll(fds, n, timeout, NULL)`; see poll(2). Retries nothing: EINTR is returned.
pub fn poll(fds: &mut [libc::pollfd], timeout: std::time::Duration) -> io::Result<usize> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: fds is a valid array of pollfd; ts outlives the call.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `pidfd_send_signal(pidfd, SIGKILL, NULL, 0)`; see pidfd_send_signal(2). No pid-reuse race.
pub fn pidfd_kill(pidfd: RawFd) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGKILL, 0usize, 0u32) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        // Already dead (a zombie still accepts the signal; ESRCH only once reaped).
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
}

/// How the worker ended, with its resource usage.
pub struct Reaped {
    pub status: libc::c_int,
    pub rusage: libc::rusage,
}

/// `wait4(pid, &status, 0, &rusage)`; see wait4(2). Retries on EINTR.
pub fn wait4(pid: libc::pid_t) -> io::Result<Reaped> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals.
        let ret = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if ret == pid {
            return Ok(Reaped { status, rusage });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Blocks SIGPIPE in the calling thread for its lifetime, so that writing to a pipe whose
/// reader is gone yields EPIPE instead of killing a host that has not ignored SIGPIPE.
/// On drop it discards a SIGPIPE that became pending meanwhile and restores the mask.
pub struct SigpipeBlock {
    old: libc::sigset_t,
    /// Set when a write saw EPIPE, i.e. a thread-directed SIGPIPE is pending to be discarded.
    pub saw_epipe: bool,
}

impl SigpipeBlock {
    pub fn new() -> Self {
        // SAFETY: sigset_t manipulation on locals; pthread_sigmask affects this thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SigpipeBlock { old, saw_epipe: false }
        }
    }
}

impl Drop for SigpipeBlock {
    fn drop(&mut self) {
        // SAFETY: as in `new`; sigtimedwait with a zero timeout only dequeues a pending SIGPIPE.
        unsafe {
            if self.saw_epipe && libc::sigismember(&self.old, libc::SIGPIPE) == 0 {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGPIPE);
                let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

/// `getpid()`; see getpid(2).
pub fn getpid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getpid() }
}
