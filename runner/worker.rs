//! The worker side of a run: everything that happens between `fork` and the guest's end.
//!
//! Two parts live here:
//! - the *blob*: a small position-independent piece of assembly (trampoline, fault handler,
//!   signal restorer, re-raise stubs) that the host copies into the first page of a shared
//!   region for each run. It addresses its data only relative to itself, so it works at any
//!   address and needs nothing from the host binary once the guest runs;
//! - [`worker_main`]: the post-fork setup, run in the child of `clone`.
//!
//! After fork this process may hold a copy of a multi-threaded host whose other threads held
//! the allocator's or stdio's locks at that instant. So the worker path never allocates, frees,
//! locks, prints, unwinds or runs destructors: it issues raw syscalls on data the host built
//! before the fork ([`WorkerPlan`], the blob region), and ends in the guest or in raw
//! `SYS_exit`.
#![allow(unsafe_code)]

use std::arch::global_asm;

use crate::sys::raw;

/// The shared region of one run, all offsets from its start.
pub(crate) mod layout {
    /// Page 0: the blob's code, read+execute.
    pub const CODE: usize = 0;
    /// Page 1: the run's context (written by the host) and the worker's record (read by it).
    pub const DATA: usize = 0x1000;
    /// An XSAVE area in its initial state, restored before entry so that no vector or x87
    /// register of the host reaches the guest. 64-byte aligned, large enough for AVX-512.
    pub const XSAVE: usize = 0x2000;
    pub const XSAVE_LEN: usize = 0x4000;
    /// The alternate signal stack for the fault handler (a stack overflow must still report).
    pub const ALTSTACK: usize = 0x6000;
    pub const ALTSTACK_LEN: usize = 0xa000;
    /// The seccomp-bpf program to install, in filter mode (at most 4096 instructions).
    pub const FILTER: usize = 0x10000;
    pub const FILTER_LEN: usize = 0x8000;
    pub const LEN: usize = 0x18000;
    const _: () = assert!(XSAVE % 64 == 0 && XSAVE + XSAVE_LEN <= ALTSTACK);
    const _: () = assert!(ALTSTACK + ALTSTACK_LEN == FILTER);
    const _: () = assert!(FILTER + FILTER_LEN == LEN && FILTER_LEN >= 4096 * 8);
    const _: () = assert!(REC_END <= 0x800, "record overlaps the private stack");

    // Context, written by the host before fork (offsets within DATA).
    /// Initial general registers in `GPR_NAMES` order; the `rsp` slot holds the guest's rsp.
    pub const CTX_GPR: usize = 0x000;
    /// Absolute address of the guest's entry point.
    pub const CTX_ENTRY: usize = 0x080;
    /// Non-zero when the CPU and kernel support XSAVE (use `xrstor`, else reset SSE by hand).
    pub const CTX_XSAVE: usize = 0x088;
    /// Non-zero: unmap everything outside `[CTX_KEEP_START, CTX_KEEP_END)` before the guest.
    pub const CTX_SCRUB: usize = 0x090;
    pub const CTX_KEEP_START: usize = 0x098;
    pub const CTX_KEEP_END: usize = 0x0a0;
    /// 0: strict mode; 1: install the filter described by `CTX_FPROG`.
    pub const CTX_MODE: usize = 0x0a8;
    /// A `struct sock_fprog`: length (u16, in a u64 slot), then the program's address.
    pub const CTX_FPROG: usize = 0x0b0;
    /// The end of the user address space (see `sys::user_address_space_end`).
    pub const CTX_USER_END: usize = 0x0c0;
    /// Non-zero: a parked worker. After strict mode it waits in `read(CTX_CONTROL_FD, .., 1)`
    /// until the host writes the job's "go" byte (EOF: the host is done with it, exit quietly).
    pub const CTX_PARK: usize = 0x0c8;
    /// The descriptor a parked worker waits on: 0 for a pool worker (the go byte comes ahead
    /// of the input on the input pipe), [`GO_FD`] for a same-code worker.
    pub const CTX_CONTROL_FD: usize = 0x0d0;
    /// Non-zero: a same-code worker. After "done" (see `CTX_DONE`) it parks again instead of
    /// exiting.
    pub const CTX_LOOP: usize = 0x0d8;
    /// The input's sequence number, written by the host before each go byte.
    pub const CTX_SEQ: usize = 0x0e0;
    /// Non-zero: a pool worker, which says "ready" (one zero byte on fd 1, read by the pool
    /// before the worker is handed out) once set up, just before it parks the first time.
    pub const CTX_READY: usize = 0x0e8;
    /// Non-zero: when the guest returns, the trampoline records it and writes the 8 bytes at
    /// `CTX_SEQ` to [`DONE_FD`] ("done") before it exits or, with `CTX_LOOP`, parks again.
    pub const CTX_DONE: usize = 0x0f0;
    /// Non-zero when `wrfsbase`/`wrgsbase` work in user mode: the trampoline then sets both
    /// bases to zero, so no guest sees the host's TLS address or an earlier input's bases.
    pub const CTX_FSGSBASE: usize = 0x0f8;
    /// Control pipes: a same-code worker reads go bytes from `GO_FD` (fd 0 stays the empty
    /// input, 1 the output), a pool worker holds still there after its job; same-code and pool
    /// workers write "done" messages to `DONE_FD`.
    pub const GO_FD: usize = 3;
    pub const DONE_FD: usize = 4;

    // Record, written by the worker (offsets within DATA). Best-effort: the guest can write it.
    pub const REC_STATE: usize = 0x100;
    pub const REC_GPR: usize = 0x108;
    pub const REC_RFLAGS: usize = 0x188;
    pub const REC_STAGE: usize = 0x190;
    pub const REC_ERRNO: usize = 0x198;
    pub const FAULT_SIGNO: usize = 0x200;
    pub const FAULT_CODE: usize = 0x208;
    pub const FAULT_ADDR: usize = 0x210;
    pub const FAULT_RIP: usize = 0x218;
    /// `uc_mcontext.gregs` at the fault, 23 words in the kernel's order.
    pub const FAULT_GREGS: usize = 0x220;
    /// SIGSYS only: `si_syscall` and `si_arch` (which syscall a filter trapped, through which
    /// entry); `FAULT_ADDR` then holds `si_call_addr`, the address after the instruction.
    pub const FAULT_SYSNR: usize = 0x2d8;
    pub const FAULT_ARCH: usize = 0x2e0;
    /// End of the record.
    pub const REC_END: usize = 0x2e8;
    /// A parked worker's pages to fault in before it parks, off the job's clock: the code's
    /// first page and the input's (read), the scratch's first page and the stack's top
    /// (written with the zeros they hold). Four addresses, written by the host.
    pub const CTX_TOUCH: usize = 0x300;
    const _: () = assert!(CTX_TOUCH >= REC_END && CTX_TOUCH + 32 <= 0x800);
    /// `RLIMIT_AS` the blob sets once it has unmapped the host (whose mappings would count),
    /// before seccomp; 0 leaves it unlimited.
    pub const CTX_AS_LIMIT: usize = 0x320;
    /// A `struct sock_fprog` (length in a u64 slot, then the address) of the filter a profile
    /// worker installs before its profile's (see [`crate::walls_filter`]); length 0: none.
    pub const CTX_WALLS_FPROG: usize = 0x330;
    /// That filter's instructions.
    pub const CTX_WALLS_PROG: usize = 0x340;
    pub const WALLS_PROG_MAX: usize = 140;
    const _: () = assert!(CTX_AS_LIMIT >= CTX_TOUCH + 32 && CTX_WALLS_FPROG >= CTX_AS_LIMIT + 8);
    const _: () = assert!(CTX_WALLS_PROG + WALLS_PROG_MAX * 8 <= 0x800);
    /// A traced worker's gate (a u32): 0 until the host's tracer has seized the worker, then
    /// [`GATE_TRACED`], or [`GATE_UNTRACED`] when the tracer could not (the worker then
    /// installs its own recording handlers, whose details the report marks unverified). The
    /// worker waits on it with `FUTEX_WAIT` (a shared futex: the data page is a shared mapping
    /// of the arena's file) right after it has mapped the region.
    pub const CTX_TRACE_GATE: usize = 0x7f8;
    pub const GATE_TRACED: u32 = 1;
    pub const GATE_UNTRACED: u32 = 2;
    const _: () = assert!(CTX_TRACE_GATE >= CTX_WALLS_PROG + WALLS_PROG_MAX * 8);
    const _: () = assert!(CTX_TRACE_GATE + 8 <= 0x800);

    /// Values of `REC_STATE` (0: nothing recorded).
    pub const STATE_RETURNED: u64 = 1;
    pub const STATE_FAULT: u64 = 2;
    pub const STATE_SETUP_FAILED: u64 = 3;

    /// Offset of `uc_mcontext.gregs[REG_RIP]` / `[REG_EFL]` in a kernel `ucontext`.
    pub const UC_RIP: usize = 40 + 16 * 8;
    pub const UC_EFL: usize = 40 + 17 * 8;
}

use layout::*;

// The blob. Intel syntax; every memory reference is rip-relative to `.Lbj_base`, a local label
// resolved by the assembler, so the bytes run unchanged at any address.
global_asm!(
    ".pushsection .text.bytejail_blob,\"ax\",@progbits",
    ".p2align 12",
    ".globl bytejail_blob_start",
    ".hidden bytejail_blob_start",
    "bytejail_blob_start:",
    ".Lbj_base:",
    // --- enter: reached by a jump from worker_main, in strict mode already. ---
    "lea rsp, [rip + .Lbj_base + {data} + 0x1000]",
    "cmp qword ptr [rip + .Lbj_base + {data} + {ctx_xsave}], 0",
    "je .Lbj_sse_reset",
    // XRSTOR with XSTATE_BV = 0 puts every enabled component in its initial state.
    "mov eax, -1",
    "mov edx, -1",
    "xrstor64 [rip + .Lbj_base + {xsave}]",
    "jmp .Lbj_flags",
    ".Lbj_sse_reset:",
    "fninit",
    "pxor xmm0, xmm0", "pxor xmm1, xmm1", "pxor xmm2, xmm2", "pxor xmm3, xmm3",
    "pxor xmm4, xmm4", "pxor xmm5, xmm5", "pxor xmm6, xmm6", "pxor xmm7, xmm7",
    "pxor xmm8, xmm8", "pxor xmm9, xmm9", "pxor xmm10, xmm10", "pxor xmm11, xmm11",
    "pxor xmm12, xmm12", "pxor xmm13, xmm13", "pxor xmm14, xmm14", "pxor xmm15, xmm15",
    "push 0x1f80",
    "ldmxcsr [rsp]",
    "pop rax",
    ".Lbj_flags:",
    "cmp qword ptr [rip + .Lbj_base + {data} + {ctx_fsgsbase}], 0",
    "je .Lbj_regs",
    "xor eax, eax",
    "wrfsbase rax",
    "wrgsbase rax",
    ".Lbj_regs:",
    // Known flags: IF and the reserved bit only (DF, AC, TF clear).
    "push 0x202",
    "popfq",
    "mov rsp, [rip + .Lbj_base + {data} + {ctx_gpr} + 7*8]",
    "lea rax, [rip + .Lbj_returned]",
    "mov [rsp], rax",
    "mov rax, [rip + .Lbj_base + {data} + {ctx_gpr} + 0*8]",
    "mov rbx, [rip + .Lbj_base + {data} + {ctx_gpr} + 1*8]",
    "mov rcx, [rip + .Lbj_base + {data} + {ctx_gpr} + 2*8]",
    "mov rdx, [rip + .Lbj_base + {data} + {ctx_gpr} + 3*8]",
    "mov rsi, [rip + .Lbj_base + {data} + {ctx_gpr} + 4*8]",
    "mov rdi, [rip + .Lbj_base + {data} + {ctx_gpr} + 5*8]",
    "mov rbp, [rip + .Lbj_base + {data} + {ctx_gpr} + 6*8]",
    "mov r8,  [rip + .Lbj_base + {data} + {ctx_gpr} + 8*8]",
    "mov r9,  [rip + .Lbj_base + {data} + {ctx_gpr} + 9*8]",
    "mov r10, [rip + .Lbj_base + {data} + {ctx_gpr} + 10*8]",
    "mov r11, [rip + .Lbj_base + {data} + {ctx_gpr} + 11*8]",
    "mov r12, [rip + .Lbj_base + {data} + {ctx_gpr} + 12*8]",
    "mov r13, [rip + .Lbj_base + {data} + {ctx_gpr} + 13*8]",
    "mov r14, [rip + .Lbj_base + {data} + {ctx_gpr} + 14*8]",
    "mov r15, [rip + .Lbj_base + {data} + {ctx_gpr} + 15*8]",
    "jmp qword ptr [rip + .Lbj_base + {data} + {ctx_entry}]",
    // --- the guest returned here: record everything, leave with raw SYS_exit(0). ---
    ".Lbj_returned:",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 0*8], rax",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 1*8], rbx",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 2*8], rcx",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 3*8], rdx",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 4*8], rsi",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 5*8], rdi",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 6*8], rbp",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 7*8], rsp",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 8*8], r8",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 9*8], r9",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 10*8], r10",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 11*8], r11",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 12*8], r12",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 13*8], r13",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 14*8], r14",
    "mov [rip + .Lbj_base + {data} + {rec_gpr} + 15*8], r15",
    "lea rsp, [rip + .Lbj_base + {data} + 0x1000]",
    "pushfq",
    "pop rax",
    "mov [rip + .Lbj_base + {data} + {rec_rflags}], rax",
    "mov qword ptr [rip + .Lbj_base + {data} + {rec_state}], {state_returned}",
    "cmp qword ptr [rip + .Lbj_base + {data} + {ctx_done}], 0",
    "je .Lbj_exit",
    // Say "done" on the done pipe; a same-code worker then waits for its next input.
    "mov eax, {sys_write}",
    "mov edi, {done_fd}",
    "lea rsi, [rip + .Lbj_base + {data} + {ctx_seq}]",
    "mov edx, 8",
    "syscall",
    "cmp rax, 8",
    "jne .Lbj_exit",
    "cmp qword ptr [rip + .Lbj_base + {data} + {ctx_loop}], 0",
    "jne .Lbj_park",
    // A pool worker holds still in read(GO_FD) until the host closes that pipe (or kills it):
    // its exit is then not on the job's clock. Without a hold pipe the read fails at once.
    "xor eax, eax",
    "mov edi, {go_fd}",
    "lea rsi, [rsp - 8]",
    "mov edx, 1",
    "syscall",
    ".Lbj_exit:",
    "mov eax, {sys_exit}",
    "xor edi, edi",
    "syscall",
    "ud2",
    // --- fault handler: rdi = signo, rsi = siginfo, rdx = ucontext; on the alternate stack. ---
    ".globl bytejail_blob_handler",
    ".hidden bytejail_blob_handler",
    "bytejail_blob_handler:",
    "mov r8, rdi",
    "mov [rip + .Lbj_base + {data} + {fault_signo}], rdi",
    "movsxd rax, dword ptr [rsi + 8]",
    "mov [rip + .Lbj_base + {data} + {fault_code}], rax",
    "mov rax, [rsi + 16]",
    "mov [rip + .Lbj_base + {data} + {fault_addr}], rax",
    "movsxd rax, dword ptr [rsi + 24]",
    "mov [rip + .Lbj_base + {data} + {fault_sysnr}], rax",
    "mov eax, dword ptr [rsi + 28]",
    "mov [rip + .Lbj_base + {data} + {fault_arch}], rax",
    "mov rax, [rdx + {uc_rip}]",
    "mov [rip + .Lbj_base + {data} + {fault_rip}], rax",
    "lea rsi, [rdx + 40]",
    "lea rdi, [rip + .Lbj_base + {data} + {fault_gregs}]",
    "mov ecx, 23",
    "cld",
    "rep movsq",
    "mov qword ptr [rip + .Lbj_base + {data} + {rec_state}], {state_fault}",
    // Resume at a stub that raises the same signal again; SA_RESETHAND made its action the
    // default, so the kernel ends the worker with the real signal. TF and AC are cleared so
    // that only the stub's own fault fires.
    "and qword ptr [rdx + {uc_efl}], -0x40101",
    "lea rax, [rip + .Lbj_raise_segv]",
    "lea rcx, [rip + .Lbj_raise_bus]",
    "cmp r8d, 7",
    "cmove rax, rcx",
    "lea rcx, [rip + .Lbj_raise_ill]",
    "cmp r8d, 4",
    "cmove rax, rcx",
    "lea rcx, [rip + .Lbj_raise_fpe]",
    "cmp r8d, 8",
    "cmove rax, rcx",
    "lea rcx, [rip + .Lbj_raise_trap]",
    "cmp r8d, 5",
    "cmove rax, rcx",
    "lea rcx, [rip + .Lbj_raise_sys]",
    "cmp r8d, 31",
    "cmove rax, rcx",
    "mov [rdx + {uc_rip}], rax",
    "ret",
    ".globl bytejail_blob_restorer",
    ".hidden bytejail_blob_restorer",
    "bytejail_blob_restorer:",
    "mov eax, {sys_rt_sigreturn}",
    "syscall",
    "ud2",
    // --- finish: the last steps of the worker's setup, run from the blob on its own stack
    // because they unmap the host's code and stacks. Scrub, enter strict mode, enter. ---
    ".globl bytejail_blob_finish",
    ".hidden bytejail_blob_finish",
    "bytejail_blob_finish:",
    "lea rsp, [rip + .Lbj_base + {data} + 0x1000]",
    "cmp qword ptr [rip + .Lbj_base + {data} + {ctx_scrub}], 0",
    "je .Lbj_seccomp",
    // munmap(0, keep_start): everything below the arena's window.
    "mov eax, {sys_munmap}",
    "xor edi, edi",
    "mov rsi, [rip + .Lbj_base + {data} + {ctx_keep_start}]",
    "syscall",
    "test rax, rax",
    "jnz .Lbj_scrub_failed",
    // munmap(keep_end, user_end - keep_end): everything above it.
    "mov rdi, [rip + .Lbj_base + {data} + {ctx_keep_end}]",
    "mov rsi, [rip + .Lbj_base + {data} + {ctx_user_end}]",
    "sub rsi, rdi",
    "mov eax, {sys_munmap}",
    "syscall",
    "test rax, rax",
    "jnz .Lbj_scrub_failed",
    ".Lbj_seccomp:",
    // The memory limit, now that only the worker's own mappings count against it.
    "cmp qword ptr [rip + .Lbj_base + {data} + {ctx_as_limit}], 0",
    "je .Lbj_mode",
    "mov rax, [rip + .Lbj_base + {data} + {ctx_as_limit}]",
    "push rax",
    "push rax",
    "mov eax, {sys_prlimit64}",
    "xor edi, edi",
    "mov esi, {rlimit_as}",
    "mov rdx, rsp",
    "xor r10d, r10d",
    "syscall",
    "add rsp, 16",
    "test rax, rax",
    "jnz .Lbj_limit_failed",
    ".Lbj_mode:",
    "cmp qword ptr [rip + .Lbj_base + {data} + {ctx_mode}], 0",
    "je .Lbj_strict",
    // The walls filter goes first: of two decisions the kernel keeps the stricter, so the
    // profile can still kill or trap what this one only refuses.
    "cmp qword ptr [rip + .Lbj_base + {data} + {ctx_walls_fprog}], 0",
    "je .Lbj_profile",
    "mov eax, {sys_seccomp}",
    "mov edi, {seccomp_set_mode_filter}",
    "xor esi, esi",
    "lea rdx, [rip + .Lbj_base + {data} + {ctx_walls_fprog}]",
    "syscall",
    "test rax, rax",
    "jnz .Lbj_seccomp_failed",
    ".Lbj_profile:",
    // seccomp(SECCOMP_SET_MODE_FILTER, 0, &fprog): no_new_privs was set before the jump here.
    "mov eax, {sys_seccomp}",
    "mov edi, {seccomp_set_mode_filter}",
    "xor esi, esi",
    "lea rdx, [rip + .Lbj_base + {data} + {ctx_fprog}]",
    "syscall",
    "test rax, rax",
    "jnz .Lbj_seccomp_failed",
    "jmp .Lbj_confined",
    ".Lbj_strict:",
    "mov eax, {sys_prctl}",
    "mov edi, {pr_set_seccomp}",
    "mov esi, {seccomp_mode_strict}",
    "xor edx, edx",
    "syscall",
    "test rax, rax",
    "jnz .Lbj_seccomp_failed",
    // Only read, write, exit and rt_sigreturn from here on.
    ".Lbj_confined:",
    "cmp qword ptr [rip + .Lbj_base + {data} + {ctx_park}], 0",
    "je .Lbj_base",
    "cmp qword ptr [rip + .Lbj_base + {data} + {ctx_ready}], 0",
    "je .Lbj_park",
    // Fault in the pages every job touches first (see CTX_TOUCH), and the XSAVE image.
    "mov rax, [rip + .Lbj_base + {data} + {ctx_touch}]",
    "movzx eax, byte ptr [rax]",
    "mov rax, [rip + .Lbj_base + {data} + {ctx_touch} + 8]",
    "movzx eax, byte ptr [rax]",
    "mov rax, [rip + .Lbj_base + {data} + {ctx_touch} + 16]",
    "mov qword ptr [rax], 0",
    "mov rax, [rip + .Lbj_base + {data} + {ctx_touch} + 24]",
    "mov qword ptr [rax], 0",
    "mov rax, [rip + .Lbj_base + {xsave}]",
    "mov eax, {sys_write}",
    "mov edi, 1",
    "lea rsi, [rip + .Lbj_base + {data} + {ctx_ready} + 7]",
    "mov edx, 1",
    "syscall",
    // Parked: wait for the go byte on the control descriptor (read onto the private stack),
    // then enter. EOF or an error: the host is done with this worker.
    ".Lbj_park:",
    "lea rsp, [rip + .Lbj_base + {data} + 0x1000]",
    "xor eax, eax",
    "mov rdi, [rip + .Lbj_base + {data} + {ctx_control_fd}]",
    "lea rsi, [rsp - 8]",
    "mov edx, 1",
    "syscall",
    "cmp rax, 1",
    "je .Lbj_base",
    "mov eax, {sys_exit}",
    "xor edi, edi",
    "syscall",
    "jmp .Lbj_hang",
    ".Lbj_scrub_failed:",
    "mov ecx, {stage_scrub}",
    "jmp .Lbj_setup_failed",
    ".Lbj_limit_failed:",
    "mov ecx, {stage_limits}",
    "jmp .Lbj_setup_failed",
    ".Lbj_seccomp_failed:",
    "mov ecx, {stage_seccomp}",
    // rax = -errno, rcx = stage: record them and die of SETUP_FAILED_SIGNAL (see setup_failed).
    ".Lbj_setup_failed:",
    "mov [rip + .Lbj_base + {data} + {rec_stage}], rcx",
    "neg rax",
    "mov [rip + .Lbj_base + {data} + {rec_errno}], rax",
    "mov qword ptr [rip + .Lbj_base + {data} + {rec_state}], {state_setup_failed}",
    "push 0",
    "push 0",
    "push 0",
    "push 0",
    "mov eax, {sys_rt_sigaction}",
    "mov edi, {setup_failed_signal}",
    "mov rsi, rsp",
    "xor edx, edx",
    "mov r10d, 8",
    "syscall",
    "push {setup_failed_bit}",
    "mov eax, {sys_rt_sigprocmask}",
    "mov edi, {sig_unblock}",
    "mov rsi, rsp",
    "xor edx, edx",
    "mov r10d, 8",
    "syscall",
    "mov eax, {sys_getpid}",
    "syscall",
    "mov edi, eax",
    "mov esi, {setup_failed_signal}",
    "mov eax, {sys_kill}",
    "syscall",
    "mov eax, {sys_exit}",
    "mov edi, 127",
    "syscall",
    "jmp .Lbj_hang",
    ".Lbj_raise_segv:",
    "hlt",
    "jmp .Lbj_hang",
    ".Lbj_raise_ill:",
    "ud2",
    ".Lbj_raise_fpe:",
    "xor eax, eax",
    "xor edx, edx",
    "xor ecx, ecx",
    "div ecx",
    "jmp .Lbj_hang",
    ".Lbj_raise_trap:",
    "int3",
    "jmp .Lbj_hang",
    // Every bytejail filter traps RERAISE_NR.
    ".Lbj_raise_sys:",
    "mov eax, {reraise_nr}",
    "syscall",
    "jmp .Lbj_hang",
    ".Lbj_raise_bus:",
    // An unaligned load with EFLAGS.AC set raises #AC, which Linux reports as SIGBUS.
    "lea rsp, [rip + .Lbj_base + {data} + 0x1000]",
    "pushfq",
    "or dword ptr [rsp], 0x40000",
    "popfq",
    "mov eax, dword ptr [rsp + 1]",
    // Never reached; if a stub somehow did not fault, spin until the host's deadline.
    ".Lbj_hang:",
    "jmp .Lbj_hang",
    ".globl bytejail_blob_end",
    ".hidden bytejail_blob_end",
    "bytejail_blob_end:",
    ".popsection",
    data = const DATA,
    xsave = const XSAVE,
    ctx_gpr = const CTX_GPR,
    ctx_entry = const CTX_ENTRY,
    ctx_xsave = const CTX_XSAVE,
    rec_gpr = const REC_GPR,
    rec_rflags = const REC_RFLAGS,
    rec_state = const REC_STATE,
    fault_signo = const FAULT_SIGNO,
    fault_code = const FAULT_CODE,
    fault_addr = const FAULT_ADDR,
    fault_rip = const FAULT_RIP,
    fault_gregs = const FAULT_GREGS,
    fault_sysnr = const FAULT_SYSNR,
    fault_arch = const FAULT_ARCH,
    ctx_mode = const CTX_MODE,
    ctx_fprog = const CTX_FPROG,
    sys_seccomp = const libc::SYS_seccomp,
    seccomp_set_mode_filter = const libc::SECCOMP_SET_MODE_FILTER,
    reraise_nr = const crate::policy::RERAISE_NR,
    uc_rip = const UC_RIP,
    uc_efl = const UC_EFL,
    state_returned = const STATE_RETURNED,
    state_fault = const STATE_FAULT,
    sys_exit = const libc::SYS_exit,
    sys_rt_sigreturn = const libc::SYS_rt_sigreturn,
    sys_munmap = const libc::SYS_munmap,
    sys_prctl = const libc::SYS_prctl,
    sys_rt_sigaction = const libc::SYS_rt_sigaction,
    sys_rt_sigprocmask = const libc::SYS_rt_sigprocmask,
    sys_getpid = const libc::SYS_getpid,
    sys_kill = const libc::SYS_kill,
    pr_set_seccomp = const libc::PR_SET_SECCOMP,
    seccomp_mode_strict = const libc::SECCOMP_MODE_STRICT,
    ctx_scrub = const CTX_SCRUB,
    ctx_keep_start = const CTX_KEEP_START,
    ctx_keep_end = const CTX_KEEP_END,
    ctx_user_end = const CTX_USER_END,
    ctx_park = const CTX_PARK,
    ctx_control_fd = const CTX_CONTROL_FD,
    ctx_loop = const CTX_LOOP,
    ctx_seq = const CTX_SEQ,
    ctx_ready = const CTX_READY,
    ctx_done = const CTX_DONE,
    ctx_fsgsbase = const CTX_FSGSBASE,
    ctx_touch = const CTX_TOUCH,
    ctx_as_limit = const CTX_AS_LIMIT,
    ctx_walls_fprog = const CTX_WALLS_FPROG,
    sys_prlimit64 = const libc::SYS_prlimit64,
    rlimit_as = const libc::RLIMIT_AS,
    stage_limits = const STAGE_LIMITS,
    sys_write = const libc::SYS_write,
    done_fd = const DONE_FD,
    go_fd = const GO_FD,
    rec_stage = const REC_STAGE,
    rec_errno = const REC_ERRNO,
    state_setup_failed = const STATE_SETUP_FAILED,
    stage_scrub = const STAGE_SCRUB,
    stage_seccomp = const STAGE_SECCOMP,
    setup_failed_signal = const SETUP_FAILED_SIGNAL,
    setup_failed_bit = const sigbit(SETUP_FAILED_SIGNAL),
    sig_unblock = const libc::SIG_UNBLOCK,
);

extern "C" {
    static bytejail_blob_start: u8;
    static bytejail_blob_handler: u8;
    static bytejail_blob_restorer: u8;
    static bytejail_blob_finish: u8;
    static bytejail_blob_end: u8;
}

/// The blob's machine code and the offsets of its entry points.
pub(crate) struct Blob {
    pub code: &'static [u8],
    /// Offset of the fault handler (`sa_handler`).
    pub handler: usize,
    /// Offset of the signal restorer (`sa_restorer`, calls `rt_sigreturn`).
    pub restorer: usize,
    /// Offset of the last setup steps: scrub, strict mode, enter.
    pub finish: usize,
}

/// The blob as assembled into this binary.
pub(crate) fn blob() -> Blob {
    // SAFETY: the four symbols are labels in one section of the global_asm above, in this
    // order; the bytes between start and end are initialized read-only code.
    unsafe {
        let start = std::ptr::addr_of!(bytejail_blob_start);
        let end = std::ptr::addr_of!(bytejail_blob_end) as usize;
        let len = end - start as usize;
        let off = |p: *const u8| p as usize - start as usize;
        Blob {
            code: std::slice::from_raw_parts(start, len),
            handler: off(std::ptr::addr_of!(bytejail_blob_handler)),
            restorer: off(std::ptr::addr_of!(bytejail_blob_restorer)),
            finish: off(std::ptr::addr_of!(bytejail_blob_finish)),
        }
    }
}

/// The signals whose faults the worker records before dying of them.
pub(crate) const FAULT_SIGNALS: [i32; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    // A filter's SECCOMP_RET_TRAP: the record says which syscall it was.
    libc::SIGSYS,
];

/// The signal a worker kills itself with when its setup fails. No guest can raise it: strict
/// mode has no `kill`, and faults only raise [`FAULT_SIGNALS`].
pub(crate) const SETUP_FAILED_SIGNAL: i32 = libc::SIGUSR2;

/// Setup steps, recorded in `REC_STAGE` when one fails.
pub(crate) const STAGES: [&str; 17] = [
    "worker setup: PR_SET_PDEATHSIG",
    "worker setup: rt_sigprocmask",
    "worker setup: mapping the arena",
    "worker setup: moving the pipes to fds 0 and 1",
    "worker setup: close_range",
    "worker setup: setrlimit/PR_SET_DUMPABLE",
    "worker setup: sigaltstack",
    "worker setup: rt_sigaction",
    "worker setup: entering seccomp strict mode",
    "worker setup: unmapping the host's memory",
    "worker setup: unregistering the inherited rseq area",
    "worker setup: dropping privileges for filter mode",
    "worker setup: joining the empty network namespace",
    "worker setup: Landlock",
    "worker setup: joining the job's cgroups",
    "worker setup: an empty root file system",
    "worker setup: mapping the user namespace's ids",
];

/// One mapping the worker makes at a fixed address inside the arena's window.
#[derive(Clone, Copy)]
pub(crate) struct FixedMap {
    pub addr: usize,
    pub len: usize,
    pub prot: i32,
    /// The arena's memfd for shared mappings, -1 for fresh private anonymous memory.
    pub fd: i32,
    pub offset: usize,
}

impl FixedMap {
    pub(crate) fn shared(addr: usize, len: usize, prot: i32, fd: i32, offset: usize) -> Self {
        FixedMap {
            addr,
            len,
            prot,
            fd,
            offset,
        }
    }

    pub(crate) fn private(addr: usize, len: usize) -> Self {
        FixedMap {
            addr,
            len,
            prot: libc::PROT_READ | libc::PROT_WRITE,
            fd: -1,
            offset: 0,
        }
    }
}

/// One `mprotect` the worker applies after mapping.
#[derive(Clone, Copy)]
pub(crate) struct Protect {
    pub addr: usize,
    pub len: usize,
    pub prot: i32,
}

/// Everything the worker needs, built by the host before `fork`. Plain data: the child only
/// reads it from its copy of the host's stack.
#[derive(Clone, Copy)]
pub(crate) struct WorkerPlan {
    pub host_pid: libc::pid_t,
    pub input_fd: i32,
    pub output_fd: i32,
    /// Control pipes, each -1 when absent: the go pipe's read end (same-code workers) and the
    /// done pipe's write end (same-code and pool workers), moved to [`layout::GO_FD`] and
    /// [`layout::DONE_FD`].
    pub control_fds: [i32; 2],
    /// Address of the region (see [`layout`]) once the worker has mapped it.
    pub region: usize,
    /// Region, code, input, scratch, stack: mapped in this order (see [`crate::arena`]).
    pub maps: [FixedMap; 5],
    /// The blob page made read+execute.
    pub protects: [Protect; 1],
    /// `RLIMIT_CPU` in seconds: a backstop behind the host's own SIGKILL at the deadline.
    pub cpu_limit_secs: u64,
    /// The forking thread's rseq registration, to undo before scrubbing.
    pub rseq: Option<crate::sys::RseqRegistration>,
    /// Whether the run unmaps the host's memory (the blob reads the same flag from the context).
    pub scrub: bool,
    /// Filter mode: set no_new_privs, disable the TSC, drop every capability; the blob then
    /// installs the filter from the region instead of entering strict mode.
    pub filter_mode: bool,
    /// Highest capability number of this kernel (`/proc/sys/kernel/cap_last_cap`).
    pub cap_last: u32,
    /// The walls around a profile worker (all off for strict mode, which needs none).
    pub walls: Walls,
    /// Resource limits set before the guest runs (`RLIMIT_AS` is the blob's, after the scrub).
    pub rlimits: [(u32, u64); 2],
    /// The NUL-terminated paths of the job's cgroups' `cgroup.procs` files, which the worker
    /// writes itself into first (see [`crate::cgroup`]); empty (a leading NUL) for none.
    pub cgroup_procs: [[u8; crate::cgroup::PROCS_PATH_MAX]; crate::cgroup::PROCS_SLOTS],
    /// The host seizes the worker with its tracer (see [`crate::tracer`]): the worker waits at
    /// the gate in its data page ([`layout::CTX_TRACE_GATE`]) once the region is mapped, so
    /// that nothing of its setup past that point, and nothing of the guest, runs untraced.
    pub traced: bool,
}

/// The walls a profile worker gets besides seccomp, decided by the host before the fork.
#[derive(Clone, Copy, Default)]
pub(crate) struct Walls {
    /// Namespace flags for the worker's `clone`: a PID namespace with the worker as its init
    /// (its whole process tree dies with it), IPC and mount namespaces.
    pub clone_flags: usize,
    /// A pidfd of the host, polled right after `PR_SET_PDEATHSIG` is armed: in a PID namespace
    /// `getppid()` is 0 whoever the parent is. -1 outside a PID namespace.
    pub host_pidfd: i32,
    /// The shared empty network namespace to join, -1 for none.
    pub netns_fd: i32,
    /// Landlock: the access rights handled (and so denied: the ruleset has no rule) for files
    /// and TCP, and the scopes (signals, abstract sockets); all 0 without Landlock.
    pub landlock: [u64; 3],
    /// With `CLONE_NEWUSER` (a host that is not root): the contents of `/proc/self/uid_map`
    /// and `gid_map`, NUL-terminated, which map the host's own uid and gid to themselves.
    pub id_maps: [[u8; 32]; 2],
    /// Paths the user grants the guest (`--allow-read`, `--allow-write`), in use from the
    /// first with an empty path on.
    pub grants: [Grant; crate::abi::MAX_GRANTS],
}

/// Room for a grant's NUL-terminated path.
pub(crate) const GRANT_PATH: usize = crate::abi::MAX_GRANT_PATH + 1;

/// One path the user grants a profile guest: mounted at the same path in the worker's empty
/// root (read-only unless `write`), and allowed by a Landlock rule.
#[derive(Clone, Copy)]
pub(crate) struct Grant {
    /// The absolute, normalised path, NUL-terminated; empty (a leading NUL) for no grant.
    pub path: [u8; GRANT_PATH],
    /// A directory (else a regular file): what its mount point in the empty root is made as.
    pub dir: bool,
    pub write: bool,
    /// The Landlock file rights the rule grants (a subset of those the ruleset handles;
    /// 0 without Landlock).
    pub access: u64,
}

impl Default for Grant {
    fn default() -> Self {
        Grant {
            path: [0; GRANT_PATH],
            dir: false,
            write: false,
            access: 0,
        }
    }
}

impl Walls {
    pub(crate) fn pid_namespace(&self) -> bool {
        self.clone_flags & libc::CLONE_NEWPID as usize != 0
    }
}

/// The kernel's `struct sigaction` for `rt_sigaction` (not libc's, whose layout differs).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

#[repr(C)]
struct StackT {
    sp: usize,
    flags: i32,
    size: usize,
}

/// A zero `struct timespec`: `ppoll` returns at once.
static ZERO_TIME: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

/// `SA_RESTORER` (x86-64): `restorer` is valid. The kernel ABI constant, absent from libc.
const SA_RESTORER: i32 = 0x0400_0000;

/// Bit of `sig` in a kernel sigset.
const fn sigbit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// Forks a worker that runs `plan`, returning its pid and pidfd in the host.
///
/// The arena behind `plan` must stay alive and untouched until the worker is reaped.
pub(crate) fn spawn(plan: &WorkerPlan) -> std::io::Result<(libc::pid_t, std::os::fd::OwnedFd)> {
    // SAFETY: the child runs only `worker_entry`, which issues raw syscalls on `plan` (plain
    // data on this stack) and the arena's descriptor, and never returns.
    match unsafe { crate::sys::clone_with_pidfd(plan.walls.clone_flags) }? {
        crate::sys::Forked::Child => worker_entry(plan),
        crate::sys::Forked::Parent { pid, pidfd } => Ok((pid, pidfd)),
    }
}

/// Runs `plan` in a child forked elsewhere (by the zygote, see [`crate::zygote`]). Never returns.
///
/// # Safety
/// As for [`worker_main`]: only in a freshly forked child, with `plan`'s descriptors open here.
pub(crate) unsafe fn enter(plan: &WorkerPlan) -> ! {
    worker_entry(plan)
}

/// The child's entry. `extern "C"` so that a panic (there is none to raise) would abort
/// instead of unwinding into a copy of the host's stack.
extern "C" fn worker_entry(plan: &WorkerPlan) -> ! {
    // SAFETY: called only in the child of `clone_with_pidfd`, with the arena prepared.
    unsafe { worker_main(plan) }
}

// Indices into [`STAGES`].
const STAGE_PDEATHSIG: usize = 0;
const STAGE_SIGMASK: usize = 1;
const STAGE_MAP: usize = 2;
const STAGE_FDS: usize = 3;
const STAGE_CLOSE: usize = 4;
const STAGE_LIMITS: usize = 5;
const STAGE_ALTSTACK: usize = 6;
const STAGE_SIGACTION: usize = 7;
const STAGE_SECCOMP: usize = 8;
const STAGE_SCRUB: usize = 9;
const STAGE_RSEQ: usize = 10;
const STAGE_PRIVILEGES: usize = 11;
const STAGE_NETNS: usize = 12;
const STAGE_LANDLOCK: usize = 13;
const STAGE_CGROUP: usize = 14;
const STAGE_ROOT: usize = 15;
const STAGE_USERNS: usize = 16;

/// Ends a worker whose setup failed: records the stage and errno (once the region is mapped)
/// and dies of [`SETUP_FAILED_SIGNAL`], which no guest can raise.
///
/// # Safety
/// `data` is the address of the mapped data page, or `None` before it is mapped.
unsafe fn setup_failed(data: Option<usize>, stage: usize, ret: isize) -> ! {
    // SAFETY: the data page is mapped read+write when `data` is given (caller's contract);
    // the syscalls take pointers to locals.
    unsafe {
        if let Some(data) = data {
            ((data + REC_STAGE) as *mut u64).write_volatile(stage as u64);
            ((data + REC_ERRNO) as *mut u64).write_volatile(ret.unsigned_abs() as u64);
            ((data + REC_STATE) as *mut u64).write_volatile(STATE_SETUP_FAILED);
        }
        let dfl = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        let unblock = sigbit(SETUP_FAILED_SIGNAL);
        let sig = SETUP_FAILED_SIGNAL as usize;
        raw::syscall6(
            libc::SYS_rt_sigaction,
            sig,
            &dfl as *const _ as usize,
            0,
            8,
            0,
            0,
        );
        let set = &unblock as *const u64 as usize;
        raw::syscall6(
            libc::SYS_rt_sigprocmask,
            libc::SIG_UNBLOCK as usize,
            set,
            0,
            8,
            0,
            0,
        );
        let pid = raw::syscall3(libc::SYS_getpid, 0, 0, 0);
        raw::syscall3(libc::SYS_kill, pid as usize, sig, 0);
    }
    raw::exit(127)
}

/// Filter mode's extra set-up, which strict mode implies: `no_new_privs` (required to install a
/// filter without CAP_SYS_ADMIN), the TSC disabled as in strict mode, and, when the worker holds
/// any (as root it holds all), every capability dropped: bounding set, ambient set, then the
/// effective, permitted and inheritable sets.
///
/// # Safety
/// As for [`worker_main`]; `data` as for [`setup_failed`].
unsafe fn drop_privileges(
    cap_last: u32,
    data: Option<usize>,
    check: &dyn Fn(Option<usize>, usize, isize),
) {
    // SAFETY: raw syscalls with integer arguments or pointers to locals.
    unsafe {
        let prctl = |op: i32, arg: usize| raw::syscall3(libc::SYS_prctl, op as usize, arg, 0);
        check(data, STAGE_PRIVILEGES, prctl(libc::PR_SET_NO_NEW_PRIVS, 1));
        check(
            data,
            STAGE_PRIVILEGES,
            prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV as usize),
        );
        for cap in 0..=cap_last as usize {
            // EPERM without CAP_SETPCAP: then the worker is unprivileged and the bounding set
            // cannot matter (no_new_privs, no exec).
            prctl(libc::PR_CAPBSET_DROP, cap);
        }
        let clear_all = libc::PR_CAP_AMBIENT_CLEAR_ALL as usize;
        raw::syscall6(
            libc::SYS_prctl,
            libc::PR_CAP_AMBIENT as usize,
            clear_all,
            0,
            0,
            0,
            0,
        );
        // capset(v3 header for this process, all-zero data for both 32-bit halves).
        let header: [u32; 2] = [0x2008_0522, 0]; // _LINUX_CAPABILITY_VERSION_3, pid 0 = self
        let none = [0u32; 6];
        let ret = raw::syscall3(
            libc::SYS_capset,
            header.as_ptr() as usize,
            none.as_ptr() as usize,
            0,
        );
        check(data, STAGE_PRIVILEGES, ret);
    }
}

/// Gives a worker in its own mount namespace an empty, read-only root: nothing of the host's
/// file system is left to reach by path (unix sockets, files' metadata, directories to watch),
/// whatever Landlock does not cover. Mounts stop propagating, a tmpfs goes over `/proc` (a
/// directory every Linux host has), becomes the root (`pivot_root(".", ".")`), and the old
/// root is detached. The paths in `grants` are cloned from the host's tree first
/// (`open_tree`, read-only unless granted for writing, never setuid, devices or exec), and
/// mounted at the same paths in the tmpfs (on mount points made for them) before it is made
/// read-only.
///
/// # Safety
/// As for [`worker_main`], in a mount namespace of the worker's own, before capabilities drop.
unsafe fn empty_root(
    grants: &[Grant; crate::abi::MAX_GRANTS],
    data: Option<usize>,
    check: &dyn Fn(Option<usize>, usize, isize),
) {
    const OPEN_TREE_CLONE: usize = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: usize = 4;
    const MOUNT_ATTR_RDONLY: u64 = 1;
    const MOUNT_ATTR_NOSUID: u64 = 2;
    const MOUNT_ATTR_NODEV: u64 = 4;
    const MOUNT_ATTR_NOEXEC: u64 = 8;
    let root = c"/".as_ptr() as usize;
    let dot = c".".as_ptr() as usize;
    let empty = c"".as_ptr() as usize;
    let mountpoint = c"/proc".as_ptr() as usize;
    let tmpfs = c"tmpfs".as_ptr() as usize;
    let options = c"size=4k,mode=0555".as_ptr() as usize;
    let ro = (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as usize;
    let cwd = libc::AT_FDCWD as usize;
    let exists = -(libc::EEXIST as isize);
    // SAFETY: raw syscalls on NUL-terminated string literals of this binary, on the plan's
    // NUL-terminated paths, and on locals.
    unsafe {
        let private = (libc::MS_REC | libc::MS_PRIVATE) as usize;
        check(
            data,
            STAGE_ROOT,
            raw::syscall6(libc::SYS_mount, 0, root, 0, private, 0, 0),
        );
        // The granted paths, cloned while the host's tree is still in reach.
        let mut trees = [-1isize; crate::abi::MAX_GRANTS];
        for (tree, grant) in trees.iter_mut().zip(grants) {
            if grant.path[0] == 0 {
                break;
            }
            let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as usize;
            let path = grant.path.as_ptr() as usize;
            let fd = raw::syscall3(libc::SYS_open_tree, cwd, path, flags);
            check(data, STAGE_ROOT, fd);
            let mut set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
            if !grant.write {
                set |= MOUNT_ATTR_RDONLY;
            }
            // struct mount_attr: attr_set, attr_clr, propagation, userns_fd.
            let attr = [set, 0u64, 0, 0];
            let at_empty = libc::AT_EMPTY_PATH as usize;
            let size = std::mem::size_of_val(&attr);
            let attr = attr.as_ptr() as usize;
            check(
                data,
                STAGE_ROOT,
                raw::syscall6(
                    libc::SYS_mount_setattr,
                    fd as usize,
                    empty,
                    at_empty,
                    attr,
                    size,
                    0,
                ),
            );
            *tree = fd;
        }
        let granting = trees[0] >= 0;
        // Writable only while the grants' mount points are made in it.
        let flags = if granting {
            ro & !(libc::MS_RDONLY as usize)
        } else {
            ro
        };
        check(
            data,
            STAGE_ROOT,
            raw::syscall6(libc::SYS_mount, tmpfs, mountpoint, tmpfs, flags, options, 0),
        );
        for (&tree, grant) in trees.iter().zip(grants).filter(|(&tree, _)| tree >= 0) {
            // "/proc" + the path: where the path will be once the tmpfs is the root.
            let mut target = [0u8; 5 + GRANT_PATH];
            target[..5].copy_from_slice(b"/proc");
            let len = grant.path.iter().position(|&b| b == 0).unwrap_or(0);
            target[5..5 + len].copy_from_slice(&grant.path[..len]);
            // Its parent directories, in the tmpfs (no grant lies inside another).
            // (Cut at each '/' in turn: the buffer is the path the kernel reads.)
            let mut slash = 6;
            while slash < 5 + len {
                if target[slash] == b'/' {
                    target[slash] = 0;
                    let at = target.as_ptr() as usize;
                    let made = raw::syscall3(libc::SYS_mkdir, at, 0o555, 0);
                    target[slash] = b'/';
                    if made != exists {
                        check(data, STAGE_ROOT, made);
                    }
                }
                slash += 1;
            }
            let at = target.as_ptr() as usize;
            let made = if grant.dir {
                raw::syscall3(libc::SYS_mkdir, at, 0o555, 0)
            } else {
                let file = (libc::S_IFREG | 0o444) as usize;
                raw::syscall6(libc::SYS_mknodat, cwd, at, file, 0, 0, 0)
            };
            if made != exists {
                check(data, STAGE_ROOT, made);
            }
            let from_empty = MOVE_MOUNT_F_EMPTY_PATH;
            check(
                data,
                STAGE_ROOT,
                raw::syscall6(
                    libc::SYS_move_mount,
                    tree as usize,
                    empty,
                    cwd,
                    at,
                    from_empty,
                    0,
                ),
            );
            raw::syscall3(libc::SYS_close, tree as usize, 0, 0);
        }
        if granting {
            let remount = ro | libc::MS_REMOUNT as usize;
            check(
                data,
                STAGE_ROOT,
                raw::syscall6(libc::SYS_mount, 0, mountpoint, 0, remount, options, 0),
            );
        }
        check(
            data,
            STAGE_ROOT,
            raw::syscall3(libc::SYS_chdir, mountpoint, 0, 0),
        );
        check(
            data,
            STAGE_ROOT,
            raw::syscall3(libc::SYS_pivot_root, dot, dot, 0),
        );
        let detach = libc::MNT_DETACH as usize;
        check(
            data,
            STAGE_ROOT,
            raw::syscall3(libc::SYS_umount2, dot, detach, 0),
        );
        check(data, STAGE_ROOT, raw::syscall3(libc::SYS_chdir, root, 0, 0));
    }
}

/// The post-fork path: sets the worker up and enters the guest. Never returns.
///
/// In order: die with the host; block every signal but the faults; map the arena's parts at
/// the host's addresses; fds 0 and 1 become the pipes and every other fd is closed (the
/// arena's memfd too); own process group (terminal signals are the host's); no core, not
/// dumpable, CPU backstop; fault handlers on an alternate stack; then the blob's `finish`:
/// unmap everything but the arena (unless the run opted out), strict seccomp, the trampoline.
///
/// # Safety
/// Call only in the child of [`crate::sys::clone_with_pidfd`], with `plan` describing an
/// arena the host prepared (blob copied, context written) whose window is free here.
unsafe fn worker_main(plan: &WorkerPlan) -> ! {
    let mut data = None;
    let check = |data: Option<usize>, stage: usize, ret: isize| {
        if ret < 0 {
            // SAFETY: callers pass the data page's address only once it is mapped.
            unsafe { setup_failed(data, stage, ret) }
        }
    };
    // SAFETY: raw syscalls with pointers to locals that outlive each call, on descriptors and
    // address ranges this process owns; the final jump enters the blob mapped above.
    unsafe {
        let pdeathsig = libc::PR_SET_PDEATHSIG as usize;
        check(
            data,
            STAGE_PDEATHSIG,
            raw::syscall3(libc::SYS_prctl, pdeathsig, libc::SIGKILL as usize, 0),
        );
        // The host may have died before PDEATHSIG was armed: then we are someone else's child.
        // In a PID namespace the parent is out of sight (`getppid()` is 0): ask its pidfd.
        if plan.walls.pid_namespace() {
            let mut host = libc::pollfd {
                fd: plan.walls.host_pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            let fds = &mut host as *mut libc::pollfd as usize;
            let ready = raw::syscall6(
                libc::SYS_ppoll,
                fds,
                1,
                &ZERO_TIME as *const _ as usize,
                0,
                0,
                0,
            );
            if ready != 0 {
                raw::exit(0); // the host has exited (or its pidfd is unusable)
            }
        } else if raw::syscall3(libc::SYS_getppid, 0, 0, 0) != plan.host_pid as isize {
            raw::exit(0);
        }

        // In a user namespace of its own (a host that is not root), the worker holds every
        // capability there but no id yet: it maps the host's uid and gid to themselves (after
        // giving up setgroups, as an unprivileged map requires). Files it makes (the empty
        // root's mount points) then have an owner.
        if plan.walls.clone_flags & libc::CLONE_NEWUSER as usize != 0 {
            // The map files of a process that is not dumpable (a worker forked by the zygote,
            // which is not) belong to root, and not even the process itself may write them.
            // Dumpable for the three writes only (nothing of a job is mapped yet), then as it
            // was (the host's tracer may need it so until it has seized the worker; the
            // limits stage below clears it for good).
            let was = raw::syscall3(libc::SYS_prctl, libc::PR_GET_DUMPABLE as usize, 0, 0);
            let dumpable = libc::PR_SET_DUMPABLE as usize;
            check(
                data,
                STAGE_USERNS,
                raw::syscall3(libc::SYS_prctl, dumpable, 1, 0),
            );
            for (file, text) in [
                (c"/proc/self/setgroups", b"deny\0".as_slice()),
                (c"/proc/self/uid_map", plan.walls.id_maps[0].as_slice()),
                (c"/proc/self/gid_map", plan.walls.id_maps[1].as_slice()),
            ] {
                let flags = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
                let fd = raw::syscall3(libc::SYS_open, file.as_ptr() as usize, flags, 0);
                check(data, STAGE_USERNS, fd);
                let len = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                let written =
                    raw::syscall3(libc::SYS_write, fd as usize, text.as_ptr() as usize, len);
                check(data, STAGE_USERNS, written);
                raw::syscall3(libc::SYS_close, fd as usize, 0, 0);
            }
            check(
                data,
                STAGE_USERNS,
                raw::syscall3(libc::SYS_prctl, dumpable, was.clamp(0, 1) as usize, 0),
            );
        }

        let mut mask = !0u64;
        for sig in FAULT_SIGNALS {
            mask &= !sigbit(sig);
        }
        let set = &mask as *const u64 as usize;
        check(
            data,
            STAGE_SIGMASK,
            raw::syscall6(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK as usize,
                set,
                0,
                8,
                0,
                0,
            ),
        );

        // Into the job's cgroups before anything else can fork ("0": this process).
        for procs in plan.cgroup_procs.iter().filter(|p| p[0] != 0) {
            let path = procs.as_ptr() as usize;
            let flags = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
            let fd = raw::syscall3(libc::SYS_open, path, flags, 0);
            check(data, STAGE_CGROUP, fd);
            let zero = b"0";
            let written = raw::syscall3(libc::SYS_write, fd as usize, zero.as_ptr() as usize, 1);
            check(data, STAGE_CGROUP, written);
            raw::syscall3(libc::SYS_close, fd as usize, 0, 0);
        }

        // The window is free here (the host's reservation was not inherited); NOREPLACE makes
        // sure nothing of this process is ever overwritten all the same.
        for m in plan.maps {
            let flags = libc::MAP_FIXED_NOREPLACE
                | if m.fd >= 0 {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
                };
            let got = raw::syscall6(
                libc::SYS_mmap,
                m.addr,
                m.len,
                m.prot as usize,
                flags as usize,
                m.fd as usize,
                m.offset,
            );
            if got != m.addr as isize {
                // Older kernels treat NOREPLACE as a hint and may map elsewhere.
                check(
                    data,
                    STAGE_MAP,
                    if got < 0 {
                        got
                    } else {
                        -(libc::EEXIST as isize)
                    },
                );
            }
            if data.is_none() {
                data = Some(plan.region + DATA);
            }
        }
        for p in plan.protects {
            check(
                data,
                STAGE_MAP,
                raw::syscall3(libc::SYS_mprotect, p.addr, p.len, p.prot as usize),
            );
        }

        // A traced worker waits here until its tracer has seized it (or the host has given
        // up on tracing it): before it makes itself undumpable, and before the guest runs.
        let mut traced = false;
        if plan.traced {
            let gate = plan.region + DATA + CTX_TRACE_GATE;
            while (gate as *const u32).read_volatile() == 0 {
                let wait = libc::FUTEX_WAIT as usize;
                raw::syscall6(libc::SYS_futex, gate, wait, 0, 0, 0, 0);
            }
            traced = (gate as *const u32).read_volatile() == GATE_TRACED;
        }

        if plan.walls.clone_flags & libc::CLONE_NEWNS as usize != 0 {
            empty_root(&plan.walls.grants, data, &check);
        }

        if plan.walls.netns_fd >= 0 {
            let netns = plan.walls.netns_fd as usize;
            let kind = libc::CLONE_NEWNET as usize;
            check(
                data,
                STAGE_NETNS,
                raw::syscall3(libc::SYS_setns, netns, kind, 0),
            );
        }

        // Control pipes first go above every low descriptor, out of the other pipes' way.
        let mut control = [-1; 2];
        for (moved, fd) in control.iter_mut().zip(plan.control_fds) {
            if fd >= 0 {
                let dup = libc::F_DUPFD as usize;
                *moved = raw::syscall3(libc::SYS_fcntl, fd as usize, dup, 10) as i32;
                check(data, STAGE_FDS, *moved as isize);
            }
        }
        let controlled = control.iter().any(|&fd| fd >= 0);
        // Move the pipes to 0 and 1 without one clobbering the other.
        let mut input = plan.input_fd;
        let mut output = plan.output_fd;
        if output == 0 {
            output = raw::syscall3(libc::SYS_fcntl, 0, libc::F_DUPFD as usize, 3) as i32;
            check(data, STAGE_FDS, output as isize);
        }
        if input == 1 {
            input = raw::syscall3(libc::SYS_fcntl, 1, libc::F_DUPFD as usize, 3) as i32;
            check(data, STAGE_FDS, input as isize);
        }
        if input != 0 {
            check(
                data,
                STAGE_FDS,
                raw::syscall3(libc::SYS_dup2, input as usize, 0, 0),
            );
        }
        if output != 1 {
            check(
                data,
                STAGE_FDS,
                raw::syscall3(libc::SYS_dup2, output as usize, 1, 0),
            );
        }
        // dup2 leaves fd 0/1 without FD_CLOEXEC; when input was already 0 it keeps the flag,
        // which is harmless: nothing here ever execs.
        if controlled {
            for (fd, target) in control.into_iter().zip([GO_FD, DONE_FD]) {
                let ret = if fd >= 0 {
                    raw::syscall3(libc::SYS_dup2, fd as usize, target, 0)
                } else {
                    // An absent pipe: nothing stays open at its number.
                    raw::syscall3(libc::SYS_close_range, target, target, 0)
                };
                check(data, STAGE_FDS, ret);
            }
            check(
                data,
                STAGE_CLOSE,
                raw::syscall3(libc::SYS_close_range, 2, 2, 0),
            );
        }
        let first_closed = if controlled { DONE_FD + 1 } else { 2 };
        check(
            data,
            STAGE_CLOSE,
            raw::syscall3(libc::SYS_close_range, first_closed, u32::MAX as usize, 0),
        );

        // Terminal-generated signals go to the host's process group, not to the guest.
        raw::syscall3(libc::SYS_setpgid, 0, 0, 0);

        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let core = libc::RLIMIT_CORE as usize;
        check(
            data,
            STAGE_LIMITS,
            raw::syscall3(libc::SYS_setrlimit, core, &no_core as *const _ as usize, 0),
        );
        check(
            data,
            STAGE_LIMITS,
            raw::syscall3(libc::SYS_prctl, libc::PR_SET_DUMPABLE as usize, 0, 0),
        );
        // Soft == hard: at the limit the kernel sends SIGKILL, never a SIGXCPU the guest
        // could unblock and die of.
        let cpu = libc::rlimit {
            rlim_cur: plan.cpu_limit_secs,
            rlim_max: plan.cpu_limit_secs,
        };
        let cpu_res = libc::RLIMIT_CPU as usize;
        check(
            data,
            STAGE_LIMITS,
            raw::syscall3(libc::SYS_setrlimit, cpu_res, &cpu as *const _ as usize, 0),
        );
        for (resource, value) in plan.rlimits {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            let limit = &limit as *const libc::rlimit as usize;
            check(
                data,
                STAGE_LIMITS,
                raw::syscall3(libc::SYS_setrlimit, resource as usize, limit, 0),
            );
        }

        let altstack = StackT {
            sp: plan.region + ALTSTACK,
            flags: 0,
            size: ALTSTACK_LEN,
        };
        check(
            data,
            STAGE_ALTSTACK,
            raw::syscall3(
                libc::SYS_sigaltstack,
                &altstack as *const StackT as usize,
                0,
                0,
            ),
        );

        let blob = blob();
        let action = KernelSigaction {
            handler: plan.region + CODE + blob.handler,
            // SA_SIGINFO: the handler needs siginfo (address) and ucontext (rip).
            // SA_ONSTACK: a stack overflow must still be able to report.
            // SA_RESETHAND: the re-raise stub then dies of the default action.
            // SA_RESTORER: x86-64 requires one; ours lives in the blob, not in libc.
            flags: (libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND | SA_RESTORER) as u64,
            restorer: plan.region + CODE + blob.restorer,
            // Block everything while the handler runs.
            mask: !0u64,
        };
        // A traced worker has no handler of its own: its tracer sees each signal's delivery
        // from the kernel, and the default action ends the worker with it (the host's own
        // handlers, inherited with the fork, would run in unmapped memory).
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        let action = if traced { &default } else { &action };
        // Only a filter sends SIGSYS (strict mode kills, and no guest can call kill).
        let handled = if plan.filter_mode || traced {
            &FAULT_SIGNALS[..]
        } else {
            &FAULT_SIGNALS[..FAULT_SIGNALS.len() - 1]
        };
        for &sig in handled {
            let act = action as *const KernelSigaction as usize;
            check(
                data,
                STAGE_SIGACTION,
                raw::syscall6(libc::SYS_rt_sigaction, sig as usize, act, 0, 8, 0, 0),
            );
        }

        // The kernel writes the inherited rseq area (in the host's memory) at every preemption;
        // with that memory gone it would kill the guest with SIGSEGV.
        if let (true, Some(rseq)) = (plan.scrub, plan.rseq) {
            let mut ret = 0;
            for len in rseq.lengths {
                let sig = crate::sys::RSEQ_SIG as usize;
                ret = raw::syscall6(libc::SYS_rseq, rseq.addr, len as usize, 1, sig, 0, 0);
                if ret == 0 {
                    break;
                }
            }
            check(data, STAGE_RSEQ, ret);
        }

        if plan.filter_mode {
            drop_privileges(plan.cap_last, data, &check);
        }
        if plan.walls.landlock != [0; 3] {
            // A ruleset that handles every right this kernel knows and grants none (needs
            // no_new_privs, set above). 24 bytes: fields this kernel lacks are zero.
            let attr = plan.walls.landlock;
            let size = std::mem::size_of_val(&attr);
            let ruleset = raw::syscall3(
                libc::SYS_landlock_create_ruleset,
                attr.as_ptr() as usize,
                size,
                0,
            );
            check(data, STAGE_LANDLOCK, ruleset);
            // A rule for each granted path (at the same path in the empty root, if any).
            for grant in plan.walls.grants.iter().take_while(|g| g.path[0] != 0) {
                let path = grant.path.as_ptr() as usize;
                let flags = (libc::O_PATH | libc::O_CLOEXEC) as usize;
                let fd = raw::syscall3(libc::SYS_open, path, flags, 0);
                check(data, STAGE_LANDLOCK, fd);
                // struct landlock_path_beneath_attr (packed): allowed_access, parent_fd.
                let mut rule = [0u8; 12];
                rule[..8].copy_from_slice(&grant.access.to_ne_bytes());
                rule[8..].copy_from_slice(&(fd as i32).to_ne_bytes());
                const LANDLOCK_RULE_PATH_BENEATH: usize = 1;
                let added = raw::syscall6(
                    libc::SYS_landlock_add_rule,
                    ruleset as usize,
                    LANDLOCK_RULE_PATH_BENEATH,
                    rule.as_ptr() as usize,
                    0,
                    0,
                    0,
                );
                check(data, STAGE_LANDLOCK, added);
                raw::syscall3(libc::SYS_close, fd as usize, 0, 0);
            }
            let restricted =
                raw::syscall3(libc::SYS_landlock_restrict_self, ruleset as usize, 0, 0);
            check(data, STAGE_LANDLOCK, restricted);
            raw::syscall3(libc::SYS_close, ruleset as usize, 0, 0);
        }

        // The blob unmaps everything outside the arena (this code and stack included, unless
        // the run opted out), enters strict mode and jumps to the trampoline.
        let finish = plan.region + CODE + blob.finish;
        std::arch::asm!("jmp {}", in(reg) finish, options(noreturn));
    }
}
