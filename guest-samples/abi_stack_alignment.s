# At entry (rsp + 8) % 16 == 0, as right after a call: rax = 100 + ((rsp + 8) & 15).
# expect: returned rax=100
.intel_syntax noprefix
.text
    lea rax, [rsp + 8]
    and eax, 15
    add eax, 100
    ret
