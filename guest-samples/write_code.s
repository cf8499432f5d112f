# The code is mapped read+execute, never writable: a store into it is SIGSEGV.
# expect: crashed SIGSEGV code_offset=0x7 instruction="mov byte ptr [rax],1"
.intel_syntax noprefix
.text
    lea rax, [rip]                      # 0x0: 7 bytes; rax = code + 0x7
    mov byte ptr [rax], 1               # 0x7: stores over itself
    ret
