# A store through a null pointer: SIGSEGV at the store, fault address 0.
# expect: crashed SIGSEGV code_offset=0x3 address=0x0 instruction="mov qword ptr [rax],1"
.intel_syntax noprefix
.text
    xor rax, rax                        # 0x0: 48 31 c0
    mov qword ptr [rax], 1              # 0x3
    ret
