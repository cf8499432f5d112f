# fork (syscall 57): the guest cannot make processes.
# expect: syscall_violation
.intel_syntax noprefix
.text
    mov eax, 57
    syscall
    ret                                 # only reached if fork was allowed (in both processes)
