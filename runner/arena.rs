//! The memory a worker runs in, prepared by the host and reused by its thread from run to run.
//!
//! An arena is a memfd that holds the worker region (blob, context, record, XSAVE image,
//! alternate signal stack), the code and the input, plus a reserved window of address space.
//! The host maps the memfd read+write and the window `PROT_NONE`, both `MADV_DONTFORK`: no
//! forked process inherits either. The worker maps its parts into the window at addresses the
//! host chose before the fork (free in the child, since the reservation was not inherited):
//! the blob page read+execute, the code read+execute, the input read-only, and fresh private
//! scratch and stack (with an unmapped guard page below it) of its own.
//!
//! So a guest sees exactly its own code and input, nothing another job wrote, and no other
//! worker (of this or another host thread) can read or write this arena. Before each job (and
//! each input of a same-code worker) the host returns everything of the region a guest can
//! write to zeros and writes the context again, and zeroes the code and input areas past what
//! it writes: nothing a guest wrote survives into the next job. What a guest wrote into the
//! region during its run is only ever read back as a best-effort record.

use std::io;

use crate::abi::{Gpr, RunOptions};
use crate::sys::{Owner, Reservation, SharedFile};
use crate::worker::{self, layout::*, FixedMap, Protect, PROTECTS};

pub(crate) const PAGE: usize = 4096;

pub(crate) fn round_up(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

/// Arenas larger than this are dropped after their run rather than kept for the next one.
const KEEP_BYTES: usize = 8 << 20;

/// Sizes one run needs, in whole pages.
#[derive(Clone, Copy)]
pub(crate) struct Need {
    code: usize,
    input: usize,
    scratch: usize,
    stack: usize,
}

impl Need {
    pub(crate) fn code(self) -> usize {
        self.code
    }

    pub(crate) fn input(self) -> usize {
        self.input
    }

    pub(crate) fn new(code: &[u8], input: &[u8], options: &RunOptions) -> Self {
        Need::sized(code.len(), input.len(), options)
    }

    /// Sizes for `code_len` and `input_len` bytes with the options' scratch and stack.
    pub(crate) fn sized(code_len: usize, input_len: usize, options: &RunOptions) -> Self {
        Need {
            code: round_up(code_len.max(1)),
            input: round_up(input_len.max(1)),
            scratch: round_up(options.limits.scratch.max(1)),
            stack: round_up(options.limits.stack.max(1)),
        }
    }
}

/// The sequence number of a single-use worker's one job (what a pool worker's "done" carries).
pub(crate) const SINGLE_JOB_SEQ: u64 = 1;

/// The code a parked pool worker's arena is prepared with (`ret`), before its job's code
/// replaces it (see [`Arena::load_job_unused`]).
pub(crate) const UNUSED_CODE: &[u8] = &[0xc3];

/// How a worker waits for its job and ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Runs at once, exits when the guest ends.
    Fresh,
    /// Says ready, parks for its go byte on fd 0, runs one job, says done, exits.
    Pool,
    /// Parks for each input's go byte on its go pipe, says done and parks again.
    SameCode,
}

/// What the guest's run left in the region: written by the worker (and writable by the
/// guest), so every field is a claim for the host to check, never a fact.
pub(crate) struct Record {
    pub state: u64,
    pub gpr: [u64; 16],
    pub rflags: u64,
    pub stage: u64,
    pub errno: u64,
    pub fault_signo: u64,
    pub fault_addr: u64,
    pub fault_rip: u64,
    pub fault_sysnr: u64,
    pub fault_arch: u64,
}

pub(crate) struct Arena {
    file: SharedFile,
    window: Reservation,
    /// Capacities in bytes (whole pages); the file holds region, code, input in that order,
    /// and for a reusable arena then scratch, a guard page and the stack.
    code_cap: usize,
    input_cap: usize,
    scratch_cap: usize,
    stack_cap: usize,
    reusable: bool,
    /// Bytes at the start of the input area an earlier input may have left non-zero.
    input_dirty: usize,
    /// What the last scan of a strict same-code worker's writable pages found (see
    /// [`Arena::reset_memory`]).
    known: Option<Known>,
    /// A strict same-code worker's shared mappings (address, length, file offset), where the
    /// pages it zeroes itself are translated to its addresses (see [`RESET_AT`]).
    worker_maps: Option<[(usize, usize, usize); 3]>,
    /// The last input's guest returned to a strict same-code worker's trampoline, which
    /// zeroed its pages then (see [`Arena::reset_memory`]); taken by the next input.
    cleaned: bool,
    /// The file's block count as [`Arena::take_output`] read it when the last input said
    /// "done" and had written nothing: [`Arena::reset_memory`] takes it for the count it would
    /// otherwise read with another `fstat` (see [`output_in_file`]).
    blocks_at_done: Option<u64>,
    /// The worker's part of the context (offset in the data page, value), as
    /// [`Arena::prepare_worker`] last wrote it: written again with every job or input.
    worker_ctx: Option<[(usize, u64); WORKER_CTX_WORDS]>,
    /// The walls filter the worker installs before its profile's (written with the context).
    walls: Option<&'static [crate::policy::Insn]>,
    /// The process the mappings belong to (see [`Arena::mapped_here`]).
    owner: Owner,
}

/// The file's size in blocks after a scan, and the data runs (start, end) the scan found in
/// the ranges it zeroed: while the size stays the same, those are the only pages there.
#[derive(Debug)]
struct Known {
    blocks: u64,
    /// The worker's page-fault watch and its head, read before the scan's `fstat` (see
    /// [`crate::sys::faults`]): while the head stays there, no page came to be since either.
    faults: Option<Faults>,
    runs: Vec<(usize, usize)>,
    /// Whether the worker's table at [`RESET_AT`] lists these runs: a worker whose guest
    /// returned zeroes them itself before its next input.
    by_worker: bool,
}

/// A page-fault watch's head (see [`crate::sys::faults::FaultWatch`]), with the watch's id:
/// heads of two watches say nothing of each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Faults {
    pub watch: u64,
    pub head: u64,
}

/// What [`Arena::reset_memory`] found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reset {
    /// The worker did its part (see [`Arena::reset_memory`]).
    pub cleaned: bool,
    /// The page-fault watch spared the reset its `fstat`.
    pub unstatted: bool,
}

/// Words in the worker's part of the context (see [`Arena::prepare_worker`]).
const WORKER_CTX_WORDS: usize = 21;

impl Arena {
    pub(crate) fn new(need: Need) -> io::Result<Self> {
        Arena::with_capacity(
            Need {
                code: need.code.max(64 << 10),
                input: need.input.max(64 << 10),
                scratch: need.scratch.max(1 << 20),
                stack: need.stack.max(1 << 20),
            },
            false,
        )
    }

    /// An arena for a same-code worker: its scratch and stack live in the memfd too (sized
    /// exactly as `need` says), so the host can return them to zeros between inputs with
    /// [`Arena::reset_memory`] while the worker, in strict mode, cannot even call `madvise`.
    pub(crate) fn new_reusable(need: Need) -> io::Result<Self> {
        Arena::with_capacity(need, true)
    }

    fn with_capacity(cap: Need, reusable: bool) -> io::Result<Self> {
        let Need {
            code: code_cap,
            input: input_cap,
            scratch: scratch_cap,
            stack: stack_cap,
        } = cap;
        let mut len = LEN + code_cap + input_cap;
        if reusable {
            len += scratch_cap + PAGE + stack_cap;
        }
        let mut file = SharedFile::new(len)?;
        let window_len =
            LEN + PAGE + code_cap + PAGE + input_cap + PAGE + scratch_cap + PAGE + PAGE + stack_cap;
        let window = Reservation::new(window_len)?;
        let blob = worker::blob();
        assert!(
            blob.code.len() <= RESET_AT,
            "the worker blob outgrew its page"
        );
        file.write_bytes(CODE, blob.code);
        Ok(Arena {
            file,
            window,
            code_cap,
            input_cap,
            scratch_cap,
            stack_cap,
            reusable,
            input_dirty: 0,
            known: None,
            worker_maps: None,
            cleaned: false,
            blocks_at_done: None,
            worker_ctx: None,
            walls: None,
            owner: Owner::here(),
        })
    }

    /// Whether the arena's memory is mapped in this process: it is not in a process forked
    /// from the one that made it (both mappings are `MADV_DONTFORK`), which inherits the arena
    /// only as the data of a thread-local cache. Such an arena must not be used; dropping it
    /// only closes its memfd descriptor (see [`Owner`]).
    pub(crate) fn mapped_here(&self) -> bool {
        self.owner.is_here()
    }

    /// The process that made the arena: the only one that forks workers into it (every path
    /// to [`crate::host::Spawned::spawn`] checks that first), so their parent.
    pub(crate) fn owner_pid(&self) -> libc::pid_t {
        self.owner.pid()
    }

    /// The capacities, as sizes to map: a same-code worker maps all of it.
    pub(crate) fn capacity(&self) -> Need {
        Need {
            code: self.code_cap,
            input: self.input_cap,
            scratch: self.scratch_cap,
            stack: self.stack_cap,
        }
    }

    pub(crate) fn fits(&self, need: Need) -> bool {
        need.code <= self.code_cap
            && need.input <= self.input_cap
            && need.scratch <= self.scratch_cap
            && need.stack <= self.stack_cap
    }

    /// Whether the thread should keep this arena for its next run.
    pub(crate) fn worth_keeping(&self) -> bool {
        self.file.len() <= KEEP_BYTES
    }

    pub(crate) fn fd(&self) -> i32 {
        self.file.fd()
    }

    fn code_file_offset(&self) -> usize {
        LEN
    }

    fn input_file_offset(&self) -> usize {
        LEN + self.code_cap
    }

    /// Reusable arenas: where scratch, then the stack's guard page and the stack, start.
    fn scratch_file_offset(&self) -> usize {
        LEN + self.code_cap + self.input_cap
    }

    fn stack_file_offset(&self) -> usize {
        self.scratch_file_offset() + self.scratch_cap
    }

    /// Returns a reusable arena's scratch and stack to zeros (see [`SharedFile::zero_range`]),
    /// and with `strict` (a worker under strict mode or `strict-bpf`) its alternate signal
    /// stack too, the region's only other page that worker can write but the data page.
    ///
    /// Under `strict` the scan for the pages to zero is skipped when the file has exactly the
    /// pages it had after the last one ([`SharedFile::blocks`], one `fstat` where the scan
    /// takes several `lseek`s): then no page came to be since, and the pages found then are
    /// the ones to look at; only their lines that are not zero are written. Nothing but the
    /// host removes pages (the worker cannot punch holes under strict mode), and the host
    /// scans again after any change.
    ///
    /// After an input whose guest returned to the worker's trampoline ([`Arena::note_cleaned`]),
    /// which zeroes the pages of the last scan itself (see [`RESET_AT`]) after it said "done"
    /// and before it takes the next input, the host, seeing no new page, looks at none of them
    /// (each line it read would come from the worker's cache). When it sees new pages it scans
    /// and zeroes what it finds while the worker may still be zeroing the same lines: both
    /// write nothing but zeros there. A guest that says "done" without returning (it can write
    /// the words and the record) skips that, and only its own next inputs see what it left:
    /// inputs of one same-code session are one submission.
    ///
    /// With `faults` (the worker's page-fault watch, read just now: see
    /// [`crate::sys::faults`]) still where it was when the last scan's `fstat` was made, no
    /// page of the worker's came to be since, and the `fstat` is skipped too: a spun input
    /// then costs the host no system call at all.
    ///
    /// Says whether the worker did its part (its table listed its private stack too, which
    /// [`Arena::load_input`] then need not look at either), and whether the watch spared the
    /// `fstat`.
    pub(crate) fn reset_memory(
        &mut self,
        strict: bool,
        faults: Option<Faults>,
    ) -> io::Result<Reset> {
        debug_assert!(self.reusable);
        let cleaned = std::mem::take(&mut self.cleaned)
            && self.known.as_ref().is_some_and(|known| known.by_worker);
        let scratch = self.scratch_file_offset();
        let len = self.scratch_cap + PAGE + self.stack_cap;
        if !strict {
            self.known = None;
            return self.file.zero_range(scratch, len).map(|()| Reset {
                cleaned: false,
                unstatted: false,
            });
        }
        let no_fault = faults.is_some() && self.known.as_ref().is_some_and(|k| k.faults == faults);
        // A head vouches only for a count read after it: not for the one read at "done".
        let (blocks, faults) = match (no_fault, self.blocks_at_done.take()) {
            (true, _) => (None, faults),
            (false, Some(blocks)) => (Some(blocks), None),
            (false, None) => (Some(self.file.blocks()?), faults),
        };
        if let Some(mut known) = self
            .known
            .take_if(|known| blocks.is_none_or(|blocks| known.blocks == blocks))
        {
            if !cleaned {
                for &(at, end) in &known.runs {
                    self.file.zero_dirty(at, end - at);
                }
            }
            known.faults = faults;
            self.known = Some(known);
            return Ok(Reset {
                cleaned,
                unstatted: no_fault,
            });
        }
        let mut runs = Vec::new();
        let punched = self
            .file
            .zero_range_found(ALTSTACK, ALTSTACK_LEN, &mut runs)?
            | self.file.zero_range_found(scratch, len, &mut runs)?;
        // A worker whose guest returned may still be zeroing from the table of the last scan
        // (see RESET_AT): a line of a page just punched out that it reads now, on a shared
        // mapping, brings that page back (zero), and one it brings back before the `fstat`
        // below would be counted there yet listed nowhere, and never zeroed again while the
        // count holds. So after a punch under such a worker the next input scans again
        // (the table written now lists no punched page: the worker's next zeroing stays out).
        // The same for the fault watch: a head that no later read can match.
        let (blocks, faults) = if punched && cleaned {
            (u64::MAX, None) // no file has that many blocks
        } else {
            (self.file.blocks()?, faults)
        };
        let by_worker = self.write_reset_table(&runs);
        self.known = Some(Known {
            blocks,
            faults,
            runs,
            by_worker,
        });
        Ok(Reset {
            cleaned,
            unstatted: false,
        })
    }

    /// Writes the worker's table of memory to zero (see [`RESET_AT`]): its private stack and
    /// `runs`, translated to its addresses; an empty table (the host zeroes them) when one
    /// lies outside the worker's shared mappings. Says whether the table lists them.
    fn write_reset_table(&mut self, runs: &[(usize, usize)]) -> bool {
        let translate = |&(start, end): &(usize, usize)| {
            self.worker_maps
                .iter()
                .flatten()
                .find_map(|&(addr, len, offset)| {
                    (start >= offset && end <= offset + len && start % 64 == 0 && end % 64 == 0)
                        .then(|| (addr + (start - offset), addr + (end - offset)))
                })
        };
        let private_stack = (
            self.region_addr() + DATA + HANDOFF_LINE.end,
            self.region_addr() + DATA + PAGE,
        );
        let table: Option<Vec<(usize, usize)>> = (self.worker_maps.is_some()
            && runs.len() < RESET_RUNS_MAX)
            .then(|| {
                let runs = runs.iter().map(translate);
                std::iter::once(Some(private_stack)).chain(runs).collect()
            })
            .flatten();
        // Into the table that is not active, then made the active one (see RESET_AT): the
        // worker may still be zeroing from the active one.
        let next = 1 - (self.file.read_u64(RESET_AT) & 1) as usize;
        let at = RESET_AT + 8 + next * RESET_TABLE_LEN;
        let listed = table.as_ref().map_or(0, |table| {
            for (i, &(start, end)) in table.iter().enumerate() {
                self.file.write_u64(at + 8 + i * 16, start as u64);
                self.file.write_u64(at + 16 + i * 16, end as u64);
            }
            table.len()
        });
        self.file.write_u64(at, listed as u64);
        // The table before the word that makes it active (a worker that reads the word reads
        // the table after it).
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.file.write_u64(RESET_AT, next as u64);
        table.is_some()
    }

    /// No table (see [`RESET_AT`]): the first one active, both empty. Before a worker starts.
    fn clear_reset_tables(&mut self) {
        self.file.zero(RESET_AT, 8 + 2 * RESET_TABLE_LEN);
    }

    /// Where a same-code worker's output starts in the file (see [`output_in_file`]): its
    /// end, past everything a worker maps.
    pub(crate) fn output_base(&self) -> u64 {
        self.file.len() as u64
    }

    /// A new worker's fd 1 (see [`output_in_file`]): the file cut back to its mapped length
    /// (an earlier worker's output goes), and a write-only, appending description of it.
    pub(crate) fn open_output(&mut self) -> io::Result<std::os::fd::OwnedFd> {
        self.blocks_at_done = None;
        self.file.truncate(self.output_base())?;
        self.file.open_appending()
    }

    /// Whether a same-code worker wrote more than `max` bytes to fd 1 since the last
    /// [`Arena::take_output`] (one `fstat`; see [`output_in_file`]).
    pub(crate) fn output_over(&self, max: usize) -> io::Result<bool> {
        let (size, _) = self.file.stat()?;
        Ok(size.saturating_sub(self.output_base()) > max as u64)
    }

    /// What a same-code worker wrote to fd 1 since the last call (see [`output_in_file`]): at
    /// most `max` bytes, and whether there were more (the limit was passed). One `fstat`;
    /// where there was output, a `pread` and an `ftruncate` (the file is cut back, so the next
    /// input's writes start at the same place). With `done` (the input said "done") and no
    /// output, the block count read here serves the next [`Arena::reset_memory`], unless it
    /// changed since the last scan: then pages past the end are cut too (a failed `write` can
    /// leave one), and the reset counts again.
    ///
    /// What lies past the file's end is the guest's claim, as a pipe's bytes were: it can write
    /// there at any time it runs, and bytes written after its "done" go to the next input.
    pub(crate) fn take_output(&mut self, max: usize, done: bool) -> io::Result<(Vec<u8>, bool)> {
        self.blocks_at_done = None;
        let base = self.output_base();
        let (size, blocks) = self.file.stat()?;
        if size <= base {
            if self
                .known
                .as_ref()
                .is_some_and(|known| known.blocks == blocks)
            {
                self.blocks_at_done = done.then_some(blocks);
            } else {
                // Pages came to be, of scratch or stack, or past the end: a `write` whose
                // buffer faulted before a byte was copied leaves the page it made ready there
                // (the size stays), counted in the blocks, found by no scan, and later filled
                // by output that the cut below frees, hiding a new page of scratch from the
                // count. Cut them now, and let the reset count afresh.
                self.file.truncate(base)?;
            }
            return Ok((Vec::new(), false));
        }
        let written = size - base;
        let over = written > max as u64;
        let keep = written.min(max as u64) as usize;
        let output = self.file.read_at(base, keep)?;
        self.file.truncate(base)?;
        Ok((output, over))
    }

    /// The input that just ended returned through a strict same-code worker's trampoline
    /// (its "done" was read), which zeroes the pages of its table (see [`RESET_AT`]) and its
    /// private stack's words before it takes the next input.
    pub(crate) fn note_cleaned(&mut self) {
        self.cleaned = self.worker_maps.is_some();
    }

    /// Window addresses: region, code, input, scratch, and the top of the stack (its end).
    pub(crate) fn region_addr(&self) -> usize {
        self.window.addr()
    }

    pub(crate) fn code_addr(&self) -> usize {
        self.window.addr() + LEN + PAGE
    }

    fn input_addr(&self) -> usize {
        self.code_addr() + self.code_cap + PAGE
    }

    fn scratch_addr(&self) -> usize {
        self.input_addr() + self.input_cap + PAGE
    }

    fn stack_top(&self) -> usize {
        self.window.addr() + self.window.len()
    }

    /// Prepares a fresh run: [`Arena::load_job`] then [`Arena::prepare_worker`] with the
    /// mappings sized exactly for this job.
    pub(crate) fn prepare(
        &mut self,
        code: &[u8],
        input: &[u8],
        options: &RunOptions,
    ) -> io::Result<([FixedMap; 5], [Protect; PROTECTS])> {
        let need = Need::new(code, input, options);
        debug_assert!(self.fits(need));
        self.load_job(code, input, options)?;
        Ok(self.prepare_worker(need, options, Mode::Fresh))
    }

    /// Writes what the worker needs before it is forked (scrub range, policy and filter, how it
    /// waits and ends: `mode`) and returns the mappings it must make: `sizes` gives the code and input
    /// mappings (whole pages; a pool's workers map their capacity) and the scratch and stack.
    pub(crate) fn prepare_worker(
        &mut self,
        sizes: Need,
        options: &RunOptions,
        mode: Mode,
    ) -> ([FixedMap; 5], [Protect; PROTECTS]) {
        debug_assert!(self.fits(sizes));
        debug_assert_eq!(self.reusable, mode == Mode::SameCode);
        let user_end = crate::sys::user_address_space_end() as u64;
        let control_fd = if mode == Mode::SameCode { GO_FD } else { 0 };
        let filter = options.policy.filter();
        let (program_len, program_addr) = filter.as_ref().map_or((0, 0), |f| {
            let addr = self.region_addr() + FILTER;
            (f.program().len() as u64, addr as u64)
        });
        // A profile worker's walls filter (see `crate::walls_filter`), installed before the
        // profile's; none for strict-bpf, whose own allow list is narrower.
        let walls = (!arena_reusable(&options.policy))
            .then(|| crate::walls_filter::cached(no_new_tasks(options)));
        assert!(walls.is_none_or(|p| p.len() <= WALLS_PROG_MAX));
        let walls_len = walls.map_or(0, <[_]>::len);
        // The guest's own memory (scratch, stack, and what it maps) may reach `memory`; the
        // runner's mappings of the region, code and input come on top.
        let as_limit = options
            .limits
            .memory
            .saturating_add(LEN + sizes.code + sizes.input);
        self.worker_ctx = Some([
            (CTX_XSAVE, xsave_supported() as u64),
            (CTX_FSGSBASE, crate::sys::fsgsbase_usable() as u64),
            // Keep exactly the window: the worker maps nothing else of its own.
            (CTX_SCRUB, options.scrub as u64),
            (CTX_KEEP_START, self.window.addr() as u64),
            (CTX_KEEP_END, self.stack_top() as u64),
            (CTX_USER_END, user_end),
            (CTX_PARK, (mode != Mode::Fresh) as u64),
            (
                CTX_READY,
                ready_fd(mode, options).map_or(0, |fd| fd as u64 + 1),
            ),
            (CTX_DONE, (mode != Mode::Fresh) as u64),
            (CTX_LOOP, (mode == Mode::SameCode) as u64),
            (CTX_CONTROL_FD, control_fd as u64),
            // Filter mode: the program, where the blob installs it from.
            (CTX_MODE, filter.is_some() as u64),
            (CTX_FPROG, program_len),
            (CTX_FPROG + FPROG_FILTER, program_addr),
            (CTX_TOUCH, self.code_addr() as u64),
            (CTX_TOUCH + 8, self.input_addr() as u64),
            (CTX_TOUCH + 16, self.scratch_addr() as u64),
            (CTX_TOUCH + 24, (self.stack_top() - 8) as u64),
            (CTX_AS_LIMIT, as_limit as u64),
            (CTX_WALLS_FPROG, walls_len as u64),
            (
                CTX_WALLS_FPROG + FPROG_FILTER,
                (self.region_addr() + DATA + CTX_WALLS_PROG) as u64,
            ),
        ]);
        self.walls = walls;
        self.write_worker_ctx();
        if let Some(filter) = filter {
            // A traced worker's filter kills every violation outright, which no handler of
            // the guest's can catch; the tracer names the call from the worker's exit.
            let program = if options.trace {
                filter.to_bytes_killing_violations()
            } else {
                filter.to_bytes()
            };
            self.file.write_bytes(FILTER, &program);
        }

        let fd = self.fd();
        // The page below the stack stays unmapped: the guard (nothing is ever mapped there).
        let stack_base = self.stack_top() - sizes.stack;
        let (rw, rx) = (
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ | libc::PROT_EXEC,
        );
        let maps = [
            FixedMap::shared(self.region_addr(), LEN, rw, fd, 0),
            FixedMap::shared(
                self.code_addr(),
                sizes.code,
                rx,
                fd,
                self.code_file_offset(),
            ),
            FixedMap::shared(
                self.input_addr(),
                sizes.input,
                libc::PROT_READ,
                fd,
                self.input_file_offset(),
            ),
            if self.reusable {
                let offset = self.scratch_file_offset();
                FixedMap::shared(self.scratch_addr(), sizes.scratch, rw, fd, offset)
            } else {
                FixedMap::private(self.scratch_addr(), sizes.scratch)
            },
            if self.reusable {
                let offset = self.stack_file_offset() + PAGE;
                FixedMap::shared(stack_base, sizes.stack, rw, fd, offset)
            } else {
                FixedMap::private(stack_base, sizes.stack)
            },
        ];
        // Read-only to the guest: the blob (and the spin budget at its page's end); and, in a
        // same-code worker, what the blob only reads, the XSAVE image it restores and the
        // filter it installs, which the host then never puts back between inputs. (Two more
        // `mprotect`s, and mappings split in five, cost a fresh worker more than the reset of
        // those pages saves it: there the host resets them, see `reset_region`.)
        let same_code = mode == Mode::SameCode;
        // A strict same-code worker zeroes the pages its guest wrote itself (see RESET_AT):
        // where, in its addresses. The next scan writes its table.
        self.worker_maps = (same_code && arena_reusable(&options.policy)).then(|| {
            let shared = |m: &FixedMap| (m.addr, m.len, m.offset);
            let altstack = (self.region_addr() + ALTSTACK, ALTSTACK_LEN, ALTSTACK);
            [altstack, shared(&maps[3]), shared(&maps[4])]
        });
        self.known = None;
        self.cleaned = false;
        self.clear_reset_tables();
        let read_only = |offset: usize, len: usize| Protect {
            addr: self.region_addr() + offset,
            len: if same_code { len } else { 0 },
            prot: libc::PROT_READ,
        };
        let protects = [
            Protect {
                addr: self.region_addr() + CODE,
                len: PAGE,
                prot: rx,
            },
            read_only(XSAVE, XSAVE_LEN),
            read_only(FILTER, FILTER_LEN),
        ];
        (maps, protects)
    }

    /// Writes one job: its code and input (each followed by zeros to the end of its last page,
    /// so no stale byte of an earlier job is ever mapped), the initial registers and entry, an
    /// XSAVE image in its initial state, and a clean record.
    pub(crate) fn load_job(
        &mut self,
        code: &[u8],
        input: &[u8],
        options: &RunOptions,
    ) -> io::Result<()> {
        self.load(code, input, options, true)
    }

    /// [`Arena::load_job`] into an arena no guest has run in yet (a parked pool worker's, which
    /// [`Arena::load_job`] prepared before the fork with [`UNUSED_CODE`] and no input): its
    /// region holds nothing to reset, and its code and input areas hold nothing but that one
    /// byte, which the job's code (never empty) overwrites. So nothing is zeroed here: the
    /// rest of both areas is still the zeros of a new memfd (about 8 KiB of `memset` less on
    /// a pooled job's clock).
    pub(crate) fn load_job_unused(&mut self, code: &[u8], input: &[u8], options: &RunOptions) {
        debug_assert!(!code.is_empty() && UNUSED_CODE.len() == 1);
        debug_assert_eq!(self.input_dirty, 0, "an arena a job ran in");
        self.file.write_bytes(self.code_file_offset(), code);
        self.write_input(input, options, Some(SINGLE_JOB_SEQ));
    }

    fn load(
        &mut self,
        code: &[u8],
        input: &[u8],
        options: &RunOptions,
        reset: bool,
    ) -> io::Result<()> {
        let need = Need::new(code, input, options);
        debug_assert!(need.code <= self.code_cap && need.input <= self.input_cap);
        let code_off = self.code_file_offset();
        self.file.write_bytes(code_off, code);
        self.file
            .zero(code_off + code.len(), need.code - code.len());
        self.input_dirty = self.input_dirty.max(need.input);
        if reset {
            self.reset_region()?;
        }
        self.write_input(input, options, Some(SINGLE_JOB_SEQ));
        Ok(())
    }

    /// Writes one input and everything a run starts from except the code: the input (and
    /// zeros over whatever an earlier input left after it), the initial registers and entry,
    /// an XSAVE image in its initial state and a clean record (the input's number goes with its
    /// go, see `Parked::go`). A same-code worker gets exactly this before each input, so a guest that scribbled on
    /// the shared region starts its next input from the same state all the same.
    ///
    /// `cleaned`: [`Arena::reset_memory`] found that the worker zeroed its memory itself; its
    /// private stack (the end of the data page) is then not looked at either.
    pub(crate) fn load_input(
        &mut self,
        input: &[u8],
        options: &RunOptions,
        cleaned: bool,
    ) -> io::Result<()> {
        self.reset_region_but_handoff(arena_reusable(&options.policy), cleaned)?;
        self.write_input(input, options, None);
        Ok(())
    }

    /// Everything of the region a guest can write goes back to zeros (the context, the
    /// record, the rest of the data page, the XSAVE area, the alternate signal stack, the
    /// filter area), and the worker's part of the context is written again.
    fn reset_region(&mut self) -> io::Result<()> {
        self.file.zero_range(DATA, LEN - DATA)?;
        self.write_worker_ctx();
        Ok(())
    }

    /// [`Arena::reset_region`] for a same-code worker's next input, but for the hand-off's
    /// cache line ([`HANDOFF_LINE`]), which a spinning worker reads meanwhile. The data page
    /// (always there: each input's context is written to it) is zeroed in place, line by line
    /// where not zero already; the rest of the hand-off's line is the worker's own trace gate
    /// (read once, when it starts) and free words, zeroed only when not zero already, so the
    /// line stays in the worker's cache.
    ///
    /// With `keep_image` (strict mode, see [`Arena::reset_memory`]) the rest of the region is
    /// left alone: the XSAVE image and the filter are read-only to the worker (see
    /// `prepare_worker`) and to its guest, which under strict mode cannot change that, and
    /// [`Arena::reset_memory`] has reset the alternate signal stack.
    fn reset_region_but_handoff(&mut self, keep_image: bool, cleaned: bool) -> io::Result<()> {
        let line = DATA + HANDOFF_LINE.start..DATA + HANDOFF_LINE.end;
        if keep_image {
            // The context's words are all written again below, each only where it changed:
            // zeroing them first would take every context line from the worker's cache.
            // Nor the record's state, registers and flags, which the worker sets itself (the
            // state to 0 as each input starts, all of them when the guest returns), nor the
            // word saying which input it took (compared with the input's number only).
            let ranges = [
                DATA + REC_TAKEN + 8..DATA + CTX_TOUCH,
                DATA + REC_STAGE..DATA + REC_TAKEN,
                DATA + CTX_AS_LIMIT + 8..DATA + CTX_WALLS_FPROG,
                DATA + CTX_WALLS_PROG..line.start,
            ];
            for range in ranges {
                self.file.zero_dirty(range.start, range.len());
            }
        } else {
            self.file.zero_dirty(DATA, line.start - DATA);
        }
        if !(keep_image && cleaned) {
            // The worker's private stack, up to the end of the page.
            self.file.zero_dirty(line.end, DATA + PAGE - line.end);
        }
        let free = DATA + HANDOFF_DONE + 8..DATA + CTX_TRACE_GATE;
        self.file.zero_dirty(free.start, free.len());
        if !keep_image {
            self.file.zero_range(DATA + PAGE, LEN - DATA - PAGE)?;
        }
        self.write_worker_ctx();
        Ok(())
    }

    /// A new same-code worker's hand-off: every word zero (no input taken or done, the first
    /// go comes on the pipe) and no spin budget. Before the worker is forked.
    pub(crate) fn reset_handoff(&mut self) {
        let line = DATA + HANDOFF_LINE.start;
        self.file.zero(line, HANDOFF_LINE.len());
        self.file.write_u64(SPIN_AT, 0);
    }

    /// How many `pause`s the worker spins after the next input before it sleeps (see
    /// [`SPIN_AT`]); 0: it sleeps on its go pipe at once.
    pub(crate) fn set_spin(&mut self, pauses: u64) {
        self.file.write_u64(SPIN_AT, pauses);
    }

    /// The input a same-code worker last took from the spinning hand-off (see
    /// [`crate::worker::protocol::Record::taken`]); read once it is dead.
    pub(crate) fn taken(&self) -> u64 {
        self.file.read_u64(DATA + REC_TAKEN)
    }

    /// The hand-off's words, shared with a running worker (see [`crate::worker::protocol::Handoff`]).
    pub(crate) fn handoff_word(&self, word: usize) -> &std::sync::atomic::AtomicU64 {
        debug_assert!(HANDOFF_LINE.contains(&word));
        self.file.atomic_u64(DATA + word)
    }

    /// The context's input number, for a same-code input's go (see `Parked::go`): written
    /// only when the go byte is, since a worker that spun takes the number from the go word
    /// and then never reads this line of the context, which stays in its cache unchanged.
    pub(crate) fn ctx_seq_word(&self) -> &std::sync::atomic::AtomicU64 {
        self.file.atomic_u64(DATA + CTX_SEQ)
    }

    /// The record's state word, which a same-code host clears before a go byte (see
    /// `Parked::go`).
    pub(crate) fn record_state_word(&self) -> &std::sync::atomic::AtomicU64 {
        self.file.atomic_u64(DATA + REC_STATE)
    }

    /// `seq`: the input's number for the context, where a worker woken by its go pipe reads
    /// it; `None` for a same-code input, whose number goes there only if its go byte is
    /// written (see [`Arena::ctx_seq_word`]).
    fn write_input(&mut self, input: &[u8], options: &RunOptions, seq: Option<u64>) {
        debug_assert!(input.len() <= self.input_cap);
        let input_off = self.input_file_offset();
        self.file.write_bytes(input_off, input);
        let dirty = self.input_dirty.max(input.len());
        self.file.zero(input_off + input.len(), dirty - input.len());
        self.input_dirty = input.len();
        if let Some(seq) = seq {
            self.file.write_u64(DATA + CTX_SEQ, seq);
        }

        // XSAVE image in its initial state: legacy area zero but MXCSR, header zero.
        self.file.write_u64(XSAVE + XSAVE_MXCSR, 0x1f80);

        let mut gpr = [0u64; 16];
        gpr[Gpr::RDI.index()] = self.input_addr() as u64;
        gpr[Gpr::RSI.index()] = input.len() as u64;
        gpr[Gpr::RDX.index()] = self.scratch_addr() as u64;
        gpr[Gpr::RCX.index()] = options.limits.scratch as u64;
        options.registers.apply(&mut gpr);
        gpr[Gpr::RSP.index()] = (self.stack_top() - 8) as u64;
        for (i, value) in gpr.iter().enumerate() {
            self.file.write_u64(DATA + CTX_GPR + i * 8, *value);
        }
        let entry = (self.code_addr() + options.entry) as u64;
        self.file.write_u64(DATA + CTX_ENTRY, entry);
    }

    fn write_worker_ctx(&mut self) {
        for &(offset, value) in self.worker_ctx.iter().flatten() {
            self.file.write_u64(DATA + offset, value);
        }
        for (i, insn) in self.walls.iter().flat_map(|p| p.iter()).enumerate() {
            self.file
                .write_bytes(DATA + CTX_WALLS_PROG + i * 8, &insn.to_bytes());
        }
    }

    /// Sets the gate a traced worker waits at before the worker's fork: closed (0) for a traced
    /// worker, open ([`crate::worker::protocol::GATE_UNTRACED`]) for one that is not. Nothing
    /// waits at it yet: no wake.
    pub(crate) fn preset_trace_gate(&self, value: u32) {
        self.file.store_u32(DATA + CTX_TRACE_GATE, value);
    }

    /// The gate a traced worker waits at until its tracer has seized it (see
    /// [`CTX_TRACE_GATE`]), for [`crate::tracer::seize`] to open.
    pub(crate) fn trace_gate(&self) -> &std::sync::atomic::AtomicU32 {
        self.file.atomic_u32(DATA + CTX_TRACE_GATE)
    }

    /// Whether the record says the guest returned (its state alone: the claim a "done" is
    /// checked against, one word where [`Arena::record`] reads them all).
    pub(crate) fn record_says_returned(&self) -> bool {
        self.file.read_u64(DATA + REC_STATE) == STATE_RETURNED
    }

    /// Asks the CPU for the record's lines (see [`Arena::record`]) ahead of the reads.
    pub(crate) fn prefetch_record(&self) {
        self.file
            .prefetch(DATA + REC_STATE, REC_TAKEN + 8 - REC_STATE);
    }

    /// Reads back what the worker recorded.
    pub(crate) fn record(&self) -> Record {
        let word = |off: usize| self.file.read_u64(DATA + off);
        let mut gpr = [0u64; 16];
        for (i, slot) in gpr.iter_mut().enumerate() {
            *slot = word(REC_GPR + i * 8);
        }
        Record {
            state: word(REC_STATE),
            gpr,
            rflags: word(REC_RFLAGS),
            stage: word(REC_STAGE),
            errno: word(REC_ERRNO),
            fault_signo: word(FAULT_SIGNO),
            fault_addr: word(FAULT_ADDR),
            fault_rip: word(FAULT_RIP),
            fault_sysnr: word(FAULT_SYSNR),
            fault_arch: word(FAULT_ARCH),
        }
    }
}

/// Whether a job may create no process or thread of its own.
pub(crate) fn no_new_tasks(options: &RunOptions) -> bool {
    options.limits.max_procs <= 1
}

/// Whether the CPU and the kernel enable `xsave`, as `is_x86_feature_detected!("xsave")`
/// decides it (CPUID.1:ECX.XSAVE and .OSXSAVE, and XCR0 saving the SSE and AVX state), but
/// with at most one `cpuid` (none with glibc, see [`cpuid_1_ecx`]) instead of the standard
/// library's full feature detection (about ten):
/// under a hypervisor every `cpuid` is a VM exit, 7.5 us each on this project's KVM machines,
/// and a `bytejail run` asks this once per process. Asked once, then remembered.
#[allow(unsafe_code)] // cpuid and xgetbv, guarded by the bits that say they exist
fn xsave_supported() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    /// 0: not asked yet; 1: no; 2: yes.
    static XSAVE: AtomicU8 = AtomicU8::new(0);
    match XSAVE.load(Ordering::Relaxed) {
        1 => return false,
        2 => return true,
        _ => {}
    }
    let ecx = cpuid_1_ecx();
    let (xsave, osxsave) = (ecx & (1 << 26) != 0, ecx & (1 << 27) != 0);
    let supported = xsave && osxsave && {
        let (eax, _edx): (u32, u32);
        // SAFETY: xgetbv exists when the CPU has xsave and the kernel set CR4.OSXSAVE
        // (the OSXSAVE bit); it reads XCR0 into eax:edx and touches nothing else.
        unsafe {
            std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") eax, out("edx") _edx,
                options(nomem, nostack, preserves_flags));
        }
        eax & 0b110 == 0b110
    };
    XSAVE.store(if supported { 2 } else { 1 }, Ordering::Relaxed);
    supported
}

/// `ecx` of `cpuid` leaf 1: from glibc's own copy where it has one (see
/// [`crate::sys::glibc_cpuid_leaf`]), a part of a one-job `bytejail run` worth saving; else
/// from `cpuid`.
#[allow(unsafe_code)] // cpuid
fn cpuid_1_ecx() -> u32 {
    if let Some(leaf) = crate::sys::glibc_cpuid_leaf(0) {
        return leaf.cpuid[2];
    }
    // SAFETY: cpuid leaf 1 exists on every x86-64 CPU. (`__cpuid` is a safe function from
    // Rust 1.89 on; the block keeps older compilers in `rust-version` building.)
    #[allow(unused_unsafe)]
    unsafe { std::arch::x86_64::__cpuid(1) }.ecx
}

/// Whether an arena may serve another job after a worker under `policy` used it: only where
/// the guest can call nothing but `read`, `write`, `exit` and `rt_sigreturn`, so that it can
/// change nothing it maps (its code and the blob stay read+execute, the file keeps its pages;
/// what it writes to fd 1 in a same-code worker goes past the file's end, see
/// [`output_in_file`]) and leaves no process behind; the host rewrites the rest before the next
/// job.
/// Under a profile every worker gets a fresh arena, whatever the profile allows.
pub(crate) fn arena_reusable(policy: &crate::policy::Policy) -> bool {
    use crate::policy::Policy;
    matches!(policy, Policy::Strict | Policy::StrictBpf)
}

/// Whether a worker of `mode` under `options` writes its guest's output (fd 1) into its
/// arena's file rather than into a pipe: a same-code worker under strict mode or `strict-bpf`
/// whose options ask for it ([`crate::RunOptions::output_file`], off by default: a file keeps
/// the part of a write whose buffer faults that a pipe drops). Its fd 1 is then a write-only, appending description of the file (see
/// [`Arena::open_output`]): the guest's writes land past the file's end, where nothing is
/// mapped, and cannot reach a byte below it; its `RLIMIT_FSIZE` ends the file one byte past the
/// output limit. After an input, one `fstat` then tells both whether the guest wrote and whether
/// a page of its memory came to be (see [`Arena::take_output`]), where a pipe took a `read`
/// of its own: in the steady state an input costs the host no syscall but the reset's.
pub(crate) fn output_in_file(mode: Mode, options: &crate::RunOptions) -> bool {
    mode == Mode::SameCode && arena_reusable(&options.policy) && options.output_file
}

/// The descriptor a parked worker of `mode` says "ready" on (see `Context::ready`); none for a
/// fresh worker, which never parks.
fn ready_fd(mode: Mode, options: &crate::RunOptions) -> Option<usize> {
    match mode {
        Mode::Fresh => None,
        _ if output_in_file(mode, options) => Some(DONE_FD),
        _ => Some(OUTPUT_FD),
    }
}

#[cfg(test)]
mod tests {
    /// The one-`cpuid` answer is the standard library's.
    #[test]
    fn xsave_supported_agrees_with_std() {
        assert_eq!(
            super::xsave_supported(),
            std::arch::is_x86_feature_detected!("xsave")
        );
        // Asked again: the remembered answer.
        assert_eq!(
            super::xsave_supported(),
            std::arch::is_x86_feature_detected!("xsave")
        );
    }

    /// glibc's copy of leaf 1's `ecx` is what the CPU says now.
    #[test]
    #[allow(unsafe_code)] // cpuid
    fn cpuid_1_ecx_is_the_cpus() {
        #[allow(unused_unsafe)]
        // SAFETY: cpuid leaf 1 exists on every x86-64 CPU.
        let ecx = unsafe { std::arch::x86_64::__cpuid(1) }.ecx;
        assert_eq!(super::cpuid_1_ecx(), ecx);
    }
}
