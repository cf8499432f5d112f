# An x32-tagged syscall number (0x40000000 | 39, getpid) is always killed in strict mode.
# expect: syscall_violation
.intel_syntax noprefix
.text
    mov eax, 0x40000027
    syscall
    ret                                 # only reached if it was allowed
