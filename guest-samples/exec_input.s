# The input mapping is not executable: calling an input byte 0xc3 (ret) is SIGSEGV outside the code.
# expect: crashed SIGSEGV code_offset=none
# args: --input-hex c3
.intel_syntax noprefix
.text
    call rdi
    mov eax, 1                          # only reached if the input was executable
    ret
