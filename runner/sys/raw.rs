//! The async-signal-safe layer: raw syscalls and the kernel's own structures, for the code
//! that runs between `fork` and the guest (the worker's stages, the zygote's loop).
//!
//! Nothing here allocates, frees, locks, touches errno or calls into libc: each function is a
//! `syscall` instruction, and each type is plain data laid out as the kernel reads it. Return
//! values are the kernel's: `-errno` on error. Anything that may allocate lives in the parent
//! module, which the post-fork code never calls.

use std::arch::asm;

/// `syscall(nr, a0..a5)` - issue a system call with the `syscall` instruction.
///
/// # Safety
/// The caller upholds the contract of syscall `nr` for the given arguments (valid pointers,
/// no memory the Rust abstract machine owns is invalidated behind its back).
#[inline(always)]
pub unsafe fn syscall6(
    nr: i64,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
) -> isize {
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
/// The kernel's `struct sigaction` for `rt_sigaction` (not libc's, whose layout differs).
#[repr(C)]
pub struct KernelSigaction {
    pub handler: usize,
    pub flags: u64,
    pub restorer: usize,
    /// The kernel's sigset: one bit per signal (see [`sigbit`]), 8 bytes.
    pub mask: u64,
}

impl KernelSigaction {
    /// `SIG_DFL`, no flags, nothing blocked: the default action.
    pub const DEFAULT: KernelSigaction = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
}

/// The kernel's `stack_t` for `sigaltstack`.
#[repr(C)]
pub struct StackT {
    pub sp: usize,
    pub flags: i32,
    pub size: usize,
}

/// `SA_RESTORER` (x86-64): `restorer` is valid. The kernel ABI constant, absent from libc.
pub const SA_RESTORER: i32 = 0x0400_0000;

/// Bit of `sig` in a kernel sigset.
pub const fn sigbit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// A zero `struct timespec`: `ppoll` returns at once.
pub static ZERO_TIME: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// A thread's rseq registration (see [`super::rseq_registration`]): the area's address and
/// the lengths to try when unregistering it. Plain data, handed to the worker before the fork.
#[derive(Clone, Copy)]
pub struct RseqRegistration {
    pub addr: usize,
    pub lengths: [u32; 2],
}

/// The rseq signature glibc registers with on x86.
pub const RSEQ_SIG: u32 = 0x5305_3053;
