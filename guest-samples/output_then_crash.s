# Output written before a crash is kept in the report.
# expect: crashed SIGILL output="partial\n"
.intel_syntax noprefix
.text
    mov eax, 1
    mov edi, 1
    lea rsi, [rip + .Lmsg]
    mov edx, .Lmsg_end - .Lmsg
    syscall
    ud2
.Lmsg:
    .ascii "partial\n"
.Lmsg_end:
