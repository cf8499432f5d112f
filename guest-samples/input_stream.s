# fd 0 delivers the same bytes as the input mapping, then EOF: rax = bytes read if they all match.
# expect: returned rax=16
# args: --input-hex 000102030405060708090a0b0c0d0eff
# A mismatch returns 0xbad0000 + the count read so far.
.intel_syntax noprefix
.text
    mov r12, rdx                        # scratch: where the stream goes
    mov r13, rdi                        # input mapping
    mov r14, rsi                        # input length
    xor r15d, r15d                      # bytes read so far
.Lread:
    xor eax, eax                        # read(0, scratch + r15, 5)
    xor edi, edi
    lea rsi, [r12 + r15]
    mov edx, 5
    syscall
    test rax, rax
    jz .Leof
    js .Lbad
    add r15, rax
    cmp r15, r14
    ja .Lbad                            # more bytes than the mapping holds
    jmp .Lread
.Leof:
    cmp r15, r14
    jne .Lbad
    xor ecx, ecx
.Lcompare:
    cmp rcx, r14
    je .Lgood
    mov al, byte ptr [r12 + rcx]
    cmp al, byte ptr [r13 + rcx]
    jne .Lbad
    inc rcx
    jmp .Lcompare
.Lgood:
    mov rax, r15
    ret
.Lbad:
    lea rax, [r15 + 0xbad0000]
    ret
