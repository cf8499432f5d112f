# Every register but rdi/rsi/rdx/rcx/rsp is 0 at entry (rsi too, with no input): rax = 7 + OR of them.
# expect: returned rax=7 rbx=0 rbp=0 rsi=0 r8=0 r9=0 r10=0 r11=0 r12=0 r13=0 r14=0 r15=0 rcx=1048576
# rcx is left alone: the default scratch length, 1 MiB.
.intel_syntax noprefix
.text
    or rax, rbx
    or rax, rbp
    or rax, rsi
    or rax, r8
    or rax, r9
    or rax, r10
    or rax, r11
    or rax, r12
    or rax, r13
    or rax, r14
    or rax, r15
    add rax, 7
    ret
