# The README's showcase: write "hello from bytejail\n" to fd 1 and return 0.
# expect: returned rax=0 output="hello from bytejail\n"
.intel_syntax noprefix
.text
    mov eax, 1                          # write(1, msg, len)
    mov edi, 1
    lea rsi, [rip + .Lmsg]
    mov edx, .Lmsg_end - .Lmsg
    syscall
    xor eax, eax
    ret
.Lmsg:
    .ascii "hello from bytejail\n"
.Lmsg_end:
