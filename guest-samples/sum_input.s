# Sums the input bytes through the mapping: rdi = input address, rsi = input length.
# expect: returned rax=270 rsi=0
# args: --input-hex 0102030405ff
# 1 + 2 + 3 + 4 + 5 + 255 = 270; the loop counts rsi down to 0.
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
