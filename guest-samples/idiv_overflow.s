# Signed division INT64_MIN / -1 overflows the quotient: also #DE, SIGFPE.
# expect: crashed SIGFPE code_offset=0x13 instruction="idiv rcx"
.intel_syntax noprefix
.text
    mov rax, 0x8000000000000000         # 0x0: movabs, 10 bytes
    cqo                                 # 0xa: 48 99
    mov rcx, -1                         # 0xc: 48 c7 c1 ff ff ff ff
    idiv rcx                            # 0x13
    ret
