# A call into the legacy vsyscall page (gettimeofday at 0xffffffffff600000) is emulated through the seccomp check: killed.
# expect: syscall_violation
.intel_syntax noprefix
.text
    xor edi, edi                        # gettimeofday(NULL, NULL)
    xor esi, esi
    mov rax, 0xffffffffff600000
    call rax
    ret                                 # only reached if the call was allowed
