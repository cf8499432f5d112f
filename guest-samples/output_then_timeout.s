# Output written before the guest spins is kept when the host kills it at the deadline.
# expect: timeout output="tick\n"
# args: --timeout 300ms
.intel_syntax noprefix
.text
    mov eax, 1
    mov edi, 1
    lea rsi, [rip + .Lmsg]
    mov edx, .Lmsg_end - .Lmsg
    syscall
.Lspin:
    jmp .Lspin
.Lmsg:
    .ascii "tick\n"
.Lmsg_end:
