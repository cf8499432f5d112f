# getpid through the ia32 entry (int 0x80, nr 20) is outside the ia32 allow list too.
# expect: syscall_violation
.intel_syntax noprefix
.text
    mov eax, 20
    int 0x80
    ret                                 # only reached if it was allowed
