# The default scratch is 1 MiB (rcx = 1048576), all zero, first and last bytes writable.
# expect: returned rax=187 rcx=1048576
# rax = 1000 * (nonzero bytes seen) + 0x55 + 0x66, the two bytes written and read back.
.intel_syntax noprefix
.text
    xor eax, eax
    mov r8, rdx
    mov r9, rcx
    test r9, r9
    jz .Ltouch
.Lscan:
    cmp byte ptr [r8], 0
    setne r10b
    movzx r10d, r10b
    add rax, r10
    inc r8
    dec r9
    jnz .Lscan
.Ltouch:
    mov byte ptr [rdx], 0x55
    mov byte ptr [rdx + rcx - 1], 0x66
    movzx r10d, byte ptr [rdx]
    movzx r11d, byte ptr [rdx + rcx - 1]
    imul rax, rax, 1000
    add rax, r10
    add rax, r11
    ret
