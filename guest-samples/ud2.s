# ud2 is the defined invalid opcode: SIGILL, reported at the ud2 itself.
# expect: crashed SIGILL code_offset=0x2 instruction="ud2"
.intel_syntax noprefix
.text
    nop                                 # 0x0
    nop                                 # 0x1
    ud2                                 # 0x2
    ret
