# Output written before a forbidden syscall is kept in the report.
# expect: syscall_violation output="before\n"
.intel_syntax noprefix
.text
    mov eax, 1                          # write(1, msg, 7)
    mov edi, 1
    lea rsi, [rip + .Lmsg]
    mov edx, .Lmsg_end - .Lmsg
    syscall
    mov eax, 39                         # getpid: killed
    syscall
    ret
.Lmsg:
    .ascii "before\n"
.Lmsg_end:
