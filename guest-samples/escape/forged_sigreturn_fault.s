# The forged frame's signal mask really takes effect: with SIGSEGV blocked, a fault kills the
# worker with SIGSEGV without running its fault handler, so an untraced report has no fault
# details (a traced one has the kernel's, from the signal's delivery).
# expect: crashed SIGSEGV
# The same frame as forged_sigreturn.s (uc_sigmask = all ones), but it resumes at a store to
# address 0. A synchronous SIGSEGV cannot stay blocked: the kernel unblocks it, resets its
# action to the default and the worker dies of it. The worker's own handler, which records the
# fault's address and instruction, never runs: untraced, the host still reports the crash (from
# the wait status), with no `fault`; traced, the tracer sees the fault delivered. The same store without the forged mask (tests/escape.rs runs it as
# a control) is reported with its code offset. Used by tests/escape.rs.
.intel_syntax noprefix
.text
    sub rsp, 512                        # room for the ucontext, below the return address
    mov rdi, rsp                        # zero it
    mov ecx, 512 / 8
    xor eax, eax
    rep stosq
    mov qword ptr [rsp + 296], -1       # uc_sigmask: every signal
    lea rax, [rsp + 512]
    mov [rsp + 160], rax                # uc_mcontext.rsp
    lea rax, [rip + .Lresume]
    mov [rsp + 168], rax                # uc_mcontext.rip
    mov qword ptr [rsp + 176], 0x202    # uc_mcontext.eflags
    mov word ptr [rsp + 184], 0x33      # uc_mcontext.cs
    mov word ptr [rsp + 190], 0x2b      # uc_mcontext.ss
    mov eax, 15                         # rt_sigreturn
    syscall
    ud2                                 # not reached: rt_sigreturn resumes at .Lresume
.Lresume:
    xor eax, eax
    mov qword ptr [rax], 1              # SIGSEGV, blocked
    ret                                 # not reached
