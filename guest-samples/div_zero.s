# Unsigned division by zero: #DE, SIGFPE at the div.
# expect: crashed SIGFPE code_offset=0x9 instruction="div ecx"
.intel_syntax noprefix
.text
    xor ecx, ecx                        # 0x0: 31 c9
    mov eax, 1                          # 0x2: b8 01 00 00 00
    xor edx, edx                        # 0x7: 31 d2
    div ecx                             # 0x9: f7 f1
    ret
