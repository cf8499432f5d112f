//! End-to-end cost of one `mov al,42; ret` job through `bytejail::run` (scrubbed, the default,
//! and not), next to the raw floor
//! measured in the same run: fork + pipe + strict seccomp + the same code + result + reap,
//! written directly against libc with nothing else.
#![allow(unsafe_code)]

use criterion::{criterion_group, criterion_main, Criterion};
use memmap2::MmapMut;

const RETURN_42: [u8; 3] = [0xb0, 0x2a, 0xc3];

/// The floor: what any fork-per-job strict sandbox must pay on this machine.
fn floor_fork_pipe_strict(code: extern "C" fn() -> u64) -> u64 {
    let mut fds = [0; 2];
    // SAFETY: plain libc calls; the child issues raw syscalls only and leaves with SYS_exit.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        let pid = libc::fork();
        if pid == 0 {
            libc::syscall(
                libc::SYS_prctl,
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_STRICT,
            );
            let rax = code();
            libc::syscall(libc::SYS_write, fds[1], &rax as *const u64, 8);
            libc::syscall(libc::SYS_exit, 0);
            unreachable!();
        }
        libc::close(fds[1]);
        let mut rax = 0u64;
        libc::read(fds[0], &mut rax as *mut u64 as *mut libc::c_void, 8);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::close(fds[0]);
        rax
    }
}

fn bench(c: &mut Criterion) {
    let mut map = MmapMut::map_anon(4096).unwrap();
    map[..3].copy_from_slice(&RETURN_42);
    let map = map.make_exec().unwrap();
    // SAFETY: the mapping holds a complete function (`mov al,42; ret`) and outlives its use.
    let code: extern "C" fn() -> u64 = unsafe { std::mem::transmute(map.as_ptr()) };
    assert_eq!(floor_fork_pipe_strict(code) & 0xff, 42);

    let options = bytejail::RunOptions::default();
    let mut group = c.benchmark_group("run");
    group.sample_size(200);
    group.bench_function("floor_fork_pipe_strict", |b| {
        b.iter(|| floor_fork_pipe_strict(code))
    });
    group.bench_function("run_fresh", |b| {
        b.iter(|| {
            let report = bytejail::run(&RETURN_42, b"", &options).unwrap();
            assert_eq!(report.outcome.kind(), "returned");
        })
    });
    let noscrub = bytejail::RunOptions {
        scrub: false,
        ..bytejail::RunOptions::default()
    };
    group.bench_function("run_fresh_noscrub", |b| {
        b.iter(|| {
            let report = bytejail::run(&RETURN_42, b"", &noscrub).unwrap();
            assert_eq!(report.outcome.kind(), "returned");
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
