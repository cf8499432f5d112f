# With --stack 64KiB, a store 66 KiB below the entry rsp lands in the guard page: SIGSEGV.
# expect: crashed SIGSEGV code_offset=0x8 instruction="mov byte ptr [rax],1"
# args: --stack 64KiB
# The twin of stack_usable.s: together they pin the usable stack to about 64 KiB.
# rsp is near the top, so rsp - 67584 is about 2 KiB below the stack's bottom.
.intel_syntax noprefix
.text
    lea rax, [rsp - 67584]              # 0x0: 8 bytes
    mov byte ptr [rax], 1               # 0x8
    ret
