# --entry 2 starts past a leading ud2: the guest returns 7 instead of crashing.
# expect: returned rax=7
# args: --entry 2
.intel_syntax noprefix
.text
    ud2                                 # 0x0: 0f 0b, skipped
    mov eax, 7                          # 0x2: the entry point
    ret
