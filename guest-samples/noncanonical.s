# A store to a non-canonical address raises #GP, not a page fault: SIGSEGV with address 0.
# expect: crashed SIGSEGV code_offset=0xa address=0x0 instruction="mov byte ptr [rax],1"
.intel_syntax noprefix
.text
    mov rax, 0x8000000000000000         # 0x0: movabs, 10 bytes
    mov byte ptr [rax], 1               # 0xa
    ret
