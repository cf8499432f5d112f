# With no input the length in rsi is 0, so the byte sum is 0.
# expect: returned rax=0 rsi=0
.intel_syntax noprefix
.text
    xor eax, eax
.Lloop:
    test rsi, rsi
    jz .Ldone
    movzx ecx, byte ptr [rdi]
    add rax, rcx
    inc rdi
    dec rsi
    jmp .Lloop
.Ldone:
    ret
