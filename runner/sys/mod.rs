//! The unsafe layer: raw syscalls and the few libc calls the host makes around a run.
//!
//! Two parts, split by where they may run:
//! - [`raw`] (`runner/sys/raw.rs`): async-signal-safe. Plain `syscall` instructions and the
//!   kernel's own structures; no errno, no lock, no allocation. The only layer the post-fork
//!   code (the worker's stages, the zygote's loop) may call.
//! - this module: host conveniences that may allocate, lock or touch errno (`pipe`, `poll`,
//!   `read_append`, the shared memfd, the seqpacket socket ...). Never called after `fork`.
#![allow(unsafe_code)]

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};

pub mod faults;
pub mod raw;
pub mod uring;

pub use raw::RseqRegistration;

/// Result of [`clone_with_pidfd`].
pub enum Forked {
    /// In the new worker process: only raw syscalls from here on.
    Child,
    /// In the host: the worker's pid and a pidfd for it.
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
}

/// `clone(CLONE_PIDFD | extra, 0, &pidfd, 0, 0)` - fork the calling thread, getting a pidfd
/// for the child; see clone(2). `extra` adds namespace flags (`CLONE_NEWPID`, ...).
///
/// Raw `clone` rather than libc `fork`: no atfork handlers run, and the child never returns
/// into libc, so it needs none of the state libc's fork fixes up. The exit signal is 0, not
/// SIGCHLD: the host's own SIGCHLD handling (a handler, `SIG_IGN` auto-reaping, a
/// `waitpid(-1)` loop elsewhere in the program) never sees or steals the worker; only
/// [`wait4`] with `__WALL` reaps it.
///
/// # Safety
/// In the child only async-signal-safe code may run (raw syscalls, no allocation, no locks),
/// and it must never return past the caller's frame: it must end in [`raw::exit`] or the guest.
#[inline(never)]
#[link_section = ".text.hot.bytejail_worker"]
pub unsafe fn clone_with_pidfd(extra: usize) -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let flags = libc::CLONE_PIDFD as usize | extra;
    // SAFETY: newsp = 0 keeps the child on a copy of this stack, exactly like fork(); the
    // kernel writes the pidfd through a valid pointer to a local.
    let ret = unsafe {
        raw::syscall6(
            libc::SYS_clone,
            flags,
            0,
            &mut pidfd as *mut libc::c_int as usize,
            0,
            0,
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    if ret == 0 {
        return Ok(Forked::Child);
    }
    // SAFETY: on success the kernel stored a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Forked::Parent {
        pid: ret as libc::pid_t,
        pidfd,
    })
}

/// `clone(CLONE_VM | CLONE_PIDFD, stack_top, &pidfd, 0, 0)` - start a process that shares
/// this one's memory and runs `entry(a0, a1)` on the stack that ends at `stack_top`, getting
/// its pid and a pidfd; see clone(2).
///
/// A process of its own (its own thread group, descriptor table, signal handlers and mask),
/// but no copy of the address space: the clone copies no page tables, and its exit tears
/// none down while this process lives. For a helper process that runs raw syscalls only
/// (the tracer), that is most of what a fork from a large host costs, at its start and at
/// its end. As with [`clone_with_pidfd`], the exit signal is 0.
///
/// # Safety
/// `entry` must run only raw syscalls on its own stack and locals (no allocation, no lock,
/// no thread-local, no errno: it shares the caller's memory and the calling thread's TLS
/// pointer), and end in [`raw::exit`]. `stack_top` is the 16-byte aligned end of a mapping
/// that stays mapped, read+write, for as long as the new process lives.
pub unsafe fn clone_vm_with_pidfd(
    stack_top: usize,
    entry: unsafe extern "C" fn(usize, usize) -> !,
    a0: usize,
    a1: usize,
) -> io::Result<(libc::pid_t, OwnedFd)> {
    debug_assert_eq!(stack_top % 16, 0);
    let mut pidfd: libc::c_int = -1;
    let flags = (libc::CLONE_VM | libc::CLONE_PIDFD) as usize;
    let ret: isize;
    // SAFETY: the child starts on `stack_top` with a copy of these registers: it moves its
    // arguments out of r12 and r14 and calls `entry`, which never returns (ud2 if it did).
    // The parent goes on past label 2 with rax = the pid or -errno. The kernel writes the
    // pidfd through a valid pointer to a local, before either side runs on.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "mov rsi, r14",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone as isize => ret,
            in("rdi") flags,
            in("rsi") stack_top,
            in("rdx") &mut pidfd as *mut libc::c_int as usize,
            in("r10") 0usize,
            in("r8") 0usize,
            in("r12") a0,
            in("r13") entry as usize,
            in("r14") a1,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    // SAFETY: on success the kernel stored a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((ret as libc::pid_t, pidfd))
}

/// A memfd mapped shared and read+write in the host, never inherited by a fork
/// (`MADV_DONTFORK`): workers map the parts they need from the descriptor themselves, so no
/// other worker ever sees this memory.
pub struct SharedFile {
    /// Closed on drop in a process forked since only while its number still refers to the
    /// memfd (see [`FdCopy`]).
    file: ManuallyDrop<std::fs::File>,
    memfd: FdCopy,
    /// Unmapped on drop only in the process that mapped it (see [`Owner`]).
    map: ManuallyDrop<memmap2::MmapRaw>,
    owner: Owner,
}

/// The process that made something bound to it: a mapping `MADV_DONTFORK` keeps out of
/// forked processes, a thread, a worker it must reap. A process forked from it (a pre-forking
/// server that ran jobs first, say) inherits such values as plain data: there they must not be
/// used, and dropping them must neither touch the addresses (something else may be mapped
/// there by now), nor join a thread that does not exist, nor end the first process's workers.
#[derive(Clone, Copy, Debug)]
pub struct Owner(Incarnation);

/// A descriptor, and the open file it referred to when this was made (`fstat`'s device and
/// inode). A process forked since inherits the descriptor's number as plain data, and may have
/// closed its copy and reused the number (a daemon closes what it inherited): it closes the
/// number only while it still refers to that file, which lives on in the process that made it.
#[derive(Clone, Copy, Debug)]
pub struct FdCopy {
    fd: RawFd,
    file: Option<(u64, u64)>,
}

impl FdCopy {
    /// `fd`, and the open file it refers to now.
    pub fn of(fd: RawFd) -> FdCopy {
        FdCopy {
            fd,
            file: fd_file(fd),
        }
    }

    /// The descriptor's number.
    pub fn fd(self) -> RawFd {
        self.fd
    }

    /// Whether the number still refers to the same open file.
    pub fn still_open(self) -> bool {
        self.file.is_some() && fd_file(self.fd) == self.file
    }

    /// `close(fd)` if the number still refers to the same file; whether it did.
    pub fn close_if_still_open(self) -> bool {
        if !self.still_open() {
            return false;
        }
        // SAFETY: this process's copy of the descriptor recorded (same device and inode),
        // which the caller says nothing here uses again.
        unsafe { libc::close(self.fd) };
        true
    }
}

/// `fstat(fd)`'s device and inode; `None` if `fd` is not open.
fn fd_file(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: stat is plain old data; fstat writes into a local.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd, &mut stat) } == 0).then_some((stat.st_dev, stat.st_ino))
}

impl Owner {
    /// The calling process.
    pub fn here() -> Owner {
        Owner(incarnation())
    }

    /// The owner's pid.
    pub fn pid(self) -> libc::pid_t {
        self.0.pid
    }

    /// Whether the calling process is the owner (see [`incarnation`]: no system call once
    /// this process has asked). Not a process forked later that got the owner's pid again.
    pub fn is_here(self) -> bool {
        incarnation() == self.0
    }

    /// `Ok` in the owner; else the error to give for using `what` in another process.
    pub fn check(self, what: &str) -> io::Result<()> {
        if self.is_here() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "{what} belongs to process {}, and this process was forked from it: start one here",
            self.0.pid
        )))
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        if self.owner.is_here() {
            // SAFETY: dropped once, here; nothing refers to the mapping after `self`.
            unsafe { ManuallyDrop::drop(&mut self.map) };
        } else if !self.memfd.still_open() {
            // A process forked since that closed its copy: the number may be its own now.
            return;
        }
        // SAFETY: dropped once, here; nothing uses the descriptor after `self`.
        unsafe { ManuallyDrop::drop(&mut self.file) };
    }
}

impl SharedFile {
    /// `memfd_create(name, MFD_CLOEXEC)`, sized to `len` and mapped; see memfd_create(2).
    pub fn new(len: usize) -> io::Result<Self> {
        // SAFETY: the name is a valid C string; the new descriptor is owned by the File.
        let fd = unsafe { libc::memfd_create(c"bytejail-arena".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.set_len(len as u64)?;
        let map = memmap2::MmapOptions::new().len(len).map_raw(&file)?;
        map.advise(memmap2::Advice::DontFork)?;
        Ok(SharedFile {
            memfd: FdCopy::of(file.as_raw_fd()),
            file: ManuallyDrop::new(file),
            map: ManuallyDrop::new(map),
            owner: Owner::here(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Address of the host's mapping.
    pub fn addr(&self) -> usize {
        self.map.as_ptr() as usize
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Copies `bytes` to `offset`. Panics if out of range (a runner bug, not guest behaviour).
    pub fn write_bytes(&mut self, offset: usize, bytes: &[u8]) {
        assert!(offset <= self.len() && bytes.len() <= self.len() - offset);
        // SAFETY: in range (checked above); we hold `&mut self` and no worker is running.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                bytes.len(),
            )
        };
    }

    /// Gives `len` bytes at `offset` back to the kernel (`fallocate(PUNCH_HOLE)`): they read
    /// as zeros again, in every mapping of the file, the host's and the workers'.
    pub fn punch_hole(&mut self, offset: usize, len: usize) -> io::Result<()> {
        assert!(offset <= self.len() && len <= self.len() - offset);
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on a descriptor we own; no memory is passed.
        let ret = unsafe { libc::fallocate(self.fd(), mode, offset as i64, len as i64) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Returns `len` bytes at `offset` to zeros, cheaply when few of their pages exist: the
    /// file's data ranges there (`lseek` `SEEK_DATA`/`SEEK_HOLE`, which also counts pages swapped
    /// out) are zeroed in place, so a worker that maps them keeps them mapped and does not fault
    /// them in again. Past `ZERO_IN_PLACE_MAX` bytes of data the range is punched out instead.
    ///
    /// The scan starts with `SEEK_HOLE` at `offset`: the ranges reset between inputs start with
    /// a page every run writes (the data page, the first page of scratch), so that one call
    /// gives the first data run whole, where `SEEK_DATA` would first say it starts at `offset`.
    /// When `offset` lies in a hole, `SEEK_HOLE` returns `offset` itself and the scan goes on
    /// with `SEEK_DATA` as before. Each call is about 0.2 us; a same-code input makes 7 instead
    /// of 9.
    pub fn zero_range(&mut self, offset: usize, len: usize) -> io::Result<()> {
        self.zero_runs(offset, len, false, &mut Vec::new())
            .map(|_| ())
    }

    /// [`SharedFile::zero_range`] for pages a worker on another CPU keeps reading: only their
    /// lines that are not zero are written ([`SharedFile::zero_dirty`]). Adds the data runs it
    /// zeroed in place (start, end) to `found`: the pages of the range the file still has
    /// afterwards (none when it punched). Says whether it punched.
    pub fn zero_range_found(
        &mut self,
        offset: usize,
        len: usize,
        found: &mut Vec<(usize, usize)>,
    ) -> io::Result<bool> {
        self.zero_runs(offset, len, true, found)
    }

    /// Says whether it punched the range out (rather than zeroing its data runs in place).
    fn zero_runs(
        &mut self,
        offset: usize,
        len: usize,
        dirty_only: bool,
        found: &mut Vec<(usize, usize)>,
    ) -> io::Result<bool> {
        const ZERO_IN_PLACE_MAX: usize = 256 << 10;
        assert!(offset <= self.len() && len <= self.len() - offset);
        let end = offset + len;
        let seek = |from: usize, whence: i32| -> io::Result<Option<usize>> {
            // SAFETY: lseek on a descriptor we own.
            let got = unsafe { libc::lseek(self.fd(), from as i64, whence) };
            if got >= 0 {
                return Ok(Some((got as usize).min(end)));
            }
            match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None), // no data past `from`
                e => Err(e),
            }
        };
        let mut runs = [(0usize, 0usize); 8];
        let (mut count, mut total) = (0, 0);
        // `data`: where the next run may start (in data, or in a hole that SEEK_HOLE reports
        // as an empty run).
        let mut data = offset;
        while data < end {
            // ENXIO only past the end of the file: nothing there.
            let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(data);
            if hole > data {
                total += hole - data;
                if count == runs.len() || total > ZERO_IN_PLACE_MAX {
                    return self.punch_hole(offset, len).map(|()| true);
                }
                runs[count] = (data, hole);
                count += 1;
            }
            if hole >= end {
                break;
            }
            let Some(next) = seek(hole, libc::SEEK_DATA)? else {
                break;
            };
            data = next;
        }
        for &(data, hole) in &runs[..count] {
            if dirty_only {
                self.zero_dirty(data, hole - data);
            } else {
                self.zero(data, hole - data);
            }
        }
        found.extend_from_slice(&runs[..count]);
        Ok(false)
    }

    /// The file's size in 512-byte blocks of memory (`fstat`'s `st_blocks`): it grows when a
    /// page of the file comes to be (a first write or read of a hole, through any mapping)
    /// and shrinks only when one is punched out. Swapped-out pages still count.
    pub fn blocks(&self) -> io::Result<u64> {
        self.stat().map(|(_, blocks)| blocks)
    }

    /// The file's size and block count (one raw `fstat`, see [`SharedFile::blocks`]).
    pub fn stat(&self) -> io::Result<(u64, u64)> {
        // SAFETY: fstat writes one `struct stat` to a local. The raw call: glibc's `fstat`
        // is `fstatat(fd, "", AT_EMPTY_PATH)`, whose empty path the kernel copies and
        // checks first (a same-code input makes one of these).
        unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            if libc::syscall(libc::SYS_fstat, self.fd(), &mut stat) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((stat.st_size as u64, stat.st_blocks as u64))
        }
    }

    /// A new open file description of this file, write-only and appending: every write through
    /// it lands at the file's end, whatever its position, and it cannot read.
    pub fn open_appending(&self) -> io::Result<OwnedFd> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(format!("/proc/self/fd/{}", self.fd()))
            .map(OwnedFd::from)
    }

    /// Reads up to `len` bytes of the file from `offset` (past the mapping, say), fewer where
    /// the file ends first.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0; len];
        let mut got = 0;
        while got < len {
            match self.file.read_at(&mut bytes[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        bytes.truncate(got);
        Ok(bytes)
    }

    /// Cuts the file back to `len` bytes (what lies past them is gone).
    pub fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// Sets `len` bytes at `offset` to zero.
    pub fn zero(&mut self, offset: usize, len: usize) {
        assert!(offset <= self.len() && len <= self.len() - offset);
        // SAFETY: in range (checked above); we hold `&mut self`.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(offset), 0, len) };
    }

    /// Writes a u64 at an 8-aligned `offset`, unless it holds `value` already: a store, even of
    /// the same value, takes the cache line from a worker on another CPU that reads it (a
    /// same-code worker reads its context after every go), which must then fetch it back.
    pub fn write_u64(&mut self, offset: usize, value: u64) {
        assert!(offset % 8 == 0 && offset + 8 <= self.len());
        // SAFETY: in range and aligned (checked above); we hold `&mut self`.
        unsafe {
            let word = self.map.as_mut_ptr().add(offset).cast::<u64>();
            if word.read_volatile() != value {
                word.write_volatile(value);
            }
        }
    }

    /// Sets `len` bytes at `offset` to zero, writing only the 64-byte lines that are not zero
    /// already (see [`SharedFile::write_u64`] for why). Only for pages the file has: reading a
    /// hole of a shared mapping would put a page there.
    pub fn zero_dirty(&mut self, offset: usize, len: usize) {
        const LINE: usize = 64;
        assert!(offset <= self.len() && len <= self.len() - offset);
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let n = (LINE - at % LINE).min(end - at);
            // SAFETY: `at..at + n` is in range (checked above); we hold `&mut self`. A whole
            // line is 64-aligned, so it is eight aligned u64s.
            unsafe {
                let line = self.map.as_mut_ptr().add(at);
                let dirty = if n == LINE {
                    let words = std::slice::from_raw_parts(line.cast::<u64>(), LINE / 8);
                    words.iter().fold(0, |acc, &w| acc | w) != 0
                } else {
                    std::slice::from_raw_parts(line, n).iter().any(|&b| b != 0)
                };
                if dirty {
                    std::ptr::write_bytes(line, 0, n);
                }
            }
            at += n;
        }
    }

    /// The u32 at a 4-aligned `offset`, as an atomic (a shared futex's word, say: workers map
    /// the same file).
    pub fn atomic_u32(&self, offset: usize) -> &std::sync::atomic::AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len());
        // SAFETY: in range and aligned (checked above); the mapping is shared memory that
        // others write only atomically or not at all, so an atomic view of it is sound.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(offset)
                .cast::<std::sync::atomic::AtomicU32>()
        }
    }

    /// Stores `value` at `offset` (4-byte aligned), atomically, waking no one: for a word
    /// nothing waits on yet.
    pub fn store_u32(&self, offset: usize, value: u32) {
        self.atomic_u32(offset)
            .store(value, std::sync::atomic::Ordering::SeqCst);
    }

    /// Reads a u64 at an 8-aligned `offset`. Volatile: a worker wrote it.
    pub fn read_u64(&self, offset: usize) -> u64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len());
        // SAFETY: in range and aligned (checked above).
        unsafe { self.map.as_ptr().add(offset).cast::<u64>().read_volatile() }
    }

    /// Prefetches the lines of `len` bytes at `offset` (a hint: no effect on what is read).
    pub fn prefetch(&self, offset: usize, len: usize) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        assert!(offset <= self.len() && len <= self.len() - offset);
        for at in (offset & !63..offset + len).step_by(64) {
            // SAFETY: a prefetch never faults nor changes memory; the address is in the
            // mapping (checked above).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.map.as_ptr().add(at).cast()) };
        }
    }

    /// The u64 at an 8-aligned `offset` as an atomic, for a word another process (a worker
    /// mapping the same file) reads and writes at the same time.
    pub fn atomic_u64(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len());
        // SAFETY: in range and aligned (checked above); the mapping lives as long as `self`.
        // Every access to the word from this process goes through atomics (the worker's side
        // uses `xchg`, `lock cmpxchg` and aligned loads and stores, atomic on x86-64).
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
    }
}

/// A range of address space held with `PROT_NONE` and `MADV_DONTFORK`: nothing else in the host
/// can be mapped there, and in a forked worker the whole range is free, so the worker can map
/// its memory at addresses the host chose before the fork.
pub struct Reservation {
    ptr: NonNull<u8>,
    len: usize,
    /// Unmapped on drop only in this process (see [`Owner`]).
    owner: Owner,
}

// SAFETY: an inaccessible range of address space; no data, no thread affinity.
unsafe impl Send for Reservation {}

impl Reservation {
    /// `mmap(NULL, len, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0)` then
    /// `madvise(MADV_DONTFORK)`; see mmap(2), madvise(2).
    pub fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous inaccessible mapping at a kernel-chosen address aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        let reservation = Reservation {
            ptr,
            len,
            owner: Owner::here(),
        };
        // SAFETY: advice on the range we just mapped.
        if unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTFORK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(reservation)
    }

    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.owner.is_here() {
            // SAFETY: we own the range; nothing refers to it after drop.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
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

/// Puts the calling thread under `SCHED_BATCH`: it then never preempts a thread it wakes up, so
/// background work (the pool's refills) waits for the woken job's thread to block instead of
/// running on its clock. Best effort: the policy only affects timing. Returns the policy and
/// priority the thread had, for [`set_scheduling`].
pub fn batch_scheduling() -> (i32, i32) {
    // SAFETY: sched_getscheduler and sched_getparam of the calling thread (pid 0), into a local.
    let before = unsafe {
        let mut param = libc::sched_param { sched_priority: 0 };
        libc::sched_getparam(0, &mut param);
        (libc::sched_getscheduler(0), param.sched_priority)
    };
    set_scheduling((libc::SCHED_BATCH, 0));
    before
}

/// Puts the calling thread under `policy` with priority `priority` (best effort).
pub fn set_scheduling((policy, priority): (i32, i32)) {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: a valid pointer to a local; pid 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, policy, &param) };
}

/// Whether the kernel lets user code use `rdfsbase`/`wrfsbase`/`rdgsbase`/`wrgsbase`
/// (`HWCAP2_FSGSBASE` in the auxiliary vector, Linux 5.9+ on CPUs that have them).
pub fn fsgsbase_usable() -> bool {
    const AT_HWCAP2: libc::c_ulong = 26;
    const HWCAP2_FSGSBASE: libc::c_ulong = 1 << 1;
    // SAFETY: getauxval reads the process's auxiliary vector; it has no preconditions.
    unsafe { libc::getauxval(AT_HWCAP2) & HWCAP2_FSGSBASE != 0 }
}

/// CPU time (user + system, the scheduler's precise clock) a live or not yet reaped child
/// has used so far: the kernel's process CPU clock of `pid` (what clock_getcpuclockid(3)
/// returns, built here without its extra validating syscall: `CPUCLOCK_SCHED` of the process).
pub fn process_cpu_time(pid: libc::pid_t) -> io::Result<std::time::Duration> {
    const CPUCLOCK_SCHED: libc::clockid_t = 2;
    let clock = (!pid << 3) | CPUCLOCK_SCHED;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a local.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec as u32,
    ))
}

/// `fcntl(fd, F_SETFL, O_NONBLOCK)`; see fcntl(2). For a fresh pipe end, whose other status
/// flags are all clear (F_SETFL ignores the access mode), so no F_GETFL is needed.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFL on a descriptor the caller owns.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The end of the user address space: `1 << 56` minus a page on a kernel with 5-level paging,
/// `1 << 47` minus a page otherwise. Probed once by unmapping a page just above 47 bits, which
/// the kernel refuses (EINVAL) when the address space ends below it and which holds nothing
/// otherwise (the kernel maps there only on request).
pub fn user_address_space_end() -> usize {
    static END: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *END.get_or_init(|| {
        const LOW: usize = 0x0000_7fff_ffff_f000;
        const HIGH: usize = 0x00ff_ffff_ffff_f000;
        // SAFETY: munmap of one page at 1 << 47; nothing of ours can be mapped there (no
        // mapping above 47 bits is ever made without an explicit hint, and we give none).
        let above = unsafe { libc::munmap((LOW + 0x1000) as *mut libc::c_void, 0x1000) };
        if above == 0 {
            HIGH
        } else {
            LOW
        }
    })
}

/// The read end of a pipe without a writer: every read gives EOF at once. One per process,
/// made on first use and shared as fd 0 by every strict-mode worker that has no input to read.
/// Such a worker can only read it (EOF) or fail to write it (a read end), and neither changes
/// it. (A profile may allow `fcntl` or `flock`, which act on what every holder shares: workers
/// under profiles get a pipe of their own.)
pub fn eof_pipe() -> io::Result<RawFd> {
    static EOF: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();
    if let Some(fd) = EOF.get() {
        return Ok(fd.as_raw_fd());
    }
    let (read, write) = pipe()?;
    drop(write);
    // A thread that got here first made its own; this one's is then closed unused.
    Ok(EOF.get_or_init(|| read).as_raw_fd())
}

/// Bytes waiting in the pipe `fd` is an end of (`ioctl(fd, FIONREAD)`; see pipe(7)).
pub fn pipe_pending(fd: RawFd) -> io::Result<usize> {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a valid pointer to a local.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut pending) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pending.max(0) as usize)
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

/// `read(fd, ...)` of at most `max` bytes appended to `buf`, straight into its spare capacity:
/// nothing is zeroed first, so a read that finds nothing writes (and faults in) no memory.
pub fn read_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    // SAFETY: the spare capacity is valid for writes of at least `max` bytes.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), max) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: read(2) initialized the first `n` (<= max) bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n as usize) };
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
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Waits (at most `limit`, through interruptions) until `fd` is readable or hung up: `false`
/// when `limit` passed first.
pub fn wait_readable(fd: RawFd, limit: std::time::Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let mut fds = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match poll(&mut fds, left) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// How long the host waits for an answer from a helper process of its own (the tracer, a
/// zygote: microseconds, normally) before it takes the helper for stopped from outside and
/// ends it ([`kill_and_wait`]).
pub const HELPER_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits, without a bound, until the process behind `pidfd` has ended (its pidfd is readable).
fn wait_ended(pidfd: &OwnedFd) -> io::Result<()> {
    while !wait_readable(pidfd.as_raw_fd(), std::time::Duration::from_secs(3600))? {}
    Ok(())
}

/// Ends a helper process of the host's own that stopped answering (stopped from outside, say):
/// SIGKILL through its pidfd, then waits, without a bound, until it has ended, for until then
/// it could still act (write to memory it shares with the host, answer a request). A SIGKILL
/// ends a stopped process too.
pub fn kill_and_wait(pidfd: &OwnedFd) {
    let _ = pidfd_kill(pidfd.as_raw_fd());
    let _ = wait_ended(pidfd);
}

/// `pidfd_send_signal(pidfd, SIGKILL, NULL, 0)`; see pidfd_send_signal(2). No pid-reuse race.
pub fn pidfd_kill(pidfd: RawFd) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            libc::SIGKILL,
            0usize,
            0u32,
        )
    };
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

/// Whether the process behind `pidfd` has ended (its pidfd is readable), without waiting.
pub fn pidfd_ended(pidfd: &OwnedFd) -> io::Result<bool> {
    let mut fds = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    poll(&mut fds, std::time::Duration::ZERO).map(|_| fds[0].revents != 0)
}

/// Whether this process's child `pid` can be reaped now, without taking it:
/// `waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT | __WALL)`; see waitid(2). A traced child
/// that has exited is not, until its tracer has let it go.
pub fn reapable(pid: libc::pid_t) -> bool {
    // SAFETY: siginfo_t is plain old data; zeroed is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL;
    // SAFETY: a pointer to a local siginfo_t.
    let ret = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    // SAFETY: si_pid is set (or left zero) by waitid.
    ret == 0 && unsafe { info.si_pid() } != 0
}

/// Ends a child that is of no more use (a worker, the zygote): SIGKILL through its pidfd, then
/// reap it. Best effort: a child already gone is simply reaped, or was.
pub fn end_child(pid: libc::pid_t, pidfd: &OwnedFd) {
    let _ = pidfd_kill(pidfd.as_raw_fd());
    let _ = reap(pid, pidfd);
}

/// Reaps a child once it has exited, which its pidfd says: a traced worker stops on its way
/// out (even when killed), and a `wait4` from any thread of its tracer's process would take
/// that stop as its status (and leave the worker stopped for good), so nothing here waits
/// before the worker is a zombie. Its tracer lets it go on from every stop at once.
pub fn reap(pid: libc::pid_t, pidfd: &OwnedFd) -> io::Result<Reaped> {
    wait_ended(pidfd)?;
    wait4(pid)
}

/// `wait4(pid, &status, __WALL, &rusage)`; see wait4(2). Retries on EINTR. `__WALL` because
/// the worker's exit signal is 0 (see [`clone_with_pidfd`]).
pub fn wait4(pid: libc::pid_t) -> io::Result<Reaped> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals.
        let ret = unsafe { libc::wait4(pid, &mut status, libc::__WALL, &mut rusage) };
        if ret == pid {
            return Ok(Reaped { status, rusage });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// glibc's registration of the calling thread's rseq area, if glibc registered one: the
/// area's address and the lengths to try when unregistering it.
///
/// A forked worker inherits its thread's rseq registration, and the kernel writes that area
/// on every preemption and signal; once the worker has unmapped the host's memory those writes
/// fail and the kernel kills it with SIGSEGV. So the worker unregisters it first. glibc 2.35+
/// exports the area's offset from the thread pointer and its size (`__rseq_offset`,
/// `__rseq_size`); the length it registered with is that size or 32, depending on the version.
pub fn rseq_registration() -> Option<RseqRegistration> {
    static GLIBC: std::sync::OnceLock<Option<(isize, u32)>> = std::sync::OnceLock::new();
    let (offset, size) = (*GLIBC.get_or_init(glibc_rseq))?;
    if size == 0 {
        return None; // glibc did not register (disabled by tunable, or the kernel lacks rseq)
    }
    let tp: usize;
    // SAFETY: on x86-64 glibc the word at fs:0 is the thread pointer itself (the TCB's self
    // pointer); reading it has no side effects.
    unsafe { std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly)) };
    Some(RseqRegistration {
        addr: tp.wrapping_add_signed(offset),
        // glibc up to 2.39 registers 32 bytes (its __rseq_size says 32, or 20 in later ones).
        lengths: [32, size],
    })
}

/// glibc's `__rseq_offset` and `__rseq_size`, looked up with `dlsym` (a program linked against
/// an older glibc still links, and gets `None`).
#[cfg(not(glibc_static_rseq))]
fn glibc_rseq() -> Option<(isize, u32)> {
    // SAFETY: dlsym with valid C strings; the symbols, when present, are an isize and a u32
    // that glibc sets once at start-up and never changes.
    unsafe {
        let offset = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr());
        let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
        if offset.is_null() || size.is_null() {
            return None;
        }
        Some((*(offset as *const isize), *(size as *const u32)))
    }
}

/// glibc's `__rseq_offset` and `__rseq_size`, named directly: a statically linked program has
/// no dynamic symbol table for `dlsym` (which then finds nothing), and `build.rs` found both
/// in the static C library it links.
#[cfg(glibc_static_rseq)]
fn glibc_rseq() -> Option<(isize, u32)> {
    extern "C" {
        static __rseq_offset: isize;
        static __rseq_size: u32;
    }
    // SAFETY: glibc sets both once at start-up, before `main`, and never changes them.
    unsafe { Some((__rseq_offset, __rseq_size)) }
}

/// How many threads this process has (`num_threads` of `/proc/self/stat`); `None` if it
/// cannot be read.
///
/// Read into a buffer on the stack: a thread tracing its own workers asks this right after
/// each fork, and an allocation then writes to heap pages (and the allocator's own) that the
/// new worker still shares, each write a page copied.
pub fn threads() -> Option<usize> {
    use std::io::Read;
    // The line is about 300 bytes; the command name in it is at most 16 (TASK_COMM_LEN).
    let mut buf = [0u8; 1024];
    let mut file = std::fs::File::open("/proc/self/stat").ok()?;
    let mut len = 0;
    loop {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if len == buf.len() {
            return None; // not the line this expects
        }
    }
    let stat = &buf[..len];
    // The fields after the command's closing parenthesis: state is field 3, num_threads 20.
    let end = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[end + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(17)?.parse().ok()
}

/// How many CPUs the calling thread may run on (`sched_getaffinity`); 1 if it cannot be read.
pub fn thread_cpus() -> usize {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return 1;
        }
        (libc::CPU_COUNT(&set) as usize).max(1)
    }
}

/// `sched_getaffinity(0, ...)` - the CPUs the calling thread may run on, in increasing order;
/// see sched_getaffinity(2). Empty if the set cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel writes at most its size,
    // and CPU_ISSET reads within it for every index below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// `sched_setaffinity(0, ...)` - lets the calling thread (only it: pid 0 names the calling
/// thread, not the process) run on `cpus` alone; see sched_setaffinity(2). Threads and
/// processes it starts afterwards inherit the set.
pub fn set_thread_cpus(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: as in `allowed_cpus`; CPU_SET is given only indices below CPU_SETSIZE.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One leaf of the `cpuid` results glibc (2.33 and later) gathered as the process started,
/// `__x86_get_cpuid_feature_leaf(index)` of `<sys/platform/x86.h>`: the registers as `cpuid`
/// gave them (eax, ebx, ecx, edx) and which features glibc found usable. Reading them runs no
/// `cpuid`, which under a hypervisor is an exit to it (about 7.5 us each on this project's
/// machines). `index` is glibc's `CPUID_INDEX_*`: 0 for leaf 1, 1 for leaf 7 (subleaf 0).
/// Looked up with `dlsym`, so that a program linked against an older glibc still links and
/// gets `None`, or, in a statically linked program, named directly where `build.rs` found it
/// in the static C library; `None` too for a leaf glibc left unfilled.
pub fn glibc_cpuid_leaf(index: u32) -> Option<CpuidLeaf> {
    #[cfg(glibc_static_cpuid_leaf)]
    {
        extern "C" {
            // `<sys/platform/x86.h>`: `const struct cpuid_feature
            // *__x86_get_cpuid_feature_leaf (unsigned int)`, found by `build.rs` in the
            // static C library this program links (`dlsym` finds nothing in it).
            fn __x86_get_cpuid_feature_leaf(index: libc::c_uint) -> *const CpuidLeaf;
        }
        // SAFETY: as below.
        let found = unsafe { __x86_get_cpuid_feature_leaf(index).as_ref() }?;
        (found.cpuid != [0; 4]).then_some(*found)
    }
    #[cfg(all(target_env = "gnu", not(glibc_static_cpuid_leaf)))]
    {
        let name = c"__x86_get_cpuid_feature_leaf";
        // SAFETY: `dlsym` with a NUL-terminated name, looked for in every loaded object.
        let leaf = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        if leaf.is_null() {
            return None;
        }
        // SAFETY: the function's type, as `<sys/platform/x86.h>` declares it:
        // `const struct cpuid_feature *__x86_get_cpuid_feature_leaf (unsigned int)`.
        let leaf: unsafe extern "C" fn(libc::c_uint) -> *const CpuidLeaf =
            unsafe { std::mem::transmute(leaf) };
        // SAFETY: it takes any index and returns a pointer to glibc's static data for it (all
        // zero for an index it does not know), read-only after start-up, or none.
        let found = unsafe { leaf(index).as_ref() }?;
        // A leaf's registers are never all zero once `cpuid` filled them (leaf 1's eax holds
        // the family and model; leaf 7's, its highest subleaf, with ebx's features).
        (found.cpuid != [0; 4]).then_some(*found)
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = index;
        None
    }
}

/// glibc's `struct cpuid_feature`: a leaf as `cpuid` gave it (eax, ebx, ecx, edx), and which
/// of its features are usable (the same bits, set where glibc found the feature usable: the
/// CPU has it and the kernel enabled it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CpuidLeaf {
    /// The registers as `cpuid` returned them.
    pub cpuid: [u32; 4],
    /// The usable features, in the same bits.
    pub active: [u32; 4],
}

/// `sched_getcpu()` - the CPU the calling thread runs on now (it may move at once); see
/// sched_getcpu(3). `None` if the kernel does not say.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// The calling process's pid, from a page of this process's own that every fork wipes: a
/// pool's job or a same-code input asks whether it runs in the process that owns its workers
/// and arenas, and the answer needs no `getpid` but the first in each process.
///
/// The page is mapped `MADV_WIPEONFORK` (Linux 4.14+): in a process made by `fork` (or any
/// `clone` without `CLONE_VM`, the raw system call included, which runs no `pthread_atfork`
/// handler) the kernel gives it back as zeros, so a child finds no pid there and asks the
/// kernel for its own. A process made with `CLONE_VM` but not `CLONE_THREAD` shares the
/// memory, this page and every arena mapping with its parent, and would see the parent's pid;
/// bytejail's one such process, the tracer, runs raw syscalls only and never asks; a host
/// that makes one that runs host code must not use bytejail from it. Without `MADV_WIPEONFORK` every call is a `getpid`.
pub fn current_pid() -> libc::pid_t {
    let Some(wiped) = fork_wiped() else {
        return getpid();
    };
    match wiped.pid.load(Ordering::Relaxed) {
        0 => {
            let pid = getpid();
            wiped.pid.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// This process among every process that ever had its pid: its pid, and the time
/// (`CLOCK_MONOTONIC`) it first asked, kept on the page every fork wipes (see
/// [`current_pid`]). A process that inherited a value (a process forked since, and any process
/// it forks, whatever pid it gets) has another: a pid given again is given to a process born
/// after the first one ended, which asks later than that one did. Without `MADV_WIPEONFORK`,
/// the pid alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incarnation {
    pid: libc::pid_t,
    since: u64,
}

/// The calling process's [`Incarnation`].
pub fn incarnation() -> Incarnation {
    let pid = current_pid();
    let Some(wiped) = fork_wiped() else {
        return Incarnation { pid, since: 0 };
    };
    let mut since = wiped.since.load(Ordering::Relaxed);
    if since == 0 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into a local.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let now = (now.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(now.tv_nsec as u64)
            .max(1);
        since = match wiped
            .since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => now,
            Err(first) => first,
        };
    }
    Incarnation { pid, since }
}

/// What a fork wipes ([`current_pid`]'s page): zeros are "not asked yet", "none".
#[repr(C)]
pub struct ForkWiped {
    pid: AtomicI32,
    since: AtomicU64,
    /// The tracer's count of this process's quiet threads (see `tracer::QuietThread`): a
    /// process forked since has none of them.
    pub quiet_threads: AtomicU64,
}

/// The page every fork wipes, mapped the first time it is asked for; `None` if it cannot be.
pub fn fork_wiped() -> Option<&'static ForkWiped> {
    /// The page, once mapped; a non-null dangling marker when it cannot be.
    static PAGE: AtomicPtr<ForkWiped> = AtomicPtr::new(std::ptr::null_mut());
    let unavailable = NonNull::<ForkWiped>::dangling().as_ptr();
    let mut page = PAGE.load(Ordering::Acquire);
    if page.is_null() {
        page = map_pid_page().unwrap_or(unavailable);
        if let Err(installed) = PAGE.compare_exchange(
            std::ptr::null_mut(),
            page,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            if page != unavailable {
                // SAFETY: our own page, never published.
                unsafe { libc::munmap(page.cast(), PAGE_SIZE) };
            }
            page = installed;
        }
    }
    // SAFETY: the page stays mapped for the life of the process (never unmapped once
    // published; a fork keeps the mapping, zeroed); zeros are a valid ForkWiped, aligned at
    // its start.
    (page != unavailable).then(|| unsafe { &*page })
}

const PAGE_SIZE: usize = 4096;

/// `mmap` one private page and `madvise(MADV_WIPEONFORK)` it; see madvise(2).
fn map_pid_page() -> Option<*mut ForkWiped> {
    map_advised(PAGE_SIZE, libc::MADV_WIPEONFORK).map(|page| page.as_ptr().cast())
}

/// `len` bytes of fresh private anonymous memory (`PROT_READ | PROT_WRITE`, zeros, at a
/// kernel-chosen page-aligned address) given `advice` (`MADV_WIPEONFORK`, `MADV_DONTFORK`);
/// see mmap(2), madvise(2). `None` if either call fails (nothing is left mapped then). The
/// mapping is the caller's, never unmapped here.
pub fn map_advised(len: usize, advice: libc::c_int) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at a kernel-chosen address aliases nothing.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: advice on the mapping just made.
    if unsafe { libc::madvise(ptr, len, advice) } != 0 {
        // SAFETY: our own mapping, not published.
        unsafe { libc::munmap(ptr, len) };
        return None;
    }
    NonNull::new(ptr.cast())
}

/// `getpid()`; see getpid(2).
pub fn getpid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getpid() }
}

/// `geteuid()`; see geteuid(2).
pub fn geteuid() -> libc::uid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether no process `pid` exists (`kill(pid, 0)` fails with `ESRCH`); a zombie still
/// exists. See kill(2).
pub fn no_such_process(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let failed = unsafe { libc::kill(pid, 0) } == -1;
    failed && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds)`; see socketpair(2), unix(7).
/// Message boundaries are kept, so one request is one `sendmsg` and one `recvmsg`.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The most descriptors [`send_with_fds`] passes at once.
pub const MAX_PASSED_FDS: usize = 5;

/// `sendmsg(fd, {value's bytes, SCM_RIGHTS fds}, MSG_NOSIGNAL)`; see sendmsg(2), unix(7).
/// One message holding the bytes of `value` (plain data: its padding goes to the kernel as is)
/// and the descriptors (1 to [`MAX_PASSED_FDS`]). EPIPE, not SIGPIPE, when the peer is gone.
pub fn send_with_fds<T: Copy>(fd: RawFd, value: &T, fds: &[RawFd]) -> io::Result<()> {
    assert!(!fds.is_empty() && fds.len() <= MAX_PASSED_FDS);
    let fds_len = std::mem::size_of_val(fds);
    // cmsghdr (16 bytes) then the fds, in a buffer of at least CMSG_SPACE(fds_len) bytes.
    #[repr(C, align(8))]
    struct Control([u8; 48]);
    let mut control = Control([0; 48]);
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(fds_len as u32) as usize,
            libc::CMSG_LEN(fds_len as u32) as usize,
        )
    };
    assert!(space <= control.0.len());
    let mut iov = libc::iovec {
        iov_base: value as *const T as *mut libc::c_void,
        iov_len: std::mem::size_of::<T>(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is aligned and large enough for one header with the fds
    // (asserted above); CMSG_FIRSTHDR and CMSG_DATA point inside it.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = len as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast(), fds.len());
    }
    loop {
        // SAFETY: msg points at locals that outlive the call; the kernel only reads them.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            // SEQPACKET sends a message whole or not at all.
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `recv(fd, buf, len, 0)`; see recv(2). Retries on EINTR. 0 means the peer is gone.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `pidfd_open(pid, 0)`; see pidfd_open(2). Race-free only for a child that nobody else can
/// reap: until it is reaped its pid cannot be reused.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `kill(pid, SIGKILL)`; see kill(2). Only for an unreaped child of this process, whose pid
/// cannot have been reused.
pub fn kill_child(pid: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A descriptor of one network namespace with no interface but a downed loopback, shared by
/// every profile worker of this process (`setns` into it costs about 6 us; a new namespace per
/// worker about 0.5 ms). Made once, on a short-lived thread that `unshare(CLONE_NEWNET)`s
/// (namespaces belong to threads, so the host's own threads keep theirs). `None` where the
/// process may not make one (no `CAP_SYS_ADMIN`).
pub fn empty_netns() -> Option<RawFd> {
    static NETNS: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    NETNS
        .get_or_init(|| {
            std::thread::spawn(|| {
                // SAFETY: changes only this short-lived thread's network namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return None;
                }
                std::fs::File::open("/proc/thread-self/ns/net")
                    .ok()
                    .map(OwnedFd::from)
            })
            .join()
            .ok()
            .flatten()
        })
        .as_ref()
        .map(|fd| fd.as_raw_fd())
}

/// A pidfd of this process, for workers in a PID namespace of their own to check, right after
/// they armed `PR_SET_PDEATHSIG`, that the host still lives (`getppid()` says 0 there
/// whoever the parent is). Opened once per process: a forked child opens its own.
pub fn own_pidfd() -> io::Result<RawFd> {
    static OWN: std::sync::Mutex<Option<(Incarnation, FdCopy)>> = std::sync::Mutex::new(None);
    let me = incarnation();
    let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    match &*own {
        Some((owner, fd)) if *owner == me => Ok(fd.fd()),
        inherited => {
            // A forked child closes its copy of the parent's descriptor, if it has not itself.
            if let Some((_, fd)) = inherited {
                fd.close_if_still_open();
            }
            let fd = pidfd_open(getpid())?;
            let copy = FdCopy::of(fd.as_raw_fd());
            // Kept open for as long as the process lives.
            std::mem::forget(fd);
            *own = Some((me, copy));
            Ok(copy.fd())
        }
    }
}

/// The Landlock ABI version this kernel offers (`landlock_create_ruleset(NULL, 0,
/// LANDLOCK_CREATE_RULESET_VERSION)`; see landlock_create_ruleset(2)), 0 when it offers none.
/// Asked once per process.
pub fn landlock_abi() -> u32 {
    static ABI: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *ABI.get_or_init(|| {
        const LANDLOCK_CREATE_RULESET_VERSION: usize = 1;
        // SAFETY: a query: no pointer is read or written.
        let v = unsafe {
            raw::syscall3(
                libc::SYS_landlock_create_ruleset,
                0,
                0,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        u32::try_from(v).unwrap_or(0)
    })
}

/// The `Seccomp:` mode of a process that has exited but is not reaped yet, from
/// `/proc/<pid>/status` (a zombie keeps it); `None` when it cannot be read.
pub fn seccomp_mode(pid: libc::pid_t) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))
        .and_then(|mode| mode.trim().parse().ok())
}

/// Whether this process may fork a child with the `clone` flags `flags` (namespaces, say):
/// forks one that exits at once, and reaps it.
pub fn can_clone_with(flags: usize) -> bool {
    // SAFETY: the child only calls raw exit.
    match unsafe { clone_with_pidfd(flags) } {
        Ok(Forked::Child) => raw::exit(0),
        Ok(Forked::Parent { pid, .. }) => {
            wait4(pid).is_ok_and(|r| libc::WIFEXITED(r.status) && libc::WEXITSTATUS(r.status) == 0)
        }
        Err(_) => false,
    }
}

/// `madvise(addr, len, MADV_POPULATE_WRITE)` over the whole pages inside `buf`: faults them in
/// with one call; see madvise(2). For a large buffer about to be filled: here one call costs
/// well under half of what the page faults it saves would (2 MiB: ~0.2 ms against ~0.5 ms).
/// Best effort: where the kernel lacks it (before 5.14) the pages fault in as usual.
pub fn populate(buf: &mut [std::mem::MaybeUninit<u8>]) {
    let start = (buf.as_ptr() as usize).next_multiple_of(PAGE_SIZE);
    let end = (buf.as_ptr() as usize + buf.len()) & !(PAGE_SIZE - 1);
    if end > start {
        // SAFETY: [start, end) lies inside `buf`, which this call borrows mutably; populating
        // only faults its pages in, as writing would, and changes no byte a reader can see.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    /// A file of `pages` pages with the pages in `written` holding 0xaa (the rest holes).
    fn file_with(pages: usize, written: &[usize]) -> SharedFile {
        let mut file = SharedFile::new(pages * PAGE).unwrap();
        for &page in written {
            file.write_bytes(page * PAGE, &[0xaa; PAGE]);
        }
        file
    }

    fn bytes(file: &SharedFile, page: usize) -> Vec<u8> {
        (0..PAGE / 8)
            .map(|i| file.read_u64(page * PAGE + i * 8) as u8)
            .collect()
    }

    /// `zero_range` zeroes exactly the range, whether it starts in data (the first probe,
    /// `SEEK_HOLE`, finds the run whole) or in a hole, with one run or several.
    #[test]
    fn zero_range_zeroes_the_range_and_nothing_else() {
        let cases: [(&[usize], usize, usize); 5] = [
            (&[1, 2, 5, 9], 1, 8),    // starts in data, several runs, one past the range
            (&[2, 5], 1, 8),          // starts in a hole
            (&[1, 2, 3, 4], 1, 4),    // one run filling the range
            (&[0, 8], 1, 7),          // data only outside the range
            (&[3, 4, 5, 6, 7], 2, 7), // one run to the end
        ];
        for (written, start, len) in cases {
            let mut file = file_with(10, written);
            file.zero_range(start * PAGE, len * PAGE).unwrap();
            for page in 0..10 {
                let inside = page >= start && page < start + len;
                let expect = if written.contains(&page) && !inside {
                    0xaa
                } else {
                    0
                };
                assert!(
                    bytes(&file, page).iter().all(|&b| b == expect),
                    "{written:?} zeroing pages {start}..{}: page {page}",
                    start + len
                );
            }
        }
    }

    /// Past `ZERO_IN_PLACE_MAX` bytes of data the range is punched out: zeros all the same.
    #[test]
    fn zero_range_punches_large_data_out() {
        let written: Vec<usize> = (0..100).collect();
        let mut file = file_with(100, &written);
        file.zero_range(0, 100 * PAGE).unwrap();
        assert!((0..100).all(|p| bytes(&file, p).iter().all(|&b| b == 0)));
    }

    /// The cached pid is this process's, and a forked child sees its own (the page that
    /// holds it is wiped by the fork).
    #[test]
    fn current_pid_is_this_process_and_a_fork_s_own() {
        assert_eq!(current_pid(), getpid());
        // SAFETY: the child makes only raw system calls (getpid, and the raw read of the wiped
        // page through `current_pid`, whose page is mapped already) and leaves with _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let ok = current_pid() == getpid() && current_pid() != 0;
            // SAFETY: ends the forked child without running the test harness's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
        assert_eq!(current_pid(), getpid());
    }
}
