# The echo loop on empty input: the first read(0) already returns 0 (EOF), nothing is written.
# expect: returned rax=0 output=""
.intel_syntax noprefix
.text
    mov r12, rdx
.Lread:
    xor eax, eax                        # read(0, scratch, 64)
    xor edi, edi
    mov rsi, r12
    mov edx, 64
    syscall
    test rax, rax
    jz .Ldone
    js .Lfail
    mov rdx, rax                        # write(1, scratch, n)
    mov eax, 1
    mov edi, 1
    mov rsi, r12
    syscall
    test rax, rax
    jle .Lfail
    jmp .Lread
.Ldone:
    ret
.Lfail:
    ret
