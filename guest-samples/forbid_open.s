# open("/etc/passwd", O_RDONLY) (syscall 2) is outside strict mode's allow list: the kernel kills the worker.
# expect: syscall_violation
.intel_syntax noprefix
.text
    mov eax, 2
    lea rdi, [rip + .Lpath]
    xor esi, esi
    xor edx, edx
    syscall
    ret                                 # only reached if open was allowed
.Lpath:
    .asciz "/etc/passwd"
