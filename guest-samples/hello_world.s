# Writes "hello, world\n" with one write(1, ...) from a constant in .text, then returns 0.
# expect: returned rax=0 output="hello, world\n"
.intel_syntax noprefix
.text
    mov eax, 1                          # write
    mov edi, 1                          # fd 1
    lea rsi, [rip + .Lmsg]              # constants live in .text, reached rip-relative
    mov edx, .Lmsg_end - .Lmsg
    syscall
    xor eax, eax
    ret
.Lmsg:
    .ascii "hello, world\n"
.Lmsg_end:
