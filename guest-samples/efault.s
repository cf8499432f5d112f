# A bad pointer passed to write is not a crash: write(1, NULL, 5) returns -EFAULT (-14) in rax.
# expect: returned rax=0xfffffffffffffff2 output=""
.intel_syntax noprefix
.text
    mov eax, 1
    mov edi, 1
    xor esi, esi
    mov edx, 5
    syscall
    ret
