# A forged rt_sigreturn frame blocks every signal, then the guest spins: the host's deadline
# still ends it, because it kills with SIGKILL, which no signal mask can block.
# expect: timeout output="S"
# args: --timeout 300ms
# The guest lays out a kernel `struct ucontext` (304 bytes) on its stack and points rsp at
# it: rt_sigreturn (15, allowed in strict mode) reads its frame at rsp - 8, whose first word
# is the return address a signal handler has already popped. uc_sigmask = all ones;
# uc_mcontext: rip = .Lresume, rsp = the stack as at entry, eflags = IF, cs = 0x33
# (__USER_CS: stay in 64-bit mode), ss = 0x2b (__USER_DS), fpstate = NULL (the kernel resets
# the FPU state); every other field 0 (uc_stack with size 0 leaves the alternate stack alone).
# The kernel takes the frame, blocks every signal it may (SIGKILL and SIGSTOP never are) and
# resumes at .Lresume, which writes "S" (proof the frame was taken) and spins forever.
# Used by tests/escape.rs.
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
    mov eax, 1                          # write(1, "S", 1)
    mov edi, 1
    lea rsi, [rip + .Lmsg]
    mov edx, 1
    syscall
.Lspin:
    jmp .Lspin
.Lmsg:
    .ascii "S"
