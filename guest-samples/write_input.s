# The input mapping is read-only: a store to its first byte is SIGSEGV.
# expect: crashed SIGSEGV code_offset=0x0 instruction="mov byte ptr [rdi],0"
# args: --input-hex 2a
.intel_syntax noprefix
.text
    mov byte ptr [rdi], 0
    ret
