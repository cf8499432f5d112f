/* The floor for the `cli_run_vs_c` row of `bytejail bench`: the least a program can do to run
 * code the way `bytejail run --json FILE` does, as a dynamically linked C program. It reads the
 * code file, maps it, forks a worker that enters strict seccomp and calls the code, reads the
 * returned rax from a pipe, reaps the worker with its rusage and prints a one-line JSON report
 * in the shape of bytejail's (fewer registers). No limits, no tracer, no diagnosis: what is
 * left when everything bytejail adds is taken away.
 *
 * `run_floor --version` prints one line and exits: the floor for `cli_version_vs_c`.
 *
 * Built by `bytejail bench` with `cc -O2` when a C compiler is installed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CODE (1 << 20)

static uint64_t ns(const struct timespec *t) {
    return (uint64_t)t->tv_sec * 1000000000u + (uint64_t)t->tv_nsec;
}

static uint64_t tv_ns(const struct timeval *t) {
    return (uint64_t)t->tv_sec * 1000000000u + (uint64_t)t->tv_usec * 1000u;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        puts("run_floor 0.1.0");
        return 0;
    }
    if (argc != 2) {
        fputs("usage: run_floor CODE.bin | --version\n", stderr);
        return 2;
    }
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        perror(argv[1]);
        return 2;
    }
    unsigned char *code = mmap(NULL, MAX_CODE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) {
        perror("mmap");
        return 125;
    }
    ssize_t size = 0, n;
    while (size < MAX_CODE && (n = read(fd, code + size, MAX_CODE - size)) > 0)
        size += n;
    close(fd);
    if (n < 0 || size == 0 || mprotect(code, MAX_CODE, PROT_READ | PROT_EXEC) != 0) {
        fputs("run_floor: cannot load the code\n", stderr);
        return 2;
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        perror("pipe");
        return 125;
    }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 125;
    }
    if (pid == 0) {
        /* The worker: nothing but raw system calls from here on. */
        close(pipefd[0]);
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0)
            syscall(SYS_exit, 125);
        uint64_t rax = ((uint64_t (*)(void))code)();
        syscall(SYS_write, pipefd[1], &rax, sizeof rax);
        syscall(SYS_exit, 0);
    }
    close(pipefd[1]);
    uint64_t rax = 0;
    ssize_t got = read(pipefd[0], &rax, sizeof rax);
    int status;
    struct rusage usage;
    if (wait4(pid, &status, 0, &usage) != pid) {
        perror("wait4");
        return 125;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    if (got == (ssize_t)sizeof rax && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("{\"schema_version\":1,\"outcome\":\"returned\",\"rax\":%llu,"
               "\"registers\":{\"rax\":%llu},\"output_hex\":\"\",\"output_text\":\"\","
               "\"output_truncated\":false,\"wall_ns\":%llu,\"user_ns\":%llu,"
               "\"sys_ns\":%llu,\"max_rss_kib\":%ld}\n",
               (unsigned long long)rax, (unsigned long long)rax,
               (unsigned long long)(ns(&end) - ns(&start)),
               (unsigned long long)tv_ns(&usage.ru_utime),
               (unsigned long long)tv_ns(&usage.ru_stime), usage.ru_maxrss);
        return (int)(rax & 0xff);
    }
    printf("{\"schema_version\":1,\"outcome\":\"crashed\",\"signal_number\":%d}\n",
           WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return 125;
}
