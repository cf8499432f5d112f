# Jumping to address 0: SIGSEGV on the instruction fetch, outside the guest code.
# expect: crashed SIGSEGV address=0x0 code_offset=none
.intel_syntax noprefix
.text
    xor eax, eax
    jmp rax
