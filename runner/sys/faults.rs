//! A process's page faults, told without a system call: a software perf event on the process
//! that samples every page fault into a ring the host has mapped, whose head the kernel moves
//! with each sample.
//!
//! Used by a same-code worker's host to learn that no page of the arena came to be during the
//! last input without the reset's `fstat` (see `Arena::reset_memory`): in strict mode and
//! `strict-bpf` a page of the worker's scratch or stack comes to be only through a page fault
//! of the worker, in the guest's own code or in the kernel's copy for its `read` or `write` (the
//! event counts faults in kernel mode too: it is opened with `exclude_kernel` off, which needs
//! `kernel.perf_event_paranoid` at most 1 or `CAP_PERFMON`). A head that has not moved since
//! the last scan means no fault since it, so no new page.
//!
//! The sample is taken as the fault begins, before the page is there: a head read while the
//! worker still runs may count a fault whose page a scan right after does not find yet. An
//! honest input ends (its "done") after its faults; one whose guest said "done" itself and
//! runs on was never promised a clean next input (see `Arena::reset_memory`).
//!
//! Where the event cannot be opened (a `perf_event_paranoid` of 2 or more without the
//! capability, a seccomp profile around bytejail, no perf events in the kernel) there is no
//! watch, and each input's reset makes its `fstat` as before.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// `struct perf_event_attr` as of `PERF_ATTR_SIZE_VER0` (64 bytes), the fields this module
/// sets; see perf_event_open(2).
#[repr(C)]
#[derive(Default)]
struct Attr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// The flag bits (`disabled`, `inherit`, ..., `exclude_hv` is bit 6).
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_PAGE_FAULTS: u64 = 2;
const EXCLUDE_HV: u64 = 1 << 6;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// Where `data_head` lies in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;

/// The metadata page and one page of samples: the smallest ring (its data pages a power of
/// two). Mapped read-only, the kernel overwrites old samples and the head keeps moving.
const MAP_LEN: usize = 2 * 4096;

/// Watches told apart (see [`FaultWatch::id`]).
static WATCHES: AtomicU64 = AtomicU64::new(1);

/// A software perf event sampling every page fault of one process (see the module docs).
#[derive(Debug)]
pub struct FaultWatch {
    /// The ring's pages, read-only and `MADV_DONTFORK` (a process forked from this one never
    /// has them: its copy must be forgotten, not dropped).
    map: NonNull<u8>,
    _event: OwnedFd,
    id: u64,
}

impl FaultWatch {
    /// Watches the page faults of process `pid` from now on, those it takes in kernel mode
    /// included.
    pub fn new(pid: libc::pid_t) -> io::Result<FaultWatch> {
        let attr = Attr {
            kind: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<Attr>() as u32,
            config: PERF_COUNT_SW_PAGE_FAULTS,
            sample_period: 1,
            flags: EXCLUDE_HV,
            ..Attr::default()
        };
        // SAFETY: perf_event_open reads `size` bytes of the attr; the fd it returns is ours.
        let event = unsafe {
            let fd = libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const Attr,
                pid,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd as i32)
        };
        // SAFETY: a new read-only shared mapping of the event's ring at a kernel-chosen
        // address aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_LEN,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&event),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let watch = FaultWatch {
            map: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mapped at 0"))?,
            _event: event,
            id: WATCHES.fetch_add(1, Ordering::Relaxed),
        };
        // SAFETY: advice on the mapping just made.
        if unsafe { libc::madvise(ptr, MAP_LEN, libc::MADV_DONTFORK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(watch)
    }

    /// This watch among all of the process's: heads of two watches say nothing of each other.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The ring's head: it moves with each page fault of the process (acquire: what the
    /// process did before a fault's sample, and the sample itself, are seen before what it did
    /// after).
    pub fn head(&self) -> u64 {
        // SAFETY: `data_head` is an aligned u64 inside the mapping, which lives as long as
        // `self`; the kernel writes it with a release store.
        unsafe { (*self.map.as_ptr().add(DATA_HEAD).cast::<AtomicU64>()).load(Ordering::Acquire) }
    }
}

impl Drop for FaultWatch {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.map.as_ptr().cast(), MAP_LEN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that touches page `n` of a shared file (writes it: `w`, reads it: `r`), has
    /// the kernel write it (reads a byte from a pipe into it: `k`) or read it (writes it to a
    /// pipe: `K`), or does nothing (`n`), one command at a time.
    struct Child {
        pid: libc::pid_t,
        go: std::fs::File,
        done: std::fs::File,
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        crate::sys::pipe().unwrap()
    }

    impl Child {
        fn start(pages: usize) -> Child {
            use std::os::fd::AsRawFd;
            // SAFETY: a new memfd, sized and mapped shared (and inherited by the child: no
            // `MADV_DONTFORK`); the mapping stays for the test process's life.
            let map = unsafe {
                let fd = libc::memfd_create(c"faults-test".as_ptr(), libc::MFD_CLOEXEC);
                assert!(fd >= 0 && libc::ftruncate(fd, (pages * 4096) as i64) == 0);
                let map = libc::mmap(
                    std::ptr::null_mut(),
                    pages * 4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                );
                assert_ne!(map, libc::MAP_FAILED);
                libc::close(fd);
                map.cast::<u8>()
            };
            let (go_r, go) = pipe();
            let (done, done_w) = pipe();
            let (feed_r, feed_w) = pipe();
            let (sink_r, sink_w) = pipe();
            // SAFETY: the child runs raw syscalls and exits; it never returns.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let mut command = [0u8; 2];
                loop {
                    // SAFETY: raw reads and writes on fds this child holds, into the file's
                    // pages (in bounds: the test sends pages it has).
                    unsafe {
                        if libc::read(go_r.as_raw_fd(), command.as_mut_ptr().cast(), 2) != 2 {
                            libc::_exit(0);
                        }
                        let page = map.add(usize::from(command[1]) * 4096);
                        match command[0] {
                            b'w' => page.write_volatile(1),
                            b'r' => {
                                page.read_volatile();
                            }
                            b'k' => {
                                libc::write(feed_w.as_raw_fd(), b"x".as_ptr().cast(), 1);
                                libc::read(feed_r.as_raw_fd(), page.cast(), 1);
                            }
                            b'K' => {
                                libc::write(sink_w.as_raw_fd(), page.cast(), 1);
                                libc::read(sink_r.as_raw_fd(), command.as_mut_ptr().cast(), 1);
                            }
                            _ => {}
                        }
                        libc::write(done_w.as_raw_fd(), b"d".as_ptr().cast(), 1);
                    }
                }
            }
            Child {
                pid,
                go: go.into(),
                done: done.into(),
            }
        }

        fn ask(&self, command: u8, page: u8) {
            use std::io::{Read, Write};
            (&self.go).write_all(&[command, page]).unwrap();
            (&self.done).read_exact(&mut [0u8]).unwrap();
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            // SAFETY: our child: killed and reaped.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }

    /// Every way the child can make a page of the file come to be moves the head, once; a
    /// page already there, touched again, does not. Where the event cannot be opened here
    /// (not root, `perf_event_paranoid` over 1), says so and checks nothing.
    #[test]
    fn each_first_touch_of_a_page_moves_the_head_and_a_second_does_not() {
        let child = Child::start(16);
        let watch = match FaultWatch::new(child.pid) {
            Ok(watch) => watch,
            Err(e) => {
                eprintln!("skipped: no page-fault event here ({e})");
                return;
            }
        };
        child.ask(b'n', 0); // whatever the child faults in as it starts
        for (page, command) in [(1, b'w'), (2, b'r'), (3, b'k'), (4, b'K')] {
            let before = watch.head();
            child.ask(command, page);
            let first = watch.head();
            child.ask(command, page);
            child.ask(b'n', 0);
            assert_ne!(first, before, "{}: the first touch", command as char);
            assert_eq!(watch.head(), first, "{}: the second touch", command as char);
        }
        // A second watch has heads of its own.
        let other = FaultWatch::new(child.pid).unwrap();
        assert_ne!(other.id(), watch.id());
    }
}
