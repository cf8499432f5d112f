# The stack is not executable: calling a ret pushed onto it is SIGSEGV outside the code.
# expect: crashed SIGSEGV code_offset=none
.intel_syntax noprefix
.text
    push 0xc3                           # [rsp] = c3 00 00 ...: ret
    call rsp
    pop rcx
    mov eax, 1                          # only reached if the stack was executable
    ret
