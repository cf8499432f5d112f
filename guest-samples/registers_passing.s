# --reg sets registers at entry: rax = rbx * r12 + r15 = 5 * 16 + 1000.
# expect: returned rax=1080 rbx=5 r12=0x10 r15=1000
# args: --reg rbx=5 --reg r12=0x10 --reg r15=1000
.intel_syntax noprefix
.text
    mov rax, rbx
    imul rax, r12
    add rax, r15
    ret
