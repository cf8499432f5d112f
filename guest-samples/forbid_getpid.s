# getpid (syscall 39), harmless as it is, is not in strict mode's allow list.
# expect: syscall_violation
.intel_syntax noprefix
.text
    mov eax, 39
    syscall
    ret                                 # only reached if getpid was allowed
