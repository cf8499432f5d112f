//! Ending a running job from another thread.
//!
//! A [`Cancel`] is a handle on an `eventfd` that the host's wait for a job polls beside the
//! worker's pipes. [`Cancel::cancel`] makes it readable: every job running with that handle
//! (in [`RunOptions::cancel`](crate::RunOptions::cancel)) is then killed and reported as
//! [`Outcome::Cancelled`](crate::Outcome::Cancelled), with what it wrote so far; a job started
//! with a handle already cancelled ends the same way at once. One handle may serve many jobs
//! (a batch, a pool): cancelling it ends them all. It cannot be reset.
#![allow(unsafe_code)] // eventfd, write, poll

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// A handle that cancels the jobs run with it (see the [module](self) docs). Clones share the
/// handle; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Cancel {
    fd: Arc<OwnedFd>,
}

impl Cancel {
    /// A new handle, not cancelled.
    pub fn new() -> io::Result<Cancel> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Cancel { fd: Arc::new(fd) })
    }

    /// Cancels every job running with this handle, and every one started with it from now on.
    pub fn cancel(&self) {
        let one = 1u64;
        // SAFETY: eight bytes from a local to the eventfd. It cannot overflow: a counter that
        // is already non-zero stays readable whatever is added.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one pollfd, no wait.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) == 1 }
    }

    /// The report of a job started with a handle already cancelled: it never ran (nothing
    /// forked, nothing woken), so no output, no time and no CPU.
    pub(crate) fn before_start(options: &crate::RunOptions) -> Option<crate::Report> {
        let cancelled = options.cancel.as_ref().is_some_and(Cancel::is_cancelled);
        cancelled.then(|| crate::Report {
            outcome: crate::Outcome::Cancelled,
            output: Vec::new(),
            output_truncated: false,
            wall: std::time::Duration::ZERO,
            user: std::time::Duration::ZERO,
            sys: std::time::Duration::ZERO,
            max_rss_kib: 0,
            syscall: None,
        })
    }

    /// The descriptor the host polls: readable once cancelled.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Two handles are equal when they are clones of one another.
impl PartialEq for Cancel {
    fn eq(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.fd, &other.fd)
    }
}

impl Eq for Cancel {}
