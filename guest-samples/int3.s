# A breakpoint (int3) ends the run with SIGTRAP; the faulting instruction is the int3 at 0x1.
# expect: crashed SIGTRAP code_offset=0x1 instruction="int3"
# int3 is a trap: the saved rip points past it (0x2), but the instruction that
# raised the signal is the int3 itself.
.intel_syntax noprefix
.text
    nop                                 # 0x0
    int3                                # 0x1
    mov eax, 1                          # 0x2
    ret
