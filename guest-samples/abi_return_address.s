# [rsp] at entry is the return address into the runner: popping it and jumping there is a return.
# expect: returned rax=42
.intel_syntax noprefix
.text
    pop rcx
    mov eax, 42
    jmp rcx
