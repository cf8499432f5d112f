//! The worker protocol: everything the host, the zygote, the worker's setup and the blob's
//! assembly must agree on, defined once.
//!
//! - the shared region's layout, as `#[repr(C)]` structs ([`Region`], [`DataPage`],
//!   [`Context`], [`Record`], [`FaultRecord`]); every offset in [`layout`] is an
//!   `offset_of!` of them, and the blob's `global_asm!` takes those offsets as `const`
//!   operands, so a moved field moves the assembly's addresses with it;
//! - the descriptor numbers a worker runs with ([`INPUT_FD`], [`OUTPUT_FD`], [`GO_FD`],
//!   [`DONE_FD`]) and the messages on them: "go" (a byte the parked worker reads), "ready"
//!   (one zero byte on the output, before the first park), "done" (the input's 8-byte sequence
//!   number on the done pipe);
//! - what the record says ([`STATE_RETURNED`], ..., [`Stage`]) and the traced worker's gate
//!   ([`GATE_TRACED`], [`GATE_UNTRACED`]);
//! - the plan a worker runs ([`WorkerPlan`]), which is also the zygote's fork request: its
//!   encoding ([`send_fork_request`], host side) and decoding ([`recv_fork_request`], zygote
//!   side) sit together, with the reply's ([`send_reply`], [`recv_reply`]).
//!
//! The record is written by the worker and may be written by the guest: whatever the host
//! decodes from it is a claim, and a stage number no stage has decodes to no name
//! (`STAGES.get(n)` is `None`), never to a panic.
#![allow(unsafe_code)] // The zygote's half of the fork request is a raw `recvmsg`/`sendto`.

use std::io;
use std::mem::{offset_of, size_of, MaybeUninit};
use std::os::fd::RawFd;

pub(crate) use crate::abi::MAX_GRANTS;
pub(crate) use crate::cgroup::PROCS_PATH_MAX;
use crate::sys::raw;

/// Page 1 of the region: the run's context (written by the host), the worker's record (read
/// by it) and the blob's private stack.
#[repr(C)]
#[allow(dead_code, reason = "a layout: read and written through its offsets")]
pub(crate) struct DataPage {
    pub context: Context,
    pub record: Record,
    /// Free: from the record's end to a round offset.
    _gap0: [u64; 3],
    pub late: LateContext,
    /// Free.
    _gap1: [u64; 4],
    /// A same-code worker's spinning hand-off, on a cache line of its own with the gate (see
    /// [`Handoff`]): the host does not zero it between inputs.
    pub handoff: Handoff,
    /// Free: the gate keeps its place at the top, below the private stack.
    _gap2: [u64; 5],
    /// A traced worker's gate (see [`layout::CTX_TRACE_GATE`]).
    pub trace_gate: u32,
    _gate_pad: u32,
    /// The blob's private stack, up to the end of the page.
    pub stack: [u8; 0x800],
}

/// The spinning hand-off between a same-code worker and its host: two words of one cache
/// line that both sides spin on, so that an input can start and end without a syscall. The
/// worker spins only when the host wrote a budget at [`layout::SPIN_AT`] before the input;
/// else it uses the go and done pipes as before. Each side's spin is bounded: a side that
/// gives up marks the word it waits on [`ASLEEP`] (atomically, so that no hand-off is lost)
/// and blocks on its pipe, and the other side then writes the pipe too.
///
/// The guest can write these words (the data page is writable): the host believes nothing
/// here but "done", as it believes the done pipe (a claim, checked against the record), and
/// never waits on them without a bound.
#[repr(C)]
#[allow(dead_code, reason = "a layout: read and written through its offsets")]
pub(crate) struct Handoff {
    /// The sequence number of the input to run, written by the host: a spinning worker that
    /// ran input `n` waits for this word to leave `n`; one that stops spinning swaps `n` for
    /// `n | ASLEEP` and reads the go pipe, and a host that finds `ASLEEP` writes the go byte.
    pub go: u64,
    /// The sequence number of the input that returned, written by the worker: a host that
    /// stops spinning swaps in `seq | ASLEEP` and polls the done pipe, and a worker that finds
    /// `ASLEEP` writes "done" there too.
    pub done: u64,
}

/// The mark of a side that stopped spinning and sleeps on its pipe (see [`Handoff`]).
pub(crate) const ASLEEP: u64 = 1 << 63;

/// A `struct sock_fprog` in two u64 slots: the length (a u16 for the kernel), then the
/// program's address.
#[repr(C)]
#[allow(dead_code, reason = "a layout: read and written through its offsets")]
pub(crate) struct Fprog {
    pub len: u64,
    pub filter: u64,
}

/// The context, written by the host before the fork (and before each input): what the blob
/// and the trampoline read. Each field is one u64; 0 means off.
#[repr(C)]
#[allow(dead_code, reason = "a layout: read and written through its offsets")]
pub(crate) struct Context {
    /// Initial general registers in `GPR_NAMES` order; the `rsp` slot holds the guest's rsp.
    pub gpr: [u64; 16],
    /// Absolute address of the guest's entry point.
    pub entry: u64,
    /// Non-zero when the CPU and kernel support XSAVE (use `xrstor`, else reset SSE by hand).
    pub xsave: u64,
    /// Non-zero: unmap everything outside `[keep_start, keep_end)` before the guest.
    pub scrub: u64,
    pub keep_start: u64,
    pub keep_end: u64,
    /// 0: strict mode; 1: install the filter described by `fprog`.
    pub mode: u64,
    pub fprog: Fprog,
    /// The end of the user address space (see `sys::user_address_space_end`).
    pub user_end: u64,
    /// Non-zero: a parked worker. After strict mode it waits in `read(control_fd, .., 1)`
    /// until the host writes the job's "go" byte (EOF: the host is done with it, exit quietly).
    pub park: u64,
    /// The descriptor a parked worker waits on: [`INPUT_FD`] for a pool worker (the go byte
    /// comes ahead of the input on the input pipe), [`GO_FD`] for a same-code worker.
    pub control_fd: u64,
    /// Non-zero: a same-code worker. After "done" (see `done`) it parks again instead of
    /// exiting.
    pub again: u64,
    /// The input's sequence number, written by the host before each go byte: the "done"
    /// message.
    pub seq: u64,
    /// Non-zero: a parked worker, which says "ready" ([`READY_BYTE`] on descriptor
    /// `ready - 1`: [`OUTPUT_FD`], or [`DONE_FD`] for a same-code worker whose output goes to
    /// the arena's file; read by the host before the worker is handed out) once set up, just
    /// before it parks the first time. The byte it writes is this word's last, a zero.
    pub ready: u64,
    /// Non-zero: when the guest returns, the trampoline records it and writes `seq` to
    /// [`DONE_FD`] ("done") before it exits or, with `again`, parks again.
    pub done: u64,
    /// Non-zero when `wrfsbase`/`wrgsbase` work in user mode: the trampoline then sets both
    /// bases to zero, so no guest sees the host's TLS address or an earlier input's bases.
    pub fsgsbase: u64,
}

/// The record, written by the worker (best-effort: the guest can write it too).
#[repr(C)]
#[allow(dead_code, reason = "a layout: read and written through its offsets")]
pub(crate) struct Record {
    /// [`STATE_RETURNED`], [`STATE_FAULT`], [`STATE_SETUP_FAILED`] (0: nothing recorded).
    pub state: u64,
    /// The guest's registers when it returned, in `GPR_NAMES` order.
    pub gpr: [u64; 16],
    pub rflags: u64,
    /// With [`STATE_SETUP_FAILED`]: the [`Stage`] that failed (as its number) and its errno.
    pub stage: u64,
    pub errno: u64,
    /// The input a parked worker took: from the spinning hand-off's go word (see
    /// [`Handoff`]), or from the context's `seq` after a go byte. Its "done" names this
    /// input (so a worker that spun never reads the context's line with `seq`, which then
    /// stays in its cache), and a worker that died before it took the input the host posted
    /// (killed from outside while it spun) never ran it. Here, on a line the worker writes
    /// anyway when the guest returns, rather than on the hand-off's line, which the host
    /// spins on meanwhile.
    pub taken: u64,
    _gap: [u64; 11],
    pub fault: FaultRecord,
}

/// What the fault handler records.
#[repr(C)]
#[allow(dead_code, reason = "a layout: read and written through its offsets")]
pub(crate) struct FaultRecord {
    pub signo: u64,
    /// `si_code`, sign-extended.
    pub code: u64,
    /// `si_addr` (SIGSYS: `si_call_addr`, the address after the instruction).
    pub addr: u64,
    pub rip: u64,
    /// `uc_mcontext.gregs` at the fault, 23 words in the kernel's order.
    pub gregs: [u64; 23],
    /// SIGSYS only: `si_syscall` and `si_arch` (which syscall a filter trapped, through which
    /// entry).
    pub sysnr: u64,
    pub arch: u64,
}

/// The context's fields that came after the record's place was fixed.
#[repr(C)]
#[allow(dead_code, reason = "a layout: read and written through its offsets")]
pub(crate) struct LateContext {
    /// A parked worker's pages to fault in before it parks, off the job's clock: the code's
    /// first page and the input's (read), the scratch's first page and the stack's top
    /// (written with the zeros they hold). Four addresses, written by the host.
    pub touch: [u64; 4],
    /// `RLIMIT_AS` the blob sets once it has unmapped the host (whose mappings would count),
    /// before seccomp; 0 leaves it unlimited.
    pub as_limit: u64,
    _gap: u64,
    /// The filter a profile worker installs before its profile's (see
    /// [`crate::walls_filter`]); length 0: none.
    pub walls_fprog: Fprog,
    /// That filter's instructions.
    pub walls_prog: [u64; layout::WALLS_PROG_MAX],
}

/// An XSAVE area, 64-byte aligned as `xrstor` requires.
#[repr(C, align(64))]
#[allow(dead_code, reason = "a layout: read and written through its offsets")]
pub(crate) struct XsaveArea([u8; layout::XSAVE_LEN]);

/// The shared region of one run, as the host writes it into the arena's memfd and the worker
/// maps it.
#[repr(C, align(4096))]
#[allow(dead_code, reason = "a layout: read and written through its offsets")]
pub(crate) struct Region {
    /// Page 0: the blob's code, read+execute.
    pub code: [u8; 0x1000],
    /// Page 1: context, record, private stack.
    pub data: DataPage,
    /// An XSAVE area in its initial state, restored before entry so that no vector or x87
    /// register of the host reaches the guest. Large enough for AVX-512.
    pub xsave: XsaveArea,
    /// The alternate signal stack for the fault handler (a stack overflow must still report).
    pub altstack: [u8; layout::ALTSTACK_LEN],
    /// The seccomp-bpf program to install, in filter mode (at most 4096 instructions).
    pub filter: [u8; layout::FILTER_LEN],
}

/// The region's layout as offsets, under the names the host side uses. Region offsets are from
/// the region's start; `CTX_*`, `REC_*`, `FAULT_*` from the data page's.
pub(crate) mod layout {
    use std::mem::{offset_of, size_of};

    use super::{DataPage, Fprog, Region};

    pub const CODE: usize = offset_of!(Region, code);
    pub const DATA: usize = offset_of!(Region, data);
    pub const XSAVE: usize = offset_of!(Region, xsave);
    /// The XSAVE area's size: room for every component up to AVX-512.
    pub const XSAVE_LEN: usize = 0x4000;
    pub const ALTSTACK: usize = offset_of!(Region, altstack);
    /// The alternate signal stack's size (the handler's frame holds the XSAVE state).
    pub const ALTSTACK_LEN: usize = 0xa000;
    pub const FILTER: usize = offset_of!(Region, filter);
    /// Room for a filter of 4096 instructions, the kernel's limit.
    pub const FILTER_LEN: usize = 0x8000;
    pub const LEN: usize = size_of::<Region>();
    /// The end of the data page: the top of the blob's private stack, relative to `DATA`.
    pub const DATA_END: usize = size_of::<DataPage>();

    pub const CTX_GPR: usize = offset_of!(DataPage, context.gpr);
    pub const CTX_ENTRY: usize = offset_of!(DataPage, context.entry);
    pub const CTX_XSAVE: usize = offset_of!(DataPage, context.xsave);
    pub const CTX_SCRUB: usize = offset_of!(DataPage, context.scrub);
    pub const CTX_KEEP_START: usize = offset_of!(DataPage, context.keep_start);
    pub const CTX_KEEP_END: usize = offset_of!(DataPage, context.keep_end);
    pub const CTX_MODE: usize = offset_of!(DataPage, context.mode);
    pub const CTX_FPROG: usize = offset_of!(DataPage, context.fprog);
    pub const CTX_USER_END: usize = offset_of!(DataPage, context.user_end);
    pub const CTX_PARK: usize = offset_of!(DataPage, context.park);
    pub const CTX_CONTROL_FD: usize = offset_of!(DataPage, context.control_fd);
    pub const CTX_LOOP: usize = offset_of!(DataPage, context.again);
    pub const CTX_SEQ: usize = offset_of!(DataPage, context.seq);
    pub const CTX_READY: usize = offset_of!(DataPage, context.ready);
    pub const CTX_DONE: usize = offset_of!(DataPage, context.done);
    pub const CTX_FSGSBASE: usize = offset_of!(DataPage, context.fsgsbase);
    /// Where, in an [`Fprog`], the program's address goes.
    pub const FPROG_FILTER: usize = offset_of!(Fprog, filter);
    /// Where MXCSR sits in an XSAVE area (its legacy region's layout, fixed by the CPU).
    pub const XSAVE_MXCSR: usize = 24;

    pub const REC_STATE: usize = offset_of!(DataPage, record.state);
    pub const REC_GPR: usize = offset_of!(DataPage, record.gpr);
    pub const REC_RFLAGS: usize = offset_of!(DataPage, record.rflags);
    pub const REC_STAGE: usize = offset_of!(DataPage, record.stage);
    pub const REC_ERRNO: usize = offset_of!(DataPage, record.errno);
    pub const REC_TAKEN: usize = offset_of!(DataPage, record.taken);
    pub const FAULT_SIGNO: usize = offset_of!(DataPage, record.fault.signo);
    pub const FAULT_CODE: usize = offset_of!(DataPage, record.fault.code);
    pub const FAULT_ADDR: usize = offset_of!(DataPage, record.fault.addr);
    pub const FAULT_RIP: usize = offset_of!(DataPage, record.fault.rip);
    pub const FAULT_GREGS: usize = offset_of!(DataPage, record.fault.gregs);
    pub const FAULT_SYSNR: usize = offset_of!(DataPage, record.fault.sysnr);
    pub const FAULT_ARCH: usize = offset_of!(DataPage, record.fault.arch);
    /// End of the record.
    pub const REC_END: usize = offset_of!(DataPage, record) + size_of::<super::Record>();

    pub const CTX_TOUCH: usize = offset_of!(DataPage, late.touch);
    pub const CTX_AS_LIMIT: usize = offset_of!(DataPage, late.as_limit);
    pub const CTX_WALLS_FPROG: usize = offset_of!(DataPage, late.walls_fprog);
    pub const CTX_WALLS_PROG: usize = offset_of!(DataPage, late.walls_prog);
    /// The most instructions the walls filter may have.
    pub const WALLS_PROG_MAX: usize = 140;
    /// The spinning hand-off (see [`super::Handoff`]), and its words.
    pub const HANDOFF: usize = offset_of!(DataPage, handoff);
    pub const HANDOFF_GO: usize = offset_of!(DataPage, handoff.go);
    pub const HANDOFF_DONE: usize = offset_of!(DataPage, handoff.done);

    /// The cache line the host leaves alone between same-code inputs: the hand-off, and the
    /// gate (read only when the worker starts).
    pub const HANDOFF_LINE: std::ops::Range<usize> = HANDOFF..HANDOFF + 64;
    /// Region offset of the spin budget: how many `pause`s a same-code worker spins on the go
    /// word after the current input before it sleeps on its go pipe (0: it does not spin). In
    /// the last word of the blob's page, which the worker maps read-only: the guest cannot
    /// change how its worker waits.
    pub const SPIN_AT: usize = CODE + 0x1000 - 8;
    /// The most runs of memory a same-code worker zeroes itself (see [`RESET_AT`]): its
    /// private stack, and the runs of two scans of up to eight each.
    pub const RESET_RUNS_MAX: usize = 17;
    /// Bytes of one table at [`RESET_AT`]: a count, then up to [`RESET_RUNS_MAX`] pairs.
    pub const RESET_TABLE_LEN: usize = 8 + RESET_RUNS_MAX * 16;
    /// Region offset of the memory a strict same-code worker returns to zeros itself after its
    /// guest returned, once it has said "done" and before it takes the next input: which of
    /// two tables is the active one (0 or 1), then the two tables, each a count (0: none, the
    /// host zeroes it all) and that many (start, end) pairs of the worker's addresses, 64-byte
    /// aligned: its private stack (the end of the data page), then the pages of its scratch,
    /// stack and alternate stack that the host's last scan found (see `Arena::reset_memory`).
    /// The host, which may scan again while the worker still zeroes, writes a new table into
    /// the one that is not active and then makes it the active one, at most once per input
    /// (after its "done"): the table the worker reads is either the one active before, which
    /// the host leaves alone until the next input's "done" (when this zeroing is long over),
    /// or the new one, complete before it became active. Below the spin budget, in the blob's page, read-only to the
    /// worker: the guest cannot point its worker's writes anywhere else. Those lines are in
    /// the worker's cache, where the host would have to fetch each one it checks.
    pub const RESET_AT: usize = SPIN_AT - 8 - 2 * RESET_TABLE_LEN;
    /// A traced worker's gate (a u32): 0 until the host's tracer has seized the worker, then
    /// [`GATE_TRACED`], or [`GATE_UNTRACED`] when the tracer could not (the worker then
    /// installs its own recording handlers, whose details the report marks unverified). The
    /// worker waits on it with `FUTEX_WAIT` (a shared futex: the data page is a shared mapping
    /// of the arena's file) right after it has mapped the region.
    pub const CTX_TRACE_GATE: usize = offset_of!(DataPage, trace_gate);

    pub(crate) use super::{
        DONE_FD, GATE_TRACED, GATE_UNTRACED, GO_FD, OUTPUT_FD, STATE_FAULT, STATE_RETURNED,
        STATE_SETUP_FAILED, UC_EFL, UC_RIP,
    };

    // Places guests and tests know (a guest finds its region from its return address; the
    // review tests forge records at these offsets): they must not move.
    const _: () = assert!(CODE == 0 && DATA == 0x1000 && LEN == 0x18000);
    const _: () = assert!(XSAVE == 0x2000 && ALTSTACK == 0x6000 && FILTER == 0x10000);
    const _: () = assert!(CTX_SEQ == 0x0e0 && REC_STATE == 0x100);
    const _: () = assert!(REC_STAGE == 0x190 && REC_ERRNO == 0x198);
    const _: () = assert!(FAULT_SIGNO == 0x200 && FAULT_ADDR == 0x210 && FAULT_RIP == 0x218);
    const _: () = assert!(CTX_TRACE_GATE == 0x7f8 && DATA_END == 0x1000);
    const _: () = assert!(HANDOFF == 0x7c0 && HANDOFF_LINE.end == CTX_TRACE_GATE + 8);
    // What the kernel and the blob need of the layout.
    const _: () = assert!(XSAVE % 64 == 0 && size_of::<super::XsaveArea>() == XSAVE_LEN);
    const _: () = assert!(ALTSTACK + ALTSTACK_LEN == FILTER);
    const _: () = assert!(FILTER + FILTER_LEN == LEN && FILTER_LEN >= 4096 * 8);
    const _: () = assert!(REC_END <= 0x800, "record overlaps the private stack");
    const _: () = assert!(CTX_TOUCH >= REC_END && CTX_TRACE_GATE + 8 <= 0x800);
    const _: () = assert!(offset_of!(DataPage, stack) == 0x800);
    // One u64 slot per GPR_NAMES entry.
    const _: () = assert!(REC_RFLAGS == REC_GPR + 16 * 8);
}

/// Input pipe of a worker (and a pool worker's go byte, ahead of the input).
pub(crate) const INPUT_FD: usize = 0;
/// Output pipe of a worker (and a pool worker's ready byte, ahead of the output).
pub(crate) const OUTPUT_FD: usize = 1;
/// Control pipes: a same-code worker reads go bytes from `GO_FD` (fd 0 stays the empty
/// input, 1 the output), a pool worker holds still there after its job; same-code and pool
/// workers write "done" messages to `DONE_FD`.
pub(crate) const GO_FD: usize = 3;
/// See [`GO_FD`].
pub(crate) const DONE_FD: usize = 4;
/// The length of a "go" message: one byte, of any value.
pub(crate) const GO_LEN: usize = 1;
/// The "ready" message: this one byte (see [`Context::ready`]).
pub(crate) const READY_BYTE: u8 = 0;
/// The "done" message: the input's sequence number ([`Context::seq`]), native-endian.
pub(crate) const DONE_LEN: usize = size_of::<u64>();
/// Where, in [`Context::ready`] (which holds a descriptor's number plus one), the blob finds
/// the ready byte to write.
pub(crate) const READY_BYTE_AT: usize = layout::CTX_READY + 7;
const _: () = assert!(
    ((OUTPUT_FD as u64 + 1).to_le_bytes()[READY_BYTE_AT - layout::CTX_READY] == READY_BYTE)
        && ((DONE_FD as u64 + 1).to_le_bytes()[READY_BYTE_AT - layout::CTX_READY] == READY_BYTE)
);

/// The "go" message as the host writes it.
pub(crate) const GO: [u8; GO_LEN] = [1];

/// Whether `byte`, the first the host read from a parked worker's ready descriptor (see
/// [`Context::ready`]), is "ready".
pub(crate) fn is_ready(byte: u8) -> bool {
    byte == READY_BYTE
}

/// Whether the last [`DONE_LEN`] bytes read from a done pipe are the "done" message of input
/// `seq`. A claim only: the guest can write the pipe too (see `host::watch::Control`).
pub(crate) fn is_done(tail: &[u8; DONE_LEN], seq: u64) -> bool {
    *tail == seq.to_ne_bytes()
}

/// Values of `REC_STATE` (0: nothing recorded).
pub(crate) const STATE_RETURNED: u64 = 1;
pub(crate) const STATE_FAULT: u64 = 2;
pub(crate) const STATE_SETUP_FAILED: u64 = 3;

/// Values of the trace gate (see [`layout::CTX_TRACE_GATE`]).
pub(crate) const GATE_TRACED: u32 = 1;
pub(crate) const GATE_UNTRACED: u32 = 2;

/// Offset of `uc_mcontext.gregs` in a kernel `ucontext` (libc's `ucontext_t` is laid out the
/// same), and of its `REG_RIP` / `REG_EFL` entries.
pub(crate) const UC_GREGS: usize = offset_of!(libc::ucontext_t, uc_mcontext.gregs);
pub(crate) const UC_RIP: usize = UC_GREGS + libc::REG_RIP as usize * 8;
pub(crate) const UC_EFL: usize = UC_GREGS + libc::REG_EFL as usize * 8;
const _: () = assert!(UC_GREGS == 40 && UC_RIP == 40 + 16 * 8 && UC_EFL == 40 + 17 * 8);

/// The kernel's `siginfo_t` offsets the fault handler reads (libc has no accessors for the
/// union's SIGSYS fields): `si_code`, `si_addr` / `si_call_addr`, `si_syscall`, `si_arch`.
pub(crate) const SI_CODE: usize = 8;
pub(crate) const SI_ADDR: usize = 16;
pub(crate) const SI_SYSCALL: usize = 24;
pub(crate) const SI_ARCH: usize = 28;

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

/// The worker's setup steps. A failing one is recorded by its number in `REC_STAGE`; the
/// numbers are the order of this list (the blob's own steps included) and never change.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u64)]
pub(crate) enum Stage {
    Pdeathsig = 0,
    Sigmask = 1,
    Map = 2,
    Fds = 3,
    Close = 4,
    Limits = 5,
    Altstack = 6,
    Sigaction = 7,
    Seccomp = 8,
    Scrub = 9,
    Rseq = 10,
    Privileges = 11,
    Netns = 12,
    Landlock = 13,
    Cgroup = 14,
    Root = 15,
    Userns = 16,
}

impl Stage {
    /// Every stage, by number.
    pub(crate) const ALL: [Stage; 17] = [
        Stage::Pdeathsig,
        Stage::Sigmask,
        Stage::Map,
        Stage::Fds,
        Stage::Close,
        Stage::Limits,
        Stage::Altstack,
        Stage::Sigaction,
        Stage::Seccomp,
        Stage::Scrub,
        Stage::Rseq,
        Stage::Privileges,
        Stage::Netns,
        Stage::Landlock,
        Stage::Cgroup,
        Stage::Root,
        Stage::Userns,
    ];

    /// What the stage does, as the error the host reports when it fails.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Stage::Pdeathsig => "worker setup: PR_SET_PDEATHSIG",
            Stage::Sigmask => "worker setup: rt_sigprocmask",
            Stage::Map => "worker setup: mapping the arena",
            Stage::Fds => "worker setup: moving the pipes to fds 0 and 1",
            Stage::Close => "worker setup: close_range",
            Stage::Limits => "worker setup: setrlimit/PR_SET_DUMPABLE",
            Stage::Altstack => "worker setup: sigaltstack",
            Stage::Sigaction => "worker setup: rt_sigaction",
            Stage::Seccomp => "worker setup: entering seccomp strict mode",
            Stage::Scrub => "worker setup: unmapping the host's memory",
            Stage::Rseq => "worker setup: unregistering the inherited rseq area",
            Stage::Privileges => "worker setup: dropping privileges for filter mode",
            Stage::Netns => "worker setup: joining the empty network namespace",
            Stage::Landlock => "worker setup: Landlock",
            Stage::Cgroup => "worker setup: joining the job's cgroups",
            Stage::Root => "worker setup: an empty root file system",
            Stage::Userns => "worker setup: mapping the user namespace's ids",
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < Stage::ALL.len() {
        assert!(Stage::ALL[i] as usize == i, "Stage::ALL is in number order");
        i += 1;
    }
};

/// Every stage's name, by number (what [`Stage::name`] says), for the host's report. Made from
/// [`Stage`], not kept beside it. Look a recorded number up with `STAGES.get(n)`: the guest
/// can write any number there.
pub(crate) const STAGES: [&str; Stage::ALL.len()] = {
    let mut names = [""; Stage::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Stage::ALL[i].name();
        i += 1;
    }
    names
};

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

/// How many `mprotect`s a worker applies after mapping: the blob page, and for a same-code
/// worker the XSAVE image and the filter area (length 0 otherwise; see
/// `Arena::prepare_worker`).
pub(crate) const PROTECTS: usize = 3;

/// One `mprotect` the worker applies after mapping.
#[derive(Clone, Copy)]
pub(crate) struct Protect {
    pub addr: usize,
    pub len: usize,
    pub prot: i32,
}

/// Everything the worker needs, built by the host before `fork`, and the zygote's fork
/// request. Plain data: the child only reads it from its copy of the host's stack (or patches
/// the zygote's received copy in place).
#[derive(Clone, Copy)]
pub(crate) struct WorkerPlan {
    pub host_pid: libc::pid_t,
    pub input_fd: i32,
    pub output_fd: i32,
    /// Control pipes, each -1 when absent: the go pipe's read end (same-code workers) and the
    /// done pipe's write end (same-code and pool workers), moved to [`GO_FD`] and [`DONE_FD`].
    pub control_fds: [i32; 2],
    /// Address of the region (see [`layout`]) once the worker has mapped it.
    pub region: usize,
    /// Region, code, input, scratch, stack: mapped in this order (see [`crate::arena`]).
    pub maps: [FixedMap; 5],
    /// The blob page made read+execute; the XSAVE image and the filter read-only (same-code).
    pub protects: [Protect; PROTECTS],
    /// `RLIMIT_CPU` in seconds: a backstop behind the host's own SIGKILL at the deadline.
    pub cpu_limit_secs: u64,
    /// The forking thread's rseq registration, to undo before scrubbing.
    pub rseq: Option<raw::RseqRegistration>,
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
    pub cgroup_procs: [[u8; PROCS_PATH_MAX]; crate::cgroup::PROCS_SLOTS],
    /// The host seizes the worker with its tracer (see [`crate::tracer`]): the worker waits at
    /// the gate in its data page ([`layout::CTX_TRACE_GATE`]) once the region is mapped, so
    /// that nothing of its setup past that point, and nothing of the guest, runs untraced.
    pub traced: bool,
}

impl WorkerPlan {
    /// The descriptors a fork request for this plan carries: the arena's memfd, the input's
    /// read end, the output's write end, then one per control pipe the plan has.
    pub(crate) fn fds_wanted(&self) -> usize {
        3 + self.control_fds.iter().filter(|&&fd| fd >= 0).count()
    }
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
    pub grants: [Grant; MAX_GRANTS],
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

impl Grant {
    /// No grant (an empty path).
    pub(crate) const EMPTY: Grant = Grant {
        path: [0; GRANT_PATH],
        dir: false,
        write: false,
        access: 0,
    };
}

impl Default for Grant {
    fn default() -> Self {
        Grant::EMPTY
    }
}

impl Walls {
    /// No walls: what a worker under strict mode or `strict-bpf` gets.
    pub(crate) const NONE: Walls = Walls {
        clone_flags: 0,
        host_pidfd: -1,
        netns_fd: -1,
        landlock: [0; 3],
        id_maps: [[0; 32]; 2],
        grants: [Grant::EMPTY; MAX_GRANTS],
    };

    pub(crate) fn pid_namespace(&self) -> bool {
        self.clone_flags & libc::CLONE_NEWPID as usize != 0
    }
}

// --- The zygote's fork request: one `SOCK_SEQPACKET` message holding the bytes of a
// `WorkerPlan` and its descriptors (`SCM_RIGHTS`); the reply, one `Reply`. ---

/// The most descriptors one fork request carries (memfd, input, output, go, done).
pub(crate) const FORK_REQUEST_FDS: usize = 5;
const _: () = assert!(FORK_REQUEST_FDS == crate::sys::MAX_PASSED_FDS);

/// Bytes of one reply: the worker's pid, or `-errno`. The zygote also sends one 0 when ready.
pub(crate) type Reply = i64;

/// Host side: sends `plan` and `fds` (see [`WorkerPlan::fds_wanted`]) as one request. A failed
/// send delivered nothing. May allocate nothing but is a host call (errno, EINTR retries).
pub(crate) fn send_fork_request(socket: RawFd, plan: &WorkerPlan, fds: &[RawFd]) -> io::Result<()> {
    crate::sys::send_with_fds(socket, plan, fds)
}

/// Host side: one reply. `Ok(None)` when the zygote sent something that is no reply (or
/// nothing: it is gone).
pub(crate) fn recv_reply(socket: RawFd) -> io::Result<Option<Reply>> {
    let mut reply = [0u8; size_of::<Reply>()];
    let n = crate::sys::recv(socket, &mut reply)?;
    Ok((n == reply.len()).then(|| Reply::from_ne_bytes(reply)))
}

/// `cmsghdr` followed by room for five descriptors: `CMSG_SPACE(5 * 4)` bytes.
#[repr(C, align(8))]
struct FdsControl {
    len: usize,
    level: i32,
    kind: i32,
    fds: [i32; FORK_REQUEST_FDS],
    _pad: i32,
}

/// `CMSG_LEN(0)`: the `cmsghdr` before the descriptors.
const CMSG_HEADER: usize = offset_of!(FdsControl, fds);

/// A fork request as the zygote received it ([`recv_fork_request`]).
pub(crate) enum Received {
    /// The host's end is closed (or the socket failed): the zygote's work is done.
    Closed,
    /// A signal interrupted the wait: nothing arrived.
    Interrupted,
    /// A message arrived with these descriptors (the first `count` of `fds`, which the
    /// receiver closes whatever else is wrong); `whole` when exactly a plan's bytes came and
    /// exactly the descriptors it wants, so the plan buffer holds a valid plan.
    Request {
        fds: [i32; FORK_REQUEST_FDS],
        count: usize,
        whole: bool,
    },
}

/// Zygote side: receives one request into `plan` with raw `recvmsg` (async-signal-safe: the
/// zygote is a fork of a multi-threaded host). Received descriptors are `O_CLOEXEC`.
///
/// # Safety
/// Raw syscalls only; `plan` is written by the kernel. Read it only when the result says
/// `whole`, and only if the sender is this binary's [`send_fork_request`].
pub(crate) unsafe fn recv_fork_request(
    socket: RawFd,
    plan: &mut MaybeUninit<WorkerPlan>,
) -> Received {
    let mut control = FdsControl {
        len: 0,
        level: 0,
        kind: 0,
        fds: [-1; FORK_REQUEST_FDS],
        _pad: 0,
    };
    let mut iov = libc::iovec {
        iov_base: plan.as_mut_ptr().cast(),
        iov_len: size_of::<WorkerPlan>(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut control as *mut FdsControl).cast();
    msg.msg_controllen = size_of::<FdsControl>();
    // SAFETY: recvmsg into locals (and `plan`) that outlive the call, with their sizes.
    let got = unsafe {
        raw::syscall3(
            libc::SYS_recvmsg,
            socket as usize,
            &mut msg as *mut libc::msghdr as usize,
            libc::MSG_CMSG_CLOEXEC as usize,
        )
    };
    if got == -(libc::EINTR as isize) {
        return Received::Interrupted;
    }
    if got <= 0 {
        return Received::Closed;
    }
    let count = if msg.msg_controllen >= CMSG_HEADER
        && control.level == libc::SOL_SOCKET
        && control.kind == libc::SCM_RIGHTS
        && control.len >= CMSG_HEADER
    {
        ((control.len - CMSG_HEADER) / size_of::<i32>()).min(FORK_REQUEST_FDS)
    } else {
        0
    };
    // SAFETY: read only when the whole plan arrived (checked first).
    let whole = got as usize == size_of::<WorkerPlan>()
        && msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) == 0
        && count == unsafe { plan.assume_init_ref() }.fds_wanted();
    Received::Request {
        fds: control.fds,
        count,
        whole,
    }
}

/// Zygote side: sends one reply with raw `sendto`; `false` when it could not (the host is gone).
pub(crate) fn send_reply(socket: RawFd, value: Reply) -> bool {
    // SAFETY: sendto with a pointer to a local of the given length and no address.
    let sent = unsafe {
        raw::syscall6(
            libc::SYS_sendto,
            socket as usize,
            &value as *const Reply as usize,
            size_of::<Reply>(),
            libc::MSG_NOSIGNAL as usize,
            0,
            0,
        )
    };
    sent == size_of::<Reply>() as isize
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn stage_names_follow_the_enum_and_unknown_numbers_have_none() {
        for (i, stage) in Stage::ALL.iter().enumerate() {
            assert_eq!(*stage as usize, i);
            assert_eq!(STAGES[i], stage.name());
        }
        assert_eq!(
            STAGES[Stage::Pdeathsig as usize],
            "worker setup: PR_SET_PDEATHSIG"
        );
        // A guest can write any number into the record.
        for number in [Stage::ALL.len() as u64, u32::MAX as u64, u64::MAX] {
            assert!(STAGES.get(number as usize).is_none());
        }
    }

    #[test]
    fn a_fork_request_decodes_as_it_was_encoded() {
        let (host, zygote) = crate::sys::seqpacket_pair().unwrap();
        let (pipe_r, pipe_w) = crate::sys::pipe().unwrap();
        let mut plan = WorkerPlan {
            host_pid: 1234,
            input_fd: 5,
            output_fd: 6,
            control_fds: [-1, 7],
            region: 0x1000_0000,
            maps: [FixedMap::private(0x2000_0000, 4096); 5],
            protects: [Protect {
                addr: 0,
                len: 0,
                prot: 0,
            }; PROTECTS],
            cpu_limit_secs: 3,
            rseq: None,
            scrub: true,
            filter_mode: false,
            cap_last: 40,
            walls: Walls::default(),
            rlimits: [(0, 0); 2],
            cgroup_procs: [[0; PROCS_PATH_MAX]; crate::cgroup::PROCS_SLOTS],
            traced: false,
        };
        plan.walls.grants[0].path[..5].copy_from_slice(b"/tmp\0");
        assert_eq!(plan.fds_wanted(), 4);
        let sent = [
            pipe_r.as_raw_fd(),
            pipe_w.as_raw_fd(),
            pipe_r.as_raw_fd(),
            pipe_w.as_raw_fd(),
        ];
        send_fork_request(host.as_raw_fd(), &plan, &sent).unwrap();
        let mut got = MaybeUninit::<WorkerPlan>::uninit();
        // SAFETY: the request was sent by `send_fork_request` above.
        let received = unsafe { recv_fork_request(zygote.as_raw_fd(), &mut got) };
        let Received::Request { fds, count, whole } = received else {
            panic!("no request arrived");
        };
        assert!(whole);
        assert_eq!(count, 4);
        // SAFETY: the whole plan arrived.
        let got = unsafe { got.assume_init_ref() };
        assert_eq!(got.host_pid, 1234);
        assert_eq!(got.control_fds, [-1, 7]);
        assert_eq!(got.maps[4].addr, 0x2000_0000);
        assert_eq!(&got.walls.grants[0].path[..5], b"/tmp\0");
        for fd in &fds[..count] {
            // SAFETY: descriptors the request installed here.
            unsafe { libc::close(*fd) };
        }
        // Too few descriptors: the request is not whole.
        send_fork_request(host.as_raw_fd(), &plan, &sent[..3]).unwrap();
        // SAFETY: as above.
        let received = unsafe { recv_fork_request(zygote.as_raw_fd(), &mut got_again()) };
        let Received::Request { fds, count, whole } = received else {
            panic!("no request arrived");
        };
        assert!(!whole && count == 3);
        for fd in &fds[..count] {
            // SAFETY: descriptors the request installed here.
            unsafe { libc::close(*fd) };
        }

        assert!(send_reply(zygote.as_raw_fd(), -22));
        assert_eq!(recv_reply(host.as_raw_fd()).unwrap(), Some(-22));
        drop(host);
        // SAFETY: as above.
        let received = unsafe { recv_fork_request(zygote.as_raw_fd(), &mut got_again()) };
        assert!(matches!(received, Received::Closed));
    }

    fn got_again() -> MaybeUninit<WorkerPlan> {
        MaybeUninit::uninit()
    }
}
