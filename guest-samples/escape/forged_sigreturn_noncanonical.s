# A forged rt_sigreturn frame whose rip is not a canonical address: the kernel takes the frame,
# the return to user mode faults (#GP) and the worker dies of SIGSEGV outside the code.
# expect: crashed SIGSEGV code_offset=none address=0x0
# The frame is forged_sigreturn.s's with uc_sigmask = 0 and uc_mcontext.rip =
# 0x8000000000000000 (bit 63 set, bits 62-47 clear: non-canonical with 4- and 5-level paging).
# rt_sigreturn does not check rip; the kernel returns with IRET (never SYSRET to such a rip),
# which raises #GP; Linux delivers it as SIGSEGV (si_code SI_KERNEL, si_addr 0) at that rip.
# No kernel state is harmed; the guest only crashes. Used by tests/escape.rs.
.intel_syntax noprefix
.text
    sub rsp, 512                        # room for the ucontext, below the return address
    mov rdi, rsp                        # zero it
    mov ecx, 512 / 8
    xor eax, eax
    rep stosq
    lea rax, [rsp + 512]
    mov [rsp + 160], rax                # uc_mcontext.rsp
    mov rax, 0x8000000000000000
    mov [rsp + 168], rax                # uc_mcontext.rip: non-canonical
    mov qword ptr [rsp + 176], 0x202    # uc_mcontext.eflags
    mov word ptr [rsp + 184], 0x33      # uc_mcontext.cs
    mov word ptr [rsp + 190], 0x2b      # uc_mcontext.ss
    mov eax, 15                         # rt_sigreturn
    syscall
    ret                                 # not reached
