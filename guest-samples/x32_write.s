# Even write is killed when it comes in with the x32 tag (0x40000000 | 1): nothing is written.
# expect: syscall_violation output=""
.intel_syntax noprefix
.text
    mov eax, 0x40000001
    mov edi, 1
    lea rsi, [rip + .Lmsg]
    mov edx, .Lmsg_end - .Lmsg
    syscall
    ret                                 # only reached if it was allowed
.Lmsg:
    .ascii "x32\n"
.Lmsg_end:
