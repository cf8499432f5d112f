# The ia32 write (int 0x80, nr 4) is allowed: write(1, 0, 0) returns 0 and the guest carries on.
# expect: returned rax=0 output="ok\n"
# No buffer is written through int 0x80: it truncates pointers to 32 bits and nothing
# in the worker is known to sit below 4 GiB, so the call writes zero bytes.
.intel_syntax noprefix
.text
    mov eax, 4                          # ia32 write(ebx=1, ecx=0, edx=0)
    mov ebx, 1
    xor ecx, ecx
    xor edx, edx
    int 0x80
    mov r12, rax                        # 0 if the call was allowed and wrote nothing
    mov eax, 1                          # native write(1, "ok\n", 3): proof the guest went on
    mov edi, 1
    lea rsi, [rip + .Lmsg]
    mov edx, .Lmsg_end - .Lmsg
    syscall
    mov rax, r12
    ret
.Lmsg:
    .ascii "ok\n"
.Lmsg_end:
