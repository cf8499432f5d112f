# Scratch memory is not executable: calling a ret written there is SIGSEGV outside the code.
# expect: crashed SIGSEGV code_offset=none
.intel_syntax noprefix
.text
    mov byte ptr [rdx], 0xc3            # ret
    call rdx
    mov eax, 1                          # only reached if scratch was executable
    ret
